//! Wire shapes shared by every part of the peer: the REST API's JSON objects
//! (`Pin`, `ID`, `Version`, `Error`), the pin options carried in query
//! strings, and the versioned DAG-CBOR record a pin is kept as in the shared
//! CRDT state.
//!
//! The JSON follows ipfs-cluster 1.1.6 field for field (names, order, `null`
//! versus `[]`, Go's time format) because the Go client, `ipfs-cluster-ctl`
//! and users' jq scripts read it. Decoding is as lenient as Go's
//! `encoding/json`: a missing field or a `null` takes the zero value. The two
//! exceptions are a pin's `cid` and a peer's `id`, without which the object
//! means nothing.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Local, TimeDelta, Utc};
use cid::Cid;
use libp2p::multiaddr::{self, Protocol};
use libp2p::{Multiaddr, PeerId};
use serde::de::{Deserializer, Error as _};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::duration::{DurationError, parse_time_delta};

mod stored_json;
pub use stored_json::PinJsonWriter;

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
    fn from_name(name: &str) -> Self {
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

    fn from_name(name: &str) -> Option<Self> {
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

/// Identity and view of one cluster peer (Go's `ID`: `GET /id`, the items of
/// `GET /peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdInfo {
    #[serde(with = "display_from_str")]
    pub id: PeerId,
    /// Listen addresses, each ending in `/p2p/<id>`.
    #[serde(default, with = "string_list")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default, with = "string_list")]
    pub cluster_peers: Vec<PeerId>,
    #[serde(default, with = "string_list")]
    pub cluster_peers_addresses: Vec<Multiaddr>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// Always empty in the reference 1.1.6.
    #[serde(default, deserialize_with = "null_as_default")]
    pub commit: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub rpc_protocol_version: String,
    /// Set when the peer could not be asked; the other fields are then empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub error: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ipfs: IpfsIdInfo,
    #[serde(default, deserialize_with = "null_as_default")]
    pub peername: String,
}

/// The IPFS daemon next to a cluster peer, as that peer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpfsIdInfo {
    /// Omitted when unknown (the reference's `omitempty`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_string")]
    pub id: Option<PeerId>,
    /// `null` when empty: the reference leaves it nil when IPFS failed.
    #[serde(default, with = "string_list_or_null")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub error: String,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
}

/// The body of every REST API error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default, deserialize_with = "null_as_default")]
    pub code: u16,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

/// A CID that did not parse; its text is the REST API's 400 message, with
/// the `invalid cid: ` go-cid puts before every decoding error.
#[derive(Debug, thiserror::Error)]
#[error("error decoding Cid: invalid cid: {0}")]
pub struct CidError(#[from] pub cid::Error);

/// Parses a CID the way the REST API's `{cid}` routes do: CIDv0 in base58,
/// CIDv1 in any multibase.
pub fn decode_cid(s: &str) -> Result<Cid, CidError> {
    Ok(Cid::try_from(s)?)
}

/// Why pin options in a query string were rejected; each message is the
/// reference's 400 text.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// `replication`, `replication-min` or `replication-max` is not an
    /// integer (the name is the one the reference reports).
    #[error("parameter {0} invalid")]
    Replication(&'static str),
    #[error("parameter shard_size is invalid")]
    ShardSize,
    #[error("expire-at cannot be parsed: {0}")]
    ExpireAt(#[source] chrono::ParseError),
    #[error("expire-in cannot be parsed: {0}")]
    ExpireIn(#[source] DurationError),
    #[error("expire-in duration too short")]
    ExpireInTooShort,
    #[error("error decoding update option parameter: {0}")]
    PinUpdate(#[source] cid::Error),
    #[error("error decoding multiaddress: {0}")]
    Origin(#[source] multiaddr::Error),
    /// An empty entry in the comma-separated list (Go rejects those; the
    /// Rust parser would read it as the empty multiaddr).
    #[error("error decoding multiaddress: empty multiaddr")]
    EmptyOrigin,
    #[error("multiaddress does not contain peer ID: protocol not found in multiaddr")]
    OriginWithoutPeer(Multiaddr),
}

impl PinOptions {
    /// Reads pin options from a query string's decoded pairs (spec §1.4),
    /// `expire-in` counting from the local time now.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, OptionsError> {
        Self::from_query_at(pairs, Local::now().fixed_offset())
    }

    /// [`Self::from_query`] with `expire-in` counted from `now`.
    ///
    /// Every parameter is optional and an empty value means absent, since the
    /// Go client always sends every option. Where a key repeats, the first
    /// value counts.
    pub fn from_query_at(
        pairs: &[(String, String)],
        now: DateTime<FixedOffset>,
    ) -> Result<Self, OptionsError> {
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut opts = PinOptions {
            name: get("name").to_owned(),
            mode: PinMode::from_name(get("mode")),
            ..PinOptions::default()
        };

        // `replication` overrides both bounds, and its errors are reported
        // under the name of the first bound parsed, as in the reference.
        let (min, max) = match get("replication") {
            "" => (get("replication-min"), get("replication-max")),
            both => (both, both),
        };
        opts.replication_factor_min = parse_int_param(min, "replication-min")?;
        opts.replication_factor_max = parse_int_param(max, "replication-max")?;

        let shard_size = get("shard-size");
        if !shard_size.is_empty() {
            // Go's ParseUint takes no sign; Rust's parser would accept "+".
            if shard_size.starts_with('+') {
                return Err(OptionsError::ShardSize);
            }
            opts.shard_size = shard_size.parse().map_err(|_| OptionsError::ShardSize)?;
        }

        let allocations = get("user-allocations");
        if !allocations.is_empty() {
            opts.user_allocations = allocations
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect();
        }

        let expire_at = get("expire-at");
        let expire_in = get("expire-in");
        if !expire_at.is_empty() {
            opts.expire_at = go_time::parse(expire_at).map_err(OptionsError::ExpireAt)?;
        } else if !expire_in.is_empty() {
            let d = parse_time_delta(expire_in).map_err(OptionsError::ExpireIn)?;
            if d < TimeDelta::seconds(1) {
                return Err(OptionsError::ExpireInTooShort);
            }
            let at = now.checked_add_signed(d).ok_or_else(|| {
                OptionsError::ExpireIn(DurationError::Invalid(expire_in.to_owned()))
            })?;
            opts.expire_at = Some(at);
        }

        for (key, value) in pairs {
            if let Some(meta_key) = key.strip_prefix(META_PREFIX)
                && !meta_key.is_empty()
            {
                opts.metadata
                    .entry(meta_key.to_owned())
                    .or_insert_with(|| value.clone());
            }
        }

        let update = get("pin-update");
        if !update.is_empty() {
            let cid = Cid::try_from(update).map_err(OptionsError::PinUpdate)?;
            opts.pin_update = Some(cid);
        }

        let origins = get("origins");
        if !origins.is_empty() {
            opts.origins = origins
                .split(',')
                .map(parse_origin)
                .collect::<Result<_, _>>()?;
        }
        Ok(opts)
    }

    /// The query pairs the Go client sends for these options: every option,
    /// empty ones included, plus `expire-at`, `meta-*`, `pin-update` and
    /// `origins` when set; sorted by key like Go's `url.Values.Encode`.
    pub fn to_query(&self) -> Vec<(String, String)> {
        let mut q = vec![
            (
                "replication-min".to_owned(),
                self.replication_factor_min.to_string(),
            ),
            (
                "replication-max".to_owned(),
                self.replication_factor_max.to_string(),
            ),
            ("name".to_owned(), self.name.clone()),
            ("mode".to_owned(), self.mode.as_str().to_owned()),
            ("shard-size".to_owned(), self.shard_size.to_string()),
            ("user-allocations".to_owned(), join(&self.user_allocations)),
        ];
        if let Some(at) = &self.expire_at {
            q.push(("expire-at".to_owned(), go_time::format(at)));
        }
        for (k, v) in self.metadata.iter().filter(|(k, _)| !k.is_empty()) {
            q.push((format!("{META_PREFIX}{k}"), v.clone()));
        }
        if let Some(update) = &self.pin_update {
            q.push(("pin-update".to_owned(), update.to_string()));
        }
        if !self.origins.is_empty() {
            q.push(("origins".to_owned(), join(&self.origins)));
        }
        q.sort_by(|a, b| a.0.cmp(&b.0));
        q
    }
}

const META_PREFIX: &str = "meta-";

fn join<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Go's `strconv.Atoi` on a non-empty value; empty leaves the zero value.
fn parse_int_param(value: &str, name: &'static str) -> Result<i32, OptionsError> {
    if value.is_empty() {
        return Ok(0);
    }
    value.parse().map_err(|_| OptionsError::Replication(name))
}

fn parse_origin(s: &str) -> Result<Multiaddr, OptionsError> {
    if s.is_empty() {
        return Err(OptionsError::EmptyOrigin);
    }
    let addr: Multiaddr = s.parse().map_err(OptionsError::Origin)?;
    if !addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        return Err(OptionsError::OriginWithoutPeer(addr));
    }
    Ok(addr)
}

/// Go's `time.Time` in JSON: RFC 3339 with up to nine fraction digits,
/// trailing zeros trimmed, `Z` for UTC. `None` stands for Go's zero time
/// `0001-01-01T00:00:00Z`, which the reference always writes out.
pub mod go_time {
    use chrono::{DateTime, FixedOffset};
    use serde::{Deserialize, Deserializer, Serializer};

    /// How the reference writes a time that was never set.
    pub const ZERO: &str = "0001-01-01T00:00:00Z";

    /// Go's zero time in Unix seconds.
    const ZERO_UNIX_SECONDS: i64 = -62_135_596_800;

    /// Formats like Go's `time.RFC3339Nano`.
    pub fn format(t: &DateTime<FixedOffset>) -> String {
        let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        let nanos = t.timestamp_subsec_nanos();
        if nanos != 0 {
            s.push('.');
            s.push_str(format!("{nanos:09}").trim_end_matches('0'));
        }
        let offset = t.offset().local_minus_utc();
        if offset == 0 {
            s.push('Z');
        } else {
            let sign = if offset < 0 { '-' } else { '+' };
            let minutes = offset.unsigned_abs() / 60;
            s.push_str(&format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60));
        }
        s
    }

    /// Parses any RFC 3339 time; Go's zero instant (in any offset) is `None`.
    pub fn parse(s: &str) -> Result<Option<DateTime<FixedOffset>>, chrono::ParseError> {
        let t = DateTime::parse_from_rfc3339(s)?;
        let is_zero = t.timestamp() == ZERO_UNIX_SECONDS && t.timestamp_subsec_nanos() == 0;
        Ok((!is_zero).then_some(t))
    }

    pub fn serialize<S: Serializer>(
        t: &Option<DateTime<FixedOffset>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_str(ZERO),
        }
    }

    /// Accepts `null` (Go leaves the zero time) and any RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Go's `encoding/json` leaves a field untouched on `null`; serde would fail.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A value written as its string form (CIDs and peer ids; the `cid` crate's
/// own serde form is the `{"/": ..}` link the REST API never uses).
pub(crate) mod display_from_str {
    use super::*;

    pub fn serialize<S: Serializer, T: Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| D::Error::custom(format!("invalid value {s:?}: {e}")))
    }
}

/// An optional value written as its string form or `null`; `""` reads as
/// absent.
pub(crate) mod opt_string {
    use super::*;

    pub fn serialize<S: Serializer, T: Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|e| D::Error::custom(format!("invalid value {s:?}: {e}"))),
        }
    }
}

/// A list of values written as strings (peer ids, multiaddrs): `[]` when
/// empty; `null` reads as empty.
pub(crate) mod string_list {
    use super::*;

    pub fn serialize<S: Serializer, T: Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        Option::<Vec<String>>::deserialize(d)?
            .unwrap_or_default()
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| D::Error::custom(format!("invalid value {s:?}: {e}")))
            })
            .collect()
    }
}

/// Like [`string_list`] but `null` when empty, where the reference leaves a
/// nil slice.
mod string_list_or_null {
    use super::*;

    pub fn serialize<S: Serializer, T: Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            string_list::serialize(v, s)
        }
    }

    pub use super::string_list::deserialize;
}

/// Pin metadata: `null` when empty (a nil Go map); `null` values read as "".
pub(crate) mod metadata_map {
    use super::*;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
        if m.is_empty() {
            s.serialize_none()
        } else {
            s.collect_map(m)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        Ok(Option::<BTreeMap<String, Option<String>>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }
}

/// The key a pin is stored under in the CRDT state: its CID's binary form.
pub fn pin_key(cid: &Cid) -> Vec<u8> {
    cid.to_bytes()
}

/// The format version written in every stored pin.
const STATE_FORMAT_VERSION: u64 = 1;

/// A pin as stored in the CRDT state, DAG-CBOR encoded. The short keys are
/// the reference's codec tags; they keep each of possibly millions of records
/// small. `user_allocations` and `mode` are not stored: the first is transient
/// and the second follows from `max_depth`, as in the reference.
#[derive(Serialize, Deserialize)]
struct StoredPin {
    /// Format version; bump it (and keep a fixture of the old one) on any
    /// change here.
    v: u64,
    c: Cid,
    /// The JSON name of the [`PinType`].
    t: String,
    /// Peer ids as bytes.
    a: Vec<ByteBuf>,
    d: i32,
    r: Option<Cid>,
    /// Unix seconds and nanoseconds.
    i: Option<(i64, u32)>,
    rn: i32,
    rx: i32,
    n: String,
    s: u64,
    e: Option<(i64, u32)>,
    m: BTreeMap<String, String>,
    pu: Option<Cid>,
    /// Multiaddrs as bytes.
    g: Vec<ByteBuf>,
}

/// Read first, alone, so a record of another version is reported as such
/// rather than as whatever field it lacks.
#[derive(Deserialize)]
struct StoredVersion {
    v: u64,
}

/// A stored pin record that could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateDecodeError {
    #[error("stored pin is not valid DAG-CBOR: {0}")]
    Cbor(#[from] serde_ipld_dagcbor::DecodeError<std::convert::Infallible>),
    #[error("stored pin has format version {0}; this peer reads version {STATE_FORMAT_VERSION}")]
    UnknownVersion(u64),
    #[error("stored pin has unknown type {0:?}")]
    PinType(String),
    #[error("stored pin has an invalid peer id: {0}")]
    PeerId(#[from] libp2p::identity::ParseError),
    #[error("stored pin has an invalid multiaddress: {0}")]
    Multiaddr(#[from] multiaddr::Error),
    #[error("stored pin has a time out of range")]
    Time,
}

fn to_unix(t: &DateTime<FixedOffset>) -> (i64, u32) {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

/// Stored times come back in UTC: the instant is what matters, and it keeps
/// decoding independent of the machine's time zone.
fn from_unix((secs, nanos): (i64, u32)) -> Result<DateTime<FixedOffset>, StateDecodeError> {
    DateTime::<Utc>::from_timestamp(secs, nanos)
        .map(|t| t.fixed_offset())
        .ok_or(StateDecodeError::Time)
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

    /// The pin's record in the CRDT state (format version 1).
    pub fn to_state_bytes(&self) -> Vec<u8> {
        let o = &self.options;
        let stored = StoredPin {
            v: STATE_FORMAT_VERSION,
            c: self.cid,
            t: self.pin_type.as_str().to_owned(),
            a: self
                .allocations
                .iter()
                .map(|p| ByteBuf::from(p.to_bytes()))
                .collect(),
            d: self.max_depth,
            r: self.reference,
            i: self.timestamp.as_ref().map(to_unix),
            rn: o.replication_factor_min,
            rx: o.replication_factor_max,
            n: o.name.clone(),
            s: o.shard_size,
            e: o.expire_at.as_ref().map(to_unix),
            m: o.metadata.clone(),
            pu: o.pin_update,
            g: o.origins
                .iter()
                .map(|a| ByteBuf::from(a.to_vec()))
                .collect(),
        };
        serde_ipld_dagcbor::to_vec(&stored)
            .expect("a StoredPin always encodes: plain fields into a growable Vec")
    }

    /// Reads a record written by [`Pin::to_state_bytes`]. The mode is derived
    /// from `max_depth`; `user_allocations` come back empty.
    pub fn from_state_bytes(bytes: &[u8]) -> Result<Pin, StateDecodeError> {
        let StoredVersion { v } = serde_ipld_dagcbor::from_slice(bytes)?;
        if v != STATE_FORMAT_VERSION {
            return Err(StateDecodeError::UnknownVersion(v));
        }
        let s: StoredPin = serde_ipld_dagcbor::from_slice(bytes)?;
        let pin_type = PinType::from_name(&s.t).ok_or(StateDecodeError::PinType(s.t))?;
        Ok(Pin {
            options: PinOptions {
                replication_factor_min: s.rn,
                replication_factor_max: s.rx,
                name: s.n,
                mode: PinMode::from_max_depth(s.d),
                shard_size: s.s,
                user_allocations: Vec::new(),
                expire_at: s.e.map(from_unix).transpose()?,
                metadata: s.m,
                pin_update: s.pu,
                origins: s
                    .g
                    .into_iter()
                    .map(|b| Multiaddr::try_from(b.into_vec()))
                    .collect::<Result<_, _>>()?,
            },
            cid: s.c,
            pin_type,
            allocations: s
                .a
                .iter()
                .map(|b| PeerId::from_bytes(b))
                .collect::<Result<_, _>>()?,
            max_depth: s.d,
            reference: s.r,
            timestamp: s.i.map(from_unix).transpose()?,
        })
    }
}

#[cfg(test)]
mod filter_tests {
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

#[cfg(test)]
mod tests {
    use super::*;

    const CID1: &str = "QmP63DkAFEnDYNjDYBpyNDfttu1fvUw99x1brscPzpqmmq";
    const CID_V1: &str = "bafyreiay3jpjk74dkckv2r74eyvf3lfnxujefay2rtuluintasq2zlapv4";
    const PEER_A: &str = "12D3KooWGHTKzeT4KaLGLrbKKyT8zKrBPXAUBRzCAN6ZMDMo4M6M";
    const PEER_B: &str = "12D3KooWFBFCDQzAkQSwPZLV883pKdsmb6urQ3sMjfJHUxn5GCVv";
    const PEER_IPFS: &str = "12D3KooWKuJ8LPTyHbyX4nt4C7uWmUobzFsiceTVoFw7HpmoNakM";

    fn cid(s: &str) -> Cid {
        decode_cid(s).unwrap()
    }

    fn peer(s: &str) -> PeerId {
        s.parse().unwrap()
    }

    fn time(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> DateTime<FixedOffset> {
        time("2024-05-01T10:00:00+02:00")
    }

    fn query(list: &[(&str, &str)]) -> Result<PinOptions, OptionsError> {
        PinOptions::from_query_at(&pairs(list), now())
    }

    fn query_err(list: &[(&str, &str)]) -> String {
        query(list).unwrap_err().to_string()
    }

    /// The spec's §1.2 example pin.
    fn spec_pin() -> Pin {
        Pin {
            options: PinOptions {
                replication_factor_min: -1,
                replication_factor_max: -1,
                ..PinOptions::default()
            },
            cid: cid(CID1),
            pin_type: PinType::Pin,
            allocations: vec![],
            max_depth: -1,
            reference: None,
            timestamp: Some(time("2024-05-01T10:00:00+02:00")),
        }
    }

    #[test]
    fn pin_json_matches_the_reference_shape() {
        let json = serde_json::to_string(&spec_pin()).unwrap();
        let expected = concat!(
            r#"{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","#,
            r#""mode":"recursive","shard_size":0,"user_allocations":null,"#,
            r#""expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"#,
            r#""origins":[],"cid":"QmP63DkAFEnDYNjDYBpyNDfttu1fvUw99x1brscPzpqmmq","#,
            r#""type":"pin","allocations":[],"max_depth":-1,"reference":null,"#,
            r#""timestamp":"2024-05-01T10:00:00+02:00"}"#
        );
        assert_eq!(json, expected);
        assert_eq!(serde_json::from_str::<Pin>(&json).unwrap(), spec_pin());
    }

    #[test]
    fn pin_json_with_every_field_set_round_trips() {
        let mut pin = spec_pin();
        pin.options = PinOptions {
            replication_factor_min: 1,
            replication_factor_max: 2,
            name: "my pin".into(),
            mode: PinMode::Direct,
            shard_size: 100,
            user_allocations: vec![peer(PEER_A)],
            expire_at: Some(time("2025-01-02T03:04:05.120Z")),
            metadata: BTreeMap::from([("kind".into(), "text".into())]),
            pin_update: Some(cid(CID_V1)),
            origins: vec![
                format!("/ip4/1.2.3.4/tcp/4001/p2p/{PEER_IPFS}")
                    .parse()
                    .unwrap(),
            ],
        };
        pin.allocations = vec![peer(PEER_A), peer(PEER_B)];
        pin.pin_type = PinType::ShardPin;
        pin.max_depth = 1;
        pin.reference = Some(cid(CID_V1));
        let json = serde_json::to_string(&pin).unwrap();
        assert!(json.contains(&format!(r#""user_allocations":["{PEER_A}"]"#)));
        assert!(json.contains(r#""expire_at":"2025-01-02T03:04:05.12Z""#));
        assert!(json.contains(r#""metadata":{"kind":"text"}"#));
        assert!(json.contains(&format!(r#""pin_update":"{CID_V1}""#)));
        assert!(json.contains(r#""type":"shard-pin""#));
        assert!(json.contains(r#""mode":"direct""#));
        assert_eq!(serde_json::from_str::<Pin>(&json).unwrap(), pin);
    }

    #[test]
    fn pin_decoding_is_lenient() {
        let only_cid: Pin = serde_json::from_str(&format!(r#"{{"cid":"{CID1}"}}"#)).unwrap();
        assert_eq!(only_cid.pin_type, PinType::BadType);
        assert_eq!(only_cid.max_depth, 0);
        assert_eq!(only_cid.options, PinOptions::default());
        assert_eq!(only_cid.timestamp, None);

        let nulls = format!(
            r#"{{"replication_factor_min":null,"replication_factor_max":null,"name":null,
            "mode":null,"shard_size":null,"user_allocations":null,"expire_at":null,
            "metadata":{{"a":null}},"pin_update":null,"origins":null,"cid":"{CID1}",
            "type":null,"allocations":null,"max_depth":null,"reference":null,
            "timestamp":null,"unknown_field":[1,2]}}"#
        );
        let pin: Pin = serde_json::from_str(&nulls).unwrap();
        assert_eq!(
            pin.options.metadata,
            BTreeMap::from([("a".into(), String::new())])
        );
        assert_eq!(pin.options.mode, PinMode::Recursive);

        let odd = format!(
            r#"{{"cid":"{CID1}","mode":"sideways","type":"all","timestamp":"0001-01-01T01:00:00+01:00"}}"#
        );
        let pin: Pin = serde_json::from_str(&odd).unwrap();
        assert_eq!(pin.options.mode, PinMode::Recursive);
        assert_eq!(pin.pin_type, PinType::BadType);
        assert_eq!(pin.timestamp, None, "Go's zero instant in another offset");

        assert!(serde_json::from_str::<Pin>(r#"{"cid":null}"#).is_err());
        assert!(serde_json::from_str::<Pin>(r#"{"cid":"nope"}"#).is_err());
        let bad_peer = format!(r#"{{"cid":"{CID1}","allocations":["nope"]}}"#);
        assert!(serde_json::from_str::<Pin>(&bad_peer).is_err());
    }

    #[test]
    fn cids_print_in_their_default_base() {
        assert_eq!(cid(CID1).to_string(), CID1);
        assert_eq!(cid(CID_V1).to_string(), CID_V1);
        let err = decode_cid("notacid").unwrap_err().to_string();
        assert!(
            err.starts_with("error decoding Cid: invalid cid: "),
            "{err}"
        );
    }

    #[test]
    fn go_time_format_trims_the_fraction() {
        let cases = [
            (
                "2024-05-01T10:00:05.123456789+02:00",
                "2024-05-01T10:00:05.123456789+02:00",
            ),
            (
                "2024-05-01T10:00:05.1234+02:00",
                "2024-05-01T10:00:05.1234+02:00",
            ),
            ("2024-05-01T10:00:05.100000000Z", "2024-05-01T10:00:05.1Z"),
            ("2024-05-01T10:00:05.000Z", "2024-05-01T10:00:05Z"),
            ("2024-05-01T10:00:05+00:00", "2024-05-01T10:00:05Z"),
            ("2024-05-01T10:00:05-05:30", "2024-05-01T10:00:05-05:30"),
        ];
        for (input, want) in cases {
            let t = go_time::parse(input).unwrap().unwrap();
            assert_eq!(go_time::format(&t), want, "{input}");
        }
        assert_eq!(go_time::parse(go_time::ZERO).unwrap(), None);
        assert!(go_time::parse("yesterday").is_err());
    }

    #[test]
    fn id_json_matches_the_reference_shape() {
        let id = IdInfo {
            id: peer(PEER_A),
            addresses: vec![
                format!("/ip4/127.0.0.1/tcp/9096/p2p/{PEER_A}")
                    .parse()
                    .unwrap(),
            ],
            cluster_peers: vec![peer(PEER_A), peer(PEER_B)],
            cluster_peers_addresses: vec![
                format!("/ip4/10.0.0.2/tcp/9096/p2p/{PEER_B}")
                    .parse()
                    .unwrap(),
            ],
            version: "1.1.6".into(),
            commit: String::new(),
            rpc_protocol_version: "/ipfscluster/1.0/rpc".into(),
            error: String::new(),
            ipfs: IpfsIdInfo {
                id: Some(peer(PEER_IPFS)),
                addresses: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
                error: String::new(),
            },
            peername: "my-host".into(),
        };
        let expected = format!(
            concat!(
                r#"{{"id":"{a}","addresses":["/ip4/127.0.0.1/tcp/9096/p2p/{a}"],"#,
                r#""cluster_peers":["{a}","{b}"],"#,
                r#""cluster_peers_addresses":["/ip4/10.0.0.2/tcp/9096/p2p/{b}"],"#,
                r#""version":"1.1.6","commit":"","rpc_protocol_version":"/ipfscluster/1.0/rpc","#,
                r#""error":"","ipfs":{{"id":"{i}","addresses":["/ip4/127.0.0.1/tcp/4001"],"#,
                r#""error":""}},"peername":"my-host"}}"#
            ),
            a = PEER_A,
            b = PEER_B,
            i = PEER_IPFS
        );
        assert_eq!(serde_json::to_string(&id).unwrap(), expected);
        assert_eq!(serde_json::from_str::<IdInfo>(&expected).unwrap(), id);
    }

    #[test]
    fn id_of_an_unreachable_peer() {
        let json = format!(
            r#"{{"id":"{PEER_A}","addresses":null,"cluster_peers":null,"ipfs":null,"error":"dial backoff"}}"#
        );
        let id: IdInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(id.error, "dial backoff");
        assert_eq!(id.ipfs, IpfsIdInfo::default());
        let out = serde_json::to_string(&id).unwrap();
        assert!(
            out.contains(r#""ipfs":{"addresses":null,"error":""}"#),
            "{out}"
        );
    }

    #[test]
    fn version_and_error_shapes() {
        let v = Version {
            version: "1.1.6".into(),
        };
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"version":"1.1.6"}"#);
        let e = ApiError {
            code: 404,
            message: "pin is not part of the pinset".into(),
        };
        let json = r#"{"code":404,"message":"pin is not part of the pinset"}"#;
        assert_eq!(serde_json::to_string(&e).unwrap(), json);
        assert_eq!(serde_json::from_str::<ApiError>(json).unwrap(), e);
        assert_eq!(serde_json::from_str::<ApiError>("{}").unwrap().code, 0);
    }

    #[test]
    fn options_from_an_empty_query_are_the_defaults() {
        assert_eq!(query(&[]).unwrap(), PinOptions::default());
        // What the Go client sends when nothing was asked for.
        let empty = query(&[
            ("replication-min", ""),
            ("replication-max", ""),
            ("name", ""),
            ("mode", ""),
            ("shard-size", ""),
            ("user-allocations", ""),
        ])
        .unwrap();
        assert_eq!(empty, PinOptions::default());
    }

    #[test]
    fn options_replication() {
        let o = query(&[("replication-min", "2"), ("replication-max", "3")]).unwrap();
        assert_eq!((o.replication_factor_min, o.replication_factor_max), (2, 3));
        let o = query(&[("replication", "-1"), ("replication-min", "2")]).unwrap();
        assert_eq!(
            (o.replication_factor_min, o.replication_factor_max),
            (-1, -1)
        );
        assert_eq!(
            query_err(&[("replication-min", "x")]),
            "parameter replication-min invalid"
        );
        assert_eq!(
            query_err(&[("replication-max", "1.5")]),
            "parameter replication-max invalid"
        );
        assert_eq!(
            query_err(&[("replication", "two")]),
            "parameter replication-min invalid"
        );
    }

    #[test]
    fn options_name_mode_shard_size() {
        let o = query(&[("name", "a b"), ("mode", "direct"), ("shard-size", "1024")]).unwrap();
        assert_eq!(o.name, "a b");
        assert_eq!(o.mode, PinMode::Direct);
        assert_eq!(o.shard_size, 1024);
        assert_eq!(
            query(&[("mode", "weird")]).unwrap().mode,
            PinMode::Recursive
        );
        for bad in ["-1", "+1", "x"] {
            assert_eq!(
                query_err(&[("shard-size", bad)]),
                "parameter shard_size is invalid"
            );
        }
    }

    #[test]
    fn options_user_allocations_drop_invalid_ids() {
        let list = format!("{PEER_A},nope,{PEER_B},");
        let o = query(&[("user-allocations", &list)]).unwrap();
        assert_eq!(o.user_allocations, vec![peer(PEER_A), peer(PEER_B)]);
    }

    #[test]
    fn options_expiry() {
        let o = query(&[("expire-at", "2030-01-01T00:00:00Z"), ("expire-in", "bad")]).unwrap();
        assert_eq!(
            o.expire_at,
            Some(time("2030-01-01T00:00:00Z")),
            "expire-at wins"
        );
        let o = query(&[("expire-in", "1h30m")]).unwrap();
        assert_eq!(o.expire_at, Some(time("2024-05-01T11:30:00+02:00")));
        let err = query_err(&[("expire-at", "tomorrow")]);
        assert!(err.starts_with("expire-at cannot be parsed: "), "{err}");
        assert_eq!(
            query_err(&[("expire-in", "soon")]),
            r#"expire-in cannot be parsed: time: invalid duration "soon""#
        );
        assert_eq!(
            query_err(&[("expire-in", "999ms")]),
            "expire-in duration too short"
        );
        assert_eq!(
            query_err(&[("expire-in", "-1h")]),
            "expire-in duration too short"
        );
    }

    #[test]
    fn options_metadata() {
        let o = query(&[
            ("meta-a", "1"),
            ("meta-", "x"),
            ("meta-a", "2"),
            ("meta-b", ""),
        ])
        .unwrap();
        assert_eq!(
            o.metadata,
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), String::new())])
        );
    }

    #[test]
    fn options_pin_update() {
        assert_eq!(
            query(&[("pin-update", CID1)]).unwrap().pin_update,
            Some(cid(CID1))
        );
        let err = query_err(&[("pin-update", "nope")]);
        assert!(
            err.starts_with("error decoding update option parameter: "),
            "{err}"
        );
        assert!(!err.contains("error decoding Cid"), "{err}");
    }

    #[test]
    fn options_origins() {
        let a = format!("/ip4/1.2.3.4/tcp/4001/p2p/{PEER_A}");
        let b = format!("/dns4/example.com/tcp/4001/p2p/{PEER_B}");
        let o = query(&[("origins", &format!("{a},{b}"))]).unwrap();
        assert_eq!(
            o.origins,
            vec![a.parse::<Multiaddr>().unwrap(), b.parse().unwrap()]
        );
        let err = query_err(&[("origins", "ip4/1.2.3.4")]);
        assert!(err.starts_with("error decoding multiaddress: "), "{err}");
        assert_eq!(
            query_err(&[("origins", &format!("{a},"))]),
            "error decoding multiaddress: empty multiaddr"
        );
        assert_eq!(
            query_err(&[("origins", "/ip4/1.2.3.4/tcp/4001")]),
            "multiaddress does not contain peer ID: protocol not found in multiaddr"
        );
    }

    #[test]
    fn options_to_query_is_what_the_go_client_sends() {
        let q = PinOptions::default().to_query();
        assert_eq!(
            q,
            pairs(&[
                ("mode", "recursive"),
                ("name", ""),
                ("replication-max", "0"),
                ("replication-min", "0"),
                ("shard-size", "0"),
                ("user-allocations", ""),
            ])
        );
        let origin = format!("/ip4/1.2.3.4/tcp/4001/p2p/{PEER_A}");
        let full = PinOptions {
            replication_factor_min: 1,
            replication_factor_max: 3,
            name: "n".into(),
            mode: PinMode::Direct,
            shard_size: 7,
            user_allocations: vec![peer(PEER_A), peer(PEER_B)],
            expire_at: Some(time("2030-01-01T00:00:00.5Z")),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            pin_update: Some(cid(CID1)),
            origins: vec![origin.parse().unwrap()],
        };
        let q = full.to_query();
        let keys: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "expire-at",
                "meta-k",
                "mode",
                "name",
                "origins",
                "pin-update",
                "replication-max",
                "replication-min",
                "shard-size",
                "user-allocations"
            ]
        );
        assert_eq!(q[0].1, "2030-01-01T00:00:00.5Z");
        assert_eq!(q[9].1, format!("{PEER_A},{PEER_B}"));
        assert_eq!(PinOptions::from_query_at(&q, now()).unwrap(), full);
    }

    /// A pin with every stored field set, for the format fixture.
    fn fixture_pin() -> Pin {
        Pin {
            options: PinOptions {
                replication_factor_min: 2,
                replication_factor_max: 3,
                name: "fixture".into(),
                mode: PinMode::Direct,
                shard_size: 0,
                user_allocations: vec![],
                expire_at: Some(time("2030-01-01T00:00:00Z")),
                metadata: BTreeMap::from([("k".into(), "v".into())]),
                pin_update: Some(cid(CID_V1)),
                origins: vec![
                    format!("/ip4/1.2.3.4/tcp/4001/p2p/{PEER_B}")
                        .parse()
                        .unwrap(),
                ],
            },
            cid: cid(CID1),
            pin_type: PinType::Pin,
            allocations: vec![peer(PEER_A)],
            max_depth: 0,
            reference: None,
            timestamp: Some(time("2024-05-01T08:00:00.5Z")),
        }
    }

    /// Version 1 of the stored pin, written once; a change in the encoding
    /// must bump the version, not this fixture.
    const FIXTURE_V1: &str = concat!(
        "af61618158260024080112206016a32312bd947f4d134ac516fb5c8b7b4bcfe66968c977",
        "567bdac6f87e0ade6163d82a58230012200b1d6d95aae1fc9a54ad6eb18d968af23b27c5",
        "1fb66d8bc21cc999eaef2087686164006165821a70dbd880006167815831040102030406",
        "0fa1a503260024080112204fa3bed00fc40187d38f01e968461b4021edf432460e757842",
        "de15cd277326116169821a6631f6801a1dcd6500616da1616b6176616e67666978747572",
        "656172f661730061746370696e617601627075d82a5825000171122018da5e957f835095",
        "5d47fc262a5dacadbd1242831a8ce8ba21b304a1acac0faf62726e0262727803",
    );

    #[test]
    fn stored_pin_v1_fixture() {
        let pin = fixture_pin();
        let bytes = pin.to_state_bytes();
        assert_eq!(hex::encode(&bytes), FIXTURE_V1);
        let fixture = hex::decode(FIXTURE_V1).unwrap();
        assert_eq!(Pin::from_state_bytes(&fixture).unwrap(), pin);
    }

    #[test]
    fn stored_pin_drops_transient_fields_and_derives_mode() {
        let mut pin = spec_pin();
        pin.options.user_allocations = vec![peer(PEER_A)];
        pin.options.mode = PinMode::Direct; // with max_depth -1: the POST /pins/{cid} quirk
        let back = Pin::from_state_bytes(&pin.to_state_bytes()).unwrap();
        assert!(back.options.user_allocations.is_empty());
        assert_eq!(back.options.mode, PinMode::Recursive);
        assert_eq!(back.timestamp, pin.timestamp);
        assert_eq!(back.cid, pin.cid);
        assert_eq!(pin_key(&pin.cid), cid(CID1).to_bytes());
    }

    #[test]
    fn stored_pin_rejects_other_versions_and_garbage() {
        #[derive(Serialize)]
        struct Future {
            v: u64,
            other: String,
        }
        let future = serde_ipld_dagcbor::to_vec(&Future {
            v: 2,
            other: "x".into(),
        })
        .unwrap();
        assert!(matches!(
            Pin::from_state_bytes(&future),
            Err(StateDecodeError::UnknownVersion(2))
        ));
        assert!(matches!(
            Pin::from_state_bytes(b"\xff\x00"),
            Err(StateDecodeError::Cbor(_))
        ));
    }
}
