//! The embedded IPFS node: its own libp2p swarm on the public IPFS
//! protocols ([`swarm`]) and Bitswap ([`bitswap`]) to serve and fetch
//! blocks.

pub mod bitswap;
pub mod swarm;
