//! Fuzz target for the release date read from `pasta --version` (body in
//! `parent::fuzzing::pasta_version`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::fuzzing::pasta_version(data));
