//! The transport under the Swarm: TCP, the private network when a cluster
//! secret is set, Noise, Yamux, every substream counted per protocol.

use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{PeerId, StreamProtocol, Transport, identity::Keypair, noise, tcp, yamux};

use super::super::NetworkError;
use super::super::bandwidth::{Bandwidth, CountingMuxer};

pub(super) fn build_transport(
    key: &Keypair,
    secret: Option<[u8; 32]>,
    bandwidth: Bandwidth,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, NetworkError> {
    let noise = noise::Config::new(key).map_err(|e| NetworkError::Build(e.to_string()))?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let timeout = Duration::from_secs(20);
    Ok(match secret {
        // The pre-shared key wraps the raw socket, before anything else is
        // said: a peer without the key cannot even complete Noise.
        Some(psk) => tcp
            .and_then(move |socket, _| PnetConfig::new(PreSharedKey::new(psk)).handshake(socket))
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            // Every substream counts its bytes per protocol.
            .map(move |(peer, muxer), _| {
                (
                    peer,
                    StreamMuxerBox::new(CountingMuxer::new(muxer, bandwidth.clone())),
                )
            })
            .boxed(),
        None => tcp
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            // Every substream counts its bytes per protocol.
            .map(move |(peer, muxer), _| {
                (
                    peer,
                    StreamMuxerBox::new(CountingMuxer::new(muxer, bandwidth.clone())),
                )
            })
            .boxed(),
    })
}

pub(super) fn protocol(name: String) -> Result<StreamProtocol, NetworkError> {
    StreamProtocol::try_from_owned(name).map_err(|e| NetworkError::Build(e.to_string()))
}
