//! `rootlesskit --check` and `--check-json` as the unprivileged test user: the verdict lines on
//! this host, the hints for a user without subordinate ids, a PATH without newuidmap and a
//! /dev/net/tun that cannot be opened, the exit code, and that nothing is left behind.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ci::{Output, Scratch, rootlesskit, skip};

/// The line of check `name`, e.g. `ok    userns         user.max_user_namespaces=…`.
fn check_line<'a>(o: &'a Output, name: &str) -> &'a str {
    o.stdout
        .lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|r| r.starts_with(&format!("{name} ")))
        })
        .unwrap_or_else(|| panic!("no {name} line:\n{}{}", o.stdout, o.stderr))
}

fn status_of<'a>(o: &'a Output, name: &str) -> &'a str {
    check_line(o, name).split_whitespace().next().unwrap()
}

#[test]
fn passes_on_this_host_and_creates_nothing() {
    let s = Scratch::new("check-ok");
    let o = rootlesskit(["--check"])
        .env("TMPDIR", &s.path.display().to_string())
        .output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stderr, "");
    for name in [
        "userns",
        "subids",
        "newuidmap",
        "newgidmap",
        "clone",
        "helper",
        "state-dir",
    ] {
        assert_eq!(status_of(&o, name), "ok", "{}", o.stdout);
    }
    if ci::tun_usable() {
        assert_eq!(status_of(&o, "tun"), "ok", "{}", o.stdout);
    }
    assert!(
        check_line(&o, "subids").contains("65536 subordinate uids"),
        "{}",
        o.stdout
    );
    assert!(
        check_line(&o, "clone").contains("2 uid map line(s)"),
        "{}",
        o.stdout
    );
    assert!(
        check_line(&o, "state-dir").contains(&s.path.display().to_string()),
        "{}",
        o.stdout
    );
    // Every network driver gets a line, found or not.
    for name in [
        "slirp4netns",
        "pasta",
        "vpnkit",
        "lxc-user-nic",
        "ping",
        "cgroup",
        "runtime-dir",
    ] {
        assert!(
            ["ok", "warn"].contains(&status_of(&o, name)),
            "{}",
            o.stdout
        );
    }
    if ci::have("slirp4netns") {
        let l = check_line(&o, "slirp4netns");
        assert!(
            l.contains("slirp4netns version") && l.contains("api-socket"),
            "{l}"
        );
    }
    assert!(
        o.stdout
            .ends_with("a plain \"rootlesskit true\" would work here\n")
    );
    let left: Vec<_> = fs::read_dir(&s.path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn json_has_the_same_verdicts() {
    let o = rootlesskit(["--check-json"]).output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    assert!(o.stdout.starts_with("{\"ok\":true,\"checks\":[{\"name\":\"userns\",\"status\":\"ok\",\"detail\":\"user.max_user_namespaces="), "{}", o.stdout);
    assert!(
        o.stdout.contains("{\"name\":\"clone\",\"status\":\"ok\","),
        "{}",
        o.stdout
    );
    assert!(o.stdout.ends_with("]}\n"), "{}", o.stdout);
    // Flags given with it count: a state dir nobody can create fails the check.
    let o = rootlesskit(["--check-json", "--state-dir=/proc/no/such/dir"]).output();
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("{\"ok\":false,"), "{}", o.stdout);
    assert!(o.stdout.contains("{\"name\":\"state-dir\",\"status\":\"fail\",\"detail\":\"cannot make a state dir: /proc/no/such: no such file or directory\",\"hint\":\"set TMPDIR or --state-dir"), "{}", o.stdout);
}

#[test]
fn unwritable_tmpdir_fails_with_exit_1() {
    let o = rootlesskit(["--check"]).env("TMPDIR", "/proc").output();
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        check_line(&o, "state-dir"),
        "fail  state-dir      cannot make a state dir: /proc: permission denied; hint: set TMPDIR or --state-dir to a directory you can write"
    );
    assert!(
        o.stdout
            .ends_with("a plain \"rootlesskit true\" would fail here\n")
    );
}

/// `check` without dashes is a command, as it always was.
#[test]
fn a_command_named_check_still_runs() {
    let s = Scratch::new("check-cmd");
    s.script("check", "#!/bin/sh\necho ran the check program \"$@\"\n");
    let path = format!("{}:/usr/bin:/bin", s.path.display());
    let o = rootlesskit(["check", "--json"]).env("PATH", &path).output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout, "ran the check program --json\n");
}

#[test]
fn path_without_newuidmap_warns_and_still_passes() {
    // Only setpriv (which the harness switches users with) is on this PATH.
    let s = Scratch::new("check-path");
    std::os::unix::fs::symlink("/usr/bin/setpriv", s.join("setpriv")).unwrap();
    let path = s.path.display().to_string();
    let o = rootlesskit(["--check"]).env("PATH", &path).output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let l = check_line(&o, "newuidmap");
    assert!(
        l.starts_with("warn  newuidmap      exec: \"newuidmap\": executable file not found in $PATH: rootlesskit maps a single id; hint: install the uidmap package"),
        "{l}"
    );
    assert_eq!(status_of(&o, "subids"), "warn", "{}", o.stdout);
    assert!(
        check_line(&o, "clone").contains("1 uid map line(s)"),
        "{}",
        o.stdout
    );
}

#[test]
fn user_without_subids_warns_with_a_hint() {
    if !ci::am_root() {
        skip!("needs root to create the user rkrs-nosub");
    }
    let user = "rkrs-nosub";
    if ci::passwd_user(user).is_none() {
        let st = Command::new("useradd")
            // Debian's useradd gives a new user subordinate ids unless told not to.
            .args(["--no-create-home", "--shell", "/bin/sh"])
            .args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", user])
            .status()
            .unwrap();
        // Another test run may have created it meanwhile.
        assert!(st.success() || ci::passwd_user(user).is_some());
    }
    let (uid, gid) = ci::passwd_user(user).unwrap();
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(f).unwrap_or_default();
        assert!(
            !text.lines().any(|l| l.starts_with(&format!("{user}:"))),
            "{f} has {user}"
        );
    }
    let o = rootlesskit(["--check"]).as_ids(uid, gid).output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let l = check_line(&o, "subids");
    assert!(
        l.starts_with(&format!("warn  subids         no subordinate ids for user {uid} (\"{user}\") in /etc/subuid: falling back to a single-id map")),
        "{l}"
    );
    assert!(
        l.ends_with(
            "; hint: as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER"
        ),
        "{l}"
    );
    assert!(
        check_line(&o, "clone").contains("1 uid map line(s)"),
        "{}",
        o.stdout
    );
}

/// /dev/net/tun replaced, in a mount namespace of this test only, by a file nobody may open.
#[test]
fn unusable_tun_warns_with_a_hint() {
    if !ci::am_root() || !ci::have("unshare") || !std::path::Path::new("/dev/net/tun").exists() {
        skip!("needs root, unshare(1) and /dev/net/tun for a private mount namespace");
    }
    let s = Scratch::new("check-tun");
    let blocker = s.join("tun");
    fs::write(&blocker, b"").unwrap();
    fs::set_permissions(&blocker, fs::Permissions::from_mode(0o000)).unwrap();
    let out =
        ci::rootlesskit_over_bind(&blocker, std::path::Path::new("/dev/net/tun"), &["--check"])
            .expect("root and unshare, checked above")
            .output()
            .unwrap();
    let o = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        check_line(&o, "tun"),
        "warn  tun            open /dev/net/tun: permission denied; hint: --net=slirp4netns, pasta and vpnkit need it: modprobe tun, and the device must be mode 0666"
    );
}

/// The check runs only the programs it reports on (newuidmap and newgidmap on the trial
/// process, the drivers for their versions, getsubids under auto); its trial namespace runs
/// nothing at all.
#[test]
fn runs_only_the_programs_it_reports_on() {
    if !ci::am_root() || !ci::have("strace") {
        skip!("needs root and strace to trace the unprivileged run");
    }
    let d = Scratch::new("check-strace");
    let log = d.join("trace");
    let (programs, trace) = ci::traced_rootlesskit(&log, &["--check"], &[]);
    let allowed = [
        "getsubids",
        "newgidmap",
        "newuidmap",
        "pasta",
        // pasta re-executes its AVX2 build where the CPU has it.
        "pasta.avx2",
        "passt.avx2",
        "rootlesskit",
        // `--probe-overlay`, in a second trial namespace: the overlayfs line.
        "rootlesskit-child",
        "setpriv",
        "slirp4netns",
        "vpnkit",
    ];
    ci::assert_executed(
        &programs,
        &trace,
        &allowed,
        &["newuidmap", "newgidmap", "rootlesskit"],
    );
    // rootlesskit itself is executed once: by setpriv.
    let ours = trace
        .lines()
        .filter(|l| l.contains("execve(\"") && l.contains("/rootlesskit\"") && !l.contains("= -1"))
        .count();
    assert_eq!(ours, 1, "{trace}");
}

/// The network driver named with `--check` is needed, so its absence fails the check.
#[test]
fn a_missing_driver_fails_when_net_names_it() {
    let o = rootlesskit(["--check"]).output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let o = rootlesskit([
        "--net=slirp4netns",
        "--slirp4netns-binary=/nonexistent/slirp4netns",
        "--check",
    ])
    .output();
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        check_line(&o, "slirp4netns"),
        "fail  slirp4netns    exec: \"/nonexistent/slirp4netns\": stat /nonexistent/slirp4netns: no such file or directory; hint: install it to use --net=slirp4netns"
    );
    // Without --net naming it, the same missing program only warns.
    let o = rootlesskit(["--slirp4netns-binary=/nonexistent/slirp4netns", "--check"]).output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(status_of(&o, "slirp4netns"), "warn", "{}", o.stdout);
}
