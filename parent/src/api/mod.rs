//! The REST API on `$STATE_DIR/api.sock` (upstream API version 1.1.1): the info types, the
//! hand-written HTTP/1.1 and JSON layers, the server and the client `rootlessctl` uses.
//!
//! The parent listens ([`server::listen`]) before it writes `child_pid` and serves the socket
//! from its own loop through the server's epoll set ([`server::Server::as_fd`],
//! [`server::Server::serve_ready`]); the socket goes with the state dir. Tests drive a server
//! the same way on their own thread ([`server::Server::serve_while`]) and run their clients on
//! others.

pub mod client;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub(crate) mod http;
pub mod json;
pub mod server;

use std::rc::Rc;

use crate::port::PortDriver;
/// The `portDriver` object of [`Info`], defined with the port drivers.
pub use crate::port::PortDriverInfo;

/// The REST API version upstream v2.3.4 (and v3) reports; clients never negotiate it.
pub(crate) const API_VERSION: &str = "1.1.1";

/// What `GET /v1/info` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// `apiVersion`: [`API_VERSION`] from our server.
    pub api_version: String,
    /// `version`: the implementation version, [`crate::UPSTREAM_VERSION`] from our server.
    pub version: String,
    /// `stateDir`: the absolute state directory.
    pub state_dir: String,
    /// `childPID`: the host pid of `rootlesskit-child` (not of the target).
    pub child_pid: i32,
    /// `networkDriver`: absent for `--net=host`.
    pub network_driver: Option<NetworkDriverInfo>,
    /// `portDriver`: absent for `none` and `implicit`.
    pub port_driver: Option<PortDriverInfo>,
}

/// The `networkDriver` object of [`Info`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkDriverInfo {
    /// `slirp4netns`, `pasta`, `none`…
    pub driver: String,
    /// DNS server addresses as text (`10.0.2.3`, `fd00::3`); omitted from JSON when empty.
    pub dns: Vec<String>,
    /// The child's address (`10.0.2.100`); omitted from JSON when empty.
    pub child_ip: String,
    /// True when the child's address is assigned dynamically (lxc-user-nic).
    pub dynamic_child_ip: bool,
}

/// Everything the server answers from: fixed facts of this run plus the port driver.
#[derive(Clone)]
pub struct Backend {
    /// The absolute state directory, as text (a non-UTF-8 path is shown lossily).
    pub state_dir: String,
    /// The host pid of the child, as written to `child_pid`.
    pub child_pid: i32,
    /// `None` for `--net=host`.
    pub network_driver: Option<NetworkDriverInfo>,
    /// `None` for `none` and `implicit`: every `/v1/ports` route then answers 400
    /// `no PortDriver is available`.
    pub port_driver: Option<Rc<dyn PortDriver>>,
}

impl Backend {
    /// The info object this backend reports now.
    pub(crate) fn info(&self) -> Info {
        Info {
            api_version: API_VERSION.to_string(),
            version: crate::UPSTREAM_VERSION.to_string(),
            state_dir: self.state_dir.clone(),
            child_pid: self.child_pid,
            network_driver: self.network_driver.clone(),
            port_driver: self.port_driver.as_ref().map(|d| d.info()),
        }
    }
}
