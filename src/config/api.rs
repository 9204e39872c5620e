//! The `api` section: the REST API, the IPFS proxy, the Pinning Service API.

use std::collections::BTreeMap;
use std::fmt;

use libp2p::Multiaddr;
use serde::Serialize;

use libp2p::PeerId;

use super::{
    ConfigError, GoDuration, builtin_addr, ensure, is_false, ser_addrs, ser_display,
    ser_opt_display, strings, validate_max_header_bytes,
};

/// The `api` section: each API runs only if its key is present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipfsproxy: Option<IpfsProxyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinsvcapi: Option<RestApiConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restapi: Option<RestApiConfig>,
}

impl Default for ApiConfig {
    /// What `init` writes: all three APIs on.
    fn default() -> Self {
        ApiConfig {
            ipfsproxy: Some(IpfsProxyConfig::default()),
            pinsvcapi: Some(RestApiConfig::pinsvcapi_default()),
            restapi: Some(RestApiConfig::restapi_default()),
        }
    }
}

/// `api.restapi` and `api.pinsvcapi` (same keys, different default port).
#[derive(Clone, PartialEq, Serialize)]
pub struct RestApiConfig {
    /// An empty list in the file keeps the default: the API cannot be
    /// switched off that way, only by removing its section.
    #[serde(serialize_with = "ser_addrs")]
    pub http_listen_multiaddress: Vec<Multiaddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key_file: Option<String>,
    pub read_timeout: GoDuration,
    pub read_header_timeout: GoDuration,
    pub write_timeout: GoDuration,
    pub idle_timeout: GoDuration,
    pub max_header_bytes: usize,
    /// The API over libp2p: all three keys or none.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_addrs")]
    pub libp2p_listen_multiaddress: Vec<Multiaddr>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    pub id: Option<PeerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// `None` (null): no authentication. `{}` is invalid.
    pub basic_auth_credentials: Option<BTreeMap<String, String>>,
    pub http_log_file: String,
    /// Added to every JSON response.
    pub headers: BTreeMap<String, Vec<String>>,
    pub cors_allowed_origins: Vec<String>,
    pub cors_allowed_methods: Vec<String>,
    pub cors_allowed_headers: Vec<String>,
    pub cors_exposed_headers: Vec<String>,
    pub cors_allow_credentials: bool,
    pub cors_max_age: GoDuration,
}

// Hand-written so that passwords and keys never reach a log line.
impl fmt::Debug for RestApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = self
            .basic_auth_credentials
            .as_ref()
            .map(|creds| creds.keys().collect::<Vec<_>>());
        f.debug_struct("RestApiConfig")
            .field("http_listen_multiaddress", &self.http_listen_multiaddress)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("ssl_key_file", &self.ssl_key_file)
            .field("read_timeout", &self.read_timeout)
            .field("read_header_timeout", &self.read_header_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field(
                "libp2p_listen_multiaddress",
                &self.libp2p_listen_multiaddress,
            )
            .field("id", &self.id)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("basic_auth_users", &users)
            .field("http_log_file", &self.http_log_file)
            .field("headers", &self.headers)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("cors_allowed_methods", &self.cors_allowed_methods)
            .field("cors_allowed_headers", &self.cors_allowed_headers)
            .field("cors_exposed_headers", &self.cors_exposed_headers)
            .field("cors_allow_credentials", &self.cors_allow_credentials)
            .field("cors_max_age", &self.cors_max_age)
            .finish()
    }
}

/// Smallest `max_header_bytes` an HTTP server may be given (Go's default).
pub const MIN_MAX_HEADER_BYTES: usize = 4096;

impl RestApiConfig {
    /// `api.restapi` as `init` writes it.
    pub fn restapi_default() -> RestApiConfig {
        RestApiConfig::with_listen("/ip4/127.0.0.1/tcp/9094")
    }

    /// `api.pinsvcapi` as `init` writes it.
    pub fn pinsvcapi_default() -> RestApiConfig {
        RestApiConfig::with_listen("/ip4/127.0.0.1/tcp/9097")
    }

    fn with_listen(addr: &'static str) -> RestApiConfig {
        RestApiConfig {
            http_listen_multiaddress: vec![builtin_addr(addr)],
            ssl_cert_file: None,
            ssl_key_file: None,
            read_timeout: GoDuration::ZERO,
            read_header_timeout: GoDuration::from_secs(5),
            write_timeout: GoDuration::ZERO,
            idle_timeout: GoDuration::from_secs(2 * 60),
            max_header_bytes: MIN_MAX_HEADER_BYTES,
            libp2p_listen_multiaddress: Vec::new(),
            id: None,
            private_key: None,
            basic_auth_credentials: None,
            http_log_file: String::new(),
            headers: BTreeMap::new(),
            cors_allowed_origins: strings(&["*"]),
            cors_allowed_methods: strings(&["GET"]),
            cors_allowed_headers: Vec::new(),
            cors_exposed_headers: strings(&[
                "Content-Type",
                "X-Stream-Output",
                "X-Chunked-Output",
                "X-Content-Length",
            ]),
            cors_allow_credentials: true,
            cors_max_age: GoDuration::ZERO,
        }
    }

    pub(super) fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{path}.{k}");
        ensure(
            !self.http_listen_multiaddress.is_empty(),
            key("http_listen_multiaddress"),
            "needs at least one address",
        )?;
        ensure(
            self.ssl_cert_file.is_some() == self.ssl_key_file.is_some(),
            key("ssl_key_file"),
            "ssl_cert_file and ssl_key_file go together: set both or neither",
        )?;
        validate_max_header_bytes(self.max_header_bytes, &key("max_header_bytes"))?;
        let libp2p = [
            !self.libp2p_listen_multiaddress.is_empty(),
            self.id.is_some(),
            self.private_key.is_some(),
        ];
        ensure(
            libp2p.iter().all(|set| *set) || libp2p.iter().all(|set| !set),
            key("libp2p_listen_multiaddress"),
            "libp2p_listen_multiaddress, id and private_key go together: set all three or none",
        )?;
        if let Some(creds) = &self.basic_auth_credentials {
            ensure(
                !creds.is_empty(),
                key("basic_auth_credentials"),
                "{} is invalid: use null to disable authentication",
            )?;
            ensure(
                !creds.contains_key(""),
                key("basic_auth_credentials"),
                "a user name cannot be empty",
            )?;
        }
        Ok(())
    }
}

/// `api.ipfsproxy`: the Kubo-RPC-compatible proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpfsProxyConfig {
    #[serde(serialize_with = "ser_addrs")]
    pub listen_multiaddress: Vec<Multiaddr>,
    /// The IPFS daemon requests are forwarded to.
    #[serde(serialize_with = "ser_display")]
    pub node_multiaddress: Multiaddr,
    #[serde(skip_serializing_if = "is_false")]
    pub node_https: bool,
    /// Access log, relative to the configuration folder; empty = the logger.
    pub log_file: String,
    pub read_timeout: GoDuration,
    pub read_header_timeout: GoDuration,
    pub write_timeout: GoDuration,
    pub idle_timeout: GoDuration,
    pub max_header_bytes: usize,
    /// Extra IPFS response headers copied onto proxied responses.
    pub extract_headers_extra: Vec<String>,
    /// The IPFS endpoint whose headers are copied.
    pub extract_headers_path: String,
    /// How long copied headers are kept; zero = never refreshed.
    pub extract_headers_ttl: GoDuration,
}

impl Default for IpfsProxyConfig {
    fn default() -> Self {
        IpfsProxyConfig {
            listen_multiaddress: vec![builtin_addr("/ip4/127.0.0.1/tcp/9095")],
            node_multiaddress: builtin_addr("/ip4/127.0.0.1/tcp/5001"),
            node_https: false,
            log_file: String::new(),
            read_timeout: GoDuration::ZERO,
            read_header_timeout: GoDuration::from_secs(5),
            write_timeout: GoDuration::ZERO,
            idle_timeout: GoDuration::from_secs(60),
            max_header_bytes: MIN_MAX_HEADER_BYTES,
            extract_headers_extra: Vec::new(),
            extract_headers_path: "/api/v0/version".to_string(),
            extract_headers_ttl: GoDuration::from_secs(5 * 60),
        }
    }
}

impl IpfsProxyConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.listen_multiaddress.is_empty(),
            "api.ipfsproxy.listen_multiaddress",
            "needs at least one address",
        )?;
        validate_max_header_bytes(self.max_header_bytes, "api.ipfsproxy.max_header_bytes")
    }
}
