//! Calls that reach every peer's IPFS daemon: `repo/stat` summed over the
//! cluster and `repo/gc` run everywhere (the IPFS proxy and the REST API's
//! `POST /ipfs/gc` share them), and the task that keeps the daemons of all
//! peers connected to each other ([`connect_swarms`]).
//!
//! The local daemon is asked directly, the other peers over the cluster
//! RPC, all at once ([`ask_all`]), each bounded by a timeout: a silent
//! peer is skipped (stat) or reported (gc), it never holds up the answer.

use std::collections::BTreeMap;
use std::time::Duration;

use cid::Cid;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use libp2p::multiaddr::Protocol;

use super::{Cluster, ClusterError, SeenDaemon, ask_all};
use crate::ipfsconn::{Connector, IpfsConnector};
use crate::monitor::Monitor;
use crate::network::{RemoteRepoGc, RemoteRepoStat};
use crate::types::opt_string;

/// How long a peer may take to report its repository size.
const STAT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to collect garbage (the sync protocol's own
/// request timeout may end it sooner).
const GC_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The IPFS daemon's RPC API, untyped: the same daemon as the typed
/// [`KuboConnector`], for the calls that connector does not make: a full
/// `repo/stat` (Kubo clients need `NumObjects`, which `size-only` leaves
/// out) and the proxy's forwarding.
#[derive(Debug, Clone)]
pub struct RawIpfsApi {
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

impl RawIpfsApi {
    /// The daemon at `node` (`https` from `node_https`).
    pub fn new(node: &libp2p::Multiaddr, https: bool) -> Result<RawIpfsApi, BadNodeAddress> {
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
        Ok(RawIpfsApi { http, origin })
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

impl Cluster {
    /// The usage of this peer's daemon plus that of every peer that
    /// answers in time; the others are skipped (and logged). Fails only
    /// when the local daemon does. `RepoPath` and `Version` are the local
    /// daemon's.
    pub async fn repo_stat(&self) -> Result<FullRepoStat, ClusterError> {
        let peers = self.network().peers().await.unwrap_or_default();
        let theirs = ask_all(peers, STAT_TIMEOUT, |peer| {
            self.network().remote_repo_stat(peer)
        });
        let (local, theirs) = tokio::join!(self.inner.local.daemon.repo_stat(), theirs);
        let mut sum = local.map_err(ClusterError::IpfsCall)?;
        for (peer, answer) in theirs {
            let stat = match answer {
                Ok(stat) => stat,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "repo/stat: peer skipped");
                    continue;
                }
            };
            let u = &mut sum.usage;
            u.repo_size = u.repo_size.saturating_add(stat.repo_size);
            u.storage_max = u.storage_max.saturating_add(stat.storage_max);
            u.num_objects = u.num_objects.saturating_add(stat.num_objects);
        }
        Ok(sum)
    }

    /// Runs `repo/gc` on this peer's daemon and, unless `local_only`, on
    /// every other peer's at the same time. A peer that fails shows with
    /// its error.
    pub async fn repo_gc(&self, local_only: bool) -> GlobalRepoGc {
        let peers = if local_only {
            Vec::new()
        } else {
            self.network().peers().await.unwrap_or_default()
        };
        let theirs = ask_all(peers, GC_TIMEOUT, |peer| {
            self.network().remote_repo_gc(peer)
        });
        let (local, theirs) = tokio::join!(self.inner.local.repo_gc(), theirs);
        let mut global = GlobalRepoGc::default();
        let local = (self.local_peer_id(), local);
        let theirs = theirs
            .into_iter()
            .map(|(peer, answer)| (peer, answer.unwrap_or_else(|e| failed(e.to_string()))));
        for (peer, gc) in std::iter::once(local).chain(theirs) {
            global.peer_map.insert(peer.to_string(), info(peer, gc));
        }
        global
    }
}

/// What this peer answers to a `RepoGc` request.
pub(super) async fn local_repo_gc<I: IpfsConnector>(ipfs: &I, peername: String) -> RemoteRepoGc {
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

/// How often the connector checks its daemon's identity and connections
/// when nothing else wakes it: this bounds how long a daemon that
/// restarted (this peer's or another's, same addresses) stays apart.
const SWARM_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Keeps what this peer publishes about its IPFS daemon current, and
/// connects that daemon to the other peers' daemons, so allocated peers
/// fetch content from each other over bitswap.
///
/// The reference connects once, `connect_swarms_delay` after start: a pin
/// made before then (or after a daemon restarts) can spend every attempt
/// on a daemon that cannot reach the content. Here a daemon is connected
/// as soon as this peer learns of it (a peer's `ping` names a new daemon or
/// new addresses), and every check finds, from the daemon's own
/// `swarm/peers`, the daemons it lost (a restart on either side) and
/// connects them again. `connect` false (`connect_swarms_delay: 0s`, as in
/// the reference) leaves the swarm alone and only keeps the identity.
pub async fn connect_swarms(ipfs: Connector, monitor: Monitor, seen: SeenDaemon, connect: bool) {
    let mut tick = tokio::time::interval(SWARM_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = monitor.ipfs_daemons_changed() => {}
        }
        let own = match ipfs.id().await {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(error = %e, "IPFS daemon not reachable");
                continue;
            }
        };
        let now_seen = (own.id.to_string(), own.addresses.clone());
        let changed = seen.lock().is_ok_and(|mut s| {
            let changed = *s != now_seen;
            *s = now_seen;
            changed
        });
        if changed {
            // Other peers learn our daemon from our ping: send it now
            // rather than at the next ping interval.
            monitor.want_metrics();
        }
        if !connect {
            continue;
        }
        let Ok(linked) = ipfs.swarm_peers().await else {
            continue;
        };
        let missing = monitor
            .ipfs_daemons(chrono::Utc::now())
            .into_iter()
            .filter(|d| d.id != own.id && !linked.contains(&d.id));
        // One slow or unreachable daemon does not hold up the others.
        futures::future::join_all(missing.map(|daemon| {
            let ipfs = ipfs.clone();
            async move {
                for addr in &daemon.addresses {
                    let mut addr = addr.clone();
                    if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                        addr.push(Protocol::P2p(daemon.id));
                    }
                    match ipfs.swarm_connect(&addr).await {
                        Ok(()) => {
                            tracing::info!(peer = %daemon.peer, %addr, "IPFS daemon connected to the peer's daemon");
                            return;
                        }
                        Err(e) => tracing::debug!(%addr, error = %e, "swarm connect failed"),
                    }
                }
            }
        }))
        .await;
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
