//! Where the embedded node gets blocks it does not have: the seam bitswap
//! plugs into. A recursive pin walks the DAG in the local store and asks
//! the [`BlockFetcher`] for each block it lacks; the fetched bytes are
//! checked against their CID before they are stored.
//!
//! Until bitswap is wired in, the node runs with [`NoFetcher`]: a pin whose
//! blocks are not all local fails with [`FetchError::Unavailable`], which
//! the pin tracker retries and, after its attempts, reports as
//! `pin_error`, never an endless `pinning`.

use std::fmt::Debug;

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;

/// Why a block could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No source has it (or none is connected).
    #[error("block {0} is not in the local store and no peer provided it")]
    Unavailable(Cid),
    /// The fetch gave up after its own deadline.
    #[error("block {0}: fetch timed out")]
    Timeout(Cid),
}

/// A source of blocks from other nodes (bitswap). Implementations bound
/// their own waits: a fetch that cannot succeed must end in an error.
pub trait BlockFetcher: Send + Sync + Debug + 'static {
    /// The bytes of `cid`, from somewhere else than the local store. The
    /// caller verifies them against `cid`.
    fn fetch<'a>(&'a self, cid: &'a Cid) -> BoxFuture<'a, Result<Bytes, FetchError>>;
}

/// No source at all: every missing block is unavailable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFetcher;

impl BlockFetcher for NoFetcher {
    fn fetch<'a>(&'a self, cid: &'a Cid) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        Box::pin(async move { Err(FetchError::Unavailable(*cid)) })
    }
}
