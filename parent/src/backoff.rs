//! Running out of descriptors without spinning: the accept pause shared by the API server and
//! the published ports, and a warning that is said once a minute at most.
//!
//! A level-triggered listener whose `accept` fails with `EMFILE` stays readable, so a loop that
//! only retried would spin. Instead the listener leaves the epoll set ([`AcceptPause::pause`])
//! and comes back after [`AcceptPause::DELAY`], or sooner when its owner frees a descriptor
//! ([`AcceptPause::resume`]).

use std::time::{Duration, Instant};

use rustix::io::Errno;

/// Whether an `accept` (or a `pipe`, `socket`) failed for want of descriptors or kernel memory:
/// the caller should stop taking work until some is freed, rather than retry at once.
pub(crate) fn out_of_descriptors(e: Errno) -> bool {
    matches!(
        e,
        Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM
    )
}

/// The soft `RLIMIT_NOFILE` in force (after `raise_nofile_limit`), `u64::MAX` when unlimited.
pub(crate) fn nofile_limit() -> u64 {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    lim.current.unwrap_or(u64::MAX)
}

/// When a paused listener may accept again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AcceptPause {
    until: Option<Instant>,
}

impl AcceptPause {
    /// How long accepting stops after running out of descriptors.
    pub(crate) const DELAY: Duration = Duration::from_millis(100);

    /// Stops accepting until [`AcceptPause::DELAY`] from `now`.
    pub(crate) fn pause(&mut self, now: Instant) {
        self.until = Some(now + Self::DELAY);
    }

    /// Accepting may go on again (a descriptor was freed).
    pub(crate) fn resume(&mut self) {
        self.until = None;
    }

    /// Whether accepting is paused at `now`; a pause that has run out ends here.
    pub(crate) fn is_paused(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|t| now >= t) {
            self.until = None;
        }
        self.until.is_some()
    }

    /// When the pause ends, for the caller's wait; `None` when not paused.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.until
    }
}

/// A warning printed at most once per [`Throttle::EVERY`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// The least time between two warnings of one kind.
    pub(crate) const EVERY: Duration = Duration::from_secs(60);

    /// Prints `msg` as a parent warning unless one was printed less than [`Throttle::EVERY`]
    /// ago; returns whether it did.
    pub(crate) fn warn(&mut self, now: Instant, msg: impl FnOnce() -> String) -> bool {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            return false;
        }
        self.last = Some(now);
        crate::warn(&msg());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_ends_after_its_delay_or_when_resumed() {
        let t0 = Instant::now();
        let mut p = AcceptPause::default();
        assert!(!p.is_paused(t0));
        p.pause(t0);
        assert!(p.is_paused(t0 + Duration::from_millis(99)));
        assert_eq!(p.deadline(), Some(t0 + AcceptPause::DELAY));
        assert!(!p.is_paused(t0 + AcceptPause::DELAY));
        assert_eq!(p.deadline(), None);
        p.pause(t0);
        p.resume();
        assert!(!p.is_paused(t0));
    }

    #[test]
    fn warnings_are_rate_limited() {
        let t0 = Instant::now();
        let mut w = Throttle::default();
        assert!(w.warn(t0, || "test: first".into()));
        assert!(!w.warn(t0 + Duration::from_secs(59), || unreachable!()));
        assert!(w.warn(t0 + Throttle::EVERY, || "test: again".into()));
    }

    #[test]
    fn exhaustion_errnos() {
        assert!(out_of_descriptors(Errno::MFILE));
        assert!(out_of_descriptors(Errno::NFILE));
        assert!(!out_of_descriptors(Errno::AGAIN));
        assert!(!out_of_descriptors(Errno::CONNABORTED));
    }
}
