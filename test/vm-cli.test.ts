/**
 * `io-flusher vm` on the host: the command line reaches the shipped runner (vm/kernel-run) and its usage errors
 * come back before anything is fetched or booted. Booting a VM from an installed copy is proven by
 * `npm run test:pack` (the user's own test file runs in the guest) and the kernel suite.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';

const CLI = path.resolve(__dirname, '../dist/cli.js');
const run = (args: string[], cwd?: string) =>
  spawnSync(process.execPath, [CLI, 'vm', ...args], { encoding: 'utf8', cwd, env: { ...process.env, IO_FLUSHER_VM_CACHE: '/nonexistent/never-created' } });

describe('io-flusher vm (command line)', () => {
  it('--help describes the runner under its own name, with --node, --project and --accel', () => {
    const r = run(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: io-flusher vm \[OPTIONS\] -- COMMAND/);
    for (const option of ['--kernel', '--mode', '--node', '--project', '--accel', '--prepare', '--memory', '--timeout']) {
      expect(r.stdout).toContain(option);
    }
  });

  it.each([
    [['--bogus'], /unknown option '--bogus'/],
    [['--node', 'latest', '--', 'true'], /bad --node 'latest'/],
    [['--accel', 'hvf', '--', 'true'], /bad --accel 'hvf'/],
    [['--mode', 'rootless', '--', 'true'], /bad --mode 'rootless'/],
    [['--project', '/nonexistent/project', '--', 'true'], /--project \/nonexistent\/project is not a directory/],
    [['--monitor', 'mon.sock', '--', 'true'], /bad --monitor 'mon.sock'/],
    [['--monitor', '/tmp/a,server=off', '--', 'true'], /bad --monitor/],
    // 60 characters, 120 bytes: a socket path's limit is in bytes.
    [['--monitor', `/tmp/${'é'.repeat(60)}`, '--', 'true'], /at most 107 bytes/],
    [['--monitor', '/nonexistent/dir/mon.sock', '--', 'true'], /no such directory/],
    [[], /no command given/],
  ])('usage error %j: exit 2 naming "io-flusher vm", before any download or boot', (args, message) => {
    const r = run(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^io-flusher vm: error: /);
    expect(r.stderr).toMatch(message);
    expect(fs.existsSync('/nonexistent/never-created')).toBe(false);
  });

  it('--monitor refuses a path that exists (QEMU would delete it to bind) and leaves it in place', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vm-monitor-'));
    const taken = path.join(dir, 'someone-else.sock');
    fs.writeFileSync(taken, 'not ours');
    try {
      const r = run(['--monitor', taken, '--', 'true']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/exists: give a path that does not/);
      expect(fs.readFileSync(taken, 'utf8')).toBe('not ours');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to share / when no project is found above the current directory', () => {
    const r = run(['--', 'true'], '/');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/refusing to share \//);
  });

  it('is in the published files with its guest init and the Node fetcher (all of vm/)', () => {
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../package.json'), 'utf8')) as { files: string[] };
    expect(pkg.files).toContain('vm/');
    for (const file of ['kernel-run', 'guest-init', 'extract-vmlinux', 'seccomp-old-kernel.c', 'node-versions.mjs']) {
      expect(fs.existsSync(path.resolve(__dirname, '../vm', file)), file).toBe(true);
    }
  });
});

/**
 * The runner's own handling of a guest that dies before COMMAND starts (under software emulation a kernel can panic
 * while booting, about once in 35 boots here): a stand-in QEMU (test/fixtures/fake-qemu.sh) plays the guest, and a
 * fake kernel cache (a stamp, an empty vmlinux, built-in modules) stands for the downloaded kernel.
 */
const RUNNER = path.resolve(__dirname, '../vm/kernel-run');
const runnerTools = ['/usr/sbin/depmod', '/usr/sbin/modprobe', '/bin/busybox', '/usr/bin/setpriv'].every((f) => fs.existsSync(f));
const toolsNote = runnerTools ? '' : ' (SKIPPED: needs busybox-static, kmod and util-linux, which .ci/run installs)';

describe('kernel-run: a guest that ends before COMMAND starts', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-vm-'));
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
  const runBoots = (plan: string, extra: string[] = []) => {
    const cache = path.join(work, 'cache');
    const kdir = path.join(cache, 'bookworm');
    if (!fs.existsSync(path.join(kdir, 'stamp'))) {
      const modules = path.join(kdir, 'root/lib/modules/9.9.9-fake');
      fs.mkdirSync(modules, { recursive: true });
      fs.writeFileSync(path.join(modules, 'modules.builtin'), 'kernel/drivers/virtio/virtio_pci.ko\nkernel/net/9p/9pnet_virtio.ko\nkernel/fs/9p/9p.ko\n');
      fs.writeFileSync(path.join(modules, 'modules.order'), '');
      expect(spawnSync('/usr/sbin/depmod', ['-b', path.join(kdir, 'root'), '9.9.9-fake']).status).toBe(0);
      fs.writeFileSync(path.join(kdir, 'vmlinux'), '');
      fs.writeFileSync(path.join(kdir, 'stamp'), 'kernel-run cache v1\nlinux-image-fake\n9.9.9-fake\nhttp://deb.example/debian\n');
    }
    const bin = path.join(work, 'bin');
    fs.mkdirSync(bin, { recursive: true });
    fs.copyFileSync(path.resolve(__dirname, 'fixtures/fake-qemu.sh'), path.join(bin, 'qemu-system-x86_64'));
    fs.chmodSync(path.join(bin, 'qemu-system-x86_64'), 0o755);
    const log = path.join(work, `boots-${plan}.log`);
    fs.rmSync(log, { force: true });
    const r = spawnSync(RUNNER, ['--accel', 'tcg', '--project', work, ...extra, '--', 'true'], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, IO_FLUSHER_VM_CACHE: cache, FAKE_QEMU_PLAN: plan, FAKE_QEMU_LOG: log },
      timeout: 60_000,
    });
    const boots = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').length : 0;
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, boots };
  };

  it.runIf(runnerTools)(`a panic while booting is booted again, and the command's status comes from the boot that ran it${toolsNote}`, () => {
    const r = runBoots('panic,panic,ok');
    expect(r.boots).toBe(3);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('command ran');
    expect(r.stderr).toMatch(/boot 1 of 3 ended before the command started/);
    expect(r.stderr).toMatch(/boot 2 of 3 ended before the command started/);
    expect(r.stderr).toMatch(/\| Kernel panic - not syncing/);
    expect(r.stderr.match(/booting bookworm\/full again/g)).toHaveLength(2);
  });

  it.runIf(runnerTools)(`three failed boots: exit 125, the console shown, no fourth boot${toolsNote}`, () => {
    const r = runBoots('panic');
    expect(r.boots).toBe(3);
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/the VM ended without an exit status \(boot failed or kernel panic, boot 3 of 3/);
  });

  it.runIf(runnerTools)(`a guest that hangs before the command is booted again after --boot-timeout${toolsNote}`, () => {
    const r = runBoots('hang,ok', ['--boot-timeout', '2']);
    expect(r.boots).toBe(2);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/boot 1 of 3 did not start the command within 2s/);
  });

  it.runIf(runnerTools)(`a panic after the command started is reported (125), never retried${toolsNote}`, () => {
    const r = runBoots('late-panic,ok');
    expect(r.boots).toBe(1);
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/command started after/);
    expect(r.stderr).not.toMatch(/again/);
  });
});

/**
 * The runner's kernel fetch, offline: stand-ins for apt-get and apt-cache (test/fixtures/fake-apt.sh) serve a fake
 * kernel package, the host's apt sources are a directory of the test's own (through APT_CONFIG, which apt-config
 * honours as apt does), and script(1) gives the runner a terminal where one is wanted.
 */
describe('kernel-run: which Debian mirror a kernel comes from, and how its download is shown', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-apt-'));
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
  const bin = path.join(work, 'bin');
  const deb = path.join(work, 'linux-image-fake.deb');
  const cache = path.join(work, 'cache');
  const tools = runnerTools && ['/usr/bin/dpkg-deb', '/usr/bin/apt-config', '/usr/bin/script'].every((f) => fs.existsSync(f));
  const note = tools ? '' : ' (SKIPPED: needs busybox-static, kmod, util-linux, dpkg and apt, which .ci/run installs)';

  /** A kernel package as the runner unpacks it: built-in 9p modules, a gzip-compressed ELF as vmlinuz, a config. */
  const fakeKernelPackage = () => {
    if (fs.existsSync(deb)) return;
    const root = path.join(work, 'deb-root');
    const modules = path.join(root, 'lib/modules/9.9.9-fake');
    fs.mkdirSync(modules, { recursive: true });
    fs.mkdirSync(path.join(root, 'boot'));
    fs.mkdirSync(path.join(root, 'DEBIAN'));
    fs.writeFileSync(path.join(modules, 'modules.builtin'), 'kernel/drivers/virtio/virtio_pci.ko\nkernel/net/9p/9pnet_virtio.ko\nkernel/fs/9p/9p.ko\n');
    fs.writeFileSync(path.join(modules, 'modules.order'), '');
    fs.writeFileSync(path.join(root, 'boot/vmlinuz-9.9.9-fake'), zlib.gzipSync(fs.readFileSync('/bin/true')));
    fs.writeFileSync(path.join(root, 'boot/config-9.9.9-fake'), 'CONFIG_9P_FS=m\n');
    fs.writeFileSync(path.join(root, 'DEBIAN/control'),
      'Package: linux-image-9.9.9-fake-amd64\nVersion: 1\nArchitecture: amd64\nMaintainer: test <test@example.invalid>\nDescription: fake\n');
    const built = spawnSync('dpkg-deb', ['--build', '--root-owner-group', root, deb], { encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    fs.mkdirSync(bin, { recursive: true });
    for (const name of ['apt-get', 'apt-cache']) {
      fs.copyFileSync(path.resolve(__dirname, 'fixtures/fake-apt.sh'), path.join(bin, name));
      fs.chmodSync(path.join(bin, name), 0o755);
    }
  };

  let runs = 0;
  /** `--prepare` of a kernel not in the cache yet, with the given apt sources (file name to content). */
  const prepare = (sources: Record<string, string>, options: { mirror?: string; terminal?: boolean; extra?: string[] } = {}) => {
    fakeKernelPackage();
    const dir = path.join(work, `run-${++runs}`);
    fs.mkdirSync(path.join(dir, 'sources.list.d'), { recursive: true });
    for (const [name, text] of Object.entries(sources)) fs.writeFileSync(path.join(dir, name), text);
    fs.writeFileSync(path.join(dir, 'apt.conf'), `Dir::Etc::SourceList "${dir}/sources.list";\nDir::Etc::SourceParts "${dir}/sources.list.d";\n`);
    fs.rmSync(path.join(cache, 'bookworm'), { recursive: true, force: true });
    const log = path.join(dir, 'apt.log');
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}`, APT_CONFIG: path.join(dir, 'apt.conf'), IO_FLUSHER_VM_CACHE: cache, FAKE_APT_LOG: log, FAKE_APT_DEB: deb };
    delete env.IO_FLUSHER_VM_MIRROR;
    if (options.mirror) env.IO_FLUSHER_VM_MIRROR = options.mirror;
    const args = [RUNNER, '--prepare', '--kernel', 'bookworm', ...(options.extra ?? [])];
    // Through script(1), stdout and stderr are one terminal, read back as script's stdout.
    const r = options.terminal
      ? spawnSync('script', ['-qec', args.map((a) => `'${a}'`).join(' '), '/dev/null'], { encoding: 'utf8', env, timeout: 120_000 })
      : spawnSync(args[0]!, args.slice(1), { encoding: 'utf8', env, timeout: 120_000 });
    const stamp = path.join(cache, 'bookworm/stamp');
    return {
      status: r.status,
      stderr: options.terminal ? r.stdout.replace(/\r/g, '') : r.stderr,
      apt: fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : [],
      mirror: fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8').split('\n')[3] : undefined,
      dir,
    };
  };
  const UBUNTU = { 'sources.list': 'deb http://archive.ubuntu.com/ubuntu noble main universe\n' };

  it.runIf(tools)(`sources that name no Debian mirror (Ubuntu): Debian's own archive, said on stderr with why${note}`, () => {
    const r = prepare(UBUNTU);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      `kernel-run: bookworm: mirror https://deb.debian.org/debian (Debian's own archive: no Debian mirror in ${r.dir}/sources.list or ${r.dir}/sources.list.d/, as on Ubuntu;`,
    );
    expect(r.apt).toHaveLength(3);
    for (const call of r.apt) expect(call).toMatch(/ https:\/\/deb\.debian\.org\/debian bookworm main$/);
    expect(r.mirror).toBe('https://deb.debian.org/debian');
    expect(r.stderr).toMatch(/bookworm: ready \(9\.9\.9-fake;/);
  });

  it.runIf(tools)(`a Debian mirror in the sources (deb822) is used, or IO_FLUSHER_VM_MIRROR, each named as the reason${note}`, () => {
    const named = prepare({ ...UBUNTU, 'sources.list.d/debian.sources': 'Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n' });
    expect(named.status, named.stderr).toBe(0);
    expect(named.stderr).toContain(`mirror http://mirror.example/debian (named in ${named.dir}/sources.list.d/debian.sources)`);
    expect(named.mirror).toBe('http://mirror.example/debian');
    const fromEnv = prepare(UBUNTU, { mirror: 'http://env.example/debian' });
    expect(fromEnv.stderr).toContain('mirror http://env.example/debian (IO_FLUSHER_VM_MIRROR)');
    expect(fromEnv.apt[0]).toMatch(/ http:\/\/env\.example\/debian bookworm main$/);
  });

  it.runIf(tools)(`apt's download progress shows on a terminal, and stays out of stderr otherwise (and with --quiet)${note}`, () => {
    const onTerminal = prepare(UBUNTU, { terminal: true });
    expect(onTerminal.status, onTerminal.stderr).toBe(0);
    expect(onTerminal.stderr).toContain('fake-apt update progress');
    expect(onTerminal.stderr).toContain('fake-apt download progress');
    expect(onTerminal.apt.filter((call) => / (update|download) tty /.test(call))).toHaveLength(2);
    const inLog = prepare(UBUNTU);
    expect(inLog.stderr).not.toContain('progress');
    expect(inLog.apt.filter((call) => / notty /.test(call))).toHaveLength(3);
    const quiet = prepare(UBUNTU, { terminal: true, extra: ['--quiet'] });
    expect(quiet.status, quiet.stderr).toBe(0);
    expect(quiet.stderr).toBe('');
  });
});
