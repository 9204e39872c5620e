//! Fuzzes `pincluster::fuzz::multipart`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::multipart(data));
