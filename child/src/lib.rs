//! Library half of the `child` crate: what `rootlesskit-child` does inside the namespaces. The
//! OS layer it shares with the other binaries is the `sys` crate.
#![deny(unsafe_code)]

pub mod detach;
pub mod dhcp;
#[cfg(test)]
mod fuzzing;
pub mod mount;
pub mod nftables;
pub mod ports;
pub mod routing;
pub mod vpnkit;
