//! Idle memory: RSS and PSS of an idle tree, read from /proc once the state dir has `child_pid`.

use std::fs;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::Result;

use super::forwarding::{Server, proc_parents};
use super::runner::{Runner, describe_status, kill_group, kill_pid, last_line};
use super::startup::{Side, progress, progress_done};
use super::{RSS_RUNS, RSS_SETTLE, START_TIMEOUT, STATE_DIR};

/// One idle tree, read from /proc.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Idle {
    pub(super) parent_rss_kib: u64,
    pub(super) tree_rss_kib: u64,
    pub(super) tree_pss_kib: Option<u64>,
    pub(super) processes: usize,
}

/// One number read off an idle tree.
pub(super) type IdleMetric = fn(&Idle) -> Option<u64>;

/// The idle samples of one side.
#[derive(Debug, Default)]
pub(super) struct IdleSeries {
    pub(super) who: &'static str,
    pub(super) argv: Vec<String>,
    pub(super) samples: Vec<Idle>,
    pub(super) error: Option<String>,
}

pub(super) fn idle_memory(runner: &Runner, sides: &[Side], state_root: &Path) -> Vec<IdleSeries> {
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
pub(super) fn idle_once(runner: &Runner, who: &str, argv: &[String], state: &Path) -> Result<Idle> {
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
pub(super) fn stop(child: &mut Child, pid: u32) {
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
pub(super) fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every pid below it in `(pid, ppid)` pairs, root first.
pub(super) fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
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
pub(super) fn kib_field(text: &str, key: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
    let mut it = rest.split_whitespace();
    let n = it.next()?.parse().ok()?;
    (it.next() == Some("kB")).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::runner::status_ids;

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
}
