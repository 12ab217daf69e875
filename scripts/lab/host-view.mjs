// The pressure lab's view from the host: what QEMU itself can tell about a guest whose own observer has gone silent.
//
// Why: in the swap variant, memory can run out so completely that nothing in the guest runs any more, the lab's
// observer included (it runs with IO_FLUSHER, so its allocations may not enter I/O, and the kernel does not call the
// OOM killer for such an allocation). The guest kernel still handles interrupts: a key press of QEMU's emulated
// keyboard reaches its sysrq handler, which prints every task with its kernel stack (sysrq t), a backtrace of each CPU
// (sysrq l) and the memory state (sysrq m) straight to the serial console, without allocating memory. And QEMU counts
// the bytes written to the guest's virtual disk, the NBD server's backing store: every write the server completes
// reaches that disk, at the latest when the guest's writeback expires dirty pages (30 s).
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
export const DUMP_2_LATEST_SECONDS = 600;

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

/** One kernel stack frame as /proc/PID/stack gives it in the guest's record: the function's name only. */
const frameName = (line) => {
  const f = line.trim();
  if (!f || f.startsWith('?') || f.startsWith('<') || /^(Call Trace|RIP|RSP|RAX|RDX|RBP|R\d+|FS|CS|CR\d|DR\d|Code):?/.test(f)) return undefined;
  const m = /^([A-Za-z0-9_.]+)\+0x[0-9a-f]+\/0x[0-9a-f]+/.exec(f);
  return m ? m[1] : undefined;
};

/**
 * The tasks of a sysrq t dump: { name, state, pid, tgid, stack } with the stack innermost frame first, joined by ' < '
 * as in the guest's snapshots (unreliable frames, printed with '?', left out). tgid is undefined on kernels that do
 * not print it (before 6.x): the host then knows only the processes' main threads.
 */
export function parseSysrqTasks(text) {
  const tasks = [];
  let cur;
  for (const raw of text.split('\n')) {
    const line = stripTimestamp(raw.replace(/\r$/, ''));
    const m = /^task:(.{1,15}?)\s+state:(\S)\b.*?\bpid:\s*(\d+)(?:\s+tgid:\s*(\d+))?/.exec(line);
    if (m) {
      cur = { name: m[1].trim(), state: m[2], pid: Number(m[3]), tgid: m[4] === undefined ? undefined : Number(m[4]), frames: [] };
      tasks.push(cur);
      continue;
    }
    if (!cur) continue;
    if (/^\s*<\/TASK>/.test(line)) {
      cur = undefined;
      continue;
    }
    const f = frameName(line);
    if (f) cur.frames.push(f);
  }
  return tasks.map(({ frames, ...t }) => ({ ...t, stack: frames.join(' < ') }));
}

/** The CPUs' backtraces of a sysrq l dump: { cpu, pid, name, stack } for each CPU that was running a task. */
export function parseCpuBacktraces(text) {
  const cpus = [];
  let cur;
  for (const raw of text.split('\n')) {
    const line = stripTimestamp(raw.replace(/\r$/, ''));
    const head = /^CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)/.exec(line);
    if (head) {
      cur = { cpu: Number(head[1]), pid: Number(head[2]), name: head[3], frames: [] };
      cpus.push(cur);
      continue;
    }
    if (!cur) continue;
    if (/^\s*<\/TASK>/.test(line) || /^NMI backtrace/.test(line)) {
      cur = /^NMI backtrace/.test(line) ? undefined : cur;
      continue;
    }
    const f = frameName(line);
    if (f) cur.frames.push(f);
  }
  return cpus.map(({ frames, ...c }) => ({ ...c, stack: frames.join(' < ') }));
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
  for (const t of parseSysrqTasks(dump.text)) {
    const role = roleOf(t);
    if (!role) continue;
    const onCpu = running.get(t.pid);
    threads.push({ role, pid: t.tgid ?? t.pid, tid: t.pid, name: t.name, state: t.state, stack: onCpu?.stack || t.stack, onCpu: onCpu ? onCpu.cpu : undefined });
  }
  const memory = /Free swap\s*=\s*(\d+)kB/.exec(dump.text);
  return { t: dump.t, threads, memoryKiB: memory ? { SwapFree: Number(memory[1]) } : {} };
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
  command(cmd) {
    if (this.closed) return Promise.reject(new Error('monitor closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ resolve, reject });
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
 * far, `lastOutputAt()` the time (ms) of its last chunk. Returns the host's view for the record.
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
  let afterDump1;
  let lastWrite;
  let lastWriteAt;
  const dump = async (name) => {
    // The console's loglevel first (sysrq 7: every message below KERN_DEBUG), as the lab keeps kernel messages off it.
    const before = output().length;
    const at = now();
    for (const key of ['7', 't', 'l', 'm']) {
      await monitor.command(`sendkey alt-sysrq-${key}`);
      // The dump is printed from the interrupt: wait until the console has been quiet for 3 s (at most 120 s).
      const start = Date.now();
      await sleep(Math.min(1000, quietMs));
      while (Date.now() - lastOutputAt() < quietMs && Date.now() - start < 120000) await sleep(Math.min(500, quietMs / 2));
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
    const stallReported = /^lab: no progress for \d+s at t=/m.test(text);
    const recordBegun = text.includes('lab-record-begin');
    const silentFor = (Date.now() - lastOutputAt()) / 1000;
    try {
      if (phase === 'watching' && t0 !== undefined && stallReported && !recordBegun && silentFor >= silentSeconds) {
        view.silentAt = Math.round(now());
        log(`host: the observer has been silent for ${Math.round(silentFor)} s during a stall: taking the tasks from the host`);
        phase = 'dumped-1';
        await dump('dump-1');
        dump1At = now();
        afterDump1 = output().length;
      } else if (phase === 'dumped-1') {
        // The observer is back (a line of its own after dump 1): it reports the run itself.
        if (/^lab[:-]/m.test(text.slice(afterDump1))) {
          phase = 'observer-back';
          view.observerBack = Math.round(now());
          log('host: the observer printed again; the run goes on');
          // Kernel messages off the console again (sysrq 1, as the observer set it): they would cut its record's lines.
          await monitor.command('sendkey alt-sysrq-1');
        } else if ((now() - dump1At >= intervalSeconds && now() - lastWriteAt >= hangSeconds) || now() - dump1At >= latestSeconds) {
          await dump('dump-2');
          phase = 'ended';
          view.endedByHost = Math.round(now());
          log('host: ending the VM');
          await monitor.command('quit').catch(() => {});
        }
      }
    } catch {
      // The monitor went away (the VM ended): the loop ends with `done`.
    }
    await sleep(Math.max(0, 1000 - (Date.now() - tickStart)));
  }
  monitor?.close();
  return view;
}
