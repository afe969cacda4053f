//! The user-mode network of `--net=gvisor-tap-vsock`, run inside the parent: the child made a
//! tap in the namespace and handed us its descriptor, and we are the other end of that wire.
//! We answer ARP and ICMP echo for the gateway (echo to other addresses goes out on
//! unprivileged ICMP sockets, [`icmp`]), carry UDP per flow and TCP per connection on
//! host sockets (layer-4 translation, as pasta does: the namespace's TCP ends here and a host
//! TCP connection carries the bytes on), and forward DNS sent to the gateway to the host's
//! nameservers, IPv4 and IPv6 (the next one when one does not answer or fails, [`dns`]). With `--ipv6` the same over IPv6 on `fd00::/64`: router advertisements
//! (the namespace configures itself by SLAAC), neighbor discovery and ICMPv6 echo for the
//! gateway. Published ports (`--port-driver=gvisor-tap-vsock`, [`Stack::publish`]) run the
//! other way: host sockets whose connections and datagrams we open into the namespace.
//!
//! Everything runs from the parent's one epoll loop: [`Stack::as_fd`] is an epoll set holding
//! the tap and every host socket, [`Stack::ready`] moves what can be moved and
//! [`Stack::timeout`] says when the next timer (a retransmission, a flow's expiry) is due.
//! Memory is bounded and allocated up front: two frame buffers, and fixed tables of TCP
//! connections and UDP flows. A host TCP socket's own receive queue holds what the namespace
//! has not acknowledged yet (peeked with `SO_PEEK_OFF`, dropped once acknowledged), so a
//! connection needs no buffer of its own.

pub(crate) mod dns;
pub(crate) mod flows;
pub(crate) mod icmp;
pub(crate) mod ports;
pub(crate) mod tcp;
pub(crate) mod udp;
pub(crate) mod wire;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;

use wire::{Addr, ETH_LEN, Frame, IP_LEN, IP6_LEN, mapped, unmapped};

/// The gateway's MAC address, as upstream's.
pub(crate) const GATEWAY_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd];
/// The MAC the child gives its tap.
pub(crate) const CHILD_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];
/// With `--ipv6`: the gateway's (and DNS server's) address on the namespace's ULA prefix
/// `fd00::/64`, where the namespace takes its address by SLAAC from our router advertisements.
pub(crate) const GATEWAY6: Addr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// The router's link-local address, the source of its advertisements and the next hop of the
/// namespace's IPv6 default route.
pub(crate) const ROUTER6_LL: Addr = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// All nodes on the link.
const ALL_NODES: Addr = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// `virtio_net_hdr.gso_type`: a TCP/IPv6 segment for the kernel to cut.
const VNET_GSO_TCPV6: u8 = 4;
/// Default MTU, as upstream's.
pub(crate) const DEFAULT_MTU: u32 = 65520;
/// The largest frame the tap can carry (MTU 65535 plus the Ethernet header).
const FRAME_MAX: usize = 65535 + ETH_LEN;
/// Length of the `virtio_net_hdr` before each frame of the child's tap (`IFF_VNET_HDR`).
pub(crate) const VNET_LEN: usize = 10;
/// `virtio_net_hdr.flags`: the transport checksum is left to the reader.
const VNET_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksums were checked (ours are computed).
const VNET_DATA_VALID: u8 = 2;
/// `virtio_net_hdr.gso_type`: a TCP/IPv4 segment for the kernel to cut.
const VNET_GSO_TCPV4: u8 = 1;
/// Frames read from the tap per wake-up before the host sockets get a turn.
const TAP_BATCH: usize = 64;

/// The network's addresses and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    /// The gateway (and DNS server) address, net+1.
    pub gateway: [u8; 4],
    /// The child's address, net+100.
    pub child: [u8; 4],
    /// The prefix length of the network.
    pub prefix: u8,
    /// The interface MTU.
    pub mtu: u32,
    /// Whether the gateway address reaches the host's 127.0.0.1 (no `--disable-host-loopback`).
    pub host_loopback: bool,
    /// Where DNS queries to the gateway go: the host's nameservers, IPv4 and IPv6 (UDP fails
    /// over from one to the next; TCP goes to the first that is not skipped).
    pub nameservers: dns::Servers,
    /// With `--ipv6`, the gateway's IPv6 address ([`GATEWAY6`]).
    pub gateway6: Option<Addr>,
}

impl Config {
    /// The network the child configured from `net`, with the host's nameservers from its
    /// `/etc/resolv.conf` for DNS.
    pub(crate) fn new(net: &proto::NetConfig, host_loopback: bool, ipv6: bool) -> Config {
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Config {
            gateway: net.gateway,
            child: net.addr,
            prefix: net.prefix,
            mtu: if net.mtu == 0 { DEFAULT_MTU } else { net.mtu },
            host_loopback,
            nameservers: dns::Servers::from_resolv_conf(&resolv, dns::sys_ifindex),
            gateway6: ipv6.then_some(GATEWAY6),
        }
    }

    /// Whether `a` is one of the gateway's addresses.
    pub(crate) fn is_gateway(&self, a: &Addr) -> bool {
        *a == mapped(self.gateway) || self.gateway6.is_some_and(|g| *a == g || *a == ROUTER6_LL)
    }

    /// Where a connection or datagram from the namespace to `dst:port` goes on the host, or
    /// `None` when it must be refused.
    pub(crate) fn host_addr(&self, dst: Addr, port: u16) -> Option<SocketAddr> {
        // DNS to the gateway goes to the host's nameserver, of either family.
        if port == 53
            && self.is_gateway(&dst)
            && let Some(ns) = self.nameservers.first()
        {
            return Some(ns);
        }
        if let Some(d) = unmapped(&dst) {
            return self.host_addr4(d, port).map(SocketAddr::V4);
        }
        let gw = self.gateway6?;
        if self.is_gateway(&dst) {
            return self
                .host_loopback
                .then(|| SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0)));
        }
        let ip = Ipv6Addr::from(dst);
        // Loopback, unspecified, multicast, link-local and the namespace's own prefix never
        // leave.
        if ip.is_loopback()
            || ip.is_unspecified()
            || dst[0] == 0xff
            || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80)
            || dst[..8] == gw[..8]
        {
            return None;
        }
        Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
    }

    fn host_addr4(&self, dst: [u8; 4], port: u16) -> Option<SocketAddrV4> {
        if dst == self.gateway {
            return self
                .host_loopback
                .then(|| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        let broadcast = u32::from_be_bytes(self.child) | !mask;
        let d = u32::from_be_bytes(dst);
        // Loopback, "this network", multicast and broadcast never leave; nor does the child's
        // own address.
        if dst[0] == 127 || dst[0] == 0 || dst[0] >= 224 || d == broadcast || dst == self.child {
            return None;
        }
        Some(SocketAddrV4::new(Ipv4Addr::from(dst), port))
    }
}

/// What went wrong, counted (a hostile or broken namespace must not fill our log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Frames from the tap we did not understand or refused.
    pub dropped: u64,
    /// Frames we could not write to the tap (its queue was full).
    pub tap_full: u64,
    /// TCP connections refused because the table was full.
    pub tcp_over_limit: u64,
    /// UDP datagrams dropped because the flow table was full.
    pub udp_over_limit: u64,
}

/// Where frames we build go: the tap, one fixed buffer, the two MAC addresses.
pub(crate) struct Out<'a> {
    tap: BorrowedFd<'a>,
    /// The frame under construction; the transport part starts at [`Out::L4`].
    pub buf: &'a mut [u8],
    child_mac: [u8; 6],
    mtu: u32,
    vnet: bool,
    counters: &'a mut Counters,
}

impl Out<'_> {
    /// Offset of the transport header in [`Out::buf`]: after an IPv6 header; an IPv4 frame
    /// starts 20 bytes into the buffer.
    pub(crate) const L4: usize = ETH_LEN + IP6_LEN;

    /// Writes the Ethernet and IP headers in front of the `l4_len` transport bytes at
    /// [`Out::L4`]: IPv4 when both addresses are IPv4-mapped, IPv6 otherwise. Where the frame
    /// starts.
    fn headers(&mut self, src: &Addr, dst: &Addr, proto: u8, l4_len: usize) -> usize {
        if let (Some(s), Some(d)) = (unmapped(src), unmapped(dst)) {
            let start = Out::L4 - IP_LEN - ETH_LEN;
            let f = &mut self.buf[start..];
            wire::put_ethernet(f, self.child_mac, GATEWAY_MAC, wire::ETHERTYPE_IPV4);
            wire::put_ipv4(&mut f[ETH_LEN..], s, d, proto, l4_len);
            return start;
        }
        wire::put_ethernet(self.buf, self.child_mac, GATEWAY_MAC, wire::ETHERTYPE_IPV6);
        // Neighbor discovery wants hop limit 255.
        let hops = if proto == wire::PROTO_ICMP6 { 255 } else { 64 };
        wire::put_ipv6(&mut self.buf[ETH_LEN..], src, dst, proto, l4_len, hops);
        0
    }

    /// Wraps the `l4_len` transport bytes at [`Out::L4`] in IP and Ethernet headers and
    /// writes the frame to the tap; whether it went (the tap's queue may be full).
    pub(crate) fn send_ip(&mut self, src: Addr, dst: Addr, proto: u8, l4_len: usize) -> bool {
        let start = self.headers(&src, &dst, proto, l4_len);
        self.send_raw(start, Out::L4 + l4_len)
    }

    /// Whether the tap takes TCP segments larger than the MTU ([`Out::send_tcp_gso`]).
    pub(crate) fn gso(&self) -> bool {
        self.vnet
    }

    /// Sends the TCP segment of `l4_len` bytes at [`Out::L4`] (its checksum field holding
    /// only the pseudo header's sum) as one frame the kernel cuts into `mss`-sized segments
    /// and checksums (`VIRTIO_NET_HDR_GSO_TCPV4` or `_TCPV6`).
    pub(crate) fn send_tcp_gso(&mut self, src: Addr, dst: Addr, l4_len: usize, mss: usize) -> bool {
        let start = self.headers(&src, &dst, wire::PROTO_TCP, l4_len);
        let l4 = Out::L4 - start;
        let mut h = [0u8; VNET_LEN];
        h[0] = VNET_NEEDS_CSUM;
        h[1] = if start == 0 {
            VNET_GSO_TCPV6
        } else {
            VNET_GSO_TCPV4
        };
        h[2..4].copy_from_slice(&((l4 + wire::TCP_LEN) as u16).to_le_bytes());
        h[4..6].copy_from_slice(&(mss as u16).to_le_bytes());
        h[6..8].copy_from_slice(&(l4 as u16).to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        self.send_with(h, start, Out::L4 + l4_len)
    }

    fn send_raw(&mut self, start: usize, end: usize) -> bool {
        self.send_with([VNET_DATA_VALID, 0, 0, 0, 0, 0, 0, 0, 0, 0], start, end)
    }

    fn send_with(&mut self, header: [u8; VNET_LEN], start: usize, end: usize) -> bool {
        loop {
            let written = if self.vnet {
                let iov = [
                    std::io::IoSlice::new(&header),
                    std::io::IoSlice::new(&self.buf[start..end]),
                ];
                rustix::io::writev(self.tap, &iov)
            } else {
                rustix::io::write(self.tap, &self.buf[start..end])
            };
            match written {
                Ok(_) => return true,
                Err(Errno::INTR) => {}
                Err(_) => {
                    self.counters.tap_full += 1;
                    return false;
                }
            }
        }
    }
}

// Tags of the stack's epoll set: the kind in the top byte, then a generation and an index.
const TAG_TAP: u64 = 0;
const KIND_TCP: u64 = 1;
const KIND_UDP: u64 = 2;
/// A published port's host socket; the index is the port's id.
const KIND_PORT: u64 = 3;
const KIND_ICMP: u64 = 4;

/// The epoll tag of entry `index` (generation `generation`) of table `kind`.
fn tag(kind: u64, generation: u32, index: usize) -> u64 {
    kind << 56 | u64::from(generation & 0xff_ffff) << 32 | index as u64
}

/// The user-mode network.
pub(crate) struct Stack {
    cfg: Config,
    ep: OwnedFd,
    rx: Box<[u8]>,
    /// Where frames toward the namespace are built and sent.
    link: Link,
    tcp: tcp::Table,
    udp: udp::Table,
    icmp: icmp::Table,
    ports: Vec<ports::Published>,
}

/// The tap side of the stack: what every frame toward the namespace is built in and sent on,
/// apart from the tables, so that an [`Out`] can be had while the tables are borrowed too.
struct Link {
    tap: OwnedFd,
    tx: Box<[u8]>,
    child_mac: [u8; 6],
    mtu: u32,
    vnet: bool,
    counters: Counters,
}

impl Link {
    /// An [`Out`] for the next frames.
    fn out(&mut self) -> Out<'_> {
        Out {
            tap: self.tap.as_fd(),
            buf: &mut self.tx,
            child_mac: self.child_mac,
            mtu: self.mtu,
            vnet: self.vnet,
            counters: &mut self.counters,
        }
    }
}

impl Stack {
    /// The network for `cfg` on `tap` (non-blocking).
    ///
    /// # Errors
    /// `user-mode network: <why>` when the epoll set cannot be made.
    pub(crate) fn new(tap: OwnedFd, cfg: Config) -> Result<Stack, String> {
        Stack::with_vnet(tap, cfg, true)
    }

    /// [`Stack::new`] for a device whose frames carry no `virtio_net_hdr` (`vnet` false).
    ///
    /// # Errors
    /// As [`Stack::new`].
    pub(crate) fn with_vnet(tap: OwnedFd, cfg: Config, vnet: bool) -> Result<Stack, String> {
        let mut st = Stack::make(tap, cfg, vnet)?;
        // Without waiting for the namespace's router solicitation.
        st.advertise();
        Ok(st)
    }

    /// Sends a router advertisement to all nodes, with `--ipv6`.
    fn advertise(&mut self) {
        let Some(gw) = self.cfg.gateway6 else {
            return;
        };
        let mut out = self.link.out();
        let mut prefix = [0u8; 16];
        prefix[..8].copy_from_slice(&gw[..8]);
        let len = wire::put_router_advert(
            &mut out.buf[Out::L4..],
            GATEWAY_MAC,
            self.cfg.mtu,
            &prefix,
            &ROUTER6_LL,
            &ALL_NODES,
        );
        out.send_ip(ROUTER6_LL, ALL_NODES, wire::PROTO_ICMP6, len);
    }

    fn make(tap: OwnedFd, cfg: Config, vnet: bool) -> Result<Stack, String> {
        let fail = |e: Errno| format!("user-mode network: epoll: {e}");
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(fail)?;
        epoll::add(
            &ep,
            &tap,
            epoll::EventData::new_u64(TAG_TAP),
            epoll::EventFlags::IN,
        )
        .map_err(fail)?;
        Ok(Stack {
            link: Link {
                tap,
                // Room for an IPv6 header in front of the largest IPv4 frame.
                tx: vec![0u8; FRAME_MAX + IP6_LEN].into_boxed_slice(),
                child_mac: CHILD_MAC,
                mtu: cfg.mtu,
                // Frames on the tap carry a `virtio_net_hdr` ([`VNET_LEN`]).
                vnet,
                counters: Counters::default(),
            },
            cfg,
            ep,
            rx: vec![0u8; VNET_LEN + FRAME_MAX].into_boxed_slice(),
            tcp: tcp::Table::new(&cfg),
            udp: udp::Table::new(cfg.nameservers),
            icmp: icmp::Table::new(),
            ports: Vec::new(),
        })
    }

    /// The epoll set to wait on: readable when [`Stack::ready`] has work.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.ep.as_fd()
    }

    /// The network's addresses.
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// With `--ipv6`, the namespace's SLAAC address: our prefix and the EUI-64 of the MAC the
    /// tap was given.
    pub(crate) fn child6(&self) -> Option<Addr> {
        let mut a = self.cfg.gateway6?;
        let m = CHILD_MAC;
        a[8..].copy_from_slice(&[m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
        Some(a)
    }

    /// Forwards connections (`udp` false; `sock` listens) or datagrams (`udp`; `sock` is
    /// bound) arriving on host socket `sock` to `child` in the namespace, as port `id`.
    ///
    /// # Errors
    /// `port driver: <errno>` when the socket cannot be watched.
    pub(crate) fn publish(
        &mut self,
        id: u32,
        sock: OwnedFd,
        udp: bool,
        child: (Addr, u16),
    ) -> Result<(), String> {
        let tagged = tag(KIND_PORT, 0, id as usize);
        epoll::add(
            &self.ep,
            &sock,
            epoll::EventData::new_u64(tagged),
            epoll::EventFlags::IN,
        )
        .map_err(|e| format!("port driver: {e}"))?;
        self.ports.push(ports::Published {
            id,
            sock,
            udp,
            child,
        });
        Ok(())
    }

    /// Stops forwarding port `id`: its socket and UDP flows close; TCP connections already
    /// open go on.
    pub(crate) fn unpublish(&mut self, id: u32) {
        if let Some(i) = self.ports.iter().position(|p| p.id == id) {
            let p = self.ports.remove(i);
            // The UDP flows hold duplicates of the socket: take it out of the set by hand.
            let _ = epoll::delete(&self.ep, &p.sock);
            self.udp.close_port(id);
        }
    }

    #[cfg(test)]
    /// What was dropped so far.
    pub(crate) fn counters(&self) -> Counters {
        self.link.counters
    }

    /// How long until a timer is due, if one is armed.
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        let due = [
            self.tcp.deadline(),
            self.udp.deadline(),
            self.icmp.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(due.saturating_duration_since(now))
    }

    /// Moves everything that can move now and runs the timers that are due.
    pub(crate) fn ready(&mut self, now: Instant) {
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 32];
        let n = epoll::wait(
            &self.ep,
            &mut events,
            Some(&rustix::event::Timespec::default()),
        )
        .unwrap_or_default();
        let mut tap_ready = false;
        for ev in &events[..n] {
            let t = ev.data.u64();
            let (kind, generation, index) = (t >> 56, (t >> 32) as u32 & 0xff_ffff, t as u32);
            let Stack {
                link,
                tcp,
                udp,
                icmp,
                ep,
                cfg,
                ports,
                ..
            } = self;
            let mut out = link.out();
            match kind {
                _ if t == TAG_TAP => tap_ready = true,
                KIND_TCP => {
                    tcp.socket_ready(index as usize, generation, ev.flags, &mut out, ep, now);
                    udp.dns_failed(tcp.take_dns_failures(), now);
                }
                KIND_UDP => udp.socket_ready(index as usize, generation, &mut out, cfg, now),
                KIND_ICMP => icmp.socket_ready(index as usize, generation, &mut out, cfg, now),
                KIND_PORT => {
                    if let Some(p) = ports.iter().find(|p| p.id == index) {
                        port_ready(p, &mut out, tcp, udp, cfg, ep, now);
                    }
                }
                _ => {}
            }
        }
        if tap_ready {
            self.read_tap(now);
        }
        let Stack {
            link,
            tcp,
            udp,
            icmp,
            ep,
            ..
        } = self;
        let mut out = link.out();
        tcp.timers(&mut out, ep, now);
        udp.expire(&mut out, ep, now);
        icmp.expire(ep, now);
    }

    /// Reads up to a batch of frames from the tap and handles each.
    fn read_tap(&mut self, now: Instant) {
        for _ in 0..TAP_BATCH {
            let n = match rustix::io::read(&self.link.tap, &mut self.rx[..]) {
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => break,
                Err(e) => {
                    // The device is gone (deleted inside): stop watching it, or its error
                    // would wake us forever.
                    let _ = epoll::delete(&self.ep, &self.link.tap);
                    crate::warn(&format!(
                        "user-mode network: reading the tap failed: {}; the namespace has no network from now on",
                        sys::errno::text(e)
                    ));
                    break;
                }
            };
            let (start, verify) = match (self.link.vnet, self.rx.first()) {
                (false, _) => (0, true),
                (true, Some(flags)) if n >= VNET_LEN => (VNET_LEN, flags & VNET_NEEDS_CSUM == 0),
                _ => continue,
            };
            self.frame(start, n, verify, now);
        }
        let Stack { link, tcp, .. } = self;
        tcp.flush_acks(&mut link.out(), now);
    }

    /// Handles the frame at `start..end` of the receive buffer; `verify` false when the
    /// transport checksum was left to us.
    fn frame(&mut self, start: usize, end: usize, verify: bool, now: Instant) {
        let Stack {
            link,
            cfg,
            ep,
            rx,
            tcp,
            udp,
            icmp,
            ..
        } = self;
        let frame = Frame::parse_with(&rx[start..end], verify);
        // The child's MAC is the one we set, but a namespace may change it: follow it.
        if let Frame::Echo(eth, ip, _)
        | Frame::Udp(eth, ip, _)
        | Frame::Tcp(eth, ip, _)
        | Frame::Icmp6(eth, ip, _) = &frame
            && (ip.src == mapped(cfg.child) || cfg.gateway6.is_some_and(|g| ip.src[..8] == g[..8]))
        {
            link.child_mac = eth.src;
        }
        let mut out = link.out();
        match frame {
            Frame::Arp(_, arp) if arp.op == 1 && arp.tpa == cfg.gateway => {
                let len = wire::put_arp_reply(out.buf, GATEWAY_MAC, cfg.gateway, arp.sha, arp.spa);
                out.send_raw(0, len);
            }
            Frame::Echo(_, ip, echo) if ip.dst == mapped(cfg.gateway) => {
                let len = wire::put_echo_reply(&mut out.buf[Out::L4..], &echo);
                out.send_ip(ip.dst, ip.src, wire::PROTO_ICMP, len);
            }
            Frame::Echo(_, ip, echo) => {
                icmp.from_child(ip.src, ip.dst, echo.message, &mut out, cfg, ep, now);
            }
            Frame::Icmp6(_, ip, m) if cfg.gateway6.is_some() => {
                let at = Out::L4;
                match m.kind {
                    // Neighbor solicitation for one of the gateway's addresses (not duplicate
                    // address detection, which comes from ::).
                    135 if m.ns_target().is_some_and(|t| cfg.is_gateway(&t))
                        && ip.src != [0; 16] =>
                    {
                        let target = m.ns_target().unwrap_or_default();
                        let len = wire::put_neighbor_advert(
                            &mut out.buf[at..],
                            &target,
                            GATEWAY_MAC,
                            &target,
                            &ip.src,
                        );
                        out.send_ip(target, ip.src, wire::PROTO_ICMP6, len);
                    }
                    // Router solicitation.
                    133 => {
                        let _ = out;
                        self.advertise();
                    }
                    128 if cfg.is_gateway(&ip.dst) => {
                        let len = wire::put_echo6_reply(&mut out.buf[at..], &m, &ip.dst, &ip.src);
                        out.send_ip(ip.dst, ip.src, wire::PROTO_ICMP6, len);
                    }
                    128 if m.code == 0 => {
                        icmp.from_child(ip.src, ip.dst, m.message, &mut out, cfg, ep, now);
                    }
                    _ => {}
                }
            }
            Frame::Udp(eth, ip, u) => udp.from_child(eth.payload, &ip, &u, &mut out, cfg, ep, now),
            // DNS over TCP goes where a query over UDP would go now (not to a nameserver that
            // keeps failing).
            Frame::Tcp(_, ip, t) if t.dst_port == 53 && cfg.is_gateway(&ip.dst) => {
                let c = Config {
                    nameservers: udp.nameservers(now),
                    ..*cfg
                };
                tcp.from_child(&ip, &t, &mut out, &c, ep, now);
                // A nameserver that refused the connect counts as failed.
                udp.dns_failed(tcp.take_dns_failures(), now);
            }
            Frame::Tcp(_, ip, t) => tcp.from_child(&ip, &t, &mut out, cfg, ep, now),
            Frame::Arp(..) => {}
            _ => out.counters.dropped += 1,
        }
    }
}

/// Published port `p` has connections to accept or datagrams to carry.
fn port_ready(
    p: &ports::Published,
    out: &mut Out<'_>,
    tcp: &mut tcp::Table,
    udp: &mut udp::Table,
    cfg: &Config,
    ep: &OwnedFd,
    now: Instant,
) {
    use rustix::net::{RecvFlags, SocketFlags};
    if !p.udp {
        for _ in 0..ports::ACCEPT_BATCH {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            let Ok((sock, Some(peer))) = rustix::net::acceptfrom_with(&p.sock, flags) else {
                break;
            };
            let remote = ports::seen_from(cfg, peer, &p.child.0);
            tcp.open_inbound(sock, p.child, remote, out, ep, now);
        }
        return;
    }
    let max = (cfg.mtu as usize)
        .saturating_sub(wire::ip_len(&p.child.0) + wire::UDP_LEN)
        .min(65507);
    let at = Out::L4 + wire::UDP_LEN;
    for _ in 0..32 {
        let flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
        let (n, peer) = match rustix::net::recvfrom(&p.sock, &mut out.buf[at..at + max], flags) {
            Ok((n, total, Some(peer))) if total <= n => (n, peer),
            // Too big for the namespace's MTU, or from nowhere: dropped.
            Ok(_) | Err(Errno::INTR) => continue,
            Err(_) => break,
        };
        let remote = ports::seen_from(cfg, peer.clone(), &p.child.0);
        udp.inbound(p.id, &p.sock, peer, p.child, remote, n, out, now);
    }
}

/// Adds `fd` to the stack's epoll set.
fn watch(ep: &OwnedFd, fd: BorrowedFd<'_>, tag: u64, flags: epoll::EventFlags) -> bool {
    epoll::add(ep, fd, epoll::EventData::new_u64(tag), flags).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            gateway: [10, 0, 2, 1],
            child: [10, 0, 2, 100],
            prefix: 24,
            mtu: 65520,
            host_loopback: true,
            nameservers: dns::Servers::new(&[[192, 0, 2, 53]]),
            gateway6: None,
        }
    }

    #[test]
    fn where_traffic_goes() {
        let c = cfg();
        let at = |ip: [u8; 4], port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port));
        assert_eq!(
            c.host_addr(mapped([10, 0, 2, 1]), 8080),
            Some(at([127, 0, 0, 1], 8080))
        );
        assert_eq!(
            c.host_addr(mapped([10, 0, 2, 1]), 53),
            Some(at([192, 0, 2, 53], 53))
        );
        assert_eq!(
            c.host_addr(mapped([1, 1, 1, 1]), 443),
            Some(at([1, 1, 1, 1], 443))
        );
        assert_eq!(
            c.host_addr(mapped([169, 254, 169, 254]), 80),
            Some(at([169, 254, 169, 254], 80))
        );
        for refused in [
            [127, 0, 0, 1],
            [0, 0, 0, 0],
            [224, 0, 0, 1],
            [255, 255, 255, 255],
            [10, 0, 2, 255],
            [10, 0, 2, 100],
        ] {
            assert_eq!(c.host_addr(mapped(refused), 80), None, "{refused:?}");
        }
        let closed = Config {
            host_loopback: false,
            ..c
        };
        assert_eq!(closed.host_addr(mapped([10, 0, 2, 1]), 8080), None);
        // DNS is the host's resolver, loopback or not.
        assert_eq!(
            closed.host_addr(mapped([10, 0, 2, 1]), 53),
            Some(at([192, 0, 2, 53], 53))
        );
        let no_dns = Config {
            nameservers: dns::Servers::default(),
            host_loopback: false,
            ..c
        };
        assert_eq!(no_dns.host_addr(mapped([10, 0, 2, 1]), 53), None);
        // Another cidr moves the gateway with it.
        let other = Config {
            gateway: [192, 168, 7, 1],
            child: [192, 168, 7, 100],
            host_loopback: false,
            ..c
        };
        assert_eq!(other.host_addr(mapped([192, 168, 7, 1]), 80), None);
        assert_eq!(
            other.host_addr(mapped([10, 0, 2, 1]), 80),
            Some(at([10, 0, 2, 1], 80))
        );
        // IPv6: nothing without --ipv6; with it the gateway is the host's ::1 (DNS its
        // nameserver), the world is itself, the link and the prefix stay inside.
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets();
        let at6 = |s: &str, port| SocketAddr::V6(SocketAddrV6::new(s.parse().unwrap(), port, 0, 0));
        assert_eq!(c.host_addr(v6("2001:db8::1"), 80), None);
        let c6 = Config {
            gateway6: Some(GATEWAY6),
            ..c
        };
        assert_eq!(c6.host_addr(GATEWAY6, 80), Some(at6("::1", 80)));
        assert_eq!(c6.host_addr(ROUTER6_LL, 80), Some(at6("::1", 80)));
        assert_eq!(c6.host_addr(GATEWAY6, 53), Some(at([192, 0, 2, 53], 53)));
        assert_eq!(
            c6.host_addr(v6("2001:db8::1"), 443),
            Some(at6("2001:db8::1", 443))
        );
        for refused in ["::1", "::", "ff02::1", "fe80::1", "fd00::9"] {
            assert_eq!(c6.host_addr(v6(refused), 80), None, "{refused}");
        }
        let closed6 = Config {
            host_loopback: false,
            ..c6
        };
        assert_eq!(closed6.host_addr(GATEWAY6, 80), None);
        assert_eq!(
            closed6.host_addr(GATEWAY6, 53),
            Some(at([192, 0, 2, 53], 53))
        );
        // An IPv6 nameserver takes DNS to the gateway of either family.
        let ns6 = Config {
            nameservers: dns::Servers::new(&[Ipv6Addr::LOCALHOST]),
            ..closed6
        };
        assert_eq!(ns6.host_addr(GATEWAY6, 53), Some(at6("::1", 53)));
        assert_eq!(
            ns6.host_addr(mapped([10, 0, 2, 1]), 53),
            Some(at6("::1", 53))
        );
        assert_eq!(ns6.host_addr(mapped([10, 0, 2, 1]), 54), None);
    }

    #[test]
    fn tags_round_trip() {
        let t = tag(KIND_TCP, 0x0123_4567, 511);
        assert_eq!(t >> 56, KIND_TCP);
        assert_eq!((t >> 32) as u32 & 0xff_ffff, 0x23_4567);
        assert_eq!(t as u32, 511);
        assert_ne!(tag(KIND_UDP, 0, 0), TAG_TAP);
    }

    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use std::io::{Read, Write};
    use wire::{TcpOut, flags};

    const CHILD4: [u8; 4] = [10, 0, 2, 100];
    const GW4: [u8; 4] = [10, 0, 2, 1];
    const CHILD: Addr = mapped(CHILD4);
    const GW: Addr = mapped(GW4);
    /// Where the transport header of an IPv4 frame starts.
    const L4: usize = ETH_LEN + IP_LEN;

    /// A stack on one end of a datagram socketpair standing in for the tap; the other end is
    /// the namespace.
    fn stack(host_loopback: bool) -> (Stack, OwnedFd) {
        stack_with(Config {
            host_loopback,
            nameservers: dns::Servers::default(),
            ..cfg()
        })
    }

    /// [`stack`] with the configuration `c`.
    fn stack_with(c: Config) -> (Stack, OwnedFd) {
        let (tap, peer) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        (Stack::with_vnet(tap, c, false).unwrap(), peer)
    }

    /// Runs the stack until `want` frames came out of the tap (or two seconds passed).
    fn frames(st: &mut Stack, peer: &OwnedFd, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut first = true;
        while first || got.len() < want && Instant::now() < deadline {
            first = false;
            st.ready(Instant::now());
            let mut buf = vec![0u8; FRAME_MAX];
            while let Ok(n) = rustix::io::read(peer, &mut buf) {
                got.push(buf[..n].to_vec());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

    /// A TCP segment from the child to the gateway's `port`.
    fn segment(port: u16, seq: u32, ack: u32, fl: u8, data: &[u8], wscale: bool) -> Vec<u8> {
        let seg = TcpOut {
            src: (CHILD, 40000),
            dst: (GW, port),
            seq,
            ack,
            flags: fl,
            window: 65535,
            syn_opts: (fl & flags::SYN != 0).then_some((1460, wscale.then_some(7))),
        };
        tcp_frame(&seg, data)
    }

    /// The IPv4 frame from the child to the gateway carrying `seg` with `data`.
    fn tcp_frame(seg: &TcpOut, data: &[u8]) -> Vec<u8> {
        let hl = wire::tcp_header_len(seg);
        let mut f = vec![0u8; L4 + hl + data.len()];
        f[L4 + hl..].copy_from_slice(data);
        let n = wire::put_tcp(&mut f[L4..], seg, data.len());
        wire::put_ethernet(&mut f, GATEWAY_MAC, CHILD_MAC, wire::ETHERTYPE_IPV4);
        wire::put_ipv4(&mut f[ETH_LEN..], CHILD4, GW4, wire::PROTO_TCP, n);
        f
    }

    fn tcp_of(f: &[u8]) -> (u32, u32, u8, Vec<u8>, u16) {
        let Frame::Tcp(eth, ip, t) = Frame::parse(f) else {
            panic!("not a TCP frame: {f:?}")
        };
        assert_eq!(
            (eth.src, eth.dst, ip.src, ip.dst),
            (GATEWAY_MAC, CHILD_MAC, GW, CHILD)
        );
        (t.seq, t.ack, t.flags, t.payload.to_vec(), t.window)
    }

    #[test]
    fn ping_beyond_the_gateway_goes_through_an_icmp_socket() {
        // The host's own address on its default route (connecting a UDP socket sends nothing).
        let Ok(probe) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            return;
        };
        let Ok(std::net::IpAddr::V4(host)) = probe
            .connect("192.0.2.1:9")
            .and_then(|()| probe.local_addr())
            .map(|a| a.ip())
        else {
            return; // No IPv4 route on this host.
        };
        let host = host.octets();
        let (mut st, peer) = stack(true);
        let mut icmp = [8u8, 0, 0, 0, 0xab, 0xcd, 0, 5, b'p', b'i', b'n', b'g'];
        let c = wire::checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![0u8; L4 + icmp.len()];
        wire::put_ethernet(&mut p, GATEWAY_MAC, CHILD_MAC, wire::ETHERTYPE_IPV4);
        wire::put_ipv4(
            &mut p[ETH_LEN..],
            CHILD4,
            host,
            wire::PROTO_ICMP,
            icmp.len(),
        );
        p[L4..].copy_from_slice(&icmp);
        rustix::io::write(&peer, &p).unwrap();
        let got = frames(&mut st, &peer, 1);
        if st.icmp.denied() {
            // net.ipv4.ping_group_range leaves us out: dropped, as before.
            assert!(got.is_empty(), "{got:?}");
            assert_eq!(st.icmp.len(), 0);
            return;
        }
        assert_eq!(got.len(), 1, "{got:?}");
        let g = &got[0];
        assert_eq!(&g[ETH_LEN + 12..ETH_LEN + 20], &[host, CHILD4].concat()[..]);
        assert_eq!(g[ETH_LEN + 9], wire::PROTO_ICMP);
        let m = &g[L4..];
        // An echo reply with the namespace's id and sequence (not the socket's), our data,
        // and a right checksum.
        assert_eq!(&m[..2], &[0, 0]);
        assert_eq!(&m[4..], &icmp[4..]);
        assert_eq!(wire::checksum(m, 0), 0);
        assert_eq!(st.icmp.len(), 1);
        // The same id again uses the same flow; idle flows are closed.
        rustix::io::write(&peer, &p).unwrap();
        assert_eq!(frames(&mut st, &peer, 1).len(), 1);
        assert_eq!(st.icmp.len(), 1);
        st.ready(Instant::now() + icmp::IDLE + Duration::from_secs(2));
        assert_eq!(st.icmp.len(), 0);
        // The namespace's own address and loopback never leave.
        for dst in [[127, 0, 0, 1], CHILD4] {
            wire::put_ipv4(&mut p[ETH_LEN..], CHILD4, dst, wire::PROTO_ICMP, icmp.len());
            rustix::io::write(&peer, &p).unwrap();
            assert!(frames(&mut st, &peer, 1).is_empty());
        }
        assert_eq!(st.icmp.len(), 0);
    }

    #[test]
    fn arp_and_ping_of_the_gateway() {
        let (mut st, peer) = stack(true);
        let mut f = vec![0u8; 42];
        wire::put_ethernet(&mut f, [0xff; 6], CHILD_MAC, wire::ETHERTYPE_ARP);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&CHILD_MAC);
        f[28..32].copy_from_slice(&CHILD4);
        f[38..42].copy_from_slice(&GW4);
        rustix::io::write(&peer, &f).unwrap();
        // An ARP request for another address gets no answer.
        f[41] = 7;
        rustix::io::write(&peer, &f).unwrap();
        let mut icmp = [8u8, 0, 0, 0, 1, 2, 0, 1, b'x', b'y'];
        let c = wire::checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![0u8; L4 + icmp.len()];
        wire::put_ethernet(&mut p, GATEWAY_MAC, CHILD_MAC, wire::ETHERTYPE_IPV4);
        wire::put_ipv4(&mut p[ETH_LEN..], CHILD4, GW4, wire::PROTO_ICMP, icmp.len());
        p[L4..].copy_from_slice(&icmp);
        rustix::io::write(&peer, &p).unwrap();
        // Garbage is counted and dropped.
        rustix::io::write(&peer, &[0u8; 20]).unwrap();
        let got = frames(&mut st, &peer, 2);
        assert_eq!(got.len(), 2, "{got:?}");
        let Frame::Arp(_, arp) = Frame::parse(&got[0]) else {
            panic!("no ARP reply")
        };
        assert_eq!(
            (arp.op, arp.sha, arp.spa, arp.tpa),
            (2, GATEWAY_MAC, GW4, CHILD4)
        );
        let Frame::Other = Frame::parse(&got[1]) else {
            panic!("an echo reply is not an echo request")
        };
        assert_eq!(&got[1][L4..L4 + 1], &[0]);
        assert_eq!(&got[1][L4 + 4..], &icmp[4..]);
        assert_eq!(st.counters().dropped, 1);
    }

    #[test]
    fn tcp_to_a_closed_port_or_without_host_loopback_is_reset() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (mut st, peer) = stack(true);
        rustix::io::write(&peer, &segment(port, 1000, 0, flags::SYN, &[], false)).unwrap();
        let got = frames(&mut st, &peer, 1);
        let (_, ack, fl, _, _) = tcp_of(&got[0]);
        assert_eq!((ack, fl), (1001, flags::RST | flags::ACK));

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (mut st, peer) = stack(false);
        rustix::io::write(&peer, &segment(port, 5, 0, flags::SYN, &[], false)).unwrap();
        let got = frames(&mut st, &peer, 1);
        assert_eq!(tcp_of(&got[0]).2, flags::RST | flags::ACK);
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_err(), "nothing reached the host");
    }

    #[test]
    fn tcp_handshake_data_both_ways_and_close() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (mut st, peer) = stack(true);
        rustix::io::write(&peer, &segment(port, 1000, 0, flags::SYN, &[], true)).unwrap();
        let got = frames(&mut st, &peer, 1);
        let (mut host, _) = l.accept().unwrap();
        let (iss, ack, fl, _, win) = tcp_of(&got[0]);
        assert_eq!((ack, fl), (1001, flags::SYN | flags::ACK));
        assert!(win > 0);
        // Options: MSS and our window scale.
        let Frame::Tcp(_, _, t) = Frame::parse(&got[0]) else {
            unreachable!()
        };
        assert_eq!((t.mss, t.wscale), (Some(65480), Some(7)));
        let us = iss.wrapping_add(1);
        rustix::io::write(&peer, &segment(port, 1001, us, flags::ACK, &[], true)).unwrap();
        // Namespace → host.
        rustix::io::write(
            &peer,
            &segment(port, 1001, us, flags::ACK | flags::PSH, b"hello", true),
        )
        .unwrap();
        let got = frames(&mut st, &peer, 1);
        let (_, ack, fl, _, _) = tcp_of(&got[0]);
        assert_eq!((ack, fl), (1006, flags::ACK));
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        // A retransmission of what we have is acknowledged again, not written twice.
        rustix::io::write(
            &peer,
            &segment(port, 1001, us, flags::ACK | flags::PSH, b"hello", true),
        )
        .unwrap();
        assert_eq!(tcp_of(&frames(&mut st, &peer, 1)[0]).1, 1006);
        // Host → namespace, then the host closes: data, then FIN.
        host.write_all(b"world").unwrap();
        host.shutdown(std::net::Shutdown::Write).unwrap();
        let got = frames(&mut st, &peer, 2);
        let (seq, ack, _, data, _) = tcp_of(&got[0]);
        assert_eq!((seq, ack, data.as_slice()), (us, 1006, &b"world"[..]));
        let (seq, _, fl, _, _) = tcp_of(&got[1]);
        assert_eq!((seq, fl), (us + 5, flags::FIN | flags::ACK));
        // Unacknowledged, it comes again after the timeout (go-back-N, data first).
        let got = frames(&mut st, &peer, 2);
        assert_eq!(tcp_of(&got[0]).3, b"world");
        // The namespace acknowledges both and closes its side: the host sees EOF, and the
        // connection is gone.
        rustix::io::write(
            &peer,
            &segment(port, 1006, us + 6, flags::ACK | flags::FIN, &[], true),
        )
        .unwrap();
        let got = frames(&mut st, &peer, 1);
        let (_, ack, fl, _, _) = tcp_of(&got[0]);
        assert_eq!((ack, fl), (1007, flags::ACK));
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(st.tcp.is_empty());
    }

    #[test]
    fn published_ports_open_connections_and_flows_into_the_namespace() {
        let (mut st, peer) = stack(true);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        st.publish(1, l.into(), false, (CHILD, 80)).unwrap();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let cport = client.local_addr().unwrap().port();
        // A loopback client appears as the gateway, with its own port.
        let got = frames(&mut st, &peer, 1);
        let Frame::Tcp(_, ip, t) = Frame::parse(&got[0]) else {
            panic!("no SYN: {got:?}")
        };
        assert_eq!((ip.src, ip.dst), (GW, CHILD));
        assert_eq!((t.src_port, t.dst_port, t.flags), (cport, 80, flags::SYN));
        assert_eq!(t.wscale, Some(7));
        // The namespace answers; the client's bytes follow.
        let seg = TcpOut {
            src: (CHILD, 80),
            dst: (GW, cport),
            seq: 5000,
            ack: t.seq.wrapping_add(1),
            flags: flags::SYN | flags::ACK,
            window: 65535,
            syn_opts: Some((1460, None)),
        };
        let f = tcp_frame(&seg, &[]);
        client.write_all(b"GET").unwrap();
        rustix::io::write(&peer, &f).unwrap();
        let got = frames(&mut st, &peer, 2);
        let (_, ack, fl, _, _) = tcp_of(&got[0]);
        assert_eq!((ack, fl), (5001, flags::ACK));
        assert_eq!(tcp_of(&got[1]).3, b"GET");
        // UDP: a datagram in, the reply out to the client through the published socket.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        u.set_nonblocking(true).unwrap();
        st.publish(2, u.into(), true, (CHILD, 53)).unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ucport = c.local_addr().unwrap().port();
        c.send_to(b"ask", ("127.0.0.1", uport)).unwrap();
        let got = frames(&mut st, &peer, 1);
        let Frame::Udp(_, ip, d) = Frame::parse(&got[0]) else {
            panic!("no datagram: {got:?}")
        };
        assert_eq!(
            (ip.src, ip.dst, d.src_port, d.dst_port),
            (GW, CHILD, ucport, 53)
        );
        assert_eq!(d.payload, b"ask");
        let mut r = vec![0u8; L4 + wire::UDP_LEN + 6];
        r[L4 + wire::UDP_LEN..].copy_from_slice(b"answer");
        let n = wire::put_udp(&mut r[L4..], (CHILD, 53), (GW, ucport), 6);
        wire::put_ethernet(&mut r, GATEWAY_MAC, CHILD_MAC, wire::ETHERTYPE_IPV4);
        wire::put_ipv4(&mut r[ETH_LEN..], CHILD4, GW4, wire::PROTO_UDP, n);
        rustix::io::write(&peer, &r).unwrap();
        frames(&mut st, &peer, 0);
        let mut buf = [0u8; 16];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&b"answer"[..], uport));
        // Removed: the flow closes and datagrams no longer come in.
        st.unpublish(2);
        assert!(st.udp.is_empty());
        c.send_to(b"again", ("127.0.0.1", uport)).ok();
        assert!(frames(&mut st, &peer, 0).is_empty());
    }

    #[test]
    fn a_udp_flood_either_way_leaves_the_other_way_flows() {
        // The namespace sends to 260 host ports: it gets its 256 flows, no more...
        let (mut st, peer) = stack(true);
        for chunk in (0..260u16).collect::<Vec<_>>().chunks(16) {
            for &i in chunk {
                rustix::io::write(&peer, &datagram(GW4, 20000 + i, b"out")).unwrap();
            }
            frames(&mut st, &peer, 0);
        }
        assert_eq!(st.udp.len(), udp::MAX_FLOWS);
        assert_eq!(st.counters().udp_over_limit, 260 - udp::MAX_FLOWS as u64);
        // ...and a new client of a published port still gets in.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        u.set_nonblocking(true).unwrap();
        st.publish(2, u.into(), true, (CHILD, 53)).unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"in", ("127.0.0.1", uport)).unwrap();
        let got = frames(&mut st, &peer, 1);
        assert!(
            got.iter()
                .any(|f| matches!(Frame::parse(f), Frame::Udp(_, ip, d) if ip.dst == CHILD && d.payload == b"in")),
            "the published port's client was dropped"
        );
        drop(st);
        // The other way round: 260 clients of a published port, and the namespace still
        // gets a flow out.
        let (mut st, peer) = stack(true);
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        u.set_nonblocking(true).unwrap();
        st.publish(2, u.into(), true, (CHILD, 53)).unwrap();
        let clients: Vec<_> = (0..260)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for chunk in clients.chunks(16) {
            for c in chunk {
                c.send_to(b"in", ("127.0.0.1", uport)).unwrap();
            }
            frames(&mut st, &peer, 0);
        }
        assert_eq!(st.udp.len(), udp::MAX_FLOWS);
        let host = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = host.local_addr().unwrap().port();
        rustix::io::write(&peer, &datagram(GW4, port, b"out")).unwrap();
        frames(&mut st, &peer, 0);
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            host.recv(&mut buf).ok(),
            Some(3),
            "the namespace's datagram was dropped"
        );
    }

    #[test]
    fn a_tcp_flood_from_the_namespace_leaves_published_ports_connections() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (mut st, peer) = stack(true);
        let syn = |sport: u16| {
            let seg = TcpOut {
                src: (CHILD, sport),
                dst: (GW, port),
                seq: 1,
                ack: 0,
                flags: flags::SYN,
                window: 65535,
                syn_opts: Some((1460, None)),
            };
            tcp_frame(&seg, &[])
        };
        // One more connection than the namespace may have: refused, counted.
        for chunk in (0..=tcp::MAX_CONNS as u16).collect::<Vec<_>>().chunks(16) {
            for &i in chunk {
                rustix::io::write(&peer, &syn(30000 + i)).unwrap();
            }
            frames(&mut st, &peer, 0);
        }
        assert_eq!(st.tcp.len(), tcp::MAX_CONNS);
        assert_eq!(st.counters().tcp_over_limit, 1);
        // A client of a published port still gets its SYN into the namespace.
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pport = p.local_addr().unwrap().port();
        p.set_nonblocking(true).unwrap();
        st.publish(1, p.into(), false, (CHILD, 80)).unwrap();
        let _client = std::net::TcpStream::connect(("127.0.0.1", pport)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut syn_in = false;
        while !syn_in && Instant::now() < deadline {
            syn_in = frames(&mut st, &peer, 0).iter().any(|f| {
                matches!(Frame::parse(f), Frame::Tcp(_, ip, t)
                    if ip.dst == CHILD && t.dst_port == 80 && t.flags == flags::SYN)
            });
        }
        assert!(syn_in, "the published port's client was refused");
        assert_eq!(st.tcp.len(), tcp::MAX_CONNS + 1);
    }

    #[test]
    fn a_time_wait_answering_a_published_ports_syn_is_reset_and_the_syn_sent_again() {
        let (mut st, peer) = stack(true);
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pport = p.local_addr().unwrap().port();
        p.set_nonblocking(true).unwrap();
        st.publish(1, p.into(), false, (CHILD, 80)).unwrap();
        let _client = std::net::TcpStream::connect(("127.0.0.1", pport)).unwrap();
        let is_syn = |f: &[u8]| match Frame::parse(f) {
            Frame::Tcp(_, ip, t)
                if ip.dst == CHILD && t.dst_port == 80 && t.flags == flags::SYN =>
            {
                Some((t.src_port, t.seq))
            }
            _ => None,
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut syn = None;
        while syn.is_none() && Instant::now() < deadline {
            syn = frames(&mut st, &peer, 0).iter().find_map(|f| is_syn(f));
        }
        let (sport, iss) = syn.expect("the SYN into the namespace");
        // The server's TIME_WAIT of an earlier connection from that address and port answers
        // with an acknowledgment of its own sequence space, not a SYN-ACK.
        let stale = TcpOut {
            src: (CHILD, 80),
            dst: (GW, sport),
            seq: 7000,
            ack: iss.wrapping_add(12345),
            flags: flags::ACK,
            window: 65535,
            syn_opts: None,
        };
        let f = tcp_frame(&stale, &[]);
        rustix::io::write(&peer, &f).unwrap();
        let got = frames(&mut st, &peer, 0);
        // A reset in the TIME_WAIT's own sequence space, then the SYN again at once.
        let rst = got.iter().position(|f| {
            matches!(Frame::parse(f), Frame::Tcp(_, ip, t)
                if ip.dst == CHILD && t.dst_port == 80 && t.src_port == sport
                    && t.flags == flags::RST && t.seq == iss.wrapping_add(12345))
        });
        let again = got.iter().position(|f| is_syn(f) == Some((sport, iss)));
        assert!(
            matches!((rst, again), (Some(r), Some(a)) if r < a),
            "{rst:?} {again:?}"
        );
    }

    /// The namespace's SLAAC address from [`CHILD_MAC`].
    const CHILD6: Addr = [
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0x58, 0x94, 0xef, 0xff, 0xfe, 0xe4, 0x0c, 0xee,
    ];

    /// An IPv6 frame from the namespace carrying `l4`; an ICMPv6 message gets its checksum.
    pub(crate) fn frame6(src: &Addr, dst: &Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + IP6_LEN + l4.len()];
        wire::put_ethernet(&mut f, GATEWAY_MAC, CHILD_MAC, wire::ETHERTYPE_IPV6);
        wire::put_ipv6(&mut f[ETH_LEN..], src, dst, proto, l4.len(), 255);
        let m = &mut f[ETH_LEN + IP6_LEN..];
        m.copy_from_slice(l4);
        if proto == wire::PROTO_ICMP6 {
            let c = wire::checksum(m, wire::pseudo_sum_any(src, dst, proto, m.len()));
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
        f
    }

    #[test]
    fn ipv6_router_neighbor_echo_and_tcp_to_the_hosts_loopback() {
        let (mut st, peer) = stack_with(Config {
            gateway6: Some(GATEWAY6),
            ..cfg()
        });
        // An advertisement at once: our prefix, from the router's link-local address.
        let got = frames(&mut st, &peer, 1);
        let Frame::Icmp6(_, ip, m) = Frame::parse(&got[0]) else {
            panic!("no advertisement: {got:?}")
        };
        assert_eq!(
            (ip.src, ip.dst, ip.ttl, m.kind),
            (ROUTER6_LL, ALL_NODES, 255, 134)
        );
        assert_eq!(&m.message[48..56], &GATEWAY6[..8]);
        // A router solicitation gets another.
        let rs = frame6(
            &CHILD6,
            &[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            58,
            &[133, 0, 0, 0, 0, 0, 0, 0],
        );
        rustix::io::write(&peer, &rs).unwrap();
        let got = frames(&mut st, &peer, 1);
        assert!(matches!(Frame::parse(&got[0]), Frame::Icmp6(_, _, m) if m.kind == 134));
        // Neighbor solicitation for the gateway: advertised with our MAC. For another
        // address, or for duplicate address detection: nothing.
        let ns = |target: &Addr| {
            let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(target);
            m.extend_from_slice(&[1, 1]);
            m.extend_from_slice(&CHILD_MAC);
            m
        };
        rustix::io::write(&peer, &frame6(&CHILD6, &GATEWAY6, 58, &ns(&GATEWAY6))).unwrap();
        rustix::io::write(&peer, &frame6(&CHILD6, &GATEWAY6, 58, &ns(&CHILD6))).unwrap();
        rustix::io::write(&peer, &frame6(&[0; 16], &GATEWAY6, 58, &ns(&GATEWAY6))).unwrap();
        let mut echo = vec![128, 0, 0, 0, 0, 7, 0, 1];
        echo.extend_from_slice(b"ping6");
        rustix::io::write(&peer, &frame6(&CHILD6, &GATEWAY6, 58, &echo)).unwrap();
        let got = frames(&mut st, &peer, 2);
        assert_eq!(got.len(), 2, "{got:?}");
        let Frame::Icmp6(_, ip, m) = Frame::parse(&got[0]) else {
            panic!("no advertisement")
        };
        assert_eq!((ip.src, ip.dst, m.kind), (GATEWAY6, CHILD6, 136));
        assert_eq!(
            (&m.message[8..24], &m.message[26..32]),
            (&GATEWAY6[..], &GATEWAY_MAC[..])
        );
        let Frame::Icmp6(_, ip, m) = Frame::parse(&got[1]) else {
            panic!("no echo reply")
        };
        assert_eq!((ip.src, ip.dst, m.kind), (GATEWAY6, CHILD6, 129));
        assert_eq!(&m.message[4..], &echo[4..]);
        // TCP to the gateway reaches the host's ::1.
        let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
            return; // No IPv6 loopback on this host.
        };
        let port = l.local_addr().unwrap().port();
        let seg = TcpOut {
            src: (CHILD6, 40000),
            dst: (GATEWAY6, port),
            seq: 9,
            ack: 0,
            flags: flags::SYN,
            window: 65535,
            syn_opts: Some((1440, Some(7))),
        };
        let mut t = vec![0u8; wire::tcp_header_len(&seg)];
        wire::put_tcp(&mut t, &seg, 0);
        rustix::io::write(&peer, &frame6(&CHILD6, &GATEWAY6, wire::PROTO_TCP, &t)).unwrap();
        let got = frames(&mut st, &peer, 1);
        l.accept().unwrap();
        let Frame::Tcp(_, ip, t) = Frame::parse(&got[0]) else {
            panic!("no SYN-ACK: {got:?}")
        };
        assert_eq!(
            (ip.src, ip.dst, t.flags, t.ack),
            (GATEWAY6, CHILD6, flags::SYN | flags::ACK, 10)
        );
        // The MSS leaves room for the IPv6 header.
        assert_eq!(t.mss, Some(65520 - 60));
    }

    #[test]
    fn tcp_reset_from_the_namespace_resets_the_host() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (mut st, peer) = stack(true);
        rustix::io::write(&peer, &segment(port, 1, 0, flags::SYN, &[], false)).unwrap();
        let (iss, ..) = tcp_of(&frames(&mut st, &peer, 1)[0]);
        let (mut host, _) = l.accept().unwrap();
        rustix::io::write(&peer, &segment(port, 2, iss + 1, flags::ACK, &[], false)).unwrap();
        rustix::io::write(&peer, &segment(port, 2, iss + 1, flags::RST, &[], false)).unwrap();
        frames(&mut st, &peer, 0);
        assert!(st.tcp.is_empty());
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1];
        let e = host.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }

    /// A UDP datagram from the child to `dst:port`.
    fn datagram(dst: [u8; 4], port: u16, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; L4 + wire::UDP_LEN + data.len()];
        f[L4 + wire::UDP_LEN..].copy_from_slice(data);
        let n = wire::put_udp(&mut f[L4..], (CHILD, 5353), (mapped(dst), port), data.len());
        wire::put_ethernet(&mut f, GATEWAY_MAC, CHILD_MAC, wire::ETHERTYPE_IPV4);
        wire::put_ipv4(&mut f[ETH_LEN..], CHILD4, dst, wire::PROTO_UDP, n);
        f
    }

    #[test]
    fn udp_flows_carry_replies_and_expire() {
        let host = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = host.local_addr().unwrap().port();
        let (mut st, peer) = stack(true);
        rustix::io::write(&peer, &datagram(GW4, port, b"hi")).unwrap();
        frames(&mut st, &peer, 0);
        let mut buf = [0u8; 16];
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, from) = host.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        host.send_to(b"back", from).unwrap();
        let got = frames(&mut st, &peer, 1);
        let Frame::Udp(_, ip, u) = Frame::parse(&got[0]) else {
            panic!("no reply")
        };
        assert_eq!((ip.src, ip.dst), (GW, CHILD));
        assert_eq!(
            (u.src_port, u.dst_port, u.payload),
            (port, 5353, &b"back"[..])
        );
        assert_eq!(st.udp.len(), 1);
        // Idle for a minute: closed.
        st.ready(Instant::now() + udp::IDLE + Duration::from_secs(2));
        assert!(st.udp.is_empty());
        // Without host loopback the gateway takes no datagrams.
        let (mut st, peer) = stack(false);
        rustix::io::write(&peer, &datagram(GW4, port, b"no")).unwrap();
        frames(&mut st, &peer, 0);
        assert!(st.udp.is_empty());
        host.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(host.recv_from(&mut buf).is_err());
    }

    #[test]
    fn a_closed_host_port_gives_the_namespace_port_unreachable() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let (mut st, peer) = stack(true);
        let sent = datagram(GW4, port, b"anyone?");
        rustix::io::write(&peer, &sent).unwrap();
        let got = frames(&mut st, &peer, 1);
        assert_eq!(got.len(), 1, "{got:?}");
        let f = &got[0];
        let ip = wire::Ipv4::parse(&f[ETH_LEN..]).unwrap();
        assert_eq!((ip.src, ip.dst, ip.proto), (GW4, CHILD4, wire::PROTO_ICMP));
        let m = ip.payload;
        assert_eq!((m[0], m[1]), (3, 3), "port unreachable");
        assert_eq!(wire::checksum(m, 0), 0);
        // The datagram's IP header and UDP header, as sent.
        assert_eq!(&m[8..], &sent[ETH_LEN..ETH_LEN + IP_LEN + wire::UDP_LEN]);
        // A flood gets a burst of six, then one a second.
        for _ in 0..20 {
            rustix::io::write(&peer, &sent).unwrap();
            st.ready(Instant::now());
            std::thread::sleep(Duration::from_millis(2));
        }
        let more = frames(&mut st, &peer, 100);
        assert!((4..=6).contains(&more.len()), "{}", more.len());
    }

    #[test]
    fn tcp_probes_a_shut_window_and_sends_once_it_opens() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (mut st, peer) = stack(true);
        rustix::io::write(&peer, &segment(port, 1, 0, flags::SYN, &[], false)).unwrap();
        let (iss, ..) = tcp_of(&frames(&mut st, &peer, 1)[0]);
        let (mut host, _) = l.accept().unwrap();
        let us = iss.wrapping_add(1);
        // The handshake's ACK shuts the window.
        let mut ack = segment(port, 2, us, flags::ACK, &[], false);
        let win = L4 + 14;
        ack[win..win + 4].copy_from_slice(&[0, 0, 0, 0]);
        let c = wire::checksum(
            &ack[L4..],
            wire::pseudo_sum(CHILD4, GW4, wire::PROTO_TCP, 20),
        );
        ack[L4 + 16..L4 + 18].copy_from_slice(&c.to_be_bytes());
        rustix::io::write(&peer, &ack).unwrap();
        host.write_all(b"held").unwrap();
        // No data, but a probe below the next sequence number after the timeout.
        let got = frames(&mut st, &peer, 1);
        let (seq, _, fl, data, _) = tcp_of(&got[0]);
        assert_eq!((seq, fl, data.len()), (us.wrapping_sub(1), flags::ACK, 0));
        // The window opens: the data goes.
        rustix::io::write(&peer, &segment(port, 2, us, flags::ACK, &[], false)).unwrap();
        let got = frames(&mut st, &peer, 1);
        let (seq, _, _, data, _) = tcp_of(&got[0]);
        assert_eq!((seq, data.as_slice()), (us, &b"held"[..]));
    }

    #[test]
    fn virtio_net_headers_on_the_tap() {
        let host = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = host.local_addr().unwrap().port();
        let (tap, peer) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let mut st = Stack::with_vnet(tap, cfg(), true).unwrap();
        // A datagram whose checksum the namespace left to us (NEEDS_CSUM): taken as it is.
        let mut f = vec![VNET_NEEDS_CSUM, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut d = datagram(GW4, port, b"offloaded");
        d[L4 + 6] ^= 0x55;
        f.extend_from_slice(&d);
        rustix::io::write(&peer, &f).unwrap();
        // The same bad checksum without the flag is dropped; a frame shorter than the header
        // too.
        let mut g = vec![0u8; VNET_LEN];
        g.extend_from_slice(&d);
        rustix::io::write(&peer, &g).unwrap();
        rustix::io::write(&peer, &[0u8; 4]).unwrap();
        frames(&mut st, &peer, 0);
        let mut buf = [0u8; 32];
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, from) = host.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"offloaded");
        host.send_to(b"back", from).unwrap();
        let got = frames(&mut st, &peer, 1);
        assert_eq!(
            &got[0][..VNET_LEN],
            &[VNET_DATA_VALID, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let Frame::Udp(_, _, u) = Frame::parse(&got[0][VNET_LEN..]) else {
            panic!("no reply")
        };
        assert_eq!(u.payload, b"back");
        host.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            host.recv_from(&mut buf).is_err(),
            "the unflagged bad one was dropped"
        );
    }
}
