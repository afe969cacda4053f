//! `--port-driver=gvisor-tap-vsock` on `--net=gvisor-tap-vsock`, as a user sees it, run as the
//! unprivileged test user: servers inside see the real address and port of a client that
//! connects from the host's own non-loopback address (TCP and UDP), a loopback client appears
//! as the gateway, `-p` at start, `rootlessctl add-ports/list-ports/remove-ports`, 1 MB
//! sha256-checked through a port, `--detach-netns`, `tcp6`/`udp6` ports with `--ipv6`, and
//! the driver refused on another network. And `--net=gvisor-tap-vsock --ipv6`: the SLAAC
//! address and default route inside, DNS in resolv.conf, ping of the gateway's IPv6 address,
//! TCP and UDP to the host's `::1` through it, and `--disable-host-loopback` blocking that.
// The test runs sha256sum on the host to check the digest the server inside sends.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use ci::ports::{Running, free_port};
use ci::{Scratch, rootlesskit, skip, tun_usable};

/// Inside the namespace: on TCP 8002 a server that tells each connection the address it came
/// from; on UDP 8003 one that answers each datagram with the address it came from; on TCP 8004
/// one that reads to EOF and answers with the sha256 of what it read; on TCP and UDP 8006 the
/// first two for IPv6.
const SERVERS: &str = "import socket,threading,hashlib
def peer6():
  try:
    p=socket.socket(socket.AF_INET6);p.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
    p.bind(('::',8006));p.listen(64)
  except OSError: return
  while True:
    c,a=p.accept();c.sendall(('%s %d\\n'%a[:2]).encode());c.close()
threading.Thread(target=peer6,daemon=True).start()
def upeer6():
  try:
    q=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);q.bind(('::',8006))
  except OSError: return
  while True:
    d,a=q.recvfrom(65536);q.sendto(('%s %d\\n'%a[:2]).encode(),a)
threading.Thread(target=upeer6,daemon=True).start()
def peer():
  p=socket.socket();p.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
  p.bind(('0.0.0.0',8002));p.listen(64)
  while True:
    c,a=p.accept();c.sendall(('%s %d\\n'%a).encode());c.close()
threading.Thread(target=peer,daemon=True).start()
def upeer():
  q=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);q.bind(('0.0.0.0',8003))
  while True:
    d,a=q.recvfrom(65536);q.sendto(('%s %d\\n'%a).encode(),a)
threading.Thread(target=upeer,daemon=True).start()
def digest(c):
  h=hashlib.sha256()
  while True:
    d=c.recv(65536)
    if not d: break
    h.update(d)
  c.sendall(h.hexdigest().encode());c.close()
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('0.0.0.0',8004));s.listen(64)
while True:
  c,_=s.accept();threading.Thread(target=digest,args=(c,),daemon=True).start()
";

/// `rootlesskit --net=gvisor-tap-vsock --port-driver=gvisor-tap-vsock EXTRA... python3`, the
/// servers above inside; `None` when the tap or python3 is missing.
fn start(name: &str, extra: &[String]) -> Option<Running> {
    if !tun_usable() || !Path::new("/usr/bin/python3").exists() {
        return None;
    }
    let mut flags = vec![
        "--net=gvisor-tap-vsock".into(),
        "--port-driver=gvisor-tap-vsock".into(),
    ];
    flags.extend(extra.iter().cloned());
    Some(Running::start(name, &flags, SERVERS))
}

/// Connects to `port` at the host's address `ip` (the kernel takes `ip` as the source too)
/// and reads what the server says: the address it saw; and the client's own address.
fn seen_tcp(ip: IpAddr, port: u16) -> std::io::Result<(String, SocketAddr)> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok((text.trim().to_string(), s.local_addr()?))
}

/// Retries until the server inside answers through `port` at `ip`; what it said.
fn wait_seen(ip: IpAddr, port: u16) -> (String, SocketAddr) {
    ci::wait_for(Duration::from_secs(15), || {
        seen_tcp(ip, port).ok().filter(|(t, _)| !t.is_empty())
    })
    .unwrap_or_else(|| panic!("no answer through {ip} port {port}"))
}

/// One datagram from a socket bound to `ip` to `port` at `ip`; the answer and our address.
fn seen_udp(ip: IpAddr, port: u16) -> Option<(String, SocketAddr)> {
    let u = UdpSocket::bind(SocketAddr::new(ip, 0)).ok()?;
    u.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    ci::wait_for(Duration::from_secs(15), || {
        u.send_to(b"who", SocketAddr::new(ip, port)).ok()?;
        let mut buf = [0u8; 128];
        let (n, _) = u.recv_from(&mut buf).ok()?;
        Some((
            String::from_utf8_lossy(&buf[..n]).trim().to_string(),
            u.local_addr().ok()?,
        ))
    })
}

#[test]
fn servers_inside_see_the_clients_real_address() {
    let Some(host) = ci::sid::host_ipv4() else {
        skip!("the host has no non-loopback IPv4 address");
    };
    let (pt, pu) = (free_port(), free_port());
    let Some(r) = start(
        "uports-real",
        &[
            "-p".into(),
            format!("0.0.0.0:{pt}:8002/tcp"),
            "-p".into(),
            format!("0.0.0.0:{pu}:8003/udp"),
        ],
    ) else {
        skip!("the tap or python3 is not usable");
    };
    let host = IpAddr::V4(host);
    // TCP: the server sees the client's own address and port (upstream: the gateway's).
    let (seen, me) = wait_seen(host, pt);
    assert_eq!(seen, format!("{} {}", me.ip(), me.port()));
    // A loopback client cannot appear as itself inside (a martian there): the gateway, with
    // the client's port.
    let (seen, me) = wait_seen(IpAddr::V4(Ipv4Addr::LOCALHOST), pt);
    assert_eq!(seen, format!("10.0.2.1 {}", me.port()));
    // UDP likewise, and the answer comes back to that client.
    let (seen, me) = seen_udp(host, pu).expect("no UDP answer");
    assert_eq!(seen, format!("{} {}", me.ip(), me.port()));
    let (seen, me) = seen_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), pu).expect("no UDP answer");
    assert_eq!(seen, format!("10.0.2.1 {}", me.port()));
    drop(r);
}

/// A client that comes back from the same address and port while the server inside still
/// holds the last connection in TIME_WAIT (it closed first) is served at once: our SYN gets
/// that TIME_WAIT's acknowledgment, which we reset, as a client's kernel does, and the SYN
/// goes again. (Without that, whether it was served depended on how our initial sequence
/// number fell against the old connection's: six tries always met a stall.)
#[test]
fn a_client_back_from_the_same_port_is_served_at_once() {
    let pt = free_port();
    let Some(r) = start(
        "uports-reuse",
        &["-p".into(), format!("127.0.0.1:{pt}:8002/tcp")],
    ) else {
        skip!("the tap or python3 is not usable");
    };
    let _ = wait_seen(IpAddr::V4(Ipv4Addr::LOCALHOST), pt);
    let me = free_port();
    // Six connections from 127.0.0.1:`me`, each read to EOF within 5 s (a connect refused
    // because the host still holds the last one is tried again).
    let client = format!(
        "import socket, time
for i in range(6):
    for _ in range(50):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('127.0.0.1', {me}))
        s.settimeout(5)
        try:
            s.connect(('127.0.0.1', {pt}))
            break
        except OSError:
            s.close()
            time.sleep(0.1)
    try:
        r = b''
        while True:
            d = s.recv(100)
            if not d:
                break
            r += d
        print(r.decode().strip())
    except socket.timeout:
        print('timeout')
    s.close()
"
    );
    let o = std::process::Command::new("python3")
        .args(["-c", &client])
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&o.stdout).into_owned();
    let want = format!("10.0.2.1 {me}\n").repeat(6);
    assert_eq!(lines, want, "{}", String::from_utf8_lossy(&o.stderr));
    drop(r);
}

#[test]
fn ports_added_listed_removed_and_1mb_arrives_intact() {
    let (p1, p2) = (free_port(), free_port());
    let Some(r) = start(
        "uports-ctl",
        &["-p".into(), format!("127.0.0.1:{p1}:8002/tcp")],
    ) else {
        skip!("the tap or python3 is not usable");
    };
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    wait_seen(lo, p1);

    let o = r.ctl(&["info", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let compact: String = o.stdout.split_whitespace().collect();
    assert!(
        compact.contains(r#""portDriver":{"driver":"gvisor-tap-vsock","protos":["tcp","tcp4","udp","udp4"],"disallowLoopbackChildIP":true}"#),
        "{}",
        o.stdout
    );
    let o = r.ctl(&["add-ports", &format!("127.0.0.1:{p2}:8004/tcp")]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "2\n"), "{}", o.stderr);
    // 1 MB through the port, half-closed, answered with its sha256.
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = {
        let dir = Scratch::new("uports-sha");
        let f = dir.join("data");
        std::fs::write(&f, &data).unwrap();
        let o = std::process::Command::new("sha256sum")
            .arg(&f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let got = ci::wait_for(Duration::from_secs(15), || {
        let mut s = TcpStream::connect(("127.0.0.1", p2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        s.write_all(&data).ok()?;
        s.shutdown(std::net::Shutdown::Write).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(got.as_deref(), Some(want.as_str()));

    // Conflicts, families and protocols as upstream words them.
    let o = r.ctl(&["add-ports", &format!("127.0.0.1:{p1}:9000/tcp")]);
    assert_eq!((o.code, o.stderr.trim()), (1, "error: conflict with ID 1"));
    // Without --ipv6 no tcp6.
    let o = r.ctl(&["add-ports", &format!("[::1]:{p1}:9000/tcp6")]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("unsupported protocol"), "{}", o.stderr);

    let o = r.ctl(&["list-ports"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows: Vec<Vec<&str>> = o
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            [
                "1",
                "tcp",
                "127.0.0.1",
                &p1.to_string(),
                "10.0.2.100",
                "8002"
            ],
            [
                "2",
                "tcp",
                "127.0.0.1",
                &p2.to_string(),
                "10.0.2.100",
                "8004"
            ],
        ],
        "{}",
        o.stdout
    );
    let o = r.ctl(&["remove-ports", "1"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "1\n"), "{}", o.stderr);
    // Removal closes the listener at once.
    assert!(TcpStream::connect(("127.0.0.1", p1)).is_err());
    let o = r.ctl(&["remove-ports", "1"]);
    assert_eq!((o.code, o.stderr.trim()), (1, "error: unknown port id: 1"));
    // UDP added through the API.
    let pu = free_port();
    let o = r.ctl(&["add-ports", &format!("127.0.0.1:{pu}:8003/udp")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (seen, me) = seen_udp(lo, pu).expect("no UDP answer");
    assert_eq!(seen, format!("10.0.2.1 {}", me.port()));
}

#[test]
fn the_port_driver_needs_its_network() {
    let dir = Scratch::new("uports-refused");
    ci::assert_rejected(
        &[
            "--net=slirp4netns",
            "--port-driver=gvisor-tap-vsock",
            "true",
        ],
        "port driver requires gvisor-tap-vsock network",
        &dir.path,
    );
}

/// Inside, once the SLAAC address is no longer tentative: the addresses, the IPv6 routes,
/// resolv.conf, a ping of fd00::2, a TCP exchange with [fd00::2]:`port`, and a UDP one.
fn ipv6_script(port: u16) -> String {
    format!(
        "i=0; while [ $i -lt 100 ]; do \
           awk '$1==\"fd000000000000005894effffee40cee\" && $5!~/[4-7c-f].$/ {{f=1}} END {{exit !f}}' /proc/net/if_inet6 && break; \
           i=$((i+1)); sleep 0.1; done; \
         cat /proc/net/if_inet6; echo --; cat /proc/net/ipv6_route; echo --; cat /etc/resolv.conf; echo --; \
         busybox ping -6 -c 2 -W 5 fd00::2 >/dev/null && echo ping-ok; echo --; \
         python3 -c \"import socket
try:
  s=socket.create_connection(('fd00::2',{port}),timeout=10);s.sendall(b'hi6');s.shutdown(socket.SHUT_WR);print(s.makefile('rb').read().decode())
except OSError as e: print('refused', e.errno)\"; echo --; \
         python3 -c \"import socket
u=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);u.settimeout(5)
try:
  u.sendto(b'udp6',('fd00::2',{port}));print(u.recv(100).decode())
except OSError as e: print('no answer', e.errno)\""
    )
}

/// A host listener on [::1] answering "pong:<what it read>", and a UDP echo on the same port;
/// `None` without IPv6 loopback.
fn pong6() -> Option<u16> {
    let l = TcpListener::bind("[::1]:0").ok()?;
    let port = l.local_addr().ok()?.port();
    // And a UDP echo on the same port.
    let u = UdpSocket::bind(("::1", port)).ok()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], from);
        }
    });
    ci::serve_pong(l);
    Some(port)
}

fn run_ipv6(extra: &[&str], port: u16) -> ci::Output {
    let script = ipv6_script(port);
    let mut args = vec!["--net=gvisor-tap-vsock", "--ipv6", "--copy-up=/etc"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["sh", "-c", &script]);
    let o = rootlesskit(args).timeout(Duration::from_secs(90)).output();
    ci::ok(&o);
    o
}

#[test]
fn ipv6_address_route_dns_ping_and_the_hosts_loopback() {
    if !tun_usable()
        || !Path::new("/usr/bin/python3").exists()
        || !Path::new("/bin/busybox").exists()
    {
        skip!("the tap, python3 or busybox is not usable");
    }
    let Some(port) = pong6() else {
        skip!("the host has no IPv6 loopback");
    };
    let o = run_ipv6(&[], port);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts.len(), 6, "{}", o.stdout);
    // The SLAAC address on fd00::/64, from the tap's MAC.
    assert!(
        parts[0]
            .lines()
            .any(|l| l.starts_with("fd000000000000005894effffee40cee ") && l.contains(" 40 ")),
        "{}",
        parts[0]
    );
    // The default route via the router's link-local address.
    assert!(
        parts[1]
            .lines()
            .any(|l| l.starts_with("00000000000000000000000000000000 00 ")
                && l.contains("fe800000000000000000000000000002")),
        "{}",
        parts[1]
    );
    assert_eq!(parts[2], "nameserver 10.0.2.1\nnameserver fd00::2\n");
    assert_eq!(parts[3], "ping-ok\n", "{}", o.stderr);
    assert_eq!(parts[4].trim(), "pong:hi6", "{}", o.stderr);
    assert_eq!(parts[5].trim(), "udp6", "{}", o.stderr);

    // --disable-host-loopback blocks the way to ::1 (the control above got through).
    let o = run_ipv6(&["--disable-host-loopback"], port);
    let parts: Vec<&str> = o.stdout.split("--\n").collect();
    assert_eq!(parts.len(), 6, "{}", o.stdout);
    assert_eq!(parts[3], "ping-ok\n", "{}", o.stderr);
    assert!(parts[4].starts_with("refused"), "{}", parts[4]);
    assert!(parts[5].starts_with("no answer"), "{}", parts[5]);
}

#[test]
fn ipv6_ports_reach_the_namespaces_ipv6_address() {
    if TcpListener::bind("[::1]:0").is_err() {
        skip!("the host has no IPv6 loopback");
    }
    let (pt, pu) = (free_port(), free_port());
    let Some(r) = start(
        "uports-v6",
        &[
            "--ipv6".into(),
            "-p".into(),
            format!("[::1]:{pt}:8006/tcp6"),
        ],
    ) else {
        skip!("the tap or python3 is not usable");
    };
    let o = r.ctl(&["info", "--json"]);
    let compact: String = o.stdout.split_whitespace().collect();
    assert!(
        compact.contains(r#""protos":["tcp","tcp4","tcp6","udp","udp4","udp6"]"#),
        "{}",
        o.stdout
    );
    // The server listens on the namespace's SLAAC address (after its duplicate address
    // detection); a client on the host's ::1 appears as the gateway's fd00::2, with its port.
    let lo6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let (seen, me) = ci::wait_for(Duration::from_secs(20), || {
        seen_tcp(lo6, pt).ok().filter(|(t, _)| !t.is_empty())
    })
    .expect("no answer through the tcp6 port");
    assert_eq!(seen, format!("fd00::2 {}", me.port()));
    let o = r.ctl(&["add-ports", &format!("[::1]:{pu}:8006/udp6")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (seen, me) = seen_udp(lo6, pu).expect("no UDP answer through the udp6 port");
    assert_eq!(seen, format!("fd00::2 {}", me.port()));
    let o = r.ctl(&["list-ports"]);
    assert!(
        o.stdout.contains("fd00::5894:efff:fee4:cee"),
        "{}",
        o.stdout
    );
}

#[test]
fn ports_lead_into_a_detached_namespace() {
    let Some(host) = ci::sid::host_ipv4() else {
        skip!("the host has no non-loopback IPv4 address");
    };
    if !Path::new("/usr/bin/nsenter").exists() {
        skip!("nsenter is not installed");
    }
    let p = free_port();
    let Some(_r) = start(
        "uports-detach",
        &[
            "--detach-netns".into(),
            "-p".into(),
            format!("0.0.0.0:{p}:8002/tcp"),
        ],
    ) else {
        skip!("the tap or python3 is not usable");
    };
    let (seen, me) = wait_seen(IpAddr::V4(host), p);
    assert_eq!(seen, format!("{} {}", me.ip(), me.port()));
}
