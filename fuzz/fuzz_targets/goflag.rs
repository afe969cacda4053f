//! Fuzz target for `sys::goflag`, the flag parser of every binary (body in `parent::fuzzing::goflag`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::fuzzing::goflag(data));
