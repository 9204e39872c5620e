//! Cluster peers whose only IPFS nodes are their embedded ones, no Kubo
//! beside them: the cluster connects the nodes' public swarms to each
//! other, so content added at one peer (with the real `ipfs` CLI through
//! its proxy) reaches the others over Bitswap, is pinned there, served by
//! their gateways, kept across a restart, and removed by unpin + gc. And
//! interop: an embedded node pins content only a Kubo daemon has.

mod common;

use std::process::{Command, Stdio};

use common::kubo::{Kubo, real_bin};
use common::{DEADLINE, PeerSpec, RestApi, TestPeer, temp, wait_for};
use pincluster::ipfs::bitswap::{BlockSource, BlockSourceError, MemoryBlockSource};

/// `ipfs --api <api> <args>` with no repo of its own; stdout, or stderr as
/// the error.
fn ipfs(api: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(real_bin("ipfs"))
        .args(["--api", api, "--timeout", "60s"])
        .args(args)
        .env("IPFS_PATH", "/nonexistent-ipfs-repo")
        .stdin(Stdio::null())
        .output()
        .expect("run ipfs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn spec(bootstrap: Vec<String>) -> PeerSpec {
    PeerSpec {
        env: vec![
            (
                "CLUSTER_EMBEDDED_GATEWAYLISTENMULTIADDRESS".into(),
                "/ip4/127.0.0.1/tcp/0".into(),
            ),
            // A block nobody has waits for Bitswap until the pin times
            // out: keep each attempt short, and the attempts few.
            ("CLUSTER_EMBEDDED_PINTIMEOUT".into(), "8s".into()),
            ("CLUSTER_STATELESS_MAXATTEMPTS".into(), "2".into()),
            ("CLUSTER_STATELESS_RETRYBACKOFF".into(), "100ms".into()),
        ],
        bootstrap,
        ..PeerSpec::default()
    }
}

/// A peer on a fresh folder `init` made with the embedded node (its
/// default).
async fn embedded_peer(dir: &std::path::Path, bootstrap: Vec<String>) -> TestPeer {
    let spec = spec(bootstrap);
    common::init_embedded_folder(dir, &spec);
    TestPeer::start(dir.to_path_buf(), spec).await
}

fn gateway(peer: &TestPeer) -> String {
    let addr = peer
        .log_value("IPFS gateway listening", "addr=")
        .expect("gateway address");
    format!("http://127.0.0.1:{}", addr.rsplit('/').next().unwrap())
}

/// The status of `cid` on every peer of the cluster, as `peer` sees it.
async fn statuses(peer: &TestPeer, cid: &str) -> Vec<String> {
    let Some(v) = peer.get_json(&format!("/pins/{cid}")).await else {
        return Vec::new();
    };
    v["peer_map"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|p| p["status"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_all(peer: &TestPeer, cid: &str, status: &str, n: usize) {
    wait_for(
        &format!("{cid} {status} on {n} peers"),
        DEADLINE,
        || async {
            let s = statuses(peer, cid).await;
            (s.len() == n && s.iter().all(|x| x == status)).then_some(())
        },
    )
    .await;
}

async fn gateway_get(gateway: &str, cid: &str) -> (u16, Vec<u8>) {
    let res = reqwest::get(format!("{gateway}/ipfs/{cid}"))
        .await
        .expect("gateway answers");
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

/// The embedded node's IPFS identity, as the peer's `/id` reports it.
async fn ipfs_id(peer: &TestPeer) -> (String, Vec<String>) {
    let id = peer.get_json("/id").await.expect("GET /id");
    let ipfs = &id["ipfs"];
    let addrs = ipfs["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (ipfs["id"].as_str().unwrap_or_default().to_string(), addrs)
}

#[tokio::test]
async fn three_embedded_peers_share_content_over_bitswap() {
    let dirs = [temp(), temp(), temp()];
    let a = embedded_peer(dirs[0].path(), Vec::new()).await;
    let boot = vec![a.cluster_addr().await];
    let b = embedded_peer(dirs[1].path(), boot.clone()).await;
    let mut c = embedded_peer(dirs[2].path(), boot).await;
    for p in [&a, &b, &c] {
        wait_for("3 cluster peers", DEADLINE, || async {
            (p.peer_ids().await?.len() == 3).then_some(())
        })
        .await;
    }
    // Each node has its own IPFS identity, distinct from its cluster peer's.
    let (c_ipfs, c_addrs) = ipfs_id(&c).await;
    assert!(!c_ipfs.is_empty() && c_ipfs != c.id, "{c_ipfs}");
    assert!(!c_addrs.is_empty(), "the swarm's addresses are announced");

    // 1.5 MB: several chunks under a dag-pb root, fetched level by level.
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let work = temp();
    let file = work.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let a_proxy = a.proxy_addr();
    let root = ipfs(&a_proxy, &["add", "-Q", file.to_str().unwrap()]).expect("ipfs add");
    // Replication "all" (init's default): only A had the blocks, so B and
    // C got them from A's node over Bitswap.
    wait_all(&a, &root, "pinned", 3).await;
    let (status, body) = gateway_get(&gateway(&c), &root).await;
    assert_eq!(status, 200);
    assert!(body == data, "C's gateway serves what A added");
    // The cluster connected the embedded nodes: the stock CLI sees A's
    // node among C's swarm peers, and C's own id with its addresses.
    let (a_ipfs, _) = ipfs_id(&a).await;
    let peers = ipfs(&c.proxy_addr(), &["swarm", "peers"]).expect("ipfs swarm peers");
    assert!(peers.contains(&a_ipfs), "{peers}");
    let id = ipfs(&c.proxy_addr(), &["id"]).expect("ipfs id");
    assert!(id.contains(&c_ipfs) && id.contains("/tcp/"), "{id}");

    // A clean restart of C: its pin and blocks stay, it serves them again,
    // with the same IPFS identity.
    assert!(c.stop(), "C shuts down cleanly (swarm included)");
    let c_spec = c.spec.clone();
    c = TestPeer::start(dirs[2].path().to_path_buf(), c_spec).await;
    assert_eq!(ipfs_id(&c).await.0, c_ipfs);
    wait_all(&c, &root, "pinned", 3).await;
    let (status, body) = gateway_get(&gateway(&c), &root).await;
    assert_eq!(status, 200);
    assert!(body == data, "C serves the content after its restart");

    // Unpin through A's proxy; after gc C's node no longer has it.
    ipfs(&a_proxy, &["pin", "rm", &root]).expect("ipfs pin rm");
    let c_proxy = c.proxy_addr();
    let c_gateway = gateway(&c);
    wait_for("the content gone from C after gc", DEADLINE, || async {
        ipfs(&c_proxy, &["repo", "gc"]).ok()?;
        (gateway_get(&c_gateway, &root).await.0 == 404).then_some(())
    })
    .await;

    // A CID nobody has: every peer tries Bitswap, then gives up.
    let absent = common::cids("embedded-cluster-absent", 1).remove(0);
    let (code, _) = b.pin(&absent, "").await;
    assert!(code < 300, "pin accepted: {code}");
    wait_all(&b, &absent, "pin_error", 3).await;
}

#[tokio::test]
async fn an_embedded_node_pins_what_only_kubo_has() {
    let kubo_dir = temp();
    let kubo = Kubo::start(kubo_dir.path()).await;
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let cid = kubo.add("only-in-kubo.bin", &data).await;

    let dir = temp();
    let peer = embedded_peer(dir.path(), Vec::new()).await;
    let (id, addrs) = ipfs_id(&peer).await;
    let addr = addrs
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/"))
        .expect("a loopback swarm address");
    let addr = if addr.contains("/p2p/") {
        addr.clone()
    } else {
        format!("{addr}/p2p/{id}")
    };
    // Kubo dials the embedded node: Noise, Yamux and Bitswap both ways.
    kubo.call(&format!("swarm/connect?arg={addr}")).await;

    let (code, _) = peer.pin(&cid, "").await;
    assert!(code < 300, "pin accepted: {code}");
    wait_all(&peer, &cid, "pinned", 1).await;
    let (status, body) = gateway_get(&gateway(&peer), &cid).await;
    assert_eq!(status, 200);
    assert!(body == data, "the embedded gateway serves Kubo's content");
}

/// A Bitswap peer that pauses before reading each block it serves: slow
/// enough that a pin of a few megabytes takes seconds, so its progress can
/// be watched.
struct SlowSource {
    blocks: MemoryBlockSource,
    pause: std::time::Duration,
}

impl BlockSource for SlowSource {
    fn get(&self, cid: &cid::Cid) -> Result<Option<bytes::Bytes>, BlockSourceError> {
        // The server reads blocks on the blocking pool.
        std::thread::sleep(self.pause);
        self.blocks.get(cid)
    }

    fn has(&self, cid: &cid::Cid) -> Result<bool, BlockSourceError> {
        self.blocks.has(cid)
    }

    fn put(&self, cid: &cid::Cid, data: bytes::Bytes) -> Result<(), BlockSourceError> {
        self.blocks.put(cid, data)
    }
}

/// `leaves` raw blocks of 64 KiB under one dag-pb root, in `source`; the
/// root's CID.
fn dag_of_leaves(source: &MemoryBlockSource, leaves: u32) -> cid::Cid {
    use pincluster::ipfs::dag::{DAG_PB, RAW, cid_for};
    use pincluster::ipfs::pb::{PbLink, PbNode};
    let links = (0..leaves)
        .map(|i| {
            let data: Vec<u8> = (0..65_536u32)
                .map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
                .chain(i.to_le_bytes())
                .collect();
            let cid = cid_for(RAW, &data, false);
            let tsize = data.len() as u64;
            source.insert(cid, data.into());
            PbLink {
                cid,
                name: Some(String::new()),
                tsize: Some(tsize),
            }
        })
        .collect();
    let root = PbNode { links, data: None }.encode();
    let cid = cid_for(DAG_PB, &root, true);
    source.insert(cid, root.into());
    cid
}

/// While the embedded node fetches a pin, its status is `pinning` with what
/// it fetched so far (`progress`, blocks and bytes), growing; the real
/// `ipfs-cluster-ctl` 1.1.6 still reads that status; once pinned, the field
/// is gone.
#[tokio::test]
async fn a_pin_being_fetched_shows_its_progress_in_the_status() {
    use std::sync::{Arc, Mutex};

    use pincluster::ipfs::swarm::{IpfsSwarm, SwarmConfig};

    const LEAVES: u32 = 128;
    let blocks = MemoryBlockSource::new();
    let root = dag_of_leaves(&blocks, LEAVES).to_string();
    let slow = IpfsSwarm::start(
        SwarmConfig::new(
            libp2p::identity::Keypair::generate_ed25519(),
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        ),
        Arc::new(SlowSource {
            blocks,
            pause: std::time::Duration::from_millis(25),
        }),
    )
    .await
    .expect("the slow peer's swarm starts");

    let dir = temp();
    let peer = embedded_peer(dir.path(), Vec::new()).await;
    let (id, addrs) = ipfs_id(&peer).await;
    let addr = addrs
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/"))
        .expect("a loopback swarm address");
    let addr = if addr.contains("/p2p/") {
        addr.clone()
    } else {
        format!("{addr}/p2p/{id}")
    };
    slow.connect(addr.parse().unwrap())
        .await
        .expect("the slow peer dials the embedded node");

    let (code, _) = peer.pin(&root, "").await;
    assert!(code < 300, "pin accepted: {code}");
    // Every (blocks, bytes) seen while pinning, and what the real
    // ipfs-cluster-ctl printed for one of them.
    let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let ctl_said: Arc<Mutex<Option<String>>> = Arc::default();
    wait_for(&format!("{root} pinned"), DEADLINE, || async {
        let v = peer.get_json(&format!("/pins/{root}")).await?;
        let entry = v["peer_map"].as_object()?.values().next()?.clone();
        match entry["status"].as_str()? {
            "pinned" => {
                assert!(
                    entry.get("progress").is_none(),
                    "no progress once pinned: {entry}"
                );
                Some(())
            }
            "pinning" => {
                if let Some(p) = entry.get("progress") {
                    let blocks = p["blocks"].as_u64().expect("progress.blocks");
                    let bytes = p["bytes"].as_u64().unwrap_or(0);
                    seen.lock().unwrap().push((blocks, bytes));
                    let mut said = ctl_said.lock().unwrap();
                    if blocks > 0 && said.is_none() {
                        let out = Command::new(real_bin("ipfs-cluster-ctl"))
                            .args(["--host", &ctl_host(&peer), "status", &root])
                            .env_remove("CLUSTER_CREDENTIALS")
                            .output()
                            .expect("run ipfs-cluster-ctl");
                        *said = Some(format!(
                            "{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                None
            }
            "pin_error" => panic!("the pin failed: {entry}"),
            _ => None,
        }
    })
    .await;

    let seen = seen.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<u64> = seen.iter().map(|(b, _)| *b).collect();
    assert!(
        distinct.len() >= 2,
        "progress seen growing while pinning: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back: {seen:?}"
    );
    for (blocks, bytes) in &seen {
        assert!(*blocks <= u64::from(LEAVES) + 1, "{seen:?}");
        // Every block fetched so far is the root or a 64 KiB leaf.
        assert!(*bytes >= blocks.saturating_sub(1) * 65_536, "{seen:?}");
    }
    let said = ctl_said
        .lock()
        .unwrap()
        .clone()
        .expect("ipfs-cluster-ctl ran");
    assert!(
        said.contains("PINNING") && said.contains(&root),
        "ipfs-cluster-ctl reads a status with progress: {said}"
    );
    slow.stop().await;
}

/// The REST API's address as ipfs-cluster-ctl's `--host` takes it.
fn ctl_host(peer: &TestPeer) -> String {
    let port = peer.api.rsplit(':').next().expect("a port");
    format!("/ip4/127.0.0.1/tcp/{port}")
}
