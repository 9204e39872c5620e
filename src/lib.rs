//! # pincluster: an IPFS Cluster peer
//!
//! Peers share one pinset, a merkle-CRDT (crate `pincluster-crdt`) kept in
//! fjall and synced over libp2p. The modules follow ipfs-cluster's
//! components:
//!
//! | module | role |
//! |---|---|
//! | [`addr`] | `host:port` of the multiaddrs that name an HTTP endpoint |
//! | [`cluster`] | the front every API calls: pin, unpin, status, peers, re-allocation, `ClusterError` |
//! | [`config`] | `service.json`-shaped configuration: load, env overrides, validate |
//! | [`duration`] | Go duration syntax, parsed and printed |
//! | [`fuzz`] | the fuzzers' entry points: one per parser of outside input |
//! | [`folder`] | the configuration folder: lock, peerstore, opening the store |
//! | [`identity`] | `identity.json`: the peer's Ed25519 key and peer id |
//! | [`ipfsconn`] | the IPFS daemon beside the peer: `IpfsConnector`, the Kubo RPC client and the embedded node |
//! | [`ipfs`] | the embedded IPFS node: block store, pins, UnixFS, its Kubo RPC subset, the gateway, its public swarm and Bitswap |
//! | [`types`] | domain types and wire shapes shared by every part: `Pin`, `ID`, `Version`, ... |
//! | [`pintracker`] | makes the local IPFS daemon hold what is allocated here |
//! | [`status`] | pin statuses: `TrackerStatus`, filters, `GlobalPinInfo` |
//! | [`informer`] | what this peer measures about itself and publishes |
//! | [`monitor`] | metrics over gossipsub, bound to their author; liveness and alerts |
//! | [`ndjson`] | the one splitter of streamed newline-delimited JSON replies, with one line limit |
//! | [`network`] | the only owner of the libp2p Swarm: a handle and one event loop |
//! | [`consensus`] | the only writer of the pinset: batching, announcing, fetching, trust |
//! | [`state`] | the pinset, read-only and typed, and the codec it is stored in |
//! | [`allocator`] | who pins what |
//! | [`graph`] | the health graph: who is connected to whom, as JSON and Graphviz DOT |
//! | [`api`] | the REST API, the IPFS proxy, and the HTTP server they share |
//! | [`peer`] | the composition root: start everything, stop it in order |
//! | [`cli`] | `init`, `daemon`, and the client commands |

pub mod addr;
pub mod allocator;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod duration;
pub mod folder;
pub mod fuzz;
pub mod graph;
pub mod identity;
pub mod informer;
pub mod ipfs;
pub mod ipfsconn;
pub mod monitor;
pub mod ndjson;
pub mod network;
pub mod peer;
pub mod pintracker;
pub mod state;
pub mod status;
pub mod types;
