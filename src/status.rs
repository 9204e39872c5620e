//! Pin statuses as the REST API reports them (spec §0.2, §1.2): the
//! tracker status enum with its filter semantics, the per-peer
//! `PinInfoShort` and the cluster-wide `GlobalPinInfo`.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a pin stands on one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrackerStatus {
    /// Nothing known.
    #[default]
    Undefined,
    /// The peer could not be asked.
    ClusterError,
    /// Pinning failed after the allowed attempts.
    PinError,
    /// Unpinning failed.
    UnpinError,
    /// The local IPFS daemon has it pinned.
    Pinned,
    /// `pin/add` is running.
    Pinning,
    /// `pin/rm` is running.
    Unpinning,
    /// The local IPFS daemon does not have it.
    Unpinned,
    /// In the pinset, allocated to other peers.
    Remote,
    /// Waiting for a pin worker.
    PinQueued,
    /// Waiting for the unpin worker.
    UnpinQueued,
    /// The meta-pin of a sharded DAG.
    Sharded,
    /// Allocated here, nothing in flight, but IPFS does not have it.
    UnexpectedlyUnpinned,
}

const ALL: [TrackerStatus; 13] = [
    TrackerStatus::Undefined,
    TrackerStatus::ClusterError,
    TrackerStatus::PinError,
    TrackerStatus::UnpinError,
    TrackerStatus::Pinned,
    TrackerStatus::Pinning,
    TrackerStatus::Unpinning,
    TrackerStatus::Unpinned,
    TrackerStatus::Remote,
    TrackerStatus::PinQueued,
    TrackerStatus::UnpinQueued,
    TrackerStatus::Sharded,
    TrackerStatus::UnexpectedlyUnpinned,
];

impl TrackerStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackerStatus::Undefined => "undefined",
            TrackerStatus::ClusterError => "cluster_error",
            TrackerStatus::PinError => "pin_error",
            TrackerStatus::UnpinError => "unpin_error",
            TrackerStatus::Pinned => "pinned",
            TrackerStatus::Pinning => "pinning",
            TrackerStatus::Unpinning => "unpinning",
            TrackerStatus::Unpinned => "unpinned",
            TrackerStatus::Remote => "remote",
            TrackerStatus::PinQueued => "pin_queued",
            TrackerStatus::UnpinQueued => "unpin_queued",
            TrackerStatus::Sharded => "sharded",
            TrackerStatus::UnexpectedlyUnpinned => "unexpectedly_unpinned",
        }
    }

    /// The status named `name` (unknown names are `undefined`).
    pub fn from_name(name: &str) -> Self {
        ALL.into_iter()
            .find(|t| t.as_str() == name)
            .unwrap_or_default()
    }

    /// The reference's bit (undefined is 0).
    fn bit(self) -> u32 {
        match self {
            TrackerStatus::Undefined => 0,
            other => 1 << (other as u32),
        }
    }

    /// Whether this is one of the error statuses.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            TrackerStatus::ClusterError | TrackerStatus::PinError | TrackerStatus::UnpinError
        )
    }
}

impl Serialize for TrackerStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrackerStatus {
    /// Unknown names are `undefined`, as in the reference.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .unwrap_or_default())
    }
}

/// A `filter` of status names (spec §0.2): comma-separated, `error` and
/// `queued` as unions, unknown names ignored, nothing known = invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFilter(u32);

/// A status filter with no known name in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter value")]
pub struct InvalidStatusFilter;

impl StatusFilter {
    /// Parses the query value; empty = everything.
    pub fn parse(filter: &str) -> Result<Self, InvalidStatusFilter> {
        let mut bits = 0;
        let mut any = false;
        for name in filter.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            any = true;
            bits |= match name {
                "error" => {
                    TrackerStatus::ClusterError.bit()
                        | TrackerStatus::PinError.bit()
                        | TrackerStatus::UnpinError.bit()
                }
                "queued" => TrackerStatus::PinQueued.bit() | TrackerStatus::UnpinQueued.bit(),
                other => ALL
                    .into_iter()
                    .find(|t| t.as_str() == other)
                    .map_or(0, TrackerStatus::bit),
            };
        }
        if any && bits == 0 {
            return Err(InvalidStatusFilter);
        }
        Ok(Self(bits))
    }

    /// The reference's rule: a status matches if the filter is empty, the
    /// status is undefined, or they share a bit.
    pub fn matches(self, status: TrackerStatus) -> bool {
        self.0 == 0 || status.bit() == 0 || self.0 & status.bit() != 0
    }
}

/// One peer's view of one pin (the values of `peer_map`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinInfoShort {
    /// The peer's name.
    #[serde(default)]
    pub peername: String,
    /// Its IPFS daemon's id (omitted when unknown).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::types::opt_string"
    )]
    pub ipfs_peer_id: Option<PeerId>,
    /// Its IPFS daemon's addresses (omitted when empty).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::types::string_list"
    )]
    pub ipfs_peer_addresses: Vec<Multiaddr>,
    /// The status.
    #[serde(default)]
    pub status: TrackerStatus,
    /// When the status last changed.
    #[serde(default, with = "crate::types::go_time")]
    pub timestamp: Option<DateTime<FixedOffset>>,
    /// The error of an error status.
    #[serde(default)]
    pub error: String,
    /// Pin attempts so far.
    #[serde(default)]
    pub attempt_count: u32,
    /// Whether the pin is in the priority lane.
    #[serde(default)]
    pub priority_pin: bool,
    /// What the peer's IPFS node has fetched of the pin so far, while it is
    /// `pinning`. Not in ipfs-cluster's API: omitted otherwise, and its
    /// clients (`ipfs-cluster-ctl` 1.1.6 included) ignore fields they do
    /// not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<FetchProgress>,
}

/// A pin's fetch so far (`progress` of a `pinning` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchProgress {
    /// Blocks fetched.
    pub blocks: u64,
    /// Bytes of those blocks; omitted when the IPFS daemon counts blocks
    /// only (Kubo's `pin/add` progress).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<crate::ipfs::fetch::Fetched> for FetchProgress {
    fn from(f: crate::ipfs::fetch::Fetched) -> Self {
        FetchProgress {
            blocks: f.blocks,
            bytes: f.bytes,
        }
    }
}

/// A pin across the cluster: `GET /pins`, `GET /pins/{cid}`, recover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalPinInfo {
    /// The pin's CID.
    #[serde(with = "crate::types::display_from_str")]
    pub cid: Cid,
    /// The pin's name.
    #[serde(default)]
    pub name: String,
    /// The peers it is allocated to (empty: everywhere).
    #[serde(default, with = "crate::types::string_list")]
    pub allocations: Vec<PeerId>,
    /// Where the content may be fetched from.
    #[serde(default, with = "crate::types::string_list")]
    pub origins: Vec<Multiaddr>,
    /// When it was pinned.
    #[serde(default, with = "crate::types::go_time")]
    pub created: Option<DateTime<FixedOffset>>,
    /// User metadata (`null` when none).
    #[serde(default, with = "crate::types::metadata_map")]
    pub metadata: BTreeMap<String, String>,
    /// Each peer's view, keyed by peer id.
    pub peer_map: BTreeMap<String, PinInfoShort>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_the_reference() {
        let all = StatusFilter::parse("").unwrap();
        assert!(all.matches(TrackerStatus::Pinned));
        let errors = StatusFilter::parse("error").unwrap();
        assert!(errors.matches(TrackerStatus::PinError));
        assert!(errors.matches(TrackerStatus::ClusterError));
        assert!(!errors.matches(TrackerStatus::Pinned));
        // Undefined matches every filter.
        assert!(errors.matches(TrackerStatus::Undefined));
        let some = StatusFilter::parse(" pinned , bogus,queued").unwrap();
        assert!(some.matches(TrackerStatus::UnpinQueued));
        assert!(!some.matches(TrackerStatus::Remote));
        assert_eq!(StatusFilter::parse("bogus"), Err(InvalidStatusFilter));
        assert_eq!(StatusFilter::parse("undefined"), Err(InvalidStatusFilter));
    }

    #[test]
    fn pin_info_short_omits_empty_ipfs_fields() {
        let info = PinInfoShort {
            peername: "p1".into(),
            ipfs_peer_id: None,
            ipfs_peer_addresses: vec![],
            status: TrackerStatus::PinQueued,
            timestamp: None,
            error: String::new(),
            attempt_count: 0,
            priority_pin: true,
            progress: None,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"peername":"p1","status":"pin_queued","timestamp":"0001-01-01T00:00:00Z","error":"","attempt_count":0,"priority_pin":true}"#
        );
        let back: PinInfoShort =
            serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn a_pinning_entry_carries_its_progress_after_the_reference_fields() {
        let mut info: PinInfoShort = serde_json::from_str(
            r#"{"peername":"p1","status":"pinning","timestamp":"0001-01-01T00:00:00Z","error":"","attempt_count":1,"priority_pin":false}"#,
        )
        .unwrap();
        info.progress = Some(FetchProgress {
            blocks: 12,
            bytes: 3_145_728,
        });
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"peername":"p1","status":"pinning","timestamp":"0001-01-01T00:00:00Z","error":"","attempt_count":1,"priority_pin":false,"progress":{"blocks":12,"bytes":3145728}}"#
        );
        // Blocks only, as a Kubo daemon reports them.
        info.progress = Some(FetchProgress {
            blocks: 3,
            bytes: 0,
        });
        assert!(
            serde_json::to_string(&info)
                .unwrap()
                .ends_with(r#""progress":{"blocks":3}}"#)
        );
    }
}
