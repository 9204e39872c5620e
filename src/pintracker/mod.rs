//! The pin tracker: makes the IPFS daemon beside this peer hold what the
//! shared pinset allocates to it, and nothing that was taken away.
//!
//! It keeps no copy of the pinset: state changes arrive from consensus as
//! (old, new) pairs, and only operations in flight or failed live in the
//! [`OpTracker`]. A dispatcher hands pins to at most `concurrent_pins`
//! workers, always draining the priority lane first (pins recently added
//! and with few attempts); one worker unpins. Failures are retried with
//! backoff up to `max_attempts`, then stay in `pin_error` until recovered.

pub mod optracker;
pub mod upkeep;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use cid::Cid;
use futures::StreamExt;
use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::consensus::PinChange;
use crate::ipfsconn::IpfsConnector;
use crate::status::TrackerStatus;
use crate::types::Pin;
pub use optracker::{AfterFailure, OpKind, OpTracker, Operation, Phase, RetryPolicy};

/// Tuning of the tracker.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Pins running at once (`pin_tracker.stateless.concurrent_pins`).
    pub concurrent_pins: usize,
    /// Capacity of each lane (`max_pin_queue_size`).
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
}

type Job = (Cid, u64);

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
    priority: mpsc::Sender<Job>,
    normal: mpsc::Sender<Job>,
    unpins: mpsc::Sender<Job>,
    /// Stops the workers, the operations in flight and the retries waiting.
    cancel: CancellationToken,
    /// The daemon's pinset as last listed, for statuses of many pins: one
    /// `pin/ls` serves every page of a `GET /pins` for a few seconds.
    snapshot: tokio::sync::Mutex<Option<(std::time::Instant, Arc<HashSet<Cid>>)>>,
    /// A sharding follower's view of the shard: of the pins allocated to
    /// everyone, it holds only its share.
    shard: std::sync::OnceLock<crate::allocator::shard::Shard>,
}

/// How long a listing of the daemon's pinset serves status requests.
const SNAPSHOT_TTL: Duration = Duration::from_secs(5);

fn now() -> DateTime<FixedOffset> {
    chrono::Utc::now().fixed_offset()
}

/// The time of a status no operation is behind: the pin's own timestamp
/// for a pin of the state, as the reference's tracker reports it (so a
/// pinned CID shows when it was pinned, not when it was asked), else `at`.
fn since(pin: Option<&Pin>, at: Option<DateTime<FixedOffset>>) -> Option<DateTime<FixedOffset>> {
    pin.and_then(|p| p.timestamp).or(at)
}

impl<C: IpfsConnector> PinTracker<C> {
    /// Starts the dispatcher and the unpin worker; they, the operations
    /// in flight and the retries waiting stop when `cancel` is cancelled.
    pub fn start(ipfs: C, local: PeerId, config: TrackerConfig, cancel: CancellationToken) -> Self {
        let cap = config.max_queue.max(1);
        let (priority, priority_rx) = mpsc::channel(cap);
        let (normal, normal_rx) = mpsc::channel(cap);
        let (unpins, unpins_rx) = mpsc::channel(cap);
        let tracker = Self {
            inner: Arc::new(Inner {
                ipfs,
                local,
                config,
                ops: Mutex::new(OpTracker::default()),
                priority,
                normal,
                unpins,
                cancel: cancel.clone(),
                snapshot: tokio::sync::Mutex::new(None),
                shard: std::sync::OnceLock::new(),
            }),
        };
        tokio::spawn(
            cancel
                .clone()
                .run_until_cancelled_owned(tracker.clone().dispatch(priority_rx, normal_rx)),
        );
        tokio::spawn(cancel.run_until_cancelled_owned(tracker.clone().unpin_worker(unpins_rx)));
        tracker
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, OpTracker> {
        // Operations are plain data updated in small critical sections; a
        // panic elsewhere cannot leave them half-changed.
        self.inner.ops.lock().unwrap_or_else(|e| e.into_inner())
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
                    let pending = self.ops().get(&new.cid).map(|op| op.kind);
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
        let Some(generation) = self.ops().enqueue(kind, &pin, priority, now()) else {
            return;
        };
        self.send(kind, priority, (cid, generation));
    }

    fn send(&self, kind: OpKind, priority: bool, job: Job) {
        let lane = match (kind, priority) {
            (OpKind::Unpin, _) => &self.inner.unpins,
            (OpKind::Pin, true) => &self.inner.priority,
            (OpKind::Pin, false) => &self.inner.normal,
        };
        if lane.try_send(job).is_err() {
            // A full lane fails the operation now, visibly, rather than
            // growing memory: recover re-queues it later.
            let policy = RetryPolicy {
                max_attempts: 0,
                ..self.inner.config.retry
            };
            self.ops()
                .fail(&job.0, job.1, "pin queue is full", &policy, now());
        }
    }

    async fn dispatch(self, mut priority: mpsc::Receiver<Job>, mut normal: mpsc::Receiver<Job>) {
        let slots = Arc::new(Semaphore::new(self.inner.config.concurrent_pins.max(1)));
        // The operations in flight: aborted with the dispatcher when the
        // tracker is cancelled.
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let job = tokio::select! {
                biased;
                Some(job) = priority.recv() => job,
                Some(job) = normal.recv() => job,
                else => return,
            };
            let tracker = self.clone();
            running.spawn(async move {
                tracker.run(job).await;
                drop(permit);
            });
        }
    }

    async fn unpin_worker(self, mut unpins: mpsc::Receiver<Job>) {
        while let Some(job) = unpins.recv().await {
            self.run(job).await;
        }
    }

    /// Runs one operation and records its outcome.
    async fn run(&self, (cid, generation): Job) {
        let Some(op) = self.ops().start(&cid, generation, now()) else {
            return; // superseded or recovered meanwhile
        };
        let result = match op.kind {
            OpKind::Pin => self.inner.ipfs.pin(&cid, op.mode).await,
            OpKind::Unpin => self.inner.ipfs.unpin(&cid).await,
        };
        let error = match result {
            Ok(()) => {
                self.ops().finish(&cid, generation);
                return;
            }
            Err(e) => e.to_string(),
        };
        tracing::debug!(%cid, attempt = op.attempts, %error, "operation failed");
        let outcome = self
            .ops()
            .fail(&cid, generation, &error, &self.inner.config.retry, now());
        if let AfterFailure::RetryIn(wait) = outcome {
            let tracker = self.clone();
            let priority = self.is_priority(op.added, op.attempts);
            let cancel = self.inner.cancel.clone();
            // Only the kind goes in the waiting task, not the operation:
            // a failing daemon leaves one such task per pin.
            let kind = op.kind;
            tokio::spawn(cancel.run_until_cancelled_owned(async move {
                tokio::time::sleep(wait).await;
                tracker.send(kind, priority, (cid, generation));
            }));
        }
    }

    /// Re-queues `cid` if its operation failed; returns whether it did.
    pub fn recover(&self, cid: &Cid) -> bool {
        let requeued = self.ops().recover(cid, now());
        match requeued {
            Some((kind, generation)) => {
                self.send(kind, kind == OpKind::Pin, (*cid, generation));
                true
            }
            None => false,
        }
    }

    /// The CIDs whose operation failed for good.
    pub fn failed(&self) -> Vec<Cid> {
        self.ops()
            .iter()
            .filter(|(_, op)| op.phase == Phase::Error)
            .map(|(cid, _)| *cid)
            .collect()
    }

    /// Re-queues every failed operation; returns their CIDs.
    pub fn recover_all(&self) -> Vec<Cid> {
        self.failed()
            .into_iter()
            .filter(|cid| self.recover(cid))
            .collect()
    }

    /// The operation tracked for `cid`, if any.
    pub fn operation(&self, cid: &Cid) -> Option<Operation> {
        self.ops().get(cid).cloned()
    }

    /// Operations queued or running.
    pub fn queued(&self) -> usize {
        self.ops().queued()
    }

    /// The daemon's recursive and direct pins, listed at most every few
    /// seconds. (The set holds the CIDs themselves: about 100 bytes a pin.)
    async fn ipfs_pinset(&self) -> Result<Arc<HashSet<Cid>>, crate::ipfsconn::IpfsError> {
        let mut snapshot = self.inner.snapshot.lock().await;
        if let Some((at, set)) = snapshot.as_ref()
            && at.elapsed() < SNAPSHOT_TTL
        {
            return Ok(set.clone());
        }
        let mut set = HashSet::new();
        let mut pins = std::pin::pin!(self.inner.ipfs.pin_ls());
        while let Some(pin) = pins.next().await {
            set.insert(pin?.0);
        }
        let set = Arc::new(set);
        *snapshot = Some((std::time::Instant::now(), set.clone()));
        Ok(set)
    }

    /// `POST /pins/sync`: re-reads the daemon's pinset now (not the cached
    /// listing) and brings the operations in line with it. A failed pin
    /// whose CID the daemon now holds is done, as is a failed unpin whose
    /// CID it no longer holds; an allocated pin the daemon lost is queued
    /// again. Returns each pin's status afterwards and whether the sync
    /// changed it.
    pub async fn sync(&self, pins: &[(Cid, Option<Pin>)]) -> Vec<(TrackerEntry, bool)> {
        *self.inner.snapshot.lock().await = None;
        let mut changed = vec![false; pins.len()];
        if let Ok(held) = self.ipfs_pinset().await {
            let mut ops = self.ops();
            for ((cid, _), changed) in pins.iter().zip(&mut changed) {
                let settled = ops.get(cid).is_some_and(|op| {
                    op.phase == Phase::Error && (op.kind == OpKind::Pin) == held.contains(cid)
                });
                if settled {
                    ops.forget(cid);
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
        let at = Some(now());
        pins.iter()
            .map(|(cid, pin)| {
                if let Some(op) = self.operation(cid) {
                    return TrackerEntry {
                        status: op.status(),
                        error: op.error().to_string(),
                        attempts: op.attempts,
                        priority: op.priority,
                        updated: Some(op.updated),
                    };
                }
                let (status, error) = match (pin, &pinned) {
                    (Some(p), _) if !self.allocated_here(p) => {
                        (TrackerStatus::Remote, String::new())
                    }
                    (_, Err(e)) => (TrackerStatus::ClusterError, e.to_string()),
                    (_, Ok(set)) if set.contains(cid) => (TrackerStatus::Pinned, String::new()),
                    (Some(_), Ok(_)) => (
                        TrackerStatus::UnexpectedlyUnpinned,
                        "the item should be pinned but it is not".to_string(),
                    ),
                    (None, Ok(_)) => (TrackerStatus::Unpinned, String::new()),
                };
                TrackerEntry {
                    status,
                    error,
                    attempts: 0,
                    priority: false,
                    updated: since(pin.as_ref(), at),
                }
            })
            .collect()
    }

    /// This peer's status of a pin of the state (or of a CID not in it):
    /// the tracked operation if any, else what IPFS says.
    pub async fn status(&self, cid: &Cid, pin: Option<&Pin>) -> TrackerEntry {
        if let Some(op) = self.operation(cid) {
            return TrackerEntry {
                status: op.status(),
                error: op.error().to_string(),
                attempts: op.attempts,
                priority: op.priority,
                updated: Some(op.updated),
            };
        }
        let plain = |status, error: String| TrackerEntry {
            status,
            error,
            attempts: 0,
            priority: false,
            updated: since(pin, Some(now())),
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
