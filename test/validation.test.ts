/** Arguments are checked before any system call, with exact messages and Node's error codes. */
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { caught } from './helpers';

function expectNodeError(call: () => unknown, type: ErrorConstructor, code: string, message: string): void {
  const error = caught(call);
  expect(error).toBeInstanceOf(type);
  expect((error as Error).message).toBe(message);
  expect((error as { code?: string }).code).toBe(code);
}

describe('argument validation', () => {
  const emulated = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });

  it('setIoFlusher wants a boolean: 1, 0, "true" and undefined are refused (0 would CLEAR: a field bug)', () => {
    expectNodeError(() => emulated.setIoFlusher(1 as unknown as boolean), TypeError, 'ERR_INVALID_ARG_TYPE',
      'The "enabled" argument must be of type boolean. Received type number (1)');
    expect(() => emulated.setIoFlusher(0 as unknown as boolean)).toThrow(
      'The "enabled" argument must be of type boolean. Received type number (0)',
    );
    expect(() => emulated.setIoFlusher('true' as unknown as boolean)).toThrow(
      'The "enabled" argument must be of type boolean. Received type string ("true")',
    );
    expect(() => (emulated.setIoFlusher as (v?: boolean) => void)()).toThrow(
      'The "enabled" argument must be of type boolean. Received undefined',
    );
    // Nothing reached the (emulated) kernel: the thread is still clear.
    expect(emulated.getIoFlusher()).toBe(false);
  });

  it('the native backend validates before the syscall too', () => {
    const native = io.createIoFlusher({ backend: 'native' });
    expect(() => native.setIoFlusher(null as unknown as boolean)).toThrow(TypeError);
  });

  it('pid and tid must be integers from 1 to 4194304', () => {
    expectNodeError(() => io.threadFlags(0), RangeError, 'ERR_OUT_OF_RANGE',
      'The value of "pid" is out of range. It must be an integer from 1 to 4194304. Received 0');
    expect(() => io.threadFlags(1.5)).toThrow(RangeError);
    expect(() => io.threadFlags(process.pid, -1)).toThrow(/"tid" is out of range/);
    expectNodeError(() => io.listThreads('1' as unknown as number), TypeError, 'ERR_INVALID_ARG_TYPE',
      'The "pid" argument must be of type number. Received type string ("1")');
    expect(() => io.capabilities(2 ** 23)).toThrow(RangeError);
  });

  it('createIoFlusher checks its options', () => {
    expectNodeError(() => io.createIoFlusher({ backend: 'kernel' as 'native' }), TypeError, 'ERR_INVALID_ARG_VALUE',
      `The "options.backend" argument must be one of 'auto', 'native', 'emulated'. Received type string ("kernel")`);
    expect(() => io.createIoFlusher(null as unknown as object)).toThrow('The "options" argument must be of type object. Received null');
  });
});
