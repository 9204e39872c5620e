//! A hostile peer on the wire: three honest `pincluster daemon` processes
//! and a rogue process ([`rogue`]) that holds the cluster secret (a member
//! gone bad) but is not trusted, attacking them one way after another over
//! the cluster's own libp2p protocols:
//!
//! - malformed requests on the sync protocol and the cluster RPC (random
//!   bytes, cut messages, a future version, too many CIDs, over the size
//!   limit, a CBOR array claiming 2^64 items), and what only trusted peers
//!   may ask (remove a peer, run `repo/gc`);
//! - floods: heads requests, deepest block walks, requests for blocks
//!   nobody has, heads announcements of blocks nobody has, oversized
//!   gossip;
//! - a flood of metrics under names never seen before;
//! - bait: heads answers naming a delta signed by the rogue's own key, one
//!   claiming an honest peer as author, bytes that do not hash to the CID,
//!   an oversized block, CBOR that is no delta, and the honest peers' own
//!   newest heads served with the wrong bytes;
//! - an identity answer claiming an honest peer's id;
//! - answers that never come, then answers a byte every 100 ms;
//! - a second rogue process (the forger) publishing heads and metrics
//!   authored as an honest peer, unsigned (it does not own the key).
//!
//! After each attack, with pins written meanwhile: every honest peer
//! answers its REST API, the three list the same pinset (everything the
//! test wrote, nothing the rogue slipped in), `GET /peers` lists no id the
//! rogue does not own, no metric is recorded under an honest peer's name
//! that it did not publish, and resident memory stays within a bound.
//!
//! In open mode (`trusted_peers: ["*"]`) the rogue's own signed delta is a
//! legitimate write and must be accepted: the check that the bait really
//! reached the engine. Everything else must still be refused.

mod common;
#[path = "hostile_peer/rogue.rs"]
mod rogue;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SECRET: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";
/// Resident memory an honest peer may gain over the whole run (its
/// pinset grows by a few hundred pins meanwhile).
const RSS_GROWTH_KIB: u64 = 256 * 1024;

/// The rogue's entry point: the test binary started again by [`Rogue`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs only as the rogue process the hostile tests start"]
async fn rogue_process() {
    // Run by hand with `--ignored`, without its configuration: nothing to do.
    let Ok(config) = std::env::var("PINCLUSTER_ROGUE") else {
        return;
    };
    rogue::run(serde_json::from_str(&config).expect("the rogue's config")).await;
}

/// A running rogue process.
struct Rogue {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    id: String,
}

impl Rogue {
    fn start(config: &rogue::RogueConfig) -> Rogue {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["rogue_process", "--exact", "--ignored", "--nocapture"])
            .env("PINCLUSTER_ROGUE", serde_json::to_string(config).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the rogue");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(l) = line.strip_prefix("ROGUE ") {
                    let _ = tx.send(l.to_string());
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut rogue = Rogue {
            child,
            stdin,
            lines,
            id: String::new(),
        };
        let first = rogue.next_line(Duration::from_secs(60));
        rogue.id = first
            .strip_prefix("id ")
            .expect("the rogue's id line")
            .to_string();
        rogue
    }

    fn next_line(&mut self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("the rogue said nothing in {limit:?}: {e}"))
    }

    /// Sends `command`; returns the `key=value` pairs of its `done` line.
    async fn send(&mut self, command: &str) -> Vec<(String, u64)> {
        writeln!(self.stdin, "{command}").expect("write to the rogue");
        self.stdin.flush().unwrap();
        let name = command.split_whitespace().next().unwrap().to_string();
        let lines = &self.lines;
        let line = wait_for(
            &format!("the rogue's {name}"),
            Duration::from_secs(120),
            || async {
                match lines.try_recv() {
                    Ok(l) if l.starts_with(&format!("done {name}")) => Some(l),
                    _ => None,
                }
            },
        )
        .await;
        eprintln!("hostile figure: {command}: {line}");
        line.split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(pairs: &[(String, u64)], key: &str) -> u64 {
    pairs.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

/// The honest cluster and what the test wrote to it.
struct Honest {
    peers: Vec<TestPeer>,
    written: BTreeSet<String>,
    baseline_rss: Vec<u64>,
    round: usize,
}

impl Honest {
    /// Writes 5 pins, on each honest peer in turn.
    async fn write(&mut self, what: &str) {
        let writer = &self.peers[self.round % self.peers.len()];
        self.round += 1;
        for cid in cids(&format!("hostile {what} {}", self.round), 5) {
            let (status, body) = writer.pin(&cid, "").await;
            assert!(
                (200..300).contains(&status),
                "pin during {what}: {status} {body}"
            );
            self.written.insert(cid);
        }
    }

    /// Everything a user would notice, after `attack`.
    async fn check(&self, attack: &str, known: &BTreeSet<String>, must_hold: &[String]) {
        let want: Vec<String> = self
            .written
            .iter()
            .cloned()
            .chain(must_hold.iter().cloned())
            .collect();
        let started = Instant::now();
        for p in &self.peers {
            assert!(
                p.get_json("/id").await.is_some(),
                "{attack}: {} does not answer /id",
                p.id
            );
            p.wait_pinset(&want).await;
        }
        let converged = started.elapsed();
        for p in &self.peers {
            let listed = p.peer_ids().await.expect("GET /peers");
            let distinct: BTreeSet<String> = listed.iter().cloned().collect();
            assert_eq!(
                distinct.len(),
                listed.len(),
                "{attack}: an id listed twice by {}: {listed:?}",
                p.id
            );
            for id in &listed {
                assert!(
                    known.contains(id),
                    "{attack}: {} lists {id}, no peer of the cluster",
                    p.id
                );
            }
            for q in &self.peers {
                assert!(
                    listed.contains(&q.id),
                    "{attack}: {} no longer lists {}",
                    p.id,
                    q.id
                );
            }
            let forged = p.get_json("/monitor/metrics/forged-by-rogue").await;
            for m in forged
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                assert!(
                    !self.peers.iter().any(|q| m["peer"] == q.id.as_str()),
                    "{attack}: {} recorded a forged metric under an honest peer: {m}",
                    p.id
                );
            }
        }
        let mut rss = Vec::new();
        for (p, base) in self.peers.iter().zip(&self.baseline_rss) {
            let (now, peak) = p.memory_kib().expect("the peer's memory");
            assert!(
                now <= base + RSS_GROWTH_KIB,
                "{attack}: {} grew from {base} KiB to {now} KiB",
                p.id
            );
            rss.push((now, peak));
        }
        eprintln!(
            "hostile figure: after {attack}: pins={} converged_in={converged:.1?} rss_kib(now,peak)={rss:?}",
            self.written.len()
        );
    }
}

fn identity_id(dir: &std::path::Path) -> String {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("identity.json")).unwrap()).unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn hostile(open: bool) {
    let dirs: Vec<_> = (0..3).map(|_| temp()).collect();
    let base = PeerSpec {
        secret: Some(SECRET.into()),
        ..PeerSpec::default()
    };
    let mut ids = Vec::new();
    for d in &dirs {
        init_folder(d.path(), &base);
        ids.push(identity_id(d.path()));
    }
    let service: Value =
        serde_json::from_slice(&std::fs::read(dirs[0].path().join("service.json")).unwrap())
            .unwrap();
    let cluster_name = service["consensus"]["crdt"]["cluster_name"]
        .as_str()
        .unwrap_or("ipfs-cluster")
        .to_string();
    let trusted = if open { "*".to_string() } else { ids.join(",") };
    let spec = PeerSpec {
        env: vec![
            ("CLUSTER_CRDT_TRUSTEDPEERS".into(), trusted),
            // No IPFS daemon: nothing listens there (the default port may
            // be another test's Kubo).
            (
                "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
                "/ip4/127.0.0.1/tcp/9".into(),
            ),
        ],
        ..base
    };
    let a = TestPeer::start(dirs[0].path().into(), spec.clone()).await;
    let joining = PeerSpec {
        bootstrap: vec![a.cluster_addr().await],
        ..spec
    };
    let b = TestPeer::start(dirs[1].path().into(), joining.clone()).await;
    let c = TestPeer::start(dirs[2].path().into(), joining).await;
    let mut honest = Honest {
        peers: vec![a, b, c],
        written: BTreeSet::new(),
        baseline_rss: Vec::new(),
        round: 0,
    };
    for p in &honest.peers {
        wait_for("3 peers", DEADLINE, || async {
            (p.peer_ids().await?.len() == 3).then_some(())
        })
        .await;
    }
    // Some history for the block walks to serve.
    for _ in 0..6 {
        honest.write("history").await;
    }

    let mut targets = Vec::new();
    for p in &honest.peers {
        targets.push(p.cluster_addr().await);
    }
    let run = format!("{:016x}", rand::random::<u64>());
    let config = rogue::RogueConfig {
        secret: SECRET.into(),
        cluster_name,
        targets,
        forge_as: None,
        run: run.clone(),
        answers: "lie".into(),
        bait: false,
    };
    let mut rogue = Rogue::start(&config);
    let mut forger = Rogue::start(&rogue::RogueConfig {
        forge_as: Some(honest.peers[0].id.clone()),
        ..config.clone()
    });
    rogue.send("ready").await;
    forger.send("ready").await;
    let mut known: BTreeSet<String> = honest
        .peers
        .iter()
        .map(|p| p.id.clone())
        .chain([rogue.id.clone(), forger.id.clone()])
        .collect();
    honest.check("warm-up", &known, &[]).await;
    honest.baseline_rss = honest
        .peers
        .iter()
        .map(|p| p.memory_kib().unwrap().0)
        .collect();

    // Malformed and forbidden requests.
    let garbage = rogue.send(if open { "garbage 0" } else { "garbage" }).await;
    honest.write("garbage").await;
    honest.check("garbage", &known, &[]).await;
    // SetRemoved ×2 and RepoGc per target, at least, are refused.
    assert!(
        open || get(&garbage, "refused") >= 9,
        "the rogue's forbidden requests were not refused: {garbage:?}"
    );

    // Floods.
    rogue.send("flood 40").await;
    honest.write("flood").await;
    honest.check("flood", &known, &[]).await;

    rogue.send("metrics 40").await;
    honest.write("metrics").await;
    honest.check("metrics", &known, &[]).await;
    // The rogue's metric about itself is recorded (the gossip reached the
    // monitor), under its own id only.
    let rogue_id = rogue.id.clone();
    let observer = &honest.peers[1];
    wait_for("the rogue's own metric", DEADLINE, || async {
        let v = observer.get_json("/monitor/metrics/rogue-own").await?;
        v.as_array()?
            .iter()
            .any(|m| m["peer"] == rogue_id.as_str())
            .then_some(())
    })
    .await;
    let names = observer
        .get_json("/monitor/metrics")
        .await
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    eprintln!("hostile figure: metric names listed after the metrics flood: {names}");
    // 16,000 names were sent; a peer keeps a bounded number per author.
    assert!(
        names <= pincluster::monitor::MAX_NAMES_PER_PEER + 16,
        "{names} metric names kept after the rogue's flood"
    );

    // Gossip authored as an honest peer, unsigned.
    forger.send("forge 40").await;
    honest.write("forge").await;
    honest.check("forged gossip", &known, &[]).await;

    // Bait: bad blocks behind the rogue's heads answers.
    let before: Vec<usize> = honest.peers.iter().map(refusals).collect();
    honest.write("bait").await;
    let mut baiter = Rogue::start(&rogue::RogueConfig {
        bait: true,
        ..config.clone()
    });
    known.insert(baiter.id.clone());
    baiter.send("ready").await;
    honest.write("bait").await;
    let mut served = 0;
    let deadline = Instant::now() + DEADLINE;
    while served < 3 && Instant::now() < deadline {
        served = get(&baiter.send("stats").await, "served_blocks");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        served >= 3,
        "the honest peers did not ask the rogue for its bait blocks"
    );
    let [own, forged, wrong] = rogue::bait_pins(&run).map(|c| c.to_string());
    let must_hold = if open { vec![own.clone()] } else { vec![] };
    honest.check("bait", &known, &must_hold).await;
    for p in &honest.peers {
        let listed = p.pinset().await.unwrap();
        for (pin, what) in [(&forged, "forged-author"), (&wrong, "wrong-bytes")] {
            assert!(
                !listed.contains(pin),
                "{} accepted the rogue's {what} pin",
                p.id
            );
        }
        if !open {
            assert!(
                !listed.contains(&own),
                "{} accepted a delta signed by an untrusted key",
                p.id
            );
        }
    }
    // Each honest peer asked for the bait and refused it (its log says).
    let peers = &honest.peers;
    let refused = wait_for(
        "every honest peer refusing bait blocks",
        DEADLINE,
        || async {
            let refused: Vec<usize> = peers
                .iter()
                .zip(&before)
                .map(|(p, b)| refusals(p) - b)
                .collect();
            refused.iter().all(|n| *n > 0).then_some(refused)
        },
    )
    .await;
    eprintln!("hostile figure: blocks refused per honest peer during bait: {refused:?}");

    // An identity answer that claims an honest peer's id.
    let victim = honest.peers[0].id.clone();
    rogue.send(&format!("forge-id {victim}")).await;
    honest.write("forge-id").await;
    honest.check("forged identity", &known, &must_hold).await;

    // Answers that never come, then a byte at a time.
    let mut silent = Rogue::start(&rogue::RogueConfig {
        answers: "silent".into(),
        ..config.clone()
    });
    known.insert(silent.id.clone());
    silent.send("ready").await;
    honest.write("silent").await;
    honest.check("silent", &known, &must_hold).await;
    let pin = honest.written.iter().next().unwrap().clone();
    for p in &honest.peers {
        assert!(
            p.get_json(&format!("/pins/{pin}")).await.is_some(),
            "status with a silent peer"
        );
    }
    let mut trickle = Rogue::start(&rogue::RogueConfig {
        answers: "trickle".into(),
        ..config.clone()
    });
    known.insert(trickle.id.clone());
    trickle.send("ready").await;
    honest.write("trickle").await;
    honest.check("trickle", &known, &must_hold).await;
    let held = get(&silent.send("stats").await, "held");
    eprintln!("hostile figure: requests the rogue never answered: {held}");
}

/// Blocks this peer has refused so far (its log).
fn refusals(p: &TestPeer) -> usize {
    p.log_text()
        .lines()
        .filter(|l| l.contains("refused block"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rogue_member_that_is_not_trusted_changes_nothing_and_hurts_no_one() {
    hostile(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_open_mode_the_rogue_writes_but_its_forgeries_are_still_refused() {
    hostile(true).await;
}
