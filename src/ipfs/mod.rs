//! The embedded IPFS node: what lets a peer pin, store and serve content
//! with no IPFS daemon beside it.
//!
//! | file | role |
//! |---|---|
//! | [`store`] | the block index and pins in a fjall database of their own; gc; `repo/stat` |
//! | [`segments`] | the block bytes, in append-only segment files beside it |
//! | [`dag`] | codecs, CID checks, the links of dag-pb / raw / dag-cbor blocks |
//! | [`pb`] | dag-pb and UnixFS protobuf, by hand |
//! | [`dagjson`] | DAG-JSON for `dag/get` and `dag/put` |
//! | [`unixfs`] | the importer (Kubo's CIDs) and the exporter (`cat`, `ls`, `get`) |
//! | [`fetch`] | [`fetch::BlockFetcher`]: where blocks missing locally come from |
//! | [`swarm`] | the public IPFS swarm: TCP+Noise+Yamux, identify, ping, Kademlia |
//! | [`bitswap`] | Bitswap 1.2 client and server over the swarm |
//! | [`exchange`] | the store as Bitswap's block source, the swarm as the pins' fetcher, the swarm's key |
//! | [`node`] | [`node::Node`]: the store, the fetcher and recursive pinning |
//! | [`rpc`] | the Kubo RPC calls clients use most, answered by the node (served on loopback for the proxy) |
//! | [`gateway`] | the read-only HTTP gateway: `/ipfs/<cid>[/path]` |

pub mod bitswap;
pub mod dag;
pub mod dagjson;
pub mod exchange;
pub mod fetch;
pub mod gateway;
pub mod node;
pub mod pb;
pub mod rpc;
pub mod segments;
pub mod store;
pub mod swarm;
pub mod unixfs;
