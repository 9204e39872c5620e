//! Random and malformed requests at both HTTP APIs of a peer whose IPFS
//! daemon is down: bad CIDs and paths, every method, odd query values,
//! broken bodies, huge headers, raw bytes that are no HTTP at all. No
//! answer may be a 5xx other than the proxy's 502/504 (the daemon is
//! down) and its 500s carrying Kubo's error object (Kubo's own answer to a
//! bad argument), the peer must keep answering, its descriptors must come back,
//! and its pinset must not change.
//!
//! `PINCLUSTER_HTTP_CASES` sets the number of requests (CI: 600).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const METHODS: [&str; 7] = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"];
const REST_PATHS: [&str; 16] = [
    "/id",
    "/version",
    "/peers",
    "/pins",
    "/pins/",
    "/pins/ipfs/",
    "/pins/ipns/",
    "/allocations",
    "/allocations/",
    "/add",
    "/ipfs/gc",
    "/health/graph",
    "/health/alerts",
    "/monitor/metrics/",
    "/pins/recover",
    "/token",
];
const PROXY_PATHS: [&str; 10] = [
    "/api/v0/pin/add",
    "/api/v0/pin/rm",
    "/api/v0/pin/ls",
    "/api/v0/pin/update",
    "/api/v0/add",
    "/api/v0/repo/stat",
    "/api/v0/repo/gc",
    "/api/v0/block/put",
    "/api/v0/dag/put",
    "/api/v0/id",
];
/// Never a valid CID, so no request can add a pin.
const BAD: [&str; 10] = [
    "Qm",
    "bafy!!",
    "%ff%fe",
    "..",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    "%00",
    "/ipfs/",
    "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbz%",
    "-1",
    "\u{2603}",
];
const KEYS: [&str; 14] = [
    "arg",
    "name",
    "mode",
    "replication-min",
    "replication-max",
    "expire-in",
    "filter",
    "local",
    "cid",
    "stream",
    "recursive",
    "format",
    "shard-size",
    "user-allocations",
];
const VALUES: [&str; 10] = [
    "",
    "-1",
    "99999999999999999999",
    "true",
    "nope",
    "1h",
    "%",
    "%zz",
    "a,b,,c",
    "0x10",
];

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.gen_range(0..from.len())]
}

/// One random request, as bytes on the wire.
fn request(rng: &mut StdRng, proxy: bool) -> Vec<u8> {
    let method = pick(rng, &METHODS);
    let mut path = pick(rng, if proxy { &PROXY_PATHS } else { &REST_PATHS }).to_string();
    if rng.gen_bool(0.5) {
        path.push('/');
        path.push_str(&pick(rng, &BAD).replace(' ', "%20"));
    }
    let pairs: Vec<String> = (0..rng.gen_range(0..5))
        .map(|_| format!("{}={}", pick(rng, &KEYS), pick(rng, &VALUES)))
        .collect();
    if !pairs.is_empty() {
        path = format!("{path}?{}", pairs.join("&"));
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    let body: Vec<u8> = match rng.gen_range(0..5) {
        0 => Vec::new(),
        1 => (0..rng.gen_range(0..2048)).map(|_| rng.r#gen()).collect(),
        2 => b"--X\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nab".to_vec(),
        3 => b"{\"cid\":".to_vec(),
        _ => b"--X--\r\n".to_vec(),
    };
    match rng.gen_range(0..6) {
        0 => head.push_str("Content-Type: multipart/form-data; boundary=X\r\n"),
        1 => head.push_str("Content-Type: multipart/form-data\r\n"),
        2 => head.push_str(&format!(
            "X-Big: {}\r\n",
            "a".repeat(rng.gen_range(1..40_000))
        )),
        3 => head.push_str("Transfer-Encoding: chunked\r\n"),
        4 => head.push_str("Authorization: Bearer x.y.z\r\n"),
        _ => {}
    }
    if !head.contains("chunked") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    if rng.gen_ratio(1, 20) {
        // No HTTP at all.
        out = (0..rng.gen_range(1..512)).map(|_| rng.r#gen()).collect();
    }
    out
}

/// Sends `bytes`, reads the answer's status and whether its body is a
/// Kubo error object (`None`: no answer, as for what is no HTTP).
async fn send(port: u16, bytes: &[u8]) -> Option<(u16, bool)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    let code = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((code, text.contains("\"Type\":\"error\"")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_get_no_5xx_leak_nothing_and_change_no_pin() {
    let cases: usize = std::env::var("PINCLUSTER_HTTP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    // An IPFS daemon address where nothing listens.
    let ipfs = format!("/ip4/127.0.0.1/tcp/{}", fixed_port());
    let dir = temp();
    let spec = PeerSpec {
        env: vec![
            ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(), ipfs.clone()),
            ("CLUSTER_IPFSPROXY_NODEMULTIADDRESS".into(), ipfs),
        ],
        ..PeerSpec::default()
    };
    let peer = TestPeer::start(dir.path().into(), spec).await;
    let pins = cids("http-random", 5);
    for cid in &pins {
        let (status, body) = peer.pin(cid, "").await;
        assert!(status < 300, "{body}");
    }
    peer.wait_pinset(&pins).await;
    let pid = peer.pid().unwrap();
    let rest: u16 = peer.api.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = peer.proxy_port();
    let fds_before = open_fds(pid);

    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut statuses: BTreeMap<(&str, Option<u16>), usize> = BTreeMap::new();
    for _ in 0..cases {
        let to_proxy = rng.gen_bool(0.5);
        let bytes = request(&mut rng, to_proxy);
        let status = send(if to_proxy { proxy } else { rest }, &bytes).await;
        let api = if to_proxy { "proxy" } else { "rest" };
        if let Some((code, kubo_error)) = status {
            // Kubo answers a command's errors (a bad argument) with a 500
            // and an error object; the proxy speaks the same.
            let allowed = code < 500
                || (to_proxy && (matches!(code, 502 | 504) || (code == 500 && kubo_error)));
            assert!(
                allowed,
                "{api} answered {code} (seed {seed}) to {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        *statuses.entry((api, status.map(|s| s.0))).or_default() += 1;
    }
    eprintln!("{cases} random requests (seed {seed}): {statuses:?}");

    // Still answering, the same pinset, descriptors back.
    let listed: std::collections::BTreeSet<String> =
        peer.pinset().await.expect("a pinset").into_iter().collect();
    assert_eq!(listed, pins.iter().cloned().collect(), "the pinset changed");
    wait_for("descriptors back to normal", DEADLINE, || async {
        (open_fds(pid) <= fds_before + 2).then_some(())
    })
    .await;
}
