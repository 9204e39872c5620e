//! History compaction with real daemons. A producer pins and unpins far
//! more than it keeps; a second peer that followed most of it goes away,
//! writes pins of its own while alone, and comes back after the producer
//! dropped its history below a snapshot. Checked: the producer's folder
//! shrinks toward the live pinset; the returning peer, whose walk runs
//! into the dropped history, joins the snapshot and keeps its own pins;
//! both converge; a fresh peer joins and lists the same pinset.
//! (Sizes are what a debug build affords in CI: `LIVE` live pins after
//! `OPS` operations. The 1 M / 10 M runs are `benches/compaction.sh`.)

mod common;

use std::path::Path;

use common::*;
use futures::StreamExt;

/// Live pins at the end.
const LIVE: usize = 4_000;
/// Pins written; all but `LIVE` of them are unpinned again.
const PINNED: usize = 5 * LIVE;
/// REST calls in flight while writing.
const IN_FLIGHT: usize = 32;

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
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        bootstrap,
    }
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
    // a comes back taking snapshots; with r away, no trusted peer is
    // waited for, and the history below the first snapshot goes.
    let compacting = [("CLUSTER_CRDT_SNAPSHOTINTERVAL", "1s")];
    let a = a.restart_with(spec(&secret, &compacting, vec![])).await;
    let dropped = wait_for("a's history compaction", DEADLINE, || async {
        a.log_value("history below the snapshot compacted", "blocks=")
    })
    .await;
    assert_ne!(dropped, "0", "blocks dropped");
    let compacted = disk_usage(a_dir.path());
    eprintln!(
        "{PINNED} pins and {} unpins, {LIVE} live: {full} bytes before compaction, {compacted} after ({dropped} blocks dropped)",
        PINNED - LIVE
    );
    assert!(
        compacted * 2 < full,
        "the folder went from {full} to {compacted} bytes only"
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
}
