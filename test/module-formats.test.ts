/** The package from ESM and CommonJS: the same names, one shared module instance. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
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

  it('the published typings (dist/*.d.ts) type-check on their own: no internal type stripped from them is still named', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'io-flusher-typings-'));
    try {
      const files = fs.readdirSync(path.join(ROOT, 'dist')).filter((f) => f.endsWith('.d.ts')).map((f) => path.join(ROOT, 'dist', f));
      const config = path.join(dir, 'tsconfig.json');
      fs.writeFileSync(config, JSON.stringify({ compilerOptions: { strict: true, noEmit: true, skipLibCheck: false, types: ['node'], typeRoots: [path.join(ROOT, 'node_modules/@types')] }, files }));
      const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', config], { encoding: 'utf8' });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(files.length).toBeGreaterThan(10);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
