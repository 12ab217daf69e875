#!/usr/bin/env node
// io-flusher benchmarks: a program that prints figures and ratios (never a test). Each figure is the median of
// several repetitions, measured side by side in one run. Usage: node bench/run.mjs [--json] [--quick]
// On the host every prctl is refused (EPERM: no CAP_SYS_RESOURCE), so call costs there are the refused path; inside
// the VM (vm/kernel-run -- node bench/run.mjs) they are the success path. Absolute times in the VM are inflated
// by software emulation; the ratios are what count.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');
const REPEATS = quick ? 3 : 7;
const ITER = quick ? 20000 : 200000;

const io = require(path.join(root, 'dist/index.js'));
const { loadNativeBinding } = require(path.join(root, 'dist/native-binding.js'));
const native = loadNativeBinding();
if (!native.loaded) throw new Error(native.error);
const binding = native.binding;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
function perCall(fn, iterations = ITER) {
  const samples = [];
  for (let r = 0; r < REPEATS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  return median(samples);
}
const results = { host: os.hostname(), kernel: os.release(), node: process.version, cpus: os.cpus()[0]?.model, capSysResource: io.capabilities().sysResource };

// The C and C++ programs the figures are measured against, compiled here (cached in the temp directory until a
// source changes). `sources`: more files linked in (broadcast-anchor links io-flusher's native core).
function buildC(name, flags = [], sources = []) {
  const out = path.join(os.tmpdir(), `io-flusher-${name}-${process.getuid?.() ?? 0}`);
  const file = ['.c', '.cc'].map((ext) => path.join(root, `bench/${name}${ext}`)).find((f) => fs.existsSync(f));
  const linked = sources.map((s) => path.join(root, s));
  const inputs = [file, path.join(root, 'bench/timing.h'), ...linked, ...linked.map((s) => s.replace(/\.cc$/, '.h')).filter((h) => fs.existsSync(h))];
  const newest = Math.max(...inputs.map((f) => fs.statSync(f).mtimeMs));
  const compiler = file.endsWith('.cc') ? ['c++', ['-std=c++17']] : ['cc', []];
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < newest) {
    execFileSync(compiler[0], ['-O2', ...compiler[1], ...flags, '-o', out, file, ...linked]);
  }
  return out;
}

// 1. GET and SET per call, side by side.
const floor = JSON.parse(execFileSync(buildC('prctl-floor'), [String(ITER), String(REPEATS)], { encoding: 'utf8' }));
let koffiGet = null;
let koffiSet = null;
// glibc's setxid broadcast in this process, over the same threads as setProcessIoFlusher() (koffi calls libc's
// setresuid; -1 keeps every id, and glibc still signals every thread): the like-for-like anchor, over Node's threads
// rather than C threads asleep in pause().
let glibcSetxidHere = null;
try {
  const koffi = require('koffi');
  const libc = koffi.load('libc.so.6');
  const prctl = libc.func('int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)');
  const setresuid = libc.func('int setresuid(unsigned int, unsigned int, unsigned int)');
  glibcSetxidHere = () => {
    if (setresuid(0xffffffff, 0xffffffff, 0xffffffff) !== 0) throw new Error('setresuid(-1, -1, -1) failed');
  };
  koffiGet = perCall(() => prctl(58, 0, 0, 0, 0));
  koffiSet = perCall(() => prctl(57, 0, 0, 0, 0));
} catch (err) {
  results.koffiError = String(err.message ?? err);
}
const emu = io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: true } });
const refused = binding.getIoFlusher() < 0;
const calls = {
  floorGetNs: floor.getNs,
  floorSetNs: floor.setNs,
  kernelAnswer: floor.getResult < 0 ? `errno ${-floor.getResult}` : `ok (${floor.getResult})`,
  nativeGetNs: perCall(() => binding.getIoFlusher()),
  nativeSetNs: perCall(() => binding.setIoFlusher(0)),
  koffiGetNs: koffiGet,
  koffiSetNs: koffiSet,
  emulatorGetNs: perCall(() => emu.kernel.get()),
  emulatorSetNs: perCall(() => emu.kernel.set(0)),
};
// The public API: on the success path a plain call; on the refused path it builds and throws an IoFlusherError.
const publicGet = io.createIoFlusher({ backend: 'native' });
calls.publicGetNs = perCall(() => {
  try {
    publicGet.getIoFlusher();
  } catch {
    /* refused: the error's construction is what this measures */
  }
}, refused ? ITER / 20 : ITER);
calls.publicSetVerifiedNs = refused ? null : perCall(() => publicGet.setIoFlusher(false), ITER / 4);
calls.errorConstructionNs = refused ? calls.publicGetNs - calls.nativeGetNs : null;
results.calls = calls;

// 2. Process-wide set and listThreads() against thread count (Workers idle in their event loop), each beside its
// anchors with the same number of threads: glibc's setxid broadcast (setresuid with unchanged ids signals every thread
// and waits for each) in a C process (bench/broadcast-anchor.cc) and in this very process, and a C loop reading every
// /proc/self/task/TID/stat. io-flusher's and the in-process glibc samples alternate, so both see the same machine.
const anchorBinary = buildC('broadcast-anchor', ['-pthread'], ['native/thread_broadcast.cc', 'native/prctl_io_flusher.cc', 'native/process_exec.cc']);
const anchorAt = (threads) => JSON.parse(execFileSync(anchorBinary, [String(threads), String(REPEATS), quick ? '10' : '40'], { encoding: 'utf8' }));
const timedMs = (fn) => median(Array.from({ length: REPEATS }, () => {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}));
const setAll = (enabled) => {
  try {
    return io.setProcessIoFlusher(enabled);
  } catch (err) {
    if (!err.report) throw err;
    return err.report; // refused (EPERM): the broadcast still ran on every thread
  }
};
const workers = [];
const sweep = [];
// IO_FLUSHER_BENCH_WORKERS=1,4,16 chooses the counts (256 Workers need about 3 GiB, more than a small VM has).
const workerCounts = process.env.IO_FLUSHER_BENCH_WORKERS?.split(',').map(Number) ?? (quick ? [1, 16] : [1, 64, 256]);
const PROCESS_WIDE_REPEATS = quick ? 7 : 21;
// The first call of the process, timed on its own: it also learns which thread blocks the signal (Node's watchdog),
// waiting about 2 ms for it, and compiles the code on its path.
let firstCall = null;
for (const count of workerCounts) {
  while (workers.length < count) {
    const w = new Worker('require("node:worker_threads").parentPort.on("message", () => {})', { eval: true });
    await new Promise((r) => w.once('online', r));
    workers.push(w);
  }
  if (firstCall === null) {
    const t0 = performance.now();
    const report = setAll(false);
    firstCall = { threads: report.threads.length, ms: performance.now() - t0 };
  } else {
    setAll(false); // not timed: new threads seen for the first time
  }
  const samples = [];
  const glibcHere = [];
  let report;
  for (let r = 0; r < PROCESS_WIDE_REPEATS; r++) {
    let t0 = performance.now();
    report = setAll(r % 2 === 0);
    samples.push(performance.now() - t0);
    if (glibcSetxidHere) {
      t0 = performance.now();
      glibcSetxidHere();
      glibcHere.push(performance.now() - t0);
    }
  }
  const threads = report.threads.length;
  const ms = median(samples);
  const listMs = timedMs(() => io.listThreads());
  // After the io-flusher figures: a call made just after the anchor process (hundreds of threads) has exited measured
  // several times slower here, so the two are not interleaved.
  const anchor = anchorAt(threads);
  sweep.push({
    workers: count,
    threads,
    reached: report.threads.filter((t) => t.via === 'signal' || t.via === 'direct').length,
    totalMs: ms,
    perThreadUs: (ms * 1000) / threads,
    glibcSetxidPerThreadUs: anchor.setxidPerThreadUs,
    glibcSetxidHerePerThreadUs: glibcHere.length ? (median(glibcHere) * 1000) / threads : null,
    nativeCorePerThreadUs: anchor.nativeCorePerThreadUs,
    listMs,
    cListMs: anchor.listMs,
  });
}
results.firstCall = firstCall;
results.processWide = sweep;

// 3. Listing the flags of every thread of a process with 256+ threads (this one, with its Workers).
results.listThreads = { threads: io.listThreads().length, ms: timedMs(() => io.listThreads()) };
await Promise.all(workers.map((w) => w.terminate()));

// 4. `io-flusher exec` overhead: time until the child's first line, against running it directly.
async function firstLineMs(cmd, args) {
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  const ms = performance.now() - t0;
  await new Promise((r) => child.once('exit', r));
  return ms;
}
const cli = path.join(root, 'dist/cli.js');
const execArgs = ['exec', refused ? '--allow-unprotected' : '--clear', '--'];
const childNode = [process.execPath, '-e', 'console.log(1)'];
const exec = {};
for (const [label, cmd, args] of [
  ['direct sh', 'sh', ['-c', 'echo 1']],
  ['via io-flusher exec, sh', process.execPath, [cli, ...execArgs, 'sh', '-c', 'echo 1']],
  ['direct node', childNode[0], childNode.slice(1)],
  ['via io-flusher exec, node', process.execPath, [cli, ...execArgs, ...childNode]],
]) {
  const samples = [];
  for (let r = 0; r < REPEATS; r++) samples.push(await firstLineMs(cmd, args));
  exec[label] = median(samples);
}
results.exec = exec;

// 5. Module load: import to first call, and the resident memory it adds, in fresh processes.
const loadProbe = `
  const rss0 = process.memoryUsage().rss; const t0 = process.hrtime.bigint();
  const io = require(${JSON.stringify(path.join(root, 'dist/index.js'))});
  try { io.getIoFlusher(); } catch {}
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(JSON.stringify({ ms, rssKiB: (process.memoryUsage().rss - rss0) / 1024 }));`;
const loads = Array.from({ length: REPEATS }, () => JSON.parse(spawnSync(process.execPath, ['-e', loadProbe], { encoding: 'utf8' }).stdout));
results.moduleLoad = { ms: median(loads.map((l) => l.ms)), rssKiB: median(loads.map((l) => l.rssKiB)) };

// Report.
const ratio = (a, b) => (a == null || b == null ? 'n/a' : `${(a / b).toFixed(2)}x`);
const ns = (v) => (v == null ? 'n/a' : `${v.toFixed(1)} ns`);
if (json) {
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
} else {
  const c = results.calls;
  const last = results.processWide.at(-1);
  const lines = [
    `io-flusher benchmarks: kernel ${results.kernel}, node ${results.node}, ${results.cpus}; CAP_SYS_RESOURCE ${results.capSysResource ? 'held' : 'missing'} (prctl answers ${c.kernelAnswer})`,
    `medians of ${REPEATS} repetitions`,
    '',
    'per call                     GET            vs floor  vs koffi   SET            vs floor',
    `C loop (floor)               ${ns(c.floorGetNs).padEnd(14)} 1.00x     -          ${ns(c.floorSetNs).padEnd(14)} 1.00x`,
    `native binding               ${ns(c.nativeGetNs).padEnd(14)} ${ratio(c.nativeGetNs, c.floorGetNs).padEnd(9)} ${ratio(c.nativeGetNs, c.koffiGetNs).padEnd(10)} ${ns(c.nativeSetNs).padEnd(14)} ${ratio(c.nativeSetNs, c.floorSetNs)}`,
    `koffi -> libc prctl          ${ns(c.koffiGetNs).padEnd(14)} ${ratio(c.koffiGetNs, c.floorGetNs).padEnd(9)} 1.00x      ${ns(c.koffiSetNs).padEnd(14)} ${ratio(c.koffiSetNs, c.floorSetNs)}`,
    `emulator                     ${ns(c.emulatorGetNs).padEnd(14)} ${ratio(c.emulatorGetNs, c.floorGetNs).padEnd(9)} ${ratio(c.emulatorGetNs, c.koffiGetNs).padEnd(10)} ${ns(c.emulatorSetNs).padEnd(14)} ${ratio(c.emulatorSetNs, c.floorSetNs)}`,
    `public getIoFlusher()        ${ns(c.publicGetNs).padEnd(14)} ${ratio(c.publicGetNs, c.floorGetNs).padEnd(9)} ${refused ? '(refused: includes building and throwing IoFlusherError)' : ''}`,
    refused ? `  of which the JS error      ${ns(c.errorConstructionNs)}` : `public setIoFlusher() + verify ${ns(c.publicSetVerifiedNs)}`,
    '',
    `process-wide set, per thread (medians of ${PROCESS_WIDE_REPEATS})`,
    'threads  reached  io-flusher   glibc setxid (C process)  vs it   glibc setxid (this process)  vs it',
    ...results.processWide.map((p) => `${String(p.threads).padEnd(8)} ${String(p.reached).padEnd(8)} ${p.perThreadUs.toFixed(1).padStart(7)} us   ${p.glibcSetxidPerThreadUs.toFixed(1).padStart(9)} us              ${ratio(p.perThreadUs, p.glibcSetxidPerThreadUs).padEnd(7)} ${(p.glibcSetxidHerePerThreadUs == null ? 'n/a' : `${p.glibcSetxidHerePerThreadUs.toFixed(1)} us`).padStart(9)}                    ${ratio(p.perThreadUs, p.glibcSetxidHerePerThreadUs)}`),
    'the floors, per thread: io-flusher\'s native core (every guarantee, no Node, no JavaScript) over the C process\'s threads, and glibc over Node\'s threads',
    'threads  native core, C process  vs glibc there   glibc here vs glibc in C (Node\'s threads)',
    ...results.processWide.map((p) => `${String(p.threads).padEnd(8)} ${p.nativeCorePerThreadUs.toFixed(1).padStart(8)} us              ${ratio(p.nativeCorePerThreadUs, p.glibcSetxidPerThreadUs).padEnd(16)} ${ratio(p.glibcSetxidHerePerThreadUs, p.glibcSetxidPerThreadUs)}`),
    `first call of the process (${results.firstCall.threads} threads, learns the thread that blocks every signal): ${results.firstCall.ms.toFixed(2)} ms`,
    '',
    'listThreads()                threads  io-flusher   C /proc/self/task/*/stat  vs C',
    ...results.processWide.map((p) => `                             ${String(p.threads).padEnd(8)} ${p.listMs.toFixed(3).padStart(7)} ms  ${p.cListMs.toFixed(3).padStart(9)} ms               ${ratio(p.listMs, p.cListMs)}`),
    '',
    `listThreads() of ${results.listThreads.threads} threads: ${results.listThreads.ms.toFixed(2)} ms`,
    '',
    'time to first line           ' + Object.entries(results.exec).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join('; '),
    `  exec overhead: sh +${(results.exec['via io-flusher exec, sh'] - results.exec['direct sh']).toFixed(1)} ms, node +${(results.exec['via io-flusher exec, node'] - results.exec['direct node']).toFixed(1)} ms`,
    '',
    `module load (require to first call): ${results.moduleLoad.ms.toFixed(2)} ms, +${results.moduleLoad.rssKiB.toFixed(0)} KiB RSS`,
    '',
    'targets: native GET <= 1.25x floor and <= 0.8x koffi; process-wide <= 1.5x glibc setxid per thread (C process and this process); listThreads() <= 2x the C loop',
    `  native GET ${ratio(c.nativeGetNs, c.floorGetNs)} floor, ${ratio(c.nativeGetNs, c.koffiGetNs)} koffi; process-wide at ${last.workers} workers ${last.perThreadUs.toFixed(1)} us/thread, ${ratio(last.perThreadUs, last.glibcSetxidPerThreadUs)} glibc (C process), ${ratio(last.perThreadUs, last.glibcSetxidHerePerThreadUs)} glibc (this process); listing ${results.listThreads.threads} threads ${results.listThreads.ms.toFixed(2)} ms`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
