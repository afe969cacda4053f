//! Socket and interface calls rustix 1.1 lacks: `SO_BINDTODEVICE`, `SO_PEEK_OFF`, `SIOCOUTQ`,
//! `SIOCGIFHWADDR`, `TUNSETIFF`/`TUNSETOFFLOAD` and integer socket options (`IP_TRANSPARENT`,
//! `SO_MARK`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use linux_raw_sys::general as g;

use crate::raw::{check, syscall6};

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
    tun_set_iff(fd, name, linux_raw_sys::if_tun::IFF_VNET_HDR)?;
    let offloads = linux_raw_sys::if_tun::TUN_F_CSUM | linux_raw_sys::if_tun::TUN_F_TSO4;
    tun_ioctl_value(fd, linux_raw_sys::ioctl::TUNSETOFFLOAD, offloads as usize)
}

/// `ioctl(fd, request, value)` for the tun requests that take their argument by value
/// (`TUNSETOFFLOAD`, `TUNSETPERSIST`).
fn tun_ioctl_value(fd: &OwnedFd, request: u32, value: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    debug_assert!(matches!(
        request,
        linux_raw_sys::ioctl::TUNSETOFFLOAD | linux_raw_sys::ioctl::TUNSETPERSIST
    ));
    // SAFETY: both requests take an unsigned long by value and touch no memory of ours.
    check(unsafe {
        syscall6(
            g::__NR_ioctl,
            [fd.as_raw_fd() as usize, request as usize, value, 0, 0, 0],
        )
    })
    .map(drop)
}

/// `ioctl(fd, TUNSETPERSIST, on)` on a descriptor attached to a tap: a persistent device outlives
/// its last descriptor and goes with its network namespace. Closing the last descriptor of a
/// plain tap unregisters the device, which waits for an RCU grace period (about 15 ms here)
/// inside `close()` or the exit of whoever held it; a persistent one is let go in 0.1 ms and
/// torn down later by the kernel's namespace cleanup, asynchronously.
///
/// # Errors
/// The kernel's errno.
pub fn tun_set_persist(fd: &OwnedFd, on: bool) -> io::Result<()> {
    tun_ioctl_value(fd, linux_raw_sys::ioctl::TUNSETPERSIST, usize::from(on))
}

/// Makes the tap `name` in the calling thread's network namespace as a persistent device
/// ([`tun_set_persist`]) and lets go of it, for a program that attaches to it by name later
/// (slirp4netns's `TUNSETIFF` of an existing tap attaches to it): its exit then does not wait
/// for the device's teardown. Allocates nothing, so it may run between `clone` and `execve`.
///
/// # Errors
/// The kernel's errno for the open or either ioctl.
pub fn make_persistent_tap(name: &str) -> io::Result<()> {
    let fd = rustix::fs::open(
        "/dev/net/tun",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    tun_set_iff(&fd, name, 0)?;
    tun_set_persist(&fd, true)
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
