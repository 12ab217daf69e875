import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');
export const DIST = path.join(ROOT, 'dist');
export const CLI = path.join(DIST, 'cli.js');

export interface NodeRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node -e code` in a fresh process (own env overrides merged over ours, `undefined` deletes). */
export function runNode(code: string, env: Record<string, string | undefined> = {}, args: string[] = []): NodeRun {
  const merged: Record<string, string | undefined> = { ...process.env, ...env };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete merged[key];
  const r = spawnSync(process.execPath, ['-e', code, ...args], { cwd: ROOT, env: merged as NodeJS.ProcessEnv, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI in a fresh process. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}): NodeRun {
  const merged: Record<string, string | undefined> = { ...process.env, ...env };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete merged[key];
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, env: merged as NodeJS.ProcessEnv, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The process's real CAP_SYS_RESOURCE, read independently of anything io-flusher does. */
export function holdsCapSysResource(): boolean {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const status = (require('node:fs') as typeof import('node:fs')).readFileSync('/proc/self/status', 'utf8');
  const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)![1]!;
  return ((BigInt(`0x${eff}`) >> 24n) & 1n) === 1n;
}
