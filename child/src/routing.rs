//! The policy routing of `--source-ip-transparent` inside the namespace: the mark and table
//! that let connections come from a client's address, and the per-flow routes that bring UDP
//! replies back to the parent's socket. Built on `sys::netlink`.

use rustix::io::{self, Errno};
use std::net::IpAddr;

use sys::netlink::{
    Netlink, encode_add_fwmark_rule, encode_add_local_default_route, encode_add_udp_sport_rule,
    encode_local_host_route,
};

const AF_INET: u8 = linux_raw_sys::net::AF_INET as u8;
const AF_INET6: u8 = linux_raw_sys::net::AF_INET6 as u8;

/// The mark and routing table of connections made from a client's address
/// (`--source-ip-transparent`); upstream uses 100 for both.
pub(crate) const TRANSPARENT_MARK: u32 = 100;

/// Lets sockets marked [`TRANSPARENT_MARK`] connect from a foreign (the client's) address
/// and get their replies, in the current network namespace, for IPv4 and IPv6:
/// marked packets are routed by a table in which every address is local, and
/// `tcp_fwmark_accept` gives the server's accepted socket the mark of the connection's SYN,
/// so its replies are marked too. This replaces upstream's `ip rule`, `ip route` and `sysctl`;
/// it covers servers that run in this namespace, and [`crate::nftables`] (upstream's iptables
/// CONNMARK rules) covers the targets that NAT sends onward.
///
/// Returns, for IPv4 and for IPv6, `Ok` or the first step that failed as `<step>: <errno>`.
pub fn source_routing() -> [Result<(), String>; 2] {
    let fail = |what: &'static str| move |e: Errno| format!("{what}: {e}");
    let opened = Netlink::open()
        .map_err(fail("netlink"))
        .and_then(|nl| Ok((nl.link_index("lo").map_err(fail("lo"))?, nl)));
    let (lo, mut nl) = match opened {
        Ok(x) => x,
        Err(e) => return [Err(e.clone()), Err(e)],
    };
    // One switch for both families; the accepted socket inherits the SYN's mark.
    let accept_mark = std::fs::write("/proc/sys/net/ipv4/tcp_fwmark_accept", b"1")
        .map_err(|e| format!("tcp_fwmark_accept: {e}"));
    let table = TRANSPARENT_MARK as u8;
    let exists = |r: io::Result<()>| match r {
        Err(Errno::EXIST) => Ok(()),
        r => r,
    };
    [AF_INET, AF_INET6].map(|family| {
        accept_mark.clone()?;
        exists(nl.request(|buf, seq| encode_add_local_default_route(buf, seq, family, lo, table)))
            .map_err(fail("local route"))?;
        exists(nl.request(|buf, seq| {
            encode_add_fwmark_rule(buf, seq, family, TRANSPARENT_MARK, table, TRANSPARENT_MARK)
        }))
        .map_err(fail("fwmark rule"))
    })
}

/// The routing table, and the priority of its rules, that deliver UDP replies to the client
/// addresses of transparent flows (`--source-ip-transparent`).
pub(crate) const UDP_REPLY_TABLE: u8 = 101;

/// For UDP with `--source-ip-transparent`, in the current network namespace: what a server
/// sends from UDP port `port` to `client` is delivered here (`add`), to the parent's socket
/// bound to that client address, instead of leaving by the default route; or no longer is.
///
/// A rule per server port sends its UDP traffic to [`UDP_REPLY_TABLE`] (added once, the
/// first time the port is seen; `ruled` remembers them), where each client address with a
/// live flow has a `local` route. Traffic from that port to anyone else finds no route there
/// and goes on to the main table; traffic from other ports never looks.
///
/// # Errors
/// The errno of the netlink request that failed; deleting a route that is gone is not one.
pub fn udp_reply_route(
    add: bool,
    port: u16,
    client: IpAddr,
    ruled: &mut Vec<(bool, u16)>,
) -> io::Result<()> {
    let mut nl = Netlink::open()?;
    let lo = nl.link_index("lo")?;
    let family = if client.is_ipv4() { AF_INET } else { AF_INET6 };
    let table = UDP_REPLY_TABLE;
    if add && !ruled.contains(&(client.is_ipv4(), port)) {
        match nl.request(|buf, seq| {
            encode_add_udp_sport_rule(buf, seq, family, port, table, u32::from(table))
        }) {
            Ok(()) | Err(Errno::EXIST) => ruled.push((client.is_ipv4(), port)),
            Err(e) => return Err(e),
        }
    }
    match nl.request(|buf, seq| encode_local_host_route(buf, seq, add, client, lo, table)) {
        Err(Errno::EXIST) if add => Ok(()),
        Err(Errno::SRCH | Errno::NOENT) if !add => Ok(()),
        r => r,
    }
}
