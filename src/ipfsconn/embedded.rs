//! The embedded node as an [`IpfsConnector`] ([`EmbeddedConnector`]), and
//! [`Connector`], the choice between it and Kubo that the peer holds: the
//! tracker, the informers and the cluster work the same over either.
//!
//! Calls go straight to the node in-process. Pins walk the DAG in the
//! local store and fetch missing blocks through the node's fetcher
//! (Bitswap over the node's public swarm), counting what arrives: a pin
//! fails once nothing arrived for `pin_timeout`, and its progress is
//! logged and shown in the tracker's status. `id`, `swarm/peers` and
//! `swarm/connect` are the swarm's, so the cluster connects peers'
//! embedded nodes to each other as it does Kubo daemons; pinned roots are
//! provided in the DHT.

use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use futures::{Stream, StreamExt as _};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use super::{
    BlockFormat, IpfsConnector, IpfsError, IpfsId, KuboConnector, PinMode, PinProgress, RepoGc,
    RepoStat,
};
use crate::ipfs::dag::cid_for;
use crate::ipfs::node::Node;
use crate::ipfs::swarm::IpfsSwarm;

/// Pins listed per page of `pin_ls`.
const PAGE: usize = 1024;
/// How often a running pin's progress is looked at (for its no-progress
/// timeout)...
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// ...and how often it is logged while blocks arrive.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The embedded node behind the connector trait. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedConnector {
    node: Node,
    pin_timeout: Duration,
    /// A client of the node's own RPC server, for the streamed uploads
    /// (`add`, `dag/import`) the REST API makes: one multipart parser and
    /// importer serves them and the proxy alike.
    rpc: KuboConnector,
    /// The node's public swarm (the peer stops it at shutdown); boxed
    /// in an `Arc` to keep [`Connector`]'s variants close in size.
    swarm: Arc<IpfsSwarm>,
}

impl EmbeddedConnector {
    /// The connector over `node`; `rpc` is a client of the node's RPC
    /// server, `swarm` the node's public swarm.
    pub fn new(
        node: Node,
        pin_timeout: Duration,
        rpc: KuboConnector,
        swarm: IpfsSwarm,
    ) -> EmbeddedConnector {
        EmbeddedConnector {
            node,
            pin_timeout,
            rpc,
            swarm: Arc::new(swarm),
        }
    }

    /// Announces `cid` in the DHT in the background: a pin succeeds
    /// whether or not the DHT has anyone to store the record.
    fn provide(&self, cid: &Cid) {
        let swarm = Arc::clone(&self.swarm);
        let cid = *cid;
        tokio::spawn(async move {
            if let Err(e) = swarm.provide(cid).await {
                tracing::debug!(%cid, error = %e, "not provided in the DHT");
            }
        });
    }

    pub fn node(&self) -> &Node {
        &self.node
    }
}

fn failed(op: &'static str, e: impl std::fmt::Display) -> IpfsError {
    IpfsError::Daemon {
        op,
        status: 500,
        message: e.to_string(),
    }
}

impl IpfsConnector for EmbeddedConnector {
    async fn id(&self) -> Result<IpfsId, IpfsError> {
        let addresses = self
            .swarm
            .listen_addrs()
            .await
            .map_err(|e| failed("id", e))?;
        Ok(IpfsId {
            id: self.swarm.local_peer_id(),
            addresses,
        })
    }

    async fn version(&self) -> Result<String, IpfsError> {
        Ok(crate::ipfs::rpc::version())
    }

    /// As with Kubo (and in the reference), `pin_timeout` bounds the time
    /// without progress, not the whole pin: a large DAG that keeps arriving
    /// takes as long as it takes, a stuck one fails. Progress is logged
    /// every [`LOG_EVERY`] while blocks arrive.
    async fn pin_counting(
        &self,
        cid: &Cid,
        mode: PinMode,
        progress: &PinProgress,
    ) -> Result<(), IpfsError> {
        let started = Instant::now();
        let idle = self.pin_timeout;
        let pin = self.node.pin_counting(cid, mode, progress);
        tokio::pin!(pin);
        let mut check = tokio::time::interval(idle.clamp(Duration::from_millis(10), CHECK_EVERY));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last, mut moved, mut logged) = (progress.get(), started, started);
        let result = loop {
            tokio::select! {
                result = &mut pin => break result.map_err(|e| failed("pin/add", e)),
                _ = check.tick() => {
                    let now = Instant::now();
                    let fetched = progress.get();
                    if fetched != last {
                        (last, moved) = (fetched, now);
                    } else if now.duration_since(moved) >= idle {
                        break Err(IpfsError::Timeout { op: "pin/add", after: idle });
                    }
                    if fetched.blocks > 0 && now.duration_since(logged) >= LOG_EVERY {
                        logged = now;
                        let (blocks, bytes) = (fetched.blocks, fetched.bytes);
                        tracing::info!(%cid, blocks, bytes, "pin: fetching");
                    }
                }
            }
        };
        let fetched = progress.get();
        if fetched.blocks > 0 {
            let (blocks, bytes) = (fetched.blocks, fetched.bytes);
            let secs = started.elapsed().as_secs_f64();
            let ok = result.is_ok();
            tracing::info!(%cid, blocks, bytes, secs, ok, "pin: fetch ended");
        }
        if result.is_ok() {
            self.provide(cid);
        }
        result
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), IpfsError> {
        self.node
            .store()
            .unpin(cid)
            .map(|_| ())
            .map_err(|e| failed("pin/rm", e))
    }

    fn pin_ls(&self) -> impl Stream<Item = Result<(Cid, PinMode), IpfsError>> + Send {
        let store = self.node.store().clone();
        // Recursive pins first, then direct ones, as Kubo lists them.
        let pass = |mode: PinMode| {
            let store = store.clone();
            futures::stream::try_unfold((None::<Cid>, false), move |(after, done)| {
                let store = store.clone();
                async move {
                    if done {
                        return Ok(None);
                    }
                    let page = store
                        .pins_page(after.as_ref(), PAGE)
                        .map_err(|e| failed("pin/ls", e))?;
                    let last = page.last().map(|(c, _)| *c);
                    let items: Vec<_> = page.into_iter().filter(|(_, m)| *m == mode).collect();
                    Ok(Some((items, (last, last.is_none()))))
                }
            })
            .map(|r: Result<Vec<(Cid, PinMode)>, IpfsError>| match r {
                Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).left_stream(),
                Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten()
        };
        pass(PinMode::Recursive).chain(pass(PinMode::Direct))
    }

    async fn pin_ls_cid(&self, cid: &Cid) -> Result<Option<PinMode>, IpfsError> {
        self.node
            .store()
            .pin_of(cid)
            .map_err(|e| failed("pin/ls", e))
    }

    async fn pin_update(&self, from: &Cid, to: &Cid) -> Result<(), IpfsError> {
        let _ = from;
        self.pin(to, PinMode::Recursive).await
    }

    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        let s = self.node.store().stat();
        Ok(RepoStat {
            repo_size: s.repo_size,
            storage_max: s.storage_max,
        })
    }

    async fn repo_gc(&self) -> Result<RepoGc, IpfsError> {
        let removed = self
            .node
            .blocking(|s| s.gc())
            .await
            .map_err(|e| failed("repo/gc", e))?
            .map_err(|e| failed("repo/gc", e))?;
        Ok(RepoGc {
            removed,
            errors: Vec::new(),
        })
    }

    async fn block_put(&self, data: Vec<u8>, format: BlockFormat) -> Result<Cid, IpfsError> {
        if format.mh_code != crate::ipfs::dag::SHA2_256 {
            return Err(IpfsError::UnknownCode {
                table: "multihash",
                code: format.mh_code,
            });
        }
        let cid = cid_for(format.codec, &data, format.version == cid::Version::V0);
        self.node
            .store()
            .put(&cid, &data)
            .map_err(|e| failed("block/put", e))?;
        Ok(cid)
    }

    async fn swarm_peers(&self) -> Result<Vec<PeerId>, IpfsError> {
        let peers = self
            .swarm
            .peers()
            .await
            .map_err(|e| failed("swarm/peers", e))?;
        Ok(peers.into_iter().map(|(p, _)| p).collect())
    }

    async fn swarm_connect(&self, addr: &Multiaddr) -> Result<(), IpfsError> {
        self.swarm
            .connect(addr.clone())
            .await
            .map(|_| ())
            .map_err(|e| failed("swarm/connect", e))
    }

    async fn resolve(&self, path: &str) -> Result<Cid, IpfsError> {
        let (root, sub) = crate::ipfs::rpc::parse_path(path).map_err(|e| IpfsError::Daemon {
            op: "resolve",
            status: 400,
            message: e,
        })?;
        if sub.is_empty() {
            return Ok(root);
        }
        self.node
            .blocking(move |s| crate::ipfs::unixfs::exporter::resolve(s, &root, &sub))
            .await
            .map_err(|e| failed("resolve", e))?
            .map_err(|e| failed("resolve", e))
    }
}

/// The IPFS node the peer uses: a Kubo daemon or its own.
#[derive(Debug, Clone)]
pub enum Connector {
    Kubo(KuboConnector),
    Embedded(EmbeddedConnector),
}

impl Connector {
    /// The RPC client for streamed uploads: Kubo's, or the embedded
    /// node's own server.
    fn uploads(&self) -> &KuboConnector {
        match self {
            Connector::Kubo(c) => c,
            Connector::Embedded(e) => &e.rpc,
        }
    }

    /// `add`, streamed: see [`KuboConnector::add`].
    pub async fn add(
        &self,
        query: &[(&str, String)],
        content_type: String,
        body: reqwest::Body,
    ) -> Result<super::AddOutput, IpfsError> {
        self.uploads().add(query, content_type, body).await
    }

    /// `dag/import` of a CAR stream: see [`KuboConnector::dag_import`].
    pub async fn dag_import<S, E>(&self, car: S) -> Result<(), IpfsError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.uploads().dag_import(car).await
    }
}

macro_rules! either {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Connector::Kubo($c) => $call.await,
            Connector::Embedded($c) => $call.await,
        }
    };
}

impl IpfsConnector for Connector {
    async fn id(&self) -> Result<IpfsId, IpfsError> {
        either!(self, c => c.id())
    }

    async fn version(&self) -> Result<String, IpfsError> {
        either!(self, c => c.version())
    }

    async fn pin_counting(
        &self,
        cid: &Cid,
        mode: PinMode,
        progress: &PinProgress,
    ) -> Result<(), IpfsError> {
        either!(self, c => c.pin_counting(cid, mode, progress))
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), IpfsError> {
        either!(self, c => c.unpin(cid))
    }

    fn pin_ls(&self) -> impl Stream<Item = Result<(Cid, PinMode), IpfsError>> + Send {
        match self {
            Connector::Kubo(c) => c.pin_ls().left_stream(),
            Connector::Embedded(c) => c.pin_ls().right_stream(),
        }
    }

    async fn pin_ls_cid(&self, cid: &Cid) -> Result<Option<PinMode>, IpfsError> {
        either!(self, c => c.pin_ls_cid(cid))
    }

    async fn pin_update(&self, from: &Cid, to: &Cid) -> Result<(), IpfsError> {
        either!(self, c => c.pin_update(from, to))
    }

    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        either!(self, c => c.repo_stat())
    }

    async fn repo_gc(&self) -> Result<RepoGc, IpfsError> {
        either!(self, c => c.repo_gc())
    }

    async fn block_put(&self, data: Vec<u8>, format: BlockFormat) -> Result<Cid, IpfsError> {
        either!(self, c => c.block_put(data, format))
    }

    async fn swarm_peers(&self) -> Result<Vec<PeerId>, IpfsError> {
        either!(self, c => c.swarm_peers())
    }

    async fn swarm_connect(&self, addr: &Multiaddr) -> Result<(), IpfsError> {
        either!(self, c => c.swarm_connect(addr))
    }

    async fn resolve(&self, path: &str) -> Result<Cid, IpfsError> {
        either!(self, c => c.resolve(path))
    }
}
