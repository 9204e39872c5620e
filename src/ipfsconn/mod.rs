//! The IPFS daemon beside the peer (ipfs-cluster's `ipfsconn/ipfshttp`).
//!
//! Components talk to the daemon through [`IpfsConnector`], so tests can put
//! a fake in its place; [`KuboConnector`] is the real thing, a client of the
//! Kubo RPC API (`POST /api/v0/<cmd>`), tested against real Kubo 0.43.1
//! daemons. It also copes with js-ipfs, whose replies differ from Kubo's
//! (numbers as strings, base58 CIDv1, no `pin/update`, no pin progress).
//!
//! Every call is bounded: `request_timeout` for plain calls and for a whole
//! `pin/ls` listing, an idle watchdog of `pin_timeout` on `pin/add`,
//! `unpin_timeout` on `pin/rm`, `repogc_timeout` on `repo/gc`. Streamed
//! replies are decoded line by line and never held whole.
//!
//! [`EmbeddedConnector`] is the other implementation: the peer's own node
//! (`crate::ipfs`), called in-process. [`Connector`] is the choice the
//! peer holds, so everything above works with either.

mod embedded;
mod kubo;
mod wire;

use std::future::Future;
use std::time::Duration;

use cid::Cid;
use futures::Stream;
use libp2p::{Multiaddr, PeerId};

pub use crate::ipfs::fetch::{Fetched, PinProgress};
pub use crate::types::PinMode;
pub use embedded::{Connector, EmbeddedConnector};
pub use kubo::{AddOutput, AddedLine, KuboConnector};

/// `scheme://host:port` of the IPFS daemon's API at `node`: an IP or DNS
/// host, a TCP port, then optionally `/http` or `/https`. `https` (the
/// proxy's `node_https`) makes a bare address https. `dns4` and `dns6`
/// both resolve through the system resolver: the family restriction is not
/// enforced. `None` for what HTTP cannot reach.
pub fn node_origin(node: &Multiaddr, https: bool) -> Option<String> {
    use libp2p::multiaddr::Protocol;
    let (host_port, mut parts) = crate::addr::host_port(node)?;
    let scheme = match (parts.next(), parts.next()) {
        (None, _) | (Some(Protocol::Http), None) if !https => "http",
        (None, _) | (Some(Protocol::Https), None) => "https",
        _ => return None,
    };
    Some(format!("{scheme}://{host_port}"))
}
pub use wire::BlockFormat;
pub(crate) use wire::decode_replies;

/// The daemon's identity, from `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfsId {
    pub id: PeerId,
    /// The addresses it announces; those that do not parse are left out.
    pub addresses: Vec<Multiaddr>,
}

/// Repository usage, from `repo/stat?size-only=true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepoStat {
    /// Bytes used.
    pub repo_size: u64,
    /// The configured limit (`Datastore.StorageMax`); js-ipfs reports
    /// 2^53 - 1 when none is set.
    pub storage_max: u64,
}

/// What a `repo/gc` run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepoGc {
    /// Blocks removed, in the order the daemon reported them.
    pub removed: Vec<Cid>,
    /// Errors the daemon streamed instead of keys (`stream-errors=true`).
    pub errors: Vec<String>,
}

/// Where the daemon is and how long each kind of call may take. The caller
/// maps it from the `ipfs_connector.ipfshttp` config section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfsConnConfig {
    /// The RPC API: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/http]`.
    pub node: Multiaddr,
    /// Plain calls, and a whole `pin/ls` listing.
    pub request_timeout: Duration,
    /// How long `pin/add` may go without progress.
    pub pin_timeout: Duration,
    /// `pin/rm`.
    pub unpin_timeout: Duration,
    /// `repo/gc`.
    pub repogc_timeout: Duration,
}

impl IpfsConnConfig {
    /// The reference's defaults for everything but the address.
    pub fn with_defaults(node: Multiaddr) -> Self {
        IpfsConnConfig {
            node,
            request_timeout: Duration::from_secs(5 * 60),
            pin_timeout: Duration::from_secs(2 * 60),
            unpin_timeout: Duration::from_secs(3 * 60 * 60),
            repogc_timeout: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Why a call to the daemon failed. `op` is the RPC command (`pin/add`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpfsError {
    /// No HTTP exchange happened, or the connection broke mid-reply.
    #[error("IPFS daemon unreachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The call (or, for `pin/add`, progress) took longer than allowed.
    #[error("{op}: no answer from the IPFS daemon after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// The daemon answered with an error: its `Message`, or the start of
    /// the body when that is not Kubo's JSON error shape.
    #[error("{op}: IPFS daemon error (HTTP {status}): {message}")]
    Daemon {
        op: &'static str,
        status: u16,
        message: String,
    },
    /// The reply did not have the expected shape.
    #[error("{op}: unexpected reply from the IPFS daemon: {detail}")]
    Decode { op: &'static str, detail: String },
    /// The daemon does not implement this command (js-ipfs: `pin/update`).
    #[error("{op}: not supported by this IPFS daemon")]
    Unsupported { op: &'static str },
    /// The multicodec or multihash code has no name the RPC API accepts.
    #[error("block/put: no known name for {table} code {code:#x}")]
    UnknownCode { table: &'static str, code: u64 },
    /// `node_multiaddress` is not a TCP address we can reach over HTTP.
    #[error("unsupported IPFS node address {0}: expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>")]
    BadAddress(Multiaddr),
}

/// The IPFS daemon as the rest of the peer sees it. Implementations must be
/// cheap to share: callers hold one per peer and call it from many tasks.
pub trait IpfsConnector: Send + Sync + 'static {
    /// The daemon's peer id and addresses (`id`).
    fn id(&self) -> impl Future<Output = Result<IpfsId, IpfsError>> + Send;

    /// The daemon's version string (`version`).
    fn version(&self) -> impl Future<Output = Result<String, IpfsError>> + Send;

    /// Pins `cid`; already pinned with this mode is success. Fails with
    /// [`IpfsError::Timeout`] once the daemon has made no progress for
    /// `pin_timeout`.
    fn pin(&self, cid: &Cid, mode: PinMode) -> impl Future<Output = Result<(), IpfsError>> + Send {
        async move { self.pin_counting(cid, mode, &PinProgress::default()).await }
    }

    /// [`IpfsConnector::pin`], counting what the daemon fetched in
    /// `progress` as it goes (the pin tracker shows it in the status):
    /// blocks and bytes for the embedded node, blocks only for Kubo.
    fn pin_counting(
        &self,
        cid: &Cid,
        mode: PinMode,
        progress: &PinProgress,
    ) -> impl Future<Output = Result<(), IpfsError>> + Send;

    /// Removes the pin on `cid`, whatever its mode; not pinned is success.
    fn unpin(&self, cid: &Cid) -> impl Future<Output = Result<(), IpfsError>> + Send;

    /// Every recursive then every direct pin, streamed as the daemon sends
    /// them. An error ends the stream.
    fn pin_ls(&self) -> impl Stream<Item = Result<(Cid, PinMode), IpfsError>> + Send;

    /// How `cid` is pinned; `None` when it is not, or only indirectly.
    fn pin_ls_cid(
        &self,
        cid: &Cid,
    ) -> impl Future<Output = Result<Option<PinMode>, IpfsError>> + Send;

    /// Pins `to` recursively, reusing what `from` already fetched, and keeps
    /// `from` pinned.
    fn pin_update(
        &self,
        from: &Cid,
        to: &Cid,
    ) -> impl Future<Output = Result<(), IpfsError>> + Send;

    /// Repository size and limit.
    fn repo_stat(&self) -> impl Future<Output = Result<RepoStat, IpfsError>> + Send;

    /// Runs garbage collection. The removed keys are all held, as in the
    /// reference: the cluster reports them per peer.
    fn repo_gc(&self) -> impl Future<Output = Result<RepoGc, IpfsError>> + Send;

    /// Stores one block, unpinned, and returns its CID as the daemon made it.
    fn block_put(
        &self,
        data: Vec<u8>,
        format: BlockFormat,
    ) -> impl Future<Output = Result<Cid, IpfsError>> + Send;

    /// The peers the daemon is connected to.
    fn swarm_peers(&self) -> impl Future<Output = Result<Vec<PeerId>, IpfsError>> + Send;

    /// Asks the daemon to connect to `addr`.
    fn swarm_connect(&self, addr: &Multiaddr)
    -> impl Future<Output = Result<(), IpfsError>> + Send;

    /// The CID an `/ipfs/...` or `/ipns/...` path (or a bare CID) points to.
    fn resolve(&self, path: &str) -> impl Future<Output = Result<Cid, IpfsError>> + Send;
}
