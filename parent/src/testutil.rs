//! Helpers shared by the parent's unit tests: scratch directories and fake helper programs.

use std::path::PathBuf;
use std::time::Duration;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    /// `rkrs-<tag>-<pid>-<n>`: unique across the test threads of one process.
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rkrs-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// An executable shell script named `name` with `body`.
    pub(crate) fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` again while it fails with ETXTBSY: another test thread may fork while our
/// freshly written script is still open for writing.
pub(crate) fn retry_busy<T>(mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    for _ in 0..50 {
        match f() {
            Err(e) if e.contains("text file busy") => std::thread::sleep(Duration::from_millis(20)),
            r => return r,
        }
    }
    f()
}
