//! What the port-publishing tests share: a rootlesskit running python3 servers as its target,
//! free host ports, the host's address and what a peer-telling server says.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use crate::{Output, Run, Scratch, rootlesskit};

/// A host TCP port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The host's first non-loopback IPv4 address (from the kernel's routing trie).
pub fn host_ipv4() -> Option<Ipv4Addr> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if t == "/32 host LOCAL"
            && let Some(ip) = last.filter(|ip| !ip.is_loopback())
        {
            return Some(ip);
        }
    }
    None
}

/// What a peer-telling server inside (it writes `ADDRESS PORT`) says about a connection
/// through `to`: our local address and the peer address it saw.
pub fn seen_from(to: SocketAddr) -> Option<(String, String)> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let local = s.local_addr().ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let mut words = text.split_whitespace();
    let seen = format!("{}:{}", words.next()?, words.next()?);
    Some((local.to_string(), seen))
}

/// A rootlesskit whose target is a python3 script (the servers the ports lead to).
pub struct Running {
    child: Option<Child>,
    /// Its `--state-dir`.
    pub state: PathBuf,
    _dir: Scratch,
}

impl Running {
    /// `rootlesskit --state-dir=… FLAGS… python3 -c SCRIPT` in a new scratch dir `name`; with
    /// `--detach-netns` among the flags the target stays in the host's network namespace and
    /// the servers go where the ports lead (as dockerd's containers do). Waits until the child
    /// is up; fails with rootlesskit's output if it does not come up.
    pub fn start(name: &str, flags: &[String], script: &str) -> Running {
        let dir = Scratch::new(name);
        let state = dir.join("state");
        let mut args = vec![format!("--state-dir={}", state.display())];
        args.extend(flags.iter().cloned());
        if flags.iter().any(|a| a == "--detach-netns") {
            args.extend([
                "nsenter".into(),
                format!("--net={}", state.join("netns").display()),
            ]);
        }
        args.extend(["python3".into(), "-c".into(), script.into()]);
        let log = dir.join("log");
        let child = rootlesskit(args).spawn_logged(&log);
        let up = crate::wait_until(Duration::from_secs(15), || state.join("child_pid").exists());
        assert!(
            up,
            "rootlesskit did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Running {
            child: Some(child),
            state,
            _dir: dir,
        }
    }

    /// `rootlessctl --socket=STATE/api.sock ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Run::bin("rootlessctl")
            .args([format!(
                "--socket={}",
                self.state.join("api.sock").display()
            )])
            .args(args.iter().copied())
            .output()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::send_signal(c.id(), "TERM");
            // Its output went to the log file, so there is no pipe to drain.
            if !crate::wait_until(Duration::from_secs(10), || {
                c.try_wait().is_ok_and(|s| s.is_some())
            }) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
