//! Signed snapshots: a replica that installs one, whatever it already
//! holds (concurrent branches included), ends with the state and heads a
//! full replay of both sides' blocks gives; an interrupted install reopens
//! consistent; a snapshot by an untrusted producer or with a bad chunk is
//! refused and changes nothing.

mod common;

use common::*;
use pincluster_crdt::store::{FjallStore, MemoryStore, Store, Table};
use pincluster_crdt::{
    ChunkKind, Element, Engine, Error, Limits, Manifest, SnapshotError, VerifyError,
};
use proptest::prelude::*;

/// Copies a manifest's chunks from the producer into `to`, each checked
/// against its CID, as the network join does.
fn stage<S: Store, T: Store>(from: &Engine<S>, manifest: &[u8], to: &Engine<T>) {
    let m = Manifest::decode(manifest, Trust::everyone().as_ref()).unwrap();
    for (kind, cids) in [
        (ChunkKind::Elements, &m.chunks),
        (ChunkKind::Context, &m.context),
    ] {
        for cid in cids {
            let bytes = from.block(cid).unwrap().expect("producer holds its chunks");
            to.stage_chunk(kind, cid, &bytes).unwrap();
        }
    }
}

fn elements<S: Store>(e: &Engine<S>) -> Vec<Element> {
    e.reader().elements().collect::<Result<_, _>>().unwrap()
}

fn markers<S: Store>(e: &Engine<S>) -> usize {
    e.reader().processed().count()
}

/// Everything a user or a later merge could observe.
fn assert_same<S: Store, T: Store>(a: &Engine<S>, b: &Engine<T>, what: &str) {
    assert_eq!(state(a), state(b), "{what}: values differ");
    assert_eq!(elements(a), elements(b), "{what}: live elements differ");
    assert_eq!(a.heads(), b.heads(), "{what}: heads differ");
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u8, u8),
    Del(usize, u8),
    Sync(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..6u8, 0..4u8).prop_map(|(r, k, v)| Op::Put(r, k, v)),
        2 => (0..3usize, 0..6u8).prop_map(|(r, k)| Op::Del(r, k)),
        2 => (0..3usize, 0..3usize).prop_map(|(a, b)| Op::Sync(a, b)),
    ]
}

/// Applies `ops`. With `joined` set, that replica installed a snapshot
/// of replica 0 and lacks the history below it, as a network peer would:
/// whoever syncs from it first syncs from replica 0, which has it.
fn run(replicas: &mut [Engine<MemoryStore>], ops: &[Op], joined: Option<usize>) {
    for op in ops {
        if let (Op::Sync(a, b), Some(j)) = (op, joined)
            && *a == j
            && *b != 0
        {
            run(replicas, &[Op::Sync(0, *b)], None);
        }
        match *op {
            Op::Put(r, k, v) => put(&mut replicas[r], &format!("k{k}"), &format!("v{v}")),
            Op::Del(r, k) => {
                if get(&replicas[r], &format!("k{k}")).is_some() {
                    del(&mut replicas[r], &format!("k{k}"));
                }
            }
            Op::Sync(a, b) if a != b => {
                let (from, to) = if a < b {
                    let (l, r) = replicas.split_at_mut(b);
                    (&l[a], &mut r[0])
                } else {
                    let (l, r) = replicas.split_at_mut(a);
                    (&r[0], &mut l[b])
                };
                sync(from, to);
            }
            Op::Sync(..) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Replica 0 snapshots; replica 1, holding its own concurrent branches
    /// (and part of 0's history), installs it. The result equals a replica
    /// that replayed every block of both; after more concurrent writes on
    /// both sides and a sync, they still agree.
    #[test]
    fn install_into_concurrent_branches_equals_full_replay(
        ops in proptest::collection::vec(op(), 1..40),
        after in proptest::collection::vec(op(), 0..15),
    ) {
        let mut r: Vec<_> = (1..=3).map(memory_replica).collect();
        run(&mut r, &ops, None);
        if r[0].heads().is_empty() {
            return Ok(());
        }
        let mut replay = memory_replica(9);
        sync(&r[0], &mut replay);
        sync(&r[1], &mut replay);

        let (manifest_cid, manifest) = r[0].build_snapshot(1).unwrap();
        prop_assert_eq!(pincluster_crdt::cid_of(&manifest), manifest_cid);
        stage(&r[0], &manifest, &r[1]);
        let before = state(&r[1]);
        let installed = r[1].install_snapshot(&manifest).unwrap();
        assert_same(&r[1], &replay, "after install");
        prop_assert_eq!(installed.keys as usize, state(&replay).len());
        let changed = state(&replay)
            .iter()
            .filter(|kv| !before.contains(kv))
            .count()
            + before
                .iter()
                .filter(|(k, _)| !state(&replay).iter().any(|(rk, _)| rk == k))
                .count();
        prop_assert_eq!(installed.changed_keys as usize, changed);

        // Life goes on: later writes anywhere still converge.
        run(&mut r, &after, Some(1));
        let mut replay = memory_replica(9);
        for replica in &r {
            sync(replica, &mut replay);
        }
        let mut joined = std::mem::replace(&mut r[1], memory_replica(2));
        for i in [0, 2] {
            sync(&r[i], &mut joined);
        }
        sync(&replay, &mut joined);
        assert_same(&joined, &replay, "after more writes");
    }
}

#[test]
fn a_fresh_replica_installs_and_walks_only_above_the_frontier() {
    let mut a = memory_replica(1);
    for i in 0..50 {
        put(&mut a, &format!("k{i}"), "v");
    }
    del(&mut a, "k7");
    let (_, manifest) = a.build_snapshot(1).unwrap();
    let below: Vec<_> = a.reader().processed().map(|h| h.unwrap().cid).collect();
    put(&mut a, "late", "x");

    let mut c = memory_replica(3);
    stage(&a, &manifest, &c);
    let installed = c.install_snapshot(&manifest).unwrap();
    assert_eq!(installed.keys, 49);
    assert_eq!(installed.changed_keys, 49);
    assert_eq!(get(&c, "k7"), None);
    let merged = sync(&a, &mut c);
    assert_eq!(merged, 1, "only the delta above the frontier is fetched");
    assert_same(&c, &a, "after sync");
    for cid in below {
        assert!(c.block(&cid).unwrap().is_none(), "history was not copied");
    }
    // The joiner serves the manifest it installed, chunks included.
    assert_eq!(c.served_snapshot().unwrap().as_deref(), Some(&manifest[..]));
    assert_eq!(
        c.reader().served_snapshot().unwrap().as_deref(),
        Some(&manifest[..])
    );
    let mut d = memory_replica(4);
    stage(&c, &manifest, &d);
    d.install_snapshot(&manifest).unwrap();
    sync(&a, &mut d);
    assert_same(&d, &a, "second-hand join");
}

#[test]
fn a_new_snapshot_replaces_the_served_one_and_its_chunks() {
    let mut a = memory_replica(1);
    put(&mut a, "k", "1");
    let (_, first) = a.build_snapshot(1).unwrap();
    let first = Manifest::decode(&first, Trust::everyone().as_ref()).unwrap();
    put(&mut a, "k", "2");
    let (_, second) = a.build_snapshot(2).unwrap();
    assert_eq!(a.served_snapshot().unwrap().as_deref(), Some(&second[..]));
    for cid in first.chunks.iter().chain(&first.context) {
        assert!(!a.has_block(cid).unwrap(), "old chunk {cid} kept");
    }
}

/// Builds a producer trusted or not by the joiner, and a joiner with state.
fn producer_and_joiner(trusted: bool) -> (Engine<MemoryStore>, Engine<MemoryStore>, Vec<u8>) {
    let mut a = memory_replica(1);
    for i in 0..20 {
        put(&mut a, &format!("k{i}"), "a");
    }
    let (_, manifest) = a.build_snapshot(1).unwrap();
    let me = Author::from_seed(2);
    let trust = if trusted {
        Trust::only(&[&me, &Author::from_seed(1)])
    } else {
        Trust::only(&[&me])
    };
    let mut j = Engine::open(MemoryStore::new(), me, trust, Limits::default()).unwrap();
    put(&mut j, "mine", "j");
    put(&mut j, "k3", "j");
    (a, j, manifest)
}

/// Values, marker count and head count of a replica.
type Snapshot = (Vec<(Vec<u8>, Vec<u8>)>, usize, usize);

fn assert_untouched(j: &Engine<MemoryStore>, before: &Snapshot) {
    assert_eq!(state(j), before.0, "values changed");
    assert_eq!(markers(j), before.1, "markers changed");
    assert_eq!(j.heads().len(), before.2, "heads changed");
    assert_eq!(j.served_snapshot().unwrap(), None);
}

#[test]
fn a_snapshot_by_an_untrusted_producer_is_refused_and_changes_nothing() {
    let (a, mut j, manifest) = producer_and_joiner(false);
    let before = (state(&j), markers(&j), j.heads().len());
    assert!(matches!(
        j.check_manifest(&manifest),
        Err(Error::Snapshot(SnapshotError::Signature(
            VerifyError::Untrusted
        )))
    ));
    stage(&a, &manifest, &j);
    let err = j.install_snapshot(&manifest).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Snapshot(SnapshotError::Signature(VerifyError::Untrusted))
        ),
        "{err}"
    );
    assert_untouched(&j, &before);
}

#[test]
fn a_tampered_manifest_is_refused_and_changes_nothing() {
    let (a, mut j, manifest) = producer_and_joiner(true);
    let before = (state(&j), markers(&j), j.heads().len());
    stage(&a, &manifest, &j);
    // Claim one key fewer: the signature no longer matches.
    let mut m = Manifest::decode(&manifest, Trust::everyone().as_ref()).unwrap();
    m.keys -= 1;
    let forged = serde_ipld_dagcbor::to_vec(&m).unwrap();
    let err = j.install_snapshot(&forged).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Snapshot(SnapshotError::Signature(VerifyError::BadSignature))
        ),
        "{err}"
    );
    assert_untouched(&j, &before);
    j.install_snapshot(&manifest).unwrap();
    assert_eq!(get(&j, "mine").as_deref(), Some("j"));
}

#[test]
fn a_bad_chunk_is_refused_and_a_missing_one_blocks_the_install() {
    let (a, mut j, manifest) = producer_and_joiner(true);
    let before = (state(&j), markers(&j), j.heads().len());
    let m = Manifest::decode(&manifest, Trust::everyone().as_ref()).unwrap();
    let cid = m.chunks[0];
    let mut bytes = a.block(&cid).unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let err = j
        .stage_chunk(ChunkKind::Elements, &cid, &bytes)
        .unwrap_err();
    assert!(
        matches!(err, Error::Snapshot(SnapshotError::HashMismatch { .. })),
        "{err}"
    );
    // A context chunk offered as an element chunk does not decode as one.
    let ctx = m.context[0];
    let ctx_bytes = a.block(&ctx).unwrap().unwrap();
    assert!(
        j.stage_chunk(ChunkKind::Elements, &ctx, &ctx_bytes)
            .is_err()
    );
    j.stage_chunk(ChunkKind::Context, &ctx, &ctx_bytes).unwrap();
    let err = j.install_snapshot(&manifest).unwrap_err();
    assert!(
        matches!(err, Error::Snapshot(SnapshotError::MissingChunk(c)) if c == cid),
        "{err}"
    );
    assert_untouched(&j, &before);
}

#[test]
fn an_install_killed_at_any_write_reopens_consistent_and_complete() {
    // Enough elements and markers for several chunks and write batches.
    let mut a = memory_replica(1);
    for round in 0..30 {
        let mut b = a.batch();
        for i in 0..800 {
            b.put(format!("key-{round:02}-{i:03}"), "a").unwrap();
        }
        a.commit(b).unwrap();
    }
    for i in 0..300 {
        let mut b = a.batch();
        b.delete(format!("key-00-{i:03}")).unwrap();
        a.commit(b).unwrap();
    }
    // The joiner has a concurrent branch of its own and part of a's history.
    let base = MemoryStore::new();
    let mut j = Engine::open(
        base.clone(),
        Author::from_seed(2),
        Trust::everyone(),
        Limits::default(),
    )
    .unwrap();
    put(&mut j, "key-05-005", "j");
    put(&mut j, "mine", "j");
    let (_, manifest) = a.build_snapshot(1).unwrap();
    stage(&a, &manifest, &j);
    drop(j);

    let mut replay = memory_replica(9);
    sync(&a, &mut replay);
    {
        let j = Engine::open(
            copy_store(&base),
            Author::from_seed(2),
            Trust::everyone(),
            Limits::default(),
        )
        .unwrap();
        sync(&j, &mut replay);
    }

    let mut crashed_mid_install = 0;
    for kill_at in 0.. {
        let (mut j, disk) = killed_after(&base, 2, kill_at);
        let outcome = j.install_snapshot(&manifest);
        drop(j);
        let reopened = Engine::open(
            disk,
            Author::from_seed(2),
            Trust::everyone(),
            Limits::default(),
        )
        .unwrap();
        match outcome {
            Ok(_) => {
                assert_same(&reopened, &replay, "uninterrupted install");
                break;
            }
            Err(Error::Store(_)) => {
                // Either as before (killed before the plan landed) or
                // finished by the reopen.
                if reopened.served_snapshot().unwrap().is_some() {
                    crashed_mid_install += 1;
                    assert_same(&reopened, &replay, &format!("killed at write {kill_at}"));
                } else {
                    assert_eq!(get(&reopened, "mine").as_deref(), Some("j"));
                    assert_eq!(reopened.heads().len(), 1, "killed at write {kill_at}");
                    assert_eq!(elements(&reopened).len(), 2, "killed at write {kill_at}");
                }
            }
            Err(e) => panic!("killed at write {kill_at}: {e}"),
        }
    }
    assert!(
        crashed_mid_install >= 3,
        "only {crashed_mid_install} kills landed after the plan"
    );
}

/// A joiner's staged chunks do not pile up in RAM: every few MiB they are
/// written out to the blocks table's files, and staging waits for that. A
/// join of 1,000,000 pins stages some 330 MB; held in the table's memtable
/// and the sealed ones waiting for their flush, that was most of the
/// joiner's memory while it fetched.
#[test]
fn staged_chunks_reach_the_table_files_as_they_come() {
    let mut producer = memory_replica(1);
    // About 20 MiB of values that do not compress: under the store's
    // 32 MiB memtable, so without the flushes nothing would reach a file.
    for round in 0..64 {
        let mut b = producer.batch();
        for i in 0..80 {
            let value: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
            b.put(format!("key-{round:02}-{i:02}"), value).unwrap();
        }
        producer.commit(b).unwrap();
    }
    let (_, manifest) = producer.build_snapshot(1).unwrap();
    let m = Manifest::decode(&manifest, Trust::everyone().as_ref()).unwrap();
    let staged: u64 = m
        .chunks
        .iter()
        .chain(&m.context)
        .map(|cid| producer.block(cid).unwrap().unwrap().len() as u64)
        .sum();

    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Default::default()).unwrap();
    let mut joiner = Engine::open(
        store.clone(),
        Author::from_seed(2),
        Trust::everyone(),
        Limits::default(),
    )
    .unwrap();
    stage(&producer, &manifest, &joiner);
    let on_disk = store.table_disk_space(Table::Blocks);
    assert!(
        on_disk * 2 > staged,
        "{on_disk} of {staged} staged bytes reached the table's files"
    );
    // The chunks written out are the ones installed.
    joiner.install_snapshot(&manifest).unwrap();
    assert_same(&joiner, &producer, "after install");
}
