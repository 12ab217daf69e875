/**
 * setProcessIoFlusher() under faults: a signalled thread that takes the signal late, a Worker that dies inside the
 * call, bad options, newborn threads. Without CAP_SYS_RESOURCE every prctl answers EPERM, but the handler install,
 * restore, timeouts, EBUSY and the per-thread answers are all real here.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { loadNativeBinding, NativeBinding } from '../dist/native-binding.js';
import { holdsCapSysResource } from './helpers';

const capable = holdsCapSysResource();
const native = io.createIoFlusher({ backend: 'native' });
const binding = (loadNativeBinding() as { binding: NativeBinding }).binding;
const DIST = path.resolve(__dirname, '../dist');

/** The report of a call, whether it threw EPERM (no capability) or returned. Any other error is rethrown. */
function reportOf(call: () => io.ProcessIoFlusherReport): io.ProcessIoFlusherReport {
  try {
    return call();
  } catch (err) {
    if (err instanceof io.IoFlusherError && err.code === 'EPERM') return err.report as io.ProcessIoFlusherReport;
    throw err;
  }
}

function pendingBit(tid: number, signo: number): boolean {
  const hex = /^SigPnd:\s*([0-9a-f]+)$/m.exec(fs.readFileSync(`/proc/self/task/${tid}/status`, 'latin1'))![1]!;
  return ((BigInt(`0x${hex}`) >> BigInt(signo - 1)) & 1n) === 1n;
}

/** A Worker that idles until terminated, and its tid. */
async function idleWorker(): Promise<{ worker: Worker; tid: number }> {
  const worker = new Worker(
    `const b = require(${JSON.stringify(path.join(DIST, 'native-binding.js'))}).loadNativeBinding().binding;
     require('node:worker_threads').parentPort.postMessage(b.gettid()); setInterval(() => {}, 1000);`,
    { eval: true },
  );
  const tid = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return { worker, tid };
}

// test/fixtures/ptrace-thread.py holds a thread on demand: stopped (it takes no signal, as inside vfork() or in state
// D), or with every signal blocked (as glibc leaves a newborn thread until it starts running).
const TRACER = path.join(__dirname, 'fixtures/ptrace-thread.py');
const canTrace = process.getuid?.() === 0 && spawnSync('python3', ['-c', 'import ctypes'], { stdio: 'ignore' }).status === 0;

/** Holds the thread until release() (or `seconds` at most). */
async function holdThread(mode: 'stop' | 'mask' | 'mask-own', tid: number, seconds: number): Promise<{ done: Promise<number | null>; release(): void; kill(): void }> {
  const tracer = spawn('python3', [TRACER, mode, String(tid), String(seconds)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const done = new Promise<number | null>((resolve) => tracer.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    tracer.stdout.once('data', () => resolve());
    void done.then((code) => reject(new Error(`tracer exited ${code} before the thread was held`)));
  });
  return { done, release: () => tracer.stdin.end('release\n'), kill: () => tracer.kill() };
}

describe('setProcessIoFlusher: the broadcast never wedges', () => {
  it.runIf(canTrace)('a thread that takes the signal late costs only that call: once it has, the next call restores the handler and works', async () => {
    const { worker, tid } = await idleWorker();
    const tracer = await holdThread('stop', tid, 120);
    try {
      const late = reportOf(() => native.setProcessIoFlusher(true, { timeoutMs: 100 }));
      expect(late.threads.find((t) => t.tid === tid)).toMatchObject({ covered: false, reason: 'timed-out' });
      expect(late.handlerRestored).toBe(false); // the signal is still pending there: SIG_DFL would kill the process
      const signo = late.signal!;
      expect(pendingBit(tid, signo)).toBe(true);
      // While it is pending, a call answers EBUSY before touching anything.
      expect(() => native.setProcessIoFlusher(true)).toThrow(expect.objectContaining({ code: 'EBUSY', errno: -16, syscall: 'sigaction' }));
      tracer.release();
      expect(await tracer.done).toBe(0);
      for (let i = 0; i < 500 && pendingBit(tid, signo); i++) await new Promise((r) => setTimeout(r, 10));
      expect(pendingBit(tid, signo)).toBe(false);
      // Once the signal is taken the library restores the previous action on its own, without another call.
      for (let i = 0; i < 500 && binding.broadcastSignal() !== 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(binding.broadcastSignal()).toBe(0);
      expect(binding.signalDisposition(signo)).toBe(0);
      const after = reportOf(() => native.setProcessIoFlusher(true));
      expect(after.handlerRestored).toBe(true);
      expect(after.threads.find((t) => t.tid === tid)).toMatchObject({ via: 'signal' });
      expect(binding.signalDisposition(signo)).toBe(0);
      expect(binding.broadcastSignal()).toBe(0);
    } finally {
      tracer.kill();
      await worker.terminate();
    }
  });

  it.runIf(canTrace)('a Worker terminated inside the call (its `finally` never runs) costs only that call', async () => {
    const { worker: idle, tid } = await idleWorker();
    // Stopped until the assertions below are done: the Worker's call waits on it (seconds under software emulation).
    const tracer = await holdThread('stop', tid, 120);
    const caller = new Worker(
      `const { parentPort } = require('node:worker_threads');
       const n = require(${JSON.stringify(path.join(DIST, 'index.js'))}).createIoFlusher({ backend: 'native' });
       parentPort.postMessage('calling');
       try { n.setProcessIoFlusher(true, { timeoutMs: 60000 }); } catch {}
       parentPort.postMessage('returned');`,
      { eval: true },
    );
    let returned = false;
    caller.on('message', (m) => (returned ||= m === 'returned'));
    try {
      await new Promise((resolve) => caller.once('message', resolve));
      // Inside the call once its handler is installed (under software emulation that can take seconds)
      for (const until = Date.now() + 60_000; binding.broadcastSignal() === 0 && Date.now() < until; ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const signo = binding.broadcastSignal();
      expect(signo).toBeGreaterThan(0);
      // ... and has signalled the stopped thread (it lists and signals the threads after installing the handler).
      for (const until = Date.now() + 60_000; !pendingBit(tid, signo) && Date.now() < until; ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(pendingBit(tid, signo)).toBe(true);
      await caller.terminate();
      expect(returned).toBe(false);
      // The stopped thread still has the signal pending: answered EBUSY, nothing touched.
      expect(() => native.setProcessIoFlusher(true)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
      tracer.release();
      expect(await tracer.done).toBe(0);
      for (let i = 0; i < 500 && pendingBit(tid, signo); i++) await new Promise((r) => setTimeout(r, 10));
      const after = reportOf(() => native.setProcessIoFlusher(true));
      expect(after.handlerRestored).toBe(true);
      expect(binding.broadcastSignal()).toBe(0);
      expect(binding.signalDisposition(signo)).toBe(0);
    } finally {
      tracer.kill();
      await caller.terminate();
      await idle.terminate();
    }
  });

  it('a handler left installed by a Worker that died inside the call is restored by the next call', async () => {
    const signo = binding.sigrtmax();
    // What a Worker terminated inside setProcessIoFlusher() leaves behind: the handler installed, its `finally` never run.
    const worker = new Worker(
      `const b = require(${JSON.stringify(path.join(DIST, 'native-binding.js'))}).loadNativeBinding().binding;
       require('node:worker_threads').parentPort.postMessage(b.broadcastInstall(${signo}, 1));`,
      { eval: true },
    );
    expect(await new Promise((resolve) => worker.once('message', resolve))).toBe(0);
    await new Promise((resolve) => worker.once('exit', resolve));
    expect(binding.signalDisposition(signo)).toBe(2);
    const report = reportOf(() => native.setProcessIoFlusher(true));
    expect(report).toMatchObject({ handlerRestored: true, signal: signo });
    expect(binding.signalDisposition(signo)).toBe(0);
    // And every later call works too.
    expect(reportOf(() => native.setProcessIoFlusher(false)).handlerRestored).toBe(true);
  });

  it('a handler this same thread left installed (its call never reached `finally`) is reclaimed by its next call', () => {
    const signo = binding.sigrtmax();
    expect(binding.broadcastInstall(signo, 1)).toBe(0); // this thread cannot be inside another synchronous call
    expect(reportOf(() => native.setProcessIoFlusher(true)).handlerRestored).toBe(true);
    expect(binding.signalDisposition(signo)).toBe(0);
    expect(binding.broadcastSignal()).toBe(0);
  });
});

describe('setProcessIoFlusher: newborn threads are not written off', () => {
  it.runIf(canTrace)('a thread that blocks every signal only for a moment (as a newborn one does) is retried and reached', async () => {
    const { worker, tid } = await idleWorker();
    try {
      // Released 50 ms later, while the call below is running; it waits for the thread up to timeoutMs (a python
      // tracer under software emulation can take seconds to let go).
      const tracer = await holdThread('mask', tid, 0.05);
      const report = reportOf(() => native.setProcessIoFlusher(true, { timeoutMs: 30_000 }));
      expect(await tracer.done).toBe(0);
      // Reached through the signal: here its own prctl answered EPERM (no capability); with it, it is covered.
      expect(report.threads.find((t) => t.tid === tid)).toMatchObject({ via: 'signal', ...(capable ? { covered: true } : { code: 'EPERM' }) });
    } finally {
      await worker.terminate();
    }
  });

  it.runIf(canTrace)('a thread that blocks every signal itself (as Node\'s watchdog does) is reported blocks-signal at once, and never sent it', async () => {
    const { worker, tid } = await idleWorker();
    try {
      const tracer = await holdThread('mask-own', tid, -1);
      expect(await tracer.done).toBe(0);
      // Ask for the state the thread does not have (with the capability it may have inherited IO_FLUSHER).
      const wanted = !native.threadFlags(process.pid, tid).ioFlusher;
      const report = reportOf(() => native.setProcessIoFlusher(wanted));
      expect(report.threads.find((t) => t.tid === tid)).toMatchObject({ via: 'none', reason: 'blocks-signal', covered: false });
      expect(pendingBit(tid, report.signal!)).toBe(false);
      expect(report.handlerRestored).toBe(true);
      expect(report.passes).toBe(1); // not retried: no pass spent waiting on it
    } finally {
      await worker.terminate();
    }
  });
});

describe('setProcessIoFlusher: the native result table has no silent limit', () => {
  it('answers the table could not record (it is full: -ENOSPC) are neither timed-out nor refused; /proc decides', async () => {
    const { nativeBackend } = await import('../dist/backend.js');
    const { setProcessIoFlusherWith } = await import('../dist/process-wide.js');
    // The real binding, except that every signalled thread's answer finds the table full, as with more threads than
    // its slots (8192): each thread still takes the signal and makes its prctl.
    const { BROADCAST_OUTCOME } = await import('../dist/kernel-constants.js');
    const full: NativeBinding = {
      ...binding,
      broadcastPass: (signo, tids, noWait, timeoutMs, outcomes) => {
        const rc = binding.broadcastPass(signo, tids, noWait, timeoutMs, outcomes);
        for (let i = 0; i < outcomes.length; i += 2) {
          if (outcomes[i] === BROADCAST_OUTCOME.answered) outcomes.set([BROADCAST_OUTCOME.unrecorded, 0], i);
        }
        return rc;
      },
    };
    const backend = nativeBackend(full);
    const report = reportOf(() => setProcessIoFlusherWith(backend, true, { timeoutMs: 30_000 }));
    const signalled = report.threads.filter((t) => t.via === 'signal');
    expect(signalled.length).toBeGreaterThan(0);
    for (const t of report.threads) {
      expect(t.reason).not.toBe('timed-out');
      expect(t.code).not.toBe('ENOSPC');
    }
    expect(report.handlerRestored).toBe(true);
    // Coverage comes from /proc: here (EPERM) nobody is covered; with the capability every signalled thread is.
    for (const t of signalled) expect(t.covered).toBe(capable);
  });
});
