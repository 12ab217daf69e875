/**
 * The conformance table on a real kernel, in every mode: the kernel's answers must equal the table's, and the
 * emulator (configured as the same kind of kernel) must answer exactly as the kernel did, step by step, including
 * the IO_FLUSHER bits the flags reader shows after each step.
 */
import * as os from 'node:os';
import { describe, expect, it } from 'vitest';
import { IoFlusher } from '../../dist/io-flusher.js';
import { readThreadStat } from '../../dist/procfs.js';
import { expectedOutcomes, runConformance, type KernelModel } from '../conformance-cases';
import { assertKernelSuiteEnvironment, holdsCapSysResource, KERNEL_NAME } from './environment';
import { kernelOf } from '../helpers';

const mode = assertKernelSuiteEnvironment();
const model: KernelModel = { supported: mode !== 'oldkernel', capable: holdsCapSysResource() };

describe(`conformance on ${KERNEL_NAME} (${os.release()}), mode ${mode}`, () => {
  const native = new IoFlusher({ backend: 'native' });
  const kernelOutcomes = runConformance(kernelOf(native), () => readThreadStat(process.pid, kernelOf(native).threadId()).flags);
  const emulated = new IoFlusher({ backend: 'emulated', emulator: { capSysResource: model.capable, kernelSupport: model.supported } });
  const emulatorOutcomes = runConformance(kernelOf(emulated), () => emulated.threadFlags().flags);

  it('the kernel answers every step as the table says', () => {
    expect(kernelOutcomes).toEqual(expectedOutcomes(model));
  });

  it('the emulator answers every step exactly as the kernel did', () => {
    const differences = kernelOutcomes.filter(
      (k, i) => k.result !== emulatorOutcomes[i]!.result || k.stateAfter !== emulatorOutcomes[i]!.stateAfter,
    );
    process.stdout.write(
      `conformance ${KERNEL_NAME}/${mode}: ${kernelOutcomes.length - differences.length}/${kernelOutcomes.length} steps ` +
        `matched between kernel ${os.release()} and emulator\n`,
    );
    for (const d of differences) {
      const e = emulatorOutcomes[kernelOutcomes.indexOf(d)]!;
      process.stdout.write(`  DIFFERENT: ${d.caseName} step ${d.step} ${d.call}: kernel ${d.result}/${d.stateAfter}, emulator ${e.result}/${e.stateAfter}\n`);
    }
    expect(emulatorOutcomes).toEqual(kernelOutcomes);
  });
});
