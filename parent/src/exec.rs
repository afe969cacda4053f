//! The one place that runs external programs: newuidmap, newgidmap, getsubids and, later, the network drivers.
//!
//! Every program is started through `start` (the child crate's `clone3` + `execve`, the same
//! code that starts the child), which clears the signal mask that the parent keeps blocked; the
//! short-lived ones get `/dev/null` as stdin and pipes for their output (`spawn_piped`).
//! std's `Command` is not used: its process machinery costs about 20 KB of static binary.
//! Messages imitate Go's `os/exec` so that error lines read like upstream's.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

// ---------------------------------------------------------------------------------------------
// Shared plumbing.

/// A short-lived program and the read ends of its output.
struct Piped {
    pid: i32,
    /// Standard output, and standard error too unless `err` is set.
    out: OwnedFd,
    err: Option<OwnedFd>,
}

/// Starts `exe args...` with stdin from `/dev/null` and stdout and stderr on pipes: one
/// shared pipe (like Go's `CombinedOutput`), or with `separate` one each.
fn spawn_piped(exe: &Path, args: &[OsString], separate: bool) -> Result<Piped, String> {
    let sys = |e: rustix::io::Errno| sys::errno::text(e);
    let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(sys);
    let devnull = std::fs::File::open("/dev/null").map_err(|e| sys::errno::text(&e))?;
    let (out, out_w) = pipe()?;
    let mut fds = vec![(OwnedFd::from(devnull), 0)];
    let err = if separate {
        let (err, err_w) = pipe()?;
        fds.push((out_w, 1));
        fds.push((err_w, 2));
        Some(err)
    } else {
        fds.push((out_w.try_clone().map_err(|e| sys::errno::text(&e))?, 1));
        fds.push((out_w, 2));
        None
    };
    // `start` consumes our copies of the write ends, so the reads below see end of file.
    let (pid, _pidfd) = start(exe, args, fds, false)?;
    Ok(Piped { pid, out, err })
}

/// Everything `fd` gives until end of file.
fn read_to_end(fd: &OwnedFd) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(sys::errno::text(e)),
        }
    }
}

/// Waits for `pid`, our child.
fn wait_status(pid: i32) -> Result<ExitStatus, String> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or("bad pid")?;
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => return Ok(ExitStatus::from_raw(st.as_raw())),
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(sys::errno::text(e)),
        }
    }
}

impl Piped {
    /// Reads the output to the end (stdout first; these programs print little, so the other
    /// pipe cannot fill up meanwhile) and waits for the program.
    fn finish(self) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), String> {
        let out = read_to_end(&self.out);
        let err = self.err.as_ref().map(read_to_end).unwrap_or(Ok(Vec::new()));
        let status = wait_status(self.pid)?;
        Ok((status, out?, err?))
    }
}

/// Go's `os.ProcessState.String()` for a finished helper: `exit status 1`, `signal: killed`.
pub(crate) fn exit_text(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let mut text = match status.signal() {
        Some(sig) => format!("signal: {}", go_signal_name(sig)),
        None => format!("wait status {}", status.into_raw()),
    };
    if status.core_dumped() {
        text.push_str(" (core dumped)");
    }
    text
}

/// Go's lowercase signal descriptions (`syscall.Signal.String()` on Linux).
fn go_signal_name(sig: i32) -> String {
    const NAMES: [&str; 31] = [
        "hangup",
        "interrupt",
        "quit",
        "illegal instruction",
        "trace/breakpoint trap",
        "aborted",
        "bus error",
        "floating point exception",
        "killed",
        "user defined signal 1",
        "segmentation fault",
        "user defined signal 2",
        "broken pipe",
        "alarm clock",
        "terminated",
        "stack fault",
        "child exited",
        "continued",
        "stopped (signal)",
        "stopped",
        "stopped (tty input)",
        "stopped (tty output)",
        "urgent I/O condition",
        "CPU time limit exceeded",
        "file size limit exceeded",
        "virtual timer expired",
        "profiling timer expired",
        "window changed",
        "I/O possible",
        "power failure",
        "bad system call",
    ];
    match usize::try_from(sig)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| NAMES.get(i))
    {
        Some(name) => (*name).to_string(),
        None => format!("signal {sig}"),
    }
}

/// [`sys::errno::text`] under its old name, for `idmap.rs` until that file's split lands.
pub(crate) use sys::errno::text as errno_text;

/// Go's `strconv.Quote` (what `%q` prints).
pub fn quote(s: &str) -> String {
    sys::golang::quote(s.as_bytes())
}

/// `exec.LookPath(name)` against the current `$PATH`.
///
/// # Errors
/// Go's texts: `exec: "newuidmap": executable file not found in $PATH`,
/// `exec: "/x/getsubids": stat /x/getsubids: no such file or directory`.
pub fn look_path(name: &OsStr) -> Result<PathBuf, String> {
    look_path_in(name, std::env::var_os("PATH").as_deref())
}

/// [`look_path`] with an explicit `$PATH` value (`None` = unset), so tests need no global state.
pub(crate) fn look_path_in(name: &OsStr, path_env: Option<&OsStr>) -> Result<PathBuf, String> {
    sys::golang::look_path(name, path_env)
}

/// Go's message for a helper that could not be started: `fork/exec /usr/bin/x: permission denied`.
fn spawn_error(program: &Path, err: &io::Error) -> String {
    format!("fork/exec {}: {}", program.display(), sys::errno::text(err))
}

// ---------------------------------------------------------------------------------------------
// uid/gid maps: newuidmap, newgidmap, getsubids (used by `idmap`).

/// What a helper wrote to stdout and stderr, and how it ended.
#[derive(Debug)]
pub(crate) struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

/// `getsubids [-g] <who>`—list the subordinate uid (gid with `group`) ranges of a user.
///
/// `exe` is an already resolved path (see [`look_path`]). A non-zero exit is not an error here;
/// the caller decides from [`Captured::status`].
///
/// # Errors
/// Only when the program cannot be started: `fork/exec <exe>: <errno text>`.
#[doc(alias = "getsubids")]
pub(crate) fn run_getsubids(exe: &Path, group: bool, who: &str) -> Result<Captured, String> {
    let mut args = Vec::with_capacity(2);
    if group {
        args.push(OsString::from("-g"));
    }
    args.push(OsString::from(who));
    let (status, stdout, stderr) = spawn_piped(exe, &args, true)?
        .finish()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    Ok(Captured {
        stdout,
        stderr,
        status,
    })
}

#[cfg(test)]
/// `newuidmap <pid> <args...>` (or `newgidmap`, named by `tool`), found through `path_env`
/// (a `$PATH` value).
///
/// # Errors
/// Upstream's text, with stdout and stderr interleaved as Go's `CombinedOutput` gives them:
/// `newuidmap 1234 [0 1000 1 1 100000 65536] failed: <output>: exit status 1`.
pub(crate) fn run_newidmap_in(
    tool: &str,
    path_env: Option<&OsStr>,
    pid: i32,
    args: &[String],
) -> Result<(), String> {
    IdMapRun::start(tool, path_env, pid, args)?.finish()
}

/// `newuidmap` and `newgidmap` for `pid`, started together and then waited for: they write
/// different files, and each is a fork and exec of a setuid program, so running them side by
/// side takes a measurable part off the startup time (no threads needed).
///
/// # Errors
/// The first failure, in upstream's words: `newuidmap 1234 [0 1000 1 1 100000 65536] failed:
/// <output>: exit status 1`.
pub(crate) fn run_newidmaps(
    pid: i32,
    uid_args: &[String],
    gid_args: &[String],
) -> Result<(), String> {
    let path_env = std::env::var_os("PATH");
    let uid = IdMapRun::start("newuidmap", path_env.as_deref(), pid, uid_args)?;
    let gid = IdMapRun::start("newgidmap", path_env.as_deref(), pid, gid_args);
    let uid = uid.finish();
    let gid = gid.and_then(IdMapRun::finish);
    uid.and(gid)
}

/// A running newuidmap or newgidmap, with the error text prepared.
struct IdMapRun {
    run: Piped,
    what: String,
}

impl IdMapRun {
    fn start(
        tool: &str,
        path_env: Option<&OsStr>,
        pid: i32,
        args: &[String],
    ) -> Result<IdMapRun, String> {
        let what = format!("{tool} {pid} [{}]", args.join(" "));
        let fail = |err: String| format!("{what} failed: : {err}");
        let exe = look_path_in(OsStr::new(tool), path_env).map_err(fail)?;
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(OsString::from(pid.to_string()));
        argv.extend(args.iter().map(OsString::from));
        let run = spawn_piped(&exe, &argv, false).map_err(fail)?;
        Ok(IdMapRun { run, what })
    }

    fn finish(self) -> Result<(), String> {
        let (status, output, _) = self
            .run
            .finish()
            .map_err(|e| format!("{} failed: : {e}", self.what))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}: {}",
                self.what,
                String::from_utf8_lossy(&output),
                exit_text(status)
            ))
        }
    }
}

/// Runs `exe args...` with stdout and stderr sharing one pipe; returns the status and output.
#[cfg(test)]
fn run_combined(exe: &Path, args: &[String]) -> Result<(ExitStatus, Vec<u8>), String> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let (status, output, _) = spawn_piped(exe, &args, false)?.finish()?;
    Ok((status, output))
}

// ---------------------------------------------------------------------------------------------
// Network drivers: slirp4netns and pasta (used by `net`).

/// `exe args...` run to completion with stdout and stderr on one pipe, like Go's `CombinedOutput`:
/// the drivers' `--help` and `--version` probes.
///
/// # Errors
/// Only when the program cannot be started: `fork/exec <exe>: <errno text>`.
pub fn run_with_output(
    exe: &Path,
    args: &[std::ffi::OsString],
) -> Result<(ExitStatus, Vec<u8>), String> {
    start_with_output(exe, args)?.finish()
}

/// [`run_with_output`] for at most `limit`: a program that has not ended by then is killed
/// and reaped, and `None` says so. For the short calls made from the parent's loop (pesto), so
/// that a peer that stops answering cannot hold the loop for longer.
///
/// # Errors
/// As [`run_with_output`].
pub(crate) fn run_with_output_within(
    exe: &Path,
    args: &[OsString],
    limit: std::time::Duration,
) -> Result<Option<(ExitStatus, Vec<u8>)>, String> {
    use rustix::event::{PollFd, PollFlags, poll};
    let piped = spawn_piped(exe, args, false)?;
    let deadline = std::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            if let Some(pid) = rustix::process::Pid::from_raw(piped.pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            wait_status(piped.pid)?;
            return Ok(None);
        }
        let timeout = rustix::time::Timespec::try_from(left).ok();
        let mut fds = [PollFd::new(&piped.out, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(errno_text(&e.into())),
        }
        match rustix::io::read(&piped.out, &mut buf) {
            Ok(0) => return Ok(Some((wait_status(piped.pid)?, out))),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(errno_text(&e.into())),
        }
    }
}

/// A program started by [`start_with_output`] whose output is collected later, so that it runs
/// while the caller does something else. Dropped unfinished, it is still waited for.
pub(crate) struct Pending(Option<Piped>);

/// [`run_with_output`] in two steps: this starts the program, [`Pending::finish`] collects it.
///
/// # Errors
/// As [`run_with_output`].
pub(crate) fn start_with_output(
    exe: &Path,
    args: &[std::ffi::OsString],
) -> Result<Pending, String> {
    Ok(Pending(Some(spawn_piped(exe, args, false)?)))
}

impl Pending {
    /// Reads the combined output to the end and waits for the program.
    ///
    /// # Errors
    /// A read or wait failure.
    pub(crate) fn finish(mut self) -> Result<(ExitStatus, Vec<u8>), String> {
        let piped = self.0.take().ok_or("already finished")?;
        let (status, output, _) = piped.finish()?;
        Ok((status, output))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(piped) = self.0.take() {
            let _ = piped.finish();
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Pending(running)",
            None => "Pending(done)",
        })
    }
}

/// Starts a long-running helper (slirp4netns, pasta): `exe args...` with the parent's environment, in a
/// session of its own, with `SIGKILL` as its parent-death signal, and each `(fd, number)` of `fds`
/// placed at that number (the rest of our descriptors are close-on-exec).
///
/// The new session keeps a Ctrl-C typed at the terminal from killing the helper while the target,
/// which may survive SIGINT (a shell, a REPL), still needs the network.
/// Returns the pid and a pidfd once the program has been exec'd.
///
/// # Errors
/// `fork/exec <exe>: <errno text>` when the fork or the exec fails (the failed process is reaped).
pub(crate) fn start_helper(
    exe: &Path,
    args: &[std::ffi::OsString],
    fds: Vec<(std::os::fd::OwnedFd, std::os::fd::RawFd)>,
) -> Result<(i32, std::os::fd::OwnedFd), String> {
    start(exe, args, fds, true)
}

/// [`start_helper`] and [`start_child`]: `setsid` says whether the program gets a new session.
fn start(
    exe: &Path,
    args: &[std::ffi::OsString],
    fds: Vec<(std::os::fd::OwnedFd, std::os::fd::RawFd)>,
    setsid: bool,
) -> Result<(i32, std::os::fd::OwnedFd), String> {
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(exe.as_os_str().to_os_string());
    argv.extend(args.iter().cloned());
    let env = std::env::vars_os().map(|(k, v)| {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        kv
    });
    let mut cmd = sys::spawn::Command::new(exe, &argv, env).map_err(|e| spawn_error(exe, &e))?;
    cmd.setsid(setsid).pdeathsig(true);
    for (fd, target) in fds {
        cmd.fd(fd, target);
    }
    let mut started = cmd.spawn().map_err(|e| spawn_error(exe, &e))?;
    if let Err(e) = started.wait_exec() {
        let _ = rustix::process::waitpid(
            rustix::process::Pid::from_raw(started.pid),
            rustix::process::WaitOptions::empty(),
        );
        return Err(spawn_error(exe, &e.error));
    }
    Ok((started.pid, started.pidfd))
}

// ---------------------------------------------------------------------------------------------
// The trial namespace of `--check` (used by `check`).

/// `clone3(flags)` of a process that never execs anything: it waits for a go byte that never
/// comes, so `with` can act on it (write its id maps) while it waits; then the pipe closes, the
/// process exits and is reaped. Nothing is run and nothing outlives the call.
///
/// # Errors
/// The `clone3` failure (its errno says why namespaces are refused).
pub(crate) fn trial_namespaces<R>(flags: u64, with: impl FnOnce(i32) -> R) -> io::Result<R> {
    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let none: [OsString; 0] = [];
    let mut cmd = sys::spawn::Command::new(Path::new("/"), ["rootlesskit"], none)?;
    // The new process never execs, so it must close its copy of the write end itself, or the
    // read of the go byte would never see the end of the pipe.
    cmd.clone_flags(flags)
        .wait_for_go(go_r)
        .close_in_child(std::os::fd::AsRawFd::as_raw_fd(&go_w));
    let started = cmd.spawn()?;
    let result = with(started.pid);
    drop(go_w);
    let _ = wait_status(started.pid);
    Ok(result)
}

/// Like [`trial_namespaces`], but once `with` has acted (written the id maps) the new process
/// execs `exe args...` (`rootlesskit-child --probe-overlay`) as root of the new namespaces, with
/// an empty environment and its stdout on a pipe. Returns `with`'s result, then the program's
/// exit code and what it printed (a line at most), once it is reaped. Whatever the program
/// mounts dies with its mount namespace.
///
/// # Errors
/// The `clone3` failure, or reading the program's output.
pub(crate) fn trial_exec(
    flags: u64,
    exe: &Path,
    args: &[&str],
    with: impl FnOnce(i32) -> Result<(), String>,
) -> io::Result<Result<(i32, String), String>> {
    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut argv = vec![exe.as_os_str().to_os_string()];
    argv.extend(args.iter().map(OsString::from));
    let none: [OsString; 0] = [];
    let mut cmd = sys::spawn::Command::new(exe, &argv, none)?;
    cmd.clone_flags(flags)
        .wait_for_go(go_r)
        .fd(out_w, 1)
        .close_in_child(std::os::fd::AsRawFd::as_raw_fd(&go_w))
        .close_in_child(std::os::fd::AsRawFd::as_raw_fd(&out_r));
    let started = cmd.spawn()?;
    let applied = with(started.pid);
    if applied.is_ok() {
        let _ = rustix::io::write(&go_w, &[1]);
    }
    drop(go_w);
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match rustix::io::read(&out_r, &mut buf) {
            Ok(0) => break,
            Ok(n) if out.len() < 4096 => out.extend_from_slice(&buf[..n]),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                let _ = wait_status(started.pid);
                return Err(e.into());
            }
        }
    }
    let status = wait_status(started.pid);
    Ok(applied.and_then(|()| {
        let code = status?.code().unwrap_or(-1);
        let text = String::from_utf8_lossy(&out);
        Ok((code, text.lines().next().unwrap_or("").to_owned()))
    }))
}

// ---------------------------------------------------------------------------------------------
// The real `docker-proxy` (used by `rootlesskit-docker-proxy`).

/// `execve(exe, argv, environ)`—replaces this process with `exe`: `argv[0]` and the rest of
/// `argv` as given, the environment kept, the signal mask cleared, and `keep_fd` (the status
/// pipe on 3, which we hold close-on-exec) left open across the exec. Returns only on failure.
///
/// Made with the raw syscalls rather than `CommandExt::exec`, whose process machinery would
/// put `rootlesskit-docker-proxy` over its size budget.
///
/// # Errors
/// The reason the exec failed (with the signal mask already cleared).
pub fn exec_replace(
    exe: &Path,
    argv: &[std::ffi::OsString],
    keep_fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Error {
    use std::os::unix::ffi::OsStrExt;
    let env = std::env::vars_os().map(|(k, v)| {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        kv
    });
    let (path, argv, envp) = match (
        std::ffi::CString::new(exe.as_os_str().as_bytes()),
        sys::process::CStrVec::new(argv),
        sys::process::CStrVec::new(env),
    ) {
        (Ok(p), Ok(a), Ok(e)) => (p, a, e),
        (Err(_), _, _) => {
            return io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte");
        }
        (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    if let Some(fd) = keep_fd
        && let Err(e) = sys::fd::clear_cloexec(fd)
    {
        return e;
    }
    if let Err(e) = sys::signal::unblock_all_signals() {
        return e;
    }
    sys::process::execve(&path, &argv, &envp)
}

/// Starts `exe args...` as our child with the environment, stdio and the inheritable
/// descriptors we have (the status pipe on 3 is passed with `fds`), `SIGKILL` as its
/// parent-death signal and an empty signal mask, in our session.
/// Returns the pid and a pidfd once the program has been exec'd.
///
/// # Errors
/// `fork/exec <exe>: <errno text>` when the fork or the exec fails (the failed process is reaped).
pub fn start_child(
    exe: &Path,
    args: &[std::ffi::OsString],
    fds: Vec<(std::os::fd::OwnedFd, std::os::fd::RawFd)>,
) -> Result<(i32, std::os::fd::OwnedFd), String> {
    start(exe, args, fds, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("rootlesskit-rs-exec-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        /// Makes `name` in the directory a symlink to an existing system program
        /// (no freshly written executables, which could hit ETXTBSY under parallel tests).
        fn link(&self, name: &str, target: &str) {
            symlink(target, self.0.join(name)).unwrap();
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sh() -> &'static str {
        if Path::new("/bin/sh").exists() {
            "/bin/sh"
        } else {
            "/usr/bin/sh"
        }
    }

    #[test]
    fn exit_texts() {
        let check = |raw: i32, expect: &str| {
            assert_eq!(exit_text(ExitStatus::from_raw(raw)), expect, "raw {raw:#x}");
        };
        check(0, "exit status 0");
        check(1 << 8, "exit status 1");
        check(42 << 8, "exit status 42");
        check(9, "signal: killed");
        check(15, "signal: terminated");
        check(10, "signal: user defined signal 1");
        check(11 | 0x80, "signal: segmentation fault (core dumped)");
        check(40, "signal: signal 40");
    }

    #[test]
    fn errno_texts() {
        let check = |errno: i32, expect: &str| {
            assert_eq!(
                sys::errno::text(&io::Error::from_raw_os_error(errno)),
                expect
            );
        };
        check(1, "operation not permitted");
        check(2, "no such file or directory");
        check(13, "permission denied");
        check(21, "is a directory");
        // A message that is not an errno is passed on as it is.
        assert_eq!(
            sys::errno::text(&io::Error::other("custom text")),
            "custom text"
        );
    }

    #[test]
    fn quotes_like_go() {
        let check = |input: &str, expect: &str| assert_eq!(quote(input), expect, "{input:?}");
        check("", r#""""#);
        check("tester", r#""tester""#);
        check("a\"b\\c", r#""a\"b\\c""#);
        check("line\n\t\r", r#""line\n\t\r""#);
        check("\x00\x1b\x7f", r#""\x00\x1b\x7f""#);
        check("\u{a0}\u{85}", r#""\u00a0\u0085""#);
        check("héllo ✓", "\"héllo ✓\"");
    }

    #[test]
    fn look_path_cases() {
        let dir = TempDir::new("look");
        dir.link("prog", sh());
        std::fs::write(dir.0.join("noexec"), "").unwrap();
        std::fs::create_dir(dir.0.join("adir")).unwrap();
        let d = dir.0.display().to_string();
        let check = |name: &str, path: Option<&str>, expect: Result<String, String>| {
            let got = look_path_in(OsStr::new(name), path.map(OsStr::new))
                .map(|p| p.display().to_string());
            assert_eq!(got, expect, "{name} in {path:?}");
        };
        let not_found = |name: &str| {
            Err(format!(
                "exec: \"{name}\": executable file not found in $PATH"
            ))
        };
        check(
            "prog",
            Some(&format!("/nonexistent-dir:{d}")),
            Ok(format!("{d}/prog")),
        );
        check("prog", Some(&format!("{d}:/bin")), Ok(format!("{d}/prog")));
        check("missing", Some(&d), not_found("missing"));
        check("prog", None, not_found("prog"));
        check("prog", Some(""), not_found("prog"));
        check("adir", Some(&d), not_found("adir"));
        check("noexec", Some(&d), not_found("noexec"));
        // A name with a slash skips $PATH.
        check(&format!("{d}/prog"), None, Ok(format!("{d}/prog")));
        check(
            &format!("{d}/missing"),
            Some("/bin"),
            Err(format!(
                r#"exec: "{d}/missing": stat {d}/missing: no such file or directory"#
            )),
        );
        check(
            &format!("{d}/adir"),
            None,
            Err(format!(r#"exec: "{d}/adir": is a directory"#)),
        );
        if !rustix::process::geteuid().is_root() {
            check(
                &format!("{d}/noexec"),
                None,
                Err(format!(r#"exec: "{d}/noexec": permission denied"#)),
            );
        }
        // A hit in a relative $PATH entry is refused, like Go's ErrDot.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count());
        let relative = format!("{up}{}", d.trim_start_matches('/'));
        check(
            "prog",
            Some(&format!("/nonexistent-dir:{relative}")),
            Err(
                r#"exec: "prog": cannot run executable found relative to current directory"#.into(),
            ),
        );
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn newidmap_success_and_failures() {
        let dir = TempDir::new("newidmap");
        dir.link("newuidmap", "/bin/true");
        dir.link("newgidmap", "/bin/false");
        let path = dir.0.display().to_string();
        let args = strings(&["0", "1000", "1", "1", "100000", "65536"]);
        let run =
            |tool: &str, path: &str| run_newidmap_in(tool, Some(OsStr::new(path)), 4321, &args);
        assert_eq!(run("newuidmap", &path), Ok(()));
        assert_eq!(
            run("newgidmap", &path),
            Err("newgidmap 4321 [0 1000 1 1 100000 65536] failed: : exit status 1".into())
        );
        assert_eq!(
            run("newuidmap", "/nonexistent-dir"),
            Err(r#"newuidmap 4321 [0 1000 1 1 100000 65536] failed: : exec: "newuidmap": executable file not found in $PATH"#.into())
        );
    }

    #[test]
    fn combined_output_keeps_the_order_of_both_streams() {
        let script = "echo one; echo two >&2; echo three; exit 4";
        let (status, output) = run_combined(Path::new(sh()), &strings(&["-c", script])).unwrap();
        assert_eq!(String::from_utf8_lossy(&output), "one\ntwo\nthree\n");
        assert_eq!(exit_text(status), "exit status 4");
    }

    #[test]
    fn a_program_past_its_limit_is_killed() {
        let os = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let args = os(&["-c", "echo started; exec sleep 30"]);
        let at = std::time::Instant::now();
        let limit = std::time::Duration::from_millis(200);
        assert_eq!(
            run_with_output_within(Path::new(sh()), &args, limit),
            Ok(None)
        );
        assert!(at.elapsed() < std::time::Duration::from_secs(5));
        let args = os(&["-c", "echo one; echo two >&2; exit 3"]);
        let (status, out) = run_with_output_within(Path::new(sh()), &args, limit * 25)
            .unwrap()
            .unwrap();
        assert_eq!(
            (exit_text(status), &out[..]),
            ("exit status 3".into(), &b"one\ntwo\n"[..])
        );
    }

    #[test]
    fn getsubids_captures_streams_and_status() {
        // `sh <script>` runs a plain (non-executable) file, so the "who" slot can carry a script.
        let dir = TempDir::new("getsubids");
        let script = dir.0.join("script");
        std::fs::write(
            &script,
            "echo \"out $(readlink /proc/self/fd/0)\"\necho err >&2\nexit 3\n",
        )
        .unwrap();
        let out = run_getsubids(Path::new(sh()), false, script.to_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out /dev/null\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
        assert_eq!(exit_text(out.status), "exit status 3");

        let echo = if Path::new("/bin/echo").exists() {
            "/bin/echo"
        } else {
            "/usr/bin/echo"
        };
        let out = run_getsubids(Path::new(echo), true, "tester").unwrap();
        assert_eq!(out.stdout, b"-g tester\n");
        assert!(out.status.success());

        let err = run_getsubids(Path::new("/nonexistent/getsubids"), true, "tester").unwrap_err();
        assert_eq!(
            err,
            "fork/exec /nonexistent/getsubids: no such file or directory"
        );
    }

    #[test]
    fn helpers_start_with_an_empty_signal_mask() {
        // The mask is per thread and this test thread ends afterwards, so blocking is harmless.
        let usr1_term = sys::signal::SigSet((1 << (10 - 1)) | (1 << (15 - 1)));
        sys::signal::block_signals(usr1_term).unwrap();
        // grep directly, not through sh: a shell may reset the mask itself.
        let grep = if Path::new("/bin/grep").exists() {
            "/bin/grep"
        } else {
            "/usr/bin/grep"
        };
        let out = run_combined(
            Path::new(grep),
            &strings(&["^SigBlk:", "/proc/self/status"]),
        );
        sys::signal::unblock_signals(usr1_term).unwrap();
        let (_, output) = out.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output),
            "SigBlk:\t0000000000000000\n"
        );
    }
}
