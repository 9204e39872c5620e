//! Partitions between real `pincluster daemon` processes, each in its own
//! Linux network namespace, joined by veth pairs to a bridge: the cuts are
//! made in the kernel (blackhole routes drop packets silently, a link goes
//! down), not in pincluster, so the peers see what a real network does to
//! them. The harness reaches every REST API from the host's namespace
//! through an address it takes on the bridge.
//!
//! Needs root and `ip netns` (iproute2). Without them a test fails with a
//! clear message, unless `PINCLUSTER_SKIP_NETNS=1` says to skip.
//!
//! Each test prints `netns figure:` lines (pins written, time to converge,
//! pins lost) for RELIABILITY.md; run with `--nocapture` to see them.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;

const SECRET: &str = "5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a2fd1a";

/// Runs `ip` with `args`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip` whose failure does not matter (cleanup of what may be gone).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// Every harness object is named `pc<letter><pid in hex>x<run>…`, so runs
/// in parallel (threads or processes) never share a name and leftovers of
/// a killed run can be told by their dead pid.
static RUN: AtomicU32 = AtomicU32::new(0);

/// N namespaces, each with an `eth0` on a shared bridge, the host holding
/// `.1` on the bridge. Dropping it deletes everything it made, also when a
/// test panics.
struct Net {
    bridge: String,
    namespaces: Vec<String>,
    /// Host-side veth of each namespace, in the host's namespace.
    links: Vec<String>,
    /// `10.x.y`, the /24 of this net.
    subnet: String,
}

impl Net {
    /// `n` namespaces, or `None` when netns is unavailable and
    /// `PINCLUSTER_SKIP_NETNS=1` allows skipping.
    fn new(n: usize) -> Option<Net> {
        if let Err(why) = netns_available() {
            if std::env::var("PINCLUSTER_SKIP_NETNS").as_deref() == Ok("1") {
                eprintln!("skipping: {why} (PINCLUSTER_SKIP_NETNS=1)");
                return None;
            }
            panic!(
                "network namespaces unavailable: {why}. These tests need root and `ip netns` \
                 (iproute2); set PINCLUSTER_SKIP_NETNS=1 to skip them"
            );
        }
        remove_leftovers();
        let tag = format!(
            "{:x}x{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::SeqCst)
        );
        let subnet = free_subnet();
        let mut net = Net {
            bridge: format!("pcb{tag}"),
            namespaces: Vec::new(),
            links: Vec::new(),
            subnet,
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"]);
        ip(&["link", "set", &net.bridge, "up"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", net.subnet),
            "dev",
            &net.bridge,
        ]);
        for i in 0..n {
            let ns = format!("pcn{tag}n{i}");
            let link = format!("pcv{tag}n{i}");
            ip(&["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            net.links.push(link.clone());
            ip(&["link", "set", &link, "master", &net.bridge, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        Some(net)
    }

    /// The address of namespace `i`.
    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// The spec of every peer of a net.
    fn spec(bootstrap: Vec<String>) -> PeerSpec {
        PeerSpec {
            secret: Some(SECRET.to_string()),
            bootstrap,
            env: vec![
                // Quicker failure detection and repair than the defaults,
                // the same for every scenario so their figures compare.
                ("CLUSTER_MONITORPINGINTERVAL".into(), "1s".into()),
                ("CLUSTER_CRDT_REBROADCASTINTERVAL".into(), "1s".into()),
            ],
        }
    }

    /// A peer in namespace `i` on folder `dir`.
    async fn start(&self, dir: &std::path::Path, bootstrap: Vec<String>, i: usize) -> TestPeer {
        let spec = Net::spec(bootstrap);
        TestPeer::start_in_netns(dir.into(), spec, &self.namespaces[i], &self.addr(i)).await
    }

    /// Drops (or stops dropping) every packet namespace `from` sends to
    /// namespace `to`: a blackhole route, a silent loss in one direction.
    fn drop_packets(&self, from: usize, to: usize, dropping: bool) {
        let verb = if dropping { "add" } else { "del" };
        let target = format!("{}/32", self.addr(to));
        ip(&[
            "-n",
            &self.namespaces[from],
            "route",
            verb,
            "blackhole",
            &target,
        ]);
    }

    /// Cuts (or heals) both directions between `a` and `b`.
    fn cut(&self, a: usize, b: usize, cutting: bool) {
        self.drop_packets(a, b, cutting);
        self.drop_packets(b, a, cutting);
    }

    /// Brings the host side of namespace `i`'s link down or up: the
    /// namespace loses its carrier, as when a cable is pulled.
    fn set_link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.links[i],
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth pair too.
        for ns in &self.namespaces {
            ip_quiet(&["netns", "del", ns]);
        }
        ip_quiet(&["link", "del", &self.bridge]);
    }
}

/// Whether this process may create namespaces: a throwaway one is made
/// and deleted.
fn netns_available() -> Result<(), String> {
    let probe = format!(
        "pcp{:x}x{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::SeqCst)
    );
    let out = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map_err(|e| format!("cannot run `ip` ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "`ip netns add` failed ({}); running as uid {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            uid()
        ));
    }
    ip_quiet(&["netns", "del", &probe]);
    Ok(())
}

fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            Some(line.split_whitespace().nth(1)?.to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Deletes namespaces and bridges of earlier runs whose process is gone
/// (a run killed before its `Drop`s ran).
fn remove_leftovers() {
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let dead = |name: &str| {
        let pid = name.get(3..).and_then(|rest| rest.split('x').next());
        pid.and_then(|p| u32::from_str_radix(p, 16).ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    for line in list(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if (name.starts_with("pcn") || name.starts_with("pcp")) && dead(name) {
            ip_quiet(&["netns", "del", name]);
        }
    }
    for line in list(&["-o", "link", "show", "type", "bridge"]).lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if name.starts_with("pcb") && dead(name) {
            ip_quiet(&["link", "del", name]);
        }
    }
}

/// A random `10.x.y` /24 no address or route of this machine uses.
fn free_subnet() -> String {
    let used = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    loop {
        let subnet = format!(
            "10.{}.{}",
            200 + rand::random::<u8>() % 50,
            rand::random::<u8>()
        );
        if !used.contains(&format!("{subnet}.")) {
            return subnet;
        }
    }
}

/// Peers and their folders; the peers are killed before the folders go.
struct Cluster {
    peers: Vec<TestPeer>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Three peers, one per namespace of `net`, the second and third joining
/// the first; returns once every peer sees all three.
async fn three_peers(net: &Net) -> Cluster {
    let dirs: Vec<_> = (0..3).map(|_| temp()).collect();
    let a = net.start(dirs[0].path(), vec![], 0).await;
    let first = a.cluster_addr().await;
    let b = net.start(dirs[1].path(), vec![first.clone()], 1).await;
    let c = net.start(dirs[2].path(), vec![first], 2).await;
    let peers = vec![a, b, c];
    for p in &peers {
        wait_for(
            &format!("3 peers seen by {}", p.id),
            DEADLINE,
            || async move { (p.peer_ids().await?.len() == 3).then_some(()) },
        )
        .await;
    }
    Cluster { peers, _dirs: dirs }
}

/// Pins every CID through `peer`, 16 requests in flight.
async fn pin_all(peer: &TestPeer, cids: &[String]) {
    futures::stream::iter(cids)
        .for_each_concurrent(16, |cid| async move {
            let (status, body) = peer.pin(cid, "").await;
            assert_eq!(status, 200, "pinning {cid} on {}: {body}", peer.id);
        })
        .await;
}

/// Waits until every peer lists exactly `want`; returns how long it took.
/// On timeout, says how many pins each peer misses.
async fn converge(peers: &[TestPeer], want: &[String]) -> Duration {
    let mut want = want.to_vec();
    want.sort();
    let start = Instant::now();
    loop {
        let mut sets = Vec::new();
        for p in peers {
            sets.push(p.pinset().await.unwrap_or_default());
        }
        if sets.iter().all(|s| *s == want) {
            return start.elapsed();
        }
        if start.elapsed() > DEADLINE {
            let missing: Vec<usize> = sets
                .iter()
                .map(|s| want.iter().filter(|c| !s.contains(c)).count())
                .collect();
            panic!(
                "no convergence to {} pins after {DEADLINE:?}: pins missing per peer {missing:?}, \
                 listed {:?}",
                want.len(),
                sets.iter().map(Vec::len).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `peer` lists every CID of `cids`.
async fn has_all(peer: &TestPeer, cids: &[String]) {
    wait_for(
        &format!("{} pins on {}", cids.len(), peer.id),
        DEADLINE,
        || async move {
            let set = peer.pinset().await?;
            cids.iter().all(|c| set.contains(c)).then_some(())
        },
    )
    .await;
}

/// Pins `cids` through `peer` five at a time, 200 ms apart, so the writes
/// spread over a few seconds.
async fn write_slowly(peer: &TestPeer, cids: &[String]) {
    for chunk in cids.chunks(5) {
        pin_all(peer, chunk).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn figure(scenario: &str, written: usize, took: Duration) {
    eprintln!(
        "netns figure: scenario={scenario} pins_written={written} converge_ms={} pins_lost=0",
        took.as_millis()
    );
}

/// {A} | {B, C}: both sides write while cut (and disagree about one pin:
/// B unpins it, A pins it again), the cut heals, and every peer ends with
/// the union, the re-pinned CID included (add wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_cluster_written_on_both_sides_converges_to_the_union() {
    let Some(net) = Net::new(3) else { return };
    let cluster = three_peers(&net).await;
    let peers = &cluster.peers;
    let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
    let disputed = cids("netns-cut-disputed", 1);
    pin_all(a, &disputed).await;
    converge(peers, &disputed).await;

    net.cut(0, 1, true);
    net.cut(0, 2, true);
    let on_a = cids("netns-cut-a", 30);
    let on_b = cids("netns-cut-b", 30);
    pin_all(a, &on_a).await;
    pin_all(b, &on_b).await;
    assert_eq!(b.unpin(&disputed[0]).await, 200, "unpin on B");
    // B's side works while cut: C learns B's pins and the unpin.
    has_all(c, &on_b).await;
    let gone = &disputed[0];
    wait_for("C to drop the disputed pin", DEADLINE, || async move {
        (!c.pinset().await?.contains(gone)).then_some(())
    })
    .await;
    // A pins the disputed CID again, concurrently with B's unpin.
    pin_all(a, &disputed).await;
    let seen_by_a = a.pinset().await.unwrap();
    assert!(
        on_b.iter().all(|cid| !seen_by_a.contains(cid)),
        "A saw B's pins through the cut"
    );

    net.cut(0, 1, false);
    net.cut(0, 2, false);
    let want: Vec<String> = [&disputed[..], &on_a, &on_b].concat();
    let took = converge(peers, &want).await;
    figure("cut {A}|{B,C}, heal", on_a.len() + on_b.len() + 2, took);
}

/// A's packets to B are lost, B's to A are not: A and B write, and every
/// peer converges while the loss lasts (C relays), then again after it
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_way_loss_between_two_peers_does_not_stop_convergence() {
    let Some(net) = Net::new(3) else { return };
    let cluster = three_peers(&net).await;
    let peers = &cluster.peers;
    let (a, b) = (&peers[0], &peers[1]);

    net.drop_packets(0, 1, true);
    let on_a = cids("netns-oneway-a", 30);
    let on_b = cids("netns-oneway-b", 30);
    pin_all(a, &on_a).await;
    pin_all(b, &on_b).await;
    let during: Vec<String> = [&on_a[..], &on_b].concat();
    let took = converge(peers, &during).await;
    figure("one-way loss A->B, during", during.len(), took);

    net.drop_packets(0, 1, false);
    let after = cids("netns-oneway-after", 20);
    pin_all(b, &after).await;
    let want: Vec<String> = [&during[..], &after].concat();
    let took = converge(peers, &want).await;
    figure("one-way loss A->B, after", after.len(), took);
}

/// A's link goes down and up every second for eight seconds while B and C
/// write; once it stays up, A catches up with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_link_catches_up_once_it_stays_up() {
    let Some(net) = Net::new(3) else { return };
    let cluster = three_peers(&net).await;
    let peers = &cluster.peers;
    let (b, c) = (&peers[1], &peers[2]);
    let on_b = cids("netns-flap-b", 40);
    let on_c = cids("netns-flap-c", 40);

    let flap = async {
        for _ in 0..4 {
            net.set_link(0, false);
            tokio::time::sleep(Duration::from_secs(1)).await;
            net.set_link(0, true);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(flap, write_slowly(b, &on_b), write_slowly(c, &on_c));

    let want: Vec<String> = [&on_b[..], &on_c].concat();
    let took = converge(peers, &want).await;
    figure("flapping link A, 4 cycles of 1 s", want.len(), took);
}

/// The peers `peer` counts in its peerset (`GET /id`'s `cluster_peers`:
/// connected, or seen within the peer TTL), itself included, sorted.
async fn peerset_of(peer: &TestPeer) -> Option<Vec<String>> {
    let id = peer.get_json("/id").await?;
    let mut ids: Vec<String> = id["cluster_peers"]
        .as_array()?
        .iter()
        .filter_map(|p| Some(p.as_str()?.to_string()))
        .collect();
    ids.sort();
    Some(ids)
}

/// Whether every peer of `peers` has dropped peer `isolated` from its
/// peerset and `isolated` has dropped everyone: the dead connections
/// across the cut are noticed and closed.
async fn cut_noticed(peers: &[TestPeer], isolated: usize) -> bool {
    for (i, p) in peers.iter().enumerate() {
        let Some(set) = peerset_of(p).await else {
            return false;
        };
        let noticed = if i == isolated {
            set == [p.id.clone()]
        } else {
            !set.contains(&peers[isolated].id)
        };
        if !noticed {
            return false;
        }
    }
    true
}

/// A is cut off from B and C for a long while (15 s, or
/// `PINCLUSTER_NETNS_ISOLATION_SECS`, and at least until every side has
/// dropped the other from its peerset), both sides writing throughout;
/// after healing every peer has the union.
///
/// A silent cut leaves the TCP connections open on both sides (nothing
/// says they are dead but the missing answers): the peers must tell that
/// for themselves. Before they did (issue 14), the connections stayed
/// "up" across a 120 s isolation, nobody redialed, and after healing the
/// two sides stayed apart until TCP's next retransmission, up to two
/// minutes later. Waiting for the cut to be noticed catches that in CI's
/// 15 s; the 120 s run is the long command in RELIABILITY.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_isolation_written_on_both_sides_converges_after_healing() {
    let Some(net) = Net::new(3) else { return };
    let secs: u64 = std::env::var("PINCLUSTER_NETNS_ISOLATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let cluster = three_peers(&net).await;
    let peers = &cluster.peers;
    let (a, b) = (&peers[0], &peers[1]);

    net.cut(0, 1, true);
    net.cut(0, 2, true);
    let isolated = Instant::now();
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    let mut round = 0;
    let mut noticed = None;
    while isolated.elapsed() < Duration::from_secs(secs) || noticed.is_none() {
        if noticed.is_none() && cut_noticed(peers, 0).await {
            noticed = Some(isolated.elapsed());
        }
        assert!(
            noticed.is_some() || isolated.elapsed() < DEADLINE,
            "after {DEADLINE:?} of isolation the peers still count each other in (peersets \
             {:?}, {:?}, {:?}): the dead connections across the cut are not noticed",
            peerset_of(a).await,
            peerset_of(b).await,
            peerset_of(&peers[2]).await,
        );
        let (ra, rb) = (
            cids(&format!("netns-long-a-{round}"), 5),
            cids(&format!("netns-long-b-{round}"), 5),
        );
        tokio::join!(pin_all(a, &ra), pin_all(b, &rb));
        on_a.extend(ra);
        on_b.extend(rb);
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen_by_a = a.pinset().await.unwrap();
    assert!(
        on_b.iter().all(|cid| !seen_by_a.contains(cid)),
        "A saw B's pins through the cut"
    );

    eprintln!(
        "netns figure: scenario=isolation of A, cut noticed by every peer after {} ms",
        noticed.unwrap_or_default().as_millis()
    );

    let isolation = isolated.elapsed();
    net.cut(0, 1, false);
    net.cut(0, 2, false);
    let want: Vec<String> = [&on_a[..], &on_b].concat();
    let took = converge(peers, &want).await;
    figure(
        &format!("isolation of A for {} s, heal", isolation.as_secs()),
        want.len(),
        took,
    );
}
