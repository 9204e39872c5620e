//! IPFS proxy throughput against a real Kubo daemon (the targets of the
//! proxy issue):
//! - `add` of a 100 MB file through the proxy: ≥ 90 % of the throughput of
//!   the same add straight to the daemon;
//! - `cat` of 100 MB through the proxy: ≥ 95 % of the direct throughput.
//!
//! Run: `cargo bench --bench proxy` (needs `.ci/install-ipfs`). One daemon,
//! one release `pincluster daemon` beside it; direct and proxied runs
//! alternate so that both see the same machine. Each add uploads fresh
//! random bytes (re-adding known blocks would be cheaper for the daemon).
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::kubo::Kubo;
use common::*;
use rand::RngCore;

const SIZE: usize = 100 << 20;

/// 5 unless `PINCLUSTER_BENCH_RUNS` says otherwise.
fn runs() -> usize {
    std::env::var("PINCLUSTER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn multipart(data: Vec<u8>) -> (String, Vec<u8>) {
    let boundary = "----pincluster-bench";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One add of `SIZE` fresh bytes to `base`; its wall time.
async fn add(http: &reqwest::Client, base: &str) -> Duration {
    let mut data = vec![0u8; SIZE];
    rand::thread_rng().fill_bytes(&mut data);
    let (content_type, body) = multipart(data);
    let start = Instant::now();
    let res = http
        .post(format!("{base}/api/v0/add?pin=true&progress=false"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("add");
    assert!(res.status().is_success(), "add: {}", res.status());
    let text = res.text().await.expect("add reply");
    assert!(text.contains("\"Hash\""), "add: {text}");
    start.elapsed()
}

/// One cat of `cid` from `base`, read to the end; its wall time.
async fn cat(http: &reqwest::Client, base: &str, cid: &str) -> Duration {
    let start = Instant::now();
    let mut res = http
        .post(format!("{base}/api/v0/cat?arg={cid}"))
        .send()
        .await
        .expect("cat");
    assert!(res.status().is_success(), "cat: {}", res.status());
    let mut len = 0;
    while let Some(chunk) = res.chunk().await.expect("cat body") {
        len += chunk.len();
    }
    assert_eq!(len, SIZE);
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mbps(d: Duration) -> f64 {
    SIZE as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn report(what: &str, direct: Vec<Duration>, proxied: Vec<Duration>, target: f64) {
    let (d, p) = (median(direct.clone()), median(proxied.clone()));
    let ratio = mbps(p) / mbps(d) * 100.0;
    println!(
        "{what}: direct median {:.0} MB/s ({d:.2?}), proxy median {:.0} MB/s ({p:.2?}): {ratio:.1} % (target ≥ {target} %)",
        mbps(d),
        mbps(p)
    );
    println!("  direct runs: {direct:.2?}\n  proxy runs:  {proxied:.2?}");
}

#[tokio::main]
async fn main() {
    let tmp = temp();
    let daemon = Kubo::start(&tmp.path().join("ipfs")).await;
    let spec = PeerSpec {
        secret: None,
        bootstrap: Vec::new(),
        env: vec![
            (
                "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
                daemon.api_multiaddr(),
            ),
            (
                "CLUSTER_IPFSPROXY_NODEMULTIADDRESS".into(),
                daemon.api_multiaddr(),
            ),
            ("PINCLUSTER_LOG".into(), "warn,pincluster=info".into()),
        ],
    };
    let peer = TestPeer::start(tmp.path().join("peer"), spec).await;
    let proxy = format!("http://127.0.0.1:{}", peer.proxy_port());
    let direct = daemon.api_url();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    // Warm both paths (connection pools, the daemon's caches).
    add(&http, &direct).await;
    add(&http, &proxy).await;
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        d.push(add(&http, &direct).await);
        p.push(add(&http, &proxy).await);
    }
    report("add 100 MB", d, p, 90.0);

    let data: Vec<u8> = {
        let mut v = vec![0u8; SIZE];
        rand::thread_rng().fill_bytes(&mut v);
        v
    };
    let cid = daemon.add("cat.bin", &data).await;
    drop(data);
    cat(&http, &direct, &cid).await;
    cat(&http, &proxy, &cid).await;
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..runs() * 2 {
        d.push(cat(&http, &direct, &cid).await);
        p.push(cat(&http, &proxy, &cid).await);
    }
    report("cat 100 MB", d, p, 95.0);
}
