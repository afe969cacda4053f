//! UDP errors inside `--net=gvisor-tap-vsock`, run as the unprivileged test user: a connected
//! UDP client in the namespace of a closed port on the host's loopback, reached through the
//! gateway, is refused at once (the host's port unreachable comes back as ICMP port
//! unreachable from the gateway), over IPv4 and, with `--ipv6`, over IPv6 (`fd00::2` is the
//! host's `::1`); an open port still answers.

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use ci::{ok, rootlesskit, skip, tun_usable};

/// A UDP echo on `addr`'s loopback and a port of the same family that nothing listens on;
/// `None` when the family has no loopback.
fn echo_and_closed(addr: &str) -> Option<(u16, u16)> {
    let closed = UdpSocket::bind((addr, 0)).ok()?;
    let echo = UdpSocket::bind((addr, 0)).ok()?;
    let closed_port = closed.local_addr().ok()?.port();
    drop(closed);
    let port = echo.local_addr().ok()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    Some((port, closed_port))
}

/// Python that sends one datagram on a connected socket to `gw`:`port` for each port and
/// prints, a line each, what came back: the echo, `refused <seconds>` or `timeout`.
fn client(family: &str, gw: &str, ports: &[u16]) -> String {
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "python3 -c \"import socket, time
for p in [{ports}]:
  s = socket.socket(socket.{family}, socket.SOCK_DGRAM); s.settimeout(5); s.connect(('{gw}', p))
  t = time.monotonic()
  try:
    s.send(b'ping'); print(s.recv(100).decode())
  except ConnectionRefusedError: print('refused %.1f' % (time.monotonic() - t))
  except socket.timeout: print('timeout')
\""
    )
}

/// Whether `line` says refused within two seconds (without the errors: a five-second timeout).
fn refused_quickly(line: &str) -> bool {
    line.strip_prefix("refused ")
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(|t| t < 2.0)
}

fn need_tap_and_python() -> bool {
    tun_usable() && Path::new("/usr/bin/python3").exists() && Path::new("/bin/busybox").exists()
}

#[test]
fn a_closed_host_port_is_refused_at_once_and_an_open_one_echoes() {
    if !need_tap_and_python() {
        skip!("the tap, python3 or busybox is not usable");
    }
    let (open, closed) = echo_and_closed("127.0.0.1").unwrap();
    let script = client("AF_INET", "10.0.2.1", &[closed, open, closed]);
    let o = rootlesskit(["--net=gvisor-tap-vsock", "sh", "-c", &script])
        .timeout(Duration::from_secs(90))
        .output();
    ok(&o);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}\n{}", o.stdout, o.stderr);
    assert!(refused_quickly(lines[0]), "{}", o.stdout);
    assert_eq!(lines[1], "ping", "{}", o.stdout);
    assert!(refused_quickly(lines[2]), "{}", o.stdout);
}

#[test]
fn a_closed_host_port_is_refused_at_once_over_ipv6() {
    if !need_tap_and_python() {
        skip!("the tap, python3 or busybox is not usable");
    }
    let Some((open, closed)) = echo_and_closed("::1") else {
        skip!("the host has no IPv6 loopback");
    };
    // Once the SLAAC address is no longer tentative.
    let script = format!(
        "i=0; while [ $i -lt 100 ]; do \
           awk '$1==\"fd000000000000005894effffee40cee\" && $5!~/[4-7c-f].$/ {{f=1}} END {{exit !f}}' /proc/net/if_inet6 && break; \
           i=$((i+1)); sleep 0.1; done; {}",
        client("AF_INET6", "fd00::2", &[closed, open])
    );
    let o = rootlesskit(["--net=gvisor-tap-vsock", "--ipv6", "sh", "-c", &script])
        .timeout(Duration::from_secs(90))
        .output();
    ok(&o);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}\n{}", o.stdout, o.stderr);
    assert!(refused_quickly(lines[0]), "{}", o.stdout);
    assert_eq!(lines[1], "ping", "{}", o.stdout);
}
