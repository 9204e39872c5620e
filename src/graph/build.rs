//! Building the [`ConnectGraph`]: every peer is asked at once, each answer
//! bounded by [`PEER_TIMEOUT`], so the call takes as long as the slowest
//! peer within that bound, whatever the cluster's size; a peer that does not
//! answer is drawn unreachable rather than holding the answer up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::join_all;
use libp2p::PeerId;

use super::ConnectGraph;
use crate::config::TrustedPeers;
use crate::ipfsconn::IpfsConnector;
use crate::monitor::Monitor;
use crate::network::{Network, RemoteGraph};

/// How long the building peer waits for each peer's answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer waits for its IPFS daemon (`id`, then `swarm/peers`):
/// shorter than [`PEER_TIMEOUT`], so a peer with a slow daemon still
/// answers in time, with its daemon shown as errored.
pub const IPFS_TIMEOUT: Duration = Duration::from_secs(3);

/// What the building peer reads from.
#[derive(Debug, Clone)]
pub struct GraphSources<C> {
    /// The peerset and the requests to peers.
    pub network: Network,
    /// This peer's IPFS daemon.
    pub ipfs: C,
    /// Names of peers that cannot answer, and peers known only as down
    /// (their `ping` expired).
    pub monitor: Monitor,
    /// Whose deltas this peer accepts (`cluster_trust_links`).
    pub trusted: TrustedPeers,
}

/// Asks `ipfs` for its id, then its swarm peers, within [`IPFS_TIMEOUT`]:
/// `("", [])` when the daemon does not answer, `(id, [])` when only the
/// swarm listing fails.
pub async fn ipfs_links<C: IpfsConnector>(ipfs: &C) -> (String, Vec<String>) {
    let ask = async {
        let id = match ipfs.id().await {
            Ok(id) => id.id.to_string(),
            Err(e) => {
                tracing::debug!(error = %e, "health graph: IPFS id failed");
                return (String::new(), Vec::new());
            }
        };
        let peers = match ipfs.swarm_peers().await {
            Ok(peers) => peers.iter().map(PeerId::to_string).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "health graph: IPFS swarm peers failed");
                Vec::new()
            }
        };
        (id, peers)
    };
    tokio::time::timeout(IPFS_TIMEOUT, ask)
        .await
        .unwrap_or_default()
}

/// Peer names and down peers as the monitor knows them: the `peer_name` of
/// every peer's latest `ping`, live or expired.
fn ping_names(monitor: &Monitor) -> BTreeMap<PeerId, String> {
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

/// Builds the graph as this peer sees the cluster now.
pub async fn connect_graph<C: IpfsConnector>(sources: &GraphSources<C>) -> ConnectGraph {
    let network = &sources.network;
    let local = network.local_peer_id();
    let names = ping_names(&sources.monitor);
    // The peerset, plus peers known to be down: a dead peer is exactly what
    // the graph must show, not leave out.
    let mut members: BTreeSet<PeerId> = network
        .peers()
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    members.extend(names.keys().copied());
    members.remove(&local);

    let local_view = async {
        let peername = network
            .local_id()
            .await
            .map(|id| id.peername)
            .unwrap_or_default();
        let cluster_peers = network
            .connected_peers()
            .await
            .unwrap_or_default()
            .iter()
            .map(PeerId::to_string)
            .collect();
        let (ipfs_id, ipfs_peers) = ipfs_links(&sources.ipfs).await;
        RemoteGraph {
            peername,
            cluster_peers,
            ipfs_id,
            ipfs_peers,
        }
    };
    let remote_views = join_all(members.iter().map(|peer| async move {
        match tokio::time::timeout(PEER_TIMEOUT, network.remote_graph(*peer)).await {
            Ok(Ok(view)) => Some(view),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "health graph: peer did not answer");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "health graph: peer timed out");
                None
            }
        }
    }));
    let (local_view, remote_views) = futures::join!(local_view, remote_views);

    let mut graph = ConnectGraph {
        cluster_id: local.to_string(),
        ..ConnectGraph::default()
    };
    let views =
        std::iter::once((local, Some(local_view))).chain(members.iter().copied().zip(remote_views));
    for (peer, view) in views {
        let key = peer.to_string();
        graph
            .cluster_trust_links
            .insert(key.clone(), sources.trusted.trusted_by(&local, &peer));
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
