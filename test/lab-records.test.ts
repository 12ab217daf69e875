/**
 * The lab's definitions (scripts/lab/record.mjs: stalled, hung, unresolved, the stack comparison) are checked by
 * their own node:test file, kept beside them so the lab stays runnable without vitest; npm test runs it here, with
 * the TAP reporter named (Node 24 and 26 default to another one, without a "# fail" line, even into a pipe).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { ROOT } from './helpers';

it('the lab classifies runs as docs/lab/README.md defines (scripts/lab/record.test.mjs)', () => {
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', path.join(ROOT, 'scripts/lab/record.test.mjs')], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stdout + r.stderr).toMatch(/# fail 0/);
  expect(r.status).toBe(0);
});

it("the lab's host view takes its dumps only from a silent observer (scripts/lab/host-view.test.mjs, fake QEMU monitor)", () => {
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', path.join(ROOT, 'scripts/lab/host-view.test.mjs')], { encoding: 'utf8', timeout: 120_000 });
  expect(r.stdout + r.stderr).toMatch(/# fail 0/);
  expect(r.status).toBe(0);
}, 130_000);
