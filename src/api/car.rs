//! A streaming reader of CAR files, for `POST /add?format=car`.
//!
//! A CARv1 is a varint-length-prefixed DAG-CBOR header `{roots, version:
//! 1}` followed by sections, each a varint length, a CID and the block's
//! bytes. A CARv2 wraps a CARv1 between a fixed pragma plus a 40-byte
//! header (which says where the CARv1 payload starts and how long it is)
//! and an optional index; the reader skips to the payload and stops at
//! its end, never reading the index.
//!
//! The upload comes from an HTTP client, so nothing in it is trusted: the
//! reader holds at most one section at a time, refuses headers and
//! sections over fixed limits, and checks every block's bytes against the
//! multihash of its CID before handing it out. Every malformed input is a
//! [`CarError`], never a panic.

use std::fmt::Display;

use bytes::{Buf, Bytes, BytesMut};
use cid::Cid;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The largest CAR header accepted. A header with one root is under a
/// hundred bytes; the limit only stops a hostile length.
pub const MAX_HEADER: u64 = 16 << 10;
/// The largest block accepted: 2 MiB, what bitswap moves between daemons
/// (a bigger block could be stored but never fetched by another peer).
pub const MAX_BLOCK: usize = 2 << 20;
/// The largest CID: version, codec, multihash code and length varints and
/// a digest of up to 64 bytes.
const MAX_CID: usize = 4 * 9 + 64;
/// The largest section: a CID and a block.
pub const MAX_SECTION: u64 = (MAX_BLOCK + MAX_CID) as u64;
/// CARv2's pragma (a CARv1-style header `{version: 2}`) and fixed header.
const V2_PRAGMA_LEN: u64 = 11;
const V2_HEADER_LEN: usize = 40;
/// Varints longer than this do not fit the 63 bits multiformats allow.
const MAX_VARINT: usize = 9;

/// Multihash codes the reader can verify.
const IDENTITY: u64 = 0x00;
const SHA2_256: u64 = 0x12;
const SHA2_512: u64 = 0x13;

/// Why a CAR upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// The upload itself failed (the client went away, bad multipart).
    #[error("reading the CAR: {0}")]
    Read(String),
    /// The input stopped before the end of something it announced.
    #[error("the CAR ends in the middle of {0}")]
    Truncated(&'static str),
    /// A varint longer than 9 bytes or not minimally encoded.
    #[error("the CAR has an invalid varint for {0}")]
    Varint(&'static str),
    #[error("the CAR header is {0} bytes long, more than the {MAX_HEADER} accepted")]
    HeaderTooLarge(u64),
    #[error("the CAR header is not a DAG-CBOR {{roots, version}} map: {0}")]
    Header(String),
    #[error("unsupported CAR version {0}: versions 1 and 2 are")]
    Version(u64),
    /// The reference's rule, and its words.
    #[error("only CAR files with a single root are supported (this one has {0})")]
    Roots(usize),
    #[error("invalid CARv2 header: {0}")]
    V2(&'static str),
    #[error("a CAR section is {0} bytes long, more than the {MAX_SECTION} accepted")]
    SectionTooLarge(u64),
    #[error("a CAR section is empty")]
    EmptySection,
    #[error("a CAR section starts with an invalid CID: {0}")]
    Cid(String),
    #[error("block {cid}: {len} bytes, more than the {MAX_BLOCK} accepted")]
    BlockTooLarge { cid: Cid, len: usize },
    #[error("block {cid}: cannot verify {detail}; sha2-256, sha2-512 and identity can be")]
    UnsupportedHash { cid: Cid, detail: String },
    /// What a hostile or corrupted upload gets: its bytes are not the
    /// block its CID names.
    #[error("block {0}: its bytes do not match the hash in its CID")]
    HashMismatch(Cid),
}

/// One verified block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub cid: Cid,
    /// The block's bytes.
    pub data: Bytes,
    /// The whole section (CID then data), to write it out again.
    section: Bytes,
}

impl Block {
    /// The block as a CARv1 section: its length varint, then CID and data.
    pub fn to_section(&self) -> [Bytes; 2] {
        [
            varint(self.section.len() as u64).into(),
            self.section.clone(),
        ]
    }
}

/// The CAR header's fields. `roots` is optional: a CARv2 pragma has none.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roots: Option<Vec<Cid>>,
    version: u64,
}

/// The CARv1 header of a CAR with the single root `root`, length-prefixed.
pub fn v1_header(root: Cid) -> Vec<u8> {
    let header = Header {
        roots: Some(vec![root]),
        version: 1,
    };
    // A struct of a CID list and an integer always encodes.
    let body = serde_ipld_dagcbor::to_vec(&header).unwrap_or_default();
    let mut out = varint(body.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// The unsigned varint encoding of `n`.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_VARINT);
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a CAR from a stream of byte chunks (an HTTP body, a multipart
/// field), one block at a time.
#[derive(Debug)]
pub struct CarReader<S> {
    source: S,
    /// Bytes received and not consumed yet.
    buf: BytesMut,
    /// The source has no more bytes.
    ended: bool,
    /// CARv2: bytes of the CARv1 payload not consumed yet. `None` for a
    /// CARv1, which runs to the end of the source.
    remaining: Option<u64>,
    root: Cid,
}

impl<S, E> CarReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    /// Reads the header (CARv1, or CARv2 and its payload's header) and
    /// checks it names exactly one root.
    pub async fn new(source: S) -> Result<Self, CarError> {
        let mut reader = CarReader {
            source,
            buf: BytesMut::new(),
            ended: false,
            remaining: None,
            root: Cid::default(),
        };
        let (len, header) = reader.header().await?;
        let header = match header.version {
            1 => header,
            2 => {
                reader.enter_v2_payload(len).await?;
                let (_, inner) = reader.header().await?;
                if inner.version != 1 {
                    return Err(CarError::V2("its payload is not a CARv1"));
                }
                inner
            }
            other => return Err(CarError::Version(other)),
        };
        let roots = header.roots.unwrap_or_default();
        match roots.as_slice() {
            [root] => reader.root = *root,
            _ => return Err(CarError::Roots(roots.len())),
        }
        Ok(reader)
    }

    /// The CAR's single root.
    pub fn root(&self) -> Cid {
        self.root
    }

    /// The source, with whatever the reader has not consumed of it.
    pub fn into_inner(self) -> S {
        self.source
    }

    /// The next block, verified against its CID; `None` at the end.
    pub async fn next_block(&mut self) -> Result<Option<Block>, CarError> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        let Some(len) = self.varint("a section length").await? else {
            return Ok(None);
        };
        if len == 0 {
            return Err(CarError::EmptySection);
        }
        if len > MAX_SECTION {
            return Err(CarError::SectionTooLarge(len));
        }
        // Within MAX_SECTION, so it fits in memory and in usize.
        let len = len as usize;
        if !self.fill(len).await? {
            return Err(CarError::Truncated("a section"));
        }
        let section = self.take(len, "a section")?.freeze();
        let mut rest = &section[..];
        let cid = Cid::read_bytes(&mut rest).map_err(|e| CarError::Cid(e.to_string()))?;
        let data = section.slice(len - rest.len()..);
        if data.len() > MAX_BLOCK {
            return Err(CarError::BlockTooLarge {
                cid,
                len: data.len(),
            });
        }
        verify(&cid, &data)?;
        Ok(Some(Block { cid, data, section }))
    }

    /// A length-prefixed DAG-CBOR header and its length.
    async fn header(&mut self) -> Result<(u64, Header), CarError> {
        let len = self
            .varint("the header length")
            .await?
            .ok_or(CarError::Truncated("the header"))?;
        if len > MAX_HEADER {
            return Err(CarError::HeaderTooLarge(len));
        }
        let len_usize = len as usize;
        if !self.fill(len_usize).await? {
            return Err(CarError::Truncated("the header"));
        }
        let bytes = self.take(len_usize, "the header")?;
        let header = serde_ipld_dagcbor::from_slice::<Header>(&bytes)
            .map_err(|e| CarError::Header(e.to_string()))?;
        Ok((len, header))
    }

    /// After a CARv2 pragma of `pragma_len` bytes: reads the fixed header,
    /// skips to the CARv1 payload and bounds the reads to it.
    async fn enter_v2_payload(&mut self, pragma_len: u64) -> Result<(), CarError> {
        if pragma_len + 1 != V2_PRAGMA_LEN {
            return Err(CarError::V2("the pragma is not the standard one"));
        }
        if !self.fill(V2_HEADER_LEN).await? {
            return Err(CarError::Truncated("the CARv2 header"));
        }
        let mut header = self.take(V2_HEADER_LEN, "the CARv2 header")?;
        header.advance(16); // characteristics: only the index's, unused here
        let data_offset = header.get_u64_le();
        let data_size = header.get_u64_le();
        let mut skip = data_offset
            .checked_sub(V2_PRAGMA_LEN + V2_HEADER_LEN as u64)
            .ok_or(CarError::V2("the payload starts inside the header"))?;
        // Padding before the payload: dropped as it streams in.
        while skip > 0 {
            if !self.fill(1).await? {
                return Err(CarError::Truncated("the CARv2 padding"));
            }
            let n = self
                .buf
                .len()
                .min(usize::try_from(skip).unwrap_or(usize::MAX));
            self.buf.advance(n);
            skip -= n as u64;
        }
        if data_size == 0 {
            return Err(CarError::V2("the payload is empty"));
        }
        self.remaining = Some(data_size);
        Ok(())
    }

    /// An unsigned varint; `None` when the input ends cleanly before it.
    async fn varint(&mut self, what: &'static str) -> Result<Option<u64>, CarError> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT {
            if !self.fill(i + 1).await? {
                return if i == 0 {
                    Ok(None)
                } else {
                    Err(CarError::Truncated(what))
                };
            }
            let byte = self.buf[i];
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(CarError::Varint(what));
                }
                self.take(i + 1, what)?;
                return Ok(Some(value));
            }
        }
        Err(CarError::Varint(what))
    }

    /// Reads until `n` bytes are buffered; false if the input ends first.
    async fn fill(&mut self, n: usize) -> Result<bool, CarError> {
        while self.buf.len() < n {
            if self.ended {
                return Ok(false);
            }
            match self.source.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(CarError::Read(e.to_string())),
                None => self.ended = true,
            }
        }
        Ok(true)
    }

    /// Consumes `n` buffered bytes, which must lie within a CARv2 payload.
    fn take(&mut self, n: usize, what: &'static str) -> Result<BytesMut, CarError> {
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining = remaining
                .checked_sub(n as u64)
                .ok_or(CarError::Truncated(what))?;
        }
        Ok(self.buf.split_to(n))
    }
}

/// Checks that `data` hashes to `cid`'s multihash.
fn verify(cid: &Cid, data: &[u8]) -> Result<(), CarError> {
    let mh = cid.hash();
    let expected = mh.digest();
    let matches = match mh.code() {
        IDENTITY => expected == data,
        SHA2_256 => full_digest(cid, &sha2::Sha256::digest(data), expected)?,
        SHA2_512 => full_digest(cid, &sha2::Sha512::digest(data), expected)?,
        code => {
            return Err(CarError::UnsupportedHash {
                cid: *cid,
                detail: format!("multihash code {code:#x}"),
            });
        }
    };
    if matches {
        Ok(())
    } else {
        Err(CarError::HashMismatch(*cid))
    }
}

/// Compares a whole digest; a truncated one in the CID is refused.
fn full_digest(cid: &Cid, actual: &[u8], expected: &[u8]) -> Result<bool, CarError> {
    if actual.len() != expected.len() {
        return Err(CarError::UnsupportedHash {
            cid: *cid,
            detail: format!(
                "a digest of {} bytes (truncated from {})",
                expected.len(),
                actual.len()
            ),
        });
    }
    Ok(actual == expected)
}

/// What the reference reports as `size` for a CAR's root: the UnixFS
/// `filesize` when the root is a dag-pb node whose data is UnixFS, else 0
/// (directories carry none; raw and other codecs are not UnixFS nodes).
pub fn unixfs_file_size(block: &Block) -> u64 {
    const DAG_PB: u64 = 0x70;
    if block.cid.codec() != DAG_PB {
        return 0;
    }
    // PBNode: Data = 1 (bytes). UnixFS Data: filesize = 3 (varint).
    let Some(Field::Bytes(data)) = proto_field(&block.data, 1) else {
        return 0;
    };
    match proto_field(data, 3) {
        Some(Field::Varint(size)) => size,
        _ => 0,
    }
}

/// A protobuf field value we care about.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The last value of field `number` in protobuf message `msg` (the last
/// wins, as protobuf merges); `None` if absent or the message is malformed.
fn proto_field(mut msg: &[u8], number: u64) -> Option<Field<'_>> {
    let mut found = None;
    while !msg.is_empty() {
        let key = proto_varint(&mut msg)?;
        let value = match key & 7 {
            0 => Field::Varint(proto_varint(&mut msg)?),
            1 => Field::Bytes(split(&mut msg, 8)?),
            2 => {
                let len = usize::try_from(proto_varint(&mut msg)?).ok()?;
                Field::Bytes(split(&mut msg, len)?)
            }
            5 => Field::Bytes(split(&mut msg, 4)?),
            _ => return None,
        };
        if key >> 3 == number {
            found = Some(value);
        }
    }
    found
}

fn split<'a>(msg: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if msg.len() < n {
        return None;
    }
    let (head, tail) = msg.split_at(n);
    *msg = tail;
    Some(head)
}

fn proto_varint(msg: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = msg.split_first()?;
        *msg = rest;
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use cid::multihash::Multihash;

    const RAW: u64 = 0x55;
    const DAG_PB: u64 = 0x70;

    fn sha256_cid(codec: u64, data: &[u8]) -> Cid {
        let digest = sha2::Sha256::digest(data);
        Cid::new_v1(codec, Multihash::wrap(SHA2_256, &digest).unwrap())
    }

    /// A block as a test writes it.
    type Raw = (Cid, Vec<u8>);

    /// A CARv1 of `roots` and `(cid, data)` sections.
    fn car(roots: &[Cid], blocks: &[Raw]) -> Vec<u8> {
        let header = serde_ipld_dagcbor::to_vec(&Header {
            roots: Some(roots.to_vec()),
            version: 1,
        })
        .unwrap();
        let mut out = varint(header.len() as u64);
        out.extend_from_slice(&header);
        for (cid, data) in blocks {
            let mut section = cid.to_bytes();
            section.extend_from_slice(data);
            out.extend_from_slice(&varint(section.len() as u64));
            out.extend_from_slice(&section);
        }
        out
    }

    /// A dag-pb node with UnixFS data of type `kind` and `filesize`, and
    /// one link (so Links precede Data, as dag-pb encodes them).
    fn unixfs_node(kind: u64, filesize: Option<u64>, link: Cid) -> Vec<u8> {
        let mut unixfs = vec![0x08, kind as u8];
        if let Some(size) = filesize {
            unixfs.push(0x18);
            unixfs.extend_from_slice(&varint(size));
        }
        let hash = link.to_bytes();
        let mut pblink = vec![0x0a];
        pblink.extend_from_slice(&varint(hash.len() as u64));
        pblink.extend_from_slice(&hash);
        let mut node = vec![0x12];
        node.extend_from_slice(&varint(pblink.len() as u64));
        node.extend_from_slice(&pblink);
        node.push(0x0a);
        node.extend_from_slice(&varint(unixfs.len() as u64));
        node.extend_from_slice(&unixfs);
        node
    }

    /// A file of two raw leaves under a dag-pb root, as a CAR.
    fn sample() -> (Cid, Vec<Raw>, Vec<u8>) {
        let leaves: Vec<Vec<u8>> = vec![vec![7; 1000], vec![9; 500]];
        let leaf_cids: Vec<Cid> = leaves.iter().map(|l| sha256_cid(RAW, l)).collect();
        let root_data = unixfs_node(2, Some(1500), leaf_cids[0]);
        let root = sha256_cid(DAG_PB, &root_data);
        let mut blocks = vec![(root, root_data)];
        blocks.extend(leaf_cids.into_iter().zip(leaves));
        let bytes = car(&[root], &blocks);
        (root, blocks, bytes)
    }

    /// Feeds `bytes` in chunks of `chunk` bytes and reads every block.
    async fn read_all(bytes: &[u8], chunk: usize) -> Result<(Cid, Vec<Block>), CarError> {
        let chunks: Vec<Result<Bytes, String>> = bytes
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut reader = CarReader::new(futures::stream::iter(chunks)).await?;
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block().await? {
            blocks.push(block);
        }
        Ok((reader.root(), blocks))
    }

    #[tokio::test]
    async fn a_valid_car_gives_its_root_and_verified_blocks_in_any_chunking() {
        let (root, blocks, bytes) = sample();
        for chunk in [1, 3, 64, bytes.len()] {
            let (got_root, got) = read_all(&bytes, chunk).await.unwrap();
            assert_eq!(got_root, root);
            let got: Vec<Raw> = got.iter().map(|b| (b.cid, b.data.to_vec())).collect();
            assert_eq!(got, blocks, "chunk {chunk}");
        }
        // Written back out section by section, the CAR is the same bytes.
        let (_, got) = read_all(&bytes, 7).await.unwrap();
        let mut again = v1_header(root);
        for block in &got {
            for part in block.to_section() {
                again.extend_from_slice(&part);
            }
        }
        assert_eq!(again, bytes);
        assert_eq!(unixfs_file_size(&got[0]), 1500);
        assert_eq!(unixfs_file_size(&got[1]), 0, "a raw leaf has no size");
    }

    #[tokio::test]
    async fn the_root_count_must_be_one() {
        let (root, blocks, _) = sample();
        let other = blocks[1].0;
        for roots in [vec![], vec![root, other]] {
            let err = read_all(&car(&roots, &blocks), 16).await.unwrap_err();
            assert!(
                matches!(err, CarError::Roots(n) if n == roots.len()),
                "{err}"
            );
            assert!(err.to_string().contains("single root"));
        }
    }

    #[tokio::test]
    async fn a_block_that_does_not_match_its_cid_is_refused() {
        let (root, mut blocks, _) = sample();
        blocks[2].1[0] ^= 1;
        let err = read_all(&car(&[root], &blocks), 64).await.unwrap_err();
        assert!(
            matches!(err, CarError::HashMismatch(c) if c == blocks[2].0),
            "{err}"
        );

        // A hash this reader cannot compute is refused, not trusted.
        let data = b"blake".to_vec();
        let blake = Cid::new_v1(RAW, Multihash::wrap(0xb220, &[0; 32]).unwrap());
        let err = read_all(&car(&[blake], &[(blake, data)]), 64)
            .await
            .unwrap_err();
        assert!(matches!(err, CarError::UnsupportedHash { .. }), "{err}");

        // sha2-512 and identity blocks verify.
        let data = b"five twelve".to_vec();
        let digest = sha2::Sha512::digest(&data);
        let sha512 = Cid::new_v1(RAW, Multihash::wrap(SHA2_512, &digest).unwrap());
        let ident = Cid::new_v1(RAW, Multihash::wrap(IDENTITY, b"inline").unwrap());
        let ok = car(&[sha512], &[(sha512, data), (ident, b"inline".to_vec())]);
        assert_eq!(read_all(&ok, 5).await.unwrap().1.len(), 2);
    }

    #[tokio::test]
    async fn bad_lengths_and_versions_are_refused() {
        let (root, _, bytes) = sample();
        let header_len = bytes[0] as usize + 1;
        let body = &bytes[header_len..];

        // A section length varint that never ends.
        let mut bad = bytes[..header_len].to_vec();
        bad.extend_from_slice(&[0xff; 12]);
        assert!(matches!(
            read_all(&bad, 4).await.unwrap_err(),
            CarError::Varint(_)
        ));
        // A non-minimal varint (0x81 0x00 for 1).
        let mut bad = bytes[..header_len].to_vec();
        bad.extend_from_slice(&[0x81, 0x00]);
        assert!(matches!(
            read_all(&bad, 4).await.unwrap_err(),
            CarError::Varint(_)
        ));
        // A section claiming more than a block may hold.
        let mut bad = bytes[..header_len].to_vec();
        bad.extend_from_slice(&varint(MAX_SECTION + 1));
        bad.extend_from_slice(body);
        assert!(matches!(
            read_all(&bad, 4096).await.unwrap_err(),
            CarError::SectionTooLarge(_)
        ));
        // A block over the limit with a matching CID.
        let big = vec![1u8; MAX_BLOCK + 1];
        let big_cid = sha256_cid(RAW, &big);
        let err = read_all(&car(&[big_cid], &[(big_cid, big)]), 1 << 16)
            .await
            .unwrap_err();
        assert!(matches!(err, CarError::BlockTooLarge { .. }), "{err}");
        // A zero-length section.
        let mut bad = bytes[..header_len].to_vec();
        bad.push(0);
        assert!(matches!(
            read_all(&bad, 4).await.unwrap_err(),
            CarError::EmptySection
        ));
        // A header length over the limit.
        let mut bad = varint(MAX_HEADER + 1);
        bad.extend_from_slice(&bytes);
        assert!(matches!(
            read_all(&bad, 64).await.unwrap_err(),
            CarError::HeaderTooLarge(_)
        ));
        // Version 3, and a header that is not a map.
        let v3 = serde_ipld_dagcbor::to_vec(&Header {
            roots: Some(vec![root]),
            version: 3,
        })
        .unwrap();
        let mut bad = varint(v3.len() as u64);
        bad.extend_from_slice(&v3);
        assert!(matches!(
            read_all(&bad, 64).await.unwrap_err(),
            CarError::Version(3)
        ));
        let err = read_all(&[3, 0x01, 0x02, 0x03], 64).await.unwrap_err();
        assert!(matches!(err, CarError::Header(_)), "{err}");
        // An empty upload.
        assert!(matches!(
            read_all(&[], 64).await.unwrap_err(),
            CarError::Truncated(_)
        ));
        // A failing source.
        let failing = futures::stream::iter(vec![Err::<Bytes, _>("gone")]);
        let err = CarReader::new(failing).await.unwrap_err();
        assert_eq!(err.to_string(), "reading the CAR: gone");
    }

    #[tokio::test]
    async fn every_truncation_is_an_error_or_a_prefix_never_a_panic() {
        let (_, blocks, bytes) = sample();
        let mut boundaries = Vec::new(); // where a whole section ends
        let mut at = bytes[0] as usize + 1;
        boundaries.push(at);
        for (cid, data) in &blocks {
            let len = cid.to_bytes().len() + data.len();
            at += varint(len as u64).len() + len;
            boundaries.push(at);
        }
        for cut in 0..bytes.len() {
            match read_all(&bytes[..cut], 13).await {
                Ok((_, got)) => {
                    let n = boundaries.iter().position(|&b| b == cut);
                    assert_eq!(Some(got.len()), n, "cut {cut} read {} blocks", got.len());
                }
                Err(CarError::Truncated(_)) => assert!(!boundaries.contains(&cut), "cut {cut}"),
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
        // Every single-byte corruption is refused or still reads as a CAR
        // whose blocks all match their CIDs; none panics.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            if let Ok((_, got)) = read_all(&bad, 17).await {
                for block in got {
                    verify(&block.cid, &block.data).unwrap();
                }
            }
        }
    }

    /// A CARv2 around `v1`: pragma, header, `pad` bytes, payload, and an
    /// index-like tail that must not be read as sections.
    fn car_v2(v1: &[u8], pad: usize) -> Vec<u8> {
        let mut out = vec![
            0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02,
        ];
        out.extend_from_slice(&[0; 16]);
        let offset = 51 + pad as u64;
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(v1.len() as u64).to_le_bytes());
        out.extend_from_slice(&(offset + v1.len() as u64).to_le_bytes());
        out.extend_from_slice(&vec![0; pad]);
        out.extend_from_slice(v1);
        out.extend_from_slice(&[0x80, 0xff, 0x01, 0x02]); // not a section
        out
    }

    #[tokio::test]
    async fn a_carv2_is_read_through_its_payload_only() {
        let (root, blocks, v1) = sample();
        for pad in [0, 5, 300] {
            let (got_root, got) = read_all(&car_v2(&v1, pad), 11).await.unwrap();
            assert_eq!(got_root, root);
            assert_eq!(got.len(), blocks.len(), "pad {pad}");
        }
        // A payload size that cuts a section in two.
        let mut bad = car_v2(&v1, 0);
        let short = (v1.len() as u64 - 3).to_le_bytes();
        bad[11 + 24..11 + 32].copy_from_slice(&short);
        assert!(matches!(
            read_all(&bad, 64).await.unwrap_err(),
            CarError::Truncated(_)
        ));
        // An offset pointing inside the header.
        let mut bad = car_v2(&v1, 0);
        bad[11 + 16..11 + 24].copy_from_slice(&10u64.to_le_bytes());
        assert!(matches!(
            read_all(&bad, 64).await.unwrap_err(),
            CarError::V2(_)
        ));
    }

    #[test]
    fn unixfs_sizes_as_the_reference_reports_them() {
        let leaf = sha256_cid(RAW, b"x");
        let dir = unixfs_node(1, None, leaf);
        let block = |codec, data: Vec<u8>| Block {
            cid: sha256_cid(codec, &data),
            section: Bytes::new(),
            data: data.into(),
        };
        assert_eq!(unixfs_file_size(&block(DAG_PB, dir.clone())), 0);
        assert_eq!(
            unixfs_file_size(&block(DAG_PB, unixfs_node(2, Some(u64::MAX), leaf))),
            u64::MAX
        );
        assert_eq!(unixfs_file_size(&block(0x71, dir)), 0, "dag-cbor");
        assert_eq!(unixfs_file_size(&block(DAG_PB, vec![0x0a, 0x05, 1])), 0);
        assert_eq!(unixfs_file_size(&block(DAG_PB, vec![0xff; 12])), 0);
    }
}
