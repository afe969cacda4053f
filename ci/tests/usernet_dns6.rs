//! DNS of `--net=gvisor-tap-vsock` with IPv6 nameservers and failure answers. The host's
//! `/etc/resolv.conf` is a private one (bind mounted in a mount namespace of rootlesskit's own,
//! which takes root; rootlesskit then runs as the test user) listing resolvers the test starts
//! on loopback addresses:
//! - only `nameserver ::1`: a query to the gateway is answered, over IPv4 (10.0.2.1) and, with
//!   `--ipv6`, over IPv6 (fd00::2) (the old code ignored IPv6 nameservers: no DNS at all);
//! - a silent `127.0.0.91` then `::1`: failover crosses families;
//! - a refusing `127.0.0.92` then an answering `127.0.0.93`: the REFUSED answer is not passed
//!   on, the second nameserver is asked at once (the old code passed REFUSED on); with only the
//!   refusing one, REFUSED comes back at once (not a timeout); refused by the first and no
//!   answer from the second, the REFUSED comes back after the second's second of grace;
//! - a nameserver refusing DNS over TCP: the connection goes on to the next, and the refusals
//!   count against the first's health.
//!
//! The tests share `[::1]:53`, so they run one at a time.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ci::dns::{Mode, Resolver};
use ci::{Scratch, have, skip, tun_usable};

/// A DNS-over-TCP resolver on `addr`:53 answering every query with 192.0.2.7, counting them;
/// stops when the returned flag is set. `None` when the address is taken.
fn tcp_resolver(addr: &str) -> Option<(Arc<AtomicUsize>, Arc<AtomicBool>)> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind((addr, 53)).ok()?;
    l.set_nonblocking(true).ok()?;
    let seen = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (count, stopped) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        while !stopped.load(Ordering::SeqCst) {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = c.set_nonblocking(false);
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut len = [0u8; 2];
            if c.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if q.len() < 17 || c.read_exact(&mut q).is_err() {
                continue;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let a = ci::dns::answer_a(&q);
            let mut r = (a.len() as u16).to_be_bytes().to_vec();
            r.extend_from_slice(&a);
            let _ = c.write_all(&r);
        }
    });
    Some((seen, stop))
}

/// One test at a time holds `[::1]:53` (and the loopback resolvers).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Inside: an A query for `host.rkrs.test` to each of `servers` (`4:ADDR` over IPv4, `6:ADDR`
/// over IPv6, after waiting for the SLAAC address, `t4:ADDR` over TCP and IPv4), printing a line each: `answer ADDR SECS`,
/// `rcode N SECS` for an answer without records, or `timeout` after four seconds.
fn client(servers: &[&str]) -> String {
    let list = servers
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
import socket, struct, time
def ready6():
    for _ in range(100):
        for l in open('/proc/net/if_inet6'):
            w = l.split()
            if w[0].startswith('fd00') and not int(w[4], 16) & 0x40:
                return
        time.sleep(0.1)
for i, s in enumerate([{list}]):
    fam, addr = s.split(':', 1)
    if fam == '6':
        ready6()
    q = struct.pack('>HHHHHH', 0x4200 + i, 0x0100, 1, 0, 0, 0)
    q += b'\x04host\x04rkrs\x04test\x00' + struct.pack('>HH', 1, 1)
    if fam == 't4':
        t = time.monotonic()
        try:
            sock = socket.create_connection((addr, 53), timeout=4)
            sock.sendall(struct.pack('>H', len(q)) + q)
            r = b''
            while len(r) < 2 or len(r) < 2 + struct.unpack('>H', r[:2])[0]:
                got = sock.recv(512)
                if not got:
                    break
                r += got
            print('answer', '.'.join(str(b) for b in r[-4:]), '%.2f' % (time.monotonic() - t))
        except OSError as e:
            print('error', type(e).__name__)
        continue
    sock = socket.socket(socket.AF_INET6 if fam == '6' else socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(4)
    t = time.monotonic()
    sock.sendto(q, (addr, 53))
    try:
        r = sock.recv(512)
        took = '%.2f' % (time.monotonic() - t)
        if r[7] > 0:
            print('answer', '.'.join(str(b) for b in r[-4:]), took)
        else:
            print('rcode', r[3] & 15, took)
    except socket.timeout:
        print('timeout')
"#
    )
}

/// Runs rootlesskit (`--net=gvisor-tap-vsock`, plus `extra`) as the test user with `resolv`
/// as the host's `/etc/resolv.conf`, running the [`client`] for `servers`; its lines.
fn run(name: &str, resolv: &str, extra: &str, servers: &[&str]) -> Vec<String> {
    let d = Scratch::new(name);
    std::fs::write(d.join("resolv.conf"), resolv).unwrap();
    std::fs::write(d.join("client.py"), client(servers)).unwrap();
    let client = d.join("client.py").display().to_string();
    let mut args = vec!["--net=gvisor-tap-vsock"];
    args.extend(extra.split_whitespace());
    args.extend(["--copy-up=/etc", "python3", &client]);
    let child = ci::dns::rootlesskit_with_resolv_conf(&d.join("resolv.conf"), &args)
        .expect("root and unshare, checked by unusable()")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = ci::wait_output(child, Duration::from_secs(90));
    let lines: Vec<String> = o.stdout.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), servers.len(), "{}\n{}", o.stdout, o.stderr);
    lines
}

/// Whether this host can run these tests (else the reason).
fn unusable() -> Option<&'static str> {
    if !tun_usable() || !have("python3") {
        return Some("the tap or python3 is not usable");
    }
    if !ci::am_root() || !have("unshare") || !have("setpriv") {
        return Some(
            "needs root, unshare and setpriv to give rootlesskit its own /etc/resolv.conf",
        );
    }
    None
}

/// The seconds of an `answer 192.0.2.7 SECS` line; fails on anything else.
fn answered(l: &str) -> f64 {
    let w: Vec<&str> = l.split_whitespace().collect();
    assert_eq!(w.get(..2), Some(&["answer", "192.0.2.7"][..]), "{l}");
    w[2].parse().unwrap()
}

#[test]
fn an_ipv6_only_resolv_conf_answers_over_both_families() {
    if let Some(why) = unusable() {
        skip!("{why}");
    }
    let _one = one_at_a_time();
    let Some(v6) = Resolver::start("::1", Mode::Answer) else {
        skip!("the host has no IPv6 loopback, or [::1]:53 is taken");
    };
    let lines = run(
        "usernet-dns6-only",
        "nameserver ::1\n",
        "--ipv6",
        &["4:10.0.2.1", "6:fd00::2"],
    );
    // Generous bounds: what matters is that an answer came at all (the old code had no
    // nameserver, so no DNS).
    assert!(answered(&lines[0]) < 3.0, "{lines:?}");
    assert!(answered(&lines[1]) < 3.0, "{lines:?}");
    assert!(v6.seen() >= 2, "{lines:?}");
}

#[test]
fn a_silent_ipv4_nameserver_fails_over_to_an_ipv6_one() {
    if let Some(why) = unusable() {
        skip!("{why}");
    }
    let _one = one_at_a_time();
    let (Some(v6), Some(silent)) = (
        Resolver::start("::1", Mode::Answer),
        Resolver::start("127.0.0.91", Mode::Silent),
    ) else {
        skip!("the host has no IPv6 loopback, or [::1]:53 or 127.0.0.91:53 is taken");
    };
    let lines = run(
        "usernet-dns6-mixed",
        "nameserver 127.0.0.91\nnameserver ::1\n",
        "",
        &["4:10.0.2.1"],
    );
    // After the silent one's second of grace.
    assert!(answered(&lines[0]) < 3.0, "{lines:?}");
    assert_eq!(silent.seen(), 1, "{lines:?}");
    assert!(v6.seen() >= 1, "{lines:?}");
}

#[test]
fn refused_goes_to_the_next_nameserver_at_once() {
    if let Some(why) = unusable() {
        skip!("{why}");
    }
    let _one = one_at_a_time();
    let (Some(refusing), Some(good)) = (
        Resolver::start("127.0.0.92", Mode::Refuse),
        Resolver::start("127.0.0.93", Mode::Answer),
    ) else {
        skip!("127.0.0.92:53 or 127.0.0.93:53 is taken");
    };
    let lines = run(
        "usernet-dns-refused",
        "nameserver 127.0.0.92\nnameserver 127.0.0.93\n",
        "",
        &["4:10.0.2.1"],
    );
    // The second nameserver's answer, well before a retry's second (the old code passed the
    // REFUSED on).
    assert!(answered(&lines[0]) < 0.9, "{lines:?}");
    assert_eq!((refusing.seen(), good.seen()), (1, 1), "{lines:?}");
    // With nothing else to ask, the refusal itself comes back at once.
    let lines = run(
        "usernet-dns-refused-only",
        "nameserver 127.0.0.92\n",
        "",
        &["4:10.0.2.1"],
    );
    let w: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(w.get(..2), Some(&["rcode", "5"][..]), "{lines:?}");
    assert!(w[2].parse::<f64>().unwrap() < 0.9, "{lines:?}");
    // Refused by the first, nothing from the second (silent 127.0.0.94): after the second's
    // second of grace the refusal held back comes back, not a timeout.
    drop(good);
    let Some(silent) = Resolver::start("127.0.0.94", Mode::Silent) else {
        skip!("127.0.0.94:53 is taken");
    };
    let lines = run(
        "usernet-dns-refused-silent",
        "nameserver 127.0.0.92\nnameserver 127.0.0.94\n",
        "",
        &["4:10.0.2.1"],
    );
    let w: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(w.get(..2), Some(&["rcode", "5"][..]), "{lines:?}");
    let took = w[2].parse::<f64>().unwrap();
    assert!((0.8..3.0).contains(&took), "{lines:?}");
    assert_eq!(silent.seen(), 1, "{lines:?}");
}

#[test]
fn dns_over_tcp_goes_on_when_a_nameserver_refuses_the_connection() {
    if let Some(why) = unusable() {
        skip!("{why}");
    }
    let _one = one_at_a_time();
    // 127.0.0.94 takes UDP (and says nothing) but refuses TCP; 127.0.0.95 answers over both.
    let (Some(silent), Some((good, stop)), Some(good_udp)) = (
        Resolver::start("127.0.0.94", Mode::Silent),
        tcp_resolver("127.0.0.95"),
        Resolver::start("127.0.0.95", Mode::Answer),
    ) else {
        skip!("127.0.0.94:53 or 127.0.0.95:53 is taken");
    };
    let lines = run(
        "usernet-dns-tcp-refused",
        "nameserver 127.0.0.94\nnameserver 127.0.0.95\n",
        "",
        &["t4:10.0.2.1", "t4:10.0.2.1", "4:10.0.2.1"],
    );
    stop.store(true, Ordering::SeqCst);
    // Over TCP the second nameserver answers (the old code reset the connection).
    assert!(answered(&lines[0]) < 3.0, "{lines:?}");
    assert!(answered(&lines[1]) < 3.0, "{lines:?}");
    assert_eq!(good.load(Ordering::SeqCst), 2, "{lines:?}");
    // Two refused connects count as two failures: the UDP query goes straight to the second
    // nameserver, the first never sees it (without that, it would go to the silent first and
    // be answered by the second only after a second).
    assert!(answered(&lines[2]) < 0.9, "{lines:?}");
    assert_eq!((silent.seen(), good_udp.seen()), (0, 1), "{lines:?}");
}
