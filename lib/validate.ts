/**
 * Argument checks made before any system call, with Node's error codes and message style
 * (ERR_INVALID_ARG_TYPE, ERR_OUT_OF_RANGE, ERR_INVALID_ARG_VALUE). Because of these, an EINVAL from the kernel can
 * only mean "unsupported" (or a filter), never "bad arguments". Every argument error of the package is built here.
 */
import { PID_MAX_LIMIT } from './kernel-constants';

function received(value: unknown): string {
  if (value === null) return 'Received null';
  if (value === undefined) return 'Received undefined';
  if (typeof value === 'function') return `Received function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') return `Received an instance of ${value.constructor?.name ?? 'Object'}`;
  if (typeof value === 'bigint') return `Received type bigint (${value}n)`;
  return `Received type ${typeof value} (${JSON.stringify(value)})`;
}

function withCode<E extends Error>(error: E, code: string): E & { code: string } {
  return Object.assign(error, { code });
}

/** ERR_OUT_OF_RANGE with Node's wording: 'The value of "NAME" is out of range. It must be WHAT. Received VALUE'. */
function outOfRange(name: string, what: string, value: unknown): RangeError & { code: string } {
  return withCode(new RangeError(`The value of "${name}" is out of range. It must be ${what}. Received ${String(value)}`), 'ERR_OUT_OF_RANGE');
}

/** ERR_INVALID_ARG_VALUE: an argument of the right type that is not one this call accepts; `message` says why. */
export function invalidArgValue(message: string): TypeError & { code: string } {
  return withCode(new TypeError(message), 'ERR_INVALID_ARG_VALUE');
}

/** ERR_INVALID_STATE: the call is valid, but not in the state its object is in (a closed pool, a detached Buffer). */
export function invalidState(message: string): Error & { code: string } {
  return withCode(new Error(message), 'ERR_INVALID_STATE');
}

/** The error Node gives for an operation Workers cannot make (process.chdir() in a Worker). */
export function mainThreadOnly(what: string): TypeError & { code: string } {
  return withCode(new TypeError(`${what} is not supported in workers: call it from the main thread`), 'ERR_WORKER_UNSUPPORTED_OPERATION');
}

export function assertBoolean(value: unknown, name: string): asserts value is boolean {
  if (typeof value !== 'boolean') {
    throw withCode(new TypeError(`The "${name}" argument must be of type boolean. ${received(value)}`), 'ERR_INVALID_ARG_TYPE');
  }
}

/** A process or thread id: an integer from 1 to 2^22 (PID_MAX_LIMIT on 64-bit, include/linux/threads.h). */
export function assertId(value: unknown, name: string): asserts value is number {
  assertInteger(value, name, 1, PID_MAX_LIMIT);
}

export function assertOneOf<T extends string>(value: unknown, name: string, choices: readonly T[]): asserts value is T {
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw withCode(
      new TypeError(`The "${name}" argument must be one of ${choices.map((c) => `'${c}'`).join(', ')}. ${received(value)}`),
      'ERR_INVALID_ARG_VALUE',
    );
  }
}

export function assertObject(value: unknown, name: string): asserts value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw withCode(new TypeError(`The "${name}" argument must be of type object. ${received(value)}`), 'ERR_INVALID_ARG_TYPE');
  }
}

/** "argument" for a parameter, "property" for an option (a dotted name), as Node words it. */
function kind(name: string): string {
  return name.includes('.') ? 'property' : 'argument';
}

export function assertNumber(value: unknown, name: string): asserts value is number {
  if (typeof value !== 'number') {
    throw withCode(new TypeError(`The "${name}" ${kind(name)} must be of type number. ${received(value)}`), 'ERR_INVALID_ARG_TYPE');
  }
}

/** An integer from min to max. */
export function assertInteger(value: unknown, name: string, min: number, max: number): asserts value is number {
  assertNumber(value, name);
  if (!Number.isInteger(value) || value < min || value > max) throw outOfRange(name, `an integer from ${min} to ${max}`, value);
}

/** A resource limit in bytes: a non-negative safe integer, or Infinity (RLIM_INFINITY). */
export function assertLimit(value: unknown, name: string): asserts value is number {
  assertNumber(value, name);
  if (value !== Infinity && (!Number.isSafeInteger(value) || value < 0)) throw outOfRange(name, 'a non-negative integer or Infinity', value);
}

/** A soft and a hard resource limit (each checked with assertLimit already): the soft one must not exceed the hard one. */
export function assertLimitPair(soft: number, hard: number): void {
  if (soft > hard) throw withCode(new RangeError(`The soft limit (${soft}) must not exceed the hard limit (${hard})`), 'ERR_OUT_OF_RANGE');
}

/** undefined or a boolean: an optional flag in an options object. */
export function assertOptionalBoolean(value: unknown, name: string): asserts value is boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    throw withCode(new TypeError(`The "${name}" ${kind(name)} must be of type boolean. ${received(value)}`), 'ERR_INVALID_ARG_TYPE');
  }
}

/**
 * An IO_FLUSHER_* environment variable with a value it cannot have. The code names the variable
 * (ERR_INVALID_IO_FLUSHER_BACKEND, ...), so a caller (and probe()) can tell which one to fix.
 */
export function invalidEnvironment(name: string, value: string, expected: string): RangeError & { code: string; variable: string } {
  return Object.assign(new RangeError(`${name} must be ${expected}; got ${JSON.stringify(value)}`), { code: `ERR_INVALID_${name}`, variable: name });
}
