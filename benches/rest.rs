//! REST API figures with a real `pincluster daemon` on 127.0.0.1 (the
//! targets of the REST API issue):
//! - `GET /allocations` streaming 1,000,000 pins: pins/s read by a client,
//!   and the daemon's resident memory before and while it streams (target
//!   ≥ 500,000 pins/s with flat memory);
//! - `POST /add` of a 100 MB file: throughput through the cluster peer
//!   against adding the same file straight to its IPFS daemon (Kubo),
//!   best of 3 each (target ≥ 80 %).
//!
//! Run: `cargo bench --bench rest [-- add|allocations]`. The daemons share this machine's two
//! cores with each other and with the load generator.
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::kubo::Kubo;
use common::*;
use futures::StreamExt;

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";
const PINS: usize = 1_000_000;

fn spec(env: Vec<(String, String)>) -> PeerSpec {
    let mut env = env;
    env.push(("PINCLUSTER_LOG".into(), "warn,pincluster=info".into()));
    PeerSpec {
        secret: Some(SECRET.to_string()),
        bootstrap: Vec::new(),
        env,
    }
}

async fn allocations() {
    let dir = temp();
    let peer = TestPeer::start(dir.path().into(), spec(Vec::new())).await;
    let set = cids("alloc-bench", PINS);
    let start = Instant::now();
    futures::stream::iter(&set)
        .for_each_concurrent(64, |cid| {
            let peer = &peer;
            async move {
                let (status, body) = peer.pin(cid, "").await;
                assert_eq!(status, 200, "{body}");
            }
        })
        .await;
    println!("allocations: loaded {PINS} pins in {:?}", start.elapsed());
    let (rss_before, _) = peer.memory_kib().expect("memory");
    for run in 1..=3 {
        let start = Instant::now();
        let mut res = reqwest::get(format!("{}/allocations", peer.api))
            .await
            .expect("GET /allocations");
        let (mut lines, mut bytes, mut rss_max, mut next_sample) = (0usize, 0usize, 0u64, 0usize);
        while let Some(chunk) = res.chunk().await.expect("a chunk") {
            lines += chunk.iter().filter(|b| **b == b'\n').count();
            bytes += chunk.len();
            if lines >= next_sample {
                rss_max = rss_max.max(peer.memory_kib().expect("memory").0);
                next_sample += 50_000;
            }
        }
        let took = start.elapsed();
        assert_eq!(lines, PINS);
        println!(
            "allocations run {run}: {lines} pins ({} MB) in {took:?}: {:.0} pins/s; daemon RSS {} MiB before, at most {} MiB while streaming",
            bytes >> 20,
            lines as f64 / took.as_secs_f64(),
            rss_before >> 10,
            rss_max >> 10
        );
    }
}

/// A multipart body with one file.
fn multipart(data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----pincluster-bench-boundary";
    let mut body = Vec::with_capacity(data.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn timed_add(url: &str, content_type: &str, body: &[u8]) -> (Duration, String) {
    let start = Instant::now();
    let res = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("POST add");
    assert!(res.status().is_success());
    let text = res.text().await.expect("add reply");
    let took = start.elapsed();
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a line")).expect("json");
    let cid = last["Hash"]
        .as_str()
        .or(last["cid"].as_str())
        .expect("a CID")
        .to_string();
    (took, cid)
}

async fn add() {
    let tmp = temp();
    let daemon = Kubo::start(&tmp.path().join("ipfs")).await;
    let peer = TestPeer::start(
        tmp.path().join("peer"),
        spec(vec![(
            "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
            daemon.api_multiaddr(),
        )]),
    )
    .await;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let data: Vec<u8> = (0..100usize << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let (content_type, body) = multipart(&data);
    let mb = data.len() as f64 / (1 << 20) as f64;
    let (mut direct, mut cluster) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let (d, want) = timed_add(
            &format!("{}/api/v0/add?pin=false", daemon.api_url()),
            &content_type,
            &body,
        )
        .await;
        let (c, got) = timed_add(&format!("{}/add", peer.api), &content_type, &body).await;
        assert_eq!(got, want);
        direct = direct.min(d);
        cluster = cluster.min(c);
    }
    println!(
        "add 100 MB: straight to Kubo {direct:?} ({:.0} MB/s); through POST /add {cluster:?} ({:.0} MB/s): {:.0} %",
        mb / direct.as_secs_f64(),
        mb / cluster.as_secs_f64(),
        100.0 * direct.as_secs_f64() / cluster.as_secs_f64()
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
    // `cargo bench --bench rest -- allocations` runs one of them.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    runtime.block_on(async {
        if wanted("add") {
            add().await;
        }
        if wanted("allocations") {
            allocations().await;
        }
    });
}
