//! Typed errors of the engine. Nothing that comes from a peer or from disk
//! panics: it ends up as one of these.

use std::collections::TryReserveError;
use std::convert::Infallible;

use cid::Cid;

use crate::sign::VerifyError;
use crate::store::StoreError;

/// Why a block was refused. The store is never touched by a refused block.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The block is bigger than [`crate::Limits::max_block_bytes`].
    #[error("block of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// Blocks are addressed by CIDv1, dag-cbor, sha2-256 and nothing else.
    #[error("unsupported CID {0}: blocks are CIDv1 dag-cbor sha2-256")]
    UnsupportedCid(Cid),
    /// The bytes do not hash to the CID they were offered under.
    #[error("block bytes do not match CID {cid}")]
    HashMismatch { cid: Cid },
    /// Not DAG-CBOR, or not the shape of a delta block.
    #[error("malformed block: {0}")]
    Decode(#[from] serde_ipld_dagcbor::DecodeError<Infallible>),
    /// Encoding a block failed (allocation).
    #[error("cannot encode block: {0}")]
    Encode(#[from] serde_ipld_dagcbor::EncodeError<TryReserveError>),
    /// A format version this build does not know.
    #[error("unsupported block format version {0} (this build reads version 1)")]
    UnsupportedVersion(u64),
    /// Valid CBOR but not the canonical DAG-CBOR encoding of its content.
    #[error("block is not canonical DAG-CBOR")]
    NonCanonical,
    /// Links, puts, deletes or ids out of order or repeated.
    #[error("{0} are not sorted and unique")]
    Unsorted(&'static str),
    /// A parent link of a kind blocks cannot have.
    #[error("link {0} is not a delta block CID")]
    UnsupportedLink(Cid),
    /// A block naming itself as its parent.
    #[error("block links to itself")]
    SelfLink,
    /// Too many parent links.
    #[error("{count} links exceed the limit of {max}")]
    TooManyLinks { count: usize, max: usize },
    /// A delta with no operation.
    #[error("delta has no operation")]
    EmptyDelta,
    /// A delete naming no element.
    #[error("delete names no element id")]
    EmptyDelete,
    /// Too many operations.
    #[error("{count} operations exceed the limit of {max}")]
    TooManyOps { count: usize, max: usize },
    /// A key over [`crate::Limits::max_key_bytes`].
    #[error("key of {size} bytes exceeds the limit of {max}")]
    KeyTooLarge { size: usize, max: usize },
    /// A value over [`crate::Limits::max_value_bytes`].
    #[error("value of {size} bytes exceeds the limit of {max}")]
    ValueTooLarge { size: usize, max: usize },
    /// The priority is not the largest parent height + 1.
    #[error("priority {priority} is invalid (expected {expected:?})")]
    InvalidPriority {
        priority: u64,
        expected: Option<u64>,
    },
    /// The block builds on a block that was refused.
    #[error("block builds on refused block {0}")]
    RejectedParent(Cid),
    /// The signature does not verify, or its author is not accepted.
    #[error(transparent)]
    Signature(#[from] VerifyError),
}

/// Errors of the engine's operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A block was refused.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Stored data that this engine wrote no longer makes sense.
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
    /// The store was written by a newer, incompatible version.
    #[error("store format version {found} is not supported (this build uses {supported})")]
    StoreVersion { found: u64, supported: u64 },
    /// [`crate::Engine::install_state`] on a replica that already holds state.
    #[error("a state can only be installed into an empty replica")]
    NotEmpty,
    /// A state handed to [`crate::Engine::install_state`] is malformed.
    #[error("invalid state to install: {0}")]
    InvalidState(&'static str),
    /// A snapshot was refused; nothing changed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Why a snapshot (its manifest or one of its chunks) was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Bigger than the limit.
    #[error("snapshot part of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// Not a CIDv1 dag-cbor sha2-256.
    #[error("unsupported CID {0} in a snapshot")]
    UnsupportedCid(Cid),
    /// The bytes do not hash to the CID they were asked for.
    #[error("snapshot chunk bytes do not match CID {cid}")]
    HashMismatch { cid: Cid },
    /// Not the DAG-CBOR shape of a manifest or chunk.
    #[error("malformed snapshot part: {0}")]
    Decode(String),
    /// Could not be encoded.
    #[error("cannot encode snapshot part: {0}")]
    Encode(String),
    /// A version this build does not read.
    #[error("unsupported snapshot format version {0} (this build reads version 1)")]
    UnsupportedVersion(u64),
    /// The manifest is not canonical DAG-CBOR.
    #[error("snapshot manifest is not canonical DAG-CBOR")]
    NonCanonical,
    /// The producer's signature or trust failed.
    #[error("snapshot signature: {0}")]
    Signature(#[from] VerifyError),
    /// A chunk the manifest names has not been staged.
    #[error("snapshot chunk {0} is missing")]
    MissingChunk(Cid),
    /// The content contradicts itself or the manifest.
    #[error("invalid snapshot: {0}")]
    Invalid(&'static str),
}

/// Why an operation could not be added to a [`crate::Batch`]; the batch is
/// left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch holds as many operations as one delta may.
    #[error("batch is full ({max} operations)")]
    FullOps { max: usize },
    /// The batch holds as many bytes as one delta may.
    #[error("batch is full ({max} bytes)")]
    FullBytes { max: usize },
    /// A key over the limit.
    #[error("key of {size} bytes exceeds the limit of {max}")]
    KeyTooLarge { size: usize, max: usize },
    /// A value over the limit.
    #[error("value of {size} bytes exceeds the limit of {max}")]
    ValueTooLarge { size: usize, max: usize },
}
