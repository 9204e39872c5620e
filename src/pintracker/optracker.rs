//! The operation tracker: what the pin tracker is doing or failed to do for
//! each CID. Pure state, no I/O and no clock of its own (every call takes
//! `now`), so its rules are tested without an IPFS daemon.
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
//! An operation is kept small: with the IPFS daemon down, every pin
//! allocated here sits in the tracker, a million of them on a large
//! pinset. So it holds only what the worker and the status need of the
//! pin (its mode and timestamp, not the whole pin with its name,
//! allocations and metadata), and failures share their error text.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use cid::Cid;

use crate::status::TrackerStatus;
use crate::types::{Pin, PinMode};

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
    /// Waiting for a worker (possibly until `not_before`).
    Queued,
    /// A worker is on it.
    InProgress,
    /// Gave up after the allowed attempts.
    Error,
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
    /// The last error, shared with the other operations that failed the
    /// same way.
    pub error: Option<Arc<str>>,
    /// When the phase last changed.
    pub updated: DateTime<FixedOffset>,
    /// Distinguishes this operation from an older one on the same CID, so a
    /// worker reporting on a superseded operation changes nothing.
    pub generation: u64,
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
    /// Queue it again after this long.
    RetryIn(Duration),
    /// Attempts exhausted: the operation now shows its error status.
    GaveUp,
    /// The operation was superseded meanwhile; nothing to do.
    Stale,
}

/// Every operation in flight or failed.
#[derive(Debug, Default)]
pub struct OpTracker {
    ops: HashMap<Cid, Operation>,
    /// How many of `ops` are in `Phase::Error`, kept as they change: the
    /// pinqueue informer asks every metrics interval, and counting a
    /// million failed operations each time would hold the tracker's lock.
    errored: usize,
    next_generation: u64,
    /// The error texts seen last, so that operations failing the same way
    /// (every one of them while the daemon is down) share one allocation.
    /// Few and bounded: a text that names its CID is not kept for long.
    recent_errors: Vec<Arc<str>>,
}

/// How many distinct error texts `recent_errors` keeps.
const RECENT_ERRORS: usize = 8;

impl OpTracker {
    /// Records that `pin` must be pinned (`OpKind::Pin`) or unpinned.
    /// Returns the generation to queue, or `None` when an operation of the
    /// same kind is already queued or running (it just gets the new pin's
    /// mode and timestamp).
    pub fn enqueue(
        &mut self,
        kind: OpKind,
        pin: &Pin,
        priority: bool,
        now: DateTime<FixedOffset>,
    ) -> Option<u64> {
        let mode = PinMode::from_max_depth(pin.max_depth);
        if let Some(op) = self.ops.get_mut(&pin.cid)
            && op.kind == kind
            && op.phase != Phase::Error
        {
            op.mode = mode;
            op.added = pin.timestamp;
            return None;
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        // Attempts carry over when the same kind is queued again (recover).
        let attempts = match self.ops.get(&pin.cid) {
            Some(op) if op.kind == kind => op.attempts,
            _ => 0,
        };
        let replaced = self.ops.insert(
            pin.cid,
            Operation {
                kind,
                phase: Phase::Queued,
                mode,
                added: pin.timestamp,
                attempts,
                priority,
                error: None,
                updated: now,
                generation,
            },
        );
        self.count_gone(replaced.as_ref());
        Some(generation)
    }

    /// A worker takes the operation; `None` if it was superseded or is not
    /// queued any more.
    pub fn start(
        &mut self,
        cid: &Cid,
        generation: u64,
        now: DateTime<FixedOffset>,
    ) -> Option<Operation> {
        let op = self.ops.get_mut(cid)?;
        if op.generation != generation || op.phase != Phase::Queued {
            return None;
        }
        op.phase = Phase::InProgress;
        op.attempts += 1;
        op.updated = now;
        Some(op.clone())
    }

    /// The operation succeeded: it is forgotten (IPFS now tells its status).
    /// Returns false if it had been superseded.
    pub fn finish(&mut self, cid: &Cid, generation: u64) -> bool {
        match self.ops.get(cid) {
            Some(op) if op.generation == generation => {
                let gone = self.ops.remove(cid);
                self.count_gone(gone.as_ref());
                true
            }
            _ => false,
        }
    }

    /// The operation failed with `error`.
    pub fn fail(
        &mut self,
        cid: &Cid,
        generation: u64,
        error: &str,
        policy: &RetryPolicy,
        now: DateTime<FixedOffset>,
    ) -> AfterFailure {
        let error = self.intern(error);
        let Some(op) = self
            .ops
            .get_mut(cid)
            .filter(|op| op.generation == generation)
        else {
            return AfterFailure::Stale;
        };
        op.error = Some(error);
        op.updated = now;
        if op.attempts >= policy.max_attempts {
            if op.phase != Phase::Error {
                self.errored += 1;
            }
            op.phase = Phase::Error;
            AfterFailure::GaveUp
        } else {
            op.phase = Phase::Queued;
            AfterFailure::RetryIn(policy.backoff(op.attempts))
        }
    }

    /// The shared copy of `error`, made and remembered if new.
    fn intern(&mut self, error: &str) -> Arc<str> {
        if let Some(i) = self.recent_errors.iter().position(|e| **e == *error) {
            return self.recent_errors[i].clone();
        }
        if self.recent_errors.len() == RECENT_ERRORS {
            self.recent_errors.remove(0);
        }
        let error: Arc<str> = Arc::from(error);
        self.recent_errors.push(error.clone());
        error
    }

    /// Re-queues an errored operation (recover): returns its generation.
    pub fn recover(&mut self, cid: &Cid, now: DateTime<FixedOffset>) -> Option<(OpKind, u64)> {
        let op = self
            .ops
            .get_mut(cid)
            .filter(|op| op.phase == Phase::Error)?;
        self.errored -= 1;
        self.next_generation += 1;
        op.generation = self.next_generation;
        op.phase = Phase::Queued;
        op.attempts = 0;
        op.updated = now;
        Some((op.kind, op.generation))
    }

    /// The operation on `cid`, if any.
    pub fn get(&self, cid: &Cid) -> Option<&Operation> {
        self.ops.get(cid)
    }

    /// Forgets `cid` (its pin left the state while nothing was running).
    pub fn forget(&mut self, cid: &Cid) {
        let gone = self.ops.remove(cid);
        self.count_gone(gone.as_ref());
    }

    /// Keeps `errored` true when `op` leaves the map.
    fn count_gone(&mut self, op: Option<&Operation>) {
        if op.is_some_and(|op| op.phase == Phase::Error) {
            self.errored -= 1;
        }
    }

    /// Every tracked operation.
    pub fn iter(&self) -> impl Iterator<Item = (&Cid, &Operation)> {
        self.ops.iter()
    }

    /// Operations queued or running (the pinqueue informer's figure).
    pub fn queued(&self) -> usize {
        self.ops.len() - self.errored
    }
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

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        first_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(3),
    };

    #[test]
    fn a_pin_goes_queued_pinning_and_is_forgotten_when_done() {
        let mut t = OpTracker::default();
        let p = pin(1);
        let g = t.enqueue(OpKind::Pin, &p, true, now()).unwrap();
        assert_eq!(t.get(&p.cid).unwrap().status(), TrackerStatus::PinQueued);
        // Same kind again: refreshed, not queued twice.
        assert_eq!(t.enqueue(OpKind::Pin, &p, true, now()), None);
        t.start(&p.cid, g, now()).unwrap();
        assert_eq!(t.get(&p.cid).unwrap().status(), TrackerStatus::Pinning);
        assert_eq!(t.queued(), 1);
        assert!(t.finish(&p.cid, g));
        assert!(t.get(&p.cid).is_none());
    }

    #[test]
    fn failures_back_off_then_end_in_a_terminal_error_until_recovered() {
        let mut t = OpTracker::default();
        let p = pin(2);
        let mut g = t.enqueue(OpKind::Pin, &p, false, now()).unwrap();
        let mut waits = Vec::new();
        loop {
            t.start(&p.cid, g, now()).unwrap();
            match t.fail(&p.cid, g, "no provider", &POLICY, now()) {
                AfterFailure::RetryIn(d) => waits.push(d),
                AfterFailure::GaveUp => break,
                AfterFailure::Stale => unreachable!(),
            }
            g = t.get(&p.cid).unwrap().generation;
        }
        assert_eq!(waits, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        let op = t.get(&p.cid).unwrap();
        assert_eq!(
            (op.status(), op.attempts, op.error()),
            (TrackerStatus::PinError, 3, "no provider")
        );
        assert_eq!(t.queued(), 0);
        // Terminal: a worker cannot pick it up...
        assert!(t.start(&p.cid, g, now()).is_none());
        // ...until recover queues it again with fresh attempts.
        let (kind, g2) = t.recover(&p.cid, now()).unwrap();
        assert_eq!(kind, OpKind::Pin);
        assert_eq!(t.start(&p.cid, g2, now()).unwrap().attempts, 1);
    }

    proptest::proptest! {
        /// The kept count of queued operations is the one a scan gives,
        /// whatever the operations do.
        #[test]
        fn the_queued_count_follows_every_transition(
            steps in proptest::collection::vec((0..6u8, 0..3u8), 0..80)
        ) {
            let mut t = OpTracker::default();
            for (step, i) in steps {
                let p = pin(i);
                let generation = t.get(&p.cid).map(|op| op.generation).unwrap_or(0);
                match step {
                    0 => drop(t.enqueue(OpKind::Pin, &p, false, now())),
                    1 => drop(t.enqueue(OpKind::Unpin, &p, false, now())),
                    2 => drop(t.start(&p.cid, generation, now())),
                    3 => drop(t.fail(&p.cid, generation, "x", &POLICY, now())),
                    4 => drop(t.recover(&p.cid, now())),
                    _ if i == 0 => t.forget(&p.cid),
                    _ => drop(t.finish(&p.cid, generation)),
                }
                let scanned = t.iter().filter(|(_, op)| op.phase != Phase::Error).count();
                proptest::prop_assert_eq!(t.queued(), scanned);
            }
        }
    }

    #[test]
    fn an_opposite_operation_supersedes_a_running_one() {
        let mut t = OpTracker::default();
        let p = pin(3);
        let g = t.enqueue(OpKind::Pin, &p, false, now()).unwrap();
        t.start(&p.cid, g, now()).unwrap();
        let u = t.enqueue(OpKind::Unpin, &p, false, now()).unwrap();
        assert_eq!(t.get(&p.cid).unwrap().status(), TrackerStatus::UnpinQueued);
        // The pin worker reports late: nothing changes.
        assert!(!t.finish(&p.cid, g));
        assert_eq!(t.fail(&p.cid, g, "x", &POLICY, now()), AfterFailure::Stale);
        assert!(t.start(&p.cid, u, now()).is_some());
    }
}
