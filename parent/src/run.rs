//! The parent's life: create the namespaces by starting `rootlesskit-child`, write its id maps,
//! drive the startup handshake (network driver, port driver, API socket, `child_pid`), then run
//! one loop on one epoll set that serves the API, forwards signals, accepts and pumps published
//! ports, and watches the driver, until the child exits.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use linux_raw_sys::general as g;
use proto::{Msg, NetConfig, NetMode, PortMode};
use rustix::event::{PollFd, PollFlags, Timespec, epoll, poll};
use rustix::thread::UnshareFlags;
use sys::process::Ended;
use sys::signal;
use sys::spawn::{Command, Stage};

use crate::cli::{Config, Net, PortDriver, Reaper};
use crate::libexec::{CHILD_BIN, UNSHARE_BIN, find_helper};
use crate::statedir::StateDir;
use crate::{api, exec, idmap, net, warn};

/// How a run ends: an exit code, and the error line to print first, if any.
pub(crate) struct Outcome {
    /// Exit code of `rootlesskit`.
    pub code: i32,
    /// `[rootlesskit:<who>] error: <text>` is printed when set.
    pub error: Option<(&'static str, String)>,
    /// A signal that interrupted setup: re-raised after cleanup so we die the way an
    /// unprepared process would.
    pub raise: Option<u32>,
}

impl Outcome {
    fn parent_error(text: String) -> Outcome {
        Outcome {
            code: 1,
            error: Some(("parent", text)),
            raise: None,
        }
    }
}

/// Everything after validation. Never returns without having removed the state directory.
pub(crate) fn run(cfg: &Config, settings: &crate::cli::Settings, sigfd: &OwnedFd) -> Outcome {
    // First of all, while the only descriptor we opened is the signalfd.
    let mut status = match crate::statusfd::StatusFds::adopt(
        cfg.info_fd.and_then(|n| i32::try_from(n).ok()),
        cfg.json_status_fd.and_then(|n| i32::try_from(n).ok()),
        sigfd.as_raw_fd(),
        listen_fds().map_or(0, |(n, _)| n),
    ) {
        Ok(s) => s,
        Err(e) => return Outcome::parent_error(e),
    };
    let helper = match find_helper(CHILD_BIN) {
        Ok(p) => p,
        Err(e) => return Outcome::parent_error(e),
    };
    let unshare = if cfg.detach_netns {
        match find_helper(UNSHARE_BIN) {
            Ok(p) => Some(p),
            Err(e) => return Outcome::parent_error(e),
        }
    } else {
        None
    };
    preflight_warnings(cfg);
    // The id maps are computed before anything exists on disk, so that a user without
    // subordinate ids gets the error (or the fallback warning) with nothing to clean up.
    let user = match idmap::current_user() {
        Ok(u) => u,
        Err(e) => return Outcome::parent_error(e),
    };
    let maps = match idmap::compute(&user, cfg.subid_source, &mut |w| warn(&w)) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::parent_error(format!(
                "failed to setup UID/GID map: failed to compute uid/gid map: {e}"
            ));
        }
    };
    // The network driver is looked up and probed before anything exists on disk, too; only
    // slirp4netns's `--help` may still be running, read when the driver starts.
    let driver = match net::probe_config(cfg, settings) {
        Ok(d) => d,
        Err(e) => return Outcome::parent_error(e),
    };
    let mut state = match StateDir::create(cfg.state_dir.as_deref()) {
        Ok(s) => s,
        Err(e) => return Outcome::parent_error(e),
    };
    // The session, and with it the driver process, ends before the state dir is removed.
    let outcome = Session::run(
        cfg,
        &helper,
        unshare.as_deref(),
        &maps,
        &state,
        sigfd,
        driver,
        &mut status,
    );
    if let Err(e) = state.remove() {
        warn(&e);
    }
    // After the cleanup, so that a reader of the exit code finds the state dir gone.
    status.exited(outcome.code);
    outcome
}

/// Number of socket-activation descriptors to pass on (systemd's `LISTEN_FDS`), if any.
fn listen_fds() -> Option<(i32, bool)> {
    let pid: i32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let n: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    (n > 0).then_some((n, pid == std::process::id() as i32))
}

fn preflight_warnings(cfg: &Config) {
    if rustix::process::geteuid().is_root() {
        warn("Running RootlessKit as the root user is unsupported.");
    }
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        && s.trim() == "0"
    {
        warn("/proc/sys/kernel/unprivileged_userns_clone needs to be set to 1.");
    }
    if let Ok(s) = std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        match s.trim().parse::<u64>() {
            Ok(0) => warn("/proc/sys/user/max_user_namespaces needs to be set to non-zero."),
            Ok(n) if n < 1024 => warn(&format!(
                "/proc/sys/user/max_user_namespaces={n} may be low. Consider setting to >= 1024."
            )),
            _ => {}
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    match root_optional_fields(&mountinfo) {
        None => warn("Failed to parse mountinfo"),
        Some(optional) => {
            if let Some(w) = propagation_warning(cfg.propagation.as_str(), optional) {
                warn(&w);
            }
        }
    }
}

/// The optional fields (`shared:1`, `master:363`, ...) of the first `/` mount in a
/// mountinfo text, space-joined; `None` when there is no such line.
fn root_optional_fields(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) != Some(&"/") {
            return None;
        }
        let end = fields.iter().skip(6).position(|f| *f == "-")?;
        Some(fields[6..6 + end].join(" "))
    })
}

/// Upstream's warning for a non-private `--propagation` when the host's `/` is not a shared
/// mount (as inside a container): the child cannot receive the host's later mounts then.
fn propagation_warning(propagation: &str, root_optional: String) -> Option<String> {
    (!propagation.contains("private") && !root_optional.contains("shared")).then(|| {
        format!(
            "The host root filesystem is mounted as {}. Setting child propagation to {} is not supported.",
            exec::quote(&root_optional),
            exec::quote(propagation)
        )
    })
}

struct Session<'a> {
    cfg: &'a Config,
    driver: Option<Box<dyn net::Driver>>,
    /// What `GET /v1/info` reports about the network, known once the driver is up.
    net_info: Option<api::NetworkDriverInfo>,
    /// The API server, served from the supervision loop (no thread).
    api: Option<api::server::Server>,
    /// The builtin port driver, when `--port-driver=builtin`.
    ports: Option<std::rc::Rc<crate::port::builtin::Builtin>>,
    /// slirp4netns's API socket (`--port-driver=slirp4netns`), or pasta's control socket
    /// (`--port-driver=pesto`).
    s4nn_socket: Option<PathBuf>,
    /// The slirp4netns or pesto port driver, whose ports a restarted slirp4netns or pasta gets
    /// again.
    s4nn_ports: Option<std::rc::Rc<dyn net::heal::Reapply>>,
    /// Watches the network driver under the running target (and restarts it).
    healer: Option<net::heal::Healer>,
    /// `--net=gvisor-tap-vsock`: our own network on the child's tap.
    /// Shared with its port driver (`--port-driver=gvisor-tap-vsock`).
    usernet: Option<std::rc::Rc<std::cell::RefCell<crate::usernet::Stack>>>,
    sigfd: &'a OwnedFd,
    pid: i32,
    pidfd: OwnedFd,
    sock: UnixStream,
    reaped: Option<Ended>,
    /// The sd_notify relay, when `$NOTIFY_SOCKET` names a socket we reach.
    notify: Option<crate::notify::Relay>,
}

/// Why the handshake stopped.
enum Abort {
    /// The child or the protocol failed; the text is for the user.
    Error(&'static str, String),
    /// A terminating signal arrived during setup.
    Signal(u32),
    /// The child is gone; its status was collected.
    ChildGone,
}

impl<'a> Session<'a> {
    // What `run` has made ready for the session, each used once; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn run(
        cfg: &'a Config,
        helper: &Path,
        unshare: Option<&Path>,
        maps: &idmap::IdMaps,
        state: &StateDir,
        sigfd: &'a OwnedFd,
        driver: Option<Box<dyn net::Driver>>,
        status: &mut crate::statusfd::StatusFds,
    ) -> Outcome {
        let tap = driver.as_deref().and_then(|d| d.persistent_tap());
        let mut session = match Session::start(cfg, helper, unshare, maps, state, sigfd, tap) {
            Ok(s) => s,
            Err(e) => return Outcome::parent_error(e),
        };
        session.driver = driver;
        match session.handshake(state, status) {
            Ok(()) => session.supervise(),
            Err(abort) => session.abort(abort),
        }
    }

    fn start(
        cfg: &'a Config,
        helper: &Path,
        unshare: Option<&Path>,
        maps: &idmap::IdMaps,
        state: &StateDir,
        sigfd: &'a OwnedFd,
        tap: Option<String>,
    ) -> Result<Session<'a>, String> {
        let (sock, child_sock) = UnixStream::pair()
            .map_err(|e| format!("failed to create a socket pair: {}", sys::errno::text(&e)))?;
        let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("failed to create a pipe: {}", sys::errno::text(e)))?;
        let listen = listen_fds();
        let nfds = listen.map(|(n, _)| n).unwrap_or(0);
        let proto_fd: RawFd = 3 + nfds;

        // The driver's tap, made persistent so that the driver's exit does not wait for its
        // teardown: before the exec (the driver may start right after it), or by the child in
        // the namespace it detaches.
        let detached_tap = tap.as_deref().filter(|_| cfg.detach_netns);
        let argv = child_argv(cfg, state.path(), proto_fd, listen, unshare, detached_tap);
        // Bound in the real directory; the target names it through the given one, as it does
        // the state dir.
        let notify = crate::notify::Relay::setup(
            state.path(),
            state.given_path(),
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
        );
        let env = child_env(state.given_path(), notify.as_ref().map(|n| n.path()));
        let mut cmd = Command::new(helper, &argv, env)
            .map_err(|e| format!("failed to start the child: {}", sys::errno::text(&e)))?;
        let mut clone_flags = (g::CLONE_NEWUSER | g::CLONE_NEWNS) as u64;
        if cfg.pidns {
            clone_flags |= g::CLONE_NEWPID as u64;
        }
        let mut unshare = UnshareFlags::empty();
        if new_netns(cfg) {
            unshare |= UnshareFlags::NEWNET;
        }
        if cfg.cgroupns {
            unshare |= UnshareFlags::NEWCGROUP;
        }
        if cfg.utsns {
            unshare |= UnshareFlags::NEWUTS;
        }
        if cfg.ipcns {
            unshare |= UnshareFlags::NEWIPC;
        }
        if let Some(tap) = tap
            .as_deref()
            .filter(|_| !cfg.detach_netns && new_netns(cfg))
        {
            cmd.persistent_tap(tap);
        }
        cmd.clone_flags(clone_flags)
            .unshare(unshare)
            .fd(OwnedFd::from(child_sock), proto_fd)
            .close_in_child(go_w.as_raw_fd())
            .wait_for_go(go_r);
        for fd in 3..3 + nfds {
            cmd.keep_fd(fd);
        }
        let mut started = cmd.spawn().map_err(|e| start_error(helper, &e))?;
        let pidfd = started
            .pidfd
            .try_clone()
            .map_err(|e| sys::errno::text(&e))?;
        let pid = started.pid;
        let kill_and_reap = |msg: String| {
            let _ = sys::signal::pidfd_send_signal(&pidfd, g::SIGKILL);
            let _ = rustix::process::waitpid(
                rustix::process::Pid::from_raw(pid),
                rustix::process::WaitOptions::empty(),
            );
            msg
        };
        if let Err(e) = idmap::apply(pid, maps) {
            return Err(kill_and_reap(e));
        }
        // The maps are in place: let the child go on to exec with full capabilities.
        if let Err(e) = rustix::io::write(&go_w, &[1]) {
            return Err(kill_and_reap(format!(
                "failed to start the child: {}",
                sys::errno::text(e)
            )));
        }
        drop(go_w);
        if let Err(e) = started.wait_exec() {
            let what = match e.stage {
                Stage::Exec | Stage::Go => {
                    format!(
                        "fork/exec {}: {}",
                        helper.display(),
                        sys::errno::text(&e.error)
                    )
                }
                Stage::Unshare => format!("unshare: {}", sys::errno::text(&e.error)),
                Stage::Setup => sys::errno::text(&e.error),
            };
            return Err(kill_and_reap(format!("failed to start the child: {what}")));
        }
        Ok(Session {
            cfg,
            driver: None,
            net_info: None,
            api: None,
            ports: None,
            s4nn_socket: None,
            s4nn_ports: None,
            healer: None,
            usernet: None,
            sigfd,
            pid,
            pidfd,
            sock,
            reaped: None,
            notify,
        })
    }

    fn handshake(
        &mut self,
        state: &StateDir,
        status: &mut crate::statusfd::StatusFds,
    ) -> Result<(), Abort> {
        // The child's namespaces exist once it has exec'd, so the driver can start while the
        // child is still starting up; not with --detach-netns (the child makes that namespace
        // after its exec) or --evacuate-cgroup2 (the processes move first, as upstream).
        let early = !self.cfg.detach_netns && self.cfg.evacuate_cgroup2.is_none();
        let mut started = None;
        if early {
            started = Some(self.start_network(state)?);
        }
        self.expect(
            |m| matches!(m, Msg::ChildInitUserNsCompleted),
            "ChildInitUserNSCompleted",
        )?;
        if let Some(group) = &self.cfg.evacuate_cgroup2 {
            match crate::cgroup::evacuate(self.pid, group) {
                Ok(warnings) => warnings.iter().for_each(|w| warn(w)),
                Err(e) => return Err(Abort::Error("parent", e)),
            }
        }
        let net = match started {
            Some(net) => net,
            None => self.start_network(state)?,
        };
        self.send(&Msg::NetworkDriverCompleted(net))?;
        let port = match self.cfg.port_driver {
            PortDriver::Builtin if self.cfg.source_ip_transparent => PortMode::BuiltinTransparent,
            PortDriver::Builtin => PortMode::Builtin,
            _ => PortMode::None,
        };
        self.send(&Msg::PortDriverCompleted(port))?;
        if net.mode == NetMode::Dhcp {
            self.take_lease(state)?;
        }
        if net.mode == NetMode::Tap {
            self.take_tap(&net)?;
        }
        self.expect(|m| matches!(m, Msg::ChildReady), "ChildReady")?;
        // The API socket exists before child_pid, which is what scripts wait for, and both
        // exist before the target starts.
        let port_driver: Option<std::rc::Rc<dyn crate::port::PortDriver>> =
            if self.cfg.port_driver == PortDriver::Builtin {
                let builtin = std::rc::Rc::new(
                    crate::port::builtin::Builtin::new().map_err(|e| Abort::Error("parent", e))?,
                );
                if self.cfg.source_ip_transparent {
                    let child_ip = self.net_info.as_ref().and_then(|n| n.child_ip.parse().ok());
                    builtin.enable_transparency(child_ip);
                }
                self.publish(&*builtin)?;
                self.ports = Some(builtin.clone());
                Some(builtin)
            } else if self.cfg.port_driver == PortDriver::Slirp4netns {
                let socket = self.s4nn_socket.clone().ok_or_else(|| {
                    Abort::Error("parent", "slirp4netns has no API socket".into())
                })?;
                let child_ip = self
                    .net_info
                    .as_ref()
                    .map(|n| n.child_ip.clone())
                    .unwrap_or_default();
                let driver = std::rc::Rc::new(crate::port::slirp4netns::Slirp4netnsPorts::new(
                    socket, child_ip,
                ));
                self.publish(&*driver)?;
                self.s4nn_ports = Some(driver.clone());
                Some(driver)
            } else if self.cfg.port_driver == PortDriver::Pesto {
                let driver = self.pesto_ports()?;
                self.s4nn_ports = Some(driver.clone());
                Some(driver)
            } else if self.cfg.port_driver == PortDriver::GvisorTapVsock
                && let Some(stack) = &self.usernet
            {
                let driver =
                    std::rc::Rc::new(crate::port::usernet::UsernetPorts::new(stack.clone()));
                self.publish(&*driver)?;
                Some(driver)
            } else {
                None
            };
        let net_shown = self
            .net_info
            .as_ref()
            .map(|n| (n.driver.clone(), n.child_ip.clone()));
        let backend = api::Backend {
            state_dir: state.given_path().to_string_lossy().into_owned(),
            child_pid: self.pid,
            network_driver: self.net_info.take(),
            port_driver,
        };
        let listener = api::server::listen(&state.path().join("api.sock"))
            .map_err(|e| Abort::Error("parent", e))?;
        self.api = Some(
            api::server::Server::new(listener, backend, api::server::Config::default())
                .map_err(|e| Abort::Error("parent", e))?,
        );
        state
            .write_child_pid(self.pid)
            .map_err(|e| Abort::Error("parent", e))?;
        if let Some(driver) = self.driver.as_deref() {
            let netns =
                (self.cfg.detach_netns).then(|| detached_netns_path(self.pid, state.path()));
            let healer = net::heal::Healer::new(
                driver,
                self.cfg.restart_net_driver,
                self.pid,
                netns,
                state.path().to_path_buf(),
            );
            self.healer = Some(healer.map_err(|e| Abort::Error("parent", e))?);
        }
        // Ready as child_pid is: the info and status descriptors hear of it before the target
        // starts.
        let given = state.given_path().to_string_lossy();
        let api_socket = state.given_path().join("api.sock");
        let api_socket = api_socket.to_string_lossy();
        status.ready(&crate::statusfd::ReadyInfo {
            child_pid: self.pid,
            state_dir: &given,
            api_socket: &api_socket,
            namespaces: self.namespace_ids(state),
            net: net_shown.as_ref().map(|(d, ip)| (d.as_str(), ip.as_str())),
        });
        self.send(&Msg::ParentGo)?;
        if self.cfg.notify_ready == crate::notify::Ready::Child
            && let Some(n) = self.notify.as_mut()
        {
            n.send_ready();
        }
        if let Some(ports) = &self.ports {
            // From now on the child answers connect requests on this socket.
            let sock = self.sock.try_clone().map_err(|e| {
                Abort::Error("parent", format!("port driver: {}", sys::errno::text(&e)))
            })?;
            ports.attach_child(sock);
        }
        Ok(())
    }

    /// The inode ids of the namespaces made for the child, as `--info-fd` reports them; the
    /// detached network namespace's with `--detach-netns`.
    fn namespace_ids(&self, state: &StateDir) -> Vec<(&'static str, u64)> {
        let proc = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid));
        let mut wanted = vec![
            ("user-namespace", proc("user")),
            ("mnt-namespace", proc("mnt")),
        ];
        if new_netns(self.cfg) {
            wanted.push(("net-namespace", proc("net")));
        } else if self.cfg.detach_netns {
            wanted.push(("net-namespace", detached_netns_path(self.pid, state.path())));
        }
        for (made, key, kind) in [
            (self.cfg.pidns, "pid-namespace", "pid"),
            (self.cfg.cgroupns, "cgroup-namespace", "cgroup"),
            (self.cfg.utsns, "uts-namespace", "uts"),
            (self.cfg.ipcns, "ipc-namespace", "ipc"),
        ] {
            if made {
                wanted.push((key, proc(kind)));
            }
        }
        wanted
            .into_iter()
            .filter_map(|(key, path)| crate::statusfd::namespace_id(&path).map(|id| (key, id)))
            .collect()
    }

    /// Starts the network driver (if any) and writes `resolv.conf` and `hosts` for it; what
    /// the child is to configure.
    fn start_network(&mut self, state: &StateDir) -> Result<NetConfig, Abort> {
        let net = match (self.cfg.net, self.driver.as_mut()) {
            (_, Some(driver)) => {
                // A probe left running in the background gives its errors as they would have
                // come before the start (the state dir and the child go on the way out).
                driver.settle().map_err(|e| Abort::Error("parent", e))?;
                let netns = self
                    .cfg
                    .detach_netns
                    .then(|| detached_netns_path(self.pid, state.path()));
                let target = net::Target {
                    child_pid: self.pid,
                    netns: netns.as_deref(),
                    state_dir: state.path(),
                };
                let watch = [self.sigfd.as_fd(), self.pidfd.as_fd()];
                // Only a signal that ends the setup may interrupt the driver's start (which
                // cannot resume after it): the others (SIGCHLD of its own helpers, SIGWINCH…)
                // stay pending until the mask is whole again.
                let _ = sys::signal::set_signalfd_mask(self.sigfd, setup_interrupts());
                let started = driver.start(target, &watch);
                let _ = sys::signal::set_signalfd_mask(self.sigfd, sys::signal::handled());
                let prepared = match started {
                    Ok(p) => p,
                    Err(net::StartError::Interrupted) => return Err(self.interrupted()),
                    Err(net::StartError::Failed(e)) => {
                        return Err(Abort::Error(
                            "parent",
                            format!("failed to setup network {}: {e}", driver.name()),
                        ));
                    }
                };
                net::resolv::write_files(state.path(), &prepared.dns)
                    .map_err(|e| Abort::Error("parent", e))?;
                self.s4nn_socket = prepared.api_socket.clone();
                let a = prepared.net.addr;
                let dhcp = prepared.net.mode == NetMode::Dhcp;
                self.net_info = Some(api::NetworkDriverInfo {
                    driver: driver.name().to_string(),
                    dns: prepared.dns.clone(),
                    // With DHCP the address comes with the child's NetLease.
                    child_ip: if dhcp {
                        String::new()
                    } else {
                        format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
                    },
                    dynamic_child_ip: dhcp,
                });
                prepared.net
            }
            (Net::Host, None) => NetConfig::empty(NetMode::Host),
            (Net::None, None) => {
                self.net_info = Some(api::NetworkDriverInfo {
                    driver: "none".into(),
                    dns: Vec::new(),
                    child_ip: String::new(),
                    dynamic_child_ip: false,
                });
                NetConfig::empty(NetMode::Loopback)
            }
            (other, None) => {
                return Err(Abort::Error(
                    "parent",
                    format!("network driver {other:?} is not supported yet"),
                ));
            }
        };
        Ok(net)
    }

    /// Reads the child's `NetLease` (DHCP) and writes `resolv.conf` for it, before `ChildReady`
    /// and so before the target starts; the child has bind-mounted that very file (it is
    /// rewritten in place).
    fn take_lease(&mut self, state: &StateDir) -> Result<(), Abort> {
        let Msg::NetLease(lease) = self.expect(|m| matches!(m, Msg::NetLease(_)), "NetLease")?
        else {
            return Ok(());
        };
        let dns = vec![net::ipv4_text(lease.dns)];
        net::resolv::write_resolv_conf(state.path(), &dns)
            .map_err(|e| Abort::Error("parent", e))?;
        if let Some(info) = self.net_info.as_mut() {
            info.child_ip = net::ipv4_text(lease.addr);
            info.dns = dns;
        }
        Ok(())
    }

    /// `--port-driver=pesto`: pasta's control socket (`prepared.api_socket`) and the
    /// namespace's addresses, with the `-p` ports published.
    fn pesto_ports(&self) -> Result<std::rc::Rc<crate::port::pesto::PestoPorts>, Abort> {
        let fail = |e: String| Abort::Error("parent", e);
        let socket = self
            .s4nn_socket
            .clone()
            .ok_or_else(|| fail("pasta has no control socket".into()))?;
        let child_ip = self
            .net_info
            .as_ref()
            .and_then(|n| n.child_ip.parse().ok())
            .ok_or_else(|| fail("pasta reported no child IP".into()))?;
        let child_ip6 = self
            .cfg
            .ipv6
            .then(|| net::pasta::CHILD_IP6.parse().ok())
            .flatten();
        let driver = std::rc::Rc::new(crate::port::pesto::PestoPorts::new(
            crate::port::pesto::look_up().map_err(fail)?,
            socket,
            child_ip,
            child_ip6,
        ));
        self.publish(&*driver)?;
        Ok(driver)
    }

    /// Reads the child's `TapMade` and starts our own network on the tap it carries.
    fn take_tap(&mut self, net: &NetConfig) -> Result<(), Abort> {
        let mut fds = Vec::with_capacity(1);
        self.expect_with_fds(|m| matches!(m, Msg::TapMade), "TapMade", &mut fds)?;
        let tap = fds
            .pop()
            .ok_or_else(|| Abort::Error("parent", "TapMade came without the tap".into()))?;
        let cfg = crate::usernet::Config::new(net, !self.cfg.disable_host_loopback, self.cfg.ipv6);
        let stack = crate::usernet::Stack::new(tap, cfg).map_err(|e| Abort::Error("parent", e))?;
        self.usernet = Some(std::rc::Rc::new(std::cell::RefCell::new(stack)));
        Ok(())
    }

    /// Publishes every `-p` spec, as upstream does before `child_pid` appears.
    fn publish(&self, driver: &dyn crate::port::PortDriver) -> Result<(), Abort> {
        for spec in &self.cfg.publish {
            driver.add(spec.clone()).map_err(|e| {
                let shown = spec.go_value();
                Abort::Error("parent", format!("failed to expose port {shown}: {e}"))
            })?;
        }
        Ok(())
    }

    /// Waits for the next frame while watching signals and the child's death.
    fn expect(&mut self, want: fn(&Msg) -> bool, name: &str) -> Result<Msg, Abort> {
        self.expect_with_fds(want, name, &mut Vec::new())
    }

    /// [`Session::expect`], keeping the descriptors that came with the frame (as many as
    /// `fds` has spare capacity for).
    fn expect_with_fds(
        &mut self,
        want: fn(&Msg) -> bool,
        name: &str,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<Msg, Abort> {
        loop {
            let (sock_ready, sig_ready, child_ready) = {
                let mut fds = [
                    PollFd::new(&self.sock, PollFlags::IN),
                    PollFd::new(self.sigfd, PollFlags::IN),
                    PollFd::new(&self.pidfd, PollFlags::IN),
                ];
                match poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(Abort::Error("parent", format!("poll: {e}"))),
                }
                (
                    !fds[0].revents().is_empty(),
                    !fds[1].revents().is_empty(),
                    !fds[2].revents().is_empty(),
                )
            };
            if sig_ready {
                if let Ok(info) = sys::signal::read_signal(self.sigfd)
                    && terminates_setup(info.signo)
                {
                    return Err(Abort::Signal(info.signo));
                }
                continue;
            }
            if sock_ready {
                return match sys::fdpass::recv(&self.sock, fds) {
                    Ok(Msg::ChildError(text)) => {
                        Err(Abort::Error("child ", text.as_str().to_string()))
                    }
                    Ok(m) if want(&m) => Ok(m),
                    Ok(m) => Err(Abort::Error(
                        "parent",
                        format!("expected \"{name}\", got \"{}\"", m.name()),
                    )),
                    Err(proto::Error::Eof) => Err(self.child_gone()),
                    Err(e) => Err(Abort::Error(
                        "parent",
                        format!("reading from the child: {e}"),
                    )),
                };
            }
            if child_ready {
                return Err(self.child_gone());
            }
        }
    }

    fn send(&mut self, msg: &Msg) -> Result<(), Abort> {
        match proto::write_frame(&mut self.sock, msg) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.child_gone()),
        }
    }

    /// A driver start was cut short by a signal or by the child's death: find out which.
    fn interrupted(&mut self) -> Abort {
        let mut fds = [PollFd::new(self.sigfd, PollFlags::IN)];
        let pending =
            matches!(poll(&mut fds, Some(&rustix::event::Timespec::default())), Ok(n) if n > 0);
        if pending
            && let Ok(info) = sys::signal::read_signal(self.sigfd)
            && terminates_setup(info.signo)
        {
            return Abort::Signal(info.signo);
        }
        self.child_gone()
    }

    /// Collects the child's exit status after it vanished during setup. A child that failed
    /// while the parent was busy elsewhere (starting the driver) left its reason in the socket:
    /// that is the error, not its bare exit.
    fn child_gone(&mut self) -> Abort {
        self.reap_blocking();
        // Frames it sent before (ChildInitUserNSCompleted, if the driver started first) come
        // ahead of the error; the child is gone, so the socket ends after them.
        loop {
            let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
            let pending =
                matches!(poll(&mut fds, Some(&rustix::event::Timespec::default())), Ok(n) if n > 0);
            if !pending {
                return Abort::ChildGone;
            }
            match proto::read_frame(&mut self.sock) {
                Ok(Msg::ChildError(text)) => {
                    return Abort::Error("child ", text.as_str().to_string());
                }
                Ok(_) => {}
                Err(_) => return Abort::ChildGone,
            }
        }
    }

    fn reap_blocking(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        loop {
            match rustix::process::waitpid(
                rustix::process::Pid::from_raw(self.pid),
                rustix::process::WaitOptions::empty(),
            ) {
                Ok(Some((_, st))) => {
                    if let Some(e) = Ended::from_wait(st) {
                        self.reaped = Some(e);
                        return;
                    }
                }
                Err(rustix::io::Errno::INTR) => continue,
                _ => {
                    self.reaped = Some(Ended::Exited(1));
                    return;
                }
            }
        }
    }

    fn abort(mut self, why: Abort) -> Outcome {
        if self.reaped.is_none() {
            let _ = sys::signal::pidfd_send_signal(&self.pidfd, g::SIGKILL);
            self.reap_blocking();
        }
        match why {
            Abort::Error(who, text) => Outcome {
                code: 1,
                error: Some((who, text)),
                raise: None,
            },
            Abort::Signal(sig) => Outcome {
                code: 128 + sig as i32,
                error: None,
                raise: Some(sig),
            },
            Abort::ChildGone => {
                let ended = self.reaped.unwrap_or(Ended::Exited(1));
                Outcome {
                    code: if ended.exit_code() == 0 {
                        1
                    } else {
                        ended.exit_code()
                    },
                    error: Some((
                        "parent",
                        format!("child exited before setup completed: {}", ended.describe()),
                    )),
                    raise: None,
                }
            }
        }
    }

    /// After the handshake: serve the API and forward signals to the child until it exits.
    fn supervise(mut self) -> Outcome {
        // From here on we only supervise: let the setup code leave memory.
        sys::mem::page_out_own_image();
        let ep = match self.supervision_set() {
            Ok(ep) => ep,
            Err(e) => return Outcome::parent_error(e),
        };
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 8];
        loop {
            let now = Instant::now();
            let api_wait = self.api.as_ref().and_then(|s| s.timeout(now));
            // A published port paused for want of descriptors tries again then.
            let ports_wait = self.ports.as_ref().and_then(|p| p.timeout(now));
            let net_wait = self.usernet.as_ref().and_then(|n| n.borrow().timeout(now));
            let wait = [api_wait, ports_wait, net_wait].into_iter().flatten().min();
            let timeout = wait.and_then(|d| Timespec::try_from(d).ok());
            let n = match epoll::wait(&ep, &mut events, timeout.as_ref()) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Outcome::parent_error(format!("epoll_wait: {e}")),
            };
            let mut api_ready = api_wait.is_some_and(|d| now.elapsed() >= d);
            if ports_wait.is_some_and(|d| now.elapsed() >= d)
                && let Some(p) = &self.ports
            {
                p.accept_ready();
            }
            let mut net_ready = net_wait.is_some_and(|d| now.elapsed() >= d);
            let mut child_exited = false;
            for ev in &events[..n] {
                match ev.data.u64() {
                    SIGNAL => {
                        if let Ok(info) = sys::signal::read_signal(self.sigfd)
                            && signal::is_forwarded(info.signo)
                        {
                            let _ = sys::signal::pidfd_send_signal(&self.pidfd, info.signo);
                        }
                    }
                    CHILD => child_exited = true,
                    DRIVER => {
                        // The driver died, or its restart moves on (net::heal).
                        if let (Some(h), Some(d)) = (self.healer.as_mut(), self.driver.as_mut()) {
                            h.ready(&mut **d, &mut self.sock, self.s4nn_ports.as_deref());
                        }
                    }
                    PORTS_ACCEPT => {
                        if let Some(p) = &self.ports {
                            p.accept_ready();
                        }
                    }
                    PORTS_DATA => {
                        if let Some(p) = &self.ports {
                            p.pump_ready();
                        }
                    }
                    API => api_ready = true,
                    NOTIFY => {
                        if let Some(n) = self.notify.as_mut() {
                            n.relay();
                        }
                    }
                    USERNET => net_ready = true,
                    _ => {}
                }
            }
            if api_ready && let Some(server) = self.api.as_mut() {
                server.serve_ready();
            }
            if net_ready && let Some(stack) = &self.usernet {
                stack.borrow_mut().ready(Instant::now());
            }
            if child_exited {
                self.reap_blocking();
                let ended = self.reaped.unwrap_or(Ended::Exited(1));
                let code = ended.exit_code();
                return Outcome {
                    code,
                    error: (code != 0)
                        .then(|| ("parent", format!("child exited: {}", ended.describe()))),
                    raise: None,
                };
            }
        }
    }

    /// The one epoll set the supervision loop waits on: signals, the child's pidfd, the network
    /// driver's exit, the port driver's two sets and the API server's set, each registered once.
    fn supervision_set(&self) -> Result<OwnedFd, String> {
        let fail = |e: rustix::io::Errno| format!("epoll: {}", sys::errno::text(e));
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(fail)?;
        let add = |fd: BorrowedFd<'_>, tag: u64| {
            epoll::add(
                &ep,
                fd,
                epoll::EventData::new_u64(tag),
                epoll::EventFlags::IN,
            )
            .map_err(fail)
        };
        add(self.sigfd.as_fd(), SIGNAL)?;
        add(self.pidfd.as_fd(), CHILD)?;
        if let Some(healer) = &self.healer {
            add(healer.as_fd(), DRIVER)?;
        }
        if let Some(p) = &self.ports {
            let [accept, data] = p.poll_fds();
            add(accept, PORTS_ACCEPT)?;
            add(data, PORTS_DATA)?;
        }
        if let Some(server) = &self.api {
            add(server.as_fd(), API)?;
        }
        if let Some(n) = &self.notify {
            add(n.as_fd(), NOTIFY)?;
        }
        if let Some(stack) = &self.usernet {
            add(stack.borrow().as_fd(), USERNET)?;
        }
        Ok(ep)
    }
}

// The supervision set's tags.
const SIGNAL: u64 = 0;
const CHILD: u64 = 1;
const DRIVER: u64 = 2;
/// A published port has a connection waiting.
const PORTS_ACCEPT: u64 = 3;
/// A forwarded connection has data to move.
const PORTS_DATA: u64 = 4;
const API: u64 = 5;
/// The target wrote to our `$NOTIFY_SOCKET`.
const NOTIFY: u64 = 6;
/// The user-mode network has frames or host sockets to serve.
const USERNET: u64 = 7;

/// Signals whose default action would end an unprepared process: during setup they abort it.
fn terminates_setup(sig: u32) -> bool {
    !matches!(sig, 13 | 17 | 18 | 23 | 28)
}

/// The handled signals that [`terminates_setup`] says abort it.
fn setup_interrupts() -> sys::signal::SigSet {
    let all = sys::signal::handled();
    sys::signal::SigSet((1..=64u32).fold(0, |m, sig| {
        if all.contains(sig) && terminates_setup(sig) {
            m | 1 << (sig - 1)
        } else {
            m
        }
    }))
}

/// Whether the child gets a network namespace of its own at clone time. With `--detach-netns`
/// it stays in ours and makes the detached one itself (even for `--net=host`).
fn new_netns(cfg: &Config) -> bool {
    cfg.net != Net::Host && !cfg.detach_netns
}

/// The child's `<state>/netns` as seen from outside its mount namespace, where the bind mount
/// lives: `/proc/<pid>/root<state>/netns` (`state` is absolute).
fn detached_netns_path(pid: i32, state: &Path) -> PathBuf {
    let mut p = OsString::from(format!("/proc/{pid}/root"));
    p.push(state.join(proto::NETNS_FILE_NAME).as_os_str());
    PathBuf::from(p)
}

fn start_error(helper: &Path, e: &std::io::Error) -> String {
    let mut msg = format!("failed to start the child: {}", sys::errno::text(e));
    if e.raw_os_error() == Some(linux_raw_sys::errno::EACCES as i32) {
        if let Ok(s) =
            std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            && s.trim() == "1"
        {
            apparmor_hint(helper);
        }
        msg = format!(
            "failed to start the child: fork/exec /proc/self/exe: {}",
            sys::errno::text(e)
        );
    }
    msg
}

fn apparmor_hint(_helper: &Path) {
    let exe = std::fs::read_link("/proc/self/exe")
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/rootlesskit"));
    let exe_s = exe.display().to_string();
    let profile = exe_s.trim_start_matches('/').replace('/', ".");
    warn(
        "This error might have happened because /proc/sys/kernel/apparmor_restrict_unprivileged_userns is set to 1",
    );
    warn(&format!(
        "Hint: try running the following commands:\n\n\
         cat <<EOT | sudo tee \"/etc/apparmor.d/{profile}\"\n\
         abi <abi/4.0>,\n\
         include <tunables/global>\n\n\
         \"{exe_s}\" flags=(unconfined) {{\n  userns,\n\n  include if exists <local/{profile}>\n}}\n\
         EOT\n\
         sudo systemctl restart apparmor.service\n"
    ));
}

/// argv of `rootlesskit-child`: everything it needs to know, explicitly (no hidden variables).
fn child_argv(
    cfg: &Config,
    state: &Path,
    fd: RawFd,
    listen: Option<(i32, bool)>,
    unshare: Option<&Path>,
    detached_tap: Option<&str>,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![CHILD_BIN.into(), "--fd".into(), fd.to_string().into()];
    v.push("--state-dir".into());
    v.push(state.as_os_str().to_owned());
    if cfg.pidns {
        v.push("--pidns".into());
    }
    let reaper = match cfg.reaper {
        Reaper::Auto => cfg.pidns,
        Reaper::True => true,
        Reaper::False => false,
    };
    if reaper {
        v.push("--reaper".into());
    }
    v.push("--propagation".into());
    v.push(cfg.propagation.as_str().into());
    for d in &cfg.copy_up {
        v.push("--copy-up".into());
        v.push(d.as_os_str().to_owned());
    }
    // `cli::check` accepted the mode already; the child is told only when it is not the default.
    if !cfg.copy_up.is_empty() && cfg.copy_up_mode == crate::cli::CopyUpMode::Overlay.as_str() {
        v.push("--copy-up-mode".into());
        v.push("overlay".into());
    }
    if cfg.evacuate_cgroup2.is_some() {
        v.push("--evacuate-cgroup2".into());
    }
    if let Some((n, rewrite)) = listen {
        v.push("--listen-fds".into());
        v.push(n.to_string().into());
        if rewrite {
            v.push("--rewrite-listen-pid".into());
        }
    }
    if let Some(helper) = unshare {
        v.push("--detach-netns".into());
        v.push(helper.as_os_str().to_owned());
        if let Some(tap) = detached_tap {
            v.push("--persistent-tap".into());
            v.push(tap.into());
        }
    }
    if cfg.debug {
        v.push("--debug".into());
    }
    v.push("--".into());
    v.extend(cfg.command.iter().cloned());
    v
}

/// The child's environment: ours, plus the three documented variables (replacing any values
/// an outer rootlesskit set), and `NOTIFY_SOCKET` naming our relay when there is one.
fn child_env(state: &Path, notify: Option<&Path>) -> Vec<OsString> {
    const OURS: [&str; 3] = [
        "ROOTLESSKIT_STATE_DIR",
        "ROOTLESSKIT_PARENT_EUID",
        "ROOTLESSKIT_PARENT_EGID",
    ];
    let mut env: Vec<OsString> = std::env::vars_os()
        .filter(|(k, _)| !OURS.iter().any(|o| OsStr::new(o) == k))
        .filter(|(k, _)| notify.is_none() || k != "NOTIFY_SOCKET")
        .map(|(k, v)| {
            let mut e = k;
            e.push("=");
            e.push(v);
            e
        })
        .collect();
    if let Some(path) = notify {
        let mut e = OsString::from("NOTIFY_SOCKET=");
        e.push(path.as_os_str());
        env.push(e);
    }
    let mut sd = OsString::from("ROOTLESSKIT_STATE_DIR=");
    sd.push(state.as_os_str());
    env.push(sd);
    env.push(
        format!(
            "ROOTLESSKIT_PARENT_EUID={}",
            rustix::process::geteuid().as_raw()
        )
        .into(),
    );
    env.push(
        format!(
            "ROOTLESSKIT_PARENT_EGID={}",
            rustix::process::getegid().as_raw()
        )
        .into(),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signals_that_end_the_setup_interrupt_a_driver_start() {
        let set = setup_interrupts();
        for sig in [1, 2, 3, 15, 10, 12] {
            assert!(set.contains(sig), "{sig}");
        }
        for sig in [13, 17, 18, 23, 28] {
            assert!(!set.contains(sig), "{sig}");
        }
    }

    #[test]
    fn propagation_warning_when_root_is_not_shared() {
        let host = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    23 22 0:5 / /dev rw shared:2 - devtmpfs devtmpfs rw\n";
        let container = "600 500 0:50 / / rw master:363 - overlay overlay rw\n";
        let private = "30 29 0:2 /x /home rw - ext4 /dev/vdb rw\n\
                       31 29 0:3 / / rw - ext4 /dev/vda rw\n";
        assert_eq!(root_optional_fields(host).as_deref(), Some("shared:1"));
        assert_eq!(
            root_optional_fields(container).as_deref(),
            Some("master:363")
        );
        assert_eq!(root_optional_fields(private).as_deref(), Some(""));
        assert_eq!(
            root_optional_fields("31 29 0:3 / /home rw - ext4 x rw\n"),
            None
        );
        assert_eq!(root_optional_fields("31 29 0:3 / / rw shared:1\n"), None);
        let two = "31 29 0:3 / / rw shared:4 master:1 - ext4 x rw\n";
        assert_eq!(
            root_optional_fields(two).as_deref(),
            Some("shared:4 master:1")
        );

        let warns =
            |prop: &str, info: &str| propagation_warning(prop, root_optional_fields(info).unwrap());
        for prop in ["rprivate", "private"] {
            assert_eq!(warns(prop, container), None, "{prop}");
            assert_eq!(warns(prop, private), None, "{prop}");
        }
        for prop in ["rslave", "slave", "rshared", "shared", "bogus"] {
            assert_eq!(warns(prop, host), None, "{prop}");
        }
        assert_eq!(
            warns("rslave", container).as_deref(),
            Some(
                "The host root filesystem is mounted as \"master:363\". Setting child propagation to \"rslave\" is not supported."
            )
        );
        assert_eq!(
            warns("slave", private).as_deref(),
            Some(
                "The host root filesystem is mounted as \"\". Setting child propagation to \"slave\" is not supported."
            )
        );
    }

    #[test]
    fn detached_netns_is_reached_through_the_childs_root() {
        #[track_caller]
        fn check(pid: i32, state: &str, expect: &str) {
            assert_eq!(
                detached_netns_path(pid, Path::new(state)),
                Path::new(expect)
            );
        }
        check(4242, "/tmp/rk", "/proc/4242/root/tmp/rk/netns");
        check(
            7,
            "/run/user/1000/dockerd-rootless",
            "/proc/7/root/run/user/1000/dockerd-rootless/netns",
        );
    }
}
