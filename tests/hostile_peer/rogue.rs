//! The rogue peer: a member of the cluster (it holds the cluster secret, so
//! it passes the private network) that nobody trusts, speaking the
//! cluster's own protocols with pincluster's codecs and types, and lying in
//! every way they allow. It runs as a process of its own (the test binary
//! started again on its ignored `rogue_process` test), driven by one
//! command a line on stdin; each command answers one `ROGUE done <command>
//! key=value...` line on stdout once its effect is over.
//!
//! Commands: `ready` (connected to every target, each subscribed to both
//! gossip topics), `garbage`, `flood <n>`, `metrics <n>`, `forge-id
//! <peer>`, `forge <n>` (the forger: gossip authored as another peer),
//! `stats`, `quit`. How it answers (lies, bait blocks, never, a byte at a
//! time) is set when it starts ([`RogueConfig`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport, gossipsub, identify, identity::Keypair,
    noise, ping, tcp, yamux,
};
use pincluster::config::TrustedPeers;
use pincluster::consensus::{PeerSigner, PeerVerifier};
use pincluster::monitor::MetricWire;
use pincluster::network::protocol::{
    self, HeadsMessage, RemoteId, RpcRequest, RpcResponse, SyncRequest, SyncResponse,
};
use pincluster::types::{Pin, PinOptions};
use pincluster_crdt::store::MemoryStore;
use pincluster_crdt::{Block, Cid, Engine, FORMAT_VERSION, Limits, Put, Signer, cid_of};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;

/// What the test hands the rogue (JSON in `PINCLUSTER_ROGUE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RogueConfig {
    /// The cluster secret, hex.
    pub secret: String,
    /// `consensus.crdt.cluster_name` of the honest peers.
    pub cluster_name: String,
    /// The honest peers' cluster addresses, with `/p2p/<id>`.
    pub targets: Vec<String>,
    /// Publish gossip authored as this peer (unsigned: the key is not ours).
    pub forge_as: Option<String>,
    /// Seed of the CIDs of the pins the rogue tries to slip in.
    pub run: String,
    /// How it answers from the start: `lie`, `silent` (never) or
    /// `trickle` (a byte every 100 ms). An honest peer asks a peer for its
    /// heads only when it first comes up, so each way of answering is a
    /// rogue process of its own.
    pub answers: String,
    /// Holds the bait blocks from the start (see [`bait_pins`]).
    pub bait: bool,
}

/// The pins the rogue tries to slip into the pinset, for the test to
/// look for: signed by the rogue's own key, signed by it while claiming
/// `victim` as author, and one behind bytes that do not hash to the CID.
pub fn bait_pins(run: &str) -> [Cid; 3] {
    ["own", "forged-author", "wrong-bytes"].map(|what| raw_cid(format!("{run} {what}").as_bytes()))
}

fn raw_cid(data: &[u8]) -> Cid {
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &Sha256::digest(data)).unwrap();
    Cid::new_v1(0x55, mh)
}

/// Requests and answers as raw bytes on the cluster's own protocols: what
/// the rogue sends need not decode, and what it answers may come a byte
/// at a time.
#[derive(Clone, Default)]
struct RawCodec {
    trickle: Arc<AtomicBool>,
}

const READ_LIMIT: u64 = 16 * 1024 * 1024;

async fn read_all<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(READ_LIMIT).read_to_end(&mut buf).await?;
    Ok(buf)
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_all(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_all(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if self.trickle.load(Ordering::Relaxed) {
            // A byte every 100 ms: longer than any asker waits.
            for b in res {
                io.write_all(&[b]).await?;
                io.flush().await?;
                futures_timer(Duration::from_millis(100)).await;
            }
        } else {
            io.write_all(&res).await?;
        }
        io.close().await
    }
}

async fn futures_timer(d: Duration) {
    tokio::time::sleep(d).await;
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossip: gossipsub::Behaviour,
    sync: request_response::Behaviour<RawCodec>,
    rpc: request_response::Behaviour<RawCodec>,
}

/// Signs with the rogue's key while claiming someone else as the author.
struct ForgedSigner {
    key: Keypair,
    claimed: Vec<u8>,
}

impl Signer for ForgedSigner {
    fn author(&self) -> &[u8] {
        &self.claimed
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).unwrap()
    }
}

fn transport(key: &Keypair, psk: [u8; 32]) -> Boxed<(PeerId, StreamMuxerBox)> {
    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .and_then(move |socket, _| PnetConfig::new(PreSharedKey::new(psk)).handshake(socket))
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key).unwrap())
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed()
}

/// How the rogue answers what honest peers ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    /// Lies: bait heads, bad blocks, a forged identity.
    Lie,
    /// Never answers (keeps the streams open).
    Silent,
}

/// The work of one command: requests still out, and what they gave.
#[derive(Debug, Default)]
struct Job {
    name: String,
    /// By protocol (`true`: the RPC) and id: each behaviour numbers its own.
    out: HashSet<(bool, OutboundRequestId)>,
    answered: u64,
    failed: u64,
    refused: u64,
    published: u64,
    publish_errors: u64,
}

struct Rogue {
    swarm: Swarm<Behaviour>,
    targets: Vec<(PeerId, Multiaddr)>,
    heads_topic: gossipsub::IdentTopic,
    metrics_topic: gossipsub::IdentTopic,
    subscribed: HashMap<PeerId, usize>,
    answers: Answers,
    held_sync: Vec<ResponseChannel<Vec<u8>>>,
    held_rpc: Vec<ResponseChannel<Vec<u8>>>,
    /// Heads it announces when asked, and the bytes it serves for them.
    bait: Vec<(Cid, Vec<u8>)>,
    /// Real heads learnt from honest peers: announced, served corrupted.
    stolen_heads: Vec<Cid>,
    forged_id: Option<PeerId>,
    job: Option<Job>,
    waiting_ready: bool,
    /// `metrics <n>` waiting for the connections to be ready.
    after_ready: Option<u64>,
    served_blocks: u64,
    served_heads: u64,
    run: String,
    key: Keypair,
}

fn out(line: String) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "ROGUE {line}");
    let _ = o.flush();
}

/// Runs the rogue until `quit` or the end of stdin.
pub async fn run(config: RogueConfig) {
    let key = Keypair::generate_ed25519();
    let mut psk = [0u8; 32];
    hex::decode_to_slice(&config.secret, &mut psk).expect("a 32-byte hex secret");
    let tag = hex::encode(&Sha256::digest(config.cluster_name.as_bytes())[..8]);
    let proto = |what: &str| {
        StreamProtocol::try_from_owned(format!("/pincluster/{tag}/{what}/1.0.0")).unwrap()
    };
    let trickle = Arc::new(AtomicBool::new(false));
    let codec = RawCodec {
        trickle: trickle.clone(),
    };
    let (authenticity, mode) = match &config.forge_as {
        Some(p) => (
            gossipsub::MessageAuthenticity::Author(p.parse().expect("a peer id to forge")),
            gossipsub::ValidationMode::Permissive,
        ),
        None => (
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub::ValidationMode::Strict,
        ),
    };
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .validation_mode(mode)
        // Bigger than the honest peers read: oversized messages are an attack.
        .max_transmit_size(1024 * 1024)
        .build()
        .unwrap();
    // Long enough that a held request stays open for the whole test.
    let rr = request_response::Config::default()
        .with_request_timeout(Duration::from_secs(600))
        .with_max_concurrent_streams(10_000);
    let behaviour = Behaviour {
        identify: identify::Behaviour::new(identify::Config::new(
            "/pincluster/1.0.0".into(),
            key.public(),
        )),
        ping: ping::Behaviour::new(ping::Config::new()),
        gossip: gossipsub::Behaviour::new(authenticity, gossip_config).unwrap(),
        sync: request_response::Behaviour::with_codec(
            codec.clone(),
            [(proto("sync"), ProtocolSupport::Full)],
            rr.clone(),
        ),
        rpc: request_response::Behaviour::with_codec(
            codec,
            [(proto("rpc"), ProtocolSupport::Full)],
            rr,
        ),
    };
    let t = transport(&key, psk);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_other_transport(|_| t)
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    let heads_topic = gossipsub::IdentTopic::new(format!("pincluster/{tag}/heads/1"));
    let metrics_topic = gossipsub::IdentTopic::new(format!("pincluster/{tag}/metrics/1"));
    swarm
        .behaviour_mut()
        .gossip
        .subscribe(&heads_topic)
        .unwrap();
    swarm
        .behaviour_mut()
        .gossip
        .subscribe(&metrics_topic)
        .unwrap();
    let targets: Vec<(PeerId, Multiaddr)> = config
        .targets
        .iter()
        .map(|a| {
            let addr: Multiaddr = a.parse().unwrap();
            let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
                panic!("no /p2p in {a}");
            };
            (peer, addr)
        })
        .collect();
    out(format!("id {}", swarm.local_peer_id()));
    let answers = if config.answers == "silent" {
        Answers::Silent
    } else {
        Answers::Lie
    };
    trickle.store(config.answers == "trickle", Ordering::Relaxed);
    let mut rogue = Rogue {
        swarm,
        targets,
        heads_topic,
        metrics_topic,
        subscribed: HashMap::new(),
        answers,
        held_sync: Vec::new(),
        held_rpc: Vec::new(),
        bait: Vec::new(),
        stolen_heads: Vec::new(),
        forged_id: None,
        job: None,
        waiting_ready: false,
        after_ready: None,
        served_blocks: 0,
        served_heads: 0,
        run: config.run,
        key,
    };
    if config.bait {
        rogue.make_bait();
    }
    for (_, addr) in &rogue.targets {
        rogue.swarm.dial(addr.clone()).unwrap();
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(line)) if line.trim() != "quit" => rogue.command(line.trim()),
                _ => break,
            },
            event = rogue.swarm.select_next_some() => rogue.on_event(event),
            _ = tick.tick() => rogue.check_done(),
        }
    }
}

impl Rogue {
    fn command(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(10);
        self.job = Some(Job {
            name: name.clone(),
            ..Job::default()
        });
        match name.as_str() {
            "ready" => {
                self.waiting_ready = true;
                // Their heads, for the deepest block walks of `flood`.
                for (peer, _) in self.targets.clone() {
                    self.sync(peer, protocol::encode(&SyncRequest::Heads).unwrap());
                }
            }
            // `garbage 0`: without what only trusted peers may ask (the
            // rogue is trusted in open mode, and would be obeyed).
            "garbage" => self.garbage(n > 0),
            "flood" => self.flood(n),
            // On fresh connections: the oversized messages of `flood` made
            // the targets close the rogue's gossip streams.
            "metrics" => {
                self.reconnect();
                self.waiting_ready = true;
                self.after_ready = Some(n);
            }
            "forge" => self.forge(n),
            "forge-id" => {
                self.forged_id = line.split_whitespace().nth(1).and_then(|w| w.parse().ok());
            }
            // Reports the counters below, nothing else.
            "stats" => {}
            other => out(format!("unknown command {other}")),
        }
    }

    fn track(&mut self, id: (bool, OutboundRequestId)) {
        if let Some(job) = &mut self.job {
            job.out.insert(id);
        }
    }

    fn sync(&mut self, peer: PeerId, bytes: Vec<u8>) -> (bool, OutboundRequestId) {
        (
            false,
            self.swarm.behaviour_mut().sync.send_request(&peer, bytes),
        )
    }

    fn rpc(&mut self, peer: PeerId, bytes: Vec<u8>) -> (bool, OutboundRequestId) {
        (
            true,
            self.swarm.behaviour_mut().rpc.send_request(&peer, bytes),
        )
    }

    /// Malformed and abusive requests on both protocols, to every target.
    fn garbage(&mut self, forbidden: bool) {
        let mut rng = rand::thread_rng();
        let random_cids = |n: usize| -> Vec<Cid> {
            (0..n)
                .map(|i| raw_cid(format!("garbage {i} {}", rand::random::<u64>()).as_bytes()))
                .collect()
        };
        let valid = protocol::encode(&SyncRequest::Blocks {
            cids: random_cids(4),
            ancestors: 3,
        })
        .unwrap();
        let mut sync: Vec<Vec<u8>> = Vec::new();
        let mut rpc: Vec<Vec<u8>> = Vec::new();
        for _ in 0..20 {
            let len = rng.gen_range(0..512);
            sync.push((0..len).map(|_| rng.r#gen()).collect());
            rpc.push((0..len).map(|_| rng.r#gen()).collect());
            let cut = rng.gen_range(0..valid.len());
            sync.push(valid[..cut].to_vec());
        }
        // A future version, more CIDs than allowed, over the size limit,
        // CBOR claiming a huge array.
        let future = serde_ipld_dagcbor::to_vec(&(2u64, SyncRequest::Heads)).unwrap();
        let too_many = protocol::encode(&SyncRequest::Blocks {
            cids: random_cids(protocol::MAX_CIDS_PER_REQUEST + 44),
            ancestors: u32::MAX,
        })
        .unwrap();
        let oversized = vec![0x42u8; protocol::MAX_REQUEST_BYTES as usize + 4096];
        let huge_array = vec![
            0xa2, 0x61, b'v', 0x01, 0x64, b'b', b'o', b'd', b'y', 0x9b, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff,
        ];
        for bytes in [future, too_many, oversized, huge_array] {
            sync.push(bytes.clone());
            rpc.push(bytes);
        }
        rpc.push(
            protocol::encode(&RpcRequest::StatusMany {
                cids: random_cids(protocol::MAX_CIDS_PER_REQUEST + 1),
            })
            .unwrap(),
        );
        let targets = self.targets.clone();
        for (peer, _) in &targets {
            for bytes in &sync {
                let id = self.sync(*peer, bytes.clone());
                self.track(id);
            }
            for bytes in &rpc {
                let id = self.rpc(*peer, bytes.clone());
                self.track(id);
            }
            if !forbidden {
                continue;
            }
            // What only trusted peers may ask: remove another peer, run GC.
            for (other, _) in &targets {
                if other != peer {
                    let id = self.rpc(
                        *peer,
                        protocol::encode(&RpcRequest::SetRemoved {
                            peer: *other,
                            removed: true,
                        })
                        .unwrap(),
                    );
                    self.track(id);
                }
            }
            let id = self.rpc(*peer, protocol::encode(&RpcRequest::RepoGc).unwrap());
            self.track(id);
        }
    }

    /// `n` heads requests, `n` deepest block walks from their heads, `n`
    /// requests for 256 blocks nobody has, to every target; `n` heads
    /// announcements of blocks nobody has, and `n / 10` oversized ones.
    fn flood(&mut self, n: u64) {
        for (peer, _) in self.targets.clone() {
            for _ in 0..n {
                let id = self.sync(peer, protocol::encode(&SyncRequest::Heads).unwrap());
                self.track(id);
                let cids: Vec<Cid> = (0..protocol::MAX_CIDS_PER_REQUEST)
                    .map(|i| raw_cid(format!("flood {i} {}", rand::random::<u64>()).as_bytes()))
                    .collect();
                let id = self.sync(
                    peer,
                    protocol::encode(&SyncRequest::Blocks {
                        cids,
                        ancestors: u32::MAX,
                    })
                    .unwrap(),
                );
                self.track(id);
                if !self.stolen_heads.is_empty() {
                    let id = self.sync(
                        peer,
                        protocol::encode(&SyncRequest::Blocks {
                            cids: self.stolen_heads.clone(),
                            ancestors: u32::MAX,
                        })
                        .unwrap(),
                    );
                    self.track(id);
                }
            }
        }
        for i in 0..n {
            let heads: Vec<Cid> = (0..200)
                .map(|j| cid_of(format!("flood head {i} {j} {}", rand::random::<u64>()).as_bytes()))
                .collect();
            let msg = protocol::encode(&HeadsMessage {
                v: protocol::WIRE_VERSION,
                heads,
            })
            .unwrap();
            self.publish(true, msg);
            if i.is_multiple_of(10) {
                self.publish(true, vec![0xa2; 200 * 1024]);
            }
        }
    }

    /// `n` metrics messages about the rogue itself, each with 400 metric
    /// names never seen before, plus one it owns for the test to find.
    fn metrics(&mut self, n: u64) {
        let metric = |name: String, value: &str| MetricWire {
            name,
            value: value.to_string(),
            ttl_ms: 3_600_000,
            valid: true,
            weight: 0,
            partitionable: false,
        };
        let own = protocol::encode(&vec![metric("rogue-own".into(), "42")]).unwrap();
        self.publish(false, own);
        for i in 0..n {
            let batch: Vec<MetricWire> = (0..400)
                .map(|j| metric(format!("rogue-{i}-{j}-{}", rand::random::<u32>()), "1"))
                .collect();
            self.publish(false, protocol::encode(&batch).unwrap());
        }
    }

    /// The forger: heads and metrics gossip authored as another peer.
    fn forge(&mut self, n: u64) {
        for i in 0..n {
            let heads = vec![cid_of(format!("forged head {i}").as_bytes())];
            let msg = protocol::encode(&HeadsMessage {
                v: protocol::WIRE_VERSION,
                heads,
            })
            .unwrap();
            self.publish(true, msg);
            let metrics = vec![MetricWire {
                name: "forged-by-rogue".into(),
                value: format!("{i}"),
                ttl_ms: 3_600_000,
                valid: true,
                weight: 0,
                partitionable: false,
            }];
            self.publish(false, protocol::encode(&metrics).unwrap());
        }
    }

    fn publish(&mut self, heads: bool, data: Vec<u8>) {
        let topic = if heads {
            self.heads_topic.clone()
        } else {
            self.metrics_topic.clone()
        };
        let result = self.swarm.behaviour_mut().gossip.publish(topic, data);
        if let Some(job) = &mut self.job {
            match result {
                Ok(_) => job.published += 1,
                Err(_) => job.publish_errors += 1,
            }
        }
    }

    /// The blocks the rogue serves: a delta signed by its own (untrusted)
    /// key, one claiming a victim as author, bytes that do not hash to the
    /// CID announced, an oversized block, and CBOR that is no delta.
    fn make_bait(&mut self) {
        let [own, forged, wrong] = bait_pins(&self.run);
        let me = self.key.public().to_peer_id();
        let mut engine = Engine::open(
            MemoryStore::new(),
            Arc::new(PeerSigner::new(self.key.clone())),
            Arc::new(PeerVerifier::new(TrustedPeers::All, me)),
            Limits::default(),
        )
        .unwrap();
        let mut batch = engine.batch();
        batch
            .put(
                own.to_bytes(),
                Pin::new(own, PinOptions::default()).to_state_bytes(),
            )
            .unwrap();
        let committed = engine.commit(batch).unwrap().unwrap();
        self.bait.push((committed.cid, committed.bytes));

        let victim = self.targets[0].0;
        let delta = |cid: Cid| Block {
            v: FORMAT_VERSION,
            links: Vec::new(),
            priority: 1,
            puts: vec![Put {
                key: cid.to_bytes(),
                value: Pin::new(cid, PinOptions::default()).to_state_bytes(),
            }],
            dels: Vec::new(),
            author: Vec::new(),
            sig: Vec::new(),
        };
        let forger = ForgedSigner {
            key: self.key.clone(),
            claimed: victim.to_bytes(),
        };
        let (cid, bytes, _) = delta(forged).seal(&forger, &Limits::default()).unwrap();
        self.bait.push((cid, bytes));

        let honest = PeerSigner::new(self.key.clone());
        let (cid, _, _) = delta(wrong).seal(&honest, &Limits::default()).unwrap();
        let mut other = self.bait[0].1.clone();
        other.push(0);
        self.bait.push((cid, other));

        let huge: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        self.bait.push((cid_of(&huge), huge));
        let junk = b"\xa3\x61v\x01\x61x\x82\x01\x02\x61y\xf6".to_vec();
        self.bait.push((cid_of(&junk), junk));
    }

    /// Drops every connection and dials again: each target then sees the
    /// rogue come up and asks it for its heads.
    fn reconnect(&mut self) {
        self.subscribed.clear();
        for (peer, addr) in self.targets.clone() {
            let _ = self.swarm.disconnect_peer_id(peer);
            let _ = self.swarm.dial(addr);
        }
    }

    fn heads_answer(&self) -> Vec<u8> {
        let mut heads: Vec<Cid> = self.bait.iter().map(|(c, _)| *c).collect();
        heads.extend(&self.stolen_heads);
        protocol::encode(&SyncResponse::Heads(heads)).unwrap()
    }

    fn blocks_answer(&self, cids: &[Cid]) -> Vec<u8> {
        let blocks = cids
            .iter()
            .map(|cid| {
                let bytes = match self.bait.iter().find(|(c, _)| c == cid) {
                    Some((_, b)) => b.clone(),
                    // A real head: served with its bytes replaced.
                    None => {
                        let mut b = cid.to_bytes();
                        b.extend_from_slice(b"not the block");
                        b
                    }
                };
                (*cid, ByteBuf::from(bytes))
            })
            .collect();
        protocol::encode(&SyncResponse::Blocks(blocks)).unwrap()
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let SwarmEvent::Behaviour(event) = event else {
            return;
        };
        match event {
            BehaviourEvent::Gossip(gossipsub::Event::Subscribed { peer_id, .. }) => {
                *self.subscribed.entry(peer_id).or_default() += 1;
            }
            BehaviourEvent::Sync(request_response::Event::Message { message, .. }) => match message
            {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if self.answers == Answers::Silent {
                        if self.held_sync.len() < 10_000 {
                            self.held_sync.push(channel);
                        }
                        return;
                    }
                    let answer = match protocol::decode::<SyncRequest>(&request) {
                        Ok(SyncRequest::Heads) => {
                            self.served_heads += 1;
                            self.heads_answer()
                        }
                        Ok(SyncRequest::Blocks { cids, .. }) => {
                            self.served_blocks += 1;
                            self.blocks_answer(&cids)
                        }
                        // Honest peers only install snapshots by trusted
                        // authors; the rogue has none to offer.
                        Ok(SyncRequest::Snapshot) => {
                            protocol::encode(&SyncResponse::Snapshot(None)).unwrap()
                        }
                        Err(_) => b"\xff\xfe".to_vec(),
                    };
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, answer);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Ok(SyncResponse::Heads(heads)) = protocol::decode(&response) {
                        for h in heads {
                            if !self.stolen_heads.contains(&h) {
                                self.stolen_heads.push(h);
                            }
                        }
                    }
                    self.finished((false, request_id), true, &response);
                }
            },
            BehaviourEvent::Rpc(request_response::Event::Message { message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        if self.answers == Answers::Silent {
                            if self.held_rpc.len() < 10_000 {
                                self.held_rpc.push(channel);
                            }
                            return;
                        }
                        let answer = match protocol::decode::<RpcRequest>(&request) {
                            Ok(RpcRequest::Id) => {
                                let claimed = self.forged_id.unwrap_or(*self.swarm.local_peer_id());
                                RpcResponse::Id(RemoteId {
                                    id: claimed.to_string(),
                                    addresses: vec![
                                        "/not/an/address".into(),
                                        format!("/ip4/10.9.9.9/tcp/1/p2p/{claimed}"),
                                    ],
                                    cluster_peers: (0..50)
                                        .map(|_| PeerId::random().to_string())
                                        .collect(),
                                    peername: "rogue".into(),
                                    version: "9.9.9".into(),
                                    ipfs_id: "nope".into(),
                                    ipfs_addresses: vec!["garbage".into()],
                                })
                            }
                            _ => RpcResponse::Error("rogue".into()),
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .rpc
                            .send_response(channel, protocol::encode(&answer).unwrap());
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.finished((true, request_id), true, &response),
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                request_id, ..
            }) => self.finished((false, request_id), false, &[]),
            BehaviourEvent::Rpc(request_response::Event::OutboundFailure {
                request_id, ..
            }) => self.finished((true, request_id), false, &[]),
            _ => {}
        }
    }

    fn finished(&mut self, id: (bool, OutboundRequestId), ok: bool, response: &[u8]) {
        let Some(job) = &mut self.job else { return };
        if !job.out.remove(&id) {
            return;
        }
        if !ok {
            job.failed += 1;
            return;
        }
        job.answered += 1;
        if let Ok(answer) = protocol::decode::<RpcResponse>(response)
            && matches!(answer, RpcResponse::NotTrusted | RpcResponse::Error(_))
        {
            job.refused += 1;
        }
    }

    fn check_done(&mut self) {
        if self.waiting_ready {
            let connected = self.targets.iter().all(|(p, _)| {
                self.swarm.is_connected(p) && self.subscribed.get(p).copied().unwrap_or(0) >= 2
            });
            if !connected {
                return;
            }
            self.waiting_ready = false;
            match self.after_ready.take() {
                Some(n) => self.metrics(n),
                None => {
                    self.job = None;
                    out("done ready".into());
                    return;
                }
            }
        }
        let Some(job) = &self.job else { return };
        if !job.out.is_empty() {
            return;
        }
        let job = self.job.take().unwrap();
        out(format!(
            "done {} answered={} failed={} refused={} published={} publish_errors={} served_heads={} served_blocks={} held={}",
            job.name,
            job.answered,
            job.failed,
            job.refused,
            job.published,
            job.publish_errors,
            self.served_heads,
            self.served_blocks,
            self.held_sync.len() + self.held_rpc.len()
        ));
    }
}
