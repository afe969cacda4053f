//! `--net=gvisor-tap-vsock`: no program to start. The addresses follow upstream's (child
//! net+100, gateway and DNS net+1, MTU 65520), the child makes the tap and hands it over, and
//! the parent's own user-mode network (`crate::usernet`) serves it from the supervision loop.
//! With `--ipv6` the namespace takes an address on `fd00::/64` from our router advertisements
//! (SLAAC), and the gateway and DNS server are `fd00::2`.

use std::os::fd::BorrowedFd;

use proto::NetMode;

use super::{Addrs, Driver, NetOptions, Prepared, StartError, Target, add_ipv4, ipv4_text};
use crate::usernet;

/// The driver's name, as `--net` and `GET /v1/info` spell it.
pub(crate) const NAME: &str = "gvisor-tap-vsock";

/// The in-process network driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Usernet {
    ifname: String,
    mtu: u32,
    addrs: Addrs,
    ipv6: bool,
}

impl Usernet {
    /// Plans the network for `opts`.
    ///
    /// # Errors
    /// A bad interface name, or a cidr whose addresses overflow.
    pub(crate) fn probe(opts: &NetOptions) -> Result<Usernet, String> {
        let (net, prefix) = opts.cidr.unwrap_or(super::DEFAULT_CIDR);
        let gateway = add_ipv4(net, 1)?;
        let addrs = Addrs {
            addr: add_ipv4(net, 100)?,
            prefix,
            gateway,
            dns: gateway,
        };
        Ok(Usernet {
            ifname: super::interface_name(opts.ifname.as_deref())?,
            mtu: if opts.mtu == 0 {
                usernet::DEFAULT_MTU
            } else {
                opts.mtu
            },
            addrs,
            ipv6: opts.ipv6,
        })
    }

    fn prepared(&self) -> Prepared {
        let dns6 = self.ipv6.then_some(usernet::GATEWAY6);
        let mut net = super::net_config(NetMode::Tap, &self.ifname, &self.addrs, self.mtu, dns6);
        net.mac = usernet::CHILD_MAC;
        let mut dns = vec![ipv4_text(self.addrs.dns)];
        if self.ipv6 {
            dns.push(std::net::Ipv6Addr::from(usernet::GATEWAY6).to_string());
        }
        Prepared {
            net,
            api_socket: None,
            dns,
        }
    }
}

impl Driver for Usernet {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&mut self, _: Target<'_>, _: &[BorrowedFd<'_>]) -> Result<Prepared, StartError> {
        Ok(self.prepared())
    }

    fn stop(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_upstream() {
        let d = Usernet::probe(&NetOptions::default()).unwrap();
        let p = d.prepared();
        let n = p.net;
        assert_eq!(n.mode, NetMode::Tap);
        assert_eq!(
            (n.ifname_str(), n.addr, n.prefix, n.gateway, n.dns, n.mtu),
            (
                "tap0",
                [10, 0, 2, 100],
                24,
                [10, 0, 2, 1],
                [10, 0, 2, 1],
                65520
            )
        );
        assert_eq!(n.mac, usernet::CHILD_MAC);
        assert_eq!(p.dns, ["10.0.2.1"]);

        let d = Usernet::probe(&NetOptions {
            cidr: Some(([192, 168, 40, 0], 22)),
            mtu: 1500,
            ifname: Some("eth3".into()),
            ..NetOptions::default()
        })
        .unwrap();
        let p = d.prepared();
        assert_eq!(
            (
                p.net.ifname_str(),
                p.net.addr,
                p.net.prefix,
                p.net.gateway,
                p.net.mtu
            ),
            ("eth3", [192, 168, 40, 100], 22, [192, 168, 40, 1], 1500)
        );
        assert_eq!(p.dns, ["192.168.40.1"]);
        assert!(
            Usernet::probe(&NetOptions {
                cidr: Some(([255, 255, 255, 200], 29)),
                ..NetOptions::default()
            })
            .is_err()
        );
    }
}
