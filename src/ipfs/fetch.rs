//! Where the embedded node gets blocks it does not have: the seam bitswap
//! plugs into. A recursive pin walks the DAG in the local store and asks
//! the [`BlockFetcher`] for each block it lacks; the fetched bytes are
//! checked against their CID before they are stored.
//!
//! The peer runs the node with [`super::exchange::SwarmFetcher`] (Bitswap
//! over the node's public swarm). A pin whose blocks no source has fails
//! with a [`FetchError`], which the pin tracker retries and, after its
//! attempts, reports as `pin_error`, never an endless `pinning`.

use std::fmt::Debug;

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
    /// The bytes of `cid`, from somewhere else than the local store. The
    /// caller verifies them against `cid`.
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
