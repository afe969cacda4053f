//! The sd_notify relay as systemd sees it, run as the unprivileged test user: the test plays
//! systemd (a datagram socket with `SO_PASSCRED`), and every message the target sends through
//! its `$NOTIFY_SOCKET` arrives from `rootlesskit`'s own pid (what `NotifyAccess=main` accepts),
//! for a path and for an abstract socket the target's network namespace could not reach;
//! `--notify-ready=child` sends `READY=1` for a target that does not notify.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use ci::{Scratch, ok, rootlesskit, skip};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

const PYTHON: &str = "/usr/bin/python3";

/// A target that sends each argument as one datagram to `$NOTIFY_SOCKET` (`\n` in an argument
/// separates lines), then prints the variable.
const SENDER: &str = r#"
import os, socket, sys
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for m in sys.argv[1:]:
    s.sendto(m.replace("\\n", "\n").encode(), addr)
print(os.environ["NOTIFY_SOCKET"])
"#;

/// systemd's end: messages with the sender's pid.
struct FakeSystemd {
    sock: UnixDatagram,
}

impl FakeSystemd {
    fn new(sock: UnixDatagram) -> FakeSystemd {
        rustix::net::sockopt::set_socket_passcred(sock.as_fd(), true).unwrap();
        FakeSystemd { sock }
    }

    /// At a path the test user can write to.
    fn at_path(path: &Path) -> FakeSystemd {
        let sock = UnixDatagram::bind(path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        FakeSystemd::new(sock)
    }

    /// At an abstract name (in our network namespace, as systemd's would be).
    fn abstract_name(name: &str) -> FakeSystemd {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        FakeSystemd::new(UnixDatagram::bind_addr(&addr).unwrap())
    }

    /// The next message and its sender's pid, waiting at most `wait`.
    fn recv(&self, wait: Duration) -> Option<(String, i32)> {
        self.recv_with_fds(wait).map(|(m, pid, _)| (m, pid))
    }

    /// [`FakeSystemd::recv`], with the descriptors that came along.
    fn recv_with_fds(&self, wait: Duration) -> Option<(String, i32, Vec<OwnedFd>)> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(4))];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut buf)];
            match rustix::net::recvmsg(&self.sock, &mut iov, &mut control, RecvFlags::empty()) {
                Ok(r) => {
                    let n = r.bytes;
                    let (mut pid, mut fds) = (None, Vec::new());
                    for m in control.drain() {
                        match m {
                            RecvAncillaryMessage::ScmCredentials(c) => {
                                pid = Some(c.pid.as_raw_nonzero().get());
                            }
                            RecvAncillaryMessage::ScmRights(r) => fds.extend(r),
                            _ => {}
                        }
                    }
                    let pid = pid.expect("no SCM_CREDENTIALS");
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    return Some((text, pid, fds));
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return None,
                Err(e) => panic!("recvmsg: {e}"),
            }
        }
    }
}

fn python() -> bool {
    Path::new(PYTHON).exists()
}

/// Runs the sender under rootlesskit with `NOTIFY_SOCKET=notify` and checks that each message
/// arrives, from rootlesskit's pid, with `MAINPID=` naming that pid.
fn relays(name: &str, systemd: &FakeSystemd, notify: &str, flags: &[&str]) {
    let dir = Scratch::new(name);
    let state = dir.join("state");
    let mut args = vec![format!("--state-dir={}", state.display())];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.extend([
        PYTHON.into(),
        "-c".into(),
        SENDER.into(),
        "READY=1".into(),
        "STATUS=x".into(),
        "MAINPID=1\\nEXTEND_TIMEOUT_USEC=5000000".into(),
        "STOPPING=1".into(),
    ]);
    let child = rootlesskit(args).env("NOTIFY_SOCKET", notify).spawn();
    let rk = child.id() as i32;
    let o = ci::wait_output(child, Duration::from_secs(30));
    ok(&o);
    // The target talked to our relay, in the state dir.
    assert_eq!(Path::new(o.stdout.trim()), state.join("notify.sock"));
    let mainpid = format!("MAINPID={rk}\nEXTEND_TIMEOUT_USEC=5000000");
    for want in ["READY=1", "STATUS=x", &mainpid, "STOPPING=1"] {
        let (msg, pid) = systemd
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{want:?} did not arrive"));
        assert_eq!(msg, want);
        assert_eq!(
            pid, rk,
            "{want:?} came from pid {pid}, not rootlesskit's {rk}"
        );
    }
    assert_eq!(systemd.recv(Duration::from_millis(200)), None);
}

#[test]
fn target_messages_come_from_rootlesskit() {
    if !python() {
        skip!("{PYTHON} is not installed");
    }
    let d = Scratch::new("notify-systemd");
    let path = d.join("notify");
    let systemd = FakeSystemd::at_path(&path);
    relays("notify-path", &systemd, path.to_str().unwrap(), &[]);
    relays(
        "notify-pidns",
        &systemd,
        path.to_str().unwrap(),
        &["--pidns"],
    );
}

#[test]
fn abstract_socket_is_reached_from_a_network_namespace() {
    if !python() {
        skip!("{PYTHON} is not installed");
    }
    let name = format!("rkrs-ci-notify-{}", std::process::id());
    let systemd = FakeSystemd::abstract_name(&name);
    // --net=none: the target's own network namespace has no such abstract name.
    relays(
        "notify-abstract",
        &systemd,
        &format!("@{name}"),
        &["--net=none"],
    );
}

#[test]
fn notify_ready_child_sends_ready_itself() {
    let d = Scratch::new("notify-ready");
    let path = d.join("notify");
    let systemd = FakeSystemd::at_path(&path);
    let state = d.join("state");
    let child = rootlesskit([
        &format!("--state-dir={}", state.display()),
        "--notify-ready=child",
        "sleep",
        "30",
    ])
    .env("NOTIFY_SOCKET", path.to_str().unwrap())
    .spawn();
    let rk = child.id() as i32;
    let got = systemd.recv(Duration::from_secs(20));
    // child_pid was there before READY=1.
    let had_child_pid = state.join("child_pid").exists();
    ci::send_signal(child.id(), "TERM");
    let _ = ci::wait_output(child, Duration::from_secs(10));
    assert_eq!(got, Some(("READY=1".to_string(), rk)));
    assert!(had_child_pid);
    // By default a target that does not notify leaves systemd waiting.
    let o = rootlesskit(["sleep", "0.5"])
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .output();
    ok(&o);
    assert_eq!(systemd.recv(Duration::from_millis(300)), None);
}

#[test]
fn bad_notify_ready_is_one_line() {
    let o = rootlesskit(["--notify-ready=parent", "true"]).output();
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("unknown notify-ready mode: parent"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
}

#[test]
fn stored_descriptors_are_passed_on() {
    if !python() {
        skip!("{PYTHON} is not installed");
    }
    let d = Scratch::new("notify-fdstore");
    let path = d.join("notify");
    let systemd = FakeSystemd::at_path(&path);
    // The target stores the read end of a pipe that holds a line.
    let script = r#"
import os, socket
r, w = os.pipe()
os.write(w, b"kept\n")
os.close(w)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
socket.send_fds(s, [b"FDSTORE=1\nFDNAME=pipe"], [r])
"#;
    let child = rootlesskit([PYTHON, "-c", script])
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .spawn();
    let rk = child.id() as i32;
    ok(&ci::wait_output(child, Duration::from_secs(30)));
    let (msg, pid, fds) = systemd
        .recv_with_fds(Duration::from_secs(5))
        .expect("no FDSTORE message");
    assert_eq!(msg, "FDSTORE=1\nFDNAME=pipe");
    assert_eq!(pid, rk);
    assert_eq!(fds.len(), 1);
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::fs::File::from(fds.into_iter().next().unwrap()),
        &mut text,
    )
    .unwrap();
    assert_eq!(text, "kept\n");
}

#[test]
fn a_state_dir_too_long_for_a_socket_address_passes_the_variable_through() {
    let d = Scratch::new("notify-long");
    let path = d.join("notify");
    let systemd = FakeSystemd::at_path(&path);
    // api.sock still fits a socket address (107 bytes), notify.sock no longer does.
    let pad = 97 - d.path.as_os_str().len() - 1;
    let state = d.join(&"s".repeat(pad));
    assert_eq!(state.join("api.sock").as_os_str().len(), 106);
    let o = rootlesskit([
        &format!("--state-dir={}", state.display()),
        "sh",
        "-c",
        "echo $NOTIFY_SOCKET",
    ])
    .env("NOTIFY_SOCKET", path.to_str().unwrap())
    .output();
    ok(&o);
    assert_eq!(o.stdout.trim(), path.to_str().unwrap());
    assert!(
        o.stderr
            .contains("warning: cannot relay $NOTIFY_SOCKET through "),
        "{}",
        o.stderr
    );
    assert_eq!(systemd.recv(Duration::from_millis(100)), None);
}
