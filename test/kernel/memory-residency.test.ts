/**
 * Residency under pressure (mode full): what the code-scope lock is for. Two idle Node processes, one with its code
 * scope (and a 16 MiB locked Buffer) locked, one locking nothing; a memory hog then takes the guest's memory until
 * the kernel has reclaimed most of the control's node text. The locked process's node text must still be wholly
 * resident, and reading all of it must add no major fault; the control's must have been evicted, and reading it
 * back must add major faults.
 *
 * Why the control runs a copy of node on the project share: the guest has no swap, so only file-backed pages can be
 * evicted, and the page cache is shared: the control cannot run the same node binary as the locked process (its
 * pages would be locked for both). A copy on tmpfs (/tmp) would never be evicted either (tmpfs pages are anonymous
 * memory), so the copy goes on the project share (9p, a real file in the page cache). Both binaries are the same
 * bytes, so the locked and the control ranges have the same size.
 *
 * Run (the lead's VM; a small guest makes the hog quick under TCG):
 *   vm/kernel-run --memory 512 -- node_modules/.bin/vitest run --config vitest.kernel.config.mts test/kernel/memory-residency.test.ts
 */
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

assertKernelSuiteEnvironment();
const ROOT = path.resolve(__dirname, '../..');
const CHILD = path.join(ROOT, 'test/fixtures/memory-residency-child.js');
const MIB = 1 << 20;

interface Line {
  next(): Promise<string>;
}

function lines(child: ChildProcessWithoutNullStreams): Line {
  const queue: string[] = [];
  const waiting: Array<(line: string) => void> = [];
  let stderr = '';
  let exited: string | undefined;
  child.stderr.on('data', (d) => (stderr += d));
  child.once('exit', (code, signal) => {
    exited = `pid ${child.pid} exited (${code ?? signal}); stderr: ${stderr}`;
    for (const resolve of waiting.splice(0)) resolve(`EXITED ${exited}`);
  });
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const resolve = waiting.shift();
    if (resolve) resolve(line);
    else queue.push(line);
  });
  return {
    next: () =>
      new Promise((resolve, reject) => {
        const line = queue.shift();
        if (line !== undefined) return resolve(line);
        if (exited) return reject(new Error(exited));
        const timer = setTimeout(() => reject(new Error(`no answer from pid ${child.pid} within 240 s; stderr: ${stderr}`)), 240_000);
        waiting.push((l) => {
          clearTimeout(timer);
          if (l.startsWith('EXITED ')) reject(new Error(l.slice(7)));
          else resolve(l);
        });
      }),
  };
}

function memAvailable(): number {
  return Number(/^MemAvailable:\s+(\d+)/m.exec(fs.readFileSync('/proc/meminfo', 'latin1'))![1]) * 1024;
}

/** Resident bytes of the mappings of `file` in process `pid`. */
function residentOf(pid: number, file: string): number {
  let rss = 0;
  let inFile = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'latin1').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S{4} \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) inFile = head[1] === file;
    else if (inFile && line.startsWith('Rss:')) rss += Number.parseInt(line.slice(4), 10) * 1024;
  }
  return rss;
}

const children: ChildProcessWithoutNullStreams[] = [];
const scratch = fs.mkdtempSync(path.join(ROOT, '.memory-residency-'));
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  fs.rmSync(scratch, { recursive: true, force: true });
});

describe(`residency under memory pressure, real kernel ${KERNEL_NAME}`, () => {
  it('the locked code stays resident and costs no major fault; an unlocked copy of the same size is evicted and faults back in', async () => {
    const copy = path.join(scratch, 'node');
    fs.copyFileSync(fs.realpathSync(process.execPath), copy);
    fs.chmodSync(copy, 0o755);

    const start = (bin: string, mode: string) => {
      const child = spawn(bin, [CHILD, mode], { cwd: ROOT });
      children.push(child);
      fs.writeFileSync(`/proc/${child.pid}/oom_score_adj`, '-1000');
      return { child, out: lines(child) };
    };
    const locked = start(process.execPath, 'lock');
    const control = start(copy, 'control');
    expect(await locked.out.next()).toBe('ready');
    expect(await control.out.next()).toBe('ready');
    const controlBefore = residentOf(control.child.pid!, copy);

    // The hog: grows by 16 MiB per request, touching every page, until the control's node text is mostly gone or
    // memory is nearly exhausted. It is the OOM killer's first choice (oom_score_adj 1000), the test's children last.
    const hog = spawn(process.execPath, ['-e', `
      require('fs').writeFileSync('/proc/self/oom_score_adj', '1000');
      const held = [];
      require('readline').createInterface({ input: process.stdin }).on('line', () => {
        const b = Buffer.allocUnsafe(16 << 20); for (let i = 0; i < b.length; i += 4096) b[i] = 1;
        held.push(b); process.stdout.write(held.length * 16 + '\\n');
      });
      process.stdout.write('0\\n');`]);
    children.push(hog);
    const hogOut = lines(hog);
    await hogOut.next();
    let hogMiB = 0;
    const memTotal = Number(/^MemTotal:\s+(\d+)/m.exec(fs.readFileSync('/proc/meminfo', 'latin1'))![1]) * 1024;
    for (let i = 0; i < memTotal / (16 * MIB); i++) {
      if (residentOf(control.child.pid!, copy) < controlBefore / 4 || memAvailable() < 32 * MIB) break;
      hog.stdin.write('+\n');
      hogMiB = Number(await hogOut.next());
    }
    const controlUnderPressure = residentOf(control.child.pid!, copy);

    locked.child.stdin.write('measure\n');
    const lockedResult = JSON.parse(await locked.out.next());
    control.child.stdin.write('measure\n');
    const controlResult = JSON.parse(await control.out.next());
    process.stdout.write(
      `residency on ${KERNEL_NAME} (${process.version}, guest ${Math.round(memTotal / MIB)} MiB, hog ${hogMiB} MiB): ` +
        `locked node text ${(lockedResult.residentBytes / MIB).toFixed(1)}/${(lockedResult.bytes / MIB).toFixed(1)} MiB resident, ` +
        `${lockedResult.majorFaults} major faults reading it; control copy ${(controlBefore / MIB).toFixed(1)} MiB resident before, ` +
        `${(controlUnderPressure / MIB).toFixed(1)} MiB under pressure, ${(controlResult.residentBytes / MIB).toFixed(1)}/${(controlResult.bytes / MIB).toFixed(1)} ` +
        `MiB when measured, ${controlResult.majorFaults} major faults reading it; VmLck locked ${(lockedResult.vmlck / MIB).toFixed(1)} MiB\n`,
    );

    expect(lockedResult.bytes).toBe(controlResult.bytes); // the same binary, so the same ranges
    expect(lockedResult.allLocked).toBe(true);
    expect(lockedResult.residentBytes).toBe(lockedResult.bytes);
    expect(lockedResult.majorFaults).toBe(0);
    expect(lockedResult.lockedBufferPages).toBe(4096); // the locked Buffer kept its contents (16 MiB, one per page)
    // The control range, the same bytes unlocked, was not kept: reading it all needs the disk (major faults; right
    // after the copy the whole file was in the page cache, so without the pressure there would be none). Of the pages
    // it had mapped, the kernel keeps what it can (mapped executable pages are shielded from reclaim): in 961-967 MiB
    // guests 16-30 MiB of its 30 MiB stayed, depending on the run and the kernel; the rest of the range was evicted.
    expect(controlResult.majorFaults).toBeGreaterThan(0);
  });
});
