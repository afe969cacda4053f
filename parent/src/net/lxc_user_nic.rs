//! `--net=lxc-user-nic` (experimental, as upstream): LXC's setuid `lxc-user-nic` creates a veth
//! pair, attaches the host end to a bridge (`lxcbr0`, served by lxc-net's dnsmasq) and moves the
//! other end into the child's network namespace as `--ifname` (default `eth0`).
//!
//! The parent only runs the helper, once, against the child's pid; the address, route and DNS
//! server come from the bridge's DHCP server, which the child asks itself
//! ([`NetMode::Dhcp`], `child::dhcp`), reporting the lease back in a `NetLease` frame.
//! Nothing is left to stop: the veth pair disappears with the namespace.

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use proto::{NetConfig, NetMode};

use super::{Driver, NetOptions, Prepared, StartError, Target};
use crate::exec;

/// `--ifname` when none is given.
pub const DEFAULT_IFNAME: &str = "eth0";
/// `--mtu` when 0: the bridge's usual MTU.
pub const DEFAULT_MTU: u32 = 1500;
/// The container path and name upstream passes: lxc-user-nic only uses them for its
/// bookkeeping of who owns which nic.
const DUMMY_PATH: &str = "/dev/null";
const DUMMY_NAME: &str = "dummy";

/// The lxc-user-nic network driver.
#[derive(Debug)]
pub struct LxcUserNic {
    /// `--lxc-user-nic-binary` as given, for messages.
    shown: String,
    /// The same, looked up in `$PATH`.
    binary: PathBuf,
    bridge: String,
    ifname: String,
    mtu: u32,
}

impl LxcUserNic {
    /// Looks the binary up in `$PATH` and settles the defaults, as upstream does before the
    /// state dir exists.
    ///
    /// # Errors
    /// Go's lookup error, `got empty bridge`, or a bad interface name.
    pub fn probe(opts: &NetOptions, bridge: &str) -> Result<LxcUserNic, String> {
        let binary = exec::look_path(OsStr::new(&opts.binary))?;
        if bridge.is_empty() {
            return Err("got empty bridge".into());
        }
        let ifname = super::interface_name(Some(opts.ifname.as_deref().unwrap_or(DEFAULT_IFNAME)))?;
        Ok(LxcUserNic {
            shown: opts.binary.clone(),
            binary,
            bridge: bridge.to_string(),
            ifname,
            mtu: if opts.mtu == 0 { DEFAULT_MTU } else { opts.mtu },
        })
    }

    /// The helper's arguments: `create /dev/null dummy <pid> veth <bridge> <ifname>`.
    pub fn args(&self, child_pid: i32) -> Vec<OsString> {
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
    pub fn prepared(&self) -> Prepared {
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

/// upstream's `<bin> failed: <output>: <error>`, on one line.
fn failure_text(shown: &str, output: &[u8], error: &str) -> String {
    let output = String::from_utf8_lossy(output);
    let output: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("{shown} failed: {}: {error}", output.join("; "))
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
        if target.netns.is_some() {
            return Err(StartError::Failed(
                "--detach-netns is not supported yet with lxc-user-nic".into(),
            ));
        }
        let (status, out) = exec::run_with_output(&self.binary, &self.args(target.child_pid))
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

    fn stop(&mut self) {}
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
            sandbox: String::new(),
            seccomp: String::new(),
            binary: binary.into(),
            driver_ports: false,
            detach_netns: false,
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
