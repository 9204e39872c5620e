//! The pinset as the rest of the peer reads it: typed pins over the CRDT
//! engine's reader. Read-only: only consensus writes.
//!
//! Keys are CIDs in binary form, values DAG-CBOR pins (see
//! [`Pin::to_state_bytes`]). The peerset records that share the CRDT sort
//! after every pin ([`crate::consensus::peerset`]); scans stop before them.

mod codec;
mod listings;

pub use codec::{PinJsonWriter, StateDecodeError, pin_key};
pub use listings::{Listings, Streaming, Yielding};

use bytes::Bytes;
use cid::Cid;
use pincluster_crdt::Reader;
use pincluster_crdt::store::FjallStore;

use crate::types::Pin;

/// First bytes of the keys of the peerset records (see
/// [`crate::consensus::peerset`]) that share the CRDT with the pins. No CID
/// starts with 0xFF, so they sort after every pin. Declared here, with the
/// rest of the key layout, so that reading the pinset needs nothing of
/// consensus.
pub const PEERSET_PREFIX: &[u8] = b"\xffpeerset/";

/// Items per page of [`pages`] for the listings that work page by page
/// (statuses, sync, re-allocation).
pub const PAGE: usize = 256;

/// Why the pinset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed.
    #[error("reading the pinset: {0}")]
    Store(#[from] pincluster_crdt::Error),
    /// A stored pin does not decode (written by a newer version?).
    #[error("decoding a stored pin: {0}")]
    Decode(#[from] StateDecodeError),
}

/// Read access to the shared pinset. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PinState {
    reader: Reader<FjallStore>,
}

impl PinState {
    /// A view over `reader`.
    pub fn new(reader: Reader<FjallStore>) -> Self {
        Self { reader }
    }

    /// The pin of `cid`, if it is in the pinset (one point read).
    pub fn get(&self, cid: &Cid) -> Result<Option<Pin>, StateError> {
        match self.reader.get(&pin_key(cid))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every pin, streamed in key order (never the whole pinset in memory).
    pub fn list(&self) -> impl Iterator<Item = Result<Pin, StateError>> + Send + use<> {
        self.entries().map(|entry| {
            let (_, value) = entry?;
            decode(&value)
        })
    }

    /// Every pin's stored bytes, in key order, not decoded: for readers
    /// that encode them on other threads (see [`PinJsonWriter`]). They
    /// share the store's blocks, not copied out of them.
    pub fn list_stored(&self) -> impl Iterator<Item = Result<Bytes, StateError>> + Send + use<> {
        self.entries()
            .map(|entry| Ok(entry.map(|(_, value)| value)?))
    }

    /// The pin entries: the CRDT's keys up to the peerset records, read
    /// in short scans ([`pincluster_crdt::Reader::iter_shared_in_runs`]) so
    /// that no fjall snapshot lives for the whole scan, and not copied: a
    /// third of the scan's time at 1,000,000 pins was the three copies of
    /// each entry.
    fn entries(
        &self,
    ) -> impl Iterator<Item = Result<(Bytes, Bytes), pincluster_crdt::Error>> + Send + use<> {
        self.reader
            .iter_shared_in_runs()
            .take_while(|entry| !matches!(entry, Ok((key, _)) if key.starts_with(PEERSET_PREFIX)))
    }
}

/// Reads `items` (a scan of the store, or point reads: both block) on a
/// blocking thread and hands them over in pages of up to `size`, at most
/// two pages ahead: a slow reader slows the scan down, the pinset is never
/// held whole. Dropping the receiver stops the scan. Every listing of the
/// pinset goes through here.
pub fn pages<T: Send + 'static>(
    items: impl Iterator<Item = T> + Send + 'static,
    size: usize,
) -> tokio::sync::mpsc::Receiver<Vec<T>> {
    let size = size.max(1);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut page = Vec::with_capacity(size);
        for item in items {
            page.push(item);
            // A new page of full capacity: one left empty by `take` grew
            // item by item, a copy of the page at every doubling.
            if page.len() == size
                && tx
                    .blocking_send(std::mem::replace(&mut page, Vec::with_capacity(size)))
                    .is_err()
            {
                return; // the reader went away
            }
        }
        if !page.is_empty() {
            let _ = tx.blocking_send(page);
        }
    });
    rx
}

/// Drops (and logs) the pins that do not decode: listings that must go on
/// past a bad entry.
pub fn readable(pin: Result<Pin, StateError>) -> Option<Pin> {
    pin.map_err(|e| tracing::warn!(error = %e, "unreadable pin skipped"))
        .ok()
}

fn decode(bytes: &[u8]) -> Result<Pin, StateError> {
    Ok(Pin::from_state_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use libp2p::identity::Keypair;
    use pincluster_crdt::store::FjallOptions;
    use pincluster_crdt::{Batch, Engine, Limits};

    use super::*;
    use crate::config::TrustedPeers;
    use crate::consensus::{PeerSigner, PeerVerifier};

    fn engine(dir: &std::path::Path) -> Engine<FjallStore> {
        let keypair = Keypair::generate_ed25519();
        let local = keypair.public().to_peer_id();
        crate::folder::open_engine(
            dir,
            FjallOptions::default(),
            Arc::new(PeerSigner::new(keypair)),
            Arc::new(PeerVerifier::new(TrustedPeers::All, local)),
        )
        .unwrap()
    }

    fn put(engine: &mut Engine<FjallStore>, keys: impl Iterator<Item = u32>) {
        let mut batch = Batch::new(Limits::default());
        for k in keys {
            batch.put(format!("k{k:08}"), b"v".to_vec()).unwrap();
        }
        engine.commit(batch).unwrap();
    }

    /// A listing longer than one fjall scan sees what was written after it
    /// started (a later scan opened after the write), every key once and in
    /// order, and stops before the peerset records: it holds no snapshot of
    /// the whole pinset, which is what kept the start-up burst in RAM.
    #[test]
    fn a_long_listing_reads_in_short_scans_every_key_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = engine(dir.path());
        let n = 2 * pincluster_crdt::store::SCAN_RUN as u32 + 10;
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            put(&mut engine, chunk.iter().copied());
        }
        let mut peers = Batch::new(Limits::default());
        peers
            .put([PEERSET_PREFIX, b"x"].concat(), b"p".to_vec())
            .unwrap();
        engine.commit(peers).unwrap();
        let state = PinState::new(engine.reader());
        let mut listing = state.entries();
        let first: Vec<_> = listing.by_ref().take(10).map(Result::unwrap).collect();
        assert_eq!(&first[0].0[..], b"k00000000");
        // Written mid-listing, past the first scan's end.
        put(&mut engine, n..n + 1);
        let rest: Vec<_> = listing.map(Result::unwrap).collect();
        let keys: Vec<Vec<u8>> = first
            .into_iter()
            .chain(rest)
            .map(|(k, _)| k.to_vec())
            .collect();
        let expected: Vec<Vec<u8>> = (0..=n).map(|k| format!("k{k:08}").into_bytes()).collect();
        assert_eq!(
            keys.len(),
            expected.len(),
            "every key once, the late one too"
        );
        assert!(keys == expected, "in key order, no peerset record");
    }
}
