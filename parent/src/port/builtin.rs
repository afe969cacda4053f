//! The builtin port driver, parent side: listeners on the host, one epoll set for them, and
//! the splice pumps. Each accepted connection is matched with a socket the child connects
//! inside the namespace and hands back over the proto socket (SCM_RIGHTS). UDP ports keep a
//! bounded flow table: one connected socket from the child per client address, whose replies
//! go back through the listener.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto::{Msg, PortConnect};
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketAddrV4, SocketAddrV6, SocketFlags,
    SocketType, accept_with, bind, listen, recv, recvfrom, send, sendto, socket_with, sockopt,
};

use super::pump::Pumps;
use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};

/// Connections forwarded at once; beyond that new ones are closed.
const MAX_CONNS: usize = 1024;
/// Accepts handled per wakeup and listener before the loop gets a turn again.
const ACCEPT_BURST: usize = 64;
/// UDP clients remembered per port; a new one beyond that replaces the least recently seen.
const MAX_FLOWS: usize = 256;
/// A UDP flow with no datagram either way for this long is closed.
const FLOW_IDLE: Duration = Duration::from_secs(90);
/// The largest UDP payload over IPv4, the size of the one datagram buffer.
const DATAGRAM_MAX: usize = 65507;
/// Epoll data of a listener is its port id; these values of the upper half mark a UDP
/// listener, and (plus the slot) a UDP flow's socket. Zero is a TCP listener.
const UDP_LISTENER: u64 = 1;
const UDP_FLOW: u64 = 2;

/// One UDP client: its address and the socket the child connected for it.
struct Flow {
    peer: SocketAddrAny,
    sock: OwnedFd,
    last: Instant,
}

struct Port {
    status: PortStatus,
    listener: OwnedFd,
    dial: PortConnect,
    /// UDP only: `MAX_FLOWS` slots, allocated when the port is added.
    flows: Vec<Option<Flow>>,
}

struct State {
    next_id: u32,
    ports: Vec<Port>,
    pumps: Pumps,
    child: Option<UnixStream>,
    /// Holds one datagram in flight; allocated with the first UDP port.
    buf: Vec<u8>,
}

/// The driver; shared with the API server as `Arc<dyn PortDriver>`.
pub struct Builtin {
    /// Readable when a listener has a connection waiting.
    listeners: OwnedFd,
    /// A second handle on the pumps' epoll set, to poll without taking the lock.
    pumps_fd: OwnedFd,
    state: Mutex<State>,
}

impl Builtin {
    /// An empty driver.
    ///
    /// # Errors
    /// When the epoll sets cannot be created.
    pub fn new() -> Result<Builtin, String> {
        let pumps = Pumps::new(MAX_CONNS).map_err(|e| format!("port driver: {e}"))?;
        let pumps_fd = pumps
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("port driver: {e}"))?;
        let listeners =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| format!("port driver: {e}"))?;
        Ok(Builtin {
            listeners,
            pumps_fd,
            state: Mutex::new(State {
                next_id: 1,
                ports: Vec::new(),
                pumps,
                child: None,
                buf: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock aborts the process (panic = "abort"), so a poisoned
        // lock can only be seen in tests; the state is still consistent then.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket on which the child answers connect requests.
    pub fn attach_child(&self, sock: UnixStream) {
        self.lock().child = Some(sock);
    }

    /// The two descriptors the parent's loop polls: waiting connections, and data to move.
    pub fn poll_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.listeners.as_fd(), self.pumps_fd.as_fd()]
    }

    /// Accepts waiting connections and has the child connect the other end of each.
    pub fn accept_ready(&self) {
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
        for ev in &events[..n] {
            let raw = ev.data.u64();
            let id = raw as u32;
            if raw >> 32 != 0 {
                udp_ready(st, &self.listeners, id, raw >> 32);
                continue;
            }
            for _ in 0..ACCEPT_BURST {
                let Some(port) = st.ports.iter().find(|p| p.status.id == id) else {
                    break;
                };
                let conn =
                    match accept_with(&port.listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
                    {
                        Ok(c) => c,
                        Err(_) => break,
                    };
                let dial = port.dial;
                let Some(inner) = connect_in_child(&mut st.child, &dial) else {
                    // Nothing listens inside (or the child is gone): the client sees a close.
                    continue;
                };
                // On error (too many connections) both sockets are closed by the pumps.
                let _ = st.pumps.add(conn, inner, id);
            }
        }
    }

    /// Moves whatever data is ready.
    pub fn pump_ready(&self) {
        self.lock().pumps.run_ready();
    }
}

/// Asks the child for a socket connected to `dial`; `None` when it cannot.
fn connect_in_child(child: &mut Option<UnixStream>, dial: &PortConnect) -> Option<OwnedFd> {
    let sock = child.as_ref()?;
    if child::fdpass::send(sock, &Msg::PortConnect(*dial), None).is_err() {
        *child = None;
        return None;
    }
    match child::fdpass::recv(sock) {
        Ok((Msg::PortConnected(0), Some(fd))) => Some(fd),
        Ok((Msg::PortConnected(_), _)) => None,
        _ => {
            *child = None;
            None
        }
    }
}

/// Moves the datagrams waiting on a UDP listener (`kind` `UDP_LISTENER`) or on the socket of
/// flow `kind - UDP_FLOW`, after closing the port's idle flows.
fn udp_ready(st: &mut State, epfd: &OwnedFd, id: u32, kind: u64) {
    let State {
        ports, child, buf, ..
    } = st;
    let Some(port) = ports
        .iter_mut()
        .find(|p| p.status.id == id && !p.flows.is_empty())
    else {
        return;
    };
    let now = Instant::now();
    for f in port.flows.iter_mut() {
        if f.as_ref()
            .is_some_and(|f| now.duration_since(f.last) >= FLOW_IDLE)
        {
            *f = None;
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
    for _ in 0..ACCEPT_BURST {
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
                // A free slot, else the least recently used one.
                let i = (0..port.flows.len())
                    .min_by_key(|&i| port.flows[i].as_ref().map(|f| f.last))
                    .unwrap_or(0);
                port.flows[i] = None;
                let Some(sock) = connect_in_child(child, &port.dial) else {
                    continue;
                };
                if rustix::io::ioctl_fionbio(&sock, true).is_err()
                    || epoll::add(
                        epfd,
                        &sock,
                        epoll::EventData::new_u64((UDP_FLOW + i as u64) << 32 | u64::from(id)),
                        epoll::EventFlags::IN,
                    )
                    .is_err()
                {
                    continue;
                }
                port.flows[i] = Some(Flow {
                    peer,
                    sock,
                    last: now,
                });
                i
            }
        };
        if let Some(flow) = port.flows[slot].as_mut() {
            flow.last = now;
            let _ = send(&flow.sock, &buf[..n], SendFlags::DONTWAIT);
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
        let listener = listen_on(&spec, udp).map_err(|e| {
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
        })?;
        let dial = dial_target(&spec)?;
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
        let mut flows = Vec::new();
        if udp {
            flows.resize_with(MAX_FLOWS, || None);
            if st.buf.is_empty() {
                st.buf = vec![0; DATAGRAM_MAX];
            }
        }
        let status = PortStatus { id, spec };
        st.ports.push(Port {
            status: status.clone(),
            listener,
            dial,
            flows,
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
        st.ports.remove(i);
        st.pumps.close_group(id);
        Ok(())
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Go's `net.Listen(proto, "<parentIP>:<port>")` (`ListenPacket` for UDP): `tcp`/`udp` on
/// every address listens on both families (one IPv6 socket with IPV6_V6ONLY off),
/// `tcp4`/`tcp6` (`udp4`/`udp6`) on one.
fn listen_on(spec: &PortSpec, udp: bool) -> Result<OwnedFd, String> {
    let port = spec.parent_port as u16;
    let ip = parse_ip(&spec.parent_ip);
    let any = ip.is_none_or(|ip| ip.is_unspecified());
    let shown_host = match ip {
        Some(IpAddr::V6(_)) => format!("[{}]", spec.parent_ip),
        _ => spec.parent_ip.clone(),
    };
    let fail = |what: &str, e: Errno| {
        format!(
            "listen {} {shown_host}:{port}: {what}: {}",
            spec.proto,
            child::errno::describe(e.raw_os_error())
        )
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

/// Upstream's hint on a listen error that says "permission denied" (or EPERM) for a port below
/// `net.ipv4.ip_unprivileged_port_start` (`start`, when it could be read). The
/// CAP_NET_BIND_SERVICE advice is given only when the program runs as `rootlesskit`, the binary
/// that binds (as upstream, which leaves it out for Podman's embedding).
fn privileged_port_hint(err: String, port: i64, start: Option<i64>, named: bool) -> String {
    let denied = err.ends_with("permission denied") || err.ends_with("operation not permitted");
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
fn dial_target(spec: &PortSpec) -> Result<PortConnect, String> {
    let ip = if !spec.child_ip.is_empty() {
        parse_ip(&spec.child_ip).ok_or_else(|| format!("invalid ChildIP: {}", spec.child_ip))?
    } else {
        match parse_ip(&spec.parent_ip) {
            Some(ip) if !ip.is_unspecified() || ip.is_ipv6() => ip,
            _ => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    };
    let (family, addr) = match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (4, b)
        }
        IpAddr::V6(a) => (6, a.octets()),
    };
    Ok(PortConnect {
        family,
        addr,
        port: spec.child_port as u16,
        proto: u8::from(spec.proto.starts_with("udp")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v4 = |a: [u8; 4]| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a);
            (4u8, b)
        };
        for (s, want) in [
            (spec("tcp", "", ""), v4([127, 0, 0, 1])),
            (spec("tcp", "0.0.0.0", ""), v4([127, 0, 0, 1])),
            (spec("tcp", "127.0.0.2", ""), v4([127, 0, 0, 2])),
            (spec("tcp", "0.0.0.0", "10.0.2.100"), v4([10, 0, 2, 100])),
            (
                spec("tcp6", "::", ""),
                (6, std::net::Ipv6Addr::UNSPECIFIED.octets()),
            ),
            (
                spec("tcp", "0.0.0.0", "::1"),
                (6, std::net::Ipv6Addr::LOCALHOST.octets()),
            ),
        ] {
            let d = dial_target(&s).unwrap();
            assert_eq!((d.family, d.addr, d.port), (want.0, want.1, 80), "{s:?}");
        }
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

    /// Plays the child: answers every connect request with `child::ports::dial`.
    fn fake_child(b: &Builtin) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        b.attach_child(ours);
        std::thread::spawn(move || {
            while let Ok((Msg::PortConnect(c), _)) = child::fdpass::recv(&theirs) {
                let _ = match child::ports::dial(&c) {
                    Ok(fd) => {
                        child::fdpass::send(&theirs, &Msg::PortConnected(0), Some(fd.as_fd()))
                    }
                    Err(e) => {
                        child::fdpass::send(&theirs, &Msg::PortConnected(e.raw_os_error()), None)
                    }
                };
            }
        });
    }

    #[test]
    fn udp_datagrams_go_both_ways_per_client_and_removal_closes_the_port() {
        use std::net::UdpSocket;
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let child_port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        });
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
        assert_eq!((st.ports[0].flows.len(), live), (MAX_FLOWS, 3));
        drop(st);
        b.remove(id).unwrap();
        assert!(UdpSocket::bind(("127.0.0.1", parent_port)).is_ok());
    }

    #[test]
    fn privileged_ports_get_upstreams_hint() {
        let denied = "listen tcp4 127.0.0.1:80: bind: permission denied";
        assert_eq!(
            privileged_port_hint(denied.into(), 80, Some(1024), true),
            "cannot expose privileged port 80, you can add 'net.ipv4.ip_unprivileged_port_start=80' to /etc/sysctl.conf (currently 1024), or set CAP_NET_BIND_SERVICE on rootlesskit binary, or choose a larger port number (>= 1024): listen tcp4 127.0.0.1:80: bind: permission denied"
        );
        assert_eq!(
            privileged_port_hint(denied.into(), 80, Some(443), false),
            "cannot expose privileged port 80, you can add 'net.ipv4.ip_unprivileged_port_start=80' to /etc/sysctl.conf (currently 443), or choose a larger port number (>= 443): listen tcp4 127.0.0.1:80: bind: permission denied"
        );
        let eperm = "listen udp 0.0.0.0:53: bind: operation not permitted";
        assert!(
            privileged_port_hint(eperm.into(), 53, Some(1024), true)
                .starts_with("cannot expose privileged port 53,")
        );
        // Not below the start, the start unknown, or another error: unchanged.
        assert_eq!(
            privileged_port_hint(denied.into(), 80, Some(80), true),
            denied
        );
        assert_eq!(privileged_port_hint(denied.into(), 80, None, true), denied);
        let busy = "listen tcp4 127.0.0.1:80: bind: address already in use";
        assert_eq!(
            privileged_port_hint(busy.into(), 80, Some(1024), true),
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
