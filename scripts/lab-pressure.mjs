#!/usr/bin/env node
// The pressure lab: the NBD deadlock IO_FLUSHER exists to prevent, run many times on real kernels, protected and
// unprotected, with the kernel stacks of every hang. Not a CI gate (CI runs one pair through scripts/test-nbd.mjs).
//
// Each run boots a VM (scripts/kernel-run, with an empty virtio disk for the server's backing store) and runs
// scripts/lab/pressure-run.sh there; its result is appended as one JSON line to the results file, so runs accumulate
// across invocations and the summary covers all of them.
//
// Usage:
//   npm run lab:pressure -- [--runs N] [--variant dirty|reclaim|both] [--kernel bookworm] [--protect both|exec|none]
//                           [--node MAJOR] [--memory MIB] [--results FILE]
//   npm run lab:pressure -- --summary [--results FILE]
// --runs N runs N pairs (protected and unprotected alternate) unless --protect names one side. Default results file:
// docs/lab/pressure.jsonl. Environment for the guest script: NBD_LAB_WRITE_MIB (128), NBD_LAB_STALL_S (30),
// NBD_LAB_HEADROOM_MIB (64), NBD_LAB_BOUND_S (600).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
export const DEFAULT_RESULTS = path.join(root, 'docs/lab/pressure.jsonl');

/** One run in a VM. Returns the guest's result with the host's view added (wall time, kernel-run's exit). */
export function runOnce({ variant, protect, kernel = 'bookworm', node = 'system', memory = '960', quiet = false }) {
  const started = Date.now();
  const guestEnv = {};
  for (const k of ['NBD_LAB_WRITE_MIB', 'NBD_LAB_STALL_S', 'NBD_LAB_HEADROOM_MIB', 'NBD_LAB_BOUND_S']) {
    if (process.env[k]) guestEnv[k] = process.env[k];
  }
  const envPrefix = Object.entries(guestEnv).map(([k, v]) => `${k}=${v}`);
  const r = spawnSync(
    path.join(root, 'scripts/kernel-run'),
    ['--kernel', kernel, '--mode', 'full', '--node', node, '--modules', 'nbd,ext4', '--disk', '2G', '--memory', memory,
      '--timeout', '900', '--quiet', '--', 'env', ...envPrefix, path.join(root, 'scripts/lab/pressure-run.sh'), variant, protect],
    { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  const out = r.stdout ?? '';
  if (!quiet) {
    const notes = out.split('\n').filter((l) => l.startsWith('lab: ') || /blocked for more than|Possible stuck request/.test(l)).slice(0, 12);
    process.stderr.write([...notes, r.stderr].filter(Boolean).join('\n'));
  }
  const line = out.split('\n').find((l) => l.startsWith('lab-result '));
  let result;
  try {
    result = line ? JSON.parse(line.slice('lab-result '.length)) : null;
  } catch (err) {
    result = null;
  }
  // The kernel's own reports of blocked tasks (sysrq w, hung-task warnings): the first stack of each, for the record.
  const kernelLog = out.split('\n').filter((l) => /^\[\s*\d+\.\d+\]/.test(l)).slice(-200).join('\n');
  return {
    at: new Date(started).toISOString(),
    variant,
    protect,
    kernelName: kernel,
    wallSeconds: (Date.now() - started) / 1000,
    // 125 for a hung run: the guest powers itself off, since its last sync would never return.
    kernelRunExit: r.status,
    ...(result ?? { completed: false, hung: false, error: `no result (kernel-run exit ${r.status}): ${out.slice(-300)}` }),
    kernelLogTail: result?.hung ? kernelLog.slice(-6000) : undefined,
  };
}

const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : undefined;
};
const fmt = (x, digits = 1) => (x === undefined ? '-' : x.toFixed(digits));

/** The table: one row per kernel, variant and side. */
export function summarize(records) {
  const groups = new Map();
  for (const r of records) {
    const key = `${r.kernel ?? r.kernelName}|${r.variant}|${r.protect}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(r);
  }
  const header = '| kernel | variant | side | runs | hung | completed | data intact | MiB/s (median) | write p50 / p99 / max ms (median) | longest stall s (max) | fsync ms (median) | OOM kills | hang causes |';
  const rows = [header, '|---|---|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const [key, rs] of [...groups].sort()) {
    const [kernel, variant, protect] = key.split('|');
    const done = rs.filter((r) => r.completed);
    const causes = {};
    for (const r of rs.filter((r) => r.hung)) causes[r.cause ?? 'unknown'] = (causes[r.cause ?? 'unknown'] ?? 0) + 1;
    rows.push(
      `| ${kernel} | ${variant} | ${protect === 'exec' ? 'protected' : 'unprotected'} | ${rs.length} | ${rs.filter((r) => r.hung).length} | ` +
        `${done.length} | ${done.filter((r) => r.intact).length}/${done.length} | ${fmt(median(done.map((r) => r.write.mibPerSecond)), 2)} | ` +
        `${fmt(median(done.map((r) => r.write.p50Ms)))} / ${fmt(median(done.map((r) => r.write.p99Ms)))} / ${fmt(median(done.map((r) => r.write.maxMs)))} | ` +
        `${Math.max(0, ...rs.map((r) => r.longestStallSeconds ?? 0))} | ${fmt(median(done.map((r) => r.write.fsyncMs)), 0)} | ` +
        `${rs.reduce((n, r) => n + (r.oomKills ?? 0), 0)} | ${Object.entries(causes).map(([c, n]) => `${c} ${n}`).join(', ') || '-'} |`,
    );
  }
  return rows.join('\n');
}

export function readResults(file) {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function main() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '1' },
      variant: { type: 'string', default: 'dirty' },
      kernel: { type: 'string', default: 'bookworm' },
      protect: { type: 'string', default: 'both' },
      node: { type: 'string', default: 'system' },
      memory: { type: 'string', default: '960' },
      results: { type: 'string', default: DEFAULT_RESULTS },
      summary: { type: 'boolean', default: false },
    },
  });
  const file = path.resolve(values.results);
  if (values.summary) {
    process.stdout.write(`${summarize(readResults(file))}\n`);
    return 0;
  }
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error('--runs takes a whole number from 1 to 100');
  if (!['dirty', 'reclaim', 'both'].includes(values.variant)) throw new Error('--variant is dirty, reclaim or both');
  if (!['both', 'exec', 'none'].includes(values.protect)) throw new Error('--protect is both, exec or none');
  const sides = values.protect === 'both' ? ['exec', 'none'] : [values.protect];
  const build = spawnSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', 'examples/nbd-server'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) return 1;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  for (let i = 0; i < runs; i++) {
    for (const protect of sides) {
      const record = runOnce({ variant: values.variant, protect, kernel: values.kernel, node: values.node, memory: values.memory });
      fs.appendFileSync(file, `${JSON.stringify(record)}\n`);
      const w = record.write;
      process.stdout.write(
        `lab: ${values.kernel} ${values.variant} ${protect === 'exec' ? 'protected  ' : 'unprotected'} run ${i + 1}/${runs}: ` +
          (record.hung
            ? `HUNG (no nbd0 write for ${record.stallThresholdSeconds} s; cause ${record.cause})`
            : record.completed
              ? `completed ${w.mibPerSecond.toFixed(2)} MiB/s, max write ${w.maxMs.toFixed(0)} ms, longest stall ${record.longestStallSeconds} s, data ${record.intact ? 'intact' : 'CORRUPTED'}`
              : `failed: ${record.error ?? `writer exit ${record.writerExit}`}`) +
          ` [${record.wallSeconds.toFixed(0)} s]\n`,
      );
    }
  }
  process.stdout.write(`\n${summarize(readResults(file))}\n`);
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  try {
    process.exitCode = main();
  } catch (err) {
    process.stderr.write(`lab-pressure: ${err.message}\n`);
    process.exitCode = 2;
  }
}
