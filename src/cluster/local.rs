//! This peer's own side of every cluster-wide question: its pin statuses
//! (from its tracker), its IPFS daemon (as last seen, and asked now). The
//! [`super::Cluster`] answers its API callers' part from here, and
//! [`super::rpc::ClusterRpc`] answers the other peers' from here, so both
//! say the same thing.

use std::sync::{Arc, Mutex};

use std::time::Duration;

use cid::Cid;
use libp2p::{Multiaddr, PeerId};

use super::ipfs::{self, RawIpfsApi};
use crate::ipfsconn::{Connector, IpfsConnector};
use crate::network::{RemoteRepoGc, RemoteRepoStat};
use crate::pintracker::{Listing, PinTracker, TrackerEntry};
use crate::state::PinState;
use crate::types::Pin;

/// How long this peer waits for its IPFS daemon (`id`, then
/// `swarm/peers`) for the health graph: shorter than the time a peer gets to
/// answer the graph request, so a peer with a slow daemon still answers in
/// time, with its daemon shown as errored.
const IPFS_TIMEOUT: Duration = Duration::from_secs(3);

/// The IPFS daemon beside this peer as last seen: its id and swarm
/// addresses (empty until it answers). Written by the swarm connector,
/// read by the informer and by peers asking who we are.
pub type SeenDaemon = Arc<Mutex<(String, Vec<Multiaddr>)>>;

/// This peer's pin statuses and IPFS daemon. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Local {
    pub(super) state: PinState,
    pub(super) tracker: PinTracker<Connector>,
    pub(super) ipfs: Connector,
    /// The same daemon over plain HTTP, for the full `repo/stat`.
    pub(super) daemon: RawIpfsApi,
    pub(super) peername: String,
    pub(super) seen: SeenDaemon,
}

impl Local {
    /// This peer's side, over its pinset, tracker and daemon.
    pub fn new(
        state: PinState,
        tracker: PinTracker<Connector>,
        ipfs: Connector,
        daemon: RawIpfsApi,
        peername: String,
        seen: SeenDaemon,
    ) -> Local {
        Local {
            state,
            tracker,
            ipfs,
            daemon,
            peername,
            seen,
        }
    }

    /// This peer's name.
    pub fn peername(&self) -> &str {
        &self.peername
    }

    /// The daemon as last seen.
    pub fn seen_daemon(&self) -> (String, Vec<Multiaddr>) {
        self.seen.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The status of `cid` here, after re-queueing it if `recover` and it
    /// failed. A pinset that cannot be read counts the pin as absent.
    pub async fn status(&self, cid: Cid, recover: bool) -> TrackerEntry {
        if recover {
            self.tracker.recover(&cid);
        }
        let pin = self.state.get(&cid).unwrap_or_else(|e| {
            tracing::warn!(%cid, error = %e, "cannot read pin");
            None
        });
        self.tracker.status(&cid, pin.as_ref()).await
    }

    /// The statuses of `pins` here, in order (one listing of the daemon).
    pub async fn statuses(&self, pins: &[(Cid, Option<Pin>)]) -> Vec<TrackerEntry> {
        self.tracker.statuses(pins).await
    }

    /// The daemon's pinset, listed now or a few seconds ago: what a pass
    /// over many pages reads every page's statuses from.
    pub async fn daemon_pins(&self) -> Result<Listing, Arc<str>> {
        self.tracker.ipfs_pinset().await
    }

    /// The statuses of `pins` here, in order, from `listing`.
    pub fn statuses_from(
        &self,
        listing: &Result<Listing, Arc<str>>,
        pins: &[(Cid, Option<Pin>)],
    ) -> Vec<TrackerEntry> {
        self.tracker.statuses_from(listing, pins)
    }

    /// The statuses of `cids` here, their pins read from the pinset.
    pub async fn statuses_of(&self, cids: Vec<Cid>) -> Vec<TrackerEntry> {
        let pins: Vec<(Cid, Option<Pin>)> = cids
            .into_iter()
            .map(|cid| (cid, self.state.get(&cid).ok().flatten()))
            .collect();
        self.statuses(&pins).await
    }

    /// Re-queues every failed operation here; returns their CIDs.
    pub fn recover_all(&self) -> Vec<Cid> {
        self.tracker.recover_all()
    }

    /// The daemon's id, then the peers it is connected to, asked now
    /// within [`IPFS_TIMEOUT`]: `("", [])` when the daemon does not answer,
    /// `(id, [])` when only the swarm listing fails (for the health graph).
    pub async fn ipfs_links(&self) -> (String, Vec<String>) {
        let ask = async {
            let id = match self.ipfs.id().await {
                Ok(id) => id.id.to_string(),
                Err(e) => {
                    tracing::debug!(error = %e, "health graph: IPFS id failed");
                    return (String::new(), Vec::new());
                }
            };
            let peers = match self.ipfs.swarm_peers().await {
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

    /// The daemon's repository usage.
    pub async fn repo_stat(&self) -> Result<RemoteRepoStat, String> {
        self.daemon.repo_stat().await.map(|s| s.usage)
    }

    /// Runs `repo/gc` on the daemon.
    pub async fn repo_gc(&self) -> RemoteRepoGc {
        ipfs::local_repo_gc(&self.ipfs, self.peername.clone()).await
    }
}
