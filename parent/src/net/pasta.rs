//! `--net=pasta`: probing the installed pasta, building its command line and running it until it
//! has configured the child's interface and gone to the background.
//!
//! pasta configures address, route and MTU itself, so the child gets a
//! [`NetMode::Preconfigured`] frame. Unlike upstream we pass `--pid=<statedir>/pasta.pid` and keep
//! a pidfd of the daemon: pasta releases before 2023_12 never quit when the namespace goes away
//! (seen with Debian's 2023-03-09), which would leave it, and the namespace it holds, behind.

use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::NetMode;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::{Addrs, DEFAULT_MTU, Driver, NetOptions, Prepared, StartError, Target};
use crate::exec;

/// The oldest pasta (passt) release rootlesskit works with, as upstream documents it.
pub const MINIMUM_VERSION: &str = "2023_06_25";
/// Where pasta writes the daemon's pid, in the state dir; removed once read.
pub const PID_FILE: &str = "pasta.pid";
/// How long [`Driver::stop`] waits for the killed daemon to disappear.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The optional features of an installed pasta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `--host-lo-to-ns-lo` is accepted (passt 2024_10_30 and later need it for `127.0.0.1` ports).
    pub host_lo_to_ns_lo: bool,
}

/// Everything decided before launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The resolved binary.
    pub binary: PathBuf,
    /// `--mtu`.
    pub mtu: u32,
    /// `--ns-ifname`.
    pub ifname: String,
    /// The child's addresses.
    pub addrs: Addrs,
    /// `--no-map-gw`.
    pub disable_host_loopback: bool,
    /// Without it, `--ipv4-only`.
    pub ipv6: bool,
    /// `--tcp-ports=auto --udp-ports=auto` (`--port-driver=implicit`) instead of `none`.
    pub implicit_ports: bool,
    /// `--host-lo-to-ns-lo`.
    pub host_lo_to_ns_lo: bool,
}

/// Turns options and probe results into a [`Plan`].
///
/// # Errors
/// Address overflow and a bad interface name.
pub fn plan(opts: &NetOptions, binary: PathBuf, features: Features) -> Result<Plan, String> {
    let ifname = super::interface_name(opts.ifname.as_deref())?;
    let addrs = Addrs::of(opts.cidr)?;
    Ok(Plan {
        binary,
        mtu: if opts.mtu == 0 { DEFAULT_MTU } else { opts.mtu },
        ifname,
        addrs,
        disable_host_loopback: opts.disable_host_loopback,
        ipv6: opts.ipv6,
        implicit_ports: opts.driver_ports,
        host_lo_to_ns_lo: features.host_lo_to_ns_lo,
    })
}

impl Plan {
    /// pasta's arguments (after argv\[0\]) for the child's namespace, or for the detached one
    /// entered through the child's user namespace.
    pub fn args(&self, target: Target<'_>) -> Vec<OsString> {
        let child_pid = target.child_pid;
        let mut args: Vec<OsString> = vec![
            "--stderr".into(),
            format!("--ns-ifname={}", self.ifname).into(),
            format!("--mtu={}", self.mtu).into(),
            "--config-net".into(),
            format!("--address={}", super::ipv4_text(self.addrs.addr)).into(),
            format!("--netmask={}", self.addrs.prefix).into(),
            format!("--gateway={}", super::ipv4_text(self.addrs.gateway)).into(),
            format!("--dns-forward={}", super::ipv4_text(self.addrs.dns)).into(),
        ];
        if self.disable_host_loopback {
            args.push("--no-map-gw".into());
        }
        if !self.ipv6 {
            args.push("--ipv4-only".into());
        }
        let ports = if self.implicit_ports { "auto" } else { "none" };
        args.push(format!("--tcp-ports={ports}").into());
        args.push(format!("--udp-ports={ports}").into());
        if self.host_lo_to_ns_lo {
            args.push("--host-lo-to-ns-lo".into());
        }
        args.push(prefixed("--pid=", &target.state_dir.join(PID_FILE)));
        match target.netns {
            None => args.push(child_pid.to_string().into()),
            Some(path) => {
                args.push(format!("--userns=/proc/{child_pid}/ns/user").into());
                args.push(prefixed("--netns=", path));
            }
        }
        args
    }

    /// What the child gets, and the DNS servers.
    pub fn prepared(&self) -> Prepared {
        Prepared {
            net: super::net_config(
                NetMode::Preconfigured,
                &self.ifname,
                &self.addrs,
                self.mtu,
                None,
            ),
            api_socket: None,
            dns: vec![super::ipv4_text(self.addrs.dns)],
        }
    }
}

fn prefixed(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path.as_os_str());
    arg
}

/// upstream's failure text, with a hint naming [`MINIMUM_VERSION`] when pasta did not know an
/// option we passed.
fn failure_text(code: i32, output: &str) -> String {
    let mut text = format!("pasta failed with exit code {code}:\n{output}");
    if output.contains("unrecognized option") || output.contains("invalid option") {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "this pasta is too old: rootlesskit needs pasta (passt) {MINIMUM_VERSION} or later"
        ));
    }
    text
}

/// The pasta network driver.
#[derive(Debug)]
pub struct Pasta {
    plan: Plan,
    /// A pidfd of the daemon pasta left running.
    daemon: Option<OwnedFd>,
}

impl Pasta {
    /// Finds the binary (`$PATH`), checks that `--version` runs, and probes `--host-lo-to-ns-lo`.
    ///
    /// # Errors
    /// Go's lookup error, the `--version` failure, or a [`plan`] error.
    pub fn probe(opts: &NetOptions) -> Result<Pasta, String> {
        let binary = exec::look_path(OsStr::new(&opts.binary))?;
        let fail = |out: &[u8], err: String| {
            format!(
                "command \"{} --version\" failed, make sure pasta is installed: {}: {err}",
                binary.display(),
                exec::quote(&String::from_utf8_lossy(out))
            )
        };
        let (status, out) =
            exec::run_with_output(&binary, &["--version".into()]).map_err(|e| fail(b"", e))?;
        if !status.success() {
            return Err(fail(&out, exec::exit_text(status)));
        }
        let host_lo_to_ns_lo =
            exec::run_with_output(&binary, &["--host-lo-to-ns-lo".into(), "--version".into()])
                .is_ok_and(|(status, _)| status.success());
        Ok(Pasta {
            plan: plan(opts, binary, Features { host_lo_to_ns_lo })?,
            daemon: None,
        })
    }

    /// The plan the probe settled on.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Reads and removes the pid file at `path`, and opens a pidfd of the daemon.
    fn adopt_daemon(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("open {}: {}", path.display(), exec::errno_text(&e)))?;
        let _ = std::fs::remove_file(path);
        let pid = text
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| format!("bad pid {} in {}", exec::quote(text.trim()), path.display()))?;
        let fd = pidfd_open(pid, PidfdFlags::empty())
            .map_err(|e| format!("pidfd_open {pid}: {}", exec::errno_text(&e.into())))?;
        self.daemon = Some(fd);
        Ok(())
    }
}

impl Driver for Pasta {
    fn name(&self) -> &'static str {
        "pasta"
    }

    /// Runs pasta to completion (it forks its daemon and returns within a moment, so `watch` is
    /// not consulted).
    fn start(
        &mut self,
        target: Target<'_>,
        _watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, StartError> {
        self.stop();
        let failed = StartError::Failed;
        let args = self.plan.args(target);
        let pid_file = target.state_dir.join(PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        let (status, out) = exec::run_with_output(&self.plan.binary, &args).map_err(|e| {
            let mut shown = self.plan.binary.display().to_string();
            for a in &args {
                shown.push(' ');
                shown.push_str(&a.to_string_lossy());
            }
            failed(format!("executing {shown}: {e}"))
        })?;
        if !status.success() {
            let _ = std::fs::remove_file(&pid_file);
            return Err(failed(failure_text(
                status.code().unwrap_or(-1),
                &String::from_utf8_lossy(&out),
            )));
        }
        if let Err(e) = self.adopt_daemon(&pid_file) {
            crate::warn(&format!(
                "cannot track the pasta daemon ({e}): it is not stopped on exit"
            ));
        }
        Ok(self.plan.prepared())
    }

    fn stop(&mut self) {
        let Some(fd) = self.daemon.take() else {
            return;
        };
        if pidfd_send_signal(&fd, Signal::KILL).is_err() {
            return;
        }
        // Not our child (it daemonized): wait until the pidfd says it has exited.
        let timeout = Timespec {
            tv_sec: STOP_WAIT.as_secs() as _,
            tv_nsec: 0,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let _ = poll(&mut fds, Some(&timeout));
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NetOptions {
        NetOptions {
            mtu: 0,
            cidr: None,
            ifname: None,
            disable_host_loopback: false,
            ipv6: false,
            sandbox: String::new(),
            seccomp: String::new(),
            binary: "pasta".into(),
            driver_ports: false,
            detach_netns: false,
        }
    }

    fn args_text(o: &NetOptions, f: Features, netns: Option<&str>) -> String {
        let p = plan(o, "/usr/bin/pasta".into(), f).unwrap();
        p.args(Target {
            child_pid: 4242,
            netns: netns.map(Path::new),
            state_dir: Path::new("/run/user/1000/rk"),
        })
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
    }

    const BASE: &str = "--stderr --ns-ifname=tap0 --mtu=65520 --config-net --address=10.0.2.100 \
                        --netmask=24 --gateway=10.0.2.2 --dns-forward=10.0.2.3";
    const PID: &str = "--pid=/run/user/1000/rk/pasta.pid";

    #[test]
    fn command_lines() {
        let check = |o: NetOptions, f: Features, netns: Option<&str>, expect: String| {
            assert_eq!(args_text(&o, f, netns), expect, "{o:?} {f:?}");
        };
        let none = Features::default();
        let lo = Features {
            host_lo_to_ns_lo: true,
        };
        check(
            opts(),
            none,
            None,
            format!("{BASE} --ipv4-only --tcp-ports=none --udp-ports=none {PID} 4242"),
        );
        check(
            NetOptions {
                disable_host_loopback: true,
                ..opts()
            },
            none,
            None,
            format!("{BASE} --no-map-gw --ipv4-only --tcp-ports=none --udp-ports=none {PID} 4242"),
        );
        check(
            NetOptions {
                ipv6: true,
                ..opts()
            },
            none,
            None,
            format!("{BASE} --tcp-ports=none --udp-ports=none {PID} 4242"),
        );
        check(
            NetOptions {
                driver_ports: true,
                ..opts()
            },
            none,
            None,
            format!("{BASE} --ipv4-only --tcp-ports=auto --udp-ports=auto {PID} 4242"),
        );
        check(
            opts(),
            lo,
            None,
            format!(
                "{BASE} --ipv4-only --tcp-ports=none --udp-ports=none --host-lo-to-ns-lo {PID} 4242"
            ),
        );
        check(
            NetOptions {
                mtu: 1500,
                cidr: Some(([10, 8, 0, 0], 16)),
                ifname: Some("eth0".into()),
                disable_host_loopback: true,
                ipv6: true,
                driver_ports: true,
                ..opts()
            },
            lo,
            Some("/proc/4242/root/tmp/rk/netns"),
            format!(
                "--stderr --ns-ifname=eth0 --mtu=1500 --config-net --address=10.8.0.100 \
                 --netmask=16 --gateway=10.8.0.2 --dns-forward=10.8.0.3 --no-map-gw \
                 --tcp-ports=auto --udp-ports=auto --host-lo-to-ns-lo {PID} \
                 --userns=/proc/4242/ns/user --netns=/proc/4242/root/tmp/rk/netns"
            ),
        );
    }

    #[test]
    fn plan_errors() {
        let check = |o: NetOptions, expect: &str| {
            assert_eq!(
                plan(&o, "/usr/bin/pasta".into(), Features::default())
                    .err()
                    .as_deref(),
                Some(expect)
            );
        };
        check(
            NetOptions {
                cidr: Some(([255, 255, 255, 192], 26)),
                ..opts()
            },
            "255.255.255.192 + 100 overflows",
        );
        check(
            NetOptions {
                ifname: Some("x".repeat(16)),
                ..opts()
            },
            r#"ifname "xxxxxxxxxxxxxxxx" is longer than 15 bytes"#,
        );
    }

    #[test]
    fn what_the_child_gets() {
        let o = NetOptions {
            ipv6: true,
            mtu: 9000,
            ..opts()
        };
        let got = plan(&o, "/usr/bin/pasta".into(), Features::default())
            .unwrap()
            .prepared();
        assert_eq!(got.net.mode, NetMode::Preconfigured);
        assert_eq!(got.net.ifname_str(), "tap0");
        assert_eq!(
            (
                got.net.addr,
                got.net.prefix,
                got.net.gateway,
                got.net.dns,
                got.net.mtu
            ),
            ([10, 0, 2, 100], 24, [10, 0, 2, 2], [10, 0, 2, 3], 9000)
        );
        assert_eq!(got.net.dns6, [0; 16]);
        assert_eq!(got.dns, ["10.0.2.3"]);
        assert_eq!(got.api_socket, None);
    }

    #[test]
    fn failure_texts() {
        assert_eq!(
            failure_text(1, "boom\n"),
            "pasta failed with exit code 1:\nboom\n"
        );
        assert_eq!(failure_text(-1, ""), "pasta failed with exit code -1:\n");
        assert_eq!(
            failure_text(1, "pasta: unrecognized option '--host-lo-to-ns-lo'"),
            "pasta failed with exit code 1:\npasta: unrecognized option '--host-lo-to-ns-lo'\n\
             this pasta is too old: rootlesskit needs pasta (passt) 2023_06_25 or later"
        );
    }

    use crate::testutil::{TempDir, retry_busy};

    /// A fake pasta: `--version` works, `--host-lo-to-ns-lo` only when `new`; a run records its
    /// arguments, leaves a `sleep` behind as the daemon and writes its pid file.
    fn fake_pasta(dir: &TempDir, name: &str, new: bool) -> PathBuf {
        let log = dir.0.join(format!("{name}.args"));
        let lo = if new {
            "exit 0"
        } else {
            "echo \"$0: unrecognized option '$1'\" >&2; exit 1"
        };
        dir.script(
            name,
            &format!(
                "case \"$1\" in\n\
                 --version) echo 'pasta unknown version'; exit 0;;\n\
                 --host-lo-to-ns-lo) {lo};;\n\
                 esac\n\
                 echo \"$@\" > {log}\n\
                 for a; do case \"$a\" in --pid=*) f=\"${{a#--pid=}}\";; esac; done\n\
                 sleep 60 </dev/null >/dev/null 2>&1 &\n\
                 echo $! > \"$f\"\n\
                 echo $! > {daemon}\n\
                 echo 'Namespace interface: tap0' >&2",
                log = log.display(),
                daemon = dir.0.join(format!("{name}.daemon")).display()
            ),
        )
    }

    fn probe(binary: &Path, o: NetOptions) -> Result<Pasta, String> {
        retry_busy(|| {
            Pasta::probe(&NetOptions {
                binary: binary.display().to_string(),
                ..o.clone()
            })
        })
    }

    fn target(state_dir: &Path) -> Target<'_> {
        Target {
            child_pid: 4242,
            netns: None,
            state_dir,
        }
    }

    #[test]
    fn probing_a_binary() {
        let dir = TempDir::new("probe");
        let old = fake_pasta(&dir, "old", false);
        let new = fake_pasta(&dir, "new", true);
        assert!(!probe(&old, opts()).unwrap().plan().host_lo_to_ns_lo);
        assert!(probe(&new, opts()).unwrap().plan().host_lo_to_ns_lo);
        let broken = dir.script("broken", "echo 'cannot run' >&2; exit 1");
        assert_eq!(
            probe(&broken, opts()).err(),
            Some(format!(
                r#"command "{} --version" failed, make sure pasta is installed: "cannot run\n": exit status 1"#,
                broken.display()
            ))
        );
        assert_eq!(
            probe(Path::new("no-such-pasta-for-rkrs"), opts())
                .err()
                .as_deref(),
            Some(r#"exec: "no-such-pasta-for-rkrs": executable file not found in $PATH"#)
        );
    }

    #[test]
    fn probing_the_installed_pasta() {
        let Ok(path) = exec::look_path(OsStr::new("pasta")) else {
            eprintln!("skipped: pasta is not installed");
            return;
        };
        let p = Pasta::probe(&NetOptions {
            binary: path.display().to_string(),
            ..opts()
        })
        .unwrap();
        // Whatever the release, the probe must agree with pasta itself.
        let (status, _) =
            exec::run_with_output(&path, &["--host-lo-to-ns-lo".into(), "--version".into()])
                .unwrap();
        assert_eq!(p.plan().host_lo_to_ns_lo, status.success());
    }

    /// Whether `pid` exists and is not a zombie (the killed daemon is not our child; whoever
    /// adopted it reaps it).
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z')),
            Err(_) => false,
        }
    }

    #[test]
    fn runs_tracks_and_stops_the_daemon() {
        let dir = TempDir::new("run");
        let bin = fake_pasta(&dir, "pasta", false);
        let mut p = probe(&bin, opts()).unwrap();
        let got = retry_busy(|| p.start(target(&dir.0), &[]).map_err(|e| e.to_string())).unwrap();
        assert_eq!(got, p.plan().prepared());
        assert_eq!(
            std::fs::read_to_string(dir.0.join("pasta.args")).unwrap(),
            format!(
                "{BASE} --ipv4-only --tcp-ports=none --udp-ports=none --pid={} 4242\n",
                dir.0.join("pasta.pid").display()
            )
        );
        assert!(!dir.0.join("pasta.pid").exists(), "pid file removed");
        assert!(p.daemon.is_some(), "daemon tracked");
        let pid: i32 = std::fs::read_to_string(dir.0.join("pasta.daemon"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(alive(pid));
        p.stop();
        assert!(p.daemon.is_none());
        assert!(!alive(pid), "daemon killed");
        p.stop();
    }

    #[test]
    fn failures() {
        let dir = TempDir::new("fail");
        let bin = dir.script(
            "pasta",
            "[ \"$1\" = --version ] && exit 0\necho 'Failed to open tap device' >&2\nexit 1",
        );
        let mut p = probe(&bin, opts()).unwrap();
        let err = retry_busy(|| match p.start(target(&dir.0), &[]) {
            Err(StartError::Failed(e)) => Err(e),
            other => Ok(other),
        });
        assert_eq!(
            err,
            Err("pasta failed with exit code 1:\nFailed to open tap device\n".into())
        );
        let bin = dir.script("old", "[ \"$1\" = --version ] && exit 0\necho \"$0: unrecognized option '--config-net'\" >&2\nexit 1");
        let mut p = probe(&bin, opts()).unwrap();
        let err = retry_busy(|| match p.start(target(&dir.0), &[]) {
            Err(StartError::Failed(e)) => Err(e),
            other => Ok(other),
        })
        .unwrap_err();
        assert!(
            err.ends_with("rootlesskit needs pasta (passt) 2023_06_25 or later"),
            "{err}"
        );
    }
}
