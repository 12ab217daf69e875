/**
 * setProcessIoFlusher(): IO_FLUSHER on every thread of this process. prctl changes only the calling thread, and a
 * Node process has V8, libuv and Worker threads before user code runs. The calling thread is set directly; the others
 * are reached by the backend's broadcast (lib/thread-broadcast.ts: a real-time signal whose handler makes the prctl,
 * or the emulator's model), in passes until a listing of /proc/self/task finds no new thread. Coverage is then
 * verified from each thread's /proc flags, not taken from the handler. This file is the policy: options, passes, the
 * report and its warning.
 */
import { performance } from 'node:perf_hooks';
import type { BackendName, KernelBackend } from './backend';
import { errnoName, prctlFailure } from './errors';
import { IO_FLUSHER_FLAGS, PR_SET_IO_FLUSHER } from './kernel-constants';
import { escapeName, readTaskIds } from './procfs';
import type { Outcome, ThreadVia, UncoveredReason } from './thread-broadcast';
import { assertBoolean, assertInteger, assertNumber, assertObject } from './validate';

export type { UncoveredReason, ThreadVia };

/** One thread in a report: what it answered (see Outcome) and what /proc shows. */
export interface ThreadCoverage extends Outcome {
  name: string;
  /** The thread's /proc flags show the requested state. */
  covered: boolean;
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

/** The `signal` option's type, checked before anything else is done; its range is the backend's (assertSignal). */
function readSignalOption(value: unknown): number | undefined {
  if (value !== undefined) assertNumber(value, 'options.signal');
  return value;
}

function readNumberOption(value: unknown, name: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  assertInteger(value, `options.${name}`, 1, max);
  return value;
}

/** Verifies every thread from /proc and builds the report. */
function finish(
  enabled: boolean,
  backend: KernelBackend,
  outcomes: Map<number, Outcome>,
  extra: { signal: number | null; passes: number; started: number; handlerRestored: boolean },
): ProcessIoFlusherReport {
  const threads: ThreadCoverage[] = [];
  const sorted = [...outcomes].sort((a, b) => a[0] - b[0]);
  // Read back as listThreads() reads it: the kernel's stat, with the backend's view of the IO_FLUSHER bits.
  const stats = backend.ownThreadStats(sorted.map(([tid]) => tid));
  for (const [i, [tid, outcome]] of sorted.entries()) {
    const stat = stats[i];
    const name = stat?.name ?? '';
    const flags: number | null = stat === undefined ? null : backend.flagsAsSeen(process.pid, tid, stat.flags, stat.startTime).flags;
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

  backend.broadcast.assertSignal(requestedSignal);
  const call = backend.broadcast.begin(value, requestedSignal, self, () => backend.failureContext());
  let passes = 0;
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
      call.reach(fresh, selfResult, timeoutMs, outcomes);
    }
  } finally {
    handlerRestored = call.end();
  }
  return done(selfResult, finish(enabled, backend, outcomes, { signal: call.signal, passes, started, handlerRestored }));
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
