//! `rootlesskit-child`: runs inside the new namespaces as mapped root, finishes the setup the
//! parent describes over the proto socket, then starts the target and forwards signals to it.
//!
//! It is started only by `rootlesskit`, with every input on its command line:
//! `rootlesskit-child --fd N --state-dir DIR [--pidns] [--reaper] [--propagation P]
//! [--copy-up DIR]... [--copy-up-mode overlay] [--evacuate-cgroup2] [--listen-fds N [--rewrite-listen-pid]]
//! [--detach-netns UNSHARE-HELPER [--persistent-tap NAME]] [--debug] -- CMD...`
//! (`rootlesskit --check` also runs `rootlesskit-child --probe-overlay` in a trial namespace).

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use child::detach::Netns;
use proto::{Msg, NetConfig, NetMode};
use rustix::process::{Pid, Signal, WaitOptions, set_parent_process_death_signal, wait, waitpid};
use sys::process::Ended;
use sys::signal;
use sys::spawn::{Command, Stage};

const WHO: &str = "[rootlesskit:child ]";

#[derive(Default)]
struct Args {
    fd: RawFd,
    state_dir: PathBuf,
    pidns: bool,
    reaper: bool,
    propagation: String,
    copy_up: Vec<PathBuf>,
    /// `--copy-up-mode overlay`; without it, upstream's `tmpfs+symlink`.
    copy_up_overlay: bool,
    evacuate_cgroup2: bool,
    listen_fds: i32,
    rewrite_listen_pid: bool,
    /// `--detach-netns`: the `rootlesskit-unshare` binary that makes the detached namespace.
    detach_netns: Option<PathBuf>,
    /// With `--detach-netns`: the driver's tap, made in that namespace as a persistent device
    /// before the driver starts (see `sys::net::tun_set_persist`).
    persistent_tap: Option<String>,
    command: Vec<OsString>,
}

/// Reads our own command line, written by the parent in exactly this shape. Hand-rolled
/// rather than with `sys::goflag`: the grammar is ours and fixed, not Go's, and every byte counts.
fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        fd: -1,
        propagation: "rprivate".into(),
        ..Args::default()
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let Some(flag) = arg.to_str() else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let mut value = |name: &str| it.next().ok_or_else(|| format!("missing value for {name}"));
        match flag {
            "--fd" => {
                a.fd = value(flag)?
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or("bad value for --fd")?
            }
            "--state-dir" => a.state_dir = value(flag)?.into(),
            "--pidns" => a.pidns = true,
            "--reaper" => a.reaper = true,
            "--propagation" => a.propagation = value(flag)?.to_string_lossy().into_owned(),
            "--copy-up" => a.copy_up.push(value(flag)?.into()),
            "--copy-up-mode" => match value(flag)?.to_str() {
                Some("overlay") => a.copy_up_overlay = true,
                Some("tmpfs+symlink") => a.copy_up_overlay = false,
                _ => return Err("bad value for --copy-up-mode".into()),
            },
            "--evacuate-cgroup2" => a.evacuate_cgroup2 = true,
            "--listen-fds" => {
                a.listen_fds = value(flag)?
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or("bad value for --listen-fds")?
            }
            "--rewrite-listen-pid" => a.rewrite_listen_pid = true,
            "--detach-netns" => a.detach_netns = Some(value(flag)?.into()),
            "--persistent-tap" => {
                a.persistent_tap = Some(value(flag)?.to_string_lossy().into_owned())
            }
            "--debug" => {}
            "--version" => {
                use std::io::Write;
                // Written in parts rather than formatted: a `fmt` call would link stdout's formatting.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(b"rootlesskit-child version ");
                let _ = out.write_all(::sys::goflag::VERSION.as_bytes());
                let _ = out.write_all(b"\n");
                std::process::exit(0);
            }
            "--" => {
                a.command.extend(it);
                break;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(a)
}

fn main() {
    // Signals first, before anything can arrive: they are read through a signalfd, which
    // also makes them deliverable to us as PID 1 of a new pid namespace.
    let sigfd = match sys::signal::block_signals(signal::handled())
        .and_then(|()| sys::signal::signalfd(signal::handled()))
    {
        Ok(fd) => fd,
        Err(e) => die(&format!(
            "failed to set up signal handling: {}",
            sys::errno::text(&e)
        )),
    };
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "--probe-overlay")
    {
        probe_overlay();
    }
    let args = match parse_args() {
        Ok(a) if a.fd >= 3 && !a.command.is_empty() => a,
        Ok(_) => {
            die("this program is started by rootlesskit, not by hand (missing --fd or command)")
        }
        Err(e) => die(&e),
    };
    #[allow(unsafe_code)]
    // SAFETY: rootlesskit starts us with the socket placed at `--fd` (at least 3), so that
    // number was open at exec, and nothing opened since (only the signalfd, which took a free
    // number) can own it; this is the one adoption.
    let sock = match unsafe { sys::fd::adopt_inherited_fd(args.fd) } {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => die(&format!("bad --fd {}: {}", args.fd, sys::errno::text(&e))),
    };
    // Re-armed after exec; if the parent died before this line, the socket says so below.
    let _ = set_parent_process_death_signal(Some(Signal::KILL));
    let mut child = Child {
        args,
        sock,
        detached: None,
        serve_ports: false,
        renewer: None,
        transparent: [false; 2],
        udp_ruled: Vec::new(),
        vif: None,
        reconfigure: false,
    };
    if let Err(text) = child.setup() {
        let _ = proto::write_frame(
            &mut child.sock,
            &Msg::ChildError(proto::ErrorText::new(&text)),
        );
        std::process::exit(1);
    }
    let code = child.run_target(&sigfd);
    std::process::exit(code);
}

/// With `--detach-netns`: `lo` is up already (the helper did it); a driver that leaves its
/// interface to us gets it configured inside the detached namespace, by the same rtnetlink
/// requests as in our own namespace, sent from a short-lived thread that moves there.
fn configure_detached(ns: &Netns, net: &NetConfig) -> Result<(), String> {
    if net.mode != NetMode::Configure {
        return Ok(());
    }
    let mtu = if net.mtu == 0 { 1500 } else { net.mtu };
    ns.within(|| {
        sys::netlink::activate_dev(net.ifname_str(), mtu, net.addr, net.prefix, net.gateway)
            .map_err(|e| e.to_string())
    })
}

/// Writes one line to stderr, ignoring failure: a closed stderr must not turn an error
/// report into a panic.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `rootlesskit-child --probe-overlay`, for `rootlesskit --check`, which starts it as root of a
/// trial user and mount namespace: copies up /etc with an overlayfs as a run would (after making
/// the root mount `rprivate`) and prints `ok` or the error, exiting 0 or 1. The mounts die with the
/// trial's mount namespace.
fn probe_overlay() -> ! {
    use std::io::Write;
    let result = child::mount::set_propagation(child::mount::Propagation::RPrivate)
        .and_then(|()| child::mount::copy_up_overlay(std::path::Path::new("/etc")));
    let mut out = std::io::stdout().lock();
    match result {
        Ok(()) => {
            let _ = out.write_all(b"ok\n");
            std::process::exit(0)
        }
        Err(e) => {
            let _ = writeln!(out, "{e}");
            std::process::exit(1)
        }
    }
}

fn die(msg: &str) -> ! {
    say(format_args!("{WHO} error: {msg}"));
    std::process::exit(1)
}

fn warn(msg: &str) {
    say(format_args!("{WHO} warning: {msg}"));
}

struct Child {
    args: Args,
    sock: UnixStream,
    /// The detached network namespace, for dials of the builtin port driver.
    detached: Option<Netns>,
    /// Whether the parent runs the builtin port driver and will send `SocketsWanted`.
    serve_ports: bool,
    /// The DHCP lease of `--net=lxc-user-nic`, renewed from the signal loop.
    renewer: Option<child::dhcp::Renewer>,
    /// Per family (IPv4, IPv6): TCP sockets can connect from a client's address.
    transparent: [bool; 2],
    /// Server ports (IPv4?, port) whose UDP replies are routed to transparent flows already.
    udp_ruled: Vec<(bool, u16)>,
    /// `--net=vpnkit`: the frames between the tap and vpnkit, moved from the target's loop.
    vif: Option<child::vpnkit::Pump>,
    /// The driver leaves its interface to us (slirp4netns): the parent sends `NetReconfigure`
    /// when a restarted driver made a new one.
    reconfigure: bool,
}

impl Child {
    fn recv(&mut self) -> Result<Msg, String> {
        match proto::read_frame(&mut self.sock) {
            Ok(m) => Ok(m),
            // The parent is gone (and pdeathsig is on its way): leave quietly.
            Err(proto::Error::Eof) => std::process::exit(1),
            Err(e) => Err(format!("reading from the parent: {e}")),
        }
    }

    fn send(&mut self, m: &Msg) -> Result<(), String> {
        proto::write_frame(&mut self.sock, m).map_err(|e| format!("writing to the parent: {e}"))
    }

    /// Everything between exec and "ready": any error goes up the socket as one line.
    fn setup(&mut self) -> Result<(), String> {
        if self.args.pidns {
            // Upstream's fallbacks, kept: read-only, then carry on with a warning.
            if let Err(e) = child::mount::mount_proc() {
                warn(&format!(
                    "failed to mount procfs, falling back to read-only mount: {e}"
                ));
                if let Err(e) = child::mount::mount_proc_read_only() {
                    warn(&format!("failed to mount procfs: {e}"));
                }
            }
        }
        // Before ChildInitUserNSCompleted: the parent starts the driver against this file.
        let detached = match &self.args.detach_netns {
            Some(helper) => Some(Netns::create(
                helper,
                &self.args.state_dir.join(proto::NETNS_FILE_NAME),
            )?),
            None => None,
        };
        if let (Some(ns), Some(tap)) = (&detached, &self.args.persistent_tap) {
            // Best effort: a driver that finds no tap makes its own.
            let _ = ns.within(|| Ok(sys::net::make_persistent_tap(tap)));
        }
        self.send(&Msg::ChildInitUserNsCompleted)?;
        // The parent starts the network driver now, which takes a while (slirp4netns: an exec
        // and its own setup): do the mounts meanwhile, on the other core. Not with a detached
        // namespace: the driver reaches that file through our mount namespace
        // (`/proc/<pid>/root/<state>/netns`), and a copy-up of one of its parents (dockerd's
        // `--copy-up=/run` with the state dir in /run/user/…) would turn that path into
        // symlinks that the driver resolves in the host's mount namespace.
        let early_mounts = detached.is_none();
        if early_mounts {
            self.mounts()?;
        }
        let net = match self.recv()? {
            Msg::NetworkDriverCompleted(n) => n,
            m => {
                return Err(format!(
                    "expected \"ParentInitNetworkDriverCompleted\", got \"{}\"",
                    m.name()
                ));
            }
        };
        let transparent = match self.recv()? {
            Msg::PortDriverCompleted(mode) => {
                self.serve_ports = mode != proto::PortMode::None;
                mode == proto::PortMode::BuiltinTransparent
            }
            m => {
                return Err(format!(
                    "expected \"ParentInitPortDriverCompleted\", got \"{}\"",
                    m.name()
                ));
            }
        };
        if !early_mounts {
            self.mounts()?;
        }
        if let Some(ns) = &detached {
            if net.mode == NetMode::Vpnkit {
                self.vif = Some(child::vpnkit::attach(&net, &self.args.state_dir, Some(ns))?);
            }
            if net.mode == NetMode::Tap {
                let tap = ns.within(|| child::vpnkit::tap_for_parent(&net))?;
                self.hand_over_tap(tap)?;
            }
            // §6.1 step 3: we stay in the host's network namespace, so no sysfs remount and no
            // /etc binds; consumers read resolv.conf and hosts from the state dir.
            if net.mode == NetMode::Dhcp {
                // The DHCP socket opened in there stays there, for the renewals.
                let (lease, client) =
                    ns.within(|| child::dhcp::configure(net.ifname_str(), net.mtu))?;
                self.report_lease(&net, lease, client)?;
            }
            configure_detached(ns, &net)?;
        } else if net.mode != NetMode::Host {
            for w in child::mount::remount_sysfs(self.args.evacuate_cgroup2)
                .map_err(|e| e.to_string())?
            {
                warn(&w);
            }
        } else if self.args.evacuate_cgroup2 {
            child::mount::mount_cgroup2_for_evacuation().map_err(|e| e.to_string())?;
        }
        match net.mode {
            _ if detached.is_some() => {}
            NetMode::Host => {}
            NetMode::Loopback => sys::netlink::loopback_up().map_err(|e| e.to_string())?,
            NetMode::Configure | NetMode::Preconfigured | NetMode::Vpnkit => {
                sys::netlink::loopback_up().map_err(|e| e.to_string())?;
                if net.mode == NetMode::Vpnkit {
                    self.vif = Some(child::vpnkit::attach(&net, &self.args.state_dir, None)?);
                }
                if net.mode == NetMode::Configure {
                    let mtu = if net.mtu == 0 { 1500 } else { net.mtu };
                    sys::netlink::activate_dev(
                        net.ifname_str(),
                        mtu,
                        net.addr,
                        net.prefix,
                        net.gateway,
                    )
                    .map_err(|e| e.to_string())?;
                }
                self.bind_etc_files()?;
            }
            NetMode::Tap => {
                sys::netlink::loopback_up().map_err(|e| e.to_string())?;
                let tap = child::vpnkit::tap_for_parent(&net)?;
                self.hand_over_tap(tap)?;
                self.bind_etc_files()?;
            }
            NetMode::Dhcp => {
                sys::netlink::loopback_up().map_err(|e| e.to_string())?;
                let (lease, client) = child::dhcp::configure(net.ifname_str(), net.mtu)?;
                self.report_lease(&net, lease, client)?;
                self.bind_etc_files()?;
            }
        }
        if transparent {
            // Both families in one go: one netlink socket, and with a detached namespace one
            // trip into it.
            let routed = match &detached {
                Some(ns) => ns
                    .within(|| Ok(child::routing::source_routing()))
                    .unwrap_or_else(|e| [Err(e.clone()), Err(e)]),
                None => child::routing::source_routing(),
            };
            for (i, r) in routed.into_iter().enumerate() {
                match r {
                    Ok(()) => self.transparent[i] = true,
                    Err(e) => warn(&format!(
                        "source IP transparent: IPv{}: {e}; connections come from the child's own address",
                        if i == 0 { 4 } else { 6 }
                    )),
                }
            }
            if self.transparent.contains(&true) {
                // The connection marks for targets that NAT sends onward (a container behind
                // dockerd's userland-proxy=false); servers in the namespace do without them.
                let marked = match &detached {
                    Some(ns) => ns
                        .within(
                            || Ok(child::nftables::add_reply_marks().map_err(|e| e.to_string())),
                        )
                        .and_then(|r| r),
                    None => child::nftables::add_reply_marks().map_err(|e| e.to_string()),
                };
                if let Err(e) = marked {
                    warn(&format!(
                        "source IP transparent: nf_tables: {e}; connections that the namespace NATs onward (to a container behind dockerd's userland-proxy=false) get no replies"
                    ));
                }
            }
        }
        self.detached = detached;
        self.reconfigure = net.mode == NetMode::Configure;
        self.send(&Msg::ChildReady)?;
        match self.recv()? {
            Msg::ParentGo => Ok(()),
            m => Err(format!("expected \"ParentGo\", got \"{}\"", m.name())),
        }
    }

    /// `--propagation` and `--copy-up`, upstream's order.
    fn mounts(&self) -> Result<(), String> {
        if let Some(p) = child::mount::Propagation::from_str(&self.args.propagation) {
            child::mount::set_propagation(p).map_err(|e| e.to_string())?;
        }
        let mode = if self.args.copy_up_overlay {
            child::mount::CopyUpMode::Overlay
        } else {
            child::mount::CopyUpMode::TmpfsSymlink
        };
        child::mount::copy_up(&self.args.copy_up, mode).map_err(|e| e.to_string())
    }

    /// Hands the tap of a [`NetMode::Tap`] network to the parent, whose user-mode network
    /// moves its frames; our copy of the descriptor closes here.
    fn hand_over_tap(&mut self, tap: std::os::fd::OwnedFd) -> Result<(), String> {
        use std::os::fd::AsFd;
        sys::fdpass::send(&self.sock, &Msg::TapMade, &[tap.as_fd()])
            .map_err(|e| format!("writing to the parent: {e}"))
    }

    /// Sends a DHCP lease to the parent, which writes resolv.conf from it before it reads
    /// ChildReady, and keeps the client for the renewals.
    fn report_lease(
        &mut self,
        net: &NetConfig,
        lease: child::dhcp::Lease,
        client: child::dhcp::Client,
    ) -> Result<(), String> {
        self.send(&Msg::NetLease(child::dhcp::lease_frame(net, &lease)))?;
        let now = std::time::Instant::now();
        self.renewer = Some(child::dhcp::Renewer::new(client, &lease, now));
        Ok(())
    }

    /// Puts the `resolv.conf` and `hosts` the parent wrote into the state dir over the ones in
    /// /etc. With /etc copied up, the top-level entries are symlinks into the host's /etc
    /// (`tmpfs+symlink`) or the host's files seen through the overlay (`overlay`): they are
    /// replaced by empty files first (in the overlay's tmpfs layer), so the host's files, or
    /// whatever a host symlink points to, are never covered.
    fn bind_etc_files(&self) -> Result<(), String> {
        let etc_copied = self
            .args
            .copy_up
            .iter()
            .any(|d| child::mount::clean_path(d) == std::path::Path::new("/etc"));
        if !etc_copied {
            warn(
                "Mounting /etc/resolv.conf without copying-up /etc. Note that /etc/resolv.conf in the namespace will be unmounted when it is recreated on the host. Unless /etc/resolv.conf is statically configured, copying-up /etc is highly recommended. Please refer to RootlessKit documentation for further information.",
            );
        }
        for name in ["resolv.conf", "hosts"] {
            let dst = std::path::Path::new("/etc").join(name);
            if etc_copied {
                let _ = std::fs::remove_file(&dst);
                std::fs::write(&dst, b"").map_err(|e| {
                    format!(
                        "failed to create {}: {}",
                        dst.display(),
                        sys::errno::text(&e)
                    )
                })?;
            }
            sys::mount::bind_file(&self.args.state_dir.join(name), &dst)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Starts the target and forwards signals to it until it is reaped; returns our exit code.
    fn run_target(&mut self, sigfd: &OwnedFd) -> i32 {
        let argv = &self.args.command;
        let shown = format!(
            "[{}]",
            argv.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let fail = |text: String| -> i32 {
            say(format_args!("{WHO} error: command {shown} exited: {text}"));
            1
        };
        let path = match sys::golang::look_path(&argv[0], std::env::var_os("PATH").as_deref()) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let env: Vec<OsString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut e = k;
                e.push("=");
                e.push(v);
                e
            })
            .collect();
        let cmd = if self.args.rewrite_listen_pid {
            Command::new_with_listen_pid(&path, argv, env)
        } else {
            Command::new(&path, argv, env)
        };
        let mut cmd = match cmd {
            Ok(c) => c,
            Err(e) => return fail(sys::errno::text(&e)),
        };
        cmd.setsid(self.args.reaper);
        for fd in 3..3 + self.args.listen_fds {
            cmd.keep_fd(fd);
        }
        let mut started = match cmd.spawn() {
            Ok(s) => s,
            Err(e) => {
                return fail(format!(
                    "fork/exec {}: {}",
                    path.display(),
                    sys::errno::text(&e)
                ));
            }
        };
        if let Err(e) = started.wait_exec() {
            let _ = waitpid(Pid::from_raw(started.pid), WaitOptions::empty());
            let what = match e.stage {
                Stage::Exec => format!(
                    "fork/exec {}: {}",
                    path.display(),
                    sys::errno::text(&e.error)
                ),
                _ => sys::errno::text(&e.error),
            };
            return fail(what);
        }
        let target = started.pid;
        // From here on we only forward signals and reap: let the setup code leave memory.
        sys::mem::page_out_own_image();
        if !self.serve_ports && !self.reconfigure {
            // The socket is done; the target must not keep the parent waiting on it.
            let _ = self.sock.shutdown(std::net::Shutdown::Both);
        }
        loop {
            let pumping = self.vif.as_ref().is_some_and(|p| p.running());
            if (self.serve_ports || self.reconfigure || self.renewer.is_some() || pumping)
                && !self.wait_signal_or_request(sigfd)
            {
                continue;
            }
            let info = match sys::signal::read_signal(sigfd) {
                Ok(i) => i,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return fail(format!("reading signals: {}", sys::errno::text(&e))),
            };
            if info.signo == 17 {
                if let Some(ended) = self.reap(target) {
                    return match ended {
                        Ended::Exited(0) => 0,
                        e => {
                            say(format_args!(
                                "{WHO} error: command {shown} exited: {}",
                                e.describe()
                            ));
                            e.exit_code()
                        }
                    };
                }
            } else if signal::is_forwarded(info.signo) {
                let _ = sys::signal::pidfd_send_signal(&started.pidfd, info.signo);
            }
        }
    }

    /// Waits until a signal is pending (returns true), or serves one port request from the
    /// parent, moves the DHCP renewal on or moves vpnkit's frames (returns false).
    fn wait_signal_or_request(&mut self, sigfd: &OwnedFd) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let now = std::time::Instant::now();
        let wait = self.renewer.as_ref().and_then(|r| r.timeout(now));
        // A wait too long for a timespec (never, here) is no limit.
        let timeout = wait.and_then(|d| Timespec::try_from(d).ok());
        let (sig, req, dhcp, vif) = {
            // Unused slots repeat the signalfd; only the first `n` are polled.
            let mut watch = [(sigfd.as_fd(), PollFlags::IN); 5];
            let mut n = 1;
            let (mut req_at, mut dhcp_at, mut vif_at) = (None, None, None);
            if self.serve_ports || self.reconfigure {
                watch[n] = (self.sock.as_fd(), PollFlags::IN);
                req_at = Some(n);
                n += 1;
            }
            if let Some(fd) = self.renewer.as_ref().and_then(|r| r.fd()) {
                watch[n] = (fd, PollFlags::IN);
                dhcp_at = Some(n);
                n += 1;
            }
            if let Some(p) = self.vif.as_ref().filter(|p| p.running()) {
                let [tap, sock] = p.poll_fds();
                watch[n] = tap;
                watch[n + 1] = sock;
                vif_at = Some(n);
                n += 2;
            }
            let mut fds = watch.map(|(fd, events)| PollFd::from_borrowed_fd(fd, events));
            if poll(&mut fds[..n], timeout.as_ref()).is_err() {
                return false;
            }
            let ready = |at: Option<usize>| at.is_some_and(|i| !fds[i].revents().is_empty());
            (
                !fds[0].revents().is_empty(),
                ready(req_at),
                ready(dhcp_at),
                vif_at.map(|i| (fds[i].revents(), fds[i + 1].revents())),
            )
        };
        if let Some(r) = self.renewer.as_mut()
            && let Some(w) = r.wake(dhcp, std::time::Instant::now())
        {
            warn(&w);
        }
        if let (Some((tap, sock)), Some(p)) = (vif, self.vif.as_mut())
            && let Err(child::vpnkit::Stop::Failed(e)) = p.ready(tap, sock)
        {
            // Upstream's copy loops panic here; the target keeps running without a network.
            warn(&format!("vpnkit: {e}"));
        }
        if sig {
            return true;
        }
        if req {
            let mut none = Vec::new();
            match sys::fdpass::recv(&self.sock, &mut none) {
                Ok(Msg::SocketsWanted(w)) => self.hand_over_sockets(&w),
                Ok(Msg::UdpRoute(r)) => self.udp_route(&r),
                Ok(Msg::NetReconfigure(net)) if self.reconfigure => self.reconfigure_net(&net),
                // The parent is gone or talks nonsense: stop listening to it.
                _ => {
                    self.serve_ports = false;
                    self.reconfigure = false;
                }
            }
        }
        false
    }

    /// Handles one `NetReconfigure`: the restarted driver's new interface gets the address, MTU
    /// and default route again, in the namespace the target's network is in. resolv.conf and
    /// hosts are unchanged (same addresses), so the /etc binds stay as they are.
    fn reconfigure_net(&self, net: &NetConfig) {
        let done = match &self.detached {
            Some(ns) => configure_detached(ns, net),
            None if net.mode == NetMode::Configure => {
                let mtu = if net.mtu == 0 { 1500 } else { net.mtu };
                sys::netlink::activate_dev(net.ifname_str(), mtu, net.addr, net.prefix, net.gateway)
                    .map_err(|e| e.to_string())
            }
            None => Ok(()),
        };
        if let Err(e) = done {
            warn(&format!(
                "failed to configure {} again after the network driver restarted: {e}",
                net.ifname_str()
            ));
        }
    }

    /// Answers one `SocketsWanted`: sockets made in the namespace the target's network is in.
    fn hand_over_sockets(&mut self, w: &proto::SocketsWanted) {
        let mut fds: [Option<OwnedFd>; proto::MAX_SOCKETS as usize] = Default::default();
        let transparent = self.transparent[usize::from(w.family == 6)];
        let made = match &self.detached {
            Some(ns) => ns
                .within(|| Ok(child::ports::make_sockets(w, transparent, &mut fds)))
                .unwrap_or(Err(rustix::io::Errno::NETUNREACH)),
            None => child::ports::make_sockets(w, transparent, &mut fds),
        };
        let (count, transparent, errno) = match made {
            Ok((n, t)) => (n, t, 0),
            Err(e) => (0, false, e.raw_os_error()),
        };
        // One small list per batch of sockets, not per connection.
        let out: Vec<BorrowedFd<'_>> = fds.iter().flatten().map(|f| f.as_fd()).collect();
        let _ = sys::fdpass::send(
            &self.sock,
            &Msg::SocketsMade(proto::SocketsMade {
                count: count as u8,
                transparent: u8::from(transparent),
                errno,
            }),
            &out,
        );
    }

    /// Handles one `UdpRoute`, in the namespace the target's network is in; an add is answered.
    fn udp_route(&mut self, r: &proto::UdpRoute) {
        let client = if r.family == 4 {
            IpAddr::from([r.addr[0], r.addr[1], r.addr[2], r.addr[3]])
        } else {
            IpAddr::from(r.addr)
        };
        let add = r.add == 1;
        let ruled = &mut self.udp_ruled;
        let done = if !self.transparent[usize::from(r.family == 6)] {
            // No transparent sockets were handed out for this family: nothing to route.
            Err(rustix::io::Errno::OPNOTSUPP)
        } else {
            match &self.detached {
                Some(ns) => ns
                    .within(|| Ok(child::routing::udp_reply_route(add, r.port, client, ruled)))
                    .unwrap_or(Err(rustix::io::Errno::NETUNREACH)),
                None => child::routing::udp_reply_route(add, r.port, client, ruled),
            }
        };
        if add {
            let errno = done.err().map_or(0, |e| e.raw_os_error());
            let _ = sys::fdpass::send(&self.sock, &Msg::UdpRouted(proto::UdpRouted { errno }), &[]);
        }
    }

    /// Reaps what has exited (everything, as a reaper; only the target otherwise) and returns
    /// the target's end if it is among them.
    fn reap(&self, target: i32) -> Option<Ended> {
        let target_pid = Pid::from_raw(target)?;
        let mut found = None;
        loop {
            // `waitpid(None)` would mean our process group only; the reaper wants every child.
            let r = if self.args.reaper {
                wait(WaitOptions::NOHANG)
            } else {
                waitpid(Some(target_pid), WaitOptions::NOHANG)
            };
            match r {
                Ok(Some((pid, st))) => {
                    if pid.as_raw_nonzero().get() == target
                        && let Some(e) = Ended::from_wait(st)
                    {
                        found = Some(e);
                    }
                }
                Ok(None) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        found
    }
}
