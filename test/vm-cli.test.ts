/**
 * `io-flusher vm` on the host: the command line reaches the shipped runner (vm/kernel-run) and its usage errors
 * come back before anything is fetched or booted. Booting a VM from an installed copy is proven by
 * `npm run test:pack` (the user's own test file runs in the guest) and the kernel suite.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

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
    [[], /no command given/],
  ])('usage error %j: exit 2 naming "io-flusher vm", before any download or boot', (args, message) => {
    const r = run(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^io-flusher vm: error: /);
    expect(r.stderr).toMatch(message);
    expect(fs.existsSync('/nonexistent/never-created')).toBe(false);
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
