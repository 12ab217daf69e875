#!/usr/bin/env bash
# The NBD server on a real kernel: runs INSIDE a VM started by vm/kernel-run (as root, modules nbd and ext4
# loaded; see scripts/test-nbd.mjs). Prints one JSON line `scenario-result {...}` and exits non-zero on failure.
#
#   kernel-scenario.sh basic    PROTECT   attach with nbd-client, mkfs.ext4, mount, write 64 MiB random data with
#                                         fsync, unmount, remount, verify the checksum; `io-flusher status --check`
#                                         on the server must pass during the run when PROTECT=exec.
#   kernel-scenario.sh pressure PROTECT   the same filesystem in a small guest while a memory hog forces reclaim and
#                                         dirty data is written: throughput, longest stall, data intact.
# PROTECT: exec (server started through `io-flusher exec`) or none (no IO_FLUSHER).
set -euo pipefail
scenario=${1:?basic|pressure} protect=${2:?exec|none}
root=$(cd "$(dirname "$0")/../.." && pwd)
node=$(command -v node)
cli="$root/dist/cli.js"
server="$root/examples/nbd-server/dist/server.js"
work=$(mktemp -d /tmp/nbd-scenario.XXXXXX)
# The backing file lives on the project share (9p to the host), not in guest memory: the guest's own RAM is what
# the pressure scenario squeezes.
store="$root/.nbd-scenario"
mkdir -p "$store"
disk="$store/disk-$$.img"
sock="$work/nbd.sock"
mnt="$work/mnt"
mkdir -p "$mnt"
bound=${NBD_SCENARIO_BOUND:-600}
log() { echo "scenario: $*" >&2; }

cleanup() {
  set +e
  mountpoint -q "$mnt" && umount -l "$mnt"
  /usr/sbin/nbd-client -d /dev/nbd0 >/dev/null 2>&1
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "${hog_pid:-}" ] && kill "$hog_pid" 2>/dev/null
  rm -f "$disk"
  rm -rf "$work"
}
trap cleanup EXIT

# Both variants run through the launcher with the same OOM shield; they differ only in IO_FLUSHER. The basic scenario
# also locks the server's code and payload buffers (--mlock), as a production daemon would.
mlock=()
[ "$scenario" = basic ] && mlock=(--mlock)
case "$protect" in
  exec) "$node" "$cli" exec --oom-score-adj -1000 -- "$node" "$server" --file "$disk" --size 512M --socket "$sock" --export disk --protect exec "${mlock[@]}" 2>"$work/server.log" & ;;
  none) "$node" "$cli" exec --clear --oom-score-adj -1000 -- "$node" "$server" --file "$disk" --size 512M --socket "$sock" --export disk --protect none "${mlock[@]}" 2>"$work/server.log" & ;;
  *) echo "PROTECT must be exec or none" >&2; exit 2 ;;
esac
server_pid=$!
for _ in $(seq 1 600); do grep -q 'listening on' "$work/server.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'listening on' "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }

/usr/sbin/nbd-client -unix "$sock" /dev/nbd0 -N disk -b 4096 >&2
status_check() {
  if [ "$protect" = exec ]; then
    "$node" "$cli" status "$server_pid" --check >/dev/null || { log "io-flusher status --check failed on the server"; return 1; }
  fi
}
status_check
mkfs.ext4 -q -F /dev/nbd0
mount /dev/nbd0 "$mnt"


if [ "$scenario" = pressure ]; then
  # A hog that takes all but ~80 MiB of what is available and keeps touching it, so the write below runs under
  # reclaim: dirty pages of /dev/nbd0 must be written back through the server while memory is short.
  avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
  hog_mb=$(( avail_kb / 1024 - ${NBD_SCENARIO_HEADROOM_MIB:-80} ))
  "$node" -e "
    const mb = $hog_mb; const chunks = [];
    for (let i = 0; i < mb; i++) chunks.push(Buffer.alloc(1 << 20, i));
    console.error('hog holds ' + mb + ' MiB');
    setInterval(() => { for (const c of chunks) c[0]++; }, 200);" &
  hog_pid=$!
  echo 1000 >"/proc/$hog_pid/oom_score_adj"   # if the OOM killer must pick, it picks the hog
  sleep 3
fi

# Write 64 MiB of random data in 1 MiB chunks (generated as it goes: no copy held in memory), timing each write;
# fsync at the end. The longest chunk is the longest stall; the sha256 is checked after a remount.
result=$(timeout "$bound" "$node" -e "
  const fs = require('fs'); const crypto = require('crypto');
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync('$mnt/data', 'w');
  let longest = 0; const t0 = process.hrtime.bigint();
  for (let i = 0; i < 64; i++) {
    const chunk = crypto.randomBytes(1 << 20); hash.update(chunk);
    const t = process.hrtime.bigint();
    fs.writeSync(fd, chunk, 0, chunk.length, i << 20);
    const ms = Number(process.hrtime.bigint() - t) / 1e6; if (ms > longest) longest = ms;
  }
  const tf = process.hrtime.bigint(); fs.fsyncSync(fd); const fsyncMs = Number(process.hrtime.bigint() - tf) / 1e6;
  fs.closeSync(fd);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ seconds, mibPerSecond: 64 / seconds, longestWriteMs: longest, fsyncMs, sha256: hash.digest('hex') }));
") || {
  rc=$?
  # 124: the bound elapsed (a hang); anything else: the writer failed (killed by the OOM killer: 137, or an I/O error).
  hang=false; [ "$rc" = 124 ] && hang=true
  server_alive=false; kill -0 "$server_pid" 2>/dev/null && server_alive=true
  log "the write did not complete: exit $rc ($([ "$hang" = true ] && echo "no progress within ${bound}s" || echo "writer failed")); server alive: $server_alive"
  log "server log tail:"; tail -5 "$work/server.log" >&2
  log "kernel log tail:"; dmesg | grep -E 'Out of memory|Killed process|nbd|I/O error|blocked for more' | tail -8 >&2
  echo "scenario-result {\"scenario\":\"$scenario\",\"protect\":\"$protect\",\"hang\":$hang,\"writerExit\":$rc,\"serverAlive\":$server_alive,\"boundSeconds\":$bound,\"oomKills\":$(dmesg | grep -c 'Out of memory' || true)}"
  exit 1
}
status_check
hog_survived=true
if [ -n "${hog_pid:-}" ]; then
  kill "$hog_pid" 2>/dev/null || hog_survived=false   # the OOM killer may have taken it: report, not fail
  wait "$hog_pid" 2>/dev/null || true
  hog_pid=
fi

umount "$mnt"
mount /dev/nbd0 "$mnt"
want=$(echo "$result" | "$node" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).sha256))")
got=$(sha256sum <"$mnt/data" | cut -d' ' -f1)
umount "$mnt"
intact=false; [ "$got" = "$want" ] && intact=true
threads=$("$node" "$cli" status "$server_pid" --json | "$node" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const p=JSON.parse(s).processes[0];console.log(JSON.stringify({threads:p.threads.length,ioFlusher:p.threads.filter(t=>t.ioFlusher).length}))})")
protection=$(sed -n 's/^nbd-server: \({"event":"protection".*\)$/\1/p' "$work/server.log" | head -n 1)
echo "scenario-result {\"scenario\":\"$scenario\",\"protect\":\"$protect\",\"kernel\":\"$(uname -r)\",\"node\":\"$("$node" --version)\",\"protection\":${protection:-null},\"memTotalKiB\":$(awk '/MemTotal/ {print $2}' /proc/meminfo),\"write\":$result,\"intact\":$intact,\"hogSurvived\":$hog_survived,\"oomKills\":$(dmesg 2>/dev/null | grep -c 'Out of memory' || true),\"server\":$threads}"
$intact
