//! The stored pin record (format 1) read by hand, for the listing's hot
//! path.
//!
//! serde's reader of [`super::StoredPinView`] was a quarter of the CPU time
//! of a `GET /allocations` (BENCHMARKS.md, "Listing at scale"): a generic
//! map visitor, field names matched as strings through serde's machinery,
//! every text checked twice. The record has one fixed shape, so this reader
//! walks its DAG-CBOR directly. It accepts only that shape (the fifteen
//! fields once each, of their types); anything else, garbage included, is
//! `None`, and the caller reads the bytes with serde instead, so what is
//! printed and every error stay serde's. It is as strict as serde's reader
//! of DAG-CBOR: every head in its shortest form, map keys in DAG-CBOR
//! order (length first, then bytes) and none twice. A record damaged on
//! disk must not print here where serde would refuse it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use cid::Cid;

use super::{Record, StoredPinView};

/// The record in `bytes`, if it has exactly the version 1 shape.
pub(super) fn read(bytes: &[u8]) -> Option<Record<'_>> {
    let mut r = Reader { bytes, at: 0 };
    let (mut v, mut c, mut t, mut a, mut d) = (None, None, None, None, None);
    let (mut rf, mut i, mut rn, mut rx, mut n) = (None, None, None, None, None);
    let (mut s, mut e, mut m, mut pu, mut g) = (None, None, None, None, None);
    let mut keys = KeyOrder::default();
    for _ in 0..r.head(MAP)? {
        // Keys as bytes: which of the fifteen it is says it is valid text.
        // In order, so none is read twice.
        match keys.next(r.text_bytes()?)? {
            b"v" => v = Some(r.uint()?),
            b"c" => c = Some(r.cid()?),
            b"t" => t = Some(r.text()?),
            b"a" => a = Some(r.byte_strings()?),
            b"d" => d = Some(r.i32()?),
            b"r" => rf = Some(r.optional(Reader::cid)?),
            b"i" => i = Some(r.optional(Reader::time)?),
            b"rn" => rn = Some(r.i32()?),
            b"rx" => rx = Some(r.i32()?),
            b"n" => n = Some(r.text()?),
            b"s" => s = Some(r.uint()?),
            b"e" => e = Some(r.optional(Reader::time)?),
            b"m" => m = Some(r.texts()?),
            b"pu" => pu = Some(r.optional(Reader::cid)?),
            b"g" => g = Some(r.byte_strings()?),
            _ => return None,
        }
    }
    if r.at != bytes.len() {
        return None;
    }
    Some(Record {
        v: v?,
        c: c?,
        t: t?,
        a: a?,
        d: d?,
        r: rf?,
        i: i?,
        rn: rn?,
        rx: rx?,
        n: n?,
        s: s?,
        e: e?,
        m: m?,
        pu: pu?,
        g: g?,
    })
}

/// The keys of one map, which DAG-CBOR orders by length, then bytewise,
/// each once.
#[derive(Default)]
struct KeyOrder<'a> {
    last: Option<&'a [u8]>,
}

impl<'a> KeyOrder<'a> {
    /// `key`, if it comes after the key before it.
    fn next(&mut self, key: &'a [u8]) -> Option<&'a [u8]> {
        let after = |last: &[u8]| (last.len(), last) < (key.len(), key);
        if !self.last.is_none_or(after) {
            return None;
        }
        self.last = Some(key);
        Some(key)
    }
}

impl<'a> From<StoredPinView<'a>> for Record<'a> {
    fn from(p: StoredPinView<'a>) -> Self {
        Record {
            v: p.v,
            c: (p.c, None),
            t: p.t,
            a: p.a.into_iter().map(|b| &b[..]).collect(),
            d: p.d,
            r: p.r.map(|c| (c, None)),
            i: p.i,
            rn: p.rn,
            rx: p.rx,
            n: p.n,
            s: p.s,
            e: p.e,
            m: p.m,
            pu: p.pu.map(|c| (c, None)),
            g: p.g.into_iter().map(|b| &b[..]).collect(),
        }
    }
}

const UINT: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const NULL: u8 = 0xf6;
/// DAG-CBOR's tag of a CID.
const CID_TAG: u64 = 42;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The argument of the next item, which must be of major type `major`
    /// (definite lengths only, as DAG-CBOR requires).
    fn head(&mut self, major: u8) -> Option<u64> {
        let first = *self.bytes.get(self.at)?;
        if first >> 5 != major {
            return None;
        }
        self.at += 1;
        let width = match first & 0x1f {
            n @ 0..=23 => return Some(u64::from(n)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return None,
        };
        let raw = self.take(width)?;
        let arg = raw.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
        // The shortest form: a wider head than the argument needs is not
        // DAG-CBOR.
        let shortest = match width {
            1 => 24,
            2 => 1 << 8,
            4 => 1 << 16,
            _ => 1 << 32,
        };
        (arg >= shortest).then_some(arg)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn len(&mut self, major: u8) -> Option<usize> {
        usize::try_from(self.head(major)?).ok()
    }

    fn uint(&mut self) -> Option<u64> {
        self.head(UINT)
    }

    fn int(&mut self) -> Option<i64> {
        match self.bytes.get(self.at)? >> 5 {
            UINT => i64::try_from(self.head(UINT)?).ok(),
            _ => i64::try_from(self.head(NEGATIVE)?).ok().map(|n| -1 - n),
        }
    }

    fn i32(&mut self) -> Option<i32> {
        i32::try_from(self.int()?).ok()
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.text_bytes()?).ok()
    }

    fn text_bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len(TEXT)?;
        self.take(n)
    }

    fn byte_string(&mut self) -> Option<&'a [u8]> {
        let n = self.len(BYTES)?;
        self.take(n)
    }

    fn byte_strings(&mut self) -> Option<Vec<&'a [u8]>> {
        let n = self.len(ARRAY)?;
        // Bounded by the record's size: each item takes a byte at least.
        let mut out = Vec::with_capacity(n.min(self.bytes.len() - self.at));
        for _ in 0..n {
            out.push(self.byte_string()?);
        }
        Some(out)
    }

    /// A map of texts, its keys in DAG-CBOR order; kept in the order JSON
    /// prints it (a `BTreeMap`'s).
    fn texts(&mut self) -> Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>> {
        let n = self.len(MAP)?;
        let mut out = BTreeMap::new();
        let mut keys = KeyOrder::default();
        for _ in 0..n {
            let key = std::str::from_utf8(keys.next(self.text_bytes()?)?).ok()?;
            out.insert(Cow::Borrowed(key), Cow::Borrowed(self.text()?));
        }
        Some(out)
    }

    /// A CID and its binary form as stored (tag 42 over the identity
    /// multibase prefix and the CID's bytes).
    fn cid(&mut self) -> Option<(Cid, Option<&'a [u8]>)> {
        if self.head(TAG)? != CID_TAG {
            return None;
        }
        let raw = self.byte_string()?.strip_prefix(&[0])?;
        let cid = Cid::try_from(raw).ok()?;
        Some((cid, Some(raw)))
    }

    /// Unix seconds and nanoseconds.
    fn time(&mut self) -> Option<(i64, u32)> {
        if self.head(ARRAY)? != 2 {
            return None;
        }
        let secs = self.int()?;
        let nanos = u32::try_from(self.uint()?).ok()?;
        Some((secs, nanos))
    }

    /// `null`, or what `read` reads.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.bytes.get(self.at) == Some(&NULL) {
            self.at += 1;
            return Some(None);
        }
        read(self).map(Some)
    }
}
