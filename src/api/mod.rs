//! The HTTP interfaces of the peer. Each is off when its section is absent
//! from `service.json`.

pub mod car;
pub mod proxy;
pub mod query;
pub mod rest;
pub mod serve;
