//! `POST /add`: content into the cluster.
//!
//! How: the client's multipart body is streamed, as it arrives, into this
//! peer's IPFS daemon (`/api/v0/add?pin=false` with the same chunking and
//! CID options), and the root the daemon reports is then cluster-pinned
//! with allocations like any pin. The CIDs are the daemon's by
//! construction, so they equal what Kubo gives for the same input and
//! options, and nothing is buffered whole on the way.
//!
//! The allocated peers' daemons fetch the content over bitswap when their
//! trackers pin it: peers swarm-connect their daemons to each other, and
//! this peer's daemon holds every block. The reference instead pushes each
//! block to every allocated daemon with `block/put`, which costs one HTTP
//! call per block per allocation and an allocation made before the CID is
//! known; fetching is what a pin does anyway, and it keeps the add as fast
//! as the local daemon's.
//!
//! Differences: `shard=true` and `nocopy=true` are refused (400), and
//! `format=car` is refused too: a CAR import would skip the chunker and
//! its block counts are not reported by every daemon.

use std::sync::Arc;

use bytes::Buf;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use warp::http::{HeaderValue, StatusCode, header};

use super::reply::{ApiReply, error, json, ndjson};
use super::{ApiContext, commit};
use crate::ipfsconn::AddedLine;
use crate::types::{Pin, PinMode, PinOptions};

/// Items in flight between the daemon's output and the client.
const QUEUE: usize = 64;

/// One item of the answer, as the reference writes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AddedOutput {
    name: String,
    cid: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allocations: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<AddedLine> for AddedOutput {
    fn from(line: AddedLine) -> Self {
        AddedOutput {
            name: line.name,
            cid: line.cid.map(|c| c.to_string()),
            bytes: line.bytes,
            size: line.size,
            allocations: Vec::new(),
        }
    }
}

/// The options of one add, read from the query.
#[derive(Debug, Clone, PartialEq)]
struct AddParams {
    /// What goes to the daemon's `add`.
    ipfs: Vec<(&'static str, String)>,
    pin: PinOptions,
    local: bool,
    no_pin: bool,
    stream: bool,
}

/// Go's `strconv.ParseBool`.
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_params(query: &[(String, String)]) -> Result<AddParams, String> {
    let get = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        match get(key) {
            None => Ok(default),
            Some(v) => go_bool(v).ok_or_else(|| format!("parameter {key} invalid")),
        }
    };
    for unsupported in ["shard", "nocopy"] {
        if flag(unsupported, false)? {
            return Err(format!(
                "parameter {unsupported}: not supported by this peer"
            ));
        }
    }
    // Read for their validity only: `recursive` and `hidden` mean
    // something to the client, not here.
    flag("recursive", false)?;
    flag("hidden", false)?;
    match get("format").unwrap_or("unixfs") {
        "unixfs" => {}
        "car" => return Err("format=car is not supported by this peer".to_string()),
        _ => return Err("format parameter is invalid".to_string()),
    }
    let mut ipfs: Vec<(&'static str, String)> = vec![("pin", "false".into())];
    match get("layout").unwrap_or("balanced") {
        "balanced" => {}
        "trickle" => ipfs.push(("trickle", "true".into())),
        _ => return Err("layout parameter is invalid".to_string()),
    }
    if let Some(v) = get("cid-version") {
        let version: u64 = v
            .parse()
            .map_err(|_| "parameter cid-version invalid".to_string())?;
        ipfs.push(("cid-version", version.to_string()));
    }
    if get("raw-leaves").is_some() {
        ipfs.push(("raw-leaves", flag("raw-leaves", false)?.to_string()));
    }
    if let Some(chunker) = get("chunker") {
        ipfs.push(("chunker", chunker.to_string()));
    }
    if let Some(hash) = get("hash") {
        ipfs.push(("hash", hash.to_ascii_lowercase()));
    }
    if flag("wrap-with-directory", false)? {
        ipfs.push(("wrap-with-directory", "true".into()));
    }
    if flag("progress", false)? {
        ipfs.push(("progress", "true".into()));
    }
    // The daemon always streams to us; `stream-channels` is about how we
    // answer the client.
    ipfs.push(("stream-channels", "true".into()));
    // `pin-update` is ignored by the reference's add; `mode` is forced.
    let pin_query: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "pin-update" && k != "mode")
        .cloned()
        .collect();
    let mut pin = PinOptions::from_query(&pin_query).map_err(|e| e.to_string())?;
    pin.mode = PinMode::Recursive;
    Ok(AddParams {
        ipfs,
        pin,
        local: flag("local", false)?,
        no_pin: flag("no-pin", false)?,
        stream: flag("stream-channels", true)?,
    })
}

/// `POST /add`.
pub async fn add<S, B>(
    content_type: Option<String>,
    query: Vec<(String, String)>,
    body: S,
    ctx: Arc<ApiContext>,
) -> ApiReply
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Sync + 'static,
    B: Buf + Send + 'static,
{
    let content_type = content_type.unwrap_or_default();
    let multipart = content_type.starts_with("multipart/form-data")
        || content_type.starts_with("multipart/mixed");
    if !multipart {
        return error(
            StatusCode::BAD_REQUEST,
            "request Content-Type isn't multipart/form-data".to_string(),
        );
    }
    let params = match parse_params(&query) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let body = reqwest::Body::wrap_stream(
        body.map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining()))),
    );
    let (tx, rx) = mpsc::channel(QUEUE);
    let stream = params.stream;
    tokio::spawn(async move {
        if let Err(e) = run(&ctx, params, content_type, body, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    let items = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut res = if stream {
        let mut res = ndjson(items).await;
        res.headers_mut()
            .insert("x-chunked-output", HeaderValue::from_static("1"));
        res
    } else {
        let all: Vec<Result<AddedOutput, String>> = items.collect().await;
        match all.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(outputs) => json(StatusCode::OK, &outputs),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    };
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Adds through the daemon, forwarding its output; the root goes out last,
/// after it is pinned, with its allocations.
async fn run(
    ctx: &ApiContext,
    params: AddParams,
    content_type: String,
    body: reqwest::Body,
    tx: &mpsc::Sender<Result<AddedOutput, String>>,
) -> Result<(), String> {
    let mut output = ctx
        .ipfs
        .add(&params.ipfs, content_type, body)
        .await
        .map_err(|e| e.to_string())?;
    // The daemon names the root last: hold each node back until the next.
    let mut held: Option<AddedLine> = None;
    while let Some(line) = output.next().await.map_err(|e| e.to_string())? {
        let item = if line.cid.is_some() {
            match held.replace(line) {
                Some(previous) => previous,
                None => continue,
            }
        } else {
            line
        };
        if tx.send(Ok(item.into())).await.is_err() {
            return Ok(()); // the client went away
        }
    }
    let Some(root_line) = held else {
        return Err("the IPFS daemon added nothing".to_string());
    };
    let Some(root) = root_line.cid else {
        return Err("the IPFS daemon named no root".to_string());
    };
    let mut last = AddedOutput::from(root_line);
    if !params.no_pin {
        let pin = commit(ctx, Pin::new(root, params.pin), params.local).await?;
        last.allocations = pin.allocations.iter().map(|p| p.to_string()).collect();
    }
    let _ = tx.send(Ok(last)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_reach_the_daemon_and_bad_ones_are_refused() {
        let p = parse_params(&q(&[
            ("cid-version", "1"),
            ("raw-leaves", "true"),
            ("chunker", "size-1024"),
            ("layout", "trickle"),
            ("wrap-with-directory", "T"),
            ("name", "site"),
            ("local", "1"),
            ("stream-channels", "false"),
        ]))
        .unwrap();
        for pair in [
            ("pin", "false"),
            ("cid-version", "1"),
            ("raw-leaves", "true"),
            ("chunker", "size-1024"),
            ("trickle", "true"),
            ("wrap-with-directory", "true"),
        ] {
            assert!(p.ipfs.contains(&(pair.0, pair.1.to_string())), "{pair:?}");
        }
        assert_eq!(p.pin.name, "site");
        assert!(p.local && !p.stream && !p.no_pin);

        assert_eq!(
            parse_params(&q(&[("progress", "maybe")])).unwrap_err(),
            "parameter progress invalid"
        );
        assert_eq!(
            parse_params(&q(&[("format", "zip")])).unwrap_err(),
            "format parameter is invalid"
        );
        assert_eq!(
            parse_params(&q(&[("layout", "flat")])).unwrap_err(),
            "layout parameter is invalid"
        );
        assert!(parse_params(&q(&[("replication-min", "x")])).is_err());
    }

    #[test]
    fn outputs_omit_empty_fields_as_the_reference() {
        let progress = AddedOutput {
            name: "f".into(),
            cid: None,
            bytes: 262144,
            size: 0,
            allocations: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&progress).unwrap(),
            r#"{"name":"f","cid":null,"bytes":262144}"#
        );
    }
}
