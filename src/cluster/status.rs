//! The status of pins across the cluster: one pin's, every pin's page by
//! page, and the two operations that answer with statuses, recover and
//! sync. A page of [`PAGE`] CIDs is asked of every peer at once
//! ([`ask_all`]) and each peer answers it from one listing of its IPFS
//! daemon; a peer that does not answer is a `cluster_error` entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use cid::Cid;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{Cluster, ClusterError, ask_all};
use crate::network::PeerPinStatus;
use crate::pintracker::TrackerEntry;
use crate::state::{PAGE, pages, readable};
use crate::status::{GlobalPinInfo, PinInfoShort, StatusFilter, TrackerStatus};
use crate::types::Pin;

/// How long a peer may take to report statuses or recover.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Which pins a status listing covers.
#[derive(Debug, Clone)]
pub enum Which {
    /// Every pin of the pinset.
    All,
    /// These CIDs, in this order, pinned or not.
    Only(Vec<Cid>),
}

/// What this peer's `peer_map` entries say about the peer itself.
struct Me {
    peername: String,
    /// Its IPFS daemon's id, as the reference shows it in every entry
    /// (`ipfs_peer_id`); omitted while the daemon has not told it.
    ipfs_id: Option<PeerId>,
}

impl Me {
    fn entry(&self, s: TrackerEntry) -> PinInfoShort {
        PinInfoShort {
            peername: self.peername.clone(),
            ipfs_peer_id: self.ipfs_id,
            ipfs_peer_addresses: Vec::new(),
            status: s.status,
            timestamp: s.updated,
            error: s.error,
            attempt_count: s.attempts,
            priority_pin: s.priority,
            progress: s.fetched.map(Into::into),
        }
    }
}

impl Cluster {
    fn me(&self) -> Me {
        let local = &self.inner.local;
        Me {
            peername: local.peername().to_string(),
            ipfs_id: local.seen_daemon().0.parse().ok(),
        }
    }

    /// The peers to ask: none when `local` only.
    async fn others(&self, local: bool) -> Vec<PeerId> {
        if local {
            return Vec::new();
        }
        self.network().peers().await.unwrap_or_default()
    }

    /// The status of `cid` on this peer and, unless `local`, on every
    /// peer of the peerset. With `recover`, each peer first re-queues a
    /// failed operation.
    pub async fn status(
        &self,
        cid: Cid,
        local: bool,
        recover: bool,
    ) -> Result<GlobalPinInfo, ClusterError> {
        let (mine, theirs) = tokio::join!(
            self.inner.local.status(cid, recover),
            ask_all(self.others(local).await, STATUS_TIMEOUT, |peer| self
                .network()
                .remote_status(peer, cid, recover)),
        );
        let mut peer_map = BTreeMap::new();
        peer_map.insert(self.local_peer_id().to_string(), self.me().entry(mine));
        for (peer, answer) in theirs {
            let info = match answer {
                Ok(remote) => entry(remote),
                Err(e) => unreachable_entry(e.to_string()),
            };
            peer_map.insert(peer.to_string(), info);
        }
        let ids = self.monitor().ipfs_ids(chrono::Utc::now());
        // Read after the peers answered, not before: a pin that arrives
        // while they are asked would otherwise show statuses that know it
        // beside a pin record that does not (no allocations, no name).
        let pin = self.state().get(&cid)?;
        Ok(global_info(cid, pin, with_ipfs_ids(peer_map, &ids)))
    }

    /// The status of `which` pins on this peer and, unless `local`, on
    /// every peer, streamed page by page. `filter` keeps the peers whose
    /// status matches, and the CIDs that keep at least one.
    pub fn statuses(
        &self,
        which: Which,
        filter: Option<StatusFilter>,
        local: bool,
    ) -> mpsc::Receiver<GlobalPinInfo> {
        let (tx, rx) = mpsc::channel(PAGE);
        let cluster = self.clone();
        tokio::spawn(async move {
            let state = cluster.state().clone();
            let mut pages = match which {
                Which::All => pages(
                    state
                        .list()
                        .filter_map(readable)
                        .map(|pin| (pin.cid, Some(pin))),
                    PAGE,
                ),
                Which::Only(cids) => pages(
                    cids.into_iter()
                        .map(move |cid| (cid, state.get(&cid).ok().flatten())),
                    PAGE,
                ),
            };
            let local_id = cluster.local_peer_id().to_string();
            let me = cluster.me();
            let peers = cluster.others(local).await;
            // One listing of the daemon for the whole stream (see
            // `pintracker::listing`).
            let listing = cluster.inner.local.daemon_pins().await;
            while let Some(page) = pages.recv().await {
                let cids: Vec<Cid> = page.iter().map(|(c, _)| *c).collect();
                let (mine, theirs) = tokio::join!(
                    async { cluster.inner.local.statuses_from(&listing, &page) },
                    ask_all(peers.iter().copied(), STATUS_TIMEOUT, |peer| cluster
                        .network()
                        .remote_status_many(peer, cids.clone())),
                );
                let ids = cluster.monitor().ipfs_ids(chrono::Utc::now());
                for (i, ((cid, pin), my)) in page.into_iter().zip(mine).enumerate() {
                    let mut peer_map = BTreeMap::new();
                    peer_map.insert(local_id.clone(), me.entry(my));
                    for (peer, answer) in &theirs {
                        let info = match answer {
                            Ok(statuses) => match statuses.get(i) {
                                Some(s) => entry(s.clone()),
                                None => unreachable_entry("short answer".to_string()),
                            },
                            Err(e) => unreachable_entry(e.to_string()),
                        };
                        peer_map.insert(peer.to_string(), info);
                    }
                    if let Some(filter) = &filter {
                        peer_map.retain(|_, e| filter.matches(e.status));
                        if peer_map.is_empty() {
                            continue;
                        }
                    }
                    let peer_map = with_ipfs_ids(peer_map, &ids);
                    if tx.send(global_info(cid, pin, peer_map)).await.is_err() {
                        return; // the caller went away
                    }
                }
            }
        });
        rx
    }

    /// Every peer re-queues its failed operations; the answer is the
    /// cluster status of each pin some peer re-queued.
    pub async fn recover_all(&self) -> mpsc::Receiver<GlobalPinInfo> {
        let peers = self.others(false).await;
        let theirs = ask_all(peers, STATUS_TIMEOUT, |peer| {
            self.network().remote_recover_all(peer)
        });
        let mut recovered: BTreeSet<Cid> = self.inner.local.recover_all().into_iter().collect();
        for (peer, answer) in theirs.await {
            match answer {
                Ok(cids) => recovered.extend(cids),
                Err(e) => tracing::warn!(%peer, error = %e, "recover-all not relayed"),
            }
        }
        self.statuses(Which::Only(recovered.into_iter().collect()), None, false)
    }

    /// Re-reads this peer's IPFS pinset for every pin of the pinset,
    /// settles the tracker's operations against it, and streams this
    /// peer's status of the pins whose status changed.
    pub fn sync_all(&self) -> mpsc::Receiver<GlobalPinInfo> {
        let (tx, rx) = mpsc::channel(PAGE);
        let cluster = self.clone();
        tokio::spawn(async move {
            let state = cluster.state().clone();
            let mut pages = pages(
                state
                    .list()
                    .filter_map(readable)
                    .map(|pin| (pin.cid, Some(pin))),
                PAGE,
            );
            let local = cluster.local_peer_id().to_string();
            let me = cluster.me();
            while let Some(page) = pages.recv().await {
                let synced = cluster.inner.local.tracker.sync(&page).await;
                for ((cid, pin), (status, changed)) in page.into_iter().zip(synced) {
                    if !changed {
                        continue;
                    }
                    let peer_map = BTreeMap::from([(local.clone(), me.entry(status))]);
                    if tx.send(global_info(cid, pin, peer_map)).await.is_err() {
                        return; // the caller went away
                    }
                }
            }
        });
        rx
    }

    /// Syncs `cid` on this peer, then answers with its status on every
    /// peer (or this one with `local`).
    pub async fn sync(&self, cid: Cid, local: bool) -> Result<GlobalPinInfo, ClusterError> {
        let pin = self.state().get(&cid)?;
        self.inner.local.tracker.sync(&[(cid, pin)]).await;
        self.status(cid, local, false).await
    }
}

fn entry(remote: PeerPinStatus) -> PinInfoShort {
    PinInfoShort {
        peername: remote.peername,
        ipfs_peer_id: None,
        ipfs_peer_addresses: Vec::new(),
        status: remote.status,
        timestamp: remote.updated,
        error: remote.error,
        attempt_count: remote.attempts,
        priority_pin: remote.priority,
        progress: remote.fetched,
    }
}

fn unreachable_entry(error: String) -> PinInfoShort {
    PinInfoShort {
        peername: String::new(),
        ipfs_peer_id: None,
        ipfs_peer_addresses: Vec::new(),
        status: TrackerStatus::ClusterError,
        timestamp: Some(chrono::Utc::now().fixed_offset()),
        error,
        attempt_count: 0,
        priority_pin: false,
        progress: None,
    }
}

/// Fills each entry's `ipfs_peer_id` from its peer's live `ping` metric,
/// as the reference's peers report their daemon's id with every status.
fn with_ipfs_ids(
    mut peer_map: BTreeMap<String, PinInfoShort>,
    ids: &HashMap<String, PeerId>,
) -> BTreeMap<String, PinInfoShort> {
    for (peer, entry) in peer_map.iter_mut() {
        if entry.ipfs_peer_id.is_none() {
            entry.ipfs_peer_id = ids.get(peer).copied();
        }
    }
    peer_map
}

/// A `GlobalPinInfo` from the pin (if in the pinset) and the peers' views.
fn global_info(
    cid: Cid,
    pin: Option<Pin>,
    peer_map: BTreeMap<String, PinInfoShort>,
) -> GlobalPinInfo {
    match pin {
        Some(pin) => GlobalPinInfo {
            cid,
            name: pin.options.name,
            allocations: pin.allocations,
            origins: pin.options.origins,
            created: pin.timestamp,
            metadata: pin.options.metadata,
            peer_map,
        },
        // Not in the pinset: still 200, as the reference answers.
        None => GlobalPinInfo {
            cid,
            name: String::new(),
            allocations: Vec::new(),
            origins: Vec::new(),
            created: Some(chrono::Utc::now().fixed_offset()),
            metadata: Default::default(),
            peer_map,
        },
    }
}
