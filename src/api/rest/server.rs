//! The HTTP layer around the routes, in the reference's middleware order:
//! authentication, then CORS, then the trailing-slash redirect, then the
//! routes (warp). It runs on the shared server ([`crate::api::serve`]:
//! TLS, timeouts, the request header limit) rather than `warp::serve`, for
//! what warp does not expose, among which the `X-Stream-Error` trailer
//! that ends every NDJSON stream.
//!
//! About that trailer: hyper sends response trailers only to clients whose
//! request said `TE: trailers` (RFC 9110 allows a server to drop them
//! otherwise). Those clients get the trailer exactly as the reference
//! sends it: empty when the stream went well, the error text when it did
//! not. A client that did not ask for trailers (Go's client, curl, browsers)
//! cannot be told in a trailer, so a stream that fails midway is *cut*:
//! the body ends without chunked encoding's final empty chunk and the
//! connection closes. Go's client then reports `unexpected EOF`, curl
//! `transfer closed with outstanding read data remaining`: the failure is
//! never mistaken for a complete list. The error text is logged.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use tower_service::Service;
use warp::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};

use super::auth::{Auth, Denied};
use super::cors::Cors;
use super::reply::error;
use crate::api::serve::Server;
use crate::config::RestApiConfig;

/// The largest request body of any route but `POST /add` (which streams
/// its body to the IPFS daemon): pin options travel in the query, so
/// bodies are tiny JSON objects.
pub const MAX_BODY: usize = 1 << 20;

/// The error texts a streamed response met, read once the body has ended.
/// A handler that streams puts one in its response's extensions.
#[derive(Debug, Clone, Default)]
pub struct StreamErrors(Arc<Mutex<Vec<String>>>);

impl StreamErrors {
    /// Records an error met while producing the stream.
    pub fn push(&self, error: String) {
        tracing::warn!(%error, "REST API stream ended by an error");
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(error);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// In a streamed response's extensions: no trailer at all when the stream
/// went well. The reference's `/add` sets `X-Stream-Error` only on an
/// error, where its other streams always set it, empty when all went well.
#[derive(Debug, Clone, Copy)]
pub struct TrailerOnlyOnError;

/// The `X-Stream-Error` trailer name.
pub const STREAM_ERROR: &str = "x-stream-error";

/// What every request goes through before the routes.
#[derive(Debug)]
pub struct Layer {
    auth: Option<Auth>,
    cors: Cors,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Layer {
    /// The layer `config` describes. Configured headers that are not valid
    /// HTTP are skipped with a warning.
    pub fn new(config: &RestApiConfig) -> Layer {
        let mut headers = Vec::new();
        for (name, values) in &config.headers {
            for value in values {
                match (
                    HeaderName::try_from(name.as_str()),
                    HeaderValue::try_from(value.as_str()),
                ) {
                    (Ok(n), Ok(v)) => headers.push((n, v)),
                    _ => {
                        tracing::warn!(%name, %value, "api.restapi.headers: not a valid header, skipped")
                    }
                }
            }
        }
        Layer {
            auth: config.basic_auth_credentials.clone().map(Auth::new),
            cors: Cors::new(config),
            headers,
        }
    }
}

/// The response body: the route's body, then, for streams, the trailer.
#[derive(Debug)]
pub struct ApiBody {
    inner: Option<warp::reply::Response>,
    errors: Option<StreamErrors>,
    trailers_wanted: bool,
    /// [`TrailerOnlyOnError`] was set.
    only_on_error: bool,
    /// The error that ends the body on the next poll.
    cut: Option<String>,
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(cut) = self.cut.take() {
            return Poll::Ready(Some(Err(cut.into())));
        }
        let Some(res) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(res.body_mut()).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Ready(None) => {
                self.inner = None;
                let Some(errors) = self.errors.take() else {
                    return Poll::Ready(None);
                };
                let errors = errors.take();
                if !errors.is_empty() && !self.trailers_wanted {
                    // No way to tell this client: cut the body short. Not
                    // at once: one `Pending` first lets hyper flush the
                    // items already written, then the error closes the
                    // connection without the final chunk.
                    self.cut = Some(errors.join("; "));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if errors.is_empty() && self.only_on_error {
                    return Poll::Ready(None);
                }
                let mut trailers = HeaderMap::new();
                let name = HeaderName::from_static(STREAM_ERROR);
                if errors.is_empty() {
                    // Always set, even empty, as the reference does for
                    // browser clients.
                    trailers.insert(name.clone(), HeaderValue::from_static(""));
                }
                for e in errors {
                    trailers.append(name.clone(), header_text(&e));
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            None => self.cut.is_none(),
            Some(res) => self.errors.is_none() && res.body().is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(res) if self.errors.is_none() => res.body().size_hint(),
            Some(_) => SizeHint::default(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// An error text as a header value: control characters become spaces.
fn header_text(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeaderValue::try_from(clean).unwrap_or_else(|_| HeaderValue::from_static("stream error"))
}

/// Whether the request's `TE` header lists `trailers`.
fn wants_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    })
}

/// One request through the layer and, if it gets that far, the routes.
pub async fn handle<S, B>(
    layer: Arc<Layer>,
    mut routes: S,
    req: Request<B>,
) -> Result<Response<ApiBody>, Infallible>
where
    S: Service<Request<Limited<B>>, Response = warp::reply::Response, Error = Infallible>,
{
    let trailers_wanted = wants_trailers(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let open = method == Method::OPTIONS || (method == Method::GET && path == "/health");
    let user = match (&layer.auth, open) {
        (Some(auth), false) => match auth.check(req.headers()) {
            Ok(user) => Some(user),
            // Outside CORS, as in the reference: no CORS headers on a 401.
            Err(denied) => return Ok(finish(&layer, denied.response(), false)),
        },
        _ => None,
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(preflight) = layer.cors.preflight(&method, req.headers()) {
        return Ok(finish(&layer, preflight, false));
    }
    let mut res = if path.len() > 1 && path.ends_with('/') {
        redirect_without_slash(&req)
    } else if method == Method::POST && path == "/token" {
        issue_token(&layer, user.as_deref())
    } else {
        let too_big = path != "/add"
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some_and(|n| n > MAX_BODY as u64);
        if too_big {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_BODY} bytes"),
            )
        } else {
            let limit = if path == "/add" { usize::MAX } else { MAX_BODY };
            let req = req.map(|body| Limited::new(body, limit));
            match routes.call(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        }
    };
    layer
        .cors
        .actual(&method, origin.as_ref(), res.headers_mut());
    Ok(finish(&layer, res, trailers_wanted))
}

/// Adds the configured headers to JSON answers and wraps the body.
fn finish(
    layer: &Layer,
    mut res: warp::reply::Response,
    trailers_wanted: bool,
) -> Response<ApiBody> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        for (name, value) in &layer.headers {
            res.headers_mut().append(name.clone(), value.clone());
        }
    }
    let errors = res.extensions_mut().remove::<StreamErrors>();
    let only_on_error = res.extensions().get::<TrailerOnlyOnError>().is_some();
    let (parts, body) = res.into_parts();
    let inner = Some(warp::reply::Response::new(body));
    Response::from_parts(
        parts,
        ApiBody {
            inner,
            errors,
            trailers_wanted,
            only_on_error,
            cut: None,
        },
    )
}

/// 307 to the same URL without the final `/`, so a POST stays a POST.
fn redirect_without_slash<B>(req: &Request<B>) -> warp::reply::Response {
    let path = req.uri().path().trim_end_matches('/');
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    // Go's `http.Redirect`: a GET or HEAD gets a short HTML note with the
    // target, other methods no body.
    let note = (req.method() == Method::GET || req.method() == Method::HEAD).then(|| {
        format!(
            "<a href=\"{}\">Temporary Redirect</a>.\n",
            html_escape(&target)
        )
    });
    let mut res = warp::reply::Response::new(note.clone().unwrap_or_default().into());
    *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if note.is_some() {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    if let Ok(v) = HeaderValue::try_from(target) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// The five characters Go's `html.EscapeString` replaces.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// `POST /token`: a JWT for the user who passed authentication.
fn issue_token(layer: &Layer, user: Option<&str>) -> warp::reply::Response {
    match (&layer.auth, user) {
        (Some(auth), Some(user)) => match auth.token(user) {
            Some(token) => {
                super::reply::json(StatusCode::OK, &serde_json::json!({ "token": token }))
            }
            None => Denied::Token.response(),
        },
        _ => error(StatusCode::UNAUTHORIZED, "unauthorized".to_string()),
    }
}

/// Serves the routes behind the layer on `listeners` until `shutdown`.
pub async fn run(
    listeners: Vec<crate::api::serve::Listener>,
    server: Server,
    config: RestApiConfig,
    ctx: crate::cluster::Cluster,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let layer = Arc::new(Layer::new(&config));
    let service = warp::service(super::routes(ctx));
    let answer = move |req, _remote| {
        let (layer, service) = (layer.clone(), service.clone());
        async move {
            match handle(layer, service, req).await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        }
    };
    server.run(listeners, answer, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server whose only route streams two items, then fails.
    async fn failing_stream_server() -> SocketAddr {
        use warp::Filter;
        let route = warp::any().then(|| {
            super::super::reply::ndjson(futures::stream::iter(vec![
                Ok(1),
                Ok(2),
                Err("disk on fire".to_string()),
            ]))
        });
        let service = warp::service(route);
        let layer = Arc::new(Layer::new(&RestApiConfig::restapi_default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (layer, service) = (layer.clone(), service);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |req| handle(layer.clone(), service, req)),
                ));
            }
        });
        addr
    }

    async fn get(addr: SocketAddr, extra: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        String::from_utf8_lossy(&raw).into_owned()
    }

    #[tokio::test]
    async fn a_mid_stream_error_is_a_trailer_for_clients_that_ask() {
        let addr = failing_stream_server().await;
        let raw = get(addr, "TE: trailers\r\n").await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("1\n2\n\r\n"), "{raw}");
        assert!(
            raw.ends_with("0\r\nx-stream-error: disk on fire\r\n\r\n"),
            "{raw}"
        );
    }

    #[tokio::test]
    async fn a_mid_stream_error_cuts_the_body_for_other_clients() {
        let addr = failing_stream_server().await;
        let raw = get(addr, "").await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("2\n\r\n"), "the items before the error: {raw}");
        // No final empty chunk: the client cannot take this for a whole list.
        assert!(!raw.ends_with("0\r\n\r\n"), "{raw}");
    }
}
