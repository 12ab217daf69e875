/**
 * The conformance table: raw prctl calls and what a kernel answers, written by hand from kernel/sys.c (5.6 to 6.18:
 * capable(CAP_SYS_RESOURCE) is checked first, then arg2..arg5; SET takes only 0 or 1, GET wants arg2..arg5 zero),
 * not from the emulator. The host suite runs it against every backend that can
 * run here; the kernel suite (test/kernel/) runs it on real kernels in a VM and compares kernel and emulator case by
 * case. Keep it the one place these cases live.
 */
import { EINVAL, EPERM, IO_FLUSHER_FLAGS, PR_GET_IO_FLUSHER, PR_SET_IO_FLUSHER } from '../dist/kernel-constants.js';
import type { KernelBackend } from '../dist/backend.js';

const U64_MAX = 2n ** 64n - 1n;

export interface ConformanceStep {
  option: number;
  args: [bigint, bigint, bigint, bigint];
  /** Result on a kernel with the feature, for a caller holding CAP_SYS_RESOURCE. */
  privileged: number;
  /** IO_FLUSHER state of the thread after the step, for the privileged caller. */
  stateAfter: boolean;
}

export interface ConformanceCase {
  name: string;
  steps: ConformanceStep[];
}

const set = (arg2: bigint, privileged: number, stateAfter: boolean, a3 = 0n, a4 = 0n, a5 = 0n): ConformanceStep => ({
  option: PR_SET_IO_FLUSHER,
  args: [arg2, a3, a4, a5],
  privileged,
  stateAfter,
});
const get = (privileged: number, stateAfter: boolean, a2 = 0n, a3 = 0n, a4 = 0n, a5 = 0n): ConformanceStep => ({
  option: PR_GET_IO_FLUSHER,
  args: [a2, a3, a4, a5],
  privileged,
  stateAfter,
});

export const CONFORMANCE_CASES: ConformanceCase[] = [
  { name: 'GET on a fresh thread answers 0', steps: [get(0, false)] },
  { name: 'SET 1, GET, SET 0, GET: round trip', steps: [set(1n, 0, true), get(1, true), set(0n, 0, false), get(0, false)] },
  { name: 'SET 1 twice is idempotent', steps: [set(1n, 0, true), set(1n, 0, true), get(1, true)] },
  { name: 'SET 0 on a clear thread succeeds (clearing an unset flag is silent)', steps: [set(0n, 0, false), get(0, false)] },
  { name: 'SET 2 is EINVAL', steps: [set(2n, -EINVAL, false), get(0, false)] },
  { name: 'SET ULONG_MAX is EINVAL', steps: [set(U64_MAX, -EINVAL, false)] },
  { name: 'SET 2^32+1 is EINVAL (arg2 compared as unsigned long)', steps: [set(2n ** 32n + 1n, -EINVAL, false)] },
  { name: 'SET 1 with arg3 set is EINVAL and changes nothing', steps: [set(1n, -EINVAL, false, 1n), get(0, false)] },
  { name: 'SET 1 with arg4 set is EINVAL', steps: [set(1n, -EINVAL, false, 0n, 1n)] },
  { name: 'SET 1 with garbage in arg5 is EINVAL', steps: [set(1n, -EINVAL, false, 0n, 0n, 0xdeadbeefdeadbeefn)] },
  { name: 'SET 2 with arg3 set is EINVAL', steps: [set(2n, -EINVAL, false, 1n)] },
  {
    name: 'a rejected SET 0 leaves a set flag set',
    steps: [set(1n, 0, true), set(0n, -EINVAL, true, 0n, 0n, 1n), get(1, true), set(0n, 0, false)],
  },
  {
    name: 'a rejected SET 5 leaves a set flag set',
    steps: [set(1n, 0, true), set(5n, -EINVAL, true), get(1, true), set(0n, 0, false)],
  },
  { name: 'GET with arg2 set is EINVAL', steps: [get(-EINVAL, false, 1n)] },
  { name: 'GET with arg3 set is EINVAL', steps: [get(-EINVAL, false, 0n, 1n)] },
  { name: 'GET with arg4 set is EINVAL', steps: [get(-EINVAL, false, 0n, 0n, 1n)] },
  { name: 'GET with garbage in arg5 is EINVAL', steps: [get(-EINVAL, false, 0n, 0n, 0n, U64_MAX)] },
  {
    name: 'a rejected GET does not disturb a set flag',
    steps: [set(1n, 0, true), get(-EINVAL, true, 0xdeadbeefn), get(1, true), set(0n, 0, false)],
  },
];

/** What the kernel a backend stands for should answer. */
export interface KernelModel {
  /** The kernel has PR_SET_IO_FLUSHER (>= 5.6, no filter hiding it). */
  supported: boolean;
  /** The caller holds CAP_SYS_RESOURCE in the initial user namespace. */
  capable: boolean;
}

/** Expected result of a step: an old kernel answers EINVAL to everything, the capability is checked before the
 * arguments (so an unprivileged caller gets EPERM even for bad arguments), and only then the table's answer. */
export function expectedResult(step: ConformanceStep, model: KernelModel): number {
  if (!model.supported) return -EINVAL;
  if (!model.capable) return -EPERM;
  return step.privileged;
}

export function expectedState(step: ConformanceStep, model: KernelModel): boolean {
  return model.supported && model.capable ? step.stateAfter : false;
}

/** One step as a backend answered it. */
export interface StepOutcome {
  caseName: string;
  step: number;
  call: string;
  result: number;
  /** IO_FLUSHER bits of the calling thread after the step, as the flags reader shows them. */
  stateAfter: boolean;
}

export function describeStep(step: ConformanceStep): string {
  const name = step.option === PR_SET_IO_FLUSHER ? 'PR_SET_IO_FLUSHER' : 'PR_GET_IO_FLUSHER';
  return `prctl(${name}, ${step.args.map((a) => `0x${a.toString(16)}`).join(', ')})`;
}

/**
 * Runs every case on the calling thread. Before each case the thread is cleared (SET 0, whose answer is not
 * recorded), so cases do not depend on each other. `flagsOf` reads the calling thread's flags word.
 */
export function runConformance(backend: KernelBackend, flagsOf: () => number): StepOutcome[] {
  const outcomes: StepOutcome[] = [];
  for (const c of CONFORMANCE_CASES) {
    backend.raw(PR_SET_IO_FLUSHER, 0n, 0n, 0n, 0n);
    c.steps.forEach((step, index) => {
      const result = backend.raw(step.option, ...step.args);
      const stateAfter = (flagsOf() & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS;
      outcomes.push({ caseName: c.name, step: index, call: describeStep(step), result, stateAfter });
    });
  }
  return outcomes;
}

/** The outcomes the table predicts for a kernel model, in the order runConformance produces them. */
export function expectedOutcomes(model: KernelModel): StepOutcome[] {
  return CONFORMANCE_CASES.flatMap((c) =>
    c.steps.map((step, index) => ({
      caseName: c.name,
      step: index,
      call: describeStep(step),
      result: expectedResult(step, model),
      stateAfter: expectedState(step, model),
    })),
  );
}
