/**
 * The emulator keys its model by tid, and Linux reuses tids: a new thread that gets a dead thread's tid must start
 * with what it inherits from its creator, not with the dead thread's state. The tid is reused on purpose here through
 * /proc/sys/kernel/ns_last_pid (the next id handed out is one above it; writing it needs CAP_SYS_ADMIN, as CRIU does).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';

const INDEX = path.resolve(__dirname, '../dist/index.js');
const canSetLastPid = (() => {
  try {
    fs.accessSync('/proc/sys/kernel/ns_last_pid', fs.constants.W_OK);
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
})();

/** A Worker reporting its tid and, through its own emulated instance, its modelled state. */
function startWorker(): { worker: Worker; reply: Promise<{ tid: number; state: boolean }> } {
  const worker = new Worker(
    `const io = require(${JSON.stringify(INDEX)});
     const e = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });
     require('node:worker_threads').parentPort.postMessage({ tid: e.threadFlags().tid, state: e.getIoFlusher() });
     setInterval(() => {}, 1000);`,
    { eval: true },
  );
  const reply = new Promise<{ tid: number; state: boolean }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return { worker, reply };
}

describe('emulator and reused tids', () => {
  it.runIf(canSetLastPid)("a new thread with a dead thread's tid does not get the dead thread's state", async () => {
    const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });
    try {
      let reused = false;
      for (let attempt = 0; attempt < 20 && !reused; attempt++) {
        const first = startWorker();
        const { tid } = await first.reply;
        emu.setProcessIoFlusher(true); // the model now has the Worker's thread in IO_FLUSHER state
        emu.setIoFlusher(false); // and the main thread, which creates the next Worker, out of it
        expect(emu.threadFlags(process.pid, tid).ioFlusher).toBe(true);
        await first.worker.terminate();
        for (let i = 0; i < 200 && fs.existsSync(`/proc/self/task/${tid}`); i++) await new Promise((r) => setTimeout(r, 5));
        fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(tid - 1));
        const second = startWorker();
        const reply = await second.reply;
        await second.worker.terminate();
        if (reply.tid !== tid) continue; // another process took the id first: try again
        reused = true;
        expect(reply.state).toBe(false); // what it inherited from the main thread, which is clear
      }
      expect(reused).toBe(true);
    } finally {
      emu.setProcessIoFlusher(false);
    }
  });
});
