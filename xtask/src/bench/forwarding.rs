//! Port forwarding through the builtin driver: throughput, CPU per GB and connections/s against the
//! reference and the host loopback.

use std::fs;
use std::io::{Read, Write as _};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Result;

use super::STATE_DIR;
use super::idle::{descendants, stat_ppid, stop};
use super::profile::{ConnProfile, Profile, profile_connections, profile_forwarding};
use super::runner::{Runner, describe_status, last_line, on_path, reader, run_capture};
use super::startup::{Side, progress, progress_done};
use super::stats::{median, percentile};

/// Rounds per side of every forwarding measurement; the sides take turns in every round.
pub(super) const FWD_ROUNDS: usize = 3;
/// Seconds the iperf3 client sends.
pub(super) const IPERF_SECONDS: u32 = 5;
/// Where iperf3 (`iperf3 -s`) listens inside the namespace.
pub(super) const IPERF_PORT: u16 = 5201;
/// Where the echo server listens inside the namespace.
pub(super) const ECHO_PORT: u16 = 8000;
/// Timed connections per round of the connection test.
pub(super) const CONNS: usize = 2000;
/// Untimed connections before them.
pub(super) const CONNS_WARMUP: usize = 50;
/// Linux's `USER_HZ`: the unit of `utime` and `stime` in `/proc/<pid>/stat`.
pub(super) const CLK_TCK: f64 = 100.0;
/// The longest a forwarding start may take until both ends listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one connection of the connection test may take to connect or to echo.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// The iperf3 binary; without it the throughput rows are skipped.
const IPERF3: &str = "/usr/bin/iperf3";
/// What the echo server inside the namespace is called once staged: this xtask binary,
/// run as `echo-server PORT`.
pub(super) const ECHO_NAME: &str = "rkrs-echo";
/// Stands for the host port in the command lines shown (a fresh free port each start).
pub(super) const PORT: &str = "$PORT";
/// The rootlesskit flags of every forwarding start, identical on both sides.
pub(super) const FWD_FLAGS: &[&str] = &[
    "--net=slirp4netns",
    "--disable-host-loopback",
    "--port-driver=builtin",
];
/// Who the ceilings are recorded for.
pub(super) const LOOPBACK: &str = "loopback";

/// The rounds of one path (ours, the reference, or the host's loopback), or why it stopped.
#[derive(Debug, Default)]
pub(super) struct FwdSeries {
    pub(super) who: &'static str,
    /// The command that serves (`$STATE_DIR` and `$PORT` stand for the fresh values).
    pub(super) argv: Vec<String>,
    /// Gbps (throughput) or connections/s (connection test), one per round.
    pub(super) rates: Vec<f64>,
    /// CPU seconds of the rootlesskit parent per GB received, one per round (throughput).
    pub(super) cpu_per_gb: Vec<f64>,
    /// Percent of that CPU time spent in the kernel, one per round (throughput).
    pub(super) kernel_pct: Vec<f64>,
    /// Every timed connection's connect + echo time in ms, all rounds (connection test).
    pub(super) latency_ms: Vec<f64>,
    pub(super) error: Option<String>,
}

impl FwdSeries {
    pub(super) fn new(who: &'static str, argv: Vec<String>) -> FwdSeries {
        FwdSeries {
            who,
            argv,
            ..FwdSeries::default()
        }
    }
    pub(super) fn ok(&self) -> bool {
        self.error.is_none() && !self.rates.is_empty()
    }
    pub(super) fn rate(&self) -> Option<f64> {
        median(&self.rates).filter(|_| self.ok())
    }
    pub(super) fn cpu(&self) -> Option<f64> {
        median(&self.cpu_per_gb).filter(|_| self.ok())
    }
    pub(super) fn latency(&self, p: f64) -> Option<f64> {
        percentile(&self.latency_ms, p).filter(|_| self.ok())
    }
}

/// What the forwarding phase measured.
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// Why no forwarding row ran (no slirp4netns).
    pub(super) skipped: Option<String>,
    /// Why the throughput rows did not run (no iperf3).
    pub(super) throughput_skipped: Option<String>,
    /// Why the connection rows did not run (no python3).
    pub(super) conns_skipped: Option<String>,
    pub(super) throughput: Vec<FwdSeries>,
    /// UDP throughput, the same rounds with `iperf3 -u`.
    pub(super) udp: Vec<FwdSeries>,
    /// A perf profile of each side's parent during TCP forwarding, or why not.
    pub(super) profiles: Vec<(&'static str, std::result::Result<Profile, String>)>,
    /// The same during the connection test, with the connections/s seen meanwhile.
    pub(super) conn_profiles: Vec<(&'static str, ConnProfile)>,
    pub(super) conns: Vec<FwdSeries>,
}

/// One iperf3 run: what arrived and what the server side's forwarder spent.
struct Transfer {
    pub(super) bits_per_second: f64,
    pub(super) bytes: f64,
    /// CPU seconds of the watched process during the client run.
    pub(super) cpu_s: Option<f64>,
    /// The part of `cpu_s` spent in the kernel (`stime`).
    kernel_s: Option<f64>,
}

/// `rootlesskit --state-dir=... FLAGS -p 127.0.0.1:PORT:INNER/tcp TARGET...`.
pub(super) fn fwd_argv(
    side: &Side,
    state: &str,
    port: &str,
    inner: u16,
    target: &[&str],
) -> Vec<String> {
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

pub(super) fn iperf_client_argv(port: &str, udp: bool) -> Vec<String> {
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
pub(super) fn iperf_server_argv(side: &Side, state: &str, port: &str, udp: bool) -> Vec<String> {
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

pub(super) fn echo_target(echo: &str) -> [&str; 3] {
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
pub(crate) fn echo_server(port: u16) -> Result<()> {
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
pub(super) fn forwarding(
    runner: &Runner,
    sides: &[Side],
    state_root: &Path,
    echo: &str,
) -> Forwarding {
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
pub(super) struct Server {
    pub(super) child: Child,
    pub(super) pid: u32,
    pub(super) err: mpsc::Receiver<String>,
}

impl Server {
    pub(super) fn start(runner: &Runner, who: &str, argv: &[String]) -> Result<Server> {
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
    pub(super) fn wait_ready(&mut self, port: u16, inner: Option<u16>) -> Result<()> {
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

    pub(super) fn stop(mut self) {
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
pub(super) fn free_port() -> Result<u16> {
    std::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// `utime + stime` of a process, in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
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
pub(super) fn iperf_received(json: &str) -> Result<(f64, f64)> {
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
    conn_round_of(addr, CONNS_WARMUP, CONNS)
}

/// `warmup` untimed then `n` timed sequential connections, as [`conn_round`].
pub(super) fn conn_round_of(
    addr: std::net::SocketAddr,
    warmup: usize,
    n: usize,
) -> Result<(f64, Vec<f64>)> {
    for i in 0..warmup {
        echo_once(addr).map_err(|e| format!("warm-up connection {i}: {e}"))?;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        echo_once(addr).map_err(|e| format!("connection {i}: {e}"))?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((start.elapsed().as_secs_f64(), lat))
}

pub(super) fn echo_once(addr: std::net::SocketAddr) -> std::io::Result<()> {
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
pub(super) fn host_echo_server() -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = l
        .local_addr()
        .map_err(|e| format!("cannot read the echo address: {e}"))?;
    std::thread::spawn(move || serve_echo(l));
    Ok(addr)
}

/// `(pid, ppid)` of every process in /proc.
pub(super) fn proc_parents() -> Vec<(u32, u32)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
