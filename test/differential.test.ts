/** The seeded differential test on the host: the native backend (no CAP_SYS_RESOURCE here) against the emulator without it. */
import { describe, expect, it } from 'vitest';
import { IoFlusher } from '../dist/io-flusher.js';
import { readThreadStat } from '../dist/procfs.js';
import { firstDifference, fuzzSeed, generateCalls, runDifferential } from './differential';
import { holdsCapSysResource, kernelOf } from './helpers';

const capable = holdsCapSysResource();

describe('differential: native backend and emulator, same generated calls', () => {
  it('agree on every answer and every state, for a seeded sequence of 2000 calls', () => {
    const seed = fuzzSeed();
    process.stdout.write(`differential seed ${seed} (replay: IO_FLUSHER_FUZZ_SEED=${seed})\n`);
    const calls = generateCalls(seed, 2000);
    const native = new IoFlusher({ backend: 'native' });
    const emulated = new IoFlusher({ backend: 'emulated', emulator: { capSysResource: capable, kernelSupport: true } });
    const nativeRun = runDifferential(native, calls, () => readThreadStat(process.pid, kernelOf(native).threadId()).flags);
    const emulatedRun = runDifferential(emulated, calls, () => emulated.threadFlags().flags);
    expect(firstDifference(nativeRun, emulatedRun), `seed ${seed}`).toBeUndefined();
    // The run exercised refusals and argument errors, not one path only.
    const answers = new Set(nativeRun.map((o) => o.answer));
    expect(answers.size).toBeGreaterThan(2);
  });

  it('the same seed generates the same calls', () => {
    expect(generateCalls(12345, 50)).toEqual(generateCalls(12345, 50));
    expect(generateCalls(12345, 50)).not.toEqual(generateCalls(12346, 50));
  });
});
