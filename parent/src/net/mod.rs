//! Parent-side network drivers: the options they read, the common start/stop interface, and the
//! address arithmetic shared by slirp4netns and pasta.
//!
//! A driver is made in two steps. `probe` runs before any state exists: it finds the binary,
//! asks it which flags it knows and turns every option combination it cannot serve into
//! upstream's error line. `start` runs once the child's namespaces exist: it launches the
//! program, waits until the network is there and returns what the child must configure.

pub(crate) mod heal;
mod helper;
pub(crate) mod lxc_user_nic;
pub(crate) mod pasta;
pub(crate) mod resolv;
pub(crate) mod slirp4netns;
pub(crate) mod usernet;
pub(crate) mod vpnkit;

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use proto::{NetConfig, NetMode};

pub(crate) use helper::Readiness;

use crate::cli::{Cidr, Config, Net, PortDriver, Settings, Tristate};

/// MTU of slirp4netns and pasta when `--mtu` is 0.
pub(crate) const DEFAULT_MTU: u32 = 65520;
/// Interface name of slirp4netns and pasta when `--ifname` is empty.
pub(crate) const DEFAULT_IFNAME: &str = "tap0";
/// `--cidr` when none is given.
pub(crate) const DEFAULT_CIDR: ([u8; 4], u8) = ([10, 0, 2, 0], 24);

/// What a network driver needs to know from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetOptions {
    /// `--mtu`; 0 picks the driver's default.
    pub mtu: u32,
    /// `--cidr` as network address and prefix length (validated by the CLI).
    pub cidr: Option<([u8; 4], u8)>,
    /// `--ifname`; `None` picks the driver's default.
    pub ifname: Option<String>,
    /// `--disable-host-loopback`.
    pub disable_host_loopback: bool,
    /// `--ipv6`.
    pub ipv6: bool,
    /// `--slirp4netns-sandbox`.
    pub sandbox: Tristate,
    /// `--slirp4netns-seccomp`.
    pub seccomp: Tristate,
    /// The driver program (`--slirp4netns-binary`, `--pasta-binary`), looked up in `$PATH`.
    pub binary: String,
    /// The driver also forwards ports: `--port-driver=slirp4netns` (its API socket) or
    /// `--port-driver=implicit` (pasta's automatic forwarding).
    pub driver_ports: bool,
    /// `--detach-netns`.
    pub detach_netns: bool,
    /// `--port-driver=pesto`: pasta opens its control socket and `pesto` must be installed.
    pub pesto: bool,
}

impl NetOptions {
    /// The options of `cfg` for its `--net` driver, with the values [`crate::cli::check`]
    /// has typed in `settings`.
    pub(crate) fn from_config(cfg: &Config, settings: &Settings) -> NetOptions {
        let binary = match cfg.net {
            Net::Pasta => &cfg.pasta_binary,
            Net::Slirp4netns => &cfg.slirp4netns_binary,
            Net::Vpnkit => &cfg.vpnkit_binary,
            Net::LxcUserNic => &cfg.lxc_user_nic_binary,
            Net::Host | Net::None | Net::GvisorTapVsock => "",
        };
        NetOptions {
            mtu: settings.mtu,
            cidr: settings.cidr.map(Cidr::parts),
            ifname: cfg.ifname.clone().filter(|i| !i.is_empty()),
            disable_host_loopback: cfg.disable_host_loopback,
            ipv6: cfg.ipv6,
            sandbox: settings.slirp4netns_sandbox,
            seccomp: settings.slirp4netns_seccomp,
            binary: binary.to_string(),
            driver_ports: matches!(
                cfg.port_driver,
                PortDriver::Slirp4netns | PortDriver::Implicit
            ),
            detach_netns: cfg.detach_netns,
            pesto: cfg.port_driver == PortDriver::Pesto,
        }
    }
}

/// Where a driver attaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    /// The child's pid in our pid namespace.
    pub child_pid: i32,
    /// With `--detach-netns`: the namespace file as seen from outside,
    /// `/proc/<child_pid>/root/<state_dir>/netns`.
    pub netns: Option<&'a Path>,
    /// The state directory (it exists by now).
    pub state_dir: &'a Path,
}

/// What a started driver hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// The body of the `NetworkDriverCompleted` frame for the child.
    pub net: NetConfig,
    /// slirp4netns's API socket, or pasta's control socket, when the slirp4netns or pesto port
    /// driver will talk to it.
    pub api_socket: Option<PathBuf>,
    /// The DNS servers, in resolv.conf order, for `resolv.conf` and the API's info.
    pub dns: Vec<String>,
}

/// Why [`Driver::start`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartError {
    /// The driver could not be started or died: upstream's message, with its last output.
    Failed(String),
    /// One of the watched descriptors became readable first (a signal arrived, the child
    /// died); the driver has been stopped and the caller decides what happens next.
    Interrupted,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Failed(text) => f.write_str(text),
            StartError::Interrupted => f.write_str("interrupted while starting the network driver"),
        }
    }
}

/// A network driver that runs a program outside the namespaces.
pub(crate) trait Driver {
    /// The `--net` value it implements.
    fn name(&self) -> &'static str;

    /// Launches the program for `target`, and waits until the network is ready, watching
    /// `watch` meanwhile.
    ///
    /// # Errors
    /// [`StartError::Failed`] with upstream's text, or [`StartError::Interrupted`].
    fn start(
        &mut self,
        target: Target<'_>,
        watch: &[BorrowedFd<'_>],
    ) -> Result<Prepared, StartError>;

    /// Finishes a probe that was left running in the background (see
    /// [`slirp4netns::Slirp4netns::probe_async`]), before [`Driver::start`].
    ///
    /// # Errors
    /// The probe's errors, as a synchronous probe would have given them.
    fn settle(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// The tap the child makes as a persistent device before the driver attaches to it by
    /// name (see [`sys::net::tun_set_persist`]): the driver's exit then does not wait for the
    /// device's teardown. `None` for a driver that makes its device otherwise, and for pasta:
    /// a restarted pasta (`--restart-net-driver`) adds its addresses again and fails with
    /// "File exists" on the device that kept them.
    fn persistent_tap(&self) -> Option<String> {
        None
    }

    /// Ends the program if it is still running and waits for it. Idempotent; also run on drop.
    fn stop(&mut self);

    /// A descriptor that becomes readable when the running program ends (its pidfd), so the
    /// parent can notice a driver dying under a running target.
    fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Called once [`Driver::exit_fd`] became readable: reaps the program and says how it
    /// ended, with the tail of its output.
    fn describe_exit(&mut self) -> String {
        String::new()
    }

    /// Whether [`Driver::relaunch`] can start the program again after it died (slirp4netns
    /// and pasta; not vpnkit or lxc-user-nic).
    fn restartable(&self) -> bool {
        false
    }

    /// Starts the program again for `target` after it died, without waiting: readiness is
    /// [`Driver::ready_fd`] becoming readable and [`Driver::check_ready`] saying so, its end
    /// [`Driver::exit_fd`] as before.
    ///
    /// # Errors
    /// Why it could not be started.
    fn relaunch(&mut self, _target: Target<'_>) -> Result<(), String> {
        Err(format!("restarting {} is not supported yet", self.name()))
    }

    /// While a relaunched program is not ready yet: the descriptor its readiness comes on.
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Reads [`Driver::ready_fd`] once it was readable; on [`Readiness::Ready`] or
    /// [`Readiness::Closed`] the descriptor is gone.
    ///
    /// # Errors
    /// A failed read.
    fn check_ready(&mut self) -> Result<Readiness, String> {
        Ok(Readiness::Closed)
    }

    /// What the child must configure again once a relaunched program is ready (slirp4netns
    /// makes a new, unconfigured tap); `None` when the program configures it itself (pasta).
    fn reconfigure(&self) -> Option<NetConfig> {
        None
    }
}

/// The driver of `net`, probed against `opts`; `None` for `host` and `none`, which need no program.
///
/// # Errors
/// The driver's probe errors, or `network driver <x> is not supported yet`.
pub(crate) fn probe(net: Net, opts: &NetOptions) -> Result<Option<Box<dyn Driver>>, String> {
    match net {
        Net::Host | Net::None => Ok(None),
        Net::Slirp4netns => Ok(Some(Box::new(slirp4netns::Slirp4netns::probe_async(opts)?))),
        Net::Pasta => Ok(Some(Box::new(pasta::Pasta::probe(opts)?))),
        Net::Vpnkit => Ok(Some(Box::new(vpnkit::Vpnkit::probe(opts)?))),
        Net::GvisorTapVsock => Ok(Some(Box::new(usernet::Usernet::probe(opts)?))),
        other => Err(format!(
            "network driver {} is not supported yet",
            other.as_str()
        )),
    }
}

/// The driver of `cfg.net`, probed against the command line: [`probe`], plus the drivers whose
/// options go beyond [`NetOptions`] (lxc-user-nic's bridge).
///
/// # Errors
/// The driver's probe errors.
pub(crate) fn probe_config(
    cfg: &Config,
    settings: &Settings,
) -> Result<Option<Box<dyn Driver>>, String> {
    let opts = NetOptions::from_config(cfg, settings);
    match cfg.net {
        Net::LxcUserNic => Ok(Some(Box::new(lxc_user_nic::LxcUserNic::probe(
            &opts,
            &cfg.lxc_user_nic_bridge,
        )?))),
        net => probe(net, &opts),
    }
}

/// The addresses a slirp4netns or pasta network gives the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addrs {
    /// The child's address, net+100.
    pub addr: [u8; 4],
    /// The prefix length of the network.
    pub prefix: u8,
    /// The gateway, net+2 (the host's loopback unless `--disable-host-loopback`).
    pub gateway: [u8; 4],
    /// The DNS forwarder, net+3.
    pub dns: [u8; 4],
}

impl Addrs {
    /// The addresses for `cidr` ([`DEFAULT_CIDR`] when `None`).
    ///
    /// # Errors
    /// `<ip> + <k> overflows` when an address would pass 255.255.255.255.
    pub(crate) fn of(cidr: Option<([u8; 4], u8)>) -> Result<Addrs, String> {
        let (net, prefix) = cidr.unwrap_or(DEFAULT_CIDR);
        Ok(Addrs {
            addr: add_ipv4(net, 100)?,
            prefix,
            gateway: add_ipv4(net, 2)?,
            dns: add_ipv4(net, 3)?,
        })
    }
}

/// `ip + k` as one 32-bit integer, like upstream's `iputils.AddIPInt`. There is deliberately no
/// check that the result stays inside the prefix.
///
/// # Errors
/// `<ip> + <k> overflows`.
pub(crate) fn add_ipv4(ip: [u8; 4], k: u32) -> Result<[u8; 4], String> {
    u32::from_be_bytes(ip)
        .checked_add(k)
        .map(u32::to_be_bytes)
        .ok_or_else(|| format!("{} + {k} overflows", ipv4_text(ip)))
}

/// Dotted-quad text of an IPv4 address.
pub(crate) fn ipv4_text(ip: [u8; 4]) -> String {
    Ipv4Addr::from(ip).to_string()
}

/// `a.b.c.d/n`, as Go prints an `IPNet`.
pub(crate) fn cidr_text((net, prefix): ([u8; 4], u8)) -> String {
    format!("{}/{prefix}", ipv4_text(net))
}

/// The interface name to use: `ifname` or [`DEFAULT_IFNAME`].
///
/// # Errors
/// `ifname "<x>" is longer than 15 bytes` (the kernel's limit; upstream only fails later, in `ip`).
fn interface_name(ifname: Option<&str>) -> Result<String, String> {
    let name = ifname.unwrap_or(DEFAULT_IFNAME);
    let mut probe = NetConfig::empty(NetMode::Configure);
    match probe.set_ifname(name) {
        Ok(()) => Ok(name.to_string()),
        Err(_) if name.len() >= proto::IFNAMSIZ => Err(format!(
            "ifname {} is longer than {} bytes",
            crate::exec::quote(name),
            proto::IFNAMSIZ - 1
        )),
        Err(_) => Err(format!(
            "ifname {} is not a valid interface name",
            crate::exec::quote(name)
        )),
    }
}

/// The frame body for a driver's network.
fn net_config(
    mode: NetMode,
    ifname: &str,
    addrs: &Addrs,
    mtu: u32,
    dns6: Option<[u8; 16]>,
) -> NetConfig {
    let mut net = NetConfig::empty(mode);
    // Validated by `interface_name` during the probe.
    let _ = net.set_ifname(ifname);
    net.addr = addrs.addr;
    net.prefix = addrs.prefix;
    net.gateway = addrs.gateway;
    net.dns = addrs.dns;
    net.dns6 = dns6.unwrap_or([0; 16]);
    net.mtu = mtu;
    net
}

/// The last `max_lines` lines of a program's output, at most `max_bytes` long, trailing blank
/// lines dropped, invalid UTF-8 replaced.
pub(crate) fn last_lines(output: &[u8], max_lines: usize, max_bytes: usize) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text
        .trim_end()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(max_lines);
    let mut out = lines[start..].join("\n");
    if out.len() > max_bytes {
        let mut cut = out.len() - max_bytes;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("...{}", &out[cut..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_cidr() {
        /// Address, prefix, gateway, DNS.
        type Expect = ([u8; 4], u8, [u8; 4], [u8; 4]);
        let check = |cidr: Option<([u8; 4], u8)>, expect: Result<Expect, &str>| {
            let got = Addrs::of(cidr).map(|a| (a.addr, a.prefix, a.gateway, a.dns));
            assert_eq!(got, expect.map_err(String::from), "{cidr:?}");
        };
        check(
            None,
            Ok(([10, 0, 2, 100], 24, [10, 0, 2, 2], [10, 0, 2, 3])),
        );
        check(
            Some(([10, 0, 2, 0], 24)),
            Ok(([10, 0, 2, 100], 24, [10, 0, 2, 2], [10, 0, 2, 3])),
        );
        check(
            Some(([192, 168, 5, 0], 16)),
            Ok(([192, 168, 5, 100], 16, [192, 168, 5, 2], [192, 168, 5, 3])),
        );
        // Carries into the next octet; a tiny prefix is not checked, as upstream.
        check(
            Some(([10, 0, 2, 200], 30)),
            Ok(([10, 0, 3, 44], 30, [10, 0, 2, 202], [10, 0, 2, 203])),
        );
        check(
            Some(([255, 255, 255, 0], 24)),
            Ok((
                [255, 255, 255, 100],
                24,
                [255, 255, 255, 2],
                [255, 255, 255, 3],
            )),
        );
        check(
            Some(([255, 255, 255, 200], 29)),
            Err("255.255.255.200 + 100 overflows"),
        );
        check(
            Some(([255, 255, 255, 254], 31)),
            Err("255.255.255.254 + 100 overflows"),
        );
    }

    #[test]
    fn ipv4_addition() {
        let check = |ip: [u8; 4], k: u32, expect: Result<[u8; 4], &str>| {
            assert_eq!(
                add_ipv4(ip, k),
                expect.map_err(String::from),
                "{ip:?} + {k}"
            );
        };
        check([10, 0, 2, 0], 3, Ok([10, 0, 2, 3]));
        check([0, 0, 0, 255], 1, Ok([0, 0, 1, 0]));
        check([255, 255, 255, 253], 2, Ok([255, 255, 255, 255]));
        check(
            [255, 255, 255, 255],
            2,
            Err("255.255.255.255 + 2 overflows"),
        );
        check(
            [255, 255, 255, 254],
            3,
            Err("255.255.255.254 + 3 overflows"),
        );
    }

    #[test]
    fn texts() {
        assert_eq!(ipv4_text([10, 0, 2, 100]), "10.0.2.100");
        assert_eq!(cidr_text(([172, 16, 0, 0], 12)), "172.16.0.0/12");
        assert_eq!(cidr_text(([0, 0, 0, 0], 0)), "0.0.0.0/0");
    }

    #[test]
    fn interface_names() {
        let check = |name: Option<&str>, expect: Result<&str, &str>| {
            assert_eq!(
                interface_name(name),
                expect.map(String::from).map_err(String::from),
                "{name:?}"
            );
        };
        check(None, Ok("tap0"));
        check(Some("eth7"), Ok("eth7"));
        check(Some("fifteen-chars-x"), Ok("fifteen-chars-x"));
        check(
            Some("sixteen-chars-xy"),
            Err(r#"ifname "sixteen-chars-xy" is longer than 15 bytes"#),
        );
        check(
            Some("a\0b"),
            Err(r#"ifname "a\x00b" is not a valid interface name"#),
        );
    }

    #[test]
    fn frame_bodies() {
        let addrs = Addrs::of(None).unwrap();
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        v6[15] = 3;
        let net = net_config(NetMode::Configure, "tap0", &addrs, 65520, Some(v6));
        assert_eq!(net.mode, NetMode::Configure);
        assert_eq!(net.ifname_str(), "tap0");
        assert_eq!(net.addr, [10, 0, 2, 100]);
        assert_eq!(net.prefix, 24);
        assert_eq!(net.gateway, [10, 0, 2, 2]);
        assert_eq!(net.dns, [10, 0, 2, 3]);
        assert_eq!(net.dns6, v6);
        assert_eq!(net.mtu, 65520);
        let net = net_config(NetMode::Preconfigured, "eth9", &addrs, 1500, None);
        assert_eq!(
            (net.mode, net.ifname_str(), net.dns6, net.mtu),
            (NetMode::Preconfigured, "eth9", [0; 16], 1500)
        );
    }

    #[test]
    fn output_tails() {
        let check = |out: &[u8], lines: usize, bytes: usize, expect: &str| {
            assert_eq!(
                last_lines(out, lines, bytes),
                expect,
                "{:?}",
                String::from_utf8_lossy(out)
            );
        };
        check(b"", 3, 100, "");
        check(b"one\ntwo\nthree\nfour\n\n\n", 3, 100, "two\nthree\nfour");
        check(b"one\n\n  \ntwo", 5, 100, "one\ntwo");
        check(b"abcdefghij", 3, 4, "...ghij");
        check("x\u{e9}\u{e9}".as_bytes(), 3, 3, "...\u{e9}");
        check(b"bad \xff byte", 1, 100, "bad \u{fffd} byte");
    }

    fn config(args: &[&str]) -> Config {
        let mut argv = args.to_vec();
        argv.push("true");
        match crate::cli::parse_with_lxc_default(argv.iter().map(std::ffi::OsString::from), "") {
            Ok(crate::cli::Action::Run(cfg)) => cfg,
            _ => panic!("{args:?} does not parse"),
        }
    }

    /// The driver options of a command line that passes the CLI's checks.
    fn options(args: &[&str]) -> Result<NetOptions, String> {
        let cfg = config(args);
        let settings = crate::cli::check(&cfg).1?;
        Ok(NetOptions::from_config(&cfg, &settings))
    }

    #[test]
    fn options_from_the_command_line() {
        let opts = options(&["--net=slirp4netns"]).unwrap();
        assert_eq!(
            opts,
            NetOptions {
                mtu: 0,
                cidr: None,
                ifname: None,
                disable_host_loopback: false,
                ipv6: false,
                sandbox: Tristate::False,
                seccomp: Tristate::False,
                binary: "slirp4netns".into(),
                driver_ports: false,
                detach_netns: false,
                pesto: false,
            }
        );
        let opts = options(&[
            "--net=slirp4netns",
            "--mtu=1500",
            "--cidr=10.8.0.0/16",
            "--ifname=eth0",
            "--disable-host-loopback",
            "--ipv6",
            "--slirp4netns-sandbox=auto",
            "--slirp4netns-seccomp=true",
            "--slirp4netns-binary=/opt/s4nn",
            "--port-driver=slirp4netns",
        ])
        .unwrap();
        assert_eq!(
            (
                opts.mtu,
                opts.cidr,
                opts.ifname.as_deref(),
                opts.disable_host_loopback,
                opts.ipv6
            ),
            (1500, Some(([10, 8, 0, 0], 16)), Some("eth0"), true, true)
        );
        assert_eq!(
            (
                opts.sandbox.as_str(),
                opts.seccomp.as_str(),
                opts.binary.as_str(),
                opts.driver_ports
            ),
            ("auto", "true", "/opt/s4nn", true)
        );
        let opts = options(&[
            "--net=pasta",
            "--pasta-binary=/x/pasta",
            "--port-driver=implicit",
        ])
        .unwrap();
        assert_eq!(
            (opts.binary.as_str(), opts.driver_ports),
            ("/x/pasta", true)
        );
        let opts = options(&["--net=pasta", "--port-driver=none"]).unwrap();
        assert_eq!((opts.binary.as_str(), opts.driver_ports), ("pasta", false));
        let opts = options(&["--net=slirp4netns", "--port-driver=builtin"]).unwrap();
        assert!(!opts.driver_ports);
    }

    #[test]
    fn drivers_by_name() {
        let opts = options(&[]).unwrap();
        assert!(probe(Net::Host, &opts).unwrap().is_none());
        assert!(probe(Net::None, &opts).unwrap().is_none());
        assert_eq!(
            probe(Net::LxcUserNic, &opts).err().as_deref(),
            Some("network driver lxc-user-nic is not supported yet")
        );
    }
}
