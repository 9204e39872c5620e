//! The tracker's upkeep, the tasks the peer runs beside it: feeding it
//! every durable change of the pinset, re-queueing failed operations every
//! `pin_recover_interval`, every `state_sync_interval` queueing again
//! what the IPFS daemon lost behind the cluster's back and, on a sharding
//! follower, unpinning what left its share once its new holders have it,
//! and every few seconds handing the memory of its recent writes (and,
//! once the peer is quiet, of every memtable of its database) back.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::mpsc;

use pincluster_crdt::store::fjall::Database;

use super::PinTracker;
use crate::consensus::PinChange;
use crate::ipfsconn::Connector;
use crate::network::Network;
use crate::state::{PAGE, PinState, pages};
use crate::status::TrackerStatus;
use crate::types::Pin;

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
        let held = tracker.ipfs_pinset().await;
        while let Some(page) = pages.recv().await {
            let statuses = tracker.statuses_from(&held, &page);
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
/// wrote since ([`PinTracker::release_memory`]); and once the whole
/// database `db` has been quiet for an interval, that of every other
/// keyspace too ([`release_quiet_memtables`]).
pub async fn release_memory_periodically(tracker: PinTracker<Connector>, db: Database) {
    let mut tick = tokio::time::interval(RELEASE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seqno = None;
    loop {
        tick.tick().await;
        let t = tracker.clone();
        let db = db.clone();
        // Rotating takes fjall's journal lock: off the async threads.
        let released = tokio::task::spawn_blocking(move || {
            t.release_memory();
            release_quiet_memtables(&db, &mut last_seqno);
            last_seqno
        })
        .await;
        last_seqno = released.ok().flatten();
    }
}

/// Flushes the memtables of every keyspace of `db` once nothing was
/// written since the previous call (`last_seqno`, updated): a quiet peer
/// then holds none. fjall flushes a memtable only when it is full, so
/// after a burst (a `state import` replayed from the journal at start, a
/// join, a burst of pins) up to a memtable per keyspace (32 MiB each for
/// the pinset's) stayed in RAM for as long as the peer was idle. Writing
/// again rotates nothing: only a whole quiet interval does, and an empty
/// write buffer is left alone, so a quiet peer makes no small tables.
pub fn release_quiet_memtables(db: &Database, last_seqno: &mut Option<u64>) {
    let seqno = db.seqno();
    let quiet = *last_seqno == Some(seqno);
    *last_seqno = Some(seqno);
    if quiet {
        crate::folder::flush_memtables(db);
    }
}

/// Every `state_sync_interval`, a sharding follower unpins from its daemon
/// the pins that left its share (members joined, or came back), but only
/// those every one of their holders now reports `pinned` (asked over the
/// cluster RPC, [`PAGE`] pins per request): the shard never has fewer
/// copies of a pin because of a move. A holder that does not answer, or
/// has not pinned yet, keeps the pin here until a later round.
pub async fn release_dropped_share(
    tracker: PinTracker<Connector>,
    state: PinState,
    network: Network,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await; // the shard's members are not known yet at start
    loop {
        tick.tick().await;
        // One listing of the daemon for the whole pass, as for statuses
        // (see `listing`); none while the daemon cannot be listed.
        let Ok(held) = tracker.ipfs_pinset().await else {
            continue;
        };
        let mut pages = pages(state.list().flatten().map(|pin| (pin.cid, Some(pin))), PAGE);
        let mut released = 0;
        while let Some(page) = pages.recv().await {
            let dropped = tracker.dropped_from_share(&held, &page);
            if dropped.is_empty() {
                continue;
            }
            let confirmed = pinned_by_holders(&network, &dropped).await;
            for ((pin, _), ok) in dropped.into_iter().zip(confirmed) {
                if ok {
                    tracker.release_from_share(pin);
                    released += 1;
                }
            }
        }
        if released > 0 {
            tracing::info!(
                pins = released,
                "unpinning pins that left this follower's share (their holders have them)"
            );
        }
    }
}

/// For each (pin, holders): whether every holder reports it `pinned`.
/// One request per holder for all its pins of the page.
async fn pinned_by_holders(network: &Network, dropped: &[(Pin, Vec<PeerId>)]) -> Vec<bool> {
    let mut by_holder: HashMap<PeerId, Vec<usize>> = HashMap::new();
    for (i, (_, holders)) in dropped.iter().enumerate() {
        for holder in holders {
            by_holder.entry(*holder).or_default().push(i);
        }
    }
    // A pin with no holder at all (every member has weight 0) is kept.
    let mut ok: Vec<bool> = dropped.iter().map(|(_, h)| !h.is_empty()).collect();
    for (holder, indexes) in by_holder {
        let cids = indexes.iter().map(|i| dropped[*i].0.cid).collect();
        let answer = network.remote_status_many(holder, cids).await;
        match answer {
            Ok(statuses) if statuses.len() == indexes.len() => {
                for (i, status) in indexes.iter().zip(statuses) {
                    ok[*i] &= status.status == TrackerStatus::Pinned;
                }
            }
            other => {
                if let Err(e) = other {
                    tracing::debug!(%holder, error = %e, "share holder did not answer");
                }
                for i in indexes {
                    ok[i] = false;
                }
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use pincluster_crdt::store::fjall::KeyspaceCreateOptions;

    use super::*;

    /// A database quiet for a whole interval gives its memtables back to
    /// disk; one written meanwhile keeps them (no small tables while busy).
    #[test]
    fn memtables_are_flushed_once_the_database_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("t", KeyspaceCreateOptions::default).unwrap();
        ks.insert("a", "1").unwrap();
        let mut last = None;
        release_quiet_memtables(&db, &mut last);
        ks.insert("b", "2").unwrap();
        release_quiet_memtables(&db, &mut last);
        assert!(db.write_buffer_size() > 0, "written since: kept");
        assert_eq!(ks.table_count(), 0);
        release_quiet_memtables(&db, &mut last);
        let deadline = Instant::now() + Duration::from_secs(30);
        while db.write_buffer_size() > 0 {
            assert!(
                Instant::now() < deadline,
                "the quiet memtable was not flushed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ks.table_count(), 1);
        assert_eq!(ks.get("b").unwrap().as_deref(), Some(&b"2"[..]));
    }
}
