/**
 * Starting programs with IO_FLUSHER from birth: set the state on the calling (main) thread, then execve. The new
 * program's threads are all created after the change by a thread that has it, so every one inherits it, whatever
 * language the program is written in. See: man 2 execve (task flags survive it), kernel/fork.c copy_process().
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tty from 'node:tty';
import { isMainThread } from 'node:worker_threads';
import { systemCalls, SystemCalls } from './backend';
import { IoFlusherError, systemError } from './errors';
import { IoFlusher } from './io-flusher';
import { EACCES, ENOENT } from './kernel-constants';
import { readDescriptorTarget, readOpenDescriptors, readThreadStat } from './procfs';
import { assertObject, assertOptionalBoolean, mainThreadOnly } from './validate';

/**
 * The environment variable that marks the re-executed process (value: its pid and start time, which execve keeps),
 * so reexecWithIoFlusher() re-executes only once. Removed from the environment once read, so the daemon's children
 * do not inherit it; a stale one (another pid, another start) never counts.
 */
export const REEXEC_ENV = 'IO_FLUSHER_REEXEC';

/** `io-flusher exec --mlock`: the mlock flags for lib/preload.ts in the Node program started. */
export const PRELOAD_MLOCK_ENV = 'IO_FLUSHER_PRELOAD_MLOCK';

/** The NODE_OPTIONS token that loads lib/preload.ts. */
export function preloadOption(): string {
  return `--require=${JSON.stringify(path.join(__dirname, 'preload.js'))}`;
}

/**
 * Finds a command like execvp(3): names with a '/' as given, others through PATH, skipping matches that are not
 * executable regular files. When only non-executable matches exist, the first is returned, so execve answers EACCES
 * (exit 126) as execvp would.
 */
export function resolveCommand(command: string, envPath = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'): string | undefined {
  if (command.includes('/')) return fs.existsSync(command) ? command : undefined;
  if (command === '') return undefined;
  let denied: string | undefined;
  for (const dir of envPath.split(':')) {
    const candidate = path.join(dir || '.', command);
    try {
      if (!fs.statSync(candidate).isFile()) continue;
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') denied ??= candidate;
    }
  }
  return denied;
}

const execCalls = (): SystemCalls => systemCalls('execve');

/** @internal The flags of stdin, stdout and stderr now, to be put back before execve (see restoreStdio). */
export function saveStdioFlags(system: SystemCalls = execCalls()): number[] {
  return [0, 1, 2].map((fd) => system.getFdFlags(fd));
}

/**
 * The descriptors the new program must inherit: stdio, systemd's socket-activation descriptors (LISTEN_FDS, from
 * fd 3, when LISTEN_PID is this process: execve keeps the pid), and any the caller names.
 * LISTEN_FDS is bounded by what this process really inherited: the first descriptor Node opens itself is an epoll
 * instance (Node 20 to 26 all start that way), taking the lowest free number, so every inherited descriptor lies
 * below the first `anon_inode:[eventpoll]`. A LISTEN_FDS larger than what was passed (stale, or copied from another
 * process) would otherwise hand Node's own epoll, eventfd and pipe descriptors to COMMAND.
 */
export function inheritedDescriptors(extra: number[] = []): number[] {
  const fds = new Set([0, 1, 2, ...extra]);
  const listenFds = process.env.LISTEN_FDS ?? '';
  if (process.env.LISTEN_PID === String(process.pid) && /^[1-9][0-9]{0,6}$/.test(listenFds)) {
    for (let fd = 3; fd < 3 + Number(listenFds); fd++) {
      const target = readDescriptorTarget(fd);
      if (target === undefined || target === 'anon_inode:[eventpoll]') break;
      fds.add(fd);
    }
  }
  return [...fds].sort((a, b) => a - b);
}

/**
 * @internal
 * Undoes what Node did to the descriptors the new program inherits: close-on-exec (Node sets it at start-up on every
 * descriptor it inherited, libuv uv_disable_stdio_inheritance), O_NONBLOCK on stdio (libuv sets it on pipes and TTYs
 * it opens; a blocking program would then see EAGAIN) and raw terminal mode.
 * With `saved` flags, stdio gets its saved file status flags back; otherwise O_NONBLOCK is cleared.
 */
export function restoreStdio(system: SystemCalls, saved?: number[], keep: number[] = inheritedDescriptors()): void {
  // libuv marks inherited descriptors close-on-exec only up to the first gap above fd 15, so one inherited at a high
  // number (a shell's fd 255, a leaked socket) would reach COMMAND: every descriptor not named is closed at exec.
  // Without /proc none are listed: only the named descriptors are touched.
  const named = new Set(keep);
  for (const fd of readOpenDescriptors()) if (!named.has(fd)) system.setFdCloexec(fd, 1); // -EBADF: the directory's own
  for (const fd of keep) system.setFdCloexec(fd, 0); // -EBADF for a descriptor that is not open: nothing to keep
  // A terminal left in raw mode by this program would stay raw for the next one. Node restores it only at exit.
  if (tty.isatty(0) && process.stdin.isRaw) process.stdin.setRawMode(false);
  [0, 1, 2].forEach((fd, i) => {
    const flags = system.getFdFlags(fd);
    if (flags < 0) return;
    const wanted = saved && saved[i]! >= 0 ? saved[i]! : flags & ~fs.constants.O_NONBLOCK;
    if (wanted !== flags) system.setFdFlags(fd, wanted);
  });
}

/**
 * @internal
 * What execve needs besides the command: the environment (default process.env), the system calls (default the
 * addon's: systemCalls('execve')), the stdio flags saved before anything touched stdio (see saveStdioFlags), and
 * more descriptors to pass on.
 */
export interface ExecveOptions {
  env?: NodeJS.ProcessEnv;
  system?: SystemCalls;
  savedStdioFlags?: number[];
  keepFds?: number[];
}

/** The error for a command exec could not run: reason 'command-not-found' (ENOENT) or 'command-not-executable'. */
function execFailure(errno: number, file: string, detail?: string): IoFlusherError {
  const notFound = Math.abs(errno) === ENOENT;
  return systemError({
    syscall: 'execve',
    errno,
    path: file,
    detail,
    reason: notFound ? 'command-not-found' : 'command-not-executable',
    hint: notFound ? 'check the command name and PATH' : 'check that it is an executable file this user may run, with a valid interpreter line',
  });
}

/**
 * @internal The file execve would run for `command` (found as execvp(3) would), or the error it would fail with: not
 * found (ENOENT), or not an executable regular file (EACCES). Callers check this before changing anything, so that a
 * mistyped command is reported as such, not after a warning about running it unprotected.
 */
export function commandFile(command: string, envPath?: string): string {
  const file = resolveCommand(command, envPath);
  if (!file) throw execFailure(ENOENT, command, command.includes('/') ? undefined : 'not found in PATH');
  let executable: boolean;
  try {
    fs.accessSync(file, fs.constants.X_OK);
    executable = fs.statSync(file).isFile();
  } catch {
    executable = false;
  }
  if (!executable) throw execFailure(EACCES, file, 'not an executable file');
  return file;
}

/** @internal execve(path, argv, env), the command found as execvp(3) would. Returns only by throwing IoFlusherError. */
export function execve(command: string, args: string[], options: ExecveOptions = {}): never {
  const { env = process.env, system = execCalls(), savedStdioFlags, keepFds } = options;
  if (!isMainThread) throw mainThreadOnly('execve');
  const file = commandFile(command, env.PATH);
  const envp = Object.entries(env)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  restoreStdio(system, savedStdioFlags, inheritedDescriptors(keepFds));
  throw execFailure(system.execve(file, [command, ...args], envp), file);
}

export interface ReexecOptions {
  /** When the state cannot be set, go on without re-executing (returning the error) instead of throwing. */
  allowUnprotected?: boolean;
}

/** What {@link reexecWithIoFlusher} returns in the re-executed process (or, with `allowUnprotected`, in the first). */
export interface ReexecResult {
  /** True when this process is the re-executed one (the call that exec'd never returns). */
  reexecuted: boolean;
  /** Threads of this process that lack IO_FLUSHER now (empty when every thread has it). */
  unprotectedThreads: Array<{
    /** The thread id. */
    tid: number;
    /** The thread's name (comm). */
    name: string;
  }>;
  /** Set when allowUnprotected let a failure through. */
  error?: IoFlusherError;
}

/**
 * What IO_FLUSHER_REEXEC holds: this process's pid and start time. execve keeps both, so the re-executed process
 * recognises itself; a marker inherited from elsewhere (a stale environment, a reused pid) does not match.
 */
function reexecMarker(): string {
  let startTime = 0;
  try {
    startTime = readThreadStat(process.pid, process.pid).startTime;
  } catch {
    // no /proc: the pid alone
  }
  return `${process.pid}:${startTime}`;
}

/** Set in the re-executed process once its marker has been read (and removed from the environment). */
let reexecutedHere = false;

/**
 * For a Node daemon started without `io-flusher exec`: sets IO_FLUSHER on the main thread and re-executes this
 * process (same executable, execArgv, argv, environment and stdio), so every thread of the new process has it from
 * birth. In the re-executed process it returns at once and reports any thread lacking the state; the marker is then
 * removed from the environment, so the daemon's own children do not inherit it. Call it first thing: output still
 * buffered in process.stdout/stderr when it execs is lost.
 */
export function reexecWithIoFlusher(ioFlusher: IoFlusher, options: ReexecOptions = {}): ReexecResult {
  assertObject(options, 'options');
  const allowUnprotected = options.allowUnprotected; // read once
  assertOptionalBoolean(allowUnprotected, 'options.allowUnprotected');
  if (!isMainThread) throw mainThreadOnly('reexecWithIoFlusher()');
  const unprotected = () => ioFlusher.listThreads().filter((t) => !t.ioFlusher).map(({ tid, name }) => ({ tid, name }));
  const marker = process.env[REEXEC_ENV];
  if (marker !== undefined) {
    delete process.env[REEXEC_ENV];
    if (marker === reexecMarker()) reexecutedHere = true;
    // Anything else is stale (inherited from a process that re-executed itself, or from a reused pid): ignored.
  }
  if (reexecutedHere) {
    // execve keeps the state, so it is there unless something cleared it since: never report success without it.
    if (!ioFlusher.threadFlags(process.pid, process.pid).ioFlusher) {
      throw new IoFlusherError({
        code: 'ERR_IO_FLUSHER_VERIFY',
        reason: 'verification-failed',
        emulated: ioFlusher.emulated,
        message: 'ERR_IO_FLUSHER_VERIFY: this process was re-executed with IO_FLUSHER set, but its main thread is not in IO_FLUSHER state',
        hint: 'something cleared the state after the re-exec; call reexecWithIoFlusher() first thing, before other code',
      });
    }
    return { reexecuted: true, unprotectedThreads: unprotected() };
  }
  // The same program must run again: one read from stdin (node < file, node -) is gone once read.
  const script = process.argv[1];
  const evaluated = process.execArgv.some((a) => /^(-e|-p|--eval|--print)(=|$)/.test(a) || /^-[a-z]*[ep]$/.test(a));
  if (!evaluated && (script === undefined || script === '-')) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_REEXEC_STDIN',
      reason: 'reexec-impossible',
      emulated: ioFlusher.emulated,
      message: 'ERR_IO_FLUSHER_REEXEC_STDIN: reexecWithIoFlusher() cannot re-execute a program read from stdin, which would not be there to read again',
      hint: 'run the program from a file, or start it through `io-flusher exec -- node FILE`',
    });
  }
  // Taken before the state changes, so that without the addon (no execve) nothing is changed.
  const system = execCalls();
  try {
    ioFlusher.setIoFlusher(true);
  } catch (err) {
    if (allowUnprotected && err instanceof IoFlusherError) return { reexecuted: false, unprotectedThreads: unprotected(), error: err };
    throw err;
  }
  const env = { ...process.env, [REEXEC_ENV]: reexecMarker() };
  return execve(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { env, system });
}
