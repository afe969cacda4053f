//! The rootlesskit parent: everything that runs outside the new namespaces.
#![deny(unsafe_code)]

pub mod api;
pub(crate) mod backoff;
pub(crate) mod cgroup;
pub(crate) mod check;
pub(crate) mod cli;
pub mod entry;
pub mod exec;
// Fuzz-target bodies: built for the corpus-replay tests and for cargo-fuzz (`--cfg fuzzing`),
// not into the shipped binaries.
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub(crate) mod gojson;
pub(crate) mod idmap;
pub mod libexec;
pub(crate) mod net;
pub mod notify;
pub mod port;
pub(crate) mod run;
pub(crate) mod statedir;
pub(crate) mod statusfd;
#[cfg(test)]
pub(crate) mod testutil;
pub(crate) mod usernet;

use std::io::Write;

/// The version of upstream RootlessKit whose behaviour we match, which is what scripts and
/// clients compare against (defined once, in `sys::goflag`, for every binary).
pub use sys::goflag::VERSION as UPSTREAM_VERSION;

/// Prints a warning line the way every parent warning is printed.
pub fn warn(msg: &str) {
    let _ = writeln!(std::io::stderr(), "[rootlesskit:parent] warning: {msg}");
}

/// Prints an error line with upstream's prefix.
pub fn error(who: &str, msg: &str) {
    let _ = writeln!(std::io::stderr(), "[rootlesskit:{who}] error: {msg}");
}
