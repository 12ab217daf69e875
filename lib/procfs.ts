/**
 * Every read of /proc in the package: task flags, thread names, task ids, capability sets, seccomp mode, signal
 * masks, memory mappings and locks, limits, oom_score_adj, open descriptors.
 * Mostly world-readable; no capability needed. See: man 5 proc (/proc/pid/stat, /proc/pid/status, smaps, limits).
 */
import * as fs from 'node:fs';
import { CAPABILITY_NAMES, CAP_SYS_RESOURCE, ESRCH, IO_FLUSHER_FLAGS, MEMALLOC_FLAG_TABLE, STAT_BATCH } from './kernel-constants';
import { IoFlusherError, systemError } from './errors';

/** The memalloc flags of one thread, as /proc/PID/task/TID/stat shows them. */
export interface ThreadFlags {
  pid: number;
  tid: number;
  /** The thread's comm (at most 15 bytes; may contain spaces and ')'). */
  name: string;
  /** The whole flags word (field 9), unsigned. */
  flags: number;
  memalloc: boolean;
  memallocNofs: boolean;
  memallocNoio: boolean;
  localThrottle: boolean;
  memallocPin: boolean;
  /** PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE both set: what PR_GET_IO_FLUSHER answers 1 for. */
  ioFlusher: boolean;
  /**
   * True when the IO_FLUSHER bits shown come from the emulator's model rather than the kernel: the kernel has
   * NOT protected this thread. Always false for the native backend.
   */
  emulated: boolean;
}

/** Fields of one stat line that we use. */
export interface StatFields {
  tid: number;
  name: string;
  state: string;
  flags: number;
  /** Field 22: when the thread started, in clock ticks after boot. With the tid, it names one thread for good (tids are reused). */
  startTime: number;
}

/**
 * Parses a /proc/PID/stat or /proc/PID/task/TID/stat line. Field 2 (comm) is in parentheses and may itself contain
 * spaces and ')', so the line is split after the LAST ')'; the flags word (field 9) is then the 7th token.
 */
export function parseStatLine(line: string): StatFields {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) throw new SyntaxError(`not a /proc stat line: ${JSON.stringify(line.slice(0, 80))}`);
  const tid = Number(line.slice(0, open).trim());
  // Only the first 20 fields after the comm are split (a line has about 50).
  const rest = line.slice(close + 1).trim().split(/\s+/, 20);
  // rest[0] = field 3 (state), rest[6] = field 9 (flags).
  const flags = Number(rest[6]);
  if (!Number.isSafeInteger(tid) || !Number.isSafeInteger(flags) || flags < 0 || rest[0] === undefined) {
    throw new SyntaxError(`not a /proc stat line: ${JSON.stringify(line.slice(0, 80))}`);
  }
  // The comm is bytes (the files are read as latin1, one char per byte); names are set as UTF-8 (pthread_setname_np,
  // prctl PR_SET_NAME), so decode it as such. Truncation to 15 bytes may cut a character: that one shows as U+FFFD.
  const comm = line.slice(open + 1, close);
  const name = /[\x80-\xff]/.test(comm) ? Buffer.from(comm, 'latin1').toString('utf8') : comm;
  return { tid, name, state: rest[0], flags: flags >>> 0, startTime: Number(rest[19] ?? 0) };
}

/**
 * A thread name made safe for a terminal and for a table: control characters (C0, DEL, C1, and the line and
 * paragraph separators) and backslashes are escaped, so a name can neither forge a row nor send escape sequences.
 */
export function escapeName(name: string): string {
  return name.replace(/[\\\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (c) =>
    c === '\\' ? '\\\\' : c.charCodeAt(0) <= 0xff ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}` : `\\u${c.charCodeAt(0).toString(16)}`,
  );
}

/** Names the memalloc bits of a flags word. `emulated` says the IO_FLUSHER bits are the emulator's. */
export function describeFlags(pid: number, tid: number, name: string, flags: number, emulated: boolean): ThreadFlags {
  const word = flags >>> 0;
  const named = Object.fromEntries(MEMALLOC_FLAG_TABLE.map((f) => [f.key, (word & f.bit) !== 0])) as Record<
    (typeof MEMALLOC_FLAG_TABLE)[number]['key'],
    boolean
  >;
  return { pid, tid, name, flags: word, ...named, ioFlusher: (word & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS, emulated };
}

// /proc files report size 0, so fs.readFileSync grows buffers chunk by chunk after an fstat: about 4x slower than one
// read into a reused buffer (measured: 46 us against 10 us per /proc/self/task/TID/stat). These files are small.
const procBuffer = Buffer.allocUnsafe(16384);

/**
 * Reads a small /proc file with one open, read(s) and close; throws like fs (ENOENT, ESRCH). `wholeInOneRead`: the
 * kernel makes the file in one go (one seq_file record, e.g. stat and status: single_open), so a read with room for
 * it returns all of it and no second read is needed to see the end (a quarter of the time of listing threads).
 */
export function readProcFile(path: string, wholeInOneRead = false): string {
  const fd = fs.openSync(path, 'r');
  try {
    let length = 0;
    for (;;) {
      const n = fs.readSync(fd, procBuffer, length, procBuffer.length - length, null);
      length += n;
      if (n === 0 || length === procBuffer.length || wholeInOneRead) break;
    }
    if (length === procBuffer.length) return procBuffer.toString('latin1') + fs.readFileSync(fd, 'latin1'); // rare: larger files
    return procBuffer.toString('latin1', 0, length);
  } finally {
    fs.closeSync(fd);
  }
}

function noSuchThread(pid: number, tid: number | undefined, path: string, cause: unknown): IoFlusherError {
  const what = tid === undefined || tid === pid ? `process ${pid}` : `thread ${tid} of process ${pid}`;
  return systemError({
    syscall: 'open',
    errno: ESRCH,
    path,
    reason: 'no-such-thread',
    hint: `${what} does not exist (it exited, or never existed); list live threads with listThreads(${pid})`,
    cause,
  });
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/** /proc is not mounted (or not readable): what a call that must list or read this process answers. */
export function procUnavailableError(errno: number, syscall: string, path: string, cause?: unknown): IoFlusherError {
  return systemError({
    syscall,
    errno,
    path,
    reason: 'proc-unavailable',
    hint: 'mount /proc (mount -t proc proc /proc): the threads of this process are listed and read there; nothing was changed',
    cause,
  });
}

/** /proc belongs to another PID namespace than this process's. */
export function foreignProcError(): IoFlusherError {
  return new IoFlusherError({
    code: 'ERR_IO_FLUSHER_FOREIGN_PROC',
    reason: 'foreign-proc',
    syscall: 'readlink',
    path: '/proc/self',
    message: `ERR_IO_FLUSHER_FOREIGN_PROC: /proc belongs to another PID namespace: /proc/self is not process ${process.pid}`,
    hint:
      'mount a /proc for this PID namespace (unshare --pid --fork --mount-proc, or mount -t proc proc /proc in a new ' +
      'mount namespace); until then thread and process ids read from /proc name other processes. Nothing was changed',
  });
}

let procIsOurs = false;

/**
 * Checks, once per process, that /proc/self is this process. With a /proc kept from a parent PID namespace
 * (`unshare --pid --fork` without --mount-proc; some sandboxes), /proc/PID names another process (PID 1 there is the
 * parent namespace's init) and thread ids listed there mean nothing to this namespace's system calls.
 */
export function assertProcIsOurs(): void {
  if (procIsOurs) return;
  let link: string;
  try {
    link = fs.readlinkSync('/proc/self');
  } catch (err) {
    throw procUnavailableError(-((err as NodeJS.ErrnoException).errno ?? ESRCH), 'readlink', '/proc/self', err);
  }
  if (link !== String(process.pid)) throw foreignProcError();
  procIsOurs = true;
}

/** Where a process's /proc files are: /proc/self for this one, else /proc/PID; either only once /proc is ours. */
export function processDir(pid: number): string {
  assertProcIsOurs();
  return pid === process.pid ? '/proc/self' : `/proc/${pid}`;
}

/**
 * This process's thread ids, for a call that changes them next: throws (nothing changed) when /proc is missing or
 * another PID namespace's, or the listing fails.
 */
export function ownTaskIdsBeforeChange(): number[] {
  assertProcIsOurs();
  try {
    return fs.readdirSync('/proc/self/task').map(Number);
  } catch (err) {
    throw procUnavailableError(-((err as NodeJS.ErrnoException).errno ?? ESRCH), 'scandir', '/proc/self/task', err);
  }
}

/** A thread of this process's name (comm), or '' when it is gone or unreadable: for messages only. */
export function readThreadName(tid: number): string {
  try {
    return readProcFile(`/proc/self/task/${tid}/comm`).replace(/\n$/, '');
  } catch {
    return '';
  }
}

/** Where a thread is, as a stuck daemon's author needs to see it. */
export interface ThreadWait {
  /** Scheduler state (stat field 3): R running, S sleeping, D uninterruptible (waiting on I/O or a lock), T stopped, ... */
  state: string;
  /** The kernel function the thread sleeps in (/proc/PID/task/TID/wchan), or null when running or not shown. */
  wchan: string | null;
  /** The kernel stack, innermost first, without addresses and offsets; null when unreadable (it needs root). */
  stack: string[] | null;
}

/**
 * Reads where one thread sleeps. A thread that exits meanwhile gives what could be read; wchan and stack are null
 * when the kernel does not show them (wchan is "0" for a running thread; the stack needs CAP_SYS_ADMIN).
 */
export function readThreadWait(pid: number, tid: number, state: string): ThreadWait {
  const dir = `${processDir(pid)}/task/${tid}`;
  const optional = (file: string): string | null => {
    try {
      return readProcFile(`${dir}/${file}`);
    } catch {
      return null; // gone, or not readable by this user: shown as unknown, never as an error
    }
  };
  const wchan = optional('wchan')?.trim() ?? null;
  const stackText = optional('stack');
  const stack = stackText === null
    ? null
    : stackText
        .split('\n')
        .map((line) => line.replace(/^\[<[0-9a-f]+>\]\s*/, '').replace(/\+0x[0-9a-f]+\/0x[0-9a-f]+/, '').trim())
        .filter(Boolean);
  return { state, wchan: wchan && wchan !== '0' ? wchan : null, stack };
}

/** The calling thread's tid, from /proc/thread-self (a link to PID/task/TID). */
export function threadSelfId(): number {
  const link = fs.readlinkSync('/proc/thread-self');
  return Number(link.slice(link.lastIndexOf('/') + 1));
}

/**
 * Throws IoFlusherError ESRCH when `pid` is not a process: it does not exist, or it is the id of a thread of another
 * process (Linux answers /proc/TID too, though it does not list it), which would otherwise be shown as a process.
 */
export function assertProcessId(pid: number): void {
  assertProcIsOurs();
  if (pid === process.pid) return;
  const tgid = Number(readStatus(pid).get('Tgid'));
  if (Number.isInteger(tgid) && tgid !== pid) {
    throw systemError({
      syscall: 'open',
      errno: ESRCH,
      path: `/proc/${pid}`,
      detail: `${pid} is a thread of process ${tgid}, not a process`,
      reason: 'no-such-thread',
      hint: `pass the process id ${tgid} (and ${pid} as the thread id where one is wanted)`,
    });
  }
}

/** Reads one thread's stat line; throws IoFlusherError 'ESRCH' when it does not exist. */
export function readThreadStat(pid: number, tid: number): StatFields {
  const path = `${processDir(pid)}/task/${tid}/stat`;
  let line: string;
  try {
    line = readProcFile(path, true);
  } catch (err) {
    if (isGone(err)) throw noSuchThread(pid, tid, path, err);
    throw err;
  }
  // A thread that exits while its file is read can leave nothing to read: gone, like an open that fails.
  if (line === '') throw noSuchThread(pid, tid, path, undefined);
  return parseStatLine(line);
}

/**
 * Parses the stat texts of several threads read in one go (the native read-back: each text followed by a NUL; a
 * thread name cannot hold a NUL). An empty or unparsable text gives undefined: read that thread again on its own.
 */
export function parseStatTexts(text: string): Array<StatFields | undefined> {
  return text.split('\0').slice(0, -1).map((line) => {
    try {
      return line === '' ? undefined : parseStatLine(line);
    } catch {
      return undefined;
    }
  });
}

/** The thread ids of a process, from /proc/PID/task; throws IoFlusherError 'ESRCH' when it does not exist. */
export function readTaskIds(pid: number): number[] {
  const path = `${processDir(pid)}/task`;
  try {
    return fs
      .readdirSync(path)
      .map(Number)
      .sort((a, b) => a - b);
  } catch (err) {
    if (isGone(err)) throw noSuchThread(pid, undefined, path, err);
    throw err;
  }
}

/** The thread ids of this process, or [] where /proc cannot be read (not Linux). */
export function ownTaskIds(): number[] {
  try {
    return readTaskIds(process.pid);
  } catch {
    return [];
  }
}

/** The stat fields of every thread of a process, in tid order; threads that exit while it is read are left out.
 * Throws IoFlusherError 'ESRCH' when the process does not exist. */
export function readProcessThreads(pid: number): StatFields[] {
  assertProcessId(pid);
  const threads: StatFields[] = [];
  let lastError: unknown;
  for (const tid of readTaskIds(pid)) {
    try {
      threads.push(readThreadStat(pid, tid));
    } catch (err) {
      if ((err as IoFlusherError).code !== 'ESRCH') throw err;
      lastError = err;
    }
  }
  if (threads.length === 0 && lastError) throw lastError;
  return threads;
}

/**
 * The stat fields of threads `tids` of this process (undefined: gone), for listThreads(): with the addon's batch
 * read (`batch`, one native call per STAT_BATCH threads), else, and for a thread the batch could not read whole,
 * file by file. Throws what reading one fails with, except a thread that is gone.
 */
export function readOwnThreadStats(batch: ((tids: Int32Array) => string | number) | undefined, tids: number[]): Array<StatFields | undefined> {
  const stats: Array<StatFields | undefined> = [];
  for (let from = 0; from < tids.length; from += STAT_BATCH) {
    const chunk = tids.slice(from, from + STAT_BATCH);
    const text = batch?.(Int32Array.from(chunk));
    const parsed = typeof text === 'string' ? parseStatTexts(text) : [];
    chunk.forEach((tid, i) => {
      let stat = parsed[i];
      if (stat === undefined) {
        try {
          stat = readThreadStat(process.pid, tid);
        } catch (err) {
          // Gone since: left out. Anything else (EMFILE, EACCES, an unreadable text) is not a thread that exited.
          if ((err as IoFlusherError).code !== 'ESRCH') throw err;
        }
      }
      stats.push(stat);
    });
  }
  return stats;
}

/** Capability sets of a process, by name, from /proc/PID/status. */
export interface CapabilitySets {
  effective: string[];
  permitted: string[];
  inheritable: string[];
  bounding: string[];
  ambient: string[];
  /** The raw masks, for bits newer than our name table. */
  masks: { effective: bigint; permitted: bigint; inheritable: bigint; bounding: bigint; ambient: bigint };
  /** CAP_SYS_RESOURCE in the effective set: what PR_SET/GET_IO_FLUSHER check (in the initial user namespace). */
  sysResource: boolean;
}

/** Reads /proc/PID/status into a map of field name to value. */
export function readStatus(pid: number | 'self' = 'self'): Map<string, string> {
  const path = typeof pid === 'number' ? `${processDir(pid)}/status` : '/proc/self/status';
  let text: string;
  try {
    text = readProcFile(path);
  } catch (err) {
    if (isGone(err) && typeof pid === 'number') throw noSuchThread(pid, undefined, path, err);
    throw err;
  }
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

function capabilityNames(mask: bigint): string[] {
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (hasCapability(mask, bit)) names.push(CAPABILITY_NAMES[bit] ?? `CAP_${bit}`);
  }
  return names;
}

/** Whether capability `bit` is in a capability mask (bit n is capability n). */
export function hasCapability(mask: bigint, bit: number): boolean {
  return ((mask >> BigInt(bit)) & 1n) === 1n;
}

/** Whether signal `signo` is in a signal mask of /proc/PID/status (SigBlk, SigPnd, ShdPnd: bit n-1 is signal n). */
export function hasSignal(mask: bigint, signo: number): boolean {
  return ((mask >> BigInt(signo - 1)) & 1n) === 1n;
}

/** One hexadecimal mask field (CapEff, SigBlk, SigPnd, ShdPnd, ...) of a /proc/PID/status text; undefined when missing. */
export function statusMask(status: string, field: string): bigint | undefined {
  const hex = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1];
  return hex === undefined ? undefined : BigInt(`0x${hex}`);
}

/**
 * What a failed prctl is explained with, read fresh from /proc/self/status in one read (capabilities can change), with
 * the same parser as probe():
 * CAP_SYS_RESOURCE in the effective set and the seccomp mode; each undefined when unknown (no /proc).
 */
export function readSecurityStatus(): { capSysResource: boolean | undefined; seccompMode: number | undefined } {
  try {
    const status = readStatus('self');
    const capEff = status.get('CapEff');
    return {
      capSysResource: capEff === undefined ? undefined : hasCapability(BigInt(`0x${capEff}`), CAP_SYS_RESOURCE),
      seccompMode: seccompModeFromStatus(status),
    };
  } catch {
    return { capSysResource: undefined, seccompMode: undefined };
  }
}

/** Capability sets from a parsed status map. */
export function capabilitiesFromStatus(status: Map<string, string>): CapabilitySets {
  const mask = (field: string): bigint => BigInt(`0x${status.get(field) ?? '0'}`);
  const masks = {
    effective: mask('CapEff'),
    permitted: mask('CapPrm'),
    inheritable: mask('CapInh'),
    bounding: mask('CapBnd'),
    ambient: mask('CapAmb'),
  };
  return {
    effective: capabilityNames(masks.effective),
    permitted: capabilityNames(masks.permitted),
    inheritable: capabilityNames(masks.inheritable),
    bounding: capabilityNames(masks.bounding),
    ambient: capabilityNames(masks.ambient),
    masks,
    sysResource: hasCapability(masks.effective, CAP_SYS_RESOURCE),
  };
}

/** Seccomp mode from /proc/PID/status: 0 disabled, 1 strict, 2 filter; undefined when the kernel hides it. */
export function seccompModeFromStatus(status: Map<string, string>): number | undefined {
  const value = status.get('Seccomp');
  return value === undefined ? undefined : Number(value);
}

/**
 * Whether this process runs in a user namespace other than the initial one. capable() checks the initial user
 * namespace, so root inside any other one always gets EPERM from PR_SET_IO_FLUSHER (kernel/sys.c, kernel/capability.c).
 */
let userNamespaceCache: boolean | undefined | null = null;
export function inUserNamespace(): boolean | undefined {
  // Read once: a process changes user namespace only through unshare(2)/setns(2), which Node never calls itself.
  if (userNamespaceCache !== null) return userNamespaceCache;
  try {
    const map = readProcFile('/proc/self/uid_map').trim().split(/\s+/);
    userNamespaceCache = !(map.length === 3 && map[0] === '0' && map[1] === '0' && map[2] === '4294967295');
  } catch {
    userNamespaceCache = undefined;
  }
  return userNamespaceCache;
}

// ---- Memory: mappings, locks, limits, oom_score_adj.

/** Bytes in locked mappings: VmLck of a parsed /proc/PID/status. */
export function lockedBytesFromStatus(status: Map<string, string>): number {
  return Number.parseInt(status.get('VmLck') ?? '0 kB', 10) * 1024;
}

export interface Mapping {
  start: bigint;
  end: bigint;
  size: number;
  perms: string;
  path: string;
  /** VM_LOCKED ('lo' in VmFlags). */
  locked: boolean;
  /** The `Rss:` line: resident bytes. */
  rss: number;
}

/** Parses /proc/PID/smaps text: every mapping with its lock state. */
export function parseSmaps(text: string): Mapping[] {
  const mappings: Mapping[] = [];
  let current: Mapping | undefined;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const start = BigInt(`0x${head[1]}`);
      const end = BigInt(`0x${head[2]}`);
      // An inode of 0 means not file-backed; the path is then empty or a pseudo name like [heap].
      current = { start, end, size: Number(end - start), perms: head[3]!, path: head[4] === '0' ? '' : head[5]!, locked: false, rss: 0 };
      mappings.push(current);
    } else if (current && line.startsWith('Rss:')) {
      current.rss = Number.parseInt(line.slice(4), 10) * 1024;
    } else if (current && line.startsWith('VmFlags:')) {
      current.locked = line.slice(8).trim().split(' ').includes('lo');
    }
  }
  return mappings;
}

/** Every mapping of a process with its lock state, from /proc/PID/smaps (large: read with fs, not the small buffer). */
export function readSmaps(pid: number | 'self' = 'self'): Mapping[] {
  return parseSmaps(fs.readFileSync(`${typeof pid === 'number' ? processDir(pid) : '/proc/self'}/smaps`, 'latin1'));
}

/** Whether [start, end) is wholly mapped in this process now (/proc/self/maps). */
export function isMapped(start: bigint, end: bigint): boolean {
  let covered = start;
  const ranges = fs
    .readFileSync('/proc/self/maps', 'latin1')
    .split('\n')
    .filter(Boolean)
    .map((line) => line.slice(0, line.indexOf(' ')).split('-').map((hex) => BigInt(`0x${hex}`)) as [bigint, bigint]);
  for (const [s, e] of ranges) if (s <= covered && e > covered) covered = e;
  return covered >= end;
}

/** RLIMIT_MEMLOCK of a process from /proc/PID/limits ("Max locked memory"), in bytes; Infinity for unlimited. */
export function readMemlockLimit(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  const row = /^Max locked memory\s+(\S+)\s+(\S+)/m.exec(readProcFile(`${typeof pid === 'number' ? processDir(pid) : '/proc/self'}/limits`));
  const parse = (v: string | undefined): number => (v === undefined || v === 'unlimited' ? Infinity : Number(v));
  return { soft: parse(row?.[1]), hard: parse(row?.[2]) };
}

/** The oom_score_adj file of a process. */
export function oomScoreAdjPath(pid: number | 'self' = 'self'): string {
  return `${typeof pid === 'number' ? processDir(pid) : '/proc/self'}/oom_score_adj`;
}

/** /proc/PID/oom_score_adj: -1000 (never OOM-killed) to 1000. */
export function readOomScoreAdj(pid: number | 'self' = 'self'): number {
  return Number(readProcFile(oomScoreAdjPath(pid)).trim());
}

// ---- Descriptors.

/** The descriptors this process has open now (/proc/self/fd, which lists its own too); [] without /proc. */
export function readOpenDescriptors(): number[] {
  try {
    return fs.readdirSync('/proc/self/fd').map(Number);
  } catch {
    return [];
  }
}

/** Where /proc/self/fd/FD points ('anon_inode:[eventpoll]', 'socket:[123]', ...), or undefined when fd is not open. */
export function readDescriptorTarget(fd: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}
