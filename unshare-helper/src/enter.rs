//! `rootlessctl exec` (run by `rootlesskit-unshare --exec`): a command inside a running
//! instance's namespaces, the way
//! `nsenter -U --preserve-credentials -m -n -t $(cat child_pid)` did, without that program.
//!
//! The child is named by `STATE_DIR/child_pid` and held by a pidfd from then on, so a pid that
//! is reused later cannot redirect us; the namespaces entered are those where the child differs
//! from us (user, mount, network, pid, cgroup, uts, ipc), all at once with
//! `setns(pidfd, flags)` (Linux ≥ 5.8), else one by one through `/proc/PID/ns/*` opened while
//! the pidfd showed the child alive. With `--detach-netns` the network is the namespace bound
//! on `STATE_DIR/netns` inside the child's mounts. Without a pid namespace the command replaces
//! us (`execve`); with one it must be forked, and we forward signals and pass on its exit code
//! (255 for a signal, as rootlesskit does).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::process::{Pid, PidfdFlags, WaitOptions};
use rustix::thread::{LinkNameSpaceType as L, ThreadNameSpaceType as T};
use sys::process::Ended;

/// The namespaces an instance may have, in the order they are entered one by one (user first:
/// it gives the capabilities the others need).
const KINDS: [(&str, T, L); 7] = [
    ("user", T::USER, L::User),
    ("mnt", T::MOUNT, L::Mount),
    ("net", T::NETWORK, L::Network),
    ("pid", T::PROCESS_ID, L::ProcessID),
    ("cgroup", T::CONTROL_GROUP, L::ControlGroup),
    (
        "uts",
        T::HOST_NAME_AND_NIS_DOMAIN_NAME,
        L::HostNameAndNISDomainName,
    ),
    (
        "ipc",
        T::INTER_PROCESS_COMMUNICATION,
        L::InterProcessCommunication,
    ),
];

/// The environment variables rootlesskit gives its target.
const OURS: [&str; 3] = [
    "ROOTLESSKIT_STATE_DIR",
    "ROOTLESSKIT_PARENT_EUID",
    "ROOTLESSKIT_PARENT_EGID",
];

/// A failure before the command ran: the one-line message and the exit code (1 for a missing
/// instance or a failed entry, 127 and 126 for a command not found or not runnable, as
/// `nsenter` and `env` use them).
#[derive(Debug)]
pub(crate) struct Failed(pub String, pub i32);

fn fail(msg: String) -> Failed {
    Failed(msg, 1)
}

/// Runs `argv` in the instance whose state dir is `state_dir`; returns the command's exit code
/// when it had to be forked (else the command replaced us).
pub(crate) fn exec(state_dir: &Path, argv: &[OsString]) -> Result<i32, Failed> {
    let Some(name) = argv.first() else {
        return Err(fail("no command specified".into()));
    };
    let cwd = std::env::current_dir().ok();
    let state = match (&cwd, state_dir.is_absolute()) {
        (Some(c), false) => c.join(state_dir),
        _ => state_dir.to_path_buf(),
    };
    let (pid, pidfd) = open_child(&state)?;
    let stale = |why: &str| {
        fail(format!(
            "no running rootlesskit instance in {}: process {pid} from child_pid {why}",
            state.display()
        ))
    };
    let mut flags = T::empty();
    for (kind, t, _) in KINDS {
        let link = format!("/proc/{pid}/ns/{kind}");
        let theirs = std::fs::read_link(&link).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => stale("is not running"),
            // A pid reused by a process of another user.
            std::io::ErrorKind::PermissionDenied => stale("belongs to another user"),
            _ => fail(format!("readlink {link}: {}", sys::errno::text(&e))),
        })?;
        if std::fs::read_link(format!("/proc/self/ns/{kind}")).ok() != Some(theirs) {
            flags |= t;
        }
    }
    if !flags.contains(T::USER) {
        return Err(stale("is not in a user namespace of its own"));
    }
    let env = command_env(pid, &state);
    // Opened while the pidfd shows the child alive: what the fallback enters.
    let fds = KINDS
        .iter()
        .filter(|k| flags.contains(k.1))
        .map(|k| {
            let fd = rustix::fs::open(
                format!("/proc/{pid}/ns/{}", k.0),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            );
            fd.map(|fd| (fd, k.2))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| stale("is not running"))?;
    if sys::signal::pidfd_send_signal(&pidfd, 0).is_err() {
        return Err(stale("is not running"));
    }
    let entered = match rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), flags) {
        Ok(()) => Ok(()),
        // Before Linux 5.8 a pidfd is no namespace descriptor.
        Err(rustix::io::Errno::INVAL) => fds.iter().try_for_each(|(fd, kind)| {
            rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*kind))
        }),
        Err(e) => Err(e),
    };
    entered.map_err(|e| {
        fail(format!(
            "cannot enter the namespaces of process {pid}: {}",
            sys::errno::text(&e.into())
        ))
    })?;
    drop(fds);
    enter_detached_netns(&state)?;
    // Entering the mount namespace moved us to its root; go back where we were if that exists.
    if let Some(c) = &cwd {
        let _ = rustix::process::chdir(c);
    }
    let path = sys::golang::look_path(name, std::env::var_os("PATH").as_deref())
        .map_err(|e| Failed(e, 127))?;
    if flags.contains(T::PROCESS_ID) {
        run_forked(&path, argv, env)
    } else {
        let exec_failed = |e: std::io::Error| exec_error(&path, &e);
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| fail("command contains a NUL byte".into()))?;
        let argv = sys::process::CStrVec::new(argv).map_err(|e| fail(sys::errno::text(&e)))?;
        let envp = sys::process::CStrVec::new(env).map_err(|e| fail(sys::errno::text(&e)))?;
        Err(exec_failed(sys::process::execve(&c_path, &argv, &envp)))
    }
}

/// Reads `child_pid` and opens a pidfd for it.
fn open_child(state: &Path) -> Result<(i32, OwnedFd), Failed> {
    let file = state.join("child_pid");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        fail(format!(
            "no running rootlesskit instance in {}: {}: {}",
            state.display(),
            file.display(),
            sys::errno::text(&e)
        ))
    })?;
    let bad = || {
        fail(format!(
            "no running rootlesskit instance in {}: bad child_pid {:?}",
            state.display(),
            text.trim()
        ))
    };
    let pid: i32 = text.trim().parse().map_err(|_| bad())?;
    let raw = Pid::from_raw(pid).ok_or_else(bad)?;
    let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::empty()).map_err(|e| {
        if e == rustix::io::Errno::SRCH {
            fail(format!(
                "no running rootlesskit instance in {}: process {pid} from child_pid is not running",
                state.display()
            ))
        } else {
            fail(format!("pidfd_open {pid}: {}", sys::errno::text(&e.into())))
        }
    })?;
    Ok((pid, pidfd))
}

/// Our environment with the instance's `ROOTLESSKIT_*` variables, as its target has them
/// (read from the child's initial environment; computed when that is unreadable).
fn command_env(pid: i32, state: &Path) -> Vec<OsString> {
    let theirs = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let mut env: Vec<OsString> = std::env::vars_os()
        .filter(|(k, _)| !OURS.iter().any(|o| OsStr::new(o) == k))
        .map(|(k, v)| {
            let mut e = k;
            e.push("=");
            e.push(v);
            e
        })
        .collect();
    for (i, key) in OURS.iter().enumerate() {
        let prefix = format!("{key}=");
        let found = theirs
            .split(|&b| b == 0)
            .find(|e| e.starts_with(prefix.as_bytes()));
        let entry = match (found, i) {
            (Some(e), _) => OsString::from_vec(e.to_vec()),
            (None, 0) => {
                let mut e = OsString::from(prefix);
                e.push(state.as_os_str());
                e
            }
            (None, 1) => format!("{prefix}{}", rustix::process::geteuid().as_raw()).into(),
            (None, _) => format!("{prefix}{}", rustix::process::getegid().as_raw()).into(),
        };
        env.push(entry);
    }
    env
}

/// With `--detach-netns` the instance's network is the namespace bound on `STATE/netns` in its
/// mounts (where we are now); without it that file is absent, or no namespace.
fn enter_detached_netns(state: &Path) -> Result<(), Failed> {
    let Ok(fd) = rustix::fs::open(
        state.join(proto::NETNS_FILE_NAME),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return Ok(());
    };
    match rustix::thread::move_into_link_name_space(fd.as_fd(), Some(L::Network)) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(e) => Err(fail(format!(
            "cannot enter the detached network namespace: {}",
            sys::errno::text(&e.into())
        ))),
    }
}

fn exec_error(path: &Path, e: &std::io::Error) -> Failed {
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Failed(
        format!("exec {}: {}", path.display(), sys::errno::text(e)),
        code,
    )
}

/// Forks the command (it lands in the instance's pid namespace), forwards our signals to it and
/// returns its exit code.
fn run_forked(path: &Path, argv: &[OsString], env: Vec<OsString>) -> Result<i32, Failed> {
    let sigfd = sys::signal::block_signals(sys::signal::handled())
        .and_then(|()| sys::signal::signalfd(sys::signal::handled()))
        .map_err(|e| fail(format!("signals: {}", sys::errno::text(&e))))?;
    let cmd = sys::spawn::Command::new(path, argv, env).map_err(|e| fail(sys::errno::text(&e)))?;
    let mut started = cmd
        .spawn()
        .map_err(|e| fail(format!("fork: {}", sys::errno::text(&e))))?;
    if let Err(e) = started.wait_exec() {
        let _ = rustix::process::waitpid(Pid::from_raw(started.pid), WaitOptions::empty());
        return Err(exec_error(path, &e.error));
    }
    loop {
        let info = match sys::signal::read_signal(&sigfd) {
            Ok(i) => i,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("reading signals: {}", sys::errno::text(&e)))),
        };
        if info.signo == 17 {
            while let Ok(Some((pid, st))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
                if pid.as_raw_nonzero().get() == started.pid
                    && let Some(ended) = Ended::from_wait(st)
                {
                    return Ok(ended.exit_code());
                }
            }
        } else if sys::signal::is_forwarded(info.signo) {
            let _ = sys::signal::pidfd_send_signal(&started.pidfd, info.signo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_instance_is_one_clear_line() {
        let dir = std::env::temp_dir().join(format!("rk-enter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = || exec(&dir, &["true".into()]).unwrap_err();
        let Failed(msg, code) = run();
        assert_eq!(code, 1);
        assert!(
            msg.starts_with("no running rootlesskit instance in "),
            "{msg}"
        );
        assert!(
            msg.ends_with("child_pid: no such file or directory"),
            "{msg}"
        );
        std::fs::write(dir.join("child_pid"), "x1").unwrap();
        assert!(run().0.ends_with("bad child_pid \"x1\""), "{}", run().0);
        // Our own pid: alive, but in our own user namespace.
        std::fs::write(dir.join("child_pid"), std::process::id().to_string()).unwrap();
        assert!(
            run().0.ends_with("is not in a user namespace of its own"),
            "{}",
            run().0
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            exec(&dir, &[]).unwrap_err().0,
            "no command specified".to_string()
        );
    }
}
