//! The JSON shapes and query strings against the reference's; the fixtures
//! here serve the stored codec's tests too ([`crate::state`]).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use cid::Cid;
use libp2p::{Multiaddr, PeerId};

use super::*;

pub(crate) const CID1: &str = "QmP63DkAFEnDYNjDYBpyNDfttu1fvUw99x1brscPzpqmmq";
pub(crate) const CID_V1: &str = "bafyreiay3jpjk74dkckv2r74eyvf3lfnxujefay2rtuluintasq2zlapv4";
pub(crate) const PEER_A: &str = "12D3KooWGHTKzeT4KaLGLrbKKyT8zKrBPXAUBRzCAN6ZMDMo4M6M";
pub(crate) const PEER_B: &str = "12D3KooWFBFCDQzAkQSwPZLV883pKdsmb6urQ3sMjfJHUxn5GCVv";
pub(crate) const PEER_IPFS: &str = "12D3KooWKuJ8LPTyHbyX4nt4C7uWmUobzFsiceTVoFw7HpmoNakM";

pub(crate) fn cid(s: &str) -> Cid {
    decode_cid(s).unwrap()
}

pub(crate) fn peer(s: &str) -> PeerId {
    s.parse().unwrap()
}

pub(crate) fn time(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn now() -> DateTime<FixedOffset> {
    time("2024-05-01T10:00:00+02:00")
}

fn query(list: &[(&str, &str)]) -> Result<PinOptions, OptionsError> {
    PinOptions::from_query_at(&pairs(list), now())
}

fn query_err(list: &[(&str, &str)]) -> String {
    query(list).unwrap_err().to_string()
}

/// The spec's §1.2 example pin.
pub(crate) fn spec_pin() -> Pin {
    Pin {
        options: PinOptions {
            replication_factor_min: -1,
            replication_factor_max: -1,
            ..PinOptions::default()
        },
        cid: cid(CID1),
        pin_type: PinType::Pin,
        allocations: vec![],
        max_depth: -1,
        reference: None,
        timestamp: Some(time("2024-05-01T10:00:00+02:00")),
    }
}

#[test]
fn pin_json_matches_the_reference_shape() {
    let json = serde_json::to_string(&spec_pin()).unwrap();
    let expected = concat!(
        r#"{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","#,
        r#""mode":"recursive","shard_size":0,"user_allocations":null,"#,
        r#""expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"#,
        r#""origins":[],"cid":"QmP63DkAFEnDYNjDYBpyNDfttu1fvUw99x1brscPzpqmmq","#,
        r#""type":"pin","allocations":[],"max_depth":-1,"reference":null,"#,
        r#""timestamp":"2024-05-01T10:00:00+02:00"}"#
    );
    assert_eq!(json, expected);
    assert_eq!(serde_json::from_str::<Pin>(&json).unwrap(), spec_pin());
}

#[test]
fn pin_json_with_every_field_set_round_trips() {
    let mut pin = spec_pin();
    pin.options = PinOptions {
        replication_factor_min: 1,
        replication_factor_max: 2,
        name: "my pin".into(),
        mode: PinMode::Direct,
        shard_size: 100,
        user_allocations: vec![peer(PEER_A)],
        expire_at: Some(time("2025-01-02T03:04:05.120Z")),
        metadata: BTreeMap::from([("kind".into(), "text".into())]),
        pin_update: Some(cid(CID_V1)),
        origins: vec![
            format!("/ip4/1.2.3.4/tcp/4001/p2p/{PEER_IPFS}")
                .parse()
                .unwrap(),
        ],
    };
    pin.allocations = vec![peer(PEER_A), peer(PEER_B)];
    pin.pin_type = PinType::ShardPin;
    pin.max_depth = 1;
    pin.reference = Some(cid(CID_V1));
    let json = serde_json::to_string(&pin).unwrap();
    assert!(json.contains(&format!(r#""user_allocations":["{PEER_A}"]"#)));
    assert!(json.contains(r#""expire_at":"2025-01-02T03:04:05.12Z""#));
    assert!(json.contains(r#""metadata":{"kind":"text"}"#));
    assert!(json.contains(&format!(r#""pin_update":"{CID_V1}""#)));
    assert!(json.contains(r#""type":"shard-pin""#));
    assert!(json.contains(r#""mode":"direct""#));
    assert_eq!(serde_json::from_str::<Pin>(&json).unwrap(), pin);
}

#[test]
fn pin_decoding_is_lenient() {
    let only_cid: Pin = serde_json::from_str(&format!(r#"{{"cid":"{CID1}"}}"#)).unwrap();
    assert_eq!(only_cid.pin_type, PinType::BadType);
    assert_eq!(only_cid.max_depth, 0);
    assert_eq!(only_cid.options, PinOptions::default());
    assert_eq!(only_cid.timestamp, None);

    let nulls = format!(
        r#"{{"replication_factor_min":null,"replication_factor_max":null,"name":null,
        "mode":null,"shard_size":null,"user_allocations":null,"expire_at":null,
        "metadata":{{"a":null}},"pin_update":null,"origins":null,"cid":"{CID1}",
        "type":null,"allocations":null,"max_depth":null,"reference":null,
        "timestamp":null,"unknown_field":[1,2]}}"#
    );
    let pin: Pin = serde_json::from_str(&nulls).unwrap();
    assert_eq!(
        pin.options.metadata,
        BTreeMap::from([("a".into(), String::new())])
    );
    assert_eq!(pin.options.mode, PinMode::Recursive);

    let odd = format!(
        r#"{{"cid":"{CID1}","mode":"sideways","type":"all","timestamp":"0001-01-01T01:00:00+01:00"}}"#
    );
    let pin: Pin = serde_json::from_str(&odd).unwrap();
    assert_eq!(pin.options.mode, PinMode::Recursive);
    assert_eq!(pin.pin_type, PinType::BadType);
    assert_eq!(pin.timestamp, None, "Go's zero instant in another offset");

    assert!(serde_json::from_str::<Pin>(r#"{"cid":null}"#).is_err());
    assert!(serde_json::from_str::<Pin>(r#"{"cid":"nope"}"#).is_err());
    let bad_peer = format!(r#"{{"cid":"{CID1}","allocations":["nope"]}}"#);
    assert!(serde_json::from_str::<Pin>(&bad_peer).is_err());
}

#[test]
fn cids_print_in_their_default_base() {
    assert_eq!(cid(CID1).to_string(), CID1);
    assert_eq!(cid(CID_V1).to_string(), CID_V1);
    let err = decode_cid("notacid").unwrap_err().to_string();
    assert!(
        err.starts_with("error decoding Cid: invalid cid: "),
        "{err}"
    );
}

#[test]
fn go_time_format_trims_the_fraction() {
    let cases = [
        (
            "2024-05-01T10:00:05.123456789+02:00",
            "2024-05-01T10:00:05.123456789+02:00",
        ),
        (
            "2024-05-01T10:00:05.1234+02:00",
            "2024-05-01T10:00:05.1234+02:00",
        ),
        ("2024-05-01T10:00:05.100000000Z", "2024-05-01T10:00:05.1Z"),
        ("2024-05-01T10:00:05.000Z", "2024-05-01T10:00:05Z"),
        ("2024-05-01T10:00:05+00:00", "2024-05-01T10:00:05Z"),
        ("2024-05-01T10:00:05-05:30", "2024-05-01T10:00:05-05:30"),
    ];
    for (input, want) in cases {
        let t = go_time::parse(input).unwrap().unwrap();
        assert_eq!(go_time::format(&t), want, "{input}");
    }
    assert_eq!(go_time::parse(go_time::ZERO).unwrap(), None);
    assert!(go_time::parse("yesterday").is_err());
}

#[test]
fn id_json_matches_the_reference_shape() {
    let id = IdInfo {
        id: peer(PEER_A),
        addresses: vec![
            format!("/ip4/127.0.0.1/tcp/9096/p2p/{PEER_A}")
                .parse()
                .unwrap(),
        ],
        cluster_peers: vec![peer(PEER_A), peer(PEER_B)],
        cluster_peers_addresses: vec![
            format!("/ip4/10.0.0.2/tcp/9096/p2p/{PEER_B}")
                .parse()
                .unwrap(),
        ],
        version: "1.1.6".into(),
        commit: String::new(),
        rpc_protocol_version: "/ipfscluster/1.0/rpc".into(),
        error: String::new(),
        ipfs: IpfsIdInfo {
            id: Some(peer(PEER_IPFS)),
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            error: String::new(),
        },
        peername: "my-host".into(),
    };
    let expected = format!(
        concat!(
            r#"{{"id":"{a}","addresses":["/ip4/127.0.0.1/tcp/9096/p2p/{a}"],"#,
            r#""cluster_peers":["{a}","{b}"],"#,
            r#""cluster_peers_addresses":["/ip4/10.0.0.2/tcp/9096/p2p/{b}"],"#,
            r#""version":"1.1.6","commit":"","rpc_protocol_version":"/ipfscluster/1.0/rpc","#,
            r#""error":"","ipfs":{{"id":"{i}","addresses":["/ip4/127.0.0.1/tcp/4001"],"#,
            r#""error":""}},"peername":"my-host"}}"#
        ),
        a = PEER_A,
        b = PEER_B,
        i = PEER_IPFS
    );
    assert_eq!(serde_json::to_string(&id).unwrap(), expected);
    assert_eq!(serde_json::from_str::<IdInfo>(&expected).unwrap(), id);
}

#[test]
fn id_of_an_unreachable_peer() {
    let json = format!(
        r#"{{"id":"{PEER_A}","addresses":null,"cluster_peers":null,"ipfs":null,"error":"dial backoff"}}"#
    );
    let id: IdInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(id.error, "dial backoff");
    assert_eq!(id.ipfs, IpfsIdInfo::default());
    let out = serde_json::to_string(&id).unwrap();
    assert!(
        out.contains(r#""ipfs":{"addresses":null,"error":""}"#),
        "{out}"
    );
}

#[test]
fn version_and_error_shapes() {
    let v = Version {
        version: "1.1.6".into(),
    };
    assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"version":"1.1.6"}"#);
    let e = ApiError {
        code: 404,
        message: "pin is not part of the pinset".into(),
    };
    let json = r#"{"code":404,"message":"pin is not part of the pinset"}"#;
    assert_eq!(serde_json::to_string(&e).unwrap(), json);
    assert_eq!(serde_json::from_str::<ApiError>(json).unwrap(), e);
    assert_eq!(serde_json::from_str::<ApiError>("{}").unwrap().code, 0);
}

#[test]
fn options_from_an_empty_query_are_the_defaults() {
    assert_eq!(query(&[]).unwrap(), PinOptions::default());
    // What the Go client sends when nothing was asked for.
    let empty = query(&[
        ("replication-min", ""),
        ("replication-max", ""),
        ("name", ""),
        ("mode", ""),
        ("shard-size", ""),
        ("user-allocations", ""),
    ])
    .unwrap();
    assert_eq!(empty, PinOptions::default());
}

#[test]
fn options_replication() {
    let o = query(&[("replication-min", "2"), ("replication-max", "3")]).unwrap();
    assert_eq!((o.replication_factor_min, o.replication_factor_max), (2, 3));
    let o = query(&[("replication", "-1"), ("replication-min", "2")]).unwrap();
    assert_eq!(
        (o.replication_factor_min, o.replication_factor_max),
        (-1, -1)
    );
    assert_eq!(
        query_err(&[("replication-min", "x")]),
        "parameter replication-min invalid"
    );
    assert_eq!(
        query_err(&[("replication-max", "1.5")]),
        "parameter replication-max invalid"
    );
    assert_eq!(
        query_err(&[("replication", "two")]),
        "parameter replication-min invalid"
    );
}

#[test]
fn options_name_mode_shard_size() {
    let o = query(&[("name", "a b"), ("mode", "direct"), ("shard-size", "1024")]).unwrap();
    assert_eq!(o.name, "a b");
    assert_eq!(o.mode, PinMode::Direct);
    assert_eq!(o.shard_size, 1024);
    assert_eq!(
        query(&[("mode", "weird")]).unwrap().mode,
        PinMode::Recursive
    );
    for bad in ["-1", "+1", "x"] {
        assert_eq!(
            query_err(&[("shard-size", bad)]),
            "parameter shard_size is invalid"
        );
    }
}

#[test]
fn options_user_allocations_drop_invalid_ids() {
    let list = format!("{PEER_A},nope,{PEER_B},");
    let o = query(&[("user-allocations", &list)]).unwrap();
    assert_eq!(o.user_allocations, vec![peer(PEER_A), peer(PEER_B)]);
}

#[test]
fn options_expiry() {
    let o = query(&[("expire-at", "2030-01-01T00:00:00Z"), ("expire-in", "bad")]).unwrap();
    assert_eq!(
        o.expire_at,
        Some(time("2030-01-01T00:00:00Z")),
        "expire-at wins"
    );
    let o = query(&[("expire-in", "1h30m")]).unwrap();
    assert_eq!(o.expire_at, Some(time("2024-05-01T11:30:00+02:00")));
    let err = query_err(&[("expire-at", "tomorrow")]);
    assert!(err.starts_with("expire-at cannot be parsed: "), "{err}");
    assert_eq!(
        query_err(&[("expire-in", "soon")]),
        r#"expire-in cannot be parsed: time: invalid duration "soon""#
    );
    assert_eq!(
        query_err(&[("expire-in", "999ms")]),
        "expire-in duration too short"
    );
    assert_eq!(
        query_err(&[("expire-in", "-1h")]),
        "expire-in duration too short"
    );
}

#[test]
fn options_metadata() {
    let o = query(&[
        ("meta-a", "1"),
        ("meta-", "x"),
        ("meta-a", "2"),
        ("meta-b", ""),
    ])
    .unwrap();
    assert_eq!(
        o.metadata,
        BTreeMap::from([("a".into(), "1".into()), ("b".into(), String::new())])
    );
}

#[test]
fn options_pin_update() {
    assert_eq!(
        query(&[("pin-update", CID1)]).unwrap().pin_update,
        Some(cid(CID1))
    );
    let err = query_err(&[("pin-update", "nope")]);
    assert!(
        err.starts_with("error decoding update option parameter: "),
        "{err}"
    );
    assert!(!err.contains("error decoding Cid"), "{err}");
}

#[test]
fn options_origins() {
    let a = format!("/ip4/1.2.3.4/tcp/4001/p2p/{PEER_A}");
    let b = format!("/dns4/example.com/tcp/4001/p2p/{PEER_B}");
    let o = query(&[("origins", &format!("{a},{b}"))]).unwrap();
    assert_eq!(
        o.origins,
        vec![a.parse::<Multiaddr>().unwrap(), b.parse().unwrap()]
    );
    let err = query_err(&[("origins", "ip4/1.2.3.4")]);
    assert!(err.starts_with("error decoding multiaddress: "), "{err}");
    assert_eq!(
        query_err(&[("origins", &format!("{a},"))]),
        "error decoding multiaddress: empty multiaddr"
    );
    assert_eq!(
        query_err(&[("origins", "/ip4/1.2.3.4/tcp/4001")]),
        "multiaddress does not contain peer ID: protocol not found in multiaddr"
    );
}

#[test]
fn options_to_query_is_what_the_go_client_sends() {
    let q = PinOptions::default().to_query();
    assert_eq!(
        q,
        pairs(&[
            ("mode", "recursive"),
            ("name", ""),
            ("replication-max", "0"),
            ("replication-min", "0"),
            ("shard-size", "0"),
            ("user-allocations", ""),
        ])
    );
    let origin = format!("/ip4/1.2.3.4/tcp/4001/p2p/{PEER_A}");
    let full = PinOptions {
        replication_factor_min: 1,
        replication_factor_max: 3,
        name: "n".into(),
        mode: PinMode::Direct,
        shard_size: 7,
        user_allocations: vec![peer(PEER_A), peer(PEER_B)],
        expire_at: Some(time("2030-01-01T00:00:00.5Z")),
        metadata: BTreeMap::from([("k".into(), "v".into())]),
        pin_update: Some(cid(CID1)),
        origins: vec![origin.parse().unwrap()],
    };
    let q = full.to_query();
    let keys: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "expire-at",
            "meta-k",
            "mode",
            "name",
            "origins",
            "pin-update",
            "replication-max",
            "replication-min",
            "shard-size",
            "user-allocations"
        ]
    );
    assert_eq!(q[0].1, "2030-01-01T00:00:00.5Z");
    assert_eq!(q[9].1, format!("{PEER_A},{PEER_B}"));
    assert_eq!(PinOptions::from_query_at(&q, now()).unwrap(), full);
}
