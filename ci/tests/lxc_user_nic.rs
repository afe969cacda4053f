//! `--net=lxc-user-nic` as the unprivileged test user sees it: LXC's setuid helper attaches a
//! veth to `lxcbr0`, the child gets address, route and DNS from lxc-net's dnsmasq by DHCP, and a
//! TCP connection reaches a host listener on the bridge address. Needs the `lxc` package, a
//! running `lxcbr0` (`lxc-net start`) and an `/etc/lxc/lxc-usernet` line for the test user, as
//! `.ci/run` sets up; the flag checks run anywhere.
// The bridge address is read with `ip` on the host side; the test runs programs by design.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use ci::{ok, rootlesskit, skip};

/// Where Debian (and Fedora) install the helper; the default of `--lxc-user-nic-binary` here.
const HELPER: &str = "/usr/libexec/lxc/lxc-user-nic";
const BRIDGE: &str = "lxcbr0";

/// The bridge's IPv4 address and prefix on the host, from `ip -4 -o addr show dev lxcbr0`.
fn bridge_addr() -> Option<(Ipv4Addr, u8)> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", BRIDGE])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    let (ip, prefix) = cidr.split_once('/')?;
    Some((ip.parse().ok()?, prefix.parse().ok()?))
}

/// Whether `/etc/lxc/lxc-usernet` lets `user` add veths to the bridge.
fn usernet_allows(user: &str) -> bool {
    std::fs::read_to_string("/etc/lxc/lxc-usernet").is_ok_and(|t| {
        t.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 4 && f[0] == user && f[1] == "veth" && f[2] == BRIDGE
        })
    })
}

/// The bridge address, or why this machine cannot run the DHCP tests.
fn lxc_ready() -> Result<(Ipv4Addr, u8), String> {
    if !Path::new(HELPER).exists() {
        return Err(format!("{HELPER} is not installed (apt-get install lxc)"));
    }
    let user = ci::test_user().ok_or("no test user")?;
    if !usernet_allows(&user.name) {
        return Err(format!(
            "/etc/lxc/lxc-usernet has no \"{} veth {BRIDGE} <n>\" line",
            user.name
        ));
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("busybox (for ip and nc) is not installed".into());
    }
    bridge_addr().ok_or_else(|| format!("{BRIDGE} has no IPv4 address (run lxc-net start)"))
}

fn in_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// Little-endian hex of an address, as /proc/net/route prints it.
fn route_hex(a: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_le_bytes(a.octets()))
}

#[test]
fn lxc_user_nic_gets_address_route_mtu_and_dns_by_dhcp() {
    let (bridge, prefix) = match lxc_ready() {
        Ok(b) => b,
        Err(why) => skip!("{why}"),
    };
    // A one-shot echo server on the bridge address.
    let listener = TcpListener::bind((bridge, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        c.write_all(b"pong:").unwrap();
        c.write_all(&buf[..n]).unwrap();
    });
    let rootlessctl = ci::bin_dir().join("rootlessctl");
    let script = format!(
        "cat /etc/resolv.conf; echo --; cat /proc/net/route; echo --; \
         cat /sys/class/net/eth0/mtu; echo --; busybox ip -4 -o addr show dev eth0; echo --; \
         echo ping | busybox nc -w 10 {bridge} {port}; echo; echo --; {} info --json",
        rootlessctl.display()
    );
    let o = rootlesskit([
        "--net=lxc-user-nic",
        "--copy-up=/etc",
        "--disable-host-loopback",
        "sh",
        "-c",
        script.as_str(),
    ])
    .timeout(Duration::from_secs(60))
    .output();
    ok(&o);
    assert!(
        o.stderr
            .contains("\"lxc-user-nic\" network driver is experimental"),
        "{}",
        o.stderr
    );
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts.len(), 6, "{}", o.stdout);
    assert_eq!(parts[0], format!("nameserver {bridge}\n"), "resolv.conf");
    let r = ci::routes(parts[1]);
    assert!(
        r.contains(&("eth0".into(), "00000000".into(), route_hex(bridge))),
        "default route via the bridge: {r:?}"
    );
    assert_eq!(parts[2].trim(), "1500", "default MTU");
    // "2: eth0    inet 10.0.3.42/24 brd ... scope global eth0"
    let cidr = parts[3]
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no inet address on eth0: {}", parts[3]));
    let (ip, p) = cidr.split_once('/').unwrap();
    let ip: Ipv4Addr = ip.parse().unwrap();
    assert_eq!(p, prefix.to_string(), "prefix from the lease");
    assert!(
        in_subnet(ip, bridge, prefix) && ip != bridge,
        "{ip} is not in {bridge}/{prefix}"
    );
    assert_eq!(parts[4].trim(), "pong:ping", "TCP round trip to the bridge");
    server.join().unwrap();
    // rootlessctl indents its JSON; compare without the layout.
    let info: String = parts[5].split_whitespace().collect();
    for want in [
        "\"driver\":\"lxc-user-nic\"".to_string(),
        "\"dynamicChildIP\":true".to_string(),
        format!("\"childIP\":\"{ip}\""),
        format!("\"dns\":[\"{bridge}\"]"),
    ] {
        assert!(info.contains(&want), "{want} not in {info}");
    }
}

/// Pids of `rootlesskit-unshare --hold-net` processes for a state dir under `dir`.
fn holders_under(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let dir = dir.to_string_lossy();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("--hold-net") && c.contains(dir.as_ref())
            })
        })
        .collect()
}

#[test]
fn lxc_user_nic_with_detach_netns() {
    let (bridge, prefix) = match lxc_ready() {
        Ok(b) => b,
        Err(why) => skip!("{why}"),
    };
    let listener = TcpListener::bind((bridge, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        c.write_all(b"pong:").unwrap();
        c.write_all(&buf[..n]).unwrap();
    });
    // The target stays in the host's namespace and enters the detached one, as dockerd does.
    let script = format!(
        "cat $ROOTLESSKIT_STATE_DIR/resolv.conf; echo --;          nsenter --net=$ROOTLESSKIT_STATE_DIR/netns sh -c          'cat /proc/net/route; echo --; busybox ip -4 -o addr show dev eth0; echo --;           echo ping | busybox nc -w 10 {bridge} {port}; echo'"
    );
    let d = ci::Scratch::new("lxcdetach");
    let o = rootlesskit([
        "--net=lxc-user-nic",
        "--detach-netns",
        "--disable-host-loopback",
        "sh",
        "-c",
        script.as_str(),
    ])
    .env("TMPDIR", d.path.to_str().unwrap())
    .timeout(Duration::from_secs(60))
    .output();
    ok(&o);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts.len(), 4, "{}", o.stdout);
    assert_eq!(
        parts[0],
        format!("nameserver {bridge}\n"),
        "state dir resolv.conf"
    );
    let r = ci::routes(parts[1]);
    assert!(
        r.contains(&("eth0".into(), "00000000".into(), route_hex(bridge))),
        "{r:?}"
    );
    let cidr = parts[2]
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no inet address on eth0: {}", parts[2]));
    let ip: Ipv4Addr = cidr.split_once('/').unwrap().0.parse().unwrap();
    assert!(
        in_subnet(ip, bridge, prefix),
        "{ip} not in {bridge}/{prefix}"
    );
    assert_eq!(parts[3].trim(), "pong:ping");
    server.join().unwrap();
    // The process parked in the namespace for lxc-user-nic is gone with rootlesskit.
    assert!(
        ci::wait_until(Duration::from_secs(5), || holders_under(&d.path).is_empty()),
        "rootlesskit-unshare --hold-net was left running"
    );
}

#[test]
fn lxc_user_nic_with_the_builtin_port_driver() {
    if let Err(why) = lxc_ready() {
        skip!("{why}");
    }
    // A free port on the host, released for rootlesskit to publish.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:80/tcp");
    let mut child = rootlesskit([
        "--net=lxc-user-nic",
        "--disable-host-loopback",
        "--port-driver=builtin",
        "-p",
        publish.as_str(),
        "busybox",
        "nc",
        "-l",
        "-p",
        "80",
        "-e",
        "echo",
        "hello-from-the-namespace",
    ])
    .spawn();
    let mut reply = String::new();
    let reached = ci::wait_until(Duration::from_secs(20), || {
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        reply.clear();
        c.read_to_string(&mut reply).is_ok() && !reply.is_empty()
    });
    if !reached {
        let _ = child.kill();
    }
    // The target served one connection and exited, and rootlesskit with it.
    let o = ci::wait_output(child, Duration::from_secs(20));
    assert!(reached, "no reply through the published port: {}", o.stderr);
    assert_eq!(reply.trim(), "hello-from-the-namespace");
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn lxc_user_nic_honours_mtu_and_ifname() {
    let (bridge, _) = match lxc_ready() {
        Ok(b) => b,
        Err(why) => skip!("{why}"),
    };
    let o = rootlesskit([
        "--net=lxc-user-nic",
        "--copy-up=/etc",
        "--disable-host-loopback",
        "--mtu=1400",
        "--ifname=veth7",
        "sh",
        "-c",
        "cat /sys/class/net/veth7/mtu; ls /sys/class/net; cat /proc/net/route",
    ])
    .timeout(Duration::from_secs(60))
    .output();
    ok(&o);
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "1400");
    assert_eq!(l[1..3], ["lo", "veth7"]);
    let r = ci::routes(&l[3..].join("\n"));
    assert!(
        r.contains(&("veth7".into(), "00000000".into(), route_hex(bridge))),
        "{r:?}"
    );
}

#[test]
fn lxc_user_nic_failure_is_one_line_and_leaves_nothing() {
    if let Err(why) = lxc_ready() {
        skip!("{why}");
    }
    // The helper refuses a bridge that /etc/lxc/lxc-usernet does not grant; with
    // --detach-netns the process parked in the namespace for it goes too.
    for detach in [false, true] {
        let d = ci::Scratch::new("lxcfail");
        let mut args = vec![
            "--net=lxc-user-nic",
            "--disable-host-loopback",
            "--lxc-user-nic-bridge=rkrsnobr0",
        ];
        if detach {
            args.push("--detach-netns");
        }
        args.push("true");
        let o = rootlesskit(args)
            .env("TMPDIR", d.path.to_str().unwrap())
            .timeout(Duration::from_secs(30))
            .output();
        assert_eq!(o.code, 1, "{}", o.stderr);
        let errors: Vec<&str> = o
            .stderr
            .lines()
            .filter(|l| l.contains(" error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{}", o.stderr);
        let want = format!(
            "[rootlesskit:parent] error: failed to setup network lxc-user-nic: {HELPER} failed: "
        );
        assert!(
            errors[0].starts_with(&want) && errors[0].ends_with(": exit status 1"),
            "{}",
            o.stderr
        );
        assert_eq!(
            std::fs::read_dir(&d.path).unwrap().count(),
            0,
            "a state dir was left"
        );
        assert!(
            holders_under(&d.path).is_empty(),
            "rootlesskit-unshare --hold-net was left running"
        );
    }
}

#[test]
fn lxc_user_nic_without_a_dhcp_server_times_out_with_one_line() {
    const DEAD: &str = "rkrsnodhcp0";
    if let Err(why) = extra_bridge(DEAD) {
        skip!("{why}");
    }
    let d = ci::Scratch::new("lxcnodhcp");
    let started = std::time::Instant::now();
    let o = rootlesskit([
        "--net=lxc-user-nic",
        "--disable-host-loopback",
        &format!("--lxc-user-nic-bridge={DEAD}"),
        "true",
    ])
    .env("TMPDIR", d.path.to_str().unwrap())
    .timeout(Duration::from_secs(60))
    .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains(" error: "))
        .collect();
    assert_eq!(
        errors,
        [
            "[rootlesskit:child ] error: could not exchange DHCP with eth0: timed out waiting for DHCPOFFER"
        ],
        "{}",
        o.stderr
    );
    // Four DISCOVERs, 2 + 4 + 8 + 16 s apart: about upstream's 30 s read timeout.
    assert!(
        started.elapsed() >= Duration::from_secs(29),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read_dir(&d.path).unwrap().count(), 0);
}

/// Whether `bridge` exists and `/etc/lxc/lxc-usernet` grants it to the test user.
fn extra_bridge(bridge: &str) -> Result<(), String> {
    lxc_ready()?;
    let user = ci::test_user().ok_or("no test user")?;
    let granted = std::fs::read_to_string("/etc/lxc/lxc-usernet").is_ok_and(|t| {
        t.lines().any(|l| {
            l.split_whitespace()
                .take(3)
                .eq([user.name.as_str(), "veth", bridge])
        })
    });
    if !Path::new("/sys/class/net").join(bridge).exists() || !granted {
        return Err(format!(
            "no bridge {bridge} granted to {} (see .ci/run)",
            user.name
        ));
    }
    Ok(())
}

#[test]
fn lxc_user_nic_renews_the_lease() {
    // .ci/run serves 2-minute leases on this bridge; the child renews at 0.9 x 120 s.
    const SHORT: &str = "rkrslease0";
    const LEASES: &str = "/var/lib/misc/dnsmasq.rkrslease0.leases";
    if let Err(why) = extra_bridge(SHORT) {
        skip!("{why}");
    }
    let epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let started = epoch();
    let o = rootlesskit([
        "--net=lxc-user-nic",
        "--disable-host-loopback",
        &format!("--lxc-user-nic-bridge={SHORT}"),
        "sh",
        "-c",
        "busybox ip -4 -o addr show dev eth0; sleep 118",
    ])
    .timeout(Duration::from_secs(200))
    .output();
    ok(&o);
    assert!(!o.stderr.contains("DHCP renewal"), "{}", o.stderr);
    let ip = o
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split_once('/'))
        .map(|(ip, _)| ip.to_string())
        .unwrap_or_else(|| panic!("no address: {}", o.stdout));
    // dnsmasq's lease file: "<expiry epoch> <mac> <ip> <name> <client id>".
    let leases = std::fs::read_to_string(LEASES).unwrap();
    let expiry: u64 = leases
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(ip.as_str()))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{ip} not in {LEASES}: {leases}"));
    // The first lease ended about 2 minutes after the start; a renewal near 108 s pushed it
    // to about 228 s.
    assert!(
        expiry >= started + 200,
        "lease of {ip} expires {}s after the start: not renewed",
        expiry.saturating_sub(started)
    );
}

#[test]
fn lxc_user_nic_helper_that_fails_gives_its_output_and_status() {
    let d = ci::Scratch::new("lxcfalse");
    let o = rootlesskit([
        "--net=lxc-user-nic",
        "--disable-host-loopback",
        "--lxc-user-nic-binary=/bin/false",
        "true",
    ])
    .env("TMPDIR", d.path.to_str().unwrap())
    .timeout(Duration::from_secs(30))
    .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        o.stderr.lines().last().unwrap_or(""),
        "[rootlesskit:parent] error: failed to setup network lxc-user-nic: /bin/false failed: : exit status 1"
    );
    assert_eq!(std::fs::read_dir(&d.path).unwrap().count(), 0);
}

#[test]
fn lxc_user_nic_bad_flags_fail_cleanly_and_leave_nothing() {
    let d = ci::Scratch::new("lxcflags");
    for (args, want) in [
        (
            &["--net=lxc-user-nic", "--cidr=10.0.3.0/24", "true"][..],
            "custom cidr is not supported for --net=lxc-user-nic",
        ),
        (
            &["--net=lxc-user-nic", "--ifname=a/b", "true"][..],
            "ifname must not contain \"/\"",
        ),
        (
            &["--net=lxc-user-nic", "--port-driver=slirp4netns", "true"][..],
            "port driver requires slirp4netns network",
        ),
        (
            &[
                "--net=lxc-user-nic",
                "--lxc-user-nic-binary=/nonexistent/lxc-user-nic",
                "true",
            ][..],
            "exec: \"/nonexistent/lxc-user-nic\": stat /nonexistent/lxc-user-nic: no such file or directory",
        ),
        (
            &[
                "--net=lxc-user-nic",
                "--lxc-user-nic-binary=/bin/true",
                "--lxc-user-nic-bridge=",
                "true",
            ][..],
            "got empty bridge",
        ),
    ] {
        ci::assert_rejected(args, want, &d.path);
    }
}

#[test]
fn lxc_user_nic_warnings_come_first() {
    let d = ci::Scratch::new("lxcwarn");
    let o = rootlesskit([
        "--net=lxc-user-nic",
        "--lxc-user-nic-binary=/bin/false",
        "true",
    ])
    .env("TMPDIR", d.path.to_str().unwrap())
    .output();
    assert_eq!(o.code, 1);
    let warnings = ci::parent_warnings(&o.stderr);
    for w in [
        "\"lxc-user-nic\" network driver is experimental",
        "--disable-host-loopback is implicitly set for lxc-user-nic",
    ] {
        assert!(warnings.contains(&w), "{w} missing: {}", o.stderr);
    }
}
