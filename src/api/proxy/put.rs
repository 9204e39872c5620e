//! Writes that pin: `add`, and `block/put` / `dag/put` with `pin=true`.
//! The daemon does the work (the request, query and body, goes through to
//! it untouched); the proxy reads its reply line by line, re-emits each
//! line in Kubo's shape as soon as it arrives, and pins what was written
//! in the cluster. Errors after the first line go to the `X-Stream-Error`
//! trailer.
//!
//! The daemon is left to pin what it wrote, as it would without the proxy:
//! between the write and the moment the pin tracker pins the new cluster
//! pin, nothing else protects the blocks from a garbage collection. (If
//! this peer is not among the allocations, its daemon keeps that pin.)

use cid::Cid;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::forward;
use super::pins::cluster_pin;
use super::{Body, Ctx, channel_body, flag, kubo_error, line, stream_error, streaming};
use crate::api::serve::ReqBody;
use crate::ndjson::{ReadError, ResponseLines};
use crate::types::PinMode;

/// `add`: the daemon adds; each root of what was added (every top-level
/// entry, or the wrapping directory) then becomes a cluster pin, unless
/// the client said `pin=false` or `only-hash=true`. The name of a pin is
/// `name=` if given, else the root's name.
pub(super) async fn add(
    ctx: &Ctx,
    req: Request<ReqBody>,
    query: Vec<(String, String)>,
) -> Response<Body> {
    let opts = (
        flag(&query, "pin", true),
        flag(&query, "only-hash", false),
        flag(&query, "wrap-with-directory", false),
    );
    let (pin, only_hash, wrap) = match opts {
        (Ok(p), Ok(o), Ok(w)) => (p, o, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return kubo_error(StatusCode::BAD_REQUEST, e);
        }
    };
    let name = query
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone());
    let mut lines = match &ctx.node {
        // The embedded node adds in this process: no loopback HTTP hop for
        // every byte of the file.
        Some(node) => {
            let res = crate::ipfs::rpc::handle(node.clone(), req).await;
            if !res.status().is_success() {
                return res;
            }
            ResponseLines::local(res.into_body())
        }
        None => {
            let upstream = req.uri().query().map(str::to_string);
            let res = match forward::send(&ctx.daemon, req, None, upstream.as_deref()).await {
                Ok(res) => res,
                Err(e) => return forward::bad_gateway(&e),
            };
            if !res.status().is_success() {
                return forward::relay(res);
            }
            ResponseLines::new(res)
        }
    };
    let ctx = ctx.clone();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut roots: Vec<(String, Cid)> = Vec::new();
        let mut errors = String::new();
        loop {
            let raw = match lines.next_line().await {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(stream_error(&reading(&e))).await;
                    return;
                }
            };
            let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(raw) else {
                let _ = tx
                    .send(stream_error("unexpected reply line from the IPFS daemon"))
                    .await;
                return;
            };
            if event.get("Type").and_then(Value::as_str) == Some("error") {
                // An error line of the daemon's: passed on, nothing pinned.
                let message = event.get("Message").and_then(Value::as_str).unwrap_or("");
                errors.push_str(message);
                roots.clear();
                let _ = tx.send(line(&event)).await;
                continue;
            }
            let out = kubo_add_event(&event);
            if let (Some(n), Some(Ok(cid))) = (
                out.get("Name").and_then(Value::as_str),
                out.get("Hash").and_then(Value::as_str).map(Cid::try_from),
            ) {
                let is_root = if wrap { n.is_empty() } else { !n.contains('/') };
                if is_root {
                    roots.retain(|(name, _)| name != n);
                    roots.push((n.to_string(), cid));
                }
            }
            if tx.send(line(&out)).await.is_err() {
                return; // the client went away: nothing is pinned
            }
        }
        if pin && !only_hash && errors.is_empty() {
            for (_, cid) in roots {
                // Unnamed unless `name` is given, as the reference's
                // adder leaves it (the file name is not the pin's name).
                let pin_name = name.clone().unwrap_or_default();
                if let Err(e) = cluster_pin(&ctx, cid, PinMode::Recursive, pin_name).await {
                    errors.push_str(&format!("pinning {cid}: {e}; "));
                }
            }
        }
        if !errors.is_empty() {
            let _ = tx.send(stream_error(&errors)).await;
        }
    });
    let mut res = streaming(StatusCode::OK, body);
    // `add` alone of the proxy's streams says it is chunked output.
    res.headers_mut()
        .insert("x-chunked-output", HeaderValue::from_static("1"));
    res
}

/// An `add` event as Kubo prints it: `Name`, then `Hash`, `Bytes` and
/// `Size` (a decimal string) when set. js-ipfs's numeric `Size` and its
/// `Mode` are normalised away.
fn kubo_add_event(event: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let name = event
        .get("Name")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    out.insert("Name".into(), name);
    if let Some(hash) = event.get("Hash").filter(|h| !h.is_null()) {
        out.insert("Hash".into(), hash.clone());
    }
    if let Some(bytes) = event
        .get("Bytes")
        .filter(|b| b.as_u64() != Some(0) && !b.is_null())
    {
        out.insert("Bytes".into(), bytes.clone());
    }
    let size = match event.get("Size") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    if let Some(size) = size {
        out.insert("Size".into(), Value::String(size));
    }
    out
}

/// `block/put?pin=true`: each `{"Key","Size"}` the daemon reports is
/// pinned in the cluster and passed on.
pub(super) async fn block_put(ctx: &Ctx, req: Request<ReqBody>) -> Response<Body> {
    let res = match send_as_is(ctx, req).await {
        Ok(res) => res,
        Err(e) => return forward::bad_gateway(&e),
    };
    pin_each(ctx, res, |v| {
        let key = v.get("Key")?.as_str()?;
        Some((
            Cid::try_from(key).ok()?,
            json!({"Key": key, "Size": v.get("Size").cloned().unwrap_or(Value::Null)}),
        ))
    })
}

/// `dag/put?pin=true`: each `{"Cid":{"/":...}}` the daemon reports is
/// pinned in the cluster and passed on.
pub(super) async fn dag_put(ctx: &Ctx, req: Request<ReqBody>) -> Response<Body> {
    let res = match send_as_is(ctx, req).await {
        Ok(res) => res,
        Err(e) => return forward::bad_gateway(&e),
    };
    pin_each(ctx, res, |v| {
        let cid = v.get("Cid")?.get("/")?.as_str()?;
        Some((Cid::try_from(cid).ok()?, json!({"Cid": {"/": cid}})))
    })
}

/// Relays a failed reply as it is; on success, pins the CID `pick` finds
/// in each reply line and emits what `pick` returns for it.
fn pin_each(
    ctx: &Ctx,
    res: reqwest::Response,
    pick: fn(&Value) -> Option<(Cid, Value)>,
) -> Response<Body> {
    if res.status() != reqwest::StatusCode::OK {
        return forward::relay(res);
    }
    let ctx = ctx.clone();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut lines = ResponseLines::new(res);
        let mut errors = String::new();
        loop {
            let raw = match lines.next_line().await {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => {
                    errors.push_str(&reading(&e));
                    break;
                }
            };
            let parsed = serde_json::from_slice::<Value>(raw).ok();
            let Some((cid, out)) = parsed.as_ref().and_then(pick) else {
                errors.push_str("unexpected reply line from the IPFS daemon; ");
                continue;
            };
            if let Err(e) = cluster_pin(&ctx, cid, PinMode::Recursive, String::new()).await {
                errors.push_str(&format!("pinning {cid}: {e}; "));
            }
            if tx.send(line(&out)).await.is_err() {
                return;
            }
        }
        if !errors.is_empty() {
            let _ = tx.send(stream_error(&errors)).await;
        }
    });
    streaming(StatusCode::OK, body)
}

/// What went wrong reading the daemon's reply, as the client is told.
fn reading(e: &ReadError) -> String {
    format!("reading the IPFS daemon's reply: {e}")
}

async fn send_as_is(ctx: &Ctx, req: Request<ReqBody>) -> Result<reqwest::Response, reqwest::Error> {
    let query = req.uri().query().map(str::to_string);
    forward::send(&ctx.daemon, req, None, query.as_deref()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_events_take_kubo_shape() {
        let js = json!({"Name":"hello.txt","Hash":"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o","Size":20,"Mode":"0644"});
        let out = kubo_add_event(js.as_object().unwrap());
        assert_eq!(
            Value::Object(out),
            json!({"Name":"hello.txt","Hash":"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o","Size":"20"})
        );
        let progress = json!({"Name":"f","Bytes":262144});
        let out = kubo_add_event(progress.as_object().unwrap());
        assert_eq!(Value::Object(out), progress);
        let kubo = json!({"Name":"","Hash":"bafy","Size":"75"});
        assert_eq!(
            Value::Object(kubo_add_event(kubo.as_object().unwrap())),
            kubo
        );
    }
}
