/**
 * The docs cannot rot: each check of scripts/check-docs.mjs passes on the repository, and each is shown to fail on a
 * broken copy (a block that does not compile, a dead link or anchor, an option the help and the page disagree on, an
 * undocumented export, a stale reference page, a unit systemd rejects). They do not depend on the Node major, so
 * under `npm run test:nodes` they are skipped: `npm test` runs them once.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkApiReference,
  checkCli,
  checkCodeBlocks,
  checkIncludedFiles,
  checkLinks,
  checkSystemdUnit,
  docFiles,
  githubSlug,
  hasSystemdAnalyze,
  readUnit,
  refusalLine,
} from '../scripts/check-docs.mjs';
import { CLI, holdsCapSysResource, ROOT } from './helpers';

const perNodeRun = process.env.IO_FLUSHER_EXPECT_NODE !== undefined;
const skipNote = perNodeRun ? ' (SKIPPED: the docs do not depend on the Node major; npm test checks them once)' : '';
const scratchDirs: string[] = [];
afterAll(() => scratchDirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

/** A scratch directory holding the given files (path -> content). */
function scratch(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'io-flusher-docs-test-'));
  scratchDirs.push(dir);
  for (const [file, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), content);
  }
  return dir;
}

const fence = '```';

describe.skipIf(perNodeRun)(`the docs${skipNote}`, () => {
  it('README.md is at most 12,000 characters and links every page under docs/, CONTRIBUTING.md and CHANGELOG.md', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme.length).toBeLessThanOrEqual(12_000);
    const pages = [
      ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`),
      'docs/api/README.md',
      'docs/lab/README.md',
      'CONTRIBUTING.md',
      'CHANGELOG.md',
    ];
    const linked = [...readme.matchAll(/\]\(([^)#\s]+)/g)].map((m) => m[1]);
    expect(pages.filter((page) => !linked.includes(page))).toEqual([]);
  });

  it('every ts/js code block compiles against the published typings (dist/*.d.ts, imported as io-flusher)', () => {
    expect(checkCodeBlocks()).toEqual([]);
  });

  it('a block that does not compile is reported at its line; a block marked fragment is not compiled', () => {
    const dir = scratch({
      'README.md': [
        '# Example',
        `${fence}ts`,
        "import { setIoFlusher } from 'io-flusher';",
        "setIoFlusher('yes');",
        fence,
        `${fence}js`,
        "const { getIoFlusher } = require('io-flusher');",
        'console.log(getIoFlusher(1, 2));',
        fence,
        `${fence}ts fragment`,
        'setIoFlusher(0); // not meant to compile',
        fence,
        `${fence}sh`,
        'not code that is compiled',
        fence,
        '',
      ].join('\n'),
    });
    const errors = checkCodeBlocks({ root: dir, files: ['README.md'] });
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/^README\.md:4: error TS2345: Argument of type 'string' is not assignable to parameter of type 'boolean'/);
    expect(errors[1]).toMatch(/^README\.md:8: error TS2554: Expected 0 arguments, but got 2/);
  });

  it('a block that includes a file (file=PATH in its info string) is exactly that file, the systemd unit included', () => {
    expect(checkIncludedFiles()).toEqual([]);
    expect(fs.readFileSync(path.join(ROOT, 'docs/deployment.md'), 'utf8')).toContain(`${fence}ini file=deployment/storage-daemon.service\n`);
    const dir = scratch({
      'docs/page.md': `${fence}ini file=unit.service\n[Service]\nUser=old\n${fence}\n`,
      'docs/unit.service': '[Service]\nUser=new\n',
    });
    expect(checkIncludedFiles({ root: dir, files: ['docs/page.md'] })).toEqual([
      'docs/page.md:1: the block differs from docs/unit.service: copy the file into the block',
    ]);
  });

  it("headings' anchors follow GitHub's slugs", () => {
    expect(githubSlug('`setIoFlusher(enabled: boolean): void`')).toBe('setioflusherenabled-boolean-void');
    expect(githubSlug('The deadlock, shown: the pressure lab')).toBe('the-deadlock-shown-the-pressure-lab');
    expect(githubSlug('Testing your daemon on real kernels: `io-flusher vm`')).toBe('testing-your-daemon-on-real-kernels-io-flusher-vm');
    expect(githubSlug('No whole-process `mlockall`')).toBe('no-whole-process-mlockall');
    expect(githubSlug('[The command line](cli.md) and **PR_SET_IO_FLUSHER**')).toBe('the-command-line-and-pr_set_io_flusher');
  });

  it('every relative link resolves, and every anchor names a heading of its page', () => {
    expect(docFiles()).toEqual(expect.arrayContaining(['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md', 'docs/cli.md', 'docs/api/README.md']));
    expect(checkLinks()).toEqual([]);
  });

  it('a dead link, a missing anchor and a link out of the repository are reported; links in code are not links', () => {
    const dir = scratch({
      'README.md': [
        '# Top',
        '## Twice',
        '## Twice',
        'See [the guide](docs/guide.md), [its part](docs/guide.md#second-part), [here](#twice-1) and [gone](docs/gone.md).',
        'Also [no such part](docs/guide.md#third-part), [outside](../elsewhere.md) and [a site](https://example.com/x.md).',
        '`[in code](docs/nowhere.md)`',
        `${fence}md`,
        '[in a block](docs/nowhere.md)',
        fence,
        '',
      ].join('\n'),
      'docs/guide.md': '# Guide\n## Second part\n[back](../README.md#top)\n',
    });
    expect(checkLinks({ root: dir, files: ['README.md', 'docs/guide.md'] })).toEqual([
      'README.md:4: link docs/gone.md: no such file docs/gone.md',
      'README.md:5: link docs/guide.md#third-part: docs/guide.md has no heading with anchor #third-part',
      'README.md:5: link ../elsewhere.md: points outside the repository',
    ]);
  });

  it('docs/cli.md and `io-flusher --help` name the same commands and options', () => {
    expect(checkCli()).toEqual([]);
  });

  it('an option missing from docs/cli.md, one it invents and a command without a section are reported', () => {
    const page = fs
      .readFileSync(path.join(ROOT, 'docs/cli.md'), 'utf8')
      .replace(/^\| `--wchan` \|.*\n/m, '')
      .replace(/^(\| `--check` \|.*\n)/m, '$1| `--frobnicate` | not an option |\n')
      .replace(/^## `io-flusher check`$/m, '## Checking');
    const dir = scratch({ 'cli.md': page });
    expect(checkCli({ cliDoc: path.join(dir, 'cli.md') }).map((e: string) => e.replace(/^[^:]+: /, ''))).toEqual([
      'no section "## io-flusher check" for a command --help lists',
      'io-flusher status --wchan is in --help but in no row of the section\'s option table',
      'io-flusher status --frobnicate is documented but --help does not list it',
    ]);
  });

  it.runIf(!holdsCapSysResource())(
    `io-flusher exec without CAP_SYS_RESOURCE exits 125 and prints the refusal docs/cli.md shows${holdsCapSysResource() ? ' (SKIPPED: this machine holds CAP_SYS_RESOURCE; the kernel suite checks it as a non-root user)' : ''}`,
    () => {
      const r = spawnSync(process.execPath, [CLI, 'exec', '--', '/usr/bin/node', '-e', 'process.exit(0)'], { encoding: 'utf8' });
      expect(r.status).toBe(125);
      expect(r.stderr).toBe(`${refusalLine(path.join(ROOT, 'docs/cli.md'), '/usr/bin/node')}\n`);
    },
  );

  it('every public export is documented, and docs/api/ equals a fresh TypeDoc generation', () => {
    expect(checkApiReference()).toEqual([]);
  }, 120_000);

  it('an undocumented export fails TypeDoc, and a stale page in docs/api/ is reported', () => {
    const copy = (withUndocumented: boolean, editPage: boolean): string => {
      const dir = scratch({});
      for (const f of ['typedoc.json', 'tsconfig.typedoc.json', 'tsconfig.json', 'package.json']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
      fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
      fs.cpSync(path.join(ROOT, 'docs/api'), path.join(dir, 'docs/api'), { recursive: true });
      fs.mkdirSync(path.join(dir, 'dist'));
      for (const f of fs.readdirSync(path.join(ROOT, 'dist')).filter((f) => f.endsWith('.d.ts'))) fs.copyFileSync(path.join(ROOT, 'dist', f), path.join(dir, 'dist', f));
      if (withUndocumented) fs.appendFileSync(path.join(dir, 'dist/index.d.ts'), '\nexport declare function undocumentedForTheTest(): void;\n');
      if (editPage) fs.appendFileSync(path.join(dir, 'docs/api/functions/setIoFlusher.md'), '\nan edit by hand\n');
      return dir;
    };
    const undocumented = checkApiReference({ root: copy(true, false) });
    expect(undocumented.join('\n')).toMatch(/undocumentedForTheTest .*does not have any documentation/);
    expect(checkApiReference({ root: copy(false, true) })).toEqual([
      'docs/api/functions/setIoFlusher.md differs from a fresh generation: run `npm run docs:api` and commit docs/api/',
    ]);
  }, 180_000);

  it('the systemd unit runs a non-root daemon through io-flusher exec with only CAP_SYS_RESOURCE, ambient', () => {
    const unit = readUnit(path.join(ROOT, 'docs/deployment/storage-daemon.service'));
    expect(unit.service.User).toMatch(/^[a-z][a-z0-9-]*$/);
    expect(unit.service.User).not.toBe('root');
    expect(unit.service).toMatchObject({
      AmbientCapabilities: 'CAP_SYS_RESOURCE',
      CapabilityBoundingSet: 'CAP_SYS_RESOURCE',
      NoNewPrivileges: 'yes',
      OOMScoreAdjust: '-1000',
    });
    expect(unit.service.LimitMEMLOCK).toBeDefined();
    expect(unit.service.ExecStart).toMatch(/^\/\S+\/io-flusher exec .*-- \/\S+\/node /);
  });

  const systemdNote = hasSystemdAnalyze() ? '' : ' (SKIPPED: systemd-analyze is missing; Debian package systemd, which .ci/run installs)';
  it.runIf(hasSystemdAnalyze())(`systemd-analyze verify passes the unit without a word, and rejects a broken copy${systemdNote}`, () => {
    expect(checkSystemdUnit()).toEqual([]);
    // verify exits 0 on a misspelled setting, which systemd then ignores: any word from it is a failure.
    const unit = fs.readFileSync(path.join(ROOT, 'docs/deployment/storage-daemon.service'), 'utf8');
    const dir = scratch({ 'storage-daemon.service': unit.replace('AmbientCapabilities=', 'AmbientCapabilites=') });
    const errors = checkSystemdUnit({ unitFile: path.join(dir, 'storage-daemon.service') });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/\(exit 0\): .*Unknown key 'AmbientCapabilites' in section \[Service\], ignoring/);
  });
});
