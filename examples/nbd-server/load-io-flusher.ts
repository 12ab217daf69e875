/**
 * Loads the io-flusher package. From a checkout of the repository (the source here, or the compiled copy in
 * examples/nbd-server/dist/) that is the repository's own build, found by walking up to its package.json; a copy of
 * this example placed in another project uses its installed `io-flusher` dependency instead.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as IoFlusherModule from '../../dist/index.js';

export type IoFlusherApi = typeof IoFlusherModule;

export function loadIoFlusher(): IoFlusherApi {
  for (let dir = __dirname; ; ) {
    let name: string | undefined;
    try {
      name = (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name;
    } catch {
      // no package.json here, or not readable: keep walking up
    }
    if (name === 'io-flusher') return require(dir) as IoFlusherApi; // its "main": dist/index.js (npm run build)
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return require('io-flusher') as IoFlusherApi;
}
