//! serde helpers that read and write JSON the way Go's `encoding/json` does
//! for the reference's types: `null` where Go has a nil, the zero time,
//! values as their string forms.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde::ser::Serializer;
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
pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
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
pub(super) mod string_list_or_null {
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
