#!/usr/bin/env node
// The pressure lab: the NBD deadlock IO_FLUSHER exists to prevent, run many times on real kernels, protected and
// unprotected, with progress recorded once a second and the kernel stacks of every stall. Not a CI gate (CI runs one
// pair through scripts/test-nbd.mjs). The method, the definitions and the results: docs/lab/README.md.
//
// Each run boots a VM (vm/kernel-run, with an empty virtio disk for the server's backing store) and runs
// scripts/lab/pressure-run.sh there; its record is appended as one JSON line to the results file as soon as the run
// ends, so runs accumulate across invocations and an interrupted campaign loses at most the run in progress.
//
// Usage:
//   npm run lab:pressure -- [--runs N] [--variant dirty|swap|memcg] [--kernel bookworm|trixie|bullseye]
//                           [--protect both|exec|none] [--node MAJOR] [--memory MIB] [--results FILE]
//   npm run lab:pressure -- --campaign [--until-pairs 10] [--min-pairs 3] [--cells bookworm:dirty,trixie:dirty,...]
//   npm run lab:pressure -- --summary [--results FILE] [--readme docs/lab/README.md (writes the table there)]
//   npm run lab:pressure -- --plot [--results FILE] [--out DIR]
//   npm run lab:pressure -- --stacks [--results FILE]      (where the blocked threads were, per cell and outcome)
//   npm run lab:pressure -- --reclassify [--results FILE]  (rewrite the derived fields; never while a campaign runs)
// --runs N runs N pairs, alternating which side goes first, unless --protect names one side. --campaign takes each
// cell (kernel:variant) in order to --min-pairs pairs, and to --until-pairs when its sides differ (see docs/lab).
// SIGTERM or SIGINT to this process (not its process group) stops after the run in progress has been recorded.
// Environment for the guest (pressure-run.sh): NBD_LAB_WRITE_MIB (64), NBD_LAB_STALL_S (10), NBD_LAB_HANG_S (300),
// NBD_LAB_BOUND_S (600), NBD_LAB_SWAP_MIB (512), NBD_LAB_HOG_OVER_MIB (256), NBD_LAB_MEMCG_MIB (160), NBD_LAB_PRINTK
// (the console's kernel log level; 7 shows the kernel's reports of blocked tasks, for a guest that goes silent).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { formatDumps, parseDumps, watchHost } from './lab/host-view.mjs';
import { buildRecord, COUNTED, current, hostViewOf, isOld, outcomeOf } from './lab/record.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
export const DEFAULT_RESULTS = path.join(root, 'docs/lab/pressure.jsonl');
export const VARIANTS = ['dirty', 'swap', 'memcg'];
const GUEST_ENV = ['NBD_LAB_PRINTK', 'NBD_LAB_WRITE_MIB', 'NBD_LAB_STALL_S', 'NBD_LAB_HANG_S', 'NBD_LAB_SETTLE_S', 'NBD_LAB_BOUND_S', 'NBD_LAB_SWAP_MIB', 'NBD_LAB_HOG_OVER_MIB', 'NBD_LAB_MEMCG_MIB'];
// The campaign's default order: the cells that show the effect first, then 5.10, then the rest.
export const DEFAULT_CELLS = ['bookworm:dirty', 'trixie:dirty', 'bookworm:swap', 'bullseye:dirty', 'bullseye:swap', 'trixie:swap', 'bookworm:memcg', 'bullseye:memcg', 'trixie:memcg'];

/**
 * scripts/lab/observer-lock.c built as a library the observer (pressure-run.sh) is started with: it locks the
 * observer's memory (why: that file). Built on the host, into the project (the guest sees it at the same path; the
 * guest's /tmp is its own), again whenever the source is newer.
 */
export function observerLockLibrary() {
  const source = path.join(root, 'scripts/lab/observer-lock.c');
  const library = path.join(root, 'build/lab/observer-lock.so');
  if (fs.existsSync(library) && fs.statSync(library).mtimeMs >= fs.statSync(source).mtimeMs) return library;
  fs.mkdirSync(path.dirname(library), { recursive: true });
  const cc = process.env.CC || 'cc';
  const r = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-o', library, source], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`lab: cannot build ${library} with ${cc}: ${r.error?.message ?? r.stderr.trim()}`);
  return library;
}

/**
 * One run in a VM: the record (see scripts/lab/record.mjs), with the host's view added (wall time, kernel-run's exit,
 * the host's load average before and after, and what QEMU shows of the guest: scripts/lab/host-view.mjs). `env`
 * overrides the guest's NBD_LAB_* settings.
 */
export async function runOnce({ variant, protect, kernel = 'bookworm', node = 'system', memory = '960', quiet = false, env = {} }) {
  const started = Date.now();
  const loadStart = os.loadavg();
  const guestEnv = {};
  for (const k of GUEST_ENV) if (env[k] ?? process.env[k]) guestEnv[k] = env[k] ?? process.env[k];
  // kernel-run's own timing (boot, command), without the wait for the VM lock that wallSeconds includes.
  const timesFile = path.join(os.tmpdir(), `lab-pressure-times-${process.pid}.jsonl`);
  fs.rmSync(timesFile, { force: true });
  const monitorPath = path.join(os.tmpdir(), `lab-pressure-monitor-${process.pid}.sock`);
  // The observer runs with IO_FLUSHER itself (see pressure-run.sh), with oom_score_adj -1000, its memory locked (in
  // the C locale: a locale archive would be mapped, and so locked, whole).
  const child = spawn(
    path.join(root, 'vm/kernel-run'),
    ['--kernel', kernel, '--mode', 'full', '--node', node, '--modules', 'nbd,ext4', '--disk', '2G', '--memory', memory,
      '--timeout', '1000', '--monitor', monitorPath, '--quiet', '--',
      'node', path.join(root, 'dist/cli.js'), 'exec', '--oom-score-adj', '-1000', '--',
      'env', ...Object.entries(guestEnv).map(([k, v]) => `${k}=${v}`), `LD_PRELOAD=${observerLockLibrary()}`, 'LC_ALL=C',
      'bash', path.join(root, 'scripts/lab/pressure-run.sh'), variant, protect],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IO_FLUSHER_KERNEL_RUN_TIMES: timesFile } },
  );
  let out = '';
  let err = '';
  let lastOutputAt = Date.now();
  child.stdout.setEncoding('utf8').on('data', (d) => {
    out += d;
    lastOutputAt = Date.now();
  });
  child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const done = new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? 128 + (os.constants.signals[signal] ?? 0))));
  const hostView = await watchHost({
    monitorPath,
    output: () => out,
    lastOutputAt: () => lastOutputAt,
    done,
    log: (line) => quiet || process.stderr.write(`lab: ${line}\n`),
  });
  const status = await done;
  let vmSeconds;
  try {
    const times = JSON.parse(fs.readFileSync(timesFile, 'utf8').trim().split('\n').at(-1));
    vmSeconds = { boot: times.bootSeconds, command: times.commandSeconds, boots: times.boots };
  } catch {
    vmSeconds = undefined;
  }
  fs.rmSync(timesFile, { force: true });
  if (!quiet) {
    const notes = out.split('\n').filter((l) => l.startsWith('lab: ')).slice(0, 20);
    const text = [...notes, err.trimEnd()].filter(Boolean).join('\n');
    if (text) process.stderr.write(`${text}\n`);
  }
  const record = buildRecord(out, {
    at: new Date(started).toISOString(),
    kernelName: kernel,
    variant,
    protect,
    // From the start of kernel-run to its end, the wait for IO_FLUSHER_VM_LOCK included; vmSeconds has the VM's own.
    wallSeconds: (Date.now() - started) / 1000,
    vmSeconds,
    // 125 when the guest powered itself off after a hang (its last sync would never return), or the host ended it.
    kernelRunExit: status,
    hostLoadavg: { start: loadStart.map(round2), end: os.loadavg().map(round2) },
  }, hostView);
  if (hostView.dumps.length) record.hostDumps = formatDumps(hostView.dumps);
  return record;
}
const round2 = (x) => Math.round(x * 100) / 100;

/** The records of the results file, each read under the current definitions (current() in scripts/lab/record.mjs). */
export function readResults(file) {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => current(JSON.parse(l)));
}

const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : undefined;
};
const fmt = (x, digits = 1) => (x === undefined ? '-' : x.toFixed(digits));
const side = (protect) => (protect === 'exec' ? 'protected' : 'unprotected');
const kernelOf = (r, releases = new Map()) => (r.kernel ?? releases.get(r.kernelName) ?? r.kernelName ?? '?').replace(/-amd64$/, '');

/** Records grouped by kernel, variant, side and definition (old records never share a row with new ones). */
export function groups(records) {
  const map = new Map();
  // A run that gave no release of its own (a failed one) goes in the row of its kernel's other runs.
  const releases = new Map(records.filter((r) => r.kernel && r.kernelName).map((r) => [r.kernelName, r.kernel]));
  for (const r of records) {
    const key = [kernelOf(r, releases), r.variant, side(r.protect), isOld(r) ? 'old' : 'new'].join('|');
    if (!map.has(key)) map.set(key, []);
    map.get(key).push(r);
  }
  // New records first, old ones after them.
  const order = (key) => `${key.endsWith('|old') ? 1 : 0}|${key}`;
  return [...map].sort(([a], [b]) => order(a).localeCompare(order(b)));
}

/** Verified intact of verified, and the runs whose data could not be verified (intact: null), apart. */
function intactColumn(done) {
  const unverified = done.filter((r) => r.intact === null).length;
  const verified = done.filter((r) => typeof r.intact === 'boolean');
  return `${verified.filter((r) => r.intact).length}/${verified.length}${unverified ? ` (${unverified} not verified)` : ''}`;
}

/** The table: one row per kernel, variant, side (and definition), the outcomes counted apart. */
export function summarize(records) {
  const rows = [
    '| kernel | variant | side | runs | no stall | stalled | hung | unresolved | other | longest stall that ended, s | stalls ≥ threshold, s (median) | MiB/s (median) | data intact | causes |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const unsupported = [];
  for (const [key, rs] of groups(records)) {
    const [kernel, variant, sideName, def] = key.split('|');
    const outcomes = rs.map((r) => outcomeOf(r).outcome);
    if (outcomes.every((o) => o === 'unsupported')) {
      unsupported.push(`${kernel} ${variant}: ${rs[0].unsupported ?? outcomeOf(rs[0]).reason}`);
      continue;
    }
    const count = (o) => outcomes.filter((x) => x === o).length;
    const done = rs.filter((r, i) => outcomes[i] === 'no-stall' || outcomes[i] === 'stalled');
    // Stalls that ended: every episode of a new record; the longest stall of an old record that completed.
    const stalls = rs.flatMap((r, i) => (r.episodes ? r.episodes.filter((e) => e.ended).map((e) => e.seconds) : outcomes[i] === 'stalled' ? [r.longestStallSeconds] : []));
    const longest = Math.max(0, ...rs.map((r, i) => (outcomes[i] === 'no-stall' || outcomes[i] === 'stalled' ? r.longestStallSeconds : 0)), ...stalls);
    const causes = {};
    for (const [i, r] of rs.entries()) if (['stalled', 'hung', 'unresolved'].includes(outcomes[i]) && r.cause) causes[r.cause] = (causes[r.cause] ?? 0) + 1;
    const other = count('incomplete') + count('failed');
    // Runs whose observer went silent, classified from the host's dumps (scripts/lab/host-view.mjs).
    const fromHost = rs.filter((r) => r.observer === 'host').length;
    rows.push(
      `| ${kernel}${def === 'old' ? ' (old records: 30 s cut-off)' : ''} | ${variant} | ${sideName} | ${rs.filter((r, i) => COUNTED.has(outcomes[i])).length} | ` +
        `${count('no-stall')} | ${count('stalled')} | ${def === 'old' ? '-' : count('hung')} | ${count('unresolved')} | ${other ? `${other} (${count('incomplete')} incomplete, ${count('failed')} failed)` : 0} | ` +
        `${fmt(longest, 0)} | ${fmt(median(stalls), 0)} | ${fmt(median(done.map((r) => r.write?.mibPerSecond)), 2)} | ` +
        `${intactColumn(done)} | ${Object.entries(causes).map(([c, n]) => `${c} ${n}`).join(', ') || '-'}${fromHost ? ` (${fromHost} seen from the host)` : ''} |`,
    );
  }
  return [rows.join('\n'), ...unsupported.map((u) => `Not run (unsupported): ${u}`)].join('\n');
}

/** A small text chart per run: nbd0 MiB written per 5 s, as a sparkline, for --summary in a terminal. */
export function sparklines(records) {
  const bars = ' ▁▂▃▄▅▆▇█';
  const lines = [];
  for (const [key, rs] of groups(records.filter((r) => r.series))) {
    const [kernel, variant, sideName] = key.split('|');
    lines.push(`${kernel} ${variant} ${sideName} (nbd0 MiB written per 5 s; one line per run)`);
    for (const r of rs.slice(-12)) {
      const { t, nbd0WriteSectors: s } = r.series;
      const buckets = [];
      for (let i = 0, prev = 0; i < t.length; i++) {
        const bucket = Math.floor(t[i] / 5);
        while (buckets.length <= bucket) buckets.push(0);
        buckets[bucket] += (s[i] - prev) / 2048;
        prev = s[i];
      }
      const line = buckets.slice(0, 72).map((x) => bars[Math.min(8, Math.ceil(x / 10))]).join('');
      lines.push(`  ${outcomeOf(r).outcome.padEnd(10)} |${line}|${buckets.length > 72 ? '...' : ''}`);
    }
  }
  return lines.join('\n');
}

/**
 * Where the blocked tasks were, per kernel, variant and side: for each outcome with a stall, the blocked (D) threads
 * of the snapshot that explains it (a hang's end, else the start of the run's last recorded stall), their stacks
 * cut to the first `frames` frames and the last 4 (where the call came from), with the number of runs that had each.
 */
export function stacks(records, frames = 6) {
  const out = [];
  for (const [key, rs] of groups(records.filter((r) => r.snapshots))) {
    const [kernel, variant, sideName] = key.split('|');
    const byOutcome = new Map();
    for (const r of rs) {
      const o = r.outcome;
      if (!['stalled', 'hung', 'unresolved'].includes(o)) continue;
      const names = Object.keys(r.snapshots);
      const snap = r.snapshots.end ?? r.snapshots[names.filter((n) => n.startsWith('stall-')).sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1)];
      if (!snap) continue;
      if (!byOutcome.has(o)) byOutcome.set(o, { runs: 0, lines: new Map() });
      const entry = byOutcome.get(o);
      entry.runs++;
      const seen = new Set();
      for (const t of snap.threads.filter((x) => x.state === 'D')) {
        const f = t.stack.split(' < ');
        const cut = f.length > frames + 4 ? [...f.slice(0, frames), '...', ...f.slice(-4)] : f;
        const line = `${t.role.padEnd(7)} ${t.name.padEnd(16)} ${cut.join(' < ')}`;
        if (seen.has(line)) continue;
        seen.add(line);
        entry.lines.set(line, (entry.lines.get(line) ?? 0) + 1);
      }
    }
    for (const [o, { runs, lines }] of byOutcome) {
      out.push(`${kernel} ${variant} ${sideName}, ${o} (${runs} runs): blocked threads (runs that had each)`);
      for (const [line, n] of [...lines].sort((a, b) => b[1] - a[1])) out.push(`  ${String(n).padStart(3)}  ${line}`);
    }
  }
  return out.join('\n');
}

/** Whether a cell's two sides differ: their counts of runs that did not finish without a stall differ. */
export function showsEffect(records) {
  // Over whole pairs only: the first N runs of each side, N the shorter side's count (a side with an extra run, e.g.
  // an interrupted pair, would otherwise differ by that run alone).
  const side = (p) => records.filter((r) => r.protect === p).sort((a, b) => String(a.at).localeCompare(String(b.at)));
  const n = Math.min(side('exec').length, side('none').length);
  const bad = (p) => side(p).slice(0, n).filter((r) => ['stalled', 'hung', 'unresolved', 'incomplete'].includes(outcomeOf(r).outcome)).length;
  return bad('exec') !== bad('none');
}

function logRun(record, label) {
  const w = record.write;
  const o = record.outcome;
  process.stdout.write(
    `lab: ${record.kernelName} ${record.variant} ${side(record.protect).padEnd(11)} ${label}: ${o}` +
      (o === 'no-stall' || o === 'stalled'
        ? ` ${w.mibPerSecond.toFixed(2)} MiB/s, longest stall ${record.longestStallSeconds} s, ${record.episodes.length} stalls, data ${record.intact === null ? `not verified (${record.verifyError})` : record.intact ? 'intact' : 'CORRUPTED'}`
        : '') +
      (o === 'hung' && record.observer !== 'host' ? `: no progress for ${record.hangBoundSeconds} s, blocked threads unchanged (${record.stackComparison.unchanged}), cause ${record.cause}` : '') +
      (record.observer === 'host' ? ` [host view: cause ${record.cause}]` : '') +
      (record.outcomeReason ? ` (${record.outcomeReason})` : '') +
      ` [VM ${record.vmSeconds ? (record.vmSeconds.boot + record.vmSeconds.command).toFixed(0) : '?'} s of ${record.wallSeconds.toFixed(0)} s; host load ${record.hostLoadavg.start[0]} -> ${record.hostLoadavg.end[0]}]\n`,
  );
}

let stopRequested = false;
function stopOnSignals() {
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      stopRequested = true;
      process.stderr.write(`lab-pressure: ${sig}: stopping after the run in progress is recorded\n`);
    });
  }
}

async function runAndRecord(file, opts, label) {
  const { hostDumps, ...record } = await runOnce(opts);
  // The host's dumps as the console printed them (the record keeps them parsed), beside the results.
  if (hostDumps) {
    const dir = path.join(path.dirname(file), 'console');
    fs.mkdirSync(dir, { recursive: true });
    record.hostView.dumpsFile = path.relative(path.dirname(file), path.join(dir, `host-${record.kernelName}-${record.variant}-${side(record.protect)}-${record.at.replace(/[:.]/g, '')}.txt`));
    fs.writeFileSync(path.join(path.dirname(file), record.hostView.dumpsFile), hostDumps);
  }
  fs.appendFileSync(file, `${JSON.stringify(record)}\n`);
  logRun(record, label);
  return record;
}

/** The sides of a pair, alternating which goes first; a side short of runs (an interrupted pair) goes first. */
function pairOrder(cellRecords) {
  const n = (p) => cellRecords.filter((r) => r.protect === p).length;
  if (n('exec') !== n('none')) return n('exec') < n('none') ? ['exec', 'none'] : ['none', 'exec'];
  return n('exec') % 2 === 0 ? ['exec', 'none'] : ['none', 'exec'];
}

async function campaign(file, { cells, untilPairs, minPairs, node, memory }) {
  for (const cell of cells) {
    const [kernel, variant] = cell.split(':');
    let failuresInARow = 0;
    for (;;) {
      if (stopRequested) return 0;
      const all = readResults(file).filter((r) => !isOld(r) && r.kernelName === kernel && r.variant === variant);
      if (all.some((r) => r.outcome === 'unsupported')) {
        process.stdout.write(`lab: ${cell}: unsupported on this kernel (${all.find((r) => r.outcome === 'unsupported').unsupported}); next cell\n`);
        break;
      }
      const counted = all.filter((r) => COUNTED.has(r.outcome));
      const pairs = Math.min(...['exec', 'none'].map((p) => counted.filter((r) => r.protect === p).length));
      const differ = pairs >= minPairs && showsEffect(counted);
      const target = differ ? untilPairs : minPairs;
      if (pairs >= target) {
        process.stdout.write(`lab: ${cell}: ${pairs} pairs (target ${target}, the sides ${differ ? 'differ' : 'do not differ'}); next cell\n`);
        break;
      }
      for (const protect of pairOrder(counted)) {
        if (counted.filter((r) => r.protect === protect).length > pairs) continue;
        const record = await runAndRecord(file, { variant, protect, kernel, node, memory }, `pair ${pairs + 1}/${target}`);
        if (record.outcome === 'unsupported') break;
        failuresInARow = COUNTED.has(record.outcome) ? 0 : failuresInARow + 1;
        if (failuresInARow >= 3) {
          process.stdout.write(`lab: ${cell}: 3 failed runs in a row; next cell\n`);
          break;
        }
        if (stopRequested) return 0;
      }
      if (failuresInARow >= 3) break;
    }
  }
  return 0;
}

async function main() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '1' },
      variant: { type: 'string', default: 'dirty' },
      kernel: { type: 'string', default: 'bookworm' },
      protect: { type: 'string', default: 'both' },
      node: { type: 'string', default: 'system' },
      memory: { type: 'string', default: '960' },
      results: { type: 'string', default: DEFAULT_RESULTS },
      summary: { type: 'boolean', default: false },
      stacks: { type: 'boolean', default: false },
      reclassify: { type: 'boolean', default: false },
      plot: { type: 'boolean', default: false },
      readme: { type: 'string' },
      out: { type: 'string' },
      campaign: { type: 'boolean', default: false },
      cells: { type: 'string', default: DEFAULT_CELLS.join(',') },
      'until-pairs': { type: 'string', default: '10' },
      'min-pairs': { type: 'string', default: '3' },
    },
  });
  const file = path.resolve(values.results);
  if (values.reclassify) {
    // Rewrites the derived fields of every record under the current definitions. Not while a campaign appends to the
    // file: a line appended between the read and the rename would be lost.
    // A record seen from the host has its dumps parsed again from the console text kept beside the results, so that
    // a better parser (scripts/lab/host-view.mjs) applies to old runs too.
    const reparsed = (r) => {
      const dumpsFile = r.hostView?.dumpsFile && path.join(path.dirname(file), r.hostView.dumpsFile);
      if (!dumpsFile || !fs.existsSync(dumpsFile)) return r;
      const again = hostViewOf({ ...r.hostView, dumps: parseDumps(fs.readFileSync(dumpsFile, 'utf8')) }, r.hostView.pids);
      return { ...r, kernel: r.kernel ?? again.kernelRelease, hostView: { ...r.hostView, ...again, dumpsFile: r.hostView.dumpsFile } };
    };
    const lines = readResults(file).map((r) => JSON.stringify(current(reparsed(r))));
    fs.writeFileSync(`${file}.tmp`, `${lines.join('\n')}\n`);
    fs.renameSync(`${file}.tmp`, file);
    process.stdout.write(`lab: ${lines.length} records re-classified in ${path.relative(process.cwd(), file)}\n`);
    return 0;
  }
  if (values.stacks) {
    process.stdout.write(`${stacks(readResults(file))}\n`);
    return 0;
  }
  if (values.summary || values.plot) {
    const records = readResults(file);
    if (values.plot) {
      const { writePlots } = await import('./lab/plot.mjs');
      const outDir = path.resolve(values.out ?? path.join(path.dirname(file), 'plots'));
      for (const p of await writePlots(records, outDir)) process.stdout.write(`lab: wrote ${path.relative(process.cwd(), p)}\n`);
    }
    if (values.summary && values.readme) {
      // The lab page's table, replaced between its markers, so that the page shows what the file holds.
      const readme = path.resolve(values.readme);
      const text = fs.readFileSync(readme, 'utf8');
      const begin = '<!-- summary:begin -->';
      const end = '<!-- summary:end -->';
      if (!text.includes(begin) || !text.includes(end)) throw new Error(`${readme} has no ${begin} ... ${end} markers`);
      fs.writeFileSync(readme, `${text.slice(0, text.indexOf(begin) + begin.length)}\n${summarize(records)}\n${text.slice(text.indexOf(end))}`);
      process.stdout.write(`lab: table written to ${path.relative(process.cwd(), readme)}\n`);
    } else if (values.summary) {
      process.stdout.write(`${summarize(records)}\n`);
      if (process.stdout.isTTY) process.stdout.write(`\n${sparklines(records)}\n`);
    }
    return 0;
  }
  const whole = (name, lo, hi) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`--${name} takes a whole number from ${lo} to ${hi}`);
    return n;
  };
  const runs = whole('runs', 1, 100);
  const untilPairs = whole('until-pairs', 1, 100);
  const minPairs = whole('min-pairs', 1, 100);
  if (!VARIANTS.includes(values.variant)) throw new Error(`--variant is ${VARIANTS.join(', ')}`);
  if (!['both', 'exec', 'none'].includes(values.protect)) throw new Error('--protect is both, exec or none');
  const cells = values.cells.split(',').filter(Boolean);
  for (const c of cells) {
    const [k, v] = c.split(':');
    if (!/^[a-z][a-z0-9-]*$/.test(k ?? '') || !VARIANTS.includes(v)) throw new Error(`--cells: "${c}" is not KERNEL:VARIANT (variants: ${VARIANTS.join(', ')})`);
  }
  const build = spawnSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', 'examples/nbd-server'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) return 1;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  stopOnSignals();
  if (values.campaign) return campaign(file, { cells, untilPairs, minPairs, node: values.node, memory: values.memory });
  for (let i = 0; i < runs && !stopRequested; i++) {
    const sides = values.protect === 'both' ? (i % 2 === 0 ? ['exec', 'none'] : ['none', 'exec']) : [values.protect];
    for (const protect of sides) {
      if (stopRequested) break;
      await runAndRecord(file, { variant: values.variant, protect, kernel: values.kernel, node: values.node, memory: values.memory }, `run ${i + 1}/${runs}`);
    }
  }
  process.stdout.write(`\n${summarize(readResults(file))}\n`);
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`lab-pressure: ${err.message}\n`);
      process.exitCode = 2;
    },
  );
}
