/**
 * prepareDaemon(): the start-up sequence real storage daemons use, in one call, in this order: raise the memlock
 * limit, lock memory, shield from the OOM killer, then IO_FLUSHER (iscsid sets it last, just before its event loop).
 * Each step is required or best-effort; the report says per step what was wanted, what was done, and why not.
 */
import { IoFlusherError } from './errors';
import { IoFlusher } from './io-flusher';
import { lockMemory, lockMemoryMode, LockMemoryOptions } from './code-lock';
import { MemlockLimit, setMemlockLimit } from './memlock-limit';
import { setOomScoreAdj } from './oom-score';
import { OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN } from './kernel-constants';
import { ProcessIoFlusherReport } from './process-wide';
import { assertInteger, assertLimit, assertLimitPair, assertObject, assertOneOf, invalidArgValue } from './validate';

/** The steps of {@link prepareDaemon}, in the order they run. */
export type PrepareStepName = 'memlockLimit' | 'lockMemory' | 'oomScoreAdj' | 'ioFlusher';

/**
 * What {@link prepareDaemon} does. The whole object is validated before the first step, so a bad value never leaves
 * a lowered memlock limit or locked memory behind.
 */
export interface PrepareDaemonOptions {
  /** 'process' (every thread, default), 'thread' (the calling thread only) or false (skip). */
  ioFlusher?: 'process' | 'thread' | false;
  /** true (default: lockMemory()'s default, the code scope with every page mapped), lockMemory options (e.g.
   * `{ code: 'touched' }`), or false. The V8 heap is never locked (see lockMemory). */
  lockMemory?: boolean | LockMemoryOptions;
  /** A value for /proc/self/oom_score_adj (default -1000: never OOM-killed), or false. */
  oomScoreAdj?: number | false;
  /** RLIMIT_MEMLOCK in bytes (Infinity for unlimited; default: left as it is), `{ soft, hard }`, or false. */
  memlockLimit?: number | MemlockLimit | false;
  /** Steps whose failure throws. Default: every step asked for. */
  required?: PrepareStepName[];
}

/** One step of a {@link PrepareDaemonReport}. */
export interface PrepareStepReport {
  /** Which step. */
  step: PrepareStepName;
  /** The value asked for (the option as given, or its default). */
  wanted: unknown;
  /** Whether its failure throws (see `required` in the options). */
  required: boolean;
  /** Whether it was done. */
  done: boolean;
  /** True when the step went to the emulator: nothing is protected. */
  emulated: boolean;
  /** What the step found or did, e.g. VmLck bytes, the value read back, the per-thread coverage. */
  detail?: unknown;
  /** When not done: the error's `code` ('EPERM', 'ENOMEM', ...). */
  code?: string;
  /** When not done: the error's `reason` ('missing-capability', 'limit-exceeded', ...). */
  reason?: string;
  /** When not done: what to do about it. */
  hint?: string;
}

/** What {@link prepareDaemon} did, step by step; also `err.report` of the error it throws. */
export interface PrepareDaemonReport {
  /** One entry per step asked for, in the order run. */
  steps: PrepareStepReport[];
  /** Every required step done. */
  ok: boolean;
  /** True only when IO_FLUSHER is really (not emulated) in effect on the thread(s) asked for. */
  ioFlusherInEffect: boolean;
}

const ORDER: PrepareStepName[] = ['memlockLimit', 'lockMemory', 'oomScoreAdj', 'ioFlusher'];

/**
 * Checks the whole options object before any step runs: a bad `oomScoreAdj` must not be found only after the hard
 * memlock limit was lowered (irreversible without CAP_SYS_RESOURCE) and memory locked.
 */
function validateOptions(options: PrepareDaemonOptions): void {
  assertObject(options, 'options');
  const { memlockLimit, lockMemory: lock, oomScoreAdj, ioFlusher, required } = options;
  if (memlockLimit !== undefined && memlockLimit !== false) {
    if (typeof memlockLimit === 'object' && memlockLimit !== null) {
      const { soft, hard } = memlockLimit as Partial<MemlockLimit>;
      assertLimit(soft, 'options.memlockLimit.soft');
      assertLimit(hard, 'options.memlockLimit.hard');
      assertLimitPair(soft, hard);
    } else {
      assertLimit(memlockLimit, 'options.memlockLimit');
    }
  }
  if (lock !== undefined && typeof lock !== 'boolean') lockMemoryMode(lock, 'options.lockMemory');
  if (oomScoreAdj !== undefined && oomScoreAdj !== false) assertInteger(oomScoreAdj, 'options.oomScoreAdj', OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX);
  if (ioFlusher !== undefined && ioFlusher !== false) assertOneOf(ioFlusher, 'options.ioFlusher', ['process', 'thread'] as const);
  if (required !== undefined && (!Array.isArray(required) || required.some((r) => !ORDER.includes(r)))) {
    throw invalidArgValue(`The "options.required" property must be an array of ${ORDER.map((s) => `'${s}'`).join(', ')}`);
  }
  // A required step that is not asked for would never run, and never fail: say so instead.
  const notAsked = (required ?? []).filter((step) => (step === 'lockMemory' ? lock === false : step === 'memlockLimit' ? memlockLimit === undefined || memlockLimit === false : options[step] === false));
  if (notAsked.length) {
    throw invalidArgValue(`The "options.required" property names ${notAsked.map((s) => `'${s}'`).join(', ')}, which this call does not ask for (set options.${notAsked[0]})`);
  }
}

/** Phase 1: one read of every option (a getter answering differently the second time must not get past the checks). */
function snapshotOptions(given: PrepareDaemonOptions): PrepareDaemonOptions {
  assertObject(given, 'options');
  const options: PrepareDaemonOptions = { ...given };
  if (typeof options.memlockLimit === 'object' && options.memlockLimit !== null) options.memlockLimit = { ...options.memlockLimit };
  if (typeof options.lockMemory === 'object' && options.lockMemory !== null) options.lockMemory = { ...options.lockMemory };
  if (Array.isArray(options.required)) options.required = [...options.required];
  return options;
}

/** Phase 2: what each step is asked to do, with the defaults; false for a step not asked for. */
function wantedSteps(options: PrepareDaemonOptions): Record<PrepareStepName, unknown> {
  return {
    memlockLimit: options.memlockLimit ?? false,
    lockMemory: options.lockMemory ?? true,
    oomScoreAdj: options.oomScoreAdj ?? OOM_SCORE_ADJ_MIN,
    ioFlusher: options.ioFlusher ?? 'process',
  };
}

/** What each step calls, with its wanted value. */
function stepRunners(ioFlusher: IoFlusher): Record<PrepareStepName, (value: never) => unknown> {
  return {
    memlockLimit: (value: number | MemlockLimit) =>
      typeof value === 'object' ? setMemlockLimit(value.soft, value.hard) : setMemlockLimit(value, value),
    lockMemory: (value: boolean | LockMemoryOptions) => lockMemory(value === true ? {} : (value as LockMemoryOptions)),
    oomScoreAdj: (value: number) => ({ oomScoreAdj: setOomScoreAdj(value) }),
    ioFlusher: (value: 'process' | 'thread'): ProcessIoFlusherReport | { thread: boolean } => {
      if (value === 'thread') {
        ioFlusher.setIoFlusher(true);
        return { thread: true };
      }
      return ioFlusher.setProcessIoFlusher(true);
    },
  };
}

/**
 * A process-wide ioFlusher step is done when every thread a broadcast can reach is covered. Threads that block
 * every signal (see ProcessIoFlusherReport.unreachable) do not fail the step, but the hint says so.
 */
function judgeProcessCoverage(entry: PrepareStepReport, report: ProcessIoFlusherReport): void {
  const reachableGap = report.uncovered - report.unreachable - report.threads.filter((t) => t.reason === 'exited').length;
  entry.done = reachableGap === 0;
  if (report.complete) return;
  entry.code = 'ERR_IO_FLUSHER_PARTIAL';
  entry.reason = reachableGap ? 'partial' : 'unreachable-threads';
  entry.hint =
    `${report.uncovered} of ${report.threads.length} threads are not in IO_FLUSHER state` +
    (report.unreachable ? ` (${report.unreachable} block every signal, so no broadcast reaches them)` : '') +
    '; start the daemon through `io-flusher exec` to cover every thread from birth';
}

/** Phase 3: runs one step; an IoFlusherError becomes the step's failure, anything else is thrown. */
function runStep(ioFlusher: IoFlusher, step: PrepareStepName, wanted: unknown, required: boolean): PrepareStepReport {
  const entry: PrepareStepReport = { step, wanted, required, done: false, emulated: step === 'ioFlusher' && ioFlusher.emulated };
  try {
    entry.detail = stepRunners(ioFlusher)[step](wanted as never);
    if (step === 'ioFlusher' && wanted === 'process') judgeProcessCoverage(entry, entry.detail as ProcessIoFlusherReport);
    else entry.done = true;
  } catch (err) {
    if (!(err instanceof IoFlusherError)) throw err;
    entry.code = err.code;
    entry.reason = err.reason;
    entry.hint = err.hint;
    entry.detail = err.report;
  }
  return entry;
}

/** Phase 4: the report; throws ERR_IO_FLUSHER_PREPARE (with the report) when a required step failed. */
function finishReport(steps: PrepareStepReport[]): PrepareDaemonReport {
  const ioStep = steps.find((s) => s.step === 'ioFlusher');
  const report: PrepareDaemonReport = {
    steps,
    ok: steps.every((s) => s.done || !s.required),
    ioFlusherInEffect: !!ioStep && ioStep.done && !ioStep.emulated,
  };
  const failed = steps.filter((s) => s.required && !s.done);
  if (failed.length) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_PREPARE',
      reason: 'prepare-failed',
      message: `ERR_IO_FLUSHER_PREPARE: required step(s) failed: ${failed.map((s) => `${s.step} (${s.code})`).join(', ')}`,
      hint: failed.map((s) => `${s.step}: ${s.hint}`).join('; '),
      report,
    });
  }
  return report;
}

export function prepareDaemonWith(ioFlusher: IoFlusher, given: PrepareDaemonOptions = {}): PrepareDaemonReport {
  const options = snapshotOptions(given);
  validateOptions(options);
  const wanted = wantedSteps(options);
  const asked = ORDER.filter((step) => wanted[step] !== false);
  const required = options.required ?? asked;
  return finishReport(asked.map((step) => runStep(ioFlusher, step, wanted[step], required.includes(step))));
}
