//! History compaction: a replica that dropped the history below its
//! snapshot ends, under any further concurrent writes, syncs and
//! compactions, exactly where replicas that kept every block end; a peer
//! that asks for a dropped block takes the snapshot instead (even holding
//! branches of its own); a compaction killed at any write reopens
//! consistent; a snapshot by an untrusted producer offered in place of
//! dropped history changes nothing; on fjall the disk shrinks.

mod common;

use common::*;
use pincluster_crdt::store::{FjallStore, MemoryStore, Store, Table};
use pincluster_crdt::{
    ChunkKind, Cid, Compacted, Element, Engine, Error, Limits, Manifest, Received, SnapshotError,
    VerifyError,
};
use proptest::prelude::*;

fn elements<S: Store>(e: &Engine<S>) -> Vec<Element> {
    e.reader().elements().collect::<Result<_, _>>().unwrap()
}

/// Everything a user or a later merge could observe.
fn assert_same<S: Store, T: Store>(a: &Engine<S>, b: &Engine<T>, what: &str) {
    assert_eq!(state(a), state(b), "{what}: values differ");
    assert_eq!(elements(a), elements(b), "{what}: live elements differ");
    assert_eq!(a.heads(), b.heads(), "{what}: heads differ");
}

/// Copies a manifest's chunks from `from` into `to`, each checked against
/// its CID, as the network join does.
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

/// Walks `from`'s heads into `to`. Returns `false` if `from` lacks a block
/// `to` needs (compacted away), after merging what arrived.
fn walk<A: Store, B: Store>(from: &Engine<A>, to: &mut Engine<B>) -> bool {
    let heads: Vec<Cid> = from.heads().iter().map(|h| h.cid).collect();
    let mut queue = to.missing(&heads).unwrap();
    // Parents an earlier walk could not get: asked again, as the network
    // does from the engine's wanted list.
    queue.extend(to.wanted(usize::MAX).unwrap());
    let mut complete = true;
    while let Some(cid) = queue.pop() {
        let Some(bytes) = from.block(&cid).unwrap() else {
            complete = false;
            continue;
        };
        if let Received::Pending { missing } = to.receive(&cid, &bytes).unwrap() {
            queue.extend(missing);
        }
    }
    merge_all(to);
    complete
}

/// What a peer does on hearing `from`'s heads when `from` may have dropped
/// history: walk; when `from` lacks a block, install the snapshot `from`
/// serves, and walk again. A served snapshot may not cover the block (from
/// installed someone else's since); the network then waits for `from`'s
/// next periodic snapshot, which is taken here at once. Returns how many
/// snapshots were installed.
fn sync_or_join<A: Store, B: Store>(from: &mut Engine<A>, to: &mut Engine<B>) -> usize {
    let mut installs = 0;
    while !walk(from, to) {
        let manifest = match (installs, from.served_snapshot().unwrap()) {
            (0, Some(m)) => m,
            (0 | 1, _) => from.build_snapshot(7).unwrap().1,
            _ => panic!("a fresh snapshot did not cover the dropped history"),
        };
        stage(from, &manifest, to);
        to.install_snapshot(&manifest).unwrap();
        merge_all(to);
        installs += 1;
    }
    installs
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u8, u8),
    Del(usize, u8),
    Sync(usize, usize),
    /// Snapshot and compact (in the world that compacts).
    Compact(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..6u8, 0..4u8).prop_map(|(r, k, v)| Op::Put(r, k, v)),
        2 => (0..3usize, 0..6u8).prop_map(|(r, k)| Op::Del(r, k)),
        3 => (0..3usize, 0..3usize).prop_map(|(a, b)| Op::Sync(a, b)),
        1 => (0..3usize).prop_map(Op::Compact),
    ]
}

/// Two distinct replicas of `rs`, the first shared, the second mutable.
fn pair<S: Store>(rs: &mut [Engine<S>], a: usize, b: usize) -> (&mut Engine<S>, &mut Engine<S>) {
    assert_ne!(a, b);
    if a < b {
        let (l, r) = rs.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = rs.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

/// Applies one op. `compacting`: this world snapshots and drops history
/// on `Compact`, and syncs by [`sync_or_join`]; the other keeps every
/// block and syncs by plain walking.
fn apply(rs: &mut [Engine<MemoryStore>], op: &Op, compacting: bool) {
    match *op {
        Op::Put(r, k, v) => put(&mut rs[r], &format!("k{k}"), &format!("v{v}")),
        Op::Del(r, k) => {
            if get(&rs[r], &format!("k{k}")).is_some() {
                del(&mut rs[r], &format!("k{k}"));
            }
        }
        Op::Sync(a, b) if a != b => {
            let (from, to) = pair(rs, a, b);
            if compacting {
                sync_or_join(from, to);
            } else {
                assert!(walk(from, to), "a replica without compaction lacks a block");
            }
        }
        Op::Sync(..) => {}
        Op::Compact(r) if compacting && !rs[r].heads().is_empty() => {
            rs[r].build_snapshot(1).unwrap();
            rs[r].compact().unwrap();
        }
        Op::Compact(_) => {}
    }
}

fn open(store: MemoryStore, seed: u8) -> Engine<MemoryStore> {
    Engine::open(
        store,
        Author::from_seed(seed),
        Trust::everyone(),
        Limits::default(),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Three replicas write and sync; one snapshots and compacts. From
    /// then on the same concurrent writes, syncs and further compactions
    /// run in two worlds: one where compaction drops history (and peers
    /// that need it join from snapshots, holding branches of their own),
    /// one where every block is kept. After every step each replica holds
    /// the same values, live elements and heads in both worlds.
    #[test]
    fn a_compacted_replica_converges_with_full_history(
        ops in proptest::collection::vec(op(), 1..30),
        after in proptest::collection::vec(op(), 0..30),
        first in 0..3usize,
    ) {
        let stores: Vec<MemoryStore> = (0..3).map(|_| MemoryStore::new()).collect();
        let mut kept: Vec<_> = stores.iter().zip(1..).map(|(s, seed)| open(s.clone(), seed)).collect();
        for op in &ops {
            apply(&mut kept, op, false);
        }
        if kept[first].heads().is_empty() {
            return Ok(());
        }
        kept[first].build_snapshot(1).unwrap();
        let mut compacted: Vec<_> = stores.iter().zip(1..).map(|(s, seed)| open(copy_store(s), seed)).collect();
        let below = compacted[first].reader().processed().count() - compacted[first].heads().len();
        let done = compacted[first].compact().unwrap();
        prop_assert_eq!(done.blocks as usize, below, "every block below the frontier goes");
        prop_assert_eq!(compacted[first].compact().unwrap(), Compacted::default());
        assert_same(&compacted[first], &kept[first], "right after compaction");
        for (i, op) in after.iter().enumerate() {
            apply(&mut compacted, op, true);
            apply(&mut kept, op, false);
            for (r, (c, k)) in compacted.iter().zip(&kept).enumerate() {
                assert_same(c, k, &format!("replica {r} after step {i} {op:?}"));
            }
        }
        // Everyone hears from everyone: both worlds agree on one state.
        for (a, b) in [(0, 1), (1, 2), (2, 0), (0, 1)] {
            apply(&mut compacted, &Op::Sync(a, b), true);
            apply(&mut kept, &Op::Sync(a, b), false);
        }
        for (r, (c, k)) in compacted.iter().zip(&kept).enumerate() {
            assert_same(c, k, &format!("replica {r} at the end"));
            assert_same(c, &kept[0], &format!("replica {r} converged"));
        }
    }
}

#[test]
fn compaction_drops_blocks_below_the_frontier_and_nothing_else() {
    let mut a = memory_replica(1);
    for i in 0..40 {
        put(&mut a, &format!("k{i}"), "v");
    }
    for i in 0..30 {
        del(&mut a, &format!("k{i}"));
    }
    let history: Vec<Cid> = a.reader().processed().map(|h| h.unwrap().cid).collect();
    assert_eq!(
        a.compact().unwrap(),
        Compacted::default(),
        "no snapshot: nothing to drop"
    );
    assert!(a.is_compacted().unwrap());

    let (_, manifest) = a.build_snapshot(1).unwrap();
    let m = Manifest::decode(&manifest, Trust::everyone().as_ref()).unwrap();
    assert!(!a.is_compacted().unwrap());
    // A block above the frontier, and a pending one from another writer.
    put(&mut a, "late", "x");
    let mut b = memory_replica(2);
    sync(&a, &mut b);
    put(&mut b, "elsewhere", "y");
    put(&mut b, "elsewhere2", "y");
    let tip = b.heads()[0].cid;
    a.receive(&tip, &b.block(&tip).unwrap().unwrap()).unwrap();

    let before = (state(&a), elements(&a), a.heads());
    let done = a.compact().unwrap();
    assert_eq!(done.blocks as usize, history.len() - 1);
    assert!(done.bytes > 0);
    assert!(a.is_compacted().unwrap());
    assert_eq!((state(&a), elements(&a), a.heads()), before);
    for cid in &history {
        let frontier = m.frontier.iter().any(|(c, _)| c == cid);
        assert_eq!(a.has_block(cid).unwrap(), frontier, "{cid}");
        assert!(a.is_processed(cid).unwrap(), "the marker of {cid} stays");
    }
    for cid in m.chunks.iter().chain(&m.context) {
        assert!(a.has_block(cid).unwrap(), "snapshot chunk {cid} kept");
    }
    assert!(a.has_block(&tip).unwrap(), "the pending block is kept");
    // The pending block still merges once its parent arrives.
    assert!(walk(&b, &mut a));
    assert!(walk(&a, &mut b));
    assert_same(&a, &b, "after the pending branch merged");
}

#[test]
fn descends_from_tells_whether_announced_heads_cover_a_snapshot() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    put(&mut a, "k", "1");
    sync(&a, &mut b);
    put(&mut b, "mine", "b");
    let frontier: Vec<(Cid, u64)> = a.heads().iter().map(|h| (h.cid, h.height)).collect();
    put(&mut a, "k", "2");
    put(&mut a, "k", "3");
    sync(&b, &mut a);
    let heads = |e: &Engine<MemoryStore>| e.heads().iter().map(|h| h.cid).collect::<Vec<_>>();
    // b built on the frontier; a's newest heads too.
    assert!(a.descends_from(&heads(&b), &frontier, 1000).unwrap());
    assert!(a.descends_from(&heads(&a), &frontier, 1000).unwrap());
    // A concurrent branch that never saw it does not.
    let mut c = memory_replica(3);
    put(&mut c, "other", "c");
    sync(&c, &mut a);
    assert!(!a.descends_from(&heads(&c), &frontier, 1000).unwrap());
    // Heads not merged here, or a walk over budget: cannot tell.
    let mut d = memory_replica(4);
    sync(&a, &mut d);
    put(&mut d, "unknown", "d");
    assert!(!a.descends_from(&heads(&d), &frontier, 1000).unwrap());
    assert!(!a.descends_from(&heads(&a), &frontier, 1).unwrap());
}

#[test]
fn a_returning_peer_with_its_own_branch_joins_the_snapshot_instead() {
    let mut a = memory_replica(1);
    let mut r = memory_replica(2);
    for i in 0..20 {
        put(&mut a, &format!("k{i}"), "a");
    }
    sync(&a, &mut r);
    // r goes away and writes on its own; a writes on, snapshots, compacts.
    put(&mut r, "k3", "r");
    del(&mut r, "k4");
    put(&mut r, "r-only", "r");
    for i in 0..20 {
        if i % 2 == 0 {
            del(&mut a, &format!("k{i}"));
        } else {
            put(&mut a, &format!("k{i}"), "a2");
        }
    }
    let mut replay = memory_replica(9);
    sync(&a, &mut replay);
    sync(&r, &mut replay);
    a.build_snapshot(1).unwrap();
    assert!(a.compact().unwrap().blocks > 0);

    // r cannot walk a's history any more, and takes a's snapshot.
    assert_eq!(sync_or_join(&mut a, &mut r), 1);
    // a walks r's branch down to blocks it has merged.
    assert_eq!(sync_or_join(&mut r, &mut a), 0);
    assert_same(&a, &replay, "compacted producer");
    assert_same(&r, &replay, "returning peer");
    assert_eq!(get(&r, "r-only").as_deref(), Some("r"), "r's own pin kept");
    assert_eq!(get(&r, "k4"), None);
}

/// A replica trusting only itself and `trusted`.
fn trusting(seed: u8, trusted: u8) -> Engine<MemoryStore> {
    let me = Author::from_seed(seed);
    let trust = Trust::only(&[&me, &Author::from_seed(trusted)]);
    Engine::open(MemoryStore::new(), me, trust, Limits::default()).unwrap()
}

#[test]
fn an_untrusted_snapshot_offered_for_dropped_history_changes_nothing() {
    // a (trusted by j) writes; m relays a's history and serves its own
    // snapshot, having dropped the history below it. m is not trusted.
    let mut a = memory_replica(1);
    for i in 0..10 {
        put(&mut a, &format!("k{i}"), "a");
    }
    let mut m = memory_replica(3);
    sync(&a, &mut m);
    let (_, manifest) = m.build_snapshot(1).unwrap();
    m.compact().unwrap();

    let mut j = trusting(2, 1);
    put(&mut j, "mine", "j");
    let before = (state(&j), elements(&j), j.heads());
    assert!(!walk(&m, &mut j), "m no longer holds a's history");
    let wanted = j.wanted(100).unwrap();
    assert!(!wanted.is_empty());
    stage(&m, &manifest, &j);
    let err = j.install_snapshot(&manifest).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Snapshot(SnapshotError::Signature(VerifyError::Untrusted))
        ),
        "{err}"
    );
    assert_eq!(
        (state(&j), elements(&j), j.heads()),
        before,
        "state untouched"
    );
    assert_eq!(j.wanted(100).unwrap(), wanted, "still wanted");
    assert_eq!(j.served_snapshot().unwrap(), None);
    // The trusted writer still has the history: j completes from it.
    assert!(walk(&a, &mut j));
    assert_eq!(state(&j).len(), 11);
}

#[test]
fn a_compaction_killed_at_any_write_reopens_consistent() {
    // More blocks than one delete batch holds, so kills land between them.
    let base = MemoryStore::new();
    let mut a = open(base.clone(), 1);
    for i in 0..25_000 {
        let mut b = a.batch();
        b.put(format!("key-{:03}", i % 700), format!("v{i}"))
            .unwrap();
        a.commit(b).unwrap();
    }
    a.build_snapshot(1).unwrap();
    put(&mut a, "late", "x");
    drop(a);
    let full = open(copy_store(&base), 1);
    let blocks = full.reader().processed().count();

    let mut interrupted = 0;
    for kill_at in 0.. {
        let (mut a, disk) = killed_after(&base, 1, kill_at);
        let outcome = a.compact();
        drop(a);
        let mut reopened = open(disk, 1);
        assert_same(&reopened, &full, &format!("killed at write {kill_at}"));
        assert_eq!(reopened.reader().processed().count(), blocks);
        let m = reopened.served_manifest().unwrap().expect("snapshot kept");
        for cid in m.chunks.iter().chain(&m.context) {
            assert!(
                reopened.has_block(cid).unwrap(),
                "chunk {cid} lost at write {kill_at}"
            );
        }
        for h in reopened.heads() {
            assert!(
                reopened.has_block(&h.cid).unwrap(),
                "head lost at write {kill_at}"
            );
        }
        match outcome {
            Ok(done) => {
                assert_eq!(
                    done.blocks as usize,
                    blocks - 2,
                    "all but the frontier and the late block"
                );
                assert!(reopened.is_compacted().unwrap());
                break;
            }
            Err(Error::Store(_)) => {
                interrupted += 1;
                assert!(
                    !reopened.is_compacted().unwrap(),
                    "killed at write {kill_at}"
                );
                // Running it again finishes the job.
                reopened.compact().unwrap();
                assert!(reopened.is_compacted().unwrap());
                assert_same(&reopened, &full, &format!("resumed after write {kill_at}"));
                let mut joiner = memory_replica(5);
                assert_eq!(sync_or_join(&mut reopened, &mut joiner), 1);
                assert_same(&joiner, &full, &format!("joined after write {kill_at}"));
            }
            Err(e) => panic!("killed at write {kill_at}: {e}"),
        }
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} kills landed mid-compaction"
    );
}

/// Bytes of the files under `dir`: what `du` and an operator see, which
/// a table's own size does not show (fjall may keep a replaced file).
fn files_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                files_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn on_fjall_compaction_gives_the_disk_back() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("keyspaces");
    let store = FjallStore::open(dir.path(), Default::default()).unwrap();
    let mut a = Engine::open(
        store.clone(),
        Author::from_seed(1),
        Trust::everyone(),
        Limits::default(),
    )
    .unwrap();
    // 200 deltas of 200 puts of 400 random bytes (the store compresses);
    // then all but 1,000 keys removed.
    for round in 0..200 {
        let mut b = a.batch();
        for i in 0..200 {
            let value: Vec<u8> = (0..400).map(|_| rand::random::<u8>()).collect();
            b.put(format!("key-{round:03}-{i:03}"), value).unwrap();
        }
        a.commit(b).unwrap();
    }
    for round in 5..200 {
        let mut b = a.batch();
        for i in 0..200 {
            b.delete(format!("key-{round:03}-{i:03}")).unwrap();
        }
        a.commit(b).unwrap();
    }
    a.build_snapshot(1).unwrap();
    // Everything on disk first, so the figures compare files with files.
    for table in Table::ALL {
        store.reclaim(table).unwrap();
    }
    let before = store.table_disk_space(Table::Blocks);
    let files_before = files_bytes(&tables);
    let done = a.compact().unwrap();
    let after = store.table_disk_space(Table::Blocks);
    assert_eq!(done.blocks, 394);
    assert!(
        after * 5 < before,
        "the blocks went from {before} to {after} bytes on disk for {} of history dropped",
        done.bytes
    );
    // The set's tables shrink with the blocks (their deleted elements and
    // values go), and the files replaced are deleted at once, not at some
    // later flush: the folder follows the live keys (1,000 of 40,000).
    let live = |s: &FjallStore| {
        [Table::Elements, Table::Values]
            .iter()
            .map(|t| s.table_disk_space(*t))
            .sum::<u64>()
    };
    assert!(
        live(&store) < 2_000_000,
        "elements and values keep {} bytes for 1,000 keys of 400 bytes",
        live(&store)
    );
    let files_after = files_bytes(&tables);
    assert!(
        files_after * 5 < files_before,
        "the tables' files went from {files_before} to {files_after} bytes"
    );
    assert_eq!(state(&a).len(), 1_000);

    // Reopened, the store has the same state in the same small files.
    let expected = state(&a);
    drop(a);
    drop(store);
    let a = fjall_replica(dir.path(), 1);
    assert_eq!(state(&a), expected);
    assert!(files_bytes(&tables) <= files_after + 1_000_000);
}
