//! How many cluster peers this peer stays connected to, so that a cluster
//! of a few trusted peers and thousands of followers does not end with
//! every follower on the same trusted peers.
//!
//! Three rules, all about peers this peer does not trust (followers, as a
//! trusted peer sees them; other followers, as a follower sees them):
//! - dialing: a peer found through the DHT, or lost, is dialed only while
//!   this peer has fewer than [`EventLoop::degree`] cluster connections
//!   (open or being dialed), and no more than it lacks at a time. A
//!   trusted peer still dials every other trusted peer (they keep their
//!   full mesh, as a cluster without followers does).
//! - trimming: once connections to untrusted peers pass
//!   `connection_manager.high_water`, the newest of those open for longer
//!   than `grace_period` are closed until `low_water` peers remain, one
//!   connection each (the reference's connection manager, applied to
//!   followers only; connections, not peers, are counted: two peers
//!   dialing each other at once leave two). The oldest stay: they are the
//!   stable part of the gossip mesh, and a newcomer has had the grace
//!   period to learn other peers from the DHT.
//! - a follower does not come back to a trusted peer that trimmed it: it
//!   dials trusted peers (DHT, redials) only while it has no connection at
//!   all, asks only connected peers for blocks (`sync_request`), and runs
//!   DHT queries (which dial) only below its degree. Each of these
//!   brought the trimmed followers straight back: the trusted peer held
//!   every follower again within seconds of a trim.
//! - bootstrap: a peer with no cluster connection at all dials its
//!   bootstrap addresses again (a trusted peer that trimmed it, or was
//!   full, is the only way in it knows).
//!
//! A trusted peer's connection count therefore stays near `high_water`
//! however many followers join, and each follower holds about
//! [`EventLoop::degree`] connections, mostly to other followers, which
//! relay the trusted peers' signed heads and blocks.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

use super::EventLoop;

/// How many cluster peers a follower (or a trusted peer, towards
/// followers) dials on its own: enough for a gossipsub mesh of
/// [`MESH_N`](super::MESH_N) plus spares.
const DEGREE: usize = 10;
/// Least time between two DHT queries a follower starts on connecting.
pub(super) const DISCOVERY_GAP: Duration = Duration::from_secs(5);
/// Least time between two rounds of dialing the bootstrap addresses again.
const REBOOTSTRAP_DIAL: Duration = Duration::from_secs(30);

impl EventLoop {
    /// How many cluster connections this peer dials towards: at most the
    /// trim's low water, or it would dial peers only to trim them.
    pub(super) fn degree(&self) -> usize {
        DEGREE.min(self.config.low_water as usize).max(1)
    }

    /// Whether this peer should dial `peer`, a cluster peer it is not
    /// connected to (found through the DHT).
    pub(super) fn should_dial(&self, peer: &PeerId) -> bool {
        let mut wanted = self.dial_filter();
        wanted(peer)
    }

    /// [`EventLoop::should_dial`] for many peers at once: every trusted
    /// peer (on a trusted peer), and others up to the degree, counting the
    /// connections open and the dials under way (a DHT query reports many
    /// peers at once, before any dial is through).
    pub(super) fn dial_filter(&self) -> impl FnMut(&PeerId) -> bool + use<> {
        let pending = self
            .swarm
            .network_info()
            .connection_counters()
            .num_pending_outgoing() as usize;
        let connected = self.connected_peers().len();
        let mut budget = self.degree().saturating_sub(connected + pending);
        let alone = connected + pending == 0;
        let trust = self.trust.clone();
        let follower = self.config.follower;
        move |peer| {
            if trust.is_trusted(peer) {
                // A trusted peer keeps its full mesh; a follower comes to
                // the trusted peers only when it has nobody else.
                return !follower || alone;
            }
            let yes = budget > 0;
            budget = budget.saturating_sub(1);
            yes
        }
    }

    /// Records when connection `id` to `peer` opened, or forgets it once
    /// closed.
    pub(super) fn note_connection(&mut self, peer: PeerId, id: ConnectionId, open: bool) {
        if open {
            self.opened.insert(id, (peer, Instant::now()));
        } else {
            self.opened.remove(&id);
        }
    }

    /// Whether this peer runs DHT queries now (a query dials the peers it
    /// asks): below its degree; and, on a trusted peer, while another
    /// trusted peer is not connected (the full mesh; with every peer
    /// trusted, always). A trusted peer of a collaborative cluster with its
    /// mesh complete asks nobody: its queries dialed the followers it had
    /// trimmed, every 30 s.
    pub(super) fn wants_discovery(&self) -> bool {
        self.connected_peers().len() < self.degree()
            || (!self.config.follower && self.trust.any_missing(|p| self.swarm.is_connected(p)))
    }

    /// Closes connections to untrusted peers beyond the high water mark
    /// (see the module's documentation).
    pub(super) fn trim(&mut self) {
        let closing = trim_choice(
            self.opened
                .iter()
                .filter(|(_, (peer, _))| !self.trust.is_trusted(peer))
                .map(|(id, (peer, since))| (*since, *peer, *id))
                .collect(),
            self.config.high_water as usize,
            self.config.low_water as usize,
            self.config.grace_period,
        );
        if !closing.is_empty() {
            tracing::debug!(
                closing = closing.len(),
                open = self.opened.len(),
                "trimming connections to untrusted peers"
            );
        }
        for id in closing {
            self.swarm.close_connection(id);
        }
    }

    /// Dials the bootstrap addresses again when this peer has no cluster
    /// connection left, at most every [`REBOOTSTRAP_DIAL`].
    pub(super) fn rebootstrap_if_alone(&mut self) {
        if self.removed_self
            || !self.connected_peers().is_empty()
            || self.last_bootstrap_dial.elapsed() < REBOOTSTRAP_DIAL
        {
            return;
        }
        self.last_bootstrap_dial = Instant::now();
        for addr in self.config.bootstrap.clone() {
            if super::peerset::peer_of(&addr).is_some_and(|p| self.config.removed.contains(&p)) {
                continue;
            }
            let _ = self.swarm.dial(addr);
        }
    }
}

/// The connections [`EventLoop::trim`] closes among `untrusted` (when each
/// opened, to whom, which): none while at most `high` are open; else every
/// one open longer than `grace` except the oldest connection of each of
/// the `low` peers connected longest.
fn trim_choice(
    mut untrusted: Vec<(Instant, PeerId, ConnectionId)>,
    high: usize,
    low: usize,
    grace: Duration,
) -> Vec<ConnectionId> {
    if untrusted.len() <= high {
        return Vec::new();
    }
    untrusted.sort_by_key(|(since, ..)| *since);
    let mut kept = HashSet::new();
    let mut closing = Vec::new();
    for (since, peer, id) in untrusted {
        if kept.len() < low && kept.insert(peer) {
            continue;
        }
        if since.elapsed() >= grace {
            closing.push(id);
        }
    }
    closing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(age_s: u64, peer: PeerId, id: usize) -> (Instant, PeerId, ConnectionId) {
        let since = Instant::now() - Duration::from_secs(age_s);
        (since, peer, ConnectionId::new_unchecked(id))
    }

    #[test]
    fn nothing_is_trimmed_up_to_the_high_water_mark() {
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let open = peers
            .iter()
            .enumerate()
            .map(|(i, p)| conn(100, *p, i))
            .collect();
        assert!(trim_choice(open, 3, 1, Duration::ZERO).is_empty());
    }

    #[test]
    fn the_oldest_peers_keep_one_connection_each_and_newcomers_their_grace() {
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let open = vec![
            conn(100, a, 1),
            conn(90, b, 2),
            conn(80, a, 3), // a second connection to a kept peer
            conn(70, c, 4),
            conn(1, d, 5), // within its grace period
        ];
        let mut closing = trim_choice(open, 3, 2, Duration::from_secs(10));
        closing.sort();
        assert_eq!(
            closing,
            vec![
                ConnectionId::new_unchecked(3),
                ConnectionId::new_unchecked(4)
            ]
        );
    }
}
