//! `rootlesskit-unshare`: makes the detached network namespace of `--detach-netns` and pins it
//! on a file.
//!
//! `rootlesskit-child` runs it, inside the user and mount namespaces, as
//! `rootlesskit-unshare --net-bind <statedir>/netns` on an empty file it created. The helper
//! moves itself into a new network namespace (`unshare(CLONE_NEWNET)`), brings `lo` up there,
//! bind-mounts its own `/proc/thread-self/ns/net` onto the file and exits 0. The bind mount keeps
//! the namespace alive after the helper is gone, for the network driver and for
//! `nsenter --net=<file>` inside the child. It replaces upstream's
//! `unshare -n mount --bind /proc/self/ns/net <file>`: no program is run.
//!
//! `rootlesskit` itself runs it as `rootlesskit-unshare --hold-net USERNS NETNS` for
//! `--net=lxc-user-nic --detach-netns`: lxc-user-nic wants the pid of a process inside the
//! namespace, so the helper joins the child's user namespace and the detached network namespace,
//! writes one byte to descriptor 3 and then waits to be killed (upstream parks
//! `nsenter ... sleep infinity` there).
//!
//! `rootlessctl exec` runs it as `rootlesskit-unshare --exec STATEDIR -- CMD...` (the
//! namespace code lives here, not in `rootlessctl`, which has no room for it in its size budget):
//! it enters the running instance's namespaces and runs the command there
//! ([`child::enter`]); its errors are `rootlessctl`'s, `error: <text>`.
//!
//! Errors are one line, `[rootlesskit:unshare] error: <text>`, and exit status 1.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::thread::UnshareFlags;
use sys::goflag::{self, Value, quote};

/// The calling thread's own network namespace file: `unshare` moves only the calling thread, so
/// this (rather than `/proc/self`, the thread-group leader) names the namespace we just made.
const OWN_NETNS: &str = "/proc/thread-self/ns/net";

const USAGE: &str = "usage: rootlesskit-unshare --net-bind PATH";

const HELP: &str = "\
Usage: rootlesskit-unshare --net-bind PATH

Creates a new network namespace with the loopback interface up, and bind-mounts it onto PATH
(an existing file), so that it outlives this program. Run by rootlesskit-child for
--detach-netns; not meant to be run by hand.

      --net-bind PATH   the file to pin the new network namespace on
      --exec DIR -- CMD...
                        run CMD in the namespaces of the instance with state dir DIR
                        (what `rootlessctl exec` runs)
  -h, --help            show this help
      --version         print the version
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Version,
    Help,
    NetBind(PathBuf),
    /// `--hold-net USERNS NETNS`.
    HoldNet(PathBuf, PathBuf),
    /// `--exec STATEDIR -- CMD...`.
    Exec(PathBuf, Vec<OsString>),
}

/// Reads the command line (without argv\[0]) with Go's flag syntax (`sys::goflag`): one of
/// `--net-bind PATH`, `--hold-net USERNS NETNS`, `--exec STATEDIR -- CMD...`, `--help`, `--version`.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Action, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    let unexpected = |a: &OsString| {
        format!(
            "unexpected argument {}; {USAGE}",
            quote(a.as_encoded_bytes())
        )
    };
    let Some(first) = args.first() else {
        return Err(USAGE.into());
    };
    let table = |name: &str| match name {
        "net-bind" | "hold-net" | "exec" => Some(true),
        "version" | "help" | "h" => Some(false),
        _ => None,
    };
    let mut p = goflag::Parser::new(&args);
    let flag = match p.next(table) {
        Ok(Some(flag)) => flag,
        Err(e) if e.kind == goflag::ErrorKind::MissingValue => {
            return Err(match first.to_string_lossy().trim_start_matches('-') {
                "net-bind" => "missing value for --net-bind",
                "exec" => "--exec needs STATEDIR -- COMMAND",
                _ => "--hold-net needs USERNS and NETNS",
            }
            .into());
        }
        _ => return Err(unexpected(first)),
    };
    let rest = p.rest();
    let action = match (flag.name.as_str(), flag.value) {
        ("version", Value::Bool(true)) => Action::Version,
        ("help" | "h", Value::Bool(true)) => Action::Help,
        ("net-bind", Value::Text(p)) if !p.is_empty() => Action::NetBind(p.into()),
        ("net-bind", _) => return Err("missing value for --net-bind".into()),
        ("exec", Value::Text(dir)) => match rest.split_first() {
            Some((dash, argv)) if !dir.is_empty() && dash == "--" => {
                return Ok(Action::Exec(dir.into(), argv.to_vec()));
            }
            _ => return Err("--exec needs STATEDIR -- COMMAND".into()),
        },
        ("hold-net", Value::Text(u)) => match rest.first() {
            Some(n) if !u.is_empty() && !n.is_empty() => {
                return match rest.get(1) {
                    None => Ok(Action::HoldNet(u.into(), n.into())),
                    Some(extra) => Err(unexpected(extra)),
                };
            }
            _ => return Err("--hold-net needs USERNS and NETNS".into()),
        },
        _ => return Err(unexpected(first)),
    };
    match rest.first() {
        None => Ok(action),
        Some(extra) => Err(unexpected(extra)),
    }
}

/// `unshare(CLONE_NEWNET)`, `lo` up, then the bind mount of our namespace onto `target`.
///
/// # Errors
/// `failed to unshare the network namespace: <errno>`, `failed to bring up lo: <errno>` or
/// `failed to create bind mount on <target>: <errno>`.
fn net_bind(target: &Path) -> Result<(), String> {
    child::sys::unshare(UnshareFlags::NEWNET).map_err(|e| {
        format!(
            "failed to unshare the network namespace: {}",
            child::errno::io_text(&e)
        )
    })?;
    child::netlink::loopback_up().map_err(|e| e.to_string())?;
    child::mount::bind_file(Path::new(OWN_NETNS), target).map_err(|e| e.to_string())
}

/// Joins `userns`, then `netns` (opened first, from outside), reports on descriptor 3 and waits
/// for `SIGKILL` (from `rootlesskit`, or as its parent-death signal).
///
/// # Errors
/// `open <path>: <errno>` or `failed to enter <path>: <errno>`.
fn hold_net(userns: &Path, netns: &Path) -> Result<(), String> {
    use rustix::fd::AsFd;
    use rustix::fs::{Mode, OFlags};
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    let open = |p: &Path| {
        rustix::fs::open(p, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("open {}: {}", p.display(), child::mount::errno_text(e)))
    };
    let (user, net) = (open(userns)?, open(netns)?);
    for (fd, kind, path) in [
        (&user, LinkNameSpaceType::User, userns),
        (&net, LinkNameSpaceType::Network, netns),
    ] {
        move_into_link_name_space(fd.as_fd(), Some(kind)).map_err(|e| {
            format!(
                "failed to enter {}: {}",
                path.display(),
                child::mount::errno_text(e)
            )
        })?;
    }
    // A change of user namespace may clear the parent-death signal: arm it again, then make
    // sure the parent did not die before.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid().is_none() {
        return Err("rootlesskit is gone".into());
    }
    child::sys::write_raw(3, b"1")
        .map_err(|e| format!("write to fd 3: {}", child::errno::io_text(&e)))?;
    child::sys::close_raw(3);
    loop {
        let _ = rustix::event::poll(&mut [], None);
    }
}

fn main() {
    let result = match parse(std::env::args_os().skip(1)) {
        Ok(Action::Version) => {
            // Joined rather than formatted: a `fmt` call would link stdout's formatting.
            let line = ["rootlesskit-unshare version ", goflag::VERSION, "\n"].concat();
            let _ = std::io::stdout().write_all(line.as_bytes());
            Ok(())
        }
        Ok(Action::Help) => {
            let _ = std::io::stdout().write_all(HELP.as_bytes());
            Ok(())
        }
        Ok(Action::NetBind(target)) => net_bind(&target),
        Ok(Action::HoldNet(userns, netns)) => hold_net(&userns, &netns),
        Ok(Action::Exec(dir, argv)) => {
            let code = match child::enter::exec(&dir, &argv) {
                Ok(code) => code,
                Err(child::enter::Failed(msg, code)) => {
                    let _ = writeln!(std::io::stderr(), "error: {msg}");
                    code
                }
            };
            std::process::exit(code);
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let _ = writeln!(std::io::stderr(), "[rootlesskit:unshare] error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        #[track_caller]
        fn check(args: &[&str], expect: Result<Action, &str>) {
            let got = parse(args.iter().map(OsString::from));
            assert_eq!(got, expect.map_err(String::from), "{args:?}");
        }
        let bind = |p: &str| Ok(Action::NetBind(p.into()));
        check(&["--net-bind", "/run/rk/netns"], bind("/run/rk/netns"));
        check(&["--net-bind=/run/rk/netns"], bind("/run/rk/netns"));
        check(&["--version"], Ok(Action::Version));
        check(&["--help"], Ok(Action::Help));
        check(&["-h"], Ok(Action::Help));
        check(&[], Err(USAGE));
        check(&["--net-bind"], Err("missing value for --net-bind"));
        check(&["--net-bind", ""], Err("missing value for --net-bind"));
        check(&["--net-bind="], Err("missing value for --net-bind"));
        check(
            &["--hold-net", "/proc/7/ns/user", "/run/rk/netns"],
            Ok(Action::HoldNet(
                "/proc/7/ns/user".into(),
                "/run/rk/netns".into(),
            )),
        );
        check(
            &["--exec", "/run/rk", "--", "id", "-u"],
            Ok(Action::Exec(
                "/run/rk".into(),
                vec!["id".into(), "-u".into()],
            )),
        );
        check(
            &["--exec", "/run/rk", "--"],
            Ok(Action::Exec("/run/rk".into(), vec![])),
        );
        check(
            &["--exec", "/run/rk", "id"],
            Err("--exec needs STATEDIR -- COMMAND"),
        );
        check(
            &["--hold-net", "/proc/7/ns/user"],
            Err("--hold-net needs USERNS and NETNS"),
        );
        check(
            &["-n", "mount"],
            Err(r#"unexpected argument "-n"; usage: rootlesskit-unshare --net-bind PATH"#),
        );
        check(
            &["--net-bind", "/a", "/b"],
            Err(r#"unexpected argument "/b"; usage: rootlesskit-unshare --net-bind PATH"#),
        );
    }
}
