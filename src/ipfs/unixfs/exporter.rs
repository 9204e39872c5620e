//! Reading UnixFS back out of the block store: what a CID is (file,
//! folder, raw block), a path under it, a folder's entries, and a file's
//! bytes (a range of them, for the gateway's `Range`). Only stored blocks
//! are read: a missing block is [`ExportError::Missing`].
//!
//! Blocking (fjall reads): callers run these on a blocking thread.

use bytes::Bytes;
use cid::Cid;

use crate::ipfs::dag::{DAG_PB, RAW};
use crate::ipfs::pb::{DataType, PbError, PbNode};
use crate::ipfs::store::{BlockStore, StoreError};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("block {0} not found in the local store")]
    Missing(Cid),
    #[error("{0} is a directory")]
    IsDir(Cid),
    #[error("{0} is not a directory")]
    NotDir(Cid),
    #[error("no link named {name:?} under {cid}")]
    NoLink { cid: Cid, name: String },
    #[error("{cid} is not UnixFS: {detail}")]
    NotUnixFs { cid: Cid, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a CID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file (or a raw block) of this many bytes.
    File(u64),
    Dir,
    Symlink,
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub cid: Cid,
    /// The link's Tsize.
    pub tsize: u64,
}

fn load(store: &BlockStore, cid: &Cid) -> Result<Bytes, ExportError> {
    store.get(cid)?.ok_or(ExportError::Missing(*cid))
}

fn pb(cid: &Cid, data: &[u8]) -> Result<PbNode, ExportError> {
    PbNode::decode(data).map_err(|e| not_unixfs(cid, &e))
}

fn not_unixfs(cid: &Cid, e: &PbError) -> ExportError {
    ExportError::NotUnixFs {
        cid: *cid,
        detail: e.to_string(),
    }
}

/// What `cid` is.
pub fn kind(store: &BlockStore, cid: &Cid) -> Result<Kind, ExportError> {
    let data = load(store, cid)?;
    match cid.codec() {
        RAW => Ok(Kind::File(data.len() as u64)),
        DAG_PB => {
            let node = pb(cid, &data)?;
            let fs = node.unixfs().map_err(|e| not_unixfs(cid, &e))?;
            Ok(match fs.kind {
                DataType::Directory | DataType::HamtShard => Kind::Dir,
                DataType::Symlink => Kind::Symlink,
                DataType::File | DataType::Raw | DataType::Metadata => Kind::File(
                    fs.filesize
                        .unwrap_or_else(|| fs.data.as_ref().map_or(0, |d| d.len() as u64)),
                ),
            })
        }
        other => Err(ExportError::NotUnixFs {
            cid: *cid,
            detail: format!("codec {other:#x}"),
        }),
    }
}

/// The entries of the folder `cid`, in link order.
pub fn list(store: &BlockStore, cid: &Cid) -> Result<Vec<DirEntry>, ExportError> {
    if kind(store, cid)? != Kind::Dir {
        return Err(ExportError::NotDir(*cid));
    }
    let node = pb(cid, &load(store, cid)?)?;
    Ok(node
        .links
        .into_iter()
        .map(|l| DirEntry {
            name: l.name.unwrap_or_default(),
            cid: l.cid,
            tsize: l.tsize.unwrap_or(0),
        })
        .collect())
}

/// The CID at `path` (segments separated by `/`) under `root`.
pub fn resolve(store: &BlockStore, root: &Cid, path: &str) -> Result<Cid, ExportError> {
    let mut cid = *root;
    for name in path.split('/').filter(|s| !s.is_empty()) {
        let entry = list(store, &cid)?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ExportError::NoLink {
                cid,
                name: name.to_string(),
            })?;
        cid = entry.cid;
    }
    Ok(cid)
}

/// Sends the bytes `offset..offset+len` of the file `cid` to `out`, block
/// by block, skipping the subtrees outside the range. `out` returning
/// false stops the read (the reader went away).
pub fn read(
    store: &BlockStore,
    cid: &Cid,
    offset: u64,
    len: u64,
    out: &mut dyn FnMut(Bytes) -> bool,
) -> Result<(), ExportError> {
    if let Kind::Dir = kind(store, cid)? {
        return Err(ExportError::IsDir(*cid));
    }
    let mut want = (offset, offset.saturating_add(len));
    read_node(store, cid, 0, &mut want, out).map(|_| ())
}

/// Reads the subtree `cid`, which starts at byte `start` of the file.
/// Returns false when `out` asked to stop.
fn read_node(
    store: &BlockStore,
    cid: &Cid,
    start: u64,
    want: &mut (u64, u64),
    out: &mut dyn FnMut(Bytes) -> bool,
) -> Result<bool, ExportError> {
    let data = load(store, cid)?;
    let (own, children) = match cid.codec() {
        RAW => (data, Vec::new()),
        DAG_PB => {
            let node = pb(cid, &data)?;
            let fs = node.unixfs().map_err(|e| not_unixfs(cid, &e))?;
            let own = Bytes::from(fs.data.unwrap_or_default());
            let sizes = fs.blocksizes;
            let kids: Vec<(Cid, u64)> = node
                .links
                .into_iter()
                .enumerate()
                .map(|(i, l)| (l.cid, sizes.get(i).copied().unwrap_or(u64::MAX)))
                .collect();
            (own, kids)
        }
        other => {
            return Err(ExportError::NotUnixFs {
                cid: *cid,
                detail: format!("codec {other:#x}"),
            });
        }
    };
    let mut pos = start;
    if !own.is_empty() {
        let end = pos + own.len() as u64;
        if end > want.0 && pos < want.1 {
            let from = want.0.saturating_sub(pos) as usize;
            let to = (want.1.min(end) - pos) as usize;
            if !out(own.slice(from..to)) {
                return Ok(false);
            }
        }
        pos = end;
    }
    for (child, size) in children {
        if pos >= want.1 {
            break;
        }
        let end = pos.saturating_add(size);
        if end > want.0 && !read_node(store, &child, pos, want, out)? {
            return Ok(false);
        }
        pos = end;
    }
    Ok(true)
}
