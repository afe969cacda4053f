//! `--info-fd` and `--json-status-fd` as a caller sees them, run as the unprivileged test user:
//! the info object names the child, the state dir and the namespaces (the same ids as
//! `/proc/<child-pid>/ns/*`), the status lines carry the child pid and then the exit code
//! rootlesskit exits with, a descriptor that cannot be written is refused before anything
//! exists, the target inherits neither descriptor, and a reader that went away does no harm.
//!
//! The descriptors reach rootlesskit (through setpriv) by being left without close-on-exec for
//! the moment of the spawn; every spawn of this file holds one lock, so no other run started
//! here inherits them.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use ci::{Output, Run, Scratch, rootlesskit, skip, test_user, wait_output};
use rustix::io::FdFlags;

static SPAWN: Mutex<()> = Mutex::new(());

/// A descriptor to pass on, at a number of 40 or more (clear of whatever the harness holds).
struct Passed {
    fd: OwnedFd,
}

impl Passed {
    fn new(fd: &OwnedFd) -> Passed {
        Passed {
            fd: rustix::io::fcntl_dupfd_cloexec(fd, 40).unwrap(),
        }
    }

    fn n(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Starts `run` with the `passed` descriptors inherited at their numbers; our copies close
/// right after.
fn spawn_passing(run: &Run, passed: Vec<Passed>, stdin: bool) -> Child {
    let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    for p in &passed {
        rustix::io::fcntl_setfd(&p.fd, FdFlags::empty()).unwrap();
    }
    let child = if stdin {
        run.spawn_with_stdin()
    } else {
        run.spawn()
    };
    drop(passed);
    child
}

/// A pipe: the read end, and the write end to pass on.
fn pipe() -> (fs::File, Passed) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    (fs::File::from(r), Passed::new(&w))
}

/// Everything a reader gets until end-of-file, which must come within `wait`.
fn read_all(mut r: fs::File, wait: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx.recv_timeout(wait)
        .expect("no end-of-file on the descriptor: someone still holds it")
}

/// The value of a number field of a one-line JSON object.
fn num(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The value of a string field (our values carry no escapes).
fn text<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = json[at..].find('"')?;
    Some(&json[at..at + len])
}

/// One object on one line, nothing else.
fn one_object(s: &str) -> &str {
    let line = s
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("not one line: {s:?}"));
    assert!(
        !line.contains('\n') && line.starts_with('{') && line.ends_with('}'),
        "not one JSON object: {s:?}"
    );
    line
}

fn ns_inode(pid: u64, kind: &str) -> u64 {
    fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

fn have_user() -> bool {
    test_user().is_some()
}

/// Runs `run` with `passed`, and its output.
fn output_passing(run: &Run, passed: Vec<Passed>) -> Output {
    wait_output(spawn_passing(run, passed, false), Duration::from_secs(60))
}

#[test]
fn info_fd_names_the_child_the_state_dir_and_the_namespaces() {
    if !have_user() {
        skip!("no test user");
    }
    if !ci::have("slirp4netns") || !ci::tun_usable() {
        skip!("slirp4netns or /dev/net/tun missing");
    }
    let (r, w) = pipe();
    let args = vec![
        "--net=slirp4netns".to_owned(),
        "--pidns".into(),
        "--cgroupns".into(),
        "--utsns".into(),
        "--ipcns".into(),
        format!("--info-fd={}", w.n()),
        "sh".into(),
        "-c".into(),
        "read x".into(),
    ];
    let run = rootlesskit(args);
    let mut child = spawn_passing(&run, vec![w], true);
    // The target is still waiting: end-of-file here means rootlesskit closed its copy and the
    // target never had one.
    let got = read_all(r, Duration::from_secs(60));
    let info = one_object(&got).to_owned();
    let pid = num(&info, "child-pid").unwrap_or_else(|| panic!("no child-pid: {info}"));
    let state = text(&info, "state-dir").unwrap_or_else(|| panic!("no state-dir: {info}"));
    let written = fs::read_to_string(format!("{state}/child_pid")).unwrap();
    assert_eq!(written, pid.to_string(), "{info}");
    assert_eq!(
        text(&info, "api-socket"),
        Some(format!("{state}/api.sock").as_str()),
        "{info}"
    );
    for (key, kind) in [
        ("user-namespace", "user"),
        ("mnt-namespace", "mnt"),
        ("net-namespace", "net"),
        ("pid-namespace", "pid"),
        ("cgroup-namespace", "cgroup"),
        ("uts-namespace", "uts"),
        ("ipc-namespace", "ipc"),
    ] {
        let id = num(&info, key).unwrap_or_else(|| panic!("no {key}: {info}"));
        assert_eq!(id, ns_inode(pid, kind), "{key}: {info}");
        // A namespace of its own, not ours.
        assert_ne!(id, ns_inode(std::process::id().into(), kind), "{key}");
    }
    assert_eq!(text(&info, "net-driver"), Some("slirp4netns"), "{info}");
    assert_eq!(text(&info, "child-ip"), Some("10.0.2.100"), "{info}");
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let o = wait_output(child, Duration::from_secs(60));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!std::path::Path::new(state).exists(), "state dir left");
}

#[test]
fn info_fd_leaves_out_the_namespaces_not_made() {
    if !have_user() {
        skip!("no test user");
    }
    let (r, w) = pipe();
    let run = rootlesskit([format!("--info-fd={}", w.n()), "true".into()]);
    let o = output_passing(&run, vec![w]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let got = read_all(r, Duration::from_secs(5));
    let info = one_object(&got);
    assert!(num(info, "user-namespace").is_some(), "{info}");
    assert!(num(info, "mnt-namespace").is_some(), "{info}");
    for absent in [
        "net-namespace",
        "pid-namespace",
        "uts-namespace",
        "net-driver",
        "child-ip",
    ] {
        assert!(!info.contains(absent), "{absent}: {info}");
    }
}

#[test]
fn json_status_fd_gives_the_child_pid_then_the_exit_code() {
    if !have_user() {
        skip!("no test user");
    }
    for (script, want) in [("exit 7", 7), ("exit 0", 0), ("kill -KILL $$", 255)] {
        for flags in [&[][..], &["--pidns"][..]] {
            let (r, w) = pipe();
            let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            args.push(format!("--json-status-fd={}", w.n()));
            args.extend(["sh".into(), "-c".into(), script.into()]);
            let o = output_passing(&rootlesskit(args), vec![w]);
            assert_eq!(o.code, want, "{flags:?} {script}: {}", o.stderr);
            let got = read_all(r, Duration::from_secs(5));
            let lines: Vec<&str> = got.lines().collect();
            assert_eq!(lines.len(), 2, "{flags:?} {script}: {got:?}");
            let pid = num(lines[0], "child-pid").unwrap_or_else(|| panic!("{got:?}"));
            assert!(pid > 1, "{got:?}");
            assert_eq!(lines[0], format!("{{\"child-pid\":{pid}}}"));
            assert_eq!(lines[1], format!("{{\"exit-code\":{want}}}"), "{script}");
            assert!(got.ends_with('\n'), "{got:?}");
        }
    }
}

#[test]
fn a_failed_setup_writes_no_status_lines() {
    if !have_user() {
        skip!("no test user");
    }
    let (r, w) = pipe();
    let run = rootlesskit([
        format!("--json-status-fd={}", w.n()),
        "--copy-up=/nonexistent-rkrs".into(),
        "true".into(),
    ]);
    let o = output_passing(&run, vec![w]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    // The child got as far as its mounts: the setup failed, not the command line.
    assert!(
        o.stderr
            .contains("failed to create bind mount on /nonexistent-rkrs"),
        "{}",
        o.stderr
    );
    assert_eq!(read_all(r, Duration::from_secs(5)), "");
}

#[test]
fn descriptors_that_cannot_be_written_are_refused_before_anything_exists() {
    if !have_user() {
        skip!("no test user");
    }
    let tmp = Scratch::new("statusfd-bad");
    let tmpdir = tmp.path.to_str().unwrap();
    let refused = |o: &Output, want: &str| {
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert_eq!(
            o.stderr.lines().last().unwrap_or(""),
            format!("[rootlesskit:parent] error: {want}")
        );
        assert_eq!(
            fs::read_dir(&tmp.path).unwrap().count(),
            0,
            "{want}: left a state dir"
        );
    };
    // Not open at all (nothing here holds 1000).
    for flag in ["info-fd", "json-status-fd"] {
        let run = rootlesskit([format!("--{flag}=1000"), "true".into()]).env("TMPDIR", tmpdir);
        refused(
            &output_passing(&run, Vec::new()),
            &format!("--{flag}=1000: descriptor 1000 is not open"),
        );
    }
    // Open, but for reading: a pipe's read end.
    let (r, _w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let r = Passed::new(&r);
    let n = r.n();
    let run = rootlesskit([format!("--json-status-fd={n}"), "true".into()]).env("TMPDIR", tmpdir);
    refused(
        &output_passing(&run, vec![r]),
        &format!("--json-status-fd={n}: descriptor {n} is not open for writing"),
    );
    // Standard descriptors stay the command's; one descriptor is not both.
    let run = rootlesskit(["--info-fd=2", "true"]).env("TMPDIR", tmpdir);
    refused(
        &output_passing(&run, Vec::new()),
        "--info-fd=2: the descriptor must be 3 or more (0, 1 and 2 stay the command's)",
    );
    // Socket-activation descriptors go to the command.
    let (_r, w) = pipe();
    let n = w.n();
    let run = rootlesskit([format!("--info-fd={n}"), "true".into()])
        .env("TMPDIR", tmpdir)
        .env("LISTEN_FDS", &(n - 2).to_string())
        .env("LISTEN_PID", "1");
    refused(
        &output_passing(&run, vec![w]),
        &format!(
            "--info-fd={n}: descriptor {n} is one of the {} socket-activation descriptors ($LISTEN_FDS) that go to the command",
            n - 2
        ),
    );
    let (_r, w) = pipe();
    let n = w.n();
    let run = rootlesskit([
        format!("--info-fd={n}"),
        format!("--json-status-fd={n}"),
        "true".into(),
    ])
    .env("TMPDIR", tmpdir);
    refused(
        &output_passing(&run, vec![w]),
        &format!("--info-fd and --json-status-fd name the same descriptor {n}"),
    );
}

#[test]
fn the_target_inherits_neither_descriptor() {
    if !have_user() {
        skip!("no test user");
    }
    let (r1, info) = pipe();
    let (r2, status) = pipe();
    let (a, b) = (info.n(), status.n());
    let run = rootlesskit([
        format!("--info-fd={a}"),
        format!("--json-status-fd={b}"),
        "sh".into(),
        "-c".into(),
        "ls /proc/$$/fd".into(),
    ]);
    let o = output_passing(&run, vec![info, status]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let fds: Vec<&str> = o.stdout.split_whitespace().collect();
    assert!(fds.contains(&"0") && fds.contains(&"2"), "{fds:?}");
    for n in [a, b] {
        assert!(!fds.contains(&n.to_string().as_str()), "{n} in {fds:?}");
    }
    assert!(read_all(r1, Duration::from_secs(5)).contains("child-pid"));
    assert!(read_all(r2, Duration::from_secs(5)).contains("exit-code"));
}

#[test]
fn a_reader_that_went_away_does_no_harm() {
    if !have_user() {
        skip!("no test user");
    }
    let (r1, info) = pipe();
    let (r2, status) = pipe();
    drop((r1, r2));
    let run = rootlesskit([
        format!("--info-fd={}", info.n()),
        format!("--json-status-fd={}", status.n()),
        "sh".into(),
        "-c".into(),
        "echo target ran; exit 3".into(),
    ]);
    let o = output_passing(&run, vec![info, status]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert_eq!(o.stdout, "target ran\n");
    assert!(!o.stderr.contains("panic"), "{}", o.stderr);
}
