//! Fuzzes `pincluster::fuzz::car`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::car(data));
