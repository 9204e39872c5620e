//! Fuzzes `pincluster::fuzz::identity`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::identity(data));
