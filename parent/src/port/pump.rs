//! The builtin port driver's data plane: moves bytes between pairs of connected sockets with
//! splice(2) through pipes, driven by one edge-triggered epoll fd from the parent's main loop.
//!
//! # Event model
//!
//! [`Pumps`] owns one epoll fd. Both sockets of every pair are registered **edge-triggered**
//! for `EPOLLIN | EPOLLOUT | EPOLLRDHUP`, with the pair's slot, generation and side in the
//! event data. Any event on either socket pumps *both* directions of that pair until no
//! splice makes progress, so no edge is lost: a direction stops only on `EAGAIN` from the
//! socket it reads (a new `EPOLLIN` edge will come) or from the socket it writes (a new
//! `EPOLLOUT` edge will come). Edge triggering also keeps a half-closed socket, which stays
//! readable at EOF forever, from waking the loop again and again.
//!
//! The main loop polls [`Pumps::as_fd`] for readability and calls [`Pumps::run_ready`]. That
//! takes at most [`EVENTS`] events with a zero timeout and gives each pair a bounded number of
//! splices, so one fast connection cannot starve the signalfd or the API server. A pair whose
//! budget runs out is re-armed with `EPOLL_CTL_MOD`, which queues it again when it is still
//! ready; the epoll fd then stays readable and the next turn of the main loop continues it.
//!
//! # Memory
//!
//! The slot table, the free list and the idle-pipe pool are allocated in [`Pumps::new`] for up
//! to [`INITIAL_SLOTS`] pairs; past that the table doubles, up to its capacity, so a high
//! descriptor limit costs no memory until it is used: adding, pumping and closing a connection
//! allocate nothing on the heap otherwise. Pipes are kernel objects taken from the pool (a
//! pipe comes back when its pair closes empty) or created when the pool is empty.
//!
//! # Descriptors
//!
//! A pair holds six descriptors (two sockets, two pipes). [`Pumps::for_fd_limit`] sizes the
//! table and the idle-pipe pool from the process's descriptor limit, so that a full table
//! leaves room for everything else instead of running into `EMFILE`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{Shutdown, shutdown};
use rustix::pipe::{
    PipeFlags, SpliceFlags, fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice,
};

/// How many epoll events one [`Pumps::run_ready`] call handles at most.
pub(crate) const EVENTS: usize = 64;

/// How many splice rounds (read into the pipe, write out of it) one pair gets per event.
const BUDGET: u32 = 16;

/// The pipe size asked for with `F_SETPIPE_SZ`; a refusal keeps what the kernel gave.
///
/// Pipe memory is charged to the user: past `fs.pipe-user-pages-soft` (16384 pages, 64 MiB,
/// i.e. 256 pipes of this size) an unprivileged user's resizes fail with `EPERM` and new pipes
/// get two pages (8 KiB). Such pairs still work, only more slowly.
pub(crate) const PIPE_SIZE: usize = 256 * 1024;

/// Most pipes kept idle for reuse; more are closed so a burst does not keep its quota.
pub(crate) const IDLE_PIPES: usize = 64;

/// Slots allocated up front; the table doubles from there up to its capacity.
pub(crate) const INITIAL_SLOTS: usize = 1024;

/// Descriptors one pair holds: two sockets and two pipes of two ends.
pub(crate) const FDS_PER_PAIR: u64 = 6;

/// The pair capacity and the idle-pipe pool for a process whose soft descriptor limit is
/// `limit`: an eighth of the limit (at least 256) is left for the listeners, the API, the
/// child's sockets and UDP flows, and the idle pipes hold at most a thirty-second of it.
pub(crate) fn limits_for(limit: u64) -> (usize, usize) {
    let limit = limit.min(1 << 24);
    let idle = (limit / 64).min(IDLE_PIPES as u64);
    let reserve = (limit / 8).max(256) + 2 * idle;
    let pairs = (limit.saturating_sub(reserve) / FDS_PER_PAIR).max(16);
    (pairs as usize, idle as usize)
}

/// Why [`Pumps::add`] refused a pair. The pair's sockets are closed either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// Every slot is in use.
    Full,
    /// A syscall failed (making a pipe, registering with epoll, setting non-blocking mode).
    Sys(Errno),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Full => f.write_str("too many connections"),
            Error::Sys(e) => f.write_str(&sys::errno::text(*e)),
        }
    }
}

impl std::error::Error for Error {}

impl From<Errno> for Error {
    fn from(e: Errno) -> Error {
        Error::Sys(e)
    }
}

/// Names a live pair: its slot and the slot's generation, so a stale id never matches a
/// later pair in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PairId {
    slot: u32,
    generation: u32,
}

#[cfg(test)]
/// Counters for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stats {
    /// Pipes created since construction (each pair needs two).
    pub pipes_created: usize,
    /// Pipes waiting in the pool for the next pair (at most [`IDLE_PIPES`]).
    pub pipes_idle: usize,
    /// Bytes of heap the table, free list and pool hold; constant after construction.
    pub heap_bytes: usize,
}

/// One pipe: read end, write end and its capacity in bytes.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

/// One direction of a pair: bytes from `fds[d]` to `fds[1 - d]` through `pipe`.
struct Dir {
    pipe: Pipe,
    /// Bytes spliced into the pipe and not yet out of it.
    buffered: usize,
    /// The source socket returned EOF.
    eof: bool,
    /// The destination's write side is shut (after EOF and an empty pipe).
    shut: bool,
}

struct Pair {
    fds: [OwnedFd; 2],
    dirs: [Dir; 2],
    group: u32,
}

struct Slot {
    generation: u32,
    pair: Option<Pair>,
}

/// What one pumping pass ended with.
enum Pass {
    /// Both directions wait for an edge.
    Idle,
    /// The budget ran out while data still moved.
    Busy,
    /// Both directions are finished: close the pair.
    Done,
    /// A socket failed (reset, broken pipe): close the pair.
    Failed,
}

/// A bounded set of socket pairs whose bytes are spliced both ways.
pub(crate) struct Pumps {
    epoll: OwnedFd,
    slots: Vec<Slot>,
    /// The most slots the table grows to.
    capacity: usize,
    free: Vec<u32>,
    pool: Vec<Pipe>,
    pipe_size: usize,
    live: usize,
    pipes_created: usize,
}

fn data(slot: u32, generation: u32, side: usize) -> EventData {
    EventData::new_u64((u64::from(generation) << 32) | (u64::from(slot) << 1) | side as u64)
}

fn interest() -> EventFlags {
    EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET
}

impl Pumps {
    #[cfg(test)]
    /// A table for at most `capacity` pairs, with pipes of [`PIPE_SIZE`] where the kernel
    /// allows it.
    pub(crate) fn new(capacity: usize) -> Result<Pumps, Error> {
        Pumps::with_pipe_size(capacity, PIPE_SIZE)
    }

    #[cfg(test)]
    /// Like [`new`](Pumps::new), asking `F_SETPIPE_SZ` for `pipe_size` bytes per pipe
    /// (0 keeps the kernel's default). An unprivileged user past `pipe-user-pages-soft` gets
    /// smaller pipes; that only costs throughput.
    pub(crate) fn with_pipe_size(capacity: usize, pipe_size: usize) -> Result<Pumps, Error> {
        Pumps::with_limits(capacity, IDLE_PIPES.min(2 * capacity), pipe_size)
    }

    /// A table sized for a process whose soft descriptor limit is `limit` ([`limits_for`]).
    pub(crate) fn for_fd_limit(limit: u64) -> Result<Pumps, Error> {
        let (pairs, idle) = limits_for(limit);
        Pumps::with_limits(pairs, idle, PIPE_SIZE)
    }

    /// At most `capacity` pairs and `idle_pipes` pipes kept for reuse.
    fn with_limits(capacity: usize, idle_pipes: usize, pipe_size: usize) -> Result<Pumps, Error> {
        // Slot numbers go into 31 bits of the epoll data.
        let capacity = capacity.min(1 << 30);
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let mut pumps = Pumps {
            epoll,
            slots: Vec::new(),
            capacity,
            free: Vec::new(),
            // Room for the two of `ready_pipes` at least.
            pool: Vec::with_capacity(idle_pipes.max(2)),
            pipe_size,
            live: 0,
            pipes_created: 0,
        };
        pumps.grow(capacity.min(INITIAL_SLOTS));
        Ok(pumps)
    }

    /// Adds slots up to `to` in all; the new ones are taken lowest first.
    fn grow(&mut self, to: usize) {
        let from = self.slots.len();
        if to <= from {
            return;
        }
        self.slots.reserve_exact(to - from);
        self.free.reserve_exact(to - from);
        self.slots.extend((from..to).map(|_| Slot {
            generation: 0,
            pair: None,
        }));
        // Popped from the end: the lowest slot first.
        self.free.extend((from as u32..to as u32).rev());
    }

    /// The epoll fd: poll it for readability and call [`run_ready`](Pumps::run_ready).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Live pairs.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    #[cfg(test)]
    /// True when no pair is live.
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// True when every slot is taken: [`add`](Pumps::add) would fail with [`Error::Full`].
    pub(crate) fn is_full(&self) -> bool {
        self.live >= self.capacity
    }

    #[cfg(test)]
    /// Pipe and memory counters.
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            pipes_created: self.pipes_created,
            pipes_idle: self.pool.len(),
            heap_bytes: self.slots.capacity() * std::mem::size_of::<Slot>()
                + self.free.capacity() * std::mem::size_of::<u32>()
                + self.pool.capacity() * std::mem::size_of::<Pipe>(),
        }
    }

    #[cfg(test)]
    /// Starts moving bytes between two connected stream sockets, `a` (e.g. the accepted
    /// host connection) and `b` (e.g. the socket the child connected), both ways, tagged with
    /// `group` for [`close_group`](Pumps::close_group). Both are made non-blocking.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when every slot is taken, or the errno of a failed pipe, `ioctl` or
    /// epoll call. The sockets are closed then, so the peers see the connection end.
    pub(crate) fn add(&mut self, a: OwnedFd, b: OwnedFd, group: u32) -> Result<PairId, Error> {
        if self.is_full() {
            return Err(Error::Full);
        }
        rustix::io::ioctl_fionbio(&a, true)?;
        rustix::io::ioctl_fionbio(&b, true)?;
        self.add_nonblocking(a, b, group)
    }

    /// [`add`](Pumps::add) for sockets that are non-blocking already (accepted or made with
    /// `SOCK_NONBLOCK`): two system calls fewer per connection.
    pub(crate) fn add_nonblocking(
        &mut self,
        a: OwnedFd,
        b: OwnedFd,
        group: u32,
    ) -> Result<PairId, Error> {
        if self.free.is_empty() {
            self.grow(self.slots.len().saturating_mul(2).min(self.capacity));
        }
        let Some(&slot) = self.free.last() else {
            return Err(Error::Full);
        };
        let p0 = self.take_pipe()?;
        let p1 = match self.take_pipe() {
            Ok(p) => p,
            Err(e) => {
                self.put_pipe(p0);
                return Err(e);
            }
        };
        let generation = self.slots[slot as usize].generation;
        let registered = epoll::add(&self.epoll, &a, data(slot, generation, 0), interest())
            .and_then(|()| {
                epoll::add(&self.epoll, &b, data(slot, generation, 1), interest()).inspect_err(
                    |_| {
                        let _ = epoll::delete(&self.epoll, &a);
                    },
                )
            });
        if let Err(e) = registered {
            self.put_pipe(p0);
            self.put_pipe(p1);
            return Err(e.into());
        }
        self.free.pop();
        let dir = |pipe| Dir {
            pipe,
            buffered: 0,
            eof: false,
            shut: false,
        };
        self.slots[slot as usize].pair = Some(Pair {
            fds: [a, b],
            dirs: [dir(p0), dir(p1)],
            group,
        });
        self.live += 1;
        // Data may have arrived before registration; edge triggering reports the state at
        // `EPOLL_CTL_ADD` (both sockets are writable), so the first pass runs from the queue.
        Ok(PairId { slot, generation })
    }

    /// Handles the events that are ready now without waiting: splices what can move, shuts
    /// write sides after EOF, closes finished and failed pairs. Returns how many events it
    /// handled; when that is [`EVENTS`] more may be queued (the epoll fd stays readable).
    pub(crate) fn run_ready(&mut self) -> usize {
        let mut events = [Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        }; EVENTS];
        let n = match epoll::wait(&self.epoll, &mut events, Some(&Timespec::default())) {
            Ok(n) => n,
            Err(_) => return 0,
        };
        for ev in &events[..n] {
            let raw = ev.data.u64();
            let generation = (raw >> 32) as u32;
            let slot = ((raw & 0xffff_ffff) >> 1) as usize;
            let flags = ev.flags;
            let Some(entry) = self.slots.get_mut(slot) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            let Some(pair) = entry.pair.as_mut() else {
                continue;
            };
            let pass = if flags.contains(EventFlags::ERR) {
                Pass::Failed
            } else {
                pump_pair(pair)
            };
            match pass {
                Pass::Idle => {}
                Pass::Busy => {
                    // Re-arm: EPOLL_CTL_MOD queues a socket again if it is ready.
                    let ok = (0..2).all(|side| {
                        let d = data(slot as u32, generation, side);
                        epoll::modify(&self.epoll, &pair.fds[side], d, interest()).is_ok()
                    });
                    if !ok {
                        self.close_slot(slot);
                    }
                }
                Pass::Done | Pass::Failed => self.close_slot(slot),
            }
        }
        n
    }

    #[cfg(test)]
    /// Closes a pair at once (both sockets; the peers see EOF, or a reset where unread data
    /// remains). Returns false when `id` is not live.
    pub(crate) fn close(&mut self, id: PairId) -> bool {
        let slot = id.slot as usize;
        match self.slots.get(slot) {
            Some(s) if s.generation == id.generation && s.pair.is_some() => {
                self.close_slot(slot);
                true
            }
            _ => false,
        }
    }

    /// Closes every live pair added with `group`, e.g. when its published port is removed.
    /// Returns how many it closed.
    pub(crate) fn close_group(&mut self, group: u32) -> usize {
        let mut closed = 0;
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .pair
                .as_ref()
                .is_some_and(|p| p.group == group)
            {
                self.close_slot(slot);
                closed += 1;
            }
        }
        closed
    }

    fn close_slot(&mut self, slot: usize) {
        let entry = &mut self.slots[slot];
        let Some(pair) = entry.pair.take() else {
            return;
        };
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(slot as u32);
        self.live -= 1;
        let Pair { fds, dirs, .. } = pair;
        // Closing takes a socket out of the epoll set, unless a copy of it lives on elsewhere
        // (say, the child had not closed its copy yet); events of such a straggler carry the
        // old generation and are ignored.
        drop(fds);
        for d in dirs {
            if d.buffered == 0 {
                self.put_pipe(d.pipe);
            }
        }
    }

    /// Closes the idle pipes (the pool keeps its room): when the process is out of
    /// descriptors, they serve better elsewhere. Returns how many descriptors that freed.
    pub(crate) fn release_idle_pipes(&mut self) -> usize {
        let n = self.pool.len();
        self.pool.clear();
        2 * n
    }

    /// Makes sure the next pair's two pipes are at hand in the idle pool, creating them now if
    /// need be: a caller short of descriptors learns it before it accepts a connection, rather
    /// than after (when it could only close it).
    ///
    /// # Errors
    /// The errno of a failed `pipe` (`EMFILE` when out of descriptors).
    pub(crate) fn ready_pipes(&mut self) -> Result<(), Error> {
        while self.pool.len() < 2 {
            let p = self.new_pipe()?;
            self.pool.push(p);
        }
        Ok(())
    }

    fn take_pipe(&mut self) -> Result<Pipe, Error> {
        match self.pool.pop() {
            Some(p) => Ok(p),
            None => self.new_pipe(),
        }
    }

    fn new_pipe(&mut self) -> Result<Pipe, Error> {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        if self.pipe_size > 0 {
            let _ = fcntl_setpipe_size(&w, self.pipe_size);
        }
        let cap = fcntl_getpipe_size(&w)?;
        self.pipes_created += 1;
        Ok(Pipe { r, w, cap })
    }

    fn put_pipe(&mut self, p: Pipe) {
        // Never grows; the rest are closed and give their pages back.
        if self.pool.len() < self.pool.capacity() {
            self.pool.push(p);
        }
    }
}

/// Pumps both directions of `pair` until neither moves or the budget is spent.
fn pump_pair(pair: &mut Pair) -> Pass {
    let mut budget = BUDGET;
    loop {
        let mut moved = false;
        for d in 0..2 {
            let (src, dst) = (&pair.fds[d], &pair.fds[1 - d]);
            let last = pair.dirs[1 - d].shut;
            match pump_dir(&mut pair.dirs[d], src, dst, last) {
                Ok(m) => moved |= m,
                Err(_) => return Pass::Failed,
            }
        }
        if pair.dirs[0].shut && pair.dirs[1].shut {
            return Pass::Done;
        }
        if !moved {
            return Pass::Idle;
        }
        budget -= 1;
        if budget == 0 {
            return Pass::Busy;
        }
    }
}

/// One round of one direction: fill the pipe from `src`, drain it into `dst`, shut `dst`'s
/// write side once `src` is at EOF and the pipe is empty. When this is the `last` direction
/// (the other one is shut already), the pair is closed next and close sends the FIN, so no
/// shutdown is needed. Returns whether a byte moved.
fn pump_dir(dir: &mut Dir, src: &OwnedFd, dst: &OwnedFd, last: bool) -> Result<bool, Errno> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut moved = false;
    if !dir.eof && dir.buffered < dir.pipe.cap {
        match splice(
            src,
            None,
            &dir.pipe.w,
            None,
            dir.pipe.cap - dir.buffered,
            flags,
        ) {
            Ok(0) => dir.eof = true,
            Ok(n) => {
                dir.buffered += n;
                moved = true;
            }
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    if dir.buffered > 0 {
        match splice(&dir.pipe.r, None, dst, None, dir.buffered, flags) {
            Ok(n) => {
                dir.buffered -= n;
                moved |= n > 0;
            }
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    if dir.eof && dir.buffered == 0 && !dir.shut && last {
        dir.shut = true;
    }
    if dir.eof && dir.buffered == 0 && !dir.shut {
        match shutdown(dst, Shutdown::Write) {
            // The peer may be gone already; the other direction finds out by itself.
            Ok(()) | Err(Errno::NOTCONN) => dir.shut = true,
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{PollFd, PollFlags, poll};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, Shutdown as Half, SocketAddr, TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    fn loopback() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    /// Bytes that differ per connection, so crossed or lost chunks show.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A backend: every accepted connection goes to `serve` on its own thread.
    fn backend(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
        let l = TcpListener::bind(loopback()).unwrap();
        let addr = l.local_addr().unwrap();
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let serve = serve.clone();
                thread::spawn(move || serve(s));
            }
        });
        addr
    }

    /// Echoes until EOF, then shuts its write side.
    fn echo(mut s: TcpStream) {
        let mut r = s.try_clone().unwrap();
        let _ = std::io::copy(&mut r, &mut s);
        let _ = s.shutdown(Half::Write);
    }

    /// The proxy under test: a front listener and the pumps, driven by a poll loop like the
    /// parent's main loop.
    struct Proxy {
        front: TcpListener,
        backend: SocketAddr,
        pumps: Pumps,
        group: u32,
        refused: usize,
    }

    impl Proxy {
        fn new(capacity: usize, backend: SocketAddr) -> Proxy {
            Proxy::with_pumps(Pumps::new(capacity).unwrap(), backend)
        }

        fn with_pumps(pumps: Pumps, backend: SocketAddr) -> Proxy {
            let front = TcpListener::bind(loopback()).unwrap();
            front.set_nonblocking(true).unwrap();
            Proxy {
                front,
                backend,
                pumps,
                group: 0,
                refused: 0,
            }
        }

        fn addr(&self) -> SocketAddr {
            self.front.local_addr().unwrap()
        }

        /// One turn of the main loop.
        fn turn(&mut self) {
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            let mut fds = [
                PollFd::new(&self.front, PollFlags::IN),
                PollFd::new(&self.pumps.epoll, PollFlags::IN),
            ];
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => panic!("poll: {e}"),
            }
            let (accept, ready) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
            if accept {
                while let Ok((c, _)) = self.front.accept() {
                    let b = TcpStream::connect(self.backend).unwrap();
                    if self.pumps.add(c.into(), b.into(), self.group).is_err() {
                        self.refused += 1;
                    }
                }
            }
            if ready {
                self.pumps.run_ready();
            }
        }

        /// Turns until `done` holds; panics after 60 s.
        fn run_until(&mut self, mut done: impl FnMut(&Proxy) -> bool) {
            let start = Instant::now();
            while !done(self) {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "proxy test timed out"
                );
                self.turn();
            }
        }

        /// Turns until every client thread ended, then the pumps are empty; returns results.
        fn run_clients<T>(&mut self, clients: Vec<JoinHandle<T>>) -> Vec<T> {
            self.run_until(|p| clients.iter().all(|c| c.is_finished()) && p.pumps.is_empty());
            clients.into_iter().map(|c| c.join().unwrap()).collect()
        }
    }

    /// Sends `len` bytes, shuts its write side, reads to EOF; true when the echo matches.
    fn echo_client(addr: SocketAddr, len: usize, seed: u64) -> JoinHandle<bool> {
        thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = thread::spawn(move || {
                w.write_all(&pattern(len, seed)).unwrap();
                w.shutdown(Half::Write).unwrap();
            });
            let mut got = Vec::with_capacity(len);
            s.read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            got == pattern(len, seed)
        })
    }

    #[test]
    fn one_megabyte_each_way() {
        let mut p = Proxy::new(16, backend(echo));
        let clients = (0..2).map(|i| echo_client(p.addr(), 1 << 20, i)).collect();
        assert_eq!(p.run_clients(clients), [true, true]);
    }

    #[test]
    fn one_page_pipes_still_carry_everything() {
        // What an unprivileged user past its pipe quota gets, or smaller.
        let pumps = Pumps::with_pipe_size(4, 4096).unwrap();
        let mut p = Proxy::with_pumps(pumps, backend(echo));
        let clients = vec![echo_client(p.addr(), 1 << 20, 5)];
        assert_eq!(p.run_clients(clients), [true]);
    }

    #[test]
    fn many_concurrent_connections_without_growth() {
        let mut p = Proxy::new(256, backend(echo));
        let before = p.pumps.stats().heap_bytes;
        let clients = (0..200)
            .map(|i| echo_client(p.addr(), 64 << 10, i))
            .collect();
        let results = p.run_clients(clients);
        assert_eq!(results.iter().filter(|ok| **ok).count(), 200);
        let stats = p.pumps.stats();
        assert_eq!(stats.heap_bytes, before);
        assert!(stats.pipes_created <= 400, "{stats:?}");
        assert_eq!(stats.pipes_idle, IDLE_PIPES);
        assert_eq!(p.refused, 0);
    }

    #[test]
    fn half_close_client_first() {
        // The backend answers only after EOF: the count it received, then 1 MiB.
        let mut p = Proxy::new(
            4,
            backend(|mut s| {
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                s.write_all(&(got.len() as u64).to_le_bytes()).unwrap();
                s.write_all(&pattern(1 << 20, 7)).unwrap();
            }),
        );
        let addr = p.addr();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[1; 100]).unwrap();
            s.shutdown(Half::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let got = p.run_clients(vec![client]).pop().unwrap();
        assert_eq!(got[..8], 100u64.to_le_bytes());
        assert!(got[8..] == pattern(1 << 20, 7));
    }

    #[test]
    fn half_close_backend_first() {
        // The backend greets, shuts its write side, then still receives until EOF.
        let (tx, rx) = mpsc::channel();
        let mut p = Proxy::new(
            4,
            backend(move |mut s| {
                s.write_all(b"hello").unwrap();
                s.shutdown(Half::Write).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                tx.send(got).unwrap();
            }),
        );
        let addr = p.addr();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&pattern(300_000, 3)).unwrap();
            s.shutdown(Half::Write).unwrap();
            got
        });
        assert_eq!(p.run_clients(vec![client]), [b"hello".to_vec()]);
        assert!(rx.recv().unwrap() == pattern(300_000, 3));
    }

    fn reset(s: TcpStream) {
        rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
        drop(s);
    }

    #[test]
    fn backend_reset_closes_the_pair() {
        let mut p = Proxy::new(
            4,
            backend(|mut s| {
                let mut b = [0; 5];
                s.read_exact(&mut b).unwrap();
                reset(s);
            }),
        );
        let addr = p.addr();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"hello").unwrap();
            let mut b = [0; 16];
            // Either EOF or a reset: the connection ended, it did not hang.
            matches!(s.read(&mut b), Ok(0) | Err(_))
        });
        assert_eq!(p.run_clients(vec![client]), [true]);
    }

    #[test]
    fn client_reset_closes_the_pair() {
        let (tx, rx) = mpsc::channel();
        let mut p = Proxy::new(
            4,
            backend(move |mut s| {
                let mut got = Vec::new();
                // EOF or a reset, either way the read returns instead of hanging.
                let _ = s.read_to_end(&mut got);
                tx.send(()).unwrap();
            }),
        );
        let addr = p.addr();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[9; 1000]).unwrap();
            thread::sleep(Duration::from_millis(50));
            reset(s);
        });
        p.run_clients(vec![client]);
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn close_group_closes_only_its_live_pairs() {
        let mut p = Proxy::new(8, backend(echo));
        let (pinged, pings) = mpsc::channel();
        let spawn = |p: &mut Proxy, group: u32, go: Option<mpsc::Receiver<()>>| {
            p.group = group;
            let (addr, pinged) = (p.addr(), pinged.clone());
            let client = thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let mut b = [0; 4];
                s.write_all(b"ping").unwrap();
                s.read_exact(&mut b).unwrap();
                pinged.send(()).unwrap();
                match go {
                    // Still forwarded after the other group closed.
                    Some(go) => {
                        go.recv().unwrap();
                        s.write_all(b"pong").unwrap();
                        s.read_exact(&mut b).is_ok() && &b == b"pong"
                    }
                    // Closed under us: EOF or a reset.
                    None => matches!(s.read(&mut b), Ok(0) | Err(_)),
                }
            });
            let mut n = 0;
            p.run_until(|_| {
                n += pings.try_recv().is_ok() as usize;
                n == 1
            });
            client
        };
        let doomed: Vec<_> = (0..3).map(|_| spawn(&mut p, 1, None)).collect();
        let (go, kept) = {
            let (tx, rx) = mpsc::channel();
            (tx, spawn(&mut p, 2, Some(rx)))
        };
        assert_eq!(p.pumps.len(), 4);
        assert_eq!(p.pumps.close_group(1), 3);
        assert_eq!(p.pumps.len(), 1);
        go.send(()).unwrap();
        p.run_until(|_| kept.is_finished() && doomed.iter().all(|c| c.is_finished()));
        assert!(kept.join().unwrap());
        assert!(doomed.into_iter().all(|c| c.join().unwrap()));
        assert_eq!(p.pumps.close_group(1), 0);
    }

    #[test]
    fn capacity_overflow_is_an_error_and_closes_the_sockets() {
        let mut pumps = Pumps::new(2).unwrap();
        let mut peers = Vec::new();
        fn add(
            pumps: &mut Pumps,
            peers: &mut Vec<(UnixStream, UnixStream)>,
        ) -> Result<PairId, Error> {
            let (a, pa) = UnixStream::pair().unwrap();
            let (b, pb) = UnixStream::pair().unwrap();
            peers.push((pa, pb));
            pumps.add(a.into(), b.into(), 0)
        }
        let first = add(&mut pumps, &mut peers).unwrap();
        assert!(add(&mut pumps, &mut peers).is_ok());
        assert_eq!(add(&mut pumps, &mut peers), Err(Error::Full));
        assert_eq!(Error::Full.to_string(), "too many connections");
        assert_eq!(pumps.len(), 2);
        // The refused pair's sockets are closed: its peers read EOF.
        let (mut pa, mut pb) = peers.pop().unwrap();
        assert_eq!(pa.read(&mut [0; 1]).unwrap(), 0);
        assert_eq!(pb.read(&mut [0; 1]).unwrap(), 0);
        // A freed slot takes the next pair; the stale id no longer closes anything.
        assert!(pumps.close(first));
        assert!(!pumps.close(first));
        assert!(add(&mut pumps, &mut peers).is_ok());
        assert_eq!(add(&mut pumps, &mut peers), Err(Error::Full));
    }

    #[test]
    fn the_table_and_the_pipe_pool_follow_the_descriptor_limit() {
        for limit in [256, 1024, 4096, 20_000, 1 << 20, u64::MAX] {
            let (pairs, idle) = limits_for(limit);
            let used = pairs as u64 * FDS_PER_PAIR + 2 * idle as u64;
            // A full table and pool leave at least an eighth of the limit (and 256) free.
            assert!(
                limit < 512 || used + (limit.min(1 << 24) / 8).max(256) <= limit,
                "{limit}: {pairs} pairs, {idle} idle pipes"
            );
            assert!(idle <= IDLE_PIPES);
        }
        assert_eq!(limits_for(1024), (122, 16));
        // 2,000 held connections fit under the hard limit of 20,000 the tests run with.
        assert!(limits_for(20_000).0 > 2_000);
    }

    #[test]
    fn the_table_grows_to_its_capacity_and_no_further() {
        let mut pumps = Pumps::with_limits(INITIAL_SLOTS + 2, 0, 0).unwrap();
        let mut peers = Vec::new();
        for _ in 0..INITIAL_SLOTS + 2 {
            let (a, pa) = UnixStream::pair().unwrap();
            let (b, pb) = UnixStream::pair().unwrap();
            peers.push((pa, pb));
            pumps.add(a.into(), b.into(), 0).unwrap();
        }
        assert!(pumps.is_full());
        let (a, _pa) = UnixStream::pair().unwrap();
        let (b, _pb) = UnixStream::pair().unwrap();
        assert_eq!(pumps.add(a.into(), b.into(), 0), Err(Error::Full));
        assert_eq!(pumps.slots.len(), INITIAL_SLOTS + 2);
        assert_eq!(pumps.close_group(0), INITIAL_SLOTS + 2);
    }

    #[test]
    fn pipes_are_reused() {
        let mut p = Proxy::new(4, backend(echo));
        for i in 0..5 {
            let client = echo_client(p.addr(), 10_000, i);
            assert_eq!(p.run_clients(vec![client]), [true]);
        }
        let stats = p.pumps.stats();
        assert_eq!((stats.pipes_created, stats.pipes_idle), (2, 2));
        assert_eq!(p.pumps.release_idle_pipes(), 4);
        assert_eq!(p.pumps.stats().pipes_idle, 0);
    }

    #[test]
    fn unix_pair_both_ways() {
        // Any stream socket works; no poll loop, just run_ready until quiet.
        let mut pumps = Pumps::new(1).unwrap();
        let (a, mut pa) = UnixStream::pair().unwrap();
        let (b, mut pb) = UnixStream::pair().unwrap();
        pumps.add(a.into(), b.into(), 0).unwrap();
        pa.write_all(b"to b").unwrap();
        pb.write_all(b"to a").unwrap();
        pa.shutdown(Half::Write).unwrap();
        while pumps.run_ready() > 0 {}
        let mut got = Vec::new();
        pb.shutdown(Half::Write).unwrap();
        while pumps.run_ready() > 0 {}
        pb.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"to b");
        got.clear();
        pa.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"to a");
        assert!(pumps.is_empty());
    }

    /// Sends `total` bytes one way through `addr` to a counting sink; returns MB/s.
    fn throughput(addr: SocketAddr, total: usize) -> JoinHandle<f64> {
        thread::spawn(move || {
            let start = Instant::now();
            let mut s = TcpStream::connect(addr).unwrap();
            let chunk = vec![0x5a; 64 << 10];
            for _ in 0..total / chunk.len() {
                s.write_all(&chunk).unwrap();
            }
            s.shutdown(Half::Write).unwrap();
            let mut n = [0; 8];
            s.read_exact(&mut n).unwrap();
            assert_eq!(u64::from_le_bytes(n), total as u64);
            total as f64 / start.elapsed().as_secs_f64() / 1e6
        })
    }

    fn sink(mut s: TcpStream) {
        let n = std::io::copy(&mut s, &mut std::io::sink()).unwrap();
        s.write_all(&n.to_le_bytes()).unwrap();
    }

    #[test]
    fn throughput_micro_check() {
        const TOTAL: usize = 128 << 20;
        let target = backend(sink);
        let mut p = Proxy::new(4, target);
        let spliced = p.run_clients(vec![throughput(p.addr(), TOTAL)])[0];

        // The same through a plain proxy: one std::io::copy thread per direction.
        let front = TcpListener::bind(loopback()).unwrap();
        let addr = front.local_addr().unwrap();
        thread::spawn(move || {
            let (c, _) = front.accept().unwrap();
            let b = TcpStream::connect(target).unwrap();
            let (mut c2, mut b2) = (c.try_clone().unwrap(), b.try_clone().unwrap());
            let up = thread::spawn(move || {
                std::io::copy(&mut c2, &mut b2).unwrap();
                b2.shutdown(Half::Write).unwrap();
            });
            let (mut c, mut b) = (c, b);
            std::io::copy(&mut b, &mut c).unwrap();
            up.join().unwrap();
        });
        let copied = throughput(addr, TOTAL).join().unwrap();
        let direct = throughput(target, TOTAL).join().unwrap();
        println!(
            "pump throughput, {} MiB one way: splice pumps {spliced:.0} MB/s, \
             io::copy threads {copied:.0} MB/s, direct {direct:.0} MB/s",
            TOTAL >> 20
        );
    }
}
