//! Monitoring between peers: each peer's metrics reach the others, bound
//! to the peer that signed them, and a peer that stops raises a `ping`
//! alert on the others.

mod common;

use std::time::Duration;

use common::fake_kubo::FakeKubo;
use common::{DEADLINE, wait_for};
use pincluster::config::Config;
use pincluster::identity::Identity;
use pincluster::peer::Peer;
use serde_json::Value;

async fn start(
    dir: &std::path::Path,
    ipfs: &FakeKubo,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> (Peer, String) {
    start_with(dir, ipfs, bootstrap, true).await
}

async fn start_with(
    dir: &std::path::Path,
    ipfs: &FakeKubo,
    bootstrap: Vec<libp2p::Multiaddr>,
    disable_repinning: bool,
) -> (Peer, String) {
    let mut config = Config::new_default();
    config.cluster.disable_repinning = disable_repinning;
    config.cluster.listen_multiaddress = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.cluster.secret = None;
    config.cluster.monitor_ping_interval.0 = Duration::from_millis(500);
    config.monitor.pubsubmon.check_interval.0 = Duration::from_millis(250);
    config.ipfs_connector.ipfshttp.node_multiaddress = ipfs.multiaddr();
    if let Some(api) = config.api.restapi.as_mut() {
        api.http_listen_multiaddress = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    }
    let peer = Peer::start(dir, config, Identity::generate(), bootstrap)
        .await
        .expect("peer starts");
    let api = format!("http://{}", peer.rest_addr().expect("REST API on"));
    (peer, api)
}

async fn get(url: String) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_flow_between_peers_and_a_stopped_peer_raises_an_alert() {
    let (ipfs_a, ipfs_b) = (FakeKubo::start().await, FakeKubo::start().await);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = start(da.path(), &ipfs_a, vec![]).await;
    let addr = a.network().listen_addrs().await.unwrap()[0].clone();
    let (b, api_b) = start(db.path(), &ipfs_b, vec![addr]).await;
    let a_id = a.network().local_peer_id().to_string();
    let b_id = b.network().local_peer_id().to_string();

    let pings = wait_for("both pings on B", DEADLINE, || async {
        let v = get(format!("{api_b}/monitor/metrics/ping")).await?;
        (v.as_array()?.len() == 2).then_some(v)
    })
    .await;
    let peers: Vec<&str> = pings
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peer"].as_str().unwrap())
        .collect();
    assert!(
        peers.contains(&a_id.as_str()) && peers.contains(&b_id.as_str()),
        "{pings}"
    );
    // The ping carries the peer's name and its IPFS daemon.
    let a_ping = pings
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["peer"] == a_id)
        .unwrap();
    let value: Value = serde_json::from_str(a_ping["value"].as_str().unwrap()).unwrap();
    assert!(value.get("peer_name").is_some());
    let names = get(format!("{api_b}/monitor/metrics")).await.unwrap();
    for name in ["ping", "tag:group", "pinqueue"] {
        assert!(
            names.as_array().unwrap().iter().any(|n| n == name),
            "{name} missing in {names}"
        );
    }
    assert_eq!(
        get(format!("{api_b}/health/alerts")).await.unwrap(),
        serde_json::json!([])
    );

    // A stops: its ping expires on B's clock and B raises an alert.
    a.shutdown().await;
    let alerts = wait_for("an alert for A on B", DEADLINE, || async {
        let v = get(format!("{api_b}/health/alerts")).await?;
        v.as_array()?
            .iter()
            .any(|al| al["peer"] == a_id && al["name"] == "ping")
            .then_some(v)
    })
    .await;
    assert!(alerts[0]["triggered_at"].as_str().is_some());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_repinning_on_the_pins_of_a_peer_that_went_down_move_to_a_live_peer() {
    use pincluster::types::{Pin, PinOptions};
    let kubos = [
        FakeKubo::start().await,
        FakeKubo::start().await,
        FakeKubo::start().await,
    ];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, _) = start_with(dirs[0].path(), &kubos[0], vec![], false).await;
    let addr = a.network().listen_addrs().await.unwrap()[0].clone();
    let (b, api_b) = start_with(dirs[1].path(), &kubos[1], vec![addr.clone()], false).await;
    let (c, _) = start_with(dirs[2].path(), &kubos[2], vec![addr], false).await;
    wait_for("B sees three pings", DEADLINE, || async {
        let v = get(format!("{api_b}/monitor/metrics/ping")).await?;
        (v.as_array()?.len() == 3).then_some(())
    })
    .await;

    let cid: cid::Cid = common::cids("repin", 1)[0].parse().unwrap();
    let a_id = a.network().local_peer_id();
    let mut pin = Pin::new(cid, PinOptions::default());
    pin.options.replication_factor_min = 1;
    pin.options.replication_factor_max = 1;
    pin.allocations = vec![a_id];
    a.consensus().log_pin(pin).await.unwrap();
    wait_for("A's daemon to pin it", DEADLINE, || async {
        kubos[0].pinned().contains(&cid).then_some(())
    })
    .await;

    a.shutdown().await;
    let moved = wait_for("the pin to move to B or C", DEADLINE, || async {
        let v = get(format!("{api_b}/allocations/{cid}")).await?;
        let allocations = v["allocations"].as_array()?.clone();
        (allocations.len() == 1 && allocations[0] != a_id.to_string())
            .then_some(allocations[0].clone())
    })
    .await;
    let (target, daemon) = if moved == b.network().local_peer_id().to_string() {
        (&b, &kubos[1])
    } else {
        (&c, &kubos[2])
    };
    wait_for("the new peer's daemon to pin it", DEADLINE, || async {
        daemon.pinned().contains(&cid).then_some(())
    })
    .await;
    assert_eq!(moved, target.network().local_peer_id().to_string());
    b.shutdown().await;
    c.shutdown().await;
}
