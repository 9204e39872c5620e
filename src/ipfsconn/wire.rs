//! The RPC API's shapes, as Kubo and js-ipfs send them, and the pure
//! helpers around them. Every field is read leniently where the two daemons
//! differ: a CID is a string (base32 from Kubo, base58 from js-ipfs) or a
//! `{"/": ...}` link, a number may come as a string, lists may be `null`.

use std::collections::HashMap;
use std::fmt;

use cid::Cid;
use libp2p::Multiaddr;
use reqwest::Url;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{IpfsError, PinMode};

/// The base URL of the RPC API, `http://<host>:<port>/api/v0/`, from
/// `node_multiaddress` (plain HTTP only).
pub(super) fn api_base(node: &Multiaddr) -> Result<Url, IpfsError> {
    let bad = || IpfsError::BadAddress(node.clone());
    let origin = super::node_origin(node, false)
        .filter(|origin| origin.starts_with("http://"))
        .ok_or_else(bad)?;
    Url::parse(&format!("{origin}/api/v0/")).map_err(|_| bad())
}

/// The text of an error reply: Kubo's `{"Message":...}`, hapi's
/// `{"message":...}` (some js-ipfs failures), or the start of the body
/// (Kubo's plain-text 404).
pub(super) fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(rename = "Message", alias = "message")]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
        return e.message;
    }
    const SHOWN: usize = 512;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    let text = text.trim();
    if text.is_empty() {
        "(empty reply)".to_string()
    } else {
        text.to_string()
    }
}

/// Whether a daemon error means "this CID is not pinned" (Kubo: "not
/// pinned or pinned indirectly", "path 'x' is not pinned"; js-ipfs: "x is
/// not pinned").
pub(super) fn is_not_pinned(message: &str) -> bool {
    message.contains("not pinned")
}

/// The pin mode named by a `pin/ls` `Type`; indirect pins have none.
pub(super) fn pin_mode(kind: &str) -> Option<PinMode> {
    match kind {
        "recursive" => Some(PinMode::Recursive),
        "direct" => Some(PinMode::Direct),
        _ => None,
    }
}

/// The CID of a bare CID, or of an `/ipfs/<cid>` path with nothing after
/// the CID; those need no `resolve` call.
pub(super) fn bare_cid(path: &str) -> Option<Cid> {
    let path = path.trim_end_matches('/');
    let rest = path.strip_prefix("/ipfs/").unwrap_or(path);
    if rest.contains('/') {
        return None;
    }
    Cid::try_from(rest).ok()
}

/// A CID written as a string or as a `{"/": "<cid>"}` link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WireCid(pub(super) Cid);

impl<'de> Deserialize<'de> for WireCid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireCid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CID string or a {\"/\": CID} link")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WireCid, E> {
                Cid::try_from(s)
                    .map(WireCid)
                    .map_err(|e| E::custom(format!("bad CID {s:?}: {e}")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireCid, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "/" {
                        found = Some(map.next_value::<WireCid>()?);
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                found.ok_or_else(|| de::Error::missing_field("/"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A count sent as a JSON number (Kubo) or a decimal string (js-ipfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WireU64(pub(super) u64);

impl<'de> Deserialize<'de> for WireU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireU64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or one in a string")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WireU64, E> {
                Ok(WireU64(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WireU64, E> {
                u64::try_from(n)
                    .map(WireU64)
                    .map_err(|_| E::custom(format!("negative count {n}")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WireU64, E> {
                s.trim()
                    .parse()
                    .map(WireU64)
                    .map_err(|_| E::custom(format!("bad count {s:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `id`.
#[derive(Debug, Deserialize)]
pub(super) struct IdReply {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(rename = "Addresses", default)]
    pub(super) addresses: Option<Vec<String>>,
}

/// `version`.
#[derive(Debug, Deserialize)]
pub(super) struct VersionReply {
    #[serde(rename = "Version")]
    pub(super) version: String,
}

/// The message of a streamed error object (`{"Message":...,"Type":"error"}`),
/// which a streamed reply may carry in place of a value.
fn stream_error<'a>(kind: &Option<String>, message: &'a Option<String>) -> Option<&'a str> {
    match (kind.as_deref(), message) {
        (Some("error"), Some(m)) => Some(m),
        _ => None,
    }
}

/// A line of `dag/import`'s reply. Only an error object matters: no root
/// lines come with `pin-roots=false`.
#[derive(Debug, Deserialize)]
pub(super) struct DagImportLine {
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

impl DagImportLine {
    pub(super) fn error(&self) -> Option<&str> {
        stream_error(&self.kind, &self.message)
    }
}

/// One line of `pin/add?progress=true`: `{"Progress":n}` while fetching,
/// `{"Pins":[...]}` once done. js-ipfs sends only the latter.
#[derive(Debug, Deserialize)]
pub(super) struct PinAddLine {
    #[serde(rename = "Pins", default)]
    pub(super) pins: Option<Vec<WireCid>>,
    #[serde(rename = "Progress", default)]
    pub(super) progress: Option<WireU64>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

impl PinAddLine {
    /// The error this line carries in place of progress, if any.
    pub(super) fn error(&self) -> Option<&str> {
        stream_error(&self.kind, &self.message)
    }
}

/// One line of `add`: `{"Name","Hash","Size"}` for an added node,
/// `{"Name","Bytes"}` for progress, `{"Message","Type":"error"}` for a
/// failure.
#[derive(Debug, Deserialize)]
pub(super) struct AddLine {
    #[serde(rename = "Name", default)]
    pub(super) name: String,
    #[serde(rename = "Hash", default)]
    pub(super) hash: Option<String>,
    #[serde(rename = "Size", default)]
    pub(super) size: Option<WireU64>,
    #[serde(rename = "Bytes", default)]
    pub(super) bytes: Option<WireU64>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

impl AddLine {
    /// The error this line carries, if any.
    pub(super) fn error(&self) -> Option<&str> {
        stream_error(&self.kind, &self.message)
    }
}

/// One line of `pin/ls?stream=true` (`{"Cid":...,"Type":...}`), or the
/// whole non-streamed reply (`{"Keys":{"<cid>":{"Type":...}}}`), which
/// js-ipfs and old daemons may send instead.
#[derive(Debug, Deserialize)]
pub(super) struct PinLsLine {
    #[serde(rename = "Cid", default)]
    pub(super) cid: Option<WireCid>,
    #[serde(rename = "Type", default)]
    pub(super) kind: Option<String>,
    #[serde(rename = "Keys", default)]
    pub(super) keys: Option<HashMap<String, PinLsKey>>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct PinLsKey {
    #[serde(rename = "Type")]
    pub(super) kind: String,
}

impl PinLsLine {
    /// The error this line carries in place of a pin, if any.
    pub(super) fn error(&self) -> Option<&str> {
        stream_error(&self.kind, &self.message)
    }
}

/// `repo/stat?size-only=true`.
#[derive(Debug, Deserialize)]
pub(super) struct RepoStatReply {
    #[serde(rename = "RepoSize")]
    pub(super) repo_size: WireU64,
    #[serde(rename = "StorageMax")]
    pub(super) storage_max: WireU64,
}

/// One line of `repo/gc?stream-errors=true`: a removed key or an error
/// (Kubo then sends `"Key":null`).
#[derive(Debug, Deserialize)]
pub(super) struct GcLine {
    #[serde(rename = "Key", default)]
    pub(super) key: Option<WireCid>,
    #[serde(rename = "Error", default)]
    pub(super) error: Option<String>,
}

/// `block/put`.
#[derive(Debug, Deserialize)]
pub(super) struct BlockPutReply {
    #[serde(rename = "Key")]
    pub(super) key: WireCid,
}

/// `swarm/peers`; `Peers` is `null` when there are none.
#[derive(Debug, Deserialize)]
pub(super) struct SwarmPeersReply {
    #[serde(rename = "Peers", default)]
    pub(super) peers: Option<Vec<SwarmPeer>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SwarmPeer {
    #[serde(rename = "Peer")]
    pub(super) peer: String,
}

/// `resolve`.
#[derive(Debug, Deserialize)]
pub(super) struct ResolveReply {
    #[serde(rename = "Path")]
    pub(super) path: String,
}

/// How `block/put` should hash and label a block: a CID prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockFormat {
    /// CIDv0 blocks are dag-pb, sha2-256.
    pub version: cid::Version,
    /// The multicodec, e.g. 0x55 raw, 0x70 dag-pb, 0x71 dag-cbor.
    pub codec: u64,
    /// The multihash function, e.g. 0x12 sha2-256.
    pub mh_code: u64,
    /// The digest length in bytes.
    pub mh_len: u8,
}

impl BlockFormat {
    /// The format that gives `cid` back for its block.
    pub fn of(cid: &Cid) -> Self {
        BlockFormat {
            version: cid.version(),
            codec: cid.codec(),
            mh_code: cid.hash().code(),
            mh_len: cid.hash().size(),
        }
    }

    /// The `block/put` query. Kubo takes `cid-codec`; js-ipfs only knows
    /// the older `format`, which Kubo accepts beside `cid-codec` only for
    /// raw, so `format` is added for raw blocks and CIDv0 (`format=v0`,
    /// without `cid-codec`, which Kubo would refuse next to it).
    pub(super) fn query(&self) -> Result<Vec<(&'static str, String)>, IpfsError> {
        let mhtype = multihash_name(self.mh_code).ok_or(IpfsError::UnknownCode {
            table: "multihash",
            code: self.mh_code,
        })?;
        let mut q = Vec::with_capacity(6);
        if self.version == cid::Version::V0 {
            q.push(("format", "v0".to_string()));
        } else {
            let codec = codec_name(self.codec).ok_or(IpfsError::UnknownCode {
                table: "multicodec",
                code: self.codec,
            })?;
            q.push(("cid-codec", codec.to_string()));
            if codec == "raw" {
                q.push(("format", "raw".to_string()));
            }
        }
        q.push(("mhtype", mhtype.to_string()));
        q.push(("mhlen", self.mh_len.to_string()));
        q.push(("pin", "false".to_string()));
        q.push(("allow-big-block", "true".to_string()));
        Ok(q)
    }
}

/// The multicodec names Kubo's `cid-codec` accepts, for the codecs blocks
/// of IPFS DAGs use.
fn codec_name(code: u64) -> Option<&'static str> {
    Some(match code {
        0x51 => "cbor",
        0x55 => "raw",
        0x70 => "dag-pb",
        0x71 => "dag-cbor",
        0x72 => "libp2p-key",
        0x78 => "git-raw",
        0x85 => "dag-jose",
        0x0129 => "dag-json",
        0x0200 => "json",
        _ => return None,
    })
}

/// The multihash names Kubo's `mhtype` accepts.
fn multihash_name(code: u64) -> Option<&'static str> {
    Some(match code {
        0x00 => "identity",
        0x11 => "sha1",
        0x12 => "sha2-256",
        0x13 => "sha2-512",
        0x14 => "sha3-512",
        0x15 => "sha3-384",
        0x16 => "sha3-256",
        0x17 => "sha3-224",
        0x1b => "keccak-256",
        0x1e => "blake3",
        0xb220 => "blake2b-256",
        0xb240 => "blake2b-512",
        _ => return None,
    })
}

/// A `multipart/form-data` body with `data` as its one `file` part, and
/// its content type. The boundary is random, so the odds of it occurring
/// inside the block are negligible (2^-190).
pub(super) fn multipart_file(data: &[u8]) -> (String, Vec<u8>) {
    use rand::Rng;
    use rand::distributions::Alphanumeric;
    let boundary: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let mut body = Vec::with_capacity(data.len() + 200);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"block\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Reads `bytes` as every reply shape above, as the client would read a
/// line or a whole reply (the fuzzers' entry, `crate::fuzz`).
pub(crate) fn decode_replies(bytes: &[u8]) {
    fn read<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
        serde_json::from_slice(bytes).ok()
    }
    let _ = error_message(bytes);
    let _ = read::<IdReply>(bytes);
    let _ = read::<VersionReply>(bytes);
    if let Some(line) = read::<DagImportLine>(bytes) {
        let _ = line.error();
    }
    if let Some(line) = read::<PinAddLine>(bytes) {
        let _ = line.error();
    }
    if let Some(line) = read::<AddLine>(bytes) {
        let _ = line.error();
    }
    if let Some(line) = read::<PinLsLine>(bytes) {
        let _ = line.error();
    }
    let _ = read::<RepoStatReply>(bytes);
    let _ = read::<GcLine>(bytes);
    let _ = read::<BlockPutReply>(bytes);
    let _ = read::<SwarmPeersReply>(bytes);
    let _ = read::<ResolveReply>(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
    const V1_B32: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    const V1_B58: &str = "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY";

    #[test]
    fn api_base_from_every_supported_address() {
        let cases = [
            ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001/api/v0/"),
            ("/ip6/::1/tcp/5001", "http://[::1]:5001/api/v0/"),
            ("/dns/ipfs/tcp/5001", "http://ipfs:5001/api/v0/"),
            ("/dns4/localhost/tcp/80", "http://localhost/api/v0/"),
            (
                "/dns6/ipfs.local/tcp/5001/http",
                "http://ipfs.local:5001/api/v0/",
            ),
        ];
        for (addr, want) in cases {
            let url = api_base(&addr.parse().unwrap()).unwrap();
            assert_eq!(url.as_str(), want, "{addr}");
        }
    }

    #[test]
    fn api_base_refuses_what_http_cannot_reach() {
        for addr in [
            "/unix/tmp%2Fapi.sock",
            "/ip4/127.0.0.1/udp/5001",
            "/ip4/127.0.0.1",
            "/ip4/127.0.0.1/tcp/5001/https",
            "/ip4/127.0.0.1/tcp/5001/http/p2p-circuit",
        ] {
            let err = api_base(&addr.parse().unwrap()).unwrap_err();
            assert!(matches!(err, IpfsError::BadAddress(_)), "{addr}: {err}");
        }
    }

    #[test]
    fn cids_parse_from_strings_and_links_in_any_base() {
        let b32: WireCid = serde_json::from_str(&format!("\"{V1_B32}\"")).unwrap();
        let b58: WireCid = serde_json::from_str(&format!("\"{V1_B58}\"")).unwrap();
        let link: WireCid = serde_json::from_str(&format!("{{\"/\":\"{V1_B32}\"}}")).unwrap();
        assert_eq!(b32, b58);
        assert_eq!(b32, link);
        let v0: WireCid = serde_json::from_str(&format!("\"{V0}\"")).unwrap();
        assert_eq!(v0.0.version(), cid::Version::V0);
        assert!(serde_json::from_str::<WireCid>("\"notacid\"").is_err());
        assert!(serde_json::from_str::<WireCid>("{\"x\":1}").is_err());
        assert!(serde_json::from_str::<WireCid>("12").is_err());
    }

    #[test]
    fn counts_parse_from_numbers_and_strings() {
        let kubo: RepoStatReply =
            serde_json::from_str(r#"{"RepoSize":602221,"StorageMax":10000000000}"#).unwrap();
        let js: RepoStatReply = serde_json::from_str(
            r#"{"NumObjects":"9","RepoSize":"602221","RepoPath":"/r","Version":"12","StorageMax":"9007199254740991"}"#,
        )
        .unwrap();
        assert_eq!(kubo.repo_size, WireU64(602221));
        assert_eq!(js.repo_size, WireU64(602221));
        assert_eq!(js.storage_max, WireU64(9007199254740991));
        assert!(serde_json::from_str::<WireU64>("-1").is_err());
        assert!(serde_json::from_str::<WireU64>("\"lots\"").is_err());
    }

    #[test]
    fn error_messages_from_kubo_hapi_and_plain_text() {
        let kubo = br#"{"Message":"path 'x' is not pinned","Code":0,"Type":"error"}"#;
        assert_eq!(error_message(kubo), "path 'x' is not pinned");
        let hapi = br#"{"statusCode":500,"error":"Internal Server Error","message":"boom"}"#;
        assert_eq!(error_message(hapi), "boom");
        assert_eq!(error_message(b"404 page not found\n"), "404 page not found");
        assert_eq!(error_message(b""), "(empty reply)");
        assert_eq!(error_message(&[b'x'; 5000]).len(), 512);
    }

    #[test]
    fn not_pinned_messages_of_both_daemons() {
        assert!(is_not_pinned("not pinned or pinned indirectly"));
        assert!(is_not_pinned("path 'Qm' is not pinned"));
        assert!(is_not_pinned("Failed to remove pin: bafy is not pinned"));
        assert!(!is_not_pinned("context deadline exceeded"));
    }

    #[test]
    fn pin_add_lines_of_kubo_and_js_ipfs() {
        let progress: PinAddLine = serde_json::from_str(r#"{"Progress":42}"#).unwrap();
        assert_eq!(progress.progress, Some(WireU64(42)));
        assert!(progress.pins.is_none() && progress.error().is_none());
        let done: PinAddLine =
            serde_json::from_str(&format!(r#"{{"Pins":["{V1_B58}"]}}"#)).unwrap();
        assert_eq!(done.pins.unwrap()[0].0, Cid::try_from(V1_B32).unwrap());
        let err: PinAddLine =
            serde_json::from_str(r#"{"Message":"boom","Code":0,"Type":"error"}"#).unwrap();
        assert_eq!(err.error(), Some("boom"));
        // Kubo's keep-alive while no block has arrived: neither progress
        // nor an end, so it must not feed the idle watchdog.
        let idle: PinAddLine = serde_json::from_str("{}").unwrap();
        assert!(idle.pins.is_none() && idle.progress.is_none() && idle.error().is_none());
    }

    #[test]
    fn pin_ls_lines_streamed_and_whole() {
        let line: PinLsLine =
            serde_json::from_str(&format!(r#"{{"Type":"recursive","Cid":"{V0}"}}"#)).unwrap();
        assert_eq!(line.cid.unwrap().0.to_string(), V0);
        assert_eq!(
            line.kind.as_deref().and_then(pin_mode),
            Some(PinMode::Recursive)
        );
        let whole: PinLsLine = serde_json::from_str(&format!(
            r#"{{"Keys":{{"{V1_B58}":{{"Type":"direct"}},"{V0}":{{"Type":"indirect"}}}}}}"#
        ))
        .unwrap();
        let keys = whole.keys.unwrap();
        assert_eq!(pin_mode(&keys[V1_B58].kind), Some(PinMode::Direct));
        assert_eq!(pin_mode(&keys[V0].kind), None);
        let err: PinLsLine =
            serde_json::from_str(r#"{"Message":"boom","Code":0,"Type":"error"}"#).unwrap();
        assert_eq!(err.error(), Some("boom"));
    }

    #[test]
    fn gc_lines_with_keys_and_errors() {
        let key: GcLine =
            serde_json::from_str(&format!(r#"{{"Key":{{"/":"{V1_B32}"}}}}"#)).unwrap();
        assert!(key.key.is_some() && key.error.is_none());
        let err: GcLine = serde_json::from_str(r#"{"Key":null,"Error":"cannot remove"}"#).unwrap();
        assert!(err.key.is_none());
        assert_eq!(err.error.as_deref(), Some("cannot remove"));
    }

    #[test]
    fn swarm_peers_may_be_null() {
        let none: SwarmPeersReply = serde_json::from_str(r#"{"Peers":null}"#).unwrap();
        assert!(none.peers.is_none());
        let some: SwarmPeersReply = serde_json::from_str(
            r#"{"Peers":[{"Addr":"/ip4/1.2.3.4/tcp/1","Peer":"12D3KooWHovFwK2eaNHGN4ACPreXkBQr13DBjJiXkaFcGSnKXL5M","Direction":"outbound"}]}"#,
        )
        .unwrap();
        assert_eq!(some.peers.unwrap().len(), 1);
    }

    #[test]
    fn bare_cids_need_no_resolve() {
        let cid = Cid::try_from(V0).unwrap();
        assert_eq!(bare_cid(V0), Some(cid));
        assert_eq!(bare_cid(&format!("/ipfs/{V0}")), Some(cid));
        assert_eq!(bare_cid(&format!("/ipfs/{V0}/")), Some(cid));
        assert_eq!(bare_cid(&format!("/ipfs/{V0}/a/b")), None);
        assert_eq!(bare_cid("/ipns/example.com"), None);
        assert_eq!(bare_cid("/ipfs/garbage"), None);
    }

    #[test]
    fn block_format_queries() {
        let raw = BlockFormat::of(&Cid::try_from(V1_B32).unwrap());
        let q = raw.query().unwrap();
        assert!(q.contains(&("cid-codec", "raw".to_string())));
        assert!(q.contains(&("format", "raw".to_string())));
        assert!(q.contains(&("mhtype", "sha2-256".to_string())));
        assert!(q.contains(&("mhlen", "32".to_string())));
        assert!(q.contains(&("pin", "false".to_string())));

        let v0 = BlockFormat::of(&Cid::try_from(V0).unwrap())
            .query()
            .unwrap();
        assert!(v0.contains(&("format", "v0".to_string())));
        assert!(!v0.iter().any(|(k, _)| *k == "cid-codec"));

        let cbor = BlockFormat { codec: 0x71, ..raw }.query().unwrap();
        assert!(cbor.contains(&("cid-codec", "dag-cbor".to_string())));
        assert!(!cbor.iter().any(|(k, _)| *k == "format"));

        let odd = BlockFormat {
            codec: 0x1234,
            ..raw
        }
        .query()
        .unwrap_err();
        assert!(matches!(
            odd,
            IpfsError::UnknownCode {
                table: "multicodec",
                code: 0x1234
            }
        ));
        let odd = BlockFormat {
            mh_code: 0x99,
            ..raw
        }
        .query()
        .unwrap_err();
        assert!(matches!(
            odd,
            IpfsError::UnknownCode {
                table: "multihash",
                ..
            }
        ));
    }

    #[test]
    fn multipart_body_wraps_the_block() {
        let (ctype, body) = multipart_file(b"hello");
        let boundary = ctype
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"file\""));
        assert!(text.ends_with(&format!("\r\n\r\nhello\r\n--{boundary}--\r\n")));
    }
}
