//! Fetching a large DAG over Bitswap on this machine, side by side:
//! one of our embedded nodes fetching it from another of ours, and Kubo
//! 0.43.1 fetching it from Kubo.
//!
//! The DAG is a file of random bytes added to a first Kubo with its
//! defaults (CIDv0, 256 KiB chunks, balanced layout); its blocks are copied
//! into our serving node's memory source, so both sides move the very same
//! blocks. Ours walks the DAG level by level (`get_blocks` on every link of
//! the level, dag-pb links read here), as a recursive pin does; Kubo runs
//! `pin/add` on a second, empty daemon connected to the first. Each side
//! is timed from the fetch request to the last block; connecting is not
//! timed.
//!
//! Run: `cargo bench --bench bitswap` (256 MB), or with
//! `BITSWAP_BENCH_MB=1024` for 1 GB.
#![allow(clippy::print_stdout)] // the figures are a report for a human

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use common::kubo::Kubo;
use futures::StreamExt;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use pincluster::ipfs::bitswap::MemoryBlockSource;
use pincluster::ipfs::swarm::{IpfsSwarm, SwarmConfig};

/// The CIDs a dag-pb node links to (`PBNode.Links = 2`, `PBLink.Hash = 1`);
/// raw blocks have none.
fn links(cid: &Cid, block: &[u8]) -> Vec<Cid> {
    fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *buf.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// The length-delimited fields `field` of a message.
    fn fields(buf: &[u8], field: u64) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let Some(key) = varint(buf, &mut at) else {
                break;
            };
            match key & 7 {
                0 => {
                    varint(buf, &mut at);
                }
                2 => {
                    let Some(n) = varint(buf, &mut at) else {
                        break;
                    };
                    let end = at + n as usize;
                    if end > buf.len() {
                        break;
                    }
                    if key >> 3 == field {
                        out.push(&buf[at..end]);
                    }
                    at = end;
                }
                _ => break,
            }
        }
        out
    }
    if cid.codec() != 0x70 {
        return Vec::new();
    }
    fields(block, 2)
        .into_iter()
        .filter_map(|link| fields(link, 1).first().and_then(|h| Cid::try_from(*h).ok()))
        .collect()
}

async fn kubo_blocks(kubo: &Kubo, root: &str) -> Vec<(Cid, Bytes)> {
    let refs = kubo
        .call_ndjson(&format!("refs?arg={root}&recursive=true&unique=true"))
        .await;
    let mut cids = vec![root.to_string()];
    cids.extend(refs.iter().map(|r| r["Ref"].as_str().unwrap().to_string()));
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(cids.len());
    for c in cids {
        let data = http
            .post(format!("{}/api/v0/block/get?arg={c}", kubo.api_url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((c.parse().unwrap(), data));
    }
    out
}

async fn node(source: Arc<MemoryBlockSource>) -> (IpfsSwarm, Multiaddr) {
    let config = SwarmConfig::new(
        Keypair::generate_ed25519(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    let node = IpfsSwarm::start(config, source).await.unwrap();
    let addr = node.listen_addrs().await.unwrap().remove(0);
    (node, addr)
}

#[tokio::main]
async fn main() {
    let mb: usize = std::env::var("BITSWAP_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tmp = common::temp();
    let k1 = Kubo::start(&tmp.path().join("k1")).await;
    let data: Vec<u8> = (0..mb * 1024 * 1024)
        .map(|_| rand::random::<u8>())
        .collect();
    let root_text = k1.add("big.bin", &data).await;
    drop(data);
    let root: Cid = root_text.parse().unwrap();
    let blocks = kubo_blocks(&k1, &root_text).await;
    let total: usize = blocks.iter().map(|(_, b)| b.len()).sum();

    // Ours: A serves, B walks the DAG.
    let a_source = Arc::new(MemoryBlockSource::new());
    for (cid, block) in &blocks {
        a_source.insert(*cid, block.clone());
    }
    drop(blocks);
    let (a, a_addr) = node(a_source).await;
    let (b, _) = node(Arc::new(MemoryBlockSource::new())).await;
    b.connect(a_addr).await.unwrap();
    let start = Instant::now();
    let mut level = vec![root];
    let mut fetched = 0usize;
    let mut bytes = 0usize;
    while !level.is_empty() {
        let mut next = Vec::new();
        let mut stream = b.get_blocks(level);
        while let Some(item) = stream.next().await {
            let (cid, block) = item.expect("every block arrives");
            fetched += 1;
            bytes += block.len();
            next.extend(links(&cid, &block));
        }
        level = next;
    }
    let ours = start.elapsed();
    assert_eq!(bytes, total, "our walk fetched the whole DAG");
    a.stop().await;
    b.stop().await;

    // Kubo: K2 pins what K1 has.
    let k2 = Kubo::start(&tmp.path().join("k2")).await;
    k2.connect(&k1).await;
    let start = Instant::now();
    let res = reqwest::Client::new()
        .post(format!("{}/api/v0/pin/add?arg={root_text}", k2.api_url()))
        .timeout(Duration::from_secs(1800))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let _ = res.bytes().await.unwrap();
    let kubo = start.elapsed();

    let rate = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
    println!("DAG of {mb} MiB file: {fetched} blocks, {total} bytes");
    println!("| fetcher | time | MB/s |");
    println!("|---|---|---|");
    println!(
        "| pincluster from pincluster (get_blocks, level by level) | {:.2} s | {:.0} |",
        ours.as_secs_f64(),
        rate(ours)
    );
    println!(
        "| Kubo from Kubo (`pin/add`) | {:.2} s | {:.0} |",
        kubo.as_secs_f64(),
        rate(kubo)
    );
    println!(
        "| ratio (Kubo time / ours) | {:.2}x | |",
        kubo.as_secs_f64() / ours.as_secs_f64()
    );
}
