/**
 * The private binding checks its arguments in C++: only our TypeScript calls it, but a wrong call must be a JS
 * TypeError, never an abort (node-addon-api's As<T>() on a wrong type aborts), a write past a buffer, or a handler
 * installed on a signal the process uses for something else. Run in a child: an abort would kill the test runner.
 */
import { describe, expect, it } from 'vitest';
import { runNode } from './helpers';

describe('native binding argument checks', () => {
  it('every export answers a wrong argument with a TypeError (ERR_INVALID_ARG_TYPE), never an abort', () => {
    const r = runNode(`
      const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      const calls = {
        prctlRaw: [[], [58], [58, 'x', 0, 0, 0], [58, 0, 0, 0, {}], [1.5, 0, 0, 0, 0], [58, NaN, 0, 0, 0]],
        setIoFlusher: [[], [undefined], ['1'], [1.5], [Infinity]],
        signalDisposition: [[], ['64'], [2 ** 40]],
        broadcastInstall: [[], [64], [64, 'x'], [undefined, 1]],
        broadcastRestore: [[], [64], ['64', 0]],
        tgkill: [[], [1], [1, null]],
        broadcastResult: [[], [{}]],
        broadcastPass: [
          [], [64], ['64', new Int32Array(1), new Int32Array(0), 0, new Int32Array(2)],
          [64, [1], new Int32Array(0), 0, new Int32Array(2)], [64, new Uint32Array(1), new Int32Array(0), 0, new Int32Array(2)],
          [64, new Int32Array(0), new Int32Array(0), 0, new Int32Array(0)], [64, new Int32Array(8193), new Int32Array(0), 0, new Int32Array(16386)],
          [64, new Int32Array(1), undefined, 0, new Int32Array(2)], [64, new Int32Array(1), new Int32Array(8193), 0, new Int32Array(2)],
          [64, new Int32Array(1), new Int32Array(0), 1.5, new Int32Array(2)], [64, new Int32Array(1), new Int32Array(0), 0, new Int32Array(1)],
          [64, new Int32Array(1), new Int32Array(0), 0, new Float64Array(2)], [64, new Int32Array(2), new Int32Array(0), 0, new Int32Array(3)],
        ],
        readTaskStats: [[], [[1]], [new Int32Array(0)], [new Uint32Array(1)], [new Int32Array(8193)]],
        execve: [[], ['/bin/true'], ['/bin/true', 'x', []], ['/bin/true', [1], []], ['/bin/true', [], [null]], [1, [], []]],
        getFdFlags: [[], ['0']],
        setFdFlags: [[], [0], [0, 'x']],
        getFdCloexec: [[]],
        setFdCloexec: [[], [0]],
        mlockall: [[], ['1']],
        getrlimit: [[], [8], [8, new Float64Array(2)], [8, new BigUint64Array(1)], [8, [0n, 0n]]],
        setrlimit: [[], [8, 1n], [8, 1, 1], [8, -1n, 1n], [8, 2n ** 64n, 1n]],
      };
      const out = [];
      for (const [name, argLists] of Object.entries(calls)) {
        for (const args of argLists) {
          try { out.push([name, 'returned', b[name](...args)]); } catch (e) { out.push([name, e.name, e.code]); }
        }
      }
      process.stdout.write(JSON.stringify(out));`);
    expect(r.status, r.stderr).toBe(0);
    const results = JSON.parse(r.stdout) as Array<[string, string, unknown]>;
    expect(results.length).toBe(70);
    for (const result of results) expect(result.slice(1), result[0]).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
  });

  it('broadcastPass runs only on the installed broadcast\'s signal, and with a non-negative wait: -EINVAL, nobody signalled', () => {
    const r = runNode(`
      const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      const self = new Int32Array([b.gettid()]);
      const outcomes = new Int32Array(2);
      const out = [b.broadcastPass(64, self, new Int32Array(0), 0, outcomes)]; // nothing installed
      out.push(b.broadcastInstall(64, 0));
      out.push(b.broadcastPass(63, self, new Int32Array(0), 0, outcomes)); // another signal
      out.push(b.broadcastPass(64, self, new Int32Array(0), -1, outcomes)); // a negative wait
      out.push(...outcomes); // untouched
      out.push(b.broadcastRestore(64, b.gettid()));
      process.stdout.write(JSON.stringify(out));`);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([-22, 0, -22, -22, 0, 0, 0]);
  });

  it('no broadcast handler on a signal that is not real-time (SIGSEGV, SIGCHLD): -EINVAL, disposition untouched', () => {
    const r = runNode(`
      const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      const before = [11, 17].map((s) => b.signalDisposition(s));
      const out = [11, 17, 0, 65, -1].map((s) => b.broadcastInstall(s, 0));
      out.push(...[11, 17].map((s, i) => b.signalDisposition(s) === before[i]));
      process.stdout.write(JSON.stringify(out));`);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([-22, -22, -22, -22, -22, true, true]);
  });
});
