//! The CRDT engine's [`Signer`] and [`Verifier`], backed by libp2p keys.
//!
//! A delta's author is the writer's peer id. Ed25519 peer ids inline the
//! public key (an identity multihash of its protobuf encoding), so the
//! receiver verifies a signature from the author bytes alone: no key
//! exchange, and any peer may relay the block.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use pincluster_crdt::{Signer, Verifier, VerifyError};

use crate::config::TrustedPeers;

/// Multihash code of the identity hash, which peer ids of small keys use.
const IDENTITY: u64 = 0x00;

/// Signs this peer's deltas with its libp2p key.
pub struct PeerSigner {
    keypair: Keypair,
    author: Vec<u8>,
}

impl std::fmt::Debug for PeerSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PeerSigner").finish_non_exhaustive()
    }
}

impl PeerSigner {
    /// A signer for `keypair`.
    pub fn new(keypair: Keypair) -> Self {
        let author = keypair.public().to_peer_id().to_bytes();
        Self { keypair, author }
    }
}

impl Signer for PeerSigner {
    fn author(&self) -> &[u8] {
        &self.author
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        // Ed25519 signing cannot fail; an empty signature would only make
        // every receiver refuse the block, never corrupt anything.
        self.keypair.sign(message).unwrap_or_default()
    }
}

/// Accepts deltas signed by trusted peers (and this peer).
#[derive(Debug)]
pub struct PeerVerifier {
    trusted: TrustedPeers,
    local: PeerId,
}

impl PeerVerifier {
    /// Trusts `trusted` and `local`.
    pub fn new(trusted: TrustedPeers, local: PeerId) -> Self {
        Self { trusted, local }
    }
}

impl Verifier for PeerVerifier {
    fn verify(&self, author: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let peer = PeerId::from_bytes(author).map_err(|_| VerifyError::MalformedAuthor)?;
        if !self.trusted.trusted_by(&self.local, &peer) {
            return Err(VerifyError::Untrusted);
        }
        let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
        if multihash.code() != IDENTITY {
            // A hashed peer id (RSA keys): the key is not in the id.
            return Err(VerifyError::MalformedAuthor);
        }
        let key = PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| VerifyError::MalformedAuthor)?;
        if key.verify(message, signature) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_by_author_and_trust() {
        let a = Keypair::generate_ed25519();
        let b = Keypair::generate_ed25519();
        let signer = PeerSigner::new(a.clone());
        let sig = signer.sign(b"msg");
        let a_id = a.public().to_peer_id();
        let b_id = b.public().to_peer_id();

        let trusting_all = PeerVerifier::new(TrustedPeers::All, b_id);
        assert_eq!(trusting_all.verify(signer.author(), b"msg", &sig), Ok(()));
        assert_eq!(
            trusting_all.verify(signer.author(), b"other", &sig),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            trusting_all.verify(b"junk", b"msg", &sig),
            Err(VerifyError::MalformedAuthor)
        );

        let trusting_b = PeerVerifier::new(TrustedPeers::Only(vec![b_id]), b_id);
        assert_eq!(
            trusting_b.verify(signer.author(), b"msg", &sig),
            Err(VerifyError::Untrusted)
        );
        let trusting_a = PeerVerifier::new(TrustedPeers::Only(vec![a_id]), b_id);
        assert_eq!(trusting_a.verify(signer.author(), b"msg", &sig), Ok(()));
    }
}
