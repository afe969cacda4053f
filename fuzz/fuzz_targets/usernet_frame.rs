//! Fuzz target for the user-mode network's frame parser (body in `parent::fuzzing::usernet_frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::fuzzing::usernet_frame(data));
