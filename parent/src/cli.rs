//! Command line of `rootlesskit`: Go-flag syntax parsed into a plain [`Config`], the help text,
//! and the pure validation step that runs before anything touches the system.
//!
//! One table, `FLAGS`, names every flag once.
//! Parsing, the default values, the help text and the "did you mean" hint all read it, so they
//! cannot drift apart.
//!
//! The syntax is Go's `flag` package as driven by urfave/cli, because scripts written for
//! upstream call us: `-flag` and `--flag` are the same, values go in `--flag=v` or `--flag v`,
//! booleans only take `--b` or `--b=<go bool>`, and parsing stops at the first argument that is
//! not a flag.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::port::{PortSpec, check_family, parse_port_spec, validate_port_spec};
use sys::goflag::{self, VERSION};

/// The components of [`VERSION`], which `--print-semver` prints.
const VERSION_PARTS: [u32; 3] = [3, 0, 1];

/// `--net`: the network driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Net {
    Host,
    None,
    Pasta,
    Slirp4netns,
    Vpnkit,
    LxcUserNic,
    GvisorTapVsock,
}

/// `--port-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortDriver {
    None,
    Implicit,
    Builtin,
    Slirp4netns,
    GvisorTapVsock,
    /// Upstream v3.1: ports through pasta's `pesto` client (`--net=pasta` only).
    Pesto,
}

/// `--reaper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaper {
    Auto,
    True,
    False,
}

/// `--subid-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubidSource {
    Auto,
    Dynamic,
    Static,
}

/// `--propagation`. Upstream silently ignores unknown values; we keep the text for that case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Propagation {
    Private,
    Rprivate,
    Shared,
    Rshared,
    Slave,
    Rslave,
    /// Any other string: accepted and ignored, as upstream does.
    Other(String),
}

/// An IPv4 network as `--cidr` gives it: the network address (host bits clear) and the prefix
/// length (0..=32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub addr: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// The address and prefix length as the network drivers take them.
    pub(crate) fn parts(self) -> ([u8; 4], u8) {
        (self.addr.octets(), self.prefix)
    }
}

/// `--slirp4netns-sandbox` and `--slirp4netns-seccomp` (an empty value means `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Tristate {
    Auto,
    True,
    #[default]
    False,
}

impl Tristate {
    #[cfg(test)]
    /// The spelling used on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tristate::Auto => "auto",
            Tristate::True => "true",
            Tristate::False => "false",
        }
    }

    fn from_name(s: &str) -> Option<Tristate> {
        match s {
            "auto" => Some(Tristate::Auto),
            "true" => Some(Tristate::True),
            "false" | "" => Some(Tristate::False),
            _ => None,
        }
    }
}

/// `--copy-up-mode`: upstream knows `tmpfs+symlink`; `overlay` is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyUpMode {
    TmpfsSymlink,
    /// An unprivileged overlayfs (kernel 5.11+) with a tmpfs upper layer.
    Overlay,
}

impl CopyUpMode {
    /// The spelling used on the command line and in messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CopyUpMode::TmpfsSymlink => "tmpfs+symlink",
            CopyUpMode::Overlay => "overlay",
        }
    }
}

/// The values [`check`] turns from text into types, in upstream's validation order; the later
/// stages read these and never the text of the [`Config`] they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// `--mtu`, in 0..=65521; 0 picks the driver's default.
    pub mtu: u32,
    /// `--cidr`, when given and not empty.
    pub cidr: Option<Cidr>,
    /// `--slirp4netns-sandbox` (checked only for `--net=slirp4netns`, as upstream; `false` else).
    pub slirp4netns_sandbox: Tristate,
    /// `--slirp4netns-seccomp` (likewise).
    pub slirp4netns_seccomp: Tristate,
    /// `--copy-up-mode`.
    pub copy_up_mode: CopyUpMode,
}

/// Everything the command line says, after parsing and before validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub debug: bool,
    pub state_dir: Option<PathBuf>,
    pub net: Net,
    pub mtu: i64,
    pub cidr: Option<String>,
    pub ifname: Option<String>,
    pub disable_host_loopback: bool,
    pub ipv6: bool,
    pub detach_netns: bool,
    /// `--restart-net-driver`: restart slirp4netns or pasta when it dies under the target.
    pub restart_net_driver: bool,
    pub pasta_binary: String,
    pub slirp4netns_binary: String,
    pub slirp4netns_sandbox: String,
    pub slirp4netns_seccomp: String,
    pub vpnkit_binary: String,
    pub lxc_user_nic_binary: String,
    pub lxc_user_nic_bridge: String,
    pub copy_up: Vec<PathBuf>,
    pub copy_up_mode: String,
    pub propagation: Propagation,
    pub port_driver: PortDriver,
    /// The `-p` specs, parsed and validated (ports in range; not yet against each other).
    pub publish: Vec<PortSpec>,
    /// Why a `-p` spec was refused, kept until [`check`] reports it where upstream does (after
    /// the network and port driver checks); `publish` then holds the specs before it.
    pub publish_error: Option<String>,
    pub source_ip_transparent: bool,
    pub pidns: bool,
    pub cgroupns: bool,
    pub utsns: bool,
    pub ipcns: bool,
    pub reaper: Reaper,
    pub evacuate_cgroup2: Option<String>,
    pub subid_source: SubidSource,
    /// `--notify-ready`: who sends systemd `READY=1` through `$NOTIFY_SOCKET`.
    pub notify_ready: crate::notify::Ready,
    /// `--info-fd`: where the JSON info object goes once the namespaces are set up.
    pub info_fd: Option<i64>,
    /// `--json-status-fd`: where the `child-pid` and `exit-code` lines go.
    pub json_status_fd: Option<i64>,
    /// The target command and its arguments (never empty after a successful parse of a run).
    pub command: Vec<OsString>,
}

impl Net {
    /// The spelling used on the command line and in messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Net::Host => "host",
            Net::None => "none",
            Net::Pasta => "pasta",
            Net::Slirp4netns => "slirp4netns",
            Net::Vpnkit => "vpnkit",
            Net::LxcUserNic => "lxc-user-nic",
            Net::GvisorTapVsock => "gvisor-tap-vsock",
        }
    }

    fn from_name(s: &str) -> Option<Net> {
        [
            Net::Host,
            Net::None,
            Net::Pasta,
            Net::Slirp4netns,
            Net::Vpnkit,
            Net::LxcUserNic,
            Net::GvisorTapVsock,
        ]
        .into_iter()
        .find(|n| n.as_str() == s)
    }
}

impl PortDriver {
    /// The spelling used on the command line and in messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PortDriver::None => "none",
            PortDriver::Implicit => "implicit",
            PortDriver::Builtin => "builtin",
            PortDriver::Slirp4netns => "slirp4netns",
            PortDriver::GvisorTapVsock => "gvisor-tap-vsock",
            PortDriver::Pesto => "pesto",
        }
    }

    fn from_name(s: &str) -> Option<PortDriver> {
        [
            PortDriver::None,
            PortDriver::Implicit,
            PortDriver::Builtin,
            PortDriver::Slirp4netns,
            PortDriver::GvisorTapVsock,
            PortDriver::Pesto,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

impl Propagation {
    /// The spelling used on the command line and in messages.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Propagation::Private => "private",
            Propagation::Rprivate => "rprivate",
            Propagation::Shared => "shared",
            Propagation::Rshared => "rshared",
            Propagation::Slave => "slave",
            Propagation::Rslave => "rslave",
            Propagation::Other(s) => s,
        }
    }

    fn from_name(s: &str) -> Propagation {
        match s {
            "private" => Propagation::Private,
            "rprivate" => Propagation::Rprivate,
            "shared" => Propagation::Shared,
            "rshared" => Propagation::Rshared,
            "slave" => Propagation::Slave,
            "rslave" => Propagation::Rslave,
            other => Propagation::Other(other.to_owned()),
        }
    }
}

/// What the command line asks for.
// Built once per process; boxing the config would only add noise at every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// `--help`: print [`help_text`] to stdout and exit 0.
    Help,
    /// `--version`: print `rootlesskit version 3.0.1` to stdout and exit 0.
    Version,
    /// `--print-semver=major|minor|patch`: print the number and a newline to stdout, exit 0.
    PrintSemver(u32),
    /// Run a command; [`validate`] it first.
    Run(Config),
    /// `--check` or `--check-json`: report whether this host can run us, create nothing, and
    /// exit 0 or 1 (the flags given with it, such as `--subid-source`, are honoured; a
    /// command is ignored, as `--help` ignores it).
    Check { cfg: Config, json: bool },
}

/// A command line that cannot be used.
///
/// Syntax errors (`shows_usage()`) are reported the way urfave/cli does: `Incorrect Usage: <msg>`,
/// a blank line and the help on stdout, then the usual error line on stderr.
/// The other errors only get the error line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    message: String,
    usage: bool,
    /// A table name (without dashes).
    suggestion: Option<&'static str>,
}

impl CliError {
    fn usage(message: String) -> CliError {
        CliError {
            message,
            usage: true,
            suggestion: None,
        }
    }

    fn plain(message: String) -> CliError {
        CliError {
            message,
            usage: false,
            suggestion: None,
        }
    }

    #[cfg(any(test, fuzzing))]
    /// The error text, without any prefix.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    #[cfg(any(test, fuzzing))]
    /// Whether this is a syntax error that upstream answers with `Incorrect Usage:` and the help.
    pub(crate) fn shows_usage(&self) -> bool {
        self.usage
    }

    /// For an unknown flag, the closest known one, spelled `--name`.
    pub(crate) fn suggestion(&self) -> Option<String> {
        self.suggestion.map(|name| format!("--{name}"))
    }

    /// What goes to stdout for a syntax error, given the full help text; `None` for other errors.
    ///
    /// `Incorrect Usage: <msg>`, a blank line, then `Did you mean "--x"?` and a blank line when a
    /// flag name looks mistyped (urfave's wording for its suggestion), then the help.
    pub(crate) fn usage_text(&self, help: &str) -> Option<String> {
        if !self.usage {
            return None;
        }
        let mut out = format!("Incorrect Usage: {}\n\n", self.message);
        if let Some(s) = self.suggestion() {
            out.push_str(&format!(
                "Did you mean {}?\n\n",
                sys::golang::quote(s.as_bytes())
            ));
        }
        out.push_str(help);
        Some(out)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

// ---------------------------------------------------------------------------------------------
// The flag table.

/// Which field a flag sets; the one `match` over it is in [`store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Debug,
    PrintSemver,
    StateDir,
    Net,
    PastaBinary,
    Slirp4netnsBinary,
    Slirp4netnsSandbox,
    Slirp4netnsSeccomp,
    VpnkitBinary,
    LxcUserNicBinary,
    LxcUserNicBridge,
    Mtu,
    Cidr,
    Ifname,
    DisableHostLoopback,
    Ipv6,
    CopyUp,
    CopyUpMode,
    PortDriver,
    Publish,
    SourceIpTransparent,
    Pidns,
    Cgroupns,
    Utsns,
    Ipcns,
    DetachNetns,
    RestartNetDriver,
    Propagation,
    Reaper,
    EvacuateCgroup2,
    SubidSource,
    NotifyReady,
    InfoFd,
    JsonStatusFd,
    Check,
    CheckJson,
    Help,
    Version,
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--b` or `--b=<go bool>`; never takes the next argument.
    Bool,
    /// One string; a repeated flag keeps the last.
    Str,
    /// A Go base-0 integer.
    Int,
    /// Accumulates; each occurrence is split on commas.
    List,
}

/// The default value, which help shows the way urfave does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Def {
    /// Nothing shown (empty string, empty list, or `--help`/`--version`).
    Hidden,
    Str(&'static str),
    Bool(bool),
    Int(i64),
    /// The lxc-user-nic path found on this machine at startup.
    LxcProbe,
}

#[derive(Debug, Clone, Copy)]
struct Flag {
    name: &'static str,
    alias: Option<&'static str>,
    id: Id,
    kind: Kind,
    def: Def,
    category: &'static str,
    usage: &'static str,
}

const MISC: &str = "Misc";
const STATE: &str = "State";
const NETWORK: &str = "Network";
const PASTA: &str = "Network [pasta]";
const SLIRP4NETNS: &str = "Network [slirp4netns]";
const VPNKIT: &str = "Network [vpnkit]";
const LXC: &str = "Network [lxc-user-nic]";
const MOUNT: &str = "Mount";
const PORT: &str = "Port";
const PROCESS: &str = "Process";
const SUBID: &str = "SubID";

const fn flag(
    name: &'static str,
    id: Id,
    kind: Kind,
    def: Def,
    category: &'static str,
    usage: &'static str,
) -> Flag {
    Flag {
        name,
        alias: None,
        id,
        kind,
        def,
        category,
        usage,
    }
}

/// Every flag, in upstream's declaration order (which is the order inside a help category).
/// Names, value lists in brackets, defaults and categories match upstream; the prose is ours.
const FLAGS: &[Flag] = &[
    flag(
        "debug",
        Id::Debug,
        Kind::Bool,
        Def::Bool(false),
        MISC,
        "log debug messages",
    ),
    flag(
        "print-semver",
        Id::PrintSemver,
        Kind::Str,
        Def::Hidden,
        MISC,
        "print one component of the version as a plain number and exit [major, minor, patch]",
    ),
    flag(
        "state-dir",
        Id::StateDir,
        Kind::Str,
        Def::Hidden,
        STATE,
        "directory for the lock, the API socket and the other run-time files (a new temporary directory if unset)",
    ),
    flag(
        "info-fd",
        Id::InfoFd,
        Kind::Int,
        Def::Hidden,
        STATE,
        "write one JSON object (child-pid, state-dir, api-socket, the namespaces' ids, net-driver, child-ip) to this open descriptor once the namespaces are set up, then close it",
    ),
    flag(
        "json-status-fd",
        Id::JsonStatusFd,
        Kind::Int,
        Def::Hidden,
        STATE,
        "write {\"child-pid\":N} to this open descriptor once the namespaces are set up, and {\"exit-code\":N} when rootlesskit exits",
    ),
    flag(
        "net",
        Id::Net,
        Kind::Str,
        Def::Str("host"),
        NETWORK,
        "how the namespace reaches the network [host, none, pasta(experimental), slirp4netns, vpnkit, lxc-user-nic(experimental), gvisor-tap-vsock(experimental)]",
    ),
    flag(
        "pasta-binary",
        Id::PastaBinary,
        Kind::Str,
        Def::Str("pasta"),
        PASTA,
        "pasta program that --net=pasta runs",
    ),
    flag(
        "slirp4netns-binary",
        Id::Slirp4netnsBinary,
        Kind::Str,
        Def::Str("slirp4netns"),
        SLIRP4NETNS,
        "slirp4netns program that --net=slirp4netns runs",
    ),
    flag(
        "slirp4netns-sandbox",
        Id::Slirp4netnsSandbox,
        Kind::Str,
        Def::Str("false"),
        SLIRP4NETNS,
        "confine slirp4netns in its own sandbox (experimental) [auto, true, false]",
    ),
    flag(
        "slirp4netns-seccomp",
        Id::Slirp4netnsSeccomp,
        Kind::Str,
        Def::Str("false"),
        SLIRP4NETNS,
        "restrict the system calls of slirp4netns with seccomp (experimental) [auto, true, false]",
    ),
    flag(
        "vpnkit-binary",
        Id::VpnkitBinary,
        Kind::Str,
        Def::Str("vpnkit"),
        VPNKIT,
        "VPNKit program that --net=vpnkit runs",
    ),
    flag(
        "lxc-user-nic-binary",
        Id::LxcUserNicBinary,
        Kind::Str,
        Def::LxcProbe,
        LXC,
        "lxc-user-nic program that --net=lxc-user-nic runs",
    ),
    flag(
        "lxc-user-nic-bridge",
        Id::LxcUserNicBridge,
        Kind::Str,
        Def::Str("lxcbr0"),
        LXC,
        "host bridge that lxc-user-nic attaches the namespace to",
    ),
    flag(
        "mtu",
        Id::Mtu,
        Kind::Int,
        Def::Int(0),
        NETWORK,
        "MTU of the interface in the namespace; 0 picks the driver's own (65520 for pasta, slirp4netns and gvisor-tap-vsock, 1500 for others)",
    ),
    flag(
        "cidr",
        Id::Cidr,
        Kind::Str,
        Def::Hidden,
        NETWORK,
        "address range of the namespace with pasta, slirp4netns and gvisor-tap-vsock (10.0.2.0/24 if unset)",
    ),
    flag(
        "ifname",
        Id::Ifname,
        Kind::Str,
        Def::Hidden,
        NETWORK,
        "name of the interface in the namespace (tap0 for pasta, slirp4netns, vpnkit, and gvisor-tap-vsock; eth0 for lxc-user-nic if unset)",
    ),
    flag(
        "disable-host-loopback",
        Id::DisableHostLoopback,
        Kind::Bool,
        Def::Bool(false),
        NETWORK,
        "block connections from the namespace to 127.0.0.1:* of the host",
    ),
    flag(
        "ipv6",
        Id::Ipv6,
        Kind::Bool,
        Def::Bool(false),
        NETWORK,
        "route IPv6 as well, with pasta and slirp4netns only; port forwarding is not affected (experimental)",
    ),
    Flag {
        name: "copy-up",
        alias: None,
        id: Id::CopyUp,
        kind: Kind::List,
        def: Def::Hidden,
        category: MOUNT,
        usage: "mount a writable copy over this directory, e.g. \"--copy-up=/etc\" (usually needed with a non-host network)",
    },
    flag(
        "copy-up-mode",
        Id::CopyUpMode,
        Kind::Str,
        Def::Str("tmpfs+symlink"),
        MOUNT,
        "how the copy is made [tmpfs+symlink, overlay]",
    ),
    flag(
        "port-driver",
        Id::PortDriver,
        Kind::Str,
        Def::Str("none"),
        PORT,
        "how ports reach a non-host network [none, implicit (for pasta), builtin, slirp4netns, gvisor-tap-vsock(experimental), pesto (for pasta)]",
    ),
    Flag {
        name: "publish",
        alias: Some("p"),
        id: Id::Publish,
        kind: Kind::List,
        def: Def::Hidden,
        category: PORT,
        usage: "forward a host port into the namespace, e.g. \"127.0.0.1:8080:80/tcp\"",
    },
    flag(
        "source-ip-transparent",
        Id::SourceIpTransparent,
        Kind::Bool,
        Def::Bool(true),
        PORT,
        "let forwarded connections and datagrams keep the client's source address, using IP_TRANSPARENT (builtin port driver)",
    ),
    flag(
        "pidns",
        Id::Pidns,
        Kind::Bool,
        Def::Bool(false),
        PROCESS,
        "give the command its own PID namespace",
    ),
    flag(
        "cgroupns",
        Id::Cgroupns,
        Kind::Bool,
        Def::Bool(false),
        PROCESS,
        "give the command its own cgroup namespace",
    ),
    flag(
        "utsns",
        Id::Utsns,
        Kind::Bool,
        Def::Bool(false),
        PROCESS,
        "give the command its own UTS namespace",
    ),
    flag(
        "ipcns",
        Id::Ipcns,
        Kind::Bool,
        Def::Bool(false),
        PROCESS,
        "give the command its own IPC namespace",
    ),
    flag(
        "detach-netns",
        Id::DetachNetns,
        Kind::Bool,
        Def::Bool(false),
        NETWORK,
        "keep the command in the host's network namespace and leave the new one detached for others to enter",
    ),
    flag(
        "restart-net-driver",
        Id::RestartNetDriver,
        Kind::Bool,
        Def::Bool(true),
        NETWORK,
        "start slirp4netns or pasta again (up to 5 times) when it dies while the command runs; not for vpnkit or lxc-user-nic",
    ),
    flag(
        "propagation",
        Id::Propagation,
        Kind::Str,
        Def::Str("rprivate"),
        MOUNT,
        "how mount events flow from the host into the namespace [rprivate, rslave]",
    ),
    flag(
        "reaper",
        Id::Reaper,
        Kind::Str,
        Def::Str("auto"),
        PROCESS,
        "collect orphaned processes; needs --pidns [auto,true,false]",
    ),
    flag(
        "notify-ready",
        Id::NotifyReady,
        Kind::Str,
        Def::Str("target"),
        PROCESS,
        "with $NOTIFY_SOCKET (systemd Type=notify), who sends READY=1: the command, through rootlesskit's relay, or rootlesskit once the namespaces are up [target, child]",
    ),
    flag(
        "evacuate-cgroup2",
        Id::EvacuateCgroup2,
        Kind::Str,
        Def::Hidden,
        PROCESS,
        "move the processes of the current cgroup into this new subgroup; needs --pidns and --cgroupns",
    ),
    flag(
        "subid-source",
        Id::SubidSource,
        Kind::Str,
        Def::Str("auto"),
        SUBID,
        "where subordinate ids come from: \"dynamic\" asks /usr/bin/getsubids, \"static\" reads /etc/{subuid,subgid} [auto,dynamic,static]",
    ),
    flag(
        "check",
        Id::Check,
        Kind::Bool,
        Def::Bool(false),
        MISC,
        "check whether this host can run rootlesskit (user namespaces, subordinate ids, newuidmap, /dev/net/tun, network drivers, cgroups), print one line per check and exit; 0 when a plain \"rootlesskit true\" would work; creates nothing",
    ),
    flag(
        "check-json",
        Id::CheckJson,
        Kind::Bool,
        Def::Bool(false),
        MISC,
        "like --check, as one JSON object",
    ),
    Flag {
        name: "help",
        alias: Some("h"),
        id: Id::Help,
        kind: Kind::Bool,
        def: Def::Hidden,
        category: MISC,
        usage: "show this help",
    },
    Flag {
        name: "version",
        alias: Some("v"),
        id: Id::Version,
        kind: Kind::Bool,
        def: Def::Hidden,
        category: MISC,
        usage: "print the version",
    },
];

fn lookup(name: &[u8]) -> Option<&'static Flag> {
    FLAGS
        .iter()
        .find(|f| f.name.as_bytes() == name || f.alias.is_some_and(|a| a.as_bytes() == name))
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// The flags as typed, before the enum-valued ones are checked.
#[derive(Debug, Default)]
struct Raw {
    debug: bool,
    print_semver: String,
    state_dir: OsString,
    net: String,
    pasta_binary: String,
    slirp4netns_binary: String,
    slirp4netns_sandbox: String,
    slirp4netns_seccomp: String,
    vpnkit_binary: String,
    lxc_user_nic_binary: Option<String>,
    lxc_user_nic_bridge: String,
    mtu: i64,
    cidr: String,
    ifname: String,
    disable_host_loopback: bool,
    ipv6: bool,
    detach_netns: bool,
    restart_net_driver: bool,
    copy_up: Vec<PathBuf>,
    copy_up_mode: String,
    propagation: String,
    port_driver: String,
    publish: Vec<String>,
    source_ip_transparent: bool,
    pidns: bool,
    cgroupns: bool,
    utsns: bool,
    ipcns: bool,
    reaper: String,
    evacuate_cgroup2: String,
    subid_source: String,
    notify_ready: String,
    info_fd: Option<i64>,
    json_status_fd: Option<i64>,
    check: bool,
    check_json: bool,
    help: bool,
    version: bool,
}

impl Raw {
    /// Every field at its table default; the lxc-user-nic path stays unset until it is needed.
    fn defaults() -> Raw {
        let mut raw = Raw::default();
        for f in FLAGS {
            let text = match f.def {
                Def::Str(s) => s.to_owned(),
                Def::Bool(b) => b.to_string(),
                Def::Int(n) => n.to_string(),
                Def::Hidden | Def::LxcProbe => continue,
            };
            // Table defaults are valid values; a bad one would show up in the tests.
            let _ = store(&mut raw, f.id, OsString::from(text));
        }
        raw
    }
}

/// Sets the field of `id` from a value as typed; the error is the reason part of Go's message.
fn store(raw: &mut Raw, id: Id, value: OsString) -> Result<(), &'static str> {
    let bool_value = || goflag::parse_bool(value.as_bytes()).ok_or("parse error");
    let text = || value.clone().into_string().map_err(|_| "invalid UTF-8");
    match id {
        Id::Debug => raw.debug = bool_value()?,
        Id::PrintSemver => raw.print_semver = text()?,
        Id::StateDir => raw.state_dir = value,
        Id::Net => raw.net = text()?,
        Id::PastaBinary => raw.pasta_binary = text()?,
        Id::Slirp4netnsBinary => raw.slirp4netns_binary = text()?,
        Id::Slirp4netnsSandbox => raw.slirp4netns_sandbox = text()?,
        Id::Slirp4netnsSeccomp => raw.slirp4netns_seccomp = text()?,
        Id::VpnkitBinary => raw.vpnkit_binary = text()?,
        Id::LxcUserNicBinary => raw.lxc_user_nic_binary = Some(text()?),
        Id::LxcUserNicBridge => raw.lxc_user_nic_bridge = text()?,
        Id::Mtu => raw.mtu = goflag::parse_int(value.as_bytes())?,
        Id::Cidr => raw.cidr = text()?,
        Id::Ifname => raw.ifname = text()?,
        Id::DisableHostLoopback => raw.disable_host_loopback = bool_value()?,
        Id::Ipv6 => raw.ipv6 = bool_value()?,
        Id::CopyUp => raw.copy_up.extend(
            split_list(value.as_bytes())
                .into_iter()
                .map(|p| PathBuf::from(OsString::from_vec(p))),
        ),
        Id::CopyUpMode => raw.copy_up_mode = text()?,
        Id::PortDriver => raw.port_driver = text()?,
        // urfave's slice: split on ',' and trimmed, but empty parts kept (`-p ""` is a spec).
        Id::Publish => {
            for part in text()?.split(',') {
                raw.publish.push(part.trim().to_owned());
            }
        }
        Id::SourceIpTransparent => raw.source_ip_transparent = bool_value()?,
        Id::Pidns => raw.pidns = bool_value()?,
        Id::Cgroupns => raw.cgroupns = bool_value()?,
        Id::Utsns => raw.utsns = bool_value()?,
        Id::Ipcns => raw.ipcns = bool_value()?,
        Id::DetachNetns => raw.detach_netns = bool_value()?,
        Id::RestartNetDriver => raw.restart_net_driver = bool_value()?,
        Id::Propagation => raw.propagation = text()?,
        Id::Reaper => raw.reaper = text()?,
        Id::EvacuateCgroup2 => raw.evacuate_cgroup2 = text()?,
        Id::SubidSource => raw.subid_source = text()?,
        Id::NotifyReady => raw.notify_ready = text()?,
        Id::InfoFd => raw.info_fd = Some(goflag::parse_int(value.as_bytes())?),
        Id::JsonStatusFd => raw.json_status_fd = Some(goflag::parse_int(value.as_bytes())?),
        Id::Check => raw.check = bool_value()?,
        Id::CheckJson => raw.check_json = bool_value()?,
        Id::Help => raw.help = bool_value()?,
        Id::Version => raw.version = bool_value()?,
    }
    Ok(())
}

/// Parses `rootlesskit`'s arguments (without argv\[0\]), probing this machine for the
/// lxc-user-nic default when the command line does not name one.
pub(crate) fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Action, CliError> {
    parse_inner(args, &mut lxc_user_nic_default)
}

#[cfg(any(test, fuzzing))]
/// [`parse`] with a fixed `--lxc-user-nic-binary` default, for tests and fuzzing.
pub(crate) fn parse_with_lxc_default<I: IntoIterator<Item = OsString>>(
    args: I,
    lxc_default: &str,
) -> Result<Action, CliError> {
    parse_inner(args, &mut || lxc_default.to_owned())
}

fn parse_inner<I: IntoIterator<Item = OsString>>(
    args: I,
    lxc_default: &mut dyn FnMut() -> String,
) -> Result<Action, CliError> {
    let (raw, command) = parse_flags(args.into_iter().collect())?;
    // urfave's order: help, version, then the action (print-semver before "no command").
    if raw.help {
        return Ok(Action::Help);
    }
    if raw.version {
        return Ok(Action::Version);
    }
    if !raw.print_semver.is_empty() {
        let index = match raw.print_semver.as_str() {
            "major" => 0,
            "minor" => 1,
            "patch" => 2,
            other => {
                return Err(CliError::plain(format!(
                    "expected --print-semver=(major|minor|patch), got {}",
                    sys::golang::quote(other.as_bytes())
                )));
            }
        };
        return Ok(Action::PrintSemver(VERSION_PARTS[index]));
    }
    if raw.check || raw.check_json {
        let json = raw.check_json;
        return build(raw, command, lxc_default).map(|cfg| Action::Check { cfg, json });
    }
    if command.is_empty() {
        return Err(CliError::plain("no command specified".to_owned()));
    }
    build(raw, command, lxc_default).map(Action::Run)
}

/// Turns the typed values into a [`Config`]; unknown enum values fail here, before any side effect.
fn build(
    raw: Raw,
    command: Vec<OsString>,
    lxc_default: &mut dyn FnMut() -> String,
) -> Result<Config, CliError> {
    let net = Net::from_name(&raw.net)
        .ok_or_else(|| CliError::plain(format!("unknown network mode: {}", raw.net)))?;
    let port_driver = PortDriver::from_name(&raw.port_driver)
        .ok_or_else(|| CliError::plain(format!("unknown port driver: {}", raw.port_driver)))?;
    let subid_source = match raw.subid_source.as_str() {
        "auto" => SubidSource::Auto,
        "dynamic" => SubidSource::Dynamic,
        "static" => SubidSource::Static,
        other => {
            return Err(CliError::plain(format!(
                "unknown subid source {}",
                sys::golang::quote(other.as_bytes())
            )));
        }
    };
    let reaper = match raw.reaper.as_str() {
        "auto" => Reaper::Auto,
        "true" => Reaper::True,
        "false" => Reaper::False,
        other => return Err(CliError::plain(format!("unknown reaper mode: {other}"))),
    };
    let notify_ready = match raw.notify_ready.as_str() {
        "target" => crate::notify::Ready::Target,
        "child" => crate::notify::Ready::Child,
        other => {
            return Err(CliError::plain(format!(
                "unknown notify-ready mode: {other}"
            )));
        }
    };
    let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
    let mut publish = Vec::new();
    let mut publish_error = None;
    for text in &raw.publish {
        match parse_publish(text) {
            Ok(spec) => publish.push(spec),
            Err(e) => {
                publish_error = Some(e);
                break;
            }
        }
    }
    Ok(Config {
        debug: raw.debug,
        state_dir: if raw.state_dir.is_empty() {
            None
        } else {
            Some(PathBuf::from(raw.state_dir))
        },
        net,
        mtu: raw.mtu,
        cidr: non_empty(raw.cidr),
        ifname: non_empty(raw.ifname),
        disable_host_loopback: raw.disable_host_loopback,
        ipv6: raw.ipv6,
        detach_netns: raw.detach_netns,
        restart_net_driver: raw.restart_net_driver,
        pasta_binary: raw.pasta_binary,
        slirp4netns_binary: raw.slirp4netns_binary,
        slirp4netns_sandbox: raw.slirp4netns_sandbox,
        slirp4netns_seccomp: raw.slirp4netns_seccomp,
        vpnkit_binary: raw.vpnkit_binary,
        lxc_user_nic_binary: raw.lxc_user_nic_binary.unwrap_or_else(lxc_default),
        lxc_user_nic_bridge: raw.lxc_user_nic_bridge,
        copy_up: raw.copy_up,
        copy_up_mode: raw.copy_up_mode,
        propagation: Propagation::from_name(&raw.propagation),
        port_driver,
        publish,
        publish_error,
        source_ip_transparent: raw.source_ip_transparent,
        pidns: raw.pidns,
        cgroupns: raw.cgroupns,
        utsns: raw.utsns,
        ipcns: raw.ipcns,
        reaper,
        evacuate_cgroup2: non_empty(raw.evacuate_cgroup2),
        subid_source,
        notify_ready,
        info_fd: raw.info_fd,
        json_status_fd: raw.json_status_fd,
        command,
    })
}

/// One `-p` spec as upstream's `createParentOpt` takes it: `ParsePortSpec`, then
/// `ValidatePortSpec` with no ports yet. A parent IP of the wrong family for the proto is
/// refused here too, with the line upstream gives when it fails to bind it later.
fn parse_publish(text: &str) -> Result<PortSpec, String> {
    let spec = parse_port_spec(text)?;
    validate_port_spec(&spec, &[])?;
    check_family(&spec).map_err(|e| format!("failed to expose port {}: {e}", spec.go_value()))?;
    Ok(spec)
}

/// Reads the flags; returns the typed values and the command (possibly empty).
fn parse_flags(args: Vec<OsString>) -> Result<(Raw, Vec<OsString>), CliError> {
    let mut raw = Raw::defaults();
    // For flags with two names: which spellings were used (urfave refuses a mix).
    let aliased: Vec<&Flag> = FLAGS.iter().filter(|f| f.alias.is_some()).collect();
    let mut used = vec![(false, false); aliased.len()];
    let takes_value = |name: &str| lookup(name.as_bytes()).map(|f| f.kind != Kind::Bool);
    let mut parser = goflag::Parser::new(&args);
    loop {
        let (name, value) = match parser.next(takes_value) {
            Ok(Some(goflag::Flag { name, value })) => (name, value),
            Ok(None) => break,
            Err(e) => {
                let suggestion = e.undefined_name().and_then(suggest);
                let mut e = CliError::usage(e.message);
                e.suggestion = suggestion;
                return Err(e);
            }
        };
        let Some(f) = lookup(name.as_bytes()) else {
            continue; // the parser only returns names the table knows
        };
        if let Some(slot) = aliased.iter().position(|g| g.id == f.id) {
            if f.alias == Some(name.as_str()) {
                used[slot].1 = true;
            } else {
                used[slot].0 = true;
            }
        }
        let value = match value {
            goflag::Value::Bool(b) => OsString::from(if b { "true" } else { "false" }),
            goflag::Value::Text(v) => v.to_os_string(),
        };
        if let Err(why) = store(&mut raw, f.id, value.clone()) {
            return Err(CliError::usage(
                goflag::invalid_value(&name, &value, why).message,
            ));
        }
    }
    for (f, (long, alias)) in aliased.iter().zip(used) {
        if long && alias {
            return Err(CliError::usage(format!(
                "Cannot use two forms of the same flag: {} {}",
                f.alias.unwrap_or_default(),
                f.name
            )));
        }
    }
    let command = parser.rest().to_vec();
    Ok((raw, command))
}

/// One occurrence of a list flag: split on commas, trim white space, drop empty parts.
fn split_list(value: &[u8]) -> Vec<Vec<u8>> {
    value
        .split(|&b| b == b',')
        .map(|part| match std::str::from_utf8(part) {
            Ok(s) => s.trim().as_bytes().to_vec(),
            Err(_) => part.trim_ascii().to_vec(),
        })
        .filter(|part| !part.is_empty())
        .collect()
}

/// The known flag closest to a mistyped one, if any is close enough to be a useful hint.
fn suggest(name: &str) -> Option<&'static str> {
    let typed = name.trim_start_matches('-');
    if typed.is_empty() {
        return None;
    }
    let best = FLAGS
        .iter()
        .map(|f| (edit_distance(typed, f.name), f.name))
        .min_by_key(|&(d, _)| d)?;
    let allowed = (typed.len().max(best.1.len()) / 3).max(1);
    (best.0 <= allowed).then_some(best.1)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
/// neighbours all cost 1, so `nte` is one step from `net`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

// ---------------------------------------------------------------------------------------------
// The lxc-user-nic default.

/// The first lxc-user-nic that exists on this machine, as upstream picks it at startup; `""` if none.
pub(crate) fn lxc_user_nic_default() -> String {
    let uname = rustix::system::uname();
    let machine = uname.machine().to_string_lossy();
    probe_lxc_user_nic(&machine, |path| std::fs::metadata(path).is_ok())
}

/// The probe behind [`lxc_user_nic_default`], with the machine name (`uname -m`) and the
/// existence check passed in.
pub(crate) fn probe_lxc_user_nic(machine: &str, exists: impl Fn(&str) -> bool) -> String {
    [
        "/usr/libexec/lxc/lxc-user-nic".to_owned(), // Debian, Fedora
        format!("/usr/lib/{machine}-linux-gnu/lxc/lxc-user-nic"), // Ubuntu
        "/usr/lib/lxc/lxc-user-nic".to_owned(),     // Arch Linux
    ]
    .into_iter()
    .find(|p| exists(p))
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Help.

const HELP_HEAD: &str = "\
NAME:
   rootlesskit - fake root for unprivileged users, built on Linux user namespaces

USAGE:
   rootlesskit [global options] [arguments...]

VERSION:
   ";

const HELP_DESCRIPTION: &str = r#"

DESCRIPTION:
   RootlessKit runs a command as "root" inside new user_namespaces(7), without any privilege on the host.

   It reimplements https://github.com/rootless-containers/rootlesskit

   Examples:
     # a shell in a new user namespace and a new mount namespace
     rootlesskit bash

     # a shell in which /etc can be written to
     rootlesskit --copy-up=/etc bash

     # a shell that sees mounts made on the host later (rslave propagation)
     rootlesskit --propagation=rslave bash

     # a shell with its own network through slirp4netns, where 80/tcp inside is 127.0.0.1:8080/tcp on the host
     rootlesskit --copy-up=/etc --net=slirp4netns --disable-host-loopback --port-driver=builtin -p 127.0.0.1:8080:80/tcp bash

   Note: the real root user must first give you subordinate ids in /etc/subuid and /etc/subgid.
   How to: https://rootlesscontaine.rs/getting-started/common/ .

OPTIONS:
"#;

/// The `--help` text: upstream's layout (urfave/cli with categories in alphabetical order) with
/// our wording. `lxc_default` is the `--lxc-user-nic-binary` default to show.
///
/// Like urfave's tab writer, the usage column is aligned across all categories; unlike it, we
/// leave no trailing blanks on category and separator lines.
pub(crate) fn help_text(lxc_default: &str) -> String {
    let mut categories: Vec<&str> = FLAGS.iter().map(|f| f.category).collect();
    categories.sort_unstable();
    categories.dedup();

    let mut rows: Vec<(String, Option<String>)> = Vec::new();
    for category in categories {
        rows.push((format!("  {category}:"), None));
        for f in FLAGS.iter().filter(|f| f.category == category) {
            rows.push((
                format!("    {}", flag_names(f)),
                Some(flag_usage(f, lxc_default)),
            ));
        }
        rows.push((String::new(), None));
    }
    let width = rows
        .iter()
        .map(|(left, _)| left.chars().count())
        .max()
        .unwrap_or(0)
        + 2;

    let mut out = String::from(HELP_HEAD);
    out.push_str(VERSION);
    out.push_str(HELP_DESCRIPTION);
    for (left, usage) in rows {
        match usage {
            Some(usage) => out.push_str(&format!("{left:width$}{usage}\n")),
            None => {
                out.push_str(&left);
                out.push('\n');
            }
        }
    }
    out
}

/// urfave's name column: `--name value, -a value`, with `[ ... ]` repeating it for lists.
fn flag_names(f: &Flag) -> String {
    let placeholder = if f.kind == Kind::Bool { "" } else { " value" };
    let mut names = format!("--{}{placeholder}", f.name);
    if let Some(alias) = f.alias {
        names.push_str(&format!(", -{alias}{placeholder}"));
    }
    if f.kind == Kind::List {
        names = format!("{names} [ {names} ]");
    }
    names
}

/// The usage text followed by urfave's `(default: ...)`.
fn flag_usage(f: &Flag, lxc_default: &str) -> String {
    let default = match f.def {
        Def::Hidden => None,
        Def::Str(s) => Some(sys::golang::quote(s.as_bytes())),
        Def::LxcProbe if lxc_default.is_empty() => None,
        Def::LxcProbe => Some(sys::golang::quote(lxc_default.as_bytes())),
        Def::Bool(b) => Some(b.to_string()),
        Def::Int(n) => Some(n.to_string()),
    };
    match default {
        Some(d) => format!("{} (default: {d})", f.usage),
        None => f.usage.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// `--info-fd` and `--json-status-fd` name descriptors we may take over: not stdin, stdout or
/// stderr (the target keeps those), and not the same one twice. Whether they are open for
/// writing is checked when the run starts (`statusfd`), still before anything exists.
fn check_status_fds(cfg: &Config) -> Result<(), String> {
    for (flag, n) in [
        ("info-fd", cfg.info_fd),
        ("json-status-fd", cfg.json_status_fd),
    ] {
        if let Some(n) = n
            && !(3..=i64::from(i32::MAX)).contains(&n)
        {
            return Err(format!(
                "--{flag}={n}: the descriptor must be 3 or more (0, 1 and 2 stay the command's)"
            ));
        }
    }
    if let (Some(a), Some(b)) = (cfg.info_fd, cfg.json_status_fd)
        && a == b
    {
        return Err(format!(
            "--info-fd and --json-status-fd name the same descriptor {a}"
        ));
    }
    Ok(())
}

#[cfg(test)]
/// Checks a parsed [`Config`] without touching the system: upstream's parent-side checks
/// (`createParentOpt`) and child-side checks (`createChildOpt`) in upstream's order, then the
/// features not built yet. Returns the warnings to print (`[rootlesskit:parent] warning: <w>`).
pub(crate) fn validate(cfg: &Config) -> Result<Vec<String>, String> {
    let (warnings, result) = check(cfg);
    result.map(|_| warnings)
}

/// [`validate`], but the warnings that upstream logs before an error come back with the error
/// too, so that the output can show them in the same order; on success, the typed [`Settings`].
pub(crate) fn check(cfg: &Config) -> (Vec<String>, Result<Settings, String>) {
    let mut warnings = Vec::new();
    let result = checks(cfg, &mut warnings);
    (warnings, result)
}

fn checks(cfg: &Config, warn: &mut Vec<String>) -> Result<Settings, String> {
    // --- parent side (createParentOpt) ---
    if let Some(group) = &cfg.evacuate_cgroup2 {
        if !cfg.cgroupns {
            return Err("evacuate-cgroup2 requires --cgroupns".into());
        }
        if !cfg.pidns {
            return Err("evacuate-cgroup2 requires --pidns".into());
        }
        // Upstream finds these only after the child has started (cgrouputil); we check them now.
        if group.is_empty() {
            return Err("got empty evacuation group name".into());
        }
        if group.contains('/') {
            return Err(format!(
                "unexpected evacuation group name {}: must not contain \"/\"",
                sys::golang::quote(group.as_bytes())
            ));
        }
    }
    // (Upstream creates the state directory here; that is a side effect and not ours.)
    let mtu = u32::try_from(cfg.mtu)
        .ok()
        .filter(|m| *m <= 65521)
        .ok_or_else(|| format!("mtu must be <= 65521, got {}", cfg.mtu))?;
    let cidr = match cfg.cidr.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => {
            let (addr, prefix) = parse_cidr(text)?;
            if addr != network_address(addr, prefix) {
                return Err("cidr must be like 10.0.2.0/24, not like 10.0.2.100/24".into());
            }
            Some(Cidr {
                addr: addr.into(),
                prefix,
            })
        }
        None => None,
    };
    check_status_fds(cfg)?;
    let mut settings = Settings {
        mtu,
        cidr,
        slirp4netns_sandbox: Tristate::False,
        slirp4netns_seccomp: Tristate::False,
        copy_up_mode: CopyUpMode::TmpfsSymlink,
    };
    let ifname = cfg.ifname.as_deref().filter(|i| !i.is_empty());
    if ifname.is_some_and(|i| i.contains('/')) {
        return Err("ifname must not contain \"/\"".into());
    }
    let net = cfg.net.as_str();
    if cfg.ipv6 {
        warn.push("ipv6 is experimental".into());
        // Upstream v3 warns that --ipv6 is discarded for gvisor-tap-vsock and then refuses it;
        // ours routes IPv6 there, so neither is said.
        if !matches!(cfg.net, Net::Pasta | Net::Slirp4netns | Net::GvisorTapVsock) {
            warn.push(format!("--ipv6 is discarded for --net={net}"));
        }
    }
    if !cfg.disable_host_loopback && !matches!(cfg.net, Net::Host | Net::None) {
        warn.push(
            "specifying --disable-host-loopback is highly recommended to prohibit connecting to 127.0.0.1:* \
             on the host namespace (requires pasta, slirp4netns, or VPNKit)"
                .into(),
        );
    }
    match cfg.net {
        Net::Host | Net::None => {
            if cfg.mtu != 0 {
                warn.push(format!("unsupported mtu for --net={net}: {}", cfg.mtu));
            }
            if cidr.is_some() {
                return Err(format!("custom cidr is not supported for --net={net}"));
            }
            if ifname.is_some() {
                return Err(format!("ifname cannot be specified for --net={net}"));
            }
            if cfg.net == Net::None
                && !matches!(cfg.port_driver, PortDriver::None | PortDriver::Builtin)
            {
                return Err(
                    "network \"none\" requires either port driver \"none\" or \"builtin\"".into(),
                );
            }
        }
        Net::Pasta => {
            warn.push(
                "\"pasta\" network driver is experimental. Needs very recent version of pasta (see docs/network.md)."
                    .into(),
            );
            // (The PATH lookup of --pasta-binary comes here upstream.)
            if !matches!(
                cfg.port_driver,
                PortDriver::None | PortDriver::Implicit | PortDriver::Pesto
            ) {
                return Err(
                    "network \"pasta\" requires port driver \"none\" or \"implicit\"".into(),
                );
            }
        }
        Net::Slirp4netns => {
            // (The PATH lookup and the feature probe of --slirp4netns-binary come here upstream.)
            let sandbox = &cfg.slirp4netns_sandbox;
            settings.slirp4netns_sandbox = match Tristate::from_name(sandbox) {
                Some(Tristate::True) if cfg.detach_netns => {
                    return Err("--slirp4netns-sandbox conflicts with --detach-netns \
                                (https://github.com/rootless-containers/slirp4netns/issues/317)"
                        .into());
                }
                Some(mode) => mode,
                None => {
                    return Err(format!(
                        "unsupported slirp4netns-sandbox mode: {}",
                        sys::golang::quote(sandbox.as_bytes())
                    ));
                }
            };
            let seccomp = &cfg.slirp4netns_seccomp;
            settings.slirp4netns_seccomp = Tristate::from_name(seccomp).ok_or_else(|| {
                format!(
                    "unsupported slirp4netns-seccomp mode: {}",
                    sys::golang::quote(seccomp.as_bytes())
                )
            })?;
        }
        Net::Vpnkit => {
            if cidr.is_some() {
                return Err("custom cidr is not supported for --net=vpnkit".into());
            }
        }
        Net::LxcUserNic => {
            warn.push("\"lxc-user-nic\" network driver is experimental".into());
            if cidr.is_some() {
                return Err("custom cidr is not supported for --net=lxc-user-nic".into());
            }
            if !cfg.disable_host_loopback {
                warn.push("--disable-host-loopback is implicitly set for lxc-user-nic".into());
            }
        }
        Net::GvisorTapVsock => {
            warn.push("\"gvisor-tap-vsock\" network driver is experimental".into());
            // (Upstream warns that --disable-host-loopback is not yet supported here; ours
            // blocks the gateway's way to the host's loopback for any cidr. Upstream refuses
            // --ipv6 here; ours supports it.)
        }
    }
    match cfg.port_driver {
        PortDriver::None => {
            if !cfg.publish.is_empty() || cfg.publish_error.is_some() {
                return Err("port driver \"none\" does not support publishing ports".into());
            }
        }
        PortDriver::Implicit => {
            if cfg.net != Net::Pasta {
                return Err("port driver requires pasta network".into());
            }
        }
        PortDriver::Slirp4netns => {
            if cfg.net != Net::Slirp4netns {
                return Err("port driver requires slirp4netns network".into());
            }
        }
        PortDriver::Builtin => {
            if cfg.net == Net::Host {
                return Err("port driver requires non-host network".into());
            }
        }
        PortDriver::GvisorTapVsock => {
            warn.push("\"gvisor-tap-vsock\" port driver is experimental".into());
            if cfg.net == Net::Host {
                return Err("port driver requires non-host network".into());
            }
            // Upstream fails later, when the driver finds no gvisor-tap-vsock network.
            if cfg.net != Net::GvisorTapVsock {
                return Err("port driver requires gvisor-tap-vsock network".into());
            }
        }
        PortDriver::Pesto => {
            if cfg.net != Net::Pasta {
                return Err("port driver requires pasta network".into());
            }
        }
    }
    // Each -p spec is parsed and validated here upstream (`build` has done it).
    if let Some(e) = &cfg.publish_error {
        return Err(e.clone());
    }

    // --- child side (createChildOpt), checked in the parent so that a bad flag cannot strand it ---
    if cfg.reaper == Reaper::True && !cfg.pidns {
        return Err("reaper requires --pidns".into());
    }
    settings.copy_up_mode = match cfg.copy_up_mode.as_str() {
        "tmpfs+symlink" => CopyUpMode::TmpfsSymlink,
        "overlay" => CopyUpMode::Overlay,
        other => return Err(format!("unknown copy-up mode: {other}")),
    };
    if !cfg.copy_up.is_empty()
        && matches!(cfg.propagation, Propagation::Shared | Propagation::Rshared)
    {
        return Err(format!(
            "propagation {} does not support copy-up driver {}",
            cfg.propagation.as_str(),
            settings.copy_up_mode.as_str()
        ));
    }

    match unsupported(cfg) {
        Some(msg) => Err(msg),
        None => Ok(settings),
    }
}

/// NOT SUPPORTED YET: features that are valid upstream but not built here.
/// Delete a line when its feature lands.
fn unsupported(cfg: &Config) -> Option<String> {
    if !matches!(
        cfg.net,
        Net::Host
            | Net::None
            | Net::Slirp4netns
            | Net::Pasta
            | Net::LxcUserNic
            | Net::Vpnkit
            | Net::GvisorTapVsock
    ) {
        return Some(format!("--net={}: not supported yet", cfg.net.as_str()));
    }
    None
}

/// An IPv4 CIDR as Go's `net.ParseCIDR` reads it: the address and the prefix length.
/// Errors read like Go's (`invalid CIDR address: x`). IPv6 is not accepted.
pub(crate) fn parse_cidr(s: &str) -> Result<([u8; 4], u8), String> {
    let invalid = || format!("invalid CIDR address: {s}");
    let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
    let addr = parse_ipv4(addr).ok_or_else(invalid)?;
    // Go's dtoi: decimal digits only (leading zeros allowed), at most 32 for IPv4.
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let prefix = prefix.trim_start_matches('0');
    let prefix: u8 = if prefix.is_empty() {
        0
    } else {
        prefix.parse().map_err(|_| invalid())?
    };
    if prefix > 32 {
        return Err(invalid());
    }
    Ok((addr, prefix))
}

/// Dotted-quad IPv4 as Go's `netip.ParseAddr` reads it: four decimal fields of 0..=255, no
/// leading zeros.
fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut fields = s.split('.');
    for slot in &mut out {
        let field = fields.next()?;
        if field.is_empty() || field.len() > 3 || !field.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if field.len() > 1 && field.starts_with('0') {
            return None;
        }
        *slot = field.parse().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(out)
}

/// The address with the host bits cleared.
pub(crate) fn network_address(addr: [u8; 4], prefix: u8) -> [u8; 4] {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    (u32::from_be_bytes(addr) & mask).to_be_bytes()
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const LXC: &str = "/usr/libexec/lxc/lxc-user-nic";

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn parse_args(args: &[&str]) -> Result<Action, CliError> {
        parse_with_lxc_default(argv(args), LXC)
    }

    fn run(args: &[&str]) -> Config {
        match parse_args(args) {
            Ok(Action::Run(cfg)) => cfg,
            other => panic!("{args:?}: expected a run, got {other:?}"),
        }
    }

    fn error(args: &[&str]) -> CliError {
        match parse_args(args) {
            Err(e) => e,
            Ok(other) => panic!("{args:?}: expected an error, got {other:?}"),
        }
    }

    fn cmd(args: &[&str]) -> Vec<OsString> {
        argv(args)
    }

    #[test]
    fn defaults_match_upstream() {
        let expect = Config {
            debug: false,
            state_dir: None,
            net: Net::Host,
            mtu: 0,
            cidr: None,
            ifname: None,
            disable_host_loopback: false,
            ipv6: false,
            detach_netns: false,
            restart_net_driver: true,
            pasta_binary: "pasta".into(),
            slirp4netns_binary: "slirp4netns".into(),
            slirp4netns_sandbox: "false".into(),
            slirp4netns_seccomp: "false".into(),
            vpnkit_binary: "vpnkit".into(),
            lxc_user_nic_binary: LXC.into(),
            lxc_user_nic_bridge: "lxcbr0".into(),
            copy_up: vec![],
            copy_up_mode: "tmpfs+symlink".into(),
            propagation: Propagation::Rprivate,
            port_driver: PortDriver::None,
            publish: vec![],
            publish_error: None,
            source_ip_transparent: true,
            pidns: false,
            cgroupns: false,
            utsns: false,
            ipcns: false,
            reaper: Reaper::Auto,
            evacuate_cgroup2: None,
            subid_source: SubidSource::Auto,
            notify_ready: crate::notify::Ready::Target,
            info_fd: None,
            json_status_fd: None,
            command: cmd(&["sh"]),
        };
        assert_eq!(run(&["sh"]), expect);
    }

    #[test]
    fn go_flag_forms() {
        type Get = fn(&Config) -> String;
        let net: Get = |c| c.net.as_str().to_owned();
        let state: Get = |c| format!("{:?}", c.state_dir);
        let publish: Get = |c| c.publish.iter().map(PortSpec::go_value).collect();
        let cases: &[(&[&str], Get, &str)] = &[
            (&["--net=none", "sh"], net, "none"),
            (&["-net=none", "sh"], net, "none"),
            (&["--net", "none", "sh"], net, "none"),
            (&["-net", "none", "sh"], net, "none"),
            // A value is taken even when it looks like a flag, as Go does.
            (&["--state-dir", "--net", "sh"], state, "Some(\"--net\")"),
            (&["-state-dir", "-x", "sh"], state, "Some(\"-x\")"),
            (&["--state-dir=", "sh"], state, "None"),
            // -p, --p, -publish, --publish, separate or with '='.
            (&["-p", ":8080:80/tcp", "sh"], publish, "{tcp  8080 80 }"),
            (&["-p=:8080:80/tcp", "sh"], publish, "{tcp  8080 80 }"),
            (&["--p", ":8080:80/tcp", "sh"], publish, "{tcp  8080 80 }"),
            (&["--p=:8080:80/tcp", "sh"], publish, "{tcp  8080 80 }"),
            (
                &["-publish", ":8080:80/tcp", "sh"],
                publish,
                "{tcp  8080 80 }",
            ),
            (
                &["--publish=:8080:80/tcp", "sh"],
                publish,
                "{tcp  8080 80 }",
            ),
            // Last one wins for scalars.
            (&["--net=none", "--net=host", "sh"], net, "host"),
            (&["-net=host", "--net", "none", "sh"], net, "none"),
        ];
        for (args, get, want) in cases {
            assert_eq!(get(&run(args)), *want, "{args:?}");
        }
        assert_eq!(run(&["--mtu=1", "--mtu", "2", "sh"]).mtu, 2);
    }

    #[test]
    fn bool_forms() {
        let cases: &[(&[&str], bool, &[&str])] = &[
            (&["--pidns", "sh"], true, &["sh"]),
            (&["-pidns", "sh"], true, &["sh"]),
            (&["--pidns=true", "sh"], true, &["sh"]),
            (&["--pidns=1", "sh"], true, &["sh"]),
            (&["--pidns=t", "sh"], true, &["sh"]),
            (&["--pidns=T", "sh"], true, &["sh"]),
            (&["--pidns=TRUE", "sh"], true, &["sh"]),
            (&["-pidns=True", "sh"], true, &["sh"]),
            (&["--pidns=false", "sh"], false, &["sh"]),
            (&["--pidns=0", "sh"], false, &["sh"]),
            (&["--pidns=f", "sh"], false, &["sh"]),
            (&["--pidns=F", "sh"], false, &["sh"]),
            (&["--pidns=FALSE", "sh"], false, &["sh"]),
            (&["--pidns=False", "sh"], false, &["sh"]),
            (&["--pidns", "--pidns=false", "sh"], false, &["sh"]),
            // A bool never takes the next argument: `true` becomes the command.
            (&["--pidns", "true"], true, &["true"]),
            (&["--pidns", "false", "x"], true, &["false", "x"]),
        ];
        for (args, pidns, command) in cases {
            let cfg = run(args);
            assert_eq!((cfg.pidns, cfg.command), (*pidns, cmd(command)), "{args:?}");
        }
        assert!(!run(&["--source-ip-transparent=false", "sh"]).source_ip_transparent);
        let bad: &[(&[&str], &str)] = &[
            (
                &["--pidns=yes", "sh"],
                "invalid boolean value \"yes\" for -pidns: parse error",
            ),
            (
                &["-ipv6=", "sh"],
                "invalid boolean value \"\" for -ipv6: parse error",
            ),
            (
                &["--debug=tRUE", "sh"],
                "invalid boolean value \"tRUE\" for -debug: parse error",
            ),
        ];
        for (args, msg) in bad {
            let e = error(args);
            assert_eq!((e.message(), e.shows_usage()), (*msg, true), "{args:?}");
        }
    }

    #[test]
    fn lists_accumulate_and_split_on_commas() {
        let cfg = run(&[
            "-p",
            "127.0.0.1:8080:80/tcp, 127.0.0.1:8443:443/tcp",
            "-p= :53:53/udp\n",
            "--copy-up=/etc,/run",
            "--copy-up",
            " /var/lib ",
            "sh",
        ]);
        assert_eq!(
            cfg.publish
                .iter()
                .map(PortSpec::go_value)
                .collect::<Vec<_>>(),
            [
                "{tcp 127.0.0.1 8080 80 }",
                "{tcp 127.0.0.1 8443 443 }",
                "{udp  53 53 }"
            ]
        );
        assert_eq!(cfg.publish_error, None);
        assert_eq!(
            cfg.copy_up,
            [
                PathBuf::from("/etc"),
                PathBuf::from("/run"),
                PathBuf::from("/var/lib")
            ]
        );
        assert!(run(&["--copy-up=,", "sh"]).copy_up.is_empty());
    }

    #[test]
    fn publish_specs_are_parsed_and_checked_before_anything_runs() {
        // urfave keeps empty parts of a split value, and "" is no spec.
        let missing = r#"missing proto in PortSpec string: """#;
        for value in [
            "",
            "127.0.0.1:8080:80/tcp,",
            ",127.0.0.1:8080:80/tcp",
            " \n ",
        ] {
            let args = [
                "--net=slirp4netns",
                "--port-driver=builtin",
                "-p",
                value,
                "sh",
            ];
            assert_eq!(validated(&args), Err(missing.into()), "{value:?}");
        }
        let cases: &[(&str, &str)] = &[
            (
                "127.0.0.1:80:x/tcp",
                r#"unexpected ChildPort in PortSpec string: "127.0.0.1:80:x/tcp": strconv.Atoi: parsing "x": invalid syntax"#,
            ),
            ("127.0.0.1:0:80/tcp", "invalid ParentPort: 0"),
            ("127.0.0.1:1:65536/udp", "invalid ChildPort: 65536"),
            (
                "[::1]:19003:80/tcp4",
                "failed to expose port {tcp4 ::1 19003 80 }: listen tcp4: address ::1: no suitable address found",
            ),
            (
                "[2001:db8::1]:19003:127.0.0.1:80/udp4",
                "failed to expose port {udp4 2001:db8::1 19003 80 127.0.0.1}: listen udp4: address 2001:db8::1: no suitable address found",
            ),
            (
                "127.0.0.1:19003:80/tcp6",
                "failed to expose port {tcp6 127.0.0.1 19003 80 }: listen tcp6: address 127.0.0.1: no suitable address found",
            ),
        ];
        for (spec, want) in cases {
            let args = [
                "--net=slirp4netns",
                "--port-driver=builtin",
                "-p",
                spec,
                "sh",
            ];
            assert_eq!(validated(&args), Err(want.to_string()), "{spec}");
        }
        // Mapped addresses are IPv4 ones; the first bad spec is the one reported, after the
        // driver checks (as upstream: "none" takes no spec at all, good or bad).
        let cfg = run(&[
            "-p",
            "[::ffff:127.0.0.1]:8080:[::ffff:10.0.2.100]:80/tcp4",
            "sh",
        ]);
        assert_eq!(cfg.publish_error, None);
        assert_eq!(cfg.publish[0].parent_ip, "::ffff:127.0.0.1");
        assert_eq!(
            validated(&[
                "--net=slirp4netns",
                "--port-driver=builtin",
                "-p",
                ":1:1/tcp",
                "-p",
                "x",
                "-p",
                "y",
                "sh"
            ]),
            Err(r#"missing proto in PortSpec string: "x""#.into())
        );
        assert_eq!(
            validated(&["--net=slirp4netns", "-p", "x", "sh"]),
            Err("port driver \"none\" does not support publishing ports".into())
        );
    }

    #[test]
    fn flags_stop_at_the_command() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["sh", "-c", "x", "--net=y"], &["sh", "-c", "x", "--net=y"]),
            (&["--net=none", "sh", "--pidns"], &["sh", "--pidns"]),
            (&["--", "--weird", "--x"], &["--weird", "--x"]),
            (&["--net=none", "--", "sh", "--", "-p"], &["sh", "--", "-p"]),
            (&["-", "x"], &["-", "x"]),
            (&["-p", "--", "sh"], &["sh"]),
        ];
        for (args, command) in cases {
            assert_eq!(run(args).command, cmd(command), "{args:?}");
        }
        assert_eq!(run(&["sh", "-c", "x", "--net=y"]).net, Net::Host);
        assert_eq!(
            run(&["-p", "--", "sh"]).publish_error.as_deref(),
            Some(r#"missing proto in PortSpec string: "--""#)
        );
    }

    #[test]
    fn non_utf8_arguments() {
        use std::ffi::OsStr;
        let bytes = |b: &[u8]| OsStr::from_bytes(b).to_owned();
        let args = vec![
            bytes(b"--state-dir=/tmp/\xff"),
            bytes(b"--copy-up=/a\xfe,/b"),
            bytes(b"sh\xff"),
            bytes(b"\xfe"),
        ];
        let Ok(Action::Run(cfg)) = parse_with_lxc_default(args, LXC) else {
            panic!()
        };
        assert_eq!(cfg.state_dir, Some(PathBuf::from(bytes(b"/tmp/\xff"))));
        assert_eq!(
            cfg.copy_up,
            [PathBuf::from(bytes(b"/a\xfe")), PathBuf::from("/b")]
        );
        assert_eq!(cfg.command, [bytes(b"sh\xff"), bytes(b"\xfe")]);
        let e = parse_with_lxc_default(vec![bytes(b"--net=\xff"), bytes(b"sh")], LXC).unwrap_err();
        assert_eq!(
            e.message(),
            "invalid value \"\\xff\" for flag -net: invalid UTF-8"
        );
    }

    #[test]
    fn syntax_errors() {
        // (argv, message, suggestion)
        let cases: &[(&[&str], &str, Option<&str>)] = &[
            (
                &["--nte=slirp4netns", "sh"],
                "flag provided but not defined: -nte",
                Some("--net"),
            ),
            (
                &["-pidn", "sh"],
                "flag provided but not defined: -pidn",
                Some("--pidns"),
            ),
            (
                &["--copyup=/etc", "sh"],
                "flag provided but not defined: -copyup",
                Some("--copy-up"),
            ),
            (
                &["--frobnicate", "sh"],
                "flag provided but not defined: -frobnicate",
                None,
            ),
            // Go has no attached short values: -p8080 is an unknown flag named "p8080...".
            (
                &["-p8080:80/tcp", "sh"],
                "flag provided but not defined: -p8080:80/tcp",
                None,
            ),
            (&["-hv"], "flag provided but not defined: -hv", None),
            (&["--net"], "flag needs an argument: -net", None),
            (&["-p"], "flag needs an argument: -p", None),
            (
                &["--pidns", "--state-dir"],
                "flag needs an argument: -state-dir",
                None,
            ),
            (&["---net=host", "sh"], "bad flag syntax: ---net=host", None),
            (&["-=x", "sh"], "bad flag syntax: -=x", None),
            (&["--=x", "sh"], "bad flag syntax: --=x", None),
            // An earlier error wins over a later bad syntax.
            (
                &["--mtu=x", "---y"],
                "invalid value \"x\" for flag -mtu: parse error",
                None,
            ),
            (
                &["--mtu=abc", "sh"],
                "invalid value \"abc\" for flag -mtu: parse error",
                None,
            ),
            (
                &["--mtu", "", "sh"],
                "invalid value \"\" for flag -mtu: parse error",
                None,
            ),
            (
                &["--mtu=99999999999999999999", "sh"],
                "invalid value \"99999999999999999999\" for flag -mtu: value out of range",
                None,
            ),
            // urfave refuses both spellings of one flag.
            (
                &["--publish", "1:1/tcp", "-p", "2:2/tcp", "sh"],
                "Cannot use two forms of the same flag: p publish",
                None,
            ),
            (
                &["-h", "--help"],
                "Cannot use two forms of the same flag: h help",
                None,
            ),
            (
                &["--version", "-v"],
                "Cannot use two forms of the same flag: v version",
                None,
            ),
            // The flags are read before --help is acted on.
            (
                &["--help", "--bogus"],
                "flag provided but not defined: -bogus",
                None,
            ),
        ];
        for (args, msg, suggestion) in cases {
            let e = error(args);
            assert_eq!(
                (e.message(), e.shows_usage(), e.suggestion().as_deref()),
                (*msg, true, *suggestion),
                "{args:?}"
            );
        }
    }

    #[test]
    fn usage_output_for_syntax_errors() {
        let help = help_text(LXC);
        let e = error(&["--nte=x", "sh"]);
        assert_eq!(
            e.usage_text(&help).unwrap(),
            format!(
                "Incorrect Usage: flag provided but not defined: -nte\n\nDid you mean \"--net\"?\n\n{help}"
            )
        );
        let e = error(&["--frobnicate"]);
        assert_eq!(
            e.usage_text(&help).unwrap(),
            format!("Incorrect Usage: flag provided but not defined: -frobnicate\n\n{help}")
        );
        assert_eq!(error(&[]).usage_text(&help), None);
    }

    #[test]
    fn mtu_uses_go_integer_syntax() {
        let cases: &[(&str, i64)] = &[
            ("1500", 1500),
            ("+1500", 1500),
            ("-1", -1),
            ("0", 0),
            ("0x5dc", 1500),
            ("0X5DC", 1500),
            ("0o2734", 1500),
            ("02734", 1500),
            ("0b10111011100", 1500),
            ("1_500", 1500),
            ("0x_5dc", 1500),
            ("0_2734", 1500),
            ("-0x10", -16),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ];
        for (text, want) in cases {
            assert_eq!(run(&["--mtu", text, "sh"]).mtu, *want, "{text}");
        }
        for text in [
            "", "+", "-", "0x", "0b", "08", "1__5", "_15", "15_", "0x_", "1.5", "1e3", "+-1", " 1",
        ] {
            let e = error(&["--mtu", text, "sh"]);
            assert_eq!(
                e.message(),
                format!(
                    "invalid value {} for flag -mtu: parse error",
                    sys::golang::quote(text.as_bytes())
                )
            );
        }
        for text in [
            "9223372036854775808",
            "-9223372036854775809",
            "0x10000000000000000",
        ] {
            let e = error(&["--mtu", text, "sh"]);
            assert_eq!(
                e.message(),
                format!("invalid value \"{text}\" for flag -mtu: value out of range")
            );
        }
    }

    #[test]
    fn actions() {
        let cases: &[(&[&str], Action)] = &[
            (&["--help"], Action::Help),
            (&["-h"], Action::Help),
            (&["-help"], Action::Help),
            (&["--h"], Action::Help),
            (&["--help", "sh"], Action::Help),
            (&["--net=bogus", "--help"], Action::Help),
            (&["--version"], Action::Version),
            (&["-v"], Action::Version),
            (&["--version", "--net=bogus", "sh"], Action::Version),
            (&["--version", "--help"], Action::Help),
            (&["--print-semver=major"], Action::PrintSemver(3)),
            (&["--print-semver", "minor"], Action::PrintSemver(0)),
            (&["-print-semver=patch", "sh"], Action::PrintSemver(1)),
        ];
        for (args, want) in cases {
            assert_eq!(parse_args(args).as_ref(), Ok(want), "{args:?}");
        }
        let parts = VERSION_PARTS.map(|n| n.to_string());
        assert_eq!(parts.join("."), VERSION);
        // A command after --help is not run, but one after a bool set to false is.
        assert_eq!(run(&["--help=false", "sh"]).command, cmd(&["sh"]));
    }

    #[test]
    fn plain_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command specified"),
            (&["--net=none"], "no command specified"),
            (&["--"], "no command specified"),
            (&["--print-semver="], "no command specified"),
            (
                &["--print-semver=x"],
                "expected --print-semver=(major|minor|patch), got \"x\"",
            ),
            (
                &["--print-semver=MAJOR", "sh"],
                "expected --print-semver=(major|minor|patch), got \"MAJOR\"",
            ),
            (&["--net=bogus", "sh"], "unknown network mode: bogus"),
            (&["--net=", "sh"], "unknown network mode: "),
            (&["--port-driver=bogus", "sh"], "unknown port driver: bogus"),
            (&["--reaper=maybe", "sh"], "unknown reaper mode: maybe"),
            (
                &["--subid-source=ldap", "sh"],
                "unknown subid source \"ldap\"",
            ),
        ];
        for (args, msg) in cases {
            let e = error(args);
            assert_eq!((e.message(), e.shows_usage()), (*msg, false), "{args:?}");
        }
    }

    #[test]
    fn enum_values() {
        let c = run(&[
            "--net=none",
            "--port-driver=builtin",
            "--reaper=false",
            "--subid-source=static",
            "sh",
        ]);
        assert_eq!(
            (c.net, c.port_driver, c.reaper, c.subid_source),
            (
                Net::None,
                PortDriver::Builtin,
                Reaper::False,
                SubidSource::Static
            )
        );
        let c = run(&[
            "--net=gvisor-tap-vsock",
            "--port-driver=gvisor-tap-vsock",
            "--reaper=true",
            "--subid-source=dynamic",
            "sh",
        ]);
        assert_eq!(
            (c.net, c.port_driver, c.reaper, c.subid_source),
            (
                Net::GvisorTapVsock,
                PortDriver::GvisorTapVsock,
                Reaper::True,
                SubidSource::Dynamic
            )
        );
        assert_eq!(
            run(&["--propagation=rslave", "sh"]).propagation,
            Propagation::Rslave
        );
        assert_eq!(
            run(&["--propagation=weird", "sh"]).propagation,
            Propagation::Other("weird".into())
        );
        assert_eq!(
            run(&["--evacuate-cgroup2=init", "sh"])
                .evacuate_cgroup2
                .as_deref(),
            Some("init")
        );
        assert_eq!(run(&["--evacuate-cgroup2=", "sh"]).evacuate_cgroup2, None);
        assert_eq!(
            run(&["--lxc-user-nic-binary=/x", "sh"]).lxc_user_nic_binary,
            "/x"
        );
    }

    #[test]
    fn lxc_default_is_probed_only_when_unset() {
        let probed = std::cell::Cell::new(0);
        let mut probe = || {
            probed.set(probed.get() + 1);
            "/probed".to_owned()
        };
        let Ok(Action::Run(c)) = parse_inner(argv(&["sh"]), &mut probe) else {
            panic!()
        };
        assert_eq!(
            (c.lxc_user_nic_binary.as_str(), probed.get()),
            ("/probed", 1)
        );
        let Ok(Action::Run(c)) = parse_inner(argv(&["--lxc-user-nic-binary=", "sh"]), &mut probe)
        else {
            panic!()
        };
        assert_eq!((c.lxc_user_nic_binary.as_str(), probed.get()), ("", 1));
    }

    #[test]
    fn lxc_user_nic_probe_order() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["/usr/libexec/lxc/lxc-user-nic", "/usr/lib/lxc/lxc-user-nic"],
                "/usr/libexec/lxc/lxc-user-nic",
            ),
            (
                &[
                    "/usr/lib/x86_64-linux-gnu/lxc/lxc-user-nic",
                    "/usr/lib/lxc/lxc-user-nic",
                ],
                "/usr/lib/x86_64-linux-gnu/lxc/lxc-user-nic",
            ),
            (&["/usr/lib/aarch64-linux-gnu/lxc/lxc-user-nic"], ""),
            (&["/usr/lib/lxc/lxc-user-nic"], "/usr/lib/lxc/lxc-user-nic"),
            (&[], ""),
        ];
        for (present, want) in cases {
            assert_eq!(
                probe_lxc_user_nic("x86_64", |p| present.contains(&p)),
                *want,
                "{present:?}"
            );
        }
    }

    /// A value for `f` that differs from its default, and the argv that sets it.
    fn sample_args(f: &Flag, spelled: &str) -> Vec<String> {
        let value = match (f.id, f.kind) {
            (Id::SourceIpTransparent | Id::RestartNetDriver, _) => {
                return vec![format!("{spelled}=false"), "sh".into()];
            }
            (_, Kind::Bool) => return vec![spelled.to_owned(), "sh".into()],
            (Id::Net, _) => "none",
            (Id::PortDriver, _) => "builtin",
            (Id::Reaper, _) => "true",
            (Id::SubidSource, _) => "static",
            (Id::NotifyReady, _) => "child",
            (Id::Propagation, _) => "rslave",
            (Id::PrintSemver, _) => "major",
            (_, Kind::Int) => "1400",
            _ => "sample",
        };
        vec![spelled.to_owned(), value.to_owned(), "sh".into()]
    }

    #[test]
    fn every_table_flag_parses_under_every_spelling() {
        let default = run(&["sh"]);
        let mut seen: Vec<(&str, Config)> = Vec::new();
        for f in FLAGS {
            let mut names = vec![f.name];
            names.extend(f.alias);
            for name in names {
                for dashes in ["-", "--"] {
                    let spelled = format!("{dashes}{name}");
                    let args = sample_args(f, &spelled);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    match (f.id, parse_args(&args)) {
                        (Id::Help, Ok(Action::Help))
                        | (Id::Version, Ok(Action::Version))
                        | (Id::PrintSemver, Ok(Action::PrintSemver(3)))
                        | (Id::Check, Ok(Action::Check { json: false, .. }))
                        | (Id::CheckJson, Ok(Action::Check { json: true, .. })) => {}
                        (_, Ok(Action::Run(cfg))) => {
                            assert_ne!(cfg, default, "{args:?} changed nothing");
                            let same = seen.iter().find(|(n, c)| *n != f.name && *c == cfg);
                            if let Some((other, _)) = same {
                                panic!("--{} and --{other} set the same thing", f.name);
                            }
                            seen.push((f.name, cfg));
                        }
                        (_, other) => panic!("{args:?}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn each_flag_sets_its_own_field() {
        type Get = fn(&Config) -> bool;
        let cases: &[(&str, Get)] = &[
            ("--debug", |c| c.debug),
            ("--disable-host-loopback", |c| c.disable_host_loopback),
            ("--ipv6", |c| c.ipv6),
            ("--detach-netns", |c| c.detach_netns),
            ("--pidns", |c| c.pidns),
            ("--cgroupns", |c| c.cgroupns),
            ("--utsns", |c| c.utsns),
            ("--ipcns", |c| c.ipcns),
            ("--source-ip-transparent=false", |c| {
                !c.source_ip_transparent
            }),
            ("--restart-net-driver=false", |c| !c.restart_net_driver),
        ];
        for (flag, get) in cases {
            assert!(get(&run(&[flag, "sh"])), "{flag}");
            for (other, _) in cases.iter().filter(|(o, _)| o != flag) {
                assert!(
                    !get(&run(&[other, "sh"])),
                    "{other} set the field of {flag}"
                );
            }
        }
        type Text = fn(&Config) -> String;
        let strings: &[(&str, Text)] = &[
            ("--pasta-binary", |c| c.pasta_binary.clone()),
            ("--slirp4netns-binary", |c| c.slirp4netns_binary.clone()),
            ("--slirp4netns-sandbox", |c| c.slirp4netns_sandbox.clone()),
            ("--slirp4netns-seccomp", |c| c.slirp4netns_seccomp.clone()),
            ("--vpnkit-binary", |c| c.vpnkit_binary.clone()),
            ("--lxc-user-nic-binary", |c| c.lxc_user_nic_binary.clone()),
            ("--lxc-user-nic-bridge", |c| c.lxc_user_nic_bridge.clone()),
            ("--copy-up-mode", |c| c.copy_up_mode.clone()),
            ("--cidr", |c| c.cidr.clone().unwrap_or_default()),
            ("--ifname", |c| c.ifname.clone().unwrap_or_default()),
            ("--evacuate-cgroup2", |c| {
                c.evacuate_cgroup2.clone().unwrap_or_default()
            }),
            ("--propagation", |c| c.propagation.as_str().to_owned()),
            ("--state-dir", |c| {
                c.state_dir
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            }),
            ("--copy-up", |c| {
                c.copy_up.iter().map(|p| p.display().to_string()).collect()
            }),
        ];
        for (flag, get) in strings {
            assert_eq!(get(&run(&[flag, "v", "sh"])), "v", "{flag}");
        }
    }

    #[test]
    fn status_fds_must_be_distinct_and_not_stdio() {
        let check = |args: &[&str]| validate(&run(args)).map(|_| ());
        assert_eq!(check(&["--info-fd=3", "--json-status-fd=4", "sh"]), Ok(()));
        assert_eq!(
            check(&["--info-fd=1", "sh"]),
            Err(
                "--info-fd=1: the descriptor must be 3 or more (0, 1 and 2 stay the command's)"
                    .into()
            )
        );
        assert_eq!(
            check(&["--json-status-fd", "-5", "sh"]),
            Err("--json-status-fd=-5: the descriptor must be 3 or more (0, 1 and 2 stay the command's)".into())
        );
        assert!(check(&["--info-fd=4294967299", "sh"]).is_err());
        assert_eq!(
            check(&["--info-fd=0x7", "--json-status-fd=7", "sh"]),
            Err("--info-fd and --json-status-fd name the same descriptor 7".into())
        );
    }

    #[test]
    fn golden_help() {
        let want = include_str!("../tests/help.golden");
        let got = help_text(LXC);
        // `RKRS_BLESS=1 cargo test -p parent --lib cli::` rewrites the file after a deliberate change.
        if std::env::var_os("RKRS_BLESS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/help.golden");
            std::fs::write(path, &got).unwrap();
            return;
        }
        if got != want {
            // Print the first differing line to make a failure readable.
            for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
                assert_eq!(g, w, "help line {}", i + 1);
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn help_has_every_flag_and_category() {
        let help = help_text("");
        // What scripts grep for, e.g. `rootlesskit --help | grep -qw -- --detach-netns`.
        for f in FLAGS {
            let starts_a_line = help.lines().any(|l| {
                let rest = l.trim_start().strip_prefix(&format!("--{}", f.name));
                rest.is_some_and(|r| r.starts_with(' ') || r.starts_with(','))
            });
            assert!(starts_a_line, "--{} missing", f.name);
        }
        for needle in [
            "\n  Misc:\n    --debug ",
            "\n  Network [lxc-user-nic]:\n",
            "--publish value, -p value [ --publish value, -p value ]  ",
            "--copy-up value [ --copy-up value ]  ",
            "--help, -h  ",
            "--version, -v  ",
            "[host, none, pasta(experimental), slirp4netns, vpnkit, lxc-user-nic(experimental), gvisor-tap-vsock(experimental)] (default: \"host\")",
            // Upstream v3.0's list, in its order; pesto (v3.1) comes after it.
            "[none, implicit (for pasta), builtin, slirp4netns, gvisor-tap-vsock(experimental), pesto (for pasta)] (default: \"none\")",
            "[auto, true, false] (default: \"false\")",
            "[rprivate, rslave] (default: \"rprivate\")",
            "[auto,true,false] (default: \"auto\")",
            "[auto,dynamic,static] (default: \"auto\")",
            "[tmpfs+symlink, overlay] (default: \"tmpfs+symlink\")",
            "[major, minor, patch]\n",
            "(default: true)\n",
            "\nVERSION:\n   3.0.1\n",
        ] {
            assert!(help.contains(needle), "{needle:?} missing");
        }
        // An empty lxc-user-nic default shows no default at all, as urfave does.
        let lxc_line = help
            .lines()
            .find(|l| l.contains("--lxc-user-nic-binary"))
            .unwrap();
        assert!(!lxc_line.contains("default"), "{lxc_line}");
        assert!(help_text("/a/b").contains("--net=lxc-user-nic runs (default: \"/a/b\")\n"));
        // The categories come in alphabetical order.
        let cats: Vec<&str> = help
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .collect();
        let want = [
            "Misc",
            "Mount",
            "Network",
            "Network [lxc-user-nic]",
            "Network [pasta]",
            "Network [slirp4netns]",
            "Network [vpnkit]",
            "Port",
            "Process",
            "State",
            "SubID",
        ]
        .map(|c| format!("  {c}:"));
        assert_eq!(cats, want);
    }

    fn validated(args: &[&str]) -> Result<Vec<String>, String> {
        validate(&run(args))
    }

    #[test]
    fn validation_errors() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--evacuate-cgroup2=g", "--pidns", "sh"],
                "evacuate-cgroup2 requires --cgroupns",
            ),
            (
                &["--evacuate-cgroup2=g", "--cgroupns", "sh"],
                "evacuate-cgroup2 requires --pidns",
            ),
            (
                &["--evacuate-cgroup2=g", "sh"],
                "evacuate-cgroup2 requires --cgroupns",
            ),
            (
                &["--evacuate-cgroup2=a/b", "--pidns", "--cgroupns", "sh"],
                "unexpected evacuation group name \"a/b\": must not contain \"/\"",
            ),
            (&["--mtu=65522", "sh"], "mtu must be <= 65521, got 65522"),
            (&["--mtu=-1", "sh"], "mtu must be <= 65521, got -1"),
            (&["--cidr=x", "sh"], "invalid CIDR address: x"),
            (&["--cidr=10.0.2.0", "sh"], "invalid CIDR address: 10.0.2.0"),
            (
                &["--cidr=10.0.2.0/33", "sh"],
                "invalid CIDR address: 10.0.2.0/33",
            ),
            (
                &["--cidr=10.0.2.0/", "sh"],
                "invalid CIDR address: 10.0.2.0/",
            ),
            (
                &["--cidr=10.0.2.0/+24", "sh"],
                "invalid CIDR address: 10.0.2.0/+24",
            ),
            (
                &["--cidr=10.0.02.0/24", "sh"],
                "invalid CIDR address: 10.0.02.0/24",
            ),
            (
                &["--cidr=256.0.2.0/24", "sh"],
                "invalid CIDR address: 256.0.2.0/24",
            ),
            (
                &["--cidr=10.0.2/24", "sh"],
                "invalid CIDR address: 10.0.2/24",
            ),
            (
                &["--cidr=10.0.2.0.1/24", "sh"],
                "invalid CIDR address: 10.0.2.0.1/24",
            ),
            (
                &["--cidr=10.0.2.100/24", "sh"],
                "cidr must be like 10.0.2.0/24, not like 10.0.2.100/24",
            ),
            (
                &["--cidr=10.0.2.1/32", "sh"],
                "custom cidr is not supported for --net=host",
            ),
            (&["--ifname=a/b", "sh"], "ifname must not contain \"/\""),
            (
                &["--cidr=10.0.2.0/24", "sh"],
                "custom cidr is not supported for --net=host",
            ),
            (
                &["--ifname=eth0", "sh"],
                "ifname cannot be specified for --net=host",
            ),
            (
                &["--net=none", "--cidr=10.0.2.0/024", "sh"],
                "custom cidr is not supported for --net=none",
            ),
            (
                &["--net=none", "--ifname=eth0", "sh"],
                "ifname cannot be specified for --net=none",
            ),
            (
                &["--net=none", "--port-driver=implicit", "sh"],
                "network \"none\" requires either port driver \"none\" or \"builtin\"",
            ),
            (
                &["--net=none", "--port-driver=slirp4netns", "sh"],
                "network \"none\" requires either port driver \"none\" or \"builtin\"",
            ),
            (
                &["--net=pasta", "--port-driver=builtin", "sh"],
                "network \"pasta\" requires port driver \"none\" or \"implicit\"",
            ),
            (
                &["--net=slirp4netns", "--slirp4netns-sandbox=yes", "sh"],
                "unsupported slirp4netns-sandbox mode: \"yes\"",
            ),
            (
                &["--net=slirp4netns", "--slirp4netns-seccomp=1", "sh"],
                "unsupported slirp4netns-seccomp mode: \"1\"",
            ),
            (
                &[
                    "--net=slirp4netns",
                    "--slirp4netns-sandbox=true",
                    "--detach-netns",
                    "sh",
                ],
                "--slirp4netns-sandbox conflicts with --detach-netns (https://github.com/rootless-containers/slirp4netns/issues/317)",
            ),
            (
                &["--net=vpnkit", "--cidr=10.0.2.0/24", "sh"],
                "custom cidr is not supported for --net=vpnkit",
            ),
            (
                &["--net=lxc-user-nic", "--cidr=10.0.2.0/24", "sh"],
                "custom cidr is not supported for --net=lxc-user-nic",
            ),
            (
                &["-p", "8080:80/tcp", "sh"],
                "port driver \"none\" does not support publishing ports",
            ),
            (
                &["--net=slirp4netns", "--port-driver=implicit", "sh"],
                "port driver requires pasta network",
            ),
            (
                &["--net=vpnkit", "--port-driver=slirp4netns", "sh"],
                "port driver requires slirp4netns network",
            ),
            (
                &["--port-driver=builtin", "sh"],
                "port driver requires non-host network",
            ),
            (
                &["--port-driver=gvisor-tap-vsock", "sh"],
                "port driver requires non-host network",
            ),
            (
                &["--port-driver=implicit", "sh"],
                "port driver requires pasta network",
            ),
            (&["--reaper=true", "sh"], "reaper requires --pidns"),
            (
                &["--copy-up-mode=overlayfs", "sh"],
                "unknown copy-up mode: overlayfs",
            ),
            (
                &["--copy-up=/etc", "--propagation=rshared", "sh"],
                "propagation rshared does not support copy-up driver tmpfs+symlink",
            ),
            (
                &["--copy-up=/etc", "--propagation=shared", "sh"],
                "propagation shared does not support copy-up driver tmpfs+symlink",
            ),
            // Upstream order: parent checks come before the child's.
            (
                &["--reaper=true", "--mtu=70000", "sh"],
                "mtu must be <= 65521, got 70000",
            ),
            (
                &["--copy-up-mode=x", "--ifname=eth0", "sh"],
                "ifname cannot be specified for --net=host",
            ),
            (
                &["--net=slirp4netns", "--port-driver=gvisor-tap-vsock", "sh"],
                "port driver requires gvisor-tap-vsock network",
            ),
            (
                &["--port-driver=pesto", "sh"],
                "port driver requires pasta network",
            ),
            (
                &["--net=slirp4netns", "--port-driver=pesto", "sh"],
                "port driver requires pasta network",
            ),
            (
                &["--net=lxc-user-nic", "--cidr=10.0.3.0/24", "sh"],
                "custom cidr is not supported for --net=lxc-user-nic",
            ),
            (
                &["--net=host", "--port-driver=builtin", "sh"],
                "port driver requires non-host network",
            ),
        ];
        for (args, msg) in cases {
            assert_eq!(validated(args), Err((*msg).to_owned()), "{args:?}");
        }
    }

    #[test]
    fn validation_accepts_and_warns() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["sh"], &[]),
            (&["--net=none", "sh"], &[]),
            (
                &["--mtu=65521", "--net=none", "sh"],
                &["unsupported mtu for --net=none: 65521"],
            ),
            (
                &["--mtu=1500", "sh"],
                &["unsupported mtu for --net=host: 1500"],
            ),
            (
                &["--ipv6", "sh"],
                &["ipv6 is experimental", "--ipv6 is discarded for --net=host"],
            ),
            (&["--reaper=true", "--pidns", "sh"], &[]),
            (
                &["--pidns", "--cgroupns", "--evacuate-cgroup2=init", "sh"],
                &[],
            ),
            (&["--copy-up=/etc", "--propagation=rslave", "sh"], &[]),
            (&["--propagation=rshared", "sh"], &[]),
            (&["--propagation=bogus", "--copy-up=/etc", "sh"], &[]),
            // Only --net=slirp4netns looks at the slirp4netns modes, as upstream.
            (
                &[
                    "--slirp4netns-sandbox=bogus",
                    "--slirp4netns-seccomp=bogus",
                    "sh",
                ],
                &[],
            ),
            (&["--cidr=", "--ifname=", "sh"], &[]),
            // A detached namespace is made even for --net=host, as upstream.
            (&["--detach-netns", "sh"], &[]),
            (
                &[
                    "--net=slirp4netns",
                    "--disable-host-loopback",
                    "--detach-netns",
                    "sh",
                ],
                &[],
            ),
            (
                &["--net=lxc-user-nic", "sh"],
                &[
                    "specifying --disable-host-loopback is highly recommended to prohibit connecting to 127.0.0.1:* on the host namespace (requires pasta, slirp4netns, or VPNKit)",
                    "\"lxc-user-nic\" network driver is experimental",
                    "--disable-host-loopback is implicitly set for lxc-user-nic",
                ],
            ),
            (
                &[
                    "--net=lxc-user-nic",
                    "--disable-host-loopback",
                    "--detach-netns",
                    "--port-driver=builtin",
                    "--mtu=9000",
                    "--ifname=eth1",
                    "sh",
                ],
                &["\"lxc-user-nic\" network driver is experimental"],
            ),
            (
                &[
                    "--net=gvisor-tap-vsock",
                    "--disable-host-loopback",
                    "--port-driver=gvisor-tap-vsock",
                    "sh",
                ],
                &[
                    "\"gvisor-tap-vsock\" network driver is experimental",
                    "\"gvisor-tap-vsock\" port driver is experimental",
                ],
            ),
            // Upstream v3 says --ipv6 is discarded here and then refuses it; ours routes it.
            (
                &[
                    "--net=gvisor-tap-vsock",
                    "--ipv6",
                    "--disable-host-loopback",
                    "sh",
                ],
                &[
                    "ipv6 is experimental",
                    "\"gvisor-tap-vsock\" network driver is experimental",
                ],
            ),
            // vpnkit's MTU warning comes with its probe, after the binary is found.
            (
                &[
                    "--net=vpnkit",
                    "--disable-host-loopback",
                    "--mtu=9000",
                    "--ifname=eth0",
                    "--port-driver=builtin",
                    "sh",
                ],
                &[],
            ),
        ];
        for (args, warnings) in cases {
            assert_eq!(
                validated(args),
                Ok(warnings.iter().map(|w| (*w).to_owned()).collect()),
                "{args:?}"
            );
        }
    }

    #[test]
    fn warnings_come_back_with_the_error() {
        let dhl = "specifying --disable-host-loopback is highly recommended to prohibit connecting to 127.0.0.1:* \
                   on the host namespace (requires pasta, slirp4netns, or VPNKit)";
        let cases: &[(&[&str], &[&str], &str)] = &[
            (
                &[
                    "--net=slirp4netns",
                    "--ipv6",
                    "--port-driver=gvisor-tap-vsock",
                    "sh",
                ],
                &[
                    "ipv6 is experimental",
                    dhl,
                    "\"gvisor-tap-vsock\" port driver is experimental",
                ],
                "port driver requires gvisor-tap-vsock network",
            ),
            (
                &[
                    "--net=pasta",
                    "--detach-netns",
                    "--port-driver=builtin",
                    "sh",
                ],
                &[
                    dhl,
                    "\"pasta\" network driver is experimental. Needs very recent version of pasta (see docs/network.md).",
                ],
                "network \"pasta\" requires port driver \"none\" or \"implicit\"",
            ),
            (
                &["--net=lxc-user-nic", "--cidr=10.0.3.0/24", "sh"],
                &[dhl, "\"lxc-user-nic\" network driver is experimental"],
                "custom cidr is not supported for --net=lxc-user-nic",
            ),
            (
                &["--ipv6", "--cidr=1.0.0.0/8", "sh"],
                &["ipv6 is experimental", "--ipv6 is discarded for --net=host"],
                "custom cidr is not supported for --net=host",
            ),
            (
                &["--net=vpnkit", "--ipv6", "--cidr=10.0.2.0/24", "sh"],
                &[
                    "ipv6 is experimental",
                    "--ipv6 is discarded for --net=vpnkit",
                    dhl,
                ],
                "custom cidr is not supported for --net=vpnkit",
            ),
        ];
        for (args, warnings, msg) in cases {
            let (got, result) = check(&run(args));
            let want: Vec<String> = warnings.iter().map(|w| (*w).to_owned()).collect();
            assert_eq!((got, result), (want, Err((*msg).to_owned())), "{args:?}");
        }
    }

    /// What `check` hands on is typed: later stages never see the text.
    #[test]
    fn check_types_the_values() {
        let settings = |args: &[&str]| check(&run(args)).1;
        assert_eq!(
            settings(&[
                "--net=slirp4netns",
                "--mtu=0x5dc",
                "--cidr=10.8.0.0/016",
                "--slirp4netns-sandbox=auto",
                "--slirp4netns-seccomp=",
                "sh"
            ]),
            Ok(Settings {
                mtu: 1500,
                cidr: Some(Cidr {
                    addr: std::net::Ipv4Addr::new(10, 8, 0, 0),
                    prefix: 16
                }),
                slirp4netns_sandbox: Tristate::Auto,
                slirp4netns_seccomp: Tristate::False,
                copy_up_mode: CopyUpMode::TmpfsSymlink,
            })
        );
        // Upstream reads the slirp4netns modes only for --net=slirp4netns.
        let s = settings(&[
            "--slirp4netns-sandbox=yes",
            "--slirp4netns-seccomp=true",
            "sh",
        ]);
        assert_eq!(
            s.map(|s| (s.mtu, s.cidr, s.slirp4netns_sandbox, s.slirp4netns_seccomp)),
            Ok((0, None, Tristate::False, Tristate::False))
        );
        // Our copy-up mode beyond upstream's; the shared-propagation refusal names it.
        let mode = |args: &[&str]| settings(args).map(|s| s.copy_up_mode);
        assert_eq!(
            mode(&["--copy-up-mode=overlay", "--copy-up=/etc", "sh"]),
            Ok(CopyUpMode::Overlay)
        );
        assert_eq!(
            mode(&["--copy-up-mode=tmpfs+symlink", "sh"]),
            Ok(CopyUpMode::TmpfsSymlink)
        );
        assert_eq!(
            mode(&[
                "--copy-up-mode=overlay",
                "--copy-up=/etc",
                "--propagation=rshared",
                "sh"
            ]),
            Err("propagation rshared does not support copy-up driver overlay".into())
        );
    }

    #[test]
    fn cidr_parser() {
        type Cidr = ([u8; 4], u8);
        let cases: &[(&str, Option<Cidr>)] = &[
            ("10.0.2.0/24", Some(([10, 0, 2, 0], 24))),
            ("0.0.0.0/0", Some(([0, 0, 0, 0], 0))),
            ("255.255.255.255/32", Some(([255, 255, 255, 255], 32))),
            ("10.0.2.0/0024", Some(([10, 0, 2, 0], 24))),
            ("10.0.2.0/33", None),
            ("10.0.2.0/-1", None),
            ("fd00::/64", None),
            ("010.0.2.0/24", None),
            ("10.0.2.0 /24", None),
            ("", None),
            ("/24", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_cidr(text).ok(), *want, "{text}");
        }
        assert_eq!(network_address([10, 0, 2, 100], 24), [10, 0, 2, 0]);
        assert_eq!(network_address([10, 0, 2, 100], 0), [0, 0, 0, 0]);
        assert_eq!(network_address([10, 0, 2, 100], 32), [10, 0, 2, 100]);
        assert_eq!(network_address([10, 0, 2, 100], 30), [10, 0, 2, 100]);
        assert_eq!(network_address([10, 0, 2, 103], 30), [10, 0, 2, 100]);
    }

    /// A cheap stand-in for the fuzz target that runs with the unit tests: argvs built from flag
    /// names and awkward values by a fixed PRNG; every one must end in a value or an error.
    #[test]
    fn random_command_lines_never_panic() {
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        for f in FLAGS {
            for name in std::iter::once(f.name).chain(f.alias) {
                for form in ["--{}", "-{}", "--{}=", "-{}=x", "--{}=0x_1", "--{}=true"] {
                    tokens.push(form.replace("{}", name).into_bytes());
                }
            }
        }
        for value in [
            "",
            "-",
            "--",
            "---",
            "=",
            "-=",
            "--=",
            "sh",
            "none",
            "host",
            "pasta",
            "slirp4netns",
            "vpnkit",
            "lxc-user-nic",
            "gvisor-tap-vsock",
            "builtin",
            "implicit",
            "true",
            "auto",
            "rshared",
            "shared",
            "major",
            "0",
            "65521",
            "65522",
            "-1",
            "1_0",
            "0b",
            "08",
            "99999999999999999999",
            "10.0.2.0/24",
            "10.0.2.100/24",
            "fd00::/64",
            "a,b, ,c",
            "a/b",
            "/etc",
            "8080:80/tcp",
            "-p8080",
            "-hv",
            "\u{a0}x\u{a0}",
        ] {
            tokens.push(value.as_bytes().to_vec());
        }
        tokens.push(b"\xff\xfe".to_vec());
        tokens.push(b"--net=\xff".to_vec());

        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut runs = [0usize; 2];
        for _ in 0..10_000 {
            let len = (next() % 7) as usize;
            let mut args = Vec::with_capacity(len);
            for _ in 0..len {
                let mut token = tokens[(next() % tokens.len() as u64) as usize].clone();
                if next() % 8 == 0 && !token.is_empty() {
                    let at = (next() % token.len() as u64) as usize;
                    token[at] = next() as u8;
                }
                args.push(OsString::from_vec(token));
            }
            match parse_with_lxc_default(args, LXC) {
                Ok(Action::Run(cfg)) => {
                    assert!(!cfg.command.is_empty());
                    runs[usize::from(validate(&cfg).is_ok())] += 1;
                }
                Ok(_) => {}
                Err(e) => assert_eq!(e.usage_text("").is_some(), e.shows_usage()),
            }
        }
        // The generator reaches both outcomes of validation, so the loop tests something.
        assert!(runs[0] > 100 && runs[1] > 100, "{runs:?}");
    }

    #[test]
    fn go_quoting() {
        let cases: &[(&[u8], &str)] = &[
            (b"x", "\"x\""),
            (b"a\"b\\c", "\"a\\\"b\\\\c\""),
            (b"\n\t\x00\x7f", "\"\\n\\t\\x00\\x7f\""),
            (b"\xff", "\"\\xff\""),
            ("é\u{a0}".as_bytes(), "\"é\\u00a0\""),
        ];
        for (input, want) in cases {
            assert_eq!(sys::golang::quote(input), *want);
        }
    }
}
