//! `repo/stat` and `repo/gc` over the whole cluster: every peer's daemon
//! counts, every peer's daemon collects.

use hyper::{Response, StatusCode};
use serde_json::json;

use super::{
    Body, Ctx, channel_body, cluster_error, flag, json_reply, kubo_error, line, stream_error,
    streaming,
};

/// `repo/stat`: sizes and object counts summed over the daemons of every
/// peer that answers in time; `RepoPath` and `Version` are the local
/// daemon's. Kubo's parameters (`size-only`, `human`) are ignored.
pub(super) async fn stat(ctx: &Ctx) -> Response<Body> {
    match ctx.cluster.repo_stat().await {
        Ok(stat) => json_reply(
            StatusCode::OK,
            &json!({
                "RepoSize": stat.usage.repo_size,
                "StorageMax": stat.usage.storage_max,
                "NumObjects": stat.usage.num_objects,
                "RepoPath": stat.repo_path,
                "Version": stat.version,
            }),
        ),
        Err(e) => cluster_error(&e),
    }
}

/// `repo/gc[?stream-errors=true]`: runs on every peer's daemon at once,
/// then streams each removed key as `{"Key":{"/":<cid>}}`. Errors (a key's,
/// or a whole peer's) come as `{"Key":null,"Error":...}` lines with
/// `stream-errors`, else in the `X-Stream-Error` trailer.
pub(super) async fn gc(ctx: &Ctx, query: &[(String, String)]) -> Response<Body> {
    let stream_errors = match flag(query, "stream-errors", false) {
        Ok(s) => s,
        Err(e) => return kubo_error(StatusCode::BAD_REQUEST, e),
    };
    let global = ctx.cluster.repo_gc(false).await;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut errors = String::new();
        for info in global.peer_map.into_values() {
            let mut lines = Vec::new();
            if !info.error.is_empty() {
                let e = format!("peer {}: {}", info.peer, info.error);
                if stream_errors {
                    lines.push(json!({"Key": null, "Error": e}));
                } else {
                    errors.push_str(&format!("{e}; "));
                }
            }
            for key in info.keys {
                match (key.key, key.error.is_empty()) {
                    (Some(cid), true) => lines.push(json!({"Key": {"/": cid.to_string()}})),
                    (_, _) if stream_errors => lines.push(json!({"Key": null, "Error": key.error})),
                    _ => {
                        errors.push_str(&format!("{}; ", key.error));
                        lines.push(json!({"Key": null}));
                    }
                }
            }
            for l in lines {
                if tx.send(line(&l)).await.is_err() {
                    return;
                }
            }
        }
        if !errors.is_empty() {
            let _ = tx.send(stream_error(&errors)).await;
        }
    });
    streaming(StatusCode::OK, body)
}
