/**
 * The example NBD server (examples/nbd-server): its protection report on this machine (EPERM without
 * CAP_SYS_RESOURCE: best effort serves, --require-protection refuses), and the protocol through the example's test
 * client, without the kernel.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackingFile } from '../examples/nbd-server/backing-file';
import { NbdClient, NbdCommandError, NbdOptionError, openExport, type NbdTarget } from '../examples/nbd-server/client';
import { BufferBudget, DEFAULT_LIMITS, NbdConnection } from '../examples/nbd-server/connection';
import { holdsCapability } from './helpers';
import * as P from '../examples/nbd-server/protocol';
import { holdsCapSysResource, ROOT } from './helpers';

const EXAMPLE = path.join(ROOT, 'examples', 'nbd-server');
const SERVER = path.join(EXAMPLE, 'dist', 'server.js');
const SIZE = 4 * 1024 * 1024;
const EXPORT = 'test';
const capable = holdsCapSysResource();

interface Server {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

const children = new Set<ChildProcess>();

function spawnServer(args: string[]): Server {
  const child = spawn(process.execPath, [SERVER, ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  return { child, stderr: () => stderr, exited };
}

/** Starts the server and waits for `listening on`. */
async function startServer(args: string[]): Promise<Server> {
  const server = spawnServer(args);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${server.stderr()}`)), 10_000);
    const check = (): void => {
      if (/listening on /.test(server.stderr())) {
        clearTimeout(timer);
        resolve();
      }
    };
    server.child.stderr!.on('data', check);
    void server.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${server.stderr()}`));
    });
    check();
  });
  return server;
}

/** Waits (up to 5 s) for the server's stderr to match: it arrives through a pipe, not in step with the sockets. */
async function waitForLog(server: Server, pattern: RegExp, ms = 5000): Promise<void> {
  for (const started = Date.now(); !pattern.test(server.stderr()); ) {
    if (Date.now() - started > ms) expect(server.stderr()).toMatch(pattern);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The one JSON line the server logs about its protection. */
function protectionReport(stderr: string): Record<string, any> {
  const line = /^nbd-server: (\{"event":"protection".*)$/m.exec(stderr);
  expect(line, stderr).not.toBeNull();
  return JSON.parse(line![1]!);
}

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}

beforeAll(() => {
  // The example has its own tsconfig (compiled into examples/nbd-server/dist, importing the package's dist/).
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', EXAMPLE], { cwd: ROOT, stdio: 'pipe' });
}, 60_000);

describe('examples/nbd-server', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-server-'));
  const file = path.join(dir, 'disk.img');
  const socket = path.join(dir, 'nbd.sock');
  const target: NbdTarget = { socket };
  const serverArgs = ['--file', file, '--socket', socket, '--export', EXPORT, '--protect', 'process'];
  /** What the export must hold: the file starts as SIZE zero bytes. */
  const model = Buffer.alloc(SIZE);
  let server: Server;

  beforeAll(async () => {
    server = await startServer([...serverArgs, '--size', '4M', '--oom-score-adj', '500']);
  }, 60_000);

  afterAll(() => {
    for (const child of children) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('--protect process logs one protection report and serves; without CAP_SYS_RESOURCE it is best effort (EPERM)', () => {
    const report = protectionReport(server.stderr());
    expect(report).toMatchObject({ event: 'protection', mode: 'process', required: false, starting: true, emulated: false });
    // main thread + the 4 libuv pool threads started by the warm-up + V8's threads
    expect(report.threads.total).toBeGreaterThanOrEqual(6);
    expect(report.steps).toContainEqual({ step: 'oomScoreAdj', done: true, required: false });
    expect(fs.readFileSync(`/proc/${server.child.pid}/oom_score_adj`, 'utf8').trim()).toBe('500');
    const ioStep = report.steps.find((s: { step: string }) => s.step === 'ioFlusher');
    if (capable) {
      expect(ioStep).toMatchObject({ done: true });
      expect(report).toMatchObject({ ioFlusherInEffect: true, threads: { uncovered: 0 } });
    } else {
      expect(ioStep).toMatchObject({ done: false, required: false, code: 'EPERM', reason: 'missing-capability' });
      expect(report).toMatchObject({ ioFlusherInEffect: false, threads: { covered: 0, uncovered: report.threads.total } });
      expect(server.stderr()).toMatch(new RegExp(`WARNING: ${report.threads.total} of ${report.threads.total} threads are NOT in IO_FLUSHER state \\(tids [\\d ]+\\): .*CAP_SYS_RESOURCE`));
    }
    expect(server.stderr()).toMatch(/listening on unix:.*nbd\.sock \(export "test", 4194304 bytes/);
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] --require-protection refuses to start (exit 3) and never listens', async () => {
    const refusedSocket = path.join(dir, 'refused.sock');
    const refused = spawnServer(['--file', file, '--socket', refusedSocket, '--export', EXPORT, '--protect', 'process', '--require-protection']);
    expect(await refused.exited).toBe(3);
    const report = protectionReport(refused.stderr());
    expect(report).toMatchObject({ required: true, starting: false, ioFlusherInEffect: false });
    expect(report.steps).toContainEqual(expect.objectContaining({ step: 'ioFlusher', done: false, required: true, code: 'EPERM' }));
    expect(refused.stderr()).toMatch(/refusing to start/);
    expect(refused.stderr()).not.toMatch(/listening on/);
    expect(fs.existsSync(refusedSocket)).toBe(false);
  });

  it('negotiation: LIST, INFO, unsupported options, unknown export, malformed INFO, then GO on the same connection', async () => {
    const c = await NbdClient.connect(target);
    expect(c.handshakeFlags).toBe(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
    expect(await c.list()).toEqual([EXPORT]);
    const info = await c.describe(EXPORT);
    expect(info).toMatchObject({ size: SIZE, name: EXPORT, blockSize: { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 } });
    const wanted = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES;
    expect(info.transmissionFlags & wanted).toBe(wanted);
    expect(info.transmissionFlags & P.NBD_FLAG_READ_ONLY).toBe(0);
    for (const option of [P.NBD_OPT_STRUCTURED_REPLY, P.NBD_OPT_STARTTLS, 0x1234]) {
      await expect(c.option(option)).rejects.toMatchObject({ type: P.NBD_REP_ERR_UNSUP, option });
    }
    await expect(c.go('no-such-export')).rejects.toMatchObject({ type: P.NBD_REP_ERR_UNKNOWN });
    await expect(c.option(P.NBD_OPT_INFO, Buffer.from([0, 0, 0, 9, 1]))).rejects.toMatchObject({ type: P.NBD_REP_ERR_INVALID });
    await expect(c.option(P.NBD_OPT_LIST, Buffer.from('x'))).rejects.toBeInstanceOf(NbdOptionError);
    expect(await c.go(EXPORT)).toMatchObject({ size: SIZE });
    expect(await c.read(0, 512)).toEqual(model.subarray(0, 512));
    await c.disconnect();
  });

  it('NBD_OPT_EXPORT_NAME (with and without NO_ZEROES) enters transmission; an unknown name closes; ABORT is acknowledged', async () => {
    for (const flags of [P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES, P.NBD_FLAG_C_FIXED_NEWSTYLE]) {
      const c = await NbdClient.connect(target, flags);
      expect(await c.exportName(EXPORT)).toMatchObject({ size: SIZE });
      expect(await c.read(4096, 100)).toEqual(model.subarray(4096, 4196));
      await c.disconnect();
    }
    const byDefaultName = await openExport(target, '', 'export-name');
    expect(byDefaultName.info!.size).toBe(SIZE);
    await byDefaultName.disconnect();

    const unknown = await NbdClient.connect(target);
    await expect(unknown.exportName('no-such-export')).rejects.toThrow(/closed/);
    const aborting = await NbdClient.connect(target);
    expect(await aborting.abort()).toMatchObject({ option: P.NBD_OPT_ABORT, type: P.NBD_REP_ACK });
  });

  it('pipelined writes at aligned and unaligned offsets read back; overlapping writes keep their order; FLUSH; FUA', async () => {
    const c = await openExport(target, EXPORT);
    const writes: Array<[number, Buffer]> = [
      [0, pattern(4096, 1)],
      [3 * 4096 + 1, pattern(1000, 2)],
      [1_234_567, pattern(3333, 3)],
      [65536 - 7, pattern(20_000, 4)],
      [SIZE - 100, pattern(100, 5)],
      [SIZE / 2 + 513, pattern(1024 * 1024 + 3, 6)],
    ];
    await Promise.all(writes.map(([offset, data]) => c.write(offset, data)));
    for (const [offset, data] of writes) data.copy(model, offset);
    const reads = await Promise.all(writes.map(([offset, data]) => c.read(offset, data.length)));
    reads.forEach((got, i) => expect(got.equals(model.subarray(writes[i]![0], writes[i]![0] + writes[i]![1].length))).toBe(true));

    // Sent back to back without waiting: a large write, then a small one over its end, then a read of both. The
    // server runs them on different pool threads; it must still apply them in order and read after both.
    const first = pattern(2 * 1024 * 1024, 7);
    const second = pattern(4096, 8);
    const at = 1_600_000;
    const secondAt = at + first.length - 4000;
    const [, , after] = await Promise.all([c.write(at, first), c.write(secondAt, second), c.read(at, first.length + 96)]);
    first.copy(model, at);
    second.copy(model, secondAt);
    expect(after.equals(model.subarray(at, at + first.length + 96))).toBe(true);
    // Many pipelined writes over the same unaligned range, then a read: the last write wins.
    const versions = Array.from({ length: 200 }, (_, i) => pattern(4000, 100 + i));
    const pendingWrites = versions.map((v) => c.write(777_777, v));
    const latest = c.read(777_777, 4000);
    await Promise.all(pendingWrites);
    versions.at(-1)!.copy(model, 777_777);
    expect((await latest).equals(versions.at(-1)!)).toBe(true);

    await c.flush();
    // A FUA write is in the file (and on stable storage) by the time it is acknowledged.
    const fua = pattern(5000, 9);
    await c.write(3_000_001, fua, { fua: true });
    fua.copy(model, 3_000_001);
    const fd = fs.openSync(file, 'r');
    const onDisk = Buffer.alloc(fua.length);
    fs.readSync(fd, onDisk, 0, fua.length, 3_000_001);
    fs.closeSync(fd);
    expect(onDisk.equals(fua)).toBe(true);
    // FLUSH with the FUA flag is accepted too (the protocol says to accept FUA on any command).
    expect((await c.request(P.NBD_CMD_FLUSH, { flags: P.NBD_CMD_FLAG_FUA })).error).toBe(0);
    await c.disconnect();
  });

  it('WRITE_ZEROES zeroes its range; TRIM succeeds and is a no-op (data kept, as the protocol allows)', async () => {
    const c = await openExport(target, EXPORT);
    await c.writeZeroes(1_234_567, 3333, { fua: true });
    model.fill(0, 1_234_567, 1_234_567 + 3333);
    expect((await c.read(1_234_560, 4000)).equals(model.subarray(1_234_560, 1_238_560))).toBe(true);
    expect((await c.request(P.NBD_CMD_WRITE_ZEROES, { offset: 0, length: 1, flags: P.NBD_CMD_FLAG_NO_HOLE })).error).toBe(0);
    model[0] = 0;
    await c.trim(0, 8192);
    await c.trim(4096, 4096, { fua: true });
    expect((await c.read(0, 8192)).equals(model.subarray(0, 8192))).toBe(true);
    await c.disconnect();
  });

  it('out-of-range, oversized and unknown requests get error replies and the connection stays usable', async () => {
    const c = await openExport(target, EXPORT);
    const errorOf = async (type: number, options: Parameters<NbdClient['request']>[1]) => (await c.request(type, options)).error;
    expect(await errorOf(P.NBD_CMD_READ, { offset: SIZE - 10, length: 20 })).toBe(P.NBD_EINVAL);
    expect(await errorOf(P.NBD_CMD_READ, { offset: 2n ** 64n - 1n, length: 2 })).toBe(P.NBD_EINVAL);
    expect(await errorOf(P.NBD_CMD_READ, { offset: 0, length: 64 * 1024 * 1024 })).toBe(P.NBD_EINVAL);
    expect(await errorOf(P.NBD_CMD_WRITE, { offset: SIZE - 10, payload: pattern(4096, 10) })).toBe(P.NBD_ENOSPC);
    // Larger than the 32 MiB the server takes: refused, its payload read past.
    expect(await errorOf(P.NBD_CMD_WRITE, { offset: 0, payload: Buffer.alloc(32 * 1024 * 1024 + 1, 0xee) })).toBe(P.NBD_EINVAL);
    expect(await errorOf(P.NBD_CMD_WRITE_ZEROES, { offset: SIZE, length: 1 })).toBe(P.NBD_ENOSPC);
    expect(await errorOf(P.NBD_CMD_TRIM, { offset: SIZE - 1, length: 2 })).toBe(P.NBD_EINVAL);
    expect(await errorOf(99, { offset: 0, length: 0 })).toBe(P.NBD_EINVAL);
    expect(await errorOf(P.NBD_CMD_CACHE, { offset: 0, length: 512 })).toBe(P.NBD_EINVAL);
    expect(await errorOf(P.NBD_CMD_READ, { offset: 0, length: 512, flags: 1 << 5 })).toBe(P.NBD_EINVAL);
    await expect(c.read(SIZE, 1)).rejects.toBeInstanceOf(NbdCommandError);
    // The rejected WRITE's payload was consumed: the stream is still in sync.
    expect((await c.read(SIZE - 4096, 4096)).equals(model.subarray(SIZE - 4096))).toBe(true);
    expect((await c.read(SIZE - 1, 1)).equals(model.subarray(SIZE - 1))).toBe(true);
    await c.disconnect();
  });

  it('garbage closes only the connection that sent it; the server keeps serving others', async () => {
    const good = await openExport(target, EXPORT);
    const bad = await openExport(target, EXPORT);
    bad.sendRaw(Buffer.from('this is not an NBD request, not at all'));
    await bad.closed;
    // Garbage instead of client flags and options.
    const raw = net.connect(socket);
    raw.on('error', () => {});
    raw.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    raw.resume();
    await new Promise((resolve) => raw.once('close', resolve));
    // A client that vanishes mid-request.
    const vanishing = await openExport(target, EXPORT);
    vanishing.sendRaw(P.requestHeader(0, P.NBD_CMD_WRITE, 1n, 0n, 4096).subarray(0, 20));
    vanishing.destroy();

    expect((await good.read(0, 4096)).equals(model.subarray(0, 4096))).toBe(true);
    const fresh = await openExport(target, EXPORT);
    expect((await fresh.read(1_234_567, 10)).equals(model.subarray(1_234_567, 1_234_577))).toBe(true);
    await Promise.all([good.disconnect(), fresh.disconnect()]);
    expect(server.child.exitCode).toBeNull();
    await waitForLog(server, /connection \d+: bad request magic 0x74686973; disconnecting/);
    await waitForLog(server, /connection \d+: unknown client flags 0x47455420; disconnecting/);
    await waitForLog(server, /connection \d+: closed by the client in the middle of a message/);
  });

  it('DISC: requests sent before it are answered, then the server closes the connection cleanly', async () => {
    const c = await openExport(target, EXPORT);
    const data = pattern(70_000, 11);
    const write = c.write(500_001, data);
    const read = c.read(500_001, data.length);
    const flush = c.flush();
    await c.disconnect();
    await expect(Promise.all([write, flush])).resolves.toBeDefined();
    data.copy(model, 500_001);
    expect((await read).equals(data)).toBe(true);
  });

  it('several connections at once: each sees what the others wrote and flushed', async () => {
    const clients = await Promise.all([0, 1, 2, 3].map(() => openExport(target, EXPORT)));
    const region = (i: number) => 2_500_000 + i * 50_000;
    await Promise.all(clients.map((c, i) => c.write(region(i), pattern(40_000, 20 + i))));
    clients.forEach((_, i) => pattern(40_000, 20 + i).copy(model, region(i)));
    await Promise.all(clients.map((c) => c.flush()));
    const seen = await Promise.all(clients.map((c, i) => c.read(region((i + 1) % 4), 40_000)));
    seen.forEach((got, i) => expect(got.equals(pattern(40_000, 20 + ((i + 1) % 4)))).toBe(true));
    await Promise.all(clients.map((c) => c.disconnect()));
  });

  it('every thread the server has now existed at the protection call (the thread pool was warmed up first)', () => {
    const report = protectionReport(server.stderr());
    const now = fs.readdirSync(`/proc/${server.child.pid}/task`).map(Number);
    expect(now.length).toBe(report.threads.total);
    if (!capable) {
      const logged = /threads are NOT in IO_FLUSHER state \(tids ([\d ]+)\)/.exec(server.stderr())![1]!.split(' ').map(Number);
      expect(logged.sort()).toEqual(now.sort());
    }
  });

  it('after FLUSH the backing file holds exactly what was written, and it survives a hard kill and a restart', async () => {
    const c = await openExport(target, EXPORT);
    await c.flush();
    await c.disconnect();
    expect(sha256(fs.readFileSync(file))).toBe(sha256(model));

    server.child.kill('SIGKILL');
    await server.exited;
    // No --size: the export's size comes from the file; the stale socket file is replaced.
    server = await startServer(serverArgs);
    const again = await NbdClient.connect(target);
    expect((await again.describe(EXPORT)).size).toBe(SIZE);
    await again.go(EXPORT);
    const chunks = await Promise.all(Array.from({ length: 4 }, (_, i) => again.read(i * (SIZE / 4), SIZE / 4)));
    expect(sha256(Buffer.concat(chunks))).toBe(sha256(model));
    await again.disconnect();

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    expect(fs.existsSync(socket)).toBe(false);
  });

  it('loopback TCP: --port 0 picks a free port on 127.0.0.1; other addresses are refused', async () => {
    const tcp = await startServer(['--file', file, '--port', '0', '--export', EXPORT, '--protect', 'none']);
    const port = Number(/listening on 127\.0\.0\.1:(\d+) /.exec(tcp.stderr())![1]);
    const c = await openExport({ port }, EXPORT);
    expect((await c.read(0, 4096)).equals(model.subarray(0, 4096))).toBe(true);
    await c.disconnect();
    expect(tcp.stderr()).not.toMatch(/"event":"protection"/);
    tcp.child.kill('SIGTERM');
    expect(await tcp.exited).toBe(0);

    const open = spawnServer(['--file', file, '--port', '0', '--host', '0.0.0.0']);
    expect(await open.exited).toBe(2);
    expect(open.stderr()).toMatch(/--host must be a loopback address/);
  });
});

describe('examples/nbd-server request ordering (in process, over a slow in-memory file)', () => {
  /** Stands in for BackingFile: writes of 64 KiB or more take `slowWriteMs`; every operation is logged when it completes. */
  class SlowMemoryFile {
    constructor(private readonly slowWriteMs = 100) {}
    readonly size = 8 * 1024 * 1024;
    readonly data = Buffer.alloc(this.size);
    readonly events: string[] = [];
    /** Milliseconds per MiB read (0: instant). */
    readMsPerMiB = 0;
    bytesRead = 0;
    async read(into: Buffer, position: number): Promise<void> {
      if (this.readMsPerMiB) await new Promise((resolve) => setTimeout(resolve, (this.readMsPerMiB * into.length) / (1024 * 1024)));
      this.data.copy(into, 0, position, position + into.length);
      this.bytesRead += into.length;
      this.events.push(`read ${position}+${into.length}`);
    }
    async write(data: Buffer, position: number): Promise<void> {
      if (data.length >= 65536) await new Promise((resolve) => setTimeout(resolve, this.slowWriteMs));
      data.copy(this.data, position);
      this.events.push(`write ${position}+${data.length}`);
    }
    async writeZeroes(position: number, length: number): Promise<void> {
      this.data.fill(0, position, position + length);
      this.events.push(`zero ${position}+${length}`);
    }
    async sync(): Promise<void> {
      this.events.push('sync');
    }
  }

  it('overlapping requests wait for earlier writes, FLUSH for every earlier write; others reply out of order', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-order-'));
    const socket = path.join(dir, 'order.sock');
    const file = new SlowMemoryFile();
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      new NbdConnection(s, { name: 'mem', file: file as unknown as BackingFile }, () => {}, 1);
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const c = await openExport({ socket }, 'mem');
      const slow = pattern(256 * 1024, 1);
      const over = pattern(4096, 2);
      const elsewhere = pattern(4096, 3);
      const replied: string[] = [];
      const track = <T>(name: string, p: Promise<T>) => p.then((v) => (replied.push(name), v));
      const all = Promise.all([
        track('slow write', c.write(0, slow)),
        track('overlapping write', c.write(slow.length - 4096, over)),
        track('overlapping read', c.read(0, slow.length)),
        track('flush', c.flush()),
        track('independent write', c.write(512 * 1024, elsewhere, { fua: true })),
      ]);
      const [, , readBack] = await all;
      const expected = Buffer.from(slow);
      over.copy(expected, slow.length - 4096);
      expect((readBack as Buffer).equals(expected)).toBe(true);
      // The independent write was neither held up by the slow one nor answered in request order.
      expect(replied[0]).toBe('independent write');
      expect(file.events.indexOf('write 0+262144')).toBeLessThan(file.events.indexOf(`write ${slow.length - 4096}+4096`));
      expect(file.events.indexOf(`write ${slow.length - 4096}+4096`)).toBeLessThan(file.events.indexOf(`read 0+${slow.length}`));
      // FLUSH came after both earlier writes completed (the FUA write's own sync comes first).
      expect(file.events.lastIndexOf('sync')).toBeGreaterThan(file.events.indexOf(`write ${slow.length - 4096}+4096`));
      expect(file.events.slice(0, 2)).toEqual(['write 524288+4096', 'sync']);
      await c.disconnect();
    } finally {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('requests still waiting when the client closes its socket are dropped, not run (noticed at the first failed reply)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-cancel-'));
    const socket = path.join(dir, 'cancel.sock');
    const file = new SlowMemoryFile(1000);
    const logged: string[] = [];
    const budget = new BufferBudget(64 * 1024 * 1024);
    let connection: NbdConnection | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      connection = new NbdConnection(s, { name: 'mem', file: file as unknown as BackingFile }, (m) => logged.push(m), 1, DEFAULT_LIMITS, budget);
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const c = await openExport({ socket }, 'mem');
      void c.write(0, pattern(65536, 1)).catch(() => {});
      // 20 READs over the slow write's range: they wait for it.
      for (let i = 0; i < 20; i++) void c.read(0, 4096).catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 300));
      c.destroy();
      await connection!.finished;
      // The write had started (so the server had the requests); the READs waiting behind it never ran.
      expect(file.events).toEqual(['write 0+65536']);
      expect(logged).toContain('connection 1: 20 requests not run: the client was gone');
      expect(budget.inUse).toBe(0); // every reservation given back
    } finally {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a READ of a client that resets its TCP connection stops between 1 MiB pieces instead of reading everything', async () => {
    const file = new SlowMemoryFile();
    file.readMsPerMiB = 150; // 4 MiB take 600 ms
    const budget = new BufferBudget(64 * 1024 * 1024);
    let connection: NbdConnection | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      connection = new NbdConnection(s, { name: 'mem', file: file as unknown as BackingFile }, () => {}, 1, DEFAULT_LIMITS, budget);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const c = await openExport({ port: (server.address() as net.AddressInfo).port }, 'mem');
      void c.read(0, 4 * 1024 * 1024).catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 200));
      c.socket.resetAndDestroy(); // RST: the server's socket fails with ECONNRESET
      await connection!.finished;
      expect(file.bytesRead).toBeGreaterThan(0);
      expect(file.bytesRead).toBeLessThan(4 * 1024 * 1024);
      expect(budget.inUse).toBe(0);
    } finally {
      server.close();
    }
  });
});

// ---- hostile clients ---------------------------------------------------------------------------------------------

/** The resident set of a process in MiB, from /proc/PID/status. */
function rssMiB(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/** Samples a process's RSS every 50 ms; stop() returns the peak in MiB. */
function sampleRss(pid: number): { stop: () => number } {
  let peak = rssMiB(pid);
  const sample = (): void => {
    try {
      peak = Math.max(peak, rssMiB(pid));
    } catch {
      // the process is gone
    }
  };
  const timer = setInterval(sample, 50);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

/** Resolves true when the socket emits one of `events` (listeners removed), false after `ms`. */
function waitFor(socket: net.Socket, events: string | string[], ms: number): Promise<boolean> {
  const names = typeof events === 'string' ? [events] : events;
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(false), ms);
    const onEvent = (): void => done(true);
    function done(happened: boolean): void {
      clearTimeout(timer);
      for (const name of names) socket.off(name, onEvent);
      resolve(happened);
    }
    for (const name of names) socket.once(name, onEvent);
  });
}

/** Resolves true once the socket is closed, false after `ms`. */
function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  return socket.closed ? Promise.resolve(true) : waitFor(socket, 'close', ms);
}

/** Exactly `n` bytes from a socket read in paused mode (nothing else reads it). */
async function readExactly(socket: net.Socket, n: number): Promise<Buffer> {
  for (;;) {
    const chunk = socket.read(n) as Buffer | null;
    if (chunk) return chunk;
    if (socket.closed || socket.readableEnded) throw new Error(`closed before ${n} bytes arrived`);
    await waitFor(socket, ['readable', 'close'], 10_000);
  }
}

/** Connects, reads the greeting and sends the client flags (FIXED_NEWSTYLE | NO_ZEROES). Nothing reads it after. */
async function rawConnect(socketPath: string): Promise<net.Socket> {
  const socket = net.connect(socketPath);
  socket.on('error', () => {});
  await waitFor(socket, 'connect', 10_000);
  await readExactly(socket, 18);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
  socket.write(flags);
  return socket;
}

function optionBytes(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(16);
  P.IHAVEOPT.copy(header, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

/** A raw socket in transmission (through NBD_OPT_EXPORT_NAME), in paused mode. */
async function rawTransmission(socketPath: string, name: string): Promise<net.Socket> {
  const socket = await rawConnect(socketPath);
  socket.write(optionBytes(P.NBD_OPT_EXPORT_NAME, Buffer.from(name)));
  await readExactly(socket, 10);
  return socket;
}

/**
 * Writes what `next` gives as fast as the socket takes it, without reading anything, until `next` gives nothing,
 * the socket closes, or `ms` pass. Returns the bytes handed to the socket.
 */
async function flood(socket: net.Socket, next: () => Buffer | undefined, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  let bytes = 0;
  while (!socket.destroyed && Date.now() < deadline) {
    const chunk = next();
    if (!chunk) break;
    bytes += chunk.length;
    if (!socket.write(chunk)) {
      await waitFor(socket, ['drain', 'close'], Math.max(1, deadline - Date.now()));
    }
  }
  return bytes;
}

/** Reads (in flowing mode) until the socket closes or `total` bytes arrived; bounded by `ms`. */
async function drainBytes(socket: net.Socket, total: number, ms: number): Promise<number> {
  let received = 0;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    const finish = (): void => {
      clearTimeout(timer);
      resolve();
    };
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= total) finish();
    });
    socket.once('close', finish);
    socket.resume();
  });
  return received;
}

describe('examples/nbd-server against hostile clients (bounded memory, no lockout, every reply delivered)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-hostile-'));
  const file = path.join(dir, 'disk.img');
  const MiB = 1024 * 1024;
  let socketCount = 0;

  /** A fresh server on its own socket; `extra` flags after the common ones. */
  async function start(extra: string[] = []): Promise<Server & { socket: string }> {
    const socket = path.join(dir, `s${++socketCount}.sock`);
    const server = await startServer(['--file', file, '--size', '64M', '--socket', socket, '--export', EXPORT, '--protect', 'none', ...extra]);
    return Object.assign(server, { socket });
  }

  async function stop(server: Server): Promise<void> {
    server.child.kill('SIGKILL');
    await server.exited;
  }

  afterAll(() => {
    for (const child of children) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('option flood: options sent without reading the replies are cut off after 32; RSS grows by less than 16 MiB', async () => {
    const server = await start();
    const pid = server.child.pid!;
    const c = await rawConnect(server.socket);
    const one = optionBytes(0x1234, Buffer.alloc(100, 0x41));
    const chunk = Buffer.concat(Array.from({ length: Math.floor(MiB / one.length) }, () => one));
    const before = rssMiB(pid);
    const rss = sampleRss(pid);
    let chunks = 0;
    const sent = await flood(c, () => (chunks++ < 64 ? chunk : undefined), 8000);
    const closed = await closedWithin(c, 5000);
    const peak = rss.stop();
    console.log(`option flood: ${(sent / MiB).toFixed(1)} MiB of options sent; server RSS ${before.toFixed(1)} -> peak ${peak.toFixed(1)} MiB`);
    expect(closed).toBe(true);
    expect(peak - before).toBeLessThan(16);
    await waitForLog(server, /connection 1: more than 32 options without choosing an export; disconnecting/);
    // 31 options and then GO: still within the limit.
    const fine = await NbdClient.connect({ socket: server.socket });
    for (let i = 0; i < 31; i++) await expect(fine.option(0x1234)).rejects.toMatchObject({ type: P.NBD_REP_ERR_UNSUP });
    expect(await fine.go(EXPORT)).toMatchObject({ size: 64 * MiB });
    await fine.disconnect();
    // One option too many closes the connection.
    const greedy = await NbdClient.connect({ socket: server.socket });
    for (let i = 0; i < 32; i++) await expect(greedy.option(0x1234)).rejects.toMatchObject({ type: P.NBD_REP_ERR_UNSUP });
    await expect(greedy.go(EXPORT)).rejects.toThrow(/closed/);
    await stop(server);
  });

  it('option data: at most 4352 bytes; a 4097-byte export name gets NBD_REP_ERR_TOO_BIG; replies echo names escaped and cut to 64 characters', async () => {
    const server = await start();
    const c = await NbdClient.connect({ socket: server.socket });
    const infoData = (name: Buffer): Buffer => {
      const data = Buffer.alloc(4 + name.length + 2);
      data.writeUInt32BE(name.length, 0);
      name.copy(data, 4);
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
    // Over the option data limit: disconnected without the data being read.
    c.sendOption(0x1234, Buffer.alloc(P.MAX_OPTION_LENGTH + 1));
    await expect(c.readOptionReply()).rejects.toThrow(/closed/);
    await waitForLog(server, /option 4660 with 4353 bytes of data \(at most 4352\); disconnecting/);

    // A name chosen to forge a log line is logged escaped, on one line.
    const forger = await NbdClient.connect({ socket: server.socket });
    await expect(forger.exportName('x\nnbd-server: FORGED line')).rejects.toThrow(/closed/);
    await waitForLog(server, /NBD_OPT_EXPORT_NAME for unknown export "x\\nnbd-server: FORGED line"; disconnecting/);
    expect(server.stderr()).not.toMatch(/^nbd-server: FORGED/m);
    await stop(server);
  });

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
    await waitForLog(server, /connection 3: (closed by the client in the middle of a message|reset by the client with requests in flight)/);
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

  it('the limit flags are validated before anything is opened (exit 2)', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--buffer-memory', '16M'], /--buffer-memory must hold one 32 MiB request/],
      [['--max-connections', '0'], /--max-connections wants 1\.\.4096; got 0/],
      [['--handshake-timeout', '0'], /--handshake-timeout wants seconds, 0\.1\.\.86400; got 0/],
      [['--stall-timeout', '1e3'], /--stall-timeout wants seconds/],
      [['--evict-idle-after', '0.01'], /--evict-idle-after wants seconds, 0\.1\.\.86400; got 0\.01/],
    ];
    for (const [flags, message] of cases) {
      const missing = path.join(dir, 'never-created.img');
      const refused = spawnServer(['--file', missing, '--size', '1M', '--socket', path.join(dir, 'never.sock'), ...flags]);
      expect(await refused.exited).toBe(2);
      expect(refused.stderr()).toMatch(message);
      expect(fs.existsSync(missing)).toBe(false);
    }
  });

  it('--read-only: READ_ONLY advertised, WRITE / TRIM / WRITE_ZEROES answered EPERM, the file unchanged; --size is refused', async () => {
    const before = sha256(fs.readFileSync(file));
    const socket = path.join(dir, 'ro.sock');
    const server = await startServer(['--file', file, '--socket', socket, '--export', EXPORT, '--protect', 'none', '--read-only']);
    expect(server.stderr()).toMatch(/listening on .*read-only\)/);
    const c = await NbdClient.connect({ socket });
    expect((await c.describe(EXPORT)).transmissionFlags & P.NBD_FLAG_READ_ONLY).toBe(P.NBD_FLAG_READ_ONLY);
    await c.go(EXPORT);
    expect(c.info!.transmissionFlags & P.NBD_FLAG_READ_ONLY).toBe(P.NBD_FLAG_READ_ONLY);
    expect((await c.request(P.NBD_CMD_WRITE, { offset: 0, payload: pattern(4096, 1) })).error).toBe(P.NBD_EPERM);
    expect((await c.request(P.NBD_CMD_TRIM, { offset: 0, length: 4096 })).error).toBe(P.NBD_EPERM);
    expect((await c.request(P.NBD_CMD_WRITE_ZEROES, { offset: 0, length: 4096 })).error).toBe(P.NBD_EPERM);
    expect((await c.read(0, 4096)).equals(fs.readFileSync(file).subarray(0, 4096))).toBe(true);
    await c.flush();
    await c.disconnect();
    expect(sha256(fs.readFileSync(file))).toBe(before);
    await stop(server);
    const refused = spawnServer(['--file', file, '--socket', socket, '--read-only', '--size', '4M']);
    expect(await refused.exited).toBe(2);
    expect(refused.stderr()).toMatch(/--read-only takes no --size/);
  });
});

/** CAP_IPC_LOCK in the effective set: locking more than RLIMIT_MEMLOCK allows (the code scope alone is ~100 MiB). */
function holdsCapIpcLock(): boolean {
  return holdsCapability(14);
}

describe.runIf(holdsCapIpcLock())('examples/nbd-server --mlock [needs CAP_IPC_LOCK]', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-server-mlock-'));
  const file = path.join(dir, 'disk.img');
  const socket = path.join(dir, 'nbd.sock');
  let server: Server;
  afterAll(() => {
    server?.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('locks its code and 4 payload buffers, says so in its report, and VmLck holds both', async () => {
    server = await startServer(['--file', file, '--socket', socket, '--export', EXPORT, '--size', '8M', '--protect', 'none', '--mlock', '--locked-buffers', '4']);
    const report = protectionReport(server.stderr());
    expect(report.steps).toContainEqual(expect.objectContaining({ step: 'lockMemory', done: true }));
    expect(report.lockedBuffers).toEqual({ count: 4, bufferSize: (1 << 20) + 16 });
    expect(report.lockedBytes.buffers).toBeGreaterThanOrEqual(4 * ((1 << 20) + 16));
    expect(report.lockedBytes.code).toBeGreaterThan(32 << 20);
    const vmLckKiB = Number(/^VmLck:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${server.child.pid}/status`, 'latin1'))![1]);
    expect(vmLckKiB * 1024).toBeGreaterThanOrEqual(report.lockedBytes.code + report.lockedBytes.buffers);
  });

  it('pipelined READs and WRITEs, many more than the locked buffers and some larger than one, all read back intact', async () => {
    const c = await openExport({ socket }, EXPORT);
    const model = Buffer.alloc(8 << 20);
    const random = crypto.createHash('sha256'); // deterministic sizes and offsets
    const ops: Array<[number, Buffer]> = [];
    for (let i = 0; i < 96; i++) {
      const h = random.copy().update(String(i)).digest();
      const length = i % 16 === 15 ? (2 << 20) + 3 : 1 + (h.readUInt32BE(0) % (1 << 20)); // every 16th is over 1 MiB
      const offset = h.readUInt32BE(4) % ((8 << 20) - length);
      ops.push([offset, pattern(length, i)]);
    }
    // In waves of 32: each wave overlaps itself, so buffers are taken, given back and reused while others are busy.
    for (let wave = 0; wave < ops.length; wave += 32) {
      const batch = ops.slice(wave, wave + 32);
      const writes = batch.map(([offset, data]) => c.write(offset, data));
      for (const [offset, data] of batch) data.copy(model, offset);
      const reads = batch.map(([offset, data]) => c.read(offset, data.length));
      await Promise.all(writes);
      const got = await Promise.all(reads);
      got.forEach((g, i) => expect(sha256(g)).toBe(sha256(model.subarray(batch[i]![0], batch[i]![0] + batch[i]![1].length))));
    }
    expect(sha256(await c.read(0, 8 << 20))).toBe(sha256(model));
    await c.disconnect();
  });
});
