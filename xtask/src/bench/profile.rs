//! Where the forwarding time goes: a perf profile of the parent while iperf3 runs, and of a burst
//! of connections.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Result;

use super::forwarding::{
    ECHO_PORT, IPERF_PORT, Server, echo_once, echo_target, free_port, fwd_argv, iperf_client_argv,
    iperf_server_argv,
};
use super::runner::{Runner, last_line, run_capture};
use super::startup::Side;

// Where the forwarding time goes: a perf profile of the parent while iperf3 runs.

/// Seconds the profiled iperf3 client sends, and how long perf samples in the middle.
pub(super) const PROFILE_CLIENT_SECONDS: u32 = 6;
pub(super) const PROFILE_SECONDS: u32 = 3;

/// What one profiled forwarding run found: the share of the rootlesskit parent's CPU
/// samples, per kernel path, with children (a sample in `tcp_sendmsg` under `splice` counts
/// for both).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Profile {
    pub(super) samples: u64,
    /// `(symbol, percent with children)` for [`PROFILE_SYMBOLS`], in that order.
    pub(super) shares: Vec<(String, f64)>,
    /// Percent of samples whose own frame is in user space (`[.]`).
    pub(super) user: f64,
}

/// The kernel paths shown, with what each one is.
pub(super) const PROFILE_SYMBOLS: &[(&str, &str)] = &[
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
pub(super) type ConnProfile = std::result::Result<(Profile, f64), String>;

/// The kernel paths shown for the connection test.
pub(super) const CONN_PROFILE_SYMBOLS: &[(&str, &str)] = &[
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
pub(super) fn profile_connections(
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
pub(super) fn profile_forwarding(runner: &Runner, side: &Side, state: &Path) -> Result<Profile> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
