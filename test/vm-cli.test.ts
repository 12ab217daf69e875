/**
 * `io-flusher vm` on the host: the command line reaches the shipped runner (scripts/kernel-run) and its usage errors
 * come back before anything is fetched or booted. Booting a VM from an installed copy is proven by
 * `npm run test:pack` (the user's own test file runs in the guest) and the kernel suite.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
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

  it('is in the published files with its guest init and the Node fetcher', () => {
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../package.json'), 'utf8')) as { files: string[] };
    expect(pkg.files).toEqual(expect.arrayContaining(['scripts/kernel-run', 'scripts/vm/', 'scripts/node-versions.mjs']));
  });
});
