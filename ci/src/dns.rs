//! Test nameservers for the in-process network's DNS tests, and the host's `/etc/resolv.conf`
//! made theirs: a private one bind-mounted in a mount namespace of rootlesskit's own.

use std::ffi::OsStr;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The address every answer of ours gives.
pub const ANSWER: [u8; 4] = [192, 0, 2, 7];

/// What a test nameserver does with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Reads it and says nothing.
    Silent,
    /// Answers with one A record, [`ANSWER`].
    Answer,
    /// Answers REFUSED.
    Refuse,
}

/// The answer to `query` (a DNS message of at least a header and one question): the question as
/// asked, then one A record for its name with [`ANSWER`].
pub fn answer_a(query: &[u8]) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&ANSWER);
    r
}

/// A UDP nameserver on `addr`:53 counting the queries it reads; it stops, freeing the address,
/// when dropped.
pub struct Resolver {
    seen: Arc<AtomicUsize>,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// `None` (with the reason on stderr) when the address is taken or does not exist.
    pub fn start(addr: &str, mode: Mode) -> Option<Resolver> {
        let s = match UdpSocket::bind((addr, 53)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{addr}:53: {e}");
                return None;
            }
        };
        s.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
        let seen = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(AtomicU8::new(mode as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, now, stopped) = (seen.clone(), mode.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                if n < 17 {
                    continue;
                }
                let r = match now.load(Ordering::SeqCst) {
                    m if m == Mode::Answer as u8 => answer_a(&buf[..n]),
                    m if m == Mode::Refuse as u8 => {
                        let mut r = buf[..n].to_vec();
                        r[2] = 0x81;
                        r[3] = 0x85;
                        r[6..12].fill(0);
                        r
                    }
                    _ => continue,
                };
                let _ = s.send_to(&r, from);
            }
        });
        Some(Resolver {
            seen,
            mode,
            stop,
            thread: Some(thread),
        })
    }

    /// How many queries it read so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// What it does with the queries from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A command running `rootlesskit ARGS` as the test user with `resolv` as the host's
/// `/etc/resolv.conf`: bind-mounted in a mount namespace of its own first, which takes root
/// and unshare(1) (`None` otherwise). unshare, sh and setpriv each exec the next, so the pid
/// of the spawned command is rootlesskit's. Working directory `/`, `HOME=/`.
pub fn rootlesskit_with_resolv_conf<S: AsRef<OsStr>>(resolv: &Path, args: &[S]) -> Option<Command> {
    crate::rootlesskit_over_bind(resolv, Path::new("/etc/resolv.conf"), args)
}
