/**
 * Locking the code scope: the text and read-only data of node, its shared libraries and native addons, which V8
 * never frees or discards, so locking them cannot make it abort (the V8 heap is never locked). See: man 2 mlock,
 * man 5 proc (smaps).
 */
import { IoFlusherError } from './errors';
import { ENOMEM, MLOCK_ONFAULT } from './kernel-constants';
import { lockedBufferBytes } from './locked-buffers';
import { checkMemlockLimit, lockedBytes, lockError, memoryCalls } from './memlock-limit';
import { isMapped, Mapping, readSmaps } from './procfs';
import { assertObject, assertOneOf, invalidArgValue } from './validate';

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

/** Locked bytes per scope: code mappings, locked Buffers, everything else, and VmLck. */
export function lockedMemory(): LockedMemory {
  const total = lockedBytes();
  const code = readCode()
    .filter((m) => m.locked)
    .reduce((sum, m) => sum + m.size, 0);
  const buffers = lockedBufferBytes();
  return { code, buffers, other: Math.max(0, total - code - buffers), total };
}
