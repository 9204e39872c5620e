//! The Bitswap wire message (`message.proto` of the Bitswap spec), encoded
//! and decoded by hand: the message is five fields deep and a protobuf
//! crate would bring a build step or a dependency for it.
//!
//! ```text
//! Message { Wantlist wantlist = 1; repeated bytes blocks = 2 (1.0.0);
//!           repeated Block payload = 3 (1.1.0+); repeated BlockPresence blockPresences = 4 (1.2.0);
//!           int32 pendingBytes = 5 }
//! Wantlist { repeated Entry entries = 1; bool full = 2 }
//! Entry { bytes block = 1 (CID); int32 priority = 2; bool cancel = 3;
//!         WantType wantType = 4 (Block 0, Have 1); bool sendDontHave = 5 }
//! Block { bytes prefix = 1 (CID version, codec, hash code, hash length); bytes data = 2 }
//! BlockPresence { bytes cid = 1; BlockPresenceType type = 2 (Have 0, DontHave 1) }
//! ```
//!
//! Decoding never trusts a length: every length is checked against what is
//! left of the buffer, and block data is sliced out of the received
//! [`Bytes`] without a copy.

use bytes::Bytes;
use cid::Cid;

/// Which version of the protocol a stream speaks: it decides where blocks
/// go in a message (1.0.0 sends bare data, later versions a CID prefix)
/// and whether presences may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `/ipfs/bitswap/1.0.0`
    V100,
    /// `/ipfs/bitswap/1.1.0`
    V110,
    /// `/ipfs/bitswap/1.2.0`
    V120,
}

impl Version {
    /// The protocol names, newest first (the order they are offered in).
    pub const PROTOCOLS: [&'static str; 3] = [
        "/ipfs/bitswap/1.2.0",
        "/ipfs/bitswap/1.1.0",
        "/ipfs/bitswap/1.0.0",
    ];

    /// The version of a negotiated protocol name.
    pub fn from_protocol(name: &str) -> Option<Version> {
        match name {
            "/ipfs/bitswap/1.2.0" => Some(Version::V120),
            "/ipfs/bitswap/1.1.0" => Some(Version::V110),
            "/ipfs/bitswap/1.0.0" | "/ipfs/bitswap" => Some(Version::V100),
            _ => None,
        }
    }
}

/// What a want asks for: the block, or only whether the peer has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantType {
    /// Send the block.
    Block,
    /// Say whether you have the block (1.2.0).
    Have,
}

/// One wantlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantEntry {
    /// The block wanted (or cancelled).
    pub cid: Cid,
    /// Higher is served first.
    pub priority: i32,
    /// Removes the CID from the sender's wantlist.
    pub cancel: bool,
    /// Block or presence.
    pub want_type: WantType,
    /// Answer DONT_HAVE when the block is missing (1.2.0).
    pub send_dont_have: bool,
}

/// A presence answer (1.2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The peer has the block.
    Have,
    /// The peer does not have the block.
    DontHave,
}

/// A block as it arrived: the CID prefix it came with (`None` for the bare
/// blocks of 1.0.0, which are CIDv0) and its bytes. Its CID is computed
/// from the bytes, never taken on trust ([`super::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBlock {
    /// Version, codec, hash code and hash length, as varints.
    pub prefix: Option<Bytes>,
    /// The block's bytes.
    pub data: Bytes,
}

/// A decoded or to-be-encoded Bitswap message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Want and cancel entries.
    pub wantlist: Vec<WantEntry>,
    /// The wantlist replaces the one the receiver holds for the sender.
    pub full: bool,
    /// Blocks sent.
    pub blocks: Vec<WireBlock>,
    /// Presence answers.
    pub presences: Vec<(Cid, Presence)>,
    /// Bytes the sender still has queued for the receiver.
    pub pending_bytes: i32,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a field.
    #[error("truncated protobuf field")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("varint too long")]
    VarintOverflow,
    /// A wire type protobuf does not have (or a deprecated group).
    #[error("unsupported protobuf wire type {0}")]
    WireType(u8),
    /// A field has the wrong wire type.
    #[error("field {field} of {message} has the wrong wire type")]
    FieldType { message: &'static str, field: u64 },
    /// A CID in a wantlist entry or presence does not parse.
    #[error("bad CID in {0}: {1}")]
    Cid(&'static str, String),
    /// More wantlist entries, blocks or presences than one message may carry.
    #[error("too many {what} in one message (limit {limit})")]
    TooMany { what: &'static str, limit: usize },
}

/// Most entries, blocks or presences decoded from one message: a flood is
/// refused whole instead of growing memory entry by entry.
pub const MAX_ITEMS: usize = 16 * 1024;

// ---------------------------------------------------------------- encoding

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The encoded length of `v` as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u8) {
    put_varint(out, (field << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        put_key(out, field, 0);
        put_varint(out, v);
    }
}

/// int32 on the wire: negative values are sign-extended to ten bytes.
fn put_int32(out: &mut Vec<u8>, field: u64, v: i32) {
    put_uint(out, field, i64::from(v) as u64);
}

/// The CID prefix (version, codec, multihash code, digest length).
pub fn prefix_of(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    put_varint(&mut out, u64::from(cid.version()));
    put_varint(&mut out, cid.codec());
    put_varint(&mut out, cid.hash().code());
    put_varint(&mut out, u64::from(cid.hash().size()));
    out
}

impl Message {
    /// The protobuf bytes of this message as `version` expects it: 1.0.0
    /// gets bare block data and no presences, later versions get
    /// prefixed blocks. Blocks to send are given with their CIDs in
    /// `blocks_out` (the message's own `blocks` is for received ones).
    pub fn encode(&self, version: Version, blocks_out: &[(Cid, Bytes)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + blocks_out.iter().map(|(_, d)| d.len() + 64).sum::<usize>()
                + self.wantlist.len() * 48
                + self.presences.len() * 48,
        );
        if !self.wantlist.is_empty() || self.full {
            let mut wl = Vec::with_capacity(self.wantlist.len() * 48);
            for e in &self.wantlist {
                let mut entry = Vec::with_capacity(48);
                put_bytes(&mut entry, 1, &e.cid.to_bytes());
                put_int32(&mut entry, 2, e.priority);
                put_uint(&mut entry, 3, u64::from(e.cancel));
                if version >= Version::V120 {
                    put_uint(
                        &mut entry,
                        4,
                        match e.want_type {
                            WantType::Block => 0,
                            WantType::Have => 1,
                        },
                    );
                    put_uint(&mut entry, 5, u64::from(e.send_dont_have));
                }
                put_bytes(&mut wl, 1, &entry);
            }
            put_uint(&mut wl, 2, u64::from(self.full));
            put_bytes(&mut out, 1, &wl);
        }
        for (cid, data) in blocks_out {
            if version == Version::V100 {
                put_bytes(&mut out, 2, data);
            } else {
                let prefix = prefix_of(cid);
                put_key(&mut out, 3, 2);
                let inner = 1
                    + varint_len(prefix.len() as u64)
                    + prefix.len()
                    + 1
                    + varint_len(data.len() as u64)
                    + data.len();
                put_varint(&mut out, inner as u64);
                put_bytes(&mut out, 1, &prefix);
                put_bytes(&mut out, 2, data);
            }
        }
        if version >= Version::V120 {
            for (cid, presence) in &self.presences {
                let mut p = Vec::with_capacity(48);
                put_bytes(&mut p, 1, &cid.to_bytes());
                put_uint(
                    &mut p,
                    2,
                    match presence {
                        Presence::Have => 0,
                        Presence::DontHave => 1,
                    },
                );
                put_bytes(&mut out, 4, &p);
            }
        }
        put_int32(&mut out, 5, self.pending_bytes);
        out
    }

    /// Decodes a message. Unknown fields are skipped, as protobuf wants.
    pub fn decode(buf: Bytes) -> Result<Message, DecodeError> {
        let mut msg = Message::default();
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => decode_wantlist(b, &mut msg)?,
                (2, Value::Bytes(data)) => {
                    check_room(msg.blocks.len(), "blocks")?;
                    msg.blocks.push(WireBlock { prefix: None, data });
                }
                (3, Value::Bytes(b)) => {
                    check_room(msg.blocks.len(), "blocks")?;
                    msg.blocks.push(decode_block(b)?);
                }
                (4, Value::Bytes(b)) => {
                    check_room(msg.presences.len(), "block presences")?;
                    msg.presences.push(decode_presence(b)?);
                }
                (5, Value::Varint(v)) => msg.pending_bytes = v as i32,
                (1..=5, _) => {
                    return Err(DecodeError::FieldType {
                        message: "Message",
                        field,
                    });
                }
                _ => {}
            }
        }
        Ok(msg)
    }
}

fn check_room(len: usize, what: &'static str) -> Result<(), DecodeError> {
    if len >= MAX_ITEMS {
        return Err(DecodeError::TooMany {
            what,
            limit: MAX_ITEMS,
        });
    }
    Ok(())
}

fn decode_wantlist(buf: Bytes, msg: &mut Message) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                check_room(msg.wantlist.len(), "wantlist entries")?;
                msg.wantlist.push(decode_entry(b)?);
            }
            (2, Value::Varint(v)) => msg.full = v != 0,
            (1 | 2, _) => {
                return Err(DecodeError::FieldType {
                    message: "Wantlist",
                    field,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn decode_entry(buf: Bytes) -> Result<WantEntry, DecodeError> {
    let mut r = Reader::new(buf);
    let mut cid = None;
    let mut entry = WantEntry {
        cid: Cid::default(),
        priority: 1,
        cancel: false,
        want_type: WantType::Block,
        send_dont_have: false,
    };
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                cid = Some(
                    Cid::try_from(&b[..])
                        .map_err(|e| DecodeError::Cid("a wantlist entry", e.to_string()))?,
                )
            }
            (2, Value::Varint(v)) => entry.priority = v as i32,
            (3, Value::Varint(v)) => entry.cancel = v != 0,
            (4, Value::Varint(v)) => {
                entry.want_type = if v == 1 {
                    WantType::Have
                } else {
                    WantType::Block
                }
            }
            (5, Value::Varint(v)) => entry.send_dont_have = v != 0,
            (1..=5, _) => {
                return Err(DecodeError::FieldType {
                    message: "Entry",
                    field,
                });
            }
            _ => {}
        }
    }
    entry.cid = cid.ok_or_else(|| DecodeError::Cid("a wantlist entry", "missing".into()))?;
    Ok(entry)
}

fn decode_block(buf: Bytes) -> Result<WireBlock, DecodeError> {
    let mut r = Reader::new(buf);
    let mut block = WireBlock {
        prefix: Some(Bytes::new()),
        data: Bytes::new(),
    };
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => block.prefix = Some(b),
            (2, Value::Bytes(b)) => block.data = b,
            (1 | 2, _) => {
                return Err(DecodeError::FieldType {
                    message: "Block",
                    field,
                });
            }
            _ => {}
        }
    }
    Ok(block)
}

fn decode_presence(buf: Bytes) -> Result<(Cid, Presence), DecodeError> {
    let mut r = Reader::new(buf);
    let mut cid = None;
    let mut presence = Presence::Have;
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                cid = Some(
                    Cid::try_from(&b[..])
                        .map_err(|e| DecodeError::Cid("a block presence", e.to_string()))?,
                )
            }
            (2, Value::Varint(v)) => {
                presence = if v == 1 {
                    Presence::DontHave
                } else {
                    Presence::Have
                }
            }
            (1 | 2, _) => {
                return Err(DecodeError::FieldType {
                    message: "BlockPresence",
                    field,
                });
            }
            _ => {}
        }
    }
    let cid = cid.ok_or_else(|| DecodeError::Cid("a block presence", "missing".into()))?;
    Ok((cid, presence))
}

// ---------------------------------------------------------------- decoding

enum Value {
    Varint(u64),
    Bytes(Bytes),
    Fixed,
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, used) = read_varint(&self.buf[self.pos..])?;
        self.pos += used;
        Ok(v)
    }

    fn take(&mut self, n: u64) -> Result<Bytes, DecodeError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(self.buf.slice(start..self.pos))
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let value = match (key & 7) as u8 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return Err(DecodeError::WireType(other)),
        };
        Ok(Some((field, value)))
    }
}

/// Reads an unsigned varint at the start of `buf`: the value and the bytes
/// it took.
pub fn read_varint(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().enumerate() {
        if i >= 10 {
            return Err(DecodeError::VarintOverflow);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(DecodeError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::bitswap::verify::cid_v1;

    fn raw(data: &[u8]) -> Cid {
        cid_v1(0x55, data)
    }

    #[test]
    fn a_message_survives_the_round_trip_at_1_2_0() {
        let a = raw(b"a");
        let b = raw(b"b");
        let msg = Message {
            wantlist: vec![
                WantEntry {
                    cid: a,
                    priority: -5,
                    cancel: false,
                    want_type: WantType::Have,
                    send_dont_have: true,
                },
                WantEntry {
                    cid: b,
                    priority: 7,
                    cancel: true,
                    want_type: WantType::Block,
                    send_dont_have: false,
                },
            ],
            full: true,
            blocks: vec![],
            presences: vec![(a, Presence::DontHave), (b, Presence::Have)],
            pending_bytes: 1234,
        };
        let bytes = msg.encode(Version::V120, &[(b, Bytes::from_static(b"b"))]);
        let back = Message::decode(Bytes::from(bytes)).unwrap();
        assert_eq!(back.wantlist, msg.wantlist);
        assert!(back.full);
        assert_eq!(back.presences, msg.presences);
        assert_eq!(back.pending_bytes, 1234);
        assert_eq!(back.blocks.len(), 1);
        assert_eq!(&back.blocks[0].data[..], b"b");
        assert_eq!(back.blocks[0].prefix.as_deref(), Some(&prefix_of(&b)[..]));
    }

    #[test]
    fn version_1_0_0_gets_bare_blocks_and_no_presences() {
        let a = raw(b"a");
        let msg = Message {
            presences: vec![(a, Presence::Have)],
            ..Message::default()
        };
        let back = Message::decode(Bytes::from(
            msg.encode(Version::V100, &[(a, Bytes::from_static(b"x"))]),
        ))
        .unwrap();
        assert!(back.presences.is_empty());
        assert_eq!(back.blocks[0].prefix, None);
        assert_eq!(&back.blocks[0].data[..], b"x");
    }

    #[test]
    fn garbage_is_a_typed_error_never_a_panic() {
        for bad in [
            &[0x0a, 0x05, 0x01][..], // length past the end
            &[0x0b][..],             // group start (wire type 3)
            &[
                0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            &[0x0a, 0x03, 0x0a, 0x01, 0x00][..], // entry with a non-CID
            &[0x08, 0x01][..],                   // wantlist as a varint
        ] {
            assert!(
                Message::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_flood_of_entries_is_refused_whole() {
        let a = raw(b"a");
        let entry = WantEntry {
            cid: a,
            priority: 1,
            cancel: false,
            want_type: WantType::Block,
            send_dont_have: false,
        };
        let msg = Message {
            wantlist: vec![entry; MAX_ITEMS + 1],
            ..Message::default()
        };
        let err = Message::decode(Bytes::from(msg.encode(Version::V120, &[]))).unwrap_err();
        assert!(matches!(err, DecodeError::TooMany { .. }), "{err}");
    }

    #[test]
    fn varints_match_their_length() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(read_varint(&out).unwrap(), (v, out.len()));
        }
    }
}
