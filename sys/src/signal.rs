//! Signals: masks, signalfd, sending any signal number, and the forwarding policy every binary
//! that supervises another process follows (the parent, the child, `rootlesskit-unshare --exec`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use linux_raw_sys::general as g;

use crate::raw::{check, syscall6};

/// A set of signals as the kernel's 64-bit mask (bit `n-1` is signal `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigSet(pub u64);

impl SigSet {
    /// Every signal that can be blocked and that no libc reserves for itself:
    /// 1..=64 minus SIGKILL, SIGSTOP and 32, 33, 34 (glibc's and musl's internal RT signals).
    pub const fn forwardable() -> SigSet {
        let mut m = u64::MAX;
        m &= !(1 << (g::SIGKILL - 1));
        m &= !(1 << (g::SIGSTOP - 1));
        m &= !(1 << 31) & !(1 << 32) & !(1 << 33);
        SigSet(m)
    }

    /// Whether `sig` is in the set.
    pub const fn contains(self, sig: u32) -> bool {
        sig >= 1 && sig <= 64 && self.0 & (1 << (sig - 1)) != 0
    }
}

/// `rt_sigprocmask(SIG_BLOCK, set)`—adds `set` to the calling thread's blocked signals.
///
/// # References
/// - [`rt_sigprocmask(2)`](https://man7.org/linux/man-pages/man2/sigprocmask.2.html)
pub fn block_signals(set: SigSet) -> io::Result<()> {
    sigprocmask(g::SIG_BLOCK, set)
}

/// `rt_sigprocmask(SIG_SETMASK, empty)`—unblocks every signal. Async-signal-safe, so it may run
/// between fork and exec.
pub fn unblock_all_signals() -> io::Result<()> {
    sigprocmask(g::SIG_SETMASK, SigSet(0))
}

/// `rt_sigaction(sig, SIG_DFL)`—restores the default action of `sig`. Rust's runtime ignores
/// SIGPIPE in every program; a process we start must not inherit that. Async-signal-safe.
pub fn default_action(sig: u32) -> io::Result<()> {
    // An all-zero `struct sigaction` is SIG_DFL with no flags and an empty mask on every
    // architecture; 32 bytes cover the largest layout the kernel reads.
    let act = [0u64; 4];
    // SAFETY: the kernel reads `act` (ours, 32 bytes) and writes nothing (oldact is NULL).
    check(unsafe {
        syscall6(
            g::__NR_rt_sigaction,
            [sig as usize, act.as_ptr() as usize, 0, 8, 0, 0],
        )
    })
    .map(drop)
}

/// `rt_sigprocmask(SIG_UNBLOCK, set)`.
pub fn unblock_signals(set: SigSet) -> io::Result<()> {
    sigprocmask(g::SIG_UNBLOCK, set)
}

fn sigprocmask(how: u32, set: SigSet) -> io::Result<()> {
    let mask = set.0;
    // SAFETY: `mask` lives on our stack for the call; the kernel reads 8 bytes from it and
    // writes nothing (oldset is NULL).
    let r = unsafe {
        syscall6(
            g::__NR_rt_sigprocmask,
            [how as usize, &mask as *const u64 as usize, 0, 8, 0, 0],
        )
    };
    check(r).map(drop)
}

/// `signalfd4(-1, set, SFD_CLOEXEC)`—a descriptor that reads the pending signals of `set`,
/// which must already be blocked.
///
/// # References
/// - [`signalfd(2)`](https://man7.org/linux/man-pages/man2/signalfd.2.html)
pub fn signalfd(set: SigSet) -> io::Result<OwnedFd> {
    let mask = set.0;
    // SAFETY: the kernel reads 8 bytes of `mask`; on success it returns a new descriptor that
    // nothing else owns, so wrapping it in an OwnedFd is sound.
    unsafe {
        let r = syscall6(
            g::__NR_signalfd4,
            [
                usize::MAX, // -1: a new descriptor
                &mask as *const u64 as usize,
                8,
                g::O_CLOEXEC as usize,
                0,
                0,
            ],
        );
        check(r).map(|fd| OwnedFd::from_raw_fd(fd as RawFd))
    }
}

/// `signalfd4(fd, set, 0)`—changes which pending signals `fd` (made by [`signalfd`]) reports.
/// Signals left out stay pending, blocked, until a later mask includes them again.
pub fn set_signalfd_mask(fd: &OwnedFd, set: SigSet) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mask = set.0;
    // SAFETY: the kernel reads 8 bytes of `mask` and changes the mask of a signalfd we own;
    // with an existing descriptor it returns that descriptor, which stays ours.
    check(unsafe {
        syscall6(
            g::__NR_signalfd4,
            [
                fd.as_raw_fd() as usize,
                &mask as *const u64 as usize,
                8,
                0,
                0,
                0,
            ],
        )
    })
    .map(drop)
}

/// One record read from a signalfd (`struct signalfd_siginfo`, 128 bytes).
#[derive(Debug, Clone, Copy)]
pub struct SignalInfo {
    /// The signal number.
    pub signo: u32,
    /// The pid of the sender, when a process sent it.
    pub pid: u32,
}

/// Reads one pending signal from a signalfd made by [`signalfd`]. Blocks unless the descriptor
/// is readable.
pub fn read_signal(fd: &OwnedFd) -> io::Result<SignalInfo> {
    let mut buf = [0u8; 128];
    let n = rustix::io::read(fd, &mut buf)?;
    if n != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short signalfd read",
        ));
    }
    Ok(SignalInfo {
        signo: u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
        pid: u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]),
    })
}

/// Sends any signal number, including real-time ones that `rustix::process::Signal` cannot name.
pub fn kill(pid: i32, sig: u32) -> io::Result<()> {
    // SAFETY: kill takes two integers and touches no memory of ours.
    check(unsafe { syscall6(g::__NR_kill, [pid as usize, sig as usize, 0, 0, 0, 0]) }).map(drop)
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)` for any signal number.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integers only; a NULL siginfo asks the kernel to fill it in.
    check(unsafe {
        syscall6(
            g::__NR_pidfd_send_signal,
            [pidfd.as_raw_fd() as usize, sig as usize, 0, 0, 0, 0],
        )
    })
    .map(drop)
}

/// Signals that are never forwarded to the next process down: SIGCHLD is ours to reap with,
/// SIGPIPE and SIGURG are side effects of our own I/O (as upstream's sigproxy decides).
pub const fn is_forwarded(sig: u32) -> bool {
    !matches!(sig, 13 | 17 | 23)
}

/// The mask both binaries block at startup and read through a signalfd.
pub const fn handled() -> SigSet {
    SigSet::forwardable()
}

/// Go's lowercase name of a signal, as in `signal: user defined signal 1`.
pub fn go_name(sig: u32) -> std::borrow::Cow<'static, str> {
    let name = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        n => return format!("signal {n}").into(),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwardable_set_excludes_the_unblockable_and_libc_signals() {
        let s = SigSet::forwardable();
        for sig in [9, 19, 32, 33, 34] {
            assert!(!s.contains(sig), "{sig}");
        }
        for sig in [1, 2, 10, 15, 17, 35, 64] {
            assert!(s.contains(sig), "{sig}");
        }
        assert!(!s.contains(0) && !s.contains(65));
    }

    #[test]
    fn forwarding_policy() {
        assert!(!is_forwarded(17) && !is_forwarded(13) && !is_forwarded(23));
        assert!(is_forwarded(1) && is_forwarded(15) && is_forwarded(10) && is_forwarded(28));
    }
}
