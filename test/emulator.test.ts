/**
 * The emulator's per-thread model: each JS thread has its own state; Workers and child processes created after a
 * change inherit it, those created before do not; the flags reader shows the model's bits, marked emulated.
 * Each scenario runs in a fresh child process so the main test process's own state never leaks between tests.
 */
import { describe, expect, it } from 'vitest';
import { holdsCapSysResource, runJson, runNode } from './helpers';

/** Prelude for child scripts: an emulated instance with the capability, and a Worker helper. */
const PRELUDE = `
const io = require('./dist/index.js');
const { Worker } = require('node:worker_threads');
const { execFileSync } = require('node:child_process');
const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });
const workerScript = "const { parentPort } = require('node:worker_threads');" +
  "const io = require(" + JSON.stringify(process.cwd() + '/dist/index.js') + ");" +
  "const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });" +
  "parentPort.on('message', (m) => { if (m === 'set') emu.setIoFlusher(true); if (m === 'clear') emu.setIoFlusher(false);" +
  "  const t = emu.threadFlags(); parentPort.postMessage({ get: emu.getIoFlusher(), tid: t.tid, bits: t.ioFlusher, emulated: t.emulated }); });";
function startWorker() {
  const w = new Worker(workerScript, { eval: true });
  const ask = (m) => new Promise((resolve) => { w.once('message', resolve); w.postMessage(m); });
  return { w, ask };
}
const out = (v) => process.stdout.write(JSON.stringify(v));
`;

function scenario(body: string): unknown {
  return runJson(`(async () => {\n${body}\n})().catch((e) => { console.error(e); process.exit(1); });`, {}, { prelude: PRELUDE, allowStderr: false });
}

describe('emulator, capability granted', () => {
  it('set / get / clear round trip, and the flags reader shows the bits as emulated', () => {
    const result = scenario(`
      const before = emu.getIoFlusher();
      emu.setIoFlusher(true);
      const during = [emu.getIoFlusher(), emu.threadFlags()];
      emu.setIoFlusher(false);
      out({ before, during, after: [emu.getIoFlusher(), emu.threadFlags().ioFlusher] });`);
    expect(result).toMatchObject({
      before: false,
      during: [true, { ioFlusher: true, memallocNoio: true, localThrottle: true, emulated: true }],
      after: [false, false],
    });
  });

  it('per-thread state: a Worker change leaves the main thread alone and vice versa', () => {
    const result = scenario(`
      const a = startWorker(), b = startWorker();
      const aSet = await a.ask('set');
      const bSeen = await b.ask('get');
      const mainAfterWorker = emu.getIoFlusher();
      emu.setIoFlusher(true);
      const aCleared = await a.ask('clear');
      const mainAfterWorkerClear = emu.getIoFlusher();
      const mainRow = emu.listThreads().find((t) => t.tid === process.pid);
      const aRow = emu.listThreads().find((t) => t.tid === aSet.tid);
      await a.w.terminate(); await b.w.terminate();
      out({ aSet, bSeen, mainAfterWorker, aCleared, mainAfterWorkerClear, mainRow, aRow });`) as Record<string, { get?: boolean; ioFlusher?: boolean }>;
    expect(result.aSet).toMatchObject({ get: true, bits: true, emulated: true });
    expect(result.bSeen).toMatchObject({ get: false, bits: false });
    expect(result.mainAfterWorker).toBe(false);
    expect(result.aCleared).toMatchObject({ get: false, bits: false });
    expect(result.mainAfterWorkerClear).toBe(true);
    // The main thread's listing sees each thread's modelled state.
    expect(result.mainRow).toMatchObject({ ioFlusher: true, emulated: true });
    expect(result.aRow).toMatchObject({ ioFlusher: false, emulated: true });
  });

  it('Workers inherit: one created after the change has the state, one created before does not', () => {
    const result = scenario(`
      const before = startWorker();
      await before.ask('get');
      emu.setIoFlusher(true);
      const after = startWorker();
      const r = { before: await before.ask('get'), after: await after.ask('get') };
      emu.setIoFlusher(false);
      const afterClear = startWorker();
      r.afterClear = await afterClear.ask('get');
      await Promise.all([before.w.terminate(), after.w.terminate(), afterClear.w.terminate()]);
      out(r);`) as Record<string, { get: boolean }>;
    expect(result.before!.get).toBe(false);
    expect(result.after!.get).toBe(true);
    expect(result.afterClear!.get).toBe(false);
  });

  it('child processes inherit: spawned after the change have it, spawned before or after clearing do not', () => {
    const result = scenario(`
      const probeChild = "const io=require('./dist/index.js');" +
        "const e=io.createIoFlusher({backend:'emulated',emulator:{capSysResource:true}});process.stdout.write(String(e.getIoFlusher()))";
      const { spawn } = require('node:child_process');
      // Spawned before the change; it answers only once told to (after the change).
      const early = spawn(process.execPath, ['-e', "process.stdin.once('data',()=>{" + probeChild + "})"], { stdio: ['pipe', 'pipe', 'inherit'] });
      await new Promise((r) => early.once('spawn', r));
      emu.setIoFlusher(true);
      const late = execFileSync(process.execPath, ['-e', probeChild]).toString();
      let earlyAnswer = '';
      early.stdout.on('data', (d) => (earlyAnswer += d));
      early.stdin.end('go');
      await new Promise((r) => early.once('exit', r));
      emu.setIoFlusher(false);
      const afterClear = execFileSync(process.execPath, ['-e', probeChild]).toString();
      out({ early: earlyAnswer, late, afterClear });`);
    expect(result).toEqual({ early: 'false', late: 'true', afterClear: 'false' });
  });
});

describe('emulator, capability missing or kernel too old', () => {
  it('without the capability: EPERM, marked emulated, and the state never changes', () => {
    const r = runNode(`
      const io = require('./dist/index.js');
      const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: false } });
      let error; try { emu.setIoFlusher(true); } catch (e) { error = e; }
      process.stdout.write(JSON.stringify({ code: error.code, errno: error.errno, reason: error.reason, emulated: error.emulated,
        message: error.message, bits: emu.threadFlags().ioFlusher }));`);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      code: 'EPERM',
      errno: -1,
      reason: 'missing-capability',
      emulated: true,
      message: expect.stringMatching(/^EPERM: operation not permitted, prctl PR_SET_IO_FLUSHER \(emulated kernel\): /),
      bits: false,
    });
  });

  it('the capability defaults to what the process really holds, and the environment can choose', () => {
    const code = `const io=require('./dist/index.js');process.stdout.write(String(io.createIoFlusher({backend:'emulated'}).kernel.emulator.capSysResource))`;
    expect(runNode(code, { IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: undefined }).stdout).toBe(String(holdsCapSysResource()));
    expect(runNode(code, { IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: '1' }).stdout).toBe('true');
    expect(runNode(code, { IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: '0' }).stdout).toBe('false');
  });

  it('modelling a kernel older than 5.6: EINVAL with reason kernel-lacks-support', () => {
    const r = runNode(`
      const io = require('./dist/index.js');
      const emu = io.createIoFlusher({ backend: 'emulated' });
      try { emu.getIoFlusher(); } catch (e) { process.stdout.write(JSON.stringify({ code: e.code, reason: e.reason, hint: e.hint })); }`,
      { IO_FLUSHER_EMULATED_KERNEL_SUPPORT: '0', IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: '1' });
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 'EINVAL', reason: 'kernel-lacks-support', hint: expect.stringMatching(/older than Linux 5\.6/) });
  });
});
