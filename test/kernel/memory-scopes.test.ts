/**
 * Scoped memory locking on a real kernel (mode full), on every Node major present (the machine's node and the
 * official 22, 24 and 26 builds fetched by vm/node-versions.mjs, visible in the guest through the shared root):
 * prepareDaemon's default lock, then three rounds of heavy allocation and release, Workers with locked Buffers
 * started and terminated, locked Buffers dropped and collected, and a clean exit (test/fixtures/memory-scenario.js).
 * Prints VmLck per scope for each major.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

assertKernelSuiteEnvironment();
const ROOT = path.resolve(__dirname, '../..');
const MIB = 1 << 20;
const CACHE = path.join(os.homedir(), '.cache/io-flusher-node');
const NODES = [
  { label: `machine ${process.version}`, bin: process.execPath as string | undefined },
  ...['node-v22.23.5', 'node-v24.22.3', 'node-v26.12.1'].map((dir) => {
    const bin = path.join(CACHE, `${dir}-linux-x64/bin/node`);
    return { label: dir.slice(5), bin: fs.existsSync(bin) ? bin : undefined };
  }),
];

describe(`scoped memory locking, real kernel ${KERNEL_NAME}`, () => {
  for (const node of NODES) {
    it.runIf(node.bin)(`Node ${node.label}${node.bin ? '' : ' (SKIPPED: binary absent; run vm/node-versions.mjs on the host)'}: default lock, GC rounds, Workers, collected locked Buffers, clean exit`, () => {
      const r = spawnSync(node.bin!, ['--expose-gc', path.join(ROOT, 'test/fixtures/memory-scenario.js')], { cwd: ROOT, encoding: 'utf8', timeout: 280_000 });
      expect(r.status, `signal ${r.signal}\n${r.stderr}\n${r.stdout}`).toBe(0);
      const out = JSON.parse(r.stdout);
      const code = out.lockStep.detail.code;
      process.stdout.write(
        `VmLck per scope on ${KERNEL_NAME}, Node ${out.node}: fresh ${out.fresh} bytes; after prepareDaemon() code ${(code.bytes / MIB).toFixed(1)} MiB ` +
          `(${code.mappings} mappings, ${(code.residentBytes / MIB).toFixed(1)} MiB resident); with 72 MiB of locked Buffers ` +
          `${(out.withBuffers.total / MIB).toFixed(1)} MiB; after dropping 32 MiB of them ${(out.afterDrop / MIB).toFixed(1)} MiB\n`,
      );
      expect(out.lockStep.done).toBe(true);
      expect(code.bytes).toBeGreaterThan(32 * MIB);
      expect(code.residentBytes).toBe(code.bytes);
      expect(out.withBuffers).toMatchObject({ code: code.bytes, buffers: 72 * MIB, other: 0 });
      expect(out.afterWorkers).toBe(out.withBuffers.total);
      expect(out.afterDrop).toBe(out.afterWorkers - 32 * MIB);
      expect(out.final).toEqual({ code: code.bytes, buffers: 40 * MIB, other: 0, total: out.afterDrop });
    });
  }
});
