#!/usr/bin/env bash
# Adding one file through the IPFS proxy into the embedded node vs
# `ipfs add` of the same file into Kubo 0.43.1, side by side, same machine.
#
#   cargo build --release && bash benches/embedded_add.sh [SIZE_MB, default 1024]
#
# Both sides: default options (CIDv0, 256 KiB chunks, balanced), the same
# Kubo CLI as the client, the whole file read from the page cache (it is
# written to disk and read once before timing). Before each side is timed,
# both daemons must be idle (no CPU for half a second), so neither side's
# background work (our peer pinning what it added, Kubo's flushes) runs
# during the other's add. Prints the seconds and MB/s of each side, each
# daemon's peak RSS (VmHWM: since it started, the add included), the CPU
# time each daemon used during its add (user + system, from /proc: on a
# shared machine the figure that depends least on the load), and checks
# both gave the same CID.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-1024}
BIN=${PINCLUSTER_BIN:-$PWD/target/release/pincluster}
IPFS=$PWD/real-ipfs/bin/ipfs
WORK=$(mktemp -d)
trap 'kill $PEER $KUBO 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$WORK/data"
sync
cat "$WORK/data" > /dev/null

"$BIN" init --no-secret --config "$WORK/peer" 2>/dev/null
CLUSTER_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
CLUSTER_IPFSPROXY_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
CLUSTER_EMBEDDED_GATEWAYLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
  "$BIN" daemon --config "$WORK/peer" > "$WORK/peer.log" 2>&1 &
PEER=$!
until PROXY=$(grep -o 'IPFS proxy listening addr=[^ ]*' "$WORK/peer.log" | cut -d= -f2) && [ -n "$PROXY" ]; do sleep 0.2; done

export IPFS_PATH=$WORK/kubo
"$IPFS" init --profile test --empty-repo > /dev/null
"$IPFS" config Addresses.API /ip4/127.0.0.1/tcp/0
"$IPFS" config Addresses.Gateway /ip4/127.0.0.1/tcp/0
"$IPFS" config --json Addresses.Swarm '["/ip4/127.0.0.1/tcp/0"]'
"$IPFS" config Routing.Type none
"$IPFS" daemon --offline > "$WORK/kubo.log" 2>&1 &
KUBO=$!
until grep -q 'Daemon is ready' "$WORK/kubo.log"; do sleep 0.2; done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
quiet() { # waits (60 s at most) until both daemons used < 20 ms of CPU in 0.5 s
  local deadline=$((SECONDS + 60)) a b c d
  while [ $SECONDS -lt $deadline ]; do
    a=$(ticks $PEER) b=$(ticks $KUBO); sleep 0.5; c=$(ticks $PEER) d=$(ticks $KUBO)
    [ $((c - a + d - b)) -lt 2 ] && return 0
  done
  echo "warning: daemons still busy after 60 s" >&2
}
peak() { awk '/VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$1/status"; }
run() { # label, daemon's pid, command...
  local label=$1 pid=$2; shift 2
  local start end cid cpu
  quiet
  cpu=$(ticks "$pid")
  start=$(date +%s.%N)
  cid=$("$@")
  end=$(date +%s.%N)
  cpu=$(( $(ticks "$pid") - cpu ))
  awk -v l="$label" -v s="$start" -v e="$end" -v mb="$SIZE_MB" -v c="$cid" -v cpu="$cpu" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { t = e - s; printf "%-34s %7.2f s %7.1f MB/s  daemon CPU %5.2f s  %s\n", l, t, mb / t, cpu / hz, c }'
  echo "$cid" >> "$WORK/cids"
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run "embedded node, through the proxy" $PEER env -u IPFS_PATH "$IPFS" --api "$PROXY" add -Q "$WORK/data"
run "Kubo 0.43.1, ipfs add" $KUBO "$IPFS" add -Q "$WORK/data"
echo "peak RSS: pincluster peer $(peak $PEER), Kubo daemon $(peak $KUBO)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$(sort -u "$WORK/cids" | wc -l)" = 1 ] || { echo "CIDs differ"; exit 1; }
