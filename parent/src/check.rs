//! `rootlesskit --check`: whether this host can run rootlesskit, one line per check (ok, warn or fail, with a hint), creating nothing.
//!
//! A check fails only when a plain `rootlesskit true` would fail because of it; what only some
//! flags need (a network driver, `/dev/net/tun`, cgroup delegation) warns, unless the `--net`
//! given with `--check` needs it.
//! The user namespace is tried for real: a process is cloned into new user and mount namespaces,
//! gets its id maps the way a run would give them (newuidmap/newgidmap, or the single-id
//! fallback), and exits without running anything. A second such process execs
//! `rootlesskit-child --probe-overlay` to try `--copy-up-mode=overlay` on /etc; its mounts die
//! with its mount namespace.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::Access;

use crate::cli::{Config, Net, SubidSource};
use crate::{exec, idmap, libexec};

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a warn or fail; empty for ok.
    pub hint: String,
}

fn line(name: &'static str, status: Status, detail: String, hint: &str) -> Line {
    Line {
        name,
        status,
        detail,
        hint: hint.to_owned(),
    }
}

fn ok(name: &'static str, detail: String) -> Line {
    line(name, Status::Ok, detail, "")
}

/// Runs every check, prints the report, returns the exit code.
pub(crate) fn main(cfg: &Config, json: bool) -> i32 {
    let lines = checks(cfg);
    let text = if json {
        render_json(&lines)
    } else {
        render_text(&lines)
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    i32::from(lines.iter().any(|l| l.status == Status::Fail))
}

/// `ok    name        detail; hint: ...` per line, and the verdict.
pub(crate) fn render_text(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        let _ = write!(out, "{:<5} {:<14} {}", l.status.as_str(), l.name, l.detail);
        if !l.hint.is_empty() {
            let _ = write!(out, "; hint: {}", l.hint);
        }
        out.push('\n');
    }
    let works = !lines.iter().any(|l| l.status == Status::Fail);
    out.push_str(if works {
        "a plain \"rootlesskit true\" would work here\n"
    } else {
        "a plain \"rootlesskit true\" would fail here\n"
    });
    out
}

/// `{"ok":true,"checks":[{"name":…,"status":…,"detail":…,"hint":…},…]}` and a newline.
pub(crate) fn render_json(lines: &[Line]) -> String {
    let works = !lines.iter().any(|l| l.status == Status::Fail);
    let mut out = format!("{{\"ok\":{works},\"checks\":[");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"status\":\"{}\",\"detail\":{},\"hint\":{}}}",
            json_string(l.name),
            l.status.as_str(),
            json_string(&l.detail),
            json_string(&l.hint)
        );
    }
    out.push_str("]}\n");
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn errno(e: &std::io::Error) -> String {
    sys::errno::text(e)
}

fn checks(cfg: &Config) -> Vec<Line> {
    let mut out = vec![userns_sysctls(), apparmor()];
    let user = idmap::current_user();
    let mut notes = Vec::new();
    let maps = user
        .clone()
        .and_then(|u| idmap::compute(&u, cfg.subid_source, &mut |w| notes.push(w)));
    out.push(subids(&maps, &notes));
    if let Ok(u) = &user {
        out.push(overlap(u));
    }
    let single = maps.as_ref().map_or(true, |m| m.fallback);
    out.push(idmap_tool("newuidmap", single));
    out.push(idmap_tool("newgidmap", single));
    out.push(getsubids(cfg.subid_source));
    out.push(trial(&user, &maps));
    let helper = libexec::find_helper(libexec::CHILD_BIN);
    out.push(match &helper {
        Ok(p) => ok("helper", p.display().to_string()),
        Err(e) => line(
            "helper",
            Status::Fail,
            e.clone(),
            "install rootlesskit-child next to rootlesskit or in ../libexec/rootlesskit",
        ),
    });
    if let (Ok(h), Ok(m)) = (&helper, &maps) {
        out.push(overlayfs(h, m));
    }
    out.push(tun());
    out.push(slirp4netns(&cfg.slirp4netns_binary));
    out.push(driver("pasta", &cfg.pasta_binary));
    out.push(driver("vpnkit", &cfg.vpnkit_binary));
    out.push(lxc_user_nic(&cfg.lxc_user_nic_binary));
    out.push(ping_group_range());
    out.push(cgroup());
    out.push(runtime_dir());
    out.push(state_dir(cfg.state_dir.as_deref()));
    // What the `--net` given with `--check` needs fails instead of warning.
    let needed: &[&str] = match cfg.net {
        Net::Slirp4netns => &["slirp4netns", "tun"],
        Net::Pasta => &["pasta", "tun"],
        Net::Vpnkit => &["vpnkit", "tun"],
        Net::LxcUserNic => &["lxc-user-nic"],
        _ => &[],
    };
    for l in &mut out {
        if l.status == Status::Warn && needed.contains(&l.name) {
            l.status = Status::Fail;
        }
    }
    out
}

fn userns_sysctls() -> Line {
    let clone = read_trim("/proc/sys/kernel/unprivileged_userns_clone");
    let max = read_trim("/proc/sys/user/max_user_namespaces");
    if clone.as_deref() == Some("0") {
        return line(
            "userns",
            Status::Fail,
            "kernel.unprivileged_userns_clone=0: unprivileged user namespaces are disabled".into(),
            "sysctl -w kernel.unprivileged_userns_clone=1 (and in /etc/sysctl.d)",
        );
    }
    match max.as_deref() {
        None => line(
            "userns",
            Status::Fail,
            "/proc/sys/user/max_user_namespaces is missing: no user namespaces in this kernel"
                .into(),
            "a kernel with CONFIG_USER_NS=y",
        ),
        Some("0") => line(
            "userns",
            Status::Fail,
            "user.max_user_namespaces=0".into(),
            "sysctl -w user.max_user_namespaces=28633 (and in /etc/sysctl.d)",
        ),
        Some(n) => ok("userns", format!("user.max_user_namespaces={n}")),
    }
}

/// Ubuntu 23.10+: `kernel.apparmor_restrict_unprivileged_userns=1` lets only programs whose
/// profile says `userns` use their capabilities in a new user namespace.
fn apparmor() -> Line {
    let restricted = read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    if restricted.as_deref() != Some("1") {
        return ok(
            "apparmor",
            "no AppArmor restriction of unprivileged user namespaces".into(),
        );
    }
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let exe_text = exe.display().to_string();
    let profile = std::fs::read_dir("/etc/apparmor.d").ok().and_then(|dir| {
        dir.flatten().find_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            profile_allows_userns(&text, &exe_text).then(|| e.path())
        })
    });
    match profile {
        Some(p) => ok(
            "apparmor",
            format!(
                "kernel.apparmor_restrict_unprivileged_userns=1; {} allows userns for {exe_text}",
                p.display()
            ),
        ),
        None => line(
            "apparmor",
            Status::Fail,
            format!(
                "kernel.apparmor_restrict_unprivileged_userns=1 and no profile in /etc/apparmor.d allows userns for {exe_text}"
            ),
            "install share/rootlesskit/apparmor.d/usr.bin.rootlesskit from the release tarball (with this path) into /etc/apparmor.d and run apparmor_parser -r on it",
        ),
    }
}

/// Whether an AppArmor profile's text attaches to `exe` (a profile line naming the path and
/// opening a block) and grants `userns,`.
pub(crate) fn profile_allows_userns(text: &str, exe: &str) -> bool {
    let code = || text.lines().map(str::trim).filter(|l| !l.starts_with('#'));
    code().any(|l| l.split_whitespace().any(|w| w == exe) && l.ends_with('{'))
        && code().any(|l| l == "userns,")
}

const SUBID_HINT: &str =
    "as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER";

fn subids(maps: &Result<idmap::IdMaps, String>, notes: &[String]) -> Line {
    let maps = match maps {
        Ok(m) => m,
        Err(e) => return line("subids", Status::Fail, e.clone(), SUBID_HINT),
    };
    if maps.fallback {
        let why = notes.last().cloned().unwrap_or_default();
        return line("subids", Status::Warn, why, SUBID_HINT);
    }
    let count = |r: &[idmap::Range]| r.iter().skip(1).map(|r| u64::from(r.count)).sum::<u64>();
    let (uids, gids) = (count(&maps.uid), count(&maps.gid));
    let detail = format!("{uids} subordinate uids, {gids} subordinate gids");
    if uids.min(gids) < 65_536 {
        line(
            "subids",
            Status::Warn,
            format!("{detail}: fewer than the 65536 most images need"),
            SUBID_HINT,
        )
    } else {
        ok("subids", detail)
    }
}

/// Ranges of /etc/subuid and /etc/subgid that other users share with this one.
fn overlap(user: &idmap::User) -> Line {
    let mut clashes = Vec::new();
    for path in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        clashes.extend(shared_ranges(&text, path, user));
    }
    if clashes.is_empty() {
        ok("subid-overlap", "no range shared with another user".into())
    } else {
        line(
            "subid-overlap",
            Status::Warn,
            clashes.join(", "),
            "give each user its own range: a shared one lets their containers reach each other's files",
        )
    }
}

/// `PATH: FIRST-LAST with OWNER` for each range of `user` in a subuid/subgid file that another
/// owner's range overlaps; lines that are not `owner:start:count` with 32-bit numbers are skipped.
pub(crate) fn shared_ranges(text: &str, path: &str, user: &idmap::User) -> Vec<String> {
    let uid = user.uid.to_string();
    let mine = |owner: &str| owner == uid || user.name.as_deref() == Some(owner);
    let entries: Vec<(&str, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let owner = f.next()?;
            let start = u64::from(f.next()?.parse::<u32>().ok()?);
            let count = u64::from(f.next()?.parse::<u32>().ok()?);
            (!owner.starts_with('#') && count > 0).then_some((owner, start, start + count))
        })
        .collect();
    let mut out = Vec::new();
    for (_, a, b) in entries.iter().filter(|e| mine(e.0)) {
        for (other, c, d) in entries.iter().filter(|e| !mine(e.0)) {
            if a < d && c < b {
                out.push(format!("{path}: {a}-{} with {other}", b - 1));
            }
        }
    }
    out
}

/// newuidmap or newgidmap: found, and setuid root or with file capabilities.
/// Missing, rootlesskit falls back to a single-id map; unusable, a run with subordinate ids fails.
fn idmap_tool(name: &'static str, single: bool) -> Line {
    let path = match exec::look_path(OsStr::new(name)) {
        Ok(p) => p,
        Err(e) => {
            return line(
                name,
                Status::Warn,
                format!("{e}: rootlesskit maps a single id"),
                "install the uidmap package (shadow's newuidmap and newgidmap)",
            );
        }
    };
    let meta = std::fs::metadata(&path);
    let setuid = meta
        .as_ref()
        .is_ok_and(|m| m.uid() == 0 && m.mode() & 0o4000 != 0);
    let mut buf = [0u8; 64];
    let caps = rustix::fs::getxattr(&path, "security.capability", &mut buf).is_ok_and(|n| n > 0);
    let shown = path.display();
    match (setuid, caps) {
        (true, _) => ok(name, format!("{shown} (setuid root)")),
        (_, true) => ok(name, format!("{shown} (file capabilities)")),
        _ => line(
            name,
            if single { Status::Warn } else { Status::Fail },
            format!("{shown} is neither setuid root nor has file capabilities"),
            "chmod u+s it, or setcap cap_setuid+ep (newgidmap: cap_setgid+ep)",
        ),
    }
}

fn getsubids(source: SubidSource) -> Line {
    match exec::look_path(OsStr::new("getsubids")) {
        Ok(p) => ok("getsubids", p.display().to_string()),
        Err(e) if source == SubidSource::Dynamic => line(
            "getsubids",
            Status::Fail,
            e,
            "install getsubids (uidmap package), or use --subid-source=static",
        ),
        Err(_) => ok(
            "getsubids",
            "not installed; /etc/subuid and /etc/subgid are read directly".into(),
        ),
    }
}

/// A real clone into new user and mount namespaces, mapped the way a run maps the child.
fn trial(user: &Result<idmap::User, String>, maps: &Result<idmap::IdMaps, String>) -> Line {
    let single;
    let maps = match (maps, user) {
        (Ok(m), _) => m,
        (Err(_), u) => {
            let uid = u
                .as_ref()
                .map_or(rustix::process::getuid().as_raw(), |u| u.uid);
            let one = |id| {
                vec![idmap::Range {
                    inside: 0,
                    outside: id,
                    count: 1,
                }]
            };
            single = idmap::IdMaps {
                uid: one(uid),
                gid: one(rustix::process::getegid().as_raw()),
                fallback: true,
            };
            &single
        }
    };
    let flags =
        u64::from(linux_raw_sys::general::CLONE_NEWUSER | linux_raw_sys::general::CLONE_NEWNS);
    match exec::trial_namespaces(flags, |pid| idmap::apply(pid, maps)) {
        Err(e) => line(
            "clone",
            Status::Fail,
            format!("clone3(CLONE_NEWUSER|CLONE_NEWNS): {}", errno(&e)),
            "user namespaces are refused here: see the userns and apparmor lines, or a seccomp profile of the container this runs in",
        ),
        Ok(Err(e)) => line(
            "clone",
            Status::Fail,
            e,
            "see the newuidmap, newgidmap and subids lines",
        ),
        Ok(Ok(())) => ok(
            "clone",
            format!(
                "new user and mount namespaces, {} uid map line(s) written",
                maps.uid.len()
            ),
        ),
    }
}

/// Whether `--copy-up-mode=overlay --copy-up=/etc` works: `rootlesskit-child --probe-overlay`
/// does that copy-up in a trial user and mount namespace, mapped as a run maps it, and the
/// namespace takes its mounts with it. A warning at most: the default mode does not need it.
fn overlayfs(helper: &Path, maps: &idmap::IdMaps) -> Line {
    const NAME: &str = "overlayfs";
    const HINT: &str = "--copy-up-mode=overlay needs Linux 5.11+ and no other mount below the copied-up directory (a container's /etc/hosts is one); the default tmpfs+symlink mode does not need it";
    let flags =
        u64::from(linux_raw_sys::general::CLONE_NEWUSER | linux_raw_sys::general::CLONE_NEWNS);
    match exec::trial_exec(flags, helper, &["--probe-overlay"], |pid| {
        idmap::apply(pid, maps)
    }) {
        Ok(Ok((0, _))) => ok(
            NAME,
            "unprivileged overlayfs: --copy-up-mode=overlay --copy-up=/etc works".into(),
        ),
        Ok(Ok((_, why))) if !why.is_empty() => line(
            NAME,
            Status::Warn,
            format!("unprivileged overlayfs: {why}"),
            HINT,
        ),
        Ok(Ok((code, _))) => line(
            NAME,
            Status::Warn,
            format!("unprivileged overlayfs: the probe exited with {code}"),
            HINT,
        ),
        Ok(Err(e)) => line(
            NAME,
            Status::Warn,
            format!("unprivileged overlayfs: {e}"),
            HINT,
        ),
        Err(e) => line(
            NAME,
            Status::Warn,
            format!("unprivileged overlayfs: {}", errno(&e)),
            HINT,
        ),
    }
}

fn tun() -> Line {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => ok("tun", "/dev/net/tun can be opened".into()),
        Err(e) => line(
            "tun",
            Status::Warn,
            format!("open /dev/net/tun: {}", errno(&e)),
            "--net=slirp4netns, pasta and vpnkit need it: modprobe tun, and the device must be mode 0666",
        ),
    }
}

/// The first line of `exe args`, if it ran and succeeded.
fn first_line(exe: &Path, args: &[&str]) -> Result<String, String> {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
    let (status, out) = exec::run_with_output(exe, &args)?;
    let text = String::from_utf8_lossy(&out);
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if status.success() {
        Ok(first.trim().to_owned())
    } else {
        Err(format!("{}: {first}", exec::exit_text(status)))
    }
}

fn missing(name: &'static str, e: String) -> Line {
    let hint = format!("install it to use --net={name}");
    line(name, Status::Warn, e, &hint)
}

fn slirp4netns(binary: &str) -> Line {
    let name = "slirp4netns";
    let exe = match exec::look_path(OsStr::new(binary)) {
        Ok(p) => p,
        Err(e) => return missing(name, e),
    };
    let version = first_line(&exe, &["--version"]).unwrap_or_else(|e| e);
    let help = exec::run_with_output(&exe, &["--help".into()])
        .map(|(_, out)| String::from_utf8_lossy(&out).into_owned())
        .unwrap_or_default();
    match crate::net::slirp4netns::parse_help(&help) {
        Ok(f) => {
            let mut features = String::new();
            for (on, word) in [
                (f.enable_ipv6, " ipv6"),
                (f.cidr, " cidr"),
                (f.disable_host_loopback, " disable-host-loopback"),
                (f.api_socket, " api-socket"),
                (f.enable_sandbox, " sandbox"),
                (f.enable_seccomp, " seccomp"),
            ] {
                if on {
                    features.push_str(word);
                }
            }
            ok(
                name,
                format!("{}: {version}; features:{features}", exe.display()),
            )
        }
        Err(e) => line(
            name,
            Status::Warn,
            format!("{}: {e}", exe.display()),
            "install slirp4netns v0.4.0 or later",
        ),
    }
}

fn driver(name: &'static str, binary: &str) -> Line {
    let exe = match exec::look_path(OsStr::new(binary)) {
        Ok(p) => p,
        Err(e) => return missing(name, e),
    };
    match first_line(&exe, &["--version"]) {
        Ok(v) => {
            let extra = if name == "pasta"
                && first_line(&exe, &["--host-lo-to-ns-lo", "--version"]).is_ok()
            {
                "; features: host-lo-to-ns-lo"
            } else {
                ""
            };
            ok(name, format!("{}: {v}{extra}", exe.display()))
        }
        Err(e) => line(
            name,
            Status::Warn,
            format!("{} --version: {e}", exe.display()),
            "reinstall it",
        ),
    }
}

fn lxc_user_nic(binary: &str) -> Line {
    let name = "lxc-user-nic";
    match std::fs::metadata(binary) {
        Ok(m) if m.uid() == 0 && m.mode() & 0o4000 != 0 => {
            ok(name, format!("{binary} (setuid root)"))
        }
        Ok(_) => line(
            name,
            Status::Warn,
            format!("{binary} is not setuid root"),
            "chmod u+s it (the lxc package does)",
        ),
        Err(e) => missing(name, format!("{binary}: {}", errno(&e))),
    }
}

fn ping_group_range() -> Line {
    let gid = rustix::process::getgid().as_raw();
    let text = read_trim("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut it = text.split_whitespace().map(|n| n.parse::<u64>().ok());
    let inside = match (it.next().flatten(), it.next().flatten()) {
        (Some(lo), Some(hi)) => (lo..=hi).contains(&u64::from(gid)),
        _ => false,
    };
    if inside {
        ok(
            "ping",
            format!("net.ipv4.ping_group_range={text} includes gid {gid}"),
        )
    } else {
        line(
            "ping",
            Status::Warn,
            format!(
                "net.ipv4.ping_group_range=\"{text}\" leaves out gid {gid}: ping fails with --net=host"
            ),
            "sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"",
        )
    }
}

/// cgroup v2, and whether our own cgroup is ours to manage (delegated).
fn cgroup() -> Line {
    let name = "cgroup";
    if read_trim("/sys/fs/cgroup/cgroup.controllers").is_none() {
        return line(
            name,
            Status::Warn,
            "no cgroup v2 at /sys/fs/cgroup (v1 or hybrid)".into(),
            "resource limits of rootless containers need cgroup v2: boot with systemd.unified_cgroup_hierarchy=1",
        );
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_owned();
    let dir = PathBuf::from(format!("/sys/fs/cgroup{path}"));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let controllers = controllers.trim();
    let owner = std::fs::metadata(&dir).map(|m| m.uid()).ok();
    if owner == Some(rustix::process::getuid().as_raw()) {
        ok(
            name,
            format!("cgroup v2, {path} is delegated; controllers: {controllers}"),
        )
    } else {
        line(
            name,
            Status::Warn,
            format!("cgroup v2, but {path} is not yours: nothing is delegated"),
            "log in through systemd (a user@.service), with Delegate=cpu cpuset io memory pids in a user@.service.d drop-in",
        )
    }
}

fn writable(dir: &Path) -> Result<(), String> {
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK)
        .map_err(|e| format!("{}: {}", dir.display(), errno(&e.into())))
}

fn runtime_dir() -> Line {
    let name = "runtime-dir";
    let hint = "log in through systemd-logind (loginctl enable-linger USER for services), or set XDG_RUNTIME_DIR to a private directory";
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        None => line(
            name,
            Status::Warn,
            "XDG_RUNTIME_DIR is not set (rootless Docker and containerd keep their sockets there)"
                .into(),
            hint,
        ),
        Some(d) => match writable(Path::new(&d)) {
            Ok(()) => ok(
                name,
                format!("XDG_RUNTIME_DIR={} is writable", d.to_string_lossy()),
            ),
            Err(e) => line(name, Status::Warn, format!("XDG_RUNTIME_DIR {e}"), hint),
        },
    }
}

/// Where the state dir of a run goes: `--state-dir`'s parent when it does not exist yet (or
/// itself), else a new directory under `$TMPDIR` or /tmp.
fn state_dir(explicit: Option<&Path>) -> Line {
    let name = "state-dir";
    let dir = match explicit {
        Some(p) if p.is_dir() => p.to_path_buf(),
        Some(p) => p.parent().unwrap_or(Path::new("/")).to_path_buf(),
        None => std::env::var_os("TMPDIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
    };
    match writable(&dir) {
        Ok(()) => ok(name, format!("state dirs can be made in {}", dir.display())),
        Err(e) => line(
            name,
            Status::Fail,
            format!("cannot make a state dir: {e}"),
            "set TMPDIR or --state-dir to a directory you can write",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apparmor_profiles() {
        let exe = "/usr/bin/rootlesskit";
        let ours = "abi <abi/4.0>,\ninclude <tunables/global>\n\nprofile rootlesskit /usr/bin/rootlesskit flags=(unconfined) {\n  userns,\n\n  include if exists <local/rootlesskit>\n}\n";
        assert!(profile_allows_userns(ours, exe));
        assert!(!profile_allows_userns(ours, "/opt/bin/rootlesskit"));
        assert!(!profile_allows_userns(
            &ours.replace("userns,", "# userns,"),
            exe
        ));
        assert!(!profile_allows_userns(
            "# profile x /usr/bin/rootlesskit {\nuserns,\n",
            exe
        ));
        assert!(!profile_allows_userns(
            "profile x /usr/bin/rootlesskit-child {\nuserns,\n}\n",
            exe
        ));
    }

    #[test]
    fn shared_subid_ranges() {
        let me = idmap::User {
            uid: 1001,
            gid: 1001,
            name: Some("me".into()),
        };
        let text = "me:100000:65536\n# x:0:1\nyou:165536:65536\nthem:165535:2\n1001:300000:10\nold:300009:1\nbad:1:x\nbig:4294967295:4294967295\n";
        assert_eq!(
            shared_ranges(text, "/etc/subuid", &me),
            [
                "/etc/subuid: 100000-165535 with them",
                "/etc/subuid: 300000-300009 with old",
            ]
        );
        assert!(shared_ranges("me:1:1\nyou:2:1\n", "f", &me).is_empty());
    }

    #[test]
    fn text_and_json() {
        let lines = [
            ok("userns", "user.max_user_namespaces=10".into()),
            line(
                "tun",
                Status::Warn,
                "open: \"x\"\\\n".into(),
                "modprobe tun",
            ),
        ];
        assert_eq!(
            render_text(&lines),
            "ok    userns         user.max_user_namespaces=10\n\
             warn  tun            open: \"x\"\\\n; hint: modprobe tun\n\
             a plain \"rootlesskit true\" would work here\n"
        );
        assert_eq!(
            render_json(&lines),
            "{\"ok\":true,\"checks\":[{\"name\":\"userns\",\"status\":\"ok\",\"detail\":\"user.max_user_namespaces=10\",\"hint\":\"\"},\
             {\"name\":\"tun\",\"status\":\"warn\",\"detail\":\"open: \\\"x\\\"\\\\\\u000a\",\"hint\":\"modprobe tun\"}]}\n"
        );
        let failed = [line("clone", Status::Fail, "no".into(), "fix")];
        assert!(render_text(&failed).ends_with("would fail here\n"));
        assert!(render_json(&failed).starts_with("{\"ok\":false,"));
    }
}
