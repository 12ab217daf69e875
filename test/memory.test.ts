/**
 * The forward-progress kit on this machine: root with CAP_IPC_LOCK but without CAP_SYS_RESOURCE, so memory locks
 * work, while raising the memlock hard limit (EPERM) and lowering oom_score_adj (EACCES) are refused. Each case runs
 * in a fresh process: locks, limits and oom_score_adj are per process.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { holdsCapSysResource, ROOT, runCli, runNode } from './helpers';

const capable = holdsCapSysResource();
const run = (code: string, env: Record<string, string | undefined> = {}) => {
  const r = runNode(`const io = require('./dist/index.js'); const out = (v) => process.stdout.write(JSON.stringify(v));\n${code}`, env);
  expect(r.stderr, r.stderr).toBe('');
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout);
};

describe('lockMemory / unlockMemory', () => {
  it('locks (VmLck > 0) and unlocks; the process then grows normally; it exits cleanly while locked', () => {
    const out = run(`
      const before = io.lockedBytes();
      const locked = io.lockMemory();
      const unlocked = io.unlockMemory();
      const chunks = []; for (let i = 0; i < 64; i++) chunks.push(Buffer.alloc(1 << 20, i)); // 64 MiB, touched
      const objects = []; for (let i = 0; i < 200000; i++) objects.push({ i });
      const relocked = io.lockMemory({ onFault: false });
      out({ before, locked, unlocked, relocked, sum: chunks.reduce((a, c) => a + c[0], 0) });`);
    expect(out.before).toBe(0);
    expect(out.locked.flags).toBe(1 | 4); // MCL_CURRENT | MCL_ONFAULT by default
    expect(out.locked.lockedBytes).toBeGreaterThan(0);
    expect(out.unlocked).toEqual({ flags: 0, lockedBytes: 0 });
    expect(out.relocked).toMatchObject({ flags: 1, lockedBytes: expect.any(Number) });
    expect(out.sum).toBe((63 * 64) / 2);
    // status 0 (checked in run): the exit hook unlocked before Node's teardown, which otherwise aborts (status 133).
  });

  it('without the exit hook, Node aborts at exit with memory locked (why lockMemory registers it)', () => {
    // mlockall straight through the binding, bypassing lockMemory(): this documents the V8 behaviour the hook avoids.
    const r = spawnSync(process.execPath, ['-e', `const b = require('./dist/native-binding.js').loadNativeBinding().binding; process.stdout.write(String(b.mlockall(1 | 4)));`], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stdout).toBe('0');
    expect(r.signal).toBe('SIGTRAP'); // exit status 133 in a shell
    expect(r.stderr).toMatch(/Check failed: 0 == ret/);
  });

  it('validates options', () => {
    const out = run(`
      const errors = [];
      for (const o of [{ current: false, future: false }, { future: 'yes' }, null]) {
        try { io.lockMemory(o); } catch (e) { errors.push([e.name, e.code]); }
      }
      out(errors);`);
    expect(out).toEqual([
      ['RangeError', 'ERR_INVALID_ARG_VALUE'],
      ['TypeError', 'ERR_INVALID_ARG_TYPE'],
      ['TypeError', 'ERR_INVALID_ARG_TYPE'],
    ]);
  });

  it('without CAP_IPC_LOCK and over RLIMIT_MEMLOCK: ENOMEM with code, errno, reason and hint', () => {
    // setpriv (util-linux) starts the child without CAP_IPC_LOCK in any set; the limit then applies.
    const r = spawnSync('/usr/bin/setpriv', ['--inh-caps', '-ipc_lock', '--bounding-set', '-ipc_lock', process.execPath, '-e',
      `const io = require('./dist/index.js'); io.setMemlockLimit(65536, 65536);
       try { io.lockMemory(); } catch (e) { process.stdout.write(JSON.stringify({ code: e.code, errno: e.errno, syscall: e.syscall, reason: e.reason, hint: e.hint })); }`],
      { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ code: 'ENOMEM', errno: -12, syscall: 'mlockall', reason: 'limit-exceeded' });
    expect(out.hint).toMatch(/CAP_IPC_LOCK/);
    expect(out.hint).toMatch(/65536 bytes/);
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
    expect(out.report.steps.map((s: { step: string; done: boolean }) => [s.step, s.done])).toEqual([
      ['oomScoreAdj', false],
      ['ioFlusher', false],
    ]);
    expect(out.report.steps[1]).toMatchObject({ code: 'EPERM', reason: 'missing-capability', emulated: false });
    expect(out.report.steps[1].detail.threads.length).toBeGreaterThan(1);
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
    expect(out.steps[0].detail.lockedBytes).toBeGreaterThan(0);
  });
});

describe('io-flusher exec and check: memory options', () => {
  it('--oom-score-adj and --memlock-limit reach COMMAND', () => {
    const r = runCli(['exec', '--clear', '--oom-score-adj', '300', '--memlock-limit', '1M', '--', 'sh', '-c', 'cat /proc/self/oom_score_adj; grep "locked memory" /proc/self/limits']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^300\nMax locked memory +1048576 +1048576 +bytes/);
  });

  it('--mlock locks a Node COMMAND through the preload, which does not leak to its children; refuses other commands', () => {
    const r = runCli(['exec', '--clear', '--mlock', '--', process.execPath, '-e',
      `const fs = require('fs'); process.stdout.write(JSON.stringify({ vmlck: fs.readFileSync('/proc/self/status', 'utf8').match(/VmLck:\\s+(\\d+)/)[1], opts: process.env.NODE_OPTIONS || null, env: process.env.IO_FLUSHER_PRELOAD_MLOCK || null }))`]);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(Number(out.vmlck)).toBeGreaterThan(0);
    expect(out).toMatchObject({ opts: null, env: null });
    expect(runCli(['exec', '--clear', '--mlock', '--', 'sh', '-c', 'true']).status).toBe(2);
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
