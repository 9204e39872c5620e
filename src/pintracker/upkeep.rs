//! The tracker's upkeep, the tasks the peer runs beside it: feeding it
//! every durable change of the pinset, re-queueing failed operations every
//! `pin_recover_interval`, every `state_sync_interval` queueing again
//! what the IPFS daemon lost behind the cluster's back, and every few
//! seconds handing the memory of its recent writes back.

use std::time::Duration;

use tokio::sync::mpsc;

use super::PinTracker;
use crate::consensus::PinChange;
use crate::ipfsconn::Connector;
use crate::state::{PAGE, PinState, pages};
use crate::status::TrackerStatus;

/// Hands every durable change of the pinset to the tracker.
pub async fn feed_tracker(tracker: PinTracker<Connector>, mut changes: mpsc::Receiver<PinChange>) {
    while let Some(change) = changes.recv().await {
        tracker.on_change(change);
    }
}

/// Every `state_sync_interval`, compares the pinset with what the IPFS
/// daemon holds, page by page (one listing of the daemon serves them all),
/// and queues again the pins allocated here that the daemon lost
/// (`unexpectedly_unpinned`), e.g. after a `pin rm` behind the cluster's back.
pub async fn sync_periodically(tracker: PinTracker<Connector>, state: PinState, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await; // start-up already queued everything
    loop {
        tick.tick().await;
        let mut pages = pages(state.list().flatten().map(|pin| (pin.cid, Some(pin))), PAGE);
        let mut requeued = 0;
        while let Some(page) = pages.recv().await {
            let statuses = tracker.statuses(&page).await;
            for ((_, pin), status) in page.into_iter().zip(statuses) {
                if status.status == TrackerStatus::UnexpectedlyUnpinned {
                    tracker.on_change(PinChange {
                        old: None,
                        new: pin,
                    });
                    requeued += 1;
                }
            }
        }
        if requeued > 0 {
            tracing::info!(pins = requeued, "queued again pins the IPFS daemon lost");
        }
    }
}

/// Re-queues failed operations every `pin_recover_interval`.
pub async fn recover_periodically(tracker: PinTracker<Connector>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await; // the first tick is immediate: nothing failed yet
    loop {
        tick.tick().await;
        let n = tracker.recover_failed();
        if n > 0 {
            tracing::info!(operations = n, "recovering failed pin operations");
        }
    }
}

/// How often the tracker's recent writes are flushed out of RAM: after a
/// burst (a million pins queued at start), the peer is back to its idle
/// memory within this long.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// Every [`RELEASE_INTERVAL`], releases the memory of what the tracker
/// wrote since ([`PinTracker::release_memory`]); nothing when it was quiet.
pub async fn release_memory_periodically(tracker: PinTracker<Connector>) {
    let mut tick = tokio::time::interval(RELEASE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t = tracker.clone();
        // Rotating takes fjall's journal lock: off the async threads.
        let _ = tokio::task::spawn_blocking(move || t.release_memory()).await;
    }
}
