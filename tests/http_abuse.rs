//! Clients that send abusive requests and leave: the peer must close its
//! side of every such connection (no socket left in CLOSE-WAIT, no
//! descriptor held), however long the handler would have waited.
//!
//! The IPFS daemon here is a black hole (it accepts and reads, and never
//! answers): `/add` and `repo/gc` then wait as long as a hung Kubo would
//! make them, which is what turned the connections below into permanent
//! CLOSE-WAITs before the server watched for hang-ups (issue 14).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The first line of each request a [`black_hole`] holds open.
type Held = Arc<Mutex<Vec<(u64, String)>>>;

/// An "IPFS daemon" that takes every request and never replies; the
/// requests it holds (connections still open) are in the returned list.
async fn black_hole() -> (String, Held) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held: Held = Arc::default();
    let list = held.clone();
    tokio::spawn(async move {
        let mut next = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            next += 1;
            let (id, held) = (next, held.clone());
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let mut first = true;
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if first {
                        let head = String::from_utf8_lossy(&buf[..n]);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        held.lock().unwrap().push((id, line));
                        first = false;
                    }
                }
                held.lock().unwrap().retain(|(i, _)| *i != id);
            });
        }
    });
    (format!("/ip4/127.0.0.1/tcp/{port}"), list)
}

/// Sockets of the peer's process on local `port` in TCP state `state`
/// (the hex code of `/proc/<pid>/net/tcp`).
fn sockets_in(pid: u32, port: u16, state: &str) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && cols.get(3) == Some(&state)
        })
        .count()
}

/// Sockets in CLOSE-WAIT: the client closed, the peer did not.
fn close_waits(pid: u32, port: u16) -> usize {
    sockets_in(pid, port, "08")
}

/// Open (ESTABLISHED) connections.
fn established(pid: u32, port: u16) -> usize {
    sockets_in(pid, port, "01")
}

/// The abusive requests, by name: each is sent whole, then the client
/// waits for the peer to have read it and closes.
fn abuses() -> Vec<(&'static str, Vec<u8>)> {
    let part = b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\nhello\r\n--X--\r\n";
    let add = |extra: &str, body: &[u8], after: &[u8]| {
        let mut req = format!(
            "POST /add HTTP/1.1\r\nHost: a\r\n\
             Content-Type: multipart/form-data; boundary=X\r\n{extra}\r\n"
        )
        .into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(after);
        req
    };
    let length = format!("Content-Length: {}\r\n", part.len());
    vec![
        // A whole add, then a pipelined request: the buffered request
        // hides the FIN from hyper while the add waits on the daemon.
        (
            "add + pipelined request",
            add(&length, part, b"GET /id HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        ("add + junk after the body", add(&length, part, b"x")),
        (
            "add, body cut short",
            add("Content-Length: 500\r\n", part, b""),
        ),
        (
            "add, Expect: 100-continue and no body",
            add("Content-Length: 500\r\nExpect: 100-continue\r\n", b"", b""),
        ),
        (
            "add, chunked body never ended",
            add(
                "Transfer-Encoding: chunked\r\n",
                format!("{:x}\r\n", part.len()).as_bytes(),
                part,
            ),
        ),
        (
            "add, broken chunk size",
            add("Transfer-Encoding: chunked\r\n", b"zz\r\n", b""),
        ),
        // The handler waits on the daemon before it reads its body: hyper
        // reads nothing meanwhile.
        (
            "repo gc with a body cut short",
            b"POST /ipfs/gc HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab".to_vec(),
        ),
        (
            "pipelined junk",
            b"GET /id HTTP/1.1\r\nHost: a\r\n\r\nxx".to_vec(),
        ),
        (
            "HTTP/2 prior knowledge",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        ("half a head", b"GET /id HTTP/1.1\r\nHost: a\r\n".to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_mid_request_leave_no_socket_behind() {
    let (ipfs, held) = black_hole().await;
    let dir = temp();
    let spec = PeerSpec {
        env: vec![
            ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(), ipfs.clone()),
            ("CLUSTER_IPFSPROXY_NODEMULTIADDRESS".into(), ipfs),
        ],
        ..PeerSpec::default()
    };
    let peer = TestPeer::start(dir.path().into(), spec).await;
    let pid = peer.pid().unwrap();
    let port: u16 = peer.api.rsplit(':').next().unwrap().parse().unwrap();
    let fds_before = open_fds(pid);

    const ROUNDS: usize = 4;
    for (name, request) in abuses() {
        for _ in 0..ROUNDS {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(&request).await.unwrap();
            // Until the peer has taken the bytes in (its socket's receive
            // queue is empty), so the hang-up comes mid-request.
            wait_for(&format!("{name}: request read"), DEADLINE, || async {
                let client = s.local_addr().unwrap().port();
                (unread(pid, port, client) == Some(0)).then_some(())
            })
            .await;
            drop(s);
        }
    }
    wait_for(
        "the peer to close every connection its clients left",
        DEADLINE,
        || async { (close_waits(pid, port) == 0).then_some(()) },
    )
    .await;
    // The handlers went with their clients, and so did their requests to
    // the daemon (an add has no overall timeout: it would wait for ever).
    wait_for("the adds and gcs dropped", DEADLINE, || async {
        let held = held.lock().unwrap();
        let stuck = held
            .iter()
            .filter(|(_, line)| line.contains("/api/v0/add") || line.contains("/api/v0/repo/gc"))
            .count();
        (stuck == 0).then_some(())
    })
    .await;
    // Descriptors are back to where they were, but for the peer's own
    // calls (`id`, metrics) that the daemon holds.
    wait_for("descriptors back to normal", DEADLINE, || async {
        let own_calls = held.lock().unwrap().len();
        (open_fds(pid) <= fds_before + own_calls + 2).then_some(())
    })
    .await;
    // And the API still answers.
    assert!(peer.get_json("/version").await.is_some());
}

/// Bytes waiting in the receive queue of the peer's socket from
/// `remote_port` to `local_port` (`None` until the socket shows up).
fn unread(pid: u32, local_port: u16, remote_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let port = |c: &str| u16::from_str_radix(c.rsplit(':').next()?, 16).ok();
        if port(cols.get(1)?) != Some(local_port) || port(cols.get(2)?) != Some(remote_port) {
            return None;
        }
        let rx_queue = cols.get(4)?.split(':').nth(1)?;
        u64::from_str_radix(rx_queue, 16).ok()
    })
}

/// A client that sends a request head one byte at a time, `pause` apart,
/// and never finishes it (slowloris); returns once the peer closed the
/// connection (a read gives EOF or a write fails).
async fn trickle_until_closed(port: u16, pause: Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = b"GET /version HTTP/1.1\r\nHost: a\r\nX-Slow: ";
    let mut bytes = head.iter().copied().chain(std::iter::repeat(b'a'));
    let mut buf = [0u8; 512];
    loop {
        let byte = bytes.next().unwrap();
        if s.write_all(&[byte]).await.is_err() {
            return;
        }
        // The peer's answer (a 408, or nothing) and its FIN end the client.
        if let Ok(read) = tokio::time::timeout(pause, s.read(&mut buf)).await {
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Slow clients, on both APIs: heads sent a byte at a time and never
/// finished are cut off by `read_header_timeout` (Go's limit, 2 s here),
/// whatever the trickle, so a crowd of them cannot hold the peer's
/// descriptors; meanwhile the API answers others, and a slow client whose
/// head arrives within the limit gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_header_timeout() {
    let (ipfs, _held) = black_hole().await;
    let dir = temp();
    let spec = PeerSpec {
        env: vec![
            ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS".into(), ipfs.clone()),
            ("CLUSTER_IPFSPROXY_NODEMULTIADDRESS".into(), ipfs),
            ("CLUSTER_RESTAPI_READHEADERTIMEOUT".into(), "2s".into()),
            ("CLUSTER_IPFSPROXY_READHEADERTIMEOUT".into(), "2s".into()),
        ],
        ..PeerSpec::default()
    };
    let peer = TestPeer::start(dir.path().into(), spec).await;
    let pid = peer.pid().unwrap();
    let rest: u16 = peer.api.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = peer.proxy_port();
    let fds_before = open_fds(pid);

    const CROWD: usize = 50;
    let mut crowd = Vec::new();
    for i in 0..2 * CROWD {
        let port = if i % 2 == 0 { rest } else { proxy };
        crowd.push(tokio::spawn(trickle_until_closed(
            port,
            Duration::from_millis(300),
        )));
    }
    wait_for("the slow crowd connected", DEADLINE, || async {
        (established(pid, rest) + established(pid, proxy) >= 2 * CROWD).then_some(())
    })
    .await;
    // The API still serves while the crowd trickles.
    assert!(peer.get_json("/version").await.is_some());

    // A slow client within the limit: its head, a byte every 10 ms, is whole
    // well before 2 s.
    let mut s = TcpStream::connect(("127.0.0.1", rest)).await.unwrap();
    for byte in b"GET /version HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" {
        s.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "slow but whole request: {answer}"
    );
    assert!(answer.contains("\"version\""), "{answer}");

    // Every trickling client is cut off (the trickle alone would go on for
    // ever), and the peer holds none of their sockets afterwards.
    let cut = tokio::time::timeout(DEADLINE, futures::future::join_all(crowd)).await;
    assert!(
        cut.is_ok(),
        "slow clients still connected after {DEADLINE:?}"
    );
    wait_for(
        "the peer to release the slow clients' sockets",
        DEADLINE,
        || async {
            let open = established(pid, rest) + established(pid, proxy);
            let waits = close_waits(pid, rest) + close_waits(pid, proxy);
            // One open connection is the harness's own keep-alive client.
            (open <= 1 && waits == 0 && open_fds(pid) <= fds_before + 2).then_some(())
        },
    )
    .await;
    assert!(peer.get_json("/version").await.is_some());
}
