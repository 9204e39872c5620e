//! Requests to peers and answers to theirs, on both protocols: the sync
//! protocol (heads and blocks, served from fjall; block walks run on the
//! blocking pool so a large answer never stalls the Swarm) and the cluster
//! RPC (answered by the [`RpcHandler`](super::super::RpcHandler), off the
//! loop when it waits on the IPFS daemon).

use std::collections::{HashSet, VecDeque};

use cid::Cid;
use futures::future::BoxFuture;
use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use serde_bytes::ByteBuf;

use super::super::protocol::{
    MAX_BLOCKS_PER_RESPONSE, MAX_RESPONSE_BYTES, PeerPinStatus, RemoteGraph, RemoteId,
    RemoteRepoGc, RemoteRepoStat, RpcRequest, RpcResponse, SyncRequest, SyncResponse,
};
use super::super::{NetworkError, Reply, SyncSource};
use super::EventLoop;

/// A sync request waiting for its answer.
pub(super) enum SyncPending {
    Heads(Reply<Vec<Cid>>),
    Snapshot(Reply<Option<Vec<u8>>>),
    Blocks(Reply<Vec<(Cid, Vec<u8>)>>),
}

impl SyncPending {
    pub(super) fn fail(self, error: NetworkError) {
        // The asker may have given up meanwhile; nothing to do then.
        match self {
            SyncPending::Heads(r) => drop(r.send(Err(error))),
            SyncPending::Snapshot(r) => drop(r.send(Err(error))),
            SyncPending::Blocks(r) => drop(r.send(Err(error))),
        }
    }
}

/// A cluster RPC waiting for its answer.
pub(super) enum RpcPending {
    Id(Reply<RemoteId>),
    Status(Reply<PeerPinStatus>),
    StatusMany(Reply<Vec<PeerPinStatus>>),
    Recovered(Reply<Vec<Cid>>),
    Graph(Reply<RemoteGraph>),
    RepoStat(Reply<RemoteRepoStat>),
    RepoGc(Reply<RemoteRepoGc>),
    Done(Reply<()>),
}

impl RpcPending {
    pub(super) fn fail(self, error: NetworkError) {
        // The asker may have given up meanwhile; nothing to do then.
        match self {
            RpcPending::Id(r) => drop(r.send(Err(error))),
            RpcPending::Status(r) => drop(r.send(Err(error))),
            RpcPending::StatusMany(r) => drop(r.send(Err(error))),
            RpcPending::Recovered(r) => drop(r.send(Err(error))),
            RpcPending::Graph(r) => drop(r.send(Err(error))),
            RpcPending::RepoStat(r) => drop(r.send(Err(error))),
            RpcPending::RepoGc(r) => drop(r.send(Err(error))),
            RpcPending::Done(r) => drop(r.send(Err(error))),
        }
    }
}

impl EventLoop {
    /// Sends `request` to `peer`; the answer goes to `pending`'s reply.
    ///
    /// A follower asks only peers it is connected to while it has any
    /// connection: a request dials, and dialing the trusted peer that
    /// trimmed it (the author of every head it hears of, and so the first
    /// peer asked for blocks) brought every follower back onto the trusted
    /// peers at each new pin. Other peers relay the same signed blocks.
    pub(super) fn sync_request(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        pending: SyncPending,
    ) {
        if self.config.follower
            && !self.swarm.is_connected(&peer)
            && !self.connected_peers().is_empty()
        {
            pending.fail(NetworkError::Request {
                peer,
                reason: "not connected (a follower asks the peers it is connected to)".into(),
            });
            return;
        }
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        self.pending_sync.insert(id, pending);
    }

    /// Sends `request` to `peer`; the answer goes to `pending`'s reply.
    pub(super) fn rpc_request(&mut self, peer: PeerId, request: RpcRequest, pending: RpcPending) {
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
        self.pending_rpc.insert(id, pending);
    }

    /// Heads and blocks go to trusted peers and peers of the cluster
    /// alike: blocks are signed, anyone may relay them.
    pub(super) fn on_sync_request(
        &mut self,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        match request {
            SyncRequest::Heads => {
                let heads = self.source.heads();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse::Heads(heads));
            }
            SyncRequest::Snapshot => {
                let manifest = self.source.snapshot().map(ByteBuf::from);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse::Snapshot(manifest));
            }
            SyncRequest::Blocks { cids, ancestors } => {
                let source = self.source.clone();
                let answers = self.blocks_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let blocks = collect_blocks(source.as_ref(), cids, ancestors);
                    let _ = answers.blocking_send((channel, SyncResponse::Blocks(blocks)));
                });
            }
        }
    }

    pub(super) fn on_sync_response(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        response: SyncResponse,
    ) {
        let Some(pending) = self.pending_sync.remove(&request_id) else {
            return;
        };
        match (pending, response) {
            (SyncPending::Heads(r), SyncResponse::Heads(heads)) => drop(r.send(Ok(heads))),
            (SyncPending::Snapshot(r), SyncResponse::Snapshot(m)) => {
                drop(r.send(Ok(m.map(ByteBuf::into_vec))))
            }
            (SyncPending::Blocks(r), SyncResponse::Blocks(blocks)) => {
                let blocks = blocks.into_iter().map(|(c, b)| (c, b.into_vec())).collect();
                drop(r.send(Ok(blocks)));
            }
            (pending, _) => pending.fail(NetworkError::BadAnswer {
                peer,
                reason: "unexpected answer".to_string(),
            }),
        }
    }

    /// Answers a peer's cluster RPC: at once when the loop knows the
    /// answer, else off the loop (a slow IPFS daemon delays that answer
    /// only, never the Swarm).
    pub(super) fn on_rpc_request(
        &mut self,
        from: PeerId,
        request: RpcRequest,
        channel: ResponseChannel<RpcResponse>,
    ) {
        let later: BoxFuture<'static, RpcResponse> = match request {
            RpcRequest::SetRemoved { peer, removed } => {
                let local = *self.swarm.local_peer_id();
                let answer = if !self.trust.is_trusted(&from) {
                    tracing::warn!(%from, "peerset change asked by an untrusted peer: refused");
                    RpcResponse::NotTrusted
                } else if peer == local {
                    tracing::info!(removed, by = %from, "a trusted peer changed this peer's membership");
                    self.set_blocked(peer, removed, Vec::new());
                    RpcResponse::Done
                } else if peer != from {
                    tracing::info!(%peer, removed, %from, "peerset change asked by a trusted peer");
                    // The peerset record that follows carries the
                    // addresses; the asker's connection is enough now.
                    self.set_blocked(peer, removed, Vec::new());
                    RpcResponse::Done
                } else {
                    RpcResponse::Error("a peer cannot be removed by itself".into())
                };
                return self.answer_now(channel, answer);
            }
            RpcRequest::Id => return self.answer_now(channel, RpcResponse::Id(self.local_id())),
            RpcRequest::RecoverAll => {
                let mut recovered = self.handler.recover_all();
                recovered.truncate(super::super::protocol::MAX_RECOVERED_LISTED);
                return self.answer_now(channel, RpcResponse::Recovered(recovered));
            }
            RpcRequest::Status { cid, recover } => {
                let status = self.handler.status(cid, recover);
                Box::pin(async move { RpcResponse::Status(status.await) })
            }
            RpcRequest::StatusMany { cids } => {
                let statuses = self.handler.status_many(cids);
                Box::pin(async move { RpcResponse::StatusMany(statuses.await) })
            }
            RpcRequest::Graph => {
                let cluster_peers = self
                    .connected_peers()
                    .iter()
                    .map(PeerId::to_string)
                    .collect();
                let peername = self.config.peername.clone();
                let ipfs = self.handler.ipfs_links();
                Box::pin(async move {
                    let (ipfs_id, ipfs_peers) = ipfs.await;
                    RpcResponse::Graph(RemoteGraph {
                        peername,
                        cluster_peers,
                        ipfs_id,
                        ipfs_peers,
                    })
                })
            }
            RpcRequest::RepoStat => {
                let stat = self.handler.repo_stat();
                Box::pin(async move {
                    match stat.await {
                        Ok(stat) => RpcResponse::RepoStat(stat),
                        Err(e) => RpcResponse::Error(e),
                    }
                })
            }
            RpcRequest::RepoGc => {
                let gc = self.handler.repo_gc();
                Box::pin(async move { RpcResponse::RepoGc(gc.await) })
            }
        };
        let answers = self.answers_tx.clone();
        tokio::spawn(async move {
            let _ = answers.send((channel, later.await)).await;
        });
    }

    pub(super) fn answer_now(
        &mut self,
        channel: ResponseChannel<RpcResponse>,
        answer: RpcResponse,
    ) {
        // The asker may have gone away meanwhile; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, answer);
    }

    pub(super) fn on_rpc_response(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        response: RpcResponse,
    ) {
        let bad = |what: &str| NetworkError::BadAnswer {
            peer,
            reason: what.to_string(),
        };
        let Some(pending) = self.pending_rpc.remove(&request_id) else {
            return;
        };
        match (pending, response) {
            (RpcPending::Id(r), RpcResponse::Id(id)) => drop(r.send(Ok(id))),
            (RpcPending::Status(r), RpcResponse::Status(status)) => drop(r.send(Ok(status))),
            (RpcPending::StatusMany(r), RpcResponse::StatusMany(statuses)) => {
                drop(r.send(Ok(statuses)))
            }
            (RpcPending::Recovered(r), RpcResponse::Recovered(cids)) => drop(r.send(Ok(cids))),
            (RpcPending::Graph(r), RpcResponse::Graph(graph)) => drop(r.send(Ok(graph))),
            (RpcPending::RepoStat(r), RpcResponse::RepoStat(stat)) => drop(r.send(Ok(stat))),
            (RpcPending::RepoGc(r), RpcResponse::RepoGc(gc)) => drop(r.send(Ok(gc))),
            (RpcPending::Done(r), RpcResponse::Done) => drop(r.send(Ok(()))),
            (pending, RpcResponse::Error(e)) => pending.fail(bad(&e)),
            (pending, RpcResponse::NotTrusted) => pending.fail(NetworkError::NotTrusted { peer }),
            (pending, _) => pending.fail(bad("unexpected answer")),
        }
    }
}

/// The requested blocks this peer has, then their ancestors breadth-first,
/// within the response budget.
fn collect_blocks(source: &dyn SyncSource, cids: Vec<Cid>, ancestors: u32) -> Vec<(Cid, ByteBuf)> {
    let budget = (cids.len() + ancestors as usize).min(MAX_BLOCKS_PER_RESPONSE);
    let byte_budget = MAX_RESPONSE_BYTES as usize - 64 * 1024;
    let mut queue: VecDeque<Cid> = cids.into();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut size = 0;
    while let Some(cid) = queue.pop_front() {
        if out.len() >= budget || !seen.insert(cid) {
            continue;
        }
        let Some(bytes) = source.block(&cid) else {
            continue;
        };
        if size + bytes.len() > byte_budget && !out.is_empty() {
            break;
        }
        if ancestors > 0
            && let Ok(links) = pincluster_crdt::links_of(&bytes)
        {
            queue.extend(links);
        }
        size += bytes.len();
        out.push((cid, ByteBuf::from(bytes)));
    }
    out
}
