//! [`ClusterError`]: why a cluster operation failed, typed until the edge.
//! Each API turns it into its own wire shape in one place (the REST API's
//! `{"code","message"}` with a status code, the proxy's Kubo error); the
//! texts are the reference's where it has one, since clients match them.

use libp2p::PeerId;

use crate::allocator::AllocationError;
use crate::consensus::ConsensusError;
use crate::ipfsconn::IpfsError;
use crate::network::NetworkError;
use crate::state::StateError;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This peer follows a cluster and cannot write.
    #[error("this peer is configured to be in follower mode. Write operations are disabled")]
    Follower,
    /// Too many writes are waiting.
    #[error("the write queue is full ({0} items); try again later")]
    QueueFull(usize),
    /// Another consensus failure (shut down, commit failed, too large).
    #[error(transparent)]
    Consensus(ConsensusError),
    /// Replication factors that make no sense (the reference's
    /// `isReplicationFactorValid` texts).
    #[error("{0}")]
    InvalidReplication(&'static str),
    /// Pin options the pinset refuses (expiry in the past, a different
    /// type or mode than the pin already there: the reference's `setupPin`).
    #[error("{0}")]
    InvalidPin(String),
    /// Not enough peers to allocate the pin to.
    #[error(transparent)]
    Allocation(#[from] AllocationError),
    /// Re-allocating a pin failed.
    #[error("re-allocating {cid}: {source}")]
    Reallocation {
        cid: cid::Cid,
        #[source]
        source: Box<ClusterError>,
    },
    /// The pin is not in the pinset (the reference's `state.ErrNotFound`).
    #[error("pin is not part of the pinset")]
    NotFound,
    /// Only plain pins can be updated.
    #[error("this pin type cannot be updated")]
    NotUpdatable,
    /// The pinset could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// A peerset record does not read.
    #[error(transparent)]
    PeerRecord(#[from] crate::consensus::peerset::PeerRecordError),
    /// A peer could not be asked.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A peer did not answer in time.
    #[error("peer {peer} did not answer within {after:?}")]
    PeerTimeout {
        peer: PeerId,
        after: std::time::Duration,
    },
    /// The other peers refuse this peer's peerset changes.
    #[error("this peer is not trusted by the other peers of the cluster: the peerset is unchanged")]
    NotTrusted,
    /// `DELETE /peers/<self>`.
    #[error("a peer cannot remove itself: ask another peer to remove it")]
    RemoveSelf,
    /// The IPFS daemon failed.
    #[error(transparent)]
    Ipfs(#[from] IpfsError),
    /// The IPFS daemon failed a call made over plain HTTP (`repo/stat`).
    #[error("{0}")]
    IpfsCall(String),
}

impl From<ConsensusError> for ClusterError {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::Follower => ClusterError::Follower,
            ConsensusError::QueueFull(n) => ClusterError::QueueFull(n),
            other => ClusterError::Consensus(other),
        }
    }
}

impl ClusterError {
    /// Whether the thing asked for does not exist: the pin (not in the
    /// pinset) or what an IPFS path names (the daemon could not resolve it).
    pub fn is_not_found(&self) -> bool {
        match self {
            ClusterError::NotFound => true,
            ClusterError::Ipfs(e) => {
                let text = e.to_string();
                text.contains("not found") || text.contains("could not resolve")
            }
            _ => false,
        }
    }
}
