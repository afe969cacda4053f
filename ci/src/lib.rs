//! Helpers for the integration tests: find the built binaries, stage them where an unprivileged
//! user can run them, and run them as that user with a timeout.
//!
//! When the tests run as root (as CI does), every binary runs through
//! `setpriv --reuid=U --regid=G --clear-groups` as the test user `$RKRS_TEST_USER`
//! (default `rkrs-test`), which must have /etc/subuid and /etc/subgid lines.
//! When they run as an ordinary user, they run as that user directly.
//! A test that cannot run here calls [`skip!`], which fails instead under `RKRS_MUST_WORK=1`.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod dns;
pub mod docker;
pub mod ports;
pub mod sid;

/// Skips the current test with a reason, or fails it when `RKRS_MUST_WORK=1`.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)*) => {{
        let reason = format!($($fmt)*);
        if $crate::must_work() {
            panic!("test could not run, but RKRS_MUST_WORK=1: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return;
    }};
}

/// Whether skips are failures (CI sets it).
pub fn must_work() -> bool {
    std::env::var("RKRS_MUST_WORK").is_ok_and(|v| v == "1")
}

/// The user the binaries run as.
#[derive(Debug, Clone)]
pub struct User {
    /// Name, if the passwd file has one.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Whether we switch to it with setpriv (we are root) or are it already.
    pub switch: bool,
}

fn current_uid() -> u32 {
    // /proc/self/status: "Uid:\treal\teffective\t...".
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

fn current_gid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Looks a user up in /etc/passwd by name.
pub fn passwd_user(name: &str) -> Option<(u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The unprivileged user of this run, or `None` when root has no test user configured.
pub fn test_user() -> Option<User> {
    static USER: OnceLock<Option<User>> = OnceLock::new();
    USER.get_or_init(|| {
        let uid = current_uid();
        if uid != 0 {
            return Some(User {
                name: std::env::var("USER").unwrap_or_default(),
                uid,
                gid: current_gid(),
                switch: false,
            });
        }
        let name = std::env::var("RKRS_TEST_USER").unwrap_or_else(|_| "rkrs-test".into());
        let (uid, gid) = passwd_user(&name)?;
        Some(User {
            name,
            uid,
            gid,
            switch: true,
        })
    })
    .clone()
}

/// Where the shipped binaries are: `$RKRS_BIN_DIR`, else the cargo profile dir of this test.
fn source_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RKRS_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-exe>  →  target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test executable has no grandparent dir")
}

/// The shipped binaries, copied into a world-readable directory so the test user can run
/// them even when the checkout lives under a private home directory.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = source_bin_dir();
        let dst = std::env::temp_dir().join(format!("rkrs-ci-bin-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dst);
        fs::create_dir_all(&dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
        for name in [
            "rootlesskit",
            "rootlessctl",
            "rootlesskit-docker-proxy",
            "rootlesskit-child",
            "rootlesskit-unshare",
        ] {
            let from = src.join(name);
            if !from.exists() {
                panic!(
                    "{} is missing: build first (`cargo xtask test` does) or set RKRS_BIN_DIR",
                    from.display()
                );
            }
            fs::copy(&from, dst.join(name)).unwrap();
            fs::set_permissions(dst.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        dst
    })
}

/// A scratch directory the test user owns; removed on drop (as root, so whatever the run left
/// there goes too).
pub struct Scratch {
    /// Its path.
    pub path: PathBuf,
}

impl Scratch {
    /// Creates `/tmp/rkrs-ci-<pid>-<name>`, owned by the test user.
    pub fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("rkrs-ci-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(u) = test_user()
            && u.switch
        {
            std::os::unix::fs::chown(&path, Some(u.uid), Some(u.gid)).unwrap();
        }
        Scratch { path }
    }

    /// A path inside.
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Writes an executable file `name` inside (a fake or wrapped helper program).
    pub fn script(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What a finished run gave.
#[derive(Debug)]
pub struct Output {
    /// Exit code, or `128 + signal` when killed.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A command line to run as the test user.
pub struct Run {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    timeout: Duration,
    cwd: Option<PathBuf>,
    as_user: Option<(u32, u32)>,
    inside: Option<PathBuf>,
}

/// `rootlesskit ARGS...` as the test user.
pub fn rootlesskit<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Run::bin("rootlesskit").args(args)
}

impl Run {
    /// One of the shipped binaries.
    pub fn bin(name: &str) -> Run {
        Run::program(bin_dir().join(name))
    }

    /// Any program.
    pub fn program(p: impl Into<PathBuf>) -> Run {
        Run {
            program: p.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            timeout: Duration::from_secs(60),
            cwd: None,
            as_user: None,
            inside: None,
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Run {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, k: &str) -> Run {
        self.env_remove.push(k.into());
        self
    }

    /// Overrides the timeout (default 60 s).
    pub fn timeout(mut self, t: Duration) -> Run {
        self.timeout = t;
        self
    }

    /// Runs in `dir`.
    pub fn cwd(mut self, dir: &Path) -> Run {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Runs as this uid/gid instead of the test user (root only).
    pub fn as_ids(mut self, uid: u32, gid: u32) -> Run {
        self.as_user = Some((uid, gid));
        self
    }

    /// Runs inside the root filesystem `root` (see [`sid`]; root only), with the program's path
    /// as seen there.
    pub fn inside(mut self, root: &Path) -> Run {
        self.inside = Some(root.to_path_buf());
        self
    }

    fn command(&self) -> Command {
        let user = test_user().expect("no test user: create one or set RKRS_TEST_USER");
        let ids = self.as_user.or(user.switch.then_some((user.uid, user.gid)));
        let mut c = match ids {
            Some((uid, gid)) if self.inside.is_some() => {
                sid::command(self.inside.as_deref().unwrap(), uid, gid, &self.program)
            }
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&self.program);
                c
            }
            None if self.inside.is_some() => panic!("only root can enter another rootfs"),
            None => Command::new(&self.program),
        };
        c.args(&self.args);
        c.current_dir(self.cwd.clone().unwrap_or_else(|| PathBuf::from("/")));
        // A predictable environment: the runner's, minus anything from an outer rootlesskit.
        for (k, _) in std::env::vars() {
            if k.starts_with("ROOTLESSKIT_") || k.starts_with("LISTEN_") || k == "NOTIFY_SOCKET" {
                c.env_remove(k);
            }
        }
        if ids.is_some() {
            c.env("HOME", "/");
        }
        for k in &self.env_remove {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Starts in the background with piped stdout and stderr.
    pub fn spawn(&self) -> Child {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()))
    }

    /// Starts in the background with stdout and stderr both written to the file `log`, for a
    /// daemon whose output would fill a pipe that nobody reads while the test talks to it.
    pub fn spawn_logged(&self, log: &Path) -> Child {
        let file = fs::File::create(log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let copy = file.try_clone().unwrap();
        self.command()
            .stdin(Stdio::null())
            .stdout(copy)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()))
    }

    /// Like [`Run::spawn`], with a pipe on stdin for the test to write to.
    pub fn spawn_with_stdin(&self) -> Child {
        self.command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()))
    }

    /// Runs to completion (killing it at the timeout, which fails the test).
    pub fn output(&self) -> Output {
        let child = self.spawn();
        wait_output(child, self.timeout)
    }
}

/// A command running `rootlesskit ARGS` as the test user in a mount namespace of its own, where
/// `source` is bind-mounted on `target` first; that takes root and unshare(1) (`None`
/// otherwise). unshare, sh and setpriv each exec the next, so the pid of the spawned command is
/// rootlesskit's. Working directory `/`, `HOME=/`.
pub fn rootlesskit_over_bind<S: AsRef<std::ffi::OsStr>>(
    source: &Path,
    target: &Path,
    args: &[S],
) -> Option<Command> {
    if !am_root() || !have("unshare") {
        return None;
    }
    let user = test_user()?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount --bind \"$1\" \"$2\" && uid=$3 gid=$4 && shift 4 && \
             exec setpriv --reuid=$uid --regid=$gid --clear-groups -- \"$@\"",
        )
        .arg("sh")
        .arg(source)
        .arg(target)
        .arg(user.uid.to_string())
        .arg(user.gid.to_string())
        .arg(bin_dir().join("rootlesskit"))
        .args(args)
        .current_dir("/")
        .env("HOME", "/");
    Some(cmd)
}

/// Waits for a spawned run, collecting its output; panics at the timeout after killing it.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out after {timeout:?}; stderr so far: {}",
                t_err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Output {
        code,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Polls until `f` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Polls until `f` gives something or `timeout` passes; returns the last answer.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut got = None;
    wait_until(timeout, || {
        got = f();
        got.is_some()
    });
    got
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // The state follows the last ')' of the comm field.
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Pids of all processes whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            let rest: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            if rest.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
                out.push(pid);
            }
        }
    }
    out
}

/// Sends a signal with the `kill` program (keeps this crate free of libc bindings).
pub fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Fails the test with both output streams unless the run exited 0.
pub fn ok(o: &Output) {
    assert_eq!(o.code, 0, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
}

/// Whether a program is installed in one of the usual directories.
pub fn have(program: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/sbin"]
        .iter()
        .any(|d| Path::new(d).join(program).exists())
}

/// Whether /dev/net/tun can be opened by anyone (the test user included).
pub fn tun_usable() -> bool {
    fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

/// Route lines of /proc/net/route: (iface, destination, gateway) as hex strings.
pub fn routes(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

/// Whether this test process is root, so it can make host-side mounts and cgroups.
pub fn am_root() -> bool {
    current_uid() == 0
}

/// Runs `rootlesskit ARGS...` and checks what a rejected command line must give: exit 1, the
/// last stderr line `[rootlesskit:parent] error: <want>`, and nothing left in `tmpdir` (the
/// `$TMPDIR` of the run, where a temporary state dir would go).
pub fn assert_rejected(args: &[&str], want: &str, tmpdir: &Path) {
    let o = rootlesskit(args.iter().copied())
        .env("TMPDIR", tmpdir.to_str().unwrap())
        .timeout(Duration::from_secs(30))
        .output();
    assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
    let last = o.stderr.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!("[rootlesskit:parent] error: {want}"),
        "{args:?}"
    );
    assert_eq!(
        fs::read_dir(tmpdir).unwrap().count(),
        0,
        "{args:?} left a state dir"
    );
}

/// Runs `rootlesskit ARGS…` as the test user (by `setpriv`) under `strace -f -e trace=execve`
/// writing to `log`, from `/`, with `env` set and its stdout discarded; it must succeed. The
/// programs it executed ([`executed_programs`]) and the trace.
pub fn traced_rootlesskit(
    log: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Vec<String>, String) {
    let u = test_user().unwrap();
    let st = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-o"])
        .arg(log)
        .args([
            "setpriv",
            &format!("--reuid={}", u.uid),
            &format!("--regid={}", u.gid),
            "--clear-groups",
            "--",
        ])
        .arg(bin_dir().join("rootlesskit"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir("/")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let trace = fs::read_to_string(log).unwrap();
    (executed_programs(&trace), trace)
}

/// Fails (showing the trace) unless each of `programs` is `allowed` and each of `required` is
/// among them.
pub fn assert_executed(programs: &[String], trace: &str, allowed: &[&str], required: &[&str]) {
    for p in programs {
        assert!(allowed.contains(&p.as_str()), "{p} was executed:\n{trace}");
    }
    for p in required {
        assert!(programs.iter().any(|x| x == p), "{p} missing:\n{trace}");
    }
}

/// The names (basenames, sorted, once each) of the programs an `strace -f -e trace=execve`
/// log shows executed successfully.
pub fn executed_programs(trace: &str) -> Vec<String> {
    let mut programs: Vec<String> = trace
        .lines()
        .filter(|l| l.contains("execve(\"") && !l.contains("= -1"))
        .filter_map(|l| l.split('"').nth(1))
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .collect();
    programs.sort();
    programs.dedup();
    programs
}

/// One HTTP/1.1 request to the API socket `sock` on a fresh connection; the status code and
/// the body.
pub fn api_request(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: rootlesskit\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The parent's warnings in a run's stderr, without their `[rootlesskit:parent] warning: `.
pub fn parent_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("[rootlesskit:parent] warning: "))
        .collect()
}

/// Answers each connection to `l` with "pong:" and what it read (64 bytes at most), in a
/// thread of its own.
pub fn serve_pong(l: std::net::TcpListener) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        // A thread per connection: one a client opens and leaves does not hold up the next.
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 64];
                let n = c.read(&mut buf).unwrap_or(0);
                // One write: a client may read once.
                let mut reply = b"pong:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = c.write_all(&reply);
            });
        }
    });
}

/// The resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}
