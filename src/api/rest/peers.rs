//! `POST /peers` and `DELETE /peers/{peer}`.
//!
//! The reference cannot remove a peer under CRDT consensus (membership
//! follows the `ping` metrics, so a removed peer that still runs comes
//! back). Here removal is real: the peer is blocked on this peer's network
//! and, through a request every other peer heeds if it trusts this one, on
//! theirs (connections closed and refused, so it is not taken back in by
//! accident); then every pin allocated to it is re-allocated among the
//! remaining peers and committed, so its share moves to others.
//! `POST /peers` is the deliberate way back: it lifts the block everywhere.
//! A peer offline at the time of the removal does not hear of it.

use std::sync::Arc;

use libp2p::PeerId;
use serde::Deserialize;
use tokio::sync::mpsc;
use warp::http::StatusCode;

use super::reply::{ApiReply, error, json};
use super::{ApiContext, PEER_ID_TIMEOUT, id_info};
use crate::allocator;

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
    if let Err(e) = ctx.network.set_blocked(peer, false).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    tell_everyone(&ctx, peer, false).await;
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

/// `DELETE /peers/{peer}`: blocks the peer and moves its allocations.
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
    if let Err(e) = ctx.network.set_blocked(peer, true).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    tell_everyone(&ctx, peer, true).await;
    match reallocate(&ctx, peer).await {
        Ok(moved) => {
            tracing::info!(%peer, pins = moved, "peer removed; its pins were re-allocated");
            let mut res = warp::reply::Response::new(Vec::new().into());
            *res.status_mut() = StatusCode::NO_CONTENT;
            res
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Tells every other peer of the peerset that `peer` is out (`removed`) or
/// back in, in parallel. A peer that does not answer is logged, not an
/// error: the change holds wherever it was heard.
async fn tell_everyone(ctx: &ApiContext, peer: PeerId, removed: bool) {
    let others = ctx.network.peers().await.unwrap_or_default();
    let asks = others.into_iter().filter(|p| *p != peer).map(|target| {
        let network = ctx.network.clone();
        async move {
            let told =
                tokio::time::timeout(PEER_ID_TIMEOUT, network.tell_removed(target, peer, removed))
                    .await;
            match told {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%target, %peer, error = %e, "peerset change not heard")
                }
                Err(_) => tracing::warn!(%target, %peer, "peerset change not answered in time"),
            }
        }
    });
    futures::future::join_all(asks).await;
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
