//! Fuzz target for the API's port-spec parser (body in `parent::api::fuzzing::port_spec`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::api::fuzzing::port_spec(data));
