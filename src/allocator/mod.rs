//! Who pins what. Until metrics arrive (the monitor issue), allocation
//! spreads pins over the live peerset by rendezvous hashing: each CID ranks
//! the peers by `sha256(cid ‖ peer)` and takes the first `replication_max`,
//! so allocations are stable while the peerset is, and spread evenly.

use cid::Cid;
use libp2p::PeerId;
use sha2::{Digest, Sha256};

/// Why a pin could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// Fewer live peers than the pin's minimum replication.
    #[error(
        "not enough peers to allocate CID. Needed at least: {needed}. Wanted at most: {wanted}. Available candidates: {available}. See logs for more info."
    )]
    NotEnoughPeers {
        needed: i32,
        wanted: i32,
        available: usize,
    },
}

/// Picks the peers that must pin `cid`. `replication_max == -1` means
/// everywhere, which the state records as no allocations.
pub fn allocate(
    cid: &Cid,
    candidates: &[PeerId],
    replication_min: i32,
    replication_max: i32,
) -> Result<Vec<PeerId>, AllocationError> {
    if replication_max < 0 {
        return Ok(Vec::new());
    }
    if (candidates.len() as i64) < replication_min as i64 {
        return Err(AllocationError::NotEnoughPeers {
            needed: replication_min,
            wanted: replication_max,
            available: candidates.len(),
        });
    }
    let key = cid.to_bytes();
    let mut ranked: Vec<([u8; 32], PeerId)> = candidates
        .iter()
        .map(|p| {
            let mut h = Sha256::new();
            h.update(&key);
            h.update(p.to_bytes());
            (h.finalize().into(), *p)
        })
        .collect();
    ranked.sort();
    ranked.dedup_by_key(|(_, p)| *p);
    Ok(ranked
        .into_iter()
        .take(replication_max as usize)
        .map(|(_, p)| p)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_stable_bounded_and_refuse_too_few_peers() {
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let cid = pincluster_crdt::cid_of(b"data");
        assert!(allocate(&cid, &peers, -1, -1).unwrap().is_empty());
        let two = allocate(&cid, &peers, 1, 2).unwrap();
        assert_eq!(two.len(), 2);
        let mut shuffled = peers.clone();
        shuffled.reverse();
        assert_eq!(allocate(&cid, &shuffled, 1, 2).unwrap(), two);
        assert_eq!(allocate(&cid, &peers, 1, 10).unwrap().len(), 5);
        assert_eq!(
            allocate(&cid, &peers[..1], 2, 3),
            Err(AllocationError::NotEnoughPeers {
                needed: 2,
                wanted: 3,
                available: 1
            })
        );
    }
}
