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

// A thread stopped by a tracer takes no signal until it is let go: the same as a thread inside vfork() or in
// uninterruptible sleep, reproducible on demand. python3's ctypes makes the ptrace calls (we are root here).
const TRACER = `
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
tid, hold = int(sys.argv[1]), float(sys.argv[2])
if libc.ptrace(0x4206, tid, None, None) != 0: sys.exit('PTRACE_SEIZE: errno %d' % ctypes.get_errno())
libc.ptrace(0x4207, tid, None, None)
os.waitpid(tid, 0x40000000)
print('stopped', flush=True)
time.sleep(hold)
libc.ptrace(17, tid, None, None)
`;
const canTrace = spawnSync('python3', ['-c', 'import ctypes'], { stdio: 'ignore' }).status === 0 && process.getuid?.() === 0;

describe('setProcessIoFlusher: the broadcast never wedges', () => {
  it.runIf(canTrace)('a thread that takes the signal late costs only that call: once it has, the next call restores the handler and works', async () => {
    const { worker, tid } = await idleWorker();
    const tracer = spawn('python3', ['-c', TRACER, String(tid), '1.5'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        tracer.stdout.once('data', () => resolve());
        tracer.once('exit', (code) => reject(new Error(`tracer exited ${code}`)));
      });
      const late = reportOf(() => native.setProcessIoFlusher(true, { timeoutMs: 100 }));
      expect(late.threads.find((t) => t.tid === tid)).toMatchObject({ covered: false, reason: 'timed-out' });
      expect(late.handlerRestored).toBe(false); // the signal is still pending there: SIG_DFL would kill the process
      const signo = late.signal!;
      expect(pendingBit(tid, signo)).toBe(true);
      // While it is pending, a call answers EBUSY before touching anything.
      expect(() => native.setProcessIoFlusher(true)).toThrow(expect.objectContaining({ code: 'EBUSY', errno: -16, syscall: 'sigaction' }));
      await new Promise((resolve) => tracer.once('exit', resolve));
      for (let i = 0; i < 500 && pendingBit(tid, signo); i++) await new Promise((r) => setTimeout(r, 10));
      expect(pendingBit(tid, signo)).toBe(false);
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
