//! TCP of the user-mode network, by layer-4 translation: a SYN from the namespace becomes a
//! non-blocking `connect()` on the host, answered with SYN-ACK once it succeeded (RST if it
//! failed), and from then on the bytes of the namespace's segments go to the host socket and
//! the host socket's bytes go out as segments.
//!
//! Toward the host, a segment's data is written to the socket at once and acknowledged as far
//! as the socket took it; the window we advertise is the socket's free send buffer.
//! Toward the namespace, data is peeked from the socket (`SO_PEEK_OFF` at the first byte not
//! yet sent) straight into the frame buffer, and only dropped from the socket once the
//! namespace acknowledged it: the socket's receive queue is the retransmission buffer, so a
//! connection owns no buffer. Lost segments are sent again after a timeout (go-back-N, the
//! timeout doubling) or after three duplicate acknowledgments. FIN and RST travel both ways;
//! either direction can close first.
//!
//! A published port (`--port-driver=gvisor-tap-vsock`) runs the same machine the other way
//! round: the parent accepted a host connection, and we open one into the namespace with a SYN
//! from the client's own address and port ([`Table::open_inbound`]); once the namespace's
//! SYN-ACK came, the connection is like any other.
//!
//! DNS over TCP to the gateway connects to the host's nameservers in the order given (the
//! ones being passed over last): a connect that fails (refused, unreachable) goes on to the
//! next, and the failed nameserver is reported ([`Table::take_dns_failures`]) to count
//! against its health.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, Shutdown, SocketFlags, SocketType, sockopt,
};

use super::wire::{self, Addr, Ip, TCP_LEN, Tcp, TcpOut, flags, seq_ge, seq_gt};
use super::{Config, KIND_TCP, Out, dns, tag, watch};

/// The most TCP connections at once one way: the namespace's own, or those of published ports'
/// clients. The table has [`SLOTS`], so a flood either way leaves the other some.
pub(crate) const MAX_CONNS: usize = 512;
/// The table's slots: [`MAX_CONNS`] and an eighth more.
const SLOTS: usize = MAX_CONNS + MAX_CONNS / 8;
/// The window scale we announce when the namespace offers one.
const OUR_WSCALE: u8 = 7;
/// The window we advertise at most (with scaling; 65535 without).
const MAX_WINDOW: u32 = 4 << 20;
/// A window below this is looked at again after [`WINDOW_RECHECK`], and a larger one then
/// announced: the namespace would otherwise wait for its persist timer.
const WINDOW_LOW: u32 = 512 << 10;
/// How soon a small window is looked at again (doubling, up to 256 times as long).
const WINDOW_RECHECK: Duration = Duration::from_millis(1);
/// The most data in one offloaded frame: what an IPv4 packet can hold after the headers.
const GSO_MAX: usize = 65535 - wire::IP_LEN - TCP_LEN;
/// First retransmission timeout, and its bounds.
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(10);
/// After this many timeouts in a row the connection is given up (reset both ways).
const MAX_RETRIES: u8 = 12;
/// SYNs sent again into the namespace before a published port's connection is given up
/// (about 25 seconds with the doubling timeout).
const SYN_RETRIES: u8 = 6;
/// How soon to try again when the tap's queue was full.
const TAP_RETRY: Duration = Duration::from_millis(2);
/// Without `SO_PEEK_OFF` every peek starts at the oldest unacknowledged byte, so what is in
/// flight must fit the frame buffer with the next segment.
const NO_PEEK_OFF_INFLIGHT: u32 = 32 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The host `connect()` is under way.
    Connecting,
    /// SYN-ACK sent, not acknowledged yet.
    SynSent,
    /// A published port's connection: our SYN went into the namespace, no SYN-ACK yet.
    SynOut,
    /// Data moves.
    Open,
}

struct Conn {
    sock: OwnedFd,
    child: (Addr, u16),
    remote: (Addr, u16),
    state: State,
    /// A published port's connection, into the namespace.
    inbound: bool,
    // Namespace → host.
    rcv_nxt: u32,
    child_fin: bool,
    write_blocked: bool,
    ack_due: bool,
    // Host → namespace.
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// The highest sequence number sent so far (`snd_nxt` goes back on a retransmission).
    snd_max: u32,
    snd_wnd: u32,
    child_ws: u8,
    our_ws: u8,
    mss: usize,
    host_eof: bool,
    fin_sent: bool,
    /// The sequence number of our FIN, once it was sent.
    fin_seq: Option<u32>,
    peek_off: bool,
    rto: Duration,
    rto_at: Option<Instant>,
    /// The window last advertised, and when to see whether it has grown.
    adv_wnd: u32,
    wnd_check_at: Option<Instant>,
    /// How many looks in a row found the window as small: each waits twice as long (a host
    /// reader that stopped reading must not keep us awake).
    wnd_backoff: u8,
    retries: u8,
    dupacks: u8,
    /// DNS to the gateway: the nameservers, and which one the connect is to.
    dns: Option<(dns::Servers, u8)>,
}

impl Conn {
    /// A connection in state `Connecting` with nothing sent or received yet.
    fn new(
        sock: OwnedFd,
        child: (Addr, u16),
        remote: (Addr, u16),
        iss: u32,
        peek_off: bool,
    ) -> Conn {
        Conn {
            sock,
            child,
            remote,
            state: State::Connecting,
            inbound: false,
            rcv_nxt: 0,
            child_fin: false,
            write_blocked: false,
            ack_due: false,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            child_ws: 0,
            our_ws: 0,
            mss: 536,
            host_eof: false,
            fin_sent: false,
            fin_seq: None,
            peek_off,
            rto: RTO_MIN,
            rto_at: None,
            adv_wnd: 0,
            wnd_check_at: None,
            wnd_backoff: 0,
            retries: 0,
            dupacks: 0,
            dns: None,
        }
    }

    /// Bytes sent and not yet acknowledged, not counting SYN or FIN.
    fn inflight(&self) -> u32 {
        let end = if self.fin_sent {
            self.snd_nxt.wrapping_sub(1)
        } else {
            self.snd_nxt
        };
        end.wrapping_sub(self.snd_una)
    }

    /// Whether our FIN has been acknowledged.
    fn fin_acked(&self) -> bool {
        self.fin_seq
            .is_some_and(|f| self.snd_una == f.wrapping_add(1))
    }

    /// The namespace's SYN-ACK `t` answered our SYN: the options it chose, then open.
    fn established(&mut self, t: &Tcp<'_>) {
        self.rcv_nxt = t.seq.wrapping_add(1);
        self.snd_una = t.ack;
        match t.wscale {
            Some(ws) => self.child_ws = ws.min(14),
            None => self.our_ws = 0,
        }
        self.mss = usize::from(t.mss.unwrap_or(536)).max(64);
        // The window of a SYN-ACK is never scaled.
        self.snd_wnd = u32::from(t.window);
        self.state = State::Open;
        self.rto_at = None;
        self.rto = RTO_MIN;
        self.retries = 0;
    }

    /// Moves `snd_nxt` forward to `seq`, keeping `snd_max` the highest.
    fn sent_up_to(&mut self, seq: u32) {
        self.snd_nxt = seq;
        if seq_gt(seq, self.snd_max) {
            self.snd_max = seq;
        }
    }

    /// The window we advertise for the host socket's free send buffer.
    fn window(&self) -> u32 {
        if self.write_blocked || self.child_fin {
            return 0;
        }
        let size = sockopt::socket_send_buffer_size(&self.sock).unwrap_or(0) as u32;
        let queued = sys::net::outq(self.sock.as_fd()).unwrap_or(0);
        // The kernel's buffer accounting includes its bookkeeping: count half of it as room
        // for data. The socket does not tell us when it drains (only after a refused write),
        // so a small window is looked at again shortly (`wnd_check_at`).
        let free = (size / 2).saturating_sub(queued);
        let max = if self.our_ws == 0 { 65535 } else { MAX_WINDOW };
        free.min(max)
    }

    fn segment(&self, seq: u32, fl: u8) -> TcpOut {
        // The window of a SYN is never scaled.
        let shift = if fl & flags::SYN != 0 { 0 } else { self.our_ws };
        self.segment_with(seq, fl, (self.window() >> shift).min(65535) as u16)
    }

    fn segment_with(&self, seq: u32, fl: u8, window: u16) -> TcpOut {
        TcpOut {
            src: self.remote,
            dst: self.child,
            seq,
            ack: self.rcv_nxt,
            flags: fl,
            window,
            syn_opts: None,
        }
    }

    /// Sends a segment without data; whether it went.
    fn send_flags(&self, out: &mut Out<'_>, seq: u32, fl: u8) -> bool {
        let mut seg = self.segment(seq, fl);
        if fl & flags::SYN != 0 {
            let mss = (out_mss(out, &self.child.0) as u16).min(65495);
            seg.syn_opts = Some((mss, (self.our_ws > 0).then_some(self.our_ws)));
        }
        let len = wire::put_tcp(&mut out.buf[Out::L4..], &seg, 0);
        out.send_ip(self.remote.0, self.child.0, wire::PROTO_TCP, len)
    }

    /// Sends an acknowledgment with the current window (`always`), or only if the window grew
    /// well beyond the one last advertised; keeps looking while it is small.
    fn window_update(&mut self, out: &mut Out<'_>, now: Instant, always: bool) {
        let window = self.window();
        let grew = window
            >= self
                .adv_wnd
                .saturating_mul(2)
                .max(self.adv_wnd + (64 << 10));
        if always || grew {
            let field = (window >> self.our_ws).min(65535) as u16;
            let seg = self.segment_with(self.snd_nxt, flags::ACK, field);
            let len = wire::put_tcp(&mut out.buf[Out::L4..], &seg, 0);
            out.send_ip(self.remote.0, self.child.0, wire::PROTO_TCP, len);
            self.adv_wnd = u32::from(field) << self.our_ws;
            self.wnd_backoff = 0;
        } else {
            self.wnd_backoff = (self.wnd_backoff + 1).min(8);
        }
        let max = if self.our_ws == 0 {
            32 << 10
        } else {
            WINDOW_LOW
        };
        self.wnd_check_at = (self.adv_wnd < max && !self.child_fin && self.state == State::Open)
            .then(|| now + WINDOW_RECHECK * (1 << self.wnd_backoff));
    }

    fn arm(&mut self, now: Instant) {
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
    }

    /// Peeks up to `want` bytes at byte `offset` of the socket's queue into the start of
    /// `buf`. Without `SO_PEEK_OFF` the peek starts at the oldest byte and the tail is moved
    /// down (the caller keeps `offset + want` within `buf`).
    fn peek(&self, offset: u32, buf: &mut [u8], want: usize) -> Result<usize, Errno> {
        let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
        if self.peek_off {
            return retry(|| rustix::net::recv(&self.sock, &mut buf[..want], flags))
                .map(|(n, _)| n);
        }
        let offset = offset as usize;
        let total = (offset + want).min(buf.len());
        let n = retry(|| rustix::net::recv(&self.sock, &mut buf[..total], flags))?.0;
        if n == 0 && offset == 0 {
            return Ok(0);
        }
        if n <= offset {
            return Err(Errno::AGAIN);
        }
        buf.copy_within(offset..n, 0);
        Ok(n - offset)
    }

    /// Sends what the host socket holds and the namespace's window allows; then the FIN once
    /// the host closed and everything went. `Err` when the connection must be reset.
    fn pump(&mut self, out: &mut Out<'_>, now: Instant) -> Result<(), ()> {
        if self.state != State::Open || self.fin_sent {
            return Ok(());
        }
        let mss = self.mss.min(out_mss(out, &self.child.0));
        let mut offset = self.inflight();
        // One window for the whole burst: asking the socket per segment costs two syscalls.
        let window = (self.window() >> self.our_ws).min(65535) as u16;
        self.adv_wnd = u32::from(window) << self.our_ws;
        if self.peek_off && sys::net::set_peek_offset(self.sock.as_fd(), offset as i32).is_err() {
            return Err(());
        }
        loop {
            let mut room = self.snd_wnd.saturating_sub(offset);
            if !self.peek_off {
                room = room.min(NO_PEEK_OFF_INFLIGHT.saturating_sub(offset));
            }
            if room == 0 {
                if self.snd_wnd == 0 && offset == 0 {
                    // The namespace's window is shut: probe it now and then, in case the
                    // update that opens it is lost.
                    self.arm(now);
                }
                break;
            }
            // With offloads, one frame of up to 64 KiB that the kernel cuts at the MSS.
            let largest = if out.gso() { GSO_MAX } else { mss };
            let want = (room as usize).min(largest);
            let at = Out::L4 + TCP_LEN;
            let n = match self.peek(offset, &mut out.buf[at..], want) {
                Ok(0) => {
                    self.host_eof = true;
                    break;
                }
                Ok(n) => n,
                Err(Errno::AGAIN) => break,
                Err(_) => return Err(()),
            };
            let seg = self.segment_with(self.snd_nxt, flags::ACK | flags::PSH, window);
            let went = if n > mss {
                let len = wire::put_tcp_partial(&mut out.buf[Out::L4..], &seg, n);
                out.send_tcp_gso(self.remote.0, self.child.0, len, mss)
            } else {
                let len = wire::put_tcp(&mut out.buf[Out::L4..], &seg, n);
                out.send_ip(self.remote.0, self.child.0, wire::PROTO_TCP, len)
            };
            if !went {
                // The tap is full: try again shortly from where we are.
                self.rto_at = Some(now + TAP_RETRY);
                if self.peek_off {
                    let _ = sys::net::set_peek_offset(self.sock.as_fd(), offset as i32);
                }
                return Ok(());
            }
            self.ack_due = false;
            self.sent_up_to(self.snd_nxt.wrapping_add(n as u32));
            offset += n as u32;
            self.arm(now);
        }
        if self.host_eof && !self.fin_sent {
            if self.send_flags(out, self.snd_nxt, flags::FIN | flags::ACK) {
                self.fin_seq = Some(self.snd_nxt);
                self.sent_up_to(self.snd_nxt.wrapping_add(1));
                self.fin_sent = true;
                self.ack_due = false;
                self.arm(now);
            } else {
                self.rto_at = Some(now + TAP_RETRY);
            }
        }
        Ok(())
    }

    /// Drops `n` acknowledged bytes from the host socket.
    fn discard(&self, mut n: u32, scratch: &mut [u8]) {
        while n > 0 {
            let chunk = (n as usize).min(scratch.len());
            match retry(|| {
                rustix::net::recv(
                    &self.sock,
                    &mut scratch[..chunk],
                    RecvFlags::TRUNC | RecvFlags::DONTWAIT,
                )
            }) {
                Ok((0, _)) | Err(_) => return,
                Ok((k, _)) => n = n.saturating_sub(k.min(chunk) as u32),
            }
        }
    }
}

fn retry<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

/// The largest segment the tap takes: the MTU less the IPv4 and TCP headers.
fn out_mss(out: &Out<'_>, child: &Addr) -> usize {
    (out.mtu as usize)
        .saturating_sub(wire::ip_len(child) + TCP_LEN)
        .max(536)
}

/// The connection table.
pub(crate) struct Table {
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    pending_acks: Vec<usize>,
    warned: bool,
    seed: u32,
    /// Nameservers a DNS connect failed to, not yet taken.
    dns_failures: [Option<SocketAddr>; dns::MAX_NS],
}

/// Connects a new non-blocking socket to `addr`: the socket and whether it has `SO_PEEK_OFF`,
/// or `None` when the socket cannot be made or the connect failed at once.
fn connect(addr: &SocketAddr) -> Option<(OwnedFd, bool)> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let sock = rustix::net::socket_with(family, SocketType::STREAM, flags, None).ok()?;
    let _ = sockopt::set_tcp_nodelay(&sock, true);
    let peek_off = sys::net::set_peek_offset(sock.as_fd(), 0).is_ok();
    match rustix::net::connect(&sock, addr) {
        Ok(()) | Err(Errno::INPROGRESS) => Some((sock, peek_off)),
        Err(_) => None,
    }
}

impl Table {
    /// An empty table, its slots allocated now.
    pub(crate) fn new(cfg: &Config) -> Table {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Table {
            conns: (0..SLOTS).map(|_| None).collect(),
            generations: vec![0; SLOTS],
            pending_acks: Vec::with_capacity(SLOTS),
            warned: false,
            seed: t ^ u32::from_be_bytes(cfg.child),
            dns_failures: [None; dns::MAX_NS],
        }
    }

    /// The nameservers a DNS connect failed to since the last call.
    pub(crate) fn take_dns_failures(&mut self) -> [Option<SocketAddr>; dns::MAX_NS] {
        std::mem::take(&mut self.dns_failures)
    }

    /// Nameserver `ns` refused a DNS connect (or could not be reached).
    fn dns_failed(&mut self, ns: SocketAddr) {
        if let Some(slot) = self.dns_failures.iter_mut().find(|f| f.is_none()) {
            *slot = Some(ns);
        }
    }

    /// A connect to nameserver `from` of `servers` or, when that fails at once, to the next:
    /// the socket, whether it has `SO_PEEK_OFF`, and which nameserver it is to.
    fn dns_connect(&mut self, servers: &dns::Servers, from: usize) -> Option<(OwnedFd, bool, u8)> {
        for i in from..servers.len() {
            let ns = servers.get(i)?;
            match connect(&ns) {
                Some((sock, peek_off)) => return Some((sock, peek_off, i as u8)),
                None => self.dns_failed(ns),
            }
        }
        None
    }

    #[cfg(test)]
    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    #[cfg(test)]
    /// Whether no connection is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest retransmission timer.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flatten()
            .flat_map(|c| [c.rto_at, c.wnd_check_at])
            .flatten()
            .min()
    }

    fn close(&mut self, index: usize, ep: &OwnedFd, reset_host: bool) {
        if let Some(c) = self.conns[index].take() {
            let _ = epoll::delete(ep, &c.sock);
            if reset_host {
                // Linger 0: close() sends RST instead of FIN.
                let _ = sockopt::set_socket_linger(&c.sock, Some(Duration::ZERO));
            }
        }
    }

    /// Resets the namespace's side of connection `index` and closes it.
    fn reset(&mut self, index: usize, out: &mut Out<'_>, ep: &OwnedFd) {
        if let Some(c) = &self.conns[index] {
            c.send_flags(out, c.snd_nxt, flags::RST | flags::ACK);
        }
        self.close(index, ep, true);
    }

    /// A segment from the namespace.
    #[allow(clippy::wrong_self_convention, reason = "input from the child")]
    pub(crate) fn from_child(
        &mut self,
        ip: &Ip<'_>,
        t: &Tcp<'_>,
        out: &mut Out<'_>,
        cfg: &Config,
        ep: &OwnedFd,
        now: Instant,
    ) {
        let child = (ip.src, t.src_port);
        let remote = (ip.dst, t.dst_port);
        let found = self.conns.iter().position(|c| {
            c.as_ref()
                .is_some_and(|c| c.child == child && c.remote == remote)
        });
        let Some(index) = found else {
            if t.flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN {
                self.open(child, remote, t, out, cfg, ep, now);
            } else if t.flags & flags::RST == 0 {
                // Nothing of ours: reset, as a host would.
                reset_unknown(out, child, remote, t);
            }
            return;
        };
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        if t.flags & flags::RST != 0 {
            self.close(index, ep, true);
            return;
        }
        if c.state == State::SynOut {
            if t.flags & (flags::SYN | flags::ACK) == flags::SYN | flags::ACK
                && t.ack == c.iss.wrapping_add(1)
            {
                c.established(t);
                c.send_flags(out, c.snd_nxt, flags::ACK);
                if c.pump(out, now).is_err() {
                    self.reset(index, out, ep);
                }
            } else if t.flags & flags::ACK != 0 && t.ack != c.iss.wrapping_add(1) {
                // Not for this SYN: the server's TIME_WAIT of an earlier connection from the
                // same client address and port, whose sequence numbers ours did not pass.
                // Reset it, as a client in SYN-SENT does (RFC 9293 3.10.7.3), and ask again at
                // once: without this the SYN is answered so until it gives up.
                reset_unknown(out, c.child, c.remote, t);
                c.send_flags(out, c.iss, flags::SYN);
            }
            return;
        }
        if t.flags & flags::SYN != 0 {
            // A retransmitted SYN: our SYN-ACK was lost.
            if c.state == State::SynSent {
                c.send_flags(out, c.iss, flags::SYN | flags::ACK);
            }
            return;
        }
        if c.state == State::Connecting || t.flags & flags::ACK == 0 {
            return;
        }
        // Acknowledgment.
        let window = u32::from(t.window) << c.child_ws;
        if c.state == State::SynSent {
            if t.ack != c.iss.wrapping_add(1) {
                return;
            }
            c.state = State::Open;
            c.snd_una = t.ack;
            c.rto_at = None;
            c.retries = 0;
        } else if seq_gt(t.ack, c.snd_una) && seq_ge(c.snd_max, t.ack) {
            let acked = t.ack.wrapping_sub(c.snd_una);
            let fin_now_acked = c.fin_seq.is_some_and(|f| t.ack == f.wrapping_add(1));
            let data = acked - u32::from(fin_now_acked);
            // After going back, an acknowledgment can cover what was sent before.
            if seq_gt(t.ack, c.snd_nxt) {
                c.snd_nxt = t.ack;
                c.fin_sent = fin_now_acked;
                c.host_eof |= fin_now_acked;
            }
            c.discard(data, &mut out.buf[..]);
            c.snd_una = t.ack;
            c.retries = 0;
            c.dupacks = 0;
            c.rto = RTO_MIN;
            c.rto_at = (c.snd_una != c.snd_max).then(|| now + c.rto);
        } else if t.ack == c.snd_una
            && t.payload.is_empty()
            && t.flags & flags::FIN == 0
            && window == c.snd_wnd
            && c.snd_max != c.snd_una
        {
            c.dupacks = c.dupacks.saturating_add(1);
            if c.dupacks == 3 {
                // Fast retransmit: go back to the first unacknowledged byte.
                c.snd_nxt = c.snd_una;
                c.fin_sent = false;
                c.host_eof = false;
            }
        }
        c.snd_wnd = window;
        // Data.
        let mut fin_seq = t.seq;
        if !t.payload.is_empty() {
            let skip = c.rcv_nxt.wrapping_sub(t.seq);
            if c.child_fin {
                c.ack_due = true;
            } else if seq_gt(t.seq, c.rcv_nxt) {
                // Out of order: ask again for what we miss.
                c.send_flags(out, c.snd_nxt, flags::ACK);
                return;
            } else if (skip as usize) < t.payload.len() {
                let data = &t.payload[skip as usize..];
                let sent = match retry(|| {
                    rustix::net::send(&c.sock, data, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)
                }) {
                    Ok(n) => n,
                    Err(Errno::AGAIN) => 0,
                    Err(_) => {
                        self.reset(index, out, ep);
                        return;
                    }
                };
                c.rcv_nxt = c.rcv_nxt.wrapping_add(sent as u32);
                c.write_blocked = sent < data.len();
                c.ack_due = true;
            } else {
                c.ack_due = true;
            }
            fin_seq = t.seq.wrapping_add(t.payload.len() as u32);
        }
        if t.flags & flags::FIN != 0 {
            if !c.child_fin && fin_seq == c.rcv_nxt {
                c.child_fin = true;
                c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
                let _ = rustix::net::shutdown(&c.sock, Shutdown::Write);
            }
            c.ack_due = true;
        }
        if c.child_fin && c.fin_acked() {
            c.send_flags(out, c.snd_nxt, flags::ACK);
            self.close(index, ep, false);
            return;
        }
        if c.pump(out, now).is_err() {
            self.reset(index, out, ep);
            return;
        }
        if c.ack_due && !self.pending_acks.contains(&index) {
            self.pending_acks.push(index);
        }
    }

    /// A free slot for a connection in from a published port (`inbound`) or out from the
    /// namespace, or `None` (counted, warned about once) when that way has [`MAX_CONNS`].
    fn free_slot(&mut self, out: &mut Out<'_>, inbound: bool) -> Option<usize> {
        let open = self.conns.iter().flatten();
        let index = (open.filter(|c| c.inbound == inbound).count() < MAX_CONNS)
            .then(|| self.conns.iter().position(Option::is_none))
            .flatten();
        if index.is_none() {
            out.counters.tcp_over_limit += 1;
            if !self.warned {
                self.warned = true;
                crate::warn(&format!(
                    "user-mode network: more than {MAX_CONNS} TCP connections{}, refusing new ones",
                    if inbound { " from published ports" } else { "" }
                ));
            }
        }
        index
    }

    /// A published port accepted `sock` from a host client: opens a connection from `remote`
    /// (the client's address, or the gateway's) to `child` in the namespace by sending the
    /// SYN. Whether it was taken; if not, the client is reset.
    pub(crate) fn open_inbound(
        &mut self,
        sock: OwnedFd,
        child: (Addr, u16),
        remote: (Addr, u16),
        out: &mut Out<'_>,
        ep: &OwnedFd,
        now: Instant,
    ) -> bool {
        let same = |c: &Option<Conn>| {
            c.as_ref()
                .is_some_and(|c| c.child == child && c.remote == remote)
        };
        if let Some(old) = self.conns.iter().position(same) {
            // The host gave the client's address and port out again (a loopback client shows
            // as the gateway with its own port): if the old connection's host socket has no
            // peer any more, it is over on the host's side while the namespace still closes
            // it. Reset that, rather than the new client.
            let gone = self.conns[old]
                .as_ref()
                .is_some_and(|c| rustix::net::getpeername(&c.sock).is_err());
            if gone {
                self.reset(old, out, ep);
            }
        }
        let taken = self.conns.iter().any(same);
        let index = if taken {
            None
        } else {
            self.free_slot(out, true)
        };
        let Some(index) = index else {
            let _ = sockopt::set_socket_linger(&sock, Some(Duration::ZERO));
            return false;
        };
        let _ = sockopt::set_tcp_nodelay(&sock, true);
        let peek_off = sys::net::set_peek_offset(sock.as_fd(), 0).is_ok();
        self.generations[index] = self.generations[index].wrapping_add(1);
        let interest = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ET;
        let tagged = tag(KIND_TCP, self.generations[index], index);
        if !watch(ep, sock.as_fd(), tagged, interest) {
            return false;
        }
        let iss = self.next_iss(remote.1);
        let mut c = Conn::new(sock, child, remote, iss, peek_off);
        c.state = State::SynOut;
        c.inbound = true;
        c.our_ws = OUR_WSCALE;
        c.sent_up_to(iss.wrapping_add(1));
        if !c.send_flags(out, iss, flags::SYN) {
            c.rto_at = Some(now + TAP_RETRY);
        }
        c.arm(now);
        self.conns[index] = Some(c);
        true
    }

    /// A fresh initial sequence number.
    fn next_iss(&mut self, port: u16) -> u32 {
        self.seed = self
            .seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        self.seed ^ u32::from(port) << 16
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        child: (Addr, u16),
        remote: (Addr, u16),
        t: &Tcp<'_>,
        out: &mut Out<'_>,
        cfg: &Config,
        ep: &OwnedFd,
        now: Instant,
    ) {
        let Some(addr) = cfg.host_addr(remote.0, remote.1) else {
            reset_unknown(out, child, remote, t);
            return;
        };
        let Some(index) = self.free_slot(out, false) else {
            reset_unknown(out, child, remote, t);
            return;
        };
        let dns = remote.1 == 53 && cfg.is_gateway(&remote.0) && cfg.nameservers.len() > 0;
        let connected = if dns {
            self.dns_connect(&cfg.nameservers, 0)
                .map(|(sock, peek_off, i)| (sock, peek_off, Some((cfg.nameservers, i))))
        } else {
            connect(&addr).map(|(sock, peek_off)| (sock, peek_off, None))
        };
        let Some((sock, peek_off, dns)) = connected else {
            reset_unknown(out, child, remote, t);
            return;
        };
        self.generations[index] = self.generations[index].wrapping_add(1);
        let interest = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ET;
        if !watch(
            ep,
            sock.as_fd(),
            tag(KIND_TCP, self.generations[index], index),
            interest,
        ) {
            reset_unknown(out, child, remote, t);
            return;
        }
        let iss = self.next_iss(t.src_port);
        let mut c = Conn::new(sock, child, remote, iss, peek_off);
        c.dns = dns;
        if let Some(ws) = t.wscale {
            (c.child_ws, c.our_ws) = (ws, OUR_WSCALE);
        }
        c.rcv_nxt = t.seq.wrapping_add(1);
        // The window of a SYN is never scaled.
        c.snd_wnd = u32::from(t.window);
        c.mss = usize::from(t.mss.unwrap_or(536)).max(64);
        self.conns[index] = Some(c);
        let _ = now;
    }

    /// Something happened on connection `index`'s host socket.
    pub(crate) fn socket_ready(
        &mut self,
        index: usize,
        generation: u32,
        ev: epoll::EventFlags,
        out: &mut Out<'_>,
        ep: &OwnedFd,
        now: Instant,
    ) {
        if self.generations.get(index).map(|g| g & 0xff_ffff) != Some(generation) {
            return;
        }
        let Some(c) = self.conns[index].as_mut() else {
            return;
        };
        if c.state == State::SynOut {
            // The host side waits in the socket until the namespace answered.
            return;
        }
        if c.state == State::Connecting {
            if !ev.intersects(
                epoll::EventFlags::OUT | epoll::EventFlags::ERR | epoll::EventFlags::HUP,
            ) {
                return;
            }
            match sockopt::socket_error(&c.sock) {
                Ok(Ok(())) => {
                    c.state = State::SynSent;
                    c.sent_up_to(c.iss.wrapping_add(1));
                    if !c.send_flags(out, c.iss, flags::SYN | flags::ACK) {
                        c.rto_at = Some(now + TAP_RETRY);
                    }
                    c.arm(now);
                }
                _ => {
                    if let Some((servers, i)) = c.dns {
                        // DNS: on to the next nameserver, on a new socket under the same tag.
                        let from = usize::from(i);
                        if let Some(ns) = servers.get(from) {
                            self.dns_failed(ns);
                        }
                        if let Some((sock, peek_off, next)) = self.dns_connect(&servers, from + 1) {
                            let interest = epoll::EventFlags::IN
                                | epoll::EventFlags::OUT
                                | epoll::EventFlags::RDHUP
                                | epoll::EventFlags::ET;
                            let t = tag(KIND_TCP, self.generations[index], index);
                            if watch(ep, sock.as_fd(), t, interest)
                                && let Some(c) = self.conns[index].as_mut()
                            {
                                let _ = epoll::delete(ep, &c.sock);
                                (c.sock, c.peek_off) = (sock, peek_off);
                                c.dns = Some((servers, next));
                                return;
                            }
                        }
                    }
                    let Some(c) = self.conns[index].as_mut() else {
                        return;
                    };
                    let (seq, ack) = (0, c.rcv_nxt);
                    let seg = TcpOut {
                        src: c.remote,
                        dst: c.child,
                        seq,
                        ack,
                        flags: flags::RST | flags::ACK,
                        window: 0,
                        syn_opts: None,
                    };
                    let len = wire::put_tcp(&mut out.buf[Out::L4..], &seg, 0);
                    out.send_ip(c.remote.0, c.child.0, wire::PROTO_TCP, len);
                    self.close(index, ep, false);
                }
            }
            return;
        }
        if ev.contains(epoll::EventFlags::OUT) && c.write_blocked {
            // Room in the send buffer again: tell the namespace the window is open, and
            // repeat it three times so that it resends what the socket refused now (fast
            // retransmit) instead of after its timeout.
            c.write_blocked = false;
            for _ in 0..4 {
                c.send_flags(out, c.snd_nxt, flags::ACK);
            }
        }
        if c.pump(out, now).is_err() {
            self.reset(index, out, ep);
            return;
        }
        if ev.contains(epoll::EventFlags::ERR)
            && sockopt::socket_error(&c.sock).is_ok_and(|e| e.is_err())
        {
            self.reset(index, out, ep);
        }
    }

    /// Sends the acknowledgments that segments of this batch left due.
    pub(crate) fn flush_acks(&mut self, out: &mut Out<'_>, now: Instant) {
        for i in self.pending_acks.drain(..) {
            if let Some(c) = self.conns[i].as_mut()
                && c.ack_due
            {
                c.ack_due = false;
                c.window_update(out, now, true);
            }
        }
    }

    /// Retransmits what timed out, gives up on connections that keep timing out.
    pub(crate) fn timers(&mut self, out: &mut Out<'_>, ep: &OwnedFd, now: Instant) {
        for index in 0..self.conns.len() {
            let Some(c) = self.conns[index].as_mut() else {
                continue;
            };
            if c.wnd_check_at.is_some_and(|t| now >= t) {
                c.window_update(out, now, false);
            }
            if c.rto_at.is_none_or(|t| now < t) {
                continue;
            }
            c.rto_at = None;
            c.retries += 1;
            if c.retries > MAX_RETRIES {
                self.reset(index, out, ep);
                continue;
            }
            c.rto = (c.rto * 2).min(RTO_MAX);
            match c.state {
                State::Connecting => {}
                State::SynSent => {
                    c.send_flags(out, c.iss, flags::SYN | flags::ACK);
                    c.arm(now);
                }
                State::SynOut if c.retries > SYN_RETRIES => self.reset(index, out, ep),
                State::SynOut => {
                    c.send_flags(out, c.iss, flags::SYN);
                    c.arm(now);
                }
                State::Open if c.snd_wnd == 0 && c.snd_una == c.snd_max => {
                    // A window probe: an old sequence number, answered with the window.
                    c.retries = 0;
                    c.send_flags(out, c.snd_nxt.wrapping_sub(1), flags::ACK);
                    c.arm(now);
                }
                State::Open => {
                    // Go back to the first unacknowledged byte.
                    c.snd_nxt = c.snd_una;
                    if c.fin_sent {
                        c.fin_sent = false;
                        c.host_eof = false;
                    }
                    if c.pump(out, now).is_err() {
                        self.reset(index, out, ep);
                    }
                }
            }
        }
    }
}

/// Answers a segment that belongs to no connection with RST, as RFC 793 says.
fn reset_unknown(out: &mut Out<'_>, child: (Addr, u16), remote: (Addr, u16), t: &Tcp<'_>) {
    let syn_fin = u32::from(t.flags & flags::SYN != 0) + u32::from(t.flags & flags::FIN != 0);
    let seg = if t.flags & flags::ACK != 0 {
        TcpOut {
            src: remote,
            dst: child,
            seq: t.ack,
            ack: 0,
            flags: flags::RST,
            window: 0,
            syn_opts: None,
        }
    } else {
        TcpOut {
            src: remote,
            dst: child,
            seq: 0,
            ack: t.seq.wrapping_add(t.payload.len() as u32 + syn_fin),
            flags: flags::RST | flags::ACK,
            window: 0,
            syn_opts: None,
        }
    };
    let len = wire::put_tcp(&mut out.buf[Out::L4..], &seg, 0);
    out.send_ip(remote.0, child.0, wire::PROTO_TCP, len);
}
