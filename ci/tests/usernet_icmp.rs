//! Ping from inside `--net=gvisor-tap-vsock`, run as the unprivileged test user: echo requests
//! beyond the gateway go out on unprivileged ICMP sockets (allowed by
//! `net.ipv4.ping_group_range`, which `.ci/run` opens to every group), so the host's own
//! address answers; the gateway answers itself, with or without `--disable-host-loopback`; an
//! unroutable address does not answer. IPv6 end to end is not tested: the namespace's ULA
//! prefix has no way out to a global address on this machine.

use std::path::Path;
use std::time::Duration;

use ci::{Output, ok, rootlesskit, skip, tun_usable};

/// `rootlesskit --net=gvisor-tap-vsock ARGS... sh -c SCRIPT`, checked for success.
fn run(args: &[&str], script: &str) -> Output {
    let mut all = vec!["--net=gvisor-tap-vsock"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["sh", "-c", script]);
    let o = rootlesskit(all).timeout(Duration::from_secs(90)).output();
    ok(&o);
    o
}

/// A script printing, one line each, whether each of `targets` answered two pings.
fn pings(targets: &[&str]) -> String {
    targets
        .iter()
        .map(|t| format!("busybox ping -c 2 -W 2 {t} >/dev/null && echo {t} || echo {t}-none; "))
        .collect()
}

#[test]
fn ping_reaches_the_host_and_the_gateway_but_not_an_unroutable_address() {
    if !tun_usable() {
        skip!("/dev/net/tun is not usable by the test user");
    }
    if !Path::new("/bin/busybox").exists() {
        skip!("busybox is not installed");
    }
    let Some(host) = ci::ports::host_ipv4() else {
        skip!("the host has no non-loopback IPv4 address");
    };
    let host = host.to_string();
    for args in [&[][..], &["--disable-host-loopback"][..]] {
        let o = run(args, &pings(&["10.0.2.1", "192.0.2.123", &host]));
        let lines: Vec<&str> = o.stdout.lines().collect();
        // The gateway answers itself, --disable-host-loopback or not (that flag blocks the
        // host's 127.0.0.1, which the gateway's echo never involves).
        assert_eq!(lines[0], "10.0.2.1", "{args:?}: {}", o.stderr);
        // TEST-NET-1 leads nowhere: no made-up answer.
        assert_eq!(lines[1], "192.0.2.123-none", "{args:?}: {}", o.stderr);
        if o.stderr.contains("ping_group_range") {
            skip!(
                "net.ipv4.ping_group_range excludes the test user's group: {}",
                o.stderr
            );
        }
        // The host's own address answers through an ICMP socket of the parent.
        assert_eq!(lines[2], host, "{args:?}: {}", o.stderr);
    }
}
