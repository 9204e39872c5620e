//! The `consensus` section: the CRDT's settings, trusted peers, batching.

use libp2p::PeerId;
use serde::{Serialize, Serializer};

use super::{ConfigError, GoDuration, ensure, positive};

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
    /// How often a trusted peer takes a signed snapshot of the pinset for
    /// joiners (only when its heads moved); zero: never.
    pub snapshot_interval: GoDuration,
    /// Drop the delta history below the snapshot this peer serves once
    /// every awaited peer has merged it (or `compaction_grace` passed);
    /// the rule is `consensus::compact`'s.
    pub compact_history: bool,
    /// How long history below a snapshot is kept for awaited peers that
    /// have not merged it yet (from the later of the snapshot and the
    /// peer's start).
    pub compaction_grace: GoDuration,
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
            snapshot_interval: GoDuration::from_secs(10 * 60),
            compact_history: true,
            compaction_grace: GoDuration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

impl CrdtConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
    /// Whether `peer` is on the list. A peer always trusts itself, which
    /// this does not say: ask [`TrustedPeers::trusted_by`].
    pub fn is_trusted(&self, peer: &PeerId) -> bool {
        match self {
            TrustedPeers::All => true,
            TrustedPeers::Only(peers) => peers.contains(peer),
        }
    }

    /// Whether the peer `local` trusts `peer`: itself always (its own deltas
    /// and metrics), the others as the list says.
    pub fn trusted_by(&self, local: &PeerId, peer: &PeerId) -> bool {
        peer == local || self.is_trusted(peer)
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
