/**
 * RLIMIT_MEMLOCK: reading and setting it, and checking a lock against it before anything is locked (with the error
 * that names it when the kernel refuses a lock). Shared by the code scope (code-lock.ts) and locked Buffers
 * (locked-buffers.ts). See: man 2 setrlimit, man 2 mlock.
 */
import { systemCalls, SystemCalls } from './backend';
import { IoFlusherError, systemError } from './errors';
import { CAP_IPC_LOCK, EINVAL, ENOMEM, EPERM, RLIM_INFINITY, RLIMIT_MEMLOCK } from './kernel-constants';
import { capabilitiesFromStatus, hasCapability, inUserNamespace, lockedBytesFromStatus, readStatus } from './procfs';
import { assertLimit, assertLimitPair } from './validate';

/** @internal The addon's calls for memory locking and limits (its absence is reported as needed for them). */
export const memoryCalls = (): SystemCalls => systemCalls('memory locking and limits');

/** Bytes locked in memory by this process: VmLck in /proc/self/status. */
export function lockedBytes(): number {
  return lockedBytesFromStatus(readStatus('self'));
}

function holdsCapIpcLock(): boolean {
  // capable() checks the initial user namespace: in any other one, RLIMIT_MEMLOCK applies to root too.
  return hasCapability(capabilitiesFromStatus(readStatus('self')).masks.effective, CAP_IPC_LOCK) && inUserNamespace() === false;
}

const MIB = 1024 * 1024;
const mib = (bytes: number): string => `${(bytes / MIB).toFixed(1)} MiB`;

const RAISE_LIMIT_HINT =
  'raise RLIMIT_MEMLOCK before the daemon starts: systemd `LimitMEMLOCK=infinity` (or a size), ' +
  '`docker run --ulimit memlock=-1:-1`, `prlimit --memlock=unlimited --pid PID`, or setMemlockLimit(Infinity) with ' +
  'CAP_SYS_RESOURCE; or grant CAP_IPC_LOCK, which lifts the limit (systemd `AmbientCapabilities=CAP_IPC_LOCK`, ' +
  '`docker run --cap-add IPC_LOCK`)';

/**
 * Throws the limit error when locking `bytes` more would exceed RLIMIT_MEMLOCK, before anything is locked. The kernel
 * checks the same sum (mm->locked_vm plus the new range, mm/mlock.c) unless the process has CAP_IPC_LOCK.
 * @internal
 */
export function checkMemlockLimit(bytes: number, what: string, syscall: string): void {
  if (bytes === 0 || holdsCapIpcLock()) return;
  const limit = getMemlockLimit();
  const already = lockedBytes();
  if (already + bytes <= limit.soft) return;
  throw systemError({
    syscall,
    errno: ENOMEM,
    reason: 'limit-exceeded',
    detail:
      `${what}: ${mib(bytes)} more would make ${mib(already + bytes)} locked, ` +
      `over RLIMIT_MEMLOCK ${limit.soft === Infinity ? 'unlimited' : `${limit.soft} bytes`}; nothing was locked`,
    hint: RAISE_LIMIT_HINT,
  });
}

/** @internal The error for a failed mlock/mlock2/munlock; ENOMEM and EPERM from mlock mean the limit (mm/mlock.c). */
export function lockError(syscall: string, rc: number, what: string): IoFlusherError {
  if (syscall !== 'munlock' && (rc === -ENOMEM || rc === -EPERM)) {
    return systemError({ syscall, errno: rc, detail: `${what}; RLIMIT_MEMLOCK ${getMemlockLimit().soft} bytes`, reason: 'limit-exceeded', hint: RAISE_LIMIT_HINT });
  }
  if (rc === -EINVAL && syscall === 'mlock2') {
    return systemError({ syscall, errno: rc, detail: what, reason: 'kernel-lacks-support', hint: "mlock2 with MLOCK_ONFAULT needs Linux 4.4; use { code: 'mapped' }" });
  }
  return systemError({ syscall, errno: rc, detail: what, reason: 'unexpected-errno', hint: `${syscall} failed` });
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
  const rc = memoryCalls().getrlimit(RLIMIT_MEMLOCK, out);
  if (rc < 0) throw systemError({ syscall: 'getrlimit', errno: rc, detail: 'RLIMIT_MEMLOCK', reason: 'unexpected-errno', hint: 'getrlimit failed' });
  return { soft: toLimit(out[0]!), hard: toLimit(out[1]!) };
}

function limitArg(value: unknown, name: string): bigint {
  assertLimit(value, name);
  return value === Infinity ? RLIM_INFINITY : BigInt(value);
}

/** setrlimit(RLIMIT_MEMLOCK). Raising the hard limit needs CAP_SYS_RESOURCE. Reads the limit back. */
export function setMemlockLimit(soft: number, hard: number = soft): MemlockLimit {
  const s = limitArg(soft, 'soft');
  const h = limitArg(hard, 'hard');
  assertLimitPair(soft, hard);
  const rc = memoryCalls().setrlimit(RLIMIT_MEMLOCK, s, h);
  if (rc < 0) {
    throw systemError({
      syscall: 'setrlimit',
      errno: rc,
      detail: `RLIMIT_MEMLOCK ${soft}/${hard}`,
      reason: rc === -EPERM ? 'missing-capability' : 'unexpected-errno',
      hint:
        rc === -EPERM
          ? `raising the hard limit (now ${getMemlockLimit().hard}) needs CAP_SYS_RESOURCE; or set it before start: systemd \`LimitMEMLOCK=\`, \`docker run --ulimit memlock=-1\`, \`prlimit --memlock\``
          : 'setrlimit failed',
    });
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
