//! Real IPFS daemons for tests: js-ipfs 0.66.1 from npm, installed by
//! `.ci/install-ipfs` into `ipfs-testpeer/node_modules` and run through
//! `ipfs-testpeer/jsipfs-daemon.sh run`. Each daemon keeps its repo in the
//! folder it is given, listens on 127.0.0.1 only (API and swarm on free ports,
//! read back from its output) and talks to no one it is not told to
//! (no bootstrap, DHT, MDNS or preload).
//!
//! js-ipfs is not kubo: see `../shared/real-ipfs/README.md` §2 for where its
//! replies differ. Requests for content no peer has hang forever, so every
//! request here has a client timeout, and fetching calls should carry `timeout=`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::DEADLINE;

/// The npm project with the pinned js-ipfs tree and the start script.
const TESTPEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ipfs-testpeer");
/// How long `stop` waits after SIGTERM before it kills.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Upper bound for any single API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One running js-ipfs daemon. Dropping it stops the daemon (SIGTERM, then
/// SIGKILL after 10 s); the repo folder stays.
#[derive(Debug)]
pub struct JsIpfs {
    dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    api_port: u16,
    swarm_port: u16,
    id: String,
    swarm_addr: String,
    http: reqwest::Client,
}

impl JsIpfs {
    /// Starts a daemon on the repo `dir/repo` (created on first use) with API
    /// and swarm on free loopback ports, and waits until `POST /api/v0/id`
    /// answers. Panics with the daemon's output if it does not within
    /// [`DEADLINE`], and with install instructions if js-ipfs is not installed.
    pub async fn start(dir: &Path) -> JsIpfs {
        JsIpfs::launch(dir, 0, 0).await
    }

    async fn launch(dir: &Path, api_port: u16, swarm_port: u16) -> JsIpfs {
        check_installed();
        std::fs::create_dir_all(dir).expect("create the js-ipfs folder");
        let mut child = Command::new("bash")
            .arg(Path::new(TESTPEER).join("jsipfs-daemon.sh"))
            .arg("run")
            .arg(dir)
            .arg(api_port.to_string())
            .arg(swarm_port.to_string())
            // The daemon exits when this pipe closes, i.e. when the test
            // process dies without running Drop.
            .env("JSIPFS_EXIT_ON_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ipfs-testpeer/jsipfs-daemon.sh (is bash installed?)");
        let log = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("piped stdout"), log.clone());
        collect_lines(child.stderr.take().expect("piped stderr"), log.clone());
        let mut ipfs = JsIpfs {
            dir: dir.to_path_buf(),
            child: Some(child),
            log,
            api_port: 0,
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
                    "js-ipfs daemon in {} exited during start ({status}):\n{}",
                    ipfs.dir.display(),
                    ipfs.log_text()
                );
            }
            if ipfs.api_port == 0 {
                ipfs.api_port = ipfs.logged_port("HTTP API listening on").unwrap_or(0);
            }
            if ipfs.api_port != 0
                && let Ok(id) = ipfs.try_call("id").await
            {
                break id;
            }
            if start.elapsed() > DEADLINE {
                ipfs.kill();
                panic!(
                    "js-ipfs daemon in {} did not answer POST /api/v0/id within {DEADLINE:?}:\n{}",
                    ipfs.dir.display(),
                    ipfs.log_text()
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        };

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
            "js-ipfs {} up in {:.1?}: api {} swarm {}",
            ipfs.id,
            start.elapsed(),
            ipfs.api_url(),
            ipfs.swarm_addr
        );
        ipfs
    }

    /// `/ip4/127.0.0.1/tcp/<port>`: the API address in the form a cluster
    /// peer's `node_multiaddress` takes.
    pub fn api_multiaddr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.api_port)
    }

    /// `http://127.0.0.1:<port>`, without `/api/v0`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
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
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if start.elapsed() < STOP_GRACE => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// SIGKILL, no shutdown: the repo is left as a crash leaves it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon (if it runs) and starts it again on the same repo and
    /// the same API and swarm ports, so addresses handed out stay valid. The
    /// peer id and the pins survive.
    pub async fn restart(&mut self) {
        self.stop();
        let (dir, api, swarm) = (self.dir.clone(), self.api_port, self.swarm_port);
        let old = std::mem::replace(self, JsIpfs::launch(&dir, api, swarm).await);
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
            .unwrap_or_else(|e| panic!("POST /api/v0/{cmd} to js-ipfs {}: {e}", self.id));
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
            "js-ipfs /api/v0/{cmd}: HTTP {status}: {body}"
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("js-ipfs /api/v0/{cmd}: not JSON ({e}): {body}"))
    }

    /// `POST /api/v0/<cmd>` that must succeed with NDJSON (one value a line).
    pub async fn call_ndjson(&self, cmd: &str) -> Vec<Value> {
        let (status, body) = self.post(cmd).await;
        assert!(
            (200..300).contains(&status),
            "js-ipfs /api/v0/{cmd}: HTTP {status}: {body}"
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
        let boundary = format!("----pincluster-test-{:032x}", rand::random::<u128>());
        let mut body = Vec::with_capacity(data.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\n\
                 Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let res = self
            .http
            .post(format!("{}/api/v0/{cmd}", self.api_url()))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /api/v0/{cmd} to js-ipfs {}: {e}", self.id));
        let status = res.status();
        let text = res.text().await.expect("reading the add reply");
        assert!(
            status.is_success(),
            "js-ipfs /api/v0/{cmd}: HTTP {status}: {text}"
        );
        parse_ndjson(cmd, &text)
    }

    /// `swarm/connect` from this daemon to `other`.
    pub async fn connect(&self, other: &JsIpfs) {
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

    /// The recursively pinned CIDs (as js-ipfs prints them), sorted.
    pub async fn recursive_pins(&self) -> Vec<String> {
        let reply = self.call("pin/ls?type=recursive").await;
        let mut cids: Vec<String> = reply["Keys"]
            .as_object()
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default();
        cids.sort();
        cids
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
        let line = log.iter().find(|l| l.contains(needle))?;
        port_after_tcp(line)
    }
}

impl Drop for JsIpfs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Panics with what to do when `ipfs-testpeer/node_modules` is missing or was
/// installed from another lock than the one checked in.
fn check_installed() {
    let root = Path::new(TESTPEER);
    let modules = root.join("node_modules");
    let stamp = std::fs::read_to_string(modules.join(".installed-lock")).unwrap_or_default();
    if !modules.join(".bin/jsipfs").exists() || stamp.trim().is_empty() {
        panic!(
            "js-ipfs is not installed in {}: run .ci/install-ipfs from the repo root \
             (needs Node.js 20 and npm; about 3 minutes)",
            modules.display()
        );
    }
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for file in ["package.json", "package-lock.json"] {
        hash.update(std::fs::read(root.join(file)).expect("read ipfs-testpeer/package*.json"));
    }
    if hex::encode(hash.finalize()) != stamp.trim() {
        panic!(
            "{} was installed from another package-lock.json: run .ci/install-ipfs again",
            modules.display()
        );
    }
}

/// Copies `stream` line by line into `log` on a thread of its own.
fn collect_lines(stream: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line);
        }
    });
}

/// The number after the first `/tcp/` in `text`.
fn port_after_tcp(text: &str) -> Option<u16> {
    let rest = &text[text.find("/tcp/")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn parse_ndjson(cmd: &str, body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("js-ipfs /api/v0/{cmd}: bad NDJSON line ({e}): {l}"))
        })
        .collect()
}
