#!/usr/bin/env bash
# A recursive pin of a DAG only another node has, fetched over Bitswap into
# the pinning node's own store, side by side:
#
# - ours: two `pincluster daemon` processes (fresh `init` folders, so each
#   runs the embedded node with its fjall block store); the file is added
#   to A's node through its Kubo RPC; B's node is connected to A's swarm
#   and `ipfs --api <B's node> pin add <cid>` is timed;
# - Kubo 0.43.1: two daemons (fresh repos, loopback, no routing); the file
#   is added to K1; K2 is connected to K1 and `ipfs pin add <cid>` on K2 is
#   timed.
#
#   cargo build --release && bash benches/bitswap_pin.sh [SIZE_MB, default 1024] [RUNS, default 3]
#
# Each run starts every process and folder afresh; connecting is not timed.
# Both adds use the defaults (CIDv0, 256 KiB chunks, balanced), so both
# sides move the same DAG (the script checks the CIDs are equal and that
# B's store holds the whole DAG afterwards). Prints one line per run, with
# the load average of the machine at its end.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-1024}
RUNS=${2:-3}
BIN=${PINCLUSTER_BIN:-$PWD/target/release/pincluster}
IPFS=$PWD/real-ipfs/bin/ipfs
WORK=$(mktemp -d)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$WORK/data"
cat "$WORK/data" > /dev/null

wait_for() { # file, pattern: the first match, once it appears (60 s at most)
  local i
  for i in $(seq 600); do
    if grep -q -o -m1 "$2" "$1" 2>/dev/null; then grep -o -m1 "$2" "$1"; return; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

peer() { # name: starts a fresh peer; prints its embedded node's RPC address
  local dir=$WORK/$1
  "$BIN" init --no-secret --config "$dir" > /dev/null 2>&1
  CLUSTER_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
  CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
  CLUSTER_IPFSPROXY_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
  CLUSTER_EMBEDDED_GATEWAYLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
  CLUSTER_EMBEDDED_SWARMLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
    "$BIN" daemon --config "$dir" > "$dir.log" 2>&1 &
  PIDS+=($!)
  wait_for "$dir.log" 'embedded IPFS RPC listening addr=[^ ]*' | cut -d= -f2
}

kubo() { # name: starts a fresh Kubo daemon; prints its API address
  local repo=$WORK/$1
  IPFS_PATH=$repo "$IPFS" init --profile test --empty-repo > /dev/null
  for kv in 'Addresses.API "/ip4/127.0.0.1/tcp/0"' 'Addresses.Gateway "/ip4/127.0.0.1/tcp/0"' \
    'Addresses.Swarm ["/ip4/127.0.0.1/tcp/0"]' 'Routing.Type "none"' 'AutoConf.Enabled false' \
    'AutoTLS.Enabled false' 'Swarm.Transports.Network.QUIC false' \
    'Swarm.Transports.Network.WebTransport false' 'Swarm.Transports.Network.WebRTCDirect false'; do
    # shellcheck disable=SC2086
    IPFS_PATH=$repo "$IPFS" config --json $kv
  done
  IPFS_PATH=$repo "$IPFS" daemon > "$repo.log" 2>&1 &
  PIDS+=($!)
  wait_for "$repo.log" 'Daemon is ready' > /dev/null
  cat "$repo/api"
}

swarm_addr() { # api: the node's first TCP swarm address with /p2p/<id>
  local id
  id=$("$IPFS" --api "$1" id -f '<id>')
  "$IPFS" --api "$1" id -f '<addrs>' | tr ' \n' '\n\n' | grep -m1 '/tcp/' | sed "s|/p2p/.*||; s|\$|/p2p/$id|"
}

timed_pin() { # api, cid: seconds taken by `pin add`
  local start end
  start=$(date +%s.%N)
  "$IPFS" --api "$1" pin add --progress=false "$2" > /dev/null
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}

printf '%-4s %-12s %-12s %-8s %s\n' run ours_s kubo_s ratio load_avg
for run in $(seq "$RUNS"); do
  a=$(peer "a$run"); b=$(peer "b$run")
  cid=$("$IPFS" --api "$a" add -Q "$WORK/data")
  "$IPFS" --api "$b" swarm connect "$(swarm_addr "$a")" > /dev/null
  ours=$(timed_pin "$b" "$cid")
  held=$("$IPFS" --api "$b" repo stat --size-only | awk '/RepoSize/ { print $2 }')
  want=$("$IPFS" --api "$a" repo stat --size-only | awk '/RepoSize/ { print $2 }')
  [ "$held" = "$want" ] || { echo "B holds $held bytes, A $want"; exit 1; }
  stop_all; rm -rf "$WORK/a$run" "$WORK/b$run"

  k1=$(kubo "k1-$run"); k2=$(kubo "k2-$run")
  kcid=$(IPFS_PATH=$WORK/k1-$run "$IPFS" add -Q "$WORK/data")
  [ "$kcid" = "$cid" ] || { echo "CIDs differ: $cid (ours) vs $kcid (Kubo)"; exit 1; }
  IPFS_PATH=$WORK/k2-$run "$IPFS" swarm connect "$(swarm_addr "$k1")" > /dev/null
  theirs=$(IPFS_PATH=$WORK/k2-$run timed_pin "$k2" "$cid")
  stop_all; rm -rf "$WORK/k1-$run" "$WORK/k2-$run"

  ratio=$(awk -v o="$ours" -v k="$theirs" 'BEGIN { printf "%.2f", k / o }')
  printf '%-4s %-12s %-12s %-8s %s\n' "$run" "$ours" "$theirs" "${ratio}x" "$(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "($SIZE_MB MiB file, CID $cid; ratio = Kubo's time / ours, above 1 means ours is faster)"
