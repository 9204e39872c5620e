//! A chain 100,000 deltas deep, delivered newest first (the order a walk
//! from the head produces, and the worst case: every block waits for its
//! parent, then all of them merge in one cascade). The engine must neither
//! recurse (test threads have 2 MiB stacks) nor keep the chain in memory:
//! pending blocks live in fjall and the ready queue never holds more than
//! one of them.

mod common;

use common::*;
use pincluster_crdt::{Block, Cid, FORMAT_VERSION, Limits, Merged, Put, Received};

const DEPTH: u64 = 100_000;

#[test]
fn a_chain_100k_deep_merges_when_its_root_arrives_last() {
    let author = Author::from_seed(1);
    let limits = Limits::default();
    // Build the chain bottom-up, as one writer would.
    let mut chain: Vec<(Cid, Vec<u8>)> = Vec::with_capacity(DEPTH as usize);
    for height in 1..=DEPTH {
        let block = Block {
            v: FORMAT_VERSION,
            links: chain.last().map(|(c, _)| vec![*c]).unwrap_or_default(),
            priority: height,
            puts: vec![Put {
                key: format!("key-{}", height % 1000).into_bytes(),
                value: height.to_be_bytes().to_vec(),
            }],
            dels: vec![],
            author: vec![],
            sig: vec![],
        };
        let (cid, bytes, _) = block.seal(author.as_ref(), &limits).unwrap();
        chain.push((cid, bytes));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut replica = fjall_replica(dir.path(), 2);
    let (root, rest) = chain.split_first().unwrap();
    for (cid, bytes) in rest.iter().rev() {
        let outcome = replica.receive(cid, bytes).unwrap();
        assert!(matches!(outcome, Received::Pending { .. }));
    }
    assert_eq!(replica.wanted(10).unwrap(), vec![root.0]);
    assert!(replica.heads().is_empty());
    assert_eq!(replica.receive(&root.0, &root.1).unwrap(), Received::Ready);

    let mut merged = 0u64;
    while let Some(m) = replica.merge_next().unwrap() {
        assert!(matches!(m, Merged::Applied { .. }));
        merged += 1;
    }
    assert_eq!(merged, DEPTH);
    let heads = replica.heads();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].height, DEPTH);
    assert_eq!(heads[0].cid, chain.last().unwrap().0);
    // The last write of each key wins: key-0 was last written at 100,000.
    assert_eq!(
        replica.get(b"key-0").unwrap(),
        Some(DEPTH.to_be_bytes().to_vec())
    );
    assert_eq!(
        replica.get(b"key-1").unwrap(),
        Some(99_001u64.to_be_bytes().to_vec())
    );
    assert_eq!(state(&replica).len(), 1000);
}
