/**
 * `io-flusher status --wchan`: where each thread of a (stuck) daemon is. Threads parked in known places: a process
 * in nanosleep(2), and one blocked reading an empty pipe.
 */
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CLI = path.resolve(__dirname, '../dist/cli.js');
const status = (...args: string[]) => spawnSync(process.execPath, [CLI, 'status', ...args], { encoding: 'utf8' });

/** Waits until the process's main thread is asleep (state S) with a wchan, so the test does not race its start. */
function waitAsleep(pid: number): void {
  for (let i = 0; i < 200; i++) {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const wchan = fs.readFileSync(`/proc/${pid}/wchan`, 'latin1');
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'S' && wchan !== '0' && wchan !== '') return;
    spawnSync('sleep', ['0.05']);
  }
  throw new Error(`process ${pid} never went to sleep`);
}

/** Whether this user may read kernel stacks at all (root with CAP_SYS_ADMIN), judged on our own process. */
function stacksReadable(pid: number): boolean {
  try {
    fs.readFileSync(`/proc/${pid}/stack`);
    return true;
  } catch {
    return false;
  }
}

describe('io-flusher status --wchan', () => {
  let sleeper: ChildProcess;
  let reader: ChildProcess;
  beforeAll(() => {
    sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    // cat on a pipe nobody writes to: blocked in read(2).
    reader = spawn('cat', [], { stdio: ['pipe', 'ignore', 'ignore'] });
    waitAsleep(sleeper.pid!);
    waitAsleep(reader.pid!);
  });
  afterAll(() => {
    sleeper.kill('SIGKILL');
    reader.kill('SIGKILL');
  });

  it('--json gives each thread its state, wchan and (when readable) kernel stack', () => {
    const r = status(String(sleeper.pid), String(reader.pid), '--wchan', '--json');
    expect(r.status, r.stderr).toBe(0);
    const { processes } = JSON.parse(r.stdout) as { processes: Array<{ pid: number; threads: Array<{ tid: number; state: string; wchan: string | null; stack: string[] | null }> }> };
    const [sleeping, reading] = [processes[0]!.threads[0]!, processes[1]!.threads[0]!];
    expect(sleeping.state).toBe('S');
    expect(sleeping.wchan).toMatch(/nanosleep/);
    expect(reading.state).toBe('S');
    expect(reading.wchan).toMatch(/pipe|read|wait/);
    if (stacksReadable(sleeper.pid!)) {
      expect(sleeping.stack!.join(' ')).toMatch(/nanosleep/);
      expect(sleeping.stack!.every((frame) => !/\[<|\+0x/.test(frame))).toBe(true); // no addresses or offsets
    } else {
      expect(sleeping.stack).toBeNull();
    }
  });

  it('the table gains STATE and WCHAN columns and lists the kernel stacks below it', () => {
    const r = status(String(sleeper.pid), '--wchan');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/\bSTATE\s+WCHAN\b/);
    expect(r.stdout).toMatch(new RegExp(`^${sleeper.pid}\\s+sleep\\s.*\\sS\\s+\\S*nanosleep`, 'm'));
    if (stacksReadable(sleeper.pid!)) expect(r.stdout).toMatch(new RegExp(`kernel stacks:\\n  ${sleeper.pid} sleep \\[S\\]: \\S*nanosleep`));
    else expect(r.stdout).toMatch(/kernel stacks: not readable/);
  });

  it('without --wchan nothing changes: no wait fields, no extra columns', () => {
    const r = status(String(sleeper.pid), '--json');
    const thread = JSON.parse(r.stdout).processes[0].threads[0];
    expect(thread).not.toHaveProperty('wchan');
    expect(status(String(sleeper.pid)).stdout).not.toMatch(/WCHAN/);
  });
});
