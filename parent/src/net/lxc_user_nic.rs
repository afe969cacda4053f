//! `--net=lxc-user-nic` (experimental, as upstream): LXC's setuid `lxc-user-nic` creates a veth
//! pair, attaches the host end to a bridge (`lxcbr0`, served by lxc-net's dnsmasq) and moves the
//! other end into the child's network namespace as `--ifname` (default `eth0`).
//!
//! The parent only runs the helper, once, against the child's pid; the address, route and DNS
//! server come from the bridge's DHCP server, which the child asks itself
//! ([`NetMode::Dhcp`], `child::dhcp`), reporting the lease back in a `NetLease` frame.
//! The veth pair disappears with the namespace. With `--detach-netns` lxc-user-nic needs a
//! process inside the detached namespace: `rootlesskit-unshare --hold-net` joins it and waits
//! there until [`Driver::stop`] (upstream parks `nsenter ... sleep infinity` for the same reason).

use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use proto::{NetConfig, NetMode};

use super::{Driver, NetOptions, Prepared, StartError, Target};
use crate::exec;

/// `--ifname` when none is given.
pub(crate) const DEFAULT_IFNAME: &str = "eth0";
/// `--mtu` when 0: the bridge's usual MTU.
pub(crate) const DEFAULT_MTU: u32 = 1500;
/// The container path and name upstream passes: lxc-user-nic only uses them for its
/// bookkeeping of who owns which nic.
const DUMMY_PATH: &str = "/dev/null";
const DUMMY_NAME: &str = "dummy";

/// The lxc-user-nic network driver.
#[derive(Debug)]
pub(crate) struct LxcUserNic {
    /// `--lxc-user-nic-binary` as given, for messages.
    shown: String,
    /// The same, looked up in `$PATH`.
    binary: PathBuf,
    bridge: String,
    ifname: String,
    mtu: u32,
    /// `rootlesskit-unshare`, with `--detach-netns`.
    holder_bin: Option<PathBuf>,
    /// The running holder: pid and pidfd.
    holder: Option<(i32, OwnedFd)>,
}

impl LxcUserNic {
    /// Looks the binary up in `$PATH` and settles the defaults, as upstream does before the
    /// state dir exists.
    ///
    /// # Errors
    /// Go's lookup error, `got empty bridge`, or a bad interface name.
    pub(crate) fn probe(opts: &NetOptions, bridge: &str) -> Result<LxcUserNic, String> {
        let binary = exec::look_path(OsStr::new(&opts.binary))?;
        if bridge.is_empty() {
            return Err("got empty bridge".into());
        }
        let ifname = super::interface_name(Some(opts.ifname.as_deref().unwrap_or(DEFAULT_IFNAME)))?;
        let holder_bin = if opts.detach_netns {
            Some(crate::libexec::find_helper(crate::libexec::UNSHARE_BIN)?)
        } else {
            None
        };
        Ok(LxcUserNic {
            shown: opts.binary.clone(),
            binary,
            bridge: bridge.to_string(),
            ifname,
            mtu: if opts.mtu == 0 { DEFAULT_MTU } else { opts.mtu },
            holder_bin,
            holder: None,
        })
    }

    /// The helper's arguments: `create /dev/null dummy <pid> veth <bridge> <ifname>`.
    pub(crate) fn args(&self, child_pid: i32) -> Vec<OsString> {
        [
            "create",
            DUMMY_PATH,
            DUMMY_NAME,
            &child_pid.to_string(),
            "veth",
            &self.bridge,
            &self.ifname,
        ]
        .iter()
        .map(OsString::from)
        .collect()
    }

    /// What the child gets: the interface and MTU; the rest comes by DHCP.
    pub(crate) fn prepared(&self) -> Prepared {
        let mut net = NetConfig::empty(NetMode::Dhcp);
        // Validated by `interface_name` during the probe.
        let _ = net.set_ifname(&self.ifname);
        net.mtu = self.mtu;
        Prepared {
            net,
            api_socket: None,
            dns: Vec::new(),
        }
    }
}

/// Starts `helper --hold-net /proc/<pid>/ns/user <netns>` and waits for its byte on fd 3,
/// which says it is inside; returns its pid and pidfd.
fn start_holder(helper: &Path, child_pid: i32, netns: &Path) -> Result<(i32, OwnedFd), String> {
    let fail = |e: String| format!("cannot enter the detached network namespace: {e}");
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| fail(sys::errno::text(e)))?;
    let args = [
        OsString::from("--hold-net"),
        format!("/proc/{child_pid}/ns/user").into(),
        netns.as_os_str().to_owned(),
    ];
    let (pid, pidfd) = exec::start_helper(helper, &args, vec![(ready_w, 3)]).map_err(fail)?;
    let mut byte = [0u8; 1];
    let ready = loop {
        match rustix::io::read(&ready_r, &mut byte) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r,
        }
    };
    if ready == Ok(1) {
        return Ok((pid, pidfd));
    }
    // It failed, and said why on stderr (it shares ours).
    stop_holder(pid, &pidfd);
    Err(fail(format!("{} failed", helper.display())))
}

/// Kills and reaps the holder.
fn stop_holder(pid: i32, pidfd: &OwnedFd) {
    let _ = sys::signal::pidfd_send_signal(pidfd, linux_raw_sys::general::SIGKILL);
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
}

/// upstream's `<bin> failed: <output>: <error>`, on one line.
fn failure_text(shown: &str, output: &[u8], error: &str) -> String {
    let mut text = format!("{shown} failed: ");
    let output = String::from_utf8_lossy(output);
    for (i, line) in output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            text.push_str("; ");
        }
        text.push_str(line);
    }
    text.push_str(": ");
    text.push_str(error);
    text
}

impl Driver for LxcUserNic {
    fn name(&self) -> &'static str {
        "lxc-user-nic"
    }

    /// Runs lxc-user-nic to completion (it returns within a moment, so `watch` is not consulted).
    fn start(
        &mut self,
        target: Target<'_>,
        _watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, StartError> {
        self.stop();
        let pid = match (target.netns, &self.holder_bin) {
            (Some(netns), Some(helper)) => {
                let (pid, pidfd) =
                    start_holder(helper, target.child_pid, netns).map_err(StartError::Failed)?;
                self.holder = Some((pid, pidfd));
                pid
            }
            _ => target.child_pid,
        };
        let (status, out) = exec::run_with_output(&self.binary, &self.args(pid))
            .map_err(|e| StartError::Failed(failure_text(&self.shown, b"", &e)))?;
        if !status.success() {
            return Err(StartError::Failed(failure_text(
                &self.shown,
                &out,
                &exec::exit_text(status),
            )));
        }
        Ok(self.prepared())
    }

    /// Ends the holder of `--detach-netns`, if there is one.
    fn stop(&mut self) {
        if let Some((pid, pidfd)) = self.holder.take() {
            stop_holder(pid, &pidfd);
        }
    }
}

impl Drop for LxcUserNic {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(binary: &str, ifname: Option<&str>, mtu: u32) -> NetOptions {
        NetOptions {
            mtu,
            cidr: None,
            ifname: ifname.map(String::from),
            disable_host_loopback: false,
            ipv6: false,
            sandbox: Default::default(),
            seccomp: Default::default(),
            binary: binary.into(),
            driver_ports: false,
            detach_netns: false,
            pesto: false,
        }
    }

    #[test]
    fn defaults_and_arguments() {
        let d = LxcUserNic::probe(&opts("/bin/true", None, 0), "lxcbr0").unwrap();
        assert_eq!((d.ifname.as_str(), d.mtu), ("eth0", 1500));
        let args: Vec<String> = d
            .args(4242)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "create",
                "/dev/null",
                "dummy",
                "4242",
                "veth",
                "lxcbr0",
                "eth0"
            ]
        );
        let p = d.prepared();
        assert_eq!(
            (p.net.mode, p.net.ifname_str(), p.net.mtu, p.net.addr),
            (NetMode::Dhcp, "eth0", 1500, [0; 4])
        );
        assert!(p.dns.is_empty() && p.api_socket.is_none());
        let d = LxcUserNic::probe(&opts("/bin/true", Some("veth7"), 9000), "br1").unwrap();
        assert_eq!(
            (d.ifname.as_str(), d.mtu, d.bridge.as_str()),
            ("veth7", 9000, "br1")
        );
    }

    #[test]
    fn probe_errors() {
        assert_eq!(
            LxcUserNic::probe(&opts("/nonexistent/lxc-user-nic", None, 0), "lxcbr0").err(),
            Some(
                "exec: \"/nonexistent/lxc-user-nic\": stat /nonexistent/lxc-user-nic: no such file or directory"
                    .into()
            )
        );
        assert_eq!(
            LxcUserNic::probe(&opts("/bin/true", None, 0), "").err(),
            Some("got empty bridge".into())
        );
        assert_eq!(
            LxcUserNic::probe(&opts("/bin/true", Some("sixteen-chars-xy"), 0), "lxcbr0").err(),
            Some(r#"ifname "sixteen-chars-xy" is longer than 15 bytes"#.into())
        );
    }

    #[test]
    fn failures_are_one_line() {
        assert_eq!(
            failure_text(
                "/usr/libexec/lxc/lxc-user-nic",
                b"cmd_create: 1: Quota reached\n\nlxc_user_nic: 2: failed\n",
                "exit status 1"
            ),
            "/usr/libexec/lxc/lxc-user-nic failed: cmd_create: 1: Quota reached; lxc_user_nic: 2: failed: exit status 1"
        );
        assert_eq!(
            failure_text("x", b"", "fork/exec /x: permission denied"),
            "x failed: : fork/exec /x: permission denied"
        );
    }
}
