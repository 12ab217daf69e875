/** Mode oldkernel: a seccomp filter answers EINVAL to options 57 and 58, as a kernel older than 5.6 does. */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as io from '../../dist/index.js';
import { caught } from '../helpers';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

assertKernelSuiteEnvironment();
const ROOT = path.resolve(__dirname, '../..');

describe(`real kernel ${KERNEL_NAME} behind an "older than 5.6" filter`, () => {
  it('probe() says the feature is absent', () => {
    expect(io.createIoFlusher({ backend: 'native' }).probe()).toMatchObject({ feature: 'absent', canSet: false, seccompMode: 2, capSysResource: true });
  });

  it('native pinned: calls throw EINVAL with reason kernel-lacks-support', () => {
    const native = io.createIoFlusher({ backend: 'native' });
    const error = caught(() => native.setIoFlusher(true));
    expect(error).toMatchObject({ code: 'EINVAL', errno: -22, syscall: 'prctl', reason: 'kernel-lacks-support', emulated: false });
    expect((error as io.IoFlusherError).hint).toMatch(/seccomp filter \(Seccomp: 2\)/);
  });

  it('auto falls back to the emulator and emits its warning; the emulator then works (capability held)', () => {
    const r = spawnSync(
      process.execPath,
      [
        '-e',
        `const io = require('./dist/index.js');
         const warnings = [];
         process.on('warning', (w) => warnings.push({ code: w.code, message: w.message }));
         io.setIoFlusher(true);
         const state = { get: io.getIoFlusher(), flags: io.threadFlags(), probe: io.probe() };
         setImmediate(() => process.stdout.write(JSON.stringify({ ...state, warnings })));`,
      ],
      { cwd: ROOT, encoding: 'utf8', env: { ...process.env, IO_FLUSHER_BACKEND: undefined } as NodeJS.ProcessEnv },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.warnings).toEqual([{ code: 'IO_FLUSHER_EMULATED', message: expect.stringMatching(/NOT in effect.*EINVAL/) }]);
    expect(out.get).toBe(true);
    expect(out.flags).toMatchObject({ ioFlusher: true, emulated: true });
    expect(out.probe).toMatchObject({ backend: 'emulated', feature: 'absent', protectionInEffect: false });
  });

  it('io-flusher check exits 4 (kernel lacks it)', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli.js'), 'check'], { encoding: 'utf8' });
    expect(r.status).toBe(4);
  });
});
