#!/usr/bin/env node
// The host suite on every supported Node major, with the addon built once: Node-API is ABI-stable, so the one
// build/Release/io_flusher.node must load and pass in each. Each run gets the chosen node first on PATH (tests that
// spawn `node` spawn the same one) and IO_FLUSHER_EXPECT_NODE / IO_FLUSHER_EXPECT_ADDON, which
// test/node-runtime.test.ts checks: the Node that ran is the one asked for, and the addon it loaded is that one file.
//
// Usage: node scripts/test-nodes.mjs [--nodes 20,22,24,26] [vitest file filters...]
// Default: IO_FLUSHER_TEST_NODES, else every pinned major (vm/node-versions.mjs) plus this Node ("system").
// Needs a build (npm run build). Prints one line per Node and "nodes: N passed, M failed"; exits non-zero if any
// run fails or runs no test.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { nodeBinary, PINNED } from '../vm/node-versions.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
let nodes = (process.env.IO_FLUSHER_TEST_NODES || ['system', ...Object.keys(PINNED)].join(',')).split(',');
const i = args.indexOf('--nodes');
if (i >= 0) {
  nodes = args[i + 1].split(',');
  args.splice(i, 2);
}
nodes = nodes.filter(Boolean);

const addon = path.join(root, 'build/Release/io_flusher.node');
if (!fs.existsSync(addon)) {
  process.stderr.write('test-nodes: build/Release/io_flusher.node is missing: run `npm run build` first\n');
  process.exit(2);
}
const addonSha256 = createHash('sha256').update(fs.readFileSync(addon)).digest('hex');
process.stdout.write(`test-nodes: one addon for every Node: ${path.relative(root, addon)} sha256 ${addonSha256.slice(0, 16)}...\n`);

const work = fs.mkdtempSync(path.join(root, '.node-suite-'));
const rows = [];
let totals = [0, 0];
let failed = false;
for (const node of nodes) {
  const binary = nodeBinary(node);
  const version = spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim();
  const major = version.replace(/^v/, '').split('.')[0];
  const report = path.join(work, `node${major}.json`);
  process.stdout.write(`\n=== host suite on Node ${version} (${binary})\n`);
  const started = Date.now();
  const r = spawnSync(
    binary,
    [path.join(root, 'node_modules/vitest/vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...args],
    {
      cwd: root,
      stdio: 'inherit',
      env: {
        ...process.env,
        PATH: `${path.dirname(binary)}:${process.env.PATH}`,
        IO_FLUSHER_EXPECT_NODE: major,
        IO_FLUSHER_EXPECT_ADDON: addonSha256,
      },
    },
  );
  let counts = { passed: 0, failed: 0, skipped: 0, total: 0 };
  try {
    const json = JSON.parse(fs.readFileSync(report, 'utf8'));
    counts = { passed: json.numPassedTests, failed: json.numFailedTests, skipped: json.numPendingTests + json.numTodoTests, total: json.numTotalTests };
  } catch {
    // No report: vitest did not get that far; counted as a failure below.
  }
  const ok = r.status === 0 && counts.total > 0 && counts.failed === 0 && counts.passed > 0;
  if (!ok) failed = true;
  totals = [totals[0] + counts.passed, totals[1] + counts.failed + (ok ? 0 : counts.failed === 0 ? 1 : 0)];
  rows.push(
    `${ok ? 'PASS' : 'FAIL'}  node ${version.padEnd(9)} passed ${String(counts.passed).padStart(3)}  failed ${String(counts.failed).padStart(3)}` +
      `  skipped ${String(counts.skipped).padStart(2)}  ${((Date.now() - started) / 1000).toFixed(1)}s` +
      `${r.status !== 0 ? `  (exit ${r.status ?? r.signal})` : ''}${counts.total === 0 ? '  (no test ran)' : ''}`,
  );
}
fs.rmSync(work, { recursive: true, force: true });
process.stdout.write(`\nhost suite per Node (addon sha256 ${addonSha256.slice(0, 16)}...):\n${rows.join('\n')}\n`);
process.stdout.write(`nodes: ${totals[0]} passed, ${totals[1]} failed\n`);
process.exit(failed ? 1 : 0);
