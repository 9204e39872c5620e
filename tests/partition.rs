//! A partition, in-process: three peers on real sockets; one is cut off
//! (each side blocks the other at the libp2p layer, connections closed and
//! refused), both sides write, the partition heals, and every peer ends with
//! the same pinset.

use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::Multiaddr;
use pincluster::config::Config;
use pincluster::identity::Identity;
use pincluster::peer::Peer;
use pincluster::types::{Pin, PinOptions};

async fn start(dir: &std::path::Path, bootstrap: Vec<Multiaddr>) -> Peer {
    start_with(dir, bootstrap, Duration::from_millis(500)).await
}

async fn start_with(
    dir: &std::path::Path,
    bootstrap: Vec<Multiaddr>,
    rebroadcast: Duration,
) -> Peer {
    let mut config = Config::new_default();
    // Every in-process peer would take the proxy's default port.
    config.api.ipfsproxy = None;
    config.cluster.listen_multiaddress = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.cluster.secret = None;
    config.cluster.monitor_ping_interval.0 = Duration::from_secs(1);
    config.consensus.crdt.rebroadcast_interval.0 = rebroadcast;
    config.api.restapi = None;
    Peer::start(dir, config, Identity::generate(), bootstrap)
        .await
        .expect("peer starts")
}

fn cid(i: u32) -> Cid {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("partition-{i}").as_bytes());
    Cid::new_v1(
        0x55,
        cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap(),
    )
}

async fn pin(peer: &Peer, i: u32) {
    let pin = Pin::new(cid(i), PinOptions::default());
    peer.consensus().log_pin(pin).await.expect("pin");
}

fn pinset(peer: &Peer) -> Vec<Cid> {
    let mut cids: Vec<Cid> = peer
        .consensus()
        .state()
        .list()
        .map(|p| p.unwrap().cid)
        .collect();
    cids.sort();
    cids
}

async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_on_both_sides_of_a_partition_converge_after_healing() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), vec![]).await;
    let addr = a.network().listen_addrs().await.unwrap()[0].clone();
    let b = start(dirs[1].path(), vec![addr.clone()]).await;
    let c = start(dirs[2].path(), vec![addr]).await;
    for p in [&a, &b, &c] {
        wait_async("a full peerset", || async {
            p.network().peers().await.unwrap().len() == 2
        })
        .await;
    }
    pin(&a, 0).await;
    wait("the first pin everywhere", || {
        pinset(&b).len() == 1 && pinset(&c).len() == 1
    })
    .await;

    // Cut C off.
    let c_id = c.network().local_peer_id();
    for p in [&a, &b] {
        p.network().set_blocked(c_id, true).await.unwrap();
        c.network()
            .set_blocked(p.network().local_peer_id(), true)
            .await
            .unwrap();
    }

    for i in 1..=20 {
        pin(&a, i).await;
        pin(&c, 100 + i).await;
    }
    wait("A's side to agree", || pinset(&b).len() == 21).await;
    assert_eq!(pinset(&c).len(), 21, "C saw the other side while cut off");
    assert!(!pinset(&c).contains(&cid(1)));

    // Heal.
    for p in [&a, &b] {
        p.network().set_blocked(c_id, false).await.unwrap();
        c.network()
            .set_blocked(p.network().local_peer_id(), false)
            .await
            .unwrap();
    }
    wait("identical pinsets", || {
        let (sa, sb, sc) = (pinset(&a), pinset(&b), pinset(&c));
        sa.len() == 41 && sa == sb && sb == sc
    })
    .await;
    for p in [a, b, c] {
        p.shutdown().await;
    }
}

/// With no rebroadcast to fall back on, only the heads a peer asks for when
/// another comes back can heal a partition. B cuts A off (B forgets A; A
/// only sees its connection close and keeps B in its peerset), both write,
/// B lets A back in: A must announce B again and ask for its heads (it once
/// did not: B's new connection counted before identify said who it was, so
/// B looked as if it had never left).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_comes_back_is_asked_for_its_heads() {
    let hour = Duration::from_secs(3600);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start_with(dirs[0].path(), vec![], hour).await;
    let addr = a.network().listen_addrs().await.unwrap()[0].clone();
    let b = start_with(dirs[1].path(), vec![addr], hour).await;
    for p in [&a, &b] {
        wait_async("a full peerset", || async {
            p.network().peers().await.unwrap().len() == 1
        })
        .await;
    }
    let a_id = a.network().local_peer_id();
    b.network().set_blocked(a_id, true).await.unwrap();
    wait_async("the cut to be seen", || async {
        a.network().peers().await.unwrap().is_empty()
    })
    .await;
    pin(&a, 1).await;
    pin(&b, 2).await;

    b.network().set_blocked(a_id, false).await.unwrap();
    wait("both writes on both peers", || {
        let (sa, sb) = (pinset(&a), pinset(&b));
        sa.len() == 2 && sa == sb
    })
    .await;
    for p in [a, b] {
        p.shutdown().await;
    }
}
