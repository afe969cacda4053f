//! The builtin port driver, parent side: listeners on the host, one epoll set for them, and
//! the splice pumps. Each accepted connection is matched with a socket made by the child
//! inside the namespace, which the parent connects itself: the child hands sockets over in
//! batches (SCM_RIGHTS on the proto socket), so a connection costs no round trip through it.
//! UDP ports keep a bounded flow table: one connected socket per client address, whose
//! replies go back through the listener.
//!
//! With `--source-ip-transparent`, TCP connections to a server in the namespace come from
//! the client's own address: the child marks those sockets `IP_TRANSPARENT` with a routing
//! mark whose replies it routes back locally, and the parent binds them to the client's
//! address before connecting. UDP flows do too: their sockets are `IP_TRANSPARENT`, bound to
//! the client's address and left unconnected, and for each client address with a live flow
//! the child keeps a local route that only the server port's UDP traffic looks up
//! ([`Msg::UdpRoute`], counted per address here), so the server's replies come back to that
//! socket instead of leaving by the default route.
//!
//! Nothing here waits for the child: a listener whose next connection (or new UDP client)
//! needs a socket that has not arrived yet, or a reply route not yet confirmed, leaves the
//! epoll set, and what arrives meanwhile stays in the kernel (the listen backlog, the socket's
//! receive queue) until the child's answer is read from the loop. A listener out of
//! descriptors, or with the pumps full, pauses the same way ([`crate::backoff`]).

use std::cell::{RefCell, RefMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::backoff::{AcceptPause, Throttle, nofile_limit, out_of_descriptors};

use proto::{MAX_SOCKETS, Msg, SocketKind, SocketsWanted, UdpRoute};
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketAddrV4, SocketAddrV6, SocketFlags,
    SocketType, acceptfrom_with, bind, connect, listen, recv, recvfrom, send, sendto, socket_with,
    sockopt,
};

use super::pump::Pumps;
use super::spec::{check_family, parse_ip};
use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};

/// Accepts handled per wakeup and listener before the loop gets a turn again.
const ACCEPT_BURST: usize = 64;
/// UDP clients remembered per port; a new one beyond that replaces the least recently seen.
const MAX_FLOWS: usize = 256;
/// A UDP flow with no datagram either way for this long is closed (looked for at most every
/// quarter of it, on the port's next datagram).
const FLOW_IDLE: Duration = Duration::from_secs(90);
/// The largest UDP payload over IPv4, the size of the one datagram buffer.
const DATAGRAM_MAX: usize = 65507;
/// Epoll data of a listener is its port id; these values of the upper half mark a UDP
/// listener, and (plus the slot) a UDP flow's socket. Zero is a TCP listener.
const UDP_LISTENER: u64 = 1;
const UDP_FLOW: u64 = 2;

/// Pools of sockets made by the child: IPv4 and IPv6, each TCP, UDP, transparent TCP and
/// transparent UDP (the `kind` of `SocketsWanted`).
const POOLS: usize = 8;
/// How many frames of the child one turn of the loop reads at most.
const CHILD_BURST: usize = 16;
/// A pool this low asks for the next batch, so one is usually there before it runs dry.
const LOW_WATER: usize = MAX_SOCKETS as usize / 2;
/// Epoll data of the child's socket in the listeners' set.
const CHILD_EVENT: u64 = u64::MAX;

/// Where connections to a port go inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    addr: SocketAddr,
    udp: bool,
    /// Connections may come from the client's address (TCP to an address of the namespace,
    /// with `--source-ip-transparent`).
    transparent: bool,
}

/// Sockets the child made, waiting to be connected.
struct Pool {
    fds: Vec<OwnedFd>,
}

/// One UDP client: its address and the socket inside for it.
struct Flow {
    peer: SocketAddrAny,
    sock: OwnedFd,
    last: Instant,
    /// Transparent: the socket is bound to the client's address and unconnected (replies
    /// may come from any address of the server's); datagrams go to this target.
    to: Option<SocketAddr>,
    /// The client address whose reply route this flow holds.
    routed: Option<IpAddr>,
}

/// Why a listener is out of the epoll set, or that it is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Registered: connections (datagrams) are taken as they come.
    Armed,
    /// For a socket or a reply route from the child: until its next answer.
    Child,
    /// Every pump slot is taken: until a pair closes.
    Full,
    /// Out of descriptors: until one is freed or the pause ends.
    Descriptors,
}

struct Port {
    status: PortStatus,
    listener: OwnedFd,
    target: Target,
    wait: Wait,
    /// UDP only: up to `MAX_FLOWS` slots, added as clients come (a slot is some 200 bytes, and
    /// hundreds of UDP ports may be published).
    flows: Vec<Option<Flow>>,
    /// UDP only: when idle flows were last looked for.
    swept: Instant,
}

struct State {
    next_id: u32,
    ports: Vec<Port>,
    pumps: Pumps,
    supply: Supply,
    /// Holds one datagram in flight; allocated with the first UDP port.
    buf: Vec<u8>,
    /// [`FLOW_IDLE`], shorter in tests.
    flow_idle: Duration,
    /// Set when an accept runs out of descriptors.
    pause: AcceptPause,
    /// The warnings for running out of descriptors and of pump slots.
    warned_fds: Throttle,
    warned_full: Throttle,
}

/// An answer the child owes, in the order asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// A batch for this pool.
    Batch(usize),
    /// `UdpRouted` for a reply route to `client` for server port `port`.
    Route { port: u16, client: IpAddr },
}

/// Where sockets inside the namespace come from.
struct Supply {
    child: Option<UnixStream>,
    /// Sockets from the child, by [`pool_index`]; each holds at most one batch and a half.
    pools: [Pool; POOLS],
    /// Answers asked for, oldest first (at most one batch per pool, one route per address and
    /// port).
    pending: Vec<Ask>,
    /// Pools whose last batch came back empty (the child could not make sockets): their
    /// connections are closed rather than kept waiting, until a batch comes.
    failed: [bool; POOLS],
    /// An answer came (or the child went) since the listeners waiting for one were re-armed.
    answered: bool,
    /// A batch came without its descriptors (this process is out of them): the listeners
    /// waiting for the child wait for descriptors instead.
    short: bool,
    /// The listeners' epoll set, where the child's socket is registered.
    epoll: Option<OwnedFd>,
    /// `--source-ip-transparent`, and the child's address on its interface (a connection
    /// to it, like one to loopback, stays in the namespace).
    transparent: bool,
    child_ip: Option<IpAddr>,
    /// UDP flows may come from the client's address (until the child could not route).
    udp_transparent: bool,
    /// Client addresses with a reply route inside, and how many flows hold each.
    routes: Vec<(IpAddr, u32)>,
    /// Server ports (IPv4?, port) the child has a reply rule for.
    ruled: Vec<(bool, u16)>,
}

/// The driver; shared with the API server as `Rc<dyn PortDriver>`, on the parent's one thread.
pub(crate) struct Builtin {
    /// Readable when a listener has a connection waiting.
    listeners: OwnedFd,
    /// A second handle on the pumps' epoll set (which lives in the state), for the parent's
    /// loop to wait on.
    pumps_fd: OwnedFd,
    state: RefCell<State>,
}

impl Builtin {
    /// An empty driver.
    ///
    /// # Errors
    /// When the epoll sets cannot be created.
    pub(crate) fn new() -> Result<Builtin, String> {
        let pumps = Pumps::for_fd_limit(nofile_limit()).map_err(|e| format!("port driver: {e}"))?;
        let pumps_fd = pumps
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("port driver: {e}"))?;
        let listeners =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| format!("port driver: {e}"))?;
        Ok(Builtin {
            listeners,
            pumps_fd,
            state: RefCell::new(State {
                next_id: 1,
                ports: Vec::new(),
                pumps,
                supply: Supply {
                    child: None,
                    pools: std::array::from_fn(|_| Pool {
                        fds: Vec::with_capacity(LOW_WATER + usize::from(MAX_SOCKETS)),
                    }),
                    pending: Vec::with_capacity(2 * POOLS),
                    failed: [false; POOLS],
                    answered: false,
                    short: false,
                    epoll: None,
                    transparent: false,
                    child_ip: None,
                    udp_transparent: false,
                    routes: Vec::new(),
                    ruled: Vec::new(),
                },
                buf: Vec::new(),
                flow_idle: FLOW_IDLE,
                pause: AcceptPause::default(),
                warned_fds: Throttle::default(),
                warned_full: Throttle::default(),
            }),
        })
    }

    /// The state, for one call: no method calls another while holding it.
    fn lock(&self) -> RefMut<'_, State> {
        self.state.borrow_mut()
    }

    /// The socket on which the child hands over sockets. Its answers are read from the
    /// parent's loop as they come (it is in the listeners' epoll set).
    pub(crate) fn attach_child(&self, sock: UnixStream) {
        let mut st = self.lock();
        st.supply.epoll = self.listeners.try_clone().ok();
        if let Some(ep) = &st.supply.epoll {
            let _ = epoll::add(
                ep,
                &sock,
                epoll::EventData::new_u64(CHILD_EVENT),
                epoll::EventFlags::IN,
            );
        }
        st.supply.child = Some(sock);
    }

    /// `--source-ip-transparent`: TCP connections and UDP flows to loopback or to `child_ip`
    /// inside come from the client's address. Ports added before this keep their targets.
    pub(crate) fn enable_transparency(&self, child_ip: Option<IpAddr>) {
        let mut st = self.lock();
        st.supply.transparent = true;
        st.supply.udp_transparent = true;
        st.supply.child_ip = child_ip;
    }

    /// The two descriptors the parent's loop polls: waiting connections, and data to move.
    pub(crate) fn poll_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.listeners.as_fd(), self.pumps_fd.as_fd()]
    }

    /// Accepts waiting connections and has the child connect the other end of each; reads the
    /// child's answers. Also call it when [`Builtin::timeout`] has run out.
    pub(crate) fn accept_ready(&self) {
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 16];
        let n = match epoll::wait(
            &self.listeners,
            &mut events,
            Some(&rustix::event::Timespec::default()),
        ) {
            Ok(n) => n,
            Err(_) => return,
        };
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = Instant::now();
        if !st.pause.is_paused(now) {
            wake(st, &self.listeners, Wait::Descriptors);
        }
        for ev in &events[..n] {
            let raw = ev.data.u64();
            if raw == CHILD_EVENT {
                st.supply.receive_ready();
                continue;
            }
            let id = raw as u32;
            if raw >> 32 >= UDP_FLOW {
                udp_ready(st, &self.listeners, id, raw >> 32);
                continue;
            }
            let Some(pi) = st.ports.iter().position(|p| p.status.id == id) else {
                continue;
            };
            // An event queued before the listener left the set.
            if st.ports[pi].wait != Wait::Armed {
                continue;
            }
            if raw >> 32 == UDP_LISTENER {
                udp_ready(st, &self.listeners, id, raw >> 32);
            } else {
                accept_tcp(st, &self.listeners, pi, now);
            }
        }
        if std::mem::take(&mut st.supply.short) {
            // Asking again at once would only repeat it: wait for a descriptor to be freed.
            st.pause.pause(now);
            for p in st.ports.iter_mut().filter(|p| p.wait == Wait::Child) {
                p.set_wait(&self.listeners, Wait::Descriptors);
            }
        }
        if std::mem::take(&mut st.supply.answered) {
            wake(st, &self.listeners, Wait::Child);
        }
    }

    /// Moves whatever data is ready.
    pub(crate) fn pump_ready(&self) {
        let mut st = self.lock();
        let before = st.pumps.len();
        st.pumps.run_ready();
        if st.pumps.len() < before {
            freed(&mut st, &self.listeners);
        }
    }

    /// How long the parent's loop may wait before [`Builtin::accept_ready`] must run although
    /// nothing is readable: until a listener paused for want of descriptors may try again.
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        let st = self.lock();
        let paused = st.ports.iter().any(|p| p.wait == Wait::Descriptors);
        let until = st.pause.deadline().filter(|_| paused)?;
        Some(until.saturating_duration_since(now) + Duration::from_millis(1))
    }
}

/// Epoll data of a port's listener.
fn listener_data(port: &Port) -> epoll::EventData {
    let kind = if port.target.udp { UDP_LISTENER } else { 0 };
    epoll::EventData::new_u64(kind << 32 | u64::from(port.status.id))
}

impl Port {
    /// Takes the listener out of the epoll set (any wait) or puts it back ([`Wait::Armed`]).
    fn set_wait(&mut self, epfd: &OwnedFd, wait: Wait) {
        if (wait == Wait::Armed) != (self.wait == Wait::Armed) {
            let flags = if wait == Wait::Armed {
                epoll::EventFlags::IN
            } else {
                epoll::EventFlags::empty()
            };
            let _ = epoll::modify(epfd, &self.listener, listener_data(self), flags);
        }
        self.wait = wait;
    }
}

/// Re-arms every listener that waits for `why`.
fn wake(st: &mut State, epfd: &OwnedFd, why: Wait) {
    for p in st.ports.iter_mut().filter(|p| p.wait == why) {
        p.set_wait(epfd, Wait::Armed);
    }
}

/// A pair closed: its descriptors and its slot are free again.
fn freed(st: &mut State, epfd: &OwnedFd) {
    st.pause.resume();
    wake(st, epfd, Wait::Full);
    wake(st, epfd, Wait::Descriptors);
}

/// Takes the listener of `st.ports[pi]` out of the set until descriptors are freed, and says
/// so (once a minute at most).
fn out_of_fds(st: &mut State, epfd: &OwnedFd, pi: usize, now: Instant, e: Errno) {
    // Idle pipes are descriptors too: the API and the next connection need them more.
    st.pumps.release_idle_pipes();
    st.pause.pause(now);
    st.ports[pi].set_wait(epfd, Wait::Descriptors);
    st.warned_fds.warn(now, || {
        format!(
            "port driver: {}: {} forwarded connections, descriptor limit {}; new connections wait",
            sys::errno::text(e.raw_os_error()),
            st.pumps.len(),
            nofile_limit()
        )
    });
}

/// Accepts the connections waiting on TCP port `st.ports[pi]` while each can be served at
/// once: a socket from the child is at hand, a pump slot and descriptors are free. Otherwise
/// the listener waits out of the epoll set and the connections stay in its backlog.
fn accept_tcp(st: &mut State, epfd: &OwnedFd, pi: usize, now: Instant) {
    let id = st.ports[pi].status.id;
    let target = st.ports[pi].target;
    for _ in 0..ACCEPT_BURST {
        if st.pumps.is_full() {
            st.ports[pi].set_wait(epfd, Wait::Full);
            let (n, limit) = (st.pumps.len(), nofile_limit());
            st.warned_full.warn(now, || {
                format!(
                    "port driver: {n} forwarded connections, the most descriptor limit {limit} allows; new connections wait"
                )
            });
            return;
        }
        if !tcp_ready(&mut st.supply, target) {
            st.ports[pi].set_wait(epfd, Wait::Child);
            return;
        }
        // The pair's pipes before the connection: out of descriptors, it stays in the backlog.
        if let Err(super::pump::Error::Sys(e)) = st.pumps.ready_pipes() {
            return out_of_fds(st, epfd, pi, now, e);
        }
        let (conn, peer) = match acceptfrom_with(
            &st.ports[pi].listener,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        ) {
            Ok(c) => c,
            Err(Errno::INTR | Errno::CONNABORTED) => continue,
            Err(e) if out_of_descriptors(e) => return out_of_fds(st, epfd, pi, now, e),
            Err(_) => return,
        };
        let source = peer
            .and_then(|p| SocketAddr::try_from(p).ok())
            .and_then(|p| source_for(target, p));
        let Some(inner) = connect_inside(&mut st.supply, target, source) else {
            // The child cannot make sockets, or is gone, or the connect failed at once: the
            // client sees a close. A refusal that comes later closes the pair in the pumps.
            continue;
        };
        // On error both sockets are closed by the pumps.
        if let Err(super::pump::Error::Sys(e)) = st.pumps.add_nonblocking(conn, inner, id)
            && out_of_descriptors(e)
        {
            return out_of_fds(st, epfd, pi, now, e);
        }
    }
}

/// Whether a connection to `target` can be connected inside at once (or is to be refused at
/// once); asks the child for what runs low.
fn tcp_ready(sup: &mut Supply, target: Target) -> bool {
    let family = if target.addr.is_ipv4() { 4 } else { 6 };
    let plain = sup.can_take(pool_index(family, SocketKind::Tcp));
    // A transparent port needs both: its loopback clients connect from the namespace's own
    // address. Both are asked for (no short circuit).
    if target.transparent && sup.transparent {
        plain & sup.can_take(pool_index(family, SocketKind::TransparentTcp))
    } else {
        plain
    }
}

/// Which pool serves `family` (4 or 6) and `kind`.
fn pool_index(family: u8, kind: SocketKind) -> usize {
    usize::from(family == 6) * 4 + kind as usize
}

/// The address a connection to `target` should come from: the client's, when the port is
/// transparent and the client is not on the host's loopback (inside, that would be the
/// namespace's own) and of the target's family (an IPv4 client of a dual-stack listener
/// arrives as `::ffff:a.b.c.d`).
fn source_for(target: Target, client: SocketAddr) -> Option<SocketAddr> {
    if !target.transparent {
        return None;
    }
    let ip = match client.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() || ip.is_unspecified() || ip.is_ipv4() != target.addr.is_ipv4() {
        return None;
    }
    Some(SocketAddr::new(ip, client.port()))
}

impl Supply {
    /// Stops using the child's socket (it is gone or talks nonsense). The socket is a dup of
    /// the one the parent's loop watches, so it must leave the epoll set explicitly, or it
    /// would stay readable there at end of file. Listeners waiting for it go on (and refuse).
    fn lose_child(&mut self) {
        if let (Some(ep), Some(sock)) = (&self.epoll, &self.child) {
            let _ = epoll::delete(ep, sock);
        }
        self.child = None;
        self.pending.clear();
        self.answered = true;
    }

    /// Asks the child for a batch for pool `i` unless one is on its way.
    fn request(&mut self, i: usize) {
        if self.pending.contains(&Ask::Batch(i)) {
            return;
        }
        let Some(sock) = self.child.as_ref() else {
            return;
        };
        let want = Msg::SocketsWanted(SocketsWanted {
            family: if i < 4 { 4 } else { 6 },
            kind: SocketKind::ALL[i % 4],
            count: MAX_SOCKETS,
        });
        if sys::fdpass::send(sock, &want, &[]).is_err() {
            self.lose_child();
            return;
        }
        self.pending.push(Ask::Batch(i));
    }

    /// Reads the answers waiting on the child's socket (a few per turn, so a chatty child does
    /// not hold up the loop; the socket stays readable for the next turn). Checks readability
    /// first: an event for an answer that was read already must not be taken for a gone child.
    fn receive_ready(&mut self) {
        for _ in 0..CHILD_BURST {
            let Some(sock) = self.child.as_ref() else {
                return;
            };
            let mut fds = [rustix::event::PollFd::new(
                sock,
                rustix::event::PollFlags::IN,
            )];
            if !matches!(
                rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())),
                Ok(n) if n > 0
            ) {
                return;
            }
            self.receive();
        }
    }

    /// Reads the child's answer to the oldest request (the socket is readable), into its
    /// pool. The child answers in order, one frame each, so this never reads half a frame.
    fn receive(&mut self) {
        let Some(sock) = self.child.as_ref() else {
            return;
        };
        if self.pending.is_empty() {
            // Nothing asked: end of file (the child is gone) or garbage.
            self.lose_child();
            return;
        }
        self.answered = true;
        let i = match self.pending.remove(0) {
            Ask::Batch(i) => i,
            Ask::Route { port, client } => {
                let mut none = Vec::new();
                match sys::fdpass::recv(sock, &mut none) {
                    Ok(Msg::UdpRouted(r)) if none.is_empty() => self.routed(port, client, r.errno),
                    _ => self.lose_child(),
                }
                return;
            }
        };
        let pool = &mut self.pools[i];
        let before = pool.fds.len();
        match sys::fdpass::recv(sock, &mut pool.fds) {
            Ok(Msg::SocketsMade(m)) if i % 4 >= 2 && m.count > 0 && m.transparent == 0 => {
                // The child could not set up the routing for this family (it said why):
                // these are plain sockets, which must not be bound to a foreign address.
                pool.fds.truncate(before);
                if i % 4 == 2 {
                    self.transparent = false;
                } else {
                    self.udp_transparent = false;
                }
            }
            // Sent, but none arrived: the kernel had no descriptor for them (MSG_CTRUNC).
            Ok(Msg::SocketsMade(m)) if m.count > 0 && pool.fds.len() == before => {
                self.short = true;
            }
            Ok(Msg::SocketsMade(_)) => self.failed[i] = pool.fds.len() == before,
            _ => {
                pool.fds.truncate(before);
                self.lose_child();
            }
        }
    }

    /// Whether a transparent UDP flow from `client` to server port `port` has its reply route
    /// (and the port its rule) inside. If not, asks the child once and answers false until
    /// the child's answer is read ([`Supply::routed`]).
    fn route_ready(&mut self, port: u16, client: IpAddr) -> bool {
        let known = self.routes.iter().any(|(a, _)| *a == client);
        if known && self.ruled.contains(&(client.is_ipv4(), port)) {
            return true;
        }
        if self.pending.contains(&Ask::Route { port, client }) {
            return false;
        }
        if self.ask_route(true, port, client).is_err() {
            // The child is gone: the flow comes from the namespace's own address.
            self.udp_transparent = false;
            return true;
        }
        self.pending.push(Ask::Route { port, client });
        false
    }

    /// The child's answer to a route ask: the route and rule exist (no flow holds them yet),
    /// or it could not make them, and flows come from the namespace's own address from now on.
    fn routed(&mut self, port: u16, client: IpAddr, errno: i32) {
        if errno != 0 {
            if self.udp_transparent {
                // Say it once.
                self.udp_transparent = false;
                crate::warn(&format!(
                    "source IP transparent: UDP: {}; datagrams come from the child's own address",
                    sys::errno::text(errno)
                ));
            }
            return;
        }
        if !self.routes.iter().any(|(a, _)| *a == client) {
            self.routes.push((client, 0));
        }
        if !self.ruled.contains(&(client.is_ipv4(), port)) {
            self.ruled.push((client.is_ipv4(), port));
        }
    }

    /// Counts a new transparent UDP flow from `client` to server port `port` on its reply
    /// route, which [`Supply::route_ready`] made sure of.
    ///
    /// # Errors
    /// EAGAIN when the route is not (or no longer) there.
    fn route(&mut self, port: u16, client: IpAddr) -> Result<(), i32> {
        let known = self.routes.iter().position(|(a, _)| *a == client);
        match known {
            Some(i) if self.ruled.contains(&(client.is_ipv4(), port)) => {
                self.routes[i].1 += 1;
                Ok(())
            }
            _ => Err(linux_raw_sys::errno::EAGAIN as i32),
        }
    }

    /// Lets go of a flow's reply route; the last flow of an address has the child delete it.
    fn unroute(&mut self, port: u16, client: IpAddr) {
        let Some(i) = self.routes.iter().position(|(a, _)| *a == client) else {
            return;
        };
        self.routes[i].1 = self.routes[i].1.saturating_sub(1);
        if self.routes[i].1 == 0 {
            self.routes.swap_remove(i);
            let _ = self.ask_route(false, port, client);
        }
    }

    /// Sends a `UdpRoute`; the `UdpRouted` of an add is read later from the loop.
    fn ask_route(&mut self, add: bool, port: u16, client: IpAddr) -> Result<(), i32> {
        const EPIPE: i32 = linux_raw_sys::errno::EPIPE as i32;
        let sock = self.child.as_ref().ok_or(EPIPE)?;
        let (family, mut addr) = (if client.is_ipv4() { 4 } else { 6 }, [0u8; 16]);
        match client {
            IpAddr::V4(a) => addr[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => addr = a.octets(),
        }
        let msg = Msg::UdpRoute(UdpRoute {
            add: u8::from(add),
            family,
            port,
            addr,
        });
        if sys::fdpass::send(sock, &msg, &[]).is_err() {
            self.lose_child();
            return Err(EPIPE);
        }
        Ok(())
    }

    /// Whether [`Supply::take`] on pool `i` would not have to wait: a socket is at hand, or
    /// none will come (the child is gone, or its last batch came back empty). Asks for the
    /// next batch while the pool runs low.
    fn can_take(&mut self, i: usize) -> bool {
        if self.pools[i].fds.len() <= LOW_WATER {
            self.request(i);
        }
        !self.pools[i].fds.is_empty() || self.child.is_none() || self.failed[i]
    }

    /// A socket for pool `i`, asking for the next batch while this one runs low; `None` when
    /// the pool is empty (then call [`Supply::can_take`] first to know whether to wait).
    fn take(&mut self, i: usize) -> Option<OwnedFd> {
        if self.pools[i].fds.len() <= LOW_WATER {
            self.request(i);
        }
        self.pools[i].fds.pop()
    }
}

/// Connects a socket from the child to `target`, from `source` when given and possible.
/// TCP connects without waiting: the pumps move data once it is established.
fn connect_inside(st: &mut Supply, target: Target, source: Option<SocketAddr>) -> Option<OwnedFd> {
    let family = if target.addr.is_ipv4() { 4 } else { 6 };
    let kind = match (target.udp, source.is_some() && st.transparent) {
        (true, _) => SocketKind::Udp,
        (false, true) => SocketKind::TransparentTcp,
        (false, false) => SocketKind::Tcp,
    };
    let sock = match st.take(pool_index(family, kind)) {
        Some(s) => s,
        // Transparency fell through: connect from the namespace's own address.
        None if kind == SocketKind::TransparentTcp => {
            st.take(pool_index(family, SocketKind::Tcp))?
        }
        None => return None,
    };
    if kind == SocketKind::TransparentTcp
        && let Some(src) = source
    {
        // Taken (say, the client's port is in use inside): then from our own address.
        let _ = bind(&sock, &src);
    }
    match connect(&sock, &target.addr) {
        Ok(()) | Err(Errno::INPROGRESS) => Some(sock),
        Err(_) => None,
    }
}

/// A socket inside for a new UDP flow from `peer`, where its datagrams go (`None`: it is
/// connected) and the client address whose reply route it holds: from the client's own
/// address when the port is transparent and the child routes the replies back, else
/// connected from the namespace's own address.
fn udp_flow_socket(
    st: &mut Supply,
    target: Target,
    peer: &SocketAddrAny,
) -> Option<(OwnedFd, Option<SocketAddr>, Option<IpAddr>)> {
    let source = SocketAddr::try_from(peer.clone())
        .ok()
        .and_then(|p| source_for(target, p))
        .filter(|_| st.udp_transparent);
    if let Some(src) = source
        && let Some(sock) = st.take(pool_index(
            if src.is_ipv4() { 4 } else { 6 },
            SocketKind::TransparentUdp,
        ))
        && bind(&sock, &src).is_ok()
    {
        // The route is there ([`udp_flow_ready`] made sure); if it went, from our own address.
        if st.route(target.addr.port(), src.ip()).is_ok() {
            return Some((sock, Some(target.addr), Some(src.ip())));
        }
    }
    connect_inside(st, target, None).map(|sock| (sock, None, None))
}

/// Whether a new UDP flow from `peer` to `target` can be made at once (or is to be dropped at
/// once): the sockets it may need are at hand and, for a transparent one, its reply route is
/// in place. Asks the child for what is missing.
fn udp_flow_ready(st: &mut Supply, target: Target, peer: &SocketAddrAny) -> bool {
    let family = if target.addr.is_ipv4() { 4 } else { 6 };
    let plain = st.can_take(pool_index(family, SocketKind::Udp));
    let source = SocketAddr::try_from(peer.clone())
        .ok()
        .and_then(|p| source_for(target, p))
        .filter(|_| st.udp_transparent);
    match source {
        None => plain,
        // The plain pool too: the fallback when the bind fails. Everything is asked for at
        // once (no short circuit).
        Some(src) => {
            plain
                & st.can_take(pool_index(family, SocketKind::TransparentUdp))
                & st.route_ready(target.addr.port(), src.ip())
        }
    }
}

/// Closes a UDP flow and lets go of its reply route.
fn close_flow(st: &mut Supply, flow: Flow, server_port: u16) {
    if let Some(ip) = flow.routed {
        st.unroute(server_port, ip);
    }
}

/// Moves the datagrams waiting on a UDP listener (`kind` `UDP_LISTENER`) or on the socket of
/// flow `kind - UDP_FLOW`, after closing the port's idle flows.
fn udp_ready(st: &mut State, epfd: &OwnedFd, id: u32, kind: u64) {
    let State {
        ports,
        supply,
        buf,
        flow_idle,
        ..
    } = st;
    let Some(port) = ports.iter_mut().find(|p| p.status.id == id && p.target.udp) else {
        return;
    };
    let now = Instant::now();
    let server_port = port.target.addr.port();
    // Not on every wake-up (that is per datagram burst): a quarter of the idle time apart.
    if now.duration_since(port.swept) >= *flow_idle / 4 {
        port.swept = now;
        for f in port.flows.iter_mut() {
            if f.as_ref()
                .is_some_and(|f| now.duration_since(f.last) >= *flow_idle)
                && let Some(old) = f.take()
            {
                close_flow(supply, old, server_port);
            }
        }
    }
    if kind >= UDP_FLOW {
        let Some(Some(flow)) = port.flows.get_mut((kind - UDP_FLOW) as usize) else {
            return;
        };
        for _ in 0..ACCEPT_BURST {
            match recv(&flow.sock, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => {
                    flow.last = now;
                    let _ = sendto(&port.listener, &buf[..n], SendFlags::DONTWAIT, &flow.peer);
                }
                // An ICMP port unreachable for an earlier datagram; the flow stays until idle.
                Err(Errno::CONNREFUSED) => {}
                Err(_) => break,
            }
        }
        return;
    }
    let family = if port.target.addr.is_ipv4() { 4 } else { 6 };
    for _ in 0..ACCEPT_BURST {
        // When a new client could not be served at once, look at the next datagram's sender
        // first without taking it: a new client then waits in the socket's queue, with the
        // listener out of the epoll set until the child's answer comes.
        let maybe_wait = port.target.transparent
            || supply.pools[pool_index(family, SocketKind::Udp)]
                .fds
                .is_empty();
        if maybe_wait {
            let Ok((_, _, Some(peer))) = recvfrom(
                &port.listener,
                &mut [0u8; 0],
                RecvFlags::DONTWAIT | RecvFlags::PEEK,
            ) else {
                break;
            };
            let known = port
                .flows
                .iter()
                .any(|f| f.as_ref().is_some_and(|f| f.peer == peer));
            if !known && !udp_flow_ready(supply, port.target, &peer) {
                port.set_wait(epfd, Wait::Child);
                break;
            }
        }
        let Ok((n, _, Some(peer))) = recvfrom(&port.listener, &mut buf[..], RecvFlags::DONTWAIT)
        else {
            break;
        };
        let slot = match port
            .flows
            .iter()
            .position(|f| f.as_ref().is_some_and(|f| f.peer == peer))
        {
            Some(i) => i,
            None => {
                // A free slot, else a new one, else the least recently used one, closed after
                // the new flow holds its reply route (the old one may be the same client's).
                let free = port.flows.iter().position(Option::is_none);
                let i = match free {
                    Some(i) => i,
                    None if port.flows.len() < MAX_FLOWS => {
                        port.flows.push(None);
                        port.flows.len() - 1
                    }
                    None => (0..port.flows.len())
                        .min_by_key(|&i| port.flows[i].as_ref().map(|f| f.last))
                        .unwrap_or(0),
                };
                let old = port.flows[i].take();
                let made = udp_flow_socket(supply, port.target, &peer);
                if let Some(old) = old {
                    close_flow(supply, old, server_port);
                }
                let Some((sock, to, routed)) = made else {
                    continue;
                };
                if epoll::add(
                    epfd,
                    &sock,
                    epoll::EventData::new_u64((UDP_FLOW + i as u64) << 32 | u64::from(id)),
                    epoll::EventFlags::IN,
                )
                .is_err()
                {
                    if let Some(ip) = routed {
                        supply.unroute(server_port, ip);
                    }
                    continue;
                }
                port.flows[i] = Some(Flow {
                    peer,
                    sock,
                    last: now,
                    to,
                    routed,
                });
                i
            }
        };
        if let Some(flow) = port.flows[slot].as_mut() {
            flow.last = now;
            let _ = match &flow.to {
                Some(to) => sendto(&flow.sock, &buf[..n], SendFlags::DONTWAIT, to),
                None => send(&flow.sock, &buf[..n], SendFlags::DONTWAIT),
            };
        }
    }
}

impl PortDriver for Builtin {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo::builtin()
    }

    fn add(&self, spec: PortSpec) -> Result<PortStatus, String> {
        let mut st = self.lock();
        let existing: Vec<PortStatus> = st.ports.iter().map(|p| p.status.clone()).collect();
        validate_port_spec(&spec, &existing)?;
        let proto = spec.proto.as_str();
        let udp = proto.starts_with("udp");
        if !udp && !proto.starts_with("tcp") {
            return Err(format!("unsupported port protocol {proto}"));
        }
        let listener = listen_hinted(&spec, udp)?;
        let mut target = dial_target(&spec)?;
        target.transparent = st.supply.transparent
            && (target.addr.ip().is_loopback() || Some(target.addr.ip()) == st.supply.child_ip);
        let id = st.next_id;
        let kind = if udp { UDP_LISTENER } else { 0 };
        epoll::add(
            &self.listeners,
            &listener,
            epoll::EventData::new_u64(kind << 32 | u64::from(id)),
            epoll::EventFlags::IN,
        )
        .map_err(|e| format!("port driver: {e}"))?;
        st.next_id += 1;
        if udp && st.buf.is_empty() {
            st.buf = vec![0; DATAGRAM_MAX];
        }
        let status = PortStatus { id, spec };
        st.ports.push(Port {
            status: status.clone(),
            listener,
            target,
            wait: Wait::Armed,
            flows: Vec::new(),
            swept: Instant::now(),
        });
        Ok(status)
    }

    fn list(&self) -> Vec<PortStatus> {
        self.lock().ports.iter().map(|p| p.status.clone()).collect()
    }

    fn remove(&self, id: u32) -> Result<(), String> {
        let mut st = self.lock();
        let Some(i) = st.ports.iter().position(|p| p.status.id == id) else {
            return Err(format!("unknown id: {id}"));
        };
        // Closing the listener and the flows' sockets takes them out of the epoll set; live
        // connections go too.
        let port = st.ports.remove(i);
        let server_port = port.target.addr.port();
        for flow in port.flows.into_iter().flatten() {
            close_flow(&mut st.supply, flow, server_port);
        }
        if st.pumps.close_group(id) > 0 {
            freed(&mut st, &self.listeners);
        }
        Ok(())
    }
}

/// [`listen_on`], its error with upstream's hint for a privileged port (the gvisor-tap-vsock
/// port driver listens the same way).
pub(crate) fn listen_hinted(spec: &PortSpec, udp: bool) -> Result<OwnedFd, String> {
    listen_on(spec, udp).map_err(|e| {
        let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start");
        let named = std::env::args_os().next().is_some_and(|a| {
            a.as_encoded_bytes().rsplit(|b| *b == b'/').next() == Some(b"rootlesskit")
        });
        privileged_port_hint(
            e,
            spec.parent_port,
            start.ok().and_then(|s| s.trim().parse().ok()),
            named,
        )
    })
}

/// Go's `net.Listen(proto, "<parentIP>:<port>")` (`ListenPacket` for UDP): `tcp`/`udp` on
/// every address listens on both families (one IPv6 socket with IPV6_V6ONLY off),
/// `tcp4`/`tcp6` (`udp4`/`udp6`) on one.
fn listen_on(spec: &PortSpec, udp: bool) -> Result<OwnedFd, ListenError> {
    // After this, `tcp4` names an IPv4 address or `::` (Go's 0.0.0.0), `tcp6` no IPv4 one.
    check_family(spec).map_err(|text| ListenError { text, errno: None })?;
    let port = spec.parent_port as u16;
    let ip = parse_ip(&spec.parent_ip);
    let any = ip.is_none_or(|ip| ip.is_unspecified());
    let shown_host = match ip {
        Some(IpAddr::V6(_)) => format!("[{}]", spec.parent_ip),
        // Go prints a mapped address in its IPv4 form.
        Some(IpAddr::V4(a)) => a.to_string(),
        _ => spec.parent_ip.clone(),
    };
    let fail = |what: &str, e: Errno| ListenError {
        text: format!(
            "listen {} {shown_host}:{port}: {what}: {}",
            spec.proto,
            sys::errno::text(e.raw_os_error())
        ),
        errno: Some(e),
    };
    let is4 = spec.proto.ends_with('4');
    let is6 = spec.proto.ends_with('6');
    let (family, v6only) = match ip {
        _ if is4 => (AddressFamily::INET, false),
        Some(IpAddr::V4(_)) if is6 || !any => (AddressFamily::INET, false),
        _ if is6 => (AddressFamily::INET6, true),
        Some(IpAddr::V6(_)) if !any => (AddressFamily::INET6, true),
        _ => (AddressFamily::INET6, false),
    };
    let kind = if udp {
        SocketType::DGRAM
    } else {
        SocketType::STREAM
    };
    let fd = socket_with(
        family,
        kind,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| fail("socket", e))?;
    // As Go: SO_REUSEADDR for stream listeners only; on UDP it would let two ports share one.
    if !udp {
        sockopt::set_socket_reuseaddr(&fd, true).map_err(|e| fail("setsockopt", e))?;
    }
    if family == AddressFamily::INET6 {
        sockopt::set_ipv6_v6only(&fd, v6only).map_err(|e| fail("setsockopt", e))?;
        let addr = match ip {
            Some(IpAddr::V6(a)) => a,
            Some(IpAddr::V4(a)) if !a.is_unspecified() => a.to_ipv6_mapped(),
            _ => std::net::Ipv6Addr::UNSPECIFIED,
        };
        bind(&fd, &SocketAddrV6::new(addr, port, 0, 0)).map_err(|e| fail("bind", e))?;
    } else {
        let addr = match ip {
            Some(IpAddr::V4(a)) => a,
            _ => std::net::Ipv4Addr::UNSPECIFIED,
        };
        bind(&fd, &SocketAddrV4::new(addr, port)).map_err(|e| fail("bind", e))?;
    }
    if !udp {
        listen(&fd, 128).map_err(|e| fail("listen", e))?;
    }
    Ok(fd)
}

/// Why a port's listener could not be made: Go's text, and the errno of the syscall that
/// failed (none for a bad address family).
#[derive(Debug, PartialEq)]
struct ListenError {
    text: String,
    errno: Option<Errno>,
}

/// Upstream's hint on a listen error of EACCES or EPERM for a port below
/// `net.ipv4.ip_unprivileged_port_start` (`start`, when it could be read). The
/// CAP_NET_BIND_SERVICE advice is given only when the program runs as `rootlesskit`, the binary
/// that binds (as upstream, which leaves it out for Podman's embedding).
fn privileged_port_hint(err: ListenError, port: i64, start: Option<i64>, named: bool) -> String {
    let denied = matches!(err.errno, Some(Errno::ACCESS | Errno::PERM));
    let err = err.text;
    match start {
        Some(start) if denied && port < start => format!(
            "cannot expose privileged port {port}, you can add 'net.ipv4.ip_unprivileged_port_start={port}' to /etc/sysctl.conf (currently {start}){}, or choose a larger port number (>= {start}): {err}",
            if named {
                ", or set CAP_NET_BIND_SERVICE on rootlesskit binary"
            } else {
                ""
            }
        ),
        _ => err,
    }
}

/// Where the child connects, as upstream decides: the child IP if given; else the parent IP
/// when it names one address (so `-p 127.0.0.2:8080:80` reaches 127.0.0.2 inside); else
/// 127.0.0.1.
fn dial_target(spec: &PortSpec) -> Result<Target, String> {
    let ip = if !spec.child_ip.is_empty() {
        parse_ip(&spec.child_ip).ok_or_else(|| format!("invalid ChildIP: {}", spec.child_ip))?
    } else {
        match parse_ip(&spec.parent_ip) {
            Some(ip) if !ip.is_unspecified() || ip.is_ipv6() => ip,
            _ => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    };
    Ok(Target {
        addr: SocketAddr::new(ip, spec.child_port as u16),
        udp: spec.proto.starts_with("udp"),
        transparent: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn spec(proto: &str, parent_ip: &str, child_ip: &str) -> PortSpec {
        PortSpec {
            proto: proto.into(),
            parent_ip: parent_ip.into(),
            parent_port: 8080,
            child_ip: child_ip.into(),
            child_port: 80,
        }
    }

    #[test]
    fn dial_targets_follow_upstream() {
        for (s, want) in [
            (spec("tcp", "", ""), "127.0.0.1:80"),
            (spec("tcp", "0.0.0.0", ""), "127.0.0.1:80"),
            (spec("tcp", "127.0.0.2", ""), "127.0.0.2:80"),
            (spec("tcp", "0.0.0.0", "10.0.2.100"), "10.0.2.100:80"),
            (spec("tcp6", "::", ""), "[::]:80"),
            (spec("tcp", "0.0.0.0", "::1"), "[::1]:80"),
            // IPv4-mapped addresses are the IPv4 ones (Go's To4()).
            (spec("tcp", "::ffff:127.0.0.2", ""), "127.0.0.2:80"),
            (spec("tcp", "::", "::ffff:10.0.2.100"), "10.0.2.100:80"),
        ] {
            let d = dial_target(&s).unwrap();
            assert_eq!(d.addr, want.parse().unwrap(), "{s:?}");
        }
    }

    #[test]
    fn listeners_bind_the_named_family_only() {
        let bound = |proto: &str, ip: &str| {
            let mut s = spec(proto, ip, "");
            s.parent_port = 0;
            listen_on(&s, proto.starts_with("udp"))
                .map_err(|e| e.text)
                .map(|fd| {
                    rustix::net::getsockname(&fd)
                        .ok()
                        .and_then(|a| SocketAddr::try_from(a).ok())
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default()
                })
        };
        assert_eq!(bound("tcp", "::ffff:127.0.0.1"), Ok("127.0.0.1".into()));
        assert_eq!(bound("udp4", "::ffff:127.0.0.1"), Ok("127.0.0.1".into()));
        assert_eq!(bound("tcp4", "::"), Ok("0.0.0.0".into()));
        for (proto, ip) in [
            ("tcp4", "::1"),
            ("udp4", "2001:db8::1"),
            ("tcp6", "127.0.0.1"),
        ] {
            assert_eq!(
                bound(proto, ip),
                Err(format!(
                    "listen {proto}: address {ip}: no suitable address found"
                ))
            );
        }
    }

    #[test]
    fn connections_come_from_the_client_only_where_that_can_work() {
        let t = |addr: &str, transparent| Target {
            addr: addr.parse().unwrap(),
            udp: false,
            transparent,
        };
        let client = |a: &str| a.parse::<SocketAddr>().unwrap();
        let lan = client("192.168.1.5:40000");
        assert_eq!(source_for(t("127.0.0.1:80", true), lan), Some(lan));
        assert_eq!(source_for(t("127.0.0.1:80", false), lan), None);
        // A dual-stack listener's IPv4 client, unmapped.
        assert_eq!(
            source_for(
                t("127.0.0.1:80", true),
                client("[::ffff:192.168.1.5]:40000")
            ),
            Some(lan)
        );
        // Loopback clients and family mismatches connect from the namespace's address.
        assert_eq!(
            source_for(t("127.0.0.1:80", true), client("127.0.0.1:1234")),
            None
        );
        assert_eq!(source_for(t("[::1]:80", true), lan), None);
        let v6 = client("[2001:db8::7]:5555");
        assert_eq!(source_for(t("[::1]:80", true), v6), Some(v6));
        assert_eq!(source_for(t("[::1]:80", true), client("[::1]:5555")), None);
    }

    #[test]
    fn ports_are_listed_conflicts_refused_and_removal_closes_the_listener() {
        let b = Builtin::new().unwrap();
        let mut s = spec("tcp4", "127.0.0.1", "");
        // A free port: bind one ourselves and let it go.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.parent_port = probe.local_addr().unwrap().port() as i64;
        drop(probe);
        let st = b.add(s.clone()).unwrap();
        assert_eq!(st.id, 1);
        assert_eq!(b.list(), std::slice::from_ref(&st));
        assert_eq!(b.add(s.clone()).unwrap_err(), "conflict with ID 1");
        let addr = format!("127.0.0.1:{}", s.parent_port);
        assert!(std::net::TcpStream::connect(&addr).is_ok());
        b.remove(1).unwrap();
        assert!(std::net::TcpStream::connect(&addr).is_err());
        assert_eq!(b.remove(1).unwrap_err(), "unknown id: 1");
        let sctp = spec("sctp", "127.0.0.1", "");
        assert_eq!(b.add(sctp).unwrap_err(), "unsupported port protocol sctp");
        // Ids are never reused.
        assert_eq!(b.add(s).unwrap().id, 2);
    }

    /// What the child's `ports::make_sockets` makes without transparency: up to `w.count`
    /// non-blocking sockets of the family and kind asked for.
    fn plain_sockets(
        w: &SocketsWanted,
        out: &mut [Option<OwnedFd>],
    ) -> Result<(usize, bool), rustix::io::Errno> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let family = if w.family == 4 {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let kind = if w.kind.is_udp() {
            SocketType::DGRAM
        } else {
            SocketType::STREAM
        };
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let mut made = 0;
        for slot in out.iter_mut().take(usize::from(w.count)) {
            *slot = match rustix::net::socket_with(family, kind, flags, None) {
                Ok(fd) => Some(fd),
                Err(e) if made == 0 => return Err(e),
                Err(_) => break,
            };
            made += 1;
        }
        Ok((made, false))
    }

    /// Plays the child: answers every request with [`plain_sockets`], and counts the requests.
    fn fake_child(b: &Builtin) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        b.attach_child(ours);
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        std::thread::spawn(move || {
            let mut none = Vec::new();
            while let Ok(Msg::SocketsWanted(w)) = sys::fdpass::recv(&theirs, &mut none) {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut fds: [Option<OwnedFd>; MAX_SOCKETS as usize] = Default::default();
                let (count, errno) = match plain_sockets(&w, &mut fds) {
                    Ok((n, _)) => (n, 0),
                    Err(e) => (0, e.raw_os_error()),
                };
                let out: Vec<BorrowedFd<'_>> = fds.iter().flatten().map(|f| f.as_fd()).collect();
                let made = proto::SocketsMade {
                    count: count as u8,
                    transparent: 0,
                    errno,
                };
                let _ = sys::fdpass::send(&theirs, &Msg::SocketsMade(made), &out);
            }
        });
        asked
    }

    /// Every `UdpRoute` the parent sends (add, port, address).
    type RouteLog = std::sync::Arc<Mutex<Vec<(u8, u16, [u8; 16])>>>;

    /// A child that only keeps reply routes: it logs each `UdpRoute` and answers an add with
    /// the errno `answer` gives for its port.
    fn fake_router(b: &Builtin, answer: impl Fn(u16) -> i32 + Send + 'static) -> RouteLog {
        let (ours, theirs) = UnixStream::pair().unwrap();
        b.attach_child(ours);
        let seen = RouteLog::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut none = Vec::new();
            while let Ok(Msg::UdpRoute(r)) = sys::fdpass::recv(&theirs, &mut none) {
                log.lock().unwrap().push((r.add, r.port, r.addr));
                if r.add == 1 {
                    let routed = Msg::UdpRouted(proto::UdpRouted {
                        errno: answer(r.port),
                    });
                    let _ = sys::fdpass::send(&theirs, &routed, &[]);
                }
            }
        });
        seen
    }

    /// Reads the child's answers until none is owed (at most 5 s), as the loop would.
    fn settle(sup: &mut Supply) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sup.pending.is_empty() {
            assert!(Instant::now() < deadline, "the child did not answer");
            sup.receive_ready();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A route for `client` and `port` as the UDP path makes it: ask, read the answer, count.
    fn route(sup: &mut Supply, port: u16, client: IpAddr) -> Result<(), ()> {
        if !sup.route_ready(port, client) {
            settle(sup);
            // A refusal turns transparency off; the UDP path asks no more then.
            if !sup.udp_transparent || !sup.route_ready(port, client) {
                return Err(());
            }
        }
        sup.route(port, client).map_err(|_| ())
    }

    #[test]
    fn udp_reply_routes_are_counted_per_client_address() {
        let b = Builtin::new().unwrap();
        // Port 9 stands for a kernel that refuses the rule.
        let seen = fake_router(&b, |port| if port == 9 { 22 } else { 0 });
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut st = b.lock();
        let sup = &mut st.supply;
        sup.udp_transparent = true;
        // Two flows of one client to one port: one route; another port: its rule too.
        assert_eq!(route(sup, 53, v4), Ok(()));
        assert_eq!(route(sup, 53, v4), Ok(()));
        assert_eq!(route(sup, 54, v4), Ok(()));
        assert_eq!(route(sup, 53, v6), Ok(()));
        // The route goes with the address's last flow.
        sup.unroute(53, v4);
        sup.unroute(53, v4);
        sup.unroute(54, v4);
        sup.unroute(53, v6);
        assert!(sup.routes.is_empty());
        // A refusal: not counted, and UDP flows are no longer transparent.
        assert_eq!(route(sup, 9, v4), Err(()));
        assert!(sup.routes.is_empty(), "a refused route is not counted");
        assert!(!sup.udp_transparent);
        drop(st);
        let mut a4 = [0u8; 16];
        a4[..4].copy_from_slice(&[192, 0, 2, 7]);
        let a6 = match v6 {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(_) => unreachable!(),
        };
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (1, 53, a4),
                (1, 54, a4),
                (1, 53, a6),
                (0, 54, a4),
                (0, 53, a6),
                (1, 9, a4)
            ]
        );
    }

    #[test]
    fn a_route_ask_does_not_wait_for_the_child() {
        let b = Builtin::new().unwrap();
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        // The child answers port 1 only when let go (a stopped child).
        fake_router(&b, move |port| {
            if port == 1 {
                let _ = gate.lock().unwrap().recv();
            }
            0
        });
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let mut st = b.lock();
        st.supply.udp_transparent = true;
        let t0 = Instant::now();
        assert!(!st.supply.route_ready(1, client));
        // Asked once, however often the loop comes by meanwhile.
        assert!(!st.supply.route_ready(1, client));
        st.supply.receive_ready();
        assert!(!st.supply.route_ready(1, client));
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert_eq!(st.supply.pending.len(), 1);
        go.send(()).unwrap();
        settle(&mut st.supply);
        assert!(st.supply.answered);
        assert!(st.supply.route_ready(1, client));
        assert_eq!(st.supply.route(1, client), Ok(()));
        assert!(st.supply.child.is_some());
    }

    #[test]
    fn a_stale_readable_event_does_not_lose_the_child() {
        let b = Builtin::new().unwrap();
        fake_child(&b);
        let mut st = b.lock();
        // The answer was read on an earlier event; the event that announced it arrives
        // afterwards with nothing left to read.
        let i = pool_index(4, SocketKind::Tcp);
        assert!(!st.supply.can_take(i));
        settle(&mut st.supply);
        st.supply.receive_ready();
        assert!(st.supply.child.is_some());
        assert!(st.supply.take(i).is_some());
    }

    #[test]
    fn a_connection_waits_in_the_backlog_while_the_child_is_slow() {
        use std::io::{Read, Write};
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let child_port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut c in server.incoming().flatten() {
                let mut buf = [0u8; 4];
                if c.read_exact(&mut buf).is_ok() {
                    let _ = c.write_all(&buf);
                }
            }
        });
        let b = Builtin::new().unwrap();
        // A child that does not answer until let go: it holds its end unread.
        let (ours, theirs) = UnixStream::pair().unwrap();
        b.attach_child(ours);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let parent_port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut s = spec("tcp4", "127.0.0.1", "");
        s.parent_port = parent_port as i64;
        s.child_port = child_port as i64;
        let id = b.add(s).unwrap().id;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", parent_port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"ping").unwrap();
        let t0 = Instant::now();
        b.accept_ready();
        assert!(t0.elapsed() < Duration::from_millis(500), "the loop waited");
        // The listener left the set: the loop is not woken for it again (no spin).
        assert_eq!(b.lock().ports[0].wait, Wait::Child);
        let mut fds = [rustix::event::PollFd::new(
            &b.listeners,
            rustix::event::PollFlags::IN,
        )];
        assert_eq!(
            rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())).unwrap(),
            0
        );
        // The child wakes up and answers the request it finds.
        let mut none = Vec::new();
        let Ok(Msg::SocketsWanted(w)) = sys::fdpass::recv(&theirs, &mut none) else {
            panic!("no request");
        };
        let mut made: [Option<OwnedFd>; MAX_SOCKETS as usize] = Default::default();
        let (count, _) = plain_sockets(&w, &mut made).unwrap();
        let out: Vec<BorrowedFd<'_>> = made.iter().flatten().map(|f| f.as_fd()).collect();
        let answer = proto::SocketsMade {
            count: count as u8,
            transparent: 0,
            errno: 0,
        };
        sys::fdpass::send(&theirs, &Msg::SocketsMade(answer), &out).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = [0u8; 4];
        c.set_nonblocking(true).unwrap();
        loop {
            b.accept_ready();
            b.pump_ready();
            match c.read(&mut got) {
                Ok(4) => break,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                r => panic!("no echo: {r:?}"),
            }
        }
        assert_eq!(&got, b"ping");
        assert_eq!(b.lock().ports[0].wait, Wait::Armed);
        b.remove(id).unwrap();
    }

    #[test]
    fn a_full_pump_table_leaves_connections_in_the_backlog_until_a_pair_closes() {
        use std::io::{Read, Write};
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let child_port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in server.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let b = Builtin::new().unwrap();
        b.lock().pumps = Pumps::new(1).unwrap();
        fake_child(&b);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let parent_port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut s = spec("tcp4", "127.0.0.1", "");
        s.parent_port = parent_port as i64;
        s.child_port = child_port as i64;
        b.add(s).unwrap();
        let echo = |c: &mut std::net::TcpStream, msg: &[u8]| -> bool {
            c.write_all(msg).unwrap();
            c.set_nonblocking(true).unwrap();
            let mut got = vec![0u8; msg.len()];
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut n = 0;
            while n < got.len() && Instant::now() < deadline {
                b.accept_ready();
                b.pump_ready();
                match c.read(&mut got[n..]) {
                    Ok(0) => return false,
                    Ok(k) => n += k,
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            n == got.len() && got == msg
        };
        let mut first = std::net::TcpStream::connect(("127.0.0.1", parent_port)).unwrap();
        assert!(echo(&mut first, b"one"));
        // The only slot is taken: the second waits, accepted by the kernel only.
        let mut second = std::net::TcpStream::connect(("127.0.0.1", parent_port)).unwrap();
        assert!(!echo(&mut second, b"two"));
        assert_eq!(b.lock().ports[0].wait, Wait::Full);
        // The first leaves; its slot goes to the second, which was not closed meanwhile.
        drop(first);
        let mut got = [0u8; 3];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            b.accept_ready();
            b.pump_ready();
            match second.read(&mut got) {
                Ok(3) => break,
                Ok(n) => panic!("read {n}"),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("the waiting connection was not served: {e}"),
            }
        }
        assert_eq!(&got, b"two");
        // Which took the slot again.
        assert_eq!(b.lock().ports[0].wait, Wait::Full);
    }

    #[test]
    fn tcp_connections_are_forwarded_with_one_child_round_trip_per_batch() {
        use std::io::{Read, Write};
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let child_port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in server.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let b = Builtin::new().unwrap();
        let asked = fake_child(&b);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let parent_port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut s = spec("tcp4", "127.0.0.1", "");
        s.parent_port = parent_port as i64;
        s.child_port = child_port as i64;
        b.add(s).unwrap();
        // The clients on a thread of their own, the parent's loop (reduced to the driver) here.
        let clients = std::thread::spawn(move || {
            let n = usize::from(MAX_SOCKETS) + 8;
            for i in 0..n {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", parent_port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let msg = format!("hello {i}");
                c.write_all(msg.as_bytes()).unwrap();
                let mut got = vec![0u8; msg.len()];
                c.read_exact(&mut got).unwrap();
                assert_eq!(got, msg.as_bytes());
            }
        });
        while !clients.is_finished() {
            b.accept_ready();
            b.pump_ready();
            std::thread::sleep(Duration::from_micros(200));
        }
        clients
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // One batch served the first MAX_SOCKETS connections, a second one the rest.
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A UDP echo server on 127.0.0.1, from a thread; returns its port.
    fn udp_echo_server() -> u16 {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        });
        port
    }

    #[test]
    fn udp_datagrams_go_both_ways_per_client_and_removal_closes_the_port() {
        use std::net::UdpSocket;
        let child_port = udp_echo_server();
        let b = Builtin::new().unwrap();
        fake_child(&b);
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let parent_port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut s = spec("udp4", "127.0.0.1", "");
        s.parent_port = parent_port as i64;
        s.child_port = child_port as i64;
        let id = b.add(s.clone()).unwrap().id;
        // The same port again through the OS: UDP sockets do not share a port.
        let mut again = s.clone();
        again.proto = "udp".into();
        assert!(b.add(again).unwrap_err().contains("address already in use"));
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.connect(("127.0.0.1", parent_port)).unwrap();
                c.set_nonblocking(true).unwrap();
                c
            })
            .collect();
        for round in 0..5u8 {
            for (i, c) in clients.iter().enumerate() {
                c.send(&[i as u8, round]).unwrap();
            }
            for (i, c) in clients.iter().enumerate() {
                let mut got = [0u8; 4];
                let deadline = Instant::now() + Duration::from_secs(5);
                let n = loop {
                    b.accept_ready();
                    match c.recv(&mut got) {
                        Ok(n) => break n,
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(e) => panic!("client {i} round {round}: {e}"),
                    }
                };
                assert_eq!(&got[..n], &[i as u8, round]);
            }
        }
        let st = b.lock();
        let live = st.ports[0].flows.iter().filter(|f| f.is_some()).count();
        assert_eq!((st.ports[0].flows.len(), live), (3, 3));
        drop(st);
        b.remove(id).unwrap();
        assert!(UdpSocket::bind(("127.0.0.1", parent_port)).is_ok());
    }

    /// Sends one datagram from `c` and waits for its echo, running the driver meanwhile.
    fn udp_round_trip(b: &Builtin, c: &std::net::UdpSocket, msg: &[u8]) {
        c.send(msg).unwrap();
        let mut got = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            b.accept_ready();
            match c.recv(&mut got) {
                Ok(n) => {
                    assert_eq!(&got[..n], msg);
                    return;
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{msg:?}: {e}"),
            }
        }
    }

    #[test]
    fn udp_flow_table_is_bounded_and_idle_flows_close() {
        use std::net::UdpSocket;
        let child_port = udp_echo_server();
        let b = Builtin::new().unwrap();
        b.lock().flow_idle = Duration::from_millis(500);
        fake_child(&b);
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let parent_port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut s = spec("udp4", "127.0.0.1", "");
        s.parent_port = parent_port as i64;
        s.child_port = child_port as i64;
        b.add(s).unwrap();
        let clients: Vec<UdpSocket> = (0..=MAX_FLOWS)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.connect(("127.0.0.1", parent_port)).unwrap();
                c.set_nonblocking(true).unwrap();
                c
            })
            .collect();
        for (i, c) in clients.iter().enumerate() {
            udp_round_trip(&b, c, format!("c{i}").as_bytes());
        }
        let peers = |b: &Builtin| -> Vec<SocketAddr> {
            b.lock().ports[0]
                .flows
                .iter()
                .flatten()
                .filter_map(|f| SocketAddr::try_from(f.peer.clone()).ok())
                .collect()
        };
        // One client more than the table holds: the least recently seen one made room.
        let live = peers(&b);
        assert_eq!(live.len(), MAX_FLOWS);
        assert!(!live.contains(&clients[0].local_addr().unwrap()));
        assert!(live.contains(&clients[MAX_FLOWS].local_addr().unwrap()));
        // The evicted client is answered again, through a new flow.
        udp_round_trip(&b, &clients[0], b"again");
        // After the idle time, the next datagram finds only its own flow left.
        std::thread::sleep(Duration::from_millis(600));
        udp_round_trip(&b, &clients[7], b"late");
        assert_eq!(peers(&b), [clients[7].local_addr().unwrap()]);
    }

    #[test]
    fn privileged_ports_get_upstreams_hint() {
        let failed = |text: &str, errno| ListenError {
            text: text.into(),
            errno: Some(errno),
        };
        let denied = "listen tcp4 127.0.0.1:80: bind: permission denied";
        assert_eq!(
            privileged_port_hint(failed(denied, Errno::ACCESS), 80, Some(1024), true),
            "cannot expose privileged port 80, you can add 'net.ipv4.ip_unprivileged_port_start=80' to /etc/sysctl.conf (currently 1024), or set CAP_NET_BIND_SERVICE on rootlesskit binary, or choose a larger port number (>= 1024): listen tcp4 127.0.0.1:80: bind: permission denied"
        );
        assert_eq!(
            privileged_port_hint(failed(denied, Errno::ACCESS), 80, Some(443), false),
            "cannot expose privileged port 80, you can add 'net.ipv4.ip_unprivileged_port_start=80' to /etc/sysctl.conf (currently 443), or choose a larger port number (>= 443): listen tcp4 127.0.0.1:80: bind: permission denied"
        );
        let eperm = "listen udp 0.0.0.0:53: bind: operation not permitted";
        assert!(
            privileged_port_hint(failed(eperm, Errno::PERM), 53, Some(1024), true)
                .starts_with("cannot expose privileged port 53,")
        );
        // Not below the start, the start unknown, or another error: unchanged.
        assert_eq!(
            privileged_port_hint(failed(denied, Errno::ACCESS), 80, Some(80), true),
            denied
        );
        assert_eq!(
            privileged_port_hint(failed(denied, Errno::ACCESS), 80, None, true),
            denied
        );
        let busy = "listen tcp4 127.0.0.1:80: bind: address already in use";
        assert_eq!(
            privileged_port_hint(failed(busy, Errno::ADDRINUSE), 80, Some(1024), true),
            busy
        );
    }

    #[test]
    fn bind_errors_read_like_go() {
        let b = Builtin::new().unwrap();
        let s = spec("tcp", "192.0.2.1", "");
        assert_eq!(
            b.add(s).unwrap_err(),
            "listen tcp 192.0.2.1:8080: bind: cannot assign requested address"
        );
    }
}
