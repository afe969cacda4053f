//! Fuzz target for the `rootlesskit` command line (body in `parent::fuzzing::cli`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::fuzzing::cli(data));
