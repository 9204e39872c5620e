//! Block bytes in append-only segment files beside the store's fjall
//! database (`<store>/segments/<id>.seg`, id in hex), so that every byte
//! of a block is written once: fjall writes a value twice (its journal,
//! then the blob file at flush), Kubo's flatfs once. fjall keeps only
//! where each block lives ([`Loc`], 17 bytes) and, per segment, its length
//! and the bytes still live ([`SegMeta`]).
//!
//! Order of writes, and what a crash leaves: a block's bytes are appended
//! to the active segment before the fjall batch that indexes them, and
//! that batch records the segment's new length. After a crash a segment
//! may be longer than recorded (bytes whose batch never committed: cut
//! off at open) or, after a power loss that kept the journal but not the
//! segment's tail, shorter (the store drops the index entries past the
//! end: [`super::store`] does the repair). A file with no record is an
//! orphan (a compacted segment whose deletion did not happen, or a
//! segment whose first batch never committed) and is deleted at open.
//!
//! Space comes back at garbage collection: segments less than half live
//! are rewritten (their live blocks appended to the active segment) and
//! deleted once the index pointing at the new copies is synced.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A segment is sealed once it reaches this size (a block that does not
/// fit starts the next one). Smaller segments make gc's rewrites finer;
/// larger ones mean fewer files.
pub const SEGMENT_MAX: u64 = 256 << 20;
/// Open read handles kept, at most (a repo of 64 × 256 MiB = 16 GiB keeps
/// them all; a larger one reopens files as it reads).
const READ_HANDLES: usize = 64;

/// Where a block's bytes are: the index's value for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub seg: u32,
    pub offset: u64,
    pub len: u32,
}

/// The encoded size of a [`Loc`].
const LOC_LEN: usize = 1 + 4 + 8 + 4;
/// The tag of an encoded [`Loc`] (a later format may add others).
const LOC_TAG: u8 = 1;

impl Loc {
    pub fn encode(&self) -> [u8; LOC_LEN] {
        let mut out = [0u8; LOC_LEN];
        out[0] = LOC_TAG;
        out[1..5].copy_from_slice(&self.seg.to_be_bytes());
        out[5..13].copy_from_slice(&self.offset.to_be_bytes());
        out[13..17].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    pub fn decode(v: &[u8]) -> Option<Loc> {
        let v: &[u8; LOC_LEN] = v.try_into().ok()?;
        if v[0] != LOC_TAG {
            return None;
        }
        Some(Loc {
            seg: u32::from_be_bytes(v[1..5].try_into().ok()?),
            offset: u64::from_be_bytes(v[5..13].try_into().ok()?),
            len: u32::from_be_bytes(v[13..17].try_into().ok()?),
        })
    }

    /// The offset just past the block.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// What the store records of a segment: its length as of the last
/// committed batch, and the bytes of it that blocks still use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegMeta {
    pub len: u64,
    pub live: u64,
}

impl SegMeta {
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.len.to_be_bytes());
        out[8..].copy_from_slice(&self.live.to_be_bytes());
        out
    }

    pub fn decode(v: &[u8]) -> Option<SegMeta> {
        let v: &[u8; 16] = v.try_into().ok()?;
        Some(SegMeta {
            len: u64::from_be_bytes(v[..8].try_into().ok()?),
            live: u64::from_be_bytes(v[8..].try_into().ok()?),
        })
    }
}

/// The segment files of one store.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Read handles by segment id, [`READ_HANDLES`] at most.
    readers: Mutex<HashMap<u32, Arc<File>>>,
}

/// The active segment and what is not yet synced.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    /// The id the next new segment gets.
    next_id: u32,
    active: Option<(u32, File, u64)>,
    /// Segments written to (or created) since the last sync.
    unsynced: Vec<u32>,
    /// A segment file was created or deleted since the last sync: the
    /// directory needs a sync too.
    dir_dirty: bool,
    /// Every segment's record as last committed (or about to be, under
    /// this lock): the store changes them with the batches that move the
    /// bytes they count.
    pub metas: HashMap<u32, SegMeta>,
}

impl Segments {
    /// Opens the segment directory under `store`, creating it, with the
    /// records of the segments in it. `next_id` is one past the highest id
    /// in use; writes go to a new segment (a segment is never appended to
    /// across restarts, so a cut-off tail is never written over).
    pub fn open(store: &Path, next_id: u32, metas: HashMap<u32, SegMeta>) -> io::Result<Segments> {
        let dir = store.join("segments");
        fs::create_dir_all(&dir)?;
        Ok(Segments {
            writer: Mutex::new(Writer {
                dir: dir.clone(),
                next_id,
                active: None,
                unsynced: Vec::new(),
                dir_dirty: false,
                metas,
            }),
            dir,
            readers: Mutex::new(HashMap::new()),
        })
    }

    /// The segment files present: (id, length).
    pub fn list(store: &Path) -> io::Result<Vec<(u32, u64)>> {
        let dir = store.join("segments");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| u32::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            out.push((id, entry.metadata()?.len()));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The path of segment `id` under `store`.
    pub fn path_in(store: &Path, id: u32) -> PathBuf {
        store.join("segments").join(format!("{id:08x}.seg"))
    }

    /// Cuts segment `id` to `len` bytes (an unindexed tail).
    pub fn truncate(store: &Path, id: u32, len: u64) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .open(Self::path_in(store, id))?;
        f.set_len(len)?;
        f.sync_all()
    }

    /// Locks the writer: appends and the index batch that records them
    /// happen under one lock, so batches index segments in write order.
    pub fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the block at `loc`. `Ok(None)`: its segment is gone (rewritten
    /// by gc after the caller read the index: read the index again).
    pub fn read(&self, loc: Loc) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = self.reader(loc.seg)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset)?;
        Ok(Some(buf))
    }

    fn reader(&self, id: u32) -> io::Result<Option<Arc<File>>> {
        if let Some(f) = self.lock_readers().get(&id) {
            return Ok(Some(f.clone()));
        }
        let file = match File::open(self.dir.join(format!("{id:08x}.seg"))) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut readers = self.lock_readers();
        if readers.len() >= READ_HANDLES {
            // Any one: the map only saves reopening files.
            if let Some(k) = readers.keys().next().copied() {
                readers.remove(&k);
            }
        }
        readers.insert(id, file.clone());
        Ok(Some(file))
    }

    /// Deletes segment `id` (rewritten, or no longer live); the caller has
    /// synced the index that no longer points at it.
    pub fn delete(&self, writer: &mut Writer, id: u32) -> io::Result<()> {
        self.lock_readers().remove(&id);
        writer.unsynced.retain(|s| *s != id);
        if writer.active.as_ref().is_some_and(|(a, _, _)| *a == id) {
            writer.active = None;
        }
        match fs::remove_file(self.dir.join(format!("{id:08x}.seg"))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        writer.dir_dirty = true;
        Ok(())
    }

    fn lock_readers(&self) -> MutexGuard<'_, HashMap<u32, Arc<File>>> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Writer {
    /// Appends `data` to the active segment (starting a new one when it
    /// would pass [`SEGMENT_MAX`]) and says where it went.
    pub fn append(&mut self, data: &[u8]) -> io::Result<Loc> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block over 4 GiB"))?;
        let full = self
            .active
            .as_ref()
            .is_some_and(|(_, _, at)| *at > 0 && at + data.len() as u64 > SEGMENT_MAX);
        if full || self.active.is_none() {
            self.start_segment()?;
        }
        let Some((id, file, at)) = self.active.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        file.write_all(data)?;
        if !self.unsynced.contains(id) {
            self.unsynced.push(*id);
        }
        let loc = Loc {
            seg: *id,
            offset: *at,
            len,
        };
        *at += data.len() as u64;
        Ok(loc)
    }

    /// The active segment's id and length, if one is open.
    pub fn active(&self) -> Option<(u32, u64)> {
        self.active.as_ref().map(|(id, _, len)| (*id, *len))
    }

    /// Stops appending to the active segment: the next write starts a
    /// new one (gc seals it so that it can be rewritten too).
    pub fn seal(&mut self) {
        self.active = None;
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let id = self.next_id;
        self.next_id = id
            .checked_add(1)
            .ok_or_else(|| io::Error::other("segment ids exhausted"))?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.dir.join(format!("{id:08x}.seg")))?;
        self.unsynced.push(id);
        self.dir_dirty = true;
        self.active = Some((id, file, 0));
        Ok(())
    }

    /// Syncs every segment written since the last call, and the directory
    /// if files came or went: before the index that points into them is
    /// synced.
    pub fn sync(&mut self) -> io::Result<()> {
        for id in std::mem::take(&mut self.unsynced) {
            let synced = match &self.active {
                Some((a, file, _)) if *a == id => file.sync_data(),
                _ => match File::open(self.dir.join(format!("{id:08x}.seg"))) {
                    Ok(f) => f.sync_data(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = synced {
                self.unsynced.push(id);
                return Err(e);
            }
        }
        if self.dir_dirty {
            File::open(&self.dir)?.sync_all()?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_roll_over_to_a_new_segment_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(dir.path(), 7, HashMap::new()).unwrap();
        let mut w = segs.writer();
        let a = w.append(b"first").unwrap();
        let b = w.append(b"second").unwrap();
        assert_eq!((a.seg, a.offset, b.seg, b.offset), (7, 0, 7, 5));
        w.seal();
        let c = w.append(b"third").unwrap();
        assert_eq!((c.seg, c.offset), (8, 0));
        w.sync().unwrap();
        drop(w);
        assert_eq!(segs.read(b).unwrap().unwrap(), b"second");
        assert_eq!(Loc::decode(&c.encode()), Some(c));
        assert_eq!(Segments::list(dir.path()).unwrap(), vec![(7, 11), (8, 5)]);
        let mut w = segs.writer();
        segs.delete(&mut w, 7).unwrap();
        drop(w);
        assert_eq!(segs.read(a).unwrap(), None);
    }
}
