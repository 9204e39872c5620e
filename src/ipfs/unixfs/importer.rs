//! Files and folders into UnixFS DAGs, block for block what Kubo 0.43
//! writes for the same options (tested against `ipfs add --only-hash`).
//!
//! The layouts follow Kubo's builders step by step, pulling chunks as
//! they go: balanced (grow the root one level at a time, each level
//! filled with full subtrees of 174 links) and trickle (a layer of
//! leaves, then up to 4 subtrees of each growing depth). Blocks go to a
//! [`BlockSink`] as soon as they are made, so a file of any size costs one
//! chunk and one node per level of memory.
//!
//! Synchronous on purpose: callers feed it from an async body through a
//! bounded channel on a blocking thread (see `rpc::add`).

use std::collections::BTreeMap;
use std::io::Read;

use cid::Cid;

use super::{AddOptions, ImportError, Layout};
use crate::ipfs::dag::{Block, DAG_PB, RAW};
use crate::ipfs::pb::{DataType, PbLink, PbNode, UnixFs};

/// Links per node: Kubo's default for files and basic directories.
pub const MAX_LINKS: usize = 174;
/// Trickle: how many subtrees of each depth follow a layer of leaves.
const LAYER_REPEAT: usize = 4;

/// Where made blocks go (the store, or nowhere for `only-hash`).
pub trait BlockSink {
    fn put(&mut self, block: Block) -> Result<(), ImportError>;

    /// Waits until every block put is stored (a sink may write behind
    /// the importer); nothing can be put after.
    fn finish(&mut self) -> Result<(), ImportError> {
        Ok(())
    }
}

/// A sink that keeps nothing: the CIDs only.
#[derive(Debug, Default)]
pub struct Discard;

impl BlockSink for Discard {
    fn put(&mut self, _: Block) -> Result<(), ImportError> {
        Ok(())
    }
}

/// A DAG made by the importer: its root, the cumulative size of every
/// block in it (a link's Tsize, `add`'s `Size`), and the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    pub cid: Cid,
    pub tsize: u64,
    pub filesize: u64,
}

/// Imports the bytes of `input` as one UnixFS file.
pub fn import_file(
    input: impl Read,
    opts: &AddOptions,
    sink: &mut dyn BlockSink,
) -> Result<Made, ImportError> {
    let mut b = Builder {
        chunks: Chunks {
            input,
            size: opts.chunk_size,
            next: None,
            done: false,
        },
        opts,
        sink,
    };
    b.chunks.fill()?;
    match opts.layout {
        Layout::Balanced => b.balanced(),
        Layout::Trickle => b.trickle(),
    }
}

/// Fixed-size chunks read ahead by one, so the builders can ask "is there
/// more?" before taking a chunk, as Kubo's `DagBuilderHelper.Done` does.
struct Chunks<R> {
    input: R,
    size: usize,
    next: Option<Vec<u8>>,
    done: bool,
}

impl<R: Read> Chunks<R> {
    fn fill(&mut self) -> Result<(), ImportError> {
        if self.done || self.next.is_some() {
            return Ok(());
        }
        let mut buf = vec![0u8; self.size];
        let mut len = 0;
        while len < self.size {
            let n = self
                .input
                .read(&mut buf[len..])
                .map_err(ImportError::Read)?;
            if n == 0 {
                break;
            }
            len += n;
        }
        if len == 0 {
            self.done = true;
        } else {
            buf.truncate(len);
            self.next = Some(buf);
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.next.is_none()
    }

    fn take(&mut self) -> Result<Vec<u8>, ImportError> {
        let chunk = self.next.take().unwrap_or_default();
        self.fill()?;
        Ok(chunk)
    }
}

/// An internal file node being filled.
struct FileNode {
    links: Vec<PbLink>,
    blocksizes: Vec<u64>,
    tsize: u64,
}

impl FileNode {
    fn new() -> FileNode {
        FileNode {
            links: Vec::new(),
            blocksizes: Vec::new(),
            tsize: 0,
        }
    }

    fn add(&mut self, child: Made) {
        self.links.push(PbLink {
            cid: child.cid,
            name: Some(String::new()),
            tsize: Some(child.tsize),
        });
        self.blocksizes.push(child.filesize);
        self.tsize += child.tsize;
    }
}

struct Builder<'a, R> {
    chunks: Chunks<R>,
    opts: &'a AddOptions,
    sink: &'a mut dyn BlockSink,
}

impl<R: Read> Builder<'_, R> {
    /// A leaf: a raw block, or a dag-pb node of `kind` holding the chunk.
    fn leaf(&mut self, kind: DataType) -> Result<Made, ImportError> {
        let chunk = self.chunks.take()?;
        let filesize = chunk.len() as u64;
        if self.opts.raw_leaves {
            let block = Block::hashed(RAW, chunk, false);
            let cid = *block.cid();
            self.sink.put(block)?;
            return Ok(Made {
                cid,
                tsize: filesize,
                filesize,
            });
        }
        let mut fs = UnixFs::new(kind);
        fs.filesize = Some(filesize);
        fs.data = (!chunk.is_empty()).then_some(chunk);
        self.emit(fs.encode_in_node(), filesize, 0)
    }

    /// Writes a dag-pb node with `links` and UnixFS data `fs`.
    fn node(
        &mut self,
        links: Vec<PbLink>,
        fs: UnixFs,
        filesize: u64,
        links_tsize: u64,
    ) -> Result<Made, ImportError> {
        let bytes = PbNode {
            links,
            data: Some(fs.encode()),
        }
        .encode();
        self.emit(bytes, filesize, links_tsize)
    }

    /// Stores the dag-pb node `bytes` whose links weigh `links_tsize`.
    fn emit(
        &mut self,
        bytes: Vec<u8>,
        filesize: u64,
        links_tsize: u64,
    ) -> Result<Made, ImportError> {
        let tsize = bytes.len() as u64 + links_tsize;
        let block = Block::hashed(DAG_PB, bytes, self.opts.cid_version == 0);
        let cid = *block.cid();
        self.sink.put(block)?;
        Ok(Made {
            cid,
            tsize,
            filesize,
        })
    }

    fn commit(&mut self, n: FileNode) -> Result<Made, ImportError> {
        let filesize = n.blocksizes.iter().sum();
        let mut fs = UnixFs::new(DataType::File);
        fs.filesize = Some(filesize);
        fs.blocksizes = n.blocksizes;
        self.node(n.links, fs, filesize, n.tsize)
    }

    fn balanced(&mut self) -> Result<Made, ImportError> {
        let mut root = self.leaf(DataType::File)?;
        let mut depth = 1;
        while !self.chunks.is_done() {
            let mut node = FileNode::new();
            node.add(root);
            root = self.fill_balanced(node, depth)?;
            depth += 1;
        }
        Ok(root)
    }

    fn fill_balanced(&mut self, mut node: FileNode, depth: usize) -> Result<Made, ImportError> {
        while node.links.len() < MAX_LINKS && !self.chunks.is_done() {
            let child = if depth == 1 {
                self.leaf(DataType::File)?
            } else {
                self.fill_balanced(FileNode::new(), depth - 1)?
            };
            node.add(child);
        }
        self.commit(node)
    }

    fn trickle(&mut self) -> Result<Made, ImportError> {
        self.fill_trickle(None)
    }

    fn fill_trickle(&mut self, max_depth: Option<usize>) -> Result<Made, ImportError> {
        let mut node = FileNode::new();
        while node.links.len() < MAX_LINKS && !self.chunks.is_done() {
            let leaf = self.leaf(DataType::Raw)?;
            node.add(leaf);
        }
        let mut depth = 1;
        while max_depth.is_none_or(|max| depth < max) && !self.chunks.is_done() {
            for _ in 0..LAYER_REPEAT {
                if self.chunks.is_done() {
                    break;
                }
                let child = self.fill_trickle(Some(depth))?;
                node.add(child);
            }
            depth += 1;
        }
        self.commit(node)
    }
}

/// A folder being assembled from the entries of an `add` as they arrive:
/// files are imported at once, folders written when [`Tree::finish`]
/// is called (a folder's CID depends on all its entries).
#[derive(Debug, Default)]
pub struct Tree {
    root: Dir,
}

#[derive(Debug, Default)]
struct Dir {
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug)]
enum Entry {
    File(Made),
    Dir(Dir),
}

/// One line of `add`'s output: a path (relative to the added roots) and
/// what it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedPath {
    pub path: String,
    pub made: Made,
}

impl Tree {
    /// Records a folder (`a/b`), creating its parents.
    pub fn add_dir(&mut self, path: &str) -> Result<(), ImportError> {
        self.dir_mut(&components(path)?).map(|_| ())
    }

    /// Records a file imported as `made` at `path`.
    pub fn add_file(&mut self, path: &str, made: Made) -> Result<(), ImportError> {
        let mut parts = components(path)?;
        let name = parts.pop().ok_or(ImportError::BadPath(path.to_string()))?;
        let dir = self.dir_mut(&parts)?;
        if matches!(dir.entries.get(&name), Some(Entry::Dir(_))) {
            return Err(ImportError::BadPath(path.to_string()));
        }
        dir.entries.insert(name, Entry::File(made));
        Ok(())
    }

    fn dir_mut(&mut self, parts: &[String]) -> Result<&mut Dir, ImportError> {
        let mut dir = &mut self.root;
        for part in parts {
            let entry = dir
                .entries
                .entry(part.clone())
                .or_insert_with(|| Entry::Dir(Dir::default()));
            dir = match entry {
                Entry::Dir(d) => d,
                Entry::File(_) => return Err(ImportError::BadPath(parts.join("/"))),
            };
        }
        Ok(dir)
    }

    /// Writes every folder. Returns the top-level entries (or, when
    /// `wrap`, the one wrapping folder, named ""), and every folder made,
    /// deepest first, as `add` reports them.
    pub fn finish(
        self,
        wrap: bool,
        opts: &AddOptions,
        sink: &mut dyn BlockSink,
    ) -> Result<(Vec<AddedPath>, Vec<AddedPath>), ImportError> {
        let mut dirs = Vec::new();
        if wrap {
            let made = write_dir(self.root, "", opts, sink, &mut dirs)?;
            let root = AddedPath {
                path: String::new(),
                made,
            };
            return Ok((vec![root], dirs));
        }
        let mut roots = Vec::new();
        for (name, entry) in self.root.entries {
            let made = match entry {
                Entry::File(m) => m,
                Entry::Dir(d) => write_dir(d, &name, opts, sink, &mut dirs)?,
            };
            roots.push(AddedPath { path: name, made });
        }
        Ok((roots, dirs))
    }
}

fn write_dir(
    dir: Dir,
    path: &str,
    opts: &AddOptions,
    sink: &mut dyn BlockSink,
    out: &mut Vec<AddedPath>,
) -> Result<Made, ImportError> {
    let mut links = Vec::with_capacity(dir.entries.len());
    let mut total = 0u64;
    // BTreeMap order is byte order of the names, the order Kubo sorts links in.
    for (name, entry) in dir.entries {
        let made = match entry {
            Entry::File(m) => m,
            Entry::Dir(d) => {
                let sub = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                write_dir(d, &sub, opts, sink, out)?
            }
        };
        total += made.tsize;
        links.push(PbLink {
            cid: made.cid,
            name: Some(name),
            tsize: Some(made.tsize),
        });
    }
    let bytes = PbNode {
        links,
        data: Some(UnixFs::new(DataType::Directory).encode()),
    }
    .encode();
    let tsize = bytes.len() as u64 + total;
    let block = Block::hashed(DAG_PB, bytes, opts.cid_version == 0);
    let made = Made {
        cid: *block.cid(),
        tsize,
        filesize: 0,
    };
    sink.put(block)?;
    out.push(AddedPath {
        path: path.to_string(),
        made,
    });
    Ok(made)
}

/// The parts of a relative path; `..`, empty and absolute paths refused.
fn components(path: &str) -> Result<Vec<String>, ImportError> {
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect();
    if parts.is_empty() || parts.iter().any(|p| p == "..") {
        return Err(ImportError::BadPath(path.to_string()));
    }
    Ok(parts)
}
