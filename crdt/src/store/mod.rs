//! Storage behind the engine: a few ordered byte tables and atomic write
//! batches across them. Two implementations: [`MemoryStore`] for tests and
//! [`FjallStore`] for production.
//!
//! The engine relies on exactly three properties: point reads, ordered
//! streaming scans, and [`Store::write`] applying a whole [`WriteBatch`]
//! atomically (all of it or none of it, even across a crash).

mod fjall_store;
mod memory;

use bytes::Bytes;

/// The fjall crate, for users of [`FjallStore::database`] that keep their own
/// keyspaces beside the engine's.
pub use fjall;
pub use fjall_store::{Durability, FjallOptions, FjallStore};
pub use memory::MemoryStore;

/// The tables the engine keeps. See the crate documentation for what each
/// holds and how its keys are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Block CID → block bytes, for merged and pending blocks alike.
    Blocks,
    /// Block CID → height: the processed markers (the causal context).
    Markers,
    /// Block CID → height: the current heads.
    Heads,
    /// Escaped key ‖ element id → priority ‖ value: every live element.
    Elements,
    /// Key → priority ‖ winning element id ‖ value: the current value.
    Values,
    /// Blocks waiting for parents, and the blocks they wait for.
    Sync,
    /// Format version and flags.
    Meta,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 7] = [
        Table::Blocks,
        Table::Markers,
        Table::Heads,
        Table::Elements,
        Table::Values,
        Table::Sync,
        Table::Meta,
    ];

    /// The table's name (a fjall keyspace name).
    pub fn name(self) -> &'static str {
        match self {
            Table::Blocks => "blocks",
            Table::Markers => "markers",
            Table::Heads => "heads",
            Table::Elements => "elements",
            Table::Values => "values",
            Table::Sync => "sync",
            Table::Meta => "meta",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A failure of the storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// fjall reported an error.
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// A bulk load was given a key out of order.
    #[error("bulk load keys out of order")]
    Unsorted,
}

/// A key-value pair read from a table.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A streaming scan: entries in key order, read lazily.
pub type Scan = Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send>;

/// A key-value pair that may share the store's own buffers (the block it
/// was read from) instead of being copied out of them.
pub type SharedEntry = (Bytes, Bytes);

/// A streaming scan of [`SharedEntry`]s (see [`Store::scan_shared`]).
pub type SharedScan = Box<dyn Iterator<Item = Result<SharedEntry, StoreError>> + Send>;

/// Writes that land together or not at all.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in `table`.
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), Some(value.into())));
    }

    /// Removes `key` from `table`.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), None));
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A bulk load into one table: keys strictly ascending, visible only once
/// [`Ingest::finish`] returns, and not atomic with any other write. Users
/// must make a half-done ingest harmless (the snapshot install reruns it
/// from its plan). Dropping it unfinished writes nothing.
pub trait Ingest {
    /// Sets `key` to `value`; `key` must sort after the previous key.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; `key` must sort after the previous key.
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Makes everything written visible.
    fn finish(self: Box<Self>) -> Result<(), StoreError>;
}

/// The [`Ingest`] of stores without a bulk path ([`MemoryStore`], which
/// holds everything in memory anyway): the load is kept and written as one
/// batch at the end, so a scan under way never sees it.
struct BufferedIngest<'a, S: Store> {
    store: &'a S,
    table: Table,
    batch: WriteBatch,
    last: Option<Vec<u8>>,
}

impl<S: Store> Ingest for BufferedIngest<'_, S> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_ascending(&mut self.last, key)?;
        self.batch.put(self.table, key, value);
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        check_ascending(&mut self.last, key)?;
        self.batch.delete(self.table, key);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), StoreError> {
        self.store.write(self.batch)
    }
}

/// Refuses a key that does not sort after `last` (fjall's ingestion would
/// panic on it), then remembers it.
pub(crate) fn check_ascending(last: &mut Option<Vec<u8>>, key: &[u8]) -> Result<(), StoreError> {
    if last.as_deref().is_some_and(|l| key <= l) {
        return Err(StoreError::Unsorted);
    }
    match last {
        Some(l) => {
            l.clear();
            l.extend_from_slice(key);
        }
        None => *last = Some(key.to_vec()),
    }
    Ok(())
}

/// An ordered, byte-keyed store with atomic multi-table batches.
pub trait Store: Clone + Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether `key` is present.
    fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get(table, key)?.is_some())
    }

    /// Streams the entries whose key starts with `prefix` and is at least
    /// `from`, in key order. The scan does not block writers.
    fn scan(&self, table: Table, prefix: &[u8], from: &[u8]) -> Scan;

    /// [`Store::scan`] without copying each entry: for passes over a whole
    /// table, where the copies of every key and value were most of the
    /// scan's own work (a listing of the pinset). An entry held keeps the
    /// store buffer it shares alive, so hold few at a time.
    fn scan_shared(&self, table: Table, prefix: &[u8], from: &[u8]) -> SharedScan {
        Box::new(
            self.scan(table, prefix, from)
                .map(|entry| entry.map(|(k, v)| (k.into(), v.into()))),
        )
    }

    /// Applies `batch` atomically.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Gives back the disk space of what was deleted from `table`. An LSM
    /// store keeps deleted entries as tombstones until it rewrites their
    /// files; history compaction deletes most of a table at once and asks
    /// for that rewrite. Stores without such files do nothing.
    fn reclaim(&self, _table: Table) -> Result<(), StoreError> {
        Ok(())
    }

    /// Deletes the files that [`Store::reclaim`]s replaced. An LSM store
    /// keeps a replaced file for the readers that may still see it, and
    /// may decide that they are gone only after a later write reaches its
    /// files; call this after such a write. Stores without such files do
    /// nothing.
    fn release(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes what `table` holds in memory out to its files and waits for
    /// it: the back-pressure of a long stream of large writes (snapshot
    /// chunks), which an LSM store would otherwise hold in several sealed
    /// memtables at once while its flushes lag behind. Stores without such
    /// buffers do nothing.
    fn flush(&self, _table: Table) -> Result<(), StoreError> {
        Ok(())
    }

    /// Starts a bulk load into `table` (see [`Ingest`]). By default it is
    /// held in memory and written as one batch.
    fn ingest(&self, table: Table) -> Result<Box<dyn Ingest + '_>, StoreError> {
        Ok(Box::new(BufferedIngest {
            store: self,
            table,
            batch: WriteBatch::new(),
            last: None,
        }))
    }
}

/// Entries one scan of a pass in runs ([`scan_in_runs`]) reads before the
/// next opens: a few milliseconds of reading, so the snapshot each holds is
/// short-lived.
pub const SCAN_RUN: usize = 4096;

/// A scan of all of `table` as a chain of scans of at most `run` entries,
/// each opened after the last key the previous one gave. An error ends
/// the pass, as it ends a plain scan.
///
/// Why: an open fjall scan holds a snapshot of the whole database, and
/// while one is open fjall keeps every version written since in any table,
/// memtables included. A pass that runs while the peer writes (a listing
/// of a million pins, the tracker's start-up pass, a snapshot build that
/// writes its chunks into `blocks` while it reads `elements`) kept all
/// that was written in RAM for the whole pass (792 MiB at 1,000,000 pins
/// for the start-up pass; 156 MiB of the first minute's heap for the
/// snapshot build). Such a pass is not one consistent view: an entry
/// written or deleted in `table` during it may or may not be seen; every
/// entry present throughout is seen once, in order. Callers that need one
/// consistent view of `table` must keep it from changing meanwhile.
pub fn scan_in_runs<S: Store>(
    store: S,
    table: Table,
    run: usize,
) -> impl Iterator<Item = Result<Entry, StoreError>> + Send + 'static {
    in_runs(move |from| store.scan(table, b"", from), run)
}

/// [`scan_in_runs`] of [`Store::scan_shared`]: entries not copied.
pub fn scan_shared_in_runs<S: Store>(
    store: S,
    table: Table,
    run: usize,
) -> impl Iterator<Item = Result<SharedEntry, StoreError>> + Send + 'static {
    in_runs(move |from| store.scan_shared(table, b"", from), run)
}

/// The chain of scans of [`scan_in_runs`]: `open` opens a scan of the
/// table from a key on.
fn in_runs<K, V, I>(
    mut open: impl FnMut(&[u8]) -> I + Send + 'static,
    run: usize,
) -> impl Iterator<Item = Result<(K, V), StoreError>> + Send + 'static
where
    K: AsRef<[u8]>,
    I: Iterator<Item = Result<(K, V), StoreError>> + Send + 'static,
{
    let run = run.max(1);
    let mut scan: Option<I> = None;
    let mut left = 0;
    // Where the next scan starts; `None` once the table is exhausted.
    let mut next: Option<Vec<u8>> = Some(Vec::new());
    std::iter::from_fn(move || {
        if left == 0 {
            // Dropped before the next one opens: its snapshot closes.
            scan = None;
            scan = Some(open(&next.take()?));
            left = run;
        }
        // A scan that ends before `run` entries ends the table.
        let entry = scan.as_mut()?.next()?;
        match &entry {
            Ok((key, _)) => {
                left -= 1;
                if left == 0 {
                    // The smallest key after `key`.
                    let mut after = key.as_ref().to_vec();
                    after.push(0);
                    next = Some(after);
                }
            }
            Err(_) => {
                scan = None;
                next = None;
                left = 0;
            }
        }
        Some(entry)
    })
}

/// The smallest key strictly greater than every key starting with `prefix`,
/// or `None` when no such key exists (an empty or all-0xFF prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass in runs gives every entry once, in order, whether the table
    /// ends inside a run or right at its end.
    #[test]
    fn a_pass_in_runs_reads_every_entry_once() {
        let store = MemoryStore::default();
        let mut wb = WriteBatch::new();
        let keys: Vec<Vec<u8>> = (0u8..6).map(|i| vec![b'k', i]).collect();
        for k in &keys {
            wb.put(Table::Values, k.clone(), vec![1]);
        }
        store.write(wb).unwrap();
        for run in [1, 2, 3, 4, 6, 7] {
            let read: Vec<Vec<u8>> = scan_in_runs(store.clone(), Table::Values, run)
                .map(|e| e.unwrap().0)
                .collect();
            assert_eq!(read, keys, "runs of {run}");
            let shared: Vec<Vec<u8>> = scan_shared_in_runs(store.clone(), Table::Values, run)
                .map(|e| e.unwrap().0.to_vec())
                .collect();
            assert_eq!(shared, keys, "shared, runs of {run}");
        }
        assert_eq!(scan_in_runs(store, Table::Elements, 2).count(), 0);
    }

    /// A bulk load lands only when finished, and a key out of order is a
    /// typed error (fjall's own ingestion would panic), in both stores.
    fn bulk_load_rules<S: Store>(store: &S) {
        let mut dropped = store.ingest(Table::Values).unwrap();
        dropped.put(b"a", b"1").unwrap();
        drop(dropped);
        assert_eq!(store.get(Table::Values, b"a").unwrap(), None);

        let mut load = store.ingest(Table::Values).unwrap();
        load.put(b"a", b"1").unwrap();
        load.put(b"b", b"2").unwrap();
        assert!(matches!(load.put(b"b", b"3"), Err(StoreError::Unsorted)));
        assert!(matches!(load.delete(b"a"), Err(StoreError::Unsorted)));
        load.delete(b"c").unwrap();
        load.finish().unwrap();
        assert_eq!(store.get(Table::Values, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(Table::Values, b"b").unwrap(), Some(b"2".to_vec()));

        // A later load shadows what is there, deletes included.
        let mut load = store.ingest(Table::Values).unwrap();
        load.delete(b"a").unwrap();
        load.put(b"b", b"3").unwrap();
        load.finish().unwrap();
        assert_eq!(store.get(Table::Values, b"a").unwrap(), None);
        assert_eq!(store.get(Table::Values, b"b").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn bulk_loads_land_whole_in_order_or_not_at_all() {
        bulk_load_rules(&MemoryStore::new());
        let dir = tempfile::tempdir().unwrap();
        bulk_load_rules(&FjallStore::open(dir.path(), FjallOptions::default()).unwrap());
    }

    /// The shared scan gives exactly the copying scan's entries, for a
    /// prefix and a start key, with entries in fjall's files (flushed,
    /// some overwritten or deleted since) and in its memtable.
    fn shared_scan_rules<S: Store>(store: &S) {
        let mut wb = WriteBatch::new();
        for i in 0u8..40 {
            wb.put(Table::Values, vec![b'k', i], vec![i; usize::from(i)]);
        }
        wb.put(Table::Values, b"other".to_vec(), b"x".to_vec());
        store.write(wb).unwrap();
        store.flush(Table::Values).unwrap();
        let mut wb = WriteBatch::new();
        wb.put(Table::Values, vec![b'k', 3], b"new".to_vec());
        wb.delete(Table::Values, vec![b'k', 7]);
        wb.put(Table::Values, vec![b'k', 50], b"late".to_vec());
        store.write(wb).unwrap();
        for (prefix, from) in [
            (&b""[..], &b""[..]),
            (b"k", b""),
            (b"k", b"k\x05"),
            (b"", b"l"),
        ] {
            let copied: Vec<Entry> = store
                .scan(Table::Values, prefix, from)
                .map(Result::unwrap)
                .collect();
            let shared: Vec<Entry> = store
                .scan_shared(Table::Values, prefix, from)
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            assert!(!copied.is_empty(), "{prefix:?} from {from:?}");
            assert_eq!(shared, copied, "{prefix:?} from {from:?}");
        }
    }

    #[test]
    fn shared_scans_read_what_copying_scans_read() {
        shared_scan_rules(&MemoryStore::new());
        let dir = tempfile::tempdir().unwrap();
        shared_scan_rules(&FjallStore::open(dir.path(), FjallOptions::default()).unwrap());
    }
}
