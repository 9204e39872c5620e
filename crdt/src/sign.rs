//! Authorship of deltas. Every block names its author and carries the
//! author's signature, so any peer may relay a block and the receiver still
//! knows who wrote it. The engine knows nothing of key types: pincluster
//! plugs in its libp2p identity, tests plug in ed25519 keys directly.

/// Signs the deltas this replica writes.
pub trait Signer: Send + Sync {
    /// The author identity written into each block (a libp2p peer id's bytes
    /// in pincluster).
    fn author(&self) -> &[u8];
    /// Signs `message`.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// Checks the signature of received deltas and decides whether their author
/// is accepted at all (the trust policy lives here, so a trusted peer never
/// stores, let alone merges, a delta from an untrusted one).
pub trait Verifier: Send + Sync {
    /// Verifies `signature` by `author` over `message`.
    fn verify(&self, author: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError>;
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The author bytes do not name a key this verifier understands.
    #[error("author is not a valid identity")]
    MalformedAuthor,
    /// The author is valid but not trusted to write.
    #[error("author is not trusted")]
    Untrusted,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
}
