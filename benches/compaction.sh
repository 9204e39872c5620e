#!/usr/bin/env bash
# History compaction (issue 13): a peer whose OPS pin and unpin operations
# left LIVE live pins, against one that only ever wrote the LIVE pins.
# Measures the producer's folder before and after compaction (the history
# below its snapshot dropped), and the time a fresh peer bootstrapping
# from it takes to list all LIVE pins, for both producers.
#
# Run: `bash benches/compaction.sh [LIVE] [OPS]` (default 100,000 and
# 1,000,000) after `cargo build --release`. The history is written by
# `cargo bench --bench history` (signed deltas of 1,000 changes, as the
# peer's own commits), or by the writer binary HISTORY names when set
# (e.g. target/debug/deps/history-*); the live-only producer is a
# `state import`. The
# IPFS daemons are on a closed port, as in the other join benches.
# Figures go to BENCHMARKS.md ("History compaction").
set -euo pipefail

LIVE=${1:-100000}
OPS=${2:-1000000}
# shellcheck source=benches/peers.sh
source "$(dirname "$0")/peers.sh"

mib() { du -sm "$1" | cut -f1; }
# The folder, and of it fjall's tables and its journal (bounded by fjall).
disk() { echo "$(mib "$1") MiB (tables $(mib "$1/fjall/keyspaces") MiB, journal $(du -cm "$1"/fjall/*.jnl 2>/dev/null | tail -1 | cut -f1) MiB)"; }
# The store's tables one by one, in KiB: fjall numbers keyspaces in the
# order they were first opened, and the engine opens its tables first, in
# this order (crdt/src/store/mod.rs, Table::ALL).
tables() {
    local names=(blocks markers heads elements values sync meta) i out=""
    for i in "${!names[@]}"; do
        out+="${names[$i]} $(du -sk "$1/fjall/keyspaces/$((i + 1))" 2>/dev/null | cut -f1) KiB, "
    done
    echo "${out%, }"
}
# Starts the producer in $1, waits for its snapshot (and compaction),
# then times a fresh joiner until it lists LIVE pins.
join_from() {
    local dir=$1 p_rest p_swarm j_rest id t0
    p_rest=$(free_port); p_swarm=$(free_port); j_rest=$(free_port)
    start "$dir" "$p_rest" "$p_swarm"
    up "$p_rest"
    until grep -q "snapshot taken" "$dir.log"; do sleep 0.2; done
    until grep -q "history below the snapshot compacted" "$dir.log"; do sleep 0.2; done
    grep "history below the snapshot compacted" "$dir.log" | head -1 | sed 's/.*INFO //'
    echo "producer folder after compaction: $(disk "$dir")"
    echo "  its tables: $(tables "$dir")"
    t0=$(now)
    echo "producer lists $(count "$p_rest") pins in $(echo "$(now) - $t0" | bc) s"
    id=$(curl -sf "http://127.0.0.1:$p_rest/id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    "$BIN" init --no-secret --ipfs kubo --config "$dir-joiner" >/dev/null
    t0=$(now)
    start "$dir-joiner" "$j_rest" 0 "/ip4/127.0.0.1/tcp/$p_swarm/p2p/$id"
    up "$j_rest"
    while [[ $(count "$j_rest") -lt $LIVE ]]; do sleep 0.5; done
    echo "joiner lists all $LIVE pins after $(echo "$(now) - $t0" | bc) s; its folder: $(disk "$dir-joiner")"
    stop_all
}

echo "== $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== history: $OPS operations, $LIVE live pins"
"$BIN" init --no-secret --ipfs kubo --config "$WORK/history" >/dev/null
# HISTORY: an already built writer (any profile: it only sets the stage).
if [[ -n ${HISTORY:-} ]]; then
    "$HISTORY" "$WORK/history" "$LIVE" "$OPS"
else
    (cd "$ROOT" && cargo bench -q --bench history -- "$WORK/history" "$LIVE" "$OPS")
fi
echo "producer folder before compaction: $(disk "$WORK/history")"
echo "  its tables: $(tables "$WORK/history")"
join_from "$WORK/history"

echo "== live only: $LIVE pins imported"
python3 - "$LIVE" >"$WORK/pins.json" <<'PY'
import base64, hashlib, json, sys
for i in range(int(sys.argv[1])):
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(f"history-{i}".encode()).digest()
    print(json.dumps({"cid": "b" + base64.b32encode(raw).decode().lower().rstrip("="),
        "type": "pin", "replication_factor_min": -1, "replication_factor_max": -1, "max_depth": -1}))
PY
"$BIN" init --no-secret --ipfs kubo --config "$WORK/live" >/dev/null
"$BIN" state import --force "$WORK/pins.json" --config "$WORK/live" >/dev/null
rm "$WORK/pins.json"
echo "producer folder: $(disk "$WORK/live")"
join_from "$WORK/live"
