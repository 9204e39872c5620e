//! Writes a long pin/unpin history into a stopped peer's folder, the way
//! the peer's own commits would (signed deltas of 1,000 changes), for
//! `benches/compaction.sh`: `OPS` operations that leave `LIVE` live pins
//! (`(OPS + LIVE) / 2` pins, then all but `LIVE` of them unpinned).
//!
//! Run: `cargo bench --bench history -- DIR LIVE OPS`.
#![allow(clippy::print_stdout)] // the figures are a report for a human

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cid::Cid;
use cid::multihash::Multihash;
use pincluster::config::Config;
use pincluster::consensus::{PeerSigner, PeerVerifier};
use pincluster::identity::Identity;
use pincluster::state::pin_key;
use pincluster::types::{Pin, PinOptions};
use pincluster_crdt::store::FjallOptions;
use sha2::{Digest, Sha256};

/// Changes per delta: the default `max_batch_size`.
const BATCH: usize = 1_000;
/// The writer's block cache.
const WRITER_CACHE_BYTES: u64 = 2 << 30;

fn cid(i: usize) -> Cid {
    let digest = Sha256::digest(format!("history-{i}"));
    Cid::new_v1(0x55, Multihash::wrap(0x12, &digest).expect("32 bytes fit"))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [dir, live, ops] = &args[..] else {
        eprintln!("usage: history DIR LIVE OPS");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let live: usize = live.parse().expect("LIVE");
    let ops: usize = ops.parse().expect("OPS");
    assert!(
        ops >= live && (ops - live).is_multiple_of(2),
        "OPS - LIVE must be even"
    );
    let pinned = (ops + live) / 2;
    let config = Config::load(dir).expect("service.json").config;
    let identity = Identity::load(dir).expect("identity.json");
    let mut engine = pincluster::folder::open_engine(
        &config.datastore.fjall.path(dir),
        // The writer only sets the stage, so it reads the growing store
        // through a large block cache: with the peer's 8 MiB, each commit
        // reloaded (and checksummed) the tables' index and data blocks for
        // every key it touched, and 10,000,000 operations took hours.
        FjallOptions {
            cache_bytes: WRITER_CACHE_BYTES,
            ..config.datastore.fjall.store_options()
        },
        Arc::new(PeerSigner::new(identity.keypair.clone())),
        Arc::new(PeerVerifier::new(
            config.consensus.crdt.trusted_peers.clone(),
            identity.peer_id,
        )),
    )
    .expect("open the store");
    let started = Instant::now();
    for start in (0..pinned).step_by(BATCH) {
        let mut batch = engine.batch();
        for i in start..(start + BATCH).min(pinned) {
            let options = PinOptions {
                replication_factor_min: -1,
                replication_factor_max: -1,
                ..PinOptions::default()
            };
            let pin = Pin::new(cid(i), options);
            batch
                .put(pin_key(&pin.cid), pin.to_state_bytes())
                .expect("fits");
        }
        engine.commit(batch).expect("commit");
    }
    for start in (live..pinned).step_by(BATCH) {
        let mut batch = engine.batch();
        for i in start..(start + BATCH).min(pinned) {
            batch.delete(pin_key(&cid(i))).expect("fits");
        }
        engine.commit(batch).expect("commit");
    }
    println!(
        "wrote {pinned} pins and {} unpins ({ops} operations, {live} live) in {:.1} s",
        pinned - live,
        started.elapsed().as_secs_f64()
    );
}
