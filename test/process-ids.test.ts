/** Process ids and thread ids are not confused, and a missing process is answered the same way everywhere. */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { runCli } from './helpers';

const INDEX = path.resolve(__dirname, '../dist/index.js');

/** Runs `body` (a function source taking io) in a Worker and resolves with what it returns. */
function inWorker<T>(body: string): Promise<T> {
  const worker = new Worker(`const io = require(${JSON.stringify(INDEX)}); require('node:worker_threads').parentPort.postMessage((${body})(io));`, { eval: true });
  return new Promise<T>((resolve, reject) => {
    worker.once('message', (m) => {
      void worker.terminate();
      resolve(m as T);
    });
    worker.once('error', reject);
  });
}

describe('process ids and thread ids', () => {
  it('a thread id passed as a pid is answered ESRCH naming its process, not shown as a process', async () => {
    const workerTid = await new Promise<number>((resolve) => {
      const w = new Worker(`const { parentPort } = require('node:worker_threads'); parentPort.postMessage(require(${JSON.stringify(INDEX)}).threadFlags().tid); setInterval(() => {}, 1000);`, { eval: true });
      w.once('message', (tid) => {
        resolve(tid as number);
        setTimeout(() => void w.terminate(), 3000);
      });
    });
    expect(workerTid).not.toBe(process.pid);
    for (const call of [() => io.threadFlags(workerTid), () => io.listThreads(workerTid), () => io.capabilities(workerTid)]) {
      expect(call).toThrow(expect.objectContaining({ code: 'ESRCH', reason: 'no-such-thread', message: expect.stringContaining(`${workerTid} is a thread of process ${process.pid}`) }));
    }
    // As a thread of its process it is fine.
    expect(io.threadFlags(process.pid, workerTid)).toMatchObject({ pid: process.pid, tid: workerTid });
    const status = runCli(['status', String(workerTid)]);
    expect(status.status).toBe(6);
    expect(status.stderr).toMatch(/is a thread of process/);
  });

  it('threadFlags(process.pid) from a Worker is the main thread, as documented; threadFlags() is the Worker itself', async () => {
    const out = await inWorker<{ main: number; self: number; pid: number }>(`(io) => ({ main: io.threadFlags(process.pid).tid, self: io.threadFlags().tid, pid: process.pid })`);
    expect(out.main).toBe(out.pid);
    expect(out.self).not.toBe(out.pid);
  });

  it('check --pid and status agree on a missing process (exit 6); status still prints the processes that exist', () => {
    expect(runCli(['check', '--pid', '4194303']).status).toBe(6);
    const r = runCli(['status', '1', '4194303', String(process.pid)]);
    expect(r.status).toBe(6);
    expect(r.stdout).toMatch(/^process 1: /m);
    expect(r.stdout).toMatch(new RegExp(`^process ${process.pid}: `, 'm'));
    expect(r.stderr).toMatch(/no process 4194303/);
    const json = JSON.parse(runCli(['status', '1', '4194303', '--json']).stdout);
    expect(json.processes.map((p: { pid: number }) => p.pid)).toEqual([1]);
    expect(json.missing).toEqual([4194303]);
  });
});
