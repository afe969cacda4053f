//! Mounts as the binaries make them: the error every mount step reports (`failed to <what>
//! <path>: <errno>`, upstream's words) and bind-mounting a file. The child's own mount setup
//! (propagation, procfs, copy-up, sysfs, cgroup) is `child::mount`.

use std::fmt;
use std::path::Path;

use rustix::io::Errno;

/// A failed setup step: the action, the path it acted on, and what the kernel said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A syscall failed; printed as `failed to <what> <path>: <errno>`.
    Sys {
        /// The action, phrased to follow "failed to", for example `mount tmpfs on`.
        what: &'static str,
        /// The path (or interface name) the action was applied to.
        path: String,
        /// The error the kernel returned.
        errno: Errno,
    },
    /// The directory cannot be copied up; printed as `<path> cannot be copied up` (upstream's words).
    NotCopyable {
        /// The refused directory.
        path: String,
    },
    /// `--copy-up-mode=overlay` could not make its overlayfs; printed as
    /// `failed to copy-up <path> with overlayfs: <errno>`, then ` (<kernel's words>)` when the
    /// kernel logged a reason on the file system context.
    Overlay {
        /// The directory to copy up.
        path: String,
        /// The error the kernel returned.
        errno: Errno,
        /// The kernel's own message for the failure, if it gave one.
        detail: Option<String>,
    },
}

impl Error {
    /// Builds the `map_err` closure for a failed syscall on `path`; the path is only formatted on failure.
    pub fn sys<P: AsRef<Path>>(what: &'static str, path: P) -> impl FnOnce(Errno) -> Error {
        move |errno| Error::Sys {
            what,
            path: path.as_ref().display().to_string(),
            errno,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sys { what, path, errno } => {
                write!(f, "failed to {what} {path}: {}", crate::errno::text(*errno))
            }
            Error::NotCopyable { path } => write!(f, "{path} cannot be copied up"),
            Error::Overlay {
                path,
                errno,
                detail,
            } => {
                let why = crate::errno::text(*errno);
                match detail {
                    Some(d) => write!(f, "failed to copy-up {path} with overlayfs: {why} ({d})"),
                    None => write!(f, "failed to copy-up {path} with overlayfs: {why}"),
                }
            }
        }
    }
}

impl std::error::Error for Error {}

/// `mount(src, dst, NULL, MS_BIND, NULL)`—bind-mounts one file over another, for example the state dir's
/// `resolv.conf` over `/etc/resolv.conf` (`dst` is followed if it is a symlink, as upstream).
///
/// # Errors
///
/// `failed to create bind mount on <dst>: <errno>`.
pub fn bind_file(src: &Path, dst: &Path) -> Result<(), Error> {
    rustix::mount::mount_bind(src, dst).map_err(Error::sys("create bind mount on", dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_upstream() {
        #[track_caller]
        fn check(err: Error, expect: &str) {
            assert_eq!(err.to_string(), expect);
        }
        check(
            Error::sys("create bind mount on", "/nonexistent")(Errno::NOENT),
            "failed to create bind mount on /nonexistent: no such file or directory",
        );
        check(
            Error::sys("share mount point:", "/")(Errno::PERM),
            "failed to share mount point: /: operation not permitted",
        );
        check(
            Error::sys("mount cgroup2 on", "/sys/fs/cgroup")(Errno::BUSY),
            "failed to mount cgroup2 on /sys/fs/cgroup: device or resource busy",
        );
        check(
            Error::NotCopyable {
                path: "/tmp".into(),
            },
            "/tmp cannot be copied up",
        );
        check(
            Error::Overlay {
                path: "/etc".into(),
                errno: Errno::PERM,
                detail: None,
            },
            "failed to copy-up /etc with overlayfs: operation not permitted",
        );
        check(
            Error::Overlay {
                path: "/proc/sys".into(),
                errno: Errno::INVAL,
                detail: Some("overlayfs: failed to clone lowerpath".into()),
            },
            "failed to copy-up /proc/sys with overlayfs: invalid argument (overlayfs: failed to clone lowerpath)",
        );
    }
}
