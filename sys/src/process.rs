//! Processes: fork-like `clone3`, `execve` with argument arrays built before the fork, `exit`,
//! `setsid`, `unshare`, and how a wait status reads (Go's `ExitError` text, our exit code).
//! Starting a program as a whole is [`crate::spawn`].

use std::ffi::{CStr, CString, OsStr, c_char};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use linux_raw_sys::general as g;

use crate::raw::{check, syscall6};
use crate::signal::go_name;

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
        pid => Ok(Forked::Parent {
            pid: pid as i32,
            // SAFETY: on success the kernel stored a fresh descriptor in `pidfd` that only we
            // own.
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

/// `setsid()`; async-signal-safe.
pub fn setsid() -> io::Result<()> {
    rustix::process::setsid().map(drop).map_err(Into::into)
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

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// The signal.
        sig: u32,
        /// Whether it dumped core.
        core: bool,
    },
}

impl Ended {
    /// From a rustix wait status; `None` for stop/continue reports.
    pub fn from_wait(st: rustix::process::WaitStatus) -> Option<Ended> {
        if let Some(code) = st.exit_status() {
            return Some(Ended::Exited(code));
        }
        st.terminating_signal().map(|sig| Ended::Signaled {
            sig: sig as u32,
            core: st.as_raw() & 0x80 != 0,
        })
    }

    /// The exit code rootlesskit passes on: the code itself, or 255 for a signal (upstream's
    /// Go quirk that `hack/integration-exit-code.sh` asserts).
    pub fn exit_code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled { .. } => 255,
        }
    }

    /// Go's `ExitError` text: `exit status N` or `signal: <name>[ (core dumped)]`.
    pub fn describe(self) -> String {
        match self {
            Ended::Exited(c) => format!("exit status {c}"),
            Ended::Signaled { sig, core } => format!(
                "signal: {}{}",
                go_name(sig),
                if core { " (core dumped)" } else { "" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cstrvec_patch_keeps_length() {
        let mut v = CStrVec::new(["LISTEN_PID=          ", "A=b"]).unwrap();
        v.patch(0, b"LISTEN_PID=1234");
        assert_eq!(v.get(0).unwrap().to_bytes(), b"LISTEN_PID=1234");
        assert_eq!(v.get(1).unwrap().to_bytes(), b"A=b");
        assert!(v.get(2).is_none());
        assert!(CStrVec::new(["a\0b"]).is_err());
    }

    #[test]
    fn exit_table() {
        for (ended, code, text) in [
            (Ended::Exited(0), 0, "exit status 0"),
            (Ended::Exited(42), 42, "exit status 42"),
            (
                Ended::Signaled {
                    sig: 10,
                    core: false,
                },
                255,
                "signal: user defined signal 1",
            ),
            (
                Ended::Signaled {
                    sig: 11,
                    core: true,
                },
                255,
                "signal: segmentation fault (core dumped)",
            ),
            (
                Ended::Signaled {
                    sig: 40,
                    core: false,
                },
                255,
                "signal: signal 40",
            ),
        ] {
            assert_eq!(ended.exit_code(), code);
            assert_eq!(ended.describe(), text);
        }
    }
}
