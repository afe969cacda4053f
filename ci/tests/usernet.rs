//! `--net=gvisor-tap-vsock`, our in-process user-mode network, as a user sees it, run as the
//! unprivileged test user: the interface, route, MTU and DNS inside, ping of the gateway, TCP
//! both ways to a host listener through the gateway (sha256- and byte-checked, then a 50-way
//! burst), UDP, DNS through a resolver the test starts, `--disable-host-loopback`, a custom
//! cidr, `--detach-netns`, the builtin port driver on top, and SIGKILL leaving nothing.
// Tests run programs (sha256sum, and unshare for a private /etc/resolv.conf): that is their job.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ci::{Output, Scratch, have, ok, rootlesskit, routes, skip, tun_usable};

/// Skips unless the tap and busybox are there.
macro_rules! need_tap_and_busybox {
    () => {
        if !tun_usable() {
            skip!("/dev/net/tun is not usable by the test user");
        }
        if !Path::new("/bin/busybox").exists() {
            skip!("busybox is not installed");
        }
    };
}

/// `rootlesskit --net=gvisor-tap-vsock ARGS... sh -c SCRIPT`, checked for success.
fn run(args: &[&str], script: &str) -> Output {
    let mut all = vec!["--net=gvisor-tap-vsock"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["sh", "-c", script]);
    let o = rootlesskit(all).timeout(Duration::from_secs(90)).output();
    ok(&o);
    o
}

/// `n` bytes of a fixed pseudo-random stream, so both ends know what must arrive.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The sha256 of a file, by the host's `sha256sum`.
fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A host listener on 127.0.0.1 that answers "pong:<what it read>" to each connection.
fn pong_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    ci::serve_pong(l);
    port
}

/// A host listener that sends `data` to each connection and closes it.
fn source_server(data: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let data = std::sync::Arc::new(data);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let data = data.clone();
            std::thread::spawn(move || {
                let _ = c.write_all(&data);
            });
        }
    });
    port
}

/// A host listener that reads each connection to its end, compares it byte for byte with
/// `want` and answers "same <n>" or "differs <n>".
fn sink_server(want: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let want = std::sync::Arc::new(want);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let want = want.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
                let mut got = Vec::with_capacity(want.len());
                let _ = c.read_to_end(&mut got);
                let verdict = if got == *want { "same" } else { "differs" };
                let _ = c.write_all(format!("{verdict} {}\n", got.len()).as_bytes());
            });
        }
    });
    port
}

#[test]
fn interface_route_mtu_dns_ping_and_info() {
    need_tap_and_busybox!();
    let ctl = ci::bin_dir().join("rootlessctl");
    let script = format!(
        "cat /etc/resolv.conf; echo --; cat /proc/net/route; echo --; cat /sys/class/net/tap0/mtu; \
         cat /sys/class/net/tap0/address; ls /sys/class/net; echo --; cat /proc/net/fib_trie; echo --; \
         busybox ping -c 2 -W 5 10.0.2.1 >/dev/null && echo ping-ok; echo --; \
         {} --socket=$ROOTLESSKIT_STATE_DIR/api.sock info --json",
        ctl.display()
    );
    let o = run(&["--copy-up=/etc"], &script);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts.len(), 6, "{}", o.stdout);
    assert_eq!(parts[0], "nameserver 10.0.2.1\n");
    let r = routes(parts[1]);
    // Default route via 10.0.2.1 and the connected 10.0.2.0/24, on tap0 (little-endian hex).
    assert!(
        r.contains(&("tap0".into(), "00000000".into(), "0102000A".into())),
        "{r:?}"
    );
    assert!(
        r.contains(&("tap0".into(), "0002000A".into(), "00000000".into())),
        "{r:?}"
    );
    let l: Vec<&str> = parts[2].lines().collect();
    assert_eq!(l[0], "65520");
    assert_eq!(l[1], "5a:94:ef:e4:0c:ee");
    assert_eq!(l[2..], ["lo", "tap0"]);
    // In the local table: "|-- 10.0.2.100" then "/32 host LOCAL".
    let trie: Vec<&str> = parts[3].lines().map(str::trim).collect();
    assert!(
        trie.windows(2)
            .any(|w| w == ["|-- 10.0.2.100", "/32 host LOCAL"]),
        "{}",
        parts[3]
    );
    assert_eq!(parts[4].trim(), "ping-ok", "{}", o.stderr);
    let info: String = parts[5].split_whitespace().collect();
    assert!(
        info.contains(r#""driver":"gvisor-tap-vsock""#)
            && info.contains(r#""childIP":"10.0.2.100""#)
            && info.contains(r#""dns":["10.0.2.1"]"#),
        "{info}"
    );
}

#[test]
fn tcp_both_ways_through_the_gateway_then_a_burst() {
    need_tap_and_busybox!();
    let d = Scratch::new("usernet-tcp");
    let one = pattern(1 << 20, 7);
    let file = d.join("one");
    std::fs::write(&file, &one).unwrap();
    let sum = sha256(&file);
    assert_eq!(sum.len(), 64);
    let down = source_server(one.clone());
    let up = sink_server(one);
    let script = format!(
        "busybox nc 10.0.2.1 {down} </dev/null | busybox sha256sum; echo --; \
         busybox nc 10.0.2.1 {up} < {file}",
        file = file.display()
    );
    let o = run(&[], &script);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(
        parts[0].split_whitespace().next(),
        Some(sum.as_str()),
        "download: {}",
        o.stdout
    );
    assert_eq!(parts[1].trim(), format!("same {}", 1 << 20), "upload");

    // 50 connections at once, 10 MB each, half of them each way.
    let ten = pattern(10 << 20, 11);
    let file = d.join("ten");
    std::fs::write(&file, &ten).unwrap();
    let sum = sha256(&file);
    let down = source_server(ten.clone());
    let up = sink_server(ten);
    let script = format!(
        "cd {dir}; for i in $(busybox seq 25); do \
         (busybox nc 10.0.2.1 {down} </dev/null | busybox sha256sum > down.$i) & \
         busybox nc 10.0.2.1 {up} < ten > up.$i & done; wait; \
         cat down.*; echo --; cat up.*",
        dir = d.path.display()
    );
    let start = std::time::Instant::now();
    let o = run(&[], &script);
    eprintln!("50 x 10 MB took {:?}", start.elapsed());
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    let downs: Vec<&str> = parts[0]
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(downs, vec![sum.as_str(); 25], "downloads");
    let ups: Vec<&str> = parts[1].lines().collect();
    let want = format!("same {}", 10 << 20);
    assert_eq!(ups, vec![want.as_str(); 25], "uploads");
}

#[test]
fn udp_to_the_host_through_the_gateway() {
    need_tap_and_busybox!();
    if !have("python3") {
        skip!("python3 (a UDP client inside the namespace) is not installed");
    }
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    let script = format!(
        "python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.settimeout(5); s.sendto(b\"hello\", (\"10.0.2.1\", {port})); print(s.recv(100).decode()); \
         s.sendto(b\"x\"*1400, (\"10.0.2.1\", {port})); print(len(s.recv(2000)))'"
    );
    let o = run(&[], &script);
    assert_eq!(o.stdout, "echo:hello\n1405\n");
}

/// A DNS server on 127.0.0.42:53 (root only): `host.rkrs.test` has A 192.0.2.7,
/// `missing.rkrs.test` is NXDOMAIN, `slow.rkrs.test` is never answered. Returns a counter of
/// the queries it saw.
fn dns_server() -> Option<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
    let s = UdpSocket::bind("127.0.0.42:53").ok()?;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let q = &buf[..n];
            if q.len() < 12 {
                continue;
            }
            // The question: labels, then type and class.
            let mut at = 12;
            let mut name = Vec::new();
            while at < q.len() && q[at] != 0 {
                let l = q[at] as usize;
                name.push(
                    String::from_utf8_lossy(&q[at + 1..(at + 1 + l).min(q.len())]).into_owned(),
                );
                at += 1 + l;
            }
            let qend = (at + 5).min(q.len());
            let qtype = q
                .get(at + 1..at + 3)
                .map(|t| u16::from_be_bytes([t[0], t[1]]));
            let name = name.join(".");
            let mut r = q[..qend].to_vec();
            r[2] = 0x81;
            r[3] = 0x80;
            r[6..12].fill(0);
            match name.as_str() {
                "slow.rkrs.test" => continue,
                "host.rkrs.test" if qtype == Some(1) => {
                    r[7] = 1;
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
                }
                "host.rkrs.test" => {}
                _ => r[3] = 0x83,
            }
            let _ = s.send_to(&r, from);
        }
    });
    Some(seen)
}

#[test]
fn dns_at_the_gateway_goes_to_the_hosts_nameserver() {
    need_tap_and_busybox!();
    // The parent reads the host's /etc/resolv.conf: give it one of our own in a mount
    // namespace of its own, which takes root (then rootlesskit runs as the test user).
    if !ci::am_root() || !have("unshare") {
        skip!("needs root and unshare to give rootlesskit its own /etc/resolv.conf");
    }
    let Some(seen) = dns_server() else {
        skip!("127.0.0.42:53 is taken");
    };
    let d = Scratch::new("usernet-dns");
    std::fs::write(d.join("resolv.conf"), "nameserver 127.0.0.42\n").unwrap();
    let inner = "busybox nslookup host.rkrs.test 10.0.2.1; echo --; \
                 busybox nslookup missing.rkrs.test; echo --; \
                 busybox nslookup slow.rkrs.test; echo \"rc=$?\"";
    let child = ci::dns::rootlesskit_with_resolv_conf(
        &d.join("resolv.conf"),
        &[
            "--net=gvisor-tap-vsock",
            "--copy-up=/etc",
            "sh",
            "-c",
            inner,
        ],
    )
    .expect("root and unshare, checked above")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let start = std::time::Instant::now();
    let o = ci::wait_output(child, Duration::from_secs(90));
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts.len(), 3, "{}\n{}", o.stdout, o.stderr);
    assert!(
        parts[0].contains("Address: 192.0.2.7"),
        "answer: {}",
        parts[0]
    );
    assert!(parts[1].contains("NXDOMAIN"), "NXDOMAIN: {}", parts[1]);
    assert!(
        parts[2].contains("timed out") || parts[2].contains("no servers could be reached"),
        "timeout: {}",
        parts[2]
    );
    assert!(parts[2].trim_end().ends_with("rc=1"), "{}", parts[2]);
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the queries reached the host's nameserver"
    );
    eprintln!("dns test took {:?}", start.elapsed());
}

#[test]
fn disable_host_loopback_blocks_the_gateway_for_any_cidr() {
    need_tap_and_busybox!();
    // Positive control: without the flag the gateway reaches the host's 127.0.0.1.
    let port = pong_server();
    let o = run(
        &[],
        &format!("echo ping | busybox nc -w 5 10.0.2.1 {port} && echo || echo refused"),
    );
    assert_eq!(o.stdout.trim(), "pong:ping");
    // With it, refused; with the default cidr and with another (upstream hard-codes 10.0.2.1).
    for (cidr, gw) in [("10.0.2.0/24", "10.0.2.1"), ("10.9.0.0/24", "10.9.0.1")] {
        let o = run(
            &["--disable-host-loopback", &format!("--cidr={cidr}")],
            &format!(
                "busybox ping -c 1 -W 5 {gw} >/dev/null && echo ping-ok; \
                 echo ping | busybox nc -w 5 {gw} {port} && echo reached || echo refused"
            ),
        );
        assert_eq!(o.stdout, "ping-ok\nrefused\n", "{cidr}: {}", o.stderr);
        assert!(
            !o.stderr.contains("not yet supported"),
            "no upstream warning: {}",
            o.stderr
        );
    }
}

#[test]
fn custom_cidr_mtu_and_ifname() {
    need_tap_and_busybox!();
    let port = pong_server();
    // At MTU 1500 a download goes as 64 KiB frames that the kernel cuts (GSO), an upload
    // comes as 64 KiB frames (TSO): both must arrive whole.
    let d = Scratch::new("usernet-mtu");
    let data = pattern(3 << 20, 5);
    let file = d.join("data");
    std::fs::write(&file, &data).unwrap();
    let sum = sha256(&file);
    let down = source_server(data.clone());
    let up = sink_server(data);
    let o = run(
        &[
            "--cidr=192.168.77.0/24",
            "--mtu=1500",
            "--ifname=eth7",
            "--copy-up=/etc",
        ],
        &format!(
            "cat /etc/resolv.conf; cat /sys/class/net/eth7/mtu; echo --; cat /proc/net/route; \
             echo --; cat /proc/net/fib_trie; echo --; \
             echo ping | busybox nc -w 5 192.168.77.1 {port}; echo; echo --; \
             busybox nc 192.168.77.1 {down} </dev/null | busybox sha256sum; \
             busybox nc 192.168.77.1 {up} < {file}",
            file = file.display()
        ),
    );
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts[0], "nameserver 192.168.77.1\n1500\n");
    let r = routes(parts[1]);
    assert!(
        r.contains(&("eth7".into(), "00000000".into(), "014DA8C0".into())),
        "{r:?}"
    );
    assert!(parts[2].contains("|-- 192.168.77.100\n"), "{}", parts[2]);
    assert_eq!(parts[3].trim(), "pong:ping");
    let l: Vec<&str> = parts[4].lines().collect();
    assert_eq!(
        l[0].split_whitespace().next(),
        Some(sum.as_str()),
        "download"
    );
    assert_eq!(l[1], format!("same {}", 3 << 20), "upload");
}

#[test]
fn detached_namespace_gets_the_network() {
    need_tap_and_busybox!();
    if !have("nsenter") {
        skip!("nsenter is not installed");
    }
    let port = pong_server();
    let o = run(
        &["--detach-netns"],
        &format!(
            "ls /sys/class/net | grep -c tap0; \
             nsenter --net=$ROOTLESSKIT_STATE_DIR/netns busybox ping -c 1 -W 5 10.0.2.1 >/dev/null \
             && echo ping-ok; \
             echo ping | nsenter --net=$ROOTLESSKIT_STATE_DIR/netns busybox nc -w 5 10.0.2.1 {port}"
        ),
    );
    assert_eq!(o.stdout, "0\nping-ok\npong:ping\n", "{}", o.stderr);
}

#[test]
fn builtin_port_driver_on_top() {
    need_tap_and_busybox!();
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let d = Scratch::new("usernet-ports");
    let state = d.join("state");
    let child = rootlesskit([
        format!("--state-dir={}", state.display()),
        "--net=gvisor-tap-vsock".into(),
        "--port-driver=builtin".into(),
        format!("-p=127.0.0.1:{port}:8080/tcp"),
        "sh".into(),
        "-c".into(),
        "echo served | busybox nc -l -p 8080".into(),
    ])
    .spawn();
    assert!(
        ci::wait_until(Duration::from_secs(15), || state.join("child_pid").exists()),
        "rootlesskit did not get ready"
    );
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read_to_string(&mut got);
            if !got.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, "served\n");
    let o = ci::wait_output(child, Duration::from_secs(20));
    ok(&o);
}

#[test]
fn sigkill_of_rootlesskit_leaves_nothing_running() {
    need_tap_and_busybox!();
    let d = Scratch::new("usernet-sigkill");
    let state = d.join("state");
    let child = rootlesskit([
        format!("--state-dir={}", state.display()),
        "--net=gvisor-tap-vsock".into(),
        "sleep".into(),
        "60".into(),
    ])
    .spawn();
    assert!(
        ci::wait_until(Duration::from_secs(15), || state.join("child_pid").exists()),
        "rootlesskit did not get ready"
    );
    let pid: u32 = std::fs::read_to_string(state.join("child_pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ci::pid_alive(pid));
    ci::send_signal(child.id(), "KILL");
    let _ = ci::wait_output(child, Duration::from_secs(10));
    assert!(
        ci::wait_until(Duration::from_secs(5), || !ci::pid_alive(pid)),
        "the child survived SIGKILL of rootlesskit"
    );
}

#[test]
fn connections_beyond_the_limit_are_refused_and_bounded() {
    need_tap_and_busybox!();
    if !have("python3") {
        skip!("python3 (many connections from inside the namespace) is not installed");
    }
    // A host listener that accepts and holds every connection.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let d = Scratch::new("usernet-flood");
    let state = d.join("state");
    let ctl = ci::bin_dir().join("rootlessctl");
    let script = format!(
        "python3 -c '\nimport socket, time\nok = refused = 0\nheld = []\n\
         for i in range(600):\n    s = socket.socket()\n    s.settimeout(5)\n    \
         try:\n        s.connect((\"10.0.2.1\", {port})); held.append(s); ok += 1\n    \
         except OSError:\n        refused += 1; s.close()\n\
         print(ok, refused, flush=True)\ntime.sleep(2)\n'; \
         {ctl} --socket=$ROOTLESSKIT_STATE_DIR/api.sock info | grep -c gvisor-tap-vsock",
        ctl = ctl.display()
    );
    let child = rootlesskit([
        format!("--state-dir={}", state.display()),
        "--net=gvisor-tap-vsock".into(),
        "sh".into(),
        "-c".into(),
        script,
    ])
    .spawn();
    let pid = child.id();
    // The parent's descriptors while the connections are held: the 512 host sockets and a
    // few of its own, never one per refused connection.
    let mut most = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) && ci::pid_alive(pid) {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            most = most.max(fds.count());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = ci::wait_output(child, Duration::from_secs(30));
    ok(&o);
    assert_eq!(o.stdout, "512 88\n1\n", "{}", o.stderr);
    assert!((512..540).contains(&most), "parent fds: {most}");
    assert_eq!(
        o.stderr.matches("more than 512 TCP connections").count(),
        1,
        "{}",
        o.stderr
    );
}
