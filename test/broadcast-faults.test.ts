/**
 * setProcessIoFlusher() under faults a daemon meets in real life: a debugger or strace holding a thread, a thread that
 * takes the signal late, a Worker terminated inside the call whose thread id comes back, a process near its descriptor
 * limit, a /proc that is missing or belongs to another PID namespace, newborn threads, threads that block every
 * signal. Without CAP_SYS_RESOURCE every prctl answers EPERM, but the signal, the handler, the waiting, the timeouts and
 * the restored action are all real here; the kernel suite runs this file again with the capability (mode full).
 */
import { ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { loadNativeBinding, NativeBinding } from '../dist/native-binding.js';
import { holdsCapSysResource, ROOT } from './helpers';

const capable = holdsCapSysResource();
const native = io.createIoFlusher({ backend: 'native' });
const binding = (loadNativeBinding() as { binding: NativeBinding }).binding;
const DIST = path.resolve(__dirname, '../dist');
const CHILD = path.join(__dirname, 'fixtures/broadcast-child.js');

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

async function until(condition: () => boolean, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; !condition() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  return condition();
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

// test/fixtures/ptrace-thread.py holds a thread on demand, as a debugger, a slow thread or a newborn one would.
const TRACER = path.join(__dirname, 'fixtures/ptrace-thread.py');
const canTrace = process.getuid?.() === 0 && spawnSync('python3', ['-c', 'import ctypes'], { stdio: 'ignore' }).status === 0;
const traceNote = canTrace ? '' : ' (SKIPPED: needs root and python3 for the ptrace fixture)';
const hasStrace = spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;
const hasUnshare = spawnSync('unshare', ['--pid', '--fork', '--mount', 'true'], { stdio: 'ignore' }).status === 0;

interface Tracer {
  lines: AsyncIterator<string>;
  done: Promise<number | null>;
  release(): void;
  kill(): void;
}

/** Holds thread `tid` in `mode` until release() (or `seconds` at most); resolves once it holds it. */
async function holdThread(mode: 'stop' | 'mask' | 'mask-own' | 'signal-stop', tid: number, seconds: number): Promise<Tracer> {
  const tracer = spawn('python3', [TRACER, mode, String(tid), String(seconds)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const done = new Promise<number | null>((resolve) => tracer.once('exit', resolve));
  const lines = readline.createInterface({ input: tracer.stdout })[Symbol.asyncIterator]();
  const first = await Promise.race([lines.next(), done.then((code) => ({ value: `exited ${code}`, done: true }))]);
  if (first.value !== 'ready') throw new Error(`tracer: ${first.value}`);
  return { lines, done, release: () => tracer.stdin.end('release\n'), kill: () => tracer.kill() };
}

/** test/fixtures/broadcast-child.js SCENARIO: its JSON lines one by one, and a way to tell it to go on. */
function child(args: string[], wrap: string[] = []): { proc: ChildProcessWithoutNullStreams; next(): Promise<any>; go(): void; exit: Promise<[number | null, string | null]> } {
  const command = [...wrap, process.execPath, CHILD, ...args];
  const proc = spawn(command[0]!, command.slice(1), { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const exit = new Promise<[number | null, string | null]>((resolve) => proc.once('exit', (code, signal) => resolve([code, signal])));
  const lines = readline.createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  return {
    proc,
    exit,
    go: () => proc.stdin.write('go\n'),
    async next() {
      const line = await Promise.race([lines.next(), exit.then(([code, signal]) => ({ done: true, value: `exit ${code} signal ${signal}: ${stderr}` }))]);
      if (line.done) throw new Error(`the child ended: ${line.value}`);
      return JSON.parse(line.value);
    },
  };
}

describe('a debugger or tracer holding a thread never gets the process killed', () => {
  it.runIf(canTrace)(`a thread held in signal-delivery-stop past timeoutMs (as gdb holds it), then let go: the process survives, the handler stays until then, the next call works${traceNote}`, async () => {
    const c = child(['traced']);
    try {
      const { tid } = await c.next();
      const tracer = await holdThread('signal-stop', tid, 120);
      c.go();
      const first = await c.next();
      // The tracer caught the signal's delivery: dequeued, not pending, the handler not run.
      expect((await tracer.lines.next()).value).toMatch(/^stopped \d+$/);
      expect(first.threads.find((t: io.ThreadCoverage) => t.tid === tid)).toMatchObject({ covered: false, reason: 'timed-out', seen: 'taken' });
      expect(first.handlerRestored).toBe(false); // with SIG_DFL back, the signal the tracer holds would kill the process
      tracer.release();
      expect(await tracer.done).toBe(0);
      c.go();
      // Once the late thread has run the handler, the previous action comes back without another call.
      expect(await c.next()).toEqual({ dispositionAfterRelease: 0 });
      const second = await c.next();
      expect(second.handlerRestored).toBe(true);
      expect(second.threads.find((t: io.ThreadCoverage) => t.tid === tid)).toMatchObject({ via: 'signal', ...(capable ? { covered: true } : { code: 'EPERM' }) });
      expect(await c.exit).toEqual([0, null]);
    } finally {
      c.proc.kill('SIGKILL');
    }
  });

  it.runIf(canTrace && hasStrace)(`strace -f -p PID attached during calls: every call ends with a report, the process survives${canTrace && hasStrace ? '' : ' (SKIPPED: needs root, python3 and strace)'}`, async () => {
    const c = child(['loop', '30']);
    let strace: ReturnType<typeof spawn> | undefined;
    try {
      const { ready: pid } = await c.next();
      strace = spawn('strace', ['-f', '-qq', '-o', '/dev/null', '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
      let attached = '';
      strace.stderr!.on('data', (d) => (attached += d));
      // strace has seized every thread once the process's threads show a TracerPid.
      expect(await until(() => /^TracerPid:\s*[1-9]/m.test(fs.readFileSync(`/proc/${pid}/status`, 'latin1')))).toBe(true);
      c.go();
      const done = await c.next();
      expect(done.calls).toBe(30);
      // Every thread was reached through strace's stops (each signal held and passed on); none was taken for gone.
      expect(done.outcomes.exited ?? 0).toBe(0);
      expect(await c.exit).toEqual([0, null]);
      expect(attached).toBe('');
    } finally {
      strace?.kill('SIGINT');
      c.proc.kill('SIGKILL');
    }
  });

  it.runIf(canTrace)(`a thread stopped past timeoutMs (its signal left pending) costs only that call: later calls work meanwhile, and the action comes back once it has run${traceNote}`, async () => {
    const { worker, tid } = await idleWorker();
    const tracer = await holdThread('stop', tid, 120);
    try {
      const late = reportOf(() => native.setProcessIoFlusher(true, { timeoutMs: 100 }));
      expect(late.threads.find((t) => t.tid === tid)).toMatchObject({ covered: false, reason: 'timed-out', seen: 'pending' });
      expect(late.handlerRestored).toBe(false);
      const signo = late.signal!;
      expect(pendingBit(tid, signo)).toBe(true);
      // A call meanwhile is never refused because of the earlier one: it uses the same handler, and waits its own time.
      const meanwhile = reportOf(() => native.setProcessIoFlusher(true, { timeoutMs: 100 }));
      expect(meanwhile.signal).toBe(signo);
      expect(meanwhile.threads.find((t) => t.tid === tid)).toMatchObject({ reason: 'timed-out' });
      tracer.release();
      expect(await tracer.done).toBe(0);
      expect(await until(() => !pendingBit(tid, signo))).toBe(true);
      expect(await until(() => binding.signalDisposition(signo) === 0)).toBe(true);
      const after = reportOf(() => native.setProcessIoFlusher(true));
      expect(after.handlerRestored).toBe(true);
      expect(after.threads.find((t) => t.tid === tid)).toMatchObject({ via: 'signal' });
    } finally {
      tracer.kill();
      await worker.terminate();
    }
  });
});

describe('calls from several threads, and a Worker terminated inside one', () => {
  it.runIf(canTrace)(`a call while a Worker is inside one waits for it to end, then makes its own: never EBUSY${traceNote}`, async () => {
    const { worker: idle, tid: stoppedTid } = await idleWorker();
    const tracer = await holdThread('stop', stoppedTid, 120); // keeps the Worker's call waiting for its timeout
    const caller = new Worker(
      `const { parentPort } = require('node:worker_threads');
       const n = require(${JSON.stringify(path.join(DIST, 'index.js'))}).createIoFlusher({ backend: 'native' });
       const started = performance.timeOrigin + performance.now();
       let report; try { report = n.setProcessIoFlusher(true, { timeoutMs: 800 }); } catch (e) { report = e.report; }
       parentPort.postMessage({ signal: report.signal, started });`,
      { eval: true },
    );
    try {
      const workerDone = new Promise<{ signal: number; started: number }>((resolve) => caller.once('message', resolve));
      // Inside its call once the broadcast handler is installed on the signal it chose.
      const signo = binding.sigrtmax();
      expect(await until(() => binding.signalDisposition(signo) === 3)).toBe(true);
      const report = reportOf(() => native.setProcessIoFlusher(true, { timeoutMs: 100 }));
      const ended = performance.timeOrigin + performance.now();
      const worker = await workerDone;
      // The Worker's call waits 800 ms for the stopped thread; this one waited for it to end, then its own 100 ms.
      // Had the two overlapped, this one would have ended about 100 ms after it began, long before.
      expect(ended - worker.started).toBeGreaterThanOrEqual(850);
      expect(worker.signal).toBe(signo);
      expect(report.signal).toBe(signo);
      expect(report.threads.find((t) => t.tid === stoppedTid)).toMatchObject({ reason: 'timed-out' });
    } finally {
      tracer.kill();
      await caller.terminate();
      await idle.terminate();
    }
  });

  const canSetLastPid = (() => {
    try {
      fs.accessSync('/proc/sys/kernel/ns_last_pid', fs.constants.W_OK);
      return canTrace;
    } catch {
      return false;
    }
  })();

  it.runIf(canSetLastPid)(`a Worker terminated inside a call costs nothing later, even once a new thread has its thread id${canSetLastPid ? '' : ' (SKIPPED: needs root to trace and to write ns_last_pid)'}`, async () => {
    const { worker: idle, tid: stoppedTid } = await idleWorker();
    const tracer = await holdThread('stop', stoppedTid, 120); // keeps the Worker's call waiting for its timeout
    let caller: Worker | undefined;
    try {
      caller = new Worker(
        `const { parentPort } = require('node:worker_threads');
         const b = require(${JSON.stringify(path.join(DIST, 'native-binding.js'))}).loadNativeBinding().binding;
         const n = require(${JSON.stringify(path.join(DIST, 'index.js'))}).createIoFlusher({ backend: 'native' });
         parentPort.postMessage(b.gettid());
         try { n.setProcessIoFlusher(true, { timeoutMs: 1500 }); } catch {}
         parentPort.postMessage('returned');`,
        { eval: true },
      );
      const callerTid = await new Promise<number>((resolve) => caller!.once('message', resolve));
      // Inside its call, waiting on the stopped thread, once that thread has the call's signal pending.
      expect(await until(() => pendingBit(stoppedTid, binding.sigrtmax()))).toBe(true);
      await caller.terminate();
      // Its thread id comes back as a new thread's (the next id handed out is one above ns_last_pid).
      let reused: { worker: Worker; tid: number } | undefined;
      for (let attempt = 0; attempt < 20 && !reused; attempt++) {
        await until(() => !fs.existsSync(`/proc/self/task/${callerTid}`));
        fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(callerTid - 1));
        const next = await idleWorker();
        if (next.tid === callerTid) reused = next;
        else await next.worker.terminate();
      }
      expect(reused).toBeDefined();
      try {
        tracer.release();
        expect(await tracer.done).toBe(0);
        // No call answers EBUSY on account of the terminated one, and the reused id is reached like any thread.
        const report = reportOf(() => native.setProcessIoFlusher(true));
        expect(report.threads.find((t) => t.tid === callerTid)).toMatchObject({ via: 'signal' });
        expect(await until(() => binding.signalDisposition(report.signal!) === 0)).toBe(true);
      } finally {
        await reused!.worker.terminate();
      }
    } finally {
      tracer.kill();
      await caller?.terminate();
      await idle.terminate();
    }
  });
});

describe('a process near its descriptor limit is never reported complete when it is not', () => {
  it('one descriptor free: every thread is still signalled (the signal needs none); one whose status cannot be read is timed-out EMFILE, never exited', async () => {
    const c = child(['emfile', '1']);
    const out = await c.next();
    expect(await c.exit).toEqual([0, null]);
    const live = new Set<number>(out.live);
    const answered = out.threads.filter((t: io.ThreadCoverage) => t.via === 'signal');
    expect(answered.map((t: io.ThreadCoverage) => t.tid)).toContain(out.workerTid);
    for (const t of out.threads as io.ThreadCoverage[]) {
      if (live.has(t.tid)) expect(t.reason, `thread ${t.tid}`).not.toBe('exited');
      if (t.reason === 'timed-out') expect(t.code).toBe('EMFILE');
    }
    // The thread that blocks every signal could not be looked at: it is not covered, so the report is not complete.
    expect(out.threads.some((t: io.ThreadCoverage) => t.reason === 'timed-out' && t.code === 'EMFILE')).toBe(true);
    expect(out.complete).toBe(false);
  });

  it('no descriptor free: EMFILE before any thread is touched, saying what to do', async () => {
    const c = child(['emfile', '0']);
    const out = await c.next();
    expect(await c.exit).toEqual([0, null]);
    expect(out.code).toBe('EMFILE');
    expect(out.message).toMatch(/open '\/proc\/self\/task'.*nothing was changed/);
  });
});

/** How many times a process (and its children) called prctl(PR_SET_IO_FLUSHER, ...), from strace's record. */
function prctlSetCount(straceOut: string): number {
  return (fs.readFileSync(straceOut, 'utf8').match(/prctl\((PR_SET_IO_FLUSHER|0x39)\b/g) ?? []).length;
}

describe('/proc that cannot be trusted: refused before anything changes', () => {
  const script = `
    const io = require('./dist/index.js');
    const n = io.createIoFlusher({ backend: 'native' });
    const out = {};
    for (const [name, fn] of Object.entries({ set: () => n.setProcessIoFlusher(true), list: () => n.listThreads(), flags: () => n.threadFlags() })) {
      try { fn(); out[name] = 'no error'; } catch (e) { out[name] = { code: e.code, reason: e.reason, syscall: e.syscall, path: e.path, message: e.message }; }
    }
    process.stdout.write(JSON.stringify(out));`;
  const note = hasStrace && hasUnshare ? '' : ' (SKIPPED: needs strace and unshare with CAP_SYS_ADMIN)';

  it.runIf(hasStrace && hasUnshare)(`a PID namespace that kept its parent's /proc: ERR_IO_FLUSHER_FOREIGN_PROC from the set, listThreads() and threadFlags(), and no prctl made${note}`, () => {
    const trace = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'iof-strace-')), 'out');
    const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=prctl', '-o', trace, 'unshare', '--pid', '--fork', process.execPath, '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    for (const name of ['set', 'list', 'flags']) {
      expect(out[name], name).toMatchObject({ code: 'ERR_IO_FLUSHER_FOREIGN_PROC', reason: 'foreign-proc', syscall: 'readlink', path: '/proc/self' });
    }
    expect(out.set.message).toMatch(/another PID namespace.*mount a \/proc for this PID namespace/);
    expect(prctlSetCount(trace)).toBe(0);
    fs.rmSync(path.dirname(trace), { recursive: true });
  });

  it.runIf(hasStrace && hasUnshare)(`no /proc at all: ENOENT (proc-unavailable) naming /proc/self/task, and no prctl made${note}`, () => {
    const trace = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'iof-strace-')), 'out');
    const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=prctl', '-o', trace, 'unshare', '--mount', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0" -e "$1"', process.execPath, script], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.set).toMatchObject({ code: 'ENOENT', reason: 'proc-unavailable', syscall: 'open', path: '/proc/self/task' });
    expect(out.set.message).toMatch(/mount \/proc/);
    expect(prctlSetCount(trace)).toBe(0);
    fs.rmSync(path.dirname(trace), { recursive: true });
  });
});

describe('newborn threads and threads that block every signal', () => {
  it.runIf(canTrace)(`a thread that blocks every signal only for a moment (as a newborn one does) is waited for and reached${traceNote}`, async () => {
    const { worker, tid } = await idleWorker();
    try {
      // Released 50 ms later, while the call below is running: the signal stays pending and is taken then.
      const tracer = await holdThread('mask', tid, 0.05);
      const report = reportOf(() => native.setProcessIoFlusher(true, { timeoutMs: 30_000 }));
      expect(await tracer.done).toBe(0);
      expect(report.threads.find((t) => t.tid === tid)).toMatchObject({ via: 'signal', ...(capable ? { covered: true } : { code: 'EPERM' }) });
    } finally {
      await worker.terminate();
    }
  });

  it.runIf(canTrace && hasStrace)(`a thread that blocks every signal itself (as Node's watchdog does) is named blocks-signal, its pending signal discarded, and not signalled again${canTrace && hasStrace ? '' : ' (SKIPPED: needs root, python3 and strace)'}`, async () => {
    const { worker, tid } = await idleWorker();
    try {
      const tracer = await holdThread('mask-own', tid, -1);
      expect(await tracer.done).toBe(0);
      // Ask for the state the thread does not have (with the capability it may have inherited IO_FLUSHER).
      const wanted = !native.threadFlags(process.pid, tid).ioFlusher;
      const first = reportOf(() => native.setProcessIoFlusher(wanted));
      expect(first.threads.find((t) => t.tid === tid)).toMatchObject({ via: 'none', reason: 'blocks-signal', covered: false, ioFlusher: !wanted });
      expect(pendingBit(tid, first.signal!)).toBe(false); // discarded before SIG_DFL came back
      expect(first.handlerRestored).toBe(true);
      expect(first.passes).toBe(1);
      // Remembered: the next call does not send it the signal. strace, attached to this process for that call only,
      // records every rt_tgsigqueueinfo the call makes.
      const trace = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'iof-strace-')), 'out');
      const strace = spawn('strace', ['-f', '-qq', '-e', 'trace=rt_tgsigqueueinfo', '-o', trace, '-p', String(process.pid)], { stdio: 'ignore' });
      let second: io.ProcessIoFlusherReport;
      try {
        expect(await until(() => /^TracerPid:\s*[1-9]/m.test(fs.readFileSync('/proc/self/status', 'latin1')))).toBe(true);
        second = reportOf(() => native.setProcessIoFlusher(wanted));
      } finally {
        strace.kill('SIGINT');
        await new Promise((resolve) => strace.once('exit', resolve));
      }
      const sends = fs.readFileSync(trace, 'utf8').split('\n').filter((line) => line.includes('rt_tgsigqueueinfo('));
      fs.rmSync(path.dirname(trace), { recursive: true });
      expect(sends.length).toBeGreaterThan(0); // the others were sent it
      expect(sends.filter((line) => new RegExp(`rt_tgsigqueueinfo\\(\\d+, ${tid},`).test(line))).toEqual([]);
      expect(second.threads.find((t) => t.tid === tid)).toMatchObject({ reason: 'blocks-signal' });
      expect(second.handlerRestored).toBe(true);
      expect(pendingBit(tid, second.signal!)).toBe(false);
    } finally {
      await worker.terminate();
    }
  });
});

/** Runs test/fixtures/faults/SCRIPT in its own process: its status, signal, output and the JSON of its RESULT line. */
function fault(script: string, args: string[] = [], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures/faults', script), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, ...env },
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, result: line ? JSON.parse(line.slice(7)) : undefined };
}
const hasKoffi = spawnSync(process.execPath, ['-e', "require('koffi')"], { cwd: ROOT, stdio: 'ignore' }).status === 0;
const koffiNote = hasKoffi ? '' : ' (SKIPPED: needs the koffi dev dependency)';
const ioUring = spawnSync(process.execPath, ['-e', `
  const fs = require('fs');
  (async () => { for (let i = 0; i < 20; i++) await fs.promises.readFile('/proc/self/stat');
    process.exit(fs.readdirSync('/proc/self/task').some((t) => /^iou-/.test(fs.readFileSync('/proc/self/task/' + t + '/comm', 'latin1'))) ? 0 : 1); })();`],
  { env: { ...process.env, UV_USE_IO_URING: '1' }, stdio: 'ignore' }).status === 0;

describe('what the program does with signals and threads of its own', () => {
  it.runIf(hasKoffi)(`a signal that arrives at the calling thread while it lists the threads (a profiler's, a timer's) never leaves live threads out${koffiNote}`, () => {
    const r = fault('signal-during-listing.js', ['500']);
    expect(r.result, r.stderr).toEqual({ calls: 500, partial: 0, onlySelf: 0 });
  });

  it.runIf(hasKoffi)(`a thread that blocked every signal for a moment when first looked at (around a fork, say) is signalled again once it no longer does${koffiNote}`, () => {
    const r = fault('transient-blocker.js');
    expect(r.result, r.stderr).toBeDefined();
    for (const t of r.result.later) expect(t).toMatchObject({ via: 'signal' });
  });

  it.runIf(hasKoffi)(`a thread that waits for the chosen signal with sigtimedwait() takes it once; no call waits for it again, and the action comes back${koffiNote}`, () => {
    const r = fault('sigwait-user.js');
    expect(r.result, r.stderr).toEqual({ received: 1, timedOut: 0, disposition: 0 });
  });

  it('a signal the calling thread blocks (as a program that waits for it blocks it everywhere) is refused as in use', () => {
    const r = spawnSync(process.execPath, ['-e', `
      const koffi = require('koffi'); const libc = koffi.load('libc.so.6');
      const sigemptyset = libc.func('int sigemptyset(_Inout_ uint8_t *set)');
      const sigaddset = libc.func('int sigaddset(_Inout_ uint8_t *set, int signo)');
      const pthread_sigmask = libc.func('int pthread_sigmask(int how, uint8_t *set, _Out_ uint8_t *old)');
      const { binding } = require('./dist/native-binding.js').loadNativeBinding();
      const set = Buffer.alloc(128); sigemptyset(set); sigaddset(set, binding.sigrtmax());
      pthread_sigmask(0, set, Buffer.alloc(128));
      const n = require('./dist/index.js').createIoFlusher({ backend: 'native' });
      const out = {};
      try { n.setProcessIoFlusher(true, { signal: binding.sigrtmax() }); } catch (e) { out.asked = e.code; }
      try { out.chosen = n.setProcessIoFlusher(true).signal; } catch (e) { out.chosen = e.report ? e.report.signal : e.code; }
      out.disposition = binding.signalDisposition(binding.sigrtmax());
      process.stdout.write(JSON.stringify(out));`], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const max = binding.sigrtmax();
    expect(JSON.parse(r.stdout)).toEqual({ asked: 'ERR_IO_FLUSHER_SIGNAL_IN_USE', chosen: max - 1, disposition: 4 });
  });

  it.runIf(ioUring)(`io_uring's own threads (every signal blocked by the kernel) are named blocks-signal at once, never waited for, and the action comes back${ioUring ? '' : ' (SKIPPED: io_uring threads do not start here)'}`, () => {
    const r = fault('io-uring-threads.js', [], { UV_USE_IO_URING: '1' });
    expect(r.result, r.stderr).toBeDefined();
    expect(r.result.ioThreads).toBeGreaterThan(0);
    expect(r.result).toMatchObject({ timedOut: 0, handlerRestored: true });
  });

  it.runIf(canTrace)(`a thread found blocking the signal that unblocks it while a debugger holds the signal: the process survives the debugger letting it go${traceNote}`, () => {
    const r = fault('blocker-under-tracer.js');
    expect({ status: r.status, signal: r.signal }, r.stdout + r.stderr).toEqual({ status: 0, signal: null });
    expect(r.stdout).toContain('survived');
  });

  it.runIf(canTrace)(`the addon loaded only in a Worker that left the handler for a late thread and exited: the process survives the late signal${traceNote}`, () => {
    const r = fault('dlclose-late-handler.js');
    expect({ status: r.status, signal: r.signal }, r.stdout + r.stderr).toEqual({ status: 0, signal: null });
    expect(r.stdout).toContain('still alive');
  });

  it('the emulated backend refuses a signal the program ignores, as the native one does', () => {
    const max = binding.sigrtmax();
    const script = `
      const io = require('./dist/index.js');
      const out = {};
      for (const backend of ['native', 'emulated']) {
        try { io.createIoFlusher({ backend, emulator: { capSysResource: true } }).setProcessIoFlusher(true, { signal: ${max} }); out[backend] = 'accepted'; }
        catch (e) { out[backend] = e.code === 'EPERM' ? 'accepted' : e.code; }
      }
      process.stdout.write(JSON.stringify(out));`;
    const r = spawnSync('sh', ['-c', `trap '' ${max}; exec "$0" -e "$1"`, process.execPath, script], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ native: 'ERR_IO_FLUSHER_SIGNAL_IN_USE', emulated: 'ERR_IO_FLUSHER_SIGNAL_IN_USE' });
  });
});

describe('what another thread can observe during a call', () => {
  it.runIf(hasKoffi)(`poll() and nanosleep() in another thread return EINTR, as glibc's setxid broadcast makes them do, and as docs/performance.md says${hasKoffi ? '' : ' (SKIPPED: needs the koffi dev dependency)'}`, async () => {
    // SA_RESTART restarts read(), write() and most waits, never poll, epoll_wait, select or the sleeps (man 7 signal).
    const sleeper = (call: string) =>
      new Worker(
        `const koffi = require('koffi'); const libc = koffi.load('libc.so.6');
         const { parentPort } = require('node:worker_threads');
         const poll = libc.func('int poll(void *fds, unsigned long n, int timeout)');
         const nanosleep = libc.func('int nanosleep(int64_t *req, int64_t *rem)');
         parentPort.postMessage('start');
         const rc = ${call === 'poll' ? 'poll(null, 0, 3000)' : 'nanosleep([3, 0], null)'};
         parentPort.postMessage({ rc, errno: koffi.errno() });`,
        { eval: true },
      );
    const workers = [sleeper('poll'), sleeper('nanosleep')];
    const started = workers.map((w) => new Promise((resolve) => w.once('message', resolve)));
    await Promise.all(started);
    const replies = workers.map((w) => new Promise<{ rc: number; errno: number }>((resolve) => w.once('message', resolve)));
    await new Promise((r) => setTimeout(r, 200)); // both inside their call
    reportOf(() => native.setProcessIoFlusher(true));
    const results = await Promise.all(replies);
    await Promise.all(workers.map((w) => w.terminate()));
    for (const r of results) expect(r).toEqual({ rc: -1, errno: os.constants.errno.EINTR });
    expect(fs.readFileSync(path.join(ROOT, 'docs/performance.md'), 'utf8')).toMatch(/EINTR[^]*poll[^]*nanosleep|EINTR[^]*nanosleep[^]*poll/);
  });
});
