//! The command line: `init` and `daemon` run a peer, `state` works on a
//! stopped peer's pinset, every other command is a client of a peer's REST
//! API, as ipfs-cluster-ctl is.

pub mod client;
mod daemon;
pub mod follow;
pub mod state;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

use client::{ClientCommand, ClientOpts};

/// pincluster: an IPFS Cluster peer, and a client for it.
#[derive(Debug, Parser)]
#[command(name = "pincluster", version, about, propagate_version = true)]
pub struct Cli {
    /// Options of the client commands.
    #[command(flatten)]
    pub client: ClientOpts,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Writes a new configuration folder: service.json, identity.json, peerstore.
    Init(InitArgs),
    /// Runs the peer until SIGINT or SIGTERM (initialising the folder first if it is empty).
    Daemon(DaemonArgs),
    /// Follow a collaborative cluster: `follow <cluster> init|run|list|info`.
    Follow(follow::FollowArgs),
    /// Export, import or remove the pinset of a stopped peer.
    State(state::StateArgs),
    /// Client commands, against --host.
    #[command(flatten)]
    Client(ClientCommand),
}

/// `pincluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Configuration folder [default: $PINCLUSTER_PATH, else ~/.pincluster].
    #[arg(long, short = 'c', value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Overwrite an existing configuration.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// The peer's name [default: the host name].
    #[arg(long)]
    pub peername: Option<String>,
    /// The cluster secret, 64 hex characters [default: $CLUSTER_SECRET, else random].
    #[arg(long, conflicts_with = "no_secret")]
    pub secret: Option<String>,
    /// Run without a private network.
    #[arg(long)]
    pub no_secret: bool,
    /// Peers to trust and connect to, comma-separated multiaddrs with /p2p/<id>.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<Multiaddr>,
    /// The IPFS node: `embedded` (the peer's own, nothing else to run) or
    /// `kubo` (a daemon at ipfs_connector.ipfshttp.node_multiaddress).
    #[arg(long, value_enum, default_value_t = IpfsArg::Embedded)]
    pub ipfs: IpfsArg,
}

/// `init --ipfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IpfsArg {
    Embedded,
    Kubo,
}

/// `pincluster daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Configuration folder [default: $PINCLUSTER_PATH, else ~/.pincluster].
    #[arg(long, short = 'c', value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Peers to join, comma-separated multiaddrs with /p2p/<id>.
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Init(args) => daemon::init(args),
        Command::Daemon(args) => daemon::run(args).await,
        Command::Follow(args) => follow::run(args).await,
        Command::State(args) => state::run(args),
        Command::Client(cmd) => client::run(&cli.client, &cmd).await,
    }
}
