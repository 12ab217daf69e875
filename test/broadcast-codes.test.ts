/**
 * The numbers C and TypeScript share for the broadcast are written twice, once in each language (the header for the
 * native side, lib/kernel-constants.ts for the report): this reads the headers and holds the two to each other.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BROADCAST_OUTCOME, BROADCAST_SEEN, BROADCAST_SLOTS, STAT_BATCH } from '../dist/kernel-constants.js';

const ROOT = path.resolve(__dirname, '..');
/** Every `#define PREFIX_NAME number` of a header, as NAME -> number. */
function defines(header: string, prefix: string): Record<string, number> {
  const text = fs.readFileSync(path.join(ROOT, header), 'utf8');
  const out: Record<string, number> = {};
  for (const m of text.matchAll(new RegExp(`^#define ${prefix}(\\w+) (-?\\d+)`, 'gm'))) out[m[1]!] = Number(m[2]);
  return out;
}
/** camelCase of a C suffix: BLOCKS_SIGNAL -> blocksSignal. */
const camel = (name: string) => name.toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

describe('the broadcast numbers native/ and lib/ share', () => {
  it('every per-thread outcome (IOF_THREAD_*) and status observation (IOF_SEEN_*) has the same name and value in both', () => {
    const outcomes = Object.fromEntries(Object.entries(defines('native/thread_broadcast.h', 'IOF_THREAD_')).map(([k, v]) => [camel(k), v]));
    expect(outcomes).toEqual(BROADCAST_OUTCOME);
    const seen = Object.fromEntries(Object.entries(defines('native/thread_broadcast.h', 'IOF_SEEN_')).map(([k, v]) => [camel(k), v]));
    expect(seen).toEqual(BROADCAST_SEEN);
  });

  it('the table sizes agree', () => {
    expect(defines('native/thread_broadcast.h', 'IOF_').BROADCAST_SLOTS).toBe(BROADCAST_SLOTS);
    expect(defines('native/task_stats.h', 'IOF_').STAT_BATCH).toBe(STAT_BATCH);
  });
});
