//! The embedded node's IPFS swarm and Bitswap on real sockets: two and
//! three of our nodes (blocks, cancels, timeouts, providers through the
//! DHT), real Kubo 0.43.1 on both sides of a transfer (Kubo fetches a
//! 100 MB file from us; we fetch a DAG only Kubo has), and a hostile peer
//! speaking Bitswap raw (wrong bytes, huge blocks and messages, floods of
//! wants, garbage) that is refused while honest peers keep being served.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use common::kubo::Kubo;
use common::{DEADLINE, wait_for};
use futures::io::AsyncWriteExt;
use futures::{AsyncReadExt, FutureExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use pincluster::ipfs::bitswap::message::{Message, Version, WantEntry, WantType, put_varint};
use pincluster::ipfs::bitswap::verify::cid_v1;
use pincluster::ipfs::bitswap::{BitswapError, BlockSource, MemoryBlockSource};
use pincluster::ipfs::swarm::{IpfsSwarm, SwarmConfig};

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

async fn node_with(
    source: Arc<MemoryBlockSource>,
    tune: impl FnOnce(&mut SwarmConfig),
) -> (IpfsSwarm, Multiaddr) {
    let mut config = SwarmConfig::new(Keypair::generate_ed25519(), vec![loopback()]);
    tune(&mut config);
    let node = IpfsSwarm::start(config, source)
        .await
        .expect("start the swarm");
    let addr = node.listen_addrs().await.unwrap().remove(0);
    (node, addr)
}

async fn node(source: Arc<MemoryBlockSource>) -> (IpfsSwarm, Multiaddr) {
    node_with(source, |_| {}).await
}

fn random_blocks(n: usize, size: usize) -> Vec<(Cid, Bytes)> {
    (0..n)
        .map(|_| {
            let data: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
            (cid_v1(0x55, &data), Bytes::from(data))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_blocks_cancel_and_time_out() {
    let blocks = random_blocks(60, 100_000);
    let a_source = Arc::new(MemoryBlockSource::new());
    for (cid, data) in &blocks {
        a_source.insert(*cid, data.clone());
    }
    let (a, a_addr) = node(a_source).await;
    let b_source = Arc::new(MemoryBlockSource::new());
    let (b, _) = node_with(b_source.clone(), |c| {
        c.bitswap.fetch_timeout = Duration::from_secs(2);
        c.bitswap.window = 16;
    })
    .await;
    assert_eq!(b.connect(a_addr).await.unwrap(), a.local_peer_id());

    // Every block arrives, once, verified and stored.
    let wanted: Vec<Cid> = blocks.iter().map(|(c, _)| *c).collect();
    let mut got = std::collections::HashMap::new();
    let mut fetch = b.get_blocks(wanted.clone());
    while let Some(item) = fetch.next().await {
        let (cid, data) = item.expect("a block");
        assert!(got.insert(cid, data).is_none(), "{cid} twice");
    }
    assert_eq!(got.len(), blocks.len());
    for (cid, data) in &blocks {
        assert_eq!(&got[cid], data);
        assert!(b_source.has(cid).unwrap());
    }
    let ledger = b.ledger(&a.local_peer_id());
    assert_eq!(ledger.blocks_received, 60);
    assert_eq!(ledger.bytes_received, 6_000_000);
    // A counts a message once its write has returned, which can be just
    // after B has read it: wait for the count rather than race it.
    wait_for("A to count the 60 blocks it sent", DEADLINE, || async {
        (a.ledger(&b.local_peer_id()).blocks_sent == 60).then_some(())
    })
    .await;

    // A block nobody has: the fetch ends with a timeout, and B's wantlist
    // is empty afterwards.
    let missing = cid_v1(0x55, b"nobody has this");
    match b.get_block(missing).await {
        Err(BitswapError::Timeout { cid, .. }) => assert_eq!(cid, missing),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(b.bitswap().wantlist_len(), 0);

    // A hash we cannot check is refused by name, at once.
    let blake3 = Cid::new_v1(
        0x55,
        cid::multihash::Multihash::wrap(0x1e, &[7u8; 32]).unwrap(),
    );
    let err = b.get_block(blake3).await.unwrap_err();
    assert!(err.to_string().contains("0x1e"), "{err}");

    // Dropping a fetch withdraws its wants.
    let others: Vec<Cid> = (0..10u8).map(|i| cid_v1(0x55, &[i, 1, 2])).collect();
    let mut fetch = b.get_blocks(others);
    // Polled exactly once: the first poll registers the wants (nobody has
    // these blocks, so it cannot end the fetch); no timer decides it.
    assert!(fetch.next().now_or_never().is_none());
    assert_eq!(b.bitswap().wantlist_len(), 10);
    drop(fetch);
    assert_eq!(b.bitswap().wantlist_len(), 0);

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_found_through_the_dht_at_a_peer_not_connected() {
    let (cid, data) = random_blocks(1, 5000).remove(0);
    let c_source = Arc::new(MemoryBlockSource::new());
    c_source.insert(cid, data.clone());
    let (b, b_addr) = node(Arc::new(MemoryBlockSource::new())).await;
    let (c, _) = node(c_source).await;
    let (a, _) = node(Arc::new(MemoryBlockSource::new())).await;
    let (probe, _) = node(Arc::new(MemoryBlockSource::new())).await;
    c.connect(b_addr.clone()).await.unwrap();
    probe.connect(b_addr.clone()).await.unwrap();
    // B learns C's listen address from identify before C's record is
    // worth anything; a probe (not A) checks the record is findable.
    wait_for("C to provide through B", DEADLINE, || async {
        c.provide(cid).await.ok()?;
        let found = probe.find_providers(cid).await.ok()?;
        found.contains(&c.local_peer_id()).then_some(())
    })
    .await;
    // A knows only B, which answers DONT_HAVE: A's Bitswap looks the
    // providers up and dials C.
    a.connect(b_addr).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, a.get_block(cid))
        .await
        .expect("the fetch ends")
        .expect("the block, from C");
    assert_eq!(got, data);
    assert_eq!(a.ledger(&c.local_peer_id()).blocks_received, 1);
    for n in [a, b, c, probe] {
        n.stop().await;
    }
}

/// Every block of `root`'s DAG at `kubo` (root first), read with `block/get`.
async fn kubo_blocks(kubo: &Kubo, root: &str) -> Vec<(Cid, Bytes)> {
    let refs = kubo
        .call_ndjson(&format!("refs?arg={root}&recursive=true&unique=true"))
        .await;
    let mut cids = vec![root.to_string()];
    cids.extend(refs.iter().map(|r| r["Ref"].as_str().unwrap().to_string()));
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for c in cids {
        let data = http
            .post(format!("{}/api/v0/block/get?arg={c}", kubo.api_url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((c.parse().unwrap(), data));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubo_fetches_a_100_mb_file_from_our_node_byte_identical() {
    let tmp = common::temp();
    let first = Kubo::start(&tmp.path().join("first")).await;
    let data: Vec<u8> = (0..100 * 1024 * 1024)
        .map(|_| rand::random::<u8>())
        .collect();
    let root = first.add("big.bin", &data).await;
    let blocks = kubo_blocks(&first, &root).await;
    drop(first);
    assert!(blocks.len() > 400, "a 100 MB file is 400 chunks and more");

    let source = Arc::new(MemoryBlockSource::new());
    for (cid, block) in &blocks {
        source.insert(*cid, block.clone());
    }
    let (ours, addr) = node(source).await;
    let second = Kubo::start(&tmp.path().join("second")).await;
    let reply = second.call(&format!("swarm/connect?arg={addr}")).await;
    assert!(reply.to_string().contains("success"), "{reply}");

    let got = reqwest::Client::new()
        .post(format!("{}/api/v0/cat?arg={root}", second.api_url()))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got[..] == data[..], "Kubo's copy differs from the file");
    let peer: PeerId = second.id().parse().unwrap();
    // Counted once each write returns, which can trail Kubo's read.
    wait_for("every block sent to be counted", DEADLINE, || async {
        (ours.ledger(&peer).blocks_sent as usize >= blocks.len()).then_some(())
    })
    .await;
    ours.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_fetches_every_block_of_a_dag_only_kubo_has() {
    let tmp = common::temp();
    let kubo = Kubo::start(&tmp.path().join("kubo")).await;
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|_| rand::random::<u8>())
        .collect();
    let v0 = kubo.add("a.bin", &data).await;
    let lines = kubo
        .add_with(
            "add?pin=true&cid-version=1&raw-leaves=true",
            "b.bin",
            &data[..2_000_000],
        )
        .await;
    let v1 = lines.last().unwrap()["Hash"].as_str().unwrap().to_string();
    let mut expected = kubo_blocks(&kubo, &v0).await;
    expected.extend(kubo_blocks(&kubo, &v1).await);

    let source = Arc::new(MemoryBlockSource::new());
    let (ours, _) = node(source.clone()).await;
    let kubo_addr: Multiaddr = kubo.swarm_addr().parse().unwrap();
    ours.connect(kubo_addr).await.unwrap();
    let wanted: Vec<Cid> = expected.iter().map(|(c, _)| *c).collect();
    let mut got = std::collections::HashMap::new();
    let mut fetch = ours.get_blocks(wanted);
    while let Some(item) = tokio::time::timeout(DEADLINE, fetch.next())
        .await
        .expect("blocks keep coming")
    {
        let (cid, block) = item.expect("a block from Kubo");
        got.insert(cid, block);
    }
    assert_eq!(got.len(), expected.len());
    for (cid, block) in &expected {
        assert_eq!(&got[cid], block, "{cid}");
        assert_eq!(source.get(cid).unwrap().as_ref(), Some(block));
    }
    let peer: PeerId = kubo.id().parse().unwrap();
    assert_eq!(ours.ledger(&peer).blocks_received as usize, expected.len());
    ours.stop().await;
}

/// Reads one length-prefixed message.
async fn read_message(stream: &mut libp2p::Stream) -> Message {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        n |= u64::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; n as usize];
    stream.read_exact(&mut body).await.unwrap();
    Message::decode(Bytes::from(body)).unwrap()
}

/// Writes one length-prefixed message on a new stream.
async fn send_raw(opener: &pincluster::ipfs::bitswap::StreamOpener, to: PeerId, body: &[u8]) {
    let (mut s, _) = opener.open(to).await.expect("a stream to our node");
    let mut head = Vec::new();
    put_varint(&mut head, body.len() as u64);
    s.write_all(&head).await.unwrap();
    s.write_all(body).await.unwrap();
    s.flush().await.unwrap();
    // Held open a moment by the reader's side; closing is fine.
    let _ = s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_is_refused_and_honest_peers_are_still_served() {
    let node_source = Arc::new(MemoryBlockSource::new());
    let (served_cid, served) = random_blocks(1, 1000).remove(0);
    node_source.insert(served_cid, served.clone());
    let (ours, addr) = node(node_source).await;
    let (wanted_cid, wanted_data) = random_blocks(1, 4000).remove(0);

    // The hostile peer: a bare Swarm with only the Bitswap streams.
    let (behaviour, mut inbound, opener) = pincluster::ipfs::bitswap::Behaviour::new();
    let mut hostile = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let hostile_id = *hostile.local_peer_id();
    hostile.dial(addr.clone()).unwrap();
    let driver = tokio::spawn(async move {
        loop {
            hostile.select_next_some().await;
        }
    });

    // Our node wants a block; the hostile peer hears the want.
    let fetch = {
        let ours = ours.clone();
        tokio::spawn(async move { ours.get_block(wanted_cid).await })
    };
    let (from, mut stream, _) = tokio::time::timeout(DEADLINE, inbound.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, ours.local_peer_id());
    loop {
        let msg = read_message(&mut stream).await;
        if msg
            .wantlist
            .iter()
            .any(|e| e.cid == wanted_cid && !e.cancel)
        {
            break;
        }
    }

    // 1. Wrong bytes under the wanted CID's prefix.
    let mut fake = wanted_data.to_vec();
    fake[0] ^= 1;
    let lie = Message::default().encode(Version::V120, &[(wanted_cid, Bytes::from(fake))]);
    send_raw(&opener, ours.local_peer_id(), &lie).await;
    // 2. A block over 2 MiB in a message under the 4 MiB limit.
    let huge = Bytes::from(vec![0u8; 3 * 1024 * 1024]);
    let huge_cid = cid_v1(0x55, &huge);
    let big = Message::default().encode(Version::V120, &[(huge_cid, huge)]);
    send_raw(&opener, ours.local_peer_id(), &big).await;
    // 3. A message announced at 64 MiB.
    {
        let (mut s, _) = opener.open(ours.local_peer_id()).await.unwrap();
        let mut head = Vec::new();
        put_varint(&mut head, 64 << 20);
        s.write_all(&head).await.unwrap();
        // Our node refuses the stream as soon as it reads the length, so
        // what follows may find it closed: that is the refusal, counted
        // below, not a failure of the test.
        let _ = s.write_all(&[0u8; 1024]).await;
        let _ = s.flush().await;
    }
    // 4. Garbage.
    send_raw(&opener, ours.local_peer_id(), &[0x0b, 0xff, 0xff]).await;
    // 5. A flood of wants: 30 000 entries over six messages.
    for round in 0..6u32 {
        let wantlist = (0..5000u32)
            .map(|i| WantEntry {
                cid: cid_v1(0x55, &(round * 5000 + i).to_be_bytes()),
                priority: 1,
                cancel: false,
                want_type: WantType::Block,
                send_dont_have: false,
            })
            .collect();
        let flood = Message {
            wantlist,
            ..Message::default()
        }
        .encode(Version::V120, &[]);
        send_raw(&opener, ours.local_peer_id(), &flood).await;
    }

    let bs = ours.bitswap().clone();
    let ledger = wait_for("every attack to be counted", DEADLINE, || async {
        let l = bs.ledger(&hostile_id);
        (l.blocks_unwanted >= 1
            && l.blocks_rejected >= 1
            && l.messages_rejected >= 2
            && l.wants_dropped > 0)
            .then_some(l)
    })
    .await;
    assert_eq!(ledger.blocks_received, 0, "{ledger:?}");
    assert!(bs.peer_wants_len(&hostile_id) <= 1024);
    assert!(
        !fetch.is_finished(),
        "the wrong bytes were not taken for the block"
    );

    // An honest peer with the real block: the fetch completes with it.
    let honest_source = Arc::new(MemoryBlockSource::new());
    honest_source.insert(wanted_cid, wanted_data.clone());
    let (honest, honest_addr) = node(honest_source).await;
    ours.connect(honest_addr).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, fetch)
        .await
        .expect("the fetch ends")
        .unwrap()
        .expect("the real block");
    assert_eq!(got, wanted_data);
    // The hostile peer, asked too, is told the want is over.
    let cancelled = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = read_message(&mut stream).await;
            if msg.wantlist.iter().any(|e| e.cid == wanted_cid && e.cancel) {
                break;
            }
        }
    })
    .await;
    assert!(cancelled.is_ok(), "no cancel reached the other asked peer");
    // And our node still serves the honest peer.
    honest.connect(addr).await.unwrap();
    assert_eq!(honest.get_block(served_cid).await.unwrap(), served);

    driver.abort();
    ours.stop().await;
    honest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_releases_its_port() {
    let (node, addr) = node(Arc::new(MemoryBlockSource::new())).await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    // This process's own sockets are looked at. Binding the port to find
    // out failed once under load (address in use): a freed port is anyone's
    // on a machine running many tests at once.
    let me = std::process::id();
    assert!(common::listens(me, port), "the node listens on {port}");
    node.stop().await;
    assert!(
        !common::listens(me, port),
        "{port} still listened on after stop"
    );
    assert!(node.connect(addr).await.is_err(), "calls fail after stop");
}
