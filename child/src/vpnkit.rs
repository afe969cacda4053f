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

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use proto::{NetConfig, vmnet};
use rustix::event::PollFlags;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use crate::errno::io_text;
use crate::mount::errno_text;

/// The socket vpnkit serves in the state dir (`vpnkit --ethernet <statedir>/<this>`).
pub const SOCKET_NAME: &str = "vpnkit-ethernet.sock";

/// How long each step of the session setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many frames are moved per direction per wakeup, so that one busy direction
/// cannot starve signals or the other direction.
const BATCH: usize = 64;

/// Creates the tap `name` in the calling thread's network namespace with the MAC vpnkit
/// assigned, and returns its descriptor (non-blocking, close-on-exec).
///
/// # Errors
/// `creating tap <name>: <why>` or `failed to set address of <name>: <errno>`.
pub fn open_tap(name: &str, mac: [u8; 6]) -> Result<OwnedFd, String> {
    open_tap_with(name, mac, false)
}

/// [`open_tap`], with `vnet`: virtio-net headers and checksum and TSO offloads
/// ([`crate::sys::tun_set_iff_tap_vnet`]).
fn open_tap_with(name: &str, mac: [u8; 6], vnet: bool) -> Result<OwnedFd, String> {
    let fail = |why: String| format!("creating tap {name}: {why}");
    let fd = rustix::fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("open /dev/net/tun: {}", errno_text(e))))?;
    if vnet {
        crate::sys::tun_set_iff_tap_vnet(&fd, name)
    } else {
        crate::sys::tun_set_iff_tap(&fd, name)
    }
    .map_err(|e| fail(io_text(&e)))?;
    let mut nl = crate::netlink::Netlink::open().map_err(|e| {
        format!(
            "failed to open a netlink socket for {name}: {}",
            errno_text(e)
        )
    })?;
    nl.link_index(name)
        .and_then(|index| nl.set_mac(index, mac))
        .map_err(|e| format!("failed to set address of {name}: {}", errno_text(e)))?;
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
    crate::netlink::activate_dev(dev, mtu, net.addr, net.prefix, net.gateway)
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
        crate::netlink::activate_dev(dev, mtu, net.addr, net.prefix, net.gateway)
            .map_err(|e| e.to_string())?;
        Ok(tap)
    };
    let tap = match detached {
        Some(ns) => ns.within(setup)?,
        None => setup()?,
    };
    let sock = connect(&state_dir.join(SOCKET_NAME), &net.uuid)?;
    Ok(Pump::new(tap, sock))
}

/// Opens our vmnet session on `socket` for the interface `uuid`: the init exchange and the
/// interface request, each bounded by a timeout.
///
/// # Errors
/// `connecting to <socket> with uuid <uuid>: <why>`.
pub fn connect(socket: &Path, uuid: &[u8; 16]) -> Result<OwnedFd, String> {
    let s = UnixStream::connect(socket)
        .map_err(io)
        .and_then(|s| session(s, uuid))
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

/// On a connected socket: the init exchange and the request for the interface `uuid`, each read
/// bounded by a timeout (which stays set). Shared with the parent, which opens the first session.
///
/// # Errors
/// The I/O error or the protocol's complaint.
pub fn session(mut s: UnixStream, uuid: &[u8; 16]) -> Result<(UnixStream, vmnet::Vif), String> {
    // Writes are a few hundred bytes into an empty socket buffer: only reads can wait.
    s.set_read_timeout(Some(SETUP_TIMEOUT)).map_err(io)?;
    s.write_all(&vmnet::init_message()).map_err(io)?;
    let mut init = [0u8; vmnet::INIT_LEN];
    s.read_exact(&mut init).map_err(io)?;
    vmnet::parse_init(&init).map_err(|_| String::from("not a vmnet server (bad init magic)"))?;
    s.write_all(&vmnet::connect_request(uuid)).map_err(io)?;
    let mut reply = [0u8; vmnet::VIF_REPLY_LEN];
    s.read_exact(&mut reply[..2]).map_err(io)?;
    let len = vmnet::vif_reply_len(&reply[..2]).unwrap_or(2);
    s.read_exact(&mut reply[2..len]).map_err(io)?;
    let vif = vmnet::parse_vif_reply(&reply[..len]).map_err(|e| match e {
        vmnet::Error::Refused(why) => why,
        _ => String::from("truncated vmnet message"),
    })?;
    Ok((s, vif))
}

/// [`session`] and [`dhcp`]: the parent's whole exchange with vpnkit on a connected socket,
/// giving the open session, the interface's MAC and its IPv4 address.
///
/// # Errors
/// As [`session`] and [`dhcp`].
pub fn interface(s: UnixStream, uuid: &[u8; 16]) -> Result<(UnixStream, [u8; 6], [u8; 4]), String> {
    let (mut s, vif) = session(s, uuid)?;
    let ip = dhcp(&mut s, vif.mac)?;
    Ok((s, vif.mac, ip))
}

/// The interface's IPv4 address by DHCP on a session from [`session`]: up to ten discovers, one
/// a second (or after a hundred other frames), until an offer for `mac` arrives. Frames that are
/// not the offer are skipped. Used by the parent.
///
/// # Errors
/// The I/O error, or `no DHCP offer` after the last discover.
pub fn dhcp(s: &mut UnixStream, mac: [u8; 6]) -> Result<[u8; 4], String> {
    let mut wire = [0u8; vmnet::FRAME_HEAD + vmnet::DISCOVER_LEN];
    wire[..2].copy_from_slice(&(vmnet::DISCOVER_LEN as u16).to_le_bytes());
    wire[2..].copy_from_slice(&vmnet::dhcp_discover(mac));
    let mut frame = vec![0u8; vmnet::MAX_FRAME];
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(io)?;
    for _ in 0..10 {
        s.write_all(&wire).map_err(io)?;
        for _ in 0..100 {
            let mut head = [0u8; vmnet::FRAME_HEAD];
            match s.read_exact(&mut head) {
                Ok(()) => {}
                // A second without an answer: ask again.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io(e)),
            }
            let len = usize::from(u16::from_le_bytes(head));
            s.read_exact(&mut frame[..len]).map_err(io)?;
            if let Some(ip) = vmnet::dhcp_offer(&frame[..len], mac) {
                return Ok(ip);
            }
        }
    }
    Err("no DHCP offer: i/o timeout".into())
}

/// An I/O error of the session; a read timeout in Go's words.
fn io(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return "i/o timeout".into();
    }
    io_text(&e)
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
    pub fn new(tap: OwnedFd, sock: OwnedFd) -> Pump {
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
                Err(e) => return Err(Stop::Failed(format!("vif2tap: read: {}", errno_text(e)))),
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
                Err(e) => return Err(Stop::Failed(format!("tap2vif: read: {}", errno_text(e)))),
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
                Err(e) => return Err(Stop::Failed(format!("tap2vif: write: {}", errno_text(e)))),
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
