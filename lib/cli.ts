#!/usr/bin/env node
/**
 * The io-flusher command line. Modes follow util-linux's setpriv/prlimit/choom: show state, change it, or run a
 * command with it. Every command has a --json form for scripts; exit statuses are documented in USAGE and README.
 */
import { BACKEND_CHOICES, BackendChoice, systemCalls, SystemCalls } from './backend';
import { IoFlusherError } from './errors';
import { ioFlusherChosenBy, ProbeResult } from './io-flusher';
import { OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN } from './kernel-constants';
import {
  describeFlags,
  escapeName,
  lockedBytesFromStatus,
  readMemlockLimit,
  readOomScoreAdj,
  readProcessThreads,
  readStatus,
  readThreadWait,
  ThreadFlags,
  ThreadWait,
} from './procfs';
import { commandFile, execve, preloadOption, PRELOAD_MLOCK_ENV, resolveCommand, saveStdioFlags } from './exec';
import { MemlockLimit, setMemlockLimit } from './memlock-limit';
import { setOomScoreAdj } from './oom-score';
import { vm } from './vm';

/** Exit statuses of `io-flusher check` (and the other commands where they apply). */
export const EXIT = {
  /** Protection can be had here: the kernel has IO_FLUSHER and the capability check passes. */
  OK: 0,
  /** An unexpected error. */
  FAILURE: 1,
  /** Bad command line. */
  USAGE: 2,
  /** The kernel has IO_FLUSHER but this process may not use it (no CAP_SYS_RESOURCE, or a filter answers EPERM). */
  NOT_PERMITTED: 3,
  /** The kernel lacks IO_FLUSHER (Linux < 5.6, not Linux, or a filter answers EINVAL): only the emulator runs. */
  UNSUPPORTED: 4,
  /** The native addon could not be loaded, so the kernel could not be asked. */
  NO_ADDON: 5,
  /** status: a named process does not exist. */
  NO_PROCESS: 6,
  /** status --check: some thread lacks IO_FLUSHER. */
  UNPROTECTED: 1,
  /** exec: IO_FLUSHER could not be set (or cleared), and --allow-unprotected was not given. */
  EXEC_NOT_SET: 125,
  /** exec: COMMAND was found but could not be executed (or the addon that makes execve is missing). */
  EXEC_FAILED: 126,
  /** exec: COMMAND was not found. */
  EXEC_NOT_FOUND: 127,
} as const;

const USAGE = `Usage:
  io-flusher check [--pid PID] [--json] [--backend auto|native|emulated]
      Report kernel support, CAP_SYS_RESOURCE, the backend in use, and the memalloc flags of every thread of a
      process (default: io-flusher itself). Exit status: 0 protection can be had here; 3 kernel has it but this
      process is not permitted (CAP_SYS_RESOURCE missing, or a filter); 4 kernel lacks it (Linux < 5.6, not Linux,
      or a filter answering EINVAL); 5 native addon not loadable; 6 no such process (--pid); 2 usage error; 1 other failure.
  io-flusher exec [--clear] [--allow-unprotected] [--keep-fds N,...] [--backend B]
                  [--mlock[=mapped|touched]] [--oom-score-adj N] [--memlock-limit BYTES|unlimited] [--] COMMAND [ARGS...]
      Put this thread in IO_FLUSHER state (--clear: out of it), then execve COMMAND (no shell), so every thread of
      COMMAND has the state from birth. Options end at COMMAND (or --): everything after it is COMMAND's.
      COMMAND inherits stdio, systemd's LISTEN_FDS and the --keep-fds descriptors (which must be open), nothing else.
      --oom-score-adj and --memlock-limit are set before exec (both survive it). --mlock locks the code scope (mapped,
      the default, or touched pages; see lockMemory) of a Node COMMAND only: memory locks end at execve, so a
      preload locks at its start.
      Exit status: COMMAND's own once it runs; 125 a requested setting could not be made (with --allow-unprotected:
      a warning, and COMMAND runs anyway); 126 COMMAND could not be executed; 127 COMMAND not found; 2 usage error.
  io-flusher status [PID...] [--json] [--check] [--wchan]
      Every thread of each process (default: io-flusher itself) with its name and memalloc flags. With --check, exit
      1 when any thread lacks IO_FLUSHER, naming those threads on stderr. Exit 6 when a process does not exist.
      With --wchan, also where each thread is: its state (R running, S sleeping, D waiting uninterruptibly, as a
      stuck I/O thread does), the kernel function it sleeps in, and its kernel stack when readable (as root).
  io-flusher vm [--kernel bookworm|bullseye|trixie] [--mode full|nocap|oldkernel] [--node MAJOR] [--memory MIB]
                [--modules LIST] [--timeout S] [--prepare] -- COMMAND [ARGS...]
      Run COMMAND as root in a QEMU VM booted from a real Debian kernel (6.1, 5.10 or 6.12), with this project
      shared read-write at the same path, so the success path can be tested where CAP_SYS_RESOURCE is missing.
      Exit status: COMMAND's own; 124 timeout; 125 the VM failed; 126 setup failed; 2 usage error. See vm --help.
  io-flusher --help | --version
`;

class UsageError extends Error {}

interface ParsedArgs {
  positional: string[];
  flags: Map<string, string | true>;
}

/** Parses --flag, --flag=value and --flag value (for flags listed in `withValue`). */
function parseArgs(argv: string[], withValue: readonly string[], boolean: readonly string[]): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    if (withValue.includes(name)) {
      const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
      if (value === undefined) throw new UsageError(`option '--${name}' needs a value`);
      flags.set(name, value);
    } else if (boolean.includes(name) && eq < 0) {
      flags.set(name, true);
    } else {
      throw new UsageError(`unknown option '${arg}'`);
    }
  }
  return { positional, flags };
}

function parsePid(value: string | true | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !/^[1-9][0-9]{0,6}$/.test(value)) throw new UsageError(`not a process id: ${String(value)}`);
  return Number(value);
}

function parseBackend(value: string | true | undefined): BackendChoice | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !(BACKEND_CHOICES as readonly string[]).includes(value)) {
    throw new UsageError(`--backend wants one of ${BACKEND_CHOICES.join(', ')}`);
  }
  return value as BackendChoice;
}

function hex(flags: number): string {
  return `0x${flags.toString(16).padStart(8, '0')}`;
}

/** A table of threads: what `check` and `status` print; with `waits` (status --wchan), where each thread is too. */
export function formatThreadTable(threads: ThreadFlags[], waits?: Array<ThreadWait | undefined>): string {
  const rows = [['TID', 'NAME', 'FLAGS', 'IO_FLUSHER', 'NOIO', 'LOCAL_THROTTLE', 'NOFS', 'MEMALLOC', 'PIN', ...(waits ? ['STATE', 'WCHAN'] : [])]];
  const yes = (b: boolean): string => (b ? 'yes' : '-');
  for (const [i, t] of threads.entries()) {
    const wait = waits?.[i];
    rows.push([
      String(t.tid),
      escapeName(t.name),
      hex(t.flags),
      t.ioFlusher ? (t.emulated ? 'yes (emulated)' : 'yes') : 'no',
      yes(t.memallocNoio),
      yes(t.localThrottle),
      yes(t.memallocNofs),
      yes(t.memalloc),
      yes(t.memallocPin),
      ...(waits ? [wait?.state ?? '?', escapeName(wait?.wchan ?? '-')] : []),
    ]);
  }
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
  const table = rows.map((r) => r.map((cell, col) => cell.padEnd(widths[col]!)).join('  ').trimEnd()).join('\n');
  if (!waits) return table;
  // The kernel stacks below the table, innermost call first: what tells a stuck thread's cause (balance_dirty_pages,
  // direct reclaim, waiting on writeback, the journal).
  const stacks = threads
    .map((t, i) => [t, waits[i]] as const)
    .filter(([, w]) => w?.stack?.length)
    .map(([t, w]) => `  ${t.tid} ${escapeName(t.name)} [${w!.state}]: ${w!.stack!.map(escapeName).join(' <- ')}`);
  const unreadable = waits.some((w) => w && w.stack === null);
  return `${table}\n${stacks.length ? `kernel stacks:\n${stacks.join('\n')}` : unreadable ? 'kernel stacks: not readable (they need root with CAP_SYS_ADMIN)' : 'kernel stacks: none'}`;
}

function checkExitCode(probe: ProbeResult): number {
  if (probe.feature === 'present') return probe.canSet ? EXIT.OK : EXIT.NOT_PERMITTED;
  if (probe.feature === 'absent' || process.platform !== 'linux') return EXIT.UNSUPPORTED;
  return probe.native.loaded ? EXIT.FAILURE : EXIT.NO_ADDON;
}

function verdict(probe: ProbeResult, code: number): string {
  switch (code) {
    case EXIT.OK:
      return 'available: this process may set IO_FLUSHER';
    case EXIT.NOT_PERMITTED:
      return probe.capSysResource
        ? 'NOT permitted: CAP_SYS_RESOURCE is held, so a seccomp filter or security module refuses prctl'
        : probe.inUserNamespace
          ? 'NOT permitted: this process runs in a user namespace, where CAP_SYS_RESOURCE never counts for IO_FLUSHER'
          : 'NOT permitted: CAP_SYS_RESOURCE is missing (docker --cap-add SYS_RESOURCE; systemd AmbientCapabilities=CAP_SYS_RESOURCE)';
    case EXIT.UNSUPPORTED:
      return 'NOT available: the kernel lacks IO_FLUSHER (Linux >= 5.6 needed) or a filter hides it; only the emulator runs';
    case EXIT.NO_ADDON:
      return 'unknown: the native addon did not load, so the kernel was not asked';
    default:
      return 'unknown';
  }
}

/** What `check` shows of a process's forward-progress settings, read from /proc (any process). */
interface MemoryState {
  /** VmLck: bytes in locked mappings (a mapping locked with MLOCK_ONFAULT counts whole, resident or not). */
  lockedBytes: number;
  memlockLimit: MemlockLimit;
  oomScoreAdj: number;
}

function memoryState(pid: number | 'self'): MemoryState {
  return { lockedBytes: lockedBytesFromStatus(readStatus(pid)), memlockLimit: readMemlockLimit(pid), oomScoreAdj: readOomScoreAdj(pid) };
}

function check(argv: string[], out: (s: string) => void): number {
  const args = parseArgs(argv, ['pid', 'backend'], ['json']);
  if (args.positional.length) throw new UsageError(`check takes no arguments, got ${args.positional.join(' ')}`);
  const pid = parsePid(args.flags.get('pid'));
  const backend = parseBackend(args.flags.get('backend'));
  const instance = ioFlusherChosenBy({ backend: backend ?? 'auto' }, backend ? '--backend' : 'default (auto)');
  const probe = instance.probe();
  const code = checkExitCode(probe);
  let threads: ThreadFlags[];
  try {
    threads = instance.listThreads(pid);
  } catch (err) {
    if ((err as IoFlusherError).code !== 'ESRCH') throw err;
    warn(`no process ${pid}: ${(err as IoFlusherError).message}`);
    return EXIT.NO_PROCESS;
  }
  const memory = memoryState(pid ?? 'self');
  if (args.flags.has('json')) {
    out(JSON.stringify({ ...probe, exitCode: code, verdict: verdict(probe, code), pid: pid ?? process.pid, memory, threads }, null, 2));
    return code;
  }
  const bytes = (n: number): string => (n === Infinity ? 'unlimited' : `${n} bytes`);
  const lines = [
    `kernel        ${probe.kernelRelease} (${probe.platform}): IO_FLUSHER ${probe.feature}; ${probe.featureDetail}`,
    `capability    CAP_SYS_RESOURCE ${probe.capSysResource === null ? 'unknown' : probe.capSysResource ? 'held' : 'missing'} in the effective set` +
      (probe.inUserNamespace ? ' (inside a user namespace: never sufficient)' : '') +
      (probe.seccompMode === 2 ? '; seccomp filter active' : ''),
    `addon         ${probe.native.loaded ? probe.native.path : `not loaded: ${probe.native.error}`}`,
    `backend       ${probe.backend}: ${probe.backendReason}`,
    `this thread   IO_FLUSHER ${probe.ioFlusher === null ? 'unknown (refused)' : probe.ioFlusher ? 'on' : 'off'}${probe.backend === 'emulated' ? ' (emulated: NOT protected)' : ''}`,
    `verdict       ${verdict(probe, code)}`,
    `memory        process ${pid ?? process.pid}: locked ${bytes(memory.lockedBytes)} (VmLck), RLIMIT_MEMLOCK ${bytes(memory.memlockLimit.soft)} / ${bytes(memory.memlockLimit.hard)}, oom_score_adj ${memory.oomScoreAdj}`,
    '',
    `threads of process ${pid ?? process.pid} (${threads.length}):`,
    formatThreadTable(threads),
  ];
  out(lines.join('\n'));
  return code;
}

function warn(message: string): void {
  // fs.writeSync, not process.stderr: before exec nothing may be left buffered, and stdio must stay untouched.
  require('node:fs').writeSync(2, `io-flusher: ${message}\n`);
}

const EXEC_VALUE_OPTIONS = ['backend', 'keep-fds', 'mlock', 'oom-score-adj', 'memlock-limit'] as const;

/**
 * exec's own options end at `--` or at the first argument that is not an option, as in env(1), setpriv(1) and
 * chrt(1): everything from COMMAND on is COMMAND's, so `exec node -e x --allow-unprotected` never reads
 * `--allow-unprotected` as its own.
 */
export function splitExecArgs(argv: string[]): { own: string[]; command: string[] } {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return { own: argv.slice(0, i), command: argv.slice(i + 1) };
    if (!arg.startsWith('-') || arg === '-') return { own: argv.slice(0, i), command: argv.slice(i) };
    // `--name value`: the value goes with its option (bare --mlock takes none: it means the default flags).
    const name = arg.slice(2);
    if (arg.startsWith('--') && name !== 'mlock' && (EXEC_VALUE_OPTIONS as readonly string[]).includes(name)) i++;
  }
  return { own: argv, command: [] };
}

/** What `io-flusher exec` was asked to do, from its command line. */
interface ExecPlan {
  command: string[];
  keepFds: number[];
  mlock: string | undefined;
  oomScoreAdj: number | undefined;
  memlockLimit: number | undefined;
  /** The --backend value, checked only once the addon is known to load. */
  backend: string | true | undefined;
  clear: boolean;
  allowUnprotected: boolean;
}

/** Phase 1: the command line, every usage error before anything is done. */
function parseExecArgs(argv: string[]): ExecPlan {
  const split = splitExecArgs(argv);
  // --mlock alone means the lockMemory() default; parseArgs wants a value, so accept the bare flag here.
  const own = split.own.map((a) => (a === '--mlock' ? '--mlock=mapped' : a));
  const command = split.command;
  const args = parseArgs(own, EXEC_VALUE_OPTIONS, ['clear', 'allow-unprotected']);
  if (args.positional.length) throw new UsageError(`unknown option '${args.positional[0]}'`);
  const keepFdsArg = args.flags.get('keep-fds');
  const keepFds = typeof keepFdsArg === 'string' ? keepFdsArg.split(',').map((fd) => {
    if (!/^\d{1,7}$/.test(fd)) throw new UsageError(`--keep-fds wants descriptor numbers like 3,4; got ${keepFdsArg}`);
    return Number(fd);
  }) : [];
  if (command.length === 0) throw new UsageError('exec needs a COMMAND');
  return {
    command,
    keepFds,
    mlock: parseMlock(args.flags.get('mlock')),
    oomScoreAdj: parseOomScoreAdj(args.flags.get('oom-score-adj')),
    memlockLimit: parseMemlockLimit(args.flags.get('memlock-limit')),
    backend: args.flags.get('backend'),
    clear: args.flags.has('clear'),
    allowUnprotected: args.flags.has('allow-unprotected'),
  };
}

/** Phase 2: what can only be checked with the addon: the --keep-fds descriptors are open, --mlock has a Node COMMAND. */
function checkExecPlan(plan: ExecPlan, system: SystemCalls): void {
  for (const fd of plan.keepFds) {
    if (system.getFdCloexec(fd) < 0) throw new UsageError(`--keep-fds ${fd}: not an open descriptor of this process`);
  }
  if (plan.mlock) {
    // mlockall's locks end at execve (man 2 mlockall): only a Node program can be made to lock itself, by preload.
    const file = resolveCommand(plan.command[0]!, process.env.PATH);
    if (!file || !isNodeExecutable(file)) {
      throw new UsageError(`--mlock works only when COMMAND is node: memory locks do not survive execve, so ${plan.command[0]} must lock its own memory`);
    }
  }
}

/** Phase 3: IO_FLUSHER on this thread (or cleared). Returns an exit status when COMMAND must not run. */
function setStateForCommand(plan: ExecPlan): number | undefined {
  const backend = parseBackend(plan.backend);
  try {
    const instance = ioFlusherChosenBy({ backend: backend ?? 'auto' }, backend ? '--backend' : 'default (auto)');
    if (instance.warning) warn(instance.warning);
    // Clearing a thread that /proc shows clear already needs no prctl (and no capability): the state is verified.
    if (!(plan.clear && !instance.threadFlags().ioFlusher)) instance.setIoFlusher(!plan.clear);
  } catch (err) {
    if (!(err instanceof IoFlusherError)) throw err;
    if (!plan.allowUnprotected) {
      warn(`could not ${plan.clear ? 'clear' : 'set'} IO_FLUSHER, so ${plan.command[0]} was not started: ${err.message}`);
      return EXIT.EXEC_NOT_SET;
    }
    warn(`WARNING: ${plan.command[0]} runs ${plan.clear ? 'with IO_FLUSHER NOT cleared' : 'WITHOUT IO_FLUSHER protection'} (--allow-unprotected): ${err.message}`);
  }
  return undefined;
}

/** Phase 4: the settings that survive execve (proc(5) oom_score_adj, setrlimit(2)). Returns an exit status to stop. */
function applySettingsForCommand(plan: ExecPlan): number | undefined {
  const { memlockLimit, oomScoreAdj } = plan;
  const steps: Array<[string, () => unknown]> = [];
  if (memlockLimit !== undefined) steps.push(['--memlock-limit', () => setMemlockLimit(memlockLimit, memlockLimit)]);
  if (oomScoreAdj !== undefined) steps.push(['--oom-score-adj', () => setOomScoreAdj(oomScoreAdj)]);
  for (const [flag, step] of steps) {
    try {
      step();
    } catch (err) {
      if (!(err instanceof IoFlusherError)) throw err;
      if (!plan.allowUnprotected) {
        warn(`${flag} failed, so ${plan.command[0]} was not started: ${err.message}`);
        return EXIT.EXEC_NOT_SET;
      }
      warn(`WARNING: ${flag} failed, ${plan.command[0]} runs anyway (--allow-unprotected): ${err.message}`);
    }
  }
  return undefined;
}

/** Phase 5: COMMAND's environment, taken only now: the emulator publishes its state for children in process.env. */
function commandEnvironment(plan: ExecPlan): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (plan.mlock) {
    env[PRELOAD_MLOCK_ENV] = plan.mlock;
    env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} ${preloadOption()}`.trim();
  }
  return env;
}

/** Reports a command exec cannot run (not found: 127; not executable: 126), as sh and env(1) do. */
function commandFailure(command: string, err: unknown): number {
  if (!(err instanceof IoFlusherError) || (err.reason !== 'command-not-found' && err.reason !== 'command-not-executable')) throw err;
  warn(`cannot run ${command}: ${err.message}`);
  return err.reason === 'command-not-found' ? EXIT.EXEC_NOT_FOUND : EXIT.EXEC_FAILED;
}

function exec(argv: string[]): number {
  const plan = parseExecArgs(argv);
  // Before anything is set or warned about: a command that cannot run is reported as that.
  try {
    commandFile(plan.command[0]!, process.env.PATH);
  } catch (err) {
    return commandFailure(plan.command[0]!, err);
  }
  let system: SystemCalls;
  try {
    system = systemCalls('execve');
  } catch (err) {
    // The addon did not load: its hint is the loader's error, which says what was tried and how to get the addon.
    if (!(err instanceof IoFlusherError) || err.reason !== 'native-unavailable') throw err;
    warn(`cannot exec: ${err.hint}`);
    return EXIT.EXEC_FAILED;
  }
  checkExecPlan(plan, system);
  // Before anything can touch stdio: what COMMAND must inherit.
  const savedStdioFlags = saveStdioFlags(system);
  const stop = setStateForCommand(plan) ?? applySettingsForCommand(plan);
  if (stop !== undefined) return stop;
  try {
    execve(plan.command[0]!, plan.command.slice(1), { env: commandEnvironment(plan), system, savedStdioFlags, keepFds: plan.keepFds });
  } catch (err) {
    return commandFailure(plan.command[0]!, err);
  }
}

function parseMlock(value: string | true | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value === 'mapped' || value === 'touched') return value;
  throw new UsageError(`--mlock takes mapped or touched (which pages of the code scope to lock); got ${String(value)}`);
}

function parseOomScoreAdj(value: string | true | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !/^-?\d{1,4}$/.test(value) || n < OOM_SCORE_ADJ_MIN || n > OOM_SCORE_ADJ_MAX) {
    throw new UsageError(`--oom-score-adj takes ${OOM_SCORE_ADJ_MIN}..${OOM_SCORE_ADJ_MAX}; got ${String(value)}`);
  }
  return n;
}

function parseMemlockLimit(value: string | true | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (value === 'unlimited' || value === 'infinity') return Infinity;
  const m = typeof value === 'string' ? /^(\d+)([KMG]?)$/i.exec(value) : null;
  if (!m) throw new UsageError(`--memlock-limit takes bytes (with K, M or G) or unlimited; got ${String(value)}`);
  const bytes = Number(m[1]) * 1024 ** ' KMG'.indexOf((m[2] || ' ').toUpperCase());
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`--memlock-limit ${value} is out of range (at most ${Number.MAX_SAFE_INTEGER} bytes, or unlimited)`);
  return bytes;
}

/** Whether a command file is a Node executable (for --mlock's preload). */
function isNodeExecutable(file: string): boolean {
  const fs = require('node:fs') as typeof import('node:fs');
  const real = fs.realpathSync(file);
  return real === fs.realpathSync(process.execPath) || /^node(js)?[0-9.]*$/.test(require('node:path').basename(real));
}

function status(argv: string[], out: (s: string) => void): number {
  const args = parseArgs(argv, [], ['json', 'check', 'wchan']);
  const withWait = args.flags.has('wchan');
  const pids = args.positional.length ? args.positional.map((p) => parsePid(p)!) : [process.pid];
  const processes: Array<{ pid: number; threads: Array<ThreadFlags & Partial<ThreadWait>> }> = [];
  const missing: number[] = [];
  for (const pid of pids) {
    try {
      processes.push({
        pid,
        threads: readProcessThreads(pid).map((t) => ({
          ...describeFlags(pid, t.tid, t.name, t.flags, false),
          ...(withWait ? readThreadWait(pid, t.tid, t.state) : {}),
        })),
      });
    } catch (err) {
      if ((err as IoFlusherError).code !== 'ESRCH') throw err;
      // Reported, and the processes that do exist are still shown.
      warn(`no process ${pid}: ${(err as IoFlusherError).message}`);
      missing.push(pid);
    }
  }
  const lacking = processes.flatMap((p) => p.threads.filter((t) => !t.ioFlusher));
  if (args.flags.has('json')) {
    out(JSON.stringify({ processes, missing, lacking: lacking.map(({ pid, tid, name }) => ({ pid, tid, name })) }, null, 2));
  } else {
    out(
      processes
        .map(
          (p) =>
            `process ${p.pid}: ${p.threads.length - p.threads.filter((t) => !t.ioFlusher).length} of ${p.threads.length} threads in IO_FLUSHER state\n` +
            formatThreadTable(p.threads, withWait ? (p.threads as ThreadWait[]) : undefined),
        )
        .join('\n\n'),
    );
  }
  if (missing.length) return EXIT.NO_PROCESS;
  if (args.flags.has('check') && lacking.length) {
    warn(`${lacking.length} thread(s) lack IO_FLUSHER: ${lacking.map((t) => `${t.pid}/${t.tid} (${escapeName(t.name)})`).join(', ')}`);
    return EXIT.UNPROTECTED;
  }
  return EXIT.OK;
}

export function main(argv: string[], out: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): number {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'check':
        return check(rest, out);
      case 'exec':
        return exec(rest);
      case 'status':
        return status(rest, out);
      case 'vm':
        return vm(rest);
      case '--version':
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        out((require('../package.json') as { version: string }).version);
        return EXIT.OK;
      case '--help':
      case '-h':
      case 'help':
        out(USAGE);
        return EXIT.OK;
      default:
        throw new UsageError(command === undefined ? 'no command given' : `unknown command '${command}'`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      // One line and where to read more, as coreutils and git do: the whole usage would bury the message.
      process.stderr.write(`io-flusher: ${err.message}\nTry 'io-flusher --help' for more information.\n`);
      return EXIT.USAGE;
    }
    process.stderr.write(`io-flusher: ${err instanceof IoFlusherError || err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.FAILURE;
  }
}

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
