//! Resident memory of a replica as its key count grows: loads keys into a
//! fjall store in steps and prints the process's resident set size after
//! each step and after a full scan. It should level off at fjall's caches
//! and write buffers instead of growing with the key count.
//!
//! Run: `cargo bench -p pincluster-crdt --bench memory`.

// The same allocator as the pincluster binary, so the figures are the
// product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;

use common::fjall_replica;

const STEPS: [usize; 5] = [100_000, 250_000, 500_000, 1_000_000, 2_000_000];

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

#[allow(clippy::print_stdout)] // a report for a human, like criterion's
fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test
    // --benches`) only checks that the target builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut engine = fjall_replica(dir.path(), 1);
    println!("keys        RSS after load   RSS after full scan");
    let mut loaded = 0;
    for target in STEPS {
        while loaded < target {
            let mut batch = engine.batch();
            for i in loaded..loaded + 1000 {
                batch
                    .put(
                        format!("/pins/bafy{i:059}"),
                        format!("{{\"cid\":\"bafy{i:059}\",\"replication_factor_min\":-1}}"),
                    )
                    .unwrap();
            }
            engine.commit(batch).unwrap();
            loaded += 1000;
        }
        let after_load = rss_mib();
        let n = engine.reader().iter().count();
        assert_eq!(n, loaded);
        println!(
            "{loaded:>9}   {after_load:>10.1} MiB   {:>10.1} MiB",
            rss_mib()
        );
    }
}
