//! [`Node`]: the embedded node as the rest of the peer uses it: its block
//! store, where missing blocks come from, and pinning, which needs both.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use cid::Cid;
use futures::StreamExt as _;
use libp2p::PeerId;

use super::dag;
use super::fetch::{BlockFetcher, FetchError, PinProgress};
use super::store::{BlockStore, StoreError};
use super::swarm::IpfsSwarm;
use crate::types::PinMode;

/// Missing blocks asked for per round of a recursive pin, at most: the
/// links of the blocks a round fetched make the next rounds (breadth
/// first, never walking the DAG again). Bitswap keeps its own window of
/// these in flight.
const FETCH_ROUND: usize = 4096;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// The embedded node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    store: BlockStore,
    fetcher: Arc<dyn BlockFetcher>,
    id: PeerId,
    /// The public swarm, when the node runs one: its RPC answers `id`,
    /// `swarm/peers` and `swarm/connect` from it.
    swarm: Option<Arc<IpfsSwarm>>,
}

impl Node {
    /// A node over `store`, fetching what it lacks from `fetcher`; `id` is
    /// the identity it reports (`id`).
    pub fn new(store: BlockStore, fetcher: Arc<dyn BlockFetcher>, id: PeerId) -> Node {
        Node {
            store,
            fetcher,
            id,
            swarm: None,
        }
    }

    /// This node with its public `swarm`.
    pub fn with_swarm(self, swarm: IpfsSwarm) -> Node {
        Node {
            swarm: Some(Arc::new(swarm)),
            ..self
        }
    }

    pub fn swarm(&self) -> Option<&IpfsSwarm> {
        self.swarm.as_deref()
    }

    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Pins `cid`: fetches every block the pin needs that is not stored
    /// (the root, or the whole DAG when recursive), then records the pin.
    /// A block no source has fails the pin; blocks fetched so far stay.
    pub async fn pin(&self, cid: &Cid, mode: PinMode) -> Result<(), NodeError> {
        self.pin_counting(cid, mode, &PinProgress::default()).await
    }

    /// [`Node::pin`], counting each fetched block in `progress` as it is
    /// stored.
    pub async fn pin_counting(
        &self,
        cid: &Cid,
        mode: PinMode,
        progress: &PinProgress,
    ) -> Result<(), NodeError> {
        if mode == PinMode::Direct {
            return self.pin_direct(cid, progress).await;
        }
        // As Kubo's pin lock: no garbage collection while the DAG arrives,
        // or it would take the blocks fetched before the pin is recorded.
        let _hold = self.store.hold_gc().await;
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut queue: VecDeque<Cid> = self.missing_under(vec![*cid], &mut seen).await?.into();
        while !queue.is_empty() {
            let take = queue.len().min(FETCH_ROUND);
            let round: Vec<Cid> = queue.drain(..take).collect();
            let mut awaited: HashSet<Cid> = round.iter().copied().collect();
            let mut fetched = self.fetcher.fetch_many(round);
            // Links to blocks already stored: their own DAGs may lack blocks.
            let mut stored_links = Vec::new();
            while let Some(block) = fetched.next().await {
                let (cid, data) = block?;
                awaited.remove(&cid);
                // Bitswap stores what it fetched (checked against its CID)
                // before handing it over: no second write, no third hash.
                if !self.store.has(&cid)? {
                    self.store.put(&cid, &data)?;
                }
                progress.add_block(data.len() as u64);
                for link in dag::links(&cid, &data).map_err(StoreError::from)? {
                    if !seen.insert(link.hash().to_bytes()) {
                        continue;
                    }
                    if self.store.has(&link)? {
                        stored_links.push(link);
                    } else {
                        queue.push_back(link);
                    }
                }
            }
            // A source that stopped (shutting down) ends its stream early.
            if let Some(cid) = awaited.into_iter().next() {
                return Err(FetchError::Unavailable(cid).into());
            }
            if !stored_links.is_empty() {
                queue.extend(self.missing_under(stored_links, &mut seen).await?);
            }
        }
        // Every block the pin needs was either found stored (walked) or
        // fetched and stored above, under the same hold on gc.
        Ok(self.store.record_pin(cid, mode)?)
    }

    /// A direct pin needs its root only.
    async fn pin_direct(&self, cid: &Cid, progress: &PinProgress) -> Result<(), NodeError> {
        loop {
            let store = self.store.clone();
            let root = *cid;
            let missing =
                tokio::task::spawn_blocking(move || store.try_pin(&root, PinMode::Direct))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))??;
            if missing.is_empty() {
                return Ok(());
            }
            let data = self.fetcher.fetch(cid).await?;
            if !self.store.has(cid)? {
                self.store.put(cid, &data)?;
            }
            progress.add_block(data.len() as u64);
        }
    }

    /// The blocks missing under `roots` (themselves included), walking
    /// what is stored; what it visits joins `seen`.
    async fn missing_under(
        &self,
        roots: Vec<Cid>,
        seen: &mut HashSet<Vec<u8>>,
    ) -> Result<Vec<Cid>, NodeError> {
        let store = self.store.clone();
        let walks = tokio::task::spawn_blocking(move || {
            roots
                .iter()
                .map(|root| store.walk(root, None))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let mut missing = Vec::new();
        for walk in walks {
            for c in walk.present {
                seen.insert(c.hash().to_bytes());
            }
            for c in walk.missing {
                if seen.insert(c.hash().to_bytes()) {
                    missing.push(c);
                }
            }
        }
        Ok(missing)
    }

    /// Runs `f` on the store on a blocking thread.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BlockStore) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
    }
}
