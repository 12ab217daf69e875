/**
 * The development scripts cannot trip over a file that moved: every project path a script, runner or benchmark names
 * literally (`path.join(root, 'vm/kernel-run')`, `"$root/examples/..."`) exists in the tree. (Tests are not scanned: a
 * test that names a missing file fails by itself, and some name paths inside a fake root.) A moved runner once made
 * the lab's pair in `npm run test:nbd` fail with "no result (kernel-run exit null)" while every host test passed.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers';

// The source directories a path must start with to be checked; dist/, build/ and node_modules/ are outputs.
const SOURCE_DIRS = ['scripts', 'vm', 'docs', 'test', 'bench', 'examples', 'native', 'lib', '.ci'];
const LITERAL = [/path\.join\((?:root|ROOT|repoRoot),\s*'([^']+)'/g, /"\$root\/([^"$ ]+)"/g];

/** Project paths named literally in a file's text, from the patterns above. */
function namedPaths(text: string): string[] {
  const found = new Set<string>();
  for (const re of LITERAL) for (const m of text.matchAll(re)) found.add(m[1]);
  return [...found].filter((p) => SOURCE_DIRS.includes(p.split('/')[0]) && !p.includes('examples/nbd-server/dist'));
}

describe('paths the development scripts name', () => {
  const tracked = execFileSync('git', ['ls-files', 'scripts', 'vm', 'bench', '.ci', 'examples'], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => /\.(mjs|js|ts|sh)$|^\.ci\/run$|^vm\/[a-z-]+$/.test(f));

  it('finds the pattern it checks (a moved path would be caught)', () => {
    const moved = 'scripts/kernel-run'; // where the runner was before it moved to vm/
    expect(namedPaths(`spawnSync(path.join(root, '${moved}'), [])`)).toEqual([moved]);
    expect(namedPaths('server="$root/examples/nbd-server/kernel-scenario.sh"')).toEqual(['examples/nbd-server/kernel-scenario.sh']);
    expect(fs.existsSync(path.join(ROOT, moved))).toBe(false);
  });

  it.each(tracked)('%s names only paths that exist', (file) => {
    const missing = namedPaths(fs.readFileSync(path.join(ROOT, file), 'utf8')).filter((p) => !fs.existsSync(path.join(ROOT, p)));
    expect(missing).toEqual([]);
  });
});
