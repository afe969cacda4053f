//! Library half of the `child` crate: what `rootlesskit-child` does inside the namespaces, plus
//! the low-level process code (`sys`, `spawn`) that the parent shares.
#![deny(unsafe_code)]

pub mod sys;
