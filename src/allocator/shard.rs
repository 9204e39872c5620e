//! Budget sharding for followers (beyond the reference: ipfs-cluster#2059):
//! a follower that joins the shard pins only its part of a pinset too big
//! for one volunteer, and the followers of the shard between them hold
//! every pin `copies` times. Trusted peers take no part and track nobody.
//!
//! How: every sharding follower publishes a `shard` metric (its weight, the
//! storage budget it offers) on the metrics topic it already publishes its
//! ping on. Each follower computes, for each pin, the `copies` members with
//! the highest weighted rendezvous score `weight / -ln(h(cid, peer))`, `h`
//! uniform in (0, 1) from SHA-256: the same answer on every follower that
//! sees the same members, with no coordination, each member's share
//! proportional to its weight, and a member joining or leaving moves only
//! the pins it gains or held. A follower pins the pins it is a holder of,
//! and shows every other pin as `remote`.
//!
//! What it guarantees: when every member sees the same members (their
//! metrics arrive within a TTL), each pin has exactly `min(copies,
//! members)` holders. While views differ (a member just joined or died)
//! a pin may have more holders for a while, or fewer until the next state
//! sync (`cluster.state_sync_interval`) after the views agree again.
//! A pin that left a follower's share is unpinned from its daemon at a
//! state sync once all its holders report it pinned
//! ([`crate::pintracker::upkeep::release_dropped_share`]), so a move never
//! lowers a pin's copies. A follower whose view holds only itself pins
//! everything.

use std::time::Duration;

use chrono::Utc;
use cid::Cid;
use libp2p::PeerId;
use sha2::{Digest, Sha256};

use crate::monitor::{MetricWire, Monitor};

/// The metric a sharding follower publishes; its value is
/// `<weight>/<copies>`.
pub const SHARD_METRIC: &str = "shard";

/// A follower's part in the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSettings {
    /// How many members should hold each pin.
    pub copies: usize,
    /// This follower's weight (its budget, in any unit all members share:
    /// the README says GiB).
    pub weight: u64,
}

/// The metric announcing `settings` to the other members.
pub fn shard_metric(settings: ShardSettings, ttl: Duration) -> MetricWire {
    MetricWire {
        name: SHARD_METRIC.into(),
        value: format!("{}/{}", settings.weight, settings.copies),
        ttl_ms: ttl.as_millis() as u64,
        valid: true,
        weight: i64::try_from(settings.weight).unwrap_or(i64::MAX),
        partitionable: false,
    }
}

/// The settings a `shard` metric's value announces; `None` when it does
/// not read.
pub fn parse_value(value: &str) -> Option<ShardSettings> {
    let (weight, copies) = value.split_once('/')?;
    Some(ShardSettings {
        weight: weight.parse().ok()?,
        copies: copies.parse().ok()?,
    })
}

/// The `copies` holders of `cid` among `members` (peer, weight), best
/// first. Members of weight 0 hold nothing.
pub fn holders(cid: &Cid, members: &[(PeerId, u64)], copies: usize) -> Vec<PeerId> {
    let key = cid.to_bytes();
    let mut scored: Vec<(f64, PeerId)> = members
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(peer, w)| (score(&key, peer, *w), *peer))
        .collect();
    // Ties (vanishingly rare) fall to the peer id, the same everywhere.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(copies).map(|(_, p)| p).collect()
}

fn score(key: &[u8], peer: &PeerId, weight: u64) -> f64 {
    let mut h = Sha256::new();
    h.update(key);
    h.update(peer.to_bytes());
    let digest = h.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    // 53 bits into (0, 1): never 0 nor 1, so the logarithm is finite and
    // negative.
    let u = ((u64::from_be_bytes(top) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -u.ln()
}

/// The members of the shard as this follower sees them: the peers whose
/// `shard` metric is alive, and itself.
#[derive(Debug, Clone)]
pub struct Shard {
    local: PeerId,
    settings: ShardSettings,
    monitor: Monitor,
}

impl Shard {
    /// This follower's view of the shard, over the metrics `monitor` keeps.
    pub fn new(local: PeerId, settings: ShardSettings, monitor: Monitor) -> Self {
        Shard {
            local,
            settings,
            monitor,
        }
    }

    /// The settings this follower runs with.
    pub fn settings(&self) -> ShardSettings {
        self.settings
    }

    /// Every member with its weight, this follower included.
    pub fn members(&self) -> Vec<(PeerId, u64)> {
        let mut members: Vec<(PeerId, u64)> = self
            .monitor
            .valid_by_peer(SHARD_METRIC, Utc::now())
            .into_iter()
            .filter(|(peer, _)| *peer != self.local)
            .filter_map(|(peer, m)| Some((peer, parse_value(&m.value)?.weight)))
            .collect();
        members.push((self.local, self.settings.weight));
        members
    }

    /// Whether this follower is one of `cid`'s holders.
    pub fn holds(&self, cid: &Cid) -> bool {
        holders(cid, &self.members(), self.settings.copies).contains(&self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cids(n: usize) -> Vec<Cid> {
        (0..n)
            .map(|i| {
                let digest =
                    cid::multihash::Multihash::<64>::wrap(0x12, &Sha256::digest(i.to_le_bytes()))
                        .unwrap();
                Cid::new_v1(0x55, digest)
            })
            .collect()
    }

    #[test]
    fn every_pin_gets_exactly_copies_holders_and_shares_follow_weights() {
        let members: Vec<(PeerId, u64)> = (0..10)
            .map(|i| (PeerId::random(), if i == 0 { 4 } else { 1 }))
            .collect();
        let pins = cids(13_000);
        let mut held = std::collections::HashMap::<PeerId, usize>::new();
        for cid in &pins {
            let h = holders(cid, &members, 3);
            assert_eq!(h.len(), 3);
            let distinct: std::collections::HashSet<_> = h.iter().collect();
            assert_eq!(distinct.len(), 3, "a pin's holders are distinct");
            for p in h {
                *held.entry(p).or_default() += 1;
            }
        }
        // Weight 4 of 13 holds more than the others, each of which holds
        // about the same.
        let big = held[&members[0].0];
        for (peer, _) in &members[1..] {
            assert!(held[peer] < big, "{} < {big}", held[peer]);
            assert!(held[peer] > 2_000 && held[peer] < 3_800, "{}", held[peer]);
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_pins() {
        let members: Vec<(PeerId, u64)> = (0..6).map(|_| (PeerId::random(), 1)).collect();
        let gone = members[2].0;
        let rest: Vec<_> = members.iter().copied().filter(|m| m.0 != gone).collect();
        for cid in cids(2_000) {
            let before = holders(&cid, &members, 2);
            let after = holders(&cid, &rest, 2);
            for p in before.iter().filter(|p| **p != gone) {
                assert!(after.contains(p), "a surviving holder keeps its pins");
            }
        }
    }

    #[test]
    fn metric_values_read_back() {
        let settings = ShardSettings {
            copies: 2,
            weight: 500,
        };
        let metric = shard_metric(settings, Duration::from_secs(30));
        assert_eq!(parse_value(&metric.value), Some(settings));
        for bad in ["", "5", "a/2", "5/-1"] {
            assert_eq!(parse_value(bad), None, "{bad}");
        }
    }

    #[test]
    fn fewer_members_than_copies_hold_everything_and_weight_zero_nothing() {
        let a = PeerId::random();
        let b = PeerId::random();
        let cid = cids(1)[0];
        assert_eq!(holders(&cid, &[(a, 1)], 3), vec![a]);
        assert_eq!(holders(&cid, &[(a, 0), (b, 1)], 3), vec![b]);
    }
}
