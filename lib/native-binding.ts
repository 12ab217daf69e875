/**
 * The raw native binding: a private interface that mirrors native/binding.cc exactly, and its loader.
 * Every function returns a number: a result, or -errno. Not part of the public API.
 */
import * as path from 'node:path';
import { IoFlusherError } from './errors';

/** @internal */
export interface NativeBinding {
  /** prctl(option, arg2, arg3, arg4, arg5), arguments passed through unchanged as unsigned long. */
  prctlRaw(option: number, arg2: number | bigint, arg3: number | bigint, arg4: number | bigint, arg5: number | bigint): number;
  /** prctl(PR_SET_IO_FLUSHER, value, 0, 0, 0) on the calling thread. */
  setIoFlusher(value: number): number;
  /** prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0) on the calling thread. */
  getIoFlusher(): number;
  /** gettid(2). */
  gettid(): number;
  /** capget(2): the calling thread's effective capability set (bit n: capability n), or -errno. */
  capEffective(): bigint | number;

  // Process-wide broadcast (native/thread_broadcast.h).
  /**
   * sigaction query: 0 SIG_DFL, 1 SIG_IGN, 2 another handler, 3 the broadcast's own handler, 4 blocked in the calling
   * thread, or -errno.
   */
  signalDisposition(signo: number): number;
  /**
   * Every thread of this process to IO_FLUSHER `value` (0 or 1) in one call: the calling thread directly, the others
   * by `signo`. An Int32Array [passes, handlerRestored, then tid, outcome (BROADCAST_OUTCOME), a, b per thread], or,
   * with nothing changed, -EINVAL, -EBUSY (signo has an action that is not SIG_DFL or the broadcast's own), -EXDEV
   * (/proc/self is not this process), -E2BIG (more threads than BROADCAST_SLOTS), or -errno.
   */
  broadcastRun(signo: number, value: number, timeoutMs: number, maxPasses: number): Int32Array | number;
  /**
   * Settles what earlier calls left outstanding and restores each signal's previous action once nothing sent on it is
   * outstanding: how many signals still have the handler installed, or -errno.
   */
  broadcastSettle(): number;
  /**
   * /proc/self/task/TID/stat of each of `tids` (1..STAT_BATCH), each text followed by a NUL (an empty text for a thread
   * that is gone, or whose text was too long to be read whole), as one latin1 string; or -errno.
   */
  readTaskStats(tids: Int32Array): string | number;
  sigrtmin(): number;
  sigrtmax(): number;

  // exec (native/process_exec.h).
  /**
   * execve(path, argv, envp), with no broadcast in progress and no broadcast signal pending for this thread (it would
   * kill the new program): returns only on failure, with -errno.
   */
  execve(path: string, argv: string[], envp: string[]): number;
  /** fcntl(fd, F_GETFL): flags or -errno. */
  getFdFlags(fd: number): number;
  /** fcntl(fd, F_SETFL, flags): 0 or -errno. */
  setFdFlags(fd: number, flags: number): number;
  /** FD_CLOEXEC of fd (fcntl F_GETFD): 1, 0 or -errno. */
  getFdCloexec(fd: number): number;
  /** Sets or clears FD_CLOEXEC (fcntl F_GETFD then F_SETFD): 0 or -errno. */
  setFdCloexec(fd: number, cloexec: number): number;

  // Memory (native/memory_lock.h).
  /** mlockall(flags): 0 or -errno. Not used by lib/: V8 aborts with its heap locked (see lib/code-lock.ts). */
  mlockall(flags: number): number;
  /** munlockall(): 0 or -errno. */
  munlockall(): number;
  /** getrlimit(resource) into out[0] (soft), out[1] (hard); RLIM_INFINITY as 2^64-1. 0 or -errno. */
  getrlimit(resource: number, out: BigUint64Array): number;
  /** setrlimit(resource, soft, hard); 2^64-1 for RLIM_INFINITY. 0 or -errno. */
  setrlimit(resource: number, soft: bigint, hard: bigint): number;

  // Scoped memory locking (native/memory_lock.h). These throw a TypeError on a wrong argument type.
  /** mlock(address, length) when flags is 0, else mlock2(address, length, flags): 0 or -errno. */
  mlock2(address: bigint, length: number, flags: number): number;
  /** munlock(address, length): 0 or -errno. */
  munlock(address: bigint, length: number): number;
  /** A Buffer over an anonymous mapping of its own (munmapped when collected), or -errno from mmap. */
  mapAnonymousBuffer(length: number): Buffer | number;
  /** mlock2 over the page-rounded memory of a page-aligned Buffer: 0 or -errno (-EINVAL if not page-aligned). */
  mlockBuffer(buffer: Buffer, flags: number): number;
  /** munlock over the page-rounded memory of a page-aligned Buffer: 0 or -errno (-EINVAL if not page-aligned). */
  munlockBuffer(buffer: Buffer): number;
  /** sysconf(_SC_PAGESIZE). */
  pageSize(): number;
}

/** @internal */
export type NativeLoadResult =
  | { loaded: true; binding: NativeBinding; path: string }
  | { loaded: false; error: string; tried: string[] };

/** The package root: dist/.. when compiled. */
export const PACKAGE_ROOT = path.resolve(__dirname, '..');

let cached: NativeLoadResult | undefined;

/**
 * Loads the addon once per thread (each Worker loads its own instance). Order: IO_FLUSHER_BINDING (an explicit path
 * to a .node file, e.g. a cmake-js build elsewhere), then node-gyp-build's search of build/Release, build/Debug and
 * prebuilds/PLATFORM-ARCH. Never throws: the caller decides whether a missing addon is fatal.
 * @internal
 */
export function loadNativeBinding(): NativeLoadResult {
  if (cached) return cached;
  const explicit = process.env.IO_FLUSHER_BINDING;
  const tried: string[] = [];
  try {
    let file: string;
    if (explicit) {
      file = path.resolve(explicit);
      tried.push(`IO_FLUSHER_BINDING=${file}`);
    } else {
      tried.push(
        path.join(PACKAGE_ROOT, 'build/Release/io_flusher.node'),
        path.join(PACKAGE_ROOT, 'build/Debug/io_flusher.node'),
        path.join(PACKAGE_ROOT, `prebuilds/${process.platform}-${process.arch}/*.node`),
      );
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
      file = nodeGypBuild.resolve(PACKAGE_ROOT);
    }
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const binding = require(file) as NativeBinding;
    cached = { loaded: true, binding, path: file };
  } catch (err) {
    // node-gyp-build recognises musl only on Alpine (/etc/alpine-release) or with LIBC=musl; elsewhere it picks the
    // glibc prebuild, which then fails to load. Try every prebuild for this platform before giving up.
    if (!explicit) {
      const dir = path.join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
      let candidates: string[] = [];
      try {
        candidates = require('node:fs').readdirSync(dir).filter((f: string) => f.endsWith('.node')).map((f: string) => path.join(dir, f));
      } catch {
        // no prebuilds for this platform
      }
      for (const candidate of candidates) {
        try {
          // eslint-disable-next-line @typescript-eslint/no-require-imports
          cached = { loaded: true, binding: require(candidate) as NativeBinding, path: candidate };
          return cached;
        } catch {
          // next
        }
      }
    }
    const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
    cached = {
      loaded: false,
      tried,
      error:
        `could not load the io-flusher native addon (${detail}); tried: ${tried.join(', ')}. ` +
        `Install a release that ships prebuilds for ${process.platform}-${process.arch}, or build it from a ` +
        'checkout with `npm run build:native` (needs python3, make and a C++ compiler)',
    };
  }
  return cached;
}

/** The addon, or IoFlusherError ERR_IO_FLUSHER_NATIVE_UNAVAILABLE saying what needed it and how to get it. @internal */
export function requireNativeBinding(neededFor: string): NativeBinding {
  const native = loadNativeBinding();
  if (!native.loaded) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_NATIVE_UNAVAILABLE',
      reason: 'native-unavailable',
      message: `ERR_IO_FLUSHER_NATIVE_UNAVAILABLE: ${neededFor} needs the native addon`,
      hint: native.error,
    });
  }
  return native.binding;
}
