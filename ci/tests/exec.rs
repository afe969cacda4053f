//! `rootlessctl exec` as a user sees it, run as the unprivileged test user: the command runs as
//! root of the running instance, in its network, mount and pid namespaces (the detached network
//! with `--detach-netns`), with its `ROOTLESSKIT_*` variables and our working directory; exit
//! codes and signals come back; a state dir without a running instance gives one clear line.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use ci::{Output, Run, Scratch, have, ok, rootlesskit, skip, tun_usable, wait_for};

/// A `rootlesskit ... sleep` running in the background with its state dir in a scratch dir;
/// killed on drop.
struct Instance {
    dir: Scratch,
    child: Child,
    child_pid: u32,
}

impl Instance {
    fn start(name: &str, flags: &[&str]) -> Instance {
        let dir = Scratch::new(&format!("exec-{name}"));
        let state = dir.join("state");
        let mut args: Vec<String> = vec![format!("--state-dir={}", state.display())];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend(["sleep".into(), "1000".into()]);
        let mut child = rootlesskit(args)
            .env("TMPDIR", dir.path.to_str().unwrap())
            .spawn();
        let pid = wait_for(Duration::from_secs(20), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("rootlesskit exited early: {st}");
            }
            std::fs::read_to_string(state.join("child_pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .expect("no child_pid within 20 s");
        Instance {
            dir,
            child,
            child_pid: pid,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `rootlessctl exec -- CMD...` with `$ROOTLESSKIT_STATE_DIR` naming our instance.
    fn exec(&self, cmd: &[&str]) -> Output {
        ctl_exec(&self.state(), cmd).output()
    }

    /// The child's namespace link of this kind, as the host sees it.
    fn ns(&self, kind: &str) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/ns/{kind}", self.child_pid)).unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        ci::send_signal(self.child.id(), "TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn ctl_exec(state: &Path, cmd: &[&str]) -> Run {
    Run::bin("rootlessctl")
        .args(["exec", "--"])
        .args(cmd)
        .env("ROOTLESSKIT_STATE_DIR", state.to_str().unwrap())
}

/// `id` that is there: coreutils, else busybox.
fn id() -> &'static str {
    if Path::new("/usr/bin/id").exists() {
        "/usr/bin/id"
    } else {
        "/bin/busybox"
    }
}

fn id_u() -> Vec<&'static str> {
    if id().ends_with("busybox") {
        vec![id(), "id", "-u"]
    } else {
        vec![id(), "-u"]
    }
}

/// The network devices of a `/proc/net/dev` text.
fn devices(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn runs_as_root_with_the_instances_variables_and_our_cwd() {
    let inst = Instance::start("root", &[]);
    let o = inst.exec(&id_u());
    ok(&o);
    assert_eq!(o.stdout.trim(), "0");
    // The user namespace is the instance's.
    let o = inst.exec(&["readlink", "/proc/self/ns/user"]);
    ok(&o);
    assert_eq!(Path::new(o.stdout.trim()), inst.ns("user"));
    let o = inst.exec(&[
        "sh",
        "-c",
        "echo $ROOTLESSKIT_STATE_DIR $ROOTLESSKIT_PARENT_EUID $ROOTLESSKIT_PARENT_EGID; pwd",
    ]);
    ok(&o);
    let u = ci::test_user().unwrap();
    let mut lines = o.stdout.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{} {} {}", inst.state().display(), u.uid, u.gid)
    );
    // The harness runs it in /, and the working directory is kept.
    assert_eq!(lines.next().unwrap(), "/");
    let o = ctl_exec(&inst.state(), &["pwd"])
        .cwd(&inst.dir.path)
        .output();
    ok(&o);
    assert_eq!(Path::new(o.stdout.trim()), inst.dir.path);
    // The state dir from --state-dir and from --socket, without the variable.
    let state = inst.state();
    for args in [
        vec![
            "exec".to_string(),
            format!("--state-dir={}", state.display()),
        ],
        vec![
            format!("--socket={}/api.sock", state.display()),
            "exec".into(),
        ],
    ] {
        let o = Run::bin("rootlessctl")
            .args(args)
            .args(["--"])
            .args(id_u())
            .output();
        ok(&o);
        assert_eq!(o.stdout.trim(), "0");
    }
}

#[test]
fn exit_codes_pass_through() {
    for (name, flags) in [("code", &[][..]), ("code-pidns", &["--pidns"][..])] {
        let inst = Instance::start(name, flags);
        let o = inst.exec(&["sh", "-c", "exit 7"]);
        assert_eq!(o.code, 7, "{flags:?}: {o:?}");
        let o = inst.exec(&["/nonexistent/program"]);
        assert_eq!(o.code, 127, "{flags:?}: {o:?}");
        assert!(o.stderr.contains("/nonexistent/program"), "{}", o.stderr);
    }
}

#[test]
fn pid_namespace_and_signals() {
    let inst = Instance::start("pidns", &["--pidns"]);
    let o = inst.exec(&["readlink", "/proc/self/ns/pid"]);
    ok(&o);
    assert_eq!(Path::new(o.stdout.trim()), inst.ns("pid"));
    // /proc is the instance's: its pid 1 is the child, and we are not the host's pid.
    let o = inst.exec(&[
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$",
    ]);
    ok(&o);
    let mut lines = o.stdout.lines();
    assert!(
        lines.next().unwrap().contains("rootlesskit-child"),
        "{}",
        o.stdout
    );
    let inner: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(inner < 100, "pid {inner} is no pid of a fresh namespace");
    // A signal to rootlessctl reaches the command; a signalled command gives 255.
    let child = ctl_exec(&inst.state(), &["sleep", "1000"]).spawn();
    let pid = child.id();
    let sleeping = wait_for(Duration::from_secs(10), || {
        let kids = ci::children_of(pid);
        kids.iter()
            .any(|k| {
                std::fs::read_to_string(format!("/proc/{k}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .then_some(())
    });
    assert!(sleeping.is_some(), "no sleep under rootlessctl {pid}");
    ci::send_signal(pid, "TERM");
    let o = ci::wait_output(child, Duration::from_secs(10));
    assert_eq!(o.code, 255, "{o:?}");
}

#[test]
fn network_and_mount_namespaces() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not usable");
    }
    let inst = Instance::start("net", &["--net=slirp4netns", "--copy-up=/etc"]);
    let o = inst.exec(&["cat", "/proc/self/net/dev"]);
    ok(&o);
    assert!(devices(&o.stdout).contains(&"tap0".into()), "{}", o.stdout);
    let o = inst.exec(&["readlink", "/proc/self/ns/net", "/proc/self/ns/mnt"]);
    ok(&o);
    let links: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(Path::new(links[0]), inst.ns("net"));
    assert_eq!(Path::new(links[1]), inst.ns("mnt"));
    // --copy-up=/etc made /etc a tmpfs in there (and not on the host).
    let o = inst.exec(&["cat", "/proc/self/mounts"]);
    ok(&o);
    let etc_tmpfs = |mounts: &str| {
        mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(1) == Some(&"/etc") && f.get(2) == Some(&"tmpfs")
        })
    };
    assert!(etc_tmpfs(&o.stdout), "{}", o.stdout);
    assert!(!etc_tmpfs(
        &std::fs::read_to_string("/proc/self/mounts").unwrap()
    ));
}

#[test]
fn detached_netns_is_entered() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not usable");
    }
    let inst = Instance::start("detach", &["--net=slirp4netns", "--detach-netns"]);
    let o = inst.exec(&[
        "sh",
        "-c",
        "cat /proc/self/net/dev; readlink /proc/self/ns/net",
    ]);
    ok(&o);
    assert!(devices(&o.stdout).contains(&"tap0".into()), "{}", o.stdout);
    // Not the child's own network namespace (which has no tap0).
    let last = o.stdout.lines().last().unwrap();
    assert_ne!(Path::new(last), inst.ns("net"));
    let child_devs = std::fs::read_to_string(format!("/proc/{}/net/dev", inst.child_pid)).unwrap();
    assert!(!devices(&child_devs).contains(&"tap0".into()));
}

#[test]
fn no_running_instance_is_one_clear_line() {
    let d = Scratch::new("exec-stale");
    let check = |state: &Path, want: &str| {
        let o = ctl_exec(state, &["true"]).output();
        assert_eq!(o.code, 1, "{o:?}");
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert!(
            o.stderr
                .starts_with("error: no running rootlesskit instance in ")
                && o.stderr.trim_end().ends_with(want),
            "{}",
            o.stderr
        );
    };
    // No instance at all.
    check(&d.join("missing"), "child_pid: no such file or directory");
    // A child_pid of a process that is gone (pids are reused quickly on a busy machine with
    // a small pid_max: try again when ours was taken meanwhile).
    for attempt in 0.. {
        #[allow(clippy::disallowed_methods)] // a process to be gone, nothing of ours
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        std::fs::write(d.join("child_pid"), format!("{pid}\n")).unwrap();
        let o = ctl_exec(&d.path, &["true"]).output();
        if Path::new(&format!("/proc/{pid}")).exists() && attempt < 5 {
            continue;
        }
        assert_eq!(o.code, 1, "{o:?}");
        assert_eq!(
            o.stderr.trim_end(),
            format!(
                "error: no running rootlesskit instance in {}: process {pid} from child_pid is not running",
                d.path.display()
            )
        );
        break;
    }
    // A live process that is no instance's child (it shares our user namespace).
    let mut other = Run::program("/bin/sleep").args(["1000"]).spawn();
    // When the tests run as root, `setpriv` starts it as root and then becomes the test user
    // and execs sleep: until then the pid is another user's.
    let comm = format!("/proc/{}/comm", other.id());
    assert!(ci::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
    }));
    std::fs::write(d.join("child_pid"), format!("{}\n", other.id())).unwrap();
    check(&d.path, "is not in a user namespace of its own");
    let _ = other.kill();
    let _ = other.wait();
    // Nothing names a state dir.
    let o = Run::bin("rootlessctl")
        .args(["exec", "--", "true"])
        .env_remove("ROOTLESSKIT_STATE_DIR")
        .output();
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, "error: please specify --state-dir\n");
}

#[test]
fn the_helper_is_found_in_libexec_or_named_when_missing() {
    use std::os::unix::fs::PermissionsExt;
    let inst = Instance::start("layout", &[]);
    // The packaged layout: bin/rootlessctl, libexec/rootlesskit/rootlesskit-unshare.
    let bin = inst.dir.join("usr/bin");
    let libexec = inst.dir.join("usr/libexec/rootlesskit");
    for (dir, name) in [(&bin, "rootlessctl"), (&libexec, "rootlesskit-unshare")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(ci::bin_dir().join(name), dir.join(name)).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for d in ["usr", "usr/bin", "usr/libexec", "usr/libexec/rootlesskit"] {
        std::fs::set_permissions(inst.dir.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let ctl = || {
        Run::program(bin.join("rootlessctl"))
            .args(["exec", "--"])
            .args(id_u())
            .env("ROOTLESSKIT_STATE_DIR", inst.state().to_str().unwrap())
            .output()
    };
    let o = ctl();
    ok(&o);
    assert_eq!(o.stdout.trim(), "0");
    std::fs::remove_file(libexec.join("rootlesskit-unshare")).unwrap();
    let o = ctl();
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .starts_with("error: cannot find rootlesskit-unshare: looked for "),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
}
