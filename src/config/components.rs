//! The sections of the components beside the cluster: the IPFS connector,
//! the pin tracker, the monitor, the allocator, the informers, the datastore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use libp2p::Multiaddr;
use pincluster_crdt::store::{Durability, FjallOptions};
use serde::Serialize;

use super::{GoDuration, builtin_addr, is_false, ser_addrs, ser_display, strings};

/// The `ipfs_connector` section. With `embedded` present the peer runs
/// its own IPFS node and `ipfshttp` is not used; without it, the peer
/// talks to the daemon `ipfshttp` names (every configuration written
/// before the embedded node existed).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct IpfsConnectorConfig {
    pub ipfshttp: IpfsHttpConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedConfig>,
}

/// `ipfs_connector.embedded`: the peer's own IPFS node (`init` writes it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddedConfig {
    /// The block store's folder, relative to the configuration folder.
    pub datastore_path: String,
    /// What `repo/stat` reports as `StorageMax`, in bytes.
    pub storage_max: u64,
    /// Where the node answers its Kubo RPC subset (the IPFS proxy goes
    /// there): loopback, port 0 by default.
    #[serde(serialize_with = "ser_addrs")]
    pub rpc_listen_multiaddress: Vec<Multiaddr>,
    /// The read-only HTTP gateway.
    #[serde(serialize_with = "ser_addrs")]
    pub gateway_listen_multiaddress: Vec<Multiaddr>,
    /// A pin fails when it has fetched nothing for this long.
    pub pin_timeout: GoDuration,
    /// Where the node's public IPFS swarm (Bitswap, DHT) listens: all
    /// interfaces, port 4011 by default, clear of Kubo's 4001 and the
    /// cluster's 9096 so both can run beside it.
    #[serde(serialize_with = "ser_addrs")]
    pub swarm_listen_multiaddress: Vec<Multiaddr>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            datastore_path: "ipfs".to_string(),
            storage_max: 10_000_000_000,
            rpc_listen_multiaddress: vec![builtin_addr("/ip4/127.0.0.1/tcp/0")],
            gateway_listen_multiaddress: vec![builtin_addr("/ip4/127.0.0.1/tcp/8080")],
            pin_timeout: GoDuration::from_secs(2 * 60),
            swarm_listen_multiaddress: vec![builtin_addr("/ip4/0.0.0.0/tcp/4011")],
        }
    }
}

impl EmbeddedConfig {
    /// The block store's folder for the configuration folder `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.datastore_path)
    }

    /// The swarm's private key (its IPFS peer id, distinct from the
    /// cluster peer's), beside the block store's folder.
    pub fn swarm_key_path(&self, dir: &Path) -> PathBuf {
        let store = self.path(dir);
        let mut name = store.file_name().unwrap_or_default().to_os_string();
        name.push(".key");
        store.with_file_name(name)
    }
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
    /// `process` by default, because whatever a power cut loses is fetched
    /// again from the other peers, and an fsync per commit would bound write
    /// throughput.
    pub durability: Durability,
}

impl Default for FjallConfig {
    fn default() -> Self {
        FjallConfig {
            folder: "fjall".to_string(),
            // 8 MiB, not fjall's 64: listings read each block once and the
            // OS page cache holds the files anyway, so a larger cache bought
            // no speed and was most of an idle peer's memory (BENCHMARKS.md,
            // issue 13).
            cache_size_bytes: 8 * 1024 * 1024,
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

    /// The store's tuning, as [`FjallStore::open`](pincluster_crdt::store::FjallStore::open) takes it.
    pub fn store_options(&self) -> FjallOptions {
        FjallOptions {
            durability: self.durability,
            cache_bytes: self.cache_size_bytes,
            memtable_bytes: self.memtable_size_bytes,
        }
    }
}
