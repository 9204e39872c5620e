//! Streamed replies, one JSON value per line, decoded as bytes arrive.
//!
//! Kubo and js-ipfs both end every streamed value with a newline. The
//! buffer only ever holds the line being received, plus the rest of the
//! chunk it came in, and refuses lines longer than a limit, so a listing of
//! millions of pins runs in constant memory.

use serde::de::DeserializeOwned;

use super::IpfsError;

/// The largest single JSON value we accept. The big one is js-ipfs's
/// non-streamed `pin/ls` (`{"Keys":{...}}`, ~70 bytes a pin); every other
/// line is under a kilobyte.
pub(super) const MAX_LINE: usize = 256 << 20;

/// Bytes received but not yet decoded.
#[derive(Debug)]
pub(super) struct LineBuf {
    op: &'static str,
    limit: usize,
    buf: Vec<u8>,
    /// Where the first undecoded line starts.
    start: usize,
    /// How far a newline has been looked for, so a long line arriving in
    /// many chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl LineBuf {
    pub(super) fn new(op: &'static str, limit: usize) -> Self {
        LineBuf {
            op,
            limit,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
        }
    }

    /// Appends a chunk. Decoded lines are dropped here rather than one by
    /// one, so each byte is moved at most once per chunk.
    pub(super) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete, non-blank line, without its newline.
    pub(super) fn next_line(&mut self) -> Result<Option<&[u8]>, IpfsError> {
        loop {
            let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.limit {
                    return Err(self.too_long());
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            let line_start = self.start;
            self.start = end + 1;
            self.scanned = self.start;
            if end - line_start > self.limit {
                return Err(self.too_long());
            }
            if !is_blank(&self.buf[line_start..end]) {
                return Ok(Some(&self.buf[line_start..end]));
            }
        }
    }

    /// What is left at the end of the reply: a last value without a
    /// trailing newline, if any.
    pub(super) fn finish(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        self.start = self.buf.len();
        self.scanned = self.start;
        (!is_blank(rest)).then_some(rest)
    }

    fn too_long(&self) -> IpfsError {
        IpfsError::Decode {
            op: self.op,
            detail: format!("a reply line is longer than {} bytes", self.limit),
        }
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Decodes one line as `T`, naming the command on failure.
pub(super) fn decode<T: DeserializeOwned>(op: &'static str, line: &[u8]) -> Result<T, IpfsError> {
    serde_json::from_slice(line).map_err(|e| IpfsError::Decode {
        op,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(buf: &mut LineBuf) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = buf.next_line().unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut buf = LineBuf::new("test", 100);
        buf.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(drain(&mut buf), ["{\"a\":1}"]);
        buf.push(b":2}\n\n  \n{\"c\":3}");
        assert_eq!(drain(&mut buf), ["{\"b\":2}"]);
        assert_eq!(buf.finish(), Some(&b"{\"c\":3}"[..]));
        assert_eq!(buf.finish(), None);
    }

    #[test]
    fn every_byte_split_gives_the_same_lines() {
        let text = b"{\"x\":1}\n{\"y\":[1,2,3]}\n\n{\"z\":\"w\"}\n";
        for cut in 0..text.len() {
            let mut buf = LineBuf::new("test", 100);
            buf.push(&text[..cut]);
            let mut lines = drain(&mut buf);
            buf.push(&text[cut..]);
            lines.extend(drain(&mut buf));
            assert_eq!(lines, ["{\"x\":1}", "{\"y\":[1,2,3]}", "{\"z\":\"w\"}"]);
            assert_eq!(buf.finish(), None);
        }
    }

    #[test]
    fn an_overlong_line_is_refused_before_its_end_arrives() {
        let mut buf = LineBuf::new("pin/ls", 8);
        buf.push(b"ok\n0123456789");
        assert_eq!(buf.next_line().unwrap(), Some(&b"ok"[..]));
        let err = buf.next_line().unwrap_err();
        assert!(
            matches!(err, IpfsError::Decode { op: "pin/ls", .. }),
            "{err}"
        );
    }

    #[test]
    fn decode_names_the_command() {
        let err = decode::<serde_json::Value>("id", b"{nope").unwrap_err();
        assert!(matches!(err, IpfsError::Decode { op: "id", .. }));
    }
}
