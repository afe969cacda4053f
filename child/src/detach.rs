//! `--detach-netns` inside the child: the detached network namespace pinned on
//! `<statedir>/netns`, made by `rootlesskit-unshare`, and running code inside it.
//!
//! Upstream runs `unshare -n mount --bind /proc/self/ns/net <statedir>/netns` (§5.3 step 4);
//! we run our own helper, which does the same by syscalls and also brings `lo` up. The child
//! and the target stay in the host's network namespace; only the driver's interface lives in
//! the detached one, configured from a thread that [`Netns::within`] moves there.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, WaitOptions, waitpid};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use sys::golang::quote;
use sys::process::Ended;
use sys::spawn::{Command, Stage};

use proto::UNSHARE_HELPER_NAME;

/// What the helper prints before its error text.
const HELPER_ERROR: &str = "[rootlesskit:unshare] error: ";

/// At most this much of the helper's output is read.
const MAX_OUTPUT: u64 = 4096;

/// A network namespace held open by descriptor, with the path it was opened from.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

impl Netns {
    /// Creates `path` as an empty file of mode 0400 (upstream's `os.WriteFile(p, nil, 0400)`),
    /// runs `helper --net-bind <path>` to pin a new network namespace on it, and opens it.
    ///
    /// The helper inherits our user and mount namespaces, so the bind mount is visible in ours
    /// only: from outside it is reached as `/proc/<child pid>/root/<path>`.
    ///
    /// # Errors
    /// `failed to create a detached netns on "<path>": <why>` (upstream's prefix), where `<why>`
    /// is the helper's own error line when it gave one.
    pub fn create(helper: &Path, path: &Path) -> Result<Netns, String> {
        let fail = |why: String| {
            format!(
                "failed to create a detached netns on {}: {why}",
                quote(path.as_os_str().as_encoded_bytes())
            )
        };
        let file = rustix::fs::open(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR,
        )
        .map_err(|e| fail(format!("open {}: {}", path.display(), sys::errno::text(e))))?;
        drop(file);
        run_helper(helper, path).map_err(fail)?;
        Netns::open(path).map_err(fail)
    }

    /// Opens an existing namespace file, for example `<statedir>/netns`.
    ///
    /// # Errors
    /// `open <path>: <errno>`.
    pub(crate) fn open(path: &Path) -> Result<Netns, String> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("open {}: {}", path.display(), sys::errno::text(e)))?;
        Ok(Netns {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` on a new thread inside this network namespace and returns its result; the
    /// calling thread stays where it is. Everything `f` opens (sockets, netlink) belongs to this
    /// namespace.
    ///
    /// A thread of its own, because there is no way back: returning to the host's namespace
    /// needs `CAP_SYS_ADMIN` over the host's user namespace, which we lack (upstream's
    /// `ns.WithNetNSPath` fails the same way and throws its locked thread away). The thread
    /// inherits our blocked signal mask, and has ended when this returns, so the process is
    /// single-threaded again before anything forks.
    ///
    /// # Errors
    /// `f`'s error, or `failed to enter the network namespace <path>: <errno>`.
    pub fn within<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, String> + Send,
    ) -> Result<T, String> {
        let fd = self.fd.as_fd();
        let path = &self.path;
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(s, move || {
                    enter(fd).map_err(|e| {
                        format!(
                            "failed to enter the network namespace {}: {}",
                            path.display(),
                            sys::errno::text(e)
                        )
                    })?;
                    f()
                })
                .map_err(|e| format!("failed to start a thread: {}", sys::errno::text(&e)))?;
            worker
                .join()
                .unwrap_or_else(|_| Err("the network namespace thread panicked".into()))
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `setns(fd, CLONE_NEWNET)`: the kernel refuses a descriptor that is not a network namespace.
fn enter(fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
}

/// Runs the helper with an empty environment, its stdout and stderr captured together, and
/// waits for it.
fn run_helper(helper: &Path, target: &Path) -> Result<(), String> {
    let argv = [
        OsStr::new(UNSHARE_HELPER_NAME),
        OsStr::new("--net-bind"),
        target.as_os_str(),
    ];
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {}", sys::errno::text(e)))?;
    let out_w2 = out_w.try_clone().map_err(|e| sys::errno::text(&e))?;
    let mut cmd = Command::new(helper, argv, Vec::new()).map_err(|e| sys::errno::text(&e))?;
    cmd.fd(out_w, 1).fd(out_w2, 2);
    // `spawn` consumes the command, and with it our copies of the write end.
    let mut started = cmd
        .spawn()
        .map_err(|e| format!("fork/exec {}: {}", helper.display(), sys::errno::text(&e)))?;
    let exec = started.wait_exec();
    let mut output = Vec::new();
    if exec.is_ok() {
        let _ = std::fs::File::from(out_r)
            .take(MAX_OUTPUT)
            .read_to_end(&mut output);
    }
    let ended = wait(started.pid);
    if let Err(e) = exec {
        return Err(match e.stage {
            Stage::Exec => format!(
                "fork/exec {}: {}",
                helper.display(),
                sys::errno::text(&e.error)
            ),
            _ => sys::errno::text(&e.error),
        });
    }
    match ended {
        Some(Ended::Exited(0)) => Ok(()),
        ended => Err(explain(ended, &output)),
    }
}

/// Reaps `pid`; `None` if it could not be waited for.
fn wait(pid: i32) -> Option<Ended> {
    loop {
        match waitpid(Pid::from_raw(pid), WaitOptions::empty()) {
            Ok(Some((_, st))) => {
                if let Some(e) = Ended::from_wait(st) {
                    return Some(e);
                }
            }
            Err(rustix::io::Errno::INTR) => continue,
            _ => return None,
        }
    }
}

/// Why the helper failed, in one line: its own error text when it printed one, otherwise
/// how it ended and what it printed.
fn explain(ended: Option<Ended>, output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    if let Some(line) = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(HELPER_ERROR))
    {
        return line.to_string();
    }
    let how = ended.map_or_else(|| "could not be waited for".to_string(), Ended::describe);
    if text.is_empty() {
        format!("{UNSHARE_HELPER_NAME}: {how}")
    } else {
        format!(
            "{UNSHARE_HELPER_NAME}: {how} (out={})",
            quote(text.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_failures_read_as_one_line() {
        #[track_caller]
        fn check(ended: Option<Ended>, output: &str, expect: &str) {
            assert_eq!(explain(ended, output.as_bytes()), expect, "{output:?}");
        }
        check(
            Some(Ended::Exited(1)),
            "[rootlesskit:unshare] error: failed to create bind mount on /tmp/rk/netns: no such file or directory\n",
            "failed to create bind mount on /tmp/rk/netns: no such file or directory",
        );
        // The last error line wins over noise before it.
        check(
            Some(Ended::Exited(1)),
            "warning: x\n[rootlesskit:unshare] error: failed to bring up lo: operation not permitted\n",
            "failed to bring up lo: operation not permitted",
        );
        check(
            Some(Ended::Exited(3)),
            "",
            "rootlesskit-unshare: exit status 3",
        );
        check(
            Some(Ended::Signaled {
                sig: 9,
                core: false,
            }),
            "",
            "rootlesskit-unshare: signal: killed",
        );
        check(
            Some(Ended::Exited(2)),
            "something\nelse\n",
            r#"rootlesskit-unshare: exit status 2 (out="something\nelse")"#,
        );
        check(None, "", "rootlesskit-unshare: could not be waited for");
    }

    #[test]
    fn a_missing_helper_is_named() {
        let dir = std::env::temp_dir().join(format!("rkrs-detach-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join(proto::NETNS_FILE_NAME);
        let err = Netns::create(Path::new("/nonexistent/rootlesskit-unshare"), &target)
            .err()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            err,
            format!(
                "failed to create a detached netns on \"{}\": fork/exec /nonexistent/rootlesskit-unshare: no such file or directory",
                target.display()
            )
        );
    }

    #[test]
    fn opening_a_missing_file_names_it() {
        assert_eq!(
            Netns::open(Path::new("/nonexistent/netns"))
                .err()
                .as_deref(),
            Some("open /nonexistent/netns: no such file or directory")
        );
    }
}
