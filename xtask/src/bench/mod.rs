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

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Result, dist};

/// Timed runs of every command unless `--runs` says otherwise.
pub(crate) const DEFAULT_RUNS: usize = 30;
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
pub(crate) const DEFAULT_REFERENCE: &str = "/usr/bin/rootlesskit";
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
pub(crate) struct Scenario {
    pub flags: &'static [&'static str],
    /// A program the scenario needs on `PATH`; the row is skipped without it.
    pub needs: Option<&'static str>,
    /// Why the reference does not run this row (it lacks the feature); `None`: both sides run.
    pub only_ours: Option<&'static str>,
}

/// The startup rows. The slirp4netns row with `--port-driver=builtin` is the issue's command;
/// the one without the driver (and with `--disable-host-loopback`) stays for comparison. The
/// last two are issue 12's: our in-process network against slirp4netns, flags alone.
pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        flags: &["--net=host"],
        needs: None,
        only_ours: None,
    },
    Scenario {
        flags: &["--net=host", "--pidns", "--copy-up=/etc"],
        needs: None,
        only_ours: None,
    },
    Scenario {
        flags: &[
            "--net=slirp4netns",
            "--copy-up=/etc",
            "--disable-host-loopback",
        ],
        needs: Some("slirp4netns"),
        only_ours: None,
    },
    Scenario {
        flags: &[
            "--net=slirp4netns",
            "--port-driver=builtin",
            "--copy-up=/etc",
        ],
        needs: Some("slirp4netns"),
        only_ours: None,
    },
    Scenario {
        flags: &["--net=pasta", "--copy-up=/etc", "--disable-host-loopback"],
        needs: Some("pasta"),
        only_ours: None,
    },
    Scenario {
        flags: &["--net=slirp4netns"],
        needs: Some("slirp4netns"),
        only_ours: None,
    },
    Scenario {
        flags: &["--net=gvisor-tap-vsock"],
        needs: None,
        only_ours: Some("no gvisor-tap-vsock in 1.1.0"),
    },
];

/// A command that needs no rootlesskit: what the machine itself costs. `{user}` is replaced
/// by the name of the user the commands run as.
pub(crate) struct Stick {
    pub argv: &'static [&'static str],
    pub what: &'static str,
}

pub(crate) const STICKS: &[Stick] = &[
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
pub(crate) struct Options {
    pub runs: usize,
    /// `--reference`; `None` means [`DEFAULT_REFERENCE`] when it exists.
    pub reference: Option<PathBuf>,
    /// `--bin-dir`; `None` means `$CARGO_TARGET_DIR/dist`, else `<root>/target/dist`.
    pub bin_dir: Option<PathBuf>,
    /// `--output`; `None` means `<root>/BENCHMARKS.md`.
    pub output: Option<PathBuf>,
    /// `--no-trace`: skip the strace timeline.
    pub trace: bool,
    /// `--only A,B`: the parts to run; `None` runs all of [`PARTS`].
    pub only: Option<Vec<&'static str>>,
}

/// The parts of a run, for `--only`: startup (with the sticks and the traces), idle memory,
/// port forwarding through the builtin driver against the reference, the network drivers
/// (issue 12), and binary sizes.
pub(crate) const PARTS: &[&str] = &["startup", "idle", "forwarding", "network", "sizes"];

/// Parses `--only`'s comma-separated list against [`PARTS`].
fn parse_only(v: &str) -> Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim) {
        let part = PARTS.iter().find(|p| **p == name).ok_or_else(|| {
            format!(
                "invalid value \"{v}\" for --only: expected a comma-separated list of {}",
                PARTS.join(", ")
            )
        })?;
        if !out.contains(part) {
            out.push(*part);
        }
    }
    Ok(out)
}

/// Parses the arguments of `cargo xtask bench`.
pub(crate) fn options(cmd: &str, rest: &[String]) -> Result<Options> {
    let p = crate::parse(
        cmd,
        rest,
        &[
            ("runs", true),
            ("reference", true),
            ("bin-dir", true),
            ("output", true),
            ("no-trace", false),
            ("only", true),
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
        only: p.value("only").map(parse_only).transpose()?,
    })
}

/// `cargo xtask bench`.
pub(crate) fn run(root: &Path, opts: &Options) -> Result<()> {
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
        only: opts.only.clone(),
        ..Report::default()
    };
    let part = |name: &str| opts.only.as_ref().is_none_or(|v| v.contains(&name));
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
    if part("startup") {
        report.startup = startup_rows(&sides, &user.name);
        run_rounds(&runner, &mut report.startup, opts.runs);
    }
    if part("idle") {
        report.idle = idle_memory(&runner, &sides, &scratch.path.join("state"));
    }
    if part("sizes") {
        report.sizes = sizes(&bin_dir, reference.as_deref());
    }
    let echo = std::env::current_exe()
        .map_err(|e| format!("cannot find xtask's own binary: {e}"))
        .and_then(|exe| {
            let dir = scratch.path.join("tools");
            mkdir_0755(&dir)?;
            copy_0755(&exe, &dir.join(ECHO_NAME))?;
            Ok(dir.join(ECHO_NAME))
        })?;
    if part("forwarding") {
        report.forwarding = forwarding(
            &runner,
            &sides,
            &scratch.path.join("state"),
            &echo.to_string_lossy(),
        );
    }
    if part("network") {
        report.network = network(
            &runner,
            &sides,
            &scratch.path.join("state"),
            &echo.to_string_lossy(),
        );
    }
    let trace_startup = opts.trace && part("startup");
    if trace_startup && user.switch && on_path("strace") {
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
    if trace_startup && !user.switch {
        report
            .notes
            .push("no trace: strace needs root here, or setuid newuidmap stops working".into());
    } else if trace_startup && !on_path("strace") {
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
    // A partial run never replaces the full BENCHMARKS.md unless asked to.
    let out = match (&opts.output, &opts.only) {
        (Some(o), _) => o.clone(),
        (None, None) => root.join("BENCHMARKS.md"),
        (None, Some(_)) => {
            println!(
                "\nbench: --only: BENCHMARKS.md left as it is (pass --output FILE to write this part)"
            );
            return Ok(());
        }
    };
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

mod forwarding;
mod forwarding_tables;
mod idle;
mod machine;
mod network;
mod network_tables;
mod profile;
mod report;
mod runner;
mod startup;
mod stats;
mod trace;

pub(crate) use forwarding::echo_server;
use forwarding::{ECHO_NAME, forwarding};
use idle::idle_memory;
use machine::{Machine, read_loadavg, sizes, versions};
pub(crate) use network::echo_client;
use network::network;
use report::Report;
use runner::{Runner, Scratch, User, WHO, copy_0755, mkdir_0755, on_path, stage, stage_one};
use startup::{Side, run_rounds, startup_rows};
use trace::trace;

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
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
        assert_eq!(o.only, None);
        let o = options("bench", &argv("--only network,startup,network")).unwrap();
        assert_eq!(o.only, Some(vec!["network", "startup"]));
        let o = options("bench", &argv("--only=sizes")).unwrap();
        assert_eq!(o.only, Some(vec!["sizes"]));
        let bad = "expected a comma-separated list of startup, idle, forwarding, network, sizes";
        check(
            "--only net",
            &format!("invalid value \"net\" for --only: {bad}"),
        );
        check(
            "--only startup,",
            &format!("invalid value \"startup,\" for --only: {bad}"),
        );
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
}
