//! The client commands of the `pincluster` binary, after `ipfs-cluster-ctl`
//! (spec §5.1): `id`, `version`, `peers ls|rm`, `add`, `pin
//! add|rm|update|ls`, `status`, `recover`, `health metrics|alerts|bandwidth`.
//! Each is a call (or a few) to a peer's REST API, printed the way
//! ipfs-cluster-ctl prints it so that its users' habits and scripts carry
//! over: text on stdout, error objects on stdout too, local errors on stderr.
//!
//! [`format`] holds the pure printers, [`http`] the calls and the errors
//! that pick the exit code: 0 success, 1 local or transport failure, 2 the
//! API answered with an error, 62 a `--timeout` or `--wait-timeout`
//! expired. Streamed answers (`peers ls`, `pin ls`, `status`, `add`) are
//! printed item by item as they arrive.

mod add;
mod format;
mod http;

use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local, TimeDelta};
use cid::Cid;
use clap::{Args, Subcommand, ValueEnum};
use libp2p::multiaddr;
use libp2p::{Multiaddr, PeerId};
use reqwest::Method;

use self::format::{Bandwidth, emit, print_some, render};
pub(super) use self::http::{Api, CallError};
use crate::cluster::ipfs::GlobalRepoGc;
use crate::duration::parse_time_delta;
use crate::graph::ConnectGraph;
use crate::monitor::{Alert, Metric};
use crate::status::{GlobalPinInfo, StatusFilter, TrackerStatus};
use crate::types::{IdInfo, Pin, PinMode, PinOptions, PinType, Version, decode_cid};

/// Where ipfs-cluster-ctl looks for the REST API by default.
const DEFAULT_HOST: &str = "/ip4/127.0.0.1/tcp/9094";

/// Options shared by every client command (ipfs-cluster-ctl's global flags).
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// REST API address: a multiaddr such as /ip4/127.0.0.1/tcp/9094 (also
    /// /ip6, /dns, /dns4, /dns6), /unix/<path> for a unix socket, or an
    /// http(s)://host:port URL
    #[arg(long, short = 'l', default_value = DEFAULT_HOST, value_parser = parse_host)]
    pub host: ApiHost,
    /// Output format
    #[arg(long = "encoding", visible_alias = "enc", value_enum, default_value_t = Encoding::Text)]
    pub encoding: Encoding,
    /// Seconds to wait for each answer; 0 waits forever
    #[arg(long, short = 't', default_value_t = 0)]
    pub timeout: u64,
    /// USER or USER:PASSWORD for an API with basic authentication (implies
    /// --https unless --force-http)
    #[arg(
        long = "basic-auth",
        env = "CLUSTER_CREDENTIALS",
        hide_env_values = true
    )]
    pub basic_auth: Option<String>,
    /// Use https for a multiaddr --host
    #[arg(long, short = 's')]
    pub https: bool,
    /// Do not verify the server's TLS certificate (its chain nor its name),
    /// e.g. for a self-signed one
    #[arg(long = "no-check-certificate")]
    pub no_check_certificate: bool,
    /// Keep plain http even with --basic-auth
    #[arg(long = "force-http", short = 'f')]
    pub force_http: bool,
    /// Print each request (method, URL, query, body) and the raw response
    /// to stderr
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
    /// A unix socket (`/unix/<path>`), as ipfs-cluster-follow's API
    /// listens on.
    Unix(std::path::PathBuf),
}

impl ApiHost {
    fn base_url(&self, https: bool) -> String {
        match self {
            ApiHost::Multiaddr(authority) => {
                let scheme = if https { "https" } else { "http" };
                format!("{scheme}://{authority}")
            }
            ApiHost::Url(origin) => origin.clone(),
            // The socket is the connection; the name only fills the
            // request's Host header.
            ApiHost::Unix(_) => {
                let scheme = if https { "https" } else { "http" };
                format!("{scheme}://localhost")
            }
        }
    }
}

/// A `--host` value that names no HTTP endpoint.
#[derive(Debug, thiserror::Error)]
pub(super) enum HostError {
    #[error("invalid multiaddress: {0}")]
    Multiaddr(#[from] multiaddr::Error),
    #[error("invalid URL: {0}")]
    Url(#[source] UrlParseError),
    #[error(
        "unsupported API address {0:?}: use /ip4, /ip6, /dns, /dns4 or /dns6 followed by \
         /tcp/<port>, /unix/<path>, or an http(s)://host:port URL"
    )]
    Unsupported(String),
}

/// The `url` crate's error, which reqwest does not re-export by name.
type UrlParseError = <reqwest::Url as std::str::FromStr>::Err;

pub(super) fn parse_host(s: &str) -> Result<ApiHost, HostError> {
    let unsupported = || HostError::Unsupported(s.to_owned());
    if s.starts_with("http://") || s.starts_with("https://") {
        let url: reqwest::Url = s.parse().map_err(HostError::Url)?;
        let only_origin = matches!(url.path(), "" | "/") && url.query().is_none();
        if url.host_str().is_none() || !only_origin {
            return Err(unsupported());
        }
        return Ok(ApiHost::Url(url.origin().ascii_serialization()));
    }
    // As in Go's multiaddrs, the rest of the text is the socket's path
    // (`/unix/run/f/api-socket`): rust-multiaddr would take one segment.
    if let Some(rest) = s.strip_prefix("/unix/") {
        return Ok(ApiHost::Unix(std::path::Path::new("/").join(rest)));
    }
    let addr: Multiaddr = s.parse()?;
    let (host_port, mut rest) = crate::addr::host_port(&addr).ok_or_else(unsupported)?;
    match rest.next() {
        None => Ok(ApiHost::Multiaddr(host_port)),
        Some(_) => Err(unsupported()),
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
    /// List and remove cluster peers
    Peers {
        #[command(subcommand)]
        cmd: PeersCmd,
    },
    /// Add files or directories to IPFS through the cluster and pin them
    Add(add::AddArgs),
    /// Pin, unpin, update and list the cluster's pinset
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
        #[arg(long, default_value = "", value_parser = parse_status_filter)]
        filter: String,
        /// Only the contacted peer's view.
        #[arg(long)]
        local: bool,
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
    /// Metrics, alerts, traffic and the connectivity graph of the cluster
    Health {
        #[command(subcommand)]
        cmd: HealthCmd,
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
    /// Remove a peer from the cluster
    Rm {
        /// The peer's id.
        #[arg(value_parser = parse_peer_id)]
        peer: PeerId,
    },
}

/// `health` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum HealthCmd {
    /// The latest valid metrics of one type for every peer, or the metric
    /// types when no name is given
    Metrics {
        /// freespace, ping, tag:<name>, pinqueue...
        name: Option<String>,
    },
    /// The latest alerts: metrics that expired without a newer one
    Alerts,
    /// Bytes sent and received per libp2p protocol
    Bandwidth,
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

/// What `pin add|rm|update` act on: a CID, or an IPFS path the peer
/// resolves (`/ipfs/...`, `/ipns/...`, `/ipld/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinTarget {
    Cid(Cid),
    Path(String),
}

fn parse_target(s: &str) -> Result<PinTarget, String> {
    if !s.starts_with('/') {
        return decode_cid(s).map(PinTarget::Cid).map_err(|e| e.to_string());
    }
    let path = s.trim_end_matches('/');
    let mut parts = path.splitn(4, '/').skip(1);
    match (parts.next(), parts.next()) {
        (Some("ipfs" | "ipns" | "ipld"), Some(root)) if !root.is_empty() => {
            Ok(PinTarget::Path(path.to_owned()))
        }
        _ => Err(
            "expected a CID or a path /ipfs/<cid>[/...], /ipns/<name>[/...], /ipld/<cid>[/...]"
                .to_owned(),
        ),
    }
}

/// `--wait` and friends, shared by `pin add|rm|update`.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Print the pin itself rather than fetching its status
    #[arg(long = "no-status", visible_alias = "ns")]
    no_status: bool,
    /// Wait until the target status is reached (on replication-min peers
    /// for a pin, on every peer for an unpin)
    #[arg(long, short = 'w')]
    wait: bool,
    /// How many peers must reach the status to stop waiting
    #[arg(long = "wait-limit", visible_alias = "wl")]
    wait_limit: Option<usize>,
    /// How long to --wait, as a Go duration (e.g. 30s, 2m); 0 = forever
    #[arg(long = "wait-timeout", visible_alias = "wt", value_parser = parse_duration, default_value = "0s")]
    wait_timeout: Duration,
}

/// `pin` subcommands.
/// The pin options `add` and `pin add` share, with ctl's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct PinFlags {
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
}

impl PinFlags {
    /// The options these flags give; as in ipfs-cluster-ctl, the expiry is
    /// computed here and sent as expire-at.
    fn options(&self) -> Result<PinOptions, CallError> {
        Ok(PinOptions {
            replication_factor_min: self.replication_min,
            replication_factor_max: self.replication_max,
            name: self.name.clone(),
            user_allocations: self.allocations.clone(),
            expire_at: self.expire_in.map(expiry_from_now).transpose()?,
            metadata: self.metadata.iter().cloned().collect(),
            ..PinOptions::default()
        })
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum PinCmd {
    /// Add a CID (or an IPFS path) to the cluster's pinset
    Add {
        #[arg(value_parser = parse_target)]
        target: PinTarget,
        /// Replication factor for both bounds (-1 = everywhere, 0 = the
        /// cluster's default); overrides --rmin and --rmax
        #[arg(long, short = 'r', default_value_t = 0, allow_negative_numbers = true)]
        replication: i32,
        #[command(flatten)]
        pin: PinFlags,
        /// recursive or direct
        #[arg(long, default_value = "recursive", value_parser = parse_mode)]
        mode: PinMode,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove a CID (or an IPFS path) from the cluster's pinset
    Rm {
        #[arg(value_parser = parse_target)]
        target: PinTarget,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Pin a new CID with the allocations and options of a pinned one (the
    /// old pin stays)
    Update {
        /// The pinned CID to copy from.
        #[arg(value_parser = decode_cid)]
        from: Cid,
        /// The new CID or path.
        #[arg(value_parser = parse_target)]
        to: PinTarget,
        /// A name for the new pin
        #[arg(long, short = 'n', default_value = "")]
        name: String,
        /// Unpin the new pin automatically after this Go duration
        #[arg(long = "expire-in", value_parser = parse_time_delta)]
        expire_in: Option<TimeDelta>,
        #[command(flatten)]
        wait: WaitArgs,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse_std_duration(s).map_err(|e| e.to_string())
}

/// Checked here, as ctl does, so a typo fails before any call.
fn parse_status_filter(s: &str) -> Result<String, String> {
    StatusFilter::parse(s)
        .map(|_| s.to_owned())
        .map_err(|_| "invalid filter name".to_owned())
}

/// Runs a client command against the API, printing results to stdout and
/// errors where ipfs-cluster-ctl prints them; returns the exit code.
pub async fn run(opts: &ClientOpts, cmd: &ClientCommand) -> i32 {
    run_with(opts, cmd, &mut io::stdout(), &mut io::stderr()).await
}

async fn run_with(
    opts: &ClientOpts,
    cmd: &ClientCommand,
    out: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
) -> i32 {
    let result = match Api::new(opts, log) {
        Ok(api) => execute(&api, opts.encoding, cmd, out, log).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            e.report(opts.encoding, out, log);
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
        ClientCommand::Peers {
            cmd: PeersCmd::Rm { peer },
        } => {
            let path = format!("/peers/{peer}");
            api.call::<serde_json::Value>(Method::DELETE, &path, &[], log)
                .await?;
        }
        ClientCommand::Add(args) => add::run(api, enc, args, out, log).await?,
        ClientCommand::Pin { cmd } => pin(api, enc, cmd, out, log).await?,
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
        ClientCommand::Health { cmd } => match cmd {
            HealthCmd::Metrics { name: None } => {
                let names = api
                    .call::<Vec<String>>(Method::GET, "/monitor/metrics", &[], log)
                    .await?;
                print_some(out, enc, names.as_ref());
            }
            HealthCmd::Metrics { name: Some(name) } => {
                let path = format!("/monitor/metrics/{name}");
                let metrics = api
                    .call::<Vec<Metric>>(Method::GET, &path, &[], log)
                    .await?;
                print_some(out, enc, metrics.as_ref());
            }
            HealthCmd::Alerts => {
                let alerts = api
                    .call::<Vec<Alert>>(Method::GET, "/health/alerts", &[], log)
                    .await?;
                print_some(out, enc, alerts.as_ref());
            }
            HealthCmd::Bandwidth => {
                let bw = api
                    .call::<Bandwidth>(Method::GET, "/health/bandwidth", &[], log)
                    .await?;
                print_some(out, enc, bw.as_ref());
            }
            HealthCmd::Graph {
                file,
                all_ipfs_peers,
            } => {
                let graph = api
                    .call::<ConnectGraph>(Method::GET, "/health/graph", &[], log)
                    .await?
                    .unwrap_or_default();
                let dot = crate::graph::dot::render(&graph, *all_ipfs_peers);
                match file {
                    Some(path) => std::fs::write(path, dot).map_err(|e| {
                        CallError::local("writing the graph", format!("{}: {e}", path.display()))
                    })?,
                    None => emit(out, &dot),
                }
            }
        },
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

/// `pin add|rm|update|ls`.
async fn pin(
    api: &Api,
    enc: Encoding,
    cmd: &PinCmd,
    out: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
) -> Result<(), CallError> {
    match cmd {
        PinCmd::Add {
            target,
            replication,
            pin,
            mode,
            wait,
        } => {
            let mut options = pin.options()?;
            options.mode = *mode;
            // As in ipfs-cluster-ctl: a non-zero -r sets both bounds.
            if *replication != 0 {
                options.replication_factor_min = *replication;
                options.replication_factor_max = *replication;
            }
            let path = pin_path(target, *mode);
            let pin = api
                .call::<Pin>(Method::POST, &path, &options.to_query(), log)
                .await?;
            after_pin(api, enc, pin, TrackerStatus::Pinned, wait, out, log).await
        }
        PinCmd::Rm { target, wait } => {
            let path = pin_path(target, PinMode::Recursive);
            let pin = api.call::<Pin>(Method::DELETE, &path, &[], log).await?;
            after_pin(api, enc, pin, TrackerStatus::Unpinned, wait, out, log).await
        }
        PinCmd::Update {
            from,
            to,
            name,
            expire_in,
            wait,
        } => {
            let options = PinOptions {
                name: name.clone(),
                expire_at: expire_in.map(expiry_from_now).transpose()?,
                pin_update: Some(*from),
                ..PinOptions::default()
            };
            let path = pin_path(to, PinMode::Recursive);
            let pin = api
                .call::<Pin>(Method::POST, &path, &options.to_query(), log)
                .await?;
            after_pin(api, enc, pin, TrackerStatus::Pinned, wait, out, log).await
        }
        PinCmd::Ls {
            cid: Some(cid),
            filter: _,
        } => {
            let path = format!("/allocations/{cid}");
            let pin = api.call::<Pin>(Method::GET, &path, &[], log).await?;
            print_some(out, enc, pin.as_ref());
            Ok(())
        }
        PinCmd::Ls { cid: None, filter } => {
            let query = [("filter".to_owned(), allocations_filter(filter))];
            let mut print = |pin: Pin| emit(out, &render(enc, &pin));
            api.stream(Method::GET, "/allocations", &query, log, &mut print)
                .await
        }
    }
}

/// The route for a pin or unpin. ctl always uses the path route
/// `/pins/ipfs/<cid>`, which makes the peer resolve the CID through IPFS;
/// a plain CID goes to `/pins/<cid>` instead, which needs no IPFS daemon.
/// That route pins recursively whatever the mode (the reference's quirk),
/// so a direct pin takes the path route, which honours it.
fn pin_path(target: &PinTarget, mode: PinMode) -> String {
    match (target, mode) {
        (PinTarget::Cid(cid), PinMode::Direct) => format!("/pins/ipfs/{cid}"),
        (PinTarget::Cid(cid), PinMode::Recursive) => format!("/pins/{cid}"),
        (PinTarget::Path(path), _) => format!("/pins{path}"),
    }
}

/// What ctl prints after a pin, unpin or update: the pin itself with
/// `--no-status`, else its cluster status, after `--wait`ing for `target`
/// or, without waiting, after a second for the peers to start on it.
async fn after_pin(
    api: &Api,
    enc: Encoding,
    pin: Option<Pin>,
    target: TrackerStatus,
    args: &WaitArgs,
    out: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
) -> Result<(), CallError> {
    let Some(pin) = pin else {
        return Ok(());
    };
    let mut status = None;
    if args.wait {
        let limit = args.wait_limit.unwrap_or(match target {
            TrackerStatus::Pinned => {
                usize::try_from(pin.options.replication_factor_min).unwrap_or(0)
            }
            _ => 0,
        });
        status = Some(wait_for(api, &pin.cid, target, args.wait_timeout, limit, log).await?);
    }
    if args.no_status {
        emit(out, &render(enc, &pin));
        return Ok(());
    }
    let status = match status {
        Some(s) => s,
        None => {
            tokio::time::sleep(WAIT_CHECK_EVERY).await;
            let path = format!("/pins/{}", pin.cid);
            let query = [("local".to_owned(), "false".to_owned())];
            match api
                .call::<GlobalPinInfo>(Method::GET, &path, &query, log)
                .await?
            {
                Some(s) => s,
                None => return Ok(()),
            }
        }
    };
    emit(out, &render(enc, &status));
    Ok(())
}

/// How often `--wait` polls the status (ctl's `defaultWaitCheckFreq`).
const WAIT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Polls `GET /pins/<cid>` every second until `limit` peers (0: every
/// peer, `remote` ones aside when waiting for `pinned`) show `target`.
/// Any peer in an error state ends the wait with an error, as in ctl.
async fn wait_for(
    api: &Api,
    cid: &Cid,
    target: TrackerStatus,
    timeout: Duration,
    limit: usize,
    log: &mut (dyn Write + Send),
) -> Result<GlobalPinInfo, CallError> {
    let poll = async {
        let path = format!("/pins/{cid}");
        let query = [("local".to_owned(), "false".to_owned())];
        loop {
            tokio::time::sleep(WAIT_CHECK_EVERY).await;
            let Some(status) = api
                .call::<GlobalPinInfo>(Method::GET, &path, &query, log)
                .await?
            else {
                continue;
            };
            if status_reached(&status, target, limit)? {
                return Ok(status);
            }
        }
    };
    // Like ctl, a timeout under the poll interval means no timeout.
    if timeout > WAIT_CHECK_EVERY {
        tokio::time::timeout(timeout, poll)
            .await
            .unwrap_or(Err(CallError::WaitTimeout))
    } else {
        poll.await
    }
}

/// ctl's `statusReached`.
fn status_reached(
    info: &GlobalPinInfo,
    target: TrackerStatus,
    limit: usize,
) -> Result<bool, CallError> {
    let statuses = || info.peer_map.values().map(|p| p.status);
    if statuses().any(|s| {
        matches!(
            s,
            TrackerStatus::Undefined
                | TrackerStatus::ClusterError
                | TrackerStatus::PinError
                | TrackerStatus::UnpinError
        )
    }) {
        return Err(CallError::local(
            "waiting for pin status",
            format!(
                "error has occurred while attempting to reach status: {}",
                target.as_str()
            ),
        ));
    }
    let limit = limit.min(info.peer_map.len());
    if limit > 0 {
        return Ok(statuses().filter(|s| *s == target).count() >= limit);
    }
    Ok(statuses()
        .all(|s| s == target || (s == TrackerStatus::Remote && target == TrackerStatus::Pinned)))
}

fn expiry_from_now(d: TimeDelta) -> Result<DateTime<FixedOffset>, CallError> {
    Local::now()
        .fixed_offset()
        .checked_add_signed(d)
        .ok_or_else(|| CallError::local("parsing expire-in", "the expiry time is out of range"))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::format::{format_id, format_pin};
    use super::http::{StreamItems, parse_credentials};
    use super::*;
    use crate::types::{ApiError, IpfsIdInfo, PinType};

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
        assert_eq!(
            parse_host("/unix/run/follow/api-socket").unwrap(),
            ApiHost::Unix("/run/follow/api-socket".into()),
        );
        let https = parse_host("/ip4/10.0.0.1/tcp/443").unwrap();
        assert_eq!(https.base_url(true), "https://10.0.0.1:443");
        for bad in [
            "/ip4/127.0.0.1",
            "/ip4/127.0.0.1/udp/9094",
            "/ip4/127.0.0.1/tcp/9094/unix/sock",
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
            cmd: PinCmd::Add { pin, mode, .. },
        } = cli.cmd
        else {
            panic!("not pin add: {:?}", cli.cmd);
        };
        assert_eq!((pin.replication_min, pin.replication_max), (-1, 3));
        assert_eq!(mode, PinMode::Direct);
        assert_eq!(pin.expire_in, Some(TimeDelta::hours(1)));
        assert_eq!(
            pin.metadata,
            vec![("a".into(), "b".into()), ("c".into(), "d=e".into())]
        );
        assert_eq!(pin.allocations, vec![peer(PEER_A), peer(PEER_B)]);

        for bad in [
            &["pin", "add", "nope"][..],
            &["pin", "add", CID1, "--mode", "sideways"],
            &["pin", "add", CID1, "--metadata", "novalue"],
            &["pin", "add", CID1, "--expire-in", "1d"],
            &["pin", "add", CID1, "--allocs", "nope"],
            &["-l", "/ip4/1.2.3.4/tcp/1/unix/x", "id"],
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
        assert_eq!(o.stderr, "");
        // ctl prints error objects on stdout.
        assert_eq!(
            o.stdout,
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
            o.stdout,
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
        assert!(
            o.stdout.starts_with(&format_pin(&sample_pin())),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains("Code: 0"), "{}", o.stdout);
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
                "--force-http",
                "pin",
                "add",
                "--no-status",
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
        assert!(o.stdout.contains("Code: 200"), "{}", o.stdout);
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
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("An error occurred:\n  Code: 0\n"), "{out}");
    }

    #[tokio::test]
    async fn basic_auth_implies_https_and_plain_http_is_named() {
        // A plain HTTP server: it answers the TLS hello as garbage.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = format!(
            "/ip4/127.0.0.1/tcp/{}",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let answer = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            let _ = socket.write_all(answer.as_bytes()).await;
        });
        let cli = parse(&["-l", &host, "--basic-auth", "u:p", "id"]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_with(&cli.opts, &cli.cmd, &mut out, &mut err).await, 1);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with("SSL automatically enabled"), "{err}");
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("An error occurred:\n  Code: 0\n"), "{out}");
        assert!(out.contains("the server does not speak TLS"), "{out}");
    }

    #[test]
    fn wait_stops_on_the_target_or_an_error() {
        let info = |statuses: &[(&str, TrackerStatus)]| GlobalPinInfo {
            cid: decode_cid(CID1).unwrap(),
            name: String::new(),
            allocations: vec![],
            origins: vec![],
            created: None,
            metadata: BTreeMap::new(),
            peer_map: statuses
                .iter()
                .map(|(p, s)| {
                    let e = serde_json::json!({"peername": p, "status": s.as_str()});
                    (p.to_string(), serde_json::from_value(e).unwrap())
                })
                .collect(),
        };
        use TrackerStatus::*;
        let pinned = TrackerStatus::Pinned;
        let two = info(&[("a", Pinned), ("b", Pinning)]);
        assert!(!status_reached(&two, pinned, 0).unwrap());
        assert!(status_reached(&two, pinned, 1).unwrap());
        assert!(status_reached(&info(&[("a", Pinned), ("b", Remote)]), pinned, 0).unwrap());
        assert!(!status_reached(&info(&[("a", Unpinned), ("b", Remote)]), Unpinned, 0).unwrap());
        let err = status_reached(&info(&[("a", Pinned), ("b", PinError)]), pinned, 1).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string()
                .contains("attempting to reach status: pinned"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn pin_update_and_peers_rm_requests() {
        let body = serde_json::to_string(&sample_pin()).unwrap();
        let o = run_against(
            http_response("200 OK", &body),
            &[
                "pin",
                "update",
                "--ns",
                CID1,
                "/ipfs/bafkqaaa/sub",
                "-n",
                "new",
            ],
        )
        .await;
        assert_eq!(o.code, 0, "{}", o.stdout);
        let want = format!(
            "POST /pins/ipfs/bafkqaaa/sub?mode=recursive&name=new&pin-update={CID1}&\
             replication-max=0&replication-min=0&shard-size=0&user-allocations= HTTP/1.1\r\n"
        );
        assert!(o.request.starts_with(&want), "{}", o.request);

        let response = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned();
        let o = run_against(response, &["peers", "rm", PEER_A]).await;
        assert_eq!((o.code, o.stdout.as_str()), (0, ""));
        assert!(
            o.request
                .starts_with(&format!("DELETE /peers/{PEER_A} HTTP/1.1\r\n"))
        );
    }

    /// Answers one chunked upload (read to its last chunk) with `response`;
    /// yields the whole request.
    async fn serve_upload(response: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.ends_with(b"\r\n0\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the upload ended early");
                request.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (format!("/ip4/127.0.0.1/tcp/{port}"), handle)
    }

    #[tokio::test]
    async fn add_uploads_multipart_and_prints_what_was_added() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hello.txt");
        std::fs::write(&file, "hello world").unwrap();
        let items = [
            r#"{"name":"hello.txt","cid":"QmLeaf","size":19}"#,
            r#"{"name":"","cid":"QmRoot","size":60,"allocations":["p1"]}"#,
        ];
        let body = format!("{}\n{}\n", items[0], items[1]);
        for (flags, want) in [
            (&[][..], "added QmLeaf hello.txt\nadded QmRoot \n"),
            (&["-q"][..], "QmLeaf\nQmRoot\n"),
            (&["-Q"][..], "QmRoot\n"),
        ] {
            let (host, server) = serve_upload(http_response("200 OK", &body)).await;
            let path = file.to_str().unwrap();
            let mut args = vec!["-l", host.as_str(), "add", "--rmin", "2", "-n", "greeting"];
            args.extend_from_slice(flags);
            args.push(path);
            let cli = parse(&args);
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = run_with(&cli.opts, &cli.cmd, &mut out, &mut err).await;
            let request = server.await.unwrap();
            assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
            assert_eq!(String::from_utf8(out).unwrap(), want, "{flags:?}");
            let head = request.lines().next().unwrap();
            assert!(head.starts_with("POST /add?"), "{head}");
            for param in [
                "name=greeting",
                "replication-min=2",
                "stream-channels=true",
                "wrap-with-directory=false",
                "format=unixfs",
                "shard-size=104857600",
            ] {
                assert!(head.contains(param), "{param} missing: {head}");
            }
            assert!(
                request.contains("content-type: multipart/form-data; boundary="),
                "{request}"
            );
            // Chunked on the wire: the part's header, then the file's bytes.
            assert!(
                request.contains(
                    "Content-Disposition: form-data; name=\"file\"; filename=\"hello.txt\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                ),
                "{request}"
            );
            assert!(request.contains("\r\nhello world\r\n"), "{request}");
        }

        // --no-stream with JSON: one array, as ctl prints it.
        let (host, server) = serve_upload(http_response("200 OK", &body)).await;
        let cli = parse(&[
            "-l",
            &host,
            "--enc",
            "json",
            "add",
            "--no-stream",
            file.to_str().unwrap(),
        ]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_with(&cli.opts, &cli.cmd, &mut out, &mut err).await, 0);
        server.await.unwrap();
        let printed: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
        assert_eq!(printed.len(), 2);
        assert_eq!(printed[1]["allocations"][0], "p1");
    }

    #[tokio::test]
    async fn debug_prints_the_query_and_the_raw_answer() {
        let body = serde_json::to_string(&sample_pin()).unwrap();
        let o = run_against(
            http_response("200 OK", &body),
            &[
                "-d", "pin", "add", "--ns", CID1, "--mode", "direct", "-n", "x",
            ],
        )
        .await;
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            o.request.starts_with(&format!("POST /pins/ipfs/{CID1}?")),
            "{}",
            o.request
        );
        assert!(
            o.stderr.contains("> POST http://127.0.0.1:"),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains(">   mode=direct\n"), "{}", o.stderr);
        assert!(o.stderr.contains(">   name=x\n"), "{}", o.stderr);
        assert!(o.stderr.contains("< 200 OK\n"), "{}", o.stderr);
        assert!(o.stderr.contains(&body), "{}", o.stderr);
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

    /// Items are one per line, cut anywhere; the last needs no newline.
    #[test]
    fn stream_items_handle_values_cut_anywhere() {
        let a = serde_json::to_string(&Version {
            version: "a".into(),
        })
        .unwrap();
        let b = serde_json::to_string(&Version {
            version: "b".into(),
        })
        .unwrap();
        let body = format!("{a}\n\n  {b}\n{a}");
        for cut in 0..=body.len() {
            let mut seen = Vec::new();
            let mut items = StreamItems::default();
            let mut collect = |v: Version| seen.push(v.version);
            items.push(&body.as_bytes()[..cut], &mut collect).unwrap();
            items.push(&body.as_bytes()[cut..], &mut collect).unwrap();
            items.finish(&mut collect).unwrap();
            assert_eq!(seen, ["a", "b", "a"], "cut at {cut}");
        }
    }

    #[test]
    fn stream_items_refuse_what_is_not_one_value_a_line() {
        let mut ignore = |_: Version| {};
        let mut cut_short = StreamItems::default();
        cut_short
            .push(b"{\"version\":\"a\"}\n{\"vers", &mut ignore)
            .unwrap();
        assert!(matches!(
            cut_short.finish(&mut ignore),
            Err(CallError::Truncated)
        ));
        let mut garbage = StreamItems::default();
        assert!(matches!(
            garbage.push(b"<html>\n", &mut ignore),
            Err(CallError::StreamDecode(_))
        ));
    }
}
