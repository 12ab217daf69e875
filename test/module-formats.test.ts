/** The package from ESM and CommonJS: the same names, one shared module instance. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers';

describe('module formats', () => {
  it('ESM named and default imports give the CommonJS exports, the very same objects', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import * as esm from ${JSON.stringify(`${ROOT}/dist/index.mjs`)};
         import { createRequire } from 'node:module';
         const cjs = createRequire(import.meta.url)(${JSON.stringify(`${ROOT}/dist/index.js`)});
         const names = Object.keys(cjs).filter((n) => n !== '__esModule');
         process.stdout.write(JSON.stringify({
           missing: names.filter((n) => !(n in esm)),
           same: names.every((n) => esm[n] === cjs[n]),
           sharedDefault: esm.defaultIoFlusher() === cjs.defaultIoFlusher(),
           count: names.length }));`,
      ],
      { encoding: 'utf8' },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ missing: [], same: true, sharedDefault: true });
    expect(out.count).toBeGreaterThan(20);
  });
});
