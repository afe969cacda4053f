//! What upstream RootlessKit v3.0.x changed that a user or a script can see, checked against
//! our binaries run as the unprivileged test user: the version every binary reports, the driver
//! lists of `--help`, the warnings and refusals of the gvisor-tap-vsock network and port
//! drivers in upstream's words, and where we go beyond upstream (`--ipv6` with
//! gvisor-tap-vsock is routed, so it is neither "discarded" nor refused).
//! The audit behind it: docs/upstream-v3.md.

use std::time::Duration;

use ci::ports::free_port;
use ci::{Run, Scratch, assert_rejected, ok, rootlesskit, skip, tun_usable};

/// The upstream release our binaries claim (README, the rule behind `--version`).
const CLAIMED: &str = "3.0.1";

#[test]
fn every_binary_reports_the_claimed_release() {
    let o = rootlesskit(["--version"]).output();
    ok(&o);
    assert_eq!(o.stdout, format!("rootlesskit version {CLAIMED}\n"));
    let parts: Vec<&str> = CLAIMED.split('.').collect();
    for (part, want) in ["major", "minor", "patch"].iter().zip(parts) {
        let o = rootlesskit([format!("--print-semver={part}")]).output();
        ok(&o);
        assert_eq!(o.stdout, format!("{want}\n"), "--print-semver={part}");
    }
    let o = rootlesskit(["--help"]).output();
    ok(&o);
    assert!(
        o.stdout.contains(&format!("\nVERSION:\n   {CLAIMED}\n")),
        "{}",
        o.stdout
    );
    for bin in ["rootlessctl", "rootlesskit-docker-proxy"] {
        let o = Run::bin(bin).args(["--version"]).output();
        ok(&o);
        assert_eq!(o.stdout, format!("{bin} version {CLAIMED}\n"));
    }
}

#[test]
fn help_lists_the_v3_drivers_in_upstreams_order() {
    let o = rootlesskit(["--help"]).output();
    ok(&o);
    for want in [
        // v3.0 added gvisor-tap-vsock to both lists; pesto (v3.1) follows upstream's v3.0 list.
        "[host, none, pasta(experimental), slirp4netns, vpnkit, lxc-user-nic(experimental), gvisor-tap-vsock(experimental)] (default: \"host\")",
        "[none, implicit (for pasta), builtin, slirp4netns, gvisor-tap-vsock(experimental), ",
    ] {
        assert!(o.stdout.contains(want), "{want:?} missing:\n{}", o.stdout);
    }
    // v3.0's new flag, in the Port category, on by default.
    let line = o
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("--source-ip-transparent "))
        .expect("--source-ip-transparent missing");
    assert!(line.ends_with("(default: true)"), "{line}");
}

#[test]
fn gvisor_tap_vsock_warnings_and_refusals_in_upstreams_words() {
    let dir = Scratch::new("v3-refusals");
    for (args, want) in [
        (
            &["--port-driver=gvisor-tap-vsock", "true"][..],
            "port driver requires non-host network",
        ),
        (
            &["--net=none", "--port-driver=gvisor-tap-vsock", "true"][..],
            "network \"none\" requires either port driver \"none\" or \"builtin\"",
        ),
        (
            &["--net=gvisor-tap-vsock", "--port-driver=implicit", "true"][..],
            "port driver requires pasta network",
        ),
        (
            &[
                "--net=gvisor-tap-vsock",
                "--port-driver=slirp4netns",
                "true",
            ][..],
            "port driver requires slirp4netns network",
        ),
        (
            &["--net=gvisor-tap-vsock", "--cidr=10.0.3.100/24", "true"][..],
            "cidr must be like 10.0.2.0/24, not like 10.0.2.100/24",
        ),
    ] {
        assert_rejected(args, want, &dir.path);
    }
    // The warnings upstream prints before the gvisor-tap-vsock drivers' refusals and runs.
    let o = rootlesskit([
        "--net=gvisor-tap-vsock",
        "--port-driver=gvisor-tap-vsock",
        "--mtu=70000",
        "true",
    ])
    .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        o.stderr.trim_end(),
        "[rootlesskit:parent] error: mtu must be <= 65521, got 70000"
    );
    if !tun_usable() {
        skip!("/dev/net/tun cannot be opened");
    }
    let o = rootlesskit([
        "--net=gvisor-tap-vsock",
        "--port-driver=gvisor-tap-vsock",
        "true",
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let warned = ci::parent_warnings(&o.stderr);
    assert_eq!(
        warned,
        [
            "specifying --disable-host-loopback is highly recommended to prohibit connecting to 127.0.0.1:* on the host namespace (requires pasta, slirp4netns, or VPNKit)",
            "\"gvisor-tap-vsock\" network driver is experimental",
            "\"gvisor-tap-vsock\" port driver is experimental",
        ],
        "{}",
        o.stderr
    );
}

/// Upstream's gvisor-tap-vsock port driver words a protocol it lacks as
/// `unsupported protocol: <proto>`, after the `-p` wrapper `failed to expose port {…}: `.
#[test]
fn gvisor_tap_vsock_port_driver_refuses_a_protocol_in_upstreams_words() {
    if !tun_usable() {
        skip!("/dev/net/tun cannot be opened");
    }
    let port = free_port();
    let o = rootlesskit([
        "--net=gvisor-tap-vsock".to_string(),
        "--port-driver=gvisor-tap-vsock".into(),
        "--disable-host-loopback".into(),
        format!("-p=127.0.0.1:{port}:80/sctp"),
        "true".into(),
    ])
    .timeout(Duration::from_secs(30))
    .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        o.stderr.lines().last().unwrap_or(""),
        format!(
            "[rootlesskit:parent] error: failed to expose port {{sctp 127.0.0.1 {port} 80 }}: unsupported protocol: sctp"
        ),
        "{}",
        o.stderr
    );
}

/// Beyond upstream: v3 warns that `--ipv6` is discarded for gvisor-tap-vsock and then refuses
/// it; ours routes IPv6 there, so it says only that IPv6 is experimental, and the namespace has
/// an address on `fd00::/64`.
#[test]
fn gvisor_tap_vsock_routes_ipv6_instead_of_discarding_it() {
    if !tun_usable() {
        skip!("/dev/net/tun cannot be opened");
    }
    let o = rootlesskit([
        "--net=gvisor-tap-vsock",
        "--ipv6",
        "--disable-host-loopback",
        "sh",
        "-c",
        "i=0; while [ $i -lt 100 ] && ! grep -q '^fd00.* tap0$' /proc/net/if_inet6; do \
           i=$((i+1)); sleep 0.1; done; cat /proc/net/if_inet6",
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let warned = ci::parent_warnings(&o.stderr);
    assert_eq!(
        warned,
        [
            "ipv6 is experimental",
            "\"gvisor-tap-vsock\" network driver is experimental",
        ],
        "{}",
        o.stderr
    );
    // The SLAAC address, tentative or not (the kernel may still be doing duplicate address
    // detection).
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("fd00000000000000") && l.ends_with("tap0")),
        "{}",
        o.stdout
    );
}

/// v3 starts the target with a parent-death signal (upstream #514): when the rootlesskit child
/// dies, even alone (no `--pidns`, so nothing else takes the target down), the target dies too.
#[test]
fn sigkill_of_the_child_kills_the_target() {
    let d = Scratch::new("v3-pdeathsig");
    let state = d.join("state");
    let marker = d.join("target_pid");
    let script = format!(
        "echo $$ > {m}.tmp; mv {m}.tmp {m}; exec sleep 1000",
        m = marker.display()
    );
    let child = rootlesskit([
        format!("--state-dir={}", state.display()),
        "--reaper=false".into(),
        "sh".into(),
        "-c".into(),
        script,
    ])
    .spawn();
    assert!(ci::wait_until(Duration::from_secs(10), || marker.exists()));
    let child_pid: u32 = std::fs::read_to_string(state.join("child_pid"))
        .unwrap()
        .parse()
        .unwrap();
    let targets = ci::children_of(child_pid);
    assert_eq!(targets.len(), 1, "{targets:?}");
    ci::send_signal(child_pid, "KILL");
    let o = ci::wait_output(child, Duration::from_secs(10));
    assert_ne!(o.code, 0, "{}", o.stderr);
    assert!(
        ci::wait_until(Duration::from_secs(5), || !ci::pid_alive(targets[0])),
        "the target survived SIGKILL of the rootlesskit child"
    );
}
