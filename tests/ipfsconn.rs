//! `KuboConnector` against the fake Kubo of `tests/common/fake_kubo.rs`,
//! in Kubo's shapes and in js-ipfs's.

mod common;

use std::time::{Duration, Instant};

use cid::Cid;
use common::fake_kubo::{FakeKubo, PinBehaviour, Quirks};
use futures::{StreamExt, TryStreamExt};
use libp2p::{Multiaddr, PeerId};
use pincluster::ipfsconn::{
    BlockFormat, IpfsConnConfig, IpfsConnector, IpfsError, KuboConnector, PinMode,
};

/// Generous for every call that should succeed; the short timeouts under
/// test are set per test.
const PATIENT: Duration = Duration::from_secs(30);

fn config(fake: &FakeKubo) -> IpfsConnConfig {
    IpfsConnConfig {
        node: fake.multiaddr(),
        request_timeout: PATIENT,
        pin_timeout: PATIENT,
        unpin_timeout: PATIENT,
        repogc_timeout: PATIENT,
    }
}

fn connector(fake: &FakeKubo) -> KuboConnector {
    KuboConnector::new(config(fake)).expect("a connector")
}

fn cids(seed: &str, n: usize) -> Vec<Cid> {
    common::cids(seed, n)
        .iter()
        .map(|c| Cid::try_from(c.as_str()).expect("a CID"))
        .collect()
}

async fn listed(conn: &KuboConnector) -> Vec<(Cid, PinMode)> {
    let mut pins: Vec<(Cid, PinMode)> = conn.pin_ls().try_collect().await.expect("pin/ls");
    pins.sort_by_key(|(c, _)| *c);
    pins
}

#[tokio::test]
async fn pin_unpin_and_list_round_trip() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);
    let c = cids("round-trip", 3);

    conn.pin(&c[0], PinMode::Recursive).await.unwrap();
    conn.pin(&c[1], PinMode::Direct).await.unwrap();
    assert_eq!(fake.pin_mode(&c[0]), Some(PinMode::Recursive));
    assert_eq!(fake.pin_mode(&c[1]), Some(PinMode::Direct));
    let queries = fake.queries("pin/add");
    assert!(queries[0].contains("recursive=true") && queries[0].contains("progress=true"));
    assert!(queries[1].contains("recursive=false"));

    let mut want = vec![(c[0], PinMode::Recursive), (c[1], PinMode::Direct)];
    want.sort_by_key(|(c, _)| *c);
    assert_eq!(listed(&conn).await, want);
    assert_eq!(
        conn.pin_ls_cid(&c[0]).await.unwrap(),
        Some(PinMode::Recursive)
    );
    assert_eq!(conn.pin_ls_cid(&c[1]).await.unwrap(), Some(PinMode::Direct));
    assert_eq!(conn.pin_ls_cid(&c[2]).await.unwrap(), None);

    conn.unpin(&c[0]).await.unwrap();
    conn.unpin(&c[0]).await.expect("not pinned is success");
    assert_eq!(listed(&conn).await, vec![(c[1], PinMode::Direct)]);
    assert_eq!(fake.pinned(), vec![c[1]]);
}

#[tokio::test]
async fn pinning_a_pinned_cid_does_not_call_pin_add() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);
    let c = cids("pinned", 1)[0];
    fake.add_pins([(c, PinMode::Recursive)]);

    conn.pin(&c, PinMode::Recursive).await.unwrap();
    assert_eq!(fake.requests("pin/ls"), 1);
    assert_eq!(fake.requests("pin/add"), 0);

    // A direct pin on a recursive one: Kubo refuses, and that is success.
    conn.pin(&c, PinMode::Direct).await.unwrap();
    assert_eq!(fake.pin_mode(&c), Some(PinMode::Recursive));
}

#[tokio::test]
async fn a_pin_without_progress_times_out() {
    let fake = FakeKubo::start().await;
    let conn = KuboConnector::new(IpfsConnConfig {
        pin_timeout: Duration::from_millis(300),
        ..config(&fake)
    })
    .unwrap();
    let c = cids("stuck", 2);
    // Kubo's ticker repeats the same progress: that is no progress.
    fake.set_pin_behaviour(c[0], PinBehaviour::Stall);
    // Nothing at all after the headers.
    fake.set_pin_behaviour(c[1], PinBehaviour::Hang);
    for cid in &c {
        let err = conn.pin(cid, PinMode::Recursive).await.unwrap_err();
        assert!(
            matches!(err, IpfsError::Timeout { op: "pin/add", .. }),
            "{err}"
        );
    }
    assert!(fake.pinned().is_empty());
}

#[tokio::test]
async fn growing_progress_keeps_a_long_pin_alive() {
    let fake = FakeKubo::start().await;
    let conn = KuboConnector::new(IpfsConnConfig {
        pin_timeout: Duration::from_millis(500),
        ..config(&fake)
    })
    .unwrap();
    let c = cids("slow", 1)[0];
    // Ten steps of 100 ms: twice the timeout in all, never idle for long.
    let slow = PinBehaviour::Slow {
        steps: 10,
        every: Duration::from_millis(100),
    };
    fake.set_pin_behaviour(c, slow);
    conn.pin(&c, PinMode::Recursive).await.unwrap();
    assert_eq!(fake.pin_mode(&c), Some(PinMode::Recursive));

    // js-ipfs sends no progress: the same pin must then fit in the timeout.
    fake.set_quirks(Quirks::js_ipfs());
    let d = cids("slow-js", 1)[0];
    fake.set_pin_behaviour(d, slow);
    let err = conn.pin(&d, PinMode::Recursive).await.unwrap_err();
    assert!(matches!(err, IpfsError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn pin_ls_streams_a_hundred_thousand_pins() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);
    let recursive = cids("many", 100_000);
    let direct = cids("many-direct", 10);
    fake.add_pins(recursive.iter().map(|c| (*c, PinMode::Recursive)));
    fake.add_pins(direct.iter().map(|c| (*c, PinMode::Direct)));

    let (mut r, mut d) = (0, 0);
    let mut pins = std::pin::pin!(conn.pin_ls());
    while let Some(pin) = pins.next().await {
        match pin.unwrap().1 {
            PinMode::Recursive => r += 1,
            PinMode::Direct => d += 1,
        }
    }
    assert_eq!((r, d), (100_000, 10));
    let queries = fake.queries("pin/ls");
    assert_eq!(queries.len(), 2);
    assert!(queries[0].contains("stream=true") && queries[0].contains("type=recursive"));
    assert!(queries[1].contains("type=direct"));
}

#[tokio::test]
async fn js_ipfs_replies_parse() {
    let fake = FakeKubo::start_with(Quirks::js_ipfs()).await;
    let conn = connector(&fake);
    let c = cids("js", 2);

    assert_eq!(conn.version().await.unwrap(), "0.18.1");
    // Only the final {"Pins":[<base58 CIDv1>]}.
    conn.pin(&c[0], PinMode::Recursive).await.unwrap();
    conn.pin(&c[1], PinMode::Direct).await.unwrap();
    // One {"Keys":{...}} object per request, keys in base58.
    let mut want = vec![(c[0], PinMode::Recursive), (c[1], PinMode::Direct)];
    want.sort_by_key(|(c, _)| *c);
    assert_eq!(listed(&conn).await, want);
    assert_eq!(conn.pin_ls_cid(&c[1]).await.unwrap(), Some(PinMode::Direct));
    // A second pin is answered by the check.
    conn.pin(&c[0], PinMode::Recursive).await.unwrap();
    assert_eq!(fake.requests("pin/add"), 2);

    // Numbers as strings.
    let block = fake.add_block(b"hello world\n");
    let stat = conn.repo_stat().await.unwrap();
    assert_eq!(stat.repo_size, 12);
    assert_eq!(stat.storage_max, 9_007_199_254_740_991);

    // `format=raw` is what js-ipfs understands; the key comes back base58.
    let put = conn
        .block_put(b"hello world\n".to_vec(), BlockFormat::of(&block))
        .await
        .unwrap();
    assert_eq!(put, block);

    assert!(conn.swarm_peers().await.unwrap().is_empty());
}

#[tokio::test]
async fn daemon_errors_carry_their_message() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);

    fake.fail_next(1);
    match conn.version().await.unwrap_err() {
        IpfsError::Daemon {
            op: "version",
            status: 500,
            message,
        } => assert_eq!(message, "fake failure"),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(conn.version().await.unwrap(), "0.43.1");

    let c = cids("missing", 1)[0];
    fake.set_pin_behaviour(c, PinBehaviour::Fail);
    match conn.pin(&c, PinMode::Recursive).await.unwrap_err() {
        IpfsError::Daemon {
            op: "pin/add",
            message,
            ..
        } => assert!(message.contains("could not find"), "{message}"),
        other => panic!("unexpected {other}"),
    }

    match conn.resolve("/ipns/nowhere.example").await.unwrap_err() {
        IpfsError::Daemon { op: "resolve", .. } => {}
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn a_down_daemon_is_unreachable_at_once() {
    let mut fake = FakeKubo::start().await;
    let conn = connector(&fake);
    conn.id().await.unwrap();
    fake.stop().await;

    // Far below every configured timeout (30 s): refused, not waited on.
    let err = tokio::time::timeout(Duration::from_secs(5), conn.id())
        .await
        .expect("no waiting on a refused connection")
        .unwrap_err();
    assert!(matches!(err, IpfsError::Unreachable { .. }), "{err}");
    assert_eq!(conn.consecutive_failures(), 1);

    fake.restart().await;
    conn.id().await.unwrap();
    assert_eq!(conn.consecutive_failures(), 0);
}

#[tokio::test]
async fn more_than_ten_failures_throttle_requests_until_one_succeeds() {
    let mut fake = FakeKubo::start().await;
    let conn = connector(&fake);
    fake.stop().await;
    for _ in 0..11 {
        assert!(conn.version().await.is_err());
    }
    assert_eq!(conn.consecutive_failures(), 11);

    // One request a second from now on: three take at least two seconds.
    let start = Instant::now();
    for _ in 0..3 {
        assert!(matches!(
            conn.version().await,
            Err(IpfsError::Unreachable { .. })
        ));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    fake.restart().await;
    conn.version().await.unwrap();
    assert_eq!(conn.consecutive_failures(), 0);
}

#[tokio::test]
async fn pin_update_uses_the_command_or_falls_back() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);
    let c = cids("update", 4);
    fake.add_pins([(c[0], PinMode::Recursive)]);
    conn.pin_update(&c[0], &c[1]).await.unwrap();
    assert_eq!(fake.requests("pin/update"), 1);
    assert_eq!(fake.requests("pin/add"), 0);
    assert!(fake.queries("pin/update")[0].contains("unpin=false"));
    assert_eq!(fake.pinned(), {
        let mut v = vec![c[0], c[1]];
        v.sort();
        v
    });

    let js = FakeKubo::start_with(Quirks::js_ipfs()).await;
    let conn = connector(&js);
    js.add_pins([(c[2], PinMode::Recursive)]);
    conn.pin_update(&c[2], &c[3]).await.unwrap();
    assert_eq!(js.requests("pin/update"), 1);
    assert_eq!(js.requests("pin/add"), 1);
    assert_eq!(js.pin_mode(&c[2]), Some(PinMode::Recursive));
    assert_eq!(js.pin_mode(&c[3]), Some(PinMode::Recursive));
}

#[tokio::test]
async fn id_skips_bad_addresses() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);
    fake.set_addresses(vec![
        "/ip4/10.0.0.1/tcp/4001".into(),
        "not an address".into(),
        "/ip4/10.0.0.1/udp/4001/quic-v1".into(),
    ]);
    let id = conn.id().await.unwrap();
    assert_eq!(id.id, fake.peer_id());
    let want: Vec<Multiaddr> = vec![
        "/ip4/10.0.0.1/tcp/4001".parse().unwrap(),
        "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap(),
    ];
    assert_eq!(id.addresses, want);
}

#[tokio::test]
async fn blocks_stat_and_gc() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);
    let data = b"a block of cluster DAG".to_vec();
    let expected = fake.add_block(&data);
    let kept = fake.add_block(b"pinned");
    fake.add_pins([(kept, PinMode::Recursive)]);

    let cid = conn
        .block_put(data.clone(), BlockFormat::of(&expected))
        .await
        .unwrap();
    assert_eq!(cid, expected);
    let query = &fake.queries("block/put")[0];
    for part in ["cid-codec=raw", "mhtype=sha2-256", "mhlen=32", "pin=false"] {
        assert!(query.contains(part), "{query}");
    }
    assert_eq!(fake.block(&cid), Some(data.clone()));
    assert_eq!(
        conn.repo_stat().await.unwrap().repo_size,
        (data.len() + 6) as u64
    );

    let gc = conn.repo_gc().await.unwrap();
    assert_eq!(gc.removed, vec![cid]);
    assert!(gc.errors.is_empty());
    assert_eq!(fake.block(&cid), None);
    assert_eq!(conn.repo_stat().await.unwrap().repo_size, 6);
}

#[tokio::test]
async fn swarm_and_resolve() {
    let fake = FakeKubo::start().await;
    let conn = connector(&fake);
    let peer = PeerId::random();
    fake.add_swarm_peer(peer);
    assert_eq!(conn.swarm_peers().await.unwrap(), vec![peer]);

    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
        .parse()
        .unwrap();
    conn.swarm_connect(&addr).await.unwrap();
    assert_eq!(fake.connected(), vec![addr]);

    let c = cids("resolve", 1)[0];
    assert_eq!(conn.resolve(&format!("/ipfs/{c}")).await.unwrap(), c);
    assert_eq!(conn.resolve(&c.to_string()).await.unwrap(), c);
    assert_eq!(fake.requests("resolve"), 0, "bare CIDs need no resolve");
    fake.set_resolve("/ipns/example.org", c);
    assert_eq!(conn.resolve("/ipns/example.org").await.unwrap(), c);
}

#[test]
fn unreachable_kinds_of_address_are_refused() {
    let node: Multiaddr = "/unix/tmp%2Fipfs.sock".parse().unwrap();
    let err = KuboConnector::new(IpfsConnConfig::with_defaults(node)).unwrap_err();
    assert!(matches!(err, IpfsError::BadAddress(_)), "{err}");
}
