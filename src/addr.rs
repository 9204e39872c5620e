//! Multiaddrs that name an HTTP endpoint: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`,
//! read once here for the IPFS daemon's address ([`crate::ipfsconn::node_origin`])
//! and the client's `--host`.

use libp2p::Multiaddr;
use libp2p::multiaddr::{self, Protocol};

/// The `host:port` an address starts with, written as a URL writes it
/// (an IPv6 address in brackets), and the protocols after the port. `None`
/// unless the address starts with an IP or DNS host and a TCP port.
pub fn host_port(addr: &Multiaddr) -> Option<(String, multiaddr::Iter<'_>)> {
    let mut parts = addr.iter();
    let host = match parts.next()? {
        Protocol::Ip4(ip) => ip.to_string(),
        Protocol::Ip6(ip) => format!("[{ip}]"),
        Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => h.to_string(),
        _ => return None,
    };
    let Some(Protocol::Tcp(port)) = parts.next() else {
        return None;
    };
    Some((format!("{host}:{port}"), parts))
}

#[cfg(test)]
mod tests {
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
}
