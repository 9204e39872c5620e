//! # pincluster-crdt: the merkle-CRDT engine behind pincluster's pinset
//!
//! A replicated map from key to value (both bytes). Every change is a
//! *delta block*: content-addressed, signed by its author, linking the heads
//! its writer had merged. Replicas exchange heads and blocks in any order;
//! two replicas that merged the same blocks hold the same state and the
//! same heads. The crate knows nothing of the network: the peer feeds it
//! blocks ([`Engine::receive`], [`Engine::merge_next`]) and ships what it
//! commits ([`Engine::commit`]).
//!
//! ## The laws
//!
//! Add-wins observed-remove map, as in go-ds-crdt:
//!
//! 1. **Elements.** A put of key `k` in block `B` creates the element
//!    `(k, id = CID(B))` with `B`'s priority. Elements are never modified.
//! 2. **Deletes name ids.** A delete of `k` carries the ids of exactly the
//!    elements of `k` its writer had merged, so a concurrent put (an id the
//!    writer never saw) survives: add wins.
//! 3. **Priority is height.** A block's priority is the largest height
//!    among its parents + 1 (1 without parents); its height is its priority.
//!    Receivers check this at merge and refuse a block that lies about it.
//! 4. **The value** of `k` is that of its live element with the highest
//!    priority, then the greater value bytes (go-ds-crdt's code, not its
//!    comment), then the greater id (only to make the stored winner unique;
//!    equal values are the same value).
//! 5. **Within a delta**, deletes apply before puts, so a batch that deletes
//!    and re-puts a key leaves it with the new value.
//! 6. **Causal merge.** A block merges only after all its parents. The
//!    merged set is therefore closed under "parent of", a delete always
//!    finds the elements it names already merged, and no tombstone ever
//!    needs to be kept: the processed markers are the causal context.
//! 7. **Heads** are exactly the merged blocks no merged block links to.
//!
//! From these, merge is commutative, associative and idempotent over sets
//! of blocks: the state is a function of the set of merged blocks alone.
//! The property tests check it against `crdts::Orswot` as a reference.
//!
//! ## Block format (version 1)
//!
//! Canonical DAG-CBOR, addressed by CIDv1 (codec dag-cbor 0x71, multihash
//! sha2-256), a map with these fields (canonical key order):
//!
//! | field      | type                          | meaning |
//! |------------|-------------------------------|---------|
//! | `v`        | uint                          | format version, 1 |
//! | `sig`      | bytes                         | author's signature |
//! | `dels`     | `[[key: bytes, [id: link]]]`  | deletes, sorted by key, ids sorted |
//! | `puts`     | `[[key: bytes, value: bytes]]`| puts, sorted by key, keys unique |
//! | `links`    | `[link]`                      | parent heads, sorted, unique |
//! | `author`   | bytes                         | the author's identity (a libp2p peer id) |
//! | `priority` | uint                          | height: max parent height + 1 |
//!
//! The signature covers `"pincluster-crdt/delta/v1\0"` followed by the
//! sha2-256 digest of the block's encoding with `sig` set to the empty byte
//! string; the
//! [`Verifier`] also decides whether the author is trusted. A received
//! block must hash to its CID, decode, re-encode to the very same bytes
//! (canonical form), and respect [`Limits`]; see [`BlockError`] for every
//! refusal.
//!
//! ## Storage layout
//!
//! Seven tables ([`store::Table`]; fjall keyspaces of one database, so one
//! write batch spans them atomically). CIDs are stored as their 36 binary
//! bytes, heights and priorities as big-endian u64.
//!
//! | table      | key                                 | value |
//! |------------|-------------------------------------|-------|
//! | `blocks`   | CID                                 | block bytes (merged and pending) |
//! | `markers`  | CID                                 | height: the block is merged (processed marker) |
//! | `heads`    | CID                                 | height: the block is a head |
//! | `elements` | esc(key) ‖ 0x00 0x00 ‖ element id   | priority ‖ value: a live element |
//! | `values`   | key                                 | priority ‖ winning id ‖ value |
//! | `sync`     | `p` ‖ CID                           | the parents of a pending block |
//! |            | `w` ‖ parent ‖ child                | pending `child` waits for `parent` |
//! | `sync`     | `x` ‖ CID                           | wanted: a missing parent of a pending block |
//! |            | `r` ‖ CID                           | ready: every parent merged, merge next |
//! |            | `j` ‖ CID                           | refused: never fetch or merge again |
//! | `meta`     | `format`                            | layout version (1) |
//! |            | `installing`                        | a state install is under way |
//!
//! `esc` doubles every 0x00 byte as 0x00 0xFF, so element keys sort by key
//! then id and no key's elements are a prefix of another's. `values` gives
//! the point read and the key-ordered streaming scan; `elements` is the
//! per-key index that lets a delete find the runner-up without reading any
//! block, and the ordered scan of live elements a snapshot needs.
//!
//! **Atomicity.** Merging one block writes its set changes, its marker, its
//! head update, the removal of its pending entries and the promotion of
//! children that became ready in **one** batch. A crash at any instant
//! reopens to a state in which each block is either wholly merged or still
//! pending, and [`Engine::open`] resumes the ready queue from disk.
//!
//! ## Snapshots
//!
//! The hooks a snapshot-based join needs (`shared/spec/snapshots.md`
//! §A.3.5): [`Engine::install_state`] (bulk install, rolled back on open if
//! interrupted), [`Engine::is_processed`] (causal-context query),
//! [`Engine::mark_processed`] (bulk markers) and [`Reader::elements`]
//! (ordered scan of live elements with ids and priorities).
//! [`snapshot`] builds on them: signed, chunked snapshots that
//! [`Engine::build_snapshot`] writes and [`Engine::install_snapshot`] joins
//! into any replica, empty or not, crash-safely. Two more `meta` keys:
//! `snapshot` (the manifest this replica serves) and `snapshot_install`
//! (the plan of an install under way); the `c` prefix of `sync` holds a
//! snapshot's context while it is staged.
//!
//! ## History compaction
//!
//! [`Engine::compact`] deletes the bytes of every delta below the served
//! snapshot's frontier (module `compact`): the markers, the live state and
//! the snapshot's chunks stay, so merges are unchanged and a peer that asks
//! for a dropped block takes the snapshot instead. [`Engine::descends_from`]
//! tells whether a peer's announced heads already cover a snapshot, the
//! test a caller uses to decide when compaction is wise. Two more `meta`
//! keys: `compacting` (a compaction under way) and `compacted` (the
//! manifest it finished for).

mod batch;
mod block;
mod compact;
mod engine;
mod error;
mod layout;
mod sign;
pub mod snapshot;
pub mod store;

pub use batch::Batch;
pub use block::{Block, DAG_CBOR, Delete, FORMAT_VERSION, Limits, Put, SHA2_256, cid_of, links_of};
pub use cid::Cid;
pub use compact::Compacted;
pub use engine::{Committed, Element, Engine, Head, KeyChange, Merged, Reader, Received};
pub use error::{BatchError, BlockError, Error, SnapshotError};
pub use sign::{Signer, Verifier, VerifyError};
pub use snapshot::{ChunkKind, Installed, Manifest};
