/**
 * The conformance table against every backend that runs on this machine. The native backend answers what this
 * kernel and this process's capabilities dictate (on development and CI machines: EPERM to every case, since
 * CAP_SYS_RESOURCE is missing); the emulator is run under each kernel model it offers.
 */
import { describe, expect, it } from 'vitest';
import { IoFlusher } from '../dist/io-flusher.js';
import { readThreadStat } from '../dist/procfs.js';
import { CONFORMANCE_CASES, expectedOutcomes, runConformance, type KernelModel } from './conformance-cases';
import { holdsCapSysResource, kernelOf } from './helpers';

function run(instance: IoFlusher) {
  return runConformance(kernelOf(instance), () => instance.threadFlags().flags);
}

describe('conformance table', () => {
  it('has cases for both options, valid and invalid arguments', () => {
    const steps = CONFORMANCE_CASES.flatMap((c) => c.steps);
    expect(steps.some((s) => s.option === 57 && s.privileged === 0)).toBe(true);
    expect(steps.some((s) => s.option === 57 && s.privileged < 0)).toBe(true);
    expect(steps.some((s) => s.option === 58 && s.privileged === 1)).toBe(true);
    expect(steps.some((s) => s.option === 58 && s.privileged < 0)).toBe(true);
  });

  it('native backend: the kernel answers as this process capabilities dictate, case by case', () => {
    const native = new IoFlusher({ backend: 'native' });
    const model: KernelModel = { supported: true, capable: holdsCapSysResource() };
    const outcomes = runConformance(kernelOf(native), () => readThreadStat(process.pid, kernelOf(native).threadId()).flags);
    expect(outcomes).toEqual(expectedOutcomes(model));
    if (!model.capable) expect(new Set(outcomes.map((o) => o.result))).toEqual(new Set([-1]));
  });

  const models: Array<[string, KernelModel]> = [
    ['capability held', { supported: true, capable: true }],
    ['capability missing', { supported: true, capable: false }],
    ['kernel older than 5.6', { supported: false, capable: true }],
    ['kernel older than 5.6, no capability', { supported: false, capable: false }],
  ];
  for (const [label, model] of models) {
    it(`emulated backend, ${label}: every step's result and flags match the table`, () => {
      const emulated = new IoFlusher({
        backend: 'emulated',
        emulator: { capSysResource: model.capable, kernelSupport: model.supported },
      });
      expect(run(emulated)).toEqual(expectedOutcomes(model));
    });
  }
});
