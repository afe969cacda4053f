//! The DHCP client's state machine: the socket bound to the interface, one
//! DISCOVER/OFFER/REQUEST/ACK exchange with RFC 2131's retransmissions, and the `Renewer` that
//! reruns it from the event loop.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, ipproto, sockopt};

use sys::errno::{text as describe, text as io_text};

use super::wire::{
    CLIENT_PORT, Lease, REPLY_MAX, REQUEST_LEN, Reply, SERVER_PORT, encode_request, kind,
    parse_reply,
};

/// Retransmission waits for one message, as RFC 2131 §4.1 suggests (doubling), 30 s in all:
/// upstream's read timeout.
const WAITS: [Duration; 4] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];
/// When a renewal fails, the next attempt comes this much later.
const RENEW_RETRY: Duration = Duration::from_secs(60);
/// Where an exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No exchange running.
    Idle,
    /// DISCOVER sent, waiting for an OFFER.
    Selecting,
    /// REQUEST sent for `addr` to `server`, waiting for the ACK.
    Requesting { addr: [u8; 4], server: [u8; 4] },
}

/// A DHCP client on one interface: the socket, and the state of the running exchange.
pub struct Client {
    sock: OwnedFd,
    ifname: String,
    mac: [u8; 6],
    xid: u32,
    state: State,
    /// Sends of the current message so far.
    sent: usize,
    deadline: Option<Instant>,
    /// The address to ask for in the DISCOVER (a renewal asks for the one it has).
    prefer: Option<[u8; 4]>,
    out: [u8; REQUEST_LEN],
    inbuf: [u8; REPLY_MAX],
    /// Where requests go: 255.255.255.255:67 (a test's fake server otherwise).
    to: SocketAddrV4,
}

/// `could not exchange DHCP with <dev>: <what>`, upstream's wrapping.
fn exchange_error(ifname: &str, what: impl fmt::Display) -> String {
    format!("could not exchange DHCP with {ifname}: {what}")
}

impl Client {
    /// Opens the client's socket on `ifname` in the calling thread's network namespace.
    ///
    /// # Errors
    /// `could not exchange DHCP with <dev>: <step>: <errno>`.
    pub(super) fn open(ifname: &str) -> Result<Client, String> {
        let fail = |step: &str, e: Errno| {
            exchange_error(
                ifname,
                format_args!("{step}: {}", describe(e.raw_os_error())),
            )
        };
        let fail_io = |step: &str, e: std::io::Error| {
            exchange_error(ifname, format_args!("{step}: {}", io_text(&e)))
        };
        let sock = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(ipproto::UDP),
        )
        .map_err(|e| fail("socket", e))?;
        let mac = sys::net::hardware_address(sock.as_fd(), ifname)
            .map_err(|e| fail_io("hardware address", e))?;
        sockopt::set_socket_reuseaddr(&sock, true).map_err(|e| fail("SO_REUSEADDR", e))?;
        sockopt::set_socket_broadcast(&sock, true).map_err(|e| fail("SO_BROADCAST", e))?;
        sys::net::bind_to_device(sock.as_fd(), ifname)
            .map_err(|e| fail_io("SO_BINDTODEVICE", e))?;
        rustix::net::bind(
            &sock,
            &SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT),
        )
        .map_err(|e| fail("bind", e))?;
        Ok(Client {
            sock,
            ifname: ifname.to_string(),
            mac,
            xid: initial_xid(mac),
            state: State::Idle,
            sent: 0,
            deadline: None,
            prefer: None,
            out: [0; REQUEST_LEN],
            inbuf: [0; REPLY_MAX],
            to: SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT),
        })
    }

    /// The socket, to poll for replies while an exchange runs.
    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// When the current message must be sent again (or the exchange given up); `None` when idle.
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether an exchange is running.
    fn busy(&self) -> bool {
        self.state != State::Idle
    }

    /// Starts an exchange: sends a DISCOVER (asking for `prefer`, if given).
    ///
    /// # Errors
    /// The send's errno, as an exchange error.
    fn begin(&mut self, prefer: Option<[u8; 4]>, now: Instant) -> Result<(), String> {
        self.xid = self.xid.wrapping_add(0x9e37_79b9);
        self.prefer = prefer;
        self.state = State::Selecting;
        self.sent = 0;
        self.send(now)
    }

    pub(super) fn send(&mut self, now: Instant) -> Result<(), String> {
        let n = match self.state {
            State::Idle => return Ok(()),
            State::Selecting => encode_request(
                &mut self.out,
                kind::DISCOVER,
                self.xid,
                self.mac,
                self.prefer,
                None,
            ),
            State::Requesting { addr, server } => encode_request(
                &mut self.out,
                kind::REQUEST,
                self.xid,
                self.mac,
                Some(addr),
                Some(server),
            ),
        };
        loop {
            match rustix::net::sendto(&self.sock, &self.out[..n], SendFlags::empty(), &self.to) {
                Ok(_) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    self.state = State::Idle;
                    self.deadline = None;
                    return Err(exchange_error(
                        &self.ifname,
                        format_args!("sendto: {}", describe(e.raw_os_error())),
                    ));
                }
            }
        }
        self.deadline = Some(now + WAITS[self.sent.min(WAITS.len() - 1)]);
        self.sent += 1;
        Ok(())
    }

    /// The deadline passed: sends the current message again, or gives up after the last wait.
    ///
    /// # Errors
    /// `could not exchange DHCP with <dev>: timed out waiting for DHCPOFFER` (or `DHCPACK`).
    fn on_timeout(&mut self, now: Instant) -> Result<(), String> {
        if self.state == State::Idle {
            return Ok(());
        }
        if self.sent >= WAITS.len() {
            let waiting = match self.state {
                State::Requesting { .. } => "DHCPACK",
                _ => "DHCPOFFER",
            };
            self.state = State::Idle;
            self.deadline = None;
            return Err(exchange_error(
                &self.ifname,
                format_args!("timed out waiting for {waiting}"),
            ));
        }
        self.send(now)
    }

    /// Reads every datagram waiting on the socket and moves the exchange on. Returns the ACK
    /// (or NAK) that ends it, if one came. Datagrams that are malformed or meant for another
    /// client on the bridge are skipped.
    ///
    /// # Errors
    /// A receive error, as an exchange error.
    fn on_readable(&mut self, now: Instant) -> Result<Option<Reply>, String> {
        loop {
            let n = match rustix::net::recv(&self.sock, &mut self.inbuf[..], RecvFlags::empty()) {
                Ok((n, _)) => n.min(REPLY_MAX),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(None),
                Err(e) => {
                    self.state = State::Idle;
                    self.deadline = None;
                    return Err(exchange_error(
                        &self.ifname,
                        format_args!("recv: {}", describe(e.raw_os_error())),
                    ));
                }
            };
            let Ok(reply) = parse_reply(&self.inbuf[..n]) else {
                continue;
            };
            if reply.xid != self.xid || reply.chaddr != self.mac {
                continue;
            }
            match (self.state, reply.kind) {
                (State::Selecting, kind::OFFER) if reply.yiaddr != [0; 4] => {
                    let Some(server) = reply.server_id else {
                        continue;
                    };
                    self.state = State::Requesting {
                        addr: reply.yiaddr,
                        server,
                    };
                    self.sent = 0;
                    self.send(now)?;
                }
                (State::Requesting { server, .. }, kind::ACK | kind::NAK)
                    if reply.server_id.is_none_or(|s| s == server) =>
                {
                    self.state = State::Idle;
                    self.deadline = None;
                    return Ok(Some(reply));
                }
                _ => {}
            }
        }
    }

    /// A whole exchange, blocking: DISCOVER, OFFER, REQUEST, ACK, with retransmissions.
    ///
    /// # Errors
    /// Exchange errors, or upstream's checks of the ACK ([`Lease::of`]).
    pub(super) fn exchange(&mut self, prefer: Option<[u8; 4]>) -> Result<Lease, String> {
        self.begin(prefer, Instant::now())?;
        loop {
            let Some(deadline) = self.deadline else {
                return Err("did not get DHCPACK".into());
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let ready = {
                let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
                match poll(&mut fds, Some(&timeout)) {
                    Ok(_) => !fds[0].revents().is_empty(),
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        return Err(exchange_error(
                            &self.ifname,
                            format_args!("poll: {}", describe(e.raw_os_error())),
                        ));
                    }
                }
            };
            let now = Instant::now();
            if ready {
                if let Some(reply) = self.on_readable(now)? {
                    return Lease::of(&reply);
                }
            } else if now >= deadline {
                self.on_timeout(now)?;
            }
        }
    }
}

/// A transaction id that differs between clients and runs: the MAC (random per veth) mixed
/// with the clock and our pid. Not a secret; it only pairs replies with requests.
fn initial_xid(mac: [u8; 6]) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let m = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    m ^ nanos ^ (std::process::id() << 16)
}

/// Keeps a lease alive from the child's event loop: at 0.9 × the lease it runs a new exchange
/// for the same address, driven by [`Renewer::wake`].
pub struct Renewer {
    client: Client,
    addr: [u8; 4],
    renew_at: Option<Instant>,
}

impl Renewer {
    /// Takes over `client` after it obtained `lease` at `now`.
    pub fn new(client: Client, lease: &Lease, now: Instant) -> Renewer {
        Renewer {
            client,
            addr: lease.addr,
            renew_at: lease.renew_at(now),
        }
    }

    /// The socket to poll while a renewal runs.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.client.busy().then(|| self.client.fd())
    }

    /// How long the event loop may sleep before calling [`Renewer::wake`]; `None` for ever.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let at = if self.client.busy() {
            self.client.deadline()
        } else {
            self.renew_at
        };
        at.map(|t| t.saturating_duration_since(now))
    }

    /// Moves the renewal on (`readable`: the socket has data). Returns a line to warn with when
    /// a renewal failed or gave another address; the address we have is kept in both cases and
    /// the next attempt is scheduled (upstream panics instead).
    pub fn wake(&mut self, readable: bool, now: Instant) -> Option<String> {
        let step = if !self.client.busy() {
            if self.renew_at.is_some_and(|t| now >= t) {
                self.renew_at = None;
                self.client.begin(Some(self.addr), now).map(|()| None)
            } else {
                Ok(None)
            }
        } else if readable {
            self.client.on_readable(now)
        } else if self.client.deadline().is_some_and(|t| now >= t) {
            self.client.on_timeout(now).map(|()| None)
        } else {
            Ok(None)
        };
        let outcome = match step {
            Ok(None) => return None,
            Ok(Some(reply)) => Lease::of(&reply),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(lease) if lease.addr == self.addr => {
                self.renew_at = lease.renew_at(now);
                None
            }
            Ok(lease) => {
                self.renew_at = lease.renew_at(now);
                Some(format!(
                    "DHCP renewal: expected to retain {}, got {}; keeping {}",
                    Ipv4Addr::from(self.addr),
                    Ipv4Addr::from(lease.addr),
                    Ipv4Addr::from(self.addr)
                ))
            }
            Err(e) => {
                self.renew_at = now.checked_add(RENEW_RETRY);
                Some(format!(
                    "DHCP renewal failed: {e}; retrying in {}s",
                    RENEW_RETRY.as_secs()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::tests::{MAC, reply};
    use crate::dhcp::wire::{OPTIONS_AT, opt, quad};

    /// A client on a loopback socket that sends to `server` instead of broadcasting.
    fn loopback_client(server: &std::net::UdpSocket) -> Client {
        let sock = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(ipproto::UDP),
        )
        .unwrap();
        rustix::net::bind(&sock, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        let std::net::SocketAddr::V4(to) = server.local_addr().unwrap() else {
            unreachable!()
        };
        Client {
            sock,
            ifname: "test0".into(),
            mac: MAC,
            xid: 1,
            state: State::Idle,
            sent: 0,
            deadline: None,
            prefer: None,
            out: [0; REQUEST_LEN],
            inbuf: [0; REPLY_MAX],
            to,
        }
    }

    fn fake_server() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Receives one request: its type, xid, requested address and server id.
    fn take_request(
        server: &std::net::UdpSocket,
    ) -> (
        u8,
        u32,
        Option<[u8; 4]>,
        Option<[u8; 4]>,
        std::net::SocketAddr,
    ) {
        let mut buf = [0u8; 600];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(n, REQUEST_LEN);
        assert_eq!((buf[0], buf[10], &buf[28..34]), (1, 0x80, &MAC[..]));
        let (mut kind_code, mut requested, mut server_id) = (0, None, None);
        let mut at = OPTIONS_AT;
        while buf[at] != opt::END {
            let (code, len) = (buf[at], usize::from(buf[at + 1]));
            let data = &buf[at + 2..at + 2 + len];
            match code {
                opt::MESSAGE_TYPE => kind_code = data[0],
                opt::REQUESTED_IP => requested = Some(quad(data)),
                opt::SERVER_ID => server_id = Some(quad(data)),
                _ => {}
            }
            at += 2 + len;
        }
        let xid = u32::from_be_bytes(quad(&buf[4..8]));
        (kind_code, xid, requested, server_id, from)
    }

    /// Sends a reply of `kind_code` for `xid` offering `yiaddr`, with a 100 s lease.
    fn answer(
        server: &std::net::UdpSocket,
        to: std::net::SocketAddr,
        kind_code: u8,
        xid: u32,
        yiaddr: [u8; 4],
    ) {
        let mut b = reply(
            kind_code,
            &[
                54, 4, 10, 0, 3, 1, 51, 4, 0, 0, 0, 100, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 3, 1,
                6, 4, 10, 0, 3, 1, 255,
            ],
        );
        b[4..8].copy_from_slice(&xid.to_be_bytes());
        b[16..20].copy_from_slice(&yiaddr);
        server.send_to(&b, to).unwrap();
    }

    #[test]
    fn exchange_runs_discover_offer_request_ack() {
        let server = fake_server();
        let mut client = loopback_client(&server);
        let peer = std::thread::scope(|s| {
            let t = s.spawn(|| {
                let (k, xid, requested, sid, from) = take_request(&server);
                assert_eq!((k, requested, sid), (kind::DISCOVER, None, None));
                // Noise first: garbage, another client's transaction, a reply without a server id.
                server.send_to(b"garbage", from).unwrap();
                answer(&server, from, kind::OFFER, xid ^ 1, [10, 0, 3, 7]);
                answer(&server, from, kind::OFFER, xid, [10, 0, 3, 42]);
                let (k, xid2, requested, sid, _) = take_request(&server);
                assert_eq!(
                    (k, xid2, requested, sid),
                    (
                        kind::REQUEST,
                        xid,
                        Some([10, 0, 3, 42]),
                        Some([10, 0, 3, 1])
                    )
                );
                answer(&server, from, kind::ACK, xid, [10, 0, 3, 42]);
            });
            let lease = client.exchange(None);
            t.join().unwrap();
            lease
        });
        assert_eq!(
            peer,
            Ok(Lease {
                addr: [10, 0, 3, 42],
                prefix: 24,
                gateway: [10, 0, 3, 1],
                dns: [10, 0, 3, 1],
                lease_secs: 100,
            })
        );
        assert!(!client.busy());
    }

    #[test]
    fn a_nak_ends_the_exchange_with_upstreams_message() {
        let server = fake_server();
        let mut client = loopback_client(&server);
        let got = std::thread::scope(|s| {
            let t = s.spawn(|| {
                let (_, xid, _, _, from) = take_request(&server);
                answer(&server, from, kind::OFFER, xid, [10, 0, 3, 42]);
                let _ = take_request(&server);
                answer(&server, from, kind::NAK, xid, [0; 4]);
            });
            let r = client.exchange(None);
            t.join().unwrap();
            r
        });
        assert_eq!(got, Err("did not get DHCPACK".into()));
    }

    /// Waits until the client's socket has a datagram.
    fn wait_readable(c: &Client) {
        let mut fds = [PollFd::from_borrowed_fd(c.fd(), PollFlags::IN)];
        let timeout = Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        assert_eq!(poll(&mut fds, Some(&timeout)), Ok(1));
    }

    #[test]
    fn renewals_keep_the_address_and_warn_when_they_cannot() {
        let server = fake_server();
        let t0 = Instant::now();
        let lease = Lease {
            addr: [10, 0, 3, 42],
            prefix: 24,
            gateway: [10, 0, 3, 1],
            dns: [10, 0, 3, 1],
            lease_secs: 100,
        };
        let mut r = Renewer::new(loopback_client(&server), &lease, t0);
        // Nothing to do before 0.9 x 100 s.
        assert_eq!(r.timeout(t0), Some(Duration::from_secs(90)));
        assert!(r.fd().is_none());
        assert_eq!(r.wake(false, t0 + Duration::from_secs(89)), None);
        assert!(r.fd().is_none());

        // At 90 s: a DISCOVER asking for the address we have, then OFFER, REQUEST, ACK.
        let t1 = t0 + Duration::from_secs(90);
        assert_eq!(r.wake(false, t1), None);
        assert!(r.fd().is_some());
        assert_eq!(r.timeout(t1), Some(Duration::from_secs(2)));
        let (k, xid, requested, _, from) = take_request(&server);
        assert_eq!((k, requested), (kind::DISCOVER, Some([10, 0, 3, 42])));
        answer(&server, from, kind::OFFER, xid, [10, 0, 3, 42]);
        wait_readable(&r.client);
        assert_eq!(r.wake(true, t1), None);
        let (k, ..) = take_request(&server);
        assert_eq!(k, kind::REQUEST);
        answer(&server, from, kind::ACK, xid, [10, 0, 3, 42]);
        wait_readable(&r.client);
        assert_eq!(r.wake(true, t1), None);
        assert!(r.fd().is_none());
        assert_eq!(r.timeout(t1), Some(Duration::from_secs(90)));

        // The next renewal is answered with another address: a warning, the old one is kept.
        let t2 = t1 + Duration::from_secs(90);
        assert_eq!(r.wake(false, t2), None);
        let (_, xid, ..) = take_request(&server);
        answer(&server, from, kind::OFFER, xid, [10, 0, 3, 99]);
        wait_readable(&r.client);
        assert_eq!(r.wake(true, t2), None);
        let _ = take_request(&server);
        answer(&server, from, kind::ACK, xid, [10, 0, 3, 99]);
        wait_readable(&r.client);
        assert_eq!(
            r.wake(true, t2).as_deref(),
            Some("DHCP renewal: expected to retain 10.0.3.42, got 10.0.3.99; keeping 10.0.3.42")
        );
        assert_eq!(r.addr, [10, 0, 3, 42]);

        // A silent server: four DISCOVERs 2, 4, 8 and 16 s apart, then a warning and a retry
        // a minute later.
        let mut now = t2 + Duration::from_secs(90);
        assert_eq!(r.wake(false, now), None);
        for wait in [2, 4, 8] {
            now += Duration::from_secs(wait);
            assert_eq!(r.wake(false, now), None);
        }
        for _ in 0..4 {
            assert_eq!(take_request(&server).0, kind::DISCOVER);
        }
        now += Duration::from_secs(16);
        assert_eq!(
            r.wake(false, now).as_deref(),
            Some(
                "DHCP renewal failed: could not exchange DHCP with test0: timed out waiting for DHCPOFFER; retrying in 60s"
            )
        );
        assert_eq!(r.timeout(now), Some(Duration::from_secs(60)));
    }
}
