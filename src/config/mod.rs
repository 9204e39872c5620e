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

//! The folder's layout on disk: [`cluster`], [`consensus`], [`api`] and
//! [`components`] hold the sections, [`json`] reads the file, [`env`] lays
//! the `CLUSTER_*` variables on top, [`init`] creates a new folder.

mod api;
mod cluster;
mod components;
mod consensus;
mod env;
mod go_duration;
mod init;
mod json;
mod source;

pub use api::{ApiConfig, IpfsProxyConfig, MIN_MAX_HEADER_BYTES, RestApiConfig};
pub use cluster::{ClusterConfig, ConnectionManagerConfig, PubsubConfig, ResourceManagerConfig};
pub use components::{
    AllocatorConfig, BalancedConfig, DatastoreConfig, DiskInformerConfig, DiskMetricType,
    EmbeddedConfig, FjallConfig, InformerConfig, IpfsConnectorConfig, IpfsHttpConfig,
    MonitorConfig, NumpinInformerConfig, PinQueueInformerConfig, PinTrackerConfig, PubsubMonConfig,
    StatelessConfig, TagsInformerConfig,
};
pub use consensus::{Batching, ConsensusConfig, CrdtConfig, TrustedPeers};
pub use go_duration::{DurationError, GoDuration};
pub use init::{
    InitOptions, InitReport, IpfsChoice, SecretChoice, default_config_dir, init_folder,
    init_folder_with_env,
};
/// The durability setting is the store's own type: one name for one idea.
pub use pincluster_crdt::store::Durability;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::folder::write_atomic;
use crate::identity::IdentityError;
use json::parse;

pub use source::{Origin, SOURCE_CACHE_FILE, fetch as fetch_source, source_url};

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
    /// `"source"` could not be fetched, and no copy was cached before.
    #[error(
        "could not fetch configuration from source {url} ({reason}), and there is no cached copy at {}",
        cache.display()
    )]
    Source {
        url: String,
        reason: String,
        cache: PathBuf,
    },
    /// The configuration fetched from `"source"` has a source itself.
    #[error("{url}: a sourced configuration cannot point to another source")]
    SourceRedirect { url: String },
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
    /// `service.json`, or the `"source"` it names (fetched or cached).
    pub origin: Origin,
    /// One line each, naming the key: `unknown key cluster.foo ignored`.
    pub warnings: Vec<String>,
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
    /// process, and validates. A `"source"` is read from its cached copy,
    /// never fetched: this is for the commands that run without the daemon.
    pub fn load(dir: &Path) -> Result<Loaded, ConfigError> {
        Config::finish(source::resolve_offline(dir)?)
    }

    /// [`Config::load`] for the daemon: a `"source"` is fetched (and
    /// cached); when it cannot be, the cached copy is used and a warning
    /// says so.
    pub async fn load_fetching(dir: &Path) -> Result<Loaded, ConfigError> {
        Config::finish(source::resolve(dir).await?)
    }

    fn finish(resolved: source::Resolved) -> Result<Loaded, ConfigError> {
        let mut loaded = parse(&resolved.text, &resolved.path)?;
        loaded.origin = resolved.origin;
        loaded.warnings.splice(0..0, resolved.warnings);
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
mod tests;
