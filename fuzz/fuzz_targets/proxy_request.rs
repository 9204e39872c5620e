//! Fuzzes `pincluster::fuzz::proxy_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::proxy_request(data));
