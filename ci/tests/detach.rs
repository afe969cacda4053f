//! `--detach-netns` as a user sees it, run as the unprivileged test user: the target stays in
//! the host's network namespace, `$ROOTLESSKIT_STATE_DIR/netns` enters the detached one (as
//! dockerd does with `nsenter -n`), the driver's interface and route live there, and nothing is
//! left behind.

use std::path::Path;
use std::time::Duration;

use ci::{Scratch, have, ok, rootlesskit, routes, skip, tun_usable};

/// Interface names of /proc/net/dev.
fn devices(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    v.sort();
    v
}

/// Pids of processes whose command line mentions `needle` (the state dir: the driver's
/// arguments name `/proc/<pid>/root<statedir>/netns`).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
            && ci::pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// The state dir and every process attached to it are gone shortly after the run.
fn nothing_left(state_dir: &str) {
    assert!(state_dir.starts_with('/'), "state dir {state_dir:?}");
    assert!(!Path::new(state_dir).exists(), "{state_dir} left behind");
    assert!(
        ci::wait_until(Duration::from_secs(5), || processes_mentioning(state_dir)
            .is_empty()),
        "processes left behind: {:?}",
        processes_mentioning(state_dir)
    );
}

/// What the script prints, in `--`-separated parts: the state dir, whether `netns` is there,
/// the detached namespace's routes and devices (through `nsenter`, as dockerd does), the
/// target's own devices, network namespace and /sys/class/net, the state dir's resolv.conf,
/// and whether /etc/resolv.conf is still the copied-up symlink (no bind mount in detach mode).
const SCRIPT: &str = r#"SD=$ROOTLESSKIT_STATE_DIR; echo "$SD"; echo --
test -f "$SD/netns" && echo present; echo --
nsenter --net="$SD/netns" cat /proc/net/route; echo --
nsenter -n"$SD/netns" cat /proc/net/dev; echo --
cat /proc/net/dev; echo --
readlink /proc/self/ns/net; ls /sys/class/net; echo --
cat "$SD/resolv.conf"; echo --
test -L /etc/resolv.conf && echo symlink || echo replaced"#;

/// Runs a driver with `--detach-netns` and checks everything a user of the detached namespace
/// relies on.
fn check_driver(net: &str) {
    let tmp = Scratch::new(&format!("detach-{net}"));
    let o = rootlesskit([
        &format!("--net={net}"),
        "--detach-netns",
        "--disable-host-loopback",
        "--copy-up=/etc",
        "sh",
        "-c",
        SCRIPT,
    ])
    .env("TMPDIR", tmp.path.to_str().unwrap())
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts.len(), 8, "{}", o.stdout);
    let state_dir = parts[0].trim();
    assert_eq!(parts[1], "present\n", "$ROOTLESSKIT_STATE_DIR/netns");
    // Default route via 10.0.2.2 and the connected 10.0.2.0/24, both on tap0, in the detached
    // namespace (little-endian hex).
    let r = routes(parts[2]);
    assert!(
        r.contains(&("tap0".into(), "00000000".into(), "0202000A".into())),
        "{r:?}"
    );
    assert!(
        r.contains(&("tap0".into(), "0002000A".into(), "00000000".into())),
        "{r:?}"
    );
    assert_eq!(devices(parts[3]), ["lo", "tap0"]);
    // The target itself is still in the host's network namespace: no tap0, the host's
    // namespace and the host's /sys/class/net (sysfs is not remounted).
    let own = devices(parts[4]);
    assert!(!own.contains(&"tap0".to_string()), "{own:?}");
    let host = devices(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(own, host);
    let mut l = parts[5].lines();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(l.next(), host_ns.to_str());
    let mut sys: Vec<String> = l.map(String::from).collect();
    sys.sort();
    let mut host_sys: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host_sys.sort();
    assert_eq!(sys, host_sys);
    assert_eq!(parts[6], "nameserver 10.0.2.3\n");
    assert_eq!(
        parts[7].trim(),
        "symlink",
        "/etc/resolv.conf was bind-mounted"
    );
    nothing_left(state_dir);
    assert_eq!(std::fs::read_dir(&tmp.path).unwrap().count(), 0);
}

#[test]
fn slirp4netns_attaches_to_the_detached_namespace() {
    if !have("slirp4netns") || !have("nsenter") {
        skip!("slirp4netns or nsenter is not installed");
    }
    if !tun_usable() {
        skip!("/dev/net/tun is not usable by the test user");
    }
    check_driver("slirp4netns");
}

#[test]
fn pasta_attaches_to_the_detached_namespace() {
    if !have("pasta") || !have("nsenter") {
        skip!("pasta or nsenter is not installed");
    }
    if !tun_usable() {
        skip!("/dev/net/tun is not usable by the test user");
    }
    check_driver("pasta");
}

/// `--net=host` and `--net=none` still get a detached namespace, with only `lo`, up. The state
/// dir here lies under a copied-up directory, as dockerd's does under `/run`: the namespace
/// file must survive the copy-up.
#[test]
fn host_and_none_get_a_loopback_only_namespace() {
    if !have("nsenter") {
        skip!("nsenter is not installed");
    }
    for net in ["host", "none"] {
        let tmp = Scratch::new(&format!("detach-lo-{net}"));
        let state_dir = tmp.join("state");
        let o = rootlesskit([
            format!("--net={net}"),
            "--detach-netns".into(),
            "--pidns".into(),
            format!("--copy-up={}", tmp.path.display()),
            format!("--state-dir={}", state_dir.display()),
            "sh".into(),
            "-c".into(),
            r#"SD=$ROOTLESSKIT_STATE_DIR
               nsenter --net="$SD/netns" cat /proc/net/dev; echo --
               nsenter --net="$SD/netns" grep -c 127.0.0.1 /proc/net/fib_trie; echo --
               readlink /proc/self/ns/net; test -e "$SD/resolv.conf" && echo resolv || echo none"#
                .into(),
        ])
        .timeout(Duration::from_secs(30))
        .output();
        ok(&o);
        let parts: Vec<&str> = o.stdout.split("--\n").collect();
        assert_eq!(parts.len(), 3, "{}", o.stdout);
        assert_eq!(devices(parts[0]), ["lo"], "--net={net}");
        assert_ne!(parts[1].trim(), "0", "lo is not up with --net={net}");
        let mut l = parts[2].lines();
        let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_eq!(l.next(), host_ns.to_str(), "--net={net}");
        assert_eq!(l.next(), Some("none"), "--net={net} writes no resolv.conf");
        nothing_left(state_dir.to_str().unwrap());
    }
}

#[test]
fn a_missing_unshare_helper_is_one_clear_error() {
    let d = Scratch::new("detach-nohelper");
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in ["rootlesskit", "rootlesskit-child"] {
        std::fs::copy(ci::bin_dir().join(name), bin.join(name)).unwrap();
    }
    let state = d.join("tmp");
    std::fs::create_dir(&state).unwrap();
    if let Some(u) = ci::test_user()
        && u.switch
    {
        std::os::unix::fs::chown(&state, Some(u.uid), Some(u.gid)).unwrap();
    }
    let o = ci::Run::program(bin.join("rootlesskit"))
        .args(["--detach-netns", "true"])
        .env("TMPDIR", state.to_str().unwrap())
        .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        o.stderr.trim_end(),
        format!(
            "[rootlesskit:parent] error: cannot find rootlesskit-unshare: looked for {0}/rootlesskit-unshare and {0}/../libexec/rootlesskit/rootlesskit-unshare",
            bin.display()
        )
    );
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "state dir left behind"
    );
}

#[test]
fn slirp4netns_sandbox_conflicts_with_detach() {
    let o = rootlesskit([
        "--net=slirp4netns",
        "--detach-netns",
        "--slirp4netns-sandbox=true",
        "true",
    ])
    .output();
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr.lines().last(),
        Some(
            "[rootlesskit:parent] error: --slirp4netns-sandbox conflicts with --detach-netns \
             (https://github.com/rootless-containers/slirp4netns/issues/317)"
        ),
        "{}",
        o.stderr
    );
}

/// The helper on its own, outside a user namespace, cannot make a namespace: one line, exit 1.
#[test]
fn the_unshare_helper_reports_one_line() {
    let d = Scratch::new("detach-helper");
    let target = d.join("netns");
    std::fs::write(&target, b"").unwrap();
    let o = ci::Run::bin("rootlesskit-unshare")
        .args(["--net-bind".as_ref(), target.as_os_str()])
        .output();
    assert_eq!((o.code, o.stdout.as_str()), (1, ""));
    assert_eq!(
        o.stderr,
        "[rootlesskit:unshare] error: failed to unshare the network namespace: operation not permitted\n"
    );
    let o = ci::Run::bin("rootlesskit-unshare")
        .args(["-n", "mount"])
        .output();
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "[rootlesskit:unshare] error: unexpected argument \"-n\"; usage: rootlesskit-unshare --net-bind PATH\n"
    );
}

/// The detached namespace is made by our helper, by syscalls: the only programs run are ours,
/// the id-map helpers and the driver; never `ip`, `nsenter`, `mount` or `unshare`.
#[test]
fn only_our_helper_makes_the_namespace() {
    let Some(u) = ci::test_user().filter(|u| u.switch) else {
        skip!("needs root to trace the unprivileged run");
    };
    if !Path::new("/usr/bin/strace").exists() {
        skip!("strace is not installed");
    }
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let d = Scratch::new("detach-strace");
    let log = d.join("trace");
    let o = ci::Run::program("/usr/bin/strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-o"])
        .args([log.as_os_str()])
        .args([
            "setpriv",
            &format!("--reuid={}", u.uid),
            &format!("--regid={}", u.gid),
            "--clear-groups",
            "--",
        ])
        .args([ci::bin_dir().join("rootlesskit").as_os_str()])
        .args([
            "--net=slirp4netns",
            "--detach-netns",
            "--disable-host-loopback",
            "--pidns",
            "--copy-up=/etc",
            "/bin/true",
        ])
        .as_ids(0, 0)
        .timeout(Duration::from_secs(60))
        .output();
    ok(&o);
    let trace = std::fs::read_to_string(&log).unwrap();
    let programs = ci::executed_programs(&trace);
    let allowed = [
        "getsubids",
        "newgidmap",
        "newuidmap",
        "rootlesskit",
        "rootlesskit-child",
        "rootlesskit-unshare",
        "setpriv",
        "slirp4netns",
        "strace",
        "true",
    ];
    ci::assert_executed(
        &programs,
        &trace,
        &allowed,
        &["rootlesskit-unshare", "slirp4netns", "true"],
    );
}
