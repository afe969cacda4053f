//! Fuzz target: arbitrary bytes from "vpnkit" into the vmnet parsers (init, interface reply, frame stream, DHCP offer).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proto::vmnet::fuzz(data));
