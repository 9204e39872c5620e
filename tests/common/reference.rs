//! The reference peer for tests and benchmarks: a real `ipfs-cluster-service`
//! 1.1.6 (built by `.ci/install-ipfs` into `real-ipfs/bin`), run the way
//! [`TestPeer`](super::TestPeer) runs `pincluster daemon`, so the same test
//! code can drive both and compare what they answer.
//!
//! Each peer lives in its own folder (`IPFS_CLUSTER_PATH`), made by the
//! reference's own `init` with its default configuration (CRDT consensus,
//! pebble datastore), then edited so the peer stays on loopback and talks to
//! no one it is not told to: cluster swarm (TCP only, no QUIC), REST API and
//! IPFS proxy on 127.0.0.1 port 0, mDNS off, the Pinning Service API section
//! removed (the reference only starts the APIs whose section is present),
//! the IPFS connector and the proxy pointed at the given IPFS daemon.
//!
//! Port 0 works for every listener the reference opens here: the REST API
//! and the proxy log the address they bound (`RESTAPI (HTTP): <maddr>`,
//! `IPFS Proxy: <maddr> -> …`), and the cluster swarm's bound address shows in
//! `GET /id`. So no port is guessed and none can be raced for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::kubo::{collect_lines, kill_child, port_after_tcp, real_bin, stop_child};
use super::{DEADLINE, PeerSpec, RestApi, wait_for};

/// How long `stop` waits after SIGTERM before it kills: the reference's
/// shutdown waits for its components in turn.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Settings the harness gives every reference peer, as [`TestPeer`] does for
/// pincluster (`CLUSTER_MONITORPINGINTERVAL`, `CLUSTER_CRDT_REBROADCASTINTERVAL`),
/// so that both converge on the same time scale. `PeerSpec::env` comes after
/// these and wins.
///
/// [`TestPeer`]: super::TestPeer
const HARNESS_ENV: [(&str, &str); 2] = [
    ("CLUSTER_MONITORPINGINTERVAL", "2s"),
    ("CLUSTER_CRDT_REBROADCASTINTERVAL", "2s"),
];

/// One running `ipfs-cluster-service daemon`. Dropping it kills the process
/// (printing its last log lines if the test is failing); the folder stays.
pub struct ReferencePeer {
    pub dir: PathBuf,
    pub spec: PeerSpec,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:<port>` of the REST API, as [`TestPeer::api`](super::TestPeer).
    pub api: String,
    /// `http://127.0.0.1:<port>` of the IPFS proxy.
    pub proxy: String,
    /// The cluster peer id (`12D3KooW…`).
    pub id: String,
    http: reqwest::Client,
}

/// `ipfs-cluster-service init` in `dir` (default configuration: CRDT,
/// pebble), then the edits that keep the peer on loopback and beside the
/// IPFS daemon at `ipfs_api` (a multiaddr such as
/// [`Kubo::api_multiaddr`](super::kubo::Kubo::api_multiaddr)).
pub fn init_reference_folder(dir: &Path, ipfs_api: &str, spec: &PeerSpec) {
    std::fs::create_dir_all(dir).expect("create the reference peer's folder");
    let out = Command::new(real_bin("ipfs-cluster-service"))
        .args(["init", "--consensus", "crdt", "--datastore", "pebble"])
        .env("IPFS_CLUSTER_PATH", dir)
        // A secret in the runner's environment would leak into the folder.
        .env_remove("CLUSTER_SECRET")
        .output()
        .expect("run ipfs-cluster-service init");
    assert!(
        out.status.success(),
        "ipfs-cluster-service init in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("service.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read service.json"))
            .expect("service.json is JSON");
    let loopback = json!("/ip4/127.0.0.1/tcp/0");
    let cluster = &mut config["cluster"];
    // An empty secret is the reference's "no private network".
    cluster["secret"] = json!(spec.secret.clone().unwrap_or_default());
    cluster["listen_multiaddress"] = json!([loopback]);
    // mDNS would find the other engineers' peers on this machine.
    cluster["mdns_interval"] = json!("0s");
    let api = &mut config["api"];
    api["restapi"]["http_listen_multiaddress"] = loopback.clone();
    api["ipfsproxy"]["listen_multiaddress"] = loopback;
    api["ipfsproxy"]["node_multiaddress"] = json!(ipfs_api);
    api.as_object_mut()
        .expect("an api section")
        .remove("pinsvcapi");
    config["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = json!(ipfs_api);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).expect("write service.json");
}

impl ReferencePeer {
    /// Initialises `dir` if it holds no `service.json` and starts a daemon on
    /// it beside the IPFS daemon at `ipfs_api`; returns once the REST API
    /// answers `GET /id` and the proxy is listening. Panics with the daemon's
    /// output if that takes longer than [`DEADLINE`].
    pub async fn start(dir: PathBuf, ipfs_api: &str, spec: PeerSpec) -> ReferencePeer {
        if !dir.join("service.json").exists() {
            init_reference_folder(&dir, ipfs_api, &spec);
        }
        let mut cmd = Command::new(real_bin("ipfs-cluster-service"));
        cmd.arg("daemon");
        if !spec.bootstrap.is_empty() {
            cmd.args(["--bootstrap", &spec.bootstrap.join(",")]);
        }
        cmd.env("IPFS_CLUSTER_PATH", &dir)
            .env_remove("CLUSTER_SECRET")
            .envs(HARNESS_ENV)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ipfs-cluster-service daemon");
        let log = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("piped stdout"), log.clone());
        collect_lines(child.stderr.take().expect("piped stderr"), log.clone());
        let mut peer = ReferencePeer {
            dir,
            spec,
            child: Some(child),
            log,
            api: String::new(),
            proxy: String::new(),
            id: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("an HTTP client"),
        };
        let start = Instant::now();
        // Both lines are logged once the peer's RPC is ready, with the
        // address actually bound.
        let (api_port, proxy_port) = wait_for("the reference's listen addresses", DEADLINE, || {
            let ports = peer
                .logged_port("RESTAPI (HTTP")
                .zip(peer.logged_port("IPFS Proxy: "));
            let exited = peer.exited();
            async move {
                assert!(!exited, "ipfs-cluster-service exited during start");
                ports
            }
        })
        .await;
        peer.api = format!("http://127.0.0.1:{api_port}");
        peer.proxy = format!("http://127.0.0.1:{proxy_port}");
        let id = wait_for("GET /id on the reference", DEADLINE, || {
            peer.get_json("/id")
        })
        .await;
        peer.id = id["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in the reference's /id: {id}"))
            .to_string();
        eprintln!(
            "ipfs-cluster-service {} up in {:.1?}: api {} proxy {}",
            peer.id,
            start.elapsed(),
            peer.api,
            peer.proxy
        );
        peer
    }

    /// Whether the process has exited; prints its log the first time it is seen gone.
    fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => false,
            Some(Ok(Some(status))) => {
                eprintln!(
                    "ipfs-cluster-service exited ({status}):\n{}",
                    self.log_text()
                );
                true
            }
            _ => true,
        }
    }

    /// The port in the last log line containing `needle`.
    fn logged_port(&self, needle: &str) -> Option<u16> {
        let log = self.log.lock().unwrap();
        let line = log.iter().rev().find(|l| l.contains(needle))?;
        port_after_tcp(&line[line.find(needle)?..])
    }

    /// `http://127.0.0.1:<port>`: the REST API.
    pub fn api_url(&self) -> &str {
        &self.api
    }

    /// `http://127.0.0.1:<port>`: the IPFS proxy (`/api/v0/…` under it).
    pub fn proxy_url(&self) -> &str {
        &self.proxy
    }

    /// `/ip4/127.0.0.1/tcp/<port>`: the REST API as `ipfs-cluster-ctl --host` takes it.
    pub fn api_multiaddr(&self) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}",
            self.api.rsplit(':').next().unwrap()
        )
    }

    /// `/ip4/127.0.0.1/tcp/<port>`: the proxy as `ipfs --api` takes it.
    pub fn proxy_multiaddr(&self) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}",
            self.proxy.rsplit(':').next().unwrap()
        )
    }

    /// This peer's cluster address on 127.0.0.1, with `/p2p/<id>`: what
    /// another peer's `--bootstrap` takes.
    pub async fn cluster_addr(&self) -> String {
        let id = self.get_json("/id").await.expect("GET /id");
        id["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
            .unwrap_or_else(|| panic!("no loopback address in the reference's /id: {id}"))
            .to_string()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's resident memory in KiB now and at its peak (`VmRSS`,
    /// `VmHWM`), for benchmarks side by side with [`TestPeer::memory_kib`](super::TestPeer::memory_kib).
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM and wait for the daemon to exit (SIGKILL after
    /// [`STOP_GRACE`]); returns whether it exited 0 on its own. `false` if
    /// it was not running.
    pub fn stop(&mut self) -> bool {
        self.child
            .take()
            .is_some_and(|child| stop_child(child, STOP_GRACE))
    }

    /// SIGKILL, no shutdown.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_child(child);
        }
    }

    /// Everything the daemon printed so far, for failure messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for ReferencePeer {
    fn drop(&mut self) {
        // A failing test shows what the reference was doing.
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(80)..];
            eprintln!(
                "--- last log lines of reference peer {} ---\n{}",
                self.id,
                tail.join("\n")
            );
        }
        self.kill();
    }
}

impl RestApi for ReferencePeer {
    fn api_base(&self) -> &str {
        &self.api
    }

    fn client(&self) -> &reqwest::Client {
        &self.http
    }

    fn label(&self) -> String {
        format!("reference {}", self.id)
    }
}
