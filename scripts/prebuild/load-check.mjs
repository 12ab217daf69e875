// Shows that each prebuild loads and runs, as far as this machine can show it.
//
//   linux-x64-glibc    loaded by the host's Node (x86-64, glibc), natively
//   linux-arm64-glibc  loaded by the official Node 20 linux-arm64 build under qemu-aarch64, with the cross toolchain's
//                      arm64 glibc and libstdc++ (/usr/aarch64-linux-gnu) as its root for /lib lookups (qemu -L)
//   linux-x64-musl     no Node for musl can be had here (the npm registry has none; Alpine's mirrors are out of
//   linux-arm64-musl   reach), so two things short of a load in Node, run natively (x64) or under qemu-aarch64 with
//                      Debian's musl:arm64 (arm64):
//                      1. musl's own loader (ld-musl-<arch>.so.1 --list, Debian's `musl` package) maps the file and
//                         binds every symbol it imports: all must resolve except Node-API's (napi_*, node_api_*),
//                         which Node provides, and those must be ones the glibc build imports too (which a real Node
//                         resolved above). A glibc-only symbol, a missing library or a C++ runtime symbol left to
//                         the host fails here, as it would fail dlopen on Alpine.
//                      2. scripts/prebuild/native-core-check.c: the native core (native/*.cc without binding.cc's
//                         Node-API glue) built by the same zig toolchain for the same target, linked as the addon is
//                         (libc++ in, musl's libc.so dynamic), run by that loader: its system calls through musl,
//                         compared with the same calls made directly.
//                      Not shown for musl: Node-API registration and the glue in native/binding.cc running there.
//
// Node's runs report the addon's exports and what its functions answer: gettid() against the thread's own id,
// getIoFlusher() and prctlRaw(PR_GET_IO_FLUSHER) (here -1, EPERM: the kernel has IO_FLUSHER, the process lacks
// CAP_SYS_RESOURCE), sigrtmin()/sigrtmax() (34 on glibc, 35 on musl: which libc answered), getrlimit(RLIMIT_NOFILE).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

// Run by a real Node with the addon's path as its argument; prints one JSON line.
const NODE_LOAD_SCRIPT = `
const fs = require('fs');
const file = process.argv[1];
const b = require(file);
const nofile = new BigUint64Array(2);
const rl = b.getrlimit(7 /* RLIMIT_NOFILE, the same number on x86-64 and arm64 */, nofile);
const report = process.report.getReport().header;
console.log(JSON.stringify({
  loaded: true, registered: true,
  runtime: 'node ' + process.version + ' ' + process.arch + ' (glibc ' + report.glibcVersionRuntime + ')',
  exports: Object.keys(b),
  gettid: b.gettid(),
  hostTid: Number(fs.readlinkSync('/proc/thread-self').split('/').pop()),
  getIoFlusher: b.getIoFlusher(),
  prctlGetIoFlusher: b.prctlRaw(58, 0, 0, 0, 0),
  sigrtmin: b.sigrtmin(), sigrtmax: b.sigrtmax(),
  getrlimit: rl, nofile: [String(nofile[0]), String(nofile[1])],
  pendingException: false,
}));
`;

function runJson(cmd, args, options) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 180_000, ...options });
  const line = (r.stdout ?? '').trim().split('\n').filter((l) => l.startsWith('{')).pop();
  let json;
  try {
    json = line ? JSON.parse(line) : undefined;
  } catch {}
  // What went wrong, shortly: the command (an inline script shown as <script>) and the error lines of its stderr.
  const shown = args.map((a) => (a.includes('\n') ? '<script>' : a)).join(' ');
  const lines = (r.stderr ?? '').trim().split('\n').filter(Boolean);
  const errors = lines.filter((l) => /error/i.test(l)).slice(0, 4);
  const detail = `${cmd} ${shown} -> ${r.error ? r.error.message : `exit ${r.status ?? r.signal}`}` +
    `${lines.length ? `\n${(errors.length ? errors : lines.slice(-6)).join('\n')}` : ''}`;
  if (!json) return { loaded: false, error: detail };
  if (r.status !== 0 && json.loaded) json.error = detail;
  return json;
}

/** Loads `file` with a real Node, natively or under qemu (qemu: { bin, sysroot }). */
export function loadWithNode(file, { node, qemu }) {
  const args = ['-e', NODE_LOAD_SCRIPT, file];
  const r = qemu
    ? runJson(qemu.bin, ['-L', qemu.sysroot, node, ...args], {})
    : runJson(node, args, {});
  if (qemu && r.runtime) r.runtime = `${path.basename(qemu.bin)}: ${r.runtime}`;
  return r;
}

/**
 * musl's loader on `file` (ld-musl --list, natively or under qemu: { bin, sysroot }): the libraries it mapped and the
 * symbols it could not bind. In this mode the loader reports every relocation error and goes on, instead of
 * stopping at the first one as dlopen does.
 */
export function resolveWithMuslLoader(file, { loader, qemu }) {
  const args = ['--list', file];
  const r = qemu
    ? spawnSync(qemu.bin, ['-L', qemu.sysroot, path.join(qemu.sysroot, loader), ...args], { encoding: 'utf8', timeout: 180_000 })
    : spawnSync(loader, args, { encoding: 'utf8', timeout: 180_000 });
  const unresolved = [];
  const errors = [];
  for (const line of `${r.stderr ?? ''}`.split('\n').filter(Boolean)) {
    const m = /^Error relocating [^:]+: ([^:]+): symbol not found$/.exec(line);
    if (m) unresolved.push(m[1]);
    else errors.push(line);
  }
  if (r.error) errors.push(`${loader}: ${r.error.message}`);
  const libraries = `${r.stdout ?? ''}`.split('\n').map((l) => l.trim()).filter(Boolean);
  return { unresolved: [...new Set(unresolved)].sort(), errors, libraries };
}

/** What musl's loader left unbound that Node would not provide, and other loader errors. Returns a list of problems. */
export function checkMuslResolution(r, { napiReference }) {
  const problems = r.errors.map((e) => `musl loader: ${e}`);
  const foreign = r.unresolved.filter((name) => !/^(napi|node_api)_/.test(name));
  if (foreign.length) problems.push(`symbols musl cannot resolve (not Node-API): ${foreign.join(', ')}`);
  if (napiReference) {
    const unknown = r.unresolved.filter((name) => /^(napi|node_api)_/.test(name) && !napiReference.includes(name));
    if (unknown.length) problems.push(`Node-API imports the glibc build (loaded by Node) does not have: ${unknown.join(', ')}`);
  }
  return problems;
}

/**
 * Builds scripts/prebuild/native-core-check.c with the native core for a zig target (e.g. aarch64-linux-musl), as the
 * addon is built: zig c++ for native/*.cc (binding.cc left out), libc++ linked in, musl's libc.so dynamically.
 * Returns the executable's path.
 */
export function buildCoreCheck({ zig, zigTarget, nativeDir, sources, outDir, env, run }) {
  fs.mkdirSync(outDir, { recursive: true });
  const objects = [];
  for (const source of sources) {
    const object = path.join(outDir, `${path.basename(source).replace(/\.\w+$/, '')}.o`);
    const c = source.endsWith('.c');
    run(zig, [c ? 'cc' : 'c++', '-target', zigTarget, '-O2', ...(c ? [] : ['-std=c++17', '-fno-exceptions', '-fno-rtti']),
      '-Wall', '-Wextra', '-Werror', `-I${nativeDir}`, '-c', source, '-o', object], { cwd: outDir, env });
    objects.push(object);
  }
  const out = path.join(outDir, `native-core-check-${zigTarget}`);
  // build-exe -dynamic: `zig cc` links musl statically, and the check must run on the system's musl, as the addon does.
  run(zig, ['build-exe', '-target', zigTarget, '-dynamic', '-lc', '-lc++', '-O', 'ReleaseFast', ...objects, `-femit-bin=${out}`],
    { cwd: outDir, env });
  return out;
}

/** Runs the core check natively or under qemu ({ bin, sysroot }); returns { passed, failed, skipped, sigrtmin, lines }. */
export function runCoreCheck(bin, { qemu }) {
  const r = qemu
    ? spawnSync(qemu.bin, ['-L', qemu.sysroot, bin], { encoding: 'utf8', timeout: 180_000, env: { ...process.env, IOF_CORE_CHECK_QEMU: path.basename(qemu.bin) } })
    : spawnSync(bin, [], { encoding: 'utf8', timeout: 180_000 });
  const lines = `${r.stdout ?? ''}`.split('\n').filter(Boolean);
  const pick = (prefix) => lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length));
  return {
    status: r.status ?? r.signal ?? r.error?.message,
    passed: pick('ok ').length,
    failed: pick('FAIL '),
    skipped: pick('skip '),
    sigrtmin: Number(/^sigrtmin (\d+)/m.exec(r.stdout ?? '')?.[1]),
    stderr: `${r.stderr ?? ''}`.trim(),
  };
}

/** Checks the core check's run for a libc. Returns a list of problems. */
export function checkCoreRun(r, { libc }) {
  const problems = r.failed.map((f) => `native core: ${f}`);
  if (r.status !== 0 && problems.length === 0) problems.push(`native core check exited with ${r.status}: ${r.stderr.slice(-400)}`);
  if (r.passed === 0) problems.push('native core check ran no check');
  const expected = libc === 'musl' ? 35 : 34;
  if (r.sigrtmin !== expected) problems.push(`native core: SIGRTMIN ${r.sigrtmin}, expected ${expected} for ${libc}`);
  return problems;
}

/**
 * Checks a load result. `reference` is the export list seen by a real Node (the x64 glibc run), so that every
 * prebuild is shown to register the same functions. Returns a list of problems.
 */
export function checkLoad(r, { reference, libc }) {
  const problems = [];
  if (!r.loaded) return [`did not load: ${r.error}`];
  if (!r.registered) return [`loaded but did not register: ${r.error}`];
  if (r.error) problems.push(r.error);
  for (const name of ['prctlRaw', 'getIoFlusher', 'gettid']) {
    if (!r.exports?.includes(name)) problems.push(`no export ${name}`);
  }
  if (reference) {
    const a = [...r.exports].sort().join(',');
    const b = [...reference].sort().join(',');
    if (a !== b) problems.push(`exports differ from Node's view of the x64 glibc build: ${a} vs ${b}`);
  }
  if (!(Number.isInteger(r.gettid) && r.gettid === r.hostTid)) problems.push(`gettid() ${r.gettid}, thread id ${r.hostTid}`);
  const g = r.getIoFlusher;
  if (!(Number.isInteger(g) && (g === 0 || g === 1 || g < 0))) problems.push(`getIoFlusher() answered ${g}`);
  if (g !== r.prctlGetIoFlusher) problems.push(`getIoFlusher() ${g} but prctlRaw(PR_GET_IO_FLUSHER) ${r.prctlGetIoFlusher}`);
  if (r.getrlimit !== 0) problems.push(`getrlimit(RLIMIT_NOFILE) answered ${r.getrlimit}`);
  if (r.hostNofile && String(r.nofile) !== String(r.hostNofile)) problems.push(`RLIMIT_NOFILE ${r.nofile} vs ${r.hostNofile}`);
  // glibc reserves two real-time signals for itself (SIGRTMIN 34), musl three (35): the answer tells which libc the
  // addon's calls went to.
  const expected = r.hostSigrtmin ?? (libc === 'musl' ? 35 : 34);
  if (r.sigrtmin !== expected) problems.push(`sigrtmin() ${r.sigrtmin}, expected ${expected} for ${libc}`);
  if (r.pendingException) problems.push('a JavaScript exception was left pending');
  return problems;
}
