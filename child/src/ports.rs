//! The child's half of the builtin port driver: sockets made inside the namespace.
//!
//! A socket belongs to the network namespace it was created in, whoever connects it later.
//! So the child only makes sockets, in batches, and hands them to the parent, which connects
//! one per forwarded connection itself: no round trip through the child per connection.

use std::os::fd::OwnedFd;

use linux_raw_sys::net as n;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, socket_with};

use crate::routing::TRANSPARENT_MARK;

/// Makes up to `out.len()` non-blocking sockets of the wanted family and kind in the
/// calling thread's network namespace, into `out` from the start. For the transparent kinds
/// (TCP and UDP), and when `transparent` says the routing for it is in place, the sockets get
/// `IP_TRANSPARENT` (`IPV6_TRANSPARENT`) and the routing mark, which need CAP_NET_ADMIN here
/// and nothing later: whoever holds such a socket may bind it to the client's address. The
/// mark routes the replies of a server in the namespace back to a TCP socket (the accepted
/// socket inherits it); UDP replies from such a server are routed by port (see
/// [`crate::routing::udp_reply_route`]); for both, it marks the connection when NAT sends it
/// onward (see [`crate::nftables`]).
///
/// Returns how many it made and whether they are transparent.
///
/// # Errors
/// The errno of the first `socket()` when not even one could be made.
pub fn make_sockets(
    w: &proto::SocketsWanted,
    transparent: bool,
    out: &mut [Option<OwnedFd>],
) -> Result<(usize, bool), Errno> {
    let (family, level, option) = match w.family {
        4 => (AddressFamily::INET, n::SOL_IP, n::IP_TRANSPARENT),
        _ => (AddressFamily::INET6, n::SOL_IPV6, n::IPV6_TRANSPARENT),
    };
    let kind = match w.kind.is_udp() {
        true => SocketType::DGRAM,
        false => SocketType::STREAM,
    };
    let mut transparent = transparent && w.kind.is_transparent();
    let mut made = 0;
    for slot in out.iter_mut().take(usize::from(w.count)) {
        let fd = match socket_with(
            family,
            kind,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        ) {
            Ok(fd) => fd,
            Err(e) if made == 0 => return Err(e),
            Err(_) => break,
        };
        if transparent {
            let marked = sys::net::setsockopt_int(&fd, level, option, 1).and_then(|()| {
                sys::net::setsockopt_int(&fd, n::SOL_SOCKET, n::SO_MARK, TRANSPARENT_MARK as i32)
            });
            if marked.is_err() {
                // Then none of this batch is: the parent treats a batch alike.
                transparent = false;
            }
        }
        *slot = Some(fd);
        made += 1;
    }
    Ok((made, transparent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::os::fd::AsFd;

    use rustix::net::{SocketAddrV4, SocketAddrV6, connect};

    fn want(family: u8, proto: u8, count: u8) -> proto::SocketsWanted {
        proto::SocketsWanted {
            family,
            kind: proto::SocketKind::ALL[usize::from(proto)],
            count,
        }
    }

    #[test]
    fn makes_as_many_as_asked_and_they_connect_later() {
        let mut out: [Option<OwnedFd>; 4] = Default::default();
        let (made, transparent) = make_sockets(&want(4, 0, 3), false, &mut out).unwrap();
        assert_eq!((made, transparent), (3, false));
        assert!(out[3].is_none());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let fd = out[0].take().unwrap();
        match connect(&fd, &SocketAddrV4::new([127, 0, 0, 1].into(), port)) {
            Ok(()) | Err(Errno::INPROGRESS) => {}
            Err(e) => panic!("connect: {e}"),
        }
        let (mut server, _) = l.accept().unwrap();
        let mut pfd = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::OUT,
        )];
        rustix::event::poll(&mut pfd, None).unwrap();
        rustix::io::write(&fd, b"ok").unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
    }

    #[test]
    fn plain_sockets_are_not_transparent() {
        let mut out: [Option<OwnedFd>; 2] = Default::default();
        let (made, transparent) = make_sockets(&want(4, 0, 2), true, &mut out).unwrap();
        assert_eq!((made, transparent), (2, false));
        let (made, transparent) = make_sockets(&want(6, 1, 2), true, &mut out).unwrap();
        assert_eq!((made, transparent), (2, false));
        let server = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let fd = out[1].take().unwrap();
        let port = server.local_addr().unwrap().port();
        connect(
            fd.as_fd(),
            &SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, port, 0, 0),
        )
        .unwrap();
        rustix::io::write(&fd, b"hi").unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
    }

    #[test]
    fn transparency_needs_privilege_and_degrades_instead_of_failing() {
        let mut out: [Option<OwnedFd>; 1] = Default::default();
        let (made, transparent) = make_sockets(&want(4, 2, 1), true, &mut out).unwrap();
        assert_eq!(made, 1);
        // Root in the test's namespace may set it; anyone else gets plain sockets.
        let root = rustix::process::geteuid().is_root();
        assert_eq!(transparent, root);
    }
}
