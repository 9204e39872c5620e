//! The client: the wantlist shared by every fetch, the blocks and
//! presences peers send, and [`BlockStream`], the fetch itself.
//!
//! A want is sent (want-block, send-dont-have) to every connected peer and
//! to each peer that connects later. The first block whose bytes hash to a
//! wanted CID is stored, handed to every fetch waiting for it, and
//! cancelled at the other peers; later copies, blocks nobody wants and
//! blocks whose bytes match no wanted CID are dropped and counted in the
//! sender's ledger. When every asked peer answered DONT_HAVE, or nothing
//! arrived for [`BitswapConfig::rebroadcast`](super::BitswapConfig), the
//! fetch sends its wants again and looks providers up through
//! [`Routing`](super::Routing).

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use cid::Cid;
use futures::Stream;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::message::{Presence, WantEntry, WantType, WireBlock};
use super::peer::{PeerState, state};
use super::verify::{cid_of, cid_v0, supported};
use super::{BitswapError, Inner, Ledger, lock};

/// Numbers fetches, so a fetch can withdraw only its own interest.
static NEXT_FETCH: AtomicU64 = AtomicU64::new(1);

type Delivery = mpsc::Sender<(Cid, Bytes)>;

#[derive(Debug)]
struct Want {
    priority: i32,
    /// The fetches waiting for the block.
    waiting: Vec<(u64, Delivery)>,
    /// Peers the want was sent to (they get a cancel when it ends).
    sent_to: HashSet<PeerId>,
    /// Peers that said they do not have it.
    dont_have: HashSet<PeerId>,
}

/// Everything this node wants now.
#[derive(Debug)]
pub(crate) struct Wants {
    map: HashMap<Cid, Want>,
    /// Earlier wants get higher priorities, so peers serve a fetch in
    /// the order it asked.
    next_priority: i32,
}

impl Default for Wants {
    fn default() -> Self {
        Wants {
            map: HashMap::new(),
            next_priority: i32::MAX,
        }
    }
}

impl Wants {
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

fn want_entry(cid: Cid, priority: i32) -> WantEntry {
    WantEntry {
        cid,
        priority,
        cancel: false,
        want_type: WantType::Block,
        send_dont_have: true,
    }
}

fn cancel_entry(cid: Cid) -> WantEntry {
    WantEntry {
        cid,
        priority: 0,
        cancel: true,
        want_type: WantType::Block,
        send_dont_have: false,
    }
}

fn peers(inner: &Inner) -> Vec<Arc<PeerState>> {
    lock(&inner.peers).values().cloned().collect()
}

/// A new peer gets our whole wantlist.
pub(crate) fn peer_connected(inner: &Arc<Inner>, peer: PeerId) {
    let state = state(inner, peer);
    let entries: Vec<WantEntry> = {
        let mut wants = lock(&inner.wants);
        wants
            .map
            .iter_mut()
            .map(|(cid, w)| {
                w.sent_to.insert(peer);
                w.dont_have.remove(&peer);
                want_entry(*cid, w.priority)
            })
            .collect()
    };
    state.send_wants(entries, true);
}

/// Why a received block was not taken.
enum Refused {
    /// Too large, unknown hash, bad prefix.
    Rejected,
    /// Nobody wants the CID its bytes hash to.
    Unwanted,
}

/// The CID `block`'s bytes hash to, if it is one this node wants.
fn check(inner: &Inner, from: &PeerState, block: &WireBlock) -> Result<Cid, Refused> {
    if block.data.len() > inner.config.max_block_size {
        tracing::debug!(peer = %from.peer, size = block.data.len(), "bitswap block over the size limit refused");
        return Err(Refused::Rejected);
    }
    let cid = match &block.prefix {
        None => Ok(cid_v0(&block.data)),
        Some(prefix) => cid_of(prefix, &block.data),
    }
    .map_err(|e| {
        tracing::debug!(peer = %from.peer, "bitswap block refused: {e}");
        Refused::Rejected
    })?;
    if lock(&inner.wants).map.contains_key(&cid) {
        Ok(cid)
    } else {
        Err(Refused::Unwanted)
    }
}

/// The blocks of one message from a peer: each hashed (its CID is what
/// its bytes hash to, so it is checked once and never hashed again), the
/// wanted ones stored in one write, then delivered and cancelled at the
/// other peers. Hashing and storing run on the blocking pool, once per
/// message.
pub(crate) async fn on_blocks(inner: &Arc<Inner>, from: &Arc<PeerState>, blocks: Vec<WireBlock>) {
    if blocks.is_empty() {
        return;
    }
    let (i, f) = (inner.clone(), from.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let mut wanted = Vec::with_capacity(blocks.len());
        for block in blocks {
            match check(&i, &f, &block) {
                Ok(cid) => wanted.push((cid, block.data)),
                Err(Refused::Rejected) => Ledger::add(&f.ledger.blocks_rejected, 1),
                Err(Refused::Unwanted) => Ledger::add(&f.ledger.blocks_unwanted, 1),
            }
        }
        if let Err(e) = i.source.put_many(&wanted) {
            tracing::warn!("cannot store {} fetched blocks: {e}", wanted.len());
        }
        wanted
    })
    .await;
    let wanted = match checked {
        Ok(wanted) => wanted,
        Err(e) => {
            tracing::warn!("checking and storing fetched blocks failed: {e}");
            return;
        }
    };
    let ledger = &from.ledger;
    for (cid, data) in wanted {
        let Some(want) = lock(&inner.wants).map.remove(&cid) else {
            // Another peer's copy won the race.
            Ledger::add(&ledger.blocks_unwanted, 1);
            continue;
        };
        Ledger::add(&ledger.blocks_received, 1);
        Ledger::add(&ledger.bytes_received, data.len() as u64);
        for (_, tx) in &want.waiting {
            // Each fetch has room for every want it has in flight.
            let _ = tx.try_send((cid, data.clone()));
        }
        cancel_at(inner, cid, &want.sent_to, Some(from.peer));
    }
}

fn cancel_at(inner: &Inner, cid: Cid, peers: &HashSet<PeerId>, except: Option<PeerId>) {
    let states = lock(&inner.peers);
    for peer in peers {
        if Some(*peer) != except
            && let Some(s) = states.get(peer)
        {
            s.send_wants([cancel_entry(cid)], false);
        }
    }
}

/// A presence answer: DONT_HAVE from every asked peer starts a provider
/// search at once.
pub(crate) fn on_presence(inner: &Arc<Inner>, from: &PeerState, cid: Cid, presence: Presence) {
    if presence != Presence::DontHave {
        return;
    }
    let all_said_no = {
        let mut wants = lock(&inner.wants);
        let Some(want) = wants.map.get_mut(&cid) else {
            return;
        };
        want.dont_have.insert(from.peer);
        want.sent_to.is_subset(&want.dont_have)
    };
    if all_said_no {
        find_providers(inner, cid);
    }
}

fn find_providers(inner: &Arc<Inner>, cid: Cid) {
    if let Some(routing) = inner.routing.get() {
        let search = routing.find_and_connect(cid);
        let cancel = inner.cancel.clone();
        inner.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = search => {}
            }
        });
    }
}

/// A running fetch; see [`Bitswap::get_blocks`](super::Bitswap::get_blocks).
pub struct BlockStream {
    inner: Arc<Inner>,
    id: u64,
    todo: VecDeque<Cid>,
    seen: HashSet<Cid>,
    in_flight: HashSet<Cid>,
    ready: VecDeque<Result<(Cid, Bytes), BitswapError>>,
    tx: Delivery,
    rx: mpsc::Receiver<(Cid, Bytes)>,
    /// No block for this long: send the wants again, look for providers.
    rebroadcast: Pin<Box<Sleep>>,
    /// No block for this long: fail.
    idle: Pin<Box<Sleep>>,
}

impl std::fmt::Debug for BlockStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStream")
            .field("todo", &self.todo.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl BlockStream {
    pub(crate) fn new(inner: Arc<Inner>, cids: Vec<Cid>) -> BlockStream {
        let window = inner.config.window.max(1);
        let (tx, rx) = mpsc::channel(window);
        let now = Instant::now();
        BlockStream {
            id: NEXT_FETCH.fetch_add(1, Ordering::Relaxed),
            todo: cids.into(),
            seen: HashSet::new(),
            in_flight: HashSet::new(),
            ready: VecDeque::new(),
            tx,
            rx,
            rebroadcast: Box::pin(tokio::time::sleep_until(now + inner.config.rebroadcast)),
            idle: Box::pin(tokio::time::sleep_until(now + inner.config.fetch_timeout)),
            inner,
        }
    }

    /// Moves CIDs from the to-do list into flight (or straight to the
    /// output when local, or failed when unsupported), up to the window.
    fn fill(&mut self) {
        let window = self.inner.config.window.max(1);
        let mut new = Vec::new();
        while self.in_flight.len() < window && self.ready.len() < window {
            let Some(cid) = self.todo.pop_front() else {
                break;
            };
            if !self.seen.insert(cid) {
                continue;
            }
            if supported(&cid).is_err() {
                let code = cid.hash().code();
                self.ready
                    .push_back(Err(BitswapError::Unsupported { cid, code }));
                continue;
            }
            match self.inner.source.get(&cid) {
                Ok(Some(data)) => {
                    self.ready.push_back(Ok((cid, data)));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.ready.push_back(Err(BitswapError::Source(e)));
                    continue;
                }
            }
            self.in_flight.insert(cid);
            new.push(cid);
        }
        if new.is_empty() {
            return;
        }
        let peers = peers(&self.inner);
        let mut entries = Vec::new();
        {
            let mut wants = lock(&self.inner.wants);
            for cid in new {
                let priority = wants.next_priority;
                let want = wants.map.entry(cid).or_insert_with(|| Want {
                    priority,
                    waiting: Vec::new(),
                    sent_to: HashSet::new(),
                    dont_have: HashSet::new(),
                });
                let fresh = want.waiting.is_empty();
                want.waiting.push((self.id, self.tx.clone()));
                if fresh {
                    for p in &peers {
                        want.sent_to.insert(p.peer);
                    }
                    entries.push(want_entry(cid, want.priority));
                    wants.next_priority = wants.next_priority.saturating_sub(1).max(1);
                }
            }
        }
        if !entries.is_empty() {
            for p in &peers {
                p.send_wants(entries.iter().cloned(), false);
            }
        }
        if peers.is_empty() {
            // Nobody to ask: go to the DHT at once.
            if let Some(cid) = self.in_flight.iter().next() {
                find_providers(&self.inner, *cid);
            }
        }
    }

    /// Sends this fetch's wants again to every peer and asks the DHT for
    /// providers of a few of them.
    fn rebroadcast(&mut self) {
        let peers = peers(&self.inner);
        let mut entries = Vec::new();
        {
            let mut wants = lock(&self.inner.wants);
            for cid in &self.in_flight {
                if let Some(w) = wants.map.get_mut(cid) {
                    for p in &peers {
                        w.sent_to.insert(p.peer);
                    }
                    entries.push(want_entry(*cid, w.priority));
                }
            }
        }
        for p in &peers {
            p.send_wants(entries.iter().cloned(), false);
        }
        for cid in self.in_flight.iter().take(3) {
            find_providers(&self.inner, *cid);
        }
    }

    fn progress(&mut self) {
        let now = Instant::now();
        self.rebroadcast
            .as_mut()
            .reset(now + self.inner.config.rebroadcast);
        self.idle
            .as_mut()
            .reset(now + self.inner.config.fetch_timeout);
    }

    /// Withdraws this fetch's interest in its CIDs in flight; wants nobody
    /// else waits for are cancelled at the peers they were sent to.
    fn withdraw(&mut self) {
        let mut cancels = Vec::new();
        {
            let mut wants = lock(&self.inner.wants);
            for cid in self.in_flight.drain() {
                if let Some(w) = wants.map.get_mut(&cid) {
                    w.waiting.retain(|(id, _)| *id != self.id);
                    if w.waiting.is_empty()
                        && let Some(w) = wants.map.remove(&cid)
                    {
                        cancels.push((cid, w.sent_to));
                    }
                }
            }
        }
        for (cid, peers) in cancels {
            cancel_at(&self.inner, cid, &peers, None);
        }
    }
}

impl Stream for BlockStream {
    type Item = Result<(Cid, Bytes), BitswapError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.inner.cancel.is_cancelled() {
            this.withdraw();
            this.todo.clear();
            return Poll::Ready(None);
        }
        this.fill();
        if let Some(item) = this.ready.pop_front() {
            return Poll::Ready(Some(item));
        }
        while let Poll::Ready(Some((cid, data))) = this.rx.poll_recv(cx) {
            if this.in_flight.remove(&cid) {
                this.progress();
                this.fill();
                return Poll::Ready(Some(Ok((cid, data))));
            }
        }
        if this.in_flight.is_empty() && this.todo.is_empty() {
            return Poll::Ready(None);
        }
        if this.idle.as_mut().poll(cx).is_ready() {
            // Nothing for `fetch_timeout`: every CID still missing fails.
            let waited = this.inner.config.fetch_timeout;
            let missing: Vec<Cid> = this
                .in_flight
                .iter()
                .copied()
                .chain(this.todo.drain(..).filter(|c| !this.seen.contains(c)))
                .collect();
            this.withdraw();
            this.ready.extend(
                missing
                    .into_iter()
                    .map(|cid| Err(BitswapError::Timeout { cid, waited })),
            );
            return Poll::Ready(this.ready.pop_front());
        }
        if this.rebroadcast.as_mut().poll(cx).is_ready() {
            this.rebroadcast();
            let next = Instant::now() + this.inner.config.rebroadcast;
            this.rebroadcast.as_mut().reset(next);
            // Register the new deadline with the waker.
            let _ = this.rebroadcast.as_mut().poll(cx);
        }
        Poll::Pending
    }
}

impl Drop for BlockStream {
    fn drop(&mut self) {
        self.withdraw();
    }
}
