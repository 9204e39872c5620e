//! The production [`Store`]: one fjall keyspace per [`Table`] in one
//! database, so a [`WriteBatch`] maps onto one fjall batch, which fjall
//! journals and recovers atomically across keyspaces.

use std::path::Path;
use std::str::FromStr;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use serde::Serialize;

use super::{
    Ingest, Scan, SharedScan, Store, StoreError, Table, WriteBatch, check_ascending, prefix_end,
};

/// How far a committed batch is pushed before `write` returns. Written
/// (serde, [`FromStr`]) as `process` or `sync`, the words of the peer's
/// `datastore.fjall.durability` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Into the operating system's buffers: survives the process being
    /// killed, not a power loss. One `write(2)` per batch.
    #[default]
    Process,
    /// fsync'ed: survives a power loss, at the cost of a sync per batch.
    Sync,
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Durability::Process),
            "sync" => Ok(Durability::Sync),
            other => Err(format!("{other:?} is not \"process\" or \"sync\"")),
        }
    }
}

/// Tuning of a [`FjallStore`]. Memory is bounded by `cache_bytes`, plus
/// one memtable of `memtable_bytes` per table being written (and those
/// sealed and waiting for their flush), plus fjall's pinned filters and
/// indexes, whatever the number of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FjallOptions {
    /// How far each batch is pushed before a write returns.
    pub durability: Durability,
    /// Block cache, in bytes.
    pub cache_bytes: u64,
    /// Largest memtable of one table, in bytes; fjall flushes it when full.
    pub memtable_bytes: u64,
}

impl Default for FjallOptions {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            cache_bytes: 64 * 1024 * 1024,
            memtable_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Values of `blocks` from this size on are kept apart from the keys, in
/// fjall's blob files: snapshot chunks (up to 512 KiB each, some 330 bytes
/// per pin, 3.3 GB at 10,000,000 pins) and the large deltas of an import.
/// In a plain LSM table each compaction rewrites them, and their CIDs are
/// random, so every merge of new tables into a level rewrites most of that
/// level; the 2,000,000-pin join's profile put 13 % of the joiner's CPU in
/// fjall's compactions, and as much again in a fjall worker waiting for
/// them in a busy loop (BENCHMARKS.md). Apart, a compaction moves a key
/// and a pointer, and a blob file is rewritten only once enough of it is
/// deleted (`age_cutoff(1.0)`: any such file, not only the oldest). Set
/// when the table is created: a store made by an earlier version keeps its
/// plain `blocks` table.
const BLOB_BYTES: u32 = 16 * 1024;

/// A [`Store`] on disk, in fjall. Clones share the same database.
#[derive(Clone)]
pub struct FjallStore {
    db: Database,
    tables: Vec<Keyspace>,
    durability: Durability,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: impl AsRef<Path>, options: FjallOptions) -> Result<Self, StoreError> {
        let db = Database::builder(path.as_ref())
            .cache_size(options.cache_bytes)
            .open()?;
        let memtable = options.memtable_bytes.max(1024 * 1024);
        let tables = Table::ALL
            .iter()
            .map(|t| {
                db.keyspace(t.name(), || {
                    let options = KeyspaceCreateOptions::default().max_memtable_size(memtable);
                    match t {
                        Table::Blocks => options.with_kv_separation(Some(
                            KvSeparationOptions::default()
                                .separation_threshold(BLOB_BYTES)
                                .age_cutoff(1.0),
                        )),
                        _ => options,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            db,
            tables,
            durability: options.durability,
        })
    }

    fn table(&self, table: Table) -> &Keyspace {
        &self.tables[table.index()]
    }

    /// The fjall scan of [`Store::scan`]'s entries.
    fn range(&self, table: Table, prefix: &[u8], from: &[u8]) -> fjall::Iter {
        let start = if from > prefix {
            from.to_vec()
        } else {
            prefix.to_vec()
        };
        let ks = self.table(table);
        match prefix_end(prefix) {
            Some(end) => ks.range(start..end),
            None => ks.range(start..),
        }
    }

    /// The database under the store, for its upkeep (flushing quiet
    /// memtables). Keyspaces written while a snapshot of the state is open
    /// belong in another database: fjall keeps every version written in a
    /// database while any of its snapshots lives.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Bytes of one table's files on disk (memtables and the journal not
    /// counted), for reports and tests.
    pub fn table_disk_space(&self, table: Table) -> u64 {
        self.table(table).disk_space()
    }

    /// Bytes on disk, for reports and benchmarks.
    pub fn disk_space(&self) -> Result<u64, StoreError> {
        Ok(self.db.disk_space()?)
    }
}

impl Store for FjallStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.table(table).get(key)?.map(|v| v.to_vec()))
    }

    fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.table(table).contains_key(key)?)
    }

    fn scan(&self, table: Table, prefix: &[u8], from: &[u8]) -> Scan {
        Box::new(self.range(table, prefix, from).map(|guard| {
            let (k, v) = guard.into_inner()?;
            Ok((k.to_vec(), v.to_vec()))
        }))
    }

    fn scan_shared(&self, table: Table, prefix: &[u8], from: &[u8]) -> SharedScan {
        // fjall's slices are `Bytes` (its `bytes_1` feature) that share the
        // block they were read from: handed over as they are.
        Box::new(self.range(table, prefix, from).map(|guard| {
            let (k, v) = guard.into_inner()?;
            Ok((k.into(), v.into()))
        }))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mode = match self.durability {
            Durability::Process => PersistMode::Buffer,
            Durability::Sync => PersistMode::SyncData,
        };
        let mut b = self.db.batch().durability(Some(mode));
        for (table, key, value) in batch.ops {
            let ks = self.table(table);
            match value {
                Some(v) => b.insert(ks, key, v),
                None => b.remove(ks, key),
            }
        }
        Ok(b.commit()?)
    }

    fn reclaim(&self, table: Table) -> Result<(), StoreError> {
        let ks = self.table(table);
        // Tombstones still in the memtable would survive a compaction of
        // the files: flush them first.
        ks.rotate_memtable_and_wait()?;
        // fjall's leveled compaction would drop the tombstoned blocks only
        // as their levels fill again, which on a quiet cluster is never.
        ks.major_compact()?;
        if table == Table::Blocks {
            // Blob files: the first pass dropped the deleted blocks' keys
            // and counted their blobs as stale; this one rewrites the blob
            // files they made stale.
            ks.major_compact()?;
        }
        Ok(())
    }

    fn release(&self) -> Result<(), StoreError> {
        // fjall deletes a table file that a compaction replaced only once
        // its MVCC watermark (the oldest sequence number a reader may
        // still use) has passed the compaction, and it moves that
        // watermark, and deletes such files, only when a memtable is
        // flushed. A quiet peer flushes nothing for hours: the rewritten
        // tables then sit on disk beside their replacements (the producer
        // of 1,000,000 operations kept 312 MiB of tables for 100,000 live
        // pins). Flushing the memtables written since (at least the
        // caller's last write) does both, and lets fjall drop the journal
        // files those memtables held.
        for table in Table::ALL {
            self.flush(table)?;
        }
        Ok(())
    }

    fn flush(&self, table: Table) -> Result<(), StoreError> {
        self.table(table).rotate_memtable_and_wait()?;
        Ok(())
    }

    /// fjall's ingestion: sorted entries go straight into new tables, with
    /// no journal, memtable or flush on the way.
    fn ingest(&self, table: Table) -> Result<Box<dyn Ingest + '_>, StoreError> {
        // fjall does not export its ingestion type, so a closure holds it.
        let mut inner = Some(self.table(table).start_ingestion()?);
        let step = move |op: Op<'_>| -> Result<(), fjall::Error> {
            let Some(ingestion) = inner.as_mut() else {
                return Ok(());
            };
            match op {
                Op::Put(k, v) => ingestion.write(k, v),
                Op::Delete(k) => ingestion.write_tombstone(k),
                Op::Finish => inner.take().map_or(Ok(()), |i| i.finish()),
            }
        };
        Ok(Box::new(FjallIngest {
            step: Box::new(step),
            last: None,
        }))
    }
}

/// One step of a [`FjallIngest`].
enum Op<'k> {
    Put(&'k [u8], &'k [u8]),
    Delete(&'k [u8]),
    Finish,
}

/// Runs one [`Op`] against the fjall ingestion it holds.
type Step<'a> = Box<dyn FnMut(Op<'_>) -> Result<(), fjall::Error> + 'a>;

/// A [`FjallStore`] bulk load.
struct FjallIngest<'a> {
    step: Step<'a>,
    last: Option<Vec<u8>>,
}

impl Ingest for FjallIngest<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_ascending(&mut self.last, key)?;
        Ok((self.step)(Op::Put(key, value))?)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        check_ascending(&mut self.last, key)?;
        Ok((self.step)(Op::Delete(key))?)
    }

    fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        Ok((self.step)(Op::Finish)?)
    }
}
