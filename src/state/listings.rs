//! Listings first: a client streaming the pinset goes before the peer's
//! own background pass over it.
//!
//! Right after start, the tracker's start-up pass reads every pin and
//! queues an operation for each, and the first snapshot build follows it;
//! on two cores a `GET /allocations` of 10,000,000 pins in that minute took
//! twice as long as once the peer was idle (BENCHMARKS.md, issue 13). The
//! pass has no deadline a client can see, so it waits while a listing
//! streams, for at most [`Listings::PAUSE_BUDGET`] over the whole pass:
//! clients that list without end (or never read) cannot keep the tracker
//! from the pinset.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The listings of the pinset being streamed. Cheap to clone; clones share
/// the count.
#[derive(Debug, Clone, Default)]
pub struct Listings {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    active: AtomicUsize,
    ended: Notify,
}

/// A listing being streamed, counted until dropped.
#[derive(Debug)]
pub struct Streaming {
    inner: Arc<Inner>,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.ended.notify_waiters();
        }
    }
}

/// A background pass's share of waiting: what is left of its budget.
#[derive(Debug)]
pub struct Yielding {
    listings: Listings,
    left: Duration,
}

impl Listings {
    /// How long one background pass waits for listings in all.
    pub const PAUSE_BUDGET: Duration = Duration::from_secs(60);

    /// Counts a listing until the returned guard is dropped.
    pub fn streaming(&self) -> Streaming {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        Streaming {
            inner: self.inner.clone(),
        }
    }

    /// A background pass's handle, with `budget` of waiting in all.
    pub fn yielding(&self, budget: Duration) -> Yielding {
        Yielding {
            listings: self.clone(),
            left: budget,
        }
    }
}

impl Yielding {
    /// Returns once no listing is being streamed, or at once when the
    /// pass's budget is spent.
    pub async fn to_listings(&mut self) {
        let inner = &self.listings.inner;
        while !self.left.is_zero() {
            let ended = inner.ended.notified();
            tokio::pin!(ended);
            // Registered before the count is read: an end in between is
            // not missed.
            ended.as_mut().enable();
            if inner.active.load(Ordering::Acquire) == 0 {
                return;
            }
            let started = Instant::now();
            let _ = tokio::time::timeout(self.left, ended).await;
            self.left = self.left.saturating_sub(started.elapsed());
        }
    }

    /// What is left of the budget.
    pub fn left(&self) -> Duration {
        self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pass_waits_for_the_listing_to_end() {
        let listings = Listings::default();
        let mut pass = listings.yielding(Duration::from_secs(60));
        pass.to_listings().await; // none: no wait
        assert_eq!(pass.left(), Duration::from_secs(60));

        let listing = listings.streaming();
        let waiting = tokio::spawn(async move {
            pass.to_listings().await;
            pass
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "the pass waits while it streams");
        drop(listing);
        let pass = waiting.await.unwrap();
        assert_eq!(pass.left(), Duration::from_secs(55));
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_without_end_holds_a_pass_for_its_budget_only() {
        let listings = Listings::default();
        let _endless = listings.streaming();
        let _another = listings.streaming();
        let mut pass = listings.yielding(Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        pass.to_listings().await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert!(pass.left().is_zero());
        // Spent: it goes on at once from now on.
        pass.to_listings().await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
