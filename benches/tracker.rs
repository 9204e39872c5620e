//! Pin tracker and status figures (the targets of the IPFS issue):
//! - tracker throughput against the fake Kubo: pins reconciled per second
//!   for 100,000 pins (target ≥ 10,000/s);
//! - global status of 100,000 pins on 3 peers, `GET /pins` streamed (target
//!   < 5 s).
//!
//! Run: `cargo bench --bench tracker`. The fake Kubo answers over loopback
//! HTTP like a real daemon, so each pin costs the connector's real calls
//! (`pin/ls?arg=` then `pin/add`).
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fake_kubo::FakeKubo;
use common::*;
use pincluster::consensus::PinChange;
use pincluster::ipfsconn::{IpfsConnConfig, KuboConnector};
use pincluster::pintracker::{PinTracker, RetryPolicy, TrackerConfig};
use pincluster::types::{Pin, PinOptions};
use pincluster_crdt::store::fjall::Database;

/// 100,000 unless `PINCLUSTER_BENCH_PINS` says otherwise (for quick runs).
fn pins() -> usize {
    std::env::var("PINCLUSTER_BENCH_PINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

async fn throughput(concurrent_pins: usize) {
    let ipfs = FakeKubo::start().await;
    let connector = KuboConnector::new(IpfsConnConfig::with_defaults(ipfs.multiaddr())).unwrap();
    // The tracker's queue lives in a fjall database, as in a peer.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path()).open().unwrap();
    let tracker = PinTracker::start(
        connector,
        libp2p::PeerId::random(),
        TrackerConfig {
            concurrent_pins,
            max_queue: pins() * 2,
            priority_max_age: Duration::from_secs(86_400),
            priority_max_retries: 5,
            retry: RetryPolicy {
                max_attempts: 5,
                first_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(60),
            },
        },
        &db,
        dir.path(),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let cids: Vec<cid::Cid> = cids("tracker", pins())
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let start = Instant::now();
    for cid in &cids {
        let mut pin = Pin::new(*cid, PinOptions::default());
        pin.timestamp = Some(chrono::Utc::now().fixed_offset());
        tracker.on_change(PinChange {
            old: None,
            new: Some(pin),
        });
    }
    while ipfs.pinned().len() < pins() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    println!(
        "tracker, concurrent_pins {concurrent_pins}: {} pins reconciled in {took:?}: {:.0} pins/s",
        pins(),
        pins() as f64 / took.as_secs_f64()
    );
}

async fn global_status() {
    let kubos = [
        FakeKubo::start().await,
        FakeKubo::start().await,
        FakeKubo::start().await,
    ];
    let dirs: Vec<_> = (0..3).map(|_| temp()).collect();
    let spec = |k: &FakeKubo, bootstrap: Option<&str>| PeerSpec {
        secret: Some("2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a".into()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default(),
        env: vec![
            (
                "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
                k.multiaddr().to_string(),
            ),
            ("PINCLUSTER_LOG".into(), "warn,pincluster=info".into()),
        ],
    };
    let a = TestPeer::start(dirs[0].path().into(), spec(&kubos[0], None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(dirs[1].path().into(), spec(&kubos[1], Some(&addr))).await;
    let c = TestPeer::start(dirs[2].path().into(), spec(&kubos[2], Some(&addr))).await;
    for p in [&a, &b, &c] {
        wait_for("a full peerset", DEADLINE, || async {
            (p.peer_ids().await?.len() == 3).then_some(())
        })
        .await;
    }
    let set = cids("status", pins());
    use futures::StreamExt;
    let writer = &a;
    futures::stream::iter(&set)
        .for_each_concurrent(64, |cid| async move {
            assert_eq!(writer.pin(cid, "").await.0, 200);
        })
        .await;
    // Wait for every daemon to hold every pin, so the figure is of a quiet
    // cluster, not of one busy pinning.
    for k in &kubos {
        while k.pinned().len() < pins() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for _ in 0..3 {
        let start = Instant::now();
        let res = reqwest::get(format!("{}/pins", a.api)).await.unwrap();
        let mut lines = 0usize;
        let mut pinned_everywhere = 0usize;
        let mut body = res.bytes_stream();
        let mut rest = Vec::new();
        while let Some(chunk) = body.next().await {
            rest.extend_from_slice(&chunk.unwrap());
            while let Some(i) = rest.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = rest.drain(..=i).collect();
                let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                lines += 1;
                if v["peer_map"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(|e| e["status"] == "pinned")
                {
                    pinned_everywhere += 1;
                }
            }
        }
        println!(
            "GET /pins on 3 peers: {lines} pins ({pinned_everywhere} pinned on all 3) streamed in {:?}",
            start.elapsed()
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        throughput(10).await;
        throughput(64).await;
        global_status().await;
    });
}
