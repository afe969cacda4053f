//! `rootlesskit-docker-proxy`: the `docker-proxy` stand-in that Docker before v28 runs inside
//! the namespace (`--userland-proxy-path`), which publishes the port on the host through the
//! rootlesskit API and runs the real `docker-proxy` behind it.
//!
//! Flags are `docker-proxy`'s, in Go's `flag` syntax: `-container-ip -container-port -host-ip
//! -host-port -proto`, each also as `--name`, `-name=value` or `--name=value`. Descriptor 3,
//! when open, is the status pipe Docker reads: `0\n` once the port is up, `1\n<error>` on
//! failure. As upstream, the `0\n` comes from the real `docker-proxy` (which gets the pipe)
//! once it listens, so a proxy that fails is not reported as a success.
//! Without a port driver (`none`, `implicit`) the real `docker-proxy` replaces this process.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use parent::api::Info;
use parent::api::client::Client;
use parent::exec;
use parent::port::PortSpec;
use parent::port::spec::is_ip;
use sys::goflag::{self, Flag, Value};

/// The program we stand in for, looked up in `$PATH`.
const REAL_PROXY: &str = "docker-proxy";

/// The status pipe's descriptor number.
const STATUS_FD: i32 = 3;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(run(&args));
}

const HELP: &str = "\
Usage of rootlesskit-docker-proxy:
  -container-ip string
    \tthe container's address
  -container-port int
    \tthe container's port (default -1)
  -host-ip string
    \tthe host address to publish on
  -host-port int
    \tthe host port to publish (default -1)
  -proto string
    \ttcp or udp (default \"tcp\")
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Help,
    Version,
    Proxy(Flags),
}

/// The five flags, with `docker-proxy`'s defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flags {
    container_ip: String,
    container_port: i64,
    host_ip: String,
    host_port: i64,
    proto: String,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            container_ip: String::new(),
            container_port: -1,
            host_ip: String::new(),
            host_port: -1,
            proto: "tcp".into(),
        }
    }
}

/// Go's `flag.Parse` for our five flags (plus `-h`/`-help` and `-version`): parsing stops at the
/// first argument that is not a flag and after `--`; later arguments are ignored, as upstream
/// ignores them.
fn parse_flags(args: &[OsString]) -> Result<Action, String> {
    let mut flags = Flags::default();
    let table = |name: &str| match name {
        "container-ip" | "container-port" | "host-ip" | "host-port" | "proto" => Some(true),
        "version" => Some(false),
        _ => None,
    };
    let mut p = goflag::Parser::new(args);
    loop {
        let (name, value) = match p.next(table) {
            Ok(Some(Flag {
                name,
                value: Value::Text(v),
            })) => (name, v),
            Ok(Some(Flag { value, .. })) if value.is_on() => return Ok(Action::Version),
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(Action::Proxy(flags)),
            Err(e) if e.kind == goflag::ErrorKind::Help => return Ok(Action::Help),
            Err(e) => return Err(e.message),
        };
        let int = || {
            goflag::parse_int(value.as_encoded_bytes())
                .map_err(|why| goflag::invalid_value(&name, value, why).message)
        };
        match name.as_str() {
            "container-port" => flags.container_port = int()?,
            "host-port" => flags.host_port = int()?,
            other => {
                let text = value.to_string_lossy().into_owned();
                match other {
                    "container-ip" => flags.container_ip = text,
                    "host-ip" => flags.host_ip = text,
                    _ => flags.proto = text,
                }
            }
        }
    }
}

/// What to do once the API has described the drivers.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// No port driver: let the real `docker-proxy` do everything.
    Exec,
    /// The driver cannot carry this protocol: warn, report success, proxy nothing (upstream
    /// issue #250: e.g. `tcp6` with the slirp4netns port driver).
    Ignore(String),
    /// Publish `spec` through the API and run the real proxy on `child_ip:host_port`.
    Proxy { spec: PortSpec, child_ip: String },
}

/// Go's `net.ParseIP(s).To4() == nil` for a parsable `s`: an IPv6 address that is not
/// IPv4-mapped (`::ffff:a.b.c.d` counts as IPv4, as in Go).
///
/// Written out on top of [`is_ip`] rather than with `IpAddr::from_str`, whose parser alone would
/// put this binary over its size budget.
fn is_ipv6(s: &str) -> bool {
    if !is_ip(s) || !s.contains(':') {
        return false;
    }
    // Valid IPv6 from here on: expand it to its 16-bit groups (an IPv4 tail counts as two,
    // whose values do not matter) and look for the prefix 0:0:0:0:0:ffff.
    let groups = |part: &str| -> Vec<u32> {
        let mut out = Vec::new();
        for g in part.split(':').filter(|g| !g.is_empty()) {
            if g.contains('.') {
                out.extend([0, 0]);
            } else {
                out.push(u32::from_str_radix(g, 16).unwrap_or(u32::MAX));
            }
        }
        out
    };
    let (head, tail) = match s.split_once("::") {
        Some((h, t)) => (groups(h), groups(t)),
        None => (groups(s), Vec::new()),
    };
    let mut all = head;
    all.resize(8 - tail.len(), 0);
    all.extend(tail);
    all[..6] != [0, 0, 0, 0, 0, 0xffff]
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's decision table: the driver, the address family of `-host-ip` and the driver's
/// protocols decide whether to exec, ignore or proxy, which protocol to publish and where the
/// real proxy listens inside the namespace.
fn plan(info: &Info, flags: &Flags) -> Result<Plan, String> {
    let Some(pd) = info
        .port_driver
        .as_ref()
        .filter(|pd| pd.driver != "none" && pd.driver != "implicit")
    else {
        return Ok(Plan::Exec);
    };
    let v6 = is_ipv6(&flags.host_ip);
    let mut child_ip = if v6 { "::1" } else { "127.0.0.1" }.to_string();
    if pd.disallow_loopback_child_ip {
        let net = info.network_driver.as_ref();
        match net.map(|n| n.child_ip.as_str()).filter(|ip| !ip.is_empty()) {
            Some(ip) => child_ip = ip.to_string(),
            None => {
                return Err(format!(
                    "port driver ({}) does not allow loopback child IP, but network driver ({}) has no non-loopback IP",
                    exec::quote(&pd.driver),
                    exec::quote(net.map_or("", |n| n.driver.as_str()))
                ));
            }
        }
    }
    let mut proto = flags.proto.clone();
    if !proto.ends_with('4') && !proto.ends_with('6') {
        proto.push(if v6 { '6' } else { '4' });
    }
    if !pd.protos.contains(&proto) {
        return Ok(Plan::Ignore(format!(
            "protocol {} is not supported by the RootlessKit port driver {}, discarding request for {}",
            exec::quote(&proto),
            exec::quote(&pd.driver),
            exec::quote(&join_host_port(&flags.host_ip, flags.host_port))
        )));
    }
    // The real proxy listens on the host port inside the namespace, so that is the child port.
    let spec = PortSpec {
        proto,
        parent_ip: flags.host_ip.clone(),
        parent_port: flags.host_port,
        child_ip: child_ip.clone(),
        child_port: flags.host_port,
    };
    Ok(Plan::Proxy { spec, child_ip })
}

/// The real proxy's arguments: ours, with `-host-ip` pointing at the child IP.
fn real_proxy_args(flags: &Flags, child_ip: &str) -> Vec<OsString> {
    [
        "-container-ip",
        &flags.container_ip,
        "-container-port",
        &flags.container_port.to_string(),
        "-host-ip",
        child_ip,
        "-host-port",
        &flags.host_port.to_string(),
        "-proto",
        &flags.proto,
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// The whole run; returns the exit code.
fn run(args: &[OsString]) -> i32 {
    use child::sys;
    // Docker stops the proxy with SIGINT; block it (and SIGTERM) at once so that neither is
    // lost or acts by default before the port is removed again.
    let stop = sys::SigSet((1 << (2 - 1)) | (1 << (15 - 1)));
    let flags = match parse_flags(args) {
        Ok(Action::Proxy(f)) => f,
        Ok(Action::Help) => {
            say(rustix::stdio::stderr(), HELP);
            return 0;
        }
        Ok(Action::Version) => {
            say(
                rustix::stdio::stdout(),
                &format!("rootlesskit-docker-proxy version {}\n", goflag::VERSION),
            );
            return 0;
        }
        Err(e) => return fail(None, &e),
    };
    // Taken before anything else can be opened at number 3.
    let status = sys::adopt_inherited_fd(STATUS_FD).ok();
    let sigfd = match sys::block_signals(stop).and_then(|()| sys::signalfd(stop)) {
        Ok(fd) => fd,
        Err(e) => return fail(status, &format!("failed to set up signal handling: {e}")),
    };
    match serve(args, &flags, status.as_ref(), &sigfd) {
        Ok(()) => 0,
        Err(e) => fail(status, &e),
    }
}

/// Writes `text` to `fd` straight through write(2): std's buffered stdout would cost this
/// binary more than its size budget leaves.
fn say(fd: rustix::fd::BorrowedFd<'_>, text: &str) {
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        match rustix::io::write(fd, rest) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest = &rest[n..],
        }
    }
}

/// Reports `msg` on the status pipe (if any) and on stderr; returns the exit code 1.
fn fail(status: Option<OwnedFd>, msg: &str) -> i32 {
    if let Some(fd) = status {
        let _ = std::fs::File::from(fd).write_all(format!("1\n{msg}").as_bytes());
    }
    say(rustix::stdio::stderr(), &format!("error: {msg}\n"));
    1
}

/// Asks the API, then execs, ignores or publishes and proxies until SIGINT or SIGTERM.
fn serve(
    args: &[OsString],
    flags: &Flags,
    status: Option<&OwnedFd>,
    sigfd: &OwnedFd,
) -> Result<(), String> {
    let Some(state_dir) = std::env::var_os("ROOTLESSKIT_STATE_DIR").filter(|d| !d.is_empty())
    else {
        return Err("$ROOTLESSKIT_STATE_DIR needs to be set".into());
    };
    let client = Client::new(&PathBuf::from(state_dir).join("api.sock"))
        .map_err(|e| format!("error while connecting to RootlessKit API socket: {e}"))?;
    let info = client.info().map_err(|e| {
        format!("failed to call info API, probably RootlessKit binary is too old (needs to be v0.14.0 or later): {e}")
    })?;
    let (spec, child_ip) = match plan(&info, flags)? {
        Plan::Exec => {
            let exe = exec::look_path(OsStr::new(REAL_PROXY))?;
            let mut argv = vec![OsString::from(REAL_PROXY)];
            argv.extend(args.iter().cloned());
            let err = exec::exec_replace(&exe, &argv, status.map(AsRawFd::as_raw_fd));
            return Err(format!(
                "exec {}: {}",
                exe.display(),
                exec::errno_text(&err)
            ));
        }
        Plan::Ignore(warning) => {
            say(rustix::stdio::stderr(), &format!("warning: {warning}\n"));
            if let Some(fd) = status {
                let _ = rustix::io::write(fd, b"0\n");
            }
            return Ok(());
        }
        Plan::Proxy { spec, child_ip } => (spec, child_ip),
    };
    let exe = exec::look_path(OsStr::new(REAL_PROXY))
        .map_err(|e| format!("error while starting {REAL_PROXY}: {e}"))?;
    let added = client
        .add_port(&spec)
        .map_err(|e| format!("error while calling PortManager.AddPort(): {e}"))?;
    let remove = || {
        if let Err(e) = client.remove_port(i64::from(added.id)) {
            say(
                rustix::stdio::stderr(),
                &format!("warning: error while calling PortManager.RemovePort(): {e}\n"),
            );
        }
    };
    // The real proxy gets a copy of the status pipe and writes `0\n` once it listens; ours is
    // closed when we return, so Docker sees the end of the pipe when the real proxy closes it.
    let mut fds = Vec::new();
    if let Some(fd) = status {
        match fd.try_clone() {
            Ok(copy) => fds.push((copy, STATUS_FD)),
            Err(e) => {
                remove();
                return Err(format!("error while starting {REAL_PROXY}: {e}"));
            }
        }
    }
    let (pid, pidfd) = match exec::start_child(&exe, &real_proxy_args(flags, &child_ip), fds) {
        Ok(started) => started,
        Err(e) => {
            remove();
            return Err(format!("error while starting {REAL_PROXY}: {e}"));
        }
    };
    let waited = child::sys::read_signal(sigfd);
    let killed = child::sys::pidfd_send_signal(&pidfd, 9);
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
    remove();
    waited.map_err(|e| format!("waiting for a signal: {e}"))?;
    killed.map_err(|e| format!("error while killing {REAL_PROXY}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parent::api::{NetworkDriverInfo, PortDriverInfo};

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags() {
        let check = |input: &[&str], expect: Result<Action, &str>| {
            assert_eq!(
                parse_flags(&args(input)),
                expect.map_err(str::to_string),
                "{input:?}"
            );
        };
        let proxy = |ip: &str, cport: i64, hip: &str, hport: i64, proto: &str| {
            Ok(Action::Proxy(Flags {
                container_ip: ip.into(),
                container_port: cport,
                host_ip: hip.into(),
                host_port: hport,
                proto: proto.into(),
            }))
        };
        check(&[], proxy("", -1, "", -1, "tcp"));
        check(
            &[
                "-container-ip",
                "10.0.0.5",
                "-container-port",
                "8000",
                "-host-ip",
                "127.0.0.1",
                "-host-port",
                "8080",
                "-proto",
                "udp",
            ],
            proxy("10.0.0.5", 8000, "127.0.0.1", 8080, "udp"),
        );
        check(
            &["--host-ip=::1", "-host-port=80", "--container-port", "+7"],
            proxy("", 7, "::1", 80, "tcp"),
        );
        check(
            &["-proto", "udp", "-proto=tcp"],
            proxy("", -1, "", -1, "tcp"),
        );
        check(&["-host-ip", "-proto"], proxy("", -1, "-proto", -1, "tcp"));
        check(
            &["-host-port", "1", "stray", "-host-port", "2"],
            proxy("", -1, "", 1, "tcp"),
        );
        check(&["--", "-host-port", "2"], proxy("", -1, "", -1, "tcp"));
        check(&["-", "-host-port", "2"], proxy("", -1, "", -1, "tcp"));
        check(&["-h"], Ok(Action::Help));
        check(&["--help"], Ok(Action::Help));
        check(&["--version"], Ok(Action::Version));
        check(&["-x", "1"], Err("flag provided but not defined: -x"));
        check(&["-host-port"], Err("flag needs an argument: -host-port"));
        check(
            &["-host-port", "80x"],
            Err("invalid value \"80x\" for flag -host-port: parse error"),
        );
        check(
            &["-container-port=99999999999999999999"],
            Err(
                "invalid value \"99999999999999999999\" for flag -container-port: value out of range",
            ),
        );
        check(&["---proto=tcp"], Err("bad flag syntax: ---proto=tcp"));
        check(&["-=tcp"], Err("bad flag syntax: -=tcp"));
    }

    fn info(port: Option<(&str, &[&str], bool)>, net: Option<(&str, &str)>) -> Info {
        Info {
            api_version: "1.1.1".into(),
            version: "2.3.4".into(),
            state_dir: "/run/x".into(),
            child_pid: 42,
            network_driver: net.map(|(driver, child_ip)| NetworkDriverInfo {
                driver: driver.into(),
                child_ip: child_ip.into(),
                ..Default::default()
            }),
            port_driver: port.map(|(driver, protos, disallow)| PortDriverInfo {
                driver: driver.into(),
                protos: protos.iter().map(|p| p.to_string()).collect(),
                disallow_loopback_child_ip: disallow,
            }),
        }
    }

    const ALL: &[&str] = &["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"];
    const V4: &[&str] = &["tcp", "tcp4", "udp", "udp4"];

    #[test]
    fn decisions() {
        let check = |info: Info, host_ip: &str, proto: &str, expect: Result<Plan, &str>| {
            let flags = Flags {
                container_ip: "10.0.0.5".into(),
                container_port: 80,
                host_ip: host_ip.into(),
                host_port: 8080,
                proto: proto.into(),
            };
            assert_eq!(
                plan(&info, &flags),
                expect.map_err(str::to_string),
                "{host_ip} {proto}"
            );
        };
        let proxy = |proto: &str, parent_ip: &str, child_ip: &str| {
            Ok(Plan::Proxy {
                spec: PortSpec {
                    proto: proto.into(),
                    parent_ip: parent_ip.into(),
                    parent_port: 8080,
                    child_ip: child_ip.into(),
                    child_port: 8080,
                },
                child_ip: child_ip.into(),
            })
        };
        let slirp_net = Some(("slirp4netns", "10.0.2.100"));
        let builtin = || info(Some(("builtin", ALL, false)), slirp_net);
        let s4nn = || info(Some(("slirp4netns", V4, true)), slirp_net);

        // No port driver, or one that publishes nothing itself: the real proxy does it all.
        check(info(None, slirp_net), "0.0.0.0", "tcp", Ok(Plan::Exec));
        check(
            info(Some(("none", ALL, false)), None),
            "",
            "tcp",
            Ok(Plan::Exec),
        );
        check(
            info(Some(("implicit", ALL, false)), None),
            "::",
            "udp",
            Ok(Plan::Exec),
        );

        // builtin: loopback child IP of the host IP's family; the family suffix is added.
        check(
            builtin(),
            "127.0.0.1",
            "tcp",
            proxy("tcp4", "127.0.0.1", "127.0.0.1"),
        );
        check(
            builtin(),
            "0.0.0.0",
            "udp",
            proxy("udp4", "0.0.0.0", "127.0.0.1"),
        );
        check(builtin(), "", "tcp", proxy("tcp4", "", "127.0.0.1"));
        check(builtin(), "::", "tcp", proxy("tcp6", "::", "::1"));
        check(builtin(), "::1", "udp", proxy("udp6", "::1", "::1"));
        check(
            builtin(),
            "::ffff:1.2.3.4",
            "tcp",
            proxy("tcp4", "::ffff:1.2.3.4", "127.0.0.1"),
        );
        check(builtin(), "::", "tcp4", proxy("tcp4", "::", "::1"));

        // slirp4netns: the network driver's child IP; IPv6 and sctp are ignored with success.
        check(
            s4nn(),
            "0.0.0.0",
            "tcp",
            proxy("tcp4", "0.0.0.0", "10.0.2.100"),
        );
        check(
            s4nn(),
            "::",
            "tcp",
            Ok(Plan::Ignore(
                "protocol \"tcp6\" is not supported by the RootlessKit port driver \"slirp4netns\", discarding request for \"[::]:8080\"".into(),
            )),
        );
        check(
            builtin(),
            "127.0.0.1",
            "sctp",
            Ok(Plan::Ignore(
                "protocol \"sctp4\" is not supported by the RootlessKit port driver \"builtin\", discarding request for \"127.0.0.1:8080\"".into(),
            )),
        );
        check(
            info(Some(("slirp4netns", V4, true)), Some(("none", ""))),
            "0.0.0.0",
            "tcp",
            Err(
                "port driver (\"slirp4netns\") does not allow loopback child IP, but network driver (\"none\") has no non-loopback IP",
            ),
        );
        check(
            info(Some(("slirp4netns", V4, true)), None),
            "0.0.0.0",
            "tcp",
            Err(
                "port driver (\"slirp4netns\") does not allow loopback child IP, but network driver (\"\") has no non-loopback IP",
            ),
        );
    }

    #[test]
    fn ipv6_as_go_sees_it() {
        for s in [
            "",
            "x",
            "127.0.0.1",
            "0.0.0.0",
            "::",
            "::1",
            "fe80::1%eth0",
            "2001:db8::ffff:1.2.3.4",
            "::ffff:1.2.3.4",
            "::FFFF:1.2.3.4",
            "0:0:0:0:0:ffff:102:304",
            "::ffff:0:0",
            "::fffe:1.2.3.4",
            "1::ffff:1.2.3.4",
            "1:2:3:4:5:6:7:8",
            "::0:ffff:1.2.3.4",
        ] {
            let want = matches!(
                s.parse::<std::net::IpAddr>(),
                Ok(std::net::IpAddr::V6(a)) if a.to_ipv4_mapped().is_none()
            );
            assert_eq!(is_ipv6(s), want, "{s:?}");
        }
    }

    #[test]
    fn real_proxy_gets_the_child_ip() {
        let flags = Flags {
            container_ip: "10.0.0.5".into(),
            container_port: 8000,
            host_ip: "0.0.0.0".into(),
            host_port: 8080,
            proto: "tcp".into(),
        };
        assert_eq!(
            real_proxy_args(&flags, "10.0.2.100"),
            args(&[
                "-container-ip",
                "10.0.0.5",
                "-container-port",
                "8000",
                "-host-ip",
                "10.0.2.100",
                "-host-port",
                "8080",
                "-proto",
                "tcp"
            ])
        );
    }
}
