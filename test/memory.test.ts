/**
 * The forward-progress kit on this machine: root with CAP_IPC_LOCK but without CAP_SYS_RESOURCE, so memory locks
 * work, while raising the memlock hard limit (EPERM) and lowering oom_score_adj (EACCES) are refused. Each case runs
 * in a fresh process: locks, limits and oom_score_adj are per process.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, DIST, holdsCapSysResource, ROOT, runCli, runJson } from './helpers';

const capable = holdsCapSysResource();
const run = (code: string, env: Record<string, string | undefined> = {}) => runJson(code, env, { allowStderr: false });

/** Node binaries to prove "no abort" with: this one (the machine's) and the official 22, 24 and 26 builds. */
const NODE_CACHE = path.join(os.homedir(), '.cache/io-flusher-node');
const ALL_NODES: Array<{ label: string; bin: string | undefined }> = [
  { label: `machine ${process.version}`, bin: process.execPath },
  ...['node-v22.23.5', 'node-v24.22.3', 'node-v26.12.1'].map((dir) => {
    const bin = path.join(NODE_CACHE, `${dir}-linux-x64/bin/node`);
    return { label: dir.slice(5), bin: fs.existsSync(bin) ? bin : undefined };
  }),
];
// Under scripts/test-nodes.mjs (IO_FLUSHER_EXPECT_NODE set) this whole suite runs once on each major in turn, and the
// plain run (npm test) already starts every major: each of those runs proves the Node it runs on.
const NODES: typeof ALL_NODES = process.env.IO_FLUSHER_EXPECT_NODE ? [{ label: `running ${process.version}`, bin: process.execPath }] : ALL_NODES;
const MIB = 1 << 20;

function spawnJson(bin: string, args: string[], options: { prefix?: string[] } = {}) {
  const [file, ...rest] = [...(options.prefix ?? []), bin, ...args];
  const r = spawnSync(file!, rest, { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  let out: any = null;
  try {
    out = JSON.parse(r.stdout);
  } catch {
    // null: the assertions show stdout and stderr
  }
  return { status: r.status, signal: r.signal, out, detail: `status ${r.status} signal ${r.signal}\nstderr: ${r.stderr}\nstdout: ${r.stdout}` };
}

/** Every locked mapping of the calling process, read from smaps independently of lib/code-lock.ts. */
const LOCKED_MAPPINGS_JS = `
  const lockedMappings = () => {
    const out = []; let cur;
    for (const line of require('fs').readFileSync('/proc/self/smaps', 'latin1').split('\\n')) {
      const h = /^([0-9a-f]+)-([0-9a-f]+) (\\S{4}) \\S+ \\S+ (\\d+)\\s*(.*)$/.exec(line);
      if (h) { cur = { size: Number(BigInt('0x' + h[2]) - BigInt('0x' + h[1])), perms: h[3], inode: h[4], path: h[5] }; continue; }
      if (cur && line.startsWith('VmFlags:') && line.split(' ').includes('lo')) out.push(cur);
    }
    return out;
  };`;

describe('scoped memory locking: no abort on any Node major', () => {
  for (const node of NODES) {
    it.runIf(node.bin)(`Node ${node.label}${node.bin ? '' : ' (SKIPPED: binary absent, run vm/node-versions.mjs)'}: prepareDaemon's default lock, 3 GC rounds, Workers with locked Buffers terminated, locked Buffers collected, clean exit`, () => {
      const r = spawnJson(node.bin!, ['--expose-gc', path.join(ROOT, 'test/fixtures/memory-scenario.js')]);
      expect(r.status, r.detail).toBe(0);
      expect(r.signal).toBe(null);
      const out = r.out;
      expect(out.fresh).toBe(0);
      expect(out.lockStep.done, r.detail).toBe(true);
      // The code scope: node's text and read-only data alone are tens of MiB; all of it resident once locked.
      expect(out.lockStep.detail.code.mode).toBe('mapped');
      expect(out.lockStep.detail.code.bytes).toBeGreaterThan(32 * MIB);
      expect(out.lockStep.detail.code.residentBytes).toBe(out.lockStep.detail.code.bytes);
      expect(out.afterPrepare).toEqual({ code: out.lockStep.detail.code.bytes, buffers: 0, other: 0, total: out.lockStep.detail.code.bytes });
      // 16 x 4 MiB + a pool of 8 x 1 MiB.
      expect(out.withBuffers).toMatchObject({ code: out.afterPrepare.code, buffers: 72 * MIB, other: 0 });
      // Terminated Workers took their locked Buffers with them.
      expect(out.afterWorkers).toBe(out.withBuffers.total);
      // The 8 dropped 4 MiB Buffers were collected and unmapped.
      expect(out.afterDrop).toBe(out.afterWorkers - 32 * MIB);
      expect(out.final).toEqual({ code: out.afterPrepare.code, buffers: 40 * MIB, other: 0, total: out.afterDrop });
      expect(out.sum).toBe(120);
    });

    it.runIf(node.bin)(`Node ${node.label}${node.bin ? '' : ' (SKIPPED: binary absent)'}: every exported locking call, then GC rounds and exit while locked`, () => {
      const r = spawnJson(node.bin!, ['--expose-gc', '-e', `
        const io = require('./dist/index.js');
        const touched = io.lockMemory({ code: 'touched' });
        const unlocked = io.unlockMemory();
        const mapped = io.lockMemory();
        const none = io.lockMemory({ code: false });
        const b = io.allocLockedBuffer(100);
        const unlockedBytes = io.unlockBuffer(b);
        const again = io.unlockBuffer(b);
        const pool = new io.LockedBufferPool({ bufferSize: 65536, count: 4 });
        const x = pool.acquire(); x.fill(3); pool.release(x);
        const held = pool.acquire();
        const closed = pool.close();
        pool.release(held);
        const kept = io.allocLockedBuffer(1 << 20);
        for (let round = 0; round < 3; round++) { let a = []; for (let i = 0; i < 500000; i++) a.push({ i }); a = null; global.gc(); }
        process.stdout.write(JSON.stringify({ touched, unlocked, mapped, none, unlockedBytes, again, closed, final: io.lockedMemory(), held: held.length + b.length + kept.length }));`]);
      expect(r.status, r.detail).toBe(0);
      const out = r.out;
      expect(out.touched.code).toMatchObject({ mode: 'touched' });
      expect(out.touched.code.bytes).toBe(out.mapped.code.bytes);
      expect(out.touched.locked.total).toBe(out.touched.code.bytes);
      expect(out.unlocked).toEqual({ locked: { code: 0, buffers: 0, other: 0, total: 0 } });
      expect(out.none.code).toBeUndefined();
      expect(out.none.locked).toEqual(out.mapped.locked);
      expect([out.unlockedBytes, out.again, out.closed]).toEqual([4096, 0, 4 * 65536]);
      expect(out.final).toEqual({ code: out.mapped.code.bytes, buffers: MIB, other: 0, total: out.mapped.code.bytes + MIB });
    });
  }

  // The issue's reproduction, verbatim in effect: before the scopes, lockMemory() (mlockall MCL_CURRENT|MCL_ONFAULT)
  // followed by these rounds aborted Node 24.22.3 and 26.12.1 (SIGTRAP, `Check failed: 0 == ret`); 20 and 22 survived.
  const ISSUE_REPRO = (dist: string) => `
    const io = require(${JSON.stringify(dist)});
    io.lockMemory();
    for (let r = 0; r < 3; r++) { let a = []; for (let i = 0; i < 65536; i++) a.push({ i, s: 'x' + i }); a = null; }
    for (let r = 0; r < 3; r++) { let a = []; for (let i = 0; i < 1e6; i++) a.push({ i }); }
    process.stdout.write(JSON.stringify(io.lockedMemory()));`;
  for (const node of NODES) {
    it.runIf(node.bin)(`Node ${node.label}${node.bin ? '' : ' (SKIPPED: binary absent)'}: lockMemory() with its defaults, then rounds of 64K small objects and 1M objects: no abort`, () => {
      const r = spawnJson(node.bin!, ['-e', ISSUE_REPRO(path.join(DIST, 'index.js'))]);
      expect(r.status, r.detail).toBe(0);
      expect(r.out.code).toBeGreaterThan(32 * MIB);
      expect(r.out.code).toBe(r.out.total);
    });
  }

  for (const node of NODES) {
    it.runIf(node.bin)(`Node ${node.label}${node.bin ? '' : ' (SKIPPED: binary absent)'}: locking while busy Workers run (their builtins mappings get locked), then terminating them and GC rounds: no abort`, () => {
      const r = spawnJson(node.bin!, ['-e', `
        const { Worker } = require('worker_threads');
        const io = require('./dist/index.js');
        const workers = [];
        let online = 0;
        const go = async () => {
          const during = io.lockMemory().locked.code;
          await new Promise((resolve) => setTimeout(resolve, 200));
          for (const w of workers) await w.terminate();
          for (let round = 0; round < 3; round++) { let a = []; for (let i = 0; i < 1e6; i++) a.push({ i }); a = null; }
          process.stdout.write(JSON.stringify({ during, after: io.lockedMemory() }));
        };
        for (let i = 0; i < 4; i++) {
          const w = new Worker('setInterval(() => { let b = []; for (let i = 0; i < 100000; i++) b.push({ i }); }, 10)', { eval: true });
          w.on('online', () => { if (++online === 4) setTimeout(go, 200); });
          workers.push(w);
        }`]);
      expect(r.status, r.detail).toBe(0);
      expect(r.out.after.code).toBeGreaterThan(32 * MIB);
      // Each Worker's builtins mapping was locked with the rest and went away with the Worker.
      expect(r.out.during).toBeGreaterThan(r.out.after.code);
      expect(r.out.after.total).toBe(r.out.after.code);
    });
    it.runIf(node.bin)(`Node ${node.label}${node.bin ? '' : ' (SKIPPED: binary absent)'}: a locked Buffer sent from a Worker is refused or copied, never moved; the Worker's exit leaves the receiver's data intact`, () => {
      const r = spawnJson(node.bin!, ['--expose-gc', '-e', `
        const { Worker } = require('worker_threads');
        const w = new Worker(\`
          const io = require(\${JSON.stringify(require('path').resolve('dist/index.js'))});
          const { parentPort } = require('worker_threads');
          const b = io.allocLockedBuffer(1 << 20); b.fill(5);
          try { parentPort.postMessage(b.buffer, [b.buffer]); } catch (e) { parentPort.postMessage(e.name); }
          parentPort.postMessage(b.length);
          setInterval(() => {}, 1000);\`, { eval: true });
        const got = [];
        w.on('message', async (m) => {
          got.push(m);
          if (got.length < 2) return;
          await w.terminate();
          global.gc();
          await new Promise((resolve) => setTimeout(resolve, 100));
          const first = typeof got[0] === 'string' ? got[0] : new Uint8Array(got[0]).reduce((a, v) => a + v, 0);
          process.stdout.write(JSON.stringify({ first, lengthInWorker: got[1] }));
        });`]);
      expect(r.status, r.detail).toBe(0);
      // Refused (Node 22+: DataCloneError) or copied (Node 20): the Worker keeps its Buffer either way.
      expect([{ first: 'DataCloneError', lengthInWorker: MIB }, { first: 5 * MIB, lengthInWorker: MIB }]).toContainEqual(r.out);
    });
  }

  it('switching modes: touched then mapped reads every page in; calling it again changes nothing; a Worker can lock too', async () => {
    const out = run(`
      const { Worker } = require('worker_threads');
      const touched = io.lockMemory({ code: 'touched' });
      const mapped = io.lockMemory({ code: 'mapped' });
      const again = io.lockMemory();
      io.unlockMemory();
      const w = new Worker("const io = require('./dist/index.js'); const b = io.allocLockedBuffer(1 << 20); require('worker_threads').parentPort.postMessage(io.lockMemory().locked)", { eval: true });
      // The Worker's mappings go while its thread tears down, which may end a little after terminate() resolves.
      const settled = async (expected) => { for (let i = 0; i < 200 && io.lockedMemory().total !== expected; i++) await new Promise((r) => setTimeout(r, 50)); return io.lockedMemory(); };
      w.once('message', (inWorker) => w.terminate().then(() => settled(mapped.code.bytes)).then((after) => out({ touched: touched.code, mapped: mapped.code, again: again.code, inWorker, after })));`);
    expect(out.mapped.residentBytes).toBe(out.mapped.bytes);
    expect(out.touched.residentBytes).toBeLessThan(out.touched.bytes); // a fresh Node has not run all its code
    expect(out.again).toEqual(out.mapped);
    expect(out.inWorker).toMatchObject({ buffers: MIB, other: 0 });
    expect(out.inWorker.code).toBeGreaterThan(32 * MIB);
    // The Worker's Buffer went with it. The code lock is the process's and stays, except for the Worker's own copy of
    // V8's embedded builtins when V8 maps one for its isolate (usually, not always: Node 22 once mapped none in CI),
    // unmapped when the Worker exits. From a Worker, lockMemory() covers at least all the code the main thread's did.
    expect(out.after).toMatchObject({ code: out.mapped.bytes, buffers: 0, other: 0, total: out.mapped.bytes });
    expect(out.inWorker.code).toBeGreaterThanOrEqual(out.mapped.bytes);
  });

  it('lockMemory() while Workers exit concurrently: their vanishing builtins mappings are skipped, not reported as the memlock limit', async () => {
    const out = run(`
      const { Worker } = require('worker_threads');
      const failures = []; let calls = 0;
      (async () => {
        for (let round = 0; round < 10; round++) {
          const workers = [];
          for (let i = 0; i < 6; i++) workers.push(new Worker('setInterval(() => {}, 1000)', { eval: true }));
          await Promise.all(workers.map((w) => new Promise((resolve) => w.once('online', resolve))));
          const gone = workers.map((w) => w.terminate());
          for (let i = 0; i < 10; i++) { calls++; try { io.lockMemory({ code: 'touched' }); } catch (e) { failures.push(e.message); } }
          await Promise.all(gone);
        }
        out({ calls, failures, locked: io.lockedMemory() });
      })();`);
    expect(out.failures).toEqual([]);
    expect(out.calls).toBe(100);
    expect(out.locked.code).toBe(out.locked.total);
  });

  it('the code scope is the text and read-only data of loaded objects: not their writable data, not guard pages, not anonymous code, not data files mapped read-only', () => {
    const { codeScope } = require(path.join(DIST, 'code-lock.js'));
    const { parseSmaps } = require(path.join(DIST, 'procfs.js'));
    const head = (range: string, perms: string, inode: string, file: string, lo = false) =>
      `${range} ${perms} 00000000 fe:00 ${inode}    ${file}\nRss:                 8 kB\nVmFlags: rd mr mw me${lo ? ' lo' : ''}\n`;
    const smaps = [
      head('400000-500000', 'r--p', '11', '/usr/bin/node'),
      head('500000-900000', 'r-xp', '11', '/usr/bin/node', true),
      head('900000-a00000', 'r--p', '11', '/usr/bin/node'),
      head('a00000-a10000', 'rw-p', '11', '/usr/bin/node'),
      head('1000000-2000000', 'rw-p', '0', '[heap]'),
      head('7f0000000000-7f0100000000', 'r--s', '42', '/var/lib/db/data.mdb'),
      head('7f2000000000-7f2000100000', 'r-xp', '0', ''),
      head('7f3000000000-7f3000010000', 'r--p', '12', '/usr/lib/x86_64-linux-gnu/libc.so.6'),
      head('7f3000010000-7f3000100000', 'r-xp', '12', '/usr/lib/x86_64-linux-gnu/libc.so.6'),
      head('7f3000100000-7f3000110000', '---p', '12', '/usr/lib/x86_64-linux-gnu/libc.so.6'),
      head('7f3000110000-7f3000114000', 'r--p', '12', '/usr/lib/x86_64-linux-gnu/libc.so.6'),
      head('7f3000114000-7f3000116000', 'rw-p', '12', '/usr/lib/x86_64-linux-gnu/libc.so.6'),
      head('7ffd00000000-7ffd00001000', 'r-xp', '0', '[vdso]'),
    ].join('');
    const scope = codeScope(parseSmaps(smaps)).map((m: { start: bigint; perms: string; path: string; locked: boolean; size: number }) => [m.start.toString(16), m.perms, m.path, m.locked, m.size]);
    expect(scope).toEqual([
      ['400000', 'r--p', '/usr/bin/node', false, 0x100000],
      ['500000', 'r-xp', '/usr/bin/node', true, 0x400000],
      ['900000', 'r--p', '/usr/bin/node', false, 0x100000],
      ['7f3000000000', 'r--p', '/usr/lib/x86_64-linux-gnu/libc.so.6', false, 0x10000],
      ['7f3000010000', 'r-xp', '/usr/lib/x86_64-linux-gnu/libc.so.6', false, 0xf0000],
      ['7f3000110000', 'r--p', '/usr/lib/x86_64-linux-gnu/libc.so.6', false, 0x4000],
    ]);
  });

  it('what lockMemory() locks: every file-backed non-writable mapping, and nothing anonymous or writable (no V8 heap)', () => {
    const out = run(`${LOCKED_MAPPINGS_JS}
      const before = lockedMappings().length;
      const report = io.lockMemory();
      const locked = lockedMappings();
      out({ before, report, locked, files: [...new Set(locked.map((m) => m.path))] });`);
    expect(out.before).toBe(0);
    expect(out.locked.length).toBe(out.report.code.mappings);
    for (const m of out.locked) {
      expect(m.inode, JSON.stringify(m)).not.toBe('0');
      expect(m.perms[1], JSON.stringify(m)).toBe('-');
    }
    expect(out.locked.reduce((sum: number, m: { size: number }) => sum + m.size, 0)).toBe(out.report.code.bytes);
    expect(out.files).toEqual(expect.arrayContaining([fs.realpathSync(process.execPath), expect.stringMatching(/libc\.so/), expect.stringMatching(/io_flusher\.node$/)]));
  });

  it('a locked Buffer: its own page-aligned mapping, locked and resident; unlockBuffer ends the lock, the Buffer stays usable', () => {
    const out = run(`${LOCKED_MAPPINGS_JS}
      const b = io.allocLockedBuffer(3 * 4096 + 1);
      const zeroed = b.every((v) => v === 0);
      const locked = lockedMappings();
      const state = [io.isLockedBuffer(b), io.lockedMemory()];
      const bytes = io.unlockBuffer(b);
      b.fill(9);
      out({ zeroed, locked, state, bytes, after: [io.isLockedBuffer(b), io.lockedMemory(), lockedMappings().length], last: b[b.length - 1], length: b.length });`);
    expect(out.zeroed).toBe(true);
    expect(out.locked).toEqual([{ size: 4 * 4096, perms: 'rw-p', inode: '0', path: '' }]);
    expect(out.state).toEqual([true, { code: 0, buffers: 4 * 4096, other: 0, total: 4 * 4096 }]);
    expect(out.bytes).toBe(4 * 4096);
    expect(out.after).toEqual([false, { code: 0, buffers: 0, other: 0, total: 0 }, 0]);
    expect([out.last, out.length]).toEqual([9, 3 * 4096 + 1]);
  });

  it('validates every argument before locking anything', () => {
    const out = run(`
      const errors = [];
      const b = io.allocLockedBuffer(10);
      const pool = new io.LockedBufferPool({ bufferSize: 10, count: 1 });
      const taken = pool.acquire();
      const before = io.lockedMemory().total;
      for (const f of [() => io.lockMemory({ current: true }), () => io.lockMemory({ onFault: false }), () => io.lockMemory({ code: 'all' }),
                       () => io.lockMemory({ cod: 'mapped' }), () => io.lockMemory(null), () => io.allocLockedBuffer(0),
                       () => io.allocLockedBuffer(-1), () => io.allocLockedBuffer(1.5), () => io.allocLockedBuffer('10'), () => io.allocLockedBuffer(2 ** 31),
                       () => io.unlockBuffer(Buffer.alloc(10)), () => io.unlockBuffer(b.subarray(0)), () => io.unlockBuffer(new Uint8Array(4096)),
                       () => new io.LockedBufferPool({ bufferSize: 10 }), () => new io.LockedBufferPool({ bufferSize: 10, count: 0 }),
                       () => pool.release(Buffer.alloc(10)), () => pool.release(taken.subarray(1)), () => pool.acquire(),
                       () => { pool.release(taken); pool.release(taken); }]) {
        try { const v = f(); errors.push(v === undefined ? 'undefined' : 'no error'); } catch (e) { errors.push(e.code); }
      }
      out({ errors, unchanged: io.lockedMemory().total === before });`);
    expect(out.errors).toEqual([
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_TYPE',
      'ERR_OUT_OF_RANGE',
      'ERR_OUT_OF_RANGE',
      'ERR_OUT_OF_RANGE',
      'ERR_INVALID_ARG_TYPE',
      'ERR_OUT_OF_RANGE',
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_TYPE',
      'ERR_OUT_OF_RANGE',
      'ERR_INVALID_ARG_VALUE',
      'ERR_INVALID_ARG_VALUE',
      'undefined', // the pool's only Buffer is out: acquire() says so with undefined
      'ERR_INVALID_STATE',
    ]);
    expect(out.unchanged).toBe(true);
  });

  it('the native functions check their argument types (a TypeError, not an abort) and refuse unaligned Buffers', () => {
    const out = run(`
      const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      const errors = [];
      for (const f of [() => b.mlock2(4096, 4096, 0), () => b.mlock2(4096n, -1, 0), () => b.mlock2(4096n, 1.5, 0), () => b.munlock('x', 1),
                       () => b.mapAnonymousBuffer(0), () => b.mapAnonymousBuffer('1'), () => b.mlockBuffer({}, 0), () => b.mlockBuffer(Buffer.alloc(1), 'x'),
                       () => b.munlockBuffer(null), () => b.mapAnonymousBuffer(2 ** 33 + 1)]) {
        try { f(); errors.push('no error'); } catch (e) { errors.push(e.name); }
      }
      out({ errors, unaligned: b.mlockBuffer(Buffer.alloc(100), 0), unmapped: b.mlock2(4096n, 4096, 0) });`);
    expect(out.errors).toEqual([...Array(9).fill('TypeError'), 'RangeError']);
    expect(out.unaligned).toBe(-22);
    expect(out.unmapped).toBe(-12);
  });

  it('the hazard the scopes avoid: mlockall (the old lockMemory) makes Node abort at exit, and on Node 24/26 at a GC', () => {
    // mlockall straight through the binding. Measured: exit aborts on every major; the GC rounds abort 24 and 26.
    const script = `const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      if (b.mlockall(1 | 4) !== 0) throw new Error('mlockall');
      if (process.argv[1] === 'gc') { for (let r = 0; r < 3; r++) { let a = []; for (let i = 0; i < 1e6; i++) a.push({ i }); a = null; } b.munlockall(); }`;
    for (const node of NODES.filter((n) => n.bin)) {
      const exit = spawnSync(node.bin!, ['-e', script, 'exit'], { cwd: ROOT, encoding: 'utf8' });
      expect([node.label, exit.signal]).toEqual([node.label, 'SIGTRAP']); // exit status 133 in a shell
      expect(exit.stderr).toMatch(/Check failed: 0 == ret/);
      if (/^v2[46]/.test(node.label)) {
        const gc = spawnSync(node.bin!, ['-e', script, 'gc'], { cwd: ROOT, encoding: 'utf8' });
        expect([node.label, gc.signal]).toEqual([node.label, 'SIGTRAP']);
        expect(gc.stderr).toMatch(/Check failed: 0 == ret/);
      }
    }
  });

  it('without CAP_IPC_LOCK, over RLIMIT_MEMLOCK: ENOMEM naming the limit and how to raise it, and nothing locked', () => {
    // setpriv (util-linux) starts the child without CAP_IPC_LOCK in any set; the limit then applies.
    const r = spawnJson(process.execPath, ['-e', `
      const io = require('./dist/index.js');
      io.setMemlockLimit(4 * 1048576, 4 * 1048576);
      const failures = [];
      for (const f of [() => io.lockMemory(), () => io.lockMemory({ code: 'touched' }), () => io.allocLockedBuffer(5 * 1048576),
                       () => new io.LockedBufferPool({ bufferSize: 1048576, count: 5 })]) {
        try { f(); failures.push(null); } catch (e) { failures.push({ code: e.code, errno: e.errno, syscall: e.syscall, reason: e.reason, message: e.message, hint: e.hint, vmlck: io.lockedBytes() }); }
      }
      const pool = new io.LockedBufferPool({ bufferSize: 1048576, count: 3 });
      const within = io.lockedMemory();
      let over = null; try { io.allocLockedBuffer(1048576 + 1); } catch (e) { over = e.code; }
      process.stdout.write(JSON.stringify({ failures, within, over, after: io.lockedMemory() }));`], { prefix: ['/usr/bin/setpriv', '--inh-caps', '-ipc_lock', '--bounding-set', '-ipc_lock'] });
    expect(r.status, r.detail).toBe(0);
    const out = r.out;
    expect(out.failures).toHaveLength(4);
    for (const f of out.failures) {
      expect(f).toMatchObject({ code: 'ENOMEM', errno: -12, reason: 'limit-exceeded', vmlck: 0 });
      expect(f.message).toMatch(/RLIMIT_MEMLOCK 4194304 bytes; nothing was locked/);
      expect(f.hint).toMatch(/LimitMEMLOCK=/);
      expect(f.hint).toMatch(/docker run --ulimit memlock=/);
      expect(f.hint).toMatch(/CAP_IPC_LOCK/);
    }
    expect(out.failures.map((f: { syscall: string }) => f.syscall)).toEqual(['mlock', 'mlock2', 'mlock', 'mlock']);
    // Within the limit, locking works without the capability; one page more than the limit allows is refused.
    expect(out.within).toEqual({ code: 0, buffers: 3 * MIB, other: 0, total: 3 * MIB });
    expect(out.over).toBe('ENOMEM');
    expect(out.after).toEqual(out.within);
  });
});

describe('without CAP_IPC_LOCK and with the usual small RLIMIT_MEMLOCK', () => {
  const SETPRIV = ['/usr/bin/setpriv', '--inh-caps', '-ipc_lock', '--bounding-set', '-ipc_lock'];

  it('prepareDaemon() fails its (default, required) lockMemory step with the limit hint, locks nothing, and still runs the other steps', () => {
    const r = spawnJson(process.execPath, ['-e', `
      const io = require('./dist/index.js');
      io.setMemlockLimit(8 << 20, 8 << 20);
      try { io.prepareDaemon({ oomScoreAdj: 300, ioFlusher: false }); process.stdout.write('null'); }
      catch (e) { process.stdout.write(JSON.stringify({ code: e.code, message: e.message, steps: e.report.steps, vmlck: io.lockedBytes(), oom: io.getOomScoreAdj() })); }`], { prefix: SETPRIV });
    expect(r.status, r.detail).toBe(0);
    expect(r.out).toMatchObject({ code: 'ERR_IO_FLUSHER_PREPARE', vmlck: 0, oom: 300 });
    expect(r.out.message).toMatch(/lockMemory \(ENOMEM\)/);
    expect(r.out.steps[0]).toMatchObject({ step: 'lockMemory', done: false, required: true, code: 'ENOMEM', reason: 'limit-exceeded' });
    expect(r.out.steps[0].hint).toMatch(/LimitMEMLOCK=/);
    expect(r.out.steps[1]).toMatchObject({ step: 'oomScoreAdj', done: true });
  });

  it('exec --mlock: the preload cannot lock, so the Node COMMAND exits 125 naming the limit and does not run', () => {
    const r = spawnSync(SETPRIV[0]!, [...SETPRIV.slice(1), process.execPath, CLI, 'exec', '--clear', '--memlock-limit', '8M', '--mlock', '--', process.execPath, '-e', 'console.log("ran")'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(125);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--mlock: ENOMEM: .*RLIMIT_MEMLOCK 8388608 bytes; nothing was locked/);
  });
});

describe('memlock limit and oom_score_adj', () => {
  it('getMemlockLimit matches /proc/self/limits; lowering works and reads back', () => {
    const out = run(`
      const limits = require('fs').readFileSync('/proc/self/limits', 'utf8').match(/Max locked memory\\s+(\\S+)\\s+(\\S+)/);
      const before = io.getMemlockLimit();
      const lowered = io.setMemlockLimit(4096, 8192);
      out({ limits: [limits[1], limits[2]], before, lowered, after: io.getMemlockLimit() });`);
    const parse = (v: string) => (v === 'unlimited' ? null : Number(v));
    expect([out.before.soft, out.before.hard]).toEqual(out.limits.map(parse));
    expect(out.lowered).toEqual({ soft: 4096, hard: 8192 });
    expect(out.after).toEqual(out.lowered);
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] raising the hard limit is EPERM with reason missing-capability', () => {
    const out = run(`try { io.setMemlockLimit(Infinity); } catch (e) { out({ code: e.code, errno: e.errno, syscall: e.syscall, reason: e.reason, hint: e.hint }); }`);
    expect(out).toMatchObject({ code: 'EPERM', errno: -1, syscall: 'setrlimit', reason: 'missing-capability' });
    expect(out.hint).toMatch(/LimitMEMLOCK/);
  });

  it('argument checks', () => {
    const out = run(`
      const errors = [];
      for (const f of [() => io.setMemlockLimit(-1), () => io.setMemlockLimit(10, 5), () => io.setMemlockLimit('1'),
                       () => io.setOomScoreAdj(1001), () => io.setOomScoreAdj(1.5), () => io.setOomScoreAdj('0')]) {
        try { f(); errors.push(null); } catch (e) { errors.push(e.code); }
      }
      out(errors);`);
    expect(out).toEqual(['ERR_OUT_OF_RANGE', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_TYPE', 'ERR_OUT_OF_RANGE', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_TYPE']);
  });

  it('raising oom_score_adj works and reads back', () => {
    expect(run(`out([io.getOomScoreAdj(), io.setOomScoreAdj(500), io.getOomScoreAdj()])`)).toEqual([expect.any(Number), 500, 500]);
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] lowering oom_score_adj is EACCES with the hint', () => {
    const out = run(`try { io.setOomScoreAdj(-1000); } catch (e) { out({ code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, reason: e.reason, hint: e.hint }); }`);
    expect(out).toMatchObject({ code: 'EACCES', errno: -13, syscall: 'write', path: '/proc/self/oom_score_adj', reason: 'missing-capability' });
    expect(out.hint).toMatch(/OOMScoreAdjust=-1000/);
  });
});

describe('prepareDaemon', () => {
  it.runIf(!capable)('[without CAP_SYS_RESOURCE] every step asked for is required by default: one error naming each failure, with the report', () => {
    const out = run(`try { io.prepareDaemon(); } catch (e) { out({ code: e.code, reason: e.reason, message: e.message, report: e.report }); }`);
    expect(out).toMatchObject({ code: 'ERR_IO_FLUSHER_PREPARE', reason: 'prepare-failed' });
    expect(out.message).toMatch(/oomScoreAdj \(EACCES\), ioFlusher \(EPERM\)/);
    // The code scope is locked by default (this host has CAP_IPC_LOCK), with its bytes in the report.
    expect(out.report.steps.map((s: { step: string; done: boolean }) => [s.step, s.done])).toEqual([
      ['lockMemory', true],
      ['oomScoreAdj', false],
      ['ioFlusher', false],
    ]);
    expect(out.report.steps[0].detail.code).toMatchObject({ mode: 'mapped', bytes: expect.any(Number) });
    expect(out.report.steps[0].detail.locked.code).toBe(out.report.steps[0].detail.code.bytes);
    expect(out.report.steps[2]).toMatchObject({ code: 'EPERM', reason: 'missing-capability', emulated: false });
    expect(out.report.steps[2].detail.threads.length).toBeGreaterThan(1);
    expect(out.report.ok).toBe(false);
  });

  it('best-effort steps are reported, not thrown; only required ones throw', () => {
    const out = run(`out(io.prepareDaemon({ required: ['lockMemory'], lockMemory: true, oomScoreAdj: 200, memlockLimit: { soft: 1 << 20, hard: 8 << 20 } }))`);
    expect(out.ok).toBe(true);
    expect(out.steps.map((s: { step: string }) => s.step)).toEqual(['memlockLimit', 'lockMemory', 'oomScoreAdj', 'ioFlusher']);
    expect(out.steps[0]).toMatchObject({ done: true, detail: { soft: 1048576, hard: 8388608 } });
    expect(out.steps[2]).toMatchObject({ done: true, detail: { oomScoreAdj: 200 } });
    expect(out.steps[3]).toMatchObject({ required: false, done: capable });
    expect(out.ioFlusherInEffect).toBe(capable);
  });

  it('under the emulator the IO_FLUSHER step is marked emulated and the others really run', () => {
    const out = run(`out(io.prepareDaemon({ oomScoreAdj: 100, lockMemory: true }))`, { IO_FLUSHER_BACKEND: 'emulated', IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: '1', NODE_NO_WARNINGS: '1' });
    expect(out.ok).toBe(true);
    expect(out.steps[2]).toMatchObject({ step: 'ioFlusher', done: true, emulated: true });
    expect(out.steps[2].detail.complete).toBe(true);
    expect(out.ioFlusherInEffect).toBe(false);
    expect(out.steps[0].detail.locked.code).toBeGreaterThan(0);
  });

  it('checks the lockMemory option before changing anything', () => {
    const out = run(`
      const oom = io.getOomScoreAdj(), limit = io.getMemlockLimit();
      const results = [];
      for (const lockMemory of [{ current: true }, { code: 'everything' }, 'yes']) {
        try { io.prepareDaemon({ lockMemory, oomScoreAdj: oom + 1, memlockLimit: 1 << 20, ioFlusher: false }); results.push('no error'); } catch (e) { results.push(e.code); }
      }
      out({ results, same: io.getOomScoreAdj() === oom && JSON.stringify(io.getMemlockLimit()) === JSON.stringify(limit), locked: io.lockedBytes() });`);
    expect(out).toEqual({ results: ['ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_TYPE'], same: true, locked: 0 });
  });
});

describe('io-flusher exec and check: memory options', () => {
  it('--oom-score-adj and --memlock-limit reach COMMAND', () => {
    const r = runCli(['exec', '--clear', '--oom-score-adj', '300', '--memlock-limit', '1M', '--', 'sh', '-c', 'cat /proc/self/oom_score_adj; grep "locked memory" /proc/self/limits']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^300\nMax locked memory +1048576 +1048576 +bytes/);
  });

  it('--mlock locks the code scope of a Node COMMAND through the preload, which does not leak to its children; refuses other commands', () => {
    const probe = `${LOCKED_MAPPINGS_JS}
      const fs = require('fs');
      process.stdout.write(JSON.stringify({ vmlck: Number(fs.readFileSync('/proc/self/status', 'utf8').match(/VmLck:\\s+(\\d+)/)[1]) * 1024,
        locked: lockedMappings(), opts: process.env.NODE_OPTIONS || null, env: process.env.IO_FLUSHER_PRELOAD_MLOCK || null }))`;
    for (const flag of ['--mlock', '--mlock=touched']) {
      const r = runCli(['exec', '--clear', flag, '--', process.execPath, '-e', probe]);
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.vmlck).toBeGreaterThan(16 * MIB);
      // Only code: every locked mapping is file-backed and not writable.
      expect(out.locked.filter((m: { inode: string; perms: string }) => m.inode === '0' || m.perms[1] === 'w')).toEqual([]);
      expect(out.locked.reduce((sum: number, m: { size: number }) => sum + m.size, 0)).toBe(out.vmlck);
      expect(out).toMatchObject({ opts: null, env: null });
    }
    expect(runCli(['exec', '--clear', '--mlock', '--', 'sh', '-c', 'true']).status).toBe(2);
  });

  it('--mlock refuses a value other than mapped or touched (exit 2, naming both)', () => {
    const r = runCli(['exec', '--clear', '--mlock=all', '--', process.execPath, '-e', '0']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--mlock takes mapped or touched/);
  });

  const node24 = ALL_NODES.find((n) => n.label.startsWith('v24'))?.bin;
  it.runIf(node24)(`--mlock with Node 24 as COMMAND${node24 ? '' : ' (SKIPPED: binary absent)'}: GC rounds and a Worker after the preload's lock do not abort it`, () => {
    const r = runCli(['exec', '--clear', '--mlock', '--', node24!, '-e', `
      const { Worker } = require('worker_threads');
      for (let round = 0; round < 3; round++) { let a = []; for (let i = 0; i < 1e6; i++) a.push({ i }); a = null; }
      const w = new Worker('setInterval(() => {}, 1000)', { eval: true });
      w.on('online', () => w.terminate().then(() => console.log('done')));`]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('done\n');
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] --oom-score-adj -1000 fails with 125 and does not run COMMAND', () => {
    const r = runCli(['exec', '--clear', '--oom-score-adj', '-1000', '--', 'sh', '-c', 'echo ran']);
    expect(r).toMatchObject({ status: 125, stdout: '' });
  });

  it('check reports locked memory, the memlock limit and oom_score_adj', () => {
    const r = runCli(['check', '--json']);
    const out = JSON.parse(r.stdout);
    expect(out.memory).toMatchObject({ lockedBytes: 0, oomScoreAdj: expect.any(Number) });
    expect(runCli(['check']).stdout).toMatch(/memory +process \d+: locked 0 bytes \(VmLck\), RLIMIT_MEMLOCK/);
  });
});
