//! Reading `service.json`: a JSON walker that knows the key path it is at,
//! so that every error and warning names it.

use std::collections::BTreeMap;
use std::path::Path;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::{Map, Value};

use super::{
    AllocatorConfig, ApiConfig, BalancedConfig, ClusterConfig, Config, ConfigError,
    ConsensusConfig, CrdtConfig, DatastoreConfig, DiskInformerConfig, DiskMetricType, Durability,
    DurationError, EmbeddedConfig, FjallConfig, GoDuration, InformerConfig, IpfsConnectorConfig,
    IpfsHttpConfig, IpfsProxyConfig, Loaded, MonitorConfig, NumpinInformerConfig,
    PinQueueInformerConfig, PinTrackerConfig, PubsubMonConfig, RestApiConfig, StatelessConfig,
    TagsInformerConfig, TrustedPeers, default_observations, hostname, invalid, parse_secret,
    strings, uses_udp,
};

/// Known ipfs-cluster datastores: accepted, ignored with a warning.
const FOREIGN_DATASTORES: [&str; 4] = ["pebble", "badger", "badger3", "leveldb"];

pub(super) fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
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
    Ok(Loaded {
        config,
        origin: super::Origin::File,
        warnings,
    })
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

pub(super) fn read_config(root: &Value, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let mut top = Obj::new(String::new(), root)?;
    if top.present("source") {
        // A sourced file is resolved before it is parsed ([`super::source`]):
        // here, it is a fetched configuration naming another source.
        return Err(invalid(
            "source",
            "a sourced configuration cannot point to another source",
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
    o.set("snapshot_interval", &mut c.snapshot_interval)?;
    o.set("compact_history", &mut c.compact_history)?;
    o.set("compaction_grace", &mut c.compaction_grace)?;
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
        return Ok(IpfsConnectorConfig {
            ipfshttp: c,
            embedded: None,
        });
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
    let embedded = match o.child("embedded")? {
        None => None,
        Some(mut e) => {
            let mut c = EmbeddedConfig::default();
            e.set("datastore_path", &mut c.datastore_path)?;
            e.set("storage_max", &mut c.storage_max)?;
            e.set_nonzero("rpc_listen_multiaddress", &mut c.rpc_listen_multiaddress)?;
            e.set_nonzero(
                "gateway_listen_multiaddress",
                &mut c.gateway_listen_multiaddress,
            )?;
            e.set("pin_timeout", &mut c.pin_timeout)?;
            e.set_nonzero(
                "swarm_listen_multiaddress",
                &mut c.swarm_listen_multiaddress,
            )?;
            e.finish(w);
            Some(c)
        }
    };
    o.finish(w);
    Ok(IpfsConnectorConfig {
        ipfshttp: c,
        embedded,
    })
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
