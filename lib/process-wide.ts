/**
 * setProcessIoFlusher(): IO_FLUSHER on every thread of this process. prctl changes only the calling thread, and a
 * Node process has V8, libuv and Worker threads before user code runs. The backend's broadcast
 * (lib/thread-broadcast.ts) sets the calling thread directly and has every other thread make the prctl itself and
 * read the state back, listing /proc/self/task until a listing finds no new thread. This file is the policy: options,
 * the report and its warning.
 */
import { performance } from 'node:perf_hooks';
import type { BackendName, KernelBackend } from './backend';
import { prctlFailure } from './errors';
import { PR_SET_IO_FLUSHER } from './kernel-constants';
import { escapeName, readThreadName } from './procfs';
import type { ThreadCoverage, ThreadVia, TimedOutSeen, UncoveredReason } from './thread-broadcast';
import { assertInteger, assertNumber } from './validate';

export type { ThreadCoverage, UncoveredReason, ThreadVia, TimedOutSeen };

/**
 * What setProcessIoFlusher() did, thread by thread. Each thread's coverage is the kernel's own answer for it
 * (PR_GET_IO_FLUSHER made in that thread after its PR_SET_IO_FLUSHER); the report reads nothing else per thread. For a
 * thread's name and whole flags word, see listThreads().
 */
export interface ProcessIoFlusherReport {
  /** The state asked for: true to set IO_FLUSHER, false to clear it. */
  enabled: boolean;
  /** Which backend made the call: the kernel (`native`) or the emulator's model (`emulated`). */
  backend: BackendName;
  /** The real-time signal used, or null (emulated). */
  signal: number | null;
  /** Listings of /proc/self/task that found new threads (a last listing found none, unless maxPasses ran out). */
  passes: number;
  /** How long the call took, in milliseconds. */
  elapsedMs: number;
  /** Every thread the call listed, in thread id order. */
  threads: ThreadCoverage[];
  /** Threads in the requested state. */
  covered: number;
  /** Threads not (known to be) in the requested state: threads.length - covered. */
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
   * answered (a thread held by a tracer or stopped, whose signal may still be delivered: with SIG_DFL back it would
   * kill the process). The handler then stays, harmless, until every such signal is accounted for: a later call, or a
   * timer that checks every 100 ms for a minute, restores it.
   */
  handlerRestored: boolean;
}

/** Options of setProcessIoFlusher(); each is checked before anything is changed. */
export interface ProcessIoFlusherOptions {
  /**
   * The real-time signal to use (SIGRTMIN..SIGRTMAX); refused (ERR_IO_FLUSHER_SIGNAL_IN_USE) when the program has an
   * action of its own on it. Default: the one the last call used, else the highest whose action is SIG_DFL.
   */
  signal?: number;
  /**
   * How long to wait for signalled threads in each pass, in ms (default 1000, at most 600000). A thread that has not
   * answered by then is `timed-out`; a thread held by a debugger, or stopped, holds the call this long.
   */
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

/**
 * Puts every thread of this process in the requested state. Throws IoFlusherError when the calling thread itself
 * is refused (EPERM, EINVAL), with `err.report` giving every thread's own answer. Otherwise returns the report;
 * when some live thread is left uncovered, also emits a process warning (code IO_FLUSHER_PARTIAL).
 * `enabled` and the `options` object are checked by the caller (IoFlusher.setProcessIoFlusher); every option, /proc and
 * the signal are checked here and in the broadcast before any thread's state is touched.
 * @internal
 */
export function setProcessIoFlusherWith(backend: KernelBackend, enabled: boolean, options: ProcessIoFlusherOptions = {}): ProcessIoFlusherReport {
  const timeoutMs = readNumberOption(options.timeoutMs, 'timeoutMs', 1000, 600_000);
  const maxPasses = readNumberOption(options.maxPasses, 'maxPasses', 16, 1000);
  const requestedSignal = readSignalOption(options.signal);
  backend.broadcast.assertSignal(requestedSignal);
  const started = performance.now();
  const result = backend.broadcast.run(enabled ? 1 : 0, requestedSignal, timeoutMs, maxPasses);
  const threads = [...result.threads].sort((a, b) => a.tid - b.tid);
  const covered = threads.filter((t) => t.covered).length;
  const report: ProcessIoFlusherReport = {
    enabled,
    backend: backend.name,
    signal: result.signal,
    passes: result.passes,
    elapsedMs: Math.round((performance.now() - started) * 1000) / 1000,
    threads,
    covered,
    uncovered: threads.length - covered,
    unreachable: threads.filter((t) => t.reason === 'blocks-signal').length,
    complete: threads.every((t) => t.covered || t.reason === 'exited'),
    handlerRestored: result.handlerRestored,
  };
  if (result.selfResult < 0) {
    const error = prctlFailure(PR_SET_IO_FLUSHER, result.selfResult, backend.failureContext());
    Object.defineProperty(error, 'report', { value: report, enumerable: true });
    throw error;
  }
  return warnIfPartial(report);
}

/** Threads already named in a warning for blocking every signal: each is named once (Node has one such thread). */
const warnedBlockers = new Set<number>();

/**
 * Partial success is never silent: a warning names the threads left out. A thread that blocks every signal is named
 * the first time it is found so; any other gap, every time.
 */
function warnIfPartial(report: ProcessIoFlusherReport): ProcessIoFlusherReport {
  const missing = report.threads.filter((t) => !t.covered && t.reason !== 'exited');
  const reachableGap = missing.some((t) => t.reason !== 'blocks-signal');
  const newBlockers = missing.filter((t) => t.reason === 'blocks-signal' && !warnedBlockers.has(t.tid));
  if (missing.length && (reachableGap || newBlockers.length)) {
    for (const t of newBlockers) warnedBlockers.add(t.tid);
    process.emitWarning(
      `io-flusher: IO_FLUSHER ${report.enabled ? 'set' : 'cleared'} on ${report.covered} of ${report.threads.length} threads; not on ` +
        missing.map((t) => `${t.tid} (${escapeName(readThreadName(t.tid))}): ${t.reason}${t.code ? ` ${t.code}` : ''}${t.seen ? ` (${t.seen})` : ''}`).join(', ') +
        (reachableGap ? '' : ' (no signal reaches such a thread; `io-flusher exec` covers every thread from birth)'),
      { type: 'IoFlusherWarning', code: 'IO_FLUSHER_PARTIAL' },
    );
  }
  return report;
}
