//! The operating-system layer shared by `rootlesskit`, `rootlessctl`, `rootlesskit-docker-proxy`,
//! `rootlesskit-child` and `rootlesskit-unshare`: what rustix does not offer, wrapped so that
//! callers stay safe, and the conventions all of them follow on the command line.
pub mod goflag;
