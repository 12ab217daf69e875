/**
 * The seeded differential test on a real kernel, in each mode: the native backend against the emulator configured as
 * the same kernel (full: capable, supported; nocap: not capable; oldkernel: unsupported). They must agree on every call.
 */
import { describe, expect, it } from 'vitest';
import { IoFlusher } from '../../dist/io-flusher.js';
import { readThreadStat } from '../../dist/procfs.js';
import { firstDifference, fuzzSeed, generateCalls, runDifferential } from '../differential';
import { assertKernelSuiteEnvironment, holdsCapSysResource, KERNEL_NAME } from './environment';
import { kernelOf } from '../helpers';

const mode = assertKernelSuiteEnvironment();

describe(`differential on ${KERNEL_NAME}, mode ${mode}`, () => {
  it('the kernel and the emulator configured as it agree on every call of a seeded sequence', () => {
    const seed = fuzzSeed();
    process.stdout.write(`differential ${KERNEL_NAME}/${mode} seed ${seed} (replay: IO_FLUSHER_FUZZ_SEED=${seed})\n`);
    const calls = generateCalls(seed, 2000);
    const native = new IoFlusher({ backend: 'native' });
    const emulated = new IoFlusher({ backend: 'emulated', emulator: { capSysResource: holdsCapSysResource(), kernelSupport: mode !== 'oldkernel' } });
    const nativeRun = runDifferential(native, calls, () => readThreadStat(process.pid, kernelOf(native).threadId()).flags);
    const emulatedRun = runDifferential(emulated, calls, () => emulated.threadFlags().flags);
    kernelOf(native).raw(57, 0n, 0n, 0n, 0n);
    expect(firstDifference(nativeRun, emulatedRun), `seed ${seed}`).toBeUndefined();
    if (mode === 'full') expect(nativeRun.some((o) => o.stateAfter)).toBe(true); // the success path was exercised
  });
});
