//! Passing requests through to the daemon, as Go's `httputil.ReverseProxy`
//! does: same method, path, query and headers (hop-by-hop ones dropped,
//! `X-Forwarded-For` added), the request body streamed up as it arrives
//! and the reply streamed back as it comes, status and headers kept.
//! Nothing is held whole, so a 1 GB add or cat costs a few buffers.

use std::net::SocketAddr;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Request, Response, StatusCode};

use super::{Body, kubo_error};
use crate::api::serve::ReqBody;
use crate::cluster::ipfs::RawIpfsApi;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Forwards `req` to the daemon and relays its reply; `remote` is the
/// client's address (none over a unix socket).
pub(super) async fn passthrough(
    daemon: &RawIpfsApi,
    req: Request<ReqBody>,
    remote: Option<SocketAddr>,
) -> Response<Body> {
    let query = req.uri().query().map(str::to_string);
    match send(daemon, req, remote, query.as_deref()).await {
        Ok(res) => relay(res),
        Err(e) => bad_gateway(&e),
    }
}

/// Sends `req` to the daemon with `query` in place of its own: the caller
/// reads the reply. `remote` is added to `X-Forwarded-For`.
pub(super) async fn send(
    daemon: &RawIpfsApi,
    req: Request<ReqBody>,
    remote: Option<SocketAddr>,
    query: Option<&str>,
) -> Result<reqwest::Response, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let mut url = format!("{}{}", daemon.origin(), parts.uri.path());
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut headers = strip(parts.headers);
    // The daemon's own authority, as any client of it would send.
    headers.remove(header::HOST);
    if let Some(remote) = remote {
        let ip = remote.ip().to_string();
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = forwarded.parse() {
            headers.insert("x-forwarded-for", v);
        }
    }
    let mut out = daemon
        .http()
        .request(parts.method, url)
        .headers(headers)
        .version(reqwest::Version::HTTP_11);
    if has_body {
        out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    out.send().await
}

/// The daemon's reply as ours: status, end-to-end headers, body streamed
/// with its trailers. `Trailer` is hop-by-hop, but Go's `ReverseProxy`
/// announces the upstream's trailers again (and sends them after the body),
/// so the reference's clients see Kubo's `Trailer: X-Stream-Error`; so do ours.
pub(super) fn relay(res: reqwest::Response) -> Response<Body> {
    let announced: Vec<_> = res
        .headers()
        .get_all(header::TRAILER)
        .iter()
        .cloned()
        .collect();
    let (mut parts, body) = hyper::Response::from(res).into_parts();
    parts.headers = strip(std::mem::take(&mut parts.headers));
    for value in announced {
        parts.headers.append(header::TRAILER, value);
    }
    Response::from_parts(
        parts,
        BodyExt::boxed_unsync(body.map_err(std::io::Error::other)),
    )
}

/// The daemon could not be reached or broke off before replying.
pub(super) fn bad_gateway(e: &reqwest::Error) -> Response<Body> {
    tracing::warn!(error = %e, "IPFS proxy: the IPFS daemon did not answer");
    kubo_error(
        StatusCode::BAD_GATEWAY,
        format!("the IPFS daemon did not answer: {e}"),
    )
}

/// `headers` without the hop-by-hop ones, including any the `Connection`
/// header names.
fn strip(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers
}
