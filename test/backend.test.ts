/**
 * Backend selection and the addon loader, each in a fresh process: auto never emulates silently, native never falls
 * back, IO_FLUSHER_BACKEND is honoured, and the addon loads in Workers too.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseJsonRun as json, ROOT, runCli, runNode } from './helpers';

const REPORT = `
const io = require('./dist/index.js');
const warnings = [];
process.on('warning', (w) => warnings.push({ name: w.name, code: w.code, message: w.message }));
function report(extra) {
  setImmediate(() => process.stdout.write(JSON.stringify({ ...extra, warnings })));
}`;

describe('backend selection', () => {
  it('auto on this kernel: native, no warning (EPERM is a real answer, not a reason to emulate)', () => {
    const out = json(runNode(`${REPORT} report({ backend: io.defaultIoFlusher().backend, probe: io.probe() });`, { IO_FLUSHER_BACKEND: undefined }));
    expect(out.backend).toBe('native');
    expect(out.warnings).toEqual([]);
    expect(out.probe).toMatchObject({ feature: 'present', backend: 'native' });
  });

  it('auto without a loadable addon: the emulator, with a warning that protection is NOT in effect', () => {
    const out = json(
      runNode(`${REPORT} const p = io.probe(); report({ backend: io.defaultIoFlusher().backend, probe: p });`, {
        IO_FLUSHER_BINDING: '/nonexistent/io_flusher.node',
        IO_FLUSHER_BACKEND: undefined,
      }),
    );
    expect(out.backend).toBe('emulated');
    expect(out.probe).toMatchObject({ backend: 'emulated', feature: 'unknown', protectionInEffect: false, native: { loaded: false } });
    expect((out.probe as { native: { error: string } }).native.error).toContain('IO_FLUSHER_BINDING=/nonexistent/io_flusher.node');
    expect(out.warnings).toEqual([
      expect.objectContaining({ name: 'IoFlusherWarning', code: 'IO_FLUSHER_EMULATED', message: expect.stringMatching(/protection is NOT in effect/) }),
    ]);
  });

  it('native pinned without a loadable addon throws; it never falls back', () => {
    const out = json(
      runNode(
        `${REPORT} let e; try { io.createIoFlusher({ backend: 'native' }); } catch (err) { e = err; }
         report({ name: e.name, code: e.code, reason: e.reason, message: e.message });`,
        { IO_FLUSHER_BINDING: '/nonexistent/io_flusher.node' },
      ),
    );
    expect(out).toMatchObject({ name: 'IoFlusherError', code: 'ERR_IO_FLUSHER_NATIVE_UNAVAILABLE', reason: 'native-unavailable', warnings: [] });
    expect(out.message).toMatch(/npm run build:native/);
  });

  it('IO_FLUSHER_BACKEND=emulated selects the emulator, with the warning', () => {
    const out = json(runNode(`${REPORT} report({ backend: io.defaultIoFlusher().backend, reason: io.defaultIoFlusher().backendReason });`, { IO_FLUSHER_BACKEND: 'emulated' }));
    expect(out).toMatchObject({ backend: 'emulated', reason: 'emulator chosen by IO_FLUSHER_BACKEND' });
    expect(out.warnings).toEqual([expect.objectContaining({ code: 'IO_FLUSHER_EMULATED' })]);
  });

  it('an invalid IO_FLUSHER_BACKEND is an error from the API, and probe() still answers', () => {
    const out = json(
      runNode(`${REPORT} let e; try { io.getIoFlusher(); } catch (err) { e = err; } report({ error: e.message, probe: io.probe() });`, {
        IO_FLUSHER_BACKEND: 'kernel',
      }),
    );
    expect(out.error).toBe("IO_FLUSHER_BACKEND must be one of auto, native, emulated; got \"kernel\"");
    expect(out.probe).toMatchObject({ backend: null, backendReason: `ERR_INVALID_IO_FLUSHER_BACKEND: ${out.error}` });
  });

  it('auto on a platform without IO_FLUSHER falls back to the emulator and says so', () => {
    const out = json(
      runNode(`Object.defineProperty(process, 'platform', { value: 'darwin' }); ${REPORT} report({ reason: io.defaultIoFlusher().backendReason });`),
    );
    expect(out.reason).toMatch(/platform darwin has no PR_SET_IO_FLUSHER/);
    expect(out.warnings).toHaveLength(1);
  });
});

describe('the addon loader', () => {
  it('loads the addon named by IO_FLUSHER_BINDING, and reports which file', () => {
    // A copy outside the package, so only the variable can lead the loader to it; relative paths are resolved.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'io-flusher-binding-'));
    try {
      const source = process.env.IO_FLUSHER_BINDING ?? path.join(ROOT, 'build/Release/io_flusher.node');
      const copy = path.join(dir, 'copy.node');
      fs.copyFileSync(source, copy);
      const out = json(runNode(`${REPORT} report({ path: io.probe().native.path, backend: io.defaultIoFlusher().backend });`, {
        IO_FLUSHER_BINDING: path.relative(ROOT, copy),
        IO_FLUSHER_BACKEND: 'native',
      }));
      expect(out).toEqual({ path: copy, backend: 'native', warnings: [] });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without IO_FLUSHER_BINDING, finds the addon that node-gyp built (or a prebuild)', () => {
    const out = json(runNode(`${REPORT} report({ path: io.probe().native.path });`, { IO_FLUSHER_BINDING: undefined }));
    expect(out.path).toMatch(/(build\/Release\/io_flusher\.node|prebuilds\/linux-x64\/.*\.node)$/);
  });

  it('the addon loads and answers in Worker threads', () => {
    const out = json(
      runNode(`
        const { Worker } = require('node:worker_threads');
        const w = new Worker("const io = require(" + JSON.stringify(process.cwd() + '/dist/index.js') + ");" +
          "const n = io.createIoFlusher({ backend: 'native' });" +
          "require('node:worker_threads').parentPort.postMessage({ backend: n.backend, tid: n.kernel.threadId(), probe: n.probe().feature })", { eval: true });
        w.once('message', (m) => { process.stdout.write(JSON.stringify({ ...m, pid: process.pid })); w.terminate(); });`),
    );
    expect(out).toMatchObject({ backend: 'native', probe: 'present' });
    expect(out.tid).not.toBe(out.pid);
  });
});

describe('the system calls (memory locks and limits, descriptors, execve): the real kernel\'s whichever backend', () => {
  it('are the addon itself (no wrapper), whichever backend IO_FLUSHER_BACKEND chooses', () => {
    const out = json(
      runNode(
        `
        const { systemCalls } = require('./dist/backend.js');
        const binding = require('./dist/native-binding.js').loadNativeBinding().binding;
        process.stdout.write(JSON.stringify({ same: systemCalls('execve') === binding }));`,
        { IO_FLUSHER_BACKEND: 'emulated' },
      ),
    );
    expect(out).toEqual({ same: true });
  });

  it('without the addon, asking for the system calls fails naming what needed the addon; the emulated backend is still made', () => {
    const out = json(
      runNode(
        `
        const io = require('./dist/index.js');
        const { emulatedBackend, systemCalls } = require('./dist/backend.js');
        const failure = (call) => { try { call(); return null; } catch (e) { return { name: e.name, code: e.code, reason: e.reason, message: e.message } } };
        const backend = emulatedBackend();
        process.stdout.write(JSON.stringify({
          getrlimit: failure(() => systemCalls('memory locking and limits').getrlimit(8, new BigUint64Array(2))),
          execve: failure(() => systemCalls('execve').execve('/bin/true', [], [])),
          getMemlockLimit: failure(() => io.getMemlockLimit()),
          made: backend.name,
        }));`,
        { IO_FLUSHER_BINDING: '/nonexistent/io_flusher.node', IO_FLUSHER_BACKEND: undefined },
      ),
    );
    const unavailable = (neededFor: string) => ({
      name: 'IoFlusherError',
      code: 'ERR_IO_FLUSHER_NATIVE_UNAVAILABLE',
      reason: 'native-unavailable',
      message: expect.stringMatching(new RegExp(`^ERR_IO_FLUSHER_NATIVE_UNAVAILABLE: ${neededFor} needs the native addon: could not load`)),
    });
    expect(out).toEqual({
      getrlimit: unavailable('memory locking and limits'),
      execve: unavailable('execve'),
      getMemlockLimit: unavailable('memory locking and limits'),
      made: 'emulated',
    });
  });

  it('`io-flusher exec` without the addon: exit 126, saying why the addon did not load, and nothing is run', () => {
    const r = runCli(['exec', '--', 'sh', '-c', 'echo ran'], { IO_FLUSHER_BINDING: '/nonexistent/io_flusher.node' });
    expect(r.status).toBe(126);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^io-flusher: cannot exec: could not load the io-flusher native addon \(.*\); tried: IO_FLUSHER_BINDING=\/nonexistent\/io_flusher\.node\. /);
  });
});
