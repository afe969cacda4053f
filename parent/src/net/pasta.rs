//! `--net=pasta`: probing the installed pasta, building its command line, running it in the
//! foreground as our child and waiting until it has configured the child's interface.
//!
//! pasta configures address, route and MTU itself, so the child gets a
//! [`NetMode::Preconfigured`] frame. Unlike upstream, which lets pasta daemonize and trusts it
//! to quit when the namespace goes away, we pass `--foreground` and keep pasta as our child with
//! `SIGKILL` as its parent-death signal. A SIGKILLed rootlesskit must leave no helper behind,
//! and old pasta releases (seen with Debian's 2023-03-09) quit by themselves only when a
//! namespace bound to a file (`--netns PATH`) disappears, never for a pid's namespace, which
//! pasta itself keeps alive.
//! Readiness is pasta writing its pid into `--pid=<statedir>/pasta.pid`, which it does only once
//! the namespace is configured; that file is a FIFO we read, so no polling of the file system
//! is needed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::NetMode;
use rustix::fs::{CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::helper::{self, Readiness, Running, Wait};
use super::{Addrs, DEFAULT_MTU, Driver, NetOptions, Prepared, StartError, Target};
use crate::exec;

/// The oldest pasta (passt) release rootlesskit works with, as upstream documents it.
pub(crate) const MINIMUM_VERSION: &str = "2023_06_25";
/// The FIFO in the state dir that pasta writes its pid into once it is ready; removed then.
pub(crate) const PID_FIFO: &str = "pasta.pid";
/// How long pasta may take to configure the namespace.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// pasta's control socket in the state dir (`--conf-path`), for `--port-driver=pesto`.
pub(crate) const CONTROL_SOCKET: &str = "pasta.sock";
/// The namespace's fixed IPv6 address with `--ipv6` (upstream #620), and its prefix length.
pub(crate) const CHILD_IP6: &str = "fd00::100";
/// The IPv6 gateway pasta answers as with `--ipv6`; it maps it to the host's `::1`.
pub(crate) const GATEWAY6: &str = "fd00::2";
/// The IPv6 DNS forwarder with `--ipv6`.
pub(crate) const DNS6: &str = "fd00::3";

/// The optional features of an installed pasta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Features {
    /// `--host-lo-to-ns-lo` is accepted (passt 2024_10_30 and later need it for `127.0.0.1` ports).
    pub host_lo_to_ns_lo: bool,
    /// `--tcp-ns=none` leaves `--tcp-ports=auto` alone. Releases before 2023_03_20 (Debian 12's
    /// 2023-03-09, whose `--version` says "unknown version") swapped the two directions' port
    /// scans: there `-T none` stops publishing the namespace's ports while `-t auto` goes on
    /// forwarding the namespace's 127.0.0.1 to the host's.
    pub separate_port_scans: bool,
    /// Address-less forwarding specs (`-t auto`, and `-T`/`-U`, which take no address) are
    /// dual-stack ones, refused when IPv6 is off: passt 2026_05_07 up to 2026_05_26, which
    /// then falls back to one family (upstream #591).
    pub dual_stack_specs_only: bool,
}

/// The first release with pasta's port scans fixed (passt commit 418f75a, 2023-03-20).
const SCANS_FIXED: u32 = 20230321;
/// The releases that refuse address-less forwarding specs without IPv6 (upstream #591).
const DUAL_STACK_ONLY: std::ops::Range<u32> = 20260507..20260526;

/// The release date in pasta's `--version` output (`pasta 2023_06_25.32660ce`, Debian's
/// `pasta 0.0~git20261002.cba3570-1`) as `YYYYMMDD`, if it names one: the first line that
/// starts with the program's name (a warning on stderr, such as a missing AVX2 build, may come
/// first).
pub(crate) fn version_date(version: &str) -> Option<u32> {
    let first = version
        .lines()
        .find(|l| l.starts_with("pasta ") || l.starts_with("passt "))?;
    let b = first.as_bytes();
    (0..b.len()).find_map(|i| {
        let digits = |r: std::ops::Range<usize>| {
            b.get(r.clone())
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .map(|d| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
        };
        if i > 0 && b[i - 1].is_ascii_digit() {
            return None;
        }
        let (y, m, d) = if b.get(i + 4) == Some(&b'_') && b.get(i + 7) == Some(&b'_') {
            (
                digits(i..i + 4)?,
                digits(i + 5..i + 7)?,
                digits(i + 8..i + 10)?,
            )
        } else {
            (
                digits(i..i + 4)?,
                digits(i + 4..i + 6)?,
                digits(i + 6..i + 8)?,
            )
        };
        ((2020..2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
            .then_some(y * 10000 + m * 100 + d)
    })
}

/// Everything decided before launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The resolved binary.
    pub binary: PathBuf,
    /// `--mtu`.
    pub mtu: u32,
    /// `--ns-ifname`.
    pub ifname: String,
    /// The child's addresses.
    pub addrs: Addrs,
    /// `--no-map-gw`.
    pub disable_host_loopback: bool,
    /// `--tcp-ns=none --udp-ns=none`: `--disable-host-loopback`, unless an old pasta's
    /// implicit ports need them (see [`Features::separate_port_scans`]).
    pub no_ns_forwarding: bool,
    /// The fixed IPv6 configuration; without it, `--ipv4-only`.
    pub ipv6: bool,
    /// `--tcp-ports=auto --udp-ports=auto` (`--port-driver=implicit`) instead of `none`.
    pub implicit_ports: bool,
    /// `0.0.0.0/auto` instead of `auto`: IPv4-only on a release that takes only dual-stack
    /// address-less specs (see [`Features::dual_stack_specs_only`]).
    pub ipv4_auto: bool,
    /// `--host-lo-to-ns-lo` (not with pesto's rules).
    pub host_lo_to_ns_lo: bool,
    /// `--port-driver=pesto`: pasta opens its control socket ([`CONTROL_SOCKET`]).
    pub control_socket: bool,
}

/// Turns options and probe results into a [`Plan`].
///
/// # Errors
/// Address overflow and a bad interface name.
pub(crate) fn plan(opts: &NetOptions, binary: PathBuf, features: Features) -> Result<Plan, String> {
    let ifname = super::interface_name(opts.ifname.as_deref())?;
    let addrs = Addrs::of(opts.cidr)?;
    Ok(Plan {
        no_ns_forwarding: (opts.disable_host_loopback
            && (features.separate_port_scans || !opts.driver_ports))
            || (features.dual_stack_specs_only && !opts.ipv6),
        ipv4_auto: features.dual_stack_specs_only && !opts.ipv6,
        binary,
        mtu: if opts.mtu == 0 { DEFAULT_MTU } else { opts.mtu },
        ifname,
        addrs,
        disable_host_loopback: opts.disable_host_loopback,
        ipv6: opts.ipv6,
        implicit_ports: opts.driver_ports,
        host_lo_to_ns_lo: features.host_lo_to_ns_lo,
        control_socket: opts.pesto,
    })
}

impl Plan {
    /// pasta's arguments (after argv\[0\]) for the child's namespace, or for the detached one
    /// entered through the child's user namespace.
    pub(crate) fn args(&self, target: Target<'_>) -> Vec<OsString> {
        let child_pid = target.child_pid;
        let mut args: Vec<OsString> = vec![
            "--stderr".into(),
            "--foreground".into(),
            format!("--ns-ifname={}", self.ifname).into(),
            format!("--mtu={}", self.mtu).into(),
            "--config-net".into(),
            format!("--address={}", super::ipv4_text(self.addrs.addr)).into(),
            format!("--netmask={}", self.addrs.prefix).into(),
            format!("--gateway={}", super::ipv4_text(self.addrs.gateway)).into(),
            format!("--dns-forward={}", super::ipv4_text(self.addrs.dns)).into(),
        ];
        if self.ipv6 {
            // Fixed, as upstream since #620: without them pasta copies the host's IPv6 address
            // and routes into the namespace, and the host's own address becomes a local one
            // there.
            args.push(format!("--address={CHILD_IP6}").into());
            args.push(format!("--gateway={GATEWAY6}").into());
            args.push(format!("--dns-forward={DNS6}").into());
        }
        if self.disable_host_loopback {
            // `--no-map-gw` closes the gateway's mapping to the host's loopback; pasta's
            // namespace-to-host forwarding (`-T`/`-U`, `auto` by default) would still splice a
            // connection to the namespace's 127.0.0.1:PORT to the host's (upstream #612).
            args.push("--no-map-gw".into());
        }
        if self.no_ns_forwarding {
            args.push("--tcp-ns=none".into());
            args.push("--udp-ns=none".into());
        }
        if !self.ipv6 {
            args.push("--ipv4-only".into());
        }
        let ports = match (self.implicit_ports, self.ipv4_auto) {
            (false, _) => "none",
            (true, false) => "auto",
            (true, true) => "0.0.0.0/auto",
        };
        args.push(format!("--tcp-ports={ports}").into());
        args.push(format!("--udp-ports={ports}").into());
        // Only for pasta's own forwarding: pesto's rules lead to the namespace's address, where
        // the API's users (Docker's docker-proxy) listen, not to its loopback.
        if self.host_lo_to_ns_lo && !self.control_socket {
            args.push("--host-lo-to-ns-lo".into());
        }
        if self.control_socket {
            args.push(prefixed(
                "--conf-path=",
                &target.state_dir.join(CONTROL_SOCKET),
            ));
        }
        args.push(prefixed("--pid=", &target.state_dir.join(PID_FIFO)));
        match target.netns {
            None => args.push(child_pid.to_string().into()),
            Some(path) => {
                args.push(format!("--userns=/proc/{child_pid}/ns/user").into());
                args.push(prefixed("--netns=", path));
            }
        }
        args
    }

    /// What the child gets, the DNS servers, and pasta's control socket under `state_dir`
    /// when the pesto port driver will use it.
    pub(crate) fn prepared(&self, state_dir: &Path) -> Prepared {
        let mut dns = vec![super::ipv4_text(self.addrs.dns)];
        if self.ipv6 {
            dns.push(DNS6.into());
        }
        Prepared {
            net: super::net_config(
                NetMode::Preconfigured,
                &self.ifname,
                &self.addrs,
                self.mtu,
                None,
            ),
            api_socket: self.control_socket.then(|| state_dir.join(CONTROL_SOCKET)),
            dns,
        }
    }
}

fn prefixed(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path.as_os_str());
    arg
}

/// upstream's failure text, with a hint naming [`MINIMUM_VERSION`] when pasta did not know an
/// option we passed.
fn failure_text(code: i32, output: &str) -> String {
    let mut text = format!("pasta failed with exit code {code}:\n{output}");
    if output.contains("unrecognized option") || output.contains("invalid option") {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "this pasta is too old: rootlesskit needs pasta (passt) {MINIMUM_VERSION} or later"
        ));
    }
    text
}

/// The pasta network driver.
#[derive(Debug)]
pub(crate) struct Pasta {
    plan: Plan,
    running: Option<Running>,
    ready_timeout: Duration,
    /// A relaunched pasta's pid FIFO, its path, and what was read from it so far, until a
    /// whole line came.
    pending: Option<(OwnedFd, PathBuf, Vec<u8>)>,
}

impl Pasta {
    /// Finds the binary (`$PATH`), checks that `--version` runs, and probes `--host-lo-to-ns-lo`.
    ///
    /// # Errors
    /// Go's lookup error, the `--version` failure, or a [`plan`] error.
    pub(crate) fn probe(opts: &NetOptions) -> Result<Pasta, String> {
        let binary = exec::look_path(OsStr::new(&opts.binary))?;
        let fail = |out: &[u8], err: String| {
            format!(
                "command \"{} --version\" failed, make sure pasta is installed: {}: {err}",
                binary.display(),
                exec::quote(&String::from_utf8_lossy(out))
            )
        };
        let (status, out) =
            exec::run_with_output(&binary, &["--version".into()]).map_err(|e| fail(b"", e))?;
        if !status.success() {
            return Err(fail(&out, exec::exit_text(status)));
        }
        let date = version_date(&String::from_utf8_lossy(&out));
        let separate_port_scans = date.is_some_and(|d| d >= SCANS_FIXED);
        let dual_stack_specs_only = date.is_some_and(|d| DUAL_STACK_ONLY.contains(&d));
        let host_lo_to_ns_lo =
            exec::run_with_output(&binary, &["--host-lo-to-ns-lo".into(), "--version".into()])
                .is_ok_and(|(status, _)| status.success());
        if opts.pesto {
            // The port driver's client; pasta releases that ship it have `--conf-path`.
            crate::port::pesto::look_up()?;
        }
        let features = Features {
            host_lo_to_ns_lo,
            separate_port_scans,
            dual_stack_specs_only,
        };
        let plan = plan(opts, binary, features)?;
        if plan.no_ns_forwarding && !plan.disable_host_loopback {
            crate::warn(
                "this pasta (2026_05_07) cannot forward the namespace's loopback to the host's \
                 without IPv6 (upstream #591): that forwarding is off; use --ipv6 or another \
                 pasta (passt) release",
            );
        }
        if plan.disable_host_loopback && !plan.no_ns_forwarding {
            crate::warn(
                "this pasta (older than 2023_03_20) cannot keep the namespace from the host's \
                 loopback with --port-driver=implicit: --disable-host-loopback closes only the \
                 gateway's path; upgrade pasta (passt)",
            );
        }
        Ok(Pasta {
            plan,
            running: None,
            ready_timeout: READY_TIMEOUT,
            pending: None,
        })
    }

    #[cfg(test)]
    /// The plan the probe settled on.
    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The pid of the running pasta, if any.
    pub(crate) fn pid(&self) -> Option<i32> {
        self.running.as_ref().filter(|r| !r.reaped).map(|r| r.pid)
    }

    /// Makes the FIFO at `path` (replacing a stale file) and opens its read end, non-blocking so
    /// that neither the open nor a read waits for pasta.
    fn open_fifo(path: &Path) -> Result<OwnedFd, String> {
        let sys =
            |what: &str, e: Errno| format!("{what} {}: {}", path.display(), sys::errno::text(e));
        let _ = std::fs::remove_file(path);
        rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)
            .map_err(|e| sys("mkfifo", e))?;
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(path);
            sys("open", e)
        })
    }

    fn launch(&mut self, target: Target<'_>, watch: &[BorrowedFd<'_>]) -> Result<(), StartError> {
        let failed = StartError::Failed;
        let args = self.plan.args(target);
        let executing = |e: String| {
            let mut shown = self.plan.binary.display().to_string();
            for a in &args {
                shown.push(' ');
                shown.push_str(&a.to_string_lossy());
            }
            failed(format!("executing {shown}: {e}"))
        };
        let fifo_path = target.state_dir.join(PID_FIFO);
        let fifo = Self::open_fifo(&fifo_path).map_err(executing)?;
        let started = Running::start(&self.plan.binary, &args, Vec::new()).map_err(executing);
        let waited = started.map(|run| {
            let run = self.running.insert(run);
            let waited = run.wait_ready(
                "pasta",
                fifo.as_fd(),
                watch,
                self.ready_timeout,
                &mut pid_line_reader(&fifo),
            );
            (waited, run)
        });
        let _ = std::fs::remove_file(&fifo_path);
        let (waited, run) = waited?;
        match waited {
            Ok(()) => Ok(()),
            Err(Wait::Interrupted) => Err(StartError::Interrupted),
            Err(Wait::Failed(e)) => Err(failed(e)),
            Err(Wait::Exited(status)) => Err(failed(match status.code() {
                Some(code) => failure_text(code, &String::from_utf8_lossy(&run.output())),
                None => run.exit_summary("pasta", status),
            })),
        }
    }
}

/// Reads what pasta writes into the FIFO; ready at the end of the first line, the pid.
fn pid_line_reader(fifo: &OwnedFd) -> impl FnMut() -> Result<Readiness, String> + '_ {
    let mut got = Vec::new();
    move || read_pid_line(fifo, &mut got)
}

/// One read of the pid FIFO, `got` holding what came before: ready once a whole line is there.
fn read_pid_line(fifo: &OwnedFd, got: &mut Vec<u8>) -> Result<Readiness, String> {
    let mut buf = [0u8; 32];
    match rustix::io::read(fifo, &mut buf) {
        Ok(0) => Ok(Readiness::Closed),
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            Ok(if got.contains(&b'\n') {
                Readiness::Ready
            } else {
                Readiness::NotYet
            })
        }
        Err(Errno::INTR) | Err(Errno::AGAIN) => Ok(Readiness::NotYet),
        Err(e) => Err(format!("reading the pid of pasta: {}", sys::errno::text(e))),
    }
}

impl Driver for Pasta {
    fn name(&self) -> &'static str {
        "pasta"
    }

    fn start(
        &mut self,
        target: Target<'_>,
        watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, StartError> {
        if self.pid().is_some() {
            return Err(StartError::Failed("pasta is already running".into()));
        }
        match self.launch(target, watch) {
            Ok(()) => Ok(self.plan.prepared(target.state_dir)),
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    fn stop(&mut self) {
        helper::stop(&mut self.running);
    }

    fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        helper::exit_fd(&self.running)
    }

    fn describe_exit(&mut self) -> String {
        helper::describe_exit(&mut self.running)
    }

    fn restartable(&self) -> bool {
        true
    }

    fn relaunch(&mut self, target: Target<'_>) -> Result<(), String> {
        self.stop();
        self.drop_pending();
        let args = self.plan.args(target);
        let fifo_path = target.state_dir.join(PID_FIFO);
        let fifo = Self::open_fifo(&fifo_path)?;
        match Running::start(&self.plan.binary, &args, Vec::new()) {
            Ok(run) => {
                self.running = Some(run);
                self.pending = Some((fifo, fifo_path, Vec::new()));
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&fifo_path);
                Err(e)
            }
        }
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pending.as_ref().map(|(fd, _, _)| fd.as_fd())
    }

    fn check_ready(&mut self) -> Result<Readiness, String> {
        let Some((fifo, _, got)) = self.pending.as_mut() else {
            return Ok(Readiness::Closed);
        };
        let r = read_pid_line(fifo, got);
        if !matches!(r, Ok(Readiness::NotYet)) {
            self.drop_pending();
        }
        r
    }
}

impl Pasta {
    /// Forgets a relaunch's FIFO and removes its file.
    fn drop_pending(&mut self) {
        if let Some((_, path, _)) = self.pending.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        self.drop_pending();
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NetOptions {
        NetOptions {
            binary: "pasta".into(),
            ..NetOptions::default()
        }
    }

    fn args_text(o: &NetOptions, f: Features, netns: Option<&str>) -> String {
        let p = plan(o, "/usr/bin/pasta".into(), f).unwrap();
        p.args(Target {
            child_pid: 4242,
            netns: netns.map(Path::new),
            state_dir: Path::new("/run/user/1000/rk"),
        })
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
    }

    const BASE: &str = "--stderr --foreground --ns-ifname=tap0 --mtu=65520 --config-net \
                        --address=10.0.2.100 --netmask=24 --gateway=10.0.2.2 --dns-forward=10.0.2.3";
    const PID: &str = "--pid=/run/user/1000/rk/pasta.pid";

    #[test]
    fn command_lines() {
        let check = |o: NetOptions, f: Features, netns: Option<&str>, expect: String| {
            assert_eq!(args_text(&o, f, netns), expect, "{o:?} {f:?}");
        };
        let none = Features::default();
        let lo = Features {
            host_lo_to_ns_lo: true,
            separate_port_scans: true,
            dual_stack_specs_only: false,
        };
        let may2026 = Features {
            dual_stack_specs_only: true,
            ..lo
        };
        check(
            opts(),
            none,
            None,
            format!("{BASE} --ipv4-only --tcp-ports=none --udp-ports=none {PID} 4242"),
        );
        check(
            NetOptions {
                disable_host_loopback: true,
                ..opts()
            },
            none,
            None,
            format!(
                "{BASE} --no-map-gw --tcp-ns=none --udp-ns=none --ipv4-only --tcp-ports=none \
                 --udp-ports=none {PID} 4242"
            ),
        );
        check(
            NetOptions {
                ipv6: true,
                ..opts()
            },
            none,
            None,
            format!(
                "{BASE} --address=fd00::100 --gateway=fd00::2 --dns-forward=fd00::3 \
                 --tcp-ports=none --udp-ports=none {PID} 4242"
            ),
        );
        check(
            NetOptions {
                pesto: true,
                ..opts()
            },
            lo,
            None,
            format!(
                "{BASE} --ipv4-only --tcp-ports=none --udp-ports=none \
                 --conf-path=/run/user/1000/rk/pasta.sock {PID} 4242"
            ),
        );
        check(
            NetOptions {
                driver_ports: true,
                ..opts()
            },
            none,
            None,
            format!("{BASE} --ipv4-only --tcp-ports=auto --udp-ports=auto {PID} 4242"),
        );
        // Before 2023_03_20 `-T none` would stop `-t auto` (and not close the loopback path).
        check(
            NetOptions {
                driver_ports: true,
                disable_host_loopback: true,
                ..opts()
            },
            none,
            None,
            format!("{BASE} --no-map-gw --ipv4-only --tcp-ports=auto --udp-ports=auto {PID} 4242"),
        );
        check(
            NetOptions {
                driver_ports: true,
                disable_host_loopback: true,
                ..opts()
            },
            Features {
                separate_port_scans: true,
                ..none
            },
            None,
            format!(
                "{BASE} --no-map-gw --tcp-ns=none --udp-ns=none --ipv4-only --tcp-ports=auto \
                 --udp-ports=auto {PID} 4242"
            ),
        );
        check(
            opts(),
            lo,
            None,
            format!(
                "{BASE} --ipv4-only --tcp-ports=none --udp-ports=none --host-lo-to-ns-lo {PID} 4242"
            ),
        );
        // passt 2026_05_07 without IPv6: every spec names an IPv4 address, and `-T`/`-U`,
        // which cannot, are off (upstream #591).
        check(
            NetOptions {
                driver_ports: true,
                ..opts()
            },
            may2026,
            None,
            format!(
                "{BASE} --tcp-ns=none --udp-ns=none --ipv4-only --tcp-ports=0.0.0.0/auto \
                 --udp-ports=0.0.0.0/auto --host-lo-to-ns-lo {PID} 4242"
            ),
        );
        check(
            NetOptions {
                driver_ports: true,
                ipv6: true,
                ..opts()
            },
            may2026,
            None,
            format!(
                "{BASE} --address=fd00::100 --gateway=fd00::2 --dns-forward=fd00::3 \
                 --tcp-ports=auto --udp-ports=auto --host-lo-to-ns-lo {PID} 4242"
            ),
        );
        check(
            NetOptions {
                mtu: 1500,
                cidr: Some(([10, 8, 0, 0], 16)),
                ifname: Some("eth0".into()),
                disable_host_loopback: true,
                ipv6: true,
                driver_ports: true,
                ..opts()
            },
            lo,
            Some("/proc/4242/root/tmp/rk/netns"),
            format!(
                "--stderr --foreground --ns-ifname=eth0 --mtu=1500 --config-net \
                 --address=10.8.0.100 --netmask=16 --gateway=10.8.0.2 --dns-forward=10.8.0.3 \
                 --address=fd00::100 --gateway=fd00::2 --dns-forward=fd00::3 \
                 --no-map-gw --tcp-ns=none --udp-ns=none --tcp-ports=auto --udp-ports=auto --host-lo-to-ns-lo {PID} \
                 --userns=/proc/4242/ns/user --netns=/proc/4242/root/tmp/rk/netns"
            ),
        );
    }

    #[test]
    fn release_dates() {
        for (text, want) in [
            (
                "pasta 2023_06_25.32660ce\nCopyright Red Hat\n",
                Some(20230625),
            ),
            ("pasta 0.0~git20261002.cba3570-1\n", Some(20261002)),
            ("pasta 0.0~git20230309.7c7625d-1\n", Some(20230309)),
            ("pasta 2026_05_07.1afd4ed\n", Some(20260507)),
            (
                "Can't run AVX2 build, using non-AVX2 version: No such file or directory\n\
                 pasta 2026_05_07.1afd4ed\n",
                Some(20260507),
            ),
            ("unknown 2026_05_07\n", None),
            ("pasta unknown version\nCopyright Red Hat\n", None),
            ("pasta 2023_13_01\n", None),
            ("", None),
            ("pasta 1.2.3\n2023_06_25\n", None),
        ] {
            assert_eq!(version_date(text), want, "{text:?}");
        }
    }

    #[test]
    fn plan_errors() {
        let check = |o: NetOptions, expect: &str| {
            assert_eq!(
                plan(&o, "/usr/bin/pasta".into(), Features::default())
                    .err()
                    .as_deref(),
                Some(expect)
            );
        };
        check(
            NetOptions {
                cidr: Some(([255, 255, 255, 192], 26)),
                ..opts()
            },
            "255.255.255.192 + 100 overflows",
        );
        check(
            NetOptions {
                ifname: Some("x".repeat(16)),
                ..opts()
            },
            r#"ifname "xxxxxxxxxxxxxxxx" is longer than 15 bytes"#,
        );
    }

    #[test]
    fn what_the_child_gets() {
        let o = NetOptions {
            ipv6: true,
            mtu: 9000,
            ..opts()
        };
        let got = plan(&o, "/usr/bin/pasta".into(), Features::default())
            .unwrap()
            .prepared(Path::new("/run/rk"));
        assert_eq!(got.net.mode, NetMode::Preconfigured);
        assert_eq!(got.net.ifname_str(), "tap0");
        assert_eq!(
            (
                got.net.addr,
                got.net.prefix,
                got.net.gateway,
                got.net.dns,
                got.net.mtu
            ),
            ([10, 0, 2, 100], 24, [10, 0, 2, 2], [10, 0, 2, 3], 9000)
        );
        assert_eq!(got.net.dns6, [0; 16]);
        // pasta forwards fd00::3 to the host's resolver.
        assert_eq!(got.dns, ["10.0.2.3", "fd00::3"]);
        assert_eq!(got.api_socket, None);
        let pesto = plan(
            &NetOptions {
                pesto: true,
                ..opts()
            },
            "/usr/bin/pasta".into(),
            Features::default(),
        )
        .unwrap()
        .prepared(Path::new("/run/rk"));
        assert_eq!(pesto.dns, ["10.0.2.3"]);
        assert_eq!(pesto.api_socket, Some(PathBuf::from("/run/rk/pasta.sock")));
    }

    #[test]
    fn failure_texts() {
        assert_eq!(
            failure_text(1, "boom\n"),
            "pasta failed with exit code 1:\nboom\n"
        );
        assert_eq!(failure_text(-1, ""), "pasta failed with exit code -1:\n");
        assert_eq!(
            failure_text(1, "pasta: unrecognized option '--host-lo-to-ns-lo'"),
            "pasta failed with exit code 1:\npasta: unrecognized option '--host-lo-to-ns-lo'\n\
             this pasta is too old: rootlesskit needs pasta (passt) 2023_06_25 or later"
        );
    }

    use crate::testutil::{TempDir, retry_busy};

    /// A fake pasta: `--version` works, `--host-lo-to-ns-lo` only when `new`; a run records its
    /// arguments, says something, runs `body` (before it is ready) and then behaves like pasta in
    /// the foreground: writes its pid to the `--pid` path and keeps running.
    fn fake_pasta(dir: &TempDir, name: &str, new: bool, body: &str) -> PathBuf {
        let log = dir.0.join(format!("{name}.args"));
        let lo = if new {
            "exit 0"
        } else {
            "echo \"$0: unrecognized option '$1'\" >&2; exit 1"
        };
        dir.script(
            name,
            &format!(
                "case \"$1\" in\n\
                 --version) echo 'pasta unknown version'; exit 0;;\n\
                 --host-lo-to-ns-lo) {lo};;\n\
                 esac\n\
                 echo \"$@\" > {log}\n\
                 for a; do case \"$a\" in --pid=*) f=\"${{a#--pid=}}\";; esac; done\n\
                 echo 'Namespace interface: tap0' >&2\n\
                 {body}\n\
                 echo $$ > \"$f\"\n\
                 exec sleep 60",
                log = log.display(),
            ),
        )
    }

    fn probe(binary: &Path, o: NetOptions) -> Result<Pasta, String> {
        retry_busy(|| {
            Pasta::probe(&NetOptions {
                binary: binary.display().to_string(),
                ..o.clone()
            })
        })
    }

    /// A driver for the fake pasta `body` (see [`fake_pasta`]), with a readiness timeout.
    fn fake(dir: &TempDir, name: &str, body: &str, timeout: Duration) -> Pasta {
        let bin = fake_pasta(dir, name, false, body);
        let mut p = probe(&bin, opts()).unwrap();
        p.ready_timeout = timeout;
        p
    }

    fn target(state_dir: &Path) -> Target<'_> {
        Target {
            child_pid: 4242,
            netns: None,
            state_dir,
        }
    }

    fn start(
        p: &mut Pasta,
        state_dir: &Path,
        watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, String> {
        retry_busy(|| match p.start(target(state_dir), watch) {
            Ok(got) => Ok(got),
            Err(StartError::Failed(e)) => Err(e),
            Err(StartError::Interrupted) => Err("interrupted".into()),
        })
    }

    #[test]
    fn probing_a_binary() {
        let dir = TempDir::new("probe");
        let old = fake_pasta(&dir, "old", false, "");
        let new = fake_pasta(&dir, "new", true, "");
        assert!(!probe(&old, opts()).unwrap().plan().host_lo_to_ns_lo);
        assert!(probe(&new, opts()).unwrap().plan().host_lo_to_ns_lo);
        let broken = dir.script("broken", "echo 'cannot run' >&2; exit 1");
        assert_eq!(
            probe(&broken, opts()).err(),
            Some(format!(
                r#"command "{} --version" failed, make sure pasta is installed: "cannot run\n": exit status 1"#,
                broken.display()
            ))
        );
        assert_eq!(
            probe(Path::new("no-such-pasta-for-rkrs"), opts())
                .err()
                .as_deref(),
            Some(r#"exec: "no-such-pasta-for-rkrs": executable file not found in $PATH"#)
        );
    }

    #[test]
    fn probing_reads_the_release() {
        let dir = TempDir::new("release");
        let with = |name: &str, version: &str, o: NetOptions| {
            let bin = dir.script(name, &format!("echo '{version}'\nexit 0"));
            let p = probe(&bin, o).unwrap();
            (p.plan().no_ns_forwarding, p.plan().ipv4_auto)
        };
        let implicit = NetOptions {
            driver_ports: true,
            ..opts()
        };
        let guarded = NetOptions {
            disable_host_loopback: true,
            ..implicit.clone()
        };
        // Debian 12's: -T none would stop -t auto, so it is not passed (with a warning).
        assert_eq!(
            with("deb12", "pasta unknown version", guarded.clone()),
            (false, false)
        );
        assert_eq!(
            with("sid", "pasta 0.0~git20261002.cba3570-1", guarded),
            (true, false)
        );
        assert_eq!(
            with("may", "pasta 2026_05_07.1afd4ed", implicit.clone()),
            (true, true)
        );
        assert_eq!(
            with("june", "pasta 2026_06_11.a9c61ff", implicit),
            (false, false)
        );
    }

    #[test]
    fn probing_the_installed_pasta() {
        let Ok(path) = exec::look_path(OsStr::new("pasta")) else {
            eprintln!("skipped: pasta is not installed");
            return;
        };
        let p = Pasta::probe(&NetOptions {
            binary: path.display().to_string(),
            ..opts()
        })
        .unwrap();
        // Whatever the release, the probe must agree with pasta itself.
        let (status, _) =
            exec::run_with_output(&path, &["--host-lo-to-ns-lo".into(), "--version".into()])
                .unwrap();
        assert_eq!(p.plan().host_lo_to_ns_lo, status.success());
    }

    fn alive(pid: i32) -> bool {
        rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap()).is_ok()
    }

    /// Gone or a zombie within a few seconds: killed, whether or not we reaped it.
    fn dies(pid: i32) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(st) if st.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => {
                    return true;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        false
    }

    #[test]
    fn runs_in_the_foreground_until_stopped() {
        let dir = TempDir::new("run");
        // A stale pid file from an earlier run is replaced by the FIFO.
        std::fs::write(dir.0.join("pasta.pid"), "1\n").unwrap();
        // Slow to configure: the wait must last until the pid is written.
        let mut p = fake(&dir, "pasta", "sleep 0.3", Duration::from_secs(20));
        let got = start(&mut p, &dir.0, &[]).unwrap();
        assert_eq!(got, p.plan().prepared(&dir.0));
        assert_eq!(
            std::fs::read_to_string(dir.0.join("pasta.args")).unwrap(),
            format!(
                "{BASE} --ipv4-only --tcp-ports=none --udp-ports=none --pid={} 4242\n",
                dir.0.join("pasta.pid").display()
            )
        );
        assert!(!dir.0.join("pasta.pid").exists(), "FIFO removed");
        let pid = p.pid().expect("running");
        assert!(alive(pid));
        assert!(p.exit_fd().is_some());
        assert_eq!(
            start(&mut p, &dir.0, &[]).err().as_deref(),
            Some("pasta is already running")
        );
        p.stop();
        assert!(dies(pid), "killed");
        assert_eq!(p.pid(), None);
        assert!(p.exit_fd().is_none());
        p.stop();

        // Dropping the driver stops pasta too.
        let mut p = fake(&dir, "pasta2", "", Duration::from_secs(20));
        start(&mut p, &dir.0, &[]).unwrap();
        let pid = p.pid().unwrap();
        drop(p);
        assert!(dies(pid));
    }

    #[test]
    fn reports_pasta_dying_after_it_was_ready() {
        let dir = TempDir::new("dies");
        let bin = dir.script(
            "pasta",
            "[ \"$1\" = --version ] && exit 0\n\
             for a; do case \"$a\" in --pid=*) f=\"${a#--pid=}\";; esac; done\n\
             echo $$ > \"$f\"\nsleep 0.2\necho 'Failed to read from tap' >&2\nexit 3",
        );
        let mut p = probe(&bin, opts()).unwrap();
        start(&mut p, &dir.0, &[]).unwrap();
        let fd = p.exit_fd().expect("watched").try_clone_to_owned().unwrap();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        rustix::event::poll(&mut fds, None).unwrap();
        assert_eq!(
            p.describe_exit(),
            r#"exit status 3; last output: "Failed to read from tap""#
        );
        assert!(p.exit_fd().is_none(), "reaped");
        assert_eq!(p.pid(), None);
    }

    #[test]
    fn failures() {
        let dir = TempDir::new("fail");
        let check = |name: &str, body: &str, expect: &str| {
            let mut p = fake(&dir, name, body, Duration::from_secs(20));
            assert_eq!(start(&mut p, &dir.0, &[]).err().as_deref(), Some(expect));
            assert_eq!(p.pid(), None);
            assert!(!dir.0.join("pasta.pid").exists(), "FIFO removed");
        };
        check(
            "tap",
            "echo 'Failed to open tap device' >&2\nexit 1",
            "pasta failed with exit code 1:\nNamespace interface: tap0\nFailed to open tap device\n",
        );
        check(
            "old",
            "echo \"$0: unrecognized option '--foreground'\" >&2\nexit 1",
            &format!(
                "pasta failed with exit code 1:\nNamespace interface: tap0\n{}/old: unrecognized \
                 option '--foreground'\nthis pasta is too old: rootlesskit needs pasta (passt) \
                 2023_06_25 or later",
                dir.0.display()
            ),
        );
        // It opens the pid file and closes it without a pid: the exit is still waited for.
        check(
            "closes",
            ": > \"$f\"\nsleep 0.2\nexit 2",
            "pasta failed with exit code 2:\nNamespace interface: tap0\n",
        );
        check(
            "killed",
            "kill -9 $$",
            r#"pasta killed by signal (signal: killed); last output: "Namespace interface: tap0""#,
        );
        let mut p = fake(&dir, "slow", "sleep 60", Duration::from_millis(300));
        assert_eq!(
            start(&mut p, &dir.0, &[]).err().as_deref(),
            Some(
                r#"pasta did not become ready within 300ms; last output: "Namespace interface: tap0""#
            )
        );
        assert_eq!(p.pid(), None);
        assert!(!dir.0.join("pasta.pid").exists(), "FIFO removed");
    }

    #[test]
    fn a_watched_descriptor_interrupts() {
        let dir = TempDir::new("watch");
        let pidfile = dir.0.join("started");
        let mut p = fake(
            &dir,
            "pasta",
            &format!("echo $$ > {}\nexec sleep 60", pidfile.display()),
            Duration::from_secs(20),
        );
        let (r, w) = rustix::pipe::pipe().unwrap();
        // Nothing written yet: the wait goes on until the byte arrives.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            rustix::io::write(&w, b"x").unwrap();
            w
        });
        let got = retry_busy(|| match p.start(target(&dir.0), &[r.as_fd()]) {
            Err(StartError::Failed(e)) => Err(e),
            other => Ok(other),
        });
        let _w = writer.join().unwrap();
        assert_eq!(got, Ok(Err(StartError::Interrupted)));
        assert_eq!(p.pid(), None);
        assert!(!dir.0.join("pasta.pid").exists(), "FIFO removed");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(dies(pid));
    }

    #[test]
    fn a_program_that_cannot_start() {
        let dir = TempDir::new("noexec");
        let bin = fake_pasta(&dir, "pasta", false, "");
        let mut p = probe(&bin, opts()).unwrap();
        let plain = dir.0.join("plain");
        std::fs::write(&plain, "").unwrap();
        p.plan.binary = plain.clone();
        let err = start(&mut p, &dir.0, &[]).unwrap_err();
        // Even root needs an execute bit to exec a file.
        assert_eq!(
            err,
            format!(
                "executing {0} {BASE} --ipv4-only --tcp-ports=none --udp-ports=none --pid={1} \
                 4242: fork/exec {0}: permission denied",
                plain.display(),
                dir.0.join("pasta.pid").display()
            )
        );
        assert!(!dir.0.join("pasta.pid").exists(), "FIFO removed");
        let err = start(&mut p, &dir.0.join("missing"), &[]).unwrap_err();
        assert!(
            err.ends_with(&format!(
                "mkfifo {}: no such file or directory",
                dir.0.join("missing/pasta.pid").display()
            )),
            "{err}"
        );
    }
}
