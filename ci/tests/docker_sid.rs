//! Rootless Docker 28 on our binaries: Debian sid's docker.io and its own unmodified
//! `dockerd-rootless.sh`, run as the test user inside the sid rootfs (`ci::sid`), with ours first
//! in `$PATH`. Docker 28 no longer runs `rootlesskit-docker-proxy`: dockerd calls our API itself
//! (`PortManager.AddPort`) and runs its plain `docker-proxy` in the namespace. What a user sees:
//! - the daemon answers, says it is rootless and READY=1 on the unit's `$NOTIFY_SOCKET`;
//! - `docker build` of a Dockerfile with a `RUN` step, and `docker run`;
//! - `-p 127.0.0.1:P:80` answers on 127.0.0.1 only, `-p P:80` on 127.0.0.1, the host's address
//!   and (where the port driver does IPv6) `[::1]`, and `-p U:9999/udp` echoes datagrams;
//! - `docker rm -f` releases the ports (the API lists none, connections are refused);
//! - SIGTERM to rootlesskit leaves none of the daemon's processes and no state dir, and the
//!   daemon starts again on the same data.
//!
//! Variants: the script's defaults (slirp4netns, builtin ports), the slirp4netns port driver,
//! pasta with implicit ports, and the default with `--detach-netns` (sid's 28.5 script has no
//! `DOCKERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS` yet; moby's newer one prepends the flag to
//! `DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS`, which is what is set here).
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ci::sid::{self, PAGE};
use ci::{Run, Scratch, docker, skip};

/// One daemon at a time: several dockerds on a small machine only slow each other down.
static SERIAL: Mutex<()> = Mutex::new(());

const IMAGE: &str = "rkrs-busybox:latest";
const BUILT: &str = "rkrs-built:latest";
const SCRIPT: &str = "/usr/share/docker.io/contrib/dockerd-rootless.sh";

/// How the case publishes ports, and so what it can check.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ports {
    /// `--port-driver=builtin`: dockerd publishes through our API, IPv4 and IPv6.
    Builtin,
    /// `--port-driver=slirp4netns`: through our API, IPv4 only.
    Slirp4netns,
    /// pasta forwards what listens in the namespace; there is no port API.
    Implicit,
}

#[test]
fn slirp4netns_builtin() {
    run_case("d28-builtin", &[], Ports::Builtin);
}

#[test]
fn slirp4netns_slirp4netns() {
    run_case(
        "d28-s4nn",
        &[("DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "slirp4netns")],
        Ports::Slirp4netns,
    );
}

#[test]
fn pasta_implicit() {
    run_case(
        "d28-pasta",
        &[("DOCKERD_ROOTLESS_ROOTLESSKIT_NET", "pasta")],
        Ports::Implicit,
    );
}

/// Our in-process network (issue 12), which Docker 29's script falls back to when no
/// slirp4netns, vpnkit or pasta is installed.
#[test]
fn gvisor_tap_vsock_builtin() {
    run_case(
        "d28-gvisor",
        &[("DOCKERD_ROOTLESS_ROOTLESSKIT_NET", "gvisor-tap-vsock")],
        Ports::Builtin,
    );
}

/// pasta with ports added at run time through pesto (upstream v3.1); the client-side
/// expectations are those of the slirp4netns port driver (IPv4, the host's address for UDP).
#[test]
fn pasta_pesto() {
    run_case(
        "d28-pesto",
        &[
            ("DOCKERD_ROOTLESS_ROOTLESSKIT_NET", "pasta"),
            ("DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "pesto"),
        ],
        Ports::Slirp4netns,
    );
}

/// dockerd runs its iptables in the detached namespace from Docker 29 on (moby#47103); the
/// script of such a release enables it with `DOCKERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS=true`
/// (it prepends `--detach-netns` to the rootlesskit flags). Docker 28's dockerd runs iptables in
/// the host's network namespace when rootlesskit detaches it, and fails, whatever rootlesskit.
#[test]
fn slirp4netns_builtin_detach_netns() {
    if let Ok(root) = sid::root() {
        let script =
            fs::read_to_string(root.join(SCRIPT.trim_start_matches('/'))).unwrap_or_default();
        if !script.contains("DOCKERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS") {
            eprintln!(
                "not applicable: docker.io {} has no detach-netns mode (Docker 29 has)",
                sid::package_version(&root, "docker.io").unwrap_or_default()
            );
            return;
        }
    }
    run_case(
        "d28-detach",
        &[("DOCKERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS", "true")],
        Ports::Builtin,
    );
}

fn run_case(name: &str, env: &[(&str, &str)], ports: Ports) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = match sid::root_with(&[
        SCRIPT,
        "/usr/sbin/dockerd",
        "/usr/bin/docker",
        "/usr/bin/socat",
    ]) {
        Ok(r) => r,
        Err(why) => skip!("{why}"),
    };
    eprintln!(
        "docker.io {:?}, slirp4netns {:?}, passt {:?}",
        sid::package_version(&root, "docker.io"),
        sid::package_version(&root, "slirp4netns"),
        sid::package_version(&root, "passt")
    );

    let dir = Scratch::new(name);
    let mut daemon = Daemon::start(&root, dir, env);
    let security = daemon.docker_ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(
        security.contains("name=rootless"),
        "dockerd does not say it is rootless: {security}"
    );
    let server = daemon.docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    eprintln!("dockerd {server}");
    let detached = env.iter().any(|(k, _)| k.ends_with("_DETACH_NETNS"));
    assert_eq!(
        daemon.state_dir().join("netns").exists(),
        detached,
        "the netns file"
    );
    let tar = sid::image_tar(&root, &daemon.dir.path);
    daemon.docker_ok(&["import", tar.to_str().unwrap(), IMAGE]);

    // docker build: a RUN step runs a container through the network driver's namespace.
    let ctx = daemon.dir.join("build");
    fs::create_dir(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN echo built > /www/built.txt\n"),
    )
    .unwrap();
    fs::set_permissions(&ctx, fs::Permissions::from_mode(0o755)).unwrap();
    daemon.docker_ok(&["build", "-q", "-t", BUILT, ctx.to_str().unwrap()]);
    let got = daemon.docker_ok(&["run", "--rm", BUILT, "cat", "/www/built.txt"]);
    assert_eq!(got, "built");

    let [all, lo, udp] = sid::free_ports();
    let (all_spec, lo_spec) = (format!("{all}:80"), format!("127.0.0.1:{lo}:80"));
    let udp_spec = format!("{udp}:9999/udp");
    let echo = sid::udp_echo_cmd(9999).join(" ");
    let cmd = format!("{echo} & exec httpd -f -p 80 -h /www");
    let id = daemon.docker_ok(&[
        "run", "-d", "-p", &all_spec, "-p", &lo_spec, "-p", &udp_spec, IMAGE, "sh", "-c", &cmd,
    ]);
    let v4 = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = |port: u16| -> SocketAddr { format!("[::1]:{port}").parse().unwrap() };
    assert_eq!(sid::fetch(v4(lo)), PAGE, "-p {lo_spec}");
    assert_eq!(sid::fetch(v4(all)), PAGE, "-p {all_spec} on 127.0.0.1");
    // IPv6: the builtin driver publishes tcp6 too; slirp4netns has no IPv6 forwarding, and pasta
    // runs with --ipv4-only without --ipv6 (as upstream).
    if ports == Ports::Builtin && ipv6_loopback() {
        assert_eq!(sid::fetch(v6(all)), PAGE, "-p {all}:80 on [::1]");
    }
    if let Some(ip) = sid::host_ipv4() {
        assert_eq!(sid::fetch(SocketAddr::from((ip, all))), PAGE);
        assert!(
            sid::http_get(SocketAddr::from((ip, lo))).is_err(),
            "the 127.0.0.1-only port answers on {ip}"
        );
    }
    // UDP. slirp4netns with --disable-host-loopback (the script always passes it) drops the
    // replies to a client on the host's loopback: libslirp sees it as 10.0.2.2, the host
    // loopback the flag blocks (upstream alike). So there the client uses the host's address.
    let udp_client = match (ports, sid::host_ipv4()) {
        (Ports::Slirp4netns, Some(ip)) => Some(SocketAddr::from((ip, udp))),
        (Ports::Slirp4netns, None) => None,
        _ => Some(v4(udp)),
    };
    if let Some(addr) = udp_client {
        sid::udp_echo(addr).unwrap();
    }
    if ports != Ports::Implicit {
        // dockerd published each port through our API.
        let rows = daemon.ports();
        for port in [all, lo, udp] {
            assert!(
                rows.iter().any(|r| r.get(3) == Some(&port.to_string())),
                "port {port} not in {rows:?}"
            );
        }
    }

    daemon.docker_ok(&["rm", "-f", &id]);
    for addr in [v4(lo), v4(all)] {
        assert!(
            sid::refused(addr),
            "{addr} still accepts connections after docker rm -f"
        );
    }
    if ports != Ports::Implicit {
        assert_eq!(daemon.ports(), Vec::<Vec<String>>::new());
    }
    daemon.stop();

    // The same data, started again: the image is still there and publishes again.
    daemon.restart();
    let [again] = sid::free_ports();
    let spec = format!("127.0.0.1:{again}:80");
    let id = daemon.docker_ok(&[
        "run", "-d", "-p", &spec, BUILT, "httpd", "-f", "-p", "80", "-h", "/www",
    ]);
    assert_eq!(sid::fetch(v4(again)), PAGE);
    daemon.docker_ok(&["rm", "-f", &id]);
    daemon.stop();
}

/// A running `dockerd-rootless.sh`, which became `rootlesskit` (the script execs it).
struct Daemon {
    root: PathBuf,
    dir: Scratch,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Processes of the test user that existed before the daemon.
    before: Vec<u32>,
    /// The user namespace rootlesskit made (`user:[inode]`), once known.
    userns: Option<PathBuf>,
    /// `$NOTIFY_SOCKET`, as systemd's `Type=notify` unit gives it.
    notify: UnixDatagram,
    /// How many times the script was started.
    runs: u32,
}

impl Daemon {
    fn start(root: &Path, dir: Scratch, env: &[(&str, &str)]) -> Daemon {
        docker::daemon_dirs(&dir.path, &["home", "run"]);
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o777)).unwrap();
        let mut daemon = Daemon {
            root: root.to_path_buf(),
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            before: Vec::new(),
            userns: None,
            notify,
            runs: 0,
        };
        daemon.restart();
        daemon
    }

    /// Starts the script (again) on the same scratch dir and waits until dockerd answers.
    fn restart(&mut self) {
        self.before = sid::user_processes().into_iter().map(|(p, _)| p).collect();
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", ci::bin_dir().display());
        let mut run = Run::program(SCRIPT)
            .inside(&self.root)
            .env("PATH", &path)
            .env("HOME", self.dir.join("home").to_str().unwrap())
            .env("XDG_RUNTIME_DIR", self.dir.join("run").to_str().unwrap())
            .env(
                "NOTIFY_SOCKET",
                self.dir.join("notify.sock").to_str().unwrap(),
            );
        for (k, _) in std::env::vars() {
            if k.starts_with("DOCKER") || k.starts_with("_DOCKERD") {
                run = run.env_remove(&k);
            }
        }
        for (k, v) in &self.env {
            run = run.env(k, v);
        }
        self.runs += 1;
        self.child = Some(run.spawn_logged(&self.log()));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.docker(&["version"]).code == 0 {
                break;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("dockerd-rootless.sh exited ({st}) before dockerd answered");
            }
            assert!(Instant::now() < deadline, "dockerd did not answer in 120 s");
            std::thread::sleep(Duration::from_millis(300));
        }
        // The script found our rootlesskit: its process is the one the script became.
        let comm = fs::read_to_string(format!("/proc/{}/comm", self.pid())).unwrap();
        assert_eq!(comm.trim(), "rootlesskit");
        let exe = fs::read(format!("/proc/{}/exe", self.pid())).unwrap();
        assert_eq!(
            exe,
            fs::read(ci::bin_dir().join("rootlesskit")).unwrap(),
            "not our rootlesskit"
        );
        let child_pid = fs::read_to_string(self.state_dir().join("child_pid")).unwrap();
        self.userns = fs::read_link(format!("/proc/{}/ns/user", child_pid.trim())).ok();
        assert!(self.userns.is_some(), "no user namespace for {child_pid}");
        self.expect_notify("READY=1");
    }

    /// Waits (10 s at most) for a `$NOTIFY_SOCKET` datagram with this line.
    fn expect_notify(&self, line: &str) {
        docker::expect_notify(&self.notify, line);
    }

    /// The log of the current (or last) run.
    fn log(&self) -> PathBuf {
        self.dir.join(&format!("daemon-{}.log", self.runs))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("run/dockerd-rootless")
    }

    /// sid's docker client, inside the rootfs.
    fn docker(&self, args: &[&str]) -> ci::Output {
        let client = Run::program("/usr/bin/docker").inside(&self.root);
        docker::docker(client, &self.dir.path, args, Duration::from_secs(120))
    }

    /// Runs the client, fails on a non-zero exit, and gives its trimmed stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        docker::stdout_ok(args, self.docker(args))
    }

    /// `rootlessctl list-ports` rows, split into columns, without the header.
    fn ports(&self) -> Vec<Vec<String>> {
        docker::list_ports(&self.state_dir().join("api.sock"))
    }

    /// SIGTERM to rootlesskit: dockerd shuts down, rootlesskit exits 0, and nothing is left.
    fn stop(&mut self) {
        let child = self.child.take().unwrap();
        docker::stop(child, Some(&self.notify), || self.new_processes());
        assert!(
            !self.state_dir().exists(),
            "the state dir is left: {:?}",
            fs::read_dir(self.state_dir())
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
    }

    /// Live processes of the test user that belong to this daemon (see
    /// [`docker::new_processes`]).
    fn new_processes(&self) -> Vec<(u32, String)> {
        docker::new_processes(&self.dir.path, &self.before, self.userns.as_ref())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = fs::read_to_string(self.log()).unwrap_or_default();
            docker::print_tail("daemon.log", &log, 80);
        }
        // A failed test still takes its daemon and everything under it down.
        docker::take_down(self.child.take(), Duration::from_secs(30), || {
            self.new_processes()
        });
    }
}

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}
