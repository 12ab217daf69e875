#!/usr/bin/env node
/**
 * flood: a hostile NBD client for measuring the server's memory bounds (README.md, "Limits against hostile
 * clients"). It opens connections to a running server, sends as fast as the server takes them and never reads a
 * reply, and prints the server's RSS (VmRSS of --pid) before and at its peak as one JSON line.
 *
 *   node examples/nbd-server/dist/flood.js --socket PATH --pid PID --mode options|requests|reads
 *       [--connections N] [--count N] [--seconds S] [--export NAME]
 *
 * options:  unknown options with 100 bytes of data, --count of them per connection (default 500000)
 * requests: READs with an unknown flag (answered EINVAL at once), --count per connection (default 4200000)
 * reads:    1 MiB READs within the first 64 MiB of the export, --count per connection (default 100)
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import * as P from './protocol';

const MiB = 1024 * 1024;

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]) / 1024;
}

function option(code: number, data: Buffer): Buffer {
  const header = Buffer.alloc(16);
  P.IHAVEOPT.copy(header, 0);
  header.writeUInt32BE(code >>> 0, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

/** Connects and sends the client flags; with `exportName`, also NBD_OPT_EXPORT_NAME (no reply is ever read). */
async function connect(socketPath: string, exportName?: string): Promise<net.Socket> {
  const socket = net.connect(socketPath);
  socket.on('error', () => {}); // the server may cut us off: that is a result, not a failure
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
  socket.write(flags);
  if (exportName !== undefined) socket.write(option(P.NBD_OPT_EXPORT_NAME, Buffer.from(exportName, 'utf8')));
  return socket;
}

/** Writes `chunk` `times` times as fast as the socket takes it, until done, closed, or `deadline`. */
async function pour(socket: net.Socket, chunk: Buffer, times: number, deadline: number): Promise<number> {
  let sent = 0;
  while (sent < times && !socket.destroyed && Date.now() < deadline) {
    sent++;
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        const timer = setTimeout(done, Math.max(1, deadline - Date.now()));
        socket.once('drain', done);
        socket.once('close', done);
      });
    }
  }
  return sent;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      pid: { type: 'string' },
      mode: { type: 'string' },
      connections: { type: 'string', default: '1' },
      count: { type: 'string' },
      seconds: { type: 'string', default: '15' },
      export: { type: 'string', default: 'disk' },
    },
  });
  const mode = values.mode ?? '';
  if (!values.socket || !values.pid || !['options', 'requests', 'reads'].includes(mode)) {
    throw new Error('usage: flood.js --socket PATH --pid PID --mode options|requests|reads [--connections N] [--count N] [--seconds S] [--export NAME]');
  }
  const pid = Number(values.pid);
  const connections = Number(values.connections);
  const seconds = Number(values.seconds);
  const count = Number(values.count ?? { options: 500_000, requests: 4_200_000, reads: 100 }[mode]);
  // Each write carries many messages; `count` is rounded up to whole chunks.
  const perChunk = mode === 'reads' ? 1 : 10_000;
  const message = (i: number): Buffer =>
    mode === 'options'
      ? option(0x1234, Buffer.alloc(100, 0x41))
      : mode === 'requests'
        ? P.requestHeader(1 << 5, P.NBD_CMD_READ, BigInt(i), 0n, 512)
        : P.requestHeader(0, P.NBD_CMD_READ, BigInt(i), BigInt((i % 64) * MiB), MiB);
  const chunks = Array.from({ length: mode === 'reads' ? count : 1 }, (_, c) => Buffer.concat(Array.from({ length: perChunk }, (_, i) => message(c * perChunk + i))));

  const sockets = await Promise.all(Array.from({ length: connections }, () => connect(values.socket!, mode === 'options' ? undefined : values.export)));
  const before = rssMiB(pid);
  let peak = before;
  const sample = (): void => {
    try {
      peak = Math.max(peak, rssMiB(pid));
    } catch {
      // the server is gone
    }
  };
  const sampler = setInterval(sample, 50);
  const deadline = Date.now() + seconds * 1000;
  const sent = await Promise.all(
    sockets.map(async (socket) => {
      if (mode === 'reads') {
        let n = 0;
        for (const chunk of chunks) n += await pour(socket, chunk, 1, deadline);
        return n;
      }
      return (await pour(socket, chunks[0]!, Math.ceil(count / perChunk), deadline)) * perChunk;
    }),
  );
  // Whatever the server still takes in after the last write is counted too.
  while (Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  clearInterval(sampler);
  sample();
  const cutOff = sockets.filter((s) => s.destroyed).length;
  process.stdout.write(
    `${JSON.stringify({ mode, connections, messagesSentPerConnection: Math.max(...sent), seconds, cutOff, rssBeforeMiB: +before.toFixed(1), rssPeakMiB: +peak.toFixed(1) })}\n`,
  );
  for (const socket of sockets) socket.destroy();
}

main().catch((err: Error) => {
  process.stderr.write(`flood: ${err.message}\n`);
  process.exitCode = 1;
});
