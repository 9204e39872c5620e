#!/usr/bin/env bash
# Adding one file through the IPFS proxy into the embedded node vs
# `ipfs add` of the same file into Kubo 0.43.1, side by side, same machine.
#
#   cargo build --release && bash benches/embedded_add.sh [SIZE_MB, default 1024]
#
# Both sides: default options (CIDv0, 256 KiB chunks, balanced), the same
# Kubo CLI as the client, the whole file read from the page cache (it is
# read once before timing). Prints the seconds and MB/s of each side and
# checks both gave the same CID.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-1024}
BIN=$PWD/target/release/pincluster
IPFS=$PWD/real-ipfs/bin/ipfs
WORK=$(mktemp -d)
trap 'kill $PEER $KUBO 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$WORK/data"
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

run() { # label, command...
  local label=$1; shift
  local start end cid
  start=$(date +%s.%N)
  cid=$("$@")
  end=$(date +%s.%N)
  awk -v l="$label" -v s="$start" -v e="$end" -v mb="$SIZE_MB" -v c="$cid" \
    'BEGIN { t = e - s; printf "%-40s %8.2f s %8.1f MB/s  %s\n", l, t, mb / t, c }'
  echo "$cid" >> "$WORK/cids"
}
run "embedded node, through the proxy" env -u IPFS_PATH "$IPFS" --api "$PROXY" add -Q "$WORK/data"
run "Kubo 0.43.1, ipfs add" "$IPFS" add -Q "$WORK/data"
[ "$(sort -u "$WORK/cids" | wc -l)" = 1 ] || { echo "CIDs differ"; exit 1; }
