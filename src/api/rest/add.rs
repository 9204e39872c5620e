//! `POST /add`: content into the cluster.
//!
//! How: the client's multipart body is streamed, as it arrives, into this
//! peer's IPFS daemon (`/api/v0/add?pin=false` with the same chunking and
//! CID options), and the root the daemon reports is then cluster-pinned
//! with allocations like any pin. The CIDs are the daemon's by
//! construction, so they equal what Kubo gives for the same input and
//! options, and nothing is buffered whole on the way.
//!
//! With `format=car` the first part of the body is a CAR file: it is read
//! here section by section ([`crate::api::car`]), every block checked
//! against its CID, and the verified blocks are streamed to the daemon's
//! `dag/import` (one request for the whole CAR, where `block/put` would be
//! one per block; both daemons import without pinning), then its single
//! root is cluster-pinned. As in the reference, only the first part is
//! imported, and the answer is one `AddedOutput` with the sum of the block
//! sizes (`bytes`) and the root's UnixFS file size (`size`).
//!
//! The allocated peers' daemons fetch the content over bitswap when their
//! trackers pin it: peers swarm-connect their daemons to each other, and
//! this peer's daemon holds every block. The reference instead pushes each
//! block to every allocated daemon with `block/put`, which costs one HTTP
//! call per block per allocation and an allocation made before the CID is
//! known; fetching is what a pin does anyway, and it keeps the add as fast
//! as the local daemon's.
//!
//! Differences: `shard=true` (the reference's experimental sharded DAGs)
//! and `nocopy=true` (the filestore, which js-ipfs lacks) are refused with
//! a 400.

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warp::http::{HeaderValue, StatusCode, header};

use super::reply::{ApiReply, error, json, ndjson};
use crate::api::car::{self, CarError, CarReader};
use crate::api::query::form_decode;
use crate::cluster::Cluster;
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

impl AddedOutput {
    fn with_allocations(mut self, peers: &[String]) -> Self {
        self.allocations = peers.to_vec();
        self
    }
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
pub(crate) struct AddParams {
    /// What goes to the daemon's `add`.
    ipfs: Vec<(&'static str, String)>,
    pin: PinOptions,
    local: bool,
    no_pin: bool,
    stream: bool,
    /// `format=car`: the upload is a CAR to import, not files.
    car: bool,
}

/// Go's `strconv.ParseBool`.
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

pub(crate) fn parse_params(query: &[(String, String)]) -> Result<AddParams, String> {
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
    if flag("shard", false)? {
        return Err("shard=true: sharded adds are not supported by this peer".to_string());
    }
    if flag("nocopy", false)? {
        return Err(
            "nocopy=true: the filestore is not supported by this peer (it adds through its IPFS daemon's store)"
                .to_string(),
        );
    }
    // Read for their validity only: `recursive` and `hidden` mean
    // something to the client, not here.
    flag("recursive", false)?;
    flag("hidden", false)?;
    let car = match get("format").unwrap_or("unixfs") {
        "unixfs" => false,
        "car" => true,
        _ => return Err("format parameter is invalid".to_string()),
    };
    if car && flag("wrap-with-directory", false)? {
        return Err("cannot wrap a CAR file upload".to_string());
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
        car,
    })
}

/// `POST /add`.
pub async fn add<S, B>(
    content_type: Option<String>,
    query: Vec<(String, String)>,
    body: S,
    ctx: Cluster,
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
    let body = body.map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining())));
    let stream = params.stream;
    let dests = destinations(&ctx, &params);
    let (tx, rx) = mpsc::channel(QUEUE);
    if params.car {
        let upload = match open_car(&content_type, body).await {
            Ok(upload) => upload,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        tokio::spawn(async move {
            // Both adds end with the answer's reader: a client that left
            // must not keep an add, and its daemon connection, waiting on
            // a daemon that never replies (adds have no overall timeout).
            let item = tokio::select! {
                item = import_car(&ctx, params, upload, dests) => item,
                () = tx.closed() => return,
            };
            let _ = tx.send(item).await;
        });
    } else {
        let body = reqwest::Body::wrap_stream(body);
        tokio::spawn(async move {
            let ran = tokio::select! {
                ran = run(&ctx, params, content_type, body, &dests, &tx) => ran,
                () = tx.closed() => return,
            };
            if let Err(e) = ran {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    answer(stream, ReceiverStream::new(rx)).await
}

/// The peers every item of a pin-everywhere add names as its
/// allocations: those with a live `ping`, as the reference's adder names
/// the peers it sends blocks to (`no-pin` too). A pin with replication
/// factors is allocated once its root is known, and only the root names
/// its allocations.
fn destinations(ctx: &Cluster, params: &AddParams) -> Vec<String> {
    let min = match params.pin.replication_factor_min {
        0 => ctx.replication().0,
        min => min,
    };
    if min >= 0 {
        return Vec::new();
    }
    let mut live: Vec<String> = ctx
        .monitor()
        .live_peers(chrono::Utc::now())
        .iter()
        .map(|p| p.to_string())
        .collect();
    live.sort();
    live
}

/// The items as the reference answers them: NDJSON as they come, or one
/// JSON array (500 on any error) with `stream-channels=false`.
async fn answer(stream: bool, items: ReceiverStream<Result<AddedOutput, String>>) -> ApiReply {
    let mut res = if stream {
        let mut res = ndjson(items).await;
        res.headers_mut()
            .insert("x-chunked-output", HeaderValue::from_static("1"));
        res.extensions_mut()
            .insert(super::server::TrailerOnlyOnError);
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

/// The body of a `format=car` add, as [`multer`] reads it.
type Form = multer::Multipart<'static>;
type Part = multer::Field<'static>;

/// A CAR upload whose header was read: the reader over its part, the
/// part's name, and the rest of the form.
#[derive(Debug)]
struct CarUpload {
    name: String,
    reader: CarReader<Part>,
    form: Form,
}

/// Reads the first part of the form and its CAR header, so that a body
/// that is no CAR of one root gets a 400 before any answer is started.
async fn open_car<S>(content_type: &str, body: S) -> Result<CarUpload, String>
where
    S: Stream<Item = Result<Bytes, warp::Error>> + Send + 'static,
{
    let boundary = boundary(content_type)?;
    let mut form = multer::Multipart::new(body, boundary);
    let part = form
        .next_field()
        .await
        .map_err(|e| format!("reading the multipart body: {e}"))?
        .ok_or("the request holds no CAR file")?;
    let kind = part.content_type().map(|m| m.essence_str().to_string());
    if matches!(
        kind.as_deref(),
        Some("application/x-directory" | "multipart/form-data" | "multipart/mixed")
    ) {
        // The reference's words.
        return Err("expected CAR file is not of type file".to_string());
    }
    // Names are query-escaped, as boxo's multipart reader unescapes them.
    let name = part.file_name().map(form_decode).unwrap_or_default();
    let reader = CarReader::new(part).await.map_err(|e| e.to_string())?;
    Ok(CarUpload { name, reader, form })
}

/// What the add path parses of a `format=car` body, alone (no daemon, no
/// pin): the form, the CAR header, every block (at most 64), then the
/// rest of the form. The fuzzers' entry to the multipart and CAR readers as
/// the API uses them.
pub(crate) async fn read_car_upload(content_type: &str, chunks: Vec<Bytes>) {
    let body = futures::stream::iter(chunks.into_iter().map(Ok::<_, warp::Error>));
    let Ok(CarUpload {
        mut reader,
        mut form,
        ..
    }) = open_car(content_type, body).await
    else {
        return;
    };
    for _ in 0..64 {
        if !matches!(reader.next_block().await, Ok(Some(_))) {
            break;
        }
    }
    drain(reader, &mut form).await;
}

/// The boundary of a multipart body. `multipart/mixed`, which the
/// reference takes too, is framed the same as form data, which is all the
/// parser knows.
fn boundary(content_type: &str) -> Result<String, String> {
    let form = match content_type.strip_prefix("multipart/mixed") {
        Some(params) => format!("multipart/form-data{params}"),
        None => content_type.to_string(),
    };
    multer::parse_boundary(form).map_err(|e| format!("reading the multipart body: {e}"))
}

/// Streams the verified blocks of `upload` into the daemon, then
/// cluster-pins the root: the one item of a CAR add.
async fn import_car(
    ctx: &Cluster,
    params: AddParams,
    upload: CarUpload,
    dests: Vec<String>,
) -> Result<AddedOutput, String> {
    let CarUpload {
        name,
        mut reader,
        mut form,
    } = upload;
    let root = reader.root();
    let (tx, rx) = mpsc::channel::<Result<Bytes, CarError>>(QUEUE);
    let import = ctx.ipfs().dag_import(ReceiverStream::new(rx));
    // `Err(None)`: the daemon stopped reading (its own error says why).
    let pump = async move {
        let (mut bytes, mut size) = (0u64, 0u64);
        let header = Bytes::from(car::v1_header(root));
        tx.send(Ok(header)).await.map_err(|_| None)?;
        loop {
            match reader.next_block().await {
                Ok(Some(block)) => {
                    bytes += block.data.len() as u64;
                    if block.cid == root {
                        size = car::unixfs_file_size(&block);
                    }
                    for part in block.to_section() {
                        tx.send(Ok(part)).await.map_err(|_| None)?;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let message = e.to_string();
                    // Makes the import fail rather than end cleanly.
                    let _ = tx.send(Err(e)).await;
                    return Err(Some(message));
                }
            }
        }
        drain(reader, &mut form).await;
        Ok((bytes, size))
    };
    let (pumped, imported) = tokio::join!(pump, import);
    let (bytes, size) = match (pumped, imported) {
        (Err(Some(e)), _) => return Err(e),
        (_, Err(e)) => return Err(e.to_string()),
        (Err(None), Ok(())) => return Err("the IPFS daemon stopped reading the CAR".to_string()),
        (Ok(stats), Ok(())) => stats,
    };
    let mut out = AddedOutput {
        name,
        cid: Some(root.to_string()),
        bytes,
        size,
        allocations: dests,
    };
    if !params.no_pin {
        let pin = ctx
            .commit(Pin::new(root, params.pin), params.local)
            .await
            .map_err(|e| e.to_string())?;
        out.allocations = reported_allocations(ctx, &pin).await;
    }
    Ok(out)
}

/// Reads what is left of the body (a CARv2 index, parts after the first,
/// which the reference ignores too), so the client can finish sending
/// before it gets the answer.
async fn drain(reader: CarReader<Part>, form: &mut Form) {
    let mut part = reader.into_inner();
    while let Some(Ok(_)) = part.next().await {}
    drop(part);
    while let Ok(Some(mut part)) = form.next_field().await {
        while let Ok(Some(_)) = part.chunk().await {}
    }
}

/// Adds through the daemon, forwarding its output; the root goes out last,
/// after it is pinned, with its allocations.
async fn run(
    ctx: &Cluster,
    params: AddParams,
    content_type: String,
    body: reqwest::Body,
    dests: &[String],
    tx: &mpsc::Sender<Result<AddedOutput, String>>,
) -> Result<(), String> {
    let mut output = ctx
        .ipfs()
        .add(&params.ipfs, content_type, body)
        .await
        .map_err(|e| e.to_string())?;
    // The daemon names the root last: hold each node back until the next.
    let mut held: Option<AddedLine> = None;
    while let Some(line) = output.next().await.map_err(|e| e.to_string())? {
        let item = if line.cid.is_some() {
            match held.replace(line) {
                Some(previous) => AddedOutput::from(previous).with_allocations(dests),
                None => continue,
            }
        } else {
            line.into()
        };
        if tx.send(Ok(item)).await.is_err() {
            return Ok(()); // the client went away
        }
    }
    let Some(root_line) = held else {
        return Err("the IPFS daemon added nothing".to_string());
    };
    let Some(root) = root_line.cid else {
        return Err("the IPFS daemon named no root".to_string());
    };
    let mut last = AddedOutput::from(root_line).with_allocations(dests);
    if !params.no_pin {
        let pin = ctx
            .commit(Pin::new(root, params.pin), params.local)
            .await
            .map_err(|e| e.to_string())?;
        last.allocations = reported_allocations(ctx, &pin).await;
    }
    let _ = tx.send(Ok(last)).await;
    Ok(())
}

/// The peers the last item of an add names, as the reference reports them
/// (its adder's block allocations): the pin's allocations, or for a pin on
/// every peer, whose allocations are empty, the current peerset.
async fn reported_allocations(ctx: &Cluster, pin: &Pin) -> Vec<String> {
    if !pin.allocations.is_empty() {
        return pin.allocations.iter().map(|p| p.to_string()).collect();
    }
    let mut peers = ctx.network().peers().await.unwrap_or_default();
    peers.insert(0, ctx.local_peer_id());
    peers.iter().map(|p| p.to_string()).collect()
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
    fn both_multipart_types_give_their_boundary() {
        for kind in ["multipart/form-data", "multipart/mixed"] {
            assert_eq!(boundary(&format!("{kind}; boundary=abc")).unwrap(), "abc");
        }
        assert!(boundary("multipart/form-data").is_err());
    }

    #[test]
    fn car_and_the_unsupported_options() {
        let p = parse_params(&q(&[("format", "car"), ("cid-version", "1")])).unwrap();
        assert!(p.car);
        assert!(!parse_params(&q(&[("format", "")])).unwrap().car);
        assert_eq!(
            parse_params(&q(&[("format", "car"), ("wrap-with-directory", "1")])).unwrap_err(),
            "cannot wrap a CAR file upload"
        );
        // ctl always sends `shard=false` and `nocopy=false`.
        assert!(parse_params(&q(&[("shard", "false"), ("nocopy", "false")])).is_ok());
        let shard = parse_params(&q(&[("shard", "true")])).unwrap_err();
        assert!(shard.contains("sharded adds are not supported"), "{shard}");
        let nocopy = parse_params(&q(&[("nocopy", "true")])).unwrap_err();
        assert!(nocopy.contains("filestore is not supported"), "{nocopy}");
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
