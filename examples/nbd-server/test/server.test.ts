/**
 * The example NBD server (examples/nbd-server): its protection report on this machine (EPERM without
 * CAP_SYS_RESOURCE: best effort serves, --require-protection refuses), the protocol through the example's test
 * client, persistence, its command line and --read-only. Real clients (libnbd, qemu) are in real-clients.test.ts,
 * hostile ones in hostile.test.ts.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdsCapSysResource } from '../../../test/helpers';
import { NbdClient, NbdCommandError, NbdOptionError, openExport, type NbdTarget } from '../client';
import * as P from '../protocol';
import {
  buildExample,
  EXPORT,
  killServers,
  pattern,
  protectionReport,
  sha256,
  spawnServer,
  startServer,
  stopServer,
  tempDir,
  waitForLog,
  type Server,
} from './helpers';

const SIZE = 4 * 1024 * 1024;
const capable = holdsCapSysResource();

beforeAll(buildExample, 60_000);

describe('examples/nbd-server', () => {
  const { dir, remove } = tempDir('nbd-server-');
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
    killServers();
    remove();
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
    // It closed its Unix socket: the server's zero-length probe write fails at once (EPIPE).
    await waitForLog(server, /connection \d+: the client is gone \(EPIPE\)/);
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

  it('--read-only: only READ_ONLY, FLUSH and MULTI_CONN advertised (no TRIM, WRITE_ZEROES, FUA); writes of every kind get EPERM, FUA elsewhere EINVAL; the file unchanged; --size is refused', async () => {
    const before = sha256(fs.readFileSync(file));
    const socket = path.join(dir, 'ro.sock');
    const server = await startServer(['--file', file, '--socket', socket, '--export', EXPORT, '--protect', 'none', '--read-only']);
    expect(server.stderr()).toMatch(/listening on .*read-only\)/);
    const c = await NbdClient.connect({ socket });
    const advertised = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_READ_ONLY | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_CAN_MULTI_CONN;
    expect((await c.describe(EXPORT)).transmissionFlags).toBe(advertised);
    await c.go(EXPORT);
    expect(c.info!.transmissionFlags).toBe(advertised);
    const errorOf = async (type: number, options: Parameters<NbdClient['request']>[1]) => (await c.request(type, options)).error;
    for (const flags of [0, P.NBD_CMD_FLAG_FUA]) {
      expect(await errorOf(P.NBD_CMD_WRITE, { offset: 0, payload: pattern(4096, 1), flags })).toBe(P.NBD_EPERM);
      expect(await errorOf(P.NBD_CMD_TRIM, { offset: 0, length: 4096, flags })).toBe(P.NBD_EPERM);
      expect(await errorOf(P.NBD_CMD_WRITE_ZEROES, { offset: 0, length: 4096, flags })).toBe(P.NBD_EPERM);
    }
    // FUA is not advertised, so it is a flag READ and FLUSH do not take here (as nbdkit -r answers).
    expect(await errorOf(P.NBD_CMD_READ, { offset: 0, length: 512, flags: P.NBD_CMD_FLAG_FUA })).toBe(P.NBD_EINVAL);
    expect(await errorOf(P.NBD_CMD_FLUSH, { flags: P.NBD_CMD_FLAG_FUA })).toBe(P.NBD_EINVAL);
    expect((await c.read(0, 4096)).equals(fs.readFileSync(file).subarray(0, 4096))).toBe(true);
    await c.flush();
    await c.disconnect();
    expect(sha256(fs.readFileSync(file))).toBe(before);
    await stopServer(server);
    const refused = spawnServer(['--file', file, '--socket', socket, '--read-only', '--size', '4M']);
    expect(await refused.exited).toBe(2);
    expect(refused.stderr()).toMatch(/--read-only takes no --size/);
  });
});
