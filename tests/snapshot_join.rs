//! Join by snapshot with real daemons: a peer holding 100,000 imported pins
//! takes a signed snapshot; a fresh peer bootstrapping from it installs
//! that snapshot (not the deltas below it), then syncs the pins written
//! after it by ordinary delta sync, and lists the complete pinset. The
//! producer is restarted in between: it serves the snapshot it holds.
//! (1,000,000 and 10,000,000 pins are bench runs: `benches/snapshot_join.sh`.)
//! The first snapshot of a run waits for the pin tracker's start-up pass.

mod common;

use common::fake_kubo::FakeKubo;
use common::*;

const PINS: usize = 100_000;

/// A fresh peer bootstrapping from `producer`, once it installed a
/// snapshot: its folder, the peer, and the keys the install logged.
async fn join(
    producer: &TestPeer,
    secret: Option<String>,
) -> (tempfile::TempDir, TestPeer, String) {
    let other = temp();
    let joiner = TestPeer::start(
        other.path().into(),
        PeerSpec {
            secret,
            bootstrap: vec![producer.cluster_addr().await],
            ..PeerSpec::default()
        },
    )
    .await;
    let installed = wait_for("the joiner's snapshot install", DEADLINE, || async {
        joiner.log_value("snapshot installed", "keys=")
    })
    .await;
    (other, joiner, installed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_peer_joins_from_a_snapshot_then_syncs_what_came_after() {
    let secret = Some("2e".repeat(32));
    let producer_spec = PeerSpec {
        secret: secret.clone(),
        env: vec![("CLUSTER_CRDT_SNAPSHOTINTERVAL".into(), "1s".into())],
        ..PeerSpec::default()
    };
    let dir = temp();
    init_folder(dir.path(), &producer_spec);
    let mut all = cids("snapjoin", PINS);
    import_pins(dir.path(), &all);
    let producer = TestPeer::start(dir.path().into(), producer_spec).await;
    wait_for("the producer's snapshot", DEADLINE, || async {
        producer.logged("snapshot taken").then_some(())
    })
    .await;
    // Restarted with the heads where they were, it serves the snapshot it
    // already holds instead of building it again (a whole pass over the
    // pinset at start).
    let producer = producer.restart().await;

    let (_other, joiner, installed) = join(&producer, secret).await;
    assert_eq!(installed, PINS.to_string(), "installed keys");
    assert!(
        !producer.logged("snapshot taken"),
        "the restarted producer built its unchanged snapshot again"
    );

    // Written after the snapshot the joiner took: reaches it by deltas.
    let late = cids("snapjoin-late", 3);
    for cid in &late {
        let (status, body) = producer.pin(cid, "").await;
        assert_eq!(status, 200, "{body}");
    }
    all.extend(late);
    joiner.wait_pinset(&all).await;
}

/// The first snapshot of a run waits for the pin tracker's start-up pass:
/// both read the whole pinset, and side by side they doubled the first
/// minute's memory at a million pins (BENCHMARKS.md). Here the IPFS
/// daemon's pin listing is held, so the pass cannot end: writes still go
/// through, no snapshot is built. Once the listing comes, the snapshot is
/// taken, and it covers the writes of the window: a joiner installs them.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_snapshot_waits_for_the_trackers_start_up_pass() {
    let ipfs = FakeKubo::start().await;
    ipfs.hold_pin_ls();
    let secret = Some("2f".repeat(32));
    let spec = PeerSpec {
        secret: secret.clone(),
        env: vec![
            ("CLUSTER_CRDT_SNAPSHOTINTERVAL".into(), "1s".into()),
            (
                "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
                ipfs.multiaddr().to_string(),
            ),
        ],
        ..PeerSpec::default()
    };
    let dir = temp();
    init_folder(dir.path(), &spec);
    let mut all = cids("firstsnap", 2_000);
    import_pins(dir.path(), &all);
    let producer = TestPeer::start(dir.path().into(), spec).await;
    wait_for("the start-up pass's pin listing", DEADLINE, || async {
        (ipfs.requests("pin/ls") > 0).then_some(())
    })
    .await;
    // Each write is answered by the consensus task once committed. Without
    // the wait, its snapshot tick (due at once) would have built a
    // snapshot before it took the first one.
    let window = cids("firstsnap-window", 2);
    for cid in &window {
        let (status, body) = producer.pin(cid, "").await;
        assert_eq!(status, 200, "{body}");
    }
    all.extend(window);
    assert!(
        !producer.logged("snapshot taken"),
        "a snapshot was built during the tracker's start-up pass"
    );
    assert!(
        producer.logged("the first snapshot waits for the pin tracker's start-up pass"),
        "the wait is not logged"
    );

    ipfs.release_pin_ls();
    wait_for("the snapshot after the start-up pass", DEADLINE, || async {
        producer.logged("snapshot taken").then_some(())
    })
    .await;
    let (_other, joiner, installed) = join(&producer, secret).await;
    assert_eq!(installed, all.len().to_string(), "installed keys");
    joiner.wait_pinset(&all).await;
}
