//! A harness that runs real `pincluster daemon` processes on 127.0.0.1:
//! every listen address on port 0, each peer in its own temp folder, the
//! bound addresses read from the daemon's log. Tests wait for conditions
//! with deadlines, never for fixed times.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pincluster");
/// Generous: CI machines are slow and two cores are shared by all peers.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `check` returns `Some`, or panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// How a peer is set up.
#[derive(Clone, Debug, Default)]
pub struct PeerSpec {
    /// Hex secret; `None` runs without a private network.
    pub secret: Option<String>,
    /// Extra environment overrides (`CLUSTER_...`).
    pub env: Vec<(String, String)>,
    /// Addresses to bootstrap from.
    pub bootstrap: Vec<String>,
}

impl PeerSpec {
    /// This spec with the environment overrides `env` added.
    pub fn with_env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }
}

/// A running daemon.
pub struct TestPeer {
    pub dir: PathBuf,
    pub spec: PeerSpec,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    pub api: String,
    pub id: String,
    http: reqwest::Client,
    /// The PEM certificate the harness trusts when the API is HTTPS.
    tls_ca: Option<String>,
    /// The network namespace the daemon runs in and the IPv4 address all
    /// its listeners bind there; `None`: the host's, on 127.0.0.1.
    netns: Option<(String, String)>,
}

impl TestPeer {
    /// The IPv4 address every listener binds.
    fn host(&self) -> &str {
        self.netns.as_ref().map_or("127.0.0.1", |(_, addr)| addr)
    }
}

/// A folder with `service.json` and `identity.json`, made by `pincluster
/// init`. The harness's peers talk to Kubo (real or fake) through ipfshttp;
/// [`init_embedded_folder`] makes one with the embedded node.
pub fn init_folder(dir: &Path, spec: &PeerSpec) {
    init_with(dir, spec, "kubo");
}

/// [`init_folder`] with the embedded IPFS node (`init`'s default).
pub fn init_embedded_folder(dir: &Path, spec: &PeerSpec) {
    init_with(dir, spec, "embedded");
}

fn init_with(dir: &Path, spec: &PeerSpec, ipfs: &str) {
    let mut cmd = Command::new(BIN);
    cmd.args(["init", "--config"]).arg(dir);
    cmd.arg(format!("--ipfs={ipfs}"));
    match &spec.secret {
        Some(s) => cmd.args(["--secret", s]),
        None => cmd.arg("--no-secret"),
    };
    let out = cmd.output().expect("run pincluster init");
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPeer {
    /// Initialises `dir` if needed and starts a daemon on it.
    pub async fn start(dir: PathBuf, spec: PeerSpec) -> TestPeer {
        TestPeer::start_with(dir, spec, None, None).await
    }

    /// [`TestPeer::start`] inside network namespace `ns` (`ip netns exec`),
    /// every listener on `addr` instead of 127.0.0.1; the harness must be
    /// able to route to `addr`.
    pub async fn start_in_netns(dir: PathBuf, spec: PeerSpec, ns: &str, addr: &str) -> TestPeer {
        TestPeer::start_with(dir, spec, None, Some((ns.to_string(), addr.to_string()))).await
    }

    /// [`TestPeer::start`] for a folder whose REST API serves HTTPS with a
    /// certificate `ca_pem` (PEM) signed: the harness's client trusts it.
    pub async fn start_https(dir: PathBuf, spec: PeerSpec, ca_pem: &str) -> TestPeer {
        TestPeer::start_with(dir, spec, Some(ca_pem.to_string()), None).await
    }

    async fn start_with(
        dir: PathBuf,
        spec: PeerSpec,
        tls_ca: Option<String>,
        netns: Option<(String, String)>,
    ) -> TestPeer {
        if !dir.join("service.json").exists() {
            init_folder(&dir, &spec);
        }
        let host = netns
            .as_ref()
            .map_or("127.0.0.1", |(_, addr)| addr)
            .to_string();
        let mut cmd = match &netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["daemon", "--config"]).arg(&dir);
        if !spec.bootstrap.is_empty() {
            cmd.args(["--bootstrap", &spec.bootstrap.join(",")]);
        }
        let any_port = format!("/ip4/{host}/tcp/0");
        cmd.env("CLUSTER_LISTENMULTIADDRESS", &any_port)
            .env("CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS", &any_port)
            // `init` turns the IPFS proxy on: peers side by side need their own ports.
            .env("CLUSTER_IPFSPROXY_LISTENMULTIADDRESS", &any_port)
            // The embedded node's public swarm (absent with Kubo: ignored).
            .env("CLUSTER_EMBEDDED_SWARMLISTENMULTIADDRESS", &any_port)
            .env("CLUSTER_MONITORPINGINTERVAL", "2s")
            .env("CLUSTER_CRDT_REBROADCASTINTERVAL", "2s")
            .env("PINCLUSTER_LOG", "warn,pincluster=debug")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spec_auth = spec
            .env
            .iter()
            .find(|(k, _)| k == "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS")
            .and_then(|(_, v)| v.split(',').next()?.split_once(':'))
            .map(|(u, p)| (u.to_string(), p.to_string()));
        let mut child = cmd.spawn().expect("spawn pincluster daemon");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut peer = TestPeer {
            dir,
            spec,
            child: Some(child),
            log,
            api: String::new(),
            id: String::new(),
            http: api_client(&spec_auth, tls_ca.as_deref()),
            tls_ca,
            netns,
        };
        let api = wait_for("the REST API address in the log", DEADLINE, || {
            let found = peer.log_value("REST API listening", "addr=");
            let exited = peer.exited();
            async move {
                if exited {
                    panic!("daemon exited during start");
                }
                found
            }
        })
        .await;
        let port = api.rsplit('/').next().unwrap().to_string();
        let scheme = if peer.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        peer.api = format!("{scheme}://{host}:{port}");
        let id = peer.get_json("/id").await.expect("GET /id");
        peer.id = id["id"].as_str().unwrap().to_string();
        peer
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => {
                if let Ok(Some(status)) = c.try_wait() {
                    eprintln!("daemon log:\n{}", self.log.lock().unwrap().join("\n"));
                    eprintln!("exit status {status}");
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    /// The IPFS proxy's multiaddress, as the daemon logged it.
    pub fn proxy_addr(&self) -> String {
        self.log_value("IPFS proxy listening", "addr=")
            .expect("the proxy address in the log")
    }

    /// The IPFS proxy's TCP port.
    pub fn proxy_port(&self) -> u16 {
        self.proxy_addr()
            .rsplit('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a TCP port ends the proxy address")
    }

    /// The value after `key` on the first log line containing `needle`.
    pub fn log_value(&self, needle: &str, key: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        log.iter().find(|l| l.contains(needle)).and_then(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            Some(rest.split_whitespace().next()?.to_string())
        })
    }

    /// The `key` value of every log line containing `needle`, in order.
    pub fn log_values(&self, needle: &str, key: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains(needle))
            .filter_map(|l| {
                let rest = &l[l.find(key)? + key.len()..];
                Some(rest.split_whitespace().next()?.to_string())
            })
            .collect()
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// This peer's cluster address on 127.0.0.1 (or its namespace's
    /// address), with `/p2p/<id>`.
    pub async fn cluster_addr(&self) -> String {
        let id = self.get_json("/id").await.expect("GET /id");
        let prefix = format!("/ip4/{}/", self.host());
        id["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.starts_with(&prefix))
            .expect("an address on the listening host")
            .to_string()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no shutdown.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            kubo::kill_child(c);
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Starts this peer again on the same folder.
    pub async fn restart(mut self) -> TestPeer {
        self.kill();
        let dir = self.dir.clone();
        let spec = self.spec.clone();
        let tls_ca = self.tls_ca.take();
        let netns = self.netns.take();
        TestPeer::start_with(dir, spec, tls_ca, netns).await
    }

    /// Starts this peer again on the same folder with another spec.
    pub async fn restart_with(mut self, spec: PeerSpec) -> TestPeer {
        self.kill();
        let dir = self.dir.clone();
        TestPeer::start(dir, spec).await
    }

    /// The daemon's resident memory in KiB now and at its peak (`VmRSS`,
    /// `VmHWM` of `/proc/<pid>/status`), for benchmarks.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// The daemon's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        // A failing test shows what each of its daemons was doing.
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(80)..];
            eprintln!(
                "--- last log lines of peer {} ---\n{}",
                self.id,
                tail.join("\n")
            );
        }
        self.kill();
    }
}

/// The REST API calls the tests make of any peer, pincluster's
/// ([`TestPeer`]) or the reference's ([`reference::ReferencePeer`]), written
/// once over the peer's HTTP client and API address.
#[allow(async_fn_in_trait)] // only the harness implements it
pub trait RestApi {
    /// `http://127.0.0.1:<port>` of the REST API.
    fn api_base(&self) -> &str;
    /// The client the peer's requests go through (it trusts the peer's
    /// certificate when the API is HTTPS).
    fn client(&self) -> &reqwest::Client;
    /// How failure messages name the peer.
    fn label(&self) -> String;

    /// GET `path` of the REST API as JSON; `None` when it does not answer
    /// or the body is not JSON.
    async fn get_json(&self, path: &str) -> Option<Value> {
        let res = self
            .client()
            .get(format!("{}{path}", self.api_base()))
            .send()
            .await
            .ok()?;
        res.json().await.ok()
    }

    /// GET an NDJSON stream; `[]` for a 204, `None` for an error status.
    async fn get_ndjson(&self, path: &str) -> Option<Vec<Value>> {
        let res = self
            .client()
            .get(format!("{}{path}", self.api_base()))
            .send()
            .await
            .ok()?;
        if res.status() == 204 {
            return Some(Vec::new());
        }
        if !res.status().is_success() {
            return None;
        }
        let text = res.text().await.ok()?;
        text.lines().map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// POST /pins/{cid}?{query}; the status and the body.
    async fn pin(&self, cid: &str, query: &str) -> (u16, Value) {
        let res = self
            .client()
            .post(format!("{}/pins/{cid}?{query}", self.api_base()))
            .send()
            .await
            .expect("POST /pins");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// DELETE /pins/{cid}; the status.
    async fn unpin(&self, cid: &str) -> u16 {
        let res = self
            .client()
            .delete(format!("{}/pins/{cid}", self.api_base()))
            .send()
            .await
            .expect("DELETE /pins");
        res.status().as_u16()
    }

    /// The CIDs of `GET /allocations`, sorted.
    async fn pinset(&self) -> Option<Vec<String>> {
        self.sorted_field("/allocations", "cid").await
    }

    /// The peer ids of `GET /peers`, sorted.
    async fn peer_ids(&self) -> Option<Vec<String>> {
        self.sorted_field("/peers", "id").await
    }

    /// The string `field` of every item of the NDJSON stream at `path`,
    /// sorted.
    async fn sorted_field(&self, path: &str, field: &str) -> Option<Vec<String>> {
        let items = self.get_ndjson(path).await?;
        let mut values: Vec<String> = items
            .iter()
            .filter_map(|p| p[field].as_str().map(str::to_string))
            .collect();
        values.sort();
        Some(values)
    }

    /// Waits until this peer lists exactly `expected` pins.
    async fn wait_pinset(&self, expected: &[String]) {
        let mut want = expected.to_vec();
        want.sort();
        wait_for(
            &format!("{} pins on {}", want.len(), self.label()),
            DEADLINE,
            || {
                let want = want.clone();
                async move { (self.pinset().await? == want).then_some(()) }
            },
        )
        .await;
    }
}

impl RestApi for TestPeer {
    fn api_base(&self) -> &str {
        &self.api
    }

    fn client(&self) -> &reqwest::Client {
        &self.http
    }

    fn label(&self) -> String {
        self.id.clone()
    }
}

/// `n` distinct CIDv1 (raw) strings, distinct per `seed`.
pub fn cids(seed: &str, n: usize) -> Vec<String> {
    use sha2::{Digest, Sha256};
    (0..n)
        .map(|i| {
            let digest = Sha256::digest(format!("{seed}-{i}").as_bytes());
            let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
            cid::Cid::new_v1(0x55, mh).to_string()
        })
        .collect()
}

/// The harness's HTTP client: with basic auth as the first user of
/// `CLUSTER_RESTAPI_BASICAUTHCREDENTIALS` when the spec sets it, trusting
/// `ca_pem` when given.
fn api_client(auth: &Option<(String, String)>, ca_pem: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((user, password)) = auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {token}").parse().expect("a header value"),
        );
    }
    let mut builder = reqwest::Client::builder().default_headers(headers);
    if let Some(pem) = ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM certificate");
        builder = builder.add_root_certificate(ca);
    }
    builder.build().expect("an HTTP client")
}

/// A fresh temp folder that lives as long as the returned guard.
/// A `multipart/form-data` body holding `files` (name, bytes) as parts
/// named `file`, the way IPFS clients upload to `add`: the content type
/// (with its random boundary) and the body.
pub fn multipart_files(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("----pincluster-test-{:032x}", rand::random::<u128>());
    let size: usize = files.iter().map(|(_, d)| d.len() + 256).sum();
    let mut body = Vec::with_capacity(size + 64);
    for (name, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Writes `cids` into the stopped peer's folder with `state import`.
pub fn import_pins(dir: &Path, cids: &[String]) {
    let lines: String = cids
        .iter()
        .map(|c| format!("{{\"cid\":\"{c}\",\"type\":\"pin\",\"replication_factor_min\":-1,\"replication_factor_max\":-1,\"max_depth\":-1}}\n"))
        .collect();
    let file = dir.join("in.json");
    std::fs::write(&file, lines).unwrap();
    let out = Command::new(BIN)
        .arg("state")
        .arg("--config")
        .arg(dir)
        .args(["import", "-f", file.to_str().unwrap()])
        .output()
        .expect("run pincluster state import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(file).unwrap();
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Established TCP connections of process `pid`: (local port, remote
/// port) of each of its sockets in `/proc/net/tcp`.
pub fn tcp_links(pid: u32) -> Vec<(u16, u16)> {
    tcp_sockets(pid, "01")
}

/// Whether process `pid` holds a listening TCP socket on `port`. Unlike
/// binding the port to find out, another process taking the freed port
/// (port 0 hands it to whoever asks next) does not count.
pub fn listens(pid: u32, port: u16) -> bool {
    tcp_sockets(pid, "0A")
        .iter()
        .any(|(local, _)| *local == port)
}

/// (local port, remote port) of each socket of process `pid` in
/// `/proc/net/tcp` whose state is `state` (the kernel's hex code: `01`
/// established, `0A` listening).
fn tcp_sockets(pid: u32, state: &str) -> Vec<(u16, u16)> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() > 9 && cols[3] == state && inodes.contains(cols[9]))
                .then(|| Some((port(cols[1])?, port(cols[2])?)))
                .flatten()
        })
        .collect()
}

/// A port free now and below the kernel's ephemeral range, for a peer
/// that must listen on a fixed port (restarted where the others know it)
/// or for an address where nothing listens. A port found by binding port
/// 0 and letting go is in that range: the next listener or outgoing
/// connection on the machine, any test's, may take it before it is used.
pub fn fixed_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let floor = 10_000u16.min(low / 2);
    for _ in 0..1000 {
        let port = floor + rand::random::<u16>() % (low - floor);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {floor} and {low}");
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
pub mod fake_kubo;
pub mod http;
pub mod kubo;
pub mod reference;
pub mod tls;
pub mod tools;
