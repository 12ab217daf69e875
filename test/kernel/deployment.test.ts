/**
 * Mode full: the systemd unit of docs/deployment.md (docs/deployment/storage-daemon.service), proven on a real
 * kernel. systemd does not run in the VM, so the test gives a daemon the process state the unit asks systemd for,
 * made with util-linux's tools as root, in the order systemd's exec setup applies it: prlimit for LimitMEMLOCK=,
 * choom for OOMScoreAdjust=, setpriv for User=/Group= (uid and gid 65534 here: the unit's user does not exist in the
 * guest), CapabilityBoundingSet=, AmbientCapabilities= and NoNewPrivileges=. Each setting is read from the unit file,
 * so a change there changes what is proven here. ExecStart= (io-flusher exec with the unit's options) then starts a
 * Node daemon that reports its own state after starting a Worker and libuv's pool. Also proven: the pattern
 * docs/deployment.md gives for containers (root sets the state, then drops to a user with no capability).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readUnit, refusalLine } from '../../scripts/check-docs.mjs';
import { assertKernelSuiteEnvironment, KERNEL_NAME } from './environment';

assertKernelSuiteEnvironment();
const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'dist/cli.js');
const UNIT = readUnit(path.join(ROOT, 'docs/deployment/storage-daemon.service'));
const DAEMON_ID = '65534';
const IO_FLUSHER_FLAGS = 0x180000;
const CAP_SYS_RESOURCE_MASK = 1n << 24n;

// The daemon: a Worker and an fs call (libuv's pool of 4) first, so threads started after exec are checked too.
const DAEMON_SOURCE = `'use strict';
const fs = require('node:fs');
const { Worker } = require('node:worker_threads');
const field = (text, name) => new RegExp('^' + name + ':[ \\\\t]*(.*)$', 'm').exec(text)?.[1].trim();
const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
worker.once('online', () => fs.readFile(__filename, () => {
  const status = fs.readFileSync('/proc/self/status', 'latin1');
  const threads = fs.readdirSync('/proc/self/task').map((tid) => {
    const stat = fs.readFileSync('/proc/self/task/' + tid + '/stat', 'latin1');
    return { tid: Number(tid), flags: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[6]) };
  });
  process.stdout.write(JSON.stringify({
    uid: field(status, 'Uid'), gid: field(status, 'Gid'), groups: field(status, 'Groups'),
    capEff: field(status, 'CapEff'), capPrm: field(status, 'CapPrm'), capAmb: field(status, 'CapAmb'), capBnd: field(status, 'CapBnd'),
    noNewPrivs: field(status, 'NoNewPrivs'), vmLck: field(status, 'VmLck'),
    oomScoreAdj: fs.readFileSync('/proc/self/oom_score_adj', 'latin1').trim(),
    memlock: /^Max locked memory\\s+(\\S+)\\s+(\\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'latin1')).slice(1),
    threads,
  }));
  process.exit(0);
}));
`;

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'deployment-'));
fs.chmodSync(work, 0o755); // the daemon runs as uid 65534 and must read its script
const daemon = path.join(work, 'daemon.js');
fs.writeFileSync(daemon, DAEMON_SOURCE, { mode: 0o644 });
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** A capability name of a unit (CAP_SYS_RESOURCE) as setpriv spells it (sys_resource). */
const setprivCap = (name: string): string => name.replace(/^CAP_/, '').toLowerCase();

/** LimitMEMLOCK= in bytes (systemd's K, M, G suffixes are powers of 1024), or 'unlimited'. */
function memlockBytes(value: string): string {
  if (value === 'infinity') return 'unlimited';
  const m = /^(\d+)([KMG]?)$/.exec(value);
  if (!m) throw new Error(`LimitMEMLOCK=${value}: not a form this test knows`);
  return String(Number(m[1]) * 1024 ** ' KMG'.indexOf(m[2] || ' '));
}

/**
 * The command systemd would run for the unit: its resource and credential settings as util-linux commands, then
 * ExecStart= with io-flusher's bin replaced by this checkout's CLI and the daemon by the test's own.
 */
function unitCommand(options: { ambient: boolean }): string[] {
  const s = UNIT.service;
  const bounding = s.CapabilityBoundingSet!.split(/\s+/).map(setprivCap);
  const ambient = options.ambient ? s.AmbientCapabilities!.split(/\s+/).map(setprivCap) : [];
  const memlock = memlockBytes(s.LimitMEMLOCK!);
  const execStart = s.ExecStart!.split(/\s+/);
  const separator = execStart.indexOf('--');
  const execOptions = execStart.slice(2, separator); // after ".../io-flusher exec"
  return [
    'prlimit', `--memlock=${memlock}:${memlock}`, '--',
    'choom', '-n', s.OOMScoreAdjust!, '--',
    'setpriv', `--reuid=${DAEMON_ID}`, `--regid=${DAEMON_ID}`, '--clear-groups',
    `--bounding-set=-all,${bounding.map((c) => `+${c}`).join(',')}`,
    ...(ambient.length ? [`--inh-caps=-all,+${ambient.join(',+')}`, `--ambient-caps=-all,+${ambient.join(',+')}`] : []),
    ...(s.NoNewPrivileges === 'yes' ? ['--no-new-privs'] : []),
    '--',
    process.execPath, CLI, 'exec', ...execOptions, '--', process.execPath, daemon,
  ];
}

function run(command: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(command[0]!, command.slice(1), { cwd: work, encoding: 'utf8', timeout: 240_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe(`the systemd unit of docs/deployment.md, real kernel ${KERNEL_NAME}`, () => {
  it('the unit asks for what this test reproduces: a non-root user, CAP_SYS_RESOURCE ambient and bounding, no new privileges, io-flusher exec', () => {
    expect(UNIT.service).toMatchObject({
      AmbientCapabilities: 'CAP_SYS_RESOURCE',
      CapabilityBoundingSet: 'CAP_SYS_RESOURCE',
      NoNewPrivileges: 'yes',
    });
    expect(UNIT.service.User).not.toMatch(/^(root|0)$/);
    expect(UNIT.service.ExecStart).toMatch(/\/io-flusher exec .*-- /);
  });

  it('non-root, CAP_SYS_RESOURCE only ambient (as systemd gives it): io-flusher exec protects every thread, later ones too', () => {
    const r = run(unitCommand({ ambient: true }));
    expect(r.status, `${r.stderr}\nstdout: ${r.stdout}`).toBe(0);
    const out = JSON.parse(r.stdout);
    process.stdout.write(
      `deployment unit on ${KERNEL_NAME}: uid ${out.uid}, CapEff ${out.capEff}, CapAmb ${out.capAmb}, NoNewPrivs ${out.noNewPrivs}, ` +
        `VmLck ${out.vmLck}, oom_score_adj ${out.oomScoreAdj}, ${out.threads.length} threads\n`,
    );
    expect(out.uid.split(/\s+/)).toEqual([DAEMON_ID, DAEMON_ID, DAEMON_ID, DAEMON_ID]);
    expect(out.gid.split(/\s+/)).toEqual([DAEMON_ID, DAEMON_ID, DAEMON_ID, DAEMON_ID]);
    expect(out.groups ?? '').toBe('');
    // CAP_SYS_RESOURCE and nothing else, in every set the daemon has: what AmbientCapabilities= and the bounding set give.
    for (const set of [out.capEff, out.capPrm, out.capAmb, out.capBnd]) expect(BigInt(`0x${set}`)).toBe(CAP_SYS_RESOURCE_MASK);
    expect(out.noNewPrivs).toBe('1');
    expect(out.oomScoreAdj).toBe(UNIT.service.OOMScoreAdjust);
    expect(out.memlock).toEqual([memlockBytes(UNIT.service.LimitMEMLOCK!), memlockBytes(UNIT.service.LimitMEMLOCK!)]);
    if (/ --mlock[ =]/.test(UNIT.service.ExecStart!)) expect(Number.parseInt(out.vmLck, 10)).toBeGreaterThan(0);
    // main + V8's + the Worker + libuv's pool: at least 11 threads, and every one in IO_FLUSHER state.
    expect(out.threads.length).toBeGreaterThanOrEqual(11);
    expect(out.threads.filter((t: { flags: number }) => (t.flags & IO_FLUSHER_FLAGS) !== IO_FLUSHER_FLAGS)).toEqual([]);
  });

  it('root sets the state and then drops to a user without any capability (a non-root container): every thread protected', () => {
    // docs/deployment.md's pattern for containers, whose engines give a non-root user no capability: the state is
    // a task flag, kept across setresuid and execve; the capability is not needed once it is set.
    const r = run([
      process.execPath, CLI, 'exec', '--',
      'setpriv', `--reuid=${DAEMON_ID}`, `--regid=${DAEMON_ID}`, '--clear-groups', '--bounding-set=-all', '--inh-caps=-all', '--',
      process.execPath, daemon,
    ]);
    expect(r.status, `${r.stderr}\nstdout: ${r.stdout}`).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.uid.split(/\s+/)).toEqual([DAEMON_ID, DAEMON_ID, DAEMON_ID, DAEMON_ID]);
    for (const set of [out.capEff, out.capPrm, out.capAmb, out.capBnd]) expect(BigInt(`0x${set}`)).toBe(0n);
    expect(out.threads.length).toBeGreaterThanOrEqual(11);
    expect(out.threads.filter((t: { flags: number }) => (t.flags & IO_FLUSHER_FLAGS) !== IO_FLUSHER_FLAGS)).toEqual([]);
  });

  it('without the ambient capability: exit 125, the daemon never starts, and stderr is the refusal docs/cli.md shows', () => {
    const r = run(unitCommand({ ambient: false }));
    expect(r.status, r.stderr).toBe(125);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${refusalLine(path.join(ROOT, 'docs/cli.md'), process.execPath)}\n`);
  });
});
