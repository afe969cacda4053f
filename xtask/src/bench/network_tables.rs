//! The network results as tables and verdicts: namespace → host and host → namespace throughput,
//! outbound connections/s, CPU per GB and the idle parent with gvisor-tap-vsock, against issue
//! 12's targets.

use std::fmt::Write as _;

use super::forwarding_tables::med_range;
use super::idle::IdleMetric;
use super::network::{
    MTUS, NET_ROUNDS, NET_SECONDS, NetSeries, Network, OUT_CONNS, OUT_CONNS_WARMUP, USERNET,
    inbound_client_argv,
};
use super::report::{Report, Verdict, note};
use super::startup::{Series, TimedRow};
use super::stats::{Table, median, mib, ratio};
use super::{RSS_RUNS, STATE_DIR};

/// The startup rows the startup target compares (both ours).
pub(super) const STARTUP_USERNET: &str = "--net=gvisor-tap-vsock true";
pub(super) const STARTUP_SLIRP: &str = "--net=slirp4netns true";
/// The idle parent RSS the issue allows with gvisor-tap-vsock, KiB.
const IDLE_LIMIT_KIB: f64 = 2048.0;

/// The outbound row of ours on `net` at `mtu`.
fn out<'a>(n: &'a Network, net: &str, mtu: u32) -> Option<&'a NetSeries> {
    n.outbound
        .iter()
        .find(|s| s.run.who == "ours" && s.net == net && s.mtu == mtu)
}

/// The inbound row on `net` through `pd`.
fn inb<'a>(n: &'a Network, net: &str, pd: &str) -> Option<&'a NetSeries> {
    n.inbound
        .iter()
        .find(|s| s.net == net && s.port_driver == pd)
}

fn rate(s: Option<&NetSeries>) -> Option<f64> {
    s.and_then(NetSeries::rate)
}

fn cpu(s: Option<&NetSeries>) -> Option<f64> {
    s.and_then(NetSeries::cpu)
}

/// The median wall time of ours in the startup row labelled `label`.
fn startup_wall(rows: &[TimedRow], label: &str) -> Option<f64> {
    let s = rows
        .iter()
        .find(|r| r.label == label && r.what.is_none())?
        .series
        .iter()
        .find(|s| s.who == "ours")
        .filter(|s| s.ok())?;
    median(&Series::walls(s))
}

fn verdict(met: bool) -> Verdict {
    if met { Verdict::Met } else { Verdict::NotMet }
}

/// Issue 12's startup target from the startup rows: ours with gvisor-tap-vsock below ours with
/// slirp4netns.
pub(super) fn usernet_startup_target(rows: &[TimedRow]) -> (String, String, Verdict) {
    let (a, b) = (
        startup_wall(rows, STARTUP_USERNET),
        startup_wall(rows, STARTUP_SLIRP),
    );
    (
        format!("startup `{STARTUP_USERNET}` below `{STARTUP_SLIRP}` (ours, wall)"),
        match (a, b) {
            (Some(a), Some(b)) => format!("{a:.1} ms vs {b:.1} ms ({})", ratio(Some(a), Some(b))),
            _ => "not both".into(),
        },
        match (a, b) {
            (Some(a), Some(b)) => verdict(a < b),
            _ => Verdict::NotMeasured,
        },
    )
}

/// Issue 12's targets of the network part as `(target, measured, verdict)`.
pub(super) fn network_targets(n: &Network) -> Vec<(String, String, Verdict)> {
    let not = |why: &str| (why.to_string(), Verdict::NotMeasured);
    let mut v = Vec::new();
    for (mtu, times) in [(MTUS[0], 5.0), (MTUS[1], 2.0)] {
        let o = rate(out(n, USERNET, mtu));
        let s = rate(out(n, "slirp4netns", mtu));
        let p = rate(out(n, "pasta", mtu));
        let (m, verdict) = match (o, s, p) {
            (Some(o), Some(s), Some(p)) if s > 0.0 && p > 0.0 => (
                format!("{:.2}× slirp4netns, {:.2}× pasta", o / s, o / p),
                verdict(o >= times * s && o > p),
            ),
            _ => not("not for all three drivers"),
        };
        v.push((
            format!("namespace → host TCP at MTU {mtu}: {USERNET} ≥ {times}× slirp4netns and above pasta"),
            m,
            verdict,
        ));
    }
    // Ours inbound is our own port driver when it exists, else builtin on our network.
    let own = inb(n, USERNET, USERNET).filter(|s| s.ok());
    let (ours_in, which) = match own {
        Some(s) => (Some(s), format!("--port-driver={USERNET}")),
        None => (
            inb(n, USERNET, "builtin"),
            match inb(n, USERNET, USERNET).and_then(|s| s.skipped.as_deref()) {
                Some(why) => format!("--port-driver=builtin; {why}"),
                None => "--port-driver=builtin".into(),
            },
        ),
    };
    let slirp_in = rate(inb(n, "slirp4netns", "slirp4netns"));
    v.push((
        format!("host → namespace TCP with --net={USERNET} ≥ 2× --port-driver=slirp4netns"),
        match (rate(ours_in), slirp_in) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}× ({which})", a / b),
            _ => "not on both".into(),
        },
        match (rate(ours_in), slirp_in) {
            (Some(a), Some(b)) if b > 0.0 => verdict(a >= 2.0 * b),
            _ => Verdict::NotMeasured,
        },
    ));
    let cpus: Vec<Option<(f64, f64)>> = MTUS
        .iter()
        .map(
            |&m| match (cpu(out(n, USERNET, m)), cpu(out(n, "slirp4netns", m))) {
                (Some(a), Some(b)) if b > 0.0 => Some((a, b)),
                _ => None,
            },
        )
        .collect();
    v.push((
        format!("CPU per GB namespace → host: {USERNET} below slirp4netns (both MTUs)"),
        if cpus.iter().all(Option::is_some) {
            cpus.iter()
                .zip(MTUS)
                .filter_map(|(c, m)| c.map(|(a, b)| format!("{:.2}× at MTU {m}", a / b)))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "not on both".into()
        },
        if cpus.iter().all(Option::is_some) {
            verdict(cpus.iter().flatten().all(|(a, b)| a < b))
        } else {
            Verdict::NotMeasured
        },
    ));
    let rss: Vec<f64> = n
        .idle
        .samples
        .iter()
        .map(|i| i.parent_rss_kib as f64)
        .collect();
    let rss = median(&rss).filter(|_| n.idle.error.is_none());
    v.push((
        format!("idle parent RSS with --net={USERNET} ≤ 2 MiB"),
        rss.map_or("–".into(), |k| mib(k as u64)),
        rss.map_or(Verdict::NotMeasured, |k| verdict(k <= IDLE_LIMIT_KIB)),
    ));
    v
}

/// The first column: who runs which driver.
fn label(s: &NetSeries) -> String {
    let who = if s.run.who == "reference" {
        "reference"
    } else {
        "ours"
    };
    if s.port_driver.is_empty() {
        format!("{who}, --net={}", s.net)
    } else {
        format!("{who}, --net={} --port-driver={}", s.net, s.port_driver)
    }
}

/// A skipped or failed row's cell, or `None` for a row with numbers.
fn broken(s: &NetSeries, what: &str, notes: &mut Vec<String>) -> Option<String> {
    if let Some(why) = &s.skipped {
        return Some(format!("skipped: {why}"));
    }
    let e = s.run.error.as_ref()?;
    let n = note(notes, format!("{what} {}: {e}", label(s)));
    Some(format!("failed [{n}]"))
}

impl Report {
    fn outbound_table(&self, notes: &mut Vec<String>) -> Table {
        let n = &self.network;
        let mut t = Table::new(&[
            "rootlesskit, network",
            "MTU",
            "Gbps",
            "÷ slirp4netns",
            "÷ pasta",
            "CPU s per GB",
            "CPU ÷ slirp4netns",
            "of it in the kernel",
            "CPU of",
        ])
        .left(8);
        for s in &n.outbound {
            let mut row = vec![label(s), s.mtu.to_string()];
            if let Some(cell) = broken(s, "namespace → host", notes) {
                row.push(cell);
                t.row(row);
                continue;
            }
            let (sl, pa) = (out(n, "slirp4netns", s.mtu), out(n, "pasta", s.mtu));
            row.extend([
                med_range(&s.run.rates, 2),
                ratio(s.rate(), rate(sl)),
                ratio(s.rate(), rate(pa)),
                med_range(&s.run.cpu_per_gb, 3),
                ratio(s.cpu(), cpu(sl)),
                median(&s.run.kernel_pct).map_or("–".into(), |k| format!("{k:.0}%")),
                s.counted.join(" + "),
            ]);
            t.row(row);
        }
        t
    }

    fn inbound_table(&self, notes: &mut Vec<String>) -> Table {
        let n = &self.network;
        let base = inb(n, "slirp4netns", "slirp4netns");
        let mut t = Table::new(&[
            "rootlesskit, network and port driver",
            "Gbps",
            "÷ slirp4netns port driver",
            "CPU s per GB",
            "CPU ÷ slirp4netns port driver",
            "of it in the kernel",
            "CPU of",
        ])
        .left(6);
        for s in &n.inbound {
            let mut row = vec![label(s)];
            if let Some(cell) = broken(s, "host → namespace", notes) {
                row.push(cell);
                t.row(row);
                continue;
            }
            row.extend([
                med_range(&s.run.rates, 2),
                ratio(s.rate(), rate(base)),
                med_range(&s.run.cpu_per_gb, 3),
                ratio(s.cpu(), cpu(base)),
                median(&s.run.kernel_pct).map_or("–".into(), |k| format!("{k:.0}%")),
                s.counted.join(" + "),
            ]);
            t.row(row);
        }
        t
    }

    fn net_conns_table(&self, notes: &mut Vec<String>) -> Table {
        let n = &self.network;
        let base = n.conns.iter().find(|s| s.net == "slirp4netns");
        let mut t = Table::new(&[
            "rootlesskit, network",
            "connections/s",
            "÷ slirp4netns",
            "p50 ms",
            "p99 ms",
        ]);
        for s in &n.conns {
            let mut row = vec![label(s)];
            if let Some(cell) = broken(s, "outbound connections", notes) {
                row.push(cell);
                t.row(row);
                continue;
            }
            let ms = |p: f64| s.run.latency(p).map_or("–".into(), |v| format!("{v:.3}"));
            row.extend([
                med_range(&s.run.rates, 0),
                ratio(s.rate(), rate(base)),
                ms(50.0),
                ms(99.0),
            ]);
            t.row(row);
        }
        t
    }

    fn usernet_idle_table(&self, notes: &mut Vec<String>) -> Table {
        let s = &self.network.idle;
        let mut t = Table::new(&[&format!("idle, `--net={USERNET} sleep 30`"), "ours"]);
        let failed = s.error.as_ref().map(|e| {
            let n = note(notes, format!("idle --net={USERNET}: {e}"));
            format!("failed [{n}]")
        });
        let metrics: [(&str, IdleMetric); 3] = [
            ("parent VmRSS", |i| Some(i.parent_rss_kib)),
            ("tree Pss (sum)", |i| i.tree_pss_kib),
            ("processes in the tree", |i| Some(i.processes as u64)),
        ];
        for (k, (name, f)) in metrics.iter().enumerate() {
            let v: Option<Vec<f64>> = s.samples.iter().map(|i| f(i).map(|x| x as f64)).collect();
            let cell = match (&failed, v.as_deref().and_then(median)) {
                (Some(f), _) => f.clone(),
                (None, None) => "–".into(),
                (None, Some(x)) if k == 2 => format!("{x:.0}"),
                (None, Some(x)) => mib(x as u64),
            };
            t.row(vec![name.to_string(), cell]);
        }
        t
    }

    /// The network section's text for the terminal.
    pub(super) fn network_text(&self, notes: &mut Vec<String>) -> String {
        let n = &self.network;
        let mut s = String::new();
        match &n.iperf_skipped {
            Some(why) => {
                let _ = writeln!(s, "\nnetwork throughput: skipped, {why}");
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nnamespace → host TCP (iperf3 inside to the host's 127.0.0.1 through the gateway), median (min–max) of {NET_ROUNDS} runs of {NET_SECONDS} s"
                );
                s.push_str(&self.outbound_table(notes).text());
                let _ = writeln!(
                    s,
                    "\nhost → namespace TCP (iperf3 on the host to a published port), the same way"
                );
                s.push_str(&self.inbound_table(notes).text());
            }
        }
        let _ = writeln!(
            s,
            "\noutbound connections (inside to an echo server on the host), {NET_ROUNDS} rounds of {OUT_CONNS}"
        );
        s.push_str(&self.net_conns_table(notes).text());
        let _ = writeln!(s, "\nidle with --net={USERNET}, median of {RSS_RUNS}");
        s.push_str(&self.usernet_idle_table(notes).text());
        s
    }

    /// The network section of BENCHMARKS.md.
    pub(super) fn network_markdown(&self, notes: &mut Vec<String>) -> String {
        let n = &self.network;
        let mut s = String::from("\n## Network drivers (issue 12)\n\n");
        let _ = writeln!(
            s,
            "slirp4netns, pasta and our in-process `--net={USERNET}` side by side under our rootlesskit \
             (Debian's rootlesskit 1.1.0 has neither pasta nor {USERNET}; one slirp4netns row runs under it \
             to show that the rootlesskit around slirp4netns changes nothing). Each run starts a fresh \
             rootlesskit as the user (as in Method, `{STATE_DIR}` a fresh directory); {NET_ROUNDS} rounds, \
             every round runs every row once, the order reversed every other round. \"CPU s per GB\" is \
             `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`) of the processes that move the bytes, \
             read just before and just after the transfer, over `end.sum_received.bytes` / 10⁹: the \
             rootlesskit parent (where {USERNET} does all its work) plus its slirp4netns or pasta process; \
             the last column names them.\n"
        );
        let commands = |v: &[NetSeries]| {
            v.iter()
                .map(|x| format!("{}: {}", label(x), x.run.argv.join(" ")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        match &n.iperf_skipped {
            Some(why) => {
                let _ = writeln!(s, "Throughput: skipped, {why}.\n");
            }
            None => {
                let _ = writeln!(
                    s,
                    "### Namespace → host TCP\n\n`iperf3 -s -1 -B 127.0.0.1 -p $PORT` on the host as the user; \
                     inside, the target prints a line once the network is up, the CPU is read, then it runs \
                     `iperf3 -c GATEWAY -p $PORT -t {NET_SECONDS} -J` to the address that reaches the host's \
                     loopback (slirp4netns and pasta: 10.0.2.2, {USERNET}: 10.0.2.1), prints a line, the CPU is \
                     read again. Gbps is `end.sum_received.bits_per_second`, median (min–max) of {NET_ROUNDS}. \
                     The runs:\n\n```\n{}\n```\n",
                    commands(&n.outbound)
                );
                s.push_str(&self.outbound_table(notes).markdown());
                s.push_str(
                    "\nDebian 12's pasta (2023) is erratic in this direction on this machine: the rounds of \
                     one run have spanned 0.05 to 3.4 Gbps at MTU 1500, with our binaries old and new \
                     alike, so the \"÷ pasta\" ratios move by up to ten times between runs; slirp4netns \
                     and gvisor-tap-vsock stay within about 10%.\n",
                );
                let _ = writeln!(
                    s,
                    "\n### Host → namespace TCP\n\n`iperf3 -s` inside, published as `127.0.0.1:$PORT` by the \
                     port driver; `{}` on the host as the user; the rootlesskit waits until the host port and \
                     the same port inside listen (inside as on the host, because pasta's `implicit` \
                     forwards a port that listens inside to the same one on the host and ignores `-p`). Each network's own MTU (65520 for all three). The builtin driver \
                     connects inside the namespace through its loopback, so it does not depend on the network \
                     driver; pasta forwards by itself (`implicit`). The runs:\n\n```\n{}\n```\n",
                    inbound_client_argv("$PORT").join(" "),
                    commands(&n.inbound)
                );
                s.push_str(&self.inbound_table(notes).markdown());
            }
        }
        let _ = writeln!(
            s,
            "\n### Outbound connections\n\nInside, `cargo xtask echo-client GATEWAY $PORT {OUT_CONNS}` (this \
             xtask binary, staged): {OUT_CONNS_WARMUP} untimed then {OUT_CONNS} timed sequential connections \
             to an echo thread of xtask on the host's 127.0.0.1, each connect, one byte written and read back, \
             close. Connections/s is {OUT_CONNS} ÷ the seconds they took, median (min–max) of {NET_ROUNDS}; \
             p50 and p99 over all timed connections. The runs:\n\n```\n{}\n```\n",
            commands(&n.conns)
        );
        s.push_str(&self.net_conns_table(notes).markdown());
        let _ = writeln!(
            s,
            "\n### Idle with --net={USERNET}\n\nAs in Idle memory, {RSS_RUNS} starts of `{}`.\n",
            n.idle.argv.join(" ")
        );
        s.push_str(&self.usernet_idle_table(notes).markdown());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::forwarding::FwdSeries;
    use crate::bench::idle::{Idle, IdleSeries};
    use crate::bench::startup::Sample;

    fn row(
        who: &'static str,
        net: &'static str,
        pd: &'static str,
        mtu: u32,
        gbps: f64,
        cpu: f64,
    ) -> NetSeries {
        NetSeries {
            net,
            port_driver: pd,
            mtu,
            run: FwdSeries {
                who,
                rates: vec![gbps],
                cpu_per_gb: vec![cpu],
                ..FwdSeries::default()
            },
            ..NetSeries::default()
        }
    }

    fn startup(label: &str, wall: f64) -> TimedRow {
        TimedRow {
            label: label.into(),
            series: vec![Series {
                who: "ours",
                samples: vec![Sample {
                    wall,
                    user: 1.0,
                    sys: 1.0,
                }],
                ..Series::default()
            }],
            ..TimedRow::default()
        }
    }

    fn brief(v: &[(String, String, Verdict)]) -> Vec<(&str, Verdict)> {
        v.iter().map(|(_, m, v)| (m.as_str(), *v)).collect()
    }

    #[test]
    fn all_met() {
        let n = Network {
            outbound: vec![
                row("ours", "slirp4netns", "", 1500, 0.8, 2.0),
                row("reference", "slirp4netns", "", 1500, 0.1, 0.1),
                row("ours", "pasta", "", 1500, 3.0, 1.0),
                row("ours", USERNET, "", 1500, 4.0, 0.5),
                row("ours", "slirp4netns", "", 65520, 2.0, 1.0),
                row("ours", "pasta", "", 65520, 8.0, 0.4),
                row("ours", USERNET, "", 65520, 10.0, 0.2),
            ],
            inbound: vec![
                row("ours", "slirp4netns", "slirp4netns", 0, 1.0, 1.0),
                row("ours", USERNET, "builtin", 0, 3.0, 1.0),
                row("ours", USERNET, USERNET, 0, 2.5, 1.0),
            ],
            idle: IdleSeries {
                samples: vec![Idle {
                    parent_rss_kib: 1800,
                    ..Idle::default()
                }],
                ..IdleSeries::default()
            },
            ..Network::default()
        };
        let got = network_targets(&n);
        assert_eq!(
            got[0].0,
            "namespace → host TCP at MTU 1500: gvisor-tap-vsock ≥ 5× slirp4netns and above pasta"
        );
        assert_eq!(
            brief(&got),
            [
                ("5.00× slirp4netns, 1.33× pasta", Verdict::Met),
                ("5.00× slirp4netns, 1.25× pasta", Verdict::Met),
                ("2.50× (--port-driver=gvisor-tap-vsock)", Verdict::Met),
                ("0.25× at MTU 1500, 0.20× at MTU 65520", Verdict::Met),
                ("1.76 MiB", Verdict::Met),
            ]
        );
    }

    #[test]
    fn startup_target() {
        let check = |rows: &[TimedRow], expect: (&str, Verdict)| {
            let (_, m, v) = usernet_startup_target(rows);
            assert_eq!((m.as_str(), v), expect);
        };
        check(
            &[startup(STARTUP_USERNET, 20.0), startup(STARTUP_SLIRP, 80.0)],
            ("20.0 ms vs 80.0 ms (0.25×)", Verdict::Met),
        );
        check(
            &[startup(STARTUP_SLIRP, 80.0), startup(STARTUP_USERNET, 90.0)],
            ("90.0 ms vs 80.0 ms (1.12×)", Verdict::NotMet),
        );
        check(
            &[startup(STARTUP_USERNET, 20.0)],
            ("not both", Verdict::NotMeasured),
        );
        let mut failed = startup(STARTUP_SLIRP, 80.0);
        failed.series[0].error = Some("exit 1".into());
        check(
            &[startup(STARTUP_USERNET, 20.0), failed],
            ("not both", Verdict::NotMeasured),
        );
    }

    #[test]
    fn missed_and_missing() {
        let mut own = row("ours", USERNET, USERNET, 0, 0.0, 0.0);
        own.run.rates.clear();
        own.skipped = Some("--port-driver=gvisor-tap-vsock: not supported yet".into());
        let mut failed = row("ours", "pasta", "", 65520, 8.0, 0.4);
        failed.run.error = Some("exit 1".into());
        let n = Network {
            outbound: vec![
                row("ours", "slirp4netns", "", 1500, 1.0, 2.0),
                row("ours", "pasta", "", 1500, 3.0, 1.0),
                // 4.9× slirp4netns: not 5×.
                row("ours", USERNET, "", 1500, 4.9, 2.0),
                row("ours", "slirp4netns", "", 65520, 2.0, 1.0),
                failed,
                row("ours", USERNET, "", 65520, 10.0, 0.2),
            ],
            inbound: vec![
                row("ours", "slirp4netns", "slirp4netns", 0, 2.0, 1.0),
                row("ours", USERNET, "builtin", 0, 3.0, 1.0),
                own,
            ],
            idle: IdleSeries {
                samples: vec![Idle {
                    parent_rss_kib: 2100,
                    ..Idle::default()
                }],
                ..IdleSeries::default()
            },
            ..Network::default()
        };
        assert_eq!(
            brief(&network_targets(&n)),
            [
                ("4.90× slirp4netns, 1.63× pasta", Verdict::NotMet),
                ("not for all three drivers", Verdict::NotMeasured),
                (
                    "1.50× (--port-driver=builtin; --port-driver=gvisor-tap-vsock: not supported yet)",
                    Verdict::NotMet
                ),
                ("1.00× at MTU 1500, 0.20× at MTU 65520", Verdict::NotMet),
                ("2.05 MiB", Verdict::NotMet),
            ]
        );
        let none = network_targets(&Network::default());
        assert!(none.iter().all(|(_, _, v)| *v == Verdict::NotMeasured));
        assert_eq!(none.len(), 5);
    }

    #[test]
    fn partial_report_has_only_its_parts() {
        let report = Report {
            only: Some(vec!["network"]),
            ..Report::default()
        };
        let md = report.markdown();
        assert!(md.contains("\n## Network drivers (issue 12)\n"));
        assert!(md.contains("A partial run (`--only network`)"));
        for absent in [
            "## Startup",
            "## Idle memory",
            "## Port forwarding",
            "## Binary sizes",
        ] {
            assert!(!md.contains(absent), "{absent}");
        }
        let text = report.text();
        assert!(text.contains("namespace → host TCP"));
        assert!(!text.contains("measuring sticks"));
    }

    #[test]
    fn tables_show_skips_and_failures() {
        let mut skipped = row("ours", "pasta", "", 1500, 0.0, 0.0);
        skipped.skipped = Some("pasta is not installed".into());
        let mut failed = row("ours", USERNET, "", 1500, 0.0, 0.0);
        failed.run.error = Some("exit 1: boom".into());
        let mut ok = row("ours", "slirp4netns", "", 1500, 0.8, 2.0);
        ok.counted = vec!["rootlesskit".into(), "slirp4netns".into()];
        ok.run.kernel_pct = vec![60.0];
        let report = Report {
            network: Network {
                outbound: vec![ok, skipped, failed],
                ..Network::default()
            },
            ..Report::default()
        };
        let mut notes = Vec::new();
        let t = report.outbound_table(&mut notes);
        assert_eq!(
            t.rows,
            [
                vec![
                    "ours, --net=slirp4netns",
                    "1500",
                    "0.80 (0.80–0.80)",
                    "1.00×",
                    "–",
                    "2.000 (2.000–2.000)",
                    "1.00×",
                    "60%",
                    "rootlesskit + slirp4netns"
                ],
                vec![
                    "ours, --net=pasta",
                    "1500",
                    "skipped: pasta is not installed"
                ],
                vec!["ours, --net=gvisor-tap-vsock", "1500", "failed [1]"],
            ]
        );
        assert_eq!(
            notes,
            ["namespace → host ours, --net=gvisor-tap-vsock: exit 1: boom"]
        );
    }
}
