//! The sd_notify relay: with `$NOTIFY_SOCKET` set (systemd's `Type=notify`), the target gets
//! a datagram socket of ours, `STATE_DIR/notify.sock`, as its `$NOTIFY_SOCKET`, and the parent
//! forwards every message it reads there to systemd's socket from its supervision loop. systemd
//! then sees `rootlesskit`, the unit's main process, as the sender, so the default
//! `NotifyAccess=main` accepts the target's `READY=1`, `STATUS=`, `STOPPING=1`, … A `MAINPID=`
//! from the target names a pid of its own namespace, meaningless to systemd: it becomes ours
//! (the process systemd must watch: the target ends with us), and `MAINPIDFDID=` that goes with
//! it is dropped. Descriptors (`FDSTORE=1`, `BARRIER=1`) are passed on as they came.
//!
//! With `--notify-ready=child`, `rootlesskit` sends `READY=1` itself once the namespaces are set
//! up and `child_pid` is written, for targets that never notify.
//!
//! `$NOTIFY_SOCKET` is a path or an abstract name (`@name`); the parent reaches it from the
//! host's namespaces, so an abstract socket works even with a network namespace of the child's
//! own. When it names nothing we can reach (no socket there, another address family), the
//! variable is passed through unchanged, as before.

use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Our socket's name in the state dir.
pub(crate) const SOCKET_NAME: &str = "notify.sock";

/// The largest message systemd reads (its `NOTIFY_BUFFER_MAX`, a pipe buffer).
pub(crate) const MAX_MESSAGE: usize = 4096;

/// Messages forwarded per wake-up of the loop.
const BATCH: usize = 32;

/// The most descriptors one message passes on.
const MAX_FDS: usize = 64;

/// Room for a rewritten message: a `MAINPID=` line grows by at most 10 digits, and the shortest
/// such line with its newline is 9 bytes, so the text at most triples.
const MAX_OUT: usize = 3 * MAX_MESSAGE;

/// Who tells systemd `READY=1` (`--notify-ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// The target, through the relay (the default).
    Target,
    /// `rootlesskit` itself, once `child_pid` is written.
    Child,
}

/// The relay: our socket, where the target's messages arrive, and systemd's address.
pub(crate) struct Relay {
    sock: OwnedFd,
    out: OwnedFd,
    upstream: SocketAddrUnix,
    path: PathBuf,
    pid: u32,
    warned: bool,
}

/// systemd's socket address from `$NOTIFY_SOCKET`: a path (`/…`) or an abstract name (`@…`);
/// `None` for anything else (vsock, an empty or relative value).
pub(crate) fn upstream_address(value: &[u8]) -> Option<SocketAddrUnix> {
    match value {
        [b'@', name @ ..] if !name.is_empty() => SocketAddrUnix::new_abstract_name(name).ok(),
        [b'/', ..] => SocketAddrUnix::new(value).ok(),
        _ => None,
    }
}

fn dgram_socket() -> rustix::io::Result<OwnedFd> {
    rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
}

impl Relay {
    /// The relay for `$NOTIFY_SOCKET`, bound at `state/notify.sock` and named to the target
    /// through `named` (the state dir as given, which may be a symlink to `state`); `None` (pass
    /// the variable through) when it is unset or unreachable. A socket we cannot make, or a name
    /// too long for a socket address, is a warning, not an error: the target then talks to
    /// systemd directly, as before.
    pub(crate) fn setup(
        state: &Path,
        named: &Path,
        notify_socket: Option<&OsStr>,
    ) -> Option<Relay> {
        let upstream = upstream_address(notify_socket?.as_bytes())?;
        // Is anybody there? A datagram connect sends nothing.
        let probe = dgram_socket().ok()?;
        rustix::net::connect(&probe, &upstream).ok()?;
        let path = named.join(SOCKET_NAME);
        let made = || -> rustix::io::Result<(OwnedFd, OwnedFd)> {
            // The target's sd_notify must be able to address it.
            SocketAddrUnix::new(&path)?;
            let sock = dgram_socket()?;
            rustix::net::bind(&sock, &SocketAddrUnix::new(state.join(SOCKET_NAME))?)?;
            Ok((sock, dgram_socket()?))
        };
        match made() {
            Ok((sock, out)) => Some(Relay {
                sock,
                out,
                upstream,
                path,
                pid: std::process::id(),
                warned: false,
            }),
            Err(e) => {
                crate::warn(&format!(
                    "cannot relay $NOTIFY_SOCKET through {}: {e}; passing it through",
                    path.display()
                ));
                None
            }
        }
    }

    /// The target's `$NOTIFY_SOCKET`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What the supervision loop waits on.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// `--notify-ready=child`: our own `READY=1`.
    pub(crate) fn send_ready(&mut self) {
        self.send(b"READY=1", &[]);
    }

    /// Forwards the messages waiting on our socket, at most [`BATCH`] per call so that a
    /// chatty target cannot starve the loop (the socket stays readable for the next round).
    pub(crate) fn relay(&mut self) {
        let mut buf = [0u8; MAX_MESSAGE];
        let mut out = [0u8; MAX_OUT];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        for _ in 0..BATCH {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let got = match rustix::net::recvmsg(
                &self.sock,
                &mut iov,
                &mut control,
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
            ) {
                Ok(r) => r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = m {
                    fds.extend(received);
                }
            }
            if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
                self.warn_once("a $NOTIFY_SOCKET message over 4096 bytes was dropped");
                continue;
            }
            match rewrite(&buf[..got.bytes], self.pid, &mut out) {
                Some(n) if n > 0 => {
                    let n_fds: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
                    self.send(&out[..n], &n_fds);
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            control = SendAncillaryBuffer::new(&mut []);
        }
        let iov = [IoSlice::new(msg)];
        // Never block the loop: systemd reads its socket promptly, and a full one loses the
        // message rather than stalling the API and the signals.
        let sent = loop {
            match rustix::net::sendmsg_addr(
                &self.out,
                &self.upstream,
                &iov,
                &mut control,
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r,
            }
        };
        if let Err(e) = sent {
            self.warn_once(&format!("cannot forward to $NOTIFY_SOCKET: {e}"));
        }
    }

    fn warn_once(&mut self, msg: &str) {
        if !self.warned {
            self.warned = true;
            crate::warn(msg);
        }
    }
}

/// One message as systemd gets it: `MAINPID=` lines name `pid` (ours), `MAINPIDFDID=` lines go,
/// everything else is kept byte for byte. Returns the length written into `out`, `None` if it
/// does not fit.
pub(crate) fn rewrite(msg: &[u8], pid: u32, out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut put = |bytes: &[u8], n: &mut usize| -> Option<()> {
        out.get_mut(*n..*n + bytes.len())?.copy_from_slice(bytes);
        *n += bytes.len();
        Some(())
    };
    let mut digits = [0u8; 10];
    let pid_text = {
        let mut v = pid;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        &digits[i..]
    };
    let mut first = true;
    for line in msg.split(|&b| b == b'\n') {
        if line.starts_with(b"MAINPIDFDID=") {
            continue;
        }
        if !first {
            put(b"\n", &mut n)?;
        }
        first = false;
        if line.starts_with(b"MAINPID=") {
            put(b"MAINPID=", &mut n)?;
            put(pid_text, &mut n)?;
        } else {
            put(line, &mut n)?;
        }
    }
    Some(n)
}

/// Fuzz body: any datagram rewrites without a panic, within [`MAX_OUT`], and keeps its other lines.
#[cfg(any(test, fuzzing))]
pub fn fuzz_message(data: &[u8]) {
    let data = &data[..data.len().min(MAX_MESSAGE)];
    let mut out = [0u8; MAX_OUT];
    let n = rewrite(data, u32::MAX, &mut out).expect("a message of at most 4096 bytes fits");
    let text = &out[..n];
    for line in text.split(|&b| b == b'\n') {
        if line.starts_with(b"MAINPID=") {
            assert_eq!(line, b"MAINPID=4294967295");
        }
        assert!(!line.starts_with(b"MAINPIDFDID="));
    }
    // The other lines, in order (an empty text has none).
    let kept = |t: &'_ [u8]| -> Vec<Vec<u8>> {
        if t.is_empty() {
            return Vec::new();
        }
        t.split(|&b| b == b'\n')
            .filter(|l| !l.starts_with(b"MAINPID"))
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (before, after) = (kept(data), kept(text));
    if !text.is_empty() {
        assert_eq!(before, after);
    } else {
        assert!(before.iter().all(|l| l.is_empty()), "{before:?}");
    }
    let _ = upstream_address(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(msg: &str) -> String {
        let mut out = [0u8; MAX_OUT];
        let n = rewrite(msg.as_bytes(), 4242, &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn mainpid_becomes_ours_and_the_rest_is_kept() {
        assert_eq!(rw("READY=1"), "READY=1");
        assert_eq!(rw("READY=1\nSTATUS=up\n"), "READY=1\nSTATUS=up\n");
        assert_eq!(rw("MAINPID=7\nREADY=1"), "MAINPID=4242\nREADY=1");
        assert_eq!(
            rw("MAINPID=7\nMAINPIDFDID=123\nREADY=1"),
            "MAINPID=4242\nREADY=1"
        );
        assert_eq!(rw("STATUS=MAINPID=7"), "STATUS=MAINPID=7");
        assert_eq!(
            rw("EXTEND_TIMEOUT_USEC=5000000"),
            "EXTEND_TIMEOUT_USEC=5000000"
        );
        assert_eq!(rw(""), "");
        // Too little room: no partial message.
        let mut small = [0u8; 12];
        assert_eq!(rewrite(b"MAINPID=1", 4242, &mut small), Some(12));
        assert_eq!(rewrite(b"MAINPID=1\n", 4242, &mut small), None);
    }

    #[test]
    fn worst_case_growth_fits() {
        let msg = b"MAINPID=\n".repeat(MAX_MESSAGE / 9 + 1);
        fuzz_message(&msg);
        fuzz_message(b"MAINPIDFDID=1\nMAINPIDFDID=2");
        fuzz_message(b"\n\n\nREADY=1\xff");
    }

    #[test]
    fn notify_message_corpus_replays() {
        crate::fuzzing::replay("notify_message", fuzz_message);
    }

    #[test]
    fn addresses() {
        assert!(upstream_address(b"/run/systemd/notify").is_some());
        let abs = upstream_address(b"@/org/freedesktop/systemd1/notify/1").unwrap();
        assert_eq!(
            abs.abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/1"[..])
        );
        for bad in [&b""[..], b"@", b"relative/path", b"vsock:2:1234"] {
            assert!(upstream_address(bad).is_none(), "{bad:?}");
        }
        assert!(upstream_address(&[b'/'; 200]).is_none());
    }

    #[test]
    fn unreachable_socket_is_passed_through() {
        let dir = std::env::temp_dir();
        assert!(Relay::setup(&dir, &dir, None).is_none());
        let none = Some(OsStr::new("/nonexistent/notify"));
        assert!(Relay::setup(&dir, &dir, none).is_none());
        assert!(Relay::setup(&dir, &dir, Some(OsStr::new("vsock:2:3"))).is_none());
    }
}
