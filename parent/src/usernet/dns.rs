//! Which of the host's nameservers a DNS query sent to the gateway goes to, as pure logic (no
//! I/O; the time comes in as an argument): the nameservers of the host's `/etc/resolv.conf`
//! in order, the next one for a query the last one did not answer within [`RETRY`], and a
//! nameserver that failed [`FAILS_TO_SKIP`] times in a row skipped for [`SKIP`] (an answer
//! makes it good again). The queries waiting for an answer are kept in a fixed table with a
//! copy of each ([`Pending`]), so a retry needs no allocation.
//!
//! [`RETRY`] is one second: the namespace's own resolver waits five seconds for the gateway
//! (glibc's `RES_TIMEOUT`; musl asks again after 2.5 s), so the answer of a second nameserver,
//! asked after one second, and even a third's, after two, still comes in time, while one second
//! is longer than a nameserver's round trip anywhere but on a broken path. A late answer of the
//! first nameserver is passed on too (the resolver takes whichever comes first) and counts as
//! an answer for its health.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

/// The most nameservers used, as glibc's `MAXNS`.
pub(crate) const MAX_NS: usize = 3;
/// How long a nameserver has to answer before the query goes to the next one.
pub(crate) const RETRY: Duration = Duration::from_secs(1);
/// How long a nameserver that keeps failing is passed over.
pub(crate) const SKIP: Duration = Duration::from_secs(30);
/// How many unanswered queries in a row make a nameserver skipped.
pub(crate) const FAILS_TO_SKIP: u8 = 2;
/// How many queries wait for an answer at once; more are sent without a retry.
pub(crate) const MAX_PENDING: usize = 32;
/// The largest query kept for a retry (a larger one is sent once).
pub(crate) const QUERY_MAX: usize = 512;

/// The host's nameservers (IPv4 and IPv6, port 53), in order, at most [`MAX_NS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Servers {
    addrs: [SocketAddr; MAX_NS],
    len: u8,
}

impl Default for Servers {
    fn default() -> Servers {
        Servers {
            addrs: [SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53)); MAX_NS],
            len: 0,
        }
    }
}

impl Servers {
    #[cfg(test)]
    /// The first [`MAX_NS`] of `addrs`, port 53.
    pub(crate) fn new<A: Into<std::net::IpAddr> + Copy>(addrs: &[A]) -> Servers {
        let mut s = Servers::default();
        for a in addrs {
            s.push(SocketAddr::new((*a).into(), 53));
        }
        s
    }

    /// The nameservers of a resolv.conf text, in order, at most [`MAX_NS`] (as glibc, the
    /// ones after the third are not used). `ifindex` gives the index of a network interface
    /// by name, for the zone of a link-local IPv6 address (`fe80::1%eth0`); a link-local
    /// address whose zone is missing or names no interface cannot be reached and is left out.
    pub(crate) fn from_resolv_conf(text: &str, ifindex: impl Fn(&str) -> Option<u32>) -> Servers {
        let mut s = Servers::default();
        for l in text.lines() {
            let mut words = l.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            if let Some(a) = words.next().and_then(|w| nameserver(w, &ifindex)) {
                s.push(a);
            }
        }
        s
    }

    /// Adds `a` at the end, if there is room.
    fn push(&mut self, a: SocketAddr) {
        if let Some(slot) = self.addrs.get_mut(usize::from(self.len)) {
            *slot = a;
            self.len += 1;
        }
    }

    /// The first nameserver, if there is one.
    pub(crate) fn first(&self) -> Option<SocketAddr> {
        self.get(0)
    }

    /// Nameserver `i`.
    pub(crate) fn get(&self, i: usize) -> Option<SocketAddr> {
        self.addrs[..usize::from(self.len)].get(i).copied()
    }

    /// Which nameserver a datagram from `from` came from (an IPv4 address as an IPv6 socket
    /// sees it, `::ffff:a.b.c.d`, is that IPv4 address); only port 53 is a nameserver's.
    pub(crate) fn index(&self, from: SocketAddr) -> Option<usize> {
        if from.port() != 53 {
            return None;
        }
        let ip = from.ip().to_canonical();
        self.addrs[..usize::from(self.len)]
            .iter()
            .position(|x| x.ip() == ip)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether any is an IPv6 address.
    pub(crate) fn any_v6(&self) -> bool {
        self.addrs[..usize::from(self.len)]
            .iter()
            .any(SocketAddr::is_ipv6)
    }

    /// The IPv4 ones only (for a host without IPv6 sockets).
    pub(crate) fn only_v4(&self) -> Servers {
        let mut s = Servers::default();
        for a in self.addrs[..usize::from(self.len)].iter() {
            if a.is_ipv4() {
                s.push(*a);
            }
        }
        s
    }

    /// The same nameservers, starting with nameserver `i` (the others after it in order).
    pub(crate) fn starting_at(&self, i: usize) -> Servers {
        let mut s = *self;
        if i < s.len() {
            s.addrs[..usize::from(s.len)].rotate_left(i);
        }
        s
    }
}

/// The address of a resolv.conf `nameserver` word: IPv4, or IPv6 with an optional `%zone`
/// (an interface name or index; needed, and only kept, for a link-local address). An IPv6
/// form of an IPv4 address (`::ffff:a.b.c.d`) is that IPv4 address.
fn nameserver(word: &str, ifindex: &impl Fn(&str) -> Option<u32>) -> Option<SocketAddr> {
    if let Ok(a) = word.parse::<Ipv4Addr>() {
        return Some(SocketAddr::V4(SocketAddrV4::new(a, 53)));
    }
    let (ip, zone) = match word.split_once('%') {
        Some((ip, zone)) => (ip, Some(zone)),
        None => (word, None),
    };
    let ip: Ipv6Addr = ip.parse().ok()?;
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4, 53)));
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
    let scope = if link_local {
        let zone = zone.filter(|z| !z.is_empty())?;
        let index = match zone.parse::<u32>() {
            Ok(i) => i,
            Err(_) => ifindex(zone)?,
        };
        (index != 0).then_some(index)?
    } else {
        0
    };
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)))
}

/// The index of host network interface `name`, from `/sys/class/net/NAME/ifindex`.
pub(crate) fn sys_ifindex(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() > 15 || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).ok()?;
    text.trim().parse().ok()
}

/// How each nameserver has done lately.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Health {
    fails: [u8; MAX_NS],
    skip_until: [Option<Instant>; MAX_NS],
}

impl Health {
    /// The nameserver for a query at `now`, of the first `n`, not among those in bitmask
    /// `tried`: the first that is not skipped, or, when all left are, the first left; `None`
    /// when all were tried.
    pub(crate) fn pick(&self, n: usize, tried: u8, now: Instant) -> Option<usize> {
        let left = || (0..n.min(MAX_NS)).filter(|i| tried & (1 << i) == 0);
        left()
            .find(|&i| self.skip_until[i].is_none_or(|t| now >= t))
            .or_else(|| left().next())
    }

    /// Nameserver `i` did not answer in time.
    pub(crate) fn failed(&mut self, i: usize, now: Instant) {
        let Some(f) = self.fails.get_mut(i) else {
            return;
        };
        *f = f.saturating_add(1);
        if *f >= FAILS_TO_SKIP {
            self.skip_until[i] = Some(now + SKIP);
        }
    }

    /// Nameserver `i` answered.
    pub(crate) fn answered(&mut self, i: usize) {
        if i < MAX_NS {
            self.fails[i] = 0;
            self.skip_until[i] = None;
        }
    }

    #[cfg(test)]
    fn skipped(&self, i: usize, now: Instant) -> bool {
        self.skip_until[i].is_some_and(|t| now < t)
    }
}

/// A query waiting for an answer.
pub(crate) struct Query {
    /// The flow it came on: its slot and generation.
    pub flow: (usize, u32),
    /// Its DNS id.
    pub id: u16,
    /// The nameserver it was last sent to.
    pub server: usize,
    /// The nameservers it was sent to, a bit each.
    pub tried: u8,
    /// When it goes to the next nameserver.
    pub due: Instant,
    /// The response code of the last failure answer held back (0: none).
    pub failure: u8,
    len: u16,
    buf: [u8; QUERY_MAX],
}

impl Query {
    /// The query's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// DNS response code: the server failed.
pub(crate) const SERVFAIL: u8 = 2;
/// DNS response code: the server refuses to answer.
pub(crate) const REFUSED: u8 = 5;

/// What becomes of an answer from a nameserver ([`Pending::answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It goes on to the namespace.
    Pass,
    /// It is dropped: the query waits for another nameserver's answer.
    Drop,
    /// It is dropped, and the query goes to another nameserver now.
    Resend(Resend),
}

/// What to do with a query that was not answered in time ([`Pending::retry`]).
#[allow(
    clippy::large_enum_variant,
    reason = "the query moves out of its fixed slot: no allocation per query"
)]
pub(crate) enum Retry {
    /// Send it to another nameserver.
    Send(Resend),
    /// Every nameserver was tried, and one answered with the failure `.failure`: that goes to
    /// the namespace, as an answer to this query.
    Fail(Query),
}

/// The queries waiting for an answer, in fixed slots.
pub(crate) struct Pending {
    slots: Box<[Option<Query>]>,
}

/// What to do on a retry: send query `slot` to nameserver `server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resend {
    /// The query's slot ([`Pending::query`]).
    pub slot: usize,
    /// The nameserver.
    pub server: usize,
}

impl Pending {
    /// An empty table, its slots allocated now.
    pub(crate) fn new() -> Pending {
        Pending {
            slots: (0..MAX_PENDING).map(|_| None).collect(),
        }
    }

    /// Query `q` (DNS id `id`) came on flow `flow` at `now`: the nameserver it goes to now
    /// (chosen by `health` among `n`), kept for a retry if there is room. A query the flow
    /// already has waiting with the same id (the resolver asking again) replaces it and goes
    /// where that one would go next. `None` with no nameserver.
    pub(crate) fn ask(
        &mut self,
        flow: (usize, u32),
        id: u16,
        q: &[u8],
        health: &Health,
        n: usize,
        now: Instant,
    ) -> Option<usize> {
        let same = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.flow == flow && s.id == id));
        let tried = same
            .and_then(|i| self.slots[i].as_ref())
            .map_or(0, |s| s.tried);
        // Every nameserver had its chance with this one: round again.
        let tried = if health.pick(n, tried, now).is_some() {
            tried
        } else {
            0
        };
        let server = health.pick(n, tried, now)?;
        let Some(slot) = same.or_else(|| self.slots.iter().position(Option::is_none)) else {
            return Some(server);
        };
        if q.len() > QUERY_MAX {
            self.slots[slot] = None;
            return Some(server);
        }
        let mut buf = [0u8; QUERY_MAX];
        buf[..q.len()].copy_from_slice(q);
        self.slots[slot] = Some(Query {
            flow,
            id,
            server,
            tried: tried | 1 << server,
            due: now + RETRY,
            failure: 0,
            len: q.len() as u16,
            buf,
        });
        Some(server)
    }

    /// An answer with id `id` and response code `rcode` came for flow `flow` from nameserver
    /// `server` at `now`; what becomes of it. An answer that is not a failure (anything but
    /// SERVFAIL and REFUSED; NXDOMAIN is final) goes on, its query no longer waits, and the
    /// nameserver is good. A failure from the nameserver the query waits for, when one of the
    /// first `n` was not tried yet for it, is dropped and the query goes to that one now, as
    /// glibc's resolver does; once all were tried the last failure goes on. A failure from a
    /// nameserver the query no longer waits for (late, after a retry) is dropped. REFUSED
    /// counts as a failure of the nameserver, SERVFAIL (which may be about the name, not the
    /// nameserver) neither as a failure nor as an answer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer(
        &mut self,
        flow: (usize, u32),
        id: u16,
        server: usize,
        rcode: u8,
        health: &mut Health,
        n: usize,
        now: Instant,
    ) -> Verdict {
        let failure = rcode == SERVFAIL || rcode == REFUSED;
        if !failure {
            health.answered(server);
        } else if rcode == REFUSED {
            health.failed(server, now);
        }
        let slot = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.flow == flow && s.id == id));
        if failure
            && let Some(slot) = slot
            && let Some(q) = self.slots[slot].as_mut()
        {
            if q.server != server {
                q.failure = rcode;
                return Verdict::Drop;
            }
            if let Some(next) = health.pick(n, q.tried, now) {
                q.server = next;
                q.tried |= 1 << next;
                q.due = now + RETRY;
                q.failure = rcode;
                return Verdict::Resend(Resend { slot, server: next });
            }
        }
        if let Some(slot) = slot {
            self.slots[slot] = None;
        }
        Verdict::Pass
    }

    /// The first query due at `now`: its nameserver counted as failed, and either where it
    /// goes next (and when it is due again) or, when every nameserver was tried, dropped: the
    /// namespace's resolver asks again itself, unless a nameserver answered it with a failure
    /// that was held back, which it then gets ([`Retry::Fail`]). Call until `None`.
    pub(crate) fn retry(&mut self, health: &mut Health, n: usize, now: Instant) -> Option<Retry> {
        loop {
            let slot = self
                .slots
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.due <= now))?;
            let Some(q) = self.slots[slot].as_mut() else {
                continue;
            };
            health.failed(q.server, now);
            match health.pick(n, q.tried, now) {
                Some(server) => {
                    q.server = server;
                    q.tried |= 1 << server;
                    q.due = now + RETRY;
                    return Some(Retry::Send(Resend { slot, server }));
                }
                None => {
                    if let Some(q) = self.slots[slot].take()
                        && q.failure != 0
                    {
                        return Some(Retry::Fail(q));
                    }
                }
            }
        }
    }

    /// Query `slot`, if it waits.
    pub(crate) fn query(&self, slot: usize) -> Option<&Query> {
        self.slots.get(slot)?.as_ref()
    }

    /// Forgets the queries of a flow that closed.
    pub(crate) fn forget(&mut self, flow: (usize, u32)) {
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.flow == flow) {
                *s = None;
            }
        }
    }

    /// When the next query is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|s| s.due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: (usize, u32) = (3, 1);

    /// The nameserver a retry sends to.
    fn sent(r: Option<Retry>) -> Option<usize> {
        match r? {
            Retry::Send(r) => Some(r.server),
            Retry::Fail(_) => None,
        }
    }

    fn ns(a: [u8; 4]) -> Option<SocketAddr> {
        Some(SocketAddr::new(a.into(), 53))
    }

    #[test]
    fn servers_keep_the_first_three_in_order() {
        let s = Servers::new(&[[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [4, 4, 4, 4]]);
        assert_eq!(
            (s.len(), s.first(), s.get(2)),
            (3, ns([1, 1, 1, 1]), ns([3, 3, 3, 3]))
        );
        assert_eq!(
            (
                s.get(3),
                s.index(ns([2, 2, 2, 2]).unwrap()),
                s.index(ns([4, 4, 4, 4]).unwrap())
            ),
            (None, Some(1), None)
        );
        // Only port 53 is a nameserver's.
        assert_eq!(s.index("2.2.2.2:54".parse().unwrap()), None);
        assert_eq!(Servers::new::<[u8; 4]>(&[]).first(), None);
        let r = s.starting_at(1);
        assert_eq!(
            (r.first(), r.get(1), r.get(2), r.len()),
            (ns([2, 2, 2, 2]), ns([3, 3, 3, 3]), ns([1, 1, 1, 1]), 3)
        );
        assert_eq!(s.starting_at(5), s);
    }

    #[test]
    fn resolv_conf_nameservers_of_both_families() {
        let eth0 = |name: &str| (name == "eth0").then_some(2);
        let text = "# comment\nnameserver 127.0.0.53\nsearch lan\nnameserver ::1\n\
                    nameserver   192.0.2.1 # trailing\noptions edns0\nnameserver bogus\n";
        let s = Servers::from_resolv_conf(text, eth0);
        let want: [SocketAddr; 3] = [
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
        ];
        assert_eq!(
            (s.len(), s.get(0), s.get(1), s.get(2)),
            (3, Some(want[0]), Some(want[1]), Some(want[2]))
        );
        assert!(s.any_v6());
        assert_eq!(
            s.only_v4(),
            Servers::new(&[[127, 0, 0, 53], [192, 0, 2, 1]])
        );
        assert_eq!(Servers::from_resolv_conf("", eth0), Servers::default());
        // Link-local: with a zone that names an interface (or is its index) it is reached
        // through that interface; without one, or with an unknown one, it is left out.
        let text = "nameserver fe80::1\nnameserver fe80::2%nope\nnameserver fe80::3%eth0\n\
                    nameserver fe80::4%7\nnameserver fd00::53%eth0\nnameserver 1.2.3.4\n";
        let s = Servers::from_resolv_conf(text, eth0);
        let six =
            |a: &str, scope| SocketAddr::V6(SocketAddrV6::new(a.parse().unwrap(), 53, 0, scope));
        assert_eq!(
            (s.len(), s.get(0), s.get(1), s.get(2)),
            (
                3,
                Some(six("fe80::3", 2)),
                Some(six("fe80::4", 7)),
                Some(six("fd00::53", 0))
            )
        );
        // An IPv4 nameserver written as IPv6 is IPv4; nonsense, `::` and multicast are not
        // nameservers.
        let text = "nameserver ::ffff:192.0.2.9\nnameserver ::\nnameserver ff02::1\n\
                    nameserver fe80::1%\nnameserver 1.2.3\nnameserver\n";
        let s = Servers::from_resolv_conf(text, eth0);
        assert_eq!(s, Servers::new(&[[192, 0, 2, 9]]));
        assert!(!s.any_v6());
        // Answers from an IPv4 nameserver seen on an IPv6 socket.
        let s = Servers::new(&[[127, 0, 0, 45]]);
        assert_eq!(s.index("[::ffff:127.0.0.45]:53".parse().unwrap()), Some(0));
        let s = Servers::new(&[Ipv6Addr::LOCALHOST]);
        assert_eq!(s.index("[::1]:53".parse().unwrap()), Some(0));
    }

    #[test]
    fn servfail_and_refused_go_to_the_next_nameserver_at_once() {
        let t0 = Instant::now();
        let mut h = Health::default();
        let mut p = Pending::new();
        assert_eq!(p.ask(FLOW, 7, b"query", &h, 2, t0), Some(0));
        // REFUSED from the first: dropped, the query goes to the second now (and is due a
        // second later), the first counts one failure.
        let t1 = t0 + Duration::from_millis(10);
        let v = p.answer(FLOW, 7, 0, REFUSED, &mut h, 2, t1);
        let Verdict::Resend(r) = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            (r.server, p.query(r.slot).unwrap().bytes()),
            (1, &b"query"[..])
        );
        assert_eq!(p.deadline(), Some(t1 + RETRY));
        // The second answers: passed on, nothing waits.
        assert_eq!(p.answer(FLOW, 7, 1, 0, &mut h, 2, t1), Verdict::Pass);
        assert_eq!(p.deadline(), None);
        // A second REFUSED from the first: it is skipped now.
        assert_eq!(p.ask(FLOW, 8, b"q", &h, 2, t1), Some(0));
        assert!(matches!(
            p.answer(FLOW, 8, 0, REFUSED, &mut h, 2, t1),
            Verdict::Resend(_)
        ));
        assert!(h.skipped(0, t1));
        // The second fails too: every one was tried, the last failure goes on.
        assert_eq!(p.answer(FLOW, 8, 1, SERVFAIL, &mut h, 2, t1), Verdict::Pass);
        assert_eq!(p.deadline(), None);
        // One nameserver: its failure goes on at once.
        let mut h = Health::default();
        assert_eq!(p.ask(FLOW, 9, b"q", &h, 1, t1), Some(0));
        assert_eq!(p.answer(FLOW, 9, 0, REFUSED, &mut h, 1, t1), Verdict::Pass);
        assert_eq!(p.deadline(), None);
        // NXDOMAIN is final, and makes the nameserver good.
        let mut h = Health::default();
        h.failed(0, t1);
        h.failed(0, t1);
        assert_eq!(p.ask(FLOW, 10, b"q", &h, 2, t1), Some(1));
        assert_eq!(p.answer(FLOW, 10, 1, 3, &mut h, 2, t1), Verdict::Pass);
        assert_eq!(p.deadline(), None);
        // SERVFAIL neither counts against a nameserver nor for it.
        let mut h = Health::default();
        h.failed(0, t1);
        assert_eq!(p.ask(FLOW, 11, b"q", &h, 2, t1), Some(0));
        assert!(matches!(
            p.answer(FLOW, 11, 0, SERVFAIL, &mut h, 2, t1),
            Verdict::Resend(_)
        ));
        assert_eq!(h.fails[0], 1);
        // A late failure from a nameserver the query has moved on from is dropped: the
        // query waits for the one it went to.
        assert_eq!(
            p.answer(FLOW, 11, 0, SERVFAIL, &mut h, 2, t1),
            Verdict::Drop
        );
        assert!(p.deadline().is_some());
        // An answer for a query that waits for nothing (not kept, or already answered).
        assert_eq!(
            p.answer((9, 9), 1, 0, REFUSED, &mut h, 2, t1),
            Verdict::Pass
        );
        // Three nameservers: REFUSED, then silence, then the third.
        let mut h = Health::default();
        let mut p = Pending::new();
        assert_eq!(p.ask(FLOW, 12, b"q", &h, 3, t0), Some(0));
        assert!(matches!(
            p.answer(FLOW, 12, 0, REFUSED, &mut h, 3, t0),
            Verdict::Resend(Resend { server: 1, .. })
        ));
        assert_eq!(sent(p.retry(&mut h, 3, t0 + RETRY)), Some(2));
        // The third says nothing either: the REFUSED held back goes to the namespace after all.
        let Some(Retry::Fail(q)) = p.retry(&mut h, 3, t0 + RETRY * 2) else {
            panic!("the held-back failure is not given")
        };
        assert_eq!((q.failure, q.id, q.bytes()), (REFUSED, 12, &b"q"[..]));
        assert!(p.retry(&mut h, 3, t0 + RETRY * 2).is_none());
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn a_silent_first_nameserver_hands_over_then_is_skipped() {
        let t0 = Instant::now();
        let mut h = Health::default();
        let mut p = Pending::new();
        // The first query goes to the first nameserver; nothing is due before a second.
        assert_eq!(p.ask(FLOW, 7, b"query", &h, 2, t0), Some(0));
        assert_eq!(p.deadline(), Some(t0 + RETRY));
        assert!(p.retry(&mut h, 2, t0 + RETRY / 2).is_none());
        // Unanswered after a second: to the second nameserver, with the same bytes.
        let Some(Retry::Send(r)) = p.retry(&mut h, 2, t0 + RETRY) else {
            panic!("no retry")
        };
        assert_eq!(r.server, 1);
        assert_eq!(p.query(r.slot).unwrap().bytes(), b"query");
        assert!(!h.skipped(0, t0 + RETRY));
        // It answers: nothing waits any more.
        assert_eq!(
            p.answer(FLOW, 7, 1, 0, &mut h, 2, t0 + RETRY),
            Verdict::Pass
        );
        assert_eq!(p.deadline(), None);
        // A second query, also unanswered by the first: now it is skipped…
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(p.ask(FLOW, 8, b"again", &h, 2, t1), Some(0));
        assert_eq!(sent(p.retry(&mut h, 2, t1 + RETRY)), Some(1));
        assert!(h.skipped(0, t1 + RETRY));
        // …so the next query goes straight to the second…
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(p.ask(FLOW, 9, b"third", &h, 2, t2), Some(1));
        // …until the skip is over.
        assert_eq!(p.ask(FLOW, 10, b"later", &h, 2, t1 + RETRY + SKIP), Some(0));
    }

    #[test]
    fn every_nameserver_tried_drops_the_query_and_a_repeat_goes_round_again() {
        let t0 = Instant::now();
        let mut h = Health::default();
        let mut p = Pending::new();
        assert_eq!(p.ask(FLOW, 1, b"q", &h, 2, t0), Some(0));
        assert_eq!(sent(p.retry(&mut h, 2, t0 + RETRY)), Some(1));
        assert!(p.retry(&mut h, 2, t0 + RETRY * 2).is_none());
        assert_eq!(p.deadline(), None);
        // The resolver asks again with the same id while it waits: it goes on to the next.
        let t1 = t0 + Duration::from_secs(1);
        let mut h = Health::default();
        assert_eq!(p.ask(FLOW, 2, b"q", &h, 3, t1), Some(0));
        assert_eq!(p.ask(FLOW, 2, b"q", &h, 3, t1), Some(1));
        assert_eq!(p.ask(FLOW, 2, b"q", &h, 3, t1), Some(2));
        assert_eq!(p.ask(FLOW, 2, b"q", &h, 3, t1), Some(0));
        // An answer from the first makes it good again; a late answer counts too.
        h.failed(0, t1);
        h.failed(0, t1);
        assert!(h.skipped(0, t1));
        assert_eq!(p.answer(FLOW, 2, 0, 0, &mut h, 3, t1), Verdict::Pass);
        assert!(!h.skipped(0, t1));
        // Other flows' queries and ids are apart; a closed flow's are forgotten.
        assert_eq!(p.ask((4, 1), 2, b"q", &h, 3, t1), Some(0));
        p.forget((4, 1));
        assert_eq!(p.deadline(), None);
        // One nameserver, skipped: still used, there is no other.
        h.failed(0, t1);
        h.failed(0, t1);
        assert_eq!(p.ask(FLOW, 3, b"q", &h, 1, t1), Some(0));
        // None at all.
        assert_eq!(p.ask(FLOW, 4, b"q", &h, 0, t1), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let h = Health::default();
        let mut p = Pending::new();
        for id in 0..MAX_PENDING as u16 + 10 {
            assert_eq!(p.ask(FLOW, id, b"q", &h, 2, t0), Some(0));
        }
        assert_eq!(p.slots.iter().flatten().count(), MAX_PENDING);
        // Too big to keep: sent once.
        p.forget(FLOW);
        assert_eq!(p.ask(FLOW, 1, &[0; QUERY_MAX + 1], &h, 2, t0), Some(0));
        assert_eq!(p.deadline(), None);
    }
}
