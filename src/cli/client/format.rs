//! How the client prints what the API answers: ipfs-cluster-ctl's text
//! lines (which its users' scripts grep) or Go-style indented JSON. Pure
//! functions; the caller picks stdout or stderr.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::Encoding;
use crate::cluster::ipfs::GlobalRepoGc;
use crate::monitor::{Alert, Metric};
use crate::status::GlobalPinInfo;
use crate::types::{ApiError, IdInfo, Pin, PinMode, Version};

/// Writes to stdout or stderr. Like ipfs-cluster-ctl, a failed write (a
/// closed pipe) does not turn a successful call into a failure.
pub(super) fn emit(w: &mut (dyn Write + Send), s: &str) {
    let _ = w.write_all(s.as_bytes());
    let _ = w.flush();
}

pub(super) fn print_some<T: Render>(out: &mut (dyn Write + Send), enc: Encoding, item: Option<&T>) {
    if let Some(item) = item {
        emit(out, &render(enc, item));
    }
}

/// An API object with a text form as printed by ipfs-cluster-ctl.
pub(super) trait Render: Serialize {
    fn text(&self) -> String;
}

impl Render for IdInfo {
    fn text(&self) -> String {
        format_id(self)
    }
}

impl Render for Pin {
    fn text(&self) -> String {
        format_pin(self)
    }
}

impl Render for GlobalPinInfo {
    fn text(&self) -> String {
        format_global(self)
    }
}

/// ipfs-cluster-ctl's status lines: `<cid>[ | <name>]:`, then one line per
/// peer sorted by peer id.
pub(super) fn format_global(info: &GlobalPinInfo) -> String {
    let mut text = info.cid.to_string();
    if !info.name.is_empty() {
        text.push_str(&format!(" | {}", info.name));
    }
    text.push_str(":\n");
    for (peer, e) in &info.peer_map {
        let who = if e.peername.is_empty() {
            peer.as_str()
        } else {
            e.peername.as_str()
        };
        let mut status = e.status.as_str().to_uppercase();
        if !e.error.is_empty() {
            status.push_str(&format!(": {}", e.error));
        }
        let when = e
            .timestamp
            .map(|t| crate::types::go_time::format(&t))
            .unwrap_or_default();
        // Beyond ipfs-cluster-ctl's line: what a pin being fetched has
        // fetched so far.
        let fetched = match e.progress {
            Some(p) if p.bytes > 0 => format!(
                " | Fetched: {} blocks, {:.1} MB",
                p.blocks,
                p.bytes as f64 / 1e6
            ),
            Some(p) => format!(" | Fetched: {} blocks", p.blocks),
            None => String::new(),
        };
        text.push_str(&format!(
            "    > {who:<20} : {status} | {when} | Attempts: {} | Priority: {}{fetched}\n",
            e.attempt_count, e.priority_pin
        ));
    }
    text
}

impl Render for GlobalRepoGc {
    fn text(&self) -> String {
        format_repo_gc(self)
    }
}

/// ipfs-cluster-ctl's `ipfs gc` output: per peer, sorted by peer id, its
/// name (or id) padded to 15, then the removed CIDs or errors.
fn format_repo_gc(gc: &GlobalRepoGc) -> String {
    let mut text = String::new();
    for (peer, info) in &gc.peer_map {
        let who = if info.peername.is_empty() {
            peer.as_str()
        } else {
            info.peername.as_str()
        };
        if info.error.is_empty() {
            text.push_str(&format!("{who:<15}\n"));
        } else {
            text.push_str(&format!("{who:<15} | ERROR: {}\n", info.error));
        }
        text.push_str("  > CIDs:\n");
        for key in &info.keys {
            match (&key.key, key.error.is_empty()) {
                (Some(cid), true) => text.push_str(&format!("    - {cid}\n")),
                _ => text.push_str(&format!("    - ERROR: {}\n", key.error)),
            }
        }
    }
    text
}

impl Render for Version {
    fn text(&self) -> String {
        format_version(self)
    }
}

impl Render for ApiError {
    fn text(&self) -> String {
        format_error(self)
    }
}

pub(super) fn render<T: Render>(enc: Encoding, item: &T) -> String {
    match enc {
        Encoding::Text => item.text(),
        Encoding::Json => format_json(item),
    }
}

/// Go's `json.MarshalIndent(obj, "", "    ")` plus the newline ctl prints.
pub(super) fn format_json<T: Serialize>(item: &T) -> String {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    item.serialize(&mut ser)
        .expect("API types always serialize: string keys, no fallible fields");
    buf.push(b'\n');
    String::from_utf8_lossy(&buf).into_owned()
}

fn sorted_strings<T: ToString>(items: &[T]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

pub(super) fn format_id(id: &IdInfo) -> String {
    if !id.error.is_empty() {
        return format!("{} | ERROR: {}\n", id.id, id.error);
    }
    // The reference counts itself among the cluster peers.
    let others = id.cluster_peers.len() as i64 - 1;
    let mut s = format!("{} | {} | Sees {others} other peers\n", id.id, id.peername);
    s.push_str("  > Addresses:\n");
    for a in sorted_strings(&id.addresses) {
        s.push_str(&format!("    - {a}\n"));
    }
    if !id.ipfs.error.is_empty() {
        s.push_str(&format!("  > IPFS ERROR: {}\n", id.ipfs.error));
        return s;
    }
    let ipfs_id = id.ipfs.id.map(|p| p.to_string()).unwrap_or_default();
    s.push_str(&format!("  > IPFS: {ipfs_id}\n"));
    for a in sorted_strings(&id.ipfs.addresses) {
        s.push_str(&format!("    - {a}\n"));
    }
    s
}

/// Go's `Format("2006-01-02 15:04:05")`: wall-clock time in the time's own
/// offset.
fn format_short_time(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(super) fn format_pin(pin: &Pin) -> String {
    let o = &pin.options;
    let mut kind = pin.pin_type.as_str().to_uppercase();
    if o.mode == PinMode::Direct {
        kind.push_str("-DIRECT");
    }
    let replication = if o.replication_factor_min == -1 && o.replication_factor_max == -1 {
        "Repl. Factor: -1 | Allocations: [everywhere]".to_owned()
    } else {
        // Go prints a []string as [a b c].
        format!(
            "Repl. Factor: {}--{} | Allocations: [{}]",
            o.replication_factor_min,
            o.replication_factor_max,
            sorted_strings(&pin.allocations).join(" ")
        )
    };
    let depth = match pin.max_depth {
        0 => "Direct".to_owned(),
        -1 => "Recursive".to_owned(),
        n => format!("Recursive-{n}"),
    };
    let metadata = if o.metadata.is_empty() { "no" } else { "yes" };
    let expiry = o
        .expire_at
        .as_ref()
        .map_or_else(|| "∞".to_owned(), format_short_time);
    let added = pin
        .timestamp
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), format_short_time);
    format!(
        "{} | {} | {kind} | {replication} | {depth} | Metadata: {metadata} | Exp: {expiry} | Added: {added}\n",
        pin.cid, o.name
    )
}

pub(super) fn format_version(v: &Version) -> String {
    format!("{}\n", v.version)
}

pub(super) fn format_error(e: &ApiError) -> String {
    format!(
        "An error occurred:\n  Code: {}\n  Message: {}\n",
        e.code, e.message
    )
}

/// Metric names (`health metrics` without a name), one per line.
impl Render for Vec<String> {
    fn text(&self) -> String {
        self.iter().map(|n| format!("{n}\n")).collect()
    }
}

impl Render for Vec<Metric> {
    fn text(&self) -> String {
        let now = Utc::now();
        self.iter().map(|m| format_metric(m, now)).collect()
    }
}

impl Render for Vec<Alert> {
    fn text(&self) -> String {
        let now = Utc::now();
        self.iter().map(|a| format_alert(a, now)).collect()
    }
}

/// `<peer> | <name>: <value> | Expires in: <humanized>`; a positive
/// freespace weight is shown in bytes, as ctl does.
pub(super) fn format_metric(m: &Metric, now: DateTime<Utc>) -> String {
    let value = match u64::try_from(m.weight) {
        Ok(w) if m.name == "freespace" && w > 0 => humanize_bytes(w),
        _ => m.value.clone(),
    };
    format!(
        "{} | {}: {value} | Expires in: {}\n",
        m.peer,
        m.name,
        humanize_time(from_nanos(m.expire), now)
    )
}

/// `<peer>: <name>. Expired at: <humanized>. Triggered at: <humanized>`.
pub(super) fn format_alert(a: &Alert, now: DateTime<Utc>) -> String {
    let triggered = DateTime::parse_from_rfc3339(&a.triggered_at)
        .map(|t| humanize_time(t.to_utc(), now))
        .unwrap_or_else(|_| a.triggered_at.clone());
    format!(
        "{}: {}. Expired at: {}. Triggered at: {triggered}\n",
        a.metric.peer,
        a.metric.name,
        humanize_time(from_nanos(a.metric.expire), now)
    )
}

fn from_nanos(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

/// Traffic of one libp2p protocol (`GET /health/bandwidth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandwidthStat {
    #[serde(default)]
    pub total_in: i64,
    #[serde(default)]
    pub total_out: i64,
    #[serde(default)]
    pub rate_in: f64,
    #[serde(default)]
    pub rate_out: f64,
}

/// `GET /health/bandwidth`: protocol → traffic.
pub type Bandwidth = BTreeMap<String, BandwidthStat>;

impl Render for Bandwidth {
    fn text(&self) -> String {
        let bytes = |n: i64| humanize_bytes(u64::try_from(n).unwrap_or(0));
        self.iter()
            .map(|(proto, s)| {
                format!(
                    "{proto:>25}: In: {:>7}. Out: {:>7}. RateIn: {:.2}B/s. RateOut: {:.2}B/s\n",
                    bytes(s.total_in),
                    bytes(s.total_out),
                    s.rate_in,
                    s.rate_out
                )
            })
            .collect()
    }
}

/// One item of `POST /add`'s stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedOutput {
    #[serde(default)]
    pub name: String,
    /// `null` in progress events.
    #[serde(default)]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "list_or_null"
    )]
    pub allocations: Vec<String>,
}

fn list_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `added <cid> <name>`, or only the CID when quiet.
pub(super) fn format_added(a: &AddedOutput, quiet: bool) -> String {
    let cid = a.cid.as_deref().unwrap_or_default();
    if quiet {
        format!("{cid}\n")
    } else {
        format!("added {cid} {}\n", a.name)
    }
}

/// go-humanize's `Bytes`: SI units, one decimal below 10.
pub(super) fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let val = (n as f64 / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[exp])
    } else {
        format!("{val:.0} {}", UNITS[exp])
    }
}

/// go-humanize's `Time`: "now", "3 seconds ago", "2 minutes from now"...
pub(super) fn humanize_time(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let (diff, label) = if then < now {
        (now - then, "ago")
    } else {
        (then - now, "from now")
    };
    let day = TimeDelta::days(1);
    let week = day * 7;
    let month = day * 30;
    let year = month * 12;
    // (below this, format, unit to count in): go-humanize's magnitudes.
    let table: [(TimeDelta, &str, TimeDelta); 16] = [
        (TimeDelta::seconds(1), "now", TimeDelta::zero()),
        (TimeDelta::seconds(2), "1 second", TimeDelta::zero()),
        (TimeDelta::minutes(1), "seconds", TimeDelta::seconds(1)),
        (TimeDelta::minutes(2), "1 minute", TimeDelta::zero()),
        (TimeDelta::hours(1), "minutes", TimeDelta::minutes(1)),
        (TimeDelta::hours(2), "1 hour", TimeDelta::zero()),
        (day, "hours", TimeDelta::hours(1)),
        (day * 2, "1 day", TimeDelta::zero()),
        (week, "days", day),
        (week * 2, "1 week", TimeDelta::zero()),
        (month, "weeks", week),
        (month * 2, "1 month", TimeDelta::zero()),
        (year, "months", month),
        (month * 18, "1 year", TimeDelta::zero()),
        (year * 2, "2 years", TimeDelta::zero()),
        (year * 37, "years", year),
    ];
    for (below, text, unit) in table {
        if diff < below {
            return match (text, unit.is_zero()) {
                ("now", _) => "now".to_owned(),
                (_, true) => format!("{text} {label}"),
                (_, false) => format!("{} {text} {label}", diff.num_seconds() / unit.num_seconds()),
            };
        }
    }
    format!("a long while {label}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn repo_gc_text() {
        use super::{GlobalRepoGc, Render};
        let gc: GlobalRepoGc = serde_json::from_value(serde_json::json!({"peer_map": {
            "12D3KooWB": {"peer": "12D3KooWB", "peername": "", "keys": null, "error": "rpc failure"},
            "12D3KooWA": {"peer": "12D3KooWA", "peername": "peer1", "keys": [
                {"key": "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"},
                {"key": null, "error": "some gc error"}
            ]}
        }}))
        .unwrap();
        assert_eq!(
            gc.text(),
            "peer1          \n  > CIDs:\n    - QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\n    - ERROR: some gc error\n\
             12D3KooWB       | ERROR: rpc failure\n  > CIDs:\n"
        );
    }

    use super::*;

    fn metric(name: &str, value: &str, weight: i64, expire: i64) -> Metric {
        Metric {
            name: name.into(),
            peer: "12D3KooWPeer".into(),
            value: value.into(),
            expire,
            valid: true,
            weight,
            partitionable: false,
            received_at: 0,
        }
    }

    #[test]
    fn bytes_like_go_humanize() {
        for (n, want) in [
            (0, "0 B"),
            (9, "9 B"),
            (10, "10 B"),
            (999, "999 B"),
            (1000, "1.0 kB"),
            (82_854_982, "83 MB"),
            (53_687_091_200, "54 GB"),
            (1_500_000, "1.5 MB"),
        ] {
            assert_eq!(humanize_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn times_like_go_humanize() {
        let now = DateTime::from_timestamp(1_000_000_000, 0).unwrap();
        for (delta, want) in [
            (0, "now"),
            (1, "1 second from now"),
            (-30, "30 seconds ago"),
            (90, "1 minute from now"),
            (-600, "10 minutes ago"),
            (3 * 3600, "3 hours from now"),
            (-3 * 86400, "3 days ago"),
        ] {
            let then = now + TimeDelta::seconds(delta);
            assert_eq!(humanize_time(then, now), want, "{delta}");
        }
    }

    #[test]
    fn metric_and_alert_lines() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let in_30s = 1_030 * 1_000_000_000;
        assert_eq!(
            format_metric(&metric("ping", "{}", 0, in_30s), now),
            "12D3KooWPeer | ping: {} | Expires in: 30 seconds from now\n"
        );
        assert_eq!(
            format_metric(
                &metric("freespace", "53687091200", 53_687_091_200, in_30s),
                now
            ),
            "12D3KooWPeer | freespace: 54 GB | Expires in: 30 seconds from now\n"
        );
        let alert = Alert {
            metric: metric("ping", "", 0, 990 * 1_000_000_000),
            triggered_at: "1970-01-01T00:16:35Z".into(),
        };
        assert_eq!(
            format_alert(&alert, now),
            "12D3KooWPeer: ping. Expired at: 10 seconds ago. Triggered at: 5 seconds ago\n"
        );
    }

    #[test]
    fn bandwidth_and_added_lines() {
        let bw: Bandwidth = BTreeMap::from([(
            "/ipfscluster/1.0/rpc".to_owned(),
            BandwidthStat {
                total_in: 1024,
                total_out: 2_048_000,
                rate_in: 1.5,
                rate_out: 3.25,
            },
        )]);
        assert_eq!(
            bw.text(),
            "     /ipfscluster/1.0/rpc: In:  1.0 kB. Out:  2.0 MB. RateIn: 1.50B/s. RateOut: 3.25B/s\n"
        );
        let added = AddedOutput {
            name: "dir/file.txt".into(),
            cid: Some("QmFile".into()),
            bytes: 0,
            size: 12,
            allocations: vec![],
        };
        assert_eq!(format_added(&added, false), "added QmFile dir/file.txt\n");
        assert_eq!(format_added(&added, true), "QmFile\n");
        assert_eq!(
            serde_json::to_string(&added).unwrap(),
            r#"{"name":"dir/file.txt","cid":"QmFile","size":12}"#
        );
    }
}
