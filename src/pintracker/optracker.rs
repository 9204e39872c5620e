//! The operation tracker: what the pin tracker is doing or failed to do for
//! each CID, and the queue of operations waiting for a worker. No clock of
//! its own (every call takes `now`), so its rules are tested without an
//! IPFS daemon.
//!
//! Rules (those of ipfs-cluster's `optracker`, plus a terminal error):
//! - a new operation of the same kind as a queued or running one only
//!   refreshes the pin; an opposite one replaces it (the worker running the
//!   old one finds it superseded when it reports);
//! - a failed operation is retried with exponential backoff until
//!   `max_attempts`, then stays in `pin_error`/`unpin_error` until recovered:
//!   a CID that nobody has never sits in `pin_queued` for ever;
//! - finished operations are forgotten: their status comes from IPFS.
//!
//! Where it lives: with the IPFS daemon down, every pin allocated here is
//! an operation, a million of them on a large pinset. So operations and the
//! queue are kept in two keyspaces of the peer's fjall database, not in RAM:
//! `pintracker_ops_v1` (CID → operation record) and `pintracker_due_v1`
//! (lane ‖ due time ‖ CID → generation), the queue in the order workers take
//! it. A retry waiting for its backoff is an entry with a later due time,
//! not a sleeping task. RAM holds two counters and the operations workers
//! are running. Operations do not outlive the process: both keyspaces are
//! emptied when the tracker opens, and start-up queues the pinset again, as
//! the in-memory tracker did.
//!
//! Record format (version byte first, so a later format can be told apart):
//! `[1, kind, phase, mode, priority, lane (0xff: none), attempts u32,
//! generation u64, due_ms i64, updated (nanos i64, offset i32),
//! added (flag u8, nanos i64, offset i32), error (len u32, utf-8)]`, all
//! integers big-endian.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone};
use cid::Cid;
use pincluster_crdt::store::fjall::{Database, Keyspace};

use crate::folder::{MemtableBudget, tracker_keyspace_options};
use crate::status::TrackerStatus;
use crate::types::{Pin, PinMode};

/// Why the tracker's keyspaces could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TrackerStoreError {
    /// fjall failed (I/O, or a poisoned database).
    #[error("pin tracker store: {0}")]
    Fjall(#[from] pincluster_crdt::store::fjall::Error),
    /// A record that does not decode: written by another format version,
    /// or damaged.
    #[error("pin tracker store: unreadable record for {0}")]
    Corrupt(String),
}

/// Pin or unpin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Make the local IPFS daemon pin it.
    Pin,
    /// Make the local IPFS daemon drop it.
    Unpin,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a worker (possibly until its due time).
    Queued,
    /// A worker is on it.
    InProgress,
    /// Gave up after the allowed attempts.
    Error,
}

/// The queue an operation waits in. Pin workers drain `Priority` before
/// `Normal`; one worker takes `Unpin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Unpins.
    Unpin = 0,
    /// Pins added recently with few attempts.
    Priority = 1,
    /// Every other pin.
    Normal = 2,
}

impl Lane {
    fn of(kind: OpKind, priority: bool) -> Self {
        match (kind, priority) {
            (OpKind::Unpin, _) => Lane::Unpin,
            (OpKind::Pin, true) => Lane::Priority,
            (OpKind::Pin, false) => Lane::Normal,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Lane::Unpin),
            1 => Some(Lane::Priority),
            2 => Some(Lane::Normal),
            _ => None,
        }
    }
}

/// One tracked operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Pin or unpin.
    pub kind: OpKind,
    /// Where it is.
    pub phase: Phase,
    /// How to pin, from the pin as last seen in the state.
    pub mode: PinMode,
    /// The pin's timestamp as last seen in the state: retries of young
    /// pins stay in the priority lane.
    pub added: Option<DateTime<FixedOffset>>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Whether it goes in the priority lane.
    pub priority: bool,
    /// The last error.
    pub error: Option<Arc<str>>,
    /// When the phase last changed.
    pub updated: DateTime<FixedOffset>,
    /// Distinguishes this operation from an older one on the same CID, so a
    /// worker reporting on a superseded operation changes nothing.
    pub generation: u64,
    /// Where it waits in the queue while queued: its lane and the time
    /// (milliseconds since the epoch) from which a worker may take it.
    pub slot: Option<(Lane, i64)>,
}

impl Operation {
    /// The last error, empty if none.
    pub fn error(&self) -> &str {
        self.error.as_deref().unwrap_or_default()
    }

    /// The status a reader sees.
    pub fn status(&self) -> TrackerStatus {
        match (self.kind, self.phase) {
            (OpKind::Pin, Phase::Queued) => TrackerStatus::PinQueued,
            (OpKind::Pin, Phase::InProgress) => TrackerStatus::Pinning,
            (OpKind::Pin, Phase::Error) => TrackerStatus::PinError,
            (OpKind::Unpin, Phase::Queued) => TrackerStatus::UnpinQueued,
            (OpKind::Unpin, Phase::InProgress) => TrackerStatus::Unpinning,
            (OpKind::Unpin, Phase::Error) => TrackerStatus::UnpinError,
        }
    }
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before the error is terminal.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Queued again, due after this long.
    RetryIn(Duration),
    /// Attempts exhausted: the operation now shows its error status.
    GaveUp,
    /// The operation was superseded meanwhile; nothing to do.
    Stale,
}

/// What the queue holds for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// This operation, taken off the queue: hand it to [`OpTracker::start`].
    Job(Cid, u64),
    /// Nothing due yet; the earliest entry is due at this time (ms).
    At(i64),
    /// The lanes are empty.
    Empty,
}

/// Every operation in flight, queued or failed, in fjall.
pub struct OpTracker {
    db: Database,
    ops: Keyspace,
    due: Keyspace,
    /// How many operations `ops` holds, and how many of them are in
    /// `Phase::Error`, kept as they change: the pinqueue informer asks every
    /// metrics interval, and counting a million records each time would
    /// hold the tracker's lock.
    len: usize,
    errored: usize,
    next_generation: u64,
    /// Batches written since the last [`OpTracker::release_memory`].
    unreleased: u64,
    /// What was written to `ops` and `due` since their memtables last
    /// rotated: each is sealed here once full.
    ops_written: MemtableBudget,
    due_written: MemtableBudget,
    /// Per lane (indexed by its byte), a key at or below every entry the
    /// lane holds: where [`OpTracker::take_due`] starts reading. The head
    /// of a queue is where entries are taken off, so it is a run of
    /// deletions that fjall keeps until compaction: a read from the lane's
    /// first byte stepped over all of them again on every take.
    floor: [Vec<u8>; 3],
}

impl std::fmt::Debug for OpTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpTracker")
            .field("len", &self.len)
            .field("errored", &self.errored)
            .finish_non_exhaustive()
    }
}

/// The record format written by this version.
const FORMAT: u8 = 1;
/// A record's size without its error text.
const FIXED: usize = 6 + 4 + 8 + 8 + 12 + 13 + 4;
/// Memtable of each tracker keyspace, sealed when full by the writer
/// itself ([`MemtableBudget`]). With the daemon down (BENCHMARKS.md), 8
/// MiB made the start-up pass at 10,000,000 pins 36 % longer than 16 MiB
/// (twice the flushes) but bounds what RAM holds to half; at 1,000,000
/// pins 4, 8 and 16 MiB peaked alike.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

fn nanos(t: &DateTime<FixedOffset>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn time_of(nanos: i64, offset: i32) -> Option<DateTime<FixedOffset>> {
    let tz = FixedOffset::east_opt(offset)?;
    Some(tz.timestamp_nanos(nanos))
}

fn encode(op: &Operation) -> Vec<u8> {
    let error = op.error();
    let mut b = Vec::with_capacity(FIXED + error.len());
    b.push(FORMAT);
    b.push(match op.kind {
        OpKind::Pin => 0,
        OpKind::Unpin => 1,
    });
    b.push(match op.phase {
        Phase::Queued => 0,
        Phase::InProgress => 1,
        Phase::Error => 2,
    });
    b.push(match op.mode {
        PinMode::Recursive => 0,
        PinMode::Direct => 1,
    });
    b.push(u8::from(op.priority));
    let (lane, due) = op.slot.map_or((0xff, 0), |(l, at)| (l as u8, at));
    b.push(lane);
    b.extend_from_slice(&op.attempts.to_be_bytes());
    b.extend_from_slice(&op.generation.to_be_bytes());
    b.extend_from_slice(&due.to_be_bytes());
    b.extend_from_slice(&nanos(&op.updated).to_be_bytes());
    b.extend_from_slice(&op.updated.offset().local_minus_utc().to_be_bytes());
    match &op.added {
        Some(t) => {
            b.push(1);
            b.extend_from_slice(&nanos(t).to_be_bytes());
            b.extend_from_slice(&t.offset().local_minus_utc().to_be_bytes());
        }
        None => b.extend_from_slice(&[0; 13]),
    }
    b.extend_from_slice(&(error.len() as u32).to_be_bytes());
    b.extend_from_slice(error.as_bytes());
    b
}

/// Reads fixed-size fields off the front of a record.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

fn decode(bytes: &[u8]) -> Option<Operation> {
    let mut f = Fields(bytes);
    let [format, kind, phase, mode, priority, lane] = f.take::<6>()?;
    if format != FORMAT {
        return None;
    }
    let kind = match kind {
        0 => OpKind::Pin,
        1 => OpKind::Unpin,
        _ => return None,
    };
    let phase = match phase {
        0 => Phase::Queued,
        1 => Phase::InProgress,
        2 => Phase::Error,
        _ => return None,
    };
    let mode = match mode {
        0 => PinMode::Recursive,
        1 => PinMode::Direct,
        _ => return None,
    };
    let attempts = u32::from_be_bytes(f.take()?);
    let generation = u64::from_be_bytes(f.take()?);
    let due = i64::from_be_bytes(f.take()?);
    let slot = match lane {
        0xff => None,
        l => Some((Lane::from_byte(l)?, due)),
    };
    let updated = time_of(i64::from_be_bytes(f.take()?), i32::from_be_bytes(f.take()?))?;
    let [has_added] = f.take()?;
    let (added_nanos, added_offset) =
        (i64::from_be_bytes(f.take()?), i32::from_be_bytes(f.take()?));
    let added = match has_added {
        0 => None,
        _ => Some(time_of(added_nanos, added_offset)?),
    };
    let len = u32::from_be_bytes(f.take()?) as usize;
    let error = match f.0 {
        [] if len == 0 => None,
        text if text.len() == len => Some(Arc::from(std::str::from_utf8(text).ok()?)),
        _ => return None,
    };
    Some(Operation {
        kind,
        phase,
        mode,
        added,
        attempts,
        priority: priority != 0,
        error,
        updated,
        generation,
        slot,
    })
}

/// The queue key of an operation on `cid` due at `at` in `lane`: lanes
/// apart, earliest first. Times before the epoch sort as the epoch.
fn due_key(lane: Lane, at: i64, cid: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + cid.len());
    k.push(lane as u8);
    k.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    k.extend_from_slice(cid);
    k
}

fn millis(t: DateTime<FixedOffset>) -> i64 {
    t.timestamp_millis()
}

impl OpTracker {
    /// Opens the tracker's keyspaces in `db` and empties them: operations
    /// of a previous run are not resumed (start-up queues the pinset again).
    pub fn open(db: &Database) -> Result<Self, TrackerStoreError> {
        let options = || tracker_keyspace_options(MEMTABLE_BYTES);
        let ops = db.keyspace("pintracker_ops_v1", options)?;
        let due = db.keyspace("pintracker_due_v1", options)?;
        ops.clear()?;
        due.clear()?;
        Ok(Self {
            db: db.clone(),
            ops,
            due,
            len: 0,
            errored: 0,
            next_generation: 0,
            unreleased: 0,
            ops_written: MemtableBudget::new(MEMTABLE_BYTES),
            due_written: MemtableBudget::new(MEMTABLE_BYTES),
            floor: [vec![0], vec![1], vec![2]],
        })
    }

    fn read(&self, key: &[u8]) -> Result<Option<Operation>, TrackerStoreError> {
        match self.ops.get(key)? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .ok_or_else(|| TrackerStoreError::Corrupt(display_key(key))),
        }
    }

    /// Writes `op` for `key` (replacing `old`, the record read before) in
    /// one batch, moving its queue entry if its slot changed, and keeps the
    /// counters.
    fn write(
        &mut self,
        key: &[u8],
        old: Option<&Operation>,
        op: Option<&Operation>,
    ) -> Result<(), TrackerStoreError> {
        let mut batch = self.db.batch();
        let (mut due_entries, mut due_bytes) = (0, 0);
        let old_slot = old.and_then(|o| o.slot.map(|s| (s, o.generation)));
        let new_slot = op.and_then(|o| o.slot.map(|s| (s, o.generation)));
        if old_slot != new_slot {
            if let Some(((lane, at), _)) = old_slot {
                let entry = due_key(lane, at, key);
                due_entries += 1;
                due_bytes += entry.len();
                batch.remove(&self.due, entry);
            }
            if let Some(((lane, at), generation)) = new_slot {
                let entry = due_key(lane, at, key);
                // Due before the lane's floor (the clock went back): the
                // floor follows, or the entry would never be read.
                let floor = &mut self.floor[lane as usize];
                if entry < *floor {
                    floor.clone_from(&entry);
                }
                due_entries += 1;
                due_bytes += entry.len() + 8;
                batch.insert(&self.due, entry, generation.to_be_bytes().to_vec());
            }
        }
        let ops_bytes = match op {
            Some(op) => {
                let record = encode(op);
                let len = key.len() + record.len();
                batch.insert(&self.ops, key.to_vec(), record);
                len
            }
            None => {
                batch.remove(&self.ops, key.to_vec());
                key.len()
            }
        };
        batch.commit()?;
        self.ops_written.wrote(&self.ops, 1, ops_bytes)?;
        if due_entries > 0 {
            self.due_written.wrote(&self.due, due_entries, due_bytes)?;
        }
        self.unreleased += 1;
        let was_error = old.is_some_and(|o| o.phase == Phase::Error);
        let is_error = op.is_some_and(|o| o.phase == Phase::Error);
        self.len = self.len + usize::from(op.is_some()) - usize::from(old.is_some());
        self.errored = self.errored + usize::from(is_error) - usize::from(was_error);
        Ok(())
    }

    /// Hands the memory of what was written since the last call back:
    /// rotates the tracker's memtables (fjall flushes them to disk), which
    /// also has fjall drop the old versions of every keyspace of the
    /// database that no reader holds any more. fjall does that only when a
    /// memtable rotates, so without this a million operations queued while
    /// a long listing held a snapshot stayed in RAM, flushed or not, until
    /// the next write burst (measured: 340 MiB of memtables at 1,000,000
    /// pins, BENCHMARKS.md). Returns whether anything was rotated.
    pub fn release_memory(&mut self) -> Result<bool, TrackerStoreError> {
        if self.unreleased == 0 {
            return Ok(false);
        }
        self.unreleased = 0;
        // A keyspace whose memtable is empty does not rotate (nor run
        // fjall's maintenance): try the queue too.
        let ops = self.ops.rotate_memtable()?;
        let due = self.due.rotate_memtable()?;
        self.ops_written.reset();
        self.due_written.reset();
        Ok(ops || due)
    }

    /// Records that `pin` must be pinned (`OpKind::Pin`) or unpinned, and
    /// queues it, due now. Returns the generation queued, or `None` when an
    /// operation of the same kind is already queued or running (it just
    /// gets the new pin's mode and timestamp).
    pub fn enqueue(
        &mut self,
        kind: OpKind,
        pin: &Pin,
        priority: bool,
        now: DateTime<FixedOffset>,
    ) -> Result<Option<u64>, TrackerStoreError> {
        let key = pin.cid.to_bytes();
        let mode = PinMode::from_max_depth(pin.max_depth);
        let old = self.read(&key)?;
        if let Some(op) = &old
            && op.kind == kind
            && op.phase != Phase::Error
        {
            if op.mode != mode || op.added != pin.timestamp {
                let refreshed = Operation {
                    mode,
                    added: pin.timestamp,
                    ..op.clone()
                };
                self.write(&key, old.as_ref(), Some(&refreshed))?;
            }
            return Ok(None);
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        // Attempts carry over when the same kind is queued again (recover).
        let attempts = match &old {
            Some(op) if op.kind == kind => op.attempts,
            _ => 0,
        };
        let op = Operation {
            kind,
            phase: Phase::Queued,
            mode,
            added: pin.timestamp,
            attempts,
            priority,
            error: None,
            updated: now,
            generation,
            slot: Some((Lane::of(kind, priority), millis(now))),
        };
        self.write(&key, old.as_ref(), Some(&op))?;
        Ok(Some(generation))
    }

    /// Takes the earliest operation due by `now` off the first of `lanes`
    /// that has one, or tells when the next one is due.
    pub fn take_due(
        &mut self,
        lanes: &[Lane],
        now: DateTime<FixedOffset>,
    ) -> Result<Due, TrackerStoreError> {
        let now = millis(now);
        let mut earliest: Option<i64> = None;
        for lane in lanes {
            let floor = self.floor[*lane as usize].as_slice();
            let end = [*lane as u8 + 1];
            let Some(entry) = self.due.range(floor..&end[..]).next() else {
                continue;
            };
            let (key, value) = entry.into_inner()?;
            // Every entry of the lane is at or after this one.
            self.floor[*lane as usize] = key.to_vec();
            let at = key
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(|b| u64::from_be_bytes(b) as i64);
            let (Some(at), Some(cid), Ok(generation)) = (
                at,
                key.get(9..).and_then(|b| Cid::try_from(b).ok()),
                <[u8; 8]>::try_from(&*value),
            ) else {
                return Err(TrackerStoreError::Corrupt(format!("queue entry {key:?}")));
            };
            if at > now {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
                continue;
            }
            let len = key.len();
            self.due.remove(key)?;
            self.due_written.wrote(&self.due, 1, len)?;
            // The record keeps its slot until `start`, which clears it
            // with the phase change.
            return Ok(Due::Job(cid, u64::from_be_bytes(generation)));
        }
        Ok(earliest.map_or(Due::Empty, Due::At))
    }

    /// A worker takes the operation; `None` if it was superseded or is not
    /// queued any more.
    pub fn start(
        &mut self,
        cid: &Cid,
        generation: u64,
        now: DateTime<FixedOffset>,
    ) -> Result<Option<Operation>, TrackerStoreError> {
        let key = cid.to_bytes();
        let Some(old) = self.read(&key)? else {
            return Ok(None);
        };
        if old.generation != generation || old.phase != Phase::Queued {
            return Ok(None);
        }
        let op = Operation {
            phase: Phase::InProgress,
            attempts: old.attempts + 1,
            updated: now,
            slot: None,
            ..old.clone()
        };
        self.write(&key, Some(&old), Some(&op))?;
        Ok(Some(op))
    }

    /// The operation succeeded: it is forgotten (IPFS now tells its status).
    /// Returns false if it had been superseded.
    pub fn finish(&mut self, cid: &Cid, generation: u64) -> Result<bool, TrackerStoreError> {
        let key = cid.to_bytes();
        match self.read(&key)? {
            Some(op) if op.generation == generation => {
                self.write(&key, Some(&op), None)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The operation failed with `error`. A retry goes in the priority lane
    /// if `retry_priority` (pins only).
    pub fn fail(
        &mut self,
        cid: &Cid,
        generation: u64,
        error: &str,
        policy: &RetryPolicy,
        retry_priority: bool,
        now: DateTime<FixedOffset>,
    ) -> Result<AfterFailure, TrackerStoreError> {
        let key = cid.to_bytes();
        let Some(old) = self.read(&key)?.filter(|op| op.generation == generation) else {
            return Ok(AfterFailure::Stale);
        };
        let mut op = Operation {
            error: Some(Arc::from(error)),
            updated: now,
            ..old.clone()
        };
        let outcome = if op.attempts >= policy.max_attempts {
            op.phase = Phase::Error;
            op.slot = None;
            AfterFailure::GaveUp
        } else {
            let wait = policy.backoff(op.attempts);
            op.phase = Phase::Queued;
            let due = millis(now).saturating_add(wait.as_millis().min(i64::MAX as u128) as i64);
            op.slot = Some((Lane::of(op.kind, retry_priority), due));
            AfterFailure::RetryIn(wait)
        };
        self.write(&key, Some(&old), Some(&op))?;
        Ok(outcome)
    }

    /// Re-queues an errored operation (recover), due now: returns its kind
    /// and new generation.
    pub fn recover(
        &mut self,
        cid: &Cid,
        now: DateTime<FixedOffset>,
    ) -> Result<Option<(OpKind, u64)>, TrackerStoreError> {
        let key = cid.to_bytes();
        let Some(old) = self.read(&key)?.filter(|op| op.phase == Phase::Error) else {
            return Ok(None);
        };
        self.next_generation += 1;
        let op = Operation {
            generation: self.next_generation,
            phase: Phase::Queued,
            attempts: 0,
            updated: now,
            slot: Some((Lane::of(old.kind, old.kind == OpKind::Pin), millis(now))),
            ..old.clone()
        };
        self.write(&key, Some(&old), Some(&op))?;
        Ok(Some((op.kind, op.generation)))
    }

    /// The operation on `cid`, if any.
    pub fn get(&self, cid: &Cid) -> Result<Option<Operation>, TrackerStoreError> {
        self.read(&cid.to_bytes())
    }

    /// A reader of the operation records that needs no hold of the
    /// tracker ([`OpReader`]).
    pub fn reader(&self) -> OpReader {
        OpReader {
            ops: self.ops.clone(),
        }
    }

    /// Forgets `cid` (its pin left the state while nothing was running).
    pub fn forget(&mut self, cid: &Cid) -> Result<(), TrackerStoreError> {
        let key = cid.to_bytes();
        if let Some(old) = self.read(&key)? {
            self.write(&key, Some(&old), None)?;
        }
        Ok(())
    }

    /// Up to `limit` operations on CIDs after `after` (all from the start
    /// if `None`), in key order: a scan in pages, so that the lock is not
    /// held over a million records.
    pub fn page(
        &self,
        after: Option<&Cid>,
        limit: usize,
    ) -> Result<Vec<(Cid, Operation)>, TrackerStoreError> {
        let iter = match after {
            Some(cid) => {
                let from = cid.to_bytes();
                self.ops.range::<Vec<u8>, _>((
                    std::ops::Bound::Excluded(from),
                    std::ops::Bound::Unbounded,
                ))
            }
            None => self.ops.iter(),
        };
        let mut page = Vec::new();
        for entry in iter.take(limit) {
            let (key, value) = entry.into_inner()?;
            let cid =
                Cid::try_from(&*key).map_err(|_| TrackerStoreError::Corrupt(display_key(&key)))?;
            let op = decode(&value).ok_or_else(|| TrackerStoreError::Corrupt(cid.to_string()))?;
            page.push((cid, op));
        }
        Ok(page)
    }

    /// Operations queued or running (the pinqueue informer's figure).
    pub fn queued(&self) -> usize {
        self.len - self.errored
    }

    /// Operations tracked, failed ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no operation is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Reads operation records for statuses, without the tracker's lock: every
/// change of a record is one atomic fjall batch, so a reader sees a record
/// either before or after it, and a page of statuses does not wait behind
/// the workers (nor they behind it) while it reads.
#[derive(Clone)]
pub struct OpReader {
    ops: Keyspace,
}

impl std::fmt::Debug for OpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpReader").finish_non_exhaustive()
    }
}

impl OpReader {
    /// The operation on `cid`, if any.
    pub fn get(&self, cid: &Cid) -> Result<Option<Operation>, TrackerStoreError> {
        let key = cid.to_bytes();
        match self.ops.get(&key)? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .ok_or_else(|| TrackerStoreError::Corrupt(cid.to_string())),
        }
    }

    /// The operations on `cids`, in their order. For CIDs in key order (a
    /// page of the pinset), one scan of the page's key range: with ten
    /// million failed operations, a point read per CID missed the block
    /// cache and reloaded a block from disk for almost every status
    /// (BENCHMARKS.md, "Statuses at ten million operations").
    pub fn get_many(&self, cids: &[Cid]) -> Result<Vec<Option<Operation>>, TrackerStoreError> {
        read_page(
            &self.ops,
            cids,
            |cid| self.get(cid),
            |key, value| decode(value).ok_or_else(|| TrackerStoreError::Corrupt(display_key(key))),
        )
    }
}

/// The records of `space` under each of `cids` (their bytes are the keys),
/// in order. CIDs in ascending byte order, as a pass over the pinset reads
/// them, are answered by one scan of their key range merged with them: a
/// point read per CID loads the keyspace's filter and data blocks at
/// random, and with the tracker's small block cache a pass over millions
/// of pins then reads gigabytes from the files. Other CIDs get a point
/// read each (`one`).
pub(super) fn read_page<T>(
    space: &Keyspace,
    cids: &[Cid],
    one: impl Fn(&Cid) -> Result<Option<T>, TrackerStoreError>,
    decode: impl Fn(&[u8], &[u8]) -> Result<T, TrackerStoreError>,
) -> Result<Vec<Option<T>>, TrackerStoreError> {
    let keys: Vec<Vec<u8>> = cids.iter().map(Cid::to_bytes).collect();
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(Vec::new());
    };
    if !keys.is_sorted() {
        return cids.iter().map(one).collect();
    }
    let mut found = Vec::with_capacity(keys.len());
    let mut records = space.range(first.clone()..=last.clone());
    let mut next = records.next().map(|e| e.into_inner()).transpose()?;
    for key in &keys {
        // Records below this key belong to no CID asked for.
        while next
            .as_ref()
            .is_some_and(|(k, _)| k.as_ref() < key.as_slice())
        {
            next = records.next().map(|e| e.into_inner()).transpose()?;
        }
        found.push(match &next {
            Some((k, v)) if k.as_ref() == key.as_slice() => Some(decode(key, v)?),
            _ => None,
        });
    }
    Ok(found)
}

/// A key for an error message: its CID if it is one.
fn display_key(key: &[u8]) -> String {
    Cid::try_from(key).map_or_else(|_| format!("{key:?}"), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PinOptions;

    fn pin(i: u8) -> Pin {
        Pin::new(pincluster_crdt::cid_of(&[i]), PinOptions::default())
    }

    fn now() -> DateTime<FixedOffset> {
        chrono::Utc::now().fixed_offset()
    }

    fn tracker() -> (tempfile::TempDir, OpTracker) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let t = OpTracker::open(&db).unwrap();
        (dir, t)
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        first_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(3),
    };

    /// The start-up pass writes millions of records as fast as it can;
    /// without fjall's workers (none here) nothing but the tracker itself
    /// seals its memtables, so RAM holds one memtable per keyspace at most
    /// besides those being flushed.
    #[test]
    fn the_tracker_seals_its_full_memtables_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path())
            .worker_threads_unchecked(0)
            .open()
            .unwrap();
        let mut t = OpTracker::open(&db).unwrap();
        let mut i = 0u32;
        while t.ops.sealed_memtable_count() == 0 {
            // An operation record is about 90 bytes with its key.
            assert!(
                i < 250_000,
                "a memtable's worth of records and it never sealed"
            );
            let pin = Pin::new(
                pincluster_crdt::cid_of(&i.to_be_bytes()),
                PinOptions::default(),
            );
            t.enqueue(OpKind::Pin, &pin, false, now()).unwrap();
            i += 1;
        }
        assert!(
            db.write_buffer_size() < 3 * MEMTABLE_BYTES,
            "{} bytes of memtables",
            db.write_buffer_size()
        );
        assert_eq!(t.len(), i as usize, "every operation kept");
    }

    #[test]
    fn released_operations_move_to_disk_and_stay_readable() {
        let (_dir, mut t) = tracker();
        assert!(!t.release_memory().unwrap(), "nothing written yet");
        let pins: Vec<Pin> = (0..50).map(pin).collect();
        for p in &pins {
            t.enqueue(OpKind::Pin, p, false, now()).unwrap().unwrap();
        }
        assert_eq!(t.ops.table_count(), 0, "50 records fit in one memtable");
        assert!(t.release_memory().unwrap());
        assert!(!t.release_memory().unwrap(), "quiet since");
        // fjall flushes the rotated memtables to tables on disk.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while t.ops.table_count() == 0 || t.due.table_count() == 0 {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in &pins {
            assert_eq!(
                t.get(&p.cid).unwrap().unwrap().status(),
                TrackerStatus::PinQueued
            );
        }
        assert!(matches!(
            t.take_due(&[Lane::Normal], now()).unwrap(),
            Due::Job(..)
        ));
    }

    /// The queue reads from past what it took last, yet an operation
    /// queued earlier than that (the clock went back) is still taken.
    #[test]
    fn an_operation_due_before_the_last_taken_is_still_taken() {
        let (_dir, mut t) = tracker();
        let late = now();
        let g1 = t
            .enqueue(OpKind::Pin, &pin(1), false, late)
            .unwrap()
            .unwrap();
        let g2 = t
            .enqueue(OpKind::Pin, &pin(2), false, late)
            .unwrap()
            .unwrap();
        let first = t.take_due(&[Lane::Normal], late).unwrap();
        let Due::Job(cid, _) = first else {
            panic!("{first:?}")
        };
        let (second, g_second) = if cid == pin(1).cid {
            (pin(2).cid, g2)
        } else {
            (pin(1).cid, g1)
        };
        let early = late - chrono::Duration::hours(1);
        let g3 = t
            .enqueue(OpKind::Pin, &pin(3), false, early)
            .unwrap()
            .unwrap();
        assert_eq!(
            t.take_due(&[Lane::Normal], late).unwrap(),
            Due::Job(pin(3).cid, g3)
        );
        assert_eq!(
            t.take_due(&[Lane::Normal], late).unwrap(),
            Due::Job(second, g_second)
        );
        assert_eq!(t.take_due(&[Lane::Normal], late).unwrap(), Due::Empty);
    }

    #[test]
    fn a_pin_goes_queued_pinning_and_is_forgotten_when_done() {
        let (_dir, mut t) = tracker();
        let p = pin(1);
        let g = t.enqueue(OpKind::Pin, &p, true, now()).unwrap().unwrap();
        let get = |t: &OpTracker| t.get(&p.cid).unwrap();
        assert_eq!(get(&t).unwrap().status(), TrackerStatus::PinQueued);
        // Same kind again: refreshed, not queued twice.
        assert_eq!(t.enqueue(OpKind::Pin, &p, true, now()).unwrap(), None);
        assert_eq!(
            t.take_due(&[Lane::Priority, Lane::Normal], now()).unwrap(),
            Due::Job(p.cid, g)
        );
        assert_eq!(t.take_due(&[Lane::Priority], now()).unwrap(), Due::Empty);
        t.start(&p.cid, g, now()).unwrap().unwrap();
        assert_eq!(get(&t).unwrap().status(), TrackerStatus::Pinning);
        assert_eq!(t.queued(), 1);
        assert!(t.finish(&p.cid, g).unwrap());
        assert!(get(&t).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn failures_back_off_then_end_in_a_terminal_error_until_recovered() {
        let (_dir, mut t) = tracker();
        let p = pin(2);
        let mut g = t.enqueue(OpKind::Pin, &p, false, now()).unwrap().unwrap();
        let mut waits = Vec::new();
        loop {
            t.start(&p.cid, g, now()).unwrap().unwrap();
            let at = now();
            match t
                .fail(&p.cid, g, "no provider", &POLICY, false, at)
                .unwrap()
            {
                AfterFailure::RetryIn(d) => {
                    waits.push(d);
                    // Waiting in the queue, not due before its backoff.
                    let due = millis(at) + d.as_millis() as i64;
                    assert_eq!(t.take_due(&[Lane::Normal], at).unwrap(), Due::At(due));
                }
                AfterFailure::GaveUp => break,
                AfterFailure::Stale => unreachable!(),
            }
            g = t.get(&p.cid).unwrap().unwrap().generation;
        }
        assert_eq!(waits, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        let op = t.get(&p.cid).unwrap().unwrap();
        assert_eq!(
            (op.status(), op.attempts, op.error()),
            (TrackerStatus::PinError, 3, "no provider")
        );
        assert_eq!(t.queued(), 0);
        // Terminal: a worker cannot pick it up, and the queue does not hold it...
        assert!(t.start(&p.cid, g, now()).unwrap().is_none());
        let later = now() + chrono::Duration::seconds(60);
        assert_eq!(t.take_due(&[Lane::Normal], later).unwrap(), Due::Empty);
        // ...until recover queues it again with fresh attempts.
        let (kind, g2) = t.recover(&p.cid, now()).unwrap().unwrap();
        assert_eq!(kind, OpKind::Pin);
        assert_eq!(
            t.take_due(&[Lane::Priority], later).unwrap(),
            Due::Job(p.cid, g2)
        );
        assert_eq!(t.start(&p.cid, g2, now()).unwrap().unwrap().attempts, 1);
    }

    #[test]
    fn the_priority_lane_is_drained_first_and_each_lane_earliest_first() {
        let (_dir, mut t) = tracker();
        let t0 = now();
        let later = t0 + chrono::Duration::milliseconds(5);
        let g1 = t.enqueue(OpKind::Pin, &pin(1), false, t0).unwrap().unwrap();
        let g2 = t
            .enqueue(OpKind::Pin, &pin(2), true, later)
            .unwrap()
            .unwrap();
        let g3 = t
            .enqueue(OpKind::Pin, &pin(3), false, later)
            .unwrap()
            .unwrap();
        let lanes = [Lane::Priority, Lane::Normal];
        let mut order = Vec::new();
        while let Due::Job(cid, g) = t.take_due(&lanes, later).unwrap() {
            order.push((cid, g));
        }
        assert_eq!(
            order,
            vec![(pin(2).cid, g2), (pin(1).cid, g1), (pin(3).cid, g3)]
        );
    }

    #[test]
    fn records_read_back_as_written_and_a_reopened_tracker_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let mut t = OpTracker::open(&db).unwrap();
        let mut p = pin(4);
        p.timestamp = Some(now());
        p.max_depth = 0;
        let g = t.enqueue(OpKind::Pin, &p, true, now()).unwrap().unwrap();
        t.start(&p.cid, g, now()).unwrap().unwrap();
        t.fail(&p.cid, g, "dial tcp: refused ✗", &POLICY, true, now())
            .unwrap();
        let op = t.get(&p.cid).unwrap().unwrap();
        let back = decode(&encode(&op)).unwrap();
        assert_eq!(format!("{op:?}"), format!("{back:?}"));
        assert_eq!(op.added, p.timestamp);
        assert_eq!(op.mode, PinMode::Direct);
        // A record of another format is refused, not misread.
        let mut other = encode(&op);
        other[0] = FORMAT + 1;
        assert!(decode(&other).is_none());
        drop(t);
        let t = OpTracker::open(&db).unwrap();
        assert!(t.get(&p.cid).unwrap().is_none());
        assert_eq!(t.page(None, 10).unwrap().len(), 0);
    }

    proptest::proptest! {
        // Each case opens a fjall database: fewer cases than the default
        // keep the test to seconds.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// The kept counts of queued and failed operations are the ones a
        /// scan gives, and every queued operation is in the queue once,
        /// whatever the operations do.
        #[test]
        fn the_counts_and_the_queue_follow_every_transition(
            steps in proptest::collection::vec((0..7u8, 0..3u8), 0..60)
        ) {
            let (_dir, mut t) = tracker();
            for (step, i) in steps {
                let p = pin(i);
                let generation = t.get(&p.cid).unwrap().map(|op| op.generation).unwrap_or(0);
                match step {
                    0 => drop(t.enqueue(OpKind::Pin, &p, false, now()).unwrap()),
                    1 => drop(t.enqueue(OpKind::Unpin, &p, false, now()).unwrap()),
                    2 => drop(t.start(&p.cid, generation, now()).unwrap()),
                    3 => drop(t.fail(&p.cid, generation, "x", &POLICY, false, now()).unwrap()),
                    4 => drop(t.recover(&p.cid, now()).unwrap()),
                    5 => drop(t.take_due(&[Lane::Unpin, Lane::Priority, Lane::Normal], now()).unwrap()),
                    _ if i == 0 => t.forget(&p.cid).unwrap(),
                    _ => drop(t.finish(&p.cid, generation).unwrap()),
                }
                let all = t.page(None, 100).unwrap();
                let scanned = all.iter().filter(|(_, op)| op.phase != Phase::Error).count();
                proptest::prop_assert_eq!(t.queued(), scanned);
                proptest::prop_assert_eq!(t.len(), all.len());
                // No operation outside the queue phase is in the queue.
                for (_, op) in &all {
                    if op.phase != Phase::Queued {
                        proptest::prop_assert!(op.slot.is_none());
                    }
                }
            }
        }
    }

    /// A page of CIDs in key order reads by one scan the operations that
    /// point reads give, absent ones included; any other order as well.
    #[test]
    fn operations_read_for_a_page_are_those_of_each_cid() {
        let (_dir, mut t) = tracker();
        let pins: Vec<Pin> = (0..40).map(pin).collect();
        for p in pins.iter().step_by(3) {
            t.enqueue(OpKind::Pin, p, false, now()).unwrap().unwrap();
        }
        let mut cids: Vec<Cid> = pins.iter().map(|p| p.cid).collect();
        cids.sort_by_key(Cid::to_bytes);
        let reader = t.reader();
        let one_by_one = |cids: &[Cid]| -> Vec<String> {
            cids.iter()
                .map(|c| format!("{:?}", t.get(c).unwrap()))
                .collect()
        };
        let read = |ops: Vec<Option<Operation>>| -> Vec<String> {
            ops.iter().map(|op| format!("{op:?}")).collect()
        };
        let many = reader.get_many(&cids).unwrap();
        assert_eq!(many.iter().flatten().count(), 14);
        assert_eq!(read(many), one_by_one(&cids));
        // The first and last CIDs without an operation: the scan's ends.
        let inner = &cids[1..cids.len() - 1];
        assert_eq!(read(reader.get_many(inner).unwrap()), one_by_one(inner));
        cids.reverse();
        assert_eq!(read(reader.get_many(&cids).unwrap()), one_by_one(&cids));
        assert!(reader.get_many(&[]).unwrap().is_empty());
    }

    #[test]
    fn an_opposite_operation_supersedes_a_running_one() {
        let (_dir, mut t) = tracker();
        let p = pin(3);
        let g = t.enqueue(OpKind::Pin, &p, false, now()).unwrap().unwrap();
        t.start(&p.cid, g, now()).unwrap().unwrap();
        let u = t.enqueue(OpKind::Unpin, &p, false, now()).unwrap().unwrap();
        assert_eq!(
            t.get(&p.cid).unwrap().unwrap().status(),
            TrackerStatus::UnpinQueued
        );
        // The pin worker reports late: nothing changes.
        assert!(!t.finish(&p.cid, g).unwrap());
        assert_eq!(
            t.fail(&p.cid, g, "x", &POLICY, false, now()).unwrap(),
            AfterFailure::Stale
        );
        assert_eq!(
            t.take_due(&[Lane::Unpin], now()).unwrap(),
            Due::Job(p.cid, u)
        );
        assert!(t.start(&p.cid, u, now()).unwrap().is_some());
    }
}
