//! The REST API (warp), wire-compatible with ipfs-cluster 1.1.6: the same
//! paths, JSON shapes, NDJSON streams (204 when empty) and error bodies
//! (`{"code": n, "message": "..."}`).
//!
//! Every endpoint of the reference's catalogue but those other components
//! add (`/health/graph`, `/ipfs/gc`, the UI), plus `/pins/sync`. Files:
//! `server` (the HTTP layer: auth, CORS, limits, the stream trailer),
//! `auth`, `cors`, `reply` (JSON, errors, NDJSON), `add`, `paths` (pin by
//! IPFS path), `peers` (add and remove), `sync`; the rest is here.

mod add;
mod auth;
mod cors;
mod paths;
mod peers;
mod reply;
mod server;
mod sync;
mod ui;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use futures::future::join_all;
use libp2p::{Multiaddr, PeerId};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;

use crate::allocator::Allocator;
use crate::api::serve::{Listener, Server, Timeouts, TlsError, UnixSocket, tls};
use crate::config::RestApiConfig;
use crate::consensus::{Consensus, ConsensusError};
use crate::ipfsconn::{IpfsConnector, KuboConnector};
use crate::monitor::Monitor;
use crate::network::{Network, RemoteId, RemoteStatus};
use crate::pintracker::PinTracker;
use crate::state::PinJsonWriter;
use crate::status::{GlobalPinInfo, PinInfoShort, StatusFilter, TrackerStatus};
use crate::types::go_time;
use crate::types::{
    self, IdInfo, IpfsIdInfo, Pin, PinMode, PinOptions, PinType, PinTypeFilter, Version,
};
use reply::{ApiReply, error, json, ndjson};

/// How long `GET /peers` waits for each peer to say who it is.
const PEER_ID_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `GET /id` waits for the IPFS daemon: a slow daemon shows as an
/// error, it never blocks the answer.
const IPFS_ID_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct ApiContext {
    /// The network, for the peerset and identities.
    pub network: Network,
    /// The pinset and writes.
    pub consensus: Consensus,
    /// This peer's pin operations and statuses.
    pub tracker: PinTracker<KuboConnector>,
    /// The IPFS daemon beside this peer.
    pub ipfs: KuboConnector,
    /// Metrics and alerts.
    pub monitor: Monitor,
    /// Who gets new pins.
    pub allocator: Allocator,
    /// Whose deltas this peer accepts (the health graph's trust links).
    pub trusted: crate::config::TrustedPeers,
    /// Cluster defaults for pins that do not say.
    pub replication_min: i32,
    /// Cluster defaults for pins that do not say.
    pub replication_max: i32,
}

/// Why an API (the REST API, the IPFS proxy) could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is neither TCP nor a unix socket.
    #[error(
        "unsupported listen address {0}: expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port> or /unix/<path>"
    )]
    Address(Multiaddr),
    /// The HTTPS certificate or key cannot be used.
    #[error("api.restapi: HTTPS")]
    Tls(#[from] TlsError),
    /// Binding (or resolving the host) failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: Multiaddr,
        #[source]
        source: std::io::Error,
    },
    /// The unix socket's path cannot be used.
    #[error("cannot listen on unix socket {}: {problem}", path.display())]
    UnixPath {
        path: std::path::PathBuf,
        problem: &'static str,
    },
}

/// Turns `/ip4/a.b.c.d/tcp/p` (or ip6) into a socket address.
pub fn socket_addr(addr: &Multiaddr) -> Result<SocketAddr, ServeError> {
    use libp2p::multiaddr::Protocol;
    let mut iter = addr.iter();
    let ip: std::net::IpAddr = match iter.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Err(ServeError::Address(addr.clone())),
    };
    match (iter.next(), iter.next()) {
        (Some(Protocol::Tcp(port)), None) => Ok(SocketAddr::new(ip, port)),
        _ => Err(ServeError::Address(addr.clone())),
    }
}

/// Binds every address of `addrs` (TCP, `/dns*` resolved, or unix
/// sockets); returns the listeners and the addresses they got (port 0
/// resolved), in order. Nothing stays bound on error.
pub async fn bind_all(addrs: &[Multiaddr]) -> Result<(Vec<Listener>, Vec<Multiaddr>), ServeError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let (listener, got) = bind(addr).await?;
        listeners.push(listener);
        bound.push(got);
    }
    Ok((listeners, bound))
}

async fn bind(addr: &Multiaddr) -> Result<(Listener, Multiaddr), ServeError> {
    use libp2p::multiaddr::Protocol;
    let bind_error = |source| ServeError::Bind {
        addr: addr.clone(),
        source,
    };
    let mut iter = addr.iter();
    let socket = match (iter.next(), iter.next(), iter.next()) {
        (Some(Protocol::Unix(path)), None, None) => {
            let path = Path::new("/").join(path.as_ref());
            let socket = unix_listen(&path).map_err(|e| match e {
                UnixBind::Path(problem) => ServeError::UnixPath { path, problem },
                UnixBind::Io(source) => bind_error(source),
            })?;
            return Ok((Listener::Unix(socket), addr.clone()));
        }
        (
            Some(Protocol::Dns(host) | Protocol::Dns4(host) | Protocol::Dns6(host)),
            Some(Protocol::Tcp(port)),
            None,
        ) => {
            let family = addr.iter().next();
            let found = tokio::net::lookup_host((host.as_ref(), port))
                .await
                .map_err(bind_error)?
                .find(|a| match family {
                    Some(Protocol::Dns4(_)) => a.is_ipv4(),
                    Some(Protocol::Dns6(_)) => a.is_ipv6(),
                    _ => true,
                });
            found.ok_or_else(|| {
                bind_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host has no address of that family",
                ))
            })?
        }
        _ => socket_addr(addr)?,
    };
    let (listener, got) = listen(socket).map_err(bind_error)?;
    Ok((Listener::Tcp(listener), crate::peer::socket_multiaddr(got)))
}

enum UnixBind {
    Path(&'static str),
    Io(std::io::Error),
}

/// Binds a unix socket at `path`, first removing a socket file a stopped
/// (or killed) peer left there; anything else in the way is refused.
fn unix_listen(path: &Path) -> Result<UnixSocket, UnixBind> {
    use std::os::unix::fs::FileTypeExt;
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() || dir.is_dir() => {}
        _ => return Err(UnixBind::Path("its folder does not exist")),
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Refused means nobody listens: a leftover, safe to remove.
            // Anything else (it answers) is a live server's.
            match std::os::unix::net::UnixStream::connect(path) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(UnixBind::Io)?;
                }
                Err(e) => return Err(UnixBind::Io(e)),
                Ok(_) => return Err(UnixBind::Path("another process listens on it")),
            }
        }
        Ok(_) => return Err(UnixBind::Path("a file that is not a socket is in the way")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(UnixBind::Io(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(UnixBind::Io)?;
    Ok(UnixSocket::new(listener, path.to_path_buf()))
}

/// A listener on `socket` (the REST API's and the proxy's) and the address
/// it got (port 0 resolved).
pub fn listen(socket: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let s = if socket.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux):
    // without it, a response written as head then body meets the
    // client's delayed ACK, 40 ms a request.
    s.set_nodelay(true)?;
    s.set_reuseaddr(true)?;
    s.bind(socket)?;
    let listener = s.listen(1024)?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Binds every `http_listen_multiaddress` of `config` and serves the
/// API on all of them until `shutdown` resolves, over HTTPS when `ssl_cert_file` and
/// `ssl_key_file` are set (relative to the configuration folder `dir`).
/// Returns the bound addresses (port 0 resolved), in the configured
/// order, and the server task.
pub async fn serve(
    config: &RestApiConfig,
    dir: &Path,
    ctx: ApiContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Vec<Multiaddr>, tokio::task::JoinHandle<()>), ServeError> {
    // Validation makes them go together.
    let tls = match (&config.ssl_cert_file, &config.ssl_key_file) {
        (Some(cert), Some(key)) => Some(tls::acceptor(dir, cert, key)?),
        _ => None,
    };
    let server = Server {
        name: "REST API",
        timeouts: Timeouts::new(
            config.read_timeout.0,
            config.read_header_timeout.0,
            config.write_timeout.0,
            config.idle_timeout.0,
        ),
        max_header_bytes: config.max_header_bytes,
        tls,
    };
    let (listeners, bound) = bind_all(&config.http_listen_multiaddress).await?;
    let task = tokio::spawn(server::run(
        listeners,
        server,
        config.clone(),
        Arc::new(ctx),
        shutdown,
    ));
    Ok((bound, task))
}

fn with_ctx(
    ctx: Arc<ApiContext>,
) -> impl Filter<Extract = (Arc<ApiContext>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

fn query()
-> impl Filter<Extract = (Vec<(String, String)>,), Error = std::convert::Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| url_pairs(&raw))
}

/// Decodes `a=1&b=2` (percent-decoding, `+` as space) keeping order and
/// repeats, which the pin options need (`meta-*`).
pub fn url_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// A query key or value: `+` is a space, as Go's `url.ParseQuery` reads it.
fn form_decode(s: &str) -> String {
    percent_decode(s, true)
}

/// A piece of a URL path: `+` is itself, as Go's `url.PathUnescape` reads
/// it (`/pins/ipfs/<cid>/a+b` names the file `a+b`).
fn path_decode(s: &str) -> String {
    percent_decode(s, false)
}

/// `%XX` escapes decoded (a malformed one is kept as it is), and `+` as a
/// space when `plus_is_space`.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every route, with the reference's not-found and wrong-method answers.
pub fn routes(
    ctx: Arc<ApiContext>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let id = warp::path!("id")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(get_id);
    let version = warp::path!("version").and(warp::get()).map(|| {
        json(
            StatusCode::OK,
            &Version {
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        )
    });
    let peers = warp::path!("peers")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(get_peers);
    let pin = warp::path!("pins" / String)
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(post_pin);
    let unpin = warp::path!("pins" / String)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(delete_pin);
    let allocations = warp::path!("allocations")
        .and(warp::get())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(get_allocations);
    let allocation = warp::path!("allocations" / String)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(get_allocation);
    let metric_names = warp::path!("monitor" / "metrics")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Arc<ApiContext>| json(StatusCode::OK, &ctx.monitor.names()));
    let metrics = warp::path!("monitor" / "metrics" / String)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|name: String, ctx: Arc<ApiContext>| {
            json(
                StatusCode::OK,
                &ctx.monitor.metrics(&name, chrono::Utc::now()),
            )
        });
    let alerts = warp::path!("health" / "alerts")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Arc<ApiContext>| json(StatusCode::OK, &ctx.monitor.alerts()));
    let recover_all = warp::path!("pins" / "recover")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(post_recover_all);
    let all_statuses = warp::path!("pins")
        .and(warp::get())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(get_pins);
    let status = warp::path!("pins" / String)
        .and(warp::get())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(get_status);
    let recover = warp::path!("pins" / String / "recover")
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(post_recover);
    let graph = warp::path!("health" / "graph")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(get_graph);
    let ipfs_gc = warp::path!("ipfs" / "gc")
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(
            |query: Vec<(String, String)>, ctx: Arc<ApiContext>| async move {
                let local = local_only(&query);
                let gc = crate::api::cluster_ipfs::repo_gc(&ctx.network, &ctx.ipfs, local).await;
                json(StatusCode::OK, &gc)
            },
        );
    let health = warp::path!("health")
        .and(warp::get())
        .map(reply::no_content);
    let bandwidth = warp::path!("health" / "bandwidth")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Arc<ApiContext>| json(StatusCode::OK, &ctx.network.bandwidth()));
    let add_peer = warp::path!("peers")
        .and(warp::post())
        .and(warp::body::bytes())
        .and(with_ctx(ctx.clone()))
        .then(peers::add);
    let remove_peer = warp::path!("peers" / String)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(peers::remove);
    let sync_all = warp::path!("pins" / "sync")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(sync::all);
    let sync_one = warp::path!("pins" / String / "sync")
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(sync::one);
    let ipfs_path = || {
        warp::path("pins")
            .and(warp::path::tail())
            .and_then(|tail: warp::path::Tail| async move {
                paths::path_of(tail.as_str()).ok_or_else(warp::reject::not_found)
            })
    };
    let pin_path = ipfs_path()
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(paths::post);
    let unpin_path = ipfs_path()
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(paths::delete);
    // The reference answers GET on a path route as an unknown path (404
    // JSON), not as a known path with another method (405).
    let get_path = ipfs_path()
        .and(warp::get())
        .map(|_| error(StatusCode::NOT_FOUND, "not found".to_string()));
    let add = warp::path!("add")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(query())
        .and(warp::body::stream())
        .and(with_ctx(ctx.clone()))
        .then(add::add);
    // Each route boxed: a long chain of `or`s otherwise makes a type so
    // deep that compiling it takes many minutes.
    let all: Vec<BoxedFilter<(ApiReply,)>> = vec![
        sync_all.boxed(),
        add.boxed(),
        health.boxed(),
        bandwidth.boxed(),
        add_peer.boxed(),
        remove_peer.boxed(),
        sync_one.boxed(),
        pin_path.boxed(),
        unpin_path.boxed(),
        get_path.boxed(),
        id.boxed(),
        version.boxed(),
        peers.boxed(),
        pin.boxed(),
        unpin.boxed(),
        allocations.boxed(),
        allocation.boxed(),
        all_statuses.boxed(),
        status.boxed(),
        recover.boxed(),
        metric_names.boxed(),
        metrics.boxed(),
        alerts.boxed(),
        graph.boxed(),
        ipfs_gc.boxed(),
        ui::routes().boxed(),
    ];
    all.into_iter()
        .fold(recover_all.boxed(), |acc, route| {
            acc.or(route).unify().boxed()
        })
        .recover(reply::rejection)
        .unify()
}

async fn local_id_info(ctx: &ApiContext) -> IdInfo {
    let local = ctx.network.local_peer_id();
    match ctx.network.local_id().await {
        Ok(remote) => id_info(local, remote),
        Err(e) => errored(local, e.to_string()),
    }
}

/// A peer that could not be asked: its id and the error, the rest empty.
fn errored(id: PeerId, error: String) -> IdInfo {
    IdInfo {
        id,
        addresses: Vec::new(),
        cluster_peers: Vec::new(),
        cluster_peers_addresses: Vec::new(),
        version: String::new(),
        commit: String::new(),
        rpc_protocol_version: String::new(),
        error,
        ipfs: IpfsIdInfo::default(),
        peername: String::new(),
    }
}

/// What a peer said about itself, as an `ID`. Entries that do not parse
/// are dropped: a peer's answer is input like any other.
fn id_info(asked: PeerId, remote: RemoteId) -> IdInfo {
    let ipfs = IpfsIdInfo {
        id: remote.ipfs_id.parse().ok(),
        addresses: remote
            .ipfs_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
        error: String::new(),
    };
    IdInfo {
        id: remote.id.parse().unwrap_or(asked),
        addresses: remote
            .addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
        cluster_peers: remote
            .cluster_peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
        cluster_peers_addresses: Vec::new(),
        version: remote.version,
        commit: String::new(),
        rpc_protocol_version: "/pincluster/1.0/sync".to_string(),
        error: String::new(),
        ipfs,
        peername: remote.peername,
    }
}

async fn get_id(ctx: Arc<ApiContext>) -> ApiReply {
    let mut info = local_id_info(&ctx).await;
    info.ipfs = match tokio::time::timeout(IPFS_ID_TIMEOUT, ctx.ipfs.id()).await {
        Ok(Ok(id)) => IpfsIdInfo {
            id: Some(id.id),
            addresses: id.addresses,
            error: String::new(),
        },
        Ok(Err(e)) => IpfsIdInfo {
            error: e.to_string(),
            ..IpfsIdInfo::default()
        },
        Err(_) => IpfsIdInfo {
            error: format!("IPFS daemon did not answer within {IPFS_ID_TIMEOUT:?}"),
            ..IpfsIdInfo::default()
        },
    };
    // The peerset's addresses, as the reference lists them.
    if let Ok(peers) = ctx.network.peers().await {
        for peer in peers {
            if let Ok(addrs) = ctx.network.peer_addrs(peer).await {
                info.cluster_peers_addresses.extend(addrs);
            }
        }
    }
    json(StatusCode::OK, &info)
}

async fn get_graph(ctx: Arc<ApiContext>) -> ApiReply {
    let sources = crate::graph::GraphSources {
        network: ctx.network.clone(),
        ipfs: ctx.ipfs.clone(),
        monitor: ctx.monitor.clone(),
        trusted: ctx.trusted.clone(),
    };
    json(StatusCode::OK, &crate::graph::connect_graph(&sources).await)
}

async fn get_peers(ctx: Arc<ApiContext>) -> ApiReply {
    let peers = ctx.network.peers().await.unwrap_or_default();
    let asks = peers.iter().map(|peer| {
        let network = ctx.network.clone();
        let peer: PeerId = *peer;
        async move {
            match tokio::time::timeout(PEER_ID_TIMEOUT, network.remote_id(peer)).await {
                Ok(Ok(remote)) => id_info(peer, remote),
                Ok(Err(e)) => errored(peer, e.to_string()),
                Err(_) => errored(peer, "timed out".to_string()),
            }
        }
    });
    let mut infos = vec![local_id_info(&ctx).await];
    infos.extend(join_all(asks).await);
    ndjson(futures::stream::iter(infos.into_iter().map(Ok))).await
}

async fn post_pin(raw_cid: String, query: Vec<(String, String)>, ctx: Arc<ApiContext>) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let options = match PinOptions::from_query(&query) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut pin = Pin::new(cid, options);
    // The reference's CID route always pins recursively (its quirk, kept so
    // clients see the same thing).
    pin.max_depth = -1;
    commit_pin(&ctx, pin).await
}

/// Fills in the cluster's replication defaults, allocates and commits
/// `pin`; answers with the pin as committed.
async fn commit_pin(ctx: &ApiContext, pin: Pin) -> ApiReply {
    let committed = match pin.options.pin_update {
        Some(from) if from != pin.cid => update_pin(ctx, from, pin).await,
        _ => commit(ctx, pin, false)
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e)),
    };
    match committed {
        Ok(pin) => json(StatusCode::OK, &pin),
        Err((status, e)) => error(status, e),
    }
}

/// `pin-update=FROM`: the new pin is a copy of FROM's (allocations,
/// replication, mode, metadata, name) under `new`'s CID, as the
/// reference's `PinUpdate`: only a name and a future expiry given with the
/// request replace FROM's; FROM stays pinned.
async fn update_pin(ctx: &ApiContext, from: Cid, new: Pin) -> Result<Pin, (StatusCode, String)> {
    let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    let mut pin = match ctx.consensus.state().get(&from) {
        Ok(Some(pin)) => pin,
        Ok(None) => {
            return Err((
                StatusCode::NOT_FOUND,
                "pin is not part of the pinset".to_string(),
            ));
        }
        Err(e) => return Err(internal(e.to_string())),
    };
    if pin.pin_type != PinType::Pin {
        return Err(internal("this pin type cannot be updated".to_string()));
    }
    let now = chrono::Utc::now().fixed_offset();
    pin.cid = new.cid;
    pin.options.pin_update = Some(from);
    pin.timestamp = Some(now);
    if !new.options.name.is_empty() {
        pin.options.name = new.options.name;
    }
    if let Some(at) = new.options.expire_at.filter(|at| *at > now) {
        pin.options.expire_at = Some(at);
    }
    ctx.consensus
        .log_pin(pin.clone())
        .await
        .map_err(|e| internal(e.to_string()))?;
    Ok(pin)
}

/// [`commit_pin`]'s work, answering with the pin or the error text. With
/// `local`, this peer takes the last allocation if it has none (what
/// `/add?local=true` asks: the content is on this peer's daemon), unless
/// the pin names its allocations, as in the reference.
async fn commit(ctx: &ApiContext, mut pin: Pin, local: bool) -> Result<Pin, String> {
    let local = local && pin.options.user_allocations.is_empty();
    if pin.options.replication_factor_min == 0 {
        pin.options.replication_factor_min = ctx.replication_min;
    }
    if pin.options.replication_factor_max == 0 {
        pin.options.replication_factor_max = ctx.replication_max;
    }
    let (min, max) = (
        pin.options.replication_factor_min,
        pin.options.replication_factor_max,
    );
    if let Some(e) = replication_error(min, max) {
        return Err(e.to_string());
    }
    check_repin(ctx.consensus.state(), &pin)?;
    // Re-pinning keeps the live allocations the pin already has; `local`
    // puts this peer first.
    let me = ctx.network.local_peer_id();
    let mut priority = pin.options.user_allocations.clone();
    if local {
        priority.insert(0, me);
    }
    pin.allocations = ctx
        .allocator
        .allocate_pin(ctx.consensus.state(), &pin, &priority)?;
    // This peer holds the content of a local add even when its metrics do
    // not make it a candidate (its daemon's free space unknown, say).
    if local
        && !pin.allocations.contains(&me)
        && let Some(last) = pin.allocations.last_mut()
    {
        *last = me;
    }
    pin.timestamp = Some(chrono::Utc::now().fixed_offset());
    ctx.consensus
        .log_pin(pin.clone())
        .await
        .map_err(|e| e.to_string())?;
    Ok(pin)
}

/// What is wrong with replication factors `min`, `max`, in the reference's
/// order of checks and with its texts (`isReplicationFactorValid`).
fn replication_error(min: i32, max: i32) -> Option<&'static str> {
    if min == 0 || max == 0 {
        Some("cluster.replication_factor_min and max must be set")
    } else if min > max {
        Some("cluster.replication_factor_min is larger than max")
    } else if min < -1 {
        Some("cluster.replication_factor_min is wrong")
    } else if max < -1 {
        Some("cluster.replication_factor_max is wrong")
    } else if (min == -1) != (max == -1) {
        Some("cluster.replication_factor_min and max must be -1 when one of them is")
    } else {
        None
    }
}

/// The reference's rules for a pin against the one already in the pinset
/// (its `setupPin`), in its order and with its texts: no expiry in the
/// past, the same pin type, and no recursive pin turned direct.
pub(crate) fn check_repin(state: &crate::state::PinState, pin: &Pin) -> Result<(), String> {
    if pin
        .options
        .expire_at
        .is_some_and(|at| at < chrono::Utc::now().fixed_offset())
    {
        return Err("pin.ExpireAt set before current time".to_string());
    }
    let Some(existing) = state.get(&pin.cid).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    if existing.pin_type != pin.pin_type {
        return Err(format!(
            "cannot repin CID with different tracking method, clear state with pin rm to \
             proceed. New: {}. Was: {}",
            pin.pin_type.as_str(),
            existing.pin_type.as_str()
        ));
    }
    if existing.options.mode == PinMode::Recursive && pin.options.mode != PinMode::Recursive {
        return Err(format!(
            "cannot repin a CID which is already pinned in recursive mode (new pin is \
             pinned as {}). Unpin it first.",
            pin.options.mode.as_str()
        ));
    }
    Ok(())
}

async fn delete_pin(raw_cid: String, ctx: Arc<ApiContext>) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    remove_pin(&ctx, cid).await
}

/// Removes `cid` from the pinset; answers with the pin as it was.
async fn remove_pin(ctx: &ApiContext, cid: Cid) -> ApiReply {
    let existing = match ctx.consensus.state().get(&cid) {
        Ok(Some(pin)) => pin,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "pin is not part of the pinset".to_string(),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match ctx.consensus.log_unpin(cid).await {
        Ok(()) => json(StatusCode::OK, &existing),
        Err(e) => consensus_error(e),
    }
}

fn consensus_error(e: ConsensusError) -> ApiReply {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn get_allocations(query: Vec<(String, String)>, ctx: Arc<ApiContext>) -> ApiReply {
    let filter = query
        .iter()
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let wanted = match PinTypeFilter::parse(filter) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let state = ctx.consensus.state().clone();
    // One blocking thread scans the store into batches of stored pins; the
    // decoding and JSON encoding, most of the work, run on two blocking
    // threads at once, batch order kept. Every channel is bounded: the
    // pinset is streamed, never loaded whole.
    let (raw_tx, raw_rx) = tokio::sync::mpsc::channel::<Result<Vec<Vec<u8>>, String>>(4);
    tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(STORED_BATCH);
        for value in state.list_stored() {
            match value {
                Ok(v) => batch.push(v),
                Err(e) => {
                    // What was read goes first, then the error.
                    if !batch.is_empty() {
                        let _ = raw_tx.blocking_send(Ok(std::mem::take(&mut batch)));
                    }
                    let _ = raw_tx.blocking_send(Err(e.to_string()));
                    return;
                }
            }
            if batch.len() == STORED_BATCH
                && raw_tx
                    .blocking_send(Ok(std::mem::take(&mut batch)))
                    .is_err()
            {
                return; // client went away
            }
        }
        if !batch.is_empty() {
            let _ = raw_tx.blocking_send(Ok(batch));
        }
    });
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use futures::StreamExt;
        let encoded = tokio_stream::wrappers::ReceiverStream::new(raw_rx)
            .map(|batch| async move {
                let values = batch?;
                tokio::task::spawn_blocking(move || encode_pins(&values, wanted))
                    .await
                    .map_err(|e| e.to_string())?
            })
            .buffered(ENCODERS);
        futures::pin_mut!(encoded);
        while let Some(item) = encoded.next().await {
            if matches!(&item, Ok(lines) if lines.is_empty()) {
                continue; // all filtered out
            }
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    reply::ndjson_lines(tokio_stream::wrappers::ReceiverStream::new(rx)).await
}

/// Stored pins per batch handed to an encoder.
const STORED_BATCH: usize = 1024;
/// Batches decoded and encoded at once.
const ENCODERS: usize = 2;

/// NDJSON lines of the stored pins of `wanted` types.
fn encode_pins(values: &[Vec<u8>], wanted: PinTypeFilter) -> Result<Vec<u8>, String> {
    // A pin with three allocations and a name is about 550 bytes of JSON:
    // sized so that a batch rarely grows (and copies) its buffer.
    let mut lines = Vec::with_capacity(values.len() * 640);
    let mut writer = PinJsonWriter::default();
    for value in values {
        writer
            .write_line(value, wanted, &mut lines)
            .map_err(|e| e.to_string())?;
    }
    Ok(lines)
}

async fn get_allocation(raw_cid: String, ctx: Arc<ApiContext>) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match ctx.consensus.state().get(&cid) {
        Ok(Some(pin)) => json(StatusCode::OK, &pin),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "pin is not part of the pinset".to_string(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `local=true` exactly (anything else is false, as in the reference).
fn local_only(query: &[(String, String)]) -> bool {
    query.iter().any(|(k, v)| k == "local" && v == "true")
}

/// What this peer's `peer_map` entries say about the peer itself.
pub(super) struct Me {
    peername: String,
    /// Its IPFS daemon's id, as the reference shows it in every entry
    /// (`ipfs_peer_id`); omitted while the daemon has not told it.
    ipfs_id: Option<PeerId>,
}

impl Me {
    pub(super) async fn of(ctx: &ApiContext) -> Me {
        let id = ctx.network.local_id().await.ok();
        Me {
            ipfs_id: id.as_ref().and_then(|id| id.ipfs_id.parse().ok()),
            peername: id.map(|id| id.peername).unwrap_or_default(),
        }
    }

    /// This peer's entry of a `peer_map`, from its tracker.
    pub(super) fn entry(&self, s: crate::pintracker::LocalStatus) -> PinInfoShort {
        PinInfoShort {
            peername: self.peername.clone(),
            ipfs_peer_id: self.ipfs_id,
            ipfs_peer_addresses: Vec::new(),
            status: s.status,
            timestamp: s.updated,
            error: s.error,
            attempt_count: s.attempts,
            priority_pin: s.priority,
        }
    }
}

fn entry(remote: RemoteStatus) -> PinInfoShort {
    PinInfoShort {
        peername: remote.peername,
        ipfs_peer_id: None,
        ipfs_peer_addresses: Vec::new(),
        status: TrackerStatus::from_name(&remote.status),
        timestamp: go_time::parse(&remote.updated).ok().flatten(),
        error: remote.error,
        attempt_count: remote.attempts,
        priority_pin: remote.priority,
    }
}

/// The status of `cid` on this peer and, unless `local`, on every peer of
/// the peerset, asked in parallel with a timeout: a peer that does not
/// answer is a `cluster_error` entry, never a hang. With `recover`, each
/// peer first re-queues a failed operation.
async fn cluster_status(
    ctx: &ApiContext,
    cid: &Cid,
    local: bool,
    recover: bool,
) -> Result<GlobalPinInfo, String> {
    let pin = ctx.consensus.state().get(cid).map_err(|e| e.to_string())?;
    if recover {
        ctx.tracker.recover(cid);
    }
    let mine = ctx.tracker.status(cid, pin.as_ref()).await;
    let me = Me::of(ctx).await;
    let mut peer_map = BTreeMap::new();
    peer_map.insert(ctx.network.local_peer_id().to_string(), me.entry(mine));
    if !local {
        let peers = ctx.network.peers().await.unwrap_or_default();
        let asks = peers.into_iter().map(|peer| {
            let network = ctx.network.clone();
            let cid = *cid;
            async move {
                let answer = tokio::time::timeout(
                    PEER_ID_TIMEOUT,
                    network.remote_status(peer, cid, recover),
                )
                .await;
                let info = match answer {
                    Ok(Ok(remote)) => entry(remote),
                    Ok(Err(e)) => unreachable_entry(e.to_string()),
                    Err(_) => unreachable_entry("timed out".to_string()),
                };
                (peer.to_string(), info)
            }
        });
        peer_map.extend(join_all(asks).await);
    }
    let ids = ctx.monitor.ipfs_ids(chrono::Utc::now());
    Ok(global_info(*cid, pin, with_ipfs_ids(peer_map, &ids)))
}

/// Fills each entry's `ipfs_peer_id` from its peer's live `ping` metric,
/// as the reference's peers report their daemon's id with every status.
fn with_ipfs_ids(
    mut peer_map: BTreeMap<String, PinInfoShort>,
    ids: &HashMap<String, PeerId>,
) -> BTreeMap<String, PinInfoShort> {
    for (peer, entry) in peer_map.iter_mut() {
        if entry.ipfs_peer_id.is_none() {
            entry.ipfs_peer_id = ids.get(peer).copied();
        }
    }
    peer_map
}

/// A `GlobalPinInfo` from the pin (if in the pinset) and the peers' views.
fn global_info(
    cid: Cid,
    pin: Option<Pin>,
    peer_map: BTreeMap<String, PinInfoShort>,
) -> GlobalPinInfo {
    match pin {
        Some(pin) => GlobalPinInfo {
            cid,
            name: pin.options.name,
            allocations: pin.allocations,
            origins: pin.options.origins,
            created: pin.timestamp,
            metadata: pin.options.metadata,
            peer_map,
        },
        // Not in the pinset: still 200, as the reference answers.
        None => GlobalPinInfo {
            cid,
            name: String::new(),
            allocations: Vec::new(),
            origins: Vec::new(),
            created: Some(chrono::Utc::now().fixed_offset()),
            metadata: Default::default(),
            peer_map,
        },
    }
}

/// `POST /pins/recover`: re-queues this peer's failed operations and
/// streams their new status (this peer's view; 204 when nothing failed).
/// `POST /pins/recover`: every peer re-queues its failed operations; the
/// answer is the cluster status of each pin some peer re-queued.
async fn post_recover_all(ctx: Arc<ApiContext>) -> ApiReply {
    let peers = ctx.network.peers().await.unwrap_or_default();
    let asks = peers.into_iter().map(|peer| {
        let network = ctx.network.clone();
        async move {
            match tokio::time::timeout(PEER_ID_TIMEOUT, network.remote_recover_all(peer)).await {
                Ok(Ok(cids)) => cids,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "recover-all not relayed");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(%peer, "recover-all not answered in time");
                    Vec::new()
                }
            }
        }
    });
    let mut recovered: BTreeSet<Cid> = ctx.tracker.recover_all().into_iter().collect();
    recovered.extend(join_all(asks).await.into_iter().flatten());
    if recovered.is_empty() {
        return ndjson(futures::stream::empty::<Result<GlobalPinInfo, String>>()).await;
    }
    statuses_reply(ctx, recovered.into_iter().collect(), None, false).await
}

/// CIDs per status page asked of every peer.
const STATUS_PAGE: usize = 256;

/// `GET /pins`: the status of every pin (or of `cids=`), on this peer and,
/// unless `local=true`, on every peer, streamed page by page: each page of
/// 256 CIDs is asked of all peers at once and each peer answers it from one
/// listing of its IPFS daemon. `filter` keeps the peers whose status
/// matches, and the CIDs that keep at least one.
async fn get_pins(query: Vec<(String, String)>, ctx: Arc<ApiContext>) -> ApiReply {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let filter = match StatusFilter::parse(&param("filter")) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut explicit = Vec::new();
    for raw in param("cids")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        match types::decode_cid(raw) {
            Ok(cid) => explicit.push(cid),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let filtering = !param("filter").trim().is_empty() && explicit.is_empty();
    let local = local_only(&query);
    statuses_reply(ctx, explicit, filtering.then_some(filter), local).await
}

/// Streams the cluster status of `explicit` (every pin when empty), page
/// by page, keeping only the peers whose status passes `filter`.
async fn statuses_reply(
    ctx: Arc<ApiContext>,
    explicit: Vec<Cid>,
    filter: Option<StatusFilter>,
    local: bool,
) -> ApiReply {
    let (tx, rx) = tokio::sync::mpsc::channel(STATUS_PAGE);
    tokio::spawn(async move {
        let state = ctx.consensus.state().clone();
        let (page_tx, mut pages) = tokio::sync::mpsc::channel::<Vec<(Cid, Option<Pin>)>>(2);
        tokio::task::spawn_blocking(move || {
            let mut page = Vec::with_capacity(STATUS_PAGE);
            let flush = |page: &mut Vec<(Cid, Option<Pin>)>| {
                page_tx.blocking_send(std::mem::take(page)).is_ok()
            };
            if explicit.is_empty() {
                for pin in state.list() {
                    match pin {
                        Ok(pin) => page.push((pin.cid, Some(pin))),
                        Err(e) => tracing::warn!(error = %e, "unreadable pin skipped"),
                    }
                    if page.len() == STATUS_PAGE && !flush(&mut page) {
                        return;
                    }
                }
            } else {
                for cid in explicit {
                    page.push((cid, state.get(&cid).ok().flatten()));
                    if page.len() == STATUS_PAGE && !flush(&mut page) {
                        return;
                    }
                }
            }
            if !page.is_empty() {
                flush(&mut page);
            }
        });
        let local_id = ctx.network.local_peer_id().to_string();
        let me = Me::of(&ctx).await;
        let peers = if local {
            Vec::new()
        } else {
            ctx.network.peers().await.unwrap_or_default()
        };
        while let Some(page) = pages.recv().await {
            let cids: Vec<Cid> = page.iter().map(|(c, _)| *c).collect();
            let asks = peers.iter().map(|peer| {
                let network = ctx.network.clone();
                let cids = cids.clone();
                let peer = *peer;
                async move {
                    let answer = tokio::time::timeout(
                        PEER_ID_TIMEOUT,
                        network.remote_status_many(peer, cids),
                    )
                    .await;
                    let answer = match answer {
                        Ok(Ok(statuses)) => Ok(statuses),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("timed out".to_string()),
                    };
                    (peer.to_string(), answer)
                }
            });
            let (mine, theirs) = tokio::join!(ctx.tracker.statuses(&page), join_all(asks));
            let ids = ctx.monitor.ipfs_ids(chrono::Utc::now());
            for (i, ((cid, pin), my)) in page.into_iter().zip(mine).enumerate() {
                let mut peer_map = BTreeMap::new();
                peer_map.insert(local_id.clone(), me.entry(my));
                for (peer, answer) in &theirs {
                    let info = match answer {
                        Ok(statuses) => match statuses.get(i) {
                            Some(s) => entry(s.clone()),
                            None => unreachable_entry("short answer".to_string()),
                        },
                        Err(e) => unreachable_entry(e.clone()),
                    };
                    peer_map.insert(peer.clone(), info);
                }
                if let Some(filter) = &filter {
                    peer_map.retain(|_, e| filter.matches(e.status));
                    if peer_map.is_empty() {
                        continue;
                    }
                }
                let peer_map = with_ipfs_ids(peer_map, &ids);
                if tx
                    .send(Ok::<_, String>(global_info(cid, pin, peer_map)))
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
            }
        }
    });
    ndjson(tokio_stream::wrappers::ReceiverStream::new(rx)).await
}

fn unreachable_entry(error: String) -> PinInfoShort {
    PinInfoShort {
        peername: String::new(),
        ipfs_peer_id: None,
        ipfs_peer_addresses: Vec::new(),
        status: TrackerStatus::ClusterError,
        timestamp: Some(chrono::Utc::now().fixed_offset()),
        error,
        attempt_count: 0,
        priority_pin: false,
    }
}

async fn get_status(
    raw_cid: String,
    query: Vec<(String, String)>,
    ctx: Arc<ApiContext>,
) -> ApiReply {
    status_reply(&raw_cid, &query, &ctx, false).await
}

async fn post_recover(
    raw_cid: String,
    query: Vec<(String, String)>,
    ctx: Arc<ApiContext>,
) -> ApiReply {
    status_reply(&raw_cid, &query, &ctx, true).await
}

async fn status_reply(
    raw_cid: &str,
    query: &[(String, String)],
    ctx: &ApiContext,
    recover: bool,
) -> ApiReply {
    let cid = match types::decode_cid(raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match cluster_status(ctx, &cid, local_only(query), recover).await {
        Ok(info) => json(StatusCode::OK, &info),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_keep_order_repeats_and_decode() {
        assert_eq!(
            url_pairs("name=a+b%21&meta-k=1&meta-k=2&empty="),
            vec![
                ("name".to_string(), "a b!".to_string()),
                ("meta-k".to_string(), "1".to_string()),
                ("meta-k".to_string(), "2".to_string()),
                ("empty".to_string(), String::new()),
            ]
        );
        assert_eq!(form_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn paths_keep_plus_signs() {
        assert_eq!(path_decode("a+b%20c%2B"), "a+b c+");
        assert_eq!(
            paths::path_of("ipfs/bafkqaaa/dir/a+b%20c").as_deref(),
            Some("/ipfs/bafkqaaa/dir/a+b c")
        );
    }

    #[test]
    fn only_tcp_multiaddrs_are_listen_addresses() {
        let ok: Multiaddr = "/ip4/127.0.0.1/tcp/9094".parse().unwrap();
        assert_eq!(socket_addr(&ok).unwrap().port(), 9094);
        let bad: Multiaddr = "/ip4/127.0.0.1/udp/9094".parse().unwrap();
        assert!(socket_addr(&bad).is_err());
    }
}
