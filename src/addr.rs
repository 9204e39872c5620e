//! Multiaddrs that name an HTTP endpoint: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`,
//! read once here for the IPFS daemon's address ([`crate::ipfsconn::node_origin`]),
//! the client's `--host` and the APIs' listen addresses
//! ([`crate::api::serve::bind_all`]).

use std::net::{IpAddr, SocketAddr};

use libp2p::Multiaddr;
use libp2p::multiaddr::{self, Protocol};

/// The host of an endpoint: an IP address, or a DNS name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Dns {
        name: String,
        /// `/dns4` and `/dns6` restrict the name to one family; `/dns`
        /// takes any.
        family: Option<Family>,
    },
}

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Whether `addr` is of this family.
    pub fn holds(self, addr: &SocketAddr) -> bool {
        match self {
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

/// The host and TCP port an address starts with, and the protocols after
/// the port. `None` unless the address starts with an IP or DNS host and
/// a TCP port.
pub fn tcp_host(addr: &Multiaddr) -> Option<(Host, u16, multiaddr::Iter<'_>)> {
    let mut parts = addr.iter();
    let dns = |name: std::borrow::Cow<'_, str>, family| Host::Dns {
        name: name.into_owned(),
        family,
    };
    let host = match parts.next()? {
        Protocol::Ip4(ip) => Host::Ip(ip.into()),
        Protocol::Ip6(ip) => Host::Ip(ip.into()),
        Protocol::Dns(name) => dns(name, None),
        Protocol::Dns4(name) => dns(name, Some(Family::V4)),
        Protocol::Dns6(name) => dns(name, Some(Family::V6)),
        _ => return None,
    };
    let Some(Protocol::Tcp(port)) = parts.next() else {
        return None;
    };
    Some((host, port, parts))
}

/// The `host:port` an address starts with, written as a URL writes it
/// (an IPv6 address in brackets), and the protocols after the port.
pub fn host_port(addr: &Multiaddr) -> Option<(String, multiaddr::Iter<'_>)> {
    let (host, port, rest) = tcp_host(addr)?;
    let host = match host {
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        Host::Ip(ip) => ip.to_string(),
        Host::Dns { name, .. } => name,
    };
    Some((format!("{host}:{port}"), rest))
}

/// The host and port of an address that ends at the port, as a listen
/// address must.
pub fn tcp_endpoint(addr: &Multiaddr) -> Option<(Host, u16)> {
    let (host, port, mut rest) = tcp_host(addr)?;
    rest.next().is_none().then_some((host, port))
}

/// The socket address of exactly `/ip4|ip6/<ip>/tcp/<port>`.
pub fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    match tcp_endpoint(addr)? {
        (Host::Ip(ip), port) => Some(SocketAddr::new(ip, port)),
        (Host::Dns { .. }, _) => None,
    }
}

/// Fails when another process already listens on `addr`'s TCP port.
///
/// libp2p's TCP transport sets `SO_REUSEPORT` on its listeners, so a second
/// peer started with the same port binds it without error and the kernel
/// then hands each incoming connection to one of the two at random: half of
/// the dials meant for one peer reach the other. A plain bind (without
/// `SO_REUSEPORT`) is refused while anyone listens there, so it is tried
/// first and dropped. Addresses that are not `/ip4|ip6/<ip>/tcp/<port>`, or
/// use port 0, pass.
pub fn check_tcp_port_free(addr: &Multiaddr) -> std::io::Result<()> {
    match socket_addr(addr) {
        Some(socket) if socket.port() != 0 => std::net::TcpListener::bind(socket).map(drop),
        _ => Ok(()),
    }
}

/// `addr` with its TCP port replaced by 0 (any free port).
pub fn with_any_port(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(_) => Protocol::Tcp(0),
            other => other,
        })
        .collect()
}

/// `/ip4|ip6/<ip>/tcp/<port>` for a bound socket.
pub fn socket_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_port_another_process_listens_on_is_reported_taken() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        assert!(check_tcp_port_free(&addr).is_err());
        drop(held);
        assert!(check_tcp_port_free(&addr).is_ok());
        assert!(check_tcp_port_free(&"/ip4/127.0.0.1/tcp/0".parse().unwrap()).is_ok());
        assert_eq!(
            with_any_port(&addr).to_string(),
            "/ip4/127.0.0.1/tcp/0".to_string()
        );
    }

    use super::*;

    fn host(addr: &str) -> Option<String> {
        host_port(&addr.parse().unwrap()).map(|(hp, _)| hp)
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            host("/ip4/127.0.0.1/tcp/5001").as_deref(),
            Some("127.0.0.1:5001")
        );
        assert_eq!(
            host("/ip6/::1/tcp/5001/http").as_deref(),
            Some("[::1]:5001")
        );
        assert_eq!(
            host("/dns4/ipfs.local/tcp/80").as_deref(),
            Some("ipfs.local:80")
        );
        assert_eq!(host("/ip4/127.0.0.1/udp/5001"), None);
        assert_eq!(host("/ip4/127.0.0.1"), None);
    }

    #[test]
    fn dns_hosts_keep_their_family() {
        let addr: Multiaddr = "/dns6/ipfs.local/tcp/80".parse().unwrap();
        let (host, port, _) = tcp_host(&addr).unwrap();
        assert_eq!(
            host,
            Host::Dns {
                name: "ipfs.local".into(),
                family: Some(Family::V6)
            }
        );
        assert_eq!(port, 80);
    }

    #[test]
    fn only_ip_and_tcp_make_a_socket_address() {
        let ok: Multiaddr = "/ip6/::1/tcp/9094".parse().unwrap();
        let socket = socket_addr(&ok).unwrap();
        assert_eq!(socket.port(), 9094);
        assert_eq!(socket_multiaddr(socket), ok);
        for bad in [
            "/ip4/127.0.0.1/udp/9094",
            "/ip4/127.0.0.1/tcp/9094/http",
            "/dns4/localhost/tcp/9094",
        ] {
            assert_eq!(socket_addr(&bad.parse().unwrap()), None, "{bad}");
        }
    }
}
