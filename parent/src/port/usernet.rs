//! The gvisor-tap-vsock port driver: our own user-mode network (`crate::usernet`) listens on
//! the host and opens each connection or UDP flow into the namespace itself, from the client's
//! real address and port (upstream's shows every client as the gateway). Upstream's driver
//! info: `tcp tcp4 udp udp4`, loopback child IPs disallowed; with `--ipv6` also `tcp6 udp6`,
//! toward the namespace's SLAAC address.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;

use super::spec::{check_family, parse_ip};
use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};
use crate::usernet::Stack;
use crate::usernet::wire::{mapped, unmapped};

/// The driver; shared with the API server, the stack with the supervision loop.
pub(crate) struct UsernetPorts {
    stack: Rc<RefCell<Stack>>,
    list: RefCell<Vec<PortStatus>>,
    next_id: Cell<u32>,
}

impl UsernetPorts {
    /// A driver publishing ports through `stack`.
    pub(crate) fn new(stack: Rc<RefCell<Stack>>) -> UsernetPorts {
        UsernetPorts {
            stack,
            list: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
        }
    }
}

impl PortDriver for UsernetPorts {
    fn info(&self) -> PortDriverInfo {
        let protos: &[&str] = if self.stack.borrow().child6().is_some() {
            &["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"]
        } else {
            &["tcp", "tcp4", "udp", "udp4"]
        };
        PortDriverInfo {
            driver: crate::net::usernet::NAME.into(),
            protos: protos.iter().map(|p| p.to_string()).collect(),
            disallow_loopback_child_ip: true,
        }
    }

    fn add(&self, mut spec: PortSpec) -> Result<PortStatus, String> {
        let mut list = self.list.borrow_mut();
        if !self.info().protos.contains(&spec.proto) {
            // Upstream's words for this driver (unquoted, unlike the slirp4netns driver's).
            return Err(format!("unsupported protocol: {}", spec.proto));
        }
        validate_port_spec(&spec, &list)?;
        check_family(&spec)?;
        let six = spec.proto.ends_with('6');
        let (default, default6) = {
            let st = self.stack.borrow();
            (mapped(st.config().child), st.child6())
        };
        let child_ip = match parse_ip(&spec.child_ip) {
            None if six => default6.ok_or("IPv6 is not enabled (--ipv6)")?,
            None => default,
            Some(ip) if ip.is_loopback() || ip.is_unspecified() => {
                return Err(format!(
                    "child IP {ip} is not reachable with this port driver"
                ));
            }
            Some(IpAddr::V4(ip)) if !six => mapped(ip.octets()),
            Some(IpAddr::V6(ip)) if six && ip.to_ipv4_mapped().is_none() => ip.octets(),
            Some(_) => {
                return Err(format!(
                    "child IP {} does not match protocol {}",
                    spec.child_ip, spec.proto
                ));
            }
        };
        let udp = spec.proto.starts_with("udp");
        let sock = super::builtin::listen_hinted(&spec, udp)?;
        let id = self.next_id.get();
        self.stack
            .borrow_mut()
            .publish(id, sock, udp, (child_ip, spec.child_port as u16))?;
        self.next_id.set(id + 1);
        // As upstream, the status names the child IP the port goes to.
        if spec.child_ip.is_empty() {
            spec.child_ip = match unmapped(&child_ip) {
                Some(v4) => std::net::Ipv4Addr::from(v4).to_string(),
                None => std::net::Ipv6Addr::from(child_ip).to_string(),
            };
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
