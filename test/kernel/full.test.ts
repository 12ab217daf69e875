/** Mode full (every capability): the success path on a real kernel, per thread, with inheritance. */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import * as io from '../../dist/index.js';
import { parseStatLine } from '../../dist/procfs.js';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

assertKernelSuiteEnvironment();
const native = io.createIoFlusher({ backend: 'native' });
const DIST_INDEX = path.resolve(__dirname, '../../dist/index.js');

/** A Worker that reports (and on request changes) its own state through the native backend. */
function startWorker(): { ask(message: string): Promise<{ tid: number; get: boolean; flags: number }>; stop(): Promise<number> } {
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
     const n = require(${JSON.stringify(DIST_INDEX)}).createIoFlusher({ backend: 'native' });
     parentPort.on('message', (m) => {
       if (m === 'set') n.setIoFlusher(true);
       if (m === 'clear') n.setIoFlusher(false);
       const t = n.threadFlags();
       parentPort.postMessage({ tid: t.tid, get: n.getIoFlusher(), flags: t.flags });
     });`,
    { eval: true },
  );
  return {
    ask: (message) =>
      new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.postMessage(message);
      }),
    stop: () => worker.terminate(),
  };
}

afterEach(() => native.setIoFlusher(false));

describe(`real kernel ${KERNEL_NAME}, every capability`, () => {
  it('set -> get true -> /proc has 0x180000 -> clear -> get false, bits gone', () => {
    expect(native.getIoFlusher()).toBe(false);
    native.setIoFlusher(true);
    expect(native.getIoFlusher()).toBe(true);
    const during = native.threadFlags();
    expect((during.flags & 0x180000) >>> 0).toBe(0x180000);
    expect(during).toMatchObject({ memallocNoio: true, localThrottle: true, ioFlusher: true, emulated: false });
    native.setIoFlusher(false);
    expect(native.getIoFlusher()).toBe(false);
    expect(native.threadFlags().flags & 0x180000).toBe(0);
  });

  it('probe(): present, capability held, protection in effect only while set', () => {
    expect(native.probe()).toMatchObject({ feature: 'present', capSysResource: true, canSet: true, backend: 'native', ioFlusher: false, protectionInEffect: false });
    native.setIoFlusher(true);
    expect(native.probe()).toMatchObject({ ioFlusher: true, protectionInEffect: true });
  });

  it('only the calling thread changes: other threads of the process keep their flags', () => {
    native.setIoFlusher(true);
    const others = native.listThreads().filter((t) => t.tid !== process.pid);
    expect(others.length).toBeGreaterThan(0);
    expect(others.filter((t) => t.ioFlusher)).toEqual([]);
  });

  it('a child process spawned after set starts with the bits; after clear it does not', () => {
    const childFlags = () => parseStatLine(execFileSync('/bin/cat', ['/proc/self/stat'], { encoding: 'latin1' })).flags;
    native.setIoFlusher(true);
    expect((childFlags() & 0x180000) >>> 0).toBe(0x180000);
    native.setIoFlusher(false);
    expect(childFlags() & 0x180000).toBe(0);
  });

  it('a Worker created after set has the state, one created before does not', async () => {
    const before = startWorker();
    await before.ask('get');
    native.setIoFlusher(true);
    const after = startWorker();
    try {
      const b = await before.ask('get');
      const a = await after.ask('get');
      expect(b.get).toBe(false);
      expect(b.flags & 0x180000).toBe(0);
      expect(a.get).toBe(true);
      expect((a.flags & 0x180000) >>> 0).toBe(0x180000);
      // The kernel's view from outside the Worker agrees.
      expect(native.threadFlags(process.pid, a.tid).ioFlusher).toBe(true);
      expect(native.threadFlags(process.pid, b.tid).ioFlusher).toBe(false);
    } finally {
      await Promise.all([before.stop(), after.stop()]);
    }
  });

  it("a Worker's own change leaves the main thread alone", async () => {
    const worker = startWorker();
    try {
      const set = await worker.ask('set');
      expect(set.get).toBe(true);
      expect(native.getIoFlusher()).toBe(false);
      expect(native.threadFlags(process.pid, set.tid).ioFlusher).toBe(true);
      const cleared = await worker.ask('clear');
      expect(cleared.get).toBe(false);
    } finally {
      await worker.stop();
    }
  });

  it('io-flusher check exits 0: protection can be had here', () => {
    let status = 0;
    try {
      execFileSync(process.execPath, [path.resolve(__dirname, '../../dist/cli.js'), 'check'], { encoding: 'utf8' });
    } catch (err) {
      status = (err as { status: number }).status;
    }
    expect(status).toBe(0);
  });
});
