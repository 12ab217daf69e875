/**
 * A randomized differential test, seeded and reproducible: one generated sequence of calls (raw prctl with
 * interesting arguments, and the public set/get) runs against two backends, and every answer and the calling
 * thread's IO_FLUSHER bits after every call must agree. The host suite runs the native backend (EPERM everywhere
 * here) against the emulator without the capability; the kernel suite runs it in each VM mode against the emulator
 * configured as the same kernel. The seed is printed; IO_FLUSHER_FUZZ_SEED=N replays a run.
 */
import type { IoFlusher } from '../dist/io-flusher.js';
import { IO_FLUSHER_FLAGS, PR_GET_IO_FLUSHER, PR_SET_IO_FLUSHER } from '../dist/kernel-constants.js';
import { kernelOf } from './helpers';

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed for this run: IO_FLUSHER_FUZZ_SEED, else a fresh one. */
export function fuzzSeed(): number {
  const fromEnv = process.env.IO_FLUSHER_FUZZ_SEED;
  if (fromEnv !== undefined && fromEnv !== '') {
    const n = Number(fromEnv);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`IO_FLUSHER_FUZZ_SEED must be an integer from 0 to 2^32-1; got ${fromEnv}`);
    return n;
  }
  return Math.floor(Math.random() * 0x100000000);
}

export type DifferentialCall =
  | { kind: 'raw'; option: number; args: [bigint, bigint, bigint, bigint] }
  | { kind: 'set'; value: unknown }
  | { kind: 'get' };

const U64_MAX = 2n ** 64n - 1n;

/** `count` calls from `seed`: mostly well-formed (so state changes happen), with edge values mixed in. */
export function generateCalls(seed: number, count: number): DifferentialCall[] {
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const arg2 = (): bigint => pick([0n, 1n, 0n, 1n, 2n, 5n, U64_MAX, 2n ** 32n + 1n, 2n ** 32n, BigInt(Math.floor(random() * 2 ** 53))]);
  const rest = (): bigint => (random() < 0.85 ? 0n : pick([1n, U64_MAX, 0xdeadbeefn, BigInt(Math.floor(random() * 2 ** 53))]));
  const calls: DifferentialCall[] = [];
  for (let i = 0; i < count; i++) {
    const r = random();
    if (r < 0.5) calls.push({ kind: 'raw', option: pick([PR_SET_IO_FLUSHER, PR_GET_IO_FLUSHER]), args: [arg2(), rest(), rest(), rest()] });
    else if (r < 0.8) calls.push({ kind: 'set', value: pick<unknown>([true, false, true, false, 1, 0, 'true', null, undefined]) });
    else calls.push({ kind: 'get' });
  }
  return calls;
}

export interface DifferentialOutcome {
  call: string;
  /** The number prctl returned, the value a public call returned, or the error's name and code. */
  answer: string;
  /** The calling thread's IO_FLUSHER bits afterwards, as the backend's flags reader shows them. */
  stateAfter: boolean;
}

function describeCall(call: DifferentialCall): string {
  if (call.kind === 'raw') return `prctl(${call.option}, ${call.args.map((a) => `0x${a.toString(16)}`).join(', ')})`;
  if (call.kind === 'set') return `setIoFlusher(${call.value === undefined ? 'undefined' : JSON.stringify(call.value)})`;
  return 'getIoFlusher()';
}

/** Runs the calls on the calling thread (cleared first) through one instance. */
export function runDifferential(instance: IoFlusher, calls: DifferentialCall[], flagsOf: () => number): DifferentialOutcome[] {
  kernelOf(instance).raw(PR_SET_IO_FLUSHER, 0n, 0n, 0n, 0n);
  return calls.map((call) => {
    let answer: string;
    try {
      if (call.kind === 'raw') answer = String(kernelOf(instance).raw(call.option, ...call.args));
      else if (call.kind === 'set') answer = `returned ${String(instance.setIoFlusher(call.value as boolean))}`;
      else answer = `returned ${String(instance.getIoFlusher())}`;
    } catch (err) {
      answer = `${(err as Error).name} ${(err as { code?: string }).code ?? '(no code)'}`;
    }
    return { call: describeCall(call), answer, stateAfter: (flagsOf() & IO_FLUSHER_FLAGS) === IO_FLUSHER_FLAGS };
  });
}

/** The first step where the two runs differ, for the failure message; undefined when they agree. */
export function firstDifference(a: DifferentialOutcome[], b: DifferentialOutcome[]): string | undefined {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (!x || !y || x.answer !== y.answer || x.stateAfter !== y.stateAfter) {
      return `step ${i} ${x?.call ?? y?.call}: ${x?.answer}/${x?.stateAfter} vs ${y?.answer}/${y?.stateAfter}`;
    }
  }
  return undefined;
}
