//! The HTTP/1.1 server the REST API and the IPFS proxy share: binding
//! their listen addresses ([`bind_all`]), the accept loop, TLS when
//! configured ([`tls`]), Go's `net/http` timeouts
//! ([`deadline`]) and request header limit, and a graceful stop. Each
//! connection runs in its own task; handshakes too, so a slow client never
//! holds up the next accept. One server serves all its listeners (TCP
//! and unix sockets) with the same handler and stops them together. A
//! connection whose client hangs up ends then, even mid-request
//! ([`socket`]).

mod bind;
mod deadline;
mod socket;
pub mod tls;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

pub use bind::{ServeError, bind_all};
use deadline::{Clock, ResBody, Timed};
pub use deadline::{ReqBody, Timeouts};
use socket::{Shared, Socket};
pub use tls::TlsError;

/// Go's server reads up to `max_header_bytes` plus 4 KiB of slack before it
/// answers 431; hyper's buffer cannot be smaller than 8 KiB.
const HEADER_SLACK: usize = 4096;
const MIN_READ_BUFFER: usize = 8192;
/// How long open connections get to finish when the peer stops.
const GRACE: Duration = Duration::from_secs(5);

/// How one listener serves.
#[derive(Clone)]
pub struct Server {
    /// Who serves, for the logs ("REST API", "IPFS proxy").
    pub name: &'static str,
    pub timeouts: Timeouts,
    /// Request heads larger than this (plus Go's slack) get 431.
    pub max_header_bytes: usize,
    /// HTTPS when set.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("timeouts", &self.timeouts)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// One listening socket of a server.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// A bound unix socket; its file goes when it is dropped (the server
/// stopped), as Go's listener unlinks it on close.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl UnixSocket {
    /// Wraps a listener bound at `path`, which this now owns.
    pub fn new(listener: UnixListener, path: PathBuf) -> Self {
        Self { listener, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "unix socket not removed");
        }
    }
}

impl Server {
    /// Serves `service` on every listener until `shutdown`; open
    /// connections then get a few seconds to finish. `service` gets each
    /// request and the client's address (none over a unix socket).
    pub async fn run<S, F, B>(
        self,
        listeners: Vec<Listener>,
        service: S,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) where
        S: Fn(Request<ReqBody>, Option<SocketAddr>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let server = Arc::new(self);
        let graceful = GracefulShutdown::new();
        {
            let loops = listeners
                .iter()
                .map(|l| server.accept_loop(l, service.clone(), &graceful));
            // The loops never end: the shutdown drops them.
            tokio::select! {
                () = shutdown => {}
                _ = futures::future::join_all(loops) => {}
            }
        }
        // Closed (unix socket files removed) before the connections finish.
        drop(listeners);
        if tokio::time::timeout(GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!(server = server.name, "connections still open at shutdown");
        }
    }

    async fn accept_loop<S, F, B>(
        self: &Arc<Self>,
        listener: &Listener,
        service: S,
        graceful: &GracefulShutdown,
    ) where
        S: Fn(Request<ReqBody>, Option<SocketAddr>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        loop {
            let (server, service, watcher) = (self.clone(), service.clone(), graceful.watcher());
            let accepted = match listener {
                Listener::Tcp(l) => l.accept().await.map(|(stream, remote)| {
                    tokio::spawn(async move {
                        server
                            .connection(Shared::new(stream), Some(remote), service, watcher)
                            .await
                    });
                }),
                Listener::Unix(l) => l.listener.accept().await.map(|(stream, _)| {
                    tokio::spawn(async move {
                        server
                            .connection(Shared::new(stream), None, service, watcher)
                            .await
                    });
                }),
            };
            if let Err(e) = accepted {
                // Out of file descriptors and the like: wait, retry.
                tracing::warn!(server = self.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn connection<T, S, F, B>(
        &self,
        stream: Shared<T>,
        remote: Option<SocketAddr>,
        service: S,
        watcher: Watcher,
    ) where
        T: Socket,
        S: Fn(Request<ReqBody>, Option<SocketAddr>) -> F + Send + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let socket = stream.watch();
        let hung_up = async move { socket.hung_up().await };
        let Some(acceptor) = &self.tls else {
            return self.http(stream, remote, service, watcher, hung_up).await;
        };
        let handshake = tls::accept(acceptor, stream);
        let done = match self.timeouts.handshake() {
            Some(limit) => tokio::time::timeout(limit, handshake)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            None => handshake.await,
        };
        match done {
            Ok(Some(stream)) => self.http(stream, remote, service, watcher, hung_up).await,
            Ok(None) => {
                tracing::debug!(server = self.name, ?remote, "plain HTTP on the HTTPS port")
            }
            Err(e) => {
                tracing::debug!(server = self.name, ?remote, error = %e, "TLS handshake failed")
            }
        }
    }

    /// HTTP/1.1 on an accepted (and maybe decrypted) stream, under the
    /// connection's deadlines, until the client hangs up (`hung_up`).
    async fn http<I, S, F, B>(
        &self,
        io: I,
        remote: Option<SocketAddr>,
        service: S,
        watcher: Watcher,
        hung_up: impl Future<Output = ()>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Fn(Request<ReqBody>, Option<SocketAddr>) -> F + Send + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let clock = Clock::start(self.timeouts, tokio::time::Instant::now());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true)
            .max_buf_size((self.max_header_bytes + HEADER_SLACK).max(MIN_READ_BUFFER))
            // The clock times heads, as the rest; hyper's own default
            // (30 s) would add a limit the config does not have.
            .header_read_timeout(None);
        let requests = clock.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let request =
                requests.head_read(req.body().is_end_stream(), tokio::time::Instant::now());
            let req = req.map(|body| ReqBody::new(body, requests.clone(), request));
            let answer = service(req, remote);
            let clock = requests.clone();
            async move {
                let res = answer.await;
                Ok::<_, Infallible>(res.map(|body| ResBody::new(body, clock, request)))
            }
        });
        let conn = http.serve_connection(TokioIo::new(Timed::new(io, clock)), handler);
        // hyper does not look for the client's FIN while a handler waits
        // with its body unread or a pipelined request buffered: dropping
        // the connection here frees the socket and cancels the handler.
        tokio::select! {
            ended = watcher.watch(conn) => if let Err(e) = ended {
                tracing::debug!(server = self.name, ?remote, error = %e, "connection ended");
            },
            () = hung_up => {
                tracing::debug!(server = self.name, ?remote, "client hung up: connection closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn server(timeouts: Timeouts, tls: Option<TlsAcceptor>) -> Server {
        Server {
            name: "test",
            timeouts,
            max_header_bytes: 4096,
            tls,
        }
    }

    /// Runs `server` answering "ok" to everything, until the test ends.
    async fn answering_ok(server: Server) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ok = |_req, _remote| async { Response::new(Full::new(Bytes::from_static(b"ok"))) };
        tokio::spawn(server.run(vec![Listener::Tcp(listener)], ok, std::future::pending()));
        addr
    }

    fn https_client(version: reqwest::tls::Version) -> reqwest::Client {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .max_tls_version(version)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn https_with_each_key_encoding_over_tls_1_2_and_1_3() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        let generated = tempfile::tempdir().unwrap();
        let pkcs8 = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        std::fs::write(generated.path().join("c.pem"), pkcs8.cert.pem()).unwrap();
        std::fs::write(
            generated.path().join("k.pem"),
            pkcs8.key_pair.serialize_pem(),
        )
        .unwrap();
        let pairs = [
            (fixtures.as_path(), "ec.crt", "ec-sec1.key"),
            (fixtures.as_path(), "rsa.crt", "rsa-pkcs1.key"),
            (generated.path(), "c.pem", "k.pem"),
        ];
        for (dir, cert, key) in pairs {
            let acceptor = tls::acceptor(dir, cert, key).unwrap();
            let addr = answering_ok(server(Timeouts::default(), Some(acceptor))).await;
            for version in [
                reqwest::tls::Version::TLS_1_2,
                reqwest::tls::Version::TLS_1_3,
            ] {
                let res = https_client(version)
                    .get(format!("https://{addr}/"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{key} over {version:?}: {e:?}"));
                assert_eq!(res.text().await.unwrap(), "ok", "{key}");
            }
        }
    }

    /// Runs a server whose handler never answers; each request's handler
    /// sends on the returned channel when it is dropped (cancelled).
    async fn never_answering() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        struct Cancelled(tokio::sync::mpsc::UnboundedSender<()>);
        impl Drop for Cancelled {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stuck = move |req: Request<ReqBody>, _remote| {
            let guard = Cancelled(tx.clone());
            async move {
                // Holds the body unread, as a handler that waits on a
                // daemon before it reads its upload.
                let _held = (req, guard);
                std::future::pending::<()>().await;
                Response::new(Full::new(Bytes::new()))
            }
        };
        tokio::spawn(server(Timeouts::default(), None).run(
            vec![Listener::Tcp(listener)],
            stuck,
            std::future::pending(),
        ));
        (addr, rx)
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_mid_request_ends_its_connection() {
        let (addr, mut cancelled) = never_answering().await;
        // Each of these keeps hyper from reading the client's FIN itself.
        let requests: [&[u8]; 3] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        ];
        for request in requests {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request).await.unwrap();
            drop(s);
            let dropped = tokio::time::timeout(Duration::from_secs(10), cancelled.recv()).await;
            assert!(
                dropped.is_ok(),
                "connection kept after the client left: {}",
                String::from_utf8_lossy(request)
            );
        }
    }

    #[tokio::test]
    async fn a_slow_stream_to_a_client_that_stays_is_not_cut() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow = |_req, _remote| async {
            let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                Duration::from_millis(50),
            ));
            let lines = futures::StreamExt::map(futures::StreamExt::take(ticks, 20), |_| {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{}\n")))
            });
            Response::new(StreamBody::new(Box::pin(lines)))
        };
        tokio::spawn(server(Timeouts::default(), None).run(
            vec![Listener::Tcp(listener)],
            slow,
            std::future::pending(),
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8_lossy(&raw);
        assert_eq!(raw.matches("{}\n").count(), 20, "{raw}");
        assert!(raw.ends_with("0\r\n\r\n"), "ended, not cut: {raw}");
    }

    #[tokio::test]
    async fn write_timeout_cuts_an_endless_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endless = |_req, _remote| async {
            let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                Duration::from_millis(20),
            ));
            let lines = futures::StreamExt::map(ticks, |_| {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{}\n")))
            });
            Response::new(StreamBody::new(Box::pin(lines)))
        };
        let timeouts = Timeouts::new(
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_millis(300),
            Duration::ZERO,
        );
        tokio::spawn(server(timeouts, None).run(
            vec![Listener::Tcp(listener)],
            endless,
            std::future::pending(),
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let cut = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await;
        assert!(cut.is_ok(), "the stream outlived write_timeout");
        let raw = String::from_utf8_lossy(&raw);
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("{}\n"), "some lines before the cut: {raw}");
        assert!(!raw.ends_with("0\r\n\r\n"), "cut, not ended: {raw}");
    }
}
