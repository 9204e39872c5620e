//! Engine throughput on fjall, against the targets of the CRDT issue:
//! - local commit: ≥ 200,000 key puts/s in batches of 1,000;
//! - merging a received chain of 10,000 deltas × 100 puts: ≥ 100,000 puts/s;
//! - iterating 1,000,000 live keys: ≥ 1,000,000 keys/s.
//!
//! Run: `cargo bench -p pincluster-crdt --bench engine`. Figures go to
//! BENCHMARKS.md. Memory is measured by the `memory` bench.

// The same allocator as the pincluster binary, so the figures are the
// product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Author, fjall_replica};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pincluster_crdt::{Block, Cid, FORMAT_VERSION, Limits, Put};

const BATCH: usize = 1_000;
const CHAIN: usize = 10_000;
const PUTS_PER_DELTA: usize = 100;
const LIVE_KEYS: usize = 1_000_000;

/// A pin-sized value: pincluster stores a serialized pin of about this size.
fn value(i: usize) -> Vec<u8> {
    format!("{{\"cid\":\"bafy{i:059}\",\"replication_factor_min\":-1,\"name\":\"\"}}").into_bytes()
}

fn key(i: usize) -> Vec<u8> {
    format!("/pins/bafy{i:059}").into_bytes()
}

fn local_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("local_commit");
    group.throughput(Throughput::Elements(BATCH as u64));
    let dir = tempfile::tempdir().unwrap();
    let mut engine = fjall_replica(dir.path(), 1);
    let mut next = 0usize;
    // Keys and values are made outside the timed part: what is measured is
    // filling the batch and committing it (sign, encode, merge, fjall).
    group.bench_function("fjall_1000_puts_per_delta", |b| {
        b.iter_batched(
            || {
                let items: Vec<_> = (next..next + BATCH).map(|i| (key(i), value(i))).collect();
                next += BATCH;
                items
            },
            |items| {
                let mut batch = engine.batch();
                for (k, v) in items {
                    batch.put(k, v).unwrap();
                }
                engine.commit(batch).unwrap().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A chain of signed deltas, oldest first.
fn chain() -> Vec<(Cid, Vec<u8>)> {
    let author = Author::from_seed(1);
    let limits = Limits::default();
    let mut out: Vec<(Cid, Vec<u8>)> = Vec::with_capacity(CHAIN);
    for d in 0..CHAIN {
        let puts = (0..PUTS_PER_DELTA)
            .map(|p| {
                let i = d * PUTS_PER_DELTA + p;
                Put {
                    key: key(i),
                    value: value(i),
                }
            })
            .collect();
        let block = Block {
            v: FORMAT_VERSION,
            links: out.last().map(|(c, _)| vec![*c]).unwrap_or_default(),
            priority: d as u64 + 1,
            puts,
            dels: vec![],
            author: vec![],
            sig: vec![],
        };
        let (cid, bytes, _) = block.seal(author.as_ref(), &limits).unwrap();
        out.push((cid, bytes));
    }
    out
}

fn merge_chain(c: &mut Criterion) {
    let blocks = chain();
    let mut group = c.benchmark_group("merge_chain_10000x100");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements((CHAIN * PUTS_PER_DELTA) as u64));
    for (name, newest_first) in [("oldest_first", false), ("newest_first", true)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    let engine = fjall_replica(dir.path(), 2);
                    (dir, engine)
                },
                |(dir, mut engine)| {
                    let order: Box<dyn Iterator<Item = &(Cid, Vec<u8>)>> = if newest_first {
                        Box::new(blocks.iter().rev())
                    } else {
                        Box::new(blocks.iter())
                    };
                    for (cid, bytes) in order {
                        engine.receive(cid, bytes).unwrap();
                        while engine.merge_next().unwrap().is_some() {}
                    }
                    assert_eq!(engine.max_height(), CHAIN as u64);
                    (dir, engine)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn iterate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = fjall_replica(dir.path(), 1);
    let started = Instant::now();
    for chunk in 0..LIVE_KEYS / BATCH {
        let mut batch = engine.batch();
        for i in chunk * BATCH..(chunk + 1) * BATCH {
            batch.put(key(i), value(i)).unwrap();
        }
        engine.commit(batch).unwrap();
    }
    eprintln!("loaded {LIVE_KEYS} keys in {:?}", started.elapsed());
    let reader = engine.reader();
    let mut group = c.benchmark_group("iterate");
    group.sample_size(10);
    group.throughput(Throughput::Elements(LIVE_KEYS as u64));
    group.bench_function("1m_live_keys", |b| {
        b.iter(|| {
            let n = reader
                .iter()
                .try_fold(0usize, |n, e| e.map(|_| n + 1))
                .unwrap();
            assert_eq!(n, LIVE_KEYS);
            n
        })
    });
    group.finish();
}

criterion_group!(benches, local_commit, merge_chain, iterate);
criterion_main!(benches);
