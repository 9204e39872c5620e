#!/usr/bin/env bash
# Memory of an idle embedded IPFS node holding GB gigabytes of blocks
# (issue 15: under 200 MB at 10 GB).
#
#   cargo build --release && bash benches/embedded-memory.sh [GB, default 10]
#
# Starts a fresh peer (`init`, so the embedded node), adds GB random files of
# 1 GiB through its IPFS proxy with Kubo's CLI (default options: CIDv0,
# 256 KiB chunks; the proxy pins each cluster-wide, so each is pinned in the
# node), and one more of 256 MiB straight to the node with `pin=false`, for
# the gc to sweep. Then restarts the peer and prints VmRSS / VmHWM (MiB):
#   - right after start (REST API up);
#   - idle (three 2 s samples without CPU time), and the range over a minute;
#   - the highest RSS during a `repo/stat` and during a `repo/gc` (which walks
#     every pinned DAG, reading all blocks, and sweeps the unpinned file).
# Needs about 2.5 × GB of free disk (the blocks, fjall's journal, slack).
# Everything is deleted at the end.
# PINCLUSTER_BIN runs another build of the binary (a profiling one).
set -euo pipefail
cd "$(dirname "$0")/.."
GB=${1:-10}
BIN=${PINCLUSTER_BIN:-$PWD/target/release/pincluster}
IPFS=$PWD/real-ipfs/bin/ipfs
WORK=$(mktemp -d)
PID=
cleanup() {
    if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REST=$(free_port)
PROXY=$(free_port)
SWARM=$(free_port)
"$BIN" init --no-secret --config "$WORK/peer" >/dev/null 2>&1

start() {
    CLUSTER_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
    CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$REST \
    CLUSTER_IPFSPROXY_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$PROXY \
    CLUSTER_EMBEDDED_GATEWAYLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
    CLUSTER_EMBEDDED_SWARMLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$SWARM \
    PINCLUSTER_LOG=info \
        "$BIN" daemon --config "$WORK/peer" >"$WORK/log" 2>&1 &
    PID=$!
    until curl -sf "http://127.0.0.1:$REST/id" >/dev/null; do sleep 0.2; done
    until RPC=$(grep -o 'embedded IPFS RPC listening addr=[^ ]*' "$WORK/log" | cut -d= -f2) && [[ -n $RPC ]]; do
        sleep 0.2
    done
}
stop() { kill "$PID"; wait "$PID" || true; PID=; }

mib() { awk -v k="$1:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$PID/status"; }
cpu() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
report() {
    echo "$1: RSS $(mib VmRSS) MiB (heap $(mib RssAnon), files $(mib RssFile)), peak $(mib VmHWM) MiB"
}
# Runs "$@" and prints the highest RSS seen while it ran (every 0.2 s).
during() {
    local label=$1 hi=0 r t0
    shift
    t0=$(date +%s.%N)
    "$@" >"$WORK/during" &
    local job=$!
    while kill -0 "$job" 2>/dev/null; do
        r=$(mib VmRSS)
        ((r > hi)) && hi=$r
        sleep 0.2
    done
    wait "$job"
    echo "$label: $(echo "$(date +%s.%N) - $t0" | bc) s, RSS up to $hi MiB"
}
idle() {
    local quiet=0 last now lo=999999 hi=0 r
    last=$(cpu)
    while ((quiet < 3)); do
        sleep 2
        now=$(cpu)
        if [[ $now == "$last" ]]; then quiet=$((quiet + 1)); else quiet=0; fi
        last=$now
    done
    report "idle"
    for _ in $(seq 12); do
        sleep 5
        r=$(mib VmRSS)
        ((r < lo)) && lo=$r
        ((r > hi)) && hi=$r
    done
    echo "over the next minute: RSS $lo-$hi MiB"
}

start
echo "filling: $GB × 1 GiB through the proxy"
t0=$(date +%s.%N)
for i in $(seq "$GB"); do
    head -c $((1024 * 1024 * 1024)) /dev/urandom | "$IPFS" --api "/ip4/127.0.0.1/tcp/$PROXY" add -Q >>"$WORK/cids"
done
echo "filled in $(echo "$(date +%s.%N) - $t0" | bc) s; $(sort -u "$WORK/cids" | wc -l) files pinned"
head -c $((256 * 1024 * 1024)) /dev/urandom | "$IPFS" --api "$RPC" add -Q --pin=false >/dev/null
report "after filling (before restart)"
stop
du -sh "$WORK/peer/ipfs"

start
report "restarted (REST API up)"
idle
during "repo/stat" curl -sf -X POST "http://$(echo "$RPC" | awk -F/ '{ print $3 ":" $5 }')/api/v0/repo/stat"
cat "$WORK/during"
echo
during "repo/gc" curl -sf -X POST "http://$(echo "$RPC" | awk -F/ '{ print $3 ":" $5 }')/api/v0/repo/gc"
echo "repo/gc removed $(grep -c Key "$WORK/during" || true) blocks"
report "after repo/gc"
idle
