//! The REST API of real `pincluster daemon` processes over real HTTP:
//! every endpoint's status and JSON shape, field by field, its errors, and
//! the reference's HTTP rules (204 for empty streams, 307 for a trailing
//! slash, 404/405 bodies, the `X-Stream-Error` trailer).

mod common;

use common::http::request;
use common::*;
use serde_json::Value;

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";

fn spec() -> PeerSpec {
    PeerSpec {
        secret: Some(SECRET.to_string()),
        ..PeerSpec::default()
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_endpoints_answer_with_the_reference_shapes() {
    let dir = temp();
    let p = TestPeer::start(dir.path().into(), spec()).await;
    let http = reqwest::Client::new();

    // GET /health: 204, no body, and the JSON type the reference sets anyway.
    let res = http.get(format!("{}/health", p.api)).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(res.text().await.unwrap().is_empty());

    let version = p.get_json("/version").await.unwrap();
    assert_eq!(keys(&version), ["version"]);

    let id = p.get_json("/id").await.unwrap();
    assert_eq!(
        keys(&id),
        [
            "addresses",
            "cluster_peers",
            "cluster_peers_addresses",
            "commit",
            "error",
            "id",
            "ipfs",
            "peername",
            "rpc_protocol_version",
            "version"
        ]
    );
    assert_eq!(id["id"], p.id.as_str());
    assert!(
        id["addresses"][0]
            .as_str()
            .unwrap()
            .ends_with(&format!("/p2p/{}", p.id))
    );
    // No IPFS daemon here: the error is in `ipfs.error`, the answer is 200.
    assert!(!id["ipfs"]["error"].as_str().unwrap().is_empty());

    // GET /peers: NDJSON, one ID per line.
    let peers = p.get_ndjson("/peers").await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["id"], p.id.as_str());

    // Metrics names and alerts are JSON arrays; bandwidth an object.
    assert!(p.get_json("/monitor/metrics").await.unwrap().is_array());
    assert!(p.get_json("/health/alerts").await.unwrap().is_array());
    assert!(p.get_json("/health/bandwidth").await.unwrap().is_object());

    // Errors: unknown path 404 JSON, wrong method 405 empty, bad CID 400.
    let res = http.get(format!("{}/nothing", p.api)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        serde_json::json!({"code": 404, "message": "not found"})
    );
    let res = http.put(format!("{}/version", p.api)).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.text().await.unwrap().is_empty());
    let (status, body) = p.pin("not-a-cid", "").await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("error decoding Cid"),
        "{body}"
    );

    // A trailing slash: 307 to the same path and query without it.
    let res = request(&p.api, "POST", "/pins/recover/?local=true", &[]).await;
    assert_eq!(res.status, 307);
    assert_eq!(res.header("location"), Some("/pins/recover?local=true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_allocations_stream_as_ndjson_with_the_trailer() {
    let dir = temp();
    let p = TestPeer::start(dir.path().into(), spec()).await;

    // Nothing pinned: the streams are 204 with no body.
    for path in ["/allocations", "/pins"] {
        let res = request(&p.api, "GET", path, &[]).await;
        assert_eq!(res.status, 204, "{path}");
        assert!(res.body.is_empty(), "{path}");
    }
    let res = request(&p.api, "POST", "/pins/recover", &[]).await;
    assert_eq!(res.status, 204);

    let cids = cids("rest", 3);
    for cid in &cids {
        let (status, pin) = p.pin(cid, "name=n1&meta-kind=test&replication=1").await;
        assert_eq!(status, 200, "{pin}");
        assert_eq!(
            keys(&pin),
            [
                "allocations",
                "cid",
                "expire_at",
                "max_depth",
                "metadata",
                "mode",
                "name",
                "origins",
                "pin_update",
                "reference",
                "replication_factor_max",
                "replication_factor_min",
                "shard_size",
                "timestamp",
                "type",
                "user_allocations"
            ]
        );
        assert_eq!(pin["allocations"], serde_json::json!([p.id]));
        assert_eq!(pin["metadata"], serde_json::json!({"kind": "test"}));
    }
    p.wait_pinset(&cids).await;

    // Without TE: trailers: a complete chunked body, no trailer sent.
    let res = request(&p.api, "GET", "/allocations", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.header("trailer"), Some("X-Stream-Error"));
    assert!(res.complete);
    assert_eq!(res.body.lines().count(), 3);
    for line in res.body.lines() {
        let pin: Value = serde_json::from_str(line).unwrap();
        assert_eq!(pin["type"], "pin");
        assert_eq!(pin["name"], "n1");
    }
    // With TE: trailers: the trailer arrives, empty because all went well.
    let res = request(&p.api, "GET", "/allocations", &[("TE", "trailers")]).await;
    assert!(res.complete);
    assert_eq!(res.trailer("x-stream-error"), Some(""));

    // GET /pins: GlobalPinInfo per line, this peer in the peer_map.
    let res = request(&p.api, "GET", "/pins?local=true", &[("TE", "trailers")]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.trailer("x-stream-error"), Some(""));
    let info: Value = serde_json::from_str(res.body.lines().next().unwrap()).unwrap();
    assert_eq!(
        keys(&info),
        [
            "allocations",
            "cid",
            "created",
            "metadata",
            "name",
            "origins",
            "peer_map"
        ]
    );
    let entry = &info["peer_map"][&p.id];
    for field in [
        "peername",
        "status",
        "timestamp",
        "error",
        "attempt_count",
        "priority_pin",
    ] {
        assert!(entry.get(field).is_some(), "{field} missing in {entry}");
    }

    // GET /allocations/{cid} and the 404 for a CID not in the pinset.
    let one = p
        .get_json(&format!("/allocations/{}", cids[0]))
        .await
        .unwrap();
    assert_eq!(one["cid"], cids[0].as_str());
    let other = &common::cids("absent", 1)[0];
    let missing = p.get_json(&format!("/allocations/{other}")).await.unwrap();
    assert_eq!(
        missing,
        serde_json::json!({"code": 404, "message": "pin is not part of the pinset"})
    );
    assert_eq!(p.unpin(other).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rereads_ipfs_and_answers_with_the_refreshed_status() {
    let kubo = fake_kubo::FakeKubo::start().await;
    let dir = temp();
    let mut s = spec();
    s.env.push((
        "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
        kubo.multiaddr().to_string(),
    ));
    let p = TestPeer::start(dir.path().into(), s).await;
    let cid = kubo.add_block(b"sync me");
    let (status, _) = p.pin(&cid.to_string(), "").await;
    assert_eq!(status, 200);
    wait_for("pinned", DEADLINE, || async {
        let v = p.get_json(&format!("/pins/{cid}?local=true")).await?;
        (v["peer_map"][&p.id]["status"] == "pinned").then_some(())
    })
    .await;
    // Nothing to sync: 204.
    let res = request(&p.api, "POST", "/pins/sync", &[]).await;
    assert_eq!(res.status, 204);

    // The daemon loses the pin behind the cluster's back: sync notices at
    // once (no cached listing) and queues the pin again.
    let port = kubo
        .multiaddr()
        .to_string()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let rm = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v0/pin/rm?arg={cid}"))
        .send()
        .await
        .unwrap();
    assert!(rm.status().is_success());
    let res = request(&p.api, "POST", "/pins/sync", &[]).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let info: Value = serde_json::from_str(res.body.lines().next().unwrap()).unwrap();
    assert_eq!(info["cid"], cid.to_string());
    let status = info["peer_map"][&p.id]["status"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ["pin_queued", "pinning", "pinned"].contains(&status.as_str()),
        "{info}"
    );
    // And the single-CID variant answers with a GlobalPinInfo.
    let res = reqwest::Client::new()
        .post(format!("{}/pins/{cid}/sync", p.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["cid"], cid.to_string());
    assert!(info["peer_map"][&p.id]["status"].is_string());
}

async fn peer_count(p: &TestPeer, n: usize) {
    wait_for(&format!("{n} peers seen by {}", p.id), DEADLINE, || async {
        (p.peer_ids().await?.len() == n).then_some(())
    })
    .await;
}

/// Pins allocated to `peer` in `p`'s pinset.
async fn allocated_to(p: &TestPeer, peer: &str) -> Option<usize> {
    let pins = p.get_ndjson("/allocations").await?;
    Some(
        pins.iter()
            .filter(|pin| {
                pin["allocations"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == peer))
            })
            .count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_peers_removes_a_peer_for_real_and_post_peers_takes_it_back() {
    let dirs: Vec<_> = (0..3).map(|_| temp()).collect();
    let a = TestPeer::start(dirs[0].path().into(), spec()).await;
    let addr = a.cluster_addr().await;
    let joining = PeerSpec {
        bootstrap: vec![addr.clone()],
        ..spec()
    };
    let b = TestPeer::start(dirs[1].path().into(), joining.clone()).await;
    let c = TestPeer::start(dirs[2].path().into(), joining).await;
    for p in [&a, &b, &c] {
        peer_count(p, 3).await;
    }
    let before = cids("removal", 30);
    for cid in &before {
        assert_eq!(a.pin(cid, "replication=1").await.0, 200);
    }
    b.wait_pinset(&before).await;
    assert!(allocated_to(&a, &c.id).await.unwrap() > 0);

    let http = reqwest::Client::new();
    // Bad ids: 400 with the reference's messages.
    let res = http
        .delete(format!("{}/peers/garbage", a.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let e: Value = res.json().await.unwrap();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("error decoding Peer ID: "),
        "{e}"
    );
    let res = http
        .post(format!("{}/peers", a.api))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "error decoding request body"
    );
    let res = http
        .post(format!("{}/peers", a.api))
        .body(r#"{"peer_id":"nope"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "error decoding peer_id"
    );

    // Remove C through A: 204, out of A's and B's peersets, its pins moved.
    let res = http
        .delete(format!("{}/peers/{}", a.api, c.id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    peer_count(&a, 2).await;
    peer_count(&b, 2).await;
    assert_eq!(allocated_to(&a, &c.id).await, Some(0));
    wait_for("B sees the moved allocations", DEADLINE, || async {
        (allocated_to(&b, &c.id).await? == 0).then_some(())
    })
    .await;
    // C still runs, told of its removal; the others do not take it back:
    // new pins never land on it.
    let after = cids("after-removal", 20);
    for cid in &after {
        let (status, pin) = b.pin(cid, "replication=1").await;
        assert_eq!(status, 200);
        assert_ne!(pin["allocations"][0], c.id.as_str(), "{pin}");
    }
    assert_eq!(a.peer_ids().await.unwrap().len(), 2);
    assert_eq!(b.peer_ids().await.unwrap().len(), 2);

    // POST /peers takes it back, everywhere.
    let res = http
        .post(format!("{}/peers", a.api))
        .body(format!(r#"{{"peer_id":"{}"}}"#, c.id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id: Value = res.json().await.unwrap();
    assert_eq!(id["id"], c.id.as_str());
    assert!(
        id["cluster_peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| *p == a.id.as_str())
    );
    for p in [&a, &b, &c] {
        peer_count(p, 3).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_and_unpin_by_ipfs_path_resolve_through_the_daemon() {
    let tmp = temp();
    let daemon = common::kubo::Kubo::start(&tmp.path().join("ipfs")).await;
    let mut s = spec();
    s.env.push((
        "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
        daemon.api_multiaddr(),
    ));
    let p = TestPeer::start(tmp.path().join("peer"), s).await;
    // A folder in the daemon: /ipfs/<dir>/a.txt resolves to the file's CID.
    let lines = daemon
        .add_with(
            "add?pin=false&wrap-with-directory=true",
            "a.txt",
            b"by path\n",
        )
        .await;
    let file = lines[0]["Hash"].as_str().unwrap().to_string();
    let dir = lines.last().unwrap()["Hash"].as_str().unwrap().to_string();

    let http = reqwest::Client::new();
    let res = http
        .post(format!(
            "{}/pins/ipfs/{dir}/a.txt?mode=direct&name=byPath",
            p.api
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let pin: Value = res.json().await.unwrap();
    assert_eq!(pin["cid"], file.as_str());
    assert_eq!(pin["name"], "byPath");
    // Unlike the CID route, the path route honours mode=direct.
    assert_eq!(pin["mode"], "direct");
    assert_eq!(pin["max_depth"], 0);
    p.wait_pinset(std::slice::from_ref(&file)).await;

    // GET on a path route: 404 as the reference answers (not 405); a bad
    // path: 400; an unknown name: 404.
    let res = http
        .get(format!("{}/pins/ipfs/{dir}/a.txt", p.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = http
        .post(format!("{}/pins/ipfs/notacid/x", p.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let e: Value = res.json().await.unwrap();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("error parsing path"),
        "{e}"
    );
    let res = http
        .post(format!("{}/pins/ipfs/{dir}/missing.txt", p.api))
        .send()
        .await
        .unwrap();
    // A path that does not resolve: the daemon's error, with its status.
    let status = res.status().as_u16();
    assert!(status == 404 || status == 500, "{status}");
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["code"], status);
    assert!(!e["message"].as_str().unwrap().is_empty());

    let res = http
        .delete(format!("{}/pins/ipfs/{dir}/a.txt", p.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["cid"], file.as_str());
    p.wait_pinset(&[]).await;
}
