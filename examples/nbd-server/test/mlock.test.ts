/**
 * The example NBD server with --mlock: its code and a pool of locked payload buffers stay resident. Needs
 * CAP_IPC_LOCK (the code scope alone is larger than the default RLIMIT_MEMLOCK).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdsCapability } from '../../../test/helpers';
import { openExport } from '../client';
import { buildExample, EXPORT, killServers, pattern, protectionReport, sha256, startServer, tempDir, type Server } from './helpers';

beforeAll(buildExample, 60_000);

/** CAP_IPC_LOCK in the effective set: locking more than RLIMIT_MEMLOCK allows (the code scope alone is ~100 MiB). */
function holdsCapIpcLock(): boolean {
  return holdsCapability(14);
}

describe.runIf(holdsCapIpcLock())('examples/nbd-server --mlock [needs CAP_IPC_LOCK]', () => {
  const { dir, remove } = tempDir('nbd-server-mlock-');
  const file = path.join(dir, 'disk.img');
  const socket = path.join(dir, 'nbd.sock');
  let server: Server;
  afterAll(() => {
    killServers();
    remove();
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
