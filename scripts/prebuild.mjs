#!/usr/bin/env node
// Builds io-flusher's Node-API prebuilds for Linux on this machine (an x86-64 Debian host), checks every binary, and
// installs them under prebuilds/ where node-gyp-build looks for them (lib/native-binding.ts):
//
//   prebuilds/linux-x64/io-flusher.glibc.node     host g++                      (prebuildify + node-gyp)
//   prebuilds/linux-x64/io-flusher.musl.node      zig c++ -target x86_64-linux-musl   (prebuildify + node-gyp)
//   prebuilds/linux-arm64/io-flusher.glibc.node   Debian's aarch64-linux-gnu-g++ (prebuildify + node-gyp)
//   prebuilds/linux-arm64/io-flusher.musl.node    zig c++ -target aarch64-linux-musl  (prebuildify + node-gyp)
//
// One binary per platform/arch/libc serves every Node version: the addon uses Node-API only (NAPI_VERSION=8 in
// binding.gyp), so it does not link against a particular Node. node-gyp-build picks the file by the tags in its name
// (node_modules/node-gyp-build/node-gyp-build.js, parseTags: "glibc"/"musl"; no "abi" tag, so any Node ABI matches);
// prebuildify --napi --tag-libc writes those names.
//
// How each build is made, and why:
// - Every build runs prebuildify (so node-gyp and binding.gyp decide sources, defines and flags, as for `npm run
//   build:native`) in a staging copy of the build inputs under $TMPDIR/io-flusher-prebuild/<target>: node-gyp
//   `rebuild` deletes build/, and the repo's build/Release is the developers' own build. binding.gyp is read here
//   only to know what to copy (scripts/prebuild/binding-gyp.mjs). The staging path is fixed, so builds are
//   repeatable byte for byte (--repro proves it).
// - Node's headers come from this machine's Node (node-gyp --nodedir via npm_config_nodedir): node-gyp would
//   otherwise download them from nodejs.org, which is out of reach here. For Node-API the headers are the same for
//   every architecture.
// - glibc builds use GNU toolchains, dynamically linked to libstdc++ as Node itself is; checked not to need
//   anything newer than Node 20's own floor (GLIBC_2.28, GLIBCXX_3.4.21: scripts/prebuild/elf.mjs).
// - musl builds: Debian has no C++ toolchain for musl (musl-tools is C only), so Zig 0.11 (from npm, pinned:
//   scripts/prebuild/tools.mjs) compiles: it carries musl, libc++ and libc++abi and builds them for the target. libc++
//   is linked in statically (zig always does), so the addon needs nothing but musl's libc.so; a version script
//   exports only the Node-API entry points, so the embedded C++ runtime and unwinder never interpose on the process's.
// - Every binary is stripped (prebuildify --strip, with the target's strip).
//
// Then each binary is checked (ELF machine, stripped, libc symbol versions and NEEDED libraries) and run on its own
// architecture and libc: glibc builds are loaded in Node; musl builds, for which no Node can be had here, are bound
// by musl's loader and their native core is run on musl (scripts/prebuild/load-check.mjs says exactly what each
// shows). Only when everything passes are the files installed into prebuilds/. Missing tools are installed (apt-get as root; pinned
// npm packages into ~/.cache/io-flusher-tools) unless --no-install.
//
// Usage: node scripts/prebuild.mjs [--targets linux-x64-glibc,linux-x64-musl,...] [--no-load] [--no-install]
//                                   [--repro] [--keep-staging]
// Exit status 0 when every selected prebuild was built, passed its checks and was installed; 1 otherwise.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { buildInputs } from './prebuild/binding-gyp.mjs';
import { checkPrebuild } from './prebuild/elf.mjs';
import { buildCoreCheck, checkCoreRun, checkLoad, checkMuslResolution, loadWithNode, resolveWithMuslLoader, runCoreCheck } from './prebuild/load-check.mjs';
import { cleanNpmEnv, ensureAptPackages, ensureDebSysroot, ensureNpmTool, NPM_TOOLS, run, toolsDir, which } from './prebuild/tools.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const STAGING_ROOT = path.join(os.tmpdir(), 'io-flusher-prebuild');

const TARGETS = [
  { id: 'linux-x64-glibc', arch: 'x64', libc: 'glibc', cc: 'gcc', cxx: 'g++', strip: 'strip' },
  { id: 'linux-x64-musl', arch: 'x64', libc: 'musl', zigTarget: 'x86_64-linux-musl', strip: 'strip' },
  { id: 'linux-arm64-glibc', arch: 'arm64', libc: 'glibc', cc: 'aarch64-linux-gnu-gcc', cxx: 'aarch64-linux-gnu-g++', strip: 'aarch64-linux-gnu-strip' },
  { id: 'linux-arm64-musl', arch: 'arm64', libc: 'musl', zigTarget: 'aarch64-linux-musl', strip: 'aarch64-linux-gnu-strip' },
];

// Only the Node-API entry points are exported: napi_register_module_v1, and node_api_module_get_api_version_v1 that
// newer Node versions also look up (both defined by node_api.h's NAPI_MODULE macros).

const STARTED = Date.now();
const log = (msg) => console.log(`prebuild [${((Date.now() - STARTED) / 1000).toFixed(1)}s]: ${msg}`);

function usage() {
  console.log(`usage: node scripts/prebuild.mjs [options]
  --targets LIST   comma-separated, default all: ${TARGETS.map((t) => t.id).join(',')}
  --no-load        do not load the binaries (ELF checks only)
  --no-install     never install missing tools (apt-get, npm); fail instead
  --repro          build every target twice and require byte-identical results
  --keep-staging   keep ${STAGING_ROOT} after success (it is always kept after a failure)
Tools cache: ${toolsDir()} (IO_FLUSHER_TOOLS_DIR to change). Node headers: IO_FLUSHER_NODEDIR to override.`);
}

/** The directory with include/node/node_api.h and common.gypi: Node's own install prefix, as node-gyp --nodedir wants. */
function findNodeDir() {
  const candidates = [process.env.IO_FLUSHER_NODEDIR, path.resolve(path.dirname(process.execPath), '..')].filter(Boolean);
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'include/node/node_api.h')) && fs.existsSync(path.join(dir, 'include/node/common.gypi'))) {
      return dir;
    }
  }
  throw new Error(`Node's headers not found (include/node/node_api.h and common.gypi under ${candidates.join(' or ')}); ` +
    'install a Node that ships them (nodesource or official builds do) or set IO_FLUSHER_NODEDIR');
}

/** The Node version of those headers, for node-gyp --target (it must match the headers given by --nodedir). */
function headersVersion(nodedir) {
  const h = fs.readFileSync(path.join(nodedir, 'include/node/node_version.h'), 'utf8');
  const v = (k) => h.match(new RegExp(`#define NODE_${k}_VERSION (\\d+)`))[1];
  return `${v('MAJOR')}.${v('MINOR')}.${v('PATCH')}`;
}

function sha256(file) {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** A fresh staging copy of the build inputs for one target; node_modules is linked, not copied. */
function stage(target, inputs) {
  const dir = path.join(STAGING_ROOT, target.id);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const f of inputs.files) fs.copyFileSync(path.join(REPO, f), path.join(dir, f));
  for (const d of inputs.dirs) fs.cpSync(path.join(REPO, d), path.join(dir, d), { recursive: true });
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/** The compiler environment for a target: GNU toolchain names, or generated zig wrappers. */
function toolchainEnv(target, dir, zig) {
  const tc = path.join(dir, '.toolchain');
  fs.mkdirSync(tc, { recursive: true });
  // The exports (Node-API's registration only) and -z nodelete come from binding.gyp's ldflags (native/exports.map).
  if (!target.zigTarget) return { CC: target.cc, CXX: target.cxx };
  if (zig.includes("'")) throw new Error(`zig path ${zig} contains a quote`);
  for (const [name, mode] of [['cc', 'cc'], ['c++', 'c++']]) {
    const file = path.join(tc, name);
    fs.writeFileSync(file, `#!/bin/sh\n# Generated by scripts/prebuild.mjs: zig ${mode} for ${target.zigTarget}.\n` +
      `exec '${zig}' ${mode} -target ${target.zigTarget} "$@"\n`, { mode: 0o755 });
  }
  return {
    CC: path.join(tc, 'cc'),
    CXX: path.join(tc, 'c++'),
    // -O2 at link time too: zig builds libc++ for the link in the link command's mode (Debug without -O).
    LDFLAGS: '-O2',
    ZIG_GLOBAL_CACHE_DIR: path.join(toolsDir(), 'zig-cache'),
    ZIG_LOCAL_CACHE_DIR: path.join(toolsDir(), 'zig-cache'),
  };
}

/** Builds one target with prebuildify in its staging dir; returns { file, seconds } or throws with the log's tail. */
function build(target, ctx) {
  const started = Date.now();
  const dir = stage(target, ctx.inputs);
  const env = cleanNpmEnv();
  // Nothing from the caller's environment may change the build: compiler, flags and prebuildify settings are ours.
  for (const k of Object.keys(env)) {
    if (/^(PREBUILD_\w*|ZIG_\w*|CFLAGS|CXXFLAGS|CPPFLAGS|LDFLAGS|CC|CXX|LINK|AR|CC_host|CXX_host|LINK_host)$/.test(k)) delete env[k];
  }
  Object.assign(env, toolchainEnv(target, dir, ctx.zig?.bin), {
    npm_config_nodedir: ctx.nodedir,  // node-gyp takes npm_config_* as options: local headers, no download
    PREBUILD_LIBC: target.libc,       // the libc tag for --tag-libc (prebuildify would guess from the host)
    JOBS: String(os.availableParallelism?.() ?? os.cpus().length),
    LC_ALL: 'C',
    TZ: 'UTC',
    SOURCE_DATE_EPOCH: ctx.sourceDateEpoch,
  });
  const logFile = path.join(dir, 'build.log');
  const fd = fs.openSync(logFile, 'w');
  const args = [ctx.prebuildifyBin, '--napi', '--strip', '--tag-libc', `--target=${ctx.headersVersion}`,
    `--arch=${target.arch}`, `--strip-bin=${target.strip}`, '.'];
  fs.writeSync(fd, `$ ${process.execPath} ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, args, { cwd: dir, env, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const file = path.join(dir, 'prebuilds', `linux-${target.arch}`, `${ctx.pkgName.replace(/\//g, '+')}.${target.libc}.node`);
  if (r.status !== 0 || !fs.existsSync(file)) {
    const tail = fs.readFileSync(logFile, 'utf8').trim().split('\n').slice(-25).join('\n');
    throw new Error(`build of ${target.id} failed (exit ${r.status ?? r.signal}); log ${logFile}:\n${tail}`);
  }
  return { file, seconds: (Date.now() - started) / 1000 };
}

/** musl's loader answers with its version when run without arguments (e.g. "Version 1.2.3"). */
function muslLabel(loader, qemu) {
  // qemu -L applies to the guest's own file lookups, not to the program qemu is given: name the file in the sysroot.
  const r = qemu
    ? spawnSync(qemu.bin, ['-L', qemu.sysroot, path.join(qemu.sysroot, loader)], { encoding: 'utf8' })
    : spawnSync(loader, [], { encoding: 'utf8' });
  const v = `${r.stdout}${r.stderr}`.match(/Version (\S+)/)?.[1] ?? '?';
  return `musl ${v} ${path.basename(loader)}${qemu ? ' from Debian musl:arm64' : ''}`;
}

/**
 * Loads one prebuild in Node (glibc), or has musl's loader bind it and runs the native core check (musl; see
 * scripts/prebuild/load-check.mjs for what each shows). Returns { problems, summary, exports (Node's view) }.
 */
function loadCheck(target, built, ctx) {
  const qemu = target.arch === 'arm64' ? { bin: ctx.qemuAarch64 } : undefined;
  const via = qemu ? `${path.basename(qemu.bin)}: ` : '';
  if (target.libc === 'glibc') {
    if (qemu) qemu.sysroot = '/usr/aarch64-linux-gnu';  // the cross toolchain's arm64 glibc and libstdc++
    const r = loadWithNode(built.file, { node: qemu ? ctx.nodeArm64.bin : process.execPath, qemu });
    return {
      problems: checkLoad(r, { reference: ctx.nodeExports, libc: target.libc }),
      exports: r.exports,
      summary: r.loaded ? `${r.runtime}: exports ${r.exports?.length}, getIoFlusher ${r.getIoFlusher}, sigrtmin ${r.sigrtmin}` : 'did not load',
    };
  }
  if (qemu) qemu.sysroot = ctx.muslArm64Sysroot;
  const loader = target.arch === 'arm64' ? '/lib/ld-musl-aarch64.so.1' : '/lib/ld-musl-x86_64.so.1';
  const resolved = resolveWithMuslLoader(built.file, { loader, qemu });
  const zigCache = path.join(toolsDir(), 'zig-cache');
  const core = runCoreCheck(buildCoreCheck({
    zig: ctx.zig.bin,
    zigTarget: target.zigTarget,
    nativeDir: path.join(REPO, 'native'),
    sources: [...ctx.coreSources, path.join(REPO, 'scripts/prebuild/native-core-check.c')],
    outDir: path.join(STAGING_ROOT, target.id, 'core-check'),
    env: { ...process.env, ZIG_GLOBAL_CACHE_DIR: zigCache, ZIG_LOCAL_CACHE_DIR: zigCache },
    run,
  }), { qemu });
  const skipped = core.skipped.map((line) => line.split(':')[0]);
  return {
    problems: [...checkMuslResolution(resolved, { napiReference: ctx.napiReference }), ...checkCoreRun(core, { libc: target.libc })],
    summary: `${via}${muslLabel(loader, qemu)}: all bound but ${resolved.unresolved.length} napi_*; ` +
      `native core ${core.passed} ok${skipped.length ? `, ${skipped.length} skipped (${skipped.join(', ')})` : ''}, sigrtmin ${core.sigrtmin}`,
  };
}

function table(rows) {
  const headers = ['target', 'file', 'size', 'arch', 'libc check', 'load check', 'sha256', 'result'];
  const cells = rows.map((r) => headers.map((h) => String(r[h] ?? '')));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c) => c.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd();
  console.log(line(headers));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const c of cells) console.log(line(c));
}

/** Copies the checked binaries into prebuilds/; with every target built, removes stale .node files in their dirs. */
function install(results, allTargets) {
  const dirs = new Set();
  for (const r of results) {
    const destDir = path.join(REPO, 'prebuilds', `linux-${r.target.arch}`);
    fs.mkdirSync(destDir, { recursive: true });
    const dest = path.join(destDir, path.basename(r.built.file));
    const tmp = `${dest}.tmp-${process.pid}`;
    fs.copyFileSync(r.built.file, tmp);
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, dest);
    r.installed = path.relative(REPO, dest);
    dirs.add(destDir);
  }
  if (!allTargets) return;
  const keep = new Set(results.map((r) => path.join(REPO, r.installed)));
  for (const d of dirs) {
    for (const f of fs.readdirSync(d)) {
      const p = path.join(d, f);
      if (f.endsWith('.node') && !keep.has(p)) {
        log(`removing stale ${path.relative(REPO, p)}`);
        fs.rmSync(p);
      }
    }
  }
}

function main() {
  const started = Date.now();
  const { values } = parseArgs({
    options: {
      targets: { type: 'string' },
      'no-load': { type: 'boolean', default: false },
      'no-install': { type: 'boolean', default: false },
      repro: { type: 'boolean', default: false },
      'keep-staging': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return usage(), 0;
  const selected = values.targets
    ? values.targets.split(',').map((id) => TARGETS.find((t) => t.id === id.trim()) ?? (() => { throw new Error(`unknown target ${id}`); })())
    : TARGETS;
  const load = !values['no-load'];
  const opts = { install: !values['no-install'], log };

  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`this script cross-builds from an x86-64 Linux host (here: ${process.platform}-${process.arch}); ` +
      'the zig package it uses is for x86-64 Linux only');
  }

  // Inputs and tools.
  const req = createRequire(path.join(REPO, 'package.json'));
  const pkgName = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).name;
  const nodedir = findNodeDir();
  const ctx = {
    inputs: buildInputs(REPO),
    pkgName,
    nodedir,
    headersVersion: headersVersion(nodedir),
    prebuildifyBin: req.resolve('prebuildify/bin.js'),
    sourceDateEpoch: (() => {
      const r = spawnSync('git', ['log', '-1', '--format=%ct'], { cwd: REPO, encoding: 'utf8' });
      return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : '0';
    })(),
  };
  // The native core without its Node-API glue, for the musl builds' core check.
  ctx.coreSources = ctx.inputs.targets.flatMap((t) => t.sources)
    .filter((source) => source.startsWith('native/') && path.basename(source) !== 'binding.cc')
    .map((source) => path.join(REPO, source));
  req.resolve('node-addon-api');  // binding.gyp's include_dirs asks node for it: fail here, clearly, if missing
  log(`sources from binding.gyp: ${ctx.inputs.targets.flatMap((t) => t.sources).join(' ')}`);
  log(`Node headers: ${nodedir}/include/node (v${ctx.headersVersion}); tools cache: ${toolsDir()}`);

  const has = (f) => selected.some(f);
  const apt = [
    { pkg: 'make', present: () => !!which('make') },
    { pkg: 'python3', present: () => !!which('python3') },
    { pkg: 'binutils', present: () => !!which('readelf') && !!which('strip') },
  ];
  if (has((t) => t.id === 'linux-x64-glibc')) apt.push({ pkg: 'g++', present: () => !!which('g++') && !!which('gcc') });
  if (has((t) => t.id === 'linux-arm64-glibc')) {
    apt.push({ pkg: 'g++-aarch64-linux-gnu', present: () => !!which('aarch64-linux-gnu-g++') });
  }
  if (has((t) => t.arch === 'arm64')) apt.push({ pkg: 'binutils-aarch64-linux-gnu', present: () => !!which('aarch64-linux-gnu-strip') });
  if (load && has((t) => t.arch === 'arm64')) apt.push({ pkg: 'qemu-user', present: () => !!which('qemu-aarch64') });
  if (load && has((t) => t.id === 'linux-arm64-glibc')) {
    apt.push({ pkg: 'libstdc++6-arm64-cross', present: () => fs.existsSync('/usr/aarch64-linux-gnu/lib/libstdc++.so.6') });
  }
  if (load && has((t) => t.id === 'linux-x64-musl')) apt.push({ pkg: 'musl', present: () => fs.existsSync('/lib/ld-musl-x86_64.so.1') });
  ensureAptPackages(apt, opts);
  if (has((t) => t.zigTarget)) ctx.zig = ensureNpmTool(NPM_TOOLS.zig, opts);
  if (load && has((t) => t.id === 'linux-arm64-glibc')) ctx.nodeArm64 = ensureNpmTool(NPM_TOOLS.nodeArm64, opts);
  if (load && has((t) => t.id === 'linux-arm64-musl')) ctx.muslArm64Sysroot = ensureDebSysroot('arm64', ['musl'], opts);
  if (load) ctx.qemuAarch64 = which('qemu-aarch64');
  if (ctx.zig) log(`zig: ${run(ctx.zig.bin, ['version']).trim()} (${ctx.zig.bin})`);

  // Build, check, load. The x64 glibc build goes first: Node's view of its exports is the reference for the others.
  const results = [];
  for (const target of selected) {
    const row = { target, problems: [] };
    results.push(row);
    try {
      log(`building ${target.id}${target.zigTarget ? ` (zig ${target.zigTarget})` : ` (${target.cxx})`}`);
      row.built = build(target, ctx);
      log(`built ${target.id} in ${row.built.seconds.toFixed(1)}s`);
      row.sha256 = sha256(row.built.file);
      row.size = fs.statSync(row.built.file).size;
      if (values.repro) {
        log(`rebuilding ${target.id} to compare (--repro)`);
        const again = build(target, ctx);
        const second = sha256(again.file);
        row.reproducible = second === row.sha256;
        if (!row.reproducible) row.problems.push(`not reproducible: sha256 ${row.sha256} then ${second}`);
      }
      row.check = checkPrebuild(row.built.file, target);
      row.problems.push(...row.check.problems);
      if (load) {
        log(`loading ${target.id}`);
        row.load = loadCheck(target, row.built, ctx);
        row.problems.push(...row.load.problems);
        // What Node saw of the x64 glibc build is the reference: exports for the other Node loads, and the Node-API
        // functions a real Node resolved for the musl builds.
        if (target.id === 'linux-x64-glibc' && row.problems.length === 0) {
          ctx.nodeExports = row.load.exports;
          ctx.napiReference = row.check.imports.filter((name) => /^(napi|node_api)_/.test(name));
        }
      }
    } catch (err) {
      row.problems.push(err.message);
    }
  }

  const failed = results.filter((r) => r.problems.length > 0);
  if (failed.length === 0) install(results, selected.length === TARGETS.length);

  console.log('');
  table(results.map((r) => ({
    target: r.target.id,
    file: r.installed ?? (r.built ? path.relative(STAGING_ROOT, r.built.file) : '-'),
    size: r.size ? `${(r.size / 1024).toFixed(1)} KiB` : '-',
    arch: r.check?.machine ?? '-',
    'libc check': r.check ? `${r.check.problems.length ? 'FAIL' : 'ok'}: ${r.check.libcSummary}` : '-',
    'load check': !load ? 'skipped (--no-load)' : r.load?.summary ?? '-',
    sha256: r.sha256 ? r.sha256.slice(0, 16) + (values.repro ? (r.reproducible ? ' (repro ok)' : ' (NOT repro)') : '') : '-',
    result: r.problems.length ? 'FAIL' : 'ok',
  })));
  for (const r of failed) {
    console.log(`\n${r.target.id} FAILED:`);
    for (const p of r.problems) console.log(`  - ${p.split('\n').join('\n    ')}`);
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (failed.length) {
    console.log(`\nnothing installed into prebuilds/; staging kept in ${STAGING_ROOT}`);
  } else {
    console.log(`\ninstalled into ${path.join(REPO, 'prebuilds')} (${seconds}s)`);
    if (!values['keep-staging']) fs.rmSync(STAGING_ROOT, { recursive: true, force: true });
  }
  console.log(`prebuild: ${results.length - failed.length} passed, ${failed.length} failed`);
  return failed.length ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (err) {
  console.error(`prebuild: ${err.message}`);
  console.log('prebuild: 0 passed, 1 failed');
  process.exitCode = 1;
}
