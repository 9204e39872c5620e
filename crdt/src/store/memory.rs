//! An in-memory [`Store`] for tests: one `BTreeMap` per table behind a lock.
//! Scans read in small chunks so they never hold the lock across a caller's
//! work, which mirrors how a real LSM iterator behaves.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use super::{Entry, Scan, Store, StoreError, Table, WriteBatch, prefix_end};

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()];

/// A [`Store`] that lives in memory. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    tables: Arc<RwLock<Tables>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a table half-written
        // (writes are applied from a prepared batch), so poisoning is moot.
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read()[table.index()].get(key).cloned())
    }

    fn scan(&self, table: Table, prefix: &[u8], from: &[u8]) -> Scan {
        let start = if from > prefix {
            from.to_vec()
        } else {
            prefix.to_vec()
        };
        Box::new(ChunkedScan {
            store: self.clone(),
            table,
            next: Bound::Included(start),
            end: prefix_end(prefix),
            buffer: Vec::new().into_iter(),
            done: false,
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        for (table, key, value) in batch.ops {
            let map = &mut tables[table.index()];
            match value {
                Some(v) => {
                    map.insert(key, v);
                }
                None => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }
}

const CHUNK: usize = 256;

struct ChunkedScan {
    store: MemoryStore,
    table: Table,
    next: Bound<Vec<u8>>,
    end: Option<Vec<u8>>,
    buffer: std::vec::IntoIter<Entry>,
    done: bool,
}

impl Iterator for ChunkedScan {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entry) = self.buffer.next() {
            return Some(Ok(entry));
        }
        if self.done {
            return None;
        }
        let end = match &self.end {
            Some(e) => Bound::Excluded(e.clone()),
            None => Bound::Unbounded,
        };
        let chunk: Vec<Entry> = self.store.read()[self.table.index()]
            .range((self.next.clone(), end))
            .take(CHUNK)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if chunk.len() < CHUNK {
            self.done = true;
        }
        if let Some((last, _)) = chunk.last() {
            self.next = Bound::Excluded(last.clone());
        }
        self.buffer = chunk.into_iter();
        self.buffer.next().map(Ok)
    }
}
