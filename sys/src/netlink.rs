//! A small rtnetlink client: link up, MTU, addresses and the default route, over one fixed buffer.
//!
//! This replaces upstream's `ip link set lo up`, `ip link set <dev> up`, `ip link set dev <dev> mtu <n>`,
//! `ip addr add <ip>/<n> dev <dev>` and `ip route add default via <gw> dev <dev>` (§6.1), so the child runs no
//! external program for its network setup.
//!
//! Requests are encoded by pure functions into a caller's byte buffer (tested byte for byte below); [`Netlink`]
//! sends them from its own `[u8; 1024]` and waits for the kernel's acknowledgement, allocating nothing per request.
//! All fields are in host byte order, as netlink requires, except addresses, which are in network order.

use std::net::IpAddr;

use rustix::fd::OwnedFd;
use rustix::io::{self, Errno};
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketFlags, SocketType};

use linux_raw_sys::netlink as nl;

use crate::mount::Error;

/// Size of the request and reply buffer. Our largest request is 64 bytes and an error reply echoes it back
/// with a 20-byte header, so this is ample.
pub const BUF_LEN: usize = 1024;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = nl::NLMSG_ERROR as u16;
const RTM_NEWLINK: u16 = nl::RTM_NEWLINK as u16;
const RTM_NEWADDR: u16 = nl::RTM_NEWADDR as u16;
const RTM_NEWROUTE: u16 = nl::RTM_NEWROUTE as u16;
const RTM_DELROUTE: u16 = nl::RTM_DELROUTE as u16;
const IFLA_MTU: u16 = nl::IFLA_MTU as u16;
const IFLA_ADDRESS: u16 = nl::IFLA_ADDRESS as u16;
const IFA_ADDRESS: u16 = nl::IFA_ADDRESS as u16;
const IFA_LOCAL: u16 = nl::IFA_LOCAL as u16;
const RTA_GATEWAY: u16 = nl::rtattr_type_t::RTA_GATEWAY as u16;
const RTA_OIF: u16 = nl::rtattr_type_t::RTA_OIF as u16;
const RTA_DST: u16 = nl::rtattr_type_t::RTA_DST as u16;
const AF_UNSPEC: u8 = linux_raw_sys::net::AF_UNSPEC as u8;
const AF_INET: u8 = linux_raw_sys::net::AF_INET as u8;
const AF_INET6: u8 = linux_raw_sys::net::AF_INET6 as u8;
const IFF_UP: u32 = linux_raw_sys::net::net_device_flags::IFF_UP as u32;

/// `NLM_F_REQUEST | NLM_F_ACK`: a change that the kernel confirms.
const CHANGE: u16 = (nl::NLM_F_REQUEST | nl::NLM_F_ACK) as u16;
/// `CHANGE | NLM_F_CREATE | NLM_F_EXCL`: create something that must not exist yet (what `ip ... add` sends).
const CREATE: u16 = (nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_CREATE | nl::NLM_F_EXCL) as u16;

/// Writes one netlink message (header, family header, attributes) into a borrowed buffer.
///
/// Every append checks the space left, so a too-small buffer gives `ENOBUFS`, never a panic.
pub struct Request<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Request<'a> {
    /// Starts a message with an `nlmsghdr` of type `ty`; its length is filled in by [`Request::finish`].
    pub fn new(buf: &'a mut [u8], ty: u16, flags: u16, seq: u32) -> io::Result<Request<'a>> {
        let mut r = Request { buf, len: 0 };
        // nlmsg_len (0 until `finish`), nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid (0: the kernel).
        let mut head = [0u8; NLMSG_HDRLEN];
        head[4..6].copy_from_slice(&ty.to_ne_bytes());
        head[6..8].copy_from_slice(&flags.to_ne_bytes());
        head[8..12].copy_from_slice(&seq.to_ne_bytes());
        r.put(&head)?;
        Ok(r)
    }

    /// Appends raw bytes (a family header), then pads to 4 bytes.
    pub fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.len.checked_add(bytes.len()).ok_or(Errno::NOBUFS)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(Errno::NOBUFS)?
            .copy_from_slice(bytes);
        self.len = end;
        while !self.len.is_multiple_of(4) {
            *self.buf.get_mut(self.len).ok_or(Errno::NOBUFS)? = 0;
            self.len += 1;
        }
        Ok(())
    }

    /// Appends an `rtattr` of type `ty`; its length counts the payload but not the padding.
    pub fn attr(&mut self, ty: u16, payload: &[u8]) -> io::Result<()> {
        let len = u16::try_from(4 + payload.len()).map_err(|_| Errno::NOBUFS)?;
        let mut head = [0u8; 4];
        head[..2].copy_from_slice(&len.to_ne_bytes());
        head[2..].copy_from_slice(&ty.to_ne_bytes());
        self.put(&head)?;
        // `put` pads after the payload, which is what RTA_ALIGN asks for.
        self.put(payload)
    }

    /// Appends a nested attribute of type `ty` (with `NLA_F_NESTED` set, as libmnl does) whose
    /// payload is what `inner` appends; its length is filled in afterwards.
    pub fn nest(
        &mut self,
        ty: u16,
        inner: impl FnOnce(&mut Self) -> io::Result<()>,
    ) -> io::Result<()> {
        let start = self.len;
        self.put(&[0, 0, 0, 0])?;
        inner(self)?;
        let len = u16::try_from(self.len - start).map_err(|_| Errno::NOBUFS)?;
        let ty = ty | nl::NLA_F_NESTED as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&ty.to_ne_bytes());
        Ok(())
    }

    /// Writes the total length into the header and returns it.
    pub fn finish(self) -> usize {
        self.buf[..4].copy_from_slice(&(self.len as u32).to_ne_bytes());
        self.len
    }
}

/// `struct rtmsg` of a route `ip route add` would make (protocol `boot`): family, destination
/// prefix length, table, scope and type; no source prefix, TOS or flags.
fn rtmsg(family: u8, dst_len: u8, table: u8, scope: u8, kind: u8) -> [u8; 12] {
    let boot = nl::RTPROT_BOOT as u8;
    [family, dst_len, 0, 0, table, boot, scope, kind, 0, 0, 0, 0]
}

/// `struct rtmsg` of a `local` route (scope host) in `table`.
fn local_rtmsg(family: u8, dst_len: u8, table: u8) -> [u8; 12] {
    let host = nl::rt_scope_t::RT_SCOPE_HOST as u8;
    rtmsg(family, dst_len, table, host, nl::RTN_LOCAL as u8)
}

/// An `RTM_NEWRULE` request whose `struct fib_rule_hdr` sends what matches to `table`
/// (family, dst_len, src_len, tos, table, two reserved bytes, action, flags); the caller adds
/// the selectors and the priority.
fn to_table_rule(buf: &mut [u8], seq: u32, family: u8, table: u8) -> io::Result<Request<'_>> {
    let mut r = Request::new(buf, nl::RTM_NEWRULE as u16, CREATE, seq)?;
    let to_table = nl::FR_ACT_TO_TBL as u8;
    r.put(&[family, 0, 0, 0, table, 0, 0, to_table, 0, 0, 0, 0])?;
    Ok(r)
}

/// `struct ifinfomsg`: family, type, index, flags and the mask of flags to change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = AF_UNSPEC; // ifi_family, then a pad byte and ifi_type (0)
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// `RTM_NEWLINK` setting `IFF_UP` on link `index` (`ip link set <dev> up`).
pub fn encode_set_link_up(buf: &mut [u8], seq: u32, index: u32) -> io::Result<usize> {
    let mut r = Request::new(buf, RTM_NEWLINK, CHANGE, seq)?;
    r.put(&ifinfomsg(index, IFF_UP, IFF_UP))?;
    Ok(r.finish())
}

/// `RTM_NEWLINK` with `IFLA_MTU` on link `index` (`ip link set dev <dev> mtu <mtu>`).
pub fn encode_set_mtu(buf: &mut [u8], seq: u32, index: u32, mtu: u32) -> io::Result<usize> {
    let mut r = Request::new(buf, RTM_NEWLINK, CHANGE, seq)?;
    r.put(&ifinfomsg(index, 0, 0))?;
    r.attr(IFLA_MTU, &mtu.to_ne_bytes())?;
    Ok(r.finish())
}

/// `RTM_NEWLINK` with `IFLA_ADDRESS` on link `index` (`ip link set <dev> address <mac>`).
pub fn encode_set_mac(buf: &mut [u8], seq: u32, index: u32, mac: [u8; 6]) -> io::Result<usize> {
    let mut r = Request::new(buf, RTM_NEWLINK, CHANGE, seq)?;
    r.put(&ifinfomsg(index, 0, 0))?;
    r.attr(IFLA_ADDRESS, &mac)?;
    Ok(r.finish())
}

/// `RTM_NEWADDR` adding `addr/prefix` to link `index` (`ip addr add <addr>/<prefix> dev <dev>`).
///
/// `addr` is 4 bytes for IPv4 or 16 for IPv6, in network order; like `ip`, both `IFA_LOCAL` and `IFA_ADDRESS`
/// carry it. A prefix longer than the address gives `EINVAL`.
pub fn encode_add_addr(
    buf: &mut [u8],
    seq: u32,
    index: u32,
    addr: &[u8],
    prefix: u8,
) -> io::Result<usize> {
    let family = match addr.len() {
        4 => AF_INET,
        16 => AF_INET6,
        _ => return Err(Errno::AFNOSUPPORT),
    };
    if usize::from(prefix) > addr.len() * 8 {
        return Err(Errno::INVAL);
    }
    let mut r = Request::new(buf, RTM_NEWADDR, CREATE, seq)?;
    let mut ifa = [0u8; 8];
    ifa[0] = family;
    ifa[1] = prefix; // then ifa_flags 0 and ifa_scope RT_SCOPE_UNIVERSE (0)
    ifa[4..8].copy_from_slice(&index.to_ne_bytes());
    r.put(&ifa)?;
    r.attr(IFA_LOCAL, addr)?;
    r.attr(IFA_ADDRESS, addr)?;
    Ok(r.finish())
}

/// `RTM_NEWROUTE` for `0.0.0.0/0 via gw dev index` in the main table (`ip route add default via <gw> dev <dev>`).
pub fn encode_add_default_route_v4(
    buf: &mut [u8],
    seq: u32,
    index: u32,
    gw: [u8; 4],
) -> io::Result<usize> {
    let mut r = Request::new(buf, RTM_NEWROUTE, CREATE, seq)?;
    r.put(&rtmsg(
        AF_INET,
        0, // the default route
        nl::rt_class_t::RT_TABLE_MAIN as u8,
        nl::rt_scope_t::RT_SCOPE_UNIVERSE as u8,
        nl::RTN_UNICAST as u8,
    ))?;
    r.attr(RTA_GATEWAY, &gw)?;
    r.attr(RTA_OIF, &index.to_ne_bytes())?;
    Ok(r.finish())
}

/// `RTM_NEWRULE` sending packets marked `mark` to routing table `table` at `priority`
/// (`ip [-6] rule add fwmark <mark> lookup <table> priority <priority>`).
pub fn encode_add_fwmark_rule(
    buf: &mut [u8],
    seq: u32,
    family: u8,
    mark: u32,
    table: u8,
    priority: u32,
) -> io::Result<usize> {
    let mut r = to_table_rule(buf, seq, family, table)?;
    r.attr(nl::FRA_FWMARK as u16, &mark.to_ne_bytes())?;
    r.attr(nl::FRA_PRIORITY as u16, &priority.to_ne_bytes())?;
    Ok(r.finish())
}

/// `RTM_NEWROUTE` for a `local` default route through link `index` in table `table`: every
/// destination counts as an address of this host there
/// (`ip [-6] route add local default dev lo table <table>`).
pub fn encode_add_local_default_route(
    buf: &mut [u8],
    seq: u32,
    family: u8,
    index: u32,
    table: u8,
) -> io::Result<usize> {
    let mut r = Request::new(buf, RTM_NEWROUTE, CREATE, seq)?;
    r.put(&local_rtmsg(family, 0, table))?;
    r.attr(RTA_OIF, &index.to_ne_bytes())?;
    Ok(r.finish())
}

/// `RTM_NEWRULE`: UDP sent from source port `port` is routed by table `table`
/// (`ip [-6] rule add ipproto udp sport <port> lookup <table> priority <priority>`).
pub fn encode_add_udp_sport_rule(
    buf: &mut [u8],
    seq: u32,
    family: u8,
    port: u16,
    table: u8,
    priority: u32,
) -> io::Result<usize> {
    let mut r = to_table_rule(buf, seq, family, table)?;
    r.attr(
        nl::FRA_IP_PROTO as u16,
        &[linux_raw_sys::net::IPPROTO_UDP as u8],
    )?;
    // struct fib_rule_port_range { __u16 start; __u16 end; }: the one port.
    let p = port.to_ne_bytes();
    r.attr(nl::FRA_SPORT_RANGE as u16, &[p[0], p[1], p[0], p[1]])?;
    r.attr(nl::FRA_PRIORITY as u16, &priority.to_ne_bytes())?;
    Ok(r.finish())
}

/// `RTM_NEWROUTE` (`add`) or `RTM_DELROUTE`: the one address `addr` counts as this host's in
/// table `table`, through link `index` (`ip [-6] route add|del local <addr> dev lo table <table>`).
pub fn encode_local_host_route(
    buf: &mut [u8],
    seq: u32,
    add: bool,
    addr: IpAddr,
    index: u32,
    table: u8,
) -> io::Result<usize> {
    let (ty, flags) = if add {
        (RTM_NEWROUTE, CREATE)
    } else {
        (RTM_DELROUTE, CHANGE)
    };
    let mut r = Request::new(buf, ty, flags, seq)?;
    let (family, len, v4, v6) = match addr {
        IpAddr::V4(a) => (AF_INET, 32, a.octets(), [0; 16]),
        IpAddr::V6(a) => (AF_INET6, 128, [0; 4], a.octets()),
    };
    r.put(&local_rtmsg(family, len, table))?;
    r.attr(RTA_DST, if addr.is_ipv4() { &v4[..] } else { &v6[..] })?;
    r.attr(RTA_OIF, &index.to_ne_bytes())?;
    Ok(r.finish())
}

/// Looks through one received datagram for the acknowledgement of request `seq`.
///
/// Returns `None` when the datagram holds no `NLMSG_ERROR` for `seq` (keep waiting), `Some(Ok(()))` for an
/// ACK (error 0) and `Some(Err(errno))` for a refusal. A truncated message ends the scan.
pub fn scan_reply(reply: &[u8], seq: u32) -> Option<io::Result<()>> {
    let mut off = 0usize;
    while let Some(msg) = reply.get(off..) {
        if msg.len() < NLMSG_HDRLEN {
            break;
        }
        let len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
        if len < NLMSG_HDRLEN || len > msg.len() {
            break;
        }
        let ty = u16::from_ne_bytes([msg[4], msg[5]]);
        let msg_seq = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
        if ty == NLMSG_ERROR && msg_seq == seq {
            let Some(code) = msg.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4) else {
                return Some(Err(Errno::BADMSG));
            };
            let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            return Some(match code {
                0 => Ok(()),
                // The kernel sends a negative errno; anything else is not a valid error code.
                c => Err(c
                    .checked_neg()
                    .filter(|e| *e > 0)
                    .map_or(Errno::BADMSG, Errno::from_raw_os_error)),
            });
        }
        off += (len + 3) & !3;
    }
    None
}

/// An rtnetlink socket (`NETLINK_ROUTE`) with one request/reply buffer.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: [u8; BUF_LEN],
}

impl Netlink {
    /// `socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)` in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // NETLINK_ROUTE is 0, which rustix spells as "no protocol".
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Netlink {
            fd,
            seq: 0,
            buf: [0; BUF_LEN],
        })
    }

    /// Encodes a request with `build(buffer, seq)`, sends it to the kernel and waits for its acknowledgement.
    ///
    /// Replies for other sequence numbers and datagrams not sent by the kernel (port id 0) are skipped.
    ///
    /// # Errors
    ///
    /// The encoder's error, a socket error, or the errno the kernel refused the request with.
    pub fn request(
        &mut self,
        build: impl FnOnce(&mut [u8], u32) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = build(&mut self.buf, seq)?;
        let sent = retry(|| rustix::net::send(&self.fd, &self.buf[..len], SendFlags::empty()))?;
        if sent != len {
            return Err(Errno::MSGSIZE);
        }
        loop {
            let (n, _, from) =
                retry(|| rustix::net::recvfrom(&self.fd, &mut self.buf[..], RecvFlags::empty()))?;
            if !from_kernel(from) {
                continue;
            }
            if let Some(result) = scan_reply(&self.buf[..n], seq) {
                return result;
            }
        }
    }

    /// The index of interface `name` (`SIOCGIFINDEX`).
    pub fn link_index(&self, name: &str) -> io::Result<u32> {
        rustix::net::netdevice::name_to_index(&self.fd, name)
    }

    /// `ip link set <index> up`.
    pub fn set_link_up(&mut self, index: u32) -> io::Result<()> {
        self.request(|buf, seq| encode_set_link_up(buf, seq, index))
    }

    /// `ip link set <index> mtu <mtu>`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.request(|buf, seq| encode_set_mtu(buf, seq, index, mtu))
    }

    /// `ip link set <index> address <mac>`.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        self.request(|buf, seq| encode_set_mac(buf, seq, index, mac))
    }

    /// `ip addr add <addr>/<prefix> dev <index>` for IPv4.
    pub fn add_addr_v4(&mut self, index: u32, addr: [u8; 4], prefix: u8) -> io::Result<()> {
        self.request(|buf, seq| encode_add_addr(buf, seq, index, &addr, prefix))
    }

    /// `ip addr add <addr>/<prefix> dev <index>` for IPv6.
    pub fn add_addr_v6(&mut self, index: u32, addr: [u8; 16], prefix: u8) -> io::Result<()> {
        self.request(|buf, seq| encode_add_addr(buf, seq, index, &addr, prefix))
    }

    /// `ip route add default via <gw> dev <index>`.
    pub fn add_default_route_v4(&mut self, index: u32, gw: [u8; 4]) -> io::Result<()> {
        self.request(|buf, seq| encode_add_default_route_v4(buf, seq, index, gw))
    }
}

pub fn from_kernel(from: Option<SocketAddrAny>) -> bool {
    from.and_then(|a| SocketAddrNetlink::try_from(a).ok())
        .is_some_and(|a| a.pid() == 0)
}

pub fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// Brings `lo` up in the current network namespace (`ip link set lo up`).
///
/// In a fresh namespace this also makes the kernel add `127.0.0.1/8` and `::1/128`, so nothing else is needed
/// for `--net=none` or before a driver's own setup.
///
/// # Errors
///
/// `failed to bring up lo: <errno>`.
pub fn loopback_up() -> Result<(), Error> {
    let fail = || Error::sys("bring up", "lo");
    let mut nl = Netlink::open().map_err(fail())?;
    let index = nl.link_index("lo").map_err(fail())?;
    nl.set_link_up(index).map_err(fail())
}

/// Configures a driver's device the way upstream's four `ip` commands do, in the same order:
/// link up, MTU, `addr/prefix`, default route via `gw`.
///
/// # Errors
///
/// `failed to <step> <dev>: <errno>` for the first step that fails, for example
/// `failed to add address to tap0: file exists`.
pub fn activate_dev(
    dev: &str,
    mtu: u32,
    addr: [u8; 4],
    prefix: u8,
    gw: [u8; 4],
) -> Result<(), Error> {
    let mut nl = Netlink::open().map_err(Error::sys("open a netlink socket for", dev))?;
    let index = nl
        .link_index(dev)
        .map_err(Error::sys("look up interface", dev))?;
    nl.set_link_up(index).map_err(Error::sys("bring up", dev))?;
    nl.set_mtu(index, mtu)
        .map_err(Error::sys("set mtu of", dev))?;
    // Already there is fine: a persistent tap keeps both when its driver restarts.
    nl.add_addr_v4(index, addr, prefix)
        .or_else(exists_is_fine)
        .map_err(Error::sys("add address to", dev))?;
    nl.add_default_route_v4(index, gw)
        .or_else(exists_is_fine)
        .map_err(Error::sys("add default route on", dev))
}

fn exists_is_fine(e: Errno) -> io::Result<()> {
    if e == Errno::EXIST { Ok(()) } else { Err(e) }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    /// Encodes with `seq` 7 into a fresh buffer and compares every byte.
    #[track_caller]
    fn check(encode: impl FnOnce(&mut [u8], u32) -> io::Result<usize>, expect: &[u8]) {
        let mut buf = [0xAAu8; BUF_LEN];
        let len = encode(&mut buf, 7).expect("encodes");
        assert_eq!(&buf[..len], expect);
        assert_eq!(len % 4, 0, "messages are 4-byte aligned");
    }

    #[test]
    fn link_up() {
        check(
            |b, s| encode_set_link_up(b, s, 1),
            &[
                32, 0, 0, 0, // nlmsg_len
                16, 0, // RTM_NEWLINK
                5, 0, // NLM_F_REQUEST | NLM_F_ACK
                7, 0, 0, 0, // seq
                0, 0, 0, 0, // pid
                0, 0, 0, 0, // ifi_family AF_UNSPEC, pad, ifi_type
                1, 0, 0, 0, // ifi_index
                1, 0, 0, 0, // ifi_flags IFF_UP
                1, 0, 0, 0, // ifi_change IFF_UP
            ],
        );
    }

    #[test]
    fn udp_sport_rule() {
        check(
            |b, s| encode_add_udp_sport_rule(b, s, AF_INET6, 5353, 101, 101),
            &[
                52, 0, 0, 0, 32, 0, // RTM_NEWRULE
                0x05, 0x06, // NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
                7, 0, 0, 0, 0, 0, 0, 0, // seq, pid
                10, 0, 0, 0, 101, 0, 0, 1, 0, 0, 0,
                0, // fib_rule_hdr: AF_INET6, table 101, FR_ACT_TO_TBL
                5, 0, 22, 0, 17, 0, 0, 0, // FRA_IP_PROTO: IPPROTO_UDP, padded
                8, 0, 23, 0, 0xe9, 0x14, 0xe9, 0x14, // FRA_SPORT_RANGE: 5353..5353
                8, 0, 6, 0, 101, 0, 0, 0, // FRA_PRIORITY
            ],
        );
    }

    #[test]
    fn local_host_routes() {
        check(
            |b, s| encode_local_host_route(b, s, true, IpAddr::from([192, 0, 2, 7]), 1, 101),
            &[
                44, 0, 0, 0, 24, 0, 0x05, 0x06, 7, 0, 0, 0, 0, 0, 0,
                0, // RTM_NEWROUTE, create
                2, 32, 0, 0, 101, 3, 254, 2, 0, 0, 0,
                0, // AF_INET /32, table 101, boot, host, RTN_LOCAL
                8, 0, 1, 0, 192, 0, 2, 7, // RTA_DST
                8, 0, 4, 0, 1, 0, 0, 0, // RTA_OIF
            ],
        );
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        check(
            |b, s| encode_local_host_route(b, s, false, v6, 1, 101),
            &[
                56, 0, 0, 0, 25, 0, 0x05, 0, 7, 0, 0, 0, 0, 0, 0,
                0, // RTM_DELROUTE, request + ack
                10, 128, 0, 0, 101, 3, 254, 2, 0, 0, 0, 0, // AF_INET6 /128
                20, 0, 1, 0, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                9, // RTA_DST
                8, 0, 4, 0, 1, 0, 0, 0, // RTA_OIF
            ],
        );
    }

    #[test]
    fn mtu() {
        check(
            |b, s| encode_set_mtu(b, s, 3, 65520),
            &[
                40, 0, 0, 0, 16, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0, // header
                0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, // ifinfomsg: index 3, no flag change
                8, 0, 4, 0, // rtattr: len 8, IFLA_MTU
                0xf0, 0xff, 0, 0, // 65520
            ],
        );
    }

    #[test]
    fn mac() {
        check(
            |b, s| encode_set_mac(b, s, 3, [2, 0x50, 0, 0, 0, 3]),
            &[
                44, 0, 0, 0, 16, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0, // header
                0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ifinfomsg: index 3
                10, 0, 1, 0, // rtattr: len 10, IFLA_ADDRESS
                2, 0x50, 0, 0, 0, 3, 0, 0, // the MAC, padded
            ],
        );
    }

    #[test]
    fn address_v4() {
        check(
            |b, s| encode_add_addr(b, s, 2, &[10, 0, 2, 100], 24),
            &[
                40, 0, 0, 0, // nlmsg_len
                20, 0, // RTM_NEWADDR
                0x05, 0x06, // REQUEST | ACK | EXCL (0x200) | CREATE (0x400)
                7, 0, 0, 0, 0, 0, 0, 0, // seq, pid
                2, 24, 0, 0, // AF_INET, prefix 24, flags, scope universe
                2, 0, 0, 0, // ifa_index
                8, 0, 2, 0, 10, 0, 2, 100, // IFA_LOCAL
                8, 0, 1, 0, 10, 0, 2, 100, // IFA_ADDRESS
            ],
        );
    }

    #[test]
    fn address_v6() {
        let mut addr = [0u8; 16];
        addr[0] = 0xfd;
        addr[15] = 0x64;
        let mut expect = vec![
            64, 0, 0, 0, 20, 0, 0x05, 0x06, 7, 0, 0, 0, 0, 0, 0, 0, // header
            10, 64, 0, 0, 2, 0, 0, 0, // AF_INET6, prefix 64, index 2
            20, 0, 2, 0, // IFA_LOCAL, 16-byte payload
        ];
        expect.extend_from_slice(&addr);
        expect.extend_from_slice(&[20, 0, 1, 0]); // IFA_ADDRESS
        expect.extend_from_slice(&addr);
        check(|b, s| encode_add_addr(b, s, 2, &addr, 64), &expect);
    }

    #[test]
    fn default_route() {
        check(
            |b, s| encode_add_default_route_v4(b, s, 2, [10, 0, 2, 2]),
            &[
                44, 0, 0, 0, // nlmsg_len
                24, 0, // RTM_NEWROUTE
                0x05, 0x06, 7, 0, 0, 0, 0, 0, 0, 0, // CREATE flags, seq, pid
                2, 0, 0, 0, // AF_INET, dst_len 0, src_len 0, tos
                254, 3, 0, 1, // RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST
                0, 0, 0, 0, // rtm_flags
                8, 0, 5, 0, 10, 0, 2, 2, // RTA_GATEWAY
                8, 0, 4, 0, 2, 0, 0, 0, // RTA_OIF
            ],
        );
    }

    #[test]
    fn fwmark_rule() {
        check(
            |b, s| encode_add_fwmark_rule(b, s, 10, 100, 100, 100),
            &[
                44, 0, 0, 0, // nlmsg_len
                32, 0, // RTM_NEWRULE
                0x05, 0x06, 7, 0, 0, 0, 0, 0, 0, 0, // CREATE flags, seq, pid
                10, 0, 0, 0, // AF_INET6, dst_len, src_len, tos
                100, 0, 0, 1, // table, res1, res2, FR_ACT_TO_TBL
                0, 0, 0, 0, // flags
                8, 0, 10, 0, 100, 0, 0, 0, // FRA_FWMARK
                8, 0, 6, 0, 100, 0, 0, 0, // FRA_PRIORITY
            ],
        );
    }

    #[test]
    fn local_default_route() {
        check(
            |b, s| encode_add_local_default_route(b, s, 2, 1, 100),
            &[
                36, 0, 0, 0, // nlmsg_len
                24, 0, // RTM_NEWROUTE
                0x05, 0x06, 7, 0, 0, 0, 0, 0, 0, 0, // CREATE flags, seq, pid
                2, 0, 0, 0, // AF_INET, dst_len 0, src_len 0, tos
                100, 3, 254, 2, // table 100, RTPROT_BOOT, RT_SCOPE_HOST, RTN_LOCAL
                0, 0, 0, 0, // rtm_flags
                8, 0, 4, 0, 1, 0, 0, 0, // RTA_OIF
            ],
        );
    }

    #[test]
    fn attributes_are_padded_but_lengths_are_not() {
        check(
            |b, s| {
                let mut r = Request::new(b, 99, 1, s)?;
                r.attr(3, b"lo\0")?; // IFLA_IFNAME, 3-byte payload
                r.attr(4, &[])?;
                Ok(r.finish())
            },
            &[
                28, 0, 0, 0, 99, 0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, // header
                7, 0, 3, 0, b'l', b'o', 0, 0, // rta_len 7, one byte of padding
                4, 0, 4, 0, // empty attribute
            ],
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        #[track_caller]
        fn check_err(
            buf_len: usize,
            encode: impl FnOnce(&mut [u8], u32) -> io::Result<usize>,
            expect: Errno,
        ) {
            let mut buf = vec![0u8; buf_len];
            assert_eq!(encode(&mut buf, 1), Err(expect));
        }
        check_err(
            BUF_LEN,
            |b, s| encode_add_addr(b, s, 1, &[1, 2, 3], 8),
            Errno::AFNOSUPPORT,
        );
        check_err(
            BUF_LEN,
            |b, s| encode_add_addr(b, s, 1, &[10, 0, 0, 1], 33),
            Errno::INVAL,
        );
        check_err(
            BUF_LEN,
            |b, s| encode_add_addr(b, s, 1, &[0; 16], 129),
            Errno::INVAL,
        );
        check_err(10, |b, s| encode_set_link_up(b, s, 1), Errno::NOBUFS);
        check_err(32, |b, s| encode_set_mtu(b, s, 1, 1500), Errno::NOBUFS);
        check_err(
            BUF_LEN,
            |b, s| Request::new(b, 1, 1, s)?.attr(1, &[0; 70000]).map(|_| 0),
            Errno::NOBUFS,
        );
    }

    /// An `NLMSG_ERROR` message for `seq` carrying `code`, followed by the echoed request header.
    fn error_msg(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&1234u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn replies() {
        #[track_caller]
        fn check(reply: &[u8], expect: Option<io::Result<()>>) {
            assert_eq!(scan_reply(reply, 7), expect);
        }
        check(&error_msg(7, 0), Some(Ok(())));
        check(&error_msg(7, -1), Some(Err(Errno::PERM)));
        check(&error_msg(7, -17), Some(Err(Errno::EXIST)));
        check(&error_msg(7, 5), Some(Err(Errno::BADMSG)));
        check(&error_msg(7, i32::MIN), Some(Err(Errno::BADMSG)));
        // Someone else's sequence number: keep waiting.
        check(&error_msg(6, 0), None);
        // Our ACK after another message in the same datagram.
        check(&[error_msg(6, -1), error_msg(7, 0)].concat(), Some(Ok(())));
        // A non-error message with our sequence number (a dump part) is not an ACK.
        let mut other = error_msg(7, 0);
        other[4] = 16;
        check(&other, None);
        // Truncated or nonsensical lengths end the scan without panicking.
        check(&error_msg(7, 0)[..20], None);
        check(&[], None);
        check(&[0; 16], None);
        let mut short = error_msg(7, 0);
        short[..4].copy_from_slice(&16u32.to_ne_bytes());
        check(&short[..16], Some(Err(Errno::BADMSG)));
    }
}
