//! Startup: the timed rows (wall and CPU of `rootlesskit ... true`), the interleaved rounds, and
//! parsing what the timing script prints.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;

use super::runner::{Runner, on_path};
use super::{MAX_FAILURES, SCENARIOS, STICKS, TARGET, WARMUP_ROUNDS};

/// One implementation under test.
pub(super) struct Side {
    pub(super) who: &'static str,
    pub(super) rootlesskit: PathBuf,
}

impl Side {
    pub(super) fn argv(&self, flags: &[&str]) -> Vec<String> {
        let mut v = vec![self.rootlesskit.to_string_lossy().into_owned()];
        v.extend(flags.iter().map(|s| s.to_string()));
        v.push(TARGET.into());
        v
    }
}

/// Wall and CPU time of one run, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Sample {
    pub(super) wall: f64,
    pub(super) user: f64,
    pub(super) sys: f64,
}

impl Sample {
    pub(super) fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// The samples of one command, or why it stopped.
#[derive(Debug, Default)]
pub(super) struct Series {
    pub(super) who: &'static str,
    pub(super) argv: Vec<String>,
    pub(super) samples: Vec<Sample>,
    /// Errors of failed runs that were dropped (fewer than [`MAX_FAILURES`]).
    pub(super) dropped: Vec<String>,
    pub(super) error: Option<String>,
}

impl Series {
    pub(super) fn new(who: &'static str, argv: Vec<String>) -> Series {
        Series {
            who,
            argv,
            ..Series::default()
        }
    }
    pub(super) fn walls(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.wall).collect()
    }
    pub(super) fn cpus(&self) -> Vec<f64> {
        self.samples.iter().map(Sample::cpu).collect()
    }
    pub(super) fn ok(&self) -> bool {
        self.error.is_none() && !self.samples.is_empty()
    }
}

/// A row of the startup table: a scenario (ours and the reference) or a measuring stick.
#[derive(Debug, Default)]
pub(super) struct TimedRow {
    pub(super) label: String,
    /// For sticks: what the command shows.
    pub(super) what: Option<&'static str>,
    pub(super) series: Vec<Series>,
    /// Why the row was not run at all.
    pub(super) skipped: Option<String>,
    /// Why only ours runs it (the reference lacks the feature).
    pub(super) only_ours: Option<&'static str>,
}

pub(super) fn startup_rows(sides: &[Side], user: &str) -> Vec<TimedRow> {
    let mut rows = Vec::new();
    for sc in SCENARIOS {
        let mut row = TimedRow {
            label: format!("{} {TARGET}", sc.flags.join(" ")),
            only_ours: sc.only_ours,
            ..TimedRow::default()
        };
        match sc.needs.filter(|p| !on_path(p)) {
            Some(p) => row.skipped = Some(format!("{p} is not installed")),
            None => {
                row.series = sides
                    .iter()
                    .filter(|s| sc.only_ours.is_none() || s.who == "ours")
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
pub(super) fn progress(what: &str, step: usize, total: usize) {
    let mut out = std::io::stdout();
    if out.is_terminal() {
        print!("\r\x1b[Kbench: {what} {step}/{total}");
    } else if step == 1 {
        println!("bench: {what}, {total} in all");
    }
    let _ = out.flush();
}

/// Ends the status line on a terminal.
pub(super) fn progress_done() {
    if std::io::stdout().is_terminal() {
        println!();
    }
}

/// Warm-up rounds, then `runs` rounds; each round runs every live series once.
pub(super) fn run_rounds(runner: &Runner, rows: &mut [TimedRow], runs: usize) {
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

/// Parses what [`TIME_SCRIPT`] prints: `USER SYS` (seconds, from `time`) and then
/// `START END` (`$EPOCHREALTIME`), as the last two non-empty lines; times in milliseconds.
pub(super) fn parse_time_output(text: &str) -> Option<Sample> {
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
}
