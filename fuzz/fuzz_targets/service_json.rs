//! Fuzzes `pincluster::fuzz::service_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::service_json(data));
