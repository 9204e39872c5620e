//! `POST /pins/sync` and `POST /pins/{cid}/sync` (dropped by ipfs-cluster
//! 1.x, kept for our users): re-read this peer's IPFS pinset, settle the
//! tracker's operations against it, and answer with the refreshed status,
//! the way the recover endpoints do.

use std::collections::BTreeMap;
use std::sync::Arc;

use cid::Cid;
use warp::http::StatusCode;

use super::reply::{ApiReply, error, json, ndjson};
use super::{ApiContext, Me, cluster_status, global_info, local_only};
use crate::types::{self, Pin};

/// Pins synced per listing of the daemon's pinset.
const PAGE: usize = 256;

/// `POST /pins/sync`: syncs every pin of the state on this peer and streams
/// the ones whose status the sync changed (204 when none did).
pub async fn all(ctx: Arc<ApiContext>) -> ApiReply {
    let (tx, rx) = tokio::sync::mpsc::channel(PAGE);
    tokio::spawn(async move {
        let state = ctx.consensus.state().clone();
        let (page_tx, mut pages) = tokio::sync::mpsc::channel::<Vec<(Cid, Option<Pin>)>>(2);
        tokio::task::spawn_blocking(move || {
            let mut page = Vec::with_capacity(PAGE);
            for pin in state.list() {
                match pin {
                    Ok(pin) => page.push((pin.cid, Some(pin))),
                    Err(e) => tracing::warn!(error = %e, "unreadable pin skipped"),
                }
                if page.len() == PAGE && page_tx.blocking_send(std::mem::take(&mut page)).is_err() {
                    return;
                }
            }
            if !page.is_empty() {
                let _ = page_tx.blocking_send(page);
            }
        });
        let local = ctx.network.local_peer_id().to_string();
        let me = Me::of(&ctx).await;
        while let Some(page) = pages.recv().await {
            let synced = ctx.tracker.sync(&page).await;
            for ((cid, pin), (status, changed)) in page.into_iter().zip(synced) {
                if !changed {
                    continue;
                }
                let peer_map = BTreeMap::from([(local.clone(), me.entry(status))]);
                if tx
                    .send(Ok::<_, String>(global_info(cid, pin, peer_map)))
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
            }
        }
    });
    ndjson(tokio_stream::wrappers::ReceiverStream::new(rx)).await
}

/// `POST /pins/{cid}/sync`: syncs one CID on this peer, then answers with
/// its status on every peer (or this one with `local=true`).
pub async fn one(raw_cid: String, query: Vec<(String, String)>, ctx: Arc<ApiContext>) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let pin = match ctx.consensus.state().get(&cid) {
        Ok(pin) => pin,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    ctx.tracker.sync(&[(cid, pin)]).await;
    match cluster_status(&ctx, &cid, local_only(&query), false).await {
        Ok(info) => json(StatusCode::OK, &info),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
