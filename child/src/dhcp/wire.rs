//! DHCPv4 on the wire, pure code: the message kinds and options we use, building a DISCOVER or
//! REQUEST into a fixed buffer, parsing a reply with every length checked, and the lease an ACK
//! gives.

use std::fmt;
use std::time::{Duration, Instant};

/// The server's port.
pub(super) const SERVER_PORT: u16 = 67;
/// Our port.
pub(super) const CLIENT_PORT: u16 = 68;
/// The fixed BOOTP header before the magic cookie.
pub(super) const BOOTP_LEN: usize = 236;
/// RFC 2131's magic cookie, which starts the options.
pub(super) const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Where the options start.
pub(super) const OPTIONS_AT: usize = BOOTP_LEN + COOKIE.len();
/// The size of what we send: the 300 bytes old BOOTP relays and servers insist on.
pub(super) const REQUEST_LEN: usize = 300;
/// The largest reply we read; longer datagrams are cut here and rejected as truncated if an
/// option runs past the end. We tell the server this limit in option 57.
pub(super) const REPLY_MAX: usize = 1500;
/// The lease time assumed when the server names none (upstream's default).
const DEFAULT_LEASE_SECS: u32 = 3600;

/// DHCP message types (option 53).
pub(super) mod kind {
    /// DHCPDISCOVER.
    pub(crate) const DISCOVER: u8 = 1;
    /// DHCPOFFER.
    pub(crate) const OFFER: u8 = 2;
    /// DHCPREQUEST.
    pub(crate) const REQUEST: u8 = 3;
    /// DHCPACK.
    pub(crate) const ACK: u8 = 5;
    /// DHCPNAK.
    pub(crate) const NAK: u8 = 6;
}

/// Option codes we read or write.
pub(super) mod opt {
    pub(crate) const PAD: u8 = 0;
    pub(crate) const SUBNET_MASK: u8 = 1;
    pub(crate) const ROUTER: u8 = 3;
    pub(crate) const DNS: u8 = 6;
    pub(crate) const REQUESTED_IP: u8 = 50;
    pub(crate) const LEASE_TIME: u8 = 51;
    pub(crate) const MESSAGE_TYPE: u8 = 53;
    pub(crate) const SERVER_ID: u8 = 54;
    pub(crate) const PARAMETERS: u8 = 55;
    pub(crate) const MAX_SIZE: u8 = 57;
    pub(crate) const END: u8 = 255;
}

/// Why a datagram is not a DHCP reply we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParseError {
    /// Shorter than the BOOTP header and the cookie.
    Truncated(usize),
    /// `op` is not BOOTREPLY (2).
    NotAReply(u8),
    /// Not Ethernet (`htype` 1, `hlen` 6).
    NotEthernet,
    /// The magic cookie is wrong.
    BadCookie,
    /// An option's length runs past the end of the datagram.
    OptionOverrun(u8),
    /// An option whose size we know has another length.
    BadOptionLength(u8, u8),
    /// No message type (option 53): plain BOOTP.
    NoMessageType,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated(n) => write!(f, "truncated DHCP message ({n} bytes)"),
            ParseError::NotAReply(op) => write!(f, "not a BOOTREPLY (op {op})"),
            ParseError::NotEthernet => f.write_str("not an Ethernet DHCP message"),
            ParseError::BadCookie => f.write_str("bad DHCP magic cookie"),
            ParseError::OptionOverrun(code) => write!(f, "DHCP option {code} runs past the end"),
            ParseError::BadOptionLength(code, len) => {
                write!(f, "DHCP option {code} has bad length {len}")
            }
            ParseError::NoMessageType => f.write_str("no DHCP message type"),
        }
    }
}

/// What we read from a reply. Of options that may repeat or list several addresses, the first
/// wins, as upstream takes `Router()[0]` and `DNS()[0]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Reply {
    /// Transaction id.
    pub xid: u32,
    /// The client hardware address it is meant for.
    pub chaddr: [u8; 6],
    /// `yiaddr`: the address offered or acknowledged.
    pub yiaddr: [u8; 4],
    /// Option 53.
    pub kind: u8,
    /// Option 1.
    pub mask: Option<[u8; 4]>,
    /// Option 3, first router.
    pub router: Option<[u8; 4]>,
    /// Option 6, first server.
    pub dns: Option<[u8; 4]>,
    /// Option 51, seconds.
    pub lease_secs: Option<u32>,
    /// Option 54.
    pub server_id: Option<[u8; 4]>,
}

pub(super) fn quad(data: &[u8]) -> [u8; 4] {
    [data[0], data[1], data[2], data[3]]
}

/// Reads a BOOTREPLY with its DHCP options.
///
/// # Errors
/// A [`ParseError`] for anything short, malformed or not a DHCP reply.
pub(super) fn parse_reply(buf: &[u8]) -> Result<Reply, ParseError> {
    if buf.len() < OPTIONS_AT {
        return Err(ParseError::Truncated(buf.len()));
    }
    if buf[0] != 2 {
        return Err(ParseError::NotAReply(buf[0]));
    }
    if buf[1] != 1 || buf[2] != 6 {
        return Err(ParseError::NotEthernet);
    }
    if buf[BOOTP_LEN..OPTIONS_AT] != COOKIE {
        return Err(ParseError::BadCookie);
    }
    let mut reply = Reply {
        xid: u32::from_be_bytes(quad(&buf[4..8])),
        yiaddr: quad(&buf[16..20]),
        ..Reply::default()
    };
    reply.chaddr.copy_from_slice(&buf[28..34]);
    let mut kind = None;
    let mut at = OPTIONS_AT;
    // A missing END is tolerated: the datagram's end ends the options too.
    while let Some(&code) = buf.get(at) {
        at += 1;
        match code {
            opt::PAD => continue,
            opt::END => break,
            _ => {}
        }
        let len = *buf.get(at).ok_or(ParseError::OptionOverrun(code))?;
        at += 1;
        let data = buf
            .get(at..at + usize::from(len))
            .ok_or(ParseError::OptionOverrun(code))?;
        at += usize::from(len);
        let exact = |want: u8| {
            if len == want {
                Ok(())
            } else {
                Err(ParseError::BadOptionLength(code, len))
            }
        };
        match code {
            opt::MESSAGE_TYPE => {
                exact(1)?;
                kind.get_or_insert(data[0]);
            }
            opt::SUBNET_MASK => {
                exact(4)?;
                reply.mask.get_or_insert(quad(data));
            }
            opt::ROUTER | opt::DNS => {
                if len == 0 || len % 4 != 0 {
                    return Err(ParseError::BadOptionLength(code, len));
                }
                let field = if code == opt::ROUTER {
                    &mut reply.router
                } else {
                    &mut reply.dns
                };
                field.get_or_insert(quad(data));
            }
            opt::LEASE_TIME => {
                exact(4)?;
                reply
                    .lease_secs
                    .get_or_insert(u32::from_be_bytes(quad(data)));
            }
            opt::SERVER_ID => {
                exact(4)?;
                reply.server_id.get_or_insert(quad(data));
            }
            _ => {}
        }
    }
    reply.kind = kind.ok_or(ParseError::NoMessageType)?;
    Ok(reply)
}

/// Builds a DISCOVER or REQUEST into `out` and returns its length ([`REQUEST_LEN`]).
///
/// `requested` goes into option 50 and `server` into option 54 when given.
pub(super) fn encode_request(
    out: &mut [u8; REQUEST_LEN],
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    requested: Option<[u8; 4]>,
    server: Option<[u8; 4]>,
) -> usize {
    out.fill(0);
    out[0] = 1; // BOOTREQUEST
    out[1] = 1; // Ethernet
    out[2] = 6;
    out[4..8].copy_from_slice(&xid.to_be_bytes());
    out[10] = 0x80; // flags: BROADCAST, so the answer reaches a socket without an address
    out[28..34].copy_from_slice(&mac);
    out[BOOTP_LEN..OPTIONS_AT].copy_from_slice(&COOKIE);
    let mut at = OPTIONS_AT;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&[opt::MESSAGE_TYPE, 1, kind]);
    let max = (REPLY_MAX as u16).to_be_bytes();
    put(&[opt::MAX_SIZE, 2, max[0], max[1]]);
    if let Some(ip) = requested {
        put(&[opt::REQUESTED_IP, 4]);
        put(&ip);
    }
    if let Some(ip) = server {
        put(&[opt::SERVER_ID, 4]);
        put(&ip);
    }
    put(&[
        opt::PARAMETERS,
        5,
        opt::SUBNET_MASK,
        opt::ROUTER,
        opt::DNS,
        opt::LEASE_TIME,
        opt::SERVER_ID,
    ]);
    put(&[opt::END]);
    REQUEST_LEN
}

/// What an acknowledged lease gives the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub addr: [u8; 4],
    /// Its prefix length (0 when the mask is missing or not contiguous, as upstream).
    pub prefix: u8,
    /// The first router.
    pub gateway: [u8; 4],
    /// The first DNS server.
    pub dns: [u8; 4],
    /// Lease time in seconds.
    pub lease_secs: u32,
}

impl Lease {
    /// The lease of an ACK, with upstream's checks and messages.
    ///
    /// # Errors
    /// `did not get DHCPACK`, `got zero YourIPAddr`, `got no Router`, `got no DNS`.
    pub(super) fn of(ack: &Reply) -> Result<Lease, String> {
        if ack.kind != kind::ACK {
            return Err("did not get DHCPACK".into());
        }
        if ack.yiaddr == [0; 4] {
            return Err("got zero YourIPAddr".into());
        }
        let gateway = ack.router.ok_or("got no Router")?;
        let dns = ack.dns.ok_or("got no DNS")?;
        Ok(Lease {
            addr: ack.yiaddr,
            prefix: ack.mask.map_or(0, prefix_len),
            gateway,
            dns,
            lease_secs: ack.lease_secs.unwrap_or(DEFAULT_LEASE_SECS),
        })
    }

    /// When to renew: 0.9 × the lease after `now`; `None` for an infinite lease.
    pub(super) fn renew_at(&self, now: Instant) -> Option<Instant> {
        if self.lease_secs == u32::MAX {
            return None;
        }
        now.checked_add(Duration::from_millis(u64::from(self.lease_secs) * 900))
    }
}

/// The prefix length of a contiguous netmask; 0 otherwise, as Go's `IPMask.Size()`.
fn prefix_len(mask: [u8; 4]) -> u8 {
    let m = u32::from_be_bytes(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) == 0 {
        ones as u8
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::tests::{MAC, full_options, reply};

    #[test]
    fn reads_an_ack() {
        let r = parse_reply(&reply(kind::ACK, &full_options())).unwrap();
        assert_eq!(
            r,
            Reply {
                xid: 0x1234_5678,
                chaddr: MAC,
                yiaddr: [10, 0, 3, 42],
                kind: kind::ACK,
                mask: Some([255, 255, 255, 0]),
                router: Some([10, 0, 3, 1]),
                dns: Some([10, 0, 3, 1]),
                lease_secs: Some(3600),
                server_id: Some([10, 0, 3, 1]),
            }
        );
        assert_eq!(
            Lease::of(&r),
            Ok(Lease {
                addr: [10, 0, 3, 42],
                prefix: 24,
                gateway: [10, 0, 3, 1],
                dns: [10, 0, 3, 1],
                lease_secs: 3600,
            })
        );
    }

    #[test]
    fn first_value_wins_and_end_may_be_missing() {
        // No END option, a repeated mask: the datagram's end closes the options, the first
        // mask counts.
        let r = parse_reply(&reply(
            kind::OFFER,
            &[1, 4, 255, 255, 0, 0, 1, 4, 255, 0, 0, 0, 53, 1, kind::ACK],
        ))
        .unwrap();
        assert_eq!((r.kind, r.mask), (kind::OFFER, Some([255, 255, 0, 0])));
        // Everything after END is ignored, even garbage.
        let mut b = reply(kind::ACK, &[255, 1, 200]);
        b.extend_from_slice(&[9; 40]);
        assert_eq!(parse_reply(&b).unwrap().mask, None);
    }

    #[test]
    fn rejects_malformed_replies() {
        let check = |bytes: &[u8], want: ParseError| {
            assert_eq!(parse_reply(bytes), Err(want), "{bytes:?}");
        };
        check(&[], ParseError::Truncated(0));
        check(&[2; 239], ParseError::Truncated(239));
        let good = reply(kind::ACK, &full_options());
        let mut b = good.clone();
        b[0] = 1;
        check(&b, ParseError::NotAReply(1));
        let mut b = good.clone();
        b[2] = 16;
        check(&b, ParseError::NotEthernet);
        let mut b = good.clone();
        b[237] = 0;
        check(&b, ParseError::BadCookie);
        // An option cut in its length byte and in its data.
        check(&reply(kind::ACK, &[3]), ParseError::OptionOverrun(3));
        check(
            &reply(kind::ACK, &[6, 8, 1, 1, 1, 1]),
            ParseError::OptionOverrun(6),
        );
        check(
            &reply(kind::ACK, &[1, 3, 255, 255, 255]),
            ParseError::BadOptionLength(1, 3),
        );
        check(
            &reply(kind::ACK, &[3, 0]),
            ParseError::BadOptionLength(3, 0),
        );
        check(
            &reply(kind::ACK, &[6, 6, 1, 1, 1, 1, 2, 2]),
            ParseError::BadOptionLength(6, 6),
        );
        check(
            &reply(kind::ACK, &[51, 2, 0, 1]),
            ParseError::BadOptionLength(51, 2),
        );
        check(
            &reply(kind::ACK, &[54, 5, 1, 2, 3, 4, 5]),
            ParseError::BadOptionLength(54, 5),
        );
        let mut b = good.clone();
        b[OPTIONS_AT + 1] = 2;
        check(&b, ParseError::BadOptionLength(53, 2));
        // BOOTP without a DHCP message type.
        let mut b = good[..OPTIONS_AT].to_vec();
        b.push(255);
        check(&b, ParseError::NoMessageType);
        // Every prefix of a good reply is an error or a reply, never a panic.
        for n in 0..good.len() {
            let _ = parse_reply(&good[..n]);
        }
    }

    #[test]
    fn lease_checks_read_like_upstream() {
        let base = parse_reply(&reply(kind::ACK, &full_options())).unwrap();
        let check = |r: Reply, want: &str| assert_eq!(Lease::of(&r), Err(want.to_string()));
        check(
            Reply {
                kind: kind::NAK,
                ..base
            },
            "did not get DHCPACK",
        );
        check(
            Reply {
                yiaddr: [0; 4],
                ..base
            },
            "got zero YourIPAddr",
        );
        check(
            Reply {
                router: None,
                ..base
            },
            "got no Router",
        );
        check(Reply { dns: None, ..base }, "got no DNS");
        let l = Lease::of(&Reply {
            lease_secs: None,
            mask: None,
            ..base
        })
        .unwrap();
        assert_eq!((l.lease_secs, l.prefix), (3600, 0));
    }

    #[test]
    fn renewal_time_is_nine_tenths_of_the_lease() {
        let now = Instant::now();
        let mut l = Lease::of(&parse_reply(&reply(kind::ACK, &full_options())).unwrap()).unwrap();
        assert_eq!(l.renew_at(now), Some(now + Duration::from_secs(3240)));
        l.lease_secs = u32::MAX;
        assert_eq!(l.renew_at(now), None);
        l.lease_secs = 0;
        assert_eq!(l.renew_at(now), Some(now));
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_len([255, 255, 255, 0]), 24);
        assert_eq!(prefix_len([255, 255, 255, 255]), 32);
        assert_eq!(prefix_len([0, 0, 0, 0]), 0);
        assert_eq!(prefix_len([255, 255, 240, 0]), 20);
        assert_eq!(prefix_len([255, 0, 255, 0]), 0);
    }

    #[test]
    fn requests_are_built_byte_for_byte() {
        let mut out = [0u8; REQUEST_LEN];
        let n = encode_request(&mut out, kind::DISCOVER, 0xdead_beef, MAC, None, None);
        assert_eq!(n, 300);
        assert_eq!(
            &out[..12],
            &[1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x80, 0]
        );
        assert_eq!(&out[28..34], &MAC);
        assert_eq!(&out[BOOTP_LEN..OPTIONS_AT], &COOKIE);
        assert_eq!(
            &out[OPTIONS_AT..OPTIONS_AT + 15],
            &[53, 1, 1, 57, 2, 5, 220, 55, 5, 1, 3, 6, 51, 54, 255]
        );
        assert!(out[OPTIONS_AT + 15..].iter().all(|&b| b == 0));
        let n = encode_request(
            &mut out,
            kind::REQUEST,
            7,
            MAC,
            Some([10, 0, 3, 42]),
            Some([10, 0, 3, 1]),
        );
        assert_eq!(n, 300);
        assert_eq!(
            &out[OPTIONS_AT..OPTIONS_AT + 27],
            &[
                53, 1, 3, 57, 2, 5, 220, 50, 4, 10, 0, 3, 42, 54, 4, 10, 0, 3, 1, 55, 5, 1, 3, 6,
                51, 54, 255
            ]
        );
    }
}
