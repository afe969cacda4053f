//! What the tests that run a rootless docker or containerd daemon share: the client, the
//! `$NOTIFY_SOCKET` lines, the daemon's processes and taking it all down.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::{Output, Run};

/// Makes the daemon's directories `subs` (among them `run`, its `$XDG_RUNTIME_DIR`, mode 0700)
/// in its scratch dir `dir`, owned by the test user when the tests switch to it.
pub fn daemon_dirs(dir: &Path, subs: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    for sub in subs {
        std::fs::create_dir(dir.join(sub)).unwrap();
        if let Some(u) = crate::test_user()
            && u.switch
        {
            std::os::unix::fs::chown(dir.join(sub), Some(u.uid), Some(u.gid)).unwrap();
        }
    }
    std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Waits (10 s at most) for a `$NOTIFY_SOCKET` datagram on `sock` with this line.
pub fn expect_notify(sock: &UnixDatagram, line: &str) {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == line) {
                    return;
                }
                seen.push(msg);
            }
            Err(e) => panic!("no {line} on NOTIFY_SOCKET ({e}); got {seen:?}"),
        }
    }
}

/// Runs the docker client `client` (a [`Run`] of the program) against the daemon whose scratch
/// dir is `dir` (`home/` and `run/docker.sock` in it), with no other context or config.
pub fn docker(client: Run, dir: &Path, args: &[&str], timeout: Duration) -> Output {
    client
        .args(args)
        .env("HOME", dir.join("home").to_str().unwrap())
        .env(
            "DOCKER_HOST",
            &format!("unix://{}", dir.join("run/docker.sock").display()),
        )
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_CONFIG")
        .timeout(timeout)
        .output()
}

/// Fails on a non-zero exit of the client run with `args`, and gives its trimmed stdout.
pub fn stdout_ok(args: &[&str], o: Output) -> String {
    assert_eq!(o.code, 0, "docker {args:?}\n{}\n{}", o.stdout, o.stderr);
    o.stdout.trim().to_string()
}

/// `rootlessctl list-ports` rows through the API socket `sock`, split into columns, without
/// the header.
pub fn list_ports(sock: &Path) -> Vec<Vec<String>> {
    let o = Run::bin("rootlessctl")
        .args(["--socket", sock.to_str().unwrap(), "list-ports"])
        .output();
    crate::ok(&o);
    o.stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Live processes of the test user that belong to a daemon: not in `before`, and either with
/// its scratch dir `dir` in their environment (rootlesskit, the network driver, the daemons,
/// the shims, the proxies) or in its user namespace `userns` (the containers). Other tests of
/// the same user may run at the same time; they are not counted.
pub fn new_processes(dir: &Path, before: &[u32], userns: Option<&PathBuf>) -> Vec<(u32, String)> {
    let marker = dir.to_string_lossy().into_owned();
    crate::sid::user_processes()
        .into_iter()
        .filter(|(p, _)| !before.contains(p))
        .filter(|(p, _)| {
            let environ = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            String::from_utf8_lossy(&environ).contains(&marker)
                || (userns.is_some()
                    && std::fs::read_link(format!("/proc/{p}/ns/user"))
                        .ok()
                        .as_ref()
                        == userns)
        })
        .collect()
}

/// Prints the last `n` lines of a daemon's log (called `name`), for a failing test.
pub fn print_tail(name: &str, log: &str, n: usize) {
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    eprintln!(
        "--- last {} lines of {name} ---\n{}",
        tail.len(),
        tail.join("\n")
    );
}

/// Stops a daemon as a test step: SIGTERM to its rootlesskit `child`, which must exit 0 within
/// 60 s; then `notify` (where the test has one) must carry `STOPPING=1`, and `left()`, the
/// processes it leaves, must be empty within 15 s.
pub fn stop(
    mut child: Child,
    notify: Option<&UnixDatagram>,
    mut left: impl FnMut() -> Vec<(u32, String)>,
) {
    crate::send_signal(child.id(), "TERM");
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "rootlesskit after SIGTERM"
    );
    if let Some(sock) = notify {
        expect_notify(sock, "STOPPING=1");
    }
    let mut procs = Vec::new();
    let gone = crate::wait_until(Duration::from_secs(15), || {
        procs = left();
        procs.is_empty()
    });
    assert!(gone, "processes left behind: {procs:?}");
}

/// Takes a daemon down after a test: SIGTERM to its rootlesskit `child` (killed if it is not
/// gone within `grace`), then SIGKILL to each of `left()`, the processes it leaves.
pub fn take_down(child: Option<Child>, grace: Duration, left: impl FnOnce() -> Vec<(u32, String)>) {
    if let Some(mut child) = child {
        kill(child.id(), "TERM");
        if wait_timeout(&mut child, grace).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    for (pid, _) in left() {
        kill(pid, "KILL");
    }
}

/// The child's exit status, or `None` if it has not ended within `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal, ignoring a process that is already gone.
pub fn kill(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}
