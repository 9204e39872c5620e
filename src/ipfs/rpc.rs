//! The Kubo RPC calls clients use most, answered by the embedded node:
//! `add`, `cat`, `get`, `ls`, `block/get|put|stat`, `dag/get|put|import`,
//! `pin/add|rm|ls|update`, `repo/stat|gc`, `id`, `version`,
//! `swarm/peers|connect`, with Kubo's reply shapes and errors.
//!
//! The node serves them on a loopback address of its own (like Kubo's
//! `:5001`), and the peer points the IPFS proxy there: the proxy's
//! hijacking (`add` and `pin/*` become cluster pins) and pass-through
//! work unchanged, whichever node is behind it. Other commands get a
//! Kubo-shaped 404 naming the command.

// Handlers return the error reply itself as `Err` (once per request, never
// in a loop), which is what makes `?` end a handler with Kubo's error.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use libp2p::Multiaddr;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::dag::{self, Block, DAG_CBOR, DAG_PB, RAW, cid_for};
use super::node::Node;
use super::store::{BlockStore, StoreError};
use super::unixfs::exporter::{self, ExportError, Kind};
use super::unixfs::importer::{self, AddedPath, BlockSink, Made, Tree};
use super::unixfs::{AddOptions, ImportError};
use crate::api::query::{path_decode, url_pairs};
use crate::api::serve::{ReqBody, ServeError, Server, bind_all};
use crate::types::PinMode;

/// Every reply body.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The `Version` that `version` reports: the Kubo RPC API the node
/// answers as. Kubo's CLI refuses a daemon whose version is not a Kubo
/// semver, so our own name goes in `Commit` and in `id`'s `AgentVersion`.
pub const RPC_VERSION: &str = "0.43.1";

/// The node's own name and version (`AgentVersion`, `Commit`).
pub fn version() -> String {
    format!("pincluster-embedded/{}", env!("CARGO_PKG_VERSION"))
}

/// Serves the node's RPC subset on `addrs` until `shutdown`. Returns the
/// bound addresses and the task.
pub async fn serve(
    addrs: &[Multiaddr],
    node: Node,
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Vec<Multiaddr>, tokio::task::JoinHandle<()>), ServeError> {
    serve_node(addrs, node, server, shutdown, handle).await
}

/// Serves `handle` over `node` on `addrs` until `shutdown`: the node's two
/// HTTP faces (this RPC subset and the gateway) differ only in `handle`.
pub(super) async fn serve_node<F>(
    addrs: &[Multiaddr],
    node: Node,
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    handle: fn(Arc<Node>, Request<ReqBody>) -> F,
) -> Result<(Vec<Multiaddr>, tokio::task::JoinHandle<()>), ServeError>
where
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let (listeners, bound) = bind_all(addrs).await?;
    let node = Arc::new(node);
    let answer = move |req, _remote| handle(node.clone(), req);
    Ok((bound, tokio::spawn(server.run(listeners, answer, shutdown))))
}

/// A request's query, as ordered pairs.
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean as Go's `strconv.ParseBool` reads it; a bare key is set.
    fn flag(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key).as_deref() {
            None => Ok(default),
            Some("" | "1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
            Some(other) => Err(format!(
                "Could not convert value '{other}' to type 'bool' (for option '-{key}')"
            )),
        }
    }

    fn arg(&self) -> Result<String, Response<Body>> {
        self.get("arg").ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "argument \"ipfs-path\" is required",
            )
        })
    }
}

/// Answers one RPC request (the proxy calls it in-process for `add`).
pub(crate) async fn handle(node: Arc<Node>, req: Request<ReqBody>) -> Response<Body> {
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} not allowed: the RPC API takes POST",
                req.method()
            ),
        );
    }
    let Some(cmd) = req
        .uri()
        .path()
        .strip_prefix("/api/v0/")
        .map(str::to_string)
    else {
        return error(StatusCode::NOT_FOUND, "404 page not found");
    };
    let q = Query(url_pairs(req.uri().query().unwrap_or("")));
    let node = &*node;
    let res = match cmd.as_str() {
        "add" => add(node, req, q).await,
        "cat" => cat(node, &q).await,
        "get" => get(node, &q).await,
        "ls" => ls(node, &q).await,
        "block/get" => block_get(node, &q).await,
        "block/put" => block_put(node, req, &q).await,
        "block/stat" => block_stat(node, &q).await,
        "dag/get" => dag_get(node, &q).await,
        "dag/put" => dag_put(node, req, &q).await,
        "dag/import" => dag_import(node, req, &q).await,
        "pin/add" => pin_add(node, &q).await,
        "pin/rm" => pin_rm(node, &q).await,
        "pin/ls" => pin_ls(node, &q).await,
        "pin/update" => pin_update(node, &q).await,
        "repo/stat" => repo_stat(node, &q),
        "repo/gc" => repo_gc(node).await,
        "id" => Ok(id(node).await),
        "version" => Ok(json_reply(
            StatusCode::OK,
            &json!({"Version": RPC_VERSION, "Commit": version(), "Repo": "pincluster-blocks@2",
                    "System": format!("{}/{}", std::env::consts::ARCH, std::env::consts::OS),
                    "Golang": ""}),
        )),
        "swarm/peers" => swarm_peers(node).await,
        "swarm/connect" => swarm_connect(node, &q).await,
        other => Err(error(
            StatusCode::NOT_FOUND,
            format!("{other}: not served by pincluster's embedded IPFS node"),
        )),
    };
    res.unwrap_or_else(|e| e)
}

type Reply = Result<Response<Body>, Response<Body>>;

/// Kubo's error reply.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let body = json!({"Message": message.into(), "Code": 0, "Type": "error"});
    json_reply(status, &body)
}

fn internal(e: impl std::fmt::Display) -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    let mut res = Response::new(full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body fed by a bounded channel, so a slow client slows the producer.
pub(crate) fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel::<Frame<Bytes>>(16);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
}

fn stream_error(message: &str) -> Frame<Bytes> {
    let mut trailers = hyper::HeaderMap::new();
    let clean: String = message.chars().filter(|c| !c.is_control()).collect();
    if let Ok(v) = HeaderValue::from_str(&clean) {
        trailers.insert("x-stream-error", v);
    }
    Frame::trailers(trailers)
}

fn line(value: &Value) -> Frame<Bytes> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Frame::data(bytes.into())
}

fn streamed(body: Body, content_type: &'static str) -> Response<Body> {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
    h.insert("x-stream-output", HeaderValue::from_static("1"));
    res
}

/// `<cid>[/path]` or `/ipfs/<cid>[/path]`: the CID and the path under it.
pub fn parse_path(arg: &str) -> Result<(Cid, String), String> {
    let rest = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    let rest = rest.trim_start_matches('/');
    let (first, path) = rest.split_once('/').unwrap_or((rest, ""));
    let cid = Cid::try_from(first).map_err(|e| format!("invalid path {arg:?}: {e}"))?;
    Ok((cid, path.to_string()))
}

/// Resolves `arg` to a CID in the store.
async fn resolve(node: &Node, arg: &str) -> Result<Cid, Response<Body>> {
    let (root, path) = parse_path(arg).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    if path.is_empty() {
        return Ok(root);
    }
    node.blocking(move |s| exporter::resolve(s, &root, &path))
        .await
        .map_err(internal)?
        .map_err(export_error)
}

fn export_error(e: ExportError) -> Response<Body> {
    let status = match e {
        ExportError::NoLink { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// Blocks the importer made, to the store on a thread of their own: the
/// importer reads, encodes and hashes the next chunks while the last ones
/// are written, in batches of what has queued up (up to [`WRITE_BATCH`]
/// bytes), one store write each.
struct StoreSink {
    tx: Option<std::sync::mpsc::SyncSender<Block>>,
    writer: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
}

/// Pieces of a file's body queued between the task reading the request and
/// the importer's thread. hyper hands the body over in pieces of at most a
/// few tens of KiB, a fraction of a 256 KiB leaf: with a queue of 8 the two
/// threads ran in lockstep, each waiting on the other at every leaf. 256
/// pieces (a few MiB) let the reader run ahead while a leaf is hashed.
const BODY_QUEUE: usize = 256;
/// Blocks queued for the writer thread: 4 MiB at the default chunk size.
const WRITE_QUEUE: usize = 16;
/// Bytes per store write, at most (more when one block is larger).
const WRITE_BATCH: usize = 4 << 20;

impl StoreSink {
    fn start(store: BlockStore) -> Result<StoreSink, ImportError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Block>(WRITE_QUEUE);
        let writer = std::thread::Builder::new()
            .name("ipfs-add-writer".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while let Ok(first) = rx.recv() {
                    let mut bytes = first.data().len();
                    batch.push(first);
                    while bytes < WRITE_BATCH {
                        let Ok(next) = rx.try_recv() else { break };
                        bytes += next.data().len();
                        batch.push(next);
                    }
                    store.put_hashed(std::mem::take(&mut batch))?;
                }
                Ok(())
            })
            .map_err(|e| ImportError::Store(format!("starting the writer thread: {e}")))?;
        Ok(StoreSink {
            tx: Some(tx),
            writer: Some(writer),
        })
    }
}

impl BlockSink for StoreSink {
    fn put(&mut self, block: Block) -> Result<(), ImportError> {
        let sent = self.tx.as_ref().map(|tx| tx.send(block));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer stopped: its error says why.
            _ => self
                .finish()
                .and(Err(ImportError::Store("the writer stopped".into()))),
        }
    }

    fn finish(&mut self) -> Result<(), ImportError> {
        self.tx = None;
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        writer
            .join()
            .map_err(|_| ImportError::Store("the writer thread panicked".into()))?
            .map_err(|e| ImportError::Store(e.to_string()))
    }
}

/// An async byte stream read as `std::io::Read` on a blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn added_line(name: &str, made: &Made) -> Value {
    json!({"Name": name, "Hash": made.cid.to_string(), "Size": made.tsize.to_string()})
}

/// The parts of a `multipart/form-data` request body (how every IPFS
/// client sends files), or why the request has none.
fn multipart(req: Request<ReqBody>) -> Result<multer::Multipart<'static>, String> {
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or("expected a multipart/form-data body")?;
    Ok(multer::Multipart::new(
        req.into_body().into_data_stream(),
        boundary,
    ))
}

async fn add(node: &Node, req: Request<ReqBody>, q: Query) -> Reply {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let opts = AddOptions::from_query(|k| q.get(k), |k, d| q.flag(k, d))
        .map_err(|e| bad(e.to_string()))?;
    let pin = q.flag("pin", true).map_err(bad)?;
    let only_hash = q.flag("only-hash", false).map_err(bad)?;
    let wrap = q.flag("wrap-with-directory", false).map_err(bad)?;
    let mut multipart = multipart(req).map_err(|e| bad(format!("add: {e}")))?;
    let node = node.clone();
    let (tx, reply) = channel_body();
    tokio::spawn(async move {
        // No gc between the first block written and the roots pinned.
        let hold = node.store().hold_gc().await;
        let mut tree = Tree::default();
        let mut loose: Vec<AddedPath> = Vec::new();
        let result: Result<(), String> = async {
            let mut sink: Box<dyn BlockSink + Send> = if only_hash {
                Box::new(importer::Discard)
            } else {
                Box::new(StoreSink::start(node.store().clone()).map_err(|e| e.to_string())?)
            };
            while let Some(mut field) = multipart.next_field().await.map_err(|e| e.to_string())? {
                let name = field.file_name().map(path_decode).unwrap_or_default();
                let is_dir = field
                    .content_type()
                    .is_some_and(|m| m.essence_str() == "application/x-directory");
                if is_dir {
                    tree.add_dir(&name).map_err(|e| e.to_string())?;
                    continue;
                }
                let (chunks_tx, chunks_rx) = mpsc::channel(BODY_QUEUE);
                let reader = ChannelReader {
                    rx: chunks_rx,
                    current: Bytes::new(),
                };
                let o = opts.clone();
                let import = tokio::task::spawn_blocking(move || {
                    let made = importer::import_file(reader, &o, &mut *sink);
                    (sink, made)
                });
                while let Some(chunk) = field.chunk().await.transpose() {
                    let chunk = chunk.map_err(|e| e.to_string());
                    let failed = chunk.is_err();
                    if chunks_tx.send(chunk).await.is_err() || failed {
                        break;
                    }
                }
                drop(chunks_tx);
                let (back, made) = import.await.map_err(|e| e.to_string())?;
                sink = back;
                let made = made.map_err(|e| e.to_string())?;
                let shown = if name.is_empty() {
                    made.cid.to_string()
                } else {
                    name.clone()
                };
                if tx.send(line(&added_line(&shown, &made))).await.is_err() {
                    return Err("client went away".into());
                }
                if name.is_empty() {
                    loose.push(AddedPath { path: shown, made });
                } else {
                    tree.add_file(&name, made).map_err(|e| e.to_string())?;
                }
            }
            let o = opts.clone();
            let (mut roots, dirs) = tokio::task::spawn_blocking(move || {
                let done = tree.finish(wrap, &o, &mut *sink)?;
                // Every block in the store before any root is pinned.
                sink.finish()?;
                Ok::<_, ImportError>(done)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            for d in &dirs {
                let _ = tx.send(line(&added_line(&d.path, &d.made))).await;
            }
            roots.extend(loose);
            if only_hash {
                return Ok(());
            }
            let cids: Vec<Cid> = roots.iter().map(|r| r.made.cid).collect();
            node.blocking(move |s| {
                if pin {
                    for cid in &cids {
                        s.pin_added(cid, &hold)?;
                    }
                }
                // Durable once `add` answers, blocks and pins alike: one
                // sync for the whole add (Kubo syncs its repo per batch).
                s.persist()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(stream_error(&e)).await;
        }
    });
    let mut res = streamed(reply, "application/json");
    res.headers_mut()
        .insert("x-chunked-output", HeaderValue::from_static("1"));
    Ok(res)
}

/// Streams the file bytes `offset..offset+length` of `cid` from a
/// blocking reader.
fn stream_file(node: &Node, cid: Cid, offset: u64, length: u64) -> Body {
    let (tx, body) = channel_body();
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || {
        let mut send = |b: Bytes| tx.blocking_send(Frame::data(b)).is_ok();
        if let Err(e) = exporter::read(&store, &cid, offset, length, &mut send) {
            let _ = tx.blocking_send(stream_error(&e.to_string()));
        }
    });
    body
}

async fn cat(node: &Node, q: &Query) -> Reply {
    let cid = resolve(node, &q.arg()?).await?;
    let num = |k: &str| -> Result<Option<u64>, Response<Body>> {
        q.get(k)
            .map(|v| v.parse::<u64>())
            .transpose()
            .map_err(|_| error(StatusCode::BAD_REQUEST, format!("invalid {k}")))
    };
    let offset = num("offset")?.unwrap_or(0);
    let length = num("length")?.unwrap_or(u64::MAX);
    let kind = node
        .blocking(move |s| exporter::kind(s, &cid))
        .await
        .map_err(internal)?
        .map_err(export_error)?;
    let size = match kind {
        Kind::File(size) => size,
        Kind::Dir => return Err(internal("this dag node is a directory")),
        Kind::Symlink => return Err(internal("cannot cat a symlink")),
    };
    let mut res = streamed(stream_file(node, cid, offset, length), "text/plain");
    let shown = size.saturating_sub(offset).min(length);
    if let Ok(v) = HeaderValue::from_str(&shown.to_string()) {
        res.headers_mut().insert("x-content-length", v);
    }
    Ok(res)
}

async fn ls(node: &Node, q: &Query) -> Reply {
    let mut objects = Vec::new();
    for arg in q.all("arg") {
        let cid = resolve(node, &arg).await?;
        let links = node
            .blocking(move |s| -> Result<Vec<Value>, ExportError> {
                if exporter::kind(s, &cid)? != Kind::Dir {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                for e in exporter::list(s, &cid)? {
                    let (kind, size) = match exporter::kind(s, &e.cid) {
                        Ok(Kind::Dir) => (1, 0),
                        Ok(Kind::File(size)) => (2, size),
                        Ok(Kind::Symlink) => (4, 0),
                        Err(_) => (0, e.tsize),
                    };
                    out.push(json!({"Name": e.name, "Hash": e.cid.to_string(),
                        "Size": size, "Type": kind, "Target": ""}));
                }
                Ok(out)
            })
            .await
            .map_err(internal)?
            .map_err(export_error)?;
        objects.push(json!({"Hash": arg, "Links": links}));
    }
    if objects.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "argument \"ipfs-path\" is required",
        ));
    }
    Ok(json_reply(StatusCode::OK, &json!({"Objects": objects})))
}

/// `get`: a tar archive of the file or folder at `arg`.
async fn get(node: &Node, q: &Query) -> Reply {
    let arg = q.arg()?;
    let cid = resolve(node, &arg).await?;
    let top = arg
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("")
        .to_string();
    let top = if top.is_empty() { cid.to_string() } else { top };
    let (tx, body) = channel_body();
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || {
        let mut send = |b: Bytes| tx.blocking_send(Frame::data(b)).is_ok();
        let result = tar_entry(&store, &cid, &top, &mut send);
        match result {
            Ok(true) => {
                send(Bytes::from(vec![0u8; 1024]));
            }
            Ok(false) => {}
            Err(e) => {
                let _ = tx.blocking_send(stream_error(&e.to_string()));
            }
        }
    });
    Ok(streamed(body, "application/x-tar"))
}

/// Writes `cid` as `path` (and, for a folder, everything under it) as tar
/// entries. False when the reader went away.
fn tar_entry(
    store: &super::store::BlockStore,
    cid: &Cid,
    path: &str,
    send: &mut dyn FnMut(Bytes) -> bool,
) -> Result<bool, ExportError> {
    match exporter::kind(store, cid)? {
        Kind::Dir => {
            if !send(tar_header(path, 0, b'5')) {
                return Ok(false);
            }
            for e in exporter::list(store, cid)? {
                if !tar_entry(store, &e.cid, &format!("{path}/{}", e.name), send)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Kind::Symlink => Ok(true),
        Kind::File(size) => {
            if !send(tar_header(path, size, b'0')) {
                return Ok(false);
            }
            let mut open = true;
            exporter::read(store, cid, 0, u64::MAX, &mut |b| {
                open = send(b);
                open
            })?;
            let pad = (512 - (size % 512) as usize) % 512;
            Ok(open && (pad == 0 || send(Bytes::from(vec![0u8; pad]))))
        }
    }
}

/// A ustar header; names over 100 bytes use the prefix field (up to 255
/// in all), longer ones are cut (as a tar reader would refuse them).
fn tar_header(path: &str, size: u64, kind: u8) -> Bytes {
    let mut h = [0u8; 512];
    let (prefix, name) = match path.len() {
        0..=100 => ("", path),
        _ => match path[..path.len().min(156)].rfind('/') {
            Some(i) if path.len() - i - 1 <= 100 => (&path[..i], &path[i + 1..]),
            _ => ("", &path[path.len() - 100..]),
        },
    };
    let put = |h: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
        let n = v.len().min(len);
        h[at..at + n].copy_from_slice(&v[..n]);
    };
    put(&mut h, 0, 100, name.as_bytes());
    let mode: &[u8] = if kind == b'5' {
        b"0000755\0"
    } else {
        b"0000644\0"
    };
    put(&mut h, 100, 8, mode);
    put(&mut h, 108, 8, b"0000000\0");
    put(&mut h, 116, 8, b"0000000\0");
    put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, 12, b"00000000000\0");
    h[156] = kind;
    put(&mut h, 257, 6, b"ustar\0");
    put(&mut h, 263, 2, b"00");
    put(&mut h, 345, 155, prefix.as_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    Bytes::copy_from_slice(&h)
}

async fn block_bytes(node: &Node, q: &Query) -> Result<(Cid, Bytes), Response<Body>> {
    let cid = resolve(node, &q.arg()?).await?;
    let data = node
        .blocking(move |s| s.get(&cid))
        .await
        .map_err(internal)?
        .map_err(internal)?
        .ok_or_else(|| internal(format!("block {cid} not found in the local store")))?;
    Ok((cid, data))
}

async fn block_get(node: &Node, q: &Query) -> Reply {
    let (_, data) = block_bytes(node, q).await?;
    let mut res = Response::new(full(data));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
}

async fn block_stat(node: &Node, q: &Query) -> Reply {
    let (cid, data) = block_bytes(node, q).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({"Key": cid.to_string(), "Size": data.len()}),
    ))
}

/// The bytes of each file part of a multipart body, each bounded by
/// [`dag::MAX_BLOCK`].
async fn parts(req: Request<ReqBody>) -> Result<Vec<Bytes>, Response<Body>> {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let mut multipart = multipart(req).map_err(bad)?;
    let mut out = Vec::new();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(e.to_string()))?
    {
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| bad(e.to_string()))? {
            if data.len() + chunk.len() > dag::MAX_BLOCK {
                return Err(bad(format!(
                    "produced block is over {} bytes",
                    dag::MAX_BLOCK
                )));
            }
            data.extend_from_slice(&chunk);
        }
        out.push(Bytes::from(data));
    }
    Ok(out)
}

fn codec_code(name: &str) -> Option<u64> {
    Some(match name {
        "raw" => RAW,
        "dag-pb" | "protobuf" => DAG_PB,
        "dag-cbor" | "cbor" => DAG_CBOR,
        "dag-json" => dag::DAG_JSON,
        _ => return None,
    })
}

async fn block_put(node: &Node, req: Request<ReqBody>, q: &Query) -> Reply {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let pin = q.flag("pin", false).map_err(bad)?;
    if let Some(mh) = q.get("mhtype").filter(|m| m != "sha2-256") {
        return Err(bad(format!(
            "mhtype {mh} is not supported by the embedded node"
        )));
    }
    let (codec, v0) = match (q.get("cid-codec"), q.get("format").as_deref()) {
        (Some(c), _) => (
            codec_code(&c).ok_or_else(|| bad(format!("unknown cid-codec {c}")))?,
            false,
        ),
        (None, Some("v0")) => (DAG_PB, true),
        (None, Some(f)) => (
            codec_code(f).ok_or_else(|| bad(format!("unknown format {f}")))?,
            false,
        ),
        (None, None) => (RAW, false),
    };
    let blocks = parts(req).await?;
    let (tx, body) = channel_body();
    for data in blocks {
        let cid = cid_for(codec, &data, v0);
        node.store().put(&cid, &data).map_err(internal)?;
        if pin {
            node.pin(&cid, PinMode::Recursive).await.map_err(internal)?;
        }
        let _ = tx.try_send(line(&json!({"Key": cid.to_string(), "Size": data.len()})));
    }
    drop(tx);
    Ok(streamed(body, "application/json"))
}

async fn dag_put(node: &Node, req: Request<ReqBody>, q: &Query) -> Reply {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let input = q.get("input-codec").unwrap_or_else(|| "dag-json".into());
    let store_codec = q.get("store-codec").unwrap_or_else(|| "dag-cbor".into());
    let pin = q.flag("pin", false).map_err(bad)?;
    let blocks = parts(req).await?;
    let (tx, body) = channel_body();
    for data in blocks {
        let value = match input.as_str() {
            "dag-json" | "json" => {
                let json: Value =
                    serde_json::from_slice(&data).map_err(|e| bad(format!("dag-json: {e}")))?;
                super::dagjson::from_json(&json).map_err(bad)?
            }
            "dag-cbor" => {
                serde_ipld_dagcbor::from_slice(&data).map_err(|e| bad(format!("dag-cbor: {e}")))?
            }
            other => return Err(bad(format!("input-codec {other} is not supported"))),
        };
        let (bytes, codec) = match store_codec.as_str() {
            "dag-cbor" => (
                serde_ipld_dagcbor::to_vec(&value).map_err(|e| bad(e.to_string()))?,
                DAG_CBOR,
            ),
            "dag-json" => (
                serde_json::to_vec(&super::dagjson::to_json(&value))
                    .map_err(|e| bad(e.to_string()))?,
                dag::DAG_JSON,
            ),
            other => return Err(bad(format!("store-codec {other} is not supported"))),
        };
        let cid = cid_for(codec, &bytes, false);
        node.store().put(&cid, &bytes).map_err(internal)?;
        if pin {
            node.pin(&cid, PinMode::Recursive).await.map_err(internal)?;
        }
        let _ = tx.try_send(line(&json!({"Cid": {"/": cid.to_string()}})));
    }
    drop(tx);
    Ok(streamed(body, "application/json"))
}

/// `dag/import`: every CAR part's blocks, checked against their CIDs and
/// stored; the roots pinned unless `pin-roots=false`.
async fn dag_import(node: &Node, req: Request<ReqBody>, q: &Query) -> Reply {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let pin_roots = q.flag("pin-roots", true).map_err(bad)?;
    let mut multipart = multipart(req).map_err(bad)?;
    let _hold = node.store().hold_gc().await;
    let mut roots = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(e.to_string()))?
    {
        let mut car = crate::api::car::CarReader::new(field)
            .await
            .map_err(|e| bad(e.to_string()))?;
        roots.push(car.root());
        while let Some(block) = car.next_block().await.map_err(|e| bad(e.to_string()))? {
            node.store()
                .put(&block.cid, &block.data)
                .map_err(internal)?;
        }
    }
    let mut out = Vec::new();
    for root in roots {
        let message = if pin_roots {
            let missing = node
                .blocking(move |s| s.try_pin(&root, PinMode::Recursive))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            if missing.is_empty() {
                String::new()
            } else {
                format!("{} blocks of the DAG are missing", missing.len())
            }
        } else {
            String::new()
        };
        let l = json!({"Root": {"Cid": {"/": root.to_string()}, "PinErrorMsg": message}});
        out.extend(serde_json::to_vec(&l).unwrap_or_default());
        out.push(b'\n');
    }
    Ok(streamed(full(out), "application/json"))
}

async fn dag_get(node: &Node, q: &Query) -> Reply {
    let (cid, data) = block_bytes(node, q).await?;
    let value = match cid.codec() {
        DAG_CBOR => {
            let v: ipld_core::ipld::Ipld =
                serde_ipld_dagcbor::from_slice(&data).map_err(internal)?;
            super::dagjson::to_json(&v)
        }
        dag::DAG_JSON => serde_json::from_slice(&data).map_err(internal)?,
        DAG_PB => super::dagjson::pb_to_json(&data).map_err(internal)?,
        RAW => json!({"/": {"bytes": super::dagjson::b64(&data)}}),
        other => {
            return Err(internal(format!(
                "codec {other:#x} cannot be shown as dag-json"
            )));
        }
    };
    Ok(json_reply(StatusCode::OK, &value))
}

async fn pin_add(node: &Node, q: &Query) -> Reply {
    let recursive = q
        .flag("recursive", true)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let mode = if recursive {
        PinMode::Recursive
    } else {
        PinMode::Direct
    };
    let mut pinned = Vec::new();
    for arg in q.all("arg") {
        let cid = resolve(node, &arg).await?;
        node.pin(&cid, mode)
            .await
            .map_err(|e| internal(format!("pin: {e}")))?;
        pinned.push(cid.to_string());
    }
    Ok(json_reply(StatusCode::OK, &json!({"Pins": pinned})))
}

async fn pin_rm(node: &Node, q: &Query) -> Reply {
    let mut removed = Vec::new();
    for arg in q.all("arg") {
        let cid = resolve(node, &arg).await?;
        if !node.store().unpin(&cid).map_err(internal)? {
            return Err(internal("not pinned or pinned indirectly"));
        }
        removed.push(cid.to_string());
    }
    Ok(json_reply(StatusCode::OK, &json!({"Pins": removed})))
}

async fn pin_update(node: &Node, q: &Query) -> Reply {
    let args = q.all("arg");
    let [from, to] = args.as_slice() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "pin/update takes two arguments: from and to",
        ));
    };
    let unpin = q
        .flag("unpin", true)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let (from, to) = (resolve(node, from).await?, resolve(node, to).await?);
    if node.store().pin_of(&from).map_err(internal)? != Some(PinMode::Recursive) {
        return Err(internal("'from' cid was not recursively pinned already"));
    }
    node.pin(&to, PinMode::Recursive).await.map_err(internal)?;
    if unpin && from != to {
        node.store().unpin(&from).map_err(internal)?;
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({"Pins": [from.to_string(), to.to_string()]}),
    ))
}

async fn pin_ls(node: &Node, q: &Query) -> Reply {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let kind = q.get("type").unwrap_or_else(|| "all".into());
    if !matches!(kind.as_str(), "all" | "recursive" | "direct" | "indirect") {
        return Err(bad(format!(
            "invalid type '{kind}', must be one of {{direct, indirect, recursive, all}}"
        )));
    }
    let stream = q.flag("stream", false).map_err(bad)?;
    let mut found: Vec<(Cid, String)> = Vec::new();
    let args = q.all("arg");
    if args.is_empty() {
        let mut after = None;
        loop {
            let page = node
                .store()
                .pins_page(after.as_ref(), 1024)
                .map_err(internal)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (cid, mode) in page {
                if kind == "all" || kind == mode.as_str() {
                    found.push((cid, mode.as_str().to_string()));
                }
            }
        }
    } else {
        for arg in args {
            let cid = resolve(node, &arg).await?;
            let direct = node.store().pin_of(&cid).map_err(internal)?;
            let how = match direct {
                Some(m) if kind == "all" || kind == m.as_str() => Some(m.as_str().to_string()),
                _ if kind == "all" || kind == "indirect" => node
                    .blocking(move |s| s.pinned_indirectly(&cid))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?
                    .map(|root| format!("indirect through {root}")),
                _ => None,
            };
            match how {
                Some(h) => found.push((cid, h)),
                None => return Err(internal(format!("path '{arg}' is not pinned"))),
            }
        }
    }
    if stream {
        let mut out = Vec::new();
        for (cid, how) in found {
            out.extend(
                serde_json::to_vec(&json!({"Cid": cid.to_string(), "Type": how, "Name": ""}))
                    .unwrap_or_default(),
            );
            out.push(b'\n');
        }
        let mut res = Response::new(full(out));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(res);
    }
    let keys: serde_json::Map<String, Value> = found
        .into_iter()
        .map(|(cid, how)| (cid.to_string(), json!({"Type": how, "Name": ""})))
        .collect();
    Ok(json_reply(StatusCode::OK, &json!({"Keys": keys})))
}

fn repo_stat(node: &Node, q: &Query) -> Reply {
    let s = node.store().stat();
    let size_only = q
        .flag("size-only", false)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let v = if size_only {
        json!({"RepoSize": s.repo_size, "StorageMax": s.storage_max})
    } else {
        json!({"RepoSize": s.repo_size, "StorageMax": s.storage_max, "NumObjects": s.num_objects,
               "RepoPath": s.repo_path, "Version": s.version})
    };
    Ok(json_reply(StatusCode::OK, &v))
}

async fn repo_gc(node: &Node) -> Reply {
    let removed = node
        .blocking(|s| s.gc())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let mut out = Vec::new();
    for cid in removed {
        out.extend(serde_json::to_vec(&json!({"Key": {"/": cid.to_string()}})).unwrap_or_default());
        out.push(b'\n');
    }
    Ok(streamed(full(out), "application/json"))
}

async fn swarm_peers(node: &Node) -> Reply {
    let peers = match node.swarm() {
        Some(swarm) => swarm.peers().await.map_err(internal)?,
        None => Vec::new(),
    };
    let peers: Vec<_> = peers
        .iter()
        .map(|(p, a)| json!({"Peer": p.to_string(), "Addr": a.to_string()}))
        .collect();
    Ok(json_reply(StatusCode::OK, &json!({ "Peers": peers })))
}

async fn swarm_connect(node: &Node, q: &Query) -> Reply {
    let Some(swarm) = node.swarm() else {
        return Err(internal("swarm/connect: the node runs no public swarm"));
    };
    let mut done = Vec::new();
    for arg in q.all("arg") {
        let addr: libp2p::Multiaddr = arg.parse().map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("swarm/connect: bad multiaddr {arg}: {e}"),
            )
        })?;
        let peer = swarm.connect(addr).await.map_err(internal)?;
        done.push(format!("connect {peer} success"));
    }
    Ok(json_reply(StatusCode::OK, &json!({ "Strings": done })))
}

async fn id(node: &Node) -> Response<Body> {
    let peer = node.id();
    let addresses: Vec<String> = match node.swarm() {
        Some(swarm) => swarm
            .listen_addrs()
            .await
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect(),
        None => Vec::new(),
    };
    // An Ed25519 peer id inlines its public key (identity multihash).
    let mh = peer.as_ref();
    let key = (mh.code() == 0).then(|| super::dagjson::b64_std(mh.digest()));
    json_reply(
        StatusCode::OK,
        &json!({"ID": peer.to_string(), "PublicKey": key.unwrap_or_default(), "Addresses": addresses,
                "AgentVersion": version(), "Protocols": []}),
    )
}
