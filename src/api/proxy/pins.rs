//! `pin/add`, `pin/rm`, `pin/update` and `pin/ls` on the cluster's pinset
//! instead of the daemon's: what a client pins here is allocated and
//! pinned across the cluster, and `pin/ls` lists the shared pinset.

use cid::Cid;
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{
    Body, Ctx, channel_body, cluster_error, flag, json_reply, kubo_error, line, stream_error,
    streaming, values,
};
use crate::cluster::ClusterError;
use crate::state::{PAGE, pages};
use crate::types::{Pin, PinMode, PinOptions};

/// `pin/add?arg=<cid|path>[&recursive=<bool>][&type=direct][&name=<n>]`.
pub(super) async fn add(ctx: &Ctx, query: &[(String, String)]) -> Response<Body> {
    // No `arg` is the empty path, which fails to parse (500), as in the reference.
    let arg = values(query, "arg").first().copied().unwrap_or("");
    let recursive = match flag(query, "recursive", true) {
        Ok(r) => r,
        Err(e) => return kubo_error(StatusCode::BAD_REQUEST, e),
    };
    // Kubo's `recursive=false`, or the reference's `type=direct`.
    let direct = !recursive || values(query, "type").first() == Some(&"direct");
    let mode = if direct {
        PinMode::Direct
    } else {
        PinMode::Recursive
    };
    let cid = match resolve(ctx, arg).await {
        Ok(cid) => cid,
        Err(e) => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let name = values(query, "name").first().unwrap_or(&"").to_string();
    match cluster_pin(ctx, cid, mode, name).await {
        Ok(()) => json_reply(StatusCode::OK, &json!({"Pins": [cid.to_string()]})),
        Err(e) => cluster_error(&e),
    }
}

/// `pin/rm?arg=<cid|path>`.
pub(super) async fn rm(ctx: &Ctx, query: &[(String, String)]) -> Response<Body> {
    let arg = values(query, "arg").first().copied().unwrap_or("");
    let cid = match resolve(ctx, arg).await {
        Ok(cid) => cid,
        Err(e) => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    // Not in the pinset: the state's not-found error, as the reference
    // relays it.
    match ctx.cluster.unpin(cid).await {
        Ok(_) => json_reply(StatusCode::OK, &json!({"Pins": [cid.to_string()]})),
        Err(e) => cluster_error(&e),
    }
}

/// `pin/update?arg=<from>&arg=<to>[&unpin=<bool>]`: `to` is pinned with
/// `from`'s options and allocations (so the same peers fetch only the
/// difference), then `from` is unpinned unless `unpin=false`.
pub(super) async fn update(ctx: &Ctx, query: &[(String, String)]) -> Response<Body> {
    let args = values(query, "arg");
    let Some(from) = args.first().copied() else {
        return kubo_error(
            StatusCode::BAD_REQUEST,
            "argument \"from-path\" is required",
        );
    };
    let Some(to) = args.get(1).copied() else {
        return kubo_error(StatusCode::BAD_REQUEST, "argument \"to-path\" is required");
    };
    let unpin = match flag(query, "unpin", true) {
        Ok(u) => u,
        Err(e) => return kubo_error(StatusCode::BAD_REQUEST, e),
    };
    let (from, to) = match tokio::join!(resolve(ctx, from), resolve(ctx, to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let not_pinned = || {
        kubo_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "'from' cid was not recursively pinned already",
        )
    };
    let reply = json!({"Pins": [from.to_string(), to.to_string()]});
    if from == to {
        return match ctx.cluster.get(&from) {
            Ok(_) => json_reply(StatusCode::OK, &reply),
            Err(ClusterError::NotFound) => not_pinned(),
            Err(e) => cluster_error(&e),
        };
    }
    // Kubo's `pin/update` takes no options: `to` gets `from`'s as they are.
    let to = Pin::new(to, PinOptions::default());
    match ctx.cluster.update(from, to).await {
        Ok(_) => {}
        Err(ClusterError::NotFound) => return not_pinned(),
        Err(e) => return cluster_error(&e),
    }
    if unpin && let Err(e) = ctx.cluster.unpin(from).await {
        return cluster_error(&e);
    }
    json_reply(StatusCode::OK, &reply)
}

/// Which pins `pin/ls?type=` asks for.
#[derive(Clone, Copy)]
enum Wanted {
    All,
    Only(PinMode),
    /// The cluster pinset holds no indirect pins.
    Indirect,
}

impl Wanted {
    fn matches(self, mode: PinMode) -> bool {
        match self {
            Wanted::All => true,
            Wanted::Only(m) => m == mode,
            Wanted::Indirect => false,
        }
    }
}

/// `pin/ls[?arg=<cid>][&type=...][&stream=<bool>]`: the cluster pinset,
/// streamed from the state as it is read, in both of Kubo's shapes.
pub(super) async fn ls(ctx: &Ctx, query: &[(String, String)]) -> Response<Body> {
    let wanted = match values(query, "type").first().copied().unwrap_or("all") {
        "all" | "" => Wanted::All,
        "recursive" => Wanted::Only(PinMode::Recursive),
        "direct" => Wanted::Only(PinMode::Direct),
        "indirect" => Wanted::Indirect,
        other => {
            return kubo_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid type '{other}', must be one of {{direct, indirect, recursive, all}}"
                ),
            );
        }
    };
    let stream = match (flag(query, "stream", false), flag(query, "s", false)) {
        (Ok(a), Ok(b)) => a || b,
        (Err(e), _) | (_, Err(e)) => return kubo_error(StatusCode::BAD_REQUEST, e),
    };
    if let Some(arg) = values(query, "arg").first().copied() {
        return ls_one(ctx, arg, wanted, stream);
    }
    let mut pins = pages(ctx.cluster.state().list(), PAGE);
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut first = true;
        if !stream && tx.send(Frame::data("{\"Keys\":{".into())).await.is_err() {
            return;
        }
        while let Some(page) = pins.recv().await {
            for pin in page {
                let pin = match pin {
                    Ok(pin) => pin,
                    Err(e) => {
                        let _ = tx.send(stream_error(&e.to_string())).await;
                        return;
                    }
                };
                let mode = PinMode::from_max_depth(pin.max_depth);
                if !wanted.matches(mode) {
                    continue;
                }
                let frame = if stream {
                    line(&json!({"Cid": pin.cid.to_string(), "Type": mode.as_str()}))
                } else {
                    let sep = if first { "" } else { "," };
                    let entry = format!("{sep}\"{}\":{{\"Type\":\"{}\"}}", pin.cid, mode.as_str());
                    Frame::data(entry.into())
                };
                first = false;
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        }
        if !stream {
            let _ = tx.send(Frame::data("}}\n".into())).await;
        }
    });
    if stream {
        streaming(StatusCode::OK, body)
    } else {
        let mut res = Response::new(body);
        res.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        res
    }
}

fn ls_one(ctx: &Ctx, arg: &str, wanted: Wanted, stream: bool) -> Response<Body> {
    let plain = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    let cid = match Cid::try_from(plain) {
        Ok(cid) => cid,
        Err(e) => {
            return kubo_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                // The CID decoder's error, as go-cid words it and the
                // reference relays it.
                format!("invalid cid: {e}"),
            );
        }
    };
    let pin = match ctx.cluster.state().get(&cid) {
        Ok(pin) => pin.filter(|p| wanted.matches(PinMode::from_max_depth(p.max_depth))),
        Err(e) => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some(pin) = pin else {
        return kubo_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Error: path '{arg}' is not pinned"),
        );
    };
    let mode = PinMode::from_max_depth(pin.max_depth).as_str();
    if stream {
        json_reply(
            StatusCode::OK,
            &json!({"Cid": cid.to_string(), "Type": mode}),
        )
    } else {
        json_reply(
            StatusCode::OK,
            &json!({"Keys": {cid.to_string(): {"Type": mode}}}),
        )
    }
}

/// A CID from `<cid>`, `/ipfs/<cid>`, or any path the daemon resolves.
pub(super) async fn resolve(ctx: &Ctx, arg: &str) -> Result<Cid, String> {
    let plain = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    match Cid::try_from(plain) {
        Ok(cid) => Ok(cid),
        Err(_) if arg.starts_with("/ipfs/") || arg.starts_with("/ipns/") => ctx
            .cluster
            .resolve(arg)
            .await
            .map_err(|e| format!("Error resolving IPFS path {arg:?}: {e}")),
        // Not a CID, so a path, and a path starts with `/`: boxo's
        // `NewPath` error, which the reference relays.
        Err(_) if !arg.starts_with('/') => Err(format!(
            "Error parsing IPFS Path: invalid path {arg:?}: path does not have enough components"
        )),
        Err(e) => Err(format!(
            "Error parsing IPFS Path: invalid path {arg:?}: {e}"
        )),
    }
}

/// Pins `cid` in the cluster with the cluster's default replication
/// (a re-pin keeps live allocations).
pub(super) async fn cluster_pin(
    ctx: &Ctx,
    cid: Cid,
    mode: PinMode,
    name: String,
) -> Result<(), ClusterError> {
    let options = PinOptions {
        name,
        mode,
        ..PinOptions::default()
    };
    ctx.cluster.pin(Pin::new(cid, options)).await.map(drop)
}
