//! Network drivers as a user sees them, run as the unprivileged test user: the interface,
//! route, MTU and DNS inside, a TCP round trip to the host through the gateway, and
//! `--disable-host-loopback`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use ci::{have, ok, rootlesskit, routes, skip, tun_usable};

/// A one-shot echo server on host loopback; returns its port. It answers "pong:<line>".
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().take(4) {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = c.write_all(b"pong:");
            let _ = c.write_all(&buf[..n]);
        }
    });
    port
}

#[test]
fn slirp4netns_interface_route_mtu_dns_and_host_loopback() {
    if !have("slirp4netns") {
        skip!("slirp4netns is not installed");
    }
    if !tun_usable() {
        skip!("/dev/net/tun is not usable by the test user");
    }
    if !Path::new("/bin/busybox").exists() {
        skip!("busybox (for nc) is not installed");
    }
    let port = echo_server();
    let script = format!(
        "cat /etc/resolv.conf; echo --; cat /proc/net/route; echo --; cat /sys/class/net/tap0/mtu; \
         ls /sys/class/net; echo --; echo ping | busybox nc -w 5 10.0.2.2 {port}; echo; \
         echo --; stat -f -c %T /etc; tail -n 2 /etc/hosts"
    );
    let o = rootlesskit([
        "--net=slirp4netns",
        "--copy-up=/etc",
        "sh",
        "-c",
        script.as_str(),
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts[0], "nameserver 10.0.2.3\n");
    let r = routes(parts[1]);
    // Default route via 10.0.2.2 and the connected 10.0.2.0/24, both on tap0 (little-endian hex).
    assert!(
        r.contains(&("tap0".into(), "00000000".into(), "0202000A".into())),
        "{r:?}"
    );
    assert!(
        r.contains(&("tap0".into(), "0002000A".into(), "00000000".into())),
        "{r:?}"
    );
    let l: Vec<&str> = parts[2].lines().collect();
    assert_eq!(l[0], "65520");
    assert_eq!(l[1..], ["lo", "tap0"]);
    assert_eq!(
        parts[3].trim(),
        "pong:ping",
        "host loopback through the gateway"
    );
    let l: Vec<&str> = parts[4].lines().collect();
    assert_eq!(l[0], "tmpfs");
    assert!(
        l[1].starts_with("127.0.0.1 ") && l[2].starts_with("::1 "),
        "{l:?}"
    );

    // With --disable-host-loopback the same connection is refused.
    let port = echo_server();
    let o = rootlesskit([
        "--net=slirp4netns",
        "--disable-host-loopback",
        "--copy-up=/etc",
        "--mtu=1500",
        "--cidr=10.9.0.0/24",
        "sh",
        "-c",
        &format!(
            "cat /sys/class/net/tap0/mtu; grep -c . /etc/resolv.conf; cat /etc/resolv.conf; \
             echo ping | busybox nc -w 3 10.9.0.2 {port} && echo reached || echo refused"
        ),
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "1500");
    assert_eq!(l[2], "nameserver 10.9.0.3");
    assert_eq!(l.last().unwrap(), &"refused", "{}", o.stdout);
}

#[test]
fn slirp4netns_without_copy_up_warns_and_still_binds_resolv_conf() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let o = rootlesskit([
        "--net=slirp4netns",
        "--disable-host-loopback",
        "cat",
        "/etc/resolv.conf",
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    assert_eq!(o.stdout, "nameserver 10.0.2.3\n");
    assert!(
        o.stderr
            .contains("Mounting /etc/resolv.conf without copying-up /etc"),
        "{}",
        o.stderr
    );
    // The host's file is untouched.
    assert_ne!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        "nameserver 10.0.2.3\n"
    );
}

#[test]
fn slirp4netns_ipv6_adds_the_v6_dns() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let o = rootlesskit([
        "--net=slirp4netns",
        "--ipv6",
        "--disable-host-loopback",
        "--copy-up=/etc",
        "cat",
        "/etc/resolv.conf",
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    assert_eq!(o.stdout, "nameserver 10.0.2.3\nnameserver fd00::3\n");
}

#[test]
fn pasta_configures_its_own_interface() {
    if !have("pasta") {
        skip!("pasta is not installed");
    }
    if !tun_usable() {
        skip!("/dev/net/tun is not usable by the test user");
    }
    let o = rootlesskit([
        "--net=pasta",
        "--copy-up=/etc",
        "--disable-host-loopback",
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo --; cat /proc/net/route; echo --; cat /sys/class/net/tap0/mtu",
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts[0], "nameserver 10.0.2.3\n");
    let r = routes(parts[1]);
    assert!(
        r.contains(&("tap0".into(), "00000000".into(), "0202000A".into())),
        "{r:?}"
    );
    assert_eq!(parts[2].trim(), "65520");
}

#[test]
fn a_missing_driver_binary_is_one_clear_error() {
    let d = ci::Scratch::new("nodriver");
    let o = rootlesskit([
        "--net=slirp4netns",
        "--slirp4netns-binary=/nonexistent/slirp4netns",
        "true",
    ])
    .env("TMPDIR", d.path.to_str().unwrap())
    .output();
    assert_eq!(o.code, 1);
    let last = o.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("[rootlesskit:parent] error: ")
            && last.contains("/nonexistent/slirp4netns"),
        "{}",
        o.stderr
    );
    assert_eq!(
        std::fs::read_dir(&d.path).unwrap().count(),
        0,
        "state dir left behind"
    );
}

/// The command name of a process.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn slirp4netns_dying_under_a_running_target_is_reported() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let d = ci::Scratch::new("driverdies");
    let state = d.join("state");
    let child = rootlesskit([
        format!("--state-dir={}", state.display()).as_str(),
        "--net=slirp4netns",
        "--disable-host-loopback",
        "sh",
        "-c",
        "sleep 2; exit 7",
    ])
    .spawn();
    assert!(ci::wait_until(Duration::from_secs(10), || state
        .join("child_pid")
        .exists()));
    let slirp: Vec<u32> = ci::children_of(child.id())
        .into_iter()
        .filter(|p| comm(*p) == "slirp4netns")
        .collect();
    assert_eq!(slirp.len(), 1, "one slirp4netns under rootlesskit");
    ci::send_signal(slirp[0], "KILL");
    let o = ci::wait_output(child, Duration::from_secs(20));
    // The target keeps running (as upstream) and its exit code still comes through.
    assert_eq!(o.code, 7, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "network driver slirp4netns exited while the target was running: signal: killed"
        ),
        "{}",
        o.stderr
    );
    assert!(!state.exists());
}

/// The real slirp4netns, a second late (its probes are not).
const SLOW_SLIRP4NETNS: &str = "#!/bin/sh\ncase \"$1\" in --help|--version) exec slirp4netns \"$@\";; esac\nsleep 1\nexec slirp4netns \"$@\"\n";

#[test]
fn a_harmless_signal_during_the_driver_start_does_not_stall_it() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let d = ci::Scratch::new("winch");
    // The real slirp4netns, a second late: time for a SIGWINCH (a terminal resized) to land
    // while rootlesskit waits for it to be ready.
    let slow = d.script("slow-slirp4netns", SLOW_SLIRP4NETNS);
    let child = rootlesskit([
        format!("--state-dir={}", d.join("state").display()),
        "--net=slirp4netns".into(),
        format!("--slirp4netns-binary={}", slow.display()),
        "--disable-host-loopback".into(),
        "sh".into(),
        "-c".into(),
        "exit 5".into(),
    ])
    .spawn();
    std::thread::sleep(Duration::from_millis(400));
    ci::send_signal(child.id(), "WINCH");
    // Before the fix the parent took the signal for the child's end and waited for it forever.
    let o = ci::wait_output(child, Duration::from_secs(20));
    assert_eq!(o.code, 5, "{}", o.stderr);
}

#[test]
fn a_child_failure_during_the_driver_start_gives_its_reason() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let d = ci::Scratch::new("childfails");
    // The child does its copy-up while the driver starts; a slow driver makes sure the copy-up
    // fails (and the child exits) while rootlesskit is still waiting for the driver.
    let slow = d.script("slow-slirp4netns", SLOW_SLIRP4NETNS);
    let state = d.join("state");
    let o = rootlesskit([
        format!("--state-dir={}", state.display()),
        "--net=slirp4netns".into(),
        format!("--slirp4netns-binary={}", slow.display()),
        "--copy-up=/nonexistent-rkrs".into(),
        "true".into(),
    ])
    .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    let last = o.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("[rootlesskit:child ] error: ")
            && last.contains("/nonexistent-rkrs: no such file or directory"),
        "the child's reason, not only its exit: {}",
        o.stderr
    );
    assert!(!state.exists(), "state dir left behind");
}

#[test]
fn a_slirp4netns_probe_failure_is_one_line_and_leaves_nothing() {
    let d = ci::Scratch::new("probefails");
    // The probe runs while the child is made, so its failure comes after that: it must still
    // read as upstream's one line, and take the child and the state dir with it.
    for (script, want) in [
        (
            "#!/bin/sh\necho 'Usage: slirp4netns [OPTION]... PID|PATH [TAPNAME]'\n",
            "slirp4netns seems older than v0.4.0".to_string(),
        ),
        (
            "#!/bin/sh\necho broken >&2\nexit 3\n",
            format!(
                "command \"{}\" failed, make sure slirp4netns v0.4.0+ is installed: \"broken\\n\": exit status 3",
                format_args!("{} --help", d.join("fake-slirp4netns").display())
            ),
        ),
        (
            "#!/bin/sh\necho '--netns-type --cidr --api-socket --enable-sandbox --enable-seccomp'\n",
            "unsupported slirp4netns version: lacks SupportsDisableHostLoopback".to_string(),
        ),
    ] {
        let fake = d.script("fake-slirp4netns", script);
        let state = d.join("state");
        let o = rootlesskit([
            format!("--state-dir={}", state.display()),
            "--net=slirp4netns".into(),
            format!("--slirp4netns-binary={}", fake.display()),
            "--disable-host-loopback".into(),
            "true".into(),
        ])
        .output();
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert_eq!(
            o.stderr.lines().last().unwrap_or(""),
            format!("[rootlesskit:parent] error: {want}"),
            "{}",
            o.stderr
        );
        assert!(!state.exists(), "state dir left behind");
    }
}

/// A one-shot echo server on host IPv6 loopback; returns its port, or `None` without IPv6.
fn echo_server_v6() -> Option<u16> {
    let l = TcpListener::bind("[::1]:0").ok()?;
    let port = l.local_addr().ok()?.port();
    std::thread::spawn(move || {
        if let Some(Ok(mut c)) = l.incoming().next() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = c.write_all(b"pong6:");
            let _ = c.write_all(&buf[..n]);
        }
    });
    Some(port)
}

#[test]
fn slirp4netns_ipv6_address_route_and_host_loopback() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    if !Path::new("/bin/busybox").exists() {
        skip!("busybox (for nc) is not installed");
    }
    let Some(port) = echo_server_v6() else {
        skip!("the host has no IPv6 loopback");
    };
    // slirp4netns announces fd00::/64; the kernel configures the address by SLAAC.
    let script = format!(
        "for i in $(seq 100); do grep -q '^fd00.* tap0$' /proc/net/if_inet6 && break; sleep 0.05; done; \
         grep ' tap0$' /proc/net/if_inet6 | cut -c1-4; echo --; \
         echo ping | busybox nc -w 5 fd00::2 {port}; echo"
    );
    let o = rootlesskit([
        "--net=slirp4netns",
        "--ipv6",
        "--copy-up=/etc",
        "sh",
        "-c",
        script.as_str(),
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let (addrs, reply) = o.stdout.split_once("--\n").unwrap();
    assert!(
        addrs.lines().any(|l| l == "fd00"),
        "no fd00:: address: {}",
        o.stdout
    );
    assert_eq!(reply.trim(), "pong6:ping", "host ::1 through fd00::2");
}

#[test]
fn bad_network_flags_fail_cleanly_and_leave_nothing() {
    let d = ci::Scratch::new("badnet");
    for (args, want) in [
        (
            &["--net=slirp4netns", "--cidr=10.0.2.100/24", "true"][..],
            "cidr must be like 10.0.2.0/24, not like 10.0.2.100/24",
        ),
        (
            &["--net=slirp4netns", "--cidr=10.0.2.0/33", "true"][..],
            "invalid CIDR address: 10.0.2.0/33",
        ),
        (
            &["--net=slirp4netns", "--ifname=a/b", "true"][..],
            "ifname must not contain \"/\"",
        ),
        (
            &["--net=slirp4netns", "--mtu=-1", "true"][..],
            "mtu must be <= 65521, got -1",
        ),
        (
            &["--net=pasta", "--port-driver=builtin", "true"][..],
            "network \"pasta\" requires port driver \"none\" or \"implicit\"",
        ),
        (
            &[
                "--net=slirp4netns",
                "--port-driver=gvisor-tap-vsock",
                "true",
            ][..],
            "port driver requires gvisor-tap-vsock network",
        ),
        (
            &["--net=slirp4netns", "--port-driver=pesto", "true"][..],
            "port driver requires pasta network",
        ),
        (
            &["--net=vpnkit", "--cidr=10.0.2.0/24", "true"][..],
            "custom cidr is not supported for --net=vpnkit",
        ),
        (
            &["--net=host", "--port-driver=implicit", "true"][..],
            "port driver requires pasta network",
        ),
    ] {
        ci::assert_rejected(args, want, &d.path);
    }
}

#[test]
fn pasta_implicit_port_driver_forwards_what_the_target_listens_on() {
    if !have("pasta") || !tun_usable() {
        skip!("pasta or /dev/net/tun is not available");
    }
    if !Path::new("/bin/busybox").exists() {
        skip!("busybox (for httpd) is not installed");
    }
    let d = ci::Scratch::new("implicit");
    std::fs::write(d.join("index.html"), "hello through pasta\n").unwrap();
    let state = d.join("state");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = rootlesskit([
        format!("--state-dir={}", state.display()),
        "--net=pasta".into(),
        "--port-driver=implicit".into(),
        "--disable-host-loopback".into(),
        "busybox".into(),
        "httpd".into(),
        "-f".into(),
        "-p".into(),
        port.to_string(),
        "-h".into(),
        d.path.display().to_string(),
    ])
    .spawn();
    // pasta notices new listeners in the namespace on its own, within a second or two.
    let get = || -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let mut reply = None;
    assert!(ci::wait_until(Duration::from_secs(15), || {
        reply = get().filter(|r| r.contains("hello through pasta"));
        reply.is_some()
    }));
    // No port driver object: the API says so, as upstream's does.
    let o = ci::Run::bin("rootlessctl")
        .args([
            format!("--socket={}", state.join("api.sock").display()),
            "list-ports".into(),
        ])
        .output();
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.trim(), "error: no PortDriver is available");
    ci::send_signal(child.id(), "TERM");
    let _ = ci::wait_output(child, Duration::from_secs(10));
}

/// Pids of live pasta processes whose command line mentions `needle` (the state dir: pasta's
/// `--pid` argument is in it). Debian's pasta is a link to passt, which re-executes itself as
/// `passt.avx2` where it can, so the command name can be either.
fn pastas_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if (comm.starts_with("pasta") || comm.starts_with("passt"))
            && let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
            && ci::pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn sigkill_of_rootlesskit_leaves_no_pasta_behind() {
    if !have("pasta") || !tun_usable() {
        skip!("pasta or /dev/net/tun is not available");
    }
    let d = ci::Scratch::new("pasta-sigkill");
    let state = d.join("state");
    let needle = state.display().to_string();
    let child = rootlesskit([
        format!("--state-dir={needle}"),
        "--net=pasta".into(),
        "--port-driver=implicit".into(),
        "--disable-host-loopback".into(),
        "sleep".into(),
        "60".into(),
    ])
    .spawn();
    assert!(
        ci::wait_until(Duration::from_secs(15), || state.join("child_pid").exists()),
        "rootlesskit did not get ready"
    );
    let running = pastas_mentioning(&needle);
    ci::send_signal(child.id(), "KILL");
    let _ = ci::wait_output(child, Duration::from_secs(10));
    assert_eq!(
        running.len(),
        1,
        "pasta ran while the target did: {running:?}"
    );
    assert!(
        ci::wait_until(Duration::from_secs(5), || pastas_mentioning(&needle)
            .is_empty()),
        "pasta survived SIGKILL of rootlesskit: {:?}",
        pastas_mentioning(&needle)
    );
}

#[test]
fn pasta_dying_under_a_running_target_is_reported() {
    if !have("pasta") || !tun_usable() {
        skip!("pasta or /dev/net/tun is not available");
    }
    let d = ci::Scratch::new("pasta-dies");
    let state = d.join("state");
    let needle = state.display().to_string();
    let child = rootlesskit([
        format!("--state-dir={needle}"),
        "--net=pasta".into(),
        "sleep".into(),
        "60".into(),
    ])
    .spawn();
    assert!(
        ci::wait_until(Duration::from_secs(15), || state.join("child_pid").exists()),
        "rootlesskit did not get ready"
    );
    let running = pastas_mentioning(&needle);
    for pid in &running {
        ci::send_signal(*pid, "KILL");
    }
    // As upstream, the target keeps running without a network; rootlesskit says so once.
    std::thread::sleep(Duration::from_millis(500));
    ci::send_signal(child.id(), "TERM");
    let o = ci::wait_output(child, Duration::from_secs(10));
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(
        o.stderr
            .contains("network driver pasta exited while the target was running: signal: killed"),
        "{}",
        o.stderr
    );
}
