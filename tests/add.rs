//! `POST /add` against real js-ipfs daemons: the CIDs equal what the
//! daemon computes for the same files and options (and Kubo's for a known
//! input), the root becomes a cluster pin with allocations, and the content
//! ends up pinned on the allocated peers' daemons.

mod common;

use common::jsipfs::JsIpfs;
use common::*;
use serde_json::Value;

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";

fn beside(daemon: &JsIpfs, bootstrap: Option<&str>) -> PeerSpec {
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

/// `(name, cid)` of every node line, in order. CIDs are compared as CIDs:
/// js-ipfs prints CIDv1 in base58btc where Kubo (and we) print base32.
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
    let (da, db) = tokio::join!(JsIpfs::start(&dirs[0]), JsIpfs::start(&dirs[1]));
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
        ("", vec![("big.bin", Some(&big))]),
    ];
    for (query, entries) in &cases {
        // What the js-ipfs daemon computes on its own (nothing stored).
        let sep = if query.is_empty() { "" } else { "&" };
        let (_, want, _) = post(
            &format!(
                "{}/api/v0/add?only-hash=true&pin=false{sep}{query}",
                db.api_url()
            ),
            entries,
        )
        .await;
        let want = nodes(&want, "Name", "Hash");
        assert!(!want.is_empty(), "js-ipfs added nothing for {query:?}");

        let (status, got, text) = post(
            &format!("{}/add?replication=2&name=case{sep}{query}", a.api),
            entries,
        )
        .await;
        assert_eq!(status, 200, "{query}: {text}");
        assert_eq!(nodes(&got, "name", "cid"), want, "{query}");
        let root = got.last().unwrap();
        let root_cid = parse(&root["cid"]);
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
            wait_for(
                &format!("{root_cid} pinned on {}", daemon.id()),
                DEADLINE,
                || async {
                    let pins = daemon.recursive_pins().await;
                    pins.iter()
                        .any(|p| cid::Cid::try_from(p.as_str()).ok() == Some(root_cid))
                        .then_some(())
                },
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_options_no_pin_progress_buffered_and_errors() {
    let tmp = temp();
    let da = JsIpfs::start(&tmp.path().join("ipfs-a")).await;
    let a = TestPeer::start(tmp.path().join("a"), beside(&da, None)).await;
    let data = noise(600_000, 3);

    // no-pin: blocks in the daemon, no cluster pin.
    let (status, lines, text) = post(
        &format!("{}/add?no-pin=true", a.api),
        &[("f.bin", Some(&data))],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let cid = lines.last().unwrap()["cid"].as_str().unwrap().to_string();
    assert!(lines.last().unwrap().get("allocations").is_none());
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
    ] {
        let (status, lines, text) =
            post(&format!("{}/add?{query}", a.api), &[("f", Some(b"x"))]).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert_eq!(lines[0]["message"], message);
    }
}
