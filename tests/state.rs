//! `pincluster state export|import|cleanup` on a real daemon's folder: the
//! round trip gives back the same pinset after a restart, bad input
//! changes nothing, and nothing runs beside a daemon.

mod common;

use std::process::{Command, Output};

use common::*;

fn state(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("state")
        .arg("--config")
        .arg(dir)
        .args(args)
        .output()
        .expect("run pincluster state")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The pins of an export, sorted by CID, as JSON values.
fn pins_of(export: &str) -> Vec<serde_json::Value> {
    let mut pins: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON pin per line"))
        .collect();
    pins.sort_by_key(|p| p["cid"].as_str().unwrap().to_owned());
    pins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_cleanup_import_restart_gives_back_the_pinset() {
    let dir = temp();
    let mut peer = TestPeer::start(dir.path().into(), PeerSpec::default()).await;
    let cids = cids("state", 5);
    for (i, cid) in cids.iter().enumerate() {
        let (status, body) = peer
            .pin(
                cid,
                &format!("name=pin-{i}&meta-n={i}&replication-min=1&replication-max=1"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    peer.wait_pinset(&cids).await;

    // Not beside a running daemon.
    let out = state(dir.path(), &["export"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stop the pincluster daemon"),
        "{}",
        text(&out.stderr)
    );
    assert!(peer.stop());

    let file = dir.path().join("pins.json");
    let out = state(dir.path(), &["export", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = std::fs::read_to_string(&file).unwrap();
    let before = pins_of(&exported);
    assert_eq!(before.len(), 5);
    assert_eq!(before[0]["metadata"]["n"].as_str().map(str::len), Some(1));
    // The same to stdout.
    let out = state(dir.path(), &["export"]);
    assert_eq!(text(&out.stdout), exported);

    // Garbage: refused, and the pinset is as it was.
    let garbage = dir.path().join("garbage.json");
    let half = &exported[..exported.len() / 2];
    for bad in [
        "this is not json".to_owned(),
        half.to_owned(),
        exported.replace(&cids[3], "not-a-cid"),
        format!("{exported}{{\"cid\":\"{}\"}}", cids[0]),
    ] {
        std::fs::write(&garbage, bad).unwrap();
        let out = state(
            dir.path(),
            &["import", "--force", garbage.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("nothing was imported"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let out = state(dir.path(), &["export"]);
        assert_eq!(
            text(&out.stdout),
            exported,
            "state changed by a failed import"
        );
    }
    // Without a terminal to ask, only --force replaces the pinset.
    let out = state(dir.path(), &["cleanup"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--force"));

    let out = state(dir.path(), &["cleanup", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = state(dir.path(), &["export"]);
    assert_eq!(text(&out.stdout), "");

    // The reference reads any whitespace between objects: pretty-print it.
    let pretty: String = before
        .iter()
        .map(|p| serde_json::to_string_pretty(p).unwrap() + "\n\n")
        .collect();
    std::fs::write(&file, pretty).unwrap();
    let out = state(dir.path(), &["import", "--force", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("imported 5 pins"));

    let peer = TestPeer::start(dir.path().into(), PeerSpec::default()).await;
    peer.wait_pinset(&cids).await;
    let pin = peer
        .get_json(&format!("/allocations/{}", cids[2]))
        .await
        .unwrap();
    let original = before
        .iter()
        .find(|p| p["cid"] == cids[2].as_str())
        .unwrap();
    for field in [
        "name",
        "metadata",
        "allocations",
        "replication_factor_min",
        "timestamp",
    ] {
        assert_eq!(pin[field], original[field], "{field}");
    }
}

/// Imported pins are ordinary deltas: a peer that joins afterwards gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_pins_reach_other_peers() {
    let secret = Some("1f".repeat(32));
    let spec = PeerSpec {
        secret: secret.clone(),
        ..PeerSpec::default()
    };
    let dir = temp();
    init_folder(dir.path(), &spec);
    let cids = cids("spread", 3);
    let lines: String = cids
        .iter()
        .map(|c| format!("{{\"cid\":\"{c}\",\"type\":\"pin\",\"replication_factor_min\":-1,\"replication_factor_max\":-1,\"max_depth\":-1}}\n"))
        .collect();
    let file = dir.path().join("in.json");
    std::fs::write(&file, lines).unwrap();
    let out = state(dir.path(), &["import", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let first = TestPeer::start(dir.path().into(), spec.clone()).await;
    first.wait_pinset(&cids).await;
    let other = temp();
    let joiner = TestPeer::start(
        other.path().into(),
        PeerSpec {
            bootstrap: vec![first.cluster_addr().await],
            ..spec
        },
    )
    .await;
    joiner.wait_pinset(&cids).await;
}
