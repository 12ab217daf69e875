#!/usr/bin/env node
// Packs io-flusher as it would be published and installs the tarball the way a user does, in a fresh directory, on a
// PATH with no compiler, make or python: the package must work from its prebuilds alone ("install anywhere without a
// compiler"). Then checks what a consumer sees:
//   - the tarball: exactly the files listed by shippedFiles() below (npm's own three, the compiled library, the four
//     prebuilds, the VM runner in vm/), so a stale dist/ file or a new file shipped by accident fails; and the entry
//     points named in package.json (main, types, bin, exports) are among them;
//   - `npm install --ignore-scripts <tarball>`, and a plain `npm install <tarball>` as users run it, both without a
//     compiler on PATH;
//   - CommonJS require() and ESM import: the addon loads from prebuilds/ (not build/), backend 'native';
//   - node-gyp-build picks the right file for every libc/arch we ship (LIBC=musl, npm_config_arch=arm64);
//   - a TypeScript consumer compiles (module node16 ESM and CommonJS, moduleResolution bundler and node10);
//   - `npx io-flusher check --json` (exit 3 on a machine without CAP_SYS_RESOURCE, like this one);
//   - `npx io-flusher vm -- node vm-check.js` from a user's own project with its own test file: in the VM,
//     setIoFlusher(true) succeeds and that file is the one that ran (it writes a nonce back into the project). Needs
//     QEMU (.ci/run installs it); IO_FLUSHER_PACK_VM=0 leaves it out, and says so in the check's name.
// Prints the tarball's size and file list, and a last line `pack-test: N passed, M failed`; exits 1 on any failure.
//
// Usage: node scripts/pack-test.mjs [--rebuild] [--keep]
//   --rebuild  run `npm run build:ts` and scripts/prebuild.mjs first even if dist/ and prebuilds/ exist
//   --keep     keep the temporary directory (printed) for inspection
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { cleanNpmEnv, which } from './prebuild/tools.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PREBUILDS = [
  'prebuilds/linux-x64/io-flusher.glibc.node',
  'prebuilds/linux-x64/io-flusher.musl.node',
  'prebuilds/linux-arm64/io-flusher.glibc.node',
  'prebuilds/linux-arm64/io-flusher.musl.node',
];
// The VM runner `io-flusher vm` runs (lib/vm.ts), with the files it uses.
const VM_RUNNER = ['vm/extract-vmlinux', 'vm/guest-init', 'vm/kernel-run', 'vm/node-versions.mjs', 'vm/seccomp-old-kernel.c'];

/**
 * Every file the tarball must hold, and nothing else: npm's own (package.json, README.md, LICENSE), one .js and one
 * .d.ts per lib/*.ts plus the ESM entry, the prebuilds and the VM runner. Never shipped, and so failing here: build/
 * (node-gyp-build tries build/Release before prebuilds/), binding.gyp (without an install script npm would run
 * `node-gyp rebuild` on install, which fails without a compiler:
 * https://docs.npmjs.com/cli/v11/using-npm/scripts#npm-install), tests, development scripts, stale dist/ files.
 */
function shippedFiles() {
  const modules = fs.readdirSync(path.join(REPO, 'lib')).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -'.ts'.length));
  return [
    'LICENSE',
    'README.md',
    'package.json',
    ...modules.flatMap((m) => [`dist/${m}.js`, `dist/${m}.d.ts`]),
    'dist/index.mjs',
    ...PREBUILDS,
    ...VM_RUNNER,
  ].sort();
}
const COMPILER_TOOLS = ['cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'make', 'python3', 'python'];

const results = [];
function check(name, fn) {
  try {
    const detail = fn();
    results.push({ name, ok: true });
    console.log(`ok    ${name}${detail ? ` — ${detail}` : ''}`);
  } catch (err) {
    results.push({ name, ok: false });
    console.log(`FAIL  ${name}: ${String(err.message).split('\n').join('\n      ')}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
const sha256 = (file) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;

function sh(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 600_000, ...options });
  return { status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}
/** A failed command, shortly: its exit and the first error lines of its output (else the last lines). */
function describe(r) {
  const lines = (r.stderr || r.stdout).trim().split('\n');
  const errors = lines.filter((l) => /error|ERR!/i.test(l) && !/^\s*(gyp ERR! stack\s+)?at /.test(l)).slice(0, 8);
  return `exit ${r.status ?? r.signal}${r.error ? ` (${r.error.message})` : ''}\n${(errors.length ? errors : lines.slice(-15)).join('\n')}`;
}
/** The last JSON value printed on stdout (npm and lifecycle scripts may print before it), starting with `open`. */
function lastJson(stdout, open) {
  const starts = [];
  for (let i = stdout.indexOf(open); i !== -1; i = stdout.indexOf(open, i + 1)) {
    if (i === 0 || stdout[i - 1] === '\n') starts.push(i);
  }
  for (const i of starts.reverse()) {
    try {
      return JSON.parse(stdout.slice(i));
    } catch {}
  }
  throw new Error(`no JSON in npm's output:\n${stdout.slice(-2000)}`);
}

/**
 * dist/ and prebuilds/ must exist before packing. A "prepack" script (npm runs it in `npm pack`) makes them itself;
 * without one, build them here when missing (or always with --rebuild).
 */
function ensureBuilt(rebuild, pkg) {
  if (pkg.scripts?.prepack && !rebuild) {
    console.log(`pack-test: "prepack" (${pkg.scripts.prepack}) will build dist/ and prebuilds/ during npm pack`);
    return;
  }
  const env = cleanNpmEnv();
  if (rebuild || !fs.existsSync(path.join(REPO, 'dist/index.js'))) {
    console.log('pack-test: npm run build:ts');
    const r = sh('npm', ['run', 'build:ts'], { cwd: REPO, env, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error(`npm run build:ts failed: exit ${r.status}`);
  }
  if (rebuild || PREBUILDS.some((p) => !fs.existsSync(path.join(REPO, p)))) {
    console.log('pack-test: node scripts/prebuild.mjs');
    const r = sh(process.execPath, [path.join(REPO, 'scripts/prebuild.mjs')], { cwd: REPO, env, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error(`scripts/prebuild.mjs failed: exit ${r.status}`);
  }
}

/**
 * A PATH holding only node, npm, npx and sh: no compiler, make or python can be found by anything npm runs. sh is
 * there because npm runs every script and `npx` command through it (script-shell), as on any real machine.
 */
function barePath(tmp) {
  const bin = path.join(tmp, 'bare-bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  for (const tool of ['npm', 'npx', 'sh']) {
    const found = which(tool);
    if (!found) throw new Error(`${tool} not found on PATH`);
    fs.symlinkSync(fs.realpathSync(found), path.join(bin, tool));
  }
  return bin;
}

function main() {
  const started = Date.now();
  const { values } = parseArgs({ options: { rebuild: { type: 'boolean', default: false }, keep: { type: 'boolean', default: false } } });
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
  ensureBuilt(values.rebuild, pkg);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'io-flusher-pack-test-'));
  const bin = barePath(tmp);
  // The consumer's environment: no compiler on PATH, none of the developer's IO_FLUSHER_* settings, no npm run state.
  const env = cleanNpmEnv({ PATH: bin });
  for (const k of Object.keys(env)) if (k.startsWith('IO_FLUSHER_')) delete env[k];

  // 1. Pack, running prepack as `npm publish` would.
  console.log(`pack-test: npm pack in ${REPO}`);
  const packed = sh('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: REPO, env: cleanNpmEnv() });
  if (packed.status !== 0) throw new Error(`npm pack failed: ${describe(packed)}`);
  const info = lastJson(packed.stdout, '[')[0];
  const tarball = path.join(tmp, info.filename);
  const files = info.files.map((f) => f.path);
  const fileSet = new Set(files);

  check('tarball has the entry points named in package.json', () => {
    const entries = new Set();
    const add = (p) => typeof p === 'string' && entries.add(path.normalize(p));
    add(pkg.main);
    add(pkg.types);
    for (const b of typeof pkg.bin === 'string' ? [pkg.bin] : Object.values(pkg.bin ?? {})) add(b);
    const walk = (e) => (typeof e === 'string' ? add(e) : e && typeof e === 'object' && Object.values(e).forEach(walk));
    walk(pkg.exports);
    const missing = [...entries].filter((e) => !fileSet.has(e));
    assert(missing.length === 0, `missing: ${missing.join(', ')}`);
    return [...entries].join(', ');
  });
  check('tarball holds exactly the files that ship (dist/, prebuilds/, vm/, package.json, README.md, LICENSE)', () => {
    const expected = shippedFiles();
    const missing = expected.filter((f) => !fileSet.has(f));
    const unexpected = files.filter((f) => !expected.includes(f));
    assert(missing.length === 0 && unexpected.length === 0,
      `${missing.length ? `missing: ${missing.join(', ')}` : ''}${missing.length && unexpected.length ? '; ' : ''}` +
      `${unexpected.length ? `not meant to ship: ${unexpected.join(', ')} (package.json "files", or shippedFiles() in scripts/pack-test.mjs)` : ''}`);
    return `${expected.length} files`;
  });

  // 2. Install the tarball in fresh projects, with no compiler on PATH.
  check('PATH for the consumer has no compiler, make or python', () => {
    const found = COMPILER_TOOLS.filter((t) => fs.existsSync(path.join(bin, t)));
    assert(found.length === 0, found.join(', '));
    return `PATH=${bin} (node, npm, npx, sh only)`;
  });
  const consumer = path.join(tmp, 'consumer');
  fs.mkdirSync(consumer);
  let installed = false;
  check('npm install --ignore-scripts <tarball> without a compiler', () => {
    let r = sh('npm', ['init', '-y'], { cwd: consumer, env });
    assert(r.status === 0, `npm init -y: ${describe(r)}`);
    r = sh('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: consumer, env });
    assert(r.status === 0, describe(r));
    installed = true;
    return r.stdout.trim().split('\n').filter(Boolean).pop();
  });
  const plain = path.join(tmp, 'consumer-plain');
  fs.mkdirSync(plain);
  check('npm install <tarball> (install scripts allowed) without a compiler', () => {
    let r = sh('npm', ['init', '-y'], { cwd: plain, env });
    assert(r.status === 0, `npm init -y: ${describe(r)}`);
    r = sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', tarball], { cwd: plain, env });
    assert(r.status === 0, describe(r));
    const p = sh(process.execPath, ['-e', "process.stdout.write(JSON.stringify(require('io-flusher').probe().native))"], { cwd: plain, env });
    const native = JSON.parse(p.stdout || '{}');
    assert(native.loaded === true, `installed, but the addon did not load: ${p.stdout}${p.stderr}`);
    return `addon from ${path.relative(plain, native.path)}`;
  });
  if (!installed) return finish(started, tmp, values.keep, info);

  const pkgDir = path.join(consumer, 'node_modules', pkg.name);
  const prebuildDir = path.join(pkgDir, 'prebuilds', `${process.platform}-${process.arch}`) + path.sep;
  const hostLibc = process.report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl';

  check('installed prebuilds are byte-identical to prebuilds/ in the repo', () => {
    const differ = PREBUILDS.filter((p) => sha256(path.join(pkgDir, p)) !== sha256(path.join(REPO, p)));
    assert(differ.length === 0, differ.join(', '));
  });
  check('no build/ directory in the installed package', () => {
    assert(!fs.existsSync(path.join(pkgDir, 'build')), `${pkgDir}/build exists`);
  });

  // 3. CommonJS and ESM consumers.
  const assertNative = (o, label) => {
    assert(o.native?.loaded === true, `${label}: native.loaded is ${o.native?.loaded} (${o.native?.error})`);
    assert(o.native.path.startsWith(prebuildDir), `${label}: addon from ${o.native.path}, not from ${prebuildDir}`);
    assert(path.basename(o.native.path) === `${pkg.name}.${hostLibc}.node`, `${label}: ${path.basename(o.native.path)} on a ${hostLibc} host`);
    assert(o.backend === 'native', `${label}: backend ${o.backend} (${o.backendReason})`);
  };
  fs.writeFileSync(path.join(consumer, 'cjs-test.cjs'), `
const io = require('io-flusher');
const p = io.probe();
let get;
try { get = io.getIoFlusher(); } catch (e) { get = e.code; }
console.log(JSON.stringify({ native: p.native, backend: p.backend, backendReason: p.backendReason, get, resolved: require.resolve('io-flusher') }));
`);
  check("CommonJS require('io-flusher'): addon from prebuilds/, backend native", () => {
    const r = sh(process.execPath, ['cjs-test.cjs'], { cwd: consumer, env });
    assert(r.status === 0, describe(r));
    const o = JSON.parse(r.stdout);
    assertNative(o, 'require');
    return `${path.relative(consumer, o.native.path)}, getIoFlusher() -> ${o.get}`;
  });
  fs.writeFileSync(path.join(consumer, 'esm-test.mjs'), `
import { probe, getIoFlusher } from 'io-flusher';
import * as ns from 'io-flusher';
import { createRequire } from 'node:module';
const cjs = createRequire(import.meta.url)('io-flusher');
const p = probe();
let get;
try { get = getIoFlusher(); } catch (e) { get = e.code; }
console.log(JSON.stringify({ native: p.native, backend: p.backend, backendReason: p.backendReason, get,
  resolved: import.meta.resolve('io-flusher'), sameAsRequire: ns.probe === cjs.probe && ns.default === cjs }));
`);
  check("ESM import { probe } from 'io-flusher': addon from prebuilds/, backend native", () => {
    const r = sh(process.execPath, ['esm-test.mjs'], { cwd: consumer, env });
    assert(r.status === 0, describe(r));
    const o = JSON.parse(r.stdout);
    assertNative(o, 'import');
    const entry = path.relative(pkgDir, fileURLToPath(o.resolved));
    const wanted = typeof pkg.exports === 'object' ? pkg.exports?.['.']?.import : undefined;
    if (wanted) assert(entry === path.normalize(wanted), `import resolved to ${entry}, exports map says ${wanted}`);
    assert(o.sameAsRequire, 'ESM and CommonJS entries are separate instances (dual package hazard)');
    return `resolved to ${entry}${wanted ? '' : ' (no exports map "import": served by the CommonJS entry)'}; same instance as require()`;
  });

  // 4. node-gyp-build's choice for each shipped libc/arch (it reads LIBC and npm_config_arch at load time).
  for (const [label, extra, expected] of [
    ['glibc x64 (this host)', {}, 'prebuilds/linux-x64/io-flusher.glibc.node'],
    ['musl x64 (LIBC=musl, as on Alpine)', { LIBC: 'musl' }, 'prebuilds/linux-x64/io-flusher.musl.node'],
    ['glibc arm64 (npm_config_arch=arm64)', { npm_config_arch: 'arm64' }, 'prebuilds/linux-arm64/io-flusher.glibc.node'],
    ['musl arm64', { LIBC: 'musl', npm_config_arch: 'arm64' }, 'prebuilds/linux-arm64/io-flusher.musl.node'],
  ]) {
    check(`node-gyp-build selects the ${label} prebuild`, () => {
      const script = `const ngb = require(require.resolve('node-gyp-build', { paths: [${JSON.stringify(pkgDir)}] }));` +
        `process.stdout.write(ngb.resolve(${JSON.stringify(pkgDir)}))`;
      const r = sh(process.execPath, ['-e', script], { cwd: consumer, env: { ...env, ...extra } });
      assert(r.status === 0, describe(r));
      assert(path.relative(pkgDir, r.stdout) === expected, `got ${path.relative(pkgDir, r.stdout)}`);
    });
  }

  // 5. TypeScript consumers, with the repo's own typescript and @types/node (a consumer would have its own).
  const tsc = createRequire(path.join(REPO, 'package.json')).resolve('typescript/bin/tsc');
  const tsDir = path.join(consumer, 'ts');
  fs.mkdirSync(tsDir);
  const esmSource = `import { probe, setIoFlusher, createIoFlusher, IoFlusherError, type ProbeResult, type ThreadFlags } from 'io-flusher';
const p: ProbeResult = probe();
const loaded: boolean = p.native.loaded;
const flags: ThreadFlags[] = createIoFlusher({ backend: 'emulated' }).listThreads();
// @ts-expect-error setIoFlusher takes a boolean: the types are real, not any
setIoFlusher(1);
try { setIoFlusher(true); } catch (e) { if (e instanceof IoFlusherError) console.log(e.code, e.reason, e.hint); }
console.log(loaded, flags.length);
`;
  fs.writeFileSync(path.join(tsDir, 'esm.mts'), esmSource);
  fs.writeFileSync(path.join(tsDir, 'bundler.ts'), esmSource);
  fs.writeFileSync(path.join(tsDir, 'cjs.cts'), `import io = require('io-flusher');
const p: io.ProbeResult = io.probe();
const b: boolean = p.native.loaded;
console.log(b);
`);
  const tsBase = { strict: true, noEmit: true, skipLibCheck: false, types: ['node'], typeRoots: [path.join(REPO, 'node_modules/@types')] };
  for (const [label, options, files] of [
    ['module node16: ESM (.mts) and CommonJS (.cts)', { module: 'node16', moduleResolution: 'node16' }, ['esm.mts', 'cjs.cts']],
    ['moduleResolution bundler', { module: 'esnext', moduleResolution: 'bundler' }, ['bundler.ts']],
    ['moduleResolution node10 (legacy "types" field)', { module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true }, ['cjs.cts']],
  ]) {
    check(`TypeScript consumer compiles: ${label}`, () => {
      const config = path.join(tsDir, `tsconfig.${options.moduleResolution}.json`);
      fs.writeFileSync(config, JSON.stringify({ compilerOptions: { ...tsBase, ...options }, files }, null, 2));
      const r = sh(process.execPath, [tsc, '-p', config], { cwd: tsDir, env });
      assert(r.status === 0, `tsc -p ${path.basename(config)}: ${describe(r)}`);
    });
  }

  // 6. The command, through npx as a user runs it.
  check('npx io-flusher check --json: JSON, addon from prebuilds/, exit 0, 3 or 4', () => {
    const r = sh('npx', ['--no', 'io-flusher', 'check', '--json'], { cwd: consumer, env });
    let o;
    try {
      o = JSON.parse(r.stdout);
    } catch {
      throw new Error(`not JSON: ${describe(r)}`);
    }
    assertNative(o, 'check');
    assert([0, 3, 4].includes(r.status), `exit ${r.status} (5: addon did not load; 1, 2: error)`);
    assert(o.exitCode === r.status, `JSON exitCode ${o.exitCode}, process exit ${r.status}`);
    return `exit ${r.status}: ${o.verdict}`;
  });

  // 7. The VM runner from the installed copy, for the user's project (a package.json, a test file of its own).
  const vmWanted = process.env.IO_FLUSHER_PACK_VM !== '0';
  check(`npx io-flusher vm -- node vm-check.js: the user's file runs in the VM and setIoFlusher(true) succeeds${vmWanted ? '' : ' [not run: IO_FLUSHER_PACK_VM=0]'}`, () => {
    assert(VM_RUNNER.every((f) => fileSet.has(f)), 'the VM runner is not in the tarball');
    if (!vmWanted) return 'not run';
    const nonce = createHash('sha256').update(String(Math.random())).digest('hex').slice(0, 16);
    fs.writeFileSync(path.join(consumer, 'vm-check.js'), `
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const io = require('io-flusher');
io.setIoFlusher(true);
const result = { nonce: process.env.IO_FLUSHER_PACK_NONCE, get: io.getIoFlusher(), file: __filename, release: os.release(),
  mode: process.env.IO_FLUSHER_KERNEL_MODE, addon: io.probe().native.path, node: process.version };
fs.writeFileSync(path.join(__dirname, 'vm-result.json'), JSON.stringify(result));
console.log(JSON.stringify(result));
`);
    // The host side needs QEMU and friends from the real PATH; the guest runs the node and npm found on it. A
    // machine-wide IO_FLUSHER_VM_LOCK (guests take turns) is kept: it is the machine's, not a developer setting.
    const vmEnv = { ...env, PATH: `${bin}:${process.env.PATH}`, IO_FLUSHER_PACK_NONCE: nonce };
    if (process.env.IO_FLUSHER_VM_LOCK) vmEnv.IO_FLUSHER_VM_LOCK = process.env.IO_FLUSHER_VM_LOCK;
    const r = sh('npx', ['--no', 'io-flusher', 'vm', '--kernel', 'bookworm', '--timeout', '600', '--', 'node', 'vm-check.js'], { cwd: consumer, env: vmEnv });
    assert(r.status === 0, `exit ${r.status}: ${describe(r)}`);
    const resultFile = path.join(consumer, 'vm-result.json');
    assert(fs.existsSync(resultFile), `no vm-result.json in the project after the run:
${r.stdout}
${r.stderr}`);
    const o = JSON.parse(fs.readFileSync(resultFile, 'utf8'));
    assert(o.nonce === nonce, `vm-result.json holds nonce ${o.nonce}, expected ${nonce}: another file ran`);
    assert(o.file === path.join(consumer, 'vm-check.js'), `ran ${o.file}`);
    assert(o.get === true, `getIoFlusher() in the VM: ${o.get}`);
    assert(o.release !== os.release(), `release ${o.release} is the host's: did it run in a VM?`);
    assert(o.addon.startsWith(prebuildDir), `addon from ${o.addon}`);
    const how = /\((tcg|kvm)\)/.exec(r.stderr)?.[1] ?? '?';
    return `kernel ${o.release} (${how}), ${o.node}, getIoFlusher() -> ${o.get}`;
  });

  return finish(started, tmp, values.keep, info);
}

function finish(started, tmp, keep, info) {
  console.log(`\ntarball: ${info.filename} ${kib(info.size)} packed, ${kib(info.unpackedSize)} unpacked, ${info.entryCount} files:`);
  for (const f of info.files) console.log(`  ${String(f.size).padStart(8)}  ${f.path}`);
  if (keep) console.log(`\nkept ${tmp}`);
  else fs.rmSync(tmp, { recursive: true, force: true });
  const failed = results.filter((r) => !r.ok).length;
  console.log(`\ntook ${((Date.now() - started) / 1000).toFixed(1)}s`);
  console.log(`pack-test: ${results.length - failed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (err) {
  console.error(`pack-test: ${err.message}`);
  console.log(`pack-test: ${results.filter((r) => r.ok).length} passed, ${results.filter((r) => !r.ok).length + 1} failed`);
  process.exitCode = 1;
}
