//! The slirp4netns port driver: every port is a `hostfwd` rule added through slirp4netns's
//! API socket (`$STATE_DIR/.s4nn.sock`); slirp4netns itself listens on the host and keeps
//! the client's source address. Port ids are the ones slirp4netns assigns, until slirp4netns is
//! restarted (`--restart-net-driver`): then every port is added to the new one again, which
//! numbers them afresh, and the API keeps reporting the ids it gave, mapped to the new ones.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::spec::{check_family, parse_ip};
use super::{PortDriver, PortDriverInfo, PortSpec, PortStatus, validate_port_spec};

/// Largest reply we read from slirp4netns.
const REPLY_MAX: u64 = 64 * 1024;

/// The driver; shared with the API server.
pub(crate) struct Slirp4netnsPorts {
    socket: PathBuf,
    /// The child's address, used when a spec names no child IP.
    child_ip: String,
    ports: RefCell<Ports>,
}

/// The published ports and their ids in the running slirp4netns.
#[derive(Default)]
struct Ports {
    /// As the API lists them, with our ids.
    list: Vec<PortStatus>,
    /// slirp4netns's id of each entry of `list`.
    s4nn: Vec<u32>,
    /// slirp4netns was restarted: its ids are no longer ours, new ports get `highest + 1`.
    renumbered: bool,
    /// The highest id we gave.
    highest: u32,
}

/// Why [`Slirp4netnsPorts::reapply`] did nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotYet {
    /// The new slirp4netns does not listen on its API socket yet: ask again shortly.
    Listening,
}

impl Slirp4netnsPorts {
    /// A driver talking to slirp4netns on `socket`, forwarding to `child_ip` by default.
    pub(crate) fn new(socket: PathBuf, child_ip: String) -> Slirp4netnsPorts {
        Slirp4netnsPorts {
            socket,
            child_ip,
            ports: RefCell::new(Ports::default()),
        }
    }

    /// One request on a fresh connection: write, half-close, read everything.
    fn call(&self, request: &str) -> Result<String, String> {
        let s = UnixStream::connect(&self.socket)
            .map_err(|e| format!("dial unix {}: {e}", self.socket.display()))?;
        Self::exchange(s, request)
    }

    fn exchange(mut s: UnixStream, request: &str) -> Result<String, String> {
        let timeout = Some(Duration::from_secs(10));
        let _ = s.set_read_timeout(timeout);
        let _ = s.set_write_timeout(timeout);
        s.write_all(request.as_bytes())
            .and_then(|()| s.shutdown(std::net::Shutdown::Write))
            .map_err(|e| format!("writing to slirp4netns: {e}"))?;
        let mut reply = String::new();
        s.take(REPLY_MAX)
            .read_to_string(&mut reply)
            .map_err(|e| format!("reading from slirp4netns: {e}"))?;
        Ok(reply)
    }
}

impl PortDriver for Slirp4netnsPorts {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo::slirp4netns()
    }

    fn add(&self, spec: PortSpec) -> Result<PortStatus, String> {
        let mut ports = self.ports.borrow_mut();
        // Before validation, so that `tcp6` on an IPv4 address is refused for what it is.
        if matches!(spec.proto.as_str(), "tcp6" | "udp6" | "sctp6") {
            return Err(format!("unsupported protocol {}", go_quote(&spec.proto)));
        }
        validate_port_spec(&spec, &ports.list)?;
        check_family(&spec)?;
        let req = self.add_request(&spec)?;
        let reply = self.call(&req)?;
        let s4nn =
            parse_reply(&reply)?.ok_or_else(|| format!("unexpected reply: {}", reply.trim()))?;
        let id = if ports.renumbered {
            ports.highest + 1
        } else {
            s4nn
        };
        ports.highest = ports.highest.max(id);
        let status = PortStatus { id, spec };
        ports.list.push(status.clone());
        ports.s4nn.push(s4nn);
        Ok(status)
    }

    fn list(&self) -> Vec<PortStatus> {
        self.ports.borrow().list.clone()
    }

    fn remove(&self, id: u32) -> Result<(), String> {
        let mut ports = self.ports.borrow_mut();
        let at = ports.list.iter().position(|p| p.id == id);
        let s4nn = match at {
            Some(i) => ports.s4nn[i],
            // Not ours: slirp4netns says what it says about it, as upstream; after a restart
            // its ids are not ours, so no request goes out.
            None if !ports.renumbered => id,
            None => return Err(UNKNOWN_ID.into()),
        };
        let req = format!("{{\"execute\":\"remove_hostfwd\",\"arguments\":{{\"id\":{s4nn}}}}}");
        let reply = self.call(&req)?;
        parse_reply(&reply)?;
        if let Some(i) = at {
            ports.list.remove(i);
            ports.s4nn.remove(i);
        }
        Ok(())
    }
}

/// slirp4netns's answer to removing an id it does not know.
const UNKNOWN_ID: &str = "reply.Error: map[desc:bad request: remove_hostfwd: bad arguments.id]";

impl Slirp4netnsPorts {
    /// After slirp4netns was restarted: adds every published port to the new one and maps our
    /// ids to its new ones. A port it refuses now is dropped, with a warning for each.
    ///
    /// # Errors
    /// [`NotYet::Listening`] while the new slirp4netns does not accept on its API socket yet
    /// (it writes its ready byte before it binds the socket); nothing changed then.
    pub(crate) fn reapply(&self) -> Result<Vec<String>, NotYet> {
        let mut ports = self.ports.borrow_mut();
        // Not there yet (ENOENT: our caller removed the dead one's file) or not listening yet
        // (ECONNREFUSED); the caller's retries are bounded.
        let first = UnixStream::connect(&self.socket).map_err(|_| NotYet::Listening)?;
        ports.renumbered = true;
        let mut first = Some(first);
        let mut warnings = Vec::new();
        let mut kept = Ports {
            renumbered: true,
            highest: ports.highest,
            ..Ports::default()
        };
        for (status, _) in ports.list.iter().zip(&ports.s4nn) {
            let added = self.add_request(&status.spec).and_then(|req| {
                let reply = match first.take() {
                    Some(s) => Self::exchange(s, &req)?,
                    None => self.call(&req)?,
                };
                parse_reply(&reply)?.ok_or_else(|| format!("unexpected reply: {}", reply.trim()))
            });
            match added {
                Ok(s4nn) => {
                    kept.list.push(status.clone());
                    kept.s4nn.push(s4nn);
                }
                Err(e) => warnings.push(format!(
                    "port {} (id {}) is no longer forwarded: {e}",
                    spec_text(&status.spec),
                    status.id
                )),
            }
        }
        *ports = kept;
        Ok(warnings)
    }

    /// The `add_hostfwd` request for `spec`.
    fn add_request(&self, spec: &PortSpec) -> Result<String, String> {
        // Addresses go to slirp4netns in their IPv4 form, an IPv4-mapped one too (upstream's
        // `To4()`; upstream passes a mapped parent IP on as written, which slirp4netns refuses).
        let guest = if spec.child_ip.is_empty() {
            self.child_ip.clone()
        } else {
            match parse_ip(&spec.child_ip) {
                Some(IpAddr::V4(ip)) => ip.to_string(),
                Some(IpAddr::V6(_)) => {
                    return Err(format!("unsupported IP (v6?): {}", spec.child_ip));
                }
                None => return Err(format!("invalid IP: {}", go_quote(&spec.child_ip))),
            }
        };
        let host = match parse_ip(&spec.parent_ip) {
            Some(IpAddr::V4(ip)) => ip.to_string(),
            _ => spec.parent_ip.clone(),
        };
        let proto = spec.proto.trim_end_matches('4');
        let mut req = String::from("{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":");
        crate::gojson::write_str(&mut req, proto);
        req.push_str(",\"host_addr\":");
        crate::gojson::write_str(&mut req, &host);
        req.push_str(&format!(
            ",\"host_port\":{},\"guest_addr\":",
            spec.parent_port
        ));
        crate::gojson::write_str(&mut req, &guest);
        req.push_str(&format!(",\"guest_port\":{}}}}}", spec.child_port));
        Ok(req)
    }
}

/// A spec as `-p` takes it: `127.0.0.1:8080:80/tcp`, `[::ffff:127.0.0.1]:8080:80/tcp`.
pub(super) fn spec_text(spec: &PortSpec) -> String {
    let ip = &spec.parent_ip;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    let child = match spec.child_ip.as_str() {
        "" => String::new(),
        ip if ip.contains(':') => format!("[{ip}]:"),
        ip => format!("{ip}:"),
    };
    format!(
        "{host}:{}:{child}{}/{}",
        spec.parent_port, spec.child_port, spec.proto
    )
}

fn go_quote(s: &str) -> String {
    sys::golang::quote(s.as_bytes())
}

/// Reads slirp4netns's answer: `{"return": {"id": N}}` gives `Some(N)`, `{"return": {}}`
/// gives `None`, and `{"error": {"desc": "..."}}` an error worded as upstream prints it.
fn parse_reply(reply: &str) -> Result<Option<u32>, String> {
    let compact: String = reply.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some(rest) = compact.strip_prefix("{\"error\":") {
        let desc = reply
            .split_once("\"desc\"")
            .and_then(|(_, r)| r.split_once('"'))
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(d, _)| d)
            .unwrap_or(rest);
        return Err(format!("reply.Error: map[desc:{desc}]"));
    }
    if !compact.starts_with("{\"return\":") {
        return Err(format!("unexpected reply: {}", reply.trim()));
    }
    Ok(compact
        .split_once("\"id\":")
        .map(|(_, r)| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_like_upstream() {
        assert_eq!(parse_reply("{\"return\": {\"id\": 3}}\n"), Ok(Some(3)));
        assert_eq!(parse_reply("{\"return\": {}}"), Ok(None));
        assert_eq!(
            parse_reply(
                "{\"error\": {\"desc\": \"bad request: remove_hostfwd: bad arguments.id\"}}"
            ),
            Err("reply.Error: map[desc:bad request: remove_hostfwd: bad arguments.id]".into())
        );
        assert!(parse_reply("garbage").is_err());
    }

    #[test]
    fn requests_go_to_the_socket_and_ids_come_back() {
        let dir = std::env::temp_dir().join(format!("rkrs-s4nn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join(".s4nn.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let mut got = Vec::new();
            for (i, conn) in l.incoming().take(3).enumerate() {
                let mut c = conn.unwrap();
                let mut req = String::new();
                c.read_to_string(&mut req).unwrap();
                got.push(req);
                let reply = match i {
                    0 => "{\"return\": {\"id\": 7}}",
                    1 => "{\"return\": {}}",
                    _ => "{\"return\": {\"id\": 8}}",
                };
                c.write_all(reply.as_bytes()).unwrap();
            }
            got
        });
        let d = Slirp4netnsPorts::new(sock, "10.0.2.100".into());
        let spec = PortSpec {
            proto: "tcp4".into(),
            parent_ip: "127.0.0.1".into(),
            parent_port: 8080,
            child_ip: String::new(),
            child_port: 80,
        };
        let st = d.add(spec.clone()).unwrap();
        assert_eq!(st.id, 7);
        assert_eq!(d.list(), [st]);
        d.remove(7).unwrap();
        assert!(d.list().is_empty());
        // IPv4-mapped addresses go out in their IPv4 form and are listed as given.
        let mapped = PortSpec {
            parent_ip: "::ffff:127.0.0.1".into(),
            child_ip: "::ffff:10.0.2.100".into(),
            ..spec.clone()
        };
        assert_eq!(d.add(mapped.clone()).unwrap().spec, mapped);
        let got = server.join().unwrap();
        assert_eq!(
            got[0],
            "{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":8080,\"guest_addr\":\"10.0.2.100\",\"guest_port\":80}}"
        );
        assert_eq!(
            got[1],
            "{\"execute\":\"remove_hostfwd\",\"arguments\":{\"id\":7}}"
        );
        assert_eq!(
            got[2],
            "{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":8080,\"guest_addr\":\"10.0.2.100\",\"guest_port\":80}}"
        );
        // A real IPv6 child address is refused before slirp4netns is asked.
        let v6_child = PortSpec {
            child_ip: "fd00::1".into(),
            parent_port: 8081,
            ..spec.clone()
        };
        assert_eq!(
            d.add(v6_child).unwrap_err(),
            "unsupported IP (v6?): fd00::1"
        );
        // IPv6 is refused before slirp4netns is asked.
        let mut v6 = spec;
        v6.proto = "tcp6".into();
        assert_eq!(d.add(v6).unwrap_err(), "unsupported protocol \"tcp6\"");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_restarted_slirp4netns_gets_the_ports_again_under_the_old_ids() {
        let dir = std::env::temp_dir().join(format!("rkrs-s4nn-heal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join(".s4nn.sock");
        // Nobody listens yet: the new slirp4netns is not up, nothing changes.
        let d = Slirp4netnsPorts::new(sock.clone(), "10.0.2.100".into());
        assert_eq!(d.reapply(), Err(NotYet::Listening));
        let serve = |replies: Vec<&'static str>| {
            let _ = std::fs::remove_file(&sock);
            let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                // Replies first: `zip` asks its first iterator first, and no more connections come.
                for (reply, conn) in replies.into_iter().zip(l.incoming()) {
                    let mut c = conn.unwrap();
                    let mut req = String::new();
                    c.read_to_string(&mut req).unwrap();
                    got.push(req);
                    c.write_all(reply.as_bytes()).unwrap();
                }
                got
            })
        };
        let spec = |port: i64| PortSpec {
            proto: "tcp".into(),
            parent_ip: "127.0.0.1".into(),
            parent_port: port,
            child_ip: String::new(),
            child_port: 80,
        };
        // The first slirp4netns: its ids are ours.
        let first = serve(vec![
            "{\"return\": {\"id\": 4}}",
            "{\"return\": {\"id\": 5}}",
        ]);
        assert_eq!(d.add(spec(8080)).unwrap().id, 4);
        assert_eq!(d.add(spec(8081)).unwrap().id, 5);
        first.join().unwrap();
        // The second numbers from 1 and refuses 8081 now.
        let second = serve(vec![
            "{\"return\": {\"id\": 1}}",
            "{\"error\": {\"desc\": \"bad request: add_hostfwd: slirp_add_hostfwd failed\"}}",
            "{\"return\": {\"id\": 2}}",
            "{\"return\": {}}",
        ]);
        assert_eq!(
            d.reapply(),
            Ok(vec![
                "port 127.0.0.1:8081:80/tcp (id 5) is no longer forwarded: reply.Error: map[desc:bad request: add_hostfwd: slirp_add_hostfwd failed]".to_string()
            ])
        );
        assert_eq!(
            d.list(),
            [PortStatus {
                id: 4,
                spec: spec(8080)
            }]
        );
        // A new port gets a new id of ours, not slirp4netns's 2 (which we never gave out, but
        // 1 or 2 could have been ours).
        assert_eq!(d.add(spec(9090)).unwrap().id, 6);
        // Our id 4 is slirp4netns's 1 now.
        d.remove(4).unwrap();
        // An id we do not know is not passed on, since slirp4netns's ids are not ours.
        assert_eq!(d.remove(1).unwrap_err(), UNKNOWN_ID);
        let got = second.join().unwrap();
        assert!(got[0].contains("\"host_port\":8080"), "{}", got[0]);
        assert!(got[1].contains("\"host_port\":8081"), "{}", got[1]);
        assert!(got[2].contains("\"host_port\":9090"), "{}", got[2]);
        assert_eq!(
            got[3],
            "{\"execute\":\"remove_hostfwd\",\"arguments\":{\"id\":1}}"
        );
        assert_eq!(d.list().iter().map(|p| p.id).collect::<Vec<_>>(), [6]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
