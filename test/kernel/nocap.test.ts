/** Mode nocap: CAP_SYS_RESOURCE dropped from every set on a kernel that has IO_FLUSHER. */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as io from '../../dist/index.js';
import { caught } from '../helpers';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

assertKernelSuiteEnvironment();

describe(`real kernel ${KERNEL_NAME}, CAP_SYS_RESOURCE dropped`, () => {
  const native = io.createIoFlusher({ backend: 'native' });

  it('set, clear and get are EPERM with the full error shape and reason missing-capability', () => {
    for (const [call, option] of [
      [() => native.setIoFlusher(true), 'PR_SET_IO_FLUSHER'],
      [() => native.setIoFlusher(false), 'PR_SET_IO_FLUSHER'],
      [() => native.getIoFlusher(), 'PR_GET_IO_FLUSHER'],
    ] as const) {
      const error = caught(call);
      expect(error).toBeInstanceOf(io.IoFlusherError);
      expect(error).toMatchObject({ code: 'EPERM', errno: -1, syscall: 'prctl', option, reason: 'missing-capability', emulated: false });
      expect((error as io.IoFlusherError).hint).toContain('--cap-add SYS_RESOURCE');
    }
  });

  it('probe(): feature present, capability missing, backend native', () => {
    expect(io.probe()).toMatchObject({ feature: 'present', capSysResource: false, canSet: false, backend: 'native', protectionInEffect: false });
  });

  it('io-flusher check exits 3 (not permitted)', () => {
    const r = spawnSync(process.execPath, [path.resolve(__dirname, '../../dist/cli.js'), 'check'], { encoding: 'utf8' });
    expect(r.status).toBe(3);
    expect(r.stdout).toMatch(/CAP_SYS_RESOURCE is missing/);
  });
});

describe(`forward-progress kit without CAP_SYS_RESOURCE, real kernel ${KERNEL_NAME}`, () => {
  it('prepareDaemon reports which steps failed and why, with the documented error', () => {
    const r = spawnSync(
      process.execPath,
      [
        '-e',
        `const io = require(${JSON.stringify(path.resolve(__dirname, '../../dist/index.js'))});
         try { io.prepareDaemon({ memlockLimit: Infinity, oomScoreAdj: -1000 }); process.stdout.write('null'); }
         catch (e) { process.stdout.write(JSON.stringify({ code: e.code, reason: e.reason, message: e.message, steps: e.report.steps.map((s) => [s.step, s.done, s.code ?? null, s.reason ?? null]) })); }`,
      ],
      { encoding: 'utf8' },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    process.stdout.write(`prepareDaemon without CAP_SYS_RESOURCE on ${KERNEL_NAME}: ${JSON.stringify(out)}\n`);
    expect(out).toMatchObject({ code: 'ERR_IO_FLUSHER_PREPARE', reason: 'prepare-failed' });
    // The code scope is locked by default; root keeps CAP_IPC_LOCK in this mode, so the memlock limit does not apply.
    expect(out.steps).toEqual([
      ['memlockLimit', false, 'EPERM', 'missing-capability'],
      ['lockMemory', true, null, null],
      ['oomScoreAdj', false, 'EACCES', 'missing-capability'],
      ['ioFlusher', false, 'EPERM', 'missing-capability'],
    ]);
  });
});
