//! The HTTP interfaces of the peer. Each is off when its section is absent
//! from `service.json`.

pub mod rest;
