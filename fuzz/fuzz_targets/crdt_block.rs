//! Fuzzes `pincluster::fuzz::crdt_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::crdt_block(data));
