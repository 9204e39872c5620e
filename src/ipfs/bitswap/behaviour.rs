//! The Bitswap streams inside the Swarm: a small [`NetworkBehaviour`] that
//! only negotiates substreams. Inbound streams (any of 1.2.0, 1.1.0,
//! 1.0.0) go straight to a bounded channel read by the Bitswap tasks;
//! outbound streams are opened on request on an existing connection,
//! offering the versions newest first so multistream-select falls back to
//! what the remote speaks. Everything else (wantlists, ledgers, blocks)
//! runs outside the Swarm's task, so a slow block read never stalls the
//! Swarm.
//!
//! Unlike `libp2p-stream`, whose inbound channel holds one stream and drops
//! the next when the reader lags, the channel here has room for a burst
//! (Kubo opens one stream per message it sends).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    FromSwarm, NetworkBehaviour, NotifyHandler, StreamUpgradeError, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, behaviour::ConnectionEstablished,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use super::message::Version;

/// An inbound stream: who opened it and which version it speaks.
pub type Inbound = (PeerId, Stream, Version);

/// Where an opened outbound stream (or why not) is sent.
type OpenReply = oneshot::Sender<Result<(Stream, Version), OpenError>>;

/// A request to open a stream to a connected peer.
#[derive(Debug)]
struct OpenRequest {
    peer: PeerId,
    reply: OpenReply,
}

/// The inbound Bitswap streams of a [`Behaviour`], in arrival order.
#[derive(Debug)]
pub struct InboundStreams(mpsc::Receiver<Inbound>);

impl InboundStreams {
    /// The next stream a peer opened; `None` once the Swarm is gone.
    pub async fn next(&mut self) -> Option<Inbound> {
        self.0.recv().await
    }
}

/// Opens outbound Bitswap streams on a [`Behaviour`]'s connections.
#[derive(Debug, Clone)]
pub struct StreamOpener(mpsc::Sender<OpenRequest>);

impl StreamOpener {
    /// A new stream to a connected `peer`, in the newest version it
    /// speaks.
    pub async fn open(&self, peer: PeerId) -> Result<(Stream, Version), OpenError> {
        let (reply, rx) = oneshot::channel();
        self.0
            .send(OpenRequest { peer, reply })
            .await
            .map_err(|_| OpenError::Io("the swarm is gone".into()))?;
        rx.await
            .map_err(|_| OpenError::Io("the connection closed".into()))?
    }
}

/// Why an outbound stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No connection to the peer.
    #[error("not connected")]
    NotConnected,
    /// The peer speaks no Bitswap version we speak.
    #[error("the peer does not speak Bitswap")]
    Unsupported,
    /// Negotiation failed or timed out.
    #[error("opening the stream failed: {0}")]
    Io(String),
}

/// How many inbound streams may wait for a reader task.
const INBOUND_QUEUE: usize = 1024;

/// The behaviour; see the module doc.
pub struct Behaviour {
    protocols: Vec<StreamProtocol>,
    inbound: mpsc::Sender<Inbound>,
    open: mpsc::Receiver<OpenRequest>,
    connections: HashMap<PeerId, Vec<ConnectionId>>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("bitswap::Behaviour")
            .field("peers", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// The behaviour, its inbound streams and its stream opener. The
    /// embedded node hands both to [`Bitswap`](super::Bitswap); a tool or
    /// a test may speak the protocol raw with them.
    pub fn new() -> (Behaviour, InboundStreams, StreamOpener) {
        let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (open_tx, open) = mpsc::channel(256);
        let protocols = Version::PROTOCOLS
            .iter()
            .map(|p| StreamProtocol::new(p))
            .collect();
        (
            Behaviour {
                protocols,
                inbound,
                open,
                connections: HashMap::new(),
            },
            InboundStreams(inbound_rx),
            StreamOpener(open_tx),
        )
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            remote: peer,
            protocols: self.protocols.clone(),
            inbound: self.inbound.clone(),
            opening: VecDeque::new(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => self
                .connections
                .entry(peer_id)
                .or_default()
                .push(connection_id),
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|c| *c != connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        while let Poll::Ready(Some(req)) = self.open.poll_recv(cx) {
            match self.connections.get(&req.peer).and_then(|c| c.last()) {
                Some(conn) => {
                    return Poll::Ready(ToSwarm::NotifyHandler {
                        peer_id: req.peer,
                        handler: NotifyHandler::One(*conn),
                        event: req.reply,
                    });
                }
                None => {
                    let _ = req.reply.send(Err(OpenError::NotConnected));
                }
            }
        }
        Poll::Pending
    }
}

/// One connection's side of the behaviour.
pub struct Handler {
    remote: PeerId,
    protocols: Vec<StreamProtocol>,
    inbound: mpsc::Sender<Inbound>,
    /// Open requests not yet handed to the connection.
    opening: VecDeque<OpenReply>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("bitswap::Handler")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = OpenReply;
    type ToBehaviour = Infallible;
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = OpenReply;

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade, ()> {
        SubstreamProtocol::new(Upgrade(self.protocols.clone()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, OpenReply, Infallible>> {
        match self.opening.pop_front() {
            Some(reply) => Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(Upgrade(self.protocols.clone()), reply),
            }),
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, reply: OpenReply) {
        self.opening.push_back(reply);
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<'_, Upgrade, Upgrade, (), OpenReply>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, version),
                ..
            }) => {
                // A full queue drops the stream: the peer's wants come
                // again with its next message or rebroadcast.
                let _ = self
                    .inbound
                    .try_send((self.remote, stream, version))
                    .map_err(|_| {
                        tracing::debug!(peer = %self.remote, "bitswap inbound queue full, stream dropped")
                    });
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, version),
                info: reply,
            }) => {
                let _ = reply.send(Ok((stream, version)));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: reply, error }) => {
                let error = match error {
                    StreamUpgradeError::NegotiationFailed => OpenError::Unsupported,
                    StreamUpgradeError::Timeout => OpenError::Io("negotiation timed out".into()),
                    StreamUpgradeError::Io(e) => OpenError::Io(e.to_string()),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = reply.send(Err(error));
            }
            _ => {}
        }
    }
}

/// Negotiates any Bitswap version; the output says which one.
#[derive(Debug, Clone)]
pub struct Upgrade(Vec<StreamProtocol>);

impl UpgradeInfo for Upgrade {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

fn version_of(protocol: &StreamProtocol) -> Version {
    // Only names from `Version::PROTOCOLS` are ever offered or accepted.
    Version::from_protocol(protocol.as_ref()).unwrap_or(Version::V100)
}

impl InboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, Version);
    type Error = Infallible;
    type Future = Ready<Result<(Stream, Version), Infallible>>;

    fn upgrade_inbound(self, stream: Stream, info: StreamProtocol) -> Self::Future {
        ready(Ok((stream, version_of(&info))))
    }
}

impl OutboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, Version);
    type Error = Infallible;
    type Future = Ready<Result<(Stream, Version), Infallible>>;

    fn upgrade_outbound(self, stream: Stream, info: StreamProtocol) -> Self::Future {
        ready(Ok((stream, version_of(&info))))
    }
}
