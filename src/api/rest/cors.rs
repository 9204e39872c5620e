//! CORS with the semantics of rs/cors (the reference's library), driven by
//! the `cors_*` keys: preflights are answered here with 204 and never reach
//! the routes; actual requests are served whatever their origin, with the
//! `Access-Control-*` headers only when the origin and method are allowed.

use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::config::RestApiConfig;

/// rs/cors' allowed headers when the list is empty.
const DEFAULT_HEADERS: [&str; 3] = ["accept", "content-type", "x-requested-with"];

/// The CORS policy of one API.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<String>,
    methods: Vec<String>,
    /// Lower case; `*` allows any.
    headers: Vec<String>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: u64,
}

impl Cors {
    /// The policy `config` describes.
    pub fn new(config: &RestApiConfig) -> Cors {
        let mut headers: Vec<String> = if config.cors_allowed_headers.is_empty() {
            DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect()
        } else {
            config
                .cors_allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect()
        };
        // rs/cors always lets the Origin header through.
        headers.push("origin".to_string());
        let exposed = (!config.cors_exposed_headers.is_empty())
            .then(|| HeaderValue::try_from(config.cors_exposed_headers.join(", ")).ok())
            .flatten();
        Cors {
            origins: config
                .cors_allowed_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            methods: config
                .cors_allowed_methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            headers,
            exposed,
            credentials: config.cors_allow_credentials,
            max_age: config.cors_max_age.0.as_secs(),
        }
    }

    fn any_origin(&self) -> bool {
        self.origins.iter().any(|o| o == "*")
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins
            .iter()
            .any(|allowed| match allowed.split_once('*') {
                // One wildcard, as rs/cors allows: `https://*.example.com`.
                Some((pre, post)) => {
                    origin.len() >= pre.len() + post.len()
                        && origin.starts_with(pre)
                        && origin.ends_with(post)
                }
                None => *allowed == origin,
            })
    }

    fn method_allowed(&self, method: &str) -> bool {
        method.eq_ignore_ascii_case("OPTIONS")
            || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }

    fn headers_allowed(&self, requested: &[String]) -> bool {
        self.headers.iter().any(|h| h == "*") || requested.iter().all(|r| self.headers.contains(r))
    }

    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin() {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer to a preflight (`OPTIONS` with
    /// `Access-Control-Request-Method`), or `None` for any other request.
    pub fn preflight(&self, method: &Method, req: &HeaderMap) -> Option<warp::reply::Response> {
        if method != Method::OPTIONS {
            return None;
        }
        let wanted = req.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut res = warp::reply::Response::new(Vec::new().into());
        *res.status_mut() = StatusCode::NO_CONTENT;
        let out = res.headers_mut();
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let Some(origin) = req.get(header::ORIGIN) else {
            return Some(res);
        };
        let requested: Vec<String> = req
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let allowed = origin.to_str().is_ok_and(|o| self.origin_allowed(o))
            && wanted.to_str().is_ok_and(|m| self.method_allowed(m))
            && self.headers_allowed(&requested);
        if !allowed {
            return Some(res);
        }
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, wanted.clone());
        if let Some(v) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if self.max_age > 0 {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.into());
        }
        Some(res)
    }

    /// Adds the CORS headers to the answer to an actual request.
    pub fn actual(&self, method: &Method, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        out.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin else { return };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o))
            || !self.method_allowed(method.as_str())
        {
            return;
        }
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        if let Some(exposed) = &self.exposed {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}
