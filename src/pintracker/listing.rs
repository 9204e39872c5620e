//! The IPFS daemon's pinset as last listed, for statuses of many pins: one
//! streamed `pin/ls` serves every page of a `GET /pins` (and the periodic
//! state sync) for a few seconds.
//!
//! A listing of a million pins held as a set in RAM costs about 100 MB, so
//! it is written into the peer's fjall database instead, as it streams in:
//! two keyspaces, `pintracker_listing_a_v1` and `pintracker_listing_b_v1`
//! (CID bytes → one byte, the mode: 0 recursive, 1 direct). A new listing is written into the one not in
//! use, emptied first, and replaces the other once complete; readers of
//! the previous listing keep their handle.
//!
//! A pass over a large pinset (a `GET /pins` of a million statuses, the
//! periodic state sync) takes one listing at its start and reads every
//! page from it: listing again per page once the listing is a few seconds
//! old would list the whole daemon again and again within one pass (a
//! million-pin `pin/ls` takes tens of seconds). Such a reader may hold its
//! listing for longer than two listings' life, so a keyspace a reader
//! still holds is never emptied: while one does, callers get the newest
//! listing there is, even past its freshness.

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

/// One complete listing of the daemon's pins. While a clone of it lives,
/// its keyspace is not emptied for a new listing.
#[derive(Clone)]
pub struct Listing {
    space: Keyspace,
    /// Counts the holders of this keyspace (see [`DaemonPins::get`]).
    _lease: Arc<()>,
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Listing").finish_non_exhaustive()
    }
}

impl Listing {
    /// Whether the daemon held `cid` (recursively or directly) when listed.
    pub fn contains(&self, cid: &Cid) -> Result<bool, TrackerStoreError> {
        Ok(self.space.contains_key(cid.to_bytes())?)
    }

    /// How the daemon held `cid` when listed, if it did.
    pub fn mode(&self, cid: &Cid) -> Result<Option<PinMode>, TrackerStoreError> {
        Ok(self.space.get(cid.to_bytes())?.map(|v| mode_of(&v)))
    }

    /// How the daemon held each of `cids` when listed, in order.
    ///
    /// CIDs in ascending byte order, as a pass over the pinset reads them
    /// (its keys are the CIDs' bytes, as here), are answered by one scan
    /// of their key range merged with them. A point read per CID would
    /// load the keyspace's filter and data blocks at random: with the
    /// tracker's small block cache, a pass over a million pins read
    /// gigabytes from the files (most of the CPU of verifying a million
    /// pins went there). Other CIDs get a point read each.
    pub fn modes(&self, cids: &[Cid]) -> Result<Vec<Option<PinMode>>, TrackerStoreError> {
        let keys: Vec<Vec<u8>> = cids.iter().map(Cid::to_bytes).collect();
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            return Ok(Vec::new());
        };
        if !keys.is_sorted() {
            return cids.iter().map(|cid| self.mode(cid)).collect();
        }
        let mut modes = Vec::with_capacity(keys.len());
        let mut listed = self.space.range(first.clone()..=last.clone());
        let mut next = listed.next().map(|e| e.into_inner()).transpose()?;
        for key in &keys {
            // Listed keys below this one belong to no CID asked for.
            while next
                .as_ref()
                .is_some_and(|(k, _)| k.as_ref() < key.as_slice())
            {
                next = listed.next().map(|e| e.into_inner()).transpose()?;
            }
            modes.push(match &next {
                Some((k, v)) if k.as_ref() == key.as_slice() => Some(mode_of(v)),
                _ => None,
            });
        }
        Ok(modes)
    }
}

/// The mode a listing keyspace stores as its value.
fn mode_of(value: &[u8]) -> PinMode {
    match value {
        [1] => PinMode::Direct,
        _ => PinMode::Recursive,
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
    /// One per keyspace, cloned into every [`Listing`] of it: a count
    /// above one means a reader still holds that keyspace.
    leases: [Arc<()>; 2],
    last: tokio::sync::Mutex<Last>,
}

/// The last listing.
struct Last {
    /// Which of the keyspaces the last complete listing is in.
    space: usize,
    /// What the last listing gave (`None`: nothing listed yet).
    outcome: Option<Outcome>,
    /// When it was made (`None`: forgotten, list again when possible).
    at: Option<Instant>,
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
            leases: [Arc::new(()), Arc::new(())],
            last: tokio::sync::Mutex::new(Last {
                space: 1,
                outcome: None,
                at: None,
            }),
        })
    }

    /// Forgets the last listing: the next [`DaemonPins::get`] lists again
    /// (unless a reader still holds the other keyspace).
    pub async fn invalidate(&self) {
        self.last.lock().await.at = None;
    }

    /// Brings the last listing in line with an operation the tracker just
    /// completed (`Some(mode)`: pinned, `None`: unpinned), so that statuses
    /// read from it do not contradict the operation until the next listing.
    /// Waits for a listing in progress and patches that one.
    pub async fn record(&self, cid: &Cid, held: Option<PinMode>) -> Result<(), TrackerStoreError> {
        let last = self.last.lock().await;
        if let Some(Ok(listing)) = &last.outcome {
            match held {
                Some(PinMode::Recursive) => listing.space.insert(cid.to_bytes(), [0u8])?,
                Some(PinMode::Direct) => listing.space.insert(cid.to_bytes(), [1u8])?,
                None => listing.space.remove(cid.to_bytes())?,
            }
        }
        Ok(())
    }

    /// The last listing if it is recent, else a new one from `list` (the
    /// connector's streamed `pin/ls`). While a reader still holds the
    /// keyspace a new listing would be written into, the last listing,
    /// however old.
    pub async fn get<S>(&self, list: impl FnOnce() -> S) -> Outcome
    where
        S: Stream<Item = Result<(Cid, PinMode), IpfsError>>,
    {
        let mut last = self.last.lock().await;
        // Written into the keyspace not in use; a failed listing leaves
        // the one in use as it is.
        let target = 1 - last.space;
        let fresh = last.at.is_some_and(|at| at.elapsed() < LISTING_TTL);
        let held = Arc::strong_count(&self.leases[target]) > 1;
        if let Some(outcome) = &last.outcome
            && (fresh || held)
        {
            return outcome.clone();
        }
        let outcome = match self.fill(&self.spaces[target], list()).await {
            Ok(()) => {
                last.space = target;
                Ok(Listing {
                    space: self.spaces[target].clone(),
                    _lease: self.leases[target].clone(),
                })
            }
            Err(e) => Err(Arc::from(e.as_str())),
        };
        last.outcome = Some(outcome.clone());
        last.at = Some(Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(i: u8) -> Cid {
        pincluster_crdt::cid_of(&[i])
    }

    /// A daemon whose `pin/ls` lists `cids` recursively, counting calls.
    fn listing_of(
        cids: &[Cid],
        calls: &std::sync::atomic::AtomicUsize,
    ) -> impl Stream<Item = Result<(Cid, PinMode), IpfsError>> + use<> {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pins: Vec<_> = cids.iter().map(|c| Ok((*c, PinMode::Recursive))).collect();
        futures::stream::iter(pins)
    }

    #[tokio::test]
    async fn modes_of_a_page_match_point_reads_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let pins = DaemonPins::open(&db).unwrap();
        let all: Vec<Cid> = (0..64).map(cid).collect();
        // Every third pin held recursively, every fifth directly (unless
        // recursive), the rest not at all.
        let held: Vec<(Cid, PinMode)> = all
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match (i % 3, i % 5) {
                (0, _) => Some((*c, PinMode::Recursive)),
                (_, 0) => Some((*c, PinMode::Direct)),
                _ => None,
            })
            .collect();
        let listing = pins
            .get(|| futures::stream::iter(held.clone().into_iter().map(Ok)))
            .await
            .unwrap();
        let expected = |cids: &[Cid]| -> Vec<Option<PinMode>> {
            cids.iter().map(|c| listing.mode(c).unwrap()).collect()
        };
        let mut sorted = all[1..60].to_vec();
        sorted.sort_by_key(Cid::to_bytes);
        sorted.insert(3, sorted[3]); // a CID asked twice
        let modes = listing.modes(&sorted).unwrap();
        assert_eq!(modes, expected(&sorted));
        assert!(modes.contains(&Some(PinMode::Direct)));
        assert!(modes.contains(&Some(PinMode::Recursive)));
        assert!(modes.contains(&None));
        // Unsorted (explicit CIDs of a request): point reads, same answer.
        let mut unsorted = sorted.clone();
        unsorted.reverse();
        assert_eq!(listing.modes(&unsorted).unwrap(), expected(&unsorted));
        assert!(listing.modes(&[]).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_reader_keeps_its_listing_across_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let pins = DaemonPins::open(&db).unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        // A long pass takes the first listing and holds it.
        let first = pins.get(|| listing_of(&[cid(1)], &calls)).await.unwrap();
        pins.invalidate().await;
        let second = pins.get(|| listing_of(&[cid(2)], &calls)).await.unwrap();
        assert!(second.contains(&cid(2)).unwrap());
        pins.invalidate().await;
        // A third listing would go into the first one's keyspace, which the
        // pass still reads: the newest listing is served instead.
        let third = pins.get(|| listing_of(&[cid(3)], &calls)).await.unwrap();
        assert!(
            first.contains(&cid(1)).unwrap(),
            "the pass's listing was emptied under it"
        );
        assert!(!first.contains(&cid(3)).unwrap());
        assert!(third.contains(&cid(2)).unwrap());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Once the pass is over, the daemon is listed again.
        drop(first);
        let fourth = pins.get(|| listing_of(&[cid(4)], &calls)).await.unwrap();
        assert!(fourth.contains(&cid(4)).unwrap());
        assert!(!fourth.contains(&cid(1)).unwrap());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
