//! The cluster's answers to other peers: what the network's request
//! handler serves when a peer asks this one. Heads and blocks come
//! straight from fjall (the sync protocol); statuses, recovery and the
//! IPFS calls come from this peer's [`Local`] side, the same code that
//! answers this peer's own API.

use cid::Cid;
use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::Multiaddr;
use pincluster_crdt::Reader;
use pincluster_crdt::store::FjallStore;

use super::local::Local;
use crate::network::{PeerPinStatus, RemoteRepoGc, RemoteRepoStat, RpcHandler, SyncSource};
use crate::pintracker::TrackerEntry;

/// What this peer serves to the others.
#[derive(Debug)]
pub struct ClusterRpc {
    reader: Reader<FjallStore>,
    local: Local,
}

impl ClusterRpc {
    /// Answers from the store behind `reader` and from `local`.
    pub fn new(reader: Reader<FjallStore>, local: Local) -> ClusterRpc {
        ClusterRpc { reader, local }
    }
}

impl SyncSource for ClusterRpc {
    fn heads(&self) -> Vec<Cid> {
        match self.reader.heads() {
            Ok(heads) => heads.into_iter().map(|h| h.cid).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read heads");
                Vec::new()
            }
        }
    }

    fn block(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.reader.block(cid).unwrap_or_else(|e| {
            tracing::error!(error = %e, %cid, "cannot read block");
            None
        })
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        self.reader.served_snapshot().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the served snapshot");
            None
        })
    }
}

impl RpcHandler for ClusterRpc {
    fn ipfs(&self) -> (String, Vec<Multiaddr>) {
        self.local.seen_daemon()
    }

    fn status_many(&self, cids: Vec<Cid>) -> BoxFuture<'static, Vec<PeerPinStatus>> {
        let local = self.local.clone();
        async move {
            let peername = local.peername().to_string();
            local
                .statuses_of(cids)
                .await
                .into_iter()
                .map(|status| remote_status(&peername, status))
                .collect()
        }
        .boxed()
    }

    fn recover_all(&self) -> Vec<Cid> {
        self.local.recover_all()
    }

    fn ipfs_links(&self) -> BoxFuture<'static, (String, Vec<String>)> {
        let local = self.local.clone();
        async move { local.ipfs_links().await }.boxed()
    }

    fn status(&self, cid: Cid, recover: bool) -> BoxFuture<'static, PeerPinStatus> {
        let local = self.local.clone();
        async move { remote_status(local.peername(), local.status(cid, recover).await) }.boxed()
    }

    fn repo_stat(&self) -> BoxFuture<'static, Result<RemoteRepoStat, String>> {
        let local = self.local.clone();
        async move { local.repo_stat().await }.boxed()
    }

    fn repo_gc(&self) -> BoxFuture<'static, RemoteRepoGc> {
        let local = self.local.clone();
        async move { local.repo_gc().await }.boxed()
    }
}

fn remote_status(peername: &str, local: TrackerEntry) -> PeerPinStatus {
    PeerPinStatus {
        peername: peername.to_string(),
        status: local.status,
        error: local.error,
        attempts: local.attempts,
        priority: local.priority,
        updated: local.updated,
        fetched: local.fetched.map(Into::into),
    }
}
