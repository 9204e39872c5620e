//! Several listen addresses and unix sockets for the REST API and the IPFS
//! proxy, against a real `pincluster daemon`: every configured address
//! answers, the socket file goes at a clean stop, a killed peer's leftover
//! socket does not block the restart, and a regular file in the way is
//! refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The raw HTTP/1.1 reply to `GET <path>` over the unix socket at `socket`.
async fn unix_get(socket: &Path, path: &str) -> String {
    let mut s = UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("the reply within the deadline")
        .unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

/// A peer whose REST API listens on two TCP ports and `api.sock`, and
/// whose proxy on a TCP port and `proxy.sock`, both in `sockets`.
fn spec(sockets: &Path) -> PeerSpec {
    let unix = |name: &str| format!("/unix{}", sockets.join(name).display());
    let env = [
        (
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
            format!(
                "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/tcp/0,{}",
                unix("api.sock")
            ),
        ),
        (
            "CLUSTER_IPFSPROXY_LISTENMULTIADDRESS",
            format!("/ip4/127.0.0.1/tcp/0,{}", unix("proxy.sock")),
        ),
    ];
    PeerSpec {
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..PeerSpec::default()
    }
}

#[tokio::test]
async fn every_address_answers_and_the_unix_socket_is_cleaned_up() {
    let tmp = temp();
    let sockets = tmp.path().join("s");
    std::fs::create_dir(&sockets).unwrap();
    let (api_sock, proxy_sock) = (sockets.join("api.sock"), sockets.join("proxy.sock"));
    let peer = TestPeer::start(tmp.path().join("peer"), spec(&sockets)).await;

    // The first TCP address is the one `peer.api` came from; the others
    // are logged on their own lines.
    let extra = peer.log_values("REST API also listening", "addr=");
    assert_eq!(extra.len(), 2, "{extra:?}");
    let tcp2 = extra
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
        .expect("the second TCP address");
    let port2 = tcp2.rsplit('/').next().unwrap();
    assert_ne!(peer.api, format!("http://127.0.0.1:{port2}"), "two ports");
    assert!(
        extra.contains(&format!("/unix{}", api_sock.display())),
        "{extra:?}"
    );
    let second = reqwest::get(format!("http://127.0.0.1:{port2}/id"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(second["id"], peer.id.as_str());
    let reply = unix_get(&api_sock, "/id").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(&peer.id), "{reply}");

    // The proxy serves its socket too: an unknown path is answered by it
    // (forwarded to the IPFS daemon, or refused when none runs).
    let proxied = peer.log_values("IPFS proxy also listening", "addr=");
    assert_eq!(proxied, vec![format!("/unix{}", proxy_sock.display())]);
    let reply = unix_get(&proxy_sock, "/api/v0/version").await;
    assert!(reply.starts_with("HTTP/1.1 "), "{reply}");

    // Killed: the socket files stay behind, and do not block a restart.
    let mut peer = peer;
    peer.kill();
    assert!(api_sock.exists(), "a killed peer cannot clean up");
    let mut peer = peer.restart().await;
    let reply = unix_get(&api_sock, "/id").await;
    assert!(reply.contains(&peer.id), "{reply}");

    assert!(peer.stop(), "clean exit");
    assert!(!api_sock.exists(), "the REST API socket is removed at stop");
    assert!(!proxy_sock.exists(), "the proxy socket is removed at stop");
}

#[tokio::test]
async fn a_regular_file_at_the_socket_path_is_refused_by_name() {
    let tmp = temp();
    let dir = tmp.path().join("peer");
    std::fs::create_dir(&dir).unwrap();
    let spec = PeerSpec::default();
    init_folder(&dir, &spec);
    let in_the_way: PathBuf = tmp.path().join("notes.txt");
    std::fs::write(&in_the_way, "keep me").unwrap();
    let out = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(&dir)
        .env("CLUSTER_LISTENMULTIADDRESS", "/ip4/127.0.0.1/tcp/0")
        .env(
            "CLUSTER_IPFSPROXY_LISTENMULTIADDRESS",
            "/ip4/127.0.0.1/tcp/0",
        )
        .env(
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
            format!("/ip4/127.0.0.1/tcp/0,/unix{}", in_the_way.display()),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&in_the_way.display().to_string()) && stderr.contains("not a socket"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&in_the_way).unwrap(), "keep me");
}
