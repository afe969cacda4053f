//! Where the time goes: an strace timeline of one run, cut into spans per program.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::Result;

use super::runner::{Runner, describe_status, last_line, run_capture};
use super::{SAMPLE_TIMEOUT, TARGET};

/// One program's stretch of a process's life: from its execve to the next execve or the exit.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Span {
    pub(super) program: String,
    pub(super) start: f64,
    pub(super) end: f64,
}

/// Runs `argv` once under `strace -f` and returns its program spans.
pub(super) fn trace(
    runner: &Runner,
    who: &str,
    argv: &[String],
    scratch: &Path,
) -> Result<Vec<Span>> {
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
pub(super) fn spans(text: &str) -> Vec<Span> {
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
pub(super) fn by_program(spans: &[Span]) -> Vec<(String, usize, f64, f64)> {
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
pub(super) fn covered(spans: &[&Span]) -> f64 {
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
pub(super) fn is_helper(program: &str) -> bool {
    !matches!(
        program,
        "setpriv" | "rootlesskit" | "rootlesskit-child" | "exe" | TARGET
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
