//! One test per rule of the engine: the map's semantics, heads, change
//! reports, delivery order, batches and limits.

mod common;

use common::*;
use pincluster_crdt::store::MemoryStore;
use pincluster_crdt::{BatchError, Engine, KeyChange, Limits, Merged, Received};

#[test]
fn put_get_delete_and_ordered_iteration() {
    let mut a = memory_replica(1);
    put(&mut a, "b", "2");
    put(&mut a, "a", "1");
    put(&mut a, "c", "3");
    assert_eq!(get(&a, "a").as_deref(), Some("1"));
    del(&mut a, "b");
    assert_eq!(get(&a, "b"), None);
    let keys: Vec<Vec<u8>> = state(&a).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
    let from_b: Vec<Vec<u8>> = a.reader().iter_from(b"b").map(|e| e.unwrap().0).collect();
    assert_eq!(from_b, vec![b"c".to_vec()]);
}

#[test]
fn a_concurrent_put_survives_a_delete_add_wins() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    put(&mut a, "k", "first");
    sync(&a, &mut b);
    // A removes what it saw; B, concurrently, puts a new value.
    del(&mut a, "k");
    put(&mut b, "k", "second");
    sync(&a, &mut b);
    sync(&b, &mut a);
    assert_eq!(get(&a, "k").as_deref(), Some("second"));
    assert_eq!(get(&b, "k").as_deref(), Some("second"));
    assert_eq!(a.heads(), b.heads());
}

#[test]
fn a_delete_removes_every_element_its_writer_saw() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    put(&mut a, "k", "x");
    put(&mut b, "k", "y");
    sync(&a, &mut b);
    // B saw both elements: its delete names both.
    del(&mut b, "k");
    sync(&b, &mut a);
    assert_eq!(get(&a, "k"), None);
    assert_eq!(get(&b, "k"), None);
    assert!(a.reader().element_ids(b"k").unwrap().is_empty());
}

#[test]
fn equal_priorities_pick_the_greater_value_bytes() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    put(&mut a, "k", "apple");
    put(&mut b, "k", "banana");
    sync(&a, &mut b);
    sync(&b, &mut a);
    assert_eq!(get(&a, "k").as_deref(), Some("banana"));
    assert_eq!(get(&b, "k").as_deref(), Some("banana"));
}

#[test]
fn higher_priority_beats_greater_bytes() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    put(&mut a, "other", "x");
    put(&mut a, "k", "aaa"); // height 2 on A
    put(&mut b, "k", "zzz"); // height 1 on B
    sync(&a, &mut b);
    sync(&b, &mut a);
    assert_eq!(get(&a, "k").as_deref(), Some("aaa"));
    assert_eq!(get(&b, "k").as_deref(), Some("aaa"));
}

#[test]
fn deleting_the_winner_promotes_the_runner_up_and_reports_it() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    let mut c = memory_replica(3);
    put(&mut a, "k", "p");
    put(&mut b, "k", "q");
    // C saw only B's element and deletes it.
    sync(&b, &mut c);
    del(&mut c, "k");
    // A holds both elements; q wins on bytes.
    sync(&b, &mut a);
    assert_eq!(get(&a, "k").as_deref(), Some("q"));
    let before = all_blocks(&a).len();
    sync(&c, &mut a);
    assert_eq!(all_blocks(&a).len(), before + 1);
    assert_eq!(get(&a, "k").as_deref(), Some("p"));
}

#[test]
fn merges_report_old_and_new_values_once_per_changed_key() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    let mut batch = a.batch();
    batch.put("x", "1").unwrap();
    batch.put("y", "1").unwrap();
    let committed = a.commit(batch).unwrap().unwrap();
    assert_eq!(committed.changes.len(), 2);
    assert_eq!(committed.changes[0].old, None);

    // Same value again: nothing changed for a reader.
    let mut same = a.batch();
    same.put("x", "1").unwrap();
    assert!(a.commit(same).unwrap().unwrap().changes.is_empty());

    let mut batch = a.batch();
    batch.put("x", "2").unwrap();
    batch.delete("y").unwrap();
    a.commit(batch).unwrap();

    // B learns all three blocks; the reports add up to A's story.
    let heads: Vec<_> = a.heads().iter().map(|h| h.cid).collect();
    let mut queue = b.missing(&heads).unwrap();
    while let Some(cid) = queue.pop() {
        if let Received::Pending { missing } =
            b.receive(&cid, &a.block(&cid).unwrap().unwrap()).unwrap()
        {
            queue.extend(missing);
        }
    }
    let mut changes = Vec::new();
    b.merge_all(|m| match m {
        Merged::Applied { changes: c, .. } => changes.extend(c),
        Merged::Rejected { error, .. } => panic!("{error}"),
    })
    .unwrap();
    let change = |k: &str, old: Option<&str>, new: Option<&str>| KeyChange {
        key: k.into(),
        old: old.map(Into::into),
        new: new.map(Into::into),
    };
    assert_eq!(
        changes,
        vec![
            change("x", None, Some("1")),
            change("y", None, Some("1")),
            change("x", Some("1"), Some("2")),
            change("y", Some("1"), None),
        ]
    );
}

#[test]
fn heads_are_exactly_the_tips() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    assert!(a.heads().is_empty());
    put(&mut a, "k1", "v");
    put(&mut a, "k2", "v");
    assert_eq!(a.heads().len(), 1);
    assert_eq!(a.heads()[0].height, 2);
    put(&mut b, "k3", "v");
    sync(&b, &mut a);
    // Two concurrent tips.
    assert_eq!(a.heads().len(), 2);
    // A write links both and becomes the only tip, one above the highest.
    put(&mut a, "k4", "v");
    assert_eq!(a.heads().len(), 1);
    assert_eq!(a.heads()[0].height, 3);
    sync(&a, &mut b);
    assert_eq!(a.heads(), b.heads());
    assert_eq!(b.reader().heads().unwrap(), b.heads());
}

#[test]
fn a_batch_deletes_before_it_puts_and_its_own_put_yields_to_a_later_delete() {
    let mut a = memory_replica(1);
    put(&mut a, "k", "old");
    let mut batch = a.batch();
    batch.delete("k").unwrap();
    batch.put("k", "new").unwrap();
    a.commit(batch).unwrap();
    assert_eq!(get(&a, "k").as_deref(), Some("new"));
    assert_eq!(a.reader().element_ids(b"k").unwrap().len(), 1);

    let mut batch = a.batch();
    batch.put("j", "v").unwrap();
    batch.delete("j").unwrap();
    // Nothing observed to delete and the put was dropped: no delta at all.
    assert!(a.commit(batch).unwrap().is_none());
    assert_eq!(get(&a, "j"), None);
}

#[test]
fn an_incomplete_branch_does_not_hold_up_others() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    let mut c = memory_replica(3);
    for i in 0..3 {
        put(&mut a, &format!("a{i}"), "v");
    }
    put(&mut b, "b", "v");
    let mut a_blocks = all_blocks(&a); // head first, root last
    let root = a_blocks.pop().unwrap();
    for (cid, bytes) in &a_blocks {
        assert!(matches!(
            c.receive(cid, bytes).unwrap(),
            Received::Pending { .. }
        ));
    }
    assert_eq!(c.wanted(10).unwrap(), vec![root.0]);
    sync(&b, &mut c);
    assert_eq!(get(&c, "b").as_deref(), Some("v"));
    assert_eq!(get(&c, "a2"), None);
    assert_eq!(c.heads(), b.heads());

    assert_eq!(c.receive(&root.0, &root.1).unwrap(), Received::Ready);
    assert_eq!(merge_all(&mut c), 3);
    assert_eq!(get(&c, "a2").as_deref(), Some("v"));
    assert!(c.wanted(10).unwrap().is_empty());
    assert_eq!(c.heads().len(), 2);
}

#[test]
fn duplicates_and_known_heads_are_no_ops() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    put(&mut a, "k", "v");
    let (cid, bytes) = all_blocks(&a).pop().unwrap();
    assert_eq!(b.receive(&cid, &bytes).unwrap(), Received::Ready);
    assert_eq!(b.receive(&cid, &bytes).unwrap(), Received::Duplicate);
    assert_eq!(merge_all(&mut b), 1);
    assert_eq!(b.receive(&cid, &bytes).unwrap(), Received::Duplicate);
    assert!(b.missing(&[cid]).unwrap().is_empty());
    assert_eq!(merge_all(&mut b), 0);
}

#[test]
fn batches_refuse_what_one_delta_cannot_hold_and_stay_unchanged() {
    let limits = Limits {
        max_ops: 2,
        max_key_bytes: 4,
        max_value_bytes: 8,
        ..Limits::default()
    };
    let e = Engine::open(
        MemoryStore::new(),
        Author::from_seed(1),
        Trust::everyone(),
        limits,
    )
    .unwrap();
    let mut batch = e.batch();
    batch.put("a", "1").unwrap();
    batch.put("b", "1").unwrap();
    batch.put("a", "2").unwrap(); // replaces, no new op
    assert_eq!(batch.put("c", "1"), Err(BatchError::FullOps { max: 2 }));
    assert_eq!(batch.len(), 2);
    assert!(matches!(
        batch.put("toolong", "1"),
        Err(BatchError::KeyTooLarge { .. })
    ));
    assert!(matches!(
        batch.put("d", "123456789"),
        Err(BatchError::ValueTooLarge { .. })
    ));
    assert_eq!(batch.len(), 2);

    let bytes_limits = Limits {
        max_block_bytes: 3_000,
        max_links: 10,
        ..Limits::default()
    };
    let mut batch = pincluster_crdt::Batch::new(bytes_limits);
    let mut refused = None;
    for i in 0..100 {
        if let Err(e) = batch.put(format!("key{i:03}"), vec![b'v'; 100]) {
            refused = Some((i, e));
            break;
        }
    }
    let (at, err) = refused.expect("a 3 kB delta cannot hold 10 kB of puts");
    assert!(matches!(err, BatchError::FullBytes { .. }));
    assert_eq!(batch.len(), at);
}

#[test]
fn a_full_batch_still_commits_under_the_block_limit() {
    let limits = Limits {
        max_block_bytes: 64 * 1024,
        ..Limits::default()
    };
    let mut e = Engine::open(
        MemoryStore::new(),
        Author::from_seed(1),
        Trust::everyone(),
        limits,
    )
    .unwrap();
    let mut batch = e.batch();
    let mut i = 0;
    while batch.put(format!("key{i:05}"), vec![b'v'; 200]).is_ok() {
        i += 1;
    }
    let committed = e.commit(batch).unwrap().unwrap();
    assert!(committed.bytes.len() <= 64 * 1024);
    assert_eq!(committed.changes.len(), i);
}

#[test]
fn state_persists_in_fjall_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let heads;
    {
        let mut a = fjall_replica(dir.path(), 1);
        put(&mut a, "k", "v");
        put(&mut a, "j", "w");
        del(&mut a, "j");
        heads = a.heads();
    }
    let a = fjall_replica(dir.path(), 1);
    assert_eq!(a.heads(), heads);
    assert_eq!(get(&a, "k").as_deref(), Some("v"));
    assert_eq!(get(&a, "j"), None);
}

#[test]
fn pending_and_ready_blocks_survive_a_reopen() {
    let src = {
        let mut a = memory_replica(1);
        for i in 0..4 {
            put(&mut a, &format!("k{i}"), "v");
        }
        a
    };
    let blocks = all_blocks(&src);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut c = fjall_replica(dir.path(), 2);
        for (cid, bytes) in &blocks {
            c.receive(cid, bytes).unwrap();
        }
        // The root is ready but not merged when the replica goes away.
        assert!(c.has_ready());
    }
    let mut c = fjall_replica(dir.path(), 2);
    assert!(c.has_ready());
    assert_eq!(merge_all(&mut c), 4);
    assert_eq!(state(&c), state(&src));
    assert_eq!(c.heads(), src.heads());
}
