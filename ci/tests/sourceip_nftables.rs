//! `--source-ip-transparent` with the builtin port driver leaves one nf_tables table in the
//! namespace where the ports' sockets are made, `inet rootlesskit`, which the child adds over
//! netlink (no `nft` or `iptables` program runs; `ci/tests/sourceip_sid.rs` shows what it is
//! for). Seen from inside with `nft list ruleset` (nftables on the host, as root of the user
//! namespace): in the child's namespace, in the detached one with `--detach-netns`, and not at
//! all with `--source-ip-transparent=false`.
//!
//! And what the table is for, without Docker: a nested network namespace on a veth stands for
//! a container on a bridge, and a DNAT in the namespace sends the published port to it, as
//! dockerd's `userland-proxy=false` does (with its hairpin rules for the namespace's own
//! loopback). Through the port, that "container" sees the client's own address, also in a
//! detached namespace; without transparency it sees the veth's address, the masquerade's.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ci::{Scratch, rootlesskit, skip};

/// The ruleset `nft list ruleset` prints inside, with `--net=slirp4netns --port-driver=builtin`
/// and `extra` flags; `list` is the shell command that runs it there.
fn ruleset(name: &str, extra: &[&str], list: &str) -> Option<String> {
    if !ci::have("slirp4netns") || !ci::have("nft") {
        return None;
    }
    let dir = Scratch::new(name);
    let state = dir.join("state");
    let mut args = vec![
        "--net=slirp4netns".to_string(),
        "--port-driver=builtin".to_string(),
        format!("--state-dir={}", state.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["sh".into(), "-c".into(), list.into()]);
    let o = rootlesskit(args).output();
    ci::ok(&o);
    assert!(
        !o.stderr.contains("nf_tables"),
        "a warning about nf_tables: {}",
        o.stderr
    );
    Some(o.stdout)
}

/// What `nft list ruleset` (nftables 1.0.6) shows of our table.
const TABLE: &str = "table inet rootlesskit {
\tchain output {
\t\ttype route hook output priority mangle; policy accept;
\t\tmeta mark 0x00000064 ct direction original ct mark set 0x00000064 meta mark set 0x00000000
\t}

\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tct mark 0x00000064 meta mark set 0x00000064
\t}
}
";

#[test]
fn the_table_is_in_the_childs_namespace() {
    let Some(got) = ruleset("nft-child", &[], "nft list ruleset") else {
        skip!("slirp4netns or nft is not installed");
    };
    assert_eq!(got, TABLE);
}

#[test]
fn the_table_is_in_the_detached_namespace() {
    // The target runs in the host's network namespace; the ports' sockets are made in the file's.
    let list = r#"nsenter --net="$ROOTLESSKIT_STATE_DIR/netns" nft list ruleset"#;
    let Some(got) = ruleset("nft-detached", &["--detach-netns"], list) else {
        skip!("slirp4netns or nft is not installed");
    };
    assert_eq!(got, TABLE);
}

#[test]
fn no_table_without_transparency() {
    let Some(got) = ruleset(
        "nft-off",
        &["--source-ip-transparent=false"],
        "nft list ruleset",
    ) else {
        skip!("slirp4netns or nft is not installed");
    };
    assert_eq!(got, "");
}

/// Run by `sh` as root of the user namespace, in the namespace the ports lead to, with the
/// scratch dir as `$1`: a nested network namespace on a veth as the "container" (10.99.0.2),
/// a server there on port 8080 that writes the peer address of each connection, the DNAT of
/// 127.0.0.1:8080 to it, and dockerd's hairpin rules for its own loopback.
const CONTAINER: &str = r#"set -eu
dir=$1
unshare -n sh -c "echo \$\$ > $dir/cpid; exec sleep 1000" &
while [ ! -s "$dir/cpid" ]; do sleep 0.05; done
c=$(cat "$dir/cpid")
ip link add rk0 type veth peer name eth0 netns "$c"
ip addr add 10.99.0.1/24 dev rk0
ip link set rk0 up
nsenter -t "$c" -n sh -c 'ip link set lo up; ip addr add 10.99.0.2/24 dev eth0; ip link set eth0 up; ip route add default via 10.99.0.1'
nft add table ip rkdnat
nft 'add chain ip rkdnat output { type nat hook output priority -100; }'
nft add rule ip rkdnat output ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.99.0.2:8080
echo 1 > /proc/sys/net/ipv4/conf/rk0/route_localnet
nft 'add chain ip rkdnat postrouting { type nat hook postrouting priority 100; }'
nft add rule ip rkdnat postrouting ip saddr 127.0.0.0/8 oifname rk0 masquerade
exec nsenter -t "$c" -n python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(16)
open(sys.argv[1] + "/ready", "w").close()
while True:
    c, a = s.accept()
    c.sendall((a[0] + "\n").encode())
    c.close()
' "$dir"
"#;

/// Publishes a free port to 8080 in the namespace, sets up [`CONTAINER`] there and gives the
/// client's address and what the "container" says it saw; `None` when the host lacks a tool.
fn seen_through_dnat(name: &str, extra: &[&str], detached: bool) -> Option<(String, String)> {
    let tools = ["slirp4netns", "nft", "ip", "unshare", "nsenter", "python3"];
    if !tools.iter().all(|t| ci::have(t)) {
        return None;
    }
    let client = ci::sid::host_ipv4()?;
    let dir = Scratch::new(name);
    let script = dir.script("container.sh", CONTAINER);
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args = vec![
        "--net=slirp4netns".to_string(),
        "--port-driver=builtin".to_string(),
        // One pid namespace: the servers go with the child.
        "--pidns".to_string(),
        format!("--state-dir={}", dir.join("state").display()),
        "-p".to_string(),
        format!("0.0.0.0:{port}:8080/tcp"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    if detached {
        args.extend(["--detach-netns".into(), "nsenter".into()]);
        args.push(format!("--net={}", dir.join("state/netns").display()));
    }
    args.extend(["sh".to_string(), script.display().to_string()]);
    args.push(dir.path.display().to_string());
    let child = rootlesskit(args).spawn();
    let ready = ci::wait_until(Duration::from_secs(20), || dir.join("ready").exists());
    let to = SocketAddr::from((client, port));
    let seen = ready.then(|| {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text.trim().to_string())
    });
    ci::send_signal(child.id(), "TERM");
    let out = ci::wait_output(child, Duration::from_secs(15));
    assert!(ready, "the container did not come up: {}", out.stderr);
    let seen = seen.flatten().unwrap_or_else(|| {
        panic!("nothing read through {to}: {}", out.stderr);
    });
    Some((client.to_string(), seen))
}

#[test]
fn a_dnated_container_sees_the_client() {
    let Some((client, seen)) = seen_through_dnat("dnat", &[], false) else {
        skip!("slirp4netns, nft, ip, unshare, nsenter, python3 or a host address is missing");
    };
    assert_eq!(seen, client);
}

#[test]
fn a_dnated_container_sees_the_client_with_a_detached_namespace() {
    let Some((client, seen)) = seen_through_dnat("dnat-detached", &[], true) else {
        skip!("slirp4netns, nft, ip, unshare, nsenter, python3 or a host address is missing");
    };
    assert_eq!(seen, client);
}

#[test]
fn without_transparency_a_dnated_container_sees_the_masquerade() {
    let Some((_, seen)) = seen_through_dnat("dnat-off", &["--source-ip-transparent=false"], false)
    else {
        skip!("slirp4netns, nft, ip, unshare, nsenter, python3 or a host address is missing");
    };
    assert_eq!(seen, "10.99.0.1");
}
