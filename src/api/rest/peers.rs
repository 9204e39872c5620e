//! `POST /peers` and `DELETE /peers/{peer}`.
//!
//! The reference cannot remove a peer under CRDT consensus (membership
//! follows the `ping` metrics, so a removed peer that still runs comes
//! back). Here removal is real and lasting: it is a peerset record in the
//! pinset's CRDT ([`crate::consensus::peerset`]), so it survives restarts,
//! reaches peers that were offline or join later, and counts only when
//! written by a trusted peer. Every peer that holds the record refuses the
//! removed peer's connections (from its start on, bootstrap included);
//! then every pin allocated to it is re-allocated among the remaining
//! peers, so its share moves to others. `POST /peers` is the deliberate way
//! back: a record that takes it back in.
//!
//! Before writing, the other live peers are told at once (the change is
//! immediate where they trust us), and their answers tell whether this peer
//! is trusted at all: when every peer that answered refuses it, nothing is
//! written. The removed peer itself is told too, so it logs the removal
//! and stops redialing.

use std::sync::Arc;

use libp2p::PeerId;
use serde::Deserialize;
use tokio::sync::mpsc;
use warp::http::StatusCode;

use super::reply::{ApiReply, error, json};
use super::{ApiContext, PEER_ID_TIMEOUT, id_info};
use crate::allocator;
use crate::consensus::peerset::PeerRecord;
use crate::network::NetworkError;

#[derive(Deserialize)]
struct AddPeer {
    peer_id: String,
}

/// `POST /peers` with `{"peer_id": "<id>"}`: takes the peer (back) in and
/// answers with its `ID`.
pub async fn add(body: bytes::Bytes, ctx: Arc<ApiContext>) -> ApiReply {
    let Ok(request) = serde_json::from_slice::<AddPeer>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "error decoding request body".to_string(),
        );
    };
    let Ok(peer) = request.peer_id.parse::<PeerId>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "error decoding peer_id".to_string(),
        );
    };
    // The addresses it had when it was removed: nobody remembers it
    // otherwise.
    let addrs = match ctx.consensus.peer_record(&peer) {
        Ok(record) => record.map(|r| r.addrs).unwrap_or_default(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Err(reply) = change_membership(&ctx, peer, false, addrs).await {
        return reply;
    }
    match tokio::time::timeout(PEER_ID_TIMEOUT, ctx.network.remote_id(peer)).await {
        Ok(Ok(remote)) => {
            let mut info = id_info(peer, remote);
            let local = ctx.network.local_peer_id();
            if !info.cluster_peers.contains(&local) {
                info.cluster_peers.push(local);
            }
            json(StatusCode::OK, &info)
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("peer {peer} did not answer within {PEER_ID_TIMEOUT:?}"),
        ),
    }
}

/// `DELETE /peers/{peer}`: removes the peer for good and moves its
/// allocations.
pub async fn remove(raw: String, ctx: Arc<ApiContext>) -> ApiReply {
    let peer = match raw.parse::<PeerId>() {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("error decoding Peer ID: {e}"),
            );
        }
    };
    let local = ctx.network.local_peer_id();
    if peer == local {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a peer cannot remove itself: ask another peer to remove it".to_string(),
        );
    }
    let addrs = ctx.network.peer_addrs(peer).await.unwrap_or_default();
    if let Err(reply) = change_membership(&ctx, peer, true, addrs).await {
        return reply;
    }
    match reallocate(&ctx, peer).await {
        Ok(moved) => {
            tracing::info!(%peer, pins = moved, "peer removed; its pins were re-allocated");
            super::reply::no_content()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Takes `peer` out (`removed`) or back in: tells the other live peers,
/// gives up if none of those that answered trusts this peer, tells `peer`
/// itself, and writes the peerset record (applied here before the write
/// returns). The error is the HTTP answer.
async fn change_membership(
    ctx: &ApiContext,
    peer: PeerId,
    removed: bool,
    addrs: Vec<libp2p::Multiaddr>,
) -> Result<(), ApiReply> {
    if ctx.consensus.is_follower() {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::consensus::ConsensusError::Follower.to_string(),
        ));
    }
    let others: Vec<PeerId> = ctx
        .network
        .peers()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|p| *p != peer)
        .collect();
    let told = tell(ctx, &others, peer, removed).await;
    if told.refused > 0 && told.heard == 0 {
        return Err(error(
            StatusCode::FORBIDDEN,
            "this peer is not trusted by the other peers of the cluster: the peerset is unchanged"
                .to_string(),
        ));
    }
    let record = PeerRecord::new(removed, ctx.network.local_peer_id(), addrs);
    if removed {
        // Told before the record blocks it here: afterwards it could not
        // be reached.
        tell(ctx, &[peer], peer, removed).await;
    }
    ctx.consensus
        .log_peer(peer, record)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if !removed {
        // Let back in (and dialed) by now: it may resume redialing.
        tell(ctx, &[peer], peer, removed).await;
    }
    Ok(())
}

/// How the peers told of a peerset change answered.
#[derive(Debug, Default)]
struct Told {
    heard: usize,
    refused: usize,
}

/// Tells each of `targets` that `peer` is out (`removed`) or back in, in
/// parallel. A peer that does not answer is logged, not an error: the
/// peerset record reaches it later.
async fn tell(ctx: &ApiContext, targets: &[PeerId], peer: PeerId, removed: bool) -> Told {
    let asks = targets.iter().map(|&target| {
        let network = ctx.network.clone();
        async move {
            let told =
                tokio::time::timeout(PEER_ID_TIMEOUT, network.tell_removed(target, peer, removed))
                    .await;
            match told {
                Ok(Ok(())) => Some(true),
                Ok(Err(NetworkError::NotTrusted { .. })) => {
                    tracing::warn!(%target, %peer, "peerset change refused: this peer is not trusted there");
                    Some(false)
                }
                Ok(Err(e)) => {
                    tracing::warn!(%target, %peer, error = %e, "peerset change not heard");
                    None
                }
                Err(_) => {
                    tracing::warn!(%target, %peer, "peerset change not answered in time");
                    None
                }
            }
        }
    });
    let mut told = Told::default();
    for answer in futures::future::join_all(asks).await {
        match answer {
            Some(true) => told.heard += 1,
            Some(false) => told.refused += 1,
            None => {}
        }
    }
    told
}

/// Re-allocates every pin allocated to `gone` (its live allocations stay);
/// returns how many moved. The pinset is streamed, never loaded whole.
async fn reallocate(ctx: &ApiContext, gone: PeerId) -> Result<usize, String> {
    let state = ctx.consensus.state().clone();
    let (tx, mut rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        for pin in state.list().flatten() {
            if pin.allocations.contains(&gone) && tx.blocking_send(pin).is_err() {
                return;
            }
        }
    });
    let mut moved = 0;
    while let Some(mut pin) = rx.recv().await {
        let current: Vec<PeerId> = pin
            .allocations
            .iter()
            .filter(|p| **p != gone)
            .copied()
            .collect();
        pin.allocations = ctx
            .allocator
            .allocate(allocator::Request {
                cid: &pin.cid,
                replication_min: pin.options.replication_factor_min,
                replication_max: pin.options.replication_factor_max,
                current: &current,
                priority: &pin.options.user_allocations,
                exclude: &[gone],
            })
            .map_err(|e| format!("re-allocating {}: {e}", pin.cid))?;
        pin.timestamp = Some(chrono::Utc::now().fixed_offset());
        ctx.consensus
            .log_pin(pin)
            .await
            .map_err(|e| e.to_string())?;
        moved += 1;
    }
    Ok(moved)
}
