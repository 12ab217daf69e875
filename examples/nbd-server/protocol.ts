/**
 * The NBD wire protocol as this example uses it: fixed newstyle negotiation, simple replies.
 * Reference: the NBD protocol document (NetworkBlockDevice/nbd, doc/proto.md). All integers are big-endian.
 */
import type { Socket } from 'node:net';

// Negotiation.
export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1'); // 0x4e42444d41474943
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1'); // 0x49484156454f5054
export const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n;

/** Handshake flags (server, 16 bits). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_FLAG_ERROR = 0x8000_0000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flags (16 bits). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

// Transmission.
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_REQUEST_SIZE = 28;
export const NBD_SIMPLE_REPLY_SIZE = 16;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;

/** Error values of the reply's error field (not the host's errno values, although they coincide on Linux). */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ESHUTDOWN = 108;

/** The largest READ or WRITE payload served (the Linux client sends at most 32 MiB: 65536 sectors). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** The protocol's limit on strings (export names, messages): 4096 bytes, without a terminating NUL. */
export const MAX_STRING = 4096;
/**
 * The most option data the server holds in memory to parse: a 4096-byte name plus the fixed fields of NBD_OPT_INFO /
 * NBD_OPT_GO and up to 125 information requests. Longer option data is discarded as it arrives, and the option
 * gets an error reply (see MAX_OPTION_DATA).
 */
export const MAX_OPTION_BUFFERED = MAX_STRING + 256;
/**
 * Option data beyond this disconnects the client: 64 MiB, the limit nbdkit 1.32 puts on option data, so every option
 * nbdkit answers this server answers too. Up to it the data is read and dropped (memory does not grow with it); a
 * client sending more than any option can hold is flooding, and reading on would only burn CPU until the handshake
 * deadline.
 */
export const MAX_OPTION_DATA = 64 * 1024 * 1024;
/**
 * Options per connection before it must choose an export; the next one disconnects. Not what keeps the server safe
 * (each option's replies are sent before the next option is read, and the handshake deadline bounds the time), but
 * a client still negotiating after this many options is flooding: libnbd's tools and qemu send 2 to 4, and nbdkit
 * 1.32 allows 32 (plus 32 per export after NBD_OPT_LIST), so this never refuses what nbdkit would answer. It cuts a
 * flood off after milliseconds of server time instead of at the deadline.
 */
export const MAX_OPTIONS = 1024;

export const OPTION_NAMES: Record<number, string> = {
  1: 'EXPORT_NAME', 2: 'ABORT', 3: 'LIST', 4: 'PEEK_EXPORT', 5: 'STARTTLS', 6: 'INFO', 7: 'GO', 8: 'STRUCTURED_REPLY',
  9: 'LIST_META_CONTEXT', 10: 'SET_META_CONTEXT', 11: 'EXTENDED_HEADERS',
};
export const COMMAND_NAMES: Record<number, string> = {
  0: 'READ', 1: 'WRITE', 2: 'DISC', 3: 'FLUSH', 4: 'TRIM', 5: 'CACHE', 6: 'WRITE_ZEROES', 7: 'BLOCK_STATUS', 8: 'RESIZE',
};

/** The peer closed the stream (cleanly between messages, or in the middle of one). */
export class EndOfStream extends Error {
  constructor(readonly midMessage: boolean) {
    super(midMessage ? 'connection closed in the middle of a message' : 'connection closed');
  }
}

/** Reading was stopped on purpose (server shutdown). */
export class ReadAborted extends Error {}

/**
 * Exact-length reads from a socket, with flow control: the socket is paused while more than `highWater` bytes are
 * buffered and nobody is waiting for them, so a client that sends faster than we serve is throttled by TCP / the
 * socket buffer rather than by our memory.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { need: number; wake: () => void } | undefined;
  private ended = false;
  private failure: Error | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly highWater = 256 * 1024,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered >= this.highWater && !(this.waiter && this.buffered < this.waiter.need)) socket.pause();
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('close', () => {
      // Closed (never just half-closed: that is 'end'): nothing received is worth parsing, since no reply can go out.
      this.ended = true;
      this.chunks = [];
      this.buffered = 0;
      this.wake();
    });
    socket.on('error', (err) => {
      this.failure ??= err;
      this.wake();
    });
  }

  /** Stops any pending and future read with `err`; what is buffered is dropped, never parsed. */
  abort(err: Error): void {
    this.failure ??= err;
    this.chunks = [];
    this.buffered = 0;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    if (waiter && (this.buffered >= waiter.need || this.ended || this.failure)) {
      this.waiter = undefined;
      waiter.wake();
    }
  }

  /**
   * Exactly `n` bytes. Throws EndOfStream if the peer closes first, or the socket's error. With `atLeast`, only
   * waits until that many bytes are buffered and returns nothing (for readInto).
   */
  async read(n: number): Promise<Buffer>;
  async read(n: 0, atLeast: number): Promise<Buffer>;
  async read(n: number, atLeast = n): Promise<Buffer> {
    while (this.buffered < atLeast) {
      if (this.failure) throw this.failure;
      if (this.ended) throw new EndOfStream(this.buffered > 0);
      this.socket.resume();
      await new Promise<void>((resolve) => {
        this.waiter = { need: atLeast, wake: resolve };
      });
    }
    return this.take(n);
  }

  /**
   * Fills `target` exactly, copying the data in as it arrives (so the bytes are never held twice). Throws like
   * read().
   */
  async readInto(target: Buffer): Promise<void> {
    let filled = 0;
    while (filled < target.length) {
      if (this.buffered === 0) await this.moreOfMessage();
      const k = Math.min(this.buffered, target.length - filled);
      this.copyOut(target, filled, k);
      filled += k;
    }
  }

  /** Waits for at least one more byte of a message whose header was read already: a close here is mid-message. */
  private async moreOfMessage(): Promise<void> {
    try {
      await this.read(0, 1);
    } catch (err) {
      throw err instanceof EndOfStream ? new EndOfStream(true) : err;
    }
  }

  /** Fills `target` at once and returns true if that many bytes are buffered already; else reads nothing. */
  tryReadInto(target: Buffer): boolean {
    if (this.buffered < target.length || this.failure) return false;
    this.copyOut(target, 0, target.length);
    return true;
  }

  /** Reads and drops `n` bytes as they arrive, without holding or copying them. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      if (this.buffered === 0) await this.moreOfMessage();
      const chunk = this.chunks[0]!;
      const k = Math.min(chunk.length, n);
      if (k === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(k);
      this.consumed(k);
      n -= k;
    }
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.consumed(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out, 0, n);
    return out;
  }

  /** Moves `n` buffered bytes into `target` at `offset`. */
  private copyOut(target: Buffer, offset: number, n: number): void {
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const k = Math.min(chunk.length, n - filled);
      chunk.copy(target, offset + filled, 0, k);
      filled += k;
      if (k === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(k);
    }
    this.consumed(n);
  }

  private consumed(n: number): void {
    this.buffered -= n;
    if (this.buffered < this.highWater && !this.ended) this.socket.resume();
  }
}

/**
 * A client-chosen string made safe to log or to echo in a reply: at most `max` characters, quoted, with control
 * characters, quotes and Unicode line separators escaped, so it can neither forge a log line nor grow a reply.
 */
export function printable(text: string, max = 64): string {
  const shown = text.length > max ? text.slice(0, max) : text;
  const quoted = JSON.stringify(shown).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return text.length > max ? `${quoted}... (${Buffer.byteLength(text)} bytes)` : quoted;
}

/** An option reply header (and its data). */
export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(20 + data.length);
  out.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type >>> 0, 12);
  out.writeUInt32BE(data.length, 16);
  data.copy(out, 20);
  return out;
}

/** A request header; the payload of a WRITE follows it on the wire. */
export function requestHeader(flags: number, type: number, cookie: bigint, offset: bigint, length: number): Buffer {
  const out = Buffer.allocUnsafe(NBD_REQUEST_SIZE);
  out.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  out.writeBigUInt64BE(cookie, 8);
  out.writeBigUInt64BE(offset, 16);
  out.writeUInt32BE(length >>> 0, 24);
  return out;
}
