//! Fuzz target for the DHCP reply parser of the child (body in `parent::fuzzing::dhcp_reply`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::fuzzing::dhcp_reply(data));
