//! The daemon's headers on hijacked replies, so that a browser or client
//! sees what the daemon itself would send: CORS answers mirrored per
//! request, and a set of headers (`Access-Control-Expose-Headers` plus
//! `extract_headers_extra`) copied from one daemon reply and cached for
//! `extract_headers_ttl`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::Request;
use hyper::header::{self, HeaderName, HeaderValue};

use super::Ctx;
use crate::api::serve::ReqBody;

/// How long the daemon may take to answer a header probe; past it the
/// reply goes out without the headers rather than late.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `api.ipfsproxy`'s header settings.
#[derive(Debug, Clone)]
pub struct HeaderConfig {
    /// Daemon headers to copy besides `Access-Control-Expose-Headers`.
    pub extra: Vec<String>,
    /// The daemon path (`/api/v0/version`) whose reply headers are copied.
    pub path: String,
    /// How long a copy is used; zero = for ever once fetched.
    pub ttl: Duration,
}

type Headers = Vec<(HeaderName, HeaderValue)>;

/// The context plus the cached copy of the daemon's headers.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) ctx: Ctx,
    config: HeaderConfig,
    names: Vec<HeaderName>,
    cache: Mutex<Option<(Instant, Headers)>>,
}

impl Shared {
    pub(super) fn new(ctx: Ctx, config: HeaderConfig) -> Self {
        let mut names = vec![header::ACCESS_CONTROL_EXPOSE_HEADERS];
        for extra in &config.extra {
            match HeaderName::from_bytes(extra.as_bytes()) {
                Ok(n) => names.push(n),
                Err(_) => {
                    tracing::warn!(header = %extra, "extract_headers_extra: not a header name, ignored")
                }
            }
        }
        Shared {
            ctx,
            config,
            names,
            cache: Mutex::new(None),
        }
    }

    /// The daemon's CORS answer for this request's origin and method:
    /// asked with an `OPTIONS` preflight of the same path. Nothing when the
    /// request has no `Origin` (the daemon would send none either).
    pub(super) async fn cors(&self, req: &Request<ReqBody>) -> Headers {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return Vec::new();
        };
        let url = format!("{}{}", self.ctx.daemon.origin(), req.uri().path());
        let probe = self
            .ctx
            .daemon
            .http()
            .request(reqwest::Method::OPTIONS, url)
            .header(header::ORIGIN, origin.clone())
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, req.method().as_str())
            .timeout(PROBE_TIMEOUT)
            .send()
            .await;
        let Ok(res) = probe else {
            return Vec::new();
        };
        [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::VARY,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ]
        .into_iter()
        .filter_map(|n| res.headers().get(&n).map(|v| (n, v.clone())))
        .collect()
    }

    /// The copied daemon headers, fetched again when older than the TTL.
    /// A failed fetch keeps the last copy (or none).
    pub(super) async fn extracted(&self) -> Headers {
        let ttl = self.config.ttl;
        if let Ok(cache) = self.cache.lock()
            && let Some((at, headers)) = cache.as_ref()
            && (ttl.is_zero() || at.elapsed() < ttl)
        {
            return headers.clone();
        }
        let url = format!("{}{}", self.ctx.daemon.origin(), self.config.path);
        let fetched = self
            .ctx
            .daemon
            .http()
            .post(url)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await;
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match fetched {
            Ok(res) => {
                let headers: Headers = self
                    .names
                    .iter()
                    .filter_map(|n| res.headers().get(n).map(|v| (n.clone(), v.clone())))
                    .collect();
                *cache = Some((Instant::now(), headers.clone()));
                headers
            }
            Err(e) => {
                tracing::debug!(error = %e, "IPFS proxy: daemon headers not refreshed");
                cache.as_ref().map(|(_, h)| h.clone()).unwrap_or_default()
            }
        }
    }
}
