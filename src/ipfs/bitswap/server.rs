//! The server: what each peer wants from us, answered highest priority
//! first (ties in arrival order) from the [`BlockSource`](super::BlockSource).
//! A want for a block is answered with the block (and forgotten), or with
//! DONT_HAVE if the peer asked for it; a want for a presence with HAVE or
//! DONT_HAVE. A peer's queue holds at most `max_wants_per_peer` entries:
//! further wants are ignored (and counted), as Kubo does.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use super::message::{Presence, WantEntry, WantType};
use super::peer::{PeerState, Reply};
use super::{Inner, Ledger, lock};

/// A queued want: its place in the order, its type, send-dont-have.
type Queued = ((Reverse<i32>, u64), WantType, bool);

/// One peer's wants, ordered by (priority desc, arrival).
#[derive(Debug, Default)]
pub(crate) struct TheirWants {
    order: BTreeMap<(Reverse<i32>, u64), Cid>,
    by_cid: HashMap<Cid, Queued>,
    seq: u64,
}

impl TheirWants {
    pub fn len(&self) -> usize {
        self.by_cid.len()
    }

    fn remove(&mut self, cid: &Cid) {
        if let Some((key, _, _)) = self.by_cid.remove(cid) {
            self.order.remove(&key);
        }
    }

    fn clear(&mut self) {
        self.order.clear();
        self.by_cid.clear();
    }

    /// Adds or updates a want; `false` when the queue is full.
    fn add(&mut self, e: &WantEntry, limit: usize) -> bool {
        if let Some((_, want_type, _)) = self.by_cid.get(&e.cid) {
            // A want for the block supersedes a want for its presence,
            // never the other way round.
            let want_type = if *want_type == WantType::Block {
                WantType::Block
            } else {
                e.want_type
            };
            self.remove(&e.cid);
            self.insert(e, want_type);
            return true;
        }
        if self.by_cid.len() >= limit {
            return false;
        }
        self.insert(e, e.want_type);
        true
    }

    fn insert(&mut self, e: &WantEntry, want_type: WantType) {
        self.seq += 1;
        let key = (Reverse(e.priority), self.seq);
        self.order.insert(key, e.cid);
        self.by_cid
            .insert(e.cid, (key, want_type, e.send_dont_have));
    }

    fn pop(&mut self) -> Option<(Cid, WantType, bool)> {
        let (_, cid) = self.order.pop_first()?;
        let (_, want_type, send_dont_have) = self.by_cid.remove(&cid)?;
        Some((cid, want_type, send_dont_have))
    }
}

/// A peer's wantlist update.
pub(crate) fn on_wants(inner: &Inner, state: &PeerState, full: bool, entries: Vec<WantEntry>) {
    let mut dropped = 0u64;
    {
        let mut wants = lock(&state.their_wants);
        if full {
            wants.clear();
        }
        for e in &entries {
            if e.cancel {
                wants.remove(&e.cid);
            } else if !wants.add(e, inner.config.max_wants_per_peer) {
                dropped += 1;
            }
        }
    }
    if dropped > 0 {
        tracing::debug!(peer = %state.peer, dropped, "bitswap wantlist full, wants ignored");
        Ledger::add(&state.ledger.wants_dropped, dropped);
    }
    state.wake_server.notify_one();
}

/// Answers a peer's wants until it disconnects.
pub(crate) async fn serve(inner: Arc<Inner>, state: Arc<PeerState>) {
    loop {
        tokio::select! {
            biased;
            _ = state.cancel.cancelled() => return,
            _ = state.wake_server.notified() => {}
        }
        loop {
            let (i, s) = (inner.clone(), state.clone());
            let Ok(reply) = tokio::task::spawn_blocking(move || next_reply(&i, &s)).await else {
                return;
            };
            if reply.blocks.is_empty() && reply.presences.is_empty() {
                break;
            }
            let sent = tokio::select! {
                biased;
                _ = state.cancel.cancelled() => return,
                sent = state.replies.send(reply) => sent,
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// Pops wants and reads blocks until the reply is about
/// `target_message_size` bytes (or holds as many presences as a message
/// should) or the queue is empty.
fn next_reply(inner: &Inner, state: &PeerState) -> Reply {
    let mut reply = Reply::default();
    let mut bytes = 0usize;
    while bytes < inner.config.target_message_size && reply.presences.len() < 4096 {
        let Some((cid, want_type, send_dont_have)) = lock(&state.their_wants).pop() else {
            break;
        };
        let found: Option<Option<Bytes>> = match want_type {
            WantType::Block => inner
                .source
                .get(&cid)
                .map_err(|e| {
                    tracing::warn!("bitswap server cannot read {cid}: {e}");
                })
                .ok()
                .map(|b| b.filter(|b| b.len() <= inner.config.max_block_size)),
            WantType::Have => inner
                .source
                .has(&cid)
                .map_err(|e| tracing::warn!("bitswap server cannot look up {cid}: {e}"))
                .ok()
                .map(|has| has.then(Bytes::new)),
        };
        match (want_type, found.flatten()) {
            (WantType::Block, Some(data)) => {
                bytes += data.len();
                reply.blocks.push((cid, data));
            }
            (WantType::Have, Some(_)) => reply.presences.push((cid, Presence::Have)),
            (_, None) if send_dont_have => reply.presences.push((cid, Presence::DontHave)),
            (_, None) => {}
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::bitswap::verify::cid_v1;

    fn want(cid: Cid, priority: i32) -> WantEntry {
        WantEntry {
            cid,
            priority,
            cancel: false,
            want_type: WantType::Block,
            send_dont_have: false,
        }
    }

    #[test]
    fn wants_come_out_by_priority_then_arrival_and_the_queue_is_bounded() {
        let cids: Vec<Cid> = (0..5u8).map(|i| cid_v1(0x55, &[i])).collect();
        let mut q = TheirWants::default();
        assert!(q.add(&want(cids[0], 1), 4));
        assert!(q.add(&want(cids[1], 5), 4));
        assert!(q.add(&want(cids[2], 1), 4));
        assert!(q.add(&want(cids[3], 9), 4));
        assert!(
            !q.add(&want(cids[4], 100), 4),
            "the fifth want is over the limit"
        );
        // Updating a queued want is always allowed.
        assert!(q.add(&want(cids[2], 7), 4));
        q.remove(&cids[1]);
        let order: Vec<Cid> = std::iter::from_fn(|| q.pop().map(|(c, _, _)| c)).collect();
        assert_eq!(order, vec![cids[3], cids[2], cids[0]]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_block_want_is_not_downgraded_to_a_presence_want() {
        let cid = cid_v1(0x55, b"x");
        let mut q = TheirWants::default();
        q.add(&want(cid, 1), 10);
        let mut have = want(cid, 2);
        have.want_type = WantType::Have;
        q.add(&have, 10);
        assert_eq!(q.pop().map(|(_, t, _)| t), Some(WantType::Block));
    }
}
