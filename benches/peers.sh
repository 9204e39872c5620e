# Sourced by the shell benches that run release daemons on 127.0.0.1 with
# their IPFS daemon on a closed port (snapshot_join.sh, compaction.sh):
# a work folder removed at exit with every daemon started, free ports, and
# starting and waiting for a peer. Not a bench by itself.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pincluster}
SNAPSHOT=${SNAPSHOT:-1s}
WORK=$(mktemp -d)
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
count() { curl -sf "http://127.0.0.1:$1/allocations" | wc -l; }
# Starts a daemon on folder $1 (REST API on port $2, cluster swarm on $3,
# bootstrapping from $4 if given), its log in $1.log, snapshots every
# $SNAPSHOT; $WRAP prefixes the command (e.g. perf). Its pid: $STARTED.
start() {
    local boot=()
    if [[ -n ${4:-} ]]; then boot=(--bootstrap "$4"); fi
    CLUSTER_IPFSHTTP_NODEMULTIADDRESS=/ip4/127.0.0.1/tcp/1 \
    CLUSTER_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$3 \
    CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/$2 \
    CLUSTER_IPFSPROXY_LISTENMULTIADDRESS=/ip4/127.0.0.1/tcp/0 \
    CLUSTER_CRDT_SNAPSHOTINTERVAL=$SNAPSHOT \
    PINCLUSTER_LOG=warn,pincluster::consensus=info \
        ${WRAP:-} "$BIN" daemon --config "$1" "${boot[@]}" >/dev/null 2>>"$1.log" &
    STARTED=$!
    PIDS+=("$STARTED")
}
# Waits for the REST API on port $1 of the last daemon started; stops the
# bench if that daemon exited (e.g. a free port taken by someone else
# before it bound it).
up() {
    until curl -sf "http://127.0.0.1:$1/id" >/dev/null; do
        if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
            echo "the daemon with REST port $1 exited" >&2
            exit 1
        fi
        sleep 0.1
    done
}
