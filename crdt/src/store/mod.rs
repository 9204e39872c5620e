//! Storage behind the engine: a few ordered byte tables and atomic write
//! batches across them. Two implementations: [`MemoryStore`] for tests and
//! [`FjallStore`] for production.
//!
//! The engine relies on exactly three properties: point reads, ordered
//! streaming scans, and [`Store::write`] applying a whole [`WriteBatch`]
//! atomically (all of it or none of it, even across a crash).

mod fjall_store;
mod memory;

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
}

/// A key-value pair read from a table.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A streaming scan: entries in key order, read lazily.
pub type Scan = Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send>;

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

    /// Applies `batch` atomically.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Gives back the disk space of what was deleted from `table`. An LSM
    /// store keeps deleted entries as tombstones until it rewrites their
    /// files; history compaction deletes most of a table at once and asks
    /// for that rewrite. Stores without such files do nothing.
    fn reclaim(&self, _table: Table) -> Result<(), StoreError> {
        Ok(())
    }
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
