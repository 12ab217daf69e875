#!/usr/bin/env node
// The checks that keep README.md, CONTRIBUTING.md, CHANGELOG.md and docs/ true to the code (development only).
//
//   node scripts/check-docs.mjs          every check below; prints each failure, exits 1 if any (npm run docs:check)
//   node scripts/check-docs.mjs --api    regenerate docs/api/ from the doc comments (npm run docs:api)
//
// - code blocks: every ts/js block compiles against the published typings, imported as 'io-flusher' by a consumer
//   would; a block marked `fragment` in its info string (```ts fragment) is not compiled
// - included files: a block whose info string says file=PATH is exactly that file (the systemd unit, say)
// - links: every relative link resolves to a file in the repository, and every #anchor to a heading (GitHub's slugs)
//   or an <a id>
// - command line: docs/cli.md and `io-flusher --help` (and `io-flusher vm --help`) name the same commands and options
// - API reference: TypeDoc (typedoc.json) validates that every public export is documented, and docs/api/ equals a
//   fresh generation
// - systemd unit: `systemd-analyze verify` passes without a word, ExecStart included
// test/docs.test.ts runs each on the repository (npm test) and on broken copies, to show each can fail.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The Markdown pages the checks cover, relative to `root`: the top-level pages and everything under docs/. */
export function docFiles(root = ROOT) {
  const top = ['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md'].filter((f) => fs.existsSync(path.join(root, f)));
  const docs = fs.existsSync(path.join(root, 'docs'))
    ? fs.readdirSync(path.join(root, 'docs'), { recursive: true }).map((f) => path.join('docs', String(f))).filter((f) => f.endsWith('.md'))
    : [];
  return [...top, ...docs.sort()];
}

/** Fenced code blocks of a Markdown text: info string, first word of it (lang), code, line of the opening fence. */
export function fencedBlocks(text) {
  const blocks = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^( {0,3})(`{3,}|~{3,})(.*)$/.exec(lines[i]);
    if (!open || (open[2][0] === '`' && open[3].includes('`'))) continue;
    const fence = open[2];
    const body = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      body.push(lines[j]);
    }
    const info = open[3].trim();
    blocks.push({ info, lang: info.split(/\s+/)[0].toLowerCase(), code: body.join('\n') + (body.length ? '\n' : ''), line: i + 1, endLine: j + 1 });
    i = j;
  }
  return blocks;
}

/** The text with fenced blocks and inline code spans blanked (line numbers kept): where links and headings are real. */
function proseOnly(text) {
  const lines = text.split('\n');
  for (const block of fencedBlocks(text)) for (let l = block.line - 1; l < Math.min(block.endLine, lines.length); l++) lines[l] = '';
  return lines.map((line) => line.replace(/(`+)(?:(?!\1).)+?\1/g, (span) => ' '.repeat(span.length))).join('\n');
}

// ---------------------------------------------------------------------------------------------------------------------
// Code blocks

const COMPILED_LANGS = { ts: '.mts', typescript: '.mts', mts: '.mts', cts: '.cts', js: null, javascript: null, mjs: '.mjs', cjs: '.cjs' };
export const FRAGMENT = 'fragment';

/** The file extension a block compiles as: TypeScript as an ES module, JavaScript as ESM when it imports, else CommonJS. */
function blockExtension(block) {
  const ext = COMPILED_LANGS[block.lang];
  if (ext !== null) return ext;
  return /^\s*(import|export)\s/m.test(block.code) ? '.mjs' : '.cjs';
}

/**
 * Compiles every ts/js block of `files` (relative to `root`) as its own module in a scratch project whose
 * node_modules has `packageDir` as io-flusher (its package.json exports and dist/*.d.ts, as npm installs it), and
 * @types/node and vitest from `packageDir`'s own. Returns one message per compiler error, at the Markdown line.
 */
export function checkCodeBlocks({ root = ROOT, files = docFiles(root), packageDir = ROOT } = {}) {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'io-flusher-doc-blocks-'));
  try {
    const origins = new Map();
    fs.mkdirSync(path.join(scratch, 'blocks'));
    for (const file of files) {
      for (const block of fencedBlocks(fs.readFileSync(path.join(root, file), 'utf8'))) {
        if (!(block.lang in COMPILED_LANGS) || block.info.split(/\s+/).includes(FRAGMENT)) continue;
        const name = `${file.replace(/[^A-Za-z0-9]+/g, '_')}_L${block.line}${blockExtension(block)}`;
        fs.writeFileSync(path.join(scratch, 'blocks', name), block.code);
        origins.set(`blocks/${name}`, { file, line: block.line });
      }
    }
    if (origins.size === 0) return [];
    fs.mkdirSync(path.join(scratch, 'node_modules'));
    fs.symlinkSync(packageDir, path.join(scratch, 'node_modules/io-flusher'));
    for (const dep of ['@types', 'vitest']) fs.symlinkSync(path.join(packageDir, 'node_modules', dep), path.join(scratch, 'node_modules', dep));
    fs.writeFileSync(path.join(scratch, 'package.json'), JSON.stringify({ name: 'doc-blocks', private: true, type: 'commonjs' }));
    fs.writeFileSync(
      path.join(scratch, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true, target: 'ES2022', lib: ['ES2022'], module: 'node16', moduleResolution: 'node16', types: ['node'],
          moduleDetection: 'force', allowJs: true, checkJs: true, noEmit: true, skipLibCheck: true,
        },
        include: ['blocks'],
      }),
    );
    const tsc = spawnSync(process.execPath, [path.join(packageDir, 'node_modules/typescript/bin/tsc'), '-p', scratch, '--pretty', 'false'], { cwd: scratch, encoding: 'utf8' });
    if (tsc.status === 0) return [];
    const errors = [];
    for (const line of `${tsc.stdout}${tsc.stderr}`.split('\n')) {
      const m = /^(blocks\/[^(]+)\((\d+),(\d+)\): (error TS\d+: .*)$/.exec(line);
      const origin = m && origins.get(m[1]);
      if (origin) errors.push(`${origin.file}:${origin.line + Number(m[2])}: ${m[4]} (a ts/js block compiles as a consumer's code; mark it \`${FRAGMENT}\` if it is not meant to)`);
      else if (line.trim() && !line.startsWith(' ')) errors.push(`code blocks: ${line}`);
      else if (line.trim() && errors.length) errors[errors.length - 1] += ` ${line.trim()}`;
    }
    return errors.length ? errors : [`code blocks: tsc exited ${tsc.status}: ${tsc.stdout}${tsc.stderr}`];
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** Blocks whose info string says file=PATH (relative to the page) must be exactly that file. */
export function checkIncludedFiles({ root = ROOT, files = docFiles(root) } = {}) {
  const errors = [];
  for (const file of files) {
    for (const block of fencedBlocks(fs.readFileSync(path.join(root, file), 'utf8'))) {
      const included = /(?:^|\s)file=(\S+)/.exec(block.info)?.[1];
      if (!included) continue;
      const target = path.join(root, path.dirname(file), included);
      if (!fs.existsSync(target)) errors.push(`${file}:${block.line}: file=${included}: no such file`);
      else if (fs.readFileSync(target, 'utf8') !== block.code) {
        errors.push(`${file}:${block.line}: the block differs from ${path.relative(root, target)}: copy the file into the block`);
      }
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------------
// Links and anchors

/** GitHub's anchor for a heading (github-slugger): lower case, punctuation but - and _ dropped, spaces to -. */
export function githubSlug(heading) {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/`/g, '')
    .replace(/\*+|~~/g, '');
  return text.trim().toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '').replace(/ /g, '-');
}

const anchorCache = new Map();

/** Every anchor a Markdown file offers: its headings' slugs (the second "x" is "x-1") and <a id/name>. */
export function anchorsOf(file) {
  if (anchorCache.has(file)) return anchorCache.get(file);
  const text = fs.readFileSync(file, 'utf8');
  const anchors = new Set();
  const seen = new Map();
  const lines = text.split('\n');
  for (const block of fencedBlocks(text)) for (let l = block.line - 1; l < Math.min(block.endLine, lines.length); l++) lines[l] = '';
  for (const line of lines) {
    const heading = /^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/.exec(line);
    if (heading) {
      const slug = githubSlug(heading[1]);
      const n = seen.get(slug) ?? 0;
      seen.set(slug, n + 1);
      anchors.add(n === 0 ? slug : `${slug}-${n}`);
    }
    for (const m of line.matchAll(/<a\s[^>]*\b(?:id|name)="([^"]+)"/g)) anchors.add(m[1]);
  }
  anchorCache.set(file, anchors);
  return anchors;
}

/** The link targets of a Markdown text, with their lines: inline links and images, reference definitions, <a href>. */
export function linksOf(text) {
  const links = [];
  proseOnly(text)
    .split('\n')
    .forEach((line, i) => {
      for (const m of line.matchAll(/!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)) links.push({ target: m[1], line: i + 1 });
      const definition = /^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$/.exec(line);
      if (definition) links.push({ target: definition[1], line: i + 1 });
      for (const m of line.matchAll(/<(?:a|img)\s[^>]*\b(?:href|src)="([^"]+)"/g)) links.push({ target: m[1], line: i + 1 });
    });
  return links;
}

/** Every relative link of `files` resolves inside `root`, and every anchor to a heading of its Markdown page. */
export function checkLinks({ root = ROOT, files = docFiles(root) } = {}) {
  anchorCache.clear();
  const errors = [];
  for (const file of files) {
    for (const { target, line } of linksOf(fs.readFileSync(path.join(root, file), 'utf8'))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue; // https:, mailto:
      const hash = target.indexOf('#');
      const pathPart = decodeURI(hash < 0 ? target : target.slice(0, hash));
      const anchor = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
      const resolved = pathPart === '' ? path.join(root, file) : pathPart.startsWith('/') ? path.join(root, pathPart) : path.resolve(root, path.dirname(file), pathPart);
      const where = `${file}:${line}: link ${target}`;
      if (path.relative(root, resolved).startsWith('..')) errors.push(`${where}: points outside the repository`);
      else if (!fs.existsSync(resolved)) errors.push(`${where}: no such file ${path.relative(root, resolved)}`);
      else if (anchor !== undefined && resolved.endsWith('.md') && !anchorsOf(resolved).has(anchor)) {
        errors.push(`${where}: ${path.relative(root, resolved)} has no heading with anchor #${anchor}`);
      }
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------------
// Command line

const OPTION = /(?<![\w-])--[a-z][a-z0-9-]*/g;
const NOT_OPTIONS = new Set(['--help', '--version']);
const options = (text) => new Set([...text.matchAll(OPTION)].map((m) => m[0]).filter((o) => !NOT_OPTIONS.has(o)));

/** Commands and their options as the CLI's help tells them: `--help`, then `COMMAND --help` where that is help. */
export function cliFromHelp(cliJs = path.join(ROOT, 'dist/cli.js')) {
  const help = (args) => spawnSync(process.execPath, [cliJs, ...args], { encoding: 'utf8' });
  const top = help(['--help']);
  if (top.status !== 0) throw new Error(`io-flusher --help exited ${top.status}: ${top.stderr}`);
  const commands = new Map();
  let current;
  for (const line of top.stdout.split('\n')) {
    const m = /^ {2}io-flusher ([a-z]+)\b(.*)$/.exec(line);
    if (m) commands.set((current = m[1]), options(m[2]));
    else if (current) for (const o of options(line)) commands.get(current).add(o);
  }
  for (const [command, known] of commands) {
    const own = help([command, '--help']);
    if (own.status !== 0) continue;
    // A command's own help: the options it lists, one a line ("  --kernel NAME ..." or "  -h, --help ...").
    for (const m of own.stdout.matchAll(/^ {2}(?:-[a-zA-Z], )?(--[a-z][a-z0-9-]*)/gm)) if (!NOT_OPTIONS.has(m[1])) known.add(m[1]);
  }
  return commands;
}

/** Commands and options as docs/cli.md documents them: `## io-flusher COMMAND` sections, options in their tables' first column. */
export function cliFromDoc(cliDoc) {
  const commands = new Map();
  let current;
  for (const line of fs.readFileSync(cliDoc, 'utf8').split('\n')) {
    const heading = /^#{2,3} `?io-flusher ([a-z]+)\b/.exec(line);
    if (heading) commands.set((current = heading[1]), new Set());
    else if (/^#{1,2} /.test(line)) current = undefined;
    else if (current && line.startsWith('|')) for (const o of options(line.split('|')[1])) commands.get(current).add(o);
  }
  return commands;
}

/** docs/cli.md and the CLI's help name the same commands, and each command the same options. */
export function checkCli({ cliJs = path.join(ROOT, 'dist/cli.js'), cliDoc = path.join(ROOT, 'docs/cli.md') } = {}) {
  const fromHelp = cliFromHelp(cliJs);
  const fromDoc = cliFromDoc(cliDoc);
  const doc = path.relative(ROOT, cliDoc);
  const errors = [];
  for (const command of fromHelp.keys()) if (!fromDoc.has(command)) errors.push(`${doc}: no section "## io-flusher ${command}" for a command --help lists`);
  for (const command of fromDoc.keys()) if (!fromHelp.has(command)) errors.push(`${doc}: documents "io-flusher ${command}", which --help does not list`);
  for (const [command, helpOptions] of fromHelp) {
    const docOptions = fromDoc.get(command);
    if (!docOptions) continue;
    for (const o of helpOptions) if (!docOptions.has(o)) errors.push(`${doc}: io-flusher ${command} ${o} is in --help but in no row of the section's option table`);
    for (const o of docOptions) if (!helpOptions.has(o)) errors.push(`${doc}: io-flusher ${command} ${o} is documented but --help does not list it`);
  }
  return errors;
}

/** The refusal `io-flusher exec` prints without CAP_SYS_RESOURCE, as docs/cli.md shows it, for COMMAND `command`. */
export function refusalLine(cliDoc, command) {
  const line = fs.readFileSync(cliDoc, 'utf8').split('\n').find((l) => l.startsWith('io-flusher: could not set IO_FLUSHER, so '));
  if (!line) throw new Error(`${cliDoc} shows no refusal line ("io-flusher: could not set IO_FLUSHER, so ...")`);
  return line.replace(/^(io-flusher: could not set IO_FLUSHER, so )\S+( was not started)/, `$1${command}$2`);
}

// ---------------------------------------------------------------------------------------------------------------------
// API reference

function listFiles(dir) {
  return fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort() : [];
}

/** Runs TypeDoc with `root`'s typedoc.json into `out`; its validation warnings are errors there. */
export function generateApi(root = ROOT, out = path.join(root, 'docs/api')) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typedoc/bin/typedoc'), '--options', path.join(root, 'typedoc.json'), '--out', out], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.replace(/\x1b\[[0-9;]*m/g, '') };
}

/** TypeDoc passes its validation (every public export documented), and docs/api/ is what it generates now. */
export function checkApiReference({ root = ROOT } = {}) {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'io-flusher-api-'));
  try {
    const { ok, output } = generateApi(root, scratch);
    if (!ok) {
      // Warnings, and the names some of them list on the lines below (tab-indented).
      const lines = output.split('\n').filter((l) => /\[(warning|error)\]/.test(l) || /^\t\S/.test(l));
      return lines.length ? lines.map((l) => `typedoc: ${l}`) : [`typedoc failed: ${output}`];
    }
    const committed = path.join(root, 'docs/api');
    const fresh = listFiles(scratch);
    const errors = [];
    const stale = (what) => `docs/api/${what}: run \`npm run docs:api\` and commit docs/api/`;
    for (const f of fresh) {
      if (!fs.existsSync(path.join(committed, f))) errors.push(stale(`${f} is missing`));
      else if (fs.readFileSync(path.join(committed, f), 'utf8') !== fs.readFileSync(path.join(scratch, f), 'utf8')) errors.push(stale(`${f} differs from a fresh generation`));
    }
    for (const f of listFiles(committed)) if (!fresh.includes(f)) errors.push(stale(`${f} is no longer generated`));
    return errors;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// systemd unit

/** A systemd unit file's settings by section (`unit`, `service`, `install`); a key given twice keeps the last value. */
export function readUnit(file) {
  const sections = {};
  let current;
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(\w+)\]$/.exec(line);
    if (section) sections[(current = section[1].toLowerCase())] ??= {};
    else if (current) {
      const eq = line.indexOf('=');
      sections[current][line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    }
  }
  return sections;
}

/** Whether this machine has systemd-analyze (Debian package systemd). */
export function hasSystemdAnalyze() {
  return spawnSync('systemd-analyze', ['--version']).status === 0;
}

/**
 * `systemd-analyze verify` of a unit, which also checks that ExecStart's program exists: so it runs with --root on
 * a scratch tree holding the system's own units, the unit installed in /etc/systemd/system, and the CLI placed
 * where ExecStart names io-flusher's bin (as `npm install io-flusher` in the daemon's directory puts it).
 * Any output is a failure: verify exits 0 on warnings such as an unknown setting.
 */
export function checkSystemdUnit({ unitFile = path.join(ROOT, 'docs/deployment/storage-daemon.service'), packageDir = ROOT } = {}) {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'io-flusher-unit-'));
  try {
    const name = path.basename(unitFile);
    fs.mkdirSync(path.join(scratch, 'etc/systemd/system'), { recursive: true });
    fs.copyFileSync(unitFile, path.join(scratch, 'etc/systemd/system', name));
    fs.cpSync('/usr/lib/systemd/system', path.join(scratch, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    const program = readUnit(unitFile).service?.ExecStart?.split(/\s+/)[0];
    if (program?.startsWith('/')) {
      fs.mkdirSync(path.join(scratch, path.dirname(program)), { recursive: true });
      fs.copyFileSync(path.join(packageDir, 'dist/cli.js'), path.join(scratch, program));
      fs.chmodSync(path.join(scratch, program), 0o755);
    }
    const r = spawnSync('systemd-analyze', ['verify', `--root=${scratch}`, `/etc/systemd/system/${name}`], { encoding: 'utf8' });
    const said = `${r.stdout}${r.stderr}`.trim().replaceAll(scratch, '');
    return r.status === 0 && !said ? [] : [`systemd-analyze verify ${path.relative(ROOT, unitFile)} (exit ${r.status}): ${said}`];
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------------

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  if (process.argv.includes('--api')) {
    fs.rmSync(path.join(ROOT, 'docs/api'), { recursive: true, force: true });
    const { ok, output } = generateApi();
    process.stdout.write(output);
    process.exit(ok ? 0 : 1);
  }
  const checks = {
    'code blocks': () => checkCodeBlocks(),
    'included files': () => checkIncludedFiles(),
    links: () => checkLinks(),
    'command line': () => checkCli(),
    'API reference': () => checkApiReference(),
    'systemd unit': () => (hasSystemdAnalyze() ? checkSystemdUnit() : ['systemd-analyze is missing (Debian package systemd)']),
  };
  let failures = 0;
  for (const [name, check] of Object.entries(checks)) {
    const errors = check();
    failures += errors.length;
    process.stdout.write(`${errors.length ? 'FAIL' : 'ok  '} ${name}\n${errors.map((e) => `  ${e}\n`).join('')}`);
  }
  process.exit(failures ? 1 : 0);
}
