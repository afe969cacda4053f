//! Rootless Docker on our binaries: Debian's `dockerd-rootless.sh` (docker.io 20.10), run
//! unmodified as the unprivileged test user with ours first in `$PATH`. What a user sees:
//! - dockerd starts, says it is rootless, and says READY=1 (at the end STOPPING=1) on the
//!   `$NOTIFY_SOCKET` a systemd unit gives;
//! - an image made from busybox-static serves a page through published ports that a plain TCP
//!   client on the host reads, on the addresses upstream's integration-docker.sh expects and on
//!   no other, and a container reaches a server on the host;
//! - a busy or privileged host port fails `docker run` with upstream's error;
//! - SIGHUP reaches dockerd, stopping the container releases the ports, and SIGTERM to
//!   rootlesskit stops everything, leaving none of the daemon's processes and no state dir.
//! - `rootlesskit rm -rf ~/.local/share/docker`, the documented uninstall step, removes the
//!   files of subordinate ids that a container left and the user alone cannot.
//!
//! Cases: the script's defaults (slirp4netns, builtin ports, so `rootlesskit-docker-proxy`
//! publishes through our API), the slirp4netns port driver, and pasta with implicit ports.
//! Debian's Go rootlesskit 1.1.0 passes the first two (`RKRS_BIN_DIR` pointing at its binaries).
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ci::{Run, Scratch, docker, sid, skip};

/// One daemon at a time: three dockerds on a small machine only slow each other down.
static SERIAL: Mutex<()> = Mutex::new(());

/// What `index.html` in the image says.
const PAGE: &str = "hello from a rootless container\n";
const IMAGE: &str = "rkrs-busybox:latest";
/// What the host's server tells a container.
const OUTSIDE: &str = "hello from the host\n";

/// How the case publishes ports, and so what it can check.
#[derive(Clone, Copy, PartialEq)]
enum Ports {
    /// `--port-driver=builtin`: our API publishes on IPv4 and IPv6.
    Builtin,
    /// `--port-driver=slirp4netns`: our API publishes, IPv4 only.
    Slirp4netns,
    /// pasta forwards what listens in the namespace; there is no port API.
    Implicit,
}

#[test]
fn builtin_ports() {
    run_case("docker-builtin", &[], Ports::Builtin);
}

#[test]
fn slirp4netns_ports() {
    run_case(
        "docker-s4nn",
        &[("DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "slirp4netns")],
        Ports::Slirp4netns,
    );
}

#[test]
fn pasta_implicit_ports() {
    run_case(
        "docker-pasta",
        &[
            ("DOCKERD_ROOTLESS_ROOTLESSKIT_NET", "pasta"),
            ("DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "implicit"),
        ],
        Ports::Implicit,
    );
}

/// The in-process network (issue 12): the same script, told to use it, needs no slirp4netns.
#[test]
fn gvisor_tap_vsock_builtin_ports() {
    run_case(
        "docker-gvisor",
        &[("DOCKERD_ROOTLESS_ROOTLESSKIT_NET", "gvisor-tap-vsock")],
        Ports::Builtin,
    );
}

fn run_case(name: &str, env: &[(&str, &str)], ports: Ports) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(script) = rootless_script() else {
        skip!("docker.io's dockerd-rootless.sh is not installed");
    };
    for program in [
        "/usr/sbin/dockerd",
        "/usr/sbin/docker-proxy",
        "/usr/bin/docker",
        "/usr/bin/tar",
    ] {
        if !Path::new(program).exists() {
            skip!("{program} is not installed (apt-get install docker.io)");
        }
    }
    if !is_static_elf(Path::new("/bin/busybox")) {
        skip!("/bin/busybox is missing or not static (apt-get install busybox-static)");
    }
    let driver = if ports == Ports::Implicit {
        "/usr/bin/pasta"
    } else {
        "/usr/bin/slirp4netns"
    };
    if !Path::new(driver).exists() {
        skip!("{driver} is not installed");
    }
    if !ci::tun_usable() {
        skip!("/dev/net/tun is not usable by the test user");
    }

    let mut daemon = Daemon::start(name, &script, env);
    let security = daemon.docker_ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(
        security.contains("name=rootless"),
        "dockerd does not say it is rootless: {security}"
    );
    let tar = busybox_tar(&daemon.dir);
    daemon.docker_ok(&["import", tar.to_str().unwrap(), IMAGE]);

    // The state dir exists while the daemon runs (so its absence at the end means something).
    let state = daemon.state_dir();
    assert!(state.join("child_pid").exists(), "{}", state.display());

    // Upstream's integration-docker.sh matrix: `-p PORT:80` answers on loopback and on the host's
    // address, `-p 127.0.0.1:PORT:80` only on loopback, `-p HOSTIP:PORT:80` only on the host's
    // address (except with pasta's implicit forwarding, which follows the namespace's listeners).
    let host_ip = sid::host_ipv4();
    let [all, lo, at_ip] = free_ports();
    let (all_spec, lo_spec) = (format!("{all}:80"), format!("127.0.0.1:{lo}:80"));
    let ip_spec = host_ip.map(|ip| format!("{ip}:{at_ip}:80"));
    let mut run = vec!["run", "-d", "-p", &all_spec, "-p", &lo_spec];
    if let Some(spec) = ip_spec.as_deref().filter(|_| ports != Ports::Implicit) {
        run.extend(["-p", spec]);
    }
    run.extend([IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
    let id = daemon.docker_ok(&run);

    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(daemon.fetch(loopback(lo)), PAGE);
    assert_eq!(daemon.fetch(loopback(all)), PAGE);
    // Docker 20.10 also starts a proxy on :: for `-p PORT:80`; only builtin publishes tcp6
    // (slirp4netns has no IPv6 forwarding, and the shim skips it with a warning).
    let dual_stack = ports == Ports::Builtin && ipv6_loopback();
    if dual_stack {
        assert_eq!(daemon.fetch(format!("[::1]:{all}").parse().unwrap()), PAGE);
    }
    if let Some(ip) = host_ip {
        let on_ip = |port: u16| SocketAddr::from((ip, port));
        assert_eq!(daemon.fetch(on_ip(all)), PAGE);
        if ports != Ports::Implicit {
            assert_eq!(daemon.fetch(on_ip(at_ip)), PAGE);
            assert!(
                sid::http_get(loopback(at_ip)).is_err(),
                "{ip}-only port on loopback"
            );
        }
        assert!(
            sid::http_get(on_ip(lo)).is_err(),
            "loopback-only port on {ip}"
        );
    }
    if ports != Ports::Implicit {
        // rootlesskit-docker-proxy published each port through our API.
        let rows = daemon.ports(&state);
        let has = |proto: &str, ip: &str, port: u16| {
            let port = port.to_string();
            rows.iter().any(|r| r[1..4] == [proto, ip, port.as_str()])
        };
        assert!(has("tcp4", "127.0.0.1", lo), "{rows:?}");
        assert!(has("tcp4", "0.0.0.0", all), "{rows:?}");
        assert_eq!(has("tcp6", "::", all), dual_stack, "{rows:?}");
        if let Some(ip) = host_ip {
            assert!(has("tcp4", &ip.to_string(), at_ip), "{rows:?}");
        }
    }
    if ports == Ports::Builtin {
        // A host port someone else holds: the API's bind error reaches `docker run`.
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = format!("127.0.0.1:{}:80", holder.local_addr().unwrap().port());
        let o = daemon.docker(&["run", "-d", "-p", &busy, IMAGE, "httpd", "-f", "-p", "80"]);
        assert_eq!(o.code, 125, "{}\n{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("bind: address already in use"),
            "{}",
            o.stderr
        );
        // A privileged port: upstream's hint on how to allow it reaches `docker run`.
        let start: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if start > 0 {
            let low = format!("127.0.0.1:{}:80", start - 1);
            let o = daemon.docker(&["run", "-d", "-p", &low, IMAGE, "httpd", "-f", "-p", "80"]);
            // The client exits 126 here, not 125, because the error mentions "permission denied".
            assert_ne!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
            assert!(
                o.stderr.contains(&format!(
                    "error while calling PortManager.AddPort(): cannot expose privileged port {}",
                    start - 1
                )),
                "{}",
                o.stderr
            );
        }
    }
    if let Some(ip) = host_ip {
        // The other way: a container reaches a server on the host through the network driver.
        let server = serve_once(ip, OUTSIDE);
        let url = format!("http://{}/", server.0);
        let got = daemon.docker_ok(&["run", "--rm", IMAGE, "wget", "-q", "-O-", &url]);
        assert_eq!(got, OUTSIDE.trim());
        server.1.join().unwrap();
    }

    // systemd's ExecReload sends SIGHUP to rootlesskit; dockerd must get it.
    ci::send_signal(daemon.pid(), "HUP");
    assert!(
        ci::wait_until(Duration::from_secs(10), || daemon
            .log()
            .contains("Got signal to reload configuration")),
        "dockerd did not see the SIGHUP"
    );

    daemon.docker_ok(&["stop", "-t", "1", &id]);
    // pasta notices a closed listener at its next scan of the namespace's ports (1 s).
    for port in [lo, all] {
        let addr = loopback(port);
        assert!(
            ci::wait_until(Duration::from_secs(10), || TcpStream::connect_timeout(
                &addr,
                Duration::from_secs(1)
            )
            .is_err()),
            "{addr} still accepts connections after the container stopped"
        );
    }
    if ports != Ports::Implicit {
        assert_eq!(daemon.ports(&state), Vec::<Vec<String>>::new());
    }
    if ports == Ports::Builtin {
        // A container leaves files of a subordinate id in its layer...
        let script = "mkdir /x && touch /x/f && chown -R 1000:1000 /x && chmod 700 /x";
        daemon.docker_ok(&["run", IMAGE, "sh", "-c", script]);
    }
    daemon.stop();
    if ports == Ports::Builtin {
        // ...which the user cannot remove; the docs' uninstall step `rootlesskit rm -rf
        // ~/.local/share/docker` (fake root, default flags) can.
        let data = daemon.dir.join("home/.local/share/docker");
        let data = data.to_str().unwrap();
        let o = Run::program("rm").args(["-rf", data]).output();
        assert_ne!(
            o.code, 0,
            "rm removed subordinate-id files without rootlesskit"
        );
        let tmp = daemon.dir.join("tmp");
        let o = ci::rootlesskit(["rm", "-rf", data])
            .env("TMPDIR", tmp.to_str().unwrap())
            .output();
        ci::ok(&o);
        assert!(!Path::new(data).exists());
    }
}

/// A running `dockerd-rootless.sh`, which became `rootlesskit` (the script execs it).
struct Daemon {
    dir: Scratch,
    child: Option<Child>,
    /// Processes of the test user that existed before the daemon.
    before: Vec<u32>,
    /// The user namespace rootlesskit made (`user:[inode]`), once known.
    userns: Option<PathBuf>,
    /// `$NOTIFY_SOCKET`, as systemd's `Type=notify` unit gives it.
    notify: UnixDatagram,
}

impl Daemon {
    fn start(name: &str, script: &Path, env: &[(&str, &str)]) -> Daemon {
        let dir = Scratch::new(name);
        docker::daemon_dirs(&dir.path, &["home", "run", "tmp"]);
        let before = ci::sid::user_processes()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o777)).unwrap();
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", ci::bin_dir().display());
        let mut run = Run::program(script)
            .env("PATH", &path)
            .env("HOME", dir.join("home").to_str().unwrap())
            .env("XDG_RUNTIME_DIR", dir.join("run").to_str().unwrap())
            // Where rootlesskit makes its state dir (the 20.10 script passes no --state-dir).
            .env("TMPDIR", dir.join("tmp").to_str().unwrap())
            .env("NOTIFY_SOCKET", notify_path.to_str().unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("DOCKER") || k.starts_with("_DOCKERD") {
                run = run.env_remove(&k);
            }
        }
        for (k, v) in env {
            run = run.env(k, v);
        }
        let child = run.spawn_logged(&dir.join("daemon.log"));
        let mut daemon = Daemon {
            dir,
            child: Some(child),
            before,
            userns: None,
            notify,
        };
        let socket = daemon.dir.join("run/docker.sock");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ping(&socket) {
            if let Some(st) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                daemon.child = None;
                panic!("dockerd-rootless.sh exited ({st}) before dockerd answered");
            }
            assert!(Instant::now() < deadline, "dockerd did not answer in 90 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The script found our rootlesskit, not another one.
        let exe = fs::read_link(format!("/proc/{}/exe", daemon.pid())).unwrap();
        assert_eq!(exe, ci::bin_dir().join("rootlesskit"));
        let child_pid = fs::read_to_string(daemon.state_dir().join("child_pid")).unwrap();
        daemon.userns = fs::read_link(format!("/proc/{}/ns/user", child_pid.trim())).ok();
        assert!(daemon.userns.is_some(), "no user namespace for {child_pid}");
        // NOTIFY_SOCKET passed through rootlesskit, and dockerd reached it from its namespaces.
        daemon.expect_notify("READY=1");
        daemon
    }

    /// Waits (10 s at most) for a `$NOTIFY_SOCKET` datagram with this line.
    fn expect_notify(&self, line: &str) {
        docker::expect_notify(&self.notify, line);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Docker's own 20.10 client, so client and daemon agree on the API version.
    fn docker(&self, args: &[&str]) -> ci::Output {
        let client = Run::program("/usr/bin/docker");
        docker::docker(client, &self.dir.path, args, Duration::from_secs(60))
    }

    /// Runs the client, fails on a non-zero exit, and gives its trimmed stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        docker::stdout_ok(args, self.docker(args))
    }

    /// The one state dir rootlesskit made under `$TMPDIR`.
    fn state_dir(&self) -> PathBuf {
        let entries: Vec<PathBuf> = fs::read_dir(self.dir.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(
            entries[0]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("rootlesskit"),
            "{entries:?}"
        );
        entries[0].clone()
    }

    /// `rootlessctl list-ports` rows, split into columns, without the header.
    fn ports(&self, state: &Path) -> Vec<Vec<String>> {
        docker::list_ports(&state.join("api.sock"))
    }

    /// GETs `/` through the published port, retrying for a while, and gives the body.
    fn fetch(&self, addr: SocketAddr) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match sid::http_get(addr) {
                Ok(body) => return body,
                Err(e) if Instant::now() > deadline => panic!("GET http://{addr}/: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// SIGTERM to rootlesskit: dockerd shuts down, rootlesskit exits 0, and nothing is left.
    fn stop(&mut self) {
        let child = self.child.take().unwrap();
        docker::stop(child, Some(&self.notify), || self.new_processes());
        let entries: Vec<_> = fs::read_dir(self.dir.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries, Vec::<PathBuf>::new(), "the state dir is left");
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
            let name = self.dir.join("daemon.log").display().to_string();
            docker::print_tail(&name, &self.log(), 80);
        }
        // A failed test still takes its daemon and everything under it down.
        docker::take_down(self.child.take(), Duration::from_secs(30), || {
            self.new_processes()
        });
        // Without root, the scratch dir's removal cannot touch the files of subordinate ids
        // that dockerd and the containers made; fake root can.
        let data = self.dir.join("home/.local/share/docker");
        if !ci::am_root() && data.exists() {
            let _ = ci::rootlesskit(["rm", "-rf", data.to_str().unwrap()])
                .env("TMPDIR", self.dir.join("tmp").to_str().unwrap())
                .output();
        }
    }
}

/// Where `dpkg -L docker.io` says the script is.
fn rootless_script() -> Option<PathBuf> {
    let out = Command::new("dpkg")
        .args(["-L", "docker.io"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.ends_with("/dockerd-rootless.sh"))
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

/// Whether `path` is an ELF executable without an interpreter (so it runs in an empty rootfs).
fn is_static_elf(path: &Path) -> bool {
    let Ok(elf) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    // 64-bit little-endian ELF: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(size), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..usize::from(num)).all(|i| {
        let at = phoff as usize + i * usize::from(size);
        // PT_INTERP is 3.
        elf.get(at..at + 4) != Some(&3u32.to_le_bytes()[..])
    })
}

/// A tar of `/bin/busybox` with `sh`, `httpd` and `wget` links and `/www/index.html`, for
/// `docker import`.
fn busybox_tar(dir: &Scratch) -> PathBuf {
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("www")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in ["sh", "httpd", "wget"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("www/index.html"), PAGE).unwrap();
    let tar = dir.join("rootfs.tar");
    sid::tar_dir(&root, &tar);
    tar
}

/// Whether dockerd answers `GET /_ping` on its socket.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") && reply.ends_with("OK")
}

/// Ports free on every address, all different (each held until all are picked).
fn free_ports<const N: usize>() -> [u16; N] {
    // [::] is dual-stack by default, so a port bound there is free on both families.
    let held: Vec<TcpListener> = (0..N)
        .map(|_| {
            TcpListener::bind("[::]:0")
                .or_else(|_| TcpListener::bind("0.0.0.0:0"))
                .unwrap()
        })
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// Answers one HTTP request on `ip` with `body` from a thread (giving up after 60 s).
fn serve_once(ip: Ipv4Addr, body: &'static str) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut c = loop {
            match l.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() > deadline => panic!("nobody connected to {addr}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(reply.as_bytes()).unwrap();
    });
    (addr, t)
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}
