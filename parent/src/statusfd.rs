//! `--info-fd` and `--json-status-fd`: machine-readable status written to descriptors the caller
//! passes in, as bubblewrap has them.
//!
//! Both are taken at startup, before anything exists on disk: a number that is not open, not
//! open for writing, or one of stdin, stdout and stderr is refused there, and each is marked
//! close-on-exec right away so neither the child nor the target inherits it.
//! When the namespaces are set up (the moment `child_pid` is written and the API listens,
//! before the target starts) the info descriptor gets one JSON object and is closed, and the
//! status descriptor gets the line `{"child-pid":N}`.
//! When the target has exited and the state dir is gone, the status descriptor gets
//! `{"exit-code":N}`, the code rootlesskit exits with.
//! A setup that fails writes nothing to either: the reader sees end-of-file without a
//! `child-pid` line, and rootlesskit's own exit code and error line say why.
//! A reader that went away is ignored: SIGPIPE is blocked and ignored in the parent, so the
//! write fails with `EPIPE` and we go on.
//! Writes block as any write does; the objects are far below `PIPE_BUF`, so a pipe with room
//! takes each in one piece.

use std::os::fd::{AsFd, OwnedFd, RawFd};

use crate::gojson::write_str;

/// The descriptors of `--info-fd` and `--json-status-fd`, owned once validated.
#[derive(Default)]
pub(crate) struct StatusFds {
    info: Option<OwnedFd>,
    status: Option<OwnedFd>,
    /// Whether the `child-pid` line went out, so that an `exit-code` line may follow.
    started: bool,
}

/// What the info object reports once the namespaces are set up.
pub(crate) struct ReadyInfo<'a> {
    pub child_pid: i32,
    pub state_dir: &'a str,
    pub api_socket: &'a str,
    /// `("<kind>-namespace", inode)`, in the order they are written.
    pub namespaces: Vec<(&'static str, u64)>,
    /// The network driver's name and the namespace's address (empty when it has none).
    pub net: Option<(&'a str, &'a str)>,
}

impl StatusFds {
    /// Takes `--info-fd` and `--json-status-fd` (already checked to be 3 or more and distinct
    /// by `cli::check`); `taken` is our own signalfd, the one descriptor this process opened
    /// before, whose number is "not open" as far as the caller is concerned; `listen_fds` is
    /// `$LISTEN_FDS`, the socket-activation descriptors from 3 on, which go to the command.
    pub(crate) fn adopt(
        info: Option<i32>,
        status: Option<i32>,
        taken: RawFd,
        listen_fds: i32,
    ) -> Result<StatusFds, String> {
        Ok(StatusFds {
            info: info
                .map(|n| adopt_one("info-fd", n, taken, listen_fds))
                .transpose()?,
            status: status
                .map(|n| adopt_one("json-status-fd", n, taken, listen_fds))
                .transpose()?,
            started: false,
        })
    }

    /// The namespaces are set up: writes the info object (and closes its descriptor) and the
    /// `child-pid` line.
    pub(crate) fn ready(&mut self, info: &ReadyInfo<'_>) {
        if let Some(fd) = self.info.take() {
            let mut text = encode_info(info);
            text.push('\n');
            write_all(&fd, text.as_bytes());
        }
        if let Some(fd) = &self.status {
            write_all(
                fd,
                format!("{{\"child-pid\":{}}}\n", info.child_pid).as_bytes(),
            );
            self.started = true;
        }
    }

    /// rootlesskit is about to exit with `code`: writes the `exit-code` line if `child-pid` was
    /// written, and closes both descriptors.
    pub(crate) fn exited(&mut self, code: i32) {
        if let Some(fd) = self.status.take()
            && self.started
        {
            write_all(&fd, format!("{{\"exit-code\":{code}}}\n").as_bytes());
        }
        self.info = None;
    }
}

fn adopt_one(flag: &str, n: i32, taken: RawFd, listen_fds: i32) -> Result<OwnedFd, String> {
    if (3..3i32.saturating_add(listen_fds)).contains(&n) {
        return Err(format!(
            "--{flag}={n}: descriptor {n} is one of the {listen_fds} socket-activation descriptors ($LISTEN_FDS) that go to the command"
        ));
    }
    let not_open = || format!("--{flag}={n}: descriptor {n} is not open");
    if n == taken {
        return Err(not_open());
    }
    #[allow(unsafe_code)]
    // SAFETY: called once per number, at the start of the run: `cli::check` made sure the two
    // numbers differ and are 3 or more, and the only descriptor this process has kept open
    // since it started is the signalfd, excluded above, so no other value owns `n`.
    let fd = unsafe { sys::fd::adopt_inherited_fd(n) }.map_err(|_| not_open())?;
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|_| not_open())?;
    let mode = flags & rustix::fs::OFlags::RWMODE;
    if flags.contains(rustix::fs::OFlags::PATH)
        || !(mode == rustix::fs::OFlags::WRONLY || mode == rustix::fs::OFlags::RDWR)
    {
        return Err(format!(
            "--{flag}={n}: descriptor {n} is not open for writing"
        ));
    }
    Ok(fd)
}

/// Writes the whole buffer, retrying on `EINTR`; any other failure (`EPIPE` from a reader that
/// is gone, above all) ends the write quietly.
fn write_all(fd: &OwnedFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        match rustix::io::write(fd.as_fd(), buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
    }
}

/// The info object, compact, keys in a fixed order: `child-pid`, `state-dir`, `api-socket`,
/// the namespaces, then `net-driver` and `child-ip` (when the namespace has an address).
pub(crate) fn encode_info(info: &ReadyInfo<'_>) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(&format!("{{\"child-pid\":{}", info.child_pid));
    out.push_str(",\"state-dir\":");
    write_str(&mut out, info.state_dir);
    out.push_str(",\"api-socket\":");
    write_str(&mut out, info.api_socket);
    for (key, ino) in &info.namespaces {
        out.push_str(&format!(",\"{key}\":{ino}"));
    }
    if let Some((driver, ip)) = info.net {
        out.push_str(",\"net-driver\":");
        write_str(&mut out, driver);
        if !ip.is_empty() {
            out.push_str(",\"child-ip\":");
            write_str(&mut out, ip);
        }
    }
    out.push('}');
    out
}

/// The inode number of a namespace file (`/proc/<pid>/ns/<kind>`, or a bind mount of one),
/// which identifies the namespace as `lsns` and bubblewrap show it.
pub(crate) fn namespace_id(path: &std::path::Path) -> Option<u64> {
    rustix::fs::stat(path).ok().map(|st| st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_object_has_the_fields_in_order_and_escapes_paths() {
        let info = ReadyInfo {
            child_pid: 4242,
            state_dir: "/tmp/rk \"x\"",
            api_socket: "/tmp/rk \"x\"/api.sock",
            namespaces: vec![
                ("user-namespace", 4026532001),
                ("mnt-namespace", 4026532002),
            ],
            net: Some(("slirp4netns", "10.0.2.100")),
        };
        assert_eq!(
            encode_info(&info),
            "{\"child-pid\":4242,\"state-dir\":\"/tmp/rk \\\"x\\\"\",\
             \"api-socket\":\"/tmp/rk \\\"x\\\"/api.sock\",\
             \"user-namespace\":4026532001,\"mnt-namespace\":4026532002,\
             \"net-driver\":\"slirp4netns\",\"child-ip\":\"10.0.2.100\"}"
        );
        let bare = ReadyInfo {
            child_pid: 1,
            state_dir: "/s",
            api_socket: "/s/api.sock",
            namespaces: Vec::new(),
            net: Some(("none", "")),
        };
        assert_eq!(
            encode_info(&bare),
            "{\"child-pid\":1,\"state-dir\":\"/s\",\"api-socket\":\"/s/api.sock\",\"net-driver\":\"none\"}"
        );
    }

    #[test]
    fn namespace_ids_are_the_ns_files_inodes() {
        let id = namespace_id(std::path::Path::new("/proc/self/ns/user")).unwrap();
        let link = std::fs::read_link("/proc/self/ns/user").unwrap();
        assert_eq!(link.to_str().unwrap(), format!("user:[{id}]"));
        assert_eq!(namespace_id(std::path::Path::new("/nonexistent")), None);
    }
}
