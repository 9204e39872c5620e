//! HTTPS (rustls with ring): the certificate chain and private key of
//! `ssl_cert_file` / `ssl_key_file`, TLS 1.2 and 1.3, HTTP/1.1 over ALPN.
//!
//! As Go's server does, a plain HTTP request sent to the HTTPS port gets
//! `400 Client sent an HTTP request to an HTTPS server.` rather than a TLS
//! alert the client would show as gibberish.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// Why the certificate or key cannot be served. The texts leave the cause
/// to `source()`, which the daemon prints after them.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{key} {path}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No certificate, or a broken PEM block.
    #[error("ssl_cert_file {path}: no PEM certificate chain (CERTIFICATE blocks)")]
    Certificate {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// No key, or a broken PEM block.
    #[error(
        "ssl_key_file {path}: no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or \
         EC PRIVATE KEY block)"
    )]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// rustls refuses the pair: a key it cannot use, or one that does not
    /// match the certificate.
    #[error("ssl_cert_file {cert} with ssl_key_file {key}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The acceptor for `cert` and `key`, paths relative to the configuration
/// folder `dir` unless absolute.
pub fn acceptor(dir: &Path, cert: &str, key: &str) -> Result<TlsAcceptor, TlsError> {
    let (cert, key) = (dir.join(cert), dir.join(key));
    let read = |name: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            key: name,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("ssl_cert_file", &cert)?;
    let key_pem = read("ssl_key_file", &key)?;
    let bad_cert = |source| TlsError::Certificate {
        path: cert.clone(),
        source,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_cert)?;
    if chain.is_empty() {
        return Err(bad_cert(pem::Error::NoItemsFound));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Key {
        path: key.clone(),
        source,
    })?;
    let pair = |source| TlsError::Pair {
        cert: cert.clone(),
        key: key.clone(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Go's answer to plain HTTP on an HTTPS port.
const PLAIN_HTTP: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
/// How much of a plain HTTP request is read (and dropped) before closing,
/// so that the close is a FIN the client reads the answer before, not a
/// reset that loses it.
const PLAIN_HTTP_DRAIN: u64 = 64 * 1024;

/// The TLS handshake on `stream`; `None` when the client spoke plain HTTP
/// and was told so.
pub async fn accept<S>(
    acceptor: &TlsAcceptor,
    mut stream: S,
) -> io::Result<Option<TlsStream<Replay<S>>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Read, not peeked (unix sockets cannot peek in tokio): the byte is
    // handed back to the TLS layer by `Replay`.
    let first = stream.read_u8().await?;
    // A TLS connection starts with a handshake record (0x16); an HTTP
    // request with its method's first letter.
    if first.is_ascii_alphabetic() {
        stream.write_all(PLAIN_HTTP).await?;
        stream.shutdown().await?;
        let _ = tokio::io::copy(
            &mut (&mut stream).take(PLAIN_HTTP_DRAIN),
            &mut tokio::io::sink(),
        )
        .await;
        return Ok(None);
    }
    let replay = Replay {
        first: Some(first),
        inner: stream,
    };
    acceptor.accept(replay).await.map(Some)
}

/// A stream whose first byte was already read: reads give it back first.
#[derive(Debug)]
pub struct Replay<S> {
    first: Option<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0
            && let Some(byte) = self.first.take()
        {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
