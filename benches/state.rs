//! `state import` and `state export` of 1,000,000 pins (target: an import
//! in seconds, not minutes), run as a user runs them: the `pincluster`
//! binary on a configuration folder, timed from outside.
//!
//! Run: `cargo bench --bench state` (`PINCLUSTER_BENCH_PINS` for another
//! count). The export file holds realistic pins: a name, three allocations,
//! a timestamp, one metadata entry.
#![allow(clippy::print_stdout)] // the figures are a report for a human

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use pincluster::types::{Pin, PinOptions};

const BIN: &str = env!("CARGO_BIN_EXE_pincluster");

fn pins() -> usize {
    std::env::var("PINCLUSTER_BENCH_PINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// GNU time, when installed, reports the command's peak memory.
const GNU_TIME: &str = "/usr/bin/time";

/// Runs `pincluster ARGS --config DIR`; its wall time in seconds and, with
/// GNU time, its peak resident memory in MB.
fn run(args: &[&str], dir: &std::path::Path) -> (f64, Option<f64>) {
    let timed = std::path::Path::new(GNU_TIME).exists();
    let mut cmd = if timed {
        let mut c = Command::new(GNU_TIME);
        c.args(["-f", "peak-rss-kb=%M", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let start = Instant::now();
    let out = cmd
        .args(args)
        .arg("--config")
        .arg(dir)
        .output()
        .expect("run pincluster");
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kb="))
        .and_then(|kb| kb.trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0);
    (secs, rss)
}

fn mb(rss: Option<f64>) -> String {
    rss.map_or_else(String::new, |m| format!(", peak memory {m:.0} MB"))
}

fn main() {
    let n = pins();
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(BIN)
        .args(["init", "--no-secret", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success());

    let file = dir.path().join("pins.json");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let peers: Vec<libp2p::PeerId> = (0..3).map(|_| libp2p::PeerId::random()).collect();
    let now = chrono::Utc::now().fixed_offset();
    for i in 0..n {
        let digest = <sha2::Sha256 as sha2::Digest>::digest((i as u64).to_be_bytes());
        let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
        let mut pin = Pin::new(
            cid::Cid::new_v1(0x55, mh),
            PinOptions {
                replication_factor_min: 2,
                replication_factor_max: 3,
                name: format!("pin-{i}"),
                metadata: [("source".to_owned(), "bench".to_owned())].into(),
                ..PinOptions::default()
            },
        );
        pin.allocations = peers.clone();
        pin.timestamp = Some(now);
        serde_json::to_writer(&mut w, &pin).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let size = std::fs::metadata(&file).unwrap().len();
    let path = file.to_str().unwrap();

    let (import, import_rss) = run(&["state", "import", "--force", path], dir.path());
    let export_file = dir.path().join("out.json");
    let (export, export_rss) = run(
        &["state", "export", "--file", export_file.to_str().unwrap()],
        dir.path(),
    );
    let (reimport, _) = run(&["state", "import", "--force", path], dir.path());
    let exported = std::fs::read_to_string(&export_file)
        .unwrap()
        .lines()
        .count();
    assert_eq!(exported, n);
    println!(
        "state import of {n} pins ({:.0} MB of JSON): {import:.2} s ({:.0} pins/s){}",
        size as f64 / 1e6,
        n as f64 / import,
        mb(import_rss)
    );
    println!("state import again (replacing {n} pins): {reimport:.2} s");
    println!(
        "state export of {n} pins: {export:.2} s ({:.0} pins/s){}",
        n as f64 / export,
        mb(export_rss)
    );
}
