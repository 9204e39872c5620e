//! UnixFS: files and folders as dag-pb DAGs. [`importer`] turns bytes and
//! folder trees into blocks with Kubo's CIDs; [`exporter`] reads them back
//! (`cat`, `get`, `ls`, the gateway).

pub mod exporter;
pub mod importer;

/// The largest chunk `chunker=size-N` accepts: a leaf must fit a block.
pub const MAX_CHUNK: usize = 1 << 20;
/// Kubo's default chunk size.
pub const DEFAULT_CHUNK: usize = 256 * 1024;

/// How a file is cut into a DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Balanced,
    Trickle,
}

/// The options of `add` that change the CIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOptions {
    /// 0 or 1.
    pub cid_version: u8,
    pub raw_leaves: bool,
    pub chunk_size: usize,
    pub layout: Layout,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            cid_version: 0,
            raw_leaves: false,
            chunk_size: DEFAULT_CHUNK,
            layout: Layout::Balanced,
        }
    }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the input: {0}")]
    Read(#[source] std::io::Error),
    #[error("storing a block: {0}")]
    Store(String),
    #[error("invalid path {0:?} in the added files")]
    BadPath(String),
    #[error("{0}")]
    Option(String),
}

impl AddOptions {
    /// The options from `add`'s query, as Kubo reads them: `cid-version`
    /// (1 turns `raw-leaves` on unless it is given), `raw-leaves`,
    /// `chunker` (`size-N`), `trickle`.
    pub fn from_query(
        get: impl Fn(&str) -> Option<String>,
        flag: impl Fn(&str, bool) -> Result<bool, String>,
    ) -> Result<AddOptions, ImportError> {
        let mut opts = AddOptions::default();
        if let Some(v) = get("cid-version") {
            opts.cid_version = match v.as_str() {
                "0" => 0,
                "1" => 1,
                other => {
                    return Err(ImportError::Option(format!("unknown CID version: {other}")));
                }
            };
        }
        opts.raw_leaves = match get("raw-leaves") {
            Some(_) => flag("raw-leaves", false).map_err(ImportError::Option)?,
            None => opts.cid_version == 1,
        };
        if flag("trickle", false).map_err(ImportError::Option)? {
            opts.layout = Layout::Trickle;
        }
        if let Some(hash) = get("hash").filter(|h| h != "sha2-256") {
            return Err(ImportError::Option(format!(
                "hash function {hash} is not supported by the embedded node (sha2-256 only)"
            )));
        }
        if let Some(chunker) = get("chunker").filter(|c| !c.is_empty()) {
            let size = chunker
                .strip_prefix("size-")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    ImportError::Option(format!(
                        "chunker {chunker:?} is not supported by the embedded node (size-N only)"
                    ))
                })?;
            if size == 0 || size > MAX_CHUNK {
                return Err(ImportError::Option(format!(
                    "chunker size {size} must be between 1 and {MAX_CHUNK}"
                )));
            }
            opts.chunk_size = size;
        }
        Ok(opts)
    }
}
