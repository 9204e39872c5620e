//! The pin tracker driving an IPFS daemon (the fake Kubo here; Kubo in
//! the real-daemon tests): pins land, a CID nobody can provide ends in a
//! terminal `pin_error` instead of staying queued, recover brings it back,
//! unpins drop it, and a daemon that goes down shows in `/id` and statuses
//! without taking the peer down.

mod common;

use cid::Cid;
use common::fake_kubo::{FakeKubo, PinBehaviour};
use common::{DEADLINE, wait_for};
use pincluster::config::Config;
use pincluster::identity::Identity;
use pincluster::peer::Peer;
use pincluster::types::{Pin, PinOptions};
use serde_json::Value;

async fn start(dir: &std::path::Path, ipfs: &FakeKubo) -> (Peer, String) {
    start_joining(dir, ipfs, vec![]).await
}

async fn start_joining(
    dir: &std::path::Path,
    ipfs: &FakeKubo,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> (Peer, String) {
    let mut config = Config::new_default();
    // Every in-process peer would take the proxy's default port.
    config.api.ipfsproxy = None;
    config.cluster.listen_multiaddress = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.cluster.secret = None;
    config.ipfs_connector.ipfshttp.node_multiaddress = ipfs.multiaddr();
    config.cluster.state_sync_interval.0 = std::time::Duration::from_secs(1);
    if let Some(api) = config.api.restapi.as_mut() {
        api.http_listen_multiaddress = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    }
    let peer = Peer::start(dir, config, Identity::generate(), bootstrap)
        .await
        .expect("peer starts");
    let api = format!("http://{}", peer.rest_addr().expect("REST API on"));
    (peer, api)
}

/// A daemon beside `ipfs`, started on a new folder where `cids` were
/// `state import`ed.
async fn imported(ipfs: &FakeKubo, cids: &[String]) -> (tempfile::TempDir, common::TestPeer) {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::PeerSpec {
        env: vec![(
            "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
            ipfs.multiaddr().to_string(),
        )],
        ..Default::default()
    };
    common::init_folder(dir.path(), &spec);
    common::import_pins(dir.path(), cids);
    let peer = common::TestPeer::start(dir.path().into(), spec).await;
    (dir, peer)
}

/// A daemon started on a folder where the `n` CIDs of
/// `common::cids(seed, n)` were `state import`ed, beside a fake Kubo that
/// already holds every one of them.
async fn held_and_imported(
    seed: &str,
    n: usize,
) -> (FakeKubo, Vec<String>, tempfile::TempDir, common::TestPeer) {
    let ipfs = FakeKubo::start().await;
    let cids = common::cids(seed, n);
    ipfs.add_pins(
        cids.iter()
            .map(|c| (c.parse().unwrap(), pincluster::ipfsconn::PinMode::Recursive)),
    );
    let (dir, peer) = imported(&ipfs, &cids).await;
    (ipfs, cids, dir, peer)
}

async fn post_kubo(ipfs: &FakeKubo, cmd: &str) -> (u16, String) {
    let addr = ipfs.multiaddr().to_string();
    let port = addr.rsplit('/').next().unwrap();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v0/{cmd}"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

/// Runs the `pincluster` client against `api`: (exit code, stdout).
fn client(api: &str, args: &[&str]) -> (i32, String) {
    let port = api.rsplit(':').next().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn cid(name: &str) -> Cid {
    common::cids(name, 1)[0].parse().unwrap()
}

async fn status(api: &str, cid: &Cid) -> Value {
    let v: Value = reqwest::get(format!("{api}/pins/{cid}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["peer_map"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone()
}

async fn wait_status(api: &str, cid: &Cid, want: &str) -> Value {
    wait_for(&format!("{cid} to be {want}"), DEADLINE, || async move {
        let s = status(api, cid).await;
        (s["status"] == want).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pins_reach_ipfs_failures_end_in_pin_error_and_recover_heals() {
    let mut ipfs = FakeKubo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (peer, api) = start(dir.path(), &ipfs).await;

    let good = cid("good");
    peer.consensus()
        .log_pin(Pin::new(good, PinOptions::default()))
        .await
        .unwrap();
    wait_for("the daemon to pin it", DEADLINE, || async {
        ipfs.pinned().contains(&good).then_some(())
    })
    .await;
    wait_status(&api, &good, "pinned").await;

    // Nobody can provide this one: bounded attempts, then a terminal error.
    let missing = cid("missing");
    ipfs.set_pin_behaviour(missing, PinBehaviour::Fail);
    peer.consensus()
        .log_pin(Pin::new(missing, PinOptions::default()))
        .await
        .unwrap();
    let failed = wait_status(&api, &missing, "pin_error").await;
    assert_eq!(failed["attempt_count"], 5, "{failed}");
    assert!(!failed["error"].as_str().unwrap().is_empty());
    assert!(!ipfs.pinned().contains(&missing));

    // The client shows it as ipfs-cluster-ctl does.
    let (code, out) = client(&api, &["status", &missing.to_string()]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("{missing}:\n")), "{out}");
    assert!(
        out.contains(": PIN_ERROR: ") && out.contains("| Attempts: 5 |"),
        "{out}"
    );

    // The content shows up; recover (all) pins it.
    ipfs.clear_pin_behaviour(&missing);
    let (code, out) = client(&api, &["recover"]);
    assert_eq!(code, 0);
    assert!(out.contains(&missing.to_string()), "{out}");
    wait_status(&api, &missing, "pinned").await;
    let (code, out) = client(&api, &["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&good.to_string()) && out.contains(&missing.to_string()),
        "{out}"
    );
    // Nothing failed any more: recover all has nothing to say.
    assert_eq!(client(&api, &["recover"]), (0, String::new()));
    let res = reqwest::Client::new()
        .post(format!("{api}/pins/{missing}/recover"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Someone unpins it on the daemon behind the cluster's back: the next
    // state sync notices and pins it again.
    let (rm_status, _) = post_kubo(&ipfs, &format!("pin/rm?arg={good}")).await;
    assert_eq!(rm_status, 200);
    assert!(!ipfs.pinned().contains(&good));
    wait_for("the state sync to pin it again", DEADLINE, || async {
        ipfs.pinned().contains(&good).then_some(())
    })
    .await;

    // Unpinning from the cluster unpins from the daemon.
    peer.consensus().log_unpin(good).await.unwrap();
    wait_for("the daemon to drop it", DEADLINE, || async {
        (!ipfs.pinned().contains(&good)).then_some(())
    })
    .await;
    wait_status(&api, &good, "unpinned").await;

    // A CID the cluster never pinned: 200 with `unpinned`, as the reference.
    assert_eq!(status(&api, &cid("never")).await["status"], "unpinned");

    // The daemon goes down: the peer answers, showing the error.
    let id: Value = reqwest::get(format!("{api}/id"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(id["ipfs"]["id"], ipfs.peer_id().to_string());
    ipfs.stop().await;
    let id: Value = reqwest::get(format!("{api}/id"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!id["ipfs"]["error"].as_str().unwrap().is_empty(), "{id}");
    let s = status(&api, &missing).await;
    assert_eq!(s["status"], "cluster_error", "{s}");

    // Back up: statuses come back.
    ipfs.restart().await;
    wait_status(&api, &missing, "pinned").await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_is_asked_of_every_peer_and_a_silent_peer_is_a_cluster_error() {
    let (ipfs_a, ipfs_b) = (FakeKubo::start().await, FakeKubo::start().await);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = start(da.path(), &ipfs_a).await;
    let addr = a.network().listen_addrs().await.unwrap()[0].clone();
    let (b, api_b) = start_joining(db.path(), &ipfs_b, vec![addr]).await;
    let a_id = a.network().local_peer_id();
    let b_id = b.network().local_peer_id();
    wait_for("B to see A", DEADLINE, || async {
        b.network()
            .peers()
            .await
            .unwrap()
            .contains(&a_id)
            .then_some(())
    })
    .await;

    // Allocated to A only.
    let target = cid("allocated");
    let mut pin = Pin::new(target, PinOptions::default());
    pin.options.replication_factor_min = 1;
    pin.options.replication_factor_max = 1;
    pin.allocations = vec![a_id];
    a.consensus().log_pin(pin).await.unwrap();
    let info = wait_for("A pinned and B remote, seen from B", DEADLINE, || async {
        let v: Value = reqwest::get(format!("{api_b}/pins/{target}"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let map = v["peer_map"].as_object()?;
        (map.get(&a_id.to_string())?["status"] == "pinned"
            && map.get(&b_id.to_string())?["status"] == "remote")
            .then_some(v)
    })
    .await;
    assert_eq!(info["allocations"], serde_json::json!([a_id.to_string()]));
    assert!(ipfs_a.pinned().contains(&target));
    assert!(!ipfs_b.pinned().contains(&target));

    // local=true: B alone.
    let v: Value = reqwest::get(format!("{api_b}/pins/{target}?local=true"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["peer_map"].as_object().unwrap().len(), 1);

    // GET /pins: every pin, every peer; filters keep matching peers only.
    let everywhere = cid("everywhere");
    a.consensus()
        .log_pin(Pin::new(everywhere, PinOptions::default()))
        .await
        .unwrap();
    let all = wait_for(
        "both pins pinned where they should be",
        DEADLINE,
        || async {
            let text = reqwest::get(format!("{api_b}/pins"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let items: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let done = items.len() == 2
                && items.iter().all(|i| {
                    i["peer_map"].as_object().is_some_and(|m| {
                        m.len() == 2
                            && m.values()
                                .all(|e| e["status"] == "pinned" || e["status"] == "remote")
                    })
                });
            done.then_some(items)
        },
    )
    .await;
    assert_eq!(all.len(), 2);
    let remote: Vec<Value> = reqwest::get(format!("{api_b}/pins?filter=remote"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert_eq!(remote[0]["cid"], target.to_string());
    assert_eq!(remote[0]["peer_map"].as_object().unwrap().len(), 1);
    let bad = reqwest::get(format!("{api_b}/pins?filter=bogus"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let one = reqwest::get(format!("{api_b}/pins?cids={everywhere}&local=true"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let one: Vec<Value> = one
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["peer_map"][b_id.to_string()]["status"], "pinned");
    assert_eq!(one[0]["peer_map"].as_object().unwrap().len(), 1);

    // A stops: B still answers, with A as a cluster_error.
    a.shutdown().await;
    let v: Value = reqwest::get(format!("{api_b}/pins/{target}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a_entry = &v["peer_map"][a_id.to_string()];
    assert_eq!(a_entry["status"], "cluster_error", "{v}");
    assert!(!a_entry["error"].as_str().unwrap().is_empty());
    b.shutdown().await;
}

/// A `GET /pins` of many pages reads every page from one listing of the
/// daemon, however long the client takes to read it: listing again once
/// the listing was a few seconds old would, at a million pins, list the
/// whole daemon again and again within one request (each `pin/ls` of a
/// million pins takes tens of seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_listing_of_many_pages_lists_the_daemon_once() {
    use futures::StreamExt;
    // Far more than the REST stream and the sockets buffer, so that the
    // peer builds the last pages only after the pause below.
    const PINS: usize = 50_000;
    // Longer than the few seconds a listing of the daemon serves: the
    // client waits that long (it simulates a slow reader, nothing is
    // awaited by it).
    const PAUSE: std::time::Duration = std::time::Duration::from_secs(7);
    let (ipfs, _, _dir, peer) = held_and_imported("listed-once", PINS).await;
    let pinned = format!("{}/pins?local=true&filter=pinned", peer.api);
    wait_for("every pin pinned here", DEADLINE, || async {
        let body = reqwest::get(&pinned).await.ok()?.text().await.ok()?;
        (body.lines().count() == PINS).then_some(())
    })
    .await;

    // A listing of the daemon is two `pin/ls` requests: recursive pins,
    // then direct ones.
    let listings = || {
        ipfs.queries("pin/ls")
            .iter()
            .filter(|q| q.contains("type=recursive"))
            .count()
    };
    // Past the listing the statuses above were read from: the request
    // below lists the daemon once, at its start.
    tokio::time::sleep(PAUSE).await;
    let before = listings();
    let res = reqwest::get(format!("{}/pins?local=true", peer.api))
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let mut lines = 0;
    let first = body.next().await.unwrap().unwrap();
    lines += first.iter().filter(|&&b| b == b'\n').count();
    tokio::time::sleep(PAUSE).await;
    while let Some(chunk) = body.next().await {
        lines += chunk.unwrap().iter().filter(|&&b| b == b'\n').count();
    }
    assert_eq!(lines, PINS);
    assert_eq!(
        listings() - before,
        1,
        "one GET /pins listed the daemon more than once"
    );
}

/// The statuses of a `GET /pins` pass are read page by page from the
/// daemon's listing by one scan of each page's key range: a pin removed
/// from the daemon behind the cluster's back, anywhere in the pinset,
/// shows as `unexpectedly_unpinned` once the listing is renewed, and every
/// other pin stays `pinned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_removed_behind_the_clusters_back_shows_in_a_listing_of_many_pages() {
    // Several pages of statuses (256 each).
    const PINS: usize = 2_000;
    let (ipfs, cids, _dir, peer) = held_and_imported("removed-behind", PINS).await;
    let count = |filter: &'static str| {
        let url = format!("{}/pins?local=true&filter={filter}", peer.api);
        async move {
            let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
            let cids: std::collections::BTreeSet<String> = body
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["cid"].to_string())
                .map(|c| c.trim_matches('"').to_string())
                .collect();
            Some(cids)
        }
    };
    wait_for("every pin pinned here", DEADLINE, || async {
        (count("pinned").await?.len() == PINS).then_some(())
    })
    .await;

    // The first, the last and some in between, in the pinset's order.
    let mut sorted = cids.clone();
    sorted.sort_by_key(|c| c.parse::<Cid>().unwrap().to_bytes());
    let removed: std::collections::BTreeSet<String> = [0, 1, 700, 1_337, PINS - 1]
        .into_iter()
        .map(|i| sorted[i].clone())
        .collect();
    for cid in &removed {
        let (code, body) = post_kubo(&ipfs, &format!("pin/rm?arg={cid}")).await;
        assert_eq!(code, 200, "{body}");
    }
    let lost = wait_for(
        "the removed pins unexpectedly unpinned",
        DEADLINE,
        || async {
            let lost = count("unexpectedly_unpinned").await?;
            (lost.len() >= removed.len()).then_some(lost)
        },
    )
    .await;
    assert_eq!(lost, removed);
    assert_eq!(count("pinned").await.unwrap().len(), PINS - removed.len());
}

/// The statuses of a `GET /pins` pass read the tracker's operations page
/// by page, by one scan of each page's key range: pins whose operation
/// failed, anywhere in the pinset (the first, the last, across page
/// boundaries), show their `pin_error` and attempts, and every other pin,
/// which has no operation, shows `pinned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_operations_show_at_their_pins_in_a_listing_of_many_pages() {
    // Several pages of statuses (256 each).
    const PINS: usize = 2_000;
    let ipfs = FakeKubo::start().await;
    let cids = common::cids("ops-pages", PINS);
    let mut sorted = cids.clone();
    sorted.sort_by_key(|c| c.parse::<Cid>().unwrap().to_bytes());
    // Around the boundaries of the first pages, and the ends.
    let failing: std::collections::BTreeSet<String> = [0, 255, 256, 257, 511, 1_000, PINS - 1]
        .into_iter()
        .map(|i| sorted[i].clone())
        .collect();
    for cid in &failing {
        ipfs.set_pin_behaviour(cid.parse().unwrap(), PinBehaviour::Fail);
    }
    ipfs.add_pins(
        cids.iter()
            .filter(|c| !failing.contains(*c))
            .map(|c| (c.parse().unwrap(), pincluster::ipfsconn::PinMode::Recursive)),
    );
    let (_dir, peer) = imported(&ipfs, &cids).await;

    // Every status of one listing: CID → (status, attempts).
    let listing = || async {
        let body = reqwest::get(format!("{}/pins?local=true", peer.api))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let statuses: std::collections::BTreeMap<String, (String, u64)> = body
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let mine = v["peer_map"].as_object().unwrap().values().next().unwrap();
                (
                    v["cid"].as_str().unwrap().to_string(),
                    (
                        mine["status"].as_str().unwrap().to_string(),
                        mine["attempt_count"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect();
        Some(statuses)
    };
    let statuses = wait_for("the failing pins in pin_error", DEADLINE, || async {
        let statuses = listing().await?;
        let errors = statuses.values().filter(|(s, _)| s == "pin_error").count();
        (errors == failing.len()).then_some(statuses)
    })
    .await;
    assert_eq!(statuses.len(), PINS);
    for (cid, (status, attempts)) in &statuses {
        if failing.contains(cid) {
            assert_eq!((status.as_str(), *attempts), ("pin_error", 5), "{cid}");
        } else {
            assert_eq!(status, "pinned", "{cid}");
        }
    }
}

/// A client streaming the pinset goes before the tracker's start-up pass:
/// while `GET /allocations` streams, the pass queues nothing (no `pin/add`
/// reaches the daemon), and once the client hangs up it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_pass_waits_while_a_client_streams_the_pinset() {
    let ipfs = FakeKubo::start().await;
    ipfs.hold_pin_ls();
    // More than the socket buffers hold (some 25 MB of JSON), so the
    // listing stays open while the client does not read.
    let cids = common::cids("listings-first", 60_000);
    let (_dir, peer) = imported(&ipfs, &cids).await;
    wait_for("the start-up pass's pin listing", DEADLINE, || async {
        (ipfs.requests("pin/ls") > 0).then_some(())
    })
    .await;
    let mut listing = reqwest::get(format!("{}/allocations", peer.api))
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    let first = listing.chunk().await.unwrap();
    assert!(first.is_some_and(|c| !c.is_empty()), "the listing starts");

    ipfs.release_pin_ls();
    // The client reads nothing for two seconds: without the wait, the
    // pass queued pins and the daemon saw them within milliseconds.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        ipfs.requests("pin/add"),
        0,
        "the start-up pass queued pins while a client streamed the pinset"
    );

    drop(listing);
    wait_for("the start-up pass to go on", DEADLINE, || async {
        (ipfs.requests("pin/add") > 0).then_some(())
    })
    .await;
    wait_for("the start-up pass to end", DEADLINE, || async {
        peer.logged("the start-up pass let listings of the pinset go first")
            .then_some(())
    })
    .await;
}
