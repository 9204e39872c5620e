//! Whole-cluster figures with real daemons on 127.0.0.1 (the targets of the
//! cluster issue):
//! - latency from `POST /pins` on one peer to the pin being listed on all of
//!   5 peers, p50 and p99 over 1,000 pins (target p99 < 500 ms);
//! - ingest: pins/s accepted by `POST /pins` from 32 concurrent clients on
//!   one peer, and until all are visible on a second peer (target ≥ 5,000/s);
//! - join: a fresh peer joining a cluster that holds 100,000 pins, time until
//!   its pinset is complete (target < 10 s).
//!
//! Run: `cargo bench --bench cluster`. Every peer shares this machine's two
//! cores with the others and with the load generator.
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";

fn spec(bootstrap: Option<&str>) -> PeerSpec {
    PeerSpec {
        secret: Some(SECRET.to_string()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default(),
        env: vec![("PINCLUSTER_LOG".into(), "warn,pincluster=info".into())],
    }
}

async fn cluster(n: usize, dirs: &[tempfile::TempDir]) -> Vec<TestPeer> {
    let first = TestPeer::start(dirs[0].path().into(), spec(None)).await;
    let addr = first.cluster_addr().await;
    let mut peers = vec![first];
    for d in &dirs[1..n] {
        peers.push(TestPeer::start(d.path().into(), spec(Some(&addr))).await);
    }
    for p in &peers {
        wait_for("a full peerset", DEADLINE, || async {
            (p.peer_ids().await?.len() == n).then_some(())
        })
        .await;
    }
    peers
}

async fn has(peer: &TestPeer, cid: &str) -> bool {
    peer.get_json(&format!("/allocations/{cid}"))
        .await
        .is_some_and(|v| v["cid"] == cid)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn latency() {
    let dirs: Vec<_> = (0..5).map(|_| temp()).collect();
    let peers = cluster(5, &dirs).await;
    let mut times = Vec::new();
    for cid in cids("latency", 1000) {
        let start = Instant::now();
        let (status, _) = peers[0].pin(&cid, "").await;
        assert_eq!(status, 200);
        for p in &peers[1..] {
            while !has(p, &cid).await {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "latency POST -> listed on 5/5 peers over {} pins: p50 {:?}  p99 {:?}  max {:?}",
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
}

async fn ingest_into(peer: &TestPeer, cids: &[String], clients: usize) -> Duration {
    let start = Instant::now();
    futures::stream::iter(cids)
        .for_each_concurrent(clients, |cid| async move {
            let (status, body) = peer.pin(cid, "").await;
            assert_eq!(status, 200, "{body}");
        })
        .await;
    start.elapsed()
}

async fn ingest() {
    let dirs: Vec<_> = (0..2).map(|_| temp()).collect();
    let peers = cluster(2, &dirs).await;
    let set = cids("ingest", 20_000);
    let start = Instant::now();
    let accepted = ingest_into(&peers[0], &set, 32).await;
    wait_for(
        "all pins on the second peer",
        Duration::from_secs(300),
        || async {
            let n = peers[1].get_ndjson("/allocations").await?.len();
            (n == set.len()).then_some(())
        },
    )
    .await;
    let visible = start.elapsed();
    println!(
        "ingest of {} pins from 32 clients: accepted {:.0}/s ({:?}); all visible on peer 2 after {:?} ({:.0}/s)",
        set.len(),
        set.len() as f64 / accepted.as_secs_f64(),
        accepted,
        visible,
        set.len() as f64 / visible.as_secs_f64()
    );
}

async fn join() {
    let dirs: Vec<_> = (0..2).map(|_| temp()).collect();
    let holder = TestPeer::start(dirs[0].path().into(), spec(None)).await;
    let set = cids("join", 100_000);
    let took = ingest_into(&holder, &set, 64).await;
    println!("join: loaded {} pins in {:?}", set.len(), took);
    // One more pin, alone: the newest delta. Merging is causal, so once a
    // joiner lists it, it holds every earlier pin too.
    let last = cids("join-marker", 1).remove(0);
    assert_eq!(holder.pin(&last, "").await.0, 200);
    let addr = holder.cluster_addr().await;
    let start = Instant::now();
    let joiner = TestPeer::start(dirs[1].path().into(), spec(Some(&addr))).await;
    wait_for(
        "the joiner to hold the last pin",
        Duration::from_secs(600),
        || async { has(&joiner, &last).await.then_some(()) },
    )
    .await;
    let synced = start.elapsed();
    let count = joiner.get_ndjson("/allocations").await.unwrap().len();
    assert_eq!(count, set.len() + 1);
    println!("join: a fresh peer held all {count} pins {synced:?} after it was started");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        latency().await;
        ingest().await;
        join().await;
    });
}
