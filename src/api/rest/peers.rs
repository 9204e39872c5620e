//! `POST /peers` and `DELETE /peers/{peer}`: the peerset changes of
//! [`crate::cluster`] (lasting peerset records, see its `peers` module).

use libp2p::PeerId;
use serde::Deserialize;
use warp::http::StatusCode;

use super::reply::{self, ApiReply, error};
use crate::cluster::Cluster;

#[derive(Deserialize)]
struct AddPeer {
    peer_id: String,
}

/// `POST /peers` with `{"peer_id": "<id>"}`: takes the peer (back) in and
/// answers with its `ID`.
pub async fn add(body: bytes::Bytes, ctx: Cluster) -> ApiReply {
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
    reply::answer(ctx.add_peer(peer).await)
}

/// `DELETE /peers/{peer}`: removes the peer for good and moves its
/// allocations.
pub async fn remove(raw: String, ctx: Cluster) -> ApiReply {
    let peer = match raw.parse::<PeerId>() {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("error decoding Peer ID: {e}"),
            );
        }
    };
    match ctx.remove_peer(peer).await {
        Ok(_) => reply::no_content(),
        Err(e) => reply::failed(&e),
    }
}
