/**
 * How setProcessIoFlusher() reaches the threads other than the calling one: the mechanism, one per backend
 * (lib/process-wide.ts keeps the policy: options, passes, the report, warnings).
 *
 * Native: glibc's setxid broadcast and libcap's libpsx (nptl/nptl_setxid.c, psx/psx.c). A real-time signal whose
 * handler makes the prctl on the thread that takes it and records the result is installed for the call only
 * (SA_RESTART, so interrupted system calls restart and no EINTR reaches users); a signal that already has a handler is
 * refused; each pass is one native call (check SigBlk, tgkill, wait, collect); a thread that blocks the signal is never
 * sent it (it would stay pending and, once the previous SIG_DFL is back, kill the process); the previous action is
 * restored, or left installed until a late thread has taken its signal.
 *
 * Emulated: the model (lib/emulator.ts) reaches every listed thread, as a broadcast in which every thread answers.
 * @internal
 */
import { performance } from 'node:perf_hooks';
import type { EmulatedKernel } from './emulator';
import { errnoName, FailureContext, IoFlusherError, systemError } from './errors';
import { BROADCAST_OUTCOME, BROADCAST_SLOTS, EBUSY, GLIBC_SIGRTMAX, GLIBC_SIGRTMIN, IO_FLUSHER_FLAGS } from './kernel-constants';
import { loadNativeBinding, NativeBinding } from './native-binding';
import { hasSignal, parseStatTexts, readSharedPendingSignals, readTaskIds, readThreadSignalMask, readThreadStat, StatFields } from './procfs';
import { assertInteger } from './validate';

/** @internal */
export interface ThreadBroadcast {
  /** Checks the `signal` option against the signals this backend accepts; nothing is touched before. */
  assertSignal(requested: number | undefined): void;
  /**
   * Claims the mechanism for one call (IoFlusherError EBUSY while another call holds it, before anything changes),
   * for setting every thread to `value`.
   */
  begin(value: 0 | 1, requested: number | undefined, self: number, context: () => FailureContext): BroadcastCall;
}

/** @internal */
export interface BroadcastCall {
  /** The real-time signal used, or null (the model uses none). */
  readonly signal: number | null;
  /** Reaches `tids` (listed, not reached yet); the calling thread's own prctl answered `selfResult`. */
  reach(tids: number[], selfResult: number, timeoutMs: number, outcomes: Map<number, Outcome>): void;
  /** Ends the call; true when the signal's previous action is back (false: left for a late thread, see above). */
  end(): boolean;
}

/** Whether a thread blocks or has pending a signal; undefined when it is gone. */
function signalMaskHas(tid: number, field: 'SigBlk' | 'SigPnd', signo: number): boolean | undefined {
  const mask = readThreadSignalMask(tid, field);
  return mask === undefined ? undefined : hasSignal(mask, signo);
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

function chooseSignal(binding: NativeBinding, requested: number | undefined, context: () => FailureContext): number {
  const min = binding.sigrtmin();
  const max = binding.sigrtmax();
  const inUse = (signo: number): IoFlusherError =>
    new IoFlusherError({
      code: 'ERR_IO_FLUSHER_SIGNAL_IN_USE',
      reason: 'signal-in-use',
      syscall: 'sigaction',
      emulated: context().emulated, // gathered only for the error: it reads /proc
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
 * The kernel's stat fields of each of this process's threads `tids` (undefined: gone), for the read-back and for
 * listThreads(): with the addon, one native call per BROADCAST_SLOTS threads; a thread it could not read whole (or
 * every thread, without the addon) read on its own. Throws what reading one fails with, except a thread that is gone.
 * @internal
 */
export function readOwnThreadStats(binding: NativeBinding | undefined, tids: number[]): Array<StatFields | undefined> {
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
        } catch (err) {
          // Gone since: left out. Anything else (EMFILE, EACCES, an unreadable text) is not a thread that exited.
          if ((err as IoFlusherError).code !== 'ESRCH') throw err;
        }
      }
      stats.push(stat);
    });
  }
  return stats;
}

/**
 * A thread found in the C library's window (inLibcWindow) more than a whole pass long: reported `blocks-signal` at
 * once in later calls instead of costing each of them a pass.
 */
const stuckInLibcWindow = new Set<number>();

/** The longest one native broadcastPass call waits before JavaScript runs again. */
const PASS_WAIT_SLICE_MS = 10;

/** Why a thread is not in the requested state. */
export type UncoveredReason = 'blocks-signal' | 'exited' | 'refused' | 'timed-out' | 'not-verified';

/** How the prctl reached a thread: made directly (the calling thread), through the signal handler, or in the model. */
export type ThreadVia = 'direct' | 'signal' | 'emulated' | 'none';

/** What one thread answered, or why it was not reached; the /proc read-back completes it into a ThreadCoverage. */
export interface Outcome {
  tid: number;
  via: ThreadVia;
  reason?: UncoveredReason;
  /** For `refused`: the errno name the thread's prctl got. */
  code?: string;
}

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


/** @internal */
export function nativeThreadBroadcast(binding: NativeBinding): ThreadBroadcast {
  return {
    assertSignal: (requested) => assertSignalInRange(binding, requested),
    begin(value, requested, self, context) {
      restoreAbandonedBroadcast(binding, self);
      const signo = chooseSignal(binding, requested, context);
      const installed = binding.broadcastInstall(signo, value);
      if (installed === -EBUSY) throw broadcastBusy('another setProcessIoFlusher() in this process (another Worker) has just installed its handler');
      if (installed < 0) throw broadcastFailure(installed, 'sigaction', `could not install the broadcast handler for signal ${signo}`, 'sigaction failed; nothing was changed');
      const stillPending: number[] = [];
      let firstPass = true;
      return {
        signal: signo,
        reach(tids, _selfResult, timeoutMs, outcomes) {
          if (firstPass) {
            // The first pass lists every thread but this one: a stuck tid not among them (or this one's) has exited.
            // A tid reused before this call is not told apart: the new thread is then reported at once if it too is
            // found in the window, rather than waited for.
            firstPass = false;
            const live = new Set(tids);
            for (const tid of stuckInLibcWindow) if (!live.has(tid)) stuckInLibcWindow.delete(tid);
          }
          // Even when the calling thread was refused, the others are asked: the report shows each thread's own answer.
          for (let from = 0; from < tids.length; from += BROADCAST_SLOTS) {
            signalPass(binding, signo, tids.slice(from, from + BROADCAST_SLOTS), timeoutMs, outcomes, stillPending);
          }
        },
        end() {
          // Restoring SIG_DFL while a thread still has the signal pending would kill the process when it arrives: then
          // the handler stays, and is restored once nothing is pending (restoreOnceTaken, restoreAbandonedBroadcast).
          const pendingNow = stillPending.filter((tid) => signalMaskHas(tid, 'SigPnd', signo) === true);
          if (pendingNow.length === 0) return binding.broadcastRestore(signo, self) === 0;
          if (binding.broadcastLeave() === 0) restoreOnceTaken(binding, signo);
          return false;
        },
      };
    },
  };
}

/** @internal */
export function emulatedThreadBroadcast(emulator: EmulatedKernel): ThreadBroadcast {
  return {
    // The model uses no signal, but a call the native backend would refuse is refused here too.
    assertSignal(requested) {
      const loaded = loadNativeBinding();
      assertSignalInRange(loaded.loaded ? loaded.binding : undefined, requested);
    },
    begin(value) {
      return {
        signal: null,
        reach(tids, selfResult, _timeoutMs, outcomes) {
          for (const tid of tids) {
            if (selfResult < 0) {
              outcomes.set(tid, { tid, via: 'emulated', reason: 'refused', code: errnoName(selfResult) }); // same model, same answer
              continue;
            }
            const flags = emulator.flagsOf(tid) ?? 0;
            emulator.setFlagsOf(tid, value ? flags | IO_FLUSHER_FLAGS : flags & ~IO_FLUSHER_FLAGS);
            outcomes.set(tid, { tid, via: 'emulated' });
          }
        },
        end: () => true,
      };
    },
  };
}
