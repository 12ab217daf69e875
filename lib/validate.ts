/**
 * Argument checks made before any system call, with Node's error codes and message style
 * (ERR_INVALID_ARG_TYPE, ERR_OUT_OF_RANGE, ERR_INVALID_ARG_VALUE). Because of these, an EINVAL from the kernel can
 * only mean "unsupported" (or a filter), never "bad arguments".
 */
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

export function assertBoolean(value: unknown, name: string): asserts value is boolean {
  if (typeof value !== 'boolean') {
    throw withCode(new TypeError(`The "${name}" argument must be of type boolean. ${received(value)}`), 'ERR_INVALID_ARG_TYPE');
  }
}

/** A process or thread id: an integer from 1 to 2^22 (PID_MAX_LIMIT on 64-bit, include/linux/threads.h). */
export function assertId(value: unknown, name: string): asserts value is number {
  if (typeof value !== 'number') {
    throw withCode(new TypeError(`The "${name}" argument must be of type number. ${received(value)}`), 'ERR_INVALID_ARG_TYPE');
  }
  if (!Number.isInteger(value) || value < 1 || value > 4194304) {
    throw withCode(
      new RangeError(`The value of "${name}" is out of range. It must be an integer from 1 to 4194304. Received ${value}`),
      'ERR_OUT_OF_RANGE',
    );
  }
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
  if (!Number.isInteger(value) || value < min || value > max) {
    throw withCode(
      new RangeError(`The value of "${name}" is out of range. It must be an integer from ${min} to ${max}. Received ${value}`),
      'ERR_OUT_OF_RANGE',
    );
  }
}

/** A resource limit in bytes: a non-negative safe integer, or Infinity (RLIM_INFINITY). */
export function assertLimit(value: unknown, name: string): asserts value is number {
  assertNumber(value, name);
  if (value !== Infinity && (!Number.isSafeInteger(value) || value < 0)) {
    throw withCode(
      new RangeError(`The value of "${name}" is out of range. It must be a non-negative integer or Infinity. Received ${value}`),
      'ERR_OUT_OF_RANGE',
    );
  }
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
