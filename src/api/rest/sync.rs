//! `POST /pins/sync` and `POST /pins/{cid}/sync` (dropped by ipfs-cluster
//! 1.x, kept for our users): re-read this peer's IPFS pinset, settle the
//! tracker's operations against it, and answer with the refreshed status,
//! the way the recover endpoints do.

use warp::http::StatusCode;

use super::local_only;
use super::reply::{self, ApiReply, error};
use crate::cluster::Cluster;
use crate::types;

/// `POST /pins/sync`: syncs every pin of the state on this peer and streams
/// the ones whose status the sync changed (204 when none did).
pub async fn all(ctx: Cluster) -> ApiReply {
    reply::stream(ctx.sync_all()).await
}

/// `POST /pins/{cid}/sync`: syncs one CID on this peer, then answers with
/// its status on every peer (or this one with `local=true`).
pub async fn one(raw_cid: String, query: Vec<(String, String)>, ctx: Cluster) -> ApiReply {
    let cid = match types::decode_cid(&raw_cid) {
        Ok(cid) => cid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    reply::answer(ctx.sync(cid, local_only(&query)).await)
}
