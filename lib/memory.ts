/**
 * The forward-progress kit: IO_FLUSHER keeps a daemon's allocations out of reclaim recursion, it does not make them
 * succeed. Real storage daemons (iscsid, multipathd, lvm2) also lock their memory, keep the OOM killer away and
 * raise the memlock limit. In Node, memory is locked by scope (code mappings, locked Buffers), never the V8 heap.
 * See: man 2 mlock, man 2 setrlimit, man 5 proc (oom_score_adj, smaps).
 */
import * as fs from 'node:fs';
import * as util from 'node:util';
import { markAsUntransferable } from 'node:worker_threads';
import { systemCalls, SystemCalls } from './backend';
import { IoFlusherError, systemError } from './errors';
import {
  CAP_IPC_LOCK,
  EACCES,
  EINVAL,
  ENOMEM,
  EPERM,
  MLOCK_ONFAULT,
  OOM_SCORE_ADJ_MAX,
  OOM_SCORE_ADJ_MIN,
  RLIM_INFINITY,
  RLIMIT_MEMLOCK,
} from './kernel-constants';
import {
  capabilitiesFromStatus,
  hasCapability,
  inUserNamespace,
  isMapped,
  lockedBytesFromStatus,
  Mapping,
  oomScoreAdjPath,
  readMemlockLimit,
  readOomScoreAdj,
  readSmaps,
  readStatus,
} from './procfs';
import { assertInteger, assertLimit, assertLimitPair, assertObject, assertOneOf, invalidArgValue, invalidState } from './validate';

const memoryCalls = (): SystemCalls => systemCalls('memory locking and limits');

/** Bytes locked in memory by this process: VmLck in /proc/self/status. */
export function lockedBytes(): number {
  return lockedBytesFromStatus(readStatus('self'));
}

/**
 * How the code scope is locked: 'mapped' locks (and reads in) every page of every code mapping now, so that no code
 * path, however cold, needs a page-in later; 'touched' (mlock2 MLOCK_ONFAULT, Linux 4.4+) locks pages once they have
 * been used, which costs less memory but leaves pages never run before (error paths) to a page-in.
 */
export type CodeLockMode = 'mapped' | 'touched';

export interface LockMemoryOptions {
  /** The code scope: 'mapped' (default), 'touched', or false to lock nothing now. */
  code?: CodeLockMode | false;
}

export interface CodeScopeReport {
  mode: CodeLockMode;
  /** Code mappings locked (file-backed, not writable: text and read-only data of node, libc, addons). */
  mappings: number;
  /** Their size: what they add to VmLck. */
  bytes: number;
  /** Of those, the bytes resident now (the `Rss:` lines of /proc/self/smaps; `Locked:` would divide pages shared
   * with other processes by their number). With 'mapped', all of them. */
  residentBytes: number;
}

/** Locked bytes per scope, read from /proc/self/smaps and /proc/self/status. */
export interface LockedMemory {
  /** Code mappings that are locked. */
  code: number;
  /** Locked Buffers (allocLockedBuffer, LockedBufferPool) that are still locked and not yet collected. */
  buffers: number;
  /** Every other locked mapping (collected Buffers whose memory is not yet unmapped, locks made by other code). */
  other: number;
  /** VmLck: all of it. */
  total: number;
}

export interface MemoryLockReport {
  /** The code scope after the call; undefined when lockMemory() was not asked to lock it, and from unlockMemory(). */
  code: CodeScopeReport | undefined;
  /** Locked bytes per scope after the call. */
  locked: LockedMemory;
}

/**
 * The code scope among `mappings`: the mappings of loaded executables and shared objects (files with an executable
 * mapping: node, libc, addons) that are not writable and not PROT_NONE, i.e. their text and read-only data. V8
 * never frees or discards these (it madvise()s only memory it mapped itself), so locking them cannot make it abort.
 * Data files an addon maps read-only (an LMDB database, say) have no executable mapping and are left out: they can
 * be far larger than memory.
 */
export function codeScope(mappings: Mapping[]): Mapping[] {
  const objects = new Set(mappings.filter((m) => m.path.startsWith('/') && m.perms[2] === 'x').map((m) => m.path));
  return mappings.filter((m) => objects.has(m.path) && m.perms[1] !== 'w' && m.perms.slice(0, 3) !== '---');
}

/** The code scope of this process now. */
function readCode(): Mapping[] {
  return codeScope(readSmaps('self'));
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
 */
function checkMemlockLimit(bytes: number, what: string, syscall: string): void {
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

/** The error for a failed mlock/mlock2/munlock; ENOMEM and EPERM from mlock mean the limit (mm/mlock.c). */
function lockError(syscall: string, rc: number, what: string): IoFlusherError {
  if (syscall !== 'munlock' && (rc === -ENOMEM || rc === -EPERM)) {
    return systemError({ syscall, errno: rc, detail: `${what}; RLIMIT_MEMLOCK ${getMemlockLimit().soft} bytes`, reason: 'limit-exceeded', hint: RAISE_LIMIT_HINT });
  }
  if (rc === -EINVAL && syscall === 'mlock2') {
    return systemError({ syscall, errno: rc, detail: what, reason: 'kernel-lacks-support', hint: "mlock2 with MLOCK_ONFAULT needs Linux 4.4; use { code: 'mapped' }" });
  }
  return systemError({ syscall, errno: rc, detail: what, reason: 'unexpected-errno', hint: `${syscall} failed` });
}

function lockCode(mode: CodeLockMode): CodeScopeReport {
  const calls = memoryCalls();
  const code = readCode();
  const syscall = mode === 'touched' ? 'mlock2' : 'mlock';
  // Only mappings not locked yet count against the limit (mm/mlock.c subtracts what is locked already).
  const newlyLocked = code.filter((m) => !m.locked);
  checkMemlockLimit(
    newlyLocked.reduce((sum, m) => sum + m.size, 0),
    `code scope, ${newlyLocked.length} mappings`,
    syscall,
  );
  // Every mapping, locked or not: locking again with the other mode switches it (touched -> mapped reads it in).
  const done: Mapping[] = [];
  for (const m of code) {
    const rc = calls.mlock2(m.start, m.size, mode === 'touched' ? MLOCK_ONFAULT : 0);
    // ENOMEM also means "not mapped": a Worker exiting meanwhile unmaps its copy of V8's builtins (a code mapping).
    if (rc === -ENOMEM && !isMapped(m.start, m.end)) continue;
    if (rc < 0) {
      // Nothing half-locked: undo the locks this call added before reporting.
      for (const d of done) if (!d.locked) calls.munlock(d.start, d.size);
      throw lockError(syscall, rc, `${m.path} at 0x${m.start.toString(16)}, ${m.size} bytes`);
    }
    done.push(m);
  }
  // Read back: every mapping locked here must carry VM_LOCKED (code mapped since, e.g. by a Worker starting, is not
  // this call's: see lockMemory).
  const starts = new Set(done.map((m) => m.start));
  const after = readCode();
  const missed = after.filter((m) => starts.has(m.start) && !m.locked);
  if (missed.length) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_VERIFY',
      syscall,
      reason: 'verification-failed',
      message: `ERR_IO_FLUSHER_VERIFY: ${missed.length} code mapping(s) are not locked after ${syscall}, e.g. ${missed[0]!.path}`,
      hint: 'something unlocked them concurrently; call lockMemory() again',
    });
  }
  const locked = after.filter((m) => m.locked);
  return { mode, mappings: locked.length, bytes: locked.reduce((sum, m) => sum + m.size, 0), residentBytes: locked.reduce((sum, m) => sum + m.rss, 0) };
}

/** Checks lockMemory()'s options (also before prepareDaemon() changes anything); returns the code mode. */
export function lockMemoryMode(options: unknown, name = 'options'): CodeLockMode | false {
  assertObject(options, name);
  const removed = ['current', 'future', 'onFault'].filter((key) => key in options);
  if (removed.length) {
    throw invalidArgValue(
      `lockMemory() no longer calls mlockall, so "${name}.${removed[0]}" has no meaning: with the V8 heap locked, Node 24 ` +
        "and 26 abort at a later garbage collection. Lock the code scope ({ code: 'mapped' } or { code: 'touched' }) " +
        'and take I/O buffers from allocLockedBuffer() or a LockedBufferPool',
    );
  }
  const unknown = Object.keys(options).filter((key) => key !== 'code');
  if (unknown.length) throw invalidArgValue(`lockMemory() has no option "${unknown[0]}"; it takes { code: 'mapped' | 'touched' | false }`);
  const mode = options.code ?? 'mapped';
  if (mode !== false) assertOneOf(mode, `${name}.code`, ['mapped', 'touched'] as const);
  return mode;
}

/**
 * Locks the code scope of this process (see codeScope): the text and read-only data of node, of the shared libraries
 * and of native addons loaded so far. A daemon serving a block device that its own root or swap lives on must never
 * wait for a page-in of its own code; these pages are what it would page in. Safe on every Node major: V8 never
 * frees or discards them (README, "Memory and the OOM killer").
 *
 * Not locked: the V8 heap and everything else anonymous. Whole-process mlockall() is not offered: with the V8 heap
 * locked, Node 24 and 26 abort (`Check failed: 0 == ret`, SIGTRAP) at a later garbage collection, and Node 20 to 26
 * all abort at process exit unless unlocked first. For the I/O path's data, use allocLockedBuffer() or a
 * LockedBufferPool. Code loaded later (another addon) is not locked: call lockMemory() again after loading it.
 *
 * Fails with reason 'limit-exceeded' naming RLIMIT_MEMLOCK, before locking anything, when the limit is too small
 * and the process lacks CAP_IPC_LOCK.
 */
export function lockMemory(options: LockMemoryOptions = {}): MemoryLockReport {
  const mode = lockMemoryMode(options);
  const code = mode === false ? undefined : lockCode(mode);
  return { code, locked: lockedMemory() };
}

/** Unlocks the code scope (locked Buffers stay locked: see unlockBuffer, LockedBufferPool.close). */
export function unlockMemory(): MemoryLockReport {
  const calls = memoryCalls();
  for (const m of readCode().filter((m) => m.locked)) {
    const rc = calls.munlock(m.start, m.size);
    // A mapping gone since the read is not an error: it is not locked either.
    if (rc < 0 && rc !== -ENOMEM) throw lockError('munlock', rc, `${m.path} at 0x${m.start.toString(16)}`);
  }
  const still = readCode().filter((m) => m.locked);
  if (still.length) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_VERIFY',
      syscall: 'munlock',
      reason: 'verification-failed',
      message: `ERR_IO_FLUSHER_VERIFY: ${still.length} code mapping(s) are still locked after munlock, e.g. ${still[0]!.path}`,
      hint: 'another thread locked them again concurrently',
    });
  }
  return { code: undefined, locked: lockedMemory() };
}

// ---- Locked Buffers: memory of their own (an anonymous mapping each), so locking one locks nothing V8 or malloc
// share, and the mapping goes away with the Buffer (collected, or its Worker torn down).

interface LockedBufferState {
  /** Mapping size: the Buffer's length rounded up to whole pages. */
  bytes: number;
  locked: boolean;
}

const lockedBuffers = new WeakMap<Buffer, LockedBufferState>();
/** For lockedMemory(): the Buffers locked and not yet collected. */
const liveLockedBuffers = new Set<WeakRef<Buffer>>();
let pruneAt = 64;
let pageSizeCache = 0;
const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

function pageRound(bytes: number): number {
  pageSizeCache ||= memoryCalls().pageSize();
  return Math.ceil(bytes / pageSizeCache) * pageSizeCache;
}

/** A locked Buffer's size: 2^31 - 1 at most, as kMaxLength of Buffer on every supported Node major is at least that. */
const MAX_LOCKED_BUFFER = 2 ** 31 - 1;

function assertSize(value: unknown, name: string): asserts value is number {
  assertInteger(value, name, 1, MAX_LOCKED_BUFFER);
}

/** Maps and locks one Buffer; the limit has been checked by the caller. */
function mapLocked(size: number): Buffer {
  const calls = memoryCalls();
  const mapped = calls.mapAnonymousBuffer(size);
  if (typeof mapped === 'number') {
    throw systemError({
      syscall: 'mmap',
      errno: mapped,
      detail: `${size} bytes`,
      reason: 'unexpected-errno',
      hint: 'mmap of an anonymous mapping failed: out of memory, or of mappings (each locked Buffer is one; sysctl vm.max_map_count)',
    });
  }
  const rc = calls.mlockBuffer(mapped, 0);
  // On failure the mapping is left to the garbage collector (its finalizer unmaps it): it is not locked.
  if (rc < 0) throw lockError('mlock', rc, `a ${size}-byte Buffer`);
  // The mapping belongs to this thread's Node environment, which unmaps it when torn down (a Worker exiting), so it
  // must not move to another thread (postMessage transfer list). Node 22+ refuses to transfer it by itself; Node 20
  // does transfer it, and then unmaps memory the receiver still uses. Marked untransferable, Node 20 copies it
  // instead. Not on 22+: there the mark makes Node abort when it detaches the Buffer at the Worker's exit.
  if (NODE_MAJOR < 22) markAsUntransferable(mapped.buffer);
  lockedBuffers.set(mapped, { bytes: pageRound(size), locked: true });
  // Dropped references are pruned when counted; count now and then so a daemon that never asks does not pile them up.
  if (liveLockedBuffers.size >= pruneAt) {
    lockedBufferBytes();
    pruneAt = Math.max(64, liveLockedBuffers.size * 2);
  }
  liveLockedBuffers.add(new WeakRef(mapped));
  return mapped;
}

/**
 * A Buffer of `size` bytes (zero-filled) whose memory is locked and resident: reads and writes into it never wait
 * for a page-in, and it is never swapped out. Its memory is a mapping of its own, unmapped when the Buffer is
 * collected (or its Worker exits), which also ends the lock; unlockBuffer() ends the lock earlier. Costs whole
 * pages: allocate a few large ones (or a LockedBufferPool) and reuse them, not many small ones.
 */
export function allocLockedBuffer(size: number): Buffer {
  assertSize(size, 'size');
  checkMemlockLimit(pageRound(size), `a ${size}-byte locked Buffer`, 'mlock');
  return mapLocked(size);
}

function stateOf(buffer: unknown, name: string): LockedBufferState {
  const state = Buffer.isBuffer(buffer) ? lockedBuffers.get(buffer) : undefined;
  if (!state) {
    throw invalidArgValue(
      `The "${name}" argument must be a Buffer returned by allocLockedBuffer() or a LockedBufferPool (not a copy or a slice). Received ${util.inspect(buffer, { depth: 0, maxArrayLength: 0 })}`,
    );
  }
  return state;
}

/** Whether `buffer` came from allocLockedBuffer() / a LockedBufferPool and is still locked. */
export function isLockedBuffer(buffer: unknown): boolean {
  return Buffer.isBuffer(buffer) && lockedBuffers.get(buffer)?.locked === true;
}

/**
 * Ends the lock on a Buffer from allocLockedBuffer(); it stays usable (its memory is freed when it is collected).
 * Returns the bytes unlocked (0 when it was unlocked already).
 */
export function unlockBuffer(buffer: Buffer): number {
  const state = stateOf(buffer, 'buffer');
  if (!state.locked) return 0;
  if (buffer.byteLength === 0) {
    // Detached (its memory moved away): the native call would see no memory and unlock nothing.
    throw invalidState('This locked Buffer was detached; its memory is no longer reachable from here');
  }
  const rc = memoryCalls().munlockBuffer(buffer);
  if (rc < 0) throw lockError('munlock', rc, `a ${buffer.length}-byte Buffer`);
  state.locked = false;
  return state.bytes;
}

function lockedBufferBytes(): number {
  let bytes = 0;
  for (const ref of liveLockedBuffers) {
    const buffer = ref.deref();
    const state = buffer && lockedBuffers.get(buffer);
    if (!state?.locked) liveLockedBuffers.delete(ref);
    else bytes += state.bytes;
  }
  return bytes;
}

export interface LockedBufferPoolOptions {
  /** Bytes per Buffer. */
  bufferSize: number;
  /** Buffers in the pool, all locked up front. */
  count: number;
}

/**
 * A fixed set of locked Buffers for a daemon's reads and writes, all allocated and locked at construction (all or
 * none: the limit is checked for the whole pool first). acquire() hands one out, release() takes it back.
 *
 *   const pool = new LockedBufferPool({ bufferSize: 1 << 20, count: 16 });
 *   const buf = pool.acquire() ?? Buffer.allocUnsafe(1 << 20); // locked while the pool has one
 *   ... fs.readSync(fd, buf, 0, length, offset) ...
 *   if (isLockedBuffer(buf)) pool.release(buf);
 */
export class LockedBufferPool {
  readonly bufferSize: number;
  readonly count: number;
  private readonly free: Buffer[];
  private readonly all: Set<Buffer>;
  private closed = false;

  constructor(options: LockedBufferPoolOptions) {
    assertObject(options, 'options');
    assertSize(options.bufferSize, 'options.bufferSize');
    assertSize(options.count, 'options.count');
    this.bufferSize = options.bufferSize;
    this.count = options.count;
    checkMemlockLimit(pageRound(options.bufferSize) * options.count, `a pool of ${options.count} locked Buffers of ${options.bufferSize} bytes`, 'mlock');
    const made: Buffer[] = [];
    try {
      for (let i = 0; i < options.count; i++) made.push(mapLocked(options.bufferSize));
    } catch (err) {
      for (const buffer of made) unlockBuffer(buffer);
      throw err;
    }
    this.free = made;
    this.all = new Set(made);
  }

  /** Buffers not handed out. */
  get available(): number {
    return this.free.length;
  }

  /** A locked Buffer of bufferSize bytes (contents left from its last use), or undefined when all are in use. */
  acquire(): Buffer | undefined {
    if (this.closed) throw invalidState('LockedBufferPool is closed');
    return this.free.pop();
  }

  /** Gives back a Buffer from acquire(). */
  release(buffer: Buffer): void {
    if (!this.all.has(buffer)) {
      throw invalidArgValue('The "buffer" argument must be a Buffer acquired from this pool (not a slice of one)');
    }
    if (this.free.includes(buffer)) throw invalidState('This Buffer was released to the pool already');
    if (!this.closed) this.free.push(buffer);
  }

  /** Unlocks every Buffer of the pool (those handed out stay usable); returns the bytes unlocked. */
  close(): number {
    if (this.closed) return 0;
    this.closed = true;
    let bytes = 0;
    for (const buffer of this.all) bytes += unlockBuffer(buffer);
    this.free.length = 0;
    return bytes;
  }
}

/** Locked bytes per scope: code mappings, locked Buffers, everything else, and VmLck. */
export function lockedMemory(): LockedMemory {
  const total = lockedBytes();
  const code = readCode()
    .filter((m) => m.locked)
    .reduce((sum, m) => sum + m.size, 0);
  const buffers = lockedBufferBytes();
  return { code, buffers, other: Math.max(0, total - code - buffers), total };
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

/** /proc/self/oom_score_adj: -1000 (never OOM-killed) to 1000. */
export function getOomScoreAdj(): number {
  return readOomScoreAdj('self');
}

/** Writes /proc/self/oom_score_adj and reads it back. Going below the lowest value set before needs CAP_SYS_RESOURCE. */
export function setOomScoreAdj(value: number): number {
  assertInteger(value, 'value', OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX);
  const path = oomScoreAdjPath('self');
  try {
    fs.writeFileSync(path, String(value));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const errno = typeof e.errno === 'number' ? e.errno : -EACCES;
    const denied = Math.abs(errno) === EACCES;
    throw systemError({
      syscall: 'write',
      errno,
      path,
      detail: `oom_score_adj ${value}`,
      reason: denied ? 'missing-capability' : 'unexpected-errno',
      hint: denied
        ? `lowering oom_score_adj below the lowest value this process had (now ${getOomScoreAdj()}) needs CAP_SYS_RESOURCE; or set it before start: systemd \`OOMScoreAdjust=${value}\`, \`docker run --oom-score-adj ${value}\`, \`choom -n ${value} -- COMMAND\``
        : 'writing oom_score_adj failed',
    });
  }
  const after = getOomScoreAdj();
  if (after !== value) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_VERIFY',
      syscall: 'write',
      path,
      reason: 'verification-failed',
      message: `ERR_IO_FLUSHER_VERIFY: oom_score_adj reads back as ${after}, not ${value}`,
      hint: 'something else wrote it concurrently',
    });
  }
  return after;
}

/** What `io-flusher check` shows of a process's forward-progress settings, read from /proc (any process). */
export interface MemoryState {
  /** VmLck: bytes in locked mappings (a mapping locked with MLOCK_ONFAULT counts whole, resident or not). */
  lockedBytes: number;
  memlockLimit: MemlockLimit;
  oomScoreAdj: number;
}

export function memoryState(pid: number | 'self' = 'self'): MemoryState {
  return {
    lockedBytes: lockedBytesFromStatus(readStatus(pid)),
    memlockLimit: readMemlockLimit(pid),
    oomScoreAdj: readOomScoreAdj(pid),
  };
}
