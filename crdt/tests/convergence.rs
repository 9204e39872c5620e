//! The laws, under random histories: 2–5 replicas put and delete over a
//! small key space, exchange blocks in random order with duplicates, split
//! into partitions and heal. After a full exchange every replica holds the
//! same state and heads, the live keys are those of a `crdts::Orswot` that
//! saw the same operations and merges, and every value is the winner of
//! its key's live elements.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;
use crdts::{CmRDT, CvRDT, Orswot};
use pincluster_crdt::Engine;
use pincluster_crdt::store::MemoryStore;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

const KEYS: u8 = 4;

#[derive(Debug, Clone)]
enum Step {
    Put { replica: usize, key: u8, value: u8 },
    Delete { replica: usize, key: u8 },
    Sync { from: usize, to: usize, seed: u64 },
}

fn step(replicas: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..replicas, 0..KEYS, any::<u8>()).prop_map(|(replica, key, value)| Step::Put { replica, key, value }),
        2 => (0..replicas, 0..KEYS).prop_map(|(replica, key)| Step::Delete { replica, key }),
        2 => (0..replicas, 0..replicas, any::<u64>()).prop_map(|(from, to, seed)| Step::Sync { from, to, seed }),
    ]
}

/// A history: how many replicas, where the partition splits them, the steps
/// taken while partitioned, then the steps after healing.
fn history() -> impl Strategy<Value = (usize, usize, Vec<Step>, Vec<Step>)> {
    (2usize..=5).prop_flat_map(|n| {
        (
            Just(n),
            1..n,
            proptest::collection::vec(step(n), 0..30),
            proptest::collection::vec(step(n), 0..15),
        )
    })
}

struct World {
    engines: Vec<Engine<MemoryStore>>,
    models: Vec<Orswot<u8, usize>>,
}

impl World {
    fn new(n: usize) -> Self {
        Self {
            engines: (0..n).map(|i| memory_replica(i as u8 + 1)).collect(),
            models: (0..n).map(|_| Orswot::new()).collect(),
        }
    }

    fn apply(&mut self, step: &Step, split: Option<usize>) {
        match *step {
            Step::Put {
                replica,
                key,
                value,
            } => {
                let mut b = self.engines[replica].batch();
                b.put(vec![key], vec![value]).unwrap();
                self.engines[replica].commit(b).unwrap();
                let m = &mut self.models[replica];
                let op = m.add(key, m.read_ctx().derive_add_ctx(replica));
                m.apply(op);
            }
            Step::Delete { replica, key } => {
                let mut b = self.engines[replica].batch();
                b.delete(vec![key]).unwrap();
                self.engines[replica].commit(b).unwrap();
                let m = &mut self.models[replica];
                let op = m.rm(key, m.contains(&key).derive_rm_ctx());
                m.apply(op);
            }
            Step::Sync { from, to, seed } => {
                let same_side = |i: usize| split.is_none_or(|s| i < s);
                if from == to || same_side(from) != same_side(to) {
                    return; // across the partition: dropped
                }
                self.deliver_shuffled(from, to, seed);
                let other = self.models[from].clone();
                self.models[to].merge(other);
            }
        }
    }

    /// Hands `to` every block of `from` it lacks, shuffled, some twice.
    fn deliver_shuffled(&mut self, from: usize, to: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut blocks = all_blocks(&self.engines[from]);
        let dups: Vec<_> = blocks
            .iter()
            .filter(|_| rand::Rng::gen_bool(&mut rng, 0.2))
            .cloned()
            .collect();
        blocks.extend(dups);
        blocks.shuffle(&mut rng);
        let target = &mut self.engines[to];
        for (cid, bytes) in &blocks {
            target.receive(cid, bytes).unwrap();
            // Merge at random points too, not only at the end.
            if rand::Rng::gen_bool(&mut rng, 0.3) {
                merge_all(target);
            }
        }
        merge_all(target);
    }

    fn full_exchange(&mut self) {
        let n = self.engines.len();
        for i in 1..n {
            self.apply(
                &Step::Sync {
                    from: i,
                    to: 0,
                    seed: i as u64,
                },
                None,
            );
        }
        for i in 1..n {
            self.apply(
                &Step::Sync {
                    from: 0,
                    to: i,
                    seed: i as u64,
                },
                None,
            );
        }
    }
}

/// Every stored value is the winner among its key's live elements.
fn values_match_elements(e: &Engine<MemoryStore>) {
    let mut best: BTreeMap<Vec<u8>, (u64, Vec<u8>)> = BTreeMap::new();
    for el in e.reader().elements() {
        let el = el.unwrap();
        let cand = (el.priority, el.value);
        let slot = best.entry(el.key).or_insert_with(|| cand.clone());
        if cand > *slot {
            *slot = cand;
        }
    }
    let expected: Vec<(Vec<u8>, Vec<u8>)> = best.into_iter().map(|(k, (_, v))| (k, v)).collect();
    assert_eq!(state(e), expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replicas_converge_to_the_reference_model((n, split, partitioned, healed) in history()) {
        let mut world = World::new(n);
        for s in &partitioned {
            world.apply(s, Some(split));
        }
        for s in &healed {
            world.apply(s, None);
        }
        world.full_exchange();

        let reference = state(&world.engines[0]);
        let heads = world.engines[0].heads();
        let mut model = world.models[0].clone();
        for m in &world.models[1..] {
            model.merge(m.clone());
        }
        let model_keys: HashSet<u8> = model.read().val;
        for e in &world.engines {
            prop_assert_eq!(state(e), reference.clone());
            prop_assert_eq!(e.heads(), heads.clone());
            values_match_elements(e);
        }
        let keys: HashSet<u8> = reference.iter().map(|(k, _)| k[0]).collect();
        prop_assert_eq!(keys, model_keys);
    }

    #[test]
    fn delivery_order_does_not_matter(ops in proptest::collection::vec(step(3), 1..40), seeds in proptest::collection::vec(any::<u64>(), 3)) {
        // Build a history on three replicas, then replay all of its blocks
        // into fresh replicas in different random orders.
        let mut world = World::new(3);
        for s in &ops {
            world.apply(s, None);
        }
        world.full_exchange();
        let expected = state(&world.engines[0]);
        for seed in seeds {
            let mut fresh = World::new(4);
            fresh.engines[..3].swap_with_slice(&mut world.engines);
            fresh.deliver_shuffled(0, 3, seed);
            prop_assert_eq!(state(&fresh.engines[3]), expected.clone());
            prop_assert_eq!(fresh.engines[3].heads(), fresh.engines[0].heads());
            fresh.engines[..3].swap_with_slice(&mut world.engines);
        }
    }
}
