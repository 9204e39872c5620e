//! The only owner of the libp2p Swarm.
//!
//! [`Network`] is a cloneable handle; every call becomes a [`Command`]
//! carrying a oneshot reply sender, and one event loop task ([`EventLoop`])
//! owns the Swarm, keeps pending requests in maps keyed by request id, and
//! turns what peers send into [`NetEvent`]s for the consensus task.
//!
//! The stack: TCP, an optional private network (pnet, from
//! `cluster.secret`), Noise, Yamux; then Kademlia on a protocol name of this
//! cluster's own (discovery from one bootstrap address), gossipsub for heads
//! announcements with validation (untrusted authors are rejected and not
//! forwarded), request-response for the sync protocol (heads, blocks) and,
//! on a protocol of its own, the cluster RPC (identities, statuses,
//! recovery, the health graph, IPFS calls, peerset changes), identify,
//! ping, connection limits and a block list. Every substream's bytes are
//! counted per negotiated protocol ([`bandwidth`]).

pub mod bandwidth;
mod event_loop;
pub mod protocol;

use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use libp2p::{Multiaddr, PeerId, identity::Keypair};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::config::TrustedPeers;
pub use event_loop::EventLoop;
pub use protocol::{PeerPinStatus, RemoteGraph, RemoteId, RemoteRepoGc, RemoteRepoStat};

/// What the network needs to know to start.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The peer's key.
    pub keypair: Keypair,
    /// Where to listen (port 0 allowed).
    pub listen: Vec<Multiaddr>,
    /// The private network key; `None` = no private network.
    pub secret: Option<[u8; 32]>,
    /// Scopes the DHT, the sync protocol and the gossip topic.
    pub cluster_name: String,
    /// Addresses to dial at start (with `/p2p/<id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Whose heads announcements are accepted and forwarded.
    pub trusted: TrustedPeers,
    /// Shown to other peers.
    pub peername: String,
    /// The connection manager's high water mark: connections to
    /// untrusted peers (followers) beyond it are trimmed to `low_water`
    /// once older than `grace_period`; the hard limit is above it.
    pub high_water: u32,
    /// What the trim leaves; also caps how many peers this peer dials.
    pub low_water: u32,
    /// How long a new connection is safe from the trim.
    pub grace_period: Duration,
    /// Follower mode: dials only up to its degree, trusted peers included
    /// (see the event loop's `degree`).
    pub follower: bool,
    /// How long a disconnected peer still counts in the peerset.
    pub peer_ttl: Duration,
    /// gossipsub heartbeat.
    pub heartbeat: Duration,
    /// How long to wait for a peer's answer.
    pub request_timeout: Duration,
    /// Peers removed from the cluster (the persisted peerset records):
    /// refused from the start, before anyone is dialed.
    pub removed: Vec<PeerId>,
}

impl NetworkConfig {
    /// A short, stable tag of the cluster name: peers of different clusters
    /// never speak the same protocols or topics.
    pub fn cluster_tag(&self) -> String {
        hex::encode(&Sha256::digest(self.cluster_name.as_bytes())[..8])
    }
}

/// What the sync protocol serves, straight from fjall without a round
/// trip through the consensus task: heads and blocks.
pub trait SyncSource: Send + Sync + 'static {
    /// Current heads.
    fn heads(&self) -> Vec<Cid>;
    /// A block's bytes.
    fn block(&self, cid: &Cid) -> Option<Vec<u8>>;
    /// The signed snapshot manifest this peer serves, if any.
    fn snapshot(&self) -> Option<Vec<u8>>;
}

/// Who answers the cluster RPC: the cluster's side of what other peers
/// ask this one ([`crate::cluster::rpc::ClusterRpc`]).
pub trait RpcHandler: Send + Sync + 'static {
    /// The IPFS daemon beside this peer, as last seen: its id and swarm
    /// addresses (empty when unknown).
    fn ipfs(&self) -> (String, Vec<Multiaddr>);
    /// This peer's status of `cid`, after re-queueing it if `recover` and
    /// it failed.
    fn status(&self, cid: Cid, recover: bool)
    -> futures::future::BoxFuture<'static, PeerPinStatus>;
    /// This peer's statuses of `cids`, in order.
    fn status_many(
        &self,
        cids: Vec<Cid>,
    ) -> futures::future::BoxFuture<'static, Vec<PeerPinStatus>>;
    /// Re-queues every failed pin operation of this peer; returns their CIDs.
    fn recover_all(&self) -> Vec<Cid>;
    /// This peer's IPFS daemon, asked now (bounded by a timeout): its id
    /// (empty when it did not answer) and the peers it is connected to.
    fn ipfs_links(&self) -> futures::future::BoxFuture<'static, (String, Vec<String>)>;
    /// This peer's IPFS repository usage.
    fn repo_stat(&self) -> futures::future::BoxFuture<'static, Result<RemoteRepoStat, String>>;
    /// Runs `repo/gc` on this peer's IPFS daemon.
    fn repo_gc(&self) -> futures::future::BoxFuture<'static, RemoteRepoGc>;
}

/// What the network reports to the consensus task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A trusted peer announced heads (gossip or a heads answer); `from`
    /// is the peer to ask for their blocks: the author, or the peer that
    /// relayed them when this peer is not connected to the author.
    Heads { from: PeerId, heads: Vec<Cid> },
    /// A peer of this cluster connected (identified as speaking our sync
    /// protocol): ask it for its heads now.
    PeerUp(PeerId),
}

/// Failures of network calls.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The event loop is gone (shutting down).
    #[error("network is shut down")]
    Closed,
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    /// Building the transport or a behaviour failed.
    #[error("cannot build the libp2p stack: {0}")]
    Build(String),
    /// A request to a peer failed.
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    /// A peer answered with an error or the wrong kind of answer.
    #[error("peer {peer} answered: {reason}")]
    BadAnswer { peer: PeerId, reason: String },
    /// A peer refused the request: it does not trust this peer.
    #[error("peer {peer} does not trust this peer")]
    NotTrusted { peer: PeerId },
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

/// Commands to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Publish(Vec<Cid>),
    PublishMetrics(Vec<crate::monitor::MetricWire>),
    Heads(PeerId, Reply<Vec<Cid>>),
    Snapshot(PeerId, Reply<Option<Vec<u8>>>),
    Blocks(PeerId, Vec<Cid>, u32, Reply<Vec<(Cid, Vec<u8>)>>),
    RemoteId(PeerId, Reply<RemoteId>),
    PeerPinStatus(PeerId, Cid, bool, Reply<PeerPinStatus>),
    RemoteStatusMany(PeerId, Vec<Cid>, Reply<Vec<PeerPinStatus>>),
    RemoteRecoverAll(PeerId, Reply<Vec<Cid>>),
    LocalId(oneshot::Sender<RemoteId>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    PeerAddrs(PeerId, oneshot::Sender<Vec<Multiaddr>>),
    KnownAddrs(oneshot::Sender<Vec<Multiaddr>>),
    /// Blocks (`true`) or lets back in a peer; the addresses are dialed
    /// when it is let back in.
    Block(PeerId, bool, Vec<Multiaddr>),
    Connected(oneshot::Sender<Vec<PeerId>>),
    RemoteGraph(PeerId, Reply<RemoteGraph>),
    /// Asks a peer (first) to block or let back in another (second).
    SetRemoved(PeerId, PeerId, bool, Reply<()>),
    Shutdown(oneshot::Sender<()>),
    RepoStat(PeerId, Reply<RemoteRepoStat>),
    RepoGc(PeerId, Reply<RemoteRepoGc>),
}

/// A handle to the network. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Network {
    tx: mpsc::Sender<Command>,
    local: PeerId,
    bandwidth: bandwidth::Bandwidth,
}

impl Network {
    /// Builds the Swarm, starts listening and dialing, and spawns the event
    /// loop. Events go to `events`; blocks and heads are served from
    /// `source`, the cluster RPC by `handler`.
    pub async fn start(
        config: NetworkConfig,
        source: Arc<dyn SyncSource>,
        handler: Arc<dyn RpcHandler>,
        events: mpsc::Sender<NetEvent>,
        monitor: crate::monitor::Monitor,
    ) -> Result<Network, NetworkError> {
        let local = config.keypair.public().to_peer_id();
        let (tx, rx) = mpsc::channel(256);
        let bandwidth = bandwidth::Bandwidth::default();
        let event_loop = EventLoop::new(
            config,
            source,
            handler,
            events,
            monitor,
            rx,
            bandwidth.clone(),
        )?;
        tokio::spawn(event_loop.run());
        Ok(Network {
            tx,
            local,
            bandwidth,
        })
    }

    /// This peer's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The traffic of every libp2p protocol so far, by protocol ID.
    pub fn bandwidth(&self) -> std::collections::BTreeMap<String, bandwidth::ProtocolBandwidth> {
        self.bandwidth.snapshot()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| NetworkError::Closed)?;
        rx.await.map_err(|_| NetworkError::Closed)
    }

    /// The addresses actually bound (port 0 resolved), with `/p2p/<id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Announces heads on the cluster's gossip topic (best effort: with no
    /// peer subscribed there is nobody to tell).
    pub async fn publish_heads(&self, heads: Vec<Cid>) -> Result<(), NetworkError> {
        self.tx
            .send(Command::Publish(heads))
            .await
            .map_err(|_| NetworkError::Closed)
    }

    /// Publishes this peer's metrics on the cluster's metrics topic (and
    /// records them in its own monitor).
    pub async fn publish_metrics(
        &self,
        metrics: Vec<crate::monitor::MetricWire>,
    ) -> Result<(), NetworkError> {
        self.tx
            .send(Command::PublishMetrics(metrics))
            .await
            .map_err(|_| NetworkError::Closed)
    }

    /// Asks `peer` for its heads.
    pub async fn heads_of(&self, peer: PeerId) -> Result<Vec<Cid>, NetworkError> {
        self.ask(|r| Command::Heads(peer, r)).await?
    }

    /// Asks `peer` for the snapshot manifest it serves.
    pub async fn snapshot_of(&self, peer: PeerId) -> Result<Option<Vec<u8>>, NetworkError> {
        self.ask(|r| Command::Snapshot(peer, r)).await?
    }

    /// Asks `peer` for blocks and up to `ancestors` of their ancestors.
    pub async fn fetch_blocks(
        &self,
        peer: PeerId,
        cids: Vec<Cid>,
        ancestors: u32,
    ) -> Result<Vec<(Cid, Vec<u8>)>, NetworkError> {
        self.ask(|r| Command::Blocks(peer, cids, ancestors, r))
            .await?
    }

    /// Asks `peer` who it is.
    pub async fn remote_id(&self, peer: PeerId) -> Result<RemoteId, NetworkError> {
        self.ask(|r| Command::RemoteId(peer, r)).await?
    }

    /// Asks `peer` for its status of `cid` (re-queueing it first if
    /// `recover` and it failed).
    pub async fn remote_status(
        &self,
        peer: PeerId,
        cid: Cid,
        recover: bool,
    ) -> Result<PeerPinStatus, NetworkError> {
        self.ask(|r| Command::PeerPinStatus(peer, cid, recover, r))
            .await?
    }

    /// Asks `peer` for its statuses of `cids` (at most 256), in order.
    pub async fn remote_status_many(
        &self,
        peer: PeerId,
        cids: Vec<Cid>,
    ) -> Result<Vec<PeerPinStatus>, NetworkError> {
        self.ask(|r| Command::RemoteStatusMany(peer, cids, r))
            .await?
    }

    /// Asks `peer` to re-queue its failed pin operations; returns the CIDs
    /// it re-queued.
    pub async fn remote_recover_all(&self, peer: PeerId) -> Result<Vec<Cid>, NetworkError> {
        self.ask(|r| Command::RemoteRecoverAll(peer, r)).await?
    }

    /// Asks `peer` for its IPFS repository usage.
    pub async fn remote_repo_stat(&self, peer: PeerId) -> Result<RemoteRepoStat, NetworkError> {
        self.ask(|r| Command::RepoStat(peer, r)).await?
    }

    /// Asks `peer` to garbage-collect its IPFS repository.
    pub async fn remote_repo_gc(&self, peer: PeerId) -> Result<RemoteRepoGc, NetworkError> {
        self.ask(|r| Command::RepoGc(peer, r)).await?
    }

    /// This peer as others see it.
    pub async fn local_id(&self) -> Result<RemoteId, NetworkError> {
        self.ask(Command::LocalId).await
    }

    /// The live peers of this cluster (connected, or seen within the peer
    /// TTL), without this peer, sorted.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NetworkError> {
        self.ask(Command::Peers).await
    }

    /// Known addresses of `peer`, with `/p2p/<id>`.
    pub async fn peer_addrs(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(|r| Command::PeerAddrs(peer, r)).await
    }

    /// Every known address of every cluster peer, for the peerstore file.
    pub async fn known_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(Command::KnownAddrs).await
    }

    /// Blocks (or unblocks) a peer in memory only: its connections are
    /// closed and refused until this peer stops. A network partition, not
    /// a removal (that is a peerset record, see [`Network::apply_peer_record`]).
    pub async fn set_blocked(&self, peer: PeerId, blocked: bool) -> Result<(), NetworkError> {
        self.tx
            .send(Command::Block(peer, blocked, Vec::new()))
            .await
            .map_err(|_| NetworkError::Closed)
    }

    /// Applies a peerset record: a removed peer's connections are closed
    /// and refused, a re-admitted one is dialed at `record.addrs`; a record
    /// about this peer itself makes it stop (or resume) redialing.
    pub async fn apply_peer_record(
        &self,
        peer: PeerId,
        record: crate::consensus::peerset::PeerRecord,
    ) -> Result<(), NetworkError> {
        self.tx
            .send(Command::Block(peer, record.removed, record.addrs))
            .await
            .map_err(|_| NetworkError::Closed)
    }

    /// The cluster peers this peer has a live connection to, sorted.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetworkError> {
        self.ask(Command::Connected).await
    }

    /// Asks `peer` for its connections and its IPFS daemon's, for the
    /// health graph.
    pub async fn remote_graph(&self, peer: PeerId) -> Result<RemoteGraph, NetworkError> {
        self.ask(|r| Command::RemoteGraph(peer, r)).await?
    }

    /// Asks `target` to take `peer` out of its peerset (`removed`) or back
    /// in; `target` heeds it only if it trusts this peer.
    pub async fn tell_removed(
        &self,
        target: PeerId,
        peer: PeerId,
        removed: bool,
    ) -> Result<(), NetworkError> {
        self.ask(|r| Command::SetRemoved(target, peer, removed, r))
            .await?
    }

    /// Stops the event loop; pending requests fail with [`NetworkError::Closed`].
    pub async fn shutdown(&self) {
        // An already stopped loop is what we want anyway.
        let _ = self.ask(Command::Shutdown).await;
    }
}

/// Peers trusted to announce heads: the configured ones and this peer.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    trusted: TrustedPeers,
    local: PeerId,
}

impl Trust {
    pub(crate) fn new(trusted: TrustedPeers, local: PeerId) -> Self {
        Self { trusted, local }
    }

    pub(crate) fn is_trusted(&self, peer: &PeerId) -> bool {
        self.trusted.trusted_by(&self.local, peer)
    }

    /// Whether a trusted peer other than this one is not `connected`
    /// (always, when every peer is trusted: any may be missing).
    pub(crate) fn any_missing(&self, connected: impl Fn(&PeerId) -> bool) -> bool {
        match &self.trusted {
            TrustedPeers::All => true,
            TrustedPeers::Only(list) => list.iter().any(|p| *p != self.local && !connected(p)),
        }
    }
}
