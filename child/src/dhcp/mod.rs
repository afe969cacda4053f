//! A minimal DHCPv4 client for `--net=lxc-user-nic`: the interface lxc-user-nic put into our
//! namespace has no address until the bridge's DHCP server (lxc-net's dnsmasq) gives one.
//!
//! It speaks only what that needs: DISCOVER, OFFER, REQUEST, ACK (and NAK) over a UDP socket on
//! port 68 bound to the interface (`SO_BINDTODEVICE`) with `SO_BROADCAST`, sending to
//! 255.255.255.255:67 with the BROADCAST flag so that the server answers by broadcast too, which a
//! socket on an interface without an address still receives. Packets are built in and read from
//! fixed buffers; nothing is allocated per packet. Replies are outside input: [`wire::parse_reply`]
//! checks every length and turns anything malformed into a [`wire::ParseError`], never a panic.
//!
//! Like upstream (which uses `github.com/insomniacslk/dhcp`), a renewal is a full exchange
//! again at 0.9 × the lease time; [`Renewer`] runs it from the child's event loop without
//! blocking signal forwarding.

/// The namespace side of `--net=lxc-user-nic`, in the calling thread's network namespace:
/// brings `ifname` up with `mtu`, obtains a lease by DHCP, then adds the address and the default
/// route, as upstream's `ip link set up`, DHCP exchange and `ip` configuration do.
///
/// # Errors
/// The first failing step, as one line.
pub fn configure(ifname: &str, mtu: u32) -> Result<(Lease, Client), String> {
    use sys::mount::Error;
    let mut nl = sys::netlink::Netlink::open()
        .map_err(Error::sys("open a netlink socket for", ifname))
        .map_err(|e| e.to_string())?;
    let index = nl
        .link_index(ifname)
        .map_err(Error::sys("look up interface", ifname))
        .map_err(|e| e.to_string())?;
    nl.set_link_up(index)
        .map_err(Error::sys("bring up", ifname))
        .map_err(|e| e.to_string())?;
    nl.set_mtu(index, mtu)
        .map_err(Error::sys("set mtu of", ifname))
        .map_err(|e| e.to_string())?;
    let mut client = Client::open(ifname)?;
    let lease = client.exchange(None)?;
    nl.add_addr_v4(index, lease.addr, lease.prefix)
        .map_err(Error::sys("add address to", ifname))
        .map_err(|e| e.to_string())?;
    nl.add_default_route_v4(index, lease.gateway)
        .map_err(Error::sys("add default route on", ifname))
        .map_err(|e| e.to_string())?;
    Ok((lease, client))
}

/// The [`proto::Msg::NetLease`] body for `lease` on the interface of `net`.
pub fn lease_frame(net: &proto::NetConfig, lease: &Lease) -> proto::NetConfig {
    proto::NetConfig {
        addr: lease.addr,
        prefix: lease.prefix,
        gateway: lease.gateway,
        dns: lease.dns,
        dns6: [0; 16],
        ..*net
    }
}

/// The fuzz target's body: any bytes into [`parse_reply`]; whatever parses must be consistent.
#[cfg(any(test, fuzzing))]
pub fn fuzz_reply(data: &[u8]) {
    if let Ok(reply) = parse_reply(data) {
        assert!(data.len() >= OPTIONS_AT);
        assert_eq!(data[0], 2);
        assert_eq!(reply.xid.to_be_bytes(), data[4..8]);
        let _ = Lease::of(&reply);
    }
}

mod client;
mod wire;

pub use client::{Client, Renewer};
pub use wire::Lease;
#[cfg(any(test, fuzzing))]
use wire::{OPTIONS_AT, parse_reply};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire::{BOOTP_LEN, COOKIE, kind};

    pub(super) const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    /// A reply as lxc-net's dnsmasq sends it, with `options` after the cookie.
    pub(super) fn reply(kind_code: u8, options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; OPTIONS_AT];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[10] = 0x80;
        b[16..20].copy_from_slice(&[10, 0, 3, 42]);
        b[20..24].copy_from_slice(&[10, 0, 3, 1]);
        b[28..34].copy_from_slice(&MAC);
        b[BOOTP_LEN..OPTIONS_AT].copy_from_slice(&COOKIE);
        b.extend_from_slice(&[53, 1, kind_code]);
        b.extend_from_slice(options);
        b
    }

    pub(super) fn full_options() -> Vec<u8> {
        let mut o = vec![
            54, 4, 10, 0, 3, 1, // server id
            51, 4, 0, 0, 14, 16, // lease 3600
            0, 0, // pads
            1, 4, 255, 255, 255, 0, // mask
            3, 4, 10, 0, 3, 1, // router
            6, 8, 10, 0, 3, 1, 8, 8, 8, 8, // two DNS servers
            12, 3, b'b', b'o', b'x', // hostname, ignored
        ];
        o.push(255);
        o
    }

    #[test]
    fn fuzz_body_takes_anything() {
        fuzz_reply(&[]);
        fuzz_reply(&reply(kind::ACK, &full_options()));
        fuzz_reply(&reply(kind::ACK, &[6, 255]));
    }
}
