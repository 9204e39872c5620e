#!/usr/bin/env bash
# Runs a real IPFS daemon, js-ipfs 0.66.1 from npm (its core calls itself
# 0.18.1), as a test peer that speaks the /api/v0 HTTP RPC API. The tests in
# tests/ drive it through tests/common/jsipfs.rs, which uses `run`. It runs
# the same code as `jsipfs daemon` (ipfs-daemon's Daemon), minus the CLI.
#
# The peer only ever touches loopback: API and swarm on 127.0.0.1, no gateway,
# no gRPC, no bootstrap list, no delegates, no DHT, no MDNS, no webrtc-star,
# no NAT port mapping, no preload. These settings are written into the repo's
# config on every start, so an old repo cannot bring a stale address or the
# public bootstrap list back. New repos are empty (no welcome files, no pins)
# and get an Ed25519 identity.
#
# Usage:
#   jsipfs-daemon.sh install
#       Installs node_modules next to this script (runs ../.ci/install-ipfs).
#   jsipfs-daemon.sh run <dir> [api-port] [swarm-port]
#       Runs the daemon in the foreground on the repo <dir>/repo (created on
#       first use). The process becomes node (exec), so its pid is the
#       daemon's. Ports default to 0 (any free port); the bound ones are in the
#       output lines "HTTP API listening on /ip4/127.0.0.1/tcp/<port>/http" and
#       "Swarm listening on /ip4/127.0.0.1/tcp/<port>/p2p/<id>".
#       With JSIPFS_EXIT_ON_EOF=1 the daemon shuts down when its stdin closes,
#       so a test process that dies without cleaning up takes it along.
#   jsipfs-daemon.sh start <dir> [api-port] [swarm-port]
#       `run` in the background (log in <dir>/daemon.log, pid in
#       <dir>/daemon.pid); waits until POST /api/v0/id answers, then prints
#       PID=<pid> API=http://127.0.0.1:<port> SWARM=<multiaddr>/p2p/<id>
#   jsipfs-daemon.sh stop <dir>
#       SIGTERM to the pid in <dir>/daemon.pid; SIGKILL after 10 s.
#
# Needs node (20) on PATH and node_modules next to this script (`install`).
# JSIPFS_WAIT: seconds `start` waits for the API (default 60).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
  echo "jsipfs-daemon: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

# Whether pid $1 runs. Not `kill -0`: that also succeeds on a zombie, and a
# daemon left by `start` is reaped by init, sometimes late.
alive() {
  local stat
  { stat=$(< "/proc/$1/stat"); } 2> /dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

need_port() {
  [[ $2 =~ ^[0-9]+$ ]] || die "$1 must be a port number (0 = any free port), got '$2'"
}

cmd_run() {
  local dir=${1:?usage: jsipfs-daemon.sh run <dir> [api-port] [swarm-port]}
  local api=${2:-0} swarm=${3:-0}
  need_port api-port "$api"
  need_port swarm-port "$swarm"
  [[ -d $here/node_modules/ipfs-daemon ]] || die "js-ipfs is not installed in $here/node_modules: run .ci/install-ipfs"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local repo=$dir/repo

  # A repo without config is a half-made one from an interrupted first start;
  # js-ipfs refuses to open it or to init over it.
  [[ -f $repo/config ]] || rm -rf "$repo"
  # Left behind by a killed daemon. repo.lock is a directory (proper-lockfile)
  # that only counts as stale after 20 s, so a quick restart would fail on it.
  rm -rf "$repo/repo.lock" "$repo/api"

  # Merged into the repo's config on every start (and on init), over the
  # `test` profile, which js-ipfs also applies on every start.
  cat > "$dir/config-overrides.json" << JSON
{
  "Addresses": {
    "API": "/ip4/127.0.0.1/tcp/$api",
    "Swarm": ["/ip4/127.0.0.1/tcp/$swarm"],
    "Gateway": "",
    "RPC": "",
    "Announce": [],
    "NoAnnounce": [],
    "Delegates": []
  },
  "Bootstrap": [],
  "Discovery": { "MDNS": { "Enabled": false }, "webRTCStar": { "Enabled": false } },
  "Routing": { "Type": "none" },
  "Swarm": { "DisableNatPortMap": true }
}
JSON

  # What `jsipfs daemon` does, in one Node process. The CLI would need a
  # separate `jsipfs init --emptyRepo` first (its daemon's own init pins the
  # welcome files), which doubles a first start: ~5.5 s instead of ~2.5 s.
  # Bare imports resolve from the working directory, hence the cd.
  cd "$here"
  exec node --input-type=module -e '
import fs from "node:fs"
import { Daemon } from "ipfs-daemon"

const [repo, overrides, exitOnEof] = process.argv.slice(1)
process.title = "ipfs"
const daemon = new Daemon({
  repo,
  config: JSON.parse(fs.readFileSync(overrides, "utf8")),
  init: { emptyRepo: true, profiles: ["test"] },
  preload: { enabled: false }
})
try {
  await daemon.start()
} catch (err) {
  console.error("jsipfs-daemon: the daemon did not start:", err)
  process.exit(1)
}
const { version } = await daemon._ipfs.version()
console.log(`js-ipfs version: ${version}`)
for (const server of daemon._httpApi._apiServers) {
  console.log(`HTTP API listening on ${server.info.ma}`)
}
console.log("Daemon is ready")

let stopping = false
const stop = async (why) => {
  if (stopping) return
  stopping = true
  console.log(`${why}: shutting down`)
  await daemon.stop()
  process.exit(0)
}
for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(signal, () => stop(signal))
if (exitOnEof === "1") {
  process.stdin.on("end", () => stop("stdin closed"))
  process.stdin.resume()
}
' "$repo" "$dir/config-overrides.json" "${JSIPFS_EXIT_ON_EOF:-0}"
}

cmd_start() {
  local dir=${1:?usage: jsipfs-daemon.sh start <dir> [api-port] [swarm-port]}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/daemon.pid ]] && alive "$(cat "$dir/daemon.pid")"; then
    die "a daemon already runs on $dir (pid $(cat "$dir/daemon.pid"))"
  fi
  JSIPFS_EXIT_ON_EOF=0 nohup "${BASH_SOURCE[0]}" run "$dir" "${2:-0}" "${3:-0}" > "$dir/daemon.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$dir/daemon.pid"
  # One node process polls the log and the API until the deadline.
  node - "$dir/daemon.log" "$pid" "${JSIPFS_WAIT:-60}" << 'JS' || die "the daemon did not come up"
const fs = require('fs')
const [log, pid, wait] = process.argv.slice(2)
const deadline = Date.now() + Number(wait) * 1000
const alive = () => { try { process.kill(Number(pid), 0); return true } catch { return false } }
const fail = (why) => {
  console.error(fs.readFileSync(log, 'utf8').split('\n').slice(-20).join('\n'))
  console.error(`jsipfs-daemon: ${why}`)
  process.exit(1)
}
;(async () => {
  while (Date.now() < deadline) {
    if (!alive()) fail('the daemon exited')
    const text = fs.readFileSync(log, 'utf8')
    const api = text.match(/HTTP API listening on \/ip4\/[0-9.]+\/tcp\/(\d+)/)
    if (api) {
      const url = `http://127.0.0.1:${api[1]}`
      try {
        const res = await fetch(`${url}/api/v0/id`, { method: 'POST', signal: AbortSignal.timeout(2000) })
        if (res.ok) {
          const id = await res.json()
          const swarm = id.Addresses.find((a) => a.startsWith('/ip4/127.0.0.1/tcp/')) || ''
          console.log(`PID=${pid} API=${url} SWARM=${swarm}`)
          return
        }
      } catch {}
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  process.kill(Number(pid), 'SIGTERM')
  fail(`the API did not answer within ${wait} s`)
})()
JS
}

cmd_stop() {
  local dir=${1:?usage: jsipfs-daemon.sh stop <dir>}
  [[ -f $dir/daemon.pid ]] || die "no $dir/daemon.pid"
  local pid
  pid=$(cat "$dir/daemon.pid")
  if kill "$pid" 2> /dev/null; then
    local i
    for ((i = 0; i < 100; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      echo "jsipfs-daemon: pid $pid ignored SIGTERM for 10 s, killing it" >&2
      kill -KILL "$pid" 2> /dev/null || true
    fi
  fi
  rm -f "$dir/daemon.pid"
  echo "stopped $pid"
}

case ${1:-} in
  install) exec "$here/../.ci/install-ipfs" ;;
  run) shift && cmd_run "$@" ;;
  start) shift && cmd_start "$@" ;;
  stop) shift && cmd_stop "$@" ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
