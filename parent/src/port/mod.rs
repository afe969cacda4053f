//! Port forwarding as the API sees it: the spec and status types, their validation, and the
//! [`PortDriver`] trait that the builtin, slirp4netns, pesto and gvisor-tap-vsock drivers (and
//! the tests' `fake`) implement for the API server.

pub(crate) mod builtin;
pub mod fake;
pub(crate) mod pesto;
pub(crate) mod pump;
pub(crate) mod slirp4netns;
pub mod spec;
pub(crate) mod usernet;

pub use spec::{PortSpec, PortStatus, go_atoi, parse_port_spec};
pub(crate) use spec::{check_family, validate_port_spec};

/// What `GET /v1/info` says about the port driver (`portDriver`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortDriverInfo {
    /// `builtin` or `slirp4netns`.
    pub driver: String,
    /// The protocols [`PortDriver::add`] accepts, e.g. `tcp tcp4 tcp6 udp udp4 udp6`.
    pub protos: Vec<String>,
    /// True when a loopback child IP cannot be reached (slirp4netns).
    pub disallow_loopback_child_ip: bool,
}

impl PortDriverInfo {
    /// The builtin driver's info, as upstream reports it.
    pub(crate) fn builtin() -> PortDriverInfo {
        PortDriverInfo {
            driver: "builtin".into(),
            protos: ["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"]
                .map(String::from)
                .to_vec(),
            disallow_loopback_child_ip: false,
        }
    }

    /// The slirp4netns driver's info, as upstream reports it.
    pub(crate) fn slirp4netns() -> PortDriverInfo {
        PortDriverInfo {
            driver: "slirp4netns".into(),
            protos: ["tcp", "tcp4", "udp", "udp4"].map(String::from).to_vec(),
            disallow_loopback_child_ip: true,
        }
    }
}

/// A parent-side port driver, shared (`Rc<dyn PortDriver>`) between the API server and the
/// parent's loop, which run on the parent's one thread.
///
/// Implementations keep their port table in a `RefCell` borrowed for one call at a time:
/// [`add`](PortDriver::add) runs [`validate_port_spec`] against [`list`](PortDriver::list)
/// within that call. Errors are the one-line texts the API returns with status 400
/// (`conflict with ID 1`, `unknown id: 7`, bind errors).
pub trait PortDriver {
    /// The `portDriver` object of `GET /v1/info`.
    fn info(&self) -> PortDriverInfo;
    /// Publishes a port and returns its status (the spec as given, plus a fresh id).
    fn add(&self, spec: PortSpec) -> Result<PortStatus, String>;
    /// Every published port, in any order.
    fn list(&self) -> Vec<PortStatus>;
    /// Stops forwarding port `id` at once.
    fn remove(&self, id: u32) -> Result<(), String>;
}
