//! The configuration folder's files, for the daemon ([`crate::peer`]) and
//! the offline state commands ([`crate::consensus::offline`]) alike:
//! `cluster.lock` (one user of the folder at a time), the `peerstore` (one
//! multiaddr per line: the peers to dial at start), and the fjall store the
//! CRDT engine runs on. `service.json` is [`crate::config`]'s and
//! `identity.json` [`crate::identity`]'s; both write through
//! [`write_atomic`].
//!
//! This module depends on no other part of the peer, so that the config and
//! identity modules can use it without depending on each other.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p::Multiaddr;
use pincluster_crdt::store::fjall::{self, Database, KeyspaceCreateOptions};
use pincluster_crdt::store::{FjallOptions, FjallStore};
use pincluster_crdt::{Engine, Limits, Signer, Verifier};

/// The lock file's name inside the folder.
const LOCK_FILE: &str = "cluster.lock";

/// Why the folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock; callers say who that is likely to be.
    #[error("{} is locked", .0.display())]
    Held(PathBuf),
    /// The lock file could not be opened or locked.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The folder's lock, held for as long as this value lives.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

/// Takes `dir`'s lock without waiting: fails with [`LockError::Held`] when
/// a daemon or a state command already holds it.
pub fn lock(dir: &Path) -> Result<FolderLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match file.try_lock() {
        Ok(()) => Ok(FolderLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(LockError::Held(path)),
        Err(fs::TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

/// `<store>.<suffix>` beside the store at `live` (`state import` stages
/// its new store at `.import` and moves the old one aside to `.old`).
pub fn sibling(live: &Path, suffix: &str) -> PathBuf {
    let mut name = live.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{suffix}"));
    live.with_file_name(name)
}

/// Finishes a `state import` killed while it swapped its staged store in.
/// The old store is moved aside only once the staged one is complete, so
/// a missing store beside both means the import had finished: its store
/// goes in. Without this, a crash between the two renames left no store,
/// and the next start an empty pinset.
pub fn finish_interrupted_import(live: &Path) -> io::Result<()> {
    let (staged, old) = (sibling(live, "import"), sibling(live, "old"));
    if !live.exists() && staged.exists() && old.exists() {
        tracing::warn!(store = %live.display(), "finishing a state import that was interrupted");
        fs::rename(&staged, live)?;
    }
    if live.exists() && old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Opens (or creates) the fjall store at `path` and the CRDT engine on it.
pub fn open_engine(
    path: &Path,
    options: FjallOptions,
    signer: Arc<dyn Signer>,
    verifier: Arc<dyn Verifier>,
) -> Result<Engine<FjallStore>, pincluster_crdt::Error> {
    Ok(open_engine_and_database(path, options, signer, verifier)?.0)
}

/// [`open_engine`], and the fjall database under it (for the memtable
/// upkeep; the pin tracker has a database of its own:
/// [`open_tracker_database`]).
pub fn open_engine_and_database(
    path: &Path,
    options: FjallOptions,
    signer: Arc<dyn Signer>,
    verifier: Arc<dyn Verifier>,
) -> Result<(Engine<FjallStore>, Database), pincluster_crdt::Error> {
    let store = FjallStore::open(path, options)?;
    let db = store.database().clone();
    // What the journal replayed (the end of a `state import`, the last
    // writes before a stop) would otherwise stay in RAM until more writes
    // fill those memtables.
    flush_memtables(&db);
    Ok((
        Engine::open(store, signer, verifier, Limits::default())?,
        db,
    ))
}

/// The folder of the pin tracker's own database, beside the store at `live`.
pub fn tracker_database_path(live: &Path) -> PathBuf {
    sibling(live, "tracker")
}

/// The block cache of the tracker's database: its reads are the queue's
/// head and single records, which a few MiB serve.
const TRACKER_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// The size of the tables compaction writes in the tracker's database
/// (fjall's default is 64 MiB). Until a table is finished, its index
/// keeps the last key of each block written, and a key read from disk
/// shares the block it was read from: a compaction holds about as much of
/// its input in RAM as the table it writes. A heap profile of the
/// tracker's start-up pass at 1,000,000 pins put 57 of its 129 MiB peak
/// there with 64 MiB tables; with 8 MiB the peer peaked at 113–126 MiB at
/// 1 M pins (136–164 before) and 154 MiB at 10 M (210–230), and the pass
/// was no slower (BENCHMARKS.md).
const TRACKER_TABLE_BYTES: u64 = 8 * 1024 * 1024;

/// How each keyspace of the tracker's database is made: memtables of
/// `memtable` bytes, compacted into small tables.
pub fn tracker_keyspace_options(memtable: u64) -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(memtable)
        .compaction_strategy(Arc::new(
            fjall::compaction::Leveled::default().with_table_target_size(TRACKER_TABLE_BYTES),
        ))
}

/// Opens the pin tracker's database, empty, beside the store at `live`
/// (what a previous run left is deleted: operations are not resumed, the
/// start-up pass queues the pinset again), and deletes the tracker's
/// keyspaces that earlier versions kept in `store`.
///
/// It is not the store's database because fjall keeps every version
/// written anywhere in a database for as long as any snapshot of it is
/// open, and a state snapshot is built from one consistent scan of the
/// pinset: at 10,000,000 pins that scan took two minutes, during which the
/// tracker's start-up pass wrote some 30 million records, all of them held
/// in RAM (the producer peaked at 3.8 GB). Nothing in it needs to survive a
/// crash, so the journal is left to the OS and the folder is removed when
/// the database is dropped.
pub fn open_tracker_database(live: &Path, store: &Database) -> Result<Database, fjall::Error> {
    for name in store.list_keyspace_names() {
        if name.starts_with("pintracker_") {
            let keyspace = store.keyspace(&name, KeyspaceCreateOptions::default)?;
            store.delete_keyspace(keyspace)?;
        }
    }
    let path = tracker_database_path(live);
    match fs::remove_dir_all(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    Database::builder(&path)
        .cache_size(TRACKER_CACHE_BYTES)
        .manual_journal_persist(true)
        .temporary(true)
        .open()
}

/// Rotates the memtable of every keyspace of `db` that holds one, so that
/// fjall flushes them to disk in the background and their memory goes
/// back (an empty memtable is left as it is). Failures are logged: the
/// memory stays, nothing is lost.
pub fn flush_memtables(db: &Database) {
    if db.write_buffer_size() == 0 {
        return;
    }
    for name in db.list_keyspace_names() {
        let rotated = db
            .keyspace(&name, KeyspaceCreateOptions::default)
            .and_then(|ks| ks.rotate_memtable());
        if let Err(e) = rotated {
            tracing::warn!(keyspace = %&*name, error = %e, "cannot flush a memtable");
        }
    }
}

/// What fjall counts for each entry of a memtable beyond its key and
/// value (the size of lsm-tree's `InternalValue`), for [`MemtableBudget`]:
/// counting as fjall does, the writer seals a memtable when fjall would.
const ENTRY_OVERHEAD: u64 = 80;

/// Seals the memtable of one keyspace as soon as what was written to it
/// since its last rotation reaches `limit`, on the writer's thread.
///
/// fjall notices a full memtable on each write, but only asks one of its
/// worker threads to rotate it, with a message that waits behind every
/// queued flush and compaction (and is dropped when that queue is full).
/// Meanwhile the memtable keeps growing: in the tracker's start-up pass at
/// 10,000,000 pins with the IPFS daemon down, the 8 MiB memtables of the
/// operation keyspaces grew to 175 MB between two rotations and the peer
/// peaked at 402–443 MiB (BENCHMARKS.md). Sealing here bounds what RAM
/// holds to the memtables fjall is flushing plus `limit`; fjall then
/// holds the writer back while four sealed memtables of the keyspace wait.
#[derive(Debug)]
pub struct MemtableBudget {
    limit: u64,
    written: u64,
}

impl MemtableBudget {
    pub fn new(limit: u64) -> Self {
        Self { limit, written: 0 }
    }

    /// Counts `entries` of `bytes` in all (keys and values) written to
    /// `space`, and seals its memtable once the budget is spent. A memtable
    /// that fjall already rotated is sealed again early: a smaller table,
    /// no harm.
    pub fn wrote(
        &mut self,
        space: &fjall::Keyspace,
        entries: usize,
        bytes: usize,
    ) -> Result<(), fjall::Error> {
        self.written += bytes as u64 + entries as u64 * ENTRY_OVERHEAD;
        if self.written >= self.limit {
            self.written = 0;
            space.rotate_memtable()?;
        }
        Ok(())
    }

    /// Starts counting again after the caller rotated the memtable itself.
    pub fn reset(&mut self) {
        self.written = 0;
    }
}

/// Writes every memtable of `db` to tables on disk and waits for each
/// flush, so that nothing of them is left in the journal. What a closed database leaves in its
/// journal is replayed into RAM when it opens again: a `state import` of
/// 1,000,000 pins left 490 MB of journal, which the daemon's first start
/// replayed before its REST API came up (9–15 s to start instead of about
/// 5 s, BENCHMARKS.md "First minute with the daemon down").
pub fn flush_memtables_and_wait(db: &Database) -> Result<(), fjall::Error> {
    for name in db.list_keyspace_names() {
        db.keyspace(&name, KeyspaceCreateOptions::default)?
            .rotate_memtable_and_wait()?;
    }
    Ok(())
}

/// The peerstore's addresses; a missing file is empty, and unreadable lines
/// are skipped with a warning.
pub fn read_peerstore(path: &Path) -> Vec<Multiaddr> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| match l.parse() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(line = l, error = %e, "peerstore line ignored");
                None
            }
        })
        .collect()
}

/// Saves `addrs` as the peerstore. A failure is logged, not returned: the
/// peerstore only speeds up the next start.
pub fn write_peerstore(path: &Path, addrs: &[Multiaddr]) {
    let mut text = String::new();
    for a in addrs {
        text.push_str(&a.to_string());
        text.push('\n');
    }
    if let Err(e) = fs::write(path, text) {
        tracing::warn!(path = %path.display(), error = %e, "peerstore not saved");
    }
}

/// Replaces `path` with `contents` so that a crash leaves the old file or the
/// new one, never half of one. The file is readable by its owner only: the
/// configuration folder holds the cluster secret and the private key.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    // The rename is durable only once the folder itself is synced.
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fjall's own rotation of a full memtable is a message to its worker
    /// threads; a database without any shows what the writer does alone.
    #[test]
    fn a_full_memtable_is_sealed_by_its_writer_not_by_fjall_later() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path())
            .worker_threads_unchecked(0)
            .open()
            .unwrap();
        let limit = 64 * 1024;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(limit);
        let (left, right) = (
            db.keyspace("left", options).unwrap(),
            db.keyspace("right", options).unwrap(),
        );
        let mut budget = MemtableBudget::new(limit);
        // Two and a half memtables' worth in each keyspace (fewer than the
        // four sealed memtables at which fjall stops writers, and nothing
        // flushes them here).
        let value = [7u8; 100];
        let n = (limit * 5 / 2) as usize / (4 + value.len() + ENTRY_OVERHEAD as usize);
        for i in 0..n as u32 {
            left.insert(i.to_be_bytes(), value).unwrap();
            budget.wrote(&left, 1, 4 + value.len()).unwrap();
            right.insert(i.to_be_bytes(), value).unwrap();
        }
        assert_eq!(left.sealed_memtable_count(), 2, "sealed as each filled");
        assert_eq!(
            right.sealed_memtable_count(),
            0,
            "left to fjall, the memtable only grows while no worker comes"
        );
        assert_eq!(left.len().unwrap(), n, "nothing lost in the rotations");
    }

    /// A database flushed before it is closed opens with nothing to
    /// replay from its journal: no memtable in RAM, the data in tables.
    #[test]
    fn a_flushed_database_reopens_without_replaying_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        let write = |flush: bool| {
            let db = Database::builder(dir.path()).open().unwrap();
            let ks = db.keyspace("t", KeyspaceCreateOptions::default).unwrap();
            for i in 0u32..1_000 {
                ks.insert(i.to_be_bytes(), [7u8; 100]).unwrap();
            }
            if flush {
                flush_memtables_and_wait(&db).unwrap();
            }
        };
        let reopened = || {
            let db = Database::builder(dir.path()).open().unwrap();
            let ks = db.keyspace("t", KeyspaceCreateOptions::default).unwrap();
            assert_eq!(ks.len().unwrap(), 1_000);
            db.write_buffer_size()
        };
        // Unflushed, the writes come back from the journal into RAM...
        write(false);
        assert!(reopened() > 0);
        // ...flushed, from tables on disk only.
        write(true);
        assert_eq!(reopened(), 0);
    }

    #[test]
    fn the_tracker_database_starts_empty_and_leaves_the_store_alone() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("fjall");
        let store = Database::builder(&live).open().unwrap();
        // What an earlier version kept in the store, beside the state.
        let legacy = store
            .keyspace("pintracker_ops_v1", KeyspaceCreateOptions::default)
            .unwrap();
        legacy.insert(b"cid", b"op").unwrap();
        let state = store
            .keyspace("state", KeyspaceCreateOptions::default)
            .unwrap();
        state.insert(b"pin", b"kept").unwrap();

        let tracker = open_tracker_database(&live, &store).unwrap();
        let ops = tracker
            .keyspace("pintracker_ops_v1", KeyspaceCreateOptions::default)
            .unwrap();
        ops.insert(b"cid", b"op").unwrap();
        assert!(!store.keyspace_exists("pintracker_ops_v1"));
        assert_eq!(state.get(b"pin").unwrap().as_deref(), Some(&b"kept"[..]));
        drop((ops, tracker));
        assert!(
            !tracker_database_path(&live).exists(),
            "removed when the peer stops"
        );

        // A crash leaves the folder behind: the next start does not see it.
        let path = tracker_database_path(&live);
        fs::create_dir_all(path.join("leftover")).unwrap();
        let tracker = open_tracker_database(&live, &store).unwrap();
        assert!(!path.join("leftover").exists());
        let ops = tracker
            .keyspace("pintracker_ops_v1", KeyspaceCreateOptions::default)
            .unwrap();
        assert!(ops.is_empty().unwrap());
    }
}
