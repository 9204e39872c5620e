//! Bytes per libp2p protocol, for `GET /health/bandwidth`.
//!
//! rust-libp2p counts bandwidth per transport (libp2p-metrics), never per
//! stream protocol: the muxer hands out substreams before multistream-select
//! has named their protocol, and the negotiated [`libp2p::Stream`] cannot
//! be wrapped. So [`CountingMuxer`] wraps the muxer and each substream, and
//! reads the protocol off the multistream-select exchange that opens every
//! substream (the dialer proposes, the listener echoes what it accepts or
//! says `na`). Every byte of the substream counts for that protocol, the
//! negotiation included; Yamux framing, Noise and the private network's
//! overhead do not, nor do the bytes of a substream whose negotiation
//! failed. This is what go-libp2p's `BandwidthCounter` reports per
//! protocol ID.
//!
//! Rates are exponentially weighted moving averages over one-second ticks
//! (as go-flow-metrics keeps them), computed when asked rather than by a
//! timer: the ticks elapsed since the last reading are applied at once.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use serde::Serialize;

/// One rate tick.
const TICK: Duration = Duration::from_secs(1);
/// Weight of the newest tick: a time constant of two ticks.
fn alpha() -> f64 {
    1.0 - (-0.5f64).exp()
}
/// A multistream-select message longer than this is not one: stop looking.
const MAX_FRAME: usize = 1024;
const HEADER: &[u8] = b"/multistream/1.0.0";
const NA: &[u8] = b"na";

/// Traffic of one protocol as `GET /health/bandwidth` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProtocolBandwidth {
    /// Bytes received.
    pub total_in: u64,
    /// Bytes sent.
    pub total_out: u64,
    /// Bytes received per second, recently.
    pub rate_in: f64,
    /// Bytes sent per second, recently.
    pub rate_out: f64,
}

/// The counters of every protocol seen. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Bandwidth {
    protocols: Arc<RwLock<HashMap<String, Arc<Counter>>>>,
}

#[derive(Debug)]
struct Counter {
    total_in: AtomicU64,
    total_out: AtomicU64,
    rates: Mutex<Rates>,
}

#[derive(Debug)]
struct Rates {
    last: Instant,
    last_in: u64,
    last_out: u64,
    rate_in: f64,
    rate_out: f64,
}

impl Counter {
    fn new(now: Instant) -> Self {
        Self {
            total_in: AtomicU64::new(0),
            total_out: AtomicU64::new(0),
            rates: Mutex::new(Rates {
                last: now,
                last_in: 0,
                last_out: 0,
                rate_in: 0.0,
                rate_out: 0.0,
            }),
        }
    }

    fn add(&self, read: u64, written: u64) {
        if read > 0 {
            self.total_in.fetch_add(read, Ordering::Relaxed);
        }
        if written > 0 {
            self.total_out.fetch_add(written, Ordering::Relaxed);
        }
    }

    /// The totals, and the rates after the ticks elapsed by `now`. The
    /// bytes since the last reading are spread evenly over those ticks.
    fn read(&self, now: Instant) -> ProtocolBandwidth {
        let total_in = self.total_in.load(Ordering::Relaxed);
        let total_out = self.total_out.load(Ordering::Relaxed);
        // A poisoned lock only means another reader panicked mid-update;
        // the rates are still numbers.
        let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let ticks = (now.saturating_duration_since(r.last).as_secs_f64() / TICK.as_secs_f64())
            .floor() as u32;
        if ticks > 0 {
            let keep = (1.0 - alpha()).powi(ticks.min(1000) as i32);
            let per_tick = |delta: u64| delta as f64 / f64::from(ticks) / TICK.as_secs_f64();
            r.rate_in = r.rate_in * keep + per_tick(total_in - r.last_in) * (1.0 - keep);
            r.rate_out = r.rate_out * keep + per_tick(total_out - r.last_out) * (1.0 - keep);
            r.last += TICK * ticks;
            r.last_in = total_in;
            r.last_out = total_out;
        }
        ProtocolBandwidth {
            total_in,
            total_out,
            rate_in: r.rate_in,
            rate_out: r.rate_out,
        }
    }
}

impl Bandwidth {
    /// Every protocol's traffic now, by protocol ID.
    pub fn snapshot(&self) -> BTreeMap<String, ProtocolBandwidth> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> BTreeMap<String, ProtocolBandwidth> {
        let protocols = self.protocols.read().unwrap_or_else(|e| e.into_inner());
        protocols
            .iter()
            .map(|(name, counter)| (name.clone(), counter.read(now)))
            .collect()
    }

    fn counter(&self, protocol: &str) -> Arc<Counter> {
        if let Some(c) = self
            .protocols
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(protocol)
        {
            return c.clone();
        }
        self.protocols
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(protocol.to_string())
            .or_insert_with(|| Arc::new(Counter::new(Instant::now())))
            .clone()
    }
}

/// A muxer whose substreams count their bytes per protocol.
#[derive(Debug)]
pub struct CountingMuxer<M> {
    inner: M,
    bandwidth: Bandwidth,
}

impl<M> CountingMuxer<M> {
    /// Wraps `inner`, counting into `bandwidth`.
    pub fn new(inner: M, bandwidth: Bandwidth) -> Self {
        Self { inner, bandwidth }
    }
}

impl<M> StreamMuxer for CountingMuxer<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = CountingStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_inbound(cx)
            .map_ok(|s| CountingStream::new(s, Role::Listener, this.bandwidth.clone()))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_outbound(cx)
            .map_ok(|s| CountingStream::new(s, Role::Dialer, this.bandwidth.clone()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// Which side opened the substream: the dialer proposes protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialer,
    Listener,
}

/// A substream that counts its bytes: held back until multistream-select
/// names the protocol, then added to that protocol's counter.
#[derive(Debug)]
pub struct CountingStream<S> {
    inner: S,
    bandwidth: Bandwidth,
    state: Sniff,
    held_in: u64,
    held_out: u64,
}

#[derive(Debug)]
enum Sniff {
    /// Still negotiating.
    Negotiating(Box<Negotiation>),
    /// The protocol is known.
    Counting(Arc<Counter>),
    /// Not multistream-select, or refused: nothing is counted.
    Unknown,
}

/// The two directions of a negotiation, parsed one message at a time.
#[derive(Debug)]
struct Negotiation {
    role: Role,
    /// Bytes of an incomplete message, per direction.
    proposing: Vec<u8>,
    answering: Vec<u8>,
    /// The protocol proposed and not yet answered.
    proposal: Option<Vec<u8>>,
}

/// What one complete message of the negotiation decided.
enum Step {
    Continue,
    Agreed(Vec<u8>),
    Failed,
}

impl Negotiation {
    /// Feeds bytes travelling from the dialer to the listener (`proposing`)
    /// or back.
    fn feed(&mut self, proposing: bool, mut bytes: &[u8]) -> Step {
        loop {
            // After a proposal, the proposer's further bytes are the
            // protocol's own data (multistream-select's lazy mode) until
            // the answer says `na`.
            if proposing && self.proposal.is_some() {
                return Step::Continue;
            }
            let buf = if proposing {
                &mut self.proposing
            } else {
                &mut self.answering
            };
            let message = match take_frame(buf, &mut bytes) {
                Ok(Some(m)) => m,
                Ok(None) => return Step::Continue,
                Err(()) => return Step::Failed,
            };
            if message == HEADER {
                continue;
            }
            if proposing {
                self.proposal = Some(message);
                continue;
            }
            match self.proposal.take() {
                Some(p) if p == message => return Step::Agreed(p),
                Some(_) if message == NA => {
                    // Refused: the next proposal follows.
                    self.proposing.clear();
                }
                _ => return Step::Failed,
            }
        }
    }
}

/// Moves bytes from `input` into `buf` until one frame (`uvarint length`,
/// message, `\n`) is complete; returns the message without its newline.
fn take_frame(buf: &mut Vec<u8>, input: &mut &[u8]) -> Result<Option<Vec<u8>>, ()> {
    loop {
        if let Some((len, prefix)) = frame_len(buf)? {
            if len == 0 || len > MAX_FRAME {
                return Err(());
            }
            let total = prefix + len;
            let missing = total.saturating_sub(buf.len());
            let n = missing.min(input.len());
            buf.extend_from_slice(&input[..n]);
            *input = &input[n..];
            if buf.len() < total {
                return Ok(None);
            }
            let message = buf[prefix..total].to_vec();
            buf.clear();
            return match message.split_last() {
                Some((b'\n', text)) => Ok(Some(text.to_vec())),
                _ => Err(()),
            };
        }
        let Some((&b, rest)) = input.split_first() else {
            return Ok(None);
        };
        buf.push(b);
        *input = rest;
    }
}

/// The length prefix of `buf`, once complete: (length, prefix bytes).
fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    let mut len = 0usize;
    for (i, &b) in buf.iter().enumerate() {
        if i >= 2 {
            return Err(()); // multistream-select lengths fit two bytes
        }
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((len, i + 1)));
        }
    }
    Ok(None)
}

impl<S> CountingStream<S> {
    fn new(inner: S, role: Role, bandwidth: Bandwidth) -> Self {
        Self {
            inner,
            bandwidth,
            state: Sniff::Negotiating(Box::new(Negotiation {
                role,
                proposing: Vec::new(),
                answering: Vec::new(),
                proposal: None,
            })),
            held_in: 0,
            held_out: 0,
        }
    }

    /// Counts bytes read (`incoming`) or written, watching the negotiation
    /// while it lasts.
    fn count(&mut self, incoming: bool, bytes: &[u8]) {
        match &mut self.state {
            Sniff::Counting(counter) => {
                let n = bytes.len() as u64;
                if incoming {
                    counter.add(n, 0);
                } else {
                    counter.add(0, n);
                }
            }
            Sniff::Unknown => {}
            Sniff::Negotiating(negotiation) => {
                if incoming {
                    self.held_in += bytes.len() as u64;
                } else {
                    self.held_out += bytes.len() as u64;
                }
                let proposing = incoming == (negotiation.role == Role::Listener);
                match negotiation.feed(proposing, bytes) {
                    Step::Continue => {}
                    Step::Failed => self.state = Sniff::Unknown,
                    Step::Agreed(protocol) => {
                        let counter = self.bandwidth.counter(&String::from_utf8_lossy(&protocol));
                        counter.add(self.held_in, self.held_out);
                        self.state = Sniff::Counting(counter);
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.count(true, &buf[..n]);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.count(false, &buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Vec<u8> {
        let len = text.len() + 1;
        let mut v = if len < 0x80 {
            vec![len as u8]
        } else {
            vec![(len as u8 & 0x7f) | 0x80, (len >> 7) as u8]
        };
        v.extend_from_slice(text.as_bytes());
        v.push(b'\n');
        v
    }

    fn stream(role: Role, bw: &Bandwidth) -> CountingStream<()> {
        CountingStream::new((), role, bw.clone())
    }

    #[test]
    fn a_dialer_counts_its_stream_under_the_protocol_the_listener_accepts() {
        let bw = Bandwidth::default();
        let mut s = stream(Role::Dialer, &bw);
        // Lazy mode: header, proposal and data in one write.
        let mut out = frame("/multistream/1.0.0");
        out.extend(frame("/meshsub/1.1.0"));
        out.extend(b"payload!");
        s.count(false, &out);
        // The answer arrives split at odd places.
        let mut back = frame("/multistream/1.0.0");
        back.extend(frame("/meshsub/1.1.0"));
        back.extend(b"reply");
        let (a, b) = back.split_at(3);
        s.count(true, a);
        assert!(bw.snapshot().is_empty(), "nothing is named before the echo");
        s.count(true, b);
        s.count(false, b"more");
        let snap = bw.snapshot();
        let meshsub = snap["/meshsub/1.1.0"];
        assert_eq!(meshsub.total_out, out.len() as u64 + 4);
        assert_eq!(meshsub.total_in, back.len() as u64);
    }

    #[test]
    fn a_listener_follows_refusals_to_the_accepted_protocol() {
        let bw = Bandwidth::default();
        let mut s = stream(Role::Listener, &bw);
        s.count(true, &[frame("/multistream/1.0.0"), frame("/a/2")].concat());
        s.count(false, &[frame("/multistream/1.0.0"), frame("na")].concat());
        s.count(true, &frame("/a/1"));
        s.count(false, &frame("/a/1"));
        s.count(true, &[1u8; 100]);
        let snap = bw.snapshot();
        assert_eq!(snap.keys().collect::<Vec<_>>(), vec!["/a/1"]);
        // Length byte + text + newline per message, then the data.
        assert_eq!(snap["/a/1"].total_in, 20 + 6 + 6 + 100);
    }

    #[test]
    fn garbage_is_not_counted_and_never_panics() {
        let bw = Bandwidth::default();
        for junk in [
            &[0xffu8, 0xff, 0xff][..],
            &[5, b'a', b'b', b'c', b'd', b'e'],
            &[0],
        ] {
            let mut s = stream(Role::Listener, &bw);
            s.count(true, junk);
            s.count(false, junk);
            assert!(matches!(s.state, Sniff::Unknown));
        }
        let mut s = stream(Role::Dialer, &bw);
        s.count(false, &frame("/p"));
        s.count(true, &frame("/other"));
        assert!(matches!(s.state, Sniff::Unknown));
        assert!(bw.snapshot().is_empty());
    }

    #[test]
    fn rates_follow_the_traffic_tick_by_tick_and_decay() {
        let bw = Bandwidth::default();
        let counter = bw.counter("/p");
        let start = counter.rates.lock().unwrap().last;
        // 1000 B/s for ten seconds: the rate converges to 1000.
        for second in 1..=10 {
            counter.add(1000, 0);
            let r = bw.snapshot_at(start + TICK * second)["/p"];
            assert!(r.rate_in > 0.0 && r.rate_in <= 1000.0, "{r:?}");
        }
        let steady = bw.snapshot_at(start + TICK * 10)["/p"];
        assert!((steady.rate_in - 1000.0).abs() < 20.0, "{steady:?}");
        assert_eq!(steady.total_in, 10_000);
        assert_eq!(steady.rate_out, 0.0);
        // Then silence: it decays towards zero, totals unchanged.
        let idle = bw.snapshot_at(start + TICK * 20)["/p"];
        assert!(idle.rate_in < 10.0, "{idle:?}");
        assert_eq!(idle.total_in, 10_000);
    }
}
