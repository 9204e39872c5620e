//! The REST JSON form of a stored pin, written straight from its stored
//! bytes.
//!
//! `GET /allocations` streams the whole pinset. Building a [`Pin`] for each
//! record only to print it again cost about 6 µs a pin, most of it
//! base58-encoding the same few allocation peer ids over and over and
//! formatting times through `chrono`'s format strings. This writer decodes a
//! record once, borrowing its bytes, prints each distinct peer id once per
//! writer, and formats times by hand. Its output is byte for byte what
//! `serde_json` prints for the decoded [`Pin`]; a property test holds it to
//! that, so the two cannot drift apart.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;
use serde_bytes::Bytes;

use super::{STATE_FORMAT_VERSION, StateDecodeError, StoredVersion};
use crate::types::{PinMode, PinType, PinTypeFilter, go_time};

/// [`super::StoredPin`] read without copying its strings and byte strings.
/// Same field names, same format version: a change there shows here as a
/// failing equality test.
#[derive(Deserialize)]
struct StoredPinView<'a> {
    v: u64,
    c: Cid,
    t: &'a str,
    #[serde(borrow)]
    a: Vec<&'a Bytes>,
    d: i32,
    r: Option<Cid>,
    i: Option<(i64, u32)>,
    rn: i32,
    rx: i32,
    n: &'a str,
    s: u64,
    e: Option<(i64, u32)>,
    /// `Cow`: the CBOR decoder hands map keys over as owned strings.
    #[serde(borrow)]
    m: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    pu: Option<Cid>,
    #[serde(borrow)]
    g: Vec<&'a Bytes>,
}

/// Distinct peer ids remembered by one writer. A cluster has few peers, so
/// the cache is nearly always hit; the bound keeps a pinset allocated over
/// very many peers from growing it without limit.
const PEER_CACHE_LIMIT: usize = 4096;

/// Writes stored pins as NDJSON lines; keep one per encoding thread.
#[derive(Debug, Default)]
pub struct PinJsonWriter {
    /// A peer id's bytes → its quoted base58 form.
    peers: HashMap<Vec<u8>, String, BuildHasherDefault<TailHasher>>,
}

/// Hashes the last eight bytes of what it is given. A peer id ends in a
/// public key or a digest, so those bytes are already well mixed; SipHash
/// over the whole id took a tenth of the time spent on a pin. The map is a
/// cache of a writer's own making, so collisions cost speed, never
/// correctness.
#[derive(Debug, Default)]
struct TailHasher(u64);

impl Hasher for TailHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut tail = [0u8; 8];
        let n = bytes.len().min(8);
        tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(tail);
    }
}

impl PinJsonWriter {
    /// Appends the JSON line (newline included) of the stored pin `bytes`
    /// to `out` if its type is `wanted`; tells whether it did. On an error
    /// `out` may hold part of the line: the caller drops the batch.
    pub fn write_line(
        &mut self,
        bytes: &[u8],
        wanted: PinTypeFilter,
        out: &mut Vec<u8>,
    ) -> Result<bool, StateDecodeError> {
        let pin: StoredPinView<'_> = match serde_ipld_dagcbor::from_slice(bytes) {
            Ok(pin) => pin,
            // A record of another version reads as such, not as a field it
            // lacks.
            Err(e) => {
                return Err(
                    match serde_ipld_dagcbor::from_slice::<StoredVersion>(bytes) {
                        Ok(StoredVersion { v }) if v != STATE_FORMAT_VERSION => {
                            StateDecodeError::UnknownVersion(v)
                        }
                        _ => StateDecodeError::Cbor(e),
                    },
                );
            }
        };
        if pin.v != STATE_FORMAT_VERSION {
            return Err(StateDecodeError::UnknownVersion(pin.v));
        }
        let pin_type =
            PinType::from_name(pin.t).ok_or_else(|| StateDecodeError::PinType(pin.t.to_owned()))?;
        if !wanted.matches(pin_type) {
            return Ok(false);
        }
        // The field order of `Pin`'s derived `Serialize`: the flattened
        // options first.
        out.extend_from_slice(b"{\"replication_factor_min\":");
        int(out, pin.rn);
        out.extend_from_slice(b",\"replication_factor_max\":");
        int(out, pin.rx);
        out.extend_from_slice(b",\"name\":");
        string(out, pin.n);
        out.extend_from_slice(b",\"mode\":\"");
        out.extend_from_slice(PinMode::from_max_depth(pin.d).as_str().as_bytes());
        out.extend_from_slice(b"\",\"shard_size\":");
        int(out, pin.s);
        // Never stored, so always Go's nil slice.
        out.extend_from_slice(b",\"user_allocations\":null,\"expire_at\":");
        time(out, pin.e)?;
        out.extend_from_slice(b",\"metadata\":");
        if pin.m.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            serde_json::to_writer(&mut *out, &pin.m).expect("a map of strings always encodes");
        }
        out.extend_from_slice(b",\"pin_update\":");
        optional_cid(out, pin.pu.as_ref());
        out.extend_from_slice(b",\"origins\":[");
        for (n, addr) in pin.g.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let addr = Multiaddr::try_from(addr.to_vec())?;
            string(out, &addr.to_string());
        }
        out.extend_from_slice(b"],\"cid\":\"");
        out.extend_from_slice(pin.c.to_string().as_bytes());
        out.extend_from_slice(b"\",\"type\":\"");
        out.extend_from_slice(pin_type.as_str().as_bytes());
        out.extend_from_slice(b"\",\"allocations\":[");
        for (n, peer) in pin.a.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.peer(peer)?.as_bytes());
        }
        out.extend_from_slice(b"],\"max_depth\":");
        int(out, pin.d);
        out.extend_from_slice(b",\"reference\":");
        optional_cid(out, pin.r.as_ref());
        out.extend_from_slice(b",\"timestamp\":");
        time(out, pin.i)?;
        out.extend_from_slice(b"}\n");
        Ok(true)
    }

    /// The quoted string form of the peer id stored as `bytes`, checked once.
    fn peer(&mut self, bytes: &[u8]) -> Result<&str, StateDecodeError> {
        if !self.peers.contains_key(bytes) {
            let quoted = format!("\"{}\"", PeerId::from_bytes(bytes)?);
            if self.peers.len() >= PEER_CACHE_LIMIT {
                self.peers.clear();
            }
            self.peers.insert(bytes.to_vec(), quoted);
        }
        Ok(&self.peers[bytes])
    }
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string with `serde_json`'s escaping.
fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("a string always encodes");
}

fn optional_cid(out: &mut Vec<u8>, cid: Option<&Cid>) {
    match cid {
        Some(cid) => string(out, &cid.to_string()),
        None => out.extend_from_slice(b"null"),
    }
}

/// A stored time as [`go_time`] prints it: RFC 3339 in UTC with
/// trailing zeros of the fraction dropped, Go's zero time when unset.
fn time(out: &mut Vec<u8>, t: Option<(i64, u32)>) -> Result<(), StateDecodeError> {
    use chrono::{Datelike, Timelike};

    let Some((secs, nanos)) = t else {
        out.push(b'"');
        out.extend_from_slice(go_time::ZERO.as_bytes());
        out.push(b'"');
        return Ok(());
    };
    let at = super::from_unix((secs, nanos))?;
    // Years of other than four digits and leap seconds are left to the
    // general formatter; neither occurs in a real pinset.
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        string(out, &go_time::format(&at));
        return Ok(());
    }
    let fields = [
        (at.year().unsigned_abs(), 4, b'-'),
        (at.month(), 2, b'-'),
        (at.day(), 2, b'T'),
        (at.hour(), 2, b':'),
        (at.minute(), 2, b':'),
    ];
    out.push(b'"');
    for (value, width, separator) in fields {
        padded(out, value, width);
        out.push(separator);
    }
    padded(out, at.second(), 2);
    if nanos != 0 {
        let mut fraction = nanos;
        let mut width = 9;
        while fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
        out.push(b'.');
        padded(out, fraction, width);
    }
    out.extend_from_slice(b"Z\"");
    Ok(())
}

/// `n` in decimal, zero-padded to `width` (at most 9) digits.
fn padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut buf = [b'0'; 9];
    let mut n = n;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::types::{Pin, PinOptions};

    /// Ed25519 peer ids, the kind a cluster has, plus one of another shape.
    fn peer_pool() -> Vec<PeerId> {
        let mut pool: Vec<PeerId> = (0..4)
            .map(|_| {
                libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
            })
            .collect();
        pool.push(PeerId::random());
        pool
    }

    fn any_cid() -> impl Strategy<Value = Cid> {
        (any::<[u8; 32]>(), 0..3u8).prop_map(|(digest, kind)| {
            let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
            match kind {
                0 => Cid::new_v0(hash).unwrap(),
                1 => Cid::new_v1(0x70, hash),
                _ => Cid::new_v1(0x55, hash),
            }
        })
    }

    /// Times across the range a pin may carry: Go's zero, whole seconds,
    /// fractions with and without trailing zeros, far past and future.
    fn any_time() -> impl Strategy<Value = Option<DateTime<FixedOffset>>> {
        let secs = prop_oneof![
            Just(-62_135_596_800i64),
            -62_135_596_800i64..253_402_300_799,
            1_600_000_000i64..1_900_000_000,
        ];
        let nanos = prop_oneof![Just(0u32), Just(500_000_000), 0u32..1_000_000_000];
        proptest::option::of((secs, nanos)).prop_map(|t| {
            t.map(|(s, n)| {
                DateTime::<Utc>::from_timestamp(s, n)
                    .unwrap()
                    .fixed_offset()
            })
        })
    }

    fn any_pin(pool: Vec<PeerId>) -> impl Strategy<Value = Pin> {
        let types = prop_oneof![
            Just(PinType::Pin),
            Just(PinType::MetaPin),
            Just(PinType::ClusterDagPin),
            Just(PinType::ShardPin),
            Just(PinType::BadType),
        ];
        let allocations = proptest::sample::subsequence(pool, 0..=4);
        let text = "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a-z]{0,8}";
        let metadata = proptest::collection::btree_map(text, text, 0..3);
        let origins = proptest::collection::vec(
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
                format!("/ip4/{}.{}.{}.{}/tcp/{port}", ip[0], ip[1], ip[2], ip[3])
                    .parse::<Multiaddr>()
                    .unwrap()
            }),
            0..2,
        );
        (
            (
                any_cid(),
                types,
                allocations,
                -1i32..3,
                proptest::option::of(any_cid()),
            ),
            (
                any::<i32>(),
                any::<i32>(),
                text,
                any::<u64>(),
                any_time(),
                any_time(),
            ),
            (metadata, proptest::option::of(any_cid()), origins),
        )
            .prop_map(
                |(
                    (cid, pin_type, allocations, max_depth, reference),
                    (rn, rx, name, shard_size, expire_at, timestamp),
                    (metadata, pin_update, origins),
                )| Pin {
                    options: PinOptions {
                        replication_factor_min: rn,
                        replication_factor_max: rx,
                        name,
                        mode: PinMode::from_max_depth(max_depth),
                        shard_size,
                        user_allocations: Vec::new(),
                        expire_at,
                        metadata,
                        pin_update,
                        origins,
                    },
                    cid,
                    pin_type,
                    allocations,
                    max_depth,
                    reference,
                    timestamp,
                },
            )
    }

    proptest! {
        /// The fast form is exactly what the decoded pin prints.
        #[test]
        fn equals_the_json_of_the_decoded_pin(pins in proptest::collection::vec(any_pin(peer_pool()), 1..8)) {
            let mut writer = PinJsonWriter::default();
            let mut fast = Vec::new();
            let mut slow = Vec::new();
            for pin in &pins {
                let stored = pin.to_state_bytes();
                prop_assert!(writer.write_line(&stored, PinTypeFilter::parse("").unwrap(), &mut fast).unwrap());
                serde_json::to_writer(&mut slow, &Pin::from_state_bytes(&stored).unwrap()).unwrap();
                slow.push(b'\n');
            }
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }

        /// Garbage is an error, never a panic.
        #[test]
        fn garbage_is_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            let _ = PinJsonWriter::default().write_line(&bytes, PinTypeFilter::parse("").unwrap(), &mut out);
        }
    }

    fn stored(t: &str, allocations: Vec<Vec<u8>>) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(&super::super::StoredPin {
            v: STATE_FORMAT_VERSION,
            c: "QmP63DkAFEnDYNjDYBpyNDfttu1fvUw99x1brscPzpqmmq"
                .parse()
                .unwrap(),
            t: t.into(),
            a: allocations
                .into_iter()
                .map(serde_bytes::ByteBuf::from)
                .collect(),
            d: -1,
            r: None,
            i: None,
            rn: -1,
            rx: -1,
            n: String::new(),
            s: 0,
            e: None,
            m: BTreeMap::new(),
            pu: None,
            g: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn other_types_are_skipped() {
        let mut out = Vec::new();
        let pins_only = PinTypeFilter::parse("pin").unwrap();
        let mut writer = PinJsonWriter::default();
        assert!(
            !writer
                .write_line(&stored("meta-pin", vec![]), pins_only, &mut out)
                .unwrap()
        );
        assert!(out.is_empty());
        assert!(
            writer
                .write_line(&stored("pin", vec![]), pins_only, &mut out)
                .unwrap()
        );
        assert!(out.ends_with(b"\n"));
    }

    #[test]
    fn records_of_another_version_say_so() {
        #[derive(serde::Serialize)]
        struct Future {
            v: u64,
            x: String,
        }
        let bytes = serde_ipld_dagcbor::to_vec(&Future {
            v: 9,
            x: "new".into(),
        })
        .unwrap();
        let err = PinJsonWriter::default()
            .write_line(&bytes, PinTypeFilter::parse("").unwrap(), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, StateDecodeError::UnknownVersion(9)), "{err}");
    }

    #[test]
    fn a_bad_peer_id_or_type_is_an_error() {
        let all = PinTypeFilter::parse("").unwrap();
        let mut writer = PinJsonWriter::default();
        let err = writer.write_line(&stored("pin", vec![vec![1, 2, 3]]), all, &mut Vec::new());
        assert!(matches!(err, Err(StateDecodeError::PeerId(_))), "{err:?}");
        let err = writer.write_line(&stored("pinned", vec![]), all, &mut Vec::new());
        assert!(matches!(err, Err(StateDecodeError::PinType(_))), "{err:?}");
    }
}
