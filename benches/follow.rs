//! A collaborative cluster on this machine: 1 trusted peer and
//! `PINCLUSTER_BENCH_FOLLOWERS` (default 100) `pincluster follow demo run`
//! processes made from a template served over HTTP. Figures:
//! - a new pin on the trusted peer until it is in every follower's pinset
//!   (`GET /allocations/<cid>` on each follower's unix socket, polled every
//!   50 ms, so ±50 ms), p50 and p99 over the followers and pins;
//! - established TCP connections of the trusted peer's cluster swarm (its
//!   connection manager set to `PINCLUSTER_BENCH_HIGH_WATER`, default 20,
//!   low water half that, grace period 30 s: the trim keeps it there), and
//!   of each follower (median, max);
//! - resident memory of each follower (VmRSS), median and max;
//! - a fresh follower joining a cluster of `PINCLUSTER_BENCH_JOIN_PINS`
//!   (default 100,000) pins: time until it lists the newest one.
//!
//! The followers pin to the template's IPFS daemon, a closed port (their
//! pins end in `pin_error`; `--ipfs template`, where a volunteer's default
//! is the embedded node): what is measured is the pinset reaching them. Run: `cargo bench --bench follow`.
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "5a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/service.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

struct Follower {
    child: Child,
    http: reqwest::Client,
}

impl Follower {
    async fn start(path: &Path, url: &str) -> Follower {
        let out = Command::new(BIN)
            // The template's IPFS connector (a closed port): what is
            // measured is the pinset reaching the followers, not 100
            // embedded nodes looking for random CIDs on two cores.
            .args([
                "follow", "demo", "init", url, "--ipfs", "template", "--path",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child = Command::new(BIN)
            .args(["follow", "demo", "run", "--path"])
            .arg(path)
            .env("PINCLUSTER_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let socket = path.join("demo/api-socket");
        let http = reqwest::Client::builder()
            .unix_socket(socket)
            .build()
            .unwrap();
        let f = Follower { child, http };
        wait_for("a follower's API", DEADLINE, || async {
            f.get("/id").await.filter(|s| *s == 200).map(|_| ())
        })
        .await;
        f
    }

    async fn get(&self, path: &str) -> Option<u16> {
        let res = self
            .http
            .get(format!("http://localhost{path}"))
            .send()
            .await
            .ok()?;
        Some(res.status().as_u16())
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Follower {
    /// Its established TCP connections: all cluster connections (its
    /// REST API is a unix socket and its IPFS daemon is absent).
    fn links(&self) -> usize {
        tcp_links(self.child.id()).len()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn template(trusted: &TestPeer, addr: &str) -> String {
    let text = std::fs::read_to_string(trusted.dir.join("service.json")).unwrap();
    let mut t: Value = serde_json::from_str(&text).unwrap();
    t["cluster"]["peername"] = "".into();
    t["cluster"]["listen_multiaddress"] = "/ip4/127.0.0.1/tcp/0".into();
    t["cluster"]["peer_addresses"] = vec![addr.to_string()].into();
    t["cluster"]["mdns_interval"] = "0s".into();
    t["consensus"]["crdt"]["trusted_peers"] = vec![trusted.id.clone()].into();
    // Nobody listens there: pins fail fast, the pinset is what is measured.
    t["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = "/ip4/127.0.0.1/tcp/1".into();
    serde_json::to_string_pretty(&t).unwrap()
}

async fn run() {
    let n = env_usize("PINCLUSTER_BENCH_FOLLOWERS", 100);
    let pins = env_usize("PINCLUSTER_BENCH_PINS", 20);
    let join_pins = env_usize("PINCLUSTER_BENCH_JOIN_PINS", 100_000);
    let high_water = env_usize("PINCLUSTER_BENCH_HIGH_WATER", 20);
    let tmp = temp();
    let spec = PeerSpec {
        secret: Some(SECRET.into()),
        env: vec![
            ("PINCLUSTER_LOG".into(), "warn,pincluster=info".into()),
            ("CLUSTER_MDNSINTERVAL".into(), "0s".into()),
        ],
        ..Default::default()
    };
    let dir = tmp.path().join("trusted");
    init_folder(&dir, &spec);
    let config_path = dir.join("service.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    // The trusted peer trusts itself only (as the template says): with
    // `*`, every follower would be trusted, and never trimmed.
    let identity: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("identity.json")).unwrap()).unwrap();
    config["consensus"]["crdt"]["trusted_peers"] = vec![identity["id"].clone()].into();
    config["cluster"]["connection_manager"] = serde_json::json!({
        "high_water": high_water,
        "low_water": (high_water / 2).max(1),
        "grace_period": "30s",
    });
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let trusted = TestPeer::start(dir, spec).await;
    let addr = trusted.cluster_addr().await;
    let api_port: u16 = trusted.api.rsplit(':').next().unwrap().parse().unwrap();
    let trusted_links = || {
        trusted.pid().map_or(0, |pid| {
            tcp_links(pid)
                .iter()
                .filter(|(local, _)| *local != api_port)
                .count()
        })
    };
    let url = serve(template(&trusted, &addr)).await;

    let start = Instant::now();
    let mut followers = Vec::new();
    for i in 0..n {
        let path: PathBuf = tmp.path().join(format!("v{i}"));
        followers.push(Follower::start(&path, &url).await);
    }
    println!("follow: {n} followers started in {:?}", start.elapsed());
    // Warm-up, not counted: one pin reaching everyone means every
    // follower is connected and subscribed.
    let warm = cids("follow-warm-up", 1).remove(0);
    assert_eq!(trusted.pin(&warm, "").await.0, 200);
    let path = format!("/allocations/{warm}");
    for f in &followers {
        wait_for("the warm-up pin", Duration::from_secs(300), || async {
            (f.get(&path).await == Some(200)).then_some(())
        })
        .await;
    }
    println!(
        "follow: warm-up pin on all followers {:?} after the start",
        start.elapsed()
    );

    let mut times = Vec::new();
    for (i, cid) in cids("follow-bench", pins).iter().enumerate() {
        let t0 = Instant::now();
        assert_eq!(trusted.pin(cid, "").await.0, 200);
        let path = format!("/allocations/{cid}");
        let seen = futures::stream::iter(&followers)
            .map(|f| {
                let path = path.clone();
                async move {
                    loop {
                        if f.get(&path).await == Some(200) {
                            return t0.elapsed();
                        }
                        if t0.elapsed() > Duration::from_secs(120) {
                            panic!("pin {i} never reached a follower");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
            .buffer_unordered(n)
            .collect::<Vec<_>>()
            .await;
        times.extend(seen);
    }
    times.sort();
    println!(
        "follow: new pin -> in the pinset of each of {n} followers, {} samples: p50 {:?} p99 {:?} max {:?}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    let mut links: Vec<usize> = followers.iter().map(Follower::links).collect();
    links.sort();
    println!(
        "follow: established cluster connections: trusted peer {} (high water {high_water}); follower median {} max {}",
        trusted_links(),
        links[links.len() / 2],
        links[links.len() - 1]
    );
    let mut rss: Vec<u64> = followers.iter().filter_map(Follower::rss_kib).collect();
    rss.sort();
    println!(
        "follow: follower RSS median {} MiB, max {} MiB; trusted peer {:?} KiB (RSS, peak)",
        rss[rss.len() / 2] / 1024,
        rss[rss.len() - 1] / 1024,
        trusted.memory_kib()
    );
    drop(followers);

    // Join: the trusted peer alone takes the pins, then a fresh follower.
    let set = cids("follow-join", join_pins);
    let t0 = Instant::now();
    futures::stream::iter(&set)
        .for_each_concurrent(64, |cid| async {
            assert_eq!(trusted.pin(cid, "").await.0, 200);
        })
        .await;
    println!("follow: loaded {join_pins} pins in {:?}", t0.elapsed());
    let last = cids("follow-join-marker", 1).remove(0);
    assert_eq!(trusted.pin(&last, "").await.0, 200);
    let t0 = Instant::now();
    let joiner = Follower::start(&tmp.path().join("joiner"), &url).await;
    let path = format!("/allocations/{last}");
    wait_for(
        "the joiner to hold the last pin",
        Duration::from_secs(600),
        || async { (joiner.get(&path).await == Some(200)).then_some(()) },
    )
    .await;
    println!(
        "follow: a fresh follower listed the newest of {} pins {:?} after it was started (RSS {:?} KiB)",
        join_pins + pins + 2,
        t0.elapsed(),
        joiner.rss_kib()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
