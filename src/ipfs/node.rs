//! [`Node`]: the embedded node as the rest of the peer uses it: its block
//! store, where missing blocks come from, and pinning, which needs both.

use std::sync::Arc;

use cid::Cid;
use futures::StreamExt as _;
use libp2p::PeerId;

use super::fetch::{BlockFetcher, FetchError};
use super::store::{BlockStore, StoreError};
use super::swarm::IpfsSwarm;
use crate::types::PinMode;

/// Missing blocks asked for per round of a recursive pin (one level of
/// the DAG, at most this many), before the DAG is walked again to find the
/// next ones. Bitswap keeps its own window of these in flight.
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
        loop {
            let store = self.store.clone();
            let root = *cid;
            let missing = tokio::task::spawn_blocking(move || store.try_pin(&root, mode))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))??;
            if missing.is_empty() {
                return Ok(());
            }
            // Each round stores at least one new block or fails, so the
            // loop ends: the DAG is finite, the store only grows here.
            let round: Vec<Cid> = missing.into_iter().take(FETCH_ROUND).collect();
            let first = round[0];
            let mut fetched = self.fetcher.fetch_many(round);
            let mut got = 0usize;
            while let Some(block) = fetched.next().await {
                let (cid, data) = block?;
                self.store.put(&cid, &data)?;
                got += 1;
            }
            // A source that ends a round with nothing would loop forever.
            if got == 0 {
                return Err(FetchError::Unavailable(first).into());
            }
        }
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
