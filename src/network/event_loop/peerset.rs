//! The peerset as the event loop keeps it: the peers of this cluster seen
//! lately and their addresses, blocking and letting back in (peerset
//! records, partitions), redialing lost peers, and this peer's identity as
//! it tells others.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::super::protocol::RemoteId;
use super::{EventLoop, REDIAL};

/// What we know of a peer that speaks our protocols.
#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) connections: usize,
    pub(super) last_seen: Instant,
    pub(super) addrs: Vec<Multiaddr>,
    pub(super) last_dial: Option<Instant>,
    /// Dials since the peer was last connected: spaces out the redials.
    pub(super) redials: u32,
    /// `PeerUp` was sent for the peer's current run of connections: cleared
    /// when its last connection closes, so a peer that comes back (a restart,
    /// a healed partition) is announced again and asked for its heads.
    pub(super) up: bool,
}

/// Longest wait between two dials of a lost peer: also the longest a
/// healed partition stays apart (a minute doubled the rejoin time of a
/// two-minute partition), for one connection attempt per lost peer.
const MAX_REDIAL: Duration = Duration::from_secs(30);
/// How long a lost peer is still redialed (and kept for the peerstore).
/// Long: a partition of hours must heal by itself once the network does,
/// and a dial of a peer that is gone costs one failed connection a minute.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Most peers the peerset remembers: a trusted peer of a cluster with
/// thousands of volunteers coming and going would otherwise keep every
/// follower it saw over the last [`FORGET_AFTER`]. Past it, the peer away
/// longest is forgotten first.
pub(super) const MAX_PEERS: usize = 10_000;
/// Most addresses kept per peer (a peer chooses what identify tells us).
pub(super) const MAX_ADDRS: usize = 16;

/// Makes room in `peers` for one more: forgets the peer without a
/// connection seen longest ago when the peerset is full. Peers with a
/// connection are never forgotten (the connection limit bounds them).
pub(super) fn make_room(peers: &mut std::collections::HashMap<PeerId, PeerState>) {
    if peers.len() < MAX_PEERS {
        return;
    }
    let oldest = peers
        .iter()
        .filter(|(_, s)| s.connections == 0)
        .min_by_key(|(_, s)| s.last_seen)
        .map(|(p, _)| *p);
    if let Some(peer) = oldest {
        peers.remove(&peer);
    }
}

/// The wait before the next dial of a peer already dialed `redials` times
/// since it was lost: 10 s, 20 s, then every 30 s.
fn redial_backoff(redials: u32) -> Duration {
    REDIAL.saturating_mul(1 << redials.min(6)).min(MAX_REDIAL)
}

impl EventLoop {
    pub(super) fn listen_addrs(&self) -> Vec<Multiaddr> {
        let local = *self.swarm.local_peer_id();
        let mut addrs: Vec<Multiaddr> =
            self.swarm.listeners().map(|a| with_p2p(a, local)).collect();
        addrs.sort();
        addrs
    }

    pub(super) fn live_peers(&self) -> Vec<PeerId> {
        let ttl = self.config.peer_ttl;
        let mut peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connections > 0 || s.last_seen.elapsed() < ttl)
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        peers
    }

    /// Cluster peers with an open connection now (the peerset also counts
    /// peers seen within the TTL; the health graph shows actual links).
    pub(super) fn connected_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connections > 0)
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        peers
    }

    pub(super) fn local_id(&self) -> RemoteId {
        let local = *self.swarm.local_peer_id();
        let mut cluster_peers: Vec<String> =
            self.live_peers().iter().map(PeerId::to_string).collect();
        cluster_peers.push(local.to_string());
        cluster_peers.sort();
        let (ipfs_id, ipfs_addresses) = self.handler.ipfs();
        RemoteId {
            ipfs_id,
            ipfs_addresses: ipfs_addresses.iter().map(Multiaddr::to_string).collect(),
            id: local.to_string(),
            addresses: self
                .listen_addrs()
                .iter()
                .map(Multiaddr::to_string)
                .collect(),
            cluster_peers,
            peername: self.config.peername.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Blocks a peer (its connections closed and refused, forgotten from
    /// the peerset) or lets it back in and dials it at `addrs`. About this
    /// peer itself: stops or resumes redialing.
    pub(super) fn set_blocked(&mut self, peer: PeerId, blocked: bool, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() {
            if blocked && !self.removed_self {
                tracing::warn!(
                    "this peer was removed from the cluster; it stops redialing its peers until a trusted peer takes it back in"
                );
            } else if !blocked && self.removed_self {
                tracing::info!("this peer was taken back into the cluster");
            }
            self.removed_self = blocked;
            return;
        }
        let was_blocked = self
            .swarm
            .behaviour()
            .blocked
            .blocked_peers()
            .contains(&peer);
        if blocked {
            if !was_blocked {
                tracing::info!(%peer, "peer removed from the cluster: its connections are refused");
            }
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.peers.remove(&peer);
            // Its metrics go too: a removed peer is no allocation candidate.
            self.monitor.forget(&peer);
        } else {
            if was_blocked {
                tracing::info!(%peer, "peer taken back into the cluster");
            }
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            for addr in &addrs {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }

    /// Redials cluster peers that dropped off, less often the longer they
    /// stay away, and forgets those gone for a day.
    pub(super) fn maintain(&mut self) {
        let removed_self = self.removed_self;
        let mut wanted = self.dial_filter();
        let mut redial = Vec::new();
        self.peers.retain(|peer, state| {
            if state.connections > 0 {
                return true;
            }
            let backoff = redial_backoff(state.redials);
            let due = !removed_self
                && state.last_dial.is_none_or(|t| t.elapsed() > backoff)
                && wanted(peer);
            if due {
                state.last_dial = Some(Instant::now());
                state.redials = state.redials.saturating_add(1);
                redial.push((*peer, state.addrs.clone()));
            }
            // Stay known (for redials and the peerstore) for a long while:
            // forgetting a peer after minutes left the two sides of a long
            // partition apart for ever once it healed. The peerset itself
            // only counts peers seen within the TTL.
            state.last_seen.elapsed() < FORGET_AFTER
        });
        for (peer, addrs) in redial {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }
}

pub(super) fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.clone()
    } else {
        addr.clone().with(Protocol::P2p(peer))
    }
}

pub(super) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn state(connections: usize, age_s: u64) -> PeerState {
        PeerState {
            connections,
            last_seen: Instant::now() - Duration::from_secs(age_s),
            addrs: Vec::new(),
            last_dial: None,
            redials: 0,
            up: connections > 0,
        }
    }

    #[test]
    fn a_full_peerset_forgets_the_peer_away_longest_and_keeps_connected_ones() {
        let mut peers = HashMap::new();
        let connected_old = PeerId::random();
        let gone_longest = PeerId::random();
        peers.insert(connected_old, state(1, 10_000));
        peers.insert(gone_longest, state(0, 5_000));
        while peers.len() < MAX_PEERS {
            peers.insert(PeerId::random(), state(0, 60));
        }
        make_room(&mut peers);
        assert_eq!(peers.len(), MAX_PEERS - 1);
        assert!(!peers.contains_key(&gone_longest));
        assert!(peers.contains_key(&connected_old));
        // Below the bound nothing is forgotten.
        make_room(&mut peers);
        assert_eq!(peers.len(), MAX_PEERS - 1);
    }
}
