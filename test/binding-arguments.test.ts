/**
 * The private binding checks its arguments in C++: only our TypeScript calls it, but a wrong call must be a JS
 * TypeError, never an abort (node-addon-api's As<T>() on a wrong type aborts), a write past a buffer, or a handler
 * installed on a signal the process uses for something else. Run in a child: an abort would kill the test runner.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { loadNativeBinding } from '../dist/native-binding.js';
import { ROOT, runNode } from './helpers';

describe('native binding argument checks', () => {
  it('every export answers a wrong argument with a TypeError (ERR_INVALID_ARG_TYPE), never an abort', () => {
    const r = runNode(`
      const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      const calls = {
        prctlRaw: [[], [58], [58, 'x', 0, 0, 0], [58, 0, 0, 0, {}], [1.5, 0, 0, 0, 0], [58, NaN, 0, 0, 0]],
        setIoFlusher: [[], [undefined], ['1'], [1.5], [Infinity]],
        signalDisposition: [[], ['64'], [2 ** 40]],
        broadcastRun: [[], [64], [64, 1, 1000], ['64', 1, 1000, 16], [64, '1', 1000, 16], [64, 1, 1.5, 16], [64, 1, 1000, null], [64, 1, 2 ** 40, 16]],
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
    expect(results.length).toBe(53);
    for (const result of results) expect(result.slice(1), result[0]).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
  });

  it('no broadcast on a signal that is not real-time (SIGSEGV, SIGCHLD), nor with a value, wait or pass count out of range: -EINVAL, nothing touched', () => {
    const r = runNode(`
      const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      const before = [11, 17, 64].map((s) => b.signalDisposition(s));
      const out = [11, 17, 0, 65, -1].map((s) => b.broadcastRun(s, 0, 0, 1));
      out.push(b.broadcastRun(64, 2, 0, 1), b.broadcastRun(64, -1, 0, 1), b.broadcastRun(64, 0, -1, 1), b.broadcastRun(64, 0, 0, 0));
      out.push(...[11, 17, 64].map((s, i) => b.signalDisposition(s) === before[i]));
      process.stdout.write(JSON.stringify(out));`);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([-22, -22, -22, -22, -22, -22, -22, -22, -22, true, true, true]);
  });

  it('no broadcast on a signal the program ignores or handles itself: -EBUSY, its action untouched', () => {
    // A real-time signal ignored by the parent stays ignored in Node (it resets only signals 1-31 at start-up).
    const r = spawnSync('sh', ['-c', "trap '' 64; exec \"$0\" -e \"$1\"", process.execPath, `
      const b = require('./dist/native-binding.js').loadNativeBinding().binding;
      process.stdout.write(JSON.stringify([b.broadcastRun(64, 0, 0, 1), b.signalDisposition(64)]));`], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([-16, 1]);
  });

  it('the addon exports nothing but its Node-API registration (no C++ library instances for Node to rebind)', () => {
    const loaded = loadNativeBinding();
    if (!loaded.loaded) throw new Error(loaded.error);
    const r = spawnSync('nm', ['-D', '--defined-only', loaded.path], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const names = r.stdout.trim().split('\n').map((line) => line.split(' ').pop());
    expect(names.sort()).toEqual(['napi_register_module_v1', 'node_api_module_get_api_version_v1']);
  });
});
