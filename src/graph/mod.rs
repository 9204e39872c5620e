//! The health graph: which cluster peers are connected to which, which IPFS
//! daemon belongs to which peer, which daemons are linked, which are down.
//!
//! The cluster asks every peer of the peerset at once
//! ([`crate::cluster::Cluster::health_graph`]); [`build`] merges the
//! answers into the [`ConnectGraph`] that `GET /health/graph` returns;
//! [`dot`] renders it as the Graphviz DOT that `ipfs-cluster-ctl health
//! graph` prints, so `pincluster health graph | dot -Tpng` draws the same
//! picture people's scripts expect.

pub mod build;
pub mod dot;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use build::{connect_graph, ping_names};

/// `ConnectGraph` (spec §1.2). Peer ids are strings: the graph is drawn
/// from whatever a peer answered, and a strange id must still render.
///
/// `cluster_links[p]` is `[]` when `p` could not be asked; peers whose IPFS
/// daemon did not answer are absent from `cluster_to_ipfs` and their
/// daemon from `ipfs_links`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectGraph {
    /// The peer that built the graph.
    pub cluster_id: String,
    /// Peer names, for the peers that answered (or were seen alive).
    #[serde(default)]
    pub id_to_peername: BTreeMap<String, String>,
    /// IPFS daemon → the peers its swarm is connected to.
    #[serde(default)]
    pub ipfs_links: BTreeMap<String, Vec<String>>,
    /// Cluster peer → the cluster peers it is connected to.
    #[serde(default)]
    pub cluster_links: BTreeMap<String, Vec<String>>,
    /// Cluster peer → whether the building peer trusts it.
    #[serde(default)]
    pub cluster_trust_links: BTreeMap<String, bool>,
    /// Cluster peer → its IPFS daemon.
    #[serde(default)]
    pub cluster_to_ipfs: BTreeMap<String, String>,
}
