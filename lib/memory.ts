/**
 * The forward-progress kit: IO_FLUSHER keeps a daemon's allocations out of reclaim recursion, it does not make them
 * succeed. Real storage daemons (iscsid, multipathd, lvm2) also lock their memory, keep the OOM killer away and
 * raise the memlock limit. See: man 2 mlockall, man 2 setrlimit, man 5 proc (oom_score_adj).
 */
import * as fs from 'node:fs';
import * as util from 'node:util';
import { isMainThread } from 'node:worker_threads';
import { IoFlusherError, IoFlusherErrorReason } from './errors';
import {
  EACCES,
  ENOMEM,
  EPERM,
  MCL_CURRENT,
  MCL_FUTURE,
  MCL_ONFAULT,
  OOM_SCORE_ADJ_MAX,
  OOM_SCORE_ADJ_MIN,
  RLIMIT_MEMLOCK,
} from './kernel-constants';
import { NativeBinding, requireNativeBinding } from './native-binding';
import { readStatus } from './procfs';
import { assertObject } from './validate';

const RLIM_INFINITY = 2n ** 64n - 1n;

const binding = (): NativeBinding => requireNativeBinding('memory locking and limits');

/** A failed system call as an IoFlusherError, with the reason and hint the caller gives. */
function systemError(syscall: string, negErrno: number, what: string, reason: IoFlusherErrorReason, hint: string, extra: { path?: string } = {}): IoFlusherError {
  const code = util.getSystemErrorName(negErrno);
  const description = util.getSystemErrorMap().get(negErrno)?.[1] ?? `errno ${-negErrno}`;
  return new IoFlusherError({
    code,
    errno: negErrno,
    syscall,
    reason,
    message: `${code}: ${description}, ${syscall}${extra.path ? ` '${extra.path}'` : ''} (${what})`,
    hint,
    ...extra,
  });
}

function typeError(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_TYPE' });
}

/** Bytes locked in memory by this process: VmLck in /proc/self/status. */
export function lockedBytes(): number {
  const value = readStatus('self').get('VmLck') ?? '0 kB';
  return Number.parseInt(value, 10) * 1024;
}

export interface LockMemoryOptions {
  /** Lock the pages mapped now (MCL_CURRENT). Default true. */
  current?: boolean;
  /** Lock pages mapped later (MCL_FUTURE). Default false: with it, any Worker that exits crashes the process (see
   * lockMemory). */
  future?: boolean;
  /** Lock pages only once they are touched (MCL_ONFAULT). Default true: V8 reserves large virtual ranges, and
   * locking them all up front would commit memory the process never uses. */
  onFault?: boolean;
}

export interface MemoryLockReport {
  /** The mlockall flags used (0 after unlockMemory). */
  flags: number;
  /** VmLck after the call. */
  lockedBytes: number;
}

let unlockAtExit = false;

/**
 * mlockall(). Default MCL_CURRENT | MCL_ONFAULT. Main thread only.
 *
 * HAZARD, measured with Node 20.20.2: V8 gives heap pages back with mprotect(PROT_NONE) and madvise(), and on locked
 * pages that fails; V8 treats the failure as fatal (`Check failed: 0 == ret` in v8::base::OS::SetPermissions,
 * SIGTRAP, exit status 133). Seen:
 * - at process exit (Linux 6.18 and 6.1): lockMemory() therefore registers an 'exit' listener that unlocks first;
 * - when a Worker whose heap is locked exits (Linux 6.18): with MCL_FUTURE every Worker, without it those alive at
 *   the call; hence no MCL_FUTURE by default;
 * - during garbage collection, when V8's unmapper frees heap chunks that were locked (Linux 6.1, after allocating
 *   64 MiB): nothing short of not locking the V8 heap avoids this.
 * So a long-running Node process should not keep its memory locked: prepareDaemon() does not lock by default. Use
 * it for short critical sections (lock, do the work, unlockMemory()), or prefer preallocation.
 */
export function lockMemory(options: LockMemoryOptions = {}): MemoryLockReport {
  assertObject(options, 'options');
  if (!isMainThread) throw new Error('lockMemory() must be called from the main thread (it unlocks at process exit, before V8 tears down)');
  const pick = (name: keyof LockMemoryOptions): boolean => {
    const value = options[name] ?? name !== 'future';
    if (typeof value !== 'boolean') throw typeError(`The "options.${name}" property must be of type boolean. Received type ${typeof value}`);
    return value;
  };
  const current = pick('current');
  const future = pick('future');
  const onFault = pick('onFault');
  if (!current && !future) {
    throw Object.assign(new RangeError('lockMemory() needs options.current or options.future (mlockall locks nothing otherwise)'), { code: 'ERR_INVALID_ARG_VALUE' });
  }
  const flags = (current ? MCL_CURRENT : 0) | (future ? MCL_FUTURE : 0) | (onFault ? MCL_ONFAULT : 0);
  const rc = binding().mlockall(flags);
  if (rc < 0) {
    const limit = getMemlockLimit();
    const limitText = limit.soft === Infinity ? 'unlimited' : `${limit.soft} bytes`;
    if (rc === -ENOMEM || rc === -EPERM) {
      throw systemError(
        'mlockall',
        rc,
        `flags ${flags}`,
        'limit-exceeded',
        `the process lacks CAP_IPC_LOCK and RLIMIT_MEMLOCK (${limitText}) is too small: mlockall with MCL_CURRENT counts the whole ` +
          'virtual size, which V8 makes large. Grant CAP_IPC_LOCK (`docker run --cap-add IPC_LOCK`, systemd ' +
          '`AmbientCapabilities=CAP_IPC_LOCK`) or raise the limit (systemd `LimitMEMLOCK=infinity`, setMemlockLimit(Infinity, Infinity) with CAP_SYS_RESOURCE)',
      );
    }
    throw systemError('mlockall', rc, `flags ${flags}`, rc === -22 ? 'kernel-lacks-support' : 'unexpected-errno', rc === -22 ? 'MCL_ONFAULT needs Linux 4.4; pass onFault: false on older kernels' : 'mlockall failed');
  }
  if (!unlockAtExit) {
    unlockAtExit = true;
    process.once('exit', () => binding().munlockall());
  }
  return { flags, lockedBytes: lockedBytes() };
}

/** munlockall(): unlocks everything and cancels MCL_FUTURE. */
export function unlockMemory(): MemoryLockReport {
  const rc = binding().munlockall();
  if (rc < 0) throw systemError('munlockall', rc, 'unlock', 'unexpected-errno', 'munlockall failed');
  return { flags: 0, lockedBytes: lockedBytes() };
}

export interface MemlockLimit {
  /** Bytes; Infinity for RLIM_INFINITY. */
  soft: number;
  hard: number;
}

function toLimit(value: bigint): number {
  return value === RLIM_INFINITY ? Infinity : Number(value);
}

/** RLIMIT_MEMLOCK of this process. */
export function getMemlockLimit(): MemlockLimit {
  const out = new BigUint64Array(2);
  const rc = binding().getrlimit(RLIMIT_MEMLOCK, out);
  if (rc < 0) throw systemError('getrlimit', rc, 'RLIMIT_MEMLOCK', 'unexpected-errno', 'getrlimit failed');
  return { soft: toLimit(out[0]!), hard: toLimit(out[1]!) };
}

function limitArg(value: unknown, name: string): bigint {
  if (value === Infinity) return RLIM_INFINITY;
  if (typeof value !== 'number') throw typeError(`The "${name}" argument must be of type number. Received type ${typeof value}`);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw Object.assign(new RangeError(`The value of "${name}" is out of range. It must be a non-negative integer or Infinity. Received ${value}`), { code: 'ERR_OUT_OF_RANGE' });
  }
  return BigInt(value);
}

/** setrlimit(RLIMIT_MEMLOCK). Raising the hard limit needs CAP_SYS_RESOURCE. Reads the limit back. */
export function setMemlockLimit(soft: number, hard: number = soft): MemlockLimit {
  const s = limitArg(soft, 'soft');
  const h = limitArg(hard, 'hard');
  if (s > h) throw Object.assign(new RangeError(`The soft limit (${soft}) must not exceed the hard limit (${hard})`), { code: 'ERR_OUT_OF_RANGE' });
  const rc = binding().setrlimit(RLIMIT_MEMLOCK, s, h);
  if (rc < 0) {
    throw systemError(
      'setrlimit',
      rc,
      `RLIMIT_MEMLOCK ${soft}/${hard}`,
      rc === -EPERM ? 'missing-capability' : 'unexpected-errno',
      rc === -EPERM
        ? `raising the hard limit (now ${getMemlockLimit().hard}) needs CAP_SYS_RESOURCE; or set it before start: systemd \`LimitMEMLOCK=\`, \`docker run --ulimit memlock=-1\`, \`prlimit --memlock\``
        : 'setrlimit failed',
    );
  }
  const after = getMemlockLimit();
  if (after.soft !== toLimit(s) || after.hard !== toLimit(h)) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_VERIFY',
      syscall: 'setrlimit',
      reason: 'verification-failed',
      message: `ERR_IO_FLUSHER_VERIFY: RLIMIT_MEMLOCK reads back as ${after.soft}/${after.hard}, not ${soft}/${hard}`,
      hint: 'something changed the limit concurrently, or the kernel adjusted it',
    });
  }
  return after;
}

const OOM_PATH = '/proc/self/oom_score_adj';

/** /proc/self/oom_score_adj: -1000 (never OOM-killed) to 1000. */
export function getOomScoreAdj(): number {
  return Number(fs.readFileSync(OOM_PATH, 'latin1').trim());
}

/** Writes /proc/self/oom_score_adj and reads it back. Going below the lowest value set before needs CAP_SYS_RESOURCE. */
export function setOomScoreAdj(value: number): number {
  if (typeof value !== 'number') throw typeError(`The "value" argument must be of type number. Received type ${typeof value}`);
  if (!Number.isInteger(value) || value < OOM_SCORE_ADJ_MIN || value > OOM_SCORE_ADJ_MAX) {
    throw Object.assign(new RangeError(`The value of "value" is out of range. It must be an integer from -1000 to 1000. Received ${value}`), { code: 'ERR_OUT_OF_RANGE' });
  }
  try {
    fs.writeFileSync(OOM_PATH, String(value));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const negErrno = typeof e.errno === 'number' ? e.errno : -EACCES;
    throw systemError(
      'write',
      negErrno,
      `oom_score_adj ${value}`,
      negErrno === -EACCES ? 'missing-capability' : 'unexpected-errno',
      negErrno === -EACCES
        ? `lowering oom_score_adj below the lowest value this process had (now ${getOomScoreAdj()}) needs CAP_SYS_RESOURCE; or set it before start: systemd \`OOMScoreAdjust=${value}\`, \`docker run --oom-score-adj ${value}\`, \`choom -n ${value} -- COMMAND\``
        : 'writing oom_score_adj failed',
      { path: OOM_PATH },
    );
  }
  const after = getOomScoreAdj();
  if (after !== value) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_VERIFY',
      syscall: 'write',
      path: OOM_PATH,
      reason: 'verification-failed',
      message: `ERR_IO_FLUSHER_VERIFY: oom_score_adj reads back as ${after}, not ${value}`,
      hint: 'something else wrote it concurrently',
    });
  }
  return after;
}

/** What `io-flusher check` shows of a process's forward-progress settings, read from /proc (any process). */
export interface MemoryState {
  /** VmLck: bytes in locked mappings (with MCL_ONFAULT this counts mapped, not only resident, pages). */
  lockedBytes: number;
  memlockLimit: MemlockLimit;
  oomScoreAdj: number;
}

export function memoryState(pid: number | 'self' = 'self'): MemoryState {
  const status = readStatus(pid);
  const limits = fs.readFileSync(`/proc/${pid}/limits`, 'latin1');
  const row = /^Max locked memory\s+(\S+)\s+(\S+)/m.exec(limits);
  const parse = (v: string | undefined): number => (v === undefined || v === 'unlimited' ? Infinity : Number(v));
  return {
    lockedBytes: Number.parseInt(status.get('VmLck') ?? '0', 10) * 1024,
    memlockLimit: { soft: parse(row?.[1]), hard: parse(row?.[2]) },
    oomScoreAdj: Number(fs.readFileSync(`/proc/${pid}/oom_score_adj`, 'latin1').trim()),
  };
}
