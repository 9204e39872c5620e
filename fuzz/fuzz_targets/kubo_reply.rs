//! Fuzzes `pincluster::fuzz::kubo_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::kubo_reply(data));
