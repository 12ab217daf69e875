/**
 * A pure-TypeScript model of the kernel's IO_FLUSHER behaviour, for test suites on kernels (or platforms) that
 * lack it. It protects nothing: everything it answers is marked emulated, and the default API warns when it is
 * chosen automatically. The conformance table in test/conformance-cases.ts runs against it and, inside a VM, against
 * real kernels; both must agree exactly.
 *
 * The model (kernel/sys.c, prctl handler, identical from 5.6 to 6.18):
 *   PR_SET_IO_FLUSHER: !capable(CAP_SYS_RESOURCE) -> EPERM; arg3|arg4|arg5 -> EINVAL; arg2 == 1 sets
 *     PF_MEMALLOC_NOIO|PF_LOCAL_THROTTLE, arg2 == 0 clears them, anything else -> EINVAL.
 *   PR_GET_IO_FLUSHER: !capable -> EPERM; arg2..arg5 -> EINVAL; 1 when BOTH bits are set, else 0.
 *   The capability is checked before the arguments. A kernel older than 5.6 answers EINVAL to both options.
 *
 * State is per thread, like current->flags: each JS thread (main thread, each Worker) has its own. A thread created
 * after a change inherits the creator's state (clone copies task flags), one created before does not:
 * - Workers: through worker_threads environment data, which Node copies into each new Worker at construction.
 * - Child processes: through the environment variable IO_FLUSHER_EMULATED_FLAGS, which children started with the
 *   default environment receive. A child given an explicit `env` does not inherit: the real kernel would.
 * A registry shared by the threads of the process (a SharedArrayBuffer, also passed through environment data) maps
 * thread ids to their modelled flags, so the flags reader shows every thread's emulated state consistently.
 */
import * as wt from 'node:worker_threads';
import { ownTaskIds, readSecurityStatus, readThreadStat, threadSelfId } from './procfs';
import { assertOptionalBoolean, invalidEnvironment } from './validate';
import {
  EINVAL,
  EPERM,
  IO_FLUSHER_FLAGS,
  PF_SUPERPRIV,
  PR_GET_IO_FLUSHER,
  PR_SET_IO_FLUSHER,
} from './kernel-constants';

/** Environment variable through which emulated task flags pass to child processes (hex). */
export const EMULATED_FLAGS_ENV = 'IO_FLUSHER_EMULATED_FLAGS';
/** Environment variable that sets the emulated capability ('1' held, '0' not) instead of the real one. */
export const EMULATED_CAPABILITY_ENV = 'IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE';
/** Environment variable that makes the emulator model a kernel older than 5.6 ('0'). */
export const EMULATED_SUPPORT_ENV = 'IO_FLUSHER_EMULATED_KERNEL_SUPPORT';

const ENV_DATA_FLAGS = 'io-flusher:emulated-flags';
const ENV_DATA_REGISTRY = 'io-flusher:emulated-registry';
const REGISTRY_SLOTS = 4096;

/**
 * How the emulator models the process (the `emulator` option of {@link createIoFlusher}). It models the kernel
 * exactly: the capability checked before the arguments, every EPERM and EINVAL case, GET true only when both bits
 * are set, state per thread, inherited by Workers and child processes created after a change. It protects nothing.
 */
export interface EmulatorOptions {
  /** Whether the modelled process holds CAP_SYS_RESOURCE. Default: IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE, else what
   * the process really holds (its effective set in /proc/self/status; off Linux, whether it runs as uid 0). */
  capSysResource?: boolean;
  /** false models a kernel older than 5.6 (EINVAL to both options). Default true, or IO_FLUSHER_EMULATED_KERNEL_SUPPORT. */
  kernelSupport?: boolean;
}

function envBoolean(name: string): boolean | undefined {
  const value = process.env[name];
  if (value === undefined || value === '') return undefined;
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  throw invalidEnvironment(name, value, "'1' or '0' (or 'true' / 'false')");
}

/** Whether this process really holds CAP_SYS_RESOURCE in its effective set. */
export function realCapSysResource(): boolean {
  // Not Linux (or no /proc): whether it runs as root.
  return readSecurityStatus().capSysResource ?? process.getuid?.() === 0;
}

/** The calling thread's id: the kernel tid on Linux, a stable stand-in elsewhere. */
function currentThreadId(): number {
  try {
    return threadSelfId();
  } catch {
    return wt.isMainThread ? process.pid : process.pid * 100000 + wt.threadId;
  }
}

/** A thread's flags word as the emulator shows it: the kernel's bits, with the IO_FLUSHER bits from the model. */
export function withModelledIoFlusher(kernelFlags: number, modelled: number): number {
  return ((kernelFlags & ~IO_FLUSHER_FLAGS) | (modelled & IO_FLUSHER_FLAGS)) >>> 0;
}

/** When a thread of this process started (stat field 22), or undefined when it is gone or unknown (no /proc). */
function threadStartTime(tid: number): number | undefined {
  try {
    return readThreadStat(process.pid, tid).startTime;
  } catch {
    return undefined;
  }
}

/**
 * Shared tid -> flags table. Slot i: [3i] = tid (0 = free), [3i+1] = modelled flags, [3i+2] = the thread's start
 * time (stat field 22, truncated to 32 bits). Tids are reused once a thread exits: an entry whose start time differs
 * from the live thread's belongs to a dead thread, and its state must not pass to the new one.
 */
class ThreadRegistry {
  constructor(private readonly slots: Int32Array) {}

  static forThisThread(): ThreadRegistry {
    let buffer = wt.getEnvironmentData(ENV_DATA_REGISTRY) as SharedArrayBuffer | undefined;
    if (!(buffer instanceof SharedArrayBuffer)) {
      buffer = new SharedArrayBuffer(REGISTRY_SLOTS * 3 * Int32Array.BYTES_PER_ELEMENT);
      wt.setEnvironmentData(ENV_DATA_REGISTRY, buffer);
    }
    return new ThreadRegistry(new Int32Array(buffer));
  }

  /** The flags of `tid`; with `startTime`, only if the entry was made for the thread that started then. */
  get(tid: number, startTime?: number): number | undefined {
    for (let i = 0; i < this.slots.length; i += 3) {
      if (Atomics.load(this.slots, i) !== tid) continue;
      if (startTime !== undefined && Atomics.load(this.slots, i + 2) !== (startTime | 0)) return undefined;
      return Atomics.load(this.slots, i + 1) >>> 0;
    }
    return undefined;
  }

  set(tid: number, flags: number, startTime: number): void {
    for (let i = 0; i < this.slots.length; i += 3) {
      const owner = Atomics.load(this.slots, i);
      if (owner === tid || (owner === 0 && Atomics.compareExchange(this.slots, i, 0, tid) === 0)) {
        Atomics.store(this.slots, i + 2, startTime | 0);
        Atomics.store(this.slots, i + 1, flags | 0);
        return;
      }
    }
    // Full: a process with more than REGISTRY_SLOTS emulated threads. The calling thread's own state still works.
  }

  delete(tid: number): void {
    for (let i = 0; i < this.slots.length; i += 3) {
      if (Atomics.load(this.slots, i) === tid) {
        Atomics.store(this.slots, i + 1, 0);
        Atomics.store(this.slots, i + 2, 0);
        Atomics.store(this.slots, i, 0);
      }
    }
  }
}

function inheritedFlags(): number {
  const fromCreator = wt.getEnvironmentData(ENV_DATA_FLAGS);
  let flags = 0;
  const fromParent = process.env[EMULATED_FLAGS_ENV];
  if (typeof fromCreator === 'number') flags = fromCreator;
  else if (fromParent && /^[0-9a-f]{1,8}$/i.test(fromParent)) flags = Number.parseInt(fromParent, 16);
  else if (fromParent) throw invalidEnvironment(EMULATED_FLAGS_ENV, fromParent, 'a task flags word in hex, as io-flusher sets it');
  // copy_process() clears PF_SUPERPRIV in the new task (kernel/fork.c); the IO_FLUSHER bits are copied.
  return (flags & ~PF_SUPERPRIV) >>> 0;
}

/** One modelled kernel as seen from the calling JS thread. */
export class EmulatedKernel {
  readonly capSysResource: boolean;
  readonly kernelSupport: boolean;
  private readonly registry = ThreadRegistry.forThisThread();
  private readonly tid = currentThreadId();
  /** This thread's start time: fixed for its life, so read once (the model's prctl stays a table lookup). */
  private readonly startTime = threadStartTime(this.tid) ?? 0;

  constructor(options: EmulatorOptions = {}) {
    assertOptionalBoolean(options.capSysResource, 'options.emulator.capSysResource');
    assertOptionalBoolean(options.kernelSupport, 'options.emulator.kernelSupport');
    this.capSysResource = options.capSysResource ?? envBoolean(EMULATED_CAPABILITY_ENV) ?? realCapSysResource();
    this.kernelSupport = options.kernelSupport ?? envBoolean(EMULATED_SUPPORT_ENV) ?? true;
    if (this.registry.get(this.tid, this.startTime) === undefined) {
      const inherited = inheritedFlags();
      if (wt.isMainThread && inherited) {
        // This process was started by a thread in emulated IO_FLUSHER state: every thread it has now was created
        // after that by its main thread, so, as with the real kernel, all of them inherited the state.
        for (const tid of ownTaskIds()) {
          const startTime = threadStartTime(tid);
          if (startTime !== undefined && this.registry.get(tid, startTime) === undefined) this.registry.set(tid, inherited, startTime);
        }
      }
      this.registry.set(this.tid, inherited, this.startTime);
      // A Worker's tid can be reused after it exits; drop its entry then.
      if (!wt.isMainThread) process.once('exit', () => this.registry.delete(this.tid));
    }
  }

  /** The modelled task flags (only the bits the model owns) of a thread of this process, if it is known. */
  flagsOf(tid: number, startTime: number | undefined = tid === this.tid ? this.startTime : threadStartTime(tid)): number | undefined {
    // With the thread's start time (stat field 22; read here unless the caller has it), a dead thread's entry whose
    // tid was reused is not taken for the live thread's.
    if (tid === this.tid) return this.registry.get(tid);
    return startTime === undefined ? undefined : this.registry.get(tid, startTime);
  }

  /** The calling thread's id, as the model keys it. */
  get threadId(): number {
    return this.tid;
  }

  /** The calling thread's modelled task flags. */
  get flags(): number {
    return this.registry.get(this.tid) ?? 0;
  }

  /** Sets the modelled flags of a thread of this process, as the process-wide set does for threads it reaches. */
  setFlagsOf(tid: number, flags: number): void {
    const startTime = tid === this.tid ? this.startTime : threadStartTime(tid);
    if (startTime === undefined) return; // gone: nothing to model
    this.registry.set(tid, flags >>> 0, startTime);
    if (tid === this.tid) this.publishForNewThreads(flags >>> 0);
  }

  private publishForNewThreads(flags: number): void {
    // What threads and processes created from now on by this thread inherit.
    wt.setEnvironmentData(ENV_DATA_FLAGS, flags);
    if (flags & IO_FLUSHER_FLAGS) process.env[EMULATED_FLAGS_ENV] = flags.toString(16);
    else delete process.env[EMULATED_FLAGS_ENV];
  }

  /**
   * What another thread of this process answers when it makes prctl(PR_SET_IO_FLUSHER, value) and then
   * prctl(PR_GET_IO_FLUSHER) itself (as the process-wide set has each thread do): [set result, get answer], or
   * undefined when the thread is gone. The same capability and kernel as the calling thread's.
   */
  setAndGetOn(tid: number, value: 0 | 1): [number, number] | undefined {
    if (tid === this.tid) {
      const set = this.prctl(PR_SET_IO_FLUSHER, BigInt(value), 0n, 0n, 0n);
      return [set, this.prctl(PR_GET_IO_FLUSHER, 0n, 0n, 0n, 0n)];
    }
    const startTime = threadStartTime(tid);
    if (startTime === undefined) return undefined;
    if (!this.kernelSupport) return [-EINVAL, -EINVAL];
    if (!this.capSysResource) return [-EPERM, -EPERM];
    const before = this.registry.get(tid, startTime) ?? 0;
    const flags = (value ? before | IO_FLUSHER_FLAGS : before & ~IO_FLUSHER_FLAGS) | PF_SUPERPRIV;
    this.registry.set(tid, flags >>> 0, startTime);
    return [0, (flags & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS ? 1 : 0];
  }

  /** capable(CAP_SYS_RESOURCE): a successful check marks the task PF_SUPERPRIV (kernel/capability.c). */
  private capable(): boolean {
    if (!this.capSysResource) return false;
    this.setFlagsOf(this.tid, this.flags | PF_SUPERPRIV);
    return true;
  }

  /** prctl(option, arg2..arg5) on the calling thread: the result, or -errno. */
  prctl(option: number, arg2: bigint, arg3: bigint, arg4: bigint, arg5: bigint): number {
    if (!this.kernelSupport) return -EINVAL; // kernel/sys.c: default: error = -EINVAL
    switch (option) {
      case PR_SET_IO_FLUSHER:
        if (!this.capable()) return -EPERM;
        if (arg3 || arg4 || arg5) return -EINVAL;
        if (arg2 === 1n) this.setFlagsOf(this.tid, this.flags | IO_FLUSHER_FLAGS);
        else if (arg2 === 0n) this.setFlagsOf(this.tid, this.flags & ~IO_FLUSHER_FLAGS);
        else return -EINVAL;
        return 0;
      case PR_GET_IO_FLUSHER:
        if (!this.capable()) return -EPERM;
        if (arg2 || arg3 || arg4 || arg5) return -EINVAL;
        return (this.flags & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS ? 1 : 0;
      default:
        // Only the IO_FLUSHER pair is modelled; the emulator never pretends to know other options.
        return -EINVAL;
    }
  }
}
