//! The embedded node's block store and pins, in a fjall database of its
//! own beside the peer's (`<config>/ipfs` by default): blocks are large
//! values with a write-once, delete-in-bulk life, so they get their own
//! journal and key-value separation instead of sharing the CRDT's.
//!
//! Keyspaces (format version 1, in `meta/format`):
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `blocks` | the block's multihash | its bytes |
//! | `pins` | the pinned CID | `[1, mode]` (1 recursive, 2 direct) |
//! | `meta` | `format`, `totals` | `[1]`; repo size and block count (u64 BE each) |
//!
//! Blocks are keyed by multihash, as Kubo keys them: a CIDv0 and a CIDv1
//! of the same bytes are the same block. Every block is checked against
//! its CID before it is written. The totals change in the same batch as
//! the blocks, so `repo/stat` never scans.
//!
//! Garbage collection holds the store's write lock while it marks what
//! recursive pins reach (and direct pins name) and sweeps the rest; adds
//! and pins hold a read lock, so a block written and not yet pinned is
//! never collected under them.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::Cid;
use fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode,
    UserValue,
};
use tokio::sync::RwLock;

use super::dag::{self, Block, BlockError, RAW};
use crate::types::PinMode;

/// The on-disk format written by this version.
const FORMAT: u8 = 1;
/// Deletions per batch during a sweep.
const SWEEP_BATCH: usize = 1024;
/// Memtable of the blocks keyspace (fjall's default is 64 MiB). The
/// memtable holds the block bytes until a flush moves them to blob files,
/// and fjall queues up to four sealed memtables behind the active one: at
/// 64 MiB an add or a fetch of 1 GiB kept ~300 MiB resident, all of it
/// fresh pages. 16 MiB bounds that to ~80 MiB, and the freed memtables'
/// pages are reused before the allocator returns them to the system.
/// Set when the keyspace is created (fjall keeps it).
const BLOCK_MEMTABLE: u64 = 16 << 20;

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
    blocks: Keyspace,
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
    /// `repo/stat` reports as the limit.
    pub fn open(path: &Path, storage_max: u64) -> Result<BlockStore, StoreError> {
        // Uncompressed: most blocks are media or archives already, and
        // lz4 over them cost an add more time than it saved disk (the
        // journal and the blob files each compressed every byte).
        let db = Database::builder(path)
            .cache_size(16 << 20)
            .journal_compression(CompressionType::None)
            .open()?;
        let blocks = db.keyspace("blocks", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(BLOCK_MEMTABLE)
                .with_kv_separation(Some(
                    KvSeparationOptions::default().compression(CompressionType::None),
                ))
        })?;
        let pins = db.keyspace("pins", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        match meta.get("format")? {
            None => meta.insert("format", [FORMAT])?,
            Some(v) if v.as_ref() == [FORMAT] => {}
            Some(v) => {
                return Err(StoreError::Format {
                    path: path.to_path_buf(),
                    found: v.first().copied().unwrap_or(0),
                });
            }
        }
        let totals = match meta.get("totals")? {
            None => (0, 0),
            Some(v) => {
                let b: [u8; 16] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("totals"))?;
                let (size, count) = b.split_at(8);
                (
                    u64::from_be_bytes(size.try_into().unwrap_or_default()),
                    u64::from_be_bytes(count.try_into().unwrap_or_default()),
                )
            }
        };
        Ok(BlockStore {
            inner: Arc::new(Inner {
                db,
                blocks,
                pins,
                meta,
                totals: Mutex::new(totals),
                gc: Arc::new(RwLock::new(())),
                path: path.to_path_buf(),
                storage_max,
            }),
        })
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
        let key = cid.hash().to_bytes();
        let mut totals = self.lock_totals();
        if self.inner.blocks.contains_key(&key)? {
            return Ok(false);
        }
        let next = (totals.0 + data.len() as u64, totals.1 + 1);
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        batch.insert(&self.inner.blocks, key, data);
        batch.insert(&self.inner.meta, "totals", encode_totals(next));
        batch.commit()?;
        *totals = next;
        Ok(true)
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
    /// the batch) are written with the new totals.
    fn write_new<V>(&self, blocks: impl Iterator<Item = (Cid, V)>) -> Result<usize, StoreError>
    where
        V: AsRef<[u8]> + Into<UserValue>,
    {
        let mut totals = self.lock_totals();
        let mut next = *totals;
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        let mut keys = HashSet::new();
        for (cid, data) in blocks {
            let size = data.as_ref().len();
            if size > dag::MAX_BLOCK {
                return Err(BlockError::TooLarge { size }.into());
            }
            let key = cid.hash().to_bytes();
            if keys.contains(&key) || self.inner.blocks.contains_key(&key)? {
                continue;
            }
            batch.insert(&self.inner.blocks, key.clone(), data);
            keys.insert(key);
            next = (next.0 + size as u64, next.1 + 1);
        }
        if keys.is_empty() {
            return Ok(0);
        }
        batch.insert(&self.inner.meta, "totals", encode_totals(next));
        batch.commit()?;
        *totals = next;
        Ok(keys.len())
    }

    /// Syncs everything written so far to disk.
    pub fn persist(&self) -> Result<(), StoreError> {
        Ok(self.inner.db.persist(PersistMode::SyncAll)?)
    }

    /// The bytes of block `cid`, if stored: fjall's own buffer, not a
    /// copy (its values are `bytes::Bytes`), so Bitswap and the gateway
    /// serve what the store read.
    pub fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .inner
            .blocks
            .get(cid.hash().to_bytes())?
            .map(Bytes::from))
    }

    /// Whether block `cid` is stored.
    pub fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.inner.blocks.contains_key(cid.hash().to_bytes())?)
    }

    /// The size of block `cid`, if stored.
    pub fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        Ok(self
            .inner
            .blocks
            .size_of(cid.hash().to_bytes())?
            .map(u64::from))
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
                .insert(cid.to_bytes(), [FORMAT, mode_byte(mode)])?;
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
            .insert(cid.to_bytes(), [FORMAT, mode_byte(PinMode::Recursive)])?;
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
        let mut doomed: Vec<(Vec<u8>, u64)> = Vec::new();
        for guard in self.inner.blocks.iter() {
            let (key, size) = {
                let (k, v) = guard.into_inner()?;
                (k.to_vec(), v.len() as u64)
            };
            if !keep.contains(&key) {
                doomed.push((key, size));
            }
            if doomed.len() >= SWEEP_BATCH {
                self.sweep(&mut doomed, &mut removed)?;
            }
        }
        self.sweep(&mut doomed, &mut removed)?;
        Ok(removed)
    }

    fn sweep(
        &self,
        doomed: &mut Vec<(Vec<u8>, u64)>,
        removed: &mut Vec<Cid>,
    ) -> Result<(), StoreError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let mut totals = self.lock_totals();
        let freed: u64 = doomed.iter().map(|(_, s)| s).sum();
        let next = (
            totals.0.saturating_sub(freed),
            totals.1.saturating_sub(doomed.len() as u64),
        );
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        for (key, _) in doomed.iter() {
            batch.remove(&self.inner.blocks, key.clone());
        }
        batch.insert(&self.inner.meta, "totals", encode_totals(next));
        batch.commit()?;
        *totals = next;
        for (key, _) in doomed.drain(..) {
            if let Ok(mh) = cid::multihash::Multihash::<64>::from_bytes(&key) {
                removed.push(Cid::new_v1(RAW, mh));
            }
        }
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
        [FORMAT, 1] => Ok(PinMode::Recursive),
        [FORMAT, 2] => Ok(PinMode::Direct),
        _ => Err(StoreError::Corrupt("pin record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::dag::{DAG_PB, cid_for};
    use crate::ipfs::pb::{PbLink, PbNode};

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
