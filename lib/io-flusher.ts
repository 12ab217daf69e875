/**
 * The public API, bound to one backend. `index.ts` exposes a default instance (backend from IO_FLUSHER_BACKEND,
 * else auto) through plain functions.
 */
import * as os from 'node:os';
import { BACKEND_CHOICES, BackendChoice, BackendName, KernelBackend, realKernel, selectBackend } from './backend';
import type { EmulatorOptions } from './emulator';
import { IoFlusherError, prctlFailure } from './errors';
import { interpretGetAnswer } from './get-answer';
import { PR_GET_IO_FLUSHER, PR_SET_IO_FLUSHER } from './kernel-constants';
import {
  capabilitiesFromStatus,
  describeFlags,
  inUserNamespace,
  assertProcessId,
  readProcessThreads,
  readTaskIds,
  readStatus,
  readThreadStat,
  seccompModeFromStatus,
  StatFields,
  ThreadFlags,
} from './procfs';
import { assertBoolean, assertId, assertObject, assertOneOf } from './validate';
import { ProcessIoFlusherOptions, ProcessIoFlusherReport, setProcessIoFlusherWith } from './process-wide';

/** Options of {@link createIoFlusher} (and `new IoFlusher()`): which backend, and how the emulator models the process. */
export interface IoFlusherOptions {
  /** 'auto' (default), 'native' (never falls back) or 'emulated'. */
  backend?: BackendChoice;
  /** How the emulator models the process, when it is used. */
  emulator?: EmulatorOptions;
}

/** What `probe()` found. Never thrown from: unknown facts are null. */
export interface ProbeResult {
  /** `process.platform`: 'linux' where IO_FLUSHER can exist at all. */
  platform: string;
  /** `os.release()`, e.g. '6.1.0-50-amd64'. */
  kernelRelease: string;
  /** Whether the kernel offers PR_SET_IO_FLUSHER to this process, from PR_GET_IO_FLUSHER through the addon. */
  feature: 'present' | 'absent' | 'unknown';
  /** How `feature` was decided. */
  featureDetail: string;
  /** CAP_SYS_RESOURCE in the effective set of this process (/proc/self/status). */
  capSysResource: boolean | null;
  /** True when the kernel accepted PR_GET_IO_FLUSHER here: the capability check passes, so set and clear will too. */
  canSet: boolean;
  /** Running in a user namespace other than the initial one (rootless containers): EPERM always. */
  inUserNamespace: boolean | null;
  /** Seccomp mode of this process: 0 none, 1 strict, 2 filter. */
  seccompMode: number | null;
  /** The native addon: whether it loaded, from where, and if not, the loader's error (every place it tried). */
  native: {
    /** The addon loaded, so the kernel could be asked. */
    loaded: boolean;
    /** The `.node` file loaded, or null. */
    path: string | null;
    /** Why it did not load, or null. */
    error: string | null;
  };
  /** The backend this instance uses; null when none could be made (an invalid IO_FLUSHER_* variable, say). */
  backend: BackendName | null;
  /** Why that backend (or why none), e.g. 'kernel 6.1.0-50-amd64 has IO_FLUSHER (PR_GET_IO_FLUSHER answered 0)'. */
  backendReason: string;
  /** The calling thread's IO_FLUSHER state as the backend answers it; null when refused. */
  ioFlusher: boolean | null;
  /** True only when the kernel itself (native backend) says the calling thread is in IO_FLUSHER state. */
  protectionInEffect: boolean;
}

/**
 * @internal
 * What chose the backend, as `backendReason` names it: an environment variable, a CLI flag. Set through
 * ioFlusherChosenBy(); an instance made with `new IoFlusher()` or createIoFlusher() was chosen by 'option'.
 */
const CHOSEN_BY = Symbol('io-flusher.chosenBy');

/** @internal An instance whose `backendReason` says `source` chose its backend (IO_FLUSHER_BACKEND, --backend). */
export function ioFlusherChosenBy(options: IoFlusherOptions, source: string): IoFlusher {
  return new IoFlusher({ ...options, [CHOSEN_BY]: source } as IoFlusherOptions);
}

/**
 * The calls of the package bound to one backend: `native` (the kernel, through the addon) or `emulated` (the model
 * of lib/emulator.ts, which protects nothing). Made by {@link createIoFlusher}; the plain functions
 * ({@link setIoFlusher}, ...) use a default instance, one per thread, chosen by `IO_FLUSHER_BACKEND`.
 */
export class IoFlusher {
  /** 'native' or 'emulated'. */
  readonly backend: BackendName;
  /** Why this backend was chosen. */
  readonly backendReason: string;
  /** Set when the backend choice means protection is NOT in effect (the emulator was chosen). */
  readonly warning: string | undefined;
  /** @internal */
  readonly kernel: KernelBackend;

  constructor(options: IoFlusherOptions = {}) {
    assertObject(options, 'options');
    const source = (options as { [CHOSEN_BY]?: string })[CHOSEN_BY] ?? 'option';
    const choice = options.backend ?? 'auto';
    assertOneOf(choice, 'options.backend', BACKEND_CHOICES);
    if (options.emulator !== undefined) assertObject(options.emulator, 'options.emulator');
    const selection = selectBackend(choice, source, options.emulator);
    this.kernel = selection.backend;
    this.backend = selection.backend.name;
    this.backendReason = selection.reason;
    this.warning = selection.warning;
  }

  /** True when calls go to the emulator: nothing is protected. */
  get emulated(): boolean {
    return this.backend === 'emulated';
  }

  private fail(option: number, rc: number): IoFlusherError {
    return prctlFailure(option, rc, this.kernel.failureContext());
  }

  /** The plain {@link !setIoFlusher | setIoFlusher()}, on this instance's backend. */
  setIoFlusher(enabled: boolean): void {
    assertBoolean(enabled, 'enabled');
    const rc = this.kernel.set(enabled ? 1 : 0);
    if (rc < 0) throw this.fail(PR_SET_IO_FLUSHER, rc);
    // No silent no-ops: read the state back. GET needs the same capability as SET, so a refused GET after a
    // successful SET means a filter treats them differently; then the thread's /proc flags decide.
    const got = this.kernel.get();
    const actual = interpretGetAnswer(got).ioFlusher ?? this.threadFlags().ioFlusher;
    if (actual !== enabled) {
      throw new IoFlusherError({
        code: 'ERR_IO_FLUSHER_VERIFY',
        syscall: 'prctl',
        option: 'PR_SET_IO_FLUSHER',
        reason: 'verification-failed',
        emulated: this.emulated,
        message: `ERR_IO_FLUSHER_VERIFY: prctl PR_SET_IO_FLUSHER ${enabled ? 1 : 0} succeeded but the thread is ${
          actual ? 'still' : 'not'
        } in IO_FLUSHER state (read back through ${got >= 0 ? 'PR_GET_IO_FLUSHER' : '/proc/thread-self/stat'})`,
        hint: 'the kernel and io-flusher disagree; something (a seccomp filter faking success, an LSM, a patched kernel) is interfering. Do not rely on the protection; report it with `io-flusher check --json`',
      });
    }
  }

  /** The plain {@link !setProcessIoFlusher | setProcessIoFlusher()}, on this instance's backend. */
  setProcessIoFlusher(enabled: boolean, options: ProcessIoFlusherOptions = {}): ProcessIoFlusherReport {
    assertBoolean(enabled, 'enabled'); // once, here: setProcessIoFlusherWith trusts it
    assertObject(options, 'options');
    return setProcessIoFlusherWith(this.kernel, enabled, options);
  }

  /** The plain {@link !getIoFlusher | getIoFlusher()}, on this instance's backend. */
  getIoFlusher(): boolean {
    const rc = this.kernel.get();
    const state = interpretGetAnswer(rc).ioFlusher;
    if (state === null) throw this.fail(PR_GET_IO_FLUSHER, rc);
    return state;
  }

  /** The plain {@link !threadFlags | threadFlags()}, on this instance's backend. */
  threadFlags(pid?: number, tid?: number): ThreadFlags {
    if (pid !== undefined) assertId(pid, 'pid');
    if (tid !== undefined) assertId(tid, 'tid');
    const thePid = pid ?? process.pid;
    if (pid !== undefined) assertProcessId(pid);
    // No pid: the calling thread. A pid alone (this process's too, even from a Worker): that process's main thread.
    const theTid = tid ?? (pid === undefined ? this.kernel.threadId() : thePid);
    const stat = readThreadStat(thePid, theTid);
    return this.describe(thePid, stat.tid, stat.name, stat.flags, stat.startTime);
  }

  /** The plain {@link !listThreads | listThreads()}, on this instance's backend. */
  listThreads(pid?: number): ThreadFlags[] {
    if (pid !== undefined) assertId(pid, 'pid');
    const thePid = pid ?? process.pid;
    // This process's threads through the backend (native: one addon call per 8192 threads; emulated: file by file).
    const stats =
      thePid === process.pid
        ? this.kernel.ownThreadStats(readTaskIds(thePid)).filter((stat): stat is StatFields => stat !== undefined)
        : readProcessThreads(thePid);
    return stats.map((stat) => this.describe(thePid, stat.tid, stat.name, stat.flags, stat.startTime));
  }

  private describe(pid: number, tid: number, name: string, kernelFlags: number, startTime: number): ThreadFlags {
    // Under the emulator the kernel has not set the IO_FLUSHER bits of this process's threads: the model's are shown,
    // marked as emulated.
    const seen = this.kernel.flagsAsSeen(pid, tid, kernelFlags, startTime);
    return describeFlags(pid, tid, name, seen.flags, seen.emulated);
  }

  /**
   * What the kernel offers this process and what this instance uses. Never throws. `feature` is decided by asking
   * the kernel through the addon whichever backend this instance uses; `protectionInEffect` is true only when the
   * kernel itself says the calling thread is protected.
   */
  probe(): ProbeResult {
    return probeWith(this.kernel, this.backendReason);
  }
}

/**
 * @internal
 * probe() for a backend, or for none (no backend could be made: an invalid IO_FLUSHER_* variable, a native backend
 * required without the addon); then `backend` is null and `backendReason` says why. Never throws.
 */
export function probeWith(kernel: KernelBackend | undefined, backendReason: string): ProbeResult {
  const result: ProbeResult = {
    platform: process.platform,
    kernelRelease: os.release(),
    feature: 'unknown',
    featureDetail: '',
    capSysResource: null,
    canSet: false,
    inUserNamespace: null,
    seccompMode: null,
    native: { loaded: false, path: null, error: null },
    backend: kernel?.name ?? null,
    backendReason,
    ioFlusher: null,
    protectionInEffect: false,
  };
  try {
    result.inUserNamespace = inUserNamespace() ?? null;
  } catch {
    // unknown
  }
  try {
    const status = readStatus('self');
    result.capSysResource = capabilitiesFromStatus(status).sysResource;
    result.seccompMode = seccompModeFromStatus(status) ?? null;
  } catch {
    // No /proc (not Linux): leave null.
  }
  // The feature is the real kernel's to say, whichever backend this instance uses.
  const real = realKernel();
  if (real.loaded) {
    result.native = { loaded: true, path: real.path, error: null };
    const answer = interpretGetAnswer(real.backend.get());
    result.feature = answer.feature;
    result.canSet = answer.canSet;
    result.featureDetail = answer.detail;
  } else {
    result.native.error = real.error;
    result.featureDetail = 'native addon not loaded, so the kernel was not asked';
  }
  result.ioFlusher = kernel ? interpretGetAnswer(kernel.get()).ioFlusher : null;
  result.protectionInEffect = kernel?.name === 'native' && result.ioFlusher === true;
  return result;
}
