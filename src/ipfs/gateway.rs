//! The read-only HTTP gateway: `GET|HEAD /ipfs/<cid>[/path]` serves files
//! (with `Range`, one range per request, and a `Content-Type` from the
//! extension, else sniffed from the first bytes), folders as an HTML
//! listing (or their `index.html`), and clear 400 / 404 errors. Only the
//! local store is read.

use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use libp2p::Multiaddr;

use super::node::Node;
use super::rpc::{Body, full};
use super::unixfs::exporter::{self, ExportError, Kind};
use crate::api::query::path_decode;
use crate::api::serve::{ReqBody, ServeError, Server};

/// Serves the gateway on `addrs` until `shutdown`.
pub async fn serve(
    addrs: &[Multiaddr],
    node: Node,
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Vec<Multiaddr>, tokio::task::JoinHandle<()>), ServeError> {
    super::rpc::serve_node(addrs, node, server, shutdown, handle).await
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    body.push('\n');
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

async fn handle(node: Arc<Node>, req: Request<ReqBody>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the gateway is read-only: GET or HEAD",
        );
    }
    let raw_path = req.uri().path().to_string();
    let Some(rest) = raw_path.strip_prefix("/ipfs/") else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: paths start with /ipfs/<cid>",
        );
    };
    let (first, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let root = match Cid::try_from(first) {
        Ok(c) => c,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("invalid CID {first:?}: {e}"),
            );
        }
    };
    let sub = path_decode(sub);
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let looked = node
        .blocking(
            move |s| -> Result<(Cid, Kind, Option<Vec<exporter::DirEntry>>), ExportError> {
                let cid = exporter::resolve(s, &root, &sub)?;
                let kind = exporter::kind(s, &cid)?;
                let list = if kind == Kind::Dir {
                    Some(exporter::list(s, &cid)?)
                } else {
                    None
                };
                Ok((cid, kind, list))
            },
        )
        .await;
    let (cid, kind, list) = match looked {
        Ok(Ok(found)) => found,
        Ok(Err(e @ (ExportError::NoLink { .. } | ExportError::Missing(_)))) => {
            return text(StatusCode::NOT_FOUND, format!("not found: {e}"));
        }
        Ok(Err(e @ ExportError::NotDir(_))) => {
            return text(StatusCode::NOT_FOUND, format!("not found: {e}"));
        }
        Ok(Err(e)) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match (kind, list) {
        (Kind::Dir, Some(entries)) => {
            if !raw_path.ends_with('/') {
                let mut res = text(StatusCode::MOVED_PERMANENTLY, "");
                if let Ok(v) = HeaderValue::from_str(&format!("{raw_path}/")) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                return res;
            }
            if let Some(index) = entries.iter().find(|e| e.name == "index.html") {
                return file(&node, index.cid, "index.html", range, head).await;
            }
            listing(&raw_path, &entries, head)
        }
        (Kind::File(_), _) | (Kind::Symlink, _) => {
            let name = raw_path.rsplit('/').next().unwrap_or("").to_string();
            file(&node, cid, &name, range, head).await
        }
        (Kind::Dir, None) => text(StatusCode::INTERNAL_SERVER_ERROR, "folder without entries"),
    }
    .with_etag(cid)
}

trait WithEtag {
    fn with_etag(self, cid: Cid) -> Self;
}

impl WithEtag for Response<Body> {
    fn with_etag(mut self, cid: Cid) -> Self {
        if self.status().is_success() {
            let h = self.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{cid}\"")) {
                h.insert(header::ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("/ipfs/{cid}")) {
                h.insert("x-ipfs-path", v);
            }
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=29030400, immutable"),
            );
        }
        self
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a file of `size` bytes:
/// `Ok(None)` for no (or an ignored multi-) range, `Err` when unsatisfiable.
fn parse_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (a, "") => (a.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            if b < a {
                return Err(());
            }
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn file(
    node: &Node,
    cid: Cid,
    name: &str,
    range: Option<String>,
    head: bool,
) -> Response<Body> {
    let store = node.store().clone();
    // The first bytes, to sniff a type when the name says nothing.
    let peek = node
        .blocking(move |s| {
            let mut first = Vec::new();
            let size = match exporter::kind(s, &cid)? {
                Kind::File(size) => size,
                _ => 0,
            };
            exporter::read(s, &cid, 0, 512, &mut |b| {
                first.extend_from_slice(&b);
                true
            })?;
            Ok::<_, ExportError>((size, first))
        })
        .await;
    let (size, first) = match peek {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let content_type = content_type(name, &first);
    let (status, start, end) = match range.as_deref().map(|r| parse_range(r, size)) {
        None | Some(Ok(None)) => (StatusCode::OK, 0, size),
        Some(Ok(Some((a, b)))) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        Some(Err(())) => {
            let mut res = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return res;
        }
    };
    let body = if head {
        full(Bytes::new())
    } else {
        let (tx, body) = super::rpc::channel_body();
        tokio::task::spawn_blocking(move || {
            let mut send = |b: Bytes| tx.blocking_send(hyper::body::Frame::data(b)).is_ok();
            if let Err(e) = exporter::read(&store, &cid, start, end - start, &mut send) {
                tracing::warn!(%cid, error = %e, "gateway: read failed mid-file");
            }
        });
        body
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    res
}

/// From the extension; else HTML, PNG, JPEG, GIF, PDF by their first
/// bytes; else text when the start is UTF-8 without control bytes; else
/// `application/octet-stream`.
fn content_type(name: &str, first: &[u8]) -> String {
    if name.contains('.')
        && let Some(m) = mime_guess::from_path(name).first()
    {
        return m.to_string();
    }
    let starts = |p: &[u8]| first.starts_with(p);
    let lower = String::from_utf8_lossy(&first[..first.len().min(64)]).to_ascii_lowercase();
    let t = if lower.trim_start().starts_with("<!doctype html")
        || lower.trim_start().starts_with("<html")
    {
        "text/html; charset=utf-8"
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if starts(b"\xff\xd8\xff") {
        "image/jpeg"
    } else if starts(b"GIF8") {
        "image/gif"
    } else if starts(b"%PDF-") {
        "application/pdf"
    } else if std::str::from_utf8(first)
        .is_ok_and(|s| !s.chars().any(|c| c.is_control() && !c.is_whitespace()))
    {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    t.to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn listing(path: &str, entries: &[exporter::DirEntry], head: bool) -> Response<Body> {
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{p}</title></head>\n<body><h1>Index of {p}</h1>\n<table>\n",
        p = escape(path)
    );
    if path.trim_end_matches('/').matches('/').count() > 2 {
        html.push_str("<tr><td><a href=\"..\">..</a></td><td></td><td></td></tr>\n");
    }
    for e in entries {
        let n = escape(&e.name);
        html.push_str(&format!(
            "<tr><td><a href=\"{path}{n}\">{n}</a></td><td>{cid}</td><td>{size}</td></tr>\n",
            path = escape(path),
            cid = e.cid,
            size = e.tsize
        ));
    }
    html.push_str("</table></body></html>\n");
    let len = html.len();
    let mut res = Response::new(if head { full(Bytes::new()) } else { full(html) });
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
    }

    #[test]
    fn content_types_come_from_names_then_bytes() {
        assert_eq!(content_type("a.css", b""), "text/css");
        assert_eq!(content_type("x", b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(
            content_type("x", b"<!DOCTYPE html><p>"),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type("x", b"hello\n"), "text/plain; charset=utf-8");
        assert_eq!(
            content_type("x", b"\x00\x01\x02"),
            "application/octet-stream"
        );
    }
}
