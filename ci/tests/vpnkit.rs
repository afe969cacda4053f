//! `--net=vpnkit` as the unprivileged test user, against the fake vpnkit of `ci/fake-vpnkit.py`
//! (vpnkit itself is not packaged for Debian): the tap's address, MTU, MAC and route, the DNS
//! files, an ICMP round trip through the fake, vpnkit's command line, the API's info, vpnkit
//! dying under a running target, and the errors when vpnkit is missing, fails or refuses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ci::{Scratch, ok, rootlesskit, routes, skip, tun_usable};

const PYTHON: &str = "/usr/bin/python3";

/// A scratch dir with the fake installed as `bin/vpnkit`; returns it and the `$PATH` to use.
fn with_fake(name: &str) -> (Scratch, String) {
    let d = Scratch::new(name);
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("fake-vpnkit.py");
    std::fs::copy(&fake, bin.join("vpnkit")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(bin.join("vpnkit"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin:/usr/sbin:/sbin", bin.display());
    (d, path)
}

/// The fake's log: one `<pid> <argv...>` line per start.
fn fake_log(d: &Scratch) -> PathBuf {
    let log = d.join("fake.log");
    std::fs::write(&log, "").unwrap();
    if let Some(u) = ci::test_user()
        && u.switch
    {
        std::os::unix::fs::chown(&log, Some(u.uid), Some(u.gid)).unwrap();
    }
    log
}

/// `GET /v1/info` on the API socket: the whole reply.
fn get_info(sock: &Path) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v1/info HTTP/1.1\r\nHost: rootlesskit\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// A background rootlesskit, ended with SIGTERM if a failed assertion leaves it running.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            ci::send_signal(c.id(), "TERM");
            let _ = ci::wait_output(c, Duration::from_secs(10));
        }
    }
}

fn need_fake() -> bool {
    Path::new(PYTHON).exists() && tun_usable() && Path::new("/bin/busybox").exists()
}

#[test]
fn vpnkit_configures_the_tap_and_frames_flow_both_ways() {
    if !need_fake() {
        skip!("python3 (for the fake vpnkit), busybox or /dev/net/tun is missing");
    }
    let (d, path) = with_fake("vpnkit-tap");
    let log = fake_log(&d);
    let script = "cat /etc/resolv.conf; echo --; cat /proc/net/route; echo --; \
                  cat /sys/class/net/tap0/mtu /sys/class/net/tap0/address; \
                  busybox ip -4 addr show tap0 | grep inet; echo --; \
                  busybox ping -c 2 -W 5 192.168.65.1 | grep received; echo --; tail -n 2 /etc/hosts";
    let o = rootlesskit([
        "--net=vpnkit",
        "--copy-up=/etc",
        "--disable-host-loopback",
        "sh",
        "-c",
        script,
    ])
    .env("PATH", &path)
    .env("FAKE_VPNKIT_LOG", log.to_str().unwrap())
    .timeout(Duration::from_secs(40))
    .output();
    ok(&o);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts[0], "nameserver 192.168.65.1\n");
    let r = routes(parts[1]);
    // Default route via 192.168.65.1 and the connected 192.168.65.0/24 (little-endian hex).
    assert!(
        r.contains(&("tap0".into(), "00000000".into(), "0141A8C0".into())),
        "{r:?}"
    );
    assert!(
        r.contains(&("tap0".into(), "0041A8C0".into(), "00000000".into())),
        "{r:?}"
    );
    let l: Vec<&str> = parts[2].lines().collect();
    assert_eq!(l[0], "1500");
    // The fake hands out 02:50:00:12:34:<n> with 192.168.65.<n>, from 3 on.
    assert_eq!(l[1], "02:50:00:12:34:03");
    assert!(l[2].contains("inet 192.168.65.3/24 "), "{l:?}");
    assert!(
        parts[3].contains("2 packets transmitted, 2 packets received"),
        "{}",
        o.stdout
    );
    let hosts: Vec<&str> = parts[4].lines().collect();
    assert!(
        hosts[0].starts_with("127.0.0.1 ") && hosts[1].starts_with("::1 "),
        "{hosts:?}"
    );
    // vpnkit's command line, as upstream builds it.
    let logged = std::fs::read_to_string(&log).unwrap();
    let argv = logged.lines().next().unwrap().split_once(' ').unwrap().1;
    let state = argv
        .strip_prefix("--ethernet ")
        .and_then(|r| r.split_once(' '))
        .map(|(sock, rest)| (sock.to_string(), rest.to_string()))
        .unwrap();
    assert!(state.0.ends_with("/vpnkit-ethernet.sock"), "{argv}");
    assert_eq!(state.1, "--mtu 1500 --host-ip 0.0.0.0");
    // The temporary state dir, vpnkit's socket with it, is gone.
    assert!(!Path::new(&state.0).exists());
}

#[test]
fn vpnkit_info_command_line_and_death_under_a_running_target() {
    if !need_fake() {
        skip!("python3 (for the fake vpnkit), busybox or /dev/net/tun is missing");
    }
    let (d, path) = with_fake("vpnkit-api");
    let log = fake_log(&d);
    let state = d.join("state");
    let mut child = Running(Some(
        rootlesskit([
            format!("--state-dir={}", state.display()).as_str(),
            "--net=vpnkit",
            "--port-driver=builtin",
            "sh",
            "-c",
            "while [ ! -e \"$ROOTLESSKIT_STATE_DIR/stop\" ]; do sleep 0.1; done; exit 7",
        ])
        .env("PATH", &path)
        .env("FAKE_VPNKIT_LOG", log.to_str().unwrap())
        .spawn(),
    ));
    assert!(ci::wait_until(Duration::from_secs(20), || state
        .join("child_pid")
        .exists()));
    let info = get_info(&state.join("api.sock"));
    assert!(
        info.contains(
            r#""networkDriver":{"driver":"vpnkit","dns":["192.168.65.1"],"childIP":"192.168.65.3"}"#
        ),
        "{info}"
    );
    // Without --disable-host-loopback there is no --host-ip.
    let logged = std::fs::read_to_string(&log).unwrap();
    let (pid, argv) = logged.lines().next().unwrap().split_once(' ').unwrap();
    assert!(argv.ends_with(" --mtu 1500"), "{argv}");
    assert!(ci::pid_alive(pid.parse().unwrap()));
    ci::send_signal(pid.parse().unwrap(), "KILL");
    // Reported once; the target keeps running and its exit code still comes through.
    assert!(ci::wait_until(Duration::from_secs(10), || !ci::pid_alive(
        pid.parse().unwrap()
    )));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(state.join("stop"), "").unwrap();
    let o = ci::wait_output(child.0.take().unwrap(), Duration::from_secs(20));
    assert_eq!(o.code, 7, "{}", o.stderr);
    assert_eq!(
        o.stderr
            .matches("network driver vpnkit exited while the target was running: signal: killed")
            .count(),
        1,
        "{}",
        o.stderr
    );
    assert!(!state.exists());
}

#[test]
fn vpnkit_mtu_warning_and_interface_name() {
    if !need_fake() {
        skip!("python3 (for the fake vpnkit), busybox or /dev/net/tun is missing");
    }
    let (_d, path) = with_fake("vpnkit-mtu");
    let o = rootlesskit([
        "--net=vpnkit",
        "--mtu=9000",
        "--ifname=eth7",
        "--disable-host-loopback",
        "cat",
        "/sys/class/net/eth7/mtu",
    ])
    .env("PATH", &path)
    .timeout(Duration::from_secs(40))
    .output();
    ok(&o);
    assert_eq!(o.stdout, "9000\n");
    assert!(
        o.stderr.contains(
            "vpnkit is known to have issues with non-1500 MTU (current: 9000), see https://github.com/rootless-containers/rootlesskit/issues/6#issuecomment-403531453"
        ),
        "{}",
        o.stderr
    );
}

#[test]
fn vpnkit_with_a_detached_netns() {
    if !need_fake() {
        skip!("python3 (for the fake vpnkit), busybox or /dev/net/tun is missing");
    }
    let (_d, path) = with_fake("vpnkit-detach");
    let o = rootlesskit([
        "--net=vpnkit",
        "--detach-netns",
        "--disable-host-loopback",
        "sh",
        "-c",
        "busybox nsenter --net=\"$ROOTLESSKIT_STATE_DIR/netns\" sh -c \
         'busybox ip link show tap0 | grep -o \"ether [^ ]*\"; \
          busybox ping -c 1 -W 5 192.168.65.1 | grep received'; \
         cat \"$ROOTLESSKIT_STATE_DIR/resolv.conf\"",
    ])
    .env("PATH", &path)
    .timeout(Duration::from_secs(40))
    .output();
    ok(&o);
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "ether 02:50:00:12:34:03", "{}", o.stdout);
    assert!(l[1].contains("1 packets received"), "{}", o.stdout);
    assert_eq!(l[2], "nameserver 192.168.65.1");
}

/// Runs as the test user with `$TMPDIR` in a fresh scratch dir, and checks that the run
/// failed with exactly one error line, `want`, and left no state dir.
fn assert_one_error(args: &[&str], env: &[(&str, &str)], want: &str) {
    let d = Scratch::new("vpnkit-err");
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    if let Some(u) = ci::test_user()
        && u.switch
    {
        std::os::unix::fs::chown(&tmp, Some(u.uid), Some(u.gid)).unwrap();
    }
    let mut run = rootlesskit(args.iter().copied())
        .env("TMPDIR", tmp.to_str().unwrap())
        .timeout(Duration::from_secs(40));
    for (k, v) in env {
        run = run.env(k, v);
    }
    let o = run.output();
    assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
    let errors: Vec<&str> = o.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{}", o.stderr);
    assert_eq!(errors[0], format!("[rootlesskit:parent] error: {want}"));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "{args:?} left a state dir"
    );
}

#[test]
fn a_missing_vpnkit_is_one_error_and_leaves_nothing() {
    let d = Scratch::new("vpnkit-none");
    let empty = d.path.display().to_string();
    assert_one_error(
        &["--net=vpnkit", "--disable-host-loopback", "true"],
        &[("PATH", &format!("{empty}:/usr/bin:/bin"))],
        r#"exec: "vpnkit": executable file not found in $PATH"#,
    );
    assert_one_error(
        &[
            "--net=vpnkit",
            "--vpnkit-binary=/nonexistent/vpnkit",
            "--disable-host-loopback",
            "true",
        ],
        &[],
        r#"exec: "/nonexistent/vpnkit": stat /nonexistent/vpnkit: no such file or directory"#,
    );
    assert_one_error(
        &["--net=vpnkit", "--cidr=10.0.2.0/24", "true"],
        &[],
        "custom cidr is not supported for --net=vpnkit",
    );
}

#[test]
fn a_vpnkit_that_fails_or_refuses_is_one_error_and_leaves_nothing() {
    if !Path::new(PYTHON).exists() || !tun_usable() {
        skip!("python3 (for the fake vpnkit) or /dev/net/tun is missing");
    }
    let (_d, path) = with_fake("vpnkit-fails");
    let o = rootlesskit([
        "--net=vpnkit",
        "--disable-host-loopback",
        "--state-dir=/tmp/rkrs-vpnkit-fails-state",
        "true",
    ])
    .env("PATH", &path)
    .env("FAKE_VPNKIT_FAIL", "cannot listen: address in use")
    .timeout(Duration::from_secs(40))
    .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        o.stderr.lines().last().unwrap_or(""),
        "[rootlesskit:parent] error: failed to setup network vpnkit: connecting to \
         /tmp/rkrs-vpnkit-fails-state/vpnkit-ethernet.sock: vpnkit failed (exit status 3); \
         last output: \"cannot listen: address in use\""
    );
    assert!(!Path::new("/tmp/rkrs-vpnkit-fails-state").exists());

    let o = rootlesskit(["--net=vpnkit", "--disable-host-loopback", "true"])
        .env("PATH", &path)
        .env("FAKE_VPNKIT_REFUSE", "no more addresses")
        .timeout(Duration::from_secs(40))
        .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    let last = o.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with(
            "[rootlesskit:parent] error: failed to setup network vpnkit: connecting to "
        ) && last.contains("/vpnkit-ethernet.sock with uuid ")
            && last.ends_with(": no more addresses"),
        "{}",
        o.stderr
    );
}

#[test]
// Tests run programs (strace here): that is their job.
#[allow(clippy::disallowed_methods)]
fn vpnkit_is_the_only_program_the_driver_runs() {
    // No ip, nsenter or shell: the tap, its MAC and its addresses are ioctl and rtnetlink.
    if !ci::am_root() {
        skip!("needs root to trace the unprivileged run");
    }
    if !Path::new("/usr/bin/strace").exists() || !need_fake() {
        skip!("strace, python3 (for the fake vpnkit), busybox or /dev/net/tun is missing");
    }
    let (d, path) = with_fake("vpnkit-strace");
    let log = d.join("trace");
    let (programs, trace) = ci::traced_rootlesskit(
        &log,
        &["--net=vpnkit", "--disable-host-loopback", "/bin/true"],
        &[("PATH", &path), ("HOME", "/")],
    );
    let allowed = [
        "getsubids",
        "newgidmap",
        "newuidmap",
        "rootlesskit",
        "rootlesskit-child",
        "setpriv",
        "true",
        "vpnkit",
    ];
    ci::assert_executed(&programs, &trace, &allowed, &["vpnkit"]);
}
