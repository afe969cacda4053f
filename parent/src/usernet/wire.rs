//! The packet formats of the user-mode network, as pure code: Ethernet, ARP, IPv4, ICMP, UDP,
//! TCP and the DNS header. Parsing gives borrowed views of a received frame (every length
//! checked before a field is read); building writes headers into a caller's fixed buffer in
//! place. Nothing here allocates or does I/O.

/// Length of an Ethernet header without VLAN tag.
pub(crate) const ETH_LEN: usize = 14;
/// Length of an IPv4 header without options (we never send options).
pub(crate) const IP_LEN: usize = 20;
/// Length of a UDP header.
pub(crate) const UDP_LEN: usize = 8;
/// Length of a TCP header without options.
pub(crate) const TCP_LEN: usize = 20;
/// EtherType of IPv4.
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of the IPv6 header (no extension headers).
pub(crate) const IP6_LEN: usize = 40;
/// Next header number of ICMPv6.
pub(crate) const PROTO_ICMP6: u8 = 58;
/// IP protocol numbers.
pub(crate) const PROTO_ICMP: u8 = 1;
/// TCP.
pub(crate) const PROTO_TCP: u8 = 6;
/// UDP.
pub(crate) const PROTO_UDP: u8 = 17;

/// TCP flag bits.
pub(crate) mod flags {
    /// No more data from the sender.
    pub(crate) const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub(crate) const SYN: u8 = 0x02;
    /// Reset the connection.
    pub(crate) const RST: u8 = 0x04;
    /// Push.
    pub(crate) const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub(crate) const ACK: u8 = 0x10;
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ip4(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

fn ip6(b: &[u8], at: usize) -> Addr {
    let mut a = [0; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

/// An IPv4 or IPv6 address; IPv4 ones are held IPv4-mapped (`::ffff:a.b.c.d`).
pub(crate) type Addr = [u8; 16];

/// `a` IPv4-mapped.
pub(crate) const fn mapped(a: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// The IPv4 address `a` maps, if it is IPv4-mapped.
pub(crate) fn unmapped(a: &Addr) -> Option<[u8; 4]> {
    (a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]).then(|| ip4(a, 12))
}

/// The length of the IP header before a packet to or from `a`: IPv4's for an IPv4-mapped
/// address, IPv6's otherwise.
pub(crate) fn ip_len(a: &Addr) -> usize {
    if unmapped(a).is_some() {
        IP_LEN
    } else {
        IP6_LEN
    }
}

/// The pseudo header's partial sum for either family: IPv4's when both addresses are
/// IPv4-mapped, IPv6's otherwise.
pub(crate) fn pseudo_sum_any(src: &Addr, dst: &Addr, proto: u8, len: usize) -> u64 {
    match (unmapped(src), unmapped(dst)) {
        (Some(s), Some(d)) => pseudo_sum(s, d, proto, len),
        _ => sum(dst, sum(src, 0)) + u64::from(proto) + len as u64,
    }
}

/// An IP packet of either family, as the transports see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ip<'a> {
    /// Source address (IPv4-mapped for IPv4).
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Protocol (IPv4) or next header (IPv6).
    pub proto: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The transport payload.
    pub payload: &'a [u8],
}

impl<'a> From<Ipv4<'a>> for Ip<'a> {
    fn from(p: Ipv4<'a>) -> Ip<'a> {
        Ip {
            src: mapped(p.src),
            dst: mapped(p.dst),
            proto: p.proto,
            ttl: p.ttl,
            payload: p.payload,
        }
    }
}

impl<'a> Ip<'a> {
    /// Parses an IPv6 header without extension headers (a packet with one is not ours to
    /// handle: fragments, routing headers), cut to its payload length.
    pub(crate) fn parse_v6(p: &'a [u8]) -> Option<Ip<'a>> {
        if p.len() < IP6_LEN || p[0] >> 4 != 6 {
            return None;
        }
        let len = usize::from(be16(p, 4));
        if IP6_LEN + len > p.len() {
            return None;
        }
        Some(Ip {
            src: ip6(p, 8),
            dst: ip6(p, 24),
            proto: p[6],
            ttl: p[7],
            payload: &p[IP6_LEN..IP6_LEN + len],
        })
    }
}

/// Writes an IPv6 header at the start of `out` for a payload of `payload_len` bytes, with hop
/// limit `hops`.
pub(crate) fn put_ipv6(
    out: &mut [u8],
    src: &Addr,
    dst: &Addr,
    proto: u8,
    payload_len: usize,
    hops: u8,
) {
    let h = &mut out[..IP6_LEN];
    h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = proto;
    h[7] = hops;
    h[8..24].copy_from_slice(src);
    h[24..40].copy_from_slice(dst);
}

/// An ICMPv6 message with a correct checksum: its type, code, and the body after the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Icmp6<'a> {
    /// Type: 128 echo request, 133 router solicitation, 135 neighbor solicitation, ...
    pub kind: u8,
    /// Code.
    pub code: u8,
    /// The whole message.
    pub message: &'a [u8],
}

impl<'a> Icmp6<'a> {
    /// Parses the ICMPv6 message of `ip`, its checksum verified.
    pub(crate) fn parse(ip: &Ip<'a>) -> Option<Icmp6<'a>> {
        let p = ip.payload;
        if p.len() < 8 || checksum(p, pseudo_sum_any(&ip.src, &ip.dst, PROTO_ICMP6, p.len())) != 0 {
            return None;
        }
        Some(Icmp6 {
            kind: p[0],
            code: p[1],
            message: p,
        })
    }

    /// The target address of a neighbor solicitation.
    pub(crate) fn ns_target(&self) -> Option<Addr> {
        (self.kind == 135 && self.code == 0 && self.message.len() >= 24)
            .then(|| ip6(self.message, 8))
    }
}

/// Fills in the checksum of the ICMPv6 message `m` from `src` to `dst`.
fn icmp6_checksum(m: &mut [u8], src: &Addr, dst: &Addr) {
    m[2..4].copy_from_slice(&[0, 0]);
    let c = checksum(m, pseudo_sum_any(src, dst, PROTO_ICMP6, m.len()));
    m[2..4].copy_from_slice(&c.to_be_bytes());
}

/// Writes a neighbor advertisement for `target` (a router's, solicited, override) with our
/// link-layer address `mac` into `out`, from `src` to `dst`; returns its length.
pub(crate) fn put_neighbor_advert(
    out: &mut [u8],
    target: &Addr,
    mac: [u8; 6],
    src: &Addr,
    dst: &Addr,
) -> usize {
    let m = &mut out[..32];
    m[0..8].copy_from_slice(&[136, 0, 0, 0, 0xe0, 0, 0, 0]);
    m[8..24].copy_from_slice(target);
    m[24..26].copy_from_slice(&[2, 1]);
    m[26..32].copy_from_slice(&mac);
    icmp6_checksum(m, src, dst);
    32
}

/// Writes a router advertisement into `out`, from `src` (link-local) to `dst`: default router
/// for 30 minutes, our link-layer address `mac`, the link's `mtu`, and `prefix`/64 on-link and
/// for address autoconfiguration, with infinite lifetimes; returns its length.
pub(crate) fn put_router_advert(
    out: &mut [u8],
    mac: [u8; 6],
    mtu: u32,
    prefix: &Addr,
    src: &Addr,
    dst: &Addr,
) -> usize {
    let m = &mut out[..64];
    m[0..16].copy_from_slice(&[134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    m[16..18].copy_from_slice(&[1, 1]);
    m[18..24].copy_from_slice(&mac);
    m[24..28].copy_from_slice(&[5, 1, 0, 0]);
    m[28..32].copy_from_slice(&mtu.to_be_bytes());
    m[32..48].copy_from_slice(&[
        3, 4, 64, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    m[48..64].copy_from_slice(prefix);
    icmp6_checksum(m, src, dst);
    64
}

/// Turns the ICMPv6 echo request `req` into a reply in `out`, from `src` to `dst`; returns
/// the length.
pub(crate) fn put_echo6_reply(out: &mut [u8], req: &Icmp6<'_>, src: &Addr, dst: &Addr) -> usize {
    let n = req.message.len();
    out[..n].copy_from_slice(req.message);
    out[0] = 129;
    icmp6_checksum(&mut out[..n], src, dst);
    n
}

/// An Ethernet frame: addresses, type and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ethernet<'a> {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType.
    pub ethertype: u16,
    /// What follows the header.
    pub payload: &'a [u8],
}

impl<'a> Ethernet<'a> {
    /// Parses an untagged Ethernet frame.
    pub(crate) fn parse(f: &'a [u8]) -> Option<Ethernet<'a>> {
        if f.len() < ETH_LEN {
            return None;
        }
        let mut dst = [0; 6];
        let mut src = [0; 6];
        dst.copy_from_slice(&f[0..6]);
        src.copy_from_slice(&f[6..12]);
        Some(Ethernet {
            dst,
            src,
            ethertype: be16(f, 12),
            payload: &f[ETH_LEN..],
        })
    }
}

/// Writes an Ethernet header at the start of `out`.
pub(crate) fn put_ethernet(out: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// An ARP request or reply for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: [u8; 4],
    /// Target protocol address.
    pub tpa: [u8; 4],
}

/// Length of an ARP packet for IPv4 over Ethernet.
pub(crate) const ARP_LEN: usize = 28;

impl Arp {
    /// Parses an ARP packet, accepting only Ethernet/IPv4.
    pub(crate) fn parse(p: &[u8]) -> Option<Arp> {
        if p.len() < ARP_LEN || be16(p, 0) != 1 || be16(p, 2) != ETHERTYPE_IPV4 {
            return None;
        }
        if p[4] != 6 || p[5] != 4 {
            return None;
        }
        let mut sha = [0; 6];
        sha.copy_from_slice(&p[8..14]);
        Some(Arp {
            op: be16(p, 6),
            sha,
            spa: ip4(p, 14),
            tpa: ip4(p, 24),
        })
    }
}

/// Writes a whole Ethernet frame with an ARP reply saying `ip` is at `mac`, to `to_mac`/`to_ip`;
/// returns its length.
pub(crate) fn put_arp_reply(
    out: &mut [u8],
    mac: [u8; 6],
    ip: [u8; 4],
    to_mac: [u8; 6],
    to_ip: [u8; 4],
) -> usize {
    put_ethernet(out, to_mac, mac, ETHERTYPE_ARP);
    let p = &mut out[ETH_LEN..ETH_LEN + ARP_LEN];
    p[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip);
    p[18..24].copy_from_slice(&to_mac);
    p[24..28].copy_from_slice(&to_ip);
    ETH_LEN + ARP_LEN
}

/// An IPv4 packet: the fields we route on and the payload, cut to the total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4<'a> {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol number.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Whether this is a fragment (more fragments, or a non-zero offset).
    pub fragment: bool,
    /// The transport payload.
    pub payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// Parses an IPv4 header with its checksum verified; options are skipped.
    pub(crate) fn parse(p: &'a [u8]) -> Option<Ipv4<'a>> {
        if p.len() < IP_LEN || p[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(p[0] & 0xf) * 4;
        let total = usize::from(be16(p, 2));
        if ihl < IP_LEN || total < ihl || total > p.len() {
            return None;
        }
        if checksum(&p[..ihl], 0) != 0 {
            return None;
        }
        let frag = be16(p, 6);
        Some(Ipv4 {
            src: ip4(p, 12),
            dst: ip4(p, 16),
            proto: p[9],
            ttl: p[8],
            fragment: frag & 0x2000 != 0 || frag & 0x1fff != 0,
            payload: &p[ihl..total],
        })
    }
}

/// Writes an IPv4 header (no options, DF set, checksum filled in) at the start of `out`, for a
/// payload of `payload_len` bytes.
pub(crate) fn put_ipv4(out: &mut [u8], src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize) {
    let total = (IP_LEN + payload_len) as u16;
    let h = &mut out[..IP_LEN];
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]);
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let sum = checksum(h, 0);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// The ones'-complement sum of `data` added to `initial` (an unfolded partial sum), folded and
/// complemented: the Internet checksum. A buffer that includes its own correct checksum gives 0.
pub(crate) fn checksum(data: &[u8], initial: u64) -> u16 {
    !fold(sum(data, initial))
}

/// The unfolded ones'-complement sum of `data`, big-endian 16-bit words, added to `acc`.
pub(crate) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(be16(rest, i));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a 64-bit partial sum into 16 bits (not complemented).
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The partial sum of the IPv4 pseudo header of a transport segment.
pub(crate) fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u64 {
    let mut acc = sum(&src, 0);
    acc = sum(&dst, acc);
    acc + u64::from(proto) + len as u64
}

/// RFC 1624 incremental update of a checksum field `old_sum` when a 16-bit word changes from
/// `old` to `new`.
pub(crate) fn checksum_adjust(old_sum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!old_sum) + u64::from(!old) + u64::from(new))
}

/// An ICMP echo request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Echo<'a> {
    /// The whole ICMP message (type, code, checksum, id, sequence, data).
    pub message: &'a [u8],
}

impl<'a> Echo<'a> {
    /// Parses an ICMP echo request with a correct checksum.
    pub(crate) fn parse_request(p: &'a [u8]) -> Option<Echo<'a>> {
        if p.len() < 8 || p[0] != 8 || p[1] != 0 || checksum(p, 0) != 0 {
            return None;
        }
        Some(Echo { message: p })
    }
}

/// Turns the echo request `req` into a reply in `out` (ICMP message only, same length);
/// returns the length.
pub(crate) fn put_echo_reply(out: &mut [u8], req: &Echo<'_>) -> usize {
    let n = req.message.len();
    out[..n].copy_from_slice(req.message);
    out[0] = 0;
    let old = be16(req.message, 2);
    // Only the type word changed, from 0x0800 to 0x0000.
    let sum = checksum_adjust(old, 0x0800, 0x0000);
    out[2..4].copy_from_slice(&sum.to_be_bytes());
    n
}

/// Makes the echo reply `m` (the ICMP or ICMPv6 message only), which the host's kernel
/// received on an unprivileged ICMP socket and so carries that socket's echo id, the reply to
/// the namespace's request `id`: the id put back (the sequence and data are the request's)
/// and the checksum redone, over the pseudo-header from `src` to `dst` for ICMPv6 (when `src`
/// is not IPv4-mapped). `false` when `m` is not an echo reply.
pub(crate) fn restore_echo_reply(m: &mut [u8], id: u16, src: &Addr, dst: &Addr) -> bool {
    let v6 = unmapped(src).is_none();
    if m.len() < 8 || m[0] != if v6 { 129 } else { 0 } || m[1] != 0 {
        return false;
    }
    m[4..6].copy_from_slice(&id.to_be_bytes());
    if v6 {
        icmp6_checksum(m, src, dst);
    } else {
        m[2..4].copy_from_slice(&[0, 0]);
        let c = checksum(m, 0);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    true
}

/// A UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Udp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The data.
    pub payload: &'a [u8],
}

impl<'a> Udp<'a> {
    #[cfg(any(test, fuzzing))]
    /// Parses a UDP datagram of an IP packet; a non-zero checksum must be right.
    pub(crate) fn parse(ip: &Ip<'a>) -> Option<Udp<'a>> {
        Udp::parse_with(ip, true)
    }

    /// [`Udp::parse`]; `verify` false skips the checksum (the sender left it to us: a tap's
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    pub(crate) fn parse_with(ip: &Ip<'a>, verify: bool) -> Option<Udp<'a>> {
        let p = ip.payload;
        if p.len() < UDP_LEN {
            return None;
        }
        let len = usize::from(be16(p, 4));
        if len < UDP_LEN || len > p.len() {
            return None;
        }
        if verify
            && be16(p, 6) != 0
            && checksum(&p[..len], pseudo_sum_any(&ip.src, &ip.dst, PROTO_UDP, len)) != 0
        {
            return None;
        }
        Some(Udp {
            src_port: be16(p, 0),
            dst_port: be16(p, 2),
            payload: &p[UDP_LEN..len],
        })
    }
}

/// Writes the UDP header (checksum included) at `out[0..8]` for the payload already at
/// `out[8..8 + payload_len]`.
pub(crate) fn put_udp(
    out: &mut [u8],
    src: (Addr, u16),
    dst: (Addr, u16),
    payload_len: usize,
) -> usize {
    let len = UDP_LEN + payload_len;
    out[0..2].copy_from_slice(&src.1.to_be_bytes());
    out[2..4].copy_from_slice(&dst.1.to_be_bytes());
    out[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    out[6..8].copy_from_slice(&[0, 0]);
    let mut c = checksum(&out[..len], pseudo_sum_any(&src.0, &dst.0, PROTO_UDP, len));
    if c == 0 {
        c = 0xffff;
    }
    out[6..8].copy_from_slice(&c.to_be_bytes());
    len
}

/// A TCP segment: header fields, the options we use, and the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tcp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags ([`flags`]).
    pub flags: u8,
    /// Window, unscaled.
    pub window: u16,
    /// The MSS option, if present.
    pub mss: Option<u16>,
    /// The window scale option, if present (capped at 14).
    pub wscale: Option<u8>,
    /// The data.
    pub payload: &'a [u8],
}

impl<'a> Tcp<'a> {
    /// Parses a TCP segment of an IP packet, its checksum verified unless `verify` is false
    /// (as for [`Udp::parse_with`]).
    pub(crate) fn parse_with(ip: &Ip<'a>, verify: bool) -> Option<Tcp<'a>> {
        let p = ip.payload;
        if p.len() < TCP_LEN {
            return None;
        }
        let off = usize::from(p[12] >> 4) * 4;
        if off < TCP_LEN || off > p.len() {
            return None;
        }
        if verify && checksum(p, pseudo_sum_any(&ip.src, &ip.dst, PROTO_TCP, p.len())) != 0 {
            return None;
        }
        let (mut mss, mut wscale) = (None, None);
        let opts = &p[TCP_LEN..off];
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => break,
                1 => i += 1,
                kind => {
                    let Some(&len) = opts.get(i + 1) else { break };
                    let len = usize::from(len);
                    if len < 2 || i + len > opts.len() {
                        break;
                    }
                    match (kind, len) {
                        (2, 4) => mss = Some(be16(opts, i + 2)),
                        (3, 3) => wscale = Some(opts[i + 2].min(14)),
                        _ => {}
                    }
                    i += len;
                }
            }
        }
        Some(Tcp {
            src_port: be16(p, 0),
            dst_port: be16(p, 2),
            seq: be32(p, 4),
            ack: be32(p, 8),
            flags: p[13],
            window: be16(p, 14),
            mss,
            wscale,
            payload: &p[off..],
        })
    }
}

/// The header fields of a segment we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpOut {
    /// Source address and port.
    pub src: (Addr, u16),
    /// Destination address and port.
    pub dst: (Addr, u16),
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window field (already scaled down).
    pub window: u16,
    /// SYN options: MSS, and the window scale if `Some`.
    pub syn_opts: Option<(u16, Option<u8>)>,
}

/// Length of the TCP header [`put_tcp`] writes for `seg`.
pub(crate) fn tcp_header_len(seg: &TcpOut) -> usize {
    match seg.syn_opts {
        None => TCP_LEN,
        Some((_, None)) => TCP_LEN + 4,
        Some((_, Some(_))) => TCP_LEN + 8,
    }
}

/// Writes the TCP header (checksum included) at the start of `out`, for the payload already at
/// `out[header..header + payload_len]`; returns the segment length.
pub(crate) fn put_tcp(out: &mut [u8], seg: &TcpOut, payload_len: usize) -> usize {
    let hl = tcp_header_len(seg);
    let len = hl + payload_len;
    out[0..2].copy_from_slice(&seg.src.1.to_be_bytes());
    out[2..4].copy_from_slice(&seg.dst.1.to_be_bytes());
    out[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    out[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    out[12] = ((hl / 4) as u8) << 4;
    out[13] = seg.flags;
    out[14..16].copy_from_slice(&seg.window.to_be_bytes());
    out[16..20].copy_from_slice(&[0, 0, 0, 0]);
    if let Some((mss, ws)) = seg.syn_opts {
        out[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        if let Some(ws) = ws {
            out[24..28].copy_from_slice(&[1, 3, 3, ws]);
        }
    }
    let c = checksum(
        &out[..len],
        pseudo_sum_any(&seg.src.0, &seg.dst.0, PROTO_TCP, len),
    );
    out[16..18].copy_from_slice(&c.to_be_bytes());
    len
}

/// [`put_tcp`] for a segment whose checksum the kernel completes (checksum offload): the
/// field holds the folded sum of the pseudo header only, and the data is not summed.
pub(crate) fn put_tcp_partial(out: &mut [u8], seg: &TcpOut, payload_len: usize) -> usize {
    let len = put_tcp(&mut out[..tcp_header_len(seg)], seg, 0) + payload_len;
    let partial = fold(pseudo_sum_any(&seg.src.0, &seg.dst.0, PROTO_TCP, len));
    out[16..18].copy_from_slice(&partial.to_be_bytes());
    len
}

/// The fixed header of a DNS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DnsHeader {
    /// Transaction id.
    pub id: u16,
    /// Whether this is a response.
    pub response: bool,
    /// Opcode (0 query).
    pub opcode: u8,
    /// Response code.
    pub rcode: u8,
    /// Question count.
    pub qdcount: u16,
}

impl DnsHeader {
    /// Parses the 12-byte header of a DNS message.
    pub(crate) fn parse(m: &[u8]) -> Option<DnsHeader> {
        if m.len() < 12 {
            return None;
        }
        Some(DnsHeader {
            id: be16(m, 0),
            response: m[2] & 0x80 != 0,
            opcode: (m[2] >> 3) & 0xf,
            rcode: m[3] & 0xf,
            qdcount: be16(m, 4),
        })
    }
}

/// Writes an answer with response code `rcode` (a failure: no records) to the query `q` into
/// `out` (header and question section copied); returns its length, or `None` if `q` is not a
/// query or `out` is too small.
pub(crate) fn put_dns_failure(out: &mut [u8], q: &[u8], rcode: u8) -> Option<usize> {
    let h = DnsHeader::parse(q)?;
    if h.response || q.len() > out.len() {
        return None;
    }
    out[..q.len()].copy_from_slice(q);
    out[2] = 0x80 | (q[2] & 0x79);
    out[3] = 0x80 | (rcode & 0xf);
    // No answer, authority or additional records.
    out[6..12].fill(0);
    // Only the question section stays: cut any additional (EDNS) records a query carried.
    let end = skip_questions(q, h.qdcount).unwrap_or(12);
    if end == 12 {
        out[4..6].fill(0);
    }
    Some(end)
}

/// The end of the question section of `m` with `count` questions.
fn skip_questions(m: &[u8], count: u16) -> Option<usize> {
    let mut at = 12;
    for _ in 0..count {
        loop {
            let len = usize::from(*m.get(at)?);
            if len == 0 {
                at += 1;
                break;
            }
            if len & 0xc0 != 0 {
                at += 2;
                break;
            }
            at += 1 + len;
        }
        at += 4;
        if at > m.len() {
            return None;
        }
    }
    Some(at)
}

/// Whether `seq` is after `other` in sequence space.
pub(crate) fn seq_gt(seq: u32, other: u32) -> bool {
    (seq.wrapping_sub(other) as i32) > 0
}

/// Whether `seq` is at or after `other` in sequence space.
pub(crate) fn seq_ge(seq: u32, other: u32) -> bool {
    (seq.wrapping_sub(other) as i32) >= 0
}

/// What a frame from the namespace is, parsed down to its transport header: what the fuzz
/// target drives and what the stack dispatches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// An ARP packet.
    Arp(Ethernet<'a>, Arp),
    /// An ICMP echo request.
    Echo(Ethernet<'a>, Ip<'a>, Echo<'a>),
    /// An ICMPv6 message.
    Icmp6(Ethernet<'a>, Ip<'a>, Icmp6<'a>),
    /// A UDP datagram.
    Udp(Ethernet<'a>, Ip<'a>, Udp<'a>),
    /// A TCP segment.
    Tcp(Ethernet<'a>, Ip<'a>, Tcp<'a>),
    /// Anything else, or something malformed: dropped.
    Other,
}

impl<'a> Frame<'a> {
    #[cfg(any(test, fuzzing))]
    /// Parses an Ethernet frame from the tap.
    pub(crate) fn parse(f: &'a [u8]) -> Frame<'a> {
        Frame::parse_with(f, true)
    }

    /// [`Frame::parse`]; `verify` false skips the UDP and TCP checksums (see
    /// [`Udp::parse_with`]).
    pub(crate) fn parse_with(f: &'a [u8], verify: bool) -> Frame<'a> {
        let Some(eth) = Ethernet::parse(f) else {
            return Frame::Other;
        };
        match eth.ethertype {
            ETHERTYPE_ARP => Arp::parse(eth.payload).map_or(Frame::Other, |a| Frame::Arp(eth, a)),
            ETHERTYPE_IPV4 => {
                let Some(ip) = Ipv4::parse(eth.payload) else {
                    return Frame::Other;
                };
                if ip.fragment {
                    return Frame::Other;
                }
                Frame::transport(eth, ip.into(), verify)
            }
            ETHERTYPE_IPV6 => match Ip::parse_v6(eth.payload) {
                Some(ip) => Frame::transport(eth, ip, verify),
                None => Frame::Other,
            },
            _ => Frame::Other,
        }
    }

    fn transport(eth: Ethernet<'a>, ip: Ip<'a>, verify: bool) -> Frame<'a> {
        let v4 = unmapped(&ip.src).is_some();
        match ip.proto {
            PROTO_ICMP if v4 => {
                Echo::parse_request(ip.payload).map_or(Frame::Other, |e| Frame::Echo(eth, ip, e))
            }
            PROTO_ICMP6 if !v4 => {
                Icmp6::parse(&ip).map_or(Frame::Other, |m| Frame::Icmp6(eth, ip, m))
            }
            PROTO_UDP => {
                Udp::parse_with(&ip, verify).map_or(Frame::Other, |u| Frame::Udp(eth, ip, u))
            }
            PROTO_TCP => {
                Tcp::parse_with(&ip, verify).map_or(Frame::Other, |t| Frame::Tcp(eth, ip, t))
            }
            _ => Frame::Other,
        }
    }
}

/// The most bytes an ICMP error quotes of the datagram it reports: an IPv4 header with the
/// most options (60 bytes; IPv6's is 40) and the first 8 bytes of its payload, as RFC 792 asks
/// (RFC 4443 allows more; we quote the same).
pub(crate) const QUOTE_MAX: usize = 60 + 8;

/// Copies the IP header and the first 8 bytes of payload of IP packet `p` (as the namespace
/// sent it) into `out`, for a later ICMP error about it; their length, or 0 when `p` is not a
/// whole IPv4 or IPv6 header followed by 8 bytes.
pub(crate) fn quote(p: &[u8], out: &mut [u8; QUOTE_MAX]) -> usize {
    let header = match p.first().map(|b| b >> 4) {
        Some(4) => usize::from(p[0] & 0xf) * 4,
        Some(6) => IP6_LEN,
        _ => return 0,
    };
    let n = header + 8;
    if header < IP_LEN || n > p.len() {
        return 0;
    }
    out[..n].copy_from_slice(&p[..n]);
    n
}

/// Writes a destination-unreachable error with code `code` quoting `quote` (see [`quote`]) at
/// the start of `out`, from `src` to `dst`: ICMPv6 (type 1, checksum over the pseudo header)
/// when either address is IPv6, ICMP (type 3) otherwise. Its length.
pub(crate) fn put_unreachable(
    out: &mut [u8],
    code: u8,
    quote: &[u8],
    src: &Addr,
    dst: &Addr,
) -> usize {
    let len = 8 + quote.len();
    let v4 = unmapped(src).is_some() && unmapped(dst).is_some();
    out[0] = if v4 { 3 } else { 1 };
    out[1] = code;
    out[2..8].fill(0);
    out[8..len].copy_from_slice(quote);
    let c = if v4 {
        checksum(&out[..len], 0)
    } else {
        checksum(&out[..len], pseudo_sum_any(src, dst, PROTO_ICMP6, len))
    };
    out[2..4].copy_from_slice(&c.to_be_bytes());
    len
}

/// What the namespace is told about a datagram the host reported error `e` for (from a
/// host ICMP or ICMPv6 destination-unreachable message): the code of the destination-unreachable
/// message, ICMPv6's when `v6`, or `None` for errors that are no such message.
pub(crate) fn unreachable_code(e: rustix::io::Errno, v6: bool) -> Option<u8> {
    use rustix::io::Errno;
    // (ICMP, ICMPv6): RFC 792 and RFC 4443's codes for what the kernel turned into `e`.
    let (c4, c6) = match e {
        Errno::CONNREFUSED => (3, 4),
        Errno::HOSTUNREACH => (1, 3),
        Errno::NETUNREACH => (0, 0),
        // Administratively prohibited.
        Errno::ACCESS => (13, 1),
        _ => return None,
    };
    Some(if v6 { c6 } else { c4 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 4] = [10, 0, 2, 100];
    const B: [u8; 4] = [10, 0, 2, 1];
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0x64];
    const MAC_B: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd];

    #[test]
    fn unreachable_errors_quote_the_datagram() {
        // An IPv4 datagram with a 4-byte option: the whole header and 8 bytes are quoted.
        let mut p = vec![0u8; 24 + 8 + 5];
        put_ipv4(&mut p, A, B, PROTO_UDP, 13);
        p[0] = 0x46;
        p[24..32].copy_from_slice(&[0x9c, 0x40, 0, 53, 0, 13, 0xab, 0xcd]);
        let mut q = [0u8; QUOTE_MAX];
        let n = quote(&p, &mut q);
        assert_eq!(&q[..n], &p[..32]);
        assert_eq!(quote(&p[..31], &mut q), 0, "short of the 8 bytes");
        assert_eq!(
            quote(&[0x44; 40], &mut q),
            0,
            "header shorter than 20 bytes"
        );
        assert_eq!(quote(&[], &mut q), 0);
        assert_eq!(quote(&[0x50; 60], &mut q), 0, "not IP");
        let mut m = [0u8; 8 + QUOTE_MAX];
        let len = put_unreachable(&mut m, 3, &q[..n], &mapped(B), &mapped(A));
        assert_eq!((len, m[0], m[1], &m[4..8]), (40, 3, 3, &[0u8; 4][..]));
        assert_eq!(checksum(&m[..len], 0), 0);
        assert_eq!(&m[8..len], &p[..32]);
        // IPv6: the 40-byte header; the checksum covers the pseudo header.
        let (s6, d6) = (
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xfd; 16],
        );
        let mut p6 = vec![0u8; IP6_LEN + 12];
        put_ipv6(&mut p6, &d6, &s6, PROTO_UDP, 12, 64);
        p6[IP6_LEN..].copy_from_slice(&[1, 2, 3, 4, 0, 12, 5, 6, 7, 8, 9, 10]);
        let n = quote(&p6, &mut q);
        assert_eq!(&q[..n], &p6[..IP6_LEN + 8]);
        let len = put_unreachable(&mut m, 4, &q[..n], &s6, &d6);
        assert_eq!((len, m[0], m[1]), (56, 1, 4));
        assert_eq!(
            checksum(&m[..len], pseudo_sum_any(&s6, &d6, PROTO_ICMP6, len)),
            0
        );
        // What the kernel's errors become.
        use rustix::io::Errno;
        assert_eq!(unreachable_code(Errno::CONNREFUSED, false), Some(3));
        assert_eq!(unreachable_code(Errno::CONNREFUSED, true), Some(4));
        assert_eq!(unreachable_code(Errno::HOSTUNREACH, false), Some(1));
        assert_eq!(unreachable_code(Errno::HOSTUNREACH, true), Some(3));
        assert_eq!(unreachable_code(Errno::NETUNREACH, true), Some(0));
        assert_eq!(unreachable_code(Errno::MSGSIZE, false), None);
        assert_eq!(unreachable_code(Errno::AGAIN, false), None);
    }

    #[test]
    fn checksums() {
        // RFC 1071's example: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data, 0), !0xddf2);
        // Odd lengths pad with a zero byte.
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
        assert_eq!(fold(sum(&[1, 2, 3, 4, 5], 0)), 0x0102 + 0x0304 + 0x0500);
        // The incremental update agrees with a full recomputation.
        let mut msg = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let c = checksum(&msg, 0);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&msg, 0), 0);
        let adjusted = checksum_adjust(c, 0x0800, 0);
        msg[0] = 0;
        msg[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(adjusted, checksum(&msg, 0));
    }

    fn frame_ip(proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + IP_LEN + payload.len()];
        put_ethernet(&mut f, MAC_B, MAC_A, ETHERTYPE_IPV4);
        put_ipv4(&mut f[ETH_LEN..], A, B, proto, payload.len());
        f[ETH_LEN + IP_LEN..].copy_from_slice(payload);
        f
    }

    #[test]
    fn arp_request_and_reply() {
        let mut f = vec![0u8; 42];
        put_ethernet(&mut f, [0xff; 6], MAC_A, ETHERTYPE_ARP);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&MAC_A);
        f[28..32].copy_from_slice(&A);
        f[38..42].copy_from_slice(&B);
        let Frame::Arp(eth, arp) = Frame::parse(&f) else {
            panic!("not arp")
        };
        assert_eq!((eth.src, arp.op, arp.spa, arp.tpa), (MAC_A, 1, A, B));
        let mut out = [0u8; 64];
        let n = put_arp_reply(&mut out, MAC_B, B, arp.sha, arp.spa);
        let Frame::Arp(eth, reply) = Frame::parse(&out[..n]) else {
            panic!("reply is not arp")
        };
        assert_eq!((eth.dst, eth.src), (MAC_A, MAC_B));
        assert_eq!(
            reply,
            Arp {
                op: 2,
                sha: MAC_B,
                spa: B,
                tpa: A
            }
        );
        // A truncated packet or another hardware type is not ARP.
        assert_eq!(Frame::parse(&f[..41]), Frame::Other);
        f[15] = 6;
        assert_eq!(Frame::parse(&f), Frame::Other);
    }

    #[test]
    fn echo_reply_from_a_ping_socket_gets_the_namespaces_id_back() {
        const A: [u8; 4] = [192, 0, 2, 9];
        const B: [u8; 4] = [10, 0, 2, 100];
        // The kernel's reply carries its socket's id 0x4242; the request's id was 0x0102.
        let mut m = [0u8, 0, 0, 0, 0x42, 0x42, 0, 7, b'h', b'i'];
        let c = checksum(&m, 0);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(restore_echo_reply(&mut m, 0x0102, &mapped(A), &mapped(B)));
        assert_eq!(&m[4..8], &[1, 2, 0, 7]);
        assert_eq!(&m[8..], b"hi");
        assert_eq!(checksum(&m, 0), 0);
        // IPv6: the checksum covers the pseudo-header.
        let (s6, d6) = ([0x20u8; 16], [0xfdu8; 16]);
        let mut m6 = [129u8, 0, 0, 0, 0x42, 0x42, 0, 3, 1, 2, 3];
        assert!(restore_echo_reply(&mut m6, 0xbeef, &s6, &d6));
        assert_eq!(&m6[4..8], &[0xbe, 0xef, 0, 3]);
        assert_eq!(
            checksum(&m6, pseudo_sum_any(&s6, &d6, PROTO_ICMP6, m6.len())),
            0
        );
        // Anything but an echo reply of the right family, or too short, is refused.
        let mut req = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert!(!restore_echo_reply(&mut req, 1, &mapped(A), &mapped(B)));
        let mut v4_in_v6 = [0u8, 0, 0, 0, 0, 1, 0, 1];
        assert!(!restore_echo_reply(&mut v4_in_v6, 1, &s6, &d6));
        assert!(!restore_echo_reply(
            &mut [0u8; 7],
            1,
            &mapped(A),
            &mapped(B)
        ));
    }

    #[test]
    fn echo_round_trip() {
        let mut icmp = vec![8u8, 0, 0, 0, 0xbe, 0xef, 0, 7];
        icmp.extend_from_slice(b"payload!");
        let c = checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let f = frame_ip(PROTO_ICMP, &icmp);
        let Frame::Echo(_, ip, echo) = Frame::parse(&f) else {
            panic!("not echo")
        };
        assert_eq!((ip.src, ip.dst, ip.ttl), (mapped(A), mapped(B), 64));
        let mut out = [0u8; 64];
        let n = put_echo_reply(&mut out, &echo);
        assert_eq!(out[0], 0);
        assert_eq!(&out[4..n], &icmp[4..]);
        assert_eq!(checksum(&out[..n], 0), 0);
        // A bad checksum is dropped.
        let mut bad = icmp.clone();
        bad[9] ^= 1;
        assert_eq!(Frame::parse(&frame_ip(PROTO_ICMP, &bad)), Frame::Other);
    }

    #[test]
    fn udp_build_and_parse() {
        let mut seg = vec![0u8; UDP_LEN + 5];
        seg[UDP_LEN..].copy_from_slice(b"hello");
        let n = put_udp(&mut seg, (mapped(A), 4000), (mapped(B), 53), 5);
        assert_eq!(n, 13);
        let f = frame_ip(PROTO_UDP, &seg);
        let Frame::Udp(_, ip, u) = Frame::parse(&f) else {
            panic!("not udp")
        };
        assert_eq!(
            (ip.src, u.src_port, u.dst_port, u.payload),
            (mapped(A), 4000, 53, &b"hello"[..])
        );
        let mut bad = seg.clone();
        bad[9] ^= 0x40;
        assert_eq!(Frame::parse(&frame_ip(PROTO_UDP, &bad)), Frame::Other);
        // A zero checksum means none.
        bad[6..8].copy_from_slice(&[0, 0]);
        assert!(matches!(
            Frame::parse(&frame_ip(PROTO_UDP, &bad)),
            Frame::Udp(..)
        ));
        // A length beyond the packet is refused.
        let mut long = seg.clone();
        long[4..6].copy_from_slice(&100u16.to_be_bytes());
        long[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(Frame::parse(&frame_ip(PROTO_UDP, &long)), Frame::Other);
    }

    #[test]
    fn tcp_build_and_parse() {
        let seg = TcpOut {
            src: (mapped(A), 40000),
            dst: (mapped(B), 80),
            seq: 0xffff_fff0,
            ack: 7,
            flags: flags::SYN | flags::ACK,
            window: 65535,
            syn_opts: Some((65480, Some(7))),
        };
        let mut buf = vec![0u8; 64];
        let hl = tcp_header_len(&seg);
        buf[hl..hl + 3].copy_from_slice(b"abc");
        let n = put_tcp(&mut buf, &seg, 3);
        let f = frame_ip(PROTO_TCP, &buf[..n]);
        let Frame::Tcp(_, _, t) = Frame::parse(&f) else {
            panic!("not tcp")
        };
        assert_eq!(
            (t.src_port, t.dst_port, t.seq, t.ack, t.flags, t.window),
            (40000, 80, 0xffff_fff0, 7, flags::SYN | flags::ACK, 65535)
        );
        assert_eq!(
            (t.mss, t.wscale, t.payload),
            (Some(65480), Some(7), &b"abc"[..])
        );
        let mut bad = buf[..n].to_vec();
        bad[n - 1] ^= 1;
        assert_eq!(Frame::parse(&frame_ip(PROTO_TCP, &bad)), Frame::Other);
        // A data offset pointing past the segment is refused.
        let mut bad = buf[..n].to_vec();
        bad[12] = 0xf0;
        assert_eq!(Frame::parse(&frame_ip(PROTO_TCP, &bad)), Frame::Other);
    }

    #[test]
    fn partial_tcp_checksum_completes_to_the_full_one() {
        let seg = TcpOut {
            src: (mapped(A), 1),
            dst: (mapped(B), 2),
            seq: 9,
            ack: 10,
            flags: flags::ACK,
            window: 100,
            syn_opts: None,
        };
        let mut full = vec![0u8; TCP_LEN + 7];
        full[TCP_LEN..].copy_from_slice(b"payload");
        let mut partial = full.clone();
        let n = put_tcp(&mut full, &seg, 7);
        assert_eq!(put_tcp_partial(&mut partial, &seg, 7), n);
        // What the kernel does: sum from the start of the header, with the partial sum in the
        // field, and store the complement.
        let field = u16::from_be_bytes([partial[16], partial[17]]);
        assert_eq!(field, fold(pseudo_sum(A, B, PROTO_TCP, n)));
        let done = checksum(&partial[..n], 0);
        partial[16..18].copy_from_slice(&done.to_be_bytes());
        assert_eq!(partial[..n], full[..n]);
    }

    #[test]
    fn ipv4_rejections() {
        let f = frame_ip(PROTO_UDP, &[0; 8]);
        let mut bad = f.clone();
        bad[ETH_LEN + 10] ^= 1;
        assert_eq!(Frame::parse(&bad), Frame::Other, "header checksum");
        let mut frag = f.clone();
        frag[ETH_LEN + 6] = 0x20;
        frag[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
        let c = checksum(&frag[ETH_LEN..ETH_LEN + IP_LEN], 0);
        frag[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(Frame::parse(&frag), Frame::Other, "fragment");
        assert_eq!(Frame::parse(&f[..ETH_LEN + 19]), Frame::Other, "short");
    }

    #[test]
    fn dns_header_and_servfail() {
        // id 0x1234, RD, one question: example.com A IN.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        let h = DnsHeader::parse(&q).unwrap();
        assert_eq!(
            (h.id, h.response, h.opcode, h.qdcount),
            (0x1234, false, 0, 1)
        );
        let mut out = [0u8; 512];
        let n = put_dns_failure(&mut out, &q, 2).unwrap();
        assert_eq!(n, q.len());
        let r = DnsHeader::parse(&out[..n]).unwrap();
        assert_eq!((r.id, r.response, r.rcode, r.qdcount), (0x1234, true, 2, 1));
        let answer = out;
        assert_eq!(put_dns_failure(&mut out, &answer[..n], 2), None);
        let n = put_dns_failure(&mut out, &q, 5).unwrap();
        assert_eq!(DnsHeader::parse(&out[..n]).unwrap().rcode, 5);
        // Too small a buffer.
        assert_eq!(put_dns_failure(&mut out[..q.len() - 1], &q, 2), None);
        assert_eq!(DnsHeader::parse(&q[..11]), None);
    }

    #[test]
    fn sequence_space() {
        assert!(seq_gt(1, 0));
        assert!(seq_gt(0, u32::MAX));
        assert!(!seq_gt(5, 5));
        assert!(seq_ge(5, 5));
        assert!(!seq_ge(u32::MAX, 0));
    }
}
