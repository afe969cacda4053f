//! `--restart-net-driver` as a user sees it, run as the unprivileged test user: slirp4netns
//! (and pasta) killed under a running target comes back, with the interface, the route to the
//! host and the ports published through slirp4netns, within a second of each kill; the API
//! answers meanwhile and keeps its port ids; the flag off keeps upstream's behaviour; after five
//! restarts one error line, and the target runs on.
//!
//! Timing: "within a second" is measured from just before `kill -9` to the first round trip
//! that certainly went through the new driver (the old one is gone by then). A restart takes
//! 50 or 100 ms of delay plus the driver's start (≈20 ms here); the old code never recovers, so
//! the bound is generous and still fails it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ci::{Run, have, rootlesskit, skip, tun_usable};

/// How soon after a kill the network must work again.
const BACK_WITHIN: Duration = Duration::from_secs(1);

/// An echo server on host loopback that keeps answering; returns its port and the times at
/// which it answered a "ping" (one round trip each).
fn host_server() -> (u16, Arc<Mutex<Vec<Instant>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 16];
                let n = c.read(&mut buf).unwrap_or(0);
                if buf[..n].starts_with(b"ping") && c.write_all(b"pong\n").is_ok() {
                    log.lock().unwrap().push(Instant::now());
                }
            });
        }
    });
    (port, seen)
}

/// The target: answers "hi" on port 80 inside, and every 100 ms makes a round trip to the
/// host server through the gateway (each in the background, so that one lost SYN holds up
/// nothing).
fn target_script(host_port: u16) -> String {
    format!(
        "busybox nc -ll -p 80 -e echo hi & \
         while :; do (echo ping | busybox nc -w 1 10.0.2.2 {host_port} >/dev/null 2>&1 &); \
         sleep 0.1; done"
    )
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The driver processes (`slirp4netns`, or `pasta`/`passt…`) among rootlesskit's children.
fn drivers_of(rootlesskit: u32, name: &str) -> Vec<u32> {
    ci::children_of(rootlesskit)
        .into_iter()
        .filter(|p| comm(*p).starts_with(name) && ci::pid_alive(*p))
        .collect()
}

/// One connection to a published port: what it answered.
fn fetch(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn rootlessctl(state: &Path, args: &[&str]) -> ci::Output {
    Run::bin("rootlessctl")
        .args([format!("--socket={}", state.join("api.sock").display())])
        .args(args)
        .timeout(Duration::from_secs(10))
        .output()
}

/// Kills the driver `pid` and waits until it is gone; the instant just before the kill.
fn kill(pid: u32) -> Instant {
    let at = Instant::now();
    ci::send_signal(pid, "KILL");
    assert!(
        ci::wait_until(Duration::from_secs(5), || !ci::pid_alive(pid)),
        "driver {pid} did not die"
    );
    at
}

/// Kills rootlesskit's one slirp4netns (`when` says which, in a failure): its pid, the instant
/// just before the kill and the one after it died.
fn kill_slirp4netns(rk: u32, when: &str) -> (u32, Instant, Instant) {
    let slirp = drivers_of(rk, "slirp4netns");
    assert_eq!(slirp.len(), 1, "{when}: {slirp:?}");
    let killed = kill(slirp[0]);
    (slirp[0], killed, Instant::now())
}

/// Waits until the host server answers a round trip that began after `after`; how long that
/// took from `since`.
fn round_trip_after(
    seen: &Mutex<Vec<Instant>>,
    after: Instant,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    ci::wait_for(limit, || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|t| **t > after)
            .map(|t| t.duration_since(since))
    })
}

/// Whether a first round trip to the host is seen within `limit`.
fn first_round_trip(seen: &Mutex<Vec<Instant>>, limit: Duration) -> bool {
    round_trip_after(seen, Instant::now(), Instant::now(), limit).is_some()
}

/// After a kill at `killed` (the driver gone at `dead`): how long until a host round trip and
/// until the published port answered again, from `killed`.
fn recovery(
    seen: &Mutex<Vec<Instant>>,
    published: u16,
    killed: Instant,
    dead: Instant,
) -> (Option<Duration>, Option<Duration>) {
    let back = round_trip_after(seen, dead, killed, Duration::from_secs(5));
    let port_back = ci::wait_for(Duration::from_secs(5), || {
        (fetch(published) == "hi\n").then(|| killed.elapsed())
    });
    (back, port_back)
}

/// Asserts that `what` came back in round `round`, within [`BACK_WITHIN`].
fn assert_back(round: usize, what: &str, took: Option<Duration>, stderr: &str) {
    let took = took.unwrap_or_else(|| panic!("round {round}: {what} not back\n{stderr}"));
    eprintln!("round {round}: {what} back after {took:?}");
    assert!(took <= BACK_WITHIN, "round {round}: {what} after {took:?}");
}

/// [`assert_back`] for each round's host round trip and published port.
fn assert_rounds_back(times: &[(Option<Duration>, Option<Duration>)], stderr: &str) {
    for (round, (back, port_back)) in times.iter().enumerate() {
        assert_back(round + 1, "host round trip", *back, stderr);
        assert_back(round + 1, "published port", *port_back, stderr);
    }
}

/// `rootlesskit --state-dir=STATE FLAGS… --pidns sh -c SCRIPT` (with `--pidns`, the target's
/// background processes end with it).
fn start(state: &Path, flags: &[&str], script: String) -> std::process::Child {
    let mut args = vec![format!("--state-dir={}", state.display())];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.extend(["--pidns".into(), "sh".into(), "-c".into(), script]);
    rootlesskit(args).spawn()
}

fn usable(program: &str) -> bool {
    have(program) && tun_usable() && Path::new("/bin/busybox").exists()
}

#[test]
fn slirp4netns_comes_back_with_its_route_and_published_ports() {
    if !usable("slirp4netns") {
        skip!("slirp4netns, /dev/net/tun or busybox is not available");
    }
    let d = ci::Scratch::new("heal-s4nn");
    let state = d.join("state");
    let (host_port, seen) = host_server();
    let published = ci::ports::free_port();
    let child = start(
        &state,
        &["--net=slirp4netns", "--port-driver=slirp4netns"],
        target_script(host_port),
    );
    let rk = child.id();
    assert!(ci::wait_until(Duration::from_secs(15), || state
        .join("api.sock")
        .exists()));
    let added = rootlessctl(
        &state,
        &["add-ports", &format!("127.0.0.1:{published}:80/tcp")],
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let id = added.stdout.trim().to_string();
    assert!(ci::wait_until(Duration::from_secs(10), || fetch(published) == "hi\n"));
    assert!(
        first_round_trip(&seen, Duration::from_secs(10)),
        "no round trip to the host before any kill"
    );
    let mut times = Vec::new();
    for round in 1..=2 {
        let (old, killed, dead) = kill_slirp4netns(rk, &format!("round {round}"));
        // The API answers while the driver is down or starting.
        let info = rootlessctl(&state, &["info"]);
        assert_eq!(info.code, 0, "{}", info.stderr);
        times.push(recovery(&seen, published, killed, dead));
        let again = drivers_of(rk, "slirp4netns");
        assert!(
            again.len() == 1 && again[0] != old,
            "round {round}: {again:?}"
        );
    }
    // The published port keeps the id it was given, and removing it by that id works.
    let list = rootlessctl(&state, &["list-ports"]);
    assert!(
        list.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id.as_str())
                && l.contains(&published.to_string())),
        "{}",
        list.stdout
    );
    let removed = rootlessctl(&state, &["remove-ports", &id]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(ci::wait_until(Duration::from_secs(3), || fetch(published).is_empty()));
    ci::send_signal(rk, "TERM");
    let o = ci::wait_output(child, Duration::from_secs(20));
    assert_rounds_back(&times, &o.stderr);
    // Each death is still reported, as before; each restart said once.
    let died = "network driver slirp4netns exited while the target was running: signal: killed";
    assert_eq!(o.stderr.matches(died).count(), 2, "{}", o.stderr);
    assert_eq!(
        o.stderr
            .matches("network driver slirp4netns restarted")
            .count(),
        2,
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("not restarting"), "{}", o.stderr);
    assert!(!state.exists());
}

#[test]
fn slirp4netns_comes_back_in_a_detached_namespace() {
    if !usable("slirp4netns") {
        skip!("slirp4netns, /dev/net/tun or busybox is not available");
    }
    let d = ci::Scratch::new("heal-detach");
    let state = d.join("state");
    let (host_port, seen) = host_server();
    let published = ci::ports::free_port();
    // The target stays in the host's network namespace; its helper enters the detached one
    // (busybox's nsenter, in the test's own command only).
    let inner = target_script(host_port);
    let child = start(
        &state,
        &[
            "--net=slirp4netns",
            "--port-driver=slirp4netns",
            &format!("--publish=127.0.0.1:{published}:80/tcp"),
            "--detach-netns",
        ],
        format!("exec busybox nsenter --net=\"$ROOTLESSKIT_STATE_DIR/netns\" sh -c '{inner}'"),
    );
    let rk = child.id();
    assert!(
        first_round_trip(&seen, Duration::from_secs(15)),
        "no round trip to the host before any kill"
    );
    assert!(ci::wait_until(Duration::from_secs(10), || fetch(published) == "hi\n"));
    let mut times = Vec::new();
    for round in 1..=2 {
        let (_, killed, dead) = kill_slirp4netns(rk, &format!("round {round}"));
        times.push(recovery(&seen, published, killed, dead));
    }
    ci::send_signal(rk, "TERM");
    let o = ci::wait_output(child, Duration::from_secs(20));
    assert_rounds_back(&times, &o.stderr);
    assert!(!state.exists());
}

/// With the builtin port driver the child's socket also carries its requests: the
/// `NetReconfigure` frame goes on the same socket, and both keep working.
#[test]
fn slirp4netns_comes_back_under_the_builtin_port_driver() {
    if !usable("slirp4netns") {
        skip!("slirp4netns, /dev/net/tun or busybox is not available");
    }
    let d = ci::Scratch::new("heal-builtin");
    let state = d.join("state");
    let (host_port, seen) = host_server();
    let published = ci::ports::free_port();
    let child = start(
        &state,
        &[
            "--net=slirp4netns",
            "--port-driver=builtin",
            &format!("--publish=127.0.0.1:{published}:80/tcp"),
        ],
        target_script(host_port),
    );
    let rk = child.id();
    assert!(
        first_round_trip(&seen, Duration::from_secs(15)),
        "no round trip to the host before any kill"
    );
    assert!(ci::wait_until(Duration::from_secs(10), || fetch(published) == "hi\n"));
    let (_, killed, dead) = kill_slirp4netns(rk, "before the kill");
    let back = round_trip_after(&seen, dead, killed, Duration::from_secs(5));
    // Connections through the builtin driver (sockets the child makes) still work.
    let port_ok = ci::wait_until(Duration::from_secs(5), || fetch(published) == "hi\n");
    ci::send_signal(rk, "TERM");
    let o = ci::wait_output(child, Duration::from_secs(20));
    assert_back(1, "host round trip", back, &o.stderr);
    assert!(port_ok, "{}", o.stderr);
    assert!(!o.stderr.contains("failed to configure"), "{}", o.stderr);
}

#[test]
fn without_restarts_a_dead_slirp4netns_stays_dead() {
    if !usable("slirp4netns") {
        skip!("slirp4netns, /dev/net/tun or busybox is not available");
    }
    let d = ci::Scratch::new("heal-off");
    let state = d.join("state");
    let (host_port, seen) = host_server();
    let child = start(
        &state,
        &["--net=slirp4netns", "--restart-net-driver=false"],
        format!(
            "for i in $(seq 30); do (echo ping | busybox nc -w 1 10.0.2.2 {host_port} >/dev/null 2>&1 &); \
             sleep 0.1; done; exit 3"
        ),
    );
    let rk = child.id();
    assert!(
        first_round_trip(&seen, Duration::from_secs(15)),
        "no round trip to the host before the kill"
    );
    let (_, _, dead) = kill_slirp4netns(rk, "before the kill");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(drivers_of(rk, "slirp4netns").is_empty());
    assert!(
        round_trip_after(&seen, dead, dead, Duration::ZERO).is_none(),
        "a round trip after the kill"
    );
    // The target runs on and its exit code comes through.
    let o = ci::wait_output(child, Duration::from_secs(20));
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert_eq!(
        o.stderr
            .matches("network driver slirp4netns exited while the target was running")
            .count(),
        1,
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("restarted"), "{}", o.stderr);
}

#[test]
fn after_five_restarts_one_error_and_the_target_runs_on() {
    if !usable("slirp4netns") {
        skip!("slirp4netns, /dev/net/tun or busybox is not available");
    }
    let d = ci::Scratch::new("heal-limit");
    let state = d.join("state");
    // Its stderr goes to a file, so that each restart can be seen to complete (the driver is
    // ready and the line is printed) before the next kill: a driver killed while it starts is
    // a death without a "restarted" line.
    let log = d.join("log");
    let restarted = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("restarted (")
            .count()
    };
    let mut child = rootlesskit([
        format!("--state-dir={}", state.display()),
        "--net=slirp4netns".into(),
        "sh".into(),
        "-c".into(),
        format!(
            "while [ ! -e {} ]; do sleep 0.1; done; exit 4",
            d.join("stop").display()
        ),
    ])
    .spawn_logged(&log);
    let rk = child.id();
    assert!(ci::wait_until(Duration::from_secs(15), || state
        .join("child_pid")
        .exists()));
    for kill_no in 1..=6 {
        let slirp = ci::wait_for(Duration::from_secs(5), || {
            let s = drivers_of(rk, "slirp4netns");
            (s.len() == 1).then(|| s[0])
        })
        .unwrap_or_else(|| panic!("kill {kill_no}: no slirp4netns"));
        kill(slirp);
        if kill_no < 6 {
            // Wait for the restart, ready, before the next kill.
            assert!(
                ci::wait_until(Duration::from_secs(5), || restarted() == kill_no
                    && drivers_of(rk, "slirp4netns").iter().any(|p| *p != slirp)),
                "kill {kill_no}: not restarted"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(drivers_of(rk, "slirp4netns").is_empty());
    assert!(ci::pid_alive(rk), "rootlesskit ended with its target");
    std::fs::write(d.join("stop"), b"").unwrap();
    assert!(
        ci::wait_until(Duration::from_secs(20), || child
            .try_wait()
            .is_ok_and(|s| s.is_some())),
        "rootlesskit did not end"
    );
    let code = child.wait().unwrap().code();
    let o = ci::Output {
        code: code.unwrap_or(-1),
        stdout: String::new(),
        stderr: std::fs::read_to_string(&log).unwrap(),
    };
    assert_eq!(o.code, 4, "{}", o.stderr);
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("not restarting"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", o.stderr);
    assert_eq!(
        errors[0],
        "[rootlesskit:parent] error: network driver slirp4netns died again after 5 restarts; \
         not restarting it any more (the command keeps running without a network)"
    );
    assert_eq!(
        o.stderr
            .matches("exited while the target was running")
            .count(),
        6,
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.matches("restarted (").count(), 5, "{}", o.stderr);
}

#[test]
fn pasta_comes_back_with_its_route() {
    if !usable("pasta") {
        skip!("pasta, /dev/net/tun or busybox is not available");
    }
    let d = ci::Scratch::new("heal-pasta");
    let state = d.join("state");
    let (host_port, seen) = host_server();
    let child = start(&state, &["--net=pasta"], target_script(host_port));
    let rk = child.id();
    assert!(
        first_round_trip(&seen, Duration::from_secs(15)),
        "no round trip to the host before any kill"
    );
    let mut times = Vec::new();
    for round in 1..=2 {
        let pasta: Vec<u32> = ci::children_of(rk)
            .into_iter()
            .filter(|p| comm(*p).starts_with("pasta") || comm(*p).starts_with("passt"))
            .collect();
        assert_eq!(pasta.len(), 1, "round {round}: {pasta:?}");
        let killed = kill(pasta[0]);
        let dead = Instant::now();
        times.push(round_trip_after(
            &seen,
            dead,
            killed,
            Duration::from_secs(5),
        ));
    }
    ci::send_signal(rk, "TERM");
    let o = ci::wait_output(child, Duration::from_secs(20));
    for (round, back) in times.iter().enumerate() {
        assert_back(round + 1, "host round trip", *back, &o.stderr);
    }
    assert_eq!(
        o.stderr.matches("network driver pasta restarted").count(),
        2,
        "{}",
        o.stderr
    );
    assert!(!state.exists());
}
