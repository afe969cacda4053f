//! `--net=vpnkit` inside the child: the tap device, our own vmnet session for the interface the
//! parent obtained from vpnkit, and the pump that carries Ethernet frames between the two.
//!
//! Upstream's child runs `ip tuntap add` and `ip link set <tap> address <mac>`, opens the tap,
//! reconnects to vpnkit with the same UUID and copies frames with two goroutines. We create the
//! tap with `TUNSETIFF` (it lives as long as our descriptor, that is as long as the child), set
//! the MAC over rtnetlink, and move frames from the child's one event loop: non-blocking
//! descriptors, two fixed buffers allocated once, nothing allocated per frame.
//!
//! The parent already learnt the address by DHCP, so our session skips that step and pumps from
//! the first frame on.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use proto::{NetConfig, vmnet};
use rustix::event::PollFlags;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

/// At most this many frames are moved per direction per wakeup, so that one busy direction
/// cannot starve signals or the other direction.
const BATCH: usize = 64;

/// Creates the tap `name` in the calling thread's network namespace with the MAC vpnkit
/// assigned, and returns its descriptor (non-blocking, close-on-exec).
///
/// # Errors
/// `creating tap <name>: <why>` or `failed to set address of <name>: <errno>`.
pub(crate) fn open_tap(name: &str, mac: [u8; 6]) -> Result<OwnedFd, String> {
    open_tap_with(name, mac, false)
}

/// [`open_tap`], with `vnet`: virtio-net headers and checksum and TSO offloads
/// ([`sys::net::tun_set_iff_tap_vnet`]).
fn open_tap_with(name: &str, mac: [u8; 6], vnet: bool) -> Result<OwnedFd, String> {
    let fail = |why: String| format!("creating tap {name}: {why}");
    let fd = rustix::fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("open /dev/net/tun: {}", sys::errno::text(e))))?;
    if vnet {
        sys::net::tun_set_iff_tap_vnet(&fd, name)
    } else {
        sys::net::tun_set_iff_tap(&fd, name)
    }
    .map_err(|e| fail(sys::errno::text(&e)))?;
    // Persistent, so that the exit of whoever holds the last descriptor (we for vpnkit, the
    // parent for its own network) does not wait for the device's teardown; it goes with the
    // namespace. Best effort.
    let _ = sys::net::tun_set_persist(&fd, true);
    let mut nl = sys::netlink::Netlink::open().map_err(|e| {
        format!(
            "failed to open a netlink socket for {name}: {}",
            sys::errno::text(e)
        )
    })?;
    nl.link_index(name)
        .and_then(|index| nl.set_mac(index, mac))
        .map_err(|e| format!("failed to set address of {name}: {}", sys::errno::text(e)))?;
    Ok(fd)
}

/// The tap of a [`proto::NetMode::Tap`] network, made and configured in the current network
/// namespace like any driver's device, with virtio-net headers and offloads; its descriptor
/// goes to the parent.
///
/// # Errors
/// The first step that failed, as one line.
pub fn tap_for_parent(net: &NetConfig) -> Result<OwnedFd, String> {
    let dev = net.ifname_str();
    let mtu = if net.mtu == 0 { 1500 } else { net.mtu };
    let tap = open_tap_with(dev, net.mac, true)?;
    sys::netlink::activate_dev(dev, mtu, net.addr, net.prefix, net.gateway)
        .map_err(|e| e.to_string())?;
    Ok(tap)
}

/// Everything the child does for [`proto::NetMode::Vpnkit`] but the `/etc` files: the tap with
/// vpnkit's MAC, configured like any driver's device (inside `detached` when given), and our
/// session on `<state_dir>/vpnkit-ethernet.sock` for the parent's interface.
///
/// # Errors
/// The first step that failed, as one line.
pub fn attach(
    net: &NetConfig,
    state_dir: &Path,
    detached: Option<&crate::detach::Netns>,
) -> Result<Pump, String> {
    let dev = net.ifname_str();
    let mtu = if net.mtu == 0 { 1500 } else { net.mtu };
    let setup = || {
        let tap = open_tap(dev, net.mac)?;
        sys::netlink::activate_dev(dev, mtu, net.addr, net.prefix, net.gateway)
            .map_err(|e| e.to_string())?;
        Ok(tap)
    };
    let tap = match detached {
        Some(ns) => ns.within(setup)?,
        None => setup()?,
    };
    let sock = connect(&state_dir.join(proto::VPNKIT_SOCKET_NAME), &net.uuid)?;
    Ok(Pump::new(tap, sock))
}

/// Opens our vmnet session on `socket` for the interface `uuid`: the init exchange and the
/// interface request, each bounded by a timeout.
///
/// # Errors
/// `connecting to <socket> with uuid <uuid>: <why>`.
pub(crate) fn connect(socket: &Path, uuid: &[u8; 16]) -> Result<OwnedFd, String> {
    let s = UnixStream::connect(socket)
        .map_err(sys::vmnet::io_error)
        .and_then(|s| sys::vmnet::session(s, uuid))
        .map_err(|e| with_uuid(socket, uuid, &e))?;
    Ok(OwnedFd::from(s.0))
}

/// `connecting to <socket> with uuid <uuid>: <why>`, upstream's words for a failed interface.
fn with_uuid(socket: &Path, uuid: &[u8; 16], why: &str) -> String {
    format!(
        "connecting to {} with uuid {}: {why}",
        socket.display(),
        std::str::from_utf8(&vmnet::uuid_text(uuid)).unwrap_or_default()
    )
}

/// What a pump step ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// vpnkit closed the session.
    Closed,
    /// Reading or writing the session failed.
    Failed(String),
}

/// Carries frames between the tap and the vmnet session.
pub struct Pump {
    tap: OwnedFd,
    sock: OwnedFd,
    /// Bytes received from vpnkit that do not form a whole frame yet, from the start.
    rx: Box<[u8]>,
    rx_len: usize,
    /// One length-prefixed frame read from the tap; `tx_at..tx_len` is still to be sent.
    tx: Box<[u8]>,
    tx_at: usize,
    tx_len: usize,
    stopped: bool,
}

impl Pump {
    /// A pump for a tap from [`open_tap`] and a session from [`connect`].
    pub(crate) fn new(tap: OwnedFd, sock: OwnedFd) -> Pump {
        Pump {
            tap,
            sock,
            rx: vec![0u8; 2 * (vmnet::FRAME_HEAD + vmnet::MAX_FRAME)].into_boxed_slice(),
            rx_len: 0,
            tx: vec![0u8; vmnet::FRAME_HEAD + vmnet::MAX_FRAME].into_boxed_slice(),
            tx_at: 0,
            tx_len: 0,
            stopped: false,
        }
    }

    /// Whether frames still move; after a [`Stop`] the tap stays, without a session.
    pub fn running(&self) -> bool {
        !self.stopped
    }

    /// The tap and the session with the events to wait for: the tap is read only while no
    /// frame is waiting for the session to drain.
    pub fn poll_fds(&self) -> [(BorrowedFd<'_>, PollFlags); 2] {
        let (tap, sock) = if self.tx_len > 0 {
            (PollFlags::empty(), PollFlags::IN | PollFlags::OUT)
        } else {
            (PollFlags::IN, PollFlags::IN)
        };
        [(self.tap.as_fd(), tap), (self.sock.as_fd(), sock)]
    }

    /// Moves what can be moved now, given the events poll reported for each descriptor.
    ///
    /// # Errors
    /// [`Stop`] when the session is over; the tap stays as it is.
    pub fn ready(&mut self, tap: PollFlags, sock: PollFlags) -> Result<(), Stop> {
        let moved = self.move_frames(tap, sock);
        self.stopped = moved.is_err();
        moved
    }

    fn move_frames(&mut self, tap: PollFlags, sock: PollFlags) -> Result<(), Stop> {
        if !sock.is_empty() {
            self.session_to_tap()?;
            self.flush()?;
        }
        if !tap.is_empty() {
            self.tap_to_session()?;
        }
        Ok(())
    }

    /// Reads what vpnkit sent and writes every whole frame to the tap. A frame the kernel
    /// refuses (too short, too long) is dropped, as a wire would.
    fn session_to_tap(&mut self) -> Result<(), Stop> {
        for _ in 0..BATCH {
            let n = match rustix::net::recv(
                &self.sock,
                &mut self.rx[self.rx_len..],
                RecvFlags::DONTWAIT,
            ) {
                Ok((0, _)) => return Err(Stop::Closed),
                Ok((n, _)) => n,
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(Stop::Failed(format!(
                        "vif2tap: read: {}",
                        sys::errno::text(e)
                    )));
                }
            };
            self.rx_len += n;
            let mut at = 0;
            while let Some(r) = vmnet::next_frame(&self.rx[at..self.rx_len]) {
                let _ = rustix::io::write(&self.tap, &self.rx[at + r.start..at + r.end]);
                at += r.end;
            }
            self.rx.copy_within(at..self.rx_len, 0);
            self.rx_len -= at;
        }
        Ok(())
    }

    /// Reads frames from the tap and sends each to vpnkit, stopping at a partial send.
    fn tap_to_session(&mut self) -> Result<(), Stop> {
        for _ in 0..BATCH {
            if self.tx_len > 0 {
                return Ok(());
            }
            let n = match rustix::io::read(&self.tap, &mut self.tx[vmnet::FRAME_HEAD..]) {
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(()),
                Err(e) => {
                    return Err(Stop::Failed(format!(
                        "tap2vif: read: {}",
                        sys::errno::text(e)
                    )));
                }
            };
            self.tx[..2].copy_from_slice(&(n as u16).to_le_bytes());
            self.tx_at = 0;
            self.tx_len = vmnet::FRAME_HEAD + n;
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the rest of the pending frame, as far as the socket takes it.
    fn flush(&mut self) -> Result<(), Stop> {
        while self.tx_at < self.tx_len {
            match rustix::net::send(
                &self.sock,
                &self.tx[self.tx_at..self.tx_len],
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => self.tx_at += n,
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => {}
                Err(Errno::PIPE) | Err(Errno::CONNRESET) => return Err(Stop::Closed),
                Err(e) => {
                    return Err(Stop::Failed(format!(
                        "tap2vif: write: {}",
                        sys::errno::text(e)
                    )));
                }
            }
        }
        self.tx_at = 0;
        self.tx_len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    /// A pump between a datagram socketpair standing in for the tap (one frame per read and
    /// write, like a tap) and a stream socketpair standing in for the session.
    fn pump() -> (Pump, OwnedFd, OwnedFd) {
        let (tap, tap_peer) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (sock, sock_peer) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        (Pump::new(tap, sock), tap_peer, sock_peer)
    }

    fn read_some(fd: &OwnedFd) -> Vec<u8> {
        let mut buf = vec![0u8; 200_000];
        let n = rustix::io::read(fd, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn frames_go_both_ways() {
        let (mut p, tap, sock) = pump();
        // Tap → session: each frame gets its length prefix.
        rustix::io::write(&tap, b"frame-one").unwrap();
        rustix::io::write(&tap, b"two").unwrap();
        p.ready(PollFlags::IN, PollFlags::empty()).unwrap();
        assert_eq!(read_some(&sock), b"\x09\x00frame-one\x03\x00two");
        assert_eq!(p.poll_fds()[0].1, PollFlags::IN);

        // Session → tap: frames split anywhere on the stream come out whole.
        rustix::io::write(&sock, b"\x05\x00hel").unwrap();
        p.ready(PollFlags::empty(), PollFlags::IN).unwrap();
        rustix::io::write(&sock, b"lo\x02\x00ok\x01").unwrap();
        p.ready(PollFlags::empty(), PollFlags::IN).unwrap();
        assert_eq!(read_some(&tap), b"hello");
        assert_eq!(read_some(&tap), b"ok");
        assert_eq!(p.rx_len, 1, "a partial prefix waits for the rest");
        rustix::io::write(&sock, b"\x00!").unwrap();
        p.ready(PollFlags::empty(), PollFlags::IN).unwrap();
        assert_eq!(read_some(&tap), b"!");
        assert_eq!(p.rx_len, 0);

        // The largest frame the prefix can carry fits the buffers.
        let big = vec![7u8; vmnet::MAX_FRAME];
        let mut wire = (vmnet::MAX_FRAME as u16).to_le_bytes().to_vec();
        wire.extend_from_slice(&big);
        let mut sent = 0;
        while sent < wire.len() {
            sent += rustix::io::write(&sock, &wire[sent..]).unwrap();
            p.ready(PollFlags::empty(), PollFlags::IN).unwrap();
        }
        assert_eq!(read_some(&tap), big);

        // vpnkit closing the session stops the pump.
        drop(sock);
        assert_eq!(
            p.ready(PollFlags::empty(), PollFlags::IN),
            Err(Stop::Closed)
        );
    }

    #[test]
    fn a_full_session_holds_the_tap_back() {
        let (mut p, tap, sock) = pump();
        let frame = vec![1u8; 60_000];
        // Fill the session socket until a frame is left pending.
        for _ in 0..100 {
            rustix::io::write(&tap, &frame).unwrap();
            p.ready(PollFlags::IN, PollFlags::empty()).unwrap();
            if p.tx_len > 0 {
                break;
            }
        }
        assert!(p.tx_len > 0, "the socket never filled up");
        assert_eq!(p.poll_fds()[0].1, PollFlags::empty());
        assert!(p.poll_fds()[1].1.contains(PollFlags::OUT));
        // Drain the peer: the pending frame goes out whole and the tap is read again.
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            p.ready(PollFlags::empty(), PollFlags::OUT).unwrap();
            match rustix::net::recv(&sock, &mut buf, RecvFlags::DONTWAIT) {
                Ok((n, _)) if n > 0 => got += n,
                _ if p.tx_len == 0 => break,
                _ => {}
            }
        }
        assert_eq!(got % (frame.len() + 2), 0, "only whole frames: {got}");
        assert_eq!(p.poll_fds()[0].1, PollFlags::IN);
    }
}
