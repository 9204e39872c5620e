//! Differential tests: the same `ipfs-cluster-ctl` command lines and the
//! same raw HTTP requests go to a real ipfs-cluster-service 1.1.6 and to a
//! pincluster peer set up alike (one peer each, each beside its own Kubo,
//! holding the same content), and must get the same answers: exit code or
//! status, the headers clients act on, the trailers, and the body once what
//! differs by nature between two runs is normalised (peer ids, ports,
//! timestamps, versions, sizes of the IPFS repo).
//!
//! The cases run in the same order on both sides; between the steps that
//! change the pinset the test waits until both peers report every pin
//! `pinned`, so a status never depends on timing. Every difference is
//! collected, then the test fails listing those not in [`ALLOWED`] (the
//! request and both answers) and the entries of [`ALLOWED`] that no longer
//! differ.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::http::{RawResponse, request_with_body};
use common::kubo::{Kubo, real_bin};
use common::reference::ReferencePeer;
use common::{DEADLINE, PeerSpec, RestApi, TestPeer, temp};
use serde_json::{Value, json};

const SECRET: &str = "9f3c0d7a1b2e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
/// Both peers carry this name, so `peername` compares as is.
const PEERNAME: &str = "differential";

/// Differences that stay, each with why: `(case, aspect, reason)`. An
/// aspect is `status`, `body`, `header:<name>` or `trailer:<name>`. An entry
/// that no longer differs fails the test, so this list stays true.
const ALLOWED: &[(&str, &str, &str)] = &[
    // Deliberate (README, "Deliberate differences from ipfs-cluster 1.1.6").
    ("id", "body", PEER_PROTOCOL),
    ("peers", "body", PEER_PROTOCOL),
    ("ctl id json", "body", PEER_PROTOCOL),
    ("ctl peers ls json", "body", PEER_PROTOCOL),
    ("peer rm crdt", "status", PEER_RM),
    ("peer rm crdt", "body", PEER_RM),
    ("add bad option", "status", ADD_EARLY_ERROR),
    ("add bad option", "body", ADD_EARLY_ERROR),
    ("add bad option", "header:trailer", ADD_EARLY_ERROR),
    ("add bad option", "trailer:x-stream-error", ADD_EARLY_ERROR),
    ("pin bad replication", "body", DOUBLE_RESPONSE),
    ("pin bad expire-in", "body", DOUBLE_RESPONSE),
    ("proxy repo stat", "body", REPO_STAT),
    // Where the reference's Go libraries show through.
    ("allocations empty", "header:trailer", NO_TRAILER_ON_204),
    ("pins empty", "header:trailer", NO_TRAILER_ON_204),
    ("recover all empty", "header:trailer", NO_TRAILER_ON_204),
    (
        "recover all local empty",
        "header:trailer",
        NO_TRAILER_ON_204,
    ),
    ("pins filter error", "header:trailer", NO_TRAILER_ON_204),
    ("recover all nothing", "header:trailer", NO_TRAILER_ON_204),
    (
        "allocations filter mixed",
        "header:trailer",
        NO_TRAILER_ON_204,
    ),
    ("pins bad cid", "body", DECODER_TEXT),
    ("pin bad cid", "body", DECODER_TEXT),
    ("unpin bad cid", "body", DECODER_TEXT),
    ("pins cids bad", "body", DECODER_TEXT),
    ("peer rm bad id", "body", DECODER_TEXT),
    ("proxy pin ls bad", "body", DECODER_TEXT),
    ("pin path bad", "body", DECODER_TEXT),
    ("pin path single segment", "body", DECODER_TEXT),
    ("status unknown", "body", GO_NIL),
    ("status unknown local", "body", GO_NIL),
    ("recover unknown", "body", GO_NIL),
    ("pin with options", "body", GO_NIL),
    ("pin by path", "body", GO_NIL),
];

const PEER_PROTOCOL: &str = "`rpc_protocol_version` names pincluster's own peer-to-peer protocol \
     (`/pincluster/1.0/sync`, not `/ipfscluster/1.0/rpc`): Go and Rust peers do not mix";
const PEER_RM: &str = "`DELETE /peers/{peer}` works under CRDT consensus and lasts (204); \
     the reference answers 500 `crdt consensus component cannot remove peers`";
const ADD_EARLY_ERROR: &str = "an `/add` error before the first item is a 500 JSON error, \
     not a 200 with an empty body and only the `X-Stream-Error` trailer";
const DOUBLE_RESPONSE: &str = "bad pin options are a 400 and nothing else; the reference writes \
     the 400, then carries on, pins with default options and appends the pin (spec 1.3 quirk)";
const REPO_STAT: &str = "proxy `repo/stat` also sums `NumObjects` (kubo-rpc-client needs it) \
     and adds the local daemon's `RepoPath` and `Version`";
const NO_TRAILER_ON_204: &str = "an empty stream is a 204 in both; the reference also announces \
     `Trailer: X-Stream-Error`, which hyper drops as a 204 has no body to carry trailers";
const DECODER_TEXT: &str = "same status and leading text (`error decoding Cid: invalid cid: `, \
     `error decoding Peer ID: `, `error parsing path: `); the detail after it is the CID / peer \
     id decoder's own (rust-cid and rust-libp2p, not go-cid and go-libp2p)";
const GO_NIL: &str = "`origins` is `[]` where the reference shows Go's nil slice as `null` (a pin \
     not yet through its state, an unknown CID), and a path route's `metadata` is `null` \
     where the reference's is `{}`; with `local=true` an unknown CID's `allocations` \
     (`null`) and `created` (zero time) are also Go zero values";

/// Which HTTP interface a request goes to.
#[derive(Clone, Copy, Debug)]
enum Api {
    Rest,
    Proxy,
}

#[derive(Clone, Debug)]
enum Req {
    Http {
        api: Api,
        method: &'static str,
        path: String,
        /// Content type and bytes.
        body: Option<(String, Vec<u8>)>,
    },
    /// `ipfs-cluster-ctl --host <REST API> <args>`.
    Ctl(Vec<String>),
}

impl Req {
    /// The request as a line of a failure report (a body as text, cut short).
    fn describe(&self) -> String {
        match self {
            Req::Http {
                api,
                method,
                path,
                body,
            } => {
                let body = body.as_ref().map(|(_, b)| {
                    let text = String::from_utf8_lossy(b);
                    format!(" body: {:?}", text.chars().take(200).collect::<String>())
                });
                format!("{api:?} {method} {path}{}", body.unwrap_or_default())
            }
            Req::Ctl(args) => format!("ipfs-cluster-ctl {}", args.join(" ")),
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    req: Req,
}

/// One step of the script: a request to compare, or a wait for both
/// pinsets to settle.
enum Step {
    Case(Case),
    Settle,
}

fn http(name: &str, api: Api, method: &'static str, path: &str) -> Step {
    Step::Case(Case {
        name: name.to_string(),
        req: Req::Http {
            api,
            method,
            path: path.to_string(),
            body: None,
        },
    })
}

fn rest(name: &str, method: &'static str, path: &str) -> Step {
    http(name, Api::Rest, method, path)
}

fn proxy(name: &str, path: &str) -> Step {
    http(name, Api::Proxy, "POST", path)
}

fn ctl(name: &str, args: &[&str]) -> Step {
    Step::Case(Case {
        name: name.to_string(),
        req: Req::Ctl(args.iter().map(|a| a.to_string()).collect()),
    })
}

/// A multipart upload of one file `name` holding `data`.
fn upload(name: &str, api: Api, path: &str, file: &str, data: &[u8]) -> Step {
    let boundary = "differential-boundary-5f1c";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Step::Case(Case {
        name: name.to_string(),
        req: Req::Http {
            api,
            method: "POST",
            path: path.to_string(),
            body: Some((format!("multipart/form-data; boundary={boundary}"), body)),
        },
    })
}

/// What one side answered, normalised.
#[derive(Debug, PartialEq)]
struct Answer {
    status: i64,
    headers: BTreeMap<String, String>,
    body: Value,
    trailers: BTreeMap<String, String>,
}

/// The headers compared: those clients act on.
const HEADERS: &[&str] = &[
    "content-type",
    "trailer",
    "x-stream-error",
    "x-chunked-output",
];

/// One side of the comparison: where to send, and the run-specific strings
/// to replace by placeholders.
struct Side {
    label: &'static str,
    api: String,
    proxy: String,
    ids: Vec<(String, &'static str)>,
    /// A folder the ctl's `add` reads files from.
    files: std::path::PathBuf,
}

impl Side {
    async fn send(&self, req: &Req) -> Answer {
        match req {
            Req::Http {
                api,
                method,
                path,
                body,
            } => {
                let base = match api {
                    Api::Rest => &self.api,
                    Api::Proxy => &self.proxy,
                };
                // pincluster sends trailers only to clients that ask (README,
                // "Deliberate differences"); the reference ignores `TE`.
                let mut headers = vec![("TE", "trailers")];
                let bytes = match body {
                    Some((ctype, bytes)) => {
                        headers.push(("Content-Type", ctype.as_str()));
                        bytes.as_slice()
                    }
                    None => &[],
                };
                let res = request_with_body(base, method, path, &headers, bytes).await;
                assert!(
                    res.status != 0,
                    "{} did not answer {method} {path}",
                    self.label
                );
                self.answer(&res)
            }
            Req::Ctl(args) => {
                let port = self.api.rsplit(':').next().unwrap();
                let out = tokio::time::timeout(
                    DEADLINE,
                    tokio::process::Command::new(real_bin("ipfs-cluster-ctl"))
                        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
                        .args(args)
                        .current_dir(&self.files)
                        .output(),
                )
                .await
                .unwrap_or_else(|_| panic!("ipfs-cluster-ctl {args:?} on {} hung", self.label))
                .expect("run ipfs-cluster-ctl");
                let text = |b: &[u8]| self.normalise_text(&String::from_utf8_lossy(b));
                let stdout = text(&out.stdout);
                Answer {
                    status: out.status.code().unwrap_or(-1).into(),
                    headers: [("stderr".to_string(), text(&out.stderr))].into(),
                    // `--enc json` prints JSON values one after the other.
                    body: self.parse_body(&stdout),
                    trailers: BTreeMap::new(),
                }
            }
        }
    }

    fn answer(&self, res: &RawResponse) -> Answer {
        let headers = HEADERS
            .iter()
            .filter_map(|h| Some((h.to_string(), self.normalise_text(res.header(h)?))))
            .collect();
        let trailers = res
            .trailers
            .iter()
            .map(|(k, v)| (k.clone(), self.normalise_text(v)))
            .collect();
        Answer {
            status: res.status.into(),
            headers,
            body: self.parse_body(&res.body),
            trailers,
        }
    }

    /// JSON, or a stream of JSON values (sorted: the order of a listing is
    /// the order of a store's keys, not a contract), or text.
    fn parse_body(&self, body: &str) -> Value {
        let text = body.trim();
        if text.is_empty() {
            return Value::Null;
        }
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            return self.normalise(sort_names(v));
        }
        let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter()
            .collect();
        match values {
            Ok(values) => {
                let mut values: Vec<Value> =
                    values.into_iter().map(|v| self.normalise(v)).collect();
                values.sort_by_key(|v| v.to_string());
                json!({ "stream": values })
            }
            Err(_) => Value::String(self.normalise_text(text)),
        }
    }

    fn normalise(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.normalise_text(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.normalise(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let v = if MASKED.contains(&k.as_str()) && !v.is_null() {
                            json!("<masked>")
                        } else {
                            self.normalise(v)
                        };
                        (self.normalise_text(&k), v)
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    fn normalise_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (id, placeholder) in &self.ids {
            out = out.replace(id.as_str(), placeholder);
        }
        let out = replace_digits_after(&out, "/tcp/", "<port>");
        let out = replace_digits_after(&out, "127.0.0.1:", "<port>");
        replace_timestamps(&out)
    }
}

/// Cases whose text output lists names in no defined order, compared as
/// sorted lines: the reference prints metric names from a Go map.
const UNORDERED: &[&str] = &["ctl health metrics"];

/// JSON keys whose values differ between two runs by nature: versions,
/// sizes and free space of the IPFS repo, metric times.
const MASKED: &[&str] = &[
    "version",
    "Version",
    "commit",
    "Commit",
    "RepoSize",
    "StorageMax",
    "value",
    "expire",
    "weight",
    "PublicKey",
    "received_at",
];

/// A list of names (`GET /monitor/metrics`) sorted: the reference builds it
/// from a Go map, in random order.
fn sort_names(value: Value) -> Value {
    match value {
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let mut items = items;
            items.sort_by_key(|v| v.to_string());
            Value::Array(items)
        }
        other => other,
    }
}

/// `text` with the run of digits after every `marker` replaced.
fn replace_digits_after(text: &str, marker: &str, placeholder: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..at + marker.len()]);
        if digits > 0 {
            out.push_str(placeholder);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// `text` with every RFC 3339 time (`2026-12-04T21:11:11.58Z`, with an
/// offset, or with a space in place of the `T`) but the zero time
/// (`0001-01-01…`, meaning "none") replaced by `<time>`.
fn replace_timestamps(text: &str) -> String {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let shape = (0..4).all(|k| digit(i + k))
            && at(i + 4, b'-')
            && digit(i + 5)
            && digit(i + 6)
            && at(i + 7, b'-')
            && digit(i + 8)
            && digit(i + 9)
            && (at(i + 10, b'T') || at(i + 10, b' '))
            && digit(i + 11)
            && digit(i + 12)
            && at(i + 13, b':')
            && digit(i + 14)
            && digit(i + 15)
            && at(i + 16, b':')
            && digit(i + 17)
            && digit(i + 18);
        if !shape || text[i..].starts_with("0001-") {
            i += 1;
            continue;
        }
        let mut end = i + 19;
        if at(end, b'.') {
            end += 1;
            while digit(end) {
                end += 1;
            }
        }
        if at(end, b'Z') {
            end += 1;
        } else if (at(end, b'+') || at(end, b'-'))
            && digit(end + 1)
            && digit(end + 2)
            && at(end + 3, b':')
        {
            end += 6;
        }
        out.push_str(&text[copied..i]);
        out.push_str("<time>");
        copied = end;
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Waits until every pin both peers list is `pinned` everywhere; panics
/// with the last listing after [`DEADLINE`].
async fn settle(sides: &[&Side]) {
    for side in sides {
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let res = request_with_body(&side.api, "GET", "/pins", &[], &[]).await;
            let settled = res.status == 204
                || (res.status == 200
                    && res.body.lines().filter(|l| !l.trim().is_empty()).all(|l| {
                        serde_json::from_str::<Value>(l).is_ok_and(|v| {
                            v["peer_map"]
                                .as_object()
                                .is_some_and(|m| m.values().all(|p| p["status"] == "pinned"))
                        })
                    }));
            if settled {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{}: not every pin pinned after {DEADLINE:?}: HTTP {}\n{}",
                side.label,
                res.status,
                res.body
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// Where one side's answer differs from the other's: the aspects.
fn aspects(ours: &Answer, theirs: &Answer) -> Vec<(String, String, String)> {
    let mut out = vec![];
    if ours.status != theirs.status {
        out.push((
            "status".into(),
            ours.status.to_string(),
            theirs.status.to_string(),
        ));
    }
    let absent = || "<absent>".to_string();
    for (kind, a, b) in [
        ("header", &ours.headers, &theirs.headers),
        ("trailer", &ours.trailers, &theirs.trailers),
    ] {
        let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for name in names {
            let (x, y) = (a.get(name), b.get(name));
            if x != y {
                out.push((
                    format!("{kind}:{name}"),
                    x.cloned().unwrap_or_else(absent),
                    y.cloned().unwrap_or_else(absent),
                ));
            }
        }
    }
    if ours.body != theirs.body {
        out.push((
            "body".into(),
            ours.body.to_string(),
            theirs.body.to_string(),
        ));
    }
    out
}

/// Runs `steps` on both sides in order; returns every difference as
/// `(case, aspect, report)`.
async fn run(steps: Vec<Step>, ours: &Side, reference: &Side) -> Vec<(String, String, String)> {
    let mut diffs = vec![];
    for step in steps {
        let case = match step {
            Step::Settle => {
                settle(&[ours, reference]).await;
                continue;
            }
            Step::Case(case) => case,
        };
        let (mut a, mut b) = (ours.send(&case.req).await, reference.send(&case.req).await);
        if UNORDERED.contains(&case.name.as_str()) {
            for answer in [&mut a, &mut b] {
                if let Value::String(text) = &answer.body {
                    let mut lines: Vec<&str> = text.lines().collect();
                    lines.sort();
                    answer.body = Value::String(lines.join("\n"));
                }
            }
        }
        for (aspect, x, y) in aspects(&a, &b) {
            diffs.push((
                case.name.clone(),
                aspect.clone(),
                format!(
                    "{}: {aspect} differs\n  request:   {}\n  pincluster: {x}\n  reference:  {y}",
                    case.name,
                    case.req.describe()
                ),
            ));
        }
    }
    diffs
}

/// Bytes no other test adds, so their CIDs are this run's own.
fn content(tag: &str) -> Vec<u8> {
    format!("differential test content {tag}\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_proxy_and_ctl_answer_like_the_reference() {
    let tmp = temp();
    let (ipfs_ours, ipfs_ref) = (tmp.path().join("ipfs-ours"), tmp.path().join("ipfs-ref"));
    let (kubo_ours, kubo_ref) = tokio::join!(Kubo::start(&ipfs_ours), Kubo::start(&ipfs_ref));
    let env = |kubo: &Kubo| {
        vec![
            ("CLUSTER_PEERNAME".to_string(), PEERNAME.to_string()),
            (
                "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
                kubo.api_multiaddr(),
            ),
            (
                "CLUSTER_IPFSPROXY_NODEMULTIADDRESS".into(),
                kubo.api_multiaddr(),
            ),
        ]
    };
    let spec = |kubo: &Kubo| PeerSpec {
        secret: Some(SECRET.to_string()),
        env: env(kubo),
        bootstrap: vec![],
    };
    let ref_ipfs_api = kubo_ref.api_multiaddr();
    let (ours, reference) = tokio::join!(
        TestPeer::start(tmp.path().join("ours"), spec(&kubo_ours)),
        ReferencePeer::start(tmp.path().join("ref"), &ref_ipfs_api, spec(&kubo_ref))
    );
    let proxy_port = ours.proxy_port();

    // The same content in both daemons, not pinned there: the cluster pins it.
    let mut cids = BTreeMap::new();
    for tag in ["a", "b", "c", "d", "e", "k", "p", "q"] {
        let data = content(tag);
        let (x, y) = tokio::join!(
            kubo_ours.add_with("add?pin=false", tag, &data),
            kubo_ref.add_with("add?pin=false", tag, &data)
        );
        let cid = x.last().unwrap()["Hash"].as_str().unwrap().to_string();
        assert_eq!(Some(cid.as_str()), y.last().unwrap()["Hash"].as_str());
        cids.insert(tag, cid);
    }
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("e.txt"), content("e")).unwrap();
    std::fs::write(files.join("r.txt"), content("r")).unwrap();

    let side = |label, api: &str, proxy: String, peer: &str, kubo: &Kubo, version: Value| Side {
        label,
        api: api.to_string(),
        proxy,
        ids: vec![
            (peer.to_string(), "<peer>"),
            (kubo.id().to_string(), "<ipfs>"),
            // The ctl's health graph labels peers `12*` + their id's last six.
            (format!("12*{}", &peer[peer.len() - 6..]), "<short peer>"),
            (
                format!("12*{}", &kubo.id()[kubo.id().len() - 6..]),
                "<short ipfs>",
            ),
            (
                version["version"].as_str().expect("a version").to_string(),
                "<version>",
            ),
        ],
        files: files.clone(),
    };
    let ours_side = side(
        "pincluster",
        &ours.api,
        format!("http://127.0.0.1:{proxy_port}"),
        &ours.id,
        &kubo_ours,
        ours.get_json("/version").await.expect("GET /version"),
    );
    let ref_side = side(
        "reference",
        reference.api_url(),
        reference.proxy_url().to_string(),
        &reference.id,
        &kubo_ref,
        reference.get_json("/version").await.expect("GET /version"),
    );

    let started = std::time::Instant::now();
    let diffs = run(script(&cids), &ours_side, &ref_side).await;
    eprintln!("script run on both sides in {:.1?}", started.elapsed());

    let mut unexplained = vec![];
    let mut used = vec![false; ALLOWED.len()];
    for (case, aspect, report) in &diffs {
        match ALLOWED
            .iter()
            .position(|(c, a, _)| c == case && a == aspect)
        {
            Some(i) => used[i] = true,
            None => unexplained.push(report.as_str()),
        }
    }
    let stale: Vec<_> = ALLOWED
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|((c, a, _), _)| format!("{c} / {a}"))
        .collect();
    assert!(
        unexplained.is_empty() && stale.is_empty(),
        "{} unexplained difference(s):\n\n{}\n\nallowed differences that no longer differ: {stale:?}",
        unexplained.len(),
        unexplained.join("\n\n")
    );
    // Both logs end the test: a peer that died half-way shows here.
    drop((ours, reference));
}

/// The script: the same steps for both sides, in order.
fn script(cids: &BTreeMap<&str, String>) -> Vec<Step> {
    let [a, b, c, d, e, k, p, q] = ["a", "b", "c", "d", "e", "k", "p", "q"].map(|t| &cids[t]);
    // A CID neither daemon has, never pinned.
    let unknown = &common::cids("differential-unknown", 1)[0];
    let bad = "notacid";
    vec![
        // An empty cluster.
        rest("id", "GET", "/id"),
        rest("version", "GET", "/version"),
        rest("peers", "GET", "/peers"),
        rest("allocations empty", "GET", "/allocations"),
        rest("pins empty", "GET", "/pins"),
        rest("health", "GET", "/health"),
        rest("health alerts", "GET", "/health/alerts"),
        rest("metrics names", "GET", "/monitor/metrics"),
        rest("unknown path", "GET", "/nope"),
        rest("wrong method", "PUT", "/id"),
        rest("pins bad cid", "GET", &format!("/pins/{bad}")),
        rest("pin bad cid", "POST", &format!("/pins/{bad}")),
        rest("unpin bad cid", "DELETE", &format!("/pins/{bad}")),
        rest("status unknown", "GET", &format!("/pins/{unknown}")),
        rest(
            "status unknown local",
            "GET",
            &format!("/pins/{unknown}?local=true"),
        ),
        rest(
            "allocation unknown",
            "GET",
            &format!("/allocations/{unknown}"),
        ),
        rest("unpin unknown", "DELETE", &format!("/pins/{unknown}")),
        rest(
            "recover unknown",
            "POST",
            &format!("/pins/{unknown}/recover"),
        ),
        rest("recover all empty", "POST", "/pins/recover"),
        rest(
            "recover all local empty",
            "POST",
            "/pins/recover?local=true",
        ),
        rest("pins bad filter", "GET", "/pins?filter=bogus"),
        rest("allocations bad filter", "GET", "/allocations?filter=bogus"),
        rest("pins cids bad", "GET", &format!("/pins?cids={bad}")),
        rest("peer rm bad id", "DELETE", "/peers/notapeer"),
        rest(
            "peer rm crdt",
            "DELETE",
            "/peers/12D3KooWEkW9PXQ9TjkV5BqJZiFJcAohAswLPEWEYDzG4mmAkNso",
        ),
        proxy("proxy pin ls empty", "/api/v0/pin/ls"),
        proxy("proxy pin ls stream empty", "/api/v0/pin/ls?stream=true"),
        proxy(
            "proxy pin ls unknown",
            &format!("/api/v0/pin/ls?arg={unknown}"),
        ),
        proxy("proxy pin ls bad", &format!("/api/v0/pin/ls?arg={bad}")),
        proxy("proxy pin add no arg", "/api/v0/pin/add"),
        proxy("proxy pin add bad", &format!("/api/v0/pin/add?arg={bad}")),
        proxy(
            "proxy pin rm unknown",
            &format!("/api/v0/pin/rm?arg={unknown}"),
        ),
        proxy("proxy pin update no args", "/api/v0/pin/update"),
        proxy("proxy repo stat", "/api/v0/repo/stat"),
        proxy("proxy passthrough id", "/api/v0/id"),
        proxy("proxy passthrough unknown command", "/api/v0/nope"),
        proxy("proxy passthrough version", "/api/v0/version"),
        proxy("proxy pin rm no arg", "/api/v0/pin/rm"),
        proxy(
            "proxy pin update one arg",
            &format!("/api/v0/pin/update?arg={a}"),
        ),
        http("proxy pin ls GET", Api::Proxy, "GET", "/api/v0/pin/ls"),
        ctl("ctl id", &["id"]),
        ctl("ctl id json", &["--enc", "json", "id"]),
        ctl("ctl version", &["version"]),
        ctl("ctl peers ls", &["peers", "ls"]),
        ctl("ctl pin ls empty", &["pin", "ls"]),
        ctl("ctl status empty", &["status"]),
        ctl("ctl status unknown", &["status", unknown]),
        ctl("ctl pin rm unknown", &["pin", "rm", unknown]),
        ctl("ctl pin add bad", &["pin", "add", bad]),
        ctl("ctl health metrics", &["health", "metrics"]),
        ctl("ctl health alerts", &["health", "alerts"]),
        rest("metric freespace", "GET", "/monitor/metrics/freespace"),
        rest("metric unknown", "GET", "/monitor/metrics/nope"),
        rest("health graph", "GET", "/health/graph"),
        rest("trailing slash", "GET", "/id/"),
        rest("head", "HEAD", "/id"),
        rest("pin path bad", "POST", &format!("/pins/ipfs/{bad}")),
        rest("pin path single segment", "POST", "/pins/ipfs"),
        rest("get path route", "GET", &format!("/pins/ipfs/{a}")),
        rest("get long path route", "GET", &format!("/pins/ipfs/{a}/x/y")),
        rest("put path route", "PUT", &format!("/pins/ipfs/{a}")),
        rest(
            "unpin path unknown",
            "DELETE",
            &format!("/pins/ipfs/{unknown}"),
        ),
        rest(
            "allocations filter mixed",
            "GET",
            "/allocations?filter=pin,bogus",
        ),
        rest(
            "pin expired",
            "POST",
            &format!("/pins/{k}?expire-at=2000-01-01T00:00:00Z"),
        ),
        rest(
            "pin bad replication bounds",
            "POST",
            &format!("/pins/{k}?replication-min=3&replication-max=2"),
        ),
        rest(
            "pin replication half everywhere",
            "POST",
            &format!("/pins/{k}?replication-min=-1&replication-max=2"),
        ),
        rest(
            "pin replication below -1",
            "POST",
            &format!("/pins/{k}?replication-min=-5&replication-max=-1"),
        ),
        // One pin with options, through the REST API.
        rest(
            "pin with options",
            "POST",
            &format!("/pins/{a}?name=alpha&replication-min=1&replication-max=1&meta-k=v"),
        ),
        Step::Settle,
        rest("status pinned", "GET", &format!("/pins/{a}")),
        rest(
            "status pinned local",
            "GET",
            &format!("/pins/{a}?local=true"),
        ),
        rest("pins one", "GET", "/pins"),
        rest("pins filter pinned", "GET", "/pins?filter=pinned"),
        rest("pins filter error", "GET", "/pins?filter=pin_error"),
        rest("pins cids", "GET", &format!("/pins?cids={a}")),
        rest("allocations one", "GET", "/allocations"),
        rest("allocations pins", "GET", "/allocations?filter=pin"),
        rest("allocation", "GET", &format!("/allocations/{a}")),
        rest("recover pinned", "POST", &format!("/pins/{a}/recover")),
        rest("recover all nothing", "POST", "/pins/recover"),
        proxy("proxy pin ls one", "/api/v0/pin/ls"),
        proxy("proxy pin ls arg", &format!("/api/v0/pin/ls?arg={a}")),
        proxy("proxy pin ls stream", "/api/v0/pin/ls?stream=true"),
        ctl("ctl pin ls", &["pin", "ls"]),
        ctl("ctl pin ls cid", &["pin", "ls", a]),
        ctl("ctl status", &["status"]),
        ctl("ctl status cid json", &["--enc", "json", "status", a]),
        ctl("ctl recover cid", &["recover", a]),
        ctl("ctl status filter", &["status", "--filter", "pinned"]),
        ctl("ctl pin ls filter", &["pin", "ls", "--filter", "meta"]),
        rest(
            "pin by path",
            "POST",
            &format!("/pins/ipfs/{p}?name=bypath"),
        ),
        proxy("proxy pin add path form", &format!("/api/v0/pin/add/{a}")),
        // Pins through the proxy and the ctl.
        proxy("proxy pin add", &format!("/api/v0/pin/add?arg={b}")),
        ctl(
            "ctl pin add",
            &["pin", "add", "--no-status", "--name", "gamma", c],
        ),
        ctl(
            "ctl pin add options",
            &[
                "pin",
                "add",
                "--no-status",
                "--replication",
                "1",
                "--name",
                "delta",
                "--metadata",
                "k=v",
                "--expire-in",
                "1h",
                q,
            ],
        ),
        Step::Settle,
        ctl("ctl pin ls json", &["--enc", "json", "pin", "ls"]),
        ctl("ctl status local", &["status", "--local"]),
        ctl("ctl peers ls json", &["--enc", "json", "peers", "ls"]),
        ctl("ctl health graph", &["health", "graph"]),
        ctl("ctl pin rm options", &["pin", "rm", "--no-status", q]),
        // `unpin=false`, then the old pin removed once the new one is
        // pinned: with the default `unpin=true` the reference's tracker may
        // run Kubo's `pin/update` after the old pin is gone, which fails
        // ("datastore: key not found") and leaves the new pin in
        // `pin_error` until a recover.
        proxy(
            "proxy pin update",
            &format!("/api/v0/pin/update?arg={b}&arg={d}&unpin=false"),
        ),
        Step::Settle,
        proxy("proxy pin ls after update", "/api/v0/pin/ls"),
        rest("allocations after update", "GET", "/allocations"),
        proxy("proxy pin rm old", &format!("/api/v0/pin/rm?arg={b}")),
        proxy("proxy pin rm", &format!("/api/v0/pin/rm?arg={d}")),
        ctl("ctl pin rm", &["pin", "rm", "--no-status", c]),
        rest("unpin", "DELETE", &format!("/pins/{a}")),
        Step::Settle,
        rest("pins after unpin", "GET", "/pins"),
        rest("unpin by path", "DELETE", &format!("/pins/ipfs/{p}")),
        // Adds.
        upload("add", Api::Rest, "/add", "e.txt", &content("e")),
        upload(
            "add options",
            Api::Rest,
            "/add?cid-version=1&raw-leaves=true&name=opts&replication-min=1&replication-max=1",
            "f.txt",
            &content("f"),
        ),
        upload(
            "add no stream",
            Api::Rest,
            "/add?stream-channels=false",
            "g.txt",
            &content("g"),
        ),
        upload(
            "add bad option",
            Api::Rest,
            "/add?cid-version=7",
            "h.txt",
            &content("h"),
        ),
        upload(
            "add no pin",
            Api::Rest,
            "/add?no-pin=true",
            "l.txt",
            &content("l"),
        ),
        upload(
            "add wrapped",
            Api::Rest,
            "/add?wrap-with-directory=true",
            "m.txt",
            &content("m"),
        ),
        upload(
            "proxy add no pin",
            Api::Proxy,
            "/api/v0/add?pin=false",
            "n.txt",
            &content("n"),
        ),
        upload(
            "proxy add",
            Api::Proxy,
            "/api/v0/add",
            "i.txt",
            &content("i"),
        ),
        upload(
            "proxy add cid v1",
            Api::Proxy,
            "/api/v0/add?cid-version=1",
            "j.txt",
            &content("j"),
        ),
        ctl("ctl add", &["add", "--no-stream", "e.txt"]),
        ctl(
            "ctl add options",
            &[
                "add",
                "--cid-version",
                "1",
                "--name",
                "rho",
                "--replication",
                "1",
                "r.txt",
            ],
        ),
        ctl("ctl add quiet", &["add", "--quieter", "r.txt"]),
        Step::Settle,
        rest("pins after adds", "GET", "/pins"),
        // Blocks and DAG nodes pinned through the proxy.
        upload(
            "proxy block put pin",
            Api::Proxy,
            "/api/v0/block/put?pin=true",
            "block",
            &content("block"),
        ),
        upload(
            "proxy dag put pin",
            Api::Proxy,
            "/api/v0/dag/put?pin=true&input-codec=dag-json&store-codec=dag-cbor",
            "node",
            br#"{"differential":"node"}"#,
        ),
        upload(
            "proxy block put no pin",
            Api::Proxy,
            "/api/v0/block/put",
            "block",
            &content("loose block"),
        ),
        Step::Settle,
        rest("pins after puts", "GET", "/pins"),
        // Garbage collection: both daemons hold the same unpinned blocks.
        rest("ipfs gc local", "POST", "/ipfs/gc?local=true"),
        proxy("proxy repo gc", "/api/v0/repo/gc"),
        rest("ipfs gc", "POST", "/ipfs/gc"),
        ctl("ctl ipfs gc", &["ipfs", "gc"]),
        // Last: the reference changes its pinset on these even when it
        // answers an error (see ALLOWED), and pincluster may not.
        rest(
            "repin recursive as direct",
            "POST",
            &format!("/pins/{e}?mode=direct"),
        ),
        rest(
            "pin bad replication",
            "POST",
            &format!("/pins/{k}?replication-min=abc"),
        ),
        rest(
            "pin bad expire-in",
            "POST",
            &format!("/pins/{k}?expire-in=soon"),
        ),
    ]
}
