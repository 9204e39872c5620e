//! Newline-delimited JSON, read as bytes arrive: the one line splitter of
//! every streamed reply we read (the IPFS daemon's for the connector and
//! the proxy, the cluster's REST API for the client).
//!
//! Kubo, js-ipfs and ipfs-cluster (Go's `json.Encoder`) all end every
//! streamed value with a newline, so lines are cut on `\n` alone; blank
//! lines are skipped. The buffer only ever holds the line being received,
//! plus the rest of the chunk it came in, and refuses a line longer than
//! [`MAX_LINE`] before its end arrives, so a listing of millions of pins
//! runs in constant memory and a reply that never ends a line cannot
//! exhaust it.

use std::ops::Range;

/// The longest line we accept, in bytes. The biggest legitimate one is
/// js-ipfs's non-streamed `pin/ls` (`{"Keys":{...}}`, ~70 bytes a pin);
/// every other line of the daemon or the cluster is under a megabyte.
pub const MAX_LINE: usize = 256 << 20;

/// A line went over the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a line is longer than {limit} bytes")]
pub struct LineTooLong {
    /// The limit it went over.
    pub limit: usize,
}

/// Why [`ResponseLines::next_line`] gave no line.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A line went over [`MAX_LINE`].
    #[error(transparent)]
    TooLong(#[from] LineTooLong),
    /// The connection broke off in the middle of the reply.
    #[error("the connection broke off: {0}")]
    Transport(#[source] reqwest::Error),
    /// An in-process reply ended with an error (its `X-Stream-Error`).
    #[error("{0}")]
    Stream(String),
}

/// Bytes received but not yet handed out as lines.
#[derive(Debug)]
pub struct LineSplitter {
    limit: usize,
    buf: Vec<u8>,
    /// Where the first line not yet handed out starts.
    start: usize,
    /// How far a newline has been looked for, so a long line arriving in
    /// many chunks is scanned once, not once per chunk.
    scanned: usize,
}

/// A splitter refusing lines over [`MAX_LINE`].
impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::with_limit(MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter refusing lines over `limit` bytes; tests use small
    /// limits, everything else [`MAX_LINE`] through `default()`.
    fn with_limit(limit: usize) -> Self {
        LineSplitter {
            limit,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
        }
    }

    /// Appends a chunk. Lines handed out are dropped here rather than one
    /// by one, so each byte is moved at most once per chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete, non-blank line, without its newline; `None`
    /// until more bytes arrive.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineTooLong> {
        Ok(self.next_range()?.map(|r| &self.buf[r]))
    }

    /// What is left at the end of the reply: a last line without a
    /// trailing newline, if any.
    pub fn finish(&mut self) -> Result<Option<&[u8]>, LineTooLong> {
        let rest = self.start..self.buf.len();
        self.start = self.buf.len();
        self.scanned = self.start;
        if rest.len() > self.limit {
            return Err(self.too_long());
        }
        Ok((!is_blank(&self.buf[rest.clone()])).then(|| &self.buf[rest]))
    }

    /// [`Self::next_line`] as a range, so that a caller that reads more
    /// bytes when there is no line can borrow the buffer only on success.
    fn next_range(&mut self) -> Result<Option<Range<usize>>, LineTooLong> {
        loop {
            let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.limit {
                    return Err(self.too_long());
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            let line = self.start..end;
            self.start = end + 1;
            self.scanned = self.start;
            if line.len() > self.limit {
                return Err(self.too_long());
            }
            if !is_blank(&self.buf[line.clone()]) {
                return Ok(Some(line));
            }
        }
    }

    fn too_long(&self) -> LineTooLong {
        LineTooLong { limit: self.limit }
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// The lines of an HTTP reply, read chunk by chunk as they are asked for.
#[derive(Debug)]
pub struct ResponseLines {
    res: Source,
    lines: LineSplitter,
    ended: bool,
}

/// A reply received over HTTP, or one made in this process (the embedded
/// node answering the proxy without a loopback hop).
enum Source {
    Http(reqwest::Response),
    Local(LocalBody),
}

/// A reply body made in this process.
pub type LocalBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http(res) => res.fmt(f),
            Source::Local(_) => f.write_str("Local"),
        }
    }
}

impl Source {
    /// The next chunk of the body; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ReadError> {
        use http_body_util::BodyExt as _;
        let body = match self {
            Source::Http(res) => return res.chunk().await.map_err(ReadError::Transport),
            Source::Local(body) => body,
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ReadError::Stream(e.to_string()))?;
            let trailers = match frame.into_data() {
                Ok(data) => return Ok(Some(data)),
                Err(frame) => frame.into_trailers().unwrap_or_default(),
            };
            // How Kubo (and the embedded node) report an error once the
            // status is sent.
            if let Some(e) = trailers.get("x-stream-error") {
                return Err(ReadError::Stream(
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                ));
            }
        }
        Ok(None)
    }
}

impl ResponseLines {
    /// Reads `res`, each line at most [`MAX_LINE`] bytes.
    pub fn new(res: reqwest::Response) -> Self {
        ResponseLines::of(Source::Http(res))
    }

    /// Reads a reply body made in this process; an `X-Stream-Error`
    /// trailer ends it with [`ReadError::Stream`].
    pub fn local(body: LocalBody) -> Self {
        ResponseLines::of(Source::Local(body))
    }

    fn of(res: Source) -> Self {
        ResponseLines {
            res,
            lines: LineSplitter::default(),
            ended: false,
        }
    }

    /// The next non-blank line, without its newline; `None` at the end of
    /// the reply (a last line needs no newline).
    pub async fn next_line(&mut self) -> Result<Option<&[u8]>, ReadError> {
        loop {
            if let Some(line) = self.lines.next_range()? {
                return Ok(Some(&self.lines.buf[line]));
            }
            if self.ended {
                return Ok(self.lines.finish()?);
            }
            match self.res.chunk().await? {
                Some(chunk) => self.lines.push(&chunk),
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(buf: &mut LineSplitter) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = buf.next_line().unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        out
    }

    /// The lines of `text` pushed as two chunks cut at `cut`, and the
    /// splitter, for what is left.
    fn in_two_chunks(text: &[u8], cut: usize) -> (Vec<String>, LineSplitter) {
        let mut buf = LineSplitter::with_limit(100);
        buf.push(&text[..cut]);
        let mut lines = drain(&mut buf);
        buf.push(&text[cut..]);
        lines.extend(drain(&mut buf));
        (lines, buf)
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut buf = LineSplitter::with_limit(100);
        buf.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(drain(&mut buf), ["{\"a\":1}"]);
        buf.push(b":2}\n\n  \n{\"c\":3}");
        assert_eq!(drain(&mut buf), ["{\"b\":2}"]);
        assert_eq!(buf.finish(), Ok(Some(&b"{\"c\":3}"[..])));
        assert_eq!(buf.finish(), Ok(None));
    }

    /// Whatever the chunks, the lines are the same: every split of the
    /// text into two chunks, and one byte per chunk.
    #[test]
    fn every_byte_boundary_gives_the_same_lines() {
        let text = b"{\"x\":1}\n{\"y\":[1,2,3]}\r\n\n \n{\"z\":\"w\"}\n";
        let want = ["{\"x\":1}", "{\"y\":[1,2,3]}\r", "{\"z\":\"w\"}"];
        for cut in 0..=text.len() {
            let (lines, mut buf) = in_two_chunks(text, cut);
            assert_eq!(lines, want, "cut at {cut}");
            assert_eq!(buf.finish(), Ok(None), "cut at {cut}");
        }
        let mut buf = LineSplitter::with_limit(100);
        let mut lines = Vec::new();
        for byte in text {
            buf.push(std::slice::from_ref(byte));
            lines.extend(drain(&mut buf));
        }
        assert_eq!(lines, want);
    }

    #[test]
    fn trailing_data_without_a_newline_is_the_last_line() {
        let text = b"{\"a\":1}\n{\"b\":2}";
        for cut in 0..=text.len() {
            let (lines, mut buf) = in_two_chunks(text, cut);
            assert_eq!(lines, ["{\"a\":1}"], "cut at {cut}");
            assert_eq!(buf.finish(), Ok(Some(&b"{\"b\":2}"[..])), "cut at {cut}");
        }
        let mut blank = LineSplitter::with_limit(100);
        blank.push(b"{}\n  \t");
        assert_eq!(drain(&mut blank), ["{}"]);
        assert_eq!(blank.finish(), Ok(None));
    }

    #[test]
    fn an_overlong_line_is_refused_before_its_end_arrives() {
        let mut buf = LineSplitter::with_limit(8);
        buf.push(b"ok\n0123456789");
        assert_eq!(buf.next_line(), Ok(Some(&b"ok"[..])));
        assert_eq!(buf.next_line(), Err(LineTooLong { limit: 8 }));
    }

    #[test]
    fn an_overlong_line_is_refused_in_any_position() {
        // Complete in one chunk, and as the unterminated last line.
        let mut whole = LineSplitter::with_limit(8);
        whole.push(b"0123456789\nok\n");
        assert_eq!(whole.next_line(), Err(LineTooLong { limit: 8 }));
        let mut last = LineSplitter::with_limit(8);
        last.push(b"ok\n012345678");
        assert_eq!(last.next_line(), Ok(Some(&b"ok"[..])));
        assert_eq!(last.next_line(), Err(LineTooLong { limit: 8 }));
        let mut at_end = LineSplitter::with_limit(8);
        at_end.push(b"ok\n01234567");
        assert_eq!(drain(&mut at_end), ["ok"]);
        at_end.push(b"8");
        assert_eq!(at_end.finish(), Err(LineTooLong { limit: 8 }));
        // A line of exactly the limit is fine.
        let mut exact = LineSplitter::with_limit(8);
        exact.push(b"01234567\n01234567");
        assert_eq!(drain(&mut exact), ["01234567"]);
        assert_eq!(exact.finish(), Ok(Some(&b"01234567"[..])));
    }

    #[test]
    fn malformed_bytes_are_lines_like_any_other() {
        // Not UTF-8, not JSON: splitting never judges content.
        let mut buf = LineSplitter::with_limit(100);
        buf.push(b"\xff\xfe{\n\0\n");
        assert_eq!(buf.next_line(), Ok(Some(&b"\xff\xfe{"[..])));
        assert_eq!(buf.next_line(), Ok(Some(&b"\0"[..])));
        assert_eq!(buf.next_line(), Ok(None));
    }
}
