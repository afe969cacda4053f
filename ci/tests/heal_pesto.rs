//! `--restart-net-driver` with `--port-driver=pesto`: the ports published through pesto are
//! rules in pasta's own forwarding table, so a pasta killed under a running target comes back
//! without them unless they are added again. Run with Debian sid's passt (pasta 2026 and
//! pesto) inside the sid rootfs (`ci::sid`), as the test user; the network namespace there is
//! the host's, so a published port is reached from here directly. What a user sees: after
//! each kill, the ports (`-p` at start, TCP and UDP from `rootlessctl add-ports`) answer again
//! within a second, `list-ports` shows the same ids and specs, and ids given later go on
//! from there and remove the right rule.
//!
//! Timing: measured from just before `kill -9` to the first HTTP answer through a re-added
//! port (the old pasta is gone by then, so it came through the new one). A restart takes 50 or
//! 100 ms of delay plus pasta's start and one pesto run per port (milliseconds each here); the
//! old code never forwards the port again, so the generous bound still fails it.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ci::sid::{self, Rootlesskit};
use ci::skip;

/// How soon after a kill a published port must answer again.
const BACK_WITHIN: Duration = Duration::from_secs(1);

/// The sid tree with pasta, pesto, busybox and socat, or why this test cannot run.
fn sid_root() -> Result<PathBuf, String> {
    sid::root_with(&[
        "/usr/bin/pasta",
        "/usr/bin/pesto",
        "/usr/bin/busybox",
        "/usr/bin/socat",
    ])
}

/// An HTTP server on 8000 and a UDP echo server on 8001, on the namespace's address (where
/// pesto's rules lead).
const SERVERS: &str = "busybox httpd -f -p 10.0.2.100:8000 -h WWW &\n\
                       exec /usr/bin/socat UDP-RECVFROM:8001,bind=10.0.2.100,fork EXEC:/bin/cat";

/// The one pasta among rootlesskit's children.
fn pasta(rk: &Rootlesskit) -> u32 {
    let found: Vec<u32> = ci::children_of(rk.pid())
        .into_iter()
        .filter(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            (comm.starts_with("pasta") || comm.starts_with("passt")) && ci::pid_alive(*p)
        })
        .collect();
    assert_eq!(found.len(), 1, "pasta processes: {found:?}\n{}", rk.log());
    found[0]
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How long after `since` the page came through `port`, polled for up to 5 s.
fn page_back(port: u16, since: Instant) -> Option<Duration> {
    let deadline = since + Duration::from_secs(5);
    while Instant::now() < deadline {
        if sid::http_get(addr(port)).as_deref() == Ok(sid::PAGE) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn pesto_ports_come_back_with_a_restarted_pasta() {
    let root = match sid_root() {
        Ok(r) => r,
        Err(why) => skip!("{why}"),
    };
    let [at_start, tcp, udp, later] = sid::free_ports();
    let spec0 = format!("127.0.0.1:{at_start}:8000/tcp");
    let rk = Rootlesskit::start(
        &root,
        "heal-pesto",
        &[
            "--net=pasta",
            "--port-driver=pesto",
            "--restart-net-driver",
            "-p",
            &spec0,
        ],
        SERVERS,
    );
    assert_eq!(
        rk.ctl_ok(&["add-ports", &format!("127.0.0.1:{tcp}:8000/tcp")]),
        "2\n"
    );
    assert_eq!(
        rk.ctl_ok(&["add-ports", &format!("127.0.0.1:{udp}:8001/udp")]),
        "3\n"
    );
    assert_eq!(sid::fetch(addr(tcp)), sid::PAGE);
    sid::udp_echo(addr(udp)).unwrap();
    let listed = rk.ctl_ok(&["list-ports"]);
    assert_eq!(listed.lines().count(), 4, "{listed}");

    let mut times = Vec::new();
    for round in 1..=2 {
        let old = pasta(&rk);
        let killed = Instant::now();
        ci::send_signal(old, "KILL");
        assert!(
            ci::wait_until(Duration::from_secs(5), || !ci::pid_alive(old)),
            "pasta {old} did not die"
        );
        let back = page_back(tcp, killed);
        times.push(back);
        assert!(
            back.is_some(),
            "round {round}: port {tcp} not forwarded again within 5 s\n{}",
            rk.log()
        );
        assert_ne!(pasta(&rk), old);
        // Every port is back, and the API lists them as before, with their ids.
        assert_eq!(sid::fetch(addr(at_start)), sid::PAGE);
        sid::udp_echo(addr(udp)).unwrap_or_else(|e| panic!("round {round}: {e}\n{}", rk.log()));
        assert_eq!(rk.ctl_ok(&["list-ports"]), listed, "round {round}");
    }

    // Ids go on from the highest, and removing by id deletes that rule from the new pasta.
    assert_eq!(
        rk.ctl_ok(&["add-ports", &format!("127.0.0.1:{later}:8000/tcp")]),
        "4\n"
    );
    assert_eq!(sid::fetch(addr(later)), sid::PAGE);
    assert_eq!(rk.ctl_ok(&["remove-ports", "2"]), "2\n");
    assert!(sid::refused(addr(tcp)), "port {tcp} still answers");
    assert_eq!(sid::fetch(addr(at_start)), sid::PAGE);

    let log = rk.log();
    for (round, back) in times.iter().enumerate() {
        let back = back.unwrap();
        eprintln!("round {}: port back after {back:?}", round + 1);
        assert!(back <= BACK_WITHIN, "round {}: after {back:?}", round + 1);
    }
    assert_eq!(
        log.matches("network driver pasta restarted").count(),
        2,
        "{log}"
    );
    assert!(!log.contains("no longer forwarded"), "{log}");
    assert!(!log.contains("were not added"), "{log}");
}
