//! Calls that reach every peer's IPFS daemon: `repo/stat` summed over the
//! cluster and `repo/gc` run everywhere. The IPFS proxy and the REST API's
//! `POST /ipfs/gc` share them.
//!
//! The local daemon is asked directly, the other peers over the sync
//! protocol (`SyncRequest::RepoStat` / `RepoGc`), all at once, each bounded
//! by a timeout: a silent peer is skipped (stat) or reported (gc), it never
//! holds up the answer.

use std::collections::BTreeMap;
use std::time::Duration;

use cid::Cid;
use futures::future::join_all;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::ipfsconn::IpfsConnector;
use crate::network::{Network, RemoteRepoGc, RemoteRepoStat};
use crate::types::opt_string;

/// How long a peer may take to report its repository size.
const STAT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to collect garbage (the sync protocol's own
/// request timeout may end it sooner).
const GC_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The IPFS daemon's HTTP address, for the calls the connector does not
/// make: a full `repo/stat` (Kubo clients need `NumObjects`, which
/// `size-only` leaves out) and the proxy's forwarding.
#[derive(Debug, Clone)]
pub struct Daemon {
    http: reqwest::Client,
    origin: String,
}

/// `node_multiaddress` is not something HTTP can reach.
#[derive(Debug, thiserror::Error)]
#[error("unsupported IPFS node address {0}: expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>")]
pub struct BadNodeAddress(pub libp2p::Multiaddr);

/// A full `repo/stat`, numbers decoded whether the daemon sends them as
/// numbers (Kubo) or strings (js-ipfs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullRepoStat {
    pub usage: RemoteRepoStat,
    pub repo_path: String,
    pub version: String,
}

impl Daemon {
    /// The daemon at `node` (`https` from `node_https`).
    pub fn new(node: &libp2p::Multiaddr, https: bool) -> Result<Daemon, BadNodeAddress> {
        let bad = || BadNodeAddress(node.clone());
        let origin = crate::ipfsconn::node_origin(node, https).ok_or_else(bad)?;
        // The daemon is beside the peer: never through a proxy from the
        // environment. No overall timeout: adds and cats may stream for
        // hours; callers bound what must be bounded.
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .map_err(|_| bad())?;
        Ok(Daemon { http, origin })
    }

    /// The shared HTTP client (one connection pool to the daemon).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `scheme://host:port`, no trailing slash.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `POST /api/v0/repo/stat`, bounded by [`STAT_TIMEOUT`].
    pub async fn repo_stat(&self) -> Result<FullRepoStat, String> {
        #[derive(Deserialize)]
        struct Reply {
            #[serde(rename = "RepoSize", default)]
            repo_size: Count,
            #[serde(rename = "StorageMax", default)]
            storage_max: Count,
            #[serde(rename = "NumObjects", default)]
            num_objects: Count,
            #[serde(rename = "RepoPath", default)]
            repo_path: String,
            #[serde(rename = "Version", default)]
            version: String,
        }
        let url = format!("{}/api/v0/repo/stat", self.origin);
        let call = async {
            let res = self
                .http
                .post(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status();
            let body = res.bytes().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!(
                    "repo/stat: HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ));
            }
            let r: Reply = serde_json::from_slice(&body).map_err(|e| format!("repo/stat: {e}"))?;
            Ok(FullRepoStat {
                usage: RemoteRepoStat {
                    repo_size: r.repo_size.0,
                    storage_max: r.storage_max.0,
                    num_objects: r.num_objects.0,
                },
                repo_path: r.repo_path,
                version: r.version,
            })
        };
        tokio::time::timeout(STAT_TIMEOUT, call)
            .await
            .map_err(|_| format!("repo/stat: no answer after {STAT_TIMEOUT:?}"))?
    }
}

/// A count Kubo sends as a number and js-ipfs as a string.
#[derive(Debug, Default, Clone, Copy)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Count(n)),
            Either::S(s) => s.parse().map(Count).map_err(serde::de::Error::custom),
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One removed key, or an error in its place (Go's `IPFSRepoGC`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcKey {
    /// `null` when the line was an error.
    #[serde(with = "opt_string", default)]
    pub key: Option<Cid>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub error: String,
}

/// One peer's collection (Go's `RepoGC`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoGcInfo {
    pub peer: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub peername: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub keys: Vec<GcKey>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub error: String,
}

/// Every peer's collection, by peer id (Go's `GlobalRepoGC`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GlobalRepoGc {
    #[serde(default, deserialize_with = "null_as_default")]
    pub peer_map: BTreeMap<String, RepoGcInfo>,
}

/// The usage of this peer's daemon plus that of every peer that answers
/// in time; the others are skipped (and logged). Fails only when the
/// local daemon does. `RepoPath` and `Version` are the local daemon's.
pub async fn repo_stat(network: &Network, daemon: &Daemon) -> Result<FullRepoStat, String> {
    let peers = network.peers().await.unwrap_or_default();
    let asks = peers.into_iter().map(|peer| async move {
        match tokio::time::timeout(STAT_TIMEOUT, network.remote_repo_stat(peer)).await {
            Ok(Ok(stat)) => Some(stat),
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "repo/stat: peer skipped");
                None
            }
            Err(_) => {
                tracing::warn!(%peer, "repo/stat: peer skipped, no answer in time");
                None
            }
        }
    });
    let (local, remote) = tokio::join!(daemon.repo_stat(), join_all(asks));
    let mut sum = local?;
    for stat in remote.into_iter().flatten() {
        let u = &mut sum.usage;
        u.repo_size = u.repo_size.saturating_add(stat.repo_size);
        u.storage_max = u.storage_max.saturating_add(stat.storage_max);
        u.num_objects = u.num_objects.saturating_add(stat.num_objects);
    }
    Ok(sum)
}

/// Runs `repo/gc` on this peer's daemon and, unless `local_only`, on every
/// other peer's at the same time. A peer that fails shows with its error.
pub async fn repo_gc<I: IpfsConnector>(
    network: &Network,
    ipfs: &I,
    local_only: bool,
) -> GlobalRepoGc {
    let peers = if local_only {
        Vec::new()
    } else {
        network.peers().await.unwrap_or_default()
    };
    let local_peer = network.local_peer_id();
    let local = async {
        let peername = network
            .local_id()
            .await
            .map(|id| id.peername)
            .unwrap_or_default();
        (local_peer, local_repo_gc(ipfs, peername).await)
    };
    let asks = peers.into_iter().map(|peer| async move {
        let gc = match tokio::time::timeout(GC_TIMEOUT, network.remote_repo_gc(peer)).await {
            Ok(Ok(gc)) => gc,
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed(format!("no answer after {GC_TIMEOUT:?}")),
        };
        (peer, gc)
    });
    let (local, remote) = tokio::join!(local, join_all(asks));
    let mut global = GlobalRepoGc::default();
    for (peer, gc) in std::iter::once(local).chain(remote) {
        global.peer_map.insert(peer.to_string(), info(peer, gc));
    }
    global
}

/// What this peer answers to a `RepoGc` request.
pub async fn local_repo_gc<I: IpfsConnector>(ipfs: &I, peername: String) -> RemoteRepoGc {
    match ipfs.repo_gc().await {
        Ok(gc) => RemoteRepoGc {
            peername,
            removed: gc.removed,
            errors: gc.errors,
            error: String::new(),
        },
        Err(e) => RemoteRepoGc {
            peername,
            error: e.to_string(),
            ..failed(String::new())
        },
    }
}

fn failed(error: String) -> RemoteRepoGc {
    RemoteRepoGc {
        peername: String::new(),
        removed: Vec::new(),
        errors: Vec::new(),
        error,
    }
}

fn info(peer: PeerId, gc: RemoteRepoGc) -> RepoGcInfo {
    let keys = gc
        .removed
        .into_iter()
        .map(|cid| GcKey {
            key: Some(cid),
            error: String::new(),
        })
        .chain(
            gc.errors
                .into_iter()
                .map(|error| GcKey { key: None, error }),
        )
        .collect();
    RepoGcInfo {
        peer: peer.to_string(),
        peername: gc.peername,
        keys,
        error: gc.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_repo_gc_has_the_reference_shape() {
        let peer = PeerId::random();
        let cid = pincluster_crdt::cid_of(b"gone");
        let gc = info(
            peer,
            RemoteRepoGc {
                peername: "p1".into(),
                removed: vec![cid],
                errors: vec!["some gc error".into()],
                error: String::new(),
            },
        );
        let mut global = GlobalRepoGc::default();
        global.peer_map.insert(peer.to_string(), gc);
        let json = serde_json::to_value(&global).unwrap();
        let want = serde_json::json!({"peer_map": {peer.to_string(): {
            "peer": peer.to_string(),
            "peername": "p1",
            "keys": [{"key": cid.to_string()}, {"key": null, "error": "some gc error"}],
        }}});
        assert_eq!(json, want);
        let back: GlobalRepoGc = serde_json::from_value(json).unwrap();
        assert_eq!(back, global);

        let down = info(peer, failed("rpc failure".into()));
        let json = serde_json::to_value(&down).unwrap();
        assert_eq!(json["keys"], serde_json::json!([]));
        assert_eq!(json["error"], "rpc failure");
    }
}
