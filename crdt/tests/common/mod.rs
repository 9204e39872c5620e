//! Shared helpers for the engine's tests: ed25519 authors, a trust list,
//! replicas over either store, and block delivery between replicas.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use pincluster_crdt::store::{FjallStore, MemoryStore, Scan, Store, StoreError, Table, WriteBatch};
use pincluster_crdt::{
    Block, Cid, Engine, Limits, Merged, Received, Signer, Verifier, VerifyError,
};

/// An ed25519 author; the author bytes are the 32-byte public key.
pub struct Author {
    key: SigningKey,
    public: [u8; 32],
}

impl Author {
    pub fn from_seed(seed: u8) -> Arc<Self> {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let public = key.verifying_key().to_bytes();
        Arc::new(Self { key, public })
    }
}

impl Signer for Author {
    fn author(&self) -> &[u8] {
        &self.public
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        self.key.sign(message).to_bytes().to_vec()
    }
}

/// Verifies ed25519 signatures; trusts everyone or a fixed set of authors.
pub struct Trust {
    trusted: Option<HashSet<Vec<u8>>>,
}

impl Trust {
    pub fn everyone() -> Arc<Self> {
        Arc::new(Self { trusted: None })
    }
    pub fn only(authors: &[&Author]) -> Arc<Self> {
        Arc::new(Self {
            trusted: Some(authors.iter().map(|a| a.public.to_vec()).collect()),
        })
    }
}

impl Verifier for Trust {
    fn verify(&self, author: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let bytes: [u8; 32] = author
            .try_into()
            .map_err(|_| VerifyError::MalformedAuthor)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| VerifyError::MalformedAuthor)?;
        if let Some(trusted) = &self.trusted
            && !trusted.contains(author)
        {
            return Err(VerifyError::Untrusted);
        }
        let sig = Signature::from_slice(signature).map_err(|_| VerifyError::BadSignature)?;
        key.verify_strict(message, &sig)
            .map_err(|_| VerifyError::BadSignature)
    }
}

pub fn memory_replica(seed: u8) -> Engine<MemoryStore> {
    Engine::open(
        MemoryStore::new(),
        Author::from_seed(seed),
        Trust::everyone(),
        Limits::default(),
    )
    .expect("open memory replica")
}

pub fn fjall_replica(path: &std::path::Path, seed: u8) -> Engine<FjallStore> {
    let store = FjallStore::open(path, Default::default()).expect("open fjall");
    Engine::open(
        store,
        Author::from_seed(seed),
        Trust::everyone(),
        Limits::default(),
    )
    .expect("open fjall replica")
}

/// Puts one key and commits.
pub fn put<S: Store>(e: &mut Engine<S>, key: &str, value: &str) {
    let mut b = e.batch();
    b.put(key, value).unwrap();
    e.commit(b).unwrap();
}

/// Deletes one key and commits.
pub fn del<S: Store>(e: &mut Engine<S>, key: &str) {
    let mut b = e.batch();
    b.delete(key).unwrap();
    e.commit(b).unwrap();
}

pub fn get<S: Store>(e: &Engine<S>, key: &str) -> Option<String> {
    e.get(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// The whole state as (key, value) pairs, in key order.
pub fn state<S: Store>(e: &Engine<S>) -> Vec<(Vec<u8>, Vec<u8>)> {
    e.reader().iter().collect::<Result<_, _>>().unwrap()
}

/// Every block reachable from `e`'s heads, parents after children.
pub fn all_blocks<S: Store>(e: &Engine<S>) -> Vec<(Cid, Vec<u8>)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<Cid> = e.heads().iter().map(|h| h.cid).collect();
    while let Some(cid) = stack.pop() {
        if !seen.insert(cid) {
            continue;
        }
        let bytes = e.block(&cid).unwrap().expect("reachable block is stored");
        let block = Block::decode(&cid, &bytes, &Limits::default(), Trust::everyone().as_ref())
            .expect("stored block decodes");
        stack.extend(block.links.iter().copied());
        out.push((cid, bytes));
    }
    out
}

/// What a peer does on hearing `from`'s heads: fetch what is missing,
/// follow parents, merge. Returns how many blocks merged.
pub fn sync<A: Store, B: Store>(from: &Engine<A>, to: &mut Engine<B>) -> usize {
    let heads: Vec<Cid> = from.heads().iter().map(|h| h.cid).collect();
    let mut queue = to.missing(&heads).unwrap();
    while let Some(cid) = queue.pop() {
        let bytes = from.block(&cid).unwrap().expect("sender has the block");
        if let Received::Pending { missing } = to.receive(&cid, &bytes).unwrap() {
            queue.extend(missing);
        }
    }
    merge_all(to)
}

/// Merges everything ready; panics on a refusal (the callers only deliver
/// valid blocks).
pub fn merge_all<S: Store>(e: &mut Engine<S>) -> usize {
    e.merge_all(|m| {
        if let Merged::Rejected { cid, error } = m {
            panic!("valid block {cid} refused: {error}");
        }
    })
    .unwrap()
}

/// A store that fails every write once `left` reaches zero: a process that
/// dies between two batches (each batch is atomic, in fjall as here).
#[derive(Clone)]
pub struct FailAfter {
    pub inner: MemoryStore,
    pub left: Arc<AtomicUsize>,
}

impl Store for FailAfter {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn scan(&self, table: Table, prefix: &[u8], from: &[u8]) -> Scan {
        self.inner.scan(table, prefix, from)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            let io = std::io::Error::other("killed");
            return Err(StoreError::Fjall(pincluster_crdt::store::fjall::Error::Io(
                io,
            )));
        }
        self.inner.write(batch)
    }
}

/// Copies every table of `from` into a new memory store.
pub fn copy_store(from: &MemoryStore) -> MemoryStore {
    let to = MemoryStore::new();
    for table in Table::ALL {
        let mut wb = WriteBatch::new();
        for entry in from.scan(table, b"", b"") {
            let (k, v) = entry.unwrap();
            wb.put(table, k, v);
        }
        to.write(wb).unwrap();
    }
    to
}

/// A replica by author `seed` on a copy of `base`, opened normally, whose
/// store then fails every write after `kill_at` more; and the copy, to
/// reopen as the disk the killed process left.
pub fn killed_after(
    base: &MemoryStore,
    seed: u8,
    kill_at: usize,
) -> (Engine<FailAfter>, MemoryStore) {
    let disk = copy_store(base);
    let failing = FailAfter {
        inner: disk.clone(),
        left: Arc::new(AtomicUsize::new(usize::MAX)),
    };
    let engine = Engine::open(
        failing.clone(),
        Author::from_seed(seed),
        Trust::everyone(),
        Limits::default(),
    )
    .unwrap();
    failing.left.store(kill_at, Ordering::SeqCst);
    (engine, disk)
}
