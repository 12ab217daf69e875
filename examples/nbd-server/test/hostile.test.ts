/**
 * The example NBD server against hostile clients: floods of options and requests (the server's RSS read from
 * /proc/PID/status), over-long options, trickles, idle and stalled connections, clients that drop their connection
 * with READs in flight, slow readers, SIGTERM. Every limit in the README's "Limits" table is exercised here.
 */
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdOptionError, openExport, type NbdTarget } from '../client';
import * as P from '../protocol';
import {
  buildExample,
  closedWithin,
  drainBytes,
  EXPORT,
  flood,
  killServers,
  MiB,
  optionBytes,
  rawConnect,
  rawTransmission,
  rssMiB,
  sampleRss,
  startServer,
  stopServer,
  tempDir,
  waitFor,
  waitForLog,
  type Server,
} from './helpers';

beforeAll(buildExample, 60_000);

// The limits the README documents (protocol.ts has them as MAX_OPTIONS, MAX_OPTION_BUFFERED, MAX_OPTION_DATA).
/** Options answered before the next one disconnects. */
const OPTION_LIMIT = 1024;
/** Option data held and parsed; beyond it the data is discarded and the option gets an error reply. */
const OPTION_PARSED = 4352;
/** Option data beyond this disconnects. */
const OPTION_DATA_LIMIT = 64 * MiB;

describe('examples/nbd-server against hostile clients (bounded memory, no lockout, every reply delivered)', () => {
  const { dir, remove } = tempDir('nbd-hostile-');
  const file = path.join(dir, 'disk.img');
  let socketCount = 0;

  /** A fresh server on its own socket; `extra` flags after the common ones. */
  async function start(extra: string[] = []): Promise<Server & { socket: string }> {
    const socket = path.join(dir, `s${++socketCount}.sock`);
    const server = await startServer(['--file', file, '--size', '64M', '--socket', socket, '--export', EXPORT, '--protect', 'none', ...extra]);
    return Object.assign(server, { socket });
  }

  /** The same on loopback TCP (--port 0: the port the server picked). */
  async function startTcp(extra: string[] = []): Promise<Server & { port: number }> {
    const server = await startServer(['--file', file, '--size', '64M', '--port', '0', '--export', EXPORT, '--protect', 'none', ...extra]);
    return Object.assign(server, { port: Number(/listening on 127\.0\.0\.1:(\d+) /.exec(server.stderr())![1]) });
  }

  const stop = stopServer;

  afterAll(() => {
    killServers();
    remove();
  });

  it(`option flood: options are answered (as the protocol asks) up to the ${OPTION_LIMIT}th, the next disconnects; a flood whose replies are not read stalls the server's reading and ends at the handshake deadline (2 s here), RSS up by less than 16 MiB`, async () => {
    const server = await start(['--handshake-timeout', '2']);
    const pid = server.child.pid!;
    const c = await rawConnect(server.socket);
    const one = optionBytes(0x1234, Buffer.alloc(100, 0x41));
    const chunk = Buffer.concat(Array.from({ length: Math.floor(MiB / one.length) }, () => one));
    const before = rssMiB(pid);
    const rss = sampleRss(pid);
    let chunks = 0;
    const sent = await flood(c, () => (chunks++ < 64 ? chunk : undefined), 4000);
    const closed = await closedWithin(c, 5000);
    const peak = rss.stop();
    console.log(`option flood: ${(sent / MiB).toFixed(1)} MiB of options sent; server RSS ${before.toFixed(1)} -> peak ${peak.toFixed(1)} MiB`);
    expect(closed).toBe(true);
    expect(peak - before).toBeLessThan(16);
    // Which bound ends it depends on how many unread replies the kernel's socket buffer takes (a few hundred here).
    await waitForLog(server, new RegExp(`connection 1: (no export chosen within 2 s of connecting|more than ${OPTION_LIMIT} options without choosing an export); disconnecting`));
    // Answered far beyond the 32 options that used to disconnect (and that nbdkit allows before NBD_OPT_LIST): every
    // unsupported option gets NBD_REP_ERR_UNSUP, and GO still works. (Sent in one go, not waiting for each reply as
    // a client should: the server reads the next option only once the last one's replies are out, so it is the same
    // to it, and a thousand round trips are not.)
    const unsupported = async (c: NbdClient, count: number): Promise<number[]> => {
      for (let i = 0; i < count; i++) c.sendOption(0x1234);
      const types: number[] = [];
      for (let i = 0; i < count; i++) types.push((await c.readOptionReply()).type);
      return types;
    };
    await stop(server);
    const patient = await start(); // the default 10 s deadline
    const fine = await NbdClient.connect({ socket: patient.socket });
    expect(new Set(await unsupported(fine, OPTION_LIMIT - 1))).toEqual(new Set([P.NBD_REP_ERR_UNSUP]));
    expect(await fine.go(EXPORT)).toMatchObject({ size: 64 * MiB });
    expect((await fine.read(0, 512)).length).toBe(512);
    await fine.disconnect();
    // One option too many closes the connection.
    const greedy = await NbdClient.connect({ socket: patient.socket });
    expect(new Set(await unsupported(greedy, OPTION_LIMIT))).toEqual(new Set([P.NBD_REP_ERR_UNSUP]));
    await expect(greedy.go(EXPORT)).rejects.toThrow(/closed/);
    await waitForLog(patient, new RegExp(`connection 2: more than ${OPTION_LIMIT} options without choosing an export; disconnecting`));
    await stop(patient);
  });

  it('option flood under the option limit: a client that keeps sending options is still closed at the handshake deadline (2 s here)', async () => {
    const server = await start(['--handshake-timeout', '2']);
    const c = await NbdClient.connect({ socket: server.socket });
    const started = Date.now();
    let answered = 0;
    let ended: unknown;
    for (;;) {
      const answer = await c.option(0x1234).catch((e: unknown) => e);
      if (!(answer instanceof NbdOptionError)) {
        ended = answer;
        break;
      }
      expect(answer.type).toBe(P.NBD_REP_ERR_UNSUP);
      answered++;
      // Paced to stay under the option limit, so only the deadline can end it.
      await new Promise((resolve) => setTimeout(resolve, 2500 / OPTION_LIMIT));
    }
    expect(String(ended)).toMatch(/closed|EPIPE|ECONNRESET/);
    const elapsed = Date.now() - started;
    console.log(`option flood under the limit: ${answered} options answered, then closed after ${elapsed} ms`);
    expect(answered).toBeGreaterThan(32);
    expect(answered).toBeLessThan(OPTION_LIMIT);
    expect(elapsed).toBeLessThan(10_000);
    await waitForLog(server, /connection 1: no export chosen within 2 s of connecting; disconnecting/);
    await stop(server);
  });

  it(`option data: over ${OPTION_PARSED} bytes it is discarded as it arrives and the option gets an error reply (UNSUP, INVALID, TOO_BIG), the connection stays usable; over ${OPTION_DATA_LIMIT} it disconnects; names are echoed escaped`, async () => {
    const server = await start();
    const pid = server.child.pid!;
    const c = await NbdClient.connect({ socket: server.socket });
    const infoData = (name: Buffer, requests = 0): Buffer => {
      const data = Buffer.alloc(4 + name.length + 2 + 2 * requests);
      data.writeUInt32BE(name.length, 0);
      name.copy(data, 4);
      data.writeUInt16BE(requests, 4 + name.length);
      for (let i = 0; i < requests; i++) data.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 4 + name.length + 2 + 2 * i);
      return data;
    };
    await expect(c.option(P.NBD_OPT_GO, infoData(Buffer.alloc(4097, 0x61)))).rejects.toMatchObject({ type: P.NBD_REP_ERR_TOO_BIG });
    // A 4096-byte unknown name with a NUL and a newline: the reply quotes 64 characters of it, escaped.
    const hostile = Buffer.concat([Buffer.from('evil\n\0name'), Buffer.alloc(4086, 0x62)]);
    const err = (await c.option(P.NBD_OPT_GO, infoData(hostile)).catch((e: unknown) => e)) as NbdOptionError;
    expect(err).toMatchObject({ type: P.NBD_REP_ERR_UNKNOWN });
    expect(Buffer.byteLength(err.serverMessage)).toBeLessThan(200);
    expect(err.serverMessage).toContain('"evil\\n\\u0000name');
    expect(err.serverMessage).not.toMatch(/[\0\n]/);

    // Longer than the server parses: each gets the error its kind calls for, on the same connection.
    const over = OPTION_PARSED + 1;
    await expect(c.option(0x1234, Buffer.alloc(over, 0x41))).rejects.toMatchObject({ type: P.NBD_REP_ERR_UNSUP });
    await expect(c.option(P.NBD_OPT_LIST, Buffer.alloc(5000))).rejects.toMatchObject({ type: P.NBD_REP_ERR_INVALID });
    // A well-formed INFO: its name, and more information requests than fit.
    const manyRequests = infoData(Buffer.from(EXPORT), Math.floor((OPTION_PARSED - 4 - EXPORT.length - 2) / 2) + 1);
    expect(manyRequests.length).toBeGreaterThan(OPTION_PARSED);
    await expect(c.option(P.NBD_OPT_INFO, manyRequests)).rejects.toMatchObject({ type: P.NBD_REP_ERR_TOO_BIG });
    // 16 MiB of GO data, and exactly the hard bound (64 MiB, which nbdkit answers too): streamed through, never
    // held whole (the RSS grows by the garbage of the socket's reads, far less than the data).
    const before = rssMiB(pid);
    const rss = sampleRss(pid);
    await expect(c.option(P.NBD_OPT_GO, Buffer.alloc(16 * MiB, 0x61))).rejects.toMatchObject({ type: P.NBD_REP_ERR_TOO_BIG });
    await expect(c.option(0x1234, Buffer.alloc(OPTION_DATA_LIMIT))).rejects.toMatchObject({ type: P.NBD_REP_ERR_UNSUP });
    const peak = rss.stop();
    console.log(`16 MiB and 64 MiB options discarded: server RSS ${before.toFixed(1)} -> peak ${peak.toFixed(1)} MiB`);
    expect(peak - before).toBeLessThan(48);
    expect(await c.go(EXPORT)).toMatchObject({ size: 64 * MiB });
    expect((await c.read(0, 4096)).length).toBe(4096);
    await c.disconnect();

    // Over the hard bound: disconnected at the header, without waiting for the data.
    const flooder = await rawConnect(server.socket);
    const header = optionBytes(0x1234);
    header.writeUInt32BE(OPTION_DATA_LIMIT + 1, 12);
    flooder.write(header);
    expect(await closedWithin(flooder, 5000)).toBe(true);
    await waitForLog(server, new RegExp(`option 4660 with ${OPTION_DATA_LIMIT + 1} bytes of data \\(more than ${OPTION_DATA_LIMIT}\\); disconnecting`));
    // NBD_OPT_EXPORT_NAME has no error reply: a name over 4096 bytes closes.
    const longName = await NbdClient.connect({ socket: server.socket });
    await expect(longName.exportName('n'.repeat(4096 + 1))).rejects.toThrow(/closed/);
    await waitForLog(server, /NBD_OPT_EXPORT_NAME with a 4097-byte name \(at most 4096\); disconnecting/);

    // A name chosen to forge a log line is logged escaped, on one line.
    const forger = await NbdClient.connect({ socket: server.socket });
    await expect(forger.exportName('x\nnbd-server: FORGED line')).rejects.toThrow(/closed/);
    await waitForLog(server, /NBD_OPT_EXPORT_NAME for unknown export "x\\nnbd-server: FORGED line"; disconnecting/);
    expect(server.stderr()).not.toMatch(/^nbd-server: FORGED/m);
    await stop(server);
  }, 60_000);

  it('handshake deadline: a client sending a byte every 300 ms is closed at the fixed deadline (2 s here)', async () => {
    const server = await start(['--handshake-timeout', '2']);
    const c = await rawConnect(server.socket);
    const header = optionBytes(0x1234, Buffer.alloc(1000));
    let i = 0;
    const trickle = setInterval(() => {
      if (!c.destroyed && i < header.length) c.write(header.subarray(i, ++i));
    }, 300);
    try {
      // Never idle for 300 ms, so an idle timeout would never fire; the deadline does, well within 12 s.
      expect(await closedWithin(c, 12_000)).toBe(true);
    } finally {
      clearInterval(trickle);
    }
    await waitForLog(server, /connection 1: no export chosen within 2 s of connecting; disconnecting/);
    await stop(server);
  });

  it('request flood: 500,000 pipelined requests whose replies are not read: RSS grows by less than 32 MiB; read later, every reply arrives', async () => {
    const server = await start();
    const pid = server.child.pid!;
    const c = await rawTransmission(server.socket, EXPORT);
    const total = 500_000;
    const perChunk = 10_000;
    // READ with an unknown flag: answered EINVAL at once (a 16-byte reply), as in the flood.
    const chunk = Buffer.concat(Array.from({ length: perChunk }, (_, i) => P.requestHeader(1 << 5, P.NBD_CMD_READ, BigInt(i), 0n, 512)));
    const before = rssMiB(pid);
    const rss = sampleRss(pid);
    let chunks = 0;
    await flood(c, () => (chunks++ < total / perChunk ? chunk : undefined), 5000);
    const peak = rss.stop();
    console.log(`request flood: server RSS ${before.toFixed(1)} -> peak ${peak.toFixed(1)} MiB while ${total} requests were sent and no reply read`);
    expect(peak - before).toBeLessThan(32);
    // Nothing was dropped: once the client reads, the server takes the rest of the requests and answers them all.
    const rest = flood(c, () => (chunks++ < total / perChunk ? chunk : undefined), 60_000);
    const received = await drainBytes(c, total * P.NBD_SIMPLE_REPLY_SIZE, 60_000);
    await rest;
    expect(received).toBe(total * P.NBD_SIMPLE_REPLY_SIZE);
    c.destroy();
    await stop(server);
  }, 90_000);

  it('READ flood on 4 connections, replies not read, --buffer-memory 48M: RSS grows by less than 48 + 40 MiB; all replies arrive once read', async () => {
    const server = await start(['--buffer-memory', '48M']);
    const pid = server.child.pid!;
    const clients = await Promise.all([0, 1, 2, 3].map(() => rawTransmission(server.socket, EXPORT)));
    const perClient = 100;
    const requests = Buffer.concat(Array.from({ length: perClient }, (_, i) => P.requestHeader(0, P.NBD_CMD_READ, BigInt(i), BigInt((i % 64) * MiB), MiB)));
    const before = rssMiB(pid);
    const rss = sampleRss(pid);
    for (const c of clients) c.write(requests);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const peak = rss.stop();
    console.log(`READ flood (4 x 100 x 1 MiB, --buffer-memory 48M): server RSS ${before.toFixed(1)} -> peak ${peak.toFixed(1)} MiB`);
    expect(peak - before).toBeLessThan(48 + 40);
    const received = await Promise.all(clients.map((c) => drainBytes(c, perClient * (P.NBD_SIMPLE_REPLY_SIZE + MiB), 60_000)));
    expect(received).toEqual(clients.map(() => perClient * (P.NBD_SIMPLE_REPLY_SIZE + MiB)));
    for (const c of clients) c.destroy();
    await stop(server);
  }, 90_000);

  it('a client that stops reading its replies is disconnected after the stall timeout (2 s here), freeing its memory', async () => {
    const server = await start(['--stall-timeout', '2']);
    const c = await rawTransmission(server.socket, EXPORT);
    c.write(P.requestHeader(0, P.NBD_CMD_READ, 1n, 0n, 4 * MiB));
    await waitForLog(server, /connection 1: the client took none of its replies for 2 s; disconnecting/, 15_000);
    // What was in the socket buffer arrives, then the end: the rest of the reply was dropped with the connection.
    expect(await drainBytes(c, 4 * MiB + 16, 10_000)).toBeLessThan(4 * MiB + 16);
    expect(c.closed).toBe(true);
    // The server still serves others.
    const other = await openExport({ socket: server.socket }, EXPORT);
    expect((await other.read(0, 512)).length).toBe(512);
    await other.disconnect();
    await stop(server);
  });

  it('connection slots: idle connections cannot lock new clients out; a busy one is never evicted (--max-connections 4, --evict-idle-after 2)', async () => {
    const server = await start(['--max-connections', '4', '--evict-idle-after', '2']);
    // Busy: a 32 MiB reply the client does not read yet (it stays queued in the server).
    const busy = await rawTransmission(server.socket, EXPORT);
    busy.write(P.requestHeader(0, P.NBD_CMD_READ, 7n, 0n, 32 * MiB));
    const idle = await Promise.all([0, 1, 2].map(() => openExport({ socket: server.socket }, EXPORT)));
    // Full, and nobody has been idle 2 s yet: refused.
    const early = net.connect(server.socket);
    early.on('error', () => {});
    expect(await closedWithin(early, 5000)).toBe(true);
    expect(early.bytesRead).toBe(0);
    await waitForLog(server, /refused 1 connection\(s\): all 4 slots are busy or idle less than 2 s/);

    // Once they have been idle for 2 s, three newcomers each take an idle connection's slot.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const newcomers: NbdClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await openExport({ socket: server.socket }, EXPORT);
      expect((await c.read(0, 512)).length).toBe(512);
      newcomers.push(c);
    }
    await Promise.all(idle.map((c) => c.closed));
    await waitForLog(server, /connection [234]: idle for \d+ s while every connection slot is taken: closed to make room for a new client; disconnecting/);
    // Now the only candidates are busy or fresh: the next one is refused, and the busy client still gets its reply.
    const late = net.connect(server.socket);
    late.on('error', () => {});
    expect(await closedWithin(late, 5000)).toBe(true);
    expect(late.bytesRead).toBe(0);
    expect(busy.destroyed).toBe(false);
    const got = drainBytes(busy, P.NBD_SIMPLE_REPLY_SIZE + 32 * MiB, 20_000);
    expect(await got).toBe(P.NBD_SIMPLE_REPLY_SIZE + 32 * MiB);
    busy.destroy();
    await Promise.all(newcomers.map((c) => c.disconnect()));
    await stop(server);
  }, 40_000);

  it('connection slots: clients trickling a request header one byte at a time count as idle and are evicted (--max-connections 2)', async () => {
    const server = await start(['--max-connections', '2', '--evict-idle-after', '2']);
    const tricklers = await Promise.all([0, 1].map(() => rawTransmission(server.socket, EXPORT)));
    const header = P.requestHeader(0, P.NBD_CMD_READ, 1n, 0n, 512);
    let i = 0;
    const trickle = setInterval(() => {
      i = Math.min(i + 1, header.length - 1); // never a whole header
      for (const t of tricklers) if (!t.destroyed) t.write(header.subarray(i - 1, i));
    }, 250);
    try {
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const newcomer = await openExport({ socket: server.socket }, EXPORT);
      expect((await newcomer.read(0, 512)).length).toBe(512);
      await newcomer.disconnect();
      await waitForLog(server, /connection [12]: idle for \d+ s while every connection slot is taken/);
    } finally {
      clearInterval(trickle);
      for (const t of tricklers) t.destroy();
    }
    await stop(server);
  });

  it('connection slots: a client that sent DISC but keeps its socket open no longer holds its slot (--max-connections 1)', async () => {
    const server = await start(['--max-connections', '1']);
    const lingering = await rawTransmission(server.socket, EXPORT);
    lingering.write(P.requestHeader(0, P.NBD_CMD_DISC, 1n, 0n, 0));
    lingering.resume();
    expect(await waitFor(lingering, 'end', 10_000)).toBe(true); // the server ended its side; this one stays open
    const next = await openExport({ socket: server.socket }, EXPORT);
    expect((await next.read(0, 512)).length).toBe(512);
    await next.disconnect();
    lingering.destroy();
    await stop(server);
  });

  it('connection slots: clients that connect and never finish negotiating lose their slots to a newcomer after 1 s (--max-connections 2)', async () => {
    // The handshake deadline alone would let them hold every slot for 30 s at a time (CVE-2024-7409 in qemu).
    const server = await start(['--max-connections', '2', '--handshake-timeout', '30']);
    const stalled = await Promise.all([0, 1].map(() => rawConnect(server.socket)));
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const newcomer = await openExport({ socket: server.socket }, EXPORT);
    expect((await newcomer.read(0, 512)).length).toBe(512);
    await waitForLog(server, /connection 1: still negotiating after \d+\.\d s while every connection slot is taken: closed to make room for a new client/);
    await newcomer.disconnect();
    for (const c of stalled) c.destroy();
    await stop(server);
  });

  it('a WRITE payload trickled one byte at a time is cut off at the stall timeout (2 s here)', async () => {
    const server = await start(['--stall-timeout', '2']);
    const c = await rawTransmission(server.socket, EXPORT);
    c.write(P.requestHeader(0, P.NBD_CMD_WRITE, 1n, 0n, MiB));
    const trickle = setInterval(() => c.destroyed || c.write(Buffer.from([0x55])), 200);
    try {
      await waitForLog(server, /connection 1: the 1048576-byte payload of a WRITE did not arrive within 2 s; disconnecting/, 15_000);
    } finally {
      clearInterval(trickle);
    }
    c.destroy();
    await stop(server);
  });

  it('a connection dropped while receiving a WRITE payload gives its reservation back (--buffer-memory 32M)', async () => {
    const server = await start(['--buffer-memory', '32M', '--stall-timeout', '1']);
    const readSucceeds = async (): Promise<void> => {
      const c = await openExport({ socket: server.socket }, EXPORT);
      expect((await c.read(0, MiB)).length).toBe(MiB); // needs 1 MiB of the budget
      await c.disconnect();
    };
    // Dropped at the stall timeout, 1 byte of its 32 MiB payload sent.
    const trickler = await rawTransmission(server.socket, EXPORT);
    trickler.write(Buffer.concat([P.requestHeader(0, P.NBD_CMD_WRITE, 1n, 0n, 32 * MiB), Buffer.from([1])]));
    await waitForLog(server, /connection 1: the 33554432-byte payload of a WRITE did not arrive within 1 s; disconnecting/);
    await readSucceeds();
    // Closed by the client half-way through its payload.
    const quitter = await rawTransmission(server.socket, EXPORT);
    quitter.write(Buffer.concat([P.requestHeader(0, P.NBD_CMD_WRITE, 1n, 0n, 32 * MiB), Buffer.alloc(16 * MiB)]));
    await new Promise((resolve) => setTimeout(resolve, 300)); // the server is reading the payload
    quitter.destroy();
    await waitForLog(server, /connection 3: (closed by the client in the middle of a message|the client is gone \(EPIPE\))/);
    await readSucceeds();
    await stop(server);
  }, 30_000);

  it('the shared buffer budget cannot lock others out: a client holding all of it without reading is dropped at the stall timeout, then others are served', async () => {
    const server = await start(['--buffer-memory', '32M', '--stall-timeout', '2']);
    const hog = await rawTransmission(server.socket, EXPORT);
    hog.write(Buffer.concat(Array.from({ length: 40 }, (_, i) => P.requestHeader(0, P.NBD_CMD_READ, BigInt(i), 0n, MiB))));
    await new Promise((resolve) => setTimeout(resolve, 500)); // the hog now holds the 32 MiB
    const other = await openExport({ socket: server.socket }, EXPORT);
    const started = Date.now();
    expect((await other.read(0, 4096)).length).toBe(4096);
    await waitForLog(server, /connection 1: the client took none of its replies for 2 s; disconnecting/);
    console.log(`a READ waiting behind a client holding the whole budget was served after ${Date.now() - started} ms`);
    await other.disconnect();
    hog.destroy();
    await stop(server);
  });

  for (const transport of ['loopback TCP, reset (RST)', 'a Unix socket, closed'] as const) {
    it(`clients that drop ${transport} with 2 x 32 MiB READs in flight free their slot at once: in 150 rounds a normal client always connects, RSS stays within the budget (--max-connections 4, --buffer-memory 64M)`, async () => {
      // Each round's requests and its drop arrive together, which reads as a plain end of stream (a Unix socket's
      // close always, a TCP reset on Node 20 and 22): the server must not take the client for a half-closed one that
      // still reads, and serve its READs in full.
      const tcp = transport.startsWith('loopback');
      const flags = ['--max-connections', '4', '--buffer-memory', '64M'];
      const server = tcp ? await startTcp(flags) : await start(flags);
      const target: NbdTarget = tcp ? { port: (server as Server & { port: number }).port } : { socket: (server as Server & { socket: string }).socket };
      const pid = server.child.pid!;
      const before = rssMiB(pid);
      const rss = sampleRss(pid);
      const started = Date.now();
      const reads = Buffer.concat([P.requestHeader(0, P.NBD_CMD_READ, 1n, 0n, 32 * MiB), P.requestHeader(0, P.NBD_CMD_READ, 2n, 32n * BigInt(MiB), 32 * MiB)]);
      for (let round = 0; round < 150; round++) {
        const dropping = await rawTransmission(target, EXPORT);
        dropping.write(reads);
        if (tcp) dropping.resetAndDestroy();
        else dropping.destroy();
        // A normal client right after it: connects and chooses the export (a slot is all it needs for that).
        const normal = await openExport(target, EXPORT).catch((e: Error) => {
          throw new Error(`round ${round}: a normal client was refused (${e.message}); the server said:\n${server.stderr().slice(-1500)}`);
        });
        await normal.disconnect();
      }
      // The dropped READs gave their budget back: a read is served at once.
      const last = await openExport(target, EXPORT);
      expect((await last.read(0, 4096)).length).toBe(4096);
      await last.disconnect();
      const peak = rss.stop();
      console.log(`150 rounds of drops over ${transport} in ${Date.now() - started} ms; server RSS ${before.toFixed(1)} -> peak ${peak.toFixed(1)} MiB`);
      expect(peak - before).toBeLessThan(64 + 48);
      expect(server.stderr()).not.toMatch(/refused \d+ connection/);
      expect(server.stderr()).toMatch(/the client is gone \((ECONNRESET|EPIPE)\)/);
      await stop(server);
    }, 90_000);
  }

  for (const how of ['NBD_CMD_DISC', 'a half-close'] as const) {
    it(`after ${how}, a client that reads slowly (nothing for 4 s) still gets both 32 MiB READ replies in full`, async () => {
      const server = await start();
      const c = await rawTransmission(server.socket, EXPORT);
      c.write(Buffer.concat([P.requestHeader(0, P.NBD_CMD_READ, 1n, 0n, 32 * MiB), P.requestHeader(0, P.NBD_CMD_READ, 2n, 0n, 32 * MiB)]));
      if (how === 'NBD_CMD_DISC') c.write(P.requestHeader(0, P.NBD_CMD_DISC, 3n, 0n, 0));
      c.end();
      await new Promise((resolve) => setTimeout(resolve, 4000));
      const expected = 2 * (P.NBD_SIMPLE_REPLY_SIZE + 32 * MiB);
      expect(await drainBytes(c, expected + 1, 30_000)).toBe(expected);
      expect(await closedWithin(c, 10_000)).toBe(true); // and the server closed the connection after them
      await stop(server);
    }, 60_000);
  }

  it('SIGTERM: options get NBD_REP_ERR_SHUTDOWN, requests NBD_ESHUTDOWN, then the server closes and exits 0', async () => {
    const server = await start();
    const negotiating = await NbdClient.connect({ socket: server.socket });
    const transmitting = await openExport({ socket: server.socket }, EXPORT);
    server.child.kill('SIGTERM');
    await waitForLog(server, /SIGTERM: finishing requests in flight/);
    await expect(negotiating.option(P.NBD_OPT_LIST)).rejects.toMatchObject({ type: P.NBD_REP_ERR_SHUTDOWN });
    expect((await transmitting.request(P.NBD_CMD_READ, { offset: 0, length: 512 })).error).toBe(P.NBD_ESHUTDOWN);
    await Promise.all([negotiating.closed, transmitting.closed]);
    expect(await server.exited).toBe(0);
  });
});
