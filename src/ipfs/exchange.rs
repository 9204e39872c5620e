//! Where the embedded node's store meets its public swarm: the fjall
//! [`BlockStore`] is the [`BlockSource`] Bitswap serves from and stores
//! into, [`SwarmFetcher`] is the [`BlockFetcher`] pins fetch missing blocks
//! through, and [`swarm_identity`] keeps the swarm's key in the
//! configuration folder so its IPFS peer id survives restarts.

use std::path::Path;

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use libp2p::identity::Keypair;

use super::bitswap::{BitswapError, BlockSource, BlockSourceError};
use super::fetch::{BlockFetcher, FetchError};
use super::store::BlockStore;
use super::swarm::IpfsSwarm;

/// Bitswap reads and writes the node's own store: what the node holds is
/// what it serves, and what it fetches is there for the next pin walk.
/// Bitswap found each block's CID by hashing its bytes, so the store takes
/// them as verified ([`BlockStore::put_verified`]): one hash per received
/// block, and a message's blocks in one write.
impl BlockSource for BlockStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockSourceError> {
        BlockStore::get(self, cid).map_err(|e| BlockSourceError(Box::new(e)))
    }

    fn has(&self, cid: &Cid) -> Result<bool, BlockSourceError> {
        BlockStore::has(self, cid).map_err(|e| BlockSourceError(Box::new(e)))
    }

    fn put(&self, cid: &Cid, data: Bytes) -> Result<(), BlockSourceError> {
        self.put_many(&[(*cid, data)])
    }

    fn put_many(&self, blocks: &[(Cid, Bytes)]) -> Result<(), BlockSourceError> {
        self.put_verified(blocks)
            .map(|_| ())
            .map_err(|e| BlockSourceError(Box::new(e)))
    }
}

/// Missing blocks come from the connected IPFS peers (and the providers
/// the DHT names) over Bitswap. A level of the DAG is asked for at once
/// ([`IpfsSwarm::get_blocks`]); Bitswap's own fetch timeout ends a fetch
/// nobody answers, and dropping the stream (a pin that timed out) cancels
/// the wants at every peer.
#[derive(Debug, Clone)]
pub struct SwarmFetcher {
    swarm: IpfsSwarm,
}

impl SwarmFetcher {
    pub fn new(swarm: IpfsSwarm) -> SwarmFetcher {
        SwarmFetcher { swarm }
    }
}

fn fetch_error(cid: Cid, e: BitswapError) -> FetchError {
    match e {
        BitswapError::Timeout { cid, .. } => FetchError::Timeout(cid),
        other => FetchError::Failed {
            cid,
            reason: other.to_string(),
        },
    }
}

impl BlockFetcher for SwarmFetcher {
    fn fetch<'a>(&'a self, cid: &'a Cid) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        Box::pin(async move {
            self.swarm
                .get_block(*cid)
                .await
                .map_err(|e| fetch_error(*cid, e))
        })
    }

    fn fetch_many(&self, cids: Vec<Cid>) -> BoxStream<'_, Result<(Cid, Bytes), FetchError>> {
        // The stream's errors name their CID except when Bitswap stopped;
        // the first asked one stands for it then.
        let first = cids.first().copied();
        self.swarm
            .get_blocks(cids)
            .map(move |r| {
                r.map_err(|e| match (&e, first) {
                    (BitswapError::Timeout { cid, .. }, _) => FetchError::Timeout(*cid),
                    (_, Some(cid)) => fetch_error(cid, e),
                    (_, None) => FetchError::Failed {
                        cid: Cid::default(),
                        reason: e.to_string(),
                    },
                })
            })
            .boxed()
    }
}

/// Why the swarm's key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a libp2p private key (protobuf): {reason}")]
    Decode { path: String, reason: String },
}

/// The swarm's key at `path`: read, or made (Ed25519) and written with
/// owner-only permissions on first start.
pub fn swarm_identity(path: &Path) -> Result<Keypair, KeyError> {
    let shown = || path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::Decode {
            path: shown(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| KeyError::Decode {
                path: shown(),
                reason: e.to_string(),
            })?;
            write_private(path, &bytes).map_err(|source| KeyError::Io {
                path: shown(),
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(KeyError::Io {
            path: shown(),
            source,
        }),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swarm_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipfs.key");
        let made = swarm_identity(&path).unwrap();
        let read = swarm_identity(&path).unwrap();
        assert_eq!(made.public(), read.public());
    }

    #[test]
    fn a_garbled_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipfs.key");
        std::fs::write(&path, b"not a key").unwrap();
        let err = swarm_identity(&path).unwrap_err();
        assert!(matches!(err, KeyError::Decode { .. }), "{err}");
        // The file is left for the user to look at.
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }
}
