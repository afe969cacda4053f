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

/// The host's IPv4 nameservers, in order, at most [`MAX_NS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Servers {
    addrs: [[u8; 4]; MAX_NS],
    len: u8,
}

impl Servers {
    /// The first [`MAX_NS`] of `addrs`.
    pub(crate) fn new(addrs: &[[u8; 4]]) -> Servers {
        let mut s = Servers::default();
        for (slot, a) in s.addrs.iter_mut().zip(addrs) {
            *slot = *a;
            s.len += 1;
        }
        s
    }

    /// The first nameserver, if there is one.
    pub(crate) fn first(&self) -> Option<[u8; 4]> {
        self.get(0)
    }

    /// Nameserver `i`.
    pub(crate) fn get(&self, i: usize) -> Option<[u8; 4]> {
        self.addrs[..usize::from(self.len)].get(i).copied()
    }

    /// Which nameserver `a` is.
    pub(crate) fn index(&self, a: [u8; 4]) -> Option<usize> {
        self.addrs[..usize::from(self.len)]
            .iter()
            .position(|&x| x == a)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
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
    len: u16,
    buf: [u8; QUERY_MAX],
}

impl Query {
    /// The query's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
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
            len: q.len() as u16,
            buf,
        });
        Some(server)
    }

    /// An answer with id `id` came for flow `flow` from nameserver `server`: its query no
    /// longer waits, and the nameserver is good.
    pub(crate) fn answered(
        &mut self,
        flow: (usize, u32),
        id: u16,
        server: usize,
        health: &mut Health,
    ) {
        health.answered(server);
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.flow == flow && s.id == id) {
                *s = None;
            }
        }
    }

    /// The first query due at `now`: its nameserver counted as failed, and either where it
    /// goes next (and when it is due again) or, when every nameserver was tried, dropped (the
    /// namespace's resolver asks again itself). Call until `None`.
    pub(crate) fn retry(&mut self, health: &mut Health, n: usize, now: Instant) -> Option<Resend> {
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
                    return Some(Resend { slot, server });
                }
                None => self.slots[slot] = None,
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

    #[test]
    fn servers_keep_the_first_three_in_order() {
        let s = Servers::new(&[[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [4, 4, 4, 4]]);
        assert_eq!(
            (s.len(), s.first(), s.get(2)),
            (3, Some([1, 1, 1, 1]), Some([3, 3, 3, 3]))
        );
        assert_eq!(
            (s.get(3), s.index([2, 2, 2, 2]), s.index([4, 4, 4, 4])),
            (None, Some(1), None)
        );
        assert_eq!(Servers::new(&[]).first(), None);
        let r = s.starting_at(1);
        assert_eq!(
            (r.first(), r.get(1), r.get(2), r.len()),
            (
                Some([2, 2, 2, 2]),
                Some([3, 3, 3, 3]),
                Some([1, 1, 1, 1]),
                3
            )
        );
        assert_eq!(s.starting_at(5), s);
    }

    #[test]
    fn a_silent_first_nameserver_hands_over_then_is_skipped() {
        let t0 = Instant::now();
        let mut h = Health::default();
        let mut p = Pending::new();
        // The first query goes to the first nameserver; nothing is due before a second.
        assert_eq!(p.ask(FLOW, 7, b"query", &h, 2, t0), Some(0));
        assert_eq!(p.deadline(), Some(t0 + RETRY));
        assert_eq!(p.retry(&mut h, 2, t0 + RETRY / 2), None);
        // Unanswered after a second: to the second nameserver, with the same bytes.
        let r = p.retry(&mut h, 2, t0 + RETRY).unwrap();
        assert_eq!(r.server, 1);
        assert_eq!(p.query(r.slot).unwrap().bytes(), b"query");
        assert!(!h.skipped(0, t0 + RETRY));
        // It answers: nothing waits any more.
        p.answered(FLOW, 7, 1, &mut h);
        assert_eq!(p.deadline(), None);
        // A second query, also unanswered by the first: now it is skipped…
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(p.ask(FLOW, 8, b"again", &h, 2, t1), Some(0));
        assert_eq!(p.retry(&mut h, 2, t1 + RETRY).map(|r| r.server), Some(1));
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
        assert_eq!(p.retry(&mut h, 2, t0 + RETRY).map(|r| r.server), Some(1));
        assert_eq!(p.retry(&mut h, 2, t0 + RETRY * 2), None);
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
        p.answered(FLOW, 2, 0, &mut h);
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
