//! The delta block: its DAG-CBOR wire form, its CID, its signature, and
//! every check a received block must pass before the engine trusts it.
//!
//! A block is canonical DAG-CBOR. Everything that can be checked without the
//! rest of the DAG is checked here, in [`Block::decode`]; the one rule that
//! needs the parents (priority = largest parent height + 1) is checked at
//! merge time by the engine.

use cid::Cid;
use cid::multihash::Multihash;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use sha2::{Digest, Sha256};

use crate::error::BlockError;
use crate::sign::{Signer, Verifier};

/// The block format version this crate writes and accepts.
pub const FORMAT_VERSION: u64 = 1;
/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Length in bytes of every CID this engine accepts (v1, dag-cbor, sha2-256).
pub const CID_LEN: usize = 36;

/// Domain separation for signatures, so a delta signature can never be
/// replayed as a signature over anything else the peer signs with its key.
const SIGNING_CONTEXT: &[u8] = b"pincluster-crdt/delta/v1\0";

/// Limits applied to every block, local or received. Sizes are bounded so a
/// hostile peer cannot make the engine allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded block, in bytes.
    pub max_block_bytes: usize,
    /// Most operations (puts + deleted element ids) in one delta.
    pub max_ops: usize,
    /// Most parent links in one block.
    pub max_links: usize,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_block_bytes: 4 * 1024 * 1024,
            max_ops: 50_000,
            max_links: 4_096,
            max_key_bytes: 1_024,
            max_value_bytes: 256 * 1024,
        }
    }
}

/// One put: the key and its new value. The element id is the CID of the
/// block that carries it, so it is not on the wire. Encoded as the array
/// `[key, value]`: a struct would cost its field names on every put, and
/// the encoder a sort of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

impl Serialize for Put {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (Bytes::new(&self.key), Bytes::new(&self.value)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Put {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (key, value) = <(ByteBuf, ByteBuf)>::deserialize(d)?;
        Ok(Self {
            key: key.into_vec(),
            value: value.into_vec(),
        })
    }
}

/// One delete: the key and the ids (block CIDs) of exactly those elements of
/// it that the writer had observed. Encoded as the array `[key, [id, ...]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The key.
    pub key: Vec<u8>,
    /// Observed element ids, sorted and unique.
    pub ids: Vec<Cid>,
}

impl Serialize for Delete {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (Bytes::new(&self.key), &self.ids).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Delete {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (key, ids) = <(ByteBuf, Vec<Cid>)>::deserialize(d)?;
        Ok(Self {
            key: key.into_vec(),
            ids,
        })
    }
}

/// A decoded, verified delta block.
///
/// Field names are short because they are on the wire for every delta;
/// serde_ipld_dagcbor writes them in canonical order (length, then bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Format version ([`FORMAT_VERSION`]).
    pub v: u64,
    /// The writer's heads when it wrote this delta, sorted and unique.
    pub links: Vec<Cid>,
    /// Largest height among `links` + 1 (1 for a block without links).
    pub priority: u64,
    /// Puts, sorted by key, keys unique.
    pub puts: Vec<Put>,
    /// Deletes, sorted by key, keys unique.
    pub dels: Vec<Delete>,
    /// The author's identity as the [`Verifier`] understands it (a libp2p
    /// peer id in pincluster).
    #[serde(with = "serde_bytes")]
    pub author: Vec<u8>,
    /// Signature by `author` over the block encoded with an empty `sig`.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

impl Block {
    /// Number of operations, as counted against [`Limits::max_ops`].
    pub fn op_count(&self) -> usize {
        self.puts.len() + self.dels.iter().map(|d| d.ids.len().max(1)).sum::<usize>()
    }

    /// Sets the author, signs, encodes, and returns the CID, the bytes and
    /// the signed block. The engine's commit uses it; tools and tests use it
    /// to build blocks by hand (nothing here checks the content).
    pub fn seal(
        mut self,
        signer: &dyn Signer,
        limits: &Limits,
    ) -> Result<(Cid, Vec<u8>, Self), BlockError> {
        self.author = signer.author().to_vec();
        self.sig = Vec::new();
        let payload = encode(&self)?;
        self.sig = signer.sign(&signing_message(&payload));
        let bytes = match splice_signature(&payload, &self.sig) {
            Some(bytes) => bytes,
            None => encode(&self)?,
        };
        if bytes.len() > limits.max_block_bytes {
            return Err(BlockError::TooLarge {
                size: bytes.len(),
                max: limits.max_block_bytes,
            });
        }
        Ok((cid_of(&bytes), bytes, self))
    }

    /// Checks `bytes` against `cid`, decodes them and verifies everything
    /// that does not need the parents: format, canonical encoding, ordering,
    /// limits and the author's signature.
    pub fn decode(
        cid: &Cid,
        bytes: &[u8],
        limits: &Limits,
        verifier: &dyn Verifier,
    ) -> Result<Self, BlockError> {
        if bytes.len() > limits.max_block_bytes {
            return Err(BlockError::TooLarge {
                size: bytes.len(),
                max: limits.max_block_bytes,
            });
        }
        check_cid_kind(cid)?;
        if cid.hash().digest() != Sha256::digest(bytes).as_slice() {
            return Err(BlockError::HashMismatch { cid: *cid });
        }
        let mut block: Block = serde_ipld_dagcbor::from_slice(bytes)?;
        if block.v != FORMAT_VERSION {
            return Err(BlockError::UnsupportedVersion(block.v));
        }
        if encode(&block)? != bytes {
            return Err(BlockError::NonCanonical);
        }
        block.validate(cid, limits)?;
        let sig = std::mem::take(&mut block.sig);
        let payload = encode(&block)?;
        verifier.verify(&block.author, &signing_message(&payload), &sig)?;
        block.sig = sig;
        Ok(block)
    }

    fn validate(&self, cid: &Cid, limits: &Limits) -> Result<(), BlockError> {
        if self.links.len() > limits.max_links {
            return Err(BlockError::TooManyLinks {
                count: self.links.len(),
                max: limits.max_links,
            });
        }
        for link in &self.links {
            check_cid_kind(link).map_err(|_| BlockError::UnsupportedLink(*link))?;
            if link == cid {
                return Err(BlockError::SelfLink);
            }
        }
        if !strictly_sorted(self.links.iter()) {
            return Err(BlockError::Unsorted("links"));
        }
        if self.puts.is_empty() && self.dels.is_empty() {
            return Err(BlockError::EmptyDelta);
        }
        let ops = self.op_count();
        if ops > limits.max_ops {
            return Err(BlockError::TooManyOps {
                count: ops,
                max: limits.max_ops,
            });
        }
        let keys = self
            .puts
            .iter()
            .map(|p| &p.key)
            .chain(self.dels.iter().map(|d| &d.key));
        for key in keys {
            if key.len() > limits.max_key_bytes {
                return Err(BlockError::KeyTooLarge {
                    size: key.len(),
                    max: limits.max_key_bytes,
                });
            }
        }
        for put in &self.puts {
            if put.value.len() > limits.max_value_bytes {
                return Err(BlockError::ValueTooLarge {
                    size: put.value.len(),
                    max: limits.max_value_bytes,
                });
            }
        }
        if !strictly_sorted(self.puts.iter().map(|p| &p.key)) {
            return Err(BlockError::Unsorted("puts"));
        }
        if !strictly_sorted(self.dels.iter().map(|d| &d.key)) {
            return Err(BlockError::Unsorted("dels"));
        }
        for del in &self.dels {
            if del.ids.is_empty() {
                return Err(BlockError::EmptyDelete);
            }
            for id in &del.ids {
                check_cid_kind(id)?;
            }
            if !strictly_sorted(del.ids.iter()) {
                return Err(BlockError::Unsorted("delete ids"));
            }
        }
        // A root block has height 1; a block with parents is at least 2. The
        // exact value needs the parents' heights and is checked at merge.
        let plausible = if self.links.is_empty() {
            self.priority == 1
        } else {
            self.priority >= 2 && self.priority < u64::MAX
        };
        if !plausible {
            return Err(BlockError::InvalidPriority {
                priority: self.priority,
                expected: None,
            });
        }
        Ok(())
    }
}

/// The parent links of an encoded block, read without decoding its
/// operations: what a peer walking ancestors to serve them needs.
pub fn links_of(bytes: &[u8]) -> Result<Vec<Cid>, BlockError> {
    #[derive(Deserialize)]
    struct Links {
        links: Vec<Cid>,
    }
    Ok(serde_ipld_dagcbor::from_slice::<Links>(bytes)?.links)
}

/// The CID of a block's bytes: v1, dag-cbor, sha2-256.
pub fn cid_of(bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    // A 32-byte digest always fits a 64-byte multihash.
    let mh = Multihash::<64>::wrap(SHA2_256, &digest).expect("sha2-256 digest fits a multihash");
    Cid::new_v1(DAG_CBOR, mh)
}

/// Accepts only the one kind of CID blocks are addressed by, which also
/// makes every stored CID exactly [`CID_LEN`] bytes.
pub(crate) fn check_cid_kind(cid: &Cid) -> Result<(), BlockError> {
    let ok = cid.version() == cid::Version::V1
        && cid.codec() == DAG_CBOR
        && cid.hash().code() == SHA2_256
        && cid.hash().size() == 32;
    if ok {
        Ok(())
    } else {
        Err(BlockError::UnsupportedCid(*cid))
    }
}

fn encode(block: &Block) -> Result<Vec<u8>, BlockError> {
    Ok(serde_ipld_dagcbor::to_vec(block)?)
}

/// The canonical encoding of a version-1 block starts with its map header,
/// `v: 1`, then the `sig` key (the shortest keys sort first), so the signed
/// block is the unsigned encoding with the empty signature replaced. This
/// saves encoding a large delta twice. `None` if the prefix is not the
/// expected one; the caller then encodes in full.
fn splice_signature(payload: &[u8], sig: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: [u8; 9] = [0xA7, 0x61, b'v', 0x01, 0x63, b's', b'i', b'g', 0x40];
    if !payload.starts_with(&PREFIX) || sig.len() > u16::MAX as usize {
        return None;
    }
    let mut out = Vec::with_capacity(payload.len() + sig.len() + 3);
    out.extend_from_slice(&PREFIX[..8]);
    match sig.len() {
        n @ 0..=23 => out.push(0x40 | n as u8),
        n @ 24..=255 => out.extend_from_slice(&[0x58, n as u8]),
        n => {
            out.push(0x59);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(sig);
    out.extend_from_slice(&payload[PREFIX.len()..]);
    Some(out)
}

/// What is signed: the context string and the sha2-256 of the unsigned
/// encoding. Signing the digest rather than the payload keeps ed25519 from
/// hashing a multi-megabyte delta twice with sha512.
fn signing_message(payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + 32);
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(&Sha256::digest(payload));
    msg
}

fn strictly_sorted<T: Ord>(mut items: impl Iterator<Item = T>) -> bool {
    let Some(mut prev) = items.next() else {
        return true;
    };
    for item in items {
        if item <= prev {
            return false;
        }
        prev = item;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spliced_signature_equals_a_full_encoding() {
        for sig_len in [0usize, 5, 23, 24, 64, 255, 256, 1000] {
            let mut block = Block {
                v: FORMAT_VERSION,
                links: vec![cid_of(b"parent")],
                priority: 2,
                puts: vec![Put {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                }],
                dels: vec![],
                author: b"someone".to_vec(),
                sig: vec![],
            };
            let payload = encode(&block).unwrap();
            block.sig = vec![7; sig_len];
            assert_eq!(
                splice_signature(&payload, &block.sig),
                Some(encode(&block).unwrap())
            );
        }
    }
}
