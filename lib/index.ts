/**
 * io-flusher: PR_SET_IO_FLUSHER for Node.js storage daemons.
 *
 * All functions are synchronous. The plain functions use a default instance, one per thread, whose backend comes
 * from the environment variable IO_FLUSHER_BACKEND ('auto' when unset). `auto` uses the kernel when it has the
 * feature, and otherwise the emulator with a process warning (code IO_FLUSHER_EMULATED): protection is then NOT in
 * effect. An invalid IO_FLUSHER_* variable throws a RangeError whose code names it (ERR_INVALID_IO_FLUSHER_BACKEND,
 * ...), except from probe(), which reports it.
 *
 * Guides: the README, docs/storage-daemon.md, docs/deployment.md and docs/cli.md of the repository.
 * @packageDocumentation
 */

import { backendFromEnvironment, BACKEND_ENV } from './backend';
import { IoFlusher, ioFlusherChosenBy, IoFlusherOptions, probeWith, ProbeResult } from './io-flusher';
import type { ProcessIoFlusherOptions, ProcessIoFlusherReport } from './process-wide';
import { reexecWithIoFlusher as reexecWith, ReexecResult } from './exec';
import { PrepareDaemonOptions, PrepareDaemonReport, prepareDaemonWith } from './prepare';
import { assertProcessId, capabilitiesFromStatus, CapabilitySets, readStatus, ThreadFlags } from './procfs';
import { assertId } from './validate';

export { IoFlusher } from './io-flusher';
export type { IoFlusherOptions, ProbeResult } from './io-flusher';
export { IoFlusherError } from './errors';
export type { IoFlusherErrorReason } from './errors';
export type { ThreadFlags, CapabilitySets } from './procfs';
export type { BackendName, BackendChoice } from './backend';
export type { EmulatorOptions } from './emulator';
export { REEXEC_ENV } from './exec';
// The forward-progress kit: IO_FLUSHER keeps a daemon's allocations out of reclaim recursion, it does not make them
// succeed. Real storage daemons (iscsid, multipathd, lvm2) also lock their memory, keep the OOM killer away and raise
// the memlock limit. In Node, memory is locked by scope (code mappings, locked Buffers), never the V8 heap.
export { lockMemory, unlockMemory, lockedMemory } from './code-lock';
export type { LockMemoryOptions, MemoryLockReport, CodeLockMode, CodeScopeReport, LockedMemory } from './code-lock';
export { allocLockedBuffer, unlockBuffer, isLockedBuffer, LockedBufferPool } from './locked-buffers';
export type { LockedBufferPoolOptions } from './locked-buffers';
export { lockedBytes, getMemlockLimit, setMemlockLimit } from './memlock-limit';
export type { MemlockLimit } from './memlock-limit';
export { getOomScoreAdj, setOomScoreAdj } from './oom-score';
export type { PrepareDaemonOptions, PrepareDaemonReport, PrepareStepReport, PrepareStepName } from './prepare';
export type { ReexecResult } from './exec';
export type { ProcessIoFlusherOptions, ProcessIoFlusherReport, ThreadCoverage, ThreadVia, TimedOutSeen, UncoveredReason } from './process-wide';
export {
  PR_SET_IO_FLUSHER,
  PR_GET_IO_FLUSHER,
  PF_MEMALLOC,
  PF_MEMALLOC_NOFS,
  PF_MEMALLOC_NOIO,
  PF_LOCAL_THROTTLE,
  PF_MEMALLOC_PIN,
  IO_FLUSHER_FLAGS,
} from './kernel-constants';

/**
 * The `code` of the process warning emitted when the emulator stands in for the kernel ('IO_FLUSHER_EMULATED'):
 * `process.on('warning', (w) => w.code === EMULATED_WARNING_CODE && ...)`.
 */
export const EMULATED_WARNING_CODE = 'IO_FLUSHER_EMULATED';

function emitBackendWarning(instance: IoFlusher): void {
  if (instance.warning) process.emitWarning(instance.warning, { type: 'IoFlusherWarning', code: EMULATED_WARNING_CODE });
}

let defaultInstance: IoFlusher | undefined;

/**
 * The instance behind the plain functions (one per thread), created on first use with the backend IO_FLUSHER_BACKEND
 * names ('auto' when unset); emits the emulator's warning when it chose the emulator.
 */
export function defaultIoFlusher(): IoFlusher {
  if (!defaultInstance) {
    const fromEnv = backendFromEnvironment();
    defaultInstance = ioFlusherChosenBy({ backend: fromEnv ?? 'auto' }, fromEnv ? BACKEND_ENV : 'default (auto)');
    emitBackendWarning(defaultInstance);
  }
  return defaultInstance;
}

/**
 * The same calls bound to one backend: 'native' (never falls back: without a loadable addon it throws
 * ERR_IO_FLUSHER_NATIVE_UNAVAILABLE), 'emulated', or 'auto' (native when the kernel has the feature, else the
 * emulator with a process warning). For test suites: `createIoFlusher({ backend: 'emulated', emulator: {
 * capSysResource: false } })` models a container without the capability.
 */
export function createIoFlusher(options: IoFlusherOptions = {}): IoFlusher {
  const instance = new IoFlusher(options);
  emitBackendWarning(instance);
  return instance;
}

/**
 * Puts the calling thread in IO_FLUSHER state (`true`: PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE) or takes it out
 * (`false`), then reads the state back (PR_GET_IO_FLUSHER, or the thread's /proc flags if that is refused): no
 * silent no-op. Only the calling thread changes; threads and processes it creates afterwards inherit the state, and
 * execve keeps it. A Node process already has V8 and other threads before your code runs: they are not changed
 * (see {@link setProcessIoFlusher} and `io-flusher exec`).
 *
 * Arguments are validated before any system call, so an EINVAL from the kernel can only mean that the kernel, as
 * this process sees it, lacks the feature.
 *
 * @param enabled `true` to set, `false` to clear. Anything else is a TypeError (ERR_INVALID_ARG_TYPE): passing `0`
 *   would clear the flag, a bug that went unnoticed for years in the field.
 * @throws IoFlusherError EPERM (reason 'missing-capability', or 'refused-by-filter' when the capability is held),
 *   EINVAL ('kernel-lacks-support'), ERR_IO_FLUSHER_VERIFY ('verification-failed'); `hint` says what to do.
 */
export function setIoFlusher(enabled: boolean): void {
  defaultIoFlusher().setIoFlusher(enabled);
}

/**
 * Puts **every thread of this process** in the requested state, and reports per thread. prctl changes only the
 * calling thread, and a Node process has V8, libuv and Worker threads before your code runs, so this does what
 * glibc's setxid broadcast and libcap's libpsx do: it lists /proc/self/task, sends every other thread a real-time
 * signal whose handler makes the prctl in that thread and reads the state back with PR_GET_IO_FLUSHER (the kernel's
 * own answer for that thread), waits with a bound, and lists again until a listing finds no new thread. Threads
 * created afterwards by covered threads inherit the state.
 *
 * What the program can observe is what glibc's setxid broadcast does to it: each thread runs a short handler. A
 * signal the program handles, ignores or blocks in the calling thread is never used; the handler is installed only
 * for the call, with SA_RESTART, so read, write and most blocking calls restart, but poll, epoll_wait, select and
 * sleeps with a timeout return EINTR in a thread that takes the signal (man 7 signal); the previous action is put
 * back. A thread that blocks the signal (Node's own signal-watchdog thread does, and io_uring's threads) is reported
 * `blocks-signal` and keeps what it inherited: only `io-flusher exec` covers it. A thread that has not answered by `timeoutMs` (held by a debugger, stopped) is
 * reported `timed-out`, and the handler stays installed (`handlerRestored: false`), harmless, until a later call or a
 * timer finds every signal it sent accounted for. Calls made from several threads of the process take turns.
 *
 * Every argument is checked before any thread's state is touched. When some live thread stays uncovered the report
 * says `complete: false` and a process warning (IO_FLUSHER_PARTIAL) names those threads: partial success is never
 * silent.
 *
 * @param enabled `true` to set, `false` to clear.
 * @param options `signal` (default: the one the last call used, else the highest real-time signal whose action is
 *   SIG_DFL), `timeoutMs` per pass (default 1000), `maxPasses` (default 16).
 * @throws IoFlusherError when the calling thread itself is refused (EPERM, EINVAL; `err.report` holds every
 *   thread's own answer), ERR_IO_FLUSHER_SIGNAL_IN_USE when the signal asked for has an action of the program's,
 *   reason 'proc-unavailable' or 'foreign-proc' when /proc cannot list this process's threads (nothing changed).
 */
export function setProcessIoFlusher(enabled: boolean, options?: ProcessIoFlusherOptions): ProcessIoFlusherReport {
  return defaultIoFlusher().setProcessIoFlusher(enabled, options);
}

/**
 * For a Node daemon started without `io-flusher exec`: puts the main thread in IO_FLUSHER state and re-executes this
 * process (same executable, execArgv, argv, environment and stdio; O_NONBLOCK and raw terminal mode undone first),
 * so every thread of the new process has it from birth. In the re-executed process ({@link REEXEC_ENV} marks it; no
 * loop) it returns `{ reexecuted: true, unprotectedThreads }` at once and removes the marker, so the daemon's
 * children do not inherit it. A re-executed process whose main thread lacks the state throws ERR_IO_FLUSHER_VERIFY
 * rather than report success.
 *
 * Call it first thing, from the main thread: output still buffered in process.stdout/stderr when it execs is lost.
 * @param options `allowUnprotected`: when the state cannot be set, return `{ reexecuted: false, error }` instead of
 *   throwing.
 * @throws IoFlusherError when the state cannot be set (unless `allowUnprotected`), ERR_IO_FLUSHER_REEXEC_STDIN for a
 *   program read from stdin (it cannot be run again), or when exec fails ('command-not-found',
 *   'command-not-executable'); ERR_WORKER_UNSUPPORTED_OPERATION from a Worker.
 */
export function reexecWithIoFlusher(options: { allowUnprotected?: boolean } = {}): ReexecResult {
  return reexecWith(defaultIoFlusher(), options);
}

/**
 * The start-up sequence real storage daemons use (iscsid, multipathd), in one call and in this order:
 * `memlockLimit` (default: unchanged), `lockMemory` (default `true`: the code scope, every page mapped; or
 * lockMemory() options, or `false`), `oomScoreAdj` (default -1000), `ioFlusher` ('process' by default: every thread,
 * through {@link setProcessIoFlusher}; 'thread'; or `false`). `required` lists the steps whose failure throws
 * (default: every step asked for). Under the emulator the IO_FLUSHER step says `emulated: true` and
 * `ioFlusherInEffect` is false.
 *
 * ```ts
 * import { prepareDaemon } from 'io-flusher';
 *
 * const report = prepareDaemon({ oomScoreAdj: -1000, ioFlusher: 'process' });
 * console.log(JSON.stringify(report.steps.map(({ step, done }) => ({ step, done }))));
 * ```
 * @throws IoFlusherError ERR_IO_FLUSHER_PREPARE (reason 'prepare-failed') naming every failed required step, with
 *   `err.report`; TypeError/RangeError for a bad option, before any step.
 */
export function prepareDaemon(options?: PrepareDaemonOptions): PrepareDaemonReport {
  return prepareDaemonWith(defaultIoFlusher(), options);
}

/**
 * Whether the calling thread is in IO_FLUSHER state (both bits set), as PR_GET_IO_FLUSHER answers.
 * @throws IoFlusherError EPERM without CAP_SYS_RESOURCE (the kernel requires it even to read), EINVAL without the
 *   feature.
 */
export function getIoFlusher(): boolean {
  return defaultIoFlusher().getIoFlusher();
}

/**
 * The memalloc flags of one thread from /proc/PID/task/TID/stat (no capability needed). Default: the calling
 * thread; with only `pid`, that process's main thread (also `threadFlags(process.pid)` from a Worker). Under the
 * emulator, this process's IO_FLUSHER bits are the model's (`emulated: true`). Names are decoded as UTF-8.
 * @throws IoFlusherError ESRCH (no-such-thread) when the thread or process does not exist; a thread id passed as
 *   `pid` is answered ESRCH naming the process it belongs to (Linux answers /proc/TID too, but it is not a process).
 */
export function threadFlags(pid?: number, tid?: number): ThreadFlags {
  return defaultIoFlusher().threadFlags(pid, tid);
}

/**
 * The memalloc flags of every thread of a process (default: this one), in tid order. Threads that exit while the
 * list is read are left out.
 * @throws IoFlusherError ESRCH (no-such-thread) when the process does not exist.
 */
export function listThreads(pid?: number): ThreadFlags[] {
  return defaultIoFlusher().listThreads(pid);
}

/**
 * What the kernel offers, whether the capability is held, which backend is active and why. Never throws: when no
 * backend can be made (an invalid IO_FLUSHER_* variable, `native` required without the addon), `backend` is null and
 * `backendReason` says why.
 */
export function probe(): ProbeResult {
  let instance: IoFlusher;
  try {
    instance = defaultIoFlusher();
  } catch (err) {
    // An invalid IO_FLUSHER_* variable, or a required native addon that is missing: report, do not throw.
    const code = (err as { code?: unknown }).code;
    const message = (err as Error).message;
    return probeWith(undefined, typeof code === 'string' && !message.startsWith(code) ? `${code}: ${message}` : message);
  }
  return instance.probe();
}

/**
 * Effective, permitted, inheritable, bounding and ambient capability sets of a process (default: this one) by name
 * (`['CAP_CHOWN', ...]`), the raw masks as bigints, and `sysResource` (CAP_SYS_RESOURCE effective), from
 * /proc/PID/status.
 * @throws IoFlusherError ESRCH when the process does not exist (a thread id passed as `pid` included).
 */
export function capabilities(pid?: number): CapabilitySets {
  if (pid !== undefined) {
    assertId(pid, 'pid');
    assertProcessId(pid);
  }
  return capabilitiesFromStatus(readStatus(pid ?? 'self'));
}
