//! vpnkit's "vmnet" protocol on its `--ethernet` socket, as pure encoders and parsers.
//!
//! A session is: both ends send a 49-byte init message (`VMN3T`, version, commit); the client
//! asks for a virtual interface by UUID (41 bytes); the server answers with a type byte, then
//! either the interface (MTU, largest packet, the MAC it assigned, padding to 258 bytes in all)
//! or a refusal (a length byte and that much text). From then on both ends exchange Ethernet
//! frames, each prefixed by its length as a little-endian `u16`. The interface's IPv4 address is
//! learnt by one DHCP discover answered by vpnkit's DHCP server.
//!
//! Every parser here takes bytes from another program and returns an error, or asks for more
//! bytes, instead of panicking; nothing allocates except the text of a refusal.

use std::fmt;
use std::ops::Range;

/// Length of the init message each end sends first.
pub const INIT_LEN: usize = 49;
/// The init message's magic.
pub const INIT_MAGIC: [u8; 5] = *b"VMN3T";
/// The protocol version we announce (vpnkit's Go client sends the same).
pub const INIT_VERSION: u32 = 22;
/// Length of the request for a virtual interface.
pub const CONNECT_LEN: usize = 41;
/// Length of a successful reply to that request, its type byte included.
pub const VIF_REPLY_LEN: usize = 258;
/// Length of a frame's prefix.
pub const FRAME_HEAD: usize = 2;
/// The largest frame the length prefix can describe.
pub const MAX_FRAME: usize = u16::MAX as usize;
/// Length of the DHCP discover frame built by [`dhcp_discover`].
pub const DISCOVER_LEN: usize = 14 + 20 + 8 + 244;

/// vpnkit's fixed addresses: its gateway and DNS server.
pub const GATEWAY: [u8; 4] = [192, 168, 65, 1];

/// Why the other end's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the message needs.
    Truncated,
    /// The init message does not start with `VMN3T`.
    BadMagic,
    /// The server refused the interface, with its reason.
    Refused(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated vmnet message"),
            Error::BadMagic => f.write_str("not a vmnet server (bad init magic)"),
            Error::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

/// Our init message: magic, version 22 and a commit field of 40 bytes.
pub fn init_message() -> [u8; INIT_LEN] {
    let mut m = [b'0'; INIT_LEN];
    m[..5].copy_from_slice(&INIT_MAGIC);
    m[5..9].copy_from_slice(&INIT_VERSION.to_le_bytes());
    m
}

/// Checks the server's init message and returns the version it speaks.
///
/// # Errors
/// [`Error::Truncated`] or [`Error::BadMagic`].
pub fn parse_init(m: &[u8]) -> Result<u32, Error> {
    let m: &[u8; INIT_LEN] = m
        .get(..INIT_LEN)
        .and_then(|m| m.try_into().ok())
        .ok_or(Error::Truncated)?;
    if m[..5] != INIT_MAGIC {
        return Err(Error::BadMagic);
    }
    Ok(u32::from_le_bytes([m[5], m[6], m[7], m[8]]))
}

/// A UUID as text, lowercase with dashes (`8-4-4-4-12`), as Go's `uuid.MarshalText`.
pub fn uuid_text(uuid: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 15)];
        at += 2;
    }
    out
}

/// Turns 16 random bytes into a version-4 (random) UUID.
pub fn uuid_v4(mut random: [u8; 16]) -> [u8; 16] {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    random
}

/// The request for the interface named `uuid`, with no preferred address.
pub fn connect_request(uuid: &[u8; 16]) -> [u8; CONNECT_LEN] {
    let mut m = [0u8; CONNECT_LEN];
    m[0] = 1;
    m[1..37].copy_from_slice(&uuid_text(uuid));
    m
}

/// The interface vpnkit gave us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vif {
    /// Its MTU.
    pub mtu: u16,
    /// The largest frame it carries.
    pub max_packet_size: u16,
    /// The MAC address the client must use.
    pub mac: [u8; 6],
}

/// How long the whole reply to [`connect_request`] is, once its first two bytes are known;
/// `None` while fewer are.
pub fn vif_reply_len(head: &[u8]) -> Option<usize> {
    match head {
        [1, ..] => Some(VIF_REPLY_LEN),
        [_, n, ..] => Some(2 + usize::from(*n)),
        _ => None,
    }
}

/// Parses the complete reply to [`connect_request`].
///
/// # Errors
/// [`Error::Truncated`], or [`Error::Refused`] with the server's text.
pub fn parse_vif_reply(reply: &[u8]) -> Result<Vif, Error> {
    let len = vif_reply_len(reply).ok_or(Error::Truncated)?;
    let reply = reply.get(..len).ok_or(Error::Truncated)?;
    if reply[0] != 1 {
        return Err(Error::Refused(
            String::from_utf8_lossy(&reply[2..]).into_owned(),
        ));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&reply[5..11]);
    Ok(Vif {
        mtu: u16::from_le_bytes([reply[1], reply[2]]),
        max_packet_size: u16::from_le_bytes([reply[3], reply[4]]),
        mac,
    })
}

/// The first complete length-prefixed frame in `buf`: the range of its bytes (after the
/// prefix). `None` while the frame is incomplete.
pub fn next_frame(buf: &[u8]) -> Option<Range<usize>> {
    let head = buf.get(..FRAME_HEAD)?;
    let end = FRAME_HEAD + usize::from(u16::from_le_bytes([head[0], head[1]]));
    (buf.len() >= end).then_some(FRAME_HEAD..end)
}

/// The XID of our DHCP discover (upstream's, `01 00 00 00`).
const XID: [u8; 4] = [1, 0, 0, 0];

/// A broadcast DHCP discover from `mac`, as one Ethernet frame, written into `out`.
pub fn dhcp_discover(mac: [u8; 6]) -> [u8; DISCOVER_LEN] {
    let mut f = [0u8; DISCOVER_LEN];
    // Ethernet: broadcast, from us, IPv4.
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    // IPv4: 0.0.0.0 → 255.255.255.255, UDP, TTL 64.
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((DISCOVER_LEN - 14) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].fill(0xff);
    let sum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    // UDP 68 → 67, no checksum.
    let udp = &mut f[34..42];
    udp[..2].copy_from_slice(&68u16.to_be_bytes());
    udp[2..4].copy_from_slice(&67u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((DISCOVER_LEN - 34) as u16).to_be_bytes());
    // BOOTP request over Ethernet, broadcast flag, our MAC, the magic cookie, DHCPDISCOVER.
    let d = &mut f[42..];
    d[..4].copy_from_slice(&[1, 1, 6, 0]);
    d[4..8].copy_from_slice(&XID);
    d[10] = 0x80;
    d[28..34].copy_from_slice(&mac);
    d[236..244].copy_from_slice(&[0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x01, 0xff]);
    f
}

/// The Internet checksum of an IPv4 header whose checksum field is zero.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The address a DHCP offer (or any BOOTP reply to our XID) in `frame` gives `mac`, or `None`
/// when the frame is something else.
pub fn dhcp_offer(frame: &[u8], mac: [u8; 6]) -> Option<[u8; 4]> {
    let dst = frame.get(..6)?;
    if (dst != [0xff; 6] && dst != mac) || frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if udp.get(..4)? != [0, 67, 0, 68] {
        return None;
    }
    let d = udp.get(8..)?;
    if d.len() < 243 || d[0] != 2 || d[4..8] != XID {
        return None;
    }
    Some([d[16], d[17], d[18], d[19]])
}

/// Everything a fuzz target feeds untrusted bytes to; returns nothing, must never panic.
#[cfg(any(test, fuzzing))]
pub fn fuzz(data: &[u8]) {
    let _ = parse_init(data);
    let _ = vif_reply_len(data);
    let _ = parse_vif_reply(data);
    let mut rest = data;
    while let Some(r) = next_frame(rest) {
        let frame = &rest[r.clone()];
        let _ = dhcp_offer(frame, [2, 0x50, 0, 0, 0, 1]);
        rest = &rest[r.end..];
    }
    let _ = dhcp_offer(data, [0xff; 6]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_messages() {
        let m = init_message();
        assert_eq!(&m[..5], b"VMN3T");
        assert_eq!(&m[5..9], &[22, 0, 0, 0]);
        assert_eq!(m.len(), 49);
        assert_eq!(parse_init(&m), Ok(22));
        assert_eq!(parse_init(&m[..48]), Err(Error::Truncated));
        assert_eq!(parse_init(&[]), Err(Error::Truncated));
        let mut bad = m;
        bad[0] = b'X';
        assert_eq!(parse_init(&bad), Err(Error::BadMagic));
    }

    #[test]
    fn uuids() {
        let u: [u8; 16] = [
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00,
        ];
        assert_eq!(&uuid_text(&u), b"123e4567-e89b-12d3-a456-426614174000");
        let v4 = uuid_v4([0xff; 16]);
        assert_eq!(&uuid_text(&v4), b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let v4 = uuid_v4([0; 16]);
        assert_eq!(&uuid_text(&v4), b"00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn connect_requests() {
        let m = connect_request(&[0xab; 16]);
        assert_eq!(m[0], 1);
        assert_eq!(&m[1..37], b"abababab-abab-abab-abab-abababababab");
        assert_eq!(&m[37..], &[0, 0, 0, 0]);
    }

    #[test]
    fn vif_replies() {
        let mut ok = [0u8; VIF_REPLY_LEN];
        ok[0] = 1;
        ok[1..3].copy_from_slice(&1500u16.to_le_bytes());
        ok[3..5].copy_from_slice(&1550u16.to_le_bytes());
        ok[5..11].copy_from_slice(&[0x02, 0x50, 0, 0, 0, 1]);
        assert_eq!(vif_reply_len(&ok[..1]), Some(VIF_REPLY_LEN));
        assert_eq!(
            parse_vif_reply(&ok),
            Ok(Vif {
                mtu: 1500,
                max_packet_size: 1550,
                mac: [0x02, 0x50, 0, 0, 0, 1]
            })
        );
        assert_eq!(parse_vif_reply(&ok[..257]), Err(Error::Truncated));
        assert_eq!(parse_vif_reply(&[]), Err(Error::Truncated));
        let refused = [&[0u8, 9][..], b"no uuid!!"].concat();
        assert_eq!(vif_reply_len(&refused[..1]), None);
        assert_eq!(vif_reply_len(&refused), Some(11));
        assert_eq!(
            parse_vif_reply(&refused),
            Err(Error::Refused("no uuid!!".into()))
        );
        assert_eq!(parse_vif_reply(&refused[..10]), Err(Error::Truncated));
        assert_eq!(parse_vif_reply(&[7]), Err(Error::Truncated));
        assert_eq!(
            parse_vif_reply(&[7, 2, 0xff, b'x']),
            Err(Error::Refused("\u{fffd}x".into()))
        );
    }

    #[test]
    fn frames_on_a_stream() {
        assert_eq!(next_frame(&[]), None);
        assert_eq!(next_frame(&[3]), None);
        assert_eq!(next_frame(&[3, 0, 1, 2]), None);
        assert_eq!(next_frame(&[3, 0, 1, 2, 3, 9]), Some(2..5));
        assert_eq!(next_frame(&[0, 0]), Some(2..2));
        let big = vec![0xffu8; 2 + MAX_FRAME];
        assert_eq!(next_frame(&big), Some(2..2 + MAX_FRAME));
        assert_eq!(next_frame(&big[..MAX_FRAME]), None);
    }

    fn offer(mac: [u8; 6], yiaddr: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 300];
        f[..6].copy_from_slice(&mac);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[34..38].copy_from_slice(&[0, 67, 0, 68]);
        let d = &mut f[42..];
        d[0] = 2;
        d[4..8].copy_from_slice(&XID);
        d[16..20].copy_from_slice(&yiaddr);
        f
    }

    #[test]
    fn dhcp() {
        let mac = [2, 0x50, 0, 0, 0, 3];
        let d = dhcp_discover(mac);
        assert_eq!(&d[..6], &[0xff; 6]);
        assert_eq!(&d[6..12], &mac);
        assert_eq!(&d[34..38], &[0, 68, 0, 67]);
        assert_eq!(&d[42 + 28..42 + 34], &mac);
        assert_eq!(&d[DISCOVER_LEN - 4..], &[0x35, 1, 1, 0xff]);
        // A header with its checksum in place sums to zero.
        assert_eq!(ipv4_checksum(&d[14..34]), 0);
        // The well-known example header from RFC 1071 style checks.
        let h = [
            0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0,
            0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);

        let good = offer(mac, [192, 168, 65, 3]);
        assert_eq!(dhcp_offer(&good, mac), Some([192, 168, 65, 3]));
        let mut bcast = good.clone();
        bcast[..6].fill(0xff);
        assert_eq!(dhcp_offer(&bcast, mac), Some([192, 168, 65, 3]));
        // Someone else's, not IPv4, not UDP, wrong ports, a request, another XID, too short.
        let mut other = good.clone();
        other[5] = 9;
        assert_eq!(dhcp_offer(&other, mac), None);
        let mutate = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            dhcp_offer(&f, mac)
        };
        assert_eq!(mutate(12, 0x86), None);
        assert_eq!(mutate(14, 0x65), None);
        assert_eq!(mutate(14, 0x44), None);
        assert_eq!(mutate(23, 6), None);
        assert_eq!(mutate(35, 68), None);
        assert_eq!(mutate(42, 1), None);
        assert_eq!(mutate(46, 2), None);
        assert_eq!(dhcp_offer(&good[..42 + 242], mac), None);
        assert_eq!(dhcp_offer(&good[..42 + 243], mac), Some([192, 168, 65, 3]));
        // Our own discover is not an offer.
        assert_eq!(dhcp_offer(&d, mac), None);
        // A longer IP header moves the UDP header.
        let mut opts = good[..34].to_vec();
        opts[14] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 1]);
        opts.extend_from_slice(&good[34..]);
        assert_eq!(dhcp_offer(&opts, mac), Some([192, 168, 65, 3]));
        // Every prefix of a good offer is an answer or None, never a panic.
        for n in 0..good.len() {
            let _ = dhcp_offer(&good[..n], mac);
        }
    }

    /// Replays every committed fuzz corpus entry: parsing must never panic.
    #[test]
    fn fuzz_corpus_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/vmnet");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            fuzz_one(&std::fs::read(e.path()).unwrap());
        }
    }

    /// The body of the `vmnet` fuzz target.
    fn fuzz_one(data: &[u8]) {
        super::fuzz(data);
    }
}
