/**
 * Every argument is validated before any system call with side effects: a bad option must not be discovered after
 * an irreversible step (a lowered hard memlock limit, locked memory, a prctl) has been made.
 */
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { runJson } from './helpers';

/** Runs `code` in a fresh Node with io-flusher as `io`; `out(x)` prints x as JSON. */
const run = (code: string, env: Record<string, string | undefined> = {}): any => runJson(code, env);

const STATE = `const state = () => ({ limit: io.getMemlockLimit(), locked: require('node:fs').readFileSync('/proc/self/status', 'latin1').match(/^VmLck:\\s*(\\d+)/m)[1], oom: io.getOomScoreAdj() });`;

describe('prepareDaemon() checks the whole options object before any step', () => {
  const bad: Array<[string, string]> = [
    [`{ memlockLimit: 4194304, lockMemory: true, oomScoreAdj: 'x' }`, 'ERR_INVALID_ARG_TYPE'],
    [`{ memlockLimit: 4194304, lockMemory: true, oomScoreAdj: 5000 }`, 'ERR_OUT_OF_RANGE'],
    [`{ memlockLimit: 4194304, lockMemory: true, ioFlusher: 'everything' }`, 'ERR_INVALID_ARG_VALUE'],
    [`{ memlockLimit: 4194304, lockMemory: true, required: ['nonsense'] }`, 'ERR_INVALID_ARG_VALUE'],
    [`{ memlockLimit: 4194304, lockMemory: { code: 'yes' } }`, 'ERR_INVALID_ARG_VALUE'],
    [`{ memlockLimit: 4194304, lockMemory: { current: true } }`, 'ERR_INVALID_ARG_VALUE'],
    [`{ memlockLimit: -1, oomScoreAdj: 100 }`, 'ERR_OUT_OF_RANGE'],
    [`{ memlockLimit: { soft: 8388608, hard: 4194304 }, oomScoreAdj: 100 }`, 'ERR_OUT_OF_RANGE'],
    [`{ memlockLimit: '4M', oomScoreAdj: 100 }`, 'ERR_INVALID_ARG_TYPE'],
  ];
  for (const [options, code] of bad) {
    it(`prepareDaemon(${options}) throws ${code} and changes nothing`, () => {
      const out = run(`${STATE} const before = state(); let error;
        try { io.prepareDaemon(${options}); } catch (e) { error = { name: e.name, code: e.code }; }
        out({ error, before, after: state() });`, { IO_FLUSHER_BACKEND: 'emulated', IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: '1', NODE_NO_WARNINGS: '1' });
      expect(out.error.code).toBe(code);
      expect(['TypeError', 'RangeError']).toContain(out.error.name);
      expect(out.after).toEqual(out.before);
    });
  }
});

describe('setProcessIoFlusher() checks its options before the calling thread is touched', () => {
  it('a bad signal, timeoutMs or maxPasses leaves the emulated state unchanged', () => {
    const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });
    for (const options of [{ signal: 5 }, { signal: '40' }, { signal: 1.5 }, { timeoutMs: 'x' }, { maxPasses: -1 }, { timeoutMs: NaN }]) {
      expect(() => emu.setProcessIoFlusher(true, options as io.ProcessIoFlusherOptions)).toThrow(
        expect.objectContaining({ code: expect.stringMatching(/^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/) }),
      );
      expect(emu.getIoFlusher()).toBe(false);
      expect(emu.listThreads().some((t) => t.ioFlusher)).toBe(false);
    }
  });

  it('a string signal is a TypeError (ERR_INVALID_ARG_TYPE), on the native backend too', () => {
    const native = io.createIoFlusher({ backend: 'native' });
    expect(() => native.setProcessIoFlusher(false, { signal: '40' as unknown as number })).toThrow(
      expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }),
    );
    expect(() => native.setProcessIoFlusher(false, { signal: 5 })).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }));
  });
});

describe('prepareDaemon() never silently skips a required step', () => {
  it('a required step that the call does not ask for is ERR_INVALID_ARG_VALUE, before any step runs', () => {
    const emu = { IO_FLUSHER_BACKEND: 'emulated', IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: '1', NODE_NO_WARNINGS: '1' };
    const out = run(`${STATE} const before = state(); const codes = [];
      for (const o of [{ required: ['lockMemory'], lockMemory: false }, { required: ['memlockLimit'], oomScoreAdj: 100 }, { required: ['ioFlusher'], ioFlusher: false, oomScoreAdj: 100 }, { required: ['oomScoreAdj'], oomScoreAdj: false }]) {
        try { io.prepareDaemon(o); codes.push('ok'); } catch (e) { codes.push(e.code); }
      }
      out({ codes, unchanged: JSON.stringify(state()) === JSON.stringify(before) });`, emu);
    expect(out).toEqual({ codes: ['ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_VALUE'], unchanged: true });
  });
});

describe('options are read once', () => {
  it('a getter that answers a valid value first and a bad one later does not get past prepareDaemon()\'s checks', () => {
    const out = run(`${STATE} const before = state(); let reads = 0;
      const options = { lockMemory: false, ioFlusher: false, get oomScoreAdj() { return reads++ === 0 ? 500 : 'x'; } };
      let result; try { result = io.prepareDaemon(options).steps.map((s) => [s.step, s.done]); } catch (e) { result = e.code; }
      out({ result, reads, oom: io.getOomScoreAdj() });`, { IO_FLUSHER_BACKEND: 'emulated', NODE_NO_WARNINGS: '1' });
    expect(out).toEqual({ result: [['oomScoreAdj', true]], reads: 1, oom: 500 });
  });
});
