//! `init`: a new configuration folder with its three files.

use std::fs;
use std::path::{Path, PathBuf};

use libp2p::{Multiaddr, PeerId};

use super::{
    Config, ConfigError, SERVICE_FILE, TrustedPeers, invalid, io_error, parse_secret, peer_id_of,
};
use crate::folder::write_atomic;
use crate::identity::Identity;

/// What `init` was asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Overwrite an existing `service.json`.
    pub force: bool,
    /// Peer name; `None` = the host name.
    pub peername: Option<String>,
    pub secret: SecretChoice,
    /// `--peers`: multiaddrs with `/p2p/<id>`, written to the peerstore,
    /// `cluster.peer_addresses` and `consensus.crdt.trusted_peers`.
    pub peers: Vec<Multiaddr>,
    /// Which IPFS node the peer uses.
    pub ipfs: IpfsChoice,
}

/// The IPFS node a new configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpfsChoice {
    /// The peer's own node (`ipfs_connector.embedded`): nothing else to run.
    #[default]
    Embedded,
    /// A Kubo daemon at `ipfs_connector.ipfshttp.node_multiaddress`.
    Kubo,
}

/// Where the cluster secret of a new configuration comes from.
#[derive(Debug, Clone)]
pub enum SecretChoice {
    /// `$CLUSTER_SECRET` when set, else 32 random bytes.
    Generate,
    /// No private network.
    None,
    /// 64 hex characters given by the user.
    Hex(String),
}

/// What `init` did.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// This peer's id (from the new or the kept identity).
    pub peer_id: PeerId,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub kept: Vec<PathBuf>,
}

/// `init`: creates `dir` with `service.json`, `identity.json` and `peerstore`.
///
/// Refuses when `service.json` exists, unless `force`. An existing
/// `identity.json` is always kept (even with `force`): losing it would give
/// the peer a new id that the others do not trust. An existing peerstore is
/// kept unless `peers` are given.
pub fn init_folder(dir: &Path, opts: &InitOptions) -> Result<InitReport, ConfigError> {
    init_folder_with_env(dir, opts, |var| std::env::var(var).ok())
}

/// [`init_folder`] with the environment (`CLUSTER_SECRET`) given as a lookup.
pub fn init_folder_with_env(
    dir: &Path,
    opts: &InitOptions,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<InitReport, ConfigError> {
    let service = dir.join(SERVICE_FILE);
    if !opts.force && exists(&service)? {
        return Err(ConfigError::Exists { path: service });
    }

    let mut config = Config::new_default();
    if opts.ipfs == IpfsChoice::Embedded {
        config.ipfs_connector.embedded = Some(Default::default());
    }
    if let Some(name) = opts.peername.as_ref().filter(|n| !n.is_empty()) {
        config.cluster.peername = name.clone();
    }
    config.cluster.secret = match &opts.secret {
        SecretChoice::Generate => match lookup("CLUSTER_SECRET").filter(|s| !s.is_empty()) {
            Some(hex) => parse_secret(&hex).map_err(|problem| ConfigError::Env {
                var: "CLUSTER_SECRET".to_string(),
                problem,
            })?,
            None => Some(random_secret()),
        },
        SecretChoice::None => None,
        SecretChoice::Hex(hex) => parse_secret(hex).map_err(|p| invalid("cluster.secret", p))?,
    };
    if !opts.peers.is_empty() {
        let mut trusted = Vec::new();
        for (i, addr) in opts.peers.iter().enumerate() {
            let id = peer_id_of(addr).ok_or_else(|| {
                invalid(
                    format!("cluster.peer_addresses[{i}]"),
                    format!("{addr} has no /p2p/<peer id> component"),
                )
            })?;
            if !trusted.contains(&id) {
                trusted.push(id);
            }
        }
        config.consensus.crdt.trusted_peers = TrustedPeers::Only(trusted);
        config.cluster.peer_addresses = opts.peers.clone();
    }
    config.validate()?;

    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut written = Vec::new();
    let mut kept = Vec::new();

    let identity_path = Identity::path(dir);
    let identity = if exists(&identity_path)? {
        // Read it to be sure the peer can start with it.
        let identity = Identity::load_with_env(dir, |_| None)?;
        kept.push(identity_path);
        identity
    } else {
        let identity = Identity::generate();
        identity.save(dir)?;
        written.push(identity_path);
        identity
    };

    config.save(dir)?;
    written.push(service);

    let peerstore = config.cluster.peerstore_path(dir);
    if !opts.peers.is_empty() || !exists(&peerstore)? {
        let text: String = opts.peers.iter().map(|a| format!("{a}\n")).collect();
        write_atomic(&peerstore, text.as_bytes()).map_err(io_error(&peerstore))?;
        written.push(peerstore);
    } else {
        kept.push(peerstore);
    }

    Ok(InitReport {
        peer_id: identity.peer_id,
        written,
        kept,
    })
}

/// The configuration folder when none is given: `$PINCLUSTER_PATH`, else
/// `$HOME/.pincluster` (`.pincluster` when there is no home).
pub fn default_config_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("PINCLUSTER_PATH") {
        return PathBuf::from(path);
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home).join(".pincluster"),
        None => PathBuf::from(".pincluster"),
    }
}

fn exists(path: &Path) -> Result<bool, ConfigError> {
    path.try_exists().map_err(io_error(path))
}

fn random_secret() -> [u8; 32] {
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}
