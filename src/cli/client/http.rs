//! The HTTP side of the client: one REST API endpoint, its requests (with
//! `--debug` tracing), its JSON and NDJSON answers, and the errors that
//! decide the exit code.

use std::error::Error as StdError;
use std::io::Write;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::format::{emit, render};
use super::{ClientOpts, Encoding};
use crate::ndjson::{LineSplitter, LineTooLong};
use crate::types::ApiError;

/// The most we buffer of one response body (a streamed item is held to
/// [`crate::ndjson::MAX_LINE`]). Pins and IDs are a few KiB; anything near
/// this is not a cluster API talking.
const MAX_BODY_BYTES: usize = 16 << 20;

/// Why a command failed. Like the Go client, a failed call is reported as
/// an API error object on stdout (code 0 when no HTTP status applies);
/// what fails before or after the calls is a local error on stderr.
#[derive(Debug, thiserror::Error)]
pub(in crate::cli) enum CallError {
    /// Something local: bad input the parser could not catch, a file, TLS.
    #[error("error {doing}: {message}")]
    Local {
        doing: &'static str,
        message: String,
    },
    /// `--wait` gave up after `--wait-timeout`.
    #[error("error waiting for pin status: context deadline exceeded")]
    WaitTimeout,
    /// The API answered with an error status.
    #[error("{}", .0.message)]
    Api(ApiError),
    /// The request did not complete: connection, timeout, body read.
    #[error("{}", chain(.0))]
    Transport(#[source] reqwest::Error),
    /// The TLS handshake failed; the text says what to try.
    #[error("{}: {hint}", chain(.source))]
    Tls {
        #[source]
        source: reqwest::Error,
        hint: &'static str,
    },
    /// A success answer whose body is not the expected JSON.
    #[error("{source}")]
    Decode {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    #[error("expected streaming response with code 200/204")]
    NotAStream(u16),
    #[error("bad JSON in the response stream: {0}")]
    StreamDecode(#[source] serde_json::Error),
    #[error("the response stream ended inside a JSON object")]
    Truncated,
    #[error("response larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("in the response stream, {0}")]
    LineTooLong(#[from] LineTooLong),
}

impl CallError {
    pub(super) fn local(doing: &'static str, message: impl ToString) -> Self {
        CallError::Local {
            doing,
            message: message.to_string(),
        }
    }

    /// The error as the API error object ipfs-cluster-ctl would print.
    fn as_api_error(&self) -> ApiError {
        let code = match self {
            CallError::Api(e) => return e.clone(),
            CallError::Decode { status, .. } | CallError::NotAStream(status) => *status,
            _ => 0,
        };
        ApiError {
            code,
            message: self.to_string(),
        }
    }

    /// Whether no connection to the API could be made (nobody listens).
    pub(in crate::cli) fn is_connect(&self) -> bool {
        matches!(self, CallError::Transport(e) if e.is_connect())
    }

    fn is_local(&self) -> bool {
        matches!(self, CallError::Local { .. } | CallError::WaitTimeout)
    }

    /// ctl's codes: 62 a deadline passed, 1 nothing usable came back, 2
    /// the API answered with an error.
    pub(super) fn exit_code(&self) -> i32 {
        match self {
            CallError::Transport(e) if e.is_timeout() => 62,
            CallError::WaitTimeout => 62,
            CallError::Local { .. } => 1,
            _ if self.as_api_error().code == 0 => 1,
            _ => 2,
        }
    }

    /// Prints the error where ctl does: local errors as `error ...` on
    /// stderr, failed calls as an error object on stdout.
    pub(super) fn report(
        &self,
        enc: Encoding,
        out: &mut (dyn Write + Send),
        log: &mut (dyn Write + Send),
    ) {
        if self.is_local() {
            emit(log, &format!("{self}\n"));
        } else {
            emit(out, &render(enc, &self.as_api_error()));
        }
    }
}

/// An error with its causes, which reqwest keeps out of its own message
/// ("error sending request" says nothing about the refused connection).
pub(super) fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A request body: its content type, the bytes (possibly streamed) and
/// what `--debug` prints instead of them.
pub(super) struct RequestBody {
    pub content_type: String,
    pub body: reqwest::Body,
    pub describe: String,
}

/// An HTTP client for one REST API endpoint.
pub(in crate::cli) struct Api {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
    debug: bool,
}

impl Api {
    pub(in crate::cli) fn new(
        opts: &ClientOpts,
        log: &mut (dyn Write + Send),
    ) -> Result<Self, CallError> {
        let auth = opts.basic_auth.as_deref().and_then(parse_credentials);
        let mut https = opts.https;
        if auth.is_some() && !https && !opts.force_http {
            // As ctl: credentials never travel in clear unless asked to.
            emit(
                log,
                "SSL automatically enabled with basic auth credentials. Set \"force-http\" to disable\n",
            );
            https = true;
        }
        let base = opts.host.base_url(https);
        let mut builder = reqwest::Client::builder();
        if let super::ApiHost::Unix(path) = &opts.host {
            builder = builder.unix_socket(path.clone());
        }
        if opts.no_check_certificate {
            // ctl's InsecureSkipVerify: neither the chain nor the name.
            builder = builder.danger_accept_invalid_certs(true);
        }
        if opts.timeout > 0 {
            builder = builder.timeout(Duration::from_secs(opts.timeout));
        }
        let http = builder
            .build()
            .map_err(|e| CallError::local("creating API client", chain(&e)))?;
        Ok(Api {
            http,
            base,
            auth,
            debug: opts.debug,
        })
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<RequestBody>,
        log: &mut (dyn Write + Send),
    ) -> Result<reqwest::Response, CallError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let mut describe = None;
        if let Some(b) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, &b.content_type)
                .body(b.body);
            describe = Some((b.content_type, b.describe));
        }
        let request = request.build().map_err(CallError::Transport)?;
        if self.debug {
            // What the seed calls the way to learn the API: the call, its
            // query (decoded, one per line) and its body.
            let url = request.url();
            let mut text = format!("> {} {}\n", request.method(), url);
            for (k, v) in url.query_pairs() {
                text.push_str(&format!(">   {k}={v}\n"));
            }
            match &describe {
                Some((content_type, what)) => {
                    text.push_str(&format!("> Content-Type: {content_type}\n> {what}\n"));
                }
                None => text.push_str("> (no body)\n"),
            }
            emit(log, &text);
        }
        let response = self.http.execute(request).await.map_err(sending)?;
        if self.debug {
            emit(log, &format!("< {}\n", response.status()));
        }
        Ok(response)
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        log: &mut (dyn Write + Send),
    ) -> Result<Vec<u8>, CallError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(CallError::Transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(CallError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if self.debug {
            emit(log, &format!("{}\n", String::from_utf8_lossy(&body)));
        }
        Ok(body)
    }

    /// One request, one JSON answer; `None` for 202 and 204 (no content).
    pub(in crate::cli) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        log: &mut (dyn Write + Send),
    ) -> Result<Option<T>, CallError> {
        let response = self.send(method, path, query, None, log).await?;
        let status = response.status();
        let body = self.read_body(response, log).await?;
        if status.is_client_error() || status.is_server_error() {
            return Err(CallError::Api(error_from_body(status, &body)));
        }
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|source| CallError::Decode {
                status: status.as_u16(),
                source,
            })
    }

    /// One request answered by a stream of JSON objects (204 when there are
    /// none), each handed to `on_item` as soon as it is complete.
    pub(in crate::cli) async fn stream<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        log: &mut (dyn Write + Send),
        on_item: &mut (dyn FnMut(T) + Send),
    ) -> Result<(), CallError> {
        let response = self.send(method, path, query, None, log).await?;
        self.read_stream(response, log, on_item).await
    }

    /// The items of a streamed answer, as [`Api::stream`] reads them.
    pub(super) async fn read_stream<T: DeserializeOwned>(
        &self,
        mut response: reqwest::Response,
        log: &mut (dyn Write + Send),
        on_item: &mut (dyn FnMut(T) + Send),
    ) -> Result<(), CallError> {
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = self.read_body(response, log).await?;
            return Err(CallError::Api(error_from_body(status, &body)));
        }
        if status != StatusCode::OK && status != StatusCode::NO_CONTENT {
            return Err(CallError::NotAStream(status.as_u16()));
        }
        let mut items = StreamItems::default();
        while let Some(chunk) = response.chunk().await.map_err(CallError::Transport)? {
            if self.debug {
                emit(log, &String::from_utf8_lossy(&chunk));
            }
            items.push(&chunk, on_item)?;
        }
        items.finish(on_item)
    }
}

/// A failed request as a call error: a TLS failure with a hint.
fn sending(e: reqwest::Error) -> CallError {
    match tls_hint(&e) {
        Some(hint) => CallError::Tls { source: e, hint },
        None => CallError::Transport(e),
    }
}

/// What to try when the TLS handshake failed, if it did.
fn tls_hint(e: &reqwest::Error) -> Option<&'static str> {
    use tokio_rustls::rustls;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        match c.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(_)) => {
                return Some(
                    "certificate verify failed (use --no-check-certificate for a \
                     self-signed certificate)",
                );
            }
            Some(rustls::Error::InvalidMessage(_)) => {
                return Some(
                    "the server does not speak TLS (an http endpoint? without --https, or \
                     with --basic-auth add --force-http)",
                );
            }
            Some(_) => return Some("TLS handshake failed"),
            None => {}
        }
        // rustls's error travels inside io::Errors, whose `source()` skips
        // what they wrap: look inside with `get_ref`.
        cause = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => c.source(),
        };
    }
    None
}

/// `user[:password]`; no user means no authentication, as in the reference.
pub(super) fn parse_credentials(s: &str) -> Option<(String, String)> {
    let (user, password) = s.split_once(':').unwrap_or((s, ""));
    (!user.is_empty()).then(|| (user.to_owned(), password.to_owned()))
}

/// The error object of an error answer. Like the Go client, a body that is
/// not one (a proxy's HTML, gorilla's empty 405) becomes the message.
pub(super) fn error_from_body(status: StatusCode, body: &[u8]) -> ApiError {
    serde_json::from_slice(body).unwrap_or_else(|_| ApiError {
        code: status.as_u16(),
        message: String::from_utf8_lossy(body).into_owned(),
    })
}

/// The items of a streamed answer, decoded as its bytes arrive. Values
/// are cut on newlines: ipfs-cluster's server writes each with Go's
/// `json.Encoder`, which ends it with one. (Go's client would also take
/// values separated by spaces; no server of the API writes them.)
#[derive(Default)]
pub(super) struct StreamItems {
    lines: LineSplitter,
}

impl StreamItems {
    pub(super) fn push<T: DeserializeOwned>(
        &mut self,
        chunk: &[u8],
        on_item: &mut (dyn FnMut(T) + Send),
    ) -> Result<(), CallError> {
        self.lines.push(chunk);
        while let Some(line) = self.lines.next_line()? {
            on_item(serde_json::from_slice(line).map_err(CallError::StreamDecode)?);
        }
        Ok(())
    }

    /// The last item, which needs no newline; one cut short means the
    /// stream was.
    pub(super) fn finish<T: DeserializeOwned>(
        &mut self,
        on_item: &mut (dyn FnMut(T) + Send),
    ) -> Result<(), CallError> {
        if let Some(line) = self.lines.finish()? {
            on_item(serde_json::from_slice(line).map_err(|e| {
                if e.is_eof() {
                    CallError::Truncated
                } else {
                    CallError::StreamDecode(e)
                }
            })?);
        }
        Ok(())
    }
}
