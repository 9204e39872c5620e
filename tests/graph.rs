//! The health graph as users see it: `GET /health/graph` on a cluster of
//! real peers beside real IPFS daemons (Kubo 0.43.1), and
//! `pincluster health graph` turned into a picture by Graphviz's `dot`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kubo::Kubo;
use common::tools::{
    artifact_dir, beside_daemon, client, graphviz, nothing_listening, set_stopped,
};
use common::*;
use serde_json::Value;

const SECRET: &str = "7a3f5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182930b";

fn spec(ipfs_api: String, bootstrap: Option<&str>) -> PeerSpec {
    beside_daemon(SECRET, ipfs_api, bootstrap)
}

fn sorted_strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn object_keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

async fn three_peers(tmp: &std::path::Path, apis: [String; 3]) -> [TestPeer; 3] {
    let [a_api, b_api, c_api] = apis;
    let a = TestPeer::start(tmp.join("a"), spec(a_api, None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(tmp.join("b"), spec(b_api, Some(&addr))).await;
    let c = TestPeer::start(tmp.join("c"), spec(c_api, Some(&addr))).await;
    for p in [&a, &b, &c] {
        wait_for("a full peerset", DEADLINE, || async {
            (p.peer_ids().await?.len() == 3).then_some(())
        })
        .await;
    }
    [a, b, c]
}

/// Three peers, three daemons swarm-connected, then one daemon stopped:
/// the JSON shows every cluster link, the two live daemons linked, and the
/// third peer without a daemon; the DOT draws that daemon as errored, and
/// `dot` renders it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_peers_with_one_daemon_down() {
    let tmp = temp();
    let dirs = ["ipfs-a", "ipfs-b", "ipfs-c"].map(|d| tmp.path().join(d));
    let (da, db, mut dc) = tokio::join!(
        Kubo::start(&dirs[0]),
        Kubo::start(&dirs[1]),
        Kubo::start(&dirs[2])
    );
    da.connect(&db).await;
    da.connect(&dc).await;
    db.connect(&dc).await;
    let [a, b, c] = three_peers(
        tmp.path(),
        [da.api_multiaddr(), db.api_multiaddr(), dc.api_multiaddr()],
    )
    .await;
    let (ia, ib, ic) = (
        da.id().to_string(),
        db.id().to_string(),
        dc.id().to_string(),
    );

    // Everything up: each peer's daemon is known and linked to the others.
    let up = wait_for("all three daemons in the graph", DEADLINE, || async {
        let g = a.get_json("/health/graph").await?;
        (object_keys(&g["cluster_to_ipfs"]).len() == 3
            && sorted_strings(&g["ipfs_links"][&ia]).len() == 2)
            .then_some(g)
    })
    .await;
    let mut both = vec![ib.clone(), ic.clone()];
    both.sort();
    assert_eq!(sorted_strings(&up["ipfs_links"][&ia]), both, "{up}");

    assert!(dc.stop(), "Kubo did not stop cleanly:\n{}", dc.log_text());
    // The down daemon drops out of the graph; the rest stays as it was.
    let graph = wait_for(
        "the stopped daemon to leave the graph",
        DEADLINE,
        || async {
            let g = a.get_json("/health/graph").await?;
            let links_gone = sorted_strings(&g["ipfs_links"][&ia]) == vec![ib.clone()]
                && sorted_strings(&g["ipfs_links"][&ib]) == vec![ia.clone()];
            (object_keys(&g["cluster_to_ipfs"]).len() == 2 && links_gone).then_some(g)
        },
    )
    .await;

    assert_eq!(graph["cluster_id"], a.id.as_str(), "{graph}");
    let mut ids = vec![a.id.clone(), b.id.clone(), c.id.clone()];
    ids.sort();
    assert_eq!(object_keys(&graph["cluster_links"]), ids, "{graph}");
    for p in [&a, &b, &c] {
        let others: Vec<String> = ids.iter().filter(|i| **i != p.id).cloned().collect();
        assert_eq!(
            sorted_strings(&graph["cluster_links"][&p.id]),
            others,
            "cluster links of {}: {graph}",
            p.id
        );
        assert_eq!(graph["cluster_trust_links"][&p.id], true, "{graph}");
        assert!(graph["id_to_peername"][&p.id].is_string(), "{graph}");
    }
    let to_ipfs: BTreeMap<String, Value> = graph["cluster_to_ipfs"]
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
    let expected: BTreeMap<String, Value> = [
        (a.id.clone(), Value::from(ia.clone())),
        (b.id.clone(), Value::from(ib.clone())),
    ]
    .into();
    assert_eq!(to_ipfs, expected, "{graph}");
    let mut live_daemons = vec![ia.clone(), ib.clone()];
    live_daemons.sort();
    assert_eq!(object_keys(&graph["ipfs_links"]), live_daemons, "{graph}");

    // The same cluster as DOT, from another peer's point of view: C0 is
    // that peer, the stopped daemon is an errored node behind a dotted edge.
    let (code, dot, err) = client(&b.api, &["health", "graph"]);
    assert_eq!(code, 0, "{err}");
    assert!(dot.starts_with("digraph cluster {\n"), "{dot}");
    let short = |id: &str| format!("{}*{}", &id[..2], &id[id.len() - 6..]);
    let c0 = "C0 [label=< <B> ";
    let self_line = dot.lines().find(|l| l.starts_with(c0)).expect("a C0 node");
    assert!(self_line.contains(&short(&b.id)), "{dot}");
    assert!(self_line.contains("peripheries=\"2\""), "{dot}");
    assert_eq!(dot.matches("shape=\"box3d\"").count(), 3, "{dot}");
    assert_eq!(dot.matches("color=\"turquoise3\"").count(), 2, "{dot}");
    let errored = dot
        .lines()
        .find(|l| l.contains("<B> Errored </B>"))
        .expect("an errored daemon");
    assert!(errored.contains(&format!("group=\"{}\"", c.id)), "{dot}");
    assert!(errored.contains("color=\"firebrick1\""), "{dot}");
    assert_eq!(dot.matches("[ style=\"dotted\" ]").count(), 1, "{dot}");
    // Every cluster peer is linked to the two others.
    assert_eq!(
        dot.lines()
            .filter(|l| is_edge(l, 'C', 'C')
                || is_edge(l, 'T', 'T')
                || is_edge(l, 'C', 'T')
                || is_edge(l, 'T', 'C'))
            .count(),
        6,
        "{dot}"
    );
    // The two live daemons are linked both ways.
    assert_eq!(
        dot.lines().filter(|l| is_edge(l, 'I', 'I')).count(),
        2,
        "{dot}"
    );

    // Graphviz reads it, and the picture names the down daemon.
    let svg = String::from_utf8(graphviz(&dot, "svg")).expect("SVG is text");
    assert!(svg.contains("Errored"), "{svg}");
    assert!(
        svg.contains(&short(&ia)) && svg.contains(&short(&ib)),
        "{svg}"
    );
    let png = graphviz(&dot, "png");
    assert!(png.starts_with(b"\x89PNG"), "dot -Tpng gave no PNG");
    std::fs::write(artifact_dir().join("health-graph.png"), &png).expect("keep the picture");

    // --file writes the same DOT to a file.
    let file = tmp.path().join("graph.dot");
    let (code, out, err) = client(
        &b.api,
        &["health", "graph", "--file", file.to_str().unwrap()],
    );
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let written = std::fs::read_to_string(&file).expect("the DOT file");
    assert_eq!(written.lines().count(), dot.lines().count());
    graphviz(&written, "svg");
}

/// `X<n> -> Y<m>` (with or without a style).
fn is_edge(line: &str, from: char, to: char) -> bool {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(f), Some("->"), Some(t)) => f.starts_with(from) && t.starts_with(to),
        _ => false,
    }
}

/// A peer that stops answering (frozen with SIGSTOP, its connections still
/// open) and a daemon that never answers do not hold the graph up: the call
/// answers, the frozen peer has no links and no daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_peer_and_a_silent_daemon_never_hang_the_graph() {
    let tmp = temp();
    // A "daemon" that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_api = format!("/ip4/127.0.0.1/tcp/{}", silent.local_addr().unwrap().port());
    // And one that is simply not there.
    let closed_api = nothing_listening();
    let [a, b, c] = three_peers(tmp.path(), [silent_api, closed_api.clone(), closed_api]).await;

    let pid = c.pid().expect("c runs");
    set_stopped(pid, true).await;
    // A client that would give up long after the peer's own timeouts:
    // only a hang makes this request fail.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(45))
        .build()
        .unwrap();
    let graph: Value = http
        .get(format!("{}/health/graph", a.api))
        .send()
        .await
        .expect("the graph answers while a peer is frozen")
        .json()
        .await
        .expect("graph JSON");
    set_stopped(pid, false).await;

    assert_eq!(
        graph["cluster_links"][&c.id],
        Value::Array(vec![]),
        "{graph}"
    );
    let mut others = vec![b.id.clone(), c.id.clone()];
    others.sort();
    assert_eq!(
        sorted_strings(&graph["cluster_links"][&a.id]),
        others,
        "{graph}"
    );
    assert!(
        graph["cluster_links"][&b.id]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "{graph}"
    );
    // No daemon answered: none is in the graph, and the DOT draws three
    // errored daemons.
    assert_eq!(graph["cluster_to_ipfs"], serde_json::json!({}), "{graph}");
    assert_eq!(graph["ipfs_links"], serde_json::json!({}), "{graph}");
    let (code, dot, err) = client(&a.api, &["health", "graph"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dot.matches("<B> Errored </B>").count(), 3, "{dot}");
    graphviz(&dot, "svg");
    drop(silent);
}

/// A peer that died stays in the graph as unreachable (no links, no daemon,
/// its last known name) after it has left the peerset, so the graph shows
/// it rather than forgetting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_peer_stays_in_the_graph_as_unreachable() {
    let tmp = temp();
    let closed_api = nothing_listening();
    let named = |name: &str, bootstrap: Option<&str>| {
        let mut s = spec(closed_api.clone(), bootstrap);
        s.env.push(("CLUSTER_PEERNAME".into(), name.into()));
        s.env
            .push(("CLUSTER_PUBSUBMON_CHECKINTERVAL".into(), "500ms".into()));
        s
    };
    let a = TestPeer::start(tmp.path().join("a"), named("peer-a", None)).await;
    let addr = a.cluster_addr().await;
    let b = TestPeer::start(tmp.path().join("b"), named("peer-b", Some(&addr))).await;
    let mut c = TestPeer::start(tmp.path().join("c"), named("peer-c", Some(&addr))).await;
    wait_for("a's graph with three named peers", DEADLINE, || async {
        let g = a.get_json("/health/graph").await?;
        (g["id_to_peername"][&c.id] == "peer-c"
            && sorted_strings(&g["cluster_links"][&a.id]).len() == 2)
            .then_some(())
    })
    .await;
    // c's ping must have reached a, or nothing remembers c once it is gone.
    wait_for("c's ping on a", DEADLINE, || async {
        let pings = a.get_json("/monitor/metrics/ping").await?;
        pings
            .as_array()?
            .iter()
            .any(|m| m["peer"] == c.id.as_str())
            .then_some(())
    })
    .await;

    let c_id = c.id.clone();
    c.kill();
    let graph = wait_for(
        "c out of the peerset but in the graph",
        DEADLINE,
        || async {
            if a.peer_ids().await?.contains(&c_id) {
                return None;
            }
            let g = a.get_json("/health/graph").await?;
            (g["cluster_links"][&c_id] == Value::Array(vec![])).then_some(g)
        },
    )
    .await;
    assert_eq!(graph["id_to_peername"][&c_id], "peer-c", "{graph}");
    assert_eq!(
        sorted_strings(&graph["cluster_links"][&a.id]),
        vec![b.id.clone()],
        "{graph}"
    );
    let (code, dot, err) = client(&a.api, &["health", "graph"]);
    assert_eq!(code, 0, "{err}");
    let c_node = dot
        .lines()
        .find(|l| l.contains(&format!("group=\"{c_id}\"")) && l.contains("box3d"))
        .unwrap_or_else(|| panic!("no node for the dead peer:\n{dot}"));
    assert!(c_node.contains("<B> peer-c </B>"), "{dot}");
    graphviz(&dot, "svg");
}
