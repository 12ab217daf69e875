#!/usr/bin/env node
// Runs the real-kernel suite (vitest.kernel.config.mts) inside VMs booted by scripts/kernel-run, on each configured
// kernel and mode, and prints one summary line per kernel/mode with pass/fail counts and times.
//
// Usage: node scripts/test-kernel.mjs [--kernels bookworm,bullseye,trixie] [--modes full,nocap,oldkernel]
// Defaults come from IO_FLUSHER_TEST_KERNELS / IO_FLUSHER_TEST_MODES, else every kernel and every mode.
// Exits non-zero if any run fails, reports no tests, or cannot start: the kernel suite is never skipped silently.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(`--${name}`);
  const value = i >= 0 ? args[i + 1] : process.env[`IO_FLUSHER_TEST_${name.toUpperCase()}`];
  return (value || fallback).split(',').filter(Boolean);
}
const kernels = option('kernels', 'bookworm,bullseye,trixie');
const modes = option('modes', 'full,nocap,oldkernel');

const work = fs.mkdtempSync(path.join(root, '.kernel-suite-'));
const timesFile = path.join(work, 'times.jsonl');
const rows = [];
let failed = false;

for (const kernel of kernels) {
  for (const mode of modes) {
    const report = path.join(work, `${kernel}-${mode}.json`);
    const started = Date.now();
    const r = spawnSync(
      path.join(root, 'scripts/kernel-run'),
      [
        '--kernel', kernel, '--mode', mode, '--quiet', '--',
        path.join(root, 'node_modules/.bin/vitest'), 'run', '--config', 'vitest.kernel.config.mts',
        '--reporter=default', '--reporter=json', `--outputFile.json=${report}`,
      ],
      { cwd: root, stdio: 'inherit', env: { ...process.env, IO_FLUSHER_KERNEL_RUN_TIMES: timesFile } },
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
    } catch {
      // No report: the VM or vitest did not get that far; counted as a failure below.
    }
    const times = fs.existsSync(timesFile)
      ? fs.readFileSync(timesFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((t) => t.kernel === kernel && t.mode === mode).pop()
      : undefined;
    const ok = r.status === 0 && total > 0 && failedTests === 0 && passed > 0;
    if (!ok) failed = true;
    rows.push(
      `${ok ? 'PASS' : 'FAIL'}  ${`${kernel}/${mode}`.padEnd(18)} passed ${String(passed).padStart(3)}  failed ${String(failedTests).padStart(3)}` +
        `  boot ${times ? `${times.bootSeconds.toFixed(1)}s` : '?'}  suite ${times ? `${times.commandSeconds.toFixed(1)}s` : '?'}` +
        `  wall ${wall.toFixed(1)}s${r.status !== 0 ? `  (exit ${r.status ?? r.signal})` : ''}${total === 0 ? '  (no test ran)' : ''}`,
    );
  }
}

fs.rmSync(work, { recursive: true, force: true });
process.stdout.write(`\nkernel suite summary (${os.hostname()}):\n${rows.join('\n')}\n`);
const totals = rows.reduce(
  (acc, row) => {
    const m = /passed +(\d+) +failed +(\d+)/.exec(row);
    return m ? [acc[0] + Number(m[1]), acc[1] + Number(m[2])] : acc;
  },
  [0, 0],
);
process.stdout.write(`kernel: ${totals[0]} passed, ${totals[1]} failed\n`);
process.exit(failed ? 1 : 0);
