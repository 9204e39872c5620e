//! The replica: local commits, receiving and merging blocks, reads, and the
//! hooks snapshots will use.
//!
//! Blocks merge in causal order: a block is merged only once every parent
//! is merged. A block that arrives early is stored as *pending* (on disk,
//! with an index from each missing parent to it); when its last parent
//! merges, it is marked *ready* in the same atomic batch, and
//! [`Engine::merge_next`] takes it from there. So the merged set is always
//! closed under "parent of", heads are exactly its tips, a chain of any depth
//! cascades iteratively, and a branch that stays incomplete only holds up
//! its own descendants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use crate::batch::Batch;
use crate::block::{Block, CID_LEN, Delete, FORMAT_VERSION, Limits, Put};
use crate::error::{BlockError, Error};
use crate::layout::{self, Winner, WinnerRef};
use crate::sign::{Signer, Verifier};
use crate::store::{Store, Table, WriteBatch};

/// A head of the DAG: a merged block no other merged block links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Head {
    /// The block.
    pub cid: Cid,
    /// Its height (= its priority).
    pub height: u64,
}

/// The current value of a key changed because a block merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The key.
    pub key: Vec<u8>,
    /// The value before the merge (`None`: absent).
    pub old: Option<Vec<u8>>,
    /// The value after the merge (`None`: removed).
    pub new: Option<Vec<u8>>,
}

/// A live element: one put that no delete has removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The key.
    pub key: Vec<u8>,
    /// The block that carried the put.
    pub id: Cid,
    /// That block's priority.
    pub priority: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// A delta this replica wrote and merged.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Its CID: announce it.
    pub cid: Cid,
    /// Its bytes: serve them.
    pub bytes: Vec<u8>,
    /// Its height.
    pub height: u64,
    /// The keys whose value changed.
    pub changes: Vec<KeyChange>,
}

/// What [`Engine::receive`] did with a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Already merged or already pending: nothing to do.
    Duplicate,
    /// Refused before: nothing to do.
    PreviouslyRejected,
    /// Stored; these parents are missing and should be fetched.
    Pending {
        /// Parents neither merged, pending nor requested before.
        missing: Vec<Cid>,
    },
    /// Stored and ready: [`Engine::merge_next`] will merge it.
    Ready,
}

/// The outcome of [`Engine::merge_next`] for one block.
#[derive(Debug)]
pub enum Merged {
    /// The block merged; these keys changed.
    Applied {
        /// The block.
        cid: Cid,
        /// Its height.
        height: u64,
        /// The keys whose value changed.
        changes: Vec<KeyChange>,
    },
    /// The block (and any pending descendant) was refused at merge time:
    /// its priority does not follow from its parents.
    Rejected {
        /// The block.
        cid: Cid,
        /// Why.
        error: BlockError,
    },
}

/// One replica of the merkle-CRDT map. Single writer: it takes `&mut self`
/// to change state; readers use [`Engine::reader`] concurrently.
pub struct Engine<S: Store> {
    pub(crate) store: S,
    pub(crate) signer: Arc<dyn Signer>,
    pub(crate) verifier: Arc<dyn Verifier>,
    pub(crate) limits: Limits,
    pub(crate) heads: BTreeMap<Cid, u64>,
    pub(crate) ready: VecDeque<Cid>,
    /// Snapshot chunks received and not yet flushed out of RAM.
    pub(crate) staged: crate::snapshot::BlockFlusher,
}

impl<S: Store> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("heads", &self.heads)
            .field("ready", &self.ready.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Entries per write batch when installing a state in bulk.
const INSTALL_CHUNK: usize = 10_000;

impl<S: Store> Engine<S> {
    /// Opens the replica kept in `store`: checks the format version, finishes
    /// or undoes what a crash interrupted, and loads heads and ready blocks.
    pub fn open(
        store: S,
        signer: Arc<dyn Signer>,
        verifier: Arc<dyn Verifier>,
        limits: Limits,
    ) -> Result<Self, Error> {
        match store.get(Table::Meta, layout::META_FORMAT)? {
            Some(raw) => {
                let found = layout::parse_height(&raw)?;
                if found != layout::STORE_FORMAT {
                    return Err(Error::StoreVersion {
                        found,
                        supported: layout::STORE_FORMAT,
                    });
                }
            }
            None => {
                let mut wb = WriteBatch::new();
                wb.put(
                    Table::Meta,
                    layout::META_FORMAT,
                    layout::STORE_FORMAT.to_be_bytes(),
                );
                store.write(wb)?;
            }
        }
        let mut engine = Self {
            store,
            signer,
            verifier,
            limits,
            heads: BTreeMap::new(),
            ready: VecDeque::new(),
            staged: Default::default(),
        };
        if engine
            .store
            .contains(Table::Meta, layout::META_INSTALLING)?
        {
            tracing::warn!("an interrupted state install is being rolled back");
            engine.wipe_state()?;
        }
        for entry in engine.store.scan(Table::Heads, b"", b"") {
            let (k, v) = entry?;
            engine
                .heads
                .insert(layout::parse_cid(&k)?, layout::parse_height(&v)?);
        }
        for entry in engine.store.scan(Table::Sync, &[layout::READY], b"") {
            let (k, _) = entry?;
            engine.ready.push_back(layout::parse_cid(&k[1..])?);
        }
        engine.resume_install()?;
        Ok(engine)
    }

    /// The limits this replica applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A read handle that can live on other threads.
    pub fn reader(&self) -> Reader<S> {
        Reader {
            store: self.store.clone(),
        }
    }

    /// The current heads, sorted by CID.
    pub fn heads(&self) -> Vec<Head> {
        self.heads
            .iter()
            .map(|(cid, height)| Head {
                cid: *cid,
                height: *height,
            })
            .collect()
    }

    /// The largest head height (0 for an empty replica).
    pub fn max_height(&self) -> u64 {
        self.heads.values().copied().max().unwrap_or(0)
    }

    /// An empty batch with this replica's limits.
    pub fn batch(&self) -> Batch {
        Batch::new(self.limits)
    }

    /// The current value of `key` (a point read).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.reader().get(key)
    }

    /// The bytes of a block this replica holds (merged or pending).
    pub fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        self.reader().block(cid)
    }

    /// Whether `cid` is merged here: the causal-context query snapshots use.
    pub fn is_processed(&self, cid: &Cid) -> Result<bool, Error> {
        Ok(self.store.contains(Table::Markers, &cid.to_bytes())?)
    }

    /// Of the announced `heads`, those this replica lacks: neither merged,
    /// pending, nor refused before.
    pub fn missing(&self, heads: &[Cid]) -> Result<Vec<Cid>, Error> {
        let mut out = Vec::new();
        for cid in heads {
            if !self.is_known(cid)? && !out.contains(cid) {
                out.push(*cid);
            }
        }
        Ok(out)
    }

    /// Blocks that pending blocks need and nobody has delivered yet, at most
    /// `limit` of them (the fetch loop's work list, kept on disk).
    pub fn wanted(&self, limit: usize) -> Result<Vec<Cid>, Error> {
        self.store
            .scan(Table::Sync, &[layout::WANTED], b"")
            .take(limit)
            .map(|e| layout::parse_cid(&e?.0[1..]))
            .collect()
    }

    /// Whether blocks are waiting in the ready queue.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    fn is_known(&self, cid: &Cid) -> Result<bool, Error> {
        Ok(self.is_processed(cid)?
            || self
                .store
                .contains(Table::Sync, &layout::tagged(layout::PENDING, cid))?
            || self
                .store
                .contains(Table::Sync, &layout::tagged(layout::REJECTED, cid))?)
    }

    /// Commits a batch as one signed delta linking the current heads, and
    /// merges it. An empty batch, or one whose deletes found nothing to
    /// remove, commits nothing and returns `None`.
    pub fn commit(&mut self, batch: Batch) -> Result<Option<Committed>, Error> {
        let (puts, deleted_keys) = batch.into_parts();
        let mut dels = Vec::new();
        for key in deleted_keys {
            let ids = self.reader().element_ids(&key)?;
            if !ids.is_empty() {
                dels.push(Delete { key, ids });
            }
        }
        let puts: Vec<Put> = puts
            .into_iter()
            .map(|(key, value)| Put { key, value })
            .collect();
        if puts.is_empty() && dels.is_empty() {
            return Ok(None);
        }
        let height = self
            .max_height()
            .checked_add(1)
            .ok_or(Error::Corrupt("height overflow"))?;
        let block = Block {
            v: FORMAT_VERSION,
            links: self.heads.keys().copied().collect(),
            priority: height,
            puts,
            dels,
            author: Vec::new(),
            sig: Vec::new(),
        };
        let ops = block.op_count();
        if ops > self.limits.max_ops {
            return Err(BlockError::TooManyOps {
                count: ops,
                max: self.limits.max_ops,
            }
            .into());
        }
        let (cid, bytes, block) = block.seal(self.signer.as_ref(), &self.limits)?;
        let mut wb = WriteBatch::new();
        wb.put(Table::Blocks, cid.to_bytes(), bytes.clone());
        let changes = self.apply_delta(&mut wb, &cid, &block)?;
        self.record_merge(&mut wb, &cid, &block.links, height);
        self.store.write(wb)?;
        self.advance_heads(&cid, &block.links, height);
        Ok(Some(Committed {
            cid,
            bytes,
            height,
            changes,
        }))
    }

    /// Takes in a block received from a peer: verifies it against its CID,
    /// decodes and authenticates it, and stores it as pending or ready.
    /// Nothing is merged here; call [`Engine::merge_next`] until it returns
    /// `None`. A refused block leaves the store untouched.
    pub fn receive(&mut self, cid: &Cid, bytes: &[u8]) -> Result<Received, Error> {
        crate::block::check_cid_kind(cid)?;
        if self
            .store
            .contains(Table::Sync, &layout::tagged(layout::REJECTED, cid))?
        {
            return Ok(Received::PreviouslyRejected);
        }
        if self.is_processed(cid)?
            || self
                .store
                .contains(Table::Sync, &layout::tagged(layout::PENDING, cid))?
        {
            return Ok(Received::Duplicate);
        }
        let block = Block::decode(cid, bytes, &self.limits, self.verifier.as_ref())?;

        let mut wb = WriteBatch::new();
        let mut missing = Vec::new();
        let mut all_merged = true;
        for link in &block.links {
            if self.is_processed(link)? {
                continue;
            }
            if self
                .store
                .contains(Table::Sync, &layout::tagged(layout::REJECTED, link))?
            {
                // Building on a refused block makes this one invalid too.
                let error = BlockError::RejectedParent(*link);
                self.reject(*cid, &error)?;
                return Err(error.into());
            }
            all_merged = false;
            wb.put(Table::Sync, layout::waiting(link, cid), []);
            let pending = self
                .store
                .contains(Table::Sync, &layout::tagged(layout::PENDING, link))?;
            let wanted = layout::tagged(layout::WANTED, link);
            if !pending && !self.store.contains(Table::Sync, &wanted)? {
                wb.put(Table::Sync, wanted, []);
                missing.push(*link);
            }
        }
        wb.put(Table::Blocks, cid.to_bytes(), bytes);
        wb.put(
            Table::Sync,
            layout::tagged(layout::PENDING, cid),
            layout::encode_cids(&block.links),
        );
        wb.delete(Table::Sync, layout::tagged(layout::WANTED, cid));
        if all_merged {
            wb.put(Table::Sync, layout::tagged(layout::READY, cid), []);
        }
        self.store.write(wb)?;
        if all_merged {
            self.ready.push_back(*cid);
            Ok(Received::Ready)
        } else {
            Ok(Received::Pending { missing })
        }
    }

    /// Merges the next ready block, if any: its set changes, its processed
    /// marker, the head update and the promotion of children that became
    /// ready all land in one atomic write.
    pub fn merge_next(&mut self) -> Result<Option<Merged>, Error> {
        while let Some(cid) = self.ready.pop_front() {
            if self.is_processed(&cid)? {
                // Defensive: a ready entry for a merged block is stale.
                let mut wb = WriteBatch::new();
                wb.delete(Table::Sync, layout::tagged(layout::READY, &cid));
                self.store.write(wb)?;
                continue;
            }
            return self.merge_ready_block(cid).map(Some);
        }
        Ok(None)
    }

    /// Merges every ready block, handing each outcome to `sink`; returns how
    /// many blocks it merged or refused.
    pub fn merge_all(&mut self, mut sink: impl FnMut(Merged)) -> Result<usize, Error> {
        let mut n = 0;
        while let Some(merged) = self.merge_next()? {
            sink(merged);
            n += 1;
        }
        Ok(n)
    }

    fn merge_ready_block(&mut self, cid: Cid) -> Result<Merged, Error> {
        let bytes = self
            .store
            .get(Table::Blocks, &cid.to_bytes())?
            .ok_or(Error::Corrupt("ready block without bytes"))?;
        // Verified on receipt; decoding again only re-reads our own bytes.
        let block: Block =
            serde_ipld_dagcbor::from_slice(&bytes).map_err(|_| Error::Corrupt("stored block"))?;
        let mut parent_max = 0;
        for link in &block.links {
            let raw = self
                .store
                .get(Table::Markers, &link.to_bytes())?
                .ok_or(Error::Corrupt("ready block with an unmerged parent"))?;
            parent_max = parent_max.max(layout::parse_height(&raw)?);
        }
        let expected = parent_max + 1;
        if block.priority != expected {
            let error = BlockError::InvalidPriority {
                priority: block.priority,
                expected: Some(expected),
            };
            self.reject(cid, &error)?;
            return Ok(Merged::Rejected { cid, error });
        }

        let mut wb = WriteBatch::new();
        let changes = self.apply_delta(&mut wb, &cid, &block)?;
        self.record_merge(&mut wb, &cid, &block.links, expected);
        wb.delete(Table::Sync, layout::tagged(layout::PENDING, &cid));
        wb.delete(Table::Sync, layout::tagged(layout::READY, &cid));
        for link in &block.links {
            wb.delete(Table::Sync, layout::waiting(link, &cid));
        }
        let mut promoted = Vec::new();
        for entry in self
            .store
            .scan(Table::Sync, &layout::tagged(layout::WAITING, &cid), b"")
        {
            let (k, _) = entry?;
            let child = layout::parse_cid(&k[1 + CID_LEN..])?;
            let parents = self
                .store
                .get(Table::Sync, &layout::tagged(layout::PENDING, &child))?
                .ok_or(Error::Corrupt("waiting entry without pending block"))?;
            let mut ready = true;
            for parent in layout::decode_cids(&parents)? {
                if parent != cid && !self.is_processed(&parent)? {
                    ready = false;
                    break;
                }
            }
            if ready {
                wb.put(Table::Sync, layout::tagged(layout::READY, &child), []);
                promoted.push(child);
            }
        }
        self.store.write(wb)?;
        self.advance_heads(&cid, &block.links, expected);
        self.ready.extend(promoted);
        Ok(Merged::Applied {
            cid,
            height: expected,
            changes,
        })
    }

    /// Refuses `cid` and, transitively, every pending block that builds on
    /// it: their bytes go, a rejection marker stays so they are not fetched
    /// again. Iterative, so a long pending chain cannot overflow the stack.
    fn reject(&mut self, cid: Cid, error: &BlockError) -> Result<(), Error> {
        tracing::warn!(%cid, %error, "refusing block");
        let mut work = vec![cid];
        while let Some(bad) = work.pop() {
            let mut wb = WriteBatch::new();
            wb.put(Table::Sync, layout::tagged(layout::REJECTED, &bad), []);
            wb.delete(Table::Sync, layout::tagged(layout::WANTED, &bad));
            let pending = layout::tagged(layout::PENDING, &bad);
            if let Some(parents) = self.store.get(Table::Sync, &pending)? {
                for parent in layout::decode_cids(&parents)? {
                    wb.delete(Table::Sync, layout::waiting(&parent, &bad));
                }
                wb.delete(Table::Sync, pending);
                wb.delete(Table::Sync, layout::tagged(layout::READY, &bad));
                wb.delete(Table::Blocks, bad.to_bytes());
            }
            for entry in self
                .store
                .scan(Table::Sync, &layout::tagged(layout::WAITING, &bad), b"")
            {
                let (k, _) = entry?;
                work.push(layout::parse_cid(&k[1 + CID_LEN..])?);
            }
            self.store.write(wb)?;
            self.ready.retain(|c| *c != bad);
        }
        Ok(())
    }

    /// Marker and heads for a block being merged: it becomes a head, its
    /// parents stop being heads.
    fn record_merge(&self, wb: &mut WriteBatch, cid: &Cid, links: &[Cid], height: u64) {
        wb.put(Table::Markers, cid.to_bytes(), layout::height_bytes(height));
        for link in links {
            if self.heads.contains_key(link) {
                wb.delete(Table::Heads, link.to_bytes());
            }
        }
        wb.put(Table::Heads, cid.to_bytes(), layout::height_bytes(height));
    }

    fn advance_heads(&mut self, cid: &Cid, links: &[Cid], height: u64) {
        for link in links {
            self.heads.remove(link);
        }
        self.heads.insert(*cid, height);
    }

    /// Applies a delta's set changes to `wb`: tombstones first, then puts,
    /// key by key, and returns the keys whose value changed.
    fn apply_delta(
        &self,
        wb: &mut WriteBatch,
        id: &Cid,
        block: &Block,
    ) -> Result<Vec<KeyChange>, Error> {
        let id_bytes = id.to_bytes();
        let mut changes = Vec::new();
        let mut puts = block.puts.iter().peekable();
        let mut dels = block.dels.iter().peekable();
        loop {
            // Both lists are sorted by key: walk them together so each key is
            // handled once with its delete and its put.
            let (del, put) = match (dels.peek(), puts.peek()) {
                (None, None) => break,
                (Some(d), Some(p)) if d.key == p.key => (dels.next(), puts.next()),
                (Some(d), Some(p)) if d.key < p.key => (dels.next(), None),
                (Some(_), None) => (dels.next(), None),
                _ => (None, puts.next()),
            };
            let key = match (del, put) {
                (Some(d), _) => &d.key,
                (None, Some(p)) => &p.key,
                (None, None) => break,
            };
            let current_raw = self.store.get(Table::Values, key)?;
            let current = current_raw.as_deref().map(WinnerRef::decode).transpose()?;
            // Recomputed only when a delete removes the current winner.
            let mut survivor: Option<Option<Winner>> = None;
            if let Some(del) = del {
                let mut removed = BTreeSet::new();
                for dead in &del.ids {
                    let ek = layout::element_key(key, dead);
                    if self.store.contains(Table::Elements, &ek)? {
                        wb.delete(Table::Elements, ek);
                        removed.insert(dead.to_bytes());
                    }
                }
                if current.is_some_and(|w| removed.contains(w.id)) {
                    survivor = Some(self.best_surviving(key, &removed)?);
                }
            }
            let base = match &survivor {
                Some(s) => s.as_ref().map(Winner::as_ref),
                None => current,
            };
            let candidate = put.map(|p| WinnerRef {
                priority: block.priority,
                value: &p.value,
                id: &id_bytes,
            });
            if let Some(put) = put {
                wb.put(
                    Table::Elements,
                    layout::element_key(key, id),
                    layout::element_value(block.priority, &put.value),
                );
            }
            let winner = base.max(candidate);
            if winner != current {
                match winner {
                    Some(w) => wb.put(Table::Values, key.clone(), w.encode()),
                    None => wb.delete(Table::Values, key.clone()),
                }
            }
            let (old, new) = (current.map(|w| w.value), winner.map(|w| w.value));
            if old != new {
                changes.push(KeyChange {
                    key: key.clone(),
                    old: old.map(<[u8]>::to_vec),
                    new: new.map(<[u8]>::to_vec),
                });
            }
        }
        Ok(changes)
    }

    /// The best live element of `key`, ignoring the ids in `removed` (the
    /// store still has them: the batch removing them is not written yet).
    fn best_surviving(
        &self,
        key: &[u8],
        removed: &BTreeSet<Vec<u8>>,
    ) -> Result<Option<Winner>, Error> {
        let prefix = layout::escape_key(key);
        let mut best: Option<Winner> = None;
        for entry in self.store.scan(Table::Elements, &prefix, b"") {
            let (k, v) = entry?;
            let id = k[prefix.len()..].to_vec();
            if removed.contains(&id) {
                continue;
            }
            let (priority, value) = layout::parse_element_value(&v)?;
            let candidate = WinnerRef {
                priority,
                value,
                id: &id,
            };
            if best.as_ref().is_none_or(|b| candidate > b.as_ref()) {
                best = Some(Winner {
                    priority,
                    value: value.to_vec(),
                    id,
                });
            }
        }
        Ok(best)
    }

    /// Bulk-loads processed markers (a snapshot's causal context), in
    /// batches. Marked blocks count as merged: walks stop at them.
    pub fn mark_processed(&mut self, markers: impl IntoIterator<Item = Head>) -> Result<(), Error> {
        let mut wb = WriteBatch::new();
        for head in markers {
            wb.put(
                Table::Markers,
                head.cid.to_bytes(),
                layout::height_bytes(head.height),
            );
            if wb.len() >= INSTALL_CHUNK {
                self.store.write(std::mem::take(&mut wb))?;
            }
        }
        self.store.write(wb)?;
        Ok(())
    }

    /// Installs a whole state into an empty replica without replaying its
    /// history: the live `elements` (sorted by key, then id), the causal
    /// `context` (every block below the frontier) and the `frontier` heads.
    /// Until the last write lands the install is flagged, and
    /// [`Engine::open`] rolls back an interrupted one. Returns the number
    /// of live keys; callers treat every key as changed.
    pub fn install_state(
        &mut self,
        frontier: &[Head],
        elements: impl IntoIterator<Item = Element>,
        context: impl IntoIterator<Item = Head>,
    ) -> Result<u64, Error> {
        let empty = self.heads.is_empty()
            && self.store.scan(Table::Markers, b"", b"").next().is_none()
            && self.store.scan(Table::Elements, b"", b"").next().is_none();
        if !empty {
            return Err(Error::NotEmpty);
        }
        let mut wb = WriteBatch::new();
        wb.put(Table::Meta, layout::META_INSTALLING, []);
        self.store.write(wb)?;

        let mut wb = WriteBatch::new();
        let mut keys = 0u64;
        let mut group: Option<(Vec<u8>, Winner)> = None;
        let mut last: Option<(Vec<u8>, Cid)> = None;
        for e in elements {
            if let Some((k, id)) = &last
                && (&e.key, &e.id) <= (k, id)
            {
                return Err(Error::InvalidState("elements not sorted by key and id"));
            }
            wb.put(
                Table::Elements,
                layout::element_key(&e.key, &e.id),
                layout::element_value(e.priority, &e.value),
            );
            let candidate = Winner {
                priority: e.priority,
                value: e.value.clone(),
                id: e.id.to_bytes(),
            };
            match &mut group {
                Some((k, best)) if *k == e.key => {
                    if candidate.as_ref() > best.as_ref() {
                        *best = candidate;
                    }
                }
                _ => {
                    if let Some((k, best)) = group.take() {
                        wb.put(Table::Values, k, best.as_ref().encode());
                        keys += 1;
                    }
                    group = Some((e.key.clone(), candidate));
                }
            }
            last = Some((e.key, e.id));
            if wb.len() >= INSTALL_CHUNK {
                self.store.write(std::mem::take(&mut wb))?;
            }
        }
        if let Some((k, best)) = group {
            wb.put(Table::Values, k, best.as_ref().encode());
            keys += 1;
        }
        self.store.write(wb)?;
        self.mark_processed(context)?;

        let mut wb = WriteBatch::new();
        for head in frontier {
            wb.put(
                Table::Markers,
                head.cid.to_bytes(),
                layout::height_bytes(head.height),
            );
            wb.put(
                Table::Heads,
                head.cid.to_bytes(),
                layout::height_bytes(head.height),
            );
        }
        wb.delete(Table::Meta, layout::META_INSTALLING);
        self.store.write(wb)?;
        self.heads = frontier.iter().map(|h| (h.cid, h.height)).collect();
        Ok(keys)
    }

    /// Removes all set state, markers and heads (rolling back an
    /// interrupted install), then clears the install flag.
    fn wipe_state(&mut self) -> Result<(), Error> {
        for table in [Table::Elements, Table::Values, Table::Markers, Table::Heads] {
            let mut wb = WriteBatch::new();
            for entry in self.store.scan(table, b"", b"") {
                wb.delete(table, entry?.0);
                if wb.len() >= INSTALL_CHUNK {
                    self.store.write(std::mem::take(&mut wb))?;
                }
            }
            self.store.write(wb)?;
        }
        let mut wb = WriteBatch::new();
        wb.delete(Table::Meta, layout::META_INSTALLING);
        self.store.write(wb)?;
        self.heads.clear();
        Ok(())
    }
}

fn element_of((k, v): crate::store::Entry) -> Result<Element, Error> {
    let (key, id) = layout::parse_element_key(&k)?;
    let (priority, value) = layout::parse_element_value(&v)?;
    Ok(Element {
        key,
        id,
        priority,
        value: value.to_vec(),
    })
}

fn marker_of((k, v): crate::store::Entry) -> Result<Head, Error> {
    Ok(Head {
        cid: layout::parse_cid(&k)?,
        height: layout::parse_height(&v)?,
    })
}

/// Concurrent read access to a replica's state. Reads see committed merges
/// only, never half of one.
#[derive(Debug, Clone)]
pub struct Reader<S: Store> {
    pub(crate) store: S,
}

impl<S: Store> Reader<S> {
    /// The current value of `key` (a point read).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.store.get(Table::Values, key)? {
            Some(raw) => Ok(Some(layout::winner_value(&raw)?.to_vec())),
            None => Ok(None),
        }
    }

    /// The bytes of a block this replica holds (merged or pending), for
    /// serving peers without going through the engine's owner.
    pub fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.store.get(Table::Blocks, &cid.to_bytes())?)
    }

    /// The heads as last committed to the store.
    pub fn heads(&self) -> Result<Vec<Head>, Error> {
        self.store
            .scan(Table::Heads, b"", b"")
            .map(|entry| {
                let (k, v) = entry?;
                Ok(Head {
                    cid: layout::parse_cid(&k)?,
                    height: layout::parse_height(&v)?,
                })
            })
            .collect()
    }

    /// Every live key with its value, in key order, streamed from the store.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Error>> + Send + use<S> {
        self.iter_from(b"")
    }

    /// Like [`Reader::iter`], starting at the first key `>= from` (for
    /// paging).
    pub fn iter_from(
        &self,
        from: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Error>> + Send + use<S> {
        self.store.scan(Table::Values, b"", from).map(|entry| {
            let (k, v) = entry?;
            let value = layout::winner_value(&v)?.to_vec();
            Ok((k, value))
        })
    }

    /// Every live element with its id and priority, in key order then id
    /// order: what a snapshot carries.
    pub fn elements(&self) -> impl Iterator<Item = Result<Element, Error>> + Send + use<S> {
        self.store
            .scan(Table::Elements, b"", b"")
            .map(|entry| element_of(entry?))
    }

    /// Every processed marker (the causal context), in CID order.
    pub fn processed(&self) -> impl Iterator<Item = Result<Head, Error>> + Send + use<S> {
        self.store
            .scan(Table::Markers, b"", b"")
            .map(|entry| marker_of(entry?))
    }

    /// [`Reader::iter`] read in short scans ([`crate::store::scan_in_runs`]):
    /// for every pass over the whole state that runs while the peer writes
    /// (listings, the tracker's start-up and post-install passes).
    pub fn iter_in_runs(
        &self,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Error>> + Send + use<S> {
        self.iter_shared_in_runs()
            .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// [`Reader::iter_in_runs`] without a copy of each key and value: they
    /// share the store's blocks ([`Store::scan_shared`]). For the passes
    /// that read every value once and let it go (a listing of the pinset).
    pub fn iter_shared_in_runs(
        &self,
    ) -> impl Iterator<Item = Result<(Bytes, Bytes), Error>> + Send + use<S> {
        crate::store::scan_shared_in_runs(self.store.clone(), Table::Values, crate::store::SCAN_RUN)
            .map(|entry| {
                let (k, v) = entry?;
                let at = v.len() - layout::winner_value(&v)?.len();
                Ok((k, v.slice(at..)))
            })
    }

    /// [`Reader::elements`] read in short scans likewise: for a pass that
    /// writes as it reads, while nothing else writes the elements.
    pub(crate) fn elements_in_runs(&self) -> impl Iterator<Item = Result<Element, Error>> + use<S> {
        crate::store::scan_in_runs(self.store.clone(), Table::Elements, crate::store::SCAN_RUN)
            .map(|entry| element_of(entry?))
    }

    /// [`Reader::processed`] read in short scans, likewise.
    pub(crate) fn processed_in_runs(&self) -> impl Iterator<Item = Result<Head, Error>> + use<S> {
        crate::store::scan_in_runs(self.store.clone(), Table::Markers, crate::store::SCAN_RUN)
            .map(|entry| marker_of(entry?))
    }

    /// The ids of the live elements of `key`, sorted.
    pub fn element_ids(&self, key: &[u8]) -> Result<Vec<Cid>, Error> {
        let prefix = layout::escape_key(key);
        let mut ids = Vec::new();
        for entry in self.store.scan(Table::Elements, &prefix, b"") {
            let (k, _) = entry?;
            ids.push(layout::parse_cid(&k[prefix.len()..])?);
        }
        ids.sort();
        Ok(ids)
    }
}
