//! A pin and what it is made of: options, mode, type, and the filter over
//! types that `GET /allocations` takes.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::go_json::{
    display_from_str, go_time, metadata_map, null_as_default, opt_string, string_list,
    string_list_or_null,
};
/// How IPFS pins the content: the whole DAG or only its root block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinMode {
    #[default]
    Recursive,
    Direct,
}

impl PinMode {
    /// The wire name: `recursive` or `direct`.
    pub fn as_str(self) -> &'static str {
        match self {
            PinMode::Recursive => "recursive",
            PinMode::Direct => "direct",
        }
    }

    /// Go's `PinModeFromString`: an empty or unknown name means recursive,
    /// so a client sending a typo still gets the safe, complete pin.
    pub(crate) fn from_name(name: &str) -> Self {
        match name {
            "direct" => PinMode::Direct,
            "recursive" | "" => PinMode::Recursive,
            other => {
                tracing::warn!(mode = other, "unknown pin mode, defaulting to recursive");
                PinMode::Recursive
            }
        }
    }

    /// The mode a pin's `max_depth` stands for. The state does not store the
    /// mode, the reference derives it from the depth when reading back, and
    /// so do we: 0 is direct, anything else (-1, a shard's 1) recursive.
    pub fn from_max_depth(max_depth: i32) -> Self {
        if max_depth == 0 {
            PinMode::Direct
        } else {
            PinMode::Recursive
        }
    }
}

impl Serialize for PinMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PinMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(PinMode::from_name(&name))
    }
}

/// What sort of pin this is (spec §0.3). Sharded DAGs are tracked as one
/// meta-pin, one clusterdag-pin and a shard-pin per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinType {
    /// A bug or a missing field; the zero value, as in the reference.
    #[default]
    BadType,
    /// A normal data pin.
    Pin,
    /// The root of a sharded DAG (not pinned on IPFS).
    MetaPin,
    /// The root of the DAG that links a sharded DAG's shards.
    ClusterDagPin,
    /// One shard of a sharded DAG.
    ShardPin,
}

impl PinType {
    /// The wire name: `pin`, `meta-pin`, `clusterdag-pin`, `shard-pin` or
    /// `bad-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            PinType::BadType => "bad-type",
            PinType::Pin => "pin",
            PinType::MetaPin => "meta-pin",
            PinType::ClusterDagPin => "clusterdag-pin",
            PinType::ShardPin => "shard-pin",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [
            PinType::BadType,
            PinType::Pin,
            PinType::MetaPin,
            PinType::ClusterDagPin,
            PinType::ShardPin,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

impl Serialize for PinType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PinType {
    /// Unknown names decode as `bad-type`, like the reference (which also
    /// turns `all` and `""` into its filter-only "all" value; a pin never
    /// carries those, so here they are bad types too).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(PinType::from_name(&name).unwrap_or_default())
    }
}

/// A `filter` of `GET /allocations`: a comma-separated list of pin types,
/// OR-ed together. Empty or `all` means every type; unknown names next to a
/// known one are ignored; only unknown names is an error (spec §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinTypeFilter {
    /// `None` = every type.
    types: Option<[bool; 5]>,
}

/// A `filter` whose every name is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter value")]
pub struct InvalidFilter;

impl PinTypeFilter {
    /// Parses the query value.
    pub fn parse(filter: &str) -> Result<Self, InvalidFilter> {
        let names: Vec<&str> = filter
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() || names.contains(&"all") {
            return Ok(Self { types: None });
        }
        let mut types = [false; 5];
        let mut known = false;
        for name in names {
            if let Some(t) = PinType::from_name(name).filter(|t| *t != PinType::BadType) {
                types[t as usize] = true;
                known = true;
            }
        }
        if known {
            Ok(Self { types: Some(types) })
        } else {
            Err(InvalidFilter)
        }
    }

    /// Whether a pin of type `t` passes.
    pub fn matches(&self, t: PinType) -> bool {
        self.types.is_none_or(|types| types[t as usize])
    }
}

/// The options a user gives when pinning (Go's `PinOptions`, embedded first
/// in a [`Pin`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PinOptions {
    /// -1 means everywhere; 0 (never stored) means the cluster's default.
    #[serde(default, deserialize_with = "null_as_default")]
    pub replication_factor_min: i32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub replication_factor_max: i32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub mode: PinMode,
    /// Bytes per shard of a sharded add.
    #[serde(default, deserialize_with = "null_as_default")]
    pub shard_size: u64,
    /// Peers the user wants first; not persisted in the state.
    #[serde(default, with = "string_list_or_null")]
    pub user_allocations: Vec<PeerId>,
    /// When the pin should be removed; `None` is Go's zero time.
    #[serde(default, with = "go_time")]
    pub expire_at: Option<DateTime<FixedOffset>>,
    #[serde(default, with = "metadata_map")]
    pub metadata: BTreeMap<String, String>,
    /// The pin this one was created as an update of.
    #[serde(default, with = "opt_string")]
    pub pin_update: Option<Cid>,
    /// Where the content can be fetched from (each address has a `/p2p/`).
    #[serde(default, with = "string_list")]
    pub origins: Vec<Multiaddr>,
}

/// A CID in the cluster's pinset with everything the cluster knows about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Go embeds `PinOptions`, so its fields come first in the JSON.
    #[serde(flatten)]
    pub options: PinOptions,
    #[serde(with = "display_from_str")]
    pub cid: Cid,
    #[serde(rename = "type", default)]
    pub pin_type: PinType,
    /// Peers that must pin it; empty when pinned everywhere.
    #[serde(default, with = "string_list")]
    pub allocations: Vec<PeerId>,
    /// -1 recursive, 0 direct, 1 for shards.
    #[serde(default, deserialize_with = "null_as_default")]
    pub max_depth: i32,
    /// Links the pins of a sharded DAG together.
    #[serde(default, with = "opt_string")]
    pub reference: Option<Cid>,
    /// When it was submitted to consensus; `None` is Go's zero time.
    #[serde(default, with = "go_time")]
    pub timestamp: Option<DateTime<FixedOffset>>,
}

impl Pin {
    /// A normal, recursive data pin of `cid` with `options`; allocations
    /// and timestamp are the caller's to set.
    pub fn new(cid: Cid, options: PinOptions) -> Self {
        let max_depth = match options.mode {
            PinMode::Recursive => -1,
            PinMode::Direct => 0,
        };
        Self {
            options,
            cid,
            pin_type: PinType::Pin,
            allocations: Vec::new(),
            max_depth,
            reference: None,
            timestamp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_type_filters_follow_the_reference() {
        let all = PinTypeFilter::parse("").unwrap();
        assert!(all.matches(PinType::ShardPin));
        assert_eq!(PinTypeFilter::parse("all,pin").unwrap(), all);
        let pins = PinTypeFilter::parse("pin, bogus").unwrap();
        assert!(pins.matches(PinType::Pin));
        assert!(!pins.matches(PinType::MetaPin));
        assert_eq!(PinTypeFilter::parse("bogus,worse"), Err(InvalidFilter));
    }
}
