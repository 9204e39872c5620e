//! The front of the cluster: [`Cluster`], what every API (the REST API,
//! the IPFS proxy, later the Pinning Service API) calls, and nothing
//! below it. The adapters parse and print; the rules live here: pin,
//! unpin and update (one implementation), the status of a pin on every
//! peer and its pages, recover and sync, the peerset and its changes, the
//! one re-allocation (a removed peer's pins, a dead peer's pins), and the
//! calls that reach every peer's IPFS daemon.
//!
//! Files: `error` ([`ClusterError`]), `fanout` ([`ask_all`], the one way
//! to ask many peers), `local` (this peer's own statuses and daemon),
//! `status`, `peers` (the peerset and re-allocation), `graph` (the health
//! graph), `ipfs` (cluster-wide
//! IPFS calls and the swarm connector task), `repin` (the alert task that
//! moves a dead peer's pins), `rpc` (the answers to other peers).

mod error;
mod fanout;
mod graph;
pub mod ipfs;
mod local;
mod peers;
pub mod repin;
pub mod rpc;
mod status;

use std::sync::Arc;

use cid::Cid;
use libp2p::PeerId;

use crate::allocator::{self, Allocator};
use crate::config::TrustedPeers;
use crate::consensus::Consensus;
use crate::ipfsconn::{Connector, IpfsConnector};
use crate::monitor::Monitor;
use crate::network::Network;
use crate::state::PinState;
use crate::types::{Pin, PinMode, PinType};

pub use error::ClusterError;
pub use fanout::ask_all;
pub use local::{Local, SeenDaemon};
pub use peers::Share;
pub use status::Which;

/// The cluster's settings the front applies.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Replication of pins that do not say.
    pub replication_min: i32,
    /// Replication of pins that do not say.
    pub replication_max: i32,
    /// Whose writes this peer accepts (this peer aside, always trusted).
    pub trusted: TrustedPeers,
    /// The pinset's listings being streamed, which the tracker's start-up
    /// pass lets go first.
    pub listings: crate::state::Listings,
}

/// A handle to the cluster as this peer sees it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    network: Network,
    consensus: Consensus,
    monitor: Monitor,
    allocator: Allocator,
    local: Local,
    config: ClusterConfig,
}

impl Cluster {
    /// The front over the running components.
    pub fn new(
        network: Network,
        consensus: Consensus,
        monitor: Monitor,
        allocator: Allocator,
        local: Local,
        config: ClusterConfig,
    ) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                network,
                consensus,
                monitor,
                allocator,
                local,
                config,
            }),
        }
    }

    /// The network (the peerset, identities, bandwidth).
    pub fn network(&self) -> &Network {
        &self.inner.network
    }

    /// Metrics and alerts.
    pub fn monitor(&self) -> &Monitor {
        &self.inner.monitor
    }

    /// The IPFS daemon beside this peer.
    pub fn ipfs(&self) -> &Connector {
        &self.inner.local.ipfs
    }

    /// The pinset, read-only.
    pub fn state(&self) -> &PinState {
        self.inner.consensus.state()
    }

    /// Counts a listing of the pinset streamed to a client until the
    /// guard is dropped: the start-up pass waits for it (within a budget).
    pub fn streaming_listing(&self) -> crate::state::Streaming {
        self.inner.config.listings.streaming()
    }

    /// This peer's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.network.local_peer_id()
    }

    /// Replication factors of pins that do not say: (min, max).
    pub fn replication(&self) -> (i32, i32) {
        (
            self.inner.config.replication_min,
            self.inner.config.replication_max,
        )
    }

    /// Whether this peer accepts `peer`'s writes (it always accepts its own).
    pub fn trusts(&self, peer: &PeerId) -> bool {
        self.inner
            .config
            .trusted
            .trusted_by(&self.local_peer_id(), peer)
    }

    /// The pin of `cid`.
    pub fn get(&self, cid: &Cid) -> Result<Pin, ClusterError> {
        self.state().get(cid)?.ok_or(ClusterError::NotFound)
    }

    /// The CID an IPFS path points to, resolved by the daemon.
    pub async fn resolve(&self, path: &str) -> Result<Cid, ClusterError> {
        Ok(self.ipfs().resolve(path).await?)
    }

    /// Pins `pin` in the cluster, or with `pin-update=FROM` among its
    /// options, updates FROM to it ([`Cluster::update`]); returns the pin
    /// as written.
    pub async fn pin(&self, pin: Pin) -> Result<Pin, ClusterError> {
        match pin.options.pin_update {
            Some(from) if from != pin.cid => self.update(from, pin).await,
            _ => self.commit(pin, false).await,
        }
    }

    /// Fills in the cluster's replication defaults, checks the pin against
    /// the one already in the pinset, allocates and writes `pin`. With
    /// `local`, this peer takes the last allocation if it has none (what
    /// `/add?local=true` asks: the content is on this peer's daemon),
    /// unless the pin names its allocations, as in the reference.
    pub async fn commit(&self, mut pin: Pin, local: bool) -> Result<Pin, ClusterError> {
        let local = local && pin.options.user_allocations.is_empty();
        let (min, max) = self.replication();
        if pin.options.replication_factor_min == 0 {
            pin.options.replication_factor_min = min;
        }
        if pin.options.replication_factor_max == 0 {
            pin.options.replication_factor_max = max;
        }
        check_replication(
            pin.options.replication_factor_min,
            pin.options.replication_factor_max,
        )?;
        let existing = self.state().get(&pin.cid)?;
        check_repin(existing.as_ref(), &pin)?;
        // Re-pinning keeps the live allocations the pin already has;
        // `local` puts this peer first.
        let me = self.local_peer_id();
        let mut priority = pin.options.user_allocations.clone();
        if local {
            priority.insert(0, me);
        }
        let current = existing.map(|p| p.allocations).unwrap_or_default();
        pin.allocations = self.inner.allocator.allocate(allocator::Request {
            cid: &pin.cid,
            replication_min: pin.options.replication_factor_min,
            replication_max: pin.options.replication_factor_max,
            current: &current,
            priority: &priority,
            exclude: &[],
        })?;
        // This peer holds the content of a local add even when its metrics
        // do not make it a candidate (its daemon's free space unknown, say).
        if local
            && !pin.allocations.contains(&me)
            && let Some(last) = pin.allocations.last_mut()
        {
            *last = me;
        }
        pin.timestamp = Some(chrono::Utc::now().fixed_offset());
        self.inner.consensus.log_pin(pin.clone()).await?;
        Ok(pin)
    }

    /// Pins `new.cid` as a copy of `from`'s pin (allocations, replication,
    /// mode, metadata, name), as the reference's `PinUpdate`: only a name
    /// and a future expiry given with `new` replace `from`'s, so the same
    /// peers fetch only the difference. `from` stays pinned.
    pub async fn update(&self, from: Cid, new: Pin) -> Result<Pin, ClusterError> {
        let mut pin = self.get(&from)?;
        if pin.pin_type != PinType::Pin {
            return Err(ClusterError::NotUpdatable);
        }
        let now = chrono::Utc::now().fixed_offset();
        pin.cid = new.cid;
        pin.options.pin_update = Some(from);
        pin.timestamp = Some(now);
        if !new.options.name.is_empty() {
            pin.options.name = new.options.name;
        }
        if let Some(at) = new.options.expire_at.filter(|at| *at > now) {
            pin.options.expire_at = Some(at);
        }
        self.inner.consensus.log_pin(pin.clone()).await?;
        Ok(pin)
    }

    /// Removes `cid` from the pinset; returns the pin as it was.
    pub async fn unpin(&self, cid: Cid) -> Result<Pin, ClusterError> {
        let existing = self.get(&cid)?;
        self.inner.consensus.log_unpin(cid).await?;
        Ok(existing)
    }
}

/// What is wrong with replication factors `min`, `max`, in the reference's
/// order of checks and with its texts (`isReplicationFactorValid`).
fn check_replication(min: i32, max: i32) -> Result<(), ClusterError> {
    let problem = if min == 0 || max == 0 {
        "cluster.replication_factor_min and max must be set"
    } else if min > max {
        "cluster.replication_factor_min is larger than max"
    } else if min < -1 {
        "cluster.replication_factor_min is wrong"
    } else if max < -1 {
        "cluster.replication_factor_max is wrong"
    } else if (min == -1) != (max == -1) {
        "cluster.replication_factor_min and max must be -1 when one of them is"
    } else {
        return Ok(());
    };
    Err(ClusterError::InvalidReplication(problem))
}

/// The reference's rules for a pin against the one already in the pinset
/// (its `setupPin`), in its order and with its texts: no expiry in the
/// past, the same pin type, and no recursive pin turned direct.
fn check_repin(existing: Option<&Pin>, pin: &Pin) -> Result<(), ClusterError> {
    if pin
        .options
        .expire_at
        .is_some_and(|at| at < chrono::Utc::now().fixed_offset())
    {
        return Err(ClusterError::InvalidPin(
            "pin.ExpireAt set before current time".to_string(),
        ));
    }
    let Some(existing) = existing else {
        return Ok(());
    };
    if existing.pin_type != pin.pin_type {
        return Err(ClusterError::InvalidPin(format!(
            "cannot repin CID with different tracking method, clear state with pin rm to \
             proceed. New: {}. Was: {}",
            pin.pin_type.as_str(),
            existing.pin_type.as_str()
        )));
    }
    if existing.options.mode == PinMode::Recursive && pin.options.mode != PinMode::Recursive {
        return Err(ClusterError::InvalidPin(format!(
            "cannot repin a CID which is already pinned in recursive mode (new pin is \
             pinned as {}). Unpin it first.",
            pin.options.mode.as_str()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_is_checked_in_the_reference_order() {
        let text = |min, max| check_replication(min, max).err().map(|e| e.to_string());
        assert_eq!(text(2, 3), None);
        assert_eq!(text(-1, -1), None);
        assert_eq!(
            text(0, 3).as_deref(),
            Some("cluster.replication_factor_min and max must be set")
        );
        assert_eq!(
            text(3, 2).as_deref(),
            Some("cluster.replication_factor_min is larger than max")
        );
        assert_eq!(
            text(-1, 2).as_deref(),
            Some("cluster.replication_factor_min and max must be -1 when one of them is")
        );
    }
}
