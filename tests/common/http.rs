//! A raw HTTP/1.1 client for what reqwest hides: trailers, a body cut
//! short, oversized headers. One request per connection (`Connection:
//! close`), read to the end.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What came back, with the chunked body decoded.
#[derive(Debug, Default)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order, repeats kept.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Trailer fields, names lower-cased.
    pub trailers: Vec<(String, String)>,
    /// Whether a chunked body ended with its final empty chunk.
    pub complete: bool,
}

impl RawResponse {
    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).first().copied()
    }

    /// The first value of trailer `name`.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to `base` (`http://127.0.0.1:port`) with extra
/// header lines and reads the whole answer.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    request_with_body(base, method, path, headers, &[]).await
}

/// [`request`] with `body` sent after the headers (`Content-Length` added
/// when `headers` has none and the body is not empty or the method is POST
/// or PUT).
pub async fn request_with_body(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if (method == "POST" || method == "PUT" || !body.is_empty()) && !has_length {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write the body");
    let mut raw = Vec::new();
    // A cut body shows up as a reset or an early close: keep what arrived.
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw)).await;
    parse(&String::from_utf8_lossy(&raw))
}

fn parse(raw: &str) -> RawResponse {
    let mut out = RawResponse::default();
    let Some((head, rest)) = raw.split_once("\r\n\r\n") else {
        return out;
    };
    let mut lines = head.split("\r\n");
    out.status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    out.headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = out
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    if !chunked {
        out.body = rest.to_string();
        out.complete = true;
        return out;
    }
    let mut rest = rest;
    loop {
        let Some((size_line, after)) = rest.split_once("\r\n") else {
            return out;
        };
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return out;
        };
        if size == 0 {
            // Trailer fields up to the empty line.
            let Some((trailers, _)) = after.split_once("\r\n").map(|_| (after, ())) else {
                return out;
            };
            for line in trailers.split("\r\n") {
                if line.is_empty() {
                    out.complete = true;
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    out.trailers
                        .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            return out;
        }
        if after.len() < size + 2 {
            out.body.push_str(after);
            return out;
        }
        out.body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}
