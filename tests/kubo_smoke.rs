//! The real IPFS test peer works on this machine: Kubo daemons start on
//! loopback, find each other only when told to, move content over bitswap,
//! and keep their identity, ports and pins across a restart. If these fail,
//! every test that runs against real IPFS will too.

mod common;

use common::kubo::Kubo;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_added_on_one_daemon_is_pinned_on_another_over_bitswap() {
    let tmp = common::temp();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a, b) = tokio::join!(Kubo::start(&dir_a), Kubo::start(&dir_b));
    assert_ne!(a.id(), b.id());
    assert_ne!(a.api_url(), b.api_url());

    let data = b"hello from the pincluster Kubo smoke test\n";
    let cid = a.add("hello.txt", data).await;
    assert!(a.recursive_pins().await.contains(&cid));
    assert!(b.recursive_pins().await.is_empty(), "b starts empty");
    assert!(
        b.swarm_peer_ids().await.is_empty(),
        "b knows no one until told"
    );

    b.connect(&a).await;
    // b can only get the blocks from a, over bitswap. `timeout` because a
    // missing block would make Kubo wait forever.
    let pinned = b.call(&format!("pin/add?arg={cid}&timeout=30s")).await;
    assert_eq!(pinned["Pins"], json!([cid]));
    assert_eq!(b.recursive_pins().await, vec![cid.clone()]);
    let listed = b.call(&format!("pin/ls?arg={cid}")).await;
    assert_eq!(listed["Keys"][&cid]["Type"], "recursive");
    let (status, body) = b.post(&format!("cat?arg={cid}&timeout=10s")).await;
    assert_eq!((status, body.as_bytes()), (200, &data[..]));

    let removed = b.call(&format!("pin/rm?arg={cid}")).await;
    assert_eq!(removed["Pins"], json!([cid]));
    assert!(b.recursive_pins().await.is_empty());
    assert!(a.recursive_pins().await.contains(&cid), "a keeps its pin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_identity_ports_and_pins_even_after_a_kill() {
    let tmp = common::temp();
    let mut ipfs = Kubo::start(tmp.path()).await;
    let cid = ipfs.add("kept.txt", b"survives restarts\n").await;
    let (id, api, swarm) = (
        ipfs.id().to_string(),
        ipfs.api_multiaddr(),
        ipfs.swarm_addr().to_string(),
    );
    assert!(api.starts_with("/ip4/127.0.0.1/tcp/"), "{api}");
    assert_eq!(ipfs.api_url(), format!("http://127.0.0.1:{}", &api[19..]));

    ipfs.restart().await;
    assert_eq!(
        (ipfs.id(), ipfs.api_multiaddr()),
        (id.as_str(), api.clone())
    );
    assert_eq!(ipfs.swarm_addr(), swarm);
    assert_eq!(ipfs.recursive_pins().await, vec![cid.clone()]);

    // A crash leaves the repo lock behind; the next start must not trip on it.
    ipfs.kill();
    assert!(!ipfs.is_running());
    ipfs.restart().await;
    assert_eq!(ipfs.id(), id);
    assert_eq!(ipfs.recursive_pins().await, vec![cid]);
    assert!(ipfs.stop(), "a graceful stop exits 0");
}
