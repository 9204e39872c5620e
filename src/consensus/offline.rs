//! The pinset of a stopped peer: `state export`, `state import` and
//! `state cleanup` (spec §5.2). Each takes the folder's `cluster.lock`, as
//! the daemon does, so none runs beside a daemon on the same folder. It
//! lives in consensus because import writes the CRDT, and consensus is its
//! only writer.
//!
//! The export format is ipfs-cluster's: a stream of JSON [`Pin`] objects,
//! one per line. Import reads any whitespace between objects, as the
//! reference does.
//!
//! **Import** replaces the pinset in three steps:
//!
//! 1. Build the new pinset in a fresh store beside the live one
//!    (`<store>.import`): one thread parses and checks each pin (JSON, CID,
//!    type), the other commits them as ordinary signed deltas of up to
//!    [`IMPORT_DELTA_BYTES`]. A million pins make a few hundred deltas, so
//!    the import costs a few hundred batched commits instead of a million,
//!    and the daemon, once started, announces the new heads and other peers
//!    fetch and merge them like any other change.
//! 2. On bad input, drop the staged store: the live one was never touched.
//! 3. Otherwise swap the folders by renames: the old store goes only once
//!    the new one is complete.
//!
//! A snapshot install (`Engine::install_state`) would be faster still, but
//! its elements belong to no block another peer could fetch: the imported
//! pins would never leave this peer.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use libp2p::PeerId;
use pincluster_crdt::store::FjallStore;
use pincluster_crdt::store::fjall::Database;
use pincluster_crdt::{Batch, BatchError, Engine, Limits};

use crate::config::Config;
use crate::folder::{self, FolderLock, LockError, sibling};
use crate::identity::Identity;
use crate::state::{PinJsonWriter, PinState, StateError, pin_key};
use crate::types::{Pin, PinType, PinTypeFilter};

use super::{PeerSigner, PeerVerifier};

/// The largest delta an import writes. A quarter of a block's limit:
/// small enough that a peer fetching the import gets several blocks per
/// response, large enough that a million pins take about a hundred.
pub const IMPORT_DELTA_BYTES: usize = 1 << 20;

/// Bytes of input read at a time.
const READ_CHUNK: usize = 1 << 20;

/// Why an offline state command failed; every message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A daemon (or another state command) holds the folder.
    #[error("{0} is locked: stop the pincluster daemon running on this folder first")]
    Locked(PathBuf),
    /// A file or folder could not be used.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input is not a stream of pins; nothing was changed.
    #[error("pin #{index} of the input: {message}; nothing was imported")]
    BadPin { index: usize, message: String },
    /// Reading or writing the store failed.
    #[error("state store: {0}")]
    Store(#[from] pincluster_crdt::Error),
    /// A pin does not fit in a delta (a value over the size limit).
    #[error("pin too large for the state: {0}")]
    Batch(#[from] BatchError),
    /// A stored pin could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// Writing the export failed.
    #[error("writing the export: {0}")]
    Write(#[source] std::io::Error),
}

/// Overrides `state import` applies to every pin, as the reference's
/// `--replication-min`, `--replication-max` and `--allocations` do.
#[derive(Debug, Clone, Default)]
pub struct ImportOverrides {
    pub replication_min: Option<i32>,
    pub replication_max: Option<i32>,
    pub allocations: Option<Vec<PeerId>>,
}

/// A configuration folder whose daemon is stopped, locked for as long as
/// this value lives.
#[derive(Debug)]
pub struct OfflineFolder {
    dir: PathBuf,
    config: Config,
    _lock: FolderLock,
}

impl OfflineFolder {
    /// Locks `dir` (failing if a daemon runs on it) with its loaded `config`.
    pub fn lock(dir: &Path, config: Config) -> Result<Self, OfflineError> {
        let lock = folder::lock(dir).map_err(|e| match e {
            LockError::Held(path) => OfflineError::Locked(path),
            LockError::Io { path, source } => OfflineError::Io { path, source },
        })?;
        let live = config.datastore.fjall.path(dir);
        folder::finish_interrupted_import(&live).map_err(|source| OfflineError::Io {
            path: live.clone(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            _lock: lock,
        })
    }

    fn store_dir(&self) -> PathBuf {
        self.config.datastore.fjall.path(&self.dir)
    }

    fn open_engine(
        &self,
        path: &Path,
        identity: &Identity,
    ) -> Result<Engine<FjallStore>, OfflineError> {
        Ok(self.open_engine_and_database(path, identity)?.0)
    }

    /// [`Self::open_engine`], and the fjall database under it.
    fn open_engine_and_database(
        &self,
        path: &Path,
        identity: &Identity,
    ) -> Result<(Engine<FjallStore>, Database), OfflineError> {
        Ok(folder::open_engine_and_database(
            path,
            self.config.datastore.fjall.store_options(),
            Arc::new(PeerSigner::new(identity.keypair.clone())),
            Arc::new(PeerVerifier::new(
                self.config.consensus.crdt.trusted_peers.clone(),
                identity.peer_id,
            )),
        )?)
    }

    /// Writes every pin to `out`, one JSON object per line; returns how
    /// many. A folder without a store exports nothing.
    pub fn export(&self, identity: &Identity, out: &mut dyn Write) -> Result<u64, OfflineError> {
        let path = self.store_dir();
        if !path.exists() {
            return Ok(0);
        }
        let engine = self.open_engine(&path, identity)?;
        let state = PinState::new(engine.reader());
        // Pins go out in the form `GET /allocations` gives, written straight
        // from their stored bytes (see `PinJsonWriter`).
        let mut writer = PinJsonWriter::default();
        let all = PinTypeFilter::parse("").expect("the empty filter is every type");
        let mut line = Vec::with_capacity(512);
        let mut n = 0;
        for stored in state.list_stored() {
            line.clear();
            writer
                .write_line(&stored?, all, &mut line)
                .map_err(StateError::from)?;
            out.write_all(&line).map_err(OfflineError::Write)?;
            n += 1;
        }
        out.flush().map_err(OfflineError::Write)?;
        Ok(n)
    }

    /// Replaces the pinset with the pins read from `input` (see the module
    /// doc); returns how many pins were read. On any error in the input the
    /// staged store is dropped and the live one is untouched.
    pub fn import(
        &self,
        identity: &Identity,
        input: impl Read + Send,
        overrides: &ImportOverrides,
    ) -> Result<u64, OfflineError> {
        let live = self.store_dir();
        let staging = sibling(&live, "import");
        let old = sibling(&live, "old");
        remove_dir(&staging)?;
        let staged =
            self.open_engine_and_database(&staging, identity)
                .and_then(|(mut engine, db)| {
                    let n = import_into(&mut engine, input, overrides)?;
                    // Flushed before it is closed, so that the daemon's first
                    // start does not replay the whole pinset from the journal.
                    folder::flush_memtables_and_wait(&db).map_err(|e| {
                        OfflineError::Store(pincluster_crdt::store::StoreError::from(e).into())
                    })?;
                    Ok(n)
                });
        let n = match staged {
            Ok(n) => n,
            Err(e) => {
                remove_dir(&staging)?;
                return Err(e);
            }
        };
        // The new store is complete and closed: swap it in.
        remove_dir(&old)?;
        if live.exists() {
            rename(&live, &old)?;
        }
        rename(&staging, &live)?;
        remove_dir(&old)?;
        Ok(n)
    }

    /// Removes the whole pinset: the store and its history.
    pub fn cleanup(&self) -> Result<(), OfflineError> {
        let live = self.store_dir();
        for path in [sibling(&live, "import"), sibling(&live, "old"), live] {
            remove_dir(&path)?;
        }
        Ok(())
    }
}

/// Parses `input` on one thread while this one commits what it parsed:
/// the two halves of an import take about as long each, and the machine
/// has more than one core. Parsed batches wait in a channel of two, so
/// memory stays flat whatever the input's size. Returns the pins read.
pub fn import_into(
    engine: &mut Engine<FjallStore>,
    input: impl Read + Send,
    overrides: &ImportOverrides,
) -> Result<u64, OfflineError> {
    let limits = Limits {
        max_block_bytes: IMPORT_DELTA_BYTES,
        ..*engine.limits()
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
        let parser = scope.spawn(move || parse_batches(input, overrides, limits, &tx));
        let mut committed = Ok(());
        for batch in rx {
            if let Err(e) = engine.commit(batch) {
                // Dropping the receiver stops the parser at its next send.
                committed = Err(e.into());
                break;
            }
        }
        let parsed = parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A parse error explains a stop better than the commit it caused.
        let n = parsed?;
        committed.map(|()| n)
    })
}

/// Reads a stream of JSON pins (any whitespace between them) into
/// batches of state records, sent to `tx` as each fills; a CID given twice
/// keeps its last pin, as the reference's successive puts do.
fn parse_batches(
    mut input: impl Read,
    overrides: &ImportOverrides,
    limits: Limits,
    tx: &SyncSender<Batch>,
) -> Result<u64, OfflineError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut batch = Batch::new(limits);
    let mut count = 0u64;
    let stopped = || OfflineError::Write(std::io::Error::other("the store stopped the import"));
    loop {
        let read = input.read(&mut chunk).map_err(|e| OfflineError::BadPin {
            index: count as usize + 1,
            message: format!("reading the input: {e}"),
        })?;
        pending.extend_from_slice(&chunk[..read]);
        // Parsing from a slice is about twice as fast as from a reader.
        let mut values = serde_json::Deserializer::from_slice(&pending).into_iter::<Pin>();
        let mut consumed = 0;
        loop {
            let index = count as usize + 1;
            match values.next() {
                Some(Ok(mut pin)) => {
                    consumed = values.byte_offset();
                    count += 1;
                    check_and_override(&mut pin, overrides)
                        .map_err(|message| OfflineError::BadPin { index, message })?;
                    let (key, value) = (pin_key(&pin.cid), pin.to_state_bytes());
                    match batch.put(key.clone(), value.clone()) {
                        Ok(()) => {}
                        Err(BatchError::FullOps { .. } | BatchError::FullBytes { .. }) => {
                            let full = std::mem::replace(&mut batch, Batch::new(limits));
                            tx.send(full).map_err(|_| stopped())?;
                            batch.put(key, value)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                // The rest of this pin is in the next chunk.
                Some(Err(e)) if e.is_eof() && read > 0 => break,
                Some(Err(e)) => {
                    return Err(OfflineError::BadPin {
                        index,
                        message: e.to_string(),
                    });
                }
                None => break,
            }
        }
        pending.drain(..consumed);
        if read == 0 {
            break;
        }
    }
    tx.send(batch).map_err(|_| stopped())?;
    Ok(count)
}

/// Refuses what the state cannot hold and applies `state import`'s
/// overrides.
fn check_and_override(pin: &mut Pin, overrides: &ImportOverrides) -> Result<(), String> {
    if pin.pin_type == PinType::BadType {
        return Err(format!(
            "{}: missing or unknown type (expected pin, meta-pin, clusterdag-pin or shard-pin)",
            pin.cid
        ));
    }
    if let Some(min) = overrides.replication_min {
        pin.options.replication_factor_min = min;
    }
    if let Some(max) = overrides.replication_max {
        pin.options.replication_factor_max = max;
    }
    if let Some(allocations) = &overrides.allocations {
        pin.allocations = allocations.clone();
    }
    Ok(())
}

fn remove_dir(path: &Path) -> Result<(), OfflineError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(OfflineError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), OfflineError> {
    std::fs::rename(from, to).map_err(|source| OfflineError::Io {
        path: from.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PinOptions;

    const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

    fn folder(dir: &Path) -> (OfflineFolder, Identity) {
        (
            OfflineFolder::lock(dir, Config::new_default()).unwrap(),
            Identity::generate(),
        )
    }

    fn export(f: &OfflineFolder, id: &Identity) -> String {
        let mut out = Vec::new();
        f.export(id, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bad_input_names_the_pin_and_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let (f, id) = folder(dir.path());
        let good = format!("{{\"cid\":\"{CID}\",\"type\":\"pin\",\"max_depth\":-1}}\n");
        assert_eq!(
            f.import(&id, good.as_bytes(), &Default::default()).unwrap(),
            1
        );
        let before = export(&f, &id);
        for (input, index) in [
            (format!("{good}{{\"cid\":\"nope\",\"type\":\"pin\"}}"), 2),
            (format!("{good}{{\"cid\":\"{CID}\"}}"), 2),
            (format!("{good}{good}[1,2]"), 3),
            ("\u{0}garbage".to_owned(), 1),
        ] {
            let err = f
                .import(&id, input.as_bytes(), &Default::default())
                .unwrap_err();
            assert!(
                matches!(err, OfflineError::BadPin { index: i, .. } if i == index),
                "{input}: {err}"
            );
            assert_eq!(export(&f, &id), before);
        }
        // A second lock on the folder is refused while this one lives.
        let again = OfflineFolder::lock(dir.path(), Config::new_default()).unwrap_err();
        assert!(matches!(again, OfflineError::Locked(_)), "{again}");
    }

    #[test]
    fn overrides_apply_to_every_pin_and_many_pins_split_into_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let (f, id) = folder(dir.path());
        let peer = PeerId::random();
        let mut input = Vec::new();
        let n = 20_000u32;
        for i in 0..n {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(i.to_be_bytes());
            let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
            let pin = Pin::new(cid::Cid::new_v1(0x55, mh), PinOptions::default());
            serde_json::to_writer(&mut input, &pin).unwrap();
        }
        let overrides = ImportOverrides {
            replication_min: Some(2),
            replication_max: Some(3),
            allocations: Some(vec![peer]),
        };
        assert_eq!(f.import(&id, &input[..], &overrides).unwrap(), u64::from(n));
        let text = export(&f, &id);
        assert_eq!(text.lines().count(), n as usize);
        let pin: Pin = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(pin.options.replication_factor_min, 2);
        assert_eq!(pin.options.replication_factor_max, 3);
        assert_eq!(pin.allocations, vec![peer]);

        // Several deltas, each under the import's size, chained as heads.
        let engine = f.open_engine(&f.store_dir(), &id).unwrap();
        let heads = engine.heads();
        assert_eq!(heads.len(), 1);
        assert!(heads[0].height > 1, "one giant delta: {heads:?}");
        let head = engine.block(&heads[0].cid).unwrap().unwrap();
        assert!(head.len() <= IMPORT_DELTA_BYTES);

        f.cleanup().unwrap();
        assert_eq!(export(&f, &id), "");
    }
}
