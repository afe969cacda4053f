//! A minimal DHCPv4 client for `--net=lxc-user-nic`: the interface lxc-user-nic put into our
//! namespace has no address until the bridge's DHCP server (lxc-net's dnsmasq) gives one.
//!
//! It speaks only what that needs: DISCOVER, OFFER, REQUEST, ACK (and NAK) over a UDP socket on
//! port 68 bound to the interface (`SO_BINDTODEVICE`) with `SO_BROADCAST`, sending to
//! 255.255.255.255:67 with the BROADCAST flag so that the server answers by broadcast too, which a
//! socket on an interface without an address still receives. Packets are built in and read from
//! fixed buffers; nothing is allocated per packet. Replies are outside input: [`parse_reply`]
//! checks every length and turns anything malformed into a [`ParseError`], never a panic.
//!
//! Like upstream (which uses `github.com/insomniacslk/dhcp`), a renewal is a full exchange
//! again at 0.9 × the lease time; [`Renewer`] runs it from the child's event loop without
//! blocking signal forwarding.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use std::net::{Ipv4Addr, SocketAddrV4};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, ipproto, sockopt};

use sys::errno::{text as describe, text as io_text};

/// The server's port.
pub const SERVER_PORT: u16 = 67;
/// Our port.
pub const CLIENT_PORT: u16 = 68;
/// The fixed BOOTP header before the magic cookie.
const BOOTP_LEN: usize = 236;
/// RFC 2131's magic cookie, which starts the options.
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Where the options start.
const OPTIONS_AT: usize = BOOTP_LEN + COOKIE.len();
/// The size of what we send: the 300 bytes old BOOTP relays and servers insist on.
pub const REQUEST_LEN: usize = 300;
/// The largest reply we read; longer datagrams are cut here and rejected as truncated if an
/// option runs past the end. We tell the server this limit in option 57.
pub const REPLY_MAX: usize = 1500;
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
/// The lease time assumed when the server names none (upstream's default).
const DEFAULT_LEASE_SECS: u32 = 3600;

/// DHCP message types (option 53).
pub mod kind {
    /// DHCPDISCOVER.
    pub const DISCOVER: u8 = 1;
    /// DHCPOFFER.
    pub const OFFER: u8 = 2;
    /// DHCPREQUEST.
    pub const REQUEST: u8 = 3;
    /// DHCPACK.
    pub const ACK: u8 = 5;
    /// DHCPNAK.
    pub const NAK: u8 = 6;
}

/// Option codes we read or write.
mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETERS: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const END: u8 = 255;
}

/// Why a datagram is not a DHCP reply we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the BOOTP header and the cookie.
    Truncated(usize),
    /// `op` is not BOOTREPLY (2).
    NotAReply(u8),
    /// Not Ethernet (`htype` 1, `hlen` 6).
    NotEthernet,
    /// The magic cookie is wrong.
    BadCookie,
    /// An option's length runs past the end of the datagram.
    OptionOverrun(u8),
    /// An option whose size we know has another length.
    BadOptionLength(u8, u8),
    /// No message type (option 53): plain BOOTP.
    NoMessageType,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated(n) => write!(f, "truncated DHCP message ({n} bytes)"),
            ParseError::NotAReply(op) => write!(f, "not a BOOTREPLY (op {op})"),
            ParseError::NotEthernet => f.write_str("not an Ethernet DHCP message"),
            ParseError::BadCookie => f.write_str("bad DHCP magic cookie"),
            ParseError::OptionOverrun(code) => write!(f, "DHCP option {code} runs past the end"),
            ParseError::BadOptionLength(code, len) => {
                write!(f, "DHCP option {code} has bad length {len}")
            }
            ParseError::NoMessageType => f.write_str("no DHCP message type"),
        }
    }
}

/// What we read from a reply. Of options that may repeat or list several addresses, the first
/// wins, as upstream takes `Router()[0]` and `DNS()[0]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reply {
    /// Transaction id.
    pub xid: u32,
    /// The client hardware address it is meant for.
    pub chaddr: [u8; 6],
    /// `yiaddr`: the address offered or acknowledged.
    pub yiaddr: [u8; 4],
    /// Option 53.
    pub kind: u8,
    /// Option 1.
    pub mask: Option<[u8; 4]>,
    /// Option 3, first router.
    pub router: Option<[u8; 4]>,
    /// Option 6, first server.
    pub dns: Option<[u8; 4]>,
    /// Option 51, seconds.
    pub lease_secs: Option<u32>,
    /// Option 54.
    pub server_id: Option<[u8; 4]>,
}

fn quad(data: &[u8]) -> [u8; 4] {
    [data[0], data[1], data[2], data[3]]
}

/// Reads a BOOTREPLY with its DHCP options.
///
/// # Errors
/// A [`ParseError`] for anything short, malformed or not a DHCP reply.
pub fn parse_reply(buf: &[u8]) -> Result<Reply, ParseError> {
    if buf.len() < OPTIONS_AT {
        return Err(ParseError::Truncated(buf.len()));
    }
    if buf[0] != 2 {
        return Err(ParseError::NotAReply(buf[0]));
    }
    if buf[1] != 1 || buf[2] != 6 {
        return Err(ParseError::NotEthernet);
    }
    if buf[BOOTP_LEN..OPTIONS_AT] != COOKIE {
        return Err(ParseError::BadCookie);
    }
    let mut reply = Reply {
        xid: u32::from_be_bytes(quad(&buf[4..8])),
        yiaddr: quad(&buf[16..20]),
        ..Reply::default()
    };
    reply.chaddr.copy_from_slice(&buf[28..34]);
    let mut kind = None;
    let mut at = OPTIONS_AT;
    // A missing END is tolerated: the datagram's end ends the options too.
    while let Some(&code) = buf.get(at) {
        at += 1;
        match code {
            opt::PAD => continue,
            opt::END => break,
            _ => {}
        }
        let len = *buf.get(at).ok_or(ParseError::OptionOverrun(code))?;
        at += 1;
        let data = buf
            .get(at..at + usize::from(len))
            .ok_or(ParseError::OptionOverrun(code))?;
        at += usize::from(len);
        let exact = |want: u8| {
            if len == want {
                Ok(())
            } else {
                Err(ParseError::BadOptionLength(code, len))
            }
        };
        match code {
            opt::MESSAGE_TYPE => {
                exact(1)?;
                kind.get_or_insert(data[0]);
            }
            opt::SUBNET_MASK => {
                exact(4)?;
                reply.mask.get_or_insert(quad(data));
            }
            opt::ROUTER | opt::DNS => {
                if len == 0 || len % 4 != 0 {
                    return Err(ParseError::BadOptionLength(code, len));
                }
                let field = if code == opt::ROUTER {
                    &mut reply.router
                } else {
                    &mut reply.dns
                };
                field.get_or_insert(quad(data));
            }
            opt::LEASE_TIME => {
                exact(4)?;
                reply
                    .lease_secs
                    .get_or_insert(u32::from_be_bytes(quad(data)));
            }
            opt::SERVER_ID => {
                exact(4)?;
                reply.server_id.get_or_insert(quad(data));
            }
            _ => {}
        }
    }
    reply.kind = kind.ok_or(ParseError::NoMessageType)?;
    Ok(reply)
}

/// Builds a DISCOVER or REQUEST into `out` and returns its length ([`REQUEST_LEN`]).
///
/// `requested` goes into option 50 and `server` into option 54 when given.
pub fn encode_request(
    out: &mut [u8; REQUEST_LEN],
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    requested: Option<[u8; 4]>,
    server: Option<[u8; 4]>,
) -> usize {
    out.fill(0);
    out[0] = 1; // BOOTREQUEST
    out[1] = 1; // Ethernet
    out[2] = 6;
    out[4..8].copy_from_slice(&xid.to_be_bytes());
    out[10] = 0x80; // flags: BROADCAST, so the answer reaches a socket without an address
    out[28..34].copy_from_slice(&mac);
    out[BOOTP_LEN..OPTIONS_AT].copy_from_slice(&COOKIE);
    let mut at = OPTIONS_AT;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&[opt::MESSAGE_TYPE, 1, kind]);
    let max = (REPLY_MAX as u16).to_be_bytes();
    put(&[opt::MAX_SIZE, 2, max[0], max[1]]);
    if let Some(ip) = requested {
        put(&[opt::REQUESTED_IP, 4]);
        put(&ip);
    }
    if let Some(ip) = server {
        put(&[opt::SERVER_ID, 4]);
        put(&ip);
    }
    put(&[
        opt::PARAMETERS,
        5,
        opt::SUBNET_MASK,
        opt::ROUTER,
        opt::DNS,
        opt::LEASE_TIME,
        opt::SERVER_ID,
    ]);
    put(&[opt::END]);
    REQUEST_LEN
}

/// What an acknowledged lease gives the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub addr: [u8; 4],
    /// Its prefix length (0 when the mask is missing or not contiguous, as upstream).
    pub prefix: u8,
    /// The first router.
    pub gateway: [u8; 4],
    /// The first DNS server.
    pub dns: [u8; 4],
    /// Lease time in seconds.
    pub lease_secs: u32,
}

impl Lease {
    /// The lease of an ACK, with upstream's checks and messages.
    ///
    /// # Errors
    /// `did not get DHCPACK`, `got zero YourIPAddr`, `got no Router`, `got no DNS`.
    pub fn of(ack: &Reply) -> Result<Lease, String> {
        if ack.kind != kind::ACK {
            return Err("did not get DHCPACK".into());
        }
        if ack.yiaddr == [0; 4] {
            return Err("got zero YourIPAddr".into());
        }
        let gateway = ack.router.ok_or("got no Router")?;
        let dns = ack.dns.ok_or("got no DNS")?;
        Ok(Lease {
            addr: ack.yiaddr,
            prefix: ack.mask.map_or(0, prefix_len),
            gateway,
            dns,
            lease_secs: ack.lease_secs.unwrap_or(DEFAULT_LEASE_SECS),
        })
    }

    /// When to renew: 0.9 × the lease after `now`; `None` for an infinite lease.
    pub fn renew_at(&self, now: Instant) -> Option<Instant> {
        if self.lease_secs == u32::MAX {
            return None;
        }
        now.checked_add(Duration::from_millis(u64::from(self.lease_secs) * 900))
    }
}

/// The prefix length of a contiguous netmask; 0 otherwise, as Go's `IPMask.Size()`.
pub fn prefix_len(mask: [u8; 4]) -> u8 {
    let m = u32::from_be_bytes(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) == 0 {
        ones as u8
    } else {
        0
    }
}

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
    pub fn open(ifname: &str) -> Result<Client, String> {
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
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// When the current message must be sent again (or the exchange given up); `None` when idle.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether an exchange is running.
    pub fn busy(&self) -> bool {
        self.state != State::Idle
    }

    /// Starts an exchange: sends a DISCOVER (asking for `prefer`, if given).
    ///
    /// # Errors
    /// The send's errno, as an exchange error.
    pub fn begin(&mut self, prefer: Option<[u8; 4]>, now: Instant) -> Result<(), String> {
        self.xid = self.xid.wrapping_add(0x9e37_79b9);
        self.prefer = prefer;
        self.state = State::Selecting;
        self.sent = 0;
        self.send(now)
    }

    fn send(&mut self, now: Instant) -> Result<(), String> {
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
    pub fn on_timeout(&mut self, now: Instant) -> Result<(), String> {
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
    pub fn on_readable(&mut self, now: Instant) -> Result<Option<Reply>, String> {
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
    pub fn exchange(&mut self, prefer: Option<[u8; 4]>) -> Result<Lease, String> {
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

/// The namespace side of `--net=lxc-user-nic`, in the calling thread's network namespace:
/// brings `ifname` up with `mtu`, obtains a lease by DHCP, then adds the address and the default
/// route, as upstream's `ip link set up`, DHCP exchange and `ip` configuration do.
///
/// # Errors
/// The first failing step, as one line.
pub fn configure(ifname: &str, mtu: u32) -> Result<(Lease, Client), String> {
    use sys::mount::Error;
    let mut nl = sys::netlink::Netlink::open()
        .map_err(Error::sys("open a netlink socket for", ifname))
        .map_err(|e| e.to_string())?;
    let index = nl
        .link_index(ifname)
        .map_err(Error::sys("look up interface", ifname))
        .map_err(|e| e.to_string())?;
    nl.set_link_up(index)
        .map_err(Error::sys("bring up", ifname))
        .map_err(|e| e.to_string())?;
    nl.set_mtu(index, mtu)
        .map_err(Error::sys("set mtu of", ifname))
        .map_err(|e| e.to_string())?;
    let mut client = Client::open(ifname)?;
    let lease = client.exchange(None)?;
    nl.add_addr_v4(index, lease.addr, lease.prefix)
        .map_err(Error::sys("add address to", ifname))
        .map_err(|e| e.to_string())?;
    nl.add_default_route_v4(index, lease.gateway)
        .map_err(Error::sys("add default route on", ifname))
        .map_err(|e| e.to_string())?;
    Ok((lease, client))
}

/// The [`proto::Msg::NetLease`] body for `lease` on the interface of `net`.
pub fn lease_frame(net: &proto::NetConfig, lease: &Lease) -> proto::NetConfig {
    proto::NetConfig {
        addr: lease.addr,
        prefix: lease.prefix,
        gateway: lease.gateway,
        dns: lease.dns,
        dns6: [0; 16],
        ..*net
    }
}

/// The fuzz target's body: any bytes into [`parse_reply`]; whatever parses must be consistent.
pub fn fuzz_reply(data: &[u8]) {
    if let Ok(reply) = parse_reply(data) {
        assert!(data.len() >= OPTIONS_AT);
        assert_eq!(data[0], 2);
        assert_eq!(reply.xid.to_be_bytes(), data[4..8]);
        let _ = Lease::of(&reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    /// A reply as lxc-net's dnsmasq sends it, with `options` after the cookie.
    fn reply(kind_code: u8, options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; OPTIONS_AT];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[10] = 0x80;
        b[16..20].copy_from_slice(&[10, 0, 3, 42]);
        b[20..24].copy_from_slice(&[10, 0, 3, 1]);
        b[28..34].copy_from_slice(&MAC);
        b[BOOTP_LEN..OPTIONS_AT].copy_from_slice(&COOKIE);
        b.extend_from_slice(&[53, 1, kind_code]);
        b.extend_from_slice(options);
        b
    }

    fn full_options() -> Vec<u8> {
        let mut o = vec![
            54, 4, 10, 0, 3, 1, // server id
            51, 4, 0, 0, 14, 16, // lease 3600
            0, 0, // pads
            1, 4, 255, 255, 255, 0, // mask
            3, 4, 10, 0, 3, 1, // router
            6, 8, 10, 0, 3, 1, 8, 8, 8, 8, // two DNS servers
            12, 3, b'b', b'o', b'x', // hostname, ignored
        ];
        o.push(255);
        o
    }

    #[test]
    fn reads_an_ack() {
        let r = parse_reply(&reply(kind::ACK, &full_options())).unwrap();
        assert_eq!(
            r,
            Reply {
                xid: 0x1234_5678,
                chaddr: MAC,
                yiaddr: [10, 0, 3, 42],
                kind: kind::ACK,
                mask: Some([255, 255, 255, 0]),
                router: Some([10, 0, 3, 1]),
                dns: Some([10, 0, 3, 1]),
                lease_secs: Some(3600),
                server_id: Some([10, 0, 3, 1]),
            }
        );
        assert_eq!(
            Lease::of(&r),
            Ok(Lease {
                addr: [10, 0, 3, 42],
                prefix: 24,
                gateway: [10, 0, 3, 1],
                dns: [10, 0, 3, 1],
                lease_secs: 3600,
            })
        );
    }

    #[test]
    fn first_value_wins_and_end_may_be_missing() {
        // No END option, a repeated mask: the datagram's end closes the options, the first
        // mask counts.
        let r = parse_reply(&reply(
            kind::OFFER,
            &[1, 4, 255, 255, 0, 0, 1, 4, 255, 0, 0, 0, 53, 1, kind::ACK],
        ))
        .unwrap();
        assert_eq!((r.kind, r.mask), (kind::OFFER, Some([255, 255, 0, 0])));
        // Everything after END is ignored, even garbage.
        let mut b = reply(kind::ACK, &[255, 1, 200]);
        b.extend_from_slice(&[9; 40]);
        assert_eq!(parse_reply(&b).unwrap().mask, None);
    }

    #[test]
    fn rejects_malformed_replies() {
        let check = |bytes: &[u8], want: ParseError| {
            assert_eq!(parse_reply(bytes), Err(want), "{bytes:?}");
        };
        check(&[], ParseError::Truncated(0));
        check(&[2; 239], ParseError::Truncated(239));
        let good = reply(kind::ACK, &full_options());
        let mut b = good.clone();
        b[0] = 1;
        check(&b, ParseError::NotAReply(1));
        let mut b = good.clone();
        b[2] = 16;
        check(&b, ParseError::NotEthernet);
        let mut b = good.clone();
        b[237] = 0;
        check(&b, ParseError::BadCookie);
        // An option cut in its length byte and in its data.
        check(&reply(kind::ACK, &[3]), ParseError::OptionOverrun(3));
        check(
            &reply(kind::ACK, &[6, 8, 1, 1, 1, 1]),
            ParseError::OptionOverrun(6),
        );
        check(
            &reply(kind::ACK, &[1, 3, 255, 255, 255]),
            ParseError::BadOptionLength(1, 3),
        );
        check(
            &reply(kind::ACK, &[3, 0]),
            ParseError::BadOptionLength(3, 0),
        );
        check(
            &reply(kind::ACK, &[6, 6, 1, 1, 1, 1, 2, 2]),
            ParseError::BadOptionLength(6, 6),
        );
        check(
            &reply(kind::ACK, &[51, 2, 0, 1]),
            ParseError::BadOptionLength(51, 2),
        );
        check(
            &reply(kind::ACK, &[54, 5, 1, 2, 3, 4, 5]),
            ParseError::BadOptionLength(54, 5),
        );
        let mut b = good.clone();
        b[OPTIONS_AT + 1] = 2;
        check(&b, ParseError::BadOptionLength(53, 2));
        // BOOTP without a DHCP message type.
        let mut b = good[..OPTIONS_AT].to_vec();
        b.push(255);
        check(&b, ParseError::NoMessageType);
        // Every prefix of a good reply is an error or a reply, never a panic.
        for n in 0..good.len() {
            let _ = parse_reply(&good[..n]);
        }
    }

    #[test]
    fn lease_checks_read_like_upstream() {
        let base = parse_reply(&reply(kind::ACK, &full_options())).unwrap();
        let check = |r: Reply, want: &str| assert_eq!(Lease::of(&r), Err(want.to_string()));
        check(
            Reply {
                kind: kind::NAK,
                ..base
            },
            "did not get DHCPACK",
        );
        check(
            Reply {
                yiaddr: [0; 4],
                ..base
            },
            "got zero YourIPAddr",
        );
        check(
            Reply {
                router: None,
                ..base
            },
            "got no Router",
        );
        check(Reply { dns: None, ..base }, "got no DNS");
        let l = Lease::of(&Reply {
            lease_secs: None,
            mask: None,
            ..base
        })
        .unwrap();
        assert_eq!((l.lease_secs, l.prefix), (3600, 0));
    }

    #[test]
    fn renewal_time_is_nine_tenths_of_the_lease() {
        let now = Instant::now();
        let mut l = Lease::of(&parse_reply(&reply(kind::ACK, &full_options())).unwrap()).unwrap();
        assert_eq!(l.renew_at(now), Some(now + Duration::from_secs(3240)));
        l.lease_secs = u32::MAX;
        assert_eq!(l.renew_at(now), None);
        l.lease_secs = 0;
        assert_eq!(l.renew_at(now), Some(now));
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_len([255, 255, 255, 0]), 24);
        assert_eq!(prefix_len([255, 255, 255, 255]), 32);
        assert_eq!(prefix_len([0, 0, 0, 0]), 0);
        assert_eq!(prefix_len([255, 255, 240, 0]), 20);
        assert_eq!(prefix_len([255, 0, 255, 0]), 0);
    }

    #[test]
    fn requests_are_built_byte_for_byte() {
        let mut out = [0u8; REQUEST_LEN];
        let n = encode_request(&mut out, kind::DISCOVER, 0xdead_beef, MAC, None, None);
        assert_eq!(n, 300);
        assert_eq!(
            &out[..12],
            &[1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x80, 0]
        );
        assert_eq!(&out[28..34], &MAC);
        assert_eq!(&out[BOOTP_LEN..OPTIONS_AT], &COOKIE);
        assert_eq!(
            &out[OPTIONS_AT..OPTIONS_AT + 15],
            &[53, 1, 1, 57, 2, 5, 220, 55, 5, 1, 3, 6, 51, 54, 255]
        );
        assert!(out[OPTIONS_AT + 15..].iter().all(|&b| b == 0));
        let n = encode_request(
            &mut out,
            kind::REQUEST,
            7,
            MAC,
            Some([10, 0, 3, 42]),
            Some([10, 0, 3, 1]),
        );
        assert_eq!(n, 300);
        assert_eq!(
            &out[OPTIONS_AT..OPTIONS_AT + 27],
            &[
                53, 1, 3, 57, 2, 5, 220, 50, 4, 10, 0, 3, 42, 54, 4, 10, 0, 3, 1, 55, 5, 1, 3, 6,
                51, 54, 255
            ]
        );
    }

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

    #[test]
    fn fuzz_body_takes_anything() {
        fuzz_reply(&[]);
        fuzz_reply(&reply(kind::ACK, &full_options()));
        fuzz_reply(&reply(kind::ACK, &[6, 255]));
    }
}
