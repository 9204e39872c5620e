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
    start_config(dir, ipfs, bootstrap, |c| {
        c.cluster.disable_repinning = disable_repinning
    })
    .await
}

async fn start_config(
    dir: &std::path::Path,
    ipfs: &FakeKubo,
    bootstrap: Vec<libp2p::Multiaddr>,
    tweak: impl FnOnce(&mut Config),
) -> (Peer, String) {
    let mut config = Config::new_default();
    // Every in-process peer would take the proxy's default port.
    config.api.ipfsproxy = None;
    tweak(&mut config);
    config.cluster.listen_multiaddress = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.cluster.secret = None;
    // A ping lives two intervals: at 500 ms, a second's delay on a loaded
    // machine (the informers' daemon calls, gossip) expires a live peer's
    // ping and raises an alert the first test says must not be there.
    config.cluster.monitor_ping_interval.0 = Duration::from_secs(2);
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

/// A daemon slow to answer `repo/stat` (a busy daemon, a large repository)
/// delays the disk informer's metric, never the ping: a live peer is not
/// taken for a dead one by the peers that watch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_daemon_delays_the_informers_not_the_ping() {
    let (ipfs_a, ipfs_b) = (FakeKubo::start().await, FakeKubo::start().await);
    // Longer than a ping lives (two 2 s intervals), several times over.
    ipfs_a.set_repo_stat_delay(Duration::from_secs(10));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = start(da.path(), &ipfs_a, vec![]).await;
    let addr = a.network().listen_addrs().await.unwrap()[0].clone();
    let (b, api_b) = start(db.path(), &ipfs_b, vec![addr]).await;
    let a_id = a.network().local_peer_id().to_string();

    wait_for("A's ping on B", DEADLINE, || async {
        let v = get(format!("{api_b}/monitor/metrics/ping")).await?;
        v.as_array()?
            .iter()
            .any(|m| m["peer"] == a_id)
            .then_some(())
    })
    .await;
    // A's disk metric comes late, after each slow `repo/stat`. Between the
    // first and the second, a ping sent with it (TTL 4 s) would have
    // expired on B and raised an alert there.
    let freespace = |after: Option<Value>| {
        let api_b = api_b.clone();
        let a_id = a_id.clone();
        async move {
            let v = get(format!("{api_b}/monitor/metrics/freespace")).await?;
            let expire = v
                .as_array()?
                .iter()
                .find(|m| m["peer"] == a_id)?
                .get("expire")?
                .clone();
            (Some(&expire) != after.as_ref()).then_some(expire)
        }
    };
    let first = wait_for("A's first freespace on B", DEADLINE, || freespace(None)).await;
    wait_for("A's next freespace on B", DEADLINE, || {
        freespace(Some(first.clone()))
    })
    .await;
    assert!(ipfs_a.requests("repo/stat") >= 2);
    let alerts = get(format!("{api_b}/health/alerts")).await.unwrap();
    assert!(
        !alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|al| al["peer"] == a_id && al["name"] == "ping"),
        "a live peer's ping expired: {alerts}"
    );
    a.shutdown().await;
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
    let (c, api_c) = start_with(dirs[2].path(), &kubos[2], vec![addr], false).await;
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
    // B and C must know the pin before A goes, or nobody can move it.
    for api in [&api_b, &api_c] {
        wait_for("the pin on every peer", DEADLINE, || async {
            let v = get(format!("{api}/allocations/{cid}")).await?;
            v.get("cid").map(|_| ())
        })
        .await;
    }

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_balanced_allocator_alternates_groups_puts_user_allocations_first_and_explains_shortage()
 {
    let kubos = [
        FakeKubo::start().await,
        FakeKubo::start().await,
        FakeKubo::start().await,
    ];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let group = |g: &'static str| {
        move |c: &mut Config| {
            let tags = c
                .informer
                .tags
                .as_mut()
                .expect("tags informer on by default");
            tags.tags.insert("group".into(), g.into());
        }
    };
    let (eu, api) = start_config(dirs[0].path(), &kubos[0], vec![], group("eu")).await;
    let addr = eu.network().listen_addrs().await.unwrap()[0].clone();
    let (us1, _) = start_config(dirs[1].path(), &kubos[1], vec![addr.clone()], group("us")).await;
    let (us2, _) = start_config(dirs[2].path(), &kubos[2], vec![addr], group("us")).await;
    wait_for("every peer's group and free space", DEADLINE, || async {
        let tags = get(format!("{api}/monitor/metrics/tag:group")).await?;
        let free = get(format!("{api}/monitor/metrics/freespace")).await?;
        (tags.as_array()?.len() == 3 && free.as_array()?.len() == 3).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let pin = |cid: String, query: String| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let res = http
                .post(format!("{api}/pins/{cid}?{query}"))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let eu_id = eu.network().local_peer_id().to_string();
    let us2_id = us2.network().local_peer_id().to_string();

    // Two copies land in two groups: the lone "eu" peer holds one of each
    // pair (rendezvous hashing alone would skip it for a third of them).
    for cid in common::cids("groups", 12) {
        let (status, body) = pin(cid, "replication-min=2&replication-max=2".into()).await;
        assert_eq!(status, 200, "{body}");
        let allocations = body["allocations"].as_array().unwrap();
        assert_eq!(allocations.len(), 2, "{body}");
        assert!(allocations.iter().any(|a| a == eu_id.as_str()), "{body}");
    }

    // A user allocation comes first.
    for cid in common::cids("user", 4) {
        let (status, body) = pin(
            cid,
            format!("replication-min=1&replication-max=1&user-allocations={us2_id}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["allocations"], serde_json::json!([us2_id]), "{body}");
    }

    // Asking for more copies than peers says how many were needed and found,
    // and writes nothing.
    let cid = common::cids("too-many", 1).remove(0);
    let (status, body) = pin(cid.clone(), "replication-min=4&replication-max=5".into()).await;
    assert_eq!(status, 500, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("Needed at least: 4"), "{message}");
    assert!(message.contains("Available candidates: 3"), "{message}");
    let (status, _) = {
        let res = http
            .get(format!("{api}/allocations/{cid}"))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), ())
    };
    assert_eq!(status, 404);
    for p in [eu, us1, us2] {
        p.shutdown().await;
    }
}
