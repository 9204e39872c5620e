//! A lone pincluster peer with the embedded IPFS node and no Kubo running:
//! the real `ipfs` CLI (Kubo 0.43.1's) pointed at the peer's IPFS proxy
//! adds, reads, lists, gets and pins; what it adds becomes a cluster pin
//! pinned by the embedded node; the gateway serves it (ranges, listings,
//! errors); a pin of a block nobody has ends in `pin_error`; unpin and gc
//! remove the blocks.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::kubo::real_bin;
use common::{BIN, DEADLINE, PeerSpec, RestApi, TestPeer, temp, wait_for};

/// `ipfs --api <proxy> <args>`, with a repo path where no repo exists (the
/// CLI must not need one). Returns stdout; panics with stderr on failure.
fn ipfs(api: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = Command::new(real_bin("ipfs"))
        .args(["--api", api, "--timeout", "60s"])
        .args(args)
        .env("IPFS_PATH", "/nonexistent-ipfs-repo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ipfs");
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn ok(r: Result<String, String>) -> String {
    r.unwrap_or_else(|e| panic!("ipfs failed: {e}"))
}

/// Kubo's own CID for `path` with `args` (offline, only hashing).
fn kubo_cid(args: &[&str], path: &Path) -> String {
    let repo = temp();
    let env = repo.path().join("repo");
    let init = Command::new(real_bin("ipfs"))
        .args(["init", "--profile", "test", "--empty-repo"])
        .env("IPFS_PATH", &env)
        .output()
        .unwrap();
    assert!(init.status.success());
    let out = Command::new(real_bin("ipfs"))
        .args(["add", "--only-hash", "-Q"])
        .args(args)
        .arg(path)
        .env("IPFS_PATH", &env)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn embedded_peer() -> (TestPeer, tempfile::TempDir) {
    let dir = temp();
    // `init` without --ipfs: the embedded node is the default.
    let out = Command::new(BIN)
        .args(["init", "--no-secret", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let spec = PeerSpec {
        env: vec![
            (
                "CLUSTER_EMBEDDED_GATEWAYLISTENMULTIADDRESS".into(),
                "/ip4/127.0.0.1/tcp/0".into(),
            ),
            // A block nobody has waits for Bitswap until the pin times
            // out: keep each attempt short.
            ("CLUSTER_EMBEDDED_PINTIMEOUT".into(), "5s".into()),
            ("CLUSTER_STATELESS_MAXATTEMPTS".into(), "2".into()),
            ("CLUSTER_STATELESS_RETRYBACKOFF".into(), "100ms".into()),
        ],
        ..PeerSpec::default()
    };
    let peer = TestPeer::start(dir.path().to_path_buf(), spec).await;
    (peer, dir)
}

async fn status(peer: &TestPeer, cid: &str) -> Option<String> {
    let v = peer.get_json(&format!("/pins/{cid}")).await?;
    v["peer_map"][&peer.id]["status"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn the_ipfs_cli_works_against_a_lone_peer_without_kubo() {
    let (peer, _dir) = embedded_peer().await;
    let proxy = peer.proxy_addr();
    let gateway_addr = peer
        .log_value("IPFS gateway listening", "addr=")
        .expect("gateway address");
    let gateway = format!(
        "http://127.0.0.1:{}",
        gateway_addr.rsplit('/').next().unwrap()
    );

    let work = temp();
    let folder = work.path().join("site");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(folder.join("hello.txt"), b"hello embedded\n").unwrap();
    std::fs::write(folder.join("sub/big.bin"), &big).unwrap();

    // add -r: Kubo's CID, and a cluster pin that the embedded node pins.
    let root = ok(ipfs(
        &proxy,
        &["add", "-Q", "-r", folder.to_str().unwrap()],
        None,
    ));
    assert_eq!(root, kubo_cid(&["-r"], &folder));
    wait_for("the added folder pinned", DEADLINE, || async {
        (status(&peer, &root).await.as_deref() == Some("pinned")).then_some(())
    })
    .await;

    // cat, ls, get.
    let hello = ok(ipfs(&proxy, &["cat", &format!("{root}/hello.txt")], None));
    assert_eq!(hello, "hello embedded");
    let listing = ok(ipfs(&proxy, &["ls", &root], None));
    assert!(
        listing.contains("hello.txt") && listing.contains("sub/"),
        "{listing}"
    );
    let out = work.path().join("got");
    ok(ipfs(
        &proxy,
        &["get", &root, "-o", out.to_str().unwrap()],
        None,
    ));
    assert_eq!(std::fs::read(out.join("sub/big.bin")).unwrap(), big);

    // block and dag.
    let block = ok(ipfs(&proxy, &["block", "put"], Some(b"a raw block")));
    assert_eq!(
        ok(ipfs(&proxy, &["block", "get", &block], None)),
        "a raw block"
    );
    let stat = ok(ipfs(&proxy, &["block", "stat", &block], None));
    assert!(stat.contains("Size: 11"), "{stat}");
    let node = ok(ipfs(&proxy, &["dag", "put"], Some(br#"{"n": 1, "link": {"/": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"}}"#)));
    let back = ok(ipfs(&proxy, &["dag", "get", &node], None));
    let back: serde_json::Value = serde_json::from_str(&back).unwrap();
    assert_eq!(back["n"], 1);

    // pin ls (the cluster's pinset through the proxy) and repo stat.
    let pins = ok(ipfs(&proxy, &["pin", "ls", "--type=recursive"], None));
    assert!(pins.contains(&root), "{pins}");
    let repo = ok(ipfs(&proxy, &["repo", "stat"], None));
    assert!(repo.contains("NumObjects"), "{repo}");

    // The gateway: a file, a range, a listing, errors.
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{gateway}/ipfs/{root}/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(res.text().await.unwrap(), "hello embedded\n");
    let res = http
        .get(format!("{gateway}/ipfs/{root}/sub/big.bin"))
        .header("Range", "bytes=1000-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &big[1000..1100]);
    let page = http
        .get(format!("{gateway}/ipfs/{root}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("hello.txt") && page.contains("sub"), "{page}");
    let missing = http
        .get(format!("{gateway}/ipfs/{root}/nope.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = http
        .get(format!("{gateway}/ipfs/not-a-cid"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // A block no one has: the pin fails for good instead of hanging.
    let absent = kubo_cid(&[], &{
        let p = work.path().join("absent");
        std::fs::write(&p, b"never added anywhere").unwrap();
        p
    });
    let (code, _) = peer.pin(&absent, "").await;
    assert!(code < 300, "pin accepted: {code}");
    wait_for("the unavailable pin in pin_error", DEADLINE, || async {
        (status(&peer, &absent).await.as_deref() == Some("pin_error")).then_some(())
    })
    .await;

    // Unpin through the proxy, then gc: the blocks are gone.
    ok(ipfs(&proxy, &["pin", "rm", &root], None));
    wait_for(
        "the folder unpinned by the embedded node",
        DEADLINE,
        || async {
            let gone = ipfs(&proxy, &["repo", "gc"], None).ok()?;
            let cat = ipfs(&proxy, &["cat", &format!("{root}/hello.txt")], None);
            (cat.is_err()).then_some(gone)
        },
    )
    .await;
    let after = http
        .get(format!("{gateway}/ipfs/{root}/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404);
}

/// Total bytes of the embedded node's segment files (`<config>/ipfs`).
fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("ipfs/segments"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A peer SIGKILLed in the middle of an add: after the restart the same
/// file added again has Kubo's CID and reads back byte for byte (the
/// blocks the killed add left are reused, not written again, so an index
/// entry pointing at missing bytes would show here), and unpin + gc give
/// the disk space back.
#[tokio::test]
async fn an_add_killed_midway_leaves_a_store_that_reads_back() {
    let (peer, dir) = embedded_peer().await;
    let proxy = peer.proxy_addr();
    let work = temp();
    let file = work.path().join("data");
    // 48 MiB that no two chunks share (xorshift), so every chunk is a block.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..48 << 17)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&file, &data).unwrap();
    let cid = kubo_cid(&[], &file);

    // The add reads the file from stdin, and gets only its first half
    // before the peer is killed: the kill lands mid-add, whatever the speed.
    let mut add = Command::new(real_bin("ipfs"))
        .args(["--api", &proxy, "add", "-Q"])
        .env("IPFS_PATH", "/nonexistent-ipfs-repo")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = add.stdin.take().unwrap();
    {
        use std::io::Write as _;
        input.write_all(&data[..data.len() / 2]).unwrap();
    }
    wait_for("part of the add stored", DEADLINE, || async {
        (segment_bytes(dir.path()) > 8 << 20).then_some(())
    })
    .await;
    let peer = peer.restart().await;
    drop(input);
    let _ = add.wait();
    let proxy = peer.proxy_addr();

    assert_eq!(
        ok(ipfs(&proxy, &["add", "-Q", file.to_str().unwrap()], None)),
        cid
    );
    let out = work.path().join("back");
    ok(ipfs(
        &proxy,
        &["get", &cid, "-o", out.to_str().unwrap()],
        None,
    ));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the file read back differs"
    );

    ok(ipfs(&proxy, &["pin", "rm", &cid], None));
    wait_for("the space given back by gc", DEADLINE, || async {
        ipfs(&proxy, &["repo", "gc"], None).ok()?;
        (segment_bytes(dir.path()) < 1 << 20).then_some(())
    })
    .await;
    let repo = ok(ipfs(&proxy, &["repo", "stat"], None));
    assert!(repo.contains("NumObjects: 0"), "{repo}");
}
