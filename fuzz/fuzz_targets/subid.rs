//! Fuzz target for the id-map parsers (body in `parent::fuzzing::subid`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::fuzzing::subid(data));
