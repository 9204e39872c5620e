//! The IPFS daemon's pinset as last listed, for statuses of many pins: one
//! streamed `pin/ls` serves every page of a `GET /pins` (and the periodic
//! state sync) for a few seconds.
//!
//! A listing of a million pins held as a set in RAM costs about 100 MB, so
//! it is written into the peer's fjall database instead, as it streams in:
//! two keyspaces, `pintracker_listing_a_v1` and `pintracker_listing_b_v1`
//! (CID bytes → one byte, the mode: 0 recursive, 1 direct). A new listing is written into the one not in
//! use, emptied first, and replaces the other once complete; readers of
//! the previous listing keep their handle. A reader older than two
//! listings (a status page that took longer than twice the listing's life)
//! would see the emptied keyspace: no pin reads that slowly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cid::Cid;
use futures::{Stream, StreamExt};
use pincluster_crdt::store::fjall::{Database, Keyspace, KeyspaceCreateOptions};

use super::TrackerStoreError;
use crate::ipfsconn::IpfsError;
use crate::types::PinMode;

/// How long a listing of the daemon's pinset serves status requests.
const LISTING_TTL: Duration = Duration::from_secs(5);
/// CIDs written per fjall batch while a listing streams in.
const BATCH: usize = 4096;
/// Memtable of each listing keyspace.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// One complete listing of the daemon's pins.
#[derive(Clone)]
pub struct Listing(Keyspace);

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Listing").finish_non_exhaustive()
    }
}

impl Listing {
    /// Whether the daemon held `cid` (recursively or directly) when listed.
    pub fn contains(&self, cid: &Cid) -> Result<bool, TrackerStoreError> {
        Ok(self.0.contains_key(cid.to_bytes())?)
    }

    /// How the daemon held `cid` when listed, if it did.
    pub fn mode(&self, cid: &Cid) -> Result<Option<PinMode>, TrackerStoreError> {
        Ok(self.0.get(cid.to_bytes())?.map(|v| match *v {
            [1] => PinMode::Direct,
            _ => PinMode::Recursive,
        }))
    }
}

/// What the last listing gave: the pins, or why the daemon could not say.
/// A failure is kept as long as a listing, so that the pages of a status
/// request do not each wait on a daemon that is down.
type Outcome = Result<Listing, Arc<str>>;

/// The daemon's pins as last listed, in fjall.
pub struct DaemonPins {
    db: Database,
    spaces: [Keyspace; 2],
    /// Which of `spaces` the last complete listing is in, and when it was
    /// made with what outcome (`None`: list again).
    last: tokio::sync::Mutex<(usize, Option<(Instant, Outcome)>)>,
}

impl std::fmt::Debug for DaemonPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonPins").finish_non_exhaustive()
    }
}

impl DaemonPins {
    /// Opens the listing keyspaces in `db`, emptied (a listing of a past
    /// run says nothing of the daemon now).
    pub fn open(db: &Database) -> Result<Self, TrackerStoreError> {
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let a = db.keyspace("pintracker_listing_a_v1", options)?;
        let b = db.keyspace("pintracker_listing_b_v1", options)?;
        a.clear()?;
        b.clear()?;
        Ok(Self {
            db: db.clone(),
            spaces: [a, b],
            last: tokio::sync::Mutex::new((1, None)),
        })
    }

    /// Forgets the last listing: the next [`DaemonPins::get`] lists again.
    pub async fn invalidate(&self) {
        self.last.lock().await.1 = None;
    }

    /// Brings the last listing in line with an operation the tracker just
    /// completed (`Some(mode)`: pinned, `None`: unpinned), so that statuses
    /// read from it do not contradict the operation until the next listing.
    /// Waits for a listing in progress and patches that one.
    pub async fn record(&self, cid: &Cid, held: Option<PinMode>) -> Result<(), TrackerStoreError> {
        let last = self.last.lock().await;
        if let Some((_, Ok(listing))) = &last.1 {
            match held {
                Some(PinMode::Recursive) => listing.0.insert(cid.to_bytes(), [0u8])?,
                Some(PinMode::Direct) => listing.0.insert(cid.to_bytes(), [1u8])?,
                None => listing.0.remove(cid.to_bytes())?,
            }
        }
        Ok(())
    }

    /// The last listing if it is recent, else a new one from `list` (the
    /// connector's streamed `pin/ls`).
    pub async fn get<S>(&self, list: impl FnOnce() -> S) -> Outcome
    where
        S: Stream<Item = Result<(Cid, PinMode), IpfsError>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = &last.1
            && at.elapsed() < LISTING_TTL
        {
            return outcome.clone();
        }
        // Written into the keyspace not in use; a failed listing leaves
        // the one in use as it is.
        let target = 1 - last.0;
        let outcome = match self.fill(&self.spaces[target], list()).await {
            Ok(()) => {
                last.0 = target;
                Ok(Listing(self.spaces[target].clone()))
            }
            Err(e) => Err(Arc::from(e.as_str())),
        };
        last.1 = Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// Writes the streamed listing into `space`, emptied first.
    async fn fill<S>(&self, space: &Keyspace, pins: S) -> Result<(), String>
    where
        S: Stream<Item = Result<(Cid, PinMode), IpfsError>>,
    {
        space.clear().map_err(|e| e.to_string())?;
        let mut pins = std::pin::pin!(pins);
        let mut batch = self.db.batch();
        while let Some(pin) = pins.next().await {
            let (cid, mode) = pin.map_err(|e| e.to_string())?;
            let mode = match mode {
                PinMode::Recursive => 0u8,
                PinMode::Direct => 1,
            };
            batch.insert(space, cid.to_bytes(), vec![mode]);
            if batch.len() >= BATCH {
                std::mem::replace(&mut batch, self.db.batch())
                    .commit()
                    .map_err(|e| e.to_string())?;
            }
        }
        batch.commit().map_err(|e| e.to_string())
    }
}
