//! Cluster peers driving real IPFS daemons (Kubo 0.43.1, one beside each
//! peer): what the cluster allocates ends up pinned on exactly the allocated
//! daemons, as each daemon tells through its own API.

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

/// The status map of `GET /pins/{cid}`: peer id → status.
async fn statuses(peer: &TestPeer, cid: &str) -> Option<Vec<(String, String)>> {
    let v: Value = peer.get_json(&format!("/pins/{cid}")).await?;
    let mut out: Vec<(String, String)> = v["peer_map"]
        .as_object()?
        .iter()
        .map(|(id, e)| (id.clone(), e["status"].as_str().unwrap_or("").to_string()))
        .collect();
    out.sort();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_two_pins_on_exactly_the_two_allocated_daemons() {
    let tmp = temp();
    let dirs = ["ipfs-a", "ipfs-b", "ipfs-c"].map(|d| tmp.path().join(d));
    let (da, db, dc) = tokio::join!(
        Kubo::start(&dirs[0]),
        Kubo::start(&dirs[1]),
        Kubo::start(&dirs[2])
    );
    let a = TestPeer::start(tmp.path().join("a"), beside(&da, None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(tmp.path().join("b"), beside(&db, Some(&addr))).await;
    let c = TestPeer::start(tmp.path().join("c"), beside(&dc, Some(&addr))).await;
    for p in [&a, &b, &c] {
        wait_for("a full peerset", DEADLINE, || async {
            (p.peer_ids().await?.len() == 3).then_some(())
        })
        .await;
    }

    // Content that only A's daemon holds, not pinned by it.
    let added = da
        .add_with(
            "add?pin=false",
            "data.txt",
            b"pincluster replication test\n",
        )
        .await;
    let cid = added.last().unwrap()["Hash"].as_str().unwrap().to_string();
    assert!(da.recursive_pins().await.is_empty());

    let (status, pin) = a.pin(&cid, "replication=2&name=two").await;
    assert_eq!(status, 200, "{pin}");
    let allocated: Vec<String> = pin["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(allocated.len(), 2);

    let daemons = [(&a, &da), (&b, &db), (&c, &dc)];
    let mut expected: Vec<(String, String)> = daemons
        .iter()
        .map(|(p, _)| {
            let want = if allocated.contains(&p.id) {
                "pinned"
            } else {
                "remote"
            };
            (p.id.clone(), want.to_string())
        })
        .collect();
    expected.sort();
    // Every peer shows the same cluster-wide picture.
    for (peer, _) in daemons {
        wait_for("two pinned and one remote", DEADLINE, || async {
            (statuses(peer, &cid).await? == expected).then_some(())
        })
        .await;
    }
    // And each daemon, asked directly, agrees.
    for (peer, daemon) in daemons {
        let has = daemon.recursive_pins().await.contains(&cid);
        assert_eq!(
            has,
            allocated.contains(&peer.id),
            "daemon beside {}",
            peer.id
        );
    }

    // Unpinning from the cluster unpins from the daemons.
    assert_eq!(b.unpin(&cid).await, 200);
    for (_, daemon) in daemons {
        wait_for("the daemon to drop the pin", DEADLINE, || async {
            (!daemon.recursive_pins().await.contains(&cid)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_daemon_shows_as_errors_and_its_return_heals() {
    let tmp = temp();
    let mut daemon = Kubo::start(&tmp.path().join("ipfs")).await;
    let peer = TestPeer::start(tmp.path().join("peer"), beside(&daemon, None)).await;
    let cid = daemon
        .add_with("add?pin=false", "x.txt", b"dead daemon test\n")
        .await;
    let cid = cid.last().unwrap()["Hash"].as_str().unwrap().to_string();
    assert_eq!(peer.pin(&cid, "").await.0, 200);
    wait_for("pinned", DEADLINE, || async {
        (statuses(&peer, &cid).await?[0].1 == "pinned").then_some(())
    })
    .await;

    daemon.kill();
    let id = peer.get_json("/id").await.expect("the peer still answers");
    assert!(!id["ipfs"]["error"].as_str().unwrap().is_empty(), "{id}");
    assert_eq!(statuses(&peer, &cid).await.unwrap()[0].1, "cluster_error");

    daemon.restart().await;
    wait_for("pinned again", DEADLINE, || async {
        (statuses(&peer, &cid).await?[0].1 == "pinned").then_some(())
    })
    .await;
    let id = peer.get_json("/id").await.unwrap();
    assert_eq!(id["ipfs"]["id"], daemon.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cid_nobody_has_ends_in_pin_error_and_recover_pins_it_once_it_exists() {
    let tmp = temp();
    let daemon = Kubo::start(&tmp.path().join("ipfs")).await;
    let mut spec = beside(&daemon, None);
    // Kubo waits for missing blocks for ever: the pin timeout bounds
    // each attempt, the attempt limit bounds them all.
    spec.env
        .push(("CLUSTER_IPFSHTTP_PINTIMEOUT".into(), "1s".into()));
    spec.env
        .push(("CLUSTER_STATELESS_MAXATTEMPTS".into(), "3".into()));
    let peer = TestPeer::start(tmp.path().join("peer"), spec).await;

    // A raw CID of bytes no daemon holds yet.
    let data = b"nobody-0";
    let cid = cids("nobody", 1).remove(0);
    assert_eq!(peer.pin(&cid, "").await.0, 200);
    let failed = wait_for("pin_error", DEADLINE, || async {
        let v = peer.get_json(&format!("/pins/{cid}")).await?;
        let entry = v["peer_map"][&peer.id].clone();
        (entry["status"] == "pin_error").then_some(entry)
    })
    .await;
    assert_eq!(failed["attempt_count"], 3, "{failed}");
    assert!(!pinned_on(&daemon).await.contains(&cid));

    // The content appears (the same bytes, so the same raw CID)...
    let added = daemon
        .add_with("add?cid-version=1&raw-leaves=true&pin=false", "x", data)
        .await;
    // Compare CIDs, not strings.
    let got: cid::Cid = added.last().unwrap()["Hash"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(got.to_string(), cid);
    // ...and recover pins it.
    let res = reqwest::Client::new()
        .post(format!("{}/pins/{cid}/recover", peer.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    wait_for("pinned after recover", DEADLINE, || async {
        (statuses(&peer, &cid).await?[0].1 == "pinned").then_some(())
    })
    .await;
    assert!(pinned_on(&daemon).await.contains(&cid));
}

/// A daemon's recursive pins as canonical CID strings (what the cluster
/// prints).
async fn pinned_on(daemon: &Kubo) -> Vec<String> {
    daemon
        .recursive_pins()
        .await
        .iter()
        .filter_map(|c| c.parse::<cid::Cid>().ok())
        .map(|c| c.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_peer_raises_an_alert_and_its_pins_move_to_a_live_peer() {
    let tmp = temp();
    let dirs = ["ipfs-a", "ipfs-b", "ipfs-c"].map(|d| tmp.path().join(d));
    let (da, db, dc) = tokio::join!(
        Kubo::start(&dirs[0]),
        Kubo::start(&dirs[1]),
        Kubo::start(&dirs[2])
    );
    let repinning = |d: &Kubo, bootstrap: Option<&str>| {
        let mut spec = beside(d, bootstrap);
        spec.env
            .push(("CLUSTER_DISABLEREPINNING".into(), "false".into()));
        spec
    };
    let a = TestPeer::start(tmp.path().join("a"), repinning(&da, None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(tmp.path().join("b"), repinning(&db, Some(&addr))).await;
    let c = TestPeer::start(tmp.path().join("c"), repinning(&dc, Some(&addr))).await;
    for p in [&a, &b, &c] {
        wait_for("a full peerset", DEADLINE, || async {
            (p.peer_ids().await?.len() == 3).then_some(())
        })
        .await;
    }

    let added = da
        .add_with("add?pin=false", "moving.txt", b"this pin moves\n")
        .await;
    let cid = added.last().unwrap()["Hash"].as_str().unwrap().to_string();
    let (status, pin) = b.pin(&cid, "replication=1").await;
    assert_eq!(status, 200, "{pin}");
    let first = pin["allocations"][0].as_str().unwrap().to_string();
    let mut peers = vec![a, b, c];
    let daemons = [&da, &db, &dc];
    let i = peers.iter().position(|p| p.id == first).unwrap();
    wait_for("the allocated daemon to pin it", DEADLINE, || async {
        daemons[i]
            .recursive_pins()
            .await
            .contains(&cid)
            .then_some(())
    })
    .await;

    // The watcher has seen the allocated peer alive; then that peer stops
    // (its daemon keeps serving the content).
    let live: Vec<usize> = (0..3).filter(|j| *j != i).collect();
    // The peers have connected their daemons (so content can move).
    for d in daemons {
        wait_for(
            "each daemon connected to the other two",
            DEADLINE,
            || async {
                let seen = d.swarm_peer_ids().await;
                let mut others = daemons.iter().filter(|o| o.id() != d.id());
                others
                    .all(|o| seen.iter().any(|s| s == o.id()))
                    .then_some(())
            },
        )
        .await;
    }
    wait_for("the watcher to see every peer's ping", DEADLINE, || async {
        let pings = peers[live[0]].get_json("/monitor/metrics/ping").await?;
        (pings.as_array()?.len() == 3).then_some(())
    })
    .await;
    assert!(peers[i].stop());
    let watcher = &peers[live[0]];
    wait_for("a ping alert for the stopped peer", DEADLINE, || async {
        let alerts = watcher.get_json("/health/alerts").await?;
        alerts
            .as_array()?
            .iter()
            .any(|al| al["peer"] == first.as_str() && al["name"] == "ping")
            .then_some(())
    })
    .await;
    let moved = wait_for("the pin to move to a live peer", DEADLINE, || async {
        let v = watcher.get_json(&format!("/allocations/{cid}")).await?;
        let now = v["allocations"][0].as_str()?.to_string();
        (now != first).then_some(now)
    })
    .await;
    let j = live
        .iter()
        .copied()
        .find(|j| peers[*j].id == moved)
        .expect("moved to a live peer");
    wait_for("the new peer's daemon to pin it", DEADLINE, || async {
        daemons[j]
            .recursive_pins()
            .await
            .contains(&cid)
            .then_some(())
    })
    .await;
    peers.clear();
}
