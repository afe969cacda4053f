//! Where the helper binaries are: `rootlesskit-child` and `rootlesskit-unshare` sit next to
//! `rootlesskit`, or in `../libexec/rootlesskit/` of a packaged install.
//!
//! A module of its own so that `run`, `net` and `check` can all find them without depending on
//! one another.

use std::path::{Path, PathBuf};

/// The name of the child binary, found next to `rootlesskit`.
pub(crate) const CHILD_BIN: &str = "rootlesskit-child";

/// The helper that makes the detached network namespace of `--detach-netns`.
pub const UNSHARE_BIN: &str = proto::UNSHARE_HELPER_NAME;

/// Finds a helper binary next to our own executable, then in `../libexec/rootlesskit/`.
///
/// # Errors
/// `cannot find our own executable: …`, or `cannot find NAME: looked for A and B`.
pub(crate) fn find_helper(name: &str) -> Result<PathBuf, String> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| format!("cannot find our own executable: {}", sys::errno::text(&e)))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(name),
        dir.join("../libexec/rootlesskit").join(name),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "cannot find {name}: looked for {} and {}",
        candidates[0].display(),
        candidates[1].display()
    ))
}
