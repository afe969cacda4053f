//! The bounded flow table that UDP ([`super::udp`]) and ICMP echo ([`super::icmp`]) share:
//! fixed slots allocated up front, a generation per slot (so an epoll tag of a closed flow
//! does not reach the flow that took its slot), lookup, idle expiry on a one-second sweep,
//! and a "full" answer that says whether it is the first (one warning per table). No I/O: the
//! caller closes what it takes out.

use std::time::{Duration, Instant};

/// How often idle flows are looked for.
pub(crate) const SWEEP: Duration = Duration::from_secs(1);

/// A fixed table of flows `F`.
pub(crate) struct Flows<F> {
    slots: Vec<Option<F>>,
    generations: Vec<u32>,
    live: usize,
    next_sweep: Option<Instant>,
    full_before: bool,
}

impl<F> Flows<F> {
    /// An empty table of `max` slots, allocated now.
    pub(crate) fn new(max: usize) -> Flows<F> {
        Flows {
            slots: (0..max).map(|_| None).collect(),
            generations: vec![0; max],
            live: 0,
            next_sweep: None,
            full_before: false,
        }
    }

    #[cfg(test)]
    /// How many flows are open.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// When the next sweep for idle flows is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// The slot of the first flow `matches`.
    pub(crate) fn find(&self, matches: impl Fn(&F) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .position(|f| f.as_ref().is_some_and(&matches))
    }

    /// The flow in slot `i`.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut F> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// The flow in slot `i` if it is still generation `generation` (a whole one, from
    /// [`Flows::generation`]).
    pub(crate) fn get_if(&self, i: usize, generation: u32) -> Option<&F> {
        (self.generations.get(i) == Some(&generation))
            .then(|| self.slots[i].as_ref())
            .flatten()
    }

    /// The flow an epoll tag names: slot `i`, the low 24 bits of its generation `tagged`.
    pub(crate) fn tagged(&mut self, i: usize, tagged: u32) -> Option<&mut F> {
        if self.generations.get(i).map(|g| g & 0xff_ffff) != Some(tagged) {
            return None;
        }
        self.slots[i].as_mut()
    }

    /// Slot `i`'s generation.
    pub(crate) fn generation(&self, i: usize) -> u32 {
        self.generations.get(i).copied().unwrap_or_default()
    }

    /// A free slot, or `Err(first)` when the table is full, `first` true only the first time.
    pub(crate) fn free_slot(&mut self) -> Result<usize, bool> {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => Ok(i),
            None => Err(!std::mem::replace(&mut self.full_before, true)),
        }
    }

    /// As [`Flows::free_slot`] for a flow of the kind `kind` picks out, and full for it while
    /// `most` of that kind are open already (so the other kinds keep the rest of the table).
    pub(crate) fn free_slot_for(
        &mut self,
        most: usize,
        kind: impl Fn(&F) -> bool,
    ) -> Result<usize, bool> {
        if self.slots.iter().flatten().filter(|f| kind(f)).count() >= most {
            return Err(!std::mem::replace(&mut self.full_before, true));
        }
        self.free_slot()
    }

    /// Starts a new generation in free slot `i`, for the flow about to go there: its number.
    pub(crate) fn renew(&mut self, i: usize) -> u32 {
        self.generations[i] = self.generations[i].wrapping_add(1);
        self.generations[i]
    }

    /// Puts `flow` in free slot `i` at `now` (after [`Flows::renew`]).
    pub(crate) fn insert(&mut self, i: usize, flow: F, now: Instant) {
        if self.slots[i].replace(flow).is_none() {
            self.live += 1;
        }
        self.next_sweep.get_or_insert(now + SWEEP);
    }

    /// Takes out every flow `matches`, each given to `closed` with its slot and generation.
    pub(crate) fn close_where(
        &mut self,
        matches: impl Fn(&F) -> bool,
        mut closed: impl FnMut(usize, u32, F),
    ) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(&matches)
                && let Some(f) = slot.take()
            {
                self.live -= 1;
                closed(i, self.generations[i], f);
            }
        }
    }

    /// When the sweep is due at `now`: takes out the flows `idle` says have been idle too
    /// long (each given to `closed`), and arms the next sweep while flows are left.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        idle: impl Fn(&F) -> bool,
        closed: impl FnMut(usize, u32, F),
    ) {
        if self.next_sweep.is_none_or(|t| now < t) {
            return;
        }
        self.close_where(idle, closed);
        self.next_sweep = (self.live > 0).then(|| now + SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_generations_expiry_and_the_first_full() {
        let t0 = Instant::now();
        let mut t: Flows<(u8, Instant)> = Flows::new(2);
        assert_eq!((t.len(), t.deadline()), (0, None));
        let i = t.free_slot().unwrap();
        let g = t.renew(i);
        t.insert(i, (7, t0), t0);
        assert_eq!((t.len(), t.deadline()), (1, Some(t0 + SWEEP)));
        assert_eq!(t.find(|f| f.0 == 7), Some(i));
        assert_eq!(t.find(|f| f.0 == 8), None);
        assert_eq!(t.get_if(i, g).map(|f| f.0), Some(7));
        assert!(t.get_if(i, g + 1).is_none());
        assert!(t.tagged(i, g & 0xff_ffff).is_some());
        let j = t.free_slot().unwrap();
        assert_ne!(i, j);
        t.renew(j);
        t.insert(j, (8, t0 + Duration::from_secs(5)), t0);
        // Full: the first time says so, later times do not.
        assert_eq!((t.free_slot(), t.free_slot()), (Err(true), Err(false)));
        // Not before the sweep is due; then only the idle one goes, with its generation.
        let idle = |now: Instant| move |f: &(u8, Instant)| now.duration_since(f.1) >= SWEEP * 3;
        let mut gone = Vec::new();
        t.expire(t0, idle(t0 + SWEEP * 4), |i, g, f| gone.push((i, g, f.0)));
        assert!(gone.is_empty());
        let now = t0 + SWEEP * 4;
        t.expire(now, idle(now), |i, g, f| gone.push((i, g, f.0)));
        assert_eq!(gone, vec![(i, g, 7)]);
        assert_eq!((t.len(), t.deadline()), (1, Some(now + SWEEP)));
        // A reused slot has a new generation: the old tag no longer reaches it.
        assert_eq!(t.free_slot(), Ok(i));
        let g2 = t.renew(i);
        t.insert(i, (9, now), now);
        assert!(t.tagged(i, g & 0xff_ffff).is_none());
        assert_eq!(t.get_mut(i).map(|f| f.0), Some(9));
        assert_eq!(g2, g + 1);
        // A kind held to one slot: full for it, not for the other kind.
        assert_eq!(t.free_slot_for(1, |f| f.0 == 9), Err(false));
        t.close_where(|f| f.0 == 8, |_, _, _| {});
        assert_eq!(t.free_slot_for(1, |f| f.0 == 8), Ok(j));
        // Closed by a predicate; the last one gone, no sweep is armed.
        t.close_where(|f| f.0 == 9, |_, _, _| {});
        let later = now + SWEEP * 20;
        t.expire(later, idle(later), |_, _, _| {});
        assert_eq!((t.len(), t.deadline()), (0, None));
    }
}
