//! The fuzz targets on stable, for CI: every entry of `pincluster::fuzz`
//! gets its seed corpus (valid inputs built here from the real encoders,
//! plus the files committed under `fuzz/seeds/<target>/`, which hold the
//! regressions found by `cargo fuzz`), then thousands of inputs mutated
//! from those seeds by a seeded generator. An entry that panics fails the
//! test, naming the target and the input in hex.
//!
//! `PINCLUSTER_FUZZ_CASES` sets the mutated inputs per target (CI: 3,000);
//! `PINCLUSTER_FUZZ_SEED` the generator's seed (printed on failure).
//! `cargo test --test fuzz_replay -- --ignored write_seeds` rewrites the
//! generated seeds under `fuzz/seeds/`, where `cargo fuzz` starts from.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cid::Cid;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use pincluster::api::car;
use pincluster::config::{Config, TrustedPeers};
use pincluster::consensus::{PeerSigner, PeerVerifier};
use pincluster::fuzz::TARGETS;
use pincluster::identity::Identity;
use pincluster::monitor::MetricWire;
use pincluster::network::protocol::{
    self, HeadsMessage, PeerPinStatus, RpcRequest, RpcResponse, SyncRequest, SyncResponse,
};
use pincluster::types::{Pin, PinMode, PinOptions};
use pincluster_crdt::store::MemoryStore;
use pincluster_crdt::{Engine, Limits};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_bytes::ByteBuf;

fn raw_cid(data: &[u8]) -> Cid {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(data);
    Cid::new_v1(
        0x55,
        cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap(),
    )
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A CARv1 of one root and `blocks`.
fn car_file(blocks: &[&[u8]]) -> Vec<u8> {
    let root = raw_cid(blocks[0]);
    let mut out = car::v1_header(root);
    for data in blocks {
        let cid = raw_cid(data).to_bytes();
        varint((cid.len() + data.len()) as u64, &mut out);
        out.extend_from_slice(&cid);
        out.extend_from_slice(data);
    }
    out
}

fn pins() -> Vec<Pin> {
    let mut named = PinOptions {
        name: "a name".into(),
        mode: PinMode::Direct,
        replication_factor_min: 1,
        replication_factor_max: 3,
        ..PinOptions::default()
    };
    named.metadata.insert("k".into(), "v".into());
    named.origins = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
    let mut allocated = Pin::new(raw_cid(b"allocated"), PinOptions::default());
    allocated.allocations = vec![PeerId::random(), PeerId::random()];
    vec![
        Pin::new(raw_cid(b"plain"), PinOptions::default()),
        Pin::new(raw_cid(b"named"), named),
        allocated,
    ]
}

/// Valid inputs for every target, from the encoders the peer itself uses
/// (a fuzzer that starts from real messages gets past the first byte).
fn generated_seeds() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut seeds: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();

    // Blocks of a replica with some history: puts, a delete, merged heads.
    let keypair = Keypair::generate_ed25519();
    let local = keypair.public().to_peer_id();
    let mut replica = Engine::open(
        MemoryStore::new(),
        Arc::new(PeerSigner::new(keypair)),
        Arc::new(PeerVerifier::new(TrustedPeers::All, local)),
        Limits::default(),
    )
    .unwrap();
    let mut blocks = Vec::new();
    for (i, pin) in pins().iter().enumerate() {
        let mut batch = replica.batch();
        batch.put(pin.cid.to_bytes(), pin.to_state_bytes()).unwrap();
        if i == 2 {
            batch.delete(pins()[0].cid.to_bytes()).unwrap();
        }
        let committed = replica.commit(batch).unwrap().unwrap();
        blocks.push(committed.bytes);
    }
    seeds.insert("crdt_block", blocks);
    seeds.insert(
        "pin_record",
        pins().iter().map(Pin::to_state_bytes).collect(),
    );
    let json: Vec<Vec<u8>> = pins()
        .iter()
        .map(|p| serde_json::to_vec(p).unwrap())
        .collect();
    seeds.insert("pin_json", [json.clone(), vec![json.concat()]].concat());

    let cars = [
        car_file(&[b"hello"]),
        car_file(&[b"root", b"leaf one", b"leaf two"]),
    ];
    // The first byte is the chunk size of the body.
    seeds.insert(
        "car",
        cars.iter().map(|c| [&[7u8][..], c].concat()).collect(),
    );
    let form = |car: &[u8]| {
        let mut body = b"multipart/form-data; boundary=X\n\x05".to_vec();
        body.extend_from_slice(
            b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.car\"\r\n\
              Content-Type: application/vnd.ipld.car\r\n\r\n",
        );
        body.extend_from_slice(car);
        body.extend_from_slice(b"\r\n--X--\r\n");
        body
    };
    seeds.insert("multipart", cars.iter().map(|c| form(c)).collect());

    let cid = raw_cid(b"q");
    seeds.insert(
        "rest_query",
        [
            format!("{cid}?name=n&mode=direct&replication-min=1&replication-max=3&expire-in=1h"),
            format!("ipfs/{cid}/a/b?meta-k=v&user-allocations=12D3KooWA,12D3KooWB&shard-size=10"),
            "ipns/example.com?origins=/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWA&pin-update=x".into(),
            format!("?filter=pinned,error&local=true&cids={cid}&cid={cid}"),
            "?format=car&no-pin=true&replication=2&cid-version=1&raw-leaves=true&layout=trickle"
                .into(),
            "Qm%20x?name=%E2%98%83+a&expire-at=2030-01-01T00:00:00Z".into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect(),
    );
    seeds.insert(
        "proxy_request",
        [
            format!("/api/v0/pin/add/{cid}?recursive=true&progress=true"),
            format!("/api/v0/pin/rm?arg={cid}&arg=/ipfs/{cid}"),
            format!("/api/v0/pin/ls?arg={cid}&type=recursive&stream=true"),
            format!("/api/v0/pin/update?arg={cid}&arg={cid}&unpin=false"),
            "/api/v0/add?pin=false&wrap-with-directory=true".into(),
            "/api/v0/repo/stat?size-only=true".into(),
            "/api/v0/block/put?cid-codec=raw&mhtype=sha2-256&pin=true".into(),
            "/api/v0/dag/put?store-codec=dag-cbor&input-codec=dag-json".into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect(),
    );

    let example = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.json"))
        .expect("config.example.json");
    seeds.insert(
        "service_json",
        vec![example, Config::new_default().to_json_pretty().into_bytes()],
    );
    let dir = tempfile::tempdir().unwrap();
    Identity::generate().save(dir.path()).unwrap();
    seeds.insert(
        "identity",
        vec![std::fs::read(Identity::path(dir.path())).unwrap()],
    );

    let kubo = [
        format!("{{\"Progress\":2}}\n{{\"Progress\":\"3\"}}\n{{\"Pins\":[\"{cid}\"]}}\n"),
        format!(
            "{{\"Cid\":\"{cid}\",\"Type\":\"recursive\"}}\n{{\"Cid\":{{\"/\":\"{cid}\"}},\"Type\":\"direct\"}}\n"
        ),
        format!("{{\"Keys\":{{\"{cid}\":{{\"Type\":\"recursive\"}}}}}}"),
        format!(
            "{{\"Name\":\"a\",\"Bytes\":5}}\n{{\"Name\":\"a\",\"Hash\":\"{cid}\",\"Size\":\"5\"}}\n"
        ),
        "{\"Message\":\"pin/add: not found\",\"Code\":0,\"Type\":\"error\"}\n".into(),
        format!("{{\"Key\":{{\"/\":\"{cid}\"}}}}\n{{\"Key\":null,\"Error\":\"busy\"}}\n"),
        "{\"RepoSize\":\"1024\",\"StorageMax\":10000000000}".into(),
        "{\"Peers\":[{\"Peer\":\"12D3KooWA\",\"Addr\":\"/ip4/1.2.3.4/tcp/1\"}]}".into(),
        "{\"ID\":\"12D3KooWA\",\"Addresses\":[\"/ip4/127.0.0.1/tcp/4001\"]}".into(),
        "{\"Path\":\"/ipfs/bafk\"}{\"Version\":\"0.43.1\"}404 page not found".into(),
    ];
    seeds.insert(
        "kubo_reply",
        kubo.iter()
            .map(|k| [&[9u8][..], k.as_bytes()].concat())
            .collect(),
    );

    let status = PeerPinStatus {
        peername: "p".into(),
        status: pincluster::status::TrackerStatus::Pinned,
        error: String::new(),
        attempts: 1,
        priority: false,
        updated: Some(chrono::Utc::now().fixed_offset()),
        fetched: None,
    };
    let metric = MetricWire {
        name: "ping".into(),
        value: "{\"ipfs_id\":\"x\"}".into(),
        ttl_ms: 30_000,
        valid: true,
        weight: 1,
        partitionable: false,
    };
    seeds.insert(
        "p2p_message",
        vec![
            protocol::encode(&SyncRequest::Heads).unwrap(),
            protocol::encode(&SyncRequest::Blocks {
                cids: vec![cid, raw_cid(b"r")],
                ancestors: 64,
            })
            .unwrap(),
            protocol::encode(&SyncResponse::Heads(vec![cid])).unwrap(),
            protocol::encode(&SyncResponse::Blocks(vec![(
                cid,
                ByteBuf::from(b"q".to_vec()),
            )]))
            .unwrap(),
            protocol::encode(&RpcRequest::StatusMany { cids: vec![cid] }).unwrap(),
            protocol::encode(&RpcRequest::SetRemoved {
                peer: PeerId::random(),
                removed: true,
            })
            .unwrap(),
            protocol::encode(&RpcResponse::StatusMany(vec![status])).unwrap(),
            protocol::encode(&RpcResponse::Recovered(vec![cid])).unwrap(),
            protocol::encode(&HeadsMessage {
                v: 1,
                heads: vec![cid],
            })
            .unwrap(),
            protocol::encode(&vec![metric]).unwrap(),
        ],
    );
    seeds
}

fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

/// Generated seeds and the committed ones, per target.
fn corpus() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut all = generated_seeds();
    for (name, _) in TARGETS {
        let seeds = all.entry(name).or_default();
        if let Ok(dir) = std::fs::read_dir(seed_dir(name)) {
            for file in dir {
                seeds.push(std::fs::read(file.unwrap().path()).unwrap());
            }
        }
    }
    all
}

/// One mutation of `input`, libFuzzer's simplest kinds: flip, set, insert,
/// remove or duplicate bytes, write a boundary value, splice another seed.
fn mutate(rng: &mut StdRng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = if out.is_empty() {
            0
        } else {
            rng.gen_range(0..out.len())
        };
        match rng.gen_range(0..7) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.gen_range(0..8),
            1 if !out.is_empty() => out[at] = rng.r#gen(),
            2 => out.insert(at, rng.r#gen()),
            3 if !out.is_empty() => {
                let end = (at + rng.gen_range(1..=16)).min(out.len());
                out.drain(at..end);
            }
            4 if !out.is_empty() => {
                let end = (at + rng.gen_range(1..=32)).min(out.len());
                let copy = out[at..end].to_vec();
                let to = rng.gen_range(0..=out.len());
                out.splice(to..to, copy);
            }
            5 if !out.is_empty() => {
                let values: [&[u8]; 6] = [
                    &[0x00],
                    &[0xff],
                    &[0x7f, 0xff, 0xff, 0xff],
                    &[0xff; 9],
                    &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    b"\"\\u0000\"",
                ];
                let value = values[rng.gen_range(0..values.len())];
                let end = (at + value.len()).min(out.len());
                out.splice(at..end, value.iter().copied());
            }
            _ if !others.is_empty() => {
                let other = &others[rng.gen_range(0..others.len())];
                let from = rng.gen_range(0..=other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => out.push(rng.r#gen()),
        }
    }
    out
}

fn run(target: &str, entry: fn(&[u8]), input: &[u8], seed: u64) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| entry(input))).is_err() {
        panic!(
            "fuzz target {target} panicked (PINCLUSTER_FUZZ_SEED={seed}) on input {}",
            hex::encode(input)
        );
    }
}

#[test]
fn every_parser_survives_its_seeds_and_their_mutations() {
    let cases: usize = std::env::var("PINCLUSTER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let seed: u64 = std::env::var("PINCLUSTER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let corpus = corpus();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total = 0;
    for (name, entry) in TARGETS {
        let seeds = &corpus[name];
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for input in seeds {
            run(name, *entry, input, seed);
        }
        for _ in 0..cases {
            let from = rng.gen_range(0..seeds.len());
            let input = mutate(&mut rng, &seeds[from], seeds);
            run(name, *entry, &input, seed);
        }
        total += seeds.len() + cases;
    }
    eprintln!(
        "{} targets, {total} inputs (seed {seed}), no panic",
        TARGETS.len()
    );
}

/// Every target has its cargo-fuzz file, and every seed it is given is
/// accepted by the parser it is meant for (a seed that fails at once
/// would leave the fuzzer at the first byte).
#[test]
fn the_seeds_are_real_inputs_and_every_target_is_fuzzable() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in TARGETS {
        let file = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(file.exists(), "{} is missing", file.display());
    }
    let seeds = generated_seeds();
    for block in &seeds["crdt_block"] {
        let cid = pincluster_crdt::cid_of(block);
        let keypair = Keypair::generate_ed25519();
        pincluster_crdt::Block::decode(
            &cid,
            block,
            &Limits::default(),
            &PeerVerifier::new(TrustedPeers::All, keypair.public().to_peer_id()),
        )
        .expect("a seed block decodes");
    }
    for record in &seeds["pin_record"] {
        Pin::from_state_bytes(record).expect("a seed record decodes");
    }
    for message in &seeds["p2p_message"][..2] {
        protocol::decode::<SyncRequest>(message).expect("a seed sync request decodes");
    }
    for json in &seeds["service_json"] {
        Config::from_json(std::str::from_utf8(json).unwrap()).expect("a seed configuration");
    }
    for id in &seeds["identity"] {
        Identity::parse(std::str::from_utf8(id).unwrap(), Path::new("identity.json"))
            .expect("a seed identity");
    }
}

#[test]
#[ignore = "writes fuzz/seeds/; run by hand when the encoders change"]
fn write_seeds() {
    for (name, seeds) in generated_seeds() {
        let dir = seed_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
