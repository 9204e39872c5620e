//! Byte layout of the engine's keys and values in the [`Table`]s. The crate
//! documentation describes it for readers of a store; this module is the
//! one place that encodes and parses it.
//!
//! [`Table`]: crate::store::Table

use cid::Cid;

use crate::block::CID_LEN;
use crate::error::Error;

/// Sub-spaces of [`crate::store::Table::Sync`], one byte each.
pub(crate) const PENDING: u8 = b'p';
pub(crate) const WAITING: u8 = b'w';
pub(crate) const WANTED: u8 = b'x';
pub(crate) const READY: u8 = b'r';
pub(crate) const REJECTED: u8 = b'j';

/// Keys of [`crate::store::Table::Meta`].
pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_INSTALLING: &[u8] = b"installing";
/// Version of the on-disk layout described here.
pub(crate) const STORE_FORMAT: u64 = 1;

/// `tag ‖ cid`.
pub(crate) fn tagged(tag: u8, cid: &Cid) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + CID_LEN);
    k.push(tag);
    k.extend_from_slice(&cid.to_bytes());
    k
}

/// `WAITING ‖ parent ‖ child`: `child` is pending and needs `parent`.
pub(crate) fn waiting(parent: &Cid, child: &Cid) -> Vec<u8> {
    let mut k = tagged(WAITING, parent);
    k.extend_from_slice(&child.to_bytes());
    k
}

/// Escapes `key` so that `escape(a) ‖ suffix` sorts like `a` and no escaped
/// key is a prefix of another: 0x00 becomes 0x00 0xFF, and the key ends with
/// 0x00 0x00.
pub(crate) fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + CID_LEN);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// `escape(key) ‖ id`: the key of a live element.
pub(crate) fn element_key(key: &[u8], id: &Cid) -> Vec<u8> {
    let mut k = escape_key(key);
    k.extend_from_slice(&id.to_bytes());
    k
}

/// Splits an element key into the user key and the element id.
pub(crate) fn parse_element_key(raw: &[u8]) -> Result<(Vec<u8>, Cid), Error> {
    let corrupt = Error::Corrupt("element key");
    let split = raw
        .len()
        .checked_sub(CID_LEN)
        .ok_or(Error::Corrupt("element key"))?;
    let (escaped, id) = raw.split_at(split);
    let id = Cid::try_from(id).map_err(|_| Error::Corrupt("element id"))?;
    let body = escaped.strip_suffix(&[0, 0]).ok_or(corrupt)?;
    let mut key = Vec::with_capacity(body.len());
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        key.push(b);
        if b == 0 && bytes.next() != Some(&0xFF) {
            return Err(Error::Corrupt("element key escape"));
        }
    }
    Ok((key, id))
}

/// `priority ‖ value`: an element's entry.
pub(crate) fn element_value(priority: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&priority.to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// Parses `priority ‖ value`.
pub(crate) fn parse_element_value(raw: &[u8]) -> Result<(u64, &[u8]), Error> {
    let (p, v) = split_u64(raw).ok_or(Error::Corrupt("element value"))?;
    Ok((p, v))
}

/// The current value of a key: which element won, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Winner {
    pub(crate) priority: u64,
    pub(crate) value: Vec<u8>,
    pub(crate) id: Vec<u8>,
}

impl Winner {
    pub(crate) fn as_ref(&self) -> WinnerRef<'_> {
        WinnerRef {
            priority: self.priority,
            value: &self.value,
            id: &self.id,
        }
    }
}

/// A borrowed [`Winner`], so the merge path compares candidates without
/// copying values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WinnerRef<'a> {
    // Field order is the tie-break order: priority, then value bytes, then
    // (for a total order only; equal values are the same value) the id.
    pub(crate) priority: u64,
    pub(crate) value: &'a [u8],
    pub(crate) id: &'a [u8],
}

impl<'a> WinnerRef<'a> {
    /// `priority ‖ id ‖ value`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + CID_LEN + self.value.len());
        v.extend_from_slice(&self.priority.to_be_bytes());
        v.extend_from_slice(self.id);
        v.extend_from_slice(self.value);
        v
    }

    pub(crate) fn decode(raw: &'a [u8]) -> Result<Self, Error> {
        let (priority, rest) = split_u64(raw).ok_or(Error::Corrupt("value entry"))?;
        if rest.len() < CID_LEN {
            return Err(Error::Corrupt("value entry"));
        }
        let (id, value) = rest.split_at(CID_LEN);
        Ok(Self {
            priority,
            value,
            id,
        })
    }
}

/// The value part of a `priority ‖ id ‖ value` entry.
pub(crate) fn winner_value(raw: &[u8]) -> Result<&[u8], Error> {
    raw.get(8 + CID_LEN..).ok_or(Error::Corrupt("value entry"))
}

pub(crate) fn height_bytes(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

pub(crate) fn parse_height(raw: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = raw.try_into().map_err(|_| Error::Corrupt("height"))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn parse_cid(raw: &[u8]) -> Result<Cid, Error> {
    Cid::try_from(raw).map_err(|_| Error::Corrupt("cid"))
}

/// Concatenated CIDs (the parent list of a pending block).
pub(crate) fn encode_cids(cids: &[Cid]) -> Vec<u8> {
    let mut v = Vec::with_capacity(cids.len() * CID_LEN);
    for c in cids {
        v.extend_from_slice(&c.to_bytes());
    }
    v
}

pub(crate) fn decode_cids(raw: &[u8]) -> Result<Vec<Cid>, Error> {
    if !raw.len().is_multiple_of(CID_LEN) {
        return Err(Error::Corrupt("cid list"));
    }
    raw.chunks(CID_LEN).map(parse_cid).collect()
}

fn split_u64(raw: &[u8]) -> Option<(u64, &[u8])> {
    if raw.len() < 8 {
        return None;
    }
    let (p, rest) = raw.split_at(8);
    Some((u64::from_be_bytes(p.try_into().ok()?), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::cid_of;

    #[test]
    fn escaped_keys_sort_like_keys_and_never_prefix_each_other() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\xff", b"a", b"a\0", b"a\0b", b"ab", b"b",
        ];
        for w in keys.windows(2) {
            let (a, b) = (escape_key(w[0]), escape_key(w[1]));
            assert!(a < b, "{:?} < {:?}", w[0], w[1]);
            assert!(!b.starts_with(&a), "{:?} must not prefix {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn element_keys_round_trip() {
        let id = cid_of(b"x");
        for key in [&b""[..], b"\0", b"a\0\xff\0b", b"plain"] {
            let raw = element_key(key, &id);
            assert_eq!(parse_element_key(&raw).unwrap(), (key.to_vec(), id));
        }
        assert!(parse_element_key(b"short").is_err());
    }
}
