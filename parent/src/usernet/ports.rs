//! The published ports of `--port-driver=gvisor-tap-vsock`: host sockets in the stack's epoll
//! set whose connections and datagrams the stack carries into the namespace, from the client's
//! own address and port where the namespace can answer it there ([`seen_from`]).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use rustix::net::SocketAddrAny;

use super::Config;
use super::wire::{Addr, mapped, unmapped};

/// The most host connections taken from one published port per wake-up.
pub(crate) const ACCEPT_BATCH: usize = 16;

/// One published port.
pub(crate) struct Published {
    /// The port driver's id.
    pub id: u32,
    /// The host listener (TCP) or bound socket (UDP).
    pub sock: OwnedFd,
    /// UDP rather than TCP.
    pub udp: bool,
    /// Where in the namespace its traffic goes.
    pub child: (Addr, u16),
}

/// The address and port a host client `peer` appears from inside the namespace: its own,
/// when it is an IPv4 address (or an IPv4-mapped one) the namespace routes through the
/// gateway; the gateway's with the client's port otherwise (loopback, which would be a martian
/// inside; an address of the namespace's own network; IPv6).
///
/// Toward an IPv6 `child` (a `tcp6`/`udp6` port, with `--ipv6`) the same for IPv6: a global
/// client address outside the namespace's prefix as it is, anything else as the gateway's
/// `fd00::2`.
pub(crate) fn seen_from(cfg: &Config, peer: SocketAddrAny, child: &Addr) -> (Addr, u16) {
    let peer = SocketAddr::try_from(peer).ok();
    let port = peer.map_or(0, |p| p.port());
    if let (Some(gw6), None) = (cfg.gateway6, unmapped(child)) {
        return match peer {
            Some(SocketAddr::V6(a))
                if a.ip().to_ipv4_mapped().is_none()
                    && cfg.host_addr(a.ip().octets(), port).is_some() =>
            {
                (a.ip().octets(), port)
            }
            _ => (gw6, port),
        };
    }
    let ip = match peer {
        Some(SocketAddr::V4(a)) => Some(a.ip().octets()),
        Some(SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().map(|v| v.octets()),
        None => None,
    };
    let mask = u32::MAX
        .checked_shl(32 - u32::from(cfg.prefix))
        .unwrap_or(0);
    let routed = |ip: [u8; 4]| {
        let v = u32::from_be_bytes(ip);
        ip[0] != 127
            && ip[0] != 0
            && ip[0] < 224
            && v & mask != u32::from_be_bytes(cfg.child) & mask
    };
    match ip {
        Some(ip) if routed(ip) => (mapped(ip), port),
        _ => (mapped(cfg.gateway), port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    #[test]
    fn clients_appear_as_themselves_where_the_namespace_can_answer() {
        let cfg = Config {
            gateway: [10, 0, 2, 1],
            child: [10, 0, 2, 100],
            prefix: 24,
            mtu: 1500,
            host_loopback: true,
            nameservers: super::super::dns::Servers::default(),
            gateway6: None,
        };
        let child6: Addr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let with6 = Config {
            gateway6: Some(super::super::GATEWAY6),
            ..cfg
        };
        let at6 = |a: &str| SocketAddrAny::from(SocketAddrV6::new(a.parse().unwrap(), 4242, 0, 0));
        let gw6 = (super::super::GATEWAY6, 4242);
        let real: Addr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            super::seen_from(&with6, at6("2001:db8::7"), &child6),
            (real, 4242)
        );
        for other in ["::1", "fd00::9", "fe80::1", "::ffff:192.0.2.1"] {
            assert_eq!(
                super::seen_from(&with6, at6(other), &child6),
                gw6,
                "{other}"
            );
        }
        let v4 = |a: [u8; 4]| SocketAddrAny::from(SocketAddrV4::new(Ipv4Addr::from(a), 4242));
        let seen_from = |cfg: &Config, peer| seen_from(cfg, peer, &mapped([10, 0, 2, 100]));
        assert_eq!(
            seen_from(&cfg, v4([192, 168, 1, 5])),
            (mapped([192, 168, 1, 5]), 4242)
        );
        assert_eq!(
            seen_from(&cfg, v4([10, 0, 3, 7])),
            (mapped([10, 0, 3, 7]), 4242)
        );
        for own in [[127, 0, 0, 1], [10, 0, 2, 9], [0, 0, 0, 0], [224, 0, 0, 1]] {
            assert_eq!(
                seen_from(&cfg, v4(own)),
                (mapped([10, 0, 2, 1]), 4242),
                "{own:?}"
            );
        }
        let v6 = |a: Ipv6Addr| SocketAddrAny::from(SocketAddrV6::new(a, 4242, 0, 0));
        let m = Ipv4Addr::new(198, 51, 100, 3).to_ipv6_mapped();
        assert_eq!(seen_from(&cfg, v6(m)), (mapped([198, 51, 100, 3]), 4242));
        assert_eq!(
            seen_from(&cfg, v6(Ipv6Addr::LOCALHOST)),
            (mapped([10, 0, 2, 1]), 4242)
        );
        assert_eq!(
            seen_from(&cfg, v6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())),
            (mapped([10, 0, 2, 1]), 4242)
        );
    }
}
