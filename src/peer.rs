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

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use pincluster_crdt::store::FjallStore;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::allocator::{self, Allocator, TrustFilter};
use crate::api::cluster_ipfs::Daemon;
use crate::api::proxy::{HeaderConfig, ProxyContext};
use crate::api::rest::{self, ApiContext};
use crate::api::serve::{Server, Timeouts};
use crate::config::{Config, TrustedPeers};
use crate::consensus::PinChange;
use crate::consensus::{Consensus, ConsensusConfig, PeerSigner, PeerVerifier};
use crate::folder::{self, FolderLock, LockError};
use crate::identity::Identity;
use crate::ipfsconn::{IpfsConnConfig, KuboConnector};
use crate::monitor::{self, MetricWire, Monitor};
use crate::network::{Network, NetworkConfig, RemoteStatus, StateSource};
use crate::network::{RemoteRepoGc, RemoteRepoStat};
use crate::pintracker::{PinTracker, RetryPolicy, TrackerConfig};
use crate::types::go_time;
use futures::FutureExt;
use futures::future::BoxFuture;

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
    Api(#[from] rest::ServeError),
    /// The IPFS connector's configuration is unusable.
    #[error("ipfs_connector.ipfshttp: {0}")]
    Ipfs(#[from] crate::ipfsconn::IpfsError),
    /// An IPFS daemon address HTTP cannot reach.
    #[error(transparent)]
    IpfsNode(#[from] crate::api::cluster_ipfs::BadNodeAddress),
}

/// A running peer.
#[derive(Debug)]
pub struct Peer {
    network: Network,
    consensus: Consensus,
    consensus_task: JoinHandle<()>,
    tracker: PinTracker<KuboConnector>,
    /// The first TCP address (if any), the stop signal, the server.
    rest: Option<(Option<SocketAddr>, oneshot::Sender<()>, JoinHandle<()>)>,
    proxy: Option<(Option<SocketAddr>, oneshot::Sender<()>, JoinHandle<()>)>,
    peerstore: PathBuf,
    _lock: FolderLock,
}

impl Peer {
    /// Starts a peer from the folder `dir`, its loaded `config` and
    /// `identity`, dialing `bootstrap` in addition to the configured and
    /// remembered peers.
    pub async fn start(
        dir: &Path,
        config: Config,
        identity: Identity,
        bootstrap: Vec<Multiaddr>,
    ) -> Result<Peer, PeerError> {
        let lock = folder::lock(dir).map_err(|e| match e {
            LockError::Held(path) => PeerError::Locked(path),
            LockError::Io { path, source } => PeerError::Io { path, source },
        })?;
        let local = identity.peer_id;
        let crdt = &config.consensus.crdt;
        let mut trusted = crdt.trusted_peers.clone();
        if let TrustedPeers::Only(list) = &mut trusted {
            // As the reference does: the peers one bootstraps from are trusted.
            list.extend(bootstrap.iter().filter_map(peer_of));
        }
        let engine = folder::open_engine(
            &config.datastore.fjall.path(dir),
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

        let ipfs_config = &config.ipfs_connector.ipfshttp;
        let ipfs = KuboConnector::new(IpfsConnConfig {
            node: ipfs_config.node_multiaddress.clone(),
            request_timeout: ipfs_config.ipfs_request_timeout.0,
            pin_timeout: ipfs_config.pin_timeout.0,
            unpin_timeout: ipfs_config.unpin_timeout.0,
            repogc_timeout: ipfs_config.repogc_timeout.0,
        })?;
        let stateless = &config.pin_tracker.stateless;
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
        );
        let (events_tx, events_rx) = mpsc::channel(1024);
        let ipfs_seen = Arc::new(std::sync::Mutex::new((String::new(), Vec::new())));
        let source: Arc<dyn StateSource> = Arc::new(PeerSource {
            reader: engine.reader(),
            state: crate::state::PinState::new(engine.reader()),
            tracker: tracker.clone(),
            peername: config.cluster.peername.clone(),
            ipfs: ipfs_seen.clone(),
            connector: ipfs.clone(),
            daemon: Daemon::new(&ipfs_config.node_multiaddress, false)?,
        });
        let monitor = Monitor::new();
        let network = Network::start(
            NetworkConfig {
                keypair: identity.keypair.clone(),
                listen: config.cluster.listen_multiaddress.clone(),
                secret: config.cluster.secret,
                cluster_name: crdt.cluster_name.clone(),
                bootstrap: dial,
                trusted: trusted.clone(),
                peername: config.cluster.peername.clone(),
                max_connections: config.cluster.connection_manager.high_water,
                peer_ttl: config.cluster.monitor_ping_interval.0 * 2,
                heartbeat: config.cluster.pubsub.heartbeat_interval.0,
                request_timeout: Duration::from_secs(30),
                removed,
            },
            source,
            events_tx,
            monitor.clone(),
        )
        .await?;
        for addr in network.listen_addrs().await? {
            tracing::info!(%addr, "cluster peer listening");
        }

        tokio::spawn(publish_metrics(
            Informers {
                ipfs: ipfs.clone(),
                tracker: tracker.clone(),
                seen: ipfs_seen.clone(),
                peername: config.cluster.peername.clone(),
                ping_interval: config.cluster.monitor_ping_interval.0,
                informers: config.informer.clone(),
            },
            network.clone(),
            monitor.clone(),
        ));
        // `0s` turns the connecting off, as in the reference.
        let connect_swarms = !ipfs_config.connect_swarms_delay.0.is_zero();
        tokio::spawn(connect_ipfs_swarms(
            ipfs.clone(),
            monitor.clone(),
            ipfs_seen,
            connect_swarms,
        ));
        let (changes_tx, changes_rx) = mpsc::channel(4096);
        tokio::spawn(feed_tracker(tracker.clone(), changes_rx));
        tokio::spawn(recover_periodically(
            tracker.clone(),
            config.cluster.pin_recover_interval.0,
        ));
        tokio::spawn(sync_periodically(
            tracker.clone(),
            crate::state::PinState::new(engine.reader()),
            config.cluster.state_sync_interval.0,
        ));
        let reader = crate::state::PinState::new(engine.reader());
        let (consensus, consensus_task) = Consensus::start(
            engine,
            network.clone(),
            events_rx,
            Some(changes_tx.clone()),
            ConsensusConfig {
                max_batch_size: crdt.batching.max_batch_size.max(1),
                max_batch_age: crdt.batching.max_batch_age.0,
                max_queue_size: crdt.batching.max_queue_size.max(1),
                rebroadcast_interval: crdt.rebroadcast_interval.0,
                follower: config.cluster.follower_mode,
            },
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
        let allocator = Allocator::new(
            monitor.clone(),
            config.allocator.balanced.allocate_by.clone(),
            trust,
        );
        let repin =
            (!config.cluster.disable_repinning && !config.cluster.follower_mode).then(|| {
                Repinner {
                    consensus: consensus.clone(),
                    monitor: monitor.clone(),
                    allocator: allocator.clone(),
                    trusted: trusted_here.clone(),
                    local,
                }
            });
        tokio::spawn(check_metrics(
            monitor.clone(),
            config.monitor.pubsubmon.check_interval.0,
            repin,
        ));
        // Everything already in the state is checked against IPFS once at
        // start (the tracker skips what IPFS already holds).
        tokio::task::spawn_blocking(move || {
            for pin in reader.list() {
                match pin {
                    Ok(pin) => {
                        let change = PinChange {
                            old: None,
                            new: Some(pin),
                        };
                        if changes_tx.blocking_send(change).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable pin skipped"),
                }
            }
        });

        // The proxy first: once the REST API answers, every API is up (what
        // scripts and tests waiting on `/id` rely on).
        let proxy = match &config.api.ipfsproxy {
            Some(proxy) => {
                let (stop_tx, stop_rx) = oneshot::channel::<()>();
                let ctx = ProxyContext {
                    network: network.clone(),
                    consensus: consensus.clone(),
                    ipfs: ipfs.clone(),
                    daemon: Daemon::new(&proxy.node_multiaddress, proxy.node_https)?,
                    allocator: allocator.clone(),
                    replication_min: config.cluster.replication_factor_min,
                    replication_max: config.cluster.replication_factor_max,
                    headers: HeaderConfig {
                        extra: proxy.extract_headers_extra.clone(),
                        path: proxy.extract_headers_path.clone(),
                        ttl: proxy.extract_headers_ttl.0,
                    },
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
                let (bound, task) =
                    crate::api::proxy::serve(&proxy.listen_multiaddress, ctx, server, async move {
                        let _ = stop_rx.await;
                    })
                    .await?;
                let first = log_listening("IPFS proxy", &bound, false);
                Some((first, stop_tx, task))
            }
            None => None,
        };

        let rest = match &config.api.restapi {
            Some(api) => {
                let (stop_tx, stop_rx) = oneshot::channel::<()>();
                let ctx = ApiContext {
                    network: network.clone(),
                    consensus: consensus.clone(),
                    tracker: tracker.clone(),
                    ipfs: ipfs.clone(),
                    monitor: monitor.clone(),
                    allocator: allocator.clone(),
                    trusted: trusted.clone(),
                    replication_min: config.cluster.replication_factor_min,
                    replication_max: config.cluster.replication_factor_max,
                };
                let (bound, task) = rest::serve(api, dir, ctx, async move {
                    let _ = stop_rx.await;
                })
                .await?;
                let first = log_listening("REST API", &bound, api.ssl_cert_file.is_some());
                Some((first, stop_tx, task))
            }
            None => None,
        };

        Ok(Peer {
            network,
            consensus,
            consensus_task,
            tracker,
            rest,
            proxy,
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
    pub fn tracker(&self) -> &PinTracker<KuboConnector> {
        &self.tracker
    }

    /// Stops everything in order; writes accepted before this still land.
    pub async fn shutdown(self) {
        for (_, stop, task) in self.rest.into_iter().chain(self.proxy) {
            let _ = stop.send(());
            let _ = task.await;
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

/// What this peer serves to others: heads and blocks from fjall, pin
/// statuses from its tracker.
struct PeerSource {
    reader: pincluster_crdt::Reader<FjallStore>,
    state: crate::state::PinState,
    tracker: PinTracker<KuboConnector>,
    peername: String,
    ipfs: Arc<std::sync::Mutex<(String, Vec<Multiaddr>)>>,
    connector: KuboConnector,
    daemon: Daemon,
}

impl StateSource for PeerSource {
    fn heads(&self) -> Vec<cid::Cid> {
        match self.reader.heads() {
            Ok(heads) => heads.into_iter().map(|h| h.cid).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read heads");
                Vec::new()
            }
        }
    }

    fn block(&self, cid: &cid::Cid) -> Option<Vec<u8>> {
        self.reader.block(cid).unwrap_or_else(|e| {
            tracing::error!(error = %e, %cid, "cannot read block");
            None
        })
    }

    fn ipfs(&self) -> (String, Vec<Multiaddr>) {
        self.ipfs.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn status_many(&self, cids: Vec<cid::Cid>) -> BoxFuture<'static, Vec<RemoteStatus>> {
        let tracker = self.tracker.clone();
        let state = self.state.clone();
        let peername = self.peername.clone();
        async move {
            let pins: Vec<(cid::Cid, Option<crate::types::Pin>)> = cids
                .into_iter()
                .map(|cid| (cid, state.get(&cid).ok().flatten()))
                .collect();
            tracker
                .statuses(&pins)
                .await
                .into_iter()
                .map(|local| remote_status(&peername, local))
                .collect()
        }
        .boxed()
    }

    fn recover_all(&self) -> Vec<cid::Cid> {
        self.tracker.recover_all()
    }

    fn ipfs_links(&self) -> BoxFuture<'static, (String, Vec<String>)> {
        let connector = self.connector.clone();
        async move { crate::graph::ipfs_links(&connector).await }.boxed()
    }

    fn status(&self, cid: cid::Cid, recover: bool) -> BoxFuture<'static, RemoteStatus> {
        let tracker = self.tracker.clone();
        let state = self.state.clone();
        let peername = self.peername.clone();
        async move {
            if recover {
                tracker.recover(&cid);
            }
            let pin = state.get(&cid).unwrap_or_else(|e| {
                tracing::warn!(%cid, error = %e, "cannot read pin");
                None
            });
            remote_status(&peername, tracker.status(&cid, pin.as_ref()).await)
        }
        .boxed()
    }

    fn repo_stat(&self) -> BoxFuture<'static, Result<RemoteRepoStat, String>> {
        let daemon = self.daemon.clone();
        async move { daemon.repo_stat().await.map(|s| s.usage) }.boxed()
    }

    fn repo_gc(&self) -> BoxFuture<'static, RemoteRepoGc> {
        let connector = self.connector.clone();
        let peername = self.peername.clone();
        async move { crate::api::cluster_ipfs::local_repo_gc(&connector, peername).await }.boxed()
    }
}

fn remote_status(peername: &str, local: crate::pintracker::LocalStatus) -> RemoteStatus {
    RemoteStatus {
        peername: peername.to_string(),
        status: local.status.as_str().to_string(),
        error: local.error,
        attempts: local.attempts,
        priority: local.priority,
        updated: local
            .updated
            .map(|t| go_time::format(&t))
            .unwrap_or_default(),
    }
}

/// Hands every durable change of the pinset to the tracker.
async fn feed_tracker(tracker: PinTracker<KuboConnector>, mut changes: mpsc::Receiver<PinChange>) {
    while let Some(change) = changes.recv().await {
        tracker.on_change(change);
    }
}

/// What this peer measures about itself.
struct Informers {
    ipfs: KuboConnector,
    tracker: PinTracker<KuboConnector>,
    seen: Arc<std::sync::Mutex<(String, Vec<Multiaddr>)>>,
    peername: String,
    ping_interval: Duration,
    informers: crate::config::InformerConfig,
}

impl Informers {
    /// The ping (TTL twice the ping interval) and every configured
    /// informer's metric. A failing informer is left out, never a stale value.
    async fn collect(&self) -> Vec<MetricWire> {
        use crate::ipfsconn::IpfsConnector;
        let (ipfs_id, addrs) = self.seen.lock().map(|g| g.clone()).unwrap_or_default();
        let addrs: Vec<String> = addrs.iter().map(Multiaddr::to_string).collect();
        let mut metrics = vec![monitor::ping(
            self.ping_interval * 2,
            &self.peername,
            &ipfs_id,
            &addrs,
        )];
        let ttl_ms = |d: Duration| d.as_millis() as u64;
        if let Some(disk) = &self.informers.disk
            && let Ok(stat) = self.ipfs.repo_stat().await
        {
            let (name, value) = match disk.metric_type {
                crate::config::DiskMetricType::Freespace => {
                    ("freespace", stat.storage_max.saturating_sub(stat.repo_size))
                }
                crate::config::DiskMetricType::Reposize => ("reposize", stat.repo_size),
            };
            metrics.push(MetricWire {
                name: name.into(),
                value: value.to_string(),
                ttl_ms: ttl_ms(disk.metric_ttl.0),
                // No limit configured on the daemon: nothing to compare.
                valid: value > 0,
                weight: i64::try_from(value).unwrap_or(i64::MAX),
                partitionable: false,
            });
        }
        if let Some(tags) = &self.informers.tags {
            for (tag, value) in &tags.tags {
                metrics.push(MetricWire {
                    name: format!("tag:{tag}"),
                    value: value.clone(),
                    ttl_ms: ttl_ms(tags.metric_ttl.0),
                    valid: true,
                    weight: 0,
                    partitionable: true,
                });
            }
        }
        if let Some(numpin) = &self.informers.numpin {
            use futures::StreamExt;
            // Counted off the stream: the list itself is never held. A
            // failed listing sends no metric rather than a wrong count.
            let mut pins = std::pin::pin!(self.ipfs.pin_ls());
            let mut count = Ok(0u64);
            while let Some(item) = pins.next().await {
                match item {
                    Ok(_) => count = count.map(|n| n + 1),
                    Err(e) => {
                        count = Err(e);
                        break;
                    }
                }
            }
            if let Ok(count) = count {
                metrics.push(MetricWire {
                    name: "numpin".into(),
                    value: count.to_string(),
                    ttl_ms: ttl_ms(numpin.metric_ttl.0),
                    valid: true,
                    // Fewer pins ranks first, should anyone allocate by it.
                    weight: -i64::try_from(count).unwrap_or(i64::MAX),
                    partitionable: false,
                });
            }
        }
        if let Some(queue) = &self.informers.pinqueue {
            let len = self.tracker.queued() as u64;
            metrics.push(MetricWire {
                name: "pinqueue".into(),
                value: len.to_string(),
                ttl_ms: ttl_ms(queue.metric_ttl.0),
                valid: true,
                weight: -i64::try_from(len / queue.weight_bucket_size.max(1)).unwrap_or(i64::MAX),
                partitionable: false,
            });
        }
        metrics
    }
}

/// Publishes this peer's metrics every ping interval, and at once when a
/// peer subscribes to them.
async fn publish_metrics(informers: Informers, network: Network, monitor: Monitor) {
    let mut tick = tokio::time::interval(informers.ping_interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = monitor.metrics_wanted() => {}
        }
        let metrics = informers.collect().await;
        if network.publish_metrics(metrics).await.is_err() {
            return; // shutting down
        }
    }
}

/// Raises alerts for expired metrics; a `ping` alert re-allocates the
/// peer's pins when repinning is on. It wakes when the earliest metric
/// expires (so a dead peer is reported within its ping TTL, twice the ping
/// interval) and at least every `check_interval`.
async fn check_metrics(monitor: Monitor, every: Duration, repin: Option<Repinner>) {
    let every = every.max(Duration::from_millis(100));
    loop {
        let now = chrono::Utc::now();
        let wait = monitor
            .next_expiry()
            .map(|at| (at - now).to_std().unwrap_or_default())
            .map_or(every, |until| until.min(every))
            // Never spin: expiries are judged in whole milliseconds anyway.
            .max(Duration::from_millis(10));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = monitor.metrics_recorded() => {}
        }
        for alert in monitor.check(chrono::Utc::now()) {
            tracing::warn!(peer = %alert.metric.peer, metric = %alert.metric.name, "metric expired");
            if alert.metric.name != "ping" {
                continue;
            }
            if let (Some(repin), Ok(down)) = (&repin, alert.metric.peer.parse::<libp2p::PeerId>()) {
                let repin = repin.clone();
                tokio::spawn(async move { repin.vacate(down).await });
            }
        }
    }
}

/// Moves the pins of a peer that went down to live peers.
#[derive(Clone)]
struct Repinner {
    consensus: Consensus,
    monitor: Monitor,
    allocator: Allocator,
    /// Whose writes the cluster accepts: only they may re-allocate.
    trusted: crate::config::TrustedPeers,
    local: libp2p::PeerId,
}

impl Repinner {
    /// Re-allocates every pin allocated to `down`. Each pin is handled by
    /// one live trusted peer only, the first in the pin's rendezvous ranking
    /// of them: no coordination, no duplicate writes (and if two peers
    /// disagree on who is live, the CRDT merges their writes).
    async fn vacate(self, down: libp2p::PeerId) {
        let mut writers: Vec<libp2p::PeerId> = self
            .monitor
            .live_peers(chrono::Utc::now())
            .into_iter()
            .filter(|p| *p != down && self.trusted.is_trusted(p))
            .collect();
        if !writers.contains(&self.local) {
            writers.push(self.local);
        }
        let state = self.consensus.state().clone();
        let (tx, mut rx) = mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            for pin in state.list().flatten() {
                if pin.allocations.contains(&down) && tx.blocking_send(pin).is_err() {
                    return;
                }
            }
        });
        let mut moved = 0;
        while let Some(mut pin) = rx.recv().await {
            if allocator::responsible(&pin.cid, &writers) != Some(self.local) {
                continue;
            }
            let current: Vec<libp2p::PeerId> = pin
                .allocations
                .iter()
                .filter(|p| **p != down)
                .copied()
                .collect();
            let request = allocator::Request {
                cid: &pin.cid,
                replication_min: pin.options.replication_factor_min,
                replication_max: pin.options.replication_factor_max,
                current: &current,
                priority: &pin.options.user_allocations,
                exclude: &[down],
            };
            match self.allocator.allocate(request) {
                Ok(allocations) => {
                    pin.allocations = allocations;
                    pin.timestamp = Some(chrono::Utc::now().fixed_offset());
                    match self.consensus.log_pin(pin).await {
                        Ok(()) => moved += 1,
                        Err(e) => tracing::warn!(error = %e, "re-allocation not written"),
                    }
                }
                Err(e) => tracing::warn!(cid = %pin.cid, error = %e, "cannot re-allocate"),
            }
        }
        if moved > 0 {
            tracing::info!(%down, pins = moved, "re-allocated the pins of a peer that went down");
        }
    }
}

/// How often the connector checks its daemon's identity and connections
/// when nothing else wakes it: this bounds how long a daemon that
/// restarted (this peer's or another's, same addresses) stays apart.
const SWARM_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Keeps what this peer publishes about its IPFS daemon current, and
/// connects that daemon to the other peers' daemons, so allocated peers
/// fetch content from each other over bitswap.
///
/// The reference connects once, `connect_swarms_delay` after start: a pin
/// made before then (or after a daemon restarts) can spend every attempt
/// on a daemon that cannot reach the content. Here a daemon is connected
/// as soon as this peer learns of it (a peer's `ping` names a new daemon or
/// new addresses), and every check finds, from the daemon's own
/// `swarm/peers`, the daemons it lost (a restart on either side) and
/// connects them again. `connect` false (`connect_swarms_delay: 0s`, as in
/// the reference) leaves the swarm alone and only keeps the identity.
async fn connect_ipfs_swarms(
    ipfs: KuboConnector,
    monitor: Monitor,
    seen: Arc<std::sync::Mutex<(String, Vec<Multiaddr>)>>,
    connect: bool,
) {
    use crate::ipfsconn::IpfsConnector;
    let mut tick = tokio::time::interval(SWARM_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = monitor.ipfs_daemons_changed() => {}
        }
        let own = match ipfs.id().await {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(error = %e, "IPFS daemon not reachable");
                continue;
            }
        };
        let now_seen = (own.id.to_string(), own.addresses.clone());
        let changed = seen.lock().is_ok_and(|mut s| {
            let changed = *s != now_seen;
            *s = now_seen;
            changed
        });
        if changed {
            // Other peers learn our daemon from our ping: send it now
            // rather than at the next ping interval.
            monitor.want_metrics();
        }
        if !connect {
            continue;
        }
        let Ok(linked) = ipfs.swarm_peers().await else {
            continue;
        };
        let missing = monitor
            .ipfs_daemons(chrono::Utc::now())
            .into_iter()
            .filter(|d| d.id != own.id && !linked.contains(&d.id));
        // One slow or unreachable daemon does not hold up the others.
        futures::future::join_all(missing.map(|daemon| {
            let ipfs = ipfs.clone();
            async move {
                for addr in &daemon.addresses {
                    let mut addr = addr.clone();
                    if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                        addr.push(Protocol::P2p(daemon.id));
                    }
                    match ipfs.swarm_connect(&addr).await {
                        Ok(()) => {
                            tracing::info!(peer = %daemon.peer, %addr, "IPFS daemon connected to the peer's daemon");
                            return;
                        }
                        Err(e) => tracing::debug!(%addr, error = %e, "swarm connect failed"),
                    }
                }
            }
        }))
        .await;
    }
}

/// Every `state_sync_interval`, compares the pinset with what the IPFS
/// daemon holds, page by page (one listing of the daemon serves them all),
/// and queues again the pins allocated here that the daemon lost
/// (`unexpectedly_unpinned`), e.g. after a `pin rm` behind the cluster's back.
async fn sync_periodically(
    tracker: PinTracker<KuboConnector>,
    state: crate::state::PinState,
    every: Duration,
) {
    const PAGE: usize = 256;
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await; // start-up already queued everything
    loop {
        tick.tick().await;
        let (tx, mut pages) = mpsc::channel::<Vec<(cid::Cid, Option<crate::types::Pin>)>>(2);
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let mut page = Vec::with_capacity(PAGE);
            for pin in state.list().flatten() {
                page.push((pin.cid, Some(pin)));
                if page.len() == PAGE && tx.blocking_send(std::mem::take(&mut page)).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(page);
        });
        let mut requeued = 0;
        while let Some(page) = pages.recv().await {
            let statuses = tracker.statuses(&page).await;
            for ((_, pin), status) in page.into_iter().zip(statuses) {
                if status.status == crate::status::TrackerStatus::UnexpectedlyUnpinned {
                    tracker.on_change(PinChange {
                        old: None,
                        new: pin,
                    });
                    requeued += 1;
                }
            }
        }
        if requeued > 0 {
            tracing::info!(pins = requeued, "queued again pins the IPFS daemon lost");
        }
    }
}

/// Re-queues failed operations every `pin_recover_interval`.
async fn recover_periodically(tracker: PinTracker<KuboConnector>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await; // the first tick is immediate: nothing failed yet
    loop {
        tick.tick().await;
        let n = tracker.recover_all().len();
        if n > 0 {
            tracing::info!(operations = n, "recovering failed pin operations");
        }
    }
}

fn peer_of(addr: &Multiaddr) -> Option<libp2p::PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// `/ip4/<ip>/tcp/<port>` for a bound socket.
/// Logs where `name` listens: the first TCP address (else the first one)
/// as "<name> listening", which scripts and tests read, each other as
/// "<name> also listening". Returns the first TCP address.
fn log_listening(name: &str, bound: &[Multiaddr], https: bool) -> Option<SocketAddr> {
    let tcp = bound
        .iter()
        .position(|a| rest::socket_addr(a).is_ok())
        .unwrap_or(0);
    for (i, addr) in bound.iter().enumerate() {
        if i == tcp {
            tracing::info!(%addr, https, "{name} listening");
        } else {
            tracing::info!(%addr, https, "{name} also listening");
        }
    }
    bound.get(tcp).and_then(|a| rest::socket_addr(a).ok())
}

pub fn socket_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
        std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}
