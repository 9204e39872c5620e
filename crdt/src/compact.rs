//! History compaction: dropping the delta blocks below the frontier of the
//! snapshot this replica serves, so that disk use follows the live pinset
//! rather than every operation ever made (`shared/spec/snapshots.md`
//! §A.3.3).
//!
//! **What goes.** The bytes of every merged block in the served snapshot's
//! causal context, except the frontier blocks themselves (a few, and a peer
//! that holds their parents can still take them by plain walking).
//! **What stays.** The processed markers (the causal context: walks stop at
//! them, a late delete or a returning peer's branch is judged against
//! them), the live elements and values, pending blocks, the heads, and the
//! snapshot's chunks, which now stand for the history. This engine keeps no
//! tombstones (a delete removes the elements it names; the markers prove it
//! happened), so there are none to drop.
//!
//! **Why merges are unchanged.** A block in the context is merged, so
//! nothing in this replica ever reads its bytes again: merging reads only
//! the block being merged, deletes find their elements in the `elements`
//! table, and snapshots are built from the state. Only *other* replicas
//! asking for those blocks notice; they take the snapshot instead, which
//! the install joins with whatever they hold, so they converge to what a
//! full replay gives.
//!
//! **Crash safety.** Deleting a merged block's bytes changes no state, so
//! the deletions may land in any number of batches. `meta`'s `compacting`
//! flag is set first; `compacted` (the manifest's CID) replaces it last,
//! and a compaction interrupted in between simply runs again, space
//! reclaim included.

use std::collections::{BTreeMap, BTreeSet};

use cid::Cid;

use crate::block::{cid_of, links_of};
use crate::engine::Engine;
use crate::error::Error;
use crate::layout;
use crate::snapshot::{META_SERVED, Manifest, WRITE_CHUNK, decode_context};
use crate::store::{Store, Table, WriteBatch};

/// `meta` key: the CID of the manifest below whose frontier history was
/// dropped.
const META_COMPACTED: &[u8] = b"compacted";
/// `meta` key: a compaction is under way (its space is still to reclaim).
const META_COMPACTING: &[u8] = b"compacting";

/// What [`Engine::compact`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Delta blocks whose bytes were deleted.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl<S: Store> Engine<S> {
    /// The manifest this replica serves, decoded. It was checked when it
    /// was built or installed, so its signature is not checked again.
    pub fn served_manifest(&self) -> Result<Option<Manifest>, Error> {
        match self.store.get(Table::Meta, META_SERVED)? {
            Some(raw) => serde_ipld_dagcbor::from_slice(&raw)
                .map(Some)
                .map_err(|_| Error::Corrupt("served snapshot manifest")),
            None => Ok(None),
        }
    }

    /// Whether the history below the served snapshot is already dropped
    /// (true as well when there is no snapshot: nothing can be dropped).
    pub fn is_compacted(&self) -> Result<bool, Error> {
        let Some(served) = self.store.get(Table::Meta, META_SERVED)? else {
            return Ok(true);
        };
        Ok(self.store.get(Table::Meta, META_COMPACTED)?.as_deref()
            == Some(cid_of(&served).to_bytes().as_slice()))
    }

    /// Whether every block of `frontier` lies in the past of `heads` (a
    /// peer that announced `heads` has merged the whole state at
    /// `frontier`). Walks this replica's blocks down from `heads`, never
    /// below the frontier's heights, visiting at most `budget` blocks.
    /// `false` when it cannot tell: a head not merged here, or the budget
    /// spent.
    pub fn descends_from(
        &self,
        heads: &[Cid],
        frontier: &[(Cid, u64)],
        budget: usize,
    ) -> Result<bool, Error> {
        let mut unfound: BTreeMap<Cid, u64> = frontier.iter().copied().collect();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Cid> = heads.to_vec();
        while let Some(cid) = stack.pop() {
            if unfound.is_empty() {
                break;
            }
            if !seen.insert(cid) {
                continue;
            }
            if seen.len() > budget {
                return Ok(false);
            }
            if unfound.remove(&cid).is_some() {
                // Frontier blocks form an antichain: none lies below another.
                continue;
            }
            let Some(raw) = self.store.get(Table::Markers, &cid.to_bytes())? else {
                return Ok(false);
            };
            // A block can only descend from blocks lower than itself.
            let height = layout::parse_height(&raw)?;
            if unfound.values().all(|h| height <= *h) {
                continue;
            }
            // Missing bytes: dropped by an earlier compaction, so below an
            // older frontier and not above this one.
            if let Some(bytes) = self.store.get(Table::Blocks, &cid.to_bytes())? {
                let links = links_of(&bytes).map_err(|_| Error::Corrupt("stored block"))?;
                stack.extend(links);
            }
        }
        Ok(unfound.is_empty())
    }

    /// Deletes the bytes of every block below the served snapshot's
    /// frontier, then asks the store to give the space back. Does nothing
    /// without a snapshot or when already done for this one. The caller
    /// decides when this is wise (every trusted peer has the snapshot's
    /// state, or waited long enough); correctness never depends on it.
    pub fn compact(&mut self) -> Result<Compacted, Error> {
        let Some(served) = self.store.get(Table::Meta, META_SERVED)? else {
            return Ok(Compacted::default());
        };
        let manifest_cid = cid_of(&served).to_bytes();
        if self.store.get(Table::Meta, META_COMPACTED)?.as_deref() == Some(&manifest_cid[..]) {
            return Ok(Compacted::default());
        }
        let manifest: Manifest = serde_ipld_dagcbor::from_slice(&served)
            .map_err(|_| Error::Corrupt("served snapshot manifest"))?;
        let frontier: BTreeSet<Cid> = manifest.frontier.iter().map(|(c, _)| *c).collect();
        let resumed = self.store.contains(Table::Meta, META_COMPACTING)?;
        let mut wb = WriteBatch::new();
        wb.put(Table::Meta, META_COMPACTING, []);
        self.store.write(wb)?;
        let mut done = Compacted::default();
        let mut wb = WriteBatch::new();
        for chunk in &manifest.context {
            let bytes = self
                .store
                .get(Table::Blocks, &chunk.to_bytes())?
                .ok_or(Error::Corrupt("served snapshot chunk missing"))?;
            for (cid, _) in decode_context(&bytes)? {
                if frontier.contains(&cid) {
                    continue;
                }
                let key = cid.to_bytes();
                if let Some(block) = self.store.get(Table::Blocks, &key)? {
                    done.blocks += 1;
                    done.bytes += block.len() as u64;
                    wb.delete(Table::Blocks, key);
                    if wb.len() >= WRITE_CHUNK {
                        self.store.write(std::mem::take(&mut wb))?;
                    }
                }
            }
        }
        self.store.write(wb)?;
        // Rewriting the table costs about its size: only when something
        // was deleted, now or by a run a crash cut short before this.
        let rewrite = done.blocks > 0 || resumed;
        if rewrite {
            // The set tables too: the deletes the dropped history made
            // left tombstones and old versions there, which only a rewrite
            // gives back.
            for table in [Table::Blocks, Table::Elements, Table::Values] {
                self.store.reclaim(table)?;
            }
        }
        let mut wb = WriteBatch::new();
        wb.delete(Table::Meta, META_COMPACTING);
        wb.put(Table::Meta, META_COMPACTED, manifest_cid);
        self.store.write(wb)?;
        if rewrite {
            // The rewritten tables' old files go only now, after a write
            // (the one above) that follows the rewrite. A crash before
            // this costs nothing: reopening deletes files no table uses.
            self.store.release()?;
        }
        Ok(done)
    }
}
