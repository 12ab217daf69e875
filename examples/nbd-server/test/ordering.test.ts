/**
 * The example's request ordering and cancellation, in process (NbdConnection over a slow in-memory file), where the
 * order of file operations can be observed.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BackingFile } from '../backing-file';
import { openExport } from '../client';
import { BufferBudget, DEFAULT_LIMITS, NbdConnection } from '../connection';
import { pattern, tempDir } from './helpers';

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

  it('requests still waiting when the client closes its Unix socket are dropped, not run', async () => {
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

  const drops = [
    { how: 'resets its TCP connection while the READ runs (its read fails: ECONNRESET)', tcp: true, afterMs: 200 },
    // The request and the RST arrive together, which Node 20 and 22 report as a plain end of stream, as if the
    // client had only shut down its sending side (Node 24 and 26: ECONNRESET). A Unix socket's close always does.
    { how: 'resets its TCP connection right after sending the READ', tcp: true, afterMs: 0 },
    { how: 'closes its Unix socket right after sending the READ', tcp: false, afterMs: 0 },
  ];
  for (const { how, tcp, afterMs } of drops) {
    it(`a client that ${how}: its slot is free at once, the READ stops between 1 MiB pieces, its budget comes back`, async () => {
      const { dir, remove } = tempDir('nbd-drop-');
      const file = new SlowMemoryFile();
      file.readMsPerMiB = 150; // 4 MiB take 600 ms
      const budget = new BufferBudget(64 * 1024 * 1024);
      let connection: NbdConnection | undefined;
      let busyWhenSettled: boolean | undefined;
      const server = net.createServer({ allowHalfOpen: true }, (s) => {
        const c = new NbdConnection(s, { name: 'mem', file: file as unknown as BackingFile }, () => {}, 1, DEFAULT_LIMITS, budget);
        void c.settled.then(() => (busyWhenSettled = c.busy));
        connection = c;
      });
      const socket = path.join(dir, 'drop.sock');
      await new Promise<void>((resolve) => (tcp ? server.listen(0, '127.0.0.1', resolve) : server.listen(socket, resolve)));
      try {
        const c = await openExport(tcp ? { port: (server.address() as net.AddressInfo).port } : { socket }, 'mem');
        void c.read(0, 4 * 1024 * 1024).catch(() => {});
        if (afterMs) await new Promise((resolve) => setTimeout(resolve, afterMs));
        if (tcp) c.socket.resetAndDestroy();
        else c.destroy();
        await connection!.finished;
        expect(file.bytesRead).toBeGreaterThan(0);
        expect(file.bytesRead).toBeLessThan(4 * 1024 * 1024);
        // The connection gave up its slot when its socket closed, while its READ was still stopping.
        expect(busyWhenSettled).toBe(true);
        expect(budget.inUse).toBe(0);
      } finally {
        server.close();
        remove();
      }
    });
  }
});
