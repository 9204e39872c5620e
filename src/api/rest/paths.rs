//! `POST|DELETE /pins/{ipfs|ipns|ipld}/<path>`: pin or unpin what an IPFS
//! path points to, resolved through the IPFS daemon. Unlike the CID route,
//! these honour `mode=direct`, as in the reference.

use cid::Cid;
use warp::http::StatusCode;

use super::reply::{self, ApiReply, error};
use crate::api::query::path_decode;
use crate::cluster::Cluster;
use crate::types::{Pin, PinOptions};

/// The namespaces a path route starts with.
const NAMESPACES: [&str; 3] = ["ipfs", "ipns", "ipld"];

/// `/<namespace>/<rest>` from the part of the URL after `/pins/`, if it is
/// a path route at all (`/pins/ipfs` alone is the CID route).
pub fn path_of(tail: &str) -> Option<String> {
    let (namespace, rest) = tail.split_once('/')?;
    let rest = rest.trim_end_matches('/');
    (NAMESPACES.contains(&namespace) && !rest.is_empty())
        .then(|| format!("/{namespace}/{}", path_decode(rest)))
}

/// Checks a path as the reference's path parser does: `/ipfs/` and
/// `/ipld/` paths start with a CID, `/ipns/` paths with a name.
fn parse(path: &str) -> Result<(), String> {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let namespace = parts.next().unwrap_or_default();
    let root = parts.next().unwrap_or_default();
    if root.is_empty() {
        return Err(format!(
            "error parsing path: invalid path {path:?}: not enough path components"
        ));
    }
    if namespace != "ipns"
        && let Err(e) = Cid::try_from(root)
    {
        return Err(format!(
            "error parsing path: invalid path {path:?}: invalid cid: {e}"
        ));
    }
    Ok(())
}

async fn resolve(ctx: &Cluster, path: &str) -> Result<Cid, ApiReply> {
    parse(path).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    ctx.resolve(path).await.map_err(|e| reply::failed(&e))
}

/// `POST /pins/<namespace>/<path>`.
pub async fn post(path: String, query: Vec<(String, String)>, ctx: Cluster) -> ApiReply {
    let options = match PinOptions::from_query(&query) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let cid = match resolve(&ctx, &path).await {
        Ok(cid) => cid,
        Err(reply) => return reply,
    };
    reply::answer(ctx.pin(Pin::new(cid, options)).await)
}

/// `DELETE /pins/<namespace>/<path>`.
pub async fn delete(path: String, ctx: Cluster) -> ApiReply {
    match resolve(&ctx, &path).await {
        Ok(cid) => reply::answer(ctx.unpin(cid).await),
        Err(reply) => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_paths_with_a_rest_are_path_routes() {
        assert_eq!(path_of("ipfs/Qm/a%20b/"), Some("/ipfs/Qm/a b".to_string()));
        assert_eq!(
            path_of("ipns/example.com"),
            Some("/ipns/example.com".to_string())
        );
        assert_eq!(path_of("ipfs"), None);
        assert_eq!(path_of("ipfs/"), None);
        assert_eq!(path_of("other/Qm"), None);
    }

    #[test]
    fn ipfs_paths_need_a_cid() {
        assert!(parse("/ipfs/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG/x").is_ok());
        assert!(parse("/ipns/example.com").is_ok());
        let e = parse("/ipfs/notacid").unwrap_err();
        assert!(e.starts_with("error parsing path: invalid path"), "{e}");
    }
}
