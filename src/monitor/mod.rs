//! Peer monitoring: metrics published over gossipsub, their liveness, and
//! alerts when they expire.
//!
//! Two things differ from the reference on purpose. A metric belongs to the
//! peer that *signed the gossip message*: the wire form has no peer field
//! at all, so no peer can publish for another. And a metric carries a TTL,
//! not an absolute expiry: the receiver computes the expiry on its own
//! clock, so clock skew between peers cannot make a live peer look dead (or
//! a dead one live).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// How many alerts are kept for `GET /health/alerts`.
const MAX_ALERTS: usize = 1000;
/// Most distinct metric names kept per peer. A peer publishes a handful
/// (`ping`, `freespace`, `pinqueue`, its tags); without a bound, a member
/// publishing names never seen before grows this peer's memory, its
/// alerts and `GET /monitor/metrics` for ever (the hostile peer test).
pub const MAX_NAMES_PER_PEER: usize = 64;
/// Most peers whose metrics are kept. Every follower of a collaborative
/// cluster publishes its metrics, and volunteers come and go: without a
/// bound, a trusted peer would keep every follower it ever heard of. Past
/// it, the peer heard of longest ago is forgotten.
pub const MAX_PEERS: usize = 10_000;

/// A metric as a peer publishes it (the gossip payload carries a list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricWire {
    /// `ping`, `freespace`, `tag:<name>`, `pinqueue`, ...
    pub name: String,
    /// The value, as a string (the reference's convention).
    pub value: String,
    /// How long it stays valid after it is received, in milliseconds.
    pub ttl_ms: u64,
    /// Whether the value is meaningful.
    pub valid: bool,
    /// Allocation weight.
    pub weight: i64,
    /// Whether peers with the same value form one allocation partition.
    pub partitionable: bool,
}

/// A metric as the REST API shows it (spec §1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    /// The metric's name.
    pub name: String,
    /// The peer it is about: always the author of the gossip message.
    pub peer: String,
    /// The value.
    pub value: String,
    /// Expiry, Unix nanoseconds, on this peer's clock.
    pub expire: i64,
    /// Whether the value is meaningful.
    pub valid: bool,
    /// Allocation weight.
    pub weight: i64,
    /// Whether it partitions allocations.
    pub partitionable: bool,
    /// When this peer received it, Unix nanoseconds.
    pub received_at: i64,
}

/// An expired metric (spec §1.2: a metric plus `triggered_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The metric that expired.
    #[serde(flatten)]
    pub metric: Metric,
    /// When the alert was raised, RFC 3339.
    pub triggered_at: String,
}

#[derive(Debug, Default)]
struct Store {
    latest: HashMap<(PeerId, String), Metric>,
    /// Distinct names in `latest`, per peer.
    names: HashMap<PeerId, usize>,
    alerted: HashSet<(PeerId, String)>,
    alerts: VecDeque<Alert>,
}

impl Store {
    fn forget(&mut self, peer: &PeerId) {
        self.latest.retain(|(p, _), _| p != peer);
        self.alerted.retain(|(p, _)| p != peer);
        self.names.remove(peer);
    }
}

/// The metrics this peer knows and the alerts it raised. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Monitor {
    store: Arc<Mutex<Store>>,
    /// Set when a peer starts listening to our metrics: publishing at once
    /// means a new peer never waits a whole ping interval to see us, and a
    /// peer that stops right after joining was still seen alive, so its
    /// death raises an alert.
    wanted: Arc<tokio::sync::Notify>,
    /// Wakes the expiry checker when metrics arrive: a new metric may
    /// expire before the checker's next planned look.
    recorded: Arc<tokio::sync::Notify>,
    /// Wakes the IPFS swarm connector when a peer's `ping` names an IPFS
    /// daemon it did not name before (a new peer, or new addresses), so
    /// daemons are connected the moment a peer learns of another's.
    daemons_changed: Arc<tokio::sync::Notify>,
}

/// A peer's IPFS daemon, as its latest `ping` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfsDaemon {
    /// The cluster peer beside it.
    pub peer: PeerId,
    /// The daemon's own peer id.
    pub id: libp2p::PeerId,
    /// The addresses it announces (those that parse).
    pub addresses: Vec<libp2p::Multiaddr>,
}

/// The IPFS part of a `ping` value; `None` when the peer's daemon was not
/// reachable when it published (empty id).
fn ping_daemon(peer: PeerId, value: &str) -> Option<IpfsDaemon> {
    #[derive(Deserialize)]
    struct Ping {
        #[serde(default)]
        ipfs_id: String,
        #[serde(default)]
        ipfs_addresses: Vec<String>,
    }
    let ping: Ping = serde_json::from_str(value).ok()?;
    Some(IpfsDaemon {
        peer,
        id: ping.ipfs_id.parse().ok()?,
        addresses: ping
            .ipfs_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
    })
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Monitor {
    /// An empty monitor.
    pub fn new() -> Self {
        Self::default()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // Plain data, updated in small critical sections.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records metrics `author` signed, received at `now`.
    pub fn record(&self, author: PeerId, metrics: Vec<MetricWire>, now: DateTime<Utc>) {
        let mut store = self.store();
        if !store.names.contains_key(&author) && store.names.len() >= MAX_PEERS {
            // A scan, but only when a new peer arrives at the bound.
            let mut newest = HashMap::<PeerId, i64>::new();
            for ((peer, _), m) in &store.latest {
                let t = newest.entry(*peer).or_insert(i64::MIN);
                *t = (*t).max(m.received_at);
            }
            if let Some((stale, _)) = newest.into_iter().min_by_key(|(_, t)| *t) {
                store.forget(&stale);
            }
        }
        for m in metrics {
            let ttl = chrono::Duration::milliseconds(m.ttl_ms.min(i64::MAX as u64 / 2) as i64);
            let metric = Metric {
                peer: author.to_string(),
                value: m.value,
                expire: nanos(now + ttl),
                valid: m.valid,
                weight: m.weight,
                partitionable: m.partitionable,
                received_at: nanos(now),
                name: m.name,
            };
            let key = (author, metric.name.clone());
            if !store.latest.contains_key(&key) {
                let names = store.names.entry(author).or_default();
                if *names >= MAX_NAMES_PER_PEER {
                    tracing::debug!(peer = %author, name = %key.1, "metric dropped: too many names from this peer");
                    continue;
                }
                *names += 1;
            }
            // A fresh metric clears a past alert: the next expiry alerts again.
            store.alerted.remove(&key);
            let new_daemon = metric.name == "ping"
                && store
                    .latest
                    .get(&key)
                    .is_none_or(|old| old.value != metric.value)
                && ping_daemon(author, &metric.value).is_some();
            store.latest.insert(key, metric);
            if new_daemon {
                self.daemons_changed.notify_one();
            }
        }
        self.recorded.notify_one();
    }

    /// Raises an alert for every latest metric expired at `now` that has
    /// not alerted yet; returns the new alerts.
    pub fn check(&self, now: DateTime<Utc>) -> Vec<Alert> {
        let now_ns = nanos(now);
        let mut store = self.store();
        let expired: Vec<(PeerId, String)> = store
            .latest
            .iter()
            .filter(|(key, m)| m.expire <= now_ns && !store.alerted.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        let mut raised = Vec::new();
        for key in expired {
            let Some(metric) = store.latest.get(&key).cloned() else {
                continue;
            };
            let alert = Alert {
                metric,
                triggered_at: now.to_rfc3339(),
            };
            store.alerted.insert(key);
            if store.alerts.len() >= MAX_ALERTS {
                store.alerts.pop_front();
            }
            store.alerts.push_back(alert.clone());
            raised.push(alert);
        }
        raised
    }

    /// The latest valid, unexpired metric `name` of every peer.
    pub fn metrics(&self, name: &str, now: DateTime<Utc>) -> Vec<Metric> {
        let now_ns = nanos(now);
        let mut out: Vec<Metric> = self
            .store()
            .latest
            .iter()
            .filter(|((_, n), m)| n == name && m.valid && m.expire > now_ns)
            .map(|(_, m)| m.clone())
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    /// The latest valid, unexpired metric `name`, by peer.
    pub fn valid_by_peer(&self, name: &str, now: DateTime<Utc>) -> HashMap<PeerId, Metric> {
        let now_ns = nanos(now);
        self.store()
            .latest
            .iter()
            .filter(|((_, n), m)| n == name && m.valid && m.expire > now_ns)
            .map(|((p, _), m)| (*p, m.clone()))
            .collect()
    }

    /// The IPFS daemon id each peer's live `ping` names (none for a peer
    /// whose daemon is down).
    pub fn ipfs_ids(&self, now: DateTime<Utc>) -> HashMap<String, PeerId> {
        self.valid_by_peer("ping", now)
            .into_iter()
            .filter_map(|(peer, m)| {
                let value: serde_json::Value = serde_json::from_str(&m.value).ok()?;
                let id = value.get("ipfs_id")?.as_str()?.parse().ok()?;
                Some((peer.to_string(), id))
            })
            .collect()
    }

    /// The names of the metrics known.
    pub fn names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self.store().latest.keys().map(|(_, n)| n.clone()).collect();
        names.into_iter().collect()
    }

    /// Drops everything known of `peer` (it was removed from the cluster).
    pub fn forget(&self, peer: &PeerId) {
        self.store().forget(peer);
    }

    /// When the earliest metric not yet alerted expires, if any.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        let store = self.store();
        store
            .latest
            .iter()
            .filter(|(key, _)| !store.alerted.contains(*key))
            .map(|(_, m)| m.expire)
            .min()
            .map(DateTime::from_timestamp_nanos)
    }

    /// Resolves when metrics were recorded.
    pub async fn metrics_recorded(&self) {
        self.recorded.notified().await;
    }

    /// Asks the publisher to send this peer's metrics now.
    pub fn want_metrics(&self) {
        self.wanted.notify_one();
    }

    /// Resolves when someone asked for this peer's metrics.
    pub async fn metrics_wanted(&self) {
        self.wanted.notified().await;
    }

    /// The alerts raised, oldest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.store().alerts.iter().cloned().collect()
    }

    /// The IPFS daemons of the peers whose `ping` is valid and unexpired at
    /// `now` (this peer's own included), as their pings describe them.
    pub fn ipfs_daemons(&self, now: DateTime<Utc>) -> Vec<IpfsDaemon> {
        let now_ns = nanos(now);
        self.store()
            .latest
            .iter()
            .filter(|((_, n), m)| n == "ping" && m.valid && m.expire > now_ns)
            .filter_map(|((p, _), m)| ping_daemon(*p, &m.value))
            .collect()
    }

    /// Resolves when a `ping` named an IPFS daemon, or addresses, not
    /// named before. One waiter: the swarm connector.
    pub async fn ipfs_daemons_changed(&self) {
        self.daemons_changed.notified().await;
    }

    /// Peers whose `ping` is valid and unexpired at `now`.
    pub fn live_peers(&self, now: DateTime<Utc>) -> Vec<PeerId> {
        let now_ns = nanos(now);
        self.store()
            .latest
            .iter()
            .filter(|((_, n), m)| n == "ping" && m.valid && m.expire > now_ns)
            .map(|((p, _), _)| *p)
            .collect()
    }
}

/// The value of a `ping` metric: the reference's fields, in its order,
/// empty ones left out (what `health metrics ping` prints).
#[derive(Debug, Serialize)]
struct PingValue<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    peer_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    ipfs_id: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ipfs_addresses: &'a [String],
}

/// The metrics every peer publishes about itself each ping interval.
pub fn ping(ttl: Duration, peername: &str, ipfs_id: &str, ipfs_addresses: &[String]) -> MetricWire {
    let value = PingValue {
        peer_name: peername,
        ipfs_id,
        ipfs_addresses,
    };
    MetricWire {
        name: "ping".into(),
        value: serde_json::to_string(&value).unwrap_or_default(),
        ttl_ms: ttl.as_millis() as u64,
        valid: true,
        weight: 0,
        partitionable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(name: &str, ttl_ms: u64) -> MetricWire {
        MetricWire {
            name: name.into(),
            value: "1".into(),
            ttl_ms,
            valid: true,
            weight: 1,
            partitionable: false,
        }
    }

    #[test]
    fn metrics_belong_to_their_author_and_expire_on_the_receivers_clock() {
        let m = Monitor::new();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Utc::now();
        m.record(a, vec![wire("ping", 1000)], t0);
        m.record(b, vec![wire("ping", 5000)], t0);
        let pings = m.metrics("ping", t0);
        assert_eq!(pings.len(), 2);
        assert!(pings.iter().any(|p| p.peer == a.to_string()));
        assert_eq!(m.names(), vec!["ping".to_string()]);

        // Two seconds later A's ping expired: one alert, once.
        let t2 = t0 + chrono::Duration::seconds(2);
        let alerts = m.check(t2);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].metric.peer, a.to_string());
        assert!(m.check(t2).is_empty());
        assert_eq!(m.live_peers(t2), vec![b]);
        assert_eq!(m.metrics("ping", t2).len(), 1);

        // A comes back; its next expiry alerts again (at t0 + 4 s B's
        // 5 s ping is still valid; at t0 + 6 s it has expired too).
        m.record(a, vec![wire("ping", 1000)], t2);
        assert!(m.check(t2).is_empty());
        assert_eq!(m.check(t0 + chrono::Duration::seconds(4)).len(), 1);
        assert_eq!(m.check(t0 + chrono::Duration::seconds(6)).len(), 1);
        assert_eq!(m.alerts().len(), 3);
    }

    #[test]
    fn metrics_of_more_peers_than_the_bound_forget_the_peer_heard_of_longest_ago() {
        let m = Monitor::new();
        let at = |s: i64| Utc::now() + chrono::Duration::seconds(s);
        let (t0, t1, t2, t3) = (at(0), at(1), at(2), at(3));
        let (first, stale, newcomer) = (PeerId::random(), PeerId::random(), PeerId::random());
        m.record(first, vec![wire("ping", 60_000)], t0);
        m.record(stale, vec![wire("ping", 60_000)], t1);
        for _ in 2..MAX_PEERS {
            m.record(PeerId::random(), vec![wire("ping", 60_000)], t2);
        }
        // The first peer speaks again: it is heard of most lately now.
        m.record(first, vec![wire("ping", 60_000)], t3);
        m.record(newcomer, vec![wire("ping", 60_000)], t3);
        let peers: HashSet<String> = m.metrics("ping", t3).into_iter().map(|x| x.peer).collect();
        assert_eq!(peers.len(), MAX_PEERS);
        assert!(peers.contains(&newcomer.to_string()));
        assert!(peers.contains(&first.to_string()));
        assert!(!peers.contains(&stale.to_string()));
    }

    #[test]
    fn a_peer_cannot_grow_the_monitor_with_names_never_seen_before() {
        let m = Monitor::new();
        let (rogue, honest) = (PeerId::random(), PeerId::random());
        let now = Utc::now();
        let flood: Vec<MetricWire> = (0..10 * MAX_NAMES_PER_PEER)
            .map(|i| wire(&format!("n{i}"), 60_000))
            .collect();
        m.record(rogue, flood, now);
        assert_eq!(m.names().len(), MAX_NAMES_PER_PEER);
        // The names it has keep updating; other peers are not affected.
        m.record(rogue, vec![wire("n0", 1)], now);
        assert_eq!(
            m.metrics("n0", now)[0].expire,
            nanos(now + chrono::Duration::milliseconds(1))
        );
        m.record(honest, vec![wire("ping", 60_000)], now);
        assert_eq!(m.metrics("ping", now).len(), 1);
        // Forgotten, it starts over.
        m.forget(&rogue);
        m.record(rogue, vec![wire("fresh", 60_000)], now);
        assert_eq!(m.metrics("fresh", now).len(), 1);
    }

    #[test]
    fn alerts_serialize_as_a_metric_plus_triggered_at() {
        let m = Monitor::new();
        m.record(PeerId::random(), vec![wire("freespace", 0)], Utc::now());
        let alert = m.check(Utc::now() + chrono::Duration::seconds(1)).remove(0);
        let v = serde_json::to_value(&alert).unwrap();
        for key in [
            "name",
            "peer",
            "value",
            "expire",
            "valid",
            "weight",
            "partitionable",
            "received_at",
            "triggered_at",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
    }

    #[tokio::test]
    async fn pings_name_ipfs_daemons_and_a_new_one_wakes_the_connector() {
        let m = Monitor::new();
        let (peer, daemon) = (PeerId::random(), PeerId::random());
        let addr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{daemon}");
        let t0 = Utc::now();
        // A peer whose daemon was down publishes an empty id: no daemon.
        m.record(peer, vec![ping(Duration::from_secs(9), "a", "", &[])], t0);
        assert!(m.ipfs_daemons(t0).is_empty());
        m.record(
            peer,
            vec![ping(
                Duration::from_secs(9),
                "a",
                &daemon.to_string(),
                &[addr.clone(), "junk".into()],
            )],
            t0,
        );
        assert_eq!(
            m.ipfs_daemons(t0),
            vec![IpfsDaemon {
                peer,
                id: daemon,
                addresses: vec![addr.parse().unwrap()],
            }]
        );
        // The change was signalled (the permit is stored for the waiter)...
        tokio::time::timeout(Duration::from_secs(1), m.ipfs_daemons_changed())
            .await
            .expect("a changed daemon wakes the connector");
        // ...the same ping again is not a change...
        m.record(
            peer,
            vec![ping(
                Duration::from_secs(9),
                "a",
                &daemon.to_string(),
                &[addr, "junk".into()],
            )],
            t0,
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), m.ipfs_daemons_changed())
                .await
                .is_err()
        );
        // ...and an expired ping names no daemon.
        assert!(
            m.ipfs_daemons(t0 + chrono::Duration::seconds(10))
                .is_empty()
        );
    }
}
