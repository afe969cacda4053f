//! The builtin port driver, parent side: listeners on the host, one epoll set for them, and
//! the splice pumps. Each accepted connection is matched with a socket the child connects
//! inside the namespace and hands back over the proto socket (SCM_RIGHTS). TCP only so far.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};

use proto::{Msg, PortConnect};
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, SocketAddrV4, SocketAddrV6, SocketFlags, SocketType, accept_with, bind, listen,
    socket_with, sockopt,
};

use super::pump::Pumps;
use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};

/// Connections forwarded at once; beyond that new ones are closed.
const MAX_CONNS: usize = 1024;
/// Accepts handled per wakeup and listener before the loop gets a turn again.
const ACCEPT_BURST: usize = 64;

struct Port {
    status: PortStatus,
    listener: OwnedFd,
    dial: PortConnect,
}

struct State {
    next_id: u32,
    ports: Vec<Port>,
    pumps: Pumps,
    child: Option<UnixStream>,
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
        let mut st = self.lock();
        for ev in &events[..n] {
            let id = ev.data.u64() as u32;
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
                let Some(inner) = connect_in_child(&mut st, &dial) else {
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
fn connect_in_child(st: &mut State, dial: &PortConnect) -> Option<OwnedFd> {
    let child = st.child.as_ref()?;
    if child::fdpass::send(child, &Msg::PortConnect(*dial), None).is_err() {
        st.child = None;
        return None;
    }
    match child::fdpass::recv(child) {
        Ok((Msg::PortConnected(0), Some(fd))) => Some(fd),
        Ok((Msg::PortConnected(_), _)) => None,
        _ => {
            st.child = None;
            None
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
        if proto.starts_with("udp") {
            return Err(format!(
                "{proto} ports are not supported yet by the builtin port driver"
            ));
        }
        if !proto.starts_with("tcp") {
            return Err(format!("unsupported port protocol {proto}"));
        }
        let listener = listen_on(&spec)?;
        let dial = dial_target(&spec)?;
        let id = st.next_id;
        epoll::add(
            &self.listeners,
            &listener,
            epoll::EventData::new_u64(id as u64),
            epoll::EventFlags::IN,
        )
        .map_err(|e| format!("port driver: {e}"))?;
        st.next_id += 1;
        let status = PortStatus { id, spec };
        st.ports.push(Port {
            status: status.clone(),
            listener,
            dial,
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
        // Closing the listener takes it out of the epoll set; live connections go too.
        st.ports.remove(i);
        st.pumps.close_group(id);
        Ok(())
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Go's `net.Listen(proto, "<parentIP>:<port>")`: `tcp` on every address listens on both
/// families (one IPv6 socket with IPV6_V6ONLY off), `tcp4`/`tcp6` on one.
fn listen_on(spec: &PortSpec) -> Result<OwnedFd, String> {
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
    let (family, v6only) = match (spec.proto.as_str(), ip) {
        ("tcp4", _) | (_, Some(IpAddr::V4(_))) if !(spec.proto == "tcp" && any) => {
            (AddressFamily::INET, false)
        }
        ("tcp6", _) => (AddressFamily::INET6, true),
        (_, Some(IpAddr::V6(_))) if !any => (AddressFamily::INET6, true),
        _ => (AddressFamily::INET6, false),
    };
    let fd = socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| fail("socket", e))?;
    sockopt::set_socket_reuseaddr(&fd, true).map_err(|e| fail("setsockopt", e))?;
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
    listen(&fd, 128).map_err(|e| fail("listen", e))?;
    Ok(fd)
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
        let udp = spec("udp", "127.0.0.1", "");
        assert!(b.add(udp).unwrap_err().contains("not supported yet"));
        // Ids are never reused.
        assert_eq!(b.add(s).unwrap().id, 2);
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
