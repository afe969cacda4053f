//! Fixed-size little-endian frames spoken on the pipes between `rootlesskit`, `rootlesskit-child`
//! and the helpers.
//!
//! A frame is an 8-byte header `{magic u16, version u8, tag u8, len u32}` followed by exactly
//! `len` body bytes, where `len` must equal the fixed body size of `tag`.
//! Nothing here does I/O beyond the generic [`read_frame`]/[`write_frame`] over `Read`/`Write`,
//! and nothing allocates: bodies are fixed arrays.
//!
//! **Architecture Invariant:** `proto` performs no syscalls of its own and knows nothing about
//! namespaces; it only turns bytes into typed messages and back, rejecting anything malformed.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read, Write};

pub mod vmnet;

/// The file in the state dir on which `--detach-netns` pins the detached network namespace.
pub const NETNS_FILE_NAME: &str = "netns";
/// argv\[0] of the helper that makes that namespace (`rootlesskit-unshare`), and its name in
/// messages; the parent also runs it for `rootlessctl exec` and lxc-user-nic.
pub const UNSHARE_HELPER_NAME: &str = "rootlesskit-unshare";
/// The socket vpnkit serves in the state dir (`vpnkit --ethernet <statedir>/<this>`).
pub const VPNKIT_SOCKET_NAME: &str = "vpnkit-ethernet.sock";

/// The first two bytes of every frame: `RK` in little-endian order.
pub const MAGIC: u16 = u16::from_le_bytes(*b"RK");
/// Protocol version; both ends are always built from the same tree, so any other value is a bug
/// or a stray writer.
pub const VERSION: u8 = 1;
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// Largest body of any message.
pub const MAX_BODY: usize = 512;
/// Largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_BODY;
/// Capacity of the text carried by [`Msg::ChildError`].
pub const ERROR_TEXT_MAX: usize = MAX_BODY - 2;
/// Capacity of an interface name, including the kernel's terminating NUL (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;

/// Why a frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The stream ended cleanly before a frame started (the peer closed its end).
    Eof,
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The first two bytes were not [`MAGIC`].
    BadMagic(u16),
    /// The version byte was not [`VERSION`].
    BadVersion(u8),
    /// The tag names no message.
    BadTag(u8),
    /// The length field does not match the fixed body size of the tag.
    BadLength {
        /// The tag of the frame.
        tag: u8,
        /// The length the header claimed.
        len: u32,
    },
    /// A field inside the body holds a value outside its domain.
    BadField(&'static str),
    /// The underlying read or write failed.
    Io(io::ErrorKind),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Eof => write!(f, "peer closed the pipe"),
            Error::Truncated => write!(f, "truncated frame"),
            Error::BadMagic(m) => write!(f, "bad frame magic {m:#06x}"),
            Error::BadVersion(v) => write!(f, "unsupported frame version {v}"),
            Error::BadTag(t) => write!(f, "unknown frame tag {t}"),
            Error::BadLength { tag, len } => write!(f, "bad length {len} for frame tag {tag}"),
            Error::BadField(name) => write!(f, "bad value in frame field {name}"),
            Error::Io(kind) => write!(f, "pipe i/o failed: {kind}"),
        }
    }
}

impl std::error::Error for Error {}

/// How the child must set up networking inside its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// Stay in the host network namespace: nothing to do.
    Host = 0,
    /// A new network namespace with only loopback.
    Loopback = 1,
    /// A new network namespace where the child brings up `ifname` with the address, MTU and
    /// route given in the message.
    Configure = 2,
    /// A new network namespace whose interface the driver already configured (pasta).
    Preconfigured = 3,
    /// A new network namespace where the child brings up `ifname` with the MTU given, gets
    /// address, route and DNS by DHCP, configures them and reports them in a
    /// [`Msg::NetLease`] (lxc-user-nic).
    Dhcp = 4,
    /// Like [`NetMode::Configure`], but the child first creates the tap itself with
    /// [`NetConfig::mac`] and carries its frames to vpnkit's interface [`NetConfig::uuid`].
    Vpnkit = 5,
    /// Like [`NetMode::Configure`], but the child first creates the tap `ifname` itself with
    /// [`NetConfig::mac`], and hands its descriptor to the parent in a [`Msg::TapMade`] before
    /// `ChildReady`: the parent's own user-mode network (`--net=gvisor-tap-vsock`) reads and
    /// writes its frames, each behind a `virtio_net_hdr` (`IFF_VNET_HDR`, with checksum and TSO
    /// offloads).
    Tap = 6,
}

impl NetMode {
    fn from_u8(v: u8) -> Result<Self, Error> {
        Ok(match v {
            0 => NetMode::Host,
            1 => NetMode::Loopback,
            2 => NetMode::Configure,
            3 => NetMode::Preconfigured,
            4 => NetMode::Dhcp,
            5 => NetMode::Vpnkit,
            6 => NetMode::Tap,
            _ => return Err(Error::BadField("net.mode")),
        })
    }
}

/// The network the parent's driver prepared, for the child to finish configuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// What the child has to do.
    pub mode: NetMode,
    /// Interface name, NUL-padded (no NUL needed when all 15 bytes are used; byte 15 is always 0).
    pub ifname: [u8; IFNAMSIZ],
    /// IPv4 address of the child on `ifname`.
    pub addr: [u8; 4],
    /// Prefix length of `addr` (0..=32).
    pub prefix: u8,
    /// IPv4 default gateway.
    pub gateway: [u8; 4],
    /// IPv4 DNS server written to resolv.conf; all zero means none.
    pub dns: [u8; 4],
    /// IPv6 DNS server written to resolv.conf; all zero means none.
    pub dns6: [u8; 16],
    /// Interface MTU; 0 leaves the kernel default.
    pub mtu: u32,
    /// [`NetMode::Vpnkit`]: the tap's MAC address, as vpnkit assigned it; [`NetMode::Tap`]: the
    /// MAC the parent's network expects the tap to have.
    pub mac: [u8; 6],
    /// [`NetMode::Vpnkit`]: the UUID of vpnkit's virtual interface.
    pub uuid: [u8; 16],
}

impl NetConfig {
    /// A configuration that asks for nothing but `mode`.
    pub const fn empty(mode: NetMode) -> Self {
        NetConfig {
            mode,
            ifname: [0; IFNAMSIZ],
            addr: [0; 4],
            prefix: 0,
            gateway: [0; 4],
            dns: [0; 4],
            dns6: [0; 16],
            mtu: 0,
            mac: [0; 6],
            uuid: [0; 16],
        }
    }

    /// The interface name as text, without padding.
    pub fn ifname_str(&self) -> &str {
        let end = self.ifname.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        // Validated as UTF-8 on decode and on construction.
        std::str::from_utf8(&self.ifname[..end]).unwrap_or("")
    }

    /// Stores `name` as the interface name, refusing names the kernel would refuse.
    pub fn set_ifname(&mut self, name: &str) -> Result<(), Error> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/') {
            return Err(Error::BadField("net.ifname"));
        }
        self.ifname = [0; IFNAMSIZ];
        self.ifname[..name.len()].copy_from_slice(name.as_bytes());
        Ok(())
    }
}

/// Which port driver runs, so the child knows whether to serve the builtin driver's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// No port driver, or one that needs nothing from the child (implicit, slirp4netns).
    None = 0,
    /// The builtin driver: the child makes sockets inside the namespace and hands them over.
    Builtin = 1,
    /// The builtin driver with `--source-ip-transparent`: the child also sets up the policy
    /// routing that lets TCP sockets connect from the client's address.
    BuiltinTransparent = 2,
}

/// The most sockets one [`Msg::SocketsMade`] carries.
pub const MAX_SOCKETS: u8 = 32;

/// The kind of socket a [`SocketsWanted`] asks for (its byte on the wire is the discriminant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SocketKind {
    /// A TCP socket.
    Tcp = 0,
    /// A UDP socket.
    Udp = 1,
    /// A TCP socket that may connect from a client's address (`IP_TRANSPARENT` and the
    /// routing mark, when the child could set up the routing).
    TransparentTcp = 2,
    /// A UDP socket that may send from a client's address (`IP_TRANSPARENT`; the replies find
    /// it through [`Msg::UdpRoute`]).
    TransparentUdp = 3,
}

impl SocketKind {
    /// Every kind, in wire order.
    pub const ALL: [SocketKind; 4] = [
        SocketKind::Tcp,
        SocketKind::Udp,
        SocketKind::TransparentTcp,
        SocketKind::TransparentUdp,
    ];

    /// A datagram socket.
    pub const fn is_udp(self) -> bool {
        matches!(self, SocketKind::Udp | SocketKind::TransparentUdp)
    }

    /// One that may use a client's address.
    pub const fn is_transparent(self) -> bool {
        matches!(
            self,
            SocketKind::TransparentTcp | SocketKind::TransparentUdp
        )
    }
}

/// Parent → child, once the target runs: make `count` unconnected sockets inside the
/// namespace and hand them over (builtin port driver). A socket belongs to the network
/// namespace it was made in, so the parent connects them itself, without a round trip per
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketsWanted {
    /// 4 for IPv4, 6 for IPv6.
    pub family: u8,
    /// What kind.
    pub kind: SocketKind,
    /// How many, 1 to [`MAX_SOCKETS`].
    pub count: u8,
}

/// Child → parent: the answer to a [`Msg::SocketsWanted`]; `count` sockets travel with it as
/// SCM_RIGHTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketsMade {
    /// How many sockets are attached, at most [`MAX_SOCKETS`]; 0 when `errno` says why none.
    pub count: u8,
    /// 1 when the sockets may bind a foreign address (`IP_TRANSPARENT` and the routing mark
    /// are set), so a connection can come from the client's own address.
    pub transparent: u8,
    /// The errno of the failed `socket()` when `count` is 0, else 0.
    pub errno: i32,
}

/// Parent → child, for UDP with `--source-ip-transparent`: deliver (or stop delivering) inside
/// the namespace what a server sends from UDP port `port` to the client address `addr`, so
/// that the replies to a datagram forwarded from that client's address reach the parent's
/// socket bound to it. An add is answered by one [`Msg::UdpRouted`]; a delete is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRoute {
    /// 1 to add, 0 to delete.
    pub add: u8,
    /// 4 or 6.
    pub family: u8,
    /// The server's port inside the namespace (the port's child port), not 0.
    pub port: u16,
    /// The client's address; an IPv4 one in the first 4 bytes, the rest 0.
    pub addr: [u8; 16],
}

/// Child → parent: the answer to an add [`Msg::UdpRoute`]: 0, or the errno of the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRouted {
    /// 0 when the route is in place, else the errno of the netlink request.
    pub errno: i32,
}

/// A short UTF-8 error text of at most [`ERROR_TEXT_MAX`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrorText {
    len: u16,
    buf: [u8; ERROR_TEXT_MAX],
}

impl ErrorText {
    /// Copies `text`, cutting it at a character boundary if it is too long.
    pub fn new(text: &str) -> Self {
        let mut end = text.len().min(ERROR_TEXT_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0; ERROR_TEXT_MAX];
        buf[..end].copy_from_slice(&text.as_bytes()[..end]);
        ErrorText {
            len: end as u16,
            buf,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for ErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Every message of the startup handshake.
///
/// The order on the wire is: child `ChildInitUserNsCompleted` → parent `NetworkDriverCompleted`
/// → parent `PortDriverCompleted` → (child `NetLease`, for a [`NetMode::Dhcp`] network) → child
/// `ChildReady` (or `ChildError` at any point) → parent `ParentGo`, after which the child starts
/// the target. From then on the parent may send `SocketsWanted` requests, each answered by one
/// `SocketsMade`, and `UdpRoute` requests, each add answered by one `UdpRouted`, in order, and
/// `NetReconfigure` (unanswered) when a restarted network driver made a new interface.
// Frames are fixed-size by design and live on the stack; boxing the error text would put the
// allocator on the pipe path for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// Child → parent: the child runs with its maps and capabilities, namespaces are in place.
    ChildInitUserNsCompleted,
    /// Parent → child: the network driver is up; how to configure the namespace side.
    NetworkDriverCompleted(NetConfig),
    /// Parent → child: the port driver is initialised.
    PortDriverCompleted(PortMode),
    /// Child → parent: mounts, network and ports are set up; waiting for `ParentGo`.
    ChildReady,
    /// Parent → child: `child_pid` and the API socket exist; start the target.
    ParentGo,
    /// Child → parent: setup failed; the child exits after sending this.
    ChildError(ErrorText),
    /// Parent → child: make sockets inside the namespace.
    SocketsWanted(SocketsWanted),
    /// Child → parent: the sockets, attached as SCM_RIGHTS.
    SocketsMade(SocketsMade),
    /// Child → parent, after a [`NetMode::Dhcp`] network and before `ChildReady`: the address,
    /// prefix, gateway and DNS server the lease gave and the child configured (mode `Dhcp`).
    NetLease(NetConfig),
    /// Parent → child: a local route for UDP replies to a client address.
    UdpRoute(UdpRoute),
    /// Child → parent: whether an added [`Msg::UdpRoute`] is in place.
    UdpRouted(UdpRouted),
    /// Parent → child, while the target runs: the network driver was restarted and made a new
    /// interface; configure it again as for `NetworkDriverCompleted` (mode `Configure`). Not
    /// answered: a failure is the child's warning.
    NetReconfigure(NetConfig),
    /// Child → parent, after a [`NetMode::Tap`] network and before `ChildReady`: the tap's
    /// descriptor travels with it as SCM_RIGHTS.
    TapMade,
}

const TAG_CHILD_INIT: u8 = 1;
const TAG_NET: u8 = 2;
const TAG_PORT: u8 = 3;
const TAG_CHILD_READY: u8 = 4;
const TAG_PARENT_GO: u8 = 5;
const TAG_CHILD_ERROR: u8 = 6;
const TAG_SOCKETS_WANTED: u8 = 9;
const TAG_SOCKETS_MADE: u8 = 10;
const TAG_NET_LEASE: u8 = 11;
const TAG_UDP_ROUTE: u8 = 12;
const TAG_UDP_ROUTED: u8 = 13;
const TAG_NET_RECONFIGURE: u8 = 14;
const TAG_TAP_MADE: u8 = 15;

const NET_BODY: usize = 1 + IFNAMSIZ + 4 + 1 + 4 + 4 + 16 + 4 + 6 + 16;
const PORT_BODY: usize = 1;
const ERROR_BODY: usize = MAX_BODY;
const SOCKETS_WANTED_BODY: usize = 3;
const SOCKETS_MADE_BODY: usize = 1 + 1 + 4;
const UDP_ROUTE_BODY: usize = 1 + 1 + 2 + 16;
const UDP_ROUTED_BODY: usize = 4;

fn body_len(tag: u8) -> Result<usize, Error> {
    Ok(match tag {
        TAG_CHILD_INIT | TAG_CHILD_READY | TAG_PARENT_GO | TAG_TAP_MADE => 0,
        TAG_NET | TAG_NET_LEASE | TAG_NET_RECONFIGURE => NET_BODY,
        TAG_PORT => PORT_BODY,
        TAG_CHILD_ERROR => ERROR_BODY,
        TAG_SOCKETS_WANTED => SOCKETS_WANTED_BODY,
        TAG_SOCKETS_MADE => SOCKETS_MADE_BODY,
        TAG_UDP_ROUTE => UDP_ROUTE_BODY,
        TAG_UDP_ROUTED => UDP_ROUTED_BODY,
        other => return Err(Error::BadTag(other)),
    })
}

impl Msg {
    fn tag(&self) -> u8 {
        match self {
            Msg::ChildInitUserNsCompleted => TAG_CHILD_INIT,
            Msg::NetworkDriverCompleted(_) => TAG_NET,
            Msg::PortDriverCompleted(_) => TAG_PORT,
            Msg::ChildReady => TAG_CHILD_READY,
            Msg::ParentGo => TAG_PARENT_GO,
            Msg::ChildError(_) => TAG_CHILD_ERROR,
            Msg::SocketsWanted(_) => TAG_SOCKETS_WANTED,
            Msg::SocketsMade(_) => TAG_SOCKETS_MADE,
            Msg::NetLease(_) => TAG_NET_LEASE,
            Msg::UdpRoute(_) => TAG_UDP_ROUTE,
            Msg::UdpRouted(_) => TAG_UDP_ROUTED,
            Msg::NetReconfigure(_) => TAG_NET_RECONFIGURE,
            Msg::TapMade => TAG_TAP_MADE,
        }
    }

    /// The name used in error messages ("expected X, got Y").
    pub fn name(&self) -> &'static str {
        match self {
            Msg::ChildInitUserNsCompleted => "ChildInitUserNSCompleted",
            Msg::NetworkDriverCompleted(_) => "ParentInitNetworkDriverCompleted",
            Msg::PortDriverCompleted(_) => "ParentInitPortDriverCompleted",
            Msg::ChildReady => "ChildReady",
            Msg::ParentGo => "ParentGo",
            Msg::ChildError(_) => "ChildError",
            Msg::SocketsWanted(_) => "SocketsWanted",
            Msg::SocketsMade(_) => "SocketsMade",
            Msg::NetLease(_) => "NetLease",
            Msg::UdpRoute(_) => "UdpRoute",
            Msg::UdpRouted(_) => "UdpRouted",
            Msg::NetReconfigure(_) => "NetReconfigure",
            Msg::TapMade => "TapMade",
        }
    }

    /// Encodes the message into `out`, returning the number of bytes used.
    pub fn encode(&self, out: &mut [u8; MAX_FRAME]) -> usize {
        let tag = self.tag();
        // `body_len` cannot fail for a tag we produce ourselves.
        let len = body_len(tag).unwrap_or(0);
        out[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        out[2] = VERSION;
        out[3] = tag;
        out[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        let body = &mut out[HEADER_LEN..HEADER_LEN + len];
        body.fill(0);
        match self {
            Msg::NetworkDriverCompleted(n) | Msg::NetLease(n) | Msg::NetReconfigure(n) => {
                let mut w = Cursor { buf: body, at: 0 };
                w.put(&[n.mode as u8]);
                w.put(&n.ifname);
                w.put(&n.addr);
                w.put(&[n.prefix]);
                w.put(&n.gateway);
                w.put(&n.dns);
                w.put(&n.dns6);
                w.put(&n.mtu.to_le_bytes());
                w.put(&n.mac);
                w.put(&n.uuid);
            }
            Msg::PortDriverCompleted(p) => body[0] = *p as u8,
            Msg::ChildError(t) => {
                body[0..2].copy_from_slice(&t.len.to_le_bytes());
                body[2..].copy_from_slice(&t.buf);
            }
            Msg::SocketsWanted(w) => body.copy_from_slice(&[w.family, w.kind as u8, w.count]),
            Msg::SocketsMade(m) => {
                body[0] = m.count;
                body[1] = m.transparent;
                body[2..6].copy_from_slice(&m.errno.to_le_bytes());
            }
            Msg::UdpRoute(r) => {
                body[0] = r.add;
                body[1] = r.family;
                body[2..4].copy_from_slice(&r.port.to_le_bytes());
                body[4..20].copy_from_slice(&r.addr);
            }
            Msg::UdpRouted(r) => body.copy_from_slice(&r.errno.to_le_bytes()),
            Msg::ChildInitUserNsCompleted | Msg::ChildReady | Msg::ParentGo | Msg::TapMade => {}
        }
        HEADER_LEN + len
    }

    /// Decodes one complete frame. `frame` must hold exactly the header and the body.
    pub fn decode(frame: &[u8]) -> Result<Msg, Error> {
        let header: &[u8; HEADER_LEN] = frame
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated)?;
        let len = check_header(header)?;
        let body = frame.get(HEADER_LEN..).ok_or(Error::Truncated)?;
        if body.len() != len {
            return Err(Error::BadLength {
                tag: header[3],
                len: body.len() as u32,
            });
        }
        decode_body(header[3], body)
    }
}

/// Checks a header and returns the body length it announces.
pub fn check_header(h: &[u8; HEADER_LEN]) -> Result<usize, Error> {
    let magic = u16::from_le_bytes([h[0], h[1]]);
    if magic != MAGIC {
        return Err(Error::BadMagic(magic));
    }
    if h[2] != VERSION {
        return Err(Error::BadVersion(h[2]));
    }
    let want = body_len(h[3])?;
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len as usize != want {
        return Err(Error::BadLength { tag: h[3], len });
    }
    Ok(want)
}

fn decode_body(tag: u8, body: &[u8]) -> Result<Msg, Error> {
    Ok(match tag {
        TAG_CHILD_INIT => Msg::ChildInitUserNsCompleted,
        TAG_CHILD_READY => Msg::ChildReady,
        TAG_PARENT_GO => Msg::ParentGo,
        TAG_TAP_MADE => Msg::TapMade,
        TAG_NET | TAG_NET_LEASE | TAG_NET_RECONFIGURE => {
            let mut r = Reader { buf: body, at: 0 };
            let mode = NetMode::from_u8(r.get::<1>()[0])?;
            let ifname = r.get::<IFNAMSIZ>();
            let end = ifname.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
            if end == IFNAMSIZ
                || ifname[end..].iter().any(|&b| b != 0)
                || std::str::from_utf8(&ifname[..end]).is_err()
                || ifname[..end].contains(&b'/')
            {
                return Err(Error::BadField("net.ifname"));
            }
            let addr = r.get::<4>();
            let prefix = r.get::<1>()[0];
            if prefix > 32 {
                return Err(Error::BadField("net.prefix"));
            }
            let gateway = r.get::<4>();
            let dns = r.get::<4>();
            let dns6 = r.get::<16>();
            let mtu = u32::from_le_bytes(r.get::<4>());
            if mtu > 65535 {
                return Err(Error::BadField("net.mtu"));
            }
            let mac = r.get::<6>();
            let uuid = r.get::<16>();
            let net = NetConfig {
                mode,
                ifname,
                addr,
                prefix,
                gateway,
                dns,
                dns6,
                mtu,
                mac,
                uuid,
            };
            if tag == TAG_NET_LEASE {
                Msg::NetLease(net)
            } else if tag == TAG_NET_RECONFIGURE {
                Msg::NetReconfigure(net)
            } else {
                Msg::NetworkDriverCompleted(net)
            }
        }
        TAG_PORT => Msg::PortDriverCompleted(match body[0] {
            0 => PortMode::None,
            1 => PortMode::Builtin,
            2 => PortMode::BuiltinTransparent,
            _ => return Err(Error::BadField("port.mode")),
        }),
        TAG_CHILD_ERROR => {
            let len = u16::from_le_bytes([body[0], body[1]]) as usize;
            if len > ERROR_TEXT_MAX || body[2 + len..].iter().any(|&b| b != 0) {
                return Err(Error::BadField("error.len"));
            }
            let text = std::str::from_utf8(&body[2..2 + len])
                .map_err(|_| Error::BadField("error.text"))?;
            Msg::ChildError(ErrorText::new(text))
        }
        TAG_SOCKETS_WANTED => {
            if body[0] != 4 && body[0] != 6 {
                return Err(Error::BadField("sockets.family"));
            }
            let Some(&kind) = SocketKind::ALL.get(usize::from(body[1])) else {
                return Err(Error::BadField("sockets.proto"));
            };
            if body[2] == 0 || body[2] > MAX_SOCKETS {
                return Err(Error::BadField("sockets.count"));
            }
            Msg::SocketsWanted(SocketsWanted {
                family: body[0],
                kind,
                count: body[2],
            })
        }
        TAG_SOCKETS_MADE => {
            let errno = i32::from_le_bytes([body[2], body[3], body[4], body[5]]);
            let (count, transparent) = (body[0], body[1]);
            if count > MAX_SOCKETS || transparent > 1 {
                return Err(Error::BadField("sockets.count"));
            }
            // Either sockets or the reason there are none.
            if (count == 0) != (errno != 0) || !(0..4096).contains(&errno) {
                return Err(Error::BadField("sockets.errno"));
            }
            Msg::SocketsMade(SocketsMade {
                count,
                transparent,
                errno,
            })
        }
        TAG_UDP_ROUTE => {
            let (add, family) = (body[0], body[1]);
            let port = u16::from_le_bytes([body[2], body[3]]);
            let mut addr = [0; 16];
            addr.copy_from_slice(&body[4..20]);
            if add > 1 {
                return Err(Error::BadField("route.add"));
            }
            if (family != 4 && family != 6) || (family == 4 && addr[4..].iter().any(|&b| b != 0)) {
                return Err(Error::BadField("route.family"));
            }
            if port == 0 {
                return Err(Error::BadField("route.port"));
            }
            Msg::UdpRoute(UdpRoute {
                add,
                family,
                port,
                addr,
            })
        }
        TAG_UDP_ROUTED => {
            let errno = i32::from_le_bytes([body[0], body[1], body[2], body[3]]);
            if !(0..4096).contains(&errno) {
                return Err(Error::BadField("route.errno"));
            }
            Msg::UdpRouted(UdpRouted { errno })
        }
        other => return Err(Error::BadTag(other)),
    })
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    // Callers only ask for fields inside a body whose exact length was checked against the tag.
    fn get<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
}

/// Reads exactly one frame: the header first, then exactly the announced body.
///
/// # Errors
/// [`Error::Eof`] if the stream ends before the first byte, [`Error::Truncated`] if it ends
/// inside the frame, and the header/body checks of [`Msg::decode`].
pub fn read_frame<R: Read>(r: &mut R) -> Result<Msg, Error> {
    let mut buf = [0u8; MAX_FRAME];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut buf[got..HEADER_LEN]) {
            Ok(0) if got == 0 => return Err(Error::Eof),
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e.kind())),
        }
    }
    let header: [u8; HEADER_LEN] = [
        buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
    ];
    let len = check_header(&header)?;
    r.read_exact(&mut buf[HEADER_LEN..HEADER_LEN + len])
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Truncated,
            k => Error::Io(k),
        })?;
    decode_body(header[3], &buf[HEADER_LEN..HEADER_LEN + len])
}

/// Writes one frame with a single `write_all`.
pub fn write_frame<W: Write>(w: &mut W, msg: &Msg) -> Result<(), Error> {
    let mut buf = [0u8; MAX_FRAME];
    let n = msg.encode(&mut buf);
    w.write_all(&buf[..n]).map_err(|e| Error::Io(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetConfig {
        let mut n = NetConfig::empty(NetMode::Configure);
        n.set_ifname("tap0").unwrap();
        n.addr = [10, 0, 2, 100];
        n.prefix = 24;
        n.gateway = [10, 0, 2, 2];
        n.dns = [10, 0, 2, 3];
        n.dns6[15] = 3;
        n.mtu = 65520;
        n
    }

    fn vpnkit_net() -> NetConfig {
        let mut n = net();
        n.mode = NetMode::Vpnkit;
        n.mtu = 1500;
        n.mac = [2, 0x50, 0, 0, 0, 3];
        n.uuid = [0xa5; 16];
        n
    }

    fn all() -> Vec<Msg> {
        vec![
            Msg::ChildInitUserNsCompleted,
            Msg::NetworkDriverCompleted(NetConfig::empty(NetMode::Host)),
            Msg::NetworkDriverCompleted(net()),
            Msg::NetworkDriverCompleted(vpnkit_net()),
            Msg::PortDriverCompleted(PortMode::None),
            Msg::PortDriverCompleted(PortMode::Builtin),
            Msg::ChildReady,
            Msg::ParentGo,
            Msg::ChildError(ErrorText::new("failed to mount proc: permission denied")),
            Msg::PortDriverCompleted(PortMode::BuiltinTransparent),
            Msg::SocketsWanted(SocketsWanted {
                family: 4,
                kind: SocketKind::Tcp,
                count: 1,
            }),
            Msg::SocketsWanted(SocketsWanted {
                family: 6,
                kind: SocketKind::Udp,
                count: MAX_SOCKETS,
            }),
            Msg::SocketsWanted(SocketsWanted {
                family: 4,
                kind: SocketKind::TransparentTcp,
                count: 7,
            }),
            Msg::SocketsMade(SocketsMade {
                count: 32,
                transparent: 1,
                errno: 0,
            }),
            Msg::SocketsMade(SocketsMade {
                count: 0,
                transparent: 0,
                errno: 24,
            }),
            Msg::SocketsWanted(SocketsWanted {
                family: 6,
                kind: SocketKind::TransparentUdp,
                count: 2,
            }),
            Msg::UdpRoute(UdpRoute {
                add: 1,
                family: 4,
                port: 53,
                addr: [192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            }),
            Msg::UdpRoute(UdpRoute {
                add: 0,
                family: 6,
                port: 65535,
                addr: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            }),
            Msg::UdpRouted(UdpRouted { errno: 0 }),
            Msg::UdpRouted(UdpRouted { errno: 17 }),
            Msg::NetLease({
                let mut n = net();
                n.mode = NetMode::Dhcp;
                n.set_ifname("eth0").unwrap();
                n.mtu = 1500;
                n
            }),
            Msg::NetReconfigure(net()),
            Msg::NetworkDriverCompleted({
                let mut n = net();
                n.mode = NetMode::Tap;
                n.gateway = [10, 0, 2, 1];
                n.dns = [10, 0, 2, 1];
                n.mac = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];
                n
            }),
            Msg::TapMade,
        ]
    }

    #[test]
    fn round_trip_every_message() {
        for msg in all() {
            let mut buf = [0u8; MAX_FRAME];
            let n = msg.encode(&mut buf);
            assert_eq!(Msg::decode(&buf[..n]), Ok(msg), "{msg:?}");
            let mut stream = &buf[..n];
            assert_eq!(read_frame(&mut stream), Ok(msg));
            assert!(
                stream.is_empty(),
                "read_frame must consume exactly one frame"
            );
        }
    }

    #[test]
    fn frames_follow_each_other_on_a_stream() {
        let mut wire = Vec::new();
        for msg in all() {
            write_frame(&mut wire, &msg).unwrap();
        }
        let mut r = &wire[..];
        for msg in all() {
            assert_eq!(read_frame(&mut r), Ok(msg));
        }
        assert_eq!(read_frame(&mut r), Err(Error::Eof));
    }

    #[test]
    fn header_layout_is_little_endian() {
        let mut buf = [0u8; MAX_FRAME];
        let n = Msg::PortDriverCompleted(PortMode::Builtin).encode(&mut buf);
        assert_eq!(&buf[..n], &[b'R', b'K', 1, 3, 1, 0, 0, 0, 1]);
    }

    /// A reader that hands out one byte per call, like a pipe under pressure.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || out.is_empty() {
                return Ok(0);
            }
            out[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn short_reads_are_reassembled() {
        let mut buf = [0u8; MAX_FRAME];
        let n = Msg::NetworkDriverCompleted(net()).encode(&mut buf);
        assert_eq!(
            read_frame(&mut Dribble(&buf[..n])),
            Ok(Msg::NetworkDriverCompleted(net()))
        );
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_le_bytes().to_vec();
        v.push(VERSION);
        v.push(tag);
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn rejects_malformed_frames() {
        let good_net = {
            let mut b = [0u8; MAX_FRAME];
            let n = Msg::NetworkDriverCompleted(net()).encode(&mut b);
            b[HEADER_LEN..n].to_vec()
        };
        let cases: Vec<(Vec<u8>, Error)> = vec![
            (vec![], Error::Eof),
            (vec![b'R', b'K', 1], Error::Truncated),
            (
                b"XXXXXXXX".to_vec(),
                Error::BadMagic(u16::from_le_bytes(*b"XX")),
            ),
            (
                {
                    let mut f = frame(TAG_CHILD_READY, &[]);
                    f[2] = 9;
                    f
                },
                Error::BadVersion(9),
            ),
            (frame(0, &[]), Error::BadTag(0)),
            (frame(200, &[]), Error::BadTag(200)),
            (frame(16, &[]), Error::BadTag(16)),
            (
                {
                    // The interface of a NetReconfigure is checked as the first one's.
                    let mut b = good_net.clone();
                    b[1..1 + IFNAMSIZ].fill(b'x');
                    frame(TAG_NET_RECONFIGURE, &b)
                },
                Error::BadField("net.ifname"),
            ),
            (
                frame(TAG_NET_RECONFIGURE, &good_net[1..]),
                Error::BadLength {
                    tag: TAG_NET_RECONFIGURE,
                    len: good_net.len() as u32 - 1,
                },
            ),
            (
                frame(TAG_CHILD_READY, &[0]),
                Error::BadLength {
                    tag: TAG_CHILD_READY,
                    len: 1,
                },
            ),
            (
                {
                    let mut f = frame(TAG_CHILD_ERROR, &[]);
                    f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
                    f
                },
                Error::BadLength {
                    tag: TAG_CHILD_ERROR,
                    len: u32::MAX,
                },
            ),
            (frame(TAG_PORT, &[7]), Error::BadField("port.mode")),
            (
                frame(TAG_TAP_MADE, &[0]),
                Error::BadLength {
                    tag: TAG_TAP_MADE,
                    len: 1,
                },
            ),
            (
                frame(TAG_SOCKETS_WANTED, &[5, 0, 1]),
                Error::BadField("sockets.family"),
            ),
            (
                frame(TAG_SOCKETS_WANTED, &[4, 4, 1]),
                Error::BadField("sockets.proto"),
            ),
            (
                frame(
                    TAG_UDP_ROUTE,
                    &[2, 4, 53, 0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                Error::BadField("route.add"),
            ),
            (
                frame(
                    TAG_UDP_ROUTE,
                    &[1, 5, 53, 0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                Error::BadField("route.family"),
            ),
            (
                frame(
                    TAG_UDP_ROUTE,
                    &[1, 4, 53, 0, 10, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                Error::BadField("route.family"),
            ),
            (
                frame(
                    TAG_UDP_ROUTE,
                    &[0, 6, 0, 0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                Error::BadField("route.port"),
            ),
            (
                frame(TAG_UDP_ROUTED, &[0xff, 0xff, 0xff, 0xff]),
                Error::BadField("route.errno"),
            ),
            (
                frame(TAG_SOCKETS_WANTED, &[6, 0, 0]),
                Error::BadField("sockets.count"),
            ),
            (
                frame(TAG_SOCKETS_WANTED, &[6, 0, MAX_SOCKETS + 1]),
                Error::BadField("sockets.count"),
            ),
            (
                frame(TAG_SOCKETS_MADE, &[33, 0, 0, 0, 0, 0]),
                Error::BadField("sockets.count"),
            ),
            (
                frame(TAG_SOCKETS_MADE, &[0, 0, 0, 0, 0, 0]),
                Error::BadField("sockets.errno"),
            ),
            (
                frame(TAG_SOCKETS_MADE, &[3, 0, 24, 0, 0, 0]),
                Error::BadField("sockets.errno"),
            ),
            (
                frame(TAG_SOCKETS_MADE, &[0, 0, 0xff, 0xff, 0xff, 0xff]),
                Error::BadField("sockets.errno"),
            ),
            (
                {
                    let mut b = good_net.clone();
                    b[0] = 7;
                    frame(TAG_NET, &b)
                },
                Error::BadField("net.mode"),
            ),
            (
                {
                    let mut b = good_net.clone();
                    b[1..17].fill(b'a');
                    frame(TAG_NET, &b)
                },
                Error::BadField("net.ifname"),
            ),
            (
                {
                    let mut b = good_net.clone();
                    b[1] = 0;
                    b[2] = b'x';
                    frame(TAG_NET, &b)
                },
                Error::BadField("net.ifname"),
            ),
            (
                {
                    let mut b = good_net.clone();
                    b[21] = 33;
                    frame(TAG_NET, &b)
                },
                Error::BadField("net.prefix"),
            ),
            (
                {
                    let mut b = vec![0u8; ERROR_BODY];
                    b[0..2].copy_from_slice(&(ERROR_TEXT_MAX as u16 + 1).to_le_bytes());
                    frame(TAG_CHILD_ERROR, &b)
                },
                Error::BadField("error.len"),
            ),
            (
                {
                    let mut b = vec![0u8; ERROR_BODY];
                    b[0..2].copy_from_slice(&2u16.to_le_bytes());
                    b[2] = 0xff;
                    b[3] = 0xfe;
                    frame(TAG_CHILD_ERROR, &b)
                },
                Error::BadField("error.text"),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(read_frame(&mut &bytes[..]), Err(want), "{bytes:?}");
        }
        // A body cut short is truncation, not a valid shorter message.
        let mut f = frame(TAG_NET, &good_net);
        f.truncate(f.len() - 1);
        assert_eq!(read_frame(&mut &f[..]), Err(Error::Truncated));
    }

    #[test]
    fn error_text_is_cut_at_a_char_boundary() {
        let long = "é".repeat(ERROR_TEXT_MAX);
        let t = ErrorText::new(&long);
        assert!(t.as_str().len() <= ERROR_TEXT_MAX);
        assert!(t.as_str().chars().all(|c| c == 'é'));
        assert_eq!(ErrorText::new("short").as_str(), "short");
    }

    #[test]
    fn ifname_rules() {
        let mut n = NetConfig::empty(NetMode::Configure);
        assert!(n.set_ifname("").is_err());
        assert!(n.set_ifname("a/b").is_err());
        assert!(n.set_ifname("0123456789abcdef").is_err());
        n.set_ifname("0123456789abcde").unwrap();
        assert_eq!(n.ifname_str(), "0123456789abcde");
    }

    /// Replays every committed fuzz corpus entry: decoding must never panic.
    #[test]
    fn fuzz_corpus_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/proto_frame");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let _ = Msg::decode(&data);
            let _ = read_frame(&mut &data[..]);
        }
    }
}
