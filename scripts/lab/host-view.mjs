// The pressure lab's view from the host: what QEMU itself can tell about a guest whose own observer has gone silent.
//
// Why: in the swap variant, memory can run out so completely that nothing in the guest runs any more, the lab's
// observer included (it runs with IO_FLUSHER, so its allocations may not enter I/O, and the kernel does not call the
// global OOM killer for such an allocation). The guest kernel still handles interrupts: a key press of QEMU's emulated
// keyboard reaches its sysrq handler, which prints every task with its kernel stack (sysrq t), a backtrace of each CPU
// (sysrq l) and the memory state (sysrq m) straight to the serial console, without allocating memory. And QEMU counts
// the bytes written to the guest's virtual disk, the NBD server's backing store: a write the server completes reaches
// that disk when the guest's writeback flushes it (52-68 s at most after /dev/nbd0's last progress in the runs that
// have both views), or never if that writeback is stuck, so record.mjs also compares the guest's memory figures.
//
// So, for every run, the host samples the disk's write counter once a second (QEMU's `info blockstats`, over the
// monitor socket vm/kernel-run opens with --monitor). When the observer has reported a stall and then printed nothing
// for SILENT_SECONDS, the host takes the tasks' stacks (dump 1), waits until the disk has seen no write for the hang
// bound and at least the settle interval has passed since dump 1, takes them again (dump 2), and ends the VM.
// scripts/lab/record.mjs classifies such a run from these two dumps and the disk's series (hostView in the record).
import net from 'node:net';

/** An observer that prints a line at least once a minute during a stall is silent after this long. */
export const SILENT_SECONDS = 120;
/** After dump 1, at least this long before dump 2 (record.mjs: SETTLED_MIN_SECONDS, plus slack). */
export const DUMP_INTERVAL_SECONDS = 245;
/** Dump 2 waits for this long without a write to the disk (record.mjs: HANG_MIN_SECONDS, plus slack). */
export const HOST_HANG_SECONDS = 305;
/** Dump 2 comes at the latest this long after dump 1, progress or not. */
export const DUMP_2_LATEST_SECONDS = 450;

// Console text: QEMU's readline echo and the kernel's timestamps are noise here.
const stripAnsi = (s) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
const stripTimestamp = (line) => line.replace(/^\[\s*\d+\.\d+\]\s?/, '');

/** `info blockstats` as { device: { readBytes, writeBytes } }. */
export function parseBlockstats(text) {
  const out = {};
  for (const line of stripAnsi(text).split(/\r?\n/)) {
    const m = /^\s*([^\s:]+):.*\brd_bytes=(\d+).*\bwr_bytes=(\d+)/.exec(line);
    if (m) out[m[1]] = { readBytes: Number(m[2]), writeBytes: Number(m[3]) };
  }
  return out;
}

/**
 * The frames of one kernel stack as the console prints it, innermost first, each as /proc/PID/stack names it in the
 * guest's record (the function's name only). Unreliable frames ('? ') are left out, and so are the frames of an
 * interrupt (between <IRQ>, <NMI> or <SOFTIRQ> and its end): for the task the sysrq interrupted, where it was is the
 * RIP line after them, which becomes its innermost frame.
 */
class StackReader {
  frames = [];
  inInterrupt = false;
  add(line) {
    const f = line.trim();
    if (/^<(IRQ|NMI|SOFTIRQ)>$/.test(f)) this.inInterrupt = true;
    else if (/^<\/(IRQ|NMI|SOFTIRQ)>$/.test(f)) this.inInterrupt = false;
    else if (!this.inInterrupt) {
      // A RIP line is where the code was when an interrupt or exception came: right after the interrupt's entry
      // (asm_common_interrupt, asm_sysvec_*) it is the task's innermost frame; later in the trace (a page fault taken
      // inside the kernel, e.g. in copy_to_user) it is one more frame, below the exception's own.
      const rip = /^RIP: [0-9a-f]{4}:([A-Za-z0-9_.]+)\+0x/.exec(f);
      if (rip && this.frames.every((x) => x.startsWith('asm_'))) this.frames = [];
      if (rip) this.frames.push(rip[1]);
      const m = /^([A-Za-z0-9_.]+)\+0x[0-9a-f]+\/0x[0-9a-f]+/.exec(f);
      if (m) this.frames.push(m[1]);
    }
  }
  get stack() {
    return this.frames.join(' < ');
  }
}

// The lines of a dump, without the kernel's timestamps and carriage returns.
const consoleLines = (text) => text.split('\n').map((raw) => stripTimestamp(raw.replace(/\r$/, '')));

/**
 * The tasks of a sysrq t dump: { name, state, pid, tgid, flags, stack }, the stack as StackReader gives it. A header
 * is found anywhere in a line (an observer's line can precede it). `incomplete` when a task's trace came without its
 * header (a cut line): such a dump cannot show that every thread stayed put. tgid is undefined on kernels that do not
 * print it (6.1 and 5.10): the host then cannot tell a process's other threads.
 */
export function parseSysrqTasks(text) {
  const tasks = [];
  let cur;
  let incomplete = false;
  let cpuSection = false; // a CPU's backtrace (sysrq l, an OOM report): its Call Trace is not a task's
  for (const line of consoleLines(text)) {
    if (/^CPU: \d+ (?:UID: \d+ )?PID: \d+ Comm: /.test(line)) {
      cur = undefined;
      cpuSection = true;
      continue;
    }
    const m = /task:(.{1,15}?)\s+state:(\S)\b.*?\bpid:\s*(\d+)(?:\s+tgid:\s*(\d+))?.*?\bflags:(0x[0-9a-f]+)/.exec(line);
    if (m) {
      cur = { name: m[1].trim(), state: m[2], pid: Number(m[3]), tgid: m[4] === undefined ? undefined : Number(m[4]), flags: m[5], reader: new StackReader(), traced: false };
      tasks.push(cur);
      cpuSection = false;
      continue;
    }
    if (/^\s*Call Trace:/.test(line)) {
      if (cpuSection) {
        cpuSection = false;
        continue;
      }
      if (!cur || cur.traced) incomplete = true;
      if (cur) cur.traced = true;
      continue;
    }
    if (!cur) continue;
    if (/^\s*<\/TASK>/.test(line)) {
      cur = undefined;
      continue;
    }
    cur.reader.add(line);
  }
  return { tasks: tasks.map(({ reader, traced, ...t }) => ({ ...t, stack: reader.stack })), incomplete };
}

/**
 * The CPUs' backtraces of a sysrq l dump: { cpu, pid, name, stack } for each CPU that was running a task. A section
 * ends at </TASK>, at the next CPU, or at a line that is not part of a backtrace (an OOM report's CPU line would
 * otherwise take in what follows).
 */
export function parseCpuBacktraces(text) {
  const cpus = [];
  let cur;
  for (const line of consoleLines(text)) {
    const head = /^CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)/.exec(line);
    if (head) {
      cur = { cpu: Number(head[1]), pid: Number(head[2]), name: head[3], reader: new StackReader() };
      cpus.push(cur);
      continue;
    }
    if (!cur) continue;
    if (/^\s*<\/TASK>/.test(line) || !/^(\s|(RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d\d|FS|GS|CS|DS|ES|CR\d|DR\d|PKRU|Code|Call Trace|Hardware name|Workqueue)\b)/.test(line)) {
      cur = undefined;
      continue;
    }
    cur.reader.add(line);
  }
  return cpus.map(({ reader, ...c }) => ({ ...c, stack: reader.stack }));
}

/**
 * The memory state of a sysrq m dump, in KiB with the guest's /proc/meminfo names: MemFree, Dirty, Writeback (from
 * the first Mem-Info block, in pages of 4 KiB) and SwapFree. A run in which these move between the dumps progressed.
 */
export function parseSysrqMemory(text) {
  const out = {};
  const lines = consoleLines(text);
  const at = lines.findIndex((l) => /^Mem-Info:/.test(l));
  if (at >= 0) {
    const pages = {};
    for (const l of lines.slice(at + 1, at + 16)) {
      if (/^Node /.test(l)) break;
      for (const [, k, v] of l.matchAll(/\b(\w+):(\d+)/g)) pages[k] ??= Number(v);
    }
    for (const [k, name] of [['free', 'MemFree'], ['dirty', 'Dirty'], ['writeback', 'Writeback']]) if (pages[k] !== undefined) out[name] = pages[k] * 4;
  }
  const swap = /Free swap\s*=\s*(\d+)kB/.exec(text);
  if (swap) out.SwapFree = Number(swap[1]);
  return out;
}

/** The dumps as lab-pressure.mjs keeps their console text beside the results, and back (for --reclassify). */
export const formatDumps = (dumps) => dumps.map((d) => `=== ${d.name} at host t=${d.t} s\n${d.text}`).join('\n');
export function parseDumps(text) {
  const parts = text.split(/^=== (dump-\d) at host t=([\d.]+) s\n/m);
  const dumps = [];
  for (let i = 1; i + 2 < parts.length; i += 3) dumps.push({ name: parts[i], t: Number(parts[i + 1]), text: parts[i + 2] });
  return dumps;
}

/** The pids the observer announces on the console when its watch begins ("lab: pids: server=N writer=N hog=N"). */
export function parsePids(output) {
  const m = /^lab: pids: server=(\d+) writer=(\d+) hog=(\d+|none)$/m.exec(output);
  return m ? { server: Number(m[1]), writer: Number(m[2]), hog: m[3] === 'none' ? undefined : Number(m[3]) } : undefined;
}

/**
 * A dump as a snapshot shaped like the guest's (record.mjs compares them the same way): the threads of the server,
 * the writer and the hog, every other blocked (D) task, and kswapd. A running task's stack comes from the CPU
 * backtraces when one CPU was running it (sysrq t prints a stale one for it).
 */
export function dumpSnapshot(dump, pids) {
  const running = new Map(parseCpuBacktraces(dump.text).map((c) => [c.pid, c]));
  const { tasks, incomplete } = parseSysrqTasks(dump.text);
  const roleOf = (t) => {
    const proc = t.tgid ?? t.pid;
    if (pids && proc === pids.server) return 'server';
    if (pids && proc === pids.writer) return 'writer';
    if (pids && pids.hog !== undefined && proc === pids.hog) return 'hog';
    if (t.state === 'D') return 'blocked';
    if (t.name.startsWith('kswapd')) return 'kswapd';
    return undefined;
  };
  const threads = [];
  for (const t of tasks) {
    const role = roleOf(t);
    if (!role) continue;
    // A running thread's stack from its CPU's backtrace (sysrq t prints a stale one for it), only if sysrq t saw it
    // running: the two are seconds apart.
    const onCpu = t.state === 'R' ? running.get(t.pid) : undefined;
    threads.push({ role, pid: t.tgid ?? t.pid, tid: t.pid, name: t.name, state: t.state, flags: t.flags, stack: onCpu?.stack || t.stack, onCpu: onCpu?.cpu });
  }
  return {
    t: dump.t,
    threads,
    memoryKiB: parseSysrqMemory(dump.text),
    incomplete: incomplete || undefined,
    tgidMissing: tasks.some((t) => t.tgid === undefined) || undefined,
  };
}

/** A minimal client of QEMU's human monitor: one command at a time, its answer is the text before the next prompt. */
class Monitor {
  constructor(socket) {
    this.socket = socket;
    this.buffer = '';
    this.queue = [];
    this.greeted = false;
    socket.setEncoding('utf8');
    socket.on('data', (d) => this.onData(d));
    socket.on('close', () => {
      this.closed = true;
      for (const q of this.queue.splice(0)) q.reject(new Error('monitor closed'));
    });
    socket.on('error', () => {});
  }
  onData(d) {
    this.buffer += d;
    for (let i; (i = this.buffer.indexOf('(qemu) ')) >= 0; ) {
      const answer = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + 7);
      if (!this.greeted) this.greeted = true;
      else this.queue.shift()?.resolve(answer);
    }
  }
  /** The answer to one command; a monitor that does not answer within timeoutMs is closed (the next tick reconnects). */
  command(cmd, timeoutMs = 10000) {
    if (this.closed) return Promise.reject(new Error('monitor closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        reject(new Error(`monitor: no answer to ${cmd} in ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = (fn) => (v) => {
        clearTimeout(timer);
        fn(v);
      };
      this.queue.push({ resolve: settle(resolve), reject: settle(reject) });
      this.socket.write(`${cmd}\n`);
    });
  }
  close() {
    this.socket.destroy();
  }
}

const connect = (path) =>
  new Promise((resolve) => {
    const s = net.createConnection(path);
    s.once('connect', () => resolve(new Monitor(s)));
    s.once('error', () => resolve(undefined));
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Watches one run from the host until `done` resolves (kernel-run has exited): samples the disk once a second and, if
 * the observer goes silent during a stall, takes the two dumps and ends the VM. `output()` gives kernel-run's stdout so
 * far, `lastOutputAt()` the time (ms) of its last chunk (kernel messages included: a dump is over when the console is
 * quiet). The observer's silence counts its own lines only ("lab: ...", "lab-..."): kernel messages on the console
 * (NBD_LAB_PRINTK=7) are not the observer talking. Returns the host's view for the record.
 */
export async function watchHost({ monitorPath, output, lastOutputAt, done, log = () => {}, timing = {} }) {
  const {
    silentSeconds = SILENT_SECONDS,
    intervalSeconds = DUMP_INTERVAL_SECONDS,
    hangSeconds = HOST_HANG_SECONDS,
    latestSeconds = DUMP_2_LATEST_SECONDS,
    quietMs = 3000,
  } = timing;
  let finished = false;
  done.then(() => (finished = true));
  const view = { series: { t: [], diskWriteBytes: [], diskReadBytes: [] }, dumps: [] };
  let monitor;
  let t0;
  const now = () => (Date.now() - t0) / 1000;
  let phase = 'watching';
  let dump1At;
  let dump1Start; // where dump 1 began in the output: an observer line from there on means it is alive
  let lastWrite;
  let lastWriteAt;
  let scanned = 0;
  let lastObserverLineAt = Date.now();
  const observerLine = /(^|\n)lab[:-]/;
  const observerBack = () => observerLine.test(output().slice(dump1Start));
  const dump = async (name) => {
    // The console's loglevel first (sysrq 7: every message below KERN_DEBUG), as the lab keeps kernel messages off it.
    const before = output().length;
    const at = now();
    for (const key of ['7', 't', 'l', 'm']) {
      await monitor.command(`sendkey alt-sysrq-${key}`);
      // The dump is printed from the interrupt: wait until the console has been quiet for 3 s (at most 120 s).
      const start = Date.now();
      await sleep(Math.min(1000, quietMs));
      while (!finished && Date.now() - lastOutputAt() < quietMs && Date.now() - start < 120000) await sleep(Math.min(500, quietMs / 2));
    }
    view.dumps.push({ name, t: Math.round(at * 10) / 10, text: output().slice(before) });
    log(`host: ${name} taken at t=${Math.round(at)} s (${output().length - before} bytes of console)`);
  };
  while (!finished) {
    if (!monitor || monitor.closed) {
      monitor = await connect(monitorPath);
      if (!monitor) {
        await sleep(500);
        continue;
      }
    }
    const tickStart = Date.now();
    let stats;
    try {
      stats = parseBlockstats(await monitor.command('info blockstats'));
    } catch {
      continue;
    }
    const disk = Object.values(stats)[0];
    if (disk) {
      t0 ??= Date.now();
      const t = Math.round(now() * 10) / 10;
      view.series.t.push(t);
      view.series.diskWriteBytes.push(disk.writeBytes);
      view.series.diskReadBytes.push(disk.readBytes);
      if (disk.writeBytes !== lastWrite) {
        lastWrite = disk.writeBytes;
        lastWriteAt = t;
      }
    }
    const text = output();
    // From the start of the last line scanned: a line can arrive in pieces.
    if (text.length > scanned && observerLine.test(text.slice(Math.max(0, text.lastIndexOf('\n', scanned - 1))))) lastObserverLineAt = Date.now();
    scanned = text.length;
    const stallReported = /^lab: no progress for \d+s at t=/m.test(text);
    const recordBegun = text.includes('lab-record-begin');
    const silentFor = (Date.now() - lastObserverLineAt) / 1000;
    try {
      if (phase === 'watching' && t0 !== undefined && stallReported && !recordBegun && silentFor >= silentSeconds) {
        view.silentAt = Math.round(now());
        log(`host: the observer has been silent for ${Math.round(silentFor)} s during a stall: taking the tasks from the host`);
        phase = 'dumped-1';
        dump1Start = text.length;
        await dump('dump-1');
        dump1At = now();
      } else if (phase === 'dumped-1') {
        // The observer is back (a line of its own since dump 1 began): it reports the run itself. (pressure-run.sh
        // takes kernel messages off the console again before it prints its record.)
        const back = () => {
          phase = 'observer-back';
          view.observerBack = Math.round(now());
          log('host: the observer printed again; the run goes on');
        };
        if (observerBack()) back();
        else if ((now() - dump1At >= intervalSeconds && now() - lastWriteAt >= hangSeconds) || now() - dump1At >= latestSeconds) {
          await dump('dump-2');
          // Once more before ending the VM: the observer may have come back during dump 2.
          if (observerBack()) back();
          else {
            phase = 'ended';
            view.endedByHost = Math.round(now());
            log('host: ending the VM');
            await monitor.command('quit').catch(() => {});
          }
        }
      }
    } catch {
      // The monitor went away (the VM ended): the loop ends with `done`.
    }
    // Once the VM is told to quit, nothing more is sent: a tick that took over a second (a dump) would otherwise
    // reconnect to a monitor that is going away.
    if (phase === 'ended') await done;
    else await sleep(Math.max(0, 1000 - (Date.now() - tickStart)));
  }
  monitor?.close();
  return view;
}
