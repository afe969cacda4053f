//! Descriptors by number: placing one at a fixed number and closing one after a fork, raw reads
//! and writes there, and adopting one inherited across exec. Whatever can close or overwrite a
//! descriptor that an `OwnedFd` owns is an `unsafe fn`; the rest takes borrowed descriptors.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::{DupFlags, Errno, FdFlags};

/// `dup3(old, new, 0)`, which leaves `new` without `FD_CLOEXEC`; when `old == new`, just clears
/// `FD_CLOEXEC`. Async-signal-safe.
///
/// # Safety
/// `new` is closed and replaced: no `OwnedFd` of this process that will still be used may own
/// it. In practice, call it only in a new process after [`crate::process::clone3_fork`], whose
/// `OwnedFd` values are never used or dropped again before `execve`.
pub unsafe fn dup_to(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: `old` is only borrowed for the call; the caller vouches that it is open.
    let old_fd = unsafe { BorrowedFd::borrow_raw(old) };
    if old == new {
        return clear_cloexec(old_fd);
    }
    // SAFETY: the caller gives up whatever `new` was; the value is never dropped (ManuallyDrop),
    // so the descriptor placed there is left open for the exec.
    let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(new) });
    rustix::io::dup3(old_fd, &mut target, DupFlags::empty()).map_err(Into::into)
}

/// Clears `FD_CLOEXEC` on `fd`, so that it stays open across our next `execve`.
pub fn clear_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::fcntl_setfd(fd, FdFlags::empty()).map_err(Into::into)
}

/// `read` that retries on `EINTR`; async-signal-safe, for use after a fork.
pub fn read_raw(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(Errno::INTR) => continue,
            other => return other.map_err(Into::into),
        }
    }
}

/// `write`, once; async-signal-safe, for use after a fork.
pub fn write_raw(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    rustix::io::write(fd, buf).map_err(Into::into)
}

/// `close` of a bare descriptor number.
///
/// # Safety
/// No `OwnedFd` of this process that will still be used or dropped may own `fd`: in practice,
/// only in a new process after [`crate::process::clone3_fork`] (the owner's destructor never
/// runs there).
pub unsafe fn close_raw(fd: RawFd) {
    // SAFETY: the caller vouches that nothing owns `fd` any more.
    unsafe { rustix::io::close(fd) }
}

/// Takes ownership of descriptor `fd`, inherited from the process that exec'd us and named on
/// our command line, and marks it close-on-exec so it goes no further. Fails for 0 to 2 and
/// for a number that is not open.
///
/// # Safety
/// Nothing else in this process may own `fd`: call it at most once per number, at the start of
/// `main`, before anything could have been opened at that number.
pub unsafe fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: only borrowed for the two fcntl calls; F_GETFD fails with EBADF when it is not
    // open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed)?;
    rustix::io::fcntl_setfd(borrowed, FdFlags::CLOEXEC)?;
    // SAFETY: the descriptor is open (checked above) and, per this function's contract, no
    // other value in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
