//! Clusters of real `pincluster daemon` processes on 127.0.0.1: concurrent
//! writes, joining through one address, crashes, trust, followers and
//! private networks.

mod common;

use common::*;
use futures::StreamExt;

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";

fn spec() -> PeerSpec {
    PeerSpec {
        secret: Some(SECRET.to_string()),
        ..PeerSpec::default()
    }
}

fn joining(addr: &str) -> PeerSpec {
    PeerSpec {
        bootstrap: vec![addr.to_string()],
        ..spec()
    }
}

/// Pins every CID through `peer`, 32 requests in flight.
async fn pin_all(peer: &TestPeer, cids: &[String]) {
    futures::stream::iter(cids)
        .for_each_concurrent(32, |cid| async move {
            let (status, body) = peer.pin(cid, "").await;
            assert_eq!(status, 200, "pinning {cid}: {body}");
        })
        .await;
}

async fn wait_peers(peer: &TestPeer, n: usize) {
    wait_for(
        &format!("{n} peers seen by {}", peer.id),
        DEADLINE,
        || async move { (peer.peer_ids().await?.len() == n).then_some(()) },
    )
    .await;
}

/// Waits until `p` holds, from peer `id`, a metric of every name it
/// knows: only then may its allocator pick that peer (a candidate has
/// published every metric of `allocate_by`). Seeing a peer connected says
/// nothing of its metrics, which come with its next informer round.
async fn wait_metrics_from(p: &TestPeer, id: &str) {
    wait_for(&format!("{id}'s metrics at {}", p.id), DEADLINE, || async {
        let names = p.get_json("/monitor/metrics").await?;
        let names = names.as_array().filter(|n| !n.is_empty())?;
        for name in names {
            let metrics = p
                .get_json(&format!("/monitor/metrics/{}", name.as_str()?))
                .await?;
            metrics.as_array()?.iter().find(|m| m["peer"] == id)?;
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_peers_pin_concurrently_and_a_fourth_joins_through_one_address() {
    let dirs: Vec<_> = (0..4).map(|_| temp()).collect();
    let p1 = TestPeer::start(dirs[0].path().into(), spec()).await;
    let a1 = p1.cluster_addr().await;
    let p2 = TestPeer::start(dirs[1].path().into(), joining(&a1)).await;
    let p3 = TestPeer::start(dirs[2].path().into(), joining(&a1)).await;
    for p in [&p1, &p2, &p3] {
        wait_peers(p, 3).await;
    }

    let sets: Vec<Vec<String>> = (0..3).map(|i| cids(&format!("peer{i}"), 1000)).collect();
    tokio::join!(
        pin_all(&p1, &sets[0]),
        pin_all(&p2, &sets[1]),
        pin_all(&p3, &sets[2])
    );
    let all: Vec<String> = sets.concat();
    for p in [&p1, &p2, &p3] {
        p.wait_pinset(&all).await;
    }

    // The fourth peer knows only the third's address: it finds 1 and 2
    // through the DHT and catches up on everything.
    let a3 = p3.cluster_addr().await;
    let p4 = TestPeer::start(dirs[3].path().into(), joining(&a3)).await;
    wait_peers(&p4, 4).await;
    let mut expected = vec![p1.id.clone(), p2.id.clone(), p3.id.clone(), p4.id.clone()];
    expected.sort();
    assert_eq!(p4.peer_ids().await.unwrap(), expected);
    p4.wait_pinset(&all).await;
    wait_peers(&p1, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_killed_mid_write_keeps_its_state_and_catches_up() {
    let (d1, d2) = (temp(), temp());
    let p1 = TestPeer::start(d1.path().into(), spec()).await;
    let a1 = p1.cluster_addr().await;
    let mut p2 = TestPeer::start(d2.path().into(), joining(&a1)).await;
    wait_peers(&p2, 2).await;

    let before = cids("before", 200);
    pin_all(&p2, &before).await;
    p1.wait_pinset(&before).await;

    // P1 keeps writing while P2 is killed without warning.
    let during = cids("during", 300);
    let writer = pin_all(&p1, &during);
    let killer = async {
        p2.kill();
    };
    tokio::join!(writer, killer);

    let p2 = p2.restart().await;
    // It kept what it had (from its own store) and catches up on the rest.
    let mut all = before.clone();
    all.extend(during);
    p2.wait_pinset(&all).await;
}

/// Two peers that trust each other only, the second bootstrapped from the
/// first; their identities are made first so each config can name the
/// other. Returns them, the first one's cluster address and the trusted
/// list (`CLUSTER_CRDT_TRUSTEDPEERS`).
async fn trusted_pair(
    d1: &std::path::Path,
    d2: &std::path::Path,
) -> (TestPeer, TestPeer, String, String) {
    init_folder(d1, &spec());
    init_folder(d2, &spec());
    let id_of = |d: &std::path::Path| -> String {
        let raw = std::fs::read_to_string(d.join("identity.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let trusted = format!("{},{}", id_of(d1), id_of(d2));
    let trusting = |bootstrap: Vec<String>| PeerSpec {
        env: vec![("CLUSTER_CRDT_TRUSTEDPEERS".into(), trusted.clone())],
        bootstrap,
        ..spec()
    };
    let p1 = TestPeer::start(d1.into(), trusting(vec![])).await;
    let a1 = p1.cluster_addr().await;
    let p2 = TestPeer::start(d2.into(), trusting(vec![a1.clone()])).await;
    (p1, p2, a1, trusted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_writes_never_reach_trusted_peers_and_followers_cannot_write() {
    let (d1, d2, d3, d4) = (temp(), temp(), temp(), temp());
    // Two trusted peers trust each other only.
    let (p1, p2, a1, trusted) = trusted_pair(d1.path(), d2.path()).await;
    // The outsider trusts everyone and writes.
    let outsider = TestPeer::start(d3.path().into(), joining(&a1)).await;
    let follower = TestPeer::start(
        d4.path().into(),
        PeerSpec {
            env: vec![
                ("CLUSTER_FOLLOWERMODE".into(), "true".into()),
                ("CLUSTER_CRDT_TRUSTEDPEERS".into(), trusted.clone()),
            ],
            ..joining(&a1)
        },
    )
    .await;
    for p in [&p1, &p2, &outsider, &follower] {
        wait_peers(p, 4).await;
    }

    let rogue = cids("rogue", 20);
    pin_all(&outsider, &rogue).await;
    outsider.wait_pinset(&rogue).await;

    // A trusted write made after the rogue ones reaches everyone...
    let good = cids("good", 5);
    pin_all(&p1, &good).await;
    p2.wait_pinset(&good).await;
    follower.wait_pinset(&good).await;
    // ...and the rogue pins are on no trusted peer nor on the follower,
    // checked once each of them has heard (and refused) the rogue heads:
    // the outsider's gossip is not ordered with P1's, and the log line
    // reaches the harness through a pipe, after the fact.
    for p in [&p1, &p2, &follower] {
        wait_for("the rogue heads refused", DEADLINE, || async {
            (p.logged("rejected heads message") || p.logged("refused block")).then_some(())
        })
        .await;
    }
    assert_eq!(p1.pinset().await.unwrap(), sorted(&good));
    assert_eq!(p2.pinset().await.unwrap(), sorted(&good));
    assert_eq!(follower.pinset().await.unwrap(), sorted(&good));

    let (status, body) = follower.pin(&cids("follower", 1)[0], "").await;
    assert_eq!(status, 500);
    assert_eq!(
        body["message"],
        "this peer is configured to be in follower mode. Write operations are disabled"
    );
    assert_eq!(follower.unpin(&good[0]).await, 500);
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_with_different_secrets_cannot_connect() {
    let (d1, d2, d3) = (temp(), temp(), temp());
    let p1 = TestPeer::start(d1.path().into(), spec()).await;
    let a1 = p1.cluster_addr().await;
    let other_secret = PeerSpec {
        secret: Some("11".repeat(32)),
        bootstrap: vec![a1.clone()],
        ..PeerSpec::default()
    };
    let stranger = TestPeer::start(d2.path().into(), other_secret).await;
    // A peer with the right secret joins; the stranger's dial fails.
    let friend = TestPeer::start(d3.path().into(), joining(&a1)).await;
    wait_peers(&friend, 2).await;
    wait_for("the stranger's failed dial", DEADLINE, || async {
        stranger.logged("dial failed").then_some(())
    })
    .await;
    assert_eq!(
        stranger.peer_ids().await.unwrap(),
        vec![stranger.id.clone()]
    );
    assert!(!p1.peer_ids().await.unwrap().contains(&stranger.id));

    // And its pins stay its own.
    pin_all(&stranger, &cids("stranger", 3)).await;
    pin_all(&friend, &cids("friend", 3)).await;
    p1.wait_pinset(&cids("friend", 3)).await;
    assert_eq!(
        stranger.pinset().await.unwrap(),
        sorted(&cids("stranger", 3))
    );
}

/// A spec that listens on a fixed loopback port, so a restarted peer is
/// found again at the address the others (and its peerset record) know.
fn on_port(port: u16, bootstrap: Vec<String>) -> PeerSpec {
    PeerSpec {
        env: vec![(
            "CLUSTER_LISTENMULTIADDRESS".into(),
            format!("/ip4/127.0.0.1/tcp/{port}"),
        )],
        bootstrap,
        ..spec()
    }
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

/// Waits until `p` lists exactly the peers `ids`.
async fn wait_peer_set(p: &TestPeer, ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_for(&format!("{want:?} seen by {}", p.id), DEADLINE, || {
        let want = want.clone();
        async move { (p.peer_ids().await? == want).then_some(()) }
    })
    .await;
}

/// Pins `n` new CIDs with replication 1 through `p`; none may land on `gone`.
async fn new_pins_avoid(p: &TestPeer, seed: &str, gone: &str) {
    for cid in cids(seed, 10) {
        let (status, pin) = p.pin(&cid, "replication=1").await;
        assert_eq!(status, 200, "{pin}");
        assert_ne!(pin["allocations"][0], gone, "{pin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_peer_stays_out_across_restarts_offline_peers_and_newcomers() {
    let dirs: Vec<_> = (0..4).map(|_| temp()).collect();
    let ports: Vec<u16> = (0..3).map(|_| fixed_port()).collect();
    let a = TestPeer::start(dirs[0].path().into(), on_port(ports[0], vec![])).await;
    let addr_a = a.cluster_addr().await;
    let spec_b = on_port(ports[1], vec![addr_a.clone()]);
    let mut b = TestPeer::start(dirs[1].path().into(), spec_b.clone()).await;
    let addr_b = b.cluster_addr().await;
    let c = TestPeer::start(
        dirs[2].path().into(),
        on_port(ports[2], vec![addr_a.clone()]),
    )
    .await;
    let addr_c = c.cluster_addr().await;
    for p in [&a, &b, &c] {
        wait_peers(p, 3).await;
    }
    wait_metrics_from(&a, &c.id).await;
    let pins = cids("lasting-removal", 30);
    for cid in &pins {
        assert_eq!(a.pin(cid, "replication=1").await.0, 200);
    }
    b.wait_pinset(&pins).await;
    assert!(allocated_to(&a, &c.id).await.unwrap() > 0);
    let (ida, idb, idc) = (a.id.clone(), b.id.clone(), c.id.clone());

    // B is stopped while A removes C; C is told and stops redialing.
    assert!(b.stop());
    let res = reqwest::Client::new()
        .delete(format!("{}/peers/{idc}", a.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(allocated_to(&a, &idc).await, Some(0));
    wait_for("C to log its removal", DEADLINE, || async {
        c.logged("this peer was removed from the cluster")
            .then_some(())
    })
    .await;

    // (b) B comes back: it still has C in its peerstore and C accepts it,
    // but it learns of the removal from A and drops C.
    b = TestPeer::start(dirs[1].path().into(), spec_b.clone()).await;
    wait_for("B to learn of the removal", DEADLINE, || async {
        b.logged("peer removed from the cluster").then_some(())
    })
    .await;
    wait_peer_set(&b, &[&ida, &idb]).await;
    wait_for("B sees C's pins moved", DEADLINE, || async {
        (allocated_to(&b, &idc).await? == 0).then_some(())
    })
    .await;

    // (a) Every remaining peer restarts, then C restarts and dials them
    // both: they refuse it from their first moment.
    let a = a.restart().await;
    let b = b.restart().await;
    let c = c
        .restart_with(on_port(ports[2], vec![addr_a.clone(), addr_b.clone()]))
        .await;
    wait_for("A or B to refuse C", DEADLINE, || async {
        (a.logged("refused a connection from a peer removed")
            || b.logged("refused a connection from a peer removed"))
        .then_some(())
    })
    .await;
    wait_peer_set(&a, &[&ida, &idb]).await;
    wait_peer_set(&b, &[&ida, &idb]).await;
    for p in [&a, &b] {
        assert_eq!(allocated_to(p, &idc).await, Some(0));
    }
    new_pins_avoid(&a, "after-restart", &idc).await;

    // (c) A newcomer given C's address among its bootstrap peers refuses
    // C once it has synced the pinset.
    let d = TestPeer::start(
        dirs[3].path().into(),
        PeerSpec {
            bootstrap: vec![addr_c.clone(), addr_b.clone()],
            ..spec()
        },
    )
    .await;
    wait_for("D to learn of the removal", DEADLINE, || async {
        d.logged("peer removed from the cluster").then_some(())
    })
    .await;
    wait_peer_set(&d, &[&ida, &idb, &d.id]).await;
    new_pins_avoid(&d, "from-newcomer", &idc).await;

    // (d) A trusted peer takes C back: everyone, C included, sees it, and
    // it lasts across a restart.
    let res = reqwest::Client::new()
        .post(format!("{}/peers", a.api))
        .body(format!(r#"{{"peer_id":"{idc}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["id"],
        idc.as_str()
    );
    for p in [&a, &b, &c, &d] {
        wait_peers(p, 4).await;
    }
    let a = a.restart().await;
    let b = b.restart().await;
    for p in [&a, &b, &c, &d] {
        wait_peers(p, 4).await;
    }
    assert!(
        !a.logged("peer removed from the cluster"),
        "{}",
        a.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_untrusted_peer_cannot_remove_anyone() {
    let (d1, d2, d3) = (temp(), temp(), temp());
    let (p1, p2, a1, _) = trusted_pair(d1.path(), d2.path()).await;
    let outsider = TestPeer::start(d3.path().into(), joining(&a1)).await;
    for p in [&p1, &p2, &outsider] {
        wait_peers(p, 3).await;
    }
    wait_metrics_from(&p1, &p2.id).await;
    let pins = cids("untrusted-removal", 20);
    for cid in &pins {
        assert_eq!(p1.pin(cid, "replication=1").await.0, 200);
    }
    p2.wait_pinset(&pins).await;
    outsider.wait_pinset(&pins).await;
    let on_p2 = allocated_to(&p1, &p2.id).await.unwrap();
    assert!(on_p2 > 0);

    let res = reqwest::Client::new()
        .delete(format!("{}/peers/{}", outsider.api, p2.id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let e: serde_json::Value = res.json().await.unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("not trusted"),
        "{e}"
    );
    // P1 logs its refusal before answering, but the line reaches the
    // harness through a pipe, maybe after the 403.
    wait_for("P1 to log the refusal", DEADLINE, || async {
        p1.logged("peerset change asked by an untrusted peer")
            .then_some(())
    })
    .await;

    // Nothing moved anywhere, the outsider included.
    for p in [&p1, &p2, &outsider] {
        assert_eq!(p.peer_ids().await.unwrap().len(), 3);
        assert_eq!(allocated_to(p, &p2.id).await, Some(on_p2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_bandwidth_counts_each_protocol_on_both_sides() {
    let (d1, d2) = (temp(), temp());
    let p1 = TestPeer::start(d1.path().into(), spec()).await;
    let p2 = TestPeer::start(d2.path().into(), joining(&p1.cluster_addr().await)).await;
    wait_peers(&p1, 2).await;
    wait_peers(&p2, 2).await;
    let pins = cids("bandwidth", 50);
    pin_all(&p1, &pins).await;
    p2.wait_pinset(&pins).await;

    // The rates are moving averages over one-second ticks: wait until one
    // has passed with traffic on the gossip protocol.
    let gossip_rate = |b: &serde_json::Value| {
        b.as_object()?
            .iter()
            .find(|(k, _)| k.starts_with("/meshsub/"))
            .and_then(|(_, v)| v["rate_out"].as_f64())
            .filter(|r| *r > 0.0)
    };
    wait_for("a gossip rate on P1", DEADLINE, || async {
        gossip_rate(&p1.get_json("/health/bandwidth").await?)
    })
    .await;
    let (b1, b2) = tokio::join!(
        p1.get_json("/health/bandwidth"),
        p2.get_json("/health/bandwidth")
    );
    let (b1, b2) = (b1.unwrap(), b2.unwrap());
    let protocols: Vec<&String> = b1.as_object().unwrap().keys().collect();
    let find = |pred: &dyn Fn(&str) -> bool| -> String {
        protocols
            .iter()
            .find(|k| pred(k))
            .unwrap_or_else(|| panic!("protocol missing from {b1}"))
            .to_string()
    };
    let gossip = find(&|k| k.starts_with("/meshsub/"));
    let sync = find(&|k| k.starts_with("/pincluster/") && k.ends_with("/sync/1.0.0"));
    find(&|k| k.starts_with("/pincluster/") && k.ends_with("/kad/1.0.0"));
    find(&|k| k == "/ipfs/id/1.0.0");
    // Each side's bytes out are the other's bytes in, give or take what is
    // in flight between the two readings.
    for proto in [&gossip, &sync] {
        for (from, to) in [(&b1, &b2), (&b2, &b1)] {
            let sent = from[proto]["total_out"].as_u64().unwrap();
            let received = to[proto]["total_in"].as_u64().unwrap();
            assert!(sent > 0 && received > 0, "{proto}: {b1} / {b2}");
            let ratio = sent as f64 / received as f64;
            assert!((0.5..=2.0).contains(&ratio), "{proto}: {b1} / {b2}");
        }
    }

    // The client prints the same figures, one line per protocol.
    let port = p1.api.rsplit(':').next().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .args(["health", "bandwidth"])
        .output()
        .expect("run the client");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{sync}:")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("In: ") && line.contains("RateOut: "),
        "{text}"
    );
    assert!(!line.contains(" 0 B."), "{text}");
}
