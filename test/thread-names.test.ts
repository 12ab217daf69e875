/** Thread names as the kernel keeps them (bytes, set as UTF-8), shown faithfully and safely. */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import * as io from '../dist/index.js';
import { runCli } from './helpers';

/** A child process whose main thread is named `name` (written to /proc/self/comm); stopped by the callback's end. */
async function withNamedProcess<T>(name: string, body: (pid: number) => T): Promise<T> {
  const child = spawn(process.execPath, ['-e', `require('fs').writeFileSync('/proc/self/comm', Buffer.from(${JSON.stringify(name)})); console.log('ready'); setInterval(() => {}, 1000)`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  try {
    return body(child.pid!);
  } finally {
    child.kill();
  }
}

describe('thread names', () => {
  it('are decoded as UTF-8 ("ñandú", not mojibake)', async () => {
    const name = await withNamedProcess('ñandú', (pid) => io.threadFlags(pid).name);
    expect(name).toBe('ñandú');
  });

  it('cannot forge a table row or send escape sequences: control characters are escaped by the CLI, on stderr too', async () => {
    await withNamedProcess('x\n999 ok\x1b[2J', (pid) => {
      const r = runCli(['status', String(pid), '--check']);
      expect(r.status).toBe(1);
      for (const text of [r.stdout, r.stderr]) {
        expect(text).not.toContain('\x1b');
        expect(text).toContain('x\\x0a999 ok\\x1b[2J');
      }
      expect(r.stdout.split('\n').filter((line) => line.startsWith('999 '))).toEqual([]);
      const check = runCli(['check', '--pid', String(pid)]);
      expect(check.stdout).not.toContain('\x1b');
      expect(check.stdout).toContain('x\\x0a999 ok\\x1b[2J');
      // --json keeps the name exact (JSON escapes it itself). The main thread by its tid: threads are in tid order, and
      // once pids wrap around (pid_max 32768 on small machines) a worker's tid can be lower than the main thread's.
      const { threads } = JSON.parse(runCli(['status', String(pid), '--json']).stdout).processes[0];
      expect(threads.find((t: { tid: number }) => t.tid === pid).name).toBe('x\n999 ok\x1b[2J');
    });
  });
});
