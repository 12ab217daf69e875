/**
 * setProcessIoFlusher()'s report against the kernel, in every mode: a thread's coverage is the kernel's own answer in
 * that thread (PR_GET_IO_FLUSHER in its handler), and it must agree with what /proc shows for the thread right after
 * the call, so the two can never disagree unnoticed. Threads: this process's, with Workers and the libuv pool.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as io from '../../dist/index.js';
import { IO_FLUSHER_FLAGS } from '../../dist/kernel-constants.js';
import { parseStatLine } from '../../dist/procfs.js';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

const mode = assertKernelSuiteEnvironment();
const native = io.createIoFlusher({ backend: 'native' });

function reportOf(enabled: boolean): io.ProcessIoFlusherReport {
  try {
    return native.setProcessIoFlusher(enabled, { timeoutMs: 20_000 });
  } catch (err) {
    if (!(err instanceof io.IoFlusherError) || !err.report) throw err;
    return err.report as io.ProcessIoFlusherReport;
  }
}

/** The IO_FLUSHER bits of a thread of this process as /proc shows them now; undefined when it is gone. */
function procState(tid: number): boolean | undefined {
  try {
    const flags = parseStatLine(fs.readFileSync(`/proc/self/task/${tid}/stat`, 'latin1')).flags;
    return (flags & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS;
  } catch {
    return undefined;
  }
}

describe(`setProcessIoFlusher's report against /proc, real kernel ${KERNEL_NAME} (${os.release()}), mode ${mode}`, () => {
  const workers: Worker[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 4; i++) {
      const w = new Worker('require("node:worker_threads").parentPort.on("message", () => {})', { eval: true });
      await new Promise((resolve) => w.once('online', resolve));
      workers.push(w);
    }
    // Start libuv's pool too.
    await fs.promises.readFile(path.join(__dirname, 'process-wide.test.ts'));
  });
  afterAll(async () => {
    reportOf(false);
    await Promise.all(workers.map((w) => w.terminate()));
  });

  for (const enabled of [true, false, true, false]) {
    it(`set ${enabled}: every thread's coverage and state as the report says is what /proc shows`, () => {
      const report = reportOf(enabled);
      const disagreements: string[] = [];
      for (const t of report.threads) {
        const seen = procState(t.tid);
        if (seen === undefined) continue; // gone since
        // Covered means the kernel said so; not covered with no state (refused, no answer) claims nothing about /proc.
        if (t.covered && seen !== enabled) disagreements.push(`${t.tid}: covered, /proc ${seen}`);
        if (!t.covered && t.ioFlusher !== null && seen === enabled) disagreements.push(`${t.tid}: not covered, /proc ${seen}`);
        if (t.ioFlusher !== null && t.ioFlusher !== seen) disagreements.push(`${t.tid}: ioFlusher ${t.ioFlusher}, /proc ${seen}`);
      }
      process.stdout.write(`report vs /proc ${KERNEL_NAME}/${mode}: ${report.threads.length} threads, ${report.covered} covered, ${disagreements.length} disagreements\n`);
      expect(disagreements).toEqual([]);
      // With the capability, only a thread that blocks every signal may be left out; without it, nobody is covered.
      if (mode === 'full') expect(report.threads.filter((t) => !t.covered && t.reason !== 'blocks-signal' && t.reason !== 'exited')).toEqual([]);
      else expect(report.threads.filter((t) => t.covered || !['refused', 'blocks-signal', 'exited'].includes(t.reason!))).toEqual([]);
    });
  }
});
