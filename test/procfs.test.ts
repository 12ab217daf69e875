/** Reading memalloc flags, thread names and capabilities from /proc. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { loadNativeBinding, NativeBinding } from '../dist/native-binding.js';
import { parseStatLine, parseStatTexts, readTaskIds, readThreadStat } from '../dist/procfs.js';
import { caught, statusMask } from './helpers';

const STAT_TAIL = '2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23';

const binding = (loadNativeBinding() as { binding: NativeBinding }).binding;

describe('parseStatLine', () => {
  it('reads tid, name, state and the flags word (field 9)', () => {
    const s = parseStatLine(`1234 (node) S 1 1234 1234 0 -1 1573120 ${STAT_TAIL}`);
    expect(s).toEqual({ tid: 1234, name: 'node', state: 'S', flags: 1573120, startTime: 14 }); // field 22: the 13th after the flags
  });

  it('a comm with spaces and ")" parses: the split is after the LAST ")"', () => {
    const s = parseStatLine(`77 (a) b) (c d) R 1 77 77 0 -1 4194368 ${STAT_TAIL}`);
    expect(s).toMatchObject({ tid: 77, name: 'a) b) (c d', state: 'R', flags: 4194368 });
  });

  it('flags above 2^31 stay unsigned', () => {
    expect(parseStatLine(`5 (x) S 1 5 5 0 -1 2149580800 ${STAT_TAIL}`).flags).toBe(2149580800);
  });

  it('garbage is a SyntaxError, not a zero flags word', () => {
    expect(() => parseStatLine('')).toThrow(SyntaxError);
    expect(() => parseStatLine('12 node S 1')).toThrow(SyntaxError);
    expect(() => parseStatLine('12 (node) S 1 2')).toThrow(SyntaxError);
  });
});

describe('the native read-back (readTaskStats, one call for many threads)', () => {
  it('gives what reading each stat file gives, and undefined for a thread that does not exist', () => {
    const tids = [...readTaskIds(process.pid), 2 ** 30];
    const text = binding.readTaskStats(Int32Array.from(tids));
    expect(typeof text).toBe('string');
    const stats = parseStatTexts(text as string);
    expect(stats.length).toBe(tids.length);
    expect(stats.at(-1)).toBeUndefined();
    for (const [i, tid] of tids.slice(0, -1).entries()) {
      const { name, tid: statTid } = readThreadStat(process.pid, tid);
      expect(stats[i]).toMatchObject({ tid: statTid, name });
    }
  });

  it('a name with a newline or bytes above 0x7f reads the same as one file at a time (texts end at a NUL)', () => {
    const stats = parseStatTexts(`1 (a\nb) S 1 1 1 0 -1 64 ${STAT_TAIL}\0\0` + `2 (\xc3\xa9) S 1 1 1 0 -1 64 ${STAT_TAIL}\0`);
    expect(stats.map((s) => s?.name)).toEqual(['a\nb', undefined, '\u00e9']);
  });
});

describe('flags of real threads', () => {
  it('threadFlags() reads the calling thread; the named booleans follow the word', () => {
    const t = io.threadFlags();
    const stat = fs.readFileSync('/proc/thread-self/stat', 'latin1');
    const word = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[6]);
    expect(t.pid).toBe(process.pid);
    expect(t.tid).toBe(Number(fs.readlinkSync('/proc/thread-self').split('/').pop()));
    expect(t.flags).toBe(word);
    expect(t.memallocNoio).toBe((word & io.PF_MEMALLOC_NOIO) !== 0);
    expect(t.localThrottle).toBe((word & io.PF_LOCAL_THROTTLE) !== 0);
    expect(t.ioFlusher).toBe((word & io.IO_FLUSHER_FLAGS) === io.IO_FLUSHER_FLAGS);
    expect(t.emulated).toBe(false);
  });

  it('listThreads() lists every thread of this process in tid order, the main thread among them', () => {
    const threads = io.listThreads();
    const tids = fs.readdirSync('/proc/self/task').map(Number).sort((a, b) => a - b);
    expect(threads.map((t) => t.tid)).toEqual(tids);
    // Not necessarily first: once pids wrap around, a worker's tid can be lower than the main thread's.
    expect(threads.some((t) => t.tid === process.pid)).toBe(true);
    expect(threads.length).toBeGreaterThan(1); // V8 platform threads exist before user code
  });

  it('listThreads() of this process reads through the backend (native: the addon\'s batch read) and agrees with threadFlags() of each thread', async () => {
    const { Worker } = await import('node:worker_threads');
    // A thread with a name of its own, so a mix-up of rows would show.
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads'); require('node:fs').writeFileSync('/proc/thread-self/comm', 'iof-list-test'); parentPort.postMessage(0); setInterval(() => {}, 1000);`,
      { eval: true },
    );
    const batchRead = binding.readTaskStats;
    let batchReads = 0;
    binding.readTaskStats = (tids) => {
      batchReads++;
      return batchRead.call(binding, tids);
    };
    try {
      await new Promise((r) => worker.once('message', r));
      for (const [backend, reads] of [['native', 1], ['emulated', 0]] as const) {
        const instance = io.createIoFlusher({ backend });
        batchReads = 0;
        const listed = instance.listThreads();
        expect(batchReads).toBe(reads);
        expect(listed.some((t) => t.name === 'iof-list-test')).toBe(true);
        for (const t of listed) {
          let single;
          try {
            single = instance.threadFlags(process.pid, t.tid);
          } catch (err) {
            if ((err as { code?: string }).code === 'ESRCH') continue; // exited since the listing
            throw err;
          }
          // Bits the kernel sets for a moment (reclaim, pinning, exit) may differ between two reads: only the stable
          // part of a row is compared.
          const stable = (r: io.ThreadFlags) => ({ pid: r.pid, tid: r.tid, name: r.name, ioFlusher: r.ioFlusher, localThrottle: r.localThrottle, emulated: r.emulated });
          expect(stable(t)).toEqual(stable(single));
        }
      }
    } finally {
      binding.readTaskStats = batchRead;
      await worker.terminate();
    }
  });

  it('reads another process and its thread name', async () => {
    const child = spawn('sleep', ['30']);
    try {
      await new Promise((r) => child.once('spawn', r));
      await new Promise((r) => setTimeout(r, 50)); // let exec finish so comm is "sleep"
      const threads = io.listThreads(child.pid!);
      expect(threads).toHaveLength(1);
      expect(threads[0]).toMatchObject({ pid: child.pid, tid: child.pid, name: 'sleep', emulated: false });
      expect(io.threadFlags(child.pid!).tid).toBe(child.pid);
    } finally {
      child.kill();
    }
  });

  it('a process or thread that is gone is an ESRCH IoFlusherError, not a crash', async () => {
    const child = spawn('true');
    await new Promise((r) => child.once('exit', r));
    for (const call of [() => io.listThreads(child.pid!), () => io.threadFlags(child.pid!), () => io.threadFlags(process.pid, 4194304)]) {
      const error = caught(call);
      expect(error).toBeInstanceOf(io.IoFlusherError);
      expect(error).toMatchObject({ code: 'ESRCH', errno: -3, syscall: 'open', reason: 'no-such-thread' });
    }
  });
});

describe('capabilities()', () => {
  it('names the sets of /proc/self/status', () => {
    const caps = io.capabilities();
    const mask = (f: string) => statusMask(f);
    expect(caps.masks.effective).toBe(mask('CapEff'));
    expect(caps.masks.bounding).toBe(mask('CapBnd'));
    expect(caps.effective.length).toBe(mask('CapEff').toString(2).split('').filter((b) => b === '1').length);
    expect(caps.sysResource).toBe(caps.effective.includes('CAP_SYS_RESOURCE'));
    expect(caps.sysResource).toBe(((mask('CapEff') >> 24n) & 1n) === 1n);
    if (mask('CapEff') & 1n) expect(caps.effective).toContain('CAP_CHOWN');
  });

  it('reads another process', () => {
    expect(io.capabilities(1).bounding.length).toBeGreaterThan(0);
  });
});
