#!/usr/bin/env node
// Runs the real-kernel suite (vitest.kernel.config.mts) inside VMs booted by vm/kernel-run, on each configured
// kernel and mode, and prints one summary line per kernel/mode with pass/fail counts and times.
// Every kernel and mode runs on the host's Node; the full mode on the first kernel listed also runs once per Node
// major in --nodes (kernel-run --node: official builds from the npm registry, see vm/node-versions.mjs).
//
// Usage: node scripts/test-kernel.mjs [--kernels bookworm,bullseye,trixie] [--modes full,nocap,oldkernel]
//                                     [--nodes 22,24,26]
// Defaults come from IO_FLUSHER_TEST_KERNELS / IO_FLUSHER_TEST_MODES / IO_FLUSHER_TEST_NODES, else every kernel,
// every mode and every pinned Node major (--nodes '' for none).
// Exits non-zero if any run fails, reports no tests, or cannot start: the kernel suite is never skipped silently.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { PINNED } from '../vm/node-versions.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(`--${name}`);
  const value = i >= 0 ? args[i + 1] : process.env[`IO_FLUSHER_TEST_${name.toUpperCase()}`];
  return (value ?? fallback).split(',').filter(Boolean);
}
const kernels = option('kernels', 'bookworm,bullseye,trixie');
const modes = option('modes', 'full,nocap,oldkernel');
const nodes = option('nodes', Object.keys(PINNED).join(','));
// [kernel, mode, node]: every kernel and mode on the host's Node, then the full mode on each extra Node major.
const runs = kernels.flatMap((kernel) => modes.map((mode) => [kernel, mode, 'system']));
if (kernels.length > 0 && modes.includes('full')) for (const node of nodes) runs.push([kernels[0], 'full', node]);
const addon = path.join(root, 'build/Release/io_flusher.node');
const addonSha256 = fs.existsSync(addon) ? createHash('sha256').update(fs.readFileSync(addon)).digest('hex') : '';

const work = fs.mkdtempSync(path.join(root, '.kernel-suite-'));
const timesFile = path.join(work, 'times.jsonl');
const rows = [];
const failures = [];
let failed = false;

for (const [kernel, mode, node] of runs) {
  {
    const label = node === 'system' ? `${kernel}/${mode}` : `${kernel}/${mode}/node${node}`;
    const report = path.join(work, `${kernel}-${mode}-${node}.json`);
    const started = Date.now();
    const r = spawnSync(
      path.join(root, 'vm/kernel-run'),
      [
        // --timeout: a guard against a hung guest, not a budget (bookworm/full, with 64 Workers, memory scopes on four
        // Node majors, the broadcast's fault tests and the deployment unit, took over 600 s on a loaded 2-core host).
        '--kernel', kernel, '--mode', mode, '--node', node, '--timeout', '1500', '--quiet', '--',
        path.join(root, 'node_modules/.bin/vitest'), 'run', '--config', 'vitest.kernel.config.mts',
        '--reporter=default', '--reporter=json', `--outputFile.json=${report}`,
      ],
      { cwd: root, stdio: 'inherit', env: { ...process.env, IO_FLUSHER_KERNEL_RUN_TIMES: timesFile, IO_FLUSHER_EXPECT_ADDON: addonSha256 } },
    );
    const wall = (Date.now() - started) / 1000;
    let passed = 0;
    let failedTests = 0;
    let total = 0;
    try {
      const json = JSON.parse(fs.readFileSync(report, 'utf8'));
      passed = json.numPassedTests;
      failedTests = json.numFailedTests;
      total = json.numTotalTests;
      // CI shows only the end of its log: each failed test is named again in the summary, with its first message line.
      for (const file of json.testResults ?? []) {
        for (const test of file.assertionResults ?? []) {
          if (test.status !== 'failed') continue;
          const first = String(test.failureMessages?.[0] ?? '').replace(/\x1b\[[0-9;]*m/g, '').split('\n')[0].slice(0, 300);
          failures.push(`  ${label}: ${path.relative(root, file.name)} > ${test.fullName}\n      ${first}`);
        }
      }
    } catch {
      // No report: the VM or vitest did not get that far; counted as a failure below.
    }
    const times = fs.existsSync(timesFile)
      ? fs.readFileSync(timesFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((t) => t.kernel === kernel && t.mode === mode && t.node === node).pop()
      : undefined;
    const ok = r.status === 0 && total > 0 && failedTests === 0 && passed > 0;
    if (!ok) failed = true;
    rows.push(
      `${ok ? 'PASS' : 'FAIL'}  ${label.padEnd(24)} passed ${String(passed).padStart(3)}  failed ${String(failedTests).padStart(3)}` +
        `  boot ${times ? `${times.bootSeconds.toFixed(1)}s` : '?'}  suite ${times ? `${times.commandSeconds.toFixed(1)}s` : '?'}` +
        `  wall ${wall.toFixed(1)}s${r.status !== 0 ? `  (exit ${r.status ?? r.signal})` : ''}${total === 0 ? '  (no test ran)' : ''}`,
    );
  }
}

fs.rmSync(work, { recursive: true, force: true });
process.stdout.write(`\nkernel suite summary (${os.hostname()}):\n${rows.join('\n')}\n`);
if (failures.length) process.stdout.write(`failed tests:\n${failures.join('\n')}\n`);
const totals = rows.reduce(
  (acc, row) => {
    const m = /passed +(\d+) +failed +(\d+)/.exec(row);
    // A run that failed without a failing test (the VM, a timeout, no report) still counts as one failure.
    return m ? [acc[0] + Number(m[1]), acc[1] + Math.max(Number(m[2]), row.startsWith('FAIL') ? 1 : 0)] : acc;
  },
  [0, 0],
);
process.stdout.write(`kernel: ${totals[0]} passed, ${totals[1]} failed\n`);
process.exit(failed ? 1 : 0);
