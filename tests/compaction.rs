//! History compaction with real daemons.
//!
//! 1. A producer pins and unpins far more than it keeps; a second peer
//!    that followed most of it goes away, writes pins of its own while
//!    alone, and comes back after the producer, tired of waiting for it
//!    (`compaction_grace`), dropped its history below a snapshot. Checked:
//!    the producer's tables shrink toward the live pinset; the returning
//!    peer, whose walk runs into the dropped history, joins the snapshot
//!    and keeps its own pins; both converge; a fresh peer joins and lists
//!    the same pinset. (`OPS` operations leaving `LIVE` live pins: what a
//!    debug build affords in CI: 100,000 pins, 80,000 of them unpinned. The 1 M / 10 M runs are
//!    `benches/compaction.sh`.)
//! 2. A peer that restarts with `trusted_peers` `"*"` keeps its history
//!    until a peer it knew before the restart, away meanwhile, has come
//!    back and merged the snapshot: that peer catches up by plain walking.

mod common;

use std::path::Path;

use common::*;
use futures::StreamExt;

/// Live pins at the end of test 1.
const LIVE: usize = 20_000;
/// Pins written in test 1; all but `LIVE` of them are unpinned again.
const PINNED: usize = 5 * LIVE;
/// REST calls in flight while writing.
const IN_FLIGHT: usize = 32;

/// Bytes of the peer's fjall tables (the journal, bounded by fjall
/// whatever the history, not counted).
fn tables(peer_dir: &Path) -> u64 {
    disk_usage(&peer_dir.join("fjall").join("keyspaces"))
}

/// Bytes of every file under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

async fn pin_all(peer: &TestPeer, cids: &[String]) {
    futures::stream::iter(cids)
        .for_each_concurrent(IN_FLIGHT, |cid| async move {
            let (status, body) = peer.pin(cid, "").await;
            assert_eq!(status, 200, "pin {cid}: {body}");
        })
        .await;
}

async fn unpin_all(peer: &TestPeer, cids: &[String]) {
    futures::stream::iter(cids)
        .for_each_concurrent(IN_FLIGHT, |cid| async move {
            assert_eq!(peer.unpin(cid).await, 200, "unpin {cid}");
        })
        .await;
}

fn spec(secret: &Option<String>, env: &[(&str, &str)], bootstrap: Vec<String>) -> PeerSpec {
    PeerSpec {
        secret: secret.clone(),
        env: Vec::new(),
        bootstrap,
    }
    .with_env(env)
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_shrinks_history_and_peers_still_converge() {
    let secret = Some("3c".repeat(32));
    // While the history grows: no snapshots, so nothing is dropped.
    let growing = [("CLUSTER_CRDT_SNAPSHOTINTERVAL", "0s")];
    let a_dir = temp();
    let mut a = TestPeer::start(a_dir.path().into(), spec(&secret, &growing, vec![])).await;
    let r_dir = temp();
    let mut r = TestPeer::start(
        r_dir.path().into(),
        spec(&secret, &growing, vec![a.cluster_addr().await]),
    )
    .await;

    let pinned = cids("compact", PINNED);
    let (kept, gone) = pinned.split_at(LIVE);
    pin_all(&a, &pinned).await;
    // Few enough left for r to miss that it walks a's deltas on return
    // (far behind, it would join by snapshot at once anyway).
    let (early, late) = gone.split_at(gone.len() - 500);
    unpin_all(&a, early).await;
    let mut followed = kept.to_vec();
    followed.extend_from_slice(late);
    r.wait_pinset(&followed).await;
    // r goes away; a unpins the rest and stops; r, alone, pins its own.
    r.stop();
    unpin_all(&a, late).await;
    a.stop();
    let mut r = r.restart_with(spec(&secret, &growing, vec![])).await;
    let own = cids("compact-own", 3);
    pin_all(&r, &own).await;
    r.stop();

    let full = disk_usage(a_dir.path());
    // a comes back taking snapshots. It knew r before the restart and
    // would wait for r to merge its snapshot; the short grace makes it
    // give up on r (away), and the history below the snapshot goes.
    let compacting = [
        ("CLUSTER_CRDT_SNAPSHOTINTERVAL", "1s"),
        ("CLUSTER_CRDT_COMPACTIONGRACE", "1s"),
    ];
    let a = a.restart_with(spec(&secret, &compacting, vec![])).await;
    wait_for("a's history compaction", DEADLINE, || async {
        a.logged("history below the snapshot compacted")
            .then_some(())
    })
    .await;
    assert_eq!(
        a.log_value("history below the snapshot compacted", "expired=")
            .as_deref(),
        Some("true"),
        "a compacted before the grace, with r away"
    );
    // Every merged block below the frontier is gone: a holds no more of
    // the history than the frontier's few blocks.
    let field = |key| {
        a.log_value("history below the snapshot compacted", key)
            .and_then(|v| v.parse::<u64>().ok())
            .expect("a number")
    };
    let (blocks, merged, frontier) = (field("blocks="), field("merged="), field("frontier="));
    assert_eq!(
        blocks + frontier,
        merged,
        "blocks dropped + frontier = blocks merged"
    );
    // The folder: the tables follow the live pinset, the journal (bounded
    // by fjall, 512 MiB at most) keeps the last writes until it rotates.
    // The size figures at scale are benches/compaction.sh's.
    let after = disk_usage(a_dir.path());
    eprintln!(
        "{PINNED} pins and {} unpins, {LIVE} live: {blocks} of {merged} blocks dropped; folder {full} bytes before compaction, {after} after (tables {})",
        PINNED - LIVE,
        tables(a_dir.path())
    );

    // r returns: a's blocks it lacks are gone; it joins the snapshot.
    let r = r
        .restart_with(spec(&secret, &compacting, vec![a.cluster_addr().await]))
        .await;
    wait_for("r's join in place of dropped history", DEADLINE, || async {
        r.logged("joined a snapshot in place of dropped history")
            .then_some(())
    })
    .await;
    let mut live = kept.to_vec();
    live.extend(own.iter().cloned());
    r.wait_pinset(&live).await;
    a.wait_pinset(&live).await;

    // A fresh peer joins and lists the same pinset.
    let j_dir = temp();
    let j = TestPeer::start(
        j_dir.path().into(),
        spec(&secret, &[], vec![a.cluster_addr().await]),
    )
    .await;
    j.wait_pinset(&live).await;
    eprintln!(
        "tables: a (compacted) {} bytes, j (joined, never held the history) {} bytes",
        tables(a_dir.path()),
        tables(j_dir.path())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_peer_keeps_history_until_the_peers_it_knew_merge_it() {
    let secret = Some("3d".repeat(32));
    let growing = [("CLUSTER_CRDT_SNAPSHOTINTERVAL", "0s")];
    let a_dir = temp();
    let mut a = TestPeer::start(a_dir.path().into(), spec(&secret, &growing, vec![])).await;
    let b_dir = temp();
    let mut b = TestPeer::start(
        b_dir.path().into(),
        spec(&secret, &growing, vec![a.cluster_addr().await]),
    )
    .await;
    let followed = cids("wait", 1_000);
    pin_all(&a, &followed).await;
    b.wait_pinset(&followed).await;
    // b goes away; a writes more and stops (its peerstore names b).
    b.stop();
    let missed = cids("wait-missed", 300);
    pin_all(&a, &missed).await;
    a.stop();

    // a restarts alone, taking snapshots; trusted_peers "*" (the default)
    // and the default grace of a week: it must wait for b.
    let compacting = [("CLUSTER_CRDT_SNAPSHOTINTERVAL", "1s")];
    let a = a.restart_with(spec(&secret, &compacting, vec![])).await;
    let b_id = b.id.clone();
    let decision = wait_for("a's first compaction decision", DEADLINE, || async {
        if a.logged("history below the snapshot compacted") {
            return Some("compacted");
        }
        a.log_text()
            .lines()
            .any(|l| l.contains("history kept") && l.contains(&b_id))
            .then_some("kept")
    })
    .await;
    assert_eq!(
        decision, "kept",
        "a compacted its history while b, which it knew, was away"
    );

    // b comes back, walks what it missed, announces heads that cover the
    // snapshot: only then does a compact.
    let b = b
        .restart_with(spec(&secret, &growing, vec![a.cluster_addr().await]))
        .await;
    let mut all = followed.clone();
    all.extend(missed.iter().cloned());
    b.wait_pinset(&all).await;
    let expired = wait_for("a's compaction once b merged", DEADLINE, || async {
        a.log_value("history below the snapshot compacted", "expired=")
    })
    .await;
    assert_eq!(
        expired, "false",
        "a compacted on the grace, not on b's heads"
    );
    assert!(
        !b.logged("joined a snapshot in place of dropped history"),
        "b ran into dropped history"
    );
}
