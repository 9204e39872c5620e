//! The real `ipfs-cluster-ctl` 1.1.6 (built by `.ci/install-ipfs`) driving
//! pincluster peers beside real Kubo daemons, as a user of ipfs-cluster
//! would: every command and flag of its help, in text and in JSON, with
//! basic auth and over HTTPS. What is checked is what the user sees (exit
//! codes, the lines printed, the JSON) and what happens to the cluster
//! (pins on the peers and on the daemons). The expected CIDs and lines are
//! what ctl prints against ipfs-cluster-service 1.1.6 for the same input.

mod common;

use std::path::Path;
use std::process::Command;

use common::kubo::{Kubo, real_bin};
use common::tls::TestCerts;
use common::*;
use serde_json::Value;

const SECRET: &str = "8d1f3c5b7a9e0f2d4c6b8a0e1f3d5c7b9a1e3f5d7c9b0a2e4f6d8c0b2a4e6f80";

/// What ctl printed: exit code, stdout, stderr.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    /// The output must be a success; its stdout.
    fn ok(self, what: &str) -> String {
        assert_eq!(
            self.code, 0,
            "ctl {what}: exit {}\nstdout: {}\nstderr: {}",
            self.code, self.out, self.err
        );
        self.out
    }

    /// The JSON values printed one after the other (`--enc json`).
    fn json(self, what: &str) -> Vec<Value> {
        let out = self.ok(what);
        serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("ctl {what}: not JSON ({e}): {out}"))
    }
}

/// `ipfs-cluster-ctl --host <api> <args>`, run in `cwd` (for `add` paths),
/// with no credentials from the environment.
fn ctl_in(cwd: &Path, api: &str, args: &[&str]) -> Run {
    let port = api.rsplit(':').next().expect("a port");
    let out = Command::new(real_bin("ipfs-cluster-ctl"))
        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .args(args)
        .current_dir(cwd)
        .env_remove("CLUSTER_CREDENTIALS")
        .output()
        .expect("run ipfs-cluster-ctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctl(api: &str, args: &[&str]) -> Run {
    ctl_in(Path::new("/"), api, args)
}

/// The CID Kubo computes for `data` added as one file with `options`.
async fn kubo_cid(kubo: &Kubo, options: &str, data: &[u8]) -> String {
    let lines = kubo
        .add_with(&format!("add?only-hash=true&{options}"), "f", data)
        .await;
    lines.last().unwrap()["Hash"].as_str().unwrap().to_string()
}

/// Waits until `kubo` holds (or no longer holds) `cid` as a recursive pin.
async fn wait_kubo(kubo: &Kubo, cid: &str, pinned: bool) {
    wait_for(
        &format!("{cid} pinned={pinned} on Kubo {}", kubo.id()),
        DEADLINE,
        || async {
            (kubo.recursive_pins().await.contains(&cid.to_string()) == pinned).then_some(())
        },
    )
    .await;
}

/// The direct pins of `kubo`.
async fn direct_pins(kubo: &Kubo) -> Vec<String> {
    let reply = kubo.call("pin/ls?type=direct").await;
    reply["Keys"]
        .as_object()
        .map(|keys| keys.keys().cloned().collect())
        .unwrap_or_default()
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Two peers, each beside its own Kubo; every command of ctl's help but
/// `peers rm` (last, it changes the peerset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_a_cluster_beside_kubo() {
    let tmp = temp();
    let (dir_a, dir_b) = (tmp.path().join("kubo-a"), tmp.path().join("kubo-b"));
    let (ka, kb) = tokio::join!(Kubo::start(&dir_a), Kubo::start(&dir_b));
    let spec = |name: &str, k: &Kubo, boot: Option<&str>| PeerSpec {
        secret: Some(SECRET.into()),
        bootstrap: boot.map(|b| vec![b.to_string()]).unwrap_or_default(),
        env: vec![
            (
                "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
                k.api_multiaddr(),
            ),
            ("CLUSTER_PEERNAME".into(), name.into()),
        ],
    };
    let a = TestPeer::start(tmp.path().join("a"), spec("peer-a", &ka, None)).await;
    let addr = a.cluster_addr().await;
    let mut b = TestPeer::start(tmp.path().join("b"), spec("peer-b", &kb, Some(&addr))).await;
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();

    // `health metrics ping`: one line per peer once each one's ping (with
    // its daemon's id) has arrived, which the add destinations below need.
    wait_for("both pings, with their daemons", DEADLINE, || async {
        let out = ctl(&a.api, &["health", "metrics", "ping"]).ok("health metrics ping");
        let seen = [(&a.id, "peer-a", ka.id()), (&b.id, "peer-b", kb.id())]
            .iter()
            .all(|(id, name, ipfs)| {
                out.lines().any(|l| {
                    l.starts_with(&format!(
                        "{id} | ping: {{\"peer_name\":\"{name}\",\"ipfs_id\":\"{ipfs}\""
                    )) && l.contains("| Expires in: ")
                })
            });
        seen.then_some(())
    })
    .await;

    // id, text and JSON.
    let out = ctl(&a.api, &["id"]).ok("id");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{} | peer-a | Sees 1 other peers", a.id).as_str()),
        "{out}"
    );
    assert_eq!(lines.next(), Some("  > Addresses:"), "{out}");
    assert!(out.contains(&format!("  > IPFS: {}\n", ka.id())), "{out}");
    let id = &ctl(&a.api, &["--enc", "json", "id"]).json("id")[0];
    assert_eq!(id["id"], a.id.as_str());
    assert_eq!(id["peername"], "peer-a");
    assert_eq!(id["ipfs"]["id"], ka.id());
    assert_eq!(ids(&id["cluster_peers"]), both);

    // version: pincluster's own.
    let out = ctl(&a.api, &["version"]).ok("version");
    assert_eq!(out, format!("{}\n", env!("CARGO_PKG_VERSION")));
    let v = &ctl(&a.api, &["--enc", "json", "version"]).json("version")[0];
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    // peers ls: both peers, each seeing the other.
    let out = ctl(&b.api, &["peers", "ls"]).ok("peers ls");
    for (id, name) in [(&a.id, "peer-a"), (&b.id, "peer-b")] {
        assert!(
            out.contains(&format!("{id} | {name} | Sees 1 other peers\n")),
            "{out}"
        );
    }
    let peers = ctl(&b.api, &["--enc", "json", "peers", "ls"]).json("peers ls");
    let mut listed: Vec<String> = peers
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, both);

    add_checks(tmp.path(), &a, &b, &ka, &kb, &both).await;
    pin_checks(&a, &b, &ka, &kb).await;
    health_checks(&a, &b, &ka, &kb).await;

    // A dead peer is an alert: its ping expired.
    b.kill();
    wait_for("an alert for B", DEADLINE, || async {
        let out = ctl(&a.api, &["health", "alerts"]).ok("health alerts");
        out.lines()
            .any(|l| {
                l.starts_with(&format!("{}: ping. Expired at: ", b.id))
                    && l.contains(". Triggered at: ")
            })
            .then_some(())
    })
    .await;
    let alerts = ctl(&a.api, &["--enc", "json", "health", "alerts"]).json("health alerts");
    let alert = alerts[0]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["peer"] == b.id.as_str()));
    assert!(alert.is_some_and(|x| x["name"] == "ping"), "{alerts:?}");

    // peers rm: B leaves A's peerset.
    ctl(&a.api, &["peers", "rm", &b.id]).ok("peers rm");
    wait_for("B out of A's peerset", DEADLINE, || async {
        let out = ctl(&a.api, &["peers", "ls"]).ok("peers ls");
        (!out.contains(&b.id)).then_some(())
    })
    .await;
    let bad = ctl(&a.api, &["peers", "rm", "not-a-peer"]);
    assert_eq!(bad.code, 1, "{}", bad.err);
    assert!(
        bad.err.starts_with("error parsing peer ID: "),
        "{}",
        bad.err
    );
}

async fn add_checks(dir: &Path, a: &TestPeer, b: &TestPeer, ka: &Kubo, kb: &Kubo, both: &[String]) {
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("dir/sub")).unwrap();
    std::fs::create_dir_all(files.join("hid")).unwrap();
    for (path, data) in [
        ("a.txt", "hello ctl\n"),
        ("dir/one.txt", "one\n"),
        ("dir/sub/two.txt", "two\n"),
        ("local.txt", "only on b\n"),
        ("alloc.txt", "allocated to b\n"),
        ("nopin.txt", "never pinned\n"),
        ("wait.txt", "waited for\n"),
        ("hid/.dot", "hidden\n"),
        ("hid/seen", "seen\n"),
    ] {
        std::fs::write(files.join(path), data).unwrap();
    }
    let add = |args: &[&str]| ctl_in(&files, &a.api, args);

    // One file: Kubo's CID, pinned everywhere.
    let cid = kubo_cid(ka, "", b"hello ctl\n").await;
    assert_eq!(cid, "QmQc8wzHecAJSH7BjcipGcJTto6XZC2WKoM4Cg3W2h7z9g");
    assert_eq!(
        add(&["add", "a.txt"]).ok("add"),
        format!("added {cid} a.txt\n")
    );
    wait_kubo(ka, &cid, true).await;
    wait_kubo(kb, &cid, true).await;

    // A folder: children first, the root last and pinned.
    let out = add(&["add", "-r", "dir"]).ok("add -r");
    assert_eq!(
        out,
        "added QmUB9Nr7RpqNYQpyh4W9r3RQNttiPQ6BQ9iQLkw9LztJFz dir/one.txt\n\
         added QmapoNeQhJxjMDWstx27etyxMNLU4MtkDk8BMfyHRao8P8 dir/sub/two.txt\n\
         added QmdAZ1qBG8SytfKVL8A6z2ef1JSZLN5EzVcCw9tB4LvZK5 dir/sub\n\
         added QmSUpUCXZSMMMVmdsc6Hnuwq2x4MQkWmMu6Bt17UyM7KF7 dir\n"
    );
    let root = "QmSUpUCXZSMMMVmdsc6Hnuwq2x4MQkWmMu6Bt17UyM7KF7";
    wait_kubo(kb, root, true).await;
    assert_eq!(
        add(&["add", "-Q", "-r", "dir"]).ok("add -Q"),
        format!("{root}\n")
    );
    let quiet = add(&["add", "-q", "-r", "dir"]).ok("add -q");
    assert_eq!(quiet.lines().count(), 4, "{quiet}");
    assert_eq!(quiet.lines().last(), Some(root));
    // JSON: every item names the destinations (both live peers), as the
    // reference's adder does for a pin everywhere.
    let items = ctl_in(&files, &a.api, &["--enc", "json", "add", "-r", "dir"]).json("add -r");
    assert_eq!(items.len(), 4);
    assert_eq!(items[3]["name"], "dir");
    assert_eq!(items[3]["cid"], root);
    assert_eq!(items[3]["size"], 175);
    for item in &items {
        assert_eq!(ids(&item["allocations"]), both, "{item}");
    }

    // CIDv1 with raw leaves, and a wrapping folder.
    let v1 = kubo_cid(ka, "cid-version=1&raw-leaves=true", b"hello ctl\n").await;
    assert!(v1.starts_with("bafkrei"), "{v1}");
    assert_eq!(
        add(&["add", "--cid-version", "1", "--raw-leaves", "a.txt"]).ok("add v1"),
        format!("added {v1} a.txt\n")
    );
    wait_kubo(kb, &v1, true).await;
    let out = add(&["add", "--wrap-with-directory", "a.txt"]).ok("add -w");
    assert_eq!(
        out,
        format!("added {cid} a.txt\nadded QmcGCBgRnvm1etP6XjQRBi4ixPEuuGrXCKkoUjcjxxgmqB \n")
    );
    wait_kubo(kb, "QmcGCBgRnvm1etP6XjQRBi4ixPEuuGrXCKkoUjcjxxgmqB", true).await;

    // A CAR exported by B's daemon (content A's daemon never saw).
    let car_root = kb
        .add_with("add?pin=false", "car.txt", b"inside a car\n")
        .await;
    let car_root = car_root.last().unwrap()["Hash"]
        .as_str()
        .unwrap()
        .to_string();
    let export = Command::new(real_bin("ipfs"))
        .args(["dag", "export", &car_root])
        .env("IPFS_PATH", kb.dir().join("repo"))
        .output()
        .expect("ipfs dag export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    std::fs::write(files.join("f.car"), &export.stdout).unwrap();
    assert_eq!(
        add(&["add", "--format", "car", "f.car"]).ok("add car"),
        format!("added {car_root} f.car\n")
    );
    wait_kubo(ka, &car_root, true).await;
    wait_kubo(kb, &car_root, true).await;
    // ctl refuses to wrap a CAR before sending anything.
    let wrapped = add(&["add", "--format", "car", "-w", "f.car"]);
    assert_eq!(wrapped.code, 1);
    assert!(
        wrapped.err.contains("wrap-with-directory is not supported"),
        "{}",
        wrapped.err
    );

    // --local with one replica, named: sent to B, so B holds it.
    let local = kubo_cid(kb, "", b"only on b\n").await;
    let items = ctl_in(
        &files,
        &b.api,
        &[
            "--enc",
            "json",
            "add",
            "--local",
            "--name",
            "loc",
            "--replication-min",
            "1",
            "--replication-max",
            "1",
            "local.txt",
        ],
    )
    .json("add --local");
    assert_eq!(items[0]["cid"], local.as_str());
    assert_eq!(ids(&items[0]["allocations"]), vec![b.id.clone()]);
    wait_kubo(kb, &local, true).await;
    let out = ctl(&a.api, &["pin", "ls", &local]).ok("pin ls");
    assert!(
        out.starts_with(&format!(
            "{local} | loc | PIN | Repl. Factor: 1--1 | Allocations: [{}] | Recursive |",
            b.id
        )),
        "{out}"
    );
    assert!(!ka.recursive_pins().await.contains(&local));

    // --allocations: added through A, pinned by B only.
    let alloc = kubo_cid(ka, "", b"allocated to b\n").await;
    let items = add(&[
        "--enc",
        "json",
        "add",
        "--allocations",
        &b.id,
        "--rmin",
        "1",
        "--rmax",
        "1",
        "alloc.txt",
    ])
    .json("add --allocations");
    assert_eq!(ids(&items[0]["allocations"]), vec![b.id.clone()]);
    wait_kubo(kb, &alloc, true).await;
    assert!(!ka.recursive_pins().await.contains(&alloc));

    // --no-pin: added, named destinations, not in the pinset.
    let nopin = kubo_cid(ka, "", b"never pinned\n").await;
    let items = add(&["--enc", "json", "add", "--no-pin", "nopin.txt"]).json("add --no-pin");
    assert_eq!(items[0]["cid"], nopin.as_str());
    let missing = ctl(&a.api, &["pin", "ls", &nopin]);
    assert_eq!(missing.code, 2, "{}", missing.out);
    assert_eq!(
        missing.out,
        "An error occurred:\n  Code: 404\n  Message: pin is not part of the pinset\n"
    );

    // The DAG options reach the daemon: Kubo's CIDs for the same options
    // (a hash other than sha2-256 makes ctl send CIDv1 with raw leaves).
    let big: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(files.join("big.bin"), &big).unwrap();
    let trickle = kubo_cid(ka, "chunker=size-1000&trickle=true", &big).await;
    assert_eq!(
        add(&[
            "add",
            "--chunker",
            "size-1000",
            "--layout",
            "trickle",
            "big.bin"
        ])
        .ok("add trickle"),
        format!("added {trickle} big.bin\n")
    );
    let sha512 = kubo_cid(
        ka,
        "hash=sha2-512&cid-version=1&raw-leaves=true",
        b"hello ctl\n",
    )
    .await;
    assert_eq!(
        add(&["add", "--hash", "sha2-512", "a.txt"]).ok("add sha2-512"),
        format!("added {sha512} a.txt\n")
    );
    // Dot-files only with --hidden; several paths are wrapped.
    let hidden = add(&["add", "-r", "--hidden", "hid"]).ok("add -H");
    assert!(
        hidden.contains(" hid/.dot\n") && hidden.contains(" hid/seen\n"),
        "{hidden}"
    );
    let plain = add(&["add", "-r", "hid"]).ok("add");
    assert!(
        !plain.contains(".dot") && plain.contains(" hid/seen\n"),
        "{plain}"
    );
    let several = add(&["add", "--no-stream", "a.txt", "dir/one.txt"]).ok("add two paths");
    assert_eq!(
        several,
        format!(
            "added {cid} a.txt\nadded QmUB9Nr7RpqNYQpyh4W9r3RQNttiPQ6BQ9iQLkw9LztJFz one.txt\n\
             added QmPo6WBGfzHaxVgnAbUdX3j6hrAVwc9GPcuxYCpiXoaq6q \n"
        )
    );

    // --wait returns once every peer has pinned it.
    let waited = kubo_cid(ka, "", b"waited for\n").await;
    add(&["add", "--wait", "wait.txt"]).ok("add --wait");
    assert!(ka.recursive_pins().await.contains(&waited));
    assert!(
        kb.recursive_pins().await.contains(&waited),
        "--wait returned before B pinned"
    );
}

async fn pin_checks(a: &TestPeer, b: &TestPeer, ka: &Kubo, kb: &Kubo) {
    // Content on A's daemon only, not pinned.
    let add = |data: &'static [u8]| async move {
        let lines = ka.add_with("add?pin=false", "x", data).await;
        lines.last().unwrap()["Hash"].as_str().unwrap().to_string()
    };
    let (one, two, direct) = (
        add(b"pin one\n").await,
        add(b"pin two\n").await,
        add(b"pin direct\n").await,
    );

    // pin add with every option, without status: the pin as ctl prints it.
    let out = ctl(
        &a.api,
        &[
            "pin",
            "add",
            "--no-status",
            "--name",
            "first",
            "--metadata",
            "kind=text",
            "--metadata",
            "by=ctl",
            "--expire-in",
            "1h",
            &one,
        ],
    )
    .ok("pin add");
    assert!(
        out.starts_with(&format!(
            "{one} | first | PIN | Repl. Factor: -1 | Allocations: [everywhere] | Recursive | Metadata: yes | Exp: "
        )),
        "{out}"
    );
    // Written on A: B lists it once the write has reached it.
    let pin = wait_for("B to list the pin made on A", DEADLINE, || async {
        let run = ctl(&b.api, &["--enc", "json", "pin", "ls", &one]);
        (run.code == 0).then(|| run.json("pin ls").remove(0))
    })
    .await;
    assert_eq!(pin["name"], "first");
    assert_eq!(pin["metadata"]["kind"], "text");
    assert_eq!(pin["metadata"]["by"], "ctl");
    assert_ne!(pin["expire_at"], "0001-01-01T00:00:00Z", "{pin}");
    wait_kubo(kb, &one, true).await;

    // --wait with one replica: the status printed is the one waited for.
    let out = ctl(
        &a.api,
        &[
            "pin", "add", "--wait", "--rmin", "1", "--rmax", "1", "--name", "second", &two,
        ],
    )
    .ok("pin add --wait");
    assert!(out.starts_with(&format!("{two} | second:\n")), "{out}");
    assert_eq!(out.matches(": PINNED | ").count(), 1, "{out}");
    assert_eq!(out.matches(": REMOTE | ").count(), 1, "{out}");
    // --wait gives up at --wait-timeout on what nobody has: exit 62.
    let nobody = &cids("ctl-nobody", 1)[0];
    let timed_out = ctl(
        &a.api,
        &["pin", "add", "--wait", "--wait-timeout", "2s", nobody],
    );
    assert_eq!(timed_out.code, 62, "{} {}", timed_out.out, timed_out.err);
    assert!(
        timed_out
            .err
            .contains("error waiting for pin status: context deadline exceeded"),
        "{}",
        timed_out.err
    );
    ctl(&a.api, &["pin", "rm", "--no-status", nobody]).ok("pin rm");

    // --mode direct: a direct pin on the daemons.
    let out = ctl(
        &a.api,
        &["pin", "add", "--no-status", "--mode", "direct", &direct],
    )
    .ok("pin add direct");
    assert!(
        out.contains(" | PIN-DIRECT | ") && out.contains(" | Direct | "),
        "{out}"
    );
    wait_for("a direct pin on B's daemon", DEADLINE, || async {
        direct_pins(kb).await.contains(&direct).then_some(())
    })
    .await;

    // pin update: the new pin copies the old one's name and allocations.
    let updated = add(b"pin two, updated\n").await;
    let out = ctl(&a.api, &["pin", "update", "--no-status", &two, &updated]).ok("pin update");
    let old = &ctl(&a.api, &["--enc", "json", "pin", "ls", &two]).json("pin ls")[0];
    let old_allocs = old["allocations"][0].as_str().unwrap().to_string();
    assert!(
        out.starts_with(&format!(
            "{updated} | second | PIN | Repl. Factor: 1--1 | Allocations: [{old_allocs}] | Recursive |"
        )),
        "{out}"
    );
    let new = &ctl(&a.api, &["--enc", "json", "pin", "ls", &updated]).json("pin ls")[0];
    assert_eq!(new["pin_update"], two.as_str());
    let missing = ctl(&a.api, &["pin", "update", "--no-status", nobody, &updated]);
    assert_eq!(missing.code, 2);
    assert!(missing.out.contains("Code: 404"), "{}", missing.out);

    // status: all, one, filtered, local; text and JSON.
    let out = ctl(&a.api, &["status", &one]).ok("status");
    assert!(out.starts_with(&format!("{one} | first:\n")), "{out}");
    for name in ["peer-a", "peer-b"] {
        assert!(
            out.contains(&format!("    > {name:<20} : PINNED | ")),
            "{out}"
        );
    }
    let st = &ctl(&a.api, &["--enc", "json", "status", &one]).json("status")[0];
    let map = st["peer_map"].as_object().unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(map[&a.id]["ipfs_peer_id"], ka.id());
    assert_eq!(map[&b.id]["ipfs_peer_id"], kb.id());
    // A pinned status shows the pin's (whole-second) time, as the reference.
    assert_eq!(map[&a.id]["timestamp"], st["created"]);
    assert!(!st["created"].as_str().unwrap().contains('.'), "{st}");
    let local =
        &ctl(&a.api, &["--enc", "json", "status", "--local", &one]).json("status --local")[0];
    assert_eq!(local["peer_map"].as_object().unwrap().len(), 1);
    assert!(local["peer_map"][&a.id].is_object());
    // The one-replica pins, each with its one remote peer only.
    let remote =
        ctl(&a.api, &["--enc", "json", "status", "--filter", "remote"]).json("status --filter");
    assert!(
        remote.iter().any(|s| s["cid"] == two.as_str()),
        "{remote:?}"
    );
    assert!(
        !remote.iter().any(|s| s["cid"] == direct.as_str()),
        "{remote:?}"
    );
    for s in &remote {
        let map = s["peer_map"].as_object().unwrap();
        assert_eq!(map.len(), 1, "{s}");
        assert!(map.values().all(|e| e["status"] == "remote"), "{s}");
    }
    let bad = ctl(&a.api, &["status", "--filter", "bogus"]);
    assert_eq!(
        (bad.code, bad.err.as_str()),
        (1, "error parsing filter flag: invalid filter name\n")
    );
    let all = ctl(&a.api, &["--enc", "json", "status"]).json("status");
    assert!(
        all.iter().any(|s| s["cid"] == one.as_str())
            && all.iter().any(|s| s["cid"] == direct.as_str())
    );

    // pin ls: all, filtered.
    let out = ctl(&a.api, &["pin", "ls"]).ok("pin ls");
    for cid in [&one, &two, &direct, &updated] {
        assert!(out.contains(&format!("{cid} | ")), "{out}");
    }
    assert_eq!(
        ctl(&a.api, &["pin", "ls", "--filter", "meta-pin"]).ok("pin ls --filter"),
        ""
    );

    // recover: one CID (its status), all (nothing failed: nothing printed).
    let out = ctl(&a.api, &["recover", &one]).ok("recover");
    assert!(
        out.starts_with(&format!("{one} | first:\n")) && out.contains(": PINNED | "),
        "{out}"
    );
    assert_eq!(ctl(&a.api, &["recover"]).ok("recover all"), "");
    assert_eq!(
        ctl(&a.api, &["recover", "--local"]).ok("recover --local"),
        ""
    );

    // pin rm --wait: unpinned everywhere when it returns.
    let out = ctl(&b.api, &["pin", "rm", "--wait", &one]).ok("pin rm --wait");
    assert!(out.starts_with(&format!("{one}:\n")), "{out}");
    assert_eq!(out.matches(": UNPINNED | ").count(), 2, "{out}");
    assert!(!ka.recursive_pins().await.contains(&one));
    assert!(!kb.recursive_pins().await.contains(&one));
    let gone = ctl(&a.api, &["--enc", "json", "pin", "ls", &one]);
    assert_eq!(gone.code, 2);
    let err: Value = serde_json::from_str(&gone.out).unwrap();
    assert_eq!(err["code"], 404);
    assert_eq!(err["message"], "pin is not part of the pinset");
}

async fn health_checks(a: &TestPeer, b: &TestPeer, ka: &Kubo, kb: &Kubo) {
    let names = ctl(&a.api, &["health", "metrics"]).ok("health metrics");
    for name in ["ping", "freespace"] {
        assert!(names.lines().any(|l| l == name), "{names}");
    }
    let free = ctl(&a.api, &["--enc", "json", "health", "metrics", "freespace"]).json("metrics");
    let mut peers: Vec<String> = free
        .iter()
        .flat_map(|m| {
            m.as_array()
                .unwrap()
                .iter()
                .map(|m| m["peer"].as_str().unwrap().to_string())
        })
        .collect();
    peers.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(peers, want);
    assert_eq!(ctl(&a.api, &["health", "alerts"]).ok("alerts"), "");
    assert_eq!(
        ctl(&a.api, &["--enc", "json", "health", "alerts"]).json("alerts"),
        vec![Value::Array(vec![])]
    );
    let bw = &ctl(&a.api, &["--enc", "json", "health", "bandwidth"]).json("bandwidth")[0];
    assert!(bw.as_object().is_some_and(|m| !m.is_empty()), "{bw}");
    let out = ctl(&a.api, &["health", "bandwidth"]).ok("bandwidth");
    assert!(
        out.lines()
            .any(|l| l.contains("/meshsub/") && l.contains(": In: ") && l.contains("RateOut: ")),
        "{out}"
    );

    // graph: both peers, both daemons, each peer linked to its daemon.
    let dot = ctl(&a.api, &["health", "graph"]).ok("health graph");
    assert!(dot.starts_with("digraph cluster {"), "{dot}");
    for (name, ipfs) in [("peer-a", ka.id()), ("peer-b", kb.id())] {
        assert!(dot.contains(&format!("<B> {name} </B>")), "{dot}");
        assert!(dot.contains(&format!("group=\"{ipfs}\"")), "{dot}");
    }
    // ctl names this peer C<n>, the peers it trusts T<n>, daemons I<n>.
    let edges: Vec<(&str, &str)> = dot.lines().filter_map(|l| l.split_once(" -> ")).collect();
    let peer = |n: &str| n.starts_with('C') || n.starts_with('T');
    let between = edges.iter().filter(|(f, t)| peer(f) && peer(t)).count();
    let to_daemons = edges
        .iter()
        .filter(|(f, t)| peer(f) && t.starts_with('I'))
        .count();
    assert_eq!((between, to_daemons), (2, 2), "{dot}");

    // ipfs gc: every peer's daemon, then only the contacted one's.
    let out = ctl(&a.api, &["ipfs", "gc"]).ok("ipfs gc");
    assert!(out.contains("peer-a") && out.contains("peer-b"), "{out}");
    let gc = &ctl(&a.api, &["--enc", "json", "ipfs", "gc", "--local"]).json("ipfs gc --local")[0];
    let map = gc["peer_map"].as_object().unwrap();
    assert_eq!(map.keys().collect::<Vec<_>>(), vec![&a.id]);
}

/// Basic auth and HTTPS as ctl 1.1.6 speaks them. ctl has no bearer
/// token flag: its `--basic-auth` always sends `Authorization: Basic`, so
/// a JWT from `POST /token` given as the password is refused, as by the
/// reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_with_basic_auth_and_https() {
    let dir = temp();
    let certs = TestCerts::new();
    certs.write(dir.path());
    let spec = PeerSpec {
        env: vec![(
            "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS".into(),
            "alice:secret".into(),
        )],
        ..PeerSpec::default()
    };
    init_folder(dir.path(), &spec);
    let path = dir.path().join("service.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["api"]["restapi"]["ssl_cert_file"] = "cert.pem".into();
    config["api"]["restapi"]["ssl_key_file"] = "key.pem".into();
    std::fs::write(&path, config.to_string()).unwrap();
    let p = TestPeer::start_https(dir.path().into(), spec, &certs.ca).await;
    let api = &p.api;
    let version = format!("{}\n", env!("CARGO_PKG_VERSION"));

    // --basic-auth implies https; the certificate is the test CA's.
    let anyhow = ["--no-check-certificate", "--basic-auth", "alice:secret"];
    assert_eq!(
        ctl(api, &[&anyhow[..], &["version"]].concat()).ok("version"),
        version
    );
    let id = &ctl(api, &[&anyhow[..], &["--enc", "json", "id"]].concat()).json("id")[0];
    assert_eq!(id["id"], p.id.as_str());
    let cid = &cids("ctl-auth", 1)[0];
    let out = ctl(
        api,
        &[
            &anyhow[..],
            &["pin", "add", "--no-status", "--name", "tls", cid],
        ]
        .concat(),
    )
    .ok("pin add");
    assert!(out.starts_with(&format!("{cid} | tls | PIN |")), "{out}");
    assert_eq!(p.pinset().await.unwrap(), vec![cid.clone()]);
    let https = [
        "--https",
        "--no-check-certificate",
        "--basic-auth",
        "alice:secret",
    ];
    assert_eq!(
        ctl(api, &[&https[..], &["version"]].concat()).ok("version"),
        version
    );

    // Refusals, exit 2 with the error object.
    let refused = |args: &[&str], message: &str| {
        let run = ctl(
            api,
            &[&["--https", "--no-check-certificate"], args, &["version"]].concat(),
        );
        assert_eq!(run.code, 2, "{args:?}: {} {}", run.out, run.err);
        assert_eq!(
            run.out,
            format!("An error occurred:\n  Code: 401\n  Message: {message}\n")
        );
    };
    refused(&[], "unauthorized: no auth provided");
    refused(
        &["--basic-auth", "alice:wrong"],
        "unauthorized: access denied",
    );
    let token: Value = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certs.ca.as_bytes()).unwrap())
        .build()
        .unwrap()
        .post(format!("{api}/token"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = token["token"].as_str().expect("a token");
    refused(
        &["--basic-auth", &format!("alice:{jwt}")],
        "unauthorized: access denied",
    );
    refused(&["--basic-auth", jwt], "unauthorized: access denied");
    // JSON errors.
    let run = ctl(
        api,
        &[
            "--https",
            "--no-check-certificate",
            "--enc",
            "json",
            "version",
        ],
    );
    assert_eq!(run.code, 2);
    let err: Value = serde_json::from_str(&run.out).unwrap();
    assert_eq!(
        (err["code"].as_i64(), err["message"].as_str()),
        (Some(401), Some("unauthorized: no auth provided"))
    );

    // Transport failures, exit 1: an unknown CA, plain HTTP to HTTPS.
    let unknown = ctl(api, &["--basic-auth", "alice:secret", "version"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .out
            .contains("certificate signed by unknown authority"),
        "{}",
        unknown.out
    );
    let plain = ctl(
        api,
        &["--basic-auth", "alice:secret", "--force-http", "version"],
    );
    assert_eq!(plain.code, 2, "{} {}", plain.out, plain.err);
    assert!(plain.out.contains("Code: 400"), "{}", plain.out);
}
