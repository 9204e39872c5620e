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
//! At issue 13's size (`Scale::deep`, 1,000,000 pins) the same peer is also
//! measured in every state the issue names: RSS right after start, the
//! `GET /allocations` rate and peak RSS in the first minute (while the
//! tracker churns) and once idle, the peak while serving `GET /pins` and
//! while a fresh peer joins from it (and the joiner's own peak); and a
//! catch-up: a peer that was down while N pins were added, from its restart
//! until it lists them all. Joins and catch-ups get a deadline
//! (`Scale::deep_budget`); one that does not finish in it is reported with
//! how many pins the peer had by then, which bounds the figure.
//!
//! Tracker at scale (`tracker`): a real Kubo 0.43.1 already holds N pins
//! (raw blocks loaded offline with `ipfs dag import --pin-roots`); the same
//! N pins are `state import`ed into a peer of each system beside it, and
//! the peer is timed from its start until `GET /pins?local=true&filter=pinned`
//! lists all N, with its peak RSS and CPU time.
//!
//! Apart from `tracker`, only the cluster layer is measured: every peer's IPFS daemon address is a
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
//! Run: `cargo bench --bench vs_reference` (full scale, over an hour);
//! `cargo bench --bench vs_reference -- small` or `VS_REFERENCE_SCALE=small`
//! for a quick run at a tenth to a hundredth of the sizes. Workloads can be
//! picked by name (`ingest`, `visibility`, `pinsets`, `issue13`,
//! `tracker`), e.g. `cargo bench --bench vs_reference -- issue13 tracker`;
//! none named runs all. `VS_REFERENCE_HELD=<n>` runs the tracker workload
//! at that one size; `VS_REFERENCE_KUBO=<dir>` keeps its loaded Kubo in
//! `<dir>` (loaded there on the first run, reused after); and
//! `VS_REFERENCE_SYSTEM=pincluster` (or `reference`) runs one side only.
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kubo::Kubo;
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
    /// The pinset of issue 13's figures (one of `join` and `hold`): memory
    /// in every state, first-minute listing, join and catch-up.
    deep: usize,
    /// How long a join or catch-up of `deep` pins, or a tracker
    /// verification, may take.
    deep_budget: Duration,
    /// Pins added while a peer is down, for the catch-up.
    catch_up: usize,
    /// Pinsets a real Kubo already holds, for the tracker at scale.
    held: Vec<usize>,
}

impl Scale {
    fn from_env() -> Scale {
        let small = std::env::args().any(|a| a == "small")
            || std::env::var("VS_REFERENCE_SCALE").is_ok_and(|v| v == "small");
        let scale = if small {
            Scale {
                name: "small",
                ingest: 2_000,
                visibility: 100,
                join: vec![1_000, 10_000],
                hold: vec![10_000],
                budget: Duration::from_secs(60),
                join_budget: Duration::from_secs(150),
                deep: 10_000,
                deep_budget: Duration::from_secs(150),
                catch_up: 10_000,
                held: vec![10_000],
            }
        } else {
            Scale {
                name: "full",
                ingest: 20_000,
                visibility: 1_000,
                join: vec![10_000, 100_000, 1_000_000],
                hold: vec![100_000, 1_000_000],
                budget: Duration::from_secs(180),
                join_budget: Duration::from_secs(300),
                deep: 1_000_000,
                deep_budget: Duration::from_secs(600),
                // The reference's `state import` of 1,000,000 pins alone
                // takes minutes; its catch-up is measured at 100,000.
                catch_up: 100_000,
                held: vec![100_000, 1_000_000],
            }
        };
        // `VS_REFERENCE_HELD=1000000`: the tracker workload at that size
        // only (loading Kubo with every size of the list takes long).
        match std::env::var("VS_REFERENCE_HELD")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(n) => Scale {
                held: vec![n],
                ..scale
            },
            None => scale,
        }
    }

    /// Every pinset size the `pinsets` workload loads, smallest first
    /// (`deep` is the `issue13` workload's).
    fn pinsets(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = self.join.iter().chain(&self.hold).copied().collect();
        sizes.retain(|&n| n != self.deep);
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

    /// SIGTERM, and waits until the process has exited (its folder can then
    /// be opened by `state import`).
    fn stop(mut self) {
        match &mut self.process {
            Process::Pincluster(p) => p.stop(),
            Process::Reference(p) => p.stop(),
        };
    }

    /// Resident memory now.
    fn rss(&self) -> f64 {
        mib(status_kib(self.pid, "VmRSS:"))
    }

    /// Resident memory at its peak since start or since the last
    /// [`Peer::reset_peak`].
    fn peak(&self) -> f64 {
        mib(status_kib(self.pid, "VmHWM:"))
    }

    fn reset_peak(&self) {
        reset_peak_rss(self.pid);
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
        self.count_lines(api, "/allocations", None).await
    }

    /// The number of lines a streamed `GET {path}` answers with (both
    /// systems write one object per line), within `limit` if given.
    async fn count_lines(&self, api: &str, path: &str, limit: Option<Duration>) -> Option<usize> {
        let mut req = self.0.get(format!("{api}{path}"));
        if let Some(limit) = limit {
            req = req.timeout(limit);
        }
        Client::lines(req).await
    }

    /// The same of Kubo's RPC API, which takes only POST.
    async fn count_kubo_lines(&self, api: &str, path: &str) -> Option<usize> {
        Client::lines(self.0.post(format!("{api}{path}"))).await
    }

    async fn lines(req: reqwest::RequestBuilder) -> Option<usize> {
        let res = req.send().await.ok()?;
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
        let (seen, cpu) = wait_counted(client, p, accepted + 1, scale.join_budget, 4).await;
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
/// cost of watching. Between polls it waits `pause` times as long as the
/// last listing took (at least 50 ms): 4 where the peer's CPU is measured,
/// so that watching a slow listing does not keep the peer busy; 1 where
/// the time is the figure, so that a 1,000,000-pin listing of a second or
/// two does not leave the figure seconds late.
async fn wait_counted(
    client: &Client,
    peer: &Peer,
    want: usize,
    limit: Duration,
    pause: u32,
) -> (usize, f64) {
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
        tokio::time::sleep((took * pause).max(Duration::from_millis(50))).await;
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

/// `cids` as both systems' `state export` writes them (and `state import`
/// reads them): replicated everywhere, no name, no metadata. The file is
/// `dir/<name>.json`.
fn pins_file<'a>(dir: &Path, name: &str, cids: impl IntoIterator<Item = &'a String>) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("create pins file"));
    for cid in cids {
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

/// What a join (or catch-up) that did not finish in `budget` got to: the
/// figure is bounded below by the budget.
fn unfinished(listed: usize, of: usize, budget: Duration) -> Figure {
    Figure::missing(format!(
        "not done after {} s, had {} of {} pins",
        budget.as_secs(),
        thousands(listed),
        thousands(of)
    ))
}

/// For one pinset size: import it into a peer, let the peer settle, read
/// its memory, list the pinset, and (for the join sizes) start a fresh
/// peer that bootstraps from it and wait until it lists every pin. At
/// `scale.deep`, also the memory of every state of issue 13: right after
/// start, a listing in the first minute, `GET /pins`, and both sides of
/// the join.
async fn pinset(
    system: System,
    n: usize,
    file: &Path,
    scale: &Scale,
    client: &Client,
    rows: &mut Rows,
) {
    let deep = n == scale.deep;
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
    let started = Instant::now();
    let holder = Peer::start(system, holder_dir.path(), &ipfs, None).await;
    if deep {
        rows.set(
            &format!("memory: RSS of the peer holding {size} pins, right after start (API up)"),
            "MiB",
            Better::Lower,
            system,
            Figure::noted(
                holder.rss(),
                format!("{:.1?} after start", started.elapsed()),
            ),
        );
        // The first minute: the tracker goes through every pin (queues
        // and fails them, the daemon being down) while a client lists.
        let start = Instant::now();
        let listed = client.count(&holder.api).await.expect("GET /allocations");
        let took = start.elapsed();
        rows.set(
            &format!(
                "listing in the first minute: GET /allocations of {size} pins right after start"
            ),
            "pins/s",
            Better::Higher,
            system,
            Figure::noted(
                listed as f64 / took.as_secs_f64(),
                format!("{} pins in {took:.2?}", thousands(listed)),
            ),
        );
    }
    let idle = settle(&[holder.pid], scale.budget).await;
    let busy = if idle { "" } else { "still busy" };
    if deep {
        rows.set(
            &format!(
                "memory: peak RSS of the peer holding {size} pins, from start until idle (VmHWM)"
            ),
            "MiB",
            Better::Lower,
            system,
            Figure::noted(
                holder.peak(),
                format!("idle after {:.0?}{busy}", started.elapsed()),
            ),
        );
    }
    if scale.hold.contains(&n) {
        rows.set(
            &format!("memory: RSS of the peer holding {size} pins, idle"),
            "MiB",
            Better::Lower,
            system,
            Figure::noted(holder.rss(), busy),
        );
        let before = holder.rss();
        holder.reset_peak();
        let start = Instant::now();
        let listed = client.count(&holder.api).await.expect("GET /allocations");
        let took = start.elapsed();
        assert_eq!(listed, n, "{} listed {listed} of {n} pins", name(system));
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
            Figure::noted(holder.peak(), format!("{before:.0} MiB before")),
        );
    }
    if deep {
        // Statuses with the daemon down: each system answers what it can
        // (pincluster its tracker's failed operations, the reference an
        // error per pin), bounded by the budget.
        holder.reset_peak();
        let start = Instant::now();
        let listed = client
            .count_lines(&holder.api, "/pins?local=true", Some(scale.budget))
            .await;
        let took = start.elapsed();
        let note = match listed {
            Some(k) => format!("{} statuses in {took:.1?}", thousands(k)),
            None => format!("no complete answer in {took:.1?}"),
        };
        rows.set(
            &format!("memory: peak RSS while serving GET /pins?local=true of {size} pins (VmHWM)"),
            "MiB",
            Better::Lower,
            system,
            Figure::noted(holder.peak(), note),
        );
    }
    if scale.join.contains(&n) {
        let budget = if deep {
            scale.deep_budget
        } else {
            scale.join_budget
        };
        let joiner_dir = temp();
        let addr = holder.cluster_addr().await;
        holder.reset_peak();
        let start = Instant::now();
        let joiner =
            Peer::start(system, joiner_dir.path(), &nothing_listening(), Some(&addr)).await;
        let pause = if deep { 1 } else { 4 };
        let (listed, _) = wait_counted(client, &joiner, n, budget, pause).await;
        let took = start.elapsed();
        let what = format!("join: a fresh peer until it lists all {size} pins");
        let figure = if listed == n {
            Figure::of(took.as_secs_f64())
        } else {
            unfinished(listed, n, budget)
        };
        rows.set(&what, "s", Better::Lower, system, figure);
        if deep {
            rows.set(
                &format!("join of {size} pins: peak RSS of the peer it joins from (VmHWM)"),
                "MiB",
                Better::Lower,
                system,
                Figure::of(holder.peak()),
            );
            rows.set(
                &format!("join of {size} pins: peak RSS of the joiner (VmHWM)"),
                "MiB",
                Better::Lower,
                system,
                Figure::of(joiner.peak()),
            );
        }
        if listed == n && scale.hold.contains(&n) {
            let idle = settle(&[joiner.pid], scale.budget).await;
            rows.set(
                &format!("memory: RSS of the peer that joined {size} pins, idle"),
                "MiB",
                Better::Lower,
                system,
                Figure::noted(joiner.rss(), if idle { "" } else { "still busy" }),
            );
        }
    }
}

/// Pins the absent peer of [`catch_up`] holds before it goes away.
const BEFORE_ABSENCE: usize = 1_000;

/// Catch-up after absence: a peer holding [`BEFORE_ABSENCE`] pins stops;
/// the peer it bootstrapped from stops too and gets `n` more pins by `state
/// import` (the way an operator loads a large pinset, a new history on top
/// of the old one in both systems); both start again, and the absent peer
/// is timed from its restart until it lists all of them, within
/// `scale.deep_budget`. As in `benches/snapshot_join.sh catchup`.
async fn catch_up(
    system: System,
    n: usize,
    files: &Path,
    scale: &Scale,
    client: &Client,
    rows: &mut Rows,
) {
    let old = cids("before-absence", BEFORE_ABSENCE);
    let new = cids(&format!("during-absence-{n}"), n);
    let (producer_dir, absent_dir) = (temp(), temp());
    let ipfs = nothing_listening();
    init(system, producer_dir.path(), &ipfs);
    import(
        system,
        producer_dir.path(),
        &pins_file(files, "before-absence", &old),
    );
    let producer = Peer::start(system, producer_dir.path(), &ipfs, None).await;
    let addr = producer.cluster_addr().await;
    let absent = Peer::start(system, absent_dir.path(), &ipfs, Some(&addr)).await;
    let (listed, _) = wait_counted(client, &absent, old.len(), scale.join_budget, 1).await;
    assert_eq!(
        listed,
        old.len(),
        "{}: the first pins never synced",
        name(system)
    );
    absent.stop();
    producer.stop();
    let all = pins_file(files, "after-absence", old.iter().chain(&new));
    import(system, producer_dir.path(), &all);
    std::fs::remove_file(all).expect("remove the pins file");
    let producer = Peer::start(system, producer_dir.path(), &ipfs, None).await;
    // As for a join: the peer it comes back to has settled (pincluster's
    // has taken its snapshot).
    settle(&[producer.pid], scale.budget).await;
    let addr = producer.cluster_addr().await;
    let want = old.len() + n;
    let start = Instant::now();
    let absent = Peer::start(system, absent_dir.path(), &ipfs, Some(&addr)).await;
    let (listed, _) = wait_counted(client, &absent, want, scale.deep_budget, 1).await;
    let took = start.elapsed();
    let size = thousands(n);
    let figure = if listed >= want {
        Figure::of(took.as_secs_f64())
    } else {
        unfinished(listed, want, scale.deep_budget)
    };
    rows.set(
        &format!("catch-up: a peer down while {size} pins were added, from its restart until it lists all"),
        "s",
        Better::Lower,
        system,
        figure,
    );
    rows.set(
        &format!("catch-up of {size} pins: peak RSS of the returning peer (VmHWM)"),
        "MiB",
        Better::Lower,
        system,
        Figure::of(absent.peak()),
    );
}

/// CIDs a CAR's header may name as roots: Kubo's CAR reader bounds the
/// header's size; 100,000 roots (about 4 MB of header) import.
const ROOTS_PER_CAR: usize = 100_000;

/// A Kubo repo at `dir/repo` (the folder [`Kubo::start`] runs) holding
/// `cids(seed, n)` as recursive pins: each of those CIDs is the raw block
/// of the bytes `"{seed}-{i}"` (see [`cids`]), so CAR files of those blocks,
/// each block also a root, give real pins with `ipfs dag import
/// --pin-roots`. Kubo flushes its pinner after every root; with pebble's
/// write-ahead log off during the import that costs no fsync (pebble
/// flushes its memtables on close), and the log is switched back on for
/// the daemon. Returns how long the import took.
fn kubo_holding(dir: &Path, seed: &str, n: usize) -> Duration {
    let repo = dir.join("repo");
    let ipfs = |args: &[&str]| {
        let out = Command::new(common::kubo::real_bin("ipfs"))
            .args(args)
            .env("IPFS_PATH", &repo)
            .stdout(std::process::Stdio::null())
            .output()
            .expect("run ipfs");
        assert!(
            out.status.success(),
            "ipfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let write_wal = |on: bool| {
        let path = repo.join("config");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read the Kubo config"))
                .expect("the Kubo config is JSON");
        config["Datastore"]["Spec"]["disableWAL"] = json!(!on);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap())
            .expect("write the Kubo config");
    };
    ipfs(&["init", "--profile", "test,pebbleds", "--empty-repo"]);
    write_wal(false);
    let start = Instant::now();
    let car = dir.join("pins.car");
    let all = cids(seed, n);
    for (chunk, cids) in all.chunks(ROOTS_PER_CAR).enumerate() {
        let blocks = cids.iter().enumerate().map(|(j, cid)| {
            let cid = cid::Cid::try_from(cid.as_str()).expect("a CID of `cids`");
            let data = format!("{seed}-{}", chunk * ROOTS_PER_CAR + j);
            (cid.to_bytes(), data.into_bytes())
        });
        write_car(&car, blocks.collect());
        ipfs(&[
            "dag",
            "import",
            "--pin-roots=true",
            car.to_str().expect("a UTF-8 path"),
        ]);
    }
    let _ = std::fs::remove_file(&car);
    write_wal(true);
    start.elapsed()
}

/// A CARv1 of `blocks` (CID bytes, data), every block also a root.
fn write_car(path: &Path, blocks: Vec<(Vec<u8>, Vec<u8>)>) {
    // DAG-CBOR heads: major type in the top 3 bits, length after.
    fn head(out: &mut Vec<u8>, major: u8, len: usize) {
        match len {
            0..24 => out.push(major << 5 | len as u8),
            24..256 => out.extend([major << 5 | 24, len as u8]),
            256..65_536 => {
                out.push(major << 5 | 25);
                out.extend((len as u16).to_be_bytes());
            }
            _ => {
                out.push(major << 5 | 26);
                out.extend((len as u32).to_be_bytes());
            }
        }
    }
    fn varint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push(n as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    // {"roots": [CID...], "version": 1}, keys in DAG-CBOR's order; a CID
    // is tag 42 on its bytes behind a 0x00 prefix.
    let mut header = Vec::new();
    head(&mut header, 5, 2);
    head(&mut header, 3, 5);
    header.extend(b"roots");
    head(&mut header, 4, blocks.len());
    for (cid, _) in &blocks {
        header.extend([0xd8, 42]);
        head(&mut header, 2, cid.len() + 1);
        header.push(0);
        header.extend(cid);
    }
    head(&mut header, 3, 7);
    header.extend(b"version");
    header.push(1);
    let mut out = Vec::new();
    varint(&mut out, header.len());
    out.extend(header);
    for (cid, data) in &blocks {
        varint(&mut out, cid.len() + data.len());
        out.extend(cid);
        out.extend(data);
    }
    std::fs::write(path, out).expect("write a CAR");
}

/// Tracker at scale: a peer of `system` beside `kubo`, which already holds
/// every pin of `file` (`n` pins, allocated to every peer), timed from its
/// start until `GET /pins?local=true&filter=pinned` lists all `n` (each
/// poll a full streamed listing, the next one as soon as the last ends),
/// with its peak RSS and CPU time. Neither system has anything to pin: the
/// figure is how each learns that the daemon already holds its pinset.
async fn tracker(
    system: System,
    n: usize,
    file: &Path,
    kubo: &str,
    scale: &Scale,
    client: &Client,
    rows: &mut Rows,
) {
    let dir = temp();
    init(system, dir.path(), kubo);
    import(system, dir.path(), file);
    let start = Instant::now();
    let peer = Peer::start(system, dir.path(), kubo, None).await;
    let mut pinned = 0;
    while start.elapsed() < scale.deep_budget {
        let path = "/pins?local=true&filter=pinned";
        pinned = client
            .count_lines(&peer.api, path, Some(scale.deep_budget))
            .await
            .unwrap_or(0);
        // Each poll's outcome, to see where the time goes.
        eprintln!("  {:.1?}: {} pinned", start.elapsed(), thousands(pinned));
        if pinned >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = start.elapsed();
    let size = thousands(n);
    let figure = if pinned >= n {
        Figure::of(took.as_secs_f64())
    } else {
        Figure::missing(format!(
            "not done after {} s, {} of {size} pinned",
            scale.deep_budget.as_secs(),
            thousands(pinned)
        ))
    };
    rows.set(
        &format!(
            "tracker: {size} pins Kubo already holds, from start until all are pinned in GET /pins"
        ),
        "s",
        Better::Lower,
        system,
        figure,
    );
    rows.set(
        &format!("tracker, {size} pins held: CPU of the peer until verified (utime+stime, with the polls)"),
        "s",
        Better::Lower,
        system,
        Figure::of(cpu_seconds(peer.pid)),
    );
    // What follows the verification counts too: pincluster builds its
    // first snapshot once the tracker's start-up pass is done.
    let verified_peak = peer.peak();
    let idle = settle(&[peer.pid], scale.budget).await;
    let busy = if idle { "" } else { ", still busy" };
    rows.set(
        &format!("tracker, {size} pins held: peak RSS of the peer from start until idle (VmHWM)"),
        "MiB",
        Better::Lower,
        system,
        Figure::noted(
            peer.peak(),
            format!(
                "{verified_peak:.0} MiB until verified, {:.0} MiB once idle after {:.0?}{busy}",
                peer.rss(),
                start.elapsed()
            ),
        ),
    );
}

/// One pinset size through [`pinset`] for both systems.
async fn hold(n: usize, files: &Path, scale: &Scale, client: &Client, rows: &mut Rows) {
    let seed = format!("hold-{n}");
    let file = pins_file(files, &seed, &cids(&seed, n));
    for system in SYSTEMS {
        eprintln!("{}: {} pins", name(system), thousands(n));
        pinset(system, n, &file, scale, client, rows).await;
    }
    std::fs::remove_file(file).expect("remove the pins file");
}

/// The seed of the pins a Kubo holds for the tracker workload:
/// `cids(HELD, n)`, the raw blocks of `"pin-{i}"`. `VS_REFERENCE_KUBO=<dir>`
/// runs a Kubo folder (`<dir>/repo`) that an earlier [`kubo_holding`]
/// filled with at least that many of them instead of loading a new one
/// (minutes at 1,000,000).
const HELD: &str = "pin";

/// The systems the tracker workload runs: both, or the one
/// `VS_REFERENCE_SYSTEM` names (`pincluster`, `reference`), e.g. to
/// profile one side without waiting minutes for the other's `state import`.
fn systems() -> Vec<System> {
    let only = std::env::var("VS_REFERENCE_SYSTEM").ok();
    SYSTEMS
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == name(*s)))
        .collect()
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

/// The workloads named on the command line, or all of them.
fn wanted(workload: &str) -> bool {
    const NAMES: [&str; 5] = ["ingest", "visibility", "pinsets", "issue13", "tracker"];
    let named: Vec<String> = std::env::args()
        .filter(|a| NAMES.contains(&a.as_str()))
        .collect();
    named.is_empty() || named.iter().any(|a| a == workload)
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
        "Apart from the tracker rows, every peer's IPFS daemon is down (a loopback \
         port where nothing listens), for both systems: these figures are the \
         cluster layer only."
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new();
    let mut rows = Rows { rows: Vec::new() };
    runtime.block_on(async {
        if wanted("ingest") {
            for system in SYSTEMS {
                eprintln!("{}: ingest", name(system));
                ingest(system, &scale, &client, &mut rows).await;
            }
        }
        if wanted("visibility") {
            for system in SYSTEMS {
                eprintln!("{}: visibility", name(system));
                visibility(system, &scale, &client, &mut rows).await;
            }
        }
        let files = temp();
        if wanted("pinsets") {
            for n in scale.pinsets() {
                hold(n, files.path(), &scale, &client, &mut rows).await;
            }
        }
        if wanted("issue13") {
            hold(scale.deep, files.path(), &scale, &client, &mut rows).await;
            for system in SYSTEMS {
                let n = scale.catch_up;
                eprintln!("{}: catch-up of {} pins", name(system), thousands(n));
                catch_up(system, n, files.path(), &scale, &client, &mut rows).await;
            }
        }
        if wanted("tracker") {
            for &n in &scale.held {
                // One Kubo holds the pins for both systems, one after the
                // other: neither pins or unpins anything in it.
                let fresh = temp();
                let kubo_dir = match std::env::var_os("VS_REFERENCE_KUBO") {
                    // A folder named but not loaded yet: loaded once there,
                    // and kept for the runs after this one.
                    Some(dir) if !Path::new(&dir).join("repo").exists() => {
                        let dir = PathBuf::from(dir);
                        std::fs::create_dir_all(&dir).expect("create the Kubo folder");
                        let took = kubo_holding(&dir, HELD, n);
                        eprintln!("Kubo holds {} pins after {took:.1?} (kept)", thousands(n));
                        dir
                    }
                    Some(dir) => PathBuf::from(dir),
                    None => {
                        let took = kubo_holding(fresh.path(), HELD, n);
                        eprintln!("Kubo holds {} pins after {took:.1?}", thousands(n));
                        fresh.path().to_path_buf()
                    }
                };
                let kubo = Kubo::start(&kubo_dir).await;
                let start = Instant::now();
                let listed = client
                    .count_kubo_lines(&kubo.api_url(), "/api/v0/pin/ls?type=recursive&stream=true")
                    .await;
                eprintln!(
                    "Kubo's own pin/ls: {listed:?} pins in {:.1?}",
                    start.elapsed()
                );
                let file = pins_file(files.path(), HELD, &cids(HELD, n));
                for system in systems() {
                    eprintln!("{}: tracker, {} pins held", name(system), thousands(n));
                    tracker(
                        system,
                        n,
                        &file,
                        &kubo.api_multiaddr(),
                        &scale,
                        &client,
                        &mut rows,
                    )
                    .await;
                }
                std::fs::remove_file(file).expect("remove the pins file");
            }
        }
    });
    println!("load average at the end: {}", uptime());
    print_table(&rows.rows);
}
