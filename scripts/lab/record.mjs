// The pressure lab's records: the guest's output (scripts/lab/pressure-run.sh) turned into one JSON line of
// docs/lab/pressure.jsonl, and the definitions that classify a run. Pure functions: the summary, the plots and the
// campaign all read the record through these, so a run is classified the same way everywhere, old records included.
//
// Definitions (docs/lab/README.md states them for the reader):
//   progress     a completed write sector on /dev/nbd0 or a byte written by the writer, seen by a once-a-second sample
//   stall        a time without progress of at least the stall threshold (10 s unless the record says otherwise)
//   no-stall     the writer finished (fsync included) and no stall reached the threshold
//   stalled      the writer finished, after at least one stall that ended on its own
//   hung         no progress until the hang bound (at least 300 s), and every server and writer thread blocked (D) at
//                the start of that stall is blocked at its end in the same place (same kernel stack); or, when they
//                moved, the same holds from the snapshot taken 60 s into the stall (NBD_LAB_SETTLE_S) to the end: a
//                thread that goes deeper along one path in the first seconds (a swap-out waits for a bio, then for a
//                request tag) and then stays put for 240 s is hung, and the record names the move
//   unresolved   no progress until a bound shorter than 300 s, or blocked threads that moved late (after the settle
//                snapshot) or without one: neither stalled nor hung
//   incomplete   still progressing at the run's bound
//   failed       no usable result (the VM, the setup or the writer failed)
//   unsupported  the kernel lacks what the variant needs (the memcg variant without the v1 memory controller)
// A run whose observer went silent (memory exhausted in the guest, see scripts/lab/host-view.mjs) is classified from
// the host's view instead: progress is a write reaching the guest's virtual disk (the server's backing store), and
// the snapshots are the kernel's own dumps of the tasks (sysrq t and l), taken when the observer had been silent for
// two minutes during a stall and again once the disk had seen no write for 300 s (at least 240 s later). hung and
// unresolved then mean the same as above, with those two dumps as the start and the end.
// Records without a series were measured under the old definition (a run was "hung" after 30 s without a completed
// nbd0 write, the watch then stopped): their completed runs are re-classified from their longest stall (nbd0 writes
// only), their "hung" runs are unresolved (cut off at 30 s).

import { dumpSnapshot, parseCpuBacktraces, parsePids } from './host-view.mjs';

export const HANG_MIN_SECONDS = 300;
/** A hang proven from the settle snapshot needs the threads unchanged for at least this long (300 s less the 60). */
export const SETTLED_MIN_SECONDS = 240;
/**
 * The time between two snapshots is measured between the samples that took them, each at most about a second late
 * (a 300 s bound less a 60 s settle gave 239.3-240.6 s): one second of slack, so a run is not called unresolved by a
 * fraction of a second, and a longer bound in the record (NBD_LAB_HANG_S) asks for its full interval.
 */
export function settledMinSeconds(record) {
  const interval = record.hangBoundSeconds - (record.settleSeconds ?? 60);
  return Math.max(SETTLED_MIN_SECONDS, interval) - 1;
}
export const DEFAULT_STALL_SECONDS = 10;
export const OUTCOMES = ['no-stall', 'stalled', 'hung', 'unresolved', 'incomplete', 'failed', 'unsupported'];
/** The outcomes that say something about the server; failed and unsupported runs say something about the lab. */
export const COUNTED = new Set(['no-stall', 'stalled', 'hung', 'unresolved', 'incomplete']);

const scalar = (text) => {
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (text === 'true' || text === 'false' || text === 'null') return JSON.parse(text);
  if (/^[{[]/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
};
const loadavg = (text) => (typeof text === 'string' ? text.split(' ').map(Number) : undefined);

/**
 * The guest's record (the lines between lab-record-begin and lab-record-end in kernel-run's output; the guest prints
 * it in parts, the one it can print with shell builtins first) as an object: the lab-kv pairs, the series, the
 * snapshots of the tasks, the kernel log. undefined when the output has no record; truncated when a part has no end
 * or fewer parts came than the first announced (recordParts).
 */
export function parseGuestOutput(output) {
  const recordLines = [];
  let inside = false;
  let parts = 0;
  for (const line of output.split('\n')) {
    if (line === 'lab-record-begin') {
      inside = true;
      parts++;
    } else if (line === 'lab-record-end') inside = false;
    else if (inside) recordLines.push(line);
  }
  if (parts === 0) return undefined;
  const guest = {};
  const series = { t: [], nbd0WriteSectors: [], writerBytes: [], nbd0ReadSectors: [], pagesSwappedOut: [] };
  const snapshots = {};
  const kernelLog = [];
  const snapshot = (name, tMs) => (snapshots[name] ??= { t: Number(tMs) / 1000, memoryKiB: {}, threads: [] });
  for (const line of recordLines) {
    const f = line.split('\t');
    switch (f[0]) {
      case 'lab-kv':
        guest[f[1]] = scalar(f.slice(2).join('\t'));
        break;
      case 'lab-sample':
        if (f.length < 6) break;
        series.t.push(Number(f[1]) / 1000);
        series.nbd0WriteSectors.push(Number(f[2]));
        series.writerBytes.push(Number(f[3]));
        series.nbd0ReadSectors.push(Number(f[4]));
        series.pagesSwappedOut.push(Number(f[5]));
        break;
      case 'lab-thread': {
        if (f.length < 11) break;
        const [, name, tMs, role, pid, tid, flags, state, wchan, comm, stack] = f;
        snapshot(name, tMs).threads.push({ role, pid: Number(pid), tid: Number(tid), name: comm, state, flags, wchan, stack });
        break;
      }
      case 'lab-memory': {
        const s = snapshot(f[1], f[2]);
        for (const kv of f.slice(3)) {
          const [k, v] = kv.split('=');
          s.memoryKiB[k] = Number(v);
        }
        break;
      }
      case 'lab-dmesg':
        kernelLog.push(f.slice(1).join('\t'));
        break;
    }
  }
  return { guest, series, snapshots, kernelLog, truncated: inside || parts < (guest.recordParts ?? 1) };
}

/**
 * Times without progress of at least thresholdSeconds: { startSeconds, seconds, ended }. The watch begins at
 * fromSeconds (the swap variant's hog first fills free memory, which needs no I/O: its watch begins with the first page
 * swapped out, or the writer's release).
 */
export function stallEpisodes(series, thresholdSeconds, { writerFinished = false, fromSeconds = 0 } = {}) {
  const episodes = [];
  let lastChange = fromSeconds;
  let prevSectors = 0;
  let prevBytes = 0;
  let longest = 0;
  for (let i = 0; i < series.t.length; i++) {
    const t = series.t[i];
    if (t <= fromSeconds) {
      prevSectors = series.nbd0WriteSectors[i];
      prevBytes = series.writerBytes[i];
      continue;
    }
    const moved = series.nbd0WriteSectors[i] !== prevSectors || series.writerBytes[i] !== prevBytes;
    prevSectors = series.nbd0WriteSectors[i];
    prevBytes = series.writerBytes[i];
    if (!moved) continue;
    const gap = t - lastChange;
    longest = Math.max(longest, gap);
    if (gap >= thresholdSeconds) episodes.push({ startSeconds: round1(lastChange), seconds: round1(gap), ended: true });
    lastChange = t;
  }
  const last = series.t.at(-1) ?? 0;
  const trailing = last - lastChange;
  longest = Math.max(longest, trailing);
  // A writer that finished ended the last quiet time itself (its fsync returned).
  if (trailing >= thresholdSeconds) episodes.push({ startSeconds: round1(lastChange), seconds: round1(trailing), ended: writerFinished });
  return { episodes, longestStallSeconds: round1(longest) };
}
const round1 = (x) => Math.round(x * 10) / 10;

/**
 * Whether two kernel stacks of one thread are the same place. A stack read while the thread is being woken (a thread
 * in balance_dirty_pages sleeps at most 200 ms at a time, then checks again) can come out cut short, its outer
 * frames missing: the shorter then counts as the same place when it is the start of the longer and has at least
 * MIN_SAME_FRAMES frames.
 */
export const MIN_SAME_FRAMES = 4;
export function samePlace(a, b) {
  if (a === b) return 'same';
  const [short, long] = [a.split(' < '), b.split(' < ')].sort((x, y) => x.length - y.length);
  return short.length >= MIN_SAME_FRAMES && short.every((f, i) => f === long[i]) ? 'cut-short' : undefined;
}

/**
 * Where the tasks were at the start of the last stall and at its end. `same` is the hang's evidence: at least one
 * server thread was blocked (D) at the start, and every server and writer thread blocked then is blocked at the end
 * in the same place (samePlace).
 */
export function compareSnapshots(start, end) {
  if (!start || !end) return undefined;
  const at = new Map(end.threads.map((t) => [`${t.role}:${t.tid}`, t]));
  const blocked = start.threads.filter((t) => (t.role === 'server' || t.role === 'writer') && t.state === 'D');
  const moved = [];
  let cutShort = 0;
  for (const t of blocked) {
    const e = at.get(`${t.role}:${t.tid}`);
    const place = e && e.state === 'D' ? samePlace(t.stack, e.stack) : undefined;
    if (place === 'cut-short') cutShort++;
    if (!place) {
      moved.push({ role: t.role, tid: t.tid, name: t.name, start: `${t.state} ${t.stack}`, end: e ? `${e.state} ${e.stack}` : 'gone' });
    }
  }
  const blockedKeys = new Set(start.threads.filter((t) => t.state === 'D').map((t) => `${t.role}:${t.tid}`));
  const newlyBlocked = end.threads
    .filter((t) => t.state === 'D' && !blockedKeys.has(`${t.role}:${t.tid}`))
    .map((t) => ({ role: t.role, tid: t.tid, name: t.name, wchan: t.wchan }));
  return {
    startSeconds: start.t,
    endSeconds: end.t,
    blockedAtStart: blocked.map((t) => ({ role: t.role, tid: t.tid, name: t.name, wchan: t.wchan })),
    unchanged: blocked.length - moved.length,
    stacksCutShort: cutShort,
    moved,
    newlyBlocked,
    same: blocked.some((t) => t.role === 'server') && moved.length === 0,
  };
}

const RECLAIM = /shrink_(folio|page)_list|try_to_free_(mem_cgroup_)?pages|__alloc_pages_slowpath|do_try_to_free_pages|reclaim_throttle|__perform_reclaim/;

/**
 * What the blocked server threads of a snapshot are waiting for, from their stacks, most specific first. `noio`: the
 * server ran with IO_FLUSHER (its reclaim may not do I/O).
 */
export function causeOf(snapshot, { noio = false } = {}) {
  if (!snapshot) return undefined;
  const server = snapshot.threads.filter((t) => t.role === 'server');
  const stuck = server.filter((t) => t.state === 'D');
  // Server threads running (not blocked) in direct reclaim, as a CPU's backtrace shows them (the host's dumps). For a
  // protected server that is an allocation that may not do I/O (PF_MEMALLOC_NOIO) and finds nothing to free without
  // it: it retries, and the kernel does not call the global OOM killer for it (seen on 6.12, swap, protected: its other
  // threads wait on these).
  const runningInReclaim = server.some((t) => t.state === 'R' && t.onCpu !== undefined && RECLAIM.test(t.stack));
  const loop = runningInReclaim ? (noio ? 'noio-reclaim-loop' : 'reclaim-loop') : undefined;
  if (stuck.length === 0) return loop ?? 'no-server-thread-blocked';
  const stacks = stuck.map((t) => t.stack).join(' | ');
  const reclaim = RECLAIM.test(stacks);
  if (reclaim && /swap_writepage|swap_writeout|nbd_|sock_xmit|blk_mq_get_tag|__submit_bio/.test(stacks)) return 'reclaim-io';
  if (/balance_dirty_pages/.test(stacks)) return 'balance_dirty_pages';
  if (reclaim && /folio_wait_writeback|wait_on_page_writeback/.test(stacks)) return 'reclaim-waits-on-writeback';
  if (loop) return loop;
  if (reclaim) return 'direct-reclaim';
  if (/folio_wait_writeback|wait_on_page_writeback|__filemap_fdatawait/.test(stacks)) return 'waiting-on-writeback';
  if (/swap_read|swapin|do_swap_page/.test(stacks)) return 'swap-in';
  // The server's threads wait in its backing filesystem while a kernel thread of that filesystem (its journal, an
  // ext4 worker) is in direct reclaim writing to /dev/nbd0: reclaim I/O on the server's behalf, which the server's
  // own PF_MEMALLOC_NOIO does not cover (seen in the swap variant, protected side).
  const kernelThreads = snapshot.threads.filter((t) => t.role === 'blocked' && t.state === 'D').map((t) => `${t.name} ${t.stack}`).join(' | ');
  if (/ext4_|jbd2/.test(stacks) && /(jbd2|ext4_)[^|]*__swap_writepage|__swap_writepage[^|]*(jbd2|ext4_)/.test(kernelThreads)) return 'fs-kernel-thread-reclaim-io';
  if (/jbd2|start_this_handle|ext4_journal/.test(stacks)) return 'filesystem-journal';
  return 'other';
}

/** The run's outcome, with the reason when it is not plain. */
export function classify(record) {
  if (record.unsupported) return { outcome: 'unsupported', reason: record.unsupported };
  if (record.observer === 'host') return classifyHostView(record);
  if (!record.series) return classifyOld(record);
  if (record.error) return { outcome: 'failed', reason: record.error };
  const hangBound = record.hangBoundSeconds;
  switch (record.stoppedBy) {
    case 'hang-bound': {
      if (hangBound < HANG_MIN_SECONDS) return { outcome: 'unresolved', reason: `no progress until a bound of ${hangBound} s, shorter than ${HANG_MIN_SECONDS} s` };
      const c = record.stackComparison;
      if (!c) return { outcome: 'unresolved', reason: 'no progress for the hang bound, but the tasks were not recorded at both ends' };
      const settled = record.settledComparison;
      if (!c.same && settled?.same && settled.endSeconds - settled.startSeconds >= settledMinSeconds(record)) {
        return {
          outcome: 'hung',
          reason: `blocked threads moved in the first ${Math.round(settled.startSeconds - c.startSeconds)} s of the stall ` +
            `(${c.moved.map((m) => `${m.role} ${m.name}: ${m.start.split(' < ')[0]} -> ${m.end.split(' < ')[0]}`).join('; ')}), ` +
            `then stayed in the same place for ${Math.round(settled.endSeconds - settled.startSeconds)} s`,
        };
      }
      if (!c.same) {
        return {
          outcome: 'unresolved',
          reason: c.blockedAtStart.some((t) => t.role === 'server')
            ? `no progress for ${hangBound} s, but blocked threads moved: ${c.moved.map((m) => `${m.role} ${m.name} ${m.start} -> ${m.end}`).join('; ')}`
            : `no progress for ${hangBound} s, but no server thread was blocked at the start of the stall`,
        };
      }
      return { outcome: 'hung' };
    }
    case 'run-bound':
      return { outcome: 'incomplete', reason: `still running at the bound of ${record.runBoundSeconds} s` };
    case 'writer-exited':
      if (record.writerExit !== 0 || !record.write) return { outcome: 'failed', reason: `the writer failed (exit ${record.writerExit}): ${record.writerError ?? ''}` };
      return record.episodes.length > 0 ? { outcome: 'stalled' } : { outcome: 'no-stall' };
    default:
      return { outcome: 'failed', reason: `no result (kernel-run exit ${record.kernelRunExit})` };
  }
}

/** A run seen from the host (observer 'host'): see the definitions at the top. */
function classifyHostView(record) {
  const hv = record.hostView;
  const c = record.stackComparison;
  if (!c) return { outcome: 'failed', reason: 'the observer went silent and the host did not take both dumps' };
  const seen = 'seen from the host (the observer went silent)';
  const [d1, d2] = [hv.snapshots['dump-1'], hv.snapshots['dump-2']];
  if (d1.incomplete || d2.incomplete) return { outcome: 'unresolved', reason: `${seen}: a dump has a task whose header line was cut, so not every thread can be compared` };
  if (d1.tgidMissing || d2.tgidMissing) return { outcome: 'unresolved', reason: `${seen}: this kernel's dumps give no tgid, so the threads of the server and the writer cannot be told apart from other tasks` };
  // The disk is not the only witness: with the backing filesystem's writeback stuck, the server could still complete
  // writes into its page cache. Those would move the guest's dirty, writeback or swap figures (sysrq m).
  const moved = ['Dirty', 'Writeback', 'SwapFree'].filter((k) => d1.memoryKiB?.[k] === undefined || d1.memoryKiB[k] !== d2.memoryKiB?.[k]);
  if (moved.length) return { outcome: 'unresolved', reason: `${seen}: the guest's memory figures moved or are missing between the dumps (${moved.map((k) => `${k} ${d1.memoryKiB?.[k]} -> ${d2.memoryKiB?.[k]} KiB`).join(', ')})` };
  if (hv.noDiskWriteSeconds < HANG_MIN_SECONDS) {
    return { outcome: 'unresolved', reason: `${seen}: the disk was last written ${hv.noDiskWriteSeconds} s before the second dump, less than ${HANG_MIN_SECONDS} s` };
  }
  if (c.endSeconds - c.startSeconds < SETTLED_MIN_SECONDS - 1) {
    return { outcome: 'unresolved', reason: `${seen}: the dumps are ${Math.round(c.endSeconds - c.startSeconds)} s apart, less than ${SETTLED_MIN_SECONDS} s` };
  }
  const server = (s) => s.threads.filter((t) => t.role === 'server').map((t) => `${t.name} ${t.state} ${t.stack.split(' < ').slice(0, 3).join(' < ')}`);
  if (!c.same) {
    return {
      outcome: 'unresolved',
      reason: c.blockedAtStart.some((t) => t.role === 'server')
        ? `${seen}: no disk write for ${hv.noDiskWriteSeconds} s, but blocked threads moved: ${c.moved.map((m) => `${m.role} ${m.name} ${m.start} -> ${m.end}`).join('; ')}`
        : `${seen}: no disk write for ${hv.noDiskWriteSeconds} s, but no server thread blocked (D) at the first dump; server threads: ${server(hv.snapshots['dump-1']).join(' | ')}`,
    };
  }
  return { outcome: 'hung', reason: `${seen}: no disk write for ${hv.noDiskWriteSeconds} s, the same threads blocked in the same place in dumps ${Math.round(c.endSeconds - c.startSeconds)} s apart` };
}

function classifyOld(record) {
  if (record.completed) {
    return (record.longestStallSeconds ?? 0) >= DEFAULT_STALL_SECONDS
      ? { outcome: 'stalled', reason: 'old record, re-classified from its longest stall (nbd0 writes only)' }
      : { outcome: 'no-stall', reason: 'old record, re-classified from its longest stall (nbd0 writes only)' };
  }
  if (record.hung) return { outcome: 'unresolved', reason: `old record: watched for ${record.stallThresholdSeconds} s without progress, then stopped (no series, no second snapshot)` };
  return { outcome: 'failed', reason: record.error ?? 'old record without a result' };
}

/** True for records measured under the old definition (no series). */
export const isOld = (record) => !record.series && record.schema === undefined;

/**
 * The JSON record of one run, from kernel-run's output and the host's view of it. `host` holds at, kernelName,
 * variant, protect, wallSeconds, kernelRunExit, hostLoadavg.
 */
export function buildRecord(output, host, hostView) {
  const parsed = parseGuestOutput(output);
  const record = { schema: 2, ...host };
  if (hostView) record.hostView = hostViewOf(hostView, parsePids(output));
  // The observer went silent and the host took its two dumps: the host's view is the record's result.
  if ((!parsed || parsed.truncated) && record.hostView?.snapshots?.['dump-2']) {
    const g = parsed?.guest ?? {};
    return deriveHostView({ ...record, ...g, kernel: g.kernel ?? record.hostView.kernelRelease, truncated: parsed ? true : undefined, observer: 'host' });
  }
  if (!parsed) {
    return { ...record, outcome: 'failed', outcomeReason: `no result (kernel-run exit ${host.kernelRunExit})`, error: `no result: ${output.slice(-300)}` };
  }
  const g = parsed.guest;
  Object.assign(record, g, {
    guestLoadavg: { start: loadavg(g.guestLoadavgStart), end: loadavg(g.guestLoadavgEnd) },
    truncated: parsed.truncated || undefined,
  });
  delete record.guestLoadavgStart;
  delete record.guestLoadavgEnd;
  if (g.unsupported || (g.error && parsed.series.t.length === 0)) return { ...record, ...outcomeFields(classify(record)) };
  record.series = parsed.series;
  record.snapshots = parsed.snapshots;
  record.kernelLog = parsed.kernelLog.length ? parsed.kernelLog : undefined;
  return derive(record);
}
/** A classification as the record's fields. */
export const outcomeFields = (c) => ({ outcome: c.outcome, outcomeReason: c.reason });

/**
 * A new record's derived fields (stalls, the comparison of the snapshots, the cause, the outcome), computed again
 * from what the run recorded (the series and the snapshots), so that every record is read under the definitions of
 * this file.
 */
export function derive(record) {
  if (!record.series || record.outcome === 'unsupported' || (record.error && !record.series.t.length)) return record;
  const threshold = record.stallThresholdSeconds ?? DEFAULT_STALL_SECONDS;
  const { episodes, longestStallSeconds } = stallEpisodes(record.series, threshold, {
    writerFinished: record.stoppedBy === 'writer-exited',
    fromSeconds: (record.watchFromMs ?? 0) / 1000,
  });
  const snapshots = record.snapshots ?? {};
  const stallNames = Object.keys(snapshots).filter((n) => n.startsWith('stall-')).sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)));
  const end = snapshots.end;
  const r = { ...record, episodes, longestStallSeconds };
  r.stackComparison = end ? compareSnapshots(snapshots[stallNames.at(-1)], end) : undefined;
  // The settle snapshot of the same (last) stall, when the run took one (records before it have none).
  const settledName = stallNames.length ? `settled-${stallNames.at(-1).slice(6)}` : undefined;
  r.settledComparison = end && snapshots[settledName] ? compareSnapshots(snapshots[settledName], end) : undefined;
  // The cause: where the server was blocked at the end of a hang, else at the start of the last stall recorded.
  r.cause = episodes.length ? causeOf(end ?? snapshots[stallNames.at(-1)]) : undefined;
  const c = classify(r);
  // Fields older readers of the record use (scripts/test-nbd.mjs): completed and hung, from the outcome.
  r.completed = c.outcome === 'no-stall' || c.outcome === 'stalled';
  r.hung = c.outcome === 'hung';
  return { ...r, ...outcomeFields(c) };
}

/**
 * The host's view as the record keeps it (scripts/lab/host-view.mjs): the disk's series, the pids the observer
 * announced (parsePids), and the host's dumps parsed into snapshots (the raw console text is not kept here:
 * lab-pressure.mjs saves it beside the results).
 */
export function hostViewOf(view, pids) {
  const kept = { series: view.series, pids, silentAt: view.silentAt, observerBack: view.observerBack, endedByHost: view.endedByHost };
  // The guest's release, as its kernel names itself in a CPU's backtrace ("CPU: 1 UID: 0 PID: 219 Comm: node Not
  // tainted 6.12.117+deb13-amd64 #1"), for a record whose observer never printed its own.
  const release = view.dumps.map((d) => /^(?:\[[\s\d.]+\]\s*)?CPU: \d+ .*?(?:Not tainted|Tainted: [A-Z ]+?) (\d+\.\S+) #/m.exec(d.text)).find(Boolean);
  if (release) kept.kernelRelease = release[1];
  if (view.dumps.length) {
    kept.snapshots = Object.fromEntries(view.dumps.map((d) => [d.name, dumpSnapshot(d, pids)]));
    kept.cpus = Object.fromEntries(view.dumps.map((d) => [d.name, parseCpuBacktraces(d.text)]));
  }
  return kept;
}

/** A host-observed record's derived fields: how long the disk saw no write before the last dump, the comparison, the cause. */
export function deriveHostView(record) {
  const hv = record.hostView;
  const d1 = hv.snapshots?.['dump-1'];
  const d2 = hv.snapshots?.['dump-2'];
  const r = { ...record };
  if (d2) {
    const { t, diskWriteBytes: w } = hv.series;
    let last = 0;
    for (let i = 1; i < t.length && t[i] <= d2.t; i++) if (w[i] !== w[i - 1]) last = t[i];
    r.hostView = { ...hv, noDiskWriteSeconds: Math.round(d2.t - last) };
  }
  r.stackComparison = compareSnapshots(d1, d2);
  r.cause = causeOf(d2 ?? d1, { noio: record.protect === 'exec' });
  const c = classify(r);
  r.completed = false;
  r.hung = c.outcome === 'hung';
  return { ...r, ...outcomeFields(c) };
}

/** Any record, old or new, with its derived fields and its outcome under the definitions of this file. */
export function current(record) {
  if (record.observer === 'host') return deriveHostView(record);
  return record.series ? derive(record) : { ...record, ...outcomeFields(classify(record)) };
}

/** The outcome of a record as current() gave it (scripts/lab-pressure.mjs reads every record through it). */
export const outcomeOf = (record) => ({ outcome: record.outcome, reason: record.outcomeReason });
