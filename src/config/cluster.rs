//! The `cluster` section: this peer, its libp2p host, replication.

use std::fmt;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::Serialize;

use super::{
    ConfigError, GoDuration, PEERSTORE_FILE, builtin_addr, ensure, is_false, peer_id_of, positive,
    ser_addr_list, ser_addrs, ser_secret, uses_udp,
};

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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
