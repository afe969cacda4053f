//! Descriptors by number: placing one at a fixed number, raw reads and writes after a fork,
//! closing, and adopting one inherited across exec.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use linux_raw_sys::general as g;

use crate::raw::{check, syscall6};

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

/// Raw `close`, for use after [`clone3_fork`] on descriptors the process does not own as
/// `OwnedFd` values (their owner's destructor never runs there).
pub fn close_raw(fd: RawFd) {
    // SAFETY: integers only; closing a descriptor number that no live OwnedFd of this process
    // will use again.
    unsafe {
        syscall6(g::__NR_close, [fd as usize, 0, 0, 0, 0, 0]);
    }
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
