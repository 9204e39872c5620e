//! Join by snapshot with real daemons: a peer holding 20,000 imported pins
//! takes a signed snapshot; a fresh peer bootstrapping from it installs
//! that snapshot (not the deltas below it), then syncs the pins written
//! after it by ordinary delta sync, and lists the complete pinset. The
//! producer is restarted in between: it serves the snapshot it holds.
//! (100,000 and 1,000,000 pins are bench runs: `benches/snapshot_join.sh`.)

mod common;

use common::*;

const PINS: usize = 20_000;

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
