//! Where the embedded node gets blocks it does not have: the seam bitswap
//! plugs into. A recursive pin walks the DAG in the local store and asks
//! the [`BlockFetcher`] for each block it lacks; the fetcher checks the
//! bytes against their CID, and the store checks them again.
//!
//! The peer runs the node with [`super::exchange::SwarmFetcher`] (Bitswap
//! over the node's public swarm). A pin whose blocks no source has fails
//! with a [`FetchError`], which the pin tracker retries and, after its
//! attempts, reports as `pin_error`, never an endless `pinning`.
//!
//! A pin counts what it fetched in a [`PinProgress`] as it goes: the pin
//! tracker shows it in the pin's status while it is `pinning`, and the
//! connector's no-progress timeout watches it.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// Why a block could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No source has it (or none is connected).
    #[error("block {0} is not in the local store and no peer provided it")]
    Unavailable(Cid),
    /// The fetch gave up after its own deadline.
    #[error("block {0}: fetch timed out")]
    Timeout(Cid),
    /// The source failed for another reason (a store error, a shut-down
    /// swarm).
    #[error("block {cid}: {reason}")]
    Failed { cid: Cid, reason: String },
}

/// A source of blocks from other nodes (bitswap). Implementations bound
/// their own waits: a fetch that cannot succeed must end in an error.
pub trait BlockFetcher: Send + Sync + Debug + 'static {
    /// The bytes of `cid`, from somewhere else than the local store,
    /// checked against `cid` (a pin reads links from them before the store
    /// checks them again).
    fn fetch<'a>(&'a self, cid: &'a Cid) -> BoxFuture<'a, Result<Bytes, FetchError>>;

    /// The blocks `cids`, in any order, each as it arrives; a pin asks for
    /// one level of the DAG at once so a networked source keeps many
    /// requests in flight. The default fetches them one after another.
    fn fetch_many(&self, cids: Vec<Cid>) -> BoxStream<'_, Result<(Cid, Bytes), FetchError>> {
        futures::stream::iter(cids)
            .then(move |cid| async move { self.fetch(&cid).await.map(|data| (cid, data)) })
            .boxed()
    }
}

/// Blocks and bytes a pin has fetched so far, shared between the pin that
/// counts and whoever reports it (the tracker's status, the daemon's log,
/// the no-progress timeout). Counters only grow.
#[derive(Debug, Default)]
pub struct PinProgress {
    blocks: AtomicU64,
    bytes: AtomicU64,
}

/// A reading of a [`PinProgress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    pub blocks: u64,
    /// Zero when the source counts blocks only (Kubo's `pin/add` progress).
    pub bytes: u64,
}

impl PinProgress {
    /// One more block of `bytes` bytes.
    pub fn add_block(&self, bytes: u64) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Raises the block count to `blocks` (a source that reports totals);
    /// a lower count leaves it as it is.
    pub fn set_blocks(&self, blocks: u64) {
        self.blocks.fetch_max(blocks, Ordering::Relaxed);
    }

    pub fn get(&self) -> Fetched {
        Fetched {
            blocks: self.blocks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}
