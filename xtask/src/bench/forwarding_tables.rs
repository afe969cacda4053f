//! The forwarding results as tables and verdicts: throughput, connections/s and CPU per GB, each
//! side against the issue's targets.

use std::fmt::Write as _;

use super::forwarding::{
    CLK_TCK, CONNS, CONNS_WARMUP, ECHO_NAME, FWD_FLAGS, FWD_ROUNDS, Forwarding, FwdSeries,
    IPERF_SECONDS, LOOPBACK, PORT, iperf_client_argv,
};
use super::profile::{
    CONN_PROFILE_SYMBOLS, PROFILE_CLIENT_SECONDS, PROFILE_SECONDS, PROFILE_SYMBOLS, Profile,
};
use super::report::{Report, Verdict, note};
use super::stats::{Table, median, ratio};

/// `median (min–max)` with `decimals` places.
pub(super) fn med_range(xs: &[f64], decimals: usize) -> String {
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
pub(super) fn forwarding_targets(f: &Forwarding) -> Vec<(String, String, Verdict)> {
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
    pub(super) fn forwarding_text(&self, notes: &mut Vec<String>) -> String {
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
    pub(super) fn conn_profile_markdown(&self, notes: &mut Vec<String>) -> String {
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
    pub(super) fn profile_markdown(&self, notes: &mut Vec<String>) -> String {
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

    pub(super) fn forwarding_markdown(&self, notes: &mut Vec<String>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::percentile;

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
}
