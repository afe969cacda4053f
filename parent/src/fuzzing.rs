//! The bodies of the fuzz targets that take outside input in the parent (the command line and
//! the id-map parsers, the user-mode network's frames) and in the child (DHCP replies), shared by `fuzz/` and by the unit tests
//! that replay the committed corpus.
//! Each must end in a value or an error for any input, never in a panic, and checks what it can.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::cli::{Action, check, parse_with_lxc_default};
use crate::idmap::{User, parse_getsubids, parse_passwd, parse_subid_file};

/// The `rootlesskit` command line: the input, split on NUL bytes, is the argv.
pub fn cli(data: &[u8]) {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()))
        .collect();
    match parse_with_lxc_default(args, "/usr/lib/lxc/lxc-user-nic") {
        Ok(Action::Run(cfg)) => {
            assert!(!cfg.command.is_empty(), "a run always has a command");
            let (_warnings, result) = check(&cfg);
            match result {
                Err(msg) => assert!(!msg.is_empty()),
                Ok(settings) => {
                    assert!(settings.mtu <= 65521, "mtu {} passed", settings.mtu);
                    if let Some(c) = settings.cidr {
                        let host_bits = u32::MAX.checked_shr(u32::from(c.prefix)).unwrap_or(0);
                        assert!(
                            c.prefix <= 32 && u32::from(c.addr) & host_bits == 0,
                            "{c:?}"
                        );
                    }
                }
            }
        }
        Ok(Action::Help | Action::Version | Action::PrintSemver(_) | Action::Check { .. }) => {}
        Err(e) => {
            assert!(!e.message().is_empty());
            assert_eq!(e.usage_text("").is_some(), e.shows_usage());
        }
    }
}

/// /etc/subuid and /etc/subgid, getsubids output and /etc/passwd. The first four bytes pick
/// the uid, so uid matches happen as often as name matches.
pub fn subid(data: &[u8]) {
    let (uid, text) = match data {
        [a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) % 2048, rest),
        _ => (1000, data),
    };
    let text = String::from_utf8_lossy(text);
    let users = [
        User {
            uid,
            gid: uid,
            name: Some("tester".to_string()),
        },
        User {
            uid,
            gid: uid,
            name: None,
        },
        User {
            uid,
            gid: uid,
            name: Some(String::new()),
        },
    ];
    for user in &users {
        for shared in crate::check::shared_ranges(&text, "/etc/subuid", user) {
            assert!(shared.starts_with("/etc/subuid: "));
        }
        if let Ok(ranges) = parse_subid_file(&text, "/etc/subuid", user) {
            for (start, count) in ranges {
                assert!(count > 0 && start.checked_add(count).is_some());
            }
        }
    }
    if let Ok(ranges) = parse_getsubids(&text) {
        for (start, count) in ranges {
            assert!(count > 0 && start.checked_add(count).is_some());
        }
    }
    if let Some((name, _gid)) = parse_passwd(&text, uid) {
        assert!(!name.is_empty() && !name.contains(':'));
    }
}

/// `pasta --version` output: a release date, when one is read, is a real-looking day that a
/// `pasta `/`passt ` line spells.
pub fn pasta_version(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(d) = crate::net::pasta::version_date(&text) {
        assert!((20200101..21000000).contains(&d), "{d}");
        let (y, m, day) = (d / 10000, d / 100 % 100, d % 100);
        assert!(
            text.lines()
                .any(|l| (l.starts_with("pasta ") || l.starts_with("passt "))
                    && (l.contains(&format!("{y}_{m:02}_{day:02}"))
                        || l.contains(&format!("{y}{m:02}{day:02}")))),
            "{d} not in {text:?}"
        );
    }
}

/// An Ethernet frame from the namespace's tap, as the user-mode network parses it: whatever
/// parses must rebuild into the same transport fields.
pub fn usernet_frame(data: &[u8]) {
    use crate::usernet::wire::{self, Frame};
    let mut out = vec![0u8; data.len() + 64];
    match Frame::parse(data) {
        Frame::Udp(eth, ip, u) => {
            // The headers an ICMP error about this datagram quotes, and that error, which
            // checksums right and quotes the packet's own start.
            let mut q = [0u8; wire::QUOTE_MAX];
            let qn = wire::quote(eth.payload, &mut q);
            assert!(qn >= wire::IP_LEN + 8 && eth.payload.starts_with(&q[..qn]));
            let mut m = [0u8; 8 + wire::QUOTE_MAX];
            let mn = wire::put_unreachable(&mut m, 3, &q[..qn], &ip.dst, &ip.src);
            let initial = match wire::unmapped(&ip.src) {
                Some(_) => 0,
                None => wire::pseudo_sum_any(&ip.dst, &ip.src, wire::PROTO_ICMP6, mn),
            };
            assert_eq!((mn, wire::checksum(&m[..mn], initial)), (8 + qn, 0));
            let at = wire::UDP_LEN;
            out[at..at + u.payload.len()].copy_from_slice(u.payload);
            let n = wire::put_udp(
                &mut out,
                (ip.src, u.src_port),
                (ip.dst, u.dst_port),
                u.payload.len(),
            );
            let port_len = |i: wire::Ip<'_>| {
                wire::Udp::parse(&i).map(|u| (u.src_port, u.dst_port, u.payload.len()))
            };
            let again = match (wire::unmapped(&ip.src), wire::unmapped(&ip.dst)) {
                (Some(src), Some(dst)) => {
                    let mut pkt = vec![0u8; wire::IP_LEN + n];
                    wire::put_ipv4(&mut pkt, src, dst, wire::PROTO_UDP, n);
                    pkt[wire::IP_LEN..].copy_from_slice(&out[..n]);
                    wire::Ipv4::parse(&pkt).and_then(|i| port_len(i.into()))
                }
                _ => {
                    let mut pkt = vec![0u8; wire::IP6_LEN + n];
                    wire::put_ipv6(&mut pkt, &ip.src, &ip.dst, wire::PROTO_UDP, n, 64);
                    pkt[wire::IP6_LEN..].copy_from_slice(&out[..n]);
                    wire::Ip::parse_v6(&pkt).and_then(port_len)
                }
            };
            assert_eq!(again, Some((u.src_port, u.dst_port, u.payload.len())));
            if wire::DnsHeader::parse(u.payload).is_some() {
                let mut answer = [0u8; 1024];
                if let Some(n) =
                    wire::put_dns_failure(&mut answer, &u.payload[..u.payload.len().min(1024)], 2)
                {
                    assert!(n >= 12 && n <= u.payload.len());
                }
            }
        }
        Frame::Echo(_, _, echo) => {
            let n = wire::put_echo_reply(&mut out, &echo);
            assert_eq!(wire::checksum(&out[..n], 0), 0);
            // As a reply from a ping socket with another id, given back the request's.
            let a = wire::mapped([192, 0, 2, 1]);
            assert!(wire::restore_echo_reply(&mut out[..n], 0x1234, &a, &a));
            assert_eq!(
                (out[4], out[5], wire::checksum(&out[..n], 0)),
                (0x12, 0x34, 0)
            );
        }
        Frame::Icmp6(_, ip, m) => {
            // What we answer parses back with a right checksum.
            let n = if let Some(t) = m.ns_target() {
                wire::put_neighbor_advert(&mut out, &t, [2; 6], &t, &ip.src)
            } else if m.kind == 128 {
                wire::put_echo6_reply(&mut out, &m, &ip.dst, &ip.src)
            } else {
                wire::put_router_advert(&mut out, [2; 6], 1500, &ip.dst, &ip.dst, &ip.src)
            };
            let back = wire::Ip {
                src: if m.ns_target().is_some() {
                    m.ns_target().unwrap_or_default()
                } else {
                    ip.dst
                },
                dst: ip.src,
                proto: wire::PROTO_ICMP6,
                ttl: 255,
                payload: &out[..n],
            };
            assert!(wire::Icmp6::parse(&back).is_some());
        }
        Frame::Tcp(_, _, t) => {
            assert!(t.payload.len() <= data.len());
            assert!(t.wscale.is_none_or(|w| w <= 14));
        }
        Frame::Arp(..) | Frame::Other => {}
    }
    usernet_dns(data);
}

/// The input as the host's resolv.conf, and as a nameserver's answer to a query waiting for
/// it: the nameservers are at most three, port 53, a link-local one has its zone; a failure
/// answer is held back while another nameserver is left, anything else goes on.
fn usernet_dns(data: &[u8]) {
    use crate::usernet::{dns, wire};
    use std::net::SocketAddr;
    let text = String::from_utf8_lossy(data);
    let s = dns::Servers::from_resolv_conf(&text, |n| (n == "eth0").then_some(2));
    assert!(s.len() <= dns::MAX_NS && s.get(s.len()).is_none());
    for a in (0..s.len()).filter_map(|i| s.get(i)) {
        assert_eq!(a.port(), 53);
        assert_eq!(
            s.index(a).map(|i| s.get(i).map(|b| b.ip())),
            Some(Some(a.ip()))
        );
        if let SocketAddr::V6(a) = a {
            assert!(a.ip().to_ipv4_mapped().is_none());
            assert!(!a.ip().is_unicast_link_local() || a.scope_id() != 0);
        }
    }
    if let Some(h) = wire::DnsHeader::parse(data) {
        let now = std::time::Instant::now();
        let mut health = dns::Health::default();
        let mut p = dns::Pending::new();
        let flow = (1, 1);
        assert_eq!(p.ask(flow, h.id, data, &health, 2, now), Some(0));
        let v = p.answer(flow, h.id, 0, h.rcode, &mut health, 2, now);
        let failure = h.rcode == dns::SERVFAIL || h.rcode == dns::REFUSED;
        if failure && data.len() <= dns::QUERY_MAX {
            assert!(
                matches!(v, dns::Verdict::Resend(r) if r.server == 1),
                "{v:?}"
            );
            assert_eq!(
                p.answer(flow, h.id, 1, h.rcode, &mut health, 2, now),
                dns::Verdict::Pass
            );
        } else {
            assert_eq!(v, dns::Verdict::Pass);
        }
        assert_eq!(p.deadline(), None);
    }
}

/// `sys::goflag`, the flag parser every binary shares: the input, split on NUL bytes, is the argv,
/// read against a small table (`s` takes a value, `b` is a bool) until the flags end or fail;
/// the flags and the rest always account for every argument, and each value, once it is a
/// number's text, parses as Go's `Atoi` does exactly when Rust's `i64` parser accepts it.
pub fn goflag(data: &[u8]) {
    use sys::goflag::{Parser, Value, atoi, parse_int};
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()))
        .collect();
    let table = |name: &str| match name {
        "s" => Some(true),
        "b" => Some(false),
        _ => None,
    };
    let mut p = Parser::new(&args);
    loop {
        match p.next(table) {
            Ok(Some(flag)) => {
                assert!(flag.name == "s" || flag.name == "b");
                if let Value::Text(v) = flag.value {
                    let text = v.to_string_lossy();
                    assert_eq!(atoi(v.as_encoded_bytes()).ok(), text.parse::<i64>().ok());
                    let _ = parse_int(v.as_encoded_bytes());
                }
            }
            Ok(None) => break,
            Err(e) => {
                assert!(!e.message.is_empty());
                return;
            }
        }
    }
    let rest = p.rest();
    assert!(rest.len() <= args.len());
    assert_eq!(rest, &args[args.len() - rest.len()..]);
}

/// Runs `f` on every input the fuzzers kept for `target` (and every crash they found, once
/// fixed), so that `cargo test` replays the committed corpus; returns how many there were.
#[cfg(test)]
pub(crate) fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = format!("{}/../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        f(&std::fs::read(e.path()).unwrap());
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::replay;

    #[test]
    fn cli_corpus_replays() {
        replay("cli", super::cli);
        // A few hand-picked inputs, so the test means something before any corpus exists.
        for input in [
            &b"--net=host\0true"[..],
            b"-p\0",
            b"--mtu=0x10000\0sh",
            b"--copy-up=,,\0--\0x",
            b"\xff\xfe\0--pidns=maybe",
        ] {
            super::cli(input);
        }
    }

    #[test]
    fn goflag_replays_the_cli_corpus() {
        // The command lines the cli target found are the parser's best inputs too.
        replay("cli", super::goflag);
        replay("goflag", super::goflag);
        for input in [
            &b"-s\0-1\0--b=0\0x"[..],
            b"--s=+007\0-b\0--",
            b"-s\0\xff",
            b"---",
        ] {
            super::goflag(input);
        }
    }

    #[test]
    fn pasta_version_corpus_replays() {
        assert!(
            replay("pasta_version", super::pasta_version) > 0,
            "no pasta_version corpus"
        );
    }

    #[test]
    fn usernet_frame_corpus_replays() {
        assert!(
            replay("usernet_frame", super::usernet_frame) > 0,
            "no usernet_frame corpus"
        );
        // The seeds cover every kind of frame the stack handles.
        use crate::usernet::wire::Frame;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/usernet_frame");
        let mut kinds = [false; 6];
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let k = match Frame::parse(&data) {
                Frame::Arp(..) => 0,
                Frame::Echo(..) => 1,
                Frame::Udp(..) => 2,
                Frame::Tcp(..) => 3,
                Frame::Other => 4,
                Frame::Icmp6(..) => 5,
            };
            kinds[k] = true;
        }
        assert_eq!(kinds, [true; 6]);
    }

    /// Without cargo-fuzz at hand: the seeds with a few thousand random byte flips, cuts and
    /// length changes each, from a fixed xorshift stream.
    #[test]
    fn usernet_frame_mutations_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/usernet_frame");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let seed = std::fs::read(e.path()).unwrap();
            for _ in 0..3000 {
                let mut f = seed.clone();
                for _ in 0..1 + next() % 4 {
                    let r = next();
                    let at = (r >> 8) as usize % f.len().max(1);
                    match r % 4 {
                        0 if !f.is_empty() => f[at] ^= 1 << ((r >> 40) % 8),
                        1 if !f.is_empty() => f[at] = (r >> 32) as u8,
                        2 => f.truncate(at),
                        _ => f.extend_from_slice(&(r as u32).to_be_bytes()),
                    }
                }
                super::usernet_frame(&f);
            }
        }
    }

    #[test]
    fn subid_corpus_replays() {
        replay("subid", super::subid);
        for input in [
            &b"\0\0\0\0tester:100000:65536\n0:1:4294967295\n"[..],
            b"\xe8\x03\x00\x000: tester 1 2 3\n# x\n",
            b"root:x:0:0::/:/bin/sh\n",
        ] {
            super::subid(input);
        }
    }
}
