//! The client commands of the `pincluster` binary, after `ipfs-cluster-ctl`:
//! `id`, `version`, `peers ls` and `pin add|rm|ls`. Each is one call to a
//! peer's REST API, printed the way ipfs-cluster-ctl prints it so that its
//! users' habits and scripts carry over.
//!
//! The `format_*` functions are pure; [`run`] does the HTTP and picks the
//! exit code: 0 success, 1 local or transport failure, 2 the API answered
//! with an error, 62 the `--timeout` expired. Streamed answers (`peers ls`,
//! `pin ls`) are printed item by item as they arrive.

use std::error::Error as StdError;
use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local, TimeDelta};
use cid::Cid;
use clap::{Args, Subcommand, ValueEnum};
use libp2p::multiaddr::{self, Protocol};
use libp2p::{Multiaddr, PeerId};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::cluster_ipfs::GlobalRepoGc;
use crate::duration::parse_time_delta;
use crate::graph::ConnectGraph;
use crate::status::GlobalPinInfo;
use crate::types::{ApiError, IdInfo, Pin, PinMode, PinOptions, PinType, Version, decode_cid};

/// Where ipfs-cluster-ctl looks for the REST API by default.
const DEFAULT_HOST: &str = "/ip4/127.0.0.1/tcp/9094";

/// The most we buffer of one response body or one streamed item. Pins and
/// IDs are a few KiB; anything near this is not a cluster API talking.
const MAX_BODY_BYTES: usize = 16 << 20;

/// Options shared by every client command (ipfs-cluster-ctl's global flags).
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// REST API address: a multiaddr such as /ip4/127.0.0.1/tcp/9094 (also
    /// /ip6, /dns, /dns4, /dns6) or an http(s)://host:port URL
    #[arg(long, short = 'l', default_value = DEFAULT_HOST, value_parser = parse_host)]
    pub host: ApiHost,
    /// Output format
    #[arg(long = "encoding", visible_alias = "enc", value_enum, default_value_t = Encoding::Text)]
    pub encoding: Encoding,
    /// Seconds to wait for the whole answer; 0 waits forever
    #[arg(long, short = 't', default_value_t = 0)]
    pub timeout: u64,
    /// USER or USER:PASSWORD for an API with basic authentication
    #[arg(
        long = "basic-auth",
        env = "CLUSTER_CREDENTIALS",
        hide_env_values = true
    )]
    pub basic_auth: Option<String>,
    /// Use https for a multiaddr --host
    #[arg(long, short = 's')]
    pub https: bool,
    /// Print each request and the raw response to stderr
    #[arg(long, short = 'd')]
    pub debug: bool,
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// ipfs-cluster-ctl's human-readable lines
    Text,
    /// Each object as JSON indented by four spaces
    Json,
}

/// The REST API endpoint, from `--host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiHost {
    /// `host:port` from a multiaddr; the scheme follows `--https`.
    Multiaddr(String),
    /// `scheme://host[:port]` from a URL, which fixes the scheme.
    Url(String),
}

impl ApiHost {
    fn base_url(&self, https: bool) -> String {
        match self {
            ApiHost::Multiaddr(authority) => {
                let scheme = if https { "https" } else { "http" };
                format!("{scheme}://{authority}")
            }
            ApiHost::Url(origin) => origin.clone(),
        }
    }
}

/// A `--host` value that names no HTTP endpoint.
#[derive(Debug, thiserror::Error)]
enum HostError {
    #[error("invalid multiaddress: {0}")]
    Multiaddr(#[from] multiaddr::Error),
    #[error("invalid URL: {0}")]
    Url(#[source] UrlParseError),
    #[error(
        "unsupported API address {0:?}: use /ip4, /ip6, /dns, /dns4 or /dns6 followed by \
         /tcp/<port>, or an http(s)://host:port URL"
    )]
    Unsupported(String),
}

/// The `url` crate's error, which reqwest does not re-export by name.
type UrlParseError = <reqwest::Url as std::str::FromStr>::Err;

fn parse_host(s: &str) -> Result<ApiHost, HostError> {
    let unsupported = || HostError::Unsupported(s.to_owned());
    if s.starts_with("http://") || s.starts_with("https://") {
        let url: reqwest::Url = s.parse().map_err(HostError::Url)?;
        let only_origin = matches!(url.path(), "" | "/") && url.query().is_none();
        if url.host_str().is_none() || !only_origin {
            return Err(unsupported());
        }
        return Ok(ApiHost::Url(url.origin().ascii_serialization()));
    }
    let addr: Multiaddr = s.parse()?;
    let mut parts = addr.iter();
    let host = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.to_string(),
        Some(Protocol::Ip6(ip)) => format!("[{ip}]"),
        Some(Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h)) => h.to_string(),
        _ => return Err(unsupported()),
    };
    match (parts.next(), parts.next()) {
        (Some(Protocol::Tcp(port)), None) => Ok(ApiHost::Multiaddr(format!("{host}:{port}"))),
        _ => Err(unsupported()),
    }
}

/// The client commands.
#[derive(Subcommand, Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only burden matching"
)]
pub enum ClientCommand {
    /// Show the contacted peer's id, addresses, peers and IPFS daemon
    Id,
    /// Show the contacted peer's cluster version
    Version,
    /// List cluster peers
    Peers {
        #[command(subcommand)]
        cmd: PeersCmd,
    },
    /// Pin, unpin and list the cluster's pinset
    Pin {
        #[command(subcommand)]
        cmd: PinCmd,
    },
    /// Show the status of pins on every peer (all pins, or the CIDs given)
    Status {
        /// CIDs to show; none shows every pin.
        #[arg(value_parser = decode_cid)]
        cids: Vec<Cid>,
        /// Only pins with these statuses (comma-separated; `error` and
        /// `queued` group several), when no CID is given.
        #[arg(long, default_value = "")]
        filter: String,
        /// Only the contacted peer's view.
        #[arg(long)]
        local: bool,
    },
    /// The cluster's health
    Health {
        #[command(subcommand)]
        cmd: HealthCmd,
    },
    /// Retry failed pin and unpin operations (of one CID, or all)
    Recover {
        /// The CID to recover; none recovers every failed operation.
        #[arg(value_parser = decode_cid)]
        cid: Option<Cid>,
        /// Only on the contacted peer.
        #[arg(long)]
        local: bool,
    },
    /// Act on the IPFS daemons of the cluster's peers
    Ipfs {
        #[command(subcommand)]
        cmd: IpfsCmd,
    },
}

/// `ipfs` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum IpfsCmd {
    /// Run garbage collection on every peer's IPFS daemon and list what it removed
    Gc {
        /// Only on the contacted peer's daemon.
        #[arg(long)]
        local: bool,
    },
}

/// `peers` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum PeersCmd {
    /// List the cluster's peers as the contacted peer sees them
    Ls,
}

/// `health` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum HealthCmd {
    /// Print the cluster's connectivity graph as Graphviz DOT (render it
    /// with `dot -Tpng`): cluster peers, their IPFS daemons, who is
    /// connected to whom, which daemons are down
    Graph {
        /// Write the DOT to this file instead of standard output
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// Draw every swarm peer of the cluster's IPFS daemons, not only
        /// the links among the cluster's own daemons
        #[arg(long = "all-ipfs-peers")]
        all_ipfs_peers: bool,
    },
}

/// `pin` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum PinCmd {
    /// Add a CID to the cluster's pinset
    Add {
        #[arg(value_parser = decode_cid)]
        cid: Cid,
        /// Replication factor for both bounds (-1 = everywhere, 0 = the
        /// cluster's default); overrides --rmin and --rmax
        #[arg(long, short = 'r', default_value_t = 0, allow_negative_numbers = true)]
        replication: i32,
        /// Minimum replication factor
        #[arg(
            long = "replication-min",
            visible_alias = "rmin",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        replication_min: i32,
        /// Maximum replication factor
        #[arg(
            long = "replication-max",
            visible_alias = "rmax",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        replication_max: i32,
        /// A name for the pin
        #[arg(long, short = 'n', default_value = "")]
        name: String,
        /// recursive or direct
        #[arg(long, default_value = "recursive", value_parser = parse_mode)]
        mode: PinMode,
        /// Unpin automatically after this Go duration (e.g. 24h, 1h30m)
        #[arg(long = "expire-in", value_parser = parse_time_delta)]
        expire_in: Option<TimeDelta>,
        /// key=value metadata; repeat for several entries
        #[arg(long, value_parser = parse_metadata_entry)]
        metadata: Vec<(String, String)>,
        /// Comma-separated peer ids to allocate to first
        #[arg(
            long,
            visible_alias = "allocs",
            value_delimiter = ',',
            value_parser = parse_peer_id
        )]
        allocations: Vec<PeerId>,
    },
    /// Remove a CID from the cluster's pinset
    Rm {
        #[arg(value_parser = decode_cid)]
        cid: Cid,
    },
    /// List the pinset, or show one pin
    Ls {
        #[arg(value_parser = decode_cid)]
        cid: Option<Cid>,
        /// Comma-separated pin types: all, pin, meta-pin, clusterdag-pin,
        /// shard-pin (only when listing everything)
        #[arg(long, default_value = "all")]
        filter: String,
    },
}

/// A `--mode` value. Stricter than the server, which reads any unknown
/// mode as recursive: on the command line a typo deserves an error.
fn parse_mode(s: &str) -> Result<PinMode, String> {
    match s {
        "recursive" => Ok(PinMode::Recursive),
        "direct" => Ok(PinMode::Direct),
        _ => Err("expected recursive or direct".to_owned()),
    }
}

fn parse_metadata_entry(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "metadata were not in the format key=value".to_owned())
}

fn parse_peer_id(s: &str) -> Result<PeerId, libp2p::identity::ParseError> {
    s.trim().parse()
}

/// Runs a client command against the API, printing results to stdout and
/// errors to stderr; returns the process exit code.
pub async fn run(opts: &ClientOpts, cmd: &ClientCommand) -> i32 {
    run_with(opts, cmd, &mut io::stdout(), &mut io::stderr()).await
}

async fn run_with(
    opts: &ClientOpts,
    cmd: &ClientCommand,
    out: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
) -> i32 {
    let result = match Api::new(opts) {
        Ok(api) => execute(&api, opts.encoding, cmd, out, log).await,
        Err(e) => Err(CallError::Setup(e)),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            emit(log, &e.report(opts.encoding));
            e.exit_code()
        }
    }
}

async fn execute(
    api: &Api,
    enc: Encoding,
    cmd: &ClientCommand,
    out: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
) -> Result<(), CallError> {
    match cmd {
        ClientCommand::Id => {
            let id = api.call::<IdInfo>(Method::GET, "/id", &[], log).await?;
            print_some(out, enc, id.as_ref());
        }
        ClientCommand::Version => {
            let v = api
                .call::<Version>(Method::GET, "/version", &[], log)
                .await?;
            print_some(out, enc, v.as_ref());
        }
        ClientCommand::Peers { cmd: PeersCmd::Ls } => {
            let mut print = |id: IdInfo| emit(out, &render(enc, &id));
            api.stream(Method::GET, "/peers", &[], log, &mut print)
                .await?;
        }
        ClientCommand::Pin { cmd } => match cmd {
            PinCmd::Add {
                cid,
                replication,
                replication_min,
                replication_max,
                name,
                mode,
                expire_in,
                metadata,
                allocations,
            } => {
                // As in ipfs-cluster-ctl: a non-zero -r sets both bounds, and
                // the expiry is computed here and sent as expire-at.
                let (min, max) = match *replication {
                    0 => (*replication_min, *replication_max),
                    both => (both, both),
                };
                let expire_at = expire_in.map(expiry_from_now).transpose()?;
                let options = PinOptions {
                    replication_factor_min: min,
                    replication_factor_max: max,
                    name: name.clone(),
                    mode: *mode,
                    user_allocations: allocations.clone(),
                    expire_at,
                    metadata: metadata.iter().cloned().collect(),
                    ..PinOptions::default()
                };
                let path = format!("/pins/{cid}");
                let pin = api
                    .call::<Pin>(Method::POST, &path, &options.to_query(), log)
                    .await?;
                print_some(out, enc, pin.as_ref());
            }
            PinCmd::Rm { cid } => {
                let path = format!("/pins/{cid}");
                let pin = api.call::<Pin>(Method::DELETE, &path, &[], log).await?;
                print_some(out, enc, pin.as_ref());
            }
            PinCmd::Ls {
                cid: Some(cid),
                filter: _,
            } => {
                let path = format!("/allocations/{cid}");
                let pin = api.call::<Pin>(Method::GET, &path, &[], log).await?;
                print_some(out, enc, pin.as_ref());
            }
            PinCmd::Ls { cid: None, filter } => {
                let query = [("filter".to_owned(), allocations_filter(filter))];
                let mut print = |pin: Pin| emit(out, &render(enc, &pin));
                api.stream(Method::GET, "/allocations", &query, log, &mut print)
                    .await?;
            }
        },
        ClientCommand::Status {
            cids,
            filter,
            local,
        } => {
            let local = ("local".to_owned(), local.to_string());
            if let [cid] = cids.as_slice() {
                let path = format!("/pins/{cid}");
                let info = api
                    .call::<GlobalPinInfo>(Method::GET, &path, &[local], log)
                    .await?;
                print_some(out, enc, info.as_ref());
            } else {
                let list = cids
                    .iter()
                    .map(Cid::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let filter = if cids.is_empty() {
                    filter.clone()
                } else {
                    String::new()
                };
                let query = [
                    local,
                    ("filter".to_owned(), filter),
                    ("cids".to_owned(), list),
                ];
                let mut print = |info: GlobalPinInfo| emit(out, &render(enc, &info));
                api.stream(Method::GET, "/pins", &query, log, &mut print)
                    .await?;
            }
        }
        ClientCommand::Health {
            cmd:
                HealthCmd::Graph {
                    file,
                    all_ipfs_peers,
                },
        } => {
            let graph = api
                .call::<ConnectGraph>(Method::GET, "/health/graph", &[], log)
                .await?
                .unwrap_or_default();
            let dot = crate::graph::dot::render(&graph, *all_ipfs_peers);
            match file {
                Some(path) => std::fs::write(path, dot).map_err(|source| CallError::WriteFile {
                    path: path.clone(),
                    source,
                })?,
                None => emit(out, &dot),
            }
        }
        ClientCommand::Recover { cid, local } => {
            let local = [("local".to_owned(), local.to_string())];
            match cid {
                Some(cid) => {
                    let path = format!("/pins/{cid}/recover");
                    let info = api
                        .call::<GlobalPinInfo>(Method::POST, &path, &local, log)
                        .await?;
                    print_some(out, enc, info.as_ref());
                }
                None => {
                    let mut print = |info: GlobalPinInfo| emit(out, &render(enc, &info));
                    api.stream(Method::POST, "/pins/recover", &local, log, &mut print)
                        .await?;
                }
            }
        }
        ClientCommand::Ipfs {
            cmd: IpfsCmd::Gc { local },
        } => {
            let local = [("local".to_owned(), local.to_string())];
            let gc = api
                .call::<GlobalRepoGc>(Method::POST, "/ipfs/gc", &local, log)
                .await?;
            print_some(out, enc, gc.as_ref());
        }
    }
    Ok(())
}

fn expiry_from_now(d: TimeDelta) -> Result<DateTime<FixedOffset>, CallError> {
    Local::now()
        .fixed_offset()
        .checked_add_signed(d)
        .ok_or(CallError::ExpiryOutOfRange)
}

/// ipfs-cluster-ctl's reading of `pin ls --filter`: names OR-ed together,
/// `all` or an empty name meaning everything, unknown names dropped; the
/// result goes out in a fixed order, as `all` when it covers every type.
fn allocations_filter(filter: &str) -> String {
    const TYPES: [PinType; 4] = [
        PinType::Pin,
        PinType::MetaPin,
        PinType::ClusterDagPin,
        PinType::ShardPin,
    ];
    let names: Vec<&str> = filter.split(',').collect();
    if names.iter().any(|n| n.is_empty() || *n == "all") {
        return "all".to_owned();
    }
    let chosen: Vec<&str> = TYPES
        .iter()
        .map(|t| t.as_str())
        .filter(|t| names.contains(t))
        .collect();
    if chosen.len() == TYPES.len() {
        "all".to_owned()
    } else {
        chosen.join(",")
    }
}

/// Why a command failed. Like the Go client, everything but local setup
/// problems is reported as an API error object (code 0 when no HTTP status
/// applies).
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("creating API client: {}", chain(.0))]
    Setup(#[source] reqwest::Error),
    #[error("parsing expire-in: the expiry time is out of range")]
    ExpiryOutOfRange,
    /// The API answered with an error status.
    #[error("{}", .0.message)]
    Api(ApiError),
    /// The request did not complete: connection, TLS, timeout, body read.
    #[error("{}", chain(.0))]
    Transport(#[source] reqwest::Error),
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
    #[error("writing {}: {source}", path.display())]
    WriteFile {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CallError {
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

    fn exit_code(&self) -> i32 {
        match self {
            CallError::Transport(e) if e.is_timeout() => 62,
            CallError::Setup(_) | CallError::ExpiryOutOfRange | CallError::WriteFile { .. } => 1,
            _ if self.as_api_error().code == 0 => 1,
            _ => 2,
        }
    }

    fn report(&self, enc: Encoding) -> String {
        match self {
            CallError::Setup(_) | CallError::ExpiryOutOfRange | CallError::WriteFile { .. } => {
                format!("error {self}\n")
            }
            _ => render(enc, &self.as_api_error()),
        }
    }
}

/// An error with its causes, which reqwest keeps out of its own message
/// ("error sending request" says nothing about the refused connection).
fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// An HTTP client for one REST API endpoint.
struct Api {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
    debug: bool,
}

impl Api {
    fn new(opts: &ClientOpts) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        if opts.timeout > 0 {
            builder = builder.timeout(Duration::from_secs(opts.timeout));
        }
        Ok(Api {
            http: builder.build()?,
            base: opts.host.base_url(opts.https),
            auth: opts.basic_auth.as_deref().and_then(parse_credentials),
            debug: opts.debug,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        log: &mut (dyn Write + Send),
    ) -> Result<reqwest::Response, CallError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let request = request.build().map_err(CallError::Transport)?;
        if self.debug {
            // No client command sends a request body.
            emit(log, &format!("> {} {}\n", request.method(), request.url()));
        }
        let response = self
            .http
            .execute(request)
            .await
            .map_err(CallError::Transport)?;
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
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        log: &mut (dyn Write + Send),
    ) -> Result<Option<T>, CallError> {
        let response = self.send(method, path, query, log).await?;
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
    async fn stream<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        log: &mut (dyn Write + Send),
        on_item: &mut (dyn FnMut(T) + Send),
    ) -> Result<(), CallError> {
        let mut response = self.send(method, path, query, log).await?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = self.read_body(response, log).await?;
            return Err(CallError::Api(error_from_body(status, &body)));
        }
        if status != StatusCode::OK && status != StatusCode::NO_CONTENT {
            return Err(CallError::NotAStream(status.as_u16()));
        }
        let mut splitter = JsonSplitter::default();
        while let Some(chunk) = response.chunk().await.map_err(CallError::Transport)? {
            if self.debug {
                emit(log, &String::from_utf8_lossy(&chunk));
            }
            splitter.push(&chunk, on_item)?;
        }
        splitter.finish()
    }
}

/// `user[:password]`; no user means no authentication, as in the reference.
fn parse_credentials(s: &str) -> Option<(String, String)> {
    let (user, password) = s.split_once(':').unwrap_or((s, ""));
    (!user.is_empty()).then(|| (user.to_owned(), password.to_owned()))
}

/// The error object of an error answer. Like the Go client, a body that is
/// not one (a proxy's HTML, gorilla's empty 405) becomes the message.
fn error_from_body(status: StatusCode, body: &[u8]) -> ApiError {
    serde_json::from_slice(body).unwrap_or_else(|_| ApiError {
        code: status.as_u16(),
        message: String::from_utf8_lossy(body).into_owned(),
    })
}

/// Cuts a body into consecutive JSON values as its bytes arrive. Like Go's
/// `json.Decoder`, values may be separated by any whitespace (the server
/// writes one per line, but nothing promises it).
#[derive(Default)]
struct JsonSplitter {
    pending: Vec<u8>,
}

impl JsonSplitter {
    fn push<T: DeserializeOwned>(
        &mut self,
        chunk: &[u8],
        on_item: &mut (dyn FnMut(T) + Send),
    ) -> Result<(), CallError> {
        self.pending.extend_from_slice(chunk);
        let mut values = serde_json::Deserializer::from_slice(&self.pending).into_iter::<T>();
        let mut consumed = 0;
        loop {
            match values.next() {
                Some(Ok(value)) => {
                    consumed = values.byte_offset();
                    on_item(value);
                }
                // The rest of this value is still on its way.
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(CallError::StreamDecode(e)),
                None => break,
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_BODY_BYTES {
            return Err(CallError::TooLarge);
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), CallError> {
        if self.pending.iter().all(u8::is_ascii_whitespace) {
            Ok(())
        } else {
            Err(CallError::Truncated)
        }
    }
}

/// Writes to stdout or stderr. Like ipfs-cluster-ctl, a failed write (a
/// closed pipe) does not turn a successful call into a failure.
fn emit(w: &mut (dyn Write + Send), s: &str) {
    let _ = w.write_all(s.as_bytes());
    let _ = w.flush();
}

fn print_some<T: Render>(out: &mut (dyn Write + Send), enc: Encoding, item: Option<&T>) {
    if let Some(item) = item {
        emit(out, &render(enc, item));
    }
}

/// An API object with a text form as printed by ipfs-cluster-ctl.
trait Render: Serialize {
    fn text(&self) -> String;
}

impl Render for IdInfo {
    fn text(&self) -> String {
        format_id(self)
    }
}

impl Render for Pin {
    fn text(&self) -> String {
        format_pin(self)
    }
}

impl Render for GlobalPinInfo {
    fn text(&self) -> String {
        format_global(self)
    }
}

/// ipfs-cluster-ctl's status lines: `<cid>[ | <name>]:`, then one line per
/// peer sorted by peer id.
fn format_global(info: &GlobalPinInfo) -> String {
    let mut text = info.cid.to_string();
    if !info.name.is_empty() {
        text.push_str(&format!(" | {}", info.name));
    }
    text.push_str(":\n");
    for (peer, e) in &info.peer_map {
        let who = if e.peername.is_empty() {
            peer.as_str()
        } else {
            e.peername.as_str()
        };
        let mut status = e.status.as_str().to_uppercase();
        if !e.error.is_empty() {
            status.push_str(&format!(": {}", e.error));
        }
        let when = e
            .timestamp
            .map(|t| crate::types::go_time::format(&t))
            .unwrap_or_default();
        text.push_str(&format!(
            "    > {who:<20} : {status} | {when} | Attempts: {} | Priority: {}\n",
            e.attempt_count, e.priority_pin
        ));
    }
    text
}

impl Render for GlobalRepoGc {
    fn text(&self) -> String {
        format_repo_gc(self)
    }
}

/// ipfs-cluster-ctl's `ipfs gc` output: per peer, sorted by peer id, its
/// name (or id) padded to 15, then the removed CIDs or errors.
fn format_repo_gc(gc: &GlobalRepoGc) -> String {
    let mut text = String::new();
    for (peer, info) in &gc.peer_map {
        let who = if info.peername.is_empty() {
            peer.as_str()
        } else {
            info.peername.as_str()
        };
        if info.error.is_empty() {
            text.push_str(&format!("{who:<15}\n"));
        } else {
            text.push_str(&format!("{who:<15} | ERROR: {}\n", info.error));
        }
        text.push_str("  > CIDs:\n");
        for key in &info.keys {
            match (&key.key, key.error.is_empty()) {
                (Some(cid), true) => text.push_str(&format!("    - {cid}\n")),
                _ => text.push_str(&format!("    - ERROR: {}\n", key.error)),
            }
        }
    }
    text
}

impl Render for Version {
    fn text(&self) -> String {
        format_version(self)
    }
}

impl Render for ApiError {
    fn text(&self) -> String {
        format_error(self)
    }
}

fn render<T: Render>(enc: Encoding, item: &T) -> String {
    match enc {
        Encoding::Text => item.text(),
        Encoding::Json => format_json(item),
    }
}

/// Go's `json.MarshalIndent(obj, "", "    ")` plus the newline ctl prints.
fn format_json<T: Serialize>(item: &T) -> String {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    item.serialize(&mut ser)
        .expect("API types always serialize: string keys, no fallible fields");
    buf.push(b'\n');
    String::from_utf8_lossy(&buf).into_owned()
}

fn sorted_strings<T: ToString>(items: &[T]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

fn format_id(id: &IdInfo) -> String {
    if !id.error.is_empty() {
        return format!("{} | ERROR: {}\n", id.id, id.error);
    }
    // The reference counts itself among the cluster peers.
    let others = id.cluster_peers.len() as i64 - 1;
    let mut s = format!("{} | {} | Sees {others} other peers\n", id.id, id.peername);
    s.push_str("  > Addresses:\n");
    for a in sorted_strings(&id.addresses) {
        s.push_str(&format!("    - {a}\n"));
    }
    if !id.ipfs.error.is_empty() {
        s.push_str(&format!("  > IPFS ERROR: {}\n", id.ipfs.error));
        return s;
    }
    let ipfs_id = id.ipfs.id.map(|p| p.to_string()).unwrap_or_default();
    s.push_str(&format!("  > IPFS: {ipfs_id}\n"));
    for a in sorted_strings(&id.ipfs.addresses) {
        s.push_str(&format!("    - {a}\n"));
    }
    s
}

/// Go's `Format("2006-01-02 15:04:05")`: wall-clock time in the time's own
/// offset.
fn format_short_time(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn format_pin(pin: &Pin) -> String {
    let o = &pin.options;
    let mut kind = pin.pin_type.as_str().to_uppercase();
    if o.mode == PinMode::Direct {
        kind.push_str("-DIRECT");
    }
    let replication = if o.replication_factor_min == -1 && o.replication_factor_max == -1 {
        "Repl. Factor: -1 | Allocations: [everywhere]".to_owned()
    } else {
        // Go prints a []string as [a b c].
        format!(
            "Repl. Factor: {}--{} | Allocations: [{}]",
            o.replication_factor_min,
            o.replication_factor_max,
            sorted_strings(&pin.allocations).join(" ")
        )
    };
    let depth = match pin.max_depth {
        0 => "Direct".to_owned(),
        -1 => "Recursive".to_owned(),
        n => format!("Recursive-{n}"),
    };
    let metadata = if o.metadata.is_empty() { "no" } else { "yes" };
    let expiry = o
        .expire_at
        .as_ref()
        .map_or_else(|| "∞".to_owned(), format_short_time);
    let added = pin
        .timestamp
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), format_short_time);
    format!(
        "{} | {} | {kind} | {replication} | {depth} | Metadata: {metadata} | Exp: {expiry} | Added: {added}\n",
        pin.cid, o.name
    )
}

fn format_version(v: &Version) -> String {
    format!("{}\n", v.version)
}

fn format_error(e: &ApiError) -> String {
    format!(
        "An error occurred:\n  Code: {}\n  Message: {}\n",
        e.code, e.message
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::types::IpfsIdInfo;

    const CID1: &str = "QmP63DkAFEnDYNjDYBpyNDfttu1fvUw99x1brscPzpqmmq";
    const PEER_A: &str = "12D3KooWGHTKzeT4KaLGLrbKKyT8zKrBPXAUBRzCAN6ZMDMo4M6M";
    const PEER_B: &str = "12D3KooWFBFCDQzAkQSwPZLV883pKdsmb6urQ3sMjfJHUxn5GCVv";
    const PEER_IPFS: &str = "12D3KooWKuJ8LPTyHbyX4nt4C7uWmUobzFsiceTVoFw7HpmoNakM";

    /// The client flattened into a parser, as the binary will do.
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(args: &[&str]) -> TestCli {
        TestCli::try_parse_from(std::iter::once("pincluster").chain(args.iter().copied())).unwrap()
    }

    fn peer(s: &str) -> PeerId {
        s.parse().unwrap()
    }

    fn time(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn sample_id() -> IdInfo {
        IdInfo {
            id: peer(PEER_A),
            addresses: vec![
                format!("/ip4/192.168.1.2/tcp/9096/p2p/{PEER_A}")
                    .parse()
                    .unwrap(),
                format!("/ip4/127.0.0.1/tcp/9096/p2p/{PEER_A}")
                    .parse()
                    .unwrap(),
            ],
            cluster_peers: vec![peer(PEER_A), peer(PEER_B)],
            cluster_peers_addresses: vec![],
            version: "1.1.6".into(),
            commit: String::new(),
            rpc_protocol_version: "/ipfscluster/1.0/rpc".into(),
            error: String::new(),
            ipfs: IpfsIdInfo {
                id: Some(peer(PEER_IPFS)),
                addresses: vec![
                    "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
                    "/ip4/10.0.0.1/tcp/4001".parse().unwrap(),
                ],
                error: String::new(),
            },
            peername: "peer1".into(),
        }
    }

    fn sample_pin() -> Pin {
        Pin {
            options: PinOptions {
                replication_factor_min: 1,
                replication_factor_max: 2,
                name: "my pin".into(),
                ..PinOptions::default()
            },
            cid: decode_cid(CID1).unwrap(),
            pin_type: PinType::Pin,
            allocations: vec![peer(PEER_B), peer(PEER_A)],
            max_depth: -1,
            reference: None,
            timestamp: Some(time("2024-05-01T10:00:00+02:00")),
        }
    }

    #[test]
    fn id_text() {
        let want = format!(
            "{PEER_A} | peer1 | Sees 1 other peers\n  > Addresses:\n    \
             - /ip4/127.0.0.1/tcp/9096/p2p/{PEER_A}\n    \
             - /ip4/192.168.1.2/tcp/9096/p2p/{PEER_A}\n  \
             > IPFS: {PEER_IPFS}\n    - /ip4/10.0.0.1/tcp/4001\n    - /ip4/127.0.0.1/tcp/4001\n"
        );
        assert_eq!(format_id(&sample_id()), want);
    }

    #[test]
    fn id_text_with_errors() {
        let mut id = sample_id();
        id.ipfs.error = "connection refused".into();
        let text = format_id(&id);
        assert!(
            text.ends_with("  > IPFS ERROR: connection refused\n"),
            "{text}"
        );
        assert!(!text.contains("IPFS:"));
        id.error = "dial backoff".into();
        assert_eq!(format_id(&id), format!("{PEER_A} | ERROR: dial backoff\n"));
    }

    #[test]
    fn pin_text() {
        assert_eq!(
            format_pin(&sample_pin()),
            format!(
                "{CID1} | my pin | PIN | Repl. Factor: 1--2 | Allocations: [{PEER_B} {PEER_A}] | \
                 Recursive | Metadata: no | Exp: ∞ | Added: 2024-05-01 10:00:00\n"
            )
        );
    }

    #[test]
    fn pin_text_everywhere() {
        let mut pin = sample_pin();
        pin.options.replication_factor_min = -1;
        pin.options.replication_factor_max = -1;
        pin.allocations.clear();
        pin.options.name.clear();
        assert_eq!(
            format_pin(&pin),
            format!(
                "{CID1} |  | PIN | Repl. Factor: -1 | Allocations: [everywhere] | \
                 Recursive | Metadata: no | Exp: ∞ | Added: 2024-05-01 10:00:00\n"
            )
        );
    }

    #[test]
    fn pin_text_direct_with_metadata_and_expiry() {
        let mut pin = sample_pin();
        pin.options.mode = PinMode::Direct;
        pin.max_depth = 0;
        pin.options.metadata = BTreeMap::from([("k".into(), "v".into())]);
        pin.options.expire_at = Some(time("2030-01-02T03:04:05.5-05:00"));
        pin.timestamp = None;
        let text = format_pin(&pin);
        assert!(text.contains(" | PIN-DIRECT | "), "{text}");
        assert!(
            text.ends_with(
                " | Direct | Metadata: yes | Exp: 2030-01-02 03:04:05 | Added: unknown\n"
            ),
            "{text}"
        );
        pin.pin_type = PinType::ShardPin;
        pin.options.mode = PinMode::Recursive;
        pin.max_depth = 1;
        let text = format_pin(&pin);
        assert!(text.contains(" | SHARD-PIN | "), "{text}");
        assert!(text.contains(" | Recursive-1 | "), "{text}");
    }

    #[test]
    fn repo_gc_text() {
        let gc: GlobalRepoGc = serde_json::from_value(serde_json::json!({"peer_map": {
            "12D3KooWB": {"peer": "12D3KooWB", "peername": "", "keys": null, "error": "rpc failure"},
            "12D3KooWA": {"peer": "12D3KooWA", "peername": "peer1", "keys": [
                {"key": "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"},
                {"key": null, "error": "some gc error"}
            ]}
        }}))
        .unwrap();
        assert_eq!(
            gc.text(),
            "peer1          \n  > CIDs:\n    - QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\n    - ERROR: some gc error\n\
             12D3KooWB       | ERROR: rpc failure\n  > CIDs:\n"
        );
    }

    #[test]
    fn version_error_and_json_output() {
        let v = Version {
            version: "1.1.6".into(),
        };
        assert_eq!(render(Encoding::Text, &v), "1.1.6\n");
        assert_eq!(
            render(Encoding::Json, &v),
            "{\n    \"version\": \"1.1.6\"\n}\n"
        );
        let e = ApiError {
            code: 404,
            message: "pin is not part of the pinset".into(),
        };
        assert_eq!(
            render(Encoding::Text, &e),
            "An error occurred:\n  Code: 404\n  Message: pin is not part of the pinset\n"
        );
        let json = render(Encoding::Json, &sample_pin());
        assert!(
            json.starts_with("{\n    \"replication_factor_min\": 1,\n"),
            "{json}"
        );
        assert!(json.contains("\n    \"origins\": [],\n"), "{json}");
    }

    #[test]
    fn filters_are_normalised_like_ctl() {
        assert_eq!(allocations_filter("all"), "all");
        assert_eq!(allocations_filter(""), "all");
        assert_eq!(allocations_filter("pin,"), "all");
        assert_eq!(allocations_filter("shard-pin,pin"), "pin,shard-pin");
        assert_eq!(allocations_filter("pin,bogus"), "pin");
        assert_eq!(allocations_filter("bogus"), "");
        assert_eq!(
            allocations_filter("pin,meta-pin,clusterdag-pin,shard-pin"),
            "all"
        );
    }

    #[test]
    fn hosts() {
        let ok = [
            ("/ip4/127.0.0.1/tcp/9094", "http://127.0.0.1:9094"),
            ("/ip6/::1/tcp/9094", "http://[::1]:9094"),
            (
                "/dns4/cluster.example/tcp/9094",
                "http://cluster.example:9094",
            ),
            ("http://localhost:9094", "http://localhost:9094"),
            ("https://localhost:9094/", "https://localhost:9094"),
        ];
        for (input, base) in ok {
            assert_eq!(parse_host(input).unwrap().base_url(false), base, "{input}");
        }
        let https = parse_host("/ip4/10.0.0.1/tcp/443").unwrap();
        assert_eq!(https.base_url(true), "https://10.0.0.1:443");
        for bad in [
            "/ip4/127.0.0.1",
            "/ip4/127.0.0.1/udp/9094",
            "/unix/tmp/sock",
            "localhost:9094",
            "http://localhost:9094/api",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials() {
        assert_eq!(parse_credentials("u:p:q"), Some(("u".into(), "p:q".into())));
        assert_eq!(parse_credentials("u"), Some(("u".into(), String::new())));
        assert_eq!(parse_credentials(""), None);
        assert_eq!(parse_credentials(":p"), None);
    }

    #[test]
    fn pin_add_flags() {
        let cli = parse(&[
            "--enc",
            "json",
            "-t",
            "5",
            "pin",
            "add",
            CID1,
            "--rmin",
            "-1",
            "--rmax",
            "3",
            "-n",
            "x",
            "--mode",
            "direct",
            "--expire-in",
            "1h",
            "--metadata",
            "a=b",
            "--metadata",
            "c=d=e",
            "--allocs",
            &format!("{PEER_A}, {PEER_B}"),
        ]);
        assert_eq!(cli.opts.encoding, Encoding::Json);
        assert_eq!(cli.opts.timeout, 5);
        assert_eq!(cli.opts.host, ApiHost::Multiaddr("127.0.0.1:9094".into()));
        let ClientCommand::Pin {
            cmd:
                PinCmd::Add {
                    replication_min,
                    replication_max,
                    mode,
                    expire_in,
                    metadata,
                    allocations,
                    ..
                },
        } = cli.cmd
        else {
            panic!("not pin add: {:?}", cli.cmd);
        };
        assert_eq!((replication_min, replication_max), (-1, 3));
        assert_eq!(mode, PinMode::Direct);
        assert_eq!(expire_in, Some(TimeDelta::hours(1)));
        assert_eq!(
            metadata,
            vec![("a".into(), "b".into()), ("c".into(), "d=e".into())]
        );
        assert_eq!(allocations, vec![peer(PEER_A), peer(PEER_B)]);

        for bad in [
            &["pin", "add", "nope"][..],
            &["pin", "add", CID1, "--mode", "sideways"],
            &["pin", "add", CID1, "--metadata", "novalue"],
            &["pin", "add", CID1, "--expire-in", "1d"],
            &["pin", "add", CID1, "--allocs", "nope"],
            &["-l", "/unix/x", "id"],
            &["--enc", "yaml", "id"],
        ] {
            let args = std::iter::once("pincluster").chain(bad.iter().copied());
            assert!(TestCli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    /// Answers one HTTP request with `response`; yields the request head.
    async fn serve_once(response: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (format!("/ip4/127.0.0.1/tcp/{port}"), handle)
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    struct Outcome {
        code: i32,
        stdout: String,
        stderr: String,
        request: String,
    }

    async fn run_against(response: String, args: &[&str]) -> Outcome {
        let (host, server) = serve_once(response).await;
        let mut full = vec!["-l", host.as_str()];
        full.extend_from_slice(args);
        let cli = parse(&full);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(&cli.opts, &cli.cmd, &mut out, &mut err).await;
        Outcome {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
            request: server.await.unwrap(),
        }
    }

    #[tokio::test]
    async fn api_error_exits_2_and_prints_the_error() {
        let body = r#"{"code":404,"message":"pin is not part of the pinset"}"#;
        let o = run_against(http_response("404 Not Found", body), &["pin", "rm", CID1]).await;
        assert_eq!(o.code, 2);
        assert_eq!(o.stdout, "");
        assert_eq!(
            o.stderr,
            "An error occurred:\n  Code: 404\n  Message: pin is not part of the pinset\n"
        );
        assert!(
            o.request
                .starts_with(&format!("DELETE /pins/{CID1} HTTP/1.1\r\n"))
        );
    }

    #[tokio::test]
    async fn non_json_error_body_becomes_the_message() {
        let o = run_against(
            http_response("405 Method Not Allowed", ""),
            &["--enc", "json", "version"],
        )
        .await;
        assert_eq!(o.code, 2);
        assert_eq!(
            o.stderr,
            "{\n    \"code\": 405,\n    \"message\": \"\"\n}\n"
        );
    }

    #[tokio::test]
    async fn no_peers_prints_nothing() {
        let response = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned();
        let o = run_against(response, &["peers", "ls"]).await;
        assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (0, "", ""));
        assert!(o.request.starts_with("GET /peers HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn streamed_pins_are_printed_one_by_one() {
        let pin = serde_json::to_string(&sample_pin()).unwrap();
        let mut everywhere = sample_pin();
        everywhere.options.replication_factor_min = -1;
        everywhere.options.replication_factor_max = -1;
        let body = format!("{pin}\n{}\n", serde_json::to_string(&everywhere).unwrap());
        let o = run_against(
            http_response("200 OK", &body),
            &["pin", "ls", "--filter", "pin"],
        )
        .await;
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(
            o.stdout,
            format_pin(&sample_pin()) + &format_pin(&everywhere)
        );
        assert!(
            o.request
                .starts_with("GET /allocations?filter=pin HTTP/1.1\r\n")
        );
    }

    #[tokio::test]
    async fn broken_stream_exits_1() {
        let pin = serde_json::to_string(&sample_pin()).unwrap();
        let body = format!("{pin}\n{{\"cid\":");
        let o = run_against(http_response("200 OK", &body), &["pin", "ls"]).await;
        assert_eq!(o.code, 1);
        assert_eq!(o.stdout, format_pin(&sample_pin()));
        assert!(o.stderr.contains("Code: 0"), "{}", o.stderr);
        assert!(
            o.request
                .starts_with("GET /allocations?filter=all HTTP/1.1\r\n")
        );
    }

    #[tokio::test]
    async fn pin_add_sends_every_option() {
        let body = serde_json::to_string(&sample_pin()).unwrap();
        let o = run_against(
            http_response("200 OK", &body),
            &[
                "--basic-auth",
                "u:p",
                "pin",
                "add",
                CID1,
                "-r",
                "2",
                "-n",
                "a b",
                "--metadata",
                "k=v",
            ],
        )
        .await;
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.stdout, format_pin(&sample_pin()));
        let want = format!(
            "POST /pins/{CID1}?meta-k=v&mode=recursive&name=a+b&replication-max=2&\
             replication-min=2&shard-size=0&user-allocations= HTTP/1.1\r\n"
        );
        assert!(o.request.starts_with(&want), "{}", o.request);
        // base64("u:p")
        assert!(
            o.request.contains("authorization: Basic dTpw\r\n"),
            "{}",
            o.request
        );
    }

    #[tokio::test]
    async fn id_in_text() {
        let body = serde_json::to_string(&sample_id()).unwrap();
        let o = run_against(http_response("200 OK", &body), &["id"]).await;
        assert_eq!((o.code, o.stdout), (0, format_id(&sample_id())));
    }

    #[tokio::test]
    async fn bad_success_body_exits_2() {
        let o = run_against(http_response("200 OK", "{\"version\":"), &["version"]).await;
        assert_eq!(o.code, 2);
        assert!(o.stderr.contains("Code: 200"), "{}", o.stderr);
    }

    #[tokio::test]
    async fn connection_refused_exits_1() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let host = format!("/ip4/127.0.0.1/tcp/{port}");
        let cli = parse(&["-l", &host, "id"]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_with(&cli.opts, &cli.cmd, &mut out, &mut err).await, 1);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with("An error occurred:\n  Code: 0\n"), "{err}");
    }

    #[tokio::test]
    async fn timeout_exits_62() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never answers.
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(socket);
        });
        let host = format!("/ip4/127.0.0.1/tcp/{port}");
        let cli = parse(&["-l", &host, "-t", "1", "version"]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_with(&cli.opts, &cli.cmd, &mut out, &mut err).await, 62);
        server.abort();
    }

    /// The binary may spawn the command on a multi-threaded runtime.
    #[test]
    fn run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let cli = parse(&["id"]);
        assert_send(&run(&cli.opts, &cli.cmd));
    }

    #[test]
    fn splitter_handles_values_cut_anywhere() {
        let a = serde_json::to_string(&Version {
            version: "a".into(),
        })
        .unwrap();
        let b = serde_json::to_string(&Version {
            version: "b".into(),
        })
        .unwrap();
        let body = format!("{a}\n  {b}{a}\n");
        for cut in 0..body.len() {
            let mut seen = Vec::new();
            let mut splitter = JsonSplitter::default();
            let mut collect = |v: Version| seen.push(v.version);
            splitter
                .push(&body.as_bytes()[..cut], &mut collect)
                .unwrap();
            splitter
                .push(&body.as_bytes()[cut..], &mut collect)
                .unwrap();
            splitter.finish().unwrap();
            assert_eq!(seen, ["a", "b", "a"], "cut at {cut}");
        }
    }
}
