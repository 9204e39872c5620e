//! Join by snapshot: the network side of the engine's signed snapshots
//! ([`pincluster_crdt::snapshot`], `shared/spec/snapshots.md`).
//!
//! - **Producing.** A trusted, non-follower peer takes a snapshot every
//!   `snapshot_interval` when its heads moved since the last one (the
//!   first of a run once the tracker's start-up pass is over). The engine
//!   writes the chunks as blocks and keeps the manifest; the sync protocol
//!   serves both (`SyncRequest::Snapshot`, then ordinary block requests).
//! - **Joining.** A peer that starts with an empty pinset, or whose pinset
//!   lies more than [`JOIN_LAG`] heights behind the first peer it meets, or
//!   lacks most of the blocks that peer's snapshot covers (a peer back from
//!   an absence during which a large import happened: few heights, many
//!   pins), asks that peer for its manifest. The manifest must be signed by a trusted
//!   peer (the engine's verifier); every chunk is checked against its CID as
//!   it is staged; chunks come [`CHUNKS_PER_REQUEST`] at a time with
//!   [`FETCHES_IN_FLIGHT`] requests in flight, and the engine writes the
//!   staged chunks out of RAM every few MiB, waiting for it, so memory
//!   stays at a few chunks whatever the pinset's size. The install then joins the snapshot with whatever the peer
//!   held (crash-safe in the engine) and ordinary delta sync takes over
//!   above the snapshot's heads.
//! - **After an install** every pin is handed to the tracker as new, the
//!   full recover pass a replaced state needs; peerset records go to the
//!   network as after any merge.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use pincluster_crdt::store::FjallStore;
use pincluster_crdt::{ChunkKind, Engine, Installed, KeyChange, Manifest};
use tokio::sync::mpsc;

use crate::network::{Network, NetworkError};

/// Chunks asked for in one block request: about 2 MiB of 512 KiB chunks.
/// Each answer is held about twice on each side (read and decoded here;
/// collected and encoded by the producer) while it is in flight: with 12
/// per request a producer serving a 1,000,000-pin join rose some 73 MiB
/// over its settled RSS, with 4 about 38 (BENCHMARKS.md). Fewer per
/// request costs only round trips.
pub const CHUNKS_PER_REQUEST: usize = 4;
/// Chunk requests in flight at once.
pub const FETCHES_IN_FLIGHT: usize = 3;
/// A peer whose heights lie this far behind a served snapshot joins from it
/// instead of walking the deltas in between.
pub const JOIN_LAG: u64 = 10_000;
/// Keys handed to the tracker per page after an install.
const EMIT_PAGE: usize = 1_000;
/// How long one chunk request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a join by snapshot did not happen; the peer falls back to delta sync.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The network failed.
    #[error("snapshot fetch: {0}")]
    Network(#[from] NetworkError),
    /// The engine refused the manifest, a chunk or the install.
    #[error("snapshot refused: {0}")]
    Engine(#[from] pincluster_crdt::Error),
    /// The peer did not deliver chunks its own manifest names.
    #[error("the peer does not deliver the snapshot's chunks")]
    Incomplete,
    /// A chunk request did not finish in time.
    #[error("snapshot chunk request timed out")]
    Timeout,
}

/// Asks `peer` for its snapshot and installs it when it is worth it: this
/// replica is empty, more than [`JOIN_LAG`] heights behind, or holds fewer
/// than half the blocks the snapshot covers. Replaying the deltas costs
/// about twice what installing costs per pin (BENCHMARKS.md, "Join by
/// snapshot"), so from there the snapshot is the faster way. `Ok(None)`:
/// nothing to install; otherwise what was installed and the snapshot's
/// frontier (the state this replica now serves a snapshot of).
pub async fn join_from(
    engine: &mut Engine<FjallStore>,
    network: &Network,
    peer: PeerId,
) -> Result<Option<(Installed, Vec<cid::Cid>)>, JoinError> {
    join_when(engine, network, peer, |engine, _, manifest| {
        Ok(engine.heads().is_empty()
            || manifest.height() > engine.max_height().saturating_add(JOIN_LAG)
            || tokio::task::block_in_place(|| lacks_most(engine, manifest.markers))?)
    })
    .await
}

/// Like [`join_from`], installing `peer`'s snapshot when `worth` (given
/// the manifest's CID and the checked manifest) says so: history
/// compaction joins whatever the lag ([`super::compact`]).
pub async fn join_when(
    engine: &mut Engine<FjallStore>,
    network: &Network,
    peer: PeerId,
    worth: impl FnOnce(&Engine<FjallStore>, &cid::Cid, &Manifest) -> Result<bool, JoinError>,
) -> Result<Option<(Installed, Vec<cid::Cid>)>, JoinError> {
    let Some(bytes) = network.snapshot_of(peer).await? else {
        return Ok(None);
    };
    let manifest = engine.check_manifest(&bytes)?;
    if !worth(engine, &pincluster_crdt::cid_of(&bytes), &manifest)? {
        return Ok(None);
    }
    tracing::info!(%peer, keys = manifest.keys, chunks = manifest.chunks.len() + manifest.context.len(),
        height = manifest.height(), "joining from a snapshot");
    let mut kinds: HashMap<cid::Cid, ChunkKind> = HashMap::new();
    for cid in &manifest.chunks {
        kinds.insert(*cid, ChunkKind::Elements);
    }
    for cid in &manifest.context {
        kinds.insert(*cid, ChunkKind::Context);
    }
    let mut todo: Vec<cid::Cid> = Vec::new();
    for cid in manifest.chunks.iter().chain(&manifest.context).rev() {
        if !engine.has_block(cid)? {
            todo.push(*cid);
        }
    }
    let mut fetches = FuturesUnordered::new();
    loop {
        while fetches.len() < FETCHES_IN_FLIGHT && !todo.is_empty() {
            let asked: Vec<cid::Cid> = todo
                .split_off(todo.len().saturating_sub(CHUNKS_PER_REQUEST))
                .into_iter()
                .rev()
                .collect();
            let network = network.clone();
            fetches.push(async move {
                let answer = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    network.fetch_blocks(peer, asked.clone(), 0),
                )
                .await;
                (asked, answer)
            });
        }
        let Some((asked, answer)) = fetches.next().await else {
            break;
        };
        let blocks = answer.map_err(|_| JoinError::Timeout)??;
        let mut got = 0;
        for (cid, bytes) in blocks {
            let Some(kind) = kinds.get(&cid) else {
                continue;
            };
            tokio::task::block_in_place(|| engine.stage_chunk(*kind, &cid, &bytes))?;
            got += 1;
        }
        if got == 0 {
            return Err(JoinError::Incomplete);
        }
        // An answer cut short by its size limit: ask again for the rest.
        for cid in asked {
            if !engine.has_block(&cid)? {
                todo.push(cid);
            }
        }
    }
    let installed = tokio::task::block_in_place(|| engine.install_snapshot(&bytes))?;
    tracing::info!(
        keys = installed.keys,
        changed = installed.changed_keys,
        "snapshot installed"
    );
    let frontier = manifest.frontier.iter().map(|(c, _)| *c).collect();
    Ok(Some((installed, frontier)))
}

/// Whether this replica has merged fewer than half of `markers` blocks.
/// Counts at most that many of its own markers (CIDs only), so the test
/// costs little next to the sync it decides on.
fn lacks_most(engine: &Engine<FjallStore>, markers: u64) -> Result<bool, pincluster_crdt::Error> {
    let half = usize::try_from(markers / 2).unwrap_or(usize::MAX);
    let mut held = 0usize;
    for marker in engine.reader().processed().take(half) {
        marker?;
        held += 1;
    }
    Ok(held < half)
}

/// Hands every key of the state to `emit` as new, page by page: the
/// tracker's full recover pass after an install, without holding the
/// pinset in memory.
pub async fn emit_all<F, Fut>(reader: pincluster_crdt::Reader<FjallStore>, mut emit: F)
where
    F: FnMut(Vec<KeyChange>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, mut rx) = mpsc::channel::<Vec<KeyChange>>(2);
    let reading = tokio::task::spawn_blocking(move || {
        let mut page = Vec::with_capacity(EMIT_PAGE);
        // Short scans: one snapshot open for the whole pass would keep the
        // tracker's writes of the pass in RAM (see `Reader::iter_in_runs`).
        for entry in reader.iter_in_runs() {
            match entry {
                Ok((key, value)) => page.push(KeyChange {
                    key,
                    old: None,
                    new: Some(value),
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the installed state");
                    break;
                }
            }
            if page.len() >= EMIT_PAGE && tx.blocking_send(std::mem::take(&mut page)).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send(page);
    });
    while let Some(page) = rx.recv().await {
        emit(page).await;
    }
    let _ = reading.await;
}
