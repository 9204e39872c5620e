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
//!   `connection_manager.high_water`, the newest of those connected for
//!   longer than `grace_period` are closed until `low_water` remain (the
//!   reference's connection manager, applied to followers only). The
//!   oldest stay: they are the stable part of the gossip mesh, and a
//!   newcomer has had the grace period to learn other peers from the DHT.
//! - bootstrap: a peer with no cluster connection at all dials its
//!   bootstrap addresses again (a trusted peer that trimmed it, or was
//!   full, is the only way in it knows).
//!
//! A trusted peer's connection count therefore stays near `high_water`
//! however many followers join, and each follower holds about
//! [`EventLoop::degree`] connections, mostly to other followers, which
//! relay the trusted peers' signed heads and blocks.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::EventLoop;

/// How many cluster peers a follower (or a trusted peer, towards
/// followers) dials on its own: enough for a gossipsub mesh of
/// [`MESH_N`](super::MESH_N) plus spares.
const DEGREE: usize = 10;
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
        let mut budget = self
            .degree()
            .saturating_sub(self.connected_peers().len() + pending);
        let mesh = (!self.config.follower).then(|| self.trust.clone());
        move |peer| {
            if mesh.as_ref().is_some_and(|t| t.is_trusted(peer)) {
                return true;
            }
            let yes = budget > 0;
            budget = budget.saturating_sub(1);
            yes
        }
    }

    /// Records when a peer's first connection opened (`connected`) or its
    /// last one closed.
    pub(super) fn note_connection(&mut self, peer: PeerId, connected: bool) {
        if connected {
            self.connected_since
                .entry(peer)
                .or_insert_with(Instant::now);
        } else {
            self.connected_since.remove(&peer);
        }
    }

    /// Closes connections to untrusted peers beyond the high water mark
    /// (see the module's documentation).
    pub(super) fn trim(&mut self) {
        let high = self.config.high_water as usize;
        let low = self.config.low_water as usize;
        let grace = self.config.grace_period;
        let mut untrusted: Vec<(Instant, PeerId)> = self
            .connected_peers()
            .into_iter()
            .filter(|p| !self.trust.is_trusted(p))
            .filter_map(|p| Some((*self.connected_since.get(&p)?, p)))
            .collect();
        if untrusted.len() <= high {
            return;
        }
        untrusted.sort();
        let closing: Vec<PeerId> = untrusted[low..]
            .iter()
            .rev()
            .filter(|(since, _)| since.elapsed() >= grace)
            .map(|(_, p)| *p)
            .collect();
        if !closing.is_empty() {
            tracing::debug!(
                closing = closing.len(),
                untrusted = untrusted.len(),
                "trimming connections to untrusted peers"
            );
        }
        for peer in closing {
            let _ = self.swarm.disconnect_peer_id(peer);
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
