//! `pincluster follow <cluster> init|run|list|info`: the volunteer's side of
//! a collaborative cluster, after the reference's `ipfs-cluster-follow`.
//!
//! Each followed cluster lives in its own folder, `<path>/<cluster>/`
//! (`--path`, `$PINCLUSTER_FOLLOW_PATH`, else `~/.pincluster-follow`), made
//! by `init` from the template the cluster's operators publish: the
//! folder's `service.json` only names that template as its `"source"`
//! ([`crate::config`] fetches it at every start and caches a copy), beside
//! the follower's own `identity.json`.
//!
//! `run` always runs in follower mode, without the IPFS proxy, with the
//! REST API on a unix socket in the folder (`api-socket`; the
//! `CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS` variable overrides it, as in
//! the reference): no port to pick, so any number of clusters can be
//! followed side by side. `list` and `info` talk to that socket, and read
//! the folder directly when the follower is stopped.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use libp2p::Multiaddr;
use reqwest::Method;

use super::client::{ApiHost, ClientOpts, Encoding};
use crate::allocator::shard::{self, SHARD_METRIC, ShardSettings};
use crate::config::{self, Config, ConfigError, IpfsHttpConfig, RestApiConfig, SERVICE_FILE};
use crate::folder::{self, LockError};
use crate::identity::{Identity, IdentityError};
use crate::status::GlobalPinInfo;
use crate::types::IdInfo;

/// A line for the user on stdout (a closed stdout is no reason to fail).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The REST API's socket inside a follower's folder (the reference's name).
pub const API_SOCKET: &str = "api-socket";

/// The reference's default gateway: the local IPFS daemon's.
const DEFAULT_GATEWAY: &str = "127.0.0.1:8080";

/// `pincluster follow`.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// The followed cluster's name: the name of its folder under --path.
    pub cluster: String,
    /// Folder holding one folder per followed cluster [default:
    /// $PINCLUSTER_FOLLOW_PATH, else ~/.pincluster-follow].
    #[arg(
        long,
        value_name = "DIR",
        env = "PINCLUSTER_FOLLOW_PATH",
        global = true
    )]
    pub path: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: FollowCommand,
}

/// The subcommands of `follow <cluster>`.
#[derive(Debug, Subcommand)]
pub enum FollowCommand {
    /// Creates the cluster's folder from the template its operators publish
    /// (http(s):// URL, /ipfs/... or /ipns/... path, or a DNSLink name).
    Init {
        /// The template: an http(s) URL, an /ipfs/ or /ipns/ path, or a name
        /// with a DNSLink record (read as /ipns/<name>).
        template: String,
        #[command(flatten)]
        gateway: Gateway,
        #[command(flatten)]
        ipfs: IpfsChoice,
    },
    /// Runs the follower until SIGINT or SIGTERM.
    Run {
        /// Initialise from this template first, unless already initialised.
        #[arg(long, value_name = "TEMPLATE")]
        init: Option<String>,
        #[command(flatten)]
        gateway: Gateway,
        /// With --init: the IPFS node to pin to (see `init --help`).
        #[command(flatten)]
        ipfs: IpfsChoice,
        /// More peers to join (other followers, say), comma-separated
        /// multiaddrs with /p2p/<id>.
        #[arg(long, value_delimiter = ',')]
        bootstrap: Vec<Multiaddr>,
        /// Join the followers' shard: pin only this follower's share of the
        /// pinset, the shard's members holding each pin this many times.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        shard_copies: Option<u32>,
        /// With --shard-copies: the storage this follower offers, in GiB.
        /// Shares are proportional to it.
        #[arg(long, value_name = "GIB", default_value_t = 1, requires = "shard_copies",
              value_parser = clap::value_parser!(u64).range(1..))]
        budget: u64,
    },
    /// Prints the pinset with this follower's status of each pin (the
    /// pinset alone, marked "offline", while the follower is stopped).
    List,
    /// Shows the cluster, its trusted peers, the peers seen, the pins and
    /// the local IPFS daemon.
    Info,
}

/// Where /ipfs/ and /ipns/ templates are fetched from.
#[derive(Debug, Args)]
pub struct Gateway {
    /// IPFS gateway for /ipfs/, /ipns/ and DNSLink templates: host:port or
    /// a URL.
    #[arg(long = "gateway", env = "IPFS_GATEWAY", default_value = DEFAULT_GATEWAY)]
    pub address: String,
}

/// The IPFS node a new follower pins to.
#[derive(Debug, Args)]
pub struct IpfsChoice {
    /// The IPFS node this follower pins to: `embedded` (its own node, kept
    /// in the cluster's folder: nothing else to install), `template` (what
    /// the cluster's template names), `kubo` (a local Kubo at
    /// /ip4/127.0.0.1/tcp/5001), or the RPC multiaddr of an IPFS daemon.
    #[arg(
        long = "ipfs",
        value_name = "embedded|template|kubo|MULTIADDR",
        default_value = "embedded",
        value_parser = parse_ipfs_node
    )]
    pub node: IpfsNode,
}

/// See [`IpfsChoice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpfsNode {
    /// The embedded IPFS node.
    Embedded,
    /// The template's `ipfs_connector`, as the reference's followers do.
    Template,
    /// An IPFS daemon's RPC API.
    Daemon(Multiaddr),
}

fn parse_ipfs_node(text: &str) -> Result<IpfsNode, String> {
    match text {
        "embedded" => Ok(IpfsNode::Embedded),
        "template" => Ok(IpfsNode::Template),
        "kubo" => Ok(IpfsNode::Daemon(
            IpfsHttpConfig::default().node_multiaddress,
        )),
        _ => text.parse().map(IpfsNode::Daemon).map_err(|e| {
            format!("{text:?} is neither `embedded`, `template`, `kubo` nor a multiaddr: {e}")
        }),
    }
}

/// Why a follow command failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The name cannot be a folder name.
    #[error("{0:?} is not a usable cluster name: use a plain folder name")]
    BadName(String),
    /// `init` on a folder that already has a configuration.
    #[error(
        "configuration for this cluster already exists in {}: delete that folder to initialise it again",
        .0.display()
    )]
    Exists(PathBuf),
    /// Any command but `init` on a cluster that was never initialised.
    #[error(
        "cluster {cluster:?} is not initialised in {}: run `pincluster follow {cluster} init <template-url>` first",
        dir.display()
    )]
    NotInitialized { cluster: String, dir: PathBuf },
    /// The template could not be fetched at `init`: nothing was written.
    #[error("cannot fetch the template {url}: {reason}")]
    Template { url: String, reason: String },
    /// The template, or the folder's configuration, is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The follower's identity could not be read or written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A file or folder could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The follower could not start.
    #[error(transparent)]
    Peer(Box<crate::peer::PeerError>),
    /// The stopped follower's store could not be read.
    #[error("reading the pinset in {}: {reason}", dir.display())]
    Store { dir: PathBuf, reason: String },
    /// The follower's API answered, with an error.
    #[error("the follower's API answered with an error: {0}")]
    Api(String),
}

impl From<crate::peer::PeerError> for FollowError {
    fn from(e: crate::peer::PeerError) -> Self {
        FollowError::Peer(Box::new(e))
    }
}

/// Runs `follow`; returns the exit code.
pub async fn run(args: FollowArgs) -> i32 {
    let base = args.path.unwrap_or_else(default_follow_dir);
    let result = match check_name(&args.cluster) {
        Err(e) => Err(e),
        Ok(()) => {
            let dir = base.join(&args.cluster);
            match args.command {
                FollowCommand::Init {
                    template,
                    gateway,
                    ipfs,
                } => init(&args.cluster, &dir, &template, &gateway.address, &ipfs.node).await,
                FollowCommand::Run {
                    init: template,
                    gateway,
                    ipfs,
                    bootstrap,
                    shard_copies,
                    budget,
                } => {
                    let shard = shard_copies.map(|copies| ShardSettings {
                        copies: copies as usize,
                        weight: budget,
                    });
                    run_follower(
                        &args.cluster,
                        &dir,
                        template.map(|t| (t, ipfs.node)),
                        &gateway.address,
                        bootstrap,
                        shard,
                    )
                    .await
                }
                FollowCommand::List => list(&args.cluster, &dir).await,
                FollowCommand::Info => info(&args.cluster, &dir).await,
            }
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `~/.pincluster-follow`, or `./.pincluster-follow` without a home.
pub fn default_follow_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".pincluster-follow")
}

fn check_name(name: &str) -> Result<(), FollowError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !name.starts_with('-');
    if plain {
        Ok(())
    } else {
        Err(FollowError::BadName(name.to_string()))
    }
}

fn not_initialized(cluster: &str, dir: &Path) -> FollowError {
    FollowError::NotInitialized {
        cluster: cluster.to_string(),
        dir: dir.to_path_buf(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FollowError + '_ {
    move |source| FollowError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The URL a template argument names: http(s) URLs as they are; /ipfs/ and
/// /ipns/ paths through `gateway`; anything else is a DNSLink name, read
/// as /ipns/<name> as the reference does.
pub fn template_url(template: &str, gateway: &str) -> String {
    if template.starts_with("http://") || template.starts_with("https://") {
        return template.to_string();
    }
    let gateway = gateway.trim_end_matches('/');
    let gateway = if gateway.starts_with("http://") || gateway.starts_with("https://") {
        gateway.to_string()
    } else {
        format!("http://{gateway}")
    };
    if template.starts_with("/ipfs/") || template.starts_with("/ipns/") {
        format!("{gateway}{template}")
    } else {
        format!("{gateway}/ipns/{template}")
    }
}

/// `init`: fetches the template (nothing is written when it cannot be
/// fetched or is not a valid configuration), then writes the folder:
/// `service.json` naming the template as its source (with this follower's
/// own `ipfs_connector` unless the template's is chosen), the fetched copy,
/// a new identity.
async fn init(
    cluster: &str,
    dir: &Path,
    template: &str,
    gateway: &str,
    node: &IpfsNode,
) -> Result<(), FollowError> {
    if dir.join(SERVICE_FILE).exists() {
        return Err(FollowError::Exists(dir.to_path_buf()));
    }
    let url = template_url(template, gateway);
    if url != template {
        say!("{template} is read through the IPFS gateway: {url}");
    }
    let text = config::fetch_source(&url)
        .await
        .map_err(|reason| FollowError::Template {
            url: url.clone(),
            reason,
        })?;
    if config::source_url(&text)?.is_some() {
        return Err(ConfigError::SourceRedirect { url }.into());
    }
    // The template must load as it will at every start (environment aside).
    Config::from_json(&text)?;

    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let written = write_folder(dir, &url, &text, node);
    if written.is_err() && created {
        // Leave nothing half-made behind: the next `init` starts clean.
        let _ = std::fs::remove_dir_all(dir);
    }
    let peer_id = written?;
    say!(
        "Cluster {cluster:?} follower initialised in {}",
        dir.display()
    );
    say!("Peer id: {peer_id}");
    say!("Start it with: pincluster follow {cluster} run");
    match node {
        IpfsNode::Embedded => say!("(it pins with its own IPFS node, in {})", dir.display()),
        IpfsNode::Template | IpfsNode::Daemon(_) => {
            say!("(with the IPFS daemon it pins to running)")
        }
    }
    Ok(())
}

/// The follower's own `ipfs_connector` (see [`IpfsNode`]); `None` keeps
/// the template's. An embedded node gets ports free at `init` for its
/// gateway and swarm, so several followed clusters, a daemon and Kubo can
/// run on one machine without a clash, and its addresses stay the same
/// from one start to the next.
fn local_connector(node: &IpfsNode) -> Result<Option<serde_json::Value>, std::io::Error> {
    let free = |ip: &str| -> Result<u16, std::io::Error> {
        Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
    };
    Ok(match node {
        IpfsNode::Template => None,
        IpfsNode::Daemon(addr) => Some(serde_json::json!({
            "ipfshttp": { "node_multiaddress": addr.to_string() }
        })),
        IpfsNode::Embedded => Some(serde_json::json!({
            "embedded": {
                "gateway_listen_multiaddress": format!("/ip4/127.0.0.1/tcp/{}", free("127.0.0.1")?),
                "swarm_listen_multiaddress": format!("/ip4/0.0.0.0/tcp/{}", free("0.0.0.0")?),
            }
        })),
    })
}

fn write_folder(
    dir: &Path,
    url: &str,
    template: &str,
    node: &IpfsNode,
) -> Result<libp2p::PeerId, FollowError> {
    let cache = dir.join(config::SOURCE_CACHE_FILE);
    folder::write_atomic(&cache, template.as_bytes()).map_err(io(&cache))?;
    let identity = match Identity::load(dir) {
        Ok(identity) => identity,
        Err(_) if !Identity::path(dir).exists() => {
            let identity = Identity::generate();
            identity.save(dir)?;
            identity
        }
        Err(e) => return Err(e.into()),
    };
    let service = dir.join(SERVICE_FILE);
    let mut local = serde_json::json!({ "source": url });
    if let Some(connector) = local_connector(node).map_err(io(dir))? {
        local["ipfs_connector"] = connector;
    }
    let mut text = serde_json::to_string_pretty(&local).expect("a JSON object serializes");
    text.push('\n');
    folder::write_atomic(&service, text.as_bytes()).map_err(io(&service))?;
    Ok(identity.peer_id)
}

/// The follower's configuration: the template's, in follower mode, with
/// the REST API on the folder's socket (or where
/// `CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS` says) and no other API.
pub fn follower_config(dir: &Path, mut config: Config) -> Result<Config, FollowError> {
    config.cluster.follower_mode = true;
    let listen = match std::env::var("CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS") {
        Ok(text) if !text.trim().is_empty() => text
            .split(',')
            .map(|a| {
                a.trim().parse::<Multiaddr>().map_err(|e| ConfigError::Env {
                    var: "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS".into(),
                    problem: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => vec![socket_multiaddr(dir)],
    };
    let mut api = RestApiConfig::restapi_default();
    api.http_listen_multiaddress = listen;
    config.api.restapi = Some(api);
    config.api.ipfsproxy = None;
    config.api.pinsvcapi = None;
    Ok(config)
}

fn socket_path(dir: &Path) -> PathBuf {
    // Absolute, so that the address means the same from any working folder.
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .join(API_SOCKET)
}

fn socket_multiaddr(dir: &Path) -> Multiaddr {
    Multiaddr::empty().with(libp2p::multiaddr::Protocol::Unix(
        socket_path(dir).to_string_lossy().into_owned().into(),
    ))
}

async fn run_follower(
    cluster: &str,
    dir: &Path,
    template: Option<(String, IpfsNode)>,
    gateway: &str,
    bootstrap: Vec<Multiaddr>,
    shard: Option<ShardSettings>,
) -> Result<(), FollowError> {
    if let Some((template, node)) = template {
        if dir.join(SERVICE_FILE).exists() {
            say!(
                "Cluster {cluster:?} is already initialised in {}: --init skipped",
                dir.display()
            );
        } else {
            init(cluster, dir, &template, gateway, &node).await?;
        }
    }
    if !dir.join(SERVICE_FILE).exists() {
        return Err(not_initialized(cluster, dir));
    }
    let loaded = Config::load_fetching(dir).await?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let config = follower_config(dir, loaded.config)?;
    let identity = Identity::load(dir)?;
    tracing::info!(
        cluster,
        peer = %identity.peer_id,
        folder = %dir.display(),
        "starting the follower (CTRL-C to stop it)"
    );
    if let Some(shard) = shard {
        tracing::info!(
            copies = shard.copies,
            budget_gib = shard.weight,
            "sharding: this follower pins only its share of the pinset"
        );
    }
    let peer = crate::peer::Peer::start_sharded(dir, config, identity, bootstrap, shard).await?;
    super::daemon::serve_until_signal(peer).await;
    Ok(())
}

/// A client of the follower's REST API.
fn api_opts(dir: &Path) -> Result<ClientOpts, FollowError> {
    let host = match std::env::var("CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS") {
        Ok(text) if !text.trim().is_empty() => {
            let first = text.split(',').next().unwrap_or_default().trim();
            super::client::parse_host(first).map_err(|e| ConfigError::Env {
                var: "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS".into(),
                problem: e.to_string(),
            })?
        }
        _ => ApiHost::Unix(socket_path(dir)),
    };
    Ok(ClientOpts {
        host,
        encoding: Encoding::Text,
        timeout: 30,
        basic_auth: None,
        https: false,
        no_check_certificate: false,
        force_http: false,
        debug: false,
    })
}

/// What asking the running follower gave.
enum Online<T> {
    /// The follower answered.
    Yes(T),
    /// Nobody listens: the follower is stopped.
    Stopped,
}

/// Runs `call` against the follower's API; a connection that cannot be
/// made means the follower is stopped.
async fn ask<T>(
    dir: &Path,
    call: impl AsyncFnOnce(&super::client::Api) -> Result<T, super::client::CallError>,
) -> Result<Online<T>, FollowError> {
    let opts = api_opts(dir)?;
    if let ApiHost::Unix(path) = &opts.host
        && !path.exists()
    {
        return Ok(Online::Stopped);
    }
    let api = super::client::Api::new(&opts, &mut std::io::sink())
        .map_err(|e| FollowError::Api(e.to_string()))?;
    match call(&api).await {
        Ok(v) => Ok(Online::Yes(v)),
        Err(e) if e.is_connect() => Ok(Online::Stopped),
        Err(e) => Err(FollowError::Api(e.to_string())),
    }
}

/// One line of `list`, as the reference prints it.
fn print_pin(out: &mut impl std::io::Write, status: &str, cid: &str, name: &str, error: &str) {
    let name = if error.is_empty() {
        name.to_string()
    } else {
        format!("{name} ({error})")
    };
    let _ = writeln!(out, "{status:<20} {cid} {name}");
}

async fn list(cluster: &str, dir: &Path) -> Result<(), FollowError> {
    if !dir.join(SERVICE_FILE).exists() {
        return Err(not_initialized(cluster, dir));
    }
    let online = ask(dir, async |api| {
        let (members, copies) = shard_view(api).await?;
        let mut out = std::io::stdout();
        let mut print = |info: GlobalPinInfo| {
            // A follower answers for itself only: one entry per pin.
            if let Some((_, mine)) = info.peer_map.iter().next() {
                let mut name = info.name.clone();
                if !members.is_empty() && info.allocations.is_empty() {
                    let holders = shard::holders(&info.cid, &members, copies);
                    let holders: Vec<String> = holders.iter().map(|p| p.to_string()).collect();
                    name = format!("{name} [held by {}]", holders.join(", "));
                }
                print_pin(
                    &mut out,
                    mine.status.as_str(),
                    &info.cid.to_string(),
                    &name,
                    &mine.error,
                );
            }
        };
        let query = [("local".to_string(), "true".to_string())];
        api.stream(
            Method::GET,
            "/pins",
            &query,
            &mut std::io::sink(),
            &mut print,
        )
        .await
    })
    .await?;
    if let Online::Yes(()) = online {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    offline_pins(dir, |pin| {
        print_pin(
            &mut out,
            "offline",
            &pin.cid.to_string(),
            &pin.options.name,
            "",
        )
    })
    .map(|_| ())
}

/// The shard's members (peer, weight) as the follower sees them, and the
/// copies they ask for; no members when nobody shards.
async fn shard_view(
    api: &super::client::Api,
) -> Result<(Vec<(libp2p::PeerId, u64)>, usize), super::client::CallError> {
    let path = format!("/monitor/metrics/{SHARD_METRIC}");
    let metrics = api
        .call::<Vec<crate::monitor::Metric>>(Method::GET, &path, &[], &mut std::io::sink())
        .await?
        .unwrap_or_default();
    let mut copies = 0;
    let members = metrics
        .iter()
        .filter_map(|m| {
            let settings = shard::parse_value(&m.value)?;
            copies = copies.max(settings.copies);
            Some((m.peer.parse().ok()?, settings.weight))
        })
        .collect();
    Ok((members, copies))
}

/// Hands every pin of the stopped follower's store to `each`; returns how
/// many there were. Takes the folder's lock, as the daemon does.
fn offline_pins(dir: &Path, mut each: impl FnMut(crate::types::Pin)) -> Result<u64, FollowError> {
    let store_error = |reason: String| FollowError::Store {
        dir: dir.to_path_buf(),
        reason,
    };
    let _lock = folder::lock(dir).map_err(|e| match e {
        LockError::Held(path) => store_error(format!(
            "{} is locked, yet the follower's API does not answer",
            path.display()
        )),
        LockError::Io { path, source } => FollowError::Io { path, source },
    })?;
    let config = Config::load(dir)?.config;
    let path = config.datastore.fjall.path(dir);
    if !path.exists() {
        return Ok(0);
    }
    let identity = Identity::load(dir)?;
    let engine = folder::open_engine(
        &path,
        config.datastore.fjall.store_options(),
        std::sync::Arc::new(crate::consensus::PeerSigner::new(identity.keypair.clone())),
        std::sync::Arc::new(crate::consensus::PeerVerifier::new(
            config.consensus.crdt.trusted_peers.clone(),
            identity.peer_id,
        )),
    )
    .map_err(|e| store_error(e.to_string()))?;
    let state = crate::state::PinState::new(engine.reader());
    let mut n = 0;
    for pin in state.list() {
        each(pin.map_err(|e| store_error(e.to_string()))?);
        n += 1;
    }
    Ok(n)
}

async fn info(cluster: &str, dir: &Path) -> Result<(), FollowError> {
    if !dir.join(SERVICE_FILE).exists() {
        return Err(not_initialized(cluster, dir));
    }
    let mut out = std::io::stdout().lock();
    let text = std::fs::read_to_string(dir.join(SERVICE_FILE)).map_err(io(dir))?;
    let source = match config::source_url(&text)? {
        Some(url) => match config::fetch_source(&url).await {
            Ok(_) => format!("available ({url})"),
            Err(reason) => format!("unreachable ({url}: {reason}); the cached copy is used"),
        },
        None => "none (service.json is the configuration)".to_string(),
    };
    let config = Config::load(dir)?.config;
    let _ = writeln!(
        out,
        "Information about the follower of cluster {cluster:?}:\n"
    );
    let _ = writeln!(out, "Config folder: {}", dir.display());
    let _ = writeln!(out, "Config source: {source}");
    let _ = writeln!(out, "Cluster name: {}", config.consensus.crdt.cluster_name);
    let trusted = match &config.consensus.crdt.trusted_peers {
        config::TrustedPeers::All => "* (every peer)".to_string(),
        config::TrustedPeers::Only(peers) => peers
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let _ = writeln!(out, "Trusted peers: {trusted}");

    let id = ask(dir, async |api| {
        api.call::<IdInfo>(Method::GET, "/id", &[], &mut std::io::sink())
            .await
    })
    .await?;
    match id {
        Online::Yes(Some(id)) => {
            let pins = ask(dir, async |api| {
                let mut n = 0u64;
                let mut count = |_: serde_json::Value| n += 1;
                api.stream(
                    Method::GET,
                    "/allocations",
                    &[],
                    &mut std::io::sink(),
                    &mut count,
                )
                .await
                .map(|()| n)
            })
            .await?;
            let _ = writeln!(out, "Follower online: true (peer {})", id.id);
            let _ = writeln!(out, "Peers seen: {}", id.cluster_peers.len());
            if let Online::Yes((members, copies)) =
                ask(dir, async |api| shard_view(api).await).await?
                && !members.is_empty()
            {
                let _ = writeln!(
                    out,
                    "Shard: {} members, {copies} copies of each pin",
                    members.len()
                );
            }
            if let Online::Yes(n) = pins {
                let _ = writeln!(out, "Pins: {n}");
            }
            let ipfs = match (&id.ipfs.id, id.ipfs.error.as_str()) {
                (Some(peer), _) => format!("online ({peer})"),
                (None, "") => "unknown".to_string(),
                (None, error) => format!("offline ({error})"),
            };
            let _ = writeln!(out, "{} {ipfs}", ipfs_node(&config));
        }
        Online::Yes(None) | Online::Stopped => {
            let _ = writeln!(out, "Follower online: false");
            let peers = folder::read_peerstore(&config.cluster.peerstore_path(dir));
            let _ = writeln!(out, "Peers seen: {} (remembered)", peers.len());
            drop(out);
            let pins = offline_pins(dir, |_| {})?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "Pins: {pins}");
            let _ = writeln!(out, "{}", ipfs_node(&config));
        }
    }
    Ok(())
}

/// `info`'s line on the IPFS node the follower pins to.
fn ipfs_node(config: &Config) -> String {
    let join = |addrs: &[Multiaddr]| {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &config.ipfs_connector.embedded {
        Some(e) => format!(
            "IPFS node: embedded (gateway {}, swarm {})",
            join(&e.gateway_listen_multiaddress),
            join(&e.swarm_listen_multiaddress)
        ),
        None => format!(
            "IPFS daemon: {}",
            config.ipfs_connector.ipfshttp.node_multiaddress
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_resolve_as_the_reference_does() {
        let gw = "127.0.0.1:8080";
        assert_eq!(
            template_url("https://x.org/c.json", gw),
            "https://x.org/c.json"
        );
        assert_eq!(
            template_url("/ipns/collab.example/service.json", gw),
            "http://127.0.0.1:8080/ipns/collab.example/service.json"
        );
        assert_eq!(
            template_url("/ipfs/bafyabc", "http://gw.local:9000/"),
            "http://gw.local:9000/ipfs/bafyabc"
        );
        assert_eq!(
            template_url("collab.example", gw),
            "http://127.0.0.1:8080/ipns/collab.example"
        );
    }

    #[test]
    fn cluster_names_are_plain_folder_names() {
        for ok in ["wikipedia", "filecoin-params", "a.b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "-x"] {
            assert!(
                matches!(check_name(bad), Err(FollowError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_new_follower_pins_with_its_own_node_unless_told_otherwise() {
        assert_eq!(parse_ipfs_node("embedded"), Ok(IpfsNode::Embedded));
        assert_eq!(parse_ipfs_node("template"), Ok(IpfsNode::Template));
        assert_eq!(
            parse_ipfs_node("/ip4/127.0.0.1/tcp/5001"),
            Ok(IpfsNode::Daemon("/ip4/127.0.0.1/tcp/5001".parse().unwrap()))
        );
        assert_eq!(
            parse_ipfs_node("kubo"),
            Ok(IpfsNode::Daemon("/ip4/127.0.0.1/tcp/5001".parse().unwrap()))
        );
        assert!(parse_ipfs_node("go-ipfs").unwrap_err().contains("neither"));

        // The template names a Kubo; each choice decides what the follower uses.
        let mut template = Config::new_default();
        template.ipfs_connector.embedded = None;
        template.ipfs_connector.ipfshttp.node_multiaddress =
            "/ip4/10.0.0.1/tcp/5001".parse().unwrap();
        let template = template.to_json_pretty();
        let load = |node: IpfsNode| {
            let dir = tempfile::tempdir().unwrap();
            write_folder(
                dir.path(),
                "http://127.0.0.1:1/service.json",
                &template,
                &node,
            )
            .unwrap();
            Config::load(dir.path()).unwrap()
        };

        let embedded = load(IpfsNode::Embedded);
        // The local connector is not one of the keys ignored for "source".
        assert!(
            !embedded.warnings.iter().any(|w| w.contains("ignored")),
            "{:?}",
            embedded.warnings
        );
        let node = embedded
            .config
            .ipfs_connector
            .embedded
            .expect("an embedded node");
        let port = |addrs: &[Multiaddr]| {
            addrs[0].iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
        };
        // Fixed at init, not 0 (the address stays the same across starts)
        // and not the defaults a daemon on the same machine uses.
        for addrs in [
            &node.gateway_listen_multiaddress,
            &node.swarm_listen_multiaddress,
        ] {
            let port = port(addrs).expect("a TCP port");
            assert!(port != 0 && port != 8080 && port != 4011, "{addrs:?}");
        }

        let daemon = load(IpfsNode::Daemon("/ip4/127.0.0.1/tcp/5009".parse().unwrap()));
        assert!(daemon.config.ipfs_connector.embedded.is_none());
        assert_eq!(
            daemon
                .config
                .ipfs_connector
                .ipfshttp
                .node_multiaddress
                .to_string(),
            "/ip4/127.0.0.1/tcp/5009"
        );

        let templated = load(IpfsNode::Template);
        assert!(templated.config.ipfs_connector.embedded.is_none());
        assert_eq!(
            templated
                .config
                .ipfs_connector
                .ipfshttp
                .node_multiaddress
                .to_string(),
            "/ip4/10.0.0.1/tcp/5001"
        );
    }
}
