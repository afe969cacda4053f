//! The machine and the binaries: CPU, kernel, load, git tree, versions, and binary sizes.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use super::binary_names;
use super::idle::kib_field;
use super::runner::{Runner, on_path};

#[derive(Debug, Default)]
pub(super) struct Machine {
    pub(super) cpus: usize,
    pub(super) model: String,
    pub(super) kernel: String,
    pub(super) memory: String,
    pub(super) date: String,
    pub(super) load_before: String,
    pub(super) tree: String,
}

impl Machine {
    pub(super) fn read(root: &Path) -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
            kernel: kernel_release(&read("/proc/version")).unwrap_or_else(|| "unknown".into()),
            memory: kib_field(&read("/proc/meminfo"), "MemTotal:")
                .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
                .unwrap_or_else(|| "unknown".into()),
            date: first_line_of(crate::command("date").arg("-u"))
                .unwrap_or_else(|| "unknown".into()),
            load_before: read_loadavg(),
            tree: git_tree(root),
        }
    }
}

/// The first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// `6.1.0-18-amd64` from `Linux version 6.1.0-18-amd64 (...) ...`.
fn kernel_release(version: &str) -> Option<String> {
    let mut w = version.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some("Linux"), Some("version"), Some(r)) => Some(format!("Linux {r}")),
        _ => None,
    }
}

pub(super) fn read_loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The commit of the tree, and whether it has uncommitted changes.
fn git_tree(root: &Path) -> String {
    let mut head = crate::command("git");
    head.current_dir(root)
        .args(["rev-parse", "--short", "HEAD"]);
    let Some(commit) = first_line_of(&mut head) else {
        return "unknown (no git)".into();
    };
    let mut status = crate::command("git");
    status
        .current_dir(root)
        .args(["status", "--porcelain", "--untracked-files=no"]);
    match status.output() {
        Ok(o) if o.stdout.is_empty() => commit,
        Ok(_) => format!("{commit} with uncommitted changes"),
        Err(_) => commit,
    }
}

/// The first non-empty line a command prints on stdout (or stderr), if it runs.
fn first_line_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(String::from)
}

/// `--version` lines of everything measured.
pub(super) fn versions(
    runner: &Runner,
    ours: &Path,
    reference: Option<&Path>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut version = |label: &str, argv: Vec<String>| {
        let who = if matches!(label, "ours" | "reference") {
            label
        } else {
            "machine"
        };
        let line =
            first_line_of(&mut runner.command(who, &[], &argv)).unwrap_or_else(|| "?".into());
        out.push((label.to_string(), line));
    };
    version(
        "ours",
        vec![
            ours.join("rootlesskit").to_string_lossy().into(),
            "--version".into(),
        ],
    );
    if let Some(r) = reference {
        version(
            "reference",
            vec![r.to_string_lossy().into(), "--version".into()],
        );
    }
    for p in ["slirp4netns", "pasta", "unshare"] {
        if on_path(p) {
            version(p, vec![p.into(), "--version".into()]);
        }
    }
    out
}

#[derive(Debug, Default)]
pub(super) struct Sizes {
    pub(super) ours: Vec<(String, u64)>,
    pub(super) reference: Option<u64>,
}

pub(super) fn sizes(bin_dir: &Path, reference: Option<&Path>) -> Sizes {
    let size = |p: &Path| fs::metadata(p).ok().map(|m| m.len());
    Sizes {
        ours: binary_names()
            .iter()
            .filter_map(|n| size(&bin_dir.join(n)).map(|s| (n.to_string(), s)))
            .collect(),
        reference: reference.and_then(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::runner::{passwd_ids, passwd_name};

    #[test]
    fn machine_fields() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor\t: 0\n"), None);
        assert_eq!(
            kernel_release(
                "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc) #1 SMP"
            )
            .as_deref(),
            Some("Linux 6.1.0-18-amd64")
        );
        assert_eq!(kernel_release("garbage"), None);
        let passwd = "root:x:0:0:root:/root:/bin/bash\nrkrs-test:x:2000:2000::/home/rkrs-test:/bin/sh\nbad:x:zz:1::/:/bin/sh\n";
        assert_eq!(passwd_ids(passwd, "rkrs-test"), Some((2000, 2000)));
        assert_eq!(passwd_ids(passwd, "bad"), None);
        assert_eq!(passwd_ids(passwd, "nobody"), None);
        assert_eq!(passwd_name(passwd, 2000).as_deref(), Some("rkrs-test"));
        assert_eq!(passwd_name(passwd, 7), None);
    }
}
