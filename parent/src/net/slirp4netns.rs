//! `--net=slirp4netns`: probing the installed slirp4netns, building its command line, launching it
//! with a ready pipe and waiting until it has attached its tap to the child's network namespace.
//!
//! slirp4netns (checked with 1.2.0) creates the tap device itself when it joins the namespace, so
//! unlike upstream we pre-create nothing; the tap comes up down, with MTU 1500 and no address,
//! and the child configures it from the [`NetMode::Configure`] frame.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::{NetConfig, NetMode};
use rustix::io::Errno;

use super::helper::{self, Readiness, Running, Wait};
use super::{Addrs, DEFAULT_MTU, Driver, NetOptions, Prepared, StartError, Target};
use crate::cli::Tristate;
use crate::exec;

/// How long slirp4netns may take to report readiness.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The IPv6 DNS forwarder slirp4netns serves with `--enable-ipv6`.
pub(crate) const DNS6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
/// The API socket's name in the state dir.
pub(crate) const API_SOCKET: &str = ".s4nn.sock";

/// The optional flags an installed slirp4netns knows, read off its `--help`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Features {
    /// `--enable-ipv6`.
    pub enable_ipv6: bool,
    /// `--cidr`.
    pub cidr: bool,
    /// `--disable-host-loopback`.
    pub disable_host_loopback: bool,
    /// `--api-socket`.
    pub api_socket: bool,
    /// `--enable-sandbox`.
    pub enable_sandbox: bool,
    /// `--enable-seccomp`.
    pub enable_seccomp: bool,
}

/// The features named in `slirp4netns --help` output, found by substring as upstream does.
///
/// # Errors
/// `slirp4netns seems older than v0.4.0` when `--netns-type` is missing.
pub(crate) fn parse_help(help: &str) -> Result<Features, String> {
    if !help.contains("--netns-type") {
        return Err("slirp4netns seems older than v0.4.0".into());
    }
    Ok(Features {
        enable_ipv6: help.contains("--enable-ipv6"),
        cidr: help.contains("--cidr"),
        disable_host_loopback: help.contains("--disable-host-loopback"),
        api_socket: help.contains("--api-socket"),
        enable_sandbox: help.contains("--enable-sandbox"),
        enable_seccomp: help.contains("--enable-seccomp"),
    })
}

/// Whether the kernel has seccomp, from the text of `/proc/self/status` (the `Seccomp:` line
/// exists exactly when the kernel is built with it, which is what upstream's `prctl` probe asks).
pub(crate) fn kernel_seccomp(proc_self_status: &str) -> bool {
    proc_self_status.lines().any(|l| l.starts_with("Seccomp:"))
}

/// Everything decided before launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The resolved binary.
    pub binary: PathBuf,
    /// `--mtu`.
    pub mtu: u32,
    /// `--cidr`, when given on our command line.
    pub cidr: Option<([u8; 4], u8)>,
    /// The tap name.
    pub ifname: String,
    /// `--disable-host-loopback`.
    pub disable_host_loopback: bool,
    /// `--api-socket <statedir>/.s4nn.sock`, for the slirp4netns port driver.
    pub api_socket: bool,
    /// `--enable-sandbox`.
    pub sandbox: bool,
    /// `--enable-seccomp`.
    pub seccomp: bool,
    /// `--enable-ipv6`.
    pub ipv6: bool,
    /// The child's addresses.
    pub addrs: Addrs,
}

/// Turns options and probe results into a [`Plan`], with upstream's checks in upstream's order.
///
/// # Errors
/// `unsupported slirp4netns version: lacks Supports…`, `kernel doesn't support seccomp`,
/// `this version of slirp4netns does not support --…`, the sandbox/detach conflict,
/// address overflow and a bad interface name.
pub(crate) fn plan(
    opts: &NetOptions,
    binary: PathBuf,
    features: Features,
    kernel_seccomp: bool,
) -> Result<Plan, String> {
    let lacks = |what: &str| format!("unsupported slirp4netns version: lacks {what}");
    if opts.disable_host_loopback && !features.disable_host_loopback {
        return Err(lacks("SupportsDisableHostLoopback"));
    }
    if opts.driver_ports && !features.api_socket {
        return Err(lacks("SupportsAPISocket"));
    }
    let sandbox = match opts.sandbox {
        Tristate::Auto => features.enable_sandbox && !opts.detach_netns,
        Tristate::True => {
            if !features.enable_sandbox {
                return Err(lacks("SupportsEnableSandbox"));
            }
            if opts.detach_netns {
                return Err("--slirp4netns-sandbox conflicts with --detach-netns \
                            (https://github.com/rootless-containers/slirp4netns/issues/317)"
                    .into());
            }
            true
        }
        Tristate::False => false,
    };
    let seccomp = match opts.seccomp {
        Tristate::Auto => features.enable_seccomp && kernel_seccomp,
        Tristate::True => {
            if !features.enable_seccomp {
                return Err(lacks("SupportsEnableSeccomp"));
            }
            if !kernel_seccomp {
                return Err("kernel doesn't support seccomp".into());
            }
            true
        }
        Tristate::False => false,
    };
    // From here on the checks of upstream's NewParentDriver.
    let unsupported = |flag: &str| format!("this version of slirp4netns does not support --{flag}");
    if opts.ipv6 && !features.enable_ipv6 {
        return Err(unsupported("enable-ipv6"));
    }
    if opts.cidr.is_some() && !features.cidr {
        return Err(unsupported("cidr"));
    }
    let ifname = super::interface_name(opts.ifname.as_deref())?;
    let addrs = Addrs::of(opts.cidr)?;
    Ok(Plan {
        binary,
        mtu: if opts.mtu == 0 { DEFAULT_MTU } else { opts.mtu },
        cidr: opts.cidr,
        ifname,
        disable_host_loopback: opts.disable_host_loopback,
        api_socket: opts.driver_ports,
        sandbox,
        seccomp,
        ipv6: opts.ipv6,
        addrs,
    })
}

impl Plan {
    /// slirp4netns's arguments (after argv\[0\]) for the child's namespace, or for the detached
    /// one entered through the child's user namespace.
    pub(crate) fn args(&self, target: Target<'_>) -> Vec<OsString> {
        let child_pid = target.child_pid;
        let mut args: Vec<OsString> = vec![
            "--mtu".into(),
            self.mtu.to_string().into(),
            "-r".into(),
            "3".into(),
        ];
        if self.disable_host_loopback {
            args.push("--disable-host-loopback".into());
        }
        if let Some(cidr) = self.cidr {
            args.push("--cidr".into());
            args.push(super::cidr_text(cidr).into());
        }
        if self.api_socket {
            args.push("--api-socket".into());
            args.push(target.state_dir.join(API_SOCKET).into());
        }
        if self.sandbox {
            args.push("--enable-sandbox".into());
        }
        if self.seccomp {
            args.push("--enable-seccomp".into());
        }
        if self.ipv6 {
            args.push("--enable-ipv6".into());
        }
        match target.netns {
            None => args.push(child_pid.to_string().into()),
            Some(path) => {
                args.push(format!("--userns-path=/proc/{child_pid}/ns/user").into());
                args.push("--netns-type=path".into());
                args.push(path.into());
            }
        }
        args.push(self.ifname.clone().into());
        args
    }

    /// What the child must configure, the DNS servers and the API socket.
    pub(crate) fn prepared(&self, state_dir: &Path) -> Prepared {
        let dns6 = self.ipv6.then_some(DNS6);
        let mut dns = vec![super::ipv4_text(self.addrs.dns)];
        if self.ipv6 {
            dns.push("fd00::3".into());
        }
        Prepared {
            net: super::net_config(
                NetMode::Configure,
                &self.ifname,
                &self.addrs,
                self.mtu,
                dns6,
            ),
            api_socket: self.api_socket.then(|| state_dir.join(API_SOCKET)),
            dns,
        }
    }
}

/// Go's `exec.Cmd.String()`: the path and the arguments joined by spaces, unquoted.
pub(super) fn command_text(binary: &Path, args: &[OsString]) -> String {
    let mut text = binary.display().to_string();
    for a in args {
        text.push(' ');
        text.push_str(&a.to_string_lossy());
    }
    text
}

/// The slirp4netns network driver.
#[derive(Debug)]
pub(crate) struct Slirp4netns {
    /// Known once the probe is settled.
    plan: Option<Plan>,
    /// A probe still running: the options and the `--help` on its way.
    probing: Option<(NetOptions, PathBuf, exec::Pending)>,
    running: Option<Running>,
    ready_timeout: Duration,
    /// A relaunched slirp4netns's ready pipe, until it is ready.
    pending: Option<OwnedFd>,
}

impl Slirp4netns {
    #[cfg(test)]
    /// Finds the binary (`$PATH`), runs `<binary> --help` once and checks every option against it.
    ///
    /// # Errors
    /// Go's lookup error, the `--help` failure, or a [`plan`] error.
    pub(crate) fn probe(opts: &NetOptions) -> Result<Slirp4netns, String> {
        let mut d = Slirp4netns::probe_async(opts)?;
        d.settle()?;
        Ok(d)
    }

    /// [`Slirp4netns::probe`] with the `--help` left running: finds the binary (a missing one
    /// is still an error before anything else happens) and starts `<binary> --help`, whose
    /// output [`Driver::settle`] reads. The parent clones the child and writes its id maps
    /// meanwhile: the probe's exec (≈1.5 ms of dynamic loading) is off the start's path.
    ///
    /// # Errors
    /// Go's lookup error, or the `--help` that could not be started.
    pub(crate) fn probe_async(opts: &NetOptions) -> Result<Slirp4netns, String> {
        let binary = exec::look_path(std::ffi::OsStr::new(&opts.binary))?;
        let help = exec::start_with_output(&binary, &["--help".into()])
            .map_err(|e| help_failed(&binary, "", e))?;
        Ok(Slirp4netns {
            plan: None,
            probing: Some((opts.clone(), binary, help)),
            running: None,
            ready_timeout: READY_TIMEOUT,
            pending: None,
        })
    }

    /// The plan the probe settled on.
    #[cfg(test)]
    pub(crate) fn plan(&self) -> &Plan {
        self.plan.as_ref().expect("a settled probe")
    }

    /// The pid of the running slirp4netns, if any.
    pub(crate) fn pid(&self) -> Option<i32> {
        self.running.as_ref().filter(|r| !r.reaped).map(|r| r.pid)
    }

    /// Starts slirp4netns for `target` with a ready pipe on its fd 3; the read end, and the
    /// command line as shown in errors.
    fn spawn(&mut self, target: Target<'_>) -> Result<(OwnedFd, String), StartError> {
        let failed = StartError::Failed;
        if target.netns.is_some() && self.plan.as_ref().is_some_and(|p| p.sandbox) {
            return Err(failed(
                "slirp4netns sandbox is not compatible with detach-netns \
                 (https://github.com/rootless-containers/slirp4netns/issues/317)"
                    .into(),
            ));
        }
        let Some(plan) = &self.plan else {
            return Err(failed("slirp4netns was not probed".into()));
        };
        let args = plan.args(target);
        let shown = command_text(&plan.binary, &args);
        let executing = |e: String| failed(format!("executing {shown}: {e}"));
        let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| executing(sys::errno::text(e)))?;
        self.running =
            Some(Running::start(&plan.binary, &args, vec![(ready_w, 3)]).map_err(executing)?);
        Ok((ready_r, shown))
    }

    fn launch(&mut self, target: Target<'_>, watch: &[BorrowedFd<'_>]) -> Result<(), StartError> {
        let failed = StartError::Failed;
        let (ready_r, shown) = self.spawn(target)?;
        let Some(run) = self.running.as_mut() else {
            return Err(failed("slirp4netns is not running".into()));
        };
        let waiting = |e: String| failed(format!("waiting for ready fd ({shown}): {e}"));
        let mut read_ready = || read_ready_pipe(&ready_r);
        match run.wait_ready(
            "slirp4netns",
            ready_r.as_fd(),
            watch,
            self.ready_timeout,
            &mut read_ready,
        ) {
            Ok(()) => Ok(()),
            Err(Wait::Interrupted) => Err(StartError::Interrupted),
            Err(Wait::Failed(e)) => Err(waiting(e)),
            Err(Wait::Exited(status)) => Err(waiting(run.exit_summary("slirp4netns", status))),
        }
    }
}

/// Reads slirp4netns's ready pipe once it was readable: any byte means ready.
fn read_ready_pipe(ready: &OwnedFd) -> Result<Readiness, String> {
    let mut buf = [0u8; 16];
    match rustix::io::read(ready, &mut buf) {
        Ok(0) => Ok(Readiness::Closed),
        Ok(_) => Ok(Readiness::Ready),
        Err(Errno::INTR) | Err(Errno::AGAIN) => Ok(Readiness::NotYet),
        Err(e) => Err(format!(
            "failed to read from slirp4netns sync pipe: {}",
            sys::errno::text(e)
        )),
    }
}

/// Upstream's error for a `--help` that failed, with what it printed.
fn help_failed(binary: &Path, text: &str, err: String) -> String {
    format!(
        "command \"{} --help\" failed, make sure slirp4netns v0.4.0+ is installed: {}: {err}",
        binary.display(),
        exec::quote(text)
    )
}

/// The output of a `<binary> --help` started by [`exec::start_with_output`].
fn help_text(binary: &Path, help: exec::Pending) -> Result<String, String> {
    let (status, out) = help.finish().map_err(|e| help_failed(binary, "", e))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if status.success() {
        Ok(text)
    } else {
        Err(help_failed(binary, &text, exec::exit_text(status)))
    }
}

impl Driver for Slirp4netns {
    fn name(&self) -> &'static str {
        "slirp4netns"
    }

    fn persistent_tap(&self) -> Option<String> {
        if let Some(plan) = &self.plan {
            return Some(plan.ifname.clone());
        }
        let (opts, _, _) = self.probing.as_ref()?;
        super::interface_name(opts.ifname.as_deref()).ok()
    }

    fn settle(&mut self) -> Result<(), String> {
        let Some((opts, binary, help)) = self.probing.take() else {
            return Ok(());
        };
        let help = help_text(&binary, help)?;
        let features = parse_help(&help)?;
        let kernel = std::fs::read_to_string("/proc/self/status")
            .map(|s| kernel_seccomp(&s))
            .unwrap_or(false);
        self.plan = Some(plan(&opts, binary, features, kernel)?);
        Ok(())
    }

    fn start(
        &mut self,
        target: Target<'_>,
        watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, StartError> {
        if self.pid().is_some() {
            return Err(StartError::Failed("slirp4netns is already running".into()));
        }
        self.settle().map_err(StartError::Failed)?;
        match self.launch(target, watch) {
            // `launch` refuses to run without a plan.
            Ok(()) => match &self.plan {
                Some(p) => Ok(p.prepared(target.state_dir)),
                None => Err(StartError::Failed("slirp4netns was not probed".into())),
            },
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
        self.plan.is_some()
    }

    fn relaunch(&mut self, target: Target<'_>) -> Result<(), String> {
        self.stop();
        self.pending = None;
        // The dead one's API socket file is left behind; the new one binds the same path, and
        // its appearance tells that it listens.
        if self.plan.as_ref().is_some_and(|p| p.api_socket) {
            let _ = std::fs::remove_file(target.state_dir.join(API_SOCKET));
        }
        let (ready, _) = self.spawn(target).map_err(|e| e.to_string())?;
        self.pending = Some(ready);
        Ok(())
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pending.as_ref().map(|fd| fd.as_fd())
    }

    fn check_ready(&mut self) -> Result<Readiness, String> {
        let Some(fd) = &self.pending else {
            return Ok(Readiness::Closed);
        };
        let r = read_ready_pipe(fd);
        if !matches!(r, Ok(Readiness::NotYet)) {
            self.pending = None;
        }
        r
    }

    fn reconfigure(&self) -> Option<NetConfig> {
        self.plan.as_ref().map(|p| p.prepared(Path::new("")).net)
    }
}

impl Drop for Slirp4netns {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `slirp4netns --help` of Debian's slirp4netns 1.2.0, captured on the build machine.
    const HELP_1_2_0: &str = "Usage: slirp4netns [OPTION]... PID|PATH [TAPNAME]\nUser-mode networking for unprivileged network namespaces.\n\n-c, --configure          bring up the interface\n-e, --exit-fd=FD         specify the FD for terminating slirp4netns\n-r, --ready-fd=FD        specify the FD to write to when the network is configured\n-m, --mtu=MTU            specify MTU (default=1500, max=65521)\n-6, --enable-ipv6        enable IPv6 (experimental)\n-a, --api-socket=PATH    specify API socket path\n--cidr=CIDR              specify network address CIDR (default=10.0.2.0/24)\n--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace\n--netns-type=TYPE \t specify network namespace type ([path|pid], default=pid)\n--userns-path=PATH\t specify user namespace path\n--enable-sandbox         create a new mount namespace (and drop all caps except CAP_NET_BIND_SERVICE if running as the root)\n--enable-seccomp         enable seccomp to limit syscalls (experimental)\n--outbound-addr=IPv4     sets outbound ipv4 address to bound to (experimental)\n--outbound-addr6=IPv6    sets outbound ipv6 address to bound to (experimental)\n--disable-dns            disables 10.0.2.3 (or configured internal ip) to host dns redirect (experimental)\n--macaddress=MAC         specify the MAC address of the TAP (only valid with -c)\n--target-type=TYPE       specify the target type ([netns|bess], default=netns)\n-h, --help               show this help and exit\n-v, --version            show version and exit\n";

    /// [`HELP_1_2_0`] without the lines that mention any of `flags`, standing in for older
    /// releases that lacked them.
    fn help_without(flags: &[&str]) -> String {
        HELP_1_2_0
            .lines()
            .filter(|l| !flags.iter().any(|f| l.contains(f)))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    const ALL: Features = Features {
        enable_ipv6: true,
        cidr: true,
        disable_host_loopback: true,
        api_socket: true,
        enable_sandbox: true,
        enable_seccomp: true,
    };

    #[test]
    fn features_from_help() {
        let check = |help: &str, expect: Result<Features, &str>| {
            assert_eq!(parse_help(help), expect.map_err(String::from));
        };
        check(HELP_1_2_0, Ok(ALL));
        check(
            &help_without(&["--enable-sandbox", "--enable-seccomp"]),
            Ok(Features {
                enable_sandbox: false,
                enable_seccomp: false,
                ..ALL
            }),
        );
        check(
            &help_without(&[
                "--enable-ipv6",
                "--cidr",
                "--disable-host-loopback",
                "--api-socket",
            ]),
            Ok(Features {
                enable_sandbox: true,
                enable_seccomp: true,
                ..Features::default()
            }),
        );
        check(
            &help_without(&["--netns-type"]),
            Err("slirp4netns seems older than v0.4.0"),
        );
        check("", Err("slirp4netns seems older than v0.4.0"));
    }

    #[test]
    fn kernel_seccomp_from_proc_status() {
        let check =
            |status: &str, expect: bool| assert_eq!(kernel_seccomp(status), expect, "{status:?}");
        check(
            "Name:\tx\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n",
            true,
        );
        check("Name:\tx\nSeccomp:\t2\n", true);
        check(
            "Name:\tx\nNoNewPrivs:\t0\nSpeculation_Store_Bypass:\tvulnerable\n",
            false,
        );
        check("", false);
        let real = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(kernel_seccomp(&real), real.contains("\nSeccomp:"));
    }

    fn opts() -> NetOptions {
        NetOptions {
            binary: "slirp4netns".into(),
            sandbox: Tristate::False,
            seccomp: Tristate::False,
            ..NetOptions::default()
        }
    }

    /// The mode a `--slirp4netns-sandbox`/`-seccomp` text stands for.
    fn mode(text: &str) -> Tristate {
        match text {
            "auto" => Tristate::Auto,
            "true" => Tristate::True,
            _ => Tristate::False,
        }
    }

    fn planned(o: &NetOptions, f: Features, kernel: bool) -> Result<Plan, String> {
        plan(o, "/usr/bin/slirp4netns".into(), f, kernel)
    }

    /// `(sandbox, seccomp)` chosen for the modes, or the error.
    #[test]
    fn sandbox_and_seccomp_modes() {
        let check = |sandbox: &str,
                     seccomp: &str,
                     detach: bool,
                     f: Features,
                     kernel: bool,
                     expect: Result<(bool, bool), &str>| {
            let o = NetOptions {
                sandbox: mode(sandbox),
                seccomp: mode(seccomp),
                detach_netns: detach,
                ..opts()
            };
            let got = planned(&o, f, kernel).map(|p| (p.sandbox, p.seccomp));
            assert_eq!(
                got,
                expect.map_err(String::from),
                "sandbox={sandbox} seccomp={seccomp} detach={detach} kernel={kernel} {f:?}"
            );
        };
        let old = Features {
            enable_sandbox: false,
            enable_seccomp: false,
            ..ALL
        };
        check("false", "false", false, ALL, true, Ok((false, false)));
        check("", "", false, ALL, true, Ok((false, false)));
        check("auto", "auto", false, ALL, true, Ok((true, true)));
        check("auto", "auto", false, old, true, Ok((false, false)));
        check("auto", "auto", false, ALL, false, Ok((true, false)));
        check("auto", "auto", true, ALL, true, Ok((false, true)));
        check("true", "true", false, ALL, true, Ok((true, true)));
        check(
            "true",
            "false",
            false,
            old,
            true,
            Err("unsupported slirp4netns version: lacks SupportsEnableSandbox"),
        );
        check(
            "true",
            "false",
            true,
            ALL,
            true,
            Err(
                "--slirp4netns-sandbox conflicts with --detach-netns (https://github.com/rootless-containers/slirp4netns/issues/317)",
            ),
        );
        // The version check comes before the conflict, as upstream.
        check(
            "true",
            "false",
            true,
            old,
            true,
            Err("unsupported slirp4netns version: lacks SupportsEnableSandbox"),
        );
        check(
            "false",
            "true",
            false,
            old,
            true,
            Err("unsupported slirp4netns version: lacks SupportsEnableSeccomp"),
        );
        check(
            "false",
            "true",
            false,
            ALL,
            false,
            Err("kernel doesn't support seccomp"),
        );
        // (Bad mode texts never get here: `cli::check` refuses them; its tests pin the lines.)
    }

    #[test]
    fn missing_features() {
        let check = |o: NetOptions, f: Features, expect: &str| {
            assert_eq!(
                planned(&o, f, true).err().as_deref(),
                Some(expect),
                "{o:?} {f:?}"
            );
        };
        let none = Features::default();
        check(
            NetOptions {
                disable_host_loopback: true,
                ..opts()
            },
            none,
            "unsupported slirp4netns version: lacks SupportsDisableHostLoopback",
        );
        check(
            NetOptions {
                driver_ports: true,
                ..opts()
            },
            none,
            "unsupported slirp4netns version: lacks SupportsAPISocket",
        );
        // Order: host loopback, API socket, sandbox, seccomp, IPv6, CIDR.
        check(
            NetOptions {
                disable_host_loopback: true,
                driver_ports: true,
                ..opts()
            },
            none,
            "unsupported slirp4netns version: lacks SupportsDisableHostLoopback",
        );
        check(
            NetOptions {
                ipv6: true,
                ..opts()
            },
            none,
            "this version of slirp4netns does not support --enable-ipv6",
        );
        check(
            NetOptions {
                cidr: Some(([10, 8, 0, 0], 24)),
                ..opts()
            },
            none,
            "this version of slirp4netns does not support --cidr",
        );
        check(
            NetOptions {
                ipv6: true,
                cidr: Some(([10, 8, 0, 0], 24)),
                ..opts()
            },
            Features { cidr: true, ..none },
            "this version of slirp4netns does not support --enable-ipv6",
        );
        check(
            NetOptions {
                cidr: Some(([255, 255, 255, 240], 28)),
                ..opts()
            },
            ALL,
            "255.255.255.240 + 100 overflows",
        );
        check(
            NetOptions {
                ifname: Some("a-very-long-tap-name".into()),
                ..opts()
            },
            ALL,
            r#"ifname "a-very-long-tap-name" is longer than 15 bytes"#,
        );
        // Nothing needed, nothing lacking.
        assert!(planned(&opts(), none, false).is_ok());
    }

    const STATE: &str = "/run/user/1000/rk";

    fn target(netns: Option<&str>) -> Target<'_> {
        Target {
            child_pid: 4242,
            netns: netns.map(Path::new),
            state_dir: Path::new(STATE),
        }
    }

    fn args_text(p: &Plan, netns: Option<&str>) -> String {
        let args = p.args(target(netns));
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_lines() {
        let check = |o: NetOptions, netns: Option<&str>, expect: &str| {
            let p = planned(&o, ALL, true).unwrap();
            assert_eq!(args_text(&p, netns), expect, "{o:?}");
        };
        check(opts(), None, "--mtu 65520 -r 3 4242 tap0");
        check(
            NetOptions {
                mtu: 1500,
                ..opts()
            },
            None,
            "--mtu 1500 -r 3 4242 tap0",
        );
        check(
            NetOptions {
                disable_host_loopback: true,
                ..opts()
            },
            None,
            "--mtu 65520 -r 3 --disable-host-loopback 4242 tap0",
        );
        check(
            NetOptions {
                cidr: Some(([10, 0, 2, 0], 24)),
                ..opts()
            },
            None,
            "--mtu 65520 -r 3 --cidr 10.0.2.0/24 4242 tap0",
        );
        check(
            NetOptions {
                driver_ports: true,
                ..opts()
            },
            None,
            "--mtu 65520 -r 3 --api-socket /run/user/1000/rk/.s4nn.sock 4242 tap0",
        );
        check(
            NetOptions {
                sandbox: Tristate::True,
                ..opts()
            },
            None,
            "--mtu 65520 -r 3 --enable-sandbox 4242 tap0",
        );
        check(
            NetOptions {
                seccomp: Tristate::True,
                ..opts()
            },
            None,
            "--mtu 65520 -r 3 --enable-seccomp 4242 tap0",
        );
        check(
            NetOptions {
                ipv6: true,
                ..opts()
            },
            None,
            "--mtu 65520 -r 3 --enable-ipv6 4242 tap0",
        );
        check(
            NetOptions {
                ifname: Some("eth0".into()),
                ..opts()
            },
            None,
            "--mtu 65520 -r 3 4242 eth0",
        );
        let everything = NetOptions {
            mtu: 9000,
            cidr: Some(([192, 168, 100, 0], 24)),
            ifname: Some("s4".into()),
            disable_host_loopback: true,
            ipv6: true,
            sandbox: Tristate::Auto,
            seccomp: Tristate::Auto,
            driver_ports: true,
            ..opts()
        };
        check(
            everything.clone(),
            None,
            "--mtu 9000 -r 3 --disable-host-loopback --cidr 192.168.100.0/24 \
             --api-socket /run/user/1000/rk/.s4nn.sock --enable-sandbox --enable-seccomp \
             --enable-ipv6 4242 s4",
        );
        // Detached: no sandbox with auto, and the namespace is named by path.
        check(
            NetOptions {
                detach_netns: true,
                ..everything
            },
            Some("/proc/4242/root/tmp/rk/netns"),
            "--mtu 9000 -r 3 --disable-host-loopback --cidr 192.168.100.0/24 \
             --api-socket /run/user/1000/rk/.s4nn.sock --enable-seccomp --enable-ipv6 \
             --userns-path=/proc/4242/ns/user --netns-type=path /proc/4242/root/tmp/rk/netns s4",
        );
    }

    #[test]
    fn what_the_child_gets() {
        let p = planned(&opts(), ALL, true).unwrap();
        let got = p.prepared(Path::new(STATE));
        assert_eq!(got.net.mode, NetMode::Configure);
        assert_eq!(got.net.ifname_str(), "tap0");
        assert_eq!(
            (
                got.net.addr,
                got.net.prefix,
                got.net.gateway,
                got.net.dns,
                got.net.mtu
            ),
            ([10, 0, 2, 100], 24, [10, 0, 2, 2], [10, 0, 2, 3], 65520)
        );
        assert_eq!(got.net.dns6, [0; 16]);
        assert_eq!(got.dns, ["10.0.2.3"]);
        assert_eq!(got.api_socket, None);

        let o = NetOptions {
            ipv6: true,
            cidr: Some(([172, 20, 0, 0], 16)),
            driver_ports: true,
            mtu: 1400,
            ..opts()
        };
        let got = planned(&o, ALL, true).unwrap().prepared(Path::new(STATE));
        assert_eq!(
            (
                got.net.addr,
                got.net.prefix,
                got.net.gateway,
                got.net.dns,
                got.net.mtu
            ),
            (
                [172, 20, 0, 100],
                16,
                [172, 20, 0, 2],
                [172, 20, 0, 3],
                1400
            )
        );
        assert_eq!(got.net.dns6, DNS6);
        assert_eq!(got.dns, ["172.20.0.3", "fd00::3"]);
        assert_eq!(
            got.api_socket.as_deref(),
            Some(Path::new("/run/user/1000/rk/.s4nn.sock"))
        );
    }

    use crate::testutil::{TempDir, retry_busy};

    #[test]
    fn probing_a_binary() {
        let dir = TempDir::new("probe");
        let help = dir.0.join("help.txt");
        std::fs::write(&help, HELP_1_2_0).unwrap();
        let good = dir.script("good", &format!("cat {}", help.display()));
        let broken = dir.script("broken", "echo 'no such option' >&2; exit 2");
        let ancient = dir.script(
            "ancient",
            "echo 'Usage: slirp4netns [OPTION]... PID TAPNAME'",
        );
        let probe = |binary: &Path, o: NetOptions| {
            retry_busy(|| {
                Slirp4netns::probe(&NetOptions {
                    binary: binary.display().to_string(),
                    ..o.clone()
                })
                .map(|d| d.plan().clone())
            })
        };
        let p = probe(
            &good,
            NetOptions {
                sandbox: Tristate::True,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(
            (p.binary.as_path(), p.sandbox, p.seccomp),
            (good.as_path(), true, false)
        );
        assert_eq!(
            probe(&broken, opts()).err(),
            Some(format!(
                r#"command "{} --help" failed, make sure slirp4netns v0.4.0+ is installed: "no such option\n": exit status 2"#,
                broken.display()
            ))
        );
        assert_eq!(
            probe(&ancient, opts()).err().as_deref(),
            Some("slirp4netns seems older than v0.4.0")
        );
        assert_eq!(
            probe(Path::new("no-such-slirp4netns-for-rkrs"), opts())
                .err()
                .as_deref(),
            Some(r#"exec: "no-such-slirp4netns-for-rkrs": executable file not found in $PATH"#)
        );
        let missing = dir.0.join("missing");
        assert_eq!(
            probe(&missing, opts()).err(),
            Some(format!(
                r#"exec: "{0}": stat {0}: no such file or directory"#,
                missing.display()
            ))
        );
    }

    /// The machine's real slirp4netns, when installed: it must know everything we use.
    #[test]
    fn probing_the_installed_slirp4netns() {
        let Ok(path) = exec::look_path(std::ffi::OsStr::new("slirp4netns")) else {
            eprintln!("skipped: slirp4netns is not installed");
            return;
        };
        let text = help_text(
            &path,
            exec::start_with_output(&path, &["--help".into()]).unwrap(),
        )
        .unwrap();
        assert_eq!(parse_help(&text), Ok(ALL));
    }

    /// A driver for the fake program `binary`, with a short readiness timeout.
    fn fake(binary: &Path, timeout: Duration) -> Slirp4netns {
        Slirp4netns {
            plan: planned(
                &NetOptions {
                    disable_host_loopback: true,
                    ..opts()
                },
                ALL,
                true,
            )
            .map(|p| Plan {
                binary: binary.into(),
                ..p
            })
            .ok(),
            probing: None,
            running: None,
            ready_timeout: timeout,
            pending: None,
        }
    }

    fn start(d: &mut Slirp4netns, watch: &[BorrowedFd<'_>]) -> Result<Prepared, String> {
        retry_busy(|| match d.start(target(None), watch) {
            Ok(p) => Ok(p),
            Err(StartError::Failed(e)) => Err(e),
            Err(StartError::Interrupted) => Err("interrupted".into()),
        })
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
    fn starts_and_stops() {
        let dir = TempDir::new("start");
        let args_file = dir.0.join("args");
        let bin = dir.script(
            "s4nn",
            &format!(
                "echo \"$@\" > {}\necho 'sent tapfd=5 for tap0' >&2\nprintf 1 >&3\nexec sleep 60",
                args_file.display()
            ),
        );
        let mut d = fake(&bin, Duration::from_secs(20));
        let prepared = start(&mut d, &[]).unwrap();
        assert_eq!(prepared, d.plan().prepared(Path::new(STATE)));
        assert_eq!(
            std::fs::read_to_string(&args_file).unwrap(),
            "--mtu 65520 -r 3 --disable-host-loopback 4242 tap0\n"
        );
        let pid = d.pid().expect("running");
        assert!(alive(pid));
        assert_eq!(
            start(&mut d, &[]).err().as_deref(),
            Some("slirp4netns is already running")
        );
        d.stop();
        assert!(dies(pid), "killed");
        assert_eq!(d.pid(), None);
        d.stop();

        // Dropping the driver stops the program too.
        let mut d = fake(&bin, Duration::from_secs(20));
        start(&mut d, &[]).unwrap();
        let pid = d.pid().unwrap();
        drop(d);
        assert!(dies(pid));
    }

    #[test]
    fn gets_stdin_from_dev_null_and_a_session_of_its_own() {
        let dir = TempDir::new("stdio");
        let out = dir.0.join("out");
        let bin = dir.script(
            "s4nn",
            &format!(
                "readlink /proc/self/fd/0 > {0}\nps -o sid= -p $$ >> {0}\necho $$ >> {0}\nprintf 1 >&3\nexec sleep 60",
                out.display()
            ),
        );
        let mut d = fake(&bin, Duration::from_secs(20));
        start(&mut d, &[]).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines[0], "/dev/null");
        assert_eq!(lines[1], lines[2], "session leader");
    }

    #[test]
    fn reports_how_it_died() {
        let dir = TempDir::new("fail");
        let check = |name: &str, body: &str, expect: &str| {
            let bin = dir.script(name, body);
            let mut d = fake(&bin, Duration::from_secs(20));
            let err = start(&mut d, &[]).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "waiting for ready fd ({} --mtu 65520 -r 3 --disable-host-loopback 4242 tap0): {expect}",
                    bin.display()
                )
            );
            assert_eq!(d.pid(), None);
        };
        check(
            "exit1",
            "echo 'sent tapfd=5 for tap0'\necho 'prefix length needs to be 1-25' >&2\nexit 1",
            r#"slirp4netns failed (exit status 1); last output: "sent tapfd=5 for tap0\nprefix length needs to be 1-25""#,
        );
        check("quiet", "exit 3", "slirp4netns failed (exit status 3)");
        check(
            "closes",
            "exec 3>&-\nsleep 0.2\necho bye\nexit 2",
            r#"slirp4netns failed (exit status 2); last output: "bye""#,
        );
        check(
            "killed",
            "echo 'child failed(1)' >&2\nkill -9 $$",
            r#"slirp4netns killed by signal (signal: killed); last output: "child failed(1)""#,
        );
        let long: String = (1..=12).map(|i| format!("echo line{i}\n")).collect();
        check(
            "chatty",
            &format!("{long}exit 1"),
            r#"slirp4netns failed (exit status 1); last output: "line8\nline9\nline10\nline11\nline12""#,
        );
    }

    #[test]
    fn gives_up_after_the_timeout() {
        let dir = TempDir::new("timeout");
        let bin = dir.script("s4nn", "echo waiting\nexec sleep 60");
        let mut d = fake(&bin, Duration::from_millis(300));
        let err = start(&mut d, &[]).unwrap_err();
        assert!(
            err.ends_with(r#"4242 tap0): slirp4netns did not become ready within 300ms; last output: "waiting""#),
            "{err}"
        );
        assert_eq!(d.pid(), None);
    }

    #[test]
    fn a_watched_descriptor_interrupts() {
        let dir = TempDir::new("watch");
        let pidfile = dir.0.join("pid");
        let bin = dir.script(
            "s4nn",
            &format!("echo $$ > {}\nexec sleep 60", pidfile.display()),
        );
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut d = fake(&bin, Duration::from_secs(20));
        // Nothing written yet: the wait goes on until the byte arrives.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            rustix::io::write(&w, b"x").unwrap();
            w
        });
        let got = retry_busy(|| match d.start(target(None), &[r.as_fd()]) {
            Err(StartError::Failed(e)) => Err(e),
            other => Ok(other),
        });
        let _w = writer.join().unwrap();
        assert_eq!(got, Ok(Err(StartError::Interrupted)));
        assert_eq!(d.pid(), None);
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
        let path = dir.0.join("plain");
        std::fs::write(&path, "").unwrap();
        let mut d = fake(&path, Duration::from_secs(1));
        let err = start(&mut d, &[]).unwrap_err();
        // Even root needs an execute bit to exec a file.
        assert_eq!(
            err,
            format!(
                "executing {0} --mtu 65520 -r 3 --disable-host-loopback 4242 tap0: fork/exec {0}: permission denied",
                path.display()
            )
        );
        let mut sandboxed = Slirp4netns {
            plan: Some(Plan {
                sandbox: true,
                ..d.plan().clone()
            }),
            probing: None,
            running: None,
            ready_timeout: READY_TIMEOUT,
            pending: None,
        };
        assert_eq!(
            sandboxed.start(target(Some("/x/netns")), &[]),
            Err(StartError::Failed(
                "slirp4netns sandbox is not compatible with detach-netns (https://github.com/rootless-containers/slirp4netns/issues/317)".into()
            ))
        );
    }
}
