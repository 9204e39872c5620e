//! [`GoDuration`]: the duration type of every setting, read and written in
//! Go's syntax.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration;

/// A duration written the way Go writes `time.Duration` (`"1m0s"`, `"300ms"`).
///
/// Parsing accepts everything Go's `time.ParseDuration` accepts (units `ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`, fractions, concatenations like
/// `"1h2m3.5s"`, a bare `"0"`) except negative values, which no setting can
/// use. Display is Go's `Duration.String()`, so files we write look like the
/// reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> GoDuration {
        GoDuration(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> GoDuration {
        GoDuration(Duration::from_millis(millis))
    }

    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// A string that is not a (non-negative) Go duration.
pub use crate::duration::DurationError;

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        duration::parse_std_duration(s).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    /// Go's `time.Duration.String()`: `"0s"`, `"1.5µs"`, `"300ms"`, `"2m0.5s"`, `"1h0m0s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&duration::format_go_duration(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
