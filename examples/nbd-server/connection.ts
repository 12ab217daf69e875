/**
 * One client connection: fixed newstyle negotiation, then the transmission phase with simple replies.
 *
 * Requests are served concurrently (replies may go out of order, each echoing its request's cookie), with the
 * ordering the protocol asks for and a little more: a request waits for every earlier in-flight request whose range
 * overlaps its own when either of them writes, and FLUSH waits for every earlier in-flight write, then fdatasyncs.
 * So a FLUSH covers every write that was replied to before it (and every write received before it), and a write
 * with FUA is on stable storage before its reply.
 */
import type { Socket } from 'node:net';
import type { BackingFile } from './backing-file';
import * as P from './protocol';

export type Logger = (message: string) => void;

export interface ExportConfig {
  /** The export's name; the empty name (the "default export") is accepted as well. */
  name: string;
  file: BackingFile;
}

/** The client broke a MUST of the protocol, or sent something we cannot stay in sync with: disconnect. */
class ProtocolViolation extends Error {}

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

export const TRANSMISSION_FLAGS =
  P.NBD_FLAG_HAS_FLAGS |
  P.NBD_FLAG_SEND_FLUSH |
  P.NBD_FLAG_SEND_FUA |
  P.NBD_FLAG_SEND_TRIM |
  P.NBD_FLAG_SEND_WRITE_ZEROES |
  // A FLUSH on any connection fdatasyncs the one backing file, covering writes completed on every connection.
  P.NBD_FLAG_CAN_MULTI_CONN;

/** Advertised with NBD_INFO_BLOCK_SIZE: any alignment works; 4 KiB is the preferred size; 32 MiB the largest. */
export const BLOCK_SIZE = { minimum: 1, preferred: 4096, maximum: P.MAX_PAYLOAD };

/** A client gets this long to finish negotiating (transmission may then be idle for as long as it likes). */
const NEGOTIATION_TIMEOUT_MS = 30_000;
const MAX_INFLIGHT = 64;
const MAX_INFLIGHT_BYTES = 64 * 1024 * 1024;

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
  private inflight: InFlight[] = [];
  private inflightBytes = 0;
  private capacityWaiters: Array<() => void> = [];
  /** Resolves once nothing of the connection is in flight, its replies are sent, and the socket is closed. */
  readonly finished: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly exp: ExportConfig,
    private readonly log: Logger,
    readonly id: number,
  ) {
    this.reader = new P.SocketReader(socket);
    socket.on('drain', () => this.signalCapacity());
    socket.on('close', () => this.signalCapacity());
    this.finished = this.run();
  }

  /** Server shutdown: read no more requests, let those in flight finish and reply, then close. */
  stop(): void {
    this.reader.abort(new P.ReadAborted('server shutting down'));
  }

  private async run(): Promise<void> {
    let graceful = false;
    const onTimeout = (): void => this.reader.abort(new ProtocolViolation(`no transmission after ${NEGOTIATION_TIMEOUT_MS / 1000} s of negotiation`));
    this.socket.setTimeout(NEGOTIATION_TIMEOUT_MS, onTimeout);
    try {
      const transmission = await this.negotiate();
      this.socket.setTimeout(0);
      this.socket.off('timeout', onTimeout);
      graceful = transmission ? await this.transmit() : true;
    } catch (err) {
      if (err instanceof P.EndOfStream) {
        // The client closed its side: replies to what it sent before still go out (the socket is half-open).
        if (err.midMessage) this.log(`connection ${this.id}: closed by the client in the middle of a message`);
        else graceful = true;
      } else if (err instanceof P.ReadAborted) {
        graceful = true;
      } else if (err instanceof ProtocolViolation) {
        this.log(`connection ${this.id}: ${err.message}; disconnecting`);
      } else {
        this.log(`connection ${this.id}: ${(err as Error).message}`);
      }
    }
    await this.drain();
    const closed = new Promise<void>((resolve) => (this.socket.closed ? resolve() : this.socket.once('close', () => resolve())));
    if (graceful && !this.socket.destroyed) {
      this.socket.end(); // after the queued replies
      // A client that never closes its side must not keep the socket open for ever.
      setTimeout(() => this.socket.destroy(), 2000).unref();
    } else {
      this.socket.destroy();
    }
    await closed;
  }

  private matches(name: string): boolean {
    return name === this.exp.name || name === '';
  }

  // ---- negotiation -------------------------------------------------------------------------------------------

  private sendOption(option: number, type: number, data?: Buffer): void {
    this.socket.write(P.optionReply(option, type, data));
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
    this.socket.write(greeting);

    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if (clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) {
      throw new ProtocolViolation(`unknown client flags ${hex(clientFlags)}`);
    }
    this.fixedNewstyle = (clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;

    for (;;) {
      const header = await this.reader.read(16);
      if (!header.subarray(0, 8).equals(P.IHAVEOPT)) throw new ProtocolViolation('bad option magic');
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      const optionName = P.OPTION_NAMES[option] ?? `${option}`;
      if (length > P.MAX_OPTION_LENGTH) throw new ProtocolViolation(`option ${optionName} with ${length} bytes of data`);
      const data = await this.reader.read(length);

      switch (option) {
        case P.NBD_OPT_EXPORT_NAME: {
          const name = data.toString('utf8');
          // This option has no error reply: the only way to refuse is to close.
          if (!this.matches(name)) throw new ProtocolViolation(`NBD_OPT_EXPORT_NAME for unknown export "${name}"`);
          const reply = Buffer.alloc(this.noZeroes ? 10 : 134); // 124 zero bytes unless NO_ZEROES
          reply.writeBigUInt64BE(BigInt(this.exp.file.size), 0);
          reply.writeUInt16BE(TRANSMISSION_FLAGS, 8);
          this.socket.write(reply);
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
    const invalid = (message: string): false => {
      this.optionError(option, P.NBD_REP_ERR_INVALID, message);
      return false;
    };
    if (data.length < 6) return invalid('option data too short');
    const nameLength = data.readUInt32BE(0);
    if (4 + nameLength + 2 > data.length) return invalid('export name length beyond the option data');
    const name = data.subarray(4, 4 + nameLength).toString('utf8');
    const count = data.readUInt16BE(4 + nameLength);
    if (4 + nameLength + 2 + 2 * count !== data.length) return invalid('information request count does not match the option length');
    const requested = new Set<number>();
    for (let i = 0; i < count; i++) requested.add(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
    if (!this.matches(name)) {
      this.optionError(option, P.NBD_REP_ERR_UNKNOWN, `no export named "${name}" (this server has "${this.exp.name}")`);
      return false;
    }

    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(P.NBD_INFO_EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(this.exp.file.size), 2);
    exportInfo.writeUInt16BE(TRANSMISSION_FLAGS, 10);
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
      const magic = header.readUInt32BE(0);
      if (magic !== P.NBD_REQUEST_MAGIC) throw new ProtocolViolation(`bad request magic ${hex(magic)}`);
      const request: Request = {
        flags: header.readUInt16BE(4),
        type: header.readUInt16BE(6),
        cookie: Buffer.from(header.subarray(8, 16)),
        offset: header.readBigUInt64BE(16),
        length: header.readUInt32BE(24),
      };
      if (request.type === P.NBD_CMD_WRITE) {
        if (request.length > P.MAX_PAYLOAD) {
          // Too large to hold: read it past to stay in sync, and refuse it.
          await this.reader.skip(request.length);
          this.reply(request.cookie, P.NBD_EINVAL);
          continue;
        }
        request.payload = await this.reader.read(request.length);
      }
      if (request.type === P.NBD_CMD_DISC) return true; // run() lets in-flight requests finish, then closes
      this.dispatch(request);
    }
  }

  private dispatch(request: Request): void {
    const writes = request.type === P.NBD_CMD_WRITE || request.type === P.NBD_CMD_TRIM || request.type === P.NBD_CMD_WRITE_ZEROES;
    const start = request.offset;
    const end = request.offset + BigInt(request.length);
    const deps =
      request.type === P.NBD_CMD_FLUSH
        ? this.inflight.filter((o) => o.writes)
        : this.inflight.filter((o) => (o.writes || writes) && o.start < end && start < o.end);
    const bytes = request.type === P.NBD_CMD_READ || request.type === P.NBD_CMD_WRITE ? request.length : 0;
    const entry: InFlight = { start, end, writes, done: Promise.resolve() };
    this.inflight.push(entry);
    this.inflightBytes += bytes;
    entry.done = (async () => {
      if (deps.length) await Promise.all(deps.map((d) => d.done));
      const { error, buffer } = await this.execute(request);
      this.reply(request.cookie, error, buffer);
    })()
      .catch((err: Error) => {
        this.log(`connection ${this.id}: internal error: ${err.stack ?? err.message}`);
        this.reply(request.cookie, P.NBD_EIO);
      })
      .finally(() => {
        this.inflight.splice(this.inflight.indexOf(entry), 1);
        this.inflightBytes -= bytes;
        this.signalCapacity();
      });
  }

  /** Runs one request. A successful READ returns its reply buffer, with 16 bytes left free for the header. */
  private async execute(request: Request): Promise<{ error: number; buffer?: Buffer }> {
    const { type, flags, offset, length } = request;
    const file = this.exp.file;
    const inRange = offset + BigInt(length) <= BigInt(file.size);
    const position = Number(offset);
    const fua = (flags & P.NBD_CMD_FLAG_FUA) !== 0;
    const ok = { error: 0 };
    // FUA is valid on every command (the protocol says to accept it even where it means nothing).
    const flagsOnly = (allowed: number): boolean => (flags & ~allowed) === 0;
    try {
      switch (type) {
        case P.NBD_CMD_READ: {
          if (!flagsOnly(P.NBD_CMD_FLAG_FUA) || length > P.MAX_PAYLOAD || !inRange) return { error: P.NBD_EINVAL };
          const buffer = Buffer.allocUnsafe(P.NBD_SIMPLE_REPLY_SIZE + length);
          await file.read(buffer.subarray(P.NBD_SIMPLE_REPLY_SIZE), position);
          return { error: 0, buffer };
        }
        case P.NBD_CMD_WRITE:
          if (!flagsOnly(P.NBD_CMD_FLAG_FUA)) return { error: P.NBD_EINVAL };
          if (!inRange) return { error: P.NBD_ENOSPC };
          await file.write(request.payload!, position);
          if (fua) await file.sync();
          return ok;
        case P.NBD_CMD_FLUSH:
          if (!flagsOnly(P.NBD_CMD_FLAG_FUA)) return { error: P.NBD_EINVAL };
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

  private reply(cookie: Buffer, error: number, buffer?: Buffer): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    const out = buffer && error === 0 ? buffer : Buffer.allocUnsafe(P.NBD_SIMPLE_REPLY_SIZE);
    out.writeUInt32BE(P.NBD_SIMPLE_REPLY_MAGIC, 0);
    out.writeUInt32BE(error, 4);
    cookie.copy(out, 8);
    this.socket.write(out);
  }

  // ---- flow control --------------------------------------------------------------------------------------------

  private signalCapacity(): void {
    const waiters = this.capacityWaiters;
    this.capacityWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Bounds the requests in flight, the bytes they hold, and the replies queued on the socket. */
  private async waitForCapacity(): Promise<void> {
    while (
      !this.socket.destroyed &&
      (this.inflight.length >= MAX_INFLIGHT ||
        (this.inflight.length > 0 && this.inflightBytes >= MAX_INFLIGHT_BYTES) ||
        this.socket.writableLength >= MAX_INFLIGHT_BYTES)
    ) {
      await new Promise<void>((resolve) => this.capacityWaiters.push(resolve));
    }
  }

  private async drain(): Promise<void> {
    while (this.inflight.length) await Promise.all(this.inflight.map((o) => o.done));
  }
}
