/** Mode full (every capability): the success path on a real kernel, per thread, with inheritance. */
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import * as io from '../../dist/index.js';
import { parseStatLine } from '../../dist/procfs.js';
import { ROOT } from '../helpers';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

assertKernelSuiteEnvironment();
const native = io.createIoFlusher({ backend: 'native' });
const DIST_INDEX = path.resolve(__dirname, '../../dist/index.js');

/** A Worker that reports (and on request changes) its own state through the native backend. */
function startWorker(): { ask(message: string): Promise<{ tid: number; get: boolean; flags: number }>; stop(): Promise<number> } {
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
     const n = require(${JSON.stringify(DIST_INDEX)}).createIoFlusher({ backend: 'native' });
     parentPort.on('message', (m) => {
       if (m === 'set') n.setIoFlusher(true);
       if (m === 'clear') n.setIoFlusher(false);
       const t = n.threadFlags();
       parentPort.postMessage({ tid: t.tid, get: n.getIoFlusher(), flags: t.flags });
     });`,
    { eval: true },
  );
  return {
    ask: (message) =>
      new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.postMessage(message);
      }),
    stop: () => worker.terminate(),
  };
}

afterEach(() => native.setIoFlusher(false));

describe(`real kernel ${KERNEL_NAME}, every capability`, () => {
  it('set -> get true -> /proc has 0x180000 -> clear -> get false, bits gone', () => {
    expect(native.getIoFlusher()).toBe(false);
    native.setIoFlusher(true);
    expect(native.getIoFlusher()).toBe(true);
    const during = native.threadFlags();
    expect((during.flags & 0x180000) >>> 0).toBe(0x180000);
    expect(during).toMatchObject({ memallocNoio: true, localThrottle: true, ioFlusher: true, emulated: false });
    native.setIoFlusher(false);
    expect(native.getIoFlusher()).toBe(false);
    expect(native.threadFlags().flags & 0x180000).toBe(0);
  });

  it('probe(): present, capability held, protection in effect only while set', () => {
    expect(native.probe()).toMatchObject({ feature: 'present', capSysResource: true, canSet: true, backend: 'native', ioFlusher: false, protectionInEffect: false });
    native.setIoFlusher(true);
    expect(native.probe()).toMatchObject({ ioFlusher: true, protectionInEffect: true });
  });

  it('only the calling thread changes: other threads of the process keep their flags', () => {
    native.setIoFlusher(true);
    const others = native.listThreads().filter((t) => t.tid !== process.pid);
    expect(others.length).toBeGreaterThan(0);
    expect(others.filter((t) => t.ioFlusher)).toEqual([]);
  });

  it('a child process spawned after set starts with the bits; after clear it does not', () => {
    const childFlags = () => parseStatLine(execFileSync('/bin/cat', ['/proc/self/stat'], { encoding: 'latin1' })).flags;
    native.setIoFlusher(true);
    expect((childFlags() & 0x180000) >>> 0).toBe(0x180000);
    native.setIoFlusher(false);
    expect(childFlags() & 0x180000).toBe(0);
  });

  it('a Worker created after set has the state, one created before does not', async () => {
    const before = startWorker();
    await before.ask('get');
    native.setIoFlusher(true);
    const after = startWorker();
    try {
      const b = await before.ask('get');
      const a = await after.ask('get');
      expect(b.get).toBe(false);
      expect(b.flags & 0x180000).toBe(0);
      expect(a.get).toBe(true);
      expect((a.flags & 0x180000) >>> 0).toBe(0x180000);
      // The kernel's view from outside the Worker agrees.
      expect(native.threadFlags(process.pid, a.tid).ioFlusher).toBe(true);
      expect(native.threadFlags(process.pid, b.tid).ioFlusher).toBe(false);
    } finally {
      await Promise.all([before.stop(), after.stop()]);
    }
  });

  it("a Worker's own change leaves the main thread alone", async () => {
    const worker = startWorker();
    try {
      const set = await worker.ask('set');
      expect(set.get).toBe(true);
      expect(native.getIoFlusher()).toBe(false);
      expect(native.threadFlags(process.pid, set.tid).ioFlusher).toBe(true);
      const cleared = await worker.ask('clear');
      expect(cleared.get).toBe(false);
    } finally {
      await worker.stop();
    }
  });

  it('io-flusher check exits 0: protection can be had here', () => {
    let status = 0;
    try {
      execFileSync(process.execPath, [path.resolve(__dirname, '../../dist/cli.js'), 'check'], { encoding: 'utf8' });
    } catch (err) {
      status = (err as { status: number }).status;
    }
    expect(status).toBe(0);
  });
});

const FIXTURES = path.resolve(__dirname, '../fixtures');
const CLI = path.resolve(__dirname, '../../dist/cli.js');

function runJson(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; out: any; stderr: string } {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 240_000 });
  let out: unknown = null;
  try {
    out = JSON.parse(r.stdout);
  } catch {
    // left null; the caller's assertions show stdout and stderr
  }
  return { status: r.status, out, stderr: `${r.stderr}\nstdout: ${r.stdout}` };
}

describe(`every thread of a Node process, real kernel ${KERNEL_NAME}`, () => {
  // Which counts run where is decided in vitest.kernel.config.mts (64 Workers: bookworm, host's Node only).
  const counts = (process.env.IO_FLUSHER_KERNEL_WORKERS ?? '8').split(',').map(Number);
  for (const workers of counts) {
    it(`setProcessIoFlusher with ${workers} Workers and the libuv pool busy: every thread covered or explained`, () => {
      const r = runJson([path.join(FIXTURES, 'process-wide-scenario.js'), String(workers)]);
      expect(r.status, r.stderr).toBe(0);
      const out = r.out;
      process.stdout.write(
        `process-wide ${KERNEL_NAME}: ${workers} Workers, ${out.covered}/${out.threads} threads covered in ${out.setMs.toFixed(1)} ms; ` +
          `uncovered: ${JSON.stringify(out.uncovered)}\n`,
      );
      expect(out.unexplained).toEqual([]);
      // Only threads that block every signal may stay uncovered (Node's signal-watchdog thread does).
      expect(out.uncovered.filter((u: { reason: string }) => u.reason !== 'blocks-signal')).toEqual([]);
      expect(out.uncovered.length).toBeLessThanOrEqual(1);
      expect(out.workerStates.every((s: { get: boolean }) => s.get)).toBe(true);
      expect(out.lateState.get).toBe(true);
      expect(out.fsFailures).toEqual([]);
      expect(out.clearedComplete).toBe(true);
      expect(out.stillSetAfterClear).toEqual([]);
      expect(out.dispositionsRestored).toBe(true);
      expect(out.handlerRestored).toBe(true);
    });
  }

  it('io-flusher exec -- node: every thread has the state from its first line; exit status passes through', () => {
    const r = runJson([CLI, 'exec', '--', process.execPath, path.join(FIXTURES, 'print-thread-flags.js'), '7']);
    expect(r.status, r.stderr).toBe(7);
    expect(r.out.length).toBeGreaterThan(1);
    expect(r.out.filter((t: { ioFlusher: boolean }) => !t.ioFlusher)).toEqual([]);
  });

  it('io-flusher exec --clear gives no thread the state, even from a parent that has it', () => {
    native.setIoFlusher(true);
    const r = runJson([CLI, 'exec', '--clear', '--', process.execPath, path.join(FIXTURES, 'print-thread-flags.js')]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.out.filter((t: { ioFlusher: boolean }) => t.ioFlusher)).toEqual([]);
  });

  it('io-flusher exec: a missing command exits 127', () => {
    expect(spawnSync(process.execPath, [CLI, 'exec', '--', 'no-such-command-anywhere']).status).toBe(127);
  });

  it('a daemon that re-executes itself ends with every thread flagged, argv and environment intact', () => {
    const r = runJson([path.join(FIXTURES, 'reexec-daemon.js'), 'a b', '--c'], { MARKER: 'kept' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.out).toMatchObject({ reexecuted: true, unprotected: [], argv: ['a b', '--c'], marker: 'kept' });
    expect(r.out.flagged).toBe(r.out.threads);
  });

  it('io-flusher status --check passes for a process started through exec', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [CLI, 'exec', '--', process.execPath, '-e', 'setInterval(() => {}, 1000); console.log("up")'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise((resolve) => child.stdout!.once('data', resolve));
      const r = spawnSync(process.execPath, [CLI, 'status', String(child.pid), '--check'], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/(\d+) of \1 threads in IO_FLUSHER state/);
    } finally {
      child.kill();
    }
  });
});

describe(`forward-progress kit, real kernel ${KERNEL_NAME}`, () => {
  it('lockMemory locks the code scope (VmLck = its bytes, all resident); the process then grows by 64 MiB and collects it; unlockMemory ends it; oom_score_adj -1000 reads back', () => {
    const r = runJson([
      '--expose-gc',
      '-e',
      `const io = require(${JSON.stringify(path.resolve(__dirname, '../../dist/index.js'))});
       const locked = io.lockMemory();
       let chunks = []; for (let i = 0; i < 64; i++) chunks.push(Buffer.alloc(1 << 20, i));
       let objects = []; for (let i = 0; i < 100000; i++) objects.push({ i });
       const sum = chunks.length; chunks = null; objects = null; global.gc();
       const during = io.lockedMemory();
       const unlocked = io.unlockMemory();
       process.stdout.write(JSON.stringify({ locked, during, unlocked, oom: io.setOomScoreAdj(-1000), read: io.getOomScoreAdj(), sum }));`,
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.out.locked.code.bytes).toBeGreaterThan(32 * 1024 * 1024);
    expect(r.out.locked.code.residentBytes).toBe(r.out.locked.code.bytes);
    expect(r.out.locked.locked).toEqual({ code: r.out.locked.code.bytes, buffers: 0, other: 0, total: r.out.locked.code.bytes });
    expect(r.out.during).toEqual(r.out.locked.locked);
    expect(r.out.unlocked.locked.total).toBe(0);
    expect(r.out).toMatchObject({ oom: -1000, read: -1000, sum: 64 });
  });

  it('prepareDaemon with every step required succeeds and every thread carries IO_FLUSHER', () => {
    const r = runJson([
      '-e',
      `const io = require(${JSON.stringify(path.resolve(__dirname, '../../dist/index.js'))});
       const report = io.prepareDaemon({ memlockLimit: Infinity, lockMemory: true, oomScoreAdj: -1000, ioFlusher: 'process' });
       const threads = io.listThreads();
       process.stdout.write(JSON.stringify({ report, threads: threads.length, flagged: threads.filter((t) => t.ioFlusher).length }));`,
    ]);
    expect(r.status, r.stderr).toBe(0);
    process.stdout.write(`prepareDaemon report on ${KERNEL_NAME}: ${JSON.stringify(r.out.report.steps.map((s: any) => ({ step: s.step, done: s.done, detail: s.step === 'ioFlusher' ? { covered: s.detail.covered, threads: s.detail.threads.length, uncovered: s.detail.threads.filter((t: any) => !t.covered).map((t: any) => t.reason) } : s.detail })))}\n`);
    expect(r.out.report.ok).toBe(true);
    expect(r.out.report.ioFlusherInEffect).toBe(true);
    expect(r.out.report.steps.every((s: { done: boolean; required: boolean }) => s.done && s.required)).toBe(true);
    // Every thread but at most the signal-blocking watchdog thread.
    expect(r.out.threads - r.out.flagged).toBeLessThanOrEqual(1);
  });
});

describe(`setProcessIoFlusher refuses before it changes anything, real kernel ${KERNEL_NAME}`, () => {
  it('a bad option leaves the calling thread untouched (no prctl before the RangeError / TypeError)', () => {
    expect(native.getIoFlusher()).toBe(false);
    expect(() => native.setProcessIoFlusher(true, { signal: 5 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => native.setProcessIoFlusher(true, { signal: '40' as unknown as number })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => native.setProcessIoFlusher(true, { timeoutMs: 'x' as unknown as number })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(native.getIoFlusher()).toBe(false);
  });

  it('no /proc to list the threads: refused before the calling thread is touched', () => {
    const r = spawnSync('unshare', ['--mount', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0" -e "$1"', process.execPath, `
      const n = require('./dist/index.js').createIoFlusher({ backend: 'native' });
      const { binding } = require('./dist/native-binding.js').loadNativeBinding();
      let code; try { n.setProcessIoFlusher(true); } catch (e) { code = e.code; }
      process.stdout.write(JSON.stringify({ code, get: binding.getIoFlusher() }));`], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ code: 'ENOENT', get: 0 });
  });
});
