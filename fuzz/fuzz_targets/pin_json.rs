//! Fuzzes `pincluster::fuzz::pin_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::pin_json(data));
