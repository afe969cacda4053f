//! The pesto port driver (`--port-driver=pesto`, with `--net=pasta`): every port is a rule in
//! the running pasta's forwarding table, added and deleted by passt's own client `pesto` over
//! pasta's control socket (`$STATE_DIR/pasta.sock`, pasta's `--conf-path`). pasta listens on
//! the host and forwards to the namespace's address, keeping the client's source address.
//!
//! pesto's protocol is passt's internal business: packed native-endian structs that pesto and
//! pasta build from the same headers (it fetches the whole table, edits it and sends it back),
//! versioned, and version 2 dropped version 1 without a fallback. The installed `pesto` always
//! speaks its own pasta's version, so we run the program rather than speak the protocol.
//! Each call is short (pasta answering on a local socket); like the slirp4netns driver's socket
//! calls it runs in the parent's loop, and one that takes longer than [`CALL_LIMIT`] is killed.
//! A pasta restarted by `--restart-net-driver` starts with none of these rules:
//! [`PestoPorts::reapply`] adds them again, under the same ids.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::slirp4netns::{NotYet, spec_text};
use super::spec::{check_family, parse_ip};
use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};
use crate::exec;

/// The client program, looked up in `$PATH` (it comes with pasta in the passt package).
pub(crate) const BINARY: &str = "pesto";
/// How long one pesto call may take before it is killed (it takes milliseconds against a pasta
/// that answers).
pub(crate) const CALL_LIMIT: Duration = Duration::from_secs(2);

/// The driver; shared with the API server.
pub(crate) struct PestoPorts {
    binary: PathBuf,
    socket: PathBuf,
    /// The namespace's IPv4 address, the only IPv4 child IP pasta can forward to.
    child_ip: IpAddr,
    /// The namespace's IPv6 address with `--ipv6`.
    child_ip6: Option<IpAddr>,
    state: RefCell<State>,
}

struct State {
    next_id: u32,
    /// Each published port with the pesto rule (`-t`/`-u` and its spec) that deletes it.
    ports: Vec<(PortStatus, &'static str, String)>,
}

impl PestoPorts {
    /// A driver running `binary` against pasta's control `socket`, for a namespace with the
    /// address `child_ip` (and `child_ip6` with `--ipv6`).
    pub(crate) fn new(
        binary: PathBuf,
        socket: PathBuf,
        child_ip: IpAddr,
        child_ip6: Option<IpAddr>,
    ) -> PestoPorts {
        PestoPorts {
            binary,
            socket,
            child_ip,
            child_ip6,
            state: RefCell::new(State {
                next_id: 1,
                ports: Vec::new(),
            }),
        }
    }

    /// `pesto <op> <-t|-u> <rule> <socket>`; pesto's own words when it fails.
    fn call(&self, op: &str, flag: &str, rule: &str) -> Result<(), CallError> {
        let failed = |text: String| CallError {
            text,
            timed_out: false,
        };
        let args: Vec<OsString> = vec![
            op.into(),
            flag.into(),
            rule.into(),
            self.socket.clone().into_os_string(),
        ];
        let ran = exec::run_with_output_within(&self.binary, &args, CALL_LIMIT).map_err(failed)?;
        let Some((status, out)) = ran else {
            return Err(CallError {
                text: format!("pesto {op} {flag} {rule}: no answer within {CALL_LIMIT:?}, killed"),
                timed_out: true,
            });
        };
        if status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out);
        let said: Vec<&str> = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut text = format!("pesto {op} {flag} {rule}: {}", exec::exit_text(status));
        if !said.is_empty() {
            text.push_str(": ");
            text.push_str(&said.join("; "));
        }
        Err(failed(text))
    }
}

/// Why a pesto call failed: the words for the user, and whether it was killed for taking
/// longer than [`CALL_LIMIT`].
struct CallError {
    text: String,
    timed_out: bool,
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.text
    }
}

impl PestoPorts {
    /// After pasta was restarted: adds every published port to the new pasta, keeping its id.
    /// A port pasta refuses now is dropped, with a warning for each; after a call that timed
    /// out the rest are not tried (and dropped too), so this blocks for at most about
    /// [`CALL_LIMIT`] more than the calls take.
    ///
    /// # Errors
    /// [`NotYet::Listening`] while nothing accepts on pasta's control socket yet; nothing
    /// changed then.
    pub(crate) fn reapply(&self) -> Result<Vec<String>, NotYet> {
        drop(std::os::unix::net::UnixStream::connect(&self.socket).map_err(|_| NotYet::Listening)?);
        let mut state = self.state.borrow_mut();
        let mut warnings = Vec::new();
        let mut stuck = None;
        state.ports.retain(|(status, flag, rule)| {
            let added = match &stuck {
                Some(why) => Err(format!("not tried after {why}")),
                None => self.call("-A", flag, rule).map_err(|e| {
                    if e.timed_out {
                        stuck = Some(e.text.clone());
                    }
                    e.text
                }),
            };
            if let Err(e) = &added {
                warnings.push(format!(
                    "port {} (id {}) is no longer forwarded: {e}",
                    spec_text(&status.spec),
                    status.id
                ));
            }
            added.is_ok()
        });
        Ok(warnings)
    }
}

/// pesto's flag and rule for a spec: `-t` or `-u`, and `[ADDRESS/]PARENT:CHILD`.
///
/// The parent IP is written in its IPv4 form when it has one (an IPv4-mapped address too).
/// Without `--ipv6` pasta runs IPv4-only, and an address-less rule would be a dual-stack one,
/// which passt 2026_05_07 refuses there (upstream #591), so every IPv4-only rule names
/// `0.0.0.0` at least. With `--ipv6`, `tcp`/`udp` on a wildcard (`""`, `0.0.0.0`, `::`) is
/// pasta's dual-stack rule, as the builtin driver listens on both families for them.
///
/// # Errors
/// An IPv6 rule without `--ipv6`, a protocol pasta cannot forward.
pub(crate) fn rule(spec: &PortSpec, ipv6: bool) -> Result<(&'static str, String), String> {
    let proto = spec.proto.as_str();
    let flag = match proto {
        "tcp" | "tcp4" | "tcp6" => "-t",
        "udp" | "udp4" | "udp6" => "-u",
        _ => return Err(format!("unsupported protocol: {proto}")),
    };
    let family = proto.as_bytes()[3..].first().copied();
    let parent = parse_ip(&spec.parent_ip);
    let v6_parent = matches!(parent, Some(IpAddr::V6(ip)) if !ip.is_unspecified());
    if !ipv6 && (family == Some(b'6') || v6_parent) {
        // Upstream's words, with the parent IP it defaults an empty one to.
        let parent_ip = match spec.parent_ip.as_str() {
            "" => "::",
            ip => ip,
        };
        return Err(format!(
            "IPv6 port forwarding (proto {}, parent IP {}) requires --ipv6",
            go_quote(proto),
            go_quote(parent_ip)
        ));
    }
    let wildcard = parent.is_none_or(|ip| ip.is_unspecified());
    let address = match (family, parent) {
        (Some(b'4'), _) if wildcard => Some("0.0.0.0".to_string()),
        (Some(b'6'), _) if wildcard => Some("::".to_string()),
        (_, _) if wildcard => (!ipv6).then(|| "0.0.0.0".to_string()),
        (_, ip) => ip.map(|ip| ip.to_string()),
    };
    let ports = format!("{}:{}", spec.parent_port, spec.child_port);
    Ok((
        flag,
        match address {
            Some(a) => format!("{a}/{ports}"),
            None => ports,
        },
    ))
}

impl PortDriver for PestoPorts {
    fn info(&self) -> PortDriverInfo {
        let mut protos = vec!["tcp", "tcp4", "udp", "udp4"];
        if self.child_ip6.is_some() {
            protos.extend(["tcp6", "udp6"]);
        }
        PortDriverInfo {
            driver: "pesto".into(),
            protos: protos.into_iter().map(String::from).collect(),
            // pasta forwards to the namespace's own address, never to its loopback.
            disallow_loopback_child_ip: true,
        }
    }

    fn add(&self, spec: PortSpec) -> Result<PortStatus, String> {
        let mut state = self.state.borrow_mut();
        let listed: Vec<PortStatus> = state.ports.iter().map(|(s, _, _)| s.clone()).collect();
        validate_port_spec(&spec, &listed)?;
        check_family(&spec)?;
        if !spec.child_ip.is_empty() {
            let got = parse_ip(&spec.child_ip);
            if got != Some(self.child_ip) && (got.is_none() || got != self.child_ip6) {
                // Upstream's words, which name the IPv4 address (ours also takes the IPv6 one
                // with --ipv6).
                return Err(format!(
                    "unsupported ChildIP {}: the pesto port driver only supports the namespace address {}",
                    go_quote(&spec.child_ip),
                    go_quote(&self.child_ip.to_string())
                ));
            }
        }
        let (flag, rule) = rule(&spec, self.child_ip6.is_some())?;
        self.call("-A", flag, &rule)?;
        let id = state.next_id;
        state.next_id += 1;
        let status = PortStatus { id, spec };
        state.ports.push((status.clone(), flag, rule));
        Ok(status)
    }

    fn list(&self) -> Vec<PortStatus> {
        let state = self.state.borrow();
        state.ports.iter().map(|(s, _, _)| s.clone()).collect()
    }

    fn remove(&self, id: u32) -> Result<(), String> {
        let mut state = self.state.borrow_mut();
        let Some(at) = state.ports.iter().position(|(s, _, _)| s.id == id) else {
            return Err(format!("invalid ID: {id}"));
        };
        let (_, flag, rule) = &state.ports[at];
        self.call("-D", flag, rule)?;
        state.ports.remove(at);
        Ok(())
    }
}

/// Looks `pesto` up in `$PATH`.
///
/// # Errors
/// Go's lookup error.
pub(crate) fn look_up() -> Result<PathBuf, String> {
    // Upstream runs `pesto --version` to find it; when that cannot start, its error reads so,
    // with the (empty) output quoted.
    exec::look_path(OsStr::new(BINARY)).map_err(|e| {
        format!("command \"{BINARY} --version\" failed, make sure pesto is installed: \"\": {e}")
    })
}

fn go_quote(s: &str) -> String {
    sys::golang::quote(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TempDir, retry_busy};

    fn spec(proto: &str, parent_ip: &str, pp: i64, child_ip: &str) -> PortSpec {
        PortSpec {
            proto: proto.into(),
            parent_ip: parent_ip.into(),
            parent_port: pp,
            child_ip: child_ip.into(),
            child_port: 80,
        }
    }

    #[test]
    fn rules() {
        let ok = |s: PortSpec, ipv6: bool, flag: &str, want: &str| {
            assert_eq!(
                rule(&s, ipv6),
                Ok((if flag == "-t" { "-t" } else { "-u" }, want.to_string())),
                "{s:?} ipv6={ipv6}"
            );
        };
        // IPv4-only pasta: always an IPv4 address (passt 2026_05_07 refuses dual-stack rules).
        ok(spec("tcp", "", 8080, ""), false, "-t", "0.0.0.0/8080:80");
        ok(
            spec("tcp", "0.0.0.0", 8080, ""),
            false,
            "-t",
            "0.0.0.0/8080:80",
        );
        ok(spec("tcp4", "", 8080, ""), false, "-t", "0.0.0.0/8080:80");
        ok(
            spec("udp", "127.0.0.1", 53, ""),
            false,
            "-u",
            "127.0.0.1/53:80",
        );
        ok(
            spec("tcp", "::ffff:127.0.0.1", 1, ""),
            false,
            "-t",
            "127.0.0.1/1:80",
        );
        ok(spec("udp4", "::", 5353, ""), false, "-u", "0.0.0.0/5353:80");
        // With IPv6: the wildcard on tcp/udp is dual-stack, as the builtin driver listens.
        ok(spec("tcp", "", 8080, ""), true, "-t", "8080:80");
        ok(spec("tcp", "0.0.0.0", 8080, ""), true, "-t", "8080:80");
        ok(spec("udp", "::", 8080, ""), true, "-u", "8080:80");
        ok(spec("tcp4", "", 8080, ""), true, "-t", "0.0.0.0/8080:80");
        ok(spec("tcp6", "", 8080, ""), true, "-t", "::/8080:80");
        ok(spec("tcp6", "::1", 8080, ""), true, "-t", "::1/8080:80");
        ok(spec("tcp", "::1", 8080, ""), true, "-t", "::1/8080:80");
        let bad = |s: PortSpec, want: &str| assert_eq!(rule(&s, false).unwrap_err(), want);
        bad(
            spec("tcp6", "", 8080, ""),
            "IPv6 port forwarding (proto \"tcp6\", parent IP \"::\") requires --ipv6",
        );
        bad(
            spec("tcp", "::1", 8080, ""),
            "IPv6 port forwarding (proto \"tcp\", parent IP \"::1\") requires --ipv6",
        );
        bad(
            spec("udp6", "::1", 8080, ""),
            "IPv6 port forwarding (proto \"udp6\", parent IP \"::1\") requires --ipv6",
        );
        assert_eq!(
            rule(&spec("sctp", "", 1, ""), true).unwrap_err(),
            "unsupported protocol: sctp"
        );
    }

    /// A fake pesto that logs its arguments and fails for port 9999 the way pesto does.
    fn fake(dir: &TempDir) -> PathBuf {
        let log = dir.0.join("pesto.log");
        dir.script(
            "pesto",
            &format!(
                "echo \"$@\" >> {}\n\
                 case \"$3\" in *9999:*) echo 'Unable to add rule TCP [0.0.0.0]:9999' >&2; \
                 exit 1;; esac\nexit 0",
                log.display()
            ),
        )
    }

    #[test]
    fn adds_lists_and_removes_through_pesto() {
        let dir = TempDir::new("pesto");
        let bin = fake(&dir);
        let sock = dir.0.join("pasta.sock");
        let v4: IpAddr = "10.0.2.100".parse().unwrap();
        let d = PestoPorts::new(bin, sock.clone(), v4, None);
        assert_eq!(d.info().protos, ["tcp", "tcp4", "udp", "udp4"]);
        assert!(d.info().disallow_loopback_child_ip);
        let a = retry_busy(|| d.add(spec("tcp", "", 8080, ""))).unwrap();
        assert_eq!(a.id, 1);
        // The namespace's address, also IPv4-mapped, is the one child IP allowed.
        let b = retry_busy(|| d.add(spec("udp", "127.0.0.1", 8081, "::ffff:10.0.2.100"))).unwrap();
        assert_eq!(b.id, 2);
        assert_eq!(d.list(), [a.clone(), b.clone()]);
        assert_eq!(
            d.add(spec("tcp", "", 8080, "")).unwrap_err(),
            "conflict with ID 1"
        );
        assert_eq!(
            d.add(spec("tcp", "", 8082, "127.0.0.1")).unwrap_err(),
            "unsupported ChildIP \"127.0.0.1\": the pesto port driver only supports the \
             namespace address \"10.0.2.100\""
        );
        assert_eq!(
            retry_busy(|| match d.add(spec("tcp", "", 9999, "")) {
                Err(e) if e.contains("text file busy") => Err(e),
                other => Ok(other),
            })
            .unwrap()
            .unwrap_err(),
            "pesto -A -t 0.0.0.0/9999:80: exit status 1: Unable to add rule TCP [0.0.0.0]:9999"
        );
        retry_busy(|| d.remove(1)).unwrap();
        assert_eq!(d.remove(1).unwrap_err(), "invalid ID: 1");
        assert_eq!(d.list(), [b]);
        // Ids are not reused.
        assert_eq!(
            retry_busy(|| d.add(spec("tcp", "", 8080, ""))).unwrap().id,
            3
        );
        let s = sock.display();
        assert_eq!(
            std::fs::read_to_string(dir.0.join("pesto.log")).unwrap(),
            format!(
                "-A -t 0.0.0.0/8080:80 {s}\n-A -u 127.0.0.1/8081:80 {s}\n\
                 -A -t 0.0.0.0/9999:80 {s}\n-D -t 0.0.0.0/8080:80 {s}\n-A -t 0.0.0.0/8080:80 {s}\n"
            )
        );
    }

    /// After a restart every port is added again under its id, once the control socket
    /// accepts; one pasta refuses now is dropped with a warning; a pesto that hangs is killed
    /// and the rest are not tried.
    #[test]
    fn reapply_keeps_the_ids() {
        let dir = TempDir::new("pesto-reapply");
        let log = dir.0.join("pesto.log");
        let refuse = dir.0.join("refuse");
        let hang = dir.0.join("hang");
        let bin = dir.script(
            "pesto",
            &format!(
                "echo \"$@\" >> {}\n\
                 case \"$3\" in *8081:*) [ -e {} ] && {{ echo 'Unable to add rule' >&2; exit 1; }};; esac\n\
                 [ -e {} ] && exec sleep 30\nexit 0",
                log.display(),
                refuse.display(),
                hang.display()
            ),
        );
        let sock = dir.0.join("pasta.sock");
        let d = PestoPorts::new(bin, sock.clone(), "10.0.2.100".parse().unwrap(), None);
        for port in [8080, 8081, 8082] {
            retry_busy(|| d.add(spec("tcp", "", port, ""))).unwrap();
        }
        retry_busy(|| d.remove(1)).unwrap();
        let before = d.list();
        assert_eq!(before.iter().map(|p| p.id).collect::<Vec<_>>(), [2, 3]);
        std::fs::write(&log, "").unwrap();
        // Nothing listens yet: nothing is run, nothing changes.
        assert_eq!(d.reapply(), Err(NotYet::Listening));
        let _pasta = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(d.reapply(), Ok(vec![]));
        assert_eq!(d.list(), before);
        let s = sock.display();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("-A -t 0.0.0.0/8081:80 {s}\n-A -t 0.0.0.0/8082:80 {s}\n")
        );
        // New ids go on from the highest.
        assert_eq!(
            retry_busy(|| d.add(spec("tcp", "", 8083, ""))).unwrap().id,
            4
        );

        std::fs::write(&refuse, "").unwrap();
        assert_eq!(
            d.reapply(),
            Ok(vec![
                "port :8081:80/tcp (id 2) is no longer forwarded: pesto -A -t 0.0.0.0/8081:80: \
                 exit status 1: Unable to add rule"
                    .to_string()
            ])
        );
        assert_eq!(d.list().iter().map(|p| p.id).collect::<Vec<_>>(), [3, 4]);

        std::fs::write(&hang, "").unwrap();
        let at = std::time::Instant::now();
        let warnings = d.reapply().unwrap();
        assert!(
            at.elapsed() < CALL_LIMIT + Duration::from_secs(1),
            "{:?}",
            at.elapsed()
        );
        assert_eq!(
            warnings,
            [
                "port :8082:80/tcp (id 3) is no longer forwarded: pesto -A -t 0.0.0.0/8082:80: \
                 no answer within 2s, killed",
                "port :8083:80/tcp (id 4) is no longer forwarded: not tried after pesto -A -t \
                 0.0.0.0/8082:80: no answer within 2s, killed",
            ]
        );
        assert_eq!(d.list(), []);
    }

    #[test]
    fn ipv6_child_address() {
        let dir = TempDir::new("pesto6");
        let bin = fake(&dir);
        let d = PestoPorts::new(
            bin,
            dir.0.join("pasta.sock"),
            "10.0.2.100".parse().unwrap(),
            Some("fd00::100".parse().unwrap()),
        );
        assert_eq!(
            d.info().protos,
            ["tcp", "tcp4", "udp", "udp4", "tcp6", "udp6"]
        );
        retry_busy(|| d.add(spec("tcp6", "::1", 8080, "fd00::100"))).unwrap();
        assert_eq!(
            d.add(spec("tcp6", "::1", 8081, "fd00::1")).unwrap_err(),
            "unsupported ChildIP \"fd00::1\": the pesto port driver only supports the \
             namespace address \"10.0.2.100\""
        );
    }
}
