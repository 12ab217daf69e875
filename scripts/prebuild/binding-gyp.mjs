// Reads binding.gyp, so that the prebuild script takes the addon's sources from the one place that lists them
// (binding.gyp; CMakeLists.txt mirrors it) instead of a copy that would go stale when a source file is added.
//
// A .gyp file is a Python literal, not JSON: '#' comments, single-quoted strings and trailing commas are allowed
// (https://gyp.gsrc.io/docs/InputFormatReference.md). toJson() rewrites exactly those three things, outside strings,
// and leaves everything else to JSON.parse, so anything stranger fails loudly rather than being misread.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Converts gyp's Python-literal syntax to JSON text. */
export function toJson(text) {
  let out = '';
  let i = 0;
  // Index in `out` of the last significant (non-whitespace) character, to drop a trailing comma before } or ].
  let lastSignificant = -1;
  while (i < text.length) {
    const c = text[i];
    if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
      continue;
    }
    if (c === '"' || c === "'") {
      // Read the string with its escapes, then emit it double-quoted.
      let value = '';
      i++;
      while (i < text.length && text[i] !== c) {
        if (text[i] === '\\' && i + 1 < text.length) {
          const next = text[i + 1];
          value += next === "'" ? "'" : '\\' + next;
          i += 2;
        } else {
          value += text[i] === '"' ? '\\"' : text[i];
          i++;
        }
      }
      if (i >= text.length) throw new Error('binding.gyp: unterminated string');
      i++;
      out += '"' + value + '"';
      lastSignificant = out.length - 1;
      continue;
    }
    if ((c === '}' || c === ']') && lastSignificant >= 0 && out[lastSignificant] === ',') {
      out = out.slice(0, lastSignificant) + out.slice(lastSignificant + 1);
    }
    out += c;
    if (!/\s/.test(c)) lastSignificant = out.length - 1;
    i++;
  }
  return out;
}

/**
 * The addon targets of binding.gyp: [{ name, sources, includeDirs }], with sources as repo-relative paths. Sources
 * inside "conditions" blocks are not evaluated here; the caller copies whole source directories, which covers them.
 */
export function readBindingGyp(repoRoot) {
  const file = path.join(repoRoot, 'binding.gyp');
  const gyp = JSON.parse(toJson(fs.readFileSync(file, 'utf8')));
  const targets = (gyp.targets ?? [])
    .filter((t) => t.type === undefined || t.type === 'loadable_module' || t.type === 'shared_library')
    .map((t) => ({
      name: t.target_name,
      sources: (t.sources ?? []).map((s) => path.normalize(s)),
      // Only plain relative directories are files to copy; "<!(...)" entries are commands gyp runs itself.
      includeDirs: (t.include_dirs ?? []).filter((d) => !d.includes('<') && !path.isAbsolute(d)),
    }));
  if (targets.length === 0) throw new Error(`${file}: no addon target found`);
  for (const t of targets) {
    if (t.sources.length === 0) throw new Error(`${file}: target ${t.name} lists no sources`);
    for (const s of t.sources) {
      if (s.startsWith('..') || path.isAbsolute(s)) throw new Error(`${file}: source ${s} is outside the package`);
      if (!fs.existsSync(path.join(repoRoot, s))) throw new Error(`${file}: source ${s} does not exist`);
    }
  }
  return targets;
}

/**
 * What a build needs from the repo, as repo-relative paths: binding.gyp, package.json (prebuildify names the files
 * after the package), every directory that holds a source (so its headers come too) and every plain include dir.
 */
export function buildInputs(repoRoot) {
  const targets = readBindingGyp(repoRoot);
  const dirs = new Set();
  for (const t of targets) {
    for (const s of t.sources) dirs.add(path.dirname(s));
    for (const d of t.includeDirs) dirs.add(path.normalize(d));
  }
  dirs.delete('.');  // a source at the top level: copy that file alone, not the whole repo
  const files = ['binding.gyp', 'package.json'];
  for (const t of targets) for (const s of t.sources) if (path.dirname(s) === '.') files.push(s);
  return { targets, files, dirs: [...dirs].sort() };
}
