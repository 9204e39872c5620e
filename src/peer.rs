//! The composition root: builds every component from the configuration,
//! runs them, and shuts them down in order (API, then consensus flushing
//! its last batch, then the peerstore, then the network).
//!
//! Files under the config folder ([`crate::folder`]): `cluster.lock` (one daemon per folder),
//! the fjall store (`datastore.fjall.folder`, default `fjall`), `peerstore`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::allocator::{Allocator, TrustFilter};
use crate::api::proxy::HeaderConfig;
use crate::api::rest;
use crate::api::serve::{Server, Timeouts};
use crate::cluster::ipfs::{RawIpfsApi, connect_swarms};
use crate::cluster::repin::check_metrics;
use crate::cluster::rpc::ClusterRpc;
use crate::cluster::{Cluster, ClusterConfig, Local, SeenDaemon};
use crate::config::{Config, TrustedPeers};
use crate::consensus::PinChange;
use crate::consensus::{Consensus, ConsensusTuning, PeerSigner, PeerVerifier};
use crate::folder::{self, FolderLock, LockError};
use crate::identity::Identity;
use crate::informer::{Informers, publish_metrics};
use crate::ipfsconn::{Connector, EmbeddedConnector, IpfsConnConfig, KuboConnector};
use crate::monitor::Monitor;
use crate::network::{Network, NetworkConfig};
use crate::pintracker::upkeep::{
    feed_tracker, recover_periodically, release_dropped_share, release_memory_periodically,
    sync_periodically,
};
use crate::pintracker::{PinTracker, RetryPolicy, TrackerConfig, TrackerStoreError};
use crate::state::{PAGE, readable};

/// Why the peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Another daemon uses this folder.
    #[error("{0} is locked: another pincluster daemon is running on this folder")]
    Locked(PathBuf),
    /// A file of the folder could not be used.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state store failed to open.
    #[error("opening the state store: {0}")]
    Store(#[from] pincluster_crdt::Error),
    /// The network failed to start.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The REST API failed to start.
    #[error(transparent)]
    Api(#[from] crate::api::serve::ServeError),
    /// The pin tracker's keyspaces failed to open.
    #[error("opening the pin tracker's queue: {0}")]
    Tracker(#[from] TrackerStoreError),
    /// The IPFS connector's configuration is unusable.
    #[error("ipfs_connector.ipfshttp: {0}")]
    Ipfs(#[from] crate::ipfsconn::IpfsError),
    /// An IPFS daemon address HTTP cannot reach.
    #[error(transparent)]
    IpfsNode(#[from] crate::cluster::ipfs::BadNodeAddress),
    /// The embedded IPFS node's block store failed to open.
    #[error("ipfs_connector.embedded: {0}")]
    BlockStore(#[from] crate::ipfs::store::StoreError),
    /// The embedded node's swarm key is unreadable.
    #[error("ipfs_connector.embedded: swarm key {0}")]
    SwarmKey(#[from] crate::ipfs::exchange::KeyError),
    /// The embedded node's public swarm failed to start (a listen address
    /// taken, say).
    #[error("ipfs_connector.embedded.swarm_listen_multiaddress: {0}")]
    Swarm(#[from] crate::ipfs::swarm::SwarmError),
}

/// A server the peer runs: its first TCP address (if any), the stop
/// signal, the task.
type Served = (Option<SocketAddr>, oneshot::Sender<()>, JoinHandle<()>);

/// A running peer.
#[derive(Debug)]
pub struct Peer {
    network: Network,
    consensus: Consensus,
    consensus_task: JoinHandle<()>,
    tracker: PinTracker<Connector>,
    /// Stops the tracker and every background task.
    cancel: CancellationToken,
    /// The background tasks: informer, swarm connector, tracker upkeep,
    /// metric checks and re-allocation.
    tasks: JoinSet<Option<()>>,
    /// The first TCP address (if any), the stop signal, the server.
    rest: Option<Served>,
    proxy: Option<Served>,
    /// The embedded node's RPC and gateway servers (none with Kubo).
    embedded: Vec<Served>,
    /// The embedded node's public swarm, stopped after the tracker (a pin
    /// in progress may still fetch until then).
    embedded_swarm: Option<crate::ipfs::swarm::IpfsSwarm>,
    peerstore: PathBuf,
    _lock: FolderLock,
}

impl Peer {
    /// Starts a peer from the folder `dir`, its loaded `config` and
    /// `identity`, dialing `bootstrap` in addition to the configured and
    /// remembered peers.
    /// As the reference's daemon does, the peers one bootstraps from are
    /// trusted (a follower's are not: see [`Peer::start_sharded`]).
    pub async fn start(
        dir: &Path,
        mut config: Config,
        identity: Identity,
        bootstrap: Vec<Multiaddr>,
    ) -> Result<Peer, PeerError> {
        if let TrustedPeers::Only(list) = &mut config.consensus.crdt.trusted_peers {
            list.extend(bootstrap.iter().filter_map(peer_of));
        }
        Peer::start_sharded(dir, config, identity, bootstrap, None).await
    }

    /// [`Peer::start`] for a follower that holds only its `shard` of the
    /// pins allocated to everyone ([`crate::allocator::shard`]). The
    /// `bootstrap` addresses are only dialed: trust comes from the
    /// configuration alone (the cluster's template, for a follower), or a
    /// volunteer given any follower's address would take that follower's
    /// word for the pinset.
    pub async fn start_sharded(
        dir: &Path,
        config: Config,
        identity: Identity,
        bootstrap: Vec<Multiaddr>,
        shard: Option<crate::allocator::shard::ShardSettings>,
    ) -> Result<Peer, PeerError> {
        let lock = folder::lock(dir).map_err(|e| match e {
            LockError::Held(path) => PeerError::Locked(path),
            LockError::Io { path, source } => PeerError::Io { path, source },
        })?;
        let local = identity.peer_id;
        let crdt = &config.consensus.crdt;
        let trusted = crdt.trusted_peers.clone();
        let live = config.datastore.fjall.path(dir);
        folder::finish_interrupted_import(&live).map_err(|source| PeerError::Io {
            path: live.clone(),
            source,
        })?;
        let (engine, database) = folder::open_engine_and_database(
            &live,
            config.datastore.fjall.store_options(),
            Arc::new(PeerSigner::new(identity.keypair.clone())),
            Arc::new(PeerVerifier::new(trusted.clone(), local)),
        )?;

        let removed: Vec<libp2p::PeerId> =
            crate::consensus::peerset::removed_peers(&engine.reader())?
                .into_iter()
                .map(|(peer, record)| {
                    tracing::info!(%peer, by = %record.by, at = %record.at, "peer removed from the cluster: refused");
                    peer
                })
                .collect();

        let peerstore = config.cluster.peerstore_path(dir);
        let mut dial = bootstrap;
        dial.extend(config.cluster.peer_addresses.iter().cloned());
        dial.extend(folder::read_peerstore(&peerstore));
        dial.retain(|a| peer_of(a) != Some(local));
        dial.dedup();
        // The peers this one could hear from right after start: history
        // compaction waits for them (consensus::compact).
        let mut known: Vec<libp2p::PeerId> = dial.iter().filter_map(peer_of).collect();
        known.sort_unstable();
        known.dedup();

        let ipfs_config = &config.ipfs_connector.ipfshttp;
        // The embedded node (when configured) serves its RPC subset before
        // anything else starts: the proxy and the full `repo/stat` go there.
        let mut embedded_servers = Vec::new();
        let mut embedded_swarm = None;
        let mut embedded_node = None;
        let (ipfs, daemon_addr) = match &config.ipfs_connector.embedded {
            None => {
                let ipfs = KuboConnector::new(IpfsConnConfig {
                    node: ipfs_config.node_multiaddress.clone(),
                    request_timeout: ipfs_config.ipfs_request_timeout.0,
                    pin_timeout: ipfs_config.pin_timeout.0,
                    unpin_timeout: ipfs_config.unpin_timeout.0,
                    repogc_timeout: ipfs_config.repogc_timeout.0,
                })?;
                (Connector::Kubo(ipfs), ipfs_config.node_multiaddress.clone())
            }
            Some(e) => {
                let (node, swarm, rpc_addr, servers) = start_embedded(dir, e).await?;
                embedded_servers = servers;
                embedded_swarm = Some(swarm.clone());
                embedded_node = Some(node.clone());
                let rpc = KuboConnector::new(IpfsConnConfig {
                    pin_timeout: e.pin_timeout.0,
                    ..IpfsConnConfig::with_defaults(rpc_addr.clone())
                })?;
                (
                    Connector::Embedded(EmbeddedConnector::new(node, e.pin_timeout.0, rpc, swarm)),
                    rpc_addr,
                )
            }
        };
        // Every task started here stops on `cancel`; should the start fail
        // half-way, the guard cancels what already runs.
        let cancel = CancellationToken::new();
        let stop_on_error = cancel.clone().drop_guard();
        let mut tasks = JoinSet::new();
        let mut spawn = |task: BoxFuture<'static, ()>| {
            tasks.spawn(cancel.clone().run_until_cancelled_owned(task));
        };
        let stateless = &config.pin_tracker.stateless;
        let tracker_db =
            folder::open_tracker_database(&live, &database).map_err(TrackerStoreError::from)?;
        let tracker = PinTracker::start(
            ipfs.clone(),
            local,
            TrackerConfig {
                concurrent_pins: stateless.concurrent_pins,
                max_queue: stateless.max_pin_queue_size,
                priority_max_age: stateless.priority_pin_max_age.0,
                priority_max_retries: stateless.priority_pin_max_retries,
                retry: RetryPolicy {
                    max_attempts: stateless.max_attempts,
                    first_backoff: stateless.retry_backoff.0,
                    max_backoff: Duration::from_secs(60),
                },
            },
            &tracker_db,
            &folder::tracker_database_path(&live),
            cancel.clone(),
        )?;
        let (events_tx, events_rx) = mpsc::channel(1024);
        let ipfs_seen: SeenDaemon = Arc::new(std::sync::Mutex::new((String::new(), Vec::new())));
        let local_side = Local::new(
            crate::state::PinState::new(engine.reader()),
            tracker.clone(),
            ipfs.clone(),
            RawIpfsApi::new(&daemon_addr, false)?,
            config.cluster.peername.clone(),
            ipfs_seen.clone(),
        );
        let rpc = Arc::new(ClusterRpc::new(engine.reader(), local_side.clone()));
        let monitor = Monitor::new();
        if let Some(settings) = shard {
            tracker.limit_to_share(crate::allocator::shard::Shard::new(
                local,
                settings,
                monitor.clone(),
            ));
        }
        let network = Network::start(
            NetworkConfig {
                keypair: identity.keypair.clone(),
                listen: config.cluster.listen_multiaddress.clone(),
                secret: config.cluster.secret,
                cluster_name: crdt.cluster_name.clone(),
                bootstrap: dial,
                trusted: trusted.clone(),
                peername: config.cluster.peername.clone(),
                high_water: config.cluster.connection_manager.high_water,
                low_water: config.cluster.connection_manager.low_water,
                grace_period: config.cluster.connection_manager.grace_period.0,
                follower: config.cluster.follower_mode,
                peer_ttl: config.cluster.monitor_ping_interval.0 * 2,
                heartbeat: config.cluster.pubsub.heartbeat_interval.0,
                request_timeout: Duration::from_secs(30),
                removed,
            },
            rpc.clone(),
            rpc,
            events_tx,
            monitor.clone(),
        )
        .await?;
        for addr in network.listen_addrs().await? {
            tracing::info!(%addr, "cluster peer listening");
        }

        spawn(Box::pin(publish_metrics(
            Informers {
                ipfs: ipfs.clone(),
                tracker: tracker.clone(),
                seen: ipfs_seen.clone(),
                peername: config.cluster.peername.clone(),
                ping_interval: config.cluster.monitor_ping_interval.0,
                informers: config.informer.clone(),
                shard,
            },
            network.clone(),
            monitor.clone(),
        )));
        // `0s` turns the connecting off, as in the reference. The embedded
        // node's swarm is connected the same way as Kubo daemons.
        let connect_swarms_on = !ipfs_config.connect_swarms_delay.0.is_zero();
        spawn(Box::pin(connect_swarms(
            ipfs.clone(),
            monitor.clone(),
            ipfs_seen,
            connect_swarms_on,
        )));
        let (changes_tx, changes_rx) = mpsc::channel(4096);
        spawn(Box::pin(feed_tracker(tracker.clone(), changes_rx)));
        spawn(Box::pin(recover_periodically(
            tracker.clone(),
            config.cluster.pin_recover_interval.0,
        )));
        spawn(Box::pin(release_memory_periodically(
            tracker.clone(),
            database.clone(),
        )));
        spawn(Box::pin(sync_periodically(
            tracker.clone(),
            crate::state::PinState::new(engine.reader()),
            config.cluster.state_sync_interval.0,
        )));
        if shard.is_some() {
            spawn(Box::pin(release_dropped_share(
                tracker.clone(),
                crate::state::PinState::new(engine.reader()),
                network.clone(),
                config.cluster.state_sync_interval.0,
            )));
        }
        let reader = crate::state::PinState::new(engine.reader());
        // The start-up pass below tells consensus when it is over (by
        // sending, or by ending early): the first snapshot waits for it.
        let (pass_done, tracker_ready) = oneshot::channel::<()>();
        let (consensus, consensus_task) = Consensus::start(
            engine,
            network.clone(),
            events_rx,
            Some(changes_tx.clone()),
            ConsensusTuning {
                max_batch_size: crdt.batching.max_batch_size.max(1),
                max_batch_age: crdt.batching.max_batch_age.0,
                max_queue_size: crdt.batching.max_queue_size.max(1),
                rebroadcast_interval: crdt.rebroadcast_interval.0,
                follower: config.cluster.follower_mode,
                snapshot_interval: crdt.snapshot_interval.0,
                compaction: crate::consensus::CompactionTuning {
                    enabled: crdt.compact_history,
                    grace: crdt.compaction_grace.0,
                    trusted: trusted.clone(),
                    known,
                },
            },
            tracker_ready,
        );

        // A peer always trusts itself.
        let mut trusted_here = trusted.clone();
        if let TrustedPeers::Only(list) = &mut trusted_here {
            list.push(local);
        }
        let trust = if config.cluster.pin_only_on_trusted_peers {
            TrustFilter::TrustedOnly(trusted_here.clone())
        } else if config.cluster.pin_only_on_untrusted_peers {
            TrustFilter::UntrustedOnly(trusted_here.clone())
        } else {
            TrustFilter::Any
        };
        let listings = crate::state::Listings::default();
        let allocator = Allocator::new(
            monitor.clone(),
            config.allocator.balanced.allocate_by.clone(),
            trust,
        );
        let cluster = Cluster::new(
            network.clone(),
            consensus.clone(),
            monitor.clone(),
            allocator,
            local_side,
            ClusterConfig {
                replication_min: config.cluster.replication_factor_min,
                replication_max: config.cluster.replication_factor_max,
                trusted: trusted.clone(),
                listings: listings.clone(),
            },
        );
        let repin = (!config.cluster.disable_repinning && !config.cluster.follower_mode)
            .then(|| cluster.clone());
        spawn(Box::pin(check_metrics(
            monitor.clone(),
            config.monitor.pubsubmon.check_interval.0,
            repin,
        )));
        // Everything already in the state is checked against IPFS once at
        // start, against one streamed `pin/ls` of the daemon: what it already
        // holds needs no operation (with the daemon down, everything is queued).
        let mut pins = crate::state::pages(reader.list().filter_map(readable), PAGE);
        let start_tracker = tracker.clone();
        let mut yielding = listings.yielding(crate::state::Listings::PAUSE_BUDGET);
        spawn(Box::pin(async move {
            let held = start_tracker.ipfs_pinset().await.ok();
            while let Some(page) = pins.recv().await {
                yielding.to_listings().await;
                let skip = match &held {
                    Some(held) => start_tracker.already_held(&page, held),
                    None => vec![false; page.len()],
                };
                for (pin, skip) in page.into_iter().zip(skip) {
                    if skip {
                        continue;
                    }
                    let change = PinChange {
                        old: None,
                        new: Some(pin),
                    };
                    if changes_tx.send(change).await.is_err() {
                        return;
                    }
                }
            }
            let waited = crate::state::Listings::PAUSE_BUDGET - yielding.left();
            if !waited.is_zero() {
                tracing::info!(
                    ?waited,
                    "the start-up pass let listings of the pinset go first"
                );
            }
            let _ = pass_done.send(());
        }));

        // The proxy first: once the REST API answers, every API is up (what
        // scripts and tests waiting on `/id` rely on).
        let proxy = match &config.api.ipfsproxy {
            Some(proxy) => {
                let (stop_tx, stop_rx) = oneshot::channel::<()>();
                // With the embedded node, the proxy serves it (the
                // configured `node_multiaddress` is Kubo's).
                let daemon = match &config.ipfs_connector.embedded {
                    None => RawIpfsApi::new(&proxy.node_multiaddress, proxy.node_https)?,
                    Some(_) => RawIpfsApi::new(&daemon_addr, false)?,
                };
                let headers = HeaderConfig {
                    extra: proxy.extract_headers_extra.clone(),
                    path: proxy.extract_headers_path.clone(),
                    ttl: proxy.extract_headers_ttl.0,
                };
                let server = Server {
                    name: "IPFS proxy",
                    timeouts: Timeouts::new(
                        proxy.read_timeout.0,
                        proxy.read_header_timeout.0,
                        proxy.write_timeout.0,
                        proxy.idle_timeout.0,
                    ),
                    max_header_bytes: proxy.max_header_bytes,
                    tls: None,
                };
                let (bound, task) = crate::api::proxy::serve(
                    &proxy.listen_multiaddress,
                    cluster.clone(),
                    daemon,
                    embedded_node.clone(),
                    headers,
                    server,
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await?;
                let first = log_listening("IPFS proxy", &bound, false);
                Some((first, stop_tx, task))
            }
            None => None,
        };

        let rest = match &config.api.restapi {
            Some(api) => {
                let (stop_tx, stop_rx) = oneshot::channel::<()>();
                let (bound, task) = rest::serve(api, dir, cluster.clone(), async move {
                    let _ = stop_rx.await;
                })
                .await?;
                let first = log_listening("REST API", &bound, api.ssl_cert_file.is_some());
                Some((first, stop_tx, task))
            }
            None => None,
        };

        stop_on_error.disarm();
        Ok(Peer {
            network,
            consensus,
            consensus_task,
            tracker,
            cancel,
            tasks,
            rest,
            proxy,
            embedded: embedded_servers,
            embedded_swarm,
            peerstore,
            _lock: lock,
        })
    }

    /// The REST API's first TCP address, if it runs on one.
    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest.as_ref().and_then(|(a, _, _)| *a)
    }

    /// The IPFS proxy's first TCP address, if it runs on one.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.as_ref().and_then(|(a, _, _)| *a)
    }

    /// The network handle.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The consensus handle.
    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }

    /// The pin tracker.
    pub fn tracker(&self) -> &PinTracker<Connector> {
        &self.tracker
    }

    /// Stops everything in order and waits for it: the APIs (no new
    /// requests), the background tasks and the tracker, then the network
    /// and consensus, which commits what it accepted before this (those
    /// writes still land). Afterwards no task of the peer runs and no port
    /// stays bound.
    pub async fn shutdown(mut self) {
        let servers = self.rest.into_iter().chain(self.proxy);
        for (_, stop, task) in servers.chain(self.embedded) {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Some(swarm) = self.embedded_swarm {
            swarm.stop().await;
        }
        match self.network.known_addrs().await {
            Ok(addrs) => folder::write_peerstore(&self.peerstore, &addrs),
            Err(e) => tracing::warn!(error = %e, "peerstore not saved"),
        }
        drop(self.consensus);
        self.network.shutdown().await;
        // The network's event channel closes with it, which ends the
        // consensus task after its last commit.
        let _ = self.consensus_task.await;
    }
}

/// Opens the embedded node's store, starts its public swarm (Bitswap
/// serves from and fetches into the store) and serves its RPC subset
/// (loopback) and its gateway. Returns the node, the swarm, the RPC's
/// bound address, and the two servers.
async fn start_embedded(
    dir: &Path,
    config: &crate::config::EmbeddedConfig,
) -> Result<
    (
        crate::ipfs::node::Node,
        crate::ipfs::swarm::IpfsSwarm,
        Multiaddr,
        Vec<Served>,
    ),
    PeerError,
> {
    use crate::ipfs::exchange::{SwarmFetcher, swarm_identity};
    use crate::ipfs::swarm::{IpfsSwarm, SwarmConfig};
    use crate::ipfs::{gateway, node::Node, rpc, store::BlockStore};
    let store = BlockStore::open(&config.path(dir), config.storage_max)?;
    let key = swarm_identity(&config.swarm_key_path(dir))?;
    let swarm = IpfsSwarm::start(
        SwarmConfig::new(key, config.swarm_listen_multiaddress.clone()),
        Arc::new(store.clone()),
    )
    .await?;
    let bound = swarm.listen_addrs().await.unwrap_or_default();
    log_listening("IPFS swarm", &bound, false);
    let node = Node::new(
        store,
        Arc::new(SwarmFetcher::new(swarm.clone())),
        swarm.local_peer_id(),
    )
    .with_swarm(swarm.clone());
    let server = |name| Server {
        name,
        // Adds and cats stream for as long as they take; a client that
        // sends no header in 30 s, or idles 2 minutes, is dropped.
        timeouts: Timeouts::new(
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::ZERO,
            Duration::from_secs(120),
        ),
        max_header_bytes: 1 << 20,
        tls: None,
    };
    let mut servers = Vec::new();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (bound, task) = rpc::serve(
        &config.rpc_listen_multiaddress,
        node.clone(),
        server("embedded IPFS RPC"),
        async move {
            let _ = stop_rx.await;
        },
    )
    .await?;
    let first = log_listening("embedded IPFS RPC", &bound, false);
    servers.push((first, stop_tx, task));
    // The proxy and the uploads reach the node at its first TCP address.
    let rpc_addr = bound
        .iter()
        .find(|a| crate::addr::socket_addr(a).is_some())
        .or(bound.first())
        .cloned()
        // No address at all: the connector refuses the empty one clearly.
        .unwrap_or_else(Multiaddr::empty);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let gateway = gateway::serve(
        &config.gateway_listen_multiaddress,
        node.clone(),
        server("IPFS gateway"),
        async move {
            let _ = stop_rx.await;
        },
    )
    .await;
    // The gateway is a convenience: a port already taken (a Kubo's gateway
    // on 8080) must not keep the peer from pinning.
    match gateway {
        Ok((bound, task)) => {
            let first = log_listening("IPFS gateway", &bound, false);
            servers.push((first, stop_tx, task));
        }
        Err(e) => tracing::warn!(error = %e, "IPFS gateway not started"),
    }
    Ok((node, swarm, rpc_addr, servers))
}

fn peer_of(addr: &Multiaddr) -> Option<libp2p::PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Logs where `name` listens: the first TCP address (else the first one)
/// as "<name> listening", which scripts and tests read, each other as
/// "<name> also listening". Returns the first TCP address.
fn log_listening(name: &str, bound: &[Multiaddr], https: bool) -> Option<SocketAddr> {
    let tcp = bound
        .iter()
        .position(|a| crate::addr::socket_addr(a).is_some())
        .unwrap_or(0);
    for (i, addr) in bound.iter().enumerate() {
        if i == tcp {
            tracing::info!(%addr, https, "{name} listening");
        } else {
            tracing::info!(%addr, https, "{name} also listening");
        }
    }
    bound.get(tcp).and_then(crate::addr::socket_addr)
}
