//! Binding the listen addresses of an API: TCP (a `/dns*` host resolved
//! first) or unix sockets.

use std::net::SocketAddr;
use std::path::Path;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use super::{Listener, TlsError, UnixSocket};
use crate::addr::{self, Host};

/// Why an API (the REST API, the IPFS proxy) could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is neither TCP nor a unix socket.
    #[error(
        "unsupported listen address {0}: expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port> or /unix/<path>"
    )]
    Address(Multiaddr),
    /// The HTTPS certificate or key cannot be used.
    #[error("api.restapi: HTTPS")]
    Tls(#[from] TlsError),
    /// Binding (or resolving the host) failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: Multiaddr,
        #[source]
        source: std::io::Error,
    },
    /// The unix socket's path cannot be used.
    #[error("cannot listen on unix socket {}: {problem}", path.display())]
    UnixPath {
        path: std::path::PathBuf,
        problem: &'static str,
    },
}

/// Binds every address of `addrs` (TCP, `/dns*` resolved, or unix
/// sockets); returns the listeners and the addresses they got (port 0
/// resolved), in order. Nothing stays bound on error.
pub async fn bind_all(addrs: &[Multiaddr]) -> Result<(Vec<Listener>, Vec<Multiaddr>), ServeError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let (listener, got) = bind(addr).await?;
        listeners.push(listener);
        bound.push(got);
    }
    Ok((listeners, bound))
}

async fn bind(addr: &Multiaddr) -> Result<(Listener, Multiaddr), ServeError> {
    let bind_error = |source| ServeError::Bind {
        addr: addr.clone(),
        source,
    };
    let mut iter = addr.iter();
    if let (Some(Protocol::Unix(path)), None) = (iter.next(), iter.next()) {
        let path = Path::new("/").join(path.as_ref());
        let socket = unix_listen(&path).map_err(|e| match e {
            UnixBind::Path(problem) => ServeError::UnixPath { path, problem },
            UnixBind::Io(source) => bind_error(source),
        })?;
        return Ok((Listener::Unix(socket), addr.clone()));
    }
    let socket = match addr::tcp_endpoint(addr) {
        Some((Host::Ip(ip), port)) => SocketAddr::new(ip, port),
        Some((Host::Dns { name, family }, port)) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(bind_error)?
            .find(|a| family.is_none_or(|f| f.holds(a)))
            .ok_or_else(|| {
                bind_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host has no address of that family",
                ))
            })?,
        None => return Err(ServeError::Address(addr.clone())),
    };
    let (listener, got) = listen(socket).map_err(bind_error)?;
    Ok((Listener::Tcp(listener), addr::socket_multiaddr(got)))
}

enum UnixBind {
    Path(&'static str),
    Io(std::io::Error),
}

/// Binds a unix socket at `path`, first removing a socket file a stopped
/// (or killed) peer left there; anything else in the way is refused.
fn unix_listen(path: &Path) -> Result<UnixSocket, UnixBind> {
    use std::os::unix::fs::FileTypeExt;
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() || dir.is_dir() => {}
        _ => return Err(UnixBind::Path("its folder does not exist")),
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Refused means nobody listens: a leftover, safe to remove.
            // Anything else (it answers) is a live server's.
            match std::os::unix::net::UnixStream::connect(path) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(UnixBind::Io)?;
                }
                Err(e) => return Err(UnixBind::Io(e)),
                Ok(_) => return Err(UnixBind::Path("another process listens on it")),
            }
        }
        Ok(_) => return Err(UnixBind::Path("a file that is not a socket is in the way")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(UnixBind::Io(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(UnixBind::Io)?;
    Ok(UnixSocket::new(listener, path.to_path_buf()))
}

/// A listener on `socket` (the REST API's and the proxy's) and the address
/// it got (port 0 resolved).
fn listen(socket: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let s = if socket.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux):
    // without it, a response written as head then body meets the
    // client's delayed ACK, 40 ms a request.
    s.set_nodelay(true)?;
    s.set_reuseaddr(true)?;
    s.bind(socket)?;
    let listener = s.listen(1024)?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}
