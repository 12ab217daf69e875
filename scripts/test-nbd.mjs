#!/usr/bin/env node
// The NBD server example on a real kernel (examples/nbd-server/kernel-scenario.sh inside VMs from scripts/kernel-run):
//   basic, protected by `io-flusher exec`            must pass: data intact, status --check passes on the server
//                                                     (on the active LTS Node, --basic-node, default 24)
//   pressure (small guest + memory hog), protected    must pass: no hang within the bound, data intact
//   pressure, unprotected                             reported whatever happens (hang caught by the bound, slower,
//                                                     or no difference); it fails the run only if data is corrupted
// Usage: node scripts/test-nbd.mjs [--kernel bookworm] [--memory-small 320] [--basic-node 24]
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const kernel = arg('kernel', 'bookworm');
const small = arg('memory-small', '320');
const basicNode = arg('basic-node', '24');

const build = spawnSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', 'examples/nbd-server'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(1);

const runs = [
  { scenario: 'basic', protect: 'exec', memory: '1024', mustPass: true, node: basicNode },
  { scenario: 'pressure', protect: 'exec', memory: small, mustPass: true, node: 'system' },
  { scenario: 'pressure', protect: 'none', memory: small, mustPass: false, node: 'system' },
];
const rows = [];
let failed = 0;
let passed = 0;
for (const run of runs) {
  const t0 = Date.now();
  const r = spawnSync(
    path.join(root, 'scripts/kernel-run'),
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
  const ok = r.status === 0 && result?.intact === true;
  const corrupted = result?.intact === false;
  if (ok) passed++;
  else if (run.mustPass || corrupted) failed++;
  const w = result?.write;
  rows.push(
    `${ok ? 'PASS' : run.mustPass || corrupted ? 'FAIL' : 'NOTE'}  ${run.scenario}/${run.protect} (${run.memory} MiB guest, node ${run.node}): ` +
      (w
        ? `${w.mibPerSecond.toFixed(2)} MiB/s, longest write ${w.longestWriteMs.toFixed(0)} ms, fsync ${w.fsyncMs.toFixed(0)} ms, data ${result.intact ? 'intact' : 'CORRUPTED'}, server threads in IO_FLUSHER ${result.server.ioFlusher}/${result.server.threads}`
        : result?.hang
          ? `no progress within the ${result.boundSeconds} s bound (hang caught)`
          : result && 'writerExit' in result
            ? `the write failed: writer exit ${result.writerExit}, server ${result.serverAlive ? 'alive' : 'gone'}, OOM kills ${result.oomKills}`
            : `no result (kernel-run exit ${r.status}); output tail: ${(r.stdout ?? '').slice(-400)}`) +
      `  [${((Date.now() - t0) / 1000).toFixed(0)} s]`,
  );
  if (line) rows.push(`      ${line}`);
}
process.stdout.write(`\nNBD scenarios on ${kernel}:\n${rows.join('\n')}\nnbd: ${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
