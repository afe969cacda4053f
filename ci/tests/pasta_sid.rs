//! pasta 2026 and `--port-driver=pesto`: our binaries with Debian sid's passt (pasta and its
//! client pesto), run as the test user inside the sid rootfs (`ci::sid`). The network
//! namespace there is the host's, so a listener of this test on 127.0.0.1 is the host's
//! loopback, and a port pasta publishes is reached from here directly. What a user sees:
//! - without `--disable-host-loopback` the namespace reaches a server on the host's 127.0.0.1
//!   through the gateway (10.0.2.2, fd00::2) and through its own 127.0.0.1 (pasta's
//!   namespace-to-host forwarding); with it, through neither (upstream #612: `--no-map-gw`
//!   alone left the second path open);
//! - `--ipv6` gives the namespace upstream's fixed IPv6 configuration (fd00::100/64, default
//!   route via fd00::2, DNS fd00::3; upstream #620), and TCP reaches the host over it;
//! - IPv4-only pasta with implicit ports and `--disable-host-loopback` (what
//!   `dockerd-rootless.sh` runs, which passt 2026_05_07 broke: upstream #591) starts and
//!   forwards;
//! - `--port-driver=pesto`: `-p` at start, `rootlessctl add-ports` / `list-ports` /
//!   `remove-ports` for TCP and UDP, IPv6 with `--ipv6`, and a child IP other than the
//!   namespace's address refused, through the API and at start.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ci::sid::{self, Rootlesskit};
use ci::{Run, Scratch, skip};

const GREETING: &str = "hello from the host's loopback";

/// The sid tree with pasta and pesto, or why these tests cannot run.
fn sid_root() -> Result<PathBuf, String> {
    let root = sid::root_with(&["/usr/bin/pasta", "/usr/bin/pesto", "/usr/bin/busybox"])?;
    eprintln!("passt {:?}", sid::package_version(&root, "passt"));
    Ok(root)
}

macro_rules! sid_or_skip {
    () => {
        match sid_root() {
            Ok(r) => r,
            Err(why) => skip!("{why}"),
        }
    };
}

/// A server on the host that greets every connection and closes it. Bound on `ip` at a port
/// below 32768: pasta's automatic namespace-to-host forwarding scans only non-ephemeral ports.
fn greeter(ip: &str) -> (u16, std::thread::JoinHandle<()>) {
    let listener = low_port_listener(ip);
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(format!("{GREETING}\n").as_bytes());
        }
    });
    (port, t)
}

/// A TCP listener on `ip` at a free port in 20000..32000 (non-ephemeral, so that pasta's
/// automatic forwarding, which scans only those, covers it).
fn low_port_listener(ip: &str) -> TcpListener {
    let start = std::process::id() as usize * 7 + std::thread::current().name().map_or(0, str::len);
    (0..12000)
        .map(|i| 20000 + ((start + i * 13) % 12000) as u16)
        .find_map(|port| TcpListener::bind((ip, port)).ok())
        .expect("no free port below 32768")
}

/// `rootlesskit ARGS sh -c SCRIPT` inside sid; its output.
fn run_inside(root: &Path, args: &[&str], script: &str) -> ci::Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["/bin/sh".into(), "-c".into(), script.into()]);
    Run::bin("rootlesskit")
        .args(all)
        .inside(root)
        .timeout(Duration::from_secs(60))
        .output()
}

/// A script that, after pasta has had time to scan the host's ports, connects to each
/// `host:port` of `dsts` and prints `host: <what came back>`.
fn probe_script(dsts: &[(&str, u16)]) -> String {
    let mut s = String::from("sleep 2\n");
    for (host, port) in dsts {
        s.push_str(&format!(
            "echo \"{host}: $(busybox nc -w 3 {host} {port} </dev/null 2>&1)\"\n"
        ));
    }
    s
}

/// Whether the line for `host` in `out` carries the greeting.
fn reached(out: &ci::Output, host: &str) -> bool {
    let prefix = format!("{host}: ");
    out.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {host}: {out:?}"))
        .contains(GREETING)
}

#[test]
fn disable_host_loopback_blocks_the_hosts_loopback() {
    let root = sid_or_skip!();
    let (port, _t) = greeter("127.0.0.1");
    let script = probe_script(&[("10.0.2.2", port), ("127.0.0.1", port)]);

    // The positive control: both paths lead to the host's 127.0.0.1 by default.
    let open = run_inside(&root, &["--net=pasta"], &script);
    assert_eq!(open.code, 0, "{open:?}");
    assert!(reached(&open, "10.0.2.2"), "gateway mapping: {open:?}");
    assert!(reached(&open, "127.0.0.1"), "namespace loopback: {open:?}");

    for extra in [&[][..], &["--port-driver=implicit"][..]] {
        let mut args = vec!["--net=pasta", "--disable-host-loopback"];
        args.extend_from_slice(extra);
        let closed = run_inside(&root, &args, &script);
        assert_eq!(closed.code, 0, "{closed:?}");
        assert!(!reached(&closed, "10.0.2.2"), "{args:?}: {closed:?}");
        assert!(!reached(&closed, "127.0.0.1"), "{args:?}: {closed:?}");
    }
}

/// The host has an IPv6 default route (pasta's IPv6 needs one); otherwise why not.
fn host_ipv6() -> Result<(), String> {
    let routes = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    // A default route: destination ::/0 with a gateway.
    let default = routes.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 4 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[4] != f[0]
    });
    if default {
        Ok(())
    } else {
        Err("the host has no IPv6 default route".into())
    }
}

#[test]
fn ipv6_gets_the_fixed_configuration_and_reaches_the_host() {
    let root = sid_or_skip!();
    if let Err(why) = host_ipv6() {
        skip!("{why}");
    }
    let (port, _t) = greeter("::1");
    let script = format!(
        "grep tap0 /proc/net/if_inet6\ngrep tap0 /proc/net/ipv6_route\ncat /etc/resolv.conf\n{}",
        probe_script(&[("fd00::2", port)])
    );
    let out = run_inside(&root, &["--net=pasta", "--ipv6", "--copy-up=/etc"], &script);
    assert_eq!(out.code, 0, "{out:?}");
    // fd00::100/64 on tap0, and no other global address (upstream #620: the host's own
    // addresses used to be copied in).
    let globals: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .filter(|l| l.ends_with("tap0") && l.split_whitespace().count() == 6)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0], f[2])
        })
        .filter(|(a, _)| !a.starts_with("fe80"))
        .collect();
    assert_eq!(
        globals,
        [("fd000000000000000000000000000100", "40")],
        "{out:?}"
    );
    // The default route via fd00::2.
    assert!(
        out.stdout.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 10
                && f[0] == "00000000000000000000000000000000"
                && f[1] == "00"
                && f[4] == "fd000000000000000000000000000002"
        }),
        "no default route via fd00::2: {out:?}"
    );
    assert!(
        out.stdout
            .contains("nameserver 10.0.2.3\nnameserver fd00::3\n"),
        "{out:?}"
    );
    // TCP to the host's ::1 through the IPv6 gateway.
    assert!(reached(&out, "fd00::2"), "{out:?}");

    // And --disable-host-loopback closes that path too.
    let out = run_inside(
        &root,
        &["--net=pasta", "--ipv6", "--disable-host-loopback"],
        &probe_script(&[("fd00::2", port)]),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!reached(&out, "fd00::2"), "{out:?}");
}

/// The target for the pesto tests: an HTTP server on 8000 and a UDP echo server on 8001, on
/// the namespace's address only, as Docker's docker-proxy listens (pesto's rules lead there,
/// not to the namespace's loopback).
const SERVERS: &str = "busybox httpd -f -p 10.0.2.100:8000 -h WWW &\n\
                       exec /usr/bin/socat UDP-RECVFROM:8001,bind=10.0.2.100,fork EXEC:/bin/cat";

/// The same HTTP server on the namespace's IPv4 and IPv6 addresses (the latter retried while
/// it may still be tentative).
const SERVERS6: &str = "busybox httpd -f -p 10.0.2.100:8000 -h WWW &\n\
                        until busybox httpd -f -p [fd00::100]:8000 -h WWW; do sleep 0.2; done";

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

#[test]
fn pesto_ports_through_rootlessctl() {
    let root = sid_or_skip!();
    assert!(
        sid::has(&root, "/usr/bin/socat"),
        "socat is not in the sid rootfs"
    );
    let [at_start, tcp, udp, bad] = sid::free_ports();
    let spec0 = format!("127.0.0.1:{at_start}:8000/tcp");
    let rk = Rootlesskit::start(
        &root,
        "pesto4",
        &["--net=pasta", "--port-driver=pesto", "-p", &spec0],
        SERVERS,
    );
    // -p at start.
    assert_eq!(sid::fetch(addr("127.0.0.1", at_start)), sid::PAGE);

    let info = rk.ctl_ok(&["info"]);
    assert!(info.contains("- Port Driver: pesto\n"), "{info}");
    assert!(info.contains("[tcp tcp4 udp udp4]"), "{info}");

    // add-ports, with the namespace's own address (IPv4-mapped, as Docker 28 sends it) too.
    assert_eq!(
        rk.ctl_ok(&["add-ports", &format!("0.0.0.0:{tcp}:8000/tcp")]),
        "2\n"
    );
    assert_eq!(
        rk.ctl_ok(&[
            "add-ports",
            &format!("127.0.0.1:{udp}:[::ffff:10.0.2.100]:8001/udp")
        ]),
        "3\n"
    );
    assert_eq!(sid::fetch(addr("127.0.0.1", tcp)), sid::PAGE);
    sid::udp_echo(addr("127.0.0.1", udp)).unwrap();

    let list = rk.ctl_ok(&["list-ports"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (a, t, u) = (at_start.to_string(), tcp.to_string(), udp.to_string());
    assert_eq!(
        rows,
        [
            vec!["1", "tcp", "127.0.0.1", &a, "8000"],
            vec!["2", "tcp", "0.0.0.0", &t, "8000"],
            vec!["3", "udp", "127.0.0.1", &u, "::ffff:10.0.2.100", "8001"],
        ],
        "{list}"
    );

    // remove-ports: the port stops answering, the others go on.
    assert_eq!(rk.ctl_ok(&["remove-ports", "2"]), "2\n");
    assert!(
        sid::refused(addr("127.0.0.1", tcp)),
        "port {tcp} still answers"
    );
    assert_eq!(sid::fetch(addr("127.0.0.1", at_start)), sid::PAGE);
    assert!(!rk.ctl_ok(&["list-ports"]).contains(&format!(" {tcp} ")));

    // A child IP pasta cannot forward to, and IPv6 without --ipv6, are refused.
    let o = rk.ctl(&["add-ports", &format!("0.0.0.0:{bad}:127.0.0.1:8000/tcp")]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains(
            "unsupported ChildIP \"127.0.0.1\": the pesto port driver only supports the \
             namespace address \"10.0.2.100\""
        ),
        "{o:?}"
    );
    let o = rk.ctl(&["add-ports", &format!("[::1]:{bad}:8000/tcp6")]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(
        o.stderr
            .contains("IPv6 port forwarding (proto \"tcp6\", parent IP \"::1\") requires --ipv6"),
        "{o:?}"
    );
    assert!(sid::refused(addr("127.0.0.1", bad)));
}

#[test]
fn pesto_ipv6() {
    let root = sid_or_skip!();
    if let Err(why) = host_ipv6() {
        skip!("{why}");
    }
    let [at_start, dual] = sid::free_ports();
    let spec0 = format!("[::1]:{at_start}:8000/tcp6");
    let rk = Rootlesskit::start(
        &root,
        "pesto6",
        &["--net=pasta", "--ipv6", "--port-driver=pesto", "-p", &spec0],
        SERVERS6,
    );
    assert_eq!(sid::fetch(addr("[::1]", at_start)), sid::PAGE);
    let info = rk.ctl_ok(&["info"]);
    assert!(info.contains("[tcp tcp4 udp udp4 tcp6 udp6]"), "{info}");
    // tcp on the wildcard: both families, to the namespace's IPv6 address as the child IP.
    assert_eq!(
        rk.ctl_ok(&["add-ports", &format!("[::]:{dual}:[fd00::100]:8000/tcp")]),
        "2\n"
    );
    assert_eq!(sid::fetch(addr("[::1]", dual)), sid::PAGE);
    assert_eq!(sid::fetch(addr("127.0.0.1", dual)), sid::PAGE);
    assert_eq!(rk.ctl_ok(&["remove-ports", "2"]), "2\n");
    assert!(sid::refused(addr("[::1]", dual)));
    assert!(sid::refused(addr("127.0.0.1", dual)));
}

#[test]
fn pesto_refuses_a_bad_child_ip_at_start() {
    let root = sid_or_skip!();
    let [port] = sid::free_ports();
    let dir = Scratch::new("pesto-bad");
    let state = dir.join("state");
    let spec = format!("127.0.0.1:{port}:10.0.2.99:80/tcp");
    let out = Run::bin("rootlesskit")
        .args([
            format!("--state-dir={}", state.display()),
            "--net=pasta".into(),
            "--port-driver=pesto".into(),
            "-p".into(),
            spec.clone(),
            "true".into(),
        ])
        .inside(&root)
        .output();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("[rootlesskit:parent] error: failed to expose port ")
            && out.stderr.contains(
                "unsupported ChildIP \"10.0.2.99\": the pesto port driver only supports the \
                 namespace address \"10.0.2.100\""
            ),
        "{out:?}"
    );
    assert!(!state.exists(), "state dir left behind");
}

#[test]
fn ipv4_only_implicit_ports_without_host_loopback() {
    // What dockerd-rootless.sh runs with DOCKERD_ROOTLESS_ROOTLESSKIT_NET=pasta, which passt
    // 2026_05_07 refused (upstream #591).
    let root = sid_or_skip!();
    // pasta publishes only ports below 32768 by itself.
    let port = low_port_listener("0.0.0.0").local_addr().unwrap().port();
    let _rk = Rootlesskit::start(
        &root,
        "implicit4",
        &[
            "--net=pasta",
            "--disable-host-loopback",
            "--port-driver=implicit",
        ],
        &format!("exec busybox httpd -f -p {port} -h WWW"),
    );
    assert_eq!(sid::fetch(addr("127.0.0.1", port)), sid::PAGE);
}

/// The host's pasta (Debian 12's 2023-03-09 here, outside the sid tree) still works with the
/// new options: `--disable-host-loopback` closes both paths when pasta publishes nothing, the
/// fixed IPv6 configuration is taken, and implicit ports with `--disable-host-loopback` still
/// publish (that release swapped its `-t`/`-T` scans, so `-T none` is not passed to it).
#[test]
fn the_hosts_pasta_with_the_new_options() {
    if !ci::have("pasta") || !ci::tun_usable() || !ci::have("busybox") {
        skip!("pasta, busybox or /dev/net/tun is not available on the host");
    }
    let run = |args: &[&str], script: &str| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["/bin/sh".into(), "-c".into(), script.into()]);
        let o = ci::rootlesskit(all)
            .timeout(Duration::from_secs(60))
            .output();
        assert_eq!(o.code, 0, "{args:?}: {o:?}");
        o
    };
    let (port, _t) = greeter("127.0.0.1");
    let script = probe_script(&[("10.0.2.2", port), ("127.0.0.1", port)])
        .replace("busybox nc", "/bin/busybox nc");
    let closed = run(&["--net=pasta", "--disable-host-loopback"], &script);
    assert!(!reached(&closed, "10.0.2.2"), "{closed:?}");
    assert!(!reached(&closed, "127.0.0.1"), "{closed:?}");

    if host_ipv6().is_ok() {
        let o = run(&["--net=pasta", "--ipv6"], "grep tap0 /proc/net/if_inet6");
        assert!(
            o.stdout.contains("fd000000000000000000000000000100 "),
            "{o:?}"
        );
    }

    let dir = Scratch::new("host-implicit");
    std::fs::write(dir.join("index.html"), sid::PAGE).unwrap();
    let web = low_port_listener("0.0.0.0").local_addr().unwrap().port();
    let mut child = ci::rootlesskit([
        "--net=pasta".to_string(),
        "--disable-host-loopback".into(),
        "--port-driver=implicit".into(),
        "/bin/busybox".into(),
        "httpd".into(),
        "-f".into(),
        "-p".into(),
        web.to_string(),
        "-h".into(),
        dir.path.display().to_string(),
    ])
    .spawn();
    let got = ci::wait_for(Duration::from_secs(15), || {
        sid::http_get(addr("127.0.0.1", web)).ok()
    });
    ci::send_signal(child.id(), "TERM");
    let _ = child.wait();
    assert_eq!(got.as_deref(), Some(sid::PAGE));
}

/// Without `pesto` in `$PATH` (Debian 12's passt has none), `--port-driver=pesto` is one line
/// before anything is created.
#[test]
fn pesto_missing_is_one_clear_error() {
    if !ci::have("pasta") {
        skip!("pasta is not installed on the host");
    }
    let d = Scratch::new("no-pesto");
    let bin = d.join("bin");
    let tmp = d.join("tmp");
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    // setpriv too: the harness finds it through the same `$PATH`.
    for program in ["pasta", "setpriv", "newuidmap", "newgidmap"] {
        let path = Path::new("/usr/bin").join(program);
        if path.exists() {
            std::os::unix::fs::symlink(path, bin.join(program)).unwrap();
        }
    }
    std::os::unix::fs::chown(&tmp, ci::test_user().map(|u| u.uid), None).unwrap();
    let o = ci::rootlesskit(["--net=pasta", "--port-driver=pesto", "true"])
        .env("PATH", bin.to_str().unwrap())
        .env("TMPDIR", tmp.to_str().unwrap())
        .output();
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(
        o.stderr.lines().last(),
        Some(
            r#"[rootlesskit:parent] error: command "pesto --version" failed, make sure pesto is installed: "": exec: "pesto": executable file not found in $PATH"#
        ),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "a state dir was left"
    );
}
