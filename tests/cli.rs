//! The `pincluster` binary as a user runs it: `init`, `daemon`, and the
//! client commands against a running daemon, each a separate process.

mod common;

use std::process::Command;

use common::fake_kubo::{FakeKubo, PinBehaviour};
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

/// A variable of the daemon's environment, read from its process.
fn daemon_env(peer: &TestPeer, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{}/environ", peer.pid().unwrap())).unwrap();
    let prefix = format!("{name}=");
    environ.split(|b| *b == 0).find_map(|var| {
        var.strip_prefix(prefix.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Transparent huge pages in the daemon's memory, in kB.
fn anon_huge_pages_kb(peer: &TestPeer) -> u64 {
    let rollup =
        std::fs::read_to_string(format!("/proc/{}/smaps_rollup", peer.pid().unwrap())).unwrap();
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A daemon started with `env`, and its `MIMALLOC_PURGE_DELAY` and
/// `MIMALLOC_ALLOW_THP` as its process sees them (its folder is kept
/// alive with it).
async fn allocator_options(
    env: &[(&str, &str)],
) -> (tempfile::TempDir, TestPeer, [Option<String>; 2]) {
    let dir = temp();
    let spec = PeerSpec::default().with_env(env);
    let peer = TestPeer::start(dir.path().into(), spec).await;
    let options = [
        daemon_env(&peer, "MIMALLOC_PURGE_DELAY"),
        daemon_env(&peer, "MIMALLOC_ALLOW_THP"),
    ];
    (dir, peer, options)
}

/// A daemon hands the memory it frees back to the system at once and keeps
/// its heap out of transparent huge pages (an idle peer otherwise kept what
/// a burst left, and 2 MiB pages whole for a few live objects: see
/// `main.rs`), unless the operator chose mimalloc's settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_keeps_its_heap_small_unless_told_otherwise() {
    let set = |v: &str| Some(v.to_string());
    let (_dir, peer, options) = allocator_options(&[]).await;
    assert_eq!(options, [set("0"), set("0")]);
    assert_eq!(anon_huge_pages_kb(&peer), 0, "no huge pages in the heap");
    let (_dir, _peer, options) = allocator_options(&[("MIMALLOC_PURGE_DELAY", "250")]).await;
    assert_eq!(options, [set("250"), set("0")]);
    let (_dir, _peer, options) = allocator_options(&[("MIMALLOC_ALLOW_THP", "1")]).await;
    assert_eq!(options, [set("0"), set("1")]);
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
    assert!(out.contains("  > Addresses:\n    - /ip4/"), "{out}");

    let (code, out, _) = client(&peer.api, &["version"]);
    assert_eq!((code, out.trim()), (0, env!("CARGO_PKG_VERSION")));
    let local = Command::new(BIN).arg("--version").output().unwrap();
    assert!(local.status.success());
    assert_eq!(
        String::from_utf8_lossy(&local.stdout).trim(),
        format!("pincluster {}", env!("CARGO_PKG_VERSION"))
    );
    // A bad flag is a usage error: exit 1, as ctl.
    let (code, _, err) = client(&peer.api, &["pin", "add", cid, "--mode", "sideways"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expected recursive or direct"), "{err}");

    let (code, out, _) = client(&peer.api, &["peers", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains(&peer.id), "{out}");

    let (code, out, _) = client(
        &peer.api,
        &[
            "pin",
            "add",
            cid,
            "--name",
            "hello",
            "--replication",
            "1",
            "--no-status",
        ],
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

    let (code, _, _) = client(&peer.api, &["pin", "rm", "--no-status", cid]);
    assert_eq!(code, 0);
    // Gone: the API answers 404 and the client exits 2 with the error, on
    // stdout as ipfs-cluster-ctl prints it.
    let (code, out, _) = client(&peer.api, &["pin", "ls", cid]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        out,
        "An error occurred:\n  Code: 404\n  Message: pin is not part of the pinset\n"
    );
    let (code, out, _) = client(&peer.api, &["--enc", "json", "pin", "ls", cid]);
    assert_eq!(code, 2);
    let err: serde_json::Value = serde_json::from_str(&out).expect("json error");
    assert_eq!(err["code"], 404);

    let (code, _, err) = client(&peer.api, &["pin", "add", "not-a-cid"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error decoding Cid"), "{err}");

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

/// Every pin option, status, recover, --wait, health, --debug and the exit
/// codes, against a peer whose IPFS daemon is a fake Kubo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_options_status_wait_and_health() {
    let ipfs = FakeKubo::start().await;
    let dir = temp();
    let spec = PeerSpec {
        env: vec![(
            "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
            ipfs.multiaddr().to_string(),
        )],
        ..PeerSpec::default()
    };
    let peer = TestPeer::start(dir.path().into(), spec).await;
    let [a, b, stuck]: [String; 3] = cids("options", 3).try_into().unwrap();
    ipfs.set_pin_behaviour(stuck.parse().unwrap(), PinBehaviour::Hang);

    // Every option reaches the pinset; JSON output is the API's object.
    let (code, out, err) = client(
        &peer.api,
        &[
            "--enc",
            "json",
            "pin",
            "add",
            &a,
            "--rmin",
            "1",
            "--rmax",
            "1",
            "--allocations",
            &peer.id,
            "--metadata",
            "team=infra",
            "--metadata",
            "kind=test",
            "--expire-in",
            "1h",
            "--name",
            "first",
            "--no-status",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let pin: serde_json::Value = serde_json::from_str(&out).expect("one JSON pin");
    assert_eq!(pin["metadata"]["team"], "infra");
    assert_eq!(pin["allocations"][0], peer.id.as_str());
    assert_ne!(pin["expire_at"], "0001-01-01T00:00:00Z");
    let (code, out, _) = client(&peer.api, &["pin", "ls", &a]);
    assert_eq!(code, 0);
    assert!(
        out.contains(" | first | PIN | Repl. Factor: 1--1 | "),
        "{out}"
    );
    assert!(out.contains(" | Metadata: yes | Exp: 20"), "{out}");

    // --wait polls the status until the peer has pinned it, then prints it.
    let (code, out, err) = client(
        &peer.api,
        &[
            "pin",
            "add",
            &b,
            "--wait",
            "--wait-timeout",
            "60s",
            "-n",
            "second",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("{b} | second:\n")), "{out}");
    assert!(out.contains(" : PINNED | "), "{out}");
    assert!(
        ipfs.pinned().contains(&b.parse().unwrap()),
        "the fake Kubo holds it"
    );

    // Without --wait, the status a second after pinning.
    let (code, out, _) = client(&peer.api, &["pin", "add", &stuck]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("{stuck}:\n    > ")), "{out}");
    // A pin that never completes: --wait-timeout ends it with exit 62.
    let (code, _, err) = client(
        &peer.api,
        &["pin", "add", &stuck, "--wait", "--wait-timeout", "2s"],
    );
    assert_eq!(code, 62, "{err}");
    assert_eq!(
        err,
        "error waiting for pin status: context deadline exceeded\n"
    );

    // status: one CID, several, all, filtered, local; text and JSON.
    let (code, out, _) = client(&peer.api, &["status", &b]);
    assert_eq!(code, 0);
    assert!(out.contains(" : PINNED | "), "{out}");
    assert!(out.contains("| Attempts: "), "{out}");
    let (code, out, _) = client(&peer.api, &["--enc", "json", "status", "--local", &a, &b]);
    assert_eq!(code, 0);
    let items: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("a stream of JSON objects");
    assert_eq!(items.len(), 2, "{out}");
    let (code, out, _) = client(&peer.api, &["status", "--filter", "pinned"]);
    assert_eq!(code, 0);
    assert!(out.contains(&b) && !out.contains(&stuck), "{out}");
    let (code, _, err) = client(&peer.api, &["status", "--filter", "bogus"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid filter name"), "{err}");

    // recover: one CID, and all (nothing failed: no output).
    let (code, out, _) = client(&peer.api, &["recover", &b]);
    assert_eq!(code, 0);
    assert!(out.contains(" : PINNED | "), "{out}");
    let (code, _, _) = client(&peer.api, &["recover", "--local"]);
    assert_eq!(code, 0);

    // pin rm --wait: until unpinned everywhere, then the status.
    let (code, out, err) = client(&peer.api, &["pin", "rm", &b, "--wait", "--wt", "60s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" : UNPINNED | "), "{out}");
    assert!(!ipfs.pinned().contains(&b.parse().unwrap()));

    // health: the metric names, one metric, the alerts (none).
    let out = wait_for("a ping metric", DEADLINE, || {
        let (code, out, _) = client(&peer.api, &["health", "metrics", "ping"]);
        async move { (code == 0 && !out.is_empty()).then_some(out) }
    })
    .await;
    assert!(out.starts_with(&format!("{} | ping: ", peer.id)), "{out}");
    assert!(out.contains(" | Expires in: "), "{out}");
    let (code, out, _) = client(&peer.api, &["health", "metrics"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "ping"), "{out}");
    let (code, out, _) = client(&peer.api, &["--enc", "json", "health", "alerts"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "[]");

    // --debug shows the call and the raw answer on stderr, not stdout.
    let (code, out, err) = client(&peer.api, &["--debug", "pin", "ls", "--filter", "pin"]);
    assert_eq!(code, 0);
    assert!(err.contains("> GET http://127.0.0.1:"), "{err}");
    assert!(
        err.contains("/allocations?filter=pin\n>   filter=pin\n"),
        "{err}"
    );
    assert!(err.contains("< 200 OK"), "{err}");
    assert!(err.contains(&format!("\"cid\":\"{a}\"")), "{err}");
    assert!(out.contains(&a) && !out.contains("> GET"), "{out}");

    // Nobody listening: exit 1 with a code-0 error object.
    let closed = fixed_port();
    let (code, out, _) = client(&format!("http://127.0.0.1:{closed}"), &["id"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("An error occurred:\n  Code: 0\n"), "{out}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_through_the_client_gives_the_daemons_cids_and_cluster_pins() {
    use common::kubo::Kubo;
    let dir = temp();
    let daemon = Kubo::start(&dir.path().join("ipfs")).await;
    let spec = PeerSpec {
        env: vec![(
            "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
            daemon.api_multiaddr(),
        )],
        ..PeerSpec::default()
    };
    let peer = TestPeer::start(dir.path().join("peer"), spec).await;
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    let data = b"added by the pincluster client\n";
    std::fs::write(files.join("one.txt"), data).unwrap();
    std::fs::write(files.join("sub").join("two.txt"), b"nested\n").unwrap();

    // One file: the CID is the daemon's own for the same bytes, and it is a
    // cluster pin the daemon holds.
    let one = files.join("one.txt");
    let (code, out, err) = client(&peer.api, &["add", one.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let want = daemon
        .add_with("add?only-hash=true&pin=false", "one.txt", data)
        .await;
    let want = want.last().unwrap()["Hash"].as_str().unwrap().to_string();
    assert_eq!(out.trim(), format!("added {want} one.txt"), "{out}");
    let (code, out, _) = client(&peer.api, &["pin", "ls", &want]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with(&want), "{out}");
    wait_for("the daemon to pin the added file", DEADLINE, || async {
        daemon.recursive_pins().await.contains(&want).then_some(())
    })
    .await;

    // A folder: every entry is listed, the folder's root last; -Q prints
    // only the root, which is the cluster pin.
    let (code, out, err) = client(&peer.api, &["add", "-r", files.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[3].ends_with(" files"), "{out}");
    assert!(out.contains(" files/sub/two.txt\n"), "{out}");
    let root = lines[3].split(' ').nth(1).unwrap().to_string();
    let (code, quiet, _) = client(&peer.api, &["add", "-r", "-Q", files.to_str().unwrap()]);
    assert_eq!((code, quiet.trim()), (0, root.as_str()), "{quiet}");
    let v = peer
        .get_json(&format!("/allocations/{root}"))
        .await
        .unwrap();
    assert_eq!(v["cid"], root.as_str(), "{v}");

    // A CAR of a file the daemon added outside the cluster: one line, its
    // root and the CAR's name, as ctl prints it; the root is a cluster pin.
    let car_root = daemon.add("car-content.txt", b"inside a CAR\n").await;
    let res = reqwest::Client::new()
        .post(format!(
            "{}/api/v0/dag/export?arg={car_root}",
            daemon.api_url()
        ))
        .send()
        .await
        .unwrap();
    let car = dir.path().join("content.car");
    std::fs::write(&car, res.bytes().await.unwrap()).unwrap();
    let car = car.to_str().unwrap();
    let (code, out, err) = client(&peer.api, &["add", "--format", "car", car]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("added {car_root} content.car\n"));
    let v = peer
        .get_json(&format!("/allocations/{car_root}"))
        .await
        .unwrap();
    assert_eq!(v["cid"], car_root.as_str(), "{v}");
    // Several CARs, or wrapping one, are refused before anything is sent.
    let (code, _, err) = client(&peer.api, &["add", "--format", "car", car, car]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only a single CAR file"), "{err}");
}
