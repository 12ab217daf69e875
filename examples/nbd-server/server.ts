#!/usr/bin/env node
/**
 * nbd-server: an NBD server for the Linux kernel's nbd client, backed by a file, that protects itself with io-flusher.
 * See README.md in this directory.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { BackingFile } from './backing-file';
import { BufferBudget, NbdConnection, useLockedIoBuffers, type ConnectionLimits } from './connection';
import { NBD_SIMPLE_REPLY_SIZE } from './protocol';
import { loadIoFlusher } from './load-io-flusher';
import type { PrepareDaemonReport } from '../../dist/index.js';

const USAGE = `Usage: node examples/nbd-server/dist/server.js --file PATH [--size BYTES] (--socket PATH | --port N [--host ADDR])
         [--export NAME] [--read-only] [--protect process|exec|none] [--mlock] [--oom-score-adj N] [--require-protection]
         [--max-connections N] [--handshake-timeout S] [--stall-timeout S] [--evict-idle-after S] [--buffer-memory BYTES]

  --file PATH            backing file (created when missing, which needs --size)
  --size BYTES           export size; suffixes K, M, G, T (powers of 1024). Creates or grows the file, never shrinks
                         it. Default: the file's size
  --socket PATH          listen on this Unix socket
  --port N               listen on TCP port N (0: any free port) of --host
  --host ADDR            a loopback address only (127.0.0.0/8 or ::1); default 127.0.0.1
  --export NAME          the export's name (default: "disk"); the default (empty) name is accepted too
  --read-only            open the file read-only, advertise READ_ONLY (and no TRIM, WRITE_ZEROES or FUA), answer
                         writes with EPERM (no --size)
  --protect MODE         process (default): prepareDaemon() puts every thread in IO_FLUSHER state, best effort;
                         exec: started through \`io-flusher exec\`, only report the threads' state;
                         none: no IO_FLUSHER
  --mlock                lock the code scope (node, libraries, addons) and take READ/WRITE payload buffers of up to
                         1 MiB from a pool of locked Buffers (--locked-buffers), so serving the device never waits
                         for a page-in of the server's own code or I/O buffers
  --locked-buffers N     with --mlock: how many 1 MiB locked payload buffers (default 16; requests beyond them, or
                         larger than 1 MiB, use ordinary memory)
  --oom-score-adj N      set /proc/self/oom_score_adj (-1000: never OOM-killed; lowering needs CAP_SYS_RESOURCE)
  --require-protection   refuse to start (exit 3) unless every step asked for is in effect
  --max-connections N    connections at once (default 64); when all are taken, a new client takes the slot of the
                         connection negotiating for over 1 s, or else of the connection idle longest, if it has
                         been idle --evict-idle-after seconds; else it is refused
  --handshake-timeout S  seconds from connecting to choosing an export (default 10)
  --stall-timeout S      seconds a client may take to accept 1 MiB of waiting replies, or to send a WRITE's
                         payload, before it is disconnected (default 30)
  --evict-idle-after S   see --max-connections (default 60)
  --buffer-memory BYTES  READ/WRITE payload memory shared by all connections; suffixes K, M, G (default 256M,
                         at least 32M)

Exit status: 0 after SIGTERM/SIGINT; 1 failure; 2 usage error; 3 protection required but not in effect.
`;

/** When every connection slot is taken, a connection still negotiating after this long can be evicted. */
const NEGOTIATION_EVICTABLE_MS = 1000;

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;
const EXIT_UNPROTECTED = 3;

class UsageError extends Error {}

type ProtectMode = 'process' | 'exec' | 'none';

interface Options {
  file: string;
  size?: number;
  socket?: string;
  host: string;
  port?: number;
  exportName: string;
  protect: ProtectMode;
  mlock: boolean;
  lockedBuffers: number;
  oomScoreAdj?: number;
  requireProtection: boolean;
  readOnly: boolean;
  maxConnections: number;
  limits: ConnectionLimits;
  evictIdleMs: number;
  bufferMemory: number;
}

function log(message: string): void {
  process.stderr.write(`nbd-server: ${message}\n`);
}

function parseSize(text: string): number {
  const m = /^(\d+)([KMGT])?$/i.exec(text);
  if (!m) throw new UsageError(`--size wants a number of bytes, optionally with K, M, G or T; got ${text}`);
  const size = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] ?? ' ').toUpperCase());
  if (!Number.isSafeInteger(size) || size <= 0) throw new UsageError(`--size out of range: ${text}`);
  return size;
}

function parseCount(flag: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d{1,9}$/.test(text) || n < min || n > max) throw new UsageError(`${flag} wants ${min}..${max}; got ${text}`);
  return n;
}

/** Seconds (decimals allowed, 0.1 to 86400) as milliseconds. */
function parseSeconds(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback * 1000;
  const n = Number(text);
  if (!/^\d{1,5}(\.\d{1,3})?$/.test(text) || n < 0.1 || n > 86400) throw new UsageError(`${flag} wants seconds, 0.1..86400; got ${text}`);
  return Math.round(n * 1000);
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

function isLoopback(host: string): boolean {
  const family = net.isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

function parseOptions(argv: string[]): Options {
  let values: ReturnType<typeof parse>['values'];
  function parse() {
    return parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        file: { type: 'string' },
        size: { type: 'string' },
        socket: { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        export: { type: 'string' },
        protect: { type: 'string' },
        mlock: { type: 'boolean' },
        'locked-buffers': { type: 'string' },
        'oom-score-adj': { type: 'string' },
        'require-protection': { type: 'boolean' },
        'read-only': { type: 'boolean' },
        'max-connections': { type: 'string' },
        'handshake-timeout': { type: 'string' },
        'stall-timeout': { type: 'string' },
        'evict-idle-after': { type: 'string' },
        'buffer-memory': { type: 'string' },
        help: { type: 'boolean' },
      },
    });
  }
  try {
    values = parse().values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (!values.file) throw new UsageError('--file is required');
  if ((values.socket === undefined) === (values.port === undefined)) throw new UsageError('give exactly one of --socket PATH and --port N');
  if (values.host !== undefined && values.port === undefined) throw new UsageError('--host goes with --port');
  const host = values.host ?? '127.0.0.1';
  if (!isLoopback(host)) throw new UsageError(`--host must be a loopback address (127.0.0.0/8 or ::1), not ${host}: this example is not for networks`);
  let port: number | undefined;
  if (values.port !== undefined) {
    port = Number(values.port);
    if (!/^\d{1,5}$/.test(values.port) || port > 65535) throw new UsageError(`--port wants 0..65535; got ${values.port}`);
  }
  const protect = (values.protect ?? 'process') as ProtectMode;
  if (!['process', 'exec', 'none'].includes(protect)) throw new UsageError(`--protect wants process, exec or none; got ${values.protect}`);
  let oomScoreAdj: number | undefined;
  if (values['oom-score-adj'] !== undefined) {
    oomScoreAdj = Number(values['oom-score-adj']);
    if (!/^-?\d{1,4}$/.test(values['oom-score-adj']) || oomScoreAdj < -1000 || oomScoreAdj > 1000) {
      throw new UsageError(`--oom-score-adj wants -1000..1000; got ${values['oom-score-adj']}`);
    }
  }
  const exportName = values.export ?? 'disk';
  if (Buffer.byteLength(exportName) > 4096 || exportName.includes('\0')) throw new UsageError('--export: at most 4096 bytes, no NUL');
  const readOnly = values['read-only'] ?? false;
  if (readOnly && values.size !== undefined) throw new UsageError('--read-only takes no --size: the file is served as it is');
  const bufferMemory = values['buffer-memory'] === undefined ? 256 * 1024 * 1024 : parseSize(values['buffer-memory']);
  if (bufferMemory < 32 * 1024 * 1024) throw new UsageError(`--buffer-memory must hold one 32 MiB request; got ${values['buffer-memory']}`);
  return {
    file: values.file,
    size: values.size === undefined ? undefined : parseSize(values.size),
    socket: values.socket,
    host,
    port,
    exportName,
    protect,
    mlock: values.mlock ?? false,
    lockedBuffers: parseCount('--locked-buffers', values['locked-buffers'], 16, 0, 1024),
    oomScoreAdj,
    requireProtection: values['require-protection'] ?? false,
    readOnly,
    maxConnections: parseCount('--max-connections', values['max-connections'], 64, 1, 4096),
    limits: {
      handshakeTimeoutMs: parseSeconds('--handshake-timeout', values['handshake-timeout'], 10),
      stallTimeoutMs: parseSeconds('--stall-timeout', values['stall-timeout'], 30),
    },
    evictIdleMs: parseSeconds('--evict-idle-after', values['evict-idle-after'], 60),
    bufferMemory,
  };
}

/**
 * Protection, before serving. Returns false when --require-protection is given and something asked for is not in
 * effect. Logs one JSON line (event "protection"), and a warning naming the threads without IO_FLUSHER.
 */
async function protect(options: Options, file: BackingFile): Promise<boolean> {
  const memoryAsked = options.mlock || options.oomScoreAdj !== undefined;
  if (options.protect === 'none' && !memoryAsked) return true;
  const io = loadIoFlusher();

  // libuv starts its thread pool (all UV_THREADPOOL_SIZE threads at once) on the first request that needs it. Those
  // threads do every read, write and fdatasync of the backing file, so they must exist before the process-wide
  // call, which covers only the threads alive at the time.
  const poolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  await Promise.all(Array.from({ length: poolSize }, () => file.touch()));

  const steps: Array<'lockMemory' | 'oomScoreAdj' | 'ioFlusher'> = [];
  if (options.mlock) steps.push('lockMemory');
  if (options.oomScoreAdj !== undefined) steps.push('oomScoreAdj');
  if (options.protect === 'process') steps.push('ioFlusher');

  let report: PrepareDaemonReport | undefined;
  let refused = false;
  if (steps.length) {
    try {
      report = io.prepareDaemon({
        ioFlusher: options.protect === 'process' ? 'process' : false,
        lockMemory: options.mlock,
        oomScoreAdj: options.oomScoreAdj ?? false,
        required: options.requireProtection ? steps : [],
      });
    } catch (err) {
      if (!(err instanceof io.IoFlusherError) || err.code !== 'ERR_IO_FLUSHER_PREPARE') throw err;
      report = err.report as PrepareDaemonReport;
      refused = true;
    }
  }

  // Verified independently of the report: every thread's flags from /proc.
  const threads = io.listThreads();
  const covered = threads.filter((t) => t.ioFlusher);
  const emulated = threads.some((t) => t.emulated);
  const ioFlusherInEffect = options.protect !== 'none' && covered.length === threads.length && !emulated;
  if (options.requireProtection && options.protect !== 'none' && !ioFlusherInEffect) refused = true;

  // Locked payload buffers, once the code is locked: a pool the connections take READ/WRITE buffers from.
  let lockedBuffers: { count: number; bufferSize: number } | { error: string } | undefined;
  if (options.mlock && options.lockedBuffers > 0 && report?.steps.some((s) => s.step === 'lockMemory' && s.done)) {
    try {
      const pool = new io.LockedBufferPool({ bufferSize: (1 << 20) + NBD_SIMPLE_REPLY_SIZE, count: options.lockedBuffers });
      useLockedIoBuffers(pool);
      lockedBuffers = { count: pool.count, bufferSize: pool.bufferSize };
    } catch (err) {
      if (!(err instanceof io.IoFlusherError)) throw err;
      lockedBuffers = { error: `${err.code}: ${err.message}` };
      if (options.requireProtection) refused = true;
    }
  }

  const stepSummary = (report?.steps ?? []).map((s) => {
    const entry: Record<string, unknown> = { step: s.step, done: s.done, required: s.required };
    if (s.emulated) entry.emulated = true;
    if (!s.done) Object.assign(entry, { code: s.code, reason: s.reason });
    if (s.step === 'ioFlusher' && s.detail && typeof s.detail === 'object' && 'threads' in s.detail) {
      const reasons: Record<string, number> = {};
      for (const t of (s.detail as { threads: Array<{ covered: boolean; reason?: string }> }).threads) {
        if (!t.covered) reasons[t.reason ?? 'unknown'] = (reasons[t.reason ?? 'unknown'] ?? 0) + 1;
      }
      if (Object.keys(reasons).length) entry.uncoveredReasons = reasons;
    }
    return entry;
  });
  log(
    JSON.stringify({
      event: 'protection',
      mode: options.protect,
      ioFlusherInEffect,
      emulated,
      backend: io.defaultIoFlusher().backend,
      threads: { total: threads.length, covered: covered.length, uncovered: threads.length - covered.length },
      steps: stepSummary,
      ...(options.mlock ? { lockedBuffers, lockedBytes: io.lockedMemory() } : {}),
      required: options.requireProtection,
      starting: !refused,
    }),
  );

  if (options.protect !== 'none' && covered.length < threads.length) {
    const missing = threads.filter((t) => !t.ioFlusher).map((t) => t.tid);
    const failed = report?.steps.find((s) => s.step === 'ioFlusher' && !s.done);
    const why =
      options.protect === 'exec'
        ? 'with --protect exec the threads inherit IO_FLUSHER from `io-flusher exec -- node ...`, which needs CAP_SYS_RESOURCE (see `io-flusher check`)'
        : (failed?.hint ?? 'see the protection report');
    log(`WARNING: ${missing.length} of ${threads.length} threads are NOT in IO_FLUSHER state (tids ${missing.join(' ')}): ${why}`);
  } else if (emulated) {
    log('WARNING: the IO_FLUSHER state shown is the emulator\'s: nothing is protected');
  }
  for (const s of report?.steps ?? []) {
    if (!s.done && s.step !== 'ioFlusher') log(`WARNING: ${s.step} not done (${s.code}): ${s.hint}`);
  }
  if (refused) log('refusing to start: --require-protection was given and the protection above is not complete');
  return !refused;
}

/** Listens on the Unix socket, replacing a stale socket file left by a server that died (never another file). */
async function listen(server: net.Server, options: Options): Promise<string> {
  const attempt = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      const done = (): void => {
        server.off('error', onError);
        resolve();
      };
      if (options.socket !== undefined) server.listen(options.socket, done);
      else server.listen({ host: options.host, port: options.port }, done);
    });
  try {
    await attempt();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || options.socket === undefined) throw err;
    const socketPath = options.socket;
    if (!fs.lstatSync(socketPath).isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
    const live = await new Promise<boolean>((resolve) => {
      const probe = net.connect(socketPath);
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (live) throw new Error(`another server is listening on ${socketPath}`);
    fs.unlinkSync(socketPath);
    await attempt();
  }
  const address = server.address();
  if (typeof address === 'string') return `unix:${address}`;
  return address!.family === 'IPv6' ? `[${address!.address}]:${address!.port}` : `${address!.address}:${address!.port}`;
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const file = await BackingFile.open(options.file, options.size, options.readOnly);
  if (file.size % 512 !== 0) log(`warning: the size (${file.size}) is not a multiple of 512; nbd-client wants a multiple of its block size`);

  if (!(await protect(options, file))) {
    await file.close();
    return EXIT_UNPROTECTED;
  }

  const connections = new Set<NbdConnection>();
  const budget = new BufferBudget(options.bufferMemory);
  const exported = { name: options.exportName, file, readOnly: options.readOnly };
  let nextId = 1;
  let refusedSinceLog = 0;
  let lastRefusalLog = 0;
  // allowHalfOpen: a client that sends its last requests and shuts down its side still gets the replies; every
  // connection is ended by NbdConnection once nothing of it is in flight.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    if (connections.size >= options.maxConnections) {
      // Full: a slot is taken from the connection negotiating longest, if for over a second (a real client
      // negotiates in milliseconds; this stops clients that reconnect before each handshake deadline from holding
      // every slot), else from the connection idle longest, if idle long enough. A connection with a request or a
      // reply in flight is never evicted, so busy clients keep working whatever idle ones do.
      const now = Date.now();
      let victim: NbdConnection | undefined;
      for (const c of connections) {
        if (c.inNegotiation && now - c.connectedAt >= NEGOTIATION_EVICTABLE_MS && (!victim || c.connectedAt < victim.connectedAt)) victim = c;
      }
      if (!victim) {
        for (const c of connections) {
          if (!c.inNegotiation && !c.busy && now - c.lastActivity >= options.evictIdleMs && (!victim || c.lastActivity < victim.lastActivity)) victim = c;
        }
      }
      if (!victim) {
        socket.destroy();
        refusedSinceLog++;
        if (now - lastRefusalLog >= 5000) {
          log(`refused ${refusedSinceLog} connection(s): all ${options.maxConnections} slots are busy or idle less than ${options.evictIdleMs / 1000} s`);
          lastRefusalLog = now;
          refusedSinceLog = 0;
        }
        return;
      }
      connections.delete(victim);
      victim.evict(now);
    }
    if (socket.remoteAddress !== undefined) socket.setNoDelay(true);
    const connection = new NbdConnection(socket, exported, log, nextId++, options.limits, budget);
    connections.add(connection);
    // A connection whose replies are all in the kernel no longer counts, even while its client takes up to 2 s to
    // close; nor does an evicted one. The hard limit below leaves room for those.
    void connection.settled.then(() => connections.delete(connection));
  });
  server.maxConnections = options.maxConnections * 2;
  const where = await listen(server, options);
  server.on('error', (err) => {
    log(`server error: ${err.message}`);
    process.exit(EXIT_FAILURE);
  });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      log(`${signal} again: exiting now`);
      process.exit(EXIT_FAILURE);
    }
    stopping = true;
    log(`${signal}: finishing requests in flight, then exiting`);
    server.close();
    for (const connection of connections) connection.stop();
    const force = setTimeout(() => {
      log('connections did not finish in 10 s: exiting');
      process.exit(EXIT_FAILURE);
    }, 10_000);
    force.unref();
    void Promise.all([...connections].map((c) => c.finished))
      .then(() => file.sync())
      .then(() => file.close())
      .then(
        () => process.exit(0),
        (err: Error) => {
          log(`shutdown: ${err.message}`);
          process.exit(EXIT_FAILURE);
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  log(`listening on ${where} (export "${options.exportName}", ${file.size} bytes, file ${options.file}${options.readOnly ? ', read-only' : ''})`);
  return 0;
}

main().then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err: Error) => {
    if (err instanceof UsageError) {
      log(err.message);
      process.stderr.write(USAGE);
      process.exitCode = EXIT_USAGE;
    } else {
      log(`error: ${err.message}`);
      process.exitCode = EXIT_FAILURE;
    }
  },
);
