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

mod record;
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

/// The fields of a stored pin the JSON is written from, read by
/// [`record::read`] or, for a record of another shape, by serde.
#[cfg_attr(test, derive(Debug))]
pub(super) struct Record<'a> {
    pub(super) v: u64,
    /// The CID, and its binary form when read straight from the record.
    pub(super) c: StoredCid<'a>,
    pub(super) t: &'a str,
    pub(super) a: Vec<&'a [u8]>,
    pub(super) d: i32,
    pub(super) r: Option<StoredCid<'a>>,
    pub(super) i: Option<(i64, u32)>,
    pub(super) rn: i32,
    pub(super) rx: i32,
    pub(super) n: &'a str,
    pub(super) s: u64,
    pub(super) e: Option<(i64, u32)>,
    pub(super) m: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    pub(super) pu: Option<StoredCid<'a>>,
    pub(super) g: Vec<&'a [u8]>,
}

type StoredCid<'a> = (Cid, Option<&'a [u8]>);

/// The stored pin in `bytes`: by hand when it has the version 1 shape,
/// else by serde, whose error says what is wrong with it.
pub(super) fn read_record(bytes: &[u8]) -> Result<Record<'_>, StateDecodeError> {
    match record::read(bytes) {
        Some(pin) => Ok(pin),
        None => Ok(Record::from(read_with_serde(bytes)?)),
    }
}

/// The serde reading of a record that [`record::read`] does not take: an
/// error says what is wrong with it.
fn read_with_serde(bytes: &[u8]) -> Result<StoredPinView<'_>, StateDecodeError> {
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| {
        // A record of another version reads as such, not as a field it
        // lacks.
        match serde_ipld_dagcbor::from_slice::<StoredVersion>(bytes) {
            Ok(StoredVersion { v }) if v != STATE_FORMAT_VERSION => {
                StateDecodeError::UnknownVersion(v)
            }
            _ => StateDecodeError::Cbor(e),
        }
    })
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
        let pin = read_record(bytes)?;
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
        optional_cid(out, pin.pu);
        out.extend_from_slice(b",\"origins\":[");
        for (n, addr) in pin.g.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let addr = Multiaddr::try_from(addr.to_vec())?;
            string(out, &addr.to_string());
        }
        out.extend_from_slice(b"],\"cid\":");
        quoted_cid(out, pin.c);
        out.extend_from_slice(b",\"type\":\"");
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
        optional_cid(out, pin.r);
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

fn optional_cid(out: &mut Vec<u8>, cid: Option<StoredCid<'_>>) {
    match cid {
        Some(cid) => quoted_cid(out, cid),
        None => out.extend_from_slice(b"null"),
    }
}

/// A CID's string form, quoted. A CIDv1 prints as `b` and the lowercase
/// base32 of its bytes: written here from the stored bytes when they are
/// exactly the CID's (`Cid`'s `Display` builds three strings for it).
fn quoted_cid(out: &mut Vec<u8>, (cid, raw): StoredCid<'_>) {
    out.push(b'"');
    match raw {
        Some(raw) if cid.version() == cid::Version::V1 && raw.len() == cid.encoded_len() => {
            out.push(b'b');
            base32_lower(out, raw);
        }
        _ => out.extend_from_slice(cid.to_string().as_bytes()),
    }
    out.push(b'"');
}

/// RFC 4648 base32, lowercase, unpadded: multibase's `b`.
fn base32_lower(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    // Five bytes are eight letters, written at once.
    let mut groups = bytes.chunks_exact(5);
    for group in groups.by_ref() {
        let mut word = [0u8; 8];
        word[3..].copy_from_slice(group);
        let bits = u64::from_be_bytes(word);
        let mut letters = [0u8; 8];
        for (n, letter) in letters.iter_mut().enumerate() {
            *letter = ALPHABET[((bits >> (35 - 5 * n)) & 31) as usize];
        }
        out.extend_from_slice(&letters);
    }
    let mut bits = 0u64;
    let mut held = 0u32;
    for &b in groups.remainder() {
        bits = (bits << 8) | u64::from(b);
        held += 8;
        while held >= 5 {
            held -= 5;
            out.push(ALPHABET[((bits >> held) & 31) as usize]);
        }
    }
    if held > 0 {
        out.push(ALPHABET[((bits << (5 - held)) & 31) as usize]);
    }
}

/// A stored time as [`go_time`] prints it: RFC 3339 in UTC with
/// trailing zeros of the fraction dropped, Go's zero time when unset.
fn time(out: &mut Vec<u8>, t: Option<(i64, u32)>) -> Result<(), StateDecodeError> {
    let Some((secs, nanos)) = t else {
        out.push(b'"');
        out.extend_from_slice(go_time::ZERO.as_bytes());
        out.push(b'"');
        return Ok(());
    };
    // Years of other than four digits and leap seconds are left to the
    // general formatter; neither occurs in a real pinset.
    if !(YEAR_0..YEAR_10000).contains(&secs) || nanos >= 1_000_000_000 {
        let at = super::from_unix((secs, nanos))?;
        string(out, &go_time::format(&at));
        return Ok(());
    }
    // The calendar by hand (chrono's conversions were a twentieth of a
    // listing's time): days since 0000-03-01, in 400-year eras of 146,097
    // days, each year counted from March so that February's leap day
    // comes last.
    let days = secs.div_euclid(86_400) + 719_468;
    let of_day = secs.rem_euclid(86_400) as u32;
    let era = days.div_euclid(146_097);
    let of_era = days.rem_euclid(146_097) as u32;
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * of_year + 2) / 153;
    let day = of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + i64::from(year_of_era) + i64::from(month <= 2);
    let fields = [
        (year as u32, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (of_day / 3600, 2, b':'),
        (of_day / 60 % 60, 2, b':'),
    ];
    out.push(b'"');
    for (value, width, separator) in fields {
        padded(out, value, width);
        out.push(separator);
    }
    padded(out, of_day % 60, 2);
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

/// Unix seconds of 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z: the
/// times whose year prints in four digits.
const YEAR_0: i64 = -62_167_219_200;
const YEAR_10000: i64 = 253_402_300_800;

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
            Just(YEAR_0),
            Just(YEAR_10000 - 1),
            // 2024-02-29 and 2100-03-01 (not a leap year), and around them.
            1_709_164_800i64 - 86_400..1_709_164_800 + 2 * 86_400,
            4_107_542_400i64 - 2 * 86_400..4_107_542_400 + 86_400,
            YEAR_0 - 86_400..YEAR_10000 + 86_400,
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
                // Every record this peer writes takes the hand reader, and
                // it reads what serde reads.
                prop_assert!(record::read(&stored).is_some());
                prop_assert!(same_as_serde(&stored));
                prop_assert!(writer.write_line(&stored, PinTypeFilter::parse("").unwrap(), &mut fast).unwrap());
                serde_json::to_writer(&mut slow, &Pin::from_state_bytes(&stored).unwrap()).unwrap();
                slow.push(b'\n');
            }
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }

        /// A damaged record reads as serde reads it: the same line when
        /// it still decodes, an error when it does not, never a panic.
        #[test]
        fn a_damaged_record_reads_as_serde_reads_it(
            pin in any_pin(peer_pool()),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut stored = pin.to_state_bytes();
            let at = at.index(stored.len());
            if cut {
                stored.truncate(at);
            } else {
                stored[at] = byte;
            }
            prop_assert!(same_as_serde(&stored), "the hand reader disagrees with serde");
            let mut fast = Vec::new();
            let written = PinJsonWriter::default()
                .write_line(&stored, PinTypeFilter::parse("").unwrap(), &mut fast);
            match Pin::from_state_bytes(&stored) {
                Ok(back) => {
                    let mut slow = serde_json::to_vec(&back).unwrap();
                    slow.push(b'\n');
                    prop_assert!(written.unwrap());
                    prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
                }
                Err(_) => prop_assert!(written.is_err()),
            }
        }

        /// Garbage is an error, never a panic.
        #[test]
        fn garbage_is_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            let _ = PinJsonWriter::default().write_line(&bytes, PinTypeFilter::parse("").unwrap(), &mut out);
        }
    }

    /// Whether serde reads `bytes` as the hand reader does, when the hand
    /// reader takes them at all.
    fn same_as_serde(bytes: &[u8]) -> bool {
        let Some(fast) = record::read(bytes) else {
            return true;
        };
        let Ok(slow) = read_with_serde(bytes) else {
            return false;
        };
        // Only the hand reader keeps a CID's stored bytes.
        let comparable = |mut r: Record<'_>| {
            r.c.1 = None;
            for cid in [&mut r.r, &mut r.pu].into_iter().flatten() {
                cid.1 = None;
            }
            format!("{r:?}")
        };
        comparable(fast) == comparable(Record::from(slow))
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

    /// serde refuses a record that is not strict DAG-CBOR, and so must the
    /// hand reader: a record damaged on disk is an error, never a line
    /// serde could not have printed.
    #[test]
    fn what_is_not_strict_dag_cbor_is_an_error() {
        let record = stored("pin", vec![]);
        // The empty metadata map, after its key "m".
        let empty_metadata: &[u8] = &[0x61, b'm', 0xa0];
        let at = record
            .windows(empty_metadata.len())
            .position(|w| w == empty_metadata)
            .unwrap();
        let with_metadata = |map: &[u8]| {
            let mut bytes = record[..at + 2].to_vec();
            bytes.extend_from_slice(map);
            bytes.extend_from_slice(&record[at + empty_metadata.len()..]);
            bytes
        };
        let in_order = with_metadata(&[0xa2, 0x61, b'a', 0x60, 0x61, b'b', 0x60]);
        assert!(record::read(&in_order).is_some());
        for (what, map) in [
            (
                "keys out of order",
                &[0xa2, 0x61, b'b', 0x60, 0x61, b'a', 0x60][..],
            ),
            ("a key twice", &[0xa2, 0x61, b'a', 0x60, 0x61, b'a', 0x60]),
            ("a length not in its shortest form", &[0xb8, 0x00]),
        ] {
            let bytes = with_metadata(map);
            assert!(read_with_serde(&bytes).is_err(), "serde takes {what}");
            assert!(
                record::read(&bytes).is_none(),
                "the hand reader takes {what}"
            );
            let written = PinJsonWriter::default().write_line(
                &bytes,
                PinTypeFilter::parse("").unwrap(),
                &mut Vec::new(),
            );
            assert!(
                matches!(written, Err(StateDecodeError::Cbor(_))),
                "{what}: {written:?}"
            );
        }
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
