//! `cargo xtask bench`: our dist binaries against the reference RootlessKit in one interleaved run (startup wall and CPU, idle RSS, binary sizes, the machine's own ceilings), printed as tables and written to BENCHMARKS.md.
//!
//! How it measures, and why this way:
//!
//! - Every command runs as the unprivileged user (as root: `setpriv` to `$RKRS_TEST_USER`,
//!   default `rkrs-test`, as `ci/` does), from copies of both binaries in one 0755 scratch dir,
//!   with the same small environment and `/` as working directory.
//! - A timed sample is `bash -c 'TIMEFORMAT=...; time CMD'`, bash already running as the user so
//!   that the user switch stays outside the timer. bash's `time` keyword reports the
//!   `getrusage(RUSAGE_CHILDREN)` difference, that is user and system CPU of every process of
//!   the tree that was waited for (the kernel adds a reaped child's totals to its parent's), in
//!   milliseconds; the wall time is `$EPOCHREALTIME` before and after, in microseconds. xtask
//!   is std-only and std has no `wait4`; GNU time would do the same but prints hundredths.
//! - Rounds interleave: every round runs every command once, ours and the reference in an order
//!   that alternates between rounds, so drift on a noisy machine hits both alike. The first
//!   rounds are warm-up and are dropped; a command that fails [`MAX_FAILURES`] times is reported
//!   with its error and not run again, fewer failed runs are dropped and noted.
//! - Idle memory is read from `/proc` (`VmRSS`, and `Pss` of `smaps_rollup`) once the state dir
//!   has `child_pid` and the tree has settled.
//!
//! New rows are table entries: [`SCENARIOS`] (rootlesskit flags, identical on both sides),
//! [`STICKS`] (commands that measure the machine) and [`targets`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{IsTerminal, Read, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Result, dist};

/// Timed runs of every command unless `--runs` says otherwise.
pub const DEFAULT_RUNS: usize = 30;
/// Rounds run first and thrown away (page cache, lazy binding, first-exec effects).
const WARMUP_ROUNDS: usize = 2;
/// Idle-memory samples per side.
const RSS_RUNS: usize = 5;
/// How long an idle tree runs after `child_pid` appears before it is read.
const RSS_SETTLE: Duration = Duration::from_millis(500);
/// Failed runs after which a command is not run again; fewer are dropped and noted (the
/// reference's builtin port driver sometimes loses a race with a target that exits at once).
const MAX_FAILURES: usize = 3;
/// The longest one timed sample may take before its process group is killed.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest an idle tree may take to write `child_pid`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Where Debian's `rootlesskit` package puts the binary.
pub const DEFAULT_REFERENCE: &str = "/usr/bin/rootlesskit";
/// `PATH` of every measured command: the same on both sides, independent of the caller's.
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The target program of every startup scenario.
const TARGET: &str = "true";
/// The script that times one command: CPU from the `time` keyword (milliseconds), wall from
/// `$EPOCHREALTIME` (microseconds) around it. Both reports go to stdout, the command's stdout
/// to /dev/null and its stderr to ours (fd 3 is closed for the command).
const TIME_SCRIPT: &str = r#"TIMEFORMAT="%3U %3S"; s=$EPOCHREALTIME; { time "$@" >/dev/null 2>&3 3>&-; } 3>&2 2>&1; r=$? e=$EPOCHREALTIME; echo "$s $e"; exit $r"#;
/// Stands for the per-start state dir in the idle command line.
const STATE_DIR: &str = "$STATE_DIR";

/// One startup row: rootlesskit flags, identical for ours and the reference, then `true`.
pub struct Scenario {
    pub flags: &'static [&'static str],
    /// A program the scenario needs on `PATH`; the row is skipped without it.
    pub needs: Option<&'static str>,
}

/// The startup rows. The slirp4netns row with `--port-driver=builtin` is the issue's command;
/// the one without the driver (and with `--disable-host-loopback`) stays for comparison.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        flags: &["--net=host"],
        needs: None,
    },
    Scenario {
        flags: &["--net=host", "--pidns", "--copy-up=/etc"],
        needs: None,
    },
    Scenario {
        flags: &[
            "--net=slirp4netns",
            "--copy-up=/etc",
            "--disable-host-loopback",
        ],
        needs: Some("slirp4netns"),
    },
    Scenario {
        flags: &[
            "--net=slirp4netns",
            "--port-driver=builtin",
            "--copy-up=/etc",
        ],
        needs: Some("slirp4netns"),
    },
    Scenario {
        flags: &["--net=pasta", "--copy-up=/etc", "--disable-host-loopback"],
        needs: Some("pasta"),
    },
];

/// A command that needs no rootlesskit: what the machine itself costs. `{user}` is replaced
/// by the name of the user the commands run as.
pub struct Stick {
    pub argv: &'static [&'static str],
    pub what: &'static str,
}

pub const STICKS: &[Stick] = &[
    Stick {
        argv: &["unshare", "-U", "-r", "true"],
        what: "ceiling: a bare user namespace (util-linux), no id ranges, no mounts",
    },
    Stick {
        argv: &["getsubids", "{user}"],
        what: "one subordinate-id lookup (shadow's getsubids), a helper `--subid-source=auto` may run",
    },
];

#[derive(Debug)]
pub struct Options {
    pub runs: usize,
    /// `--reference`; `None` means [`DEFAULT_REFERENCE`] when it exists.
    pub reference: Option<PathBuf>,
    /// `--bin-dir`; `None` means `$CARGO_TARGET_DIR/dist`, else `<root>/target/dist`.
    pub bin_dir: Option<PathBuf>,
    /// `--output`; `None` means `<root>/BENCHMARKS.md`.
    pub output: Option<PathBuf>,
    /// `--no-trace`: skip the strace timeline.
    pub trace: bool,
}

/// Parses the arguments of `cargo xtask bench`.
pub fn options(cmd: &str, rest: &[String]) -> Result<Options> {
    let p = crate::parse(
        cmd,
        rest,
        &[
            ("runs", true),
            ("reference", true),
            ("bin-dir", true),
            ("output", true),
            ("no-trace", false),
        ],
    )?;
    p.no_positionals(cmd)?;
    let runs = match p.value("runs") {
        None => DEFAULT_RUNS,
        Some(s) => s.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            format!("invalid value \"{s}\" for --runs: expected a positive whole number")
        })?,
    };
    let path = |name: &str| -> Result<Option<PathBuf>> {
        match p.value(name) {
            None => Ok(None),
            Some(v) => std::env::current_dir()
                .map(|d| Some(d.join(v)))
                .map_err(|e| format!("cannot resolve --{name} {v}: {e}")),
        }
    };
    Ok(Options {
        runs,
        reference: path("reference")?,
        bin_dir: path("bin-dir")?,
        output: path("output")?,
        trace: !p.has("no-trace"),
    })
}

/// `cargo xtask bench`.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => default_bin_dir(
            root,
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
        ),
    };
    if !bin_dir.join("rootlesskit").is_file() {
        return Err(format!(
            "no rootlesskit in {}: run `cargo xtask dist` first (or pass --bin-dir)",
            bin_dir.display()
        ));
    }
    let reference = match &opts.reference {
        Some(p) if p.is_file() => Some(p.clone()),
        Some(p) => return Err(format!("--reference {}: no such file", p.display())),
        None => Some(PathBuf::from(DEFAULT_REFERENCE)).filter(|p| p.is_file()),
    };
    let user = User::find()?;
    let scratch = Scratch::new(&user)?;
    let ours = stage(&scratch.path.join("ours"), &bin_dir, &binary_names())?;
    let reference_staged = match &reference {
        Some(r) => Some(stage_one(r, &scratch.path.join("reference"))?),
        None => None,
    };
    let runner = Runner::new(user.clone(), &scratch.path)?;

    let mut report = Report {
        machine: Machine::read(root),
        runner_note: runner.note(),
        prefix: runner.prefix(),
        bin_dir: bin_dir.clone(),
        reference: reference.clone(),
        runs: opts.runs,
        ..Report::default()
    };
    report.versions = versions(&runner, &ours, reference_staged.as_deref());
    println!("bench: ours from {}", bin_dir.display());
    match &reference {
        Some(r) => println!("bench: reference {}", r.display()),
        None => println!("bench: no reference ({DEFAULT_REFERENCE} is missing)"),
    }
    println!("bench: {}", report.runner_note);

    let mut sides = vec![Side {
        who: "ours",
        rootlesskit: ours.join("rootlesskit"),
    }];
    if let Some(r) = &reference_staged {
        sides.push(Side {
            who: "reference",
            rootlesskit: r.clone(),
        });
    }
    report.startup = startup_rows(&sides, &user.name);
    run_rounds(&runner, &mut report.startup, opts.runs);
    report.idle = idle_memory(&runner, &sides, &scratch.path.join("state"));
    report.sizes = sizes(&bin_dir, reference.as_deref());
    let echo = std::env::current_exe()
        .map_err(|e| format!("cannot find xtask's own binary: {e}"))
        .and_then(|exe| {
            let dir = scratch.path.join("tools");
            mkdir_0755(&dir)?;
            copy_0755(&exe, &dir.join(ECHO_NAME))?;
            Ok(dir.join(ECHO_NAME))
        })?;
    report.forwarding = forwarding(
        &runner,
        &sides,
        &scratch.path.join("state"),
        &echo.to_string_lossy(),
    );
    if opts.trace && user.switch && on_path("strace") {
        println!("bench: tracing one start of every scenario that ran");
        let ran: Vec<(&'static str, Vec<String>)> = report
            .startup
            .iter()
            .filter(|r| r.what.is_none())
            .flat_map(|r| r.series.iter().filter(|s| s.ok()))
            .map(|s| (s.who, s.argv.clone()))
            .collect();
        for (who, argv) in ran {
            match trace(&runner, who, &argv, &scratch.path) {
                Ok(spans) => report.traces.push((who, argv, spans)),
                Err(e) => report
                    .notes
                    .push(format!("trace of {who} `{}`: {e}", argv.join(" "))),
            }
        }
    }
    if opts.trace && !user.switch {
        report
            .notes
            .push("no trace: strace needs root here, or setuid newuidmap stops working".into());
    } else if opts.trace && !on_path("strace") {
        report
            .notes
            .push("no trace: strace is not installed".into());
    }
    for who in WHO {
        let left = runner.leftovers(who);
        if !left.is_empty() {
            let shown: Vec<&str> = left.iter().take(5).map(String::as_str).collect();
            report.notes.push(format!(
                "{who} left {} entr{} in its TMPDIR: {}{}",
                left.len(),
                if left.len() == 1 { "y" } else { "ies" },
                shown.join(", "),
                if left.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
    }
    report.load_after = read_loadavg();

    let text = report.text();
    print!("\n{text}");
    let out = opts
        .output
        .clone()
        .unwrap_or_else(|| root.join("BENCHMARKS.md"));
    fs::write(&out, report.markdown())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("\nbench: wrote {}", out.display());
    Ok(())
}

fn default_bin_dir(root: &Path, cargo_target_dir: Option<PathBuf>) -> PathBuf {
    match cargo_target_dir {
        Some(d) if d.is_absolute() => d.join("dist"),
        Some(d) => root.join(d).join("dist"),
        None => root.join("target").join("dist"),
    }
}

fn binary_names() -> Vec<&'static str> {
    dist::BINARIES.iter().map(|(_, b)| *b).collect()
}

// ---------------------------------------------------------------------------------------------
// Who runs the commands, and where.

/// The user every measured command runs as.
#[derive(Clone, Debug)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
    /// Whether we are root and switch to it with setpriv.
    switch: bool,
}

impl User {
    fn find() -> Result<User> {
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
fn status_ids(status: &str, key: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// uid and gid of `name` in passwd text.
fn passwd_ids(passwd: &str, name: &str) -> Option<(u32, u32)> {
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
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

/// A 0755 directory under the temp dir holding the staged binaries, the state dirs and the
/// traces; removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(user: &User) -> Result<Scratch> {
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

fn mkdir_0755(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {}: {e}", p.display()))
}

/// Copies `names` from `from` into `dir` (0755 each); returns `dir`.
fn stage(dir: &Path, from: &Path, names: &[&str]) -> Result<PathBuf> {
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
fn stage_one(src: &Path, dir: &Path) -> Result<PathBuf> {
    mkdir_0755(dir)?;
    let dst = dir.join(src.file_name().unwrap_or_default());
    copy_0755(src, &dst)?;
    Ok(dst)
}

fn copy_0755(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst)
        .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {}: {e}", dst.display()))
}

fn on_path(program: &str) -> bool {
    PATH_ENV
        .split(':')
        .any(|d| Path::new(d).join(program).is_file())
}

/// Who a command is run for: each gets its own `TMPDIR`, so what it leaves there is its own.
const WHO: &[&str] = &["ours", "reference", "machine"];

/// Builds the commands: the user switch, the environment and the working directory.
struct Runner {
    user: User,
    /// Holds `tmp-<who>`, the `TMPDIR` of each of [`WHO`].
    scratch: PathBuf,
}

impl Runner {
    /// Creates the `TMPDIR`s (0700, owned by the user).
    fn new(user: User, scratch: &Path) -> Result<Runner> {
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
    fn leftovers(&self, who: &str) -> Vec<String> {
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
    fn prefix(&self) -> Vec<String> {
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

    fn home(&self) -> String {
        if self.user.switch {
            "/".into()
        } else {
            std::env::var("HOME").unwrap_or_else(|_| "/".into())
        }
    }

    /// `program args...` for `who`, with the wrappers in front (`wrappers` run as the caller).
    fn command(&self, who: &str, wrappers: &[&str], argv: &[String]) -> Command {
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
    fn sample(&self, who: &str, argv: &[String]) -> Result<Sample> {
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
    fn note(&self) -> String {
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
struct Captured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` in its own process group, capturing its output; kills the group at the timeout.
fn run_capture(mut cmd: Command, timeout: Duration) -> Result<Captured> {
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
fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
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
fn kill_group(pgid: u32, sig: &str) {
    let _ = crate::command("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `kill -SIG PID`.
fn kill_pid(pid: u32, sig: &str) {
    let _ = crate::command("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "ended".into(),
    }
}

/// The last non-empty line of a command's output, for an error message.
fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no output");
    line.strip_prefix("[rootlesskit:parent] error: ")
        .unwrap_or(line)
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Startup.

/// One implementation under test.
struct Side {
    who: &'static str,
    rootlesskit: PathBuf,
}

impl Side {
    fn argv(&self, flags: &[&str]) -> Vec<String> {
        let mut v = vec![self.rootlesskit.to_string_lossy().into_owned()];
        v.extend(flags.iter().map(|s| s.to_string()));
        v.push(TARGET.into());
        v
    }
}

/// Wall and CPU time of one run, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    wall: f64,
    user: f64,
    sys: f64,
}

impl Sample {
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// The samples of one command, or why it stopped.
#[derive(Debug, Default)]
struct Series {
    who: &'static str,
    argv: Vec<String>,
    samples: Vec<Sample>,
    /// Errors of failed runs that were dropped (fewer than [`MAX_FAILURES`]).
    dropped: Vec<String>,
    error: Option<String>,
}

impl Series {
    fn new(who: &'static str, argv: Vec<String>) -> Series {
        Series {
            who,
            argv,
            ..Series::default()
        }
    }
    fn walls(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.wall).collect()
    }
    fn cpus(&self) -> Vec<f64> {
        self.samples.iter().map(Sample::cpu).collect()
    }
    fn ok(&self) -> bool {
        self.error.is_none() && !self.samples.is_empty()
    }
}

/// A row of the startup table: a scenario (ours and the reference) or a measuring stick.
#[derive(Debug, Default)]
struct TimedRow {
    label: String,
    /// For sticks: what the command shows.
    what: Option<&'static str>,
    series: Vec<Series>,
    /// Why the row was not run at all.
    skipped: Option<String>,
}

fn startup_rows(sides: &[Side], user: &str) -> Vec<TimedRow> {
    let mut rows = Vec::new();
    for sc in SCENARIOS {
        let mut row = TimedRow {
            label: format!("{} {TARGET}", sc.flags.join(" ")),
            ..TimedRow::default()
        };
        match sc.needs.filter(|p| !on_path(p)) {
            Some(p) => row.skipped = Some(format!("{p} is not installed")),
            None => {
                row.series = sides
                    .iter()
                    .map(|s| Series::new(s.who, s.argv(sc.flags)))
                    .collect()
            }
        }
        rows.push(row);
    }
    for st in STICKS {
        let argv: Vec<String> = st.argv.iter().map(|a| a.replace("{user}", user)).collect();
        let mut row = TimedRow {
            label: argv.join(" "),
            what: Some(st.what),
            ..TimedRow::default()
        };
        if on_path(&argv[0]) {
            row.series = vec![Series::new("machine", argv)];
        } else {
            row.skipped = Some(format!("{} is not installed", argv[0]));
        }
        rows.push(row);
    }
    rows
}

/// Step `step` (from 1) of `total`: rewrites one status line on a terminal; when piped, says
/// only that the steps begin.
fn progress(what: &str, step: usize, total: usize) {
    let mut out = std::io::stdout();
    if out.is_terminal() {
        print!("\r\x1b[Kbench: {what} {step}/{total}");
    } else if step == 1 {
        println!("bench: {what}, {total} in all");
    }
    let _ = out.flush();
}

/// Ends the status line on a terminal.
fn progress_done() {
    if std::io::stdout().is_terminal() {
        println!();
    }
}

/// Warm-up rounds, then `runs` rounds; each round runs every live series once.
fn run_rounds(runner: &Runner, rows: &mut [TimedRow], runs: usize) {
    let total = WARMUP_ROUNDS + runs;
    for round in 0..total {
        progress("startup round", round + 1, total);
        for row in rows.iter_mut() {
            let n = row.series.len();
            for k in 0..n {
                // Alternate who goes first, so neither side always runs on a warmer cache.
                let i = if round % 2 == 0 { k } else { n - 1 - k };
                let s = &mut row.series[i];
                if s.error.is_some() {
                    continue;
                }
                match runner.sample(s.who, &s.argv) {
                    Ok(sample) if round >= WARMUP_ROUNDS => s.samples.push(sample),
                    Ok(_) => {}
                    Err(e) => {
                        println!(
                            "\nbench: {} `{}` failed in round {}: {e}",
                            s.who,
                            row.label,
                            round + 1
                        );
                        s.dropped.push(e.clone());
                        if s.dropped.len() >= MAX_FAILURES {
                            s.error = Some(e);
                        }
                    }
                }
            }
        }
    }
    progress_done();
}

// ---------------------------------------------------------------------------------------------
// Idle memory.

/// One idle tree, read from /proc.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Idle {
    parent_rss_kib: u64,
    tree_rss_kib: u64,
    tree_pss_kib: Option<u64>,
    processes: usize,
}

/// One number read off an idle tree.
type IdleMetric = fn(&Idle) -> Option<u64>;

/// The idle samples of one side.
#[derive(Debug, Default)]
struct IdleSeries {
    who: &'static str,
    argv: Vec<String>,
    samples: Vec<Idle>,
    error: Option<String>,
}

fn idle_memory(runner: &Runner, sides: &[Side], state_root: &Path) -> Vec<IdleSeries> {
    let mut out: Vec<IdleSeries> = sides
        .iter()
        .map(|s| IdleSeries {
            who: s.who,
            argv: vec![
                s.rootlesskit.to_string_lossy().into_owned(),
                format!("--state-dir={STATE_DIR}"),
                "sleep".into(),
                "30".into(),
            ],
            ..IdleSeries::default()
        })
        .collect();
    for r in 0..RSS_RUNS {
        progress("idle memory run", r + 1, RSS_RUNS);
        let n = out.len();
        for k in 0..n {
            let i = if r % 2 == 0 { k } else { n - 1 - k };
            let s = &mut out[i];
            if s.error.is_some() {
                continue;
            }
            let state = state_root.join(format!("{}-{r}", s.who));
            let argv: Vec<String> = s
                .argv
                .iter()
                .map(|a| a.replace(STATE_DIR, &state.to_string_lossy()))
                .collect();
            match idle_once(runner, s.who, &argv, &state) {
                Ok(sample) => s.samples.push(sample),
                Err(e) => {
                    println!("\nbench: idle {} failed: {e}", s.who);
                    s.error = Some(e);
                }
            }
            // rootlesskit removes what it made; this clears whatever a failed run left.
            let _ = fs::remove_dir_all(&state);
        }
    }
    progress_done();
    out
}

/// Starts `argv` (a rootlesskit with `--state-dir=state` and a sleeping target), waits for
/// `child_pid`, lets it settle, reads the tree and stops it.
fn idle_once(runner: &Runner, who: &str, argv: &[String], state: &Path) -> Result<Idle> {
    let Server {
        mut child,
        pid,
        err,
    } = Server::start(runner, who, argv)?;
    let result = (|| {
        let deadline = Instant::now() + START_TIMEOUT;
        while !state.join("child_pid").exists() {
            if let Ok(Some(st)) = child.try_wait() {
                let said = err.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
                return Err(format!("{}: {}", describe_status(st), last_line(&said)));
            }
            if Instant::now() > deadline {
                return Err(format!("no child_pid after {}s", START_TIMEOUT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(RSS_SETTLE);
        read_tree(pid)
    })();
    stop(&mut child, pid);
    result
}

/// SIGTERM to rootlesskit (it forwards it to the target), SIGKILL to the group if that fails.
fn stop(child: &mut Child, pid: u32) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        kill_group(pid, "KILL");
        return;
    }
    kill_pid(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // Whatever it left behind in its group goes too.
            kill_group(pid, "KILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_group(pid, "KILL");
    let _ = child.wait();
}

/// Memory of `root` and all its descendants.
fn read_tree(root: u32) -> Result<Idle> {
    let tree = descendants(root, &proc_parents());
    let rss = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| kib_field(&s, "VmRSS:"))
    };
    let pss = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| kib_field(&s, "Pss:"))
    };
    let parent_rss_kib = rss(root).ok_or_else(|| format!("no VmRSS for pid {root}"))?;
    let tree_pss: Option<Vec<u64>> = tree.iter().map(|&p| pss(p)).collect();
    Ok(Idle {
        parent_rss_kib,
        tree_rss_kib: tree.iter().filter_map(|&p| rss(p)).sum(),
        tree_pss_kib: tree_pss.map(|v| v.iter().sum()),
        processes: tree.len(),
    })
}

/// The ppid field of `/proc/<pid>/stat` (the comm field may hold spaces and parentheses).
fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every pid below it in `(pid, ppid)` pairs, root first.
fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        let mut kids: Vec<u32> = parents
            .iter()
            .filter(|&&(pid, ppid)| ppid == p && pid != p)
            .map(|&(pid, _)| pid)
            .collect();
        kids.sort_unstable();
        out.extend(
            kids.into_iter()
                .filter(|k| !out.contains(k))
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
}

/// A `Key:   123 kB` line of `/proc/<pid>/status` or smaps_rollup, in KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
    let mut it = rest.split_whitespace();
    let n = it.next()?.parse().ok()?;
    (it.next() == Some("kB")).then_some(n)
}

// ---------------------------------------------------------------------------------------------
// Port forwarding through the builtin driver: throughput, CPU per GB, connections/s.

/// Rounds per side of every forwarding measurement; the sides take turns in every round.
const FWD_ROUNDS: usize = 3;
/// Seconds the iperf3 client sends.
const IPERF_SECONDS: u32 = 5;
/// Where iperf3 (`iperf3 -s`) listens inside the namespace.
const IPERF_PORT: u16 = 5201;
/// Where the echo server listens inside the namespace.
const ECHO_PORT: u16 = 8000;
/// Timed connections per round of the connection test.
const CONNS: usize = 2000;
/// Untimed connections before them.
const CONNS_WARMUP: usize = 50;
/// Linux's `USER_HZ`: the unit of `utime` and `stime` in `/proc/<pid>/stat`.
const CLK_TCK: f64 = 100.0;
/// The longest a forwarding start may take until both ends listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one connection of the connection test may take to connect or to echo.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// The iperf3 binary; without it the throughput rows are skipped.
const IPERF3: &str = "/usr/bin/iperf3";
/// What the echo server inside the namespace is called once staged: this xtask binary,
/// run as `echo-server PORT`.
const ECHO_NAME: &str = "rkrs-echo";
/// Stands for the host port in the command lines shown (a fresh free port each start).
const PORT: &str = "$PORT";
/// The rootlesskit flags of every forwarding start, identical on both sides.
const FWD_FLAGS: &[&str] = &[
    "--net=slirp4netns",
    "--disable-host-loopback",
    "--port-driver=builtin",
];
/// Who the ceilings are recorded for.
const LOOPBACK: &str = "loopback";

/// The rounds of one path (ours, the reference, or the host's loopback), or why it stopped.
#[derive(Debug, Default)]
struct FwdSeries {
    who: &'static str,
    /// The command that serves (`$STATE_DIR` and `$PORT` stand for the fresh values).
    argv: Vec<String>,
    /// Gbps (throughput) or connections/s (connection test), one per round.
    rates: Vec<f64>,
    /// CPU seconds of the rootlesskit parent per GB received, one per round (throughput).
    cpu_per_gb: Vec<f64>,
    /// Percent of that CPU time spent in the kernel, one per round (throughput).
    kernel_pct: Vec<f64>,
    /// Every timed connection's connect + echo time in ms, all rounds (connection test).
    latency_ms: Vec<f64>,
    error: Option<String>,
}

impl FwdSeries {
    fn new(who: &'static str, argv: Vec<String>) -> FwdSeries {
        FwdSeries {
            who,
            argv,
            ..FwdSeries::default()
        }
    }
    fn ok(&self) -> bool {
        self.error.is_none() && !self.rates.is_empty()
    }
    fn rate(&self) -> Option<f64> {
        median(&self.rates).filter(|_| self.ok())
    }
    fn cpu(&self) -> Option<f64> {
        median(&self.cpu_per_gb).filter(|_| self.ok())
    }
    fn latency(&self, p: f64) -> Option<f64> {
        percentile(&self.latency_ms, p).filter(|_| self.ok())
    }
}

/// What the forwarding phase measured.
#[derive(Debug, Default)]
struct Forwarding {
    /// Why no forwarding row ran (no slirp4netns).
    skipped: Option<String>,
    /// Why the throughput rows did not run (no iperf3).
    throughput_skipped: Option<String>,
    /// Why the connection rows did not run (no python3).
    conns_skipped: Option<String>,
    throughput: Vec<FwdSeries>,
    /// UDP throughput, the same rounds with `iperf3 -u`.
    udp: Vec<FwdSeries>,
    /// A perf profile of each side's parent during TCP forwarding, or why not.
    profiles: Vec<(&'static str, std::result::Result<Profile, String>)>,
    /// The same during the connection test, with the connections/s seen meanwhile.
    conn_profiles: Vec<(&'static str, ConnProfile)>,
    conns: Vec<FwdSeries>,
}

/// One iperf3 run: what arrived and what the server side's forwarder spent.
struct Transfer {
    bits_per_second: f64,
    bytes: f64,
    /// CPU seconds of the watched process during the client run.
    cpu_s: Option<f64>,
    /// The part of `cpu_s` spent in the kernel (`stime`).
    kernel_s: Option<f64>,
}

/// `rootlesskit --state-dir=... FLAGS -p 127.0.0.1:PORT:INNER/tcp TARGET...`.
fn fwd_argv(side: &Side, state: &str, port: &str, inner: u16, target: &[&str]) -> Vec<String> {
    let mut v = vec![
        side.rootlesskit.to_string_lossy().into_owned(),
        format!("--state-dir={state}"),
    ];
    v.extend(FWD_FLAGS.iter().map(|s| s.to_string()));
    v.push("-p".into());
    v.push(format!("127.0.0.1:{port}:{inner}/tcp"));
    v.extend(target.iter().map(|s| s.to_string()));
    v
}

fn iperf_client_argv(port: &str, udp: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        port,
        "-t",
        &IPERF_SECONDS.to_string(),
        "-J",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if udp {
        // As fast as the sender can (upstream's benchmark asks for 100G, the same thing).
        v.extend(["-u", "-b", "0"].map(String::from));
    }
    v
}

/// The iperf3 server inside a side's rootlesskit; UDP also publishes the UDP port (the
/// TCP one carries iperf3's control connection).
fn iperf_server_argv(side: &Side, state: &str, port: &str, udp: bool) -> Vec<String> {
    let mut v = fwd_argv(side, state, port, IPERF_PORT, &[]);
    if udp {
        v.push("-p".into());
        v.push(format!("127.0.0.1:{port}:{IPERF_PORT}/udp"));
    }
    v.extend(iperf_target().map(String::from));
    v
}

fn iperf_target() -> [&'static str; 2] {
    ["iperf3", "-s"]
}

fn echo_target(echo: &str) -> [&str; 3] {
    [echo, "echo-server", "8000"]
}

/// The connection test's server, inside the namespace and for the ceiling on the host:
/// accepts on `listener` and echoes one connection at a time until it ends (the client is
/// sequential). Never returns.
fn serve_echo(listener: std::net::TcpListener) -> ! {
    loop {
        let Ok((mut c, _)) = listener.accept() else {
            continue;
        };
        let _ = c.set_nodelay(true);
        let _ = c.set_read_timeout(Some(CONN_TIMEOUT));
        let mut buf = [0u8; 512];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }
}

/// `cargo xtask echo-server PORT`: [`serve_echo`] on `[::]:PORT`, dual-stack.
pub fn echo_server(port: u16) -> Result<()> {
    let l = std::net::TcpListener::bind(std::net::SocketAddr::from((
        std::net::Ipv6Addr::UNSPECIFIED,
        port,
    )))
    .map_err(|e| format!("cannot listen on [::]:{port}: {e}"))?;
    serve_echo(l)
}

/// [`FWD_ROUNDS`] iperf3 rounds of TCP (or UDP) through ours, the reference and the
/// loopback ceiling.
fn throughput_rounds(
    runner: &Runner,
    sides: &[Side],
    state_root: &Path,
    udp: bool,
) -> Vec<FwdSeries> {
    let what = if udp { "udp" } else { "throughput" };
    let mut series: Vec<FwdSeries> = sides
        .iter()
        .map(|s| FwdSeries::new(s.who, iperf_server_argv(s, STATE_DIR, PORT, udp)))
        .collect();
    series.push(FwdSeries::new(
        LOOPBACK,
        ["iperf3", "-s", "-p", PORT].map(String::from).to_vec(),
    ));
    for round in 0..FWD_ROUNDS {
        progress(&format!("{what} round"), round + 1, FWD_ROUNDS);
        let n = series.len();
        for k in 0..n {
            // ours and the reference swap order each round; the ceiling runs last.
            let i = if round % 2 == 1 && k + 1 < n {
                n - 2 - k
            } else {
                k
            };
            let s = &mut series[i];
            if s.error.is_some() {
                continue;
            }
            let state = state_root.join(format!("{}-{what}-{round}", s.who));
            let result = match sides.iter().find(|side| side.who == s.who) {
                Some(side) => iperf_forwarded(runner, side, &state, udp),
                None => iperf_loopback(runner, udp),
            };
            let _ = fs::remove_dir_all(&state);
            match result {
                Ok(t) => {
                    s.rates.push(t.bits_per_second / 1e9);
                    if let Some(cpu) = t.cpu_s.filter(|_| t.bytes > 0.0) {
                        s.cpu_per_gb.push(cpu / (t.bytes / 1e9));
                        if let Some(k) = t.kernel_s.filter(|_| cpu > 0.0) {
                            s.kernel_pct.push(100.0 * k / cpu);
                        }
                    }
                }
                Err(e) => {
                    println!("\nbench: {what} {} failed: {e}", s.who);
                    s.error = Some(e);
                }
            }
        }
    }
    progress_done();
    series
}

/// Throughput and connection rounds of ours, the reference and the loopback ceilings.
fn forwarding(runner: &Runner, sides: &[Side], state_root: &Path, echo: &str) -> Forwarding {
    let mut f = Forwarding::default();
    if !on_path("slirp4netns") {
        f.skipped = Some("slirp4netns is not installed".into());
        return f;
    }
    if Path::new(IPERF3).is_file() {
        f.throughput = throughput_rounds(runner, sides, state_root, false);
        f.udp = throughput_rounds(runner, sides, state_root, true);
        // perf needs root (another user's process, the kernel's symbols): `switch` says we are.
        if on_path("perf") && runner.user.switch {
            for side in sides {
                println!("bench: profiling {} while it forwards", side.who);
                let state = state_root.join(format!("{}-profile", side.who));
                let p = profile_forwarding(runner, side, &state);
                let _ = fs::remove_dir_all(&state);
                f.profiles.push((side.who, p));
            }
        }
    } else {
        f.throughput_skipped = Some(format!("{IPERF3} is not installed"));
    }
    {
        f.conns = sides
            .iter()
            .map(|s| {
                FwdSeries::new(
                    s.who,
                    fwd_argv(s, STATE_DIR, PORT, ECHO_PORT, &echo_target(echo)),
                )
            })
            .collect();
        f.conns.push(FwdSeries::new(
            LOOPBACK,
            vec!["an echo thread of xtask on 127.0.0.1".into()],
        ));
        let host_echo = host_echo_server();
        for round in 0..FWD_ROUNDS {
            progress("connection round", round + 1, FWD_ROUNDS);
            let n = f.conns.len();
            for k in 0..n {
                let i = if round % 2 == 1 && k + 1 < n {
                    n - 2 - k
                } else {
                    k
                };
                let s = &mut f.conns[i];
                if s.error.is_some() {
                    continue;
                }
                let state = state_root.join(format!("{}-echo-{round}", s.who));
                let result = match (sides.iter().find(|side| side.who == s.who), &host_echo) {
                    (Some(side), _) => conns_forwarded(runner, side, &state, echo),
                    (None, Ok(addr)) => conn_round(*addr),
                    (None, Err(e)) => Err(e.clone()),
                };
                let _ = fs::remove_dir_all(&state);
                match result {
                    Ok((secs, lat)) => {
                        s.rates.push(lat.len() as f64 / secs);
                        s.latency_ms.extend(lat);
                    }
                    Err(e) => {
                        println!("\nbench: connections {} failed: {e}", s.who);
                        s.error = Some(e);
                    }
                }
            }
        }
        progress_done();
        if on_path("perf") && runner.user.switch {
            for side in sides {
                println!("bench: profiling {} while it takes connections", side.who);
                let state = state_root.join(format!("{}-conn-profile", side.who));
                let p = profile_connections(runner, side, &state, echo);
                let _ = fs::remove_dir_all(&state);
                f.conn_profiles.push((side.who, p));
            }
        }
    }
    f
}

/// A running server (rootlesskit with a target, or a bare iperf3), in its own process group.
struct Server {
    child: Child,
    pid: u32,
    err: mpsc::Receiver<String>,
}

impl Server {
    fn start(runner: &Runner, who: &str, argv: &[String]) -> Result<Server> {
        let mut cmd = runner.command(who, &[], argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let shown = crate::display(&cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        let pid = child.id();
        let err = reader(child.stderr.take());
        Ok(Server { child, pid, err })
    }

    /// Waits until `port` listens on the host (IPv4 or IPv6) and, with `inner`, a process below
    /// this one in another network namespace listens on `inner`.
    fn wait_ready(&mut self, port: u16, inner: Option<u16>) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let said = self
                    .err
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or_default();
                return Err(format!("{}: {}", describe_status(st), last_line(&said)));
            }
            // A bare iperf3 listens on [::] (dual-stack), rootlesskit on 127.0.0.1.
            let host = ["tcp", "tcp6"].iter().any(|t| {
                fs::read_to_string(format!("/proc/self/net/{t}"))
                    .is_ok_and(|text| tcp_listening(&text, port))
            });
            if host && inner.is_none_or(|p| listens_inside(self.pid, p)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nothing listened within {}s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        stop(&mut self.child, self.pid);
    }
}

/// Whether a descendant of `root` in a network namespace other than ours listens on `port`
/// (TCP, IPv4 or IPv6).
fn listens_inside(root: u32, port: u16) -> bool {
    let ours = fs::read_link("/proc/self/ns/net").ok();
    descendants(root, &proc_parents()).iter().any(|pid| {
        let ns = fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        ns.is_some()
            && ns != ours
            && ["tcp", "tcp6"].iter().any(|t| {
                fs::read_to_string(format!("/proc/{pid}/net/{t}"))
                    .is_ok_and(|text| tcp_listening(&text, port))
            })
    })
}

/// Whether a /proc/net/tcp or tcp6 table has a socket listening on local `port`.
fn tcp_listening(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1);
        let state = f.nth(1);
        let p = local
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        p == Some(port) && state == Some("0A")
    })
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// `utime + stime` of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    stat_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 14 and 15 (`utime`, `stime`) of `/proc/<pid>/stat`.
fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Runs the iperf3 client against 127.0.0.1:`port`, reading `watch`'s CPU before and after.
fn iperf_client(runner: &Runner, port: u16, watch: Option<u32>, udp: bool) -> Result<Transfer> {
    let argv = iperf_client_argv(&port.to_string(), udp);
    let before = watch.and_then(cpu_ticks);
    let timeout = Duration::from_secs(u64::from(IPERF_SECONDS) + 30);
    let out = run_capture(runner.command("machine", &[], &argv), timeout)?;
    let after = watch.and_then(cpu_ticks);
    let (bits_per_second, bytes) = iperf_received(&out.stdout).map_err(|e| {
        if out.status.success() {
            e
        } else {
            format!("iperf3 client: {}: {e}", describe_status(out.status))
        }
    })?;
    let (cpu_s, kernel_s) = match (before, after) {
        (Some((bu, bs)), Some((au, as_))) if au >= bu && as_ >= bs => (
            Some(((au - bu) + (as_ - bs)) as f64 / CLK_TCK),
            Some((as_ - bs) as f64 / CLK_TCK),
        ),
        _ => (None, None),
    };
    Ok(Transfer {
        bits_per_second,
        bytes,
        cpu_s,
        kernel_s,
    })
}

// Where the forwarding time goes: a perf profile of the parent while iperf3 runs.

/// Seconds the profiled iperf3 client sends, and how long perf samples in the middle.
const PROFILE_CLIENT_SECONDS: u32 = 6;
const PROFILE_SECONDS: u32 = 3;

/// What one profiled forwarding run found: the share of the rootlesskit parent's CPU
/// samples, per kernel path, with children (a sample in `tcp_sendmsg` under `splice` counts
/// for both).
#[derive(Debug, Default, Clone, PartialEq)]
struct Profile {
    samples: u64,
    /// `(symbol, percent with children)` for [`PROFILE_SYMBOLS`], in that order.
    shares: Vec<(String, f64)>,
    /// Percent of samples whose own frame is in user space (`[.]`).
    user: f64,
}

/// The kernel paths shown, with what each one is.
const PROFILE_SYMBOLS: &[(&str, &str)] = &[
    ("do_syscall_64", "in system calls"),
    ("__x64_sys_splice", "splice(2)"),
    ("splice_to_socket", "… sending into a socket (TCP transmit)"),
    ("tcp_splice_read", "… reading from a socket"),
    (
        "net_rx_action",
        "loopback receive run for the peer (softirq)",
    ),
    ("__x64_sys_epoll_wait", "epoll_wait(2)"),
    ("__x64_sys_epoll_pwait", "epoll_pwait(2)"),
    ("__x64_sys_read", "read(2)"),
    ("__x64_sys_write", "write(2)"),
];

/// Parses `perf report --children --sort sym -g none --stdio`: lines like
/// `    92.02%     0.10%  [k] __x64_sys_splice`, and the `# Samples: 3K of event` header.
fn parse_perf_report(text: &str, symbols: &[(&str, &str)]) -> Option<Profile> {
    let mut p = Profile::default();
    let mut by_sym = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("# Samples:") {
            // "3K of event 'cpu-clock'" or "804 of event ..."
            let n = rest.split_whitespace().next()?;
            p.samples = match n.strip_suffix('K') {
                Some(k) => (k.parse::<f64>().ok()? * 1000.0) as u64,
                None => n.parse().ok()?,
            };
            continue;
        }
        let mut w = t.split_whitespace();
        let (Some(children), Some(own), Some(kind), Some(sym)) =
            (w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let pct = |x: &str| x.strip_suffix('%').and_then(|v| v.parse::<f64>().ok());
        let (Some(children), Some(own)) = (pct(children), pct(own)) else {
            continue;
        };
        if kind == "[.]" {
            p.user += own;
        }
        by_sym.entry(sym.to_string()).or_insert(children);
    }
    p.shares = symbols
        .iter()
        .map(|(sym, _)| (sym.to_string(), by_sym.get(*sym).copied().unwrap_or(0.0)))
        .collect();
    (p.samples > 0).then_some(p)
}

/// `perf record` of `pid` for [`PROFILE_SECONDS`] into `data`, read back as a [`Profile`]
/// over `symbols`.
fn perf_profile(pid: u32, data: &Path, symbols: &[(&str, &str)]) -> Result<Profile> {
    let mut rec = crate::command("perf");
    rec.args(["record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-o"])
        .arg(data)
        .args(["-p", &pid.to_string(), "--", "sleep"])
        .arg(PROFILE_SECONDS.to_string());
    let recorded = run_capture(rec, Duration::from_secs(u64::from(PROFILE_SECONDS) + 30))?;
    if !recorded.status.success() {
        return Err(format!("perf record: {}", last_line(&recorded.stderr)));
    }
    let mut rep = crate::command("perf");
    rep.args([
        "report",
        "--children",
        "--sort",
        "sym",
        "-g",
        "none",
        "--stdio",
        "-i",
    ])
    .arg(data);
    let report = run_capture(rep, Duration::from_secs(60))?;
    let _ = fs::remove_file(data);
    parse_perf_report(&report.stdout, symbols).ok_or_else(|| "perf report gave no samples".into())
}

/// A connection-test profile and the connections/s seen meanwhile, or why there is none.
type ConnProfile = std::result::Result<(Profile, f64), String>;

/// The kernel paths shown for the connection test.
const CONN_PROFILE_SYMBOLS: &[(&str, &str)] = &[
    ("do_syscall_64", "in system calls"),
    ("__x64_sys_accept4", "accept4(2)"),
    ("__x64_sys_connect", "connect(2)"),
    ("__x64_sys_splice", "splice(2)"),
    ("__x64_sys_read", "read(2)"),
    ("__x64_sys_write", "write(2)"),
    ("__x64_sys_shutdown", "shutdown(2)"),
    ("__x64_sys_close", "close(2)"),
    ("__x64_sys_epoll_ctl", "epoll_ctl(2)"),
    ("__x64_sys_epoll_wait", "epoll_wait(2)"),
    ("__x64_sys_epoll_pwait", "epoll_pwait(2)"),
    ("__x64_sys_ppoll", "ppoll(2)"),
    ("__x64_sys_futex", "futex(2)"),
    ("__x64_sys_sendmsg", "sendmsg(2)"),
    ("__x64_sys_recvmsg", "recvmsg(2)"),
    (
        "net_rx_action",
        "loopback receive run for the peer (softirq)",
    ),
];

/// A perf profile of `side`'s parent while the sequential echo client of the connection test
/// runs without pause, and the connections per second it saw meanwhile.
fn profile_connections(
    runner: &Runner,
    side: &Side,
    state: &Path,
    echo: &str,
) -> Result<(Profile, f64)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let port = free_port()?;
    let argv = fwd_argv(
        side,
        &state.to_string_lossy(),
        &port.to_string(),
        ECHO_PORT,
        &echo_target(echo),
    );
    let mut server = Server::start(runner, side.who, &argv)?;
    let result = server.wait_ready(port, Some(ECHO_PORT)).and_then(|()| {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let client = {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    echo_once(addr).map_err(|e| format!("connection: {e}"))?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
        let profile = perf_profile(
            server.pid,
            &state.with_extension("perf.data"),
            CONN_PROFILE_SYMBOLS,
        );
        let (n1, t1) = (done.load(Ordering::Relaxed), Instant::now());
        stop.store(true, Ordering::Relaxed);
        client
            .join()
            .map_err(|_| "the client thread panicked".to_string())??;
        Ok((profile?, (n1 - n0) as f64 / (t1 - t0).as_secs_f64()))
    });
    server.stop();
    result
}

/// One profiled TCP run through `side`: iperf3 for [`PROFILE_CLIENT_SECONDS`], and
/// `perf record` of the parent for [`PROFILE_SECONDS`] in the middle.
fn profile_forwarding(runner: &Runner, side: &Side, state: &Path) -> Result<Profile> {
    let port = free_port()?;
    let argv = iperf_server_argv(side, &state.to_string_lossy(), &port.to_string(), false);
    let mut server = Server::start(runner, side.who, &argv)?;
    let result = server.wait_ready(port, Some(IPERF_PORT)).and_then(|()| {
        let mut client_argv = iperf_client_argv(&port.to_string(), false);
        if let Some(t) = client_argv.iter().position(|a| a == "-t") {
            client_argv[t + 1] = PROFILE_CLIENT_SECONDS.to_string();
        }
        let client = runner.command("machine", &[], &client_argv);
        let timeout = Duration::from_secs(u64::from(PROFILE_CLIENT_SECONDS) + 30);
        let client = std::thread::spawn(move || run_capture(client, timeout));
        std::thread::sleep(Duration::from_millis(1500));
        let profile = perf_profile(
            server.pid,
            &state.with_extension("perf.data"),
            PROFILE_SYMBOLS,
        );
        let _ = client.join();
        profile
    });
    server.stop();
    result
}

/// One throughput round through a side's builtin driver.
fn iperf_forwarded(runner: &Runner, side: &Side, state: &Path, udp: bool) -> Result<Transfer> {
    let port = free_port()?;
    let argv = iperf_server_argv(side, &state.to_string_lossy(), &port.to_string(), udp);
    let mut server = Server::start(runner, side.who, &argv)?;
    let result = server
        .wait_ready(port, Some(IPERF_PORT))
        .and_then(|()| iperf_client(runner, port, Some(server.pid), udp));
    server.stop();
    let t = result?;
    if t.cpu_s.is_none() {
        return Err("cannot read the CPU time of rootlesskit".into());
    }
    Ok(t)
}

/// One round of the ceiling: iperf3 server and client both on the host.
fn iperf_loopback(runner: &Runner, udp: bool) -> Result<Transfer> {
    let port = free_port()?;
    let argv: Vec<String> = ["iperf3", "-s", "-p", &port.to_string()]
        .map(String::from)
        .to_vec();
    let mut server = Server::start(runner, "machine", &argv)?;
    let result = server
        .wait_ready(port, None)
        .and_then(|()| iperf_client(runner, port, None, udp));
    server.stop();
    result
}

/// `end.sum_received.bits_per_second` and `.bytes` of `iperf3 -J` output, or its `error`.
fn iperf_received(json: &str) -> Result<(f64, f64)> {
    if let Some(e) = json_string(json, "error") {
        return Err(format!("iperf3: {e}"));
    }
    let sum = json_object(json, "end")
        .and_then(|end| json_object(end, "sum_received"))
        .ok_or("no end.sum_received in the iperf3 output")?;
    match (
        json_number(sum, "bits_per_second"),
        json_number(sum, "bytes"),
    ) {
        (Some(bps), Some(bytes)) => Ok((bps, bytes)),
        _ => Err("no bits_per_second or bytes in end.sum_received".into()),
    }
}

/// What follows the first `"key"` + `:` (spaces allowed around the colon) in `text`.
fn json_value<'a>(text: &'a str, key: &str, first: impl Fn(char) -> bool) -> Option<&'a str> {
    let pat = format!("\"{key}\"");
    let mut at = 0;
    while let Some(i) = text[at..].find(&pat) {
        let after = &text[at + i + pat.len()..];
        if let Some(v) = after.trim_start().strip_prefix(':') {
            let v = v.trim_start();
            if v.starts_with(&first) {
                return Some(v);
            }
        }
        at += i + pat.len();
    }
    None
}

/// The object (braces included) of the first `"key": {` in `text`; braces inside strings
/// count too, which iperf3's output does not need.
fn json_object<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let v = json_value(text, key, |c| c == '{')?;
    let mut depth = 0usize;
    for (i, c) in v.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&v[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The number of the first `"key": <number>` in `text`.
fn json_number(text: &str, key: &str) -> Option<f64> {
    let v = json_value(text, key, |c| c.is_ascii_digit() || c == '-')?;
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(v.len());
    v[..end].parse().ok().filter(|n: &f64| n.is_finite())
}

/// The string of the first `"key": "<string>"` in `text`, escapes kept as written.
fn json_string(text: &str, key: &str) -> Option<String> {
    let v = json_value(text, key, |c| c == '"')?;
    let body = &v[1..];
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(body[..i].to_string()),
            _ => escaped = false,
        }
    }
    None
}

/// One connection round through a side's builtin driver to the echo server inside.
fn conns_forwarded(
    runner: &Runner,
    side: &Side,
    state: &Path,
    echo: &str,
) -> Result<(f64, Vec<f64>)> {
    let port = free_port()?;
    let argv = fwd_argv(
        side,
        &state.to_string_lossy(),
        &port.to_string(),
        ECHO_PORT,
        &echo_target(echo),
    );
    let mut server = Server::start(runner, side.who, &argv)?;
    let result = server
        .wait_ready(port, Some(ECHO_PORT))
        .and_then(|()| conn_round(std::net::SocketAddr::from(([127, 0, 0, 1], port))));
    server.stop();
    result
}

/// [`CONNS_WARMUP`] untimed then [`CONNS`] timed sequential connections (connect, write one
/// byte, read it back, close): the seconds the timed ones took, and each one's ms.
fn conn_round(addr: std::net::SocketAddr) -> Result<(f64, Vec<f64>)> {
    for i in 0..CONNS_WARMUP {
        echo_once(addr).map_err(|e| format!("warm-up connection {i}: {e}"))?;
    }
    let mut lat = Vec::with_capacity(CONNS);
    let start = Instant::now();
    for i in 0..CONNS {
        let t = Instant::now();
        echo_once(addr).map_err(|e| format!("connection {i}: {e}"))?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((start.elapsed().as_secs_f64(), lat))
}

fn echo_once(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, CONN_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(CONN_TIMEOUT))?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if b != *b"x" {
        return Err(std::io::Error::other("echo sent back another byte"));
    }
    Ok(())
}

/// The ceiling's echo server: one thread on 127.0.0.1 serving one connection at a time, left
/// running until xtask exits.
fn host_echo_server() -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = l
        .local_addr()
        .map_err(|e| format!("cannot read the echo address: {e}"))?;
    std::thread::spawn(move || serve_echo(l));
    Ok(addr)
}

/// `(pid, ppid)` of every process in /proc.
fn proc_parents() -> Vec<(u32, u32)> {
    let mut parents = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return parents;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_ppid(&s))
        {
            parents.push((pid, ppid));
        }
    }
    parents
}

/// `median (min–max)` with `decimals` places.
fn med_range(xs: &[f64], decimals: usize) -> String {
    let lo = xs.iter().copied().reduce(f64::min);
    let hi = xs.iter().copied().reduce(f64::max);
    match (median(xs), lo, hi) {
        (Some(m), Some(lo), Some(hi)) => {
            format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
        }
        _ => "–".into(),
    }
}

/// The forwarding targets of the issue as `(target, measured, verdict)`.
fn forwarding_targets(f: &Forwarding) -> Vec<(String, String, Verdict)> {
    fn get<'a>(v: &'a [FwdSeries], who: &str) -> Option<&'a FwdSeries> {
        v.iter().find(|s| s.who == who && s.ok())
    }
    let (o, r, l) = (
        get(&f.throughput, "ours"),
        get(&f.throughput, "reference"),
        get(&f.throughput, LOOPBACK),
    );
    let missing = |what: &str| (what.to_string(), Verdict::NotMeasured);
    let rate = |s: Option<&FwdSeries>| s.and_then(FwdSeries::rate);
    let tcp = match (rate(o), rate(r), rate(l)) {
        (Some(a), Some(b), Some(c)) if b > 0.0 && c > 0.0 => {
            let (x, y) = (a / b, a / c);
            let v = if x >= 1.5 && y >= 0.8 {
                Verdict::Met
            } else {
                Verdict::NotMet
            };
            (format!("{x:.2}× reference, {y:.2}× loopback"), v)
        }
        _ => missing("not on both sides and loopback"),
    };
    let cpu = match (o.and_then(FwdSeries::cpu), r.and_then(FwdSeries::cpu)) {
        (Some(a), Some(b)) if b > 0.0 => (
            ratio(Some(a), Some(b)),
            if a <= 0.3 * b {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        ),
        _ => missing("not on both sides"),
    };
    let (o, r) = (get(&f.conns, "ours"), get(&f.conns, "reference"));
    let conns = match (rate(o), rate(r)) {
        (Some(a), Some(b)) if b > 0.0 => {
            let p99 = |s: Option<&FwdSeries>| {
                s.and_then(|s| s.latency(99.0))
                    .map_or("–".into(), |v| format!("{v:.2}"))
            };
            (
                format!("{:.2}× (p99 {} ms vs {} ms)", a / b, p99(o), p99(r)),
                if a >= 4.0 * b {
                    Verdict::Met
                } else {
                    Verdict::NotMet
                },
            )
        }
        _ => missing("not on both sides"),
    };
    vec![
        (
            "builtin TCP ≥ 1.5× reference and ≥ 0.8× loopback".into(),
            tcp.0,
            tcp.1,
        ),
        (
            "connections/s ≥ 4× reference (p99 connect + echo latency alongside)".into(),
            conns.0,
            conns.1,
        ),
        ("CPU per GB forwarded ≤ 0.3× reference".into(), cpu.0, cpu.1),
    ]
}

impl Report {
    /// The throughput table; failures become numbered notes.
    fn throughput_table(&self, udp: bool, notes: &mut Vec<String>) -> Table {
        let mut t = Table::new(&[
            "path",
            "Gbps",
            "÷ reference",
            "÷ loopback",
            "CPU s per GB (rootlesskit parent)",
            "CPU ÷ reference",
            "of it in the kernel",
        ]);
        let f = &self.forwarding;
        let rows = if udp { &f.udp } else { &f.throughput };
        let find = |who: &str| rows.iter().find(|s| s.who == who);
        let (r, l) = (find("reference"), find(LOOPBACK));
        for s in rows {
            let label = fwd_label(s.who);
            if let Some(e) = &s.error {
                let what = if udp { "udp" } else { "throughput" };
                let n = note(notes, format!("{what} {}: {e}", s.who));
                t.row(vec![label, format!("failed [{n}]")]);
                continue;
            }
            let forwarded = s.who != LOOPBACK;
            t.row(vec![
                label,
                med_range(&s.rates, 2),
                if forwarded {
                    ratio(s.rate(), r.and_then(FwdSeries::rate))
                } else {
                    String::new()
                },
                ratio(s.rate(), l.and_then(FwdSeries::rate)),
                if forwarded {
                    med_range(&s.cpu_per_gb, 3)
                } else {
                    String::new()
                },
                if forwarded {
                    ratio(s.cpu(), r.and_then(FwdSeries::cpu))
                } else {
                    String::new()
                },
                match median(&s.kernel_pct) {
                    Some(k) if forwarded => format!("{k:.0}%"),
                    _ => String::new(),
                },
            ]);
        }
        t
    }

    /// The connection table; failures become numbered notes.
    fn conns_table(&self, notes: &mut Vec<String>) -> Table {
        let mut t = Table::new(&[
            "path",
            "connections/s",
            "÷ reference",
            "÷ loopback",
            "p50 ms",
            "p99 ms",
        ]);
        let f = &self.forwarding;
        let find = |who: &str| f.conns.iter().find(|s| s.who == who);
        let (r, l) = (find("reference"), find(LOOPBACK));
        for s in &f.conns {
            let label = fwd_label(s.who);
            if let Some(e) = &s.error {
                let n = note(notes, format!("connections {}: {e}", s.who));
                t.row(vec![label, format!("failed [{n}]")]);
                continue;
            }
            let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
            t.row(vec![
                label,
                med_range(&s.rates, 0),
                if s.who != LOOPBACK {
                    ratio(s.rate(), r.and_then(FwdSeries::rate))
                } else {
                    String::new()
                },
                ratio(s.rate(), l.and_then(FwdSeries::rate)),
                ms(s.latency(50.0)),
                ms(s.latency(99.0)),
            ]);
        }
        t
    }

    /// The forwarding section's text for the terminal.
    fn forwarding_text(&self, notes: &mut Vec<String>) -> String {
        let f = &self.forwarding;
        let mut s = String::new();
        if let Some(why) = &f.skipped {
            let _ = writeln!(s, "\nport forwarding: skipped, {why}");
            return s;
        }
        match &f.throughput_skipped {
            Some(why) => {
                let _ = writeln!(s, "\nthroughput: skipped, {why}");
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nthroughput (builtin driver), median (min–max) of {FWD_ROUNDS} iperf3 runs of {IPERF_SECONDS} s"
                );
                s.push_str(&self.throughput_table(false, notes).text());
                let _ = writeln!(s, "\nUDP throughput (iperf3 -u -b 0), the same way");
                s.push_str(&self.throughput_table(true, notes).text());
            }
        }
        match &f.conns_skipped {
            Some(why) => {
                let _ = writeln!(s, "\nconnections: skipped, {why}");
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nconnections (builtin driver), {FWD_ROUNDS} rounds of {CONNS}; latency = connect + 1-byte echo"
                );
                s.push_str(&self.conns_table(notes).text());
            }
        }
        s
    }

    /// The forwarding section of BENCHMARKS.md.
    /// Where each connection's time goes, from the perf profiles of the connection test.
    fn conn_profile_markdown(&self, notes: &mut Vec<String>) -> String {
        let profiles = &self.forwarding.conn_profiles;
        if profiles.is_empty() {
            return String::new();
        }
        let mut s = format!(
            "\n### Where each connection's time goes\n\n\
             One more connection run per side: the connection test's client without pause, and \
             `perf record` of the parent for {PROFILE_SECONDS} s as above. CPU per connection is the \
             parent's samples (1999 a second of CPU) over the connections completed meanwhile. \
             Each forwarded connection costs the parent an accept, a connect of its own inside the \
             namespace, the splices both ways and two closes, and the kernel runs a second TCP \
             handshake and teardown for it (in part in the parent's time: the loopback softirq): \
             that, and a third process to wake on 2 cores, is what stands between the \
             forwarded rate and the loopback one.\n\n"
        );
        let mut header = vec!["path".to_string()];
        header.extend(profiles.iter().map(|(who, _)| fwd_label(who)));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(&header);
        let ok: Vec<Option<&(Profile, f64)>> = profiles
            .iter()
            .map(|(who, p)| match p {
                Ok(p) => Some(p),
                Err(e) => {
                    note(notes, format!("connection profile {who}: {e}"));
                    None
                }
            })
            .collect();
        let cell = |f: &dyn Fn(&(Profile, f64)) -> String| -> Vec<String> {
            ok.iter()
                .map(|p| p.map_or_else(|| "failed".to_string(), f))
                .collect()
        };
        let mut row = vec!["connections/s while sampled".to_string()];
        row.extend(cell(&|(_, rate)| format!("{rate:.0}")));
        t.row(row);
        let mut row = vec!["parent CPU µs per connection".to_string()];
        row.extend(cell(&|(p, rate)| {
            let cpu_s = p.samples as f64 / 1999.0;
            let conns = rate * f64::from(PROFILE_SECONDS);
            if conns > 0.0 {
                format!("{:.0}", cpu_s / conns * 1e6)
            } else {
                "–".into()
            }
        }));
        t.row(row);
        for (i, (sym, what)) in CONN_PROFILE_SYMBOLS.iter().enumerate() {
            // Paths neither side takes would only add empty rows.
            if ok.iter().flatten().all(|(p, _)| p.shares[i].1 < 0.05) {
                continue;
            }
            let mut row = vec![format!("{what} (`{sym}`)")];
            row.extend(cell(&|(p, _)| format!("{:.1}%", p.shares[i].1)));
            t.row(row);
        }
        let mut row = vec!["own frame in user space".to_string()];
        row.extend(cell(&|(p, _)| format!("{:.1}%", p.user)));
        t.row(row);
        s.push_str(&t.markdown());
        s
    }

    /// Where the forwarding time goes, from the perf profiles (empty without them).
    fn profile_markdown(&self, notes: &mut Vec<String>) -> String {
        let profiles = &self.forwarding.profiles;
        if profiles.is_empty() {
            return String::new();
        }
        let mut s = format!(
            "\n### Where the forwarding time goes\n\n\
             One more TCP run per side: `iperf3` for {PROFILE_CLIENT_SECONDS} s through the builtin driver, \
             and in its middle `perf record -e cpu-clock -F 1999 -g -p <rootlesskit parent> -- sleep \
             {PROFILE_SECONDS}` (software clock sampling: this machine's perf has no hardware counters), \
             read with `perf report --children --sort sym -g none`. Percent of the parent's samples \
             whose stack contains the path; the last row is the samples whose own frame is in user \
             space. Both parents spend nearly all their time in the kernel's TCP stack: sending into \
             a socket on loopback also runs the receiving side's protocol work (softirq) in the \
             sender's context, for the inner and the outer connection alike. That work is the same \
             whoever calls splice(2), which is why throughput and CPU per GB stay near the reference \
             and why 0.8× loopback (two TCP connections per byte instead of one, on 2 cores shared \
             with both iperf3 ends) is out of reach for a user-space forwarder.\n\n"
        );
        let mut header = vec!["path".to_string()];
        header.extend(profiles.iter().map(|(who, _)| fwd_label(who)));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(&header);
        let ok: Vec<Option<&Profile>> = profiles
            .iter()
            .map(|(who, p)| match p {
                Ok(p) => Some(p),
                Err(e) => {
                    note(notes, format!("profile {who}: {e}"));
                    None
                }
            })
            .collect();
        let cell = |f: &dyn Fn(&Profile) -> String| -> Vec<String> {
            ok.iter()
                .map(|p| p.map_or_else(|| "failed".to_string(), f))
                .collect()
        };
        let mut row = vec!["samples".to_string()];
        row.extend(cell(&|p| p.samples.to_string()));
        t.row(row);
        for (i, (_, what)) in PROFILE_SYMBOLS.iter().enumerate() {
            let mut row = vec![format!("{what} (`{}`)", PROFILE_SYMBOLS[i].0)];
            row.extend(cell(&|p| format!("{:.1}%", p.shares[i].1)));
            t.row(row);
        }
        let mut row = vec!["own frame in user space".to_string()];
        row.extend(cell(&|p| format!("{:.1}%", p.user)));
        t.row(row);
        s.push_str(&t.markdown());
        s
    }

    fn forwarding_markdown(&self, notes: &mut Vec<String>) -> String {
        let f = &self.forwarding;
        let mut s = String::from("\n## Port forwarding (builtin driver)\n\n");
        if let Some(why) = &f.skipped {
            let _ = writeln!(s, "Skipped: {why}.");
            return s;
        }
        let _ = writeln!(
            s,
            "Each round starts a fresh rootlesskit as the user (as in Method) with `{}` and \
             `-p 127.0.0.1:$PORT:INNER/tcp` ($PORT a free host port, $STATE_DIR a fresh directory), waits \
             until the host port listens (`/proc/net/tcp` or `tcp6`) and a process inside the namespace listens on \
             INNER (its `/proc/<pid>/net/tcp6` or `tcp`), measures from the host, then sends SIGTERM. \
             {FWD_ROUNDS} rounds; every round runs ours, the reference (the two swap order each round) \
             and then the machine's ceiling without rootlesskit. Here higher rates are better: a ratio \
             above 1 favours ours; for CPU, below 1 does.\n",
            FWD_FLAGS.join(" ")
        );
        let commands = |v: &[FwdSeries]| {
            v.iter()
                .map(|x| {
                    let argv: Vec<&str> = x.argv.iter().map(String::as_str).collect();
                    format!("{}: {}", x.who, argv.join(" "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        match &f.throughput_skipped {
            Some(why) => {
                let _ = writeln!(s, "Throughput: skipped, {why}.\n");
            }
            None => {
                let _ = writeln!(
                    s,
                    "Throughput: the client on the host, as the user, is `{}`; Gbps is \
                     `end.sum_received.bits_per_second` of its JSON, median (min–max) of {FWD_ROUNDS}. CPU per \
                     GB: `utime + stime` of the rootlesskit parent (fields 14 and 15 of `/proc/<pid>/stat`, \
                     {CLK_TCK} ticks a second), read before and after the client run, divided by \
                     `end.sum_received.bytes` / 10⁹. Both builtin drivers copy the bytes in the parent (ours \
                     with splice(2), the reference in Go), so the parent is where the forwarding cost shows. \
                     The servers:\n\n```\n{}\n```\n",
                    iperf_client_argv(PORT, false).join(" "),
                    commands(&f.throughput)
                );
                s.push_str(&self.throughput_table(false, notes).markdown());
                let _ = writeln!(
                    s,
                    "\nUDP throughput: the same, with `{}` (datagrams of iperf3's default size, as fast \
                     as the client can send; Gbps is what arrived). The servers publish the UDP port too \
                     (the TCP one carries iperf3's control connection):\n\n```\n{}\n```\n",
                    iperf_client_argv(PORT, true).join(" "),
                    commands(&f.udp)
                );
                s.push_str(&self.throughput_table(true, notes).markdown());
                s.push('\n');
            }
        }
        match &f.conns_skipped {
            Some(why) => {
                let _ = writeln!(s, "Connections: skipped, {why}.");
            }
            None => {
                let _ = writeln!(
                    s,
                    "Connections: a std-only client in xtask (root, on the host) makes {CONNS_WARMUP} untimed \
                     and then {CONNS} timed sequential connections to 127.0.0.1:$PORT, each: connect, write \
                     one byte, read it back, close. Connections/s is {CONNS} ÷ the seconds they took (median \
                     of {FWD_ROUNDS} rounds, min–max in parentheses); p50 and p99 are over the \
                     {} timed connections of all rounds, each from before connect to the byte read back. \
                     The builtin driver accepts on the host before it connects inside, so connect alone would \
                     hide its work. The echo server inside is this xtask binary, staged as {ECHO_NAME} \
                     (`cargo xtask echo-server 8000`: dual-stack, one connection at a time, the client \
                     being sequential); the ceiling is the same server code on a thread of xtask on the \
                     host's loopback. The servers:\n\n```\n{}\n```\n",
                    FWD_ROUNDS * CONNS,
                    commands(&f.conns)
                );
                s.push_str(&self.conns_table(notes).markdown());
            }
        }
        s
    }
}

/// The first column of the forwarding tables.
fn fwd_label(who: &str) -> String {
    match who {
        "ours" => "ours, through the builtin driver".into(),
        "reference" => "reference, through the builtin driver".into(),
        _ => "loopback on the host (ceiling)".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Binary sizes.

#[derive(Debug, Default)]
struct Sizes {
    ours: Vec<(String, u64)>,
    reference: Option<u64>,
}

fn sizes(bin_dir: &Path, reference: Option<&Path>) -> Sizes {
    let size = |p: &Path| fs::metadata(p).ok().map(|m| m.len());
    Sizes {
        ours: binary_names()
            .iter()
            .filter_map(|n| size(&bin_dir.join(n)).map(|s| (n.to_string(), s)))
            .collect(),
        reference: reference.and_then(size),
    }
}

// ---------------------------------------------------------------------------------------------
// Where the time goes: an strace timeline of one run.

/// One program's stretch of a process's life: from its execve to the next execve or the exit.
#[derive(Clone, Debug, PartialEq)]
struct Span {
    program: String,
    start: f64,
    end: f64,
}

/// Runs `argv` once under `strace -f` and returns its program spans.
fn trace(runner: &Runner, who: &str, argv: &[String], scratch: &Path) -> Result<Vec<Span>> {
    let file = scratch.join("trace.txt");
    let file_s = file.to_string_lossy().into_owned();
    // No --seccomp-bpf: strace would set no_new_privs, and setuid newuidmap would fail.
    let wrappers = [
        "strace",
        "-f",
        "-q",
        "-ttt",
        "-e",
        "trace=execve",
        "-e",
        "signal=none",
        "-o",
        &file_s,
        "--",
    ];
    let out = run_capture(runner.command(who, &wrappers, argv), SAMPLE_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            describe_status(out.status),
            last_line(&out.stderr)
        ));
    }
    let text = fs::read_to_string(&file).map_err(|e| format!("cannot read {file_s}: {e}"))?;
    let _ = fs::remove_file(&file);
    let spans = spans(&text);
    if spans.is_empty() {
        return Err("strace recorded no execve".into());
    }
    Ok(spans)
}

/// Program spans from `strace -f -ttt -e trace=execve` output, times in ms from the first line.
fn spans(text: &str) -> Vec<Span> {
    let mut open: BTreeMap<u32, (String, f64)> = BTreeMap::new();
    let mut pending: BTreeMap<u32, (String, f64)> = BTreeMap::new();
    let mut out = Vec::new();
    let mut t0 = None;
    let mut last = 0.0;
    for line in text.lines() {
        // strace pads the pid column: `2379  1795914555.615475 execve(...`.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((ts, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (Ok(pid), Ok(ts)) = (pid.parse::<u32>(), ts.parse::<f64>()) else {
            continue;
        };
        let t = (ts - *t0.get_or_insert(ts)) * 1000.0;
        last = t;
        let rest = rest.trim_start();
        let exec = if let Some(args) = rest.strip_prefix("execve(\"") {
            let path = args.split('"').next().unwrap_or("").to_string();
            if rest.ends_with("<unfinished ...>") {
                pending.insert(pid, (path, t));
                None
            } else {
                rest.ends_with("= 0").then_some((path, t))
            }
        } else if rest.starts_with("<... execve resumed>") {
            pending.remove(&pid).filter(|_| rest.ends_with("= 0"))
        } else {
            None
        };
        if let Some((path, start)) = exec {
            if let Some((program, s)) = open.remove(&pid) {
                out.push(Span {
                    program,
                    start: s,
                    end: start,
                });
            }
            let program = path.rsplit('/').next().unwrap_or(&path).to_string();
            open.insert(pid, (program, start));
        } else if (rest.starts_with("+++ exited") || rest.starts_with("+++ killed"))
            && let Some((program, s)) = open.remove(&pid)
        {
            out.push(Span {
                program,
                start: s,
                end: t,
            });
        }
    }
    for (_, (program, s)) in open {
        out.push(Span {
            program,
            start: s,
            end: last,
        });
    }
    out.sort_by(|a, b| a.start.total_cmp(&b.start));
    out
}

/// Per program, in order of first start: how many runs and their summed time (ms).
fn by_program(spans: &[Span]) -> Vec<(String, usize, f64, f64)> {
    let mut out: Vec<(String, usize, f64, f64)> = Vec::new();
    for s in spans {
        match out.iter_mut().find(|(p, ..)| *p == s.program) {
            Some(e) => {
                e.1 += 1;
                e.2 += s.end - s.start;
            }
            None => out.push((s.program.clone(), 1, s.end - s.start, s.start)),
        }
    }
    out
}

/// How long at least one of `spans` was running (the length of their union), in ms.
fn covered(spans: &[&Span]) -> f64 {
    let mut v: Vec<(f64, f64)> = spans.iter().map(|s| (s.start, s.end)).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut cur: Option<(f64, f64)> = None;
    for (s, e) in v {
        cur = match cur {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    total + cur.map_or(0.0, |(s, e)| e - s)
}

/// Programs of the harness and of rootlesskit itself; everything else is a helper it runs.
fn is_helper(program: &str) -> bool {
    !matches!(
        program,
        "setpriv" | "rootlesskit" | "rootlesskit-child" | "exe" | TARGET
    )
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting.

/// The median (the mean of the middle two for an even count).
fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The nearest-rank percentile: the smallest value with at least `p`% of the values at or below it.
fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// `ours ÷ reference`, as `0.45×`.
fn ratio(ours: Option<f64>, reference: Option<f64>) -> String {
    match (ours, reference) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// `median (p90)` in ms.
fn med_p90(xs: &[f64]) -> String {
    match (median(xs), percentile(xs, 90.0)) {
        (Some(m), Some(p)) => format!("{m:.1} ({p:.1})"),
        _ => "–".into(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A table printed as aligned text or as Markdown; the first column is left-aligned, the
/// others right-aligned.
#[derive(Debug, Default)]
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns aligned left besides the first.
    left: Vec<usize>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            left: Vec::new(),
        }
    }

    /// Aligns column `i` left, as text.
    fn left(mut self, i: usize) -> Table {
        self.left.push(i);
        self
    }

    fn is_left(&self, i: usize) -> bool {
        i == 0 || self.left.contains(&i)
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    fn text(&self) -> String {
        let w = self.widths();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = " ".repeat(width - c.chars().count().min(*width));
                if i > 0 {
                    s.push_str("  ");
                }
                if self.is_left(i) {
                    s.push_str(c);
                    s.push_str(&pad);
                } else {
                    s.push_str(&pad);
                    s.push_str(c);
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.head);
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }

    fn markdown(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|");
        let mut out = String::from("|");
        for h in &self.head {
            let _ = write!(out, " {} |", cell(h));
        }
        out.push_str("\n|");
        for i in 0..self.head.len() {
            out.push_str(if self.is_left(i) { "---|" } else { "---:|" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push('|');
            for i in 0..self.head.len() {
                let _ = write!(
                    out,
                    " {} |",
                    cell(r.get(i).map(String::as_str).unwrap_or(""))
                );
            }
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The machine.

#[derive(Debug, Default)]
struct Machine {
    cpus: usize,
    model: String,
    kernel: String,
    memory: String,
    date: String,
    load_before: String,
    tree: String,
}

impl Machine {
    fn read(root: &Path) -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
            kernel: kernel_release(&read("/proc/version")).unwrap_or_else(|| "unknown".into()),
            memory: kib_field(&read("/proc/meminfo"), "MemTotal:")
                .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
                .unwrap_or_else(|| "unknown".into()),
            date: first_line_of(crate::command("date").arg("-u"))
                .unwrap_or_else(|| "unknown".into()),
            load_before: read_loadavg(),
            tree: git_tree(root),
        }
    }
}

/// The first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// `6.1.0-18-amd64` from `Linux version 6.1.0-18-amd64 (...) ...`.
fn kernel_release(version: &str) -> Option<String> {
    let mut w = version.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some("Linux"), Some("version"), Some(r)) => Some(format!("Linux {r}")),
        _ => None,
    }
}

fn read_loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The commit of the tree, and whether it has uncommitted changes.
fn git_tree(root: &Path) -> String {
    let mut head = crate::command("git");
    head.current_dir(root)
        .args(["rev-parse", "--short", "HEAD"]);
    let Some(commit) = first_line_of(&mut head) else {
        return "unknown (no git)".into();
    };
    let mut status = crate::command("git");
    status
        .current_dir(root)
        .args(["status", "--porcelain", "--untracked-files=no"]);
    match status.output() {
        Ok(o) if o.stdout.is_empty() => commit,
        Ok(_) => format!("{commit} with uncommitted changes"),
        Err(_) => commit,
    }
}

/// The first non-empty line a command prints on stdout (or stderr), if it runs.
fn first_line_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(String::from)
}

/// `--version` lines of everything measured.
fn versions(runner: &Runner, ours: &Path, reference: Option<&Path>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut version = |label: &str, argv: Vec<String>| {
        let who = if matches!(label, "ours" | "reference") {
            label
        } else {
            "machine"
        };
        let line =
            first_line_of(&mut runner.command(who, &[], &argv)).unwrap_or_else(|| "?".into());
        out.push((label.to_string(), line));
    };
    version(
        "ours",
        vec![
            ours.join("rootlesskit").to_string_lossy().into(),
            "--version".into(),
        ],
    );
    if let Some(r) = reference {
        version(
            "reference",
            vec![r.to_string_lossy().into(), "--version".into()],
        );
    }
    for p in ["slirp4netns", "pasta", "unshare"] {
        if on_path(p) {
            version(p, vec![p.into(), "--version".into()]);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, PartialEq, Clone, Copy)]
enum Verdict {
    Met,
    NotMet,
    NotMeasured,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "not met",
            Verdict::NotMeasured => "not measured yet",
        }
    }
}

#[derive(Debug, Default)]
struct Report {
    machine: Machine,
    runner_note: String,
    /// The user switch in front of every command.
    prefix: Vec<String>,
    bin_dir: PathBuf,
    reference: Option<PathBuf>,
    runs: usize,
    versions: Vec<(String, String)>,
    startup: Vec<TimedRow>,
    idle: Vec<IdleSeries>,
    sizes: Sizes,
    forwarding: Forwarding,
    traces: Vec<(&'static str, Vec<String>, Vec<Span>)>,
    notes: Vec<String>,
    load_after: String,
}

/// The issue's targets as `(target, measured, verdict)`.
fn targets(r: &Report) -> Vec<(String, String, Verdict)> {
    let mut out = Vec::new();
    for row in r.startup.iter().filter(|row| row.what.is_none()) {
        let (ours, reference) = (find(&row.series, "ours"), find(&row.series, "reference"));
        let target = format!("startup `{}` ≤ 0.2× reference (wall)", row.label);
        if ours.is_some_and(Series::ok) && reference.is_some_and(Series::ok) {
            let (a, b) = (
                med_of(ours, Series::walls),
                med_of(reference, Series::walls),
            );
            let met = matches!((a, b), (Some(a), Some(b)) if a <= 0.2 * b);
            let verdict = if met { Verdict::Met } else { Verdict::NotMet };
            out.push((target, ratio(a, b), verdict));
        } else {
            out.push((target, "not on both sides".into(), Verdict::NotMeasured));
        }
    }
    let ours_idle = r.idle.iter().find(|s| s.who == "ours");
    let parent = ours_idle.and_then(|s| {
        let v: Vec<f64> = s.samples.iter().map(|i| i.parent_rss_kib as f64).collect();
        median(&v)
    });
    out.push(match parent {
        Some(k) => (
            "idle parent RSS ≤ 1 MiB".into(),
            mib(k as u64),
            if k <= 1024.0 {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        ),
        None => (
            "idle parent RSS ≤ 1 MiB".into(),
            "–".into(),
            Verdict::NotMeasured,
        ),
    });
    out.extend(forwarding_targets(&r.forwarding));
    out
}

/// Adds a numbered note (once per text) and returns its number.
fn note(notes: &mut Vec<String>, text: String) -> usize {
    match notes.iter().position(|n| *n == text) {
        Some(i) => i + 1,
        None => {
            notes.push(text);
            notes.len()
        }
    }
}

/// The median of a series that ran to the end.
fn med_of(s: Option<&Series>, f: fn(&Series) -> Vec<f64>) -> Option<f64> {
    s.filter(|s| s.ok()).and_then(|s| median(&f(s)))
}

fn find<'a>(series: &'a [Series], who: &str) -> Option<&'a Series> {
    series.iter().find(|s| s.who == who)
}

impl Report {
    /// The startup table; failures become numbered notes.
    fn startup_table(&self, notes: &mut Vec<String>) -> Table {
        let mut t = Table::new(&[
            "rootlesskit flags + target",
            "ours wall ms",
            "reference wall ms",
            "wall ours÷ref",
            "ours CPU ms",
            "reference CPU ms",
            "CPU ours÷ref",
        ]);
        let mut cell = |s: Option<&Series>, f: fn(&Series) -> Vec<f64>| match s {
            None => "–".to_string(),
            Some(s) => match &s.error {
                Some(e) => {
                    let n = note(notes, format!("{} `{}`: {e}", s.who, s.argv.join(" ")));
                    format!("failed [{n}]")
                }
                None if s.dropped.is_empty() => med_p90(&f(s)),
                None => {
                    let k = s.dropped.len();
                    let n = note(
                        notes,
                        format!(
                            "{} `{}`: {k} failed run{} dropped, the first: {}",
                            s.who,
                            s.argv.join(" "),
                            if k == 1 { "" } else { "s" },
                            s.dropped[0]
                        ),
                    );
                    format!("{} [{n}]", med_p90(&f(s)))
                }
            },
        };
        for row in self.startup.iter().filter(|r| r.what.is_none()) {
            if let Some(why) = &row.skipped {
                t.row(vec![row.label.clone(), format!("skipped: {why}")]);
                continue;
            }
            let (o, f) = (find(&row.series, "ours"), find(&row.series, "reference"));
            let wall = ratio(med_of(o, Series::walls), med_of(f, Series::walls));
            let cpu = ratio(med_of(o, Series::cpus), med_of(f, Series::cpus));
            t.row(vec![
                row.label.clone(),
                cell(o, Series::walls),
                cell(f, Series::walls),
                wall,
                cell(o, Series::cpus),
                cell(f, Series::cpus),
                cpu,
            ]);
        }
        t
    }

    fn sticks_table(&self, notes: &mut Vec<String>) -> Table {
        let mut t = Table::new(&["command", "wall ms", "CPU ms", "what it shows"]).left(3);
        for row in self.startup.iter().filter(|r| r.what.is_some()) {
            let what = row.what.unwrap_or("").to_string();
            match (&row.skipped, row.series.first()) {
                (Some(why), _) => t.row(vec![row.label.clone(), format!("skipped: {why}")]),
                (None, Some(s)) if s.error.is_some() => {
                    let e = s.error.as_deref().unwrap_or("");
                    let f = format!("failed [{}]", note(notes, format!("`{}`: {e}", row.label)));
                    t.row(vec![row.label.clone(), f.clone(), f, what]);
                }
                (None, Some(s)) => t.row(vec![
                    row.label.clone(),
                    med_p90(&s.walls()),
                    med_p90(&s.cpus()),
                    what,
                ]),
                (None, None) => {}
            }
        }
        t
    }

    fn idle_table(&self, notes: &mut Vec<String>) -> Table {
        let mut t = Table::new(&[
            "idle, `--state-dir=$STATE_DIR sleep 30`",
            "ours",
            "reference",
            "ours÷ref",
        ]);
        let pick = |who: &str, f: IdleMetric| -> Option<f64> {
            let s = self.idle.iter().find(|s| s.who == who)?;
            let v: Option<Vec<f64>> = s.samples.iter().map(|i| f(i).map(|k| k as f64)).collect();
            median(&v?)
        };
        let metrics: [(&str, IdleMetric); 4] = [
            ("parent VmRSS", |i| Some(i.parent_rss_kib)),
            ("tree VmRSS (sum)", |i| Some(i.tree_rss_kib)),
            ("tree Pss (sum)", |i| i.tree_pss_kib),
            ("processes in the tree", |i| Some(i.processes as u64)),
        ];
        let mut failed = |who: &str| {
            let s = self.idle.iter().find(|s| s.who == who)?;
            let e = s.error.as_deref()?;
            let n = note(notes, format!("idle {who} `{}`: {e}", s.argv.join(" ")));
            Some(format!("failed [{n}]"))
        };
        let (ours_failed, reference_failed) = (failed("ours"), failed("reference"));
        for (i, (name, f)) in metrics.iter().enumerate() {
            let (o, r) = (pick("ours", *f), pick("reference", *f));
            let (o, r) = (
                o.filter(|_| ours_failed.is_none()),
                r.filter(|_| reference_failed.is_none()),
            );
            let show = |v: Option<f64>, failed: &Option<String>| match v {
                None => failed.clone().unwrap_or_else(|| "–".to_string()),
                Some(v) if i == 3 => format!("{v:.0}"),
                Some(v) => mib(v as u64),
            };
            t.row(vec![
                name.to_string(),
                show(o, &ours_failed),
                show(r, &reference_failed),
                ratio(o, r),
            ]);
        }
        t
    }

    fn sizes_table(&self) -> Table {
        let mut t = Table::new(&["binary", "ours bytes", "reference bytes", "ours÷ref"]);
        let reference = self.sizes.reference;
        let get = |n: &str| {
            self.sizes
                .ours
                .iter()
                .find(|(b, _)| b == n)
                .map(|(_, s)| *s)
        };
        for (name, size) in &self.sizes.ours {
            let is_main = name == "rootlesskit";
            t.row(vec![
                name.clone(),
                thousands(*size),
                if is_main {
                    reference.map(thousands).unwrap_or_else(|| "–".into())
                } else {
                    String::new()
                },
                if is_main {
                    ratio(Some(*size as f64), reference.map(|r| r as f64))
                } else {
                    String::new()
                },
            ]);
        }
        if let (Some(a), Some(b)) = (get("rootlesskit"), get("rootlesskit-child")) {
            t.row(vec![
                "rootlesskit + rootlesskit-child (what a start loads)".into(),
                thousands(a + b),
                reference.map(thousands).unwrap_or_else(|| "–".into()),
                ratio(Some((a + b) as f64), reference.map(|r| r as f64)),
            ]);
        }
        t
    }

    fn targets_table(&self) -> Table {
        let mut t = Table::new(&["target (issue 5)", "measured", "verdict"]).left(2);
        for (target, measured, v) in targets(self) {
            t.row(vec![target, measured, v.word().into()]);
        }
        t
    }

    fn trace_tables(&self) -> Vec<(String, Table, String)> {
        let mut out = Vec::new();
        for (who, argv, spans) in &self.traces {
            let total = spans.iter().map(|s| s.end).fold(0.0, f64::max);
            let mut t = Table::new(&["program", "runs", "first exec at ms", "ms in total"]);
            let mut names = Vec::new();
            for (program, n, ms, first) in by_program(spans) {
                if is_helper(&program) {
                    names.push(format!("{program} ×{n}"));
                }
                t.row(vec![
                    program,
                    n.to_string(),
                    format!("{first:.1}"),
                    format!("{ms:.1}"),
                ]);
            }
            let helpers: Vec<&Span> = spans.iter().filter(|s| is_helper(&s.program)).collect();
            let summary = format!(
                "{who}: for {:.1} of the {total:.1} ms traced, at least one helper program ({}) was running.",
                covered(&helpers),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
            out.push((format!("{who}: `{}`", argv.join(" ")), t, summary));
        }
        out
    }

    /// The timed commands (each the COMMAND of the timing line) and the idle command lines.
    fn all_commands(&self) -> (Vec<String>, Vec<String>) {
        let timed = self
            .startup
            .iter()
            .flat_map(|row| row.series.iter().map(|s| s.argv.join(" ")))
            .collect();
        let idle = self
            .idle
            .iter()
            .map(|s| {
                let mut v = self.prefix.clone();
                v.extend(s.argv.iter().cloned());
                v.join(" ")
            })
            .collect();
        (timed, idle)
    }

    /// The tables for the terminal.
    fn text(&self) -> String {
        let mut notes = Vec::new();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "startup, median (p90) of {} runs, ms; CPU = user+sys of the whole tree",
            self.runs
        );
        s.push_str(&self.startup_table(&mut notes).text());
        s.push_str("\nmeasuring sticks\n");
        s.push_str(&self.sticks_table(&mut notes).text());
        let _ = writeln!(s, "\nidle memory, median of {RSS_RUNS}");
        s.push_str(&self.idle_table(&mut notes).text());
        s.push_str(&self.forwarding_text(&mut notes));
        s.push_str("\nbinary sizes\n");
        s.push_str(&self.sizes_table().text());
        s.push_str("\ntargets\n");
        s.push_str(&self.targets_table().text());
        for (title, t, summary) in self.trace_tables() {
            let _ = writeln!(s, "\ntraced once: {title}");
            s.push_str(&t.text());
            let _ = writeln!(s, "{summary}");
        }
        notes.extend(self.notes.iter().cloned());
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(s, "[{}] {n}", i + 1);
        }
        s
    }

    /// BENCHMARKS.md.
    fn markdown(&self) -> String {
        let m = &self.machine;
        let mut notes = Vec::new();
        let mut s = String::new();
        s.push_str("# Benchmarks\n\n");
        s.push_str(
            "Written by `cargo xtask bench` (xtask/src/bench.rs); regenerate it rather than editing it. \
             Numbers are recorded here, never asserted by tests. The machine is shared and noisy, so every \
             command is repeated, rounds interleave ours with the reference, and the tables show medians \
             with the 90th percentile in parentheses. Ratios are ours ÷ reference: below 1 is better for us.\n\n",
        );
        s.push_str("## Machine\n\n");
        let _ = writeln!(s, "- date: {}", m.date);
        let _ = writeln!(s, "- CPU: {} ({} available to this run)", m.model, m.cpus);
        let _ = writeln!(s, "- memory: {}", m.memory);
        let _ = writeln!(s, "- kernel: {}", m.kernel);
        let _ = writeln!(
            s,
            "- load average (1, 5, 15 min): {} before, {} after",
            m.load_before, self.load_after
        );
        let _ = writeln!(s, "- tree: {}", m.tree);
        let _ = writeln!(s, "- ours: `{}`", self.bin_dir.display());
        match &self.reference {
            Some(r) => {
                let _ = writeln!(s, "- reference: `{}`", r.display());
            }
            None => {
                let _ = writeln!(s, "- reference: none ({DEFAULT_REFERENCE} is missing)");
            }
        }
        for (label, v) in &self.versions {
            let _ = writeln!(s, "- `{label} --version`: {v}");
        }
        s.push_str("\n## Method\n\n");
        let _ = writeln!(
            s,
            "- {}. Both sides run from copies in one 0755 scratch directory.",
            self.runner_note
        );
        let _ = writeln!(
            s,
            "- A timed sample is the timing line below with one COMMAND, bash already running as the \
             user. It times COMMAND alone (its fork and exec included, the user switch not): wall time from \
             `$EPOCHREALTIME` before and after (microseconds), CPU from the `getrusage(RUSAGE_CHILDREN)` \
             difference that bash's `time` reports (milliseconds). CPU is user + system of every process \
             of the tree that was waited for (the kernel adds a reaped \
             child's totals to its parent's); a helper nobody waits for would be missed."
        );
        let _ = writeln!(
            s,
            "- {WARMUP_ROUNDS} warm-up rounds are dropped, then {} rounds; every round runs every command \
             once, and ours and the reference swap order from one round to the next. A run that fails is \
             dropped and noted; after {MAX_FAILURES} failures the command is not run again.",
            self.runs
        );
        let _ = writeln!(
            s,
            "- Idle memory: {RSS_RUNS} starts per side, alternating; once `{STATE_DIR}/child_pid` exists and \
             {} ms have passed, `VmRSS` of rootlesskit (the parent) and the sums of `VmRSS` and of \
             `Pss` (`smaps_rollup`) over it and every descendant (the child, helpers and the `sleep` \
             target) are read from /proc; then rootlesskit gets SIGTERM.",
            RSS_SETTLE.as_millis()
        );
        let (timed, idle) = self.all_commands();
        let _ = writeln!(
            s,
            "\nThe timing line:\n\n```\n{} bash -c '{TIME_SCRIPT}' bash COMMAND...\n```\n\n\
             Each COMMAND, exactly as run:\n\n```",
            self.prefix.join(" ")
        );
        for c in timed {
            let _ = writeln!(s, "{c}");
        }
        let _ = writeln!(
            s,
            "```\n\nThe idle starts (`{STATE_DIR}` is a fresh directory each time):\n\n```"
        );
        for c in idle {
            let _ = writeln!(s, "{c}");
        }
        s.push_str("```\n");

        let _ = writeln!(
            s,
            "\n## Startup\n\nms, median (p90) of {} runs; the target is `{TARGET}`. The flags are \
             identical on both sides; `--port-driver=builtin` starts the driver with no ports \
             published.\n",
            self.runs
        );
        s.push_str(&self.startup_table(&mut notes).markdown());
        s.push_str("\nMeasuring sticks (the machine itself, in the same rounds):\n\n");
        s.push_str(&self.sticks_table(&mut notes).markdown());
        let _ = writeln!(s, "\n## Idle memory\n\nMedian of {RSS_RUNS} starts each.\n");
        s.push_str(&self.idle_table(&mut notes).markdown());
        s.push_str(&self.forwarding_markdown(&mut notes));
        s.push_str(&self.profile_markdown(&mut notes));
        s.push_str(&self.conn_profile_markdown(&mut notes));
        s.push_str("\n## Binary sizes\n\n");
        s.push_str(
            "Ours are static; the reference is one Go binary that re-executes itself as the child.\n\n",
        );
        s.push_str(&self.sizes_table().markdown());
        s.push_str("\n## Targets\n\n");
        s.push_str(&self.targets_table().markdown());
        let traces = self.trace_tables();
        if !traces.is_empty() {
            s.push_str("\n## Where the time goes\n\n");
            s.push_str(
                "One start of every scenario that ran, traced after the timed runs with \
                 `strace -f -q -ttt -e trace=execve -e signal=none` (as root, so setuid newuidmap keeps \
                 working). Each program's time runs from its execve to its exit or next execve, so a parent's \
                 time includes what it waits for. Tracing stops every system call, which slows the Go \
                 reference more than ours: read the shares, not the absolute times.\n",
            );
            for (title, t, summary) in traces {
                let _ = writeln!(s, "\n{title}\n");
                s.push_str(&t.markdown());
                let _ = writeln!(s, "\n{summary}");
            }
        }
        notes.extend(self.notes.iter().cloned());
        if !notes.is_empty() {
            s.push_str("\n## Notes\n\n");
            for (i, n) in notes.iter().enumerate() {
                let _ = writeln!(s, "{}. {}", i + 1, n.replace('\n', " "));
            }
        }
        s
    }
}

/// Parses what [`TIME_SCRIPT`] prints: `USER SYS` (seconds, from `time`) and then
/// `START END` (`$EPOCHREALTIME`), as the last two non-empty lines; times in milliseconds.
fn parse_time_output(text: &str) -> Option<Sample> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [.., cpu, wall] = lines[..] else {
        return None;
    };
    let pair = |line: &str| -> Option<(u64, u64)> {
        let mut w = line.split_whitespace();
        let (a, b) = (micros(w.next()?)?, micros(w.next()?)?);
        w.next().is_none().then_some((a, b))
    };
    let (user, sys) = pair(cpu)?;
    let (start, end) = pair(wall)?;
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Sample {
        wall: ms(end.checked_sub(start)?),
        user: ms(user),
        sys: ms(sys),
    })
}

/// `12.345678` (seconds, at most six decimals) in microseconds.
fn micros(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 6 {
        return None;
    }
    let frac_us: u64 = format!("{frac:0<6}").parse().ok()?;
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(frac_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn median_and_percentile() {
        let check = |xs: &[f64], med: Option<f64>, p90: Option<f64>| {
            assert_eq!(median(xs), med, "median of {xs:?}");
            assert_eq!(percentile(xs, 90.0), p90, "p90 of {xs:?}");
        };
        check(&[], None, None);
        check(&[5.0], Some(5.0), Some(5.0));
        check(&[3.0, 1.0], Some(2.0), Some(3.0));
        check(&[9.0, 1.0, 5.0], Some(5.0), Some(9.0));
        let ten: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        check(&ten, Some(5.5), Some(9.0));
        let thirty: Vec<f64> = (1..=30).map(f64::from).collect();
        check(&thirty, Some(15.5), Some(27.0));
        assert_eq!(percentile(&thirty, 100.0), Some(30.0));
        assert_eq!(percentile(&thirty, 0.0), Some(1.0));
    }

    #[test]
    fn ratios_and_numbers() {
        assert_eq!(ratio(Some(15.0), Some(33.0)), "0.45×");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "–");
        assert_eq!(ratio(None, Some(3.0)), "–");
        assert_eq!(med_p90(&[2.0, 3.0, 4.0]), "3.0 (4.0)");
        assert_eq!(med_p90(&[]), "–");
        assert_eq!(mib(1372), "1.34 MiB");
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1406656, "1,406,656"),
            (7733752, "7,733,752"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }

    #[test]
    fn time_lines() {
        let check = |input: &str, expect: Option<(f64, f64, f64)>| {
            let got = parse_time_output(input).map(|s| (s.wall, s.user, s.sys));
            assert_eq!(got, expect, "{input:?}");
        };
        check(
            "0.010 0.006\n1795914430.722408 1795914430.757408\n",
            Some((35.0, 10.0, 6.0)),
        );
        check(
            "noise\n0.000 0.002\n1795914430.999999 1795914431.001999\n\n",
            Some((2.0, 0.0, 2.0)),
        );
        check("0.010 0.006\n", None);
        check("1795914430.722408 1795914430.757408\n", None);
        check("0.010 0.006 1\n1.0 2.0\n", None);
        check("0.010 0.006\n2.0 1.0\n", None);
        check("0.010 -0.006\n1.0 2.0\n", None);
        check("0,010 0,006\n1,0 2,0\n", None);
        check("", None);
        for (input, us) in [
            ("0.035", Some(35_000)),
            ("2", Some(2_000_000)),
            ("1.5", Some(1_500_000)),
            ("1795914430.722408", Some(1_795_914_430_722_408)),
            ("1.1234567", None),
            (".5", None),
            ("1.", Some(1_000_000)),
            ("1e3", None),
            ("+1", None),
        ] {
            assert_eq!(micros(input), us, "{input:?}");
        }
    }

    #[test]
    fn proc_fields() {
        let status = "Name:\trootlesskit\nUid:\t2000\t2000\t2000\t2000\nGid:\t2001\t2001\t2001\t2001\nVmPeak:\t    5000 kB\nVmRSS:\t    1372 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1372));
        assert_eq!(kib_field(status, "VmPeak:"), Some(5000));
        assert_eq!(kib_field(status, "VmSwap:"), None);
        assert_eq!(kib_field("VmRSS:\t12 pages\n", "VmRSS:"), None);
        assert_eq!(
            kib_field("Pss:                 824 kB\n", "Pss:"),
            Some(824)
        );
        assert_eq!(status_ids(status, "Uid:"), Some(2000));
        assert_eq!(status_ids(status, "Gid:"), Some(2001));
        assert_eq!(status_ids("Name:\tx\n", "Uid:"), None);

        assert_eq!(
            stat_ppid("4417 (rootlesskit-chi) S 4404 4417 1 0"),
            Some(4404)
        );
        assert_eq!(stat_ppid("12 (a) b) (c) R 7 12 12 0"), Some(7));
        assert_eq!(stat_ppid("12 (x"), None);
        assert_eq!(stat_ppid("12 (x) S notanumber"), None);

        let pairs = [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (14, 13)];
        assert_eq!(descendants(10, &pairs), vec![10, 11, 13, 12, 14]);
        assert_eq!(descendants(20, &pairs), vec![20]);
        assert_eq!(descendants(99, &pairs), vec![99]);
    }

    #[test]
    fn machine_fields() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor\t: 0\n"), None);
        assert_eq!(
            kernel_release(
                "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc) #1 SMP"
            )
            .as_deref(),
            Some("Linux 6.1.0-18-amd64")
        );
        assert_eq!(kernel_release("garbage"), None);
        let passwd = "root:x:0:0:root:/root:/bin/bash\nrkrs-test:x:2000:2000::/home/rkrs-test:/bin/sh\nbad:x:zz:1::/:/bin/sh\n";
        assert_eq!(passwd_ids(passwd, "rkrs-test"), Some((2000, 2000)));
        assert_eq!(passwd_ids(passwd, "bad"), None);
        assert_eq!(passwd_ids(passwd, "nobody"), None);
        assert_eq!(passwd_name(passwd, 2000).as_deref(), Some("rkrs-test"));
        assert_eq!(passwd_name(passwd, 7), None);
    }

    #[test]
    fn tables() {
        let mut t = Table::new(&["name", "ms", "ratio"]);
        t.row(vec![
            "--net=host true".into(),
            "15.0 (17.0)".into(),
            "0.45×".into(),
        ]);
        t.row(vec!["a|b".into(), "2.0 (3.0)".into()]);
        assert_eq!(
            t.text(),
            "name                      ms  ratio\n\
             --net=host true  15.0 (17.0)  0.45×\n\
             a|b                2.0 (3.0)\n"
        );
        assert_eq!(
            t.markdown(),
            "| name | ms | ratio |\n\
             |---|---:|---:|\n\
             | --net=host true | 15.0 (17.0) | 0.45× |\n\
             | a\\|b | 2.0 (3.0) |  |\n"
        );

        let mut t = Table::new(&["target", "measured", "verdict"]).left(2);
        t.row(vec!["rss".into(), "1.47 MiB".into(), "not met".into()]);
        t.row(vec!["startup".into(), "0.25×".into(), "met".into()]);
        assert_eq!(
            t.text(),
            "target   measured  verdict\n\
             rss      1.47 MiB  not met\n\
             startup     0.25×  met\n"
        );
        assert!(
            t.markdown()
                .starts_with("| target | measured | verdict |\n|---|---:|---|\n")
        );
    }

    #[test]
    fn strace_spans() {
        let text = "\
100  1000.000000 execve(\"/usr/bin/setpriv\", [\"setpriv\"], 0x1 /* 2 vars */) = 0
100 1000.001000 execve(\"/tmp/x/rootlesskit\", [\"rootlesskit\"], 0x1 /* 2 vars */) = 0
101 1000.002000 execve(\"/usr/bin/getsubids\", [\"getsubids\", \"u\"], 0x1 /* 2 vars */ <unfinished ...>
100 1000.002100 --- SIGURG {si_signo=SIGURG} ---
101 1000.002200 <... execve resumed>) = 0
101 1000.004000 +++ exited with 0 +++
102 1000.004500 execve(\"/nonexistent\", [\"x\"], 0x1 /* 2 vars */) = -1 ENOENT (No such file or directory)
102 1000.005000 execve(\"/usr/bin/newuidmap\", [\"newuidmap\"], 0x1 /* 2 vars */) = 0
102 1000.006000 +++ exited with 1 +++
103 1000.006000 execve(\"/usr/bin/getsubids\", [\"getsubids\"], 0x1 /* 2 vars */) = 0
103 1000.007000 +++ killed by SIGKILL +++
100 1000.010000 +++ exited with 0 +++
";
        let got = spans(text);
        let expect = [
            ("setpriv", 0.0, 1.0),
            ("rootlesskit", 1.0, 10.0),
            ("getsubids", 2.0, 4.0),
            ("newuidmap", 5.0, 6.0),
            ("getsubids", 6.0, 7.0),
        ];
        assert_eq!(got.len(), expect.len(), "{got:?}");
        for (g, (p, s, e)) in got.iter().zip(expect) {
            assert_eq!(g.program, p);
            assert!(
                (g.start - s).abs() < 1e-6 && (g.end - e).abs() < 1e-6,
                "{g:?}"
            );
        }
        let agg = by_program(&got);
        let names: Vec<(&str, usize)> = agg.iter().map(|(p, n, ..)| (p.as_str(), *n)).collect();
        assert_eq!(
            names,
            [
                ("setpriv", 1),
                ("rootlesskit", 1),
                ("getsubids", 2),
                ("newuidmap", 1)
            ]
        );
        assert!((agg[2].2 - 3.0).abs() < 1e-6);
        let span = |start: f64, end: f64| Span {
            program: "x".into(),
            start,
            end,
        };
        for (spans, expect) in [
            (vec![], 0.0),
            (vec![span(1.0, 3.0)], 2.0),
            (vec![span(5.0, 6.0), span(1.0, 3.0), span(2.0, 4.0)], 4.0),
            (vec![span(0.0, 10.0), span(2.0, 3.0)], 10.0),
        ] {
            let refs: Vec<&Span> = spans.iter().collect();
            assert!((covered(&refs) - expect).abs() < 1e-9, "{spans:?}");
        }
        assert!(is_helper("getsubids") && is_helper("newuidmap"));
        assert!(!is_helper("rootlesskit-child") && !is_helper("exe") && !is_helper("setpriv"));
    }

    #[test]
    fn option_errors() {
        let check = |input: &str, expect: &str| {
            assert_eq!(
                options("bench", &argv(input)).unwrap_err(),
                expect,
                "{input:?}"
            );
        };
        check(
            "--runs 0",
            "invalid value \"0\" for --runs: expected a positive whole number",
        );
        check(
            "--runs x",
            "invalid value \"x\" for --runs: expected a positive whole number",
        );
        check("--runs", "missing value for option '--runs'");
        check("extra", "unexpected argument 'extra' for bench");
        check("--frob", "unknown option '--frob' for bench");
        let o = options("bench", &argv("--runs 5 --no-trace")).unwrap();
        assert_eq!((o.runs, o.trace), (5, false));
        let o = options("bench", &[]).unwrap();
        assert_eq!((o.runs, o.trace, o.reference), (DEFAULT_RUNS, true, None));
    }

    #[test]
    fn bin_dir_default() {
        let root = Path::new("/w");
        assert_eq!(default_bin_dir(root, None), Path::new("/w/target/dist"));
        assert_eq!(
            default_bin_dir(root, Some("/t/x".into())),
            Path::new("/t/x/dist")
        );
        assert_eq!(
            default_bin_dir(root, Some("tgt".into())),
            Path::new("/w/tgt/dist")
        );
    }

    #[test]
    fn targets_from_results() {
        let series = |who: &'static str, walls: &[f64]| Series {
            who,
            argv: vec![],
            samples: walls
                .iter()
                .map(|&w| Sample {
                    wall: w,
                    user: 1.0,
                    sys: 1.0,
                })
                .collect(),
            dropped: vec![],
            error: None,
        };
        let report = Report {
            startup: vec![
                TimedRow {
                    label: "--net=host true".into(),
                    series: vec![
                        series("ours", &[5.0, 6.0, 7.0]),
                        series("reference", &[40.0]),
                    ],
                    ..TimedRow::default()
                },
                TimedRow {
                    label: "--net=x true".into(),
                    series: vec![series("ours", &[15.0]), series("reference", &[30.0])],
                    ..TimedRow::default()
                },
                TimedRow {
                    label: "--net=pasta true".into(),
                    series: vec![series("ours", &[15.0])],
                    ..TimedRow::default()
                },
                TimedRow {
                    label: "unshare -U -r true".into(),
                    what: Some("ceiling"),
                    series: vec![series("machine", &[2.0])],
                    ..TimedRow::default()
                },
            ],
            idle: vec![IdleSeries {
                who: "ours",
                samples: vec![Idle {
                    parent_rss_kib: 1372,
                    ..Idle::default()
                }],
                ..IdleSeries::default()
            }],
            ..Report::default()
        };
        let got: Vec<(String, String, Verdict)> = targets(&report);
        let brief: Vec<(&str, &str, Verdict)> = got
            .iter()
            .map(|(t, m, v)| (t.as_str(), m.as_str(), *v))
            .collect();
        assert_eq!(
            brief,
            [
                (
                    "startup `--net=host true` ≤ 0.2× reference (wall)",
                    "0.15×",
                    Verdict::Met
                ),
                (
                    "startup `--net=x true` ≤ 0.2× reference (wall)",
                    "0.50×",
                    Verdict::NotMet
                ),
                (
                    "startup `--net=pasta true` ≤ 0.2× reference (wall)",
                    "not on both sides",
                    Verdict::NotMeasured
                ),
                ("idle parent RSS ≤ 1 MiB", "1.34 MiB", Verdict::NotMet),
                (
                    "builtin TCP ≥ 1.5× reference and ≥ 0.8× loopback",
                    "not on both sides and loopback",
                    Verdict::NotMeasured
                ),
                (
                    "connections/s ≥ 4× reference (p99 connect + echo latency alongside)",
                    "not on both sides",
                    Verdict::NotMeasured
                ),
                (
                    "CPU per GB forwarded ≤ 0.3× reference",
                    "not on both sides",
                    Verdict::NotMeasured
                ),
            ]
        );
    }

    /// A trimmed `iperf3 -c ... -J` report: the per-stream `receiver` and the intervals must
    /// not be mistaken for `end.sum_received`.
    const IPERF_JSON: &str = r#"{
	"start":	{"connected": [{"socket": 5, "local_port": 40000}], "version": "iperf 3.12"},
	"intervals":	[{"sum": {"start": 0, "end": 1.000, "bytes": 11, "bits_per_second": 88}}],
	"end":	{
		"streams":	[{"receiver": {"start": 0, "end": 5.0, "bytes": 22, "bits_per_second": 35.2}}],
		"sum_sent":	{"start": 0, "end": 5.0, "bytes": 6512345678, "bits_per_second": 10419753084.8, "retransmits": 0},
		"sum_received":	{
			"start":	0,
			"end":	5.000321,
			"seconds":	5.000321,
			"bytes":	6500000000,
			"bits_per_second":	1.03993e+10,
			"sender":	true
		},
		"cpu_utilization_percent":	{"host_total": 40.1}
	}
}"#;

    #[test]
    fn iperf_json() {
        assert_eq!(iperf_received(IPERF_JSON), Ok((1.03993e10, 6.5e9)));
        let check = |input: &str, expect: Result<(f64, f64)>| {
            assert_eq!(iperf_received(input), expect, "{input:?}");
        };
        check(
            r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}"#,
            Err("iperf3: unable to connect to server: Connection refused".into()),
        );
        check(
            r#"{"error": "say \"no\" twice"}"#,
            Err(r#"iperf3: say \"no\" twice"#.into()),
        );
        check("", Err("no end.sum_received in the iperf3 output".into()));
        check(
            r#"{"end": {"sum_received": {"bytes": 10}}}"#,
            Err("no bits_per_second or bytes in end.sum_received".into()),
        );
        check(
            r#"{"end":{"sum_received":{"bytes":10,"bits_per_second":16}}}"#,
            Ok((16.0, 10.0)),
        );
        // "end" as a number key inside an interval comes before the object.
        check(
            r#"{"intervals":[{"end": 1.0}], "end" : { "sum_received" : { "bytes" : 3 , "bits_per_second" : 2.5 } } }"#,
            Ok((2.5, 3.0)),
        );
        for (text, key, expect) in [
            (r#"{"a": 12}"#, "a", Some(12.0)),
            (r#"{"a":-1.5e3,"b":2}"#, "a", Some(-1500.0)),
            (r#"{"a": "12"}"#, "a", None),
            (r#"{"ab": 1, "a": 2}"#, "a", Some(2.0)),
            (r#"{"a": 1e999}"#, "a", None),
            (r#"{"a": null}"#, "a", None),
            (r#"{"b": 1}"#, "a", None),
        ] {
            assert_eq!(json_number(text, key), expect, "{text:?}");
        }
        assert_eq!(
            json_object(r#"{"a": {"b": {}}, "c": 1}"#, "a"),
            Some(r#"{"b": {}}"#)
        );
        assert_eq!(json_object(r#"{"a": {"b": 1"#, "a"), None);
    }

    #[test]
    fn perf_reports() {
        let text =
            "# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 3K of event 'cpu-clock:ppp'
# Event count (approx.): 1948500000
#
# Children      Self  Symbol
# ........  ........  ..........
#
    98.49%     0.36%  [k] do_syscall_64
    92.02%     0.10%  [k] __x64_sys_splice
    66.85%     0.74%  [k] splice_to_socket
    28.43%     0.64%  [k] net_rx_action
    22.53%     0.33%  [k] tcp_splice_read
     1.20%     1.20%  [.] runtime.futex
     0.30%     0.25%  [.] 0x00007fb0d3b4a1d0
";
        let p = parse_perf_report(text, PROFILE_SYMBOLS).unwrap();
        assert_eq!(p.samples, 3000);
        assert!((p.user - 1.45).abs() < 1e-9);
        let get = |s: &str| p.shares.iter().find(|(k, _)| k == s).unwrap().1;
        assert_eq!(get("do_syscall_64"), 98.49);
        assert_eq!(get("splice_to_socket"), 66.85);
        assert_eq!(get("__x64_sys_epoll_wait"), 0.0);
        assert_eq!(p.shares.len(), PROFILE_SYMBOLS.len());
        assert_eq!(
            parse_perf_report("# Samples: 0 of event 'x'\n", PROFILE_SYMBOLS),
            None
        );
        assert_eq!(parse_perf_report("garbage", PROFILE_SYMBOLS), None);
    }

    #[test]
    fn stat_cpu() {
        let check = |stat: &str, expect: Option<(u64, u64)>| {
            assert_eq!(stat_cpu_ticks(stat), expect, "{stat:?}");
        };
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
        check(
            "4404 (rootlesskit) S 1 4404 4404 0 -1 4194560 330 0 0 0 123 45 7 8 20 0 4 0",
            Some((123, 45)),
        );
        check("7 (a) b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0", Some((1, 2)));
        check("7 (x) S 1 7 7 0 -1 0 0 0 0 0 1", None);
        check("7 (x) S 1 7 7 0 -1 0 0 0 0 0 u 2", None);
        check("7 (x", None);
    }

    #[test]
    fn tcp_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A41F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  2000        0 1 1 0000000000000000
   1: 0100007F:1451 0100007F:B000 01 00000000:00000000 00:00000000 00000000  2000        0 2 1 0000000000000000
";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  2000        0 3 1 0000000000000000
";
        assert!(tcp_listening(tcp, 0xA41F));
        assert!(!tcp_listening(tcp, 5201), "established, not listening");
        assert!(!tcp_listening(tcp, 8000));
        assert!(tcp_listening(tcp6, 8000));
        assert!(!tcp_listening("", 8000));
        assert!(!tcp_listening(tcp.lines().next().unwrap(), 0));
    }

    #[test]
    fn latency_percentiles_and_ranges() {
        // 2000 connections: 1980 fast ones and 20 slow ones; p99 is the last fast one.
        let mut lat: Vec<f64> = (0..1980).map(|i| 0.1 + f64::from(i) * 1e-5).collect();
        lat.extend((0..20).map(|i| 5.0 + f64::from(i)));
        assert_eq!(percentile(&lat, 99.0), Some(0.1 + 1979.0 * 1e-5));
        lat.push(30.0);
        assert_eq!(percentile(&lat, 99.0), Some(5.0));
        assert_eq!(med_range(&[9.5, 10.25, 8.0], 2), "9.50 (8.00–10.25)");
        assert_eq!(med_range(&[1234.4], 0), "1234 (1234–1234)");
        assert_eq!(med_range(&[], 1), "–");
    }

    #[test]
    fn forwarding_verdicts() {
        let s = |who: &'static str, rates: &[f64], cpu: &[f64], lat: &[f64]| FwdSeries {
            who,
            rates: rates.to_vec(),
            cpu_per_gb: cpu.to_vec(),
            latency_ms: lat.to_vec(),
            ..FwdSeries::default()
        };
        let check = |f: Forwarding, expect: [(&str, Verdict); 3]| {
            let got = forwarding_targets(&f);
            let brief: Vec<(&str, Verdict)> =
                got.iter().map(|(_, m, v)| (m.as_str(), *v)).collect();
            assert_eq!(brief, expect);
        };
        check(
            Forwarding {
                throughput: vec![
                    s("ours", &[12.0, 11.0, 13.0], &[0.1, 0.2, 0.3], &[]),
                    s("reference", &[6.0], &[0.8], &[]),
                    s(LOOPBACK, &[14.0], &[], &[]),
                ],
                conns: vec![
                    s("ours", &[6000.0], &[], &[0.1, 0.2]),
                    s("reference", &[1200.0], &[], &[0.5, 1.5]),
                    s(LOOPBACK, &[13000.0], &[], &[0.05]),
                ],
                ..Forwarding::default()
            },
            [
                ("2.00× reference, 0.86× loopback", Verdict::Met),
                ("5.00× (p99 0.20 ms vs 1.50 ms)", Verdict::Met),
                ("0.25×", Verdict::Met),
            ],
        );
        let mut failed = s("reference", &[1200.0], &[], &[1.0]);
        failed.error = Some("exit 1".into());
        check(
            Forwarding {
                throughput: vec![
                    s("ours", &[8.0], &[0.5], &[]),
                    s("reference", &[6.0], &[0.8], &[]),
                    s(LOOPBACK, &[14.0], &[], &[]),
                ],
                conns: vec![s("ours", &[6000.0], &[], &[0.1]), failed],
                ..Forwarding::default()
            },
            [
                ("1.33× reference, 0.57× loopback", Verdict::NotMet),
                ("not on both sides", Verdict::NotMeasured),
                ("0.62×", Verdict::NotMet),
            ],
        );
    }

    #[test]
    fn dropped_runs_are_noted() {
        let series = |who: &'static str, dropped: &[&str], error: Option<&str>| Series {
            who,
            argv: vec![who.into(), "true".into()],
            samples: vec![Sample {
                wall: 4.0,
                user: 1.0,
                sys: 2.0,
            }],
            dropped: dropped.iter().map(|e| e.to_string()).collect(),
            error: error.map(String::from),
        };
        let report = Report {
            startup: vec![TimedRow {
                label: "--net=x true".into(),
                series: vec![
                    series("ours", &[], None),
                    series("reference", &["exit 1: reset", "exit 1: other"], None),
                ],
                ..TimedRow::default()
            }],
            ..Report::default()
        };
        let mut notes = Vec::new();
        let t = report.startup_table(&mut notes);
        assert_eq!(
            t.rows[0],
            [
                "--net=x true",
                "4.0 (4.0)",
                "4.0 (4.0) [1]",
                "1.00×",
                "3.0 (3.0)",
                "3.0 (3.0) [1]",
                "1.00×"
            ]
        );
        assert_eq!(
            notes,
            ["reference `reference true`: 2 failed runs dropped, the first: exit 1: reset"]
        );
        let report = Report {
            startup: vec![TimedRow {
                label: "--net=x true".into(),
                series: vec![series("ours", &["a", "b", "c"], Some("c"))],
                ..TimedRow::default()
            }],
            ..Report::default()
        };
        let mut notes = Vec::new();
        assert_eq!(report.startup_table(&mut notes).rows[0][1], "failed [1]");
        assert_eq!(notes, ["ours `ours true`: c"]);
    }
}
