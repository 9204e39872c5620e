//! The peer-to-peer protocols: the sync protocol (heads and blocks, what
//! replicas need to converge) and the cluster RPC (what API calls ask of
//! every peer), two request-response protocols whose messages are
//! versioned DAG-CBOR, and the gossip message that announces heads. Both are pincluster's own (the reference speaks go-libp2p-gorpc
//! with msgpack; mixed clusters are not a goal).
//!
//! Every read is bounded before decoding, so a peer cannot make us
//! allocate more than [`MAX_RESPONSE_BYTES`].

use std::io;
use std::marker::PhantomData;

use chrono::{DateTime, FixedOffset};
use cid::Cid;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::status::TrackerStatus;

/// Version of the messages below.
pub const WIRE_VERSION: u64 = 1;
/// Largest request we read.
pub const MAX_REQUEST_BYTES: u64 = 256 * 1024;
/// Largest response we read (and the budget of a block batch we send).
pub const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;
/// Most CIDs in one block request.
pub const MAX_CIDS_PER_REQUEST: usize = 256;
/// Most blocks in one response, ancestors included.
pub const MAX_BLOCKS_PER_RESPONSE: usize = 1024;
/// CIDs listed in a recover-all answer: about 40 bytes each, this keeps the
/// answer far below [`MAX_RESPONSE_BYTES`]. A peer with more failures
/// re-queues them all and lists the first ones.
pub const MAX_RECOVERED_LISTED: usize = 100_000;

/// A request of the sync protocol: what a replica needs from another to
/// catch up (heads and the blocks behind them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// "What are your heads?" (sent on connect, so a joiner syncs at once).
    Heads,
    /// "Send me these blocks, and up to `ancestors` of their ancestors
    /// (newest first)": one round trip walks a deep chain many levels.
    Blocks { cids: Vec<Cid>, ancestors: u32 },
    /// "Send me the signed snapshot manifest you serve" (a joiner's first
    /// question; the chunks then come as [`SyncRequest::Blocks`]).
    Snapshot,
}

/// The answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The responder's heads.
    Heads(Vec<Cid>),
    /// The blocks it has among those asked for, then ancestors.
    Blocks(Vec<(Cid, ByteBuf)>),
    /// The manifest the responder serves, if any.
    Snapshot(Option<ByteBuf>),
}

/// A cluster RPC: what one peer asks another on behalf of an API call
/// that spans the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcRequest {
    /// "Who are you?" for `GET /peers`.
    Id,
    /// "What is the status of this pin on you?" (`recover`: re-queue it
    /// first if it failed).
    Status { cid: Cid, recover: bool },
    /// "What are the statuses of these pins on you?" (at most
    /// [`MAX_CIDS_PER_REQUEST`]), answered in the same order.
    StatusMany { cids: Vec<Cid> },
    /// "Re-queue every pin that failed on you, and say which."
    RecoverAll,
    /// "Which cluster peers are you connected to, and which peers does your
    /// IPFS daemon see?" for `GET /health/graph`.
    Graph,
    /// "How big is your IPFS repository?" (the proxy's cluster-wide
    /// `repo/stat`).
    RepoStat,
    /// "Run `repo/gc` on your IPFS daemon and tell what it removed" (the
    /// proxy's `repo/gc` and `POST /ipfs/gc`).
    RepoGc,
    /// "Take `peer` out of the peerset (`removed`), or back in", sent to
    /// every peer by the one that served `DELETE /peers` or `POST /peers`
    /// (the lasting change is the peerset record in the CRDT; this makes it
    /// immediate and tells the writer whether it is trusted), and to `peer`
    /// itself so that it knows. Heeded from trusted peers only.
    SetRemoved {
        #[serde(with = "crate::types::display_from_str")]
        peer: PeerId,
        removed: bool,
    },
}

/// The answer to an [`RpcRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcResponse {
    /// The responder's identity as `GET /id` shows it.
    Id(RemoteId),
    /// The responder's status of one pin.
    Status(PeerPinStatus),
    /// The responder's statuses of several pins, in the order asked.
    StatusMany(Vec<PeerPinStatus>),
    /// The pins the responder re-queued (at most [`MAX_RECOVERED_LISTED`]).
    Recovered(Vec<Cid>),
    /// The responder's connections, for the health graph.
    Graph(RemoteGraph),
    /// The responder's IPFS repository usage.
    RepoStat(RemoteRepoStat),
    /// What `repo/gc` did on the responder's IPFS daemon.
    RepoGc(RemoteRepoGc),
    /// Done, nothing to report.
    Done,
    /// The request could not be served.
    Error(String),
    /// The asker is not trusted to ask this.
    NotTrusted,
}

/// One peer's IPFS repository usage (`repo/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RemoteRepoStat {
    /// Bytes used.
    pub repo_size: u64,
    /// The configured limit, in bytes.
    pub storage_max: u64,
    /// Blocks stored.
    pub num_objects: u64,
}

/// One peer's garbage collection: the keys its IPFS daemon removed, the
/// errors it streamed, or why it could not run at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRepoGc {
    /// The peer's name.
    pub peername: String,
    /// Removed blocks, in the daemon's order.
    pub removed: Vec<Cid>,
    /// Per-key errors the daemon reported.
    pub errors: Vec<String>,
    /// Set when the collection failed as a whole.
    pub error: String,
}

/// What a peer says about itself; the cluster turns it into an `ID`.
/// Addresses and ids stay text here: what does not parse is left out of
/// the `ID` rather than failing the whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteId {
    /// Its peer id.
    pub id: String,
    /// Its listen addresses, with `/p2p/<id>`.
    pub addresses: Vec<String>,
    /// The cluster peers it sees, itself included.
    pub cluster_peers: Vec<String>,
    /// Its peer name.
    pub peername: String,
    /// Its software version.
    pub version: String,
    /// Its IPFS daemon's id, if it knows it.
    #[serde(default)]
    pub ipfs_id: String,
    /// Its IPFS daemon's swarm addresses (what other peers' daemons dial).
    #[serde(default)]
    pub ipfs_addresses: Vec<String>,
}

/// What a peer says about its connections for the health graph. Ids stay
/// text: the graph draws what peers said, and leaves out what does not
/// parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteGraph {
    /// Its peer name.
    pub peername: String,
    /// The cluster peers it has a connection to, itself excluded.
    pub cluster_peers: Vec<String>,
    /// Its IPFS daemon's id; empty when the daemon did not answer.
    pub ipfs_id: String,
    /// The peers its IPFS daemon is connected to (empty when unknown).
    pub ipfs_peers: Vec<String>,
}

/// One peer's status of one pin, as the cluster RPC carries it (a
/// [`TrackerEntry`](crate::pintracker::TrackerEntry) plus the peer's
/// name); the cluster turns it into a `PinInfoShort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPinStatus {
    /// The peer's name.
    pub peername: String,
    /// The status (by name on the wire; a name this peer does not know
    /// reads as `undefined`).
    pub status: TrackerStatus,
    /// The error of an error status.
    pub error: String,
    /// Attempts of the tracked operation.
    pub attempts: u32,
    /// Whether it is in the priority lane.
    pub priority: bool,
    /// When the status last changed (RFC 3339 on the wire).
    #[serde(with = "crate::types::go_time")]
    pub updated: Option<DateTime<FixedOffset>>,
    /// What a `pinning` pin fetched so far. Absent from older peers'
    /// answers (and ignored by them), so no new wire version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<crate::status::FetchProgress>,
}

/// The gossip message announcing a replica's heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsMessage {
    /// [`WIRE_VERSION`].
    pub v: u64,
    /// Head CIDs.
    pub heads: Vec<Cid>,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u64,
    body: T,
}

/// Encodes a versioned message.
pub fn encode<T: Serialize>(body: &T) -> io::Result<Vec<u8>> {
    serde_ipld_dagcbor::to_vec(&Envelope {
        v: WIRE_VERSION,
        body,
    })
    .map_err(io::Error::other)
}

/// Decodes a versioned message; an unknown version is an error.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> io::Result<T> {
    let env: Envelope<T> = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if env.v != WIRE_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unsupported sync message version {}", env.v),
        ));
    }
    Ok(env.body)
}

/// A message whose size is checked once decoded, beyond the byte limit.
pub trait Bounded {
    /// Whether the message stays within its limits.
    fn within_limits(&self) -> bool {
        true
    }
}

impl Bounded for SyncRequest {
    fn within_limits(&self) -> bool {
        !matches!(self, SyncRequest::Blocks { cids, .. } if cids.len() > MAX_CIDS_PER_REQUEST)
    }
}

impl Bounded for RpcRequest {
    fn within_limits(&self) -> bool {
        !matches!(self, RpcRequest::StatusMany { cids } if cids.len() > MAX_CIDS_PER_REQUEST)
    }
}

impl Bounded for SyncResponse {}
impl Bounded for RpcResponse {}

/// The request-response codec of both protocols: one versioned message per
/// stream, read to the end with a size limit.
pub struct Codec<Req, Res>(PhantomData<fn() -> (Req, Res)>);

impl<Req, Res> Default for Codec<Req, Res> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<Req, Res> Clone for Codec<Req, Res> {
    fn clone(&self) -> Self {
        Codec(PhantomData)
    }
}

impl<Req, Res> std::fmt::Debug for Codec<Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Codec")
    }
}

/// The sync protocol's codec.
pub type SyncCodec = Codec<SyncRequest, SyncResponse>;
/// The cluster RPC's codec.
pub type RpcCodec = Codec<RpcRequest, RpcResponse>;

async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(limit + 1).read_to_end(&mut buf).await?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message over {limit} bytes"),
        ));
    }
    Ok(buf)
}

impl<Req, Res> request_response::Codec for Codec<Req, Res>
where
    Req: Serialize + for<'de> Deserialize<'de> + Bounded + Send + 'static,
    Res: Serialize + for<'de> Deserialize<'de> + Bounded + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Res;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        let request: Req = decode(&read_limited(io, MAX_REQUEST_BYTES).await?)?;
        if !request.within_limits() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many CIDs"));
        }
        Ok(request)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Res>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_limited(io, MAX_RESPONSE_BYTES).await?)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode(&req)?).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Res,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode(&res)?).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_other_versions() {
        let cid = pincluster_crdt::cid_of(b"x");
        for msg in [
            SyncRequest::Heads,
            SyncRequest::Snapshot,
            SyncRequest::Blocks {
                cids: vec![cid],
                ancestors: 7,
            },
        ] {
            assert_eq!(decode::<SyncRequest>(&encode(&msg).unwrap()).unwrap(), msg);
        }
        for msg in [
            RpcRequest::Id,
            RpcRequest::Graph,
            RpcRequest::RepoStat,
            RpcRequest::RepoGc,
            RpcRequest::SetRemoved {
                peer: PeerId::random(),
                removed: true,
            },
        ] {
            assert_eq!(decode::<RpcRequest>(&encode(&msg).unwrap()).unwrap(), msg);
        }
        let status = RpcResponse::Status(PeerPinStatus {
            peername: "p1".into(),
            status: TrackerStatus::Pinned,
            error: String::new(),
            attempts: 1,
            priority: false,
            updated: Some(chrono::Utc::now().fixed_offset()),
            fetched: None,
        });
        let back = decode::<RpcResponse>(&encode(&status).unwrap()).unwrap();
        assert!(
            matches!(back, RpcResponse::Status(s) if s.status == TrackerStatus::Pinned && s.updated.is_some())
        );
        let res = SyncResponse::Blocks(vec![(cid, ByteBuf::from(vec![1, 2]))]);
        assert_eq!(decode::<SyncResponse>(&encode(&res).unwrap()).unwrap(), res);
        let graph = RpcResponse::Graph(RemoteGraph {
            peername: "p1".into(),
            cluster_peers: vec!["12D3KooWA".into()],
            ipfs_id: "12D3KooWB".into(),
            ipfs_peers: vec![],
        });
        assert_eq!(
            decode::<RpcResponse>(&encode(&graph).unwrap()).unwrap(),
            graph
        );
        let gc = RpcResponse::RepoGc(RemoteRepoGc {
            peername: "p".into(),
            removed: vec![cid],
            errors: vec!["e".into()],
            error: String::new(),
        });
        assert_eq!(decode::<RpcResponse>(&encode(&gc).unwrap()).unwrap(), gc);
        for done in [RpcResponse::Done, RpcResponse::NotTrusted] {
            assert_eq!(
                decode::<RpcResponse>(&encode(&done).unwrap()).unwrap(),
                done
            );
        }

        let future = serde_ipld_dagcbor::to_vec(&Envelope {
            v: 2,
            body: SyncRequest::Heads,
        })
        .unwrap();
        assert!(decode::<SyncRequest>(&future).is_err());
        assert!(decode::<SyncRequest>(b"\xff\x00garbage").is_err());
    }
}
