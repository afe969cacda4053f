//! Library half of the `child` crate: what `rootlesskit-child` does inside the namespaces, plus
//! the low-level process code (`sys`, `sys::spawn`) that the parent shares.
#![deny(unsafe_code)]

pub mod cgroup;
pub mod detach;
pub mod dhcp;
pub mod enter;
pub mod errno;
pub mod fdpass;
pub mod golang;
pub mod mount;
pub mod netlink;
pub mod nftables;
pub mod ports;
pub mod signals;
pub mod sys;
pub mod vpnkit;

pub use sys::spawn;
