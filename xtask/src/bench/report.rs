//! The report: the targets and their verdicts, the numbered notes, and the text written to the
//! terminal and BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::forwarding::Forwarding;
use super::forwarding_tables::forwarding_targets;
use super::idle::{IdleMetric, IdleSeries};
use super::machine::{Machine, Sizes};
use super::network::Network;
use super::network_tables::{network_targets, usernet_startup_target};
use super::startup::{Series, TimedRow};
use super::stats::{Table, med_p90, median, mib, ratio, thousands};
use super::trace::{Span, by_program, covered, is_helper};
use super::{
    DEFAULT_REFERENCE, MAX_FAILURES, RSS_RUNS, RSS_SETTLE, STATE_DIR, TARGET, TIME_SCRIPT,
    WARMUP_ROUNDS,
};

#[derive(Debug, PartialEq, Clone, Copy)]
pub(super) enum Verdict {
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
pub(super) struct Report {
    pub(super) machine: Machine,
    pub(super) runner_note: String,
    /// The user switch in front of every command.
    pub(super) prefix: Vec<String>,
    pub(super) bin_dir: PathBuf,
    pub(super) reference: Option<PathBuf>,
    pub(super) runs: usize,
    pub(super) versions: Vec<(String, String)>,
    pub(super) startup: Vec<TimedRow>,
    pub(super) idle: Vec<IdleSeries>,
    pub(super) sizes: Sizes,
    pub(super) forwarding: Forwarding,
    pub(super) network: Network,
    /// `--only`: the parts that ran; `None`: all of them.
    pub(super) only: Option<Vec<&'static str>>,
    pub(super) traces: Vec<(&'static str, Vec<String>, Vec<Span>)>,
    pub(super) notes: Vec<String>,
    pub(super) load_after: String,
}

/// The issue's targets as `(target, measured, verdict)`.
pub(super) fn targets(r: &Report) -> Vec<(String, String, Verdict)> {
    let mut out = Vec::new();
    let startup = r.startup.iter().filter(|row| row.what.is_none());
    for row in startup.filter(|row| row.only_ours.is_none() && r.part("startup")) {
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
    if r.part("startup") {
        out.push(usernet_startup_target(&r.startup));
    }
    if r.part("idle") {
        out.push(idle_target(r));
    }
    if r.part("forwarding") {
        out.extend(forwarding_targets(&r.forwarding));
    }
    if r.part("network") {
        out.extend(network_targets(&r.network));
    }
    out
}

/// The idle parent RSS target of issue 5.
fn idle_target(r: &Report) -> (String, String, Verdict) {
    let ours_idle = r.idle.iter().find(|s| s.who == "ours");
    let parent = ours_idle.and_then(|s| {
        let v: Vec<f64> = s.samples.iter().map(|i| i.parent_rss_kib as f64).collect();
        median(&v)
    });
    match parent {
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
    }
}

/// Adds a numbered note (once per text) and returns its number.
pub(super) fn note(notes: &mut Vec<String>, text: String) -> usize {
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

pub(super) fn find<'a>(series: &'a [Series], who: &str) -> Option<&'a Series> {
    series.iter().find(|s| s.who == who)
}

impl Report {
    /// Whether `--only` let the part `name` run.
    pub(super) fn part(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|v| v.contains(&name))
    }

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
            if let Some(why) = row.only_ours {
                let na = format!("n/a: {why}");
                t.row(vec![
                    row.label.clone(),
                    cell(o, Series::walls),
                    na.clone(),
                    String::new(),
                    cell(o, Series::cpus),
                    na,
                    String::new(),
                ]);
                continue;
            }
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
        let mut t = Table::new(&["target (issues 5 and 12)", "measured", "verdict"]).left(2);
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
    pub(super) fn text(&self) -> String {
        let mut notes = Vec::new();
        let mut s = String::new();
        if self.part("startup") {
            let _ = writeln!(
                s,
                "startup, median (p90) of {} runs, ms; CPU = user+sys of the whole tree",
                self.runs
            );
            s.push_str(&self.startup_table(&mut notes).text());
            s.push_str("\nmeasuring sticks\n");
            s.push_str(&self.sticks_table(&mut notes).text());
        }
        if self.part("idle") {
            let _ = writeln!(s, "\nidle memory, median of {RSS_RUNS}");
            s.push_str(&self.idle_table(&mut notes).text());
        }
        if self.part("forwarding") {
            s.push_str(&self.forwarding_text(&mut notes));
        }
        if self.part("network") {
            s.push_str(&self.network_text(&mut notes));
        }
        if self.part("sizes") {
            s.push_str("\nbinary sizes\n");
            s.push_str(&self.sizes_table().text());
        }
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
    pub(super) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut notes = Vec::new();
        let mut s = String::new();
        s.push_str("# Benchmarks\n\n");
        s.push_str(
            "Written by `cargo xtask bench` (xtask/src/bench/); regenerate it rather than editing it. \
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
        if self.part("startup") {
            let _ = writeln!(
                s,
                "\nThe timing line:\n\n```\n{} bash -c '{TIME_SCRIPT}' bash COMMAND...\n```\n\n\
                 Each COMMAND, exactly as run:\n\n```",
                self.prefix.join(" ")
            );
            for c in timed {
                let _ = writeln!(s, "{c}");
            }
            s.push_str("```\n");
        }
        if self.part("idle") {
            let _ = writeln!(
                s,
                "\nThe idle starts (`{STATE_DIR}` is a fresh directory each time):\n\n```"
            );
            for c in idle {
                let _ = writeln!(s, "{c}");
            }
            s.push_str("```\n");
        }
        if let Some(parts) = &self.only {
            let _ = writeln!(
                s,
                "\nA partial run (`--only {}`): the other parts were not measured.",
                parts.join(",")
            );
        }

        if self.part("startup") {
            let _ = writeln!(
                s,
                "\n## Startup\n\nms, median (p90) of {} runs; the target is `{TARGET}`. The flags are \
                 identical on both sides (the reference runs no `--net=gvisor-tap-vsock`: 1.1.0 has \
                 none); `--port-driver=builtin` starts the driver with no ports published.\n",
                self.runs
            );
            s.push_str(&self.startup_table(&mut notes).markdown());
            s.push_str("\nMeasuring sticks (the machine itself, in the same rounds):\n\n");
            s.push_str(&self.sticks_table(&mut notes).markdown());
        }
        if self.part("idle") {
            let _ = writeln!(s, "\n## Idle memory\n\nMedian of {RSS_RUNS} starts each.\n");
            s.push_str(&self.idle_table(&mut notes).markdown());
        }
        if self.part("forwarding") {
            s.push_str(&self.forwarding_markdown(&mut notes));
            s.push_str(&self.profile_markdown(&mut notes));
            s.push_str(&self.conn_profile_markdown(&mut notes));
        }
        if self.part("network") {
            s.push_str(&self.network_markdown(&mut notes));
        }
        if self.part("sizes") {
            s.push_str("\n## Binary sizes\n\n");
            s.push_str(
                "Ours are static; the reference is one Go binary that re-executes itself as the child.\n\n",
            );
            s.push_str(&self.sizes_table().markdown());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::idle::Idle;
    use crate::bench::startup::Sample;

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
                // Only ours runs it: no target against the reference.
                TimedRow {
                    label: "--net=gvisor-tap-vsock true".into(),
                    series: vec![series("ours", &[9.0])],
                    only_ours: Some("no gvisor-tap-vsock in 1.1.0"),
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
            only: Some(vec!["startup", "idle", "forwarding"]),
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
                (
                    "startup `--net=gvisor-tap-vsock true` below `--net=slirp4netns true` (ours, wall)",
                    "not both",
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
        // `--only network`: issue 12's network targets alone.
        let report = Report {
            only: Some(vec!["network"]),
            ..report
        };
        let got = targets(&report);
        assert_eq!(got.len(), 5);
        assert!(got[0].0.starts_with("namespace → host TCP at MTU 1500"));
        assert_eq!(got[4].1, "–");
        // Everything (no --only): the startup row of ours against slirp4netns is there too.
        let all = Report {
            only: None,
            ..report
        };
        assert_eq!(targets(&all).len(), 3 + 1 + 1 + 3 + 5);
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
