//! UDP of the user-mode network: one connected host socket per flow (the namespace's address
//! and port, and the address and port it sends to), in a fixed table; a flow idle for a minute
//! (DNS: ten seconds) is closed. Replies from the host socket go back to the namespace as if
//! from the address it sent to, so DNS sent to the gateway comes back from the gateway.
//! A DNS flow's socket is not connected: each query goes to the nameserver [`dns`] picks, and
//! again to the next one when no answer came within [`dns::RETRY`]; answers are taken from
//! any of the host's nameservers. With an IPv6 nameserver among them, a DNS flow's socket is
//! IPv6 and reaches the IPv4 ones too (as `::ffff:a.b.c.d`); a failure answer (SERVFAIL,
//! REFUSED) is not passed on while a nameserver not tried yet for the query is left, which gets
//! it at once ([`dns::Pending::answer`]).
//!
//! A published UDP port makes flows the other way ([`Table::inbound`]): a host client's
//! datagram goes into the namespace from the client's address and port, and the namespace's
//! replies leave through the published socket (a duplicate of it, which the flow owns) to that
//! client.
//!
//! A host socket of ours reports the ICMP errors the host gets for what it sent (`IP_RECVERR`,
//! `IPV6_RECVERR`): port, host and network unreachable go on to the namespace as ICMP or ICMPv6
//! destination-unreachable messages from the address it sent to, quoting the flow's last
//! datagram (a fixed copy of its headers), at most one a second per flow after a burst of six,
//! as the kernel's `icmp_ratelimit`. So a client of a closed port learns it at once
//! (`ECONNREFUSED`), as it would on a wire.

use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketFlags, SocketType};

use super::flows::Flows;
use super::wire::{self, Addr, Ip, UDP_LEN, Udp, unmapped};
use super::{Config, KIND_UDP, Out, dns, tag, watch};

/// The most UDP flows at once one way: the namespace's own, or those of published ports'
/// clients. The table has [`SLOTS`], so a flood either way leaves the other some.
pub(crate) const MAX_FLOWS: usize = 256;
/// The table's slots: [`MAX_FLOWS`] and an eighth more.
const SLOTS: usize = MAX_FLOWS + MAX_FLOWS / 8;
/// How long a flow lives without traffic.
pub(crate) const IDLE: Duration = Duration::from_secs(60);
/// How long a DNS flow lives without traffic: a resolver that has not answered by then never
/// will, and queries come from a new port each time.
pub(crate) const DNS_IDLE: Duration = Duration::from_secs(10);
/// ICMP errors toward the namespace: one per flow per this long…
const ERROR_INTERVAL: Duration = Duration::from_secs(1);
/// …after a burst of this many (the kernel's `icmp_ratelimit` and `XRLIM_BURST_FACTOR`).
const ERROR_BURST: u32 = 6;

/// A token bucket in time: `allow` takes [`ERROR_INTERVAL`] of credit, which grows with the
/// time that passes, up to [`ERROR_BURST`] intervals.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    credit: Duration,
    at: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            credit: ERROR_INTERVAL * ERROR_BURST,
            at: now,
        }
    }

    /// Whether one more error may go at `now`.
    fn allow(&mut self, now: Instant) -> bool {
        self.credit = (self.credit + now.saturating_duration_since(self.at))
            .min(ERROR_INTERVAL * ERROR_BURST);
        self.at = self.at.max(now);
        let ok = self.credit >= ERROR_INTERVAL;
        if ok {
            self.credit -= ERROR_INTERVAL;
        }
        ok
    }
}

struct Flow {
    sock: OwnedFd,
    child: (Addr, u16),
    remote: (Addr, u16),
    idle: Duration,
    last: Instant,
    /// A published port's flow: the client replies go to, and the port's id.
    reply_to: Option<(SocketAddrAny, u32)>,
    /// The IP header and first 8 bytes of the last datagram from the namespace, quoted in an
    /// ICMP error about it.
    quote: [u8; wire::QUOTE_MAX],
    quote_len: u8,
    /// How many ICMP errors may go to the namespace.
    errors: Bucket,
    /// DNS to the gateway: the socket is not connected, queries go where [`dns`] says.
    dns: bool,
}

impl Flow {
    /// Empties the socket's error queue of what no pending error stands for (errors of the
    /// socket's own, which the kernel queues without setting it), or epoll would report the
    /// socket forever. Bounded; the rest waits for the next wake-up.
    fn drain_errors(&self) {
        let mut none = [0u8; 0];
        for _ in 0..8 {
            let how = RecvFlags::DONTWAIT | RecvFlags::ERRQUEUE;
            if rustix::net::recv(&self.sock, &mut none, how).is_err() {
                break;
            }
        }
    }

    /// The host reported error `e` (`send` or `recv` gave it) for a datagram of this flow:
    /// the namespace gets the matching destination-unreachable message, rate-limited, and the
    /// error's entry leaves the socket's error queue.
    fn host_error(&mut self, e: Errno, out: &mut Out<'_>, now: Instant) {
        let mut none = [0u8; 0];
        let _ = rustix::net::recv(
            &self.sock,
            &mut none,
            RecvFlags::DONTWAIT | RecvFlags::ERRQUEUE,
        );
        let v6 = unmapped(&self.child.0).is_none();
        let Some(code) = wire::unreachable_code(e, v6) else {
            return;
        };
        if self.reply_to.is_some() || self.dns || self.quote_len == 0 || !self.errors.allow(now) {
            return;
        }
        let quote = &self.quote[..usize::from(self.quote_len)];
        let len = wire::put_unreachable(
            &mut out.buf[Out::L4..],
            code,
            quote,
            &self.remote.0,
            &self.child.0,
        );
        let proto = if v6 {
            wire::PROTO_ICMP6
        } else {
            wire::PROTO_ICMP
        };
        out.send_ip(self.remote.0, self.child.0, proto, len);
    }
}

/// The flow table.
pub(crate) struct Table {
    flows: Flows<Flow>,
    /// The host's nameservers, how they do, and the DNS queries waiting for an answer.
    servers: dns::Servers,
    health: dns::Health,
    pending: dns::Pending,
    /// Whether DNS flows have an IPv6 socket (for IPv6 nameservers; IPv4 ones through it).
    dns6: bool,
    /// How many ICMP errors about datagrams that made no flow may go to the namespace.
    errors: Bucket,
}

/// Sends DNS query `q` on `sock` (IPv6 if `v6`) to nameserver `ns`.
fn ask(sock: &OwnedFd, q: &[u8], ns: SocketAddr, v6: bool) {
    let to = match ns {
        SocketAddr::V4(a) if v6 => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        a => a,
    };
    // A full socket buffer loses it; the retry or the resolver asks again.
    let _ = rustix::net::sendto(sock, q, SendFlags::DONTWAIT | SendFlags::NOSIGNAL, &to);
}

impl Table {
    /// An empty table, its slots allocated now, forwarding DNS to the gateway to `servers`.
    pub(crate) fn new(servers: dns::Servers) -> Table {
        // A host without IPv6 sockets reaches only the IPv4 nameservers.
        let dns6 = servers.any_v6() && dns_socket(true).is_ok();
        Table {
            flows: Flows::new(SLOTS),
            servers: if dns6 || !servers.any_v6() {
                servers
            } else {
                servers.only_v4()
            },
            dns6,
            health: dns::Health::default(),
            pending: dns::Pending::new(),
            errors: Bucket::new(Instant::now()),
        }
    }

    #[cfg(test)]
    /// How many flows are open.
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    #[cfg(test)]
    /// Whether no flow is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.flows.len() == 0
    }

    /// The host's nameservers, the one a DNS query would go to now first (for DNS over TCP).
    pub(crate) fn nameservers(&self, now: Instant) -> dns::Servers {
        let first = self.health.pick(self.servers.len(), 0, now).unwrap_or(0);
        self.servers.starting_at(first)
    }

    /// DNS over TCP could not connect to these nameservers: each counts as failed.
    pub(crate) fn dns_failed(&mut self, failed: [Option<SocketAddr>; dns::MAX_NS], now: Instant) {
        for i in failed
            .into_iter()
            .flatten()
            .filter_map(|a| self.servers.index(a))
        {
            self.health.failed(i, now);
        }
    }

    /// When the next sweep for idle flows is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match (self.flows.deadline(), self.pending.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A datagram from the namespace (IP packet `packet`): sent on its flow's socket, the
    /// flow made if needed.
    #[allow(clippy::wrong_self_convention, reason = "input from the child")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_child(
        &mut self,
        packet: &[u8],
        ip: &Ip<'_>,
        u: &Udp<'_>,
        out: &mut Out<'_>,
        cfg: &Config,
        ep: &OwnedFd,
        now: Instant,
    ) {
        let child = (ip.src, u.src_port);
        let remote = (ip.dst, u.dst_port);
        let found = self.flows.find(|f| f.child == child && f.remote == remote);
        let index = match found {
            Some(i) => i,
            None => match self.open(child, remote, cfg, ep, now, out) {
                Ok(i) => i,
                Err(e) => {
                    // The host has no way there: the namespace learns it at once.
                    if let Some(e) = e {
                        self.unreachable(packet, ip, e, out, now);
                    }
                    return;
                }
            },
        };
        let id = (index, self.flows.generation(index));
        let Some(flow) = self.flows.get_mut(index) else {
            return;
        };
        flow.last = now;
        if flow.dns {
            let (servers, n, v6) = (&self.servers, self.servers.len(), self.dns6);
            let server = match wire::DnsHeader::parse(u.payload) {
                Some(h) if !h.response => {
                    self.pending.ask(id, h.id, u.payload, &self.health, n, now)
                }
                _ => self.health.pick(n, 0, now),
            };
            if let Some(ns) = server.and_then(|i| servers.get(i)) {
                ask(&flow.sock, u.payload, ns, v6);
            }
            return;
        }
        // A full socket buffer loses this datagram, as a wire would.
        let how = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        match &flow.reply_to {
            Some((to, _)) => {
                let _ = rustix::net::sendto(&flow.sock, u.payload, how, to);
            }
            None => {
                // An error the host got for the last datagram, not read yet, is reported here
                // instead of this one being sent: it goes to the namespace, and this one goes.
                if let Err(e) = rustix::net::send(&flow.sock, u.payload, how)
                    && e != Errno::AGAIN
                {
                    flow.host_error(e, out, now);
                    let _ = rustix::net::send(&flow.sock, u.payload, how);
                }
            }
        }
        let n = wire::quote(packet, &mut flow.quote);
        flow.quote_len = n as u8;
    }

    /// A published port `port`'s socket `sock` received `len` bytes (at [`Out::L4`] +
    /// [`UDP_LEN`] of `out.buf`) from host client `peer`: they go to `child` in the namespace
    /// from `remote`, on the flow of that pair (made if needed, on a duplicate of `sock`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn inbound(
        &mut self,
        port: u32,
        sock: &OwnedFd,
        peer: SocketAddrAny,
        child: (Addr, u16),
        remote: (Addr, u16),
        len: usize,
        out: &mut Out<'_>,
        now: Instant,
    ) {
        let index = self.flows.find(|f| f.child == child && f.remote == remote);
        let index = match index {
            Some(i) => i,
            None => {
                let Some(i) = self.free_slot(out, true) else {
                    return;
                };
                let Ok(dup) = rustix::io::fcntl_dupfd_cloexec(sock, 0) else {
                    return;
                };
                self.flows.renew(i);
                let flow = Flow {
                    sock: dup,
                    child,
                    remote,
                    idle: IDLE,
                    last: now,
                    reply_to: Some((peer, port)),
                    quote: [0; wire::QUOTE_MAX],
                    quote_len: 0,
                    errors: Bucket::new(now),
                    dns: false,
                };
                self.flows.insert(i, flow, now);
                i
            }
        };
        if let Some(flow) = self.flows.get_mut(index) {
            flow.last = now;
        }
        let n = wire::put_udp(&mut out.buf[Out::L4..], remote, child, len);
        out.send_ip(remote.0, child.0, wire::PROTO_UDP, n);
    }

    /// Closes the flows of published port `port`.
    pub(crate) fn close_port(&mut self, port: u32) {
        self.flows.close_where(
            |f| f.reply_to.as_ref().is_some_and(|r| r.1 == port),
            |_, _, _| {},
        );
    }

    /// A free slot for a flow in from a published port (`inbound`) or out from the namespace,
    /// or `None` (counted, warned about once) when that way has [`MAX_FLOWS`] or the table is
    /// full.
    fn free_slot(&mut self, out: &mut Out<'_>, inbound: bool) -> Option<usize> {
        match self
            .flows
            .free_slot_for(MAX_FLOWS, |f| f.reply_to.is_some() == inbound)
        {
            Ok(i) => Some(i),
            Err(first) => {
                out.counters.udp_over_limit += 1;
                if first {
                    crate::warn(&format!(
                        "user-mode network: more than {MAX_FLOWS} UDP flows{}, dropping datagrams of new ones",
                        if inbound { " to published ports" } else { "" }
                    ));
                }
                None
            }
        }
    }

    /// The host refused (`connect` failed with `e`) the datagram `packet` (`ip`): the
    /// namespace gets the matching destination-unreachable message, at the table's rate.
    fn unreachable(
        &mut self,
        packet: &[u8],
        ip: &Ip<'_>,
        e: Errno,
        out: &mut Out<'_>,
        now: Instant,
    ) {
        let v6 = unmapped(&ip.src).is_none();
        let mut quote = [0u8; wire::QUOTE_MAX];
        let n = wire::quote(packet, &mut quote);
        let Some(code) = wire::unreachable_code(e, v6) else {
            return;
        };
        if n == 0 || !self.errors.allow(now) {
            return;
        }
        let len =
            wire::put_unreachable(&mut out.buf[Out::L4..], code, &quote[..n], &ip.dst, &ip.src);
        let proto = if v6 {
            wire::PROTO_ICMP6
        } else {
            wire::PROTO_ICMP
        };
        out.send_ip(ip.dst, ip.src, proto, len);
    }

    /// A new flow for `child` to `remote`: its slot, or `Err(Some(e))` when the host has no
    /// way there (`connect` said `e`), `Err(None)` when it is refused or the table is full.
    fn open(
        &mut self,
        child: (Addr, u16),
        remote: (Addr, u16),
        cfg: &Config,
        ep: &OwnedFd,
        now: Instant,
        out: &mut Out<'_>,
    ) -> Result<usize, Option<Errno>> {
        let Some(addr) = cfg.host_addr(remote.0, remote.1) else {
            out.counters.dropped += 1;
            return Err(None);
        };
        let index = self.free_slot(out, false).ok_or(None)?;
        let dns = self.servers.len() > 0 && remote.1 == 53 && cfg.is_gateway(&remote.0);
        let sock = if dns {
            dns_socket(self.dns6)
        } else {
            rustix::net::socket_with(
                if addr.is_ipv4() {
                    AddressFamily::INET
                } else {
                    AddressFamily::INET6
                },
                SocketType::DGRAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )
        }
        .map_err(|_| None)?;
        if !dns {
            // The host's ICMP errors for our datagrams, all of them (without this only port
            // unreachable is reported on a connected socket), to pass on to the namespace.
            let (level, name) = if addr.is_ipv4() {
                (linux_raw_sys::net::SOL_IP, linux_raw_sys::net::IP_RECVERR)
            } else {
                (
                    linux_raw_sys::net::SOL_IPV6,
                    linux_raw_sys::net::IPV6_RECVERR,
                )
            };
            let _ = sys::net::setsockopt_int(&sock, level, name, 1);
            rustix::net::connect(&sock, &addr).map_err(Some)?;
        }
        let generation = self.flows.renew(index);
        if !watch(
            ep,
            sock.as_fd(),
            tag(KIND_UDP, generation, index),
            epoll::EventFlags::IN,
        ) {
            return Err(None);
        }
        let idle = if dns { DNS_IDLE } else { IDLE };
        let flow = Flow {
            sock,
            child,
            remote,
            idle,
            last: now,
            reply_to: None,
            quote: [0; wire::QUOTE_MAX],
            quote_len: 0,
            errors: Bucket::new(now),
            dns,
        };
        self.flows.insert(index, flow, now);
        Ok(index)
    }

    /// A flow's host socket has datagrams: each goes to the namespace.
    pub(crate) fn socket_ready(
        &mut self,
        index: usize,
        generation: u32,
        out: &mut Out<'_>,
        cfg: &Config,
        now: Instant,
    ) {
        let Table {
            flows,
            servers,
            health,
            pending,
            dns6,
            ..
        } = self;
        let id = (index, flows.generation(index));
        let Some(flow) = flows.tagged(index, generation) else {
            return;
        };
        let max = (cfg.mtu as usize)
            .saturating_sub(wire::ip_len(&flow.child.0) + UDP_LEN)
            .min(65507);
        for _ in 0..32 {
            let at = Out::L4 + UDP_LEN;
            let buf = &mut out.buf[at..at + max];
            let how = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
            let got = if flow.dns {
                rustix::net::recvfrom(&flow.sock, &mut *buf, how).map(|(n, total, from)| {
                    let from = from.and_then(|a| SocketAddr::try_from(a).ok());
                    let server = from.and_then(|a| servers.index(a));
                    // Only the nameservers' answers go on, and not a failure while another
                    // nameserver may do better.
                    let pass = match (server, wire::DnsHeader::parse(&buf[..n])) {
                        (Some(i), Some(h)) => {
                            let n = servers.len();
                            match pending.answer(id, h.id, i, h.rcode, health, n, now) {
                                dns::Verdict::Pass => true,
                                dns::Verdict::Drop => false,
                                dns::Verdict::Resend(r) => {
                                    let q = pending.query(r.slot);
                                    if let (Some(q), Some(ns)) = (q, servers.get(r.server)) {
                                        ask(&flow.sock, q.bytes(), ns, *dns6);
                                    }
                                    false
                                }
                            }
                        }
                        (server, _) => server.is_some(),
                    };
                    (n, total, pass)
                })
            } else {
                rustix::net::recv(&flow.sock, buf, how).map(|(n, total)| (n, total, true))
            };
            let n = match got {
                Ok((n, total, true)) if total <= n => n,
                // Too big for the namespace's MTU, or not from a nameserver: dropped.
                Ok(_) => continue,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    flow.drain_errors();
                    break;
                }
                // An ICMP error the host got for an earlier datagram.
                Err(e) => {
                    flow.host_error(e, out, now);
                    continue;
                }
            };
            flow.last = now;
            let len = wire::put_udp(&mut out.buf[Out::L4..], flow.remote, flow.child, n);
            out.send_ip(flow.remote.0, flow.child.0, wire::PROTO_UDP, len);
        }
    }

    /// Sends the DNS queries that were not answered in time to the next nameserver (or, when
    /// all were tried, answers with the failure one of them gave), and closes the flows that
    /// have been idle too long.
    pub(crate) fn expire(&mut self, out: &mut Out<'_>, ep: &OwnedFd, now: Instant) {
        while let Some(r) = self
            .pending
            .retry(&mut self.health, self.servers.len(), now)
        {
            let r = match r {
                dns::Retry::Send(r) => r,
                dns::Retry::Fail(q) => {
                    let (i, generation) = q.flow;
                    if let Some(f) = self.flows.get_if(i, generation) {
                        let at = Out::L4 + UDP_LEN;
                        let answer = &mut out.buf[at..at + dns::QUERY_MAX];
                        if let Some(n) = wire::put_dns_failure(answer, q.bytes(), q.failure) {
                            let len = wire::put_udp(&mut out.buf[Out::L4..], f.remote, f.child, n);
                            out.send_ip(f.remote.0, f.child.0, wire::PROTO_UDP, len);
                        }
                    }
                    continue;
                }
            };
            let Some(q) = self.pending.query(r.slot) else {
                continue;
            };
            let (i, generation) = q.flow;
            match self.flows.get_if(i, generation) {
                Some(f) => {
                    if let Some(ns) = self.servers.get(r.server) {
                        ask(&f.sock, q.bytes(), ns, self.dns6);
                    }
                }
                None => self.pending.forget(q.flow),
            }
        }
        let pending = &mut self.pending;
        self.flows.expire(
            now,
            |f| now.duration_since(f.last) >= f.idle,
            |i, generation, f| {
                let _ = epoll::delete(ep, &f.sock);
                if f.dns {
                    pending.forget((i, generation));
                }
            },
        );
    }
}

/// A socket for a DNS flow: IPv6 reaching IPv4 too if `v6`, else IPv4.
fn dns_socket(v6: bool) -> Result<OwnedFd, Errno> {
    let family = if v6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let sock = rustix::net::socket_with(family, SocketType::DGRAM, flags, None)?;
    if v6 {
        rustix::net::sockopt::set_ipv6_v6only(&sock, false)?;
    }
    Ok(sock)
}

impl Default for Table {
    fn default() -> Self {
        Table::new(dns::Servers::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_over_tcp_follows_the_nameserver_udp_would_use() {
        let (a, b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
        let mut t = Table::new(dns::Servers::new(&[a, b]));
        let (a, b) = (SocketAddr::new(a.into(), 53), SocketAddr::new(b.into(), 53));
        let now = Instant::now();
        assert_eq!(t.nameservers(now).first(), Some(a));
        t.health.failed(0, now);
        assert_eq!(
            t.nameservers(now).first(),
            Some(a),
            "one failure is not enough"
        );
        t.health.failed(0, now);
        let s = t.nameservers(now);
        assert_eq!((s.first(), s.get(1)), (Some(b), Some(a)));
        assert_eq!(t.nameservers(now + dns::SKIP).first(), Some(a));
    }

    #[test]
    fn errors_come_in_bursts_of_six_then_one_a_second() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        assert_eq!((0..10).filter(|_| b.allow(t0)).count(), 6);
        assert!(!b.allow(t0 + Duration::from_millis(900)));
        assert!(b.allow(t0 + Duration::from_millis(1000)));
        assert!(!b.allow(t0 + Duration::from_millis(1500)));
        // Credit builds up again, to no more than a burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.allow(later)).count(), 6);
        // A clock that goes back grants nothing.
        assert!(!b.allow(t0));
    }
}
