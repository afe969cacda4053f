//! The builtin port driver as a user sees it, run as the unprivileged test user: `-p` at
//! start, `rootlessctl add-ports/list-ports/remove-ports` (ours and upstream's Go client),
//! dual-stack `tcp`, conflicts, removal, 200 concurrent 1 MB echoes arriving intact, and UDP
//! datagrams from several clients each answered to the right one.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use ci::ports::{Running, free_port, host_ipv4, seen_from};
use ci::{Run, Scratch, rootlesskit, skip};

/// A threaded echo server on [::]:8000 (dual-stack) inside the namespace, a UDP echo
/// server on [::]:8001 (dual-stack), on 127.0.0.1:8002 a server that tells each
/// connection the address it came from, and on UDP 0.0.0.0:8003 one that answers each
/// datagram with the address it came from; the last two for IPv6 on [::1]:8005 (TCP) and
/// [::]:8004 (UDP).
const ECHO: &str = "import socket,threading
def udp():
  u=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)
  u.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)
  u.bind(('::',8001))
  while True:
    d,a=u.recvfrom(65536);u.sendto(d,a)
threading.Thread(target=udp,daemon=True).start()
def peer():
  p=socket.socket();p.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
  p.bind(('127.0.0.1',8002));p.listen(64)
  while True:
    c,a=p.accept();c.sendall(('%s %d\\n'%a).encode());c.close()
threading.Thread(target=peer,daemon=True).start()
def upeer():
  q=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);q.bind(('0.0.0.0',8003))
  while True:
    d,a=q.recvfrom(65536);q.sendto(('%s %d\\n'%a).encode(),a)
threading.Thread(target=upeer,daemon=True).start()
def upeer6():
  q=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);q.bind(('::',8004))
  while True:
    d,a=q.recvfrom(65536);q.sendto(('%s %d\\n'%a[:2]).encode(),a)
threading.Thread(target=upeer6,daemon=True).start()
def peer6():
  p=socket.socket(socket.AF_INET6);p.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
  p.bind(('::1',8005));p.listen(64)
  while True:
    c,a=p.accept();c.sendall(('%s %d\\n'%a[:2]).encode());c.close()
threading.Thread(target=peer6,daemon=True).start()
s=socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)
s.bind(('::',8000));s.listen(512)
def h(c):
  while True:
    d=c.recv(65536)
    if not d: break
    c.sendall(d)
  c.close()
while True:
  c,_=s.accept();threading.Thread(target=h,args=(c,),daemon=True).start()
";

/// rootlesskit with slirp4netns, the builtin port driver and `extra` flags, running [`ECHO`];
/// `None` when slirp4netns or python3 is not installed.
fn start_echo(name: &str, extra: &[String]) -> Option<Running> {
    start_echo_with(name, "builtin", extra)
}

/// [`start_echo`] with the port driver `driver`.
fn start_echo_with(name: &str, driver: &str, extra: &[String]) -> Option<Running> {
    if !Path::new("/usr/bin/slirp4netns").exists() || !Path::new("/usr/bin/python3").exists() {
        return None;
    }
    let mut flags = vec![
        "--net=slirp4netns".into(),
        "--disable-host-loopback".into(),
        format!("--port-driver={driver}"),
    ];
    flags.extend(extra.iter().cloned());
    Some(Running::start(name, &flags, ECHO))
}

/// Sends `data` and reads as many bytes back.
fn echo(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut w = s.try_clone()?;
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&owned));
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back)?;
    writer.join().unwrap()?;
    Ok(back)
}

/// Retries until the server inside is up (python starts in a few hundred ms).
fn wait_echo(addr: SocketAddr) {
    assert!(
        ci::wait_until(Duration::from_secs(15), || echo(addr, b"ping")
            .is_ok_and(|b| b == b"ping")),
        "no echo through {addr}"
    );
}

#[test]
fn publish_add_list_remove_and_dual_stack() {
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let Some(r) = start_echo(
        "ports-basic",
        &["-p".into(), format!("127.0.0.1:{p1}:8000/tcp")],
    ) else {
        skip!("slirp4netns or python3 is not installed");
    };
    wait_echo(format!("127.0.0.1:{p1}").parse().unwrap());

    // tcp on every address listens on both families.
    let o = r.ctl(&["add-ports", &format!("0.0.0.0:{p2}:8000/tcp")]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "2\n"), "{}", o.stderr);
    wait_echo(format!("[::1]:{p2}").parse().unwrap());
    wait_echo(format!("127.0.0.1:{p2}").parse().unwrap());
    // tcp4 only IPv4.
    let o = r.ctl(&["add-ports", &format!("0.0.0.0:{p3}:8000/tcp4")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_echo(format!("127.0.0.1:{p3}").parse().unwrap());
    assert!(echo(format!("[::1]:{p3}").parse().unwrap(), b"x").is_err());

    // A conflict, as upstream words it.
    let o = r.ctl(&["add-ports", &format!("127.0.0.1:{p1}:9000/tcp")]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.trim(), "error: conflict with ID 1");

    let o = r.ctl(&["list-ports"]);
    assert_eq!(o.code, 0);
    let rows: Vec<Vec<&str>> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ID",
            "PROTO",
            "PARENTIP",
            "PARENTPORT",
            "CHILDIP",
            "CHILDPORT"
        ]
    );
    let mut ids: Vec<&str> = rows[1..].iter().map(|r| r[0]).collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "3"]);

    // Upstream's Go client lists and removes through our API too.
    if Path::new("/usr/bin/rootlessctl").exists() {
        let sock = format!("--socket={}", r.state.join("api.sock").display());
        let o = Run::program("/usr/bin/rootlessctl")
            .args([sock.as_str(), "list-ports", "--json"])
            .output();
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.stdout.lines().count(), 3, "{}", o.stdout);
        let o = Run::program("/usr/bin/rootlessctl")
            .args([sock.as_str(), "remove-ports", "2"])
            .output();
        assert_eq!((o.code, o.stdout.as_str()), (0, "2\n"), "{}", o.stderr);
    } else {
        let o = r.ctl(&["remove-ports", "2"]);
        assert_eq!(o.code, 0);
    }
    // Removal closes the listener at once.
    assert!(echo(format!("127.0.0.1:{p2}").parse().unwrap(), b"x").is_err());
    wait_echo(format!("127.0.0.1:{p1}").parse().unwrap());
    let o = r.ctl(&["remove-ports", "2"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.trim(), "error: unknown id: 2");
}

/// `conns` concurrent connections through a published port, each echoing `size` bytes with a
/// pattern of its own (crossed streams would show), must all come back intact.
fn burst(name: &str, conns: u32, size: u32) {
    let p = free_port();
    let Some(_r) = start_echo(name, &["-p".into(), format!("127.0.0.1:{p}:8000/tcp")]) else {
        skip!("slirp4netns or python3 is not installed");
    };
    let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
    wait_echo(addr);
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..size)
                    .map(|k: u32| (k.wrapping_mul(31).wrapping_add(i * 7)) as u8)
                    .collect();
                let back = echo(addr, &data).map_err(|e| format!("conn {i}: {e}"))?;
                if back == data {
                    Ok(())
                } else {
                    Err(format!("conn {i}: data differs"))
                }
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap().err())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn concurrent_1mb_echoes_arrive_intact() {
    burst("ports-load", 200, 1 << 20);
}

#[test]
fn a_50_way_burst_of_10mb_transfers_arrives_intact() {
    burst("ports-burst", 50, 10 << 20);
}

#[test]
fn bad_publish_spec_fails_cleanly() {
    let d = Scratch::new("ports-bad");
    for (spec, want) in [
        (
            "127.0.0.1:8080",
            "missing proto in PortSpec string: \"127.0.0.1:8080\"",
        ),
        ("1.2.3.4:1:1.2.3.5:2:80/tcp", "unexpected PortSpec string"),
    ] {
        let o = rootlesskit([
            "--net=slirp4netns",
            "--port-driver=builtin",
            "-p",
            spec,
            "true",
        ])
        .env("TMPDIR", d.path.to_str().unwrap())
        .timeout(Duration::from_secs(30))
        .output();
        assert_eq!(o.code, 1, "{spec}");
        assert!(o.stderr.contains(want), "{spec}: {}", o.stderr);
        assert_eq!(std::fs::read_dir(&d.path).unwrap().count(), 0, "{spec}");
    }
}

#[test]
fn slirp4netns_port_driver_forwards_and_removes() {
    let (p1, p2) = (free_port(), free_port());
    let Some(r) = start_echo_with(
        "ports-s4nn",
        "slirp4netns",
        &["-p".into(), format!("127.0.0.1:{p1}:8000/tcp")],
    ) else {
        skip!("slirp4netns or python3 is not installed");
    };
    wait_echo(format!("127.0.0.1:{p1}").parse().unwrap());
    let o = r.ctl(&["info"]);
    assert!(
        o.stdout
            .contains("- Port Driver: slirp4netns\n  - Supported protocols: [tcp tcp4 udp udp4]"),
        "{}",
        o.stdout
    );
    let o = r.ctl(&["add-ports", &format!("127.0.0.1:{p2}:8000/tcp")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = o.stdout.trim().to_string();
    wait_echo(format!("127.0.0.1:{p2}").parse().unwrap());
    let o = r.ctl(&["add-ports", &format!("[::1]:{p2}:8000/tcp6")]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.trim(), "error: unsupported protocol \"tcp6\"");
    let o = r.ctl(&["remove-ports", &id]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(echo(format!("127.0.0.1:{p2}").parse().unwrap(), b"x").is_err());
}

#[test]
fn source_ip_transparent_shows_the_client_address_inside() {
    let Some(ip) = host_ipv4() else {
        skip!("the host has no non-loopback IPv4 address");
    };
    for (flag, transparent) in [
        ("--source-ip-transparent=true", true),
        ("--source-ip-transparent=false", false),
    ] {
        let p = free_port();
        let Some(_r) = start_echo(
            "ports-transparent",
            &[flag.into(), "-p".into(), format!("0.0.0.0:{p}:8002/tcp")],
        ) else {
            skip!("slirp4netns or python3 is not installed");
        };
        let to: SocketAddr = format!("{ip}:{p}").parse().unwrap();
        let got = ci::wait_for(Duration::from_secs(15), || seen_from(to));
        assert!(got.is_some(), "no answer through {to}");
        let (client, seen) = got.unwrap();
        if transparent {
            // The server inside sees the client's own address and port.
            assert_eq!(seen, client, "{flag}");
        } else {
            assert!(seen.starts_with("127.0.0.1:"), "{flag}: {seen}");
        }
        // A client on the host's loopback is not one inside: it stays the namespace's own.
        let (_, seen) = seen_from(format!("127.0.0.1:{p}").parse().unwrap()).unwrap();
        assert!(seen.starts_with("127.0.0.1:"), "{flag}: {seen}");
    }
}

#[test]
fn source_ip_transparent_in_a_detached_namespace() {
    let Some(ip) = host_ipv4() else {
        skip!("the host has no non-loopback IPv4 address");
    };
    let p = free_port();
    let Some(_r) = start_echo(
        "ports-transparent-detached",
        &[
            "--detach-netns".into(),
            "-p".into(),
            format!("0.0.0.0:{p}:8002/tcp"),
            "-p".into(),
            format!("0.0.0.0:{p}:8003/udp"),
        ],
    ) else {
        skip!("slirp4netns or python3 is not installed");
    };
    // The routing and the sockets are made in the detached namespace, not the child's own.
    let to: SocketAddr = format!("{ip}:{p}").parse().unwrap();
    let got = ci::wait_for(Duration::from_secs(15), || seen_from(to));
    assert!(got.is_some(), "no answer through {to}");
    let (client, seen) = got.unwrap();
    assert_eq!(seen, client, "tcp");
    let c = UdpSocket::bind(format!("{ip}:0")).unwrap();
    let seen = udp_seen_from(&c, to);
    assert_eq!(seen, Some(c.local_addr().unwrap().to_string()), "udp");
}

/// The host's first global IPv6 address (from `/proc/net/if_inet6`), if it has one.
fn host_ipv6() -> Option<std::net::Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    table.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Fields: address (32 hex digits), index, prefix length, scope, flags, name.
        if f.len() < 6 || f[3] != "00" {
            return None;
        }
        let bits = u128::from_str_radix(f[0], 16).ok()?;
        let ip = std::net::Ipv6Addr::from(bits);
        (!ip.is_loopback()).then_some(ip)
    })
}

#[test]
fn source_ip_transparent_over_ipv6() {
    let Some(ip) = host_ipv6() else {
        // Not a skip: a host without IPv6 beyond loopback has nothing to forward here.
        eprintln!("the host has no global IPv6 address: nothing to test");
        return;
    };
    let p = free_port();
    let Some(_r) = start_echo(
        "ports-transparent-v6",
        &[
            "-p".into(),
            format!("[::]:{p}:[::1]:8005/tcp6"),
            "-p".into(),
            format!("[::]:{p}:[::1]:8004/udp6"),
        ],
    ) else {
        skip!("slirp4netns or python3 is not installed");
    };
    let to = SocketAddr::new(IpAddr::V6(ip), p);
    let got = ci::wait_for(Duration::from_secs(15), || seen_from(to));
    assert!(got.is_some(), "no answer through {to}");
    // Inside, the server sees the client's IPv6 address and port, for TCP and for UDP.
    let (client, seen) = got.unwrap();
    let client: SocketAddr = client.parse().unwrap();
    assert_eq!(seen, format!("{}:{}", client.ip(), client.port()), "tcp");
    let c = UdpSocket::bind(SocketAddr::new(IpAddr::V6(ip), 0)).unwrap();
    let local = c.local_addr().unwrap();
    assert_eq!(
        udp_seen_from(&c, to),
        Some(format!("{}:{}", local.ip(), local.port())),
        "udp"
    );
    // From the host's loopback it stays the namespace's own.
    let lo = UdpSocket::bind("[::1]:0").unwrap();
    let seen = udp_seen_from(&lo, format!("[::1]:{p}").parse().unwrap());
    assert!(
        seen.as_deref().is_some_and(|s| s.starts_with("::1:")),
        "{seen:?}"
    );
}

/// Table 101 (UDP replies to transparent flows) inside the namespace, when the tests run as
/// root and can look there with `nsenter` and `ip`.
fn udp_reply_routes(r: &Running) -> Option<String> {
    if !ci::am_root() || !ci::have("nsenter") || !ci::have("ip") {
        return None;
    }
    let pid = std::fs::read_to_string(r.state.join("child_pid")).ok()?;
    let o = Run::program("nsenter")
        .args([
            format!("--net=/proc/{}/ns/net", pid.trim()),
            "ip".into(),
            "-4".into(),
            "route".into(),
            "show".into(),
            "table".into(),
            "101".into(),
        ])
        .as_ids(0, 0)
        .output();
    if o.stderr.contains("table does not exist") {
        // No route in it (yet, or any more).
        return Some(String::new());
    }
    assert_eq!(o.code, 0, "nsenter ip route: {}", o.stderr);
    Some(o.stdout)
}

/// What the UDP server on 8003 inside says a datagram from `sock` to `to` came from.
fn udp_seen_from(sock: &UdpSocket, to: SocketAddr) -> Option<String> {
    let back = udp_echo(sock, to, b"who").ok()?;
    let text = String::from_utf8(back).ok()?;
    let mut words = text.split_whitespace();
    Some(format!("{}:{}", words.next()?, words.next()?))
}

#[test]
fn source_ip_transparent_udp_shows_the_client_address_inside() {
    let Some(ip) = host_ipv4() else {
        skip!("the host has no non-loopback IPv4 address");
    };
    for (flag, transparent) in [
        ("--source-ip-transparent=true", true),
        ("--source-ip-transparent=false", false),
    ] {
        let p = free_port();
        let Some(r) = start_echo(
            "ports-udp-transparent",
            &[flag.into(), "-p".into(), format!("0.0.0.0:{p}:8003/udp")],
        ) else {
            skip!("slirp4netns or python3 is not installed");
        };
        let to: SocketAddr = format!("{ip}:{p}").parse().unwrap();
        // Two clients on the host's address, so two flows share one reply route inside.
        let clients: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind(format!("{ip}:0")).unwrap())
            .collect();
        let seen = ci::wait_for(Duration::from_secs(15), || udp_seen_from(&clients[0], to));
        assert!(seen.is_some(), "{flag}: no answer through {to}");
        for round in 0..3 {
            for c in &clients {
                let seen = udp_seen_from(c, to)
                    .unwrap_or_else(|| panic!("{flag}: round {round}: no answer"));
                if transparent {
                    // The server inside sees the client's own address and port, and its
                    // answer, sent to that address, still comes back through the port.
                    assert_eq!(seen, c.local_addr().unwrap().to_string(), "{flag}");
                } else {
                    assert!(seen.starts_with("127.0.0.1:"), "{flag}: {seen}");
                }
            }
        }
        // Inside, one local route for the client address carries both flows' replies.
        let routes = udp_reply_routes(&r);
        if let Some(routes) = &routes {
            let want = if transparent { 1 } else { 0 };
            assert_eq!(
                routes.matches(&format!("local {ip} ")).count(),
                want,
                "{flag}: {routes}"
            );
        }
        // A client on the host's loopback is not one inside: it stays the namespace's own.
        let lo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let seen = udp_seen_from(&lo, format!("127.0.0.1:{p}").parse().unwrap());
        assert!(
            seen.as_deref().is_some_and(|s| s.starts_with("127.0.0.1:")),
            "{flag}: {seen:?}"
        );
        // Removing the port and publishing it again starts over cleanly: the route goes with
        // the port's last flow.
        let o = r.ctl(&["remove-ports", "1"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        if routes.is_some() {
            // The child deletes it right after the answer to remove-ports; give it a moment.
            let mut after = String::new();
            let gone = ci::wait_until(Duration::from_secs(5), || {
                after = udp_reply_routes(&r).unwrap_or_default();
                !after.contains(&format!("local {ip} "))
            });
            assert!(gone, "{flag}: {after}");
        }
        let o = r.ctl(&["add-ports", &format!("0.0.0.0:{p}:8003/udp")]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let c = UdpSocket::bind(format!("{ip}:0")).unwrap();
        let again = ci::wait_for(Duration::from_secs(5), || udp_seen_from(&c, to));
        assert!(
            again.is_some(),
            "{flag}: no answer after the port came back"
        );
        if transparent {
            assert_eq!(again.unwrap(), c.local_addr().unwrap().to_string());
        }
    }
}

/// Sends `data` from `sock` to `to` and waits up to a second for the answer.
fn udp_echo(sock: &UdpSocket, to: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    sock.send_to(data, to)?;
    let mut back = vec![0u8; 65536];
    let (n, from) = sock.recv_from(&mut back)?;
    if from != to {
        return Err(std::io::Error::other(format!("answer from {from}")));
    }
    back.truncate(n);
    Ok(back)
}

/// Retries until the UDP server inside answers through `to`.
fn wait_udp_echo(to: SocketAddr) {
    let bind = if to.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let sock = UdpSocket::bind(bind).unwrap();
    assert!(
        ci::wait_until(Duration::from_secs(15), || udp_echo(&sock, to, b"ping")
            .is_ok_and(|b| b == b"ping")),
        "no udp echo through {to}"
    );
}

#[test]
fn udp_datagrams_from_several_clients_come_back_to_each() {
    let (p1, p2) = (free_port(), free_port());
    let Some(r) = start_echo(
        "ports-udp",
        &["-p".into(), format!("127.0.0.1:{p1}:8001/udp")],
    ) else {
        skip!("slirp4netns or python3 is not installed");
    };
    let to: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    wait_udp_echo(to);
    let clients: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for i in 0..200u32 {
        let c = &clients[(i % 4) as usize];
        // Distinct sizes and contents, so a reply sent to the wrong client would show.
        let data: Vec<u8> = (0..(i * 37 % 1400 + 1))
            .map(|k| (k ^ i ^ (i % 4) << 6) as u8)
            .collect();
        let back = udp_echo(c, to, &data).unwrap_or_else(|e| panic!("datagram {i}: {e}"));
        assert_eq!(back, data, "datagram {i}");
    }
    // udp on every address takes both families.
    let o = r.ctl(&["add-ports", &format!("0.0.0.0:{p2}:8001/udp")]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "2\n"), "{}", o.stderr);
    wait_udp_echo(format!("[::1]:{p2}").parse().unwrap());
    wait_udp_echo(format!("127.0.0.1:{p2}").parse().unwrap());
    let o = r.ctl(&["remove-ports", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // The port is free again once removed.
    assert!(UdpSocket::bind(to).is_ok());
}

#[test]
fn privileged_port_error_says_how_to_allow_it() {
    // Upstream's hint, which rootless Docker users read in `docker run -p 80:80`'s error.
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if start == 0 {
        skip!("net.ipv4.ip_unprivileged_port_start is 0: no port is privileged here");
    }
    let port = start - 1;
    let Some(r) = start_echo("ports-privileged", &[]) else {
        skip!("slirp4netns or python3 is not installed");
    };
    let o = r.ctl(&["add-ports", &format!("127.0.0.1:{port}:8000/tcp")]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(
        o.stderr.trim(),
        format!(
            "error: cannot expose privileged port {port}, you can add 'net.ipv4.ip_unprivileged_port_start={port}' to /etc/sysctl.conf (currently {start}), or set CAP_NET_BIND_SERVICE on rootlesskit binary, or choose a larger port number (>= {start}): listen tcp 127.0.0.1:{port}: bind: permission denied"
        )
    );
    // Nothing was published.
    assert_eq!(r.ctl(&["list-ports"]).stdout.lines().count(), 1);
}
