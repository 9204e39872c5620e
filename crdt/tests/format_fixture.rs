//! The version-1 block format, pinned by a fixture: a block written by this
//! crate's first release must keep decoding, and the same delta must keep
//! encoding to the same bytes (and so the same CID). If this test fails the
//! wire format changed: bump `FORMAT_VERSION` and keep reading version 1.

mod common;

use common::{Author, Trust};
use pincluster_crdt::{Block, Cid, Delete, FORMAT_VERSION, Limits, Put, cid_of};

const FIXTURE: &[u8] = include_bytes!("fixtures/block-v1.cbor");
const FIXTURE_CID: &str = "bafyreiet3eclcl2ihgtxtap6h5mu2hqgv5vlkjnobtzjppoxhlj6jey27q";

/// The delta the fixture holds: two parents, a put, a delete.
fn fixture_block() -> Block {
    let mut links = vec![cid_of(b"parent one"), cid_of(b"parent two")];
    links.sort();
    Block {
        v: FORMAT_VERSION,
        links,
        priority: 8,
        puts: vec![Put {
            key: b"/pins/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".to_vec(),
            value: b"{\"replication_factor_min\":-1}".to_vec(),
        }],
        dels: vec![Delete {
            key: b"/pins/old".to_vec(),
            ids: vec![cid_of(b"an element")],
        }],
        author: vec![],
        sig: vec![],
    }
}

#[test]
fn version_1_blocks_decode_and_encode_unchanged() {
    let cid: Cid = FIXTURE_CID.parse().unwrap();
    assert_eq!(cid_of(FIXTURE), cid);
    let decoded = Block::decode(
        &cid,
        FIXTURE,
        &Limits::default(),
        Trust::everyone().as_ref(),
    )
    .unwrap();
    let (again, bytes, _) = fixture_block()
        .seal(Author::from_seed(42).as_ref(), &Limits::default())
        .unwrap();
    assert_eq!(bytes, FIXTURE, "encoding of the fixture delta changed");
    assert_eq!(again, cid);
    assert_eq!(decoded.puts, fixture_block().puts);
    assert_eq!(decoded.dels, fixture_block().dels);
}
