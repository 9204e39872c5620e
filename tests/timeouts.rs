//! The server timeouts of the REST API and the IPFS proxy against a real
//! `pincluster daemon`, with raw sockets: an idle keep-alive connection is
//! closed after `idle_timeout`, a request head that never ends after
//! `read_header_timeout`, a body trickled too slowly after `read_timeout`.
//! Each test waits on the socket for the server's close, under an outer
//! deadline: without the timeout, that deadline fails it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for the server to close: far above the timeouts
/// configured, far below "never".
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);

/// A peer whose REST API and proxy have short timeouts.
async fn impatient_peer(dir: &std::path::Path) -> TestPeer {
    let env = [
        ("CLUSTER_RESTAPI_READHEADERTIMEOUT", "1s"),
        ("CLUSTER_RESTAPI_READTIMEOUT", "3s"),
        ("CLUSTER_RESTAPI_IDLETIMEOUT", "1s"),
        ("CLUSTER_IPFSPROXY_READHEADERTIMEOUT", "1s"),
        ("CLUSTER_IPFSPROXY_IDLETIMEOUT", "1s"),
    ];
    TestPeer::start(dir.into(), PeerSpec::default().with_env(&env)).await
}

fn rest_addr(p: &TestPeer) -> String {
    p.api.trim_start_matches("http://").to_string()
}

fn proxy_addr(p: &TestPeer) -> String {
    format!("127.0.0.1:{}", p.proxy_port())
}

/// Reads one whole response (Content-Length or chunked) off a keep-alive
/// connection: its head and body.
async fn read_response(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let body = &text[end + 4..];
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let complete = match length {
                Some(n) => body.len() >= n,
                None => body.ends_with("0\r\n\r\n"),
            };
            if complete {
                return text;
            }
        }
        let n = tokio::time::timeout(CLOSE_DEADLINE, s.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Waits for the server to close `s`; what it sent before, and how long
/// that took. Panics if it stays open past the deadline.
async fn wait_closed(s: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(CLOSE_DEADLINE, s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    (String::from_utf8_lossy(&rest).into_owned(), start.elapsed())
}

/// A keep-alive connection serves a second request at once, then is
/// closed once idle for longer than `idle_timeout`.
async fn idle_connection_is_closed(addr: &str, request: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut asked = Instant::now();
    for _ in 0..2 {
        asked = Instant::now();
        s.write_all(request.as_bytes()).await.unwrap();
        let res = read_response(&mut s).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    }
    let (rest, _) = wait_closed(&mut s).await;
    assert_eq!(rest, "", "nothing more than the close");
    // Timed from the last request, sent before the server's idle time
    // began: a client slow to read the answer (a loaded machine) cannot
    // make a close on time look early.
    let idle = asked.elapsed();
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
}

/// A request head that never ends is closed without an answer.
async fn unfinished_head_is_closed(addr: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /id HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let (rest, _) = wait_closed(&mut s).await;
    assert_eq!(rest, "", "no answer to a head that never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_timeouts_close_idle_slow_and_unfinished_connections() {
    let dir = temp();
    let p = impatient_peer(dir.path()).await;
    let rest = rest_addr(&p);

    idle_connection_is_closed(&rest, "GET /version HTTP/1.1\r\nHost: a\r\n\r\n").await;
    unfinished_head_is_closed(&rest).await;

    // The head in time, then a body of 100 bytes, one byte every 200 ms:
    // cut at `read_timeout` (3 s from the start of the request), long
    // after the head's 1 s, and never answered with a success.
    let mut s = TcpStream::connect(&rest).await.unwrap();
    // Timed from before the head is sent, so the server's clock for the
    // request cannot have started earlier than this one.
    let start = Instant::now();
    s.write_all(b"POST /peers HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = s.into_split();
    let trickle = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        for _ in 0..100 {
            ticks.tick().await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSE_DEADLINE, reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the slow body kept the connection open");
    let took = start.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
    assert!(took >= Duration::from_secs(2), "cut after {took:?}");
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_timeouts_close_idle_and_unfinished_connections() {
    let dir = temp();
    let p = impatient_peer(dir.path()).await;
    let proxy = proxy_addr(&p);

    // `pin/ls` is answered by the cluster, no IPFS daemon needed.
    let ls = "POST /api/v0/pin/ls HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    idle_connection_is_closed(&proxy, ls).await;
    unfinished_head_is_closed(&proxy).await;
}
