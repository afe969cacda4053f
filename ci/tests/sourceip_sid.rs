//! What address a container sees behind a port that rootless Docker 28 publishes through our
//! builtin port driver, with `--source-ip-transparent` (our default, as upstream v3's), in
//! Debian sid's rootfs with its own unmodified `dockerd-rootless.sh` (see `ci::sid`):
//! - with dockerd's `--userland-proxy=false`, dockerd DNATs the port inside our namespace to
//!   the container on its bridge, and the container sees the client's own address (the host's
//!   non-loopback address here): the replies are forwarded, not delivered locally, and only
//!   the connection mark our nf_tables table sets brings them back to the transparent socket;
//! - with the userland proxy (dockerd's default), `docker-proxy` in the namespace accepts the
//!   connection and dials the container itself, so the container sees `docker-proxy`'s address,
//!   the bridge's gateway.
//!
//! The container's server is sid's `socat` from the test image, which writes the peer address
//! it accepted from and closes.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ci::sid;
use ci::{Run, Scratch, docker, skip};

/// One daemon at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const IMAGE: &str = "rkrs-busybox:latest";
const SCRIPT: &str = "/usr/share/docker.io/contrib/dockerd-rootless.sh";

#[test]
fn userland_proxy_off_the_container_sees_the_client() {
    let (daemon, client) = match start("srcip-noproxy", &["--userland-proxy=false"]) {
        Ok(x) => x,
        Err(why) => skip!("{why}"),
    };
    let seen = daemon.peer_seen_by_container(client);
    eprintln!("client {client}, the container saw {seen}");
    assert!(
        !daemon.runs_docker_proxy(),
        "dockerd runs docker-proxy although the userland proxy is off"
    );
    assert_eq!(
        seen,
        client.to_string(),
        "the container behind a DNATed port does not see the client's address"
    );
    let udp = daemon.udp_peer_seen_by_container(client);
    eprintln!("UDP: client {client}, the container saw {udp:?}");
    assert_eq!(udp, Ok(client.to_string()), "UDP");
    // Bulk data both ways through the DNAT: the bridge's MTU is not the loopback's.
    daemon.echo_4mb(client);
}

#[test]
fn userland_proxy_on_the_container_sees_the_bridge_gateway() {
    let (daemon, client) = match start("srcip-proxy", &[]) {
        Ok(x) => x,
        Err(why) => skip!("{why}"),
    };
    let seen = daemon.peer_seen_by_container(client);
    assert!(daemon.runs_docker_proxy(), "no docker-proxy runs");
    let gateway = daemon.docker_ok(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ]);
    eprintln!("client {client}, the container saw {seen}, the bridge's gateway is {gateway:?}");
    assert_ne!(seen, client.to_string());
    if !gateway.is_empty() {
        assert_eq!(
            seen, gateway,
            "docker-proxy dials from the bridge's gateway"
        );
    }
}

/// Starts the daemon with these dockerd flags, once the environment allows; gives it and the
/// address the test connects from (the host's non-loopback address); or why it cannot run.
fn start(name: &str, dockerd_flags: &[&str]) -> Result<(Daemon, IpAddr), String> {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = sid::root_with(&[SCRIPT, "/usr/sbin/dockerd", "/usr/bin/docker"])?;
    // A loopback client is not made transparent (as upstream): the test needs another address.
    let client =
        sid::host_ipv4().ok_or("the host has no non-loopback IPv4 address to connect from")?;
    let daemon = Daemon::start(&root, Scratch::new(name), dockerd_flags, serial);
    let tar = sid::image_tar(&root, &daemon.dir.path);
    daemon.docker_ok(&["import", tar.to_str().unwrap(), IMAGE]);
    Ok((daemon, IpAddr::V4(client)))
}

/// A running `dockerd-rootless.sh`, which became `rootlesskit` (the script execs it).
struct Daemon {
    root: PathBuf,
    dir: Scratch,
    child: Option<Child>,
    /// Processes of the test user that existed before the daemon.
    before: Vec<u32>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Daemon {
    fn start(
        root: &Path,
        dir: Scratch,
        flags: &[&str],
        serial: std::sync::MutexGuard<'static, ()>,
    ) -> Daemon {
        docker::daemon_dirs(&dir.path, &["home", "run"]);
        let before = sid::user_processes().into_iter().map(|(p, _)| p).collect();
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", ci::bin_dir().display());
        let mut run = Run::program(SCRIPT)
            .inside(root)
            .args(flags)
            .env("PATH", &path)
            .env("HOME", dir.join("home").to_str().unwrap())
            .env("XDG_RUNTIME_DIR", dir.join("run").to_str().unwrap())
            // The script's default port driver, said out loud: this is about that one.
            .env("DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "builtin");
        for (k, _) in std::env::vars() {
            if (k.starts_with("DOCKER") || k.starts_with("_DOCKERD"))
                && k != "DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER"
            {
                run = run.env_remove(&k);
            }
        }
        let child = run.spawn_logged(&dir.join("daemon.log"));
        let mut daemon = Daemon {
            root: root.to_path_buf(),
            dir,
            child: Some(child),
            before,
            _serial: serial,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while daemon.docker(&["version"]).code != 0 {
            if let Some(st) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                daemon.child = None;
                panic!("dockerd-rootless.sh exited ({st}) before dockerd answered");
            }
            assert!(Instant::now() < deadline, "dockerd did not answer in 120 s");
            std::thread::sleep(Duration::from_millis(300));
        }
        let exe = fs::read(format!("/proc/{}/exe", daemon.child.as_ref().unwrap().id())).unwrap();
        assert_eq!(
            exe,
            fs::read(ci::bin_dir().join("rootlesskit")).unwrap(),
            "not our rootlesskit"
        );
        daemon
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

    /// Runs a container that writes the peer address of each connection to its port 80,
    /// published on every host address, connects to it from `client` and gives what it wrote.
    fn peer_seen_by_container(&self, client: IpAddr) -> String {
        let [port] = sid::free_ports();
        let spec = format!("{port}:80");
        // SYSTEM runs `sh -c` in the container, with socat's SOCAT_PEERADDR set.
        self.docker_ok(&[
            "run",
            "-d",
            "-p",
            &spec,
            IMAGE,
            "/usr/bin/socat",
            "TCP-LISTEN:80,fork,reuseaddr",
            "SYSTEM:echo $SOCAT_PEERADDR",
        ]);
        let to = SocketAddr::new(client, port);
        let mut last = String::new();
        let seen = ci::wait_for(Duration::from_secs(20), || {
            read_all(to).map_err(|e| last = e).ok()
        });
        seen.unwrap_or_else(|| panic!("nothing read from {to}: {last}"))
    }

    /// Like [`Daemon::peer_seen_by_container`] for UDP: the container answers each datagram to
    /// its port 9999 with the address it came from.
    fn udp_peer_seen_by_container(&self, client: IpAddr) -> Result<String, String> {
        let [port] = sid::free_ports();
        let spec = format!("{port}:9999/udp");
        self.docker_ok(&[
            "run",
            "-d",
            "-p",
            &spec,
            IMAGE,
            "/usr/bin/socat",
            "UDP-RECVFROM:9999,fork",
            "SYSTEM:echo $SOCAT_PEERADDR",
        ]);
        let s = UdpSocket::bind((client, 0)).map_err(|e| e.to_string())?;
        s.connect((client, port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut last = String::new();
        let seen = ci::wait_for(Duration::from_secs(20), || {
            let _ = s.send(b"who am i");
            let mut buf = [0u8; 128];
            match s.recv(&mut buf) {
                Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
                Err(e) => {
                    last = e.to_string();
                    None
                }
            }
        });
        seen.ok_or_else(|| format!("no UDP answer from {client}:{port}: {last}"))
    }

    /// Sends 4 MiB to an echo server in a container, from `client`, and checks that the same
    /// bytes come back.
    fn echo_4mb(&self, client: IpAddr) {
        let [port] = sid::free_ports();
        let spec = format!("{port}:81");
        self.docker_ok(&[
            "run",
            "-d",
            "-p",
            &spec,
            IMAGE,
            "/usr/bin/socat",
            "TCP-LISTEN:81,fork,reuseaddr",
            "EXEC:/bin/cat",
        ]);
        let to = SocketAddr::new(client, port);
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut last = String::new();
        let back = ci::wait_for(Duration::from_secs(20), || {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                .map_err(|e| last = e.to_string())
                .ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut w = s.try_clone().unwrap();
            let out = data.clone();
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                let r = w.write_all(&out);
                let _ = w.shutdown(std::net::Shutdown::Write);
                r
            });
            let mut got = Vec::new();
            let read = s.read_to_end(&mut got);
            let wrote = writer.join().unwrap();
            match (read, wrote) {
                (Ok(_), Ok(())) if !got.is_empty() => Some(got),
                (r, w) => {
                    last = format!("read {r:?}, write {w:?}, {} bytes back", got.len());
                    None
                }
            }
        });
        let back = back.unwrap_or_else(|| panic!("no echo from {to}: {last}"));
        assert_eq!(back.len(), data.len(), "bytes echoed");
        assert!(back == data, "the echo differs");
    }

    /// Whether one of the daemon's processes is dockerd's userland proxy.
    fn runs_docker_proxy(&self) -> bool {
        self.new_processes()
            .iter()
            .any(|(_, name)| name == "docker-proxy")
    }

    /// Processes of the test user that this daemon started.
    fn new_processes(&self) -> Vec<(u32, String)> {
        docker::new_processes(&self.dir.path, &self.before, None)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
            docker::print_tail("daemon.log", &log, 60);
        }
        docker::take_down(self.child.take(), Duration::from_secs(60), || {
            self.new_processes()
        });
    }
}

/// Connects to `to` and reads until the server closes (5 s at most): the trimmed text.
fn read_all(to: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("the connection closed without a word".into());
    }
    Ok(text.to_string())
}
