/**
 * Locked Buffers and their pool: each Buffer is an anonymous mapping of its own, so locking one locks nothing V8 or
 * malloc share, and the mapping goes away with the Buffer (collected, or its Worker torn down). See: man 2 mmap,
 * man 2 mlock.
 */
import * as util from 'node:util';
import { markAsUntransferable } from 'node:worker_threads';
import { systemError } from './errors';
import { checkMemlockLimit, lockError, memoryCalls } from './memlock-limit';
import { assertInteger, assertObject, invalidArgValue, invalidState } from './validate';

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

/** @internal Bytes of the locked Buffers not yet collected (for lockedMemory()). */
export function lockedBufferBytes(): number {
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
