//! Fuzz target for the DHCP reply parser of the child (body in `child::dhcp::fuzz_reply`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| child::dhcp::fuzz_reply(data));
