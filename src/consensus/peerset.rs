//! Peer removals as replicated records, in the same merkle-CRDT as the
//! pinset.
//!
//! A removal (or re-admission) is a put of the key
//! `0xFF "peerset/" ‖ peer id bytes` with a [`PeerRecord`] value. Riding in
//! the pinset's CRDT gives it, with no new machinery, what a lasting
//! removal needs: it is durable (the fjall store), it reaches peers that
//! were offline or join later (they sync the DAG like any delta), and only
//! trusted writers count (the engine refuses deltas of untrusted authors).
//! Of two records of one peer the engine keeps the one of the higher
//! delta height: a record written after seeing another always wins, so
//! the order of causally related changes never depends on clocks; for
//! concurrent ones the tie-break is the engine's, the same on every peer.
//!
//! No CID starts with 0xFF (its first byte is a version varint, 0x01, or
//! the sha2-256 code 0x12 of a CIDv0), so the records sort after every pin
//! and pinset scans stop at [`PREFIX`].

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// First bytes of every peerset key.
pub use crate::state::PEERSET_PREFIX as PREFIX;

/// Version of [`PeerRecord`]'s encoding.
const RECORD_VERSION: u64 = 1;

/// What the pinset CRDT says of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Out of the peerset (`true`) or taken back in.
    pub removed: bool,
    /// The trusted peer that wrote it (for the logs).
    pub by: PeerId,
    /// When, on the writer's clock, RFC 3339 (for the logs).
    pub at: String,
    /// The peer's addresses when it was removed: a re-admission dials them,
    /// since a removed peer is forgotten from the peerstore.
    pub addrs: Vec<Multiaddr>,
}

/// Why a stored peerset record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PeerRecordError {
    /// Not the expected DAG-CBOR.
    #[error("peerset record is not valid DAG-CBOR: {0}")]
    Cbor(#[from] serde_ipld_dagcbor::DecodeError<std::convert::Infallible>),
    /// Written by a newer version.
    #[error("peerset record has format version {0}; this peer reads version {RECORD_VERSION}")]
    UnknownVersion(u64),
    /// A key that does not name a peer.
    #[error("peerset key does not hold a peer id")]
    Key,
    /// The writer's id does not parse.
    #[error("peerset record has an invalid peer id: {0}")]
    PeerId(#[from] libp2p::identity::ParseError),
    /// The store failed.
    #[error("reading the peerset record: {0}")]
    Store(pincluster_crdt::Error),
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u64,
    r: bool,
    #[serde(with = "serde_bytes")]
    b: Vec<u8>,
    t: String,
    a: Vec<String>,
}

#[derive(Deserialize)]
struct StoredVersion {
    v: u64,
}

impl PeerRecord {
    /// A record written now by `by`.
    pub fn new(removed: bool, by: PeerId, addrs: Vec<Multiaddr>) -> Self {
        Self {
            removed,
            by,
            at: chrono::Utc::now().to_rfc3339(),
            addrs,
        }
    }

    /// The stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = Stored {
            v: RECORD_VERSION,
            r: self.removed,
            b: self.by.to_bytes(),
            t: self.at.clone(),
            a: self.addrs.iter().map(Multiaddr::to_string).collect(),
        };
        // A struct of plain fields always encodes.
        serde_ipld_dagcbor::to_vec(&stored).unwrap_or_default()
    }

    /// Parses stored bytes. Addresses that do not parse are dropped: they
    /// only help a re-admission find the peer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PeerRecordError> {
        let StoredVersion { v } = serde_ipld_dagcbor::from_slice(bytes)?;
        if v != RECORD_VERSION {
            return Err(PeerRecordError::UnknownVersion(v));
        }
        let s: Stored = serde_ipld_dagcbor::from_slice(bytes)?;
        Ok(Self {
            removed: s.r,
            by: PeerId::from_bytes(&s.b)?,
            at: s.t,
            addrs: s.a.iter().filter_map(|a| a.parse().ok()).collect(),
        })
    }
}

/// The CRDT key of `peer`'s record.
pub fn key(peer: &PeerId) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&peer.to_bytes());
    k
}

/// The peer a peerset key names; `None` for a pin key.
pub fn peer_of_key(key: &[u8]) -> Option<Result<PeerId, PeerRecordError>> {
    let raw = key.strip_prefix(PREFIX)?;
    Some(PeerId::from_bytes(raw).map_err(|_| PeerRecordError::Key))
}

/// Every peer whose latest record says it is removed, read from the store
/// (what a starting peer blocks before it dials anyone). Unreadable records
/// are logged and skipped.
pub fn removed_peers(
    reader: &pincluster_crdt::Reader<pincluster_crdt::store::FjallStore>,
) -> Result<Vec<(PeerId, PeerRecord)>, pincluster_crdt::Error> {
    let mut out = Vec::new();
    for entry in reader.iter_from(PREFIX) {
        let (k, v) = entry?;
        let Some(peer) = peer_of_key(&k) else { break };
        match (peer, PeerRecord::from_bytes(&v)) {
            (Ok(peer), Ok(record)) if record.removed => out.push((peer, record)),
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "peerset record skipped"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_other_versions() {
        let by = PeerId::random();
        let record = PeerRecord::new(true, by, vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()]);
        assert_eq!(PeerRecord::from_bytes(&record.to_bytes()).unwrap(), record);

        #[derive(Serialize)]
        struct Future {
            v: u64,
        }
        let future = serde_ipld_dagcbor::to_vec(&Future { v: 2 }).unwrap();
        assert!(matches!(
            PeerRecord::from_bytes(&future),
            Err(PeerRecordError::UnknownVersion(2))
        ));
        assert!(PeerRecord::from_bytes(b"\xff\x00").is_err());
    }

    #[test]
    fn keys_sort_after_every_cid_and_name_their_peer() {
        let peer = PeerId::random();
        let k = key(&peer);
        assert_eq!(peer_of_key(&k).unwrap().unwrap(), peer);
        let v1 = pincluster_crdt::cid_of(b"x").to_bytes();
        assert!(peer_of_key(&v1).is_none());
        assert!(v1 < k);
        let v0 = cid::Cid::try_from("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG").unwrap();
        assert!(v0.to_bytes() < k);
        assert!(matches!(
            peer_of_key(b"\xffpeerset/junk"),
            Some(Err(PeerRecordError::Key))
        ));
    }
}
