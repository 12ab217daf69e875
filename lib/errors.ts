/**
 * IoFlusherError: shaped like Node's own system errors (src/api/exceptions.cc): message "CODE: description, syscall",
 * `code`, negative `errno`, `syscall`; plus `reason` to branch on and `hint` saying what to do about it.
 */
import * as os from 'node:os';
import * as util from 'node:util';
import { EINVAL, EPERM, kernelHasIoFlusher, PR_GET_IO_FLUSHER, PR_SET_IO_FLUSHER, PRCTL_OPTION_NAMES } from './kernel-constants';

/**
 * Why a call failed, for callers that branch:
 * - `missing-capability`: EPERM, the process lacks CAP_SYS_RESOURCE in the initial user namespace.
 * - `refused-by-filter`: EPERM although CAP_SYS_RESOURCE is held: a seccomp filter or an LSM refused it.
 * - `kernel-lacks-support`: EINVAL to valid arguments: the kernel (as this process sees it) has no IO_FLUSHER.
 * - `verification-failed`: the call succeeded but reading the state back disagrees.
 * - `no-such-thread`: a /proc lookup named a thread or process that does not exist.
 * - `native-unavailable`: the native addon could not be loaded and the native backend was required.
 * - `limit-exceeded`: a memory lock would exceed RLIMIT_MEMLOCK (the process lacks CAP_IPC_LOCK).
 * - `prepare-failed`: prepareDaemon(): one or more required steps failed (see `report`).
 * - `signal-in-use`: the process-wide set was asked to use a signal that already has a handler, or none was free.
 * - `proc-unavailable`: /proc is not mounted (or not readable), and the call needs it to list or read this process.
 * - `foreign-proc`: /proc belongs to another PID namespace (its /proc/self is not this process), so ids read there do
 *   not name this process's threads.
 * - `reexec-impossible`: reexecWithIoFlusher() cannot run the same program again (it was read from stdin).
 * - `command-not-found`: exec: no such command (ENOENT), as execvp(3) would find it.
 * - `command-not-executable`: exec: execve refused the command (EACCES, ENOEXEC, ...).
 * - `unexpected-errno`: any other errno.
 */
export type IoFlusherErrorReason =
  | 'missing-capability'
  | 'refused-by-filter'
  | 'kernel-lacks-support'
  | 'verification-failed'
  | 'no-such-thread'
  | 'native-unavailable'
  | 'signal-in-use'
  | 'proc-unavailable'
  | 'foreign-proc'
  | 'limit-exceeded'
  | 'prepare-failed'
  | 'reexec-impossible'
  | 'command-not-found'
  | 'command-not-executable'
  | 'unexpected-errno';

/** What an {@link IoFlusherError} is made of (io-flusher makes them; you branch on their properties). */
export interface IoFlusherErrorFields {
  code: string;
  errno?: number;
  syscall?: string;
  option?: string;
  path?: string;
  reason: IoFlusherErrorReason;
  message: string;
  hint: string;
  emulated?: boolean;
  cause?: unknown;
  report?: unknown;
}

/**
 * Every failure io-flusher reports, shaped like Node's own system errors (message "CODE: description, syscall",
 * `code`, negative `errno`, `syscall`), with `reason` to branch on and `hint`, the fix. Argument errors are Node's
 * own TypeError/RangeError with ERR_* codes instead, thrown before any system call.
 *
 * ```ts
 * import { setIoFlusher, IoFlusherError } from 'io-flusher';
 *
 * try {
 *   setIoFlusher(true);
 * } catch (err) {
 *   if (!(err instanceof IoFlusherError)) throw err;
 *   switch (err.reason) {
 *     case 'missing-capability': console.error('grant CAP_SYS_RESOURCE:', err.hint); break;
 *     case 'kernel-lacks-support': console.error('Linux >= 5.6 needed:', err.hint); break;
 *     default: throw err;
 *   }
 * }
 * ```
 */
export class IoFlusherError extends Error {
  /**
   * The errno name of a failed system call ('EPERM', 'EINVAL', 'ESRCH', 'ENOMEM', 'EACCES', 'EBUSY', ...), or one of
   * io-flusher's own: 'ERR_IO_FLUSHER_VERIFY', 'ERR_IO_FLUSHER_NATIVE_UNAVAILABLE', 'ERR_IO_FLUSHER_SIGNAL_IN_USE',
   * 'ERR_IO_FLUSHER_PREPARE', 'ERR_IO_FLUSHER_REEXEC_STDIN'.
   */
  readonly code: string;
  /** Negative errno, as in Node's system errors (-1 for EPERM); undefined when no system call failed. */
  readonly errno: number | undefined;
  /** The system call that failed: 'prctl', 'open' (/proc lookups), 'execve', 'mlock', 'setrlimit', ... */
  readonly syscall: string | undefined;
  /** The prctl option, e.g. 'PR_SET_IO_FLUSHER'. */
  readonly option: string | undefined;
  /** The file the call was made on, when there was one (a /proc path, the command of an exec). */
  readonly path: string | undefined;
  /** Why, for callers that branch: see {@link IoFlusherErrorReason}. */
  readonly reason: IoFlusherErrorReason;
  /** What to do about it. Also appended to `message`. */
  readonly hint: string;
  /** True when the emulator, not the kernel, produced this answer. */
  readonly emulated: boolean;
  /** For setProcessIoFlusher() and prepareDaemon(): the report at the time of the failure. */
  readonly report: unknown;

  constructor(fields: IoFlusherErrorFields) {
    super(`${fields.message}: ${fields.hint}`, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = 'IoFlusherError';
    this.code = fields.code;
    this.errno = fields.errno;
    this.syscall = fields.syscall;
    this.option = fields.option;
    this.path = fields.path;
    this.reason = fields.reason;
    this.hint = fields.hint;
    this.emulated = fields.emulated ?? false;
    this.report = fields.report;
  }
}

/** What the failure diagnosis looks at; gathered only once a call has failed. */
export interface FailureContext {
  emulated: boolean;
  /** CAP_SYS_RESOURCE in the effective set (as the backend sees it). */
  capSysResource: boolean | undefined;
  inUserNamespace: boolean | undefined;
  kernelRelease: string;
  /** Whether the kernel has IO_FLUSHER when that is known without reading the release (the emulator's model). */
  kernelHasFeature?: boolean;
  seccompMode: number | undefined;
}

const GRANT_CAPABILITY =
  'grant CAP_SYS_RESOURCE: run as root with it in the bounding set, `docker run --cap-add SYS_RESOURCE` ' +
  '(Kubernetes: securityContext.capabilities.add: ["SYS_RESOURCE"]), or in a systemd unit ' +
  '`AmbientCapabilities=CAP_SYS_RESOURCE` (and CapabilityBoundingSet must include it)';

let systemErrors: Map<number, [string, string]> | undefined;
const MISSING_FROM_LIBUV: Record<string, string> = { ENOEXEC: 'exec format error' };

/** The name and description of an errno (either sign): ['EPERM', 'operation not permitted'], from Node's own table. */
export function errnoDescription(errno: number): [string, string] {
  // util.getSystemErrorMap() builds a new Map on every call: keep the first.
  systemErrors ??= util.getSystemErrorMap();
  const positive = Math.abs(errno);
  const entry = systemErrors.get(-positive);
  if (entry) return [entry[0], entry[1]];
  // libuv's table lacks a few the kernel returns (ENOEXEC from execve): the name from os.constants, never `E8`.
  const name = Object.entries(os.constants.errno).find(([, value]) => value === positive)?.[0];
  return [name ?? `E${positive}`, (name && MISSING_FROM_LIBUV[name]) ?? `errno ${positive}`];
}

/** The name of an errno (either sign): 'EPERM'. */
export function errnoName(errno: number): string {
  return errnoDescription(errno)[0];
}

export interface SystemErrorOptions {
  syscall: string;
  /** The errno, as the binding answers it (-errno) or as a positive number. */
  errno: number;
  reason: IoFlusherErrorReason;
  hint: string;
  /** What the call was made on, shown after the syscall as Node does: a path (quoted) or a prctl option name. */
  path?: string;
  option?: string;
  /** More about the call, shown in parentheses at the end of the message. */
  detail?: string;
  emulated?: boolean;
  cause?: unknown;
  report?: unknown;
}

/**
 * The one factory for a failed system call: message "CODE: description, syscall 'path' (detail)" as in Node's
 * system errors, `code`, negative `errno`, `syscall`, and the `reason` and `hint` the caller gives.
 */
export function systemError(options: SystemErrorOptions): IoFlusherError {
  const errno = -Math.abs(options.errno);
  const [code, description] = errnoDescription(errno);
  const subject = options.path !== undefined ? ` '${options.path}'` : options.option !== undefined ? ` ${options.option}` : '';
  return new IoFlusherError({
    code,
    errno,
    syscall: options.syscall,
    option: options.option,
    path: options.path,
    reason: options.reason,
    message: `${code}: ${description}, ${options.syscall}${subject}${options.detail ? ` (${options.detail})` : ''}`,
    hint: options.hint,
    emulated: options.emulated,
    cause: options.cause,
    report: options.report,
  });
}

/** Builds the error for a prctl that returned -errno, with the reason and what to do. */
export function prctlFailure(option: number, negErrno: number, context: FailureContext): IoFlusherError {
  const errno = Math.abs(negErrno);
  const code = errnoName(errno);
  let reason: IoFlusherErrorReason;
  let hint: string;
  if (errno === EPERM && context.inUserNamespace && !context.emulated) {
    reason = 'missing-capability';
    hint =
      'this process runs in a user namespace (e.g. a rootless container), and the kernel checks CAP_SYS_RESOURCE in ' +
      'the initial user namespace, which it never has there; start the daemon from real root and ' +
      GRANT_CAPABILITY;
  } else if (errno === EPERM && context.capSysResource === true) {
    reason = 'refused-by-filter';
    hint =
      'the process holds CAP_SYS_RESOURCE, so a seccomp filter' +
      (context.seccompMode === 2 ? ' (this process has one: Seccomp: 2 in /proc/self/status)' : '') +
      ` or a security module (AppArmor, SELinux) refused the call; allow prctl options ${PR_SET_IO_FLUSHER} and ${PR_GET_IO_FLUSHER} in its policy`;
  } else if (errno === EPERM) {
    reason = 'missing-capability';
    hint = `the process lacks CAP_SYS_RESOURCE, which the kernel requires even to read or clear the flag; ${GRANT_CAPABILITY}`;
  } else if (errno === EINVAL) {
    reason = 'kernel-lacks-support';
    const has = context.kernelHasFeature ?? kernelHasIoFlusher(context.kernelRelease);
    if (has === false) {
      hint = context.emulated
        ? 'the emulator models a kernel older than Linux 5.6, which added PR_SET_IO_FLUSHER (a real one would need an upgrade)'
        : `kernel ${context.kernelRelease} is older than Linux 5.6, which added PR_SET_IO_FLUSHER; upgrade the kernel`;
    } else {
      hint =
        `the arguments were valid (io-flusher checks them first), so the kernel as this process sees it lacks ` +
        `IO_FLUSHER (Linux >= 5.6 is needed). Kernel ${context.kernelRelease || 'unknown'} should have it` +
        (context.seccompMode === 2
          ? ', and this process runs under a seccomp filter (Seccomp: 2), which probably answers EINVAL'
          : ', so a seccomp filter or security module probably answers EINVAL') +
        '; the daemon can hang when memory is low';
    }
  } else {
    reason = 'unexpected-errno';
    hint = `prctl answered ${code}, which the kernel's IO_FLUSHER handler never returns itself; something between (a seccomp filter, an LSM) did`;
  }
  return systemError({
    syscall: 'prctl',
    errno,
    option: PRCTL_OPTION_NAMES[option] ?? `option ${option}`,
    detail: context.emulated ? 'emulated kernel' : undefined,
    reason,
    hint,
    emulated: context.emulated,
  });
}
