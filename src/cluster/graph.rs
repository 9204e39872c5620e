//! The health graph as this peer sees the cluster now: every peer is asked
//! for its connections at once ([`ask_all`]), so the call takes as long as
//! the slowest peer within [`PEER_TIMEOUT`], whatever the cluster's size.

use std::collections::BTreeSet;
use std::time::Duration;

use libp2p::PeerId;

use super::{Cluster, ask_all};
use crate::graph::{ConnectGraph, connect_graph, ping_names};
use crate::network::RemoteGraph;

/// How long the building peer waits for each peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Who is connected to whom, cluster peers and IPFS daemons.
    pub async fn health_graph(&self) -> ConnectGraph {
        let network = self.network();
        let local = self.local_peer_id();
        let names = ping_names(self.monitor());
        // The peerset, plus peers known to be down: a dead peer is exactly
        // what the graph must show, not leave out.
        let mut members: BTreeSet<PeerId> = network
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        members.extend(names.keys().copied());
        members.remove(&local);

        let local_view = async {
            let cluster_peers = network
                .connected_peers()
                .await
                .unwrap_or_default()
                .iter()
                .map(PeerId::to_string)
                .collect();
            let (ipfs_id, ipfs_peers) = self.inner.local.ipfs_links().await;
            RemoteGraph {
                peername: self.inner.local.peername().to_string(),
                cluster_peers,
                ipfs_id,
                ipfs_peers,
            }
        };
        let theirs = ask_all(members, PEER_TIMEOUT, |peer| network.remote_graph(peer));
        let (local_view, theirs) = tokio::join!(local_view, theirs);
        let theirs = theirs.into_iter().map(|(peer, answer)| {
            let view = answer
                .map_err(
                    |e| tracing::debug!(%peer, error = %e, "health graph: peer did not answer"),
                )
                .ok();
            (peer, view)
        });
        let views = std::iter::once((local, Some(local_view))).chain(theirs);
        connect_graph(local, views, &names, |peer| self.trusts(peer))
    }
}
