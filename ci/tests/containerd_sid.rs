//! Rootless containerd 2 on our binaries: nerdctl's `containerd-rootless.sh`, kept unmodified in
//! `ci/third_party/` (its origin is noted there), run as the test user inside the Debian sid
//! rootfs (`ci::sid`) with sid's containerd, runc and `ctr`, and ours first in `$PATH`.
//! What a user sees:
//! - containerd answers on its socket, and the script's child holds the user namespace;
//! - an image imported with `ctr images import` runs with `ctr run`;
//! - a port added with `rootlessctl add-ports` reaches a server in a container that shares the
//!   namespace's network (where nerdctl's CNI bridge would be, which needs plugins sid's tree
//!   does not ship), and `remove-ports` closes it again; with pasta, the server's own port is
//!   forwarded while it listens;
//! - SIGTERM to rootlesskit, once the containers are gone, leaves none of the daemon's
//!   processes and no state dir.
//!
//! Variants: slirp4netns with the builtin port driver (detach-netns off), the same with
//! `CONTAINERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS=true`, and pasta with implicit ports
//! (detach-netns left `auto`, which our `--help` turns on).
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ci::sid::{self, PAGE};
use ci::{Run, Scratch, docker, skip};

/// One daemon at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const IMAGE: &str = "docker.io/library/rkrs-busybox:latest";

#[test]
fn slirp4netns_builtin() {
    run_case(
        "c2-builtin",
        &[("CONTAINERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS", "false")],
        false,
    );
}

#[test]
fn slirp4netns_builtin_detach_netns() {
    run_case(
        "c2-detach",
        &[("CONTAINERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS", "true")],
        true,
    );
}

/// pasta takes no port driver but `implicit` (and, upstream v3.1, `pesto`): the server's port
/// is forwarded because it listens in the namespace.
#[test]
fn pasta_implicit() {
    run_case(
        "c2-pasta",
        &[
            ("CONTAINERD_ROOTLESS_ROOTLESSKIT_NET", "pasta"),
            ("CONTAINERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "implicit"),
        ],
        true,
    );
}

fn run_case(name: &str, env: &[(&str, &str)], detached: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = match sid::root_with(&["/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/nsenter"]) {
        Ok(r) => r,
        Err(why) => skip!("{why}"),
    };
    eprintln!(
        "containerd {:?}, runc {:?}",
        sid::package_version(&root, "containerd"),
        sid::package_version(&root, "runc")
    );

    let mut d = Daemon::start(&root, Scratch::new(name), env);
    assert_eq!(
        d.state_dir().join("netns").exists(),
        detached,
        "the netns file"
    );
    let version = d.ctr_ok(&["version"]);
    assert!(version.contains("Server:"), "{version}");

    let tar = sid::oci_tar(&root, &d.dir.path, "rkrs-busybox");
    d.ctr_ok(&["images", "import", tar.to_str().unwrap()]);
    let images = d.ctr_ok(&["images", "ls", "-q"]);
    assert!(images.lines().any(|l| l == IMAGE), "{images}");

    // ctr run: a container in a namespace of its own prints what the image holds.
    let got = d.run_ok(&["--rm", IMAGE, "cat1", "cat", "/www/index.html"]);
    assert_eq!(got, PAGE.trim());

    // A server in the network namespace rootlesskit made (what `nerdctl run --net=host` gives
    // without detach-netns), published with rootlessctl.
    let netns = if detached {
        d.state_dir().join("netns")
    } else {
        PathBuf::from(format!("/proc/{}/ns/net", d.child_pid()))
    };
    let [port, inner] = sid::free_ports();
    let with_ns = format!("network:{}", netns.display());
    let listen = inner.to_string();
    d.run_ok(&[
        "-d",
        "--with-ns",
        &with_ns,
        IMAGE,
        "web",
        "httpd",
        "-f",
        "-p",
        &listen,
        "-h",
        "/www",
    ]);
    let implicit = env.contains(&("CONTAINERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "implicit"));
    if implicit {
        let addr = SocketAddr::from(([127, 0, 0, 1], inner));
        assert_eq!(sid::fetch(addr), PAGE);
    } else {
        let spec = format!("127.0.0.1:{port}:{inner}/tcp");
        let added = d.rootlessctl(&["add-ports", &spec]);
        ci::ok(&added);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(sid::fetch(addr), PAGE);
        let id = added.stdout.trim().to_string();
        ci::ok(&d.rootlessctl(&["remove-ports", &id]));
        assert!(
            sid::refused(addr),
            "{addr} still answers after remove-ports"
        );
    }
    d.ctr_ok(&["tasks", "kill", "-s", "KILL", "web"]);
    assert!(
        ci::wait_until(Duration::from_secs(20), || d
            .ctr(&["tasks", "rm", "web"])
            .code
            == 0),
        "the task did not stop"
    );
    d.ctr_ok(&["containers", "rm", "web"]);
    if implicit {
        let addr = SocketAddr::from(([127, 0, 0, 1], inner));
        assert!(
            sid::refused(addr),
            "{addr} still answers after the server is gone"
        );
    }
    d.stop();
}

/// A running `containerd-rootless.sh`, which became `rootlesskit`.
struct Daemon {
    root: PathBuf,
    dir: Scratch,
    child: Option<Child>,
    before: Vec<u32>,
    userns: Option<PathBuf>,
}

impl Daemon {
    fn start(root: &Path, dir: Scratch, env: &[(&str, &str)]) -> Daemon {
        docker::daemon_dirs(&dir.path, &["home", "run"]);
        // The script where the rootfs sees it (the checkout may not be under /tmp).
        let script = dir.join("containerd-rootless.sh");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("third_party/containerd-rootless.sh"),
            &script,
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let before = sid::user_processes().into_iter().map(|(p, _)| p).collect();
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", ci::bin_dir().display());
        let mut run = Run::program(&script)
            .inside(root)
            .env("PATH", &path)
            .env("HOME", dir.join("home").to_str().unwrap())
            .env("XDG_RUNTIME_DIR", dir.join("run").to_str().unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("CONTAINERD") || k.starts_with("_CONTAINERD") {
                run = run.env_remove(&k);
            }
        }
        for (k, v) in env {
            run = run.env(k, v);
        }
        let child = run.spawn_logged(&dir.join("daemon.log"));
        let mut d = Daemon {
            root: root.to_path_buf(),
            dir,
            child: Some(child),
            before,
            userns: None,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if d.state_dir().join("child_pid").exists() && d.ctr(&["version"]).code == 0 {
                break;
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                panic!("containerd-rootless.sh exited ({st}) before containerd answered");
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer in 90 s"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let comm = fs::read_to_string(format!("/proc/{}/comm", d.pid())).unwrap();
        assert_eq!(comm.trim(), "rootlesskit");
        let exe = fs::read(format!("/proc/{}/exe", d.pid())).unwrap();
        assert_eq!(
            exe,
            fs::read(ci::bin_dir().join("rootlesskit")).unwrap(),
            "not our rootlesskit"
        );
        d.userns = fs::read_link(format!("/proc/{}/ns/user", d.child_pid())).ok();
        assert!(d.userns.is_some(), "no user namespace");
        d
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("run/containerd-rootless")
    }

    fn child_pid(&self) -> u32 {
        fs::read_to_string(self.state_dir().join("child_pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// sid's `ctr` in the child's user and mount namespaces (as nerdctl and
    /// `containerd-rootless-setuptool.sh nsenter` enter them), on containerd's default socket.
    fn ctr(&self, args: &[&str]) -> ci::Output {
        let Ok(pid) = fs::read_to_string(self.state_dir().join("child_pid")) else {
            return ci::Output {
                code: -1,
                stdout: String::new(),
                stderr: "no child_pid yet".into(),
            };
        };
        Run::program("/usr/bin/nsenter")
            .inside(&self.root)
            .args(["-U", "--preserve-credentials", "-m", "-t", pid.trim(), "--"])
            .args(["ctr"])
            .args(args)
            .env("HOME", self.dir.join("home").to_str().unwrap())
            .env("XDG_RUNTIME_DIR", self.dir.join("run").to_str().unwrap())
            .timeout(Duration::from_secs(120))
            .output()
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert_eq!(o.code, 0, "ctr {args:?}\n{}\n{}", o.stdout, o.stderr);
        o.stdout.trim().to_string()
    }

    /// `ctr run` with no cgroup (`--cgroup ""`, and no CPU shares to set in one): a rootless
    /// runc cannot make cgroups on a cgroup v1 host such as CI's (nerdctl runs without them
    /// there too); with cgroup v2 delegation they would be the user's.
    fn run_ok(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "--cgroup", "", "--cpu-shares", "0"];
        all.extend_from_slice(args);
        self.ctr_ok(&all)
    }

    fn rootlessctl(&self, args: &[&str]) -> ci::Output {
        let sock = self.state_dir().join("api.sock");
        Run::bin("rootlessctl")
            .args(["--socket", sock.to_str().unwrap()])
            .args(args.iter().copied())
            .output()
    }

    /// SIGTERM to rootlesskit: containerd shuts down, rootlesskit exits 0, nothing is left.
    fn stop(&mut self) {
        let child = self.child.take().unwrap();
        docker::stop(child, None, || self.new_processes());
        assert!(!self.state_dir().exists(), "the state dir is left");
    }

    fn new_processes(&self) -> Vec<(u32, String)> {
        docker::new_processes(&self.dir.path, &self.before, self.userns.as_ref())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
            docker::print_tail("daemon.log", &log, 60);
        }
        docker::take_down(self.child.take(), Duration::from_secs(30), || {
            self.new_processes()
        });
    }
}
