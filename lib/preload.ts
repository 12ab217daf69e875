/**
 * Loaded with `node --require` by `io-flusher exec --mlock` into Node programs: mlockall's locks do not survive
 * execve (man 2 mlockall), so the program must lock its own memory. Runs before the program's code (and so before
 * it starts any Worker, see lockMemory). On failure it exits with 125, as the launcher would.
 */
import { preloadOption, PRELOAD_MLOCK_ENV } from './exec';
import { lockMemory, LockMemoryOptions } from './memory';

const wanted = process.env[PRELOAD_MLOCK_ENV];
if (wanted !== undefined) {
  // Only this process: its children get neither the variable nor the --require.
  delete process.env[PRELOAD_MLOCK_ENV];
  const options = process.env.NODE_OPTIONS?.replace(preloadOption(), '').trim();
  if (options) process.env.NODE_OPTIONS = options;
  else delete process.env.NODE_OPTIONS;
  const parts = new Set(wanted.split(','));
  const lock: LockMemoryOptions = { current: parts.has('current'), future: parts.has('future'), onFault: parts.has('onfault') };
  try {
    lockMemory(lock);
  } catch (err) {
    require('node:fs').writeSync(2, `io-flusher: --mlock: ${(err as Error).message}\n`);
    process.exit(125);
  }
}
