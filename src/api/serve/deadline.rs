//! Go's `net/http` server timeouts on a hyper connection.
//!
//! Go sets deadlines on the connection: reads after the read deadline fail,
//! writes after the write deadline fail, and a failed read or write ends
//! the connection. Here a [`Clock`] per connection knows where the
//! connection is in its request cycle and computes those deadlines;
//! [`Timed`] (the socket, or the TLS stream) enforces them; [`ReqBody`] and
//! [`ResBody`] move the clock on as the request body is read through and
//! the response body is written out.
//!
//! | phase | read deadline | from |
//! |---|---|---|
//! | head (new connection, or first bytes after idle) | `read_header_timeout`, else `read_timeout` | its start |
//! | body (the handler runs, its body not read through) | `read_timeout` | the start of the head |
//! | responding (body read, response being written) | none | |
//! | idle (response written, keep-alive) | `idle_timeout`, else `read_timeout` | the end of the response |
//!
//! The write deadline is `write_timeout` from the end of the request head,
//! as in Go, so it bounds the whole response: a long NDJSON stream is cut
//! when it passes. One deviation: Go keeps the read deadline while the
//! response is written, which cancels long handlers once `read_timeout`
//! has passed; here `read_timeout` bounds reading the request only. With
//! no read deadline, a client that leaves mid-request is still noticed:
//! the socket itself is watched for its FIN ([`super::socket`]).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The four timeouts; `None` is Go's `0s`, no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, head and body.
    pub read: Option<Duration>,
    /// The request head.
    pub read_header: Option<Duration>,
    /// From the end of the request head to the end of the response.
    pub write: Option<Duration>,
    /// Between two requests of a keep-alive connection.
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// The timeouts of a config section; zero means none.
    pub fn new(read: Duration, read_header: Duration, write: Duration, idle: Duration) -> Self {
        let limit = |d: Duration| (!d.is_zero()).then_some(d);
        Timeouts {
            read: limit(read),
            read_header: limit(read_header),
            write: limit(write),
            idle: limit(idle),
        }
    }

    /// Go's TLS handshake limit: the smallest of the read, read header and
    /// write timeouts that are set.
    pub fn handshake(&self) -> Option<Duration> {
        [self.read, self.read_header, self.write]
            .into_iter()
            .flatten()
            .min()
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading a request head begun at this instant.
    Head(Instant),
    /// The handler runs; the request's head began at this instant.
    Body(Instant),
    Responding,
    /// Between requests since this instant.
    Idle(Instant),
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Which request the phase belongs to: a body dropped late (a proxy
    /// upload that outlives its answer) must not move the next request on.
    request: u64,
    write_deadline: Option<Instant>,
    /// The task whose read is pending. hyper polls its read before it
    /// writes the answer, and not again once the answer is out: the move
    /// to idle must wake it so that the idle deadline is armed.
    reader: Option<Waker>,
}

/// Where one connection is in its request cycle, and so its deadlines.
#[derive(Debug)]
pub struct Clock {
    timeouts: Timeouts,
    state: Mutex<State>,
}

impl Clock {
    /// The clock of a connection that starts reading its first head `now`.
    pub fn start(timeouts: Timeouts, now: Instant) -> Arc<Clock> {
        Arc::new(Clock {
            timeouts,
            state: Mutex::new(State {
                phase: Phase::Head(now),
                request: 0,
                write_deadline: timeouts.write.map(|w| now + w),
                reader: None,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_deadline(&self) -> Option<Instant> {
        let t = &self.timeouts;
        match self.state().phase {
            Phase::Head(start) => t.read_header.or(t.read).map(|d| start + d),
            Phase::Body(start) => t.read.map(|d| start + d),
            Phase::Responding => None,
            Phase::Idle(since) => t.idle.or(t.read).map(|d| since + d),
        }
    }

    fn write_deadline(&self) -> Option<Instant> {
        self.state().write_deadline
    }

    /// Bytes came in: after idle, they begin the next request's head.
    fn bytes_arrived(&self, now: Instant) {
        let mut s = self.state();
        if let Phase::Idle(_) = s.phase {
            s.phase = Phase::Head(now);
            // Fresh, for an error answer (400, 431) to a bad head.
            s.write_deadline = self.timeouts.write.map(|w| now + w);
        }
    }

    /// A request head was read (hyper calls the service): returns the
    /// request's number for its bodies.
    pub fn head_read(&self, body_empty: bool, now: Instant) -> u64 {
        let mut s = self.state();
        let start = match s.phase {
            Phase::Head(start) => start,
            // Pipelined: the head was already buffered.
            _ => now,
        };
        s.request += 1;
        s.phase = if body_empty {
            Phase::Responding
        } else {
            Phase::Body(start)
        };
        s.write_deadline = self.timeouts.write.map(|w| now + w);
        s.request
    }

    fn body_read(&self, request: u64) {
        let mut s = self.state();
        if s.request == request && matches!(s.phase, Phase::Body(_)) {
            s.phase = Phase::Responding;
        }
    }

    fn response_written(&self, request: u64, now: Instant) {
        let mut s = self.state();
        if s.request == request && matches!(s.phase, Phase::Body(_) | Phase::Responding) {
            s.phase = Phase::Idle(now);
            let reader = s.reader.take();
            drop(s);
            if let Some(reader) = reader {
                reader.wake();
            }
        }
    }

    fn park_reader(&self, waker: &Waker) {
        let mut s = self.state();
        match &s.reader {
            Some(w) if w.will_wake(waker) => {}
            _ => s.reader = Some(waker.clone()),
        }
    }
}

/// The connection's stream with the clock's deadlines: a read or write
/// past its deadline fails with `TimedOut`, which ends the connection.
#[derive(Debug)]
pub struct Timed<T> {
    io: T,
    clock: Arc<Clock>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Timed<T> {
    pub fn new(io: T, clock: Arc<Clock>) -> Self {
        Timed {
            io,
            clock,
            read_timer: None,
            write_timer: None,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} deadline passed"))
}

/// `Ready` with an error once `deadline` has passed. Like Go, an
/// operation started after its deadline fails even if it could proceed.
fn check(deadline: Option<Instant>, what: &str) -> Result<(), io::Error> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(timed_out(what)),
        _ => Ok(()),
    }
}

/// For an operation left pending: arms `timer` for `deadline` so that the
/// task wakes then; `Ready` if it already fired.
fn expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Option<Instant>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(deadline) = deadline else {
        return false;
    };
    let sleep = match timer {
        Some(sleep) => {
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            sleep
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    sleep.as_mut().poll(cx).is_ready()
}

impl<T: AsyncRead + Unpin> AsyncRead for Timed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = this.clock.read_deadline();
        check(deadline, "read")?;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_arrived(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if expired(&mut this.read_timer, deadline, cx) => {
                Poll::Ready(Err(timed_out("read")))
            }
            Poll::Pending => {
                this.clock.park_reader(cx.waker());
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> Timed<T> {
    fn write_op<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let deadline = self.clock.write_deadline();
        check(deadline, "write")?;
        match op(Pin::new(&mut self.io), cx) {
            Poll::Pending if expired(&mut self.write_timer, deadline, cx) => {
                Poll::Ready(Err(timed_out("write")))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Timed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_op(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_op(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_op(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing is not bounded by the write deadline: a connection cut
        // for passing it must still be able to close.
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request body that tells the clock when it has been read through, or
/// given up (dropped).
#[derive(Debug)]
pub struct ReqBody {
    inner: Incoming,
    clock: Option<(Arc<Clock>, u64)>,
}

impl ReqBody {
    pub fn new(inner: Incoming, clock: Arc<Clock>, request: u64) -> Self {
        ReqBody {
            inner,
            clock: Some((clock, request)),
        }
    }

    fn done(&mut self) {
        if let Some((clock, request)) = self.clock.take() {
            clock.body_read(request);
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ReqBody {
    fn drop(&mut self) {
        self.done();
    }
}

/// A response body that tells the clock when it has been written (hyper
/// drops a body once written, or once the connection failed).
#[derive(Debug)]
pub struct ResBody<B> {
    inner: B,
    clock: Option<(Arc<Clock>, u64)>,
}

impl<B> ResBody<B> {
    pub fn new(inner: B, clock: Arc<Clock>, request: u64) -> Self {
        ResBody {
            inner,
            clock: Some((clock, request)),
        }
    }

    fn done(&mut self) {
        if let Some((clock, request)) = self.clock.take() {
            clock.response_written(request, Instant::now());
        }
    }
}

impl<B: Body + Unpin> Body for ResBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ResBody<B> {
    fn drop(&mut self) {
        self.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn zero_is_no_limit_and_the_handshake_takes_the_smallest() {
        let t = Timeouts::new(Duration::ZERO, 5 * S, 3 * S, Duration::ZERO);
        assert_eq!(t.read, None);
        assert_eq!(t.idle, None);
        assert_eq!(t.handshake(), Some(3 * S));
        assert_eq!(Timeouts::default().handshake(), None);
    }

    #[test]
    fn deadlines_follow_the_request_cycle() {
        let t0 = Instant::now();
        let clock = Clock::start(Timeouts::new(10 * S, 2 * S, 4 * S, 60 * S), t0);
        assert_eq!(clock.read_deadline(), Some(t0 + 2 * S), "head");
        let request = clock.head_read(false, t0 + S);
        assert_eq!(clock.read_deadline(), Some(t0 + 10 * S), "body");
        assert_eq!(clock.write_deadline(), Some(t0 + 5 * S));
        clock.body_read(request);
        assert_eq!(clock.read_deadline(), None, "responding");
        clock.response_written(request, t0 + 2 * S);
        assert_eq!(clock.read_deadline(), Some(t0 + 62 * S), "idle");
        clock.bytes_arrived(t0 + 3 * S);
        assert_eq!(clock.read_deadline(), Some(t0 + 5 * S), "the next head");
        // A late drop of the old request's body changes nothing.
        let next = clock.head_read(false, t0 + 4 * S);
        clock.body_read(request);
        assert_eq!(clock.read_deadline(), Some(t0 + 13 * S));
        clock.body_read(next);
        assert_eq!(clock.read_deadline(), None);
    }

    #[test]
    fn idle_falls_back_to_read_timeout_then_to_none() {
        let t0 = Instant::now();
        let only_read = Timeouts::new(7 * S, Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let clock = Clock::start(only_read, t0);
        assert_eq!(clock.read_deadline(), Some(t0 + 7 * S), "head: read");
        let r = clock.head_read(true, t0);
        assert_eq!(clock.read_deadline(), None, "no body to read");
        clock.response_written(r, t0 + S);
        assert_eq!(clock.read_deadline(), Some(t0 + 8 * S), "idle: read");
        let none = Clock::start(Timeouts::default(), t0);
        assert_eq!(none.read_deadline(), None);
        assert_eq!(none.write_deadline(), None);
    }
}
