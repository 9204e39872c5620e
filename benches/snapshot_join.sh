#!/usr/bin/env bash
# Join by snapshot (issue 13): how long a fresh peer bootstrapping from one
# peer holding N pins takes to list all N, and the memory of both sides.
#
# Run: `bash benches/snapshot_join.sh [N]` (default 1,000,000) after
# `cargo build --release`; `BIN=/path/to/pincluster` measures another build
# (an older one without snapshots measures the delta-sync join). Writes N
# pins (the shape of benches/tracker-memory.sh), `state import`s them into
# the producer's folder, starts it with `snapshot_interval` 1s and waits for
# its snapshot (skipped when the build never takes one), then starts the
# joiner with the producer as its only bootstrap address and times, from the
# joiner's start, (a) the install and (b) a complete `GET /allocations`
# listing (polled; each poll is one full listing). Both peers' IPFS daemons
# are on a closed port, as in the memory benches. Prints VmHWM / VmRSS of
# both. Figures go to BENCHMARKS.md ("Join by snapshot").
set -euo pipefail

N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pincluster}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 - "$N" >"$WORK/pins.json" <<'EOF'
import base64, hashlib, json, sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    digest = hashlib.sha256(f"join-{i}".encode()).digest()
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + digest
    cid = "b" + base64.b32encode(raw).decode().lower().rstrip("=")
    out.write(json.dumps({
        "replication_factor_min": -1, "replication_factor_max": -1, "name": "",
        "mode": "recursive", "shard_size": 0, "user_allocations": None,
        "expire_at": "0001-01-01T00:00:00Z", "metadata": None, "pin_update": None,
        "origins": [], "cid": cid, "type": "pin", "allocations": [], "max_depth": -1,
        "reference": None, "timestamp": "2026-12-04T00:00:00Z"}))
    out.write("\n")
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$BIN" init --no-secret --config "$WORK/producer" >/dev/null
"$BIN" init --no-secret --config "$WORK/joiner" >/dev/null
"$BIN" state import --force "$WORK/pins.json" --config "$WORK/producer" >/dev/null
rm "$WORK/pins.json"

start() { # folder rest-port cluster-port [bootstrap]
    local boot=()
    if [[ -n ${4:-} ]]; then boot=(--bootstrap "$4"); fi
    CLUSTER_IPFSHTTP_NODEMULTIADDRESS=/ip4/127.0.0.1/tcp/1 \
    CLUSTER_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$3 \
    CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$2 \
    CLUSTER_IPFSPROXY_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
    CLUSTER_CRDT_SNAPSHOTINTERVAL=1s \
    PINCLUSTER_LOG=warn,pincluster::consensus=info \
        "$BIN" daemon --config "$1" "${boot[@]}" >/dev/null 2>"$1.log" &
    PIDS+=($!)
}
mib() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
now() { date +%s.%N; }
count() { curl -sf "http://127.0.0.1:$1/allocations" | wc -l; }

P_REST=$(free_port); P_SWARM=$(free_port); J_REST=$(free_port)
start "$WORK/producer" "$P_REST" "$P_SWARM"
PRODUCER=${PIDS[0]}
until curl -sf "http://127.0.0.1:$P_REST/id" >/dev/null; do sleep 0.2; done
if grep -q snapshot_interval "$WORK/producer/service.json"; then
    until grep -q "snapshot taken" "$WORK/producer.log"; do sleep 0.2; done
    grep "snapshot taken" "$WORK/producer.log" | head -1
fi
PID_P=$(curl -sf "http://127.0.0.1:$P_REST/id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "producer holds $N pins: RSS $(mib "$PRODUCER" VmRSS) MiB, peak $(mib "$PRODUCER" VmHWM) MiB"

T0=$(now)
start "$WORK/joiner" "$J_REST" 0 "/ip4/127.0.0.1/tcp/$P_SWARM/p2p/$PID_P"
JOINER=${PIDS[1]}
until curl -sf "http://127.0.0.1:$J_REST/id" >/dev/null; do sleep 0.1; done
INSTALLED=
while :; do
    if [[ -z $INSTALLED ]] && grep -q "snapshot installed" "$WORK/joiner.log"; then
        INSTALLED=$(echo "$(now) - $T0" | bc)
        echo "snapshot installed after ${INSTALLED} s"
    fi
    if [[ $(count "$J_REST") -ge $N ]]; then break; fi
    sleep 0.5
done
echo "joiner lists all $N pins after $(echo "$(now) - $T0" | bc) s"
echo "joiner: RSS $(mib "$JOINER" VmRSS) MiB, peak $(mib "$JOINER" VmHWM) MiB"
echo "producer: RSS $(mib "$PRODUCER" VmRSS) MiB, peak $(mib "$PRODUCER" VmHWM) MiB"
