//! History compaction on the network side: when a peer may drop the
//! history below the snapshot it serves, and what a peer does when a
//! neighbour no longer holds the blocks it asks for.
//!
//! **The rule.** The delta blocks below the served snapshot's frontier are
//! dropped ([`pincluster_crdt::Engine::compact`]) once every *awaited* peer
//! has merged that frontier, as shown by the heads it announced (the
//! engine walks them down to the frontier), or once `compaction_grace`
//! has passed, whichever comes first. The awaited peers:
//! - with an explicit `trusted_peers` list, the peers of that list;
//! - with `"*"`, every cluster peer this peer could hear from: those it
//!   knew when it started (bootstrap addresses, `peer_addresses`, the
//!   peerstore file written at the last stop) and every peer it has seen
//!   since (connected or announcing heads), for as long as it runs.
//!
//! Peers removed from the cluster (`peer rm`) are never awaited, nor is
//! this peer. A peer that just started therefore waits for the peers of
//! its last run before it compacts, even before it has reconnected to any
//! of them; a peer alone from its first start (no bootstrap, empty
//! peerstore) awaits nobody. The grace counts from the later of the
//! snapshot's creation and this process's start: while this peer was down
//! it could not hear anybody, so its own downtime does not count against
//! the others. Waiting lets a peer that was away heal by plain walking; the
//! grace bounds how long one dead peer holds everyone's disk; neither is
//! needed for correctness (see below).
//!
//! **A neighbour's history gone.** A peer whose block request comes back
//! empty (the neighbour holds none of what was asked: compacted away)
//! joins from that neighbour's snapshot, whatever its own state. The
//! engine's install joins the snapshot with what the peer holds, its own
//! branches included, so it converges to what a full replay gives; walking
//! then resumes above the snapshot's frontier. Each manifest is tried once,
//! and at most one such join starts per [`FORCED_JOIN_EVERY`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cid::Cid;
use libp2p::PeerId;
use pincluster_crdt::store::FjallStore;
use pincluster_crdt::{Compacted, Engine, Error};
use tokio::time::Instant;

use crate::config::TrustedPeers;

/// Blocks one acknowledgement check may walk (those above the frontier).
const ACK_WALK_BUDGET: usize = 100_000;
/// Peers whose announced heads are remembered, and peers awaited.
const MAX_ANNOUNCERS: usize = 4_096;
/// Manifests remembered as tried for history a neighbour dropped.
const MAX_TRIED: usize = 64;
/// At most one join for dropped history starts this often.
pub const FORCED_JOIN_EVERY: Duration = Duration::from_secs(10);

/// What the consensus task needs to decide compaction.
#[derive(Debug, Clone)]
pub struct CompactionTuning {
    /// Drop history below the served snapshot at all.
    pub enabled: bool,
    /// Drop it after this long even if a trusted peer has not merged it.
    pub grace: Duration,
    /// Whose acknowledgement is awaited.
    pub trusted: TrustedPeers,
    /// Cluster peers known at start (bootstrap, `peer_addresses`, the
    /// peerstore): awaited with `trusted_peers` `"*"`.
    pub known: Vec<PeerId>,
}

/// The consensus task's compaction state.
#[derive(Debug)]
pub(super) struct Compaction {
    tuning: CompactionTuning,
    local: PeerId,
    /// Heads each peer last announced.
    announced: HashMap<PeerId, Vec<Cid>>,
    /// With `"*"`: every cluster peer known at start or seen since.
    seen: BTreeSet<PeerId>,
    /// Unix seconds when this process started: the grace never counts
    /// this peer's own downtime.
    started: u64,
    /// Manifests joined (or refused) for dropped history.
    tried: VecDeque<Cid>,
    last_forced: Option<Instant>,
}

impl Compaction {
    pub(super) fn new(tuning: CompactionTuning, local: PeerId) -> Self {
        let mut seen = BTreeSet::new();
        seen.extend(tuning.known.iter().take(MAX_ANNOUNCERS).copied());
        Self {
            tuning,
            local,
            announced: HashMap::new(),
            seen,
            started: unix_now(),
            tried: VecDeque::new(),
            last_forced: None,
        }
    }

    /// Remembers `peer`'s announced heads.
    pub(super) fn heard(&mut self, peer: PeerId, heads: &[Cid]) {
        self.saw(&[peer]);
        if self.announced.len() >= MAX_ANNOUNCERS && !self.announced.contains_key(&peer) {
            return;
        }
        self.announced.insert(peer, heads.to_vec());
    }

    /// Remembers cluster peers met (connected now): with `"*"` they are
    /// awaited from now on, even once they go away.
    pub(super) fn saw(&mut self, peers: &[PeerId]) {
        for peer in peers {
            if self.seen.len() >= MAX_ANNOUNCERS {
                return;
            }
            self.seen.insert(*peer);
        }
    }

    /// Compacts when the rule allows it; `removed` are the peers removed
    /// from the cluster, never awaited.
    pub(super) fn maybe_compact(
        &self,
        engine: &mut Engine<FjallStore>,
        removed: &[PeerId],
    ) -> Result<Option<Compacted>, Error> {
        if !self.tuning.enabled || engine.is_compacted()? {
            return Ok(None);
        }
        let Some(manifest) = engine.served_manifest()? else {
            return Ok(None);
        };
        let waited_since = manifest.created_at.max(self.started);
        let expired = unix_now().saturating_sub(waited_since) >= self.tuning.grace.as_secs();
        if !expired {
            let awaited: Vec<PeerId> = match &self.tuning.trusted {
                TrustedPeers::All => self.seen.iter().copied().collect(),
                TrustedPeers::Only(list) => list.clone(),
            };
            let awaited = awaited
                .iter()
                .filter(|p| **p != self.local && !removed.contains(p));
            for peer in awaited {
                let Some(heads) = self.announced.get(peer) else {
                    tracing::debug!(%peer, "history kept: the peer has not announced its heads");
                    return Ok(None);
                };
                if !engine.descends_from(heads, &manifest.frontier, ACK_WALK_BUDGET)? {
                    tracing::debug!(%peer, "history kept: the peer has not merged the snapshot");
                    return Ok(None);
                }
            }
        }
        let started = std::time::Instant::now();
        let done = engine.compact()?;
        tracing::info!(
            blocks = done.blocks,
            bytes = done.bytes,
            merged = manifest.markers,
            frontier = manifest.frontier.len(),
            expired,
            took = ?started.elapsed(),
            "history below the snapshot compacted"
        );
        Ok(Some(done))
    }

    /// Whether a join for dropped history may start now.
    pub(super) fn may_force_join(&self) -> bool {
        self.last_forced
            .is_none_or(|t| t.elapsed() >= FORCED_JOIN_EVERY)
    }

    /// Marks a forced join as started now.
    pub(super) fn forcing(&mut self) {
        self.last_forced = Some(Instant::now());
    }

    /// Whether `manifest` is worth joining for dropped history: not tried
    /// before. Remembers it.
    pub(super) fn first_try(&mut self, manifest: &Cid) -> bool {
        if self.tried.contains(manifest) {
            return false;
        }
        if self.tried.len() >= MAX_TRIED {
            self.tried.pop_front();
        }
        self.tried.push_back(*manifest);
        true
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
