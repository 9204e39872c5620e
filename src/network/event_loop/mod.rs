//! The event loop that owns the Swarm. It serves commands from the
//! [`Network`](super::Network) handle, turns behaviour events into peerset
//! changes, monitor records and [`NetEvent`]s for the consensus task, and
//! hands peers' requests to [`rpc`]. Files: `transport` (the stack under
//! the Swarm), `peerset` (who is in, blocking, redialing), `rpc` (requests
//! and answers of the sync protocol and the cluster RPC); the loop and the
//! behaviour events are here.

mod degree;
mod peerset;
mod rpc;
mod transport;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, gossipsub,
    identify, kad, ping,
};
use tokio::sync::{mpsc, oneshot};

use super::bandwidth::Bandwidth;
use super::protocol::{
    HeadsMessage, RpcCodec, RpcRequest, RpcResponse, SyncCodec, SyncRequest, SyncResponse,
};
use super::{Command, NetEvent, NetworkConfig, NetworkError, RpcHandler, SyncSource, Trust};
use crate::monitor::Monitor;
use peerset::{PeerState, peer_of, with_p2p};
use rpc::{RpcPending, SyncPending};
use transport::{build_transport, protocol};

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossip: gossipsub::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
    rpc: request_response::Behaviour<RpcCodec>,
}

/// How often the loop prunes the peerset and redials lost peers.
const MAINTENANCE: Duration = Duration::from_secs(2);
/// How often Kademlia re-bootstraps (finds peers that joined elsewhere).
const REBOOTSTRAP: Duration = Duration::from_secs(30);
/// Least time between two dials of the same lost peer.
const REDIAL: Duration = Duration::from_secs(10);
/// Shortest wait for a ping's answer: on a loaded machine a healthy peer
/// may take a few seconds, and closing a live connection costs a redial.
const MIN_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The libp2p ping that tells a dead connection from a live one: every half
/// peer TTL (the monitor's ping interval), answered within the TTL. A
/// connection whose peer stopped answering (a silent partition: the kernel
/// drops the packets, no RST, no FIN) would otherwise stay open on both
/// sides until TCP gives up retransmitting, some 15 minutes, and keep the
/// peer from being redialed: after a 120 s partition the peers stayed
/// apart for minutes once it healed (TCP's retransmission backoff by then
/// spaces its tries up to 2 minutes apart).
fn liveness_ping(peer_ttl: Duration) -> ping::Config {
    ping::Config::new()
        .with_interval((peer_ttl / 2).max(Duration::from_secs(1)))
        .with_timeout(peer_ttl.max(MIN_PING_TIMEOUT))
}

// gossipsub, sized for a cluster of 1,000+ followers where each holds
// about `degree::DEGREE` connections: a mesh a little wider than the
// default (6) so that a message crosses a thousand peers in about four
// hops, and more lazy gossip (IHAVE) to peers outside the mesh so that a
// peer the mesh missed hears of a head at the next heartbeat. Heads and
// metrics messages are a few hundred bytes: 64 KiB is plenty and bounds
// what a peer may make us buffer.
const MESH_N: usize = 8;
const MESH_N_LOW: usize = 6;
const MESH_N_HIGH: usize = 12;
const MESH_OUTBOUND_MIN: usize = 3;
const GOSSIP_LAZY: usize = 8;
const HISTORY_LENGTH: usize = 6;
const HISTORY_GOSSIP: usize = 3;
const MAX_TRANSMIT: usize = 64 * 1024;

/// The hard connection limit: above the connection manager's high water
/// mark (which the trim brings connections back under), so that a new
/// follower is let in, learns other peers and is trimmed after the grace
/// period, rather than refused outright.
fn hard_limit(high_water: u32) -> u32 {
    high_water
        .saturating_mul(2)
        .max(high_water.saturating_add(32))
}

/// The Swarm and everything the loop keeps.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: NetworkConfig,
    trust: Trust,
    source: Arc<dyn SyncSource>,
    handler: Arc<dyn RpcHandler>,
    events: mpsc::Sender<NetEvent>,
    commands: mpsc::Receiver<Command>,
    /// Block walks answered off the loop, on the blocking pool.
    blocks_tx: mpsc::Sender<(ResponseChannel<SyncResponse>, SyncResponse)>,
    blocks_rx: mpsc::Receiver<(ResponseChannel<SyncResponse>, SyncResponse)>,
    /// RPC answers computed off the loop (they may wait on the IPFS daemon).
    answers_tx: mpsc::Sender<(ResponseChannel<RpcResponse>, RpcResponse)>,
    answers_rx: mpsc::Receiver<(ResponseChannel<RpcResponse>, RpcResponse)>,
    topic: gossipsub::IdentTopic,
    metrics_topic: gossipsub::IdentTopic,
    monitor: Monitor,
    sync_protocol: StreamProtocol,
    /// Requests in flight, by protocol: each behaviour numbers its own.
    pending_sync: HashMap<OutboundRequestId, SyncPending>,
    pending_rpc: HashMap<OutboundRequestId, RpcPending>,
    peers: HashMap<PeerId, PeerState>,
    listeners: HashSet<libp2p::core::transport::ListenerId>,
    listening: HashSet<libp2p::core::transport::ListenerId>,
    waiting_for_listen: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    bootstrapped: bool,
    /// This peer was removed from the cluster: it stops redialing lost
    /// peers (they would refuse it) until it is taken back in.
    removed_self: bool,
    /// Each open connection: to whom and since when (for the trim's grace
    /// period); bounded by the connection limit.
    opened: HashMap<libp2p::swarm::ConnectionId, (PeerId, Instant)>,
    last_bootstrap_dial: Instant,
    /// When a DHT query last started from a new connection.
    last_discovery: Instant,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("local", self.swarm.local_peer_id())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    pub(super) fn new(
        config: NetworkConfig,
        source: Arc<dyn SyncSource>,
        handler: Arc<dyn RpcHandler>,
        events: mpsc::Sender<NetEvent>,
        monitor: Monitor,
        commands: mpsc::Receiver<Command>,
        bandwidth: Bandwidth,
    ) -> Result<Self, NetworkError> {
        let tag = config.cluster_tag();
        let sync_protocol = protocol(format!("/pincluster/{tag}/sync/1.0.0"))?;
        let rpc_protocol = protocol(format!("/pincluster/{tag}/rpc/1.0.0"))?;
        let kad_protocol = protocol(format!("/pincluster/{tag}/kad/1.0.0"))?;
        let topic = gossipsub::IdentTopic::new(format!("pincluster/{tag}/heads/1"));
        let metrics_topic = gossipsub::IdentTopic::new(format!("pincluster/{tag}/metrics/1"));
        let transport = build_transport(&config.keypair, config.secret, bandwidth)?;
        let local = config.keypair.public().to_peer_id();

        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(config.heartbeat)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .mesh_n(MESH_N)
            .mesh_n_low(MESH_N_LOW)
            .mesh_n_high(MESH_N_HIGH)
            .mesh_outbound_min(MESH_OUTBOUND_MIN)
            .gossip_lazy(GOSSIP_LAZY)
            .history_length(HISTORY_LENGTH)
            .history_gossip(HISTORY_GOSSIP)
            // A trusted peer floods its heads to every peer it holds (a
            // number the trim bounds): the first hop is the slow one for
            // followers. A follower publishes only its own metrics, which
            // its mesh carries well enough.
            .flood_publish(!config.follower)
            .max_transmit_size(MAX_TRANSMIT)
            .build()
            .map_err(|e| NetworkError::Build(e.to_string()))?;
        let gossip = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(config.keypair.clone()),
            gossip_config,
        )
        .map_err(|e| NetworkError::Build(e.to_string()))?;

        let mut kad_config = kad::Config::new(kad_protocol);
        kad_config.set_query_timeout(Duration::from_secs(30));
        // DHT queries run from the loop, when `degree::wants_discovery`
        // says: libp2p's own, every five minutes, would dial the followers
        // a trusted peer trimmed (and a follower's, the trusted peers).
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad =
            kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let behaviour = Behaviour {
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(hard_limit(config.high_water)))
                    .with_max_established_per_peer(Some(4)),
            ),
            blocked: allow_block_list::Behaviour::default(),
            identify: identify::Behaviour::new(
                identify::Config::new("/pincluster/1.0.0".into(), config.keypair.public())
                    .with_agent_version(format!("pincluster/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(liveness_ping(config.peer_ttl)),
            kad,
            gossip,
            sync: request_response::Behaviour::with_codec(
                SyncCodec::default(),
                [(sync_protocol.clone(), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(config.request_timeout),
            ),
            rpc: request_response::Behaviour::with_codec(
                RpcCodec::default(),
                [(rpc_protocol, ProtocolSupport::Full)],
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
            crate::addr::check_tcp_port_free(addr).map_err(|e| NetworkError::Listen {
                addr: addr.clone(),
                reason: format!("{e} (another process listens there)"),
            })?;
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
        let (blocks_tx, blocks_rx) = mpsc::channel(64);
        let (answers_tx, answers_rx) = mpsc::channel(64);
        Ok(Self {
            trust: Trust::new(config.trusted.clone(), local),
            swarm,
            config,
            source,
            handler,
            events,
            commands,
            blocks_tx,
            blocks_rx,
            answers_tx,
            answers_rx,
            topic,
            metrics_topic,
            monitor,
            sync_protocol,
            pending_sync: HashMap::new(),
            pending_rpc: HashMap::new(),
            peers: HashMap::new(),
            listeners,
            listening: HashSet::new(),
            waiting_for_listen: Vec::new(),
            bootstrapped: false,
            removed_self,
            opened: HashMap::new(),
            last_bootstrap_dial: Instant::now(),
            last_discovery: Instant::now(),
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
                // The asker may have gone away meanwhile; nothing to do then.
                Some((channel, answer)) = self.blocks_rx.recv() => {
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, answer);
                }
                Some((channel, answer)) = self.answers_rx.recv() => {
                    let _ = self.swarm.behaviour_mut().rpc.send_response(channel, answer);
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                _ = maintenance.tick() => {
                    self.maintain();
                    self.trim();
                    self.rebootstrap_if_alone();
                }
                _ = rebootstrap.tick() => {
                    if self.bootstrapped && self.wants_discovery() {
                        // Fails only when the routing table is empty.
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
        for (_, pending) in self.pending_sync.drain() {
            pending.fail(NetworkError::Closed);
        }
        for (_, pending) in self.pending_rpc.drain() {
            pending.fail(NetworkError::Closed);
        }
        tracing::debug!("network event loop stopped");
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
                let message = HeadsMessage {
                    v: super::protocol::WIRE_VERSION,
                    heads,
                };
                self.publish(self.topic.clone(), &message, "heads");
            }
            Command::PublishMetrics(metrics) => {
                let local = *self.swarm.local_peer_id();
                self.monitor
                    .record(local, metrics.clone(), chrono::Utc::now());
                self.publish(self.metrics_topic.clone(), &metrics, "metrics");
            }
            Command::Heads(peer, reply) => {
                self.sync_request(peer, SyncRequest::Heads, SyncPending::Heads(reply))
            }
            Command::Snapshot(peer, reply) => {
                self.sync_request(peer, SyncRequest::Snapshot, SyncPending::Snapshot(reply))
            }
            Command::Blocks(peer, cids, ancestors, reply) => self.sync_request(
                peer,
                SyncRequest::Blocks { cids, ancestors },
                SyncPending::Blocks(reply),
            ),
            Command::RemoteId(peer, reply) => {
                self.rpc_request(peer, RpcRequest::Id, RpcPending::Id(reply))
            }
            Command::PeerPinStatus(peer, cid, recover, reply) => self.rpc_request(
                peer,
                RpcRequest::Status { cid, recover },
                RpcPending::Status(reply),
            ),
            Command::RemoteStatusMany(peer, cids, reply) => self.rpc_request(
                peer,
                RpcRequest::StatusMany { cids },
                RpcPending::StatusMany(reply),
            ),
            Command::RemoteRecoverAll(peer, reply) => {
                self.rpc_request(peer, RpcRequest::RecoverAll, RpcPending::Recovered(reply))
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
                self.rpc_request(peer, RpcRequest::Graph, RpcPending::Graph(reply))
            }
            Command::Block(peer, blocked, addrs) => self.set_blocked(peer, blocked, addrs),
            Command::SetRemoved(target, peer, removed, reply) => self.rpc_request(
                target,
                RpcRequest::SetRemoved { peer, removed },
                RpcPending::Done(reply),
            ),
            Command::Shutdown(_) => unreachable!("handled by the loop"),
            Command::RepoStat(peer, reply) => {
                self.rpc_request(peer, RpcRequest::RepoStat, RpcPending::RepoStat(reply))
            }
            Command::RepoGc(peer, reply) => {
                self.rpc_request(peer, RpcRequest::RepoGc, RpcPending::RepoGc(reply))
            }
        }
    }

    /// Publishes `message` (`what`, for the log) on `topic`, best effort:
    /// no subscribed peer yet is normal for a lone peer.
    fn publish<T: serde::Serialize>(
        &mut self,
        topic: gossipsub::IdentTopic,
        message: &T,
        what: &str,
    ) {
        let Ok(data) = super::protocol::encode(message) else {
            return;
        };
        if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, data) {
            tracing::debug!(error = %e, "{what} not published");
        }
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
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                self.note_connection(peer_id, connection_id, true);
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections += 1;
                    state.last_seen = Instant::now();
                }
                // A first connection, or a follower still below its degree
                // back on a peer (a trusted peer that trimmed it before its
                // query was through): ask it for peers now, not at the next
                // round of discovery.
                let again = self.config.follower
                    && self.wants_discovery()
                    && self.last_discovery.elapsed() >= degree::DISCOVERY_GAP;
                if !self.bootstrapped || again {
                    self.bootstrapped = true;
                    self.last_discovery = Instant::now();
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.note_connection(peer_id, connection_id, false);
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections = num_established as usize;
                    state.last_seen = Instant::now();
                    state.up &= num_established > 0;
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
            // Reported after two pings in a row went unanswered (libp2p
            // forgives the first): the connection is dead, whatever TCP
            // thinks. Closing it lets `maintain` redial the peer.
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            })) if !matches!(error, ping::Failure::Unsupported) => {
                tracing::info!(%peer, %error, "peer stopped answering pings: connection closed");
                self.swarm.close_connection(connection);
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
                if !self.peers.contains_key(&peer_id) {
                    peerset::make_room(&mut self.peers);
                }
                let mut addrs = info.listen_addrs;
                addrs.truncate(peerset::MAX_ADDRS);
                let state = self.peers.entry(peer_id).or_insert(PeerState {
                    connections,
                    last_seen: Instant::now(),
                    addrs: Vec::new(),
                    last_dial: None,
                    redials: 0,
                    up: false,
                });
                state.addrs = addrs;
                state.redials = 0;
                state.connections = state.connections.max(connections);
                state.last_seen = Instant::now();
                // Not "had a connection before identify": the connection
                // count already includes this one, so a peer that came back
                // would never be announced (nor asked for its heads) again.
                if !std::mem::replace(&mut state.up, true) {
                    tracing::info!(peer = %peer_id, "cluster peer up");
                    emit(&self.events, NetEvent::PeerUp(peer_id)).await;
                }
            }
            // Discovery: a peer we learnt of through the DHT. Dial it so it
            // joins the peerset: every trusted peer (they keep a full mesh),
            // others only while this peer has fewer than its degree
            // (followers spread over each other, see `degree`).
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) if peer != *self.swarm.local_peer_id()
                && !self.swarm.is_connected(&peer)
                && self.should_dial(&peer) =>
            {
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
                if let (Ok(msg), Some(author), true) = (decoded, author, trusted) {
                    if let Some(state) = self.peers.get_mut(&author) {
                        state.last_seen = Instant::now();
                    }
                    // Blocks are asked of the author when connected to it,
                    // else of the peer that relayed the heads (a follower
                    // the trusted peers trimmed does not dial them back).
                    let from = if self.swarm.is_connected(&author) {
                        author
                    } else {
                        propagation_source
                    };
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
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_sync_request(request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_sync_response(peer, request_id, response),
                }
            }
            BehaviourEvent::Rpc(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    // Garbage collection deletes data: only trusted peers
                    // may trigger it on our daemon.
                    request_response::Message::Request {
                        request: RpcRequest::RepoGc,
                        channel,
                        ..
                    } if !self.trust.is_trusted(&peer) => {
                        let answer = RpcResponse::Error("not trusted to run repo/gc".into());
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .rpc
                            .send_response(channel, answer);
                    }
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_rpc_request(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_rpc_response(peer, request_id, response),
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                if let Some(pending) = self.pending_sync.remove(&request_id) {
                    pending.fail(NetworkError::Request {
                        peer,
                        reason: error.to_string(),
                    });
                }
            }
            BehaviourEvent::Rpc(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                if let Some(pending) = self.pending_rpc.remove(&request_id) {
                    pending.fail(NetworkError::Request {
                        peer,
                        reason: error.to_string(),
                    });
                }
            }
            _ => {}
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
