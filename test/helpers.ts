import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect } from 'vitest';

export const ROOT = path.resolve(__dirname, '..');
export const DIST = path.join(ROOT, 'dist');
export const CLI = path.join(DIST, 'cli.js');

export interface NodeRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

type Env = Record<string, string | undefined>;

/** Runs `node ARGS` in a fresh process from the repository root (own env overrides merged over ours, `undefined` deletes). */
function runProcess(args: string[], env: Env): NodeRun {
  const merged: Env = { ...process.env, ...env };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete merged[key];
  const r = spawnSync(process.execPath, args, { cwd: ROOT, env: merged as NodeJS.ProcessEnv, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `node -e code` in a fresh process (own env overrides merged over ours, `undefined` deletes). */
export function runNode(code: string, env: Env = {}, args: string[] = []): NodeRun {
  return runProcess(['-e', code, ...args], env);
}

/** Runs the CLI in a fresh process. */
export function runCli(args: string[], env: Env = {}): NodeRun {
  return runProcess([CLI, ...args], env);
}

/** The prelude of runJson's scripts: io-flusher as `io`, and `out(x)` printing x as JSON. */
export const JSON_PRELUDE = "const io = require('./dist/index.js'); const out = (x) => process.stdout.write(JSON.stringify(x));";

/**
 * Runs `code` in a fresh Node (after `prelude`, by default JSON_PRELUDE) and parses what it printed as JSON. The run
 * must exit 0 and, unless `allowStderr`, write nothing to stderr.
 */
export function runJson(code: string, env: Env = {}, options: { prelude?: string; allowStderr?: boolean } = {}): any {
  return parseJsonRun(runNode(`${options.prelude ?? JSON_PRELUDE}\n${code}`, env), options.allowStderr);
}

/** What a run printed, parsed as JSON, once it is seen to have exited 0 (and, unless `allowStderr`, been silent on stderr). */
export function parseJsonRun(r: NodeRun, allowStderr = true): any {
  if (!allowStderr) expect(r.stderr, r.stderr).toBe('');
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** What `call` threw (undefined when it returned): for asserting on every field of an error. */
export function caught(call: () => unknown): unknown {
  try {
    call();
  } catch (err) {
    return err;
  }
  return undefined;
}

/** A hexadecimal mask field (CapEff, SigPnd, ...) of /proc/PID/status, read independently of io-flusher; 0 when missing. */
export function statusMask(field: string, pid: number | 'self' = 'self'): bigint {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  const hex = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1];
  return BigInt(`0x${hex ?? '0'}`);
}

/** Whether capability `bit` is in this process's effective set (/proc/self/status CapEff). */
export function holdsCapability(bit: number): boolean {
  return ((statusMask('CapEff') >> BigInt(bit)) & 1n) === 1n;
}

/** The process's real CAP_SYS_RESOURCE, read independently of anything io-flusher does. */
export function holdsCapSysResource(): boolean {
  return holdsCapability(24);
}


/**
 * The kernel backend behind an instance: internal, so not in the published typings (stripInternal), but the
 * conformance and differential suites drive it directly.
 */
export function kernelOf(instance: object): import('../dist/backend.js').KernelBackend {
  return (instance as { kernel: import('../dist/backend.js').KernelBackend }).kernel;
}
