//! The port driver of the tests and the fuzz targets: a port table in memory with upstream's
//! validation and id numbering, and no sockets.

use std::cell::RefCell;

use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};

/// A port table in memory; says it is `builtin`.
///
/// Parent IP `1.2.3.4` stands for an address this host does not have: adding it fails as
/// binding it would.
#[derive(Debug, Default)]
pub struct FakePorts {
    /// The last id given, and the published ports.
    table: RefCell<(u32, Vec<PortStatus>)>,
}

impl PortDriver for FakePorts {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo::builtin()
    }

    fn add(&self, spec: PortSpec) -> Result<PortStatus, String> {
        let mut t = self.table.borrow_mut();
        validate_port_spec(&spec, &t.1)?;
        if spec.parent_ip == "1.2.3.4" {
            return Err(format!(
                "listen tcp 1.2.3.4:{}: bind: cannot assign requested address",
                spec.parent_port
            ));
        }
        t.0 += 1;
        let status = PortStatus { id: t.0, spec };
        t.1.push(status.clone());
        Ok(status)
    }

    fn list(&self) -> Vec<PortStatus> {
        self.table.borrow().1.clone()
    }

    fn remove(&self, id: u32) -> Result<(), String> {
        let mut t = self.table.borrow_mut();
        let before = t.1.len();
        t.1.retain(|p| p.id != id);
        if t.1.len() == before {
            return Err(format!("unknown id: {id}"));
        }
        Ok(())
    }
}
