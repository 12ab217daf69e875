/**
 * Loaded with `node --require` by `io-flusher exec --mlock` into Node programs: memory locks do not survive execve
 * (man 2 mlock), so the program must lock its own memory. Locks the code scope (see lockMemory: never the V8 heap)
 * before the program's code runs. On failure it exits with 125, as the launcher would.
 */
import { preloadOption, PRELOAD_MLOCK_ENV } from './exec';
import { CodeLockMode, lockMemory } from './code-lock';

const wanted = process.env[PRELOAD_MLOCK_ENV];
if (wanted !== undefined) {
  // Only this process: its children get neither the variable nor the --require.
  delete process.env[PRELOAD_MLOCK_ENV];
  const options = process.env.NODE_OPTIONS?.replace(preloadOption(), '').trim();
  if (options) process.env.NODE_OPTIONS = options;
  else delete process.env.NODE_OPTIONS;
  try {
    // The launcher checked the value; anything else here is a hand-set variable, which lockMemory() rejects.
    lockMemory({ code: wanted as CodeLockMode });
  } catch (err) {
    require('node:fs').writeSync(2, `io-flusher: --mlock: ${(err as Error).message}\n`);
    process.exit(125);
  }
}
