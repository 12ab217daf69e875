/**
 * One client connection: fixed newstyle negotiation, then the transmission phase with simple replies.
 *
 * Requests are served concurrently (replies may go out of order, each echoing its request's cookie), with the
 * ordering the protocol asks for and a little more: a request waits for every earlier in-flight request whose range
 * overlaps its own when either of them writes, and FLUSH waits for every earlier in-flight write, then fdatasyncs.
 * So a FLUSH covers every write that was replied to before it (and every write received before it), and a write
 * with FUA is on stable storage before its reply.
 *
 * Resources are bounded whatever the client does (README.md, "Limits"): the handshake has a fixed deadline, at
 * most MAX_OPTIONS options, option data beyond MAX_OPTION_BUFFERED discarded as it arrives, and one option's replies
 * queued at a time; in transmission a request holds a slot and its payload bytes from its header until its reply is
 * in the kernel's socket buffer, so a client that does not read its replies stops being read from. Payload bytes
 * also come from a budget shared by every connection.
 */
import type { Socket } from 'node:net';
import type { BackingFile } from './backing-file';
import * as P from './protocol';

export type Logger = (message: string) => void;

export interface ExportConfig {
  /** The export's name; the empty name (the "default export") is accepted as well. */
  name: string;
  file: BackingFile;
  /** Advertise NBD_FLAG_READ_ONLY and answer WRITE, TRIM and WRITE_ZEROES with EPERM. */
  readOnly?: boolean;
}

export interface ConnectionLimits {
  /** From accept to the choice of an export, whatever the client sends meanwhile (not an idle timeout). */
  handshakeTimeoutMs: number;
  /**
   * The longest a client may take to accept one batch (up to 1 MiB) of the replies waiting for it, or to send the
   * payload of one WRITE, before it is disconnected. Either way it holds memory that other clients may need.
   */
  stallTimeoutMs: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = { handshakeTimeoutMs: 10_000, stallTimeoutMs: 30_000 };

/** Requests per connection, each counted from its header until its reply is handed to the kernel. */
export const MAX_REQUESTS_PER_CONNECTION = 64;
/** READ and WRITE payload bytes per connection, counted the same way. */
export const MAX_BYTES_PER_CONNECTION = 64 * 1024 * 1024;
/** Replies go to the socket in batches of at most this much; each batch accepted by the kernel is progress. */
const SEND_BATCH = 1024 * 1024;
/** The backing file is read in pieces this large, so the READ of a connection that died stops early. */
const READ_PIECE = 1024 * 1024;
/** After a clean close with every reply in the kernel, how long the client gets to close its side. */
const LINGER_MS = 2000;
/** After stop() (SIGTERM), how long new options and requests are still read and answered with a shutdown error. */
const SHUTDOWN_GRACE_MS = 2000;
/** What clientGone() writes to learn whether a client whose side ended is gone. */
const EMPTY = Buffer.alloc(0);

/**
 * Every READ and WRITE payload buffer (a READ's with 16 bytes in front for the reply header) is allocated here:
 * the one place to change to allocate them differently (e.g. from locked memory).
 */
export function allocateIoBuffer(bytes: number, slot?: Slot): Buffer {
  // A request that fits takes a locked buffer (server --mlock), held by its slot and given back with it: serving the
  // device then never waits for a page-in of its own buffers. The rest (larger requests, pool empty) are ordinary.
  if (lockedIoBuffers && slot && !slot.locked && bytes <= lockedIoBuffers.bufferSize) {
    const locked = lockedIoBuffers.acquire();
    if (locked) {
      slot.locked = locked;
      return locked.subarray(0, bytes);
    }
  }
  return Buffer.allocUnsafe(bytes);
}

/** What allocateIoBuffer takes locked buffers from: io-flusher's LockedBufferPool (server --mlock). */
export interface IoBufferPool {
  readonly bufferSize: number;
  acquire(): Buffer | undefined;
  release(buffer: Buffer): void;
}
let lockedIoBuffers: IoBufferPool | undefined;

/** Makes allocateIoBuffer take payload buffers from `pool` when they fit (undefined: never). */
export function useLockedIoBuffers(pool: IoBufferPool | undefined): void {
  lockedIoBuffers = pool;
}

/**
 * The memory for request and reply payloads, shared by every connection. A request waits, and its connection
 * reads nothing more, until its payload fits. First come, first served, so small requests cannot starve a large one.
 */
export class BufferBudget {
  private used = 0;
  private readonly waiters: Array<{ bytes: number; grant: () => void }> = [];

  constructor(readonly limit: number) {
    // A budget smaller than the largest request would make that request wait for ever.
    if (!(limit >= P.MAX_PAYLOAD)) throw new RangeError(`a buffer budget must hold one ${P.MAX_PAYLOAD}-byte request; got ${limit}`);
  }

  get inUse(): number {
    return this.used;
  }

  /**
   * Reserves `bytes`: `ready` is undefined when they were free at once, else resolves once they are. `withdraw`
   * gives them back, or stops waiting for them.
   */
  acquire(bytes: number): { ready?: Promise<void>; withdraw: () => void } {
    let withdrawn = false;
    if (this.waiters.length === 0 && this.used + bytes <= this.limit) {
      this.used += bytes;
      return {
        withdraw: () => {
          if (withdrawn) return;
          withdrawn = true;
          this.release(bytes);
        },
      };
    }
    let granted = false;
    let grant!: () => void;
    const ready = new Promise<void>((resolve) => {
      grant = () => {
        granted = true;
        resolve();
      };
    });
    const waiter = { bytes, grant };
    this.waiters.push(waiter);
    this.grantWaiting();
    const withdraw = (): void => {
      if (withdrawn) return;
      withdrawn = true;
      if (granted) {
        this.release(bytes);
      } else {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        this.grantWaiting();
      }
    };
    return { ready, withdraw };
  }

  private release(bytes: number): void {
    this.used -= bytes;
    this.grantWaiting();
  }

  private grantWaiting(): void {
    while (this.waiters.length && this.used + this.waiters[0]!.bytes <= this.limit) {
      const waiter = this.waiters.shift()!;
      this.used += waiter.bytes;
      waiter.grant();
    }
  }
}

/** The client broke a MUST of the protocol, or sent something we cannot stay in sync with: disconnect. */
class ProtocolViolation extends Error {}

/** The connection was dropped on purpose (deadline, stall, eviction); already logged. */
class ConnectionDropped extends Error {}

interface Request {
  flags: number;
  type: number;
  cookie: Buffer;
  offset: bigint;
  length: number;
  payload?: Buffer;
}

interface InFlight {
  start: bigint;
  end: bigint;
  writes: boolean;
  done: Promise<void>;
}

/** What a request holds from its header until its reply is in the kernel (or the connection is gone). */
interface Slot {
  bytes: number;
  reservation?: { withdraw: () => void };
  released: boolean;
  /** The locked pool buffer this request's payload lives in, given back when the slot is released. */
  locked?: Buffer;
}

export function transmissionFlags(readOnly: boolean): number {
  return (
    P.NBD_FLAG_HAS_FLAGS |
    P.NBD_FLAG_SEND_FLUSH |
    // A read-only export advertises nothing that writes (as nbdkit -r does): TRIM, WRITE_ZEROES and FUA, which only
    // means something for writes, are not offered; a client that sends them anyway gets EPERM (FUA elsewhere: EINVAL).
    (readOnly ? P.NBD_FLAG_READ_ONLY : P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES) |
    // A FLUSH on any connection fdatasyncs the one backing file, covering writes completed on every connection.
    P.NBD_FLAG_CAN_MULTI_CONN
  );
}

/** The commands that write: refused with EPERM on a read-only export. */
function writes(type: number): boolean {
  return type === P.NBD_CMD_WRITE || type === P.NBD_CMD_TRIM || type === P.NBD_CMD_WRITE_ZEROES;
}

/** Advertised with NBD_INFO_BLOCK_SIZE: any alignment works; 4 KiB is the preferred size; 32 MiB the largest. */
export const BLOCK_SIZE = { minimum: 1, preferred: 4096, maximum: P.MAX_PAYLOAD };

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/** Host errno code of a failed fs call to the NBD error value. */
function nbdError(code: string | undefined): number {
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return P.NBD_ENOSPC;
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return P.NBD_EPERM;
    case 'ENOMEM':
      return P.NBD_ENOMEM;
    default:
      return P.NBD_EIO;
  }
}

export class NbdConnection {
  private readonly reader: P.SocketReader;
  private fixedNewstyle = false;
  private noZeroes = false;
  private negotiating = true;
  /** Date.now() at accept. */
  readonly connectedAt = Date.now();
  private stopping = false;
  private optionsSeen = 0;
  private inflight: InFlight[] = [];
  /** Requests holding a slot, and the payload bytes they hold. */
  private slots = 0;
  private slotBytes = 0;
  private cancelled = 0;
  private changeWaiters: Array<() => void> = [];
  private readonly sendQueue: Array<{ data: Buffer; sent?: () => void }> = [];
  private sending = false;
  private batchStartedAt = 0;
  private stallTimer: NodeJS.Timeout | undefined;
  /** Completes the batch being written (its write callback, or the socket's close, whichever comes first). */
  private finishBatch: (() => void) | undefined;
  private readonly lost: Promise<void>;
  /**
   * Date.now() of the last whole option or request received, or reply batch accepted by the kernel. Bytes alone do
   * not count: a client trickling a header one byte at a time is idle.
   */
  lastActivity = Date.now();
  /**
   * Resolves once the connection needs no connection slot: nothing of it is in flight and its replies are in the
   * kernel (it is closing), or its socket is closed (what a request of it still holds is the shared budget, given
   * back as its READ stops at the next piece).
   */
  readonly settled: Promise<void>;
  private settle!: () => void;
  /** Resolves once nothing of the connection is in flight, its replies are sent, and the socket is closed. */
  readonly finished: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly exp: ExportConfig,
    private readonly log: Logger,
    readonly id: number,
    private readonly limits: ConnectionLimits = DEFAULT_LIMITS,
    private readonly budget: BufferBudget = new BufferBudget(4 * MAX_BYTES_PER_CONNECTION),
  ) {
    this.reader = new P.SocketReader(socket);
    this.settled = new Promise((resolve) => (this.settle = resolve));
    this.lost = new Promise((resolve) =>
      socket.once('close', () => {
        clearTimeout(this.stallTimer);
        this.finishBatch?.();
        this.pump(); // releases whatever is still queued
        this.signalChange();
        this.settle();
        resolve();
      }),
    );
    socket.on('end', () => this.clientGone());
    this.finished = this.run();
  }

  /**
   * True once nothing more can reach the client: the socket is destroyed (reset, dropped), or a write failed (EPIPE
   * from a peer that closed). The failed write destroys the socket only on the next tick, so this checks both.
   */
  private get gone(): boolean {
    return this.socket.destroyed || this.socket.errored !== null;
  }

  /**
   * True once nothing more can reach the client, checking first, if the client has shut down its sending side,
   * whether it is gone or only half-closed (and still reading its replies): a zero-length write sends nothing to a
   * half-closed peer, and the kernel fails it for one that is gone (ECONNRESET after a reset, EPIPE once a Unix
   * socket's peer closed), which destroys the socket. Without this check every READ such a client left in flight
   * would be read in full, holding its connection slot: a Unix socket whose peer closed reads as a plain end of
   * stream, and so does, on Node 20 and 22 (their libuv), a TCP reset that arrives together with data. (A TCP client
   * that closed normally, with a FIN, looks half-closed until a reply to it fails.)
   */
  private clientGone(): boolean {
    if (this.socket.readableEnded && !this.socket.destroyed && !this.socket.writableEnded) this.socket.write(EMPTY);
    return this.gone;
  }

  /** True until the client has chosen an export (or the connection ended). */
  get inNegotiation(): boolean {
    return this.negotiating;
  }

  /** True while a request or a reply holds anything of this connection. */
  get busy(): boolean {
    return this.slots > 0 || this.inflight.length > 0 || this.sending || this.sendQueue.length > 0;
  }

  /** Server shutdown: for a short while answer options and requests with shutdown errors, then read no more; let
   * those in flight finish and reply, then close. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    setTimeout(() => this.reader.abort(new P.ReadAborted('server shutting down')), SHUTDOWN_GRACE_MS).unref();
  }

  /** Makes room for a new client: only called when this connection is idle, or still negotiating. */
  evict(now: number): void {
    this.fail(
      this.negotiating
        ? `still negotiating after ${((now - this.connectedAt) / 1000).toFixed(1)} s while every connection slot is taken: closed to make room for a new client`
        : `idle for ${Math.round((now - this.lastActivity) / 1000)} s while every connection slot is taken: closed to make room for a new client`,
    );
  }

  /** Logs why, then drops the connection at once (whatever is queued for it is discarded). */
  private fail(reason: string): void {
    if (this.socket.destroyed) return;
    this.log(`connection ${this.id}: ${reason}; disconnecting`);
    this.reader.abort(new ConnectionDropped(reason));
    this.socket.destroy();
  }

  private async run(): Promise<void> {
    let graceful = false;
    const handshakeTimer = setTimeout(() => {
      if (this.negotiating) this.fail(`no export chosen within ${this.limits.handshakeTimeoutMs / 1000} s of connecting`);
    }, this.limits.handshakeTimeoutMs);
    try {
      const transmission = await this.negotiate();
      this.negotiating = false;
      clearTimeout(handshakeTimer);
      graceful = transmission ? await this.transmit() : true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (err instanceof P.EndOfStream || code === 'ECONNRESET' || code === 'EPIPE') {
        // The client closed its side: replies to what it sent before still go out (the socket is half-open), unless
        // it is gone (reset, or a Unix socket closed): then what it left in flight is dropped.
        if (this.gone && this.inflight.length + this.slots > 0) {
          this.log(`connection ${this.id}: the client is gone (${code ?? 'closed'}) with requests in flight`);
        } else if (code) {
          this.log(`connection ${this.id}: the client is gone (${code})`);
        } else if ((err as P.EndOfStream).midMessage) {
          this.log(`connection ${this.id}: closed by the client in the middle of a message`);
        } else {
          graceful = true;
        }
      } else if (err instanceof P.ReadAborted) {
        graceful = true;
      } else if (err instanceof ProtocolViolation) {
        this.log(`connection ${this.id}: ${err.message}; disconnecting`);
      } else if (!(err instanceof ConnectionDropped)) {
        this.log(`connection ${this.id}: ${(err as Error).message}`);
      }
    } finally {
      this.negotiating = false;
      clearTimeout(handshakeTimer);
    }
    await this.drain();
    if (this.cancelled) this.log(`connection ${this.id}: ${this.cancelled} requests not run: the client was gone`);
    // Every reply goes to the kernel first: its socket buffer keeps them for the client after we close.
    await this.sendQueueEmpty();
    this.settle();
    if (graceful && !this.socket.destroyed) {
      this.socket.end();
      // A client that never closes its side must not keep the socket open for ever.
      this.socket.once('finish', () => setTimeout(() => this.socket.destroy(), LINGER_MS).unref());
    } else {
      this.socket.destroy();
    }
    await this.lost;
  }

  private matches(name: string): boolean {
    return name === this.exp.name || name === '';
  }

  // ---- sending -----------------------------------------------------------------------------------------------

  /** Queues `data` for the client; `sent` runs once it is in the kernel's socket buffer, or the socket is gone. */
  private send(data: Buffer, sent?: () => void): void {
    if (this.socket.destroyed) {
      sent?.();
      return;
    }
    if (data.length <= SEND_BATCH) {
      this.sendQueue.push({ data, sent });
    } else {
      for (let offset = 0; offset < data.length; offset += SEND_BATCH) {
        const last = offset + SEND_BATCH >= data.length;
        this.sendQueue.push({ data: data.subarray(offset, offset + SEND_BATCH), sent: last ? sent : undefined });
      }
    }
    this.pump();
  }

  /** Hands the next batch to the socket once the previous one is in the kernel. */
  private pump(): void {
    if (this.socket.destroyed) {
      for (const entry of this.sendQueue.splice(0)) entry.sent?.();
    }
    if (this.sending) return;
    if (this.sendQueue.length === 0) {
      this.signalChange();
      return;
    }
    const batch: Array<{ data: Buffer; sent?: () => void }> = [];
    let bytes = 0;
    while (this.sendQueue.length && (batch.length === 0 || bytes + this.sendQueue[0]!.data.length <= SEND_BATCH)) {
      const entry = this.sendQueue.shift()!;
      batch.push(entry);
      bytes += entry.data.length;
    }
    this.sending = true;
    this.batchStartedAt = Date.now();
    this.armStallTimer();
    let done = false;
    const accepted = (): void => {
      if (done) return;
      done = true;
      this.sending = false;
      this.lastActivity = Date.now();
      for (const entry of batch) entry.sent?.();
      this.pump();
    };
    // A destroyed socket may drop the write callback: its 'close' completes the batch instead.
    this.finishBatch = accepted;
    this.socket.cork();
    for (let i = 0; i < batch.length - 1; i++) this.socket.write(batch[i]!.data);
    this.socket.write(batch[batch.length - 1]!.data, accepted);
    this.socket.uncork();
  }

  /**
   * One timer per connection, not one per batch: it fires at the earliest moment the current batch can have
   * stalled, and re-arms itself for the batch in progress then, if any.
   */
  private armStallTimer(): void {
    if (this.stallTimer) return;
    const check = (): void => {
      this.stallTimer = undefined;
      if (!this.sending || this.socket.destroyed) return;
      const waited = Date.now() - this.batchStartedAt;
      if (waited >= this.limits.stallTimeoutMs) {
        this.fail(`the client took none of its replies for ${this.limits.stallTimeoutMs / 1000} s`);
        return;
      }
      this.stallTimer = setTimeout(check, this.limits.stallTimeoutMs - waited).unref();
    };
    this.stallTimer = setTimeout(check, this.limits.stallTimeoutMs).unref();
  }

  private async sendQueueEmpty(): Promise<void> {
    while (!this.socket.destroyed && (this.sending || this.sendQueue.length)) await this.waitForChange();
  }

  // ---- negotiation -------------------------------------------------------------------------------------------

  private sendOption(option: number, type: number, data?: Buffer): void {
    this.send(P.optionReply(option, type, data));
  }

  private optionError(option: number, type: number, message: string): void {
    this.sendOption(option, type, Buffer.from(message, 'utf8'));
  }

  /** True when transmission starts; false when the client aborted. */
  private async negotiate(): Promise<boolean> {
    const greeting = Buffer.alloc(18);
    P.NBDMAGIC.copy(greeting, 0);
    P.IHAVEOPT.copy(greeting, 8);
    greeting.writeUInt16BE(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES, 16);
    this.send(greeting);

    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if (clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) {
      throw new ProtocolViolation(`unknown client flags ${hex(clientFlags)}`);
    }
    this.fixedNewstyle = (clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;

    for (;;) {
      // Backpressure: the next option is read only once the client has taken the replies to the last one.
      await this.sendQueueEmpty();
      const header = await this.reader.read(16);
      if (!header.subarray(0, 8).equals(P.IHAVEOPT)) throw new ProtocolViolation('bad option magic');
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      const optionName = P.OPTION_NAMES[option] ?? `${option}`;
      if (++this.optionsSeen > P.MAX_OPTIONS) throw new ProtocolViolation(`more than ${P.MAX_OPTIONS} options without choosing an export`);
      if (length > P.MAX_OPTION_DATA) throw new ProtocolViolation(`option ${optionName} with ${length} bytes of data (more than ${P.MAX_OPTION_DATA})`);
      // NBD_OPT_EXPORT_NAME has no error reply: a name over the protocol's limit can only be refused by closing.
      if (option === P.NBD_OPT_EXPORT_NAME && length > P.MAX_STRING) {
        throw new ProtocolViolation(`NBD_OPT_EXPORT_NAME with a ${length}-byte name (at most ${P.MAX_STRING})`);
      }
      // Data too long to parse is dropped as it arrives (never held), and the option gets an error reply below.
      let data: Buffer | undefined;
      if (length <= P.MAX_OPTION_BUFFERED) data = await this.reader.read(length);
      else await this.reader.skip(length);
      this.lastActivity = Date.now();

      if (this.stopping) {
        if (option === P.NBD_OPT_ABORT) {
          this.sendOption(option, P.NBD_REP_ACK);
          return false;
        }
        // NBD_OPT_EXPORT_NAME has no error reply: closing is the only answer.
        if (option === P.NBD_OPT_EXPORT_NAME || !this.fixedNewstyle) throw new ProtocolViolation('option received while the server shuts down');
        this.optionError(option, P.NBD_REP_ERR_SHUTDOWN, 'the server is shutting down');
        continue;
      }

      switch (option) {
        case P.NBD_OPT_EXPORT_NAME: {
          const name = data!.toString('utf8'); // at most MAX_STRING bytes (checked above), so it was read
          // This option has no error reply: the only way to refuse is to close.
          if (!this.matches(name)) throw new ProtocolViolation(`NBD_OPT_EXPORT_NAME for unknown export ${P.printable(name)}`);
          const reply = Buffer.alloc(this.noZeroes ? 10 : 134); // 124 zero bytes unless NO_ZEROES
          reply.writeBigUInt64BE(BigInt(this.exp.file.size), 0);
          reply.writeUInt16BE(transmissionFlags(this.exp.readOnly ?? false), 8);
          this.send(reply);
          return true;
        }
        case P.NBD_OPT_ABORT:
          this.sendOption(option, P.NBD_REP_ACK);
          return false;
        case P.NBD_OPT_LIST: {
          if (length !== 0) {
            this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          const name = Buffer.from(this.exp.name, 'utf8');
          const entry = Buffer.alloc(4 + name.length);
          entry.writeUInt32BE(name.length, 0);
          name.copy(entry, 4);
          this.sendOption(option, P.NBD_REP_SERVER, entry);
          this.sendOption(option, P.NBD_REP_ACK);
          break;
        }
        case P.NBD_OPT_INFO:
        case P.NBD_OPT_GO:
          if (!data) {
            // The most a name (4096 bytes) and its fixed fields take leaves room for 125 information requests: more
            // than any client asks for (each kind counts once), and more than this server will parse.
            this.optionError(option, P.NBD_REP_ERR_TOO_BIG, `${length} bytes of option data: more than this server parses (${P.MAX_OPTION_BUFFERED})`);
            break;
          }
          if (this.info(option, data) && option === P.NBD_OPT_GO) return true;
          break;
        default:
          // Without fixed newstyle the client may not understand an error reply: the protocol says close.
          if (!this.fixedNewstyle) throw new ProtocolViolation(`unsupported option ${optionName} from a client without fixed newstyle`);
          this.optionError(option, P.NBD_REP_ERR_UNSUP, `option ${optionName} is not supported by this server`);
      }
    }
  }

  /** NBD_OPT_INFO / NBD_OPT_GO. True when the export was described and ACKed. */
  private info(option: number, data: Buffer): boolean {
    const refuse = (type: number, message: string): false => {
      this.optionError(option, type, message);
      return false;
    };
    if (data.length < 6) return refuse(P.NBD_REP_ERR_INVALID, 'option data too short');
    const nameLength = data.readUInt32BE(0);
    if (4 + nameLength + 2 > data.length) return refuse(P.NBD_REP_ERR_INVALID, 'export name length beyond the option data');
    if (nameLength > P.MAX_STRING) return refuse(P.NBD_REP_ERR_TOO_BIG, `export name of ${nameLength} bytes (at most ${P.MAX_STRING})`);
    const name = data.subarray(4, 4 + nameLength).toString('utf8');
    const count = data.readUInt16BE(4 + nameLength);
    if (4 + nameLength + 2 + 2 * count !== data.length) return refuse(P.NBD_REP_ERR_INVALID, 'information request count does not match the option length');
    const requested = new Set<number>();
    for (let i = 0; i < count; i++) requested.add(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
    if (!this.matches(name)) {
      return refuse(P.NBD_REP_ERR_UNKNOWN, `no export named ${P.printable(name)} (this server has ${P.printable(this.exp.name)})`);
    }

    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(P.NBD_INFO_EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(this.exp.file.size), 2);
    exportInfo.writeUInt16BE(transmissionFlags(this.exp.readOnly ?? false), 10);
    this.sendOption(option, P.NBD_REP_INFO, exportInfo);
    if (requested.has(P.NBD_INFO_NAME)) {
      const canonical = Buffer.from(this.exp.name, 'utf8');
      const info = Buffer.alloc(2 + canonical.length);
      info.writeUInt16BE(P.NBD_INFO_NAME, 0);
      canonical.copy(info, 2);
      this.sendOption(option, P.NBD_REP_INFO, info);
    }
    // Sent whether asked for or not (the protocol allows it): minimum 1 means no alignment is required.
    const blockSize = Buffer.alloc(14);
    blockSize.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 0);
    blockSize.writeUInt32BE(BLOCK_SIZE.minimum, 2);
    blockSize.writeUInt32BE(BLOCK_SIZE.preferred, 6);
    blockSize.writeUInt32BE(BLOCK_SIZE.maximum, 10);
    this.sendOption(option, P.NBD_REP_INFO, blockSize);
    this.sendOption(option, P.NBD_REP_ACK);
    return true;
  }

  // ---- transmission ------------------------------------------------------------------------------------------

  /** Serves requests until NBD_CMD_DISC (returns true) or an error (throws). */
  private async transmit(): Promise<boolean> {
    for (;;) {
      await this.waitForCapacity();
      const header = await this.reader.read(P.NBD_REQUEST_SIZE);
      this.lastActivity = Date.now();
      const magic = header.readUInt32BE(0);
      if (magic !== P.NBD_REQUEST_MAGIC) throw new ProtocolViolation(`bad request magic ${hex(magic)}`);
      const request: Request = {
        flags: header.readUInt16BE(4),
        type: header.readUInt16BE(6),
        cookie: Buffer.from(header.subarray(8, 16)),
        offset: header.readBigUInt64BE(16),
        length: header.readUInt32BE(24),
      };
      if (request.type === P.NBD_CMD_DISC) return true; // run() lets in-flight requests finish, then closes
      const slot = this.takeSlot();
      try {
        await this.admit(request, slot);
      } catch (err) {
        // The connection failed while this request was being received: what it holds goes back (the shared
        // budget above all, which other connections wait for).
        this.releaseSlot(slot);
        throw err;
      }
    }
  }

  /** Refuses the request, or reserves its payload bytes, receives a WRITE's payload and dispatches it. */
  private async admit(request: Request, slot: Slot): Promise<void> {
    const refusal = this.stopping
      ? P.NBD_ESHUTDOWN
      : this.exp.readOnly && writes(request.type)
        ? P.NBD_EPERM
        : request.type === P.NBD_CMD_WRITE && request.length > P.MAX_PAYLOAD
          ? P.NBD_EINVAL
          : 0;
    if (refusal) {
      // Refused without holding its payload: read past it to stay in sync.
      if (request.type === P.NBD_CMD_WRITE) await this.reader.skip(request.length);
      this.reply(request.cookie, refusal, slot);
      return;
    }
    if (request.type === P.NBD_CMD_WRITE || (request.type === P.NBD_CMD_READ && request.length <= P.MAX_PAYLOAD)) {
      const waiting = this.reserve(slot, request.length);
      if (waiting) await waiting;
    }
    if (request.type === P.NBD_CMD_WRITE) {
      request.payload = allocateIoBuffer(request.length, slot);
      if (!this.reader.tryReadInto(request.payload)) await this.receivePayload(request.payload);
    }
    this.dispatch(request, slot);
  }

  private takeSlot(): Slot {
    this.slots++;
    return { bytes: 0, released: false };
  }

  private releaseSlot(slot: Slot): void {
    if (slot.released) return;
    slot.released = true;
    this.slots--;
    this.slotBytes -= slot.bytes;
    slot.reservation?.withdraw();
    if (slot.locked) {
      lockedIoBuffers?.release(slot.locked);
      slot.locked = undefined;
    }
    this.signalChange();
  }

  /** Waits (only when it must) until `bytes` fit in this connection's share and in the shared budget. */
  private reserve(slot: Slot, bytes: number): Promise<void> | undefined {
    if (this.slotBytes > 0 && this.slotBytes + bytes > MAX_BYTES_PER_CONNECTION) return this.reserveSlowly(slot, bytes);
    slot.bytes = bytes;
    this.slotBytes += bytes;
    const reservation = this.budget.acquire(bytes);
    slot.reservation = reservation;
    return reservation.ready && this.awaitReservation(reservation.ready);
  }

  private async reserveSlowly(slot: Slot, bytes: number): Promise<void> {
    while (this.slotBytes > 0 && this.slotBytes + bytes > MAX_BYTES_PER_CONNECTION) {
      if (this.socket.destroyed) throw new P.EndOfStream(true);
      await this.waitForChange();
    }
    await this.reserve(slot, bytes); // fits this connection's share now: straight to the shared budget
  }

  private async awaitReservation(ready: Promise<void>): Promise<void> {
    await Promise.race([ready, this.lost]);
    if (this.socket.destroyed) throw new P.EndOfStream(true); // admit()'s caller gives the reservation back
  }

  /** A WRITE's payload, which must arrive within the stall timeout: meanwhile it holds budget others may need. */
  private async receivePayload(into: Buffer): Promise<void> {
    const timer = setTimeout(
      () => this.fail(`the ${into.length}-byte payload of a WRITE did not arrive within ${this.limits.stallTimeoutMs / 1000} s`),
      this.limits.stallTimeoutMs,
    );
    try {
      await this.reader.readInto(into);
    } finally {
      clearTimeout(timer);
    }
  }

  private dispatch(request: Request, slot: Slot): void {
    const writing = writes(request.type);
    const start = request.offset;
    const end = request.offset + BigInt(request.length);
    const deps =
      request.type === P.NBD_CMD_FLUSH
        ? this.inflight.filter((o) => o.writes)
        : this.inflight.filter((o) => (o.writes || writing) && o.start < end && start < o.end);
    const entry: InFlight = { start, end, writes: writing, done: Promise.resolve() };
    this.inflight.push(entry);
    entry.done = (async () => {
      if (deps.length) await Promise.all(deps.map((d) => d.done));
      // Nobody is left to answer: a request that has not started is dropped.
      if (this.clientGone()) {
        this.cancelled++;
        this.releaseSlot(slot);
        return;
      }
      const { error, buffer } = await this.execute(request, slot);
      this.reply(request.cookie, error, slot, buffer);
    })()
      .catch((err: Error) => {
        this.log(`connection ${this.id}: internal error: ${err.stack ?? err.message}`);
        this.reply(request.cookie, P.NBD_EIO, slot);
      })
      .finally(() => {
        this.inflight.splice(this.inflight.indexOf(entry), 1);
        // A reply that cannot reach the client holds nothing (the queue is discarded when the socket closes).
        if (this.gone) this.releaseSlot(slot);
        this.signalChange();
      });
  }

  /** Runs one request. A successful READ returns its reply buffer, with 16 bytes left free for the header. */
  private async execute(request: Request, slot: Slot): Promise<{ error: number; buffer?: Buffer }> {
    const { type, flags, offset, length } = request;
    const file = this.exp.file;
    const inRange = offset + BigInt(length) <= BigInt(file.size);
    const position = Number(offset);
    const fua = (flags & P.NBD_CMD_FLAG_FUA) !== 0;
    const ok = { error: 0 };
    // Where FUA is advertised it is valid on every command (the protocol says to accept it even where it means
    // nothing); a read-only export does not advertise it, so there it is a flag the command does not take: EINVAL.
    const fuaFlag = this.exp.readOnly ? 0 : P.NBD_CMD_FLAG_FUA;
    const flagsOnly = (allowed: number): boolean => (flags & ~allowed) === 0;
    try {
      switch (type) {
        case P.NBD_CMD_READ: {
          if (!flagsOnly(fuaFlag) || length > P.MAX_PAYLOAD || !inRange) return { error: P.NBD_EINVAL };
          const buffer = allocateIoBuffer(P.NBD_SIMPLE_REPLY_SIZE + length, slot);
          for (let done = 0; done < length; done += READ_PIECE) {
            if (this.clientGone()) return { error: P.NBD_EIO }; // stop reading for a client that is gone
            const piece = Math.min(READ_PIECE, length - done);
            const at = P.NBD_SIMPLE_REPLY_SIZE + done;
            await file.read(buffer.subarray(at, at + piece), position + done);
          }
          return { error: 0, buffer };
        }
        case P.NBD_CMD_WRITE:
          if (!flagsOnly(P.NBD_CMD_FLAG_FUA)) return { error: P.NBD_EINVAL };
          if (!inRange) return { error: P.NBD_ENOSPC };
          await file.write(request.payload!, position);
          if (fua) await file.sync();
          return ok;
        case P.NBD_CMD_FLUSH:
          if (!flagsOnly(fuaFlag)) return { error: P.NBD_EINVAL };
          await file.sync();
          return ok;
        case P.NBD_CMD_TRIM:
          // A hint the server may ignore, and this one does (Node has no fallocate(PUNCH_HOLE)): the range keeps
          // its data, which the protocol allows; the client may assume nothing about it until it writes it again.
          if (!flagsOnly(P.NBD_CMD_FLAG_FUA)) return { error: P.NBD_EINVAL };
          if (!inRange) return { error: P.NBD_EINVAL };
          return ok;
        case P.NBD_CMD_WRITE_ZEROES:
          if (!flagsOnly(P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE)) return { error: P.NBD_EINVAL };
          if (!inRange) return { error: P.NBD_ENOSPC };
          await file.writeZeroes(position, length);
          if (fua) await file.sync();
          return ok;
        default:
          return { error: P.NBD_EINVAL }; // unknown, or not advertised (CACHE, BLOCK_STATUS, RESIZE)
      }
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.log(`connection ${this.id}: ${P.COMMAND_NAMES[type] ?? type} at ${offset}+${length}: ${e.message}`);
      return { error: nbdError(e.code) };
    }
  }

  /** Queues a simple reply; the request's slot is released once the reply is in the kernel. */
  private reply(cookie: Buffer, error: number, slot: Slot, buffer?: Buffer): void {
    const out = buffer && error === 0 ? buffer : Buffer.allocUnsafe(P.NBD_SIMPLE_REPLY_SIZE);
    out.writeUInt32BE(P.NBD_SIMPLE_REPLY_MAGIC, 0);
    out.writeUInt32BE(error, 4);
    cookie.copy(out, 8);
    this.send(out, () => this.releaseSlot(slot));
  }

  // ---- flow control --------------------------------------------------------------------------------------------

  private signalChange(): void {
    const waiters = this.changeWaiters;
    this.changeWaiters = [];
    for (const wake of waiters) wake();
  }

  private waitForChange(): Promise<void> {
    return new Promise<void>((resolve) => this.changeWaiters.push(resolve));
  }

  /** Bounds the requests holding a slot and the payload bytes they hold (replies not yet in the kernel included). */
  private async waitForCapacity(): Promise<void> {
    while (
      !this.socket.destroyed &&
      (this.slots >= MAX_REQUESTS_PER_CONNECTION || (this.slots > 0 && this.slotBytes >= MAX_BYTES_PER_CONNECTION))
    ) {
      await this.waitForChange();
    }
  }

  private async drain(): Promise<void> {
    while (this.inflight.length) await Promise.all(this.inflight.map((o) => o.done));
  }
}
