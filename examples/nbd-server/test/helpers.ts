/**
 * What the example's test files share: building the example, starting and stopping its server, and raw sockets for
 * hostile clients (floods, trickles, resets) and for reading what the server sends.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'vitest';
import { ROOT } from '../../../test/helpers';
import type { NbdTarget } from '../client';
import * as P from '../protocol';

export const EXAMPLE = path.resolve(__dirname, '..');
export const SERVER = path.join(EXAMPLE, 'dist', 'server.js');
export const EXPORT = 'test';
export const MiB = 1024 * 1024;

/**
 * Compiles the example (its own tsconfig, into examples/nbd-server/dist, importing the package's dist/) unless its
 * output is newer than its sources and the package's typings. Test files run in parallel processes: a lock directory
 * makes the others wait for the first one's compile instead of compiling over it.
 */
export function buildExample(): void {
  const dist = path.join(EXAMPLE, 'dist');
  fs.mkdirSync(dist, { recursive: true });
  const lock = path.join(dist, '.build-lock');
  const started = Date.now();
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock left by a run that was killed mid-compile (a compile takes seconds, not minutes).
      if (Date.now() - fs.statSync(lock).mtimeMs > 120_000) fs.rmSync(lock, { recursive: true, force: true });
      if (Date.now() - started > 180_000) throw new Error(`${lock} is held: is another test run compiling the example?`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    const mtime = (file: string): number => (fs.existsSync(file) ? fs.statSync(file).mtimeMs : Infinity);
    const inputs = [path.join(EXAMPLE, 'tsconfig.json'), path.join(ROOT, 'dist', 'index.d.ts')];
    const sources = fs.readdirSync(EXAMPLE).filter((f) => f.endsWith('.ts'));
    const newestInput = Math.max(...[...inputs, ...sources.map((f) => path.join(EXAMPLE, f))].map(mtime));
    const outputs = sources.map((f) => path.join(dist, f.replace(/\.ts$/, '.js')));
    const stale = outputs.some((f) => !fs.existsSync(f) || fs.statSync(f).mtimeMs < newestInput);
    if (stale) execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', EXAMPLE], { cwd: ROOT, stdio: 'pipe' });
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/** A fresh temporary directory, removed by the returned function. */
export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export interface Server {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

const children = new Set<ChildProcess>();

/** Kills every server still running (for afterAll). */
export function killServers(): void {
  for (const child of children) child.kill('SIGKILL');
}

export function spawnServer(args: string[]): Server {
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
export async function startServer(args: string[]): Promise<Server> {
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
export async function waitForLog(server: Server, pattern: RegExp, ms = 5000): Promise<void> {
  for (const started = Date.now(); !pattern.test(server.stderr()); ) {
    if (Date.now() - started > ms) expect(server.stderr()).toMatch(pattern);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The one JSON line the server logs about its protection. */
export function protectionReport(stderr: string): Record<string, any> {
  const line = /^nbd-server: (\{"event":"protection".*)$/m.exec(stderr);
  expect(line, stderr).not.toBeNull();
  return JSON.parse(line![1]!);
}

export function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

export function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}

/** Kills the server (SIGKILL) and waits for it to exit. */
export async function stopServer(server: Server): Promise<void> {
  server.child.kill('SIGKILL');
  await server.exited;
}


// ---- raw sockets ---------------------------------------------------------------------------------------------------

/** The resident set of a process in MiB, from /proc/PID/status. */
export function rssMiB(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/** Samples a process's RSS every 50 ms; stop() returns the peak in MiB. */
export function sampleRss(pid: number): { stop: () => number } {
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
export function waitFor(socket: net.Socket, events: string | string[], ms: number): Promise<boolean> {
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
export function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  return socket.closed ? Promise.resolve(true) : waitFor(socket, 'close', ms);
}

/** Exactly `n` bytes from a socket read in paused mode (nothing else reads it). */
export async function readExactly(socket: net.Socket, n: number): Promise<Buffer> {
  for (;;) {
    const chunk = socket.read(n) as Buffer | null;
    if (chunk) return chunk;
    if (socket.closed || socket.readableEnded) throw new Error(`closed before ${n} bytes arrived`);
    await waitFor(socket, ['readable', 'close'], 10_000);
  }
}

/** Connects, reads the greeting and sends the client flags (FIXED_NEWSTYLE | NO_ZEROES). Nothing reads it after. */
export async function rawConnect(target: string | NbdTarget): Promise<net.Socket> {
  const where = typeof target === 'string' ? { socket: target } : target;
  const socket = 'socket' in where ? net.connect(where.socket) : net.connect({ host: where.host ?? '127.0.0.1', port: where.port });
  socket.on('error', () => {});
  await waitFor(socket, 'connect', 10_000);
  await readExactly(socket, 18);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
  socket.write(flags);
  return socket;
}

export function optionBytes(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(16);
  P.IHAVEOPT.copy(header, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

/** A raw socket in transmission (through NBD_OPT_EXPORT_NAME), in paused mode. */
export async function rawTransmission(target: string | NbdTarget, name: string): Promise<net.Socket> {
  const socket = await rawConnect(target);
  socket.write(optionBytes(P.NBD_OPT_EXPORT_NAME, Buffer.from(name)));
  await readExactly(socket, 10);
  return socket;
}

/**
 * Writes what `next` gives as fast as the socket takes it, without reading anything, until `next` gives nothing,
 * the socket closes, or `ms` pass. Returns the bytes handed to the socket.
 */
export async function flood(socket: net.Socket, next: () => Buffer | undefined, ms: number): Promise<number> {
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
export async function drainBytes(socket: net.Socket, total: number, ms: number): Promise<number> {
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
