#!/usr/bin/env bash
# Memory of a peer holding N pins whose IPFS daemon is down (issue 13).
#
# Run: `bash benches/tracker-memory.sh [N]` (default 1,000,000; 10000000
# for the 10 M target, about half an hour) after
# `cargo build --release`. Generates N pins as NDJSON (replication -1,
# random CIDv1s, the shape of `pins_file` in benches/vs_reference.rs),
# `state import`s it into a fresh folder, starts `pincluster daemon` with its
# IPFS daemon on a closed port, and prints VmRSS / VmHWM (MiB):
#   - right after start, and during a `GET /allocations` in the first minute;
#   - once the peer is idle after start (three 2 s samples without CPU time:
#     every pin is then an operation in the tracker, waiting or failed);
#   - during and after a full `GET /allocations` and a full `GET /pins` stream.
# RSS is split into heap (RssAnon) and mapped files (RssFile).
# The figures go to BENCHMARKS.md ("Memory of a peer whose IPFS daemon is down").
# PINCLUSTER_BIN runs another build of the binary (a profiling one).
# FJALL_CACHE / FJALL_MEMTABLE (bytes) set `datastore.fjall.cache_size_bytes`
# / `memtable_size_bytes` in the peer's service.json, for sweeps.
set -euo pipefail

N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PINCLUSTER_BIN:-$ROOT/target/release/pincluster}
WORK=$(mktemp -d)
PID=
cleanup() {
    if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The pins are generated straight into `state import` (its stdin): at
# 10,000,000 pins a file would take 4 GB of /tmp.
pins() {
python3 - "$N" <<'EOF'
import base64, hashlib, json, sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    digest = hashlib.sha256(f"mem-{i}".encode()).digest()
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REST=$(free_port)
"$BIN" init --no-secret --ipfs kubo --config "$WORK/peer" >/dev/null
if [[ -n ${FJALL_CACHE:-}${FJALL_MEMTABLE:-} ]]; then
    python3 - "$WORK/peer/service.json" "${FJALL_CACHE:-}" "${FJALL_MEMTABLE:-}" <<'EOF'
import json, sys
path, cache, memtable = sys.argv[1:]
config = json.load(open(path))
fjall = config["datastore"]["fjall"]
if cache: fjall["cache_size_bytes"] = int(cache)
if memtable: fjall["memtable_size_bytes"] = int(memtable)
json.dump(config, open(path, "w"), indent=2)
EOF
fi
pins | "$BIN" state import --force --config "$WORK/peer" >/dev/null

CLUSTER_IPFSHTTP_NODEMULTIADDRESS=/ip4/127.0.0.1/tcp/1 \
CLUSTER_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$REST \
CLUSTER_IPFSPROXY_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
PINCLUSTER_LOG=warn \
    "$BIN" daemon --config "$WORK/peer" >/dev/null 2>"$WORK/log" &
PID=$!
START=$(date +%s.%N)

mib() { awk -v k="$1:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$PID/status"; }
cpu() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
report() {
    echo "$1: RSS $(mib VmRSS) MiB (heap $(mib RssAnon), files $(mib RssFile)), peak $(mib VmHWM) MiB"
}
# Runs "$@" in the background and prints the highest RSS seen while it ran
# (sampled every 0.2 s), so a listing's memory is measured during it.
during() {
    local out=$WORK/during hi=0 r
    "$@" >"$out" &
    local job=$!
    while kill -0 "$job" 2>/dev/null; do
        r=$(mib VmRSS)
        ((r > hi)) && hi=$r
        sleep 0.2
    done
    wait "$job" || true
    DURING_HI=$hi
}

until curl -sf "http://127.0.0.1:$REST/id" >/dev/null; do sleep 0.2; done
report "started (REST API up)"
# NDJSON, a line per pin. Counted by `wc -l`: the client shares the two
# cores with the peer: `grep -o '"cid"' | wc -l` made a listing of
# 1,000,000 pins take 40 % longer.
list_allocations() { curl -sf "http://127.0.0.1:$REST/allocations" | wc -l; }
# Bounded: with the daemon down, each page's status may wait on the connector.
list_pins() { curl -s --max-time 120 "http://127.0.0.1:$REST/pins?local=true" | grep -Fo '"cid"' | wc -l || true; }
# The listing in the first minute, while the tracker queues and fails every pin.
t0=$(date +%s.%N)
during list_allocations
echo "GET /allocations at start: $(cat "$WORK/during") pins in $(echo "$(date +%s.%N) - $t0" | bc) s, RSS up to $DURING_HI MiB"
quiet=0
last=$(cpu)
while ((quiet < 3)); do
    sleep 2
    now=$(cpu)
    if [[ $now == "$last" ]]; then quiet=$((quiet + 1)); else quiet=0; fi
    last=$now
done
echo "idle after $(echo "$(date +%s.%N) - $START" | bc) s"
report "idle, $N pins, IPFS daemon down"
# Retries come due in waves (backoff), and fjall flushes in the background:
# the RSS over the next minute, lowest and highest of 12 samples.
lo=999999 hi=0
for _ in $(seq 12); do
    sleep 5
    r=$(mib VmRSS)
    ((r < lo)) && lo=$r
    ((r > hi)) && hi=$r
done
echo "over the next minute: RSS $lo-$hi MiB"
t0=$(date +%s.%N)
during list_allocations
echo "GET /allocations: $(cat "$WORK/during") pins in $(echo "$(date +%s.%N) - $t0" | bc) s, RSS up to $DURING_HI MiB"
report "after GET /allocations"
t0=$(date +%s.%N)
during list_pins
echo "GET /pins?local=true: $(cat "$WORK/during") statuses in $(echo "$(date +%s.%N) - $t0" | bc) s, RSS up to $DURING_HI MiB"
report "after GET /pins"
