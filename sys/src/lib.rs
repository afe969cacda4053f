//! The operating-system layer shared by `rootlesskit`, `rootlessctl`, `rootlesskit-docker-proxy`,
//! `rootlesskit-child` and `rootlesskit-unshare`: what rustix does not offer, wrapped so that
//! callers stay safe, and the conventions all of them follow on the command line.
//!
//! One module per family, as rustix has them. `unsafe` lives only in the modules marked
//! `allow(unsafe_code)` below, each block argued in a `// SAFETY:` line; a function that could
//! close or overwrite a descriptor some `OwnedFd` owns is itself `unsafe` or takes the `OwnedFd`.

pub mod errno;
#[allow(unsafe_code)]
pub mod fd;
pub mod fdpass;
pub mod goflag;
pub mod golang;
#[allow(unsafe_code)]
pub mod mem;
pub mod mount;
#[allow(unsafe_code)]
pub mod net;
pub mod netlink;
#[allow(unsafe_code)]
pub mod process;
#[allow(unsafe_code)]
mod raw;
#[allow(unsafe_code)]
pub mod signal;
#[allow(unsafe_code)]
pub mod spawn;
pub mod vmnet;
