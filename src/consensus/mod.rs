//! Glue between the CRDT engine and the network: the only writer of the
//! pinset.
//!
//! One task owns the [`Engine`]. It
//! - batches local writes into one signed delta by group commit (the writes
//!   waiting when a commit starts share it, up to `max_batch_size`; with
//!   `max_batch_age` > 0 it also lingers that long for more), answers the
//!   writers once the delta is durable, and announces the new head at once;
//! - rebroadcasts its heads every `rebroadcast_interval` ± 30 %;
//! - asks every peer that comes up for its heads, so a joiner starts syncing
//!   within a round trip instead of a rebroadcast interval;
//! - forwards a gossiped announcement to its own mesh only once the heads
//!   it names are merged here (or drops it once given up on): a peer that
//!   hears of the heads from this one asks this one for their blocks;
//! - fetches what announced heads lack: first from the peer that announced
//!   them, then from the others, in batches, with ancestors, a bounded number
//!   of requests at a time, and merges in causal order;
//! - asks again for blocks it gave up on (every peer it knew failed or
//!   lacked them, typically because the only peer that had them died
//!   mid-fetch): the engine keeps them on its wanted list, and the task
//!   takes them back from there when a peer comes up, on an announcement
//!   when it has nothing else to fetch, and at every rebroadcast.
//!
//! A fresh (or far behind) peer joins from a trusted peer's signed snapshot
//! instead of walking every delta ever written, and trusted peers take
//! such snapshots every `snapshot_interval` ([`snapshot`]), the first only
//! once the pin tracker's start-up pass is over: the build is a whole pass
//! over the pinset, and beside the tracker's own it doubled the first
//! minute's memory at a million pins. The history
//! below a served snapshot is dropped once every awaited peer (the
//! trusted list, or with `"*"` every peer known at start or met since) has
//! merged it or `compaction_grace` passed, and a peer whose neighbour
//! dropped what it asks for joins that neighbour's snapshot ([`compact`]).
//!
//! Deltas from untrusted authors are refused by the engine's verifier; a
//! follower never writes. Peer removals ride in the same CRDT
//! ([`peerset`]): every merged or committed record is applied to the
//! network (the peer blocked or let back in) before the writer hears back.

mod compact;
pub mod offline;
pub mod peerset;
pub mod snapshot;
mod trust;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use pincluster_crdt::store::FjallStore;
use pincluster_crdt::{BatchError, Engine, KeyChange, Merged, Received};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::network::{NetEvent, Network, NetworkError, Relay};
use crate::state::PinState;
use crate::state::pin_key;
use crate::types::Pin;
pub use compact::CompactionTuning;
pub use trust::{PeerSigner, PeerVerifier};

/// Tuning of the consensus task, drawn by the peer from the `consensus`
/// section ([`crate::config::ConsensusConfig`]) and the cluster's
/// `follower_mode`.
#[derive(Debug, Clone)]
pub struct ConsensusTuning {
    /// Most writes per delta.
    pub max_batch_size: usize,
    /// How long a write lingers for others to share its delta (0: commit
    /// as soon as the waiting writes are collected).
    pub max_batch_age: Duration,
    /// Most writes waiting; more are refused at once.
    pub max_queue_size: usize,
    /// Heads are announced again this often (± 30 %).
    pub rebroadcast_interval: Duration,
    /// A follower never writes.
    pub follower: bool,
    /// A snapshot for joiners is taken this often when the heads moved
    /// (zero: never; followers never do).
    pub snapshot_interval: Duration,
    /// When history below the served snapshot is dropped.
    pub compaction: CompactionTuning,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// This peer follows a cluster and cannot write.
    #[error("this peer is configured to be in follower mode. Write operations are disabled")]
    Follower,
    /// Too many writes are waiting.
    #[error("the write queue is full ({0} items); try again later")]
    QueueFull(usize),
    /// The consensus task stopped.
    #[error("consensus is shut down")]
    Closed,
    /// The engine failed the commit (shared by every write of the delta).
    #[error("committing to the pinset: {0}")]
    Commit(Arc<pincluster_crdt::Error>),
    /// One pin is too large for a delta.
    #[error("pin does not fit a delta: {0}")]
    TooLarge(#[from] BatchError),
}

/// A change of the pinset, after it is durable here: what the pin tracker
/// reacts to.
#[derive(Debug, Clone)]
pub struct PinChange {
    /// The pin before (`None`: it was not in the pinset).
    pub old: Option<Pin>,
    /// The pin after (`None`: it was removed).
    pub new: Option<Pin>,
}

enum Write {
    Put(Box<Pin>),
    Delete(Cid),
    Peer(PeerId, peerset::PeerRecord),
}

type WriteReply = oneshot::Sender<Result<(), ConsensusError>>;

/// A handle to the consensus task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Consensus {
    writes: mpsc::Sender<(Write, WriteReply)>,
    state: PinState,
    reader: pincluster_crdt::Reader<FjallStore>,
    follower: bool,
    max_queue: usize,
}

impl Consensus {
    /// Starts the task that owns `engine`. The task ends, after committing
    /// what it accepted, when every handle is dropped or the network stops.
    ///
    /// No snapshot is built before `tracker_ready` resolves (a value sent
    /// or the sender dropped): the peer resolves it once the tracker's
    /// start-up pass has queued the pinset. Until then a joiner is served
    /// the snapshot kept from the last run, if any (older than the heads
    /// but signed and whole: the joiner syncs the deltas above it), or
    /// none, and syncs deltas.
    pub fn start(
        engine: Engine<FjallStore>,
        network: Network,
        events: mpsc::Receiver<NetEvent>,
        changes: Option<mpsc::Sender<PinChange>>,
        config: ConsensusTuning,
        tracker_ready: oneshot::Receiver<()>,
    ) -> (Consensus, tokio::task::JoinHandle<()>) {
        let state = PinState::new(engine.reader());
        let (writes, writes_rx) = mpsc::channel(config.max_queue_size.max(1));
        let handle = Consensus {
            writes,
            state,
            reader: engine.reader(),
            follower: config.follower,
            max_queue: config.max_queue_size,
        };
        let compaction =
            compact::Compaction::new(config.compaction.clone(), network.local_peer_id());
        // The snapshot served since the last run is still good while the
        // heads have not moved: a restart does not build it again (a whole
        // pass over the pinset, and the first minute's largest heap).
        let snapshot_frontier = match engine.served_manifest() {
            Ok(served) => served
                .map(|m| m.frontier.iter().map(|(cid, _)| *cid).collect())
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "served snapshot unreadable; building a new one");
                Vec::new()
            }
        };
        let task = Task {
            engine,
            network,
            config,
            compaction,
            queue: Vec::new(),
            deadline: None,
            wanted: HashMap::new(),
            in_flight: HashSet::new(),
            fetches: FuturesUnordered::new(),
            peers: Vec::new(),
            changes,
            asked_again: None,
            join_attempts: 0,
            held: std::collections::VecDeque::new(),
            snapshot_frontier,
        };
        (
            handle,
            tokio::spawn(task.run(writes_rx, events, tracker_ready)),
        )
    }

    /// The pinset, read-only.
    pub fn state(&self) -> &PinState {
        &self.state
    }

    /// Adds or replaces a pin; returns once it is durable here and
    /// announced.
    pub async fn log_pin(&self, mut pin: Pin) -> Result<(), ConsensusError> {
        // The reference's state keeps whole seconds (protobuf Unix time):
        // what is read back (`created`, a pinned status's time) shows them.
        pin.timestamp = pin
            .timestamp
            .and_then(|t| chrono::Timelike::with_nanosecond(&t, 0));
        self.write(Write::Put(Box::new(pin))).await
    }

    /// Removes a pin; returns once the removal is durable and announced.
    pub async fn log_unpin(&self, cid: Cid) -> Result<(), ConsensusError> {
        self.write(Write::Delete(cid)).await
    }

    /// Records that `peer` is out of the peerset (`record.removed`) or back
    /// in; returns once the record is durable, applied to this peer's
    /// network, and announced.
    pub async fn log_peer(
        &self,
        peer: PeerId,
        record: peerset::PeerRecord,
    ) -> Result<(), ConsensusError> {
        self.write(Write::Peer(peer, record)).await
    }

    /// The latest peerset record of `peer`, if any was ever written.
    pub fn peer_record(
        &self,
        peer: &PeerId,
    ) -> Result<Option<peerset::PeerRecord>, peerset::PeerRecordError> {
        match self.reader.get(&peerset::key(peer)) {
            Ok(Some(bytes)) => Ok(Some(peerset::PeerRecord::from_bytes(&bytes)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(peerset::PeerRecordError::Store(e)),
        }
    }

    /// Whether this peer is a follower (it cannot write).
    pub fn is_follower(&self) -> bool {
        self.follower
    }

    async fn write(&self, write: Write) -> Result<(), ConsensusError> {
        if self.follower {
            return Err(ConsensusError::Follower);
        }
        let (reply, rx) = oneshot::channel();
        self.writes.try_send((write, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ConsensusError::QueueFull(self.max_queue),
            mpsc::error::TrySendError::Closed(_) => ConsensusError::Closed,
        })?;
        rx.await.map_err(|_| ConsensusError::Closed)?
    }
}

/// Requests for blocks in flight at once.
const MAX_FETCHES: usize = 4;
/// CIDs per block request.
const CIDS_PER_FETCH: usize = 64;
/// Ancestors asked for when following a branch down: one round trip then
/// walks this many levels of a deep history.
const DEEP_ANCESTORS: u32 = 512;

/// Announcements send the task back to the engine's wanted list at most
/// this often.
const ASK_AGAIN_EVERY: Duration = Duration::from_secs(1);

/// Gossiped announcements held back from the mesh at once; beyond, the
/// oldest is dropped (its heads reach the others at the next rebroadcast).
const MAX_HELD_RELAYS: usize = 64;
/// Longest an announcement is held back before it is dropped: a fetch that
/// slow has lost its race with the next announcement anyway (and gossipsub
/// itself forgets unsettled messages after `history_length` heartbeats).
const RELAY_WAIT: Duration = Duration::from_secs(30);

/// A gossiped announcement not yet forwarded: the heads it names, and
/// since when it waits.
struct Held {
    relay: Relay,
    heads: Vec<Cid>,
    since: Instant,
}

/// A block some announced head needs.
struct Want {
    preferred: Option<PeerId>,
    tried: HashSet<PeerId>,
    deep: bool,
}

type FetchResult = (PeerId, Vec<Cid>, Result<Vec<(Cid, Vec<u8>)>, NetworkError>);

struct Task {
    engine: Engine<FjallStore>,
    network: Network,
    config: ConsensusTuning,
    compaction: compact::Compaction,
    queue: Vec<(Write, WriteReply)>,
    deadline: Option<Instant>,
    wanted: HashMap<Cid, Want>,
    in_flight: HashSet<Cid>,
    fetches: FuturesUnordered<BoxFuture<'static, FetchResult>>,
    peers: Vec<PeerId>,
    changes: Option<mpsc::Sender<PinChange>>,
    /// When an announcement last sent us back to the wanted list.
    asked_again: Option<Instant>,
    /// Peers asked for a snapshot to join from, since start.
    join_attempts: usize,
    /// Announcements to forward once their heads are merged, oldest first
    /// (at most [`MAX_HELD_RELAYS`]).
    held: std::collections::VecDeque<Held>,
    /// The heads of the snapshot served (taken or installed here).
    snapshot_frontier: Vec<Cid>,
}

/// Peers asked for a snapshot while this replica stays empty.
const MAX_JOIN_ATTEMPTS: usize = 8;

impl Task {
    async fn run(
        mut self,
        mut writes: mpsc::Receiver<(Write, WriteReply)>,
        mut events: mpsc::Receiver<NetEvent>,
        mut tracker_ready: oneshot::Receiver<()>,
    ) {
        // Blocks a crash left wanted: ask anyone for them.
        match self.engine.wanted(CIDS_PER_FETCH * MAX_FETCHES) {
            Ok(cids) => self.want(cids, None, true),
            Err(e) => tracing::error!(error = %e, "cannot read the wanted list"),
        }
        self.merge_ready().await;
        let (heads_tx, mut heads_rx) = mpsc::channel::<(PeerId, Vec<Cid>)>(64);
        let producing = !self.config.follower && !self.config.snapshot_interval.is_zero();
        let mut snapshot_tick = tokio::time::interval(
            self.config
                .snapshot_interval
                .max(Duration::from_millis(100)),
        );
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The tick is not polled while the tracker's start-up pass runs; its
        // first (immediate) tick then fires as soon as the pass is over.
        let mut tracker_busy = true;
        if producing && self.snapshot_stale() {
            tracing::info!("the first snapshot waits for the pin tracker's start-up pass");
        }
        let mut rebroadcast = Box::pin(tokio::time::sleep(self.jittered_interval()));
        loop {
            tokio::select! {
                write = writes.recv() => match write {
                    Some(item) => {
                        // Group commit: everything already waiting joins this
                        // delta; a lone write commits at once.
                        self.queue.push(item);
                        while self.queue.len() < self.config.max_batch_size {
                            match writes.try_recv() {
                                Ok(item) => self.queue.push(item),
                                Err(_) => break,
                            }
                        }
                        if self.queue.len() >= self.config.max_batch_size || self.config.max_batch_age.is_zero() {
                            self.commit().await;
                        } else if self.deadline.is_none() {
                            self.deadline = Some(Instant::now() + self.config.max_batch_age);
                        }
                    }
                    None => break,
                },
                _ = sleep_until(self.deadline), if self.deadline.is_some() => self.commit().await,
                event = events.recv() => match event {
                    Some(NetEvent::Heads { from, heads, relay }) => {
                        if let Some(relay) = relay {
                            self.hold(relay, heads.clone()).await;
                        }
                        self.on_heads(from, heads);
                        self.settle_relays().await;
                    }
                    Some(NetEvent::PeerUp(peer)) => {
                        if !self.peers.contains(&peer) {
                            self.peers.push(peer);
                        }
                        self.maybe_join(peer).await;
                        // A peer that restarted is the likeliest to hold
                        // what we gave up on when it died.
                        self.want_given_up(Some(peer));
                        let network = self.network.clone();
                        let tx = heads_tx.clone();
                        tokio::spawn(async move {
                            match network.heads_of(peer).await {
                                Ok(heads) => drop(tx.send((peer, heads)).await),
                                Err(e) => tracing::debug!(%peer, error = %e, "heads request failed"),
                            }
                        });
                    }
                    None => break,
                },
                Some((peer, heads)) = heads_rx.recv() => self.on_heads(peer, heads),
                _ = &mut tracker_ready, if tracker_busy => tracker_busy = false,
                _ = snapshot_tick.tick(), if producing && !tracker_busy => self.take_snapshot(),
                Some(result) = self.fetches.next(), if !self.fetches.is_empty() => self.on_fetched(result).await,
                _ = &mut rebroadcast => {
                    rebroadcast.set(tokio::time::sleep(self.jittered_interval()));
                    if let Ok(peers) = self.network.peers().await {
                        self.peers = peers;
                    }
                    self.want_given_up(None);
                    self.settle_relays().await;
                    self.compact_history();
                    let heads: Vec<Cid> = self.engine.heads().iter().map(|h| h.cid).collect();
                    if !heads.is_empty() {
                        let _ = self.network.publish_heads(heads).await;
                    }
                }
            }
        }
        // Writes accepted before shutdown still land.
        self.commit().await;
        tracing::debug!("consensus task stopped");
    }

    /// Joins from `peer`'s snapshot if this replica is empty (asking up to
    /// [`MAX_JOIN_ATTEMPTS`] peers) or, with the first peer met, far behind
    /// it. Any failure falls back to delta sync.
    async fn maybe_join(&mut self, peer: PeerId) {
        let wanted = self.join_attempts == 0
            || (self.join_attempts < MAX_JOIN_ATTEMPTS && self.engine.heads().is_empty());
        if !wanted {
            return;
        }
        self.join_attempts += 1;
        match snapshot::join_from(&mut self.engine, &self.network, peer).await {
            Ok(Some((_, frontier))) => {
                self.join_attempts = MAX_JOIN_ATTEMPTS;
                // The installed manifest is served as it is: no need to
                // build the same snapshot again at the next tick.
                self.snapshot_frontier = frontier;
                let (network, tx) = (self.network.clone(), self.changes.clone());
                tokio::spawn(snapshot::emit_all(self.engine.reader(), move |page| {
                    Self::emit(network.clone(), tx.clone(), page)
                }));
                // Blocks the install made ready (pending above the frontier).
                self.merge_ready().await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%peer, error = %e, "no join by snapshot; syncing deltas"),
        }
    }

    /// Whether the heads moved since the snapshot served (none when the
    /// replica is empty).
    fn snapshot_stale(&self) -> bool {
        let heads = self.engine.heads();
        !heads.is_empty()
            && heads
                .iter()
                .map(|h| h.cid)
                .ne(self.snapshot_frontier.iter().copied())
    }

    /// Takes a snapshot for joiners if the heads moved since the last one.
    fn take_snapshot(&mut self) {
        if !self.snapshot_stale() {
            return;
        }
        let heads: Vec<Cid> = self.engine.heads().iter().map(|h| h.cid).collect();
        let started = std::time::Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match tokio::task::block_in_place(|| self.engine.build_snapshot(now)) {
            Ok((cid, bytes)) => {
                tracing::info!(%cid, bytes = bytes.len(), took = ?started.elapsed(), "snapshot taken");
                self.snapshot_frontier = heads;
                self.compact_history();
            }
            Err(e) => tracing::error!(error = %e, "cannot take a snapshot"),
        }
    }

    /// Drops the history below the served snapshot if the rule allows.
    fn compact_history(&mut self) {
        let Task {
            engine,
            compaction,
            peers,
            ..
        } = self;
        compaction.saw(peers);
        let compacted = tokio::task::block_in_place(|| {
            let removed: Vec<PeerId> = peerset::removed_peers(&engine.reader())?
                .into_iter()
                .map(|(peer, _)| peer)
                .collect();
            compaction.maybe_compact(engine, &removed)
        });
        if let Err(e) = compacted {
            tracing::error!(error = %e, "history compaction failed");
        }
    }

    /// `peer` holds none of the blocks asked for: it dropped them below
    /// its snapshot. Join that snapshot, whatever this replica holds.
    async fn join_for_dropped_history(&mut self, peer: PeerId) {
        if !self.compaction.may_force_join() {
            return;
        }
        self.compaction.forcing();
        let compaction = &mut self.compaction;
        let joined = snapshot::join_when(&mut self.engine, &self.network, peer, |_, cid, _| {
            Ok(compaction.first_try(cid))
        })
        .await;
        match joined {
            Ok(Some((installed, frontier))) => {
                tracing::info!(%peer, keys = installed.keys, "joined a snapshot in place of dropped history");
                self.snapshot_frontier = frontier;
                let (network, tx) = (self.network.clone(), self.changes.clone());
                tokio::spawn(snapshot::emit_all(self.engine.reader(), move |page| {
                    Self::emit(network.clone(), tx.clone(), page)
                }));
                let engine = &self.engine;
                self.wanted
                    .retain(|cid, _| !engine.is_processed(cid).unwrap_or(false));
                self.merge_ready().await;
                // What this peer serves must cover what it holds, or the
                // next peer asking it for the dropped history is stuck.
                if !self.config.follower && !self.config.snapshot_interval.is_zero() {
                    self.take_snapshot();
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%peer, error = %e, "no snapshot in place of dropped history"),
        }
    }

    fn jittered_interval(&self) -> Duration {
        let base = self.config.rebroadcast_interval.as_secs_f64().max(0.1);
        Duration::from_secs_f64(base * rand::thread_rng().gen_range(0.7..1.3))
    }

    /// Commits the queued writes as one delta (or more if they do not fit
    /// one) and announces the new head.
    async fn commit(&mut self) {
        self.deadline = None;
        if self.queue.is_empty() {
            return;
        }
        let mut batch = self.engine.batch();
        let mut replies = Vec::new();
        for (write, reply) in std::mem::take(&mut self.queue) {
            let mut added = add(&mut batch, &write);
            if let Err(BatchError::FullOps { .. } | BatchError::FullBytes { .. }) = added {
                // This delta is full: commit it and start the next.
                let full = std::mem::replace(&mut batch, self.engine.batch());
                self.commit_batch(full, std::mem::take(&mut replies)).await;
                added = add(&mut batch, &write);
            }
            match added {
                Ok(()) => replies.push(reply),
                Err(e) => drop(reply.send(Err(e.into()))),
            }
        }
        self.commit_batch(batch, replies).await;
        let heads: Vec<Cid> = self.engine.heads().iter().map(|h| h.cid).collect();
        if let Err(e) = self.network.publish_heads(heads).await {
            tracing::debug!(error = %e, "cannot announce heads");
        }
    }

    async fn commit_batch(&mut self, batch: pincluster_crdt::Batch, replies: Vec<WriteReply>) {
        let (result, changes) = match tokio::task::block_in_place(|| self.engine.commit(batch)) {
            Ok(committed) => (Ok(()), committed.map(|c| c.changes).unwrap_or_default()),
            Err(e) => {
                tracing::error!(error = %e, "commit failed");
                (Err(Arc::new(e)), Vec::new())
            }
        };
        // Applied before the writers hear back: a removal is in force on
        // this peer by the time `DELETE /peers` answers.
        Self::emit(self.network.clone(), self.changes.clone(), changes).await;
        for reply in replies {
            let _ = reply.send(result.clone().map_err(ConsensusError::Commit));
        }
    }

    fn on_heads(&mut self, from: PeerId, heads: Vec<Cid>) {
        self.compaction.heard(from, &heads);
        match self.engine.missing(&heads) {
            Ok(missing) => self.want(missing, Some(from), false),
            Err(e) => tracing::error!(error = %e, "cannot check announced heads"),
        }
        // Announced heads we hold as pending say nothing new, yet their
        // sender may have the parents we gave up on. Only when idle (while
        // fetches run, what they bring keeps the work list going) and at
        // most once a second: a busy writer announces after every commit.
        let now = Instant::now();
        if self.wanted.is_empty() && self.asked_again.is_none_or(|t| now - t >= ASK_AGAIN_EVERY) {
            self.asked_again = Some(now);
            self.want_given_up(Some(from));
        }
    }

    /// Takes back, from the engine's durable wanted list, the blocks this
    /// task dropped after every peer it knew failed to provide them. The
    /// engine reports a missing parent once (when the first child needing
    /// it arrives); without this, a parent whose fetch failed because its
    /// only holder died mid-request stayed wanted on disk but was never
    /// asked for again, and everything above it stayed unmerged until this
    /// peer restarted (issue 14: two peers stuck at 8,388 of 50,381 pins).
    fn want_given_up(&mut self, from: Option<PeerId>) {
        let cids = match self.engine.wanted(CIDS_PER_FETCH * MAX_FETCHES) {
            Ok(cids) => cids,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the wanted list");
                return;
            }
        };
        let dropped: Vec<Cid> = cids
            .into_iter()
            .filter(|c| !self.wanted.contains_key(c))
            .collect();
        if !dropped.is_empty() {
            tracing::debug!(
                blocks = dropped.len(),
                "asking again for blocks given up on"
            );
            self.want(dropped, from, true);
        }
    }

    fn want(&mut self, cids: Vec<Cid>, from: Option<PeerId>, deep: bool) {
        for cid in cids {
            let want = self.wanted.entry(cid).or_insert_with(|| Want {
                preferred: from,
                tried: HashSet::new(),
                deep,
            });
            want.deep |= deep;
        }
        self.pump();
    }

    /// Starts block requests for wanted blocks, up to [`MAX_FETCHES`].
    fn pump(&mut self) {
        while self.fetches.len() < MAX_FETCHES {
            // Group the next wanted blocks by the peer to ask.
            let mut peer = None;
            let mut cids = Vec::new();
            let mut deep = false;
            let mut exhausted = Vec::new();
            for (cid, want) in &self.wanted {
                if self.in_flight.contains(cid) {
                    continue;
                }
                let candidate = want
                    .preferred
                    .filter(|p| !want.tried.contains(p))
                    .or_else(|| self.peers.iter().copied().find(|p| !want.tried.contains(p)));
                let Some(candidate) = candidate else {
                    exhausted.push(*cid);
                    continue;
                };
                if peer.is_none() {
                    peer = Some(candidate);
                }
                if peer == Some(candidate) {
                    cids.push(*cid);
                    deep |= want.deep;
                    if cids.len() >= CIDS_PER_FETCH {
                        break;
                    }
                }
            }
            for cid in exhausted {
                // Nobody we know has it now; a later announcement will
                // bring it back. The engine keeps it on its wanted list.
                tracing::debug!(%cid, "no peer could provide block");
                self.wanted.remove(&cid);
            }
            let Some(peer) = peer else { break };
            self.in_flight.extend(cids.iter().copied());
            let network = self.network.clone();
            let ancestors = if deep { DEEP_ANCESTORS } else { 0 };
            self.fetches.push(
                async move {
                    let result = network.fetch_blocks(peer, cids.clone(), ancestors).await;
                    (peer, cids, result)
                }
                .boxed(),
            );
        }
    }

    async fn on_fetched(&mut self, (peer, asked, result): FetchResult) {
        for cid in &asked {
            self.in_flight.remove(cid);
        }
        // An answer with none of the asked blocks (not an error, not one
        // cut short by its size limit, which holds at least one).
        let dropped = matches!(&result, Ok(blocks) if blocks.is_empty());
        let blocks = match result {
            Ok(blocks) => blocks,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "block request failed");
                Vec::new()
            }
        };
        let mut more = Vec::new();
        let mut delivered = HashSet::new();
        tokio::task::block_in_place(|| {
            for (cid, bytes) in &blocks {
                match self.engine.receive(cid, bytes) {
                    Ok(Received::Pending { missing }) => more.extend(missing),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%peer, %cid, error = %e, "refused block"),
                }
                delivered.insert(*cid);
            }
        });
        for cid in &asked {
            if delivered.contains(cid) {
                self.wanted.remove(cid);
            } else if let Some(want) = self.wanted.get_mut(cid) {
                want.tried.insert(peer);
            }
        }
        for cid in &delivered {
            self.wanted.remove(cid);
        }
        // Parents not delivered with the batch are fetched next, deep.
        more.retain(|c| !delivered.contains(c));
        self.merge_ready().await;
        if dropped {
            self.join_for_dropped_history(peer).await;
        }
        self.want(more, Some(peer), true);
        self.settle_relays().await;
    }

    /// Holds back a gossiped announcement until its heads are merged here,
    /// dropping the oldest held one when there are too many.
    async fn hold(&mut self, relay: Relay, heads: Vec<Cid>) {
        if self.held.len() >= MAX_HELD_RELAYS
            && let Some(oldest) = self.held.pop_front()
        {
            let _ = self.network.settle_relay(oldest.relay, false).await;
        }
        self.held.push_back(Held {
            relay,
            heads,
            since: Instant::now(),
        });
    }

    /// Forwards the held announcements whose heads are all merged here;
    /// drops those waiting longer than [`RELAY_WAIT`] or that nothing is
    /// being fetched for any more (given up on, or refused).
    async fn settle_relays(&mut self) {
        let idle = self.wanted.is_empty() && self.fetches.is_empty();
        let mut kept = std::collections::VecDeque::with_capacity(self.held.len());
        for held in std::mem::take(&mut self.held) {
            let merged = held
                .heads
                .iter()
                .all(|h| self.engine.is_processed(h).unwrap_or(false));
            if merged || idle || held.since.elapsed() >= RELAY_WAIT {
                let _ = self.network.settle_relay(held.relay, merged).await;
            } else {
                kept.push_back(held);
            }
        }
        self.held = kept;
    }

    /// Merges what is ready, a bounded number of blocks at a time, handing
    /// the changes to the tracker between chunks (a long cascade never
    /// piles its changes up in memory).
    async fn merge_ready(&mut self) {
        const CHUNK: usize = 64;
        loop {
            let mut changes = Vec::new();
            let merged = tokio::task::block_in_place(|| {
                let mut n = 0;
                while n < CHUNK {
                    match self.engine.merge_next() {
                        Ok(Some(Merged::Applied { changes: c, .. })) => changes.extend(c),
                        Ok(Some(Merged::Rejected { cid, error })) => {
                            tracing::warn!(%cid, %error, "refused block at merge");
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "merge failed");
                            break;
                        }
                    }
                    n += 1;
                }
                n
            });
            Self::emit(self.network.clone(), self.changes.clone(), changes).await;
            if merged < CHUNK {
                return;
            }
        }
    }

    /// Hands durable changes on: peerset records to the network, pin
    /// changes to the tracker (waiting if it is behind). Takes clones
    /// rather than `&self`: the task's in-flight fetches are not `Sync`, so
    /// `&self` cannot be held across an await.
    async fn emit(network: Network, tx: Option<mpsc::Sender<PinChange>>, changes: Vec<KeyChange>) {
        for change in changes {
            let Some(peer) = peerset::peer_of_key(&change.key) else {
                if let Some(tx) = &tx
                    && !Self::emit_pin(tx, change).await
                {
                    return; // the tracker is gone: shutting down
                }
                continue;
            };
            let record = change
                .new
                .as_deref()
                .map(peerset::PeerRecord::from_bytes)
                .transpose();
            match (peer, record) {
                (Ok(peer), Ok(Some(record))) => {
                    if let Err(e) = network.apply_peer_record(peer, record).await {
                        tracing::debug!(error = %e, "peerset change not applied");
                    }
                }
                (Ok(_), Ok(None)) => {}
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "undecodable peerset record in the state")
                }
            }
        }
    }

    /// Hands one pin change to the tracker; `false` when it is gone.
    async fn emit_pin(tx: &mpsc::Sender<PinChange>, change: KeyChange) -> bool {
        let decode = |bytes: Option<Vec<u8>>| {
            bytes.and_then(|b| match Pin::from_state_bytes(&b) {
                Ok(pin) => Some(pin),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable pin in the state");
                    None
                }
            })
        };
        let change = PinChange {
            old: decode(change.old),
            new: decode(change.new),
        };
        tx.send(change).await.is_ok()
    }
}

fn add(batch: &mut pincluster_crdt::Batch, write: &Write) -> Result<(), BatchError> {
    match write {
        Write::Put(pin) => batch.put(pin_key(&pin.cid), pin.to_state_bytes()),
        Write::Delete(cid) => batch.delete(pin_key(cid)),
        Write::Peer(peer, record) => batch.put(peerset::key(peer), record.to_bytes()),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use libp2p::identity::Keypair;
    use pincluster_crdt::store::FjallOptions;

    use super::*;
    use crate::config::TrustedPeers;
    use crate::network::{Command, Relay};

    fn engine(dir: &Path, keypair: &Keypair, author: PeerId) -> Engine<FjallStore> {
        let store = FjallStore::open(dir, FjallOptions::default()).unwrap();
        let local = keypair.public().to_peer_id();
        Engine::open(
            store,
            Arc::new(PeerSigner::new(keypair.clone())),
            Arc::new(PeerVerifier::new(TrustedPeers::Only(vec![author]), local)),
            Default::default(),
        )
        .unwrap()
    }

    /// A follower's consensus task on a network that the test plays, and
    /// a head (with its block) written by the trusted `author`.
    struct Setup {
        _tmp: tempfile::TempDir,
        author: PeerId,
        head: Cid,
        block: Vec<u8>,
        events: mpsc::Sender<NetEvent>,
        commands: mpsc::Receiver<Command>,
        _consensus: Consensus,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let (trusted_key, follower_key) =
            (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let author = trusted_key.public().to_peer_id();
        let mut source = engine(&tmp.path().join("trusted"), &trusted_key, author);
        let mut batch = source.batch();
        batch.put(b"key".to_vec(), b"value".to_vec()).unwrap();
        source.commit(batch).unwrap();
        let head = source.heads()[0].cid;
        let block = source.block(&head).unwrap().unwrap();
        let (network, commands) = Network::detached(follower_key.public().to_peer_id());
        let (events, events_rx) = mpsc::channel(8);
        let tuning = ConsensusTuning {
            max_batch_size: 16,
            max_batch_age: Duration::ZERO,
            max_queue_size: 16,
            rebroadcast_interval: Duration::from_secs(3600),
            follower: true,
            snapshot_interval: Duration::ZERO,
            compaction: CompactionTuning {
                enabled: false,
                grace: Duration::from_secs(3600),
                trusted: crate::config::TrustedPeers::All,
                known: Vec::new(),
            },
        };
        let follower = engine(&tmp.path().join("follower"), &follower_key, author);
        let (consensus, _task) = Consensus::start(
            follower,
            network,
            events_rx,
            None,
            tuning,
            oneshot::channel().1,
        );
        Setup {
            _tmp: tmp,
            author,
            head,
            block,
            events,
            commands,
            _consensus: consensus,
        }
    }

    async fn next(commands: &mut mpsc::Receiver<Command>) -> Command {
        tokio::time::timeout(Duration::from_secs(20), commands.recv())
            .await
            .expect("a command within 20 s")
            .expect("the task is running")
    }

    /// Heads relayed by another follower, announced to the task; answers
    /// the block request that follows with `blocks`, and returns how the
    /// announcement was settled.
    async fn announce_and_answer(
        s: &mut Setup,
        relayed_by: PeerId,
        answer: Vec<(Cid, Vec<u8>)>,
    ) -> bool {
        let relay = Relay::for_test(relayed_by);
        s.events
            .send(NetEvent::Heads {
                from: relayed_by,
                heads: vec![s.head],
                relay: Some(relay.clone()),
            })
            .await
            .unwrap();
        // The block is asked for first: a peer that hears of the head
        // from this one must find it here.
        match next(&mut s.commands).await {
            Command::Blocks(peer, cids, _, reply) => {
                assert_eq!((peer, cids), (relayed_by, vec![s.head]));
                reply.send(Ok(answer)).unwrap();
            }
            other => panic!("{other:?} before the block was fetched"),
        }
        loop {
            match next(&mut s.commands).await {
                Command::Settle(settled, forward) => {
                    assert_eq!(settled, relay);
                    return forward;
                }
                // None of the asked blocks: history may have been compacted
                // away there, so its snapshot is asked for; it has none.
                Command::Snapshot(peer, reply) => {
                    assert_eq!(peer, relayed_by);
                    reply.send(Ok(None)).unwrap();
                }
                other => panic!("expected the announcement settled, got {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_announcement_is_forwarded_only_once_its_head_is_merged() {
        let mut s = setup();
        let (head, block) = (s.head, s.block.clone());
        let relayed_by = PeerId::random();
        assert!(announce_and_answer(&mut s, relayed_by, vec![(head, block)]).await);
        // Announced again (a rebroadcast), the head is held: forwarded at once.
        let relay = Relay::for_test(s.author);
        s.events
            .send(NetEvent::Heads {
                from: s.author,
                heads: vec![head],
                relay: Some(relay.clone()),
            })
            .await
            .unwrap();
        match next(&mut s.commands).await {
            Command::Settle(settled, true) => assert_eq!(settled, relay),
            other => panic!("expected the announcement forwarded, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_announcement_whose_blocks_nobody_gave_is_dropped() {
        let mut s = setup();
        assert!(!announce_and_answer(&mut s, PeerId::random(), Vec::new()).await);
    }
}
