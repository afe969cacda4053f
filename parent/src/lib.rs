//! The rootlesskit parent: everything that runs outside the new namespaces.
#![deny(unsafe_code)]

pub mod cli;
pub mod exec;
pub mod idmap;
