//! The REST API (warp), wire-compatible with ipfs-cluster 1.1.6: the same
//! paths, JSON shapes, NDJSON streams (204 when empty) and error bodies
//! (`{"code": n, "message": "..."}`). A thin adapter over
//! [`Cluster`]: handlers parse the request, call it, and print its answer
//! ([`reply::answer`] maps a [`crate::cluster::ClusterError`] to its status
//! code).
//!
//! Every endpoint of the reference's catalogue but those other components
//! add (`/health/graph`, `/ipfs/gc`, the UI), plus `/pins/sync`. Files:
//! `server` (the HTTP layer: auth, CORS, limits, the stream trailer),
//! `auth`, `cors`, `reply` (JSON, errors, NDJSON), `add`, `paths` (pin by
//! IPFS path), `peers` (add and remove), `sync`; the rest is here.

mod add;
mod auth;
mod cors;
mod paths;
mod peers;
mod reply;
mod server;
mod sync;
mod ui;

use std::path::Path;

use bytes::Bytes;
use libp2p::Multiaddr;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;

use crate::api::query::url_pairs;
use crate::api::serve::{ServeError, Server, Timeouts, bind_all, tls};
use crate::cluster::{Cluster, Which};
use crate::config::RestApiConfig;
use crate::state::PinJsonWriter;
use crate::status::StatusFilter;
use crate::types::{self, Pin, PinOptions, PinTypeFilter, Version};
use reply::{ApiReply, error, json, ndjson};

// For the fuzzers (`crate::fuzz`): the parsers of a request's path and body.
pub(crate) use add::{parse_params as add_params, read_car_upload};
pub(crate) use paths::path_of;

/// Binds every `http_listen_multiaddress` of `config` and serves the
/// API on all of them until `shutdown` resolves, over HTTPS when `ssl_cert_file` and
/// `ssl_key_file` are set (relative to the configuration folder `dir`).
/// Returns the bound addresses (port 0 resolved), in the configured
/// order, and the server task.
pub async fn serve(
    config: &RestApiConfig,
    dir: &Path,
    ctx: Cluster,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Vec<Multiaddr>, tokio::task::JoinHandle<()>), ServeError> {
    // Validation makes them go together.
    let tls = match (&config.ssl_cert_file, &config.ssl_key_file) {
        (Some(cert), Some(key)) => Some(tls::acceptor(dir, cert, key)?),
        _ => None,
    };
    let server = Server {
        name: "REST API",
        timeouts: Timeouts::new(
            config.read_timeout.0,
            config.read_header_timeout.0,
            config.write_timeout.0,
            config.idle_timeout.0,
        ),
        max_header_bytes: config.max_header_bytes,
        tls,
    };
    let (listeners, bound) = bind_all(&config.http_listen_multiaddress).await?;
    let task = tokio::spawn(server::run(
        listeners,
        server,
        config.clone(),
        ctx,
        shutdown,
    ));
    Ok((bound, task))
}

fn with_ctx(
    ctx: Cluster,
) -> impl Filter<Extract = (Cluster,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

fn query()
-> impl Filter<Extract = (Vec<(String, String)>,), Error = std::convert::Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| url_pairs(&raw))
}

/// Every route, with the reference's not-found and wrong-method answers.
pub fn routes(
    ctx: Cluster,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let id = warp::path!("id")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|ctx: Cluster| async move { json(StatusCode::OK, &ctx.id().await) });
    let version = warp::path!("version").and(warp::get()).map(|| {
        json(
            StatusCode::OK,
            &Version {
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        )
    });
    let peers = warp::path!("peers")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(get_peers);
    let pin = warp::path!("pins" / String)
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(post_pin);
    let unpin = warp::path!("pins" / String)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(delete_pin);
    let allocations = warp::path!("allocations")
        .and(warp::get())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(get_allocations);
    let allocation = warp::path!("allocations" / String)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(get_allocation);
    let metric_names = warp::path!("monitor" / "metrics")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Cluster| json(StatusCode::OK, &ctx.monitor().names()));
    let metrics = warp::path!("monitor" / "metrics" / String)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|name: String, ctx: Cluster| {
            json(
                StatusCode::OK,
                &ctx.monitor().metrics(&name, chrono::Utc::now()),
            )
        });
    let alerts = warp::path!("health" / "alerts")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Cluster| json(StatusCode::OK, &ctx.monitor().alerts()));
    let recover_all = warp::path!("pins" / "recover")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(|ctx: Cluster| async move { reply::stream(ctx.recover_all().await).await });
    let all_statuses = warp::path!("pins")
        .and(warp::get())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(get_pins);
    let status = warp::path!("pins" / String)
        .and(warp::get())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(get_status);
    let recover = warp::path!("pins" / String / "recover")
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(post_recover);
    let graph = warp::path!("health" / "graph")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|ctx: Cluster| async move { json(StatusCode::OK, &ctx.health_graph().await) });
    let ipfs_gc = warp::path!("ipfs" / "gc")
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(|query: Vec<(String, String)>, ctx: Cluster| async move {
            json(StatusCode::OK, &ctx.repo_gc(local_only(&query)).await)
        });
    let health = warp::path!("health")
        .and(warp::get())
        .map(reply::no_content);
    let bandwidth = warp::path!("health" / "bandwidth")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Cluster| json(StatusCode::OK, &ctx.network().bandwidth()));
    let add_peer = warp::path!("peers")
        .and(warp::post())
        .and(warp::body::bytes())
        .and(with_ctx(ctx.clone()))
        .then(peers::add);
    let remove_peer = warp::path!("peers" / String)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(peers::remove);
    let sync_all = warp::path!("pins" / "sync")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(sync::all);
    let sync_one = warp::path!("pins" / String / "sync")
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(sync::one);
    let ipfs_path = || {
        warp::path("pins")
            .and(warp::path::tail())
            .and_then(|tail: warp::path::Tail| async move {
                paths::path_of(tail.as_str()).ok_or_else(warp::reject::not_found)
            })
    };
    let pin_path = ipfs_path()
        .and(warp::post())
        .and(query())
        .and(with_ctx(ctx.clone()))
        .then(paths::post);
    let unpin_path = ipfs_path()
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(paths::delete);
    // The reference answers GET on a path route as an unknown path (404
    // JSON), not as a known path with another method (405).
    let get_path = ipfs_path()
        .and(warp::get())
        .map(|_| error(StatusCode::NOT_FOUND, "not found".to_string()));
    let add = warp::path!("add")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(query())
        .and(warp::body::stream())
        .and(with_ctx(ctx.clone()))
        .then(add::add);
    // Each route boxed: a long chain of `or`s otherwise makes a type so
    // deep that compiling it takes many minutes.
    let all: Vec<BoxedFilter<(ApiReply,)>> = vec![
        sync_all.boxed(),
        add.boxed(),
        health.boxed(),
        bandwidth.boxed(),
        add_peer.boxed(),
        remove_peer.boxed(),
        sync_one.boxed(),
        pin_path.boxed(),
        unpin_path.boxed(),
        get_path.boxed(),
        id.boxed(),
        version.boxed(),
        peers.boxed(),
        pin.boxed(),
        unpin.boxed(),
        allocations.boxed(),
        allocation.boxed(),
        all_statuses.boxed(),
        status.boxed(),
        recover.boxed(),
        metric_names.boxed(),
        metrics.boxed(),
        alerts.boxed(),
        graph.boxed(),
        ipfs_gc.boxed(),
        ui::routes().boxed(),
    ];
    all.into_iter()
        .fold(recover_all.boxed(), |acc, route| {
            acc.or(route).unify().boxed()
        })
        .recover(reply::rejection)
        .unify()
}

async fn get_peers(ctx: Cluster) -> ApiReply {
    let infos = ctx.peers().await;
    ndjson(futures::stream::iter(infos.into_iter().map(Ok))).await
}

async fn post_pin(raw_cid: String, query: Vec<(String, String)>, ctx: Cluster) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let options = match PinOptions::from_query(&query) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut pin = Pin::new(cid, options);
    // The reference's CID route always pins recursively (its quirk, kept so
    // clients see the same thing).
    pin.max_depth = -1;
    reply::answer(ctx.pin(pin).await)
}

async fn delete_pin(raw_cid: String, ctx: Cluster) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    reply::answer(ctx.unpin(cid).await)
}

async fn get_allocations(query: Vec<(String, String)>, ctx: Cluster) -> ApiReply {
    let filter = query
        .iter()
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let wanted = match PinTypeFilter::parse(filter) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // The stored pins in batches; the decoding and JSON encoding, most of
    // the work, run on two blocking threads at once, batch order kept.
    // Every channel is bounded: the pinset is streamed, never loaded whole.
    let raw = crate::state::pages(ctx.state().list_stored(), STORED_BATCH);
    let buffers = reply::ChunkBuffers::default();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let streaming = ctx.streaming_listing();
    tokio::spawn(async move {
        use futures::StreamExt;
        let _streaming = streaming;
        let encoded = tokio_stream::wrappers::ReceiverStream::new(raw)
            .map(|values| {
                let buffers = buffers.clone();
                async move {
                    tokio::task::spawn_blocking(move || encode_pins(values, wanted, &buffers))
                        .await
                        .unwrap_or_else(|e| (Bytes::new(), Some(e.to_string())))
                }
            })
            .buffered(ENCODERS);
        futures::pin_mut!(encoded);
        while let Some((lines, failed)) = encoded.next().await {
            // What was read goes first, then the error.
            if !lines.is_empty() && tx.send(Ok(lines)).await.is_err() {
                return; // the client went away
            }
            if let Some(e) = failed {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    });
    reply::ndjson_lines(tokio_stream::wrappers::ReceiverStream::new(rx)).await
}

/// Stored pins per batch handed to an encoder.
const STORED_BATCH: usize = 1024;
/// Batches decoded and encoded at once.
const ENCODERS: usize = 2;

/// NDJSON lines of the stored pins of `wanted` types, up to the first
/// that does not read, and that error; written into one of `buffers`.
fn encode_pins(
    values: Vec<Result<Bytes, crate::state::StateError>>,
    wanted: PinTypeFilter,
    buffers: &reply::ChunkBuffers,
) -> (Bytes, Option<String>) {
    // A pin with three allocations and a name is about 550 bytes of JSON:
    // sized so that a batch rarely grows (and copies) its buffer.
    let mut lines = buffers.take(values.len() * 640);
    let failed = write_pins(values, wanted, &mut lines);
    (buffers.chunk(lines), failed)
}

/// Appends the lines of `encode_pins` to `lines`.
fn write_pins(
    values: Vec<Result<Bytes, crate::state::StateError>>,
    wanted: PinTypeFilter,
    lines: &mut Vec<u8>,
) -> Option<String> {
    let mut writer = PinJsonWriter::default();
    for value in values {
        let written = value.map_err(|e| e.to_string()).and_then(|v| {
            writer
                .write_line(&v, wanted, lines)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            return Some(e);
        }
    }
    None
}

async fn get_allocation(raw_cid: String, ctx: Cluster) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    reply::answer(ctx.get(&cid))
}

/// `local=true` exactly (anything else is false, as in the reference).
fn local_only(query: &[(String, String)]) -> bool {
    query.iter().any(|(k, v)| k == "local" && v == "true")
}

/// `GET /pins`: the status of every pin (or of `cids=`), on this peer and,
/// unless `local=true`, on every peer, streamed page by page. `filter`
/// keeps the peers whose status matches, and the CIDs that keep at least
/// one.
async fn get_pins(query: Vec<(String, String)>, ctx: Cluster) -> ApiReply {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let filter = match StatusFilter::parse(&param("filter")) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut explicit = Vec::new();
    for raw in param("cids")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        match types::decode_cid(raw) {
            Ok(cid) => explicit.push(cid),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let filtering = !param("filter").trim().is_empty() && explicit.is_empty();
    let which = if explicit.is_empty() {
        Which::All
    } else {
        Which::Only(explicit)
    };
    let statuses = ctx.statuses(which, filtering.then_some(filter), local_only(&query));
    reply::stream(statuses).await
}

async fn get_status(raw_cid: String, query: Vec<(String, String)>, ctx: Cluster) -> ApiReply {
    status_reply(&raw_cid, &query, &ctx, false).await
}

async fn post_recover(raw_cid: String, query: Vec<(String, String)>, ctx: Cluster) -> ApiReply {
    status_reply(&raw_cid, &query, &ctx, true).await
}

async fn status_reply(
    raw_cid: &str,
    query: &[(String, String)],
    ctx: &Cluster,
    recover: bool,
) -> ApiReply {
    let cid = match types::decode_cid(raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    reply::answer(ctx.status(cid, local_only(query), recover).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_plus_signs() {
        assert_eq!(
            paths::path_of("ipfs/bafkqaaa/dir/a+b%20c").as_deref(),
            Some("/ipfs/bafkqaaa/dir/a+b c")
        );
    }
}
