//! A network driver program run as our child (slirp4netns, pasta): launching it with its output
//! in a memfd, waiting for its readiness signal while watching its pidfd, and killing and
//! reaping it at the end.
//!
//! [`exec::start_helper`] gives it `SIGKILL` as its parent-death signal, so it cannot outlive
//! rootlesskit, not even a SIGKILLed one.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions, waitpid};

use crate::exec;

/// How long [`Running::kill`] waits for a killed program to be gone before leaving it to
/// whoever reaps us. It normally takes 10 to 40 ms (closing its tap waits for the kernel); only
/// a program stuck in the kernel takes longer, and it must not hold up our exit.
const REAP_LIMIT: Duration = Duration::from_secs(1);

/// Lines of the program's output quoted in an error.
const TAIL_LINES: usize = 5;
const TAIL_BYTES: usize = 1000;

/// A launched driver program.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) pid: i32,
    pidfd: OwnedFd,
    /// A memfd holding its stdout and stderr.
    log: OwnedFd,
    pub(super) reaped: bool,
}

/// What the readiness descriptor said when it was readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// The program is ready.
    Ready,
    /// Not yet (a partial line, a spurious wakeup): keep waiting.
    NotYet,
    /// End of file: no readiness will come from it; wait for the exit or the timeout.
    Closed,
}

/// Why [`Running::wait_ready`] returned without readiness.
pub(super) enum Wait {
    /// The program ended first.
    Exited(ExitStatus),
    /// A failure of our own, or the timeout, already worded.
    Failed(String),
    /// A watched descriptor became readable first.
    Interrupted,
}

impl Running {
    /// Starts `binary args...` with stdin from `/dev/null`, stdout and stderr into a memfd, and
    /// each `(fd, number)` of `fds` placed at that number.
    ///
    /// # Errors
    /// The reason it could not be started, as [`exec::start_helper`] words it.
    pub(super) fn start(
        binary: &Path,
        args: &[OsString],
        extra: Vec<(OwnedFd, RawFd)>,
    ) -> Result<Running, String> {
        let sys = |e: Errno| sys::errno::text(e);
        let log = rustix::fs::memfd_create("driver-output", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(sys)?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| sys::errno::text(&e));
        let devnull = std::fs::File::open("/dev/null").map_err(|e| sys::errno::text(&e))?;
        let mut fds = vec![
            (OwnedFd::from(devnull), 0),
            (dup(&log)?, 1),
            (dup(&log)?, 2),
        ];
        fds.extend(extra);
        let (pid, pidfd) = exec::start_helper(binary, args, fds)?;
        Ok(Running {
            pid,
            pidfd,
            log,
            reaped: false,
        })
    }

    /// The pidfd, readable once the program has ended.
    pub(super) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Waits until `ready` is readable and `on_readable` says [`Readiness::Ready`], for the
    /// program's end, for a watched descriptor, or for `limit` (`<name> did not become ready
    /// within <limit>`). Readiness wins over a simultaneous exit; an exit over a watched
    /// descriptor.
    pub(super) fn wait_ready(
        &mut self,
        name: &str,
        ready: BorrowedFd<'_>,
        watch: &[BorrowedFd<'_>],
        limit: Duration,
        on_readable: &mut dyn FnMut() -> Result<Readiness, String>,
    ) -> Result<(), Wait> {
        let deadline = Instant::now() + limit;
        let mut ready_open = true;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Wait::Failed(format!(
                    "{name} did not become ready within {limit:?}{}",
                    self.output_suffix()
                )));
            }
            // rustix's conversion; a duration it cannot carry (never, here) waits without limit.
            let timeout = Timespec::try_from(left).ok();
            let mut fds = Vec::with_capacity(2 + watch.len());
            fds.push(PollFd::new(&self.pidfd, PollFlags::IN));
            for w in watch {
                fds.push(PollFd::from_borrowed_fd(*w, PollFlags::IN));
            }
            if ready_open {
                fds.push(PollFd::from_borrowed_fd(ready, PollFlags::IN));
            }
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(Wait::Failed(format!("poll: {}", sys::errno::text(e))));
                }
            }
            let exited = !fds[0].revents().is_empty();
            let watched = fds[1..1 + watch.len()]
                .iter()
                .any(|f| !f.revents().is_empty());
            let readable = ready_open && !fds[1 + watch.len()].revents().is_empty();
            drop(fds);
            if readable {
                match on_readable().map_err(Wait::Failed)? {
                    Readiness::Ready => return Ok(()),
                    Readiness::NotYet => {}
                    Readiness::Closed => ready_open = false,
                }
            }
            if exited && let Some(status) = self.try_reap() {
                return Err(Wait::Exited(status));
            }
            if watched {
                return Err(Wait::Interrupted);
            }
        }
    }

    /// Collects the exit status if the program has ended.
    pub(super) fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        let pid = Pid::from_raw(self.pid)?;
        loop {
            match waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(Some((_, st))) => {
                    self.reaped = true;
                    return Some(ExitStatus::from_raw(st.as_raw()));
                }
                Ok(None) => return None,
                Err(Errno::INTR) => continue,
                Err(_) => {
                    // Someone else reaped it (ECHILD): it is gone all the same.
                    self.reaped = true;
                    return Some(ExitStatus::from_raw(0));
                }
            }
        }
    }

    /// Everything the program has printed so far.
    pub(super) fn output(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::pread(self.log.as_fd(), &mut buf, out.len() as u64) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// `; last output: "<tail>"`, or nothing when the program printed nothing.
    pub(super) fn output_suffix(&self) -> String {
        let tail = super::last_lines(&self.output(), TAIL_LINES, TAIL_BYTES);
        if tail.is_empty() {
            String::new()
        } else {
            format!("; last output: {}", exec::quote(&tail))
        }
    }

    /// `<name> failed (exit status N)` or `<name> killed by signal (signal: …)`, with the tail
    /// of its output, once the program has ended.
    pub(super) fn ended(&mut self, name: &str) -> Option<String> {
        let status = self.try_reap()?;
        Some(self.exit_summary(name, status))
    }

    /// `<name> failed (exit status N)` or `<name> killed by signal (signal: …)` for `status`,
    /// with the tail of the output.
    pub(super) fn exit_summary(&self, name: &str, status: ExitStatus) -> String {
        let what = if status.signal().is_some() {
            "killed by signal"
        } else {
            "failed"
        };
        format!(
            "{name} {what} ({}){}",
            exec::exit_text(status),
            self.output_suffix()
        )
    }

    /// How it ended and the tail of its output, once [`Running::pidfd`] was readable.
    #[inline(never)]
    pub(super) fn describe_exit(&mut self) -> String {
        match self.try_reap() {
            Some(st) => format!("{}{}", exec::exit_text(st), self.output_suffix()),
            None => String::new(),
        }
    }

    /// SIGKILL, then reaped: its exit takes a while, since closing its tap waits for an RCU
    /// grace period in the kernel (10 to 40 ms here), and a program we leave unreaped becomes
    /// a zombie of whoever inherits it when we exit, which piles up under a subreaper that
    /// does not reap (a container's init, a CI runner). So we wait for its pidfd, but at most
    /// [`REAP_LIMIT`]: one stuck in the kernel is left behind rather than holding up our exit.
    pub(super) fn kill(&mut self) {
        if self.reaped {
            return;
        }
        self.reaped = true;
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
        reap_within(self.pid, &self.pidfd, REAP_LIMIT);
    }
}

/// Waits up to `limit` for the process `pid` (with `pidfd`) to end, and reaps it if it did.
pub(super) fn reap_within(pid: i32, pidfd: &OwnedFd, limit: Duration) {
    let Some(pid) = Pid::from_raw(pid) else {
        return;
    };
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(None) | Err(Errno::INTR) => {}
            // Reaped, or not ours to reap (ECHILD).
            Ok(Some(_)) | Err(_) => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let timeout = Timespec::try_from(left).ok();
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// What a driver that runs one program answers for [`Driver::stop`](super::Driver::stop):
/// the program is killed, reaped (within [`REAP_LIMIT`]) and forgotten.
pub(super) fn stop(running: &mut Option<Running>) {
    if let Some(mut run) = running.take() {
        run.kill();
    }
}

/// What such a driver answers for [`Driver::exit_fd`](super::Driver::exit_fd): the program's
/// pidfd until it has been reaped.
pub(super) fn exit_fd(running: &Option<Running>) -> Option<BorrowedFd<'_>> {
    running.as_ref().filter(|r| !r.reaped).map(Running::pidfd)
}

/// What such a driver answers for [`Driver::describe_exit`](super::Driver::describe_exit).
pub(super) fn describe_exit(running: &mut Option<Running>) -> String {
    running
        .as_mut()
        .map(Running::describe_exit)
        .unwrap_or_default()
}
