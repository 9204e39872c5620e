//! `init` and `daemon`.

use std::path::Path;

use crate::config::{self, Config, InitOptions, IpfsChoice, SecretChoice};
use crate::identity::Identity;
use crate::peer::Peer;

use super::{DaemonArgs, InitArgs, IpfsArg};

pub(super) fn init(args: InitArgs) -> i32 {
    let dir = args.config.unwrap_or_else(config::default_config_dir);
    let secret = match (args.no_secret, args.secret) {
        (true, _) => SecretChoice::None,
        (false, Some(hex)) => SecretChoice::Hex(hex),
        (false, None) => SecretChoice::Generate,
    };
    let options = InitOptions {
        force: args.force,
        peername: args.peername,
        secret,
        peers: args.peers,
        ipfs: match args.ipfs {
            IpfsArg::Embedded => IpfsChoice::Embedded,
            IpfsArg::Kubo => IpfsChoice::Kubo,
        },
    };
    match config::init_folder(&dir, &options) {
        Ok(_) => {
            eprintln!("configuration written to {}", dir.display());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub(super) async fn run(args: DaemonArgs) -> i32 {
    let dir = args.config.unwrap_or_else(config::default_config_dir);
    match start(&dir, args.bootstrap).await {
        Ok(peer) => {
            serve_until_signal(peer).await;
            0
        }
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

/// Runs `peer` until SIGINT or SIGTERM, then shuts it down in order; a
/// second signal exits at once.
pub(super) async fn serve_until_signal(peer: Peer) {
    wait_for_signal().await;
    tracing::info!("shutting down (a second signal exits at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        std::process::exit(130);
    });
    peer.shutdown().await;
}

async fn start(dir: &Path, bootstrap: Vec<libp2p::Multiaddr>) -> anyhow::Result<Peer> {
    if !dir.join("service.json").exists() {
        tracing::info!(dir = %dir.display(), "no configuration yet: initialising with defaults");
        config::init_folder(
            dir,
            &InitOptions {
                force: false,
                peername: None,
                secret: SecretChoice::Generate,
                peers: Vec::new(),
                ipfs: IpfsChoice::Embedded,
            },
        )?;
    }
    let loaded = Config::load_fetching(dir).await?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let identity = Identity::load(dir)?;
    tracing::info!(peer = %identity.peer_id, name = %loaded.config.cluster.peername, "starting");
    Ok(Peer::start(dir, loaded.config, identity, bootstrap).await?)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can only be killed; run on.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
