//! The peerset: who this peer and the others are (`GET /id`, `GET
//! /peers`), taking a peer out or back in, and the one re-allocation that
//! moves a peer's pins to others (after `DELETE /peers`, and when the
//! monitor reports a peer dead).
//!
//! The reference cannot remove a peer under CRDT consensus (membership
//! follows the `ping` metrics, so a removed peer that still runs comes
//! back). Here removal is real and lasting: it is a peerset record in the
//! pinset's CRDT ([`crate::consensus::peerset`]), so it survives restarts,
//! reaches peers that were offline or join later, and counts only when
//! written by a trusted peer. Every peer that holds the record refuses the
//! removed peer's connections (from its start on, bootstrap included);
//! then every pin allocated to it is re-allocated among the remaining
//! peers. Adding a peer is the deliberate way back: a record that takes it
//! back in.
//!
//! Before writing, the other live peers are told at once (the change is
//! immediate where they trust us), and their answers tell whether this peer
//! is trusted at all: when every peer that answered refuses it, nothing is
//! written. The removed peer itself is told too, so it logs the removal
//! and stops redialing.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use super::fanout::ask_one;
use super::{Cluster, ClusterError, ask_all};
use crate::allocator;
use crate::consensus::peerset::PeerRecord;
use crate::ipfsconn::IpfsConnector;
use crate::network::{NetworkError, RemoteId};
use crate::state::{PAGE, pages};
use crate::types::{IdInfo, IpfsIdInfo};

/// How long a peer may take to say who it is, or to hear a peerset change.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `GET /id` waits for the IPFS daemon: a slow daemon shows as an
/// error, it never blocks the answer.
const IPFS_ID_TIMEOUT: Duration = Duration::from_secs(2);

/// Whose pins a re-allocation moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Every pin allocated to the peer (it was removed by this peer).
    All,
    /// The pins this peer is responsible for among the live trusted peers
    /// (the peer went down: every live peer moves its own share, with no
    /// coordination and no duplicate writes; should two peers disagree on
    /// who is live, the CRDT merges their writes).
    Mine,
}

impl Cluster {
    /// This peer as `GET /id` shows it: its identity, its IPFS daemon
    /// (asked now, bounded), and the peerset's addresses.
    pub async fn id(&self) -> IdInfo {
        let mut info = self.local_id_info().await;
        info.ipfs = match tokio::time::timeout(IPFS_ID_TIMEOUT, self.ipfs().id()).await {
            Ok(Ok(id)) => IpfsIdInfo {
                id: Some(id.id),
                addresses: id.addresses,
                error: String::new(),
            },
            Ok(Err(e)) => IpfsIdInfo {
                error: e.to_string(),
                ..IpfsIdInfo::default()
            },
            Err(_) => IpfsIdInfo {
                error: format!("IPFS daemon did not answer within {IPFS_ID_TIMEOUT:?}"),
                ..IpfsIdInfo::default()
            },
        };
        // The peerset's addresses, as the reference lists them.
        if let Ok(peers) = self.network().peers().await {
            for peer in peers {
                if let Ok(addrs) = self.network().peer_addrs(peer).await {
                    info.cluster_peers_addresses.extend(addrs);
                }
            }
        }
        info
    }

    /// This peer and every peer of the peerset, each as it describes
    /// itself; a peer that cannot be asked is an entry with its error.
    pub async fn peers(&self) -> Vec<IdInfo> {
        let peers = self.network().peers().await.unwrap_or_default();
        let theirs = ask_all(peers, PEER_TIMEOUT, |peer| self.network().remote_id(peer));
        let (mine, theirs) = tokio::join!(self.local_id_info(), theirs);
        let mut infos = vec![mine];
        infos.extend(theirs.into_iter().map(|(peer, answer)| match answer {
            Ok(remote) => id_info(peer, remote),
            Err(e) => errored(peer, e.to_string()),
        }));
        infos
    }

    async fn local_id_info(&self) -> IdInfo {
        let local = self.local_peer_id();
        match self.network().local_id().await {
            Ok(remote) => id_info(local, remote),
            Err(e) => errored(local, e.to_string()),
        }
    }

    /// Takes `peer` (back) into the peerset; answers with its identity.
    pub async fn add_peer(&self, peer: PeerId) -> Result<IdInfo, ClusterError> {
        // The addresses it had when it was removed: nobody remembers it
        // otherwise.
        let addrs = self
            .inner
            .consensus
            .peer_record(&peer)?
            .map(|r| r.addrs)
            .unwrap_or_default();
        self.change_membership(peer, false, addrs).await?;
        let answer = ask_one(peer, PEER_TIMEOUT, self.network().remote_id(peer)).await?;
        let mut info = id_info(peer, answer);
        let local = self.local_peer_id();
        if !info.cluster_peers.contains(&local) {
            info.cluster_peers.push(local);
        }
        Ok(info)
    }

    /// Removes `peer` for good and moves its allocations; returns how many
    /// pins moved.
    pub async fn remove_peer(&self, peer: PeerId) -> Result<usize, ClusterError> {
        if peer == self.local_peer_id() {
            return Err(ClusterError::RemoveSelf);
        }
        let addrs = self.network().peer_addrs(peer).await.unwrap_or_default();
        self.change_membership(peer, true, addrs).await?;
        let moved = self.reallocate(peer, Share::All).await?;
        tracing::info!(%peer, pins = moved, "peer removed; its pins were re-allocated");
        Ok(moved)
    }

    /// Takes `peer` out (`removed`) or back in: tells the other live peers,
    /// gives up if none of those that answered trusts this peer, tells
    /// `peer` itself, and writes the peerset record (applied here before
    /// the write returns).
    async fn change_membership(
        &self,
        peer: PeerId,
        removed: bool,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), ClusterError> {
        if self.inner.consensus.is_follower() {
            return Err(ClusterError::Follower);
        }
        let others: Vec<PeerId> = self
            .network()
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|p| *p != peer)
            .collect();
        let told = self.tell(others, peer, removed).await;
        if told.refused > 0 && told.heard == 0 {
            return Err(ClusterError::NotTrusted);
        }
        let record = PeerRecord::new(removed, self.local_peer_id(), addrs);
        if removed {
            // Told before the record blocks it here: afterwards it could
            // not be reached.
            self.tell(vec![peer], peer, removed).await;
        }
        self.inner.consensus.log_peer(peer, record).await?;
        if !removed {
            // Let back in (and dialed) by now: it may resume redialing.
            self.tell(vec![peer], peer, removed).await;
        }
        Ok(())
    }

    /// Tells each of `targets` that `peer` is out (`removed`) or back in.
    /// A peer that does not answer is logged, not an error: the peerset
    /// record reaches it later.
    async fn tell(&self, targets: Vec<PeerId>, peer: PeerId, removed: bool) -> Told {
        let answers = ask_all(targets, PEER_TIMEOUT, |target| {
            self.network().tell_removed(target, peer, removed)
        })
        .await;
        let mut told = Told::default();
        for (target, answer) in answers {
            match answer {
                Ok(()) => told.heard += 1,
                Err(ClusterError::Network(NetworkError::NotTrusted { .. })) => {
                    tracing::warn!(%target, %peer, "peerset change refused: this peer is not trusted there");
                    told.refused += 1;
                }
                Err(e) => tracing::warn!(%target, %peer, error = %e, "peerset change not heard"),
            }
        }
        told
    }

    /// Re-allocates `share` of the pins allocated to `gone` (their other
    /// allocations stay, `gone` is never chosen again); returns how many
    /// moved. The pinset is streamed, never loaded whole. A pin that cannot
    /// move is logged and the others still move; the first failure is
    /// then the answer.
    pub async fn reallocate(&self, gone: PeerId, share: Share) -> Result<usize, ClusterError> {
        let local = self.local_peer_id();
        let writers: Vec<PeerId> = match share {
            Share::All => Vec::new(),
            Share::Mine => {
                let mut live: Vec<PeerId> = self
                    .monitor()
                    .live_peers(chrono::Utc::now())
                    .into_iter()
                    .filter(|p| *p != gone && self.trusts(p))
                    .collect();
                if !live.contains(&local) {
                    live.push(local);
                }
                live
            }
        };
        let state = self.state().clone();
        let mut pins = pages(
            state
                .list()
                .flatten()
                .filter(move |pin| pin.allocations.contains(&gone)),
            PAGE,
        );
        let (mut moved, mut failed) = (0, None);
        while let Some(page) = pins.recv().await {
            for mut pin in page {
                if share == Share::Mine && allocator::responsible(&pin.cid, &writers) != Some(local)
                {
                    continue;
                }
                let cid = pin.cid;
                let current: Vec<PeerId> = pin
                    .allocations
                    .iter()
                    .filter(|p| **p != gone)
                    .copied()
                    .collect();
                let allocated = self.inner.allocator.allocate(allocator::Request {
                    cid: &pin.cid,
                    replication_min: pin.options.replication_factor_min,
                    replication_max: pin.options.replication_factor_max,
                    current: &current,
                    priority: &pin.options.user_allocations,
                    exclude: &[gone],
                });
                let written = match allocated {
                    Ok(allocations) => {
                        pin.allocations = allocations;
                        pin.timestamp = Some(chrono::Utc::now().fixed_offset());
                        self.inner
                            .consensus
                            .log_pin(pin)
                            .await
                            .map_err(ClusterError::from)
                    }
                    Err(e) => Err(e.into()),
                };
                match written {
                    Ok(()) => moved += 1,
                    Err(e) => {
                        tracing::warn!(%cid, error = %e, "cannot re-allocate");
                        failed.get_or_insert(ClusterError::Reallocation {
                            cid,
                            source: Box::new(e),
                        });
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }
}

/// How the peers told of a peerset change answered.
#[derive(Debug, Default)]
struct Told {
    heard: usize,
    refused: usize,
}

/// A peer that could not be asked: its id and the error, the rest empty.
fn errored(id: PeerId, error: String) -> IdInfo {
    IdInfo {
        id,
        addresses: Vec::new(),
        cluster_peers: Vec::new(),
        cluster_peers_addresses: Vec::new(),
        version: String::new(),
        commit: String::new(),
        rpc_protocol_version: String::new(),
        error,
        ipfs: IpfsIdInfo::default(),
        peername: String::new(),
    }
}

/// What a peer said about itself, as an `ID`. Entries that do not parse
/// are dropped: a peer's answer is input like any other.
fn id_info(asked: PeerId, remote: RemoteId) -> IdInfo {
    let ipfs = IpfsIdInfo {
        id: remote.ipfs_id.parse().ok(),
        addresses: remote
            .ipfs_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
        error: String::new(),
    };
    IdInfo {
        // The id is the one the connection authenticated, never the one
        // the answer claims: a peer could otherwise pass for another in
        // `GET /peers` (the hostile peer test's forged identity).
        id: asked,
        addresses: remote
            .addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
        cluster_peers: remote
            .cluster_peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
        cluster_peers_addresses: Vec::new(),
        version: remote.version,
        commit: String::new(),
        rpc_protocol_version: "/pincluster/1.0/sync".to_string(),
        error: String::new(),
        ipfs,
        peername: remote.peername,
    }
}
