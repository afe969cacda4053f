//! Fuzz target for the API's JSON decoders (body in `parent::api::fuzzing::json`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::api::fuzzing::json(data));
