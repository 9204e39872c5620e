//! The dashboard at `/ui` as a browser shows it: headless Chromium loads
//! it from a three-peer cluster (two peers beside real Kubo daemons, the
//! third with its daemon down) and must show the three peers, the pins,
//! and the health graph with the down daemon marked. The screenshot is kept
//! in `target/test-artifacts/dashboard.png`.

mod common;

use common::kubo::Kubo;
use common::tools::{artifact_dir, beside_daemon, chromium, nothing_listening};
use common::*;
use serde_json::Value;

const SECRET: &str = "1b3f5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293c4";

fn spec(ipfs_api: String, bootstrap: Option<&str>) -> PeerSpec {
    beside_daemon(SECRET, ipfs_api, bootstrap)
}

/// The elements of `dom` that open with `<tag` and carry `attr` (in
/// order): enough to read what the page rendered, without a DOM library.
fn elements<'a>(dom: &'a str, tag: &str, attr: &str) -> Vec<&'a str> {
    dom.split(&format!("<{tag} "))
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|open| open.contains(attr))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_shows_three_peers_pins_and_the_graph() {
    let tmp = temp();
    let (dir_a, dir_b) = (tmp.path().join("ipfs-a"), tmp.path().join("ipfs-b"));
    let (da, db) = tokio::join!(Kubo::start(&dir_a), Kubo::start(&dir_b));
    da.connect(&db).await;
    // Peer c's daemon is not there at all.
    let closed_api = nothing_listening();

    let a = TestPeer::start(tmp.path().join("a"), spec(da.api_multiaddr(), None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(tmp.path().join("b"), spec(db.api_multiaddr(), Some(&addr))).await;
    let c = TestPeer::start(tmp.path().join("c"), spec(closed_api, Some(&addr))).await;
    for p in [&a, &b, &c] {
        wait_for("a full peerset", DEADLINE, || async {
            (p.peer_ids().await?.len() == 3).then_some(())
        })
        .await;
    }

    // One pin everywhere: pinned on the two live daemons, an error on c.
    let added = da
        .add_with("add?pin=false", "hello.txt", b"pincluster dashboard\n")
        .await;
    let cid = added.last().unwrap()["Hash"].as_str().unwrap().to_string();
    let (status, pin) = a.pin(&cid, "replication=-1").await;
    assert_eq!(status, 200, "{pin}");
    wait_for("the pin on both live daemons", DEADLINE, || async {
        let info: Value = a.get_json(&format!("/pins/{cid}")).await?;
        let pinned = info["peer_map"]
            .as_object()?
            .values()
            .filter(|e| e["status"] == "pinned")
            .count();
        (pinned == 2).then_some(())
    })
    .await;
    // And the graph knows both live daemons before the page is loaded.
    wait_for("both live daemons in the graph", DEADLINE, || async {
        let g = a.get_json("/health/graph").await?;
        (g["cluster_to_ipfs"].as_object()?.len() == 2).then_some(())
    })
    .await;

    // Served by the REST API itself, self-contained, under a policy that
    // lets it load nothing from elsewhere; `/ui/` leads back to `/ui`.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/ui", a.api))
        .send()
        .await
        .expect("GET /ui");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let slash = http
        .get(format!("{}/ui/", a.api))
        .send()
        .await
        .expect("GET /ui/");
    assert_eq!(slash.status(), 307);
    assert_eq!(slash.headers()["location"], "/ui");

    let url = format!("{}/ui", a.api);
    let dom = chromium(&url, &["--dump-dom"]);
    assert!(
        dom.contains("<body data-loaded=\"true\""),
        "the page never loaded its data:\n{dom}"
    );
    assert!(
        elements(&dom, "p", "id=\"problem\"")
            .first()
            .is_some_and(|p| p.contains("hidden")),
        "the page reports a problem:\n{dom}"
    );

    // The three peers, this one first, c's daemon down.
    let rows = elements(&dom, "tr", "data-peer=");
    assert_eq!(rows.len(), 3, "{dom}");
    assert!(rows[0].contains(&a.id), "{dom}");
    for p in [&a, &b, &c] {
        assert!(
            rows.iter().any(|r| r.contains(&p.id)),
            "{} missing:\n{dom}",
            p.id
        );
    }
    let c_row = dom
        .split("<tr ")
        .find(|r| r.starts_with(&format!("data-peer=\"{}\"", c.id)))
        .expect("c's row");
    assert!(c_row.contains("<span class=\"bad\">down</span>"), "{c_row}");

    // The pins: 2 pinned, and one error on c.
    let pinned = dom
        .split("<tr ")
        .find(|r| r.starts_with("data-status=\"pinned\""))
        .expect("a pinned row");
    assert!(pinned.contains("<td>2</td>"), "{pinned}");
    assert!(dom.contains("1 pins"), "{dom}");

    // The picture: three cluster peers, their daemons, c's one down.
    assert!(dom.contains("data-peers=\"3\""), "{dom}");
    let cluster_nodes = elements(&dom, "g", "class=\"node cluster");
    assert_eq!(cluster_nodes.len(), 3, "{dom}");
    assert!(
        cluster_nodes
            .iter()
            .any(|n| n.contains("self") && n.contains(&a.id)),
        "{dom}"
    );
    let down = elements(&dom, "g", "class=\"node ipfs down\"");
    assert_eq!(down.len(), 1, "{dom}");
    assert!(down[0].contains(&c.id), "{dom}");
    assert_eq!(elements(&dom, "g", "class=\"node ipfs\"").len(), 2, "{dom}");
    assert!(dom.contains("1 IPFS daemon down"), "{dom}");
    assert!(dom.contains("cluster fully connected"), "{dom}");

    // The same page as a picture, kept for people to look at.
    let shot = artifact_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&url, &[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no real screenshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_basic_auth_on_the_dashboard_reads_the_api_with_the_pages_credentials() {
    let tmp = temp();
    let mut spec = spec(nothing_listening(), None);
    spec.env.push((
        "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS".into(),
        "alice:wonderland".into(),
    ));
    let peer = TestPeer::start(tmp.path().join("a"), spec).await;
    let port = peer.api.rsplit(':').next().unwrap().to_string();

    // Without credentials the page itself is refused...
    let bare = reqwest::get(format!("{}/ui", peer.api)).await.unwrap();
    assert_eq!(bare.status(), 401);
    // ...with them, the page's own API calls carry them too: the peer row
    // is drawn and no problem is shown.
    let dom = chromium(
        &format!("http://alice:wonderland@127.0.0.1:{port}/ui"),
        &["--dump-dom"],
    );
    let rows = elements(&dom, "tr", "data-peer=");
    assert_eq!(rows.len(), 1, "{dom}");
    assert!(rows[0].contains(&peer.id), "{dom}");
    let problem = elements(&dom, "p", "id=\"problem\"");
    assert!(problem.len() == 1 && problem[0].contains("hidden"), "{dom}");
}
