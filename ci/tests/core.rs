//! The core of rootlesskit as a user sees it, run as the unprivileged test user: identity and
//! maps inside, exit codes, the state dir, the environment, namespaces, mounts and signals.
// Tests run programs (mount, kill) on the host side: that is their job.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use ci::{Run, Scratch, am_root, ok, rootlesskit, skip, test_user};

fn lines(s: &str) -> Vec<Vec<String>> {
    s.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The subuid ranges of the test user, from /etc/subuid (name or uid lines).
fn subuid_ranges(file: &str) -> Vec<(u32, u32)> {
    let u = test_user().unwrap();
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            (f.len() == 3 && (f[0] == u.name || f[0] == u.uid.to_string()))
                .then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?)))?
        })
        .collect()
}

#[test]
fn version_and_help() {
    let o = rootlesskit(["--version"]).output();
    ok(&o);
    assert_eq!(o.stdout, "rootlesskit version 3.0.1\n");
    let o = rootlesskit(["--help"]).output();
    ok(&o);
    // containerd-rootless.sh probes exactly this.
    assert!(
        o.stdout.split_whitespace().any(|w| w == "--detach-netns"),
        "{}",
        o.stdout
    );
    let o = rootlesskit(["--print-semver=major"]).output();
    ok(&o);
    assert_eq!(o.stdout.trim(), "3");
}

#[test]
fn fake_root_with_subordinate_maps() {
    let u = test_user().unwrap();
    let ranges = subuid_ranges("/etc/subuid");
    if ranges.is_empty() {
        skip!("user {} has no /etc/subuid lines", u.name);
    }
    let o = rootlesskit([
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; grep CapEff /proc/self/status",
    ])
    .output();
    ok(&o);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    let head = lines(parts[0]);
    assert_eq!(head[0], ["0"]);
    assert_eq!(head[1], ["0"]);
    assert_eq!(head[2], ["0", &u.uid.to_string(), "1"]);
    let mut next = 1u32;
    for (i, (start, len)) in ranges.iter().enumerate() {
        assert_eq!(
            head[3 + i],
            [next.to_string(), start.to_string(), len.to_string()]
        );
        next += len;
    }
    let gid_map = lines(parts[1]);
    assert_eq!(gid_map[0], ["0", &u.gid.to_string(), "1"]);
    assert!(
        gid_map.len() > 1,
        "subgid ranges should be mapped: {gid_map:?}"
    );
    // Full capabilities in the new user namespace.
    let caps = parts[2].split_whitespace().nth(1).unwrap();
    assert_ne!(u64::from_str_radix(caps, 16).unwrap(), 0, "{}", parts[2]);
    // No warning on the happy path.
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
}

#[test]
fn exit_codes_follow_the_target() {
    for flags in [
        &[][..],
        &["--pidns", "--reaper=auto"][..],
        &["--pidns", "--reaper=true"][..],
        &["--pidns", "--reaper=false"][..],
    ] {
        for (script, want) in [("exit 0", 0), ("exit 42", 42)] {
            let o = rootlesskit(flags.iter().copied().chain(["sh", "-c", script])).output();
            assert_eq!(o.code, want, "{flags:?} {script}: {}", o.stderr);
        }
        // Death by a signal gives 255, and the message names it the way Go does.
        let o = rootlesskit(
            flags
                .iter()
                .copied()
                .chain(["sh", "-c", "kill -USR1 $$; sleep 5"]),
        )
        .output();
        assert_eq!(o.code, 255, "{flags:?}: {}", o.stderr);
        assert!(
            o.stderr.contains("user defined signal 1"),
            "{flags:?}: {}",
            o.stderr
        );
        // A target that cannot be executed gives 1 with upstream's message.
        let o = rootlesskit(flags.iter().copied().chain(["no-such-command-rkrs"])).output();
        assert_eq!(o.code, 1, "{flags:?}");
        assert!(
            o.stderr
                .contains("exec: \"no-such-command-rkrs\": executable file not found in $PATH"),
            "{}",
            o.stderr
        );
    }
}

#[test]
fn signal_to_child_pid_reaches_the_target() {
    // upstream hack/integration-exit-code.sh: SIGUSR1 to child_pid → 255.
    for flags in [
        &[][..],
        &["--pidns"][..],
        &["--pidns", "--reaper=false"][..],
    ] {
        let d = Scratch::new(&format!("usr1-{}", flags.len()));
        let state = d.join("state");
        let child = rootlesskit(
            [format!("--state-dir={}", state.display())]
                .into_iter()
                .chain(flags.iter().map(|s| s.to_string()))
                .chain(["sleep".into(), "infinity".into()]),
        )
        .spawn();
        assert!(
            ci::wait_until(Duration::from_secs(10), || state.join("child_pid").exists()),
            "child_pid never appeared"
        );
        let pid: u32 = fs::read_to_string(state.join("child_pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        ci::send_signal(pid, "USR1");
        let o = ci::wait_output(child, Duration::from_secs(10));
        assert_eq!(o.code, 255, "{flags:?}: {}", o.stderr);
        assert!(o.stderr.contains("user defined signal 1"), "{}", o.stderr);
        assert!(!state.exists(), "state dir left behind");
    }
}

#[test]
fn sigterm_to_rootlesskit_is_forwarded_and_state_removed() {
    let d = Scratch::new("sigterm");
    let state = d.join("state");
    let child = rootlesskit([
        format!("--state-dir={}", state.display()).as_str(),
        "sh",
        "-c",
        "trap 'exit 3' TERM; while :; do sleep 0.1; done",
    ])
    .spawn();
    let rk = child.id();
    assert!(ci::wait_until(Duration::from_secs(10), || state
        .join("child_pid")
        .exists()));
    std::thread::sleep(Duration::from_millis(200));
    // The runner's child is setpriv, which exec'd rootlesskit: same pid.
    ci::send_signal(rk, "TERM");
    let o = ci::wait_output(child, Duration::from_secs(10));
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(!state.exists());
}

#[test]
fn state_dir_files_and_environment() {
    let d = Scratch::new("statedir");
    let state = d.join("state");
    let o = rootlesskit([
        format!("--state-dir={}", state.display()).as_str(),
        "sh",
        "-c",
        "echo $ROOTLESSKIT_STATE_DIR; echo $ROOTLESSKIT_PARENT_EUID $ROOTLESSKIT_PARENT_EGID; \
         ls $ROOTLESSKIT_STATE_DIR; stat -c %a $ROOTLESSKIT_STATE_DIR/child_pid; \
         cat $ROOTLESSKIT_STATE_DIR/child_pid; echo; env | grep -c '^_ROOTLESSKIT' || true; echo $MY_VAR",
    ])
    .env("MY_VAR", "kept as is")
    .output();
    ok(&o);
    let u = test_user().unwrap();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], state.to_str().unwrap());
    assert_eq!(l[1], format!("{} {}", u.uid, u.gid));
    assert_eq!(l[2..5], ["api.sock", "child_pid", "lock"]);
    assert_eq!(l[5], "444");
    assert!(l[6].parse::<u32>().is_ok(), "{}", l[6]);
    assert_eq!(l[7], "0", "internal variables leaked");
    assert_eq!(l[8], "kept as is");
    assert!(
        !state.exists(),
        "explicit state dir must be removed on exit"
    );
}

#[test]
fn default_state_dir_is_temporary_and_removed() {
    let d = Scratch::new("tmpdir");
    let o = rootlesskit(["sh", "-c", "echo $ROOTLESSKIT_STATE_DIR"])
        .env("TMPDIR", d.path.to_str().unwrap())
        .output();
    ok(&o);
    let sd = o.stdout.trim();
    assert!(
        sd.starts_with(&format!("{}/rootlesskit", d.path.display())),
        "{sd}"
    );
    assert!(!Path::new(sd).exists());
    assert_eq!(fs::read_dir(&d.path).unwrap().count(), 0);
}

#[test]
fn bad_flags_fail_cleanly_and_leave_nothing() {
    let d = Scratch::new("badflags");
    for (args, want) in [
        (
            &["--nope", "true"][..],
            "flag provided but not defined: -nope",
        ),
        (
            &["--mtu=70000", "true"][..],
            "mtu must be <= 65521, got 70000",
        ),
        (&["--net=bogus", "true"][..], "unknown network mode: bogus"),
        (&["--reaper=true", "true"][..], "reaper requires --pidns"),
        (&[][..], "no command specified"),
        (
            &["--evacuate-cgroup2=x", "true"][..],
            "evacuate-cgroup2 requires --cgroupns",
        ),
        (
            &["--port-driver=none", "-p", "127.0.0.1:8080:80/tcp", "true"][..],
            "port driver \"none\" does not support publishing ports",
        ),
    ] {
        ci::assert_rejected(args, want, &d.path);
    }
}

#[test]
fn second_instance_on_the_same_state_dir_is_refused() {
    let d = Scratch::new("twice");
    let state = d.join("state");
    let sd = format!("--state-dir={}", state.display());
    let first = rootlesskit([sd.as_str(), "sleep", "infinity"]).spawn();
    assert!(ci::wait_until(Duration::from_secs(10), || state
        .join("child_pid")
        .exists()));
    let o = rootlesskit([sd.as_str(), "true"]).output();
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("another RootlessKit is running with the same state directory"),
        "{}",
        o.stderr
    );
    // The refused run must not have wiped the live one.
    assert!(state.join("child_pid").exists());
    ci::send_signal(first.id(), "TERM");
    let o = ci::wait_output(first, Duration::from_secs(10));
    assert_eq!(o.code, 255, "{}", o.stderr);
}

#[test]
fn sigkill_of_rootlesskit_kills_everything_and_state_dir_recovers() {
    for flags in [
        &[][..],
        &["--pidns"][..],
        &["--pidns", "--reaper=false"][..],
    ] {
        let d = Scratch::new(&format!("sigkill-{}", flags.len()));
        let state = d.join("state");
        let marker = d.join("target_pid");
        let sd = format!("--state-dir={}", state.display());
        let script = format!(
            "echo $$ > {m}.tmp; mv {m}.tmp {m}; exec sleep 1000",
            m = marker.display()
        );
        let child = rootlesskit(
            [sd.clone()]
                .into_iter()
                .chain(flags.iter().map(|s| s.to_string()))
                .chain(["sh".into(), "-c".into(), script]),
        )
        .spawn();
        let rk = child.id();
        assert!(ci::wait_until(Duration::from_secs(10), || marker.exists()));
        let child_pid: u32 = fs::read_to_string(state.join("child_pid"))
            .unwrap()
            .parse()
            .unwrap();
        // The target's host pid: the only child of the rootlesskit child.
        let targets = ci::children_of(child_pid);
        assert_eq!(targets.len(), 1, "{targets:?}");
        ci::send_signal(rk, "KILL");
        let _ = ci::wait_output(child, Duration::from_secs(10));
        assert!(
            ci::wait_until(Duration::from_secs(5), || !ci::pid_alive(child_pid)
                && !ci::pid_alive(targets[0])),
            "{flags:?}: child or target survived SIGKILL of rootlesskit"
        );
        // The next run on the same state dir works.
        let o = rootlesskit([sd.as_str(), "true"]).output();
        ok(&o);
    }
}

#[test]
fn pid_namespace_has_a_fresh_proc() {
    let o = rootlesskit([
        "--pidns",
        "sh",
        "-c",
        "echo $$; ls /proc | grep -c '^[0-9]'",
    ])
    .output();
    ok(&o);
    let l: Vec<&str> = o.stdout.lines().collect();
    // The child is PID 1; the target shell comes next.
    assert_eq!(l[0], "2");
    assert!(l[1].parse::<u32>().unwrap() <= 4, "{}", l[1]);
}

#[test]
fn uts_ipc_cgroup_namespaces() {
    let host_uts = fs::read_link("/proc/self/ns/uts").unwrap();
    let host_ipc = fs::read_link("/proc/self/ns/ipc").unwrap();
    let host_cg = fs::read_link("/proc/self/ns/cgroup").unwrap();
    let o = rootlesskit([
        "--utsns",
        "--ipcns",
        "--cgroupns",
        "sh",
        "-c",
        "readlink /proc/self/ns/uts /proc/self/ns/ipc /proc/self/ns/cgroup; hostname rkrs-test-host && hostname; grep '^0::' /proc/self/cgroup",
    ])
    .output();
    ok(&o);
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_ne!(l[0], host_uts.to_str().unwrap());
    assert_ne!(l[1], host_ipc.to_str().unwrap());
    assert_ne!(l[2], host_cg.to_str().unwrap());
    assert_eq!(l[3], "rkrs-test-host");
    assert_eq!(l[4], "0::/");
    // Without the flags, the namespaces are the host's.
    let o = rootlesskit(["readlink", "/proc/self/ns/uts"]).output();
    ok(&o);
    assert_eq!(o.stdout.trim(), host_uts.to_str().unwrap());
}

#[test]
fn copy_up_is_tmpfs_with_symlinks() {
    let o = rootlesskit([
        "--copy-up=/etc",
        "sh",
        "-c",
        "stat -f -c %T /etc; readlink /etc/passwd; head -c 5 /etc/passwd; echo; \
         rm /etc/hostname && echo new > /etc/hostname && cat /etc/hostname",
    ])
    .output();
    ok(&o);
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "tmpfs");
    assert!(
        l[1].starts_with(".ro") && l[1].ends_with("/passwd"),
        "{}",
        l[1]
    );
    assert_eq!(l[2], "root:");
    assert_eq!(l[3], "new");
    // The host is untouched.
    assert_ne!(
        fs::read_to_string("/etc/hostname").unwrap_or_default(),
        "new\n"
    );
    // A directory that does not exist is an error.
    let o = rootlesskit(["--copy-up=/nonexistent-rkrs", "true"]).output();
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("no such file or directory"),
        "{}",
        o.stderr
    );
}

#[test]
fn net_none_has_only_loopback_up() {
    let o = rootlesskit([
        "--net=none",
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/flags; cat /proc/net/if_inet6 | wc -l",
    ])
    .output();
    ok(&o);
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "lo", "sysfs must show the new namespace: {:?}", l);
    // IFF_UP | IFF_LOOPBACK | IFF_RUNNING.
    let flags = u32::from_str_radix(l[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x9, 0x9, "{}", l[1]);
    // Host network: the host's interfaces.
    let host: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let o = rootlesskit(["ls", "/sys/class/net"]).output();
    ok(&o);
    assert_eq!(o.stdout.lines().count(), host.len());
}

#[test]
fn socket_activation_fds_and_listen_pid() {
    // systemd-socket-activate does exactly this: LISTEN_PID is the pid that execs rootlesskit.
    let d = Scratch::new("activation");
    let script = format!(
        "ls -l /proc/self/fd | grep -v /proc/; exec 3<{f}; exec 4<{f}; \
         export LISTEN_FDS=2 LISTEN_PID=$$ LISTEN_FDNAMES=a:b; \
         exec {rk} --pidns sh -c 'echo $LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES; ls -l /proc/self/fd | grep -v /proc/'",
        f = "/etc/hostname",
        rk = ci::bin_dir().join("rootlesskit").display()
    );
    let o = Run::program("/bin/sh")
        .args(["-c", &script])
        .cwd(&d.path)
        .output();
    ok(&o);
    // Descriptor numbers in `ls -l` lines ("... 3 -> /etc/hostname"), minus ls's own.
    let fds = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let (left, _) = l.split_once(" -> ")?;
                left.split_whitespace().last().map(str::to_string)
            })
            .collect()
    };
    let lines: Vec<&str> = o.stdout.lines().collect();
    let id_line = lines
        .iter()
        .position(|l| l.split_whitespace().count() == 4 && !l.contains("->"))
        .unwrap();
    let before = fds(&lines[..id_line].join("\n"));
    let after = fds(&lines[id_line + 1..].join("\n"));
    let f: Vec<&str> = lines[id_line].split_whitespace().collect();
    assert_eq!(f[0], f[1], "LISTEN_PID must be the target's own pid");
    assert_eq!(f[2..], ["2", "a:b"]);
    let mut want = before.clone();
    want.extend(["3".to_string(), "4".to_string()]);
    want.sort();
    let mut got = after.clone();
    got.sort();
    // Exactly the descriptors the caller had, plus the two sockets: nothing of ours leaks.
    assert_eq!(got, want, "{}", o.stdout);
}

#[test]
fn no_subordinate_ids_falls_back_to_a_single_map() {
    // A uid with no passwd entry and no subuid lines.
    if test_user().is_some_and(|u| !u.switch) {
        skip!("needs root to run as a second unprivileged uid");
    }
    let o = rootlesskit([
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map /proc/self/setgroups",
    ])
    .as_ids(54321, 54321)
    .output();
    ok(&o);
    let l = lines(&o.stdout);
    assert_eq!(l[0], ["0"]);
    assert_eq!(l[1], ["0", "54321", "1"]);
    assert_eq!(l[2], ["deny"]);
    let warnings: Vec<&str> = o.stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", o.stderr);
}

fn sh(script: &str) {
    let st = std::process::Command::new("sh")
        .args(["-ec", script])
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

/// Whether `path` is a mount point in the mount namespace of `pid`.
fn mounted_in(pid: u32, path: &Path) -> bool {
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(path.to_str().unwrap()))
}

#[test]
fn propagation_follows_the_flag() {
    // upstream hack/integration-propagation.sh, on a shared mount of our own so that it does
    // not depend on how the host's / is mounted.
    if !am_root() {
        skip!("needs root for the host-side mounts");
    }
    // A new mount namespace owned by a new user namespace receives every mount as a slave.
    // The recursive flags reach our submount; the plain ones change only `/`, so the submount
    // stays a slave and keeps receiving.
    for (prop, propagates) in [
        ("rprivate", false),
        ("private", true),
        ("rslave", true),
        ("slave", true),
    ] {
        let d = Scratch::new(&format!("prop-{prop}"));
        let a = d.join("a");
        fs::create_dir_all(&a).unwrap();
        sh(&format!(
            "mount -t tmpfs rkrs-prop {a}; mount --make-shared {a}; mkdir {a}/sub",
            a = a.display()
        ));
        let state = d.join("state");
        let child = rootlesskit([
            format!("--state-dir={}", state.display()).as_str(),
            &format!("--propagation={prop}"),
            "sleep",
            "infinity",
        ])
        .spawn();
        assert!(ci::wait_until(Duration::from_secs(10), || state
            .join("child_pid")
            .exists()));
        let pid: u32 = fs::read_to_string(state.join("child_pid"))
            .unwrap()
            .parse()
            .unwrap();
        let sub = a.join("sub");
        sh(&format!("mount -t tmpfs rkrs-prop-sub {}", sub.display()));
        let seen = mounted_in(pid, &sub);
        ci::send_signal(child.id(), "TERM");
        let _ = ci::wait_output(child, Duration::from_secs(10));
        sh(&format!(
            "umount {s}; umount {a}",
            s = sub.display(),
            a = a.display()
        ));
        assert_eq!(seen, propagates, "--propagation={prop}");
    }
}

#[test]
fn evacuate_cgroup2_moves_into_the_group() {
    // upstream hack/integration-evacuate-cgroup2.sh: the target sees 0::/evac.
    if !am_root() {
        skip!("needs root to delegate a cgroup2 subtree to the test user");
    }
    let Some(mnt) = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
    else {
        skip!("no cgroup2 hierarchy is mounted");
    };
    let u = test_user().unwrap();
    let group = Path::new(&mnt).join(format!("rkrs-ci-{}", std::process::id()));
    if fs::create_dir(&group).is_err() {
        skip!("cannot create a cgroup under {mnt}");
    }
    for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
        let _ = std::os::unix::fs::chown(group.join(f), Some(u.uid), Some(u.gid));
    }
    // Start a shell as the test user that waits until we moved it into the delegated group.
    let script = format!(
        "read go; exec {} --pidns --cgroupns --evacuate-cgroup2=evac cat /proc/self/cgroup",
        ci::bin_dir().join("rootlesskit").display()
    );
    let mut child = Run::program("/bin/sh")
        .args(["-c", &script])
        .spawn_with_stdin();
    fs::write(group.join("cgroup.procs"), child.id().to_string()).unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let o = ci::wait_output(child, Duration::from_secs(20));
    // Clean up the groups (the processes are gone).
    let _ = fs::remove_dir(group.join("evac"));
    let _ = fs::remove_dir(&group);
    ok(&o);
    assert!(
        o.stdout.lines().any(|l| l == "0::/evac"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
}

#[test]
fn subid_sources_static_and_dynamic() {
    let u = test_user().unwrap();
    if subuid_ranges("/etc/subuid").is_empty() {
        skip!("user {} has no /etc/subuid lines", u.name);
    }
    let want = rootlesskit(["cat", "/proc/self/uid_map"]).output();
    ok(&want);
    for source in ["static", "auto", "dynamic"] {
        let o = rootlesskit([
            format!("--subid-source={source}").as_str(),
            "cat",
            "/proc/self/uid_map",
        ])
        .output();
        if source == "dynamic" && !Path::new("/usr/bin/getsubids").exists() {
            assert_eq!(o.code, 1, "dynamic without getsubids must fail");
            continue;
        }
        ok(&o);
        assert_eq!(
            lines(&o.stdout),
            lines(&want.stdout),
            "--subid-source={source}"
        );
        assert!(lines(&o.stdout).len() > 1, "{source}: {}", o.stdout);
    }
    // GETSUBIDS names the program for the dynamic source.
    let o = rootlesskit(["--subid-source=dynamic", "true"])
        .env("GETSUBIDS", "/nonexistent/getsubids")
        .output();
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("/nonexistent/getsubids"), "{}", o.stderr);
}

#[test]
fn helpers_are_found_in_libexec_too() {
    // A distro layout: bin/rootlesskit and libexec/rootlesskit/rootlesskit-child.
    let d = Scratch::new("libexec");
    let bin = d.join("usr/bin");
    let libexec = d.join("usr/libexec/rootlesskit");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&libexec).unwrap();
    fs::copy(ci::bin_dir().join("rootlesskit"), bin.join("rootlesskit")).unwrap();
    fs::copy(
        ci::bin_dir().join("rootlesskit-child"),
        libexec.join("rootlesskit-child"),
    )
    .unwrap();
    for p in [
        d.join("usr"),
        bin.clone(),
        d.join("usr/libexec"),
        libexec.clone(),
    ] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = Run::program(bin.join("rootlesskit"))
        .args(["id", "-u"])
        .output();
    ok(&o);
    assert_eq!(o.stdout.trim(), "0");
    // Without the helper anywhere, one clear line.
    fs::remove_file(libexec.join("rootlesskit-child")).unwrap();
    let o = Run::program(bin.join("rootlesskit"))
        .args(["true"])
        .output();
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("cannot find rootlesskit-child"),
        "{}",
        o.stderr
    );
}

#[test]
fn notify_socket_passes_through() {
    let o = rootlesskit(["sh", "-c", "echo $NOTIFY_SOCKET"])
        .env("NOTIFY_SOCKET", "/run/user/1000/systemd/notify")
        .output();
    ok(&o);
    assert_eq!(o.stdout.trim(), "/run/user/1000/systemd/notify");
}

#[test]
fn no_helper_programs_are_executed() {
    // The only programs rootlesskit itself may run here are newuidmap and newgidmap; mounts,
    // loopback and namespaces are syscalls.
    if !am_root() {
        skip!("needs root to trace the unprivileged run");
    }
    if !Path::new("/usr/bin/strace").exists() {
        skip!("strace is not installed");
    }
    let d = Scratch::new("strace");
    let log = d.join("trace");
    let (programs, trace) = ci::traced_rootlesskit(
        &log,
        &["--net=none", "--pidns", "--copy-up=/etc", "/bin/true"],
        &[],
    );
    // getsubids may run under the default --subid-source=auto (when nsswitch.conf names a
    // subid service other than files), as upstream runs it.
    let allowed = [
        "getsubids",
        "newgidmap",
        "newuidmap",
        "rootlesskit",
        "rootlesskit-child",
        "setpriv",
        "true",
    ];
    ci::assert_executed(
        &programs,
        &trace,
        &allowed,
        &["newuidmap", "newgidmap", "rootlesskit-child", "true"],
    );
}

/// The stderr lines of `rootlesskit --propagation=PROP true` that are about propagation, run
/// directly or, when `unshare` is given, as root in `unshare --mount --propagation=X`.
fn propagation_warnings(prop: &str, unshare: Option<&str>) -> Vec<String> {
    let flag = format!("--propagation={prop}");
    let o = match unshare {
        None => rootlesskit([flag.as_str(), "true"]).output(),
        Some(root_prop) => {
            let u = test_user().unwrap();
            let child = std::process::Command::new("unshare")
                .args(["--mount", &format!("--propagation={root_prop}"), "setpriv"])
                .args([&format!("--reuid={}", u.uid), &format!("--regid={}", u.gid)])
                .args(["--clear-groups", "--"])
                .arg(ci::bin_dir().join("rootlesskit"))
                .args([flag.as_str(), "true"])
                .env("HOME", "/")
                .current_dir("/")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            ci::wait_output(child, Duration::from_secs(30))
        }
    };
    ok(&o);
    o.stderr
        .lines()
        .filter(|l| l.contains("propagation"))
        .map(str::to_string)
        .collect()
}

#[test]
fn propagation_warns_when_the_host_root_is_not_shared() {
    // Upstream warns (and carries on) when a non-private --propagation, such as
    // dockerd-rootless.sh's rslave, is asked for while the host's / is not a shared mount (as
    // inside a container), so that the child would not see the host's later mounts.
    let root = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .map(|f| {
            let end = f.iter().position(|x| *x == "-").unwrap();
            f[6..end].join(" ")
        })
        .unwrap();
    let warning = |optional: &str| {
        format!(
            "[rootlesskit:parent] warning: The host root filesystem is mounted as \"{optional}\". Setting child propagation to \"rslave\" is not supported."
        )
    };
    assert_eq!(propagation_warnings("rprivate", None), Vec::<String>::new());
    let expect = if root.contains("shared") {
        vec![]
    } else {
        vec![warning(&root)]
    };
    assert_eq!(
        propagation_warnings("rslave", None),
        expect,
        "/ is {root:?}"
    );
    if !am_root() {
        skip!("needs root to try both a shared and a private host /");
    }
    assert_eq!(
        propagation_warnings("rslave", Some("private")),
        vec![warning("")]
    );
    assert_eq!(
        propagation_warnings("rslave", Some("shared")),
        Vec::<String>::new()
    );
}
