//! Bitswap 1.2 (`/ipfs/bitswap/1.2.0`, and 1.1.0 / 1.0.0 as Kubo accepts
//! them), client and server, over the embedded node's own Swarm
//! ([`crate::ipfs::swarm`]).
//!
//! - **Wire**: length-prefixed protobuf messages ([`message`]) on
//!   unidirectional substreams negotiated by a small behaviour
//!   ([`behaviour`]); each side writes on its own stream, as Kubo does.
//! - **Server** ([`server`]): a peer's wants (priority, cancel, Block or
//!   Have, send-dont-have) sit in a per-peer queue of at most
//!   [`BitswapConfig::max_wants_per_peer`] entries and are answered, highest
//!   priority first, from a [`BlockSource`] in messages of about
//!   [`BitswapConfig::target_message_size`] bytes.
//! - **Client** ([`client`]): [`Bitswap::get_blocks`] streams blocks as they
//!   arrive, with a bounded window of wants in flight; wants go to every
//!   connected peer, a received block is checked against its CID
//!   ([`verify`]: hashed once, never again), stored with the others of its
//!   message in one [`BlockSource::put_many`], delivered, and cancelled
//!   at the other peers; an unwanted or wrong block is dropped and counted.
//!   When no progress is made, wants are sent again and providers are
//!   looked up through [`Routing`] (the DHT).
//! - **Ledger**: bytes and blocks sent and received per peer, and what was
//!   refused ([`LedgerStats`]).
//!
//! Tasks: one that accepts inbound streams, one reader per inbound stream
//! with a handler beside it (a message is handled while the next is read),
//! and per peer one writer and one server task. All stop on the
//! cancellation token given at start; [`Bitswap::shutdown`] waits for them.
//!
//! Memory is bounded: at most [`BitswapConfig::max_message_size`] bytes are
//! read per message, at most two messages per peer at once, at most
//! `max_wants_per_peer` wants kept per peer, a block larger than
//! [`BitswapConfig::max_block_size`] is refused, a server task keeps one
//! message in hand and two queued, and each `get_blocks` call keeps at
//! most [`BitswapConfig::window`] wants in flight.

pub mod behaviour;
mod client;
pub mod message;
mod peer;
mod server;
pub mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use behaviour::{Behaviour, InboundStreams, OpenError, StreamOpener};
pub use client::BlockStream;
pub use verify::VerifyError;

/// Limits and timings of the Bitswap engine. The defaults follow Kubo
/// where Kubo has a number.
#[derive(Debug, Clone)]
pub struct BitswapConfig {
    /// Largest block sent or accepted (Kubo: 2 MiB).
    pub max_block_size: usize,
    /// Largest message read from a peer (Kubo: 4 MiB).
    pub max_message_size: usize,
    /// Most wants kept for one peer; more are ignored (Kubo: 1024).
    pub max_wants_per_peer: usize,
    /// Blocks are batched into messages of about this size.
    pub target_message_size: usize,
    /// Wants in flight per `get_blocks` call.
    pub window: usize,
    /// A fetch fails when no wanted block arrives for this long.
    pub fetch_timeout: Duration,
    /// After this long without progress, wants are sent again and
    /// providers are looked up.
    pub rebroadcast: Duration,
    /// Longest time to read one message once its length is known.
    pub read_timeout: Duration,
}

impl Default for BitswapConfig {
    fn default() -> Self {
        BitswapConfig {
            max_block_size: 2 * 1024 * 1024,
            max_message_size: 4 * 1024 * 1024,
            max_wants_per_peer: 1024,
            target_message_size: 1024 * 1024,
            window: 256,
            fetch_timeout: Duration::from_secs(60),
            rebroadcast: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// A store failure, as the [`BlockSource`] reports it.
#[derive(Debug, thiserror::Error)]
#[error("block store: {0}")]
pub struct BlockSourceError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where the server reads blocks and the client puts the blocks it
/// fetched. Calls run on the blocking pool and should not wait long.
/// Blocks are addressed by CID; a store keyed by multihash (as Kubo's)
/// serves a block whatever the CID version or codec it is asked with.
pub trait BlockSource: Send + Sync + 'static {
    /// The block's bytes, `None` when absent.
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockSourceError>;
    /// Whether the block is present.
    fn has(&self, cid: &Cid) -> Result<bool, BlockSourceError>;
    /// Stores a block the client fetched and verified.
    fn put(&self, cid: &Cid, data: Bytes) -> Result<(), BlockSourceError>;
    /// Stores the verified blocks of one message; one by one unless the
    /// source writes them at once.
    fn put_many(&self, blocks: &[(Cid, Bytes)]) -> Result<(), BlockSourceError> {
        blocks
            .iter()
            .try_for_each(|(cid, data)| self.put(cid, data.clone()))
    }
}

/// An in-memory [`BlockSource`], keyed by multihash (tests and benches).
#[derive(Debug, Default)]
pub struct MemoryBlockSource {
    blocks: RwLock<HashMap<Vec<u8>, Bytes>>,
}

impl MemoryBlockSource {
    /// An empty source.
    pub fn new() -> MemoryBlockSource {
        MemoryBlockSource::default()
    }

    /// Adds a block without checking it (a test may store wrong bytes on
    /// purpose).
    pub fn insert(&self, cid: Cid, data: Bytes) {
        self.blocks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cid.hash().to_bytes(), data);
    }

    /// How many blocks are stored.
    pub fn len(&self) -> usize {
        self.blocks.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no block is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BlockSource for MemoryBlockSource {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockSourceError> {
        Ok(self
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cid.hash().to_bytes())
            .cloned())
    }

    fn has(&self, cid: &Cid) -> Result<bool, BlockSourceError> {
        Ok(self
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&cid.hash().to_bytes()))
    }

    fn put(&self, cid: &Cid, data: Bytes) -> Result<(), BlockSourceError> {
        self.insert(*cid, data);
        Ok(())
    }
}

/// How the client finds peers that have a block when the connected ones
/// do not: the Swarm looks providers up in the DHT and connects to them
/// (a new connection receives the whole wantlist).
pub trait Routing: Send + Sync + 'static {
    /// Finds providers of `cid` and connects to them; resolves when done.
    fn find_and_connect(&self, cid: Cid) -> BoxFuture<'static, ()>;
}

/// Failures of a fetch.
#[derive(Debug, thiserror::Error)]
pub enum BitswapError {
    /// The CID's hash is not one this node can check.
    #[error(
        "cannot fetch {cid}: unsupported multihash function 0x{code:x} (supported: sha2-256, sha2-512)"
    )]
    Unsupported { cid: Cid, code: u64 },
    /// No wanted block arrived for the configured time.
    #[error("{cid} not found: no block arrived for {waited:?}")]
    Timeout { cid: Cid, waited: Duration },
    /// The local block store failed.
    #[error(transparent)]
    Source(#[from] BlockSourceError),
    /// The node is shutting down.
    #[error("bitswap is shut down")]
    Stopped,
}

/// Counters of one peer's exchange with this node.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    blocks_sent: AtomicU64,
    blocks_received: AtomicU64,
    blocks_unwanted: AtomicU64,
    blocks_rejected: AtomicU64,
    messages_rejected: AtomicU64,
    wants_dropped: AtomicU64,
}

/// A snapshot of a peer's ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Block bytes sent to the peer.
    pub bytes_sent: u64,
    /// Bytes of wanted, verified blocks received from the peer.
    pub bytes_received: u64,
    /// Blocks sent.
    pub blocks_sent: u64,
    /// Wanted, verified blocks received.
    pub blocks_received: u64,
    /// Blocks nobody wanted (or whose bytes match no wanted CID): dropped.
    pub blocks_unwanted: u64,
    /// Blocks refused: too large, unknown hash, bad prefix.
    pub blocks_rejected: u64,
    /// Messages refused: too large, undecodable, too slow.
    pub messages_rejected: u64,
    /// Wants ignored because the peer's wantlist was full.
    pub wants_dropped: u64,
}

impl Ledger {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn stats(&self) -> LedgerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LedgerStats {
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            blocks_sent: get(&self.blocks_sent),
            blocks_received: get(&self.blocks_received),
            blocks_unwanted: get(&self.blocks_unwanted),
            blocks_rejected: get(&self.blocks_rejected),
            messages_rejected: get(&self.messages_rejected),
            wants_dropped: get(&self.wants_dropped),
        }
    }
}

/// What every task shares.
pub(crate) struct Inner {
    config: BitswapConfig,
    source: Arc<dyn BlockSource>,
    open: StreamOpener,
    peers: Mutex<HashMap<PeerId, Arc<peer::PeerState>>>,
    /// Ledgers outlive connections: a reconnecting peer keeps its history.
    ledgers: Mutex<HashMap<PeerId, Arc<Ledger>>>,
    wants: Mutex<client::Wants>,
    routing: OnceLock<Arc<dyn Routing>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The Bitswap engine. Cheap to clone.
#[derive(Clone)]
pub struct Bitswap {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bitswap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitswap")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Takes a lock, even one a panicking task left poisoned: the maps it
/// guards stay consistent between statements.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Bitswap {
    /// Starts the engine on the streams of `inbound` (from the
    /// [`Behaviour`]), opening outbound streams through `open`. Every task
    /// stops on `cancel`.
    pub(crate) fn start(
        config: BitswapConfig,
        source: Arc<dyn BlockSource>,
        inbound: InboundStreams,
        open: StreamOpener,
        cancel: CancellationToken,
    ) -> Bitswap {
        let inner = Arc::new(Inner {
            config,
            source,
            open,
            peers: Mutex::new(HashMap::new()),
            ledgers: Mutex::new(HashMap::new()),
            wants: Mutex::new(client::Wants::default()),
            routing: OnceLock::new(),
            cancel,
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(peer::accept(inner.clone(), inbound));
        Bitswap { inner }
    }

    /// Sets how providers are found (once; later calls are ignored).
    pub(crate) fn set_routing(&self, routing: Arc<dyn Routing>) {
        let _ = self.inner.routing.set(routing);
    }

    /// A peer connected: it gets the whole wantlist.
    pub(crate) fn peer_connected(&self, peer: PeerId) {
        client::peer_connected(&self.inner, peer);
    }

    /// A peer's last connection closed: its tasks stop and what it wanted
    /// is forgotten.
    pub(crate) fn peer_disconnected(&self, peer: PeerId) {
        if let Some(state) = lock(&self.inner.peers).remove(&peer) {
            state.cancel.cancel();
        }
    }

    /// Fetches one block: from the local source if there, else from
    /// peers. Fails after [`BitswapConfig::fetch_timeout`] without it.
    pub async fn get_block(&self, cid: Cid) -> Result<Bytes, BitswapError> {
        use futures::StreamExt;
        match self.get_blocks(vec![cid]).next().await {
            Some(Ok((_, data))) => Ok(data),
            Some(Err(e)) => Err(e),
            None => Err(BitswapError::Stopped),
        }
    }

    /// Fetches blocks, yielding each (verified) as it arrives, in any
    /// order; a CID listed twice is yielded once. Local blocks come first.
    /// At most [`BitswapConfig::window`] wants are in flight; dropping the
    /// stream cancels them at every peer they were sent to.
    pub fn get_blocks(&self, cids: Vec<Cid>) -> BlockStream {
        BlockStream::new(self.inner.clone(), cids)
    }

    /// The ledger of one peer (zero when it never exchanged anything).
    pub fn ledger(&self, peer: &PeerId) -> LedgerStats {
        lock(&self.inner.ledgers)
            .get(peer)
            .map(|l| l.stats())
            .unwrap_or_default()
    }

    /// Every ledger.
    pub fn ledgers(&self) -> Vec<(PeerId, LedgerStats)> {
        lock(&self.inner.ledgers)
            .iter()
            .map(|(p, l)| (*p, l.stats()))
            .collect()
    }

    /// How many blocks this node wants now (all callers together).
    pub fn wantlist_len(&self) -> usize {
        lock(&self.inner.wants).len()
    }

    /// How many wants `peer` has queued at this node's server.
    pub fn peer_wants_len(&self, peer: &PeerId) -> usize {
        lock(&self.inner.peers)
            .get(peer)
            .map(|s| s.their_wants_len())
            .unwrap_or(0)
    }

    /// Cancels every task (if the token was not cancelled already) and
    /// waits until all have ended.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        lock(&self.inner.peers).clear();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl Inner {
    fn ledger(&self, peer: PeerId) -> Arc<Ledger> {
        lock(&self.ledgers).entry(peer).or_default().clone()
    }
}
