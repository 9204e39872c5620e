//! Crash consistency with fjall: a child process merges a long history and
//! is killed with SIGKILL after a random number of blocks; the parent
//! reopens the store, checks that it is internally consistent (every block
//! wholly merged or still pending), finishes the sync, and compares with a
//! replica that never crashed. Dropping the store in-process would not be a
//! crash: fjall flushes on drop, a killed process does not.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use pincluster_crdt::store::{FjallStore, MemoryStore};
use pincluster_crdt::{Block, Cid, Engine, Limits};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Set in the environment of the re-executed test binary: the folder to
/// merge into and the file of blocks to merge.
const CHILD_ENV: &str = "PINCLUSTER_CRASH_CHILD";
const ROUNDS: usize = 40;

/// The history: three writers, mostly chained, sometimes concurrent, with
/// puts, re-puts and deletes, so merges exercise every path of a delta.
fn history() -> (Engine<MemoryStore>, Vec<(Cid, Vec<u8>)>) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut writers: Vec<_> = (1..=3).map(memory_replica).collect();
    for round in 0..400 {
        let w = rng.gen_range(0..3);
        let mut batch = writers[w].batch();
        for _ in 0..rng.gen_range(1..8) {
            let key = format!("pin-{:03}", rng.gen_range(0..300));
            if rng.gen_bool(0.25) {
                batch.delete(key).unwrap();
            } else {
                batch.put(key, format!("v{round}")).unwrap();
            }
        }
        writers[w].commit(batch).unwrap();
        if rng.gen_bool(0.3) {
            let (from, to) = (rng.gen_range(0..3), rng.gen_range(0..3));
            if from != to {
                let (a, b) = two(&mut writers, from, to);
                sync(a, b);
            }
        }
    }
    let (first, rest) = writers.split_at_mut(1);
    for w in rest.iter() {
        sync(w, &mut first[0]);
    }
    let full = writers.swap_remove(0);
    // Newest first, as a walk from the heads delivers them: most blocks
    // wait as pending and merge in one long cascade at the end.
    let blocks = all_blocks(&full);
    (full, blocks)
}

fn two<T>(v: &mut [T], a: usize, b: usize) -> (&T, &mut T) {
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&r[0], &mut l[b])
    }
}

fn write_blocks(path: &Path, blocks: &[(Cid, Vec<u8>)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (cid, bytes) in blocks {
        let c = cid.to_bytes();
        f.write_all(&(c.len() as u32).to_be_bytes()).unwrap();
        f.write_all(&c).unwrap();
        f.write_all(&(bytes.len() as u32).to_be_bytes()).unwrap();
        f.write_all(bytes).unwrap();
    }
}

fn read_blocks(path: &Path) -> Vec<(Cid, Vec<u8>)> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let mut out = Vec::new();
    let mut rest = raw.as_slice();
    let take = |rest: &mut &[u8]| {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let (item, tail) = tail.split_at(len);
        *rest = tail;
        item.to_vec()
    };
    while !rest.is_empty() {
        let cid = Cid::try_from(take(&mut rest)).unwrap();
        out.push((cid, take(&mut rest)));
    }
    out
}

/// Feeds every block to the replica, merging as blocks become ready, and
/// prints a line per merged block so the parent can pick its moment.
#[allow(clippy::print_stdout)] // stdout is the child's progress channel
fn merge_everything(engine: &mut Engine<FjallStore>, blocks: &[(Cid, Vec<u8>)], report: bool) {
    let mut merged = 0usize;
    for (cid, bytes) in blocks {
        engine.receive(cid, bytes).unwrap();
        while let Some(m) = engine.merge_next().unwrap() {
            assert!(matches!(m, pincluster_crdt::Merged::Applied { .. }));
            merged += 1;
            if report {
                println!("merged {merged}");
            }
        }
    }
}

/// The re-executed child. Run as a normal test it has nothing to do: the
/// crash test below starts it with `PINCLUSTER_CRASH_CHILD` set.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let blocks = read_blocks(&dir.join("blocks.bin"));
    let mut engine = fjall_replica(&dir.join("store"), 9);
    merge_everything(&mut engine, &blocks, true);
}

/// Invariants of any state a crash can leave: the merged set is closed
/// under "parent of", heads are exactly its tips, and every stored value is
/// the winner of its key's live elements.
fn assert_consistent(engine: &Engine<FjallStore>) {
    let reader = engine.reader();
    let merged: BTreeSet<Cid> = reader.processed().map(|h| h.unwrap().cid).collect();
    let mut linked = BTreeSet::new();
    for cid in &merged {
        let bytes = engine.block(cid).unwrap().expect("merged block is stored");
        let block =
            Block::decode(cid, &bytes, &Limits::default(), Trust::everyone().as_ref()).unwrap();
        for link in block.links {
            assert!(
                merged.contains(&link),
                "merged {cid} has unmerged parent {link}"
            );
            linked.insert(link);
        }
    }
    let tips: BTreeSet<Cid> = merged.difference(&linked).copied().collect();
    let heads: BTreeSet<Cid> = engine.heads().iter().map(|h| h.cid).collect();
    assert_eq!(heads, tips, "heads are not exactly the tips");

    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut best: Option<(Vec<u8>, u64, Vec<u8>)> = None;
    for el in reader.elements() {
        let el = el.unwrap();
        match &mut best {
            Some((k, p, v)) if *k == el.key => {
                if (el.priority, &el.value) > (*p, &*v) {
                    (*p, *v) = (el.priority, el.value);
                }
            }
            _ => {
                if let Some((k, _, v)) = best.take() {
                    expected.push((k, v));
                }
                best = Some((el.key, el.priority, el.value));
            }
        }
    }
    if let Some((k, _, v)) = best {
        expected.push((k, v));
    }
    assert_eq!(
        state(engine),
        expected,
        "values disagree with live elements"
    );
}

#[test]
fn sigkill_mid_merge_reopens_consistent_and_catches_up() {
    let (reference, blocks) = history();
    let total = blocks.len();
    let work = tempfile::tempdir().unwrap();
    write_blocks(&work.path().join("blocks.bin"), &blocks);
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(0xC4A5);
    let mut killed_mid_run = 0;

    for round in 0..ROUNDS {
        let store = work.path().join("store");
        let _ = std::fs::remove_dir_all(&store);
        let kill_after = rng.gen_range(1..total);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, work.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut finished = true;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("merged ")
                && n.parse::<usize>().unwrap() >= kill_after
            {
                // The child keeps merging while the signal is on its way, so
                // the kill lands at an arbitrary point of a merge.
                child.kill().unwrap();
                finished = false;
                break;
            }
        }
        child.wait().unwrap();
        if !finished {
            killed_mid_run += 1;
        }

        let mut engine = fjall_replica(&store, 9);
        assert_consistent(&engine);
        merge_everything(&mut engine, &blocks, false);
        assert_eq!(
            state(&engine),
            state(&reference),
            "round {round}: state differs after catching up"
        );
        assert_eq!(
            engine.heads(),
            reference.heads(),
            "round {round}: heads differ"
        );
    }
    assert!(
        killed_mid_run >= ROUNDS / 2,
        "only {killed_mid_run} of {ROUNDS} kills landed mid-run"
    );
}
