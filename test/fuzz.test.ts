/**
 * Fuzz over every public function and every CLI subcommand (test/fixtures/fuzz-public-api.js, in its own process):
 * thousands of generated arguments; no crash, no hang, every error a TypeError / RangeError / IoFlusherError with a
 * `code`, every CLI exit status a documented one. Seeded: the seed is printed, IO_FLUSHER_FUZZ_SEED=N replays it.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fuzzSeed } from './differential';
import { DIST } from './helpers';

describe('fuzz: public API and CLI', () => {
  it('thousands of generated calls: no crash, no hang, only coded TypeError / RangeError / IoFlusherError', () => {
    const seed = fuzzSeed();
    process.stdout.write(`fuzz seed ${seed} (replay: IO_FLUSHER_FUZZ_SEED=${seed})\n`);
    const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures/fuzz-public-api.js'), DIST, String(seed), '200'], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, IO_FLUSHER_BACKEND: undefined, NODE_NO_WARNINGS: '1' },
      maxBuffer: 64 << 20,
    });
    expect(r.signal, `seed ${seed}: killed (a hang or a crash)`).toBeNull();
    expect(r.status, `seed ${seed}: ${r.stderr.slice(-2000)}`).toBe(0);
    const out = JSON.parse(r.stdout) as { calls: number; violations: string[] };
    expect(out.violations, `seed ${seed}`).toEqual([]);
    expect(out.calls).toBeGreaterThan(3000);
  });
});
