//! The fuzzers' entry points: one function per parser of outside input,
//! each feeding arbitrary bytes to that parser the way the peer does.
//!
//! The `cargo fuzz` targets under `fuzz/` call these (nightly, libFuzzer),
//! and `tests/fuzz_replay.rs` replays their seed corpora and a few thousand
//! mutated inputs through the same functions on stable, so CI runs them on
//! every push. Whatever the bytes, an entry must return: no panic, no hang,
//! no allocation beyond the parser's limits. Where a parser has a writer,
//! the entry also checks that what it accepts survives a round trip, since
//! a record that reads back differently would fork replicas.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::executor::block_on;
use libp2p::identity::Keypair;
use libp2p::request_response::Codec as _;
use libp2p::{PeerId, StreamProtocol};
use pincluster_crdt::store::MemoryStore;
use pincluster_crdt::{Block, Engine, Limits, Verifier, VerifyError, cid_of, links_of};

use crate::api::car::{self, CarReader};
use crate::api::query::{form_decode, path_decode, url_pairs};
use crate::config::{Config, TrustedPeers};
use crate::consensus::{PeerSigner, PeerVerifier};
use crate::identity::Identity;
use crate::monitor::{MetricWire, Monitor};
use crate::ndjson::LineSplitter;
use crate::network::protocol::{
    self, HeadsMessage, RpcCodec, RpcRequest, RpcResponse, SyncCodec, SyncRequest, SyncResponse,
};
use crate::status::StatusFilter;
use crate::types::{Pin, PinOptions, PinTypeFilter, decode_cid};

/// A fuzz target: its name (the file under `fuzz/fuzz_targets/` and the
/// folder of its seeds under `fuzz/corpus/`) and its entry.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, for the replay test.
pub const TARGETS: &[Target] = &[
    ("crdt_block", crdt_block),
    ("pin_record", pin_record),
    ("pin_json", pin_json),
    ("car", car),
    ("multipart", multipart),
    ("rest_query", rest_query),
    ("proxy_request", proxy_request),
    ("service_json", service_json),
    ("identity", identity),
    ("kubo_reply", kubo_reply),
    ("p2p_message", p2p_message),
];

/// Blocks read from one input at most: enough to reach every state of a
/// reader, few enough that an input of tiny blocks stays fast.
const MAX_BLOCKS: usize = 64;

/// Accepts every signature, so the fuzzer reaches what comes after the
/// one check it cannot pass by chance (the real check is fuzzed too).
struct AnySignature;

impl Verifier for AnySignature {
    fn verify(&self, _: &[u8], _: &[u8], _: &[u8]) -> Result<(), VerifyError> {
        Ok(())
    }
}

/// A sync block as a remote peer sends it: decoded and verified with the
/// real verifier, then received by a replica that skips signatures, which
/// checks links, limits and merges.
pub fn crdt_block(data: &[u8]) {
    let cid = cid_of(data);
    let _ = links_of(data);
    let keypair = Keypair::generate_ed25519();
    let local = keypair.public().to_peer_id();
    let verifier = PeerVerifier::new(TrustedPeers::All, local);
    let _ = Block::decode(&cid, data, &Limits::default(), &verifier);
    let Ok(mut replica) = Engine::open(
        MemoryStore::new(),
        Arc::new(PeerSigner::new(keypair)),
        Arc::new(AnySignature),
        Limits::default(),
    ) else {
        return;
    };
    if replica.receive(&cid, data).is_ok() {
        let _ = replica.heads();
        let _ = replica.wanted(16);
    }
}

/// A pin's record in a delta (the value of a CRDT put): what it decodes
/// to must encode back to a record that decodes the same.
pub fn pin_record(data: &[u8]) {
    if let Ok(pin) = Pin::from_state_bytes(data) {
        let again =
            Pin::from_state_bytes(&pin.to_state_bytes()).expect("a pin's own record reads back");
        assert_eq!(again, pin, "a pin record changed through a round trip");
    }
}

/// A pin as JSON: `state import`'s input and the REST API's pin objects.
pub fn pin_json(data: &[u8]) {
    for pin in serde_json::Deserializer::from_slice(data)
        .into_iter::<Pin>()
        .take(MAX_BLOCKS)
    {
        let Ok(pin) = pin else { break };
        let again = Pin::from_state_bytes(&pin.to_state_bytes())
            .expect("an imported pin's record reads back");
        assert_eq!(again.cid, pin.cid);
        let _ = serde_json::to_vec(&pin).expect("a pin encodes");
    }
}

/// `data` as a body arriving in chunks whose sizes its first byte sets,
/// so the readers meet every boundary a network can put in their way.
fn chunked(data: &[u8]) -> Vec<Bytes> {
    let Some((&first, rest)) = data.split_first() else {
        return Vec::new();
    };
    let size = usize::from(first % 64) + 1;
    rest.chunks(size).map(Bytes::copy_from_slice).collect()
}

/// A CAR file, `POST /add?format=car`'s body once out of its form.
pub fn car(data: &[u8]) {
    let chunks = chunked(data);
    let source = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    block_on(async {
        let Ok(mut reader) = CarReader::new(source).await else {
            return;
        };
        let _ = reader.root();
        for _ in 0..MAX_BLOCKS {
            match reader.next_block().await {
                Ok(Some(block)) => {
                    let _ = car::unixfs_file_size(&block);
                }
                _ => break,
            }
        }
    });
}

/// A multipart body of `POST /add?format=car`: the first line is the
/// request's `Content-Type`, the rest the body.
pub fn multipart(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let content_type = String::from_utf8_lossy(&data[..split]).into_owned();
    let body = data.get(split + 1..).unwrap_or_default();
    block_on(crate::api::rest::read_car_upload(
        &content_type,
        chunked(body),
    ));
}

/// The REST API's URL: the path after `/pins/`, then `?` and the query
/// string, read by every parser a route applies to them.
pub fn rest_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    let pairs = url_pairs(query);
    let _ = PinOptions::from_query(&pairs);
    let _ = crate::api::rest::add_params(&pairs);
    for (key, value) in &pairs {
        match key.as_str() {
            "filter" => {
                let _ = StatusFilter::parse(value);
                let _ = PinTypeFilter::parse(value);
            }
            "cid" | "arg" => {
                let _ = decode_cid(value);
            }
            _ => {}
        }
    }
    let _ = crate::api::rest::path_of(path);
    let _ = decode_cid(&path_decode(path));
    let _ = form_decode(query);
}

/// A request to the IPFS proxy: its path and query string.
pub fn proxy_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    let _ = crate::api::proxy::route(path);
    for (key, value) in url_pairs(query) {
        if key == "arg" {
            let _ = decode_cid(&value);
        }
    }
}

/// `service.json`: what loads must validate or be refused, and what
/// validates must save and load again.
pub fn service_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = Config::from_json(text) else {
        return;
    };
    if loaded.config.validate().is_ok() {
        let saved = loaded.config.to_json_pretty();
        let again = Config::from_json(&saved).expect("a saved configuration loads");
        assert!(
            again.config.validate().is_ok(),
            "a saved valid configuration no longer validates"
        );
    }
}

/// `identity.json`.
pub fn identity(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Identity::parse(text, Path::new("identity.json"));
    }
}

/// A reply of the IPFS daemon's RPC API: streamed lines, split as they
/// come in chunks, each read as every reply shape.
pub fn kubo_reply(data: &[u8]) {
    let mut lines = LineSplitter::default();
    let mut chunks = chunked(data).into_iter();
    loop {
        while let Ok(Some(line)) = lines.next_line() {
            crate::ipfsconn::decode_replies(line);
        }
        match chunks.next() {
            Some(chunk) => lines.push(&chunk),
            None => break,
        }
    }
    if let Ok(Some(line)) = lines.finish() {
        crate::ipfsconn::decode_replies(line);
    }
    crate::ipfsconn::decode_replies(data);
}

/// A message from another cluster peer: a request-response stream of the
/// sync or RPC protocol (both directions), or a gossip message (heads,
/// metrics, which the monitor then records).
pub fn p2p_message(data: &[u8]) {
    // The codecs do not look at the protocol's name.
    let sync = StreamProtocol::new("/pincluster/fuzz/sync/1.0.0");
    let rpc = StreamProtocol::new("/pincluster/fuzz/rpc/1.0.0");
    block_on(async {
        let mut io = futures::io::Cursor::new(data);
        let _ = SyncCodec::default().read_request(&sync, &mut io).await;
        let mut io = futures::io::Cursor::new(data);
        let _ = SyncCodec::default().read_response(&sync, &mut io).await;
        let mut io = futures::io::Cursor::new(data);
        let _ = RpcCodec::default().read_request(&rpc, &mut io).await;
        let mut io = futures::io::Cursor::new(data);
        let _ = RpcCodec::default().read_response(&rpc, &mut io).await;
    });
    let _ = protocol::decode::<SyncRequest>(data);
    let _ = protocol::decode::<SyncResponse>(data);
    let _ = protocol::decode::<RpcRequest>(data);
    let _ = protocol::decode::<RpcResponse>(data);
    let _ = protocol::decode::<HeadsMessage>(data);
    if let Ok(metrics) = protocol::decode::<Vec<MetricWire>>(data) {
        let monitor = Monitor::new();
        let now = Utc::now();
        monitor.record(PeerId::random(), metrics, now);
        let _ = monitor.check(now);
        for name in monitor.names() {
            let _ = monitor.metrics(&name, now);
        }
    }
}
