//! The network drivers side by side (issue 12): namespace → host TCP through the gateway for
//! slirp4netns, pasta and our in-process gvisor-tap-vsock at two MTUs, host → namespace through
//! the port drivers on each, outbound connections/s, the forwarder's CPU per GB, and the idle
//! parent with gvisor-tap-vsock.
//!
//! Debian's rootlesskit 1.1.0 has neither pasta nor gvisor-tap-vsock, so these rows compare
//! drivers under our rootlesskit; one slirp4netns row under the reference shows that the
//! rootlesskit around slirp4netns does not matter.

use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Result;

use super::STATE_DIR;
use super::forwarding::{
    CLK_TCK, FwdSeries, PORT, Server, conn_round_of, cpu_ticks, free_port, host_echo_server,
    iperf_received, proc_parents,
};
use super::idle::{IdleSeries, descendants, idle_once, stop};
use super::runner::{Runner, describe_status, last_line, on_path, reader, run_capture};
use super::startup::{Side, progress, progress_done};
use super::{RSS_RUNS, START_TIMEOUT};

/// Rounds of every network measurement; each round runs every row once.
pub(super) const NET_ROUNDS: usize = 3;
/// Seconds each iperf3 client sends.
pub(super) const NET_SECONDS: u32 = 3;
/// The MTUs of the namespace → host rows.
pub(super) const MTUS: [u32; 2] = [1500, 65520];
/// The MTU at which the reference runs its one slirp4netns row.
pub(super) const REFERENCE_MTU: u32 = 1500;
/// Timed outbound connections per round, after [`OUT_CONNS_WARMUP`] untimed ones.
pub(super) const OUT_CONNS: usize = 1000;
pub(super) const OUT_CONNS_WARMUP: usize = 50;
/// The line the outbound target prints once the network is up, and the one after iperf3.
const READY: &str = "rkrs-ready";
const DONE: &str = "rkrs-done";
/// Our in-process network, the subject of these rows.
pub(super) const USERNET: &str = "gvisor-tap-vsock";

/// A network driver: its `--net` name, the address inside that reaches the host's 127.0.0.1,
/// and the program it needs.
pub(super) struct Driver {
    pub(super) net: &'static str,
    pub(super) host: &'static str,
    pub(super) needs: Option<&'static str>,
}

/// slirp4netns and pasta map their gateway (net+2) to the host's loopback unless
/// `--disable-host-loopback` (pasta: its default `--map-host-loopback`, which rootlesskit closes
/// with `--no-map-gw`); ours answers as the host on its gateway, net+1, as upstream v3.
pub(super) const DRIVERS: &[Driver] = &[
    Driver {
        net: "slirp4netns",
        host: "10.0.2.2",
        needs: Some("slirp4netns"),
    },
    Driver {
        net: "pasta",
        host: "10.0.2.2",
        needs: Some("pasta"),
    },
    Driver {
        net: USERNET,
        host: "10.0.2.1",
        needs: None,
    },
];

/// The port drivers measured on each network, in order; pasta's own is `implicit`.
pub(super) fn port_drivers(net: &str) -> &'static [&'static str] {
    match net {
        "slirp4netns" => &["builtin", "slirp4netns"],
        "pasta" => &["implicit"],
        USERNET => &["builtin", USERNET],
        _ => &[],
    }
}

/// One row: who runs it, on which network, and its rounds.
#[derive(Debug, Default)]
pub(super) struct NetSeries {
    pub(super) net: &'static str,
    /// Inbound rows: the port driver.
    pub(super) port_driver: &'static str,
    /// Outbound rows: the namespace's MTU.
    pub(super) mtu: u32,
    /// `who` is `ours` or `reference`; `argv` has `$STATE_DIR` and `$PORT` (and `$ECHO`).
    pub(super) run: FwdSeries,
    /// Why the row never ran (a program missing, a driver not built yet).
    pub(super) skipped: Option<String>,
    /// The processes whose CPU was counted, by name, from the first round.
    pub(super) counted: Vec<String>,
}

impl NetSeries {
    pub(super) fn ok(&self) -> bool {
        self.skipped.is_none() && self.run.ok()
    }
    pub(super) fn rate(&self) -> Option<f64> {
        self.run.rate().filter(|_| self.ok())
    }
    pub(super) fn cpu(&self) -> Option<f64> {
        self.run.cpu().filter(|_| self.ok())
    }
}

/// What the network phase measured.
#[derive(Debug, Default)]
pub(super) struct Network {
    /// Why no throughput row ran (no iperf3).
    pub(super) iperf_skipped: Option<String>,
    pub(super) outbound: Vec<NetSeries>,
    pub(super) inbound: Vec<NetSeries>,
    pub(super) conns: Vec<NetSeries>,
    /// Idle tree of ours with `--net=gvisor-tap-vsock`.
    pub(super) idle: IdleSeries,
}

/// `rootlesskit --state-dir=STATE --net=NET --mtu=MTU sh -c SCRIPT`: the iperf3 client inside,
/// started when told (a line on stdin) so that the CPU read before it starts covers it alone.
pub(super) fn outbound_argv(
    rootlesskit: &str,
    state: &str,
    net: &str,
    mtu: u32,
    host: &str,
    port: &str,
) -> Vec<String> {
    let script = format!(
        "echo {READY}; read go; iperf3 -c {host} -p {port} -t {NET_SECONDS} -J; echo; echo {DONE}; read end"
    );
    vec![
        rootlesskit.into(),
        format!("--state-dir={state}"),
        format!("--net={net}"),
        format!("--mtu={mtu}"),
        "sh".into(),
        "-c".into(),
        script,
    ]
}

/// `rootlesskit --state-dir=STATE --net=NET --port-driver=PD -p 127.0.0.1:PORT:PORT/tcp iperf3 -s
/// -p PORT`: the same port inside, because pasta's `implicit` driver ignores `-p` and forwards
/// every port that listens inside to the same one on the host.
pub(super) fn inbound_argv(
    rootlesskit: &str,
    state: &str,
    net: &str,
    port_driver: &str,
    port: &str,
) -> Vec<String> {
    vec![
        rootlesskit.into(),
        format!("--state-dir={state}"),
        format!("--net={net}"),
        format!("--port-driver={port_driver}"),
        "-p".into(),
        format!("127.0.0.1:{port}:{port}/tcp"),
        "iperf3".into(),
        "-s".into(),
        "-p".into(),
        port.into(),
    ]
}

/// `rootlesskit --state-dir=STATE --net=NET ECHO echo-client HOST PORT N`.
pub(super) fn conns_argv(
    rootlesskit: &str,
    state: &str,
    net: &str,
    echo: &str,
    host: &str,
    port: &str,
) -> Vec<String> {
    vec![
        rootlesskit.into(),
        format!("--state-dir={state}"),
        format!("--net={net}"),
        echo.into(),
        "echo-client".into(),
        host.into(),
        port.into(),
        OUT_CONNS.to_string(),
    ]
}

/// `iperf3 -c 127.0.0.1 -p PORT -t SECONDS -J`: the host's client of the inbound rows.
pub(super) fn inbound_client_argv(port: &str) -> Vec<String> {
    [
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        port,
        "-t",
        &NET_SECONDS.to_string(),
        "-J",
    ]
    .map(String::from)
    .to_vec()
}

/// Whether a process named `comm` moves the namespace's packets: slirp4netns, or pasta (which
/// Debian's passt runs as `passt.avx2` where the CPU has AVX2).
pub(super) fn is_forwarder(comm: &str) -> bool {
    ["slirp4netns", "pasta", "passt"]
        .iter()
        .any(|p| comm.starts_with(p))
}

/// An error without the exit status in front (`exit 1: --x: not supported yet` → `--x: not
/// supported yet`), for a skip reason.
pub(super) fn without_status(e: &str) -> &str {
    match e.split_once(": ") {
        Some((st, rest)) if st.starts_with("exit ") || st.starts_with("killed by") => rest,
        _ => e,
    }
}

/// `cargo xtask echo-client HOST PORT N`: what it prints, `SECONDS MS MS ...` (the seconds the
/// `n` timed connections took, then each one's ms).
pub(super) fn conns_line(secs: f64, lat: &[f64]) -> String {
    let mut s = format!("{secs:.6}");
    for l in lat {
        s.push_str(&format!(" {l:.4}"));
    }
    s
}

/// Reads [`conns_line`] back from the last non-empty line of `text`.
pub(super) fn parse_conns_line(text: &str) -> Option<(f64, Vec<f64>)> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let mut nums = line
        .split_whitespace()
        .map(|w| w.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0));
    let secs = nums.next()??;
    let lat: Option<Vec<f64>> = nums.collect();
    let lat = lat?;
    (secs > 0.0 && !lat.is_empty()).then_some((secs, lat))
}

/// `cargo xtask echo-client HOST PORT N`: N sequential connections to an echo server, printed
/// as [`conns_line`].
pub(crate) fn echo_client(host: &str, port: u16, n: usize) -> Result<()> {
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("invalid address \"{host}\""))?;
    let (secs, lat) = conn_round_of(std::net::SocketAddr::new(ip, port), OUT_CONNS_WARMUP, n)?;
    println!("{}", conns_line(secs, &lat));
    Ok(())
}

/// The rows, in the order they run and are shown.
fn plan(sides: &[Side], echo: &str) -> Network {
    let ours = sides.iter().find(|s| s.who == "ours");
    let reference = sides.iter().find(|s| s.who == "reference");
    let path = |s: &Side| s.rootlesskit.to_string_lossy().into_owned();
    let missing = |d: &Driver| {
        d.needs
            .filter(|p| !on_path(p))
            .map(|p| format!("{p} is not installed"))
    };
    let mut n = Network::default();
    let Some(ours) = ours else {
        return n;
    };
    for mtu in MTUS {
        for d in DRIVERS {
            let argv = outbound_argv(&path(ours), STATE_DIR, d.net, mtu, d.host, PORT);
            n.outbound.push(NetSeries {
                net: d.net,
                mtu,
                run: FwdSeries::new("ours", argv),
                skipped: missing(d),
                ..NetSeries::default()
            });
            if let (Some(r), "slirp4netns", REFERENCE_MTU) = (reference, d.net, mtu) {
                let argv = outbound_argv(&path(r), STATE_DIR, d.net, mtu, d.host, PORT);
                n.outbound.push(NetSeries {
                    net: d.net,
                    mtu,
                    run: FwdSeries::new("reference", argv),
                    skipped: missing(d),
                    ..NetSeries::default()
                });
            }
        }
    }
    for d in DRIVERS {
        for pd in port_drivers(d.net) {
            let argv = inbound_argv(&path(ours), STATE_DIR, d.net, pd, PORT);
            n.inbound.push(NetSeries {
                net: d.net,
                port_driver: pd,
                run: FwdSeries::new("ours", argv),
                skipped: missing(d),
                ..NetSeries::default()
            });
        }
        let argv = conns_argv(&path(ours), STATE_DIR, d.net, echo, d.host, PORT);
        n.conns.push(NetSeries {
            net: d.net,
            run: FwdSeries::new("ours", argv),
            skipped: missing(d),
            ..NetSeries::default()
        });
    }
    n.idle = IdleSeries {
        who: "ours",
        argv: vec![
            path(ours),
            format!("--state-dir={STATE_DIR}"),
            format!("--net={USERNET}"),
            "sleep".into(),
            "30".into(),
        ],
        ..IdleSeries::default()
    };
    n
}

/// The network phase: every row [`NET_ROUNDS`] times, the rows' order reversed every other
/// round, then the idle starts.
pub(super) fn network(runner: &Runner, sides: &[Side], state_root: &Path, echo: &str) -> Network {
    let mut n = plan(sides, echo);
    let iperf = on_path("iperf3");
    if !iperf {
        n.iperf_skipped = Some("iperf3 is not installed".into());
    }
    let rootlesskit = |who: &str| {
        sides
            .iter()
            .find(|s| s.who == who)
            .map(|s| s.rootlesskit.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let host_of = |net: &str| DRIVERS.iter().find(|d| d.net == net).map_or("", |d| d.host);
    if iperf {
        rounds(
            "namespace → host round",
            &mut n.outbound,
            state_root,
            "out",
            |s, state| {
                outbound_once(
                    runner,
                    s.run.who,
                    &outbound_argv(
                        &rootlesskit(s.run.who),
                        &state.to_string_lossy(),
                        s.net,
                        s.mtu,
                        host_of(s.net),
                        "{PORT}",
                    ),
                )
            },
        );
        rounds(
            "host → namespace round",
            &mut n.inbound,
            state_root,
            "in",
            |s, state| inbound_once(runner, s, &rootlesskit(s.run.who), state),
        );
    }
    let host_echo = host_echo_server();
    rounds(
        "outbound connection round",
        &mut n.conns,
        state_root,
        "conn",
        |s, state| {
            let addr = host_echo.as_ref().map_err(Clone::clone)?;
            let argv = conns_argv(
                &rootlesskit(s.run.who),
                &state.to_string_lossy(),
                s.net,
                echo,
                host_of(s.net),
                &addr.port().to_string(),
            );
            conns_once(runner, s.run.who, &argv)
        },
    );
    for r in 0..RSS_RUNS {
        progress("gvisor-tap-vsock idle run", r + 1, RSS_RUNS);
        if n.idle.error.is_some() {
            break;
        }
        let state = state_root.join(format!("usernet-idle-{r}"));
        let argv: Vec<String> = n
            .idle
            .argv
            .iter()
            .map(|a| a.replace(STATE_DIR, &state.to_string_lossy()))
            .collect();
        match idle_once(runner, "ours", &argv, &state) {
            Ok(sample) => n.idle.samples.push(sample),
            Err(e) => {
                println!("\nbench: idle {USERNET} failed: {e}");
                n.idle.error = Some(e);
            }
        }
        let _ = fs::remove_dir_all(&state);
    }
    progress_done();
    n
}

/// One measurement's outcome: the rate (Gbps or connections/s), then for throughput the bytes,
/// the CPU and kernel seconds of the counted processes and their names, for connections each
/// connection's ms.
pub(super) struct Outcome {
    rate: f64,
    bytes: f64,
    cpu: Option<(f64, f64)>,
    counted: Vec<String>,
    latency_ms: Vec<f64>,
}

/// Runs every live row once per round; a row that fails stops, one whose driver is not built
/// yet (its error says "not supported yet") is skipped with that reason.
fn rounds(
    what: &str,
    rows: &mut [NetSeries],
    state_root: &Path,
    tag: &str,
    mut once: impl FnMut(&NetSeries, &Path) -> Result<Outcome>,
) {
    if rows.iter().all(|s| s.skipped.is_some()) {
        return;
    }
    for round in 0..NET_ROUNDS {
        progress(what, round + 1, NET_ROUNDS);
        let n = rows.len();
        for k in 0..n {
            let i = if round % 2 == 1 { n - 1 - k } else { k };
            let s = &mut rows[i];
            if s.skipped.is_some() || s.run.error.is_some() {
                continue;
            }
            let state = state_root.join(format!("{tag}-{i}-{round}"));
            let result = once(s, &state);
            let _ = fs::remove_dir_all(&state);
            match result {
                Ok(o) => {
                    s.run.rates.push(o.rate);
                    s.run.latency_ms.extend(o.latency_ms);
                    if let Some((cpu, kernel)) = o.cpu.filter(|_| o.bytes > 0.0) {
                        s.run.cpu_per_gb.push(cpu / (o.bytes / 1e9));
                        if cpu > 0.0 {
                            s.run.kernel_pct.push(100.0 * kernel / cpu);
                        }
                    }
                    if s.counted.is_empty() {
                        s.counted = o.counted;
                    }
                }
                Err(e) if e.contains("not supported yet") => {
                    println!("\nbench: {what}: skipping {}: {e}", row_name(s));
                    s.skipped = Some(without_status(&e).to_string());
                }
                Err(e) => {
                    println!("\nbench: {what}: {} failed: {e}", row_name(s));
                    s.run.error = Some(e);
                }
            }
        }
    }
    progress_done();
}

/// `ours --net=pasta` (with `--port-driver=...` or `--mtu=...`), for messages.
pub(super) fn row_name(s: &NetSeries) -> String {
    let mut v = format!("{} --net={}", s.run.who, s.net);
    if !s.port_driver.is_empty() {
        v.push_str(&format!(" --port-driver={}", s.port_driver));
    }
    if s.mtu != 0 {
        v.push_str(&format!(" --mtu={}", s.mtu));
    }
    v
}

/// The rootlesskit parent and its slirp4netns or pasta: the processes that move the bytes.
fn forwarders(root: u32) -> (Vec<u32>, Vec<String>) {
    let mut pids = vec![root];
    let mut names = vec!["rootlesskit".to_string()];
    for pid in descendants(root, &proc_parents()).into_iter().skip(1) {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if is_forwarder(comm) {
            pids.push(pid);
            names.push(comm.to_string());
        }
    }
    (pids, names)
}

/// `utime + stime` and `stime` summed over `pids`, in ticks.
fn ticks(pids: &[u32]) -> Option<(u64, u64)> {
    pids.iter().try_fold((0, 0), |(u, s), &p| {
        let (a, b) = cpu_ticks(p)?;
        Some((u + a + b, s + b))
    })
}

/// CPU and kernel seconds between two [`ticks`] readings.
fn cpu_between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<(f64, f64)> {
    match (before, after) {
        (Some((bt, bk)), Some((at, ak))) if at >= bt && ak >= bk => {
            Some(((at - bt) as f64 / CLK_TCK, (ak - bk) as f64 / CLK_TCK))
        }
        _ => None,
    }
}

/// A rootlesskit whose target talks over stdin and stdout, in its own process group.
struct Talking {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Talking {
    fn start(runner: &Runner, who: &str, argv: &[String]) -> Result<Talking> {
        let mut cmd = runner.command(who, &[], argv);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let shown = crate::display(&cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let out = child.stdout.take();
        let err = reader(child.stderr.take());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            if let Some(out) = out {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Talking {
            child,
            pid,
            stdin,
            lines,
            err,
        })
    }

    /// The lines before `want`, waiting at most `timeout` for it.
    fn until(&mut self, want: &str, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim() == want => return Ok(got),
                Ok(l) => got.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no {want} within {}s", timeout.as_secs()));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self
                        .child
                        .wait()
                        .map(describe_status)
                        .unwrap_or_else(|e| e.to_string());
                    let said = self
                        .err
                        .recv_timeout(Duration::from_secs(2))
                        .unwrap_or_default();
                    return Err(format!("{st}: {}", last_line(&said)));
                }
            }
        }
    }

    fn say(&mut self, line: &str) {
        if let Some(i) = self.stdin.as_mut() {
            let _ = writeln!(i, "{line}");
            let _ = i.flush();
        }
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop(&mut self.child, self.pid);
    }
}

/// One namespace → host run: an iperf3 server on the host's 127.0.0.1, the client inside.
/// `argv` has `{PORT}` for the server's port.
fn outbound_once(runner: &Runner, who: &str, argv: &[String]) -> Result<Outcome> {
    let port = free_port()?;
    let server_argv: Vec<String> = ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p"]
        .iter()
        .map(|s| s.to_string())
        .chain([port.to_string()])
        .collect();
    let mut server = Server::start(runner, "machine", &server_argv)?;
    let result = server.wait_ready(port, None).and_then(|()| {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("{PORT}", &port.to_string()))
            .collect();
        let mut t = Talking::start(runner, who, &argv)?;
        let r = (|| {
            t.until(READY, START_TIMEOUT)?;
            let (pids, counted) = forwarders(t.pid);
            let before = ticks(&pids);
            t.say("go");
            let json = t
                .until(DONE, Duration::from_secs(u64::from(NET_SECONDS) + 30))?
                .join("\n");
            let after = ticks(&pids);
            let (bps, bytes) = iperf_received(&json)?;
            Ok(Outcome {
                rate: bps / 1e9,
                bytes,
                cpu: cpu_between(before, after),
                counted,
                latency_ms: Vec::new(),
            })
        })();
        t.stop();
        r
    });
    server.stop();
    result
}

/// One host → namespace run: iperf3 -s inside behind the row's port driver, the client on the
/// host.
fn inbound_once(
    runner: &Runner,
    s: &NetSeries,
    rootlesskit: &str,
    state: &Path,
) -> Result<Outcome> {
    let port = free_port()?;
    let argv = inbound_argv(
        rootlesskit,
        &state.to_string_lossy(),
        s.net,
        s.port_driver,
        &port.to_string(),
    );
    let mut server = Server::start(runner, s.run.who, &argv)?;
    let result = server.wait_ready(port, Some(port)).and_then(|()| {
        let (pids, counted) = forwarders(server.pid);
        let before = ticks(&pids);
        let out = run_capture(
            runner.command("machine", &[], &inbound_client_argv(&port.to_string())),
            Duration::from_secs(u64::from(NET_SECONDS) + 30),
        )?;
        let after = ticks(&pids);
        let (bps, bytes) = iperf_received(&out.stdout).map_err(|e| {
            if out.status.success() {
                e
            } else {
                format!("iperf3 client: {}: {e}", describe_status(out.status))
            }
        })?;
        Ok(Outcome {
            rate: bps / 1e9,
            bytes,
            cpu: cpu_between(before, after),
            counted,
            latency_ms: Vec::new(),
        })
    });
    server.stop();
    result
}

/// One outbound connection round: the echo client inside, the echo server a thread of xtask
/// on the host's 127.0.0.1.
fn conns_once(runner: &Runner, who: &str, argv: &[String]) -> Result<Outcome> {
    let out = run_capture(runner.command(who, &[], argv), Duration::from_secs(120))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            describe_status(out.status),
            last_line(&out.stderr)
        ));
    }
    let (secs, lat) = parse_conns_line(&out.stdout)
        .ok_or_else(|| format!("no result line in {:?}", last_line(&out.stdout)))?;
    Ok(Outcome {
        rate: lat.len() as f64 / secs,
        bytes: 0.0,
        cpu: None,
        counted: Vec::new(),
        latency_ms: lat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        assert_eq!(
            outbound_argv("/rk", "/s", "pasta", 1500, "10.0.2.2", "5201").join(" "),
            "/rk --state-dir=/s --net=pasta --mtu=1500 sh -c echo rkrs-ready; read go; \
             iperf3 -c 10.0.2.2 -p 5201 -t 3 -J; echo; echo rkrs-done; read end"
        );
        assert_eq!(
            inbound_argv("/rk", "/s", USERNET, "builtin", "$PORT").join(" "),
            "/rk --state-dir=/s --net=gvisor-tap-vsock --port-driver=builtin \
             -p 127.0.0.1:$PORT:$PORT/tcp iperf3 -s -p $PORT"
        );
        assert_eq!(
            conns_argv("/rk", "/s", USERNET, "/e", "10.0.2.1", "80").join(" "),
            "/rk --state-dir=/s --net=gvisor-tap-vsock /e echo-client 10.0.2.1 80 1000"
        );
        assert_eq!(
            inbound_client_argv("9").join(" "),
            "iperf3 -c 127.0.0.1 -p 9 -t 3 -J"
        );
        assert_eq!(port_drivers("pasta"), ["implicit"]);
        assert_eq!(port_drivers(USERNET), ["builtin", USERNET]);
        assert!(port_drivers("vpnkit").is_empty());
    }

    #[test]
    fn forwarder_names() {
        for (comm, yes) in [
            ("slirp4netns", true),
            ("pasta", true),
            ("pasta.avx2", true),
            ("passt.avx2", true),
            ("rootlesskit", false),
            ("rootlesskit-chi", false),
            ("iperf3", false),
            ("sh", false),
        ] {
            assert_eq!(is_forwarder(comm), yes, "{comm}");
        }
    }

    #[test]
    fn skip_reasons() {
        assert_eq!(
            without_status("exit 1: --port-driver=x: not supported yet"),
            "--port-driver=x: not supported yet"
        );
        assert_eq!(without_status("killed by signal 9: x: y"), "x: y");
        assert_eq!(
            without_status("no rkrs-ready within 30s"),
            "no rkrs-ready within 30s"
        );
        assert_eq!(without_status("a: b"), "a: b");
    }

    #[test]
    fn conns_lines() {
        let line = conns_line(0.5, &[0.25, 1.125]);
        assert_eq!(line, "0.500000 0.2500 1.1250");
        assert_eq!(parse_conns_line(&line), Some((0.5, vec![0.25, 1.125])));
        assert_eq!(
            parse_conns_line("warning: x\n2 1 2 3\n\n"),
            Some((2.0, vec![1.0, 2.0, 3.0]))
        );
        for bad in ["", "0.5", "0 1 2", "1 x 2", "1 -2", "1 inf", "1 NaN"] {
            assert_eq!(parse_conns_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpu_differences() {
        assert_eq!(
            cpu_between(Some((100, 40)), Some((350, 140))),
            Some((2.5, 1.0))
        );
        assert_eq!(cpu_between(Some((100, 40)), Some((90, 40))), None);
        assert_eq!(cpu_between(None, Some((1, 1))), None);
    }

    #[test]
    fn planned_rows() {
        let sides = [
            Side {
                who: "ours",
                rootlesskit: "/o/rootlesskit".into(),
            },
            Side {
                who: "reference",
                rootlesskit: "/r/rootlesskit".into(),
            },
        ];
        let n = plan(&sides, "$ECHO");
        let out: Vec<String> = n.outbound.iter().map(row_name).collect();
        assert_eq!(
            out,
            [
                "ours --net=slirp4netns --mtu=1500",
                "reference --net=slirp4netns --mtu=1500",
                "ours --net=pasta --mtu=1500",
                "ours --net=gvisor-tap-vsock --mtu=1500",
                "ours --net=slirp4netns --mtu=65520",
                "ours --net=pasta --mtu=65520",
                "ours --net=gvisor-tap-vsock --mtu=65520",
            ]
        );
        let inb: Vec<String> = n.inbound.iter().map(row_name).collect();
        assert_eq!(
            inb,
            [
                "ours --net=slirp4netns --port-driver=builtin",
                "ours --net=slirp4netns --port-driver=slirp4netns",
                "ours --net=pasta --port-driver=implicit",
                "ours --net=gvisor-tap-vsock --port-driver=builtin",
                "ours --net=gvisor-tap-vsock --port-driver=gvisor-tap-vsock",
            ]
        );
        assert_eq!(n.conns.len(), 3);
        assert_eq!(
            n.conns[2].run.argv.join(" "),
            "/o/rootlesskit --state-dir=$STATE_DIR --net=gvisor-tap-vsock $ECHO echo-client 10.0.2.1 $PORT 1000"
        );
        assert_eq!(
            n.idle.argv.join(" "),
            "/o/rootlesskit --state-dir=$STATE_DIR --net=gvisor-tap-vsock sleep 30"
        );
        assert!(plan(&sides[1..], "$ECHO").outbound.is_empty());
    }
}
