// The lab's definitions, checked on made-up guest output: `node --test scripts/lab/`. A stall that ends is never
// counted as a hang, a hang needs the bound and the same blocked threads at both ends, old records stay apart.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDumps, parseBlockstats, parseCpuBacktraces, parseDumps, parseSysrqTasks } from './host-view.mjs';
import { buildRecord, causeOf, classify, compareSnapshots, current, parseGuestOutput, samePlace, stallEpisodes } from './record.mjs';

const series = (points) => ({
  t: points.map((p) => p[0]),
  nbd0WriteSectors: points.map((p) => p[1]),
  writerBytes: points.map((p) => p[2]),
  nbd0ReadSectors: points.map(() => 0),
  pagesSwappedOut: points.map(() => 0),
});

test('a quiet time of at least the threshold that ends is one ended stall; a shorter one is none', () => {
  const s = series([[1, 8, 1], [2, 16, 2], [3, 16, 2], [14, 16, 2], [15, 24, 3], [17, 32, 4]]);
  assert.deepEqual(stallEpisodes(s, 10), { episodes: [{ startSeconds: 2, seconds: 13, ended: true }], longestStallSeconds: 13 });
  assert.deepEqual(stallEpisodes(s, 14).episodes, []);
});

test('either measure moving is progress: the writer writing while nbd0 is quiet is no stall', () => {
  const s = series([[1, 8, 1], [6, 8, 2], [11, 8, 3], [16, 8, 4], [21, 16, 5]]);
  assert.deepEqual(stallEpisodes(s, 10).episodes, []);
});

test('the quiet time before the watch begins (the hog filling free memory) is no stall', () => {
  const s = series([[1, 0, 0], [12, 0, 0], [14, 8, 0], [15, 16, 0], [27, 24, 1]]);
  assert.deepEqual(stallEpisodes(s, 10).episodes, [{ startSeconds: 0, seconds: 14, ended: true }, { startSeconds: 15, seconds: 12, ended: true }]);
  assert.deepEqual(stallEpisodes(s, 10, { fromSeconds: 13 }).episodes, [{ startSeconds: 15, seconds: 12, ended: true }]);
});

test('a quiet time still running at the end has not ended, unless the writer finished', () => {
  const s = series([[1, 8, 1], [2, 16, 2], [30, 16, 2]]);
  assert.deepEqual(stallEpisodes(s, 10).episodes, [{ startSeconds: 2, seconds: 28, ended: false }]);
  assert.deepEqual(stallEpisodes(s, 10, { writerFinished: true }).episodes, [{ startSeconds: 2, seconds: 28, ended: true }]);
});

const thread = (role, tid, state, stack) => ({ role, pid: 100, tid, name: 'node', state, flags: '0x0', wchan: stack.split(' < ')[0], stack });
const BDP = 'balance_dirty_pages < balance_dirty_pages_ratelimited_flags < generic_perform_write < ext4_buffered_write_iter';

test('the same blocked server and writer threads in the same place at both ends: same', () => {
  const start = { t: 10, threads: [thread('server', 101, 'D', BDP), thread('server', 102, 'S', 'ep_poll'), thread('writer', 200, 'D', BDP)] };
  const end = { t: 300, threads: [thread('server', 101, 'D', BDP), thread('server', 102, 'S', 'ep_poll'), thread('writer', 200, 'D', BDP)] };
  const c = compareSnapshots(start, end);
  assert.equal(c.same, true);
  assert.equal(c.unchanged, 2);
});

test('a blocked thread that moved, or no blocked server thread: not the same', () => {
  const start = { t: 10, threads: [thread('server', 101, 'D', BDP), thread('writer', 200, 'D', BDP)] };
  const moved = { t: 300, threads: [thread('server', 101, 'D', 'folio_wait_writeback < ' + BDP), thread('writer', 200, 'D', BDP)] };
  assert.equal(compareSnapshots(start, moved).same, false);
  assert.equal(compareSnapshots(start, moved).moved[0].tid, 101);
  const writerOnly = { t: 10, threads: [thread('server', 101, 'S', 'ep_poll'), thread('writer', 200, 'D', BDP)] };
  assert.equal(compareSnapshots(writerOnly, writerOnly).same, false);
});

test('a stack cut short (read while the thread was waking) is the same place only as the start of the other', () => {
  const full = `${BDP} < vfs_write < __x64_sys_pwrite64 < do_syscall_64`;
  assert.equal(samePlace(full, full), 'same');
  assert.equal(samePlace(BDP, full), 'cut-short');
  assert.equal(samePlace('balance_dirty_pages < balance_dirty_pages_ratelimited_flags', full), undefined);
  assert.equal(samePlace(`folio_wait_writeback < ${BDP}`, full), undefined);
  const start = { t: 10, threads: [thread('server', 101, 'D', BDP)] };
  const end = { t: 300, threads: [thread('server', 101, 'D', full)] };
  assert.deepEqual([compareSnapshots(start, end).same, compareSnapshots(start, end).stacksCutShort], [true, 1]);
});

test('hung needs the bound of at least 300 s and the same threads; stalled needs a stall that ended', () => {
  const same = { same: true, blockedAtStart: [{ role: 'server' }], moved: [] };
  const base = { series: series([]), hangBoundSeconds: 300, runBoundSeconds: 600, episodes: [] };
  assert.equal(classify({ ...base, stoppedBy: 'hang-bound', stackComparison: same }).outcome, 'hung');
  assert.equal(classify({ ...base, hangBoundSeconds: 150, stoppedBy: 'hang-bound', stackComparison: same }).outcome, 'unresolved');
  assert.equal(classify({ ...base, stoppedBy: 'hang-bound', stackComparison: { ...same, same: false, moved: [] } }).outcome, 'unresolved');
  // Threads that moved in the first 60 s and then stayed put for 240 s: hung, with the move named; a move after the
  // settle snapshot, or no settle snapshot, stays unresolved.
  const moved = { same: false, startSeconds: 21, blockedAtStart: [{ role: 'server' }], moved: [{ role: 'server', name: 'node', start: 'D mempool_alloc < x', end: 'D blk_mq_get_tag < y' }] };
  const settledSame = { same: true, startSeconds: 81, endSeconds: 321, blockedAtStart: [{ role: 'server' }], moved: [] };
  const viaSettle = classify({ ...base, stoppedBy: 'hang-bound', stackComparison: moved, settledComparison: settledSame });
  assert.equal(viaSettle.outcome, 'hung');
  assert.match(viaSettle.reason, /moved in the first 60 s .*mempool_alloc -> D blk_mq_get_tag.*same place for 240 s/);
  assert.equal(classify({ ...base, stoppedBy: 'hang-bound', stackComparison: moved }).outcome, 'unresolved');
  assert.equal(classify({ ...base, stoppedBy: 'hang-bound', stackComparison: moved, settledComparison: { ...settledSame, same: false } }).outcome, 'unresolved');
  assert.equal(classify({ ...base, stoppedBy: 'hang-bound', stackComparison: moved, settledComparison: { ...settledSame, endSeconds: 200 } }).outcome, 'unresolved');
  // The snapshots are taken by once-a-second samples: 239.3 s between them (as recorded) is the 240 s, 238 s is not.
  const settled = (seconds, more = {}) => classify({ ...base, ...more, stoppedBy: 'hang-bound', stackComparison: moved, settledComparison: { ...settledSame, endSeconds: 81 + seconds } }).outcome;
  assert.deepEqual([settled(239.3), settled(240.6), settled(238)], ['hung', 'hung', 'unresolved']);
  // A longer bound in the record asks for its whole interval after the settle snapshot.
  assert.deepEqual([settled(239.3, { hangBoundSeconds: 400, settleSeconds: 60 }), settled(339.5, { hangBoundSeconds: 400, settleSeconds: 60 })], ['unresolved', 'hung']);
  const done = { ...base, stoppedBy: 'writer-exited', writerExit: 0, write: { mibPerSecond: 3 } };
  assert.equal(classify({ ...done, episodes: [{ startSeconds: 5, seconds: 39, ended: true }] }).outcome, 'stalled');
  assert.equal(classify(done).outcome, 'no-stall');
  assert.equal(classify({ ...base, stoppedBy: 'run-bound' }).outcome, 'incomplete');
});

test('old records (no series): completed ones re-classified from their longest stall, 30 s "hangs" unresolved', () => {
  assert.equal(classify({ completed: true, hung: false, longestStallSeconds: 26 }).outcome, 'stalled');
  assert.equal(classify({ completed: true, hung: false, longestStallSeconds: 2 }).outcome, 'no-stall');
  assert.equal(classify({ completed: false, hung: true, stallThresholdSeconds: 30 }).outcome, 'unresolved');
});

test('the guest output becomes a record: series, snapshots, comparison, outcome', () => {
  const kv = (k, v) => `lab-kv\t${k}\t${v}`;
  const sample = (ms, w, b) => `lab-sample\t${ms}\t${w}\t${b}\t0\t0`;
  const th = (snap, ms, role, tid, state, stack) => `lab-thread\t${snap}\t${ms}\t${role}\t100\t${tid}\t0x400100\t${state}\tbalance_dirty_pages\tnode\t${stack}`;
  const out = [
    'lab: setting up',
    'lab-record-begin',
    kv('variant', 'dirty'), kv('protect', 'none'), kv('stallThresholdSeconds', 10), kv('hangBoundSeconds', 300),
    kv('runBoundSeconds', 600), kv('stoppedBy', 'hang-bound'), kv('writerExit', 'null'), kv('guestLoadavgStart', '0.5 0.2 0.1'),
    sample(1000, 8, 1048576), sample(2000, 16, 2097152), sample(12000, 16, 2097152), sample(302000, 16, 2097152),
    th('stall-1', 12000, 'server', 101, 'D', BDP), th('stall-1', 12000, 'writer', 200, 'D', BDP),
    th('end', 302000, 'server', 101, 'D', BDP), th('end', 302000, 'writer', 200, 'D', BDP),
    'lab-memory\tend\t302000\tDirty=1024\tWriteback=7400',
    'lab-record-end',
  ].join('\n');
  const parsed = parseGuestOutput(out);
  assert.equal(parsed.series.t.length, 4);
  assert.equal(parsed.snapshots.end.memoryKiB.Writeback, 7400);
  const r = buildRecord(out, { kernelName: 'bookworm', variant: 'dirty', protect: 'none', kernelRunExit: 125 });
  assert.equal(r.outcome, 'hung');
  assert.equal(r.hung, true);
  assert.equal(r.cause, 'balance_dirty_pages');
  assert.deepEqual(r.episodes, [{ startSeconds: 2, seconds: 300, ended: false }]);
  assert.deepEqual(r.guestLoadavg.start, [0.5, 0.2, 0.1]);
  assert.equal(buildRecord('no record here', { kernelRunExit: 125 }).outcome, 'failed');
  // The guest prints the record in two parts (the second, with the kernel log, needs programs): both are read, and
  // a part cut off by the VM's end still counts as far as it got, marked truncated.
  const lines = out.split('\n');
  const part2 = ['lab-record-begin', kv('oomKills', 0), 'lab-dmesg\ttask:node state:D', 'lab-record-end'];
  const two = buildRecord([...lines, 'lab: the watch ended', ...part2].join('\n'), { kernelName: 'bookworm', variant: 'dirty', protect: 'none', kernelRunExit: 125 });
  assert.deepEqual([two.outcome, two.oomKills, two.kernelLog, two.truncated], ['hung', 0, ['task:node state:D'], undefined]);
  const cut = parseGuestOutput([...lines, ...part2.slice(0, 2)].join('\n'));
  assert.deepEqual([cut.guest.oomKills, cut.guest.stoppedBy, cut.truncated], [0, 'hang-bound', true]);
  // A first part that announces two, and no second part at all: truncated too.
  const announced = [lines[0], lines[1], kv('recordParts', 2), ...lines.slice(2)].join('\n');
  assert.deepEqual([parseGuestOutput(announced).truncated, parseGuestOutput(`${announced}\n${part2.join('\n')}`).truncated], [true, false]);
});

test("cause: the server waits in its filesystem while that filesystem's journal swaps out to /dev/nbd0", () => {
  const t = (role, name, stack) => ({ role, name, state: 'D', stack });
  const journal = t('blocked', 'jbd2/vda-8', 'rq_qos_wait < wbt_wait < __rq_qos_throttle < blk_mq_submit_bio < __swap_writepage < pageout < shrink_folio_list < try_to_free_pages < __alloc_pages < __getblk_gfp < jbd2_journal_get_descriptor_buffer < jbd2_journal_commit_transaction');
  const server = t('server', 'node', 'ext4_da_get_block_prep < ext4_block_write_begin < ext4_da_write_begin < generic_perform_write < ext4_buffered_write_iter < vfs_write');
  assert.equal(causeOf({ threads: [server, journal] }), 'fs-kernel-thread-reclaim-io');
  assert.equal(causeOf({ threads: [server] }), 'other');
  assert.equal(causeOf({ threads: [{ ...server, stack: 'balance_dirty_pages < ext4_buffered_write_iter' }, journal] }), 'balance_dirty_pages');
});

// The host's view (scripts/lab/host-view.mjs): a run whose observer went silent, classified from the kernel's own dumps.
const sysrqTask = (ts, name, state, pid, tgid, frames) =>
  [
    `[${ts}] task:${name.padEnd(15)} state:${state} stack:0     pid:${pid}   tgid:${tgid}   ppid:1      flags:0x00004000`,
    `[${ts}] Call Trace:`,
    `[${ts}]  <TASK>`,
    ...frames.map((f) => `[${ts}]  ${f}`),
    `[${ts}]  </TASK>`,
  ].join('\n');
const MUTEX = ['__schedule+0x4ea/0xbe0', 'schedule+0x27/0xc0', '? __alloc_pages_slowpath.constprop.0+0x1b3/0xdc0', 'nbd_queue_rq+0xc8/0x390 [nbd]', 'swap_writepage+0x147/0x310', 'shrink_folio_list+0x5f0/0xd00', 'try_to_free_pages+0xdf/0x200', '__alloc_pages_slowpath.constprop.0+0x356/0xdc0'];
const RECLAIM_R = ['shrink_node+0xa08/0xc70', 'do_try_to_free_pages+0xb3/0x580', 'try_to_free_pages+0xdf/0x200', '__alloc_pages_slowpath.constprop.0+0x356/0xdc0', 'alloc_pages_mpol_noprof+0x1/0x2'];
const PIDS = 'lab: pids: server=200 writer=300 hog=400';
const hostView = ({ serverState = 'D', lastWriteAt = 100, apart = 250 } = {}) => {
  const t = [];
  const w = [];
  for (let s = 0; s <= 420 + apart; s++) {
    t.push(s);
    w.push(s <= lastWriteAt ? s * 4096 : lastWriteAt * 4096);
  }
  const dump = (name, at, ts) => ({
    name,
    t: at,
    text: [sysrqTask(ts, 'node', serverState, 201, 200, serverState === 'D' ? MUTEX : RECLAIM_R), sysrqTask(ts, 'node', 'D', 400, 400, MUTEX), sysrqTask(ts, 'kworker/0:1H', 'D', 138, 138, MUTEX.slice(0, 4))].join('\n'),
  });
  return { series: { t, diskWriteBytes: w, diskReadBytes: w.map(() => 0) }, dumps: [dump('dump-1', 420 - apart + 20, '100.1'), dump('dump-2', 420 + 20, '400.2')] };
};
// sysrq m's figures (pages of 4 KiB) and free swap, as the kernel prints them.
const sysrqMemory = ({ dirty = 1176, writeback = 8673, swapKiB = 486908 } = {}) =>
  ['[ 161.6] Mem-Info:', '[ 161.6] active_anon:32560 inactive_anon:158809 isolated_anon:0', `[ 161.6]  unevictable:5045 dirty:${dirty} writeback:${writeback}`, '[ 161.6]  free:12006 free_pcp:391 free_cma:0', '[ 161.6] Node 0 active_anon:130240kB dirty:4704kB', `[ 161.7] Free swap  = ${swapKiB}kB`].join('\n');
const withMemory = (view, second = {}) => {
  view.dumps[0].text += `\n${sysrqMemory()}`;
  view.dumps[1].text += `\n${sysrqMemory(second)}`;
  return view;
};
const hostMeta = { at: '2026-12-05T00:00:00Z', kernelName: 'trixie', variant: 'swap', protect: 'exec', kernelRunExit: 125 };

test('sysrq t as stacks like the guest records: timestamps, unreliable frames and module names left out, tgid kept', () => {
  const { tasks: [task], incomplete } = parseSysrqTasks(sysrqTask('42.1', 'node', 'D', 201, 200, MUTEX));
  assert.equal(incomplete, false);
  assert.deepEqual(task, { name: 'node', state: 'D', pid: 201, tgid: 200, flags: '0x00004000', stack: '__schedule < schedule < nbd_queue_rq < swap_writepage < shrink_folio_list < try_to_free_pages < __alloc_pages_slowpath.constprop.0' });
  assert.deepEqual(parseBlockstats('info blockstats\r\nvirtio0: rd_bytes=512 wr_bytes=4096 rd_operations=1 wr_operations=1\r\n'), { virtio0: { readBytes: 512, writeBytes: 4096 } });
});

test('a silent observer: hung from the host only with 300 s without a disk write and the server blocked in the same place at both dumps', () => {
  const hung = buildRecord(`${PIDS}\nlab: no progress for 10s at t=15s: recording the tasks (stall 1)\n`, hostMeta, withMemory(hostView()));
  assert.equal(hung.observer, 'host');
  assert.equal(hung.outcome, 'hung', hung.outcomeReason);
  assert.equal(hung.cause, 'reclaim-io');
  assert.deepEqual(current(JSON.parse(JSON.stringify(hung))).outcome, 'hung');
  // The disk written 200 s before the second dump: not 300 s without progress.
  assert.equal(buildRecord(PIDS, hostMeta, withMemory(hostView({ lastWriteAt: 240 }))).outcome, 'unresolved');
  // Dumps 200 s apart: too close to prove a hang.
  assert.equal(buildRecord(PIDS, hostMeta, withMemory(hostView({ apart: 200 }))).outcome, 'unresolved');
  // The server completing writes into its page cache while the backing disk's writeback is stuck: dirty pages grow.
  const dirtier = buildRecord(PIDS, hostMeta, withMemory(hostView(), { dirty: 1300 }));
  assert.equal(dirtier.outcome, 'unresolved');
  assert.match(dirtier.outcomeReason, /Dirty 4704 -> 5200 KiB/);
  // No memory figures at all: no proof either.
  assert.equal(buildRecord(PIDS, hostMeta, hostView()).outcome, 'unresolved');
  // The server running in reclaim, not blocked: no proof of a hang (a livelock is not shown by two dumps).
  const running = buildRecord(PIDS, hostMeta, withMemory(hostView({ serverState: 'R' })));
  assert.equal(running.outcome, 'unresolved');
  assert.match(running.outcomeReason, /no server thread blocked/);
  // Without the pids the host cannot tell the server's threads: never hung.
  assert.notEqual(buildRecord('', hostMeta, withMemory(hostView())).outcome, 'hung');
  // A kernel that prints no tgid (6.1, 5.10): the server's other threads cannot be told apart, so never hung.
  const noTgid = withMemory(hostView());
  for (const d of noTgid.dumps) d.text = d.text.replace(/tgid:\d+\s+/g, '');
  assert.match(buildRecord(PIDS, hostMeta, noTgid).outcomeReason, /no tgid/);
  // A task header cut off its line: its trace has no task, so the dump is incomplete and the run not hung.
  const cut = withMemory(hostView());
  cut.dumps[1].text = cut.dumps[1].text.replace('task:node            state:D stack:0     pid:201', 'task:node   [ 400.3] lab: t=360s: nbd0');
  assert.match(buildRecord(PIDS, hostMeta, cut).outcomeReason, /header line was cut/);
  // An observer's line before a header, on the same line, is no cut.
  const prefixed = withMemory(hostView());
  prefixed.dumps[1].text = prefixed.dumps[1].text.replace('[400.2] task:node            state:D stack:0     pid:201', 'lab: t=360s: nbd0 written 2 MiB[400.2] task:node            state:D stack:0     pid:201');
  assert.equal(buildRecord(PIDS, hostMeta, prefixed).outcome, 'hung');
});

test('a guest record that came whole is classified from the guest, whatever the host saw', () => {
  const r = buildRecord('', hostMeta, { series: { t: [0], diskWriteBytes: [0], diskReadBytes: [0] }, dumps: [] });
  assert.equal(r.observer, undefined);
  assert.equal(r.outcome, 'failed');
});

test('server threads running in direct reclaim (a CPU backtrace in the host dump) are the cause, before a kernel thread in I/O', () => {
  const snap = {
    threads: [
      { role: 'server', tid: 1, name: 'node', state: 'R', onCpu: 0, stack: 'isolate_folios < shrink_node < do_try_to_free_pages < try_to_free_pages < __alloc_pages_slowpath' },
      { role: 'server', tid: 2, name: 'node', state: 'D', stack: 'rwsem_down_write_slowpath < down_write < ext4_buffered_write_iter' },
      { role: 'blocked', tid: 3, name: 'jbd2/vda-8', state: 'D', stack: 'mempool_alloc < bio_alloc_bioset < __swap_writepage < jbd2_journal_commit_transaction' },
    ],
  };
  assert.equal(causeOf(snap, { noio: true }), 'noio-reclaim-loop');
  // An unprotected server's reclaim may do I/O: the same loop is named without NOIO.
  assert.equal(causeOf(snap), 'reclaim-loop');
  // The same thread seen only by sysrq t (no CPU backtrace: its stack there is stale) is no evidence.
  assert.equal(causeOf({ threads: [{ ...snap.threads[0], onCpu: undefined }, ...snap.threads.slice(1)] }, { noio: true }), 'fs-kernel-thread-reclaim-io');
  assert.equal(causeOf({ threads: [snap.threads[0]] }, { noio: true }), 'noio-reclaim-loop');
});

test("a host-observed record takes the kernel's release from a CPU backtrace in its dumps", () => {
  const v = withMemory(hostView());
  v.dumps[1].text += '\n[  418.0] CPU: 1 UID: 0 PID: 219 Comm: node Not tainted 6.12.117+deb13-amd64 #1  Debian 6.12.117-1\n';
  assert.equal(buildRecord(PIDS, hostMeta, v).kernel, '6.12.117+deb13-amd64');
});

test("a CPU's backtrace: the interrupt's own frames left out, the interrupted place (RIP) first, the section ended by what is not a trace", () => {
  const l = [
    '[ 158.1] NMI backtrace for cpu 1',
    '[ 158.1] CPU: 1 UID: 0 PID: 191 Comm: bash Not tainted 6.12.117+deb13-amd64 #1  Debian 6.12.117-1',
    '[ 158.1] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 0.1 11/11/2019',
    '[ 158.1] Call Trace:',
    '[ 158.1]  <IRQ>',
    '[ 158.1]  dump_stack_lvl+0x5d/0x80',
    '[ 158.1]  nmi_cpu_backtrace.cold+0x19/0x68',
    '[ 158.1]  </IRQ>',
    '[ 158.1]  <TASK>',
    '[ 158.1]  asm_common_interrupt+0x26/0x40',
    '[ 158.1] RIP: 0010:_raw_spin_unlock_irq+0x15/0x40',
    '[ 158.1] RSP: 0018:ffffc900005173e8 EFLAGS: 00000202',
    '[ 158.1] PKRU: 55555558',
    '[ 158.1]  evict_folios+0x216/0x5f0',
    '[ 158.1]  ? shrink_node+0x1/0x2',
    '[ 158.1]  try_to_free_pages+0xdf/0x200',
    '[ 158.1]  asm_exc_page_fault+0x26/0x30',
    '[ 158.1] RIP: 0010:rep_movs_alternative+0x4a/0x90',
    '[ 158.1]  _copy_to_iter+0xcc/0x6e0',
    '[ 158.1] RIP: 0033:0x7f5056377109',
    '[ 158.1]  </TASK>',
    '[ 158.2] CPU: 0 UID: 0 PID: 291 Comm: node Not tainted 6.12.117+deb13-amd64 #1',
    '[ 158.2] oom-kill:constraint=CONSTRAINT_NONE',
    '[ 158.2]  schedule+0x27/0xc0',
  ].join('\n');
  assert.deepEqual(parseCpuBacktraces(l), [
    // A page fault taken inside the kernel (copy_to_user) is one more frame, not a new start.
    { cpu: 1, pid: 191, name: 'bash', stack: '_raw_spin_unlock_irq < evict_folios < try_to_free_pages < asm_exc_page_fault < rep_movs_alternative < _copy_to_iter' },
    { cpu: 0, pid: 291, name: 'node', stack: '' },
  ]);
  // sysrq t does not count a CPU section's Call Trace as a task without a header.
  assert.equal(parseSysrqTasks(`${sysrqTask('1.0', 'node', 'S', 5, 5, MUTEX)}\n${l}`).incomplete, false);
});

test('the dumps kept beside the results read back as they were written (--reclassify parses them again)', () => {
  const dumps = [{ name: 'dump-1', t: 150.2, text: '[ 1.0] task:node state:D\n=== not a header\n' }, { name: 'dump-2', t: 410.6, text: 'x\n' }];
  assert.deepEqual(parseDumps(formatDumps(dumps)).map((d) => [d.name, d.t, d.text.trimEnd()]), dumps.map((d) => [d.name, d.t, d.text.trimEnd()]));
});
