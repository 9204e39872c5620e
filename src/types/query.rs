//! Pin options in a query string: read as the REST API and the proxy receive
//! them, written as the Go client sends them.

use std::fmt::Display;

use chrono::{DateTime, FixedOffset, Local, TimeDelta};
use cid::Cid;
use libp2p::Multiaddr;
use libp2p::multiaddr::{self, Protocol};

use super::{PinMode, PinOptions, go_time};
use crate::duration::{DurationError, parse_time_delta};
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
