//! A local batch of writes that becomes one delta.
//!
//! Within a batch, the last put of a key wins, and a delete drops the
//! batch's own earlier put of that key (go-ds-crdt does the same). A put
//! after a delete keeps both: the delete removes what the replica had
//! observed, the put adds the new element (tombstones apply first).

use std::collections::{BTreeMap, BTreeSet};

use crate::block::{CID_LEN, Limits};
use crate::error::BatchError;

/// Fixed encoding overhead of one operation, for the size estimate.
const OP_OVERHEAD: usize = 16;
/// Room left in a block for the links, signature and author: enough for
/// `max_links` links, but never more than an eighth of the block (with the
/// default limits that is 13,000 links, over three times `max_links`).
fn reserved(limits: &Limits) -> usize {
    (limits.max_links * (CID_LEN + 4) + 1024).min(limits.max_block_bytes / 8)
}

type Puts = BTreeMap<Vec<u8>, Vec<u8>>;

/// Puts and deletes to commit as one delta, bounded by [`Limits`].
#[derive(Debug, Clone)]
pub struct Batch {
    puts: Puts,
    dels: BTreeSet<Vec<u8>>,
    bytes: usize,
    limits: Limits,
}

impl Batch {
    /// An empty batch bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            puts: BTreeMap::new(),
            dels: BTreeSet::new(),
            bytes: 0,
            limits,
        }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.puts.len() + self.dels.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.dels.is_empty()
    }

    /// Sets `key` to `value`. On error the batch is unchanged; a full batch
    /// should be committed and the put retried on a fresh one.
    pub fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), BatchError> {
        let (key, value) = (key.into(), value.into());
        self.check_key(&key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(BatchError::ValueTooLarge {
                size: value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        let freed = self
            .puts
            .get(&key)
            .map_or(0, |old| key.len() + old.len() + OP_OVERHEAD);
        let added = key.len() + value.len() + OP_OVERHEAD;
        let ops = self.len() + usize::from(freed == 0);
        self.check_room(ops, self.bytes - freed + added)?;
        self.bytes = self.bytes - freed + added;
        self.puts.insert(key, value);
        Ok(())
    }

    /// Removes `key`: every element of it this replica has observed when
    /// the batch is committed, and this batch's own put of it.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> Result<(), BatchError> {
        let key = key.into();
        self.check_key(&key)?;
        if self.dels.contains(&key) {
            if let Some(old) = self.puts.remove(&key) {
                self.bytes -= key.len() + old.len() + OP_OVERHEAD;
            }
            return Ok(());
        }
        let freed = self
            .puts
            .get(&key)
            .map_or(0, |old| key.len() + old.len() + OP_OVERHEAD);
        // One id is typical; more are counted when the delta is built.
        let added = key.len() + CID_LEN + 2 * OP_OVERHEAD;
        let ops = self.len() + 1 - usize::from(freed > 0);
        self.check_room(ops, self.bytes - freed + added)?;
        self.bytes = self.bytes - freed + added;
        self.puts.remove(&key);
        self.dels.insert(key);
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), BatchError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(BatchError::KeyTooLarge {
                size: key.len(),
                max: self.limits.max_key_bytes,
            });
        }
        Ok(())
    }

    fn check_room(&self, ops: usize, bytes: usize) -> Result<(), BatchError> {
        if ops > self.limits.max_ops {
            return Err(BatchError::FullOps {
                max: self.limits.max_ops,
            });
        }
        let max = self
            .limits
            .max_block_bytes
            .saturating_sub(reserved(&self.limits));
        if bytes > max {
            return Err(BatchError::FullBytes { max });
        }
        Ok(())
    }

    /// The puts (key order) and the deleted keys.
    pub(crate) fn into_parts(self) -> (Puts, BTreeSet<Vec<u8>>) {
        (self.puts, self.dels)
    }
}
