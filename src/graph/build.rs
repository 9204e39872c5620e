//! Building the [`ConnectGraph`] from what each peer said about its
//! connections ([`RemoteGraph`]): who is connected to whom, which daemon is
//! whose, and peers that could not be asked drawn as unreachable rather
//! than left out. Asking the peers is the cluster's job
//! ([`crate::cluster::Cluster::health_graph`]); this is the drawing.

use std::collections::BTreeMap;

use libp2p::PeerId;

use super::ConnectGraph;
use crate::monitor::Monitor;
use crate::network::RemoteGraph;

/// Peer names and down peers as the monitor knows them: the `peer_name` of
/// every peer's latest `ping`, live or expired.
pub fn ping_names(monitor: &Monitor) -> BTreeMap<PeerId, String> {
    let now = chrono::Utc::now();
    let expired = monitor.alerts().into_iter().map(|a| a.metric);
    let live = monitor.metrics("ping", now);
    let mut names = BTreeMap::new();
    // Live metrics last, so they win over an older alert.
    for metric in expired.filter(|m| m.name == "ping").chain(live) {
        let Ok(peer) = metric.peer.parse::<PeerId>() else {
            continue;
        };
        let name = serde_json::from_str::<serde_json::Value>(&metric.value)
            .ok()
            .and_then(|v| v.get("peer_name")?.as_str().map(str::to_string))
            .unwrap_or_default();
        names.insert(peer, name);
    }
    names
}

/// The graph built by `local` from each peer's view (`None`: the peer
/// did not answer), `names` for the peers that did not, and whether
/// `local` trusts each peer.
pub fn connect_graph(
    local: PeerId,
    views: impl IntoIterator<Item = (PeerId, Option<RemoteGraph>)>,
    names: &BTreeMap<PeerId, String>,
    trusts: impl Fn(&PeerId) -> bool,
) -> ConnectGraph {
    let mut graph = ConnectGraph {
        cluster_id: local.to_string(),
        ..ConnectGraph::default()
    };
    for (peer, view) in views {
        let key = peer.to_string();
        graph.cluster_trust_links.insert(key.clone(), trusts(&peer));
        let Some(view) = view else {
            graph.cluster_links.insert(key.clone(), Vec::new());
            if let Some(name) = names.get(&peer) {
                graph.id_to_peername.insert(key, name.clone());
            }
            continue;
        };
        graph.id_to_peername.insert(key.clone(), view.peername);
        // A peer's answer is input like any other: ids that do not parse
        // are left out rather than drawn.
        let links = view
            .cluster_peers
            .iter()
            .filter(|p| p.parse::<PeerId>().is_ok());
        graph
            .cluster_links
            .insert(key.clone(), links.cloned().collect());
        if view.ipfs_id.parse::<PeerId>().is_ok() {
            let swarm = view
                .ipfs_peers
                .iter()
                .filter(|p| p.parse::<PeerId>().is_ok());
            graph
                .ipfs_links
                .insert(view.ipfs_id.clone(), swarm.cloned().collect());
            graph.cluster_to_ipfs.insert(key, view.ipfs_id);
        }
    }
    graph
}
