/**
 * setProcessIoFlusher() on this machine. Without CAP_SYS_RESOURCE every thread's prctl is refused, but the whole
 * mechanism still runs: the handler is installed, each thread is signalled and answers with its own EPERM, the
 * previous signal dispositions come back, and concurrent fs work sees no EINTR. The success path is in the kernel suite.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { loadNativeBinding } from '../dist/native-binding.js';
import { holdsCapSysResource, ROOT } from './helpers';

const capable = holdsCapSysResource();
const native = io.createIoFlusher({ backend: 'native' });
const binding = (loadNativeBinding() as { binding: import('../dist/native-binding.js').NativeBinding }).binding;

function dispositions(): number[] {
  const out: number[] = [];
  for (let s = 1; s <= binding.sigrtmax(); s++) if (s !== 9 && s !== 19) out.push(binding.signalDisposition(s));
  return out;
}

function refusedReport(call: () => unknown): io.ProcessIoFlusherReport {
  try {
    call();
  } catch (err) {
    expect(err).toBeInstanceOf(io.IoFlusherError);
    expect(err).toMatchObject({ code: 'EPERM', errno: -1, syscall: 'prctl', reason: 'missing-capability' });
    return (err as io.IoFlusherError).report as io.ProcessIoFlusherReport;
  }
  throw new Error('expected EPERM');
}

describe.runIf(!capable)('[without CAP_SYS_RESOURCE] setProcessIoFlusher, native', () => {
  it('EPERM everywhere: throws with a report in which every thread gave its own answer', () => {
    const before = dispositions();
    const report = refusedReport(() => native.setProcessIoFlusher(true));
    expect(dispositions()).toEqual(before);
    const tids = fs.readdirSync('/proc/self/task').map(Number).sort((a, b) => a - b);
    expect(report.threads.map((t) => t.tid)).toEqual(tids);
    expect(report).toMatchObject({ enabled: true, backend: 'native', covered: 0, complete: false, handlerRestored: true });
    expect(report.signal).toBeGreaterThanOrEqual(binding.sigrtmin());
    expect(report.signal).toBeLessThanOrEqual(binding.sigrtmax());
    const self = report.threads.find((t) => t.tid === process.pid)!;
    expect(self).toMatchObject({ via: 'direct', covered: false, reason: 'refused', code: 'EPERM' });
    // Signalled threads ran the handler: their answer is their own EPERM. Threads blocking the signal are named.
    const others = report.threads.filter((t) => t.tid !== process.pid);
    expect(others.length).toBeGreaterThan(0);
    for (const t of others) {
      if (t.via === 'signal') expect(t).toMatchObject({ reason: 'refused', code: 'EPERM' });
      else expect(t.reason).toBe('blocks-signal');
    }
    expect(others.some((t) => t.via === 'signal')).toBe(true);
  });

  it('works from a Worker too, and reaches the main thread', async () => {
    const out = await new Promise<io.ProcessIoFlusherReport>((resolve, reject) => {
      const w = new Worker(
        `const io = require(${JSON.stringify(path.resolve(__dirname, '../dist/index.js'))});
         try { io.createIoFlusher({ backend: 'native' }).setProcessIoFlusher(false); } catch (e) { require('node:worker_threads').parentPort.postMessage(e.report); }`,
        { eval: true },
      );
      w.once('message', resolve);
      w.once('error', reject);
    });
    expect(out.threads.find((t) => t.tid === process.pid)).toMatchObject({ via: 'signal', code: 'EPERM' });
  });

  it('concurrent fs operations, timers and a Worker keep working; no EINTR reaches them', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iof-'));
    const file = path.join(dir, 'data');
    fs.writeFileSync(file, Buffer.alloc(1 << 20, 7));
    const worker = new Worker(`const { parentPort } = require('node:worker_threads'); let n = 0; const t = setInterval(() => n++, 1); parentPort.on('message', () => { clearInterval(t); parentPort.postMessage(n); });`, { eval: true });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const ops: Array<Promise<unknown>> = [];
    for (let i = 0; i < 64; i++) ops.push(fs.promises.readFile(file), fs.promises.writeFile(path.join(dir, `w${i}`), Buffer.alloc(65536, i)));
    for (let i = 0; i < 20; i++) {
      refusedReport(() => native.setProcessIoFlusher(i % 2 === 0));
      await new Promise((r) => setImmediate(r));
    }
    const results = await Promise.allSettled(ops);
    await new Promise((r) => setTimeout(r, 20));
    clearInterval(timer);
    const workerTicks = await new Promise<number>((resolve) => {
      worker.once('message', resolve);
      worker.postMessage('stop');
    });
    await worker.terminate();
    fs.rmSync(dir, { recursive: true });
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(ticks).toBeGreaterThan(0);
    expect(workerTicks).toBeGreaterThan(0);
  });

  it('validates options before anything is touched', () => {
    expect(() => native.setProcessIoFlusher(true, { signal: 10 })).toThrow(RangeError);
    expect(() => native.setProcessIoFlusher(true, { timeoutMs: 0 })).toThrow(/"options.timeoutMs" is out of range/);
    expect(() => native.setProcessIoFlusher('yes' as unknown as boolean)).toThrow(TypeError);
  });

  it('never takes a signal the process ignores: asked for, ERR_IO_FLUSHER_SIGNAL_IN_USE before anything changes; by default, the next free one', () => {
    // Node resets only signals 1-31 at start-up, so a real-time signal ignored by the parent (here the shell's trap)
    // stays ignored, as it would for a daemon started that way.
    const max = binding.sigrtmax();
    const script = `
      const io = require('./dist/index.js');
      const native = io.createIoFlusher({ backend: 'native' });
      const { binding } = require('./dist/native-binding.js').loadNativeBinding();
      const run = (options) => { try { return { signal: native.setProcessIoFlusher(false, options).signal }; } catch (e) { return e.report ? { signal: e.report.signal } : { code: e.code, reason: e.reason, syscall: e.syscall, message: e.message } } };
      process.stdout.write(JSON.stringify({ asked: run({ signal: ${max} }), chosen: run(), disposition: binding.signalDisposition(${max}) }));`;
    const r = spawnSync('sh', ['-c', `trap '' ${max}; exec "$0" -e "$1"`, process.execPath, script], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, IO_FLUSHER_BACKEND: undefined } });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.asked).toMatchObject({ code: 'ERR_IO_FLUSHER_SIGNAL_IN_USE', reason: 'signal-in-use', syscall: 'sigaction' });
    expect(out.asked.message).toContain(`signal ${max} already has a handler, is ignored, or is blocked by the calling thread`);
    expect(out.chosen).toEqual({ signal: max - 1 });
    expect(out.disposition).toBe(1); // still ignored: SIG_IGN
  });
});

describe('setProcessIoFlusher, emulated', () => {
  it('with the capability: every thread covered in the model, then cleared', () => {
    const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });
    const report = emu.setProcessIoFlusher(true);
    expect(report).toMatchObject({ backend: 'emulated', signal: null, complete: true, uncovered: 0 });
    expect(report.covered).toBe(fs.readdirSync('/proc/self/task').length);
    expect(emu.listThreads().every((t) => t.ioFlusher && t.emulated)).toBe(true);
    const cleared = emu.setProcessIoFlusher(false);
    expect(cleared.complete).toBe(true);
    expect(emu.listThreads().some((t) => t.ioFlusher)).toBe(false);
  });

  it('without the capability: EPERM with a report of refusals, nothing changed', () => {
    const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: false } });
    const report = refusedReport(() => emu.setProcessIoFlusher(true));
    expect(report.threads.every((t) => t.reason === 'refused' && t.code === 'EPERM')).toBe(true);
    expect(emu.listThreads().some((t) => t.ioFlusher)).toBe(false);
  });
});

// The contract every backend keeps, run once per backend (as bufferutil runs its suite once per implementation): native
// with this process's own capability, the emulator with the same one and with the other, so both branches run here.
describe.each([
  ['native', capable, () => native],
  ['emulated', capable, () => io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: capable } })],
  ['emulated', !capable, () => io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: !capable } })],
] as const)('setProcessIoFlusher, the contract of every backend: %s, CAP_SYS_RESOURCE %s', (name, withCapability, make) => {
  const reportOf = (call: () => io.ProcessIoFlusherReport): io.ProcessIoFlusherReport => (withCapability ? call() : refusedReport(call));

  it('reports exactly the threads /proc lists, the calling thread set directly, and coverage as listThreads() reads it', () => {
    const instance = make();
    const report = reportOf(() => instance.setProcessIoFlusher(true));
    expect(report.backend).toBe(name);
    const tids = fs.readdirSync('/proc/self/task').map(Number).sort((a, b) => a - b);
    expect(report.threads.map((t) => t.tid)).toEqual(tids);
    expect(report.threads.find((t) => t.tid === process.pid)).toMatchObject({ via: 'direct' });
    expect(report.passes).toBeGreaterThanOrEqual(1);
    const seen = new Map(instance.listThreads().map((t) => [t.tid, t.ioFlusher]));
    for (const t of report.threads) expect(t.covered, `thread ${t.tid}`).toBe(seen.get(t.tid) === true);
    expect(report.covered).toBe(report.threads.filter((t) => t.covered).length);
    // Refused: nobody; allowed: everybody but threads no broadcast reaches (Node's signal-blocking watchdog).
    if (!withCapability) expect(report.covered).toBe(0);
    else expect(report.threads.filter((t) => !t.covered && t.reason !== 'blocks-signal')).toEqual([]);
    expect(report.handlerRestored).toBe(true);
    reportOf(() => instance.setProcessIoFlusher(false));
    expect(instance.listThreads().some((t) => t.ioFlusher)).toBe(false);
  });

  it('refuses bad options alike, before anything is touched', () => {
    const instance = make();
    expect(() => instance.setProcessIoFlusher(true, { signal: 10 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => instance.setProcessIoFlusher(true, { signal: '40' as unknown as number })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => instance.setProcessIoFlusher(true, { timeoutMs: 0 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => instance.setProcessIoFlusher(true, { maxPasses: 1.5 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => instance.setProcessIoFlusher('yes' as unknown as boolean)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(instance.listThreads().some((t) => t.ioFlusher)).toBe(false);
  });

  it('threads starting and exiting during the calls: every call ends with a report, a thread gone is `exited`, never an error of its own', async () => {
    const instance = make();
    const churn: Worker[] = [];
    let started = 0;
    // A Worker that exits at once, every 2 ms, for the whole test (bounded: 400 at most).
    const timer = setInterval(() => {
      if (started++ < 400) churn.push(new Worker('setTimeout(() => {}, Math.random() * 3)', { eval: true }));
    }, 2);
    const reasons = new Set<string>();
    let calls = 0;
    try {
      for (const deadline = Date.now() + 1500; Date.now() < deadline; calls++) {
        const report = reportOf(() => instance.setProcessIoFlusher(calls % 2 === 0, { timeoutMs: 5000 }));
        for (const t of report.threads) if (t.reason) reasons.add(t.reason);
        expect(report.threads.filter((t) => t.reason === 'timed-out')).toEqual([]);
        expect(instance.listThreads().length).toBeGreaterThan(0);
        await new Promise((r) => setTimeout(r, 3));
      }
    } finally {
      clearInterval(timer);
      await Promise.all(churn.map((w) => w.terminate()));
    }
    // What it is about: calls made while threads came and went (not how many a loaded machine starts in 1.5 s).
    expect(calls).toBeGreaterThan(0);
    expect(started).toBeGreaterThan(0);
    // Refused everywhere, or reached: nothing but these reasons (a thread gone mid-call is `exited`).
    for (const reason of reasons) expect(['exited', 'refused', 'blocks-signal', 'not-verified']).toContain(reason);
    reportOf(() => instance.setProcessIoFlusher(false));
  });
});
