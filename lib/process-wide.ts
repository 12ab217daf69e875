/**
 * setProcessIoFlusher(): IO_FLUSHER on every thread of this process. prctl changes only the calling thread, and a
 * Node process has V8, libuv and Worker threads before user code runs. The mechanism is glibc's setxid broadcast
 * and libcap's libpsx (nptl/nptl_setxid.c, psx/psx.c): list /proc/self/task, send each thread a real-time signal
 * whose handler makes the prctl on that thread and records the result, wait with a bound, and sweep again until a
 * pass finds no new thread. Coverage is then verified from each thread's /proc flags, not taken from the handler.
 *
 * Care for the rest of the program: the handler is installed only for the call (SA_RESTART, so interrupted system
 * calls restart and no EINTR reaches users), a signal that already has a handler is refused, the previous action is
 * restored, and a thread that blocks the signal is never sent it (it would stay pending and, once the previous
 * SIG_DFL is back, kill the process): it is reported uncovered instead.
 */
import { performance } from 'node:perf_hooks';
import { BackendName, KernelBackend } from './backend';
import { withModelledIoFlusher } from './emulator';
import { errnoName, FailureContext, IoFlusherError, prctlFailure, systemError } from './errors';
import { BROADCAST_OUTCOME, BROADCAST_SLOTS, EBUSY, GLIBC_SIGRTMAX, GLIBC_SIGRTMIN, IO_FLUSHER_FLAGS, PR_SET_IO_FLUSHER } from './kernel-constants';
import { loadNativeBinding, NativeBinding } from './native-binding';
import { escapeName, hasSignal, parseStatTexts, readSharedPendingSignals, readTaskIds, readThreadSignalMask, readThreadStat, StatFields } from './procfs';
import { assertBoolean, assertInteger, assertNumber, assertObject } from './validate';

/** Why a thread is not in the requested state. */
export type UncoveredReason = 'blocks-signal' | 'exited' | 'refused' | 'timed-out' | 'not-verified';

export interface ThreadCoverage {
  tid: number;
  name: string;
  /** The thread's /proc flags show the requested state. */
  covered: boolean;
  /** How the prctl reached it: made directly (the calling thread), through the signal handler, or in the model. */
  via: 'direct' | 'signal' | 'emulated' | 'none';
  reason?: UncoveredReason;
  /** For `refused`: the errno name the thread's prctl got. */
  code?: string;
  /** The flags word read back, or null when the thread is gone. */
  flags: number | null;
}

export interface ProcessIoFlusherReport {
  enabled: boolean;
  backend: BackendName;
  /** The real-time signal used, or null (emulated, or a process with one thread). */
  signal: number | null;
  /** Listing passes made (the last one found no new thread). */
  passes: number;
  elapsedMs: number;
  threads: ThreadCoverage[];
  covered: number;
  uncovered: number;
  /**
   * Uncovered threads that block the signal, so no broadcast can reach them. In every Node 20 process seen so far
   * there is one: a thread started at Node's start-up with all signals blocked (most likely the inspector's SIGUSR1
   * watchdog, which only waits on a semaphore). Only `io-flusher exec` (state set before the process starts) covers it.
   */
  unreachable: number;
  /** Every live thread is covered (threads that exited during the call do not count against it). */
  complete: boolean;
  /**
   * The previous action of the signal was restored by the end of the call: false when a signalled thread had not
   * taken the signal yet (restoring SIG_DFL then would kill the process when it arrives); it is restored once it has.
   */
  handlerRestored: boolean;
}

export interface ProcessIoFlusherOptions {
  /** The real-time signal to use; default: the highest one from SIGRTMAX down whose action is SIG_DFL. */
  signal?: number;
  /** How long to wait for signalled threads in each pass, in ms (default 1000). */
  timeoutMs?: number;
  /** The most listing passes to make (default 16). */
  maxPasses?: number;
}

/** Whether a thread blocks or has pending a signal; undefined when it is gone. */
function signalMaskHas(tid: number, field: 'SigBlk' | 'SigPnd', signo: number): boolean | undefined {
  const mask = readThreadSignalMask(tid, field);
  return mask === undefined ? undefined : hasSignal(mask, signo);
}

/** The `signal` option's type, checked before anything else is done; its range needs the binding (chooseSignal). */
function readSignalOption(value: unknown): number | undefined {
  if (value !== undefined) assertNumber(value, 'options.signal');
  return value;
}

/** SIGRTMIN..SIGRTMAX as the C library defines them; glibc's values (34..64) where the addon is not loaded. */
function realtimeSignals(binding: NativeBinding | undefined): [number, number] {
  return binding ? [binding.sigrtmin(), binding.sigrtmax()] : [GLIBC_SIGRTMIN, GLIBC_SIGRTMAX];
}

function assertSignalInRange(binding: NativeBinding | undefined, requested: number | undefined): void {
  if (requested === undefined) return;
  const [min, max] = realtimeSignals(binding);
  assertInteger(requested, 'options.signal', min, max);
}

function chooseSignal(binding: NativeBinding, requested: number | undefined, context: FailureContext): number {
  const min = binding.sigrtmin();
  const max = binding.sigrtmax();
  const inUse = (signo: number): IoFlusherError =>
    new IoFlusherError({
      code: 'ERR_IO_FLUSHER_SIGNAL_IN_USE',
      reason: 'signal-in-use',
      syscall: 'sigaction',
      emulated: context.emulated,
      message: `ERR_IO_FLUSHER_SIGNAL_IN_USE: signal ${signo} already has a handler or is ignored`,
      hint: `choose a real-time signal (${min}..${max}) that nothing else in the process uses, with the \`signal\` option`,
    });
  if (requested !== undefined) {
    if (binding.signalDisposition(requested) !== 0) throw inUse(requested);
    return requested;
  }
  for (let signo = max; signo >= min; signo--) if (binding.signalDisposition(signo) === 0) return signo;
  throw inUse(max);
}

function readNumberOption(value: unknown, name: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  assertInteger(value, `options.${name}`, 1, max);
  return value;
}

function broadcastBusy(detail: string): IoFlusherError {
  return systemError({
    syscall: 'sigaction',
    errno: EBUSY,
    reason: 'signal-in-use',
    detail,
    hint: 'nothing was changed; call again later (an earlier call\'s handler is restored as soon as no thread has its signal pending)',
  });
}

/** An errno the broadcast's native side answered that no caller expects. */
function broadcastFailure(negErrno: number, syscall: string, what: string, hint: string): IoFlusherError {
  return systemError({ syscall, errno: negErrno, reason: 'unexpected-errno', detail: what, hint });
}

/** Threads of this process (and the process itself, ShdPnd) that have `signo` pending. */
function threadsWithSignalPending(signo: number): number[] {
  const pending = readTaskIds(process.pid).filter((tid) => signalMaskHas(tid, 'SigPnd', signo) === true);
  const shared = readSharedPendingSignals(); // undefined (no /proc/self/status): the per-thread answers stand
  return shared !== undefined && hasSignal(shared, signo) ? [process.pid, ...pending] : pending;
}

/**
 * A handler an earlier call left installed (a signalled thread had not taken the signal by its end: a thread inside
 * vfork() or in uninterruptible sleep, or a Worker terminated inside the call, whose `finally` never ran) is restored
 * here once no thread has the signal pending, so one late thread costs at most that one call. Restoring while it is
 * still pending would let SIG_DFL terminate the process when it arrives, so then this answers EBUSY instead.
 * A call in progress on another live thread is never disturbed.
 */
function restoreAbandonedBroadcast(binding: NativeBinding, self: number): void {
  const signo = binding.broadcastSignal();
  if (signo === 0) return;
  const owner = binding.broadcastOwner();
  if (owner !== 0 && owner !== self && signalMaskHas(owner, 'SigBlk', signo) !== undefined) {
    throw broadcastBusy(`another setProcessIoFlusher() is running in this process, on thread ${owner}`);
  }
  const pending = threadsWithSignalPending(signo);
  if (pending.length) {
    throw broadcastBusy(`signal ${signo} sent by an earlier call is still pending on thread(s) ${pending.join(', ')}, so its handler must stay installed`);
  }
  // -EINVAL / -EBUSY: another thread restored it meanwhile (and maybe installed its own); the install below decides.
  binding.broadcastRestore(signo, owner);
}

/**
 * After a call left its handler installed: checks every 100 ms (for up to a minute, without keeping the event loop
 * alive) whether the late signal has been taken, and restores the previous action then, so the handler does not
 * outlive the late thread even if nothing calls again. Restores only while the handler is still the one left behind
 * (owner 0): a later call that reclaimed it and installed its own is left alone.
 */
function restoreOnceTaken(binding: NativeBinding, signo: number): void {
  let checks = 0;
  const timer = setInterval(() => {
    if (binding.broadcastSignal() !== signo || binding.broadcastOwner() !== 0 || ++checks > 600) clearInterval(timer);
    else if (threadsWithSignalPending(signo).length === 0) {
      binding.broadcastRestore(signo, 0);
      clearInterval(timer);
    }
  }, 100);
  timer.unref();
}

/**
 * The stat fields of each thread (undefined: gone), for the read-back: with the addon, one native call per
 * BROADCAST_SLOTS threads; a thread it could not read whole (or every thread, without the addon) read on its own.
 */
function readStats(binding: NativeBinding | undefined, tids: number[]): Array<StatFields | undefined> {
  const stats: Array<StatFields | undefined> = [];
  for (let from = 0; from < tids.length; from += BROADCAST_SLOTS) {
    const chunk = tids.slice(from, from + BROADCAST_SLOTS);
    const text = binding?.readTaskStats(Int32Array.from(chunk));
    const parsed = typeof text === 'string' ? parseStatTexts(text) : [];
    chunk.forEach((tid, i) => {
      let stat = parsed[i];
      if (stat === undefined) {
        try {
          stat = readThreadStat(process.pid, tid);
        } catch {
          // Gone since.
        }
      }
      stats.push(stat);
    });
  }
  return stats;
}

/** Verifies every thread from /proc and builds the report. */
function finish(
  enabled: boolean,
  backend: KernelBackend,
  outcomes: Map<number, Omit<ThreadCoverage, 'name' | 'flags' | 'covered'>>,
  extra: { signal: number | null; passes: number; started: number; handlerRestored: boolean },
  modelledFlags?: (tid: number, startTime: number) => number | undefined,
): ProcessIoFlusherReport {
  const threads: ThreadCoverage[] = [];
  const sorted = [...outcomes].sort((a, b) => a[0] - b[0]);
  const stats = readStats(backend.binding, sorted.map(([tid]) => tid));
  for (const [i, [tid, outcome]] of sorted.entries()) {
    const stat = stats[i];
    const name = stat?.name ?? '';
    const modelled = stat && modelledFlags?.(tid, stat.startTime);
    const flags: number | null = stat === undefined ? null : modelled === undefined ? stat.flags : withModelledIoFlusher(stat.flags, modelled);
    // Coverage is what /proc shows, whatever the handler said: a thread that blocks the signal but already has the
    // requested state (inherited it, or is being cleared and never had it) is covered.
    const inState = flags !== null && ((flags & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS) === enabled;
    const reason: UncoveredReason | undefined =
      flags === null ? 'exited' : inState ? undefined : (outcome.reason ?? 'not-verified');
    threads.push({ tid, name, covered: inState, via: outcome.via, ...(reason ? { reason } : {}), ...(outcome.code ? { code: outcome.code } : {}), flags });
  }
  const covered = threads.filter((t) => t.covered).length;
  return {
    enabled,
    backend: backend.name,
    signal: extra.signal,
    passes: extra.passes,
    elapsedMs: Math.round((performance.now() - extra.started) * 1000) / 1000,
    threads,
    covered,
    uncovered: threads.length - covered,
    unreachable: threads.filter((t) => t.reason === 'blocks-signal').length,
    complete: threads.every((t) => t.covered || t.reason === 'exited'),
    handlerRestored: extra.handlerRestored,
  };
}

/**
 * A thread found in the C library's window (inLibcWindow) more than a whole pass long: reported `blocks-signal` at
 * once in later calls instead of costing each of them a pass.
 */
const stuckInLibcWindow = new Set<number>();

/** The longest one native broadcastPass call waits before JavaScript runs again. */
const PASS_WAIT_SLICE_MS = 10;

type Outcome = Omit<ThreadCoverage, 'name' | 'flags' | 'covered'>;

/**
 * One pass of the broadcast over `tids`, in one native call (see broadcastPass in lib/native-binding.ts): what each
 * thread answered, or why it was not reached, into `outcomes`; threads that may still have the signal pending into
 * `stillPending`.
 */
function signalPass(binding: NativeBinding, signo: number, tids: number[], timeoutMs: number, outcomes: Map<number, Outcome>, stillPending: number[]): void {
  const ids = Int32Array.from(tids);
  const noWait = Int32Array.from(tids.filter((tid) => stuckInLibcWindow.has(tid)));
  const answers = new Int32Array(2 * tids.length); // every thread BROADCAST_OUTCOME.new
  const deadline = performance.now() + timeoutMs;
  // The native call waits in slices, so a Worker terminated inside this call stops within one.
  for (let waitMs = Math.min(PASS_WAIT_SLICE_MS, timeoutMs); ; ) {
    const unsettled = binding.broadcastPass(signo, ids, noWait, waitMs, answers);
    if (unsettled < 0) {
      throw broadcastFailure(unsettled, 'tgkill', `the broadcast pass on signal ${signo} failed`, 'threads not yet signalled by this pass were left as they were');
    }
    const left = deadline - performance.now();
    if (unsettled === 0 || left <= 0) break;
    waitMs = Math.min(PASS_WAIT_SLICE_MS, Math.ceil(left));
  }
  tids.forEach((tid, i) => {
    const code = answers[2 * i];
    const value = answers[2 * i + 1]!;
    switch (code) {
      case BROADCAST_OUTCOME.answered:
        outcomes.set(tid, value === 0 ? { tid, via: 'signal' } : { tid, via: 'signal', reason: 'refused', code: errnoName(value) });
        break;
      case BROADCAST_OUTCOME.unrecorded:
        // More threads answered than the native table holds: this answer was not recorded. The signal has been
        // taken, so the handler has made the prctl, and the /proc read-back decides coverage (never `timed-out`).
        outcomes.set(tid, { tid, via: 'signal' });
        break;
      case BROADCAST_OUTCOME.exited:
        outcomes.set(tid, { tid, via: 'none', reason: 'exited' });
        break;
      case BROADCAST_OUTCOME.sendFailed:
        outcomes.set(tid, { tid, via: 'none', reason: 'refused', code: errnoName(value) });
        break;
      case BROADCAST_OUTCOME.newborn:
        // Blocked every signal for a whole pass: later calls report it at once instead of waiting for it again.
        stuckInLibcWindow.add(tid);
        outcomes.set(tid, { tid, via: 'none', reason: 'blocks-signal' });
        break;
      case BROADCAST_OUTCOME.blocksSignal:
        outcomes.set(tid, { tid, via: 'none', reason: 'blocks-signal' }); // its own choice: no signal reaches it
        break;
      default: // BROADCAST_OUTCOME.signalled: no answer by the deadline
        outcomes.set(tid, { tid, via: 'none', reason: 'timed-out' });
        stillPending.push(tid);
    }
  });
}

/**
 * Puts every thread of this process in the requested state. Throws IoFlusherError when the calling thread itself
 * is refused (EPERM, EINVAL), with `err.report` giving every thread's own answer. Otherwise returns the report;
 * when some live thread is left uncovered, also emits a process warning (code IO_FLUSHER_PARTIAL).
 * Every argument is checked, and the broadcast handler installed (or EBUSY answered), before the calling thread's
 * state is touched.
 * @internal
 */
export function setProcessIoFlusherWith(
  backend: KernelBackend,
  enabled: boolean,
  options: ProcessIoFlusherOptions = {},
): ProcessIoFlusherReport {
  assertBoolean(enabled, 'enabled');
  assertObject(options, 'options');
  const timeoutMs = readNumberOption(options.timeoutMs, 'timeoutMs', 1000, 600_000);
  const maxPasses = readNumberOption(options.maxPasses, 'maxPasses', 16, 1000);
  const requestedSignal = readSignalOption(options.signal);
  const started = performance.now();
  const value = enabled ? 1 : 0;
  const self = backend.threadId();
  const outcomes = new Map<number, Outcome>();
  const setSelf = (): number => {
    // The calling thread first, directly. If it is refused the others will be too, but they are still asked, so the
    // report shows each thread's own answer and the mechanism runs (and is tested) even where prctl is refused.
    const result = backend.set(value);
    outcomes.set(self, result === 0 ? { tid: self, via: 'direct' } : { tid: self, via: 'direct', reason: 'refused', code: errnoName(result) });
    return result;
  };
  const done = (selfResult: number, report: ProcessIoFlusherReport): ProcessIoFlusherReport => {
    if (selfResult < 0) {
      const error = prctlFailure(PR_SET_IO_FLUSHER, selfResult, backend.failureContext());
      Object.defineProperty(error, 'report', { value: report, enumerable: true });
      throw error;
    }
    return warnIfPartial(report);
  };

  if (backend.emulator) {
    // The signal is not used by the model, but a call that the kernel backend would refuse is refused here too.
    const loaded = loadNativeBinding();
    assertSignalInRange(loaded.loaded ? loaded.binding : undefined, requestedSignal);
    // The model: every thread listed now is reached, as a broadcast with every thread answering would.
    const emulator = backend.emulator;
    const selfResult = setSelf();
    for (const tid of readTaskIds(process.pid)) {
      if (tid === self) continue;
      if (selfResult < 0) {
        outcomes.set(tid, { tid, via: 'emulated', reason: 'refused', code: errnoName(selfResult) }); // same model, same answer
        continue;
      }
      const flags = emulator.flagsOf(tid) ?? 0;
      emulator.setFlagsOf(tid, enabled ? flags | IO_FLUSHER_FLAGS : flags & ~IO_FLUSHER_FLAGS);
      outcomes.set(tid, { tid, via: 'emulated' });
    }
    return done(selfResult, finish(enabled, backend, outcomes, { signal: null, passes: 1, started, handlerRestored: true }, (tid, startTime) => emulator.flagsOf(tid, startTime)));
  }

  const binding = backend.binding!;
  assertSignalInRange(binding, requestedSignal);
  restoreAbandonedBroadcast(binding, self);
  const signo = chooseSignal(binding, requestedSignal, backend.failureContext());
  const installed = binding.broadcastInstall(signo, value);
  if (installed === -EBUSY) throw broadcastBusy('another setProcessIoFlusher() in this process (another Worker) has just installed its handler');
  if (installed < 0) throw broadcastFailure(installed, 'sigaction', `could not install the broadcast handler for signal ${signo}`, 'sigaction failed; nothing was changed');
  let passes = 0;
  const stillPending: number[] = [];
  let handlerRestored = false;
  let selfResult: number;
  try {
    selfResult = setSelf();
    for (;;) {
      const fresh = readTaskIds(process.pid).filter((tid) => !outcomes.has(tid));
      if (fresh.length === 0) break;
      if (passes >= maxPasses) {
        // Threads keep appearing faster than passes end: report the rest rather than loop forever.
        for (const tid of fresh) outcomes.set(tid, { tid, via: 'none', reason: 'timed-out' });
        break;
      }
      passes++;
      for (let from = 0; from < fresh.length; from += BROADCAST_SLOTS) {
        signalPass(binding, signo, fresh.slice(from, from + BROADCAST_SLOTS), timeoutMs, outcomes, stillPending);
      }
    }
  } finally {
    // Restoring SIG_DFL while a thread still has the signal pending would kill the process when it arrives: then the
    // handler stays, and the next call restores it once nothing is pending (restoreAbandonedBroadcast).
    const pendingNow = stillPending.filter((tid) => signalMaskHas(tid, 'SigPnd', signo) === true);
    if (pendingNow.length === 0) handlerRestored = binding.broadcastRestore(signo, self) === 0;
    else if (binding.broadcastLeave() === 0) restoreOnceTaken(binding, signo);
  }
  return done(selfResult, finish(enabled, backend, outcomes, { signal: signo, passes, started, handlerRestored }));
}

let warnedUnreachable = false;

/**
 * Partial success is never silent: a warning names the threads left out. Threads that block every signal (Node has
 * one, see ProcessIoFlusherReport.unreachable) are named once per process; any other gap, every time.
 */
function warnIfPartial(report: ProcessIoFlusherReport): ProcessIoFlusherReport {
  const missing = report.threads.filter((t) => !t.covered && t.reason !== 'exited');
  const reachableGap = missing.some((t) => t.reason !== 'blocks-signal');
  if (missing.length && (reachableGap || !warnedUnreachable)) {
    warnedUnreachable = true;
    process.emitWarning(
      `io-flusher: IO_FLUSHER ${report.enabled ? 'set' : 'cleared'} on ${report.covered} of ${report.threads.length} threads; not on ` +
        missing.map((t) => `${t.tid} (${escapeName(t.name)}): ${t.reason}${t.code ? ` ${t.code}` : ''}`).join(', ') +
        (reachableGap ? '' : ' (no signal reaches such a thread; `io-flusher exec` covers every thread from birth)'),
      { type: 'IoFlusherWarning', code: 'IO_FLUSHER_PARTIAL' },
    );
  }
  return report;
}
