//! The outside programs the health-graph and dashboard tests drive as a
//! user would: the `pincluster` client, Graphviz's `dot`, headless
//! Chromium. `dot` and `chromium` come from `.ci/install-system`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{BIN, PeerSpec};

/// A peer of the test cluster that shares `secret`, with its IPFS daemon's
/// API at `ipfs_api`, bootstrapping from `bootstrap`.
pub fn beside_daemon(secret: &str, ipfs_api: String, bootstrap: Option<&str>) -> PeerSpec {
    PeerSpec {
        secret: Some(secret.to_string()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default(),
        env: vec![("CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(), ipfs_api)],
    }
}

/// An IPFS API address where nothing listens: a daemon that is down.
pub fn nothing_listening() -> String {
    format!("/ip4/127.0.0.1/tcp/{}", super::fixed_port())
}

/// Runs the `pincluster` client against the REST API at `api`
/// (`http://127.0.0.1:<port>`): exit code, stdout, stderr.
pub fn client(api: &str, args: &[&str]) -> (i32, String, String) {
    let port = api.rsplit(':').next().unwrap();
    let out = Command::new(BIN)
        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .args(args)
        .output()
        .expect("run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where a program is, or a panic that says how to install it.
fn program(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` not found on PATH: run .ci/install-system (Debian package {package})")
    })
}

/// `dot -T<format>` of `source`: the rendered bytes. Panics with dot's
/// complaint when it cannot parse the input.
pub fn graphviz(source: &str, format: &str) -> Vec<u8> {
    let mut child = Command::new(program("dot", "graphviz"))
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dot");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(source.as_bytes())
        .expect("feed dot");
    let out = child.wait_with_output().expect("run dot");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dot -T{format} rejected the graph: {}\n{source}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Where tests keep what a person may want to look at after a run.
pub fn artifact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Freezes (SIGSTOP) or thaws (SIGCONT) process `pid`, and waits until the
/// kernel says it is so: a signal is delivered when the process is next
/// scheduled, and a busy process may answer one more request before.
pub async fn set_stopped(pid: u32, stopped: bool) {
    let signal = if stopped { "-STOP" } else { "-CONT" };
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
    let what = format!(
        "process {pid} to be {}",
        if stopped { "stopped" } else { "running" }
    );
    super::wait_for(&what, super::DEADLINE, || async move {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let state = status.lines().find(|l| l.starts_with("State:"))?;
        (state.contains("(stopped)") == stopped).then_some(())
    })
    .await;
}

/// Headless Chromium on `url` with the flags this machine needs (no
/// sandbox as root, no GPU, no background traffic to the closed network),
/// a fresh profile, and `extra` (`--dump-dom`, `--screenshot=...`).
/// Virtual time lets the page's scripts fetch and render before Chromium
/// reports. Returns stdout.
pub fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("a Chromium profile folder");
    let out = Command::new(program("chromium", "chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
