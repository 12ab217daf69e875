/**
 * Which Node ran the suite, and which addon it loaded. The runners that test every supported Node major
 * (scripts/test-nodes.mjs on the host, scripts/test-kernel.mjs through `kernel-run --node` in the VM) say what they
 * expect; this file holds them to it, so a run "on Node 24" that silently used the machine's Node 20, or a second
 * build of the addon, fails instead of passing for the wrong thing.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { probe } from '../dist/index.js';

const major = process.versions.node.split('.')[0];
const requested = process.env.IO_FLUSHER_EXPECT_NODE ?? process.env.IO_FLUSHER_KERNEL_NODE;
const expectedAddon = process.env.IO_FLUSHER_EXPECT_ADDON;

describe(`Node ${process.version} (Node-API ${process.versions.napi})`, () => {
  it.runIf(requested !== undefined && requested !== 'system')(
    `is the Node major the runner asked for (${requested ?? 'none asked: runs only under test-nodes or kernel-run --node'})`,
    () => {
      expect(major).toBe(requested);
    },
  );

  it('loads the native addon, and it is the one build every Node shares', () => {
    const native = probe().native;
    expect(native.loaded, String(native.error)).toBe(true);
    const sha256 = createHash('sha256').update(fs.readFileSync(native.path!)).digest('hex');
    process.stdout.write(`node ${process.version} loaded ${native.path} (sha256 ${sha256.slice(0, 16)}...)\n`);
    if (expectedAddon) expect(sha256).toBe(expectedAddon);
    expect(process.versions.napi && Number(process.versions.napi)).toBeGreaterThanOrEqual(8);
  });
});
