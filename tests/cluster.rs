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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_writes_never_reach_trusted_peers_and_followers_cannot_write() {
    let (d1, d2, d3, d4) = (temp(), temp(), temp(), temp());
    // Two trusted peers trust each other only; their identities are made
    // first so each config can name the other.
    init_folder(d1.path(), &spec());
    init_folder(d2.path(), &spec());
    let id_of = |d: &std::path::Path| -> String {
        let raw = std::fs::read_to_string(d.join("identity.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let trusted = format!("{},{}", id_of(d1.path()), id_of(d2.path()));
    let trusting = |bootstrap: Vec<String>| PeerSpec {
        env: vec![("CLUSTER_CRDT_TRUSTEDPEERS".into(), trusted.clone())],
        bootstrap,
        ..spec()
    };
    let p1 = TestPeer::start(d1.path().into(), trusting(vec![])).await;
    let a1 = p1.cluster_addr().await;
    let p2 = TestPeer::start(d2.path().into(), trusting(vec![a1.clone()])).await;
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
    // ...and the rogue pins are on no trusted peer nor on the follower.
    assert_eq!(p1.pinset().await.unwrap(), sorted(&good));
    assert_eq!(p2.pinset().await.unwrap(), sorted(&good));
    assert_eq!(follower.pinset().await.unwrap(), sorted(&good));
    assert!(p1.logged("rejected heads message") || p1.logged("refused block"));

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
