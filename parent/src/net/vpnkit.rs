//! `--net=vpnkit`: launching vpnkit on `<statedir>/vpnkit-ethernet.sock`, opening a vmnet
//! session on it, asking for a virtual interface with a fresh UUID and learning its address by
//! DHCP. The child then creates the tap, opens its own session for the same UUID and moves the
//! frames (`child::vpnkit`); this session stays open until the driver stops, as upstream's does.
//!
//! The parent stays one thread: while vpnkit has not opened its socket yet, each 10 ms retry
//! waits by `poll` on vpnkit's pidfd and the caller's descriptors (signals, the child); once
//! connected, the exchange blocks, but each read is bounded by a socket timeout (10 s for the
//! interface, ten one-second rounds for DHCP).

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use proto::{NetMode, vmnet};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::helper::{self, Running};
use super::{Addrs, Driver, NetOptions, Prepared, StartError, Target};
use crate::exec;

/// vpnkit's MTU when `--mtu` is 0.
pub(crate) const DEFAULT_MTU: u32 = 1500;
/// How long vpnkit may take to serve its socket: this many tries, 10 ms apart (10 s).
pub(crate) const TRIES: u32 = 1000;
/// vpnkit's gateway and DNS server, [`vmnet::GATEWAY`], as text.
pub(crate) const GATEWAY_TEXT: &str = "192.168.65.1";
/// The interface's prefix length.
pub(crate) const PREFIX: u8 = 24;

/// Everything decided before launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The resolved binary.
    pub binary: PathBuf,
    /// `--mtu`, 1500 when 0.
    pub mtu: u32,
    /// The tap name.
    pub ifname: String,
    /// `--disable-host-loopback`.
    pub disable_host_loopback: bool,
}

/// The plan for `opts` with the binary found at `binary`, and the warning upstream prints for
/// an MTU other than 1500.
///
/// # Errors
/// A bad interface name.
pub(crate) fn plan(opts: &NetOptions, binary: PathBuf) -> Result<(Plan, Option<String>), String> {
    let mtu = if opts.mtu == 0 { DEFAULT_MTU } else { opts.mtu };
    let warning = (mtu != DEFAULT_MTU).then(|| {
        format!(
            "vpnkit is known to have issues with non-1500 MTU (current: {mtu}), \
             see https://github.com/rootless-containers/rootlesskit/issues/6#issuecomment-403531453"
        )
    });
    let plan = Plan {
        binary,
        mtu,
        ifname: super::interface_name(opts.ifname.as_deref())?,
        disable_host_loopback: opts.disable_host_loopback,
    };
    Ok((plan, warning))
}

impl Plan {
    /// vpnkit's arguments (after argv\[0\]).
    pub(crate) fn args(&self, state_dir: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--ethernet".into(),
            state_dir.join(proto::VPNKIT_SOCKET_NAME).into(),
            "--mtu".into(),
            self.mtu.to_string().into(),
        ];
        if self.disable_host_loopback {
            args.push("--host-ip".into());
            args.push("0.0.0.0".into());
        }
        args
    }

    /// What the child must configure for the interface `uuid` with `mac` and `addr`.
    pub(crate) fn prepared(&self, uuid: [u8; 16], mac: [u8; 6], addr: [u8; 4]) -> Prepared {
        let addrs = Addrs {
            addr,
            prefix: PREFIX,
            gateway: vmnet::GATEWAY,
            dns: vmnet::GATEWAY,
        };
        let mut net = super::net_config(NetMode::Vpnkit, &self.ifname, &addrs, self.mtu, None);
        net.mac = mac;
        net.uuid = uuid;
        Prepared {
            net,
            api_socket: None,
            dns: vec![GATEWAY_TEXT.into()],
        }
    }
}

/// The vpnkit network driver.
#[derive(Debug)]
pub(crate) struct Vpnkit {
    plan: Plan,
    running: Option<Running>,
    /// Our vmnet session, held while vpnkit runs.
    session: Option<UnixStream>,
    tries: u32,
}

impl Vpnkit {
    /// Finds the binary (`$PATH`) and plans the launch; prints the MTU warning.
    ///
    /// # Errors
    /// Go's lookup error or a [`plan`] error.
    pub(crate) fn probe(opts: &NetOptions) -> Result<Vpnkit, String> {
        let binary = exec::look_path(std::ffi::OsStr::new(&opts.binary))?;
        let (plan, warning) = plan(opts, binary)?;
        if let Some(w) = warning {
            crate::warn(&w);
        }
        Ok(Vpnkit {
            plan,
            running: None,
            session: None,
            tries: TRIES,
        })
    }

    /// How vpnkit ended, if it has.
    fn died(&mut self) -> Option<String> {
        self.running.as_mut()?.ended("vpnkit")
    }

    /// Connects to vpnkit's socket, retrying every 10 ms [`TRIES`] times while watching vpnkit
    /// and `watch`; then, bounded by timeouts, the init exchange, the interface and its address.
    fn connect(
        &mut self,
        state_dir: &Path,
        watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, StartError> {
        let socket = state_dir.join(proto::VPNKIT_SOCKET_NAME);
        let uuid = vmnet::uuid_v4(random16());
        let text = vmnet::uuid_text(&uuid);
        let mut tries = self.tries;
        let stream = loop {
            let last = match UnixStream::connect(&socket) {
                Ok(s) => break Ok(s),
                Err(e) => sys::errno::text(&e),
            };
            if tries == 0 {
                break Err(format!(
                    "last error: dial unix {}: connect: {last}: context deadline exceeded",
                    socket.display()
                ));
            }
            tries -= 1;
            let interrupted = self
                .running
                .as_ref()
                .is_some_and(|run| nap(run.pidfd(), watch));
            // vpnkit's own SIGCHLD shows on the watched signalfd: its death comes first.
            if let Some(how) = self.died() {
                break Err(how);
            }
            if interrupted {
                return Err(StartError::Interrupted);
            }
        };
        let (with, why) = match stream.map(|s| sys::vmnet::interface(s, &uuid)) {
            Err(why) => ("", why),
            Ok(Ok((s, mac, ip))) => {
                self.session = Some(s);
                return Ok(self.plan.prepared(uuid, mac, ip));
            }
            Ok(Err(e)) => (" with uuid ", self.died().unwrap_or(e)),
        };
        let uuid = if with.is_empty() {
            ""
        } else {
            std::str::from_utf8(&text).unwrap_or_default()
        };
        Err(StartError::Failed(format!(
            "connecting to {}{with}{uuid}: {why}",
            socket.display()
        )))
    }
}

/// Sleeps 10 ms or until vpnkit ends or a watched descriptor becomes readable; returns whether
/// one of `watch` did.
fn nap(pidfd: BorrowedFd<'_>, watch: &[BorrowedFd<'_>]) -> bool {
    let mut all = [pidfd; 5];
    let n = 1 + watch.len().min(4);
    all[1..n].copy_from_slice(&watch[..n - 1]);
    let mut fds = all.map(|f| PollFd::from_borrowed_fd(f, PollFlags::IN));
    let ten_ms = Timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    let _ = poll(&mut fds[..n], Some(&ten_ms));
    fds[1..n].iter().any(|f| !f.revents().is_empty())
}

/// 16 random bytes from the kernel, for the interface's UUID. Should the read fail, the pid
/// still tells this session's UUID from another rootlesskit's.
fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&std::process::id().to_le_bytes());
    if let Ok(f) = rustix::fs::open(
        "/dev/urandom",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::io::read(&f, &mut b);
    }
    b
}

impl Driver for Vpnkit {
    fn name(&self) -> &'static str {
        "vpnkit"
    }

    fn start(
        &mut self,
        target: Target<'_>,
        watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, StartError> {
        if self.running.as_ref().is_some_and(|r| !r.reaped) {
            return Err(StartError::Failed("vpnkit is already running".into()));
        }
        let args = self.plan.args(target.state_dir);
        let result = match Running::start(&self.plan.binary, &args, Vec::new()) {
            Err(e) => Err(StartError::Failed(format!(
                "executing {}: {e}",
                super::slirp4netns::command_text(&self.plan.binary, &args)
            ))),
            Ok(run) => {
                self.running = Some(run);
                self.connect(target.state_dir, watch)
            }
        };
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn stop(&mut self) {
        self.session = None;
        helper::stop(&mut self.running);
    }

    fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        helper::exit_fd(&self.running)
    }

    fn describe_exit(&mut self) -> String {
        helper::describe_exit(&mut self.running)
    }
}

impl Drop for Vpnkit {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NetOptions {
        NetOptions {
            binary: "vpnkit".into(),
            ..NetOptions::default()
        }
    }

    fn args_text(p: &Plan) -> String {
        p.args(Path::new("/run/user/1000/rk"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_lines() {
        let check = |o: NetOptions, expect: &str| {
            let (p, _) = plan(&o, "/usr/bin/vpnkit".into()).unwrap();
            assert_eq!(args_text(&p), expect, "{o:?}");
        };
        check(
            opts(),
            "--ethernet /run/user/1000/rk/vpnkit-ethernet.sock --mtu 1500",
        );
        check(
            NetOptions {
                disable_host_loopback: true,
                ..opts()
            },
            "--ethernet /run/user/1000/rk/vpnkit-ethernet.sock --mtu 1500 --host-ip 0.0.0.0",
        );
        check(
            NetOptions {
                mtu: 9000,
                disable_host_loopback: true,
                // Options vpnkit has no use for change nothing.
                ipv6: true,
                driver_ports: true,
                detach_netns: true,
                ..opts()
            },
            "--ethernet /run/user/1000/rk/vpnkit-ethernet.sock --mtu 9000 --host-ip 0.0.0.0",
        );
    }

    #[test]
    fn plans_and_warnings() {
        let (p, w) = plan(&opts(), "/x/vpnkit".into()).unwrap();
        assert_eq!(
            p,
            Plan {
                binary: "/x/vpnkit".into(),
                mtu: 1500,
                ifname: "tap0".into(),
                disable_host_loopback: false,
            }
        );
        assert_eq!(w, None);
        let (p, w) = plan(
            &NetOptions {
                mtu: 1500,
                ifname: Some("eth9".into()),
                ..opts()
            },
            "/x/vpnkit".into(),
        )
        .unwrap();
        assert_eq!((p.mtu, p.ifname.as_str(), w), (1500, "eth9", None));
        let (p, w) = plan(
            &NetOptions {
                mtu: 65520,
                ..opts()
            },
            "/x/vpnkit".into(),
        )
        .unwrap();
        assert_eq!(p.mtu, 65520);
        assert_eq!(
            w.as_deref(),
            Some(
                "vpnkit is known to have issues with non-1500 MTU (current: 65520), see https://github.com/rootless-containers/rootlesskit/issues/6#issuecomment-403531453"
            )
        );
        assert_eq!(
            plan(
                &NetOptions {
                    ifname: Some("much-too-long-name".into()),
                    ..opts()
                },
                "/x/vpnkit".into()
            )
            .err()
            .as_deref(),
            Some(r#"ifname "much-too-long-name" is longer than 15 bytes"#)
        );
    }

    #[test]
    fn what_the_child_gets() {
        let (p, _) = plan(&opts(), "/x/vpnkit".into()).unwrap();
        let got = p.prepared([7; 16], [2, 0x50, 0, 0, 0, 3], [192, 168, 65, 3]);
        let n = got.net;
        assert_eq!(n.mode, NetMode::Vpnkit);
        assert_eq!(n.ifname_str(), "tap0");
        assert_eq!(
            (n.addr, n.prefix, n.gateway, n.dns, n.mtu),
            (
                [192, 168, 65, 3],
                24,
                [192, 168, 65, 1],
                [192, 168, 65, 1],
                1500
            )
        );
        assert_eq!(
            (n.mac, n.uuid, n.dns6),
            ([2, 0x50, 0, 0, 0, 3], [7; 16], [0; 16])
        );
        assert_eq!(got.dns, ["192.168.65.1"]);
        assert_eq!(super::super::ipv4_text(vmnet::GATEWAY), GATEWAY_TEXT);
        assert_eq!(got.api_socket, None);
    }

    #[test]
    fn a_missing_binary_is_gos_lookup_error() {
        let o = NetOptions {
            binary: "no-such-vpnkit-for-rkrs".into(),
            ..opts()
        };
        assert_eq!(
            Vpnkit::probe(&o).err().as_deref(),
            Some(r#"exec: "no-such-vpnkit-for-rkrs": executable file not found in $PATH"#)
        );
    }

    use crate::testutil::{TempDir, retry_busy};

    fn start(d: &mut Vpnkit, state: &Path) -> Result<Prepared, String> {
        let target = Target {
            child_pid: 4242,
            netns: None,
            state_dir: state,
        };
        retry_busy(|| match d.start(target, &[]) {
            Ok(p) => Ok(p),
            Err(StartError::Failed(e)) => Err(e),
            Err(StartError::Interrupted) => Err("interrupted".into()),
        })
    }

    fn fake(binary: &Path, tries: u32) -> Vpnkit {
        Vpnkit {
            plan: plan(&opts(), binary.into()).unwrap().0,
            running: None,
            session: None,
            tries,
        }
    }

    #[test]
    fn reports_a_vpnkit_that_dies_or_never_listens() {
        let dir = TempDir::new("vpnkit");
        let bin = dir.script("dies", "echo 'cannot bind socket' >&2\nexit 3");
        let mut d = fake(&bin, TRIES);
        assert_eq!(
            start(&mut d, &dir.0).unwrap_err(),
            format!(
                "connecting to {}/vpnkit-ethernet.sock: vpnkit failed (exit status 3); last output: \"cannot bind socket\"",
                dir.0.display()
            )
        );
        assert!(d.exit_fd().is_none());

        let bin = dir.script("quiet", "exec sleep 60");
        let mut d = fake(&bin, 30);
        let err = start(&mut d, &dir.0).unwrap_err();
        assert_eq!(
            err,
            format!(
                "connecting to {0}/vpnkit-ethernet.sock: last error: dial unix {0}/vpnkit-ethernet.sock: connect: no such file or directory: context deadline exceeded",
                dir.0.display()
            )
        );
        assert!(d.exit_fd().is_none(), "stopped after the failure");

        let missing = dir.0.join("missing");
        let mut d = fake(&missing, 100);
        assert_eq!(
            start(&mut d, &dir.0).unwrap_err(),
            format!(
                "executing {0} --ethernet {1}/vpnkit-ethernet.sock --mtu 1500: fork/exec {0}: no such file or directory",
                missing.display(),
                dir.0.display()
            )
        );
    }
}
