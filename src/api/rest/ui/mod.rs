//! The browser dashboard at `GET /ui`: the peers with their state and
//! metrics, pin counts by status, alerts, and the health graph drawn as a
//! picture; it refreshes itself every few seconds.
//!
//! The page, its script and its style are compiled into the binary (no CDN,
//! nothing to install) and served by the REST router itself, so they sit
//! behind the same authentication as the API. The script reads the API
//! with relative URLs (`health/graph`, `peers`, ...) from the same origin,
//! so whatever credentials the browser holds for the API carry over.

use warp::Filter;
use warp::http::{HeaderValue, header};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Nothing but these assets and this origin's API: the page loads no
/// third-party code, and an injected inline script would not run.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> warp::reply::Response {
    let mut res = warp::reply::Response::new(body.into());
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // The assets change with the binary; a stale script against a newer
    // API would draw nonsense.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// `GET /ui`, `/ui/app.js`, `/ui/style.css`. (`/ui/` is redirected to
/// `/ui` by the HTTP layer, as every path with a trailing slash: `/ui` is
/// the one place from which the page's relative URLs reach the API.)
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone
{
    let page = warp::path!("ui")
        .and(warp::get())
        .map(|| asset(PAGE, "text/html; charset=utf-8"));
    let script = warp::path!("ui" / "app.js")
        .and(warp::get())
        .map(|| asset(SCRIPT, "text/javascript; charset=utf-8"));
    let style = warp::path!("ui" / "style.css")
        .and(warp::get())
        .map(|| asset(STYLE, "text/css; charset=utf-8"));
    page.or(script).unify().or(style).unify()
}
