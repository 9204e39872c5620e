//! The pin tracker: makes the IPFS daemon beside this peer hold what the
//! shared pinset allocates to it, and nothing that was taken away.
//!
//! It keeps no copy of the pinset: state changes arrive from consensus as
//! (old, new) pairs, and only operations queued, in flight or failed live
//! in the [`OpTracker`], on disk in the peer's fjall database. A dispatcher
//! takes pins off its queue for at most `concurrent_pins` workers, always
//! draining the priority lane first (pins recently added and with few
//! attempts); one worker unpins. Failures are retried with backoff up to
//! `max_attempts`, then stay in `pin_error` until recovered. What RAM holds
//! does not grow with the pinset: the operations being run, and the queue's
//! next entry.

pub mod listing;
pub mod optracker;
pub mod upkeep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use cid::Cid;
use libp2p::PeerId;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::consensus::PinChange;
use crate::ipfsconn::{Fetched, IpfsConnector, PinProgress};
use crate::status::TrackerStatus;
use crate::types::Pin;
use listing::DaemonPins;
pub use listing::Listing;
pub use optracker::{
    AfterFailure, Due, Lane, OpKind, OpReader, OpTracker, Operation, Phase, RetryPolicy,
    TrackerStoreError,
};
use pincluster_crdt::store::fjall::Database;

/// Tuning of the tracker.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Pins running at once (`pin_tracker.stateless.concurrent_pins`).
    pub concurrent_pins: usize,
    /// Operations queued or running at most (`max_pin_queue_size`); one
    /// more fails at once with "pin queue is full".
    pub max_queue: usize,
    /// Pins added less than this long ago go in the priority lane...
    pub priority_max_age: Duration,
    /// ...while they have had at most this many attempts.
    pub priority_max_retries: u32,
    /// Retries and their backoff.
    pub retry: RetryPolicy,
}

/// The tracker's entry for one pin: its [`TrackerStatus`] on this peer,
/// with the error, attempts and lane that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerEntry {
    /// The status.
    pub status: TrackerStatus,
    /// The error of an error status.
    pub error: String,
    /// Attempts of the tracked operation.
    pub attempts: u32,
    /// Whether the operation is in the priority lane.
    pub priority: bool,
    /// When the status last changed.
    pub updated: Option<DateTime<FixedOffset>>,
    /// What a pin being run has fetched so far (`None` unless `pinning`).
    pub fetched: Option<Fetched>,
}

type Job = (Cid, u64);

/// How many failed operations one hold of the tracker's lock recovers or
/// lists: a million of them are handled in pages, between which workers
/// and statuses get the lock.
const PAGE_OPS: usize = 1024;

/// The longest a worker waits on the queue without looking again (a
/// guard: every change that makes work due also wakes it).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// `result`, or `fallback` with the error logged. The tracker's store is the
/// peer's own fjall database: when it fails, the engine fails with it, and
/// the tracker carries on with what it can read rather than stopping.
fn or_log<T>(result: Result<T, TrackerStoreError>, fallback: T) -> T {
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "pin tracker store");
        fallback
    })
}

/// A handle to the tracker. Cheap to clone.
pub struct PinTracker<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for PinTracker<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> std::fmt::Debug for PinTracker<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinTracker")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

struct Inner<C> {
    ipfs: C,
    local: PeerId,
    config: TrackerConfig,
    ops: Mutex<OpTracker>,
    /// The operation records, read for statuses without `ops`' lock.
    reader: OpReader,
    /// Wakes the pin dispatcher: a pin became due sooner than it expected.
    pins_ready: Notify,
    /// Wakes the unpin worker likewise.
    unpins_ready: Notify,
    /// What each pin being run has fetched so far: at most
    /// `concurrent_pins` entries, in memory only (a restart runs the pin
    /// again and counts afresh).
    fetching: Mutex<HashMap<Cid, Arc<PinProgress>>>,
    /// The daemon's pinset as last listed.
    listing: DaemonPins,
    /// A sharding follower's view of the shard: of the pins allocated to
    /// everyone, it holds only its share.
    shard: std::sync::OnceLock<crate::allocator::shard::Shard>,
}

/// A running pin's entry in the tracker's `fetching` map, removed however
/// the pin ends (a cancelled tracker drops it mid-way too).
struct Counted<'a, C> {
    tracker: &'a PinTracker<C>,
    cid: Cid,
    progress: Arc<PinProgress>,
}

impl<'a, C> Counted<'a, C> {
    fn new(tracker: &'a PinTracker<C>, cid: Cid) -> Self {
        let progress = Arc::new(PinProgress::default());
        tracker.fetching().insert(cid, progress.clone());
        Counted {
            tracker,
            cid,
            progress,
        }
    }
}

impl<C> Drop for Counted<'_, C> {
    fn drop(&mut self) {
        self.tracker.fetching().remove(&self.cid);
    }
}

fn now() -> DateTime<FixedOffset> {
    chrono::Utc::now().fixed_offset()
}

/// The time of a status no operation is behind: the pin's own timestamp
/// for a pin of the state, as the reference's tracker reports it (so a
/// pinned CID shows when it was pinned, not when it was asked), else `at`.
fn since(pin: Option<&Pin>, at: Option<DateTime<FixedOffset>>) -> Option<DateTime<FixedOffset>> {
    pin.and_then(|p| p.timestamp).or(at)
}

impl<C> PinTracker<C> {
    fn fetching(&self) -> std::sync::MutexGuard<'_, HashMap<Cid, Arc<PinProgress>>> {
        // Inserts and removes only: never half-changed.
        self.inner
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: IpfsConnector> PinTracker<C> {
    /// Starts the dispatcher and the unpin worker, with the operations and
    /// the daemon's listing in keyspaces of `db` (emptied: see
    /// [`OpTracker::open`]) and the spill file of each listing in `dir`
    /// (`db`'s folder); they and the operations in flight stop when
    /// `cancel` is cancelled.
    pub fn start(
        ipfs: C,
        local: PeerId,
        config: TrackerConfig,
        db: &Database,
        dir: &std::path::Path,
        cancel: CancellationToken,
    ) -> Result<Self, TrackerStoreError> {
        let ops = OpTracker::open(db)?;
        let listing = DaemonPins::open(db, dir)?;
        let tracker = Self {
            inner: Arc::new(Inner {
                ipfs,
                local,
                config,
                reader: ops.reader(),
                ops: Mutex::new(ops),
                pins_ready: Notify::new(),
                unpins_ready: Notify::new(),
                fetching: Mutex::new(HashMap::new()),
                listing,
                shard: std::sync::OnceLock::new(),
            }),
        };
        tokio::spawn(
            cancel
                .clone()
                .run_until_cancelled_owned(tracker.clone().dispatch()),
        );
        tokio::spawn(cancel.run_until_cancelled_owned(tracker.clone().unpin_worker()));
        Ok(tracker)
    }

    /// The status entry of the operation `op` on `cid`, with what the pin
    /// fetched so far when it is running.
    fn op_entry(&self, cid: &Cid, op: &Operation) -> TrackerEntry {
        let status = op.status();
        let fetched = (status == TrackerStatus::Pinning)
            .then(|| self.fetching().get(cid).map(|p| p.get()))
            .flatten();
        TrackerEntry {
            status,
            error: op.error().to_string(),
            attempts: op.attempts,
            priority: op.priority,
            updated: Some(op.updated),
            fetched,
        }
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, OpTracker> {
        // Operations are plain data updated in small critical sections; a
        // panic elsewhere cannot leave them half-changed.
        self.inner.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the memory of the operations written lately to the system
    /// ([`OpTracker::release_memory`]).
    pub fn release_memory(&self) -> bool {
        or_log(self.ops().release_memory(), false)
    }

    /// Whether `pin` is this peer's to hold.
    pub fn allocated_here(&self, pin: &Pin) -> bool {
        if pin.allocations.is_empty() {
            self.inner.shard.get().is_none_or(|s| s.holds(&pin.cid))
        } else {
            pin.allocations.contains(&self.inner.local)
        }
    }

    /// Makes this peer (a follower) hold only its share of the pins
    /// allocated to everyone; set once, before pins are fed.
    pub fn limit_to_share(&self, shard: crate::allocator::shard::Shard) {
        let _ = self.inner.shard.set(shard);
    }

    /// The pins of `page` this sharding follower's daemon holds though
    /// they are no longer its share (the shard's members changed), each
    /// with its holders now, as `held` (the listing the pass took at its
    /// start, as for statuses) says. Empty for a peer that does not shard.
    pub fn dropped_from_share(
        &self,
        held: &Listing,
        page: &[(Cid, Option<Pin>)],
    ) -> Vec<(Pin, Vec<PeerId>)> {
        let Some(shard) = self.inner.shard.get() else {
            return Vec::new();
        };
        let members = shard.members();
        let copies = shard.settings().copies;
        // One scan of the listing for the page ([`Listing::modes`]).
        let cids: Vec<Cid> = page.iter().map(|(cid, _)| *cid).collect();
        let listed = or_log(held.modes(&cids), vec![None; page.len()]);
        let ops = self.operations(&cids);
        page.iter()
            .zip(listed)
            .zip(ops)
            .filter_map(|(((cid, pin), listed), op)| {
                // Pins with allocations of their own are not sharded; an
                // operation under way is the tracker's business already.
                let pin = pin.as_ref().filter(|p| p.allocations.is_empty())?;
                if op.is_some() {
                    return None;
                }
                let holders = crate::allocator::shard::holders(cid, &members, copies);
                let dropped = !holders.contains(&self.inner.local) && listed.is_some();
                dropped.then(|| (pin.clone(), holders))
            })
            .collect()
    }

    /// Unpins `pin`, which left this follower's share, from its daemon.
    pub fn release_from_share(&self, pin: Pin) {
        self.enqueue(OpKind::Unpin, pin);
    }

    /// Which pins of `page` need no operation at start: the daemon already
    /// holds them in their mode, as `held` (one streamed listing of the
    /// daemon, made before the start-up pass) says. One scan of the
    /// listing per page of the pinset ([`Listing::modes`]).
    pub fn already_held(&self, page: &[Pin], held: &Listing) -> Vec<bool> {
        let cids: Vec<Cid> = page.iter().map(|pin| pin.cid).collect();
        let modes = or_log(held.modes(&cids), vec![None; page.len()]);
        page.iter()
            .zip(modes)
            .map(|(pin, listed)| {
                let mode = crate::types::PinMode::from_max_depth(pin.max_depth);
                self.allocated_here(pin) && listed == Some(mode)
            })
            .collect()
    }

    /// Reacts to a change of the pinset.
    pub fn on_change(&self, change: PinChange) {
        match (change.old, change.new) {
            (_, Some(new)) if self.allocated_here(&new) => self.enqueue(OpKind::Pin, new),
            (Some(old), Some(_)) if self.allocated_here(&old) => self.enqueue(OpKind::Unpin, old),
            (Some(old), None) if self.allocated_here(&old) => self.enqueue(OpKind::Unpin, old),
            // Remote before and after: nothing to do here, unless a pin
            // operation of an older allocation is still pending.
            // (An unpin needs only the CID, which the new pin has.)
            (_, new) => {
                if let Some(new) = new {
                    let pending = self.operation(&new.cid).map(|op| op.kind);
                    if pending == Some(OpKind::Pin) {
                        self.enqueue(OpKind::Unpin, new);
                    }
                }
            }
        }
    }

    /// Whether an operation on a pin of timestamp `added` goes in the
    /// priority lane.
    fn is_priority(&self, added: Option<DateTime<FixedOffset>>, attempts: u32) -> bool {
        let young = added.is_some_and(|t| {
            (now() - t)
                .to_std()
                .is_ok_and(|age| age < self.inner.config.priority_max_age)
        });
        young && attempts <= self.inner.config.priority_max_retries
    }

    fn enqueue(&self, kind: OpKind, pin: Pin) {
        let cid = pin.cid;
        let priority = kind == OpKind::Pin && self.is_priority(pin.timestamp, 0);
        let mut ops = self.ops();
        let full = ops.queued() >= self.inner.config.max_queue.max(1);
        let Some(generation) = or_log(ops.enqueue(kind, &pin, priority, now()), None) else {
            return;
        };
        if full {
            // Past `max_pin_queue_size` the operation fails now, visibly,
            // rather than growing the queue: recover re-queues it later.
            let policy = RetryPolicy {
                max_attempts: 0,
                ..self.inner.config.retry
            };
            let failed = ops.fail(&cid, generation, "pin queue is full", &policy, false, now());
            or_log(failed, AfterFailure::GaveUp);
            return;
        }
        drop(ops);
        self.wake(kind);
    }

    /// Tells the worker of `kind` that an operation became due.
    fn wake(&self, kind: OpKind) {
        match kind {
            OpKind::Pin => self.inner.pins_ready.notify_one(),
            OpKind::Unpin => self.inner.unpins_ready.notify_one(),
        }
    }

    /// The next operation due in `lanes`, waiting for one as long as it
    /// takes (until the tracker is cancelled, which drops this future).
    async fn next_job(&self, lanes: &[Lane], ready: &Notify) -> Job {
        loop {
            let due = or_log(self.ops().take_due(lanes, now()), Due::Empty);
            let wait = match due {
                Due::Job(cid, generation) => return (cid, generation),
                Due::At(at) => {
                    let ms = at.saturating_sub(now().timestamp_millis()).max(1);
                    Duration::from_millis(ms.unsigned_abs()).min(IDLE_LOOK)
                }
                Due::Empty => IDLE_LOOK,
            };
            tokio::select! {
                () = ready.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn dispatch(self) {
        let slots = Arc::new(Semaphore::new(self.inner.config.concurrent_pins.max(1)));
        // The operations in flight: aborted with the dispatcher when the
        // tracker is cancelled.
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let job = self
                .next_job(&[Lane::Priority, Lane::Normal], &self.inner.pins_ready)
                .await;
            let tracker = self.clone();
            running.spawn(async move {
                tracker.run(job).await;
                drop(permit);
            });
        }
    }

    async fn unpin_worker(self) {
        loop {
            let job = self
                .next_job(&[Lane::Unpin], &self.inner.unpins_ready)
                .await;
            self.run(job).await;
        }
    }

    /// Runs one operation and records its outcome.
    async fn run(&self, (cid, generation): Job) {
        let Some(op) = or_log(self.ops().start(&cid, generation, now()), None) else {
            return; // superseded or recovered meanwhile
        };
        let result = match op.kind {
            OpKind::Pin => {
                let counted = Counted::new(self, cid);
                let result = self
                    .inner
                    .ipfs
                    .pin_counting(&cid, op.mode, &counted.progress)
                    .await;
                drop(counted);
                result
            }
            OpKind::Unpin => self.inner.ipfs.unpin(&cid).await,
        };
        let error = match result {
            Ok(()) => {
                // The daemon's pinset changed: a status read from the
                // cached listing must not show the old state.
                let held = (op.kind == OpKind::Pin).then_some(op.mode);
                or_log(self.inner.listing.record(&cid, held).await, ());
                or_log(self.ops().finish(&cid, generation), false);
                return;
            }
            Err(e) => e.to_string(),
        };
        tracing::debug!(%cid, attempt = op.attempts, %error, "operation failed");
        // A retry is an entry due later in the queue, not a waiting task:
        // a failing daemon would otherwise leave one task per pin.
        let priority = op.kind == OpKind::Pin && self.is_priority(op.added, op.attempts);
        let failed = self.ops().fail(
            &cid,
            generation,
            &error,
            &self.inner.config.retry,
            priority,
            now(),
        );
        if let AfterFailure::RetryIn(_) = or_log(failed, AfterFailure::Stale) {
            // The worker may be sleeping until a later entry.
            self.wake(op.kind);
        }
    }

    /// Re-queues `cid` if its operation failed; returns whether it did.
    pub fn recover(&self, cid: &Cid) -> bool {
        let requeued = or_log(self.ops().recover(cid, now()), None);
        match requeued {
            Some((kind, _)) => {
                self.wake(kind);
                true
            }
            None => false,
        }
    }

    /// Calls `each` with every CID whose operation failed for good, a page
    /// of them at a time (the lock is not held while `each` runs).
    fn each_failed(&self, mut each: impl FnMut(Cid)) {
        let mut after: Option<Cid> = None;
        loop {
            let page = or_log(self.ops().page(after.as_ref(), PAGE_OPS), Vec::new());
            let Some((last, _)) = page.last() else {
                return;
            };
            after = Some(*last);
            page.into_iter()
                .filter(|(_, op)| op.phase == Phase::Error)
                .for_each(|(cid, _)| each(cid));
        }
    }

    /// The CIDs whose operation failed for good.
    pub fn failed(&self) -> Vec<Cid> {
        let mut failed = Vec::new();
        self.each_failed(|cid| failed.push(cid));
        failed
    }

    /// Re-queues every failed operation; returns their CIDs.
    pub fn recover_all(&self) -> Vec<Cid> {
        let mut recovered = Vec::new();
        self.each_failed(|cid| {
            if self.recover(&cid) {
                recovered.push(cid);
            }
        });
        recovered
    }

    /// Re-queues every failed operation without listing them (the
    /// periodic recover): returns how many.
    pub fn recover_failed(&self) -> usize {
        let mut n = 0;
        self.each_failed(|cid| n += usize::from(self.recover(&cid)));
        n
    }

    /// The operation tracked for `cid`, if any.
    pub fn operation(&self, cid: &Cid) -> Option<Operation> {
        or_log(self.inner.reader.get(cid), None)
    }

    /// The operations tracked for `cids`, in their order: one scan for a
    /// page in key order ([`OpReader::get_many`]), without the lock.
    fn operations(&self, cids: &[Cid]) -> Vec<Option<Operation>> {
        or_log(self.inner.reader.get_many(cids), vec![None; cids.len()])
    }

    /// Operations queued or running.
    pub fn queued(&self) -> usize {
        self.ops().queued()
    }

    /// The daemon's recursive and direct pins, listed at most every few
    /// seconds (into fjall, see [`listing`]).
    pub async fn ipfs_pinset(&self) -> Result<Listing, Arc<str>> {
        self.inner.listing.get(|| self.inner.ipfs.pin_ls()).await
    }

    /// `POST /pins/sync`: re-reads the daemon's pinset now (not the cached
    /// listing) and brings the operations in line with it. A failed pin
    /// whose CID the daemon now holds is done, as is a failed unpin whose
    /// CID it no longer holds; an allocated pin the daemon lost is queued
    /// again. Returns each pin's status afterwards and whether the sync
    /// changed it.
    pub async fn sync(&self, pins: &[(Cid, Option<Pin>)]) -> Vec<(TrackerEntry, bool)> {
        self.inner.listing.invalidate().await;
        let mut changed = vec![false; pins.len()];
        if let Ok(held) = self.ipfs_pinset().await {
            let mut ops = self.ops();
            for ((cid, _), changed) in pins.iter().zip(&mut changed) {
                let settled = or_log(ops.get(cid), None).is_some_and(|op| {
                    op.phase == Phase::Error
                        && (op.kind == OpKind::Pin) == or_log(held.contains(cid), false)
                });
                if settled {
                    or_log(ops.forget(cid), ());
                    *changed = true;
                }
            }
        }
        let before = self.statuses(pins).await;
        for (((_, pin), status), changed) in pins.iter().zip(&before).zip(&mut changed) {
            if status.status == TrackerStatus::UnexpectedlyUnpinned {
                self.on_change(PinChange {
                    old: None,
                    new: pin.clone(),
                });
                *changed = true;
            }
        }
        self.statuses(pins).await.into_iter().zip(changed).collect()
    }

    /// This peer's statuses of many pins of the state (or CIDs not in it),
    /// in order, from one listing of the daemon's pinset.
    pub async fn statuses(&self, pins: &[(Cid, Option<Pin>)]) -> Vec<TrackerEntry> {
        let pinned = self.ipfs_pinset().await;
        self.statuses_from(&pinned, pins)
    }

    /// The same from a listing the caller took: a pass over many pages
    /// takes one at its start ([`PinTracker::ipfs_pinset`]) and reads them
    /// all from it, instead of listing the daemon again whenever a page
    /// finds the last listing a few seconds old.
    pub fn statuses_from(
        &self,
        pinned: &Result<Listing, Arc<str>>,
        pins: &[(Cid, Option<Pin>)],
    ) -> Vec<TrackerEntry> {
        let at = Some(now());
        // The whole page against the listing and the operations at once:
        // one scan of each key range (see [`Listing::modes`]), not a
        // point read per pin.
        let cids: Vec<Cid> = pins.iter().map(|(cid, _)| *cid).collect();
        let ops = self.operations(&cids);
        let listed = pinned
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|listing| listing.modes(&cids).map_err(|e| e.to_string()));
        pins.iter()
            .zip(ops)
            .enumerate()
            .map(|(i, ((cid, pin), op))| {
                if let Some(op) = op {
                    return self.op_entry(cid, &op);
                }
                let held = match &listed {
                    Ok(modes) => Ok(modes[i].is_some()),
                    Err(e) => Err(e.clone()),
                };
                let (status, error) = match (pin, held) {
                    (Some(p), _) if !self.allocated_here(p) => {
                        (TrackerStatus::Remote, String::new())
                    }
                    (_, Err(e)) => (TrackerStatus::ClusterError, e),
                    (_, Ok(true)) => (TrackerStatus::Pinned, String::new()),
                    (Some(_), Ok(false)) => (
                        TrackerStatus::UnexpectedlyUnpinned,
                        "the item should be pinned but it is not".to_string(),
                    ),
                    (None, Ok(false)) => (TrackerStatus::Unpinned, String::new()),
                };
                TrackerEntry {
                    status,
                    error,
                    attempts: 0,
                    priority: false,
                    updated: since(pin.as_ref(), at),
                    fetched: None,
                }
            })
            .collect()
    }

    /// This peer's status of a pin of the state (or of a CID not in it):
    /// the tracked operation if any, else what IPFS says.
    pub async fn status(&self, cid: &Cid, pin: Option<&Pin>) -> TrackerEntry {
        if let Some(op) = self.operation(cid) {
            return self.op_entry(cid, &op);
        }
        let plain = |status, error: String| TrackerEntry {
            status,
            error,
            attempts: 0,
            priority: false,
            updated: since(pin, Some(now())),
            fetched: None,
        };
        if let Some(pin) = pin
            && !self.allocated_here(pin)
        {
            return plain(TrackerStatus::Remote, String::new());
        }
        match self.inner.ipfs.pin_ls_cid(cid).await {
            Ok(Some(_)) => plain(TrackerStatus::Pinned, String::new()),
            Ok(None) if pin.is_some() => plain(
                TrackerStatus::UnexpectedlyUnpinned,
                "the item should be pinned but it is not".to_string(),
            ),
            Ok(None) => plain(TrackerStatus::Unpinned, String::new()),
            Err(e) => plain(TrackerStatus::ClusterError, e.to_string()),
        }
    }
}
