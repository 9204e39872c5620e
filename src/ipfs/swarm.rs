//! The embedded IPFS node's own libp2p Swarm, on the public IPFS protocol
//! set, separate from the cluster's private network ([`crate::network`]):
//! TCP + Noise + Yamux, identify (`/ipfs/id/1.0.0`, agent
//! `pincluster/<version>`), ping, Kademlia on `/ipfs/kad/1.0.0` (client
//! and server, for providing and finding content) and Bitswap
//! ([`super::bitswap`]).
//!
//! [`IpfsSwarm`] is a cloneable handle: every call becomes a [`Command`]
//! with a oneshot reply, served by one event loop task that owns the Swarm
//! and keeps pending dials and DHT queries in maps keyed by their ids. The
//! loop checks its cancellation token first; [`IpfsSwarm::stop`] cancels
//! it, waits for the loop and every Bitswap task to end, and so leaves no
//! task running and no port bound.
//!
//! Bitswap runs beside the loop, not in it: the loop tells it when a peer
//! connects or leaves, and Bitswap opens and reads its own substreams.
//! When Bitswap finds no block at connected peers, it asks the loop
//! ([`Routing`]) to look providers up in the DHT and dial them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use futures::future::BoxFuture;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport, connection_limits, identify,
    identity::Keypair, kad, multiaddr::Protocol, noise, ping, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bitswap::{
    self, Bitswap, BitswapConfig, BitswapError, BlockSource, BlockStream, LedgerStats, Routing,
};

/// The DHT protocol of the public IPFS network.
pub const KAD_PROTOCOL: &str = "/ipfs/kad/1.0.0";
/// What identify says this node speaks.
const PROTOCOL_VERSION: &str = "ipfs/0.1.0";
/// Commands queued to the loop before callers wait.
const COMMAND_QUEUE: usize = 256;

/// What the swarm needs to start. The embedded node's configuration
/// section fills it; [`SwarmConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The node's key (its peer id), distinct from the cluster peer's.
    pub identity: Keypair,
    /// Where to listen (port 0 allowed).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (`/…/p2p/<id>`), also added to the DHT.
    pub bootstrap: Vec<Multiaddr>,
    /// Most connections at once (in and out).
    pub max_connections: u32,
    /// How long a DHT query may run.
    pub query_timeout: Duration,
    /// The Bitswap engine's limits.
    pub bitswap: BitswapConfig,
}

impl SwarmConfig {
    /// Defaults: no bootstrap, 512 connections, 30 s DHT queries, Kubo's
    /// Bitswap limits.
    pub fn new(identity: Keypair, listen: Vec<Multiaddr>) -> SwarmConfig {
        SwarmConfig {
            identity,
            listen,
            bootstrap: Vec::new(),
            max_connections: 512,
            query_timeout: Duration::from_secs(30),
            bitswap: BitswapConfig::default(),
        }
    }
}

/// Failures of swarm calls.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The loop is gone (stopped).
    #[error("the IPFS swarm is stopped")]
    Closed,
    /// Building the transport or a behaviour failed.
    #[error("cannot build the IPFS swarm: {0}")]
    Build(String),
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    /// A dial failed.
    #[error("cannot connect to {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    /// A DHT operation failed.
    #[error("DHT: {0}")]
    Dht(String),
}

type Reply<T> = oneshot::Sender<Result<T, SwarmError>>;

/// Commands to the event loop.
#[derive(Debug)]
enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Connect(Multiaddr, Reply<PeerId>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Peers(oneshot::Sender<Vec<(PeerId, Multiaddr)>>),
    Provide(Cid, Reply<()>),
    /// Find providers; with `true`, also dial them.
    FindProviders(Cid, bool, Reply<Vec<PeerId>>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    bitswap: bitswap::Behaviour,
}

/// A handle to the running swarm. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IpfsSwarm {
    tx: mpsc::Sender<Command>,
    local: PeerId,
    bitswap: Bitswap,
    cancel: CancellationToken,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Finds providers through the loop and dials them (Bitswap's side).
struct SwarmRouting {
    tx: mpsc::Sender<Command>,
}

impl Routing for SwarmRouting {
    fn find_and_connect(&self, cid: Cid) -> BoxFuture<'static, ()> {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            if tx
                .send(Command::FindProviders(cid, true, reply))
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
        })
    }
}

fn build_transport(key: &Keypair) -> Result<Boxed<(PeerId, StreamMuxerBox)>, SwarmError> {
    let noise = noise::Config::new(key).map_err(|e| SwarmError::Build(e.to_string()))?;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    )
}

impl IpfsSwarm {
    /// Builds the Swarm, starts listening, dials the bootstrap peers and
    /// spawns the event loop and Bitswap. Blocks are served from, and
    /// fetched blocks put into, `source`.
    pub async fn start(
        config: SwarmConfig,
        source: Arc<dyn BlockSource>,
    ) -> Result<IpfsSwarm, SwarmError> {
        let local = config.identity.public().to_peer_id();
        let cancel = CancellationToken::new();
        let (bitswap_behaviour, inbound, open) = bitswap::Behaviour::new();

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(config.query_timeout);
        let store = kad::store::MemoryStore::with_config(
            local,
            kad::store::MemoryStoreConfig {
                // Every pinned root may be provided.
                max_provided_keys: 1 << 20,
                ..Default::default()
            },
        );
        let mut kad = kad::Behaviour::with_config(local, store, kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let behaviour = Behaviour {
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(config.max_connections))
                    .with_max_established_per_peer(Some(4)),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new(PROTOCOL_VERSION.into(), config.identity.public())
                    .with_agent_version(format!("pincluster/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            bitswap: bitswap_behaviour,
        };
        let transport = build_transport(&config.identity)?;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.identity.clone())
            .with_tokio()
            .with_other_transport(|_| transport)
            .map_err(|e| SwarmError::Build(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| SwarmError::Build(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();

        let mut listeners = HashSet::new();
        for addr in &config.listen {
            // A second peer on the same machine with the default swarm port
            // still runs (its node's address reaches the cluster through
            // `/id`); sharing the port would split dials between the two.
            let addr = match crate::addr::check_tcp_port_free(addr) {
                Ok(()) => addr.clone(),
                Err(e) => {
                    let any = crate::addr::with_any_port(addr);
                    tracing::warn!("IPFS swarm address {addr} is taken ({e}): listening on {any}");
                    any
                }
            };
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| SwarmError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            listeners.insert(id);
        }
        for addr in &config.bootstrap {
            if let Some(peer) = peer_of(addr) {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!("cannot dial IPFS bootstrap peer {addr}: {e}");
            }
        }

        let bitswap = Bitswap::start(
            config.bitswap.clone(),
            source,
            inbound,
            open,
            cancel.child_token(),
        );
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        bitswap.set_routing(Arc::new(SwarmRouting { tx: tx.clone() }));
        let event_loop = EventLoop {
            swarm,
            commands: rx,
            cancel: cancel.clone(),
            bitswap: bitswap.clone(),
            listeners,
            listening: HashSet::new(),
            waiting_for_listen: Vec::new(),
            dials: HashMap::new(),
            provider_queries: HashMap::new(),
            connected: HashMap::new(),
        };
        let task = tokio::spawn(event_loop.run());
        Ok(IpfsSwarm {
            tx,
            local,
            bitswap,
            cancel,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SwarmError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SwarmError::Closed)?;
        rx.await.map_err(|_| SwarmError::Closed)
    }

    /// The addresses actually bound (port 0 resolved), with `/p2p/<id>`;
    /// waits until every listener is up.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, SwarmError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Connects to `addr` (`/ip4/…/tcp/…/p2p/<id>`, or without `/p2p`);
    /// resolves with the peer's id once the connection is up. The peer
    /// then receives this node's wantlist.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, SwarmError> {
        self.ask(|r| Command::Connect(addr, r)).await?
    }

    /// Closes every connection to `peer`; whether there was one.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool, SwarmError> {
        self.ask(|r| Command::Disconnect(peer, r)).await
    }

    /// The connected peers, each with the address of one connection.
    pub async fn peers(&self) -> Result<Vec<(PeerId, Multiaddr)>, SwarmError> {
        self.ask(Command::Peers).await
    }

    /// Announces in the DHT that this node provides `cid` (its multihash,
    /// as Kubo keys provider records). Resolves once the record is stored
    /// locally and the announcement to the closest peers has started.
    pub async fn provide(&self, cid: Cid) -> Result<(), SwarmError> {
        self.ask(|r| Command::Provide(cid, r)).await?
    }

    /// Looks up providers of `cid` in the DHT (bounded by
    /// [`SwarmConfig::query_timeout`]).
    pub async fn find_providers(&self, cid: Cid) -> Result<Vec<PeerId>, SwarmError> {
        self.ask(|r| Command::FindProviders(cid, false, r)).await?
    }

    /// Fetches one block (see [`Bitswap::get_block`]).
    pub async fn get_block(&self, cid: Cid) -> Result<Bytes, BitswapError> {
        self.bitswap.get_block(cid).await
    }

    /// Fetches blocks as a stream (see [`Bitswap::get_blocks`]).
    pub fn get_blocks(&self, cids: Vec<Cid>) -> BlockStream {
        self.bitswap.get_blocks(cids)
    }

    /// The Bitswap ledger of one peer.
    pub fn ledger(&self, peer: &PeerId) -> LedgerStats {
        self.bitswap.ledger(peer)
    }

    /// The Bitswap engine (ledgers, wantlist sizes).
    pub fn bitswap(&self) -> &Bitswap {
        &self.bitswap
    }

    /// Stops the loop and Bitswap and waits for them: no task keeps
    /// running and every port is released when this returns. Calling it
    /// again (or on a clone) does nothing.
    pub async fn stop(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.bitswap.shutdown().await;
    }
}

/// A provider lookup in flight.
struct ProviderQuery {
    reply: Option<Reply<Vec<PeerId>>>,
    found: HashSet<PeerId>,
    connect: bool,
}

/// The Swarm and what the loop keeps.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    bitswap: Bitswap,
    listeners: HashSet<libp2p::core::transport::ListenerId>,
    listening: HashSet<libp2p::core::transport::ListenerId>,
    waiting_for_listen: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    dials: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    /// Connected peers, with the remote address of their first connection.
    connected: HashMap<PeerId, Multiaddr>,
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn kad_key(cid: &Cid) -> kad::RecordKey {
    kad::RecordKey::new(&cid.hash().to_bytes())
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        for (_, (addr, reply)) in self.dials.drain() {
            let _ = reply.send(Err(SwarmError::Dial {
                addr,
                reason: "the swarm stopped".into(),
            }));
        }
        // Dropping the Swarm closes listeners and connections.
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let local = *self.swarm.local_peer_id();
        self.swarm
            .listeners()
            .map(|a| a.clone().with(Protocol::P2p(local)))
            .collect()
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                if self.listening.len() >= self.listeners.len() {
                    let _ = reply.send(self.listen_addrs());
                } else {
                    self.waiting_for_listen.push(reply);
                }
            }
            Command::Connect(addr, reply) => {
                if let Some(peer) = peer_of(&addr)
                    && self.swarm.is_connected(&peer)
                {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                let opts = match peer_of(&addr) {
                    Some(peer) => DialOpts::peer_id(peer)
                        .addresses(vec![addr.clone()])
                        .condition(PeerCondition::Always)
                        .build(),
                    None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                };
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(SwarmError::Dial {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Disconnect(peer, reply) => {
                let _ = reply.send(self.swarm.disconnect_peer_id(peer).is_ok());
            }
            Command::Peers(reply) => {
                let _ = reply.send(
                    self.connected
                        .iter()
                        .map(|(p, a)| (*p, a.clone()))
                        .collect(),
                );
            }
            Command::Provide(cid, reply) => {
                let done = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(kad_key(&cid))
                    .map(|_| ())
                    .map_err(|e| SwarmError::Dht(e.to_string()));
                let _ = reply.send(done);
            }
            Command::FindProviders(cid, connect, reply) => {
                let id = self.swarm.behaviour_mut().kad.get_providers(kad_key(&cid));
                self.provider_queries.insert(
                    id,
                    ProviderQuery {
                        reply: Some(reply),
                        found: HashSet::new(),
                        connect,
                    },
                );
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!("IPFS swarm listening on {address}");
                self.listening.insert(listener_id);
                if self.listening.len() >= self.listeners.len() {
                    let addrs = self.listen_addrs();
                    for w in self.waiting_for_listen.drain(..) {
                        let _ = w.send(addrs.clone());
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                self.connected
                    .entry(peer_id)
                    .or_insert_with(|| endpoint.get_remote_address().clone());
                if let Some((_, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    self.bitswap.peer_connected(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.bitswap.peer_disconnected(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(SwarmError::Dial {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Peers that serve the DHT join the routing table with the
                // addresses they listen on (an inbound connection's address
                // is an ephemeral port).
                if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => self.on_query(id, result, step.last),
            other => tracing::trace!("IPFS swarm event: {other:?}"),
        }
    }

    fn on_query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let local = *self.swarm.local_peer_id();
                if let Some(q) = self.provider_queries.get_mut(&id) {
                    for p in providers {
                        if p == local || !q.found.insert(p) {
                            continue;
                        }
                        // Dial while the query still knows the provider's
                        // addresses.
                        if q.connect && !self.swarm.is_connected(&p) {
                            let opts = DialOpts::peer_id(p)
                                .condition(PeerCondition::DisconnectedAndNotDialing)
                                .build();
                            if let Err(e) = self.swarm.dial(opts) {
                                tracing::debug!("cannot dial provider {p}: {e}");
                            }
                        }
                    }
                    // The first providers are enough for the caller.
                    if !q.found.is_empty()
                        && let Some(reply) = q.reply.take()
                    {
                        let _ = reply.send(Ok(q.found.iter().copied().collect()));
                    }
                }
            }
            kad::QueryResult::GetProviders(Ok(
                kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. },
            )) => {}
            kad::QueryResult::GetProviders(Err(e)) => {
                if let Some(mut q) = self.provider_queries.remove(&id)
                    && let Some(reply) = q.reply.take()
                {
                    let _ = reply.send(if q.found.is_empty() {
                        Err(SwarmError::Dht(e.to_string()))
                    } else {
                        Ok(q.found.into_iter().collect())
                    });
                }
                return;
            }
            other => tracing::debug!("IPFS DHT query {id:?}: {other:?}"),
        }
        if last
            && let Some(mut q) = self.provider_queries.remove(&id)
            && let Some(reply) = q.reply.take()
        {
            let _ = reply.send(Ok(q.found.into_iter().collect()));
        }
    }
}
