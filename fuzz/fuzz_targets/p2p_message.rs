//! Fuzzes `pincluster::fuzz::p2p_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pincluster::fuzz::p2p_message(data));
