//! pincluster side by side with the reference, ipfs-cluster 1.1.6
//! (`real-ipfs/bin/ipfs-cluster-service`, its default configuration: CRDT
//! consensus, pebble): the same workloads, driven by the same client code,
//! against real processes of each system on 127.0.0.1, printed as one table
//! with both figures and their ratio.
//!
//! - ingest: `POST /pins/{cid}` from 32 concurrent clients on one peer of 3,
//!   until every pin is listed by the other two (pins/s), and the CPU time
//!   the three peers spent on it (utime + stime, per 10,000 pins);
//! - visibility: `POST /pins` on one peer until `GET /allocations/{cid}`
//!   answers on all of 5 peers, one pin after another (p50, p99);
//! - join: a fresh peer bootstrapping into a cluster whose peer holds N
//!   pins, from its start until it lists all N;
//! - listing: `GET /allocations` of N pins streamed to the end (pins/s, and
//!   the serving peer's peak RSS during the listing);
//! - memory: RSS of a peer holding N pins once it is idle.
//!
//! Only the cluster layer is measured: every peer's IPFS daemon address is a
//! loopback port where nothing listens (an IPFS daemon that is down), for
//! both systems, so no pin is ever pinned and the random CIDs are never
//! looked for. Both systems run their defaults, including the intervals the
//! test harnesses shorten (ping metrics 15 s, CRDT heads re-announced every
//! minute). The large pinsets are loaded the way an operator loads them
//! into either system: `state import` into the stopped peer's folder.
//!
//! The reference is slow at some of this (about 100 pins/s of ingest), so
//! every workload of either system runs within a time budget: what does not
//! finish in it is reported as such, with how far it got, never guessed.
//!
//! Run: `cargo bench --bench vs_reference` (full scale, tens of minutes);
//! `cargo bench --bench vs_reference -- small` or `VS_REFERENCE_SCALE=small`
//! for a quick run at a tenth to a hundredth of the sizes.
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::reference::{ReferencePeer, init_reference_folder};
use common::tools::nothing_listening;
use common::*;
use futures::StreamExt;
use serde_json::json;

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";
/// Concurrent clients of the ingest workload.
const CLIENTS: usize = 32;
/// Linux reports utime and stime in clock ticks of `USER_HZ`, which is 100
/// on every architecture the kernel exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// The sizes of one run and how long any one workload may take.
#[derive(Debug)]
struct Scale {
    name: &'static str,
    ingest: usize,
    visibility: usize,
    /// Pinsets a fresh peer joins.
    join: Vec<usize>,
    /// Pinsets listed and held idle for the memory figure.
    hold: Vec<usize>,
    /// A workload still running after this is stopped and reported as such.
    budget: Duration,
    /// How long a join may take before it is reported as incomplete.
    join_budget: Duration,
}

impl Scale {
    fn from_env() -> Scale {
        let small = std::env::args().any(|a| a == "small")
            || std::env::var("VS_REFERENCE_SCALE").is_ok_and(|v| v == "small");
        if small {
            Scale {
                name: "small",
                ingest: 2_000,
                visibility: 100,
                join: vec![1_000, 10_000],
                hold: vec![10_000, 100_000],
                budget: Duration::from_secs(60),
                join_budget: Duration::from_secs(150),
            }
        } else {
            Scale {
                name: "full",
                ingest: 20_000,
                visibility: 1_000,
                join: vec![10_000, 100_000],
                hold: vec![100_000, 1_000_000],
                budget: Duration::from_secs(180),
                join_budget: Duration::from_secs(300),
            }
        }
    }

    /// Every pinset size the run loads, smallest first.
    fn pinsets(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = self.join.iter().chain(&self.hold).copied().collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Pincluster,
    Reference,
}

const SYSTEMS: [System; 2] = [System::Pincluster, System::Reference];

/// A running peer of either system: the bench only needs its REST API and
/// its process id; the harness of each system owns the process.
enum Process {
    Pincluster(TestPeer),
    Reference(ReferencePeer),
}

struct Peer {
    api: String,
    pid: u32,
    process: Process,
}

/// The same for both systems: a shared secret, the IPFS daemon down, and
/// each system's own defaults for the intervals the test harnesses shorten.
fn spec(bootstrap: Option<&str>, extra: &[(&str, &str)]) -> PeerSpec {
    let mut env = vec![
        ("CLUSTER_MONITORPINGINTERVAL".to_string(), "15s".to_string()),
        (
            "CLUSTER_CRDT_REBROADCASTINTERVAL".to_string(),
            "1m0s".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PeerSpec {
        secret: Some(SECRET.to_string()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default(),
        env,
    }
}

/// A folder for `system` with its default configuration, the IPFS daemon
/// at `ipfs` (where nothing listens).
fn init(system: System, dir: &Path, ipfs: &str) {
    match system {
        System::Pincluster => init_folder(dir, &spec(None, &[])),
        System::Reference => init_reference_folder(dir, ipfs, &spec(None, &[])),
    }
}

impl Peer {
    /// Starts a peer of `system` on `dir` (initialised first if empty).
    async fn start(system: System, dir: &Path, ipfs: &str, bootstrap: Option<&str>) -> Peer {
        let process = match system {
            System::Pincluster => {
                // Info is what the reference logs by default; pincluster's
                // harness would log at debug.
                let spec = spec(
                    bootstrap,
                    &[
                        ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS", ipfs),
                        ("PINCLUSTER_LOG", "warn,pincluster=info"),
                    ],
                );
                Process::Pincluster(TestPeer::start(dir.into(), spec).await)
            }
            System::Reference => {
                let peer = ReferencePeer::start(dir.into(), ipfs, spec(bootstrap, &[])).await;
                Process::Reference(peer)
            }
        };
        let (api, pid) = match &process {
            Process::Pincluster(p) => (p.api.clone(), p.pid()),
            Process::Reference(p) => (p.api.clone(), p.pid()),
        };
        Peer {
            api,
            pid: pid.expect("a running daemon"),
            process,
        }
    }

    async fn cluster_addr(&self) -> String {
        match &self.process {
            Process::Pincluster(p) => p.cluster_addr().await,
            Process::Reference(p) => p.cluster_addr().await,
        }
    }
}

/// `n` peers of `system`, all bootstrapped from the first, once a first
/// pin on the first is listed by all (so that no measured pin waits for
/// connections or gossip meshes still forming). `GET /peers` cannot tell:
/// the reference lists a peer by its ping metric, which carries its IPFS
/// daemon's id, and with that daemon down its peers stay unlisted.
async fn cluster(system: System, dirs: &[tempfile::TempDir], client: &Client) -> Vec<Peer> {
    let first = Peer::start(system, dirs[0].path(), &nothing_listening(), None).await;
    let addr = first.cluster_addr().await;
    let mut peers = vec![first];
    for d in &dirs[1..] {
        peers.push(Peer::start(system, d.path(), &nothing_listening(), Some(&addr)).await);
    }
    let warm_up = cids(&format!("warm-up-{}", dirs.len()), 1).remove(0);
    client.pin(&peers[0].api, &warm_up).await;
    for p in &peers[1..] {
        wait_for(
            "the first pin on every peer",
            Duration::from_secs(120),
            || async { client.has(&p.api, &warm_up).await.then_some(()) },
        )
        .await;
    }
    peers
}

/// The one HTTP client every request of the workloads goes through, for
/// both systems alike.
#[derive(Clone)]
struct Client(reqwest::Client);

impl Client {
    fn new() -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .expect("an HTTP client");
        Client(http)
    }

    async fn pin(&self, api: &str, cid: &str) {
        let res = self
            .0
            .post(format!("{api}/pins/{cid}"))
            .send()
            .await
            .expect("POST /pins");
        let status = res.status();
        assert!(
            status.is_success(),
            "POST /pins: {status} {}",
            res.text().await.unwrap_or_default()
        );
    }

    /// Whether `GET /allocations/{cid}` answers with the pin.
    async fn has(&self, api: &str, cid: &str) -> bool {
        match self.0.get(format!("{api}/allocations/{cid}")).send().await {
            Ok(res) if res.status() == 200 => res.bytes().await.is_ok(),
            _ => false,
        }
    }

    /// The number of pins `GET /allocations` streams, counted by line
    /// without decoding them (the same work for both systems' output).
    async fn count(&self, api: &str) -> Option<usize> {
        let res = self.0.get(format!("{api}/allocations")).send().await.ok()?;
        if res.status() == 204 {
            return Some(0);
        }
        if !res.status().is_success() {
            return None;
        }
        let mut body = res.bytes_stream();
        let mut lines = 0;
        while let Some(chunk) = body.next().await {
            lines += chunk.ok()?.iter().filter(|&&b| b == b'\n').count();
        }
        Some(lines)
    }
}

/// utime + stime of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may hold spaces; the fields after it may not.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after
    // the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_SECOND
}

fn cluster_cpu(peers: &[Peer]) -> f64 {
    peers.iter().map(|p| cpu_seconds(p.pid)).sum()
}

/// A field of `/proc/<pid>/status` in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Sets the process's peak RSS (VmHWM) back to its current RSS, so that
/// the next reading is the peak of what follows, not of loading the state.
fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("write /proc/PID/clear_refs");
}

/// Waits until the peers use less than 2 % of a core together over a
/// second, three seconds in a row (both systems keep a little background
/// work: metrics, retries against the IPFS daemon that is down). Returns
/// `false` if they are still busy after `limit`.
async fn settle(pids: &[u32], limit: Duration) -> bool {
    let start = Instant::now();
    let cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let mut quiet = 0;
    let mut last = cpu();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu();
        quiet = if now - last < 0.02 { quiet + 1 } else { 0 };
        last = now;
        if quiet == 3 {
            return true;
        }
    }
    false
}

/// A figure of one system, or why there is none.
#[derive(Clone, Debug)]
struct Figure {
    value: Option<f64>,
    note: String,
}

impl Figure {
    fn of(value: f64) -> Figure {
        Figure {
            value: Some(value),
            note: String::new(),
        }
    }

    fn noted(value: f64, note: impl Into<String>) -> Figure {
        Figure {
            value: Some(value),
            note: note.into(),
        }
    }

    fn missing(why: impl Into<String>) -> Figure {
        Figure {
            value: None,
            note: why.into(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Better {
    Higher,
    Lower,
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    what: String,
    unit: &'static str,
    better: Better,
    pincluster: Figure,
    reference: Figure,
}

/// The rows of one workload, as each system's run fills them in.
struct Rows {
    rows: Vec<Row>,
}

impl Rows {
    fn set(&mut self, what: &str, unit: &'static str, better: Better, system: System, f: Figure) {
        let i = match self.rows.iter().position(|r| r.what == what) {
            Some(i) => i,
            None => {
                let empty = Figure::missing("not run");
                self.rows.push(Row {
                    what: what.to_string(),
                    unit,
                    better,
                    pincluster: empty.clone(),
                    reference: empty,
                });
                self.rows.len() - 1
            }
        };
        // Each figure as it comes, so that a long run shows its progress.
        eprintln!(
            "  {}: {what}: {:?} {unit} {}",
            name(system),
            f.value,
            f.note
        );
        let row = &mut self.rows[i];
        match system {
            System::Pincluster => row.pincluster = f,
            System::Reference => row.reference = f,
        }
    }
}

fn name(system: System) -> &'static str {
    match system {
        System::Pincluster => "pincluster",
        System::Reference => "reference",
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pretty(v: f64) -> String {
    if v >= 100.0 {
        thousands(v.round() as usize)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Ingest on one peer of 3 until listed by the other two; the CPU of all
/// three from the first request until the last pin is listed everywhere.
async fn ingest(system: System, scale: &Scale, client: &Client, rows: &mut Rows) {
    let dirs: Vec<_> = (0..3).map(|_| temp()).collect();
    let peers = cluster(system, &dirs, client).await;
    let set = cids(&format!("ingest-{}", name(system)), scale.ingest);
    let cpu_before = cluster_cpu(&peers);
    let start = Instant::now();
    let api = peers[0].api.clone();
    // Past the budget the clients stop taking new pins: what was accepted
    // by then is the workload's size.
    let accepted = futures::stream::iter(&set)
        .take_while(|_| std::future::ready(start.elapsed() < scale.budget))
        .map(|cid| {
            let api = api.clone();
            async move { client.pin(&api, cid).await }
        })
        .buffer_unordered(CLIENTS)
        .count()
        .await;
    let accepted_in = start.elapsed();
    let mut missing = String::new();
    let mut polling_cpu = 0.0;
    for p in &peers[1..] {
        // Every peer also lists the warm-up pin of `cluster`. The wait is
        // longer than the CRDT's re-announce interval (1 min): the
        // reference misses some heads under this load and only fetches
        // them when they are announced again.
        let (seen, cpu) = wait_counted(client, p, accepted + 1, scale.join_budget).await;
        polling_cpu += cpu;
        if seen - 1 < accepted {
            missing = format!(
                "{} of {} listed after a further {:?}",
                thousands(seen - 1),
                thousands(accepted),
                scale.join_budget
            );
        }
    }
    let visible_in = start.elapsed();
    let cpu = cluster_cpu(&peers) - cpu_before - polling_cpu;
    let what = "ingest, 32 clients, 1 of 3 peers (pins/s until listed on all)";
    let size = if accepted < set.len() {
        format!(
            "{} of {} pins accepted in the {:?} budget",
            thousands(accepted),
            thousands(set.len()),
            scale.budget
        )
    } else {
        format!("{} pins", thousands(accepted))
    };
    let rate = accepted as f64 / visible_in.as_secs_f64();
    let size = format!(
        "{size}, accepted at {}/s",
        pretty(accepted as f64 / accepted_in.as_secs_f64())
    );
    let figure = if missing.is_empty() {
        Figure::noted(rate, size)
    } else {
        Figure::missing(format!("{size}; {missing}"))
    };
    rows.set(what, "pins/s", Better::Higher, system, figure);
    let what = "CPU of the 3 peers per 10,000 pins ingested (utime+stime, until listed on all)";
    let per_10k = cpu / (accepted as f64 / 10_000.0);
    rows.set(
        what,
        "s",
        Better::Lower,
        system,
        Figure::noted(
            per_10k,
            format!(
                "{cpu:.1} s for {} pins, {polling_cpu:.1} s of listing polls left out",
                thousands(accepted)
            ),
        ),
    );
}

/// Polls `GET /allocations` on `peer` until it lists `want` pins or
/// `limit` passes; returns the last count and the CPU time the peer spent
/// while it answered the polls, so that a CPU figure can leave out the
/// cost of watching. Between polls it waits four times as long as the
/// last listing took (at least 50 ms), so that watching a slow listing
/// does not keep the peer busy.
async fn wait_counted(client: &Client, peer: &Peer, want: usize, limit: Duration) -> (usize, f64) {
    let start = Instant::now();
    let mut polling_cpu = 0.0;
    loop {
        let (cpu, t) = (cpu_seconds(peer.pid), Instant::now());
        let n = client.count(&peer.api).await.unwrap_or(0);
        let took = t.elapsed();
        polling_cpu += cpu_seconds(peer.pid) - cpu;
        if n >= want || start.elapsed() > limit {
            return (n, polling_cpu);
        }
        tokio::time::sleep((took * 4).max(Duration::from_millis(50))).await;
    }
}

/// One pin after another on peer 0 of 5, each timed until all five answer
/// `GET /allocations/{cid}`.
async fn visibility(system: System, scale: &Scale, client: &Client, rows: &mut Rows) {
    let dirs: Vec<_> = (0..5).map(|_| temp()).collect();
    let peers = cluster(system, &dirs, client).await;
    let set = cids(&format!("visibility-{}", name(system)), scale.visibility);
    let start = Instant::now();
    let mut times = Vec::new();
    let mut unseen = None;
    'pins: for cid in &set {
        if start.elapsed() > scale.budget {
            break;
        }
        let t = Instant::now();
        client.pin(&peers[0].api, cid).await;
        for p in &peers {
            while !client.has(&p.api, cid).await {
                if t.elapsed() > scale.budget {
                    unseen = Some(cid.clone());
                    break 'pins;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        times.push(t.elapsed());
    }
    times.sort();
    let done = if times.len() < set.len() {
        format!(
            "{} of {} pins in the {:?} budget",
            times.len(),
            set.len(),
            scale.budget
        )
    } else {
        format!("{} pins", times.len())
    };
    let note = match unseen {
        Some(cid) => format!("{done}; {cid} not on all peers after {:?}", scale.budget),
        None => done,
    };
    for (what, p) in [("p50", 0.50), ("p99", 0.99)] {
        let what =
            format!("visibility {what}: POST /pins on 1 → GET /allocations/{{cid}} on all 5");
        let figure = if times.is_empty() {
            Figure::missing(note.clone())
        } else {
            Figure::noted(percentile(&times, p).as_secs_f64() * 1000.0, note.clone())
        };
        rows.set(&what, "ms", Better::Lower, system, figure);
    }
}

/// `n` pins as both systems' `state export` writes them (and `state
/// import` reads them): replicated everywhere, no name, no metadata.
fn pins_file(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("pins-{n}.json"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("create pins file"));
    for cid in cids(&format!("hold-{n}"), n) {
        let pin = json!({
            "replication_factor_min": -1,
            "replication_factor_max": -1,
            "name": "",
            "mode": "recursive",
            "shard_size": 0,
            "user_allocations": null,
            "expire_at": "0001-01-01T00:00:00Z",
            "metadata": null,
            "pin_update": null,
            "origins": [],
            "cid": cid,
            "type": "pin",
            "allocations": [],
            "max_depth": -1,
            "reference": null,
            "timestamp": "2026-12-04T00:00:00Z",
        });
        serde_json::to_writer(&mut w, &pin).expect("write a pin");
        w.write_all(b"\n").expect("write a pin");
    }
    w.flush().expect("write pins file");
    path
}

/// `state import` of `file` into the stopped peer's folder `dir`; how long
/// it took.
fn import(system: System, dir: &Path, file: &Path) -> Duration {
    let mut cmd = match system {
        System::Pincluster => {
            let mut c = Command::new(BIN);
            c.args(["state", "import", "--force"])
                .arg(file)
                .arg("--config")
                .arg(dir);
            c
        }
        System::Reference => {
            let mut c = Command::new(common::kubo::real_bin("ipfs-cluster-service"));
            c.args(["state", "import", "--force"])
                .arg(file)
                .env("IPFS_CLUSTER_PATH", dir);
            c
        }
    };
    let start = Instant::now();
    let out = cmd.output().expect("run state import");
    assert!(
        out.status.success(),
        "{} state import: {}",
        name(system),
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

/// For one pinset size: import it into a peer, let the peer settle, read
/// its memory, list the pinset, and (for the join sizes) start a fresh
/// peer that bootstraps from it and wait until it lists every pin.
async fn pinset(
    system: System,
    n: usize,
    file: &Path,
    scale: &Scale,
    client: &Client,
    rows: &mut Rows,
) {
    let holder_dir = temp();
    let ipfs = nothing_listening();
    init(system, holder_dir.path(), &ipfs);
    let took = import(system, holder_dir.path(), file);
    let size = thousands(n);
    rows.set(
        &format!("state import of {size} pins (pins/s)"),
        "pins/s",
        Better::Higher,
        system,
        Figure::noted(n as f64 / took.as_secs_f64(), format!("{took:.1?}")),
    );
    let holder = Peer::start(system, holder_dir.path(), &ipfs, None).await;
    let idle = settle(&[holder.pid], scale.budget).await;
    let busy = if idle { "" } else { "still busy" };
    if scale.hold.contains(&n) {
        rows.set(
            &format!("memory: RSS of the peer holding {size} pins, idle"),
            "MiB",
            Better::Lower,
            system,
            Figure::noted(mib(status_kib(holder.pid, "VmRSS:")), busy),
        );
        let before = status_kib(holder.pid, "VmRSS:");
        reset_peak_rss(holder.pid);
        let start = Instant::now();
        let listed = client.count(&holder.api).await.expect("GET /allocations");
        let took = start.elapsed();
        assert_eq!(listed, n, "{} listed {listed} of {n} pins", name(system));
        let peak = status_kib(holder.pid, "VmHWM:");
        rows.set(
            &format!("listing: GET /allocations of {size} pins"),
            "pins/s",
            Better::Higher,
            system,
            Figure::noted(n as f64 / took.as_secs_f64(), format!("{took:.2?}")),
        );
        rows.set(
            &format!("listing {size} pins: peak RSS of the serving peer (VmHWM)"),
            "MiB",
            Better::Lower,
            system,
            Figure::noted(mib(peak), format!("{:.0} MiB before", mib(before))),
        );
    }
    if scale.join.contains(&n) {
        let joiner_dir = temp();
        let addr = holder.cluster_addr().await;
        let start = Instant::now();
        let joiner =
            Peer::start(system, joiner_dir.path(), &nothing_listening(), Some(&addr)).await;
        let (listed, _) = wait_counted(client, &joiner, n, scale.join_budget).await;
        let took = start.elapsed();
        let what = format!("join: a fresh peer until it lists all {size} pins");
        let figure = if listed == n {
            Figure::of(took.as_secs_f64())
        } else {
            Figure::missing(format!(
                "incomplete: {} of {size} pins after {:?}",
                thousands(listed),
                scale.join_budget
            ))
        };
        rows.set(&what, "s", Better::Lower, system, figure);
        if listed == n && scale.hold.contains(&n) {
            let idle = settle(&[joiner.pid], scale.budget).await;
            rows.set(
                &format!("memory: RSS of the peer that joined {size} pins, idle"),
                "MiB",
                Better::Lower,
                system,
                Figure::noted(
                    mib(status_kib(joiner.pid, "VmRSS:")),
                    if idle { "" } else { "still busy" },
                ),
            );
        }
    }
}

/// The table, in Markdown so that it pastes into BENCHMARKS.md.
fn print_table(rows: &[Row]) {
    println!("| what | unit | better | pincluster | reference | ratio pincluster/reference |");
    println!("|---|---|---|---:|---:|---:|");
    let cell = |f: &Figure| match (f.value, f.note.is_empty()) {
        (Some(v), true) => format!("**{}**", pretty(v)),
        (Some(v), false) => format!("**{}** ({})", pretty(v), f.note),
        (None, _) => format!("— ({})", f.note),
    };
    for r in rows {
        let ratio = match (r.pincluster.value, r.reference.value) {
            (Some(a), Some(b)) if b > 0.0 => {
                let ratio = a / b;
                let ours_better = match r.better {
                    Better::Higher => ratio > 1.0,
                    Better::Lower => ratio < 1.0,
                };
                let factor = if ratio >= 1.0 { ratio } else { 1.0 / ratio };
                let who = if ours_better {
                    "pincluster"
                } else {
                    "reference"
                };
                format!("{} ({who} {}× better)", pretty(ratio), pretty(factor))
            }
            _ => "—".to_string(),
        };
        let better = match r.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        };
        println!(
            "| {} | {} | {better} | {} | {} | {ratio} |",
            r.what,
            r.unit,
            cell(&r.pincluster),
            cell(&r.reference)
        );
    }
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let scale = Scale::from_env();
    println!(
        "vs_reference, {} scale; load average at the start: {}",
        scale.name,
        uptime()
    );
    println!(
        "Every peer's IPFS daemon is down (a loopback port where nothing listens), \
         for both systems: these figures are the cluster layer only."
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new();
    let mut rows = Rows { rows: Vec::new() };
    runtime.block_on(async {
        for system in SYSTEMS {
            eprintln!("{}: ingest", name(system));
            ingest(system, &scale, &client, &mut rows).await;
        }
        for system in SYSTEMS {
            eprintln!("{}: visibility", name(system));
            visibility(system, &scale, &client, &mut rows).await;
        }
        let files = temp();
        for n in scale.pinsets() {
            let file = pins_file(files.path(), n);
            for system in SYSTEMS {
                eprintln!("{}: {} pins", name(system), thousands(n));
                pinset(system, n, &file, &scale, &client, &mut rows).await;
            }
        }
    });
    println!("load average at the end: {}", uptime());
    print_table(&rows.rows);
}
