//! `service.json`: the peer's configuration, in the shape ipfs-cluster 1.1.6
//! writes it, so that an existing cluster folder loads here unchanged.
//!
//! The folder (`--config`, `$PINCLUSTER_PATH`, else `~/.pincluster`) holds
//! `service.json` (this module), `identity.json` ([`crate::identity`]) and
//! `peerstore` (one multiaddr per line: the peers to dial at start).
//!
//! Loading follows the reference, so that its files mean the same thing here:
//!
//! * every component starts from its defaults and the file's values are laid
//!   on top; an absent, `null` or `""` value keeps the default, and so does a
//!   `0` where zero means nothing (replication factors, sizes, counts);
//! * **presence matters**: a missing `api.restapi`, `api.ipfsproxy`,
//!   `api.pinsvcapi`, `informer.disk`, `informer.tags` or `informer.pinqueue`
//!   is `None`, and that component is not started;
//! * keys nobody reads are ignored with a warning naming their full path
//!   (`cluster.replication_factor`), and keys named `"//"` are comments;
//! * then `CLUSTER_*` environment variables override values
//!   ([`Config::apply_env`]), then everything is checked ([`Config::validate`]).
//!
//! Where pincluster differs from the reference it says so in the file it
//! loads: only `consensus.crdt` (raft is an error), TCP only (QUIC listen
//! addresses are dropped with a warning), our own `datastore.fjall` section
//! (pebble, badger and leveldb sections are ignored with a warning), and CRDT
//! batching on by default.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::duration;
use crate::identity::{Identity, IdentityError};

/// Name of the configuration file inside the configuration folder.
pub const SERVICE_FILE: &str = "service.json";
/// Default name of the peerstore file (`cluster.peerstore_file` when empty).
pub const PEERSTORE_FILE: &str = "peerstore";

/// Why a configuration could not be loaded, checked, or written.
///
/// Every variant names where the problem is: a file, an environment variable,
/// or the key path inside `service.json` (`cluster.connection_manager.low_water`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or writing a file of the configuration folder failed.
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON.
    #[error("{}:{line}:{column}: invalid JSON: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value has the wrong type or breaks a rule.
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    /// An environment override could not be parsed or applied.
    #[error("environment variable {var}: {problem}")]
    Env { var: String, problem: String },
    /// `init` would overwrite an existing configuration.
    #[error("{} already exists; use --force to overwrite it", path.display())]
    Exists { path: PathBuf },
    /// The identity could not be read or written (during `init`).
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Go durations
// ---------------------------------------------------------------------------

/// A duration written the way Go writes `time.Duration` (`"1m0s"`, `"300ms"`).
///
/// Parsing accepts everything Go's `time.ParseDuration` accepts (units `ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`, fractions, concatenations like
/// `"1h2m3.5s"`, a bare `"0"`) except negative values, which no setting can
/// use. Display is Go's `Duration.String()`, so files we write look like the
/// reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> GoDuration {
        GoDuration(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> GoDuration {
        GoDuration(Duration::from_millis(millis))
    }

    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// A string that is not a (non-negative) Go duration.
pub use crate::duration::DurationError;

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        duration::parse_std_duration(s).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    /// Go's `time.Duration.String()`: `"0s"`, `"1.5µs"`, `"300ms"`, `"2m0.5s"`, `"1h0m0s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&duration::format_go_duration(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// The configuration
// ---------------------------------------------------------------------------

/// The whole of `service.json`, typed.
///
/// Fields are declared in the order the reference writes them, which is the
/// order [`Config::to_json_pretty`] writes them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub consensus: ConsensusConfig,
    pub api: ApiConfig,
    pub ipfs_connector: IpfsConnectorConfig,
    pub pin_tracker: PinTrackerConfig,
    pub monitor: MonitorConfig,
    pub allocator: AllocatorConfig,
    pub informer: InformerConfig,
    /// Metrics and tracing settings: kept as written (pincluster exports
    /// neither yet), so rewriting the file does not lose them.
    pub observations: Value,
    pub datastore: DatastoreConfig,
}

/// What loading produced: the configuration and what was ignored on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// One line each, naming the key: `unknown key cluster.foo ignored`.
    pub warnings: Vec<String>,
}

/// The `cluster` section: this peer and how it takes part in the cluster.
#[derive(Clone, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// Human-friendly name shown by `peers ls`; defaults to the host name.
    pub peername: String,
    /// The private-network key shared by every peer. `None` (`""` in the file)
    /// means no private network: anyone who can reach the port may join, which
    /// the daemon should say loudly at start.
    #[serde(serialize_with = "ser_secret")]
    pub secret: Option<[u8; 32]>,
    pub leave_on_shutdown: bool,
    #[serde(serialize_with = "ser_addrs")]
    pub listen_multiaddress: Vec<Multiaddr>,
    #[serde(serialize_with = "ser_addrs")]
    pub announce_multiaddress: Vec<Multiaddr>,
    #[serde(serialize_with = "ser_addrs")]
    pub no_announce_multiaddress: Vec<Multiaddr>,
    pub enable_relay_hop: bool,
    pub connection_manager: ConnectionManagerConfig,
    pub resource_manager: ResourceManagerConfig,
    pub pubsub: PubsubConfig,
    pub dial_peer_timeout: GoDuration,
    pub state_sync_interval: GoDuration,
    pub pin_recover_interval: GoDuration,
    /// -1 (with max -1) pins everywhere; else 1 ≤ min ≤ max.
    pub replication_factor_min: i32,
    pub replication_factor_max: i32,
    /// Ping metric period; the metric lives twice this long.
    pub monitor_ping_interval: GoDuration,
    pub peer_watch_interval: GoDuration,
    /// Zero disables mDNS.
    pub mdns_interval: GoDuration,
    pub pin_only_on_trusted_peers: bool,
    pub pin_only_on_untrusted_peers: bool,
    pub disable_repinning: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub follower_mode: bool,
    /// Empty means [`PEERSTORE_FILE`]; see [`ClusterConfig::peerstore_path`].
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peerstore_file: String,
    /// Peers to dial at start, each with its `/p2p/<id>`.
    #[serde(serialize_with = "ser_addr_list")]
    pub peer_addresses: Vec<Multiaddr>,
}

// Hand-written so that the cluster secret never reaches a log line.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("peername", &self.peername)
            .field("secret", &self.secret.map(|_| "<redacted>"))
            .field("leave_on_shutdown", &self.leave_on_shutdown)
            .field("listen_multiaddress", &self.listen_multiaddress)
            .field("announce_multiaddress", &self.announce_multiaddress)
            .field("no_announce_multiaddress", &self.no_announce_multiaddress)
            .field("enable_relay_hop", &self.enable_relay_hop)
            .field("connection_manager", &self.connection_manager)
            .field("resource_manager", &self.resource_manager)
            .field("pubsub", &self.pubsub)
            .field("dial_peer_timeout", &self.dial_peer_timeout)
            .field("state_sync_interval", &self.state_sync_interval)
            .field("pin_recover_interval", &self.pin_recover_interval)
            .field("replication_factor_min", &self.replication_factor_min)
            .field("replication_factor_max", &self.replication_factor_max)
            .field("monitor_ping_interval", &self.monitor_ping_interval)
            .field("peer_watch_interval", &self.peer_watch_interval)
            .field("mdns_interval", &self.mdns_interval)
            .field("pin_only_on_trusted_peers", &self.pin_only_on_trusted_peers)
            .field(
                "pin_only_on_untrusted_peers",
                &self.pin_only_on_untrusted_peers,
            )
            .field("disable_repinning", &self.disable_repinning)
            .field("follower_mode", &self.follower_mode)
            .field("peerstore_file", &self.peerstore_file)
            .field("peer_addresses", &self.peer_addresses)
            .finish()
    }
}

impl ClusterConfig {
    /// The reference's defaults, with our TCP-only listen address.
    pub fn new_default(peername: String) -> ClusterConfig {
        ClusterConfig {
            peername,
            secret: None,
            leave_on_shutdown: false,
            // The reference also listens on /udp/9096/quic; we have no QUIC.
            listen_multiaddress: vec![builtin_addr("/ip4/0.0.0.0/tcp/9096")],
            announce_multiaddress: Vec::new(),
            no_announce_multiaddress: Vec::new(),
            enable_relay_hop: true,
            connection_manager: ConnectionManagerConfig::default(),
            resource_manager: ResourceManagerConfig::default(),
            pubsub: PubsubConfig::default(),
            dial_peer_timeout: GoDuration::from_secs(3),
            state_sync_interval: GoDuration::from_secs(5 * 60),
            pin_recover_interval: GoDuration::from_secs(12 * 60),
            replication_factor_min: -1,
            replication_factor_max: -1,
            monitor_ping_interval: GoDuration::from_secs(15),
            peer_watch_interval: GoDuration::from_secs(5),
            mdns_interval: GoDuration::from_secs(10),
            pin_only_on_trusted_peers: false,
            pin_only_on_untrusted_peers: false,
            disable_repinning: true,
            follower_mode: false,
            peerstore_file: String::new(),
            peer_addresses: Vec::new(),
        }
    }

    /// The peerstore file of the configuration folder `dir`: `peerstore_file`
    /// (relative to `dir` unless absolute), or `dir/peerstore`.
    pub fn peerstore_path(&self, dir: &Path) -> PathBuf {
        if self.peerstore_file.is_empty() {
            dir.join(PEERSTORE_FILE)
        } else {
            dir.join(&self.peerstore_file)
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.listen_multiaddress.is_empty(),
            "cluster.listen_multiaddress",
            "needs at least one address",
        )?;
        for (i, addr) in self.listen_multiaddress.iter().enumerate() {
            ensure(
                !uses_udp(addr),
                format!("cluster.listen_multiaddress[{i}]"),
                format!("{addr}: pincluster listens on TCP only (it has no QUIC transport)"),
            )?;
        }
        let cm = &self.connection_manager;
        ensure(
            cm.high_water > 0,
            "cluster.connection_manager.high_water",
            "must be greater than 0",
        )?;
        ensure(
            cm.low_water > 0,
            "cluster.connection_manager.low_water",
            "must be greater than 0",
        )?;
        ensure(
            cm.low_water <= cm.high_water,
            "cluster.connection_manager.low_water",
            format!(
                "{} is greater than high_water ({})",
                cm.low_water, cm.high_water
            ),
        )?;
        positive(cm.grace_period, "cluster.connection_manager.grace_period")?;
        positive(
            self.pubsub.heartbeat_interval,
            "cluster.pubsub.heartbeat_interval",
        )?;
        positive(
            self.pubsub.seen_messages_ttl,
            "cluster.pubsub.seen_messages_ttl",
        )?;
        // gossipsub gossips about messages it still remembers.
        ensure(
            self.pubsub.history_gossip <= self.pubsub.history_length,
            "cluster.pubsub.history_gossip",
            format!(
                "{} is greater than history_length ({})",
                self.pubsub.history_gossip, self.pubsub.history_length
            ),
        )?;
        positive(self.dial_peer_timeout, "cluster.dial_peer_timeout")?;
        positive(self.state_sync_interval, "cluster.state_sync_interval")?;
        positive(self.pin_recover_interval, "cluster.pin_recover_interval")?;
        positive(self.monitor_ping_interval, "cluster.monitor_ping_interval")?;
        positive(self.peer_watch_interval, "cluster.peer_watch_interval")?;
        self.validate_replication()?;
        ensure(
            !(self.pin_only_on_trusted_peers && self.pin_only_on_untrusted_peers),
            "cluster.pin_only_on_untrusted_peers",
            "cannot be true together with pin_only_on_trusted_peers",
        )?;
        for (i, addr) in self.peer_addresses.iter().enumerate() {
            ensure(
                peer_id_of(addr).is_some(),
                format!("cluster.peer_addresses[{i}]"),
                format!("{addr} has no /p2p/<peer id> component"),
            )?;
        }
        Ok(())
    }

    fn validate_replication(&self) -> Result<(), ConfigError> {
        let (min, max) = (self.replication_factor_min, self.replication_factor_max);
        if min == -1 && max == -1 {
            return Ok(());
        }
        ensure(
            min != -1 && max != -1,
            "cluster.replication_factor_min",
            format!("min ({min}) and max ({max}) must both be -1 when one of them is"),
        )?;
        ensure(
            min >= 1,
            "cluster.replication_factor_min",
            format!("{min} must be -1 or at least 1"),
        )?;
        ensure(
            max >= 1,
            "cluster.replication_factor_max",
            format!("{max} must be -1 or at least 1"),
        )?;
        ensure(
            min <= max,
            "cluster.replication_factor_min",
            format!("{min} is greater than replication_factor_max ({max})"),
        )
    }
}

/// `cluster.connection_manager`: libp2p connection pruning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionManagerConfig {
    pub high_water: u32,
    pub low_water: u32,
    pub grace_period: GoDuration,
}

impl Default for ConnectionManagerConfig {
    fn default() -> Self {
        ConnectionManagerConfig {
            high_water: 400,
            low_water: 100,
            grace_period: GoDuration::from_secs(2 * 60),
        }
    }
}

/// `cluster.resource_manager`: libp2p resource limits (0 = computed from the machine).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceManagerConfig {
    pub enabled: bool,
    pub memory_limit_bytes: u64,
    pub file_descriptors_limit: u64,
}

impl Default for ResourceManagerConfig {
    fn default() -> Self {
        ResourceManagerConfig {
            enabled: true,
            memory_limit_bytes: 0,
            file_descriptors_limit: 0,
        }
    }
}

/// `cluster.pubsub`: gossipsub tuning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PubsubConfig {
    pub seen_messages_ttl: GoDuration,
    pub heartbeat_interval: GoDuration,
    pub d_factor: u32,
    pub history_gossip: u32,
    pub history_length: u32,
    pub flood_publish: bool,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            seen_messages_ttl: GoDuration::from_secs(30 * 60),
            heartbeat_interval: GoDuration::from_secs(10),
            d_factor: 4,
            history_gossip: 2,
            history_length: 6,
            flood_publish: false,
        }
    }
}

/// The `consensus` section. Only the CRDT consensus exists in pincluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsensusConfig {
    pub crdt: CrdtConfig,
}

/// `consensus.crdt`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrdtConfig {
    /// Names the pubsub topic and the DHT: peers with another name never meet.
    pub cluster_name: String,
    pub trusted_peers: TrustedPeers,
    pub batching: Batching,
    /// Zero disables the periodic repair walk.
    pub repair_interval: GoDuration,
    pub rebroadcast_interval: GoDuration,
    /// The metric whose senders make up the peer set.
    pub peerset_metric: String,
}

impl Default for CrdtConfig {
    fn default() -> Self {
        CrdtConfig {
            cluster_name: "ipfs-cluster".to_string(),
            trusted_peers: TrustedPeers::All,
            batching: Batching::default(),
            repair_interval: GoDuration::from_secs(60 * 60),
            rebroadcast_interval: GoDuration::from_secs(60),
            peerset_metric: "ping".to_string(),
        }
    }
}

impl CrdtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.cluster_name.is_empty(),
            "consensus.crdt.cluster_name",
            "cannot be empty",
        )?;
        ensure(
            self.batching.max_batch_size > 0,
            "consensus.crdt.batching.max_batch_size",
            "must be greater than 0",
        )?;
        ensure(
            self.batching.max_queue_size > 0,
            "consensus.crdt.batching.max_queue_size",
            "must be greater than 0",
        )?;
        positive(
            self.rebroadcast_interval,
            "consensus.crdt.rebroadcast_interval",
        )?;
        ensure(
            !self.peerset_metric.is_empty(),
            "consensus.crdt.peerset_metric",
            "cannot be empty",
        )
    }
}

/// Which peers may change the shared pinset.
///
/// In the file, a list of peer ids where `"*"` anywhere means everybody. A
/// peer always trusts itself: callers check their own id apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedPeers {
    All,
    Only(Vec<PeerId>),
}

impl TrustedPeers {
    pub fn is_trusted(&self, peer: &PeerId) -> bool {
        match self {
            TrustedPeers::All => true,
            TrustedPeers::Only(peers) => peers.contains(peer),
        }
    }
}

impl Serialize for TrustedPeers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TrustedPeers::All => s.collect_seq(["*"]),
            TrustedPeers::Only(peers) => s.collect_seq(peers.iter().map(|p| p.to_base58())),
        }
    }
}

/// `consensus.crdt.batching`: how many pin changes go into one CRDT delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batching {
    pub max_batch_size: usize,
    pub max_batch_age: GoDuration,
    pub max_queue_size: usize,
}

impl Default for Batching {
    /// On by default, unlike the reference (which writes 0 = off): every delta
    /// is a signed block that each peer fetches and merges, and one delta per
    /// pin is what makes the reference slow under load. Batching is group
    /// commit: the writes waiting when a commit starts share its delta (up to
    /// `max_batch_size`), so a lone pin commits at once and a burst shares
    /// blocks. `max_batch_age` > 0 additionally lingers that long for more
    /// writes before committing (the reference's behaviour); 0 never waits.
    /// A reference file's `max_batch_size: 0` keeps the default; set it to 1
    /// for one block per change.
    fn default() -> Self {
        Batching {
            max_batch_size: 1000,
            max_batch_age: GoDuration::ZERO,
            max_queue_size: 50_000,
        }
    }
}

/// The `api` section: each API runs only if its key is present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipfsproxy: Option<IpfsProxyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinsvcapi: Option<RestApiConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restapi: Option<RestApiConfig>,
}

impl Default for ApiConfig {
    /// What `init` writes: all three APIs on.
    fn default() -> Self {
        ApiConfig {
            ipfsproxy: Some(IpfsProxyConfig::default()),
            pinsvcapi: Some(RestApiConfig::pinsvcapi_default()),
            restapi: Some(RestApiConfig::restapi_default()),
        }
    }
}

/// `api.restapi` and `api.pinsvcapi` (same keys, different default port).
#[derive(Clone, PartialEq, Serialize)]
pub struct RestApiConfig {
    /// An empty list in the file keeps the default: the API cannot be
    /// switched off that way, only by removing its section.
    #[serde(serialize_with = "ser_addrs")]
    pub http_listen_multiaddress: Vec<Multiaddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key_file: Option<String>,
    pub read_timeout: GoDuration,
    pub read_header_timeout: GoDuration,
    pub write_timeout: GoDuration,
    pub idle_timeout: GoDuration,
    pub max_header_bytes: usize,
    /// The API over libp2p: all three keys or none.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_addrs")]
    pub libp2p_listen_multiaddress: Vec<Multiaddr>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    pub id: Option<PeerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// `None` (null): no authentication. `{}` is invalid.
    pub basic_auth_credentials: Option<BTreeMap<String, String>>,
    pub http_log_file: String,
    /// Added to every JSON response.
    pub headers: BTreeMap<String, Vec<String>>,
    pub cors_allowed_origins: Vec<String>,
    pub cors_allowed_methods: Vec<String>,
    pub cors_allowed_headers: Vec<String>,
    pub cors_exposed_headers: Vec<String>,
    pub cors_allow_credentials: bool,
    pub cors_max_age: GoDuration,
}

// Hand-written so that passwords and keys never reach a log line.
impl fmt::Debug for RestApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = self
            .basic_auth_credentials
            .as_ref()
            .map(|creds| creds.keys().collect::<Vec<_>>());
        f.debug_struct("RestApiConfig")
            .field("http_listen_multiaddress", &self.http_listen_multiaddress)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("ssl_key_file", &self.ssl_key_file)
            .field("read_timeout", &self.read_timeout)
            .field("read_header_timeout", &self.read_header_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field(
                "libp2p_listen_multiaddress",
                &self.libp2p_listen_multiaddress,
            )
            .field("id", &self.id)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("basic_auth_users", &users)
            .field("http_log_file", &self.http_log_file)
            .field("headers", &self.headers)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("cors_allowed_methods", &self.cors_allowed_methods)
            .field("cors_allowed_headers", &self.cors_allowed_headers)
            .field("cors_exposed_headers", &self.cors_exposed_headers)
            .field("cors_allow_credentials", &self.cors_allow_credentials)
            .field("cors_max_age", &self.cors_max_age)
            .finish()
    }
}

/// Smallest `max_header_bytes` an HTTP server may be given (Go's default).
pub const MIN_MAX_HEADER_BYTES: usize = 4096;

impl RestApiConfig {
    /// `api.restapi` as `init` writes it.
    pub fn restapi_default() -> RestApiConfig {
        RestApiConfig::with_listen("/ip4/127.0.0.1/tcp/9094")
    }

    /// `api.pinsvcapi` as `init` writes it.
    pub fn pinsvcapi_default() -> RestApiConfig {
        RestApiConfig::with_listen("/ip4/127.0.0.1/tcp/9097")
    }

    fn with_listen(addr: &'static str) -> RestApiConfig {
        RestApiConfig {
            http_listen_multiaddress: vec![builtin_addr(addr)],
            ssl_cert_file: None,
            ssl_key_file: None,
            read_timeout: GoDuration::ZERO,
            read_header_timeout: GoDuration::from_secs(5),
            write_timeout: GoDuration::ZERO,
            idle_timeout: GoDuration::from_secs(2 * 60),
            max_header_bytes: MIN_MAX_HEADER_BYTES,
            libp2p_listen_multiaddress: Vec::new(),
            id: None,
            private_key: None,
            basic_auth_credentials: None,
            http_log_file: String::new(),
            headers: BTreeMap::new(),
            cors_allowed_origins: strings(&["*"]),
            cors_allowed_methods: strings(&["GET"]),
            cors_allowed_headers: Vec::new(),
            cors_exposed_headers: strings(&[
                "Content-Type",
                "X-Stream-Output",
                "X-Chunked-Output",
                "X-Content-Length",
            ]),
            cors_allow_credentials: true,
            cors_max_age: GoDuration::ZERO,
        }
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{path}.{k}");
        ensure(
            !self.http_listen_multiaddress.is_empty(),
            key("http_listen_multiaddress"),
            "needs at least one address",
        )?;
        ensure(
            self.ssl_cert_file.is_some() == self.ssl_key_file.is_some(),
            key("ssl_key_file"),
            "ssl_cert_file and ssl_key_file go together: set both or neither",
        )?;
        validate_max_header_bytes(self.max_header_bytes, &key("max_header_bytes"))?;
        let libp2p = [
            !self.libp2p_listen_multiaddress.is_empty(),
            self.id.is_some(),
            self.private_key.is_some(),
        ];
        ensure(
            libp2p.iter().all(|set| *set) || libp2p.iter().all(|set| !set),
            key("libp2p_listen_multiaddress"),
            "libp2p_listen_multiaddress, id and private_key go together: set all three or none",
        )?;
        if let Some(creds) = &self.basic_auth_credentials {
            ensure(
                !creds.is_empty(),
                key("basic_auth_credentials"),
                "{} is invalid: use null to disable authentication",
            )?;
            ensure(
                !creds.contains_key(""),
                key("basic_auth_credentials"),
                "a user name cannot be empty",
            )?;
        }
        Ok(())
    }
}

/// `api.ipfsproxy`: the Kubo-RPC-compatible proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpfsProxyConfig {
    #[serde(serialize_with = "ser_addrs")]
    pub listen_multiaddress: Vec<Multiaddr>,
    /// The IPFS daemon requests are forwarded to.
    #[serde(serialize_with = "ser_display")]
    pub node_multiaddress: Multiaddr,
    #[serde(skip_serializing_if = "is_false")]
    pub node_https: bool,
    /// Access log, relative to the configuration folder; empty = the logger.
    pub log_file: String,
    pub read_timeout: GoDuration,
    pub read_header_timeout: GoDuration,
    pub write_timeout: GoDuration,
    pub idle_timeout: GoDuration,
    pub max_header_bytes: usize,
    /// Extra IPFS response headers copied onto proxied responses.
    pub extract_headers_extra: Vec<String>,
    /// The IPFS endpoint whose headers are copied.
    pub extract_headers_path: String,
    /// How long copied headers are kept; zero = never refreshed.
    pub extract_headers_ttl: GoDuration,
}

impl Default for IpfsProxyConfig {
    fn default() -> Self {
        IpfsProxyConfig {
            listen_multiaddress: vec![builtin_addr("/ip4/127.0.0.1/tcp/9095")],
            node_multiaddress: builtin_addr("/ip4/127.0.0.1/tcp/5001"),
            node_https: false,
            log_file: String::new(),
            read_timeout: GoDuration::ZERO,
            read_header_timeout: GoDuration::from_secs(5),
            write_timeout: GoDuration::ZERO,
            idle_timeout: GoDuration::from_secs(60),
            max_header_bytes: MIN_MAX_HEADER_BYTES,
            extract_headers_extra: Vec::new(),
            extract_headers_path: "/api/v0/version".to_string(),
            extract_headers_ttl: GoDuration::from_secs(5 * 60),
        }
    }
}

impl IpfsProxyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.listen_multiaddress.is_empty(),
            "api.ipfsproxy.listen_multiaddress",
            "needs at least one address",
        )?;
        validate_max_header_bytes(self.max_header_bytes, "api.ipfsproxy.max_header_bytes")
    }
}

/// The `ipfs_connector` section.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct IpfsConnectorConfig {
    pub ipfshttp: IpfsHttpConfig,
}

/// `ipfs_connector.ipfshttp`: how to reach the IPFS daemon's RPC API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpfsHttpConfig {
    #[serde(serialize_with = "ser_display")]
    pub node_multiaddress: Multiaddr,
    /// `0s`: never connect the IPFS daemons of the peers to each other (the
    /// reference's meaning). Anything else: connect them as soon as a peer
    /// is known; the delay itself is not waited (see `peer.rs`).
    pub connect_swarms_delay: GoDuration,
    pub ipfs_request_timeout: GoDuration,
    /// Idle timeout of a pin: it fails when IPFS reports no progress this long.
    pub pin_timeout: GoDuration,
    pub unpin_timeout: GoDuration,
    pub repogc_timeout: GoDuration,
    /// Pins between two informer refreshes; 0 disables.
    pub informer_trigger_interval: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub unpin_disable: bool,
}

impl Default for IpfsHttpConfig {
    fn default() -> Self {
        IpfsHttpConfig {
            node_multiaddress: builtin_addr("/ip4/127.0.0.1/tcp/5001"),
            connect_swarms_delay: GoDuration::from_secs(30),
            ipfs_request_timeout: GoDuration::from_secs(5 * 60),
            pin_timeout: GoDuration::from_secs(2 * 60),
            unpin_timeout: GoDuration::from_secs(3 * 60 * 60),
            repogc_timeout: GoDuration::from_secs(24 * 60 * 60),
            informer_trigger_interval: 0,
            unpin_disable: false,
        }
    }
}

/// The `pin_tracker` section.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct PinTrackerConfig {
    pub stateless: StatelessConfig,
}

/// `pin_tracker.stateless`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatelessConfig {
    pub concurrent_pins: usize,
    /// Pins younger than this, with few failures, jump the queue.
    pub priority_pin_max_age: GoDuration,
    pub priority_pin_max_retries: u32,
    pub max_pin_queue_size: usize,
    /// Attempts before an operation stays in `pin_error`/`unpin_error` until
    /// recovered (beyond the reference, which retries only on recover).
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each attempt.
    pub retry_backoff: GoDuration,
}

impl Default for StatelessConfig {
    fn default() -> Self {
        StatelessConfig {
            concurrent_pins: 10,
            priority_pin_max_age: GoDuration::from_secs(24 * 60 * 60),
            priority_pin_max_retries: 5,
            max_pin_queue_size: 1_000_000,
            max_attempts: 5,
            retry_backoff: GoDuration(Duration::from_millis(500)),
        }
    }
}

/// The `monitor` section.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct MonitorConfig {
    pub pubsubmon: PubsubMonConfig,
}

/// `monitor.pubsubmon`: metrics are broadcast on the `monitor.metrics` topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PubsubMonConfig {
    pub check_interval: GoDuration,
}

impl Default for PubsubMonConfig {
    fn default() -> Self {
        PubsubMonConfig {
            check_interval: GoDuration::from_secs(15),
        }
    }
}

/// The `allocator` section.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AllocatorConfig {
    pub balanced: BalancedConfig,
}

/// `allocator.balanced`: the metrics allocations are sorted by, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalancedConfig {
    pub allocate_by: Vec<String>,
}

impl Default for BalancedConfig {
    fn default() -> Self {
        BalancedConfig {
            allocate_by: strings(&["tag:group", "pinqueue", "freespace"]),
        }
    }
}

/// The `informer` section: each informer runs only if its key is present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InformerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskInformerConfig>,
    /// Not started by the reference 1.1.6 either; kept so it survives a rewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numpin: Option<NumpinInformerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinqueue: Option<PinQueueInformerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagsInformerConfig>,
}

impl Default for InformerConfig {
    /// What `init` writes: disk, pinqueue and tags.
    fn default() -> Self {
        InformerConfig {
            disk: Some(DiskInformerConfig::default()),
            numpin: None,
            pinqueue: Some(PinQueueInformerConfig::default()),
            tags: Some(TagsInformerConfig::default()),
        }
    }
}

/// `informer.disk`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskInformerConfig {
    pub metric_ttl: GoDuration,
    pub metric_type: DiskMetricType,
}

impl Default for DiskInformerConfig {
    fn default() -> Self {
        DiskInformerConfig {
            metric_ttl: GoDuration::from_secs(30),
            metric_type: DiskMetricType::Freespace,
        }
    }
}

/// What the disk informer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMetricType {
    /// Space left in the IPFS repository (StorageMax - RepoSize).
    Freespace,
    /// Space used by the IPFS repository.
    Reposize,
}

impl FromStr for DiskMetricType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "freespace" => Ok(DiskMetricType::Freespace),
            "reposize" => Ok(DiskMetricType::Reposize),
            other => Err(format!("{other:?} is not \"freespace\" or \"reposize\"")),
        }
    }
}

/// `informer.numpin`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumpinInformerConfig {
    pub metric_ttl: GoDuration,
}

impl Default for NumpinInformerConfig {
    fn default() -> Self {
        NumpinInformerConfig {
            metric_ttl: GoDuration::from_secs(10),
        }
    }
}

/// `informer.pinqueue`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PinQueueInformerConfig {
    pub metric_ttl: GoDuration,
    /// Queue lengths are rounded down to buckets of this size, so that small
    /// differences do not reorder allocations.
    pub weight_bucket_size: u64,
}

impl Default for PinQueueInformerConfig {
    fn default() -> Self {
        PinQueueInformerConfig {
            metric_ttl: GoDuration::from_secs(30),
            weight_bucket_size: 100_000,
        }
    }
}

/// `informer.tags`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagsInformerConfig {
    pub metric_ttl: GoDuration,
    /// Replaced as a whole by the file's map (not merged with the default).
    pub tags: BTreeMap<String, String>,
}

impl Default for TagsInformerConfig {
    fn default() -> Self {
        TagsInformerConfig {
            metric_ttl: GoDuration::from_secs(30),
            tags: BTreeMap::from([("group".to_string(), "default".to_string())]),
        }
    }
}

/// The `datastore` section: pincluster keeps everything in fjall.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DatastoreConfig {
    pub fjall: FjallConfig,
}

/// `datastore.fjall`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FjallConfig {
    /// Relative to the configuration folder unless absolute.
    pub folder: String,
    pub cache_size_bytes: u64,
    pub memtable_size_bytes: u64,
    pub durability: Durability,
}

impl Default for FjallConfig {
    fn default() -> Self {
        FjallConfig {
            folder: "fjall".to_string(),
            cache_size_bytes: 64 * 1024 * 1024,
            memtable_size_bytes: 32 * 1024 * 1024,
            durability: Durability::Process,
        }
    }
}

impl FjallConfig {
    /// The store's folder for the configuration folder `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.folder)
    }
}

/// How far a commit has gone when fjall returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written to the OS: survives a crash of the process, not of the machine.
    /// The default, because whatever a power cut loses is fetched again from
    /// the other peers, and an fsync per commit would bound write throughput.
    Process,
    /// Synced to disk: survives power loss, at a cost in write latency.
    Sync,
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Durability::Process),
            "sync" => Ok(Durability::Sync),
            other => Err(format!("{other:?} is not \"process\" or \"sync\"")),
        }
    }
}

fn default_observations() -> Value {
    serde_json::json!({
        "metrics": {
            "enable_stats": false,
            "prometheus_endpoint": "/ip4/127.0.0.1/tcp/8888",
            "reporting_interval": "30s"
        },
        "tracing": {
            "enable_tracing": false,
            "jaeger_agent_endpoint": "/ip4/0.0.0.0/udp/6831",
            "sampling_prob": 0.3,
            "service_name": "cluster-daemon"
        }
    })
}

impl Config {
    /// The configuration `init` writes, without a secret; the peer name is
    /// the host name (`"pincluster"` when it cannot be found).
    pub fn new_default() -> Config {
        Config {
            cluster: ClusterConfig::new_default(hostname()),
            consensus: ConsensusConfig {
                crdt: CrdtConfig::default(),
            },
            api: ApiConfig::default(),
            ipfs_connector: IpfsConnectorConfig::default(),
            pin_tracker: PinTrackerConfig::default(),
            monitor: MonitorConfig::default(),
            allocator: AllocatorConfig::default(),
            informer: InformerConfig::default(),
            observations: default_observations(),
            datastore: DatastoreConfig::default(),
        }
    }

    /// Reads `dir/service.json`, applies the `CLUSTER_*` environment of this
    /// process, and validates.
    pub fn load(dir: &Path) -> Result<Loaded, ConfigError> {
        let path = dir.join(SERVICE_FILE);
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let mut loaded = parse(&text, &path)?;
        loaded.config.apply_env(|var| std::env::var(var).ok())?;
        loaded.config.validate()?;
        Ok(loaded)
    }

    /// Like [`Config::load`] for a JSON text, without any environment override.
    pub fn from_json(text: &str) -> Result<Loaded, ConfigError> {
        let loaded = parse(text, Path::new("<json>"))?;
        loaded.config.validate()?;
        Ok(loaded)
    }

    /// Applies `CLUSTER_*` overrides found through `lookup` (spec §4.2).
    ///
    /// The variable for a key is `CLUSTER_` + component + key path, upper
    /// case, underscores inside names removed: `cluster.listen_multiaddress`
    /// is `CLUSTER_LISTENMULTIADDRESS`, `consensus.crdt.batching.max_batch_size`
    /// is `CLUSTER_CRDT_BATCHING_MAXBATCHSIZE`. Lists are comma-separated, maps
    /// are `k:v,k2:v2`, booleans as Go's `strconv.ParseBool`. Empty variables
    /// count as unset.
    ///
    /// Like the reference (envconfig on its JSON-shaped structs), overrides
    /// are applied to the JSON form and re-read, so the file's rules hold for
    /// them too: `0` keeps a default, and a component absent from the file is
    /// not created by a variable. Does not validate: call
    /// [`Config::validate`] after.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut root = serde_json::to_value(&*self).expect("the configuration always serializes");
        let mut applied = Vec::new();
        if let Value::Object(sections) = &mut root {
            for (section, value) in sections.iter_mut() {
                let Value::Object(components) = value else {
                    continue;
                };
                if section == "cluster" {
                    env_walk(components, "cluster", "CLUSTER", &lookup, &mut applied)?;
                    continue;
                }
                for (component, value) in components.iter_mut() {
                    if let Value::Object(keys) = value {
                        let path = format!("{section}.{component}");
                        let prefix = format!("CLUSTER_{}", env_word(component));
                        env_walk(keys, &path, &prefix, &lookup, &mut applied)?;
                    }
                }
            }
        }
        if applied.is_empty() {
            return Ok(());
        }
        // The JSON form of a valid configuration reads back without warnings;
        // only the overridden values can fail here, so errors name their variable.
        let mut ignored = Vec::new();
        *self = read_config(&root, &mut ignored).map_err(|e| blame_env(e, &applied))?;
        Ok(())
    }

    /// Checks the rules the reference checks, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster.validate()?;
        self.consensus.crdt.validate()?;
        if let Some(proxy) = &self.api.ipfsproxy {
            proxy.validate()?;
        }
        if let Some(api) = &self.api.pinsvcapi {
            api.validate("api.pinsvcapi")?;
        }
        if let Some(api) = &self.api.restapi {
            api.validate("api.restapi")?;
        }
        let stateless = &self.pin_tracker.stateless;
        ensure(
            stateless.concurrent_pins > 0,
            "pin_tracker.stateless.concurrent_pins",
            "must be greater than 0",
        )?;
        ensure(
            stateless.max_pin_queue_size > 0,
            "pin_tracker.stateless.max_pin_queue_size",
            "must be greater than 0",
        )?;
        positive(
            self.monitor.pubsubmon.check_interval,
            "monitor.pubsubmon.check_interval",
        )?;
        ensure(
            !self.allocator.balanced.allocate_by.is_empty(),
            "allocator.balanced.allocate_by",
            "needs at least one metric",
        )?;
        let informer = &self.informer;
        if let Some(disk) = &informer.disk {
            positive(disk.metric_ttl, "informer.disk.metric_ttl")?;
        }
        if let Some(numpin) = &informer.numpin {
            positive(numpin.metric_ttl, "informer.numpin.metric_ttl")?;
        }
        if let Some(pinqueue) = &informer.pinqueue {
            positive(pinqueue.metric_ttl, "informer.pinqueue.metric_ttl")?;
            ensure(
                pinqueue.weight_bucket_size > 0,
                "informer.pinqueue.weight_bucket_size",
                "must be greater than 0",
            )?;
        }
        if let Some(tags) = &informer.tags {
            positive(tags.metric_ttl, "informer.tags.metric_ttl")?;
        }
        ensure(
            self.observations.is_object(),
            "observations",
            "must be an object",
        )?;
        let fjall = &self.datastore.fjall;
        ensure(
            !fjall.folder.is_empty(),
            "datastore.fjall.folder",
            "cannot be empty",
        )?;
        ensure(
            fjall.cache_size_bytes > 0,
            "datastore.fjall.cache_size_bytes",
            "must be greater than 0",
        )?;
        ensure(
            fjall.memtable_size_bytes > 0,
            "datastore.fjall.memtable_size_bytes",
            "must be greater than 0",
        )
    }

    /// The file as `init` writes it: 2-space indented, every section, keys in
    /// the reference's order, ending with a newline.
    pub fn to_json_pretty(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(self).expect("the configuration always serializes");
        text.push('\n');
        text
    }

    /// Writes `dir/service.json` atomically (temporary file, then rename),
    /// readable by the owner only since it holds the cluster secret.
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        let path = dir.join(SERVICE_FILE);
        write_atomic(&path, self.to_json_pretty().as_bytes()).map_err(io_error(&path))
    }
}

// ---------------------------------------------------------------------------
// init
// ---------------------------------------------------------------------------

/// What `init` was asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Overwrite an existing `service.json`.
    pub force: bool,
    /// Peer name; `None` = the host name.
    pub peername: Option<String>,
    pub secret: SecretChoice,
    /// `--peers`: multiaddrs with `/p2p/<id>`, written to the peerstore,
    /// `cluster.peer_addresses` and `consensus.crdt.trusted_peers`.
    pub peers: Vec<Multiaddr>,
}

/// Where the cluster secret of a new configuration comes from.
#[derive(Debug, Clone)]
pub enum SecretChoice {
    /// `$CLUSTER_SECRET` when set, else 32 random bytes.
    Generate,
    /// No private network.
    None,
    /// 64 hex characters given by the user.
    Hex(String),
}

/// What `init` did.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// This peer's id (from the new or the kept identity).
    pub peer_id: PeerId,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub kept: Vec<PathBuf>,
}

/// `init`: creates `dir` with `service.json`, `identity.json` and `peerstore`.
///
/// Refuses when `service.json` exists, unless `force`. An existing
/// `identity.json` is always kept (even with `force`): losing it would give
/// the peer a new id that the others do not trust. An existing peerstore is
/// kept unless `peers` are given.
pub fn init_folder(dir: &Path, opts: &InitOptions) -> Result<InitReport, ConfigError> {
    init_folder_with_env(dir, opts, |var| std::env::var(var).ok())
}

/// [`init_folder`] with the environment (`CLUSTER_SECRET`) given as a lookup.
pub fn init_folder_with_env(
    dir: &Path,
    opts: &InitOptions,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<InitReport, ConfigError> {
    let service = dir.join(SERVICE_FILE);
    if !opts.force && exists(&service)? {
        return Err(ConfigError::Exists { path: service });
    }

    let mut config = Config::new_default();
    if let Some(name) = opts.peername.as_ref().filter(|n| !n.is_empty()) {
        config.cluster.peername = name.clone();
    }
    config.cluster.secret = match &opts.secret {
        SecretChoice::Generate => match lookup("CLUSTER_SECRET").filter(|s| !s.is_empty()) {
            Some(hex) => parse_secret(&hex).map_err(|problem| ConfigError::Env {
                var: "CLUSTER_SECRET".to_string(),
                problem,
            })?,
            None => Some(random_secret()),
        },
        SecretChoice::None => None,
        SecretChoice::Hex(hex) => parse_secret(hex).map_err(|p| invalid("cluster.secret", p))?,
    };
    if !opts.peers.is_empty() {
        let mut trusted = Vec::new();
        for (i, addr) in opts.peers.iter().enumerate() {
            let id = peer_id_of(addr).ok_or_else(|| {
                invalid(
                    format!("cluster.peer_addresses[{i}]"),
                    format!("{addr} has no /p2p/<peer id> component"),
                )
            })?;
            if !trusted.contains(&id) {
                trusted.push(id);
            }
        }
        config.consensus.crdt.trusted_peers = TrustedPeers::Only(trusted);
        config.cluster.peer_addresses = opts.peers.clone();
    }
    config.validate()?;

    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut written = Vec::new();
    let mut kept = Vec::new();

    let identity_path = Identity::path(dir);
    let identity = if exists(&identity_path)? {
        // Read it to be sure the peer can start with it.
        let identity = Identity::load_with_env(dir, |_| None)?;
        kept.push(identity_path);
        identity
    } else {
        let identity = Identity::generate();
        identity.save(dir)?;
        written.push(identity_path);
        identity
    };

    config.save(dir)?;
    written.push(service);

    let peerstore = config.cluster.peerstore_path(dir);
    if !opts.peers.is_empty() || !exists(&peerstore)? {
        let text: String = opts.peers.iter().map(|a| format!("{a}\n")).collect();
        write_atomic(&peerstore, text.as_bytes()).map_err(io_error(&peerstore))?;
        written.push(peerstore);
    } else {
        kept.push(peerstore);
    }

    Ok(InitReport {
        peer_id: identity.peer_id,
        written,
        kept,
    })
}

/// The configuration folder when none is given: `$PINCLUSTER_PATH`, else
/// `$HOME/.pincluster` (`.pincluster` when there is no home).
pub fn default_config_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("PINCLUSTER_PATH") {
        return PathBuf::from(path);
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home).join(".pincluster"),
        None => PathBuf::from(".pincluster"),
    }
}

fn exists(path: &Path) -> Result<bool, ConfigError> {
    path.try_exists().map_err(io_error(path))
}

fn random_secret() -> [u8; 32] {
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// Go's `DecodeClusterSecret`: hex; empty = no secret; otherwise exactly 32 bytes.
fn parse_secret(text: &str) -> Result<Option<[u8; 32]>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let bytes = hex::decode(text).map_err(|e| format!("not hexadecimal: {e}"))?;
    let len = bytes.len();
    <[u8; 32]>::try_from(bytes).map(Some).map_err(|_| {
        format!("is {len} bytes long, a cluster secret is 32 bytes (64 hex characters)")
    })
}

fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter()
        .filter_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .last()
}

fn uses_udp(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::Udp(_)))
}

fn builtin_addr(text: &'static str) -> Multiaddr {
    text.parse().expect("built-in multiaddrs are valid")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The machine's name, as Go's `os.Hostname` sees it on Linux.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "pincluster".to_string())
}

/// Replaces `path` with `contents` so that a crash leaves the old file or the
/// new one, never half of one. The file is readable by its owner only: the
/// configuration folder holds the cluster secret and the private key.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    // The rename is durable only once the folder itself is synced.
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading: a JSON walker that knows where it is
// ---------------------------------------------------------------------------

/// Known ipfs-cluster datastores: accepted, ignored with a warning.
const FOREIGN_DATASTORES: [&str; 4] = ["pebble", "badger", "badger3", "leveldb"];

fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; we report those apart.
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })?;
    let mut warnings = Vec::new();
    let mut config = read_config(&root, &mut warnings)?;
    // Reference files listen on QUIC as well; we keep what we can serve.
    config.cluster.listen_multiaddress.retain(|addr| {
        let keep = !uses_udp(addr);
        if !keep {
            warnings.push(format!(
                "cluster.listen_multiaddress: {addr} dropped: pincluster listens on TCP only"
            ));
        }
        keep
    });
    Ok(Loaded { config, warnings })
}

/// One JSON object of the file, with its key path and the keys read so far.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(path: String, value: &'a Value) -> Result<Obj<'a>, ConfigError> {
        match value {
            Value::Object(map) => Ok(Obj {
                path,
                map,
                seen: Vec::new(),
            }),
            other => {
                let key = if path.is_empty() {
                    "(top level)".to_string()
                } else {
                    path
                };
                Err(invalid(
                    key,
                    format!("expected an object, found {}", describe(other)),
                ))
            }
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, or `None` when it is absent, `null` or `""`: all
    /// three keep the default, as Go's JSON decoding into zero values does.
    fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        match self.map.get(key)? {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            value => Some(value),
        }
    }

    fn get<T: FromJson>(&mut self, key: &'static str) -> Result<Option<T>, ConfigError> {
        match self.value(key) {
            Some(value) => T::from_json(value, &self.path_of(key)).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `dst` when the key has a value, zero included.
    fn set<T: FromJson>(&mut self, key: &'static str, dst: &mut T) -> Result<(), ConfigError> {
        if let Some(value) = self.get(key)? {
            *dst = value;
        }
        Ok(())
    }

    /// Sets `dst` when the key has a value other than 0 or `[]`.
    fn set_nonzero<T: FromJson + Zero>(
        &mut self,
        key: &'static str,
        dst: &mut T,
    ) -> Result<(), ConfigError> {
        if let Some(value) = self.get::<T>(key)?
            && !value.is_zero()
        {
            *dst = value;
        }
        Ok(())
    }

    fn child(&mut self, key: &'static str) -> Result<Option<Obj<'a>>, ConfigError> {
        match self.value(key) {
            Some(value) => Obj::new(self.path_of(key), value).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` is present with a value.
    fn present(&mut self, key: &'static str) -> bool {
        self.value(key).is_some()
    }

    /// A key that is known and means nothing: no warning.
    fn skip(&mut self, key: &'static str) {
        self.seen.push(key);
    }

    /// A key of the reference that pincluster does not use.
    fn ignore(&mut self, key: &'static str, why: &str, warnings: &mut Vec<String>) {
        if self.present(key) {
            warnings.push(format!("{} ignored: {why}", self.path_of(key)));
        }
    }

    /// Warns about every key that nothing read (`"//"` comments excepted).
    fn finish(self, warnings: &mut Vec<String>) {
        for key in self.map.keys() {
            if key != "//" && !self.seen.contains(&key.as_str()) {
                warnings.push(format!("unknown key {} ignored", self.path_of(key)));
            }
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// A typed value read from JSON; errors name `key`.
trait FromJson: Sized {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError>;
}

fn expect_str<'v>(value: &'v Value, key: &str, what: &str) -> Result<&'v str, ConfigError> {
    value
        .as_str()
        .ok_or_else(|| invalid(key, format!("expected {what}, found {}", describe(value))))
}

impl FromJson for String {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        expect_str(value, key, "a string").map(str::to_string)
    }
}

impl FromJson for bool {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        value.as_bool().ok_or_else(|| {
            invalid(
                key,
                format!("expected true or false, found {}", describe(value)),
            )
        })
    }
}

macro_rules! integer_from_json {
    ($($t:ty),*) => {$(
        impl FromJson for $t {
            fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
                let wide = value
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| value.as_u64().map(i128::from));
                wide.and_then(|n| <$t>::try_from(n).ok()).ok_or_else(|| {
                    invalid(
                        key,
                        format!(
                            "expected an integer from {} to {}, found {}",
                            <$t>::MIN,
                            <$t>::MAX,
                            describe(value)
                        ),
                    )
                })
            }
        }
    )*};
}

integer_from_json!(i32, u32, u64, usize);

impl FromJson for GoDuration {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        expect_str(value, key, "a duration string like \"15s\"")?
            .parse()
            .map_err(|e: DurationError| invalid(key, e.to_string()))
    }
}

impl FromJson for Multiaddr {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        let text = expect_str(value, key, "a multiaddr string")?;
        // Go's `/unix` takes the rest of the address as its path; the
        // multiaddr crate stops at the next `/`. Kept without the leading
        // slash, it is written back as it was read.
        if let Some(path) = text.strip_prefix("/unix/").filter(|p| !p.is_empty()) {
            let unix = Protocol::Unix(path.to_string().into());
            return Ok(Multiaddr::empty().with(unix));
        }
        text.parse()
            .map_err(|e| invalid(key, format!("invalid multiaddr {text:?}: {e}")))
    }
}

impl FromJson for PeerId {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        let text = expect_str(value, key, "a peer id string")?;
        text.parse()
            .map_err(|e| invalid(key, format!("invalid peer id {text:?}: {e}")))
    }
}

impl FromJson for [u8; 32] {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        let text = expect_str(value, key, "a hex string")?;
        // The walker already turned "" into "no secret".
        parse_secret(text)
            .map_err(|problem| invalid(key, problem))?
            .ok_or_else(|| invalid(key, "empty"))
    }
}

/// A JSON string or an array of strings (the Go "Strings" fields).
impl FromJson for Vec<Multiaddr> {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        match value {
            Value::String(_) => Multiaddr::from_json(value, key).map(|addr| vec![addr]),
            _ => from_array(value, key, "a multiaddr or a list of multiaddrs"),
        }
    }
}

impl FromJson for Vec<String> {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        from_array(value, key, "a list of strings")
    }
}

fn from_array<T: FromJson>(value: &Value, key: &str, what: &str) -> Result<Vec<T>, ConfigError> {
    let items = value
        .as_array()
        .ok_or_else(|| invalid(key, format!("expected {what}, found {}", describe(value))))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| T::from_json(item, &format!("{key}[{i}]")))
        .collect()
}

impl<T: FromJson> FromJson for BTreeMap<String, T> {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        let map = value.as_object().ok_or_else(|| {
            invalid(
                key,
                format!("expected an object, found {}", describe(value)),
            )
        })?;
        map.iter()
            .map(|(k, v)| Ok((k.clone(), T::from_json(v, &format!("{key}.{k}"))?)))
            .collect()
    }
}

impl FromJson for TrustedPeers {
    fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
        let items: Vec<String> = from_array(value, key, "a list of peer ids or \"*\"")?;
        if items.iter().any(|item| item == "*") {
            return Ok(TrustedPeers::All);
        }
        let peers = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.parse::<PeerId>().map_err(|e| {
                    invalid(
                        format!("{key}[{i}]"),
                        format!("invalid peer id {item:?}: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedPeers::Only(peers))
    }
}

macro_rules! enum_from_json {
    ($($t:ty),*) => {$(
        impl FromJson for $t {
            fn from_json(value: &Value, key: &str) -> Result<Self, ConfigError> {
                expect_str(value, key, "a string")?.parse().map_err(|e: String| invalid(key, e))
            }
        }
    )*};
}

enum_from_json!(DiskMetricType, Durability);

/// Values for which 0 (or empty) in the file means "keep the default".
trait Zero {
    fn is_zero(&self) -> bool;
}

macro_rules! integer_zero {
    ($($t:ty),*) => {$(
        impl Zero for $t {
            fn is_zero(&self) -> bool {
                *self == 0
            }
        }
    )*};
}

integer_zero!(i32, u32, u64, usize);

impl<T> Zero for Vec<T> {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

fn read_config(root: &Value, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let mut top = Obj::new(String::new(), root)?;
    if top.present("source") {
        return Err(invalid(
            "source",
            "loading the configuration from a URL is not supported: save the fetched JSON as service.json",
        ));
    }
    // The reference's `state` section has been unused for years: drop it quietly.
    top.skip("state");
    let config = Config {
        cluster: read_cluster(top.child("cluster")?, warnings)?,
        consensus: read_consensus(top.child("consensus")?, warnings)?,
        api: read_api(top.child("api")?, warnings)?,
        ipfs_connector: read_ipfs_connector(top.child("ipfs_connector")?, warnings)?,
        pin_tracker: read_pin_tracker(top.child("pin_tracker")?, warnings)?,
        monitor: read_monitor(top.child("monitor")?, warnings)?,
        allocator: read_allocator(top.child("allocator")?, warnings)?,
        informer: read_informer(top.child("informer")?, warnings)?,
        observations: match top.child("observations")? {
            Some(obj) => without_comments(&Value::Object(obj.map.clone())),
            None => default_observations(),
        },
        datastore: read_datastore(top.child("datastore")?, warnings)?,
    };
    top.finish(warnings);
    Ok(config)
}

/// `value` without its `"//"` comment keys, at any depth.
fn without_comments(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| *key != "//")
                .map(|(key, v)| (key.clone(), without_comments(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn read_cluster(obj: Option<Obj<'_>>, w: &mut Vec<String>) -> Result<ClusterConfig, ConfigError> {
    let mut c = ClusterConfig::new_default(hostname());
    let Some(mut o) = obj else { return Ok(c) };
    o.set("peername", &mut c.peername)?;
    c.secret = o.get("secret")?;
    o.set("leave_on_shutdown", &mut c.leave_on_shutdown)?;
    // Taken as written: an empty list fails validation, as in the reference.
    o.set("listen_multiaddress", &mut c.listen_multiaddress)?;
    o.set("announce_multiaddress", &mut c.announce_multiaddress)?;
    o.set("no_announce_multiaddress", &mut c.no_announce_multiaddress)?;
    o.set("enable_relay_hop", &mut c.enable_relay_hop)?;
    if let Some(mut cm) = o.child("connection_manager")? {
        let dst = &mut c.connection_manager;
        cm.set_nonzero("high_water", &mut dst.high_water)?;
        cm.set_nonzero("low_water", &mut dst.low_water)?;
        cm.set("grace_period", &mut dst.grace_period)?;
        cm.finish(w);
    }
    if let Some(mut rm) = o.child("resource_manager")? {
        let dst = &mut c.resource_manager;
        rm.set("enabled", &mut dst.enabled)?;
        rm.set("memory_limit_bytes", &mut dst.memory_limit_bytes)?;
        rm.set("file_descriptors_limit", &mut dst.file_descriptors_limit)?;
        rm.finish(w);
    }
    if let Some(mut ps) = o.child("pubsub")? {
        let dst = &mut c.pubsub;
        ps.set("seen_messages_ttl", &mut dst.seen_messages_ttl)?;
        ps.set("heartbeat_interval", &mut dst.heartbeat_interval)?;
        ps.set_nonzero("d_factor", &mut dst.d_factor)?;
        ps.set_nonzero("history_gossip", &mut dst.history_gossip)?;
        ps.set_nonzero("history_length", &mut dst.history_length)?;
        ps.set("flood_publish", &mut dst.flood_publish)?;
        ps.finish(w);
    }
    o.set("dial_peer_timeout", &mut c.dial_peer_timeout)?;
    o.set("state_sync_interval", &mut c.state_sync_interval)?;
    o.set("pin_recover_interval", &mut c.pin_recover_interval)?;
    o.set_nonzero("replication_factor_min", &mut c.replication_factor_min)?;
    o.set_nonzero("replication_factor_max", &mut c.replication_factor_max)?;
    o.set("monitor_ping_interval", &mut c.monitor_ping_interval)?;
    o.set("peer_watch_interval", &mut c.peer_watch_interval)?;
    o.set("mdns_interval", &mut c.mdns_interval)?;
    o.set(
        "pin_only_on_trusted_peers",
        &mut c.pin_only_on_trusted_peers,
    )?;
    o.set(
        "pin_only_on_untrusted_peers",
        &mut c.pin_only_on_untrusted_peers,
    )?;
    o.set("disable_repinning", &mut c.disable_repinning)?;
    o.set("follower_mode", &mut c.follower_mode)?;
    o.set("peerstore_file", &mut c.peerstore_file)?;
    o.set("peer_addresses", &mut c.peer_addresses)?;
    let legacy = "legacy identity key: pincluster reads the identity from identity.json only";
    o.ignore("id", legacy, w);
    o.ignore("private_key", legacy, w);
    o.finish(w);
    Ok(c)
}

fn read_consensus(
    obj: Option<Obj<'_>>,
    w: &mut Vec<String>,
) -> Result<ConsensusConfig, ConfigError> {
    let missing = || {
        invalid(
            "consensus.crdt",
            "missing: pincluster needs a consensus.crdt section",
        )
    };
    let Some(mut o) = obj else {
        return Err(missing());
    };
    let raft = o.present("raft");
    let crdt = o.child("crdt")?;
    let crdt = match (crdt, raft) {
        (Some(_), true) => {
            return Err(invalid(
                "consensus",
                "both crdt and raft are present: keep only crdt (pincluster has no raft)",
            ));
        }
        (None, true) => {
            return Err(invalid(
                "consensus.raft",
                "raft consensus is not supported by pincluster: use a consensus.crdt section",
            ));
        }
        (None, false) => return Err(missing()),
        (Some(crdt), false) => read_crdt(crdt, w)?,
    };
    o.finish(w);
    Ok(ConsensusConfig { crdt })
}

fn read_crdt(mut o: Obj<'_>, w: &mut Vec<String>) -> Result<CrdtConfig, ConfigError> {
    let mut c = CrdtConfig::default();
    o.set("cluster_name", &mut c.cluster_name)?;
    o.set("trusted_peers", &mut c.trusted_peers)?;
    if let Some(mut b) = o.child("batching")? {
        // A size of 0 (the reference's "off") keeps our default: see
        // `Batching`. An age of "0s" is our default anyway: no lingering.
        b.set_nonzero("max_batch_size", &mut c.batching.max_batch_size)?;
        b.set("max_batch_age", &mut c.batching.max_batch_age)?;
        b.set_nonzero("max_queue_size", &mut c.batching.max_queue_size)?;
        b.finish(w);
    }
    o.set("repair_interval", &mut c.repair_interval)?;
    o.set("rebroadcast_interval", &mut c.rebroadcast_interval)?;
    o.set("peerset_metric", &mut c.peerset_metric)?;
    o.ignore(
        "datastore_namespace",
        "pincluster keeps the CRDT in its own fjall keyspaces",
        w,
    );
    o.finish(w);
    Ok(c)
}

fn read_api(obj: Option<Obj<'_>>, w: &mut Vec<String>) -> Result<ApiConfig, ConfigError> {
    let Some(mut o) = obj else {
        return Ok(ApiConfig {
            ipfsproxy: None,
            pinsvcapi: None,
            restapi: None,
        });
    };
    let api = ApiConfig {
        ipfsproxy: o
            .child("ipfsproxy")?
            .map(|p| read_ipfsproxy(p, w))
            .transpose()?,
        pinsvcapi: o
            .child("pinsvcapi")?
            .map(|p| read_restapi(p, RestApiConfig::pinsvcapi_default(), w))
            .transpose()?,
        restapi: o
            .child("restapi")?
            .map(|p| read_restapi(p, RestApiConfig::restapi_default(), w))
            .transpose()?,
    };
    o.finish(w);
    Ok(api)
}

fn read_restapi(
    mut o: Obj<'_>,
    mut c: RestApiConfig,
    w: &mut Vec<String>,
) -> Result<RestApiConfig, ConfigError> {
    // Spec §1.1.5 quirk: an absent cors_* key gets the CORS library's
    // default, not the one `init` writes.
    c.cors_allowed_origins = strings(&["*"]);
    c.cors_allowed_methods = strings(&["GET", "POST", "HEAD"]);
    c.cors_allowed_headers = Vec::new();
    c.cors_exposed_headers = Vec::new();
    c.cors_allow_credentials = false;
    c.cors_max_age = GoDuration::ZERO;

    o.set_nonzero("http_listen_multiaddress", &mut c.http_listen_multiaddress)?;
    c.ssl_cert_file = o.get("ssl_cert_file")?;
    c.ssl_key_file = o.get("ssl_key_file")?;
    o.set("read_timeout", &mut c.read_timeout)?;
    o.set("read_header_timeout", &mut c.read_header_timeout)?;
    o.set("write_timeout", &mut c.write_timeout)?;
    o.set("idle_timeout", &mut c.idle_timeout)?;
    o.set_nonzero("max_header_bytes", &mut c.max_header_bytes)?;
    o.set(
        "libp2p_listen_multiaddress",
        &mut c.libp2p_listen_multiaddress,
    )?;
    c.id = o.get("id")?;
    c.private_key = o.get("private_key")?;
    c.basic_auth_credentials = o.get("basic_auth_credentials")?;
    o.set("http_log_file", &mut c.http_log_file)?;
    o.set("headers", &mut c.headers)?;
    o.set("cors_allowed_origins", &mut c.cors_allowed_origins)?;
    o.set("cors_allowed_methods", &mut c.cors_allowed_methods)?;
    o.set("cors_allowed_headers", &mut c.cors_allowed_headers)?;
    o.set("cors_exposed_headers", &mut c.cors_exposed_headers)?;
    o.set("cors_allow_credentials", &mut c.cors_allow_credentials)?;
    o.set("cors_max_age", &mut c.cors_max_age)?;
    o.finish(w);
    Ok(c)
}

fn read_ipfsproxy(mut o: Obj<'_>, w: &mut Vec<String>) -> Result<IpfsProxyConfig, ConfigError> {
    let mut c = IpfsProxyConfig::default();
    o.set_nonzero("listen_multiaddress", &mut c.listen_multiaddress)?;
    o.set("node_multiaddress", &mut c.node_multiaddress)?;
    o.set("node_https", &mut c.node_https)?;
    o.set("log_file", &mut c.log_file)?;
    o.set("read_timeout", &mut c.read_timeout)?;
    o.set("read_header_timeout", &mut c.read_header_timeout)?;
    o.set("write_timeout", &mut c.write_timeout)?;
    o.set("idle_timeout", &mut c.idle_timeout)?;
    o.set_nonzero("max_header_bytes", &mut c.max_header_bytes)?;
    o.set("extract_headers_extra", &mut c.extract_headers_extra)?;
    o.set("extract_headers_path", &mut c.extract_headers_path)?;
    o.set("extract_headers_ttl", &mut c.extract_headers_ttl)?;
    o.finish(w);
    Ok(c)
}

fn read_ipfs_connector(
    obj: Option<Obj<'_>>,
    w: &mut Vec<String>,
) -> Result<IpfsConnectorConfig, ConfigError> {
    let mut c = IpfsHttpConfig::default();
    let Some(mut o) = obj else {
        return Ok(IpfsConnectorConfig { ipfshttp: c });
    };
    if let Some(mut h) = o.child("ipfshttp")? {
        h.set("node_multiaddress", &mut c.node_multiaddress)?;
        h.set("connect_swarms_delay", &mut c.connect_swarms_delay)?;
        h.set("ipfs_request_timeout", &mut c.ipfs_request_timeout)?;
        h.set("pin_timeout", &mut c.pin_timeout)?;
        h.set("unpin_timeout", &mut c.unpin_timeout)?;
        h.set("repogc_timeout", &mut c.repogc_timeout)?;
        h.set(
            "informer_trigger_interval",
            &mut c.informer_trigger_interval,
        )?;
        h.set("unpin_disable", &mut c.unpin_disable)?;
        h.finish(w);
    }
    o.finish(w);
    Ok(IpfsConnectorConfig { ipfshttp: c })
}

fn read_pin_tracker(
    obj: Option<Obj<'_>>,
    w: &mut Vec<String>,
) -> Result<PinTrackerConfig, ConfigError> {
    let mut c = StatelessConfig::default();
    let Some(mut o) = obj else {
        return Ok(PinTrackerConfig { stateless: c });
    };
    if let Some(mut s) = o.child("stateless")? {
        s.set_nonzero("concurrent_pins", &mut c.concurrent_pins)?;
        s.set("priority_pin_max_age", &mut c.priority_pin_max_age)?;
        s.set_nonzero("priority_pin_max_retries", &mut c.priority_pin_max_retries)?;
        s.set_nonzero("max_pin_queue_size", &mut c.max_pin_queue_size)?;
        s.set_nonzero("max_attempts", &mut c.max_attempts)?;
        s.set("retry_backoff", &mut c.retry_backoff)?;
        s.finish(w);
    }
    o.finish(w);
    Ok(PinTrackerConfig { stateless: c })
}

fn read_monitor(obj: Option<Obj<'_>>, w: &mut Vec<String>) -> Result<MonitorConfig, ConfigError> {
    let mut c = PubsubMonConfig::default();
    let Some(mut o) = obj else {
        return Ok(MonitorConfig { pubsubmon: c });
    };
    if let Some(mut m) = o.child("pubsubmon")? {
        m.set("check_interval", &mut c.check_interval)?;
        m.finish(w);
    }
    o.finish(w);
    Ok(MonitorConfig { pubsubmon: c })
}

fn read_allocator(
    obj: Option<Obj<'_>>,
    w: &mut Vec<String>,
) -> Result<AllocatorConfig, ConfigError> {
    // Without a balanced section the reference allocates by free space only
    // (how configs older than the balanced allocator behaved).
    let legacy = || AllocatorConfig {
        balanced: BalancedConfig {
            allocate_by: strings(&["freespace"]),
        },
    };
    let Some(mut o) = obj else {
        return Ok(legacy());
    };
    let allocator = match o.child("balanced")? {
        Some(mut b) => {
            let mut c = BalancedConfig::default();
            b.set_nonzero("allocate_by", &mut c.allocate_by)?;
            b.finish(w);
            AllocatorConfig { balanced: c }
        }
        None => legacy(),
    };
    o.finish(w);
    Ok(allocator)
}

fn read_informer(obj: Option<Obj<'_>>, w: &mut Vec<String>) -> Result<InformerConfig, ConfigError> {
    let mut informer = InformerConfig {
        disk: None,
        numpin: None,
        pinqueue: None,
        tags: None,
    };
    let Some(mut o) = obj else {
        return Ok(informer);
    };
    if let Some(mut d) = o.child("disk")? {
        let mut c = DiskInformerConfig::default();
        d.set("metric_ttl", &mut c.metric_ttl)?;
        d.set("metric_type", &mut c.metric_type)?;
        d.finish(w);
        informer.disk = Some(c);
    }
    if let Some(mut n) = o.child("numpin")? {
        let mut c = NumpinInformerConfig::default();
        n.set("metric_ttl", &mut c.metric_ttl)?;
        n.finish(w);
        informer.numpin = Some(c);
    }
    if let Some(mut p) = o.child("pinqueue")? {
        let mut c = PinQueueInformerConfig::default();
        p.set("metric_ttl", &mut c.metric_ttl)?;
        p.set_nonzero("weight_bucket_size", &mut c.weight_bucket_size)?;
        p.finish(w);
        informer.pinqueue = Some(c);
    }
    if let Some(mut t) = o.child("tags")? {
        let mut c = TagsInformerConfig::default();
        t.set("metric_ttl", &mut c.metric_ttl)?;
        t.set("tags", &mut c.tags)?;
        t.finish(w);
        informer.tags = Some(c);
    }
    o.finish(w);
    Ok(informer)
}

fn read_datastore(
    obj: Option<Obj<'_>>,
    w: &mut Vec<String>,
) -> Result<DatastoreConfig, ConfigError> {
    let mut c = FjallConfig::default();
    let Some(mut o) = obj else {
        return Ok(DatastoreConfig { fjall: c });
    };
    for name in FOREIGN_DATASTORES {
        o.ignore(
            name,
            "pincluster keeps its state in fjall (datastore.fjall)",
            w,
        );
    }
    if let Some(mut f) = o.child("fjall")? {
        f.set("folder", &mut c.folder)?;
        f.set_nonzero("cache_size_bytes", &mut c.cache_size_bytes)?;
        f.set_nonzero("memtable_size_bytes", &mut c.memtable_size_bytes)?;
        f.set("durability", &mut c.durability)?;
        f.finish(w);
    }
    o.finish(w);
    Ok(DatastoreConfig { fjall: c })
}

// ---------------------------------------------------------------------------
// Environment overrides
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum EnvKind {
    Str,
    Bool,
    Number,
    List,
    Map,
}

/// Keys that the JSON form leaves out (or writes as null) when unset, with
/// the kind of value they take, so that a variable can still set them.
const OPTIONAL_KEYS: &[(&str, &str, EnvKind)] = &[
    ("cluster", "follower_mode", EnvKind::Bool),
    ("cluster", "peerstore_file", EnvKind::Str),
    ("api.restapi", "ssl_cert_file", EnvKind::Str),
    ("api.restapi", "ssl_key_file", EnvKind::Str),
    ("api.restapi", "libp2p_listen_multiaddress", EnvKind::List),
    ("api.restapi", "id", EnvKind::Str),
    ("api.restapi", "private_key", EnvKind::Str),
    ("api.restapi", "basic_auth_credentials", EnvKind::Map),
    ("api.pinsvcapi", "ssl_cert_file", EnvKind::Str),
    ("api.pinsvcapi", "ssl_key_file", EnvKind::Str),
    ("api.pinsvcapi", "libp2p_listen_multiaddress", EnvKind::List),
    ("api.pinsvcapi", "id", EnvKind::Str),
    ("api.pinsvcapi", "private_key", EnvKind::Str),
    ("api.pinsvcapi", "basic_auth_credentials", EnvKind::Map),
    ("api.ipfsproxy", "node_https", EnvKind::Bool),
    ("ipfs_connector.ipfshttp", "unpin_disable", EnvKind::Bool),
];

/// Objects that are maps of user data rather than groups of keys.
const MAP_KEYS: [&str; 3] = ["tags", "basic_auth_credentials", "headers"];

fn env_word(name: &str) -> String {
    name.replace('_', "").to_uppercase()
}

fn env_walk(
    map: &mut Map<String, Value>,
    path: &str,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    applied: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    for (_, key, _) in OPTIONAL_KEYS.iter().filter(|(p, _, _)| *p == path) {
        map.entry(key.to_string()).or_insert(Value::Null);
    }
    for (key, value) in map.iter_mut() {
        // Headers map to lists: no textual form was ever defined for them.
        if key == "//" || key == "headers" {
            continue;
        }
        let var = format!("{prefix}_{}", env_word(key));
        let key_path = format!("{path}.{key}");
        if let Value::Object(inner) = value
            && !MAP_KEYS.contains(&key.as_str())
        {
            env_walk(inner, &key_path, &var, lookup, applied)?;
            continue;
        }
        let Some(text) = lookup(&var).filter(|t| !t.is_empty()) else {
            continue;
        };
        let kind = match value {
            // A single address is written as a string, but the key is a list.
            Value::String(_) if is_address_list(key) => EnvKind::List,
            Value::String(_) => EnvKind::Str,
            Value::Bool(_) => EnvKind::Bool,
            Value::Number(_) => EnvKind::Number,
            Value::Array(_) => EnvKind::List,
            Value::Object(_) => EnvKind::Map,
            Value::Null => match OPTIONAL_KEYS
                .iter()
                .find(|(p, k, _)| *p == path && k == key)
            {
                Some((_, _, kind)) => *kind,
                None => continue,
            },
        };
        *value = env_value(kind, &text).map_err(|problem| ConfigError::Env {
            var: var.clone(),
            problem,
        })?;
        applied.push((key_path, var));
    }
    Ok(())
}

/// The reference's "Strings" address fields (a string or an array in JSON).
fn is_address_list(key: &str) -> bool {
    key.ends_with("listen_multiaddress") || key.ends_with("announce_multiaddress")
}

fn env_value(kind: EnvKind, text: &str) -> Result<Value, String> {
    Ok(match kind {
        EnvKind::Str => Value::String(text.to_string()),
        EnvKind::Bool => Value::Bool(match text {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err(format!("{text:?} is not a boolean (true or false)")),
        }),
        EnvKind::Number => {
            let number = text
                .parse::<i64>()
                .map(serde_json::Number::from)
                .or_else(|_| text.parse::<u64>().map(serde_json::Number::from))
                .ok()
                .or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                });
            Value::Number(number.ok_or_else(|| format!("{text:?} is not a number"))?)
        }
        EnvKind::List => Value::Array(
            text.split(',')
                .map(|item| Value::String(item.trim().to_string()))
                .collect(),
        ),
        EnvKind::Map => {
            let mut map = Map::new();
            for pair in text.split(',') {
                let (k, v) = pair
                    .split_once(':')
                    .ok_or_else(|| format!("{pair:?} is not a key:value pair"))?;
                map.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
            Value::Object(map)
        }
    })
}

/// Turns an error about an overridden key into one naming its variable.
fn blame_env(err: ConfigError, applied: &[(String, String)]) -> ConfigError {
    if let ConfigError::Invalid { key, problem } = &err {
        for (path, var) in applied {
            let inside = key
                .strip_prefix(path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['[', '.']));
            if inside {
                return ConfigError::Env {
                    var: var.clone(),
                    problem: format!("{key}: {problem}"),
                };
            }
        }
    }
    err
}

// ---------------------------------------------------------------------------
// Validation and serialization helpers
// ---------------------------------------------------------------------------

fn ensure(ok: bool, key: impl Into<String>, problem: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, problem))
    }
}

fn positive(d: GoDuration, key: &str) -> Result<(), ConfigError> {
    ensure(!d.is_zero(), key, "must be greater than 0s")
}

fn validate_max_header_bytes(value: usize, key: &str) -> Result<(), ConfigError> {
    ensure(
        value >= MIN_MAX_HEADER_BYTES,
        key,
        format!("{value} is less than the minimum of {MIN_MAX_HEADER_BYTES}"),
    )
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn ser_secret<S: Serializer>(secret: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&secret.map(hex::encode).unwrap_or_default())
}

/// The reference's "Strings" fields: a single address is written as a string.
fn ser_addrs<S: Serializer>(addrs: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
    match addrs {
        [one] => s.collect_str(one),
        _ => ser_addr_list(addrs, s),
    }
}

fn ser_addr_list<S: Serializer>(addrs: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(addrs.iter().map(Multiaddr::to_string))
}

fn ser_display<S: Serializer, T: fmt::Display>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn ser_opt_display<S: Serializer, T: fmt::Display>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_go_through_serde() {
        let json = serde_json::to_string(&GoDuration::from_secs(90)).expect("serialize");
        assert_eq!(json, "\"1m30s\"");
        let back: GoDuration = serde_json::from_str("\"1h2m3.5s\"").expect("deserialize");
        assert_eq!(back.0, Duration::from_millis(3_723_500));
        assert!(serde_json::from_str::<GoDuration>("\"-1s\"").is_err());
        assert_eq!(
            "-1s".parse::<GoDuration>(),
            Err(DurationError::Negative("-1s".to_owned()))
        );
    }

    const MINIMAL: &str = r#"{"consensus": {"crdt": {}}}"#;

    #[test]
    fn a_minimal_file_gets_defaults_and_no_optional_components() {
        let loaded = Config::from_json(MINIMAL).expect("load");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!(c.consensus.crdt, CrdtConfig::default());
        assert_eq!(c.api.restapi, None);
        assert_eq!(c.informer.disk, None);
        assert_eq!(c.allocator.balanced.allocate_by, vec!["freespace"]);
    }

    #[test]
    fn zero_and_empty_keep_defaults_where_the_reference_does() {
        let loaded = Config::from_json(
            r#"{
              "cluster": {"replication_factor_min": 0, "peername": "", "mdns_interval": "0s"},
              "consensus": {"crdt": {"batching": {"max_batch_size": 0, "max_batch_age": "0s"}}},
              "api": {"restapi": {"max_header_bytes": 0, "http_listen_multiaddress": []}}
            }"#,
        )
        .expect("load");
        let c = loaded.config;
        assert_eq!(c.cluster.replication_factor_min, -1);
        assert!(!c.cluster.peername.is_empty());
        // "0s" is a value: it disables mDNS.
        assert_eq!(c.cluster.mdns_interval, GoDuration::ZERO);
        assert_eq!(c.consensus.crdt.batching, Batching::default());
        let rest = c.api.restapi.expect("restapi present");
        assert_eq!(rest.max_header_bytes, 4096);
        assert_eq!(
            rest.http_listen_multiaddress,
            RestApiConfig::restapi_default().http_listen_multiaddress
        );
    }

    #[test]
    fn absent_cors_keys_get_the_library_defaults() {
        let c = Config::from_json(r#"{"consensus": {"crdt": {}}, "api": {"restapi": {}}}"#)
            .expect("load")
            .config;
        let rest = c.api.restapi.expect("restapi");
        assert_eq!(rest.cors_allowed_methods, vec!["GET", "POST", "HEAD"]);
        assert!(rest.cors_exposed_headers.is_empty());
        assert!(!rest.cors_allow_credentials);
        assert_eq!(rest.basic_auth_credentials, None);
    }

    #[test]
    fn quic_listen_addresses_are_dropped_with_a_warning() {
        let loaded = Config::from_json(
            r#"{"cluster": {"listen_multiaddress": ["/ip4/0.0.0.0/tcp/9096", "/ip4/0.0.0.0/udp/9096/quic"]},
                "consensus": {"crdt": {}}}"#,
        )
        .expect("load");
        assert_eq!(loaded.config.cluster.listen_multiaddress.len(), 1);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("cluster.listen_multiaddress"));
    }

    #[test]
    fn unix_socket_addresses_keep_their_path_and_shape() {
        let c = Config::from_json(
            r#"{"consensus": {"crdt": {}},
                "api": {"restapi": {"http_listen_multiaddress": "/unix/run/pc/api.sock"},
                        "ipfsproxy": {"listen_multiaddress": ["/ip4/127.0.0.1/tcp/9095", "/unix/tmp/p.sock"]}}}"#,
        )
        .expect("load")
        .config;
        let rest = serde_json::to_value(c.api.restapi.expect("restapi")).expect("serialize");
        assert_eq!(rest["http_listen_multiaddress"], "/unix/run/pc/api.sock");
        let proxy = serde_json::to_value(c.api.ipfsproxy.expect("proxy")).expect("serialize");
        assert_eq!(
            proxy["listen_multiaddress"],
            serde_json::json!(["/ip4/127.0.0.1/tcp/9095", "/unix/tmp/p.sock"])
        );
    }

    #[test]
    fn raft_is_refused_by_name() {
        let err = Config::from_json(r#"{"consensus": {"raft": {}}}"#).expect_err("raft");
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "consensus.raft"),
            "{err}"
        );
        assert!(err.to_string().contains("not supported"), "{err}");
        let err = Config::from_json(r#"{"consensus": {}}"#).expect_err("no crdt");
        assert!(err.to_string().starts_with("consensus.crdt"), "{err}");
    }

    #[test]
    fn trusted_peers_star_anywhere_means_all_and_bad_ids_are_named() {
        let id = PeerId::random();
        let json = format!(r#"{{"consensus": {{"crdt": {{"trusted_peers": ["{id}", "*"]}}}}}}"#);
        let c = Config::from_json(&json).expect("load").config;
        assert_eq!(c.consensus.crdt.trusted_peers, TrustedPeers::All);

        let json = format!(r#"{{"consensus": {{"crdt": {{"trusted_peers": ["{id}", "nope"]}}}}}}"#);
        let err = Config::from_json(&json).expect_err("bad id");
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "consensus.crdt.trusted_peers[1]"),
            "{err}"
        );

        let only = TrustedPeers::Only(vec![id]);
        assert!(only.is_trusted(&id));
        assert!(!only.is_trusted(&PeerId::random()));
    }

    #[test]
    fn secrets_must_be_32_bytes_of_hex() {
        let err =
            Config::from_json(r#"{"cluster": {"secret": "abcd"}, "consensus": {"crdt": {}}}"#)
                .expect_err("short");
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "cluster.secret"),
            "{err}"
        );
        let good = "ab".repeat(32);
        let json =
            format!(r#"{{"cluster": {{"secret": "{good}"}}, "consensus": {{"crdt": {{}}}}}}"#);
        let c = Config::from_json(&json).expect("load").config;
        assert_eq!(c.cluster.secret, Some([0xab; 32]));
        assert!(
            !format!("{:?}", c.cluster).contains("171"),
            "secret leaked into Debug"
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = Config::from_json("{\n  \"cluster\": {,\n}").expect_err("syntax");
        match err {
            ConfigError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 15)),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = Config::from_json(
            r#"{"cluster": {"pubsub": {"d_factor": "four"}}, "consensus": {"crdt": {}}}"#,
        )
        .expect_err("type");
        assert_eq!(
            err.to_string(),
            "cluster.pubsub.d_factor: expected an integer from 0 to 4294967295, found string \"four\""
        );
    }

    #[test]
    fn env_lists_maps_and_booleans() {
        let mut c = Config::new_default();
        let env = BTreeMap::from([
            ("CLUSTER_FOLLOWERMODE", "true"),
            ("CLUSTER_TAGS_TAGS", "group:edge, region:eu"),
            ("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "alice:pw1,bob:pw:2"),
            ("CLUSTER_CONNECTIONMANAGER_HIGHWATER", "500"),
            ("CLUSTER_FJALL_DURABILITY", "sync"),
        ]);
        c.apply_env(|var| env.get(var).map(|v| v.to_string()))
            .expect("env");
        assert!(c.cluster.follower_mode);
        let tags = &c.informer.tags.as_ref().expect("tags").tags;
        assert_eq!(tags.get("region").map(String::as_str), Some("eu"));
        let creds = c
            .api
            .restapi
            .as_ref()
            .and_then(|r| r.basic_auth_credentials.clone());
        let creds = creds.expect("credentials");
        assert_eq!(creds.get("bob").map(String::as_str), Some("pw:2"));
        assert_eq!(c.cluster.connection_manager.high_water, 500);
        assert_eq!(c.datastore.fjall.durability, Durability::Sync);
        c.validate().expect("valid");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let mut c = Config::new_default();
        let err = c
            .apply_env(|var| (var == "CLUSTER_FOLLOWERMODE").then(|| "maybe".to_string()))
            .expect_err("bool");
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "CLUSTER_FOLLOWERMODE"),
            "{err}"
        );
        let err = c
            .apply_env(|var| (var == "CLUSTER_CRDT_TRUSTEDPEERS").then(|| "x,y".to_string()))
            .expect_err("peer ids");
        assert!(
            matches!(&err, ConfigError::Env { var, problem } if var == "CLUSTER_CRDT_TRUSTEDPEERS"
                && problem.starts_with("consensus.crdt.trusted_peers[0]")),
            "{err}"
        );
    }

    #[test]
    fn init_honours_cluster_secret_from_the_environment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = "01".repeat(32);
        let opts = InitOptions {
            force: false,
            peername: Some("p1".to_string()),
            secret: SecretChoice::Generate,
            peers: Vec::new(),
        };
        init_folder_with_env(dir.path(), &opts, |var| {
            (var == "CLUSTER_SECRET").then(|| secret.clone())
        })
        .expect("init");
        let c =
            Config::from_json(&fs::read_to_string(dir.path().join(SERVICE_FILE)).expect("read"))
                .expect("load")
                .config;
        assert_eq!(c.cluster.secret, Some([1; 32]));
        assert_eq!(c.cluster.peername, "p1");
    }
}
