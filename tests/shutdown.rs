//! A stopped peer leaves nothing behind: every task it started has ended
//! and no port it listened on (cluster, REST API, IPFS proxy) is held
//! any more.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::DEADLINE;
use libp2p::multiaddr::Protocol;
use pincluster::config::Config;
use pincluster::identity::Identity;
use pincluster::peer::Peer;

/// Whether this process still listens on `addr`'s port. Its own sockets
/// are looked at: binding the port to find out would fail as well when
/// anything else on the machine took the freed port meanwhile.
fn bound(addr: SocketAddr) -> bool {
    common::listens(std::process::id(), addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_leaves_no_task_and_no_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new_default();
    let any_port: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    config.cluster.listen_multiaddress = vec![any_port.clone()];
    config.cluster.secret = None;
    // No IPFS daemon: nothing listens on port 1, its calls fail at once.
    let nowhere: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    config.ipfs_connector.ipfshttp.node_multiaddress = nowhere.clone();
    config.cluster.monitor_ping_interval.0 = Duration::from_millis(200);
    config.cluster.pin_recover_interval.0 = Duration::from_secs(1);
    config.cluster.state_sync_interval.0 = Duration::from_secs(1);
    if let Some(rest) = config.api.restapi.as_mut() {
        rest.http_listen_multiaddress = vec![any_port.clone()];
    }
    if let Some(proxy) = config.api.ipfsproxy.as_mut() {
        proxy.listen_multiaddress = vec![any_port.clone()];
        proxy.node_multiaddress = nowhere;
    }
    let runtime = tokio::runtime::Handle::current().metrics();
    let peer = Peer::start(dir.path(), config, Identity::generate(), Vec::new())
        .await
        .expect("peer starts");

    let mut ports = vec![
        peer.rest_addr().expect("REST API"),
        peer.proxy_addr().expect("proxy"),
    ];
    for addr in peer.network().listen_addrs().await.unwrap() {
        if let (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) =
            (addr.iter().next(), addr.iter().nth(1))
        {
            ports.push(SocketAddr::from((ip, port)));
        }
    }
    assert_eq!(ports.len(), 3, "{ports:?}");
    // Some work done before stopping: requests served, and the periodic
    // loops run (this peer's own ping metric has gone through the informer,
    // gossip and the monitor).
    let id = reqwest::get(format!("http://{}/id", ports[0]))
        .await
        .unwrap();
    assert!(id.status().is_success());
    // Generous: a loaded CI machine may take a while (the ping interval
    // is 200 ms on an idle one).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics: serde_json::Value =
            reqwest::get(format!("http://{}/monitor/metrics/ping", ports[0]))
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
        if metrics.as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ping metric after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(runtime.num_alive_tasks() > 0);
    assert!(ports.iter().all(|p| bound(*p)), "{ports:?} listened on");

    peer.shutdown().await;

    let deadline = Instant::now() + DEADLINE;
    while runtime.num_alive_tasks() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} tasks still running after shutdown",
            runtime.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for port in ports {
        assert!(!bound(port), "{port} still bound after shutdown");
    }
}
