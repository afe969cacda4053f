//! Soak and leak checks through the API, run as the unprivileged test user: many requests
//! from many clients, and many port adds and removes, must leave the parent's descriptor
//! count and memory where they were.

use std::path::PathBuf;
use std::time::Duration;

use ci::{Scratch, rootlesskit, skip};

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

struct Instance {
    child: Option<std::process::Child>,
    sock: PathBuf,
    _dir: Scratch,
}

impl Instance {
    fn start(name: &str, flags: &[&str]) -> Instance {
        let dir = Scratch::new(name);
        let state = dir.join("state");
        let child = rootlesskit(
            [format!("--state-dir={}", state.display())]
                .into_iter()
                .chain(flags.iter().map(|s| s.to_string()))
                .chain(["sleep".into(), "infinity".into()]),
        )
        .spawn();
        assert!(ci::wait_until(Duration::from_secs(15), || state
            .join("child_pid")
            .exists()));
        Instance {
            child: Some(child),
            sock: state.join("api.sock"),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            ci::send_signal(c.id(), "TERM");
            let _ = ci::wait_output(c, Duration::from_secs(10));
        }
    }
}

#[test]
fn ten_thousand_api_requests_from_fifty_clients_leak_nothing() {
    let inst = Instance::start("soak", &["--net=none"]);
    let pid = inst.pid();
    // Warm up, so lazily allocated buffers exist before the baseline.
    for _ in 0..50 {
        assert_eq!(ci::api_request(&inst.sock, "GET", "/v1/info", "").0, 200);
    }
    let (fds, rss) = (fd_count(pid), ci::rss_kib(pid));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let sock = inst.sock.clone();
            std::thread::spawn(move || {
                for k in 0..200 {
                    let (code, _) = match (i + k) % 4 {
                        0 => ci::api_request(&sock, "GET", "/v1/info", ""),
                        1 => ci::api_request(&sock, "GET", "/v1/ports", ""),
                        2 => ci::api_request(&sock, "POST", "/v1/ports", "{bad json"),
                        _ => ci::api_request(&sock, "GET", "/v1/nothing", ""),
                    };
                    assert!(code == 200 || code == 400 || code == 404, "{code}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Closed connections are reaped on the next loop turns.
    assert!(ci::wait_until(Duration::from_secs(5), || fd_count(pid) == fds));
    let grown = ci::rss_kib(pid).saturating_sub(rss);
    assert!(grown < 512, "RSS grew by {grown} KiB over 10,000 requests");
}

#[test]
fn adding_and_removing_a_port_a_thousand_times_leaks_no_descriptor() {
    if !ci::have("slirp4netns") || !ci::tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let inst = Instance::start(
        "addremove",
        &[
            "--net=slirp4netns",
            "--disable-host-loopback",
            "--port-driver=builtin",
        ],
    );
    let pid = inst.pid();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = format!(
        "{{\"proto\":\"tcp\",\"parentIP\":\"127.0.0.1\",\"parentPort\":{port},\"childPort\":80}}"
    );
    let fds = fd_count(pid);
    for i in 1..=1000u32 {
        let (code, body) = ci::api_request(&inst.sock, "POST", "/v1/ports", &spec);
        assert_eq!(code, 201, "add {i}: {body}");
        assert!(body.starts_with(&format!("{{\"id\":{i},")), "{body}");
        let (code, body) = ci::api_request(&inst.sock, "DELETE", &format!("/v1/ports/{i}"), "");
        assert_eq!(code, 200, "remove {i}: {body}");
    }
    assert!(ci::wait_until(Duration::from_secs(5), || fd_count(pid) == fds));
    let (_, body) = ci::api_request(&inst.sock, "GET", "/v1/ports", "");
    assert_eq!(body, "null");
}
