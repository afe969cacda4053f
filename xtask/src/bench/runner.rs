//! Who runs the measured commands, and where: the unprivileged user, the scratch dir of staged
//! binaries, and running one command with a timeout.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::Result;

use super::startup::{Sample, parse_time_output};
use super::{PATH_ENV, SAMPLE_TIMEOUT, TIME_SCRIPT};

/// The user every measured command runs as.
#[derive(Clone, Debug)]
pub(super) struct User {
    pub(super) name: String,
    pub(super) uid: u32,
    gid: u32,
    /// Whether we are root and switch to it with setpriv.
    pub(super) switch: bool,
}

impl User {
    pub(super) fn find() -> Result<User> {
        let status = fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        let uid = status_ids(&status, "Uid:").ok_or("no Uid line in /proc/self/status")?;
        let gid = status_ids(&status, "Gid:").ok_or("no Gid line in /proc/self/status")?;
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        if uid != 0 {
            let name = passwd_name(&passwd, uid)
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| uid.to_string());
            return Ok(User {
                name,
                uid,
                gid,
                switch: false,
            });
        }
        let name = std::env::var("RKRS_TEST_USER").unwrap_or_else(|_| "rkrs-test".into());
        let (uid, gid) = passwd_ids(&passwd, &name).ok_or_else(|| {
            format!(
                "running as root needs an unprivileged user with subordinate ids: \
                 no user {name} in /etc/passwd (create it, or set RKRS_TEST_USER)"
            )
        })?;
        if uid == 0 {
            return Err(format!("user {name} is root: pick an unprivileged user"));
        }
        Ok(User {
            name,
            uid,
            gid,
            switch: true,
        })
    }
}

/// The real id of a `Uid:` or `Gid:` line of `/proc/<pid>/status`.
pub(super) fn status_ids(status: &str, key: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// uid and gid of `name` in passwd text.
pub(super) fn passwd_ids(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// The name of `uid` in passwd text.
pub(super) fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

/// A 0755 directory under the temp dir holding the staged binaries, the state dirs and the
/// traces; removed on drop.
pub(super) struct Scratch {
    pub(super) path: PathBuf,
}

impl Scratch {
    pub(super) fn new(user: &User) -> Result<Scratch> {
        let path = std::env::temp_dir().join(format!("rkrs-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        mkdir_0755(&path)?;
        let scratch = Scratch { path };
        let state = scratch.path.join("state");
        mkdir_0755(&state)?;
        if user.switch {
            std::os::unix::fs::chown(&state, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("cannot chown {}: {e}", state.display()))?;
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

pub(super) fn mkdir_0755(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {}: {e}", p.display()))
}

/// Copies `names` from `from` into `dir` (0755 each); returns `dir`.
pub(super) fn stage(dir: &Path, from: &Path, names: &[&str]) -> Result<PathBuf> {
    mkdir_0755(dir)?;
    for name in names {
        let src = from.join(name);
        if src.is_file() {
            copy_0755(&src, &dir.join(name))?;
        }
    }
    Ok(dir.to_path_buf())
}

/// Copies one binary into `dir` under its own name; returns the copy.
pub(super) fn stage_one(src: &Path, dir: &Path) -> Result<PathBuf> {
    mkdir_0755(dir)?;
    let dst = dir.join(src.file_name().unwrap_or_default());
    copy_0755(src, &dst)?;
    Ok(dst)
}

pub(super) fn copy_0755(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst)
        .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {}: {e}", dst.display()))
}

pub(super) fn on_path(program: &str) -> bool {
    PATH_ENV
        .split(':')
        .any(|d| Path::new(d).join(program).is_file())
}

/// Who a command is run for: each gets its own `TMPDIR`, so what it leaves there is its own.
pub(super) const WHO: &[&str] = &["ours", "reference", "machine"];

/// Builds the commands: the user switch, the environment and the working directory.
pub(super) struct Runner {
    pub(super) user: User,
    /// Holds `tmp-<who>`, the `TMPDIR` of each of [`WHO`].
    pub(super) scratch: PathBuf,
}

impl Runner {
    /// Creates the `TMPDIR`s (0700, owned by the user).
    pub(super) fn new(user: User, scratch: &Path) -> Result<Runner> {
        let r = Runner {
            user,
            scratch: scratch.to_path_buf(),
        };
        for who in WHO {
            let d = r.tmpdir(who);
            fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot chmod {}: {e}", d.display()))?;
            if r.user.switch {
                std::os::unix::fs::chown(&d, Some(r.user.uid), Some(r.user.gid))
                    .map_err(|e| format!("cannot chown {}: {e}", d.display()))?;
            }
        }
        Ok(r)
    }

    fn tmpdir(&self, who: &str) -> PathBuf {
        self.scratch.join(format!("tmp-{who}"))
    }

    /// What runs for `who` left in its `TMPDIR` (default state dirs, for one).
    pub(super) fn leftovers(&self, who: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.tmpdir(who))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `setpriv ...` when switching, else nothing.
    pub(super) fn prefix(&self) -> Vec<String> {
        if self.user.switch {
            vec![
                "setpriv".into(),
                format!("--reuid={}", self.user.uid),
                format!("--regid={}", self.user.gid),
                "--clear-groups".into(),
                "--".into(),
            ]
        } else {
            Vec::new()
        }
    }

    pub(super) fn home(&self) -> String {
        if self.user.switch {
            "/".into()
        } else {
            std::env::var("HOME").unwrap_or_else(|_| "/".into())
        }
    }

    /// `program args...` for `who`, with the wrappers in front (`wrappers` run as the caller).
    pub(super) fn command(&self, who: &str, wrappers: &[&str], argv: &[String]) -> Command {
        let mut full: Vec<String> = wrappers.iter().map(|s| s.to_string()).collect();
        full.extend(self.prefix());
        full.extend(argv.iter().cloned());
        let mut c = crate::command(&full[0]);
        c.args(&full[1..])
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("HOME", self.home())
            .env("TMPDIR", self.tmpdir(who))
            .current_dir("/");
        c
    }

    /// One timed run of `argv`.
    pub(super) fn sample(&self, who: &str, argv: &[String]) -> Result<Sample> {
        // bash runs as the user, so the timer covers the command alone, not the user switch.
        let mut timed: Vec<String> = ["bash", "-c", TIME_SCRIPT, "bash"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        timed.extend(argv.iter().cloned());
        let cmd = self.command(who, &[], &timed);
        let out = run_capture(cmd, SAMPLE_TIMEOUT)?;
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                describe_status(out.status),
                last_line(&out.stderr)
            ));
        }
        parse_time_output(&out.stdout)
            .ok_or_else(|| format!("no timing line in {:?}", out.stdout.trim()))
    }

    /// One line saying who runs the commands and how.
    pub(super) fn note(&self) -> String {
        let how = if self.user.switch {
            format!("through `{}`", self.prefix().join(" "))
        } else {
            "directly (not root)".into()
        };
        format!(
            "Every command runs as {} (uid {}) {how}, in /, with only PATH={PATH_ENV}, HOME={} and \
             TMPDIR (a fresh directory per side) set",
            self.user.name,
            self.user.uid,
            self.home()
        )
    }
}

/// What a finished command gave.
pub(super) struct Captured {
    pub(super) status: ExitStatus,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// Runs `cmd` in its own process group, capturing its output; kills the group at the timeout.
pub(super) fn run_capture(mut cmd: Command, timeout: Duration) -> Result<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let shown = crate::display(&cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let pid = child.id();
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(s) => s.map_err(|e| format!("waiting for `{shown}`: {e}"))?,
        Err(_) => {
            kill_group(pid, "KILL");
            let _ = rx.recv();
            return Err(format!(
                "`{shown}` did not finish within {}s",
                timeout.as_secs()
            ));
        }
    };
    // A helper left running with our pipe open must not hang the benchmark.
    let grace = Duration::from_secs(5);
    Ok(Captured {
        status,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
    })
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
pub(super) fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// `kill -SIG -- -PGID` (std has no way to signal a group).
pub(super) fn kill_group(pgid: u32, sig: &str) {
    let _ = crate::command("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `kill -SIG PID`.
pub(super) fn kill_pid(pid: u32, sig: &str) {
    let _ = crate::command("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(super) fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "ended".into(),
    }
}

/// The last non-empty line of a command's output, for an error message.
pub(super) fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no output");
    line.strip_prefix("[rootlesskit:parent] error: ")
        .unwrap_or(line)
        .to_string()
}
