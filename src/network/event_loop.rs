//! The event loop that owns the Swarm. It serves commands from the
//! [`Network`](super::Network) handle, answers peers' requests (block walks
//! run on the blocking pool so a large answer never stalls the Swarm), keeps
//! the peerset, and reports trusted heads to the consensus task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cid::Cid;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport, allow_block_list, connection_limits,
    gossipsub, identify, identity::Keypair, kad, noise, ping, tcp, yamux,
};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};

use super::bandwidth::{Bandwidth, CountingMuxer};
use super::protocol::{
    HeadsMessage, MAX_BLOCKS_PER_RESPONSE, MAX_RESPONSE_BYTES, RemoteGraph, RemoteId, RemoteStatus,
    SyncCodec, SyncRequest, SyncResponse,
};
use super::protocol::{RemoteRepoGc, RemoteRepoStat};
use super::{Command, NetEvent, NetworkConfig, NetworkError, Reply, StateSource, Trust};
use crate::monitor::Monitor;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossip: gossipsub::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
}

/// What we know of a peer that speaks our protocols.
#[derive(Debug)]
struct PeerState {
    connections: usize,
    last_seen: Instant,
    addrs: Vec<Multiaddr>,
    last_dial: Option<Instant>,
}

enum Pending {
    Heads(Reply<Vec<Cid>>),
    Blocks(Reply<Vec<(Cid, Vec<u8>)>>),
    Id(Reply<RemoteId>),
    Status(Reply<RemoteStatus>),
    StatusMany(Reply<Vec<RemoteStatus>>),
    Recovered(Reply<Vec<Cid>>),
    Graph(Reply<RemoteGraph>),
    RepoStat(Reply<RemoteRepoStat>),
    RepoGc(Reply<RemoteRepoGc>),
    Done(Reply<()>),
}

impl Pending {
    fn fail(self, error: NetworkError) {
        // The asker may have given up meanwhile; nothing to do then.
        match self {
            Pending::Heads(r) => drop(r.send(Err(error))),
            Pending::Blocks(r) => drop(r.send(Err(error))),
            Pending::Id(r) => drop(r.send(Err(error))),
            Pending::Status(r) => drop(r.send(Err(error))),
            Pending::StatusMany(r) => drop(r.send(Err(error))),
            Pending::Recovered(r) => drop(r.send(Err(error))),
            Pending::Graph(r) => drop(r.send(Err(error))),
            Pending::RepoStat(r) => drop(r.send(Err(error))),
            Pending::RepoGc(r) => drop(r.send(Err(error))),
            Pending::Done(r) => drop(r.send(Err(error))),
        }
    }
}

/// How often the loop prunes the peerset and redials lost peers.
const MAINTENANCE: Duration = Duration::from_secs(2);
/// How often Kademlia re-bootstraps (finds peers that joined elsewhere).
const REBOOTSTRAP: Duration = Duration::from_secs(30);
/// Least time between two dials of the same lost peer.
const REDIAL: Duration = Duration::from_secs(10);

/// The Swarm and everything the loop keeps.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: NetworkConfig,
    trust: Trust,
    source: Arc<dyn StateSource>,
    events: mpsc::Sender<NetEvent>,
    commands: mpsc::Receiver<Command>,
    answers_tx: mpsc::Sender<(ResponseChannel<SyncResponse>, SyncResponse)>,
    answers_rx: mpsc::Receiver<(ResponseChannel<SyncResponse>, SyncResponse)>,
    topic: gossipsub::IdentTopic,
    metrics_topic: gossipsub::IdentTopic,
    monitor: Monitor,
    sync_protocol: StreamProtocol,
    pending: HashMap<OutboundRequestId, Pending>,
    peers: HashMap<PeerId, PeerState>,
    listeners: HashSet<libp2p::core::transport::ListenerId>,
    listening: HashSet<libp2p::core::transport::ListenerId>,
    waiting_for_listen: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    bootstrapped: bool,
    /// This peer was removed from the cluster: it stops redialing lost
    /// peers (they would refuse it) until it is taken back in.
    removed_self: bool,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("local", self.swarm.local_peer_id())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

fn build_transport(
    key: &Keypair,
    secret: Option<[u8; 32]>,
    bandwidth: Bandwidth,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, NetworkError> {
    let noise = noise::Config::new(key).map_err(|e| NetworkError::Build(e.to_string()))?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let timeout = Duration::from_secs(20);
    Ok(match secret {
        // The pre-shared key wraps the raw socket, before anything else is
        // said: a peer without the key cannot even complete Noise.
        Some(psk) => tcp
            .and_then(move |socket, _| PnetConfig::new(PreSharedKey::new(psk)).handshake(socket))
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            // Every substream counts its bytes per protocol.
            .map(move |(peer, muxer), _| {
                (
                    peer,
                    StreamMuxerBox::new(CountingMuxer::new(muxer, bandwidth.clone())),
                )
            })
            .boxed(),
        None => tcp
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            // Every substream counts its bytes per protocol.
            .map(move |(peer, muxer), _| {
                (
                    peer,
                    StreamMuxerBox::new(CountingMuxer::new(muxer, bandwidth.clone())),
                )
            })
            .boxed(),
    })
}

fn protocol(name: String) -> Result<StreamProtocol, NetworkError> {
    StreamProtocol::try_from_owned(name).map_err(|e| NetworkError::Build(e.to_string()))
}

fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.clone()
    } else {
        addr.clone().with(Protocol::P2p(peer))
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

impl EventLoop {
    pub(super) fn new(
        config: NetworkConfig,
        source: Arc<dyn StateSource>,
        events: mpsc::Sender<NetEvent>,
        monitor: Monitor,
        commands: mpsc::Receiver<Command>,
        bandwidth: Bandwidth,
    ) -> Result<Self, NetworkError> {
        let tag = config.cluster_tag();
        let sync_protocol = protocol(format!("/pincluster/{tag}/sync/1.0.0"))?;
        let kad_protocol = protocol(format!("/pincluster/{tag}/kad/1.0.0"))?;
        let topic = gossipsub::IdentTopic::new(format!("pincluster/{tag}/heads/1"));
        let metrics_topic = gossipsub::IdentTopic::new(format!("pincluster/{tag}/metrics/1"));
        let transport = build_transport(&config.keypair, config.secret, bandwidth)?;
        let local = config.keypair.public().to_peer_id();

        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(config.heartbeat)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .build()
            .map_err(|e| NetworkError::Build(e.to_string()))?;
        let gossip = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(config.keypair.clone()),
            gossip_config,
        )
        .map_err(|e| NetworkError::Build(e.to_string()))?;

        let mut kad_config = kad::Config::new(kad_protocol);
        kad_config.set_query_timeout(Duration::from_secs(30));
        let mut kad =
            kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let behaviour = Behaviour {
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(config.max_connections))
                    .with_max_established_per_peer(Some(4)),
            ),
            blocked: allow_block_list::Behaviour::default(),
            identify: identify::Behaviour::new(
                identify::Config::new("/pincluster/1.0.0".into(), config.keypair.public())
                    .with_agent_version(format!("pincluster/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            gossip,
            sync: request_response::Behaviour::with_codec(
                SyncCodec,
                [(sync_protocol.clone(), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(config.request_timeout),
            ),
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
            .with_tokio()
            .with_other_transport(|_| transport)
            .map_err(|e| NetworkError::Build(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| NetworkError::Build(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();

        for t in [&topic, &metrics_topic] {
            swarm
                .behaviour_mut()
                .gossip
                .subscribe(t)
                .map_err(|e| NetworkError::Build(e.to_string()))?;
        }
        let mut listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetworkError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            listeners.insert(id);
        }
        // Removals persisted in the state hold before anyone is dialed: a
        // removed peer is refused even as a bootstrap peer.
        let mut removed_self = false;
        for peer in &config.removed {
            if *peer == local {
                tracing::warn!(
                    "this peer was removed from the cluster; it does not redial its peers until a trusted peer takes it back in"
                );
                removed_self = true;
            } else {
                swarm.behaviour_mut().blocked.block_peer(*peer);
            }
        }
        for addr in &config.bootstrap {
            if let Some(peer) = peer_of(addr)
                && config.removed.contains(&peer)
            {
                tracing::info!(%addr, "not dialing a peer removed from the cluster");
                continue;
            }
            if let Some(peer) = peer_of(addr) {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap address");
            }
        }
        let (answers_tx, answers_rx) = mpsc::channel(64);
        Ok(Self {
            trust: Trust::new(config.trusted.clone(), local),
            swarm,
            config,
            source,
            events,
            commands,
            answers_tx,
            answers_rx,
            topic,
            metrics_topic,
            monitor,
            sync_protocol,
            pending: HashMap::new(),
            peers: HashMap::new(),
            listeners,
            listening: HashSet::new(),
            waiting_for_listen: Vec::new(),
            bootstrapped: false,
            removed_self,
        })
    }

    /// Runs until the handle asks for shutdown or every handle is dropped.
    pub async fn run(mut self) {
        let mut maintenance = tokio::time::interval(MAINTENANCE);
        let mut rebootstrap = tokio::time::interval(REBOOTSTRAP);
        loop {
            tokio::select! {
                // Commands first: a shutdown must not wait behind traffic.
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((channel, answer)) = self.answers_rx.recv() => {
                    // The asker may have gone away meanwhile; nothing to do then.
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, answer);
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                _ = maintenance.tick() => self.maintain(),
                _ = rebootstrap.tick() => {
                    if self.bootstrapped {
                        // Fails only when the routing table is empty.
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
        for (_, pending) in self.pending.drain() {
            pending.fail(NetworkError::Closed);
        }
        tracing::debug!("network event loop stopped");
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let local = *self.swarm.local_peer_id();
        let mut addrs: Vec<Multiaddr> =
            self.swarm.listeners().map(|a| with_p2p(a, local)).collect();
        addrs.sort();
        addrs
    }

    fn live_peers(&self) -> Vec<PeerId> {
        let ttl = self.config.peer_ttl;
        let mut peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connections > 0 || s.last_seen.elapsed() < ttl)
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        peers
    }

    /// Cluster peers with an open connection now (the peerset also counts
    /// peers seen within the TTL; the health graph shows actual links).
    fn connected_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connections > 0)
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        peers
    }

    fn local_id(&self) -> RemoteId {
        let local = *self.swarm.local_peer_id();
        let mut cluster_peers: Vec<String> =
            self.live_peers().iter().map(PeerId::to_string).collect();
        cluster_peers.push(local.to_string());
        cluster_peers.sort();
        let (ipfs_id, ipfs_addresses) = self.source.ipfs();
        RemoteId {
            ipfs_id,
            ipfs_addresses: ipfs_addresses.iter().map(Multiaddr::to_string).collect(),
            id: local.to_string(),
            addresses: self
                .listen_addrs()
                .iter()
                .map(Multiaddr::to_string)
                .collect(),
            cluster_peers,
            peername: self.config.peername.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
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
            Command::Publish(heads) => {
                let Ok(data) = super::protocol::encode(&HeadsMessage {
                    v: super::protocol::WIRE_VERSION,
                    heads,
                }) else {
                    return;
                };
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .publish(self.topic.clone(), data)
                {
                    // No subscribed peer yet is normal for a lone peer.
                    tracing::debug!(error = %e, "heads not published");
                }
            }
            Command::PublishMetrics(metrics) => {
                let local = *self.swarm.local_peer_id();
                self.monitor
                    .record(local, metrics.clone(), chrono::Utc::now());
                let Ok(data) = super::protocol::encode(&metrics) else {
                    return;
                };
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .publish(self.metrics_topic.clone(), data)
                {
                    tracing::debug!(error = %e, "metrics not published");
                }
            }
            Command::Heads(peer, reply) => {
                self.request(peer, SyncRequest::Heads, Pending::Heads(reply))
            }
            Command::Blocks(peer, cids, ancestors, reply) => self.request(
                peer,
                SyncRequest::Blocks { cids, ancestors },
                Pending::Blocks(reply),
            ),
            Command::RemoteId(peer, reply) => {
                self.request(peer, SyncRequest::Id, Pending::Id(reply))
            }
            Command::RemoteStatus(peer, cid, recover, reply) => self.request(
                peer,
                SyncRequest::Status { cid, recover },
                Pending::Status(reply),
            ),
            Command::RemoteStatusMany(peer, cids, reply) => self.request(
                peer,
                SyncRequest::StatusMany { cids },
                Pending::StatusMany(reply),
            ),
            Command::RemoteRecoverAll(peer, reply) => {
                self.request(peer, SyncRequest::RecoverAll, Pending::Recovered(reply))
            }
            Command::LocalId(reply) => {
                let _ = reply.send(self.local_id());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.live_peers());
            }
            Command::PeerAddrs(peer, reply) => {
                let addrs = self
                    .peers
                    .get(&peer)
                    .map(|s| s.addrs.iter().map(|a| with_p2p(a, peer)).collect())
                    .unwrap_or_default();
                let _ = reply.send(addrs);
            }
            Command::KnownAddrs(reply) => {
                let mut addrs: Vec<Multiaddr> = self
                    .peers
                    .iter()
                    .flat_map(|(p, s)| s.addrs.iter().map(|a| with_p2p(a, *p)))
                    .collect();
                addrs.sort();
                addrs.dedup();
                let _ = reply.send(addrs);
            }
            Command::Connected(reply) => {
                let _ = reply.send(self.connected_peers());
            }
            Command::RemoteGraph(peer, reply) => {
                self.request(peer, SyncRequest::Graph, Pending::Graph(reply))
            }
            Command::Block(peer, blocked, addrs) => self.set_blocked(peer, blocked, addrs),
            Command::SetRemoved(target, peer, removed, reply) => self.request(
                target,
                SyncRequest::SetRemoved {
                    peer: peer.to_string(),
                    removed,
                },
                Pending::Done(reply),
            ),
            Command::Shutdown(_) => unreachable!("handled by the loop"),
            Command::RepoStat(peer, reply) => {
                self.request(peer, SyncRequest::RepoStat, Pending::RepoStat(reply))
            }
            Command::RepoGc(peer, reply) => {
                self.request(peer, SyncRequest::RepoGc, Pending::RepoGc(reply))
            }
        }
    }

    /// Blocks a peer (its connections closed and refused, forgotten from
    /// the peerset) or lets it back in and dials it at `addrs`. About this
    /// peer itself: stops or resumes redialing.
    fn set_blocked(&mut self, peer: PeerId, blocked: bool, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() {
            if blocked && !self.removed_self {
                tracing::warn!(
                    "this peer was removed from the cluster; it stops redialing its peers until a trusted peer takes it back in"
                );
            } else if !blocked && self.removed_self {
                tracing::info!("this peer was taken back into the cluster");
            }
            self.removed_self = blocked;
            return;
        }
        let was_blocked = self
            .swarm
            .behaviour()
            .blocked
            .blocked_peers()
            .contains(&peer);
        if blocked {
            if !was_blocked {
                tracing::info!(%peer, "peer removed from the cluster: its connections are refused");
            }
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.peers.remove(&peer);
            // Its metrics go too: a removed peer is no allocation candidate.
            self.monitor.forget(&peer);
        } else {
            if was_blocked {
                tracing::info!(%peer, "peer taken back into the cluster");
            }
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            for addr in &addrs {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }

    /// Sends `request` to `peer`; the answer goes to `pending`'s reply.
    fn request(&mut self, peer: PeerId, request: SyncRequest, pending: Pending) {
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        self.pending.insert(id, pending);
    }

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
                ..
            } => {
                tracing::info!(%address, "cluster swarm listening");
                self.listening.insert(listener_id);
                if self.listening.len() >= self.listeners.len() {
                    let addrs = self.listen_addrs();
                    for reply in self.waiting_for_listen.drain(..) {
                        let _ = reply.send(addrs.clone());
                    }
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections += 1;
                    state.last_seen = Instant::now();
                }
                if !self.bootstrapped {
                    self.bootstrapped = true;
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections = num_established as usize;
                    state.last_seen = Instant::now();
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                send_back_addr,
                ..
            } if cause.downcast_ref::<allow_block_list::Blocked>().is_some() => {
                tracing::info!(from = %send_back_addr, "refused a connection from a peer removed from the cluster");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event).await,
            _ => {}
        }
    }

    async fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if !info.protocols.contains(&self.sync_protocol) {
                    return; // not a peer of this cluster
                }
                for addr in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                let connections = self.swarm.is_connected(&peer_id) as usize;
                let was_live = self.peers.get(&peer_id).is_some_and(|s| s.connections > 0);
                let state = self.peers.entry(peer_id).or_insert(PeerState {
                    connections,
                    last_seen: Instant::now(),
                    addrs: Vec::new(),
                    last_dial: None,
                });
                state.addrs = info.listen_addrs;
                state.connections = state.connections.max(connections);
                state.last_seen = Instant::now();
                if !was_live {
                    tracing::info!(peer = %peer_id, "cluster peer up");
                    emit(&self.events, NetEvent::PeerUp(peer_id)).await;
                }
            }
            // Discovery: a peer we learnt of through the DHT. Dial it so it
            // joins the peerset (clusters are small enough for a full mesh,
            // and the connection limit bounds the rest).
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) if peer != *self.swarm.local_peer_id() && !self.swarm.is_connected(&peer) => {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addresses.into_vec())
                    .build();
                let _ = self.swarm.dial(opts);
            }
            BehaviourEvent::Gossip(gossipsub::Event::Subscribed { topic, .. })
                if topic == self.metrics_topic.hash() =>
            {
                self.monitor.want_metrics();
            }
            BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) if message.topic == self.metrics_topic.hash() => {
                // Any peer of the cluster may publish metrics (followers
                // too), but only about itself: the metric's peer is the
                // signed author of the message, whatever the payload says.
                let decoded =
                    super::protocol::decode::<Vec<crate::monitor::MetricWire>>(&message.data);
                let acceptance = match (&decoded, message.source) {
                    (Ok(_), Some(_)) => gossipsub::MessageAcceptance::Accept,
                    _ => gossipsub::MessageAcceptance::Reject,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                // A removed peer's metrics may still be relayed by peers
                // that did not hear of the removal: ignore them.
                if let (Ok(metrics), Some(author)) = (decoded, message.source)
                    && !self
                        .swarm
                        .behaviour()
                        .blocked
                        .blocked_peers()
                        .contains(&author)
                {
                    self.monitor.record(author, metrics, chrono::Utc::now());
                }
            }
            BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let author = message.source;
                let trusted = author.is_some_and(|a| self.trust.is_trusted(&a));
                let decoded = super::protocol::decode::<HeadsMessage>(&message.data);
                let acceptance = match (&decoded, trusted) {
                    (Ok(_), true) => gossipsub::MessageAcceptance::Accept,
                    _ => gossipsub::MessageAcceptance::Reject,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                if let (Ok(msg), Some(from), true) = (decoded, author, trusted) {
                    if let Some(state) = self.peers.get_mut(&from) {
                        state.last_seen = Instant::now();
                    }
                    emit(
                        &self.events,
                        NetEvent::Heads {
                            from,
                            heads: msg.heads,
                        },
                    )
                    .await;
                } else {
                    tracing::debug!(?author, "rejected heads message");
                }
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    // Garbage collection deletes data: only trusted peers
                    // may trigger it on our daemon.
                    request_response::Message::Request {
                        request: SyncRequest::RepoGc,
                        channel,
                        ..
                    } if !self.trust.is_trusted(&peer) => {
                        let answer = SyncResponse::Error("not trusted to run repo/gc".into());
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, answer);
                    }
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_request(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        self.on_response(peer, request_id, response);
                    }
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                let err = NetworkError::Request {
                    peer,
                    reason: error.to_string(),
                };
                if let Some(pending) = self.pending.remove(&request_id) {
                    pending.fail(err);
                }
            }
            _ => {}
        }
    }

    fn on_request(
        &mut self,
        from: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        match request {
            SyncRequest::SetRemoved { peer, removed } => {
                let local = *self.swarm.local_peer_id();
                let answer = match peer.parse::<PeerId>() {
                    _ if !self.trust.is_trusted(&from) => {
                        tracing::warn!(%from, "peerset change asked by an untrusted peer: refused");
                        SyncResponse::NotTrusted
                    }
                    Ok(peer) if peer == local => {
                        tracing::info!(removed, by = %from, "a trusted peer changed this peer's membership");
                        self.set_blocked(peer, removed, Vec::new());
                        SyncResponse::Done
                    }
                    Ok(peer) if peer != from => {
                        tracing::info!(%peer, removed, %from, "peerset change asked by a trusted peer");
                        // The peerset record that follows carries the
                        // addresses; the asker's connection is enough now.
                        self.set_blocked(peer, removed, Vec::new());
                        SyncResponse::Done
                    }
                    Ok(_) => SyncResponse::Error("a peer cannot be removed by itself".into()),
                    Err(e) => SyncResponse::Error(format!("bad peer id: {e}")),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, answer);
            }
            SyncRequest::Id => {
                let id = self.local_id();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse::Id(id));
            }
            // Heads and blocks go to trusted peers and peers of the cluster
            // alike: blocks are signed, anyone may relay them.
            SyncRequest::Heads => {
                let heads = self.source.heads();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse::Heads(heads));
            }
            SyncRequest::Status { cid, recover } => {
                let status = self.source.status(cid, recover);
                let answers = self.answers_tx.clone();
                tokio::spawn(async move {
                    let answer = SyncResponse::Status(status.await);
                    let _ = answers.send((channel, answer)).await;
                });
            }
            SyncRequest::StatusMany { cids } => {
                let statuses = self.source.status_many(cids);
                let answers = self.answers_tx.clone();
                tokio::spawn(async move {
                    let answer = SyncResponse::StatusMany(statuses.await);
                    let _ = answers.send((channel, answer)).await;
                });
            }
            SyncRequest::RecoverAll => {
                let mut recovered = self.source.recover_all();
                recovered.truncate(super::protocol::MAX_RECOVERED_LISTED);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse::Recovered(recovered));
            }
            SyncRequest::Graph => {
                // The IPFS daemon is asked off the loop: a slow daemon
                // delays this answer only, never the Swarm.
                let cluster_peers = self
                    .connected_peers()
                    .iter()
                    .map(PeerId::to_string)
                    .collect();
                let peername = self.config.peername.clone();
                let ipfs = self.source.ipfs_links();
                let answers = self.answers_tx.clone();
                tokio::spawn(async move {
                    let (ipfs_id, ipfs_peers) = ipfs.await;
                    let answer = SyncResponse::Graph(RemoteGraph {
                        peername,
                        cluster_peers,
                        ipfs_id,
                        ipfs_peers,
                    });
                    let _ = answers.send((channel, answer)).await;
                });
            }
            SyncRequest::RepoStat => {
                let stat = self.source.repo_stat();
                let answers = self.answers_tx.clone();
                tokio::spawn(async move {
                    let answer = match stat.await {
                        Ok(stat) => SyncResponse::RepoStat(stat),
                        Err(e) => SyncResponse::Error(e),
                    };
                    let _ = answers.send((channel, answer)).await;
                });
            }
            SyncRequest::RepoGc => {
                let gc = self.source.repo_gc();
                let answers = self.answers_tx.clone();
                tokio::spawn(async move {
                    let answer = SyncResponse::RepoGc(gc.await);
                    let _ = answers.send((channel, answer)).await;
                });
            }
            SyncRequest::Blocks { cids, ancestors } => {
                let source = self.source.clone();
                let answers = self.answers_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let blocks = collect_blocks(source.as_ref(), cids, ancestors);
                    let _ = answers.blocking_send((channel, SyncResponse::Blocks(blocks)));
                });
            }
        }
    }

    fn on_response(&mut self, peer: PeerId, request_id: OutboundRequestId, response: SyncResponse) {
        let bad = |what: &str| NetworkError::BadAnswer {
            peer,
            reason: what.to_string(),
        };
        let Some(pending) = self.pending.remove(&request_id) else {
            return;
        };
        match (pending, response) {
            (Pending::Heads(r), SyncResponse::Heads(heads)) => drop(r.send(Ok(heads))),
            (Pending::Blocks(r), SyncResponse::Blocks(blocks)) => {
                let blocks = blocks.into_iter().map(|(c, b)| (c, b.into_vec())).collect();
                drop(r.send(Ok(blocks)));
            }
            (Pending::Id(r), SyncResponse::Id(id)) => drop(r.send(Ok(id))),
            (Pending::Status(r), SyncResponse::Status(status)) => drop(r.send(Ok(status))),
            (Pending::StatusMany(r), SyncResponse::StatusMany(statuses)) => {
                drop(r.send(Ok(statuses)))
            }
            (Pending::Recovered(r), SyncResponse::Recovered(cids)) => drop(r.send(Ok(cids))),
            (Pending::Graph(r), SyncResponse::Graph(graph)) => drop(r.send(Ok(graph))),
            (Pending::RepoStat(r), SyncResponse::RepoStat(stat)) => drop(r.send(Ok(stat))),
            (Pending::RepoGc(r), SyncResponse::RepoGc(gc)) => drop(r.send(Ok(gc))),
            (Pending::Done(r), SyncResponse::Done) => drop(r.send(Ok(()))),
            (pending, SyncResponse::Error(e)) => pending.fail(bad(&e)),
            (pending, SyncResponse::NotTrusted) => pending.fail(NetworkError::NotTrusted { peer }),
            (pending, _) => pending.fail(bad("unexpected answer")),
        }
    }

    /// Forgets peers gone for longer than the TTL and redials cluster peers
    /// that dropped off while still in the peerset.
    fn maintain(&mut self) {
        let ttl = self.config.peer_ttl;
        let removed_self = self.removed_self;
        let mut redial = Vec::new();
        self.peers.retain(|peer, state| {
            if state.connections > 0 {
                return true;
            }
            let due = !removed_self && state.last_dial.is_none_or(|t| t.elapsed() > REDIAL);
            if due {
                state.last_dial = Some(Instant::now());
                redial.push((*peer, state.addrs.clone()));
            }
            // Stay known (for redials and the peerstore) for a long while;
            // the peerset itself only counts peers seen within the TTL.
            state.last_seen.elapsed() < ttl * 20
        });
        for (peer, addrs) in redial {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }
}

/// Hands an event to the consensus task. Bounded: a slow consensus task
/// slows the network down rather than letting events pile up in memory.
async fn emit(events: &mpsc::Sender<NetEvent>, event: NetEvent) {
    if events.send(event).await.is_err() {
        tracing::debug!("consensus is gone; event dropped");
    }
}

/// The requested blocks this peer has, then their ancestors breadth-first,
/// within the response budget.
fn collect_blocks(source: &dyn StateSource, cids: Vec<Cid>, ancestors: u32) -> Vec<(Cid, ByteBuf)> {
    let budget = (cids.len() + ancestors as usize).min(MAX_BLOCKS_PER_RESPONSE);
    let byte_budget = MAX_RESPONSE_BYTES as usize - 64 * 1024;
    let mut queue: VecDeque<Cid> = cids.into();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut size = 0;
    while let Some(cid) = queue.pop_front() {
        if out.len() >= budget || !seen.insert(cid) {
            continue;
        }
        let Some(bytes) = source.block(&cid) else {
            continue;
        };
        if size + bytes.len() > byte_budget && !out.is_empty() {
            break;
        }
        if ancestors > 0
            && let Ok(links) = pincluster_crdt::links_of(&bytes)
        {
            queue.extend(links);
        }
        size += bytes.len();
        out.push((cid, ByteBuf::from(bytes)));
    }
    out
}
