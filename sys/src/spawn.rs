//! Starting a process with fork-like `clone3`: optional new namespaces, a "go" byte to wait for,
//! descriptors placed at fixed numbers, parent-death signal, and exec errors reported back
//! through a close-on-exec pipe. Used by the parent for the child and by the child for the target.
//!
//! # Safety
//!
//! The one `unsafe` call is [`process::clone3_fork`]: between it and `execve` the new process runs
//! only `child_after_fork`, which makes raw syscalls on memory prepared before the fork (no
//! allocation, no locks, no printing), so frozen locks of other threads cannot bite.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::{
    Resource, Rlimit, Signal, getpid, getppid, getrlimit, set_parent_process_death_signal,
    setrlimit,
};
use rustix::thread::UnshareFlags;

use crate::process::{self, CStrVec, Forked};
use crate::{fd, signal};
use linux_raw_sys::general as g;

/// Descriptors of the spawner are moved at least this high before forking (or just above the
/// highest target number, when that is lower than this process's descriptor limit allows), so
/// that placing descriptors at their target numbers in the new process never overwrites one
/// still needed.
const HIGH_FD: RawFd = 256;

/// The soft and hard `RLIMIT_NOFILE` this process started with, once
/// [`raise_nofile_limit`] raised the soft one (`u64::MAX` before: nothing to restore).
static ORIGINAL_NOFILE: [AtomicU64; 2] = [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)];

/// `setrlimit(RLIMIT_NOFILE)`—raises this process's soft descriptor limit to its hard one, as
/// Go's runtime does at start, and remembers the original, which every process started with
/// [`Command::spawn`] gets back before its exec (as Go's `syscall` restores it), so programs
/// run from here see the limit they would have seen without us. Returns the soft limit now in
/// force.
///
/// # References
/// - [`setrlimit(2)`](https://man7.org/linux/man-pages/man2/setrlimit.2.html)
pub fn raise_nofile_limit() -> u64 {
    let now = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (now.current, now.maximum) else {
        return u64::MAX;
    };
    let hard_n = hard.unwrap_or(u64::MAX);
    if soft >= hard_n {
        return soft;
    }
    let raised = Rlimit {
        current: hard,
        maximum: hard,
    };
    if setrlimit(Resource::Nofile, raised).is_err() {
        return soft;
    }
    ORIGINAL_NOFILE[1].store(hard_n, Ordering::Relaxed);
    ORIGINAL_NOFILE[0].store(soft, Ordering::Relaxed);
    hard_n
}

/// Puts back the limit [`raise_nofile_limit`] raised; a raw syscall, fit for after the fork.
fn restore_nofile_limit() -> io::Result<()> {
    let soft = ORIGINAL_NOFILE[0].load(Ordering::Relaxed);
    if soft == u64::MAX {
        return Ok(());
    }
    let hard = ORIGINAL_NOFILE[1].load(Ordering::Relaxed);
    let original = Rlimit {
        current: Some(soft),
        maximum: (hard != u64::MAX).then_some(hard),
    };
    setrlimit(Resource::Nofile, original).map_err(Into::into)
}

/// Where the exec failed, reported to the spawner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the go byte (the spawner went away).
    Go,
    /// `unshare` of the extra namespaces.
    Unshare,
    /// Setting up descriptors, session or signal mask.
    Setup,
    /// `execve` itself.
    Exec,
}

/// A failed start: the stage and the errno.
#[derive(Debug)]
pub struct SpawnError {
    /// What was being done.
    pub stage: Stage,
    /// Why it failed.
    pub error: io::Error,
}

/// What to start and how.
pub struct Command {
    path: CString,
    argv: CStrVec,
    envp: CStrVec,
    listen_pid_index: Option<usize>,
    clone_flags: u64,
    unshare: UnshareFlags,
    fds: Vec<(OwnedFd, RawFd)>,
    keep_fds: Vec<RawFd>,
    close_fds: Vec<RawFd>,
    go: Option<OwnedFd>,
    pdeathsig: bool,
    setsid: bool,
    persistent_tap: Option<String>,
}

impl Command {
    /// A command running `path` with `argv` (including argv\[0]) and exactly the environment
    /// `env` (`KEY=VALUE` entries).
    pub fn new<A, E>(path: &Path, argv: A, env: E) -> io::Result<Command>
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
        E: IntoIterator<Item = OsString>,
    {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        Ok(Command {
            path,
            argv: CStrVec::new(argv)?,
            envp: CStrVec::new(env)?,
            listen_pid_index: None,
            clone_flags: 0,
            unshare: UnshareFlags::empty(),
            fds: Vec::new(),
            keep_fds: Vec::new(),
            close_fds: Vec::new(),
            go: None,
            pdeathsig: true,
            setsid: false,
            persistent_tap: None,
        })
    }

    /// Like [`Command::new`], but the environment entry that starts with `LISTEN_PID=` is
    /// rewritten to the new process's own pid, as systemd socket activation requires.
    pub fn new_with_listen_pid<A>(
        path: &Path,
        argv: A,
        mut env: Vec<OsString>,
    ) -> io::Result<Command>
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        let index = env
            .iter()
            .position(|e| e.as_bytes().starts_with(b"LISTEN_PID="));
        if let Some(i) = index {
            // Room for any pid: the real digits are written after the fork.
            env[i] = OsString::from(format!("LISTEN_PID={}", "0".repeat(20)));
        }
        let mut cmd = Command::new(path, argv, env)?;
        cmd.listen_pid_index = index;
        Ok(cmd)
    }

    /// `CLONE_NEW*` flags for the `clone3` call itself.
    pub fn clone_flags(&mut self, flags: u64) -> &mut Self {
        self.clone_flags = flags;
        self
    }

    /// Namespaces to `unshare` in the new process after the go byte, before exec.
    pub fn unshare(&mut self, flags: UnshareFlags) -> &mut Self {
        self.unshare = flags;
        self
    }

    /// Places `fd` at descriptor number `target` in the new process (inheritable).
    pub fn fd(&mut self, fd: OwnedFd, target: RawFd) -> &mut Self {
        self.fds.push((fd, target));
        self
    }

    /// Keeps descriptor `fd`, already open at that number, inheritable in the new process
    /// (systemd's `LISTEN_FDS`).
    pub fn keep_fd(&mut self, fd: RawFd) -> &mut Self {
        self.keep_fds.push(fd);
        self
    }

    /// Closes `fd` in the new process right after the fork: pass the write end of the go pipe,
    /// so that the spawner's death shows up as end of file.
    pub fn close_in_child(&mut self, fd: RawFd) -> &mut Self {
        self.close_fds.push(fd);
        self
    }

    /// The new process waits for one byte on `fd` before doing anything else; end of file
    /// makes it exit quietly with status 1.
    pub fn wait_for_go(&mut self, fd: OwnedFd) -> &mut Self {
        self.go = Some(fd);
        self
    }

    /// Whether the new process gets `SIGKILL` when the spawning thread dies (default: yes).
    pub fn pdeathsig(&mut self, on: bool) -> &mut Self {
        self.pdeathsig = on;
        self
    }

    /// Whether the new process starts a new session (loses its controlling terminal).
    pub fn setsid(&mut self, on: bool) -> &mut Self {
        self.setsid = on;
        self
    }

    /// After the unshare, the new process makes the tap `name` in its network namespace as a
    /// persistent device ([`crate::net::make_persistent_tap`]), for the network driver to
    /// attach to; best effort (a driver that finds no tap makes its own, as before).
    pub fn persistent_tap(&mut self, name: &str) -> &mut Self {
        self.persistent_tap = Some(name.to_owned());
        self
    }

    /// Forks the new process. Returns at once; call [`Started::wait_exec`] (after sending the go
    /// byte, if one is awaited) to learn whether the exec succeeded.
    pub fn spawn(mut self) -> io::Result<Started> {
        // Move every descriptor we hand over out of the way of the target numbers: to HIGH_FD
        // and up, so they stay clear of what the spawner opens meanwhile, unless the descriptor
        // limit is lower than that, where just above the highest target is enough.
        let floor = self
            .fds
            .iter()
            .map(|&(_, t)| t + 1)
            .max()
            .unwrap_or(3)
            .max(3);
        let floor = match getrlimit(Resource::Nofile).current {
            Some(soft) if soft <= HIGH_FD as u64 + 64 => floor,
            _ => HIGH_FD,
        };
        let mut moved = Vec::with_capacity(self.fds.len());
        for (fd, target) in self.fds.drain(..) {
            let high = rustix::io::fcntl_dupfd_cloexec(&fd, floor)?;
            moved.push((high, target));
        }
        let go = match self.go.take() {
            Some(fd) => Some(rustix::io::fcntl_dupfd_cloexec(&fd, floor)?),
            None => None,
        };
        let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let err_w = rustix::io::fcntl_dupfd_cloexec(&err_w, floor)?;
        let me = getpid();

        // SAFETY: see the module docs: the child branch only calls `child_after_fork`, `report`
        // and `process::exit`, which make raw syscalls on memory prepared above.
        match unsafe { process::clone3_fork(self.clone_flags) }? {
            Forked::Child => {
                let fail = child_after_fork(&mut self, me, &moved, go.as_ref(), &err_w);
                report(&err_w, fail.0, &fail.1);
                process::exit(127)
            }
            Forked::Parent { pid, pidfd } => {
                drop(err_w);
                drop(moved);
                drop(go);
                Ok(Started { pid, pidfd, err_r })
            }
        }
    }
}

/// Runs in the new process: returns only on failure.
fn child_after_fork(
    cmd: &mut Command,
    spawner: rustix::process::Pid,
    fds: &[(OwnedFd, RawFd)],
    go: Option<&OwnedFd>,
    _err_w: &OwnedFd,
) -> (Stage, io::Error) {
    for fd in &cmd.close_fds {
        // SAFETY: we are the new process: the spawner's `OwnedFd` values are never used or
        // dropped here before the exec or exit.
        unsafe { fd::close_raw(*fd) };
    }
    if cmd.pdeathsig {
        if let Err(e) = set_parent_process_death_signal(Some(Signal::KILL)) {
            return (Stage::Setup, e.into());
        }
        // Close the race with a spawner that died before the line above: in a new pid
        // namespace the parent is invisible (ppid 0) and the go pipe catches it instead.
        let ppid = getppid();
        if ppid.is_some() && ppid != Some(spawner) {
            process::exit(1);
        }
    }
    if let Some(go) = go {
        let mut b = [0u8; 1];
        match fd::read_raw(go.as_fd(), &mut b) {
            Ok(1) => {}
            _ => process::exit(1),
        }
    }
    if !cmd.unshare.is_empty()
        && let Err(e) = process::unshare(cmd.unshare)
    {
        return (Stage::Unshare, e);
    }
    if let Some(name) = &cmd.persistent_tap {
        let _ = crate::net::make_persistent_tap(name);
    }
    if cmd.setsid
        && let Err(e) = process::setsid()
    {
        return (Stage::Setup, e);
    }
    for (fd, target) in fds {
        // SAFETY: as above, no owner of `target` runs again in this process; `fd` itself sits
        // above every target (see HIGH_FD), so it is not overwritten before its own turn.
        if let Err(e) = unsafe { fd::dup_to(fd.as_raw_fd(), *target) } {
            return (Stage::Setup, e);
        }
    }
    for fd in &cmd.keep_fds {
        // SAFETY: with old == new nothing is closed, only FD_CLOEXEC cleared.
        if let Err(e) = unsafe { fd::dup_to(*fd, *fd) } {
            return (Stage::Setup, e);
        }
    }
    if let Some(i) = cmd.listen_pid_index {
        let mut buf = [0u8; 32];
        let n = format_listen_pid(&mut buf, getpid().as_raw_nonzero().get() as u32);
        cmd.envp.patch(i, &buf[..n]);
    }
    if let Err(e) = restore_nofile_limit() {
        return (Stage::Setup, e);
    }
    if let Err(e) = signal::default_action(g::SIGPIPE) {
        return (Stage::Setup, e);
    }
    if let Err(e) = signal::unblock_all_signals() {
        return (Stage::Setup, e);
    }
    (
        Stage::Exec,
        process::execve(&cmd.path, &cmd.argv, &cmd.envp),
    )
}

/// Writes `LISTEN_PID=<pid>` into `buf` without allocating; returns its length.
fn format_listen_pid(buf: &mut [u8; 32], pid: u32) -> usize {
    const PREFIX: &[u8] = b"LISTEN_PID=";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = pid;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[PREFIX.len() + i] = digits[n - 1 - i];
    }
    PREFIX.len() + n
}

fn report(err_w: &OwnedFd, stage: Stage, error: &io::Error) {
    let code = error.raw_os_error().unwrap_or(0) as u32;
    let mut msg = [0u8; 5];
    msg[0] = stage as u8;
    msg[1..].copy_from_slice(&code.to_le_bytes());
    let _ = fd::write_raw(err_w.as_fd(), &msg);
}

/// A process that has been forked and is on its way to exec.
pub struct Started {
    /// Its pid in the spawner's pid namespace.
    pub pid: i32,
    /// A pidfd for it.
    pub pidfd: OwnedFd,
    err_r: OwnedFd,
}

impl Started {
    /// Blocks until the process has exec'd (`Ok`) or failed before or at exec.
    pub fn wait_exec(&mut self) -> Result<(), SpawnError> {
        let mut msg = [0u8; 5];
        let mut got = 0;
        while got < msg.len() {
            match fd::read_raw(self.err_r.as_fd(), &mut msg[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(error) => {
                    return Err(SpawnError {
                        stage: Stage::Setup,
                        error,
                    });
                }
            }
        }
        if got == 0 {
            return Ok(());
        }
        let stage = match msg[0] {
            0 => Stage::Go,
            1 => Stage::Unshare,
            2 => Stage::Setup,
            _ => Stage::Exec,
        };
        let code = u32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
        Err(SpawnError {
            stage,
            error: io::Error::from_raw_os_error(code as i32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_pid_is_formatted_without_padding() {
        for (pid, want) in [(1u32, "LISTEN_PID=1"), (4194304, "LISTEN_PID=4194304")] {
            let mut buf = [0u8; 32];
            let n = format_listen_pid(&mut buf, pid);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), want);
        }
    }
}
