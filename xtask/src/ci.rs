//! `cargo xtask ci` and `cargo xtask test`: the fixed sequence of checks CI runs (fmt, clippy, tidy, dist, tests against the dist binaries), stopping at the first failure.

use std::path::{Path, PathBuf};

use crate::{Result, dist};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Fmt,
    Clippy,
    Tidy,
    Dist,
    Test,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Tidy => "tidy",
            Step::Dist => "dist",
            Step::Test => "test",
        }
    }
}

const CI_STEPS: &[Step] = &[Step::Fmt, Step::Clippy, Step::Tidy, Step::Dist, Step::Test];
const TEST_STEPS: &[Step] = &[Step::Dist, Step::Test];

/// `cargo xtask ci`: everything `.ci/run` needs after installing the host tools.
pub(crate) fn ci(root: &Path, opts: &dist::Options) -> Result<()> {
    run_steps(root, opts, CI_STEPS)
}

/// `cargo xtask test`: dist, then the workspace tests against the dist binaries.
pub(crate) fn test(root: &Path, opts: &dist::Options) -> Result<()> {
    run_steps(root, opts, TEST_STEPS)
}

fn run_steps(root: &Path, opts: &dist::Options, steps: &[Step]) -> Result<()> {
    let mut dist_dir: Option<PathBuf> = None;
    for (i, &step) in steps.iter().enumerate() {
        println!("\n==> [{}/{}] {}", i + 1, steps.len(), step.name());
        let result = match step {
            Step::Fmt => cargo(root, None, &["fmt", "--all", "--check"], &[]),
            Step::Clippy => cargo(
                root,
                opts.target_dir.as_deref(),
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
            ),
            Step::Tidy => crate::tidy::run(root),
            Step::Dist => dist::run(root, opts).map(|d| dist_dir = Some(d)),
            Step::Test => match &dist_dir {
                Some(dir) => {
                    prepare(root)?;
                    let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                    let env = test_env(&dir, std::env::var("CI").ok().as_deref());
                    println!(
                        "{}",
                        env.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    cargo(
                        root,
                        opts.target_dir.as_deref(),
                        &["test", "--workspace"],
                        &env,
                    )
                }
                None => Err("the test step needs the dist step first".into()),
            },
        };
        result.map_err(|e| format!("ci step `{}` failed: {e}", step.name()))?;
    }
    println!("\n==> all {} steps passed", steps.len());
    Ok(())
}

/// The user the integration tests run the binaries as when they run as root (ci/src/lib.rs).
const TEST_USER: &str = "rkrs-test";

/// As root on a machine that was never prepared (no test user), runs `.ci/run --prepare` first:
/// the packages, the test user with subordinate ids, the test bridges and the Debian sid
/// rootfs, as `.ci/run` does before it calls us. As any other user the tests run as that user,
/// and those that cannot run there skip with their reason.
fn prepare(root: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let user = std::env::var("RKRS_TEST_USER").unwrap_or_else(|_| TEST_USER.into());
    if has_user(
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        &user,
    ) {
        return Ok(());
    }
    if user != TEST_USER {
        return Err(format!("RKRS_TEST_USER={user}: no such user"));
    }
    println!(
        "==> no test user {user}: preparing this machine (.ci/run --prepare: packages, the user \
         with subordinate ids, test bridges, the Debian sid rootfs)"
    );
    crate::run_status(crate::command(root.join(".ci/run")).arg("--prepare"))
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1))
        == Some("0")
}

/// Whether an /etc/passwd text has a line for `user`.
fn has_user(passwd: &str, user: &str) -> bool {
    passwd
        .lines()
        .any(|l| l.split(':').next() == Some(user) && l.matches(':').count() >= 6)
}

/// The environment of the test step: where the static binaries are, and whether a skipped
/// test must count as a failure (on CI machines, which set `CI`).
fn test_env(dist_dir: &Path, ci: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = vec![("RKRS_BIN_DIR", dist_dir.to_string_lossy().into_owned())];
    if ci.is_some_and(|v| !matches!(v.trim(), "" | "0" | "false")) {
        env.push(("RKRS_MUST_WORK", "1".into()));
    }
    env
}

/// `cargo SUBCOMMAND ...` in the workspace root, with `--target-dir` inserted after the
/// subcommand's own arguments (before any `--`).
fn cargo(
    root: &Path,
    target_dir: Option<&Path>,
    args: &[&str],
    env: &[(&str, String)],
) -> Result<()> {
    let mut cmd = crate::cargo();
    cmd.current_dir(root);
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    cmd.args(&args[..split]);
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    cmd.args(&args[split..]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    println!("{}", crate::display(&cmd));
    crate::run_status(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn must_work_only_on_ci() {
        let dir = Path::new("/w/target/dist");
        let bin = ("RKRS_BIN_DIR", "/w/target/dist".to_string());
        let must = ("RKRS_MUST_WORK", "1".to_string());
        let cases = [
            (None, vec![bin.clone()]),
            (Some(""), vec![bin.clone()]),
            (Some("false"), vec![bin.clone()]),
            (Some("true"), vec![bin.clone(), must.clone()]),
            (Some("1"), vec![bin.clone(), must.clone()]),
        ];
        for (ci, expect) in cases {
            assert_eq!(test_env(dir, ci), expect, "CI={ci:?}");
        }
    }

    #[test]
    fn passwd_lookup() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nrkrs-test:x:1001:1001::/home/rkrs-test:/bin/sh\n";
        assert!(has_user(passwd, "rkrs-test"));
        assert!(has_user(passwd, "root"));
        assert!(!has_user(passwd, "rkrs"));
        assert!(!has_user(passwd, "rkrs-test2"));
        assert!(!has_user("rkrs-test\n", "rkrs-test"));
    }

    #[test]
    fn step_order() {
        let names = |s: &[Step]| s.iter().map(|s| s.name()).collect::<Vec<_>>();
        assert_eq!(names(CI_STEPS), ["fmt", "clippy", "tidy", "dist", "test"]);
        assert_eq!(names(TEST_STEPS), ["dist", "test"]);
    }
}
