//! Wire shapes shared by every part of the peer: the REST API's JSON objects
//! (`Pin`, `ID`, `Version`, `Error`), the pin options carried in query
//! strings. The record a pin is kept as in the shared CRDT state belongs to
//! the pinset: [`crate::state`].
//!
//! The JSON follows ipfs-cluster 1.1.6 field for field (names, order, `null`
//! versus `[]`, Go's time format) because the Go client, `ipfs-cluster-ctl`
//! and users' jq scripts read it. Decoding is as lenient as Go's
//! `encoding/json`: a missing field or a `null` takes the zero value. The two
//! exceptions are a pin's `cid` and a peer's `id`, without which the object
//! means nothing.
//!
//! [`Pin`] and its options, modes and types are the domain; the other REST
//! objects and [`decode_cid`] are in `wire`, pin options in query strings in
//! `query`, and the serde helpers that write Go's `encoding/json` shapes in
//! `go_json`.

mod go_json;
mod pin;
mod query;
mod wire;

#[cfg(test)]
pub(crate) mod tests;

pub use go_json::go_time;
pub(crate) use go_json::{display_from_str, metadata_map, opt_string, string_list};
pub use pin::{InvalidFilter, Pin, PinMode, PinOptions, PinType, PinTypeFilter};
pub use query::OptionsError;
pub use wire::{ApiError, CidError, IdInfo, IpfsIdInfo, Version, decode_cid};
