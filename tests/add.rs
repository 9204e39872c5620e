//! `POST /add` against real Kubo daemons: the CIDs equal what the
//! daemon computes for the same files and options (and Kubo's for a known
//! input), the root becomes a cluster pin with allocations, and the content
//! ends up pinned on the allocated peers' daemons.

mod common;

use common::kubo::Kubo;
use common::*;
use serde_json::Value;

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";

fn beside(daemon: &Kubo, bootstrap: Option<&str>) -> PeerSpec {
    PeerSpec {
        secret: Some(SECRET.to_string()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default(),
        env: vec![(
            "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
            daemon.api_multiaddr(),
        )],
    }
}

/// One entry of a multipart add: a directory (`None`) or a file.
type Entry<'a> = (&'a str, Option<&'a [u8]>);

/// A multipart body as ipfs clients send it: one part per file or
/// directory, paths URL-escaped in `filename`.
fn multipart(entries: &[Entry<'_>]) -> (String, Vec<u8>) {
    let boundary = format!("----pincluster-add-{:032x}", rand::random::<u128>());
    let mut body = Vec::new();
    for (path, data) in entries {
        let escaped = path.replace('/', "%2F");
        let kind = if data.is_some() {
            "application/octet-stream"
        } else {
            "application/x-directory"
        };
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{escaped}\"\r\nContent-Type: {kind}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data.unwrap_or_default());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// POSTs `entries` to `url`; the status and the NDJSON lines.
async fn post(url: &str, entries: &[Entry<'_>]) -> (u16, Vec<Value>, String) {
    let (content_type, body) = multipart(entries);
    let res = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST add");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let lines = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (status, lines, text)
}

/// `(name, cid)` of every node line, in order. CIDs are compared as CIDs,
/// not as strings: the same CID has many string forms.
fn nodes(lines: &[Value], name: &str, cid: &str) -> Vec<(String, cid::Cid)> {
    lines
        .iter()
        .filter(|l| l[cid].is_string())
        .map(|l| (l[name].as_str().unwrap().to_string(), parse(&l[cid])))
        .collect()
}

fn parse(cid: &Value) -> cid::Cid {
    cid::Cid::try_from(cid.as_str().expect("a CID string")).expect("a CID")
}

/// Waits until `daemon` holds a recursive pin of `root`.
async fn wait_pinned(daemon: &Kubo, root: cid::Cid) {
    wait_for(
        &format!("{root} pinned on {}", daemon.id()),
        DEADLINE,
        || async {
            let pins = daemon.recursive_pins().await;
            pins.iter()
                .any(|p| cid::Cid::try_from(p.as_str()).ok() == Some(root))
                .then_some(())
        },
    )
    .await;
}

/// Deterministic bytes that do not compress or dedupe.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_gives_the_daemons_cids_and_pins_on_the_allocated_daemons() {
    let tmp = temp();
    let dirs = ["ipfs-a", "ipfs-b"].map(|d| tmp.path().join(d));
    let (da, db) = tokio::join!(Kubo::start(&dirs[0]), Kubo::start(&dirs[1]));
    let a = TestPeer::start(tmp.path().join("a"), beside(&da, None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(tmp.path().join("b"), beside(&db, Some(&addr))).await;
    for p in [&a, &b] {
        wait_for("both peers", DEADLINE, || async {
            (p.peer_ids().await?.len() == 2).then_some(())
        })
        .await;
    }

    // Kubo's CID for "hello world\n" (the one its docs show).
    let (status, lines, text) = post(
        &format!("{}/add?replication=1", a.api),
        &[("hello.txt", Some(b"hello world\n"))],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["name"], "hello.txt");
    assert_eq!(
        lines[0]["cid"],
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    );
    assert_eq!(lines[0]["size"], 20);
    assert_eq!(lines[0]["allocations"].as_array().unwrap().len(), 1);

    let small = noise(300_000, 1);
    let big = noise(50 << 20, 2);
    let nested: Vec<Entry<'_>> = vec![
        ("folder", None),
        ("folder/a.txt", Some(b"aaa\n")),
        ("folder/sub", None),
        ("folder/sub/b.bin", Some(&small)),
    ];
    let cases: Vec<(&str, Vec<Entry<'_>>)> = vec![
        ("", vec![("one.bin", Some(&small))]),
        ("", nested.clone()),
        (
            "wrap-with-directory=true",
            vec![("x.txt", Some(b"x\n")), ("y.txt", Some(b"y\n"))],
        ),
        ("cid-version=1&raw-leaves=true", nested.clone()),
        (
            "chunker=size-65536&cid-version=1",
            vec![("c.bin", Some(&small))],
        ),
        ("layout=trickle", vec![("t.bin", Some(&small))]),
        // A hash other than sha2-256 needs CIDv1, as Kubo decides
        // (sha2-512).
        ("hash=SHA2-512", vec![("h.bin", Some(&small))]),
        ("", vec![("big.bin", Some(&big))]),
    ];
    for (query, entries) in &cases {
        // What the Kubo daemon computes on its own (nothing stored).
        let sep = if query.is_empty() { "" } else { "&" };
        // The daemon's own name for the trickle layout; hash names in
        // lower case (the cluster takes them in any case, as Go does).
        let daemon_query = query
            .replace("layout=trickle", "trickle=true")
            .to_ascii_lowercase();
        let (_, want, _) = post(
            &format!(
                "{}/api/v0/add?only-hash=true&pin=false{sep}{daemon_query}",
                db.api_url()
            ),
            entries,
        )
        .await;
        let want = nodes(&want, "Name", "Hash");
        assert!(!want.is_empty(), "Kubo added nothing for {query:?}");

        let (status, got, text) = post(
            &format!("{}/add?replication=2&name=case{sep}{query}", a.api),
            entries,
        )
        .await;
        assert_eq!(status, 200, "{query}: {text}");
        assert_eq!(nodes(&got, "name", "cid"), want, "{query}");
        let root = got.last().unwrap();
        let root_cid = parse(&root["cid"]);
        if query.contains("hash=") {
            assert_eq!(root_cid.version(), cid::Version::V1, "{query}");
            assert_eq!(root_cid.hash().code(), 0x13, "sha2-512: {query}");
        }
        if query.contains("cid-version=1") {
            let printed = root["cid"].as_str().unwrap();
            assert!(
                printed.starts_with("bafy"),
                "base32 as Kubo prints: {printed}"
            );
        }
        let mut allocations: Vec<String> = root["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        allocations.sort();
        let mut both = vec![a.id.clone(), b.id.clone()];
        both.sort();
        assert_eq!(allocations, both, "{query}");

        // A cluster pin, and pinned on both allocated daemons (B's daemon
        // fetches it from A's over bitswap).
        let pin = a
            .get_json(&format!("/allocations/{root_cid}"))
            .await
            .unwrap();
        assert_eq!(pin["name"], "case");
        assert_eq!(pin["mode"], "recursive");
        for daemon in [&da, &db] {
            wait_pinned(daemon, root_cid).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_options_no_pin_progress_buffered_and_errors() {
    let tmp = temp();
    let da = Kubo::start(&tmp.path().join("ipfs-a")).await;
    let a = TestPeer::start(tmp.path().join("a"), beside(&da, None)).await;
    let data = noise(600_000, 3);

    // no-pin: blocks in the daemon, no cluster pin. As the reference's
    // adder, it still names where the blocks go: every live peer (A, once
    // its own ping is known) for a pin everywhere.
    wait_for("A's own ping", DEADLINE, || async {
        let pings = a.get_json("/monitor/metrics/ping").await?;
        pings
            .as_array()?
            .iter()
            .any(|m| m["peer"] == a.id.as_str())
            .then_some(())
    })
    .await;
    let (status, lines, text) = post(
        &format!("{}/add?no-pin=true", a.api),
        &[("f.bin", Some(&data))],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let cid = lines.last().unwrap()["cid"].as_str().unwrap().to_string();
    assert_eq!(
        lines.last().unwrap()["allocations"],
        serde_json::json!([a.id]),
        "{text}"
    );
    let res = reqwest::get(format!("{}/allocations/{cid}", a.api))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // progress: byte counts first, with a null cid.
    let (_, lines, _) = post(
        &format!("{}/add?progress=true", a.api),
        &[("f.bin", Some(&data))],
    )
    .await;
    let progress: Vec<&Value> = lines.iter().filter(|l| l["cid"].is_null()).collect();
    assert!(!progress.is_empty(), "{lines:?}");
    assert!(progress.iter().all(|p| p["bytes"].as_u64().unwrap() > 0));
    assert_eq!(lines.last().unwrap()["cid"], cid.as_str());

    // stream-channels=false: one JSON array.
    let (content_type, body) = multipart(&[("f.bin", Some(&data))]);
    let res = reqwest::Client::new()
        .post(format!("{}/add?stream-channels=false", a.api))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let all: Value = res.json().await.unwrap();
    assert_eq!(all.as_array().unwrap().last().unwrap()["cid"], cid.as_str());

    // Errors: not multipart, bad options.
    let res = reqwest::Client::new()
        .post(format!("{}/add", a.api))
        .body("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let e: Value = res.json().await.unwrap();
    assert_eq!(
        e["message"],
        "request Content-Type isn't multipart/form-data"
    );
    for (query, message) in [
        ("format=zip", "format parameter is invalid"),
        ("layout=flat", "layout parameter is invalid"),
        ("progress=maybe", "parameter progress invalid"),
        ("shard=true", "sharded adds are not supported"),
        ("nocopy=true", "the filestore is not supported"),
    ] {
        let (status, lines, text) =
            post(&format!("{}/add?{query}", a.api), &[("f", Some(b"x"))]).await;
        assert_eq!(status, 400, "{query}: {text}");
        let got = lines[0]["message"].as_str().unwrap_or_default();
        assert!(got.contains(message), "{query}: {text}");
    }
}

/// `dag/export` of `root` from a Kubo daemon: a CARv1 built by Kubo.
async fn export(daemon: &Kubo, root: &str) -> Vec<u8> {
    let res = reqwest::Client::new()
        .post(format!("{}/api/v0/dag/export?arg={root}", daemon.api_url()))
        .send()
        .await
        .expect("dag/export");
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap().to_vec()
}

/// The sum of the sizes of every block under `root`, as the daemon
/// reports them (`refs` then `block/stat`): what `bytes` must say.
async fn dag_bytes(daemon: &Kubo, root: &str) -> u64 {
    let mut total = daemon.call(&format!("block/stat?arg={root}")).await["Size"]
        .as_u64()
        .unwrap();
    let refs = daemon
        .call_ndjson(&format!("refs?arg={root}&recursive=true&unique=true"))
        .await;
    for r in refs {
        let cid = r["Ref"].as_str().unwrap();
        total += daemon.call(&format!("block/stat?arg={cid}")).await["Size"]
            .as_u64()
            .unwrap();
    }
    total
}

/// `cat` of `path` from a daemon, within the deadline.
async fn cat(daemon: &Kubo, path: &str) -> Vec<u8> {
    let res = reqwest::Client::new()
        .post(format!("{}/api/v0/cat?arg={path}", daemon.api_url()))
        .timeout(DEADLINE)
        .send()
        .await
        .expect("cat");
    assert_eq!(res.status(), 200, "cat {path}");
    res.bytes().await.unwrap().to_vec()
}

/// A CARv1 with `roots` and the sections of `car` (whose header is
/// replaced): how the tests make CARs the daemons would not.
fn with_roots(car: &[u8], roots: &[cid::Cid]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Header<'a> {
        roots: &'a [cid::Cid],
        version: u64,
    }
    let (len, used) = varint(car);
    let header = serde_ipld_dagcbor::to_vec(&Header { roots, version: 1 }).unwrap();
    assert!(header.len() < 128);
    let mut out = vec![header.len() as u8];
    out.extend_from_slice(&header);
    out.extend_from_slice(&car[used + len as usize..]);
    out
}

/// A varint at the start of `bytes`: its value and length.
fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0;
    for (i, b) in bytes.iter().enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("no varint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_car_is_imported_verified_and_pinned_on_the_allocated_daemons() {
    let tmp = temp();
    let dirs = ["ipfs-x", "ipfs-a", "ipfs-b"].map(|d| tmp.path().join(d));
    let (mut dx, da, db) = tokio::join!(
        Kubo::start(&dirs[0]),
        Kubo::start(&dirs[1]),
        Kubo::start(&dirs[2])
    );

    // CARs made by a daemon outside the cluster: a file of five blocks, a
    // folder with CIDv1 and raw leaves, and a file for the broken cases.
    let file = noise(1 << 20, 4);
    let file_root = dx.add("file.bin", &file).await;
    let (_, folder, _) = post(
        &format!(
            "{}/api/v0/add?pin=true&cid-version=1&wrap-with-directory=true",
            dx.api_url()
        ),
        &[
            ("a.txt", Some(b"first\n")),
            ("b.bin", Some(&file[..300_000])),
        ],
    )
    .await;
    let dir_root = folder.last().unwrap()["Hash"].as_str().unwrap().to_string();
    let spoiled = noise(600_000, 5);
    let spoiled_root = dx.add("spoiled.bin", &spoiled).await;
    let local_root = dx.add("local.bin", b"for the named peer\n").await;
    let mut cars = Vec::new();
    for root in [&file_root, &dir_root, &spoiled_root, &local_root] {
        cars.push((export(&dx, root).await, dag_bytes(&dx, root).await));
    }
    // Whatever reaches the cluster's daemons now comes from the CARs.
    assert!(dx.stop());

    let a = TestPeer::start(tmp.path().join("a"), beside(&da, None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(tmp.path().join("b"), beside(&db, Some(&addr))).await;
    for p in [&a, &b] {
        wait_for("both peers", DEADLINE, || async {
            (p.peer_ids().await?.len() == 2).then_some(())
        })
        .await;
    }
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();

    let cases = [
        (&file_root, &cars[0], file.len() as u64, "file.car"),
        (&dir_root, &cars[1], 0, "folder.car"),
    ];
    for (root, (car, bytes), size, name) in cases {
        let (status, lines, text) = post(
            &format!("{}/add?format=car&replication=2&name={name}", a.api),
            &[(name, Some(car))],
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(lines.len(), 1, "one object for a CAR: {text}");
        let out = &lines[0];
        assert_eq!(out["name"], name, "{text}");
        let root_cid = parse(&out["cid"]);
        assert_eq!(root_cid, cid::Cid::try_from(root.as_str()).unwrap());
        assert_eq!(out["bytes"].as_u64(), Some(*bytes), "{text}");
        assert_eq!(out["size"].as_u64().unwrap_or(0), size, "{text}");
        let mut allocations: Vec<String> = out["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        allocations.sort();
        assert_eq!(allocations, both, "{text}");
        let pin = a
            .get_json(&format!("/allocations/{root_cid}"))
            .await
            .unwrap();
        assert_eq!(pin["name"], name);
        // Pinned on both daemons; B's fetched it from A's over bitswap.
        for daemon in [&da, &db] {
            wait_pinned(daemon, root_cid).await;
        }
    }
    for daemon in [&da, &db] {
        assert!(cat(daemon, &file_root).await == file, "{}", daemon.id());
        assert_eq!(cat(daemon, &format!("{dir_root}/a.txt")).await, b"first\n");
        assert!(cat(daemon, &format!("{dir_root}/b.bin")).await == file[..300_000]);
    }

    // local=true with user-allocations: the named peer, not this one, as
    // the reference does.
    let (status, lines, text) = post(
        &format!(
            "{}/add?format=car&local=true&replication=1&user-allocations={}",
            a.api, b.id
        ),
        &[("local.car", Some(&cars[3].0))],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(lines[0]["allocations"], serde_json::json!([b.id]), "{text}");

    // Broken uploads: nothing is pinned, in the cluster or on the daemon.
    let spoiled_car = &cars[2].0;
    let second = cid::Cid::try_from(file_root.as_str()).unwrap();
    let spoiled_cid = cid::Cid::try_from(spoiled_root.as_str()).unwrap();
    let mut corrupt = spoiled_car.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let two_roots = with_roots(spoiled_car, &[spoiled_cid, second]);
    for (query, car, status_want, message) in [
        (
            "format=car",
            &corrupt,
            500,
            "do not match the hash in its CID",
        ),
        (
            "format=car&stream-channels=false",
            &corrupt,
            500,
            "do not match",
        ),
        (
            "format=car",
            &two_roots,
            400,
            "only CAR files with a single root are supported",
        ),
        (
            "format=car&wrap-with-directory=true",
            spoiled_car,
            400,
            "cannot wrap a CAR file upload",
        ),
        (
            "format=foo",
            spoiled_car,
            400,
            "format parameter is invalid",
        ),
        (
            "format=car",
            &b"not a car".to_vec(),
            400,
            "the CAR ends in the middle of the header",
        ),
    ] {
        let (status, lines, text) = post(
            &format!("{}/add?{query}", a.api),
            &[("spoiled.car", Some(car))],
        )
        .await;
        assert_eq!(status, status_want, "{query}: {text}");
        let got = lines[0]["message"].as_str().unwrap_or_default();
        assert!(got.contains(message), "{query}: {text}");
    }
    let res = reqwest::get(format!("{}/allocations/{spoiled_root}", a.api))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(!da.recursive_pins().await.contains(&spoiled_root));
}
