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
use pincluster_crdt::store::fjall::{Database, KeyspaceCreateOptions};
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

/// [`open_engine`], and the fjall database under it, where the daemon keeps
/// what else grows with the pinset (the pin tracker's queue), so that it
/// shares the store's journal and memory budget.
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
