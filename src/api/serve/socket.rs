//! The accepted socket, shared between hyper's connection and a watch that
//! notices when the client hangs up.
//!
//! hyper learns that a client closed only when it reads, and there are
//! states in which it does not read: while a handler holds a request body
//! it has not polled yet, while bytes after the request (a pipelined
//! request, junk) sit in its buffer, and after it stopped reading a body
//! the handler dropped. If the answer then stays pending (an `/add` whose
//! IPFS daemon never replies, a `repo/gc` that takes hours) the client's
//! FIN is never seen: the socket stays in CLOSE-WAIT, its descriptor held,
//! for as long as the handler waits, and a client can exhaust the peer's
//! descriptors on purpose (issue 14). [`Shared::hung_up`] watches the
//! socket itself for the client's FIN (`EPOLLRDHUP`, tokio's
//! `READ_CLOSED`) whatever hyper is doing, so the server can drop the
//! connection, its handler and its descriptor at once.
//!
//! Dropping on a FIN is what hyper already does whenever it does read one
//! in the middle of a request (half-closed clients are not supported), and
//! what Go's server does (it cancels the request's context): a client that
//! stays connected is never affected, however long its answer streams.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::{TcpStream, UnixStream};

/// While unread bytes keep the socket readable, its state is looked at
/// this often (readiness alone would wake the watch in a loop).
const RECHECK: Duration = Duration::from_millis(500);

/// The socket calls [`Shared`] needs, which tokio's TCP and unix streams
/// both offer through `&self`.
pub trait Socket: AsFd + Send + Sync + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send;
}

macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$t>::try_read(self, buf)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
            fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
                <$t>::ready(self, interest)
            }
        }
    };
}

socket!(TcpStream);
socket!(UnixStream);

/// A socket that reads and writes like the stream it wraps, and of which
/// the watch keeps a second handle (the same descriptor: no extra one).
#[derive(Debug)]
pub struct Shared<S>(Arc<S>);

impl<S: Socket> Shared<S> {
    pub fn new(socket: S) -> Self {
        Shared(Arc::new(socket))
    }

    /// A handle for [`Shared::hung_up`].
    pub fn watch(&self) -> Shared<S> {
        Shared(self.0.clone())
    }

    /// Resolves once the client has closed its side (or the socket
    /// failed). Readiness events wake it; it never reads.
    pub async fn hung_up(&self) {
        loop {
            match self.0.ready(Interest::READABLE).await {
                Ok(ready) if ready.is_read_closed() => return,
                Ok(_) => tokio::time::sleep(RECHECK).await,
                Err(_) => return,
            }
        }
    }
}

impl<S: Socket> AsyncRead for Shared<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // `try_read` clears the readiness when it would block: the
            // next poll then waits for new bytes.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: Socket> AsyncWrite for Shared<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        match shut {
            // The client may have gone first.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            done => Poll::Ready(done),
        }
    }
}
