//! Fuzzes `pincluster::fuzz::pin_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::pin_record(data));
