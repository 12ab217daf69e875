/**
 * How setProcessIoFlusher() reaches every thread: the mechanism, one per backend (lib/process-wide.ts keeps the
 * policy: options, the report, warnings).
 *
 * Native: glibc's setxid broadcast and libcap's libpsx (nptl/nptl_setxid.c, psx/psx.c), in one native call
 * (native/thread_broadcast.h says what it guarantees and why): the calling thread makes its own prctl, every other
 * thread is sent a real-time signal whose handler makes the prctl there and reads the state back with
 * PR_GET_IO_FLUSHER. This file chooses the signal (never one that has an action of its own) and says what each
 * thread's outcome means; when a thread has not answered by the deadline the handler stays installed, and a timer
 * puts the previous action back once every late signal is accounted for.
 *
 * Emulated: the model (lib/emulator.ts) answers for every listed thread, as a broadcast in which every thread answers.
 * @internal
 */
import type { EmulatedKernel } from './emulator';
import { errnoName, IoFlusherError, systemError } from './errors';
import { BROADCAST_OUTCOME, BROADCAST_SEEN, BROADCAST_SLOTS, E2BIG, EBUSY, ENOENT, ESRCH, EXDEV, GLIBC_SIGRTMAX, GLIBC_SIGRTMIN, IO_FLUSHER_FLAGS } from './kernel-constants';
import { loadNativeBinding, NativeBinding } from './native-binding';
import { foreignProcError, ownTaskIdsBeforeChange, procUnavailableError } from './procfs';
import { assertInteger } from './validate';

/**
 * Why a thread is not in the requested state: `blocks-signal` (it blocks the signal, so only what it inherited counts:
 * start the process through `io-flusher exec` to cover it), `exited` (gone during the call), `refused` (its prctl
 * failed: `code` says how), `timed-out` (no answer by timeoutMs: `seen` and `code` say what /proc showed),
 * `not-reached` (never sent the signal: listed only after maxPasses listings had found new threads, or the signal
 * could not be queued: `code` says why), `not-verified` (its prctl succeeded but PR_GET_IO_FLUSHER did not read back
 * the state asked for).
 */
export type UncoveredReason = 'blocks-signal' | 'exited' | 'refused' | 'timed-out' | 'not-reached' | 'not-verified';

/** How the prctl reached a thread: made directly (the calling thread), through the signal handler, or in the model. */
export type ThreadVia = 'direct' | 'signal' | 'emulated' | 'none';

/** One thread in a ProcessIoFlusherReport. */
export interface ThreadCoverage {
  /** The thread's id (gettid), as /proc/self/task lists it. */
  tid: number;
  /** How the prctl reached it. */
  via: ThreadVia;
  /** The thread is in the requested state, by the kernel's own answer for it (see `ioFlusher`). */
  covered: boolean;
  /**
   * The thread's IO_FLUSHER state after the call, as the kernel answered PR_GET_IO_FLUSHER in that thread (for a
   * thread that blocks the signal: its /proc flags); null when it is not known (refused, gone, no answer).
   */
  ioFlusher: boolean | null;
  /** Why it is not covered; absent when it is. */
  reason?: UncoveredReason;
  /** For `refused` and `not-verified`: the errno name its prctl got; for `timed-out`: why its status could not be read. */
  code?: string;
  /**
   * For `timed-out`: what its /proc status showed at the last look. `pending`: the signal is waiting for the thread to
   * run (it is stopped, or waits for a CPU); `taken`: dequeued but not handled (held by a debugger or tracer in
   * signal-delivery-stop); `in-handler`: running the handler; `newborn`: the C library blocks every signal in it (a
   * thread starting or exiting).
   */
  seen?: TimedOutSeen;
}

/** What a timed-out thread's /proc status showed (see ThreadCoverage.seen). */
export type TimedOutSeen = 'pending' | 'taken' | 'in-handler' | 'newborn';

const SEEN_NAMES: Record<number, TimedOutSeen> = {
  [BROADCAST_SEEN.pending]: 'pending',
  [BROADCAST_SEEN.taken]: 'taken',
  [BROADCAST_SEEN.inHandler]: 'in-handler',
  [BROADCAST_SEEN.newborn]: 'newborn',
};

/** What one broadcast did. */
export interface BroadcastResult {
  /** The real-time signal used, or null (the model uses none). */
  signal: number | null;
  passes: number;
  handlerRestored: boolean;
  /** The calling thread's own PR_SET_IO_FLUSHER result: 0 or -errno. */
  selfResult: number;
  /** The calling thread first. */
  threads: ThreadCoverage[];
}

/** @internal */
export interface ThreadBroadcast {
  /** Checks the `signal` option against the signals this backend accepts; nothing is touched before. */
  assertSignal(requested: number | undefined): void;
  /**
   * Puts every thread of this process in state `value`, listing /proc/self/task again until a listing finds no new
   * thread (at most `maxPasses` listings that find some), waiting up to `timeoutMs` for each pass's threads. Throws
   * IoFlusherError, with nothing changed, when it cannot start (no /proc, another namespace's /proc, no free signal).
   */
  run(value: 0 | 1, requested: number | undefined, timeoutMs: number, maxPasses: number): BroadcastResult;
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

/**
 * signalDisposition(): the action is SIG_DFL (0), or the broadcast's own handler left for a late thread (3); not
 * ignored, handled by the program, or blocked in the calling thread (a program that waits for it blocks it).
 */
const usable = (disposition: number): boolean => disposition === 0 || disposition === 3;

function signalInUse(binding: NativeBinding, signo: number): IoFlusherError {
  return new IoFlusherError({
    code: 'ERR_IO_FLUSHER_SIGNAL_IN_USE',
    reason: 'signal-in-use',
    syscall: 'sigaction',
    message: `ERR_IO_FLUSHER_SIGNAL_IN_USE: signal ${signo} already has a handler, is ignored, or is blocked by the calling thread`,
    hint: `choose a real-time signal (${binding.sigrtmin()}..${binding.sigrtmax()}) that nothing else in the process uses, with the \`signal\` option; nothing was changed`,
  });
}

/** The signal the last call used: tried first, so a handler left for a late thread is used again, not a second one. */
let lastSignal: number | undefined;

/** The highest real-time signal whose action is SIG_DFL (or the broadcast's own). */
function freeSignal(binding: NativeBinding): number {
  const max = binding.sigrtmax();
  for (let signo = max; signo >= binding.sigrtmin(); signo--) if (usable(binding.signalDisposition(signo))) return signo;
  throw signalInUse(binding, max);
}

/** What the native call answers instead of records, as the error a caller can act on (nothing was changed). */
function runFailure(binding: NativeBinding, rc: number, signo: number): IoFlusherError {
  if (rc === -EXDEV) return foreignProcError();
  if (rc === -EBUSY) return signalInUse(binding, signo);
  if (rc === -E2BIG) {
    return systemError({
      syscall: 'getdents64',
      errno: rc,
      path: '/proc/self/task',
      reason: 'unexpected-errno',
      detail: `more than ${BROADCAST_SLOTS} threads`,
      hint: 'nothing was changed; start the process through `io-flusher exec`, which covers every thread from birth',
    });
  }
  if (rc === -ENOENT) return procUnavailableError(rc, 'open', '/proc/self/task');
  return systemError({
    syscall: 'open',
    errno: rc,
    path: '/proc/self/task',
    reason: 'unexpected-errno',
    hint: 'nothing was changed; the broadcast lists the threads in /proc/self/task (EMFILE: the process is out of descriptors)',
  });
}

/**
 * After a call left its handler installed for a late thread (one held by a tracer, stopped, or unreadable): settles
 * every 100 ms, for up to a minute and without keeping the event loop alive, so the previous action comes back once
 * every late signal is accounted for even if nothing calls again. A later call settles too.
 */
let settling: NodeJS.Timeout | undefined;
function settleLater(binding: NativeBinding): void {
  if (settling) return;
  let checks = 0;
  settling = setInterval(() => {
    if (binding.broadcastSettle() === 0 || ++checks >= 600) {
      clearInterval(settling);
      settling = undefined;
    }
  }, 100);
  settling.unref();
}

/** The kernel's answer to PR_GET_IO_FLUSHER as a state: 1 set, 0 clear, null refused. */
const stateOf = (get: number): boolean | null => (get < 0 ? null : get === 1);

/** One thread's coverage from its own prctl answers (the calling thread, a handler, or the model). */
function answered(tid: number, via: ThreadVia, enabled: boolean, set: number, get: number): ThreadCoverage {
  const ioFlusher = stateOf(get);
  const covered = ioFlusher === enabled;
  if (covered) return { tid, via, covered, ioFlusher };
  // Refused: the errno its SET got. Allowed, but the answer read back disagrees (or could not be read): say so.
  if (set < 0) return { tid, via, covered, ioFlusher, reason: 'refused', code: errnoName(set) };
  return { tid, via, covered, ioFlusher, reason: 'not-verified', ...(get < 0 ? { code: errnoName(get) } : {}) };
}

/** A native record (BROADCAST_OUTCOME and its a, b) as a thread's coverage. */
function coverageOf(tid: number, outcome: number, a: number, b: number, enabled: boolean): ThreadCoverage {
  switch (outcome) {
    case BROADCAST_OUTCOME.direct:
      return answered(tid, 'direct', enabled, a, b);
    case BROADCAST_OUTCOME.answered:
      return answered(tid, 'signal', enabled, a, b);
    case BROADCAST_OUTCOME.blocksSignal: {
      // It keeps what it inherited: covered when that is the requested state.
      if (a === -ESRCH || a === -ENOENT) return { tid, via: 'none', covered: false, ioFlusher: null, reason: 'exited' };
      const ioFlusher = a < 0 ? null : ((b >>> 0) & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS;
      return ioFlusher === enabled ? { tid, via: 'none', covered: true, ioFlusher } : { tid, via: 'none', covered: false, ioFlusher, reason: 'blocks-signal' };
    }
    case BROADCAST_OUTCOME.exited:
      return { tid, via: 'none', covered: false, ioFlusher: null, reason: 'exited' };
    case BROADCAST_OUTCOME.sendFailed: // rt_tgsigqueueinfo failed (EAGAIN: RLIMIT_SIGPENDING): no prctl was made there
    case BROADCAST_OUTCOME.notReached: // listed after the last pass (threads kept appearing), or beyond the table
      return { tid, via: 'none', covered: false, ioFlusher: null, reason: 'not-reached', ...(a < 0 ? { code: errnoName(a) } : {}) };
    default: {
      // BROADCAST_OUTCOME.timedOut: b is -errno when its status could not be read (never taken for an exit)
      const seen = SEEN_NAMES[a];
      return { tid, via: 'none', covered: false, ioFlusher: null, reason: 'timed-out', ...(b < 0 ? { code: errnoName(b) } : {}), ...(seen ? { seen } : {}) };
    }
  }
}

/** @internal */
export function nativeThreadBroadcast(binding: NativeBinding): ThreadBroadcast {
  return {
    assertSignal: (requested) => assertSignalInRange(binding, requested),
    run(value, requested, timeoutMs, maxPasses) {
      // The native call itself refuses a signal that has an action of the program's (-EBUSY, nothing changed): only
      // then is a free one looked for, one sigaction query per signal.
      let signo = requested ?? lastSignal ?? binding.sigrtmax();
      let out = binding.broadcastRun(signo, value, timeoutMs, maxPasses);
      if (out === -EBUSY && requested === undefined) {
        signo = freeSignal(binding);
        out = binding.broadcastRun(signo, value, timeoutMs, maxPasses);
      }
      if (typeof out === 'number') throw runFailure(binding, out, signo);
      lastSignal = signo;
      const enabled = value === 1;
      const threads: ThreadCoverage[] = [];
      for (let i = 2; i < out.length; i += 4) threads.push(coverageOf(out[i]!, out[i + 1]!, out[i + 2]!, out[i + 3]!, enabled));
      const handlerRestored = out[1] === 1;
      if (!handlerRestored) settleLater(binding);
      return { signal: signo, passes: out[0]!, handlerRestored, selfResult: out[4]!, threads };
    },
  };
}

/** @internal */
export function emulatedThreadBroadcast(emulator: EmulatedKernel): ThreadBroadcast {
  return {
    // The model uses no signal, but a call the native backend would refuse is refused here too: out of range, or a
    // signal the program has an action of its own on.
    assertSignal(requested) {
      const loaded = loadNativeBinding();
      const binding = loaded.loaded ? loaded.binding : undefined;
      assertSignalInRange(binding, requested);
      if (binding && requested !== undefined && !usable(binding.signalDisposition(requested))) throw signalInUse(binding, requested);
    },
    run(value, _requested, _timeoutMs, maxPasses) {
      let listed = ownTaskIdsBeforeChange(); // /proc checked before the model changes, as the native call does
      const self = emulator.threadId;
      const enabled = value === 1;
      const [selfResult, selfGet] = emulator.setAndGetOn(self, value)!;
      const threads: ThreadCoverage[] = [answered(self, 'direct', enabled, selfResult, selfGet)];
      const known = new Set([self]);
      let passes = 0;
      for (;;) {
        const fresh = listed.filter((tid) => !known.has(tid));
        if (fresh.length === 0) break;
        for (const tid of fresh) known.add(tid);
        if (passes === maxPasses) {
          for (const tid of fresh) threads.push({ tid, via: 'none', covered: false, ioFlusher: null, reason: 'not-reached' });
          break;
        }
        passes++;
        for (const tid of fresh) {
          const answer = emulator.setAndGetOn(tid, value);
          threads.push(answer ? answered(tid, 'emulated', enabled, ...answer) : { tid, via: 'none', covered: false, ioFlusher: null, reason: 'exited' });
        }
        listed = ownTaskIdsBeforeChange();
      }
      return { signal: null, passes, handlerRestored: true, selfResult, threads };
    },
  };
}
