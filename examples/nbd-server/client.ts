/**
 * A tiny NBD client, for testing the server without the kernel: fixed newstyle negotiation (NBD_OPT_LIST,
 * NBD_OPT_INFO, NBD_OPT_GO, NBD_OPT_EXPORT_NAME, NBD_OPT_ABORT, or any raw option), then READ, WRITE, FLUSH, TRIM,
 * WRITE_ZEROES, DISC and raw requests with simple replies. Requests may be pipelined: replies are matched by cookie.
 */
import * as net from 'node:net';
import * as P from './protocol';

export type NbdTarget = { socket: string } | { host?: string; port: number };

export interface ExportInfo {
  size: number;
  transmissionFlags: number;
  blockSize?: { minimum: number; preferred: number; maximum: number };
  name?: string;
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface CommandReply {
  error: number;
  cookie: bigint;
  data?: Buffer;
}

/** An error reply to a command (`errno` is the NBD error value, e.g. 22 for EINVAL). */
export class NbdCommandError extends Error {
  constructor(
    readonly errno: number,
    readonly command: string,
  ) {
    super(`NBD_CMD_${command} failed with error ${errno}`);
  }
}

/** An error reply to an option (`type` is the NBD_REP_ERR_* value). */
export class NbdOptionError extends Error {
  constructor(
    readonly type: number,
    readonly option: number,
    readonly serverMessage: string,
  ) {
    super(`option ${P.OPTION_NAMES[option] ?? option} refused with 0x${type.toString(16)}: ${serverMessage}`);
  }
}

interface Pending {
  type: number;
  length: number;
  resolve: (reply: CommandReply) => void;
  reject: (err: Error) => void;
}

export class NbdClient {
  private readonly reader: P.SocketReader;
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private failure: Error | undefined;
  /** The handshake flags the server sent. */
  handshakeFlags = 0;
  /** The client flags sent. */
  clientFlags = 0;
  /** Set once transmission starts. */
  info: ExportInfo | undefined;
  /** Resolves when the socket is closed (by either side). */
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    this.reader = new P.SocketReader(socket);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Connects and reads the server's greeting; sends `clientFlags` (default FIXED_NEWSTYLE | NO_ZEROES). */
  static async connect(target: NbdTarget, clientFlags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): Promise<NbdClient> {
    const socket = 'socket' in target ? net.connect(target.socket) : net.connect({ host: target.host ?? '127.0.0.1', port: target.port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new NbdClient(socket);
    const greeting = await client.reader.read(18);
    if (!greeting.subarray(0, 8).equals(P.NBDMAGIC) || !greeting.subarray(8, 16).equals(P.IHAVEOPT)) {
      socket.destroy();
      throw new Error('not a fixed newstyle NBD server');
    }
    client.handshakeFlags = greeting.readUInt16BE(16);
    client.clientFlags = clientFlags;
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags >>> 0);
    socket.write(flags);
    return client;
  }

  // ---- negotiation -------------------------------------------------------------------------------------------

  /** Sends an option (any number, any data). */
  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    P.IHAVEOPT.copy(header, 0);
    header.writeUInt32BE(option >>> 0, 8);
    header.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.reader.read(20);
    if (header.readBigUInt64BE(0) !== P.NBD_OPT_REPLY_MAGIC) throw new Error('bad option reply magic');
    const length = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.reader.read(length) };
  }

  /** Sends an option and collects its replies up to the final one (ACK or an error). Throws NbdOptionError. */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      if (reply.option !== option) throw new Error(`reply for option ${reply.option}, expected ${option}`);
      if (reply.type & P.NBD_REP_FLAG_ERROR) throw new NbdOptionError(reply.type, option, reply.data.toString('utf8'));
      replies.push(reply);
      if (reply.type === P.NBD_REP_ACK) return replies;
    }
  }

  async list(): Promise<string[]> {
    const replies = await this.option(P.NBD_OPT_LIST);
    return replies
      .filter((r) => r.type === P.NBD_REP_SERVER)
      .map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString('utf8'));
  }

  private static infoRequest(name: string, requests: number[]): Buffer {
    const nameBytes = Buffer.from(name, 'utf8');
    const data = Buffer.alloc(4 + nameBytes.length + 2 + 2 * requests.length);
    data.writeUInt32BE(nameBytes.length, 0);
    nameBytes.copy(data, 4);
    data.writeUInt16BE(requests.length, 4 + nameBytes.length);
    requests.forEach((r, i) => data.writeUInt16BE(r, 4 + nameBytes.length + 2 + 2 * i));
    return data;
  }

  private static parseInfo(replies: OptionReply[]): ExportInfo {
    const info: ExportInfo = { size: -1, transmissionFlags: 0 };
    for (const r of replies) {
      if (r.type !== P.NBD_REP_INFO) continue;
      switch (r.data.readUInt16BE(0)) {
        case P.NBD_INFO_EXPORT:
          info.size = Number(r.data.readBigUInt64BE(2));
          info.transmissionFlags = r.data.readUInt16BE(10);
          break;
        case P.NBD_INFO_NAME:
          info.name = r.data.subarray(2).toString('utf8');
          break;
        case P.NBD_INFO_BLOCK_SIZE:
          info.blockSize = { minimum: r.data.readUInt32BE(2), preferred: r.data.readUInt32BE(6), maximum: r.data.readUInt32BE(10) };
          break;
      }
    }
    if (info.size < 0) throw new Error('no NBD_INFO_EXPORT in the reply');
    return info;
  }

  /** NBD_OPT_INFO: describes an export, stays in negotiation. */
  async describe(name: string, requests = [P.NBD_INFO_NAME, P.NBD_INFO_BLOCK_SIZE]): Promise<ExportInfo> {
    return NbdClient.parseInfo(await this.option(P.NBD_OPT_INFO, NbdClient.infoRequest(name, requests)));
  }

  /** NBD_OPT_GO: enters transmission. */
  async go(name: string, requests = [P.NBD_INFO_BLOCK_SIZE]): Promise<ExportInfo> {
    this.info = NbdClient.parseInfo(await this.option(P.NBD_OPT_GO, NbdClient.infoRequest(name, requests)));
    this.startReplyLoop();
    return this.info;
  }

  /** NBD_OPT_EXPORT_NAME: enters transmission (the server closes the connection for an unknown name). */
  async exportName(name: string): Promise<ExportInfo> {
    this.sendOption(P.NBD_OPT_EXPORT_NAME, Buffer.from(name, 'utf8'));
    const noZeroes = (this.handshakeFlags & P.NBD_FLAG_NO_ZEROES) !== 0 && (this.clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
    const reply = await this.reader.read(noZeroes ? 10 : 134);
    this.info = { size: Number(reply.readBigUInt64BE(0)), transmissionFlags: reply.readUInt16BE(8) };
    this.startReplyLoop();
    return this.info;
  }

  /** NBD_OPT_ABORT, then close. */
  async abort(): Promise<OptionReply> {
    this.sendOption(P.NBD_OPT_ABORT);
    const reply = await this.readOptionReply();
    this.socket.end();
    await this.closed;
    return reply;
  }

  // ---- transmission ------------------------------------------------------------------------------------------

  private startReplyLoop(): void {
    void (async () => {
      try {
        for (;;) {
          const header = await this.reader.read(P.NBD_SIMPLE_REPLY_SIZE);
          if (header.readUInt32BE(0) !== P.NBD_SIMPLE_REPLY_MAGIC) throw new Error(`bad reply magic 0x${header.readUInt32BE(0).toString(16)}`);
          const error = header.readUInt32BE(4);
          const cookie = header.readBigUInt64BE(8);
          const pending = this.pending.get(cookie);
          if (!pending) throw new Error(`reply for unknown cookie ${cookie}`);
          this.pending.delete(cookie);
          // A simple reply carries data only for a successful READ.
          const data = pending.type === P.NBD_CMD_READ && error === 0 ? await this.reader.read(pending.length) : undefined;
          pending.resolve({ error, cookie, data });
        }
      } catch (err) {
        this.failure = err as Error;
        for (const p of this.pending.values()) p.reject(this.failure);
        this.pending.clear();
        if (!(err instanceof P.EndOfStream)) this.socket.destroy();
      }
    })();
  }

  /** Sends one request (any type, flags, offset, length; a payload follows for WRITE) and waits for its reply. */
  request(type: number, options: { flags?: number; offset?: bigint | number; length?: number; payload?: Buffer } = {}): Promise<CommandReply> {
    if (this.failure) return Promise.reject(this.failure);
    const cookie = this.nextCookie++;
    const length = options.length ?? options.payload?.length ?? 0;
    const header = P.requestHeader(options.flags ?? 0, type, cookie, BigInt(options.offset ?? 0), length);
    const promise = new Promise<CommandReply>((resolve, reject) => this.pending.set(cookie, { type, length, resolve, reject }));
    this.socket.write(options.payload ? Buffer.concat([header, options.payload]) : header);
    return promise;
  }

  private async check(command: string, reply: Promise<CommandReply>): Promise<CommandReply> {
    const r = await reply;
    if (r.error !== 0) throw new NbdCommandError(r.error, command);
    return r;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return (await this.check('READ', this.request(P.NBD_CMD_READ, { offset, length }))).data!;
  }

  async write(offset: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    await this.check('WRITE', this.request(P.NBD_CMD_WRITE, { offset, payload: data, flags: options.fua ? P.NBD_CMD_FLAG_FUA : 0 }));
  }

  async flush(): Promise<void> {
    await this.check('FLUSH', this.request(P.NBD_CMD_FLUSH));
  }

  async trim(offset: number, length: number, options: { fua?: boolean } = {}): Promise<void> {
    await this.check('TRIM', this.request(P.NBD_CMD_TRIM, { offset, length, flags: options.fua ? P.NBD_CMD_FLAG_FUA : 0 }));
  }

  async writeZeroes(offset: number, length: number, options: { fua?: boolean } = {}): Promise<void> {
    await this.check('WRITE_ZEROES', this.request(P.NBD_CMD_WRITE_ZEROES, { offset, length, flags: options.fua ? P.NBD_CMD_FLAG_FUA : 0 }));
  }

  /** NBD_CMD_DISC (no reply), then waits for the server to close the connection. */
  async disconnect(): Promise<void> {
    this.socket.write(P.requestHeader(0, P.NBD_CMD_DISC, this.nextCookie++, 0n, 0));
    this.socket.end();
    await this.closed;
  }

  /** Writes raw bytes (for testing how a server handles garbage). */
  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Connects and enters transmission on export `name`, through NBD_OPT_GO (default) or NBD_OPT_EXPORT_NAME. */
export async function openExport(target: NbdTarget, name: string, via: 'go' | 'export-name' = 'go'): Promise<NbdClient> {
  const client = await NbdClient.connect(target);
  try {
    if (via === 'go') await client.go(name);
    else await client.exportName(name);
  } catch (err) {
    client.destroy();
    throw err;
  }
  return client;
}
