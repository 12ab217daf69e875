#!/usr/bin/env bash
# One run of the pressure lab, INSIDE a VM started by scripts/lab-pressure.mjs through scripts/kernel-run (root,
# modules nbd, ext4 and virtio_blk, an empty disk as /dev/vda). Prints one line `lab-result {JSON}`.
#
#   pressure-run.sh VARIANT PROTECT        (NBD_LAB_WRITE_MIB, default 128, is what the writer writes)
#
# The setup a storage daemon really has: the NBD server (examples/nbd-server) keeps its backing file on ext4 on a
# block device of its own (/dev/vda) and writes it with ordinary buffered pwrite; the kernel's NBD client attaches
# /dev/nbd0 to it (no request timeout), ext4 on /dev/nbd0 is written by a writer that fsyncs at the end. The server is
# started through `io-flusher exec` (PROTECT=exec) or `io-flusher exec --clear` (PROTECT=none), both with
# oom_score_adj -1000, so they differ only in IO_FLUSHER.
#
# VARIANT separates the two things IO_FLUSHER changes:
#   dirty    PF_LOCAL_THROTTLE. A small global dirty limit (vm.dirty_bytes 8 MiB, background 2 MiB) and no periodic
#            writeback (vm.dirty_writeback_centisecs 0): /dev/nbd0's pages in flight hold the global count over the
#            limit, and an unprotected server is throttled in balance_dirty_pages for its own pwrite, behind the very
#            pages only it can clean.
#   reclaim  PF_MEMALLOC_NOIO. A memory hog holds all but NBD_LAB_HEADROOM_MIB (default 64) of available memory and
#            keeps touching it, so the server's allocations enter direct reclaim while /dev/nbd0 has dirty pages.
#   both     the two together.
#
# Progress is watched on /dev/nbd0's completed write sectors (/sys/block/nbd0/stat). When none complete for
# NBD_LAB_STALL_S seconds (default 30) while the writer runs, the run is declared hung and, before it ends, every
# server thread's state, wchan and kernel stack are recorded (and the writer's), `echo w > /proc/sysrq-trigger`
# dumps blocked tasks to the kernel log, and the cause is classified from the stacks.
set -uo pipefail
variant=${1:?dirty|reclaim|both} protect=${2:?exec|none}
case $variant in dirty | reclaim | both) ;; *) echo "VARIANT must be dirty, reclaim or both" >&2; exit 2 ;; esac
case $protect in exec | none) ;; *) echo "PROTECT must be exec or none" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/../.." && pwd)
node=$(command -v node)
cli="$root/dist/cli.js"
server="$root/examples/nbd-server/dist/server.js"
mib=${NBD_LAB_WRITE_MIB:-128}
stall_s=${NBD_LAB_STALL_S:-30}
bound_s=${NBD_LAB_BOUND_S:-600}
work=/tmp/lab
mkdir -p "$work/store" "$work/mnt"
log() { echo "lab: $*" >&2; }
# JSON string of $1 without starting a program (a stuck machine may not start node in time): escape \ and ", drop
# control characters.
json_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\037')"
}

[ -b /dev/vda ] || { log "no /dev/vda: kernel-run needs --disk"; exit 2; }
[ -b /dev/nbd0 ] || { log "no /dev/nbd0: kernel-run needs --modules nbd"; exit 2; }
mkfs.ext4 -q -F /dev/vda && mount /dev/vda "$work/store" || { log "cannot make the backing filesystem"; exit 1; }

# Hung tasks are reported after 20 s instead of 120 s, so the kernel log has them before the run ends.
echo 20 >/proc/sys/kernel/hung_task_timeout_secs 2>/dev/null || true
if [ "$variant" != reclaim ]; then
  sysctl -q -w vm.dirty_bytes=8388608 vm.dirty_background_bytes=2097152 vm.dirty_writeback_centisecs=0
fi

case $protect in
  exec) "$node" "$cli" exec --oom-score-adj -1000 -- "$node" "$server" --file "$work/store/disk.img" --size 1G \
    --socket "$work/nbd.sock" --export disk --protect exec 2>"$work/server.log" & ;;
  none) "$node" "$cli" exec --clear --oom-score-adj -1000 -- "$node" "$server" --file "$work/store/disk.img" --size 1G \
    --socket "$work/nbd.sock" --export disk --protect none 2>"$work/server.log" & ;;
esac
server_pid=$!
for _ in $(seq 1 600); do grep -q 'listening on' "$work/server.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'listening on' "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }
server_threads_flagged=$("$node" "$cli" status "$server_pid" --json | "$node" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const p=JSON.parse(s).processes[0];console.log(p.threads.filter(t=>t.ioFlusher).length+'/'+p.threads.length)})")

/usr/sbin/nbd-client -unix "$work/nbd.sock" /dev/nbd0 -N disk -b 4096 >/dev/null 2>&1 || { log "nbd-client failed"; exit 1; }
# No lazy initialisation: ext4lazyinit would add writes of its own during the run.
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/nbd0 && mount /dev/nbd0 "$work/mnt" ||
  { log "cannot make the filesystem on /dev/nbd0"; exit 1; }

hog_pid=
if [ "$variant" != dirty ]; then
  avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
  hog_mb=$((avail_kb / 1024 - ${NBD_LAB_HEADROOM_MIB:-64}))
  "$node" -e "
    const chunks = [];
    for (let i = 0; i < $hog_mb; i++) chunks.push(Buffer.alloc(1 << 20, i));
    setInterval(() => { for (const c of chunks) c[0]++; }, 200);" &
  hog_pid=$!
  echo 1000 >"/proc/$hog_pid/oom_score_adj" # if the OOM killer must pick, it picks the hog
  sleep 3
fi

# The writer: random data in 1 MiB writes (generated as it goes), each timed; fsync at the end; the sha256 is checked
# after a remount.
"$node" -e "
  const fs = require('fs'); const crypto = require('crypto');
  const hash = crypto.createHash('sha256'); const lat = [];
  const fd = fs.openSync('$work/mnt/data', 'w'); const t0 = process.hrtime.bigint();
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
  fs.writeFileSync('$work/writer.json', JSON.stringify({ seconds, mibPerSecond: $mib / seconds, p50Ms: q(0.5), p99Ms: q(0.99),
    maxMs: lat[lat.length - 1], fsyncMs, sha256: hash.digest('hex') }));
" 2>"$work/writer.err" &
writer_pid=$!

# Watch /dev/nbd0's completed write sectors; the longest time without any is the longest stall.
sectors() { awk '{print $7}' /sys/block/nbd0/stat; }
last=$(sectors) last_change=$SECONDS longest_stall=0 hung=false started=$SECONDS
while kill -0 "$writer_pid" 2>/dev/null; do
  sleep 1
  now=$(sectors)
  if [ "$now" != "$last" ]; then last=$now last_change=$SECONDS; fi
  stalled=$((SECONDS - last_change))
  [ $stalled -le $longest_stall ] || longest_stall=$stalled
  if [ $stalled -ge "$stall_s" ] || [ $((SECONDS - started)) -ge "$bound_s" ]; then hung=true; break; fi
done

# Evidence: where every server thread (and the writer) sleeps, while they are still stuck.
thread_report() { # PID ROLE -> one JSON object per thread, comma-separated
  local pid=$1 role=$2 dir first=1
  for dir in /proc/"$pid"/task/*; do
    [ -r "$dir/stat" ] || continue
    local stat comm state wchan stack
    stat=$(cat "$dir/stat" 2>/dev/null) || continue
    comm=$(cat "$dir/comm" 2>/dev/null)
    state=$(echo "${stat##*) }" | cut -d' ' -f1)
    wchan=$(cat "$dir/wchan" 2>/dev/null)
    stack=$(sed -E 's/^\[<[0-9a-f]+>\] //; s/\+0x[0-9a-f]+\/0x[0-9a-f]+//' "$dir/stack" 2>/dev/null | tr '\n' ' ')
    [ $first = 1 ] || printf ','
    first=0
    printf '{"role":"%s","tid":%s,"name":%s,"state":"%s","wchan":%s,"stack":%s}' "$role" "${dir##*/}" \
      "$(json_string "$comm")" "$state" "$(json_string "${wchan:-0}")" "$(json_string "$stack")"
  done
}
threads_json='[]' cause=null meminfo='{}'
if [ $hung = true ]; then
  log "no write to /dev/nbd0 completed for ${stall_s}s: recording the server's threads"
  threads_json="[$(thread_report "$server_pid" server),$(thread_report "$writer_pid" writer)]"
  meminfo=$(awk '/^(Dirty|Writeback|MemFree|MemAvailable):/ {gsub(":", ""); printf "%s\"%s\":%s", (n++ ? "," : "{"), $1, $2} END {print "}"}' /proc/meminfo)
  echo w >/proc/sysrq-trigger 2>/dev/null || true
  # The cause, from the server's D-state threads' stacks (all its threads if none is in D), most specific first.
  stuck=$(printf '%s' "$threads_json" | grep -o '"role":"server"[^}]*"state":"D"[^}]*}' || true)
  [ -n "$stuck" ] || stuck=$(printf '%s' "$threads_json" | grep -o '"role":"server"[^}]*}' || true)
  if printf '%s' "$stuck" | grep -q 'balance_dirty_pages'; then cause='"balance_dirty_pages"'
  elif printf '%s' "$stuck" | grep -Eq 'reclaim_throttle|shrink_(folio|page)_list|try_to_free_(mem_cgroup_)?pages|__alloc_pages_slowpath|do_try_to_free_pages'; then cause='"direct-reclaim"'
  elif printf '%s' "$stuck" | grep -Eq 'folio_wait_writeback|wait_on_page_writeback|__filemap_fdatawait'; then cause='"waiting-on-writeback"'
  elif printf '%s' "$stuck" | grep -Eq 'jbd2|start_this_handle|ext4_journal'; then cause='"filesystem-journal"'
  elif printf '%s' "$stuck" | grep -q '"state":"D"'; then cause='"other"'
  else cause='"no-server-thread-in-D"'
  fi
  kill -KILL "$writer_pid" 2>/dev/null
fi
wait "$writer_pid" 2>/dev/null
writer_exit=$?
[ $hung = false ] || writer_exit=null

server_alive=false
kill -0 "$server_pid" 2>/dev/null && server_alive=true
hog_survived=null
if [ -n "$hog_pid" ]; then
  hog_survived=true
  kill "$hog_pid" 2>/dev/null || hog_survived=false
  wait "$hog_pid" 2>/dev/null
fi
oom_kills=$(dmesg | grep -c 'Out of memory' || true)
stuck_requests=$(dmesg | grep -c 'Possible stuck request' || true)
hung_task_reports=$(dmesg | grep -c 'blocked for more than' || true)

write=null intact=null
if [ $hung = false ] && [ -s "$work/writer.json" ]; then
  write=$(cat "$work/writer.json")
  if umount "$work/mnt" && mount /dev/nbd0 "$work/mnt"; then
    want=$(echo "$write" | "$node" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).sha256))")
    got=$(sha256sum <"$work/mnt/data" | cut -d' ' -f1)
    intact=false
    [ "$got" = "$want" ] && intact=true
  fi
elif [ $hung = false ]; then
  log "the writer failed (exit $writer_exit): $(tail -3 "$work/writer.err" | tr '\n' ' ')"
fi

echo "lab-result {\"variant\":\"$variant\",\"protect\":\"$protect\",\"kernel\":\"$(uname -r)\",\"node\":\"$("$node" --version)\",\
\"memTotalKiB\":$(awk '/MemTotal/ {print $2}' /proc/meminfo),\"writeMiB\":$mib,\"stallThresholdSeconds\":$stall_s,\
\"completed\":$([ "$write" != null ] && echo true || echo false),\"hung\":$hung,\"writerExit\":$writer_exit,\
\"write\":$write,\"intact\":$intact,\"longestStallSeconds\":$longest_stall,\"serverAlive\":$server_alive,\
\"serverThreadsFlagged\":\"$server_threads_flagged\",\"hogSurvived\":$hog_survived,\"oomKills\":$oom_kills,\
\"stuckRequestMessages\":$stuck_requests,\"hungTaskReports\":$hung_task_reports,\"cause\":$cause,\"meminfoKiB\":$meminfo,\
\"threads\":$threads_json}"
if [ $hung = true ]; then
  # The stuck threads never finish, and the guest's final sync would wait forever behind /dev/nbd0's dirty pages:
  # power off at once, once the output above has drained to the console (the lab reads the result line, and expects
  # kernel-run to report a VM that ended without an exit status).
  sleep 3
  echo o >/proc/sysrq-trigger
  sleep 30
fi
mountpoint -q "$work/mnt" && umount "$work/mnt"
/usr/sbin/nbd-client -d /dev/nbd0 >/dev/null 2>&1
kill "$server_pid" 2>/dev/null
exit 0
