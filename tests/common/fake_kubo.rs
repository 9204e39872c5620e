//! A fake Kubo RPC daemon on 127.0.0.1: an in-memory pinset and block
//! store behind the `/api/v0` commands the cluster peer uses, answering in
//! Kubo's shapes (streamed `pin/add` progress, streamed `pin/ls`, JSON error
//! bodies, plain-text 404s), or in js-ipfs's with [`Quirks::js_ipfs`].
//!
//! Knobs for tests: per-CID pin behaviour (hang, stall, fail, slow
//! progress), holding streamed `pin/ls` listings, failing the next N requests, going down and coming back on
//! the same port, and a count and query log of the requests per command.
//!
//! Clients connect to a small TCP relay in front of the HTTP server, so
//! [`FakeKubo::stop`] can refuse new connections *and* cut live ones: a
//! daemon that is down does not keep answering on pooled connections.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use pincluster::ipfsconn::PinMode;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use warp::Filter;
use warp::Reply;
use warp::http::{Method, StatusCode};
use warp::hyper::body::Bytes;

/// How requests logged per command are kept, at most.
const QUERY_LOG: usize = 1000;
/// Pins per chunk of a streamed `pin/ls`.
const LS_CHUNK: usize = 1000;
/// How often a stalled `pin/add` repeats its unchanged progress. Kubo does
/// it every 500 ms; shorter here so short test timeouts see several.
const STALL_TICK: Duration = Duration::from_millis(50);

/// Where js-ipfs answers differently from Kubo (see
/// `shared/real-ipfs/README.md` §2.3). Each can be switched on alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// `repo/stat` numbers as strings.
    pub numbers_as_strings: bool,
    /// CIDv1 printed in base58btc.
    pub base58_cids: bool,
    /// `pin/update` answers 404 (JSON, as js-ipfs).
    pub no_pin_update: bool,
    /// `pin/add?progress=true` sends only the final `{"Pins":...}`.
    pub no_progress: bool,
    /// `pin/ls` ignores `stream=true` and answers one `{"Keys":...}`.
    pub one_object_pin_ls: bool,
}

impl Quirks {
    /// Everything js-ipfs 0.66 does differently.
    pub fn js_ipfs() -> Self {
        Quirks {
            numbers_as_strings: true,
            base58_cids: true,
            no_pin_update: true,
            no_progress: true,
            one_object_pin_ls: true,
        }
    }
}

/// What `pin/add` does for a CID, instead of pinning at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinBehaviour {
    /// Headers, then nothing, ever (content nobody has, js-ipfs style).
    Hang,
    /// Kubo fetching nothing: `{"Progress":0,"Bytes":0}` repeated forever.
    Stall,
    /// A 500 with Kubo's error body.
    Fail,
    /// `steps` progress lines, one every `every`, then the pin.
    Slow { steps: u64, every: Duration },
}

#[derive(Debug)]
struct State {
    peer_id: PeerId,
    quirks: Quirks,
    addresses: Vec<String>,
    pins: HashMap<Cid, PinMode>,
    blocks: HashMap<Cid, Vec<u8>>,
    behaviours: HashMap<Cid, PinBehaviour>,
    names: HashMap<String, Cid>,
    swarm_peers: Vec<PeerId>,
    connected: Vec<Multiaddr>,
    fail_next: usize,
    repo_stat_delay: Option<Duration>,
    /// `true`: a streamed `pin/ls` sends its headers, then nothing until
    /// set back to `false`.
    pin_ls_held: watch::Sender<bool>,
    counts: HashMap<String, usize>,
    queries: HashMap<String, VecDeque<String>>,
}

/// A running fake daemon. Dropping it stops it.
#[derive(Debug)]
pub struct FakeKubo {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    backend: SocketAddr,
    server: JoinHandle<()>,
    relay: Option<Relay>,
}

#[derive(Debug)]
struct Relay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FakeKubo {
    /// Starts a Kubo-flavoured fake on a free port.
    pub async fn start() -> FakeKubo {
        FakeKubo::start_with(Quirks::default()).await
    }

    /// Starts a fake with the given js-ipfs quirks.
    pub async fn start_with(quirks: Quirks) -> FakeKubo {
        let peer_id = PeerId::random();
        let state = Arc::new(Mutex::new(State {
            peer_id,
            quirks,
            addresses: vec![
                format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer_id}"),
                format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer_id}"),
            ],
            pins: HashMap::new(),
            blocks: HashMap::new(),
            behaviours: HashMap::new(),
            names: HashMap::new(),
            swarm_peers: Vec::new(),
            connected: Vec::new(),
            fail_next: 0,
            repo_stat_delay: None,
            pin_ls_held: watch::channel(false).0,
            counts: HashMap::new(),
            queries: HashMap::new(),
        }));
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux;
        // warp offers no other way to set it, and without it hyper's
        // separate head and body writes meet delayed ACKs: 40 ms a request.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_nodelay(true).expect("nodelay");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind fake kubo");
        let listener = socket.listen(1024).expect("listen");
        let backend = listener.local_addr().expect("fake kubo address");
        let server = tokio::spawn(warp::serve(routes(state.clone())).incoming(listener).run());
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = front.local_addr().expect("relay address");
        let relay = Some(Relay::spawn(front, backend));
        FakeKubo {
            state,
            addr,
            backend,
            server,
            relay,
        }
    }

    /// The RPC API address, for `node_multiaddress`.
    pub fn multiaddr(&self) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{}", self.addr.port())
            .parse()
            .expect("a valid multiaddr")
    }

    /// The daemon's peer id, as `id` reports it.
    pub fn peer_id(&self) -> PeerId {
        self.lock().peer_id
    }

    /// Refuses new connections and cuts the open ones, as a daemon that
    /// died. The pinset is kept.
    pub async fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            let _ = relay.stop.send(true);
            let _ = relay.task.await;
        }
    }

    /// Serves again on the same port after [`FakeKubo::stop`].
    pub async fn restart(&mut self) {
        self.stop().await;
        let front = TcpListener::bind(self.addr).await.expect("rebind relay");
        self.relay = Some(Relay::spawn(front, self.backend));
    }

    /// Switches js-ipfs quirks on or off.
    pub fn set_quirks(&self, quirks: Quirks) {
        self.lock().quirks = quirks;
    }

    /// Every `repo/stat` answers only after `delay` (a daemon busy with a
    /// large repository).
    pub fn set_repo_stat_delay(&self, delay: Duration) {
        self.lock().repo_stat_delay = Some(delay);
    }

    /// Streamed `pin/ls` listings, those running and those to come, send
    /// no pin until [`FakeKubo::release_pin_ls`] (a daemon slow to list a
    /// large pinset).
    pub fn hold_pin_ls(&self) {
        self.lock().pin_ls_held.send_replace(true);
    }

    /// Lets held `pin/ls` listings go on.
    pub fn release_pin_ls(&self) {
        self.lock().pin_ls_held.send_replace(false);
    }

    /// The next `n` requests fail with a 500.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// What `pin/add` of `cid` does from now on.
    pub fn set_pin_behaviour(&self, cid: Cid, behaviour: PinBehaviour) {
        self.lock().behaviours.insert(cid, behaviour);
    }

    /// `pin/add` of `cid` pins at once again.
    pub fn clear_pin_behaviour(&self, cid: &Cid) {
        self.lock().behaviours.remove(cid);
    }

    /// The addresses `id` reports, verbatim (bad ones included).
    pub fn set_addresses(&self, addresses: Vec<String>) {
        self.lock().addresses = addresses;
    }

    /// A peer `swarm/peers` lists.
    pub fn add_swarm_peer(&self, peer: PeerId) {
        self.lock().swarm_peers.push(peer);
    }

    /// The addresses `swarm/connect` was asked for, in order.
    pub fn connected(&self) -> Vec<Multiaddr> {
        self.lock().connected.clone()
    }

    /// Makes `resolve?arg=<path>` answer `/ipfs/<cid>`.
    pub fn set_resolve(&self, path: &str, cid: Cid) {
        self.lock().names.insert(path.to_string(), cid);
    }

    /// Stores a raw block and returns its CIDv1 (raw, sha2-256).
    pub fn add_block(&self, data: &[u8]) -> Cid {
        let cid = cid_of(0x55, data);
        self.lock().blocks.insert(cid, data.to_vec());
        cid
    }

    /// The bytes of a stored block.
    pub fn block(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.lock().blocks.get(cid).cloned()
    }

    /// Pins without going through HTTP (for big pinsets).
    pub fn add_pins(&self, pins: impl IntoIterator<Item = (Cid, PinMode)>) {
        self.lock().pins.extend(pins);
    }

    /// The pinned CIDs, sorted.
    pub fn pinned(&self) -> Vec<Cid> {
        let mut cids: Vec<Cid> = self.lock().pins.keys().copied().collect();
        cids.sort();
        cids
    }

    /// How `cid` is pinned.
    pub fn pin_mode(&self, cid: &Cid) -> Option<PinMode> {
        self.lock().pins.get(cid).copied()
    }

    /// How many requests `cmd` (e.g. `pin/add`) received.
    pub fn requests(&self, cmd: &str) -> usize {
        self.lock().counts.get(cmd).copied().unwrap_or(0)
    }

    /// The raw query strings of the last requests to `cmd`, oldest first.
    pub fn queries(&self, cmd: &str) -> Vec<String> {
        self.lock()
            .queries
            .get(cmd)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake kubo state")
    }
}

impl Drop for FakeKubo {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            let _ = relay.stop.send(true);
            relay.task.abort();
        }
        self.server.abort();
    }
}

impl Relay {
    /// Relays every connection on `front` to `backend` until stopped.
    fn spawn(front: TcpListener, backend: SocketAddr) -> Relay {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = front.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let mut client = client;
                    // A relay that lets Nagle hold back small writes meets the
                    // peer's delayed ACKs: 40 ms per request. Real daemons
                    // answer without it.
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Relay { stop, task }
    }
}

/// The CIDv1 of `data` with `codec`, hashed with sha2-256.
fn cid_of(codec: u64, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("a 32-byte digest");
    Cid::new_v1(codec, mh)
}

fn routes(
    state: Arc<Mutex<State>>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::bytes())
        .map(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  content_type: Option<String>,
                  body: Bytes| {
                let req = Request {
                    query: pincluster::api::query::url_pairs(&query),
                    content_type,
                    body: &body,
                };
                handle(&state, method, path.as_str(), &query, req)
            },
        )
}

struct Request<'a> {
    query: Vec<(String, String)>,
    content_type: Option<String>,
    body: &'a [u8],
}

impl Request<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn args(&self) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == "arg")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        self.get(key).map_or(default, |v| v == "true")
    }
}

type Response = warp::reply::Response;

fn handle(
    state: &Arc<Mutex<State>>,
    method: Method,
    path: &str,
    raw_query: &str,
    req: Request<'_>,
) -> Response {
    let Some(cmd) = path.strip_prefix("/api/v0/") else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let mut st = state.lock().expect("fake kubo state");
    *st.counts.entry(cmd.to_string()).or_default() += 1;
    let log = st.queries.entry(cmd.to_string()).or_default();
    if log.len() == QUERY_LOG {
        log.pop_front();
    }
    log.push_back(raw_query.to_string());
    if method != Method::POST {
        return warp::reply::with_status(
            warp::reply::with_header(
                "405 - Method Not Allowed",
                "content-type",
                "text/plain; charset=utf-8",
            ),
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .into_response();
    }
    if st.fail_next > 0 {
        st.fail_next -= 1;
        return error(StatusCode::INTERNAL_SERVER_ERROR, "fake failure");
    }
    let mut res = match cmd {
        "id" => id(&st),
        "version" => version(&st),
        "pin/add" => pin_add(&mut st, Arc::downgrade(state), &req),
        "pin/rm" => pin_rm(&mut st, &req),
        "pin/ls" => pin_ls(&st, &req),
        "pin/update" => pin_update(&mut st, &req),
        "repo/stat" => match st.repo_stat_delay {
            None => ok(repo_stat(&st, &req)),
            Some(delay) => {
                let answer = repo_stat(&st, &req).to_string().into_bytes();
                streamed(move |tx| async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Ok(answer)).await;
                })
            }
        },
        "repo/gc" => repo_gc(&mut st),
        "block/put" => block_put(&mut st, &req),
        "swarm/peers" => swarm_peers(&st),
        "swarm/connect" => swarm_connect(&mut st, &req),
        "resolve" => resolve(&st, &req),
        _ => return not_found(&st),
    };
    // Kubo announces the trailer on every reply of a known command, errors
    // included (only its command parser's plain-text 400s go without).
    if res
        .headers()
        .get("content-type")
        .is_some_and(|ct| ct == "application/json")
    {
        res.headers_mut()
            .insert("trailer", "X-Stream-Error".parse().expect("header"));
    }
    res
}

fn not_found(st: &State) -> Response {
    if st.quirks.no_pin_update {
        json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"Message": "Not Found", "Code": 3, "Type": "error"}),
        )
    } else {
        text(StatusCode::NOT_FOUND, "404 page not found\n")
    }
}

fn id(st: &State) -> Response {
    let agent = if st.quirks.base58_cids {
        "js-ipfs/0.18.1"
    } else {
        "kubo/0.43.1/"
    };
    ok(serde_json::json!({
        "ID": st.peer_id.to_string(),
        "PublicKey": "",
        "Addresses": st.addresses,
        "AgentVersion": agent,
        "Protocols": ["/ipfs/bitswap/1.2.0", "/ipfs/id/1.0.0"],
    }))
}

fn version(st: &State) -> Response {
    if st.quirks.base58_cids {
        ok(serde_json::json!({"Version": "0.18.1", "Commit": "", "Repo": "12"}))
    } else {
        ok(serde_json::json!({
            "Version": "0.43.1", "Commit": "", "Repo": "18",
            "System": "amd64/linux", "Golang": "go1.26.8",
        }))
    }
}

fn pin_add(st: &mut State, handle: Weak<Mutex<State>>, req: &Request<'_>) -> Response {
    let Some(cid) = arg_cid(req) else {
        return bad_arg(req);
    };
    let mode = if req.flag("recursive", true) {
        PinMode::Recursive
    } else {
        PinMode::Direct
    };
    if mode == PinMode::Direct && st.pins.get(&cid) == Some(&PinMode::Recursive) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("pin: {cid} already pinned recursively"),
        );
    }
    let progress = req.flag("progress", false) && !st.quirks.no_progress;
    let done = format!("{{\"Pins\":[\"{}\"]}}\n", show_cid(st, &cid));
    match st.behaviours.get(&cid).copied() {
        Some(PinBehaviour::Fail) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("pin: block was not found locally (offline): ipld: could not find {cid}"),
        ),
        Some(PinBehaviour::Hang) => streamed(|tx| async move { tx.closed().await }),
        Some(PinBehaviour::Stall) => streamed(move |tx| async move {
            loop {
                if progress
                    && tx
                        .send(Ok(b"{\"Progress\":0,\"Bytes\":0}\n".to_vec()))
                        .await
                        .is_err()
                {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(STALL_TICK) => {}
                    _ = tx.closed() => return,
                }
            }
        }),
        Some(PinBehaviour::Slow { steps, every }) => {
            // Pinned once the last step is reached, as if fetched.
            streamed(move |tx| async move {
                for step in 1..=steps {
                    tokio::time::sleep(every).await;
                    if progress {
                        let line = format!("{{\"Progress\":{step},\"Bytes\":{}}}\n", step * 1024);
                        if tx.send(Ok(line.into_bytes())).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(state) = handle.upgrade() {
                    state
                        .lock()
                        .expect("fake kubo state")
                        .pins
                        .insert(cid, mode);
                }
                let _ = tx.send(Ok(done.into_bytes())).await;
            })
        }
        None => {
            st.pins.insert(cid, mode);
            let mut body = String::new();
            if progress {
                body.push_str("{\"Progress\":1,\"Bytes\":10}\n{\"Progress\":2,\"Bytes\":20}\n");
            }
            body.push_str(&done);
            streamed(move |tx| async move {
                let _ = tx.send(Ok(body.into_bytes())).await;
            })
        }
    }
}

fn pin_rm(st: &mut State, req: &Request<'_>) -> Response {
    let Some(cid) = arg_cid(req) else {
        return bad_arg(req);
    };
    if st.pins.remove(&cid).is_none() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not pinned or pinned indirectly",
        );
    }
    ok(serde_json::json!({"Pins": [show_cid(st, &cid)]}))
}

fn pin_ls(st: &State, req: &Request<'_>) -> Response {
    let kind = req.get("type").unwrap_or("all");
    let wanted = |mode: PinMode| kind == "all" || kind == mode.as_str();
    let mut pins: Vec<(Cid, PinMode)> = Vec::new();
    if let Some(arg) = req.args().first() {
        let Ok(cid) = Cid::try_from(*arg) else {
            return bad_arg(req);
        };
        match st.pins.get(&cid) {
            Some(mode) if wanted(*mode) => pins.push((cid, *mode)),
            _ => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("path '{arg}' is not pinned"),
                );
            }
        }
    } else {
        pins.extend(
            st.pins
                .iter()
                .filter(|(_, m)| wanted(**m))
                .map(|(c, m)| (*c, *m)),
        );
    }
    let base58 = st.quirks.base58_cids;
    if st.quirks.one_object_pin_ls || !req.flag("stream", false) {
        // Kubo names every entry (`""` when unnamed); js-ipfs has no names.
        let keys: serde_json::Map<String, serde_json::Value> = pins
            .iter()
            .map(|(c, m)| {
                let entry = if base58 {
                    serde_json::json!({"Type": m.as_str()})
                } else {
                    serde_json::json!({"Name": "", "Type": m.as_str()})
                };
                (fmt_cid(base58, c), entry)
            })
            .collect();
        return ok(serde_json::json!({ "Keys": keys }));
    }
    // Streamed, Kubo leaves an empty `Name` out.
    let mut held = st.pin_ls_held.subscribe();
    streamed(move |tx| async move {
        let _ = held.wait_for(|held| !held).await;
        for chunk in pins.chunks(LS_CHUNK) {
            let mut out = String::with_capacity(chunk.len() * 100);
            for (cid, mode) in chunk {
                out.push_str(&format!(
                    "{{\"Cid\":\"{}\",\"Type\":\"{}\"}}\n",
                    fmt_cid(base58, cid),
                    mode.as_str()
                ));
            }
            if tx.send(Ok(out.into_bytes())).await.is_err() {
                return;
            }
        }
    })
}

fn pin_update(st: &mut State, req: &Request<'_>) -> Response {
    if st.quirks.no_pin_update {
        return not_found(st);
    }
    let args = req.args();
    let (Some(from), Some(to)) = (
        args.first().and_then(|a| Cid::try_from(*a).ok()),
        args.get(1).and_then(|a| Cid::try_from(*a).ok()),
    ) else {
        return bad_arg(req);
    };
    if st.pins.get(&from) != Some(&PinMode::Recursive) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "'from' cid was not recursively pinned already",
        );
    }
    st.pins.insert(to, PinMode::Recursive);
    if req.flag("unpin", true) {
        st.pins.remove(&from);
    }
    ok(serde_json::json!({"Pins": [show_cid(st, &from), show_cid(st, &to)]}))
}

fn repo_stat(st: &State, req: &Request<'_>) -> serde_json::Value {
    let size: usize = st.blocks.values().map(Vec::len).sum();
    if st.quirks.numbers_as_strings {
        serde_json::json!({
            "NumObjects": st.blocks.len().to_string(),
            "RepoSize": size.to_string(),
            "RepoPath": "/fake",
            "Version": "12",
            "StorageMax": "9007199254740991",
        })
    } else if req.flag("size-only", false) {
        // Kubo skips counting objects and leaves the rest empty.
        serde_json::json!({
            "RepoSize": size, "StorageMax": 10_000_000_000u64,
            "NumObjects": 0, "RepoPath": "", "Version": "",
        })
    } else {
        serde_json::json!({
            "RepoSize": size, "StorageMax": 10_000_000_000u64,
            "NumObjects": st.blocks.len(), "RepoPath": "/fake", "Version": "fs-repo@18",
        })
    }
}

fn repo_gc(st: &mut State) -> Response {
    let unpinned: Vec<Cid> = st
        .blocks
        .keys()
        .filter(|c| !st.pins.contains_key(c))
        .copied()
        .collect();
    let mut body = String::new();
    for cid in &unpinned {
        st.blocks.remove(cid);
        body.push_str(&format!("{{\"Key\":{{\"/\":\"{cid}\"}}}}\n"));
    }
    streamed(move |tx| async move {
        let _ = tx.send(Ok(body.into_bytes())).await;
    })
}

fn block_put(st: &mut State, req: &Request<'_>) -> Response {
    let Some(data) = req
        .content_type
        .as_deref()
        .and_then(|ct| first_part(ct, req.body))
    else {
        return error(StatusCode::BAD_REQUEST, "file argument 'data' is required");
    };
    if req.get("mhtype").is_some_and(|m| m != "sha2-256") {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "fake: only sha2-256");
    }
    let codec_name = match (req.get("format"), req.get("cid-codec")) {
        (Some(f), _) => Some(f),
        // js-ipfs ignores `cid-codec` and makes dag-pb CIDv0.
        (None, _) if st.quirks.base58_cids => Some("v0"),
        (None, c) => Some(c.unwrap_or("raw")),
    };
    let cid = match codec_name {
        Some("v0") => {
            let v1 = cid_of(0x70, data);
            Cid::new_v0(*v1.hash()).expect("a sha2-256 multihash")
        }
        Some("raw") => cid_of(0x55, data),
        Some("dag-pb") => cid_of(0x70, data),
        Some("dag-cbor") => cid_of(0x71, data),
        Some("dag-json") => cid_of(0x0129, data),
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, "fake: unknown codec"),
    };
    st.blocks.insert(cid, data.to_vec());
    ok(serde_json::json!({"Key": show_cid(st, &cid), "Size": data.len()}))
}

fn swarm_peers(st: &State) -> Response {
    if st.swarm_peers.is_empty() {
        return ok(serde_json::json!({ "Peers": null }));
    }
    let peers: Vec<serde_json::Value> = st
        .swarm_peers
        .iter()
        .map(|p| serde_json::json!({"Addr": "/ip4/127.0.0.1/tcp/4001", "Peer": p.to_string(), "Direction": 1}))
        .collect();
    ok(serde_json::json!({ "Peers": peers }))
}

fn swarm_connect(st: &mut State, req: &Request<'_>) -> Response {
    let Some(addr) = req.args().first().and_then(|a| a.parse::<Multiaddr>().ok()) else {
        return bad_arg(req);
    };
    st.connected.push(addr.clone());
    ok(serde_json::json!({"Strings": [format!("connect {addr} success")]}))
}

fn resolve(st: &State, req: &Request<'_>) -> Response {
    let Some(path) = req.args().first().map(|a| a.to_string()) else {
        return bad_arg(req);
    };
    match st.names.get(&path) {
        Some(cid) => ok(serde_json::json!({"Path": format!("/ipfs/{}", show_cid(st, cid))})),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not resolve name: {path}"),
        ),
    }
}

fn show_cid(st: &State, cid: &Cid) -> String {
    fmt_cid(st.quirks.base58_cids, cid)
}

fn fmt_cid(base58: bool, cid: &Cid) -> String {
    if base58 && cid.version() == cid::Version::V1 {
        cid.to_string_of_base(cid::multibase::Base::Base58Btc)
            .expect("a CIDv1 in base58")
    } else {
        cid.to_string()
    }
}

fn arg_cid(req: &Request<'_>) -> Option<Cid> {
    req.args().first().and_then(|a| Cid::try_from(*a).ok())
}

/// A reply streamed from a task: `produce` writes chunks until done or
/// until the client goes away (the channel closes).
fn streamed<F, Fut>(produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Result<Vec<u8>, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(produce(tx));
    let mut res =
        warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    let headers = res.headers_mut();
    headers.insert("content-type", "application/json".parse().expect("header"));
    headers.insert("x-chunked-output", "1".parse().expect("header"));
    headers.insert("trailer", "X-Stream-Error".parse().expect("header"));
    res
}

fn ok(value: serde_json::Value) -> Response {
    json(StatusCode::OK, value)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(&value), status).into_response()
}

fn text(status: StatusCode, body: &'static str) -> Response {
    warp::reply::with_status(body, status).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        serde_json::json!({"Message": message, "Code": 0, "Type": "error"}),
    )
}

/// Kubo's answer to a missing argument (a plain-text 400, from its
/// command parser) or to one it cannot parse (a 500 with its error JSON).
fn bad_arg(req: &Request<'_>) -> Response {
    match req.args().first() {
        None => warp::reply::with_status(
            warp::reply::with_header(
                "argument \"ipfs-path\" is required\n",
                "content-type",
                "text/plain; charset=utf-8",
            ),
            StatusCode::BAD_REQUEST,
        )
        .into_response(),
        Some(arg) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("invalid path {arg:?}: path does not have enough components"),
        ),
    }
}

/// The body of the first part of a `multipart/form-data` request.
fn first_part<'a>(content_type: &str, body: &'a [u8]) -> Option<&'a [u8]> {
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let open = format!("--{boundary}\r\n");
    let start = find(body, open.as_bytes())? + open.len();
    let headers_end = find(&body[start..], b"\r\n\r\n")? + start + 4;
    let close = format!("\r\n--{boundary}");
    let end = find(&body[headers_end..], close.as_bytes())? + headers_end;
    Some(&body[headers_end..end])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
