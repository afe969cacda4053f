//! Fuzz target for the API's HTTP request and response parsers (body in `parent::api::fuzzing::http`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::api::fuzzing::http(data));
