#!/usr/bin/env node
// The NBD server example on a real kernel (examples/nbd-server/kernel-scenario.sh inside VMs from vm/kernel-run):
//   basic, protected by `io-flusher exec`            must pass: data intact, status --check passes on the server,
//                                                     code and payload buffers locked (server --mlock)
//                                                     (on the active LTS Node, --basic-node, default 24)
//   the lab's "dirty" pressure pair (scripts/lab-pressure.mjs: backing store on a virtio disk, small dirty limit):
//     protected                                       must pass: completes, data intact
//     unprotected                                     reported whatever happens; it fails the run only if data is
//                                                     corrupted. Watched for at most 60 s without progress (then
//                                                     "unresolved"): proving a hang takes 300 s, which is the lab's
//                                                     job (npm run lab:pressure), not CI's
// Usage: node scripts/test-nbd.mjs [--kernel bookworm] [--basic-node 24]
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { runOnce } from './lab-pressure.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const kernel = arg('kernel', 'bookworm');
const basicNode = arg('basic-node', '24');

const build = spawnSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', 'examples/nbd-server'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(1);

const runs = [{ scenario: 'basic', protect: 'exec', memory: '1024', mustPass: true, node: basicNode }];
const rows = [];
let failed = 0;
let passed = 0;
for (const run of runs) {
  const t0 = Date.now();
  const r = spawnSync(
    path.join(root, 'vm/kernel-run'),
    ['--kernel', kernel, '--mode', 'full', '--node', run.node, '--modules', 'nbd,ext4', '--memory', run.memory, '--timeout', '900', '--',
      'examples/nbd-server/kernel-scenario.sh', run.scenario, run.protect],
    { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  process.stderr.write(r.stderr);
  // The guest's own diagnostics (the scenario's messages, the kernel log lines it quotes) arrive on stdout.
  const diagnostics = (r.stdout ?? '').split('\n').filter((l) => l.startsWith('scenario: ') || /^\[\s*\d+\.\d+\]/.test(l));
  if (diagnostics.length) process.stderr.write(`${diagnostics.join('\n')}\n`);
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('scenario-result '));
  const result = line ? JSON.parse(line.slice('scenario-result '.length)) : null;
  // The basic scenario runs the server with --mlock: its code and payload buffers must be locked too.
  const locked = result?.protection?.lockedBytes;
  const ok = r.status === 0 && result?.intact === true && result?.protection?.lockedBuffers?.count > 0 && locked?.code > 0;
  if (ok) passed++;
  else failed++;
  const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;
  const w = result?.write;
  rows.push(
    `${ok ? 'PASS' : 'FAIL'}  ${run.scenario}/${run.protect} (${run.memory} MiB guest, node ${run.node}): ` +
      (w
        ? `${w.mibPerSecond.toFixed(2)} MiB/s, longest write ${w.longestWriteMs.toFixed(0)} ms, fsync ${w.fsyncMs.toFixed(0)} ms, data ${result.intact ? 'intact' : 'CORRUPTED'}, server threads in IO_FLUSHER ${result.server.ioFlusher}/${result.server.threads}, ` +
          `${result.node}, locked: code ${locked ? mib(locked.code) : '?'}, payload buffers ${locked ? mib(locked.buffers) : '?'}`
        : `no result (kernel-run exit ${r.status}); output tail: ${(r.stdout ?? '').slice(-400)}`) +
      `  [${((Date.now() - t0) / 1000).toFixed(0)} s]`,
  );
  if (line) rows.push(`      ${line}`);
}

// The pressure pair, from the lab (scripts/lab-pressure.mjs) in the configuration that reproduces the deadlock best:
// variant "dirty" (a small global dirty limit, no periodic writeback). The protected server must complete with its
// data intact; the unprotected one is reported, whatever it does (no progress is the expected outcome, not a failure).
for (const protect of ['exec', 'none']) {
  const record = await runOnce({ variant: 'dirty', protect, kernel, quiet: true, env: protect === 'none' ? { NBD_LAB_HANG_S: '60' } : {} });
  const w = record.write;
  const ok = record.completed === true && record.intact === true;
  const mustPass = protect === 'exec';
  if (ok) passed++;
  else if (mustPass || record.intact === false) failed++;
  rows.push(
    `${ok ? 'PASS' : mustPass || record.intact === false ? 'FAIL' : 'NOTE'}  lab dirty/${protect} (${record.memTotalKiB ? Math.round(record.memTotalKiB / 1024) : '?'} MiB guest): ` +
      (record.hung || record.outcome === 'unresolved'
        ? `${record.outcome}: no progress for ${record.longestStallSeconds} s${record.outcomeReason ? ` (${record.outcomeReason})` : ''}; cause ${record.cause}; server threads in IO_FLUSHER ${record.serverThreadsFlagged}`
        : w
          ? `${w.mibPerSecond.toFixed(2)} MiB/s, write p99 ${w.p99Ms.toFixed(0)} ms, max ${w.maxMs.toFixed(0)} ms, longest stall ${record.longestStallSeconds} s, data ${record.intact ? 'intact' : 'CORRUPTED'}, server threads in IO_FLUSHER ${record.serverThreadsFlagged}`
          : `no result: ${record.error ?? `writer exit ${record.writerExit}`}`) +
      `  [${record.wallSeconds.toFixed(0)} s]`,
  );
}
process.stdout.write(`\nNBD scenarios on ${kernel}:\n${rows.join('\n')}\nnbd: ${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
