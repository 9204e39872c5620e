//! The REST API's objects besides pins: a peer's `ID`, its IPFS daemon,
//! `Version`, the error body, and CIDs as the routes parse them.

use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::go_json::{
    display_from_str, null_as_default, opt_string, string_list, string_list_or_null,
};
/// Identity and view of one cluster peer (Go's `ID`: `GET /id`, the items of
/// `GET /peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdInfo {
    #[serde(with = "display_from_str")]
    pub id: PeerId,
    /// Listen addresses, each ending in `/p2p/<id>`.
    #[serde(default, with = "string_list")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default, with = "string_list")]
    pub cluster_peers: Vec<PeerId>,
    #[serde(default, with = "string_list")]
    pub cluster_peers_addresses: Vec<Multiaddr>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// Always empty in the reference 1.1.6.
    #[serde(default, deserialize_with = "null_as_default")]
    pub commit: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub rpc_protocol_version: String,
    /// Set when the peer could not be asked; the other fields are then empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub error: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ipfs: IpfsIdInfo,
    #[serde(default, deserialize_with = "null_as_default")]
    pub peername: String,
}

/// The IPFS daemon next to a cluster peer, as that peer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpfsIdInfo {
    /// Omitted when unknown (the reference's `omitempty`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_string")]
    pub id: Option<PeerId>,
    /// `null` when empty: the reference leaves it nil when IPFS failed.
    #[serde(default, with = "string_list_or_null")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub error: String,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
}

/// The body of every REST API error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default, deserialize_with = "null_as_default")]
    pub code: u16,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

/// A CID that did not parse; its text is the REST API's 400 message, with
/// the `invalid cid: ` go-cid puts before every decoding error.
#[derive(Debug, thiserror::Error)]
#[error("error decoding Cid: invalid cid: {0}")]
pub struct CidError(#[from] pub cid::Error);

/// Parses a CID the way the REST API's `{cid}` routes do: CIDv0 in base58,
/// CIDv1 in any multibase.
pub fn decode_cid(s: &str) -> Result<Cid, CidError> {
    Ok(Cid::try_from(s)?)
}
