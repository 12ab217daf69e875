/**
 * The example NBD server against real NBD clients: libnbd (nbdinfo, nbdsh, nbdcopy) and qemu (qemu-img, qemu-io),
 * and against nbdkit, the reference server, where the protocol leaves a server a choice. Each tool comes from a
 * Debian package that .ci/run installs; a test whose tool is missing is skipped and says which package it needs.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../client';
import * as P from '../protocol';
import {
  buildExample,
  closedWithin,
  EXPORT,
  killServers,
  MiB,
  optionBytes,
  pattern,
  rawConnect,
  rawTransmission,
  sha256,
  startServer,
  stopServer,
  tempDir,
  type Server,
} from './helpers';

/**
 * nbdsh runs `python3 -m nbd`: python3-libnbd installs that module for Debian's /usr/bin/python3, which a pyenv or
 * virtualenv python3 earlier in PATH lacks.
 */
const NBDSH_ENV = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

function works(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): boolean {
  return spawnSync(command, args, { env, stdio: 'ignore', timeout: 30_000 }).status === 0;
}

const LIBNBD = works('nbdinfo', ['--version']) && works('nbdcopy', ['--version']);
const NBDSH = works('nbdsh', ['-c', 'pass'], NBDSH_ENV);
const QEMU = works('qemu-img', ['--version']) && works('qemu-io', ['--version']);
const NBDKIT = works('nbdkit', ['--version']);

/** The suffix of a test's name when it cannot run here. */
function needs(...missing: Array<[boolean, string]>): string {
  const packages = missing.filter(([ok]) => !ok).map(([, pkg]) => pkg);
  return packages.length ? ` (SKIPPED: needs ${packages.join(' and ')}, which .ci/run installs)` : '';
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a client (never through a shell), bounded to 60 s. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { env, timeout: 60_000, maxBuffer: 16 * MiB, encoding: 'utf8' }, (err, stdout, stderr) => {
      const status = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}

/** Runs a client that must succeed; returns its stdout. */
async function runOk(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(command, args, env);
  expect(r.status, `${command} ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/** Runs a Python script in nbdsh with `URI` in its environment; it prints one JSON value, which is returned. */
async function nbdsh(uri: string, script: string): Promise<any> {
  const out = await runOk('nbdsh', ['-c', script], { ...NBDSH_ENV, URI: uri });
  return JSON.parse(out.trim().split('\n').at(-1)!);
}

function unixUri(socket: string, name = EXPORT): string {
  return `nbd+unix:///${name}?socket=${socket}`;
}

describe('examples/nbd-server with real NBD clients (libnbd, qemu) and nbdkit as the reference', () => {
  const { dir, remove } = tempDir('nbd-clients-');
  const SIZE = 32 * MiB;
  const content = path.join(dir, 'content.img');
  let rw: Server & { socket: string };
  let ro: Server & { socket: string };
  const nbdkits = new Set<ChildProcess>();

  async function start(file: string, name: string, extra: string[] = []): Promise<Server & { socket: string }> {
    const socket = path.join(dir, `${name}.sock`);
    const server = await startServer(['--file', file, '--socket', socket, '--export', EXPORT, '--protect', 'none', ...extra]);
    return Object.assign(server, { socket });
  }

  /** nbdkit's file plugin serving `file` on a Unix socket (`-r`: read-only); its URI names the default export. */
  async function startNbdkit(file: string, readOnly: boolean): Promise<string> {
    const socket = path.join(dir, `nbdkit-${nbdkits.size}.sock`);
    const child = spawn('nbdkit', ['--exit-with-parent', '-f', '-U', socket, ...(readOnly ? ['-r'] : []), 'file', file], { stdio: 'ignore' });
    nbdkits.add(child);
    for (const started = Date.now(); !fs.existsSync(socket); ) {
      if (Date.now() - started > 10_000 || child.exitCode !== null) throw new Error(`nbdkit did not start (exit ${child.exitCode})`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return `nbd+unix:///?socket=${socket}`;
  }

  beforeAll(async () => {
    buildExample();
    fs.writeFileSync(content, pattern(SIZE, 1));
    fs.copyFileSync(content, path.join(dir, 'ro.img'));
    rw = await start(path.join(dir, 'rw.img'), 'rw', ['--size', String(SIZE)]);
    ro = await start(path.join(dir, 'ro.img'), 'ro', ['--read-only']);
  }, 60_000);

  afterAll(() => {
    for (const child of nbdkits) child.kill('SIGKILL');
    killServers();
    remove();
  });

  it.runIf(LIBNBD)(`nbdinfo: the export, its size, flags and block sizes; --list lists it${needs([LIBNBD, 'libnbd-bin'])}`, async () => {
    const info = JSON.parse(await runOk('nbdinfo', ['--json', unixUri(rw.socket)]));
    expect(info).toMatchObject({ protocol: 'newstyle-fixed', TLS: false, structured: false });
    expect(info.exports[0]).toMatchObject({
      'export-name': EXPORT,
      'export-size': SIZE,
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_multi_conn: true,
      block_size_minimum: 1,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });
    const list = JSON.parse(await runOk('nbdinfo', ['--list', '--json', `nbd+unix://?socket=${rw.socket}`]));
    expect(list.exports.map((e: { 'export-name': string }) => e['export-name'])).toEqual([EXPORT]);
  });

  it.runIf(LIBNBD)(`nbdinfo on --read-only: read-only, FLUSH and MULTI_CONN, and no FUA, TRIM or WRITE_ZEROES${needs([LIBNBD, 'libnbd-bin'])}`, async () => {
    const info = JSON.parse(await runOk('nbdinfo', ['--json', unixUri(ro.socket)])).exports[0];
    expect(info).toMatchObject({ is_read_only: true, can_flush: true, can_multi_conn: true, can_fua: false, can_trim: false, can_zero: false });
  });

  it.runIf(LIBNBD && NBDKIT)(`nbdinfo: --read-only advertises exactly what nbdkit -r advertises${needs([LIBNBD, 'libnbd-bin'], [NBDKIT, 'nbdkit'])}`, async () => {
    const flags = async (uri: string): Promise<Record<string, boolean>> => {
      const e = JSON.parse(await runOk('nbdinfo', ['--json', uri])).exports[0];
      return Object.fromEntries(['is_read_only', 'can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_multi_conn'].map((k) => [k, e[k]]));
    };
    expect(await flags(unixUri(ro.socket))).toEqual(await flags(await startNbdkit(content, true)));
  });

  /** Sends every kind of request to a read-only export (strict mode off: also what was not advertised). */
  const READ_ONLY_REQUESTS = `
import errno, json, os
h.connect_uri(os.environ['URI'])
h.set_strict_mode(0)
out = {}
def t(name, f):
    try:
        f()
        out[name] = 'ok'
    except nbd.Error as e:
        out[name] = errno.errorcode.get(e.errnum, str(e.errnum))
t('write', lambda: h.pwrite(b'x' * 512, 0))
t('write+fua', lambda: h.pwrite(b'x' * 512, 0, nbd.CMD_FLAG_FUA))
t('trim', lambda: h.trim(512, 0))
t('zero', lambda: h.zero(512, 0))
t('zero+fua', lambda: h.zero(512, 0, nbd.CMD_FLAG_FUA))
t('read+fua', lambda: h.pread(512, 0, nbd.CMD_FLAG_FUA))
t('flush+fua', lambda: h.flush(nbd.CMD_FLAG_FUA))
t('read', lambda: h.pread(512, 0))
t('flush', lambda: h.flush())
h.shutdown()
print(json.dumps(out))
`;
  const READ_ONLY_ANSWERS = {
    write: 'EPERM',
    'write+fua': 'EPERM',
    trim: 'EPERM',
    zero: 'EPERM',
    'zero+fua': 'EPERM',
    'read+fua': 'EINVAL',
    'flush+fua': 'EINVAL',
    read: 'ok',
    flush: 'ok',
  };

  it.runIf(NBDSH)(`nbdsh on --read-only: every kind of write gets EPERM (with FUA too), FUA on READ and FLUSH gets EINVAL${needs([NBDSH, 'python3-libnbd'])}`, async () => {
    expect(await nbdsh(unixUri(ro.socket), READ_ONLY_REQUESTS)).toEqual(READ_ONLY_ANSWERS);
    expect(sha256(fs.readFileSync(path.join(dir, 'ro.img')))).toBe(sha256(fs.readFileSync(content)));
  });

  it.runIf(NBDSH && NBDKIT)(`nbdsh: nbdkit -r answers those requests the same${needs([NBDSH, 'python3-libnbd'], [NBDKIT, 'nbdkit'])}`, async () => {
    expect(await nbdsh(await startNbdkit(content, true), READ_ONLY_REQUESTS)).toEqual(READ_ONLY_ANSWERS);
  });

  it.runIf(NBDSH)(`nbdsh: 100 NBD_OPT_INFO and an NBD_OPT_LIST in option mode, then GO and a read${needs([NBDSH, 'python3-libnbd'])}`, async () => {
    const result = await nbdsh(
      unixUri(rw.socket),
      `
import json, os
h.set_opt_mode(True)
h.connect_uri(os.environ['URI'])
names = []
h.opt_list(lambda name, description: names.append(name) or 0)
for i in range(100):
    h.opt_info()
h.opt_go()
print(json.dumps({'names': names, 'size': h.get_size(), 'read': len(h.pread(4096, 0))}))
`,
    );
    expect(result).toEqual({ names: [EXPORT], size: SIZE, read: 4096 });
  });

  it.runIf(NBDSH)(`nbdsh: unaligned writes, FUA, FLUSH, WRITE_ZEROES, TRIM, 256 aio requests in flight, and a second connection that sees flushed data${needs([NBDSH, 'python3-libnbd'])}`, async () => {
    const result = await nbdsh(
      unixUri(rw.socket),
      `
import json, os
uri = os.environ['URI']
h.connect_uri(uri)
checks = {}
data = bytes((i * 7 + 3) & 0xff for i in range(100001))
h.pwrite(data, 12345)
checks['unaligned'] = h.pread(len(data), 12345) == data
h.pwrite(b'\\xaa' * 4096, 1 << 20, nbd.CMD_FLAG_FUA)
checks['fua'] = h.pread(4096, 1 << 20) == b'\\xaa' * 4096
h.zero(5000, 12345 + 1000, nbd.CMD_FLAG_NO_HOLE)
checks['zero'] = h.pread(5000, 13345) == bytes(5000)
h.trim(65536, 2 << 20)
h.flush()
# 128 writes, then 128 reads of what they wrote, all in flight at once
base = 4 << 20
writes = [nbd.Buffer.from_bytearray(bytearray([i]) * 65536) for i in range(128)]
for i, b in enumerate(writes):
    h.aio_pwrite(b, base + i * 65536)
while h.aio_in_flight() > 0:
    h.poll(-1)
reads = [nbd.Buffer(65536) for i in range(128)]
order = []
for i, b in enumerate(reads):
    h.aio_pread(b, base + i * 65536, completion=lambda err, i=i: order.append(i) or 1)
while h.aio_in_flight() > 0:
    h.poll(-1)
checks['aio'] = all(b.to_bytearray() == bytearray([i]) * 65536 for i, b in enumerate(reads))
checks['aio_all_completed'] = sorted(order) == list(range(128))
h.pwrite(b'multi-conn', 30 << 20)
h.flush()
h2 = nbd.NBD()
h2.connect_uri(uri)
checks['second_connection'] = h2.pread(10, 30 << 20) == b'multi-conn'
h2.shutdown()
h.shutdown()
print(json.dumps(checks))
`,
    );
    expect(result).toEqual({ unaligned: true, fua: true, zero: true, aio: true, aio_all_completed: true, second_connection: true });
  });

  it.runIf(LIBNBD)(`nbdcopy: 32 MiB into the export and back out, 4 connections and 16 requests in flight each, byte for byte${needs([LIBNBD, 'libnbd-bin'])}`, async () => {
    const back = path.join(dir, 'back.img');
    await runOk('nbdcopy', ['--flush', '-C', '4', '-R', '16', content, unixUri(rw.socket)]);
    await runOk('nbdcopy', ['-C', '4', '-R', '16', unixUri(rw.socket), back]);
    expect(sha256(fs.readFileSync(back))).toBe(sha256(fs.readFileSync(content)));
    // And the flushed copy is in the backing file itself.
    expect(sha256(fs.readFileSync(path.join(dir, 'rw.img')))).toBe(sha256(fs.readFileSync(content)));
  });

  it.runIf(QEMU)(`qemu-img: info, convert into the export, compare equal; one changed sector and compare says they differ${needs([QEMU, 'qemu-utils'])}`, async () => {
    const uri = unixUri(rw.socket);
    expect(await runOk('qemu-img', ['info', uri])).toMatch(new RegExp(`virtual size: 32 MiB \\(${SIZE} bytes\\)`));
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', content, uri]);
    expect(await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', content, uri])).toMatch(/Images are identical/);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 7M 512', uri]);
    const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', content, uri]);
    expect(differ.status).toBe(1);
    expect(differ.stdout).toMatch(/Content mismatch at offset 7340032/);
  });

  it.runIf(QEMU)(`qemu-io: write and read back patterns, with FUA, zeroes, discard, aio and flush; -r on --read-only reads, a read-write open is refused${needs([QEMU, 'qemu-utils'])}`, async () => {
    const commands = [
      'write -P 0xab 0 1M',
      'read -P 0xab 0 1M',
      'write -f -P 0xcd 1M 64k',
      'read -P 0xcd 1M 64k',
      'write -z 4k 60k',
      'read -P 0 4k 60k',
      'read -P 0xab 0 4k',
      'discard 2M 64k',
      'aio_write -P 0x11 3M 64k',
      'aio_flush',
      'read -P 0x11 3M 64k',
      'flush',
    ];
    await runOk('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), unixUri(rw.socket)]);
    const first = fs.readFileSync(content).subarray(0, 4096);
    const dump = await runOk('qemu-io', ['-r', '-f', 'raw', '-c', 'read -v 0 16', unixUri(ro.socket)]);
    expect(dump.replace(/\s+/g, ' ')).toContain([...first.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join(' '));
    const refused = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 4k', unixUri(ro.socket)]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/Permission denied/);
  });

  it.runIf(NBDKIT)(`options longer than the server parses get the error reply nbdkit gives, on a connection that stays usable; over 64 MiB both disconnect${needs([NBDKIT, 'nbdkit'])}`, async () => {
    const kit = (await startNbdkit(content, false)).replace(/^nbd\+unix:\/\/\/\?socket=/, '');
    const answers = async (socket: string): Promise<unknown[]> => {
      const c = await NbdClient.connect({ socket });
      const out: unknown[] = [];
      for (const [option, length] of [[0x1234, 4353], [0x1234, MiB], [P.NBD_OPT_LIST, 5000]] as const) {
        out.push(await c.option(option, Buffer.alloc(length, 0x41)).then(() => 'ok', (e: { type?: number }) => e.type ?? 'closed'));
      }
      out.push((await c.list()).length > 0 ? 'usable' : 'no exports');
      c.destroy();
      const flooder = await rawConnect(socket);
      const header = optionBytes(0x1234);
      header.writeUInt32BE(64 * MiB + 1, 12); // over the 64 MiB both answer
      flooder.write(header);
      out.push((await closedWithin(flooder, 5000)) ? 'closed' : 'open');
      flooder.destroy();
      return out;
    };
    const expected = [P.NBD_REP_ERR_UNSUP, P.NBD_REP_ERR_UNSUP, P.NBD_REP_ERR_INVALID, 'usable', 'closed'];
    expect(await answers(rw.socket)).toEqual(expected);
    expect(await answers(kit)).toEqual(expected);
  });

  it.runIf(LIBNBD)(`nbdinfo connects after each of 40 clients that reset their TCP connection with 2 x 32 MiB READs in flight (--max-connections 2)${needs([LIBNBD, 'libnbd-bin'])}`, async () => {
    const server = await startServer(['--file', path.join(dir, 'rw.img'), '--port', '0', '--export', EXPORT, '--protect', 'none', '--max-connections', '2']);
    const port = Number(/listening on 127\.0\.0\.1:(\d+) /.exec(server.stderr())![1]);
    const reads = Buffer.concat([P.requestHeader(0, P.NBD_CMD_READ, 1n, 0n, 32 * MiB), P.requestHeader(0, P.NBD_CMD_READ, 2n, 0n, 32 * MiB)]);
    for (let round = 0; round < 40; round++) {
      const dropping: net.Socket = await rawTransmission({ port }, EXPORT);
      dropping.write(reads);
      dropping.resetAndDestroy();
      const size = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/${EXPORT}`]);
      expect(size, `round ${round}: ${size.stderr}\n${server.stderr().slice(-1500)}`).toMatchObject({ status: 0, stdout: `${SIZE}\n` });
    }
    await stopServer(server);
  }, 90_000);
});
