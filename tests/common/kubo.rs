//! Real IPFS daemons for tests: Kubo 0.43.1, built by `.ci/install-ipfs`
//! into `real-ipfs/bin/ipfs`. Each daemon keeps its repo in the folder it is
//! given (`dir/repo`), listens on 127.0.0.1 only (API, gateway and swarm on
//! free ports, read back from its output) and talks to no one it is not told
//! to: the `test` profile (no bootstrap, no MDNS), no routing (no DHT, no
//! delegated routers), no AutoConf fetch, TCP as the only transport.
//!
//! Requests for content no peer has hang until their `timeout=`, so every
//! request here has a client timeout, and fetching calls should carry one.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::DEADLINE;

/// The folder `.ci/install-ipfs` builds the real programs into.
pub const REAL_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/real-ipfs/bin");
/// The empty UnixFS folder, which `ipfs init` pins.
const EMPTY_DIR: &str = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
/// How long `stop` waits after SIGTERM before it kills.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Upper bound for any single API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The path of a program `.ci/install-ipfs` built (`ipfs`,
/// `ipfs-cluster-service`, `ipfs-cluster-ctl`); panics with what to run when
/// it is missing.
pub fn real_bin(name: &str) -> PathBuf {
    let path = Path::new(REAL_BIN).join(name);
    if !path.exists() {
        panic!(
            "{} is missing: run .ci/install-ipfs from the repo root \
             (builds Kubo and ipfs-cluster with Go; a few minutes the first time)",
            path.display()
        );
    }
    path
}

/// One running Kubo daemon. Dropping it stops the daemon (SIGTERM, then
/// SIGKILL after 10 s); the repo folder stays.
#[derive(Debug)]
pub struct Kubo {
    dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    api_port: u16,
    gateway_port: u16,
    swarm_port: u16,
    id: String,
    swarm_addr: String,
    http: reqwest::Client,
}

impl Kubo {
    /// Starts a daemon on the repo `dir/repo` (created on first use) with
    /// API, gateway and swarm on free loopback ports, and waits until
    /// `POST /api/v0/id` answers. Panics with the daemon's output if it does
    /// not within [`DEADLINE`].
    pub async fn start(dir: &Path) -> Kubo {
        Kubo::launch(dir, 0, 0, 0).await
    }

    /// `ipfs <args>` on this daemon's repo (config edits, `init`), waited for.
    fn repo_cmd(dir: &Path, args: &[&str]) {
        let out = Command::new(real_bin("ipfs"))
            .args(args)
            .env("IPFS_PATH", dir.join("repo"))
            .output()
            .expect("run ipfs");
        assert!(
            out.status.success(),
            "ipfs {args:?} in {}: {}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes the settings that keep the daemon on loopback, every start, so
    /// an old repo cannot bring back a stale port.
    fn configure(dir: &Path, api: u16, gateway: u16, swarm: u16) {
        let repo = dir.join("repo");
        if !repo.join("config").exists() {
            let _ = std::fs::remove_dir_all(&repo);
            Kubo::repo_cmd(dir, &["init", "--profile", "test", "--empty-repo"]);
            // Even an empty repo pins the empty folder (MFS's root); tests
            // start from no pins at all.
            Kubo::repo_cmd(dir, &["pin", "rm", EMPTY_DIR]);
        }
        // Left by a killed daemon: Kubo refuses to start while it is there.
        let _ = std::fs::remove_file(repo.join("repo.lock"));
        let _ = std::fs::remove_file(repo.join("api"));
        let path = repo.join("config");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read the Kubo config"))
                .expect("the Kubo config is JSON");
        let settings = [
            ("Addresses.API", json!(format!("/ip4/127.0.0.1/tcp/{api}"))),
            (
                "Addresses.Gateway",
                json!(format!("/ip4/127.0.0.1/tcp/{gateway}")),
            ),
            (
                "Addresses.Swarm",
                json!([format!("/ip4/127.0.0.1/tcp/{swarm}")]),
            ),
            ("Routing.Type", json!("none")),
            ("AutoConf.Enabled", json!(false)),
            ("AutoTLS.Enabled", json!(false)),
            ("Swarm.Transports.Network.QUIC", json!(false)),
            ("Swarm.Transports.Network.WebTransport", json!(false)),
            ("Swarm.Transports.Network.WebRTCDirect", json!(false)),
            ("Swarm.Transports.Network.Websocket", json!(false)),
        ];
        for (key, value) in settings {
            let (parents, last) = key.rsplit_once('.').expect("a dotted key");
            let mut at = &mut config;
            for part in parents.split('.') {
                if !at[part].is_object() {
                    at[part] = json!({});
                }
                at = &mut at[part];
            }
            at[last] = value;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap())
            .expect("write the Kubo config");
    }

    async fn launch(dir: &Path, api_port: u16, gateway_port: u16, swarm_port: u16) -> Kubo {
        std::fs::create_dir_all(dir).expect("create the Kubo folder");
        Kubo::configure(dir, api_port, gateway_port, swarm_port);
        let mut child = Command::new(real_bin("ipfs"))
            .arg("daemon")
            .env("IPFS_PATH", dir.join("repo"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ipfs daemon");
        let log = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("piped stdout"), log.clone());
        collect_lines(child.stderr.take().expect("piped stderr"), log.clone());
        let mut ipfs = Kubo {
            dir: dir.to_path_buf(),
            child: Some(child),
            log,
            api_port: 0,
            gateway_port: 0,
            swarm_port: 0,
            id: String::new(),
            swarm_addr: String::new(),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("reqwest client"),
        };

        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        let id = loop {
            if let Some(status) = ipfs
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "Kubo in {} exited during start ({status}):\n{}",
                    ipfs.dir.display(),
                    ipfs.log_text()
                );
            }
            if ipfs.api_port == 0 {
                ipfs.api_port = ipfs.logged_port("RPC API server listening on").unwrap_or(0);
            }
            if ipfs.api_port != 0
                && ipfs.log_text().contains("Daemon is ready")
                && let Ok(id) = ipfs.try_call("id").await
            {
                break id;
            }
            if start.elapsed() > DEADLINE {
                ipfs.kill();
                panic!(
                    "Kubo in {} did not answer POST /api/v0/id within {DEADLINE:?}:\n{}",
                    ipfs.dir.display(),
                    ipfs.log_text()
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        };
        ipfs.gateway_port = ipfs.logged_port("Gateway server listening on").unwrap_or(0);
        ipfs.id = id["ID"].as_str().expect("ID in /api/v0/id").to_string();
        ipfs.swarm_addr = id["Addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
            .unwrap_or_else(|| panic!("no loopback swarm address in /api/v0/id: {id}"))
            .to_string();
        ipfs.swarm_port = port_after_tcp(&ipfs.swarm_addr).expect("swarm port");
        eprintln!(
            "Kubo {} up in {:.1?}: api {} swarm {}",
            ipfs.id,
            start.elapsed(),
            ipfs.api_url(),
            ipfs.swarm_addr
        );
        ipfs
    }

    /// `/ip4/127.0.0.1/tcp/<port>`: the API address in the form a cluster
    /// peer's `node_multiaddress` and the `ipfs --api` flag take.
    pub fn api_multiaddr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.api_port)
    }

    /// `http://127.0.0.1:<port>`, without `/api/v0`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// `http://127.0.0.1:<port>`: the daemon's read-only HTTP gateway.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// `/ip4/127.0.0.1/tcp/<port>/p2p/<id>`: what other peers `swarm/connect` to.
    pub fn swarm_addr(&self) -> &str {
        &self.swarm_addr
    }

    /// The daemon's peer id (`12D3KooW…`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The folder given to `start`; the repo is `dir/repo`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the daemon process is still there.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM and wait for the daemon to exit (SIGKILL after 10 s); returns
    /// whether it exited cleanly on its own. `false` if it was not running.
    pub fn stop(&mut self) -> bool {
        self.child
            .take()
            .is_some_and(|child| stop_child(child, STOP_GRACE))
    }

    /// SIGKILL, no shutdown: the repo is left as a crash leaves it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_child(child);
        }
    }

    /// Stops the daemon (if it runs) and starts it again on the same repo and
    /// the same ports, so addresses handed out stay valid. The peer id and
    /// the pins survive.
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }

    /// Starts a stopped or killed daemon again on the same repo and ports.
    pub async fn start_again(&mut self) {
        let (dir, api, gw, swarm) = (
            self.dir.clone(),
            self.api_port,
            self.gateway_port,
            self.swarm_port,
        );
        let old = std::mem::replace(self, Kubo::launch(&dir, api, gw, swarm).await);
        let mut log = self.log.lock().unwrap();
        let before = old.log.lock().unwrap().clone();
        log.splice(0..0, before.into_iter().chain(["--- restart ---".into()]));
    }

    /// Everything the daemon printed so far (all runs), for failure messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `POST /api/v0/<cmd>` (`cmd` may carry a query: `pin/ls?type=recursive`);
    /// the status and the body as text.
    pub async fn post(&self, cmd: &str) -> (u16, String) {
        let res = self
            .http
            .post(format!("{}/api/v0/{cmd}", self.api_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /api/v0/{cmd} to Kubo {}: {e}", self.id));
        let status = res.status().as_u16();
        let body = res
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the reply to /api/v0/{cmd}: {e}"));
        (status, body)
    }

    /// `POST /api/v0/<cmd>` that must succeed with one JSON value.
    pub async fn call(&self, cmd: &str) -> Value {
        let (status, body) = self.post(cmd).await;
        assert!(
            (200..300).contains(&status),
            "Kubo /api/v0/{cmd}: HTTP {status}: {body}"
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("Kubo /api/v0/{cmd}: not JSON ({e}): {body}"))
    }

    /// `POST /api/v0/<cmd>` that must succeed with NDJSON (one value a line).
    pub async fn call_ndjson(&self, cmd: &str) -> Vec<Value> {
        let (status, body) = self.post(cmd).await;
        assert!(
            (200..300).contains(&status),
            "Kubo /api/v0/{cmd}: HTTP {status}: {body}"
        );
        parse_ndjson(cmd, &body)
    }

    /// `add` of one file, pinned, default options; its CID.
    pub async fn add(&self, name: &str, data: &[u8]) -> String {
        let lines = self.add_with("add?pin=true", name, data).await;
        let last = lines.last().expect("a reply line from add");
        last["Hash"]
            .as_str()
            .unwrap_or_else(|| panic!("no Hash in the add reply: {last}"))
            .to_string()
    }

    /// `POST /api/v0/<cmd>` (`add?cid-version=1&…`) with `data` as the one
    /// file `name` of a multipart body; the NDJSON reply lines.
    pub async fn add_with(&self, cmd: &str, name: &str, data: &[u8]) -> Vec<Value> {
        let (content_type, body) = super::multipart_files(&[(name, data)]);
        let res = self
            .http
            .post(format!("{}/api/v0/{cmd}", self.api_url()))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /api/v0/{cmd} to Kubo {}: {e}", self.id));
        let status = res.status();
        let text = res.text().await.expect("reading the add reply");
        assert!(
            status.is_success(),
            "Kubo /api/v0/{cmd}: HTTP {status}: {text}"
        );
        parse_ndjson(cmd, &text)
    }

    /// `swarm/connect` from this daemon to `other`.
    pub async fn connect(&self, other: &Kubo) {
        let reply = self
            .call(&format!("swarm/connect?arg={}", other.swarm_addr()))
            .await;
        assert!(
            reply["Strings"].to_string().contains("success"),
            "swarm/connect {} -> {}: {reply}",
            self.id,
            other.id
        );
    }

    /// The peer ids this daemon is connected to.
    pub async fn swarm_peer_ids(&self) -> Vec<String> {
        let reply = self.call("swarm/peers").await;
        reply["Peers"]
            .as_array()
            .map(|peers| {
                peers
                    .iter()
                    .filter_map(|p| p["Peer"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The recursively pinned CIDs (as Kubo prints them), sorted.
    pub async fn recursive_pins(&self) -> Vec<String> {
        let reply = self.call("pin/ls?type=recursive").await;
        let mut cids: Vec<String> = reply["Keys"]
            .as_object()
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default();
        cids.sort();
        cids
    }

    /// `ipfs <args>`: the real Kubo CLI, pointed at `api` (a multiaddr, such
    /// as a cluster peer's proxy) with an `IPFS_PATH` that holds no repo;
    /// the exit status, stdout and stderr.
    pub async fn cli(api: &str, ipfs_path: &Path, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new(real_bin("ipfs"))
            .arg("--api")
            .arg(api)
            .args(args)
            .env("IPFS_PATH", ipfs_path)
            .output()
            .await
            .expect("run ipfs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn try_call(&self, cmd: &str) -> Result<Value, String> {
        let res = self
            .http
            .post(format!("{}/api/v0/{cmd}", self.api_url()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        res.json().await.map_err(|e| e.to_string())
    }

    /// The port in the first output line containing `needle`.
    fn logged_port(&self, needle: &str) -> Option<u16> {
        let log = self.log.lock().unwrap();
        let line = log.iter().rev().find(|l| l.contains(needle))?;
        port_after_tcp(line)
    }
}

impl Drop for Kubo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `stream` line by line into `log` on a thread of its own.
pub(super) fn collect_lines(stream: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line);
        }
    });
}

/// The number after the first `/tcp/` in `text`.
pub(super) fn port_after_tcp(text: &str) -> Option<u16> {
    let rest = &text[text.find("/tcp/")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn parse_ndjson(cmd: &str, body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("Kubo /api/v0/{cmd}: bad NDJSON line ({e}): {l}"))
        })
        .collect()
}

/// SIGTERM to `child`, then waits for it to exit, polling, for at most
/// `grace` before SIGKILL; whether it exited 0 on its own. Shared by the
/// harnesses of every daemon a test runs beside pincluster.
pub fn stop_child(mut child: Child, grace: Duration) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < grace => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                kill_child(child);
                return false;
            }
        }
    }
}

/// SIGKILL, no shutdown, and reap the process.
pub fn kill_child(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
