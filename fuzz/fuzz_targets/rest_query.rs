//! Fuzzes `pincluster::fuzz::rest_query`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::rest_query(data));
