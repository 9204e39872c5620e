//! The IPFS proxy against real Kubo daemons: a cluster of three peers,
//! each beside its own daemon, clients talking to peer A's proxy. What a
//! client adds or pins through the proxy becomes a cluster pin that the
//! other peers list; `repo/stat` and `repo/gc` reach every daemon; all
//! else passes through to A's daemon as it answered.
//!
//! The tests of this file share nothing but a lock: each starts its own
//! daemons, and running two clusters of three at once would starve two
//! cores.

mod common;

use std::time::Duration;

use common::kubo::Kubo;
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET: &str = "2fd1a5c1e0a8b7f6c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster peer beside `daemon`, its proxy forwarding to it.
fn beside(daemon: &Kubo, bootstrap: Option<&str>) -> PeerSpec {
    PeerSpec {
        secret: Some(SECRET.to_string()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default(),
        env: vec![
            (
                "CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(),
                daemon.api_multiaddr(),
            ),
            (
                "CLUSTER_IPFSPROXY_NODEMULTIADDRESS".into(),
                daemon.api_multiaddr(),
            ),
        ],
    }
}

struct Cluster {
    _tmp: tempfile::TempDir,
    peers: Vec<TestPeer>,
    daemons: Vec<Kubo>,
    http: reqwest::Client,
}

impl Cluster {
    /// `n` peers with `n` daemons, the daemons connected to each other,
    /// every peer seeing every other.
    async fn start(n: usize) -> Cluster {
        let tmp = temp();
        let mut daemons = Vec::new();
        for i in 0..n {
            daemons.push(Kubo::start(&tmp.path().join(format!("ipfs-{i}"))).await);
        }
        for i in 1..n {
            daemons[0].connect(&daemons[i]).await;
        }
        let first = TestPeer::start(tmp.path().join("peer-0"), beside(&daemons[0], None)).await;
        let addr = first.cluster_addr().await;
        let mut peers = vec![first];
        for (i, daemon) in daemons.iter().enumerate().skip(1) {
            let spec = beside(daemon, Some(&addr));
            peers.push(TestPeer::start(tmp.path().join(format!("peer-{i}")), spec).await);
        }
        for p in &peers {
            wait_for("a full peerset", DEADLINE, || async {
                (p.peer_ids().await?.len() == n).then_some(())
            })
            .await;
        }
        Cluster {
            _tmp: tmp,
            peers,
            daemons,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// `http://127.0.0.1:<port>` of peer `i`'s proxy.
    fn proxy(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.peers[i].proxy_port())
    }

    /// POST `<proxy of A>/api/v0/<cmd>`: status, headers, body.
    async fn post(&self, cmd: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let res = self
            .http
            .post(format!("{}/api/v0/{cmd}", self.proxy(0)))
            .send()
            .await
            .expect("POST to the proxy");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.text().await.unwrap())
    }

    /// POST through the proxy that must answer 200 with one JSON value.
    async fn call(&self, cmd: &str) -> Value {
        let (status, _, body) = self.post(cmd).await;
        assert_eq!(status, 200, "{cmd}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{cmd}: {e}: {body}"))
    }

    /// POST through the proxy that must answer with a Kubo error.
    async fn error(&self, cmd: &str, status: u16) -> String {
        let (got, headers, body) = self.post(cmd).await;
        assert_eq!(got, status, "{cmd}: {body}");
        assert_eq!(headers["content-type"], "application/json");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Type"], "error", "{body}");
        assert_eq!(v["Code"], 0, "{body}");
        v["Message"].as_str().unwrap().to_string()
    }

    /// `add` of files through the proxy (multipart, `name` → bytes);
    /// the reply lines.
    async fn add(&self, query: &str, files: &[(&str, &[u8])]) -> Vec<Value> {
        let (status, body) = multipart_add(&self.http, &self.proxy(0), query, files).await;
        assert_eq!(status, 200, "{body}");
        lines(&body)
    }
}

async fn multipart_add(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    files: &[(&str, &[u8])],
) -> (u16, String) {
    let (content_type, body) = multipart_files(files);
    let res = http
        .post(format!("{base}/api/v0/add?{query}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST add");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until peer `peer` lists `cid` in its pinset (`present`) or not.
async fn wait_pinned(peer: &TestPeer, cid: &str, present: bool) {
    wait_for(
        &format!("{cid} in the pinset of {}: {present}", peer.id),
        DEADLINE,
        || async { (peer.pinset().await?.iter().any(|c| c == cid) == present).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pins_and_adds_through_the_proxy_are_cluster_pins() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(2).await;
    let other = &c.peers[1];

    // add: Kubo's shape, and the root is a cluster pin that peer B lists.
    let out = c
        .add("progress=true", &[("hello.txt", b"hello world\n")])
        .await;
    let last = out.last().unwrap();
    assert_eq!(
        last,
        &json!({"Name": "hello.txt", "Hash": "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "Size": "20"})
    );
    assert!(
        out.iter().any(|l| l.get("Bytes").is_some()),
        "progress lines pass: {out:?}"
    );
    let hello = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
    wait_pinned(other, hello, true).await;
    let pin = other
        .get_json(&format!("/allocations/{hello}"))
        .await
        .unwrap();
    // Unnamed: the reference does not name a pin after the file.
    assert_eq!(pin["name"], "");

    // A folder: only its root is pinned.
    let out = c
        .add(
            "wrap-with-directory=false",
            &[("dir%2Fa.txt", b"a\n"), ("dir%2Fsub%2Fb.txt", b"b\n")],
        )
        .await;
    let root = out
        .iter()
        .find(|l| l["Name"] == "dir")
        .expect("the folder's own line")["Hash"]
        .as_str()
        .unwrap()
        .to_string();
    wait_pinned(other, &root, true).await;
    let file_a = out.iter().find(|l| l["Name"] == "dir/a.txt").unwrap()["Hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!other.pinset().await.unwrap().contains(&file_a));

    // pin=false: added, not pinned anywhere.
    let out = c.add("pin=false", &[("loose.txt", b"not pinned\n")]).await;
    let loose = out.last().unwrap()["Hash"].as_str().unwrap().to_string();
    // Booleans as Kubo reads them.
    let (status, body) = multipart_add(&c.http, &c.proxy(0), "pin=maybe", &[("x", b"x")]).await;
    assert_eq!(status, 400, "{body}");

    // pin/add of content the daemon has, then through the path form.
    let v = c.call(&format!("pin/add?arg={loose}")).await;
    assert_eq!(v, json!({"Pins": [loose]}));
    wait_pinned(other, &loose, true).await;
    let v = c.call(&format!("pin/rm/{loose}")).await;
    assert_eq!(v, json!({"Pins": [loose]}));
    wait_pinned(other, &loose, false).await;
    let v = c.call(&format!("pin/add/{loose}?recursive=false")).await;
    assert_eq!(v, json!({"Pins": [loose]}));

    // pin/ls, not streamed: every cluster pin with its type.
    let v = c.call("pin/ls").await;
    let keys = v["Keys"].as_object().unwrap();
    assert_eq!(keys[hello], json!({"Type": "recursive"}));
    assert_eq!(keys[&loose], json!({"Type": "direct"}));
    assert_eq!(keys.len(), 3, "{v}");
    let v = c.call("pin/ls?type=direct").await;
    assert_eq!(v["Keys"].as_object().unwrap().len(), 1, "{v}");
    // Streamed.
    let (status, headers, body) = c.post("pin/ls?stream=True").await;
    assert_eq!(status, 200);
    assert!(headers.get("x-chunked-output").is_none());
    assert_eq!(headers["server"], "ipfs-cluster/ipfsproxy/1.1.6");
    let mut streamed = lines(&body);
    streamed.sort_by_key(|l| l["Cid"].to_string());
    assert_eq!(streamed.len(), 3);
    assert!(streamed.contains(&json!({"Cid": loose, "Type": "direct"})));
    // One CID, both forms.
    let v = c.call(&format!("pin/ls?arg={hello}")).await;
    assert_eq!(v, json!({"Keys": {hello: {"Type": "recursive"}}}));
    let v = c.call(&format!("pin/ls/{hello}?stream=1")).await;
    assert_eq!(v, json!({"Cid": hello, "Type": "recursive"}));

    // pin/update: the new pin takes the old one's place.
    let v = c.call(&format!("pin/update?arg={hello}&arg={root}")).await;
    assert_eq!(v, json!({"Pins": [hello, root]}));
    wait_pinned(other, hello, false).await;
    let pin = other
        .get_json(&format!("/allocations/{root}"))
        .await
        .unwrap();
    assert_eq!(pin["pin_update"], hello);

    // Errors: Kubo's shape, nothing changed.
    let before = other.pinset().await.unwrap();
    let m = c.error("pin/add?arg=notacid", 500).await;
    assert!(m.starts_with("Error parsing IPFS Path"), "{m}");
    assert_eq!(
        c.error("pin/add", 500).await,
        "Error parsing IPFS Path: invalid path \"\": path does not have enough components"
    );
    assert_eq!(
        c.error(&format!("pin/add?arg={loose}&recursive=maybe"), 400)
            .await,
        "Could not convert value 'maybe' to type 'bool' (for option '-recursive')"
    );
    let m = c.error(&format!("pin/rm?arg={hello}"), 500).await;
    assert_eq!(m, "pin is not part of the pinset");
    let m = c.error(&format!("pin/ls?arg={hello}"), 500).await;
    assert_eq!(m, format!("Error: path '{hello}' is not pinned"));
    c.error("pin/ls?arg=bad", 500).await;
    c.error("pin/ls?type=some", 400).await;
    assert_eq!(
        c.error(&format!("pin/update?arg={root}"), 400).await,
        "argument \"to-path\" is required"
    );
    assert_eq!(
        c.error("pin/update", 400).await,
        "argument \"from-path\" is required"
    );
    let m = c
        .error(&format!("pin/update?arg={hello}&arg={root}"), 500)
        .await;
    assert!(m.contains("not recursively pinned"), "{m}");
    assert_eq!(other.pinset().await.unwrap(), before);

    // block/put and dag/put with pin=true pin in the cluster; without, not.
    let (status, _, body) = c.post("block/put?format=raw&pin=false").await;
    assert_eq!(status, 400, "no data: the daemon's own answer: {body}");
    let block = put_file(&c, "block/put?format=raw&pin=true", b"a pinned block").await;
    let key = block[0]["Key"].as_str().unwrap().to_string();
    assert_eq!(block[0]["Size"], 14);
    wait_pinned(other, &key, true).await;
    let plain = put_file(&c, "block/put?format=raw", b"an unpinned block").await;
    let plain_key = plain[0]["Key"].as_str().unwrap().to_string();
    let dag = put_file(&c, "dag/put?pin=true", br#"{"hello":"world","n":1}"#).await;
    let dag_cid = dag[0]["Cid"]["/"].as_str().unwrap().to_string();
    wait_pinned(other, &dag_cid, true).await;
    assert!(!other.pinset().await.unwrap().contains(&plain_key));
}

/// POST a one-file multipart body to the proxy; the reply lines.
async fn put_file(c: &Cluster, cmd: &str, data: &[u8]) -> Vec<Value> {
    let boundary = "----pincluster-proxy-put";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"data\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let res = c
        .http
        .post(format!("{}/api/v0/{cmd}", c.proxy(0)))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{cmd}: {body}");
    lines(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repo_stat_and_gc_reach_every_daemon() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(3).await;

    // repo/stat: the sum of the three daemons' own answers.
    let count = |v: &Value, k: &str| -> u64 {
        match &v[k] {
            Value::String(s) => s.parse().unwrap(),
            n => n.as_u64().unwrap(),
        }
    };
    wait_for(
        "repo/stat to be the sum of the daemons'",
        DEADLINE,
        || async {
            let mut want = [0u64; 3];
            for d in &c.daemons {
                let s = d.call("repo/stat").await;
                for (i, k) in ["RepoSize", "StorageMax", "NumObjects"].iter().enumerate() {
                    want[i] += count(&s, k);
                }
            }
            let got = c.call("repo/stat").await;
            let got = ["RepoSize", "StorageMax", "NumObjects"].map(|k| got[k].as_u64().unwrap());
            (got == want).then_some(())
        },
    )
    .await;

    // repo/gc: unpinned blocks on every daemon go, and are listed.
    let mut loose = Vec::new();
    for (i, d) in c.daemons.iter().enumerate() {
        let added = d
            .add_with(
                "add?pin=false&cid-version=1&raw-leaves=true",
                "x",
                format!("garbage {i}").as_bytes(),
            )
            .await;
        loose.push(added.last().unwrap()["Hash"].as_str().unwrap().to_string());
    }
    let (status, headers, body) = c.post("repo/gc").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["trailer"], "X-Stream-Error");
    let collected: Vec<cid::Cid> = lines(&body)
        .iter()
        .map(|l| l["Key"]["/"].as_str().unwrap().parse().unwrap())
        .collect();
    for (cid, d) in loose.iter().zip(&c.daemons) {
        let cid: cid::Cid = cid.parse().unwrap();
        // The daemons report keys as raw CIDv1: compare the multihashes.
        assert!(
            collected.iter().any(|k| k.hash() == cid.hash()),
            "{cid} not in {collected:?}"
        );
        let (status, _) = d.post(&format!("block/stat?arg={cid}&timeout=1s")).await;
        assert_ne!(status, 200, "{cid} still on its daemon");
    }

    // POST /ipfs/gc on another peer, and the client command: one entry per peer.
    let gc: Value = reqwest::Client::new()
        .post(format!("{}/ipfs/gc", c.peers[1].api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let map = gc["peer_map"].as_object().unwrap();
    assert_eq!(map.len(), 3, "{gc}");
    for p in &c.peers {
        assert_eq!(map[&p.id]["peer"], p.id.as_str());
        assert!(map[&p.id]["keys"].is_array(), "{gc}");
        assert!(map[&p.id].get("error").is_none(), "{gc}");
    }
    let out = std::process::Command::new(BIN)
        .args(["--host", &c.peers[2].api, "ipfs", "gc", "--local"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  > CIDs:"), "{text}");
    assert_eq!(
        text.matches("  > CIDs:").count(),
        1,
        "--local: one peer: {text}"
    );
    assert_eq!(
        c.error("repo/gc?stream-errors=maybe", 400).await,
        "Could not convert value 'maybe' to type 'bool' (for option '-stream-errors')"
    );

    // A peer whose daemon is down: skipped by repo/stat, reported by repo/gc.
    let mut c = c;
    c.daemons[2].stop();
    let c = c;
    wait_for(
        "repo/stat to be the sum of the live daemons'",
        DEADLINE,
        || async {
            let mut want = 0;
            for d in &c.daemons[..2] {
                want += count(&d.call("repo/stat").await, "RepoSize");
            }
            (c.call("repo/stat").await["RepoSize"].as_u64() == Some(want)).then_some(())
        },
    )
    .await;
    let (status, _, body) = c.post("repo/gc?stream-errors=true").await;
    assert_eq!(status, 200, "{body}");
    let down = &c.peers[2].id;
    assert!(
        lines(&body).iter().any(|l| l["Key"].is_null()
            && l["Error"]
                .as_str()
                .is_some_and(|e| e.contains(down.as_str()))),
        "the failed peer is reported: {body}"
    );
    let gc: Value = reqwest::Client::new()
        .post(format!("{}/ipfs/gc", c.peers[0].api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        gc["peer_map"][down]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{gc}"
    );
    assert!(
        gc["peer_map"][&c.peers[0].id].get("error").is_none(),
        "{gc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_else_passes_through_unchanged() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(1).await;
    let d = &c.daemons[0];
    let proxy = c.proxy(0);
    let http = &c.http;

    // The same request straight to the daemon and through the proxy.
    let both = |method: reqwest::Method, path: &str| {
        let (direct, proxied) = (
            http.request(method.clone(), format!("{}{path}", d.api_url())),
            http.request(method, format!("{proxy}{path}")),
        );
        async move { (direct.send().await.unwrap(), proxied.send().await.unwrap()) }
    };
    for (method, path) in [
        (reqwest::Method::POST, "/api/v0/id"),
        (reqwest::Method::POST, "/api/v0/version"),
        (reqwest::Method::POST, "/api/v0/swarm/peers"),
        (reqwest::Method::POST, "/api/v0/no/such/command"),
        (reqwest::Method::GET, "/api/v0/version"),
        (reqwest::Method::OPTIONS, "/api/v0/pin/ls"),
        (reqwest::Method::POST, "/api/v0/add/"),
    ] {
        let (a, b) = both(method.clone(), path).await;
        assert_eq!(a.status(), b.status(), "{method} {path}");
        let strip = |h: &reqwest::header::HeaderMap| {
            let mut h = h.clone();
            for k in ["date", "connection", "keep-alive", "transfer-encoding"] {
                h.remove(k);
            }
            h
        };
        assert_eq!(strip(a.headers()), strip(b.headers()), "{method} {path}");
        assert_eq!(
            a.text().await.unwrap(),
            b.text().await.unwrap(),
            "{method} {path}"
        );
    }

    // cat of 100 MB: the same bytes, streamed.
    let data: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cid = d
        .add_with("add?pin=true&progress=false", "big", &data)
        .await;
    let cid = cid.last().unwrap()["Hash"].as_str().unwrap().to_string();
    let want = Sha256::digest(&data);
    drop(data);
    let mut res = http
        .post(format!("{proxy}/api/v0/cat?arg={cid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut hash = Sha256::new();
    let mut len = 0usize;
    while let Some(chunk) = res.chunk().await.unwrap() {
        len += chunk.len();
        hash.update(&chunk);
    }
    assert_eq!(len, 100 << 20);
    assert_eq!(hash.finalize(), want);
}

/// Kubo's own `ipfs` CLI with `--api <addr>` and an `IPFS_PATH` that holds
/// no repo; its stdout. Panics with both outputs when it fails.
async fn ipfs(api: &str, ipfs_path: &std::path::Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = Kubo::cli(api, ipfs_path, args).await;
    assert!(ok, "ipfs --api {api} {args:?}: {stdout}{stderr}");
    stdout
}

/// The proxy seed's examples, run with Kubo's `ipfs` binary: `add`,
/// `pin add|ls|rm` and the rest, then the same command straight against
/// the daemon where the proxy only passes it through. Output must read as
/// Kubo's own; what is added or pinned becomes a cluster pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ipfs_cli_adds_and_pins_in_the_cluster() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(2).await;
    let other = &c.peers[1];
    let proxy = format!(
        "/ip4/127.0.0.1/tcp/{}",
        c.proxy(0).rsplit(':').next().unwrap()
    );
    let direct = c.daemons[0].api_multiaddr();
    let files = temp();
    let repo = files.path().join("no-repo");
    let file = files.path().join("cli.txt");
    std::fs::write(&file, "added by the ipfs CLI\n").unwrap();
    let folder = files.path().join("folder");
    std::fs::create_dir_all(folder.join("d")).unwrap();
    std::fs::write(folder.join("a.txt"), "a\n").unwrap();
    std::fs::write(folder.join("d/b.txt"), "b\n").unwrap();
    let run = |api: &str, args: &[&str]| {
        let (api, args, repo) = (
            api.to_string(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            repo.clone(),
        );
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ipfs(&api, &repo, &args).await
        }
    };

    // `ipfs add FILE`: Kubo's "added <cid> <name>", and a cluster pin.
    let out = run(&proxy, &["add", file.to_str().unwrap()]).await;
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!((words[0], words[2]), ("added", "cli.txt"), "{out}");
    let file_cid = words[1].to_string();
    wait_pinned(other, &file_cid, true).await;
    let only_hash = run(
        &direct,
        &["add", "-Q", "--only-hash", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(only_hash.trim(), file_cid, "the daemon's CID");

    // `ipfs add -r FOLDER`: every entry listed as Kubo lists it, only the
    // folder pinned.
    let out = run(&proxy, &["add", "-r", folder.to_str().unwrap()]).await;
    let want = run(
        &direct,
        &["add", "-r", "--only-hash", folder.to_str().unwrap()],
    )
    .await;
    assert_eq!(out, want, "the same lines as the daemon's own add");
    let added: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[2].to_string(), w[1].to_string())
        })
        .collect();
    let folder_cid = added.iter().find(|(n, _)| n == "folder").unwrap().1.clone();
    let a_cid = added
        .iter()
        .find(|(n, _)| n == "folder/a.txt")
        .unwrap()
        .1
        .clone();
    wait_pinned(other, &folder_cid, true).await;
    assert!(!other.pinset().await.unwrap().contains(&a_cid));

    // `ipfs add --cid-version 1 -Q`: base32 CIDv1, as Kubo prints it.
    let out = run(
        &proxy,
        &["add", "--cid-version", "1", "-Q", file.to_str().unwrap()],
    )
    .await;
    let v1 = out.trim().to_string();
    assert!(v1.starts_with("bafk"), "{out}");
    wait_pinned(other, &v1, true).await;

    // `ipfs pin add`, `pin ls` (the cluster's pinset), `pin ls <cid>`.
    let out = run(&proxy, &["pin", "add", &a_cid]).await;
    assert_eq!(out.trim(), format!("pinned {a_cid} recursively"));
    wait_pinned(other, &a_cid, true).await;
    let out = run(&proxy, &["pin", "ls", "--type", "recursive"]).await;
    let mut listed: Vec<&str> = out.lines().collect();
    listed.sort();
    let mut want = [
        format!("{a_cid} recursive"),
        format!("{file_cid} recursive"),
        format!("{folder_cid} recursive"),
        format!("{v1} recursive"),
    ];
    want.sort();
    assert_eq!(listed, want, "the cluster pinset: {out}");
    let out = run(&proxy, &["pin", "ls", &a_cid]).await;
    assert_eq!(out.trim(), format!("{a_cid} recursive"));

    // `ipfs pin update FROM TO`: the cluster pin moves.
    let out = run(&proxy, &["pin", "update", &a_cid, &file_cid]).await;
    assert_eq!(
        out.trim(),
        format!("updated {a_cid} to {file_cid}"),
        "{out}"
    );
    wait_pinned(other, &a_cid, false).await;
    run(&proxy, &["pin", "add", &a_cid]).await;

    // `ipfs pin rm`.
    let out = run(&proxy, &["pin", "rm", &a_cid]).await;
    assert_eq!(out.trim(), format!("unpinned {a_cid}"));
    wait_pinned(other, &a_cid, false).await;

    // `block put --pin` and `dag put --pin`: cluster pins too.
    let block = files.path().join("block.bin");
    std::fs::write(&block, "a raw block from the ipfs CLI\n").unwrap();
    let out = run(&proxy, &["block", "put", "--pin", block.to_str().unwrap()]).await;
    let block_cid = out.trim().to_string();
    assert!(block_cid.starts_with("bafk"), "{out}");
    wait_pinned(other, &block_cid, true).await;
    let node = files.path().join("node.json");
    std::fs::write(&node, r#"{"made by":"the ipfs CLI"}"#).unwrap();
    let out = run(&proxy, &["dag", "put", "--pin", node.to_str().unwrap()]).await;
    let dag_cid = out.trim().to_string();
    assert!(dag_cid.starts_with("bafyrei"), "{out}");
    wait_pinned(other, &dag_cid, true).await;

    // `repo stat` sums every daemon; `repo gc` reaches every daemon.
    let out = run(&proxy, &["repo", "stat"]).await;
    for key in [
        "NumObjects:",
        "RepoSize:",
        "StorageMax:",
        "RepoPath:",
        "Version:",
    ] {
        assert!(out.contains(key), "{key} in {out}");
    }
    let objects = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("NumObjects:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let own = run(&direct, &["repo", "stat"]).await;
    assert!(
        objects(&out) > objects(&own),
        "the sum over both daemons: {out} vs {own}"
    );
    run(&proxy, &["repo", "gc", "--quiet"]).await;

    // Passed through: the same output as the daemon's own.
    let dir_entry = format!("{folder_cid}/d/b.txt");
    for args in [
        vec!["cat", file_cid.as_str()],
        vec!["cat", dir_entry.as_str()],
        vec!["ls", folder_cid.as_str()],
        vec!["dag", "get", dag_cid.as_str()],
        vec!["block", "get", block_cid.as_str()],
        vec!["block", "stat", block_cid.as_str()],
        vec!["id"],
        vec!["version"],
        vec!["swarm", "peers"],
        vec!["refs", "-r", folder_cid.as_str()],
    ] {
        let (a, b) = (run(&proxy, &args).await, run(&direct, &args).await);
        assert_eq!(
            a, b,
            "ipfs {args:?} through the proxy vs straight to the daemon"
        );
    }
    // `cat` of 100 MB through the proxy: the same bytes.
    let big = files.path().join("big.bin");
    let data: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let big_cid = run(&direct, &["add", "-Q", big.to_str().unwrap()]).await;
    let (ok, out, err) = {
        let out = tokio::process::Command::new(common::kubo::real_bin("ipfs"))
            .args(["--api", &proxy, "cat", big_cid.trim()])
            .env("IPFS_PATH", &repo)
            .output()
            .await
            .unwrap();
        (out.status.success(), out.stdout, out.stderr)
    };
    assert!(ok, "ipfs cat: {}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), data.len());
    assert!(
        Sha256::digest(&out) == Sha256::digest(&data),
        "cat 100 MB differs"
    );
    drop((data, out));

    // `get` writes the same tree.
    for (api, out) in [(&proxy, "via-proxy"), (&direct, "direct")] {
        let target = files.path().join(out);
        run(api, &["get", "-o", target.to_str().unwrap(), &folder_cid]).await;
        assert_eq!(std::fs::read(target.join("d/b.txt")).unwrap(), b"b\n");
    }
    assert!(!repo.exists(), "the CLI used a local repo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubo_rpc_client_works_against_the_proxy() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(2).await;
    let other = &c.peers[1];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/kubo-client.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(c.proxy(0))
        .output()
        .await
        .expect("run node");
    assert!(
        out.status.success(),
        "kubo-rpc-client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    let s = |k: &str| seen[k].as_str().unwrap().to_string();

    wait_pinned(other, &s("added"), true).await;
    assert_eq!(s("pinAdd"), s("unpinned"));
    let listed = seen["pinLs"].as_array().unwrap();
    for cid in [s("added"), s("unpinned")] {
        assert!(
            listed.contains(&json!({"cid": cid, "type": "recursive"})),
            "{cid} in {listed:?}"
        );
    }
    assert_eq!(
        seen["pinLsOne"],
        json!([{"cid": s("unpinned"), "type": "recursive"}])
    );
    assert_eq!(s("pinRm"), s("unpinned"));
    wait_pinned(other, &s("unpinned"), false).await;
    let stat = &seen["repoStat"];
    for k in ["repoSize", "storageMax", "numObjects"] {
        assert!(
            stat[k].as_str().unwrap().parse::<u64>().unwrap() > 0,
            "{stat}"
        );
    }
    wait_pinned(other, &s("block"), true).await;
    wait_pinned(other, &s("dag"), true).await;
    assert!(seen["gc"].is_array());
}

/// A stand-in daemon with headers Kubo cannot be made to send: a
/// custom header (exposed through `Access-Control-Expose-Headers`) on
/// `version`, and a CORS answer to preflights. Counts `version` calls.
async fn header_daemon() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter;
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let version = warp::path!("api" / "v0" / "version")
        .and(warp::post())
        .map(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let reply = warp::reply::json(&json!({"Version": "0.30.0"}));
            let reply = warp::reply::with_header(reply, "X-Daemon-Custom", "custom-value");
            warp::reply::with_header(reply, "Access-Control-Expose-Headers", "X-Daemon-Custom")
        });
    let preflight = warp::options()
        .and(warp::header::<String>("origin"))
        .map(|origin: String| {
            let reply =
                warp::reply::with_header(warp::reply(), "Access-Control-Allow-Origin", origin);
            warp::reply::with_header(reply, "Vary", "Origin")
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(warp::serve(version.or(preflight)).incoming(listener).run());
    (format!("/ip4/127.0.0.1/tcp/{port}"), calls, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intercepted_replies_carry_the_daemons_headers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (daemon, version_calls, server) = header_daemon().await;
    let tmp = temp();
    let dir = tmp.path().join("peer");
    std::fs::create_dir_all(&dir).unwrap();
    init_folder(&dir, &PeerSpec::default());
    let path = dir.join("service.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["api"]["ipfsproxy"]["extract_headers_extra"] = json!(["X-Daemon-Custom"]);
    config["api"]["ipfsproxy"]["extract_headers_ttl"] = json!("0s");
    std::fs::write(&path, config.to_string()).unwrap();
    let peer = TestPeer::start(
        dir,
        PeerSpec {
            env: vec![
                ("CLUSTER_IPFSPROXY_NODEMULTIADDRESS".into(), daemon.clone()),
                ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(), daemon),
            ],
            ..PeerSpec::default()
        },
    )
    .await;
    let port = peer.proxy_port();
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let res = http
            .post(format!("http://127.0.0.1:{port}/api/v0/pin/ls"))
            .header("origin", "http://app.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["server"], "ipfs-cluster/ipfsproxy/1.1.6");
        assert_eq!(h["access-control-allow-origin"], "http://app.example");
        assert_eq!(h["vary"], "Origin");
        assert_eq!(h["x-daemon-custom"], "custom-value");
        assert_eq!(h["access-control-expose-headers"], "X-Daemon-Custom");
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"Keys": {}}));
    }
    // extract_headers_ttl 0s: fetched once, then kept.
    assert_eq!(version_calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    server.abort();
}
