//! The gvisor-tap-vsock port driver: our own user-mode network (`crate::usernet`) listens on
//! the host and opens each connection or UDP flow into the namespace itself, from the client's
//! real address and port (upstream's shows every client as the gateway). Upstream's driver
//! info: `tcp tcp4 udp udp4`, loopback child IPs disallowed.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;

use super::spec::{check_family, parse_ip};
use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};
use crate::usernet::Stack;
use crate::usernet::wire::mapped;

/// The driver; shared with the API server, the stack with the supervision loop.
pub struct UsernetPorts {
    stack: Rc<RefCell<Stack>>,
    list: RefCell<Vec<PortStatus>>,
    next_id: Cell<u32>,
}

impl UsernetPorts {
    /// A driver publishing ports through `stack`.
    pub fn new(stack: Rc<RefCell<Stack>>) -> UsernetPorts {
        UsernetPorts {
            stack,
            list: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
        }
    }
}

impl PortDriver for UsernetPorts {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo {
            driver: crate::net::usernet::NAME.into(),
            protos: ["tcp", "tcp4", "udp", "udp4"].map(String::from).to_vec(),
            disallow_loopback_child_ip: true,
        }
    }

    fn add(&self, mut spec: PortSpec) -> Result<PortStatus, String> {
        let mut list = self.list.borrow_mut();
        if !matches!(spec.proto.as_str(), "tcp" | "tcp4" | "udp" | "udp4") {
            return Err(format!(
                "unsupported protocol {}",
                child::golang::quote(spec.proto.as_bytes())
            ));
        }
        validate_port_spec(&spec, &list)?;
        check_family(&spec)?;
        let default = self.stack.borrow().config().child;
        let child_ip = match parse_ip(&spec.child_ip) {
            None => default,
            Some(IpAddr::V4(ip)) if !ip.is_loopback() && !ip.is_unspecified() => ip.octets(),
            Some(IpAddr::V4(ip)) => {
                return Err(format!(
                    "child IP {ip} is not reachable with this port driver"
                ));
            }
            Some(IpAddr::V6(_)) => return Err(format!("unsupported IP (v6?): {}", spec.child_ip)),
        };
        let udp = spec.proto.starts_with("udp");
        let sock = super::builtin::listen_hinted(&spec, udp)?;
        let id = self.next_id.get();
        self.stack.borrow_mut().publish(
            id,
            sock,
            udp,
            (mapped(child_ip), spec.child_port as u16),
        )?;
        self.next_id.set(id + 1);
        // As upstream, the status names the child IP the port goes to.
        if spec.child_ip.is_empty() {
            spec.child_ip = std::net::Ipv4Addr::from(child_ip).to_string();
        }
        let status = PortStatus { id, spec };
        list.push(status.clone());
        Ok(status)
    }

    fn list(&self) -> Vec<PortStatus> {
        self.list.borrow().clone()
    }

    fn remove(&self, id: u32) -> Result<(), String> {
        let mut list = self.list.borrow_mut();
        let Some(i) = list.iter().position(|p| p.id == id) else {
            return Err(format!("unknown port id: {id}"));
        };
        list.remove(i);
        self.stack.borrow_mut().unpublish(id);
        Ok(())
    }
}
