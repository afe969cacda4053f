//! Raw syscalls that rustix does not expose: signal masks, signalfd, fork-like clone3 and execve,
//! and the two socket calls of the DHCP client (`SO_BINDTODEVICE`, `SIOCGIFHWADDR`).
//!
//! # Safety
//!
//! This is the only module of the `child` crate allowed to contain `unsafe`.
//! Each wrapper is safe to call on its own: it passes pointers the kernel only reads
//! or writes within the bounds of values we own for the duration of the call.
//! The exception is [`clone3_fork`], which is `unsafe` because the new process shares the
//! parent's address-space *copy*, with other threads' locks frozen in whatever state they had:
//! its caller must only make raw syscalls until `execve` or `exit_group`.
#![allow(unsafe_code)]

pub mod spawn;

use std::ffi::{CStr, CString, OsStr, c_char};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use linux_raw_sys::general as g;

#[cfg(target_arch = "x86_64")]
unsafe fn syscall6(n: u32, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9;
    // the kernel clobbers rcx and r11 and touches no stack. The caller vouches for the arguments.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall6(n: u32, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 syscall ABI: number in x8, arguments in x0..x5, result in x0.
    // The caller vouches for the arguments.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") n as usize,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack)
        );
    }
    ret
}

fn check(ret: isize) -> io::Result<usize> {
    if (-4095..0).contains(&ret) {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

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

/// The result of [`clone3_fork`] in each process.
pub enum Forked {
    /// We are the new process.
    Child,
    /// We are the caller; the new process has this pid and pidfd.
    Parent {
        /// Pid of the new process in our pid namespace.
        pid: i32,
        /// A pidfd referring to it.
        pidfd: OwnedFd,
    },
}

/// `clone3` without `CLONE_VM`: a `fork` that can also create namespaces (`flags` holds
/// `CLONE_NEW*` bits) and always returns a pidfd. The child gets `SIGCHLD` as exit signal.
///
/// # Safety
/// In [`Forked::Child`] the process is a copy of a possibly multi-threaded one: it must not
/// allocate, lock, or print; only raw syscalls (rustix calls without paths are fine, and so are
/// the functions of this module) until it calls [`execve`] or [`exit`].
///
/// # References
/// - [`clone3(2)`](https://man7.org/linux/man-pages/man2/clone.2.html)
pub unsafe fn clone3_fork(flags: u64) -> io::Result<Forked> {
    let mut pidfd: i32 = -1;
    let mut args = g::clone_args {
        flags: flags | g::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut i32 as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: g::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    // SAFETY: `args` and `pidfd` outlive the call; without CLONE_VM and with a zero stack the
    // kernel duplicates the address space like fork, so both processes return here on their
    // own stack copy.
    let r = unsafe {
        syscall6(
            g::__NR_clone3,
            [
                &mut args as *mut g::clone_args as usize,
                core::mem::size_of::<g::clone_args>(),
                0,
                0,
                0,
                0,
            ],
        )
    };
    // clone3 is refused with ENOSYS by some seccomp profiles (older Docker defaults) and by
    // valgrind: fall back to clone, which takes the same flags but no cgroup or set_tid.
    // parent_tid is the third argument on x86_64 and aarch64 alike; CLONE_PIDFD stores there.
    let r = if r == -(linux_raw_sys::errno::ENOSYS as isize) {
        // SAFETY: as above; with a zero stack, clone duplicates the address space like fork.
        unsafe {
            syscall6(
                g::__NR_clone,
                [
                    (flags | g::CLONE_PIDFD as u64 | g::SIGCHLD as u64) as usize,
                    0,
                    &mut pidfd as *mut i32 as usize,
                    0,
                    0,
                    0,
                ],
            )
        }
    } else {
        r
    };
    match check(r)? {
        0 => Ok(Forked::Child),
        // SAFETY: on success the kernel stored a fresh descriptor in `pidfd` that only we own.
        pid => Ok(Forked::Parent {
            pid: pid as i32,
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// `exit_group(code)`—ends the process at once, without running destructors or flushing.
pub fn exit(code: i32) -> ! {
    // SAFETY: exit_group never returns.
    unsafe {
        syscall6(g::__NR_exit_group, [code as usize, 0, 0, 0, 0, 0]);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// `dup3(old, new, 0)`, then leaves `new` without `FD_CLOEXEC`. When `old == new`, just clears
/// `FD_CLOEXEC`. Async-signal-safe.
pub fn dup_to(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: integers only.
    unsafe {
        if old == new {
            check(syscall6(
                g::__NR_fcntl,
                [old as usize, g::F_SETFD as usize, 0, 0, 0, 0],
            ))?;
        } else {
            check(syscall6(
                g::__NR_dup3,
                [old as usize, new as usize, 0, 0, 0, 0],
            ))?;
        }
    }
    Ok(())
}

/// Raw `read` on a descriptor number, for use after [`clone3_fork`].
pub fn read_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let r = unsafe {
            syscall6(
                g::__NR_read,
                [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
            )
        };
        match check(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Raw `write` on a descriptor number, for use after [`clone3_fork`].
pub fn write_raw(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`.
    check(unsafe {
        syscall6(
            g::__NR_write,
            [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

/// `unshare(flags)` for namespace flags only.
///
/// `UnshareFlags::FILES` is refused: it is what makes rustix's `unshare_unsafe` unsafe (other
/// threads could see descriptors from a table they no longer share), and we never need it.
pub fn unshare(flags: rustix::thread::UnshareFlags) -> io::Result<()> {
    if flags.contains(rustix::thread::UnshareFlags::FILES) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: without CLONE_FILES no descriptor table is split, which is the only hazard
    // `unshare_unsafe` documents.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(Into::into)
}

/// Raw `close`, for use after [`clone3_fork`] on descriptors the process does not own as
/// `OwnedFd` values (their owner's destructor never runs there).
pub fn close_raw(fd: RawFd) {
    // SAFETY: integers only; closing a descriptor number that no live OwnedFd of this process
    // will use again.
    unsafe {
        syscall6(g::__NR_close, [fd as usize, 0, 0, 0, 0, 0]);
    }
}

/// `setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name)`—sends and receives on `fd` only through
/// interface `name` (rustix 1.1 has no wrapper). The DHCP client needs it: before it has an
/// address, only the device pins its broadcasts to the right link.
///
/// # Errors
/// `EINVAL` for a name of 16 bytes or more, else the kernel's errno (`ENODEV`).
///
/// # References
/// - [`socket(7)`](https://man7.org/linux/man-pages/man7/socket.7.html)
pub fn bind_to_device(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut buf = [0u8; 16];
    if name.len() >= buf.len() || name.bytes().any(|b| b == 0) {
        return Err(io::Error::from_raw_os_error(
            linux_raw_sys::errno::EINVAL as i32,
        ));
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: the kernel reads at most `name.len() + 1` bytes (our length argument) from `buf`,
    // which lives on our stack for the whole call and is NUL-terminated there.
    check(unsafe {
        syscall6(
            g::__NR_setsockopt,
            [
                fd.as_raw_fd() as usize,
                linux_raw_sys::net::SOL_SOCKET as usize,
                linux_raw_sys::net::SO_BINDTODEVICE as usize,
                buf.as_ptr() as usize,
                name.len() + 1,
                0,
            ],
        )
    })
    .map(drop)
}

/// `setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, offset)`—where the next `MSG_PEEK` read starts
/// (rustix 1.1 has no wrapper). The user-mode network peeks a host TCP socket's data at the
/// offset of the first byte the namespace has not been sent yet, so that the socket's own
/// receive queue holds what may still have to be sent again (TCP supports it since Linux 6.10).
///
/// # Errors
/// The kernel's errno (`EOPNOTSUPP` before 6.10 for TCP).
///
/// # References
/// - [`socket(7)`](https://man7.org/linux/man-pages/man7/socket.7.html)
pub fn set_peek_offset(fd: BorrowedFd<'_>, offset: i32) -> io::Result<()> {
    let value = offset.to_ne_bytes();
    // SAFETY: the kernel reads exactly `value.len()` (4) bytes, an int, from `value`, which lives
    // on our stack for the whole call.
    check(unsafe {
        syscall6(
            g::__NR_setsockopt,
            [
                fd.as_raw_fd() as usize,
                linux_raw_sys::net::SOL_SOCKET as usize,
                linux_raw_sys::net::SO_PEEK_OFF as usize,
                value.as_ptr() as usize,
                value.len(),
                0,
            ],
        )
    })
    .map(drop)
}

/// `ioctl(fd, SIOCOUTQ)`—how many bytes a TCP socket holds that its peer has not acknowledged
/// yet (or not been sent), which tells the user-mode network how much of the send buffer is free.
///
/// # Errors
/// The kernel's errno.
///
/// # References
/// - [`tcp(7)`](https://man7.org/linux/man-pages/man7/tcp.7.html)
pub fn outq(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut value = 0i32;
    // SAFETY: SIOCOUTQ writes one int at the pointer, which is our local `value`, alive and
    // exclusively ours through the call.
    check(unsafe {
        syscall6(
            g::__NR_ioctl,
            [
                fd.as_raw_fd() as usize,
                linux_raw_sys::ioctl::TIOCOUTQ as usize,
                (&raw mut value) as usize,
                0,
                0,
                0,
            ],
        )
    })?;
    Ok(value.max(0) as u32)
}

/// `ioctl(fd, SIOCGIFHWADDR)`—the hardware (MAC) address of Ethernet interface `name`, asked
/// through any socket `fd` of the interface's network namespace.
///
/// # Errors
/// `EINVAL` for a bad name, else the kernel's errno (`ENODEV`).
///
/// # References
/// - [`netdevice(7)`](https://man7.org/linux/man-pages/man7/netdevice.7.html)
pub fn hardware_address(fd: BorrowedFd<'_>, name: &str) -> io::Result<[u8; 6]> {
    // struct ifreq: ifr_name[16], then a union whose `struct sockaddr ifr_hwaddr` holds the
    // family (2 bytes) and the address in `sa_data`; 40 bytes in all on 64-bit targets.
    let mut ifreq = [0u8; 40];
    if name.len() >= 16 || name.bytes().any(|b| b == 0) {
        return Err(io::Error::from_raw_os_error(
            linux_raw_sys::errno::EINVAL as i32,
        ));
    }
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFHWADDR reads the NUL-terminated name from, and writes one `struct ifreq`
    // (at most 40 bytes) into, `ifreq`, which we own for the whole call.
    check(unsafe {
        syscall6(
            g::__NR_ioctl,
            [
                fd.as_raw_fd() as usize,
                linux_raw_sys::ioctl::SIOCGIFHWADDR as usize,
                ifreq.as_mut_ptr() as usize,
                0,
                0,
                0,
            ],
        )
    })?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&ifreq[18..24]);
    Ok(mac)
}

/// Takes ownership of descriptor `fd`, inherited from the process that exec'd us and named on
/// our command line, and marks it close-on-exec so it goes no further.
///
/// Call it at most once per number, before anything else could own that number: it checks
/// that the descriptor is open (`F_GETFD`) but cannot know about another owner.
pub fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: integers only.
    unsafe {
        check(syscall6(
            g::__NR_fcntl,
            [fd as usize, g::F_GETFD as usize, 0, 0, 0, 0],
        ))?;
        check(syscall6(
            g::__NR_fcntl,
            [
                fd as usize,
                g::F_SETFD as usize,
                g::FD_CLOEXEC as usize,
                0,
                0,
                0,
            ],
        ))?;
    }
    // SAFETY: the descriptor is open (checked above) and, per this function's contract, no
    // other value in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `madvise(MADV_DONTNEED)` over the mappings of our own file that hold no private copy of
/// any page: once a process only supervises, the code and constants that parsed flags and set
/// up namespaces need not stay resident. (`MADV_PAGEOUT` would be gentler but the kernel
/// ignores it for files the caller cannot write, such as a root-owned /usr/bin/rootlesskit.)
/// The pages stay in the page cache and fault back in when used. Best effort.
///
/// # References
/// - [`madvise(2)`](https://man7.org/linux/man-pages/man2/madvise.2.html)
pub fn page_out_own_image() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in droppable_mappings(&smaps, &exe.to_string_lossy()) {
        // SAFETY: the range is a private, non-writable mapping of our own file in which no
        // page has a private (anonymous) copy, as smaps reported just now: every page equals
        // the file's bytes, so dropping them loses nothing and the next access reads the same
        // bytes back. Nothing can write it in between: it is not writable and we are the only
        // thread.
        unsafe {
            syscall6(
                g::__NR_madvise,
                [start, end - start, g::MADV_DONTNEED as usize, 0, 0, 0],
            );
        }
    }
}

/// The `start-end` ranges of /proc/self/smaps entries that map `path` privately and without
/// write access and have `Anonymous: 0 kB`. That excludes the part of a static-pie image that
/// was relocated at startup and then made read-only (its pages are private copies).
fn droppable_mappings(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            // A mapping header: "start-end perms offset dev inode path".
            let perms = f.next().unwrap_or("");
            let name = f.nth(3).unwrap_or("");
            let private_ro = perms.len() == 4 && !perms.contains('w') && perms.ends_with('p');
            current = (name == path && private_ro).then_some((a, b));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && f.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

/// `ioctl(fd, TUNSETIFF, {name, IFF_TAP | IFF_NO_PI})` on an open `/dev/net/tun`: creates the tap
/// device `name` in the network namespace the descriptor was opened in and attaches it to `fd`
/// (frames without the packet-information header). The device lives as long as the descriptor.
///
/// # References
/// - [Universal TUN/TAP device driver](https://docs.kernel.org/networking/tuntap.html)
pub fn tun_set_iff_tap(fd: &OwnedFd, name: &str) -> io::Result<()> {
    tun_set_iff(fd, name, 0)
}

/// [`tun_set_iff_tap`] with `IFF_VNET_HDR` (each frame read or written carries a 10-byte
/// `virtio_net_hdr` first), then `ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)`: we
/// take frames whose transport checksum is left to us and TCP segments of up to 64 KiB, so
/// the namespace sends large segments whatever its MTU.
///
/// # Errors
/// As [`tun_set_iff_tap`], or the kernel's errno for the offloads.
pub fn tun_set_iff_tap_vnet(fd: &OwnedFd, name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    tun_set_iff(fd, name, linux_raw_sys::if_tun::IFF_VNET_HDR)?;
    let offloads = linux_raw_sys::if_tun::TUN_F_CSUM | linux_raw_sys::if_tun::TUN_F_TSO4;
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of flags) and
    // touches no memory of ours.
    check(unsafe {
        syscall6(
            g::__NR_ioctl,
            [
                fd.as_raw_fd() as usize,
                linux_raw_sys::ioctl::TUNSETOFFLOAD as usize,
                offloads as usize,
                0,
                0,
                0,
            ],
        )
    })
    .map(drop)
}

fn tun_set_iff(fd: &OwnedFd, name: &str, extra: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // `struct ifreq`: 16 bytes of name, then the union of which `ifr_flags` (a short) comes
    // first; 40 bytes in all on 64-bit targets.
    let mut ifr = [0u8; 40];
    if name.is_empty() || name.len() >= 16 || name.contains('\0') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (linux_raw_sys::if_tun::IFF_TAP | linux_raw_sys::if_tun::IFF_NO_PI | extra) as u16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` at the pointer; `ifr` is ours, 40
    // bytes (the size of `struct ifreq` on 64-bit Linux), and lives through the call.
    check(unsafe {
        syscall6(
            g::__NR_ioctl,
            [
                fd.as_raw_fd() as usize,
                linux_raw_sys::ioctl::TUNSETIFF as usize,
                ifr.as_mut_ptr() as usize,
                0,
                0,
                0,
            ],
        )
    })
    .map(drop)
}

/// `setsid()`.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check(unsafe { syscall6(g::__NR_setsid, [0; 6]) }).map(drop)
}

/// An argv or envp array built before forking: owned C strings plus the NULL-terminated
/// pointer array `execve` wants, so nothing needs allocating after the fork.
pub struct CStrVec {
    strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStrVec {
    /// Builds the array. Fails on an embedded NUL byte.
    pub fn new<I, S>(items: I) -> io::Result<CStrVec>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let strings = items
            .into_iter()
            .map(|s| CString::new(s.as_ref().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte")
            })?;
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(CStrVec { strings, ptrs })
    }

    /// The strings, in order.
    pub fn strings(&self) -> &[CString] {
        &self.strings
    }

    /// Overwrites entry `index` in place with `bytes` followed by a NUL, for values only known
    /// after the fork (`LISTEN_PID=`): reserve the room with padding when building the array.
    /// `bytes` that do not fit are cut. Async-signal-safe: no allocation.
    pub fn patch(&mut self, index: usize, bytes: &[u8]) {
        let Some(s) = self.strings.get(index) else {
            return;
        };
        let room = s.as_bytes().len();
        let len = room.min(bytes.len());
        let p = self.ptrs[index] as *mut u8;
        // SAFETY: `p` points at the heap buffer of `strings[index]`, which we own and which
        // holds `room` bytes plus its NUL; we write at most `room + 1` bytes and nothing else
        // references the buffer now.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, len);
            *p.add(len) = 0;
        }
    }

    /// The entry `index` as the kernel will read it: up to its first NUL.
    pub fn get(&self, index: usize) -> Option<&CStr> {
        let p = *self.ptrs.get(index)?;
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null entries point into our CStrings, which are NUL-terminated.
        Some(unsafe { CStr::from_ptr(p) })
    }
}

/// `execve(path, argv, envp)`—returns only on failure.
pub fn execve(path: &CStr, argv: &CStrVec, envp: &CStrVec) -> io::Error {
    // SAFETY: all three pointers reference NUL-terminated data owned by the caller, and both
    // arrays end with a NULL pointer.
    let r = unsafe {
        syscall6(
            g::__NR_execve,
            [
                path.as_ptr() as usize,
                argv.ptrs.as_ptr() as usize,
                envp.ptrs.as_ptr() as usize,
                0,
                0,
                0,
            ],
        )
    };
    match check(r) {
        Err(e) => e,
        Ok(_) => io::Error::other("execve returned"),
    }
}

/// `setsockopt(fd, level, name, &value, 4)` for the integer options rustix does not cover
/// (`IP_TRANSPARENT`, `IPV6_TRANSPARENT`, `SO_MARK`).
pub fn setsockopt_int(fd: &OwnedFd, level: u32, name: u32, value: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the kernel reads exactly `size_of::<i32>()` bytes from a live local value.
    check(unsafe {
        syscall6(
            g::__NR_setsockopt,
            [
                fd.as_raw_fd() as usize,
                level as usize,
                name as usize,
                &value as *const i32 as usize,
                std::mem::size_of::<i32>(),
                0,
            ],
        )
    })
    .map(drop)
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
    fn droppable_mappings_hold_no_private_copies() {
        let smaps = "55d0-55e0 r--p 00000000 fd:01 12 /usr/bin/rootlesskit\n\
                     Rss: 8 kB\nAnonymous: 0 kB\n\
                     55e0-5600 r-xp 00010000 fd:01 12 /usr/bin/rootlesskit\n\
                     Anonymous: 0 kB\n\
                     5600-5610 r--p 00030000 fd:01 12 /usr/bin/rootlesskit\n\
                     Anonymous: 16 kB\n\
                     5610-5620 rw-p 00040000 fd:01 12 /usr/bin/rootlesskit\n\
                     Anonymous: 0 kB\n\
                     7f00-7f10 r-xp 00000000 fd:01 13 /usr/bin/other\n\
                     Anonymous: 0 kB\n\
                     7ff0-7ff8 rw-p 00000000 00:00 0 [stack]\n\
                     Anonymous: 8 kB\n";
        assert_eq!(
            droppable_mappings(smaps, "/usr/bin/rootlesskit"),
            [(0x55d0, 0x55e0), (0x55e0, 0x5600)]
        );
    }

    #[test]
    fn cstrvec_patch_keeps_length() {
        let mut v = CStrVec::new(["LISTEN_PID=          ", "A=b"]).unwrap();
        v.patch(0, b"LISTEN_PID=1234");
        assert_eq!(v.get(0).unwrap().to_bytes(), b"LISTEN_PID=1234");
        assert_eq!(v.get(1).unwrap().to_bytes(), b"A=b");
        assert!(v.get(2).is_none());
        assert!(CStrVec::new(["a\0b"]).is_err());
    }
}
