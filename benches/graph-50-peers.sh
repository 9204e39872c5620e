#!/usr/bin/env bash
# The health graph of a 50-peer cluster: starts N `pincluster daemon`
# processes on 127.0.0.1 (no IPFS daemon: each peer's daemon address is a
# closed port, so every daemon shows as down), waits for peer 1 to see all
# of them, then times `GET /health/graph` (curl, 5 runs) and
# `pincluster health graph | dot -Tsvg`, and screenshots the dashboard into
# target/test-artifacts/dashboard-50.png.
#
# Usage: benches/graph-50-peers.sh [N]   (PINCLUSTER=path/to/binary; default
# target/debug/pincluster). Figures go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
bin=${PINCLUSTER:-target/debug/pincluster}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
closed=/ip4/127.0.0.1/tcp/1
base=19600
start_peer() { # index, bootstrap
  local dir=$work/p$1
  "$bin" init --config "$dir" --secret "$secret" --peername "peer$1" > /dev/null 2>&1 ||
    { echo "pincluster init failed for peer $1" >&2; exit 1; }
  CLUSTER_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$((base + 2 * $1)) \
    CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$((base + 2 * $1 + 1)) \
    CLUSTER_IPFSHTTP_NODEMULTIADDRESS=$closed \
    PINCLUSTER_LOG=warn \
    "$bin" daemon --config "$dir" ${2:+--bootstrap "$2"} > "$dir.log" 2>&1 &
  pids+=($!)
}
api=http://127.0.0.1:$((base + 1))
start_peer 0 ""
until curl -sf "$api/id" > /dev/null; do sleep 0.2; done
first=$(curl -s "$api/id" | grep -o '"/ip4/127.0.0.1/tcp/[0-9]*/p2p/[^"]*"' | head -1 | tr -d '"')
for i in $(seq 1 $((n - 1))); do start_peer "$i" "$first"; done
echo "started $n peers; waiting for peer 0 to see them all"
t0=$SECONDS
# Peers in peer 0's graph that answered (a non-empty link list).
answered() {
  curl -s "$api/health/graph" |
    python3 -c 'import json,sys; print(sum(1 for v in json.load(sys.stdin)["cluster_links"].values() if v))'
}
until [[ $(answered) -ge $n ]]; do sleep 1; done
echo "all $n peers in peer 0's graph after $((SECONDS - t0)) s"
for run in 1 2 3 4 5; do
  curl -s -o "$work/graph.json" -w "GET /health/graph run $run: %{time_total} s, %{size_download} bytes\n" "$api/health/graph"
done
python3 -c 'import json,sys; g=json.load(open(sys.argv[1])); print("cluster links in the last graph:", sum(map(len, g["cluster_links"].values())))' "$work/graph.json"
/usr/bin/time -f "health graph | dot -Tsvg: %e s" sh -c \
  "'$bin' --host /ip4/127.0.0.1/tcp/$((base + 1)) health graph | dot -Tsvg > '$work/graph.svg'"
mkdir -p target/test-artifacts
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --window-size=1400,1100 --virtual-time-budget=15000 \
  --user-data-dir="$profile" --screenshot="$PWD/target/test-artifacts/dashboard-$n.png" "$api/ui" 2> /dev/null
rm -rf "$profile"
echo "dashboard screenshot: target/test-artifacts/dashboard-$n.png"
