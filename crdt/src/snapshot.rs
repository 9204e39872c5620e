//! Signed state snapshots: how a replica takes the whole state at a set of
//! heads without replaying the history below them
//! (`shared/spec/snapshots.md`).
//!
//! A snapshot is a **manifest** plus **chunks**, all DAG-CBOR addressed by
//! CIDv1 sha2-256 like deltas:
//!
//! * element chunks: the live elements `[key, id, priority, value]` in key
//!   then id order, at most [`CHUNK_ENTRIES`] or about [`CHUNK_BYTES`] each;
//! * context chunks: the causal context `[cid, height]` (every merged block,
//!   frontier included) in CID order;
//! * the manifest: the frontier heads, the counts, both chunk lists, the
//!   producer and its signature over `"pincluster-crdt/snapshot/v1\0"` ‖
//!   sha2-256 of the manifest encoded with an empty `sig`. The engine's
//!   [`Verifier`] checks it, so only a trusted author's snapshot is taken.
//!
//! Chunks live in the `blocks` table, so the ordinary block exchange serves
//! them; every chunk is checked against its CID when staged.
//!
//! **Installing** ([`Engine::install_snapshot`]) joins the snapshot with
//! whatever the replica already holds, by the observed-remove rule with
//! processed markers as causal contexts: an element on one side only
//! survives unless the other side's context holds its block. That is what a
//! full replay of both sides' blocks gives, because a delete can only name
//! an element its writer had merged. Heads become the tips of the union.
//!
//! **Crash safety.** Everything is validated and the context staged (under
//! the `c` prefix of the `sync` table) before the install plan is written
//! to `meta`. From then on every step is idempotent, and
//! [`Engine::open`] finishes an interrupted install: the replica reopens
//! either as it was or with the snapshot fully joined.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use cid::Cid;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use sha2::{Digest, Sha256};

use crate::block::{CID_LEN, Limits, check_cid_kind, cid_of};
use crate::engine::{Element, Engine, Reader};
use crate::error::{Error, SnapshotError};
use crate::layout::{self, Winner, WinnerRef};
use crate::sign::Verifier;
use crate::store::{Store, Table, WriteBatch};

/// Snapshot format version.
pub const SNAPSHOT_VERSION: u64 = 1;
/// Most entries in one chunk.
pub const CHUNK_ENTRIES: usize = 4_096;
/// A chunk is cut once its entries reach this many bytes (one entry more
/// can pass it; the limits keep a chunk far below the block size limit).
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Largest manifest accepted: about 100,000 chunk links, i.e. 400 M entries.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

const SIGNING_CONTEXT: &[u8] = b"pincluster-crdt/snapshot/v1\0";
/// Sub-space of the `sync` table holding a staged context.
const STAGED: u8 = b'c';
/// Sub-space of the `sync` table holding the [`Summary`] of each staged
/// element chunk, so the install checks the order across chunks and the
/// counts without reading and decoding every chunk a second time.
const SUMMARY: u8 = b'k';
/// Chunks decoded ahead of the install's merge, on a thread of their own.
const DECODE_AHEAD: usize = 4;
/// Element ids remembered by the install's "merged here before?" test:
/// ids repeat (one per delta), so most of a million tests hit this.
const ID_CACHE: usize = 1 << 16;
/// `meta` key of the manifest this replica serves.
pub(crate) const META_SERVED: &[u8] = b"snapshot";
/// `meta` key of an install under way (its plan).
const META_PLAN: &[u8] = b"snapshot_install";
/// Writes per batch while installing.
pub(crate) const WRITE_CHUNK: usize = 10_000;
/// Chunk bytes written into `blocks` (built here or received) between two
/// flushes of its memtable. A snapshot is some 330 bytes per pin, 330 MB at
/// 1,000,000 pins, all written in one burst: without this bound fjall held
/// it in the table's 32 MiB memtable plus up to four sealed ones waiting
/// for their flush, most of a joiner's memory while it fetched.
pub(crate) const BLOCK_FLUSH_BYTES: usize = 8 * 1024 * 1024;

/// The signed description of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`SNAPSHOT_VERSION`]).
    pub v: u64,
    /// The heads the state was taken at, sorted by CID: `[cid, height]`.
    pub frontier: Vec<(Cid, u64)>,
    /// Live keys.
    pub keys: u64,
    /// Live elements.
    pub elements: u64,
    /// Blocks in the causal context.
    pub markers: u64,
    /// Element chunks, in key order.
    pub chunks: Vec<Cid>,
    /// Context chunks, in CID order.
    pub context: Vec<Cid>,
    /// Who made it (a libp2p peer id's bytes in pincluster).
    pub producer: ByteBuf,
    /// When, in seconds since the Unix epoch (producer's clock; informative).
    pub created_at: u64,
    /// The producer's signature.
    pub sig: ByteBuf,
}

impl Manifest {
    /// The highest frontier height: where new deltas continue.
    pub fn height(&self) -> u64 {
        self.frontier.iter().map(|(_, h)| *h).max().unwrap_or(0)
    }

    /// Checks `bytes` as a manifest: size, canonical encoding, version,
    /// shape, and the signature of a producer `verifier` trusts.
    pub fn decode(bytes: &[u8], verifier: &dyn Verifier) -> Result<Self, SnapshotError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(SnapshotError::TooLarge {
                size: bytes.len(),
                max: MAX_MANIFEST_BYTES,
            });
        }
        let mut m: Manifest = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if m.v != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(m.v));
        }
        if encode(&m)? != bytes {
            return Err(SnapshotError::NonCanonical);
        }
        if m.frontier.is_empty() {
            return Err(SnapshotError::Invalid("empty frontier"));
        }
        if !strictly_sorted(m.frontier.iter().map(|(c, _)| c.to_bytes())) {
            return Err(SnapshotError::Invalid("frontier not sorted and unique"));
        }
        for cid in m
            .frontier
            .iter()
            .map(|(c, _)| c)
            .chain(&m.chunks)
            .chain(&m.context)
        {
            check_cid_kind(cid).map_err(|_| SnapshotError::UnsupportedCid(*cid))?;
        }
        let sig = std::mem::take(&mut m.sig);
        let payload = encode(&m)?;
        verifier.verify(&m.producer, &signing_message(&payload), &sig)?;
        m.sig = sig;
        Ok(m)
    }
}

/// What [`Engine::install_snapshot`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Keys whose current value changed.
    pub changed_keys: u64,
    /// Live keys after the install.
    pub keys: u64,
}

impl<S: Store> Reader<S> {
    /// The manifest this replica serves, if any (its chunks are blocks).
    pub fn served_snapshot(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.store.get(Table::Meta, META_SERVED)?)
    }
}

/// Which list of a manifest a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// Live elements.
    Elements,
    /// Causal context.
    Context,
}

#[derive(Serialize, Deserialize)]
struct ElementChunk {
    v: u64,
    elements: Vec<(ByteBuf, Cid, u64, ByteBuf)>,
}

/// An [`ElementChunk`] read in place, for checks that copy nothing.
#[derive(Deserialize)]
struct ElementChunkRef<'a> {
    v: u64,
    #[serde(borrow)]
    elements: Vec<(&'a Bytes, Cid, u64, &'a Bytes)>,
}

#[derive(Serialize, Deserialize)]
struct ContextChunk {
    v: u64,
    context: Vec<(Cid, u64)>,
}

/// An element chunk's bounds and counts, as checked when it was staged.
#[derive(Serialize, Deserialize)]
struct Summary {
    /// The first element's key and id bytes.
    first: (ByteBuf, ByteBuf),
    /// The last element's key and id bytes.
    last: (ByteBuf, ByteBuf),
    /// Distinct keys in the chunk.
    keys: u64,
    /// Elements in the chunk.
    elements: u64,
}

/// What `meta` holds while an install is under way.
#[derive(Serialize, Deserialize)]
struct Plan {
    manifest: ByteBuf,
    heads: Vec<(Cid, u64)>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, SnapshotError> {
    serde_ipld_dagcbor::to_vec(value).map_err(|e| SnapshotError::Encode(e.to_string()))
}

fn signing_message(payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + 32);
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(&Sha256::digest(payload));
    msg
}

fn strictly_sorted<T: Ord>(items: impl Iterator<Item = T>) -> bool {
    let mut prev: Option<T> = None;
    for item in items {
        if prev.as_ref().is_some_and(|p| item <= *p) {
            return false;
        }
        prev = Some(item);
    }
    true
}

fn decode_elements(bytes: &[u8]) -> Result<Vec<Element>, SnapshotError> {
    let chunk: ElementChunk =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    if chunk.v != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(chunk.v));
    }
    Ok(chunk
        .elements
        .into_iter()
        .map(|(key, id, priority, value)| Element {
            key: key.into_vec(),
            id,
            priority,
            value: value.into_vec(),
        })
        .collect())
}

pub(crate) fn decode_context(bytes: &[u8]) -> Result<Vec<(Cid, u64)>, SnapshotError> {
    let chunk: ContextChunk =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    if chunk.v != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(chunk.v));
    }
    Ok(chunk.context)
}

/// Checks a received chunk: its CID, size, encoding, order within the
/// chunk and the engine's key and value limits. Order across chunks and
/// the counts are checked at install.
pub fn check_chunk(
    kind: ChunkKind,
    cid: &Cid,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(), SnapshotError> {
    checked_summary(kind, cid, bytes, limits).map(drop)
}

/// [`check_chunk`], returning the [`Summary`] of an element chunk (`None`
/// for a context chunk or an empty element chunk).
fn checked_summary(
    kind: ChunkKind,
    cid: &Cid,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<Summary>, SnapshotError> {
    if bytes.len() > limits.max_block_bytes {
        return Err(SnapshotError::TooLarge {
            size: bytes.len(),
            max: limits.max_block_bytes,
        });
    }
    check_cid_kind(cid).map_err(|_| SnapshotError::UnsupportedCid(*cid))?;
    if cid.hash().digest() != Sha256::digest(bytes).as_slice() {
        return Err(SnapshotError::HashMismatch { cid: *cid });
    }
    match kind {
        ChunkKind::Elements => {
            // Borrowed: keys and values are checked where they lie in
            // `bytes`, not copied (the install decodes the chunk again).
            let chunk: ElementChunkRef<'_> = serde_ipld_dagcbor::from_slice(bytes)
                .map_err(|e| SnapshotError::Decode(e.to_string()))?;
            if chunk.v != SNAPSHOT_VERSION {
                return Err(SnapshotError::UnsupportedVersion(chunk.v));
            }
            let elements = chunk.elements;
            for (key, _, _, value) in &elements {
                if key.len() > limits.max_key_bytes || value.len() > limits.max_value_bytes {
                    return Err(SnapshotError::Invalid("element over the size limits"));
                }
            }
            if !strictly_sorted(elements.iter().map(|(key, id, _, _)| (*key, id.to_bytes()))) {
                return Err(SnapshotError::Invalid("elements not sorted"));
            }
            let keys = 1 + elements.windows(2).filter(|w| w[0].0 != w[1].0).count();
            let bound = |(key, id, _, _): &(&Bytes, Cid, u64, &Bytes)| {
                (ByteBuf::from(key.to_vec()), ByteBuf::from(id.to_bytes()))
            };
            Ok(match (elements.first(), elements.last()) {
                (Some(first), Some(last)) => Some(Summary {
                    first: bound(first),
                    last: bound(last),
                    keys: keys as u64,
                    elements: elements.len() as u64,
                }),
                _ => None,
            })
        }
        ChunkKind::Context => {
            let context = decode_context(bytes)?;
            if !strictly_sorted(context.iter().map(|(c, _)| c.to_bytes())) {
                return Err(SnapshotError::Invalid("context not sorted"));
            }
            Ok(None)
        }
    }
}

/// Cuts a stream of entries into chunks and writes each into `blocks`.
struct Chunker<'a, S: Store> {
    store: &'a S,
    entries: usize,
    bytes: usize,
    cids: Vec<Cid>,
    flusher: BlockFlusher,
}

impl<'a, S: Store> Chunker<'a, S> {
    fn new(store: &'a S) -> Self {
        Self {
            store,
            entries: 0,
            bytes: 0,
            cids: Vec::new(),
            flusher: BlockFlusher::default(),
        }
    }

    /// Counts one entry of `size` bytes; true when the chunk is full.
    fn add(&mut self, size: usize) -> bool {
        self.entries += 1;
        self.bytes += size;
        self.entries >= CHUNK_ENTRIES || self.bytes >= CHUNK_BYTES
    }

    fn flush<T: Serialize>(&mut self, chunk: &T) -> Result<(), Error> {
        let bytes = encode(chunk)?;
        let cid = cid_of(&bytes);
        let mut wb = WriteBatch::new();
        let written = bytes.len();
        wb.put(Table::Blocks, cid.to_bytes(), bytes);
        self.store.write(wb)?;
        self.flusher.wrote(self.store, written)?;
        self.cids.push(cid);
        self.entries = 0;
        self.bytes = 0;
        Ok(())
    }
}

/// Counts chunk bytes written into `blocks` and flushes its memtable every
/// [`BLOCK_FLUSH_BYTES`]: the writer waits for the flush, so a burst of
/// chunks stays at a few MiB of RAM whatever the snapshot's size.
/// Atomic, so that staging needs only a shared borrow of the engine.
#[derive(Debug, Default)]
pub(crate) struct BlockFlusher {
    unflushed: AtomicUsize,
}

impl BlockFlusher {
    pub(crate) fn wrote<S: Store>(&self, store: &S, bytes: usize) -> Result<(), Error> {
        let unflushed = self.unflushed.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if unflushed >= BLOCK_FLUSH_BYTES {
            self.unflushed.store(0, Ordering::Relaxed);
            store.flush(Table::Blocks)?;
        }
        Ok(())
    }
}

impl<S: Store> Engine<S> {
    /// Takes a signed snapshot of the current state at the current heads,
    /// writes its chunks into `blocks` and makes it the one this replica
    /// serves (dropping the chunks of the previous one). Holds the engine:
    /// no merge can interleave, so the state matches the frontier. Memory
    /// stays at one chunk. Returns the manifest's CID and bytes.
    pub fn build_snapshot(&mut self, created_at: u64) -> Result<(Cid, Vec<u8>), Error> {
        if self.heads.is_empty() {
            return Err(SnapshotError::Invalid("nothing to snapshot").into());
        }
        let reader = self.reader();
        let mut keys = 0u64;
        let mut elements = 0u64;
        let mut chunker = Chunker::new(&self.store);
        let mut chunk = ElementChunk {
            v: SNAPSHOT_VERSION,
            elements: Vec::new(),
        };
        let mut last_key: Option<Vec<u8>> = None;
        // In short scans: one scan open for the whole pass kept every
        // chunk written meanwhile in RAM. The engine is held, so the
        // elements and markers do not change under the pass.
        for e in reader.elements_in_runs() {
            let e = e?;
            elements += 1;
            if last_key.as_ref() != Some(&e.key) {
                keys += 1;
                last_key = Some(e.key.clone());
            }
            let size = e.key.len() + e.value.len() + CID_LEN + 16;
            chunk.elements.push((
                ByteBuf::from(e.key),
                e.id,
                e.priority,
                ByteBuf::from(e.value),
            ));
            if chunker.add(size) {
                chunker.flush(&chunk)?;
                chunk.elements.clear();
            }
        }
        if !chunk.elements.is_empty() {
            chunker.flush(&chunk)?;
        }
        let element_chunks = std::mem::take(&mut chunker.cids);

        let mut markers = 0u64;
        let mut chunk = ContextChunk {
            v: SNAPSHOT_VERSION,
            context: Vec::new(),
        };
        for head in reader.processed_in_runs() {
            let head = head?;
            markers += 1;
            chunk.context.push((head.cid, head.height));
            if chunker.add(CID_LEN + 12) {
                chunker.flush(&chunk)?;
                chunk.context.clear();
            }
        }
        if !chunk.context.is_empty() {
            chunker.flush(&chunk)?;
        }

        let mut manifest = Manifest {
            v: SNAPSHOT_VERSION,
            frontier: self.heads.iter().map(|(c, h)| (*c, *h)).collect(),
            keys,
            elements,
            markers,
            chunks: element_chunks,
            context: chunker.cids,
            producer: ByteBuf::from(self.signer.author().to_vec()),
            created_at,
            sig: ByteBuf::new(),
        };
        let payload = encode(&manifest)?;
        manifest.sig = ByteBuf::from(self.signer.sign(&signing_message(&payload)));
        let bytes = encode(&manifest)?;
        let mut wb = WriteBatch::new();
        self.replace_served(&mut wb, &bytes, &manifest)?;
        self.store.write(wb)?;
        Ok((cid_of(&bytes), bytes))
    }

    /// Checks a received manifest with this replica's verifier (trusted
    /// producer, valid signature, canonical form).
    pub fn check_manifest(&self, bytes: &[u8]) -> Result<Manifest, Error> {
        Ok(Manifest::decode(bytes, self.verifier.as_ref())?)
    }

    /// Stores a received chunk after [`check_chunk`], so an install can read
    /// it and this replica can serve it. Every [`BLOCK_FLUSH_BYTES`] staged,
    /// waits for the chunks to be written out of RAM.
    pub fn stage_chunk(&self, kind: ChunkKind, cid: &Cid, bytes: &[u8]) -> Result<(), Error> {
        let summary = checked_summary(kind, cid, bytes, &self.limits)?;
        let mut wb = WriteBatch::new();
        wb.put(Table::Blocks, cid.to_bytes(), bytes);
        if let Some(summary) = summary {
            wb.put(Table::Sync, layout::tagged(SUMMARY, cid), encode(&summary)?);
        }
        self.store.write(wb)?;
        self.staged.wrote(&self.store, bytes.len())
    }

    /// Whether a chunk (or any block) is stored here.
    pub fn has_block(&self, cid: &Cid) -> Result<bool, Error> {
        Ok(self.store.contains(Table::Blocks, &cid.to_bytes())?)
    }

    /// Joins the snapshot described by `manifest` (bytes as received; its
    /// chunks staged before) with this replica's state. Refused with
    /// nothing changed if the producer is not trusted, a chunk is missing
    /// or the chunks do not add up to the manifest. Afterwards the replica
    /// holds exactly what a full replay of both sides' blocks would give,
    /// and serves this manifest to the next joiner.
    pub fn install_snapshot(&mut self, manifest_bytes: &[u8]) -> Result<Installed, Error> {
        let manifest = Manifest::decode(manifest_bytes, self.verifier.as_ref())?;
        self.clear_staged()?;
        if let Err(e) = self.validate_and_stage(&manifest) {
            self.clear_staged()?;
            self.clear_prefix(SUMMARY)?;
            return Err(e);
        }
        // Heads of the union: a local head stays unless the snapshot's
        // context covers it below its frontier; a frontier head joins
        // unless a local block already builds on it.
        let frontier: BTreeSet<Cid> = manifest.frontier.iter().map(|(c, _)| *c).collect();
        let mut heads = Vec::new();
        for (cid, height) in &self.heads {
            if frontier.contains(cid) || !self.is_staged(cid)? {
                heads.push((*cid, *height));
            }
        }
        for (cid, height) in &manifest.frontier {
            if !self.heads.contains_key(cid) && !self.is_processed(cid)? {
                heads.push((*cid, *height));
            }
        }
        heads.sort();
        let plan = Plan {
            manifest: ByteBuf::from(manifest_bytes.to_vec()),
            heads,
        };
        let mut wb = WriteBatch::new();
        wb.put(Table::Meta, META_PLAN, encode(&plan)?);
        self.store.write(wb)?;
        self.finish_install(plan, manifest)
    }

    /// Resumes an install [`Engine::open`] found interrupted.
    pub(crate) fn resume_install(&mut self) -> Result<(), Error> {
        let Some(raw) = self.store.get(Table::Meta, META_PLAN)? else {
            // No plan: whatever was staged belongs to an install that never
            // started changing state.
            return self.clear_staged();
        };
        tracing::warn!("finishing an interrupted snapshot install");
        let plan: Plan = serde_ipld_dagcbor::from_slice(&raw)
            .map_err(|_| Error::Corrupt("snapshot install plan"))?;
        // Validated before the plan was written; the producer may have
        // become untrusted since, but the install had already begun.
        let manifest: Manifest = serde_ipld_dagcbor::from_slice(&plan.manifest)
            .map_err(|_| Error::Corrupt("snapshot install manifest"))?;
        self.finish_install(plan, manifest).map(|_| ())
    }

    /// The manifest this replica serves, if any.
    pub fn served_snapshot(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.store.get(Table::Meta, META_SERVED)?)
    }

    fn is_staged(&self, cid: &Cid) -> Result<bool, Error> {
        Ok(self
            .store
            .contains(Table::Sync, &layout::tagged(STAGED, cid))?)
    }

    fn clear_staged(&self) -> Result<(), Error> {
        self.clear_prefix(STAGED)
    }

    /// Drops one sub-space of the `sync` table.
    fn clear_prefix(&self, prefix: u8) -> Result<(), Error> {
        let mut wb = WriteBatch::new();
        for entry in self.store.scan(Table::Sync, &[prefix], b"") {
            wb.delete(Table::Sync, entry?.0);
            if wb.len() >= WRITE_CHUNK {
                self.store.write(std::mem::take(&mut wb))?;
            }
        }
        // Most opens have nothing staged: no write at all then.
        if !wb.is_empty() {
            self.store.write(wb)?;
        }
        Ok(())
    }

    fn chunk(&self, cid: &Cid) -> Result<Vec<u8>, Error> {
        self.store
            .get(Table::Blocks, &cid.to_bytes())?
            .ok_or_else(|| SnapshotError::MissingChunk(*cid).into())
    }

    /// Reads every chunk once before anything changes: the elements must be
    /// sorted across chunks and add up to the manifest; the context must be
    /// sorted, hold the frontier with its heights and add up. The context is
    /// staged on the way.
    fn validate_and_stage(&self, m: &Manifest) -> Result<(), Error> {
        for cid in m.chunks.iter().chain(&m.context) {
            if !self.has_block(cid)? {
                return Err(SnapshotError::MissingChunk(*cid).into());
            }
        }
        let (mut keys, mut elements) = (0u64, 0u64);
        let mut last: Option<(ByteBuf, ByteBuf)> = None;
        for cid in &m.chunks {
            let summary = match self.store.get(Table::Sync, &layout::tagged(SUMMARY, cid))? {
                // Written with the chunk, from the same checked bytes.
                Some(raw) => Some(
                    serde_ipld_dagcbor::from_slice::<Summary>(&raw)
                        .map_err(|_| Error::Corrupt("snapshot chunk summary"))?,
                ),
                // Stored before this install (a restart): check it again.
                None => {
                    let bytes = self.chunk(cid)?;
                    checked_summary(ChunkKind::Elements, cid, &bytes, &self.limits)?
                }
            };
            let Some(summary) = summary else {
                continue;
            };
            keys += summary.keys;
            elements += summary.elements;
            if let Some(prev) = &last {
                if summary.first <= *prev {
                    return Err(SnapshotError::Invalid("elements not sorted").into());
                }
                // A key split across two chunks counts once.
                if summary.first.0 == prev.0 {
                    keys -= 1;
                }
            }
            last = Some(summary.last);
        }
        if (keys, elements) != (m.keys, m.elements) {
            return Err(SnapshotError::Invalid("element chunks do not match the counts").into());
        }
        let mut markers = 0u64;
        let mut frontier_seen = 0usize;
        let mut last: Option<Vec<u8>> = None;
        let mut wb = WriteBatch::new();
        for cid in &m.context {
            let bytes = self.chunk(cid)?;
            check_chunk(ChunkKind::Context, cid, &bytes, &self.limits)?;
            for (block, height) in decode_context(&bytes)? {
                let b = block.to_bytes();
                if last.as_ref().is_some_and(|l| b <= *l) {
                    return Err(SnapshotError::Invalid("context not sorted").into());
                }
                if let Some((_, h)) = m.frontier.iter().find(|(c, _)| *c == block) {
                    if *h != height {
                        return Err(SnapshotError::Invalid("frontier height differs").into());
                    }
                    frontier_seen += 1;
                }
                markers += 1;
                wb.put(
                    Table::Sync,
                    layout::tagged(STAGED, &block),
                    layout::height_bytes(height),
                );
                if wb.len() >= WRITE_CHUNK {
                    self.store.write(std::mem::take(&mut wb))?;
                }
                last = Some(b);
            }
        }
        self.store.write(wb)?;
        if markers != m.markers || frontier_seen != m.frontier.len() {
            return Err(SnapshotError::Invalid("context does not match the manifest").into());
        }
        Ok(())
    }

    /// The idempotent part of an install, run from the plan: join the
    /// elements, move the staged context into the markers, set the heads,
    /// fix the sync bookkeeping, drop the plan.
    fn finish_install(&mut self, plan: Plan, manifest: Manifest) -> Result<Installed, Error> {
        let (changed_keys, keys) = self.join_elements(&manifest)?;

        let mut wb = WriteBatch::new();
        for entry in self.store.scan(Table::Sync, &[STAGED], b"") {
            let (k, v) = entry?;
            wb.put(Table::Markers, k[1..].to_vec(), v);
            wb.delete(Table::Sync, k);
            if wb.len() >= WRITE_CHUNK {
                self.store.write(std::mem::take(&mut wb))?;
            }
        }
        self.store.write(wb)?;

        self.settle_sync()?;

        let mut wb = WriteBatch::new();
        for entry in self.store.scan(Table::Heads, b"", b"") {
            wb.delete(Table::Heads, entry?.0);
        }
        for (cid, height) in &plan.heads {
            wb.put(Table::Heads, cid.to_bytes(), layout::height_bytes(*height));
        }
        wb.delete(Table::Meta, META_PLAN);
        self.replace_served(&mut wb, &plan.manifest, &manifest)?;
        self.store.write(wb)?;
        self.heads = plan.heads.iter().copied().collect();
        self.clear_prefix(SUMMARY)?;
        Ok(Installed { changed_keys, keys })
    }

    /// Merge-joins the local elements with the snapshot's, key by key, in
    /// one streaming pass. Returns (keys whose value changed, live keys).
    ///
    /// Chunks are read and decoded on a second thread while this one
    /// merges; the elements and values go into their tables as bulk loads
    /// (both come out in key order). A crash before both loads finish
    /// leaves the plan in `meta`, and the rerun gives the same result.
    fn join_elements(&mut self, m: &Manifest) -> Result<(u64, u64), Error> {
        let store = self.store.clone();
        std::thread::scope(|scope| {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<Result<Vec<Element>, Error>>(DECODE_AHEAD);
            scope.spawn(move || {
                for cid in &m.chunks {
                    let decoded = match store.get(Table::Blocks, &cid.to_bytes()) {
                        Ok(Some(bytes)) => decode_elements(&bytes).map_err(Error::from),
                        Ok(None) => Err(SnapshotError::MissingChunk(*cid).into()),
                        Err(e) => Err(e.into()),
                    };
                    let failed = decoded.is_err();
                    // A closed channel: the merge stopped on an error.
                    if tx.send(decoded).is_err() || failed {
                        return;
                    }
                }
            });
            let remote = rx.into_iter().flat_map(
                |chunk| -> Box<dyn Iterator<Item = Result<Element, Error>>> {
                    match chunk {
                        Ok(v) => Box::new(v.into_iter().map(Ok)),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    }
                },
            );
            self.merge_elements(remote)
        })
    }

    fn merge_elements(
        &self,
        remote: impl Iterator<Item = Result<Element, Error>>,
    ) -> Result<(u64, u64), Error> {
        let reader = self.reader();
        let mut local = reader.elements().peekable();
        let mut remote = remote.peekable();
        let mut element_load = self.store.ingest(Table::Elements)?;
        let mut value_load = self.store.ingest(Table::Values)?;
        let mut merged_here: std::collections::HashMap<Cid, bool> =
            std::collections::HashMap::new();
        let (mut changed, mut live) = (0u64, 0u64);
        // This key's element writes: (element key, value or None to delete),
        // sorted before they go to the bulk load.
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        loop {
            let next_key = match (local.peek(), remote.peek()) {
                (None, None) => break,
                (Some(Err(_)), _) => {
                    return Err(local
                        .next()
                        .and_then(Result::err)
                        .unwrap_or(Error::Corrupt("scan")));
                }
                (_, Some(Err(_))) => {
                    return Err(remote
                        .next()
                        .and_then(Result::err)
                        .unwrap_or(Error::Corrupt("chunk")));
                }
                (Some(Ok(l)), Some(Ok(r))) => l.key.clone().min(r.key.clone()),
                (Some(Ok(l)), None) => l.key.clone(),
                (None, Some(Ok(r))) => r.key.clone(),
            };
            let mut mine = Vec::new();
            while let Some(Ok(e)) = local.peek() {
                if e.key != next_key {
                    break;
                }
                if let Some(Ok(e)) = local.next() {
                    mine.push(e);
                }
            }
            let mut theirs = Vec::new();
            while let Some(Ok(e)) = remote.peek() {
                if e.key != next_key {
                    break;
                }
                if let Some(Ok(e)) = remote.next() {
                    theirs.push(e);
                }
            }
            let mut result: Vec<Element> = Vec::with_capacity(mine.len().max(theirs.len()));
            for e in mine.iter() {
                let shared = theirs.iter().any(|t| t.id == e.id);
                if shared || !self.is_staged(&e.id)? {
                    result.push(e.clone());
                } else {
                    // Removed by a delete the snapshot's side had merged.
                    writes.push((layout::element_key(&e.key, &e.id), None));
                }
            }
            for e in theirs {
                if mine.iter().any(|m| m.id == e.id) {
                    continue;
                }
                let processed = match merged_here.get(&e.id) {
                    Some(p) => *p,
                    None => {
                        if merged_here.len() >= ID_CACHE {
                            merged_here.clear();
                        }
                        let p = self.is_processed(&e.id)?;
                        merged_here.insert(e.id, p);
                        p
                    }
                };
                if processed {
                    // Merged here and removed since.
                    continue;
                }
                writes.push((
                    layout::element_key(&e.key, &e.id),
                    Some(layout::element_value(e.priority, &e.value)),
                ));
                result.push(e);
            }
            writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, value) in writes.drain(..) {
                match value {
                    Some(v) => element_load.put(&key, &v)?,
                    None => element_load.delete(&key)?,
                }
            }
            let winner = result
                .iter()
                .map(|e| (e, e.id.to_bytes()))
                .map(|(e, id)| Winner {
                    priority: e.priority,
                    value: e.value.clone(),
                    id,
                })
                .max_by(|a, b| a.as_ref().cmp(&b.as_ref()));
            let current = if mine.is_empty() {
                None
            } else {
                self.store.get(Table::Values, &next_key)?
            };
            let current_ref = current.as_deref().map(WinnerRef::decode).transpose()?;
            let winner_ref = winner.as_ref().map(Winner::as_ref);
            if winner_ref != current_ref {
                match &winner_ref {
                    Some(w) => value_load.put(&next_key, &w.encode())?,
                    None => value_load.delete(&next_key)?,
                }
            }
            if winner_ref.map(|w| w.value) != current_ref.map(|w| w.value) {
                changed += 1;
            }
            if winner.is_some() {
                live += 1;
            }
        }
        element_load.finish()?;
        value_load.finish()?;
        Ok((changed, live))
    }

    /// After the context grew: pending blocks the snapshot covers are done
    /// (kept as bytes, dropped from the queues), pending blocks whose
    /// parents are now all merged become ready, wanted blocks the context
    /// covers are no longer wanted. Reloads the ready queue.
    fn settle_sync(&mut self) -> Result<(), Error> {
        let mut wb = WriteBatch::new();
        for entry in self.store.scan(Table::Sync, &[layout::PENDING], b"") {
            let (k, v) = entry?;
            let cid = layout::parse_cid(&k[1..])?;
            let parents = layout::decode_cids(&v)?;
            if self.is_processed(&cid)? {
                wb.delete(Table::Sync, k);
                wb.delete(Table::Sync, layout::tagged(layout::READY, &cid));
                for parent in &parents {
                    wb.delete(Table::Sync, layout::waiting(parent, &cid));
                }
            } else {
                let mut ready = true;
                for parent in &parents {
                    if self.is_processed(parent)? {
                        wb.delete(Table::Sync, layout::waiting(parent, &cid));
                    } else {
                        ready = false;
                    }
                }
                if ready {
                    wb.put(Table::Sync, layout::tagged(layout::READY, &cid), []);
                }
            }
        }
        for entry in self.store.scan(Table::Sync, &[layout::WANTED], b"") {
            let (k, _) = entry?;
            if self.is_processed(&layout::parse_cid(&k[1..])?)? {
                wb.delete(Table::Sync, k);
            }
        }
        self.store.write(wb)?;
        self.ready.clear();
        for entry in self.store.scan(Table::Sync, &[layout::READY], b"") {
            let (k, _) = entry?;
            self.ready.push_back(layout::parse_cid(&k[1..])?);
        }
        Ok(())
    }

    /// Adds to `wb`: `bytes` becomes the served manifest, and the chunks of
    /// the one it replaces that the new one does not reuse go.
    fn replace_served(
        &self,
        wb: &mut WriteBatch,
        bytes: &[u8],
        new: &Manifest,
    ) -> Result<(), Error> {
        let keep: BTreeSet<&Cid> = new.chunks.iter().chain(&new.context).collect();
        if let Some(old) = self.store.get(Table::Meta, META_SERVED)?
            && let Ok(old) = serde_ipld_dagcbor::from_slice::<Manifest>(&old)
        {
            for cid in old.chunks.iter().chain(&old.context) {
                if !keep.contains(cid) {
                    wb.delete(Table::Blocks, cid.to_bytes());
                }
            }
        }
        wb.put(Table::Meta, META_SERVED, bytes);
        Ok(())
    }
}
