#!/usr/bin/env bash
# One run of the pressure lab, INSIDE a VM started by scripts/lab-pressure.mjs through vm/kernel-run (root,
# modules nbd and ext4, an empty disk as /dev/vda), itself started through `io-flusher exec` (see "The observer").
# Prints its record as tab-separated lines between `lab-record-begin` and `lab-record-end`; scripts/lab/record.mjs
# turns them into the JSON line of docs/lab/pressure.jsonl and classifies the run.
#
#   pressure-run.sh VARIANT PROTECT
#
# The setup a storage daemon really has: the NBD server (examples/nbd-server) keeps its backing file on ext4 on a
# block device of its own (/dev/vda) and writes it with ordinary buffered pwrite; the kernel's NBD client attaches
# /dev/nbd0 to it (no request timeout); ext4 on /dev/nbd0 is written by a writer that fsyncs at the end. The server is
# started through `io-flusher exec` (PROTECT=exec) or `io-flusher exec --clear` (PROTECT=none), both with
# oom_score_adj -1000, so they differ only in IO_FLUSHER.
#
# VARIANT:
#   dirty  PF_LOCAL_THROTTLE. A small global dirty limit (vm.dirty_bytes 8 MiB, background 2 MiB) and no periodic
#          writeback (vm.dirty_writeback_centisecs 0): /dev/nbd0's pages in flight hold the global count over the
#          limit, and an unprotected server is throttled in balance_dirty_pages for its own pwrite, behind the very
#          pages only it can clean.
#   swap   PF_MEMALLOC_NOIO. A swap file on the ext4 of /dev/nbd0 and a memory hog (NBD_LAB_HOG_OVER_MIB, default 256,
#          more than the memory available, every page touched over and over) keep memory short, so the server's own
#          allocations enter direct reclaim, which swaps anonymous pages out to /dev/nbd0: I/O only the server can
#          complete. PF_MEMALLOC_NOIO forbids reclaim that I/O. The server (and this observer) sit in a cgroup-v2 with
#          memory.swap.max 0: a daemon whose own memory is swapped to the device it serves deadlocks whatever its
#          flags, which is a different mistake (its cure is keeping the daemon out of swap, not IO_FLUSHER).
#          Default dirty settings. A swap file rather than swap on /dev/nbd0 itself: the writer keeps its filesystem
#          on the same device, so the run has the same writer and the same progress measures as the other variants.
#   memcg  The server and the writer in one cgroup-v1 memory cgroup (memory.limit_in_bytes NBD_LAB_MEMCG_MIB,
#          default 160: their two Node processes plus about 64 MiB of page cache) with vm.dirty_bytes 16 MiB and
#          background 4 MiB: the cgroup's reclaim waits on writeback of /dev/nbd0's pages. Kernels built without the
#          v1 memory controller (CONFIG_MEMCG_V1 off: Debian's 6.12) are recorded as unsupported.
#
# Progress, once a second from the moment the load starts (t=0): completed write sectors of /dev/nbd0
# (/sys/block/nbd0/stat) and the writer's bytes (wchar in /proc/WRITER/io); also read sectors and pages swapped out,
# for the reader. No progress means neither of the first two moved. When there has been none for NBD_LAB_STALL_S
# (default 10) seconds, the threads of the server, the writer, the hog, kswapd and every task in D state are
# recorded (state, PF_ flags, wchan, kernel stack) with /proc/meminfo: the start of a stall; again after
# NBD_LAB_SETTLE_S (default 60) seconds without progress. When none for
# NBD_LAB_HANG_S (default 300) seconds, they are recorded again (the end), blocked tasks are dumped to the kernel log
# (sysrq w), and the run stops; the record holds both, and the host compares them. The run also stops at
# NBD_LAB_BOUND_S (default 600) seconds.
#
# The observer: this script runs with IO_FLUSHER set (lab-pressure.mjs starts it through `io-flusher exec`), so that
# its own allocations, and those of the tools it starts, never wait on /dev/nbd0: it has to report on a machine whose
# other tasks are stuck. The writer and the hog are started through `io-flusher exec --clear`: unprotected, like any
# application, with oom_score_adj 0 (the writer) and 1000 (the hog) where the observer has -1000.
# IO_FLUSHER is not enough where memory runs out (the swap variant): the kernel never calls the global OOM killer for an
# allocation that may not enter the filesystem, so a page the observer needs then may never come (Debian's 6.12 guest
# went silent 16 s into its first stall). So its memory is locked and grown ahead (scripts/lab/observer-lock.c,
# preloaded by lab-pressure.mjs), the files it appends to are allocated ahead, it writes to the console itself (not
# through kernel-run's relay, whose pages can be swapped out), and from the start of the watch to the end of the run
# (on a hang) it starts no program: the watch, the snapshots, the kernel log (/dev/kmsg) and the record use shell
# builtins only. The record's second part has the kernel log and, after a completed run, the data check (which
# needs programs). This is still not enough on 6.12 with the server protected: the observer goes silent there too
# (docs/lab/README.md, swap findings). For that case the host watches as well (scripts/lab/host-view.mjs): when this
# script has reported a stall and then printed nothing for two minutes, the host has the kernel print every task's
# stack on the console through QEMU's keyboard (sysrq, enabled below), and counts the writes reaching the virtual
# disk; it needs the pids of the server, the writer and the hog, printed when the watch begins.
set -uo pipefail
# The whole script is one group, so bash has read all of it before it starts: a script read as it runs would need
# pages of the (9p) file again after the watch, when the guest may have none to give.
{
# The lock library is for this shell alone: nothing it starts is preloaded (the locks themselves are not inherited).
preloaded=${LD_PRELOAD-}
unset LD_PRELOAD
# Straight to the console: kernel-run's relay (a cat in the guest's initramfs, a tmpfs) could be swapped out to
# /dev/nbd0 and stop passing on what is written here.
[ -w /dev/console ] && exec >/dev/console 2>&1
variant=${1:?dirty|swap|memcg} protect=${2:?exec|none}
case $variant in dirty | swap | memcg) ;; *) echo "VARIANT must be dirty, swap or memcg" >&2; exit 2 ;; esac
case $protect in exec | none) ;; *) echo "PROTECT must be exec or none" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/../.." && pwd)
node=$(command -v node)
cli="$root/dist/cli.js"
server="$root/examples/nbd-server/dist/server.js"
mib=${NBD_LAB_WRITE_MIB:-64}
stall_s=${NBD_LAB_STALL_S:-10}
hang_s=${NBD_LAB_HANG_S:-300}
settle_s=${NBD_LAB_SETTLE_S:-60}
bound_s=${NBD_LAB_BOUND_S:-600}
swap_mib=${NBD_LAB_SWAP_MIB:-512}
hog_over_mib=${NBD_LAB_HOG_OVER_MIB:-256}
memcg_mib=${NBD_LAB_MEMCG_MIB:-160}

# A fresh directory in the guest's own /tmp (a tmpfs), never a fixed path: a project checked out at such a path is
# mounted over it by kernel-run, and the server's Unix socket would land on the 9p share (listen ENXIO).
work=$(mktemp -d /tmp/nbd-lab.XXXXXX) || { echo "lab: mktemp failed" >&2; exit 1; }
[ "$(stat -f -c %T "$work")" = tmpfs ] || { echo "lab: $work is not on a tmpfs ($(stat -f -c %T "$work"))" >&2; exit 1; }
cd "$work" || exit 1
mkdir store mnt
log() { echo "lab: $*" >&2; }
record="$work/record"
kv() { printf 'lab-kv\t%s\t%s\n' "$1" "$2" >>"$record"; }
# The record is printed in parts (the host joins them), with builtins only (see "The observer").
print_part() { # FILE...
  local f line name n
  # Kernel messages off the console again (the host's view raises its level for its dumps, see "The observer"): they
  # would cut the record's lines.
  echo "${NBD_LAB_PRINTK:-1}" >/proc/sys/kernel/printk 2>/dev/null
  echo "lab-record-begin"
  for f; do
    [ -e "$f" ] || continue
    while IFS= read -r line || [ -n "$line" ]; do
      # Of the snapshots, those of stalls 1-4 and of the last stall (it may be the hang's start).
      case $line in lab-thread$'\t'* | lab-memory$'\t'*)
        name=${line#*$'\t'} && name=${name%%$'\t'*}
        case $name in stall-* | settled-*) n=${name#*-} && ((n >= 5 && n < episode)) && continue ;; esac ;;
      esac
      printf '%s\n' "$line"
    done <"$f"
  done
  echo "lab-record-end"
}
episode=0
print_record() { print_part "$record" "$work/series" "$work/threads" "$work/memory"; }
fail() { # REASON: the run could not be set up; the record says why
  log "$*"
  kv error "$*"
  print_record
  exit 1
}
: >"$record"
kv variant "$variant"
kv protect "$protect"
kv kernel "$(uname -r)"
kv node "$("$node" --version)"
kv workDir "$work"
kv memTotalKiB "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
kv writeMiB "$mib"
kv stallThresholdSeconds "$stall_s"
kv hangBoundSeconds "$hang_s"
kv settleSeconds "$settle_s"
kv runBoundSeconds "$bound_s"
kv guestLoadavgStart "$(cut -d' ' -f1-3 /proc/loadavg)"
locked_kib=0
while read -r key value _; do [ "$key" = VmLck: ] && locked_kib=$value; done </proc/self/status
kv observerLockedKiB "$locked_kib"
((locked_kib > 0)) ||
  fail "the observer's memory is not locked (VmLck 0, LD_PRELOAD '${preloaded}'): start it with scripts/lab/observer-lock.c preloaded, as lab-pressure.mjs does"

# PF_ flags of a task, from field 9 of its stat (after the command name, which may hold spaces).
pf_flags() { # PATH-TO-STAT -> decimal flags
  local stat rest
  IFS= read -r stat <"$1" 2>/dev/null || return 1
  rest=${stat##*) }
  set -f
  # shellcheck disable=SC2086 # the fields after the name are numbers and one letter
  set -- $rest
  set +f
  echo "$7"
}
readonly PF_IO_FLUSHER=$((0x80000 | 0x100000)) # PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE
self_flags=$(pf_flags /proc/self/stat)
(((self_flags & PF_IO_FLUSHER) == PF_IO_FLUSHER)) ||
  fail "the observer is not in IO_FLUSHER state (flags $self_flags): start it through io-flusher exec"

# Kernel messages stay off the console (they would cut through the record's lines); the record takes them from /dev/kmsg.
# NBD_LAB_PRINTK=7 lets them through, with every hung-task report: for a guest that goes silent, the kernel's own
# account of its blocked tasks reaches the console without any program (the record's lines may then be cut).
echo "${NBD_LAB_PRINTK:-1}" >/proc/sys/kernel/printk
[ -z "${NBD_LAB_PRINTK-}" ] || echo -1 >/proc/sys/kernel/hung_task_warnings
# Every sysrq function from the keyboard, for the host's view (its dumps of the tasks: t, l, m; the console level: 7).
echo 1 >/proc/sys/kernel/sysrq
# Hung tasks are reported after 20 s instead of 120 s, so the kernel log has them early in a stall.
echo 20 >/proc/sys/kernel/hung_task_timeout_secs 2>/dev/null || true

[ -b /dev/vda ] || fail "no /dev/vda: kernel-run needs --disk"
[ -b /dev/nbd0 ] || fail "no /dev/nbd0: kernel-run needs --modules nbd"
log "setting up: the backing filesystem on /dev/vda"
mkfs.ext4 -q -F /dev/vda && mount /dev/vda store || fail "cannot make the backing filesystem"

# Where each process goes: "" (stay in this script's cgroup) or a cgroup.procs / tasks file to join.
server_cgroup='' writer_cgroup='' hog_cgroup=''
case $variant in
  dirty)
    sysctl -q -w vm.dirty_bytes=8388608 vm.dirty_background_bytes=2097152 vm.dirty_writeback_centisecs=0
    ;;
  swap)
    mount -t cgroup2 none /sys/fs/cgroup || fail "cannot mount cgroup2"
    echo +memory >/sys/fs/cgroup/cgroup.subtree_control || fail "cannot enable the memory controller in cgroup2"
    mkdir /sys/fs/cgroup/lab-noswap /sys/fs/cgroup/lab-apps
    [ -e /sys/fs/cgroup/lab-noswap/memory.swap.max ] || fail "no memory.swap.max: this kernel does not account swap per cgroup"
    echo 0 >/sys/fs/cgroup/lab-noswap/memory.swap.max || fail "cannot set memory.swap.max"
    # This script (so the server it starts, and every tool it runs) stays out of swap; the applications do not.
    echo $$ >/sys/fs/cgroup/lab-noswap/cgroup.procs || fail "cannot join the no-swap cgroup"
    writer_cgroup=/sys/fs/cgroup/lab-apps/cgroup.procs hog_cgroup=$writer_cgroup
    ;;
  memcg)
    kv memoryControllers "$(grep -w memory /proc/cgroups | tr '\t' ' ')"
    mount -t tmpfs -o mode=755 none /sys/fs/cgroup && mkdir /sys/fs/cgroup/memory || fail "cannot prepare /sys/fs/cgroup"
    if ! mount -t cgroup -o memory none /sys/fs/cgroup/memory 2>"$work/mount.err"; then
      kv unsupported "no cgroup-v1 memory controller on this kernel: mount -t cgroup -o memory: $(tr '\n' ' ' <"$work/mount.err")"
      print_record
      exit 0
    fi
    mkdir /sys/fs/cgroup/memory/lab
    echo $((memcg_mib << 20)) >/sys/fs/cgroup/memory/lab/memory.limit_in_bytes || fail "cannot set memory.limit_in_bytes"
    kv memcgLimitMiB "$memcg_mib"
    sysctl -q -w vm.dirty_bytes=16777216 vm.dirty_background_bytes=4194304
    server_cgroup=/sys/fs/cgroup/memory/lab/cgroup.procs writer_cgroup=$server_cgroup
    ;;
esac
kv sysctl "$(sysctl -n vm.dirty_bytes vm.dirty_background_bytes vm.dirty_writeback_centisecs vm.swappiness | tr '\n' ' ')"

# The server, through io-flusher exec (IO_FLUSHER set, then execve) or exec --clear (cleared, then execve).
server_args=(--file "$work/store/disk.img" --size 1G --socket "$work/nbd.sock" --export disk --protect "$protect")
case $protect in exec) exec_flag=() ;; none) exec_flag=(--clear) ;; esac
(
  [ -z "$server_cgroup" ] || echo $BASHPID >"$server_cgroup"
  exec "$node" "$cli" exec "${exec_flag[@]}" --oom-score-adj -1000 -- "$node" "$server" "${server_args[@]}"
) 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 600); do grep -q 'listening on' "$work/server.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'listening on' "$work/server.log" || fail "the server did not start: $(tail -3 "$work/server.log" | tr '\n' ' ')"
kv serverThreadsFlagged "$("$node" "$cli" status "$server_pid" --json | "$node" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const p=JSON.parse(s).processes[0];console.log(p.threads.filter(t=>t.ioFlusher).length+'/'+p.threads.length)})")"
kv serverFlags "$(printf '0x%x' "$(pf_flags "/proc/$server_pid/stat")")"

log "setting up: the server is listening; attaching /dev/nbd0, ext4 on it"
/usr/sbin/nbd-client -unix "$work/nbd.sock" /dev/nbd0 -N disk -b 4096 >/dev/null 2>&1 || fail "nbd-client failed"
# No lazy initialisation: ext4lazyinit would add writes of its own during the run.
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/nbd0 && mount /dev/nbd0 mnt ||
  fail "cannot make the filesystem on /dev/nbd0"

if [ "$variant" = swap ]; then
  # fallocate: unwritten extents are accepted for swap since iomap_swapfile_activate, and cost no writes now.
  fallocate -l "${swap_mib}M" mnt/swapfile && chmod 600 mnt/swapfile && mkswap mnt/swapfile >/dev/null &&
    swapon mnt/swapfile || fail "cannot make a swap file on /dev/nbd0"
  kv swapMiB "$swap_mib"
  log "setting up: ${swap_mib} MiB of swap on /dev/nbd0's ext4"
fi

# The files the watch writes, allocated ahead (tmpfs keeps the pages, the size stays 0), now that this shell is in its
# cgroup: in the swap variant, a tmpfs page charged elsewhere could be swapped out to /dev/nbd0 and read back through
# the server. The record so far is copied into a new one for the same reason.
for f in series threads memory record-watch record-2; do
  : >"$work/$f" && fallocate -n -l 2M "$work/$f" || fail "cannot allocate $work/$f ahead"
done
# The kernel log, read at the end with builtins (read from the start of its buffer; its reader's buffer is allocated
# now, when it opens).
exec {kmsg_fd}</dev/kmsg || fail "cannot open /dev/kmsg"
while IFS= read -r line; do printf '%s\n' "$line"; done <"$record" >>"$work/record-watch"
record="$work/record-watch"

# The load waits at a FIFO until released, so that Node's start-up is not counted as time without progress.
log "setting up: starting the load"
mkfifo writer.go hog.go
start_unprotected() { # CGROUP-FILE ROLE OOM-SCORE-ADJ JS: io-flusher exec --clear, then node -e JS; sets started_pid
  (
    [ -z "$1" ] || echo $BASHPID >"$1"
    exec "$node" "$cli" exec --clear --oom-score-adj "$3" -- "$node" -e "$4"
  ) >/dev/null 2>"$work/$2.err" &
  started_pid=$!
}
# The writer: random data in 1 MiB writes (generated as it goes), each timed; fsync at the end; the sha256 is checked
# after a remount.
start_unprotected "$writer_cgroup" writer 0 "
  const fs = require('fs'); const crypto = require('crypto');
  fs.writeFileSync('writer.ready', ''); fs.readFileSync('writer.go');
  const hash = crypto.createHash('sha256'); const lat = [];
  const fd = fs.openSync('mnt/data', 'w'); const t0 = process.hrtime.bigint();
  for (let i = 0; i < $mib; i++) {
    const chunk = crypto.randomBytes(1 << 20); hash.update(chunk);
    const t = process.hrtime.bigint();
    fs.writeSync(fd, chunk, 0, chunk.length, i * (1 << 20));
    lat.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  const tf = process.hrtime.bigint(); fs.fsyncSync(fd); const fsyncMs = Number(process.hrtime.bigint() - tf) / 1e6;
  fs.closeSync(fd);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b); const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  fs.writeFileSync('writer.json', JSON.stringify({ seconds, mibPerSecond: $mib / seconds, p50Ms: q(0.5), p99Ms: q(0.99),
    maxMs: lat[lat.length - 1], fsyncMs, sha256: hash.digest('hex') }));
"
writer_pid=$started_pid
hog_pid=
if [ "$variant" = swap ]; then
  avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
  [[ $avail_kb =~ ^[0-9]+$ ]] || fail "no MemAvailable in /proc/meminfo"
  hog_mib=$((avail_kb / 1024 + hog_over_mib))
  kv hogMiB "$hog_mib"
  # More than the memory there is, every page written over and over: pages are swapped out and back in all along.
  start_unprotected "$hog_cgroup" hog 1000 "
    const fs = require('fs');
    fs.writeFileSync('hog.started', ''); fs.readFileSync('hog.go');
    const chunks = [];
    for (let i = 0; i < $hog_mib; i++) chunks.push(Buffer.alloc(1 << 20, i));
    fs.writeFileSync('hog.ready', '');
    for (let pass = 0; ; pass++) for (const c of chunks) for (let o = 0; o < c.length; o += 4096) c[o] = pass;"
  hog_pid=$started_pid # oom_score_adj 1000: if the OOM killer must pick, it picks the hog
fi
for _ in $(seq 1 600); do [ -e writer.ready ] && { [ -z "$hog_pid" ] || [ -e hog.started ]; } && break; sleep 0.1; done
[ -e writer.ready ] || fail "the writer did not start: $(tail -3 "$work/writer.err" | tr '\n' ' ')"
[ -z "$hog_pid" ] || [ -e hog.started ] || fail "the hog did not start: $(tail -3 "$work/hog.err" | tr '\n' ' ')"
kv writerFlags "$(printf '0x%x' "$(pf_flags "/proc/$writer_pid/stat")")"

# ---------------------------------------------------------------------------------------------------------------------
# Snapshots of where the tasks are, with shell builtins only (a stuck machine may not start a program in time).
snapshot() { # NAME T
  local name=$1 t=$2 dir pid tid stat rest comm state flags role wchan stack frames line
  for dir in /proc/[0-9]*/task/[0-9]*; do
    pid=${dir#/proc/} && pid=${pid%%/*} && tid=${dir##*/}
    IFS= read -r stat 2>/dev/null <"$dir/stat" || continue # (a task that has gone: no message)
    comm=${stat#*(} && comm=${comm%)*} && rest=${stat##*) }
    set -f
    # shellcheck disable=SC2086
    set -- $rest
    set +f
    state=$1 flags=$7
    if [ "$pid" = "$server_pid" ]; then role=server
    elif [ "$pid" = "$writer_pid" ]; then role=writer
    elif [ -n "$hog_pid" ] && [ "$pid" = "$hog_pid" ]; then role=hog
    elif [ "$state" = D ]; then role=blocked
    elif [[ $comm == kswapd* ]]; then role=kswapd
    else continue
    fi
    wchan=
    IFS= read -r wchan 2>/dev/null <"$dir/wchan"
    # A thread being woken can give a stack cut short: read it up to three times, keep the longest.
    stack= frames=0
    for _ in 1 2 3; do
      local try='' n=0
      while IFS= read -r line; do
        line=${line#*] } && line=${line%%+0x*}
        try+="${try:+ < }$line" && n=$((n + 1))
      done 2>/dev/null <"$dir/stack"
      ((n > frames)) && stack=$try frames=$n
      [[ $try == *entry_SYSCALL* || $try == *ret_from_fork* || $try == *asm_exc_page_fault* ]] && break
    done
    printf 'lab-thread\t%s\t%s\t%s\t%s\t%s\t0x%x\t%s\t%s\t%s\t%s\n' "$name" "$t" "$role" "$pid" "$tid" "$flags" "$state" \
      "${wchan:-0}" "${comm//$'\t'/ }" "$stack" >>"$work/threads"
  done
  local key value unit fields=''
  while read -r key value unit; do
    case $key in Dirty: | Writeback: | MemFree: | MemAvailable: | SwapTotal: | SwapFree: | Cached:) fields+="	${key%:}=$value" ;; esac
  done </proc/meminfo
  printf 'lab-memory\t%s\t%s%s\n' "$name" "$t" "$fields" >>"$work/memory"
}

# ---------------------------------------------------------------------------------------------------------------------
# The watch: one sample a second, from the release of the load (t=0).
mkfifo tick
exec {tick_fd}<>tick # read -t on a FIFO nobody writes: a one-second sleep without starting a program
# Each sets globals: $(...) would start a subshell every second.
now_ms() { now=${EPOCHREALTIME//[!0-9]/} && now=$((now / 1000)); }
nbd_sectors() { # reads, writes: completed sectors of /dev/nbd0
  local f
  read -r -a f </sys/block/nbd0/stat
  reads=${f[2]} writes=${f[6]}
}
writer_bytes() { # keeps the last value once the writer has gone
  local key value
  while read -r key value; do [ "$key" = wchar: ] && { wchar=$value && return; }; done <"/proc/$writer_pid/io" 2>/dev/null
}
swapped_out() {
  local key value
  swapped=0
  while read -r key value; do [ "$key" = pswpout ] && { swapped=$value && return; }; done </proc/vmstat
}
alive() { # PID: running and not a zombie
  local stat
  IFS= read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

nbd_sectors && reads0=$reads writes0=$writes
swapped_out && swap0=$swapped
now_ms && t0=$now
writer_started=''
watching='' wchar=0 bytes=0 bytes0=0
release_writer() { # T: the writer's bytes count from its release (Node's start-up writes a few)
  writer_bytes && bytes0=$wchar && bytes=0 && last_bytes=0
  echo go >writer.go && writer_started=$1
}
log "pids: server=$server_pid writer=$writer_pid hog=${hog_pid:-none}"
if [ -n "$hog_pid" ]; then echo go >hog.go; else release_writer 0 && watching=1 && kv watchFromMs 0; fi
TZ=UTC printf -v guest_start '%(%Y-%m-%dT%H:%M:%SZ)T' -1
kv guestStart "$guest_start"
last_writes=$writes0 last_bytes=0 last_change=0 episode=0 snapped='' stopped_by='' last_minute=0
while :; do
  read -r -t 1 -u "$tick_fd" _
  now_ms && t=$((now - t0))
  nbd_sectors && swapped_out
  [ -z "$writer_started" ] || { writer_bytes && bytes=$((wchar - bytes0)); }
  printf 'lab-sample\t%s\t%s\t%s\t%s\t%s\n' "$t" $((writes - writes0)) "$bytes" $((reads - reads0)) \
    $((swapped - swap0)) >>"$work/series"
  if [ "$writes" != "$last_writes" ] || [ "$bytes" != "$last_bytes" ] || [ -z "$watching" ]; then
    last_writes=$writes last_bytes=$bytes last_change=$t snapped=''
  fi
  # The swap variant's hog first fills free memory, which needs no I/O: the watch for stalls begins with the first
  # page swapped out (or the writer's release).
  if [ -z "$watching" ] && { ((swapped > swap0)) || [ -n "$writer_started" ]; }; then
    watching=1 && kv watchFromMs "$t"
  fi
  stalled_ms=$((t - last_change))
  if [ -z "$snapped" ] && ((stalled_ms >= stall_s * 1000)); then
    episode=$((episode + 1)) snapped=1
    # The start of a stall (the record keeps the first four and the last: print_record).
    log "no progress for ${stall_s}s at t=$((t / 1000))s: recording the tasks (stall $episode)"
    snapshot "stall-$episode" "$t"
  fi
  # Once more NBD_LAB_SETTLE_S into the stall: threads can still move along the path they block in during the first
  # seconds (a swap-out waits for a bio, then for a request tag), so a hang is also compared with this one.
  if [ "$snapped" = 1 ] && ((stalled_ms >= settle_s * 1000)); then
    snapped=2
    log "no progress for ${settle_s}s: recording the tasks again (stall $episode)"
    snapshot "settled-$episode" "$t"
  fi
  if ((stalled_ms >= hang_s * 1000)); then
    log "no progress for ${hang_s}s: recording the tasks again, and the blocked tasks to the kernel log"
    snapshot end "$t"
    echo w >/proc/sysrq-trigger 2>/dev/null || true
    stopped_by=hang-bound
    break
  fi
  # A line a minute on the console, for whoever watches a long run (kernel-run without --quiet).
  if ((t / 60000 != last_minute)); then
    last_minute=$((t / 60000))
    log "t=$((t / 1000))s: nbd0 written $(((writes - writes0) >> 11)) MiB, writer $((bytes >> 20)) MiB, swapped out $(((swapped - swap0) >> 8)) MiB, no progress for $((stalled_ms / 1000)) s"
  fi
  if [ -n "$writer_started" ] && ! alive "$writer_pid"; then stopped_by=writer-exited && break; fi
  if ((t >= bound_s * 1000)); then stopped_by=run-bound && break; fi
  # The swap variant releases the writer once the hog holds more than the memory there is (or after 120 s).
  if [ -z "$writer_started" ] && { [ -e hog.ready ] || ((t >= 120000)) || ! alive "$hog_pid"; }; then
    release_writer "$t"
    log "the writer is released at t=$((t / 1000))s"
    kv writerReleasedMs "$t"
  fi
done
kv stoppedBy "$stopped_by"
log "the watch ended ($stopped_by) at t=$((t / 1000))s"
if [ "$variant" = memcg ]; then
  max_usage=$(</sys/fs/cgroup/memory/lab/memory.max_usage_in_bytes)
  [[ $max_usage =~ ^[0-9]+$ ]] && kv memcgMaxUsageMiB $((max_usage >> 20))
  kv memcgFailcnt "$(</sys/fs/cgroup/memory/lab/memory.failcnt)"
fi
read -r l1 l5 l15 _ </proc/loadavg
kv guestLoadavgEnd "$l1 $l5 $l15"

writer_exit=null
if [ "$stopped_by" = writer-exited ]; then
  wait "$writer_pid"
  writer_exit=$?
else
  kill -KILL "$writer_pid" 2>/dev/null
fi
kv writerExit "$writer_exit"
if [ "$writer_exit" != 0 ] && [ "$writer_exit" != null ]; then
  error_text=''
  [ -e "$work/writer.err" ] && while IFS= read -r line || [ -n "$line" ]; do error_text+="$line "; done <"$work/writer.err"
  ((${#error_text} <= 400)) || error_text=${error_text: -400}
  kv writerError "${error_text//$'\t'/ }"
fi
server_alive=false
alive "$server_pid" && server_alive=true
kv serverAlive "$server_alive"
if [ -n "$hog_pid" ]; then
  if alive "$hog_pid"; then kv hogSurvived true; else kv hogSurvived false; fi
  # Never waited for: a hog in D state (reclaim writing to /dev/nbd0) dies only once its I/O completes, maybe never.
  [ "$stopped_by" = hang-bound ] || kill -KILL "$hog_pid" 2>/dev/null
fi
if [ "$stopped_by" = writer-exited ] && [ "$writer_exit" = 0 ] && [ -s writer.json ]; then
  IFS= read -r written <writer.json
  kv write "$written"
fi
# The kernel's own account of the blocked tasks (hung-task reports and sysrq w) and of OOM kills, from /dev/kmsg with
# builtins: the counts, and the lines of the last sysrq w dump (a hang), else those of the hung-task reports (each with
# the 40 lines after it); the unreliable "? " frames dropped, at most 400 lines.
kernel_log() {
  local line message at name oom=0 killed='' stuck=0 hung=0 status dump_from=-1 after=0 errors=0
  local -a lines=() keep=()
  now_ms && local deadline=$((now + 20000)) # a log that keeps growing (a flood of I/O errors) is cut after 20 s
  while now_ms && ((now < deadline)); do
    IFS= read -r -t 1 -u "$kmsg_fd" line 2>/dev/null
    status=$?
    ((status > 128)) && break              # nothing more for a second: the end of the log
    ((status == 0)) || { ((++errors < 3)) && continue; break; } # EPIPE: records overwritten before they were read
    [[ $line == ' '* ]] && continue          # the records' key=value lines
    message=${line#*;} at=${line#*,} && at=${at#*,} && at=${at%%,*}
    [[ $at =~ ^[0-9]+$ ]] || at=0
    case ${message,,} in *'out of memory: killed process '*)
      oom=$((oom + 1)) && name=${message#*(} && killed+="${name%%)*} " ;;
    esac
    [[ $message == *'Possible stuck request'* ]] && stuck=$((stuck + 1))
    [[ $message == *'blocked for more than'* ]] && hung=$((hung + 1)) && after=41
    [[ $message == *'Show Blocked State'* ]] && dump_from=${#lines[@]}
    [[ $message =~ ^\ *\?\  ]] && continue
    printf -v line '[%5d.%06d] %s' $((at / 1000000)) $((at % 1000000)) "$message"
    lines+=("$line")
    ((after > 0)) && { keep+=("$line") && after=$((after - 1)); }
  done
  kv oomKills "$oom"
  kv oomKilled "$killed"
  kv stuckRequestMessages "$stuck"
  kv hungTaskReports "$hung"
  ((episode > 0)) || return 0
  ((dump_from < 0)) || keep=("${lines[@]:dump_from}")
  for line in "${keep[@]:0:400}"; do printf 'lab-dmesg\t%s\n' "$line" >>"$record"; done
}

# The first part of the record, at once; the second has the kernel log and, after a completed run, the data check.
kv recordParts 2
print_record
record="$work/record-2"
kernel_log
if [ "$stopped_by" != writer-exited ]; then
  # The stuck tasks never finish, and the guest's final sync would wait forever behind /dev/nbd0's dirty pages:
  # power off at once, once the output above has drained to the console (kernel-run then reports a VM that ended
  # without an exit status, which the lab expects).
  print_part "$record"
  read -r -t 3 -u "$tick_fd" _
  echo o >/proc/sysrq-trigger
  read -r -t 30 -u "$tick_fd" _
  exit 0
fi
if [ "$writer_exit" = 0 ] && [ -s writer.json ]; then
  # Each step is bounded: swapoff reads every swapped page back through the server, and a machine still short of
  # memory can make that, or the remount, take longer than the run itself. A step that does not finish leaves the
  # data unverified (intact: null, with verifyError), never counted as intact or as corrupted, and the record printed.
  intact=false verify_error=''
  if [ "$variant" = swap ]; then
    log "swapoff"
    timeout 180 swapoff mnt/swapfile || verify_error="swapoff did not finish within 180 s"
  fi
  if [ -z "$verify_error" ]; then
    log "verifying the data after a remount"
    if timeout 180 umount mnt && timeout 60 mount /dev/nbd0 mnt; then
      want=$(sed 's/.*"sha256":"\([0-9a-f]*\)".*/\1/' writer.json)
      got=$(timeout 180 sha256sum <mnt/data | cut -d' ' -f1)
      [ -n "$got" ] || verify_error="reading the data back did not finish within 180 s"
      [ "$got" = "$want" ] && intact=true
    else
      verify_error="the remount did not finish within 180 s"
    fi
  fi
  if [ -n "$verify_error" ]; then
    log "$verify_error: the data is not verified"
    kv intact null
    kv verifyError "$verify_error"
  else
    kv intact "$intact"
  fi
fi
print_part "$record"
[ "$variant" != swap ] || swapoff mnt/swapfile 2>/dev/null
mountpoint -q mnt && umount mnt
/usr/sbin/nbd-client -d /dev/nbd0 >/dev/null 2>&1
kill "$server_pid" 2>/dev/null
exit 0
}
