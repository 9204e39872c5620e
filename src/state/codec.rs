//! The stored codec: a pin as a versioned DAG-CBOR record in the CRDT state,
//! and ([`PinJsonWriter`]) its REST JSON written straight from those bytes.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use cid::Cid;
use libp2p::multiaddr;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::types::{Pin, PinMode, PinOptions, PinType};

mod stored_json;
pub use stored_json::PinJsonWriter;
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
    /// from `max_depth`; `user_allocations` come back empty. Read as the
    /// listing reads it ([`stored_json::read_record`]): by hand, serde only
    /// for a record of another shape.
    pub fn from_state_bytes(bytes: &[u8]) -> Result<Pin, StateDecodeError> {
        let s = stored_json::read_record(bytes)?;
        if s.v != STATE_FORMAT_VERSION {
            return Err(StateDecodeError::UnknownVersion(s.v));
        }
        let pin_type =
            PinType::from_name(s.t).ok_or_else(|| StateDecodeError::PinType(s.t.to_owned()))?;
        Ok(Pin {
            options: PinOptions {
                replication_factor_min: s.rn,
                replication_factor_max: s.rx,
                name: s.n.to_owned(),
                mode: PinMode::from_max_depth(s.d),
                shard_size: s.s,
                user_allocations: Vec::new(),
                expire_at: s.e.map(from_unix).transpose()?,
                metadata: s
                    .m
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                pin_update: s.pu.map(|(cid, _)| cid),
                origins: s
                    .g
                    .into_iter()
                    .map(|b| Multiaddr::try_from(b.to_vec()))
                    .collect::<Result<_, _>>()?,
            },
            cid: s.c.0,
            pin_type,
            allocations: s
                .a
                .iter()
                .map(|b| PeerId::from_bytes(b))
                .collect::<Result<_, _>>()?,
            max_depth: s.d,
            reference: s.r.map(|(cid, _)| cid),
            timestamp: s.i.map(from_unix).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tests::{CID_V1, CID1, PEER_A, PEER_B, cid, peer, spec_pin, time};
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
