//! What a block is made of: its codec, whether its bytes match its CID,
//! and the CIDs it links to (dag-pb, raw, dag-cbor). The block store's
//! pinning and garbage collection walk DAGs with [`links`].

use cid::Cid;
use cid::multihash::Multihash;
use sha2::Digest as _;

/// Multicodec codes of the codecs the node understands.
pub const DAG_PB: u64 = 0x70;
pub const RAW: u64 = 0x55;
pub const DAG_CBOR: u64 = 0x71;
pub const DAG_JSON: u64 = 0x0129;
/// Multihash codes.
pub const SHA2_256: u64 = 0x12;
const SHA2_512: u64 = 0x13;
const IDENTITY: u64 = 0x00;

/// The largest block the node stores or serves: what bitswap moves
/// between nodes (Kubo refuses larger blocks on `block/put` too).
pub const MAX_BLOCK: usize = 2 << 20;

/// Why a block was refused or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {cid}: its bytes do not match the hash in its CID")]
    HashMismatch { cid: Cid },
    #[error("block {cid}: unsupported hash function {code:#x}")]
    UnsupportedHash { cid: Cid, code: u64 },
    #[error("block of {size} bytes is larger than the {MAX_BLOCK} bytes accepted")]
    TooLarge { size: usize },
    #[error("block {cid}: cannot read its links: {detail}")]
    Links { cid: Cid, detail: String },
}

/// The CIDv1 of `data` with `codec`, hashed with sha2-256; CIDv0 when
/// `v0` (dag-pb only, as CIDv0 cannot name anything else).
pub fn cid_for(codec: u64, data: &[u8], v0: bool) -> Cid {
    let digest = sha2::Sha256::digest(data);
    // A 32-byte digest always fits a 64-byte multihash.
    let mh = Multihash::<64>::wrap(SHA2_256, &digest).unwrap_or_default();
    if v0 && codec == DAG_PB {
        // A sha2-256 multihash always makes a valid CIDv0.
        Cid::new_v0(mh).unwrap_or_else(|_| Cid::new_v1(codec, mh))
    } else {
        Cid::new_v1(codec, mh)
    }
}

/// A block whose CID was computed here from its bytes ([`Block::hashed`]):
/// the store can take it without hashing it again, which is half the
/// hashing of an add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    cid: Cid,
    data: Vec<u8>,
}

impl Block {
    /// `data` as a block of `codec`, named as [`cid_for`] names it.
    pub fn hashed(codec: u64, data: Vec<u8>, v0: bool) -> Block {
        Block {
            cid: cid_for(codec, &data, v0),
            data,
        }
    }

    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

/// Checks `data` against `cid`: size, then its multihash.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    if data.len() > MAX_BLOCK {
        return Err(BlockError::TooLarge { size: data.len() });
    }
    let mh = cid.hash();
    let code = mh.code();
    match code {
        IDENTITY => check(cid, mh.digest() == data),
        SHA2_256 => check(cid, sha2::Sha256::digest(data).as_slice() == mh.digest()),
        SHA2_512 => check(cid, sha2::Sha512::digest(data).as_slice() == mh.digest()),
        _ => Err(BlockError::UnsupportedHash { cid: *cid, code }),
    }
}

fn check(cid: &Cid, ok: bool) -> Result<(), BlockError> {
    if ok {
        Ok(())
    } else {
        Err(BlockError::HashMismatch { cid: *cid })
    }
}

/// The CIDs `data` (the block `cid`) links to, in order. Codecs without
/// links (raw, and those the node does not know) have none.
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, BlockError> {
    let bad = |detail: String| BlockError::Links { cid: *cid, detail };
    match cid.codec() {
        DAG_PB => Ok(crate::ipfs::pb::PbNode::decode(data)
            .map_err(|e| bad(e.to_string()))?
            .links
            .into_iter()
            .map(|l| l.cid)
            .collect()),
        DAG_CBOR => {
            let value: ipld_core::ipld::Ipld =
                serde_ipld_dagcbor::from_slice(data).map_err(|e| bad(e.to_string()))?;
            let mut out = Vec::new();
            collect(&value, &mut out);
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

fn collect(value: &ipld_core::ipld::Ipld, out: &mut Vec<Cid>) {
    use ipld_core::ipld::Ipld;
    match value {
        Ipld::Link(cid) => out.push(*cid),
        Ipld::List(items) => items.iter().for_each(|v| collect(v, out)),
        Ipld::Map(map) => map.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_checked_against_their_cid() {
        let cid = cid_for(RAW, b"hello", false);
        assert_eq!(verify(&cid, b"hello"), Ok(()));
        assert_eq!(
            verify(&cid, b"hellO"),
            Err(BlockError::HashMismatch { cid })
        );
        let huge = vec![0u8; MAX_BLOCK + 1];
        assert!(matches!(
            verify(&cid, &huge),
            Err(BlockError::TooLarge { .. })
        ));
    }

    #[test]
    fn dag_cbor_links_are_found_anywhere_in_the_value() {
        use ipld_core::ipld::Ipld;
        let a = cid_for(RAW, b"a", false);
        let b = cid_for(RAW, b"b", false);
        let value = Ipld::Map(
            [
                ("x".to_string(), Ipld::Link(a)),
                (
                    "y".to_string(),
                    Ipld::List(vec![Ipld::Integer(1), Ipld::Link(b)]),
                ),
            ]
            .into_iter()
            .collect(),
        );
        let bytes = serde_ipld_dagcbor::to_vec(&value).unwrap();
        let cid = cid_for(DAG_CBOR, &bytes, false);
        assert_eq!(links(&cid, &bytes).unwrap(), vec![a, b]);
        assert!(links(&cid, b"\xff").is_err());
    }
}
