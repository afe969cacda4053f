//! The child's half of the builtin port driver: connect to a port inside the namespace.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, SocketFlags, SocketType,
    connect, socket_with, sockopt,
};

/// How long a connect inside the namespace may take before the client's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a TCP connection (or, for `proto` 1, a connected UDP socket) to the address of `c`,
/// inside whatever network namespace the calling thread is in.
///
/// # Errors
/// The errno of `socket` or `connect` (ECONNREFUSED when nothing listens on a TCP port).
pub fn dial(c: &proto::PortConnect) -> Result<OwnedFd, Errno> {
    let (family, v4) = match c.family {
        4 => (AddressFamily::INET, true),
        _ => (AddressFamily::INET6, false),
    };
    let kind = match c.proto {
        1 => SocketType::DGRAM,
        _ => SocketType::STREAM,
    };
    let fd = socket_with(family, kind, SocketFlags::CLOEXEC, None)?;
    // connect(2) gives up after SO_SNDTIMEO on a blocking socket.
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(CONNECT_TIMEOUT))?;
    if v4 {
        let ip = Ipv4Addr::new(c.addr[0], c.addr[1], c.addr[2], c.addr[3]);
        connect(&fd, &SocketAddrV4::new(ip, c.port))?;
    } else {
        let ip = Ipv6Addr::from(c.addr);
        connect(&fd, &SocketAddrV6::new(ip, c.port, 0, 0))?;
    }
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, None)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn dials_a_listener_and_reports_refusal() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let c = proto::PortConnect {
            family: 4,
            addr,
            port,
            proto: 0,
        };
        let fd = dial(&c).unwrap();
        let (mut server, _) = l.accept().unwrap();
        rustix::io::write(&fd, b"ok").unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
        drop(l);
        drop(server);
        assert_eq!(dial(&c).unwrap_err(), Errno::CONNREFUSED);
    }

    #[test]
    fn dials_a_udp_socket_connected_to_the_server() {
        let server = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let c = proto::PortConnect {
            family: 6,
            addr: Ipv6Addr::LOCALHOST.octets(),
            port: server.local_addr().unwrap().port(),
            proto: 1,
        };
        let fd = dial(&c).unwrap();
        rustix::io::write(&fd, b"hi").unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        server.send_to(b"back", from).unwrap();
        let mut back = [0u8; 8];
        assert_eq!(rustix::io::read(&fd, &mut back).unwrap(), 4);
        assert_eq!(&back[..4], b"back");
    }
}
