//! The embedded node's block store and pins: a fjall database of its own
//! beside the peer's (`<config>/ipfs` by default) for the index, the pins
//! and the totals, and append-only segment files beside it for the block
//! bytes ([`super::segments`]): fjall would write every byte twice (its
//! journal, then a blob file at flush), the segments write it once, as
//! Kubo's flatfs does.
//!
//! Keyspaces (format version 2, in `meta/format`):
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `index` | the block's multihash | where its bytes are ([`Loc`]: segment, offset, length) |
//! | `pins` | the pinned CID | `[1, mode]` (1 recursive, 2 direct) |
//! | `meta` | `format`, `totals`, `seg` + id (u32 BE) | `[2]`; repo size and block count; the segment's length and live bytes (u64 BE each) |
//!
//! A format 1 store (block bytes as values of a `blocks` keyspace) opens
//! as format 2 without a copy: its blocks are read, counted and collected
//! where they are; new blocks go to segments.
//!
//! Blocks are keyed by multihash, as Kubo keys them: a CIDv0 and a CIDv1
//! of the same bytes are the same block. Every block is checked against
//! its CID before it is written. The totals change in the same batch as
//! the blocks, so `repo/stat` never scans.
//!
//! Crash consistency: a block's bytes are appended to its segment before
//! the batch that indexes it commits, and that batch records the
//! segment's new length. At open, a segment longer than recorded is cut
//! back (bytes never indexed); one shorter than recorded (a power loss
//! that kept the journal but not the segment's tail) has the index
//! entries past its end removed, with the totals: the index never points
//! at missing bytes.
//!
//! Garbage collection holds the store's write lock while it marks what
//! recursive pins reach (and direct pins name), sweeps the rest and
//! rewrites the segments less than half live; adds and pins hold a read
//! lock, so a block written and not yet pinned is never collected under
//! them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::Cid;
use fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode,
};
use tokio::sync::RwLock;

use super::dag::{self, Block, BlockError, RAW};
use super::segments::{Loc, SegMeta, Segments, Writer};
use crate::types::PinMode;

/// The on-disk format written by this version.
const FORMAT: u8 = 2;
/// The format before segments: block bytes as fjall values (`blocks`).
const FORMAT_INLINE: u8 = 1;
/// The version byte of a pin record (unchanged since format 1).
const PIN_RECORD: u8 = 1;
/// Bytes of segment data rewritten per index batch during gc.
const REWRITE_BATCH: usize = 4 << 20;
/// The prefix of a segment's record in `meta`.
const SEG_PREFIX: &[u8] = b"seg";
/// Deletions per batch during a sweep.
const SWEEP_BATCH: usize = 1024;

/// Why the block store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("block store: {0}")]
    Fjall(Box<fjall::Error>),
    #[error("block store at {path}: format {found} is not the supported {FORMAT}")]
    Format { path: PathBuf, found: u8 },
    #[error(transparent)]
    Block(Box<BlockError>),
    #[error("block store: a stored record is corrupt ({0})")]
    Corrupt(&'static str),
    #[error("block store: background task failed: {0}")]
    Task(String),
    #[error("block store: segment file: {0}")]
    Io(#[from] std::io::Error),
}

// Boxed: errors travel through every read of the store and most are
// never made.
impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Fjall(Box::new(e))
    }
}

impl From<BlockError> for StoreError {
    fn from(e: BlockError) -> Self {
        StoreError::Block(Box::new(e))
    }
}

/// Repository usage as Kubo's `repo/stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStat {
    pub repo_size: u64,
    pub storage_max: u64,
    pub num_objects: u64,
    pub repo_path: String,
    pub version: String,
}

/// What a DAG walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Blocks present, in visiting order (the root first).
    pub present: Vec<Cid>,
    /// Blocks linked to but not in the store.
    pub missing: Vec<Cid>,
}

/// Garbage collection held off while this lives ([`BlockStore::hold_gc`]).
pub type GcHold = tokio::sync::OwnedRwLockReadGuard<()>;

/// The block store. Cheap to clone.
#[derive(Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// Multihash → [`Loc`].
    index: Keyspace,
    /// A format 1 store's blocks (multihash → bytes), read where they are.
    legacy: Option<Keyspace>,
    segments: Segments,
    pins: Keyspace,
    meta: Keyspace,
    /// (repo size, block count), kept equal to `meta/totals`.
    totals: Mutex<(u64, u64)>,
    /// Read: adding and pinning. Write: garbage collection.
    gc: Arc<RwLock<()>>,
    path: PathBuf,
    storage_max: u64,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl BlockStore {
    /// Opens (or creates) the store in `path`; `storage_max` is what
    /// `repo/stat` reports as the limit. Repairs what a crash left (see
    /// the module docs) before answering.
    pub fn open(path: &Path, storage_max: u64) -> Result<BlockStore, StoreError> {
        // Uncompressed: most blocks are media or archives already, and
        // the index and pins are small.
        let db = Database::builder(path)
            .cache_size(16 << 20)
            .journal_compression(CompressionType::None)
            .open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let legacy = match meta.get("format")? {
            None => {
                meta.insert("format", [FORMAT])?;
                None
            }
            Some(v) if v.as_ref() == [FORMAT] => {
                if db.keyspace_exists("blocks") {
                    Some(Self::legacy_keyspace(&db)?)
                } else {
                    None
                }
            }
            Some(v) if v.as_ref() == [FORMAT_INLINE] => {
                let legacy = Self::legacy_keyspace(&db)?;
                meta.insert("format", [FORMAT])?;
                Some(legacy)
            }
            Some(v) => {
                return Err(StoreError::Format {
                    path: path.to_path_buf(),
                    found: v.first().copied().unwrap_or(0),
                });
            }
        };
        let index = db.keyspace("index", KeyspaceCreateOptions::default)?;
        let pins = db.keyspace("pins", KeyspaceCreateOptions::default)?;
        let mut totals = match meta.get("totals")? {
            None => (0, 0),
            Some(v) => decode_totals(&v)?,
        };
        let mut metas = HashMap::new();
        for guard in meta.prefix(SEG_PREFIX) {
            let (k, v) = guard.into_inner()?;
            let id = k
                .get(SEG_PREFIX.len()..)
                .and_then(|id| <[u8; 4]>::try_from(id).ok())
                .map(u32::from_be_bytes)
                .ok_or(StoreError::Corrupt("segment key"))?;
            let m = SegMeta::decode(&v).ok_or(StoreError::Corrupt("segment record"))?;
            metas.insert(id, m);
        }
        let short = Self::check_segments(path, &metas)?;
        if !short.is_empty() {
            Self::drop_lost(&db, &index, &meta, &mut metas, &short, &mut totals)?;
        }
        let next_id = metas.keys().max().map_or(0, |m| m + 1);
        let segments = Segments::open(path, next_id, metas)?;
        Ok(BlockStore {
            inner: Arc::new(Inner {
                db,
                index,
                legacy,
                segments,
                pins,
                meta,
                totals: Mutex::new(totals),
                gc: Arc::new(RwLock::new(())),
                path: path.to_path_buf(),
                storage_max,
            }),
        })
    }

    fn legacy_keyspace(db: &Database) -> Result<Keyspace, StoreError> {
        Ok(db.keyspace("blocks", || {
            KeyspaceCreateOptions::default().with_kv_separation(Some(
                KvSeparationOptions::default().compression(CompressionType::None),
            ))
        })?)
    }

    /// Compares the segment files with their records: deletes files with
    /// no record (orphans), cuts back those longer than recorded, and
    /// returns the segments shorter than recorded (or missing) with the
    /// length they have.
    fn check_segments(
        path: &Path,
        metas: &HashMap<u32, SegMeta>,
    ) -> Result<HashMap<u32, u64>, StoreError> {
        let files: HashMap<u32, u64> = Segments::list(path)?.into_iter().collect();
        for (&id, &len) in &files {
            match metas.get(&id) {
                None => std::fs::remove_file(Segments::path_in(path, id))?,
                Some(m) if len > m.len => Segments::truncate(path, id, m.len)?,
                Some(_) => {}
            }
        }
        Ok(metas
            .iter()
            .filter_map(|(id, m)| {
                let len = files.get(id).copied().unwrap_or(0);
                (len < m.len).then_some((*id, len))
            })
            .collect())
    }

    /// Removes the index entries whose bytes lie past the end of a short
    /// segment (`short`: id → length on disk), with their totals, and
    /// records the segments' lengths as they are. Scans the index: only
    /// after a crash that lost written bytes.
    fn drop_lost(
        db: &Database,
        index: &Keyspace,
        meta: &Keyspace,
        metas: &mut HashMap<u32, SegMeta>,
        short: &HashMap<u32, u64>,
        totals: &mut (u64, u64),
    ) -> Result<(), StoreError> {
        let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
        let mut next = *totals;
        for guard in index.iter() {
            let (k, v) = guard.into_inner()?;
            let loc = Loc::decode(&v).ok_or(StoreError::Corrupt("block location"))?;
            let Some(&len) = short.get(&loc.seg) else {
                continue;
            };
            if loc.end() > len {
                batch.remove(index, k);
                next = (
                    next.0.saturating_sub(loc.len.into()),
                    next.1.saturating_sub(1),
                );
                if let Some(m) = metas.get_mut(&loc.seg) {
                    m.live = m.live.saturating_sub(loc.len.into());
                }
            }
        }
        for (&id, &len) in short {
            if let Some(m) = metas.get_mut(&id) {
                m.len = len;
                batch.insert(meta, seg_key(id), m.encode());
            }
        }
        batch.insert(meta, "totals", encode_totals(next));
        batch.commit()?;
        *totals = next;
        Ok(())
    }

    /// Holds off garbage collection while the guard lives (an add, whose
    /// blocks are pinned only at its end).
    pub async fn hold_gc(&self) -> GcHold {
        self.inner.gc.clone().read_owned().await
    }

    /// Stores `data` as the block `cid` after checking it; `false` when it
    /// was already there.
    pub fn put(&self, cid: &Cid, data: &[u8]) -> Result<bool, StoreError> {
        dag::verify(cid, data)?;
        Ok(self.write_new(std::iter::once((*cid, data)))? == 1)
    }

    /// Stores `blocks` in one batch, skipping those already there: what
    /// the importer made (their CIDs were computed from these bytes, so
    /// they are not hashed again; only their size is checked). Returns
    /// how many were new. The bytes move into the store without a copy.
    /// Not synced to disk: [`BlockStore::persist`] at the end of an add
    /// does that once (a crash before it loses whole batches, never part
    /// of one: the journal replays a batch or drops it).
    pub fn put_hashed(&self, blocks: Vec<Block>) -> Result<usize, StoreError> {
        self.write_new(blocks.into_iter().map(|b| {
            let cid = *b.cid();
            (cid, b.into_data())
        }))
    }

    /// Stores blocks whose bytes the caller has already checked against
    /// their CIDs (Bitswap hashes each received block to find which want
    /// it answers), in one batch, without hashing them again or copying
    /// them; skips those already there and returns how many were new. An
    /// oversized block refuses the whole batch. Not synced, as
    /// [`BlockStore::put_hashed`].
    pub fn put_verified(&self, blocks: &[(Cid, Bytes)]) -> Result<usize, StoreError> {
        self.write_new(blocks.iter().map(|(cid, data)| (*cid, data.clone())))
    }

    /// One batch of checked blocks: those not yet stored (nor repeated in
    /// the batch) are appended to the active segment, then indexed in one
    /// fjall batch with the segments' new records and the new totals.
    fn write_new<V>(&self, blocks: impl Iterator<Item = (Cid, V)>) -> Result<usize, StoreError>
    where
        V: AsRef<[u8]>,
    {
        let mut writer = self.inner.segments.writer();
        let mut totals = self.lock_totals();
        let mut next = *totals;
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        let mut keys = HashSet::new();
        let mut metas: HashMap<u32, SegMeta> = HashMap::new();
        for (cid, data) in blocks {
            let data = data.as_ref();
            if data.len() > dag::MAX_BLOCK {
                return Err(BlockError::TooLarge { size: data.len() }.into());
            }
            let key = cid.hash().to_bytes();
            if keys.contains(&key) || self.has_key(&key)? {
                continue;
            }
            let loc = writer.append(data)?;
            let m = metas
                .entry(loc.seg)
                .or_insert_with(|| writer.metas.get(&loc.seg).copied().unwrap_or_default());
            m.len = loc.end();
            m.live += u64::from(loc.len);
            batch.insert(&self.inner.index, key.clone(), loc.encode());
            keys.insert(key);
            next = (next.0 + data.len() as u64, next.1 + 1);
        }
        if keys.is_empty() {
            return Ok(0);
        }
        for (id, m) in &metas {
            batch.insert(&self.inner.meta, seg_key(*id), m.encode());
        }
        batch.insert(&self.inner.meta, "totals", encode_totals(next));
        batch.commit()?;
        writer.metas.extend(metas);
        *totals = next;
        Ok(keys.len())
    }

    /// Whether a block with this multihash is stored, in either layout.
    fn has_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        if self.inner.index.contains_key(key)? {
            return Ok(true);
        }
        match &self.inner.legacy {
            Some(legacy) => Ok(legacy.contains_key(key)?),
            None => Ok(false),
        }
    }

    /// Syncs everything written so far to disk: the segments first, then
    /// the index that points into them.
    pub fn persist(&self) -> Result<(), StoreError> {
        self.inner.segments.writer().sync()?;
        Ok(self.inner.db.persist(PersistMode::SyncAll)?)
    }

    /// The bytes of block `cid`, if stored (read from its segment).
    pub fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let key = cid.hash().to_bytes();
        // A gc rewriting the segment between the index read and the file
        // read moves the block first: read the index again. Three tries
        // at most (gc is exclusive, so a second move needs a second gc).
        for _ in 0..3 {
            let Some(v) = self.inner.index.get(&key)? else {
                return match &self.inner.legacy {
                    Some(legacy) => Ok(legacy.get(&key)?.map(Bytes::from)),
                    None => Ok(None),
                };
            };
            let loc = Loc::decode(&v).ok_or(StoreError::Corrupt("block location"))?;
            if let Some(data) = self.inner.segments.read(loc)? {
                return Ok(Some(Bytes::from(data)));
            }
        }
        Err(StoreError::Corrupt(
            "block location points at a missing segment",
        ))
    }

    /// Whether block `cid` is stored.
    pub fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.has_key(&cid.hash().to_bytes())
    }

    /// The size of block `cid`, if stored.
    pub fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        let key = cid.hash().to_bytes();
        if let Some(v) = self.inner.index.get(&key)? {
            let loc = Loc::decode(&v).ok_or(StoreError::Corrupt("block location"))?;
            return Ok(Some(loc.len.into()));
        }
        match &self.inner.legacy {
            Some(legacy) => Ok(legacy.size_of(&key)?.map(u64::from)),
            None => Ok(None),
        }
    }

    /// Walks the DAG under `root` breadth-first through the stored blocks,
    /// `max_depth` levels below it at most (`None`: all). Links of missing
    /// blocks cannot be followed: they are listed as missing.
    pub fn walk(&self, root: &Cid, max_depth: Option<u64>) -> Result<Walk, StoreError> {
        let mut walk = Walk::default();
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([(*root, 0u64)]);
        while let Some((cid, depth)) = queue.pop_front() {
            if !seen.insert(cid.hash().to_bytes()) {
                continue;
            }
            let Some(data) = self.get(&cid)? else {
                walk.missing.push(cid);
                continue;
            };
            walk.present.push(cid);
            if max_depth.is_some_and(|max| depth >= max) {
                continue;
            }
            for link in dag::links(&cid, &data)? {
                queue.push_back((link, depth + 1));
            }
        }
        Ok(walk)
    }

    /// Pins `cid` with `mode` if every block it needs is stored (the root
    /// for a direct pin, the whole DAG for a recursive one). Otherwise
    /// nothing changes and the missing blocks are returned. Blocking: call
    /// it off the async threads.
    pub fn try_pin(&self, cid: &Cid, mode: PinMode) -> Result<Vec<Cid>, StoreError> {
        let _hold = self.inner.gc.blocking_read();
        // Every block under a recursive pin is kept (gc spares what
        // recursive pins reach, and nothing else removes blocks), so the
        // DAG needs no walk: the tracker pins again what an add pinned.
        if self.pin_of(cid)? == Some(PinMode::Recursive) {
            return Ok(Vec::new());
        }
        let missing = match mode {
            PinMode::Direct if self.has(cid)? => Vec::new(),
            PinMode::Direct => vec![*cid],
            PinMode::Recursive => self.walk(cid, None)?.missing,
        };
        if !missing.is_empty() {
            return Ok(missing);
        }
        self.record_pin(cid, mode)?;
        Ok(Vec::new())
    }

    /// Records the pin without looking at its blocks: for a caller that
    /// holds [`BlockStore::hold_gc`] and saw every block the pin needs
    /// stored (a recursive pin that fetched its DAG), where
    /// [`BlockStore::try_pin`] would read the whole DAG again.
    pub fn record_pin(&self, cid: &Cid, mode: PinMode) -> Result<(), StoreError> {
        let current = self.pin_of(cid)?;
        // A recursive pin is not weakened to a direct one (Kubo refuses
        // that too); everything else records the asked mode.
        if !(current == Some(PinMode::Recursive) && mode == PinMode::Direct) {
            self.inner
                .pins
                .insert(cid.to_bytes(), [PIN_RECORD, mode_byte(mode)])?;
        }
        Ok(())
    }

    /// Pins `cid` recursively without walking its DAG: for the roots of
    /// an add, every block of which that add wrote (or found stored) while
    /// `_held` kept garbage collection away. The walk would read back every
    /// byte just written.
    pub fn pin_added(&self, cid: &Cid, _held: &GcHold) -> Result<(), StoreError> {
        self.inner
            .pins
            .insert(cid.to_bytes(), [PIN_RECORD, mode_byte(PinMode::Recursive)])?;
        Ok(())
    }

    /// Removes the pin on `cid`; `false` when there was none.
    pub fn unpin(&self, cid: &Cid) -> Result<bool, StoreError> {
        let key = cid.to_bytes();
        if !self.inner.pins.contains_key(&key)? {
            return Ok(false);
        }
        self.inner.pins.remove(key)?;
        Ok(true)
    }

    /// How `cid` itself is pinned (not indirectly).
    pub fn pin_of(&self, cid: &Cid) -> Result<Option<PinMode>, StoreError> {
        match self.inner.pins.get(cid.to_bytes())? {
            None => Ok(None),
            Some(v) => decode_pin(&v).map(Some),
        }
    }

    /// Up to `limit` pins after `after` (exclusive), in key order: one page
    /// of a listing that never holds all pins.
    pub fn pins_page(
        &self,
        after: Option<&Cid>,
        limit: usize,
    ) -> Result<Vec<(Cid, PinMode)>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(c) => Bound::Excluded(c.to_bytes()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for guard in self
            .inner
            .pins
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (k, v) = guard.into_inner()?;
            let cid = Cid::try_from(k.as_ref()).map_err(|_| StoreError::Corrupt("pin key"))?;
            out.push((cid, decode_pin(&v)?));
        }
        Ok(out)
    }

    /// Whether `cid` is reachable from a recursive pin (other than being
    /// that pin's root). Walks every recursive pin: for `pin/ls` of one CID.
    pub fn pinned_indirectly(&self, cid: &Cid) -> Result<Option<Cid>, StoreError> {
        let mut after = None;
        loop {
            let page = self.pins_page(after.as_ref(), 256)?;
            let Some((last, _)) = page.last() else {
                return Ok(None);
            };
            after = Some(*last);
            for (root, mode) in page {
                if mode != PinMode::Recursive || root.hash() == cid.hash() {
                    continue;
                }
                let walk = self.walk(&root, None)?;
                if walk.present.iter().any(|c| c.hash() == cid.hash()) {
                    return Ok(Some(root));
                }
            }
        }
    }

    /// Removes every block that no pin protects: not named by a direct pin,
    /// not reachable from a recursive one. Returns the removed blocks as
    /// CIDv1 raw (all the store knows of them is their multihash, as Kubo
    /// reports them). Blocking.
    pub fn gc(&self) -> Result<Vec<Cid>, StoreError> {
        let _exclusive = self.inner.gc.blocking_write();
        let mut keep: HashSet<Vec<u8>> = HashSet::new();
        let mut after = None;
        loop {
            let page = self.pins_page(after.as_ref(), 256)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (cid, mode) in page {
                match mode {
                    PinMode::Direct => {
                        keep.insert(cid.hash().to_bytes());
                    }
                    PinMode::Recursive => {
                        for c in self.walk(&cid, None)?.present {
                            keep.insert(c.hash().to_bytes());
                        }
                    }
                }
            }
        }
        let mut removed = Vec::new();
        let mut doomed: Vec<(Vec<u8>, u64, Option<Loc>)> = Vec::new();
        for guard in self.inner.index.iter() {
            let (k, v) = guard.into_inner()?;
            if keep.contains(k.as_ref()) {
                continue;
            }
            let loc = Loc::decode(&v).ok_or(StoreError::Corrupt("block location"))?;
            doomed.push((k.to_vec(), loc.len.into(), Some(loc)));
            if doomed.len() >= SWEEP_BATCH {
                self.sweep(&mut doomed, &mut removed)?;
            }
        }
        if let Some(legacy) = &self.inner.legacy {
            for guard in legacy.iter() {
                let (k, v) = guard.into_inner()?;
                if !keep.contains(k.as_ref()) {
                    doomed.push((k.to_vec(), v.len() as u64, None));
                }
                if doomed.len() >= SWEEP_BATCH {
                    self.sweep(&mut doomed, &mut removed)?;
                }
            }
        }
        self.sweep(&mut doomed, &mut removed)?;
        self.rewrite_segments()?;
        Ok(removed)
    }

    /// Removes one batch of unpinned blocks (`Some` location: in a
    /// segment; `None`: in the format 1 keyspace) with their totals and
    /// their segments' live bytes.
    fn sweep(
        &self,
        doomed: &mut Vec<(Vec<u8>, u64, Option<Loc>)>,
        removed: &mut Vec<Cid>,
    ) -> Result<(), StoreError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let mut writer = self.inner.segments.writer();
        let mut totals = self.lock_totals();
        let freed: u64 = doomed.iter().map(|(_, s, _)| s).sum();
        let next = (
            totals.0.saturating_sub(freed),
            totals.1.saturating_sub(doomed.len() as u64),
        );
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        let mut metas: HashMap<u32, SegMeta> = HashMap::new();
        for (key, _, loc) in doomed.iter() {
            match (loc, &self.inner.legacy) {
                (Some(loc), _) => {
                    batch.remove(&self.inner.index, key.clone());
                    let m = metas
                        .entry(loc.seg)
                        .or_insert_with(|| writer.metas.get(&loc.seg).copied().unwrap_or_default());
                    m.live = m.live.saturating_sub(loc.len.into());
                }
                (None, Some(legacy)) => batch.remove(legacy, key.clone()),
                (None, None) => {}
            }
        }
        for (id, m) in &metas {
            batch.insert(&self.inner.meta, seg_key(*id), m.encode());
        }
        batch.insert(&self.inner.meta, "totals", encode_totals(next));
        batch.commit()?;
        writer.metas.extend(metas);
        *totals = next;
        for (key, _, _) in doomed.drain(..) {
            if let Ok(mh) = cid::multihash::Multihash::<64>::from_bytes(&key) {
                removed.push(Cid::new_v1(RAW, mh));
            }
        }
        Ok(())
    }

    /// Gives back the space of collected blocks: every segment less than
    /// half live (the active one is sealed first, so it counts too) has
    /// its live blocks appended to the active segment, the index moved to
    /// the copies and synced, and then is deleted. Called by gc, whose
    /// exclusive lock keeps new index entries out of these segments.
    fn rewrite_segments(&self) -> Result<(), StoreError> {
        let mut writer = self.inner.segments.writer();
        writer.seal();
        let victims: HashSet<u32> = writer
            .metas
            .iter()
            .filter(|(_, m)| m.live * 2 < m.len || m.live == 0)
            .map(|(id, _)| *id)
            .collect();
        if victims.is_empty() {
            return Ok(());
        }
        let mut moves: Vec<(Vec<u8>, Loc)> = Vec::new();
        for guard in self.inner.index.iter() {
            let (k, v) = guard.into_inner()?;
            let loc = Loc::decode(&v).ok_or(StoreError::Corrupt("block location"))?;
            if victims.contains(&loc.seg) {
                moves.push((k.to_vec(), loc));
            }
        }
        // In segment order: each victim is read front to back.
        moves.sort_unstable_by_key(|(_, l)| (l.seg, l.offset));
        let mut chunk = moves.as_slice();
        while !chunk.is_empty() {
            let mut bytes = 0;
            let n = chunk
                .iter()
                .take_while(|(_, l)| {
                    bytes += l.len as usize;
                    bytes <= REWRITE_BATCH
                })
                .count()
                .max(1);
            let (now, rest) = chunk.split_at(n);
            self.move_blocks(&mut writer, now)?;
            chunk = rest;
        }
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        for id in &victims {
            batch.remove(&self.inner.meta, seg_key(*id));
        }
        batch.commit()?;
        // The moved index and the copies are on disk before any file goes.
        writer.sync()?;
        self.inner.db.persist(PersistMode::SyncAll)?;
        for id in victims {
            writer.metas.remove(&id);
            self.inner.segments.delete(&mut writer, id)?;
        }
        writer.sync()?;
        Ok(())
    }

    /// Copies blocks out of a segment being rewritten and points the
    /// index at the copies, in one batch.
    fn move_blocks(
        &self,
        writer: &mut Writer,
        blocks: &[(Vec<u8>, Loc)],
    ) -> Result<(), StoreError> {
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        let mut metas: HashMap<u32, SegMeta> = HashMap::new();
        for (key, old) in blocks {
            let data = self
                .inner
                .segments
                .read(*old)?
                .ok_or(StoreError::Corrupt("a live block's segment is missing"))?;
            let new = writer.append(&data)?;
            for (seg, len, live) in [(old.seg, None, -1i64), (new.seg, Some(new.end()), 1)] {
                let m = metas
                    .entry(seg)
                    .or_insert_with(|| writer.metas.get(&seg).copied().unwrap_or_default());
                if let Some(len) = len {
                    m.len = len;
                }
                m.live = m.live.saturating_add_signed(live * i64::from(old.len));
            }
            batch.insert(&self.inner.index, key.clone(), new.encode());
        }
        for (id, m) in &metas {
            batch.insert(&self.inner.meta, seg_key(*id), m.encode());
        }
        batch.commit()?;
        writer.metas.extend(metas);
        Ok(())
    }

    /// Usage, as `repo/stat` reports it.
    pub fn stat(&self) -> StoreStat {
        let (repo_size, num_objects) = *self.lock_totals();
        StoreStat {
            repo_size,
            storage_max: self.inner.storage_max,
            num_objects,
            repo_path: self.inner.path.display().to_string(),
            version: format!("pincluster-blocks@{FORMAT}"),
        }
    }

    fn lock_totals(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        // A panic while holding it cannot leave the totals half-written
        // (they are replaced whole), so a poisoned lock is still usable.
        self.inner
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn seg_key(id: u32) -> Vec<u8> {
    let mut k = SEG_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn decode_totals(v: &[u8]) -> Result<(u64, u64), StoreError> {
    let b: [u8; 16] = v.try_into().map_err(|_| StoreError::Corrupt("totals"))?;
    let (size, count) = b.split_at(8);
    Ok((
        u64::from_be_bytes(size.try_into().unwrap_or_default()),
        u64::from_be_bytes(count.try_into().unwrap_or_default()),
    ))
}

fn encode_totals((size, count): (u64, u64)) -> Vec<u8> {
    let mut v = size.to_be_bytes().to_vec();
    v.extend_from_slice(&count.to_be_bytes());
    v
}

fn mode_byte(mode: PinMode) -> u8 {
    match mode {
        PinMode::Recursive => 1,
        PinMode::Direct => 2,
    }
}

fn decode_pin(v: &[u8]) -> Result<PinMode, StoreError> {
    match v {
        [PIN_RECORD, 1] => Ok(PinMode::Recursive),
        [PIN_RECORD, 2] => Ok(PinMode::Direct),
        _ => Err(StoreError::Corrupt("pin record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::dag::{DAG_PB, cid_for};
    use crate::ipfs::pb::{PbLink, PbNode};
    use std::io::Write as _;

    fn raw(data: &[u8]) -> (Cid, Vec<u8>) {
        (cid_for(RAW, data, false), data.to_vec())
    }

    /// A dag-pb node linking `children`.
    fn parent(children: &[Cid]) -> (Cid, Vec<u8>) {
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    cid: *c,
                    name: Some(String::new()),
                    tsize: Some(1),
                })
                .collect(),
            data: None,
        };
        let bytes = node.encode();
        (cid_for(DAG_PB, &bytes, true), bytes)
    }

    #[test]
    fn gc_keeps_what_pins_reach_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path(), 100).unwrap();
        let (a, a_bytes) = raw(b"leaf a");
        let (b, b_bytes) = raw(b"leaf b");
        let (loose, loose_bytes) = raw(b"nobody pins me");
        let (direct, direct_bytes) = raw(b"pinned directly");
        let (mid, mid_bytes) = parent(&[a]);
        let (root, root_bytes) = parent(&[mid, b]);
        for (cid, bytes) in [
            (a, &a_bytes),
            (b, &b_bytes),
            (loose, &loose_bytes),
            (direct, &direct_bytes),
            (mid, &mid_bytes),
            (root, &root_bytes),
        ] {
            assert!(store.put(&cid, bytes).unwrap());
        }
        assert_eq!(store.stat().num_objects, 6);
        assert_eq!(store.try_pin(&root, PinMode::Recursive).unwrap(), vec![]);
        assert_eq!(store.try_pin(&direct, PinMode::Direct).unwrap(), vec![]);
        assert_eq!(store.pinned_indirectly(&a).unwrap(), Some(root));

        let removed = store.gc().unwrap();
        assert_eq!(removed, vec![Cid::new_v1(RAW, *loose.hash())]);
        for kept in [a, b, mid, root, direct] {
            assert!(store.has(&kept).unwrap(), "{kept} collected");
        }
        assert!(!store.has(&loose).unwrap());
        assert_eq!(store.stat().num_objects, 5);

        // Unpinned, the whole DAG goes; the totals follow.
        assert!(store.unpin(&root).unwrap());
        assert_eq!(store.gc().unwrap().len(), 4);
        let stat = store.stat();
        assert_eq!(
            (stat.num_objects, stat.repo_size),
            (1, direct_bytes.len() as u64)
        );
    }

    #[test]
    fn pins_need_their_blocks_and_bad_blocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path(), 100).unwrap();
        let (a, _) = raw(b"never stored");
        let (root, root_bytes) = parent(&[a]);
        store.put(&root, &root_bytes).unwrap();
        assert_eq!(store.try_pin(&root, PinMode::Recursive).unwrap(), vec![a]);
        assert_eq!(store.pin_of(&root).unwrap(), None);
        // A direct pin needs the root only.
        assert_eq!(store.try_pin(&root, PinMode::Direct).unwrap(), vec![]);
        assert_eq!(store.walk(&root, Some(0)).unwrap().missing, vec![]);

        let (c, _) = raw(b"right bytes");
        assert!(matches!(
            store.put(&c, b"wrong bytes"),
            Err(StoreError::Block(_))
        ));
        assert!(!store.has(&c).unwrap());
    }

    /// The importer's batches: a block repeated in a batch or already
    /// stored is written and counted once, an oversized one refuses the
    /// whole batch, and the blocks are there after a reopen.
    #[test]
    fn hashed_batches_store_each_block_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Block::hashed(RAW, b"chunk a".to_vec(), false);
        let b = Block::hashed(RAW, b"chunk b".to_vec(), false);
        {
            let store = BlockStore::open(dir.path(), 100).unwrap();
            assert_eq!(store.put_hashed(vec![a.clone(), a.clone()]).unwrap(), 1);
            assert_eq!(store.put_hashed(vec![a.clone(), b.clone()]).unwrap(), 1);
            assert_eq!(store.put_hashed(vec![b.clone()]).unwrap(), 0);
            let huge = Block::hashed(RAW, vec![0; dag::MAX_BLOCK + 1], false);
            let c = Block::hashed(RAW, b"chunk c".to_vec(), false);
            assert!(matches!(
                store.put_hashed(vec![c.clone(), huge]),
                Err(StoreError::Block(_))
            ));
            assert!(!store.has(c.cid()).unwrap());
            store.persist().unwrap();
        }
        let store = BlockStore::open(dir.path(), 100).unwrap();
        let stat = store.stat();
        assert_eq!((stat.num_objects, stat.repo_size), (2, 14));
        assert_eq!(
            store.get(b.cid()).unwrap().as_deref(),
            Some(&b"chunk b"[..])
        );
    }

    /// An add's roots are pinned without a walk, and pinning one again
    /// (the tracker, after the add) needs no walk either: gc keeps its DAG.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn added_roots_are_pinned_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path(), 100).unwrap();
        let leaf = Block::hashed(RAW, b"leaf".to_vec(), false);
        let (root, root_bytes) = parent(&[*leaf.cid()]);
        let hold = store.hold_gc().await;
        store.put_hashed(vec![leaf.clone()]).unwrap();
        store.put(&root, &root_bytes).unwrap();
        store.pin_added(&root, &hold).unwrap();
        drop(hold);
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            assert_eq!(s.pin_of(&root).unwrap(), Some(PinMode::Recursive));
            assert_eq!(s.try_pin(&root, PinMode::Recursive).unwrap(), vec![]);
            assert_eq!(s.gc().unwrap(), vec![]);
            assert!(s.has(leaf.cid()).unwrap());
        })
        .await
        .unwrap();
    }

    /// Total bytes of the segment files.
    fn segment_bytes(dir: &Path) -> u64 {
        Segments::list(dir).unwrap().iter().map(|(_, l)| l).sum()
    }

    fn chunk(seed: u8, len: usize) -> Block {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        Block::hashed(RAW, data, false)
    }

    /// A power loss that kept the index's journal but not the tail of a
    /// segment: at the next open the blocks whose bytes are gone are not
    /// in the index (nor in the totals), the others read back whole, and
    /// an unindexed tail or an orphan segment is removed.
    #[test]
    fn a_lost_segment_tail_leaves_an_index_that_points_only_at_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let blocks: Vec<Block> = (1..=8).map(|i| chunk(i, 1000 + usize::from(i))).collect();
        let kept_len: u64 = blocks[..5].iter().map(|b| b.data().len() as u64).sum();
        {
            let store = BlockStore::open(dir.path(), 100).unwrap();
            store.put_hashed(blocks[..5].to_vec()).unwrap();
            store.put_hashed(blocks[5..].to_vec()).unwrap();
            store.persist().unwrap();
        }
        let (id, len) = Segments::list(dir.path()).unwrap()[0];
        assert!(len > kept_len);
        // The last three blocks' bytes never reached the disk.
        Segments::truncate(dir.path(), id, kept_len).unwrap();
        // An orphan: a segment whose first batch never committed.
        std::fs::write(Segments::path_in(dir.path(), id + 5), b"junk").unwrap();
        {
            let store = BlockStore::open(dir.path(), 100).unwrap();
            for b in &blocks[..5] {
                assert_eq!(store.get(b.cid()).unwrap().as_deref(), Some(b.data()));
            }
            for b in &blocks[5..] {
                assert!(!store.has(b.cid()).unwrap(), "index points past the end");
                assert_eq!(store.get(b.cid()).unwrap(), None);
            }
            let stat = store.stat();
            assert_eq!((stat.num_objects, stat.repo_size), (5, kept_len));
            assert_eq!(Segments::list(dir.path()).unwrap(), vec![(id, kept_len)]);
            // Written again, the lost blocks come back (into a new segment).
            assert_eq!(store.put_hashed(blocks[5..].to_vec()).unwrap(), 3);
            store.persist().unwrap();
        }
        // A tail written but never indexed (a batch that did not commit)
        // is cut off.
        let segs = Segments::list(dir.path()).unwrap();
        let (last, last_len) = *segs.last().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(Segments::path_in(dir.path(), last))
            .unwrap()
            .write_all(b"never indexed")
            .unwrap();
        let store = BlockStore::open(dir.path(), 100).unwrap();
        assert_eq!(
            Segments::list(dir.path()).unwrap().last(),
            Some(&(last, last_len))
        );
        for b in &blocks {
            assert_eq!(store.get(b.cid()).unwrap().as_deref(), Some(b.data()));
        }
        assert_eq!(store.stat().num_objects, 8);
    }

    /// gc gives the space back: segments mostly garbage are rewritten
    /// and deleted, the pinned blocks in them read back from the copies,
    /// and the records survive a reopen.
    #[test]
    fn gc_rewrites_segments_and_frees_their_space() {
        let dir = tempfile::tempdir().unwrap();
        let keep = chunk(3, 50_000);
        let garbage: Vec<Block> = (10..20).map(|i| chunk(i, 50_000)).collect();
        let store = BlockStore::open(dir.path(), 100).unwrap();
        let mut batch = garbage.clone();
        batch.insert(4, keep.clone());
        store.put_hashed(batch).unwrap();
        assert_eq!(store.try_pin(keep.cid(), PinMode::Direct).unwrap(), vec![]);
        assert_eq!(segment_bytes(dir.path()), 11 * 50_000);
        assert_eq!(store.gc().unwrap().len(), 10);
        assert_eq!(segment_bytes(dir.path()), 50_000);
        assert_eq!(store.get(keep.cid()).unwrap().as_deref(), Some(keep.data()));
        // After a restart new blocks go to a new segment; all garbage, it
        // is deleted whole, and the half-live one is left as it is.
        drop(store);
        let store = BlockStore::open(dir.path(), 100).unwrap();
        assert_eq!(store.get(keep.cid()).unwrap().as_deref(), Some(keep.data()));
        store.put_hashed(vec![garbage[0].clone()]).unwrap();
        assert_eq!(Segments::list(dir.path()).unwrap().len(), 2);
        assert_eq!(store.gc().unwrap().len(), 1);
        assert_eq!(segment_bytes(dir.path()), 50_000);
        let stat = store.stat();
        assert_eq!((stat.num_objects, stat.repo_size), (1, 50_000));
        assert!(store.unpin(keep.cid()).unwrap());
        store.gc().unwrap();
        assert_eq!(segment_bytes(dir.path()), 0);
        assert_eq!(store.stat().num_objects, 0);
    }

    /// A format 1 store (block bytes in the `blocks` keyspace) opens as
    /// format 2 without a copy: its blocks read, count and are collected
    /// where they are, and new blocks go to segments.
    #[test]
    fn a_format_1_store_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let (old, old_bytes) = raw(b"stored by format 1");
        let (loose, loose_bytes) = raw(b"format 1, unpinned");
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let blocks = BlockStore::legacy_keyspace(&db).unwrap();
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
            let pins = db.keyspace("pins", KeyspaceCreateOptions::default).unwrap();
            blocks
                .insert(old.hash().to_bytes(), old_bytes.clone())
                .unwrap();
            blocks
                .insert(loose.hash().to_bytes(), loose_bytes.clone())
                .unwrap();
            meta.insert("format", [FORMAT_INLINE]).unwrap();
            let size = (old_bytes.len() + loose_bytes.len()) as u64;
            meta.insert("totals", encode_totals((size, 2))).unwrap();
            pins.insert(old.to_bytes(), [FORMAT_INLINE, 2]).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = BlockStore::open(dir.path(), 100).unwrap();
        assert_eq!(store.get(&old).unwrap().as_deref(), Some(&old_bytes[..]));
        assert_eq!(store.size(&old).unwrap(), Some(old_bytes.len() as u64));
        assert_eq!(store.pin_of(&old).unwrap(), Some(PinMode::Direct));
        assert!(!store.put(&old, &old_bytes).unwrap(), "stored once");
        let (new, new_bytes) = raw(b"stored by format 2");
        assert!(store.put(&new, &new_bytes).unwrap());
        assert_eq!(store.gc().unwrap().len(), 2);
        assert!(store.has(&old).unwrap());
        assert!(!store.has(&loose).unwrap() && !store.has(&new).unwrap());
        assert_eq!(store.stat().num_objects, 1);
        drop(store);
        let store = BlockStore::open(dir.path(), 100).unwrap();
        assert_eq!(store.get(&old).unwrap().as_deref(), Some(&old_bytes[..]));
    }

    #[test]
    fn the_store_survives_a_reopen_and_refuses_an_unknown_format() {
        let dir = tempfile::tempdir().unwrap();
        let (a, bytes) = raw(b"kept across restarts");
        {
            let store = BlockStore::open(dir.path(), 100).unwrap();
            store.put(&a, &bytes).unwrap();
            store.try_pin(&a, PinMode::Recursive).unwrap();
        }
        let store = BlockStore::open(dir.path(), 100).unwrap();
        assert_eq!(store.get(&a).unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(store.pin_of(&a).unwrap(), Some(PinMode::Recursive));
        assert_eq!(store.stat().num_objects, 1);
        store.inner.meta.insert("format", [9u8]).unwrap();
        drop(store);
        assert!(matches!(
            BlockStore::open(dir.path(), 100),
            Err(StoreError::Format { found: 9, .. })
        ));
    }
}
