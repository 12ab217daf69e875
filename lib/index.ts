/**
 * io-flusher: PR_SET_IO_FLUSHER for Node.js storage daemons.
 *
 * The plain functions use a default instance whose backend comes from IO_FLUSHER_BACKEND ('auto' when unset).
 * `auto` uses the kernel when it has the feature, and otherwise the emulator with a process warning
 * (code IO_FLUSHER_EMULATED): protection is then NOT in effect. See README.md.
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

/** The `code` of the process warning emitted when the emulator stands in for the kernel. */
export const EMULATED_WARNING_CODE = 'IO_FLUSHER_EMULATED';

function emitBackendWarning(instance: IoFlusher): void {
  if (instance.warning) process.emitWarning(instance.warning, { type: 'IoFlusherWarning', code: EMULATED_WARNING_CODE });
}

let defaultInstance: IoFlusher | undefined;

/** The instance behind the plain functions (one per thread), created on first use. */
export function defaultIoFlusher(): IoFlusher {
  if (!defaultInstance) {
    const fromEnv = backendFromEnvironment();
    defaultInstance = ioFlusherChosenBy({ backend: fromEnv ?? 'auto' }, fromEnv ? BACKEND_ENV : 'default (auto)');
    emitBackendWarning(defaultInstance);
  }
  return defaultInstance;
}

/**
 * The same calls bound to one backend: 'native' (never falls back; throws if the addon cannot load), 'emulated',
 * or 'auto' (native when the kernel has the feature, else the emulator with a warning).
 */
export function createIoFlusher(options: IoFlusherOptions = {}): IoFlusher {
  const instance = new IoFlusher(options);
  emitBackendWarning(instance);
  return instance;
}

/** Puts the calling thread in IO_FLUSHER state (true) or takes it out (false), then verifies it. */
export function setIoFlusher(enabled: boolean): void {
  defaultIoFlusher().setIoFlusher(enabled);
}

/**
 * Puts every thread of this process in IO_FLUSHER state (or out of it), and reports per thread. See README.
 */
export function setProcessIoFlusher(enabled: boolean, options?: ProcessIoFlusherOptions): ProcessIoFlusherReport {
  return defaultIoFlusher().setProcessIoFlusher(enabled, options);
}

/**
 * Re-executes this Node process (same executable, execArgv, argv, environment, stdio) after putting the main thread
 * in IO_FLUSHER state, so every thread of the new process has it from birth. In the re-executed process it returns
 * `{ reexecuted: true, unprotectedThreads }` at once. Call it first thing, from the main thread.
 * @throws IoFlusherError when the state cannot be set (unless `allowUnprotected`), or when exec fails (reason
 *   'command-not-found' or 'command-not-executable').
 */
export function reexecWithIoFlusher(options: { allowUnprotected?: boolean } = {}): ReexecResult {
  return reexecWith(defaultIoFlusher(), options);
}

/**
 * The start-up sequence of a storage daemon in one call: memlock limit, memory lock, OOM protection, IO_FLUSHER.
 * Returns a per-step report; throws IoFlusherError ERR_IO_FLUSHER_PREPARE (with `report`) naming every failed
 * required step.
 */
export function prepareDaemon(options?: PrepareDaemonOptions): PrepareDaemonReport {
  return prepareDaemonWith(defaultIoFlusher(), options);
}

/** Whether the calling thread is in IO_FLUSHER state. */
export function getIoFlusher(): boolean {
  return defaultIoFlusher().getIoFlusher();
}

/** The memalloc flags of a thread (default: the calling thread; with only `pid`, that process's main thread). */
export function threadFlags(pid?: number, tid?: number): ThreadFlags {
  return defaultIoFlusher().threadFlags(pid, tid);
}

/** The memalloc flags of every thread of a process (default: this one). */
export function listThreads(pid?: number): ThreadFlags[] {
  return defaultIoFlusher().listThreads(pid);
}

/** What the kernel offers, whether the capability is held, which backend is active and why. Never throws. */
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

/** Effective, permitted, inheritable, bounding and ambient capability sets of a process, by name. */
export function capabilities(pid?: number): CapabilitySets {
  if (pid !== undefined) {
    assertId(pid, 'pid');
    assertProcessId(pid);
  }
  return capabilitiesFromStatus(readStatus(pid ?? 'self'));
}
