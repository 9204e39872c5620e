//! The IPFS daemon's pinset as last listed, for statuses of many pins: one
//! streamed `pin/ls` serves every page of a `GET /pins` (and the periodic
//! state sync) for a few seconds.
//!
//! A listing of a million pins held as a set in RAM costs about 100 MB, so
//! it is kept in the peer's fjall database instead: two keyspaces,
//! `pintracker_listing_a_v1` and `pintracker_listing_b_v1` (CID bytes → one
//! byte, the mode: 0 recursive, 1 direct). A new listing is written into the
//! one not in use, emptied first, and replaces the other once complete;
//! readers of the previous listing keep their handle.
//!
//! Most listings find the daemon's pinset as it was: the tracker patches
//! the listing in use with every operation it completes ([`DaemonPins::record`]),
//! so only a change behind its back (or an operation that completed while
//! the daemon was being listed) makes the next listing differ. So the
//! stream is not written into fjall as it arrives: it goes to a spill
//! file, an anonymous file in the tracker's folder read only once, while
//! an order-independent digest of it is summed ([`Digest`]). When the
//! digest is that of the listing in use, that listing is renewed and
//! nothing is written; otherwise the spill is loaded into the other
//! keyspace. Writing a million-pin listing into fjall on every renewal
//! held up to some 250 MiB of memtables and write buffers beside the
//! passes reading it (issue 13, BENCHMARKS.md "Tracker at scale").
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
use pincluster_crdt::store::fjall::{Database, Keyspace};

use super::TrackerStoreError;
use super::optracker::read_page;
use crate::folder::{MemtableBudget, tracker_keyspace_options};
use crate::ipfsconn::IpfsError;
use crate::types::PinMode;

/// How long a listing of the daemon's pinset serves status requests.
const LISTING_TTL: Duration = Duration::from_secs(5);
/// CIDs written per fjall batch while a listing streams in.
const BATCH: usize = 4096;
/// Memtable of each listing keyspace.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// Sealed memtables of a listing keyspace that a load waits on.
const SEALED_MEMTABLES: usize = 2;
/// The longest a load waits for one of them to be flushed: a flush of one
/// memtable takes milliseconds, and a load must not hang on a stuck one.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

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

    /// How the daemon held each of `cids` when listed, in order: a page in
    /// key order with one scan of its key range ([`read_page`]).
    pub fn modes(&self, cids: &[Cid]) -> Result<Vec<Option<PinMode>>, TrackerStoreError> {
        read_page(
            &self.space,
            cids,
            |cid| self.mode(cid),
            |_, v| Ok(mode_of(v)),
        )
    }
}

/// The mode a listing keyspace stores as its value.
fn mode_of(value: &[u8]) -> PinMode {
    match value {
        [1] => PinMode::Direct,
        _ => PinMode::Recursive,
    }
}

/// The byte a listing keyspace stores for `mode`.
fn mode_byte(mode: PinMode) -> u8 {
    match mode {
        PinMode::Recursive => 0,
        PinMode::Direct => 1,
    }
}

/// What the last listing gave: the pins, or why the daemon could not say.
/// A failure is kept as long as a listing, so that the pages of a status
/// request do not each wait on a daemon that is down.
type Outcome = Result<Listing, Arc<str>>;

/// Why a listing could not be made.
#[derive(Debug, thiserror::Error)]
enum ListError {
    /// The daemon did not answer, or answered with something unreadable.
    #[error(transparent)]
    Daemon(#[from] IpfsError),
    /// The listing keyspace could not be written or read.
    #[error("pin tracker store: {0}")]
    Store(#[from] pincluster_crdt::store::fjall::Error),
    /// The spill file could not be written or read back.
    #[error("spill file of the daemon's listing: {0}")]
    Spill(#[from] std::io::Error),
    /// A CID too long for a spill record (CIDs are under 100 bytes).
    #[error("a CID of {0} bytes in the daemon's listing")]
    TooLong(usize),
}

/// A digest of a set of pins that does not depend on their order: their
/// count and the wrapping sum of a keyed 128-bit hash of each (CID, mode).
/// Two listings with the same digest hold the same pins, but for a
/// negligible chance (about 2^-128 per comparison); the key is drawn at
/// random for each run, so a daemon (or whoever chose the CIDs it pins)
/// cannot aim for a collision. A sum, not a set, so a pin can also be
/// taken out again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Digest {
    count: u64,
    sum: u128,
}

/// The hash key of [`Digest`]: SipHash with a random key (std's
/// `RandomState`), over two domain-separated inputs for the 128 bits.
struct DigestKeys(std::hash::RandomState);

impl DigestKeys {
    fn new() -> Self {
        Self(std::hash::RandomState::new())
    }

    fn term(&self, key: &[u8], mode: u8) -> u128 {
        use std::hash::{BuildHasher, Hasher};
        let half = |domain: u8| {
            let mut h = self.0.build_hasher();
            h.write_u8(domain);
            h.write_u8(mode);
            h.write(key);
            h.finish()
        };
        (u128::from(half(0)) << 64) | u128::from(half(1))
    }

    fn add(&self, digest: &mut Digest, key: &[u8], mode: u8) {
        digest.count = digest.count.wrapping_add(1);
        digest.sum = digest.sum.wrapping_add(self.term(key, mode));
    }

    fn remove(&self, digest: &mut Digest, key: &[u8], mode: u8) {
        digest.count = digest.count.wrapping_sub(1);
        digest.sum = digest.sum.wrapping_sub(self.term(key, mode));
    }

    /// The digest of what `space` holds, read in one scan.
    fn of_keyspace(&self, space: &Keyspace) -> Result<Digest, ListError> {
        let mut digest = Digest::default();
        for entry in space.iter() {
            let (key, value) = entry.into_inner()?;
            self.add(&mut digest, &key, mode_byte(mode_of(&value)));
        }
        Ok(digest)
    }
}

/// The daemon's pins as last listed, in fjall.
pub struct DaemonPins {
    db: Database,
    spaces: [Keyspace; 2],
    /// One per keyspace, cloned into every [`Listing`] of it: a count
    /// above one means a reader still holds that keyspace.
    leases: [Arc<()>; 2],
    /// Where the spill file of a listing in progress is made (an
    /// anonymous file, gone once the listing is done or the peer stops).
    spill_dir: std::path::PathBuf,
    keys: DigestKeys,
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
    /// The digest of what keyspace `space` holds, patched with it by
    /// [`DaemonPins::record`]; `None` until a listing is written.
    digest: Option<Digest>,
}

impl std::fmt::Debug for DaemonPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonPins").finish_non_exhaustive()
    }
}

impl DaemonPins {
    /// Opens the listing keyspaces in `db`, emptied (a listing of a past
    /// run says nothing of the daemon now). The spill file of each listing
    /// is made in `spill_dir` (the tracker database's folder: on disk, as
    /// a listing of ten million pins spills some 400 MB).
    pub fn open(db: &Database, spill_dir: &std::path::Path) -> Result<Self, TrackerStoreError> {
        let options = || tracker_keyspace_options(MEMTABLE_BYTES);
        let a = db.keyspace("pintracker_listing_a_v1", options)?;
        let b = db.keyspace("pintracker_listing_b_v1", options)?;
        a.clear()?;
        b.clear()?;
        Ok(Self {
            db: db.clone(),
            spaces: [a, b],
            leases: [Arc::new(()), Arc::new(())],
            spill_dir: spill_dir.to_path_buf(),
            keys: DigestKeys::new(),
            last: tokio::sync::Mutex::new(Last {
                space: 1,
                outcome: None,
                at: None,
                digest: None,
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
    /// read from it do not contradict the operation until the next listing,
    /// and so that the next listing, if the daemon holds just that, is
    /// found unchanged. Waits for a listing in progress and patches that
    /// one.
    pub async fn record(&self, cid: &Cid, held: Option<PinMode>) -> Result<(), TrackerStoreError> {
        let mut last = self.last.lock().await;
        let Last {
            outcome, digest, ..
        } = &mut *last;
        if let Some(Ok(listing)) = outcome {
            let key = cid.to_bytes();
            let was = listing.space.get(&key)?.map(|v| mode_byte(mode_of(&v)));
            let now = held.map(mode_byte);
            if was == now {
                return Ok(());
            }
            match now {
                Some(mode) => listing.space.insert(&key, [mode])?,
                None => listing.space.remove(key.as_slice())?,
            }
            if let Some(digest) = digest {
                if let Some(mode) = was {
                    self.keys.remove(digest, &key, mode);
                }
                if let Some(mode) = now {
                    self.keys.add(digest, &key, mode);
                }
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
        let listed = self.list(list(), last.digest, &self.spaces[target]).await;
        let written = match listed {
            Ok(Listed::Unchanged) => {
                tracing::debug!("the daemon's pinset is as last listed");
                Ok(None)
            }
            Ok(Listed::Written(digest)) => Ok(Some(digest)),
            Ok(Listed::Spilled(spill)) => self.load(&self.spaces[target], spill).await.map(Some),
            Err(e) => Err(e),
        };
        let outcome = match written {
            Ok(digest) => {
                if let Some(digest) = digest {
                    last.space = target;
                    last.digest = Some(digest);
                }
                Ok(Listing {
                    space: self.spaces[last.space].clone(),
                    _lease: self.leases[last.space].clone(),
                })
            }
            // After a failure the listing in use is no longer patched, but
            // neither is its digest: it still says what that keyspace holds.
            Err(e) => Err(Arc::from(e.to_string().as_str())),
        };
        last.outcome = Some(outcome.clone());
        last.at = Some(Instant::now());
        outcome
    }

    /// Reads the streamed listing, summing its digest. With no listing to
    /// compare it with (the first one), straight into `target`; else into
    /// a spill file, [`Listed::Unchanged`] if its digest is `current`.
    async fn list<S>(
        &self,
        pins: S,
        current: Option<Digest>,
        target: &Keyspace,
    ) -> Result<Listed, ListError>
    where
        S: Stream<Item = Result<(Cid, PinMode), IpfsError>>,
    {
        use std::io::Write as _;
        let mut pins = std::pin::pin!(pins);
        let Some(current) = current else {
            let mut writer = Writer::new(&self.db, target)?;
            while let Some(pin) = pins.next().await {
                let (cid, mode) = pin?;
                writer.put(cid.to_bytes(), mode_byte(mode)).await?;
            }
            return Ok(Listed::Written(writer.finish(&self.keys)?));
        };
        let mut spill = std::io::BufWriter::new(anonymous_file(&self.spill_dir)?);
        let mut digest = Digest::default();
        while let Some(pin) = pins.next().await {
            let (cid, mode) = pin?;
            let (key, mode) = (cid.to_bytes(), mode_byte(mode));
            let len = u8::try_from(key.len()).map_err(|_| ListError::TooLong(key.len()))?;
            spill.write_all(&[mode, len])?;
            spill.write_all(&key)?;
            self.keys.add(&mut digest, &key, mode);
        }
        if digest == current {
            return Ok(Listed::Unchanged);
        }
        let mut file = spill.into_inner().map_err(|e| e.into_error())?;
        std::io::Seek::rewind(&mut file)?;
        Ok(Listed::Spilled(file))
    }

    /// Writes the spilled listing into `space`; returns the digest of what
    /// `space` then holds.
    async fn load(&self, space: &Keyspace, spill: std::fs::File) -> Result<Digest, ListError> {
        use std::io::Read as _;
        let mut writer = Writer::new(&self.db, space)?;
        let mut spill = std::io::BufReader::new(spill);
        let mut head = [0u8; 2];
        loop {
            match spill.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            let [mode, len] = head;
            let mut key = vec![0u8; usize::from(len)];
            spill.read_exact(&mut key)?;
            writer.put(key, mode).await?;
        }
        writer.finish(&self.keys)
    }
}

/// Writes a listing into a keyspace, emptied first, in batches.
///
/// A spill reads far faster than fjall flushes memtables, so a writer
/// seals each memtable itself once full ([`MemtableBudget`]) and waits
/// whenever [`SEALED_MEMTABLES`] of its keyspace await their flush: the
/// listing's memtables in RAM stay within a few times [`MEMTABLE_BYTES`]
/// however large the listing.
struct Writer<'a> {
    db: &'a Database,
    space: &'a Keyspace,
    batch: pincluster_crdt::store::fjall::OwnedWriteBatch,
    /// Bytes of CIDs in `batch`.
    pending: usize,
    written: MemtableBudget,
}

impl<'a> Writer<'a> {
    fn new(db: &'a Database, space: &'a Keyspace) -> Result<Self, ListError> {
        space.clear()?;
        Ok(Self {
            db,
            space,
            batch: db.batch(),
            pending: 0,
            written: MemtableBudget::new(MEMTABLE_BYTES),
        })
    }

    async fn put(&mut self, key: Vec<u8>, mode: u8) -> Result<(), ListError> {
        self.pending += key.len() + 1;
        self.batch.insert(self.space, key, [mode]);
        if self.batch.len() >= BATCH {
            let entries = self.batch.len();
            std::mem::replace(&mut self.batch, self.db.batch()).commit()?;
            self.written
                .wrote(self.space, entries, std::mem::take(&mut self.pending))?;
            let deadline = Instant::now() + FLUSH_WAIT;
            while self.space.sealed_memtable_count() >= SEALED_MEMTABLES
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Commits the rest; returns the digest of what the keyspace holds,
    /// read back (a daemon that listed a pin twice wrote it once, and the
    /// digest must say so).
    fn finish(self, keys: &DigestKeys) -> Result<Digest, ListError> {
        self.batch.commit()?;
        let digest = keys.of_keyspace(self.space)?;
        // Its last memtable goes to disk now rather than when the peer is
        // next quiet: the passes that read the listing find it in the
        // tables, and its memory is free for them.
        self.space.rotate_memtable()?;
        Ok(digest)
    }
}

/// A new file in `dir` that has no name: removed as soon as it is open,
/// so that nothing is left behind however the listing or the peer ends.
/// Only one listing runs at a time, so one name serves.
fn anonymous_file(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let path = dir.join("pintracker-listing.spill");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// What [`DaemonPins::list`] found.
enum Listed {
    /// The daemon holds what the listing in use holds.
    Unchanged,
    /// The first listing, written; the digest of what it holds.
    Written(Digest),
    /// Something else: the listing, spilled, to be loaded.
    Spilled(std::fs::File),
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
        let pins = DaemonPins::open(&db, dir.path()).unwrap();
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
        let pins = DaemonPins::open(&db, dir.path()).unwrap();
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

    /// A daemon listing exactly `pins`.
    fn daemon(
        pins: &[(Cid, PinMode)],
    ) -> impl Stream<Item = Result<(Cid, PinMode), IpfsError>> + use<> {
        let pins: Vec<_> = pins.iter().copied().map(Ok).collect();
        futures::stream::iter(pins)
    }

    /// Lists `pins` anew (the last listing forgotten); returns the listing
    /// and whether it was written into the database. A written listing
    /// always goes into the keyspace not in use, so whether the keyspace in
    /// use changed says it. (Not the database's sequence number: fjall's
    /// background flush of the last listing's memtable can move it at any
    /// time, and did on a loaded machine.)
    async fn relist(pins: &DaemonPins, held: &[(Cid, PinMode)]) -> (Listing, bool) {
        pins.invalidate().await;
        let before = pins.last.lock().await.space;
        let listing = pins.get(|| daemon(held)).await.unwrap();
        let after = pins.last.lock().await.space;
        (listing, after != before)
    }

    fn modes_of(listing: &Listing, cids: &[Cid]) -> Vec<Option<PinMode>> {
        cids.iter().map(|c| listing.mode(c).unwrap()).collect()
    }

    #[tokio::test]
    async fn an_unchanged_pinset_is_not_written_again_and_any_change_is() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let pins = DaemonPins::open(&db, dir.path()).unwrap();
        let all: Vec<Cid> = (0..200).map(cid).collect();
        let mut held: Vec<(Cid, PinMode)> = all.iter().map(|c| (*c, PinMode::Recursive)).collect();
        let (first, wrote) = relist(&pins, &held).await;
        assert!(wrote, "the first listing is written");
        drop(first);
        // The same pins in another order: nothing to write.
        held.reverse();
        let (listing, wrote) = relist(&pins, &held).await;
        assert!(!wrote, "an unchanged listing was written again");
        assert_eq!(
            modes_of(&listing, &all),
            vec![Some(PinMode::Recursive); 200]
        );
        drop(listing);
        // Each kind of change behind the tracker's back is seen: a pin
        // removed, one added, one whose mode changed.
        type Change = Box<dyn Fn(&mut Vec<(Cid, PinMode)>)>;
        let changes: [(&str, Change); 3] = [
            ("removed", Box::new(|h| h.retain(|(c, _)| *c != cid(7)))),
            ("added", Box::new(|h| h.push((cid(250), PinMode::Direct)))),
            ("mode changed", Box::new(|h| h[0].1 = PinMode::Direct)),
        ];
        for (what, change) in changes {
            change(&mut held);
            let (listing, wrote) = relist(&pins, &held).await;
            assert!(wrote, "{what}: the changed pinset was not written");
            let expected: Vec<Option<PinMode>> = all
                .iter()
                .chain([&cid(250)])
                .map(|c| held.iter().find(|(h, _)| h == c).map(|(_, m)| *m))
                .collect();
            let cids: Vec<Cid> = all.iter().copied().chain([cid(250)]).collect();
            assert_eq!(modes_of(&listing, &cids), expected, "{what}");
        }
    }

    #[tokio::test]
    async fn the_tracker_s_own_operations_keep_the_listing_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let pins = DaemonPins::open(&db, dir.path()).unwrap();
        let mut held: Vec<(Cid, PinMode)> = (0..50).map(|i| (cid(i), PinMode::Recursive)).collect();
        drop(relist(&pins, &held).await);
        // The tracker pins one, unpins another, re-pins a third directly,
        // and records a pin the listing already had: the daemon now holds
        // exactly that, so its next listing writes nothing.
        pins.record(&cid(100), Some(PinMode::Recursive))
            .await
            .unwrap();
        pins.record(&cid(3), None).await.unwrap();
        pins.record(&cid(4), Some(PinMode::Direct)).await.unwrap();
        pins.record(&cid(5), Some(PinMode::Recursive))
            .await
            .unwrap();
        held.push((cid(100), PinMode::Recursive));
        held.retain(|(c, _)| *c != cid(3));
        held[3].1 = PinMode::Direct; // cid(4), now that cid(3) is gone
        let (listing, wrote) = relist(&pins, &held).await;
        assert!(!wrote, "the recorded operations made the listing differ");
        assert_eq!(
            modes_of(&listing, &[cid(100), cid(3), cid(4), cid(5)]),
            [
                Some(PinMode::Recursive),
                None,
                Some(PinMode::Direct),
                Some(PinMode::Recursive)
            ]
        );
        drop(listing);
        // A removal behind the back after them is still seen.
        held.retain(|(c, _)| *c != cid(100));
        let (listing, wrote) = relist(&pins, &held).await;
        assert!(wrote);
        assert_eq!(listing.mode(&cid(100)).unwrap(), None);
    }

    #[tokio::test]
    async fn a_pin_listed_twice_or_a_failed_listing_cannot_hide_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let pins = DaemonPins::open(&db, dir.path()).unwrap();
        // A daemon that lists a pin twice: stored once.
        let twice = [(cid(1), PinMode::Recursive), (cid(1), PinMode::Recursive)];
        drop(relist(&pins, &twice).await);
        // The tracker unpins it; the daemon then lists it once: it holds
        // it, whatever the first listing's count said.
        pins.record(&cid(1), None).await.unwrap();
        let (listing, _) = relist(&pins, &twice[..1]).await;
        assert_eq!(listing.mode(&cid(1)).unwrap(), Some(PinMode::Recursive));
        drop(listing);
        // While the last listing failed, operations do not patch the
        // listing in use; the next listing still tells it as it is.
        pins.invalidate().await;
        let down = futures::stream::iter([Err(IpfsError::Decode {
            op: "pin/ls",
            detail: "bad line".into(),
        })]);
        let err = pins.get(|| down).await.unwrap_err();
        assert!(err.contains("bad line"), "{err}");
        pins.record(&cid(1), None).await.unwrap();
        let (listing, _) = relist(&pins, &twice[..1]).await;
        assert_eq!(listing.mode(&cid(1)).unwrap(), Some(PinMode::Recursive));
        drop(listing);
        let (listing, _) = relist(&pins, &[]).await;
        assert_eq!(listing.mode(&cid(1)).unwrap(), None);
    }
}
