//! The port spec: its string form (`127.0.0.1:8080:80/tcp`), its validation against the ports
//! already published, and Go's `strconv.Atoi`, which every id and port on the command line goes
//! through.
//!
//! Upstream's grammar and messages are kept, with three of its bugs fixed on purpose:
//! a fourth `:`-separated part is rejected (upstream glued it onto the child port, so
//! `1.2.3.4:1:1.2.3.5:2:80/tcp` became child port 802); a bad child IP is reported as
//! `unexpected ChildIP` (upstream said ParentIP); and the parent and child port messages carry
//! their own labels (upstream swapped them). `invalid ParentPort: 0` prints the plain number,
//! where Go's `%q` of an int printed a quoted rune (`'\x00'`). A parent IP of the wrong family
//! for the protocol (`[::1]…/tcp4`) is refused when the spec is validated, with the text Go's
//! `net.Listen` gives upstream when it binds.

use std::net::{IpAddr, Ipv6Addr};

/// A forwarding request: the API's `Spec` object.
///
/// Ports are Go `int`s on the wire, so they are kept as `i64` until [`validate_port_spec`] has
/// checked that they lie in `1..=65535`; an empty string or a zero port means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSpec {
    /// One of `tcp tcp4 tcp6 udp udp4 udp6 sctp sctp4 sctp6` once validated.
    pub proto: String,
    /// IPv4 or IPv6 address to listen on; empty means every address.
    pub parent_ip: String,
    pub parent_port: i64,
    /// Where to connect inside the namespace; empty means the driver's default.
    pub child_ip: String,
    pub child_port: i64,
}

impl PortSpec {
    /// Go's `%v` of upstream's `port.Spec`, as its messages print a spec:
    /// `{tcp 127.0.0.1 8080 80 }` (proto, parent IP, parent port, child port, child IP).
    pub(crate) fn go_value(&self) -> String {
        format!(
            "{{{} {} {} {} {}}}",
            self.proto, self.parent_ip, self.parent_port, self.child_port, self.child_ip
        )
    }
}

/// A published port: the API's `Status` object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStatus {
    pub id: u32,
    /// The spec as the client gave it (a default child IP is not filled in).
    pub spec: PortSpec,
}

/// The protocols a spec may name (a driver may support fewer).
const PROTOS: [&str; 9] = [
    "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "sctp", "sctp4", "sctp6",
];

fn check_proto(proto: &str) -> Result<(), String> {
    if PROTOS.contains(&proto) {
        Ok(())
    } else {
        Err(format!("unknown proto: {}", quote(proto)))
    }
}

fn quote(s: &str) -> String {
    sys::golang::quote(s.as_bytes())
}

/// Go's `net.ParseIP(s) != nil`: dotted IPv4 without leading zeros, or IPv6 (with an embedded
/// IPv4 tail allowed) without a zone.
///
/// Written out rather than calling `IpAddr::from_str`, whose parser would cost `rootlessctl`
/// 3 KB; the tests check that both accept the same strings.
pub fn is_ip(s: &str) -> bool {
    let b = s.as_bytes();
    match b.iter().find(|&&c| matches!(c, b'.' | b':' | b'%')) {
        Some(b'.') => is_ipv4(b),
        Some(b':') => is_ipv6(b),
        _ => false,
    }
}

/// Four decimal fields of at most 255, without leading zeros.
fn is_ipv4(b: &[u8]) -> bool {
    let mut fields = 0;
    for part in b.split(|&c| c == b'.') {
        fields += 1;
        let valid = matches!(part.len(), 1..=3)
            && part.iter().all(u8::is_ascii_digit)
            && (part.len() == 1 || part[0] != b'0')
            && part.iter().fold(0u32, |n, &c| n * 10 + u32::from(c - b'0')) <= 255;
        if !valid {
            return false;
        }
    }
    fields == 4
}

/// Go's `netip` IPv6 grammar: groups of 1 to 4 hex digits, one `::` standing for at least one
/// zero group, an IPv4 address in place of the last two groups.
fn is_ipv6(mut s: &[u8]) -> bool {
    let mut filled = 0;
    let mut ellipsis = false;
    if let Some(rest) = s.strip_prefix(b"::") {
        if rest.is_empty() {
            return true;
        }
        (s, ellipsis) = (rest, true);
    }
    while filled < 16 {
        let digits = s.iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if !(1..=4).contains(&digits) {
            return false;
        }
        if s.get(digits) == Some(&b'.') {
            if (!ellipsis && filled != 12) || filled + 4 > 16 || !is_ipv4(s) {
                return false;
            }
            s = &[];
            filled += 4;
            break;
        }
        filled += 2;
        s = &s[digits..];
        match s {
            [] => break,
            [b':'] => return false,
            [b':', b':', rest @ ..] => {
                if ellipsis {
                    return false;
                }
                (s, ellipsis) = (rest, true);
                if s.is_empty() {
                    break;
                }
            }
            [b':', rest @ ..] => s = rest,
            _ => return false,
        }
    }
    s.is_empty() && (filled < 16) == ellipsis
}

/// The address a spec's IP text names, as the drivers use it: Go's `net.ParseIP` followed by
/// `To4()` where that applies, so an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4
/// address. `None` for text [`is_ip`] refuses (and for the empty "not given").
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    if !is_ip(s) {
        return None;
    }
    s.parse().ok().map(|ip: IpAddr| ip.to_canonical())
}

/// Go's address filter for `net.Listen(proto, …)`, applied to the parent IP: `tcp4`/`udp4`/
/// `sctp4` take only an address with an IPv4 form (IPv4 or IPv4-mapped), the `6` protocols only
/// one without; `::` passes for the `4` protocols too (Go adds `0.0.0.0` beside it). The drivers
/// run it before they bind or ask slirp4netns, and `cli` for every `-p`, so a mismatch is
/// refused (400, or at start) and never bound to some other address. The child IP may be of
/// either family, as upstream dials it without the `4` or `6`.
///
/// # Errors
/// Go's text: `listen tcp4: address ::1: no suitable address found`.
pub(crate) fn check_family(spec: &PortSpec) -> Result<(), String> {
    let Some(ip) = parse_ip(&spec.parent_ip) else {
        return Ok(());
    };
    let fits = match spec.proto.as_bytes().last() {
        Some(b'4') => ip.is_ipv4() || ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Some(b'6') => ip.is_ipv6(),
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "listen {}: address {}: no suitable address found",
            spec.proto, spec.parent_ip
        ))
    }
}

/// Go's `strconv.Atoi` with Go's error text.
///
/// # Errors
/// Go's texts: `strconv.Atoi: parsing "x": invalid syntax`,
/// `strconv.Atoi: parsing "99999999999999999999": value out of range` (overflow is reported
/// as soon as it happens, before any later bad character, as Go does).
pub fn go_atoi(s: &str) -> Result<i64, String> {
    sys::goflag::atoi(s.as_bytes()).map_err(|e| {
        let what = match e {
            sys::goflag::IntError::Syntax => "invalid syntax",
            sys::goflag::IntError::Range => "value out of range",
        };
        format!("strconv.Atoi: parsing {}: {what}", quote(s))
    })
}

/// Parses `<parentIP>:<parentPort>[:<childIP>]:<childPort>/<proto>`.
///
/// IPv6 addresses go in brackets (`[::1]:8080:[::2]:80/udp`); the parent IP may be empty
/// (`:8080:80/tcp`); whitespace before the child port is ignored, as upstream's tokenizer
/// does. Only the syntax is checked here (port ranges and conflicts are
/// [`validate_port_spec`]'s job, run by the driver).
///
/// # Errors
/// Upstream's texts with the labels fixed, e.g. `missing proto in PortSpec string: "8080"`,
/// `invalid PortSpec string: "1:2/x": unknown proto: "x"`, `unexpected PortSpec string: "…"`,
/// `unexpected ParentIP in PortSpec string: "8080:80/tcp"`,
/// `unexpected ParentPort in PortSpec string: "…": strconv.Atoi: parsing "x": invalid syntax`.
pub fn parse_port_spec(s: &str) -> Result<PortSpec, String> {
    let shown = quote(s);
    let Some(slash) = s.rfind('/') else {
        return Err(format!("missing proto in PortSpec string: {shown}"));
    };
    let proto = &s[slash + 1..];
    check_proto(proto).map_err(|e| format!("invalid PortSpec string: {shown}: {e}"))?;
    // A valid proto holds no ':', so the last ':' comes before the '/'.
    let Some(colon) = s.rfind(':') else {
        return Err(format!("unexpected PortSpec string: {shown}"));
    };
    let unexpected = || format!("unexpected PortSpec string: {shown}");
    let child_port_text = &s[colon + 1..slash];

    // The rest holds the parent IP, the parent port and maybe the child IP, separated by ':'
    // outside brackets. A bracketed address must make up its whole part.
    let mut parts: [String; 3] = Default::default();
    let mut index = 0;
    let mut bracket = BracketState::Outside;
    for c in s[..colon].chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        match (bracket, c) {
            (BracketState::Inside, ']') => bracket = BracketState::Closed,
            (BracketState::Inside, c) => parts[index].push(c),
            (BracketState::Outside, '[') if parts[index].is_empty() => {
                bracket = BracketState::Inside
            }
            (BracketState::Outside | BracketState::Closed, ':') => {
                index += 1;
                if index == parts.len() {
                    return Err(unexpected());
                }
                bracket = BracketState::Outside;
            }
            (BracketState::Outside, c) if c != '[' && c != ']' => parts[index].push(c),
            _ => return Err(unexpected()),
        }
    }
    if bracket == BracketState::Inside {
        return Err(unexpected());
    }
    let [parent_ip, parent_port_text, child_ip] = parts;
    if !parent_ip.is_empty() && !is_ip(&parent_ip) {
        return Err(format!("unexpected ParentIP in PortSpec string: {shown}"));
    }
    if !child_ip.is_empty() && !is_ip(&child_ip) {
        return Err(format!("unexpected ChildIP in PortSpec string: {shown}"));
    }
    let parent_port = go_atoi(&parent_port_text)
        .map_err(|e| format!("unexpected ParentPort in PortSpec string: {shown}: {e}"))?;
    let child_port = go_atoi(child_port_text)
        .map_err(|e| format!("unexpected ChildPort in PortSpec string: {shown}: {e}"))?;
    Ok(PortSpec {
        proto: proto.to_string(),
        parent_ip,
        parent_port,
        child_ip,
        child_port,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BracketState {
    Outside,
    Inside,
    /// Just after `]`: only `:` or the end may follow.
    Closed,
}

/// Upstream's `ValidatePortSpec`: the proto, both IPs and both ports, then conflicts.
/// The parent IP's family is [`check_family`]'s, run by the drivers and for `-p`.
///
/// Two specs conflict when proto, parent IP and parent port are identical as written: `tcp`
/// and `tcp4`, or `""` and `0.0.0.0`, never conflict here (the bind may still fail). Child
/// ports may overlap freely. Drivers call this under the lock that guards their port table.
///
/// # Errors
/// `unknown proto: "x"`, `invalid ParentIP: "x"`, `invalid ChildIP: "x"`,
/// `invalid ParentPort: 0` (upstream printed the number as a quoted rune),
/// `invalid ChildPort: 70000`, `conflict with ID 3`.
pub(crate) fn validate_port_spec(spec: &PortSpec, existing: &[PortStatus]) -> Result<(), String> {
    check_proto(&spec.proto)?;
    if !spec.parent_ip.is_empty() && !is_ip(&spec.parent_ip) {
        return Err(format!("invalid ParentIP: {}", quote(&spec.parent_ip)));
    }
    if !spec.child_ip.is_empty() && !is_ip(&spec.child_ip) {
        return Err(format!("invalid ChildIP: {}", quote(&spec.child_ip)));
    }
    if !(1..=65535).contains(&spec.parent_port) {
        return Err(format!("invalid ParentPort: {}", spec.parent_port));
    }
    if !(1..=65535).contains(&spec.child_port) {
        return Err(format!("invalid ChildPort: {}", spec.child_port));
    }
    for p in existing {
        if p.spec.proto == spec.proto
            && p.spec.parent_ip == spec.parent_ip
            && p.spec.parent_port == spec.parent_port
        {
            return Err(format!("conflict with ID {}", p.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(proto: &str, parent_ip: &str, pp: i64, child_ip: &str, cp: i64) -> PortSpec {
        PortSpec {
            proto: proto.into(),
            parent_ip: parent_ip.into(),
            parent_port: pp,
            child_ip: child_ip.into(),
            child_port: cp,
        }
    }

    fn check(input: &str, expect: Result<PortSpec, &str>) {
        assert_eq!(
            parse_port_spec(input),
            expect.map_err(str::to_string),
            "input {input:?}"
        );
    }

    #[test]
    fn parses_upstream_examples() {
        check(
            "127.0.0.1:8080:80/tcp",
            Ok(spec("tcp", "127.0.0.1", 8080, "", 80)),
        );
        check(
            "127.0.0.1:8080:80/tcp4",
            Ok(spec("tcp4", "127.0.0.1", 8080, "", 80)),
        );
        check(
            "127.0.0.1:8080:10.0.2.100:80/tcp",
            Ok(spec("tcp", "127.0.0.1", 8080, "10.0.2.100", 80)),
        );
        check("[::1]:8080:80/tcp", Ok(spec("tcp", "::1", 8080, "", 80)));
        check(
            "[::1]:8080:[::2]:80/udp",
            Ok(spec("udp", "::1", 8080, "::2", 80)),
        );
        check(":8080:80/tcp", Ok(spec("tcp", "", 8080, "", 80)));
        check(
            "0.0.0.0:2379:2379/tcp",
            Ok(spec("tcp", "0.0.0.0", 2379, "", 2379)),
        );
        check(
            " 127.0.0.1 : 80 :80/sctp6",
            Ok(spec("sctp6", "127.0.0.1", 80, "", 80)),
        );
        check(
            "[::1] :1:[ fe80::1 ]:2/udp6",
            Ok(spec("udp6", "::1", 1, "fe80::1", 2)),
        );
        // Atoi accepts a sign and leading zeros; the range is validated later.
        check("1.2.3.4:+08:-1/udp", Ok(spec("udp", "1.2.3.4", 8, "", -1)));
        check("1.2.3.4:0:0/tcp", Ok(spec("tcp", "1.2.3.4", 0, "", 0)));
    }

    #[test]
    fn rejects_with_upstream_messages() {
        check("bad", Err(r#"missing proto in PortSpec string: "bad""#));
        check("8080", Err(r#"missing proto in PortSpec string: "8080""#));
        check(
            "127.0.0.1:8080:80/tcp,127.0.0.1:4040:40/tcp",
            Err(r#"unexpected PortSpec string: "127.0.0.1:8080:80/tcp,127.0.0.1:4040:40/tcp""#),
        );
        check(
            "1:2/TCP",
            Err(r#"invalid PortSpec string: "1:2/TCP": unknown proto: "TCP""#),
        );
        check("80/tcp", Err(r#"unexpected PortSpec string: "80/tcp""#));
        check(
            "8080:80/tcp",
            Err(r#"unexpected ParentIP in PortSpec string: "8080:80/tcp""#),
        );
        check(
            "1.2.3.4:1:nope:80/tcp",
            Err(r#"unexpected ChildIP in PortSpec string: "1.2.3.4:1:nope:80/tcp""#),
        );
        check(
            "1.2.3.4:x:80/tcp",
            Err(
                r#"unexpected ParentPort in PortSpec string: "1.2.3.4:x:80/tcp": strconv.Atoi: parsing "x": invalid syntax"#,
            ),
        );
        check(
            "1.2.3.4:80:x/tcp",
            Err(
                r#"unexpected ChildPort in PortSpec string: "1.2.3.4:80:x/tcp": strconv.Atoi: parsing "x": invalid syntax"#,
            ),
        );
        check(
            "1.2.3.4::80/tcp",
            Err(
                r#"unexpected ParentPort in PortSpec string: "1.2.3.4::80/tcp": strconv.Atoi: parsing "": invalid syntax"#,
            ),
        );
        check(
            "1.2.3.4:80: 80/tcp",
            Err(
                r#"unexpected ChildPort in PortSpec string: "1.2.3.4:80: 80/tcp": strconv.Atoi: parsing " 80": invalid syntax"#,
            ),
        );
        check(
            "127.000.0.1:1:1/tcp",
            Err(r#"unexpected ParentIP in PortSpec string: "127.000.0.1:1:1/tcp""#),
        );
        check(
            "[fe80::1%eth0]:1:1/tcp",
            Err(r#"unexpected ParentIP in PortSpec string: "[fe80::1%eth0]:1:1/tcp""#),
        );
    }

    #[test]
    fn rejects_what_upstream_misparsed() {
        // Upstream glued a fourth part onto the child port (child port 802 here).
        check(
            "1.2.3.4:1:1.2.3.5:2:80/tcp",
            Err(r#"unexpected PortSpec string: "1.2.3.4:1:1.2.3.5:2:80/tcp""#),
        );
        check(
            "1.2.3.4:1:1.2.3.5::80/tcp",
            Err(r#"unexpected PortSpec string: "1.2.3.4:1:1.2.3.5::80/tcp""#),
        );
        // Brackets must enclose a whole part and be closed.
        for bad in [
            "[::1:8080:80/tcp",
            "[::1]8080:80/tcp",
            "1[::1]:8080:80/tcp",
            "::1]:8080:80/tcp",
            "[[::1]]:8080:80/tcp",
        ] {
            check(
                bad,
                Err(&format!("unexpected PortSpec string: {}", quote(bad))),
            );
        }
    }

    #[test]
    fn ip_syntax_matches_the_standard_parser() {
        let check = |s: &str| assert_eq!(is_ip(s), s.parse::<std::net::IpAddr>().is_ok(), "{s:?}");
        for s in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.1.1.1",
            "1.1.1",
            "1.1.1.1.",
            "1..1.1",
            "1.1.1.1.1",
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "1::2::3",
            ":1::",
            "1:",
            ":::",
            "12345::",
            "0000:0:0:0:0:0:0:0",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3.4",
            "1::1.2.3.4",
            "::1.2.3",
            "::1.2.3.04",
            "fe80::1%eth0",
            "FE80::ABCD",
            "g::",
            "",
            "1.2.3.4:80",
            "[::1]",
            " ::1",
            "::1 ",
            "1:2:3:4:5:6::1.2.3.4",
            "::1.2.3.4:1",
        ] {
            check(s);
        }
        // Every short string over the characters that matter.
        let alphabet = b"0f:.1%";
        let mut buf = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..alphabet.len().pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                check(std::str::from_utf8(&buf).unwrap());
            }
        }
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_form() {
        let v4 = |s: &str| Some(IpAddr::V4(s.parse().unwrap()));
        let v6 = |s: &str| Some(IpAddr::V6(s.parse().unwrap()));
        assert_eq!(parse_ip("::ffff:127.0.0.1"), v4("127.0.0.1"));
        assert_eq!(parse_ip("::FFFF:7f00:1"), v4("127.0.0.1"));
        assert_eq!(parse_ip("0:0:0:0:0:ffff:10.0.2.100"), v4("10.0.2.100"));
        assert_eq!(parse_ip("::ffff:0.0.0.0"), v4("0.0.0.0"));
        assert_eq!(parse_ip("1.2.3.4"), v4("1.2.3.4"));
        // Go's To4() maps only ::ffff:0:0/96, not the old IPv4-compatible form.
        assert_eq!(parse_ip("::127.0.0.1"), v6("::127.0.0.1"));
        assert_eq!(parse_ip("::1"), v6("::1"));
        assert_eq!(parse_ip("::fffe:127.0.0.1"), v6("::fffe:7f00:1"));
        for bad in ["", "[::1]", "127.000.0.1", "fe80::1%eth0", "::ffff:1.2.3"] {
            assert_eq!(parse_ip(bad), None, "{bad:?}");
        }
        // In a spec, brackets and all.
        check(
            "[::ffff:127.0.0.1]:8080:[::ffff:10.0.2.100]:80/tcp4",
            Ok(spec(
                "tcp4",
                "::ffff:127.0.0.1",
                8080,
                "::ffff:10.0.2.100",
                80,
            )),
        );
    }

    #[test]
    fn parent_ip_must_fit_the_protos_family() {
        let check = |proto: &str, parent_ip: &str, child_ip: &str, expect: Result<(), String>| {
            let s = spec(proto, parent_ip, 8080, child_ip, 80);
            assert_eq!(check_family(&s), expect, "{s:?}");
        };
        let refused = |proto: &str, ip: &str| {
            Err(format!(
                "listen {proto}: address {ip}: no suitable address found"
            ))
        };
        for (proto, ip) in [
            ("tcp4", "::1"),
            ("udp4", "2001:db8::1"),
            ("sctp4", "::1"),
            ("tcp4", "::127.0.0.1"),
            ("tcp6", "127.0.0.1"),
            ("udp6", "0.0.0.0"),
            ("tcp6", "::ffff:127.0.0.1"),
            ("udp6", "::ffff:0.0.0.0"),
        ] {
            check(proto, ip, "", refused(proto, ip));
        }
        for (proto, ip) in [
            ("tcp4", ""),
            ("tcp4", "127.0.0.1"),
            ("tcp4", "::ffff:127.0.0.1"),
            ("udp4", "::ffff:0.0.0.0"),
            // Go adds 0.0.0.0 beside "::", so `tcp4` on "::" listens there.
            ("tcp4", "::"),
            ("tcp6", ""),
            ("tcp6", "::"),
            ("udp6", "::1"),
            ("tcp", "::1"),
            ("udp", "127.0.0.1"),
            ("tcp", "::ffff:127.0.0.1"),
        ] {
            check(proto, ip, "", Ok(()));
        }
        // The child IP is dialled without the 4 or 6: either family will do.
        check("tcp4", "127.0.0.1", "::1", Ok(()));
        check("tcp6", "::1", "10.0.2.100", Ok(()));
    }

    #[test]
    fn atoi_matches_go() {
        let ok = |s: &str, n: i64| assert_eq!(go_atoi(s), Ok(n), "{s:?}");
        let err = |s: &str, e: &str| assert_eq!(go_atoi(s), Err(e.to_string()), "{s:?}");
        ok("0", 0);
        ok("+7", 7);
        ok("-007", -7);
        ok("9223372036854775807", i64::MAX);
        ok("-9223372036854775808", i64::MIN);
        err("", r#"strconv.Atoi: parsing "": invalid syntax"#);
        err("-", r#"strconv.Atoi: parsing "-": invalid syntax"#);
        err("1_000", r#"strconv.Atoi: parsing "1_000": invalid syntax"#);
        err(" 1", r#"strconv.Atoi: parsing " 1": invalid syntax"#);
        err("0x10", r#"strconv.Atoi: parsing "0x10": invalid syntax"#);
        err(
            "9223372036854775808",
            r#"strconv.Atoi: parsing "9223372036854775808": value out of range"#,
        );
        err(
            "-9223372036854775809",
            r#"strconv.Atoi: parsing "-9223372036854775809": value out of range"#,
        );
        // Overflow is noticed before the bad character that follows it.
        err(
            "99999999999999999999x",
            r#"strconv.Atoi: parsing "99999999999999999999x": value out of range"#,
        );
        err("9x", r#"strconv.Atoi: parsing "9x": invalid syntax"#);
    }

    fn status(id: u32, proto: &str, ip: &str, port: i64) -> PortStatus {
        PortStatus {
            id,
            spec: spec(proto, ip, port, "", port),
        }
    }

    #[test]
    fn validates_like_upstream() {
        let existing = [
            status(1, "tcp", "", 80),
            status(2, "tcp", "10.10.10.10", 8080),
        ];
        let base = spec("tcp", "127.0.0.1", 1001, "", 1001);
        let check = |s: PortSpec, expect: Result<(), &str>| {
            assert_eq!(
                validate_port_spec(&s, &existing),
                expect.map_err(str::to_string),
                "{s:?}"
            );
        };
        for p in ["", "NaN", "TCP", "tcp "] {
            let s = PortSpec {
                proto: p.into(),
                ..base.clone()
            };
            check(s, Err(&format!("unknown proto: {}", quote(p))));
        }
        for p in ["udp", "tcp", "sctp", "udp6", "tcp4"] {
            check(
                PortSpec {
                    proto: p.into(),
                    ..base.clone()
                },
                Ok(()),
            );
        }
        check(
            PortSpec {
                parent_ip: "invalid".into(),
                ..base.clone()
            },
            Err(r#"invalid ParentIP: "invalid""#),
        );
        check(
            PortSpec {
                child_ip: "invalid".into(),
                ..base.clone()
            },
            Err(r#"invalid ChildIP: "invalid""#),
        );
        for (p, text) in [
            (-200, "-200"),
            (0, "0"),
            (65536, "65536"),
            (1000000, "1000000"),
        ] {
            check(
                PortSpec {
                    parent_port: p,
                    ..base.clone()
                },
                Err(&format!("invalid ParentPort: {text}")),
            );
            check(
                PortSpec {
                    child_port: p,
                    ..base.clone()
                },
                Err(&format!("invalid ChildPort: {text}")),
            );
        }
        for p in [1, 20, 500, 1337, 65000, 65535] {
            check(
                PortSpec {
                    parent_port: p,
                    ..base.clone()
                },
                Ok(()),
            );
            check(
                PortSpec {
                    child_port: p,
                    ..base.clone()
                },
                Ok(()),
            );
        }
        // Conflicts need the same proto, parent IP and parent port, literally.
        check(spec("udp", "", 80, "", 80), Ok(()));
        check(spec("tcp4", "", 80, "", 80), Ok(()));
        check(spec("tcp", "0.0.0.0", 80, "", 80), Ok(()));
        check(spec("tcp", "10.10.10.11", 8080, "", 8080), Ok(()));
        check(spec("tcp", "10.10.10.10", 8081, "", 8080), Ok(()));
        check(spec("tcp", "", 80, "", 90), Err("conflict with ID 1"));
        check(
            spec("tcp", "10.10.10.10", 8080, "1.2.3.4", 1),
            Err("conflict with ID 2"),
        );
        // The field checks come before the conflict check.
        check(
            spec("tcp", "", 80, "bad", 90),
            Err(r#"invalid ChildIP: "bad""#),
        );
    }
}
