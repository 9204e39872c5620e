//! The `pincluster` binary as a user runs it: `init`, `daemon`, and the
//! client commands against a running daemon, each a separate process.

mod common;

use std::process::Command;

use common::*;

fn client(api: &str, args: &[&str]) -> (i32, String, String) {
    let port = api.rsplit(':').next().unwrap();
    let out = Command::new(BIN)
        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .args(args)
        .output()
        .expect("run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_against_a_daemon() {
    let dir = temp();
    let mut peer = TestPeer::start(dir.path().into(), PeerSpec::default()).await;
    let cid = &cids("cli", 1)[0];

    let (code, out, _) = client(&peer.api, &["id"]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("{} | ", peer.id)), "{out}");
    assert!(out.contains("Sees 0 other peers"), "{out}");

    let (code, out, _) = client(&peer.api, &["version"]);
    assert_eq!((code, out.trim()), (0, env!("CARGO_PKG_VERSION")));

    let (code, out, _) = client(&peer.api, &["peers", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains(&peer.id), "{out}");

    let (code, out, _) = client(
        &peer.api,
        &["pin", "add", cid, "--name", "hello", "--replication", "1"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!(
            "{cid} | hello | PIN | Repl. Factor: 1--1 | Allocations: [{}]",
            peer.id
        )),
        "{out}"
    );

    let (code, out, _) = client(&peer.api, &["pin", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains(cid), "{out}");

    let (code, out, _) = client(&peer.api, &["--enc", "json", "pin", "ls", cid]);
    assert_eq!(code, 0);
    let pin: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(pin["name"], "hello");
    assert_eq!(pin["replication_factor_min"], 1);

    let (code, _, _) = client(&peer.api, &["pin", "rm", cid]);
    assert_eq!(code, 0);
    // Gone: the API answers 404 and the client exits 2 with the error.
    let (code, out, err) = client(&peer.api, &["pin", "ls", cid]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(format!("{out}{err}").contains("pin is not part of the pinset"));

    let (code, _, err) = client(&peer.api, &["pin", "add", "not-a-cid"]);
    assert_eq!(code, 1, "{err}");

    // The API itself refuses bad input with the reference's messages.
    let (status, body) = peer.pin("not-a-cid", "").await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("error decoding Cid"),
        "{body}"
    );
    let (status, body) = peer.pin(cid, "replication-min=x").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("parameter replication-min invalid"))
    );
    let missing = reqwest::get(format!("{}/nothing/here", peer.api))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["message"],
        "not found"
    );
    // No pins left: the stream answers 204.
    let empty = reqwest::get(format!("{}/allocations", peer.api))
        .await
        .unwrap();
    assert_eq!(empty.status(), 204);

    assert!(peer.stop(), "the daemon exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_folder_and_config_errors_name_the_key() {
    let dir = temp();
    let peer = TestPeer::start(dir.path().into(), PeerSpec::default()).await;
    let second = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(dir.path())
        .env("CLUSTER_LISTENMULTIADDRESS", "/ip4/127.0.0.1/tcp/0")
        .env(
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
            "/ip4/127.0.0.1/tcp/0",
        )
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another pincluster daemon is running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    drop(peer);

    // `init` refuses to overwrite without --force.
    let again = Command::new(BIN)
        .args(["init", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));

    let bad = temp();
    init_folder(bad.path(), &PeerSpec::default());
    let path = bad.path().join("service.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"15s\"", "\"fifteen seconds\"")).unwrap();
    let out = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.monitor_ping_interval"), "{err}");
}
