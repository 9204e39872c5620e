#!/usr/bin/env bash
# Join by snapshot and catch-up after absence (issue 13): how long a peer
# bootstrapping from one peer holding N pins takes to list all of them, and
# the memory of both sides.
#
# Run: `bash benches/snapshot_join.sh [N] [join|catchup]` (default 1,000,000,
# join) after `cargo build --release`; `BIN=/path/to/pincluster` measures
# another build. Both peers' IPFS daemons are on a closed port, as in the
# memory benches; times are from the second peer's (re)start. Figures go to
# BENCHMARKS.md ("Join by snapshot", "Catch-up after absence").
#
# join:    N pins are `state import`ed into a producer that snapshots every
#          second (SNAPSHOT=1s); a fresh joiner with the producer as its only
#          bootstrap address is timed until (a) "snapshot installed" and
#          (b) a complete `GET /allocations` listing (polled; each poll is
#          one full listing).
# catchup: the producer holds 1,000 pins and the second peer syncs them;
#          both stop; the producer's pinset is re-imported with N more pins
#          (`state import` writes a new history, so the absent peer's blocks
#          are an old branch to the producer, as after any import); both
#          start again and the absent peer is timed until it lists all
#          N + 1,000. SNAPSHOT=0 makes the producer serve no snapshot, which
#          measures the delta path.
# PERF=file records a perf profile of the timed peer (its memory figures are
# then perf's), with perf's options PERF_ARGS (default `-F 499`; e.g.
# `-F 99 --call-graph dwarf,32768` for call graphs of a build without frame
# pointers). IMPORTED=dir (join only) keeps the producer's folder as it is
# right after the import in dir/producer, and later runs copy it from there
# instead of importing again (the import of 10,000,000 pins takes minutes).
# KEEP_LOGS=dir keeps both peers' logs and RSS samples (with their times;
# the joiner's start time in dir/t0).
#
# Memory: the producer first settles for SETTLE seconds (default 20) after
# its snapshot, so its own start-up (the tracker's pass over the pinset,
# the first snapshot build) is over; its peak until then is printed, then
# reset (`/proc/PID/clear_refs`), so the producer's peak printed at the end
# is the join's alone. Both peers' RSS is sampled every 0.2 s during the
# join (the highest sample is printed with the split into heap and mapped
# files).
set -euo pipefail

N=${1:-1000000}
MODE=${2:-join}
OLD=1000
# shellcheck source=benches/peers.sh
source "$(dirname "$0")/peers.sh"

pins() { # prefix count: pins in the shape of benches/tracker-memory.sh
    python3 - "$1" "$2" <<'EOF'
import base64, hashlib, json, sys
prefix, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout
for i in range(n):
    digest = hashlib.sha256(f"{prefix}-{i}".encode()).digest()
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
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
mib() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
sample() { # pid file: appends "rss anon file time" (MiB, s) every 0.2 s while pid lives
    while kill -0 "$1" 2>/dev/null; do
        echo "$(mib "$1" VmRSS) $(mib "$1" RssAnon) $(mib "$1" RssFile) $(now)" 2>/dev/null >>"$2" || true
        sleep 0.2
    done
}
highest() { # file: the sample with the highest RSS
    sort -n "$1" | tail -1 | awk '{ printf "%s MiB (heap %s, files %s)", $1, $2, $3 }'
}
snapshot_taken() { # log: waits for the producer's next snapshot, if it takes any
    if [[ $SNAPSHOT != 0 ]] && grep -q snapshot_interval "$WORK/producer/service.json"; then
        until grep -q "snapshot taken" "$1"; do sleep 0.2; done
        grep "snapshot taken" "$1" | tail -1
    fi
}

"$BIN" init --no-secret --ipfs kubo --config "$WORK/producer" >/dev/null
"$BIN" init --no-secret --ipfs kubo --config "$WORK/joiner" >/dev/null
P_REST=$(free_port); P_SWARM=$(free_port); J_REST=$(free_port); J_SWARM=$(free_port)

if [[ $MODE == catchup ]]; then
    pins old "$OLD" >"$WORK/pins.json"
    "$BIN" state import --force "$WORK/pins.json" --config "$WORK/producer" >/dev/null
    start "$WORK/producer" "$P_REST" "$P_SWARM"
    PRODUCER=$STARTED
    up "$P_REST"
    snapshot_taken "$WORK/producer.log"
    PID_P=$(curl -sf "http://127.0.0.1:$P_REST/id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    BOOT=/ip4/127.0.0.1/tcp/$P_SWARM/p2p/$PID_P
    start "$WORK/joiner" "$J_REST" "$J_SWARM" "$BOOT"
    JOINER=$STARTED
    up "$J_REST"
    until [[ $(count "$J_REST") -ge $OLD ]]; do sleep 0.2; done
    echo "the second peer holds the first $OLD pins; both stop"
    stop "$JOINER"
    stop "$PRODUCER"
    { cat "$WORK/pins.json"; pins new "$N"; } >"$WORK/all.json"
    "$BIN" state import --force "$WORK/all.json" --config "$WORK/producer" >/dev/null
    rm "$WORK/pins.json" "$WORK/all.json"
    : >"$WORK/producer.log"
    start "$WORK/producer" "$P_REST" "$P_SWARM"
    PRODUCER=$STARTED
    up "$P_REST"
    snapshot_taken "$WORK/producer.log"
    TOTAL=$((N + OLD))
    echo "producer holds $TOTAL pins (N=$N added during the absence): RSS $(mib "$PRODUCER" VmRSS) MiB, peak $(mib "$PRODUCER" VmHWM) MiB"
    : >"$WORK/joiner.log"
else
    if [[ -n ${IMPORTED:-} && -d $IMPORTED/producer ]]; then
        rm -rf "$WORK/producer"
        cp -a "$IMPORTED/producer" "$WORK/producer"
    else
        pins join "$N" >"$WORK/pins.json"
        "$BIN" state import --force "$WORK/pins.json" --config "$WORK/producer" >/dev/null
        rm "$WORK/pins.json"
        if [[ -n ${IMPORTED:-} ]]; then
            mkdir -p "$IMPORTED"
            cp -a "$WORK/producer" "$IMPORTED/producer"
        fi
    fi
    start "$WORK/producer" "$P_REST" "$P_SWARM"
    PRODUCER=$STARTED
    up "$P_REST"
    snapshot_taken "$WORK/producer.log"
    PID_P=$(curl -sf "http://127.0.0.1:$P_REST/id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    BOOT=/ip4/127.0.0.1/tcp/$P_SWARM/p2p/$PID_P
    TOTAL=$N
    echo "producer holds $N pins: RSS $(mib "$PRODUCER" VmRSS) MiB, peak $(mib "$PRODUCER" VmHWM) MiB"
fi

sleep "${SETTLE:-20}"
echo "producer settled: RSS $(mib "$PRODUCER" VmRSS) MiB, peak so far $(mib "$PRODUCER" VmHWM) MiB (reset now)"
echo 5 >"/proc/$PRODUCER/clear_refs"
sample "$PRODUCER" "$WORK/producer.rss" &
T0=$(now)
if [[ -n ${PERF:-} ]]; then WRAP="perf record ${PERF_ARGS:--F 499} -o $PERF --"; fi
start "$WORK/joiner" "$J_REST" "$J_SWARM" "$BOOT"
JOINER=$STARTED
WRAP=
sample "$JOINER" "$WORK/joiner.rss" &
up "$J_REST"
while :; do
    if [[ $(count "$J_REST") -ge $TOTAL ]]; then break; fi
    sleep 0.5
done
# The install's time from the joiner's own log line: a poll (one full
# listing) can last longer than the install takes to finish.
if INSTALLED_AT=$(grep -m1 "snapshot installed" "$WORK/joiner.log" | awk '{ print $1 }') && [[ -n $INSTALLED_AT ]]; then
    echo "snapshot installed after $(echo "$(date -d "$INSTALLED_AT" +%s.%N) - $T0" | bc) s"
fi
echo "$MODE: the peer lists all $TOTAL pins after $(echo "$(now) - $T0" | bc) s"
grep -q "snapshot installed" "$WORK/joiner.log" || echo "(by delta sync: no snapshot installed)"
echo "joiner: RSS $(mib "$JOINER" VmRSS) MiB, peak $(mib "$JOINER" VmHWM) MiB, CPU $(awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$JOINER/stat") s"
echo "producer: RSS $(mib "$PRODUCER" VmRSS) MiB, peak during the join $(mib "$PRODUCER" VmHWM) MiB"
echo "highest samples during the join: joiner $(highest "$WORK/joiner.rss"), producer $(highest "$WORK/producer.rss")"
uptime
if [[ -n ${KEEP_LOGS:-} ]]; then
    mkdir -p "$KEEP_LOGS"
    echo "$T0" >"$KEEP_LOGS/t0"
    cp "$WORK"/*.rss "$WORK"/*.log "$KEEP_LOGS"/
fi
