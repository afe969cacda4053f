//! Fuzz target for the sd_notify relay's message rewriting (body in `parent::notify::fuzz_message`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parent::notify::fuzz_message(data));
