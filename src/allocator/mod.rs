//! Who pins what: the balanced allocator.
//!
//! Inputs are the metrics every peer publishes (`allocator.balanced.allocate_by`,
//! by default `tag:group`, `pinqueue`, `freespace`), as the local monitor holds
//! them. A peer is a candidate when its ping is alive and it has a valid,
//! unexpired metric for every name in `allocate_by` that at least one live
//! peer publishes (a name nobody publishes, e.g. an informer removed from
//! every config, is ignored instead of making every peer ineligible, which is
//! what the reference does).
//!
//! Ordering follows the reference's balanced allocator: the first metric
//! splits peers into partitions (peers sharing a value of a partitionable
//! metric such as a tag form one partition; otherwise each peer is its own),
//! partitions are sorted by weight, then by the weight of what is inside them,
//! then by value, the next metric splits each partition again, and peers are
//! drawn round-robin across partitions, so consecutive picks land in
//! different groups (regions, racks). Where everything ties, peers rank by
//! `sha256(cid ‖ peer)`: the same peers get the same CIDs while metrics are
//! equal, and CIDs spread evenly over them.

pub mod shard;

use std::collections::HashMap;

use cid::Cid;
use libp2p::PeerId;
use sha2::{Digest, Sha256};

use crate::config::TrustedPeers;
use crate::monitor::{Metric, Monitor};

/// Why a pin could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// Fewer candidates than the pin's minimum replication.
    #[error(
        "not enough peers to allocate CID. Needed at least: {needed}. Wanted at most: {wanted}. Available candidates: {available}. See logs for more info."
    )]
    NotEnoughPeers {
        needed: i32,
        wanted: i32,
        available: usize,
    },
}

/// Which peers may receive allocations, by trust.
#[derive(Debug, Clone)]
pub enum TrustFilter {
    /// Every peer (the default).
    Any,
    /// `cluster.pin_only_on_trusted_peers`.
    TrustedOnly(TrustedPeers),
    /// `cluster.pin_only_on_untrusted_peers`.
    UntrustedOnly(TrustedPeers),
}

impl TrustFilter {
    fn admits(&self, peer: &PeerId) -> bool {
        match self {
            TrustFilter::Any => true,
            TrustFilter::TrustedOnly(t) => t.is_trusted(peer),
            TrustFilter::UntrustedOnly(t) => !t.is_trusted(peer),
        }
    }
}

/// What one allocation asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub cid: &'a Cid,
    pub replication_min: i32,
    /// `-1`: everywhere (recorded as no allocations).
    pub replication_max: i32,
    /// The pin's allocations so far (a re-pin keeps the live ones).
    pub current: &'a [PeerId],
    /// User allocations: taken first when they are candidates.
    pub priority: &'a [PeerId],
    /// Never chosen (a peer that went down).
    pub exclude: &'a [PeerId],
}

/// The metrics of the live peers at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Peers whose ping is alive.
    pub live: Vec<PeerId>,
    /// For each `allocate_by` name, in order, each peer's metric.
    pub metrics: Vec<HashMap<PeerId, Metric>>,
}

/// The balanced allocator over the local monitor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Allocator {
    monitor: Monitor,
    allocate_by: Vec<String>,
    trust: TrustFilter,
}

impl Allocator {
    pub fn new(monitor: Monitor, allocate_by: Vec<String>, trust: TrustFilter) -> Self {
        Allocator {
            monitor,
            allocate_by,
            trust,
        }
    }

    /// The peers that must pin `req.cid`, from the metrics known now.
    pub fn allocate(&self, req: Request<'_>) -> Result<Vec<PeerId>, AllocationError> {
        allocate(&self.snapshot(chrono::Utc::now()), &self.trust, req)
    }

    /// Peers that are alive and allowed to receive pins.
    pub fn live_peers(&self) -> Vec<PeerId> {
        let mut live = self.monitor.live_peers(chrono::Utc::now());
        live.retain(|p| self.trust.admits(p));
        live
    }

    fn snapshot(&self, now: chrono::DateTime<chrono::Utc>) -> Snapshot {
        Snapshot {
            live: self.monitor.live_peers(now),
            metrics: self
                .allocate_by
                .iter()
                .map(|name| self.monitor.valid_by_peer(name, now))
                .collect(),
        }
    }
}

/// Allocation as a pure function of a metrics snapshot (unit-testable).
pub fn allocate(
    snapshot: &Snapshot,
    trust: &TrustFilter,
    req: Request<'_>,
) -> Result<Vec<PeerId>, AllocationError> {
    if req.replication_max < 0 {
        return Ok(Vec::new());
    }
    // Metric names that no live peer publishes do not count.
    let metrics: Vec<&HashMap<PeerId, Metric>> = snapshot
        .metrics
        .iter()
        .filter(|m| snapshot.live.iter().any(|p| m.contains_key(p)))
        .collect();
    let mut eligible: Vec<PeerId> = snapshot
        .live
        .iter()
        .filter(|p| trust.admits(p) && !req.exclude.contains(p))
        .filter(|p| metrics.iter().all(|m| m.contains_key(p)))
        .copied()
        .collect();
    eligible.sort();
    eligible.dedup();

    let mut current: Vec<PeerId> = Vec::new();
    for p in req.current {
        if eligible.contains(p) && !current.contains(p) {
            current.push(*p);
        }
    }
    let max = req.replication_max as usize;
    if current.len() >= max {
        current.truncate(max);
        return Ok(current);
    }
    let needed = req.replication_min - current.len() as i32;
    let wanted = req.replication_max - current.len() as i32;
    if needed <= 0 {
        return Ok(current);
    }
    let mut priority: Vec<PeerId> = Vec::new();
    for p in req.priority {
        if eligible.contains(p) && !current.contains(p) && !priority.contains(p) {
            priority.push(*p);
        }
    }
    let others: Vec<PeerId> = eligible
        .into_iter()
        .filter(|p| !current.contains(p) && !priority.contains(p))
        .collect();
    let available = priority.len() + others.len();
    if (available as i64) < needed as i64 {
        return Err(AllocationError::NotEnoughPeers {
            needed,
            wanted,
            available,
        });
    }
    let ordered = balanced(req.cid, others, &metrics);
    current.extend(
        priority
            .into_iter()
            .chain(ordered)
            .take(wanted.max(0) as usize),
    );
    Ok(current)
}

/// One level of the partition tree.
struct Partition {
    weight: i128,
    /// The summed weights of the next metric inside: a group with more free
    /// space ranks before an equal-weight group with less.
    inner_weight: i128,
    value: String,
    /// The partition's peers, already in draw order.
    peers: Vec<PeerId>,
}

/// Orders `peers` by the balanced rule over `metrics` (first = best).
fn balanced(cid: &Cid, peers: Vec<PeerId>, metrics: &[&HashMap<PeerId, Metric>]) -> Vec<PeerId> {
    let Some((first, rest)) = metrics.split_first() else {
        return rendezvous(cid, peers);
    };
    let mut groups: Vec<(String, Vec<PeerId>)> = Vec::new();
    for p in peers {
        let m = &first[&p];
        if m.partitionable {
            match groups.iter_mut().find(|(v, _)| *v == m.value) {
                Some((_, g)) => g.push(p),
                None => groups.push((m.value.clone(), vec![p])),
            }
        } else {
            groups.push((m.value.clone(), vec![p]));
        }
    }
    let mut partitions: Vec<Partition> = groups
        .into_iter()
        .map(|(value, group)| {
            let weight = group.iter().map(|p| first[p].weight as i128).sum();
            let inner_weight = rest.first().map_or(0, |next| {
                group
                    .iter()
                    .map(|p| next.get(p).map_or(0, |m| m.weight as i128))
                    .sum()
            });
            Partition {
                weight,
                inner_weight,
                value,
                peers: balanced(cid, group, rest),
            }
        })
        .collect();
    // Ties keep the rendezvous order of each partition's best peer.
    let rank: HashMap<PeerId, usize> =
        rendezvous(cid, partitions.iter().map(|p| p.peers[0]).collect())
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i))
            .collect();
    partitions.sort_by(|a, b| {
        b.weight
            .cmp(&a.weight)
            .then(b.inner_weight.cmp(&a.inner_weight))
            .then(a.value.cmp(&b.value))
            .then(rank[&a.peers[0]].cmp(&rank[&b.peers[0]]))
    });
    // Round-robin across partitions.
    let mut queues: Vec<std::vec::IntoIter<PeerId>> = partitions
        .into_iter()
        .map(|p| p.peers.into_iter())
        .collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for q in queues.iter_mut() {
            if let Some(p) = q.next() {
                out.push(p);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// The one peer of `peers` in charge of `cid` when work about it must be
/// done once (re-allocating a dead peer's pin): no coordination needed.
pub fn responsible(cid: &Cid, peers: &[PeerId]) -> Option<PeerId> {
    rendezvous(cid, peers.to_vec()).first().copied()
}

/// Peers ranked by `sha256(cid ‖ peer)`.
fn rendezvous(cid: &Cid, peers: Vec<PeerId>) -> Vec<PeerId> {
    let key = cid.to_bytes();
    let mut ranked: Vec<([u8; 32], PeerId)> = peers
        .into_iter()
        .map(|p| {
            let mut h = Sha256::new();
            h.update(&key);
            h.update(p.to_bytes());
            (h.finalize().into(), p)
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, value: &str, weight: i64, partitionable: bool) -> Metric {
        Metric {
            name: name.into(),
            peer: String::new(),
            value: value.into(),
            expire: i64::MAX,
            valid: true,
            weight,
            partitionable,
            received_at: 0,
        }
    }

    /// Peers with a `tag:group` and a `freespace` each.
    fn snapshot(peers: &[(PeerId, &str, i64)]) -> Snapshot {
        let mut tags = HashMap::new();
        let mut free = HashMap::new();
        for (p, group, space) in peers {
            tags.insert(*p, metric("tag:group", group, 0, true));
            free.insert(*p, metric("freespace", &space.to_string(), *space, false));
        }
        Snapshot {
            live: peers.iter().map(|(p, _, _)| *p).collect(),
            metrics: vec![tags, free],
        }
    }

    fn req<'a>(cid: &'a Cid, min: i32, max: i32) -> Request<'a> {
        Request {
            cid,
            replication_min: min,
            replication_max: max,
            current: &[],
            priority: &[],
            exclude: &[],
        }
    }

    #[test]
    fn the_most_free_space_wins_and_groups_alternate() {
        let p: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let snap = snapshot(&[
            (p[0], "eu", 100),
            (p[1], "eu", 90),
            (p[2], "us", 50),
            (p[3], "us", 10),
        ]);
        let cid = pincluster_crdt::cid_of(b"data");
        // "eu" holds more space in all: its best peer first, then the best
        // of "us", then back to "eu".
        let got = allocate(&snap, &TrustFilter::Any, req(&cid, 1, 3)).unwrap();
        assert_eq!(got, vec![p[0], p[2], p[1]]);
        assert!(
            allocate(&snap, &TrustFilter::Any, req(&cid, -1, -1))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn too_few_candidates_say_how_many_were_needed_and_found() {
        let p: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
        let snap = snapshot(&[(p[0], "a", 1), (p[1], "a", 1)]);
        let cid = pincluster_crdt::cid_of(b"data");
        let err = allocate(&snap, &TrustFilter::Any, req(&cid, 3, 4)).unwrap_err();
        assert_eq!(
            err,
            AllocationError::NotEnoughPeers {
                needed: 3,
                wanted: 4,
                available: 2
            }
        );
        assert!(err.to_string().contains("Needed at least: 3"));
    }

    #[test]
    fn current_allocations_stay_and_user_allocations_come_first() {
        let p: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let snap = snapshot(&[
            (p[0], "a", 400),
            (p[1], "a", 300),
            (p[2], "a", 200),
            (p[3], "a", 100),
        ]);
        let cid = pincluster_crdt::cid_of(b"data");
        let mut r = req(&cid, 2, 2);
        r.priority = &p[3..4];
        assert_eq!(
            allocate(&snap, &TrustFilter::Any, r).unwrap(),
            vec![p[3], p[0]]
        );
        // A re-pin keeps its live allocations, and replaces a dead one.
        let current = [p[2], p[1]];
        r = req(&cid, 2, 2);
        r.current = &current;
        assert_eq!(
            allocate(&snap, &TrustFilter::Any, r).unwrap(),
            vec![p[2], p[1]]
        );
        r.exclude = &p[2..3];
        assert_eq!(
            allocate(&snap, &TrustFilter::Any, r).unwrap(),
            vec![p[1], p[0]]
        );
    }

    #[test]
    fn peers_without_a_metric_others_publish_or_trust_are_left_out() {
        let p: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let mut snap = snapshot(&[(p[0], "a", 1), (p[1], "a", 2), (p[2], "a", 3)]);
        // p[2]'s daemon is down: no freespace.
        snap.metrics[1].remove(&p[2]);
        let cid = pincluster_crdt::cid_of(b"data");
        assert_eq!(
            allocate(&snap, &TrustFilter::Any, req(&cid, 1, 3)).unwrap(),
            vec![p[1], p[0]]
        );
        // Nobody publishes freespace: it is ignored.
        snap.metrics[1].clear();
        assert_eq!(
            allocate(&snap, &TrustFilter::Any, req(&cid, 3, 3))
                .unwrap()
                .len(),
            3
        );
        let trusted = TrustFilter::TrustedOnly(TrustedPeers::Only(vec![p[0]]));
        assert_eq!(
            allocate(&snap, &trusted, req(&cid, 1, 3)).unwrap(),
            vec![p[0]]
        );
        let untrusted = TrustFilter::UntrustedOnly(TrustedPeers::Only(vec![p[0]]));
        assert!(
            !allocate(&snap, &untrusted, req(&cid, 1, 3))
                .unwrap()
                .contains(&p[0])
        );
    }

    #[test]
    fn equal_metrics_spread_cids_evenly_and_stably() {
        let p: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let snap = snapshot(&[
            (p[0], "a", 5),
            (p[1], "a", 5),
            (p[2], "a", 5),
            (p[3], "a", 5),
        ]);
        let mut counts = HashMap::new();
        for i in 0..400 {
            let cid = pincluster_crdt::cid_of(format!("{i}").as_bytes());
            let got = allocate(&snap, &TrustFilter::Any, req(&cid, 1, 1)).unwrap();
            assert_eq!(
                got,
                allocate(&snap, &TrustFilter::Any, req(&cid, 1, 1)).unwrap()
            );
            *counts.entry(got[0]).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|c| *c > 50), "{counts:?}");
    }
}
