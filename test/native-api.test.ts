/**
 * The public API on the native backend of this machine. Development and CI machines lack CAP_SYS_RESOURCE, so
 * every call is refused: these tests pin down exactly what a user sees then (error shape, reason, hints, probe).
 * Where the process does hold the capability (e.g. inside the VM), the success path is asserted instead.
 */
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { caught, holdsCapSysResource } from './helpers';

const capable = holdsCapSysResource();

describe('native backend on this machine', () => {
  const native = io.createIoFlusher({ backend: 'native' });

  it('is native and says why', () => {
    expect(native.backend).toBe('native');
    expect(native.emulated).toBe(false);
    expect(native.backendReason).toMatch(/native backend chosen by option/);
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] setIoFlusher(true) throws EPERM with the full error shape and what to do', () => {
    const error = caught(() => native.setIoFlusher(true));
    expect(error).toBeInstanceOf(io.IoFlusherError);
    expect(error).toBeInstanceOf(Error);
    const e = error as io.IoFlusherError;
    expect(e).toMatchObject({
      name: 'IoFlusherError',
      code: 'EPERM',
      errno: -1,
      syscall: 'prctl',
      option: 'PR_SET_IO_FLUSHER',
      reason: 'missing-capability',
      emulated: false,
    });
    expect(e.message).toMatch(/^EPERM: operation not permitted, prctl PR_SET_IO_FLUSHER: /);
    expect(e.hint).toContain('CAP_SYS_RESOURCE');
    expect(e.hint).toContain('--cap-add SYS_RESOURCE');
    expect(e.hint).toContain('AmbientCapabilities=CAP_SYS_RESOURCE');
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] clearing and reading are refused too (the kernel checks the capability first)', () => {
    expect(() => native.setIoFlusher(false)).toThrow(expect.objectContaining({ code: 'EPERM', option: 'PR_SET_IO_FLUSHER' }));
    expect(() => native.getIoFlusher()).toThrow(expect.objectContaining({ code: 'EPERM', option: 'PR_GET_IO_FLUSHER', errno: -1 }));
  });

  it.runIf(capable)('[needs CAP_SYS_RESOURCE: runs in the VM kernel suite] set, get, clear round trip, verified in /proc', () => {
    native.setIoFlusher(true);
    expect(native.getIoFlusher()).toBe(true);
    expect(native.threadFlags().ioFlusher).toBe(true);
    native.setIoFlusher(false);
    expect(native.getIoFlusher()).toBe(false);
    expect(native.threadFlags().ioFlusher).toBe(false);
  });

  it('probe() reports feature present, the capability as /proc shows it, backend native', () => {
    const p = native.probe();
    expect(p).toMatchObject({
      platform: 'linux',
      feature: 'present',
      capSysResource: capable,
      canSet: capable,
      backend: 'native',
      protectionInEffect: false,
    });
    expect(p.native.loaded).toBe(true);
    expect(p.ioFlusher).toBe(capable ? false : null);
    expect(p.featureDetail).toMatch(capable ? /answered 0/ : /EPERM/);
  });

  it('the default instance picks native here (EPERM is a real answer, not a reason to emulate)', () => {
    expect(io.defaultIoFlusher().backend).toBe('native');
    expect(io.probe().backend).toBe('native');
  });
});

describe('failure diagnosis', () => {
  // Built from FailureContext directly: the refused-by-filter and old-kernel paths cannot be reached on the host.
  const { prctlFailure } = require('../dist/errors.js') as typeof import('../dist/errors.js');
  const base = { emulated: false, inUserNamespace: false, kernelRelease: '6.1.0-28-amd64', seccompMode: 0 };

  it('EPERM while holding CAP_SYS_RESOURCE is a filter', () => {
    const e = prctlFailure(57, -1, { ...base, capSysResource: true, seccompMode: 2 });
    expect(e).toMatchObject({ code: 'EPERM', reason: 'refused-by-filter' });
    expect(e.hint).toContain('Seccomp: 2');
  });

  it('EPERM in a user namespace says the capability there never counts', () => {
    const e = prctlFailure(57, -1, { ...base, capSysResource: true, inUserNamespace: true });
    expect(e).toMatchObject({ code: 'EPERM', reason: 'missing-capability' });
    expect(e.hint).toMatch(/user namespace/);
  });

  it('EINVAL on a kernel older than 5.6 says upgrade', () => {
    const e = prctlFailure(58, -22, { ...base, capSysResource: true, kernelRelease: '5.4.0-150-generic' });
    expect(e).toMatchObject({ code: 'EINVAL', errno: -22, syscall: 'prctl', option: 'PR_GET_IO_FLUSHER', reason: 'kernel-lacks-support' });
    expect(e.hint).toMatch(/older than Linux 5\.6/);
  });

  it('EINVAL on a 5.6+ kernel under seccomp points at the filter', () => {
    const e = prctlFailure(57, -22, { ...base, capSysResource: true, seccompMode: 2 });
    expect(e.reason).toBe('kernel-lacks-support');
    expect(e.hint).toMatch(/seccomp filter \(Seccomp: 2\)/);
  });

  it('any other errno is unexpected and named', () => {
    const e = prctlFailure(57, -38, { ...base, capSysResource: true });
    expect(e).toMatchObject({ code: 'ENOSYS', errno: -38, reason: 'unexpected-errno' });
  });
});
