//! The hooks a snapshot join will use: install a replica's live elements,
//! causal context and heads into a fresh replica, and go on syncing from
//! there as if it had replayed the whole history.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use pincluster_crdt::store::{MemoryStore, Store};
use pincluster_crdt::{Element, Engine, Error, Head, Limits};

fn install<S: Store, T: Store>(from: &Engine<S>, into: &mut Engine<T>) -> Result<u64, Error> {
    let reader = from.reader();
    let elements: Vec<Element> = reader.elements().collect::<Result<_, _>>().unwrap();
    let context: Vec<Head> = reader.processed().collect::<Result<_, _>>().unwrap();
    into.install_state(&from.heads(), elements, context)
}

#[test]
fn an_installed_state_equals_the_replayed_one_and_keeps_syncing() {
    let mut a = memory_replica(1);
    let mut b = memory_replica(2);
    put(&mut a, "k", "p");
    put(&mut b, "k", "q"); // concurrent: two live elements of k
    put(&mut a, "gone", "x");
    sync(&b, &mut a);
    del(&mut a, "gone");
    put(&mut a, "kept", "y");

    let below_frontier: Vec<Head> = a.reader().processed().collect::<Result<_, _>>().unwrap();
    let mut c = memory_replica(3);
    assert_eq!(install(&a, &mut c).unwrap(), 2);
    assert_eq!(state(&c), state(&a));
    assert_eq!(c.heads(), a.heads());
    for head in a.reader().processed() {
        assert!(c.is_processed(&head.unwrap().cid).unwrap());
    }

    // B, which never saw A's later blocks, deletes the k it saw (q only);
    // the runner-up p must surface on C exactly as on A.
    del(&mut b, "k");
    put(&mut a, "after", "z");
    sync(&b, &mut c);
    sync(&a, &mut c);
    sync(&b, &mut a);
    assert_eq!(get(&c, "k").as_deref(), Some("p"));
    assert_eq!(state(&c), state(&a));
    assert_eq!(c.heads(), a.heads());
    // C walked only what lay above the frontier.
    for head in below_frontier {
        assert!(c.block(&head.cid).unwrap().is_none());
    }
}

#[test]
fn installing_into_a_replica_with_state_is_refused() {
    let mut a = memory_replica(1);
    put(&mut a, "k", "v");
    let mut c = memory_replica(3);
    put(&mut c, "mine", "v");
    assert!(matches!(install(&a, &mut c), Err(Error::NotEmpty)));
    assert_eq!(get(&c, "k"), None);
}

#[test]
fn unsorted_elements_are_refused() {
    let mut a = memory_replica(1);
    put(&mut a, "a", "1");
    put(&mut a, "b", "2");
    let mut elements: Vec<Element> = a.reader().elements().collect::<Result<_, _>>().unwrap();
    elements.reverse();
    let mut c = memory_replica(3);
    let err = c.install_state(&a.heads(), elements, Vec::new());
    assert!(matches!(err, Err(Error::InvalidState(_))));
}

#[test]
fn an_interrupted_install_is_rolled_back_on_open() {
    // 30,000 live elements: the install needs several write batches.
    let mut a = memory_replica(1);
    for chunk in 0..30 {
        let mut b = a.batch();
        for i in 0..1000 {
            b.put(format!("key-{chunk:02}-{i:03}"), "v").unwrap();
        }
        a.commit(b).unwrap();
    }
    let backing = MemoryStore::new();
    let failing = FailAfter {
        inner: backing.clone(),
        left: Arc::new(AtomicUsize::new(1)), // the format marker, then fail mid-install
    };
    let mut c = Engine::open(
        failing.clone(),
        Author::from_seed(3),
        Trust::everyone(),
        Limits::default(),
    )
    .unwrap();
    failing.left.store(2, Ordering::SeqCst);
    assert!(matches!(install(&a, &mut c), Err(Error::Store(_))));
    drop(c);

    let mut c = Engine::open(
        backing,
        Author::from_seed(3),
        Trust::everyone(),
        Limits::default(),
    )
    .unwrap();
    assert!(state(&c).is_empty());
    assert!(c.heads().is_empty());
    assert_eq!(c.reader().elements().count(), 0);
    install(&a, &mut c).unwrap();
    assert_eq!(state(&c), state(&a));
}
