/** `io-flusher check`: report, JSON, and exit statuses a script can rely on. */
import { describe, expect, it } from 'vitest';
import { holdsCapSysResource, runCli } from './helpers';

describe('io-flusher check', () => {
  const capable = holdsCapSysResource();

  it(`exits ${capable ? 0 : 3} here (kernel has it, capability ${capable ? 'held' : 'missing'}) and lists its threads`, () => {
    const r = runCli(['check']);
    expect(r.status).toBe(capable ? 0 : 3);
    expect(r.stdout).toMatch(/IO_FLUSHER present/);
    expect(r.stdout).toMatch(capable ? /verdict +available/ : /verdict +NOT permitted: CAP_SYS_RESOURCE is missing/);
    expect(r.stdout).toMatch(/threads of process \d+ \(\d+\):\nTID +NAME +FLAGS +IO_FLUSHER/);
  });

  it('--json gives the probe, exit code, verdict and threads', () => {
    const r = runCli(['check', '--json']);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ feature: 'present', backend: 'native', exitCode: r.status, capSysResource: capable });
    expect(out.threads.length).toBeGreaterThan(1);
    // The main thread by its tid (tid order puts it first only until pids wrap around).
    expect(out.threads.find((t: { tid: number }) => t.tid === out.pid)).toMatchObject({ tid: out.pid, emulated: false });
  });

  it('--pid lists another process', () => {
    const r = runCli(['check', '--json', '--pid', '1']);
    expect(JSON.parse(r.stdout).threads[0]).toMatchObject({ pid: 1, tid: 1 });
  });

  it('a missing process is a clear failure, exit 6 (as status answers it)', () => {
    const r = runCli(['check', '--pid', '4194303']);
    expect(r.status).toBe(6);
    expect(r.stderr).toMatch(/^io-flusher: no process 4194303: ESRCH: no such process, open '\/proc\/4194303\//);
  });

  it('the exit status is decided by the kernel, not by --backend emulated (which is marked NOT protected)', () => {
    const r = runCli(['check', '--backend', 'emulated']);
    expect(r.status).toBe(capable ? 0 : 3);
    expect(r.stdout).toMatch(/this thread +IO_FLUSHER (off|unknown \(refused\)) \(emulated: NOT protected\)/);
  });

  it('exit 5 when the addon cannot load', () => {
    const r = runCli(['check'], { IO_FLUSHER_BINDING: '/nonexistent.node' });
    expect(r.status).toBe(5);
    expect(r.stdout).toMatch(/addon +not loaded/);
  });

  it('a usage error is one line naming it, then where to get help (exit 2), as coreutils and git do', () => {
    const cases: Array<[string[], string]> = [
      [[], 'no command given'],
      [['frobnicate'], "unknown command 'frobnicate'"],
      [['check', '--pid'], "option '--pid' needs a value"],
      [['check', '--pid', 'x'], 'not a process id: x'],
      [['check', '--bogus'], "unknown option '--bogus'"],
      [['check', '--backend', 'kernel'], '--backend wants one of auto, native, emulated'],
      [['exec', '--nonsense', 'sh'], "unknown option '--nonsense'"],
    ];
    for (const [args, message] of cases) {
      const r = runCli(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toBe(`io-flusher: ${message}\nTry 'io-flusher --help' for more information.\n`);
    }
  });

  it('--help and --version', () => {
    expect(runCli(['--help'])).toMatchObject({ status: 0, stdout: expect.stringMatching(/io-flusher check/) });
    expect(runCli(['--version']).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
