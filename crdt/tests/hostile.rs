//! Bad input: every malformed, forged or oversized block is refused with a
//! typed error, never panics, and leaves the replica exactly as it was.

mod common;

use common::*;
use pincluster_crdt::store::{MemoryStore, Store};
use pincluster_crdt::{
    Block, BlockError, Cid, Delete, Engine, Error, FORMAT_VERSION, Head, Limits, Merged, Put,
    Received, VerifyError, cid_of,
};
use proptest::prelude::*;

type Observed = (Vec<Head>, Vec<(Vec<u8>, Vec<u8>)>, Vec<Cid>, bool);

/// Everything a reader could observe of a replica.
fn observe<S: Store>(e: &Engine<S>) -> Observed {
    (e.heads(), state(e), e.wanted(100).unwrap(), e.has_ready())
}

/// A replica with some history, and one of its blocks.
fn seeded() -> (Engine<MemoryStore>, Cid, Vec<u8>) {
    let mut a = memory_replica(1);
    let mut batch = a.batch();
    batch.put("alpha", "1").unwrap();
    batch.put("beta", "2").unwrap();
    a.commit(batch).unwrap();
    del(&mut a, "alpha");
    let (cid, bytes) = all_blocks(&a).remove(0);
    (a, cid, bytes)
}

fn block(links: Vec<Cid>, priority: u64) -> Block {
    Block {
        v: FORMAT_VERSION,
        links,
        priority,
        puts: vec![Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }],
        dels: vec![],
        author: vec![],
        sig: vec![],
    }
}

fn seal(b: Block) -> (Cid, Vec<u8>) {
    let (cid, bytes, _) = b
        .seal(Author::from_seed(9).as_ref(), &Limits::default())
        .unwrap();
    (cid, bytes)
}

fn refuse(target: &mut Engine<MemoryStore>, cid: &Cid, bytes: &[u8]) -> BlockError {
    let before = observe(target);
    let err = match target.receive(cid, bytes) {
        Err(Error::Block(e)) => e,
        other => panic!("expected a block error, got {other:?}"),
    };
    assert_eq!(
        observe(target),
        before,
        "a refused block changed the replica"
    );
    err
}

#[test]
fn bytes_that_do_not_hash_to_the_cid_are_refused() {
    let (_, cid, mut bytes) = seeded();
    let mut b = memory_replica(2);
    bytes.push(0);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::HashMismatch { .. }
    ));
}

#[test]
fn only_cidv1_dag_cbor_sha256_addresses_a_block() {
    let (_, cid, bytes) = seeded();
    let mut b = memory_replica(2);
    let raw = Cid::new_v1(0x55, *cid.hash());
    assert!(matches!(
        refuse(&mut b, &raw, &bytes),
        BlockError::UnsupportedCid(_)
    ));
}

#[test]
fn unknown_format_versions_are_refused() {
    let mut b = memory_replica(2);
    let mut future = block(vec![], 1);
    future.v = 2;
    let (cid, bytes) = seal(future);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::UnsupportedVersion(2)
    ));
}

#[test]
fn missing_wrong_or_untrusted_signatures_are_refused() {
    let mut b = memory_replica(2);
    let (cid, bytes) = seal(block(vec![], 1));
    let mut decoded: Block = serde_ipld_dagcbor::from_slice(&bytes).unwrap();

    decoded.sig = vec![];
    let unsigned = serde_ipld_dagcbor::to_vec(&decoded).unwrap();
    let err = refuse(&mut b, &cid_of(&unsigned), &unsigned);
    assert!(
        matches!(err, BlockError::Signature(VerifyError::BadSignature)),
        "{err}"
    );

    // Signed by 9, claiming to be by 1.
    let (_, signed, _) = block(vec![], 1)
        .seal(Author::from_seed(9).as_ref(), &Limits::default())
        .unwrap();
    let mut forged: Block = serde_ipld_dagcbor::from_slice(&signed).unwrap();
    forged.author = signed_author(1);
    let forged = serde_ipld_dagcbor::to_vec(&forged).unwrap();
    let err = refuse(&mut b, &cid_of(&forged), &forged);
    assert!(
        matches!(err, BlockError::Signature(VerifyError::BadSignature)),
        "{err}"
    );

    decoded.author = b"not a key".to_vec();
    let garbage = serde_ipld_dagcbor::to_vec(&decoded).unwrap();
    let err = refuse(&mut b, &cid_of(&garbage), &garbage);
    assert!(
        matches!(err, BlockError::Signature(VerifyError::MalformedAuthor)),
        "{err}"
    );

    let trusted = Author::from_seed(1);
    let mut strict = Engine::open(
        MemoryStore::new(),
        Author::from_seed(1),
        Trust::only(&[&trusted]),
        Limits::default(),
    )
    .unwrap();
    let err = refuse(&mut strict, &cid, &bytes);
    assert!(
        matches!(err, BlockError::Signature(VerifyError::Untrusted)),
        "{err}"
    );
}

fn signed_author(seed: u8) -> Vec<u8> {
    use pincluster_crdt::Signer;
    Author::from_seed(seed).author().to_vec()
}

#[test]
fn malformed_deltas_are_refused() {
    let mut b = memory_replica(2);
    let parent = cid_of(b"some parent");

    let mut unsorted = block(vec![], 1);
    unsorted.puts.insert(
        0,
        Put {
            key: b"z".to_vec(),
            value: vec![],
        },
    );
    let (cid, bytes) = seal(unsorted);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::Unsorted("puts")
    ));

    let mut dup_links = block(vec![parent, parent], 2);
    dup_links.links.sort();
    let (cid, bytes) = seal(dup_links);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::Unsorted("links")
    ));

    let mut empty = block(vec![], 1);
    empty.puts.clear();
    let (cid, bytes) = seal(empty);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::EmptyDelta
    ));

    let mut empty_delete = block(vec![], 1);
    empty_delete.dels.push(Delete {
        key: b"k".to_vec(),
        ids: vec![],
    });
    let (cid, bytes) = seal(empty_delete);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::EmptyDelete
    ));

    let raw_link = Cid::new_v1(0x55, *parent.hash());
    let (cid, bytes) = seal(block(vec![raw_link], 2));
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::UnsupportedLink(_)
    ));
}

#[test]
fn absurd_priorities_are_refused() {
    let mut b = memory_replica(2);
    for (links, priority) in [
        (vec![], 0),
        (vec![], 5),
        (vec![cid_of(b"p")], 1),
        (vec![cid_of(b"p")], u64::MAX),
    ] {
        let (cid, bytes) = seal(block(links, priority));
        assert!(matches!(
            refuse(&mut b, &cid, &bytes),
            BlockError::InvalidPriority { .. }
        ));
    }
}

#[test]
fn a_priority_that_skips_heights_is_refused_at_merge_with_its_descendants() {
    let mut b = memory_replica(2);
    let (root, root_bytes) = seal(block(vec![], 1));
    let (liar, liar_bytes) = seal(block(vec![root], 1_000_000));
    let (child, child_bytes) = seal(block(vec![liar], 1_000_001));
    assert!(matches!(
        b.receive(&child, &child_bytes).unwrap(),
        Received::Pending { .. }
    ));
    assert!(matches!(
        b.receive(&liar, &liar_bytes).unwrap(),
        Received::Pending { .. }
    ));
    assert_eq!(b.receive(&root, &root_bytes).unwrap(), Received::Ready);
    let mut outcomes = Vec::new();
    b.merge_all(|m| outcomes.push(m)).unwrap();
    assert!(matches!(outcomes[0], Merged::Applied { .. }));
    assert!(matches!(
        outcomes[1],
        Merged::Rejected {
            error: BlockError::InvalidPriority {
                priority: 1_000_000,
                expected: Some(2)
            },
            ..
        }
    ));
    assert_eq!(outcomes.len(), 2);
    // The state is the root's alone; the refused branch is gone for good.
    assert_eq!(b.heads().len(), 1);
    assert_eq!(b.heads()[0].cid, root);
    assert_eq!(b.block(&liar).unwrap(), None);
    assert_eq!(b.block(&child).unwrap(), None);
    assert_eq!(
        b.receive(&child, &child_bytes).unwrap(),
        Received::PreviouslyRejected
    );
    assert!(b.missing(&[liar, child]).unwrap().is_empty());
    // A new block building on the refused one is refused too.
    let mut other = block(vec![liar], 1_000_001);
    other.puts[0].value = b"other".to_vec();
    let (grandchild, gc_bytes) = seal(other);
    assert!(matches!(
        refuse(&mut b, &grandchild, &gc_bytes),
        BlockError::RejectedParent(_)
    ));
}

#[test]
fn oversized_blocks_links_and_deltas_are_refused() {
    let limits = Limits {
        max_block_bytes: 2_000,
        max_ops: 3,
        max_links: 2,
        ..Limits::default()
    };
    let mut b = Engine::open(
        MemoryStore::new(),
        Author::from_seed(2),
        Trust::everyone(),
        limits,
    )
    .unwrap();

    let mut big = block(vec![], 1);
    big.puts[0].value = vec![0; 5_000];
    let (cid, bytes) = seal(big);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::TooLarge { .. }
    ));

    let mut links: Vec<Cid> = (0..3u8).map(|i| cid_of(&[i])).collect();
    links.sort();
    let (cid, bytes) = seal(block(links, 2));
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::TooManyLinks { .. }
    ));

    let mut many = block(vec![], 1);
    many.puts = (0..4u8)
        .map(|i| Put {
            key: vec![i],
            value: vec![],
        })
        .collect();
    let (cid, bytes) = seal(many);
    assert!(matches!(
        refuse(&mut b, &cid, &bytes),
        BlockError::TooManyOps { .. }
    ));
}

#[test]
fn a_block_can_never_be_its_own_ancestor() {
    // A CID hashes the bytes that list the parents, so a block cannot name
    // itself or a descendant: a block claiming a parent it cannot have just
    // waits for it and holds up nothing else.
    let mut b = memory_replica(2);
    let (cid, bytes) = seal(block(vec![cid_of(b"a block nobody has")], 2));
    assert!(matches!(
        b.receive(&cid, &bytes).unwrap(),
        Received::Pending { .. }
    ));
    put(&mut b, "independent", "write");
    assert_eq!(get(&b, "independent").as_deref(), Some("write"));
    assert_eq!(get(&b, "k"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (mut a, _, _) = seeded();
        let before = observe(&a);
        prop_assert!(a.receive(&cid_of(&bytes), &bytes).is_err());
        prop_assert_eq!(observe(&a), before);
    }

    #[test]
    fn mutated_valid_blocks_are_refused(
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        kind in 0..3u8,
    ) {
        let (_, cid, bytes) = seeded();
        let mut b = memory_replica(2);
        let before = observe(&b);
        let i = pos.index(bytes.len());
        let mut mutated = bytes.clone();
        match kind {
            0 => mutated[i] ^= byte.max(1),
            1 => mutated.truncate(i),
            _ => mutated.insert(i, byte),
        }
        prop_assert!(b.receive(&cid, &mutated).is_err(), "mutated bytes under the original CID");
        prop_assert!(b.receive(&cid_of(&mutated), &mutated).is_err(), "mutated bytes under their own CID");
        prop_assert_eq!(observe(&b), before);
    }
}
