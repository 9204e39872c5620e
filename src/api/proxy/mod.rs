//! The IPFS proxy (ipfs-cluster's `api/ipfsproxy`): a Kubo RPC API that
//! any IPFS client can be pointed at. Most requests go through to the IPFS
//! daemon unchanged, streamed both ways ([`forward`]); a few are hijacked
//! and become cluster operations:
//!
//! | path (POST, GET, PUT) | what happens |
//! |---|---|
//! | `add` | the daemon adds (unpinned), every root becomes a cluster pin ([`put`]) |
//! | `pin/add`, `pin/rm`, `pin/update`, `pin/ls` | the cluster pinset ([`pins`]) |
//! | `repo/stat`, `repo/gc` | every peer's daemon, over the sync protocol ([`repo`]) |
//! | `block/put`, `dag/put` with `pin=true` | stored by the daemon, pinned in the cluster ([`put`]) |
//!
//! `pin/*` also accept the argument as the last path segment
//! (`/api/v0/pin/add/<cid>`). Hijacked replies carry Kubo's shapes and
//! errors (`{"Message","Code","Type"}`), the CORS headers the daemon would
//! send to the same origin, the headers configured for extraction, and
//! `Server: ipfs-cluster/ipfsproxy/<version>`.
//!
//! Served with hyper directly: a reverse proxy wants the request and the
//! response bodies as streams, untouched, which is what hyper hands out.

mod forward;
mod headers;
mod pins;
mod put;
mod repo;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use libp2p::Multiaddr;
use tokio::sync::mpsc;

use crate::api::query::{path_decode, url_pairs};
use crate::api::serve::{ReqBody, Server};
use crate::api::serve::{ServeError, bind_all};
use crate::cluster::ipfs::RawIpfsApi;
use crate::cluster::{Cluster, ClusterError};
use crate::ipfs::node::Node;

pub use headers::HeaderConfig;

/// The `Server` header of hijacked replies (the reference's, with the
/// version of ipfs-cluster we are compatible with).
const SERVER: &str = "ipfs-cluster/ipfsproxy/1.1.6";

/// Every reply body: streamed, possibly with trailers.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What the handlers need: the cluster, which every hijacked command
/// calls, and the daemon requests are forwarded to (`node_multiaddress`),
/// which `add` calls in this process when it is the embedded node.
#[derive(Debug, Clone)]
pub(super) struct Ctx {
    cluster: Cluster,
    daemon: RawIpfsApi,
    node: Option<Arc<Node>>,
}

/// Binds every address of `addrs` and serves `cluster` (requests not
/// hijacked go to `daemon`; `add` to `node` itself when the daemon is this
/// peer's embedded node) with `server` (timeouts,
/// header limit) until `shutdown` resolves; in-flight requests then get a
/// few seconds to finish. Returns the bound addresses (port 0 resolved),
/// in order, and the task.
pub async fn serve(
    addrs: &[Multiaddr],
    cluster: Cluster,
    daemon: RawIpfsApi,
    node: Option<Node>,
    headers: HeaderConfig,
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Vec<Multiaddr>, tokio::task::JoinHandle<()>), ServeError> {
    let (listeners, bound) = bind_all(addrs).await?;
    let ctx = Ctx {
        cluster,
        daemon,
        node: node.map(Arc::new),
    };
    let state = Arc::new(headers::Shared::new(ctx, headers));
    let answer = move |req, remote| handle(state.clone(), req, remote);
    let task = tokio::spawn(server.run(listeners, answer, shutdown));
    Ok((bound, task))
}

/// The hijacked commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hijack {
    PinAdd,
    PinRm,
    PinLs,
    PinUpdate,
    Add,
    RepoStat,
    RepoGc,
    BlockPut,
    DagPut,
}

/// Which hijacked command `path` names, and the argument carried as its
/// last segment (`/api/v0/pin/add/<arg>`).
pub(crate) fn route(path: &str) -> Option<(Hijack, Option<String>)> {
    let cmd = path.strip_prefix("/api/v0/")?;
    let exact = match cmd {
        "pin/add" => Some(Hijack::PinAdd),
        "pin/rm" => Some(Hijack::PinRm),
        "pin/ls" => Some(Hijack::PinLs),
        "pin/update" => Some(Hijack::PinUpdate),
        "add" => Some(Hijack::Add),
        "repo/stat" => Some(Hijack::RepoStat),
        "repo/gc" => Some(Hijack::RepoGc),
        "block/put" => Some(Hijack::BlockPut),
        "dag/put" => Some(Hijack::DagPut),
        _ => None,
    };
    if let Some(h) = exact {
        return Some((h, None));
    }
    let (prefix, arg) = cmd.rsplit_once('/')?;
    let h = match prefix {
        "pin/add" => Hijack::PinAdd,
        "pin/rm" => Hijack::PinRm,
        "pin/ls" => Hijack::PinLs,
        _ => return None,
    };
    (!arg.is_empty()).then(|| (h, Some(path_decode(arg))))
}

async fn handle(
    state: Arc<headers::Shared>,
    req: Request<ReqBody>,
    remote: Option<SocketAddr>,
) -> Response<Body> {
    let hijackable = matches!(*req.method(), Method::GET | Method::POST | Method::PUT);
    let routed = if hijackable {
        route(req.uri().path())
    } else {
        None
    };
    let Some((cmd, path_arg)) = routed else {
        return forward::passthrough(&state.ctx.daemon, req, remote).await;
    };
    let mut query = url_pairs(req.uri().query().unwrap_or(""));
    if let Some(arg) = path_arg {
        tracing::warn!(
            path = req.uri().path(),
            "non-standard IPFS API use: argument in the path"
        );
        query.retain(|(k, _)| k != "arg");
        query.push(("arg".into(), arg));
    }
    // block/put and dag/put stay the daemon's business unless they pin.
    if matches!(cmd, Hijack::BlockPut | Hijack::DagPut) {
        match flag(&query, "pin", false) {
            Ok(true) => {}
            Ok(false) => return forward::passthrough(&state.ctx.daemon, req, remote).await,
            Err(e) => return kubo_error(StatusCode::BAD_REQUEST, e),
        }
    }
    let cors = state.cors(&req).await;
    let extracted = state.extracted().await;
    let ctx = &state.ctx;
    let mut res = match cmd {
        Hijack::PinAdd => pins::add(ctx, &query).await,
        Hijack::PinRm => pins::rm(ctx, &query).await,
        Hijack::PinLs => pins::ls(ctx, &query).await,
        Hijack::PinUpdate => pins::update(ctx, &query).await,
        Hijack::Add => put::add(ctx, req, query).await,
        Hijack::BlockPut => put::block_put(ctx, req).await,
        Hijack::DagPut => put::dag_put(ctx, req).await,
        Hijack::RepoStat => repo::stat(ctx).await,
        Hijack::RepoGc => repo::gc(ctx, &query).await,
    };
    let h = res.headers_mut();
    for (name, value) in extracted.iter().chain(cors.iter()) {
        h.insert(name.clone(), value.clone());
    }
    h.insert(header::SERVER, HeaderValue::from_static(SERVER));
    res
}

/// A boolean option as Kubo reads it (Go's `strconv.ParseBool`); a key
/// given without a value is set. Absent: `default`.
fn flag(query: &[(String, String)], key: &str, default: bool) -> Result<bool, String> {
    let Some((_, v)) = query.iter().find(|(k, _)| k == key) else {
        return Ok(default);
    };
    match v.as_str() {
        "" | "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!(
            "Could not convert value '{other}' to type 'bool' (for option '-{key}')"
        )),
    }
}

/// Every value of `key`, in order.
fn values<'a>(query: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    query
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Kubo's error reply: `{"Message","Code","Type":"error"}`. `Code` is
/// always 0 (go-ipfs-cmds' `ErrNormal`): the reference builds every error
/// of its hijacked endpoints that way, client errors included.
fn kubo_error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({"Message": message.into(), "Code": 0, "Type": "error"});
    json_reply(status, &body)
}

/// A failed cluster operation as the reference's proxy answers it: a 500
/// Kubo error with the error's text, whatever the cause.
fn cluster_error(e: &ClusterError) -> Response<Body> {
    kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A JSON value and a newline, as Kubo ends every reply.
fn json_reply<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
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

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streamed reply: what the producer sends on the channel, as it comes,
/// ending with the trailers it sends (if the client accepts trailers).
/// Bounded, so a slow client slows the producer down.
fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel::<Frame<Bytes>>(16);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
}

/// NDJSON reply headers as the reference sends them for `pin/ls`,
/// `repo/gc`, `block/put` and `dag/put`: the `X-Stream-Error` trailer
/// announced, and no `X-Chunked-Output` (only `add` sends that).
fn streaming(status: StatusCode, body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
    res
}

/// One NDJSON line.
fn line<T: serde::Serialize>(value: &T) -> Frame<Bytes> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Frame::data(bytes.into())
}

/// The `X-Stream-Error` trailer (errors that happened after the status
/// was sent).
fn stream_error(message: &str) -> Frame<Bytes> {
    let mut trailers = hyper::HeaderMap::new();
    let clean: String = message.chars().filter(|c| !c.is_control()).collect();
    if let Ok(v) = HeaderValue::from_str(&clean) {
        trailers.insert("x-stream-error", v);
    }
    Frame::trailers(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_exact_paths_and_path_arguments() {
        assert_eq!(route("/api/v0/add"), Some((Hijack::Add, None)));
        assert_eq!(route("/api/v0/repo/gc"), Some((Hijack::RepoGc, None)));
        assert_eq!(
            route("/api/v0/pin/add/QmX"),
            Some((Hijack::PinAdd, Some("QmX".into())))
        );
        assert_eq!(
            route("/api/v0/pin/ls/a%2Fb"),
            Some((Hijack::PinLs, Some("a/b".into())))
        );
        assert_eq!(route("/api/v0/pin/update/QmX"), None);
        assert_eq!(route("/api/v0/add/"), None);
        assert_eq!(route("/api/v0/pin/add/"), None);
        assert_eq!(route("/api/v0/cat"), None);
        assert_eq!(route("/api/v0/pin/verify"), None);
        assert_eq!(route("/pin/add"), None);
    }

    #[test]
    fn booleans_parse_as_kubo_parses_them() {
        let q = |v: &str| vec![("pin".to_string(), v.to_string())];
        for v in ["true", "True", "TRUE", "t", "T", "1", ""] {
            assert_eq!(flag(&q(v), "pin", false), Ok(true), "{v}");
        }
        for v in ["false", "False", "FALSE", "f", "F", "0"] {
            assert_eq!(flag(&q(v), "pin", true), Ok(false), "{v}");
        }
        assert!(flag(&q("yes"), "pin", true).is_err());
        assert_eq!(flag(&[], "pin", true), Ok(true));
    }
}
