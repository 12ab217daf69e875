/** `io-flusher exec`, `io-flusher status` and reexecWithIoFlusher() on this machine (EPERM here; emulator where it helps). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as io from '../dist/index.js';
import { CLI, holdsCapSysResource, ROOT, runCli, runNode } from './helpers';

const capable = holdsCapSysResource();
const EMULATED_CAPABLE = { IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: '1' };

describe('io-flusher exec', () => {
  it.runIf(!capable)('[without CAP_SYS_RESOURCE] fails with 125 and does not run COMMAND', () => {
    const r = runCli(['exec', '--', 'sh', '-c', 'echo ran']);
    expect(r.status).toBe(125);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/could not set IO_FLUSHER, so sh was not started: EPERM/);
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] --allow-unprotected warns, runs COMMAND, and passes its exit status on', () => {
    const r = runCli(['exec', '--allow-unprotected', '--', 'sh', '-c', 'echo ran; exit 42']);
    expect(r.status).toBe(42);
    expect(r.stdout).toBe('ran\n');
    expect(r.stderr).toMatch(/WARNING: sh runs WITHOUT IO_FLUSHER protection/);
  });

  it('--clear on a thread that is clear runs COMMAND with no flag, stdio and arguments intact', () => {
    const r = runCli(['exec', '--clear', '--', 'sh', '-c', 'cat /proc/self/stat; echo "$1|$2" >&2', 'sh', 'a b', 'c']);
    expect(r.status).toBe(0);
    const flags = Number(r.stdout.slice(r.stdout.lastIndexOf(')') + 2).split(' ')[6]);
    expect(flags & 0x180000).toBe(0);
    expect(r.stderr).toBe('a b|c\n');
  });

  it('emulated with the capability: COMMAND (a Node program) starts in the emulated state on every thread', () => {
    const r = runCli(
      ['exec', '--backend', 'emulated', '--', process.execPath, '-e', `const io=require(${JSON.stringify(ROOT + '/dist/index.js')});const e=io.createIoFlusher({backend:'emulated'});process.stdout.write(JSON.stringify(e.listThreads().map(t=>t.ioFlusher)))`],
      EMULATED_CAPABLE,
    );
    expect(r.status).toBe(0);
    const states = JSON.parse(r.stdout) as boolean[];
    expect(states.length).toBeGreaterThan(1);
    expect(states.every(Boolean)).toBe(true);
  });

  it('a missing or non-executable COMMAND is reported first (127, 126): no warning about running it unprotected', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iof-noexec-'));
    const plain = path.join(dir, 'not-executable');
    fs.writeFileSync(plain, '#!/bin/sh\necho ran\n', { mode: 0o644 });
    const garbage = path.join(dir, 'not-a-program');
    fs.writeFileSync(garbage, 'garbage\0\x01', { mode: 0o755 });
    try {
      const cases: Array<[string[], number, RegExp]> = [
        [['exec', '--', 'no-such-command-here'], 127, /^io-flusher: cannot run no-such-command-here: ENOENT: .*not found in PATH/],
        [['exec', '--allow-unprotected', '--', 'no-such-command-here'], 127, /cannot run no-such-command-here: ENOENT/],
        [['exec', '--backend', 'emulated', '--', 'no-such-command-here'], 127, /cannot run no-such-command-here: ENOENT/],
        [['exec', '--', plain], 126, /^io-flusher: cannot run .*not-executable: EACCES: .*not an executable file/],
        [['exec', '--allow-unprotected', '--', plain], 126, /cannot run .*not-executable: EACCES/],
        // execve's ENOEXEC (no interpreter line, not ELF): named as the kernel names it (libuv's table lacks it).
        [['exec', '--clear', '--', garbage], 126, /^io-flusher: cannot run .*not-a-program: ENOEXEC: exec format error/],
      ];
      for (const [args, status, message] of cases) {
        const r = runCli(args);
        expect(r.status, args.join(' ')).toBe(status);
        expect(r.stderr).toMatch(message);
        expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
        expect(r.stdout).toBe('');
      }
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('exit 127 for a missing command, 126 for one that cannot be executed, 2 without a command', () => {
    expect(runCli(['exec', '--clear', '--', 'no-such-command-here']).status).toBe(127);
    expect(runCli(['exec', '--clear', '--', '/etc/hostname']).status).toBe(126);
    expect(runCli(['exec', '--clear']).status).toBe(2);
  });

  it('passes stdio and --keep-fds descriptors on to COMMAND; other inherited descriptors stay closed', () => {
    const fdsSeen = (extra: string[]) => {
      const r = spawnSync(process.execPath, [CLI, 'exec', '--clear', ...extra, '--', 'sh', '-c', 'ls /proc/self/fd'], {
        stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
        encoding: 'utf8',
      });
      return r.stdout.split('\n').filter(Boolean).map(Number);
    };
    // `ls` itself opens one descriptor (its directory handle, fd 3 when 3 is free).
    const without = fdsSeen([]);
    const kept = fdsSeen(['--keep-fds', '3']);
    expect(without).toEqual(expect.arrayContaining([0, 1, 2]));
    expect(kept).toEqual(expect.arrayContaining([0, 1, 2, 3]));
    expect(kept.length).toBe(without.length + 1);
  });
});

describe('io-flusher status', () => {
  it('lists the threads of processes; --check fails naming threads that lack IO_FLUSHER', () => {
    const r = runCli(['status', '1', String(process.pid), '--json']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.processes.map((p: { pid: number }) => p.pid)).toEqual([1, process.pid]);
    const check = runCli(['status', String(process.pid), '--check']);
    expect(check.status).toBe(1); // the test process never set IO_FLUSHER on its threads
    expect(check.stderr).toMatch(new RegExp(`thread\\(s\\) lack IO_FLUSHER: ${process.pid}/${process.pid} `));
    expect(runCli(['status', '4194303']).status).toBe(6);
  });
});

describe('reexecWithIoFlusher()', () => {
  const script = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'iof-reexec-')), 'daemon.js');
  fs.writeFileSync(
    script,
    `const io = require(${JSON.stringify(ROOT + '/dist/index.js')});
     const r = io.reexecWithIoFlusher({ allowUnprotected: process.env.ALLOW === '1' });
     process.stdout.write(JSON.stringify({ reexecuted: r.reexecuted, unprotected: r.unprotectedThreads.length, error: r.error && r.error.code,
       argv: process.argv.slice(2), execArgv: process.execArgv, marker: process.env.MARKER, pid: process.pid }));`,
  );

  it('emulated with the capability: re-executes once, argv, execArgv and environment intact, every thread flagged', () => {
    const r = runNode(`require('child_process').execFileSync(process.execPath, ['--no-warnings', ${JSON.stringify(script)}, 'x y', '--z'], { stdio: 'inherit' })`, {
      ...EMULATED_CAPABLE,
      IO_FLUSHER_BACKEND: 'emulated',
      MARKER: 'kept',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ reexecuted: true, unprotected: 0, argv: ['x y', '--z'], execArgv: ['--no-warnings'], marker: 'kept' });
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] throws EPERM, or with allowUnprotected returns the error without re-executing', () => {
    const r = runNode(`require('child_process').execFileSync(process.execPath, [${JSON.stringify(script)}], { stdio: 'inherit' })`, { ALLOW: '1' });
    expect(JSON.parse(r.stdout)).toMatchObject({ reexecuted: false, error: 'EPERM' });
    const strict = runNode(`require(${JSON.stringify(script)})`);
    expect(strict.status).toBe(1);
    expect(strict.stderr).toMatch(/IoFlusherError: EPERM/);
  });
});

describe('io-flusher exec: options end at COMMAND', () => {
  it.runIf(!capable)("[without CAP_SYS_RESOURCE] COMMAND's own --allow-unprotected is not exec's: 125, COMMAND not run", () => {
    const r = runCli(['exec', 'sh', '-c', 'echo ran', '--allow-unprotected']);
    expect(r.status).toBe(125);
    expect(r.stdout).toBe('');
    const node = runCli(['exec', process.execPath, '-e', 'console.log("ran")', '--allow-unprotected']);
    expect(node.status).toBe(125);
    expect(node.stdout).toBe('');
  });

  it.runIf(!capable)("[without CAP_SYS_RESOURCE] COMMAND's own --clear is not exec's: exec still sets (and is refused)", () => {
    const r = runCli(['exec', 'sh', '-c', 'echo ran', 'x', '--clear']);
    expect(r.status).toBe(125);
    expect(r.stdout).toBe('');
  });

  it('everything from COMMAND on reaches COMMAND unchanged, options with separate values before it included', () => {
    const r = runCli(['exec', '--clear', '--backend', 'native', 'sh', '-c', 'printf "%s|" "$@"', 'sh', '--clear', '--allow-unprotected', '--', '-x', '--keep-fds', '3']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('--clear|--allow-unprotected|--|-x|--keep-fds|3|');
    const dashed = runCli(['exec', '--clear', '--', 'sh', '-c', 'printf "%s|" "$@"', 'sh', '--', '--clear']);
    expect(dashed.stdout).toBe('--|--clear|');
  });

  it('an unknown option before COMMAND is a usage error (2), not a command', () => {
    expect(runCli(['exec', '--clear', '-x', 'sh', '-c', 'true']).status).toBe(2);
    expect(runCli(['exec', '--nonsense', 'sh']).status).toBe(2);
  });
});

describe('io-flusher exec: what COMMAND inherits and how settings are checked', () => {
  it('a closed descriptor in --keep-fds is a usage error (2), and nothing runs', () => {
    const r = runCli(['exec', '--clear', '--keep-fds', '77', '--', 'sh', '-c', 'echo ran']);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--keep-fds 77: not an open descriptor/);
  });

  it('--memlock-limit 0 is applied (0 is a real limit); an out-of-range value is a usage error', () => {
    const r = runCli(['exec', '--clear', '--memlock-limit', '0', '--', 'sh', '-c', 'ulimit -l']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('0');
    expect(runCli(['exec', '--clear', '--memlock-limit', '99999999999999999G', '--', 'true']).status).toBe(2);
  });

  it("a LISTEN_FDS larger than what was passed never hands Node's own epoll, eventfd or pipe descriptors to COMMAND", () => {
    // sh's $$ is the pid node gets after `exec`, so LISTEN_PID names the io-flusher process, as systemd would.
    const r = spawnSync('sh', ['-c', `exec 3</dev/null; LISTEN_PID=$$ LISTEN_FDS=40 exec "${process.execPath}" "${CLI}" exec --clear -- sh -c 'ls -l /proc/self/fd'`], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/anon_inode|pipe:/);
    expect(r.stdout).toMatch(/ 3 -> \/dev\/null/); // the one really passed is kept
  });

  it('an inherited descriptor that is not named (here fd 200, above the range libuv closes) does not reach COMMAND', () => {
    const r = spawnSync('bash', ['-c', `exec 200</dev/null; exec "${process.execPath}" "${CLI}" exec --clear -- sh -c 'ls /proc/self/fd'`], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const fds = r.stdout.split('\n').filter(Boolean).map(Number);
    expect(fds).not.toContain(200);
    const kept = spawnSync('bash', ['-c', `exec 200</dev/null; exec "${process.execPath}" "${CLI}" exec --clear --keep-fds 200 -- sh -c 'ls /proc/self/fd'`], { encoding: 'utf8' });
    expect(kept.stdout.split('\n').filter(Boolean).map(Number)).toContain(200);
  });

  it('PATH search skips a match that is not executable, as execvp does', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iof-path-'));
    fs.mkdirSync(path.join(dir, 'a'));
    fs.mkdirSync(path.join(dir, 'b'));
    fs.writeFileSync(path.join(dir, 'a', 'iof-tool'), '#!/bin/sh\necho a\n', { mode: 0o644 });
    fs.writeFileSync(path.join(dir, 'b', 'iof-tool'), '#!/bin/sh\necho b\n', { mode: 0o755 });
    try {
      const r = runCli(['exec', '--clear', '--', 'iof-tool'], { PATH: `${dir}/a:${dir}/b:${process.env.PATH}` });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe('b\n');
      // Only a non-executable match: execve's EACCES, exit 126.
      expect(runCli(['exec', '--clear', '--', 'iof-tool'], { PATH: `${dir}/a` }).status).toBe(126);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });
});

describe('reexecWithIoFlusher(): options, marker and refusals', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iof-reexec2-'));
  const script = path.join(dir, 'daemon.js');
  fs.writeFileSync(
    script,
    `const io = require(${JSON.stringify(ROOT + '/dist/index.js')});
     let r; try { r = io.reexecWithIoFlusher({ allowUnprotected: process.env.ALLOW === '1' }); } catch (e) { process.stdout.write(JSON.stringify({ thrown: e.code })); process.exit(0); }
     const child = require('child_process').execFileSync(process.execPath, ['-p', 'process.env.IO_FLUSHER_REEXEC || "unset"'], { encoding: 'utf8' }).trim();
     process.stdout.write(JSON.stringify({ reexecuted: r.reexecuted, error: r.error && r.error.code, child }));`,
  );

  it('validates its options with Node codes; refused outside the main thread with a code', () => {
    const r = runNode(
      `const io = require('./dist/index.js'); const codes = [];
       for (const o of [null, 'x', { allowUnprotected: 'yes' }]) { try { io.reexecWithIoFlusher(o); } catch (e) { codes.push(e.code); } }
       const { Worker } = require('node:worker_threads');
       const w = new Worker("try { require(" + JSON.stringify(process.cwd() + '/dist/index.js') + ").reexecWithIoFlusher(); } catch (e) { require('node:worker_threads').parentPort.postMessage(e.code); }", { eval: true });
       w.once('message', (code) => { codes.push(code); process.stdout.write(JSON.stringify(codes)); w.terminate(); });`,
      { IO_FLUSHER_BACKEND: 'emulated', NODE_NO_WARNINGS: '1' },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(['ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_TYPE', 'ERR_WORKER_UNSUPPORTED_OPERATION']);
  });

  it("the marker does not leak to the re-executed program's children", () => {
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, ...EMULATED_CAPABLE, IO_FLUSHER_BACKEND: 'emulated', NODE_NO_WARNINGS: '1' } });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ reexecuted: true, child: 'unset' });
  });

  it.runIf(!capable)('[without CAP_SYS_RESOURCE] a stale marker naming this pid never reports success with nothing set', () => {
    // sh's $$ is the pid node runs as after `exec`: the marker names it, as an inherited stale one could.
    const r = spawnSync('sh', ['-c', `IO_FLUSHER_REEXEC=$$ ALLOW=1 exec "${process.execPath}" "${script}"`], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ reexecuted: false, error: 'EPERM' });
  });

  it('a program read from stdin is refused with a clear error instead of re-executing into an empty stdin', () => {
    const r = spawnSync(process.execPath, [], {
      input: `const io = require(${JSON.stringify(ROOT + '/dist/index.js')}); try { io.reexecWithIoFlusher(); } catch (e) { process.stdout.write(e.code + ': ' + e.message); }`,
      encoding: 'utf8',
      env: { ...process.env, ...EMULATED_CAPABLE, IO_FLUSHER_BACKEND: 'emulated', NODE_NO_WARNINGS: '1' },
    });
    expect(r.stdout).toMatch(/^ERR_IO_FLUSHER_REEXEC_STDIN: .*stdin/);
  });
});

describe('probe() never throws; a bad IO_FLUSHER_* value names the variable', () => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ IO_FLUSHER_BACKEND: 'x' }, 'ERR_INVALID_IO_FLUSHER_BACKEND'],
    [{ IO_FLUSHER_BACKEND: 'emulated', IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE: 'x' }, 'ERR_INVALID_IO_FLUSHER_EMULATED_CAP_SYS_RESOURCE'],
    [{ IO_FLUSHER_BACKEND: 'emulated', IO_FLUSHER_EMULATED_KERNEL_SUPPORT: 'maybe' }, 'ERR_INVALID_IO_FLUSHER_EMULATED_KERNEL_SUPPORT'],
    [{ IO_FLUSHER_BACKEND: 'emulated', IO_FLUSHER_EMULATED_FLAGS: 'zz' }, 'ERR_INVALID_IO_FLUSHER_EMULATED_FLAGS'],
  ];
  for (const [env, code] of cases) {
    it(`${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')}: probe() answers, other calls throw ${code}`, () => {
      const r = runNode(
        `const io = require('./dist/index.js'); const p = io.probe(); let code; try { io.getIoFlusher(); } catch (e) { code = e.code; }
         process.stdout.write(JSON.stringify({ backend: p.backend, reason: p.backendReason, code }));`,
        { ...env, NODE_NO_WARNINGS: '1' },
      );
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out).toMatchObject({ backend: null, code });
      expect(out.reason).toContain(Object.keys(env).at(-1)!);
    });
  }

  it('a non-boolean emulator capSysResource is a TypeError, not a capability held', () => {
    expect(() => io.createIoFlusher({ backend: 'emulated', emulator: { capSysResource: 'no' as unknown as boolean } })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
    );
  });
});
