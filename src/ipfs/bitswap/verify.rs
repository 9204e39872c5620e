//! Every block is checked against its CID: the CID of a received block is
//! computed from its bytes with the hash its prefix names, so a block
//! whose bytes are wrong gets a CID nobody wanted and is dropped. Hashes
//! we cannot compute are refused by name, never accepted unchecked.

use cid::Cid;
use cid::multihash::Multihash;
use sha2::Digest;

use super::message::read_varint;

/// `sha2-256`: the hash of CIDv0 and of nearly every IPFS block.
pub const SHA2_256: u64 = 0x12;
/// `sha2-512`.
pub const SHA2_512: u64 = 0x13;

/// Why a block cannot be given a trusted CID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The multihash function is not one this node computes.
    #[error("unsupported multihash function 0x{0:x} (supported: sha2-256, sha2-512)")]
    UnsupportedHash(u64),
    /// The prefix is not a CID prefix.
    #[error("bad CID prefix: {0}")]
    BadPrefix(String),
    /// The bytes do not hash to the CID.
    #[error("block bytes do not match {0}")]
    Mismatch(Cid),
}

/// The digest of `data` under multihash function `code`, truncated to
/// `len` bytes as multihash allows.
fn digest(code: u64, len: usize, data: &[u8]) -> Result<Multihash<64>, VerifyError> {
    let full: Vec<u8> = match code {
        SHA2_256 => sha2::Sha256::digest(data).to_vec(),
        SHA2_512 => sha2::Sha512::digest(data).to_vec(),
        other => return Err(VerifyError::UnsupportedHash(other)),
    };
    if len == 0 || len > full.len() {
        return Err(VerifyError::BadPrefix(format!(
            "digest length {len} for hash 0x{code:x}"
        )));
    }
    Multihash::wrap(code, &full[..len]).map_err(|e| VerifyError::BadPrefix(e.to_string()))
}

/// Whether this node can check blocks of `cid`.
pub fn supported(cid: &Cid) -> Result<(), VerifyError> {
    match cid.hash().code() {
        SHA2_256 | SHA2_512 => Ok(()),
        other => Err(VerifyError::UnsupportedHash(other)),
    }
}

/// The CID of `data` under a Bitswap block prefix (version, codec, hash
/// code, digest length).
pub fn cid_of(prefix: &[u8], data: &[u8]) -> Result<Cid, VerifyError> {
    let bad = |e: super::message::DecodeError| VerifyError::BadPrefix(e.to_string());
    let mut at = 0;
    let mut next = || -> Result<u64, VerifyError> {
        let (v, used) = read_varint(&prefix[at..]).map_err(bad)?;
        at += used;
        Ok(v)
    };
    let (version, codec, code, len) = (next()?, next()?, next()?, next()?);
    let len = usize::try_from(len).map_err(|_| VerifyError::BadPrefix("digest length".into()))?;
    let hash = digest(code, len, data)?;
    match version {
        0 if codec == 0x70 && code == SHA2_256 && len == 32 => {
            Cid::new_v0(hash).map_err(|e| VerifyError::BadPrefix(e.to_string()))
        }
        1 => Ok(Cid::new_v1(codec, hash)),
        _ => Err(VerifyError::BadPrefix(format!(
            "CID version {version} with codec 0x{codec:x}"
        ))),
    }
}

/// The CIDv0 of a 1.0.0 bare block (dag-pb, sha2-256).
pub fn cid_v0(data: &[u8]) -> Cid {
    let hash = Multihash::wrap(SHA2_256, &sha2::Sha256::digest(data))
        .expect("a 32-byte digest fits a multihash");
    Cid::new_v0(hash).expect("sha2-256 is CIDv0's hash")
}

/// The CIDv1 of `data` with `codec` and sha2-256.
pub fn cid_v1(codec: u64, data: &[u8]) -> Cid {
    let hash = Multihash::wrap(SHA2_256, &sha2::Sha256::digest(data))
        .expect("a 32-byte digest fits a multihash");
    Cid::new_v1(codec, hash)
}

/// Checks that `data` hashes to `cid`.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), VerifyError> {
    let hash = digest(cid.hash().code(), usize::from(cid.hash().size()), data)?;
    if &hash == cid.hash() {
        Ok(())
    } else {
        Err(VerifyError::Mismatch(*cid))
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::prefix_of;
    use super::*;

    #[test]
    fn the_prefix_and_the_bytes_give_back_the_cid() {
        let v1 = cid_v1(0x55, b"hello");
        assert_eq!(cid_of(&prefix_of(&v1), b"hello").unwrap(), v1);
        let v0 = cid_v0(b"hello");
        assert_eq!(cid_of(&prefix_of(&v0), b"hello").unwrap(), v0);
        assert!(v0.to_string().starts_with("Qm"));
        verify(&v1, b"hello").unwrap();
        assert_eq!(verify(&v1, b"hellO"), Err(VerifyError::Mismatch(v1)));
    }

    #[test]
    fn unknown_hashes_are_refused_by_name() {
        // blake3 (0x1e): a real function this node does not compute.
        let cid = Cid::new_v1(0x55, Multihash::wrap(0x1e, &[0u8; 32]).unwrap());
        assert_eq!(verify(&cid, b"x"), Err(VerifyError::UnsupportedHash(0x1e)));
        assert_eq!(supported(&cid), Err(VerifyError::UnsupportedHash(0x1e)));
        let err = cid_of(&prefix_of(&cid), b"x").unwrap_err();
        assert!(err.to_string().contains("0x1e"), "{err}");
        assert!(cid_of(&[0x01], b"x").is_err());
        assert!(cid_of(&[0x01, 0x55, 0x12, 0x40], b"x").is_err());
    }
}
