/**
 * Backends: where a prctl goes. `native` is the kernel through the addon; `emulated` is lib/emulator.ts.
 * Both expose the same syscall-shaped calls (result or -errno), so the public API and the conformance table
 * treat them alike. The one door to the addon for the rest of lib/: the memory kit, exec and the CLI get their
 * system calls here (systemCalls()). Not part of the public API (the conformance tests use `raw`).
 */
import * as os from 'node:os';
import { EmulatedKernel, EmulatorOptions, withModelledIoFlusher } from './emulator';
import { FailureContext } from './errors';
import { interpretGetAnswer } from './get-answer';
import { CAP_SYS_RESOURCE, PR_GET_IO_FLUSHER, PR_GET_SECCOMP, PR_SET_IO_FLUSHER } from './kernel-constants';
import { loadNativeBinding, NativeBinding, requireNativeBinding } from './native-binding';
import { hasCapability, inUserNamespace, readOwnThreadStats, readSecurityStatus, StatFields } from './procfs';
import { emulatedThreadBroadcast, nativeThreadBroadcast, ThreadBroadcast } from './thread-broadcast';
import { invalidEnvironment } from './validate';

export type BackendName = 'native' | 'emulated';
export type BackendChoice = BackendName | 'auto';
export const BACKEND_ENV = 'IO_FLUSHER_BACKEND';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'native', 'emulated'];

/**
 * The addon's calls that are real system calls whichever backend models IO_FLUSHER: memory locks and limits
 * (lib/code-lock.ts, lib/locked-buffers.ts, lib/memlock-limit.ts), descriptors and execve (lib/exec.ts). The
 * binding's own members, so the addon itself is one.
 * @internal
 */
export type SystemCalls = Pick<
  NativeBinding,
  | 'mlock2'
  | 'munlock'
  | 'mapAnonymousBuffer'
  | 'mlockBuffer'
  | 'munlockBuffer'
  | 'pageSize'
  | 'getrlimit'
  | 'setrlimit'
  | 'execve'
  | 'getFdFlags'
  | 'setFdFlags'
  | 'getFdCloexec'
  | 'setFdCloexec'
>;

/**
 * The system calls for callers without a backend instance (lockMemory(), getMemlockLimit(), execve, the CLI): the
 * addon, or IoFlusherError ERR_IO_FLUSHER_NATIVE_UNAVAILABLE saying `purpose` needs it. They are not a member of
 * KernelBackend: the emulator models IO_FLUSHER only, and memory locks, limits and exec are the real kernel's
 * whichever backend models it.
 * @internal
 */
export function systemCalls(purpose: string): SystemCalls {
  return requireNativeBinding(purpose);
}

/** @internal */
export interface KernelBackend {
  readonly name: BackendName;
  /** prctl(PR_SET_IO_FLUSHER, value, 0, 0, 0): 0 or -errno. */
  set(value: 0 | 1): number;
  /** prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0): 0, 1 or -errno. */
  get(): number;
  /** prctl with every argument as given: result or -errno. */
  raw(option: number, arg2: bigint, arg3: bigint, arg4: bigint, arg5: bigint): number;
  /** The calling thread's kernel tid. */
  threadId(): number;
  /** Context for explaining a failure; gathered only after one. */
  failureContext(): FailureContext;
  /** How setProcessIoFlusher() reaches the other threads. */
  readonly broadcast: ThreadBroadcast;
  /**
   * The kernel's stat fields of threads of this process (undefined: gone), read for listThreads(), which lays the
   * backend's view of the IO_FLUSHER bits over them (flagsAsSeen). Native: one addon call per 8192 threads.
   */
  ownThreadStats(tids: number[]): Array<StatFields | undefined>;
  /**
   * A thread's flags word (stat field 9) as this backend sees it, and whether that is the model's: the kernel's own,
   * or, for a thread of this process under the emulator, the model's IO_FLUSHER bits over the kernel's.
   */
  flagsAsSeen(pid: number, tid: number, kernelFlags: number, startTime: number): { flags: number; emulated: boolean };
  /** The emulator behind an emulated backend. */
  readonly emulator?: EmulatedKernel;
}

const kernelRelease = os.release();

/**
 * Read fresh each time (capabilities and filters can change), in two system calls: capget, and PR_GET_SECCOMP (0 none,
 * 2 a filter; a filter that refuses prctl itself answers -errno: unknown). /proc/self/status would tell the same at
 * some 60 us a read here, which a refused setProcessIoFlusher() of a few threads would spend mostly on its error.
 */
function realFailureContext(binding: NativeBinding): FailureContext {
  const caps = binding.capEffective();
  const seccomp = binding.prctlRaw(PR_GET_SECCOMP, 0, 0, 0, 0);
  return {
    emulated: false,
    capSysResource: typeof caps === 'bigint' ? hasCapability(caps, CAP_SYS_RESOURCE) : readSecurityStatus().capSysResource,
    inUserNamespace: inUserNamespace(),
    kernelRelease,
    seccompMode: seccomp >= 0 ? seccomp : undefined,
  };
}

/** @internal */
export function nativeBackend(binding: NativeBinding): KernelBackend {
  return {
    name: 'native',
    set: (value) => binding.setIoFlusher(value),
    get: () => binding.getIoFlusher(),
    raw: (option, a2, a3, a4, a5) => binding.prctlRaw(option, a2, a3, a4, a5),
    threadId: () => binding.gettid(),
    failureContext: () => realFailureContext(binding),
    broadcast: nativeThreadBroadcast(binding),
    ownThreadStats: (tids) => readOwnThreadStats((ids) => binding.readTaskStats(ids), tids),
    flagsAsSeen: (_pid, _tid, flags) => ({ flags, emulated: false }),
  };
}

/** @internal */
export function emulatedBackend(options: EmulatorOptions = {}): KernelBackend {
  const emulator = new EmulatedKernel(options);
  return {
    name: 'emulated',
    emulator,
    set: (value) => emulator.prctl(PR_SET_IO_FLUSHER, BigInt(value), 0n, 0n, 0n),
    get: () => emulator.prctl(PR_GET_IO_FLUSHER, 0n, 0n, 0n, 0n),
    raw: (option, a2, a3, a4, a5) => emulator.prctl(option, a2, a3, a4, a5),
    threadId: () => emulator.threadId,
    broadcast: emulatedThreadBroadcast(emulator),
    ownThreadStats: (tids) => readOwnThreadStats(undefined, tids),
    flagsAsSeen: (pid, tid, flags, startTime) =>
      pid === process.pid ? { flags: withModelledIoFlusher(flags, emulator.flagsOf(tid, startTime) ?? 0), emulated: true } : { flags, emulated: false },
    failureContext: () => ({
      emulated: true,
      capSysResource: emulator.capSysResource,
      inUserNamespace: false,
      kernelRelease: os.release(),
      kernelHasFeature: emulator.kernelSupport,
      seccompMode: undefined,
    }),
  };
}

/** @internal The real kernel behind the addon, or why the addon did not load. */
export type RealKernel = { loaded: true; path: string; backend: KernelBackend } | { loaded: false; error: string };

/** The native backend whichever backend an instance uses (probe() asks the real kernel), or why there is none. @internal */
export function realKernel(): RealKernel {
  const native = loadNativeBinding();
  return native.loaded ? { loaded: true, path: native.path, backend: nativeBackend(native.binding) } : { loaded: false, error: native.error };
}

/** A chosen backend, with why it was chosen; `warning` is set when the choice means protection is NOT in effect. @internal */
export interface BackendSelection {
  backend: KernelBackend;
  reason: string;
  warning?: string;
}

/** Reads IO_FLUSHER_BACKEND; undefined when unset. */
export function backendFromEnvironment(): BackendChoice | undefined {
  const value = process.env[BACKEND_ENV];
  if (value === undefined || value === '') return undefined;
  if (!(BACKEND_CHOICES as readonly string[]).includes(value)) {
    throw invalidEnvironment(BACKEND_ENV, value, `one of ${BACKEND_CHOICES.join(', ')}`);
  }
  return value as BackendChoice;
}

/**
 * Chooses a backend. `native` never falls back: a missing addon throws. `auto` takes native when the addon loads
 * and the kernel has the feature (PR_GET_IO_FLUSHER answers anything but EINVAL: EPERM is a real answer from a
 * kernel that has it); otherwise the emulator, with a warning.
 * @internal
 */
export function selectBackend(choice: BackendChoice, source: string, emulatorOptions?: EmulatorOptions): BackendSelection {
  if (choice === 'emulated') {
    return {
      backend: emulatedBackend(emulatorOptions),
      reason: `emulator chosen by ${source}`,
      warning:
        source === BACKEND_ENV
          ? `io-flusher: IO_FLUSHER protection is NOT in effect: ${BACKEND_ENV}=emulated selects the emulator, which protects nothing`
          : undefined,
    };
  }
  const native = loadNativeBinding();
  if (choice === 'native') {
    const binding = requireNativeBinding(`the native backend (chosen by ${source})`);
    return { backend: nativeBackend(binding), reason: `native backend chosen by ${source}` };
  }
  let why: string;
  if (process.platform !== 'linux') {
    why = `platform ${process.platform} has no PR_SET_IO_FLUSHER (Linux >= 5.6 only)`;
  } else if (!native.loaded) {
    why = native.error;
  } else {
    const rc = native.binding.getIoFlusher();
    // Only EINVAL says the feature is missing: EPERM (and any other errno) comes from a kernel that has it.
    if (interpretGetAnswer(rc).feature !== 'absent') {
      return {
        backend: nativeBackend(native.binding),
        reason: `kernel ${os.release()} has IO_FLUSHER (PR_GET_IO_FLUSHER answered ${rc < 0 ? `errno ${-rc}` : rc})`,
      };
    }
    why = `kernel ${os.release()} answered EINVAL to PR_GET_IO_FLUSHER: it lacks IO_FLUSHER (Linux >= 5.6), or a seccomp filter hides it`;
  }
  return {
    backend: emulatedBackend(emulatorOptions),
    reason: `emulator, because ${why}`,
    warning: `io-flusher: IO_FLUSHER protection is NOT in effect, using the emulator: ${why}`,
  };
}
