//! uid/gid maps for the child's user namespace: /etc/passwd, /etc/subuid, /etc/subgid, getsubids.
//!
//! [`compute`] turns the user and `--subid-source` into the two maps, [`apply`] installs them on
//! the child. The map is upstream's: `0 <uid> 1`, then the subordinate ranges stacked from 1.
//! Unlike upstream we degrade instead of failing when the user has no subordinate ids, no
//! passwd entry, or no `newuidmap`/`newgidmap`: the child then gets the single-id map an
//! unprivileged process may write itself (uid 0 only, setgroups denied), and one warning says so.
//!
//! Everything the computation reads from the host goes through the private `Host` trait, so the
//! decisions are tested with made-up files and getsubids outputs.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use crate::cli::SubidSource;
use crate::exec::{self, quote};

const PASSWD_PATH: &str = "/etc/passwd";
const SUBUID_PATH: &str = "/etc/subuid";
const SUBGID_PATH: &str = "/etc/subgid";
const FALLBACK_NOTE: &str =
    "falling back to a single-id map (only uid 0 is mapped; setgroups is denied)";

/// The user whose ids are mapped to root in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Real uid of the parent.
    pub uid: u32,
    /// Primary gid from /etc/passwd, or the real gid when the uid has no passwd entry.
    pub gid: u32,
    /// Login name; `None` when the uid has no passwd entry.
    pub name: Option<String>,
}

/// One line of a uid_map/gid_map: `count` ids from `inside` in the child are `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// Both maps for the child, and whether they are the single-id fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: Vec<Range>,
    pub gid: Vec<Range>,
    /// Written directly to /proc (with setgroups denied) instead of through newuidmap/newgidmap.
    pub fallback: bool,
}

// ---------------------------------------------------------------------------------------------
// The user.

/// The real uid with its name and primary gid from /etc/passwd (parsed here, never via NSS).
///
/// A uid without a passwd entry (for example one set with `setpriv --reuid`) is not an error,
/// unlike upstream: `name` is `None` and `gid` is the real gid.
///
/// # Errors
/// Only when /etc/passwd exists but cannot be read: `open /etc/passwd: permission denied`.
pub fn current_user() -> Result<User, String> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let passwd = match std::fs::read(PASSWD_PATH) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("open {PASSWD_PATH}: {}", exec::errno_text(&e))),
    };
    Ok(user_from(uid, gid, passwd.as_deref()))
}

/// Builds the [`User`] for `uid` from the passwd text, falling back to `real_gid` and no name.
fn user_from(uid: u32, real_gid: u32, passwd: Option<&str>) -> User {
    match passwd.and_then(|text| parse_passwd(text, uid)) {
        Some((name, gid)) => User {
            uid,
            gid,
            name: Some(name),
        },
        None => User {
            uid,
            gid: real_gid,
            name: None,
        },
    }
}

/// The first passwd line for `uid`: `(name, primary gid)`.
///
/// Follows Go's pure-Go `os/user`: lines are trimmed, empty and `#` lines skipped, a line needs
/// at least 6 colons, a non-empty name not starting with `+`/`-`, the uid field spelled exactly
/// as the decimal `uid`, and a numeric gid; anything else is skipped.
pub fn parse_passwd(text: &str, uid: u32) -> Option<(String, u32)> {
    let uid = uid.to_string();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| line.matches(':').count() >= 6)
        .find_map(|line| {
            let mut fields = line.splitn(7, ':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let line_uid = fields.next()?;
            let gid = fields.next()?;
            if name.is_empty() || name.starts_with(['+', '-']) || line_uid != uid {
                return None;
            }
            let gid = atoi(gid).ok()?;
            Some((name.to_string(), gid))
        })
}

// ---------------------------------------------------------------------------------------------
// Parsers.

/// Go's `strconv.Atoi` narrowed to `u32`: optional sign, then ASCII digits only.
///
/// # Errors
/// Go's text: `strconv.Atoi: parsing "x": invalid syntax`, or `value out of range` for numbers
/// that are not valid ids (negative or above 4294967295).
fn atoi(s: &str) -> Result<u32, String> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let fail = |why: &str| format!("strconv.Atoi: parsing {}: {why}", quote(s));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail("invalid syntax"));
    }
    let mut value: u32 = 0;
    for b in digits.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(b - b'0')))
            .ok_or_else(|| fail("value out of range"))?;
    }
    if negative && value != 0 {
        return Err(fail("value out of range"));
    }
    Ok(value)
}

/// Our own check on a subordinate range, which upstream passes on to newuidmap unchecked.
fn check_range(start: u32, count: u32) -> Result<(), String> {
    if count == 0 {
        return Err("the count is 0".to_string());
    }
    if start.checked_add(count).is_none() {
        return Err(format!("start + count exceeds {}", u32::MAX));
    }
    Ok(())
}

/// The ranges for `user` in the text of /etc/subuid or /etc/subgid: `(start, count)` pairs.
///
/// Upstream's rules: each line is trimmed; empty and `#` lines are skipped; every other line must
/// have exactly three `:` fields; a line belongs to the user when its first field is the uid in
/// decimal or the user name; all such lines count, in file order. `path_for_errors` names the
/// file in messages.
///
/// # Errors
/// `Cannot parse subuid/gid information: Format not correct for /etc/subuid file`,
/// `String to int conversion failed during subuid/gid parsing of /etc/subuid: strconv.Atoi: ...`,
/// and ours for a user's range with count 0 or past the last id:
/// `/etc/subuid line 3: invalid range "tester:100000:0": the count is 0`.
pub fn parse_subid_file(
    text: &str,
    path_for_errors: &str,
    user: &User,
) -> Result<Vec<(u32, u32)>, String> {
    let uid = user.uid.to_string();
    let name = user.name.as_deref().filter(|n| !n.is_empty());
    let mut ranges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let [owner, start, count] = fields[..] else {
            return Err(format!(
                "Cannot parse subuid/gid information: Format not correct for {path_for_errors} file"
            ));
        };
        if owner != uid && Some(owner) != name {
            continue;
        }
        let number = |field: &str| {
            atoi(field).map_err(|e| {
                format!(
                    "String to int conversion failed during subuid/gid parsing of {path_for_errors}: {e}"
                )
            })
        };
        let (start, count) = (number(start)?, number(count)?);
        check_range(start, count).map_err(|why| {
            format!(
                "{path_for_errors} line {}: invalid range {}: {why}",
                index + 1,
                quote(line)
            )
        })?;
        ranges.push((start, count));
    }
    Ok(ranges)
}

/// The ranges printed by `getsubids [-g] <user>`: `(start, count)` pairs.
///
/// Lines look like `0: tester 100000 65536`. Warnings (extra fields) are dropped here; see
/// `parse_getsubids_warn`.
///
/// # Errors
/// `line 2: unparsable line "..."` (upstream's text, lines counted from 1 including skipped ones),
/// `line 2: unparsable line "...": failed to Atoi("x"): strconv.Atoi: parsing "x": invalid syntax`,
/// and ours for a count of 0 or a range past the last id: `line 2: invalid range "...": ...`.
pub fn parse_getsubids(text: &str) -> Result<Vec<(u32, u32)>, String> {
    parse_getsubids_warn(text, &mut |_| {})
}

/// [`parse_getsubids`], reporting upstream's warnings (`line N: line "..." contains unknown fields`).
fn parse_getsubids_warn(
    text: &str,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<(u32, u32)>, String> {
    let mut ranges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let unparsable = || format!("line {n}: unparsable line {}", quote(line));
        let unknown = || format!("line {n}: line {} contains unknown fields", quote(line));
        let parts: Vec<&str> = line.split(':').collect();
        if parts.len() < 2 {
            return Err(unparsable());
        }
        if parts.len() > 2 {
            warn(unknown());
        }
        let triplet: Vec<&str> = parts[1].split_whitespace().collect();
        if triplet.len() < 3 {
            return Err(unparsable());
        }
        if triplet.len() > 3 {
            warn(unknown());
        }
        let number = |field: &str| {
            atoi(field)
                .map_err(|e| format!("{}: failed to Atoi({}): {e}", unparsable(), quote(field)))
        };
        let (start, count) = (number(triplet[1])?, number(triplet[2])?);
        check_range(start, count)
            .map_err(|why| format!("line {n}: invalid range {}: {why}", quote(line)))?;
        ranges.push((start, count));
    }
    Ok(ranges)
}

// ---------------------------------------------------------------------------------------------
// Computing the maps.

/// The arguments for newuidmap/newgidmap after the pid: `inside outside count` per range.
pub fn map_args(ranges: &[Range]) -> Vec<String> {
    ranges
        .iter()
        .flat_map(|r| {
            [
                r.inside.to_string(),
                r.outside.to_string(),
                r.count.to_string(),
            ]
        })
        .collect()
}

/// Upstream's map: `0 <id> 1`, then each subordinate range stacked contiguously from 1.
///
/// # Errors
/// When the ranges together do not fit below the last id.
fn stack(id: u32, subids: &[(u32, u32)], what: &str, user: &User) -> Result<Vec<Range>, String> {
    let mut map = vec![Range {
        inside: 0,
        outside: id,
        count: 1,
    }];
    let mut next: u32 = 1;
    for &(start, count) in subids {
        map.push(Range {
            inside: next,
            outside: start,
            count,
        });
        next = next.checked_add(count).ok_or_else(|| {
            format!(
                "the {what} ranges of user {} add up to more than {} ids",
                who(user),
                u32::MAX - 1
            )
        })?;
    }
    Ok(map)
}

/// `1000 ("tester")`, as upstream names a user in messages.
fn who(user: &User) -> String {
    format!(
        "{} ({})",
        user.uid,
        quote(user.name.as_deref().unwrap_or(""))
    )
}

/// What `compute` needs from the machine; faked in tests.
trait Host {
    /// The contents of /etc/subuid or /etc/subgid.
    fn read(&self, path: &str) -> io::Result<String>;
    /// `$GETSUBIDS`, if set.
    fn getsubids_env(&self) -> Option<OsString>;
    /// `exec.LookPath`.
    fn look_path(&self, name: &OsStr) -> Result<PathBuf, String>;
    /// `getsubids [-g] who`; see [`exec::run_getsubids`].
    fn getsubids(&self, exe: &Path, group: bool, who: &str) -> Result<exec::Captured, String>;
    /// Our effective gid: the only gid an unprivileged process may map by itself.
    fn egid(&self) -> u32;
}

/// The real machine.
struct System;

impl Host for System {
    fn read(&self, path: &str) -> io::Result<String> {
        std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }
    fn getsubids_env(&self) -> Option<OsString> {
        std::env::var_os("GETSUBIDS")
    }
    fn look_path(&self, name: &OsStr) -> Result<PathBuf, String> {
        exec::look_path(name)
    }
    fn getsubids(&self, exe: &Path, group: bool, who: &str) -> Result<exec::Captured, String> {
        exec::run_getsubids(exe, group, who)
    }
    fn egid(&self) -> u32 {
        rustix::process::getegid().as_raw()
    }
}

/// Subordinate uid and gid ranges, or why there are none.
enum Subids {
    Found {
        uids: Vec<(u32, u32)>,
        gids: Vec<(u32, u32)>,
    },
    /// The reason, e.g. `in /etc/subgid`, used in the fallback warning.
    Missing(String),
}

/// Computes the child's maps for `user` from `--subid-source`.
///
/// `auto` uses `getsubids` when it works and lists both uids and gids, else the files.
/// Falls back to single-id maps (`fallback: true`, one line through `warn`) when the user has no
/// subordinate uids or gids, has no passwd entry (newuidmap refuses such callers), or
/// newuidmap/newgidmap is not in `$PATH`.
///
/// # Errors
/// Upstream's messages for a malformed or unreadable /etc/subuid or /etc/subgid, and for
/// `--subid-source=dynamic` when getsubids is missing or fails for both the name and the uid.
/// The caller prefixes them with `failed to setup UID/GID map: failed to compute uid/gid map: `
/// (upstream's `unknown subid source "x"` cannot happen here: the CLI rejects it).
pub fn compute(
    user: &User,
    source: SubidSource,
    warn: &mut dyn FnMut(String),
) -> Result<IdMaps, String> {
    compute_with(&System, user, source, warn)
}

fn compute_with(
    host: &dyn Host,
    user: &User,
    source: SubidSource,
    warn: &mut dyn FnMut(String),
) -> Result<IdMaps, String> {
    let fallback = |why: String, warn: &mut dyn FnMut(String)| {
        warn(format!("{why}: {FALLBACK_NOTE}"));
        IdMaps {
            uid: vec![Range {
                inside: 0,
                outside: user.uid,
                count: 1,
            }],
            gid: vec![Range {
                inside: 0,
                outside: host.egid(),
                count: 1,
            }],
            fallback: true,
        }
    };
    let Some(name) = user.name.as_deref() else {
        let why = format!(
            "no passwd entry for uid {}, which newuidmap requires",
            user.uid
        );
        return Ok(fallback(why, warn));
    };
    let subids = match source {
        SubidSource::Static => static_subids(host, user)?,
        SubidSource::Dynamic => dynamic_subids(host, user.uid, name, warn)?,
        // getsubids answers from the same files when nsswitch.conf names no other subid
        // service: skip its four runs then (they are most of our startup time).
        SubidSource::Auto
            if host.getsubids_env().is_none()
                && host
                    .read("/etc/nsswitch.conf")
                    .is_ok_and(|text| subid_service_is_files(&text)) =>
        {
            static_subids(host, user)?
        }
        SubidSource::Auto => match dynamic_subids(host, user.uid, name, warn) {
            Ok(found @ Subids::Found { .. }) => found,
            _ => static_subids(host, user)?,
        },
    };
    let (uids, gids) = match subids {
        Subids::Found { uids, gids } => (uids, gids),
        Subids::Missing(where_) => {
            let why = format!("no subordinate ids for user {} {where_}", who(user));
            return Ok(fallback(why, warn));
        }
    };
    for tool in ["newuidmap", "newgidmap"] {
        if let Err(e) = host.look_path(OsStr::new(tool)) {
            return Ok(fallback(format!("cannot use {tool} ({e})"), warn));
        }
    }
    Ok(IdMaps {
        uid: stack(user.uid, &uids, "subuid", user)?,
        gid: stack(user.gid, &gids, "subgid", user)?,
        fallback: false,
    })
}

/// Whether shadow's libsubid (behind getsubids) would read /etc/subuid and /etc/subgid: the
/// `subid:` database of nsswitch.conf is absent or lists only `files`.
fn subid_service_is_files(nsswitch: &str) -> bool {
    for line in nsswitch.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(services) = line.strip_prefix("subid:") else {
            continue;
        };
        return services
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .all(|w| w == "files");
    }
    true
}

/// `--subid-source=static`: /etc/subuid and /etc/subgid; a missing file holds no ranges.
fn static_subids(host: &dyn Host, user: &User) -> Result<Subids, String> {
    let mut lists = Vec::with_capacity(2);
    for path in [SUBUID_PATH, SUBGID_PATH] {
        let ranges = match host.read(path) {
            Ok(text) => parse_subid_file(&text, path, user)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Subids::Missing(format!(
                    "in {path} (the file does not exist)"
                )));
            }
            Err(e) => return Err(format!("open {path}: {}", exec::errno_text(&e))),
        };
        lists.push(ranges);
    }
    let gids = lists.pop().unwrap_or_default();
    let uids = lists.pop().unwrap_or_default();
    Ok(if uids.is_empty() {
        Subids::Missing(format!("in {SUBUID_PATH}"))
    } else if gids.is_empty() {
        Subids::Missing(format!("in {SUBGID_PATH}"))
    } else {
        Subids::Found { uids, gids }
    })
}

/// `--subid-source=dynamic`: `getsubids <name>` and `getsubids <uid>` (`-g` for gids).
fn dynamic_subids(
    host: &dyn Host,
    uid: u32,
    name: &str,
    warn: &mut dyn FnMut(String),
) -> Result<Subids, String> {
    let program = host.getsubids_env().filter(|v| !v.is_empty());
    let program = program.as_deref().unwrap_or(OsStr::new("getsubids"));
    let exe = host
        .look_path(program)
        .map_err(|e| format!("subid-source:dynamic: {e}"))?;
    let uid_text = uid.to_string();
    let mut lists = Vec::with_capacity(2);
    for (group, kind) in [(false, "subuids"), (true, "subgids")] {
        let by_name = run_getsubids(host, &exe, group, name, warn);
        let by_uid = run_getsubids(host, &exe, group, &uid_text, warn);
        let mut list = match (by_name, by_uid) {
            (Err(name_err), Err(uid_err)) => {
                // Upstream says "subuids" in the second half for gids too.
                return Err(format!(
                    "subid-source:dynamic: failed to get {kind} by the username {}: {name_err}; \
                     also failed to get subuids by the UID {uid}: {uid_err}",
                    quote(name)
                ));
            }
            (by_name, by_uid) => {
                let mut list = by_name.unwrap_or_default();
                list.extend(by_uid.unwrap_or_default());
                list
            }
        };
        let mut seen = std::collections::HashSet::new();
        list.retain(|range| seen.insert(*range));
        lists.push(list);
    }
    let gids = lists.pop().unwrap_or_default();
    let uids = lists.pop().unwrap_or_default();
    Ok(if uids.is_empty() {
        Subids::Missing(format!(
            "from {}",
            quote(&format!("{} {name}", exe.display()))
        ))
    } else if gids.is_empty() {
        Subids::Missing(format!(
            "from {}",
            quote(&format!("{} -g {name}", exe.display()))
        ))
    } else {
        Subids::Found { uids, gids }
    })
}

/// One `getsubids` run, with upstream's error and warning texts.
fn run_getsubids(
    host: &dyn Host,
    exe: &Path,
    group: bool,
    who: &str,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<(u32, u32)>, String> {
    let argv = if group {
        format!("[{} -g {who}]", exe.display())
    } else {
        format!("[{} {who}]", exe.display())
    };
    let out = host
        .getsubids(exe, group, who)
        .map_err(|e| format!(r#"failed to exec {argv}: {e} (stdout="", stderr="")"#))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let streams = format!("(stdout={}, stderr={})", quote(&stdout), quote(&stderr));
    if !out.status.success() {
        return Err(format!(
            "failed to exec {argv}: {} {streams}",
            exec::exit_text(out.status)
        ));
    }
    parse_getsubids_warn(&stdout, &mut |w| {
        warn(format!(
            "Error while parsing the result of {argv}: {w} {streams}"
        ));
    })
}

// ---------------------------------------------------------------------------------------------
// Applying the maps.

/// Installs `maps` on process `pid`: through newuidmap and newgidmap, or for the fallback by
/// writing `deny` to `/proc/<pid>/setgroups` and the maps to `/proc/<pid>/{uid_map,gid_map}`.
///
/// # Errors
/// `failed to setup UID/GID map: newuidmap 1234 [0 1000 1 1 100000 65536] failed: <output>: exit status 1`,
/// `failed to setup UID/GID map: writing /proc/1234/uid_map: operation not permitted`.
pub fn apply(pid: i32, maps: &IdMaps) -> Result<(), String> {
    let fail = |e: String| format!("failed to setup UID/GID map: {e}");
    if !maps.fallback {
        return exec::run_newidmaps(pid, &map_args(&maps.uid), &map_args(&maps.gid)).map_err(fail);
    }
    let proc_dir = format!("/proc/{pid}");
    // Kernels before 3.19 have no setgroups file and need no "deny" to write gid_map.
    match write_proc(&proc_dir, "setgroups", "deny") {
        Err((e, _)) if e.kind() == io::ErrorKind::NotFound => {}
        other => other.map_err(|(_, msg)| fail(msg))?,
    }
    write_proc(&proc_dir, "uid_map", &map_text(&maps.uid)).map_err(|(_, msg)| fail(msg))?;
    write_proc(&proc_dir, "gid_map", &map_text(&maps.gid)).map_err(|(_, msg)| fail(msg))?;
    Ok(())
}

/// The text of a uid_map/gid_map file: one `inside outside count` line per range.
fn map_text(ranges: &[Range]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// Writes `text` to `<proc_dir>/<file>` in one write(2), as the map files require.
fn write_proc(proc_dir: &str, file: &str, text: &str) -> Result<(), (io::Error, String)> {
    use std::io::Write;
    let path = format!("{proc_dir}/{file}");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| {
            let written = f.write(text.as_bytes())?;
            if written == text.len() {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::INVAL.raw_os_error(),
                ))
            }
        });
    result.map_err(|e| {
        let msg = format!("writing {path}: {}", exec::errno_text(&e));
        (e, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn tester() -> User {
        User {
            uid: 1000,
            gid: 1001,
            name: Some("tester".into()),
        }
    }

    // --- passwd -------------------------------------------------------------------------------

    #[test]
    fn passwd() {
        let check = |text: &str, uid: u32, expect: Option<(&str, u32)>| {
            let got = parse_passwd(text, uid);
            assert_eq!(
                got,
                expect.map(|(n, g)| (n.to_string(), g)),
                "{text:?} uid {uid}"
            );
        };
        let etc = "root:x:0:0:root:/root:/bin/bash\n\
                   # tester:x:1000:9:commented out:/:/bin/sh\n\
                   \n\
                   daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                   tester:x:1000:1001:Test User,,,:/home/tester:/bin/bash\n\
                   dup:x:1000:5::/:/bin/sh\n";
        check(etc, 1000, Some(("tester", 1001)));
        check(etc, 0, Some(("root", 0)));
        check(etc, 1, Some(("daemon", 1)));
        check(etc, 2000, None);
        check("", 1000, None);
        // Leading/trailing blanks and CRLF are trimmed; the last line needs no newline.
        check(
            "  tester:x:1000:1001::/home/tester:/bin/sh  \r\n",
            1000,
            Some(("tester", 1001)),
        );
        check(
            "tester:x:1000:1001::/home/tester:",
            1000,
            Some(("tester", 1001)),
        );
        // Fewer than 6 colons, odd names, non-decimal spellings and bad gids are skipped.
        check("tester:x:1000:1001:/home/tester:/bin/sh", 1000, None);
        check(":x:1000:1001::/:/bin/sh", 1000, None);
        check(
            "+tester:x:1000:1001::/:/bin/sh\n-nis:x:1000:1::/:/bin/sh",
            1000,
            None,
        );
        check("tester:x:01000:1001::/:/bin/sh", 1000, None);
        check(
            "tester:x:1000:abc::/:/bin/sh\nother:x:1000:7::/:/bin/sh",
            1000,
            Some(("other", 7)),
        );
        check("tester:x:1000:-1::/:/bin/sh", 1000, None);
        check(
            "big:x:4294967294:4294967294::/:/bin/sh",
            4294967294,
            Some(("big", 4294967294)),
        );
        // Extra colons end up in the shell field.
        check(
            "tester:x:1000:1001::/home:/bin/sh:extra",
            1000,
            Some(("tester", 1001)),
        );
    }

    #[test]
    fn user_without_passwd_entry() {
        let check = |passwd: Option<&str>, expect: User| {
            assert_eq!(user_from(54321, 777, passwd), expect, "{passwd:?}");
        };
        let named = User {
            uid: 54321,
            gid: 100,
            name: Some("ci".into()),
        };
        let nameless = User {
            uid: 54321,
            gid: 777,
            name: None,
        };
        check(Some("ci:x:54321:100::/:/bin/sh\n"), named);
        check(Some("root:x:0:0::/root:/bin/sh\n"), nameless.clone());
        check(None, nameless);
    }

    // --- subuid/subgid files --------------------------------------------------------------------

    #[test]
    fn subid_file() {
        let check = |text: &str, user: &User, expect: Result<Vec<(u32, u32)>, &str>| {
            let got = parse_subid_file(text, "/etc/subuid", user);
            assert_eq!(got, expect.map_err(str::to_string), "{text:?}");
        };
        let bad_format =
            "Cannot parse subuid/gid information: Format not correct for /etc/subuid file";
        let conv = "String to int conversion failed during subuid/gid parsing of /etc/subuid: ";
        let t = tester();
        let nameless = User {
            uid: 1000,
            gid: 1000,
            name: None,
        };

        check("tester:100000:65536\n", &t, Ok(vec![(100000, 65536)]));
        check("tester:100000:65536", &t, Ok(vec![(100000, 65536)]));
        check("", &t, Ok(vec![]));
        check("other:100000:65536\n", &t, Ok(vec![]));
        // Comments, blank lines and surrounding blanks.
        check(
            "# comment\n\n   \n  tester:100000:65536  \r\n#tester:1:1\n",
            &t,
            Ok(vec![(100000, 65536)]),
        );
        // By uid or by name, every match in file order, no de-duplication.
        check(
            "1000:200000:10\nother:1:1\ntester:100000:65536\n1000:200000:10\n",
            &t,
            Ok(vec![(200000, 10), (100000, 65536), (200000, 10)]),
        );
        check(
            "1000:200000:10\ntester:100000:65536\n",
            &nameless,
            Ok(vec![(200000, 10)]),
        );
        check("01000:200000:10\n", &t, Ok(vec![]));
        check(":200000:10\n", &nameless, Ok(vec![]));
        // Any line with the wrong field count spoils the whole file, even another user's.
        check("tester:100000:65536\nother:1\n", &t, Err(bad_format));
        check("other:1:2:3\ntester:100000:65536\n", &t, Err(bad_format));
        check("tester 100000 65536\n", &t, Err(bad_format));
        // Numbers are only parsed on matching lines.
        check(
            "other:x:y\ntester:100000:65536\n",
            &t,
            Ok(vec![(100000, 65536)]),
        );
        check(
            "tester:abc:65536\n",
            &t,
            Err(&format!(
                r#"{conv}strconv.Atoi: parsing "abc": invalid syntax"#
            )),
        );
        check(
            "tester:100000: 65536\n",
            &t,
            Err(&format!(
                r#"{conv}strconv.Atoi: parsing " 65536": invalid syntax"#
            )),
        );
        check(
            "tester:100000:\n",
            &t,
            Err(&format!(
                r#"{conv}strconv.Atoi: parsing "": invalid syntax"#
            )),
        );
        check(
            "tester:-1:65536\n",
            &t,
            Err(&format!(
                r#"{conv}strconv.Atoi: parsing "-1": value out of range"#
            )),
        );
        check(
            "tester:4294967296:1\n",
            &t,
            Err(&format!(
                r#"{conv}strconv.Atoi: parsing "4294967296": value out of range"#
            )),
        );
        check("tester:+100000:65536\n", &t, Ok(vec![(100000, 65536)]));
        // Ours: empty ranges and ranges past the last id.
        check(
            "# header\ntester:100000:0\n",
            &t,
            Err(r#"/etc/subuid line 2: invalid range "tester:100000:0": the count is 0"#),
        );
        check(
            "tester:4294967295:1\n",
            &t,
            Err(
                r#"/etc/subuid line 1: invalid range "tester:4294967295:1": start + count exceeds 4294967295"#,
            ),
        );
        check("tester:4294967294:1\n", &t, Ok(vec![(4294967294, 1)]));
    }

    // --- getsubids ------------------------------------------------------------------------------

    #[test]
    fn getsubids_output() {
        let check = |text: &str, expect: Result<Vec<(u32, u32)>, &str>, warnings: &[&str]| {
            let mut warned = Vec::new();
            let got = parse_getsubids_warn(text, &mut |w| warned.push(w));
            assert_eq!(got, expect.map_err(str::to_string), "{text:?}");
            assert_eq!(warned, warnings, "{text:?}");
            assert_eq!(parse_getsubids(text), got, "{text:?}");
        };
        // Upstream's unit test.
        check(
            "# foo\n0: foo 100000 655360\n",
            Ok(vec![(100000, 655360)]),
            &[],
        );
        check("", Ok(vec![]), &[]);
        check("\n  \n# only comments\n", Ok(vec![]), &[]);
        check(
            "0: tester 100000 65536\n1: tester 200000 1000\n",
            Ok(vec![(100000, 65536), (200000, 1000)]),
            &[],
        );
        check(
            "  0:tester\t100000   65536  \r\n",
            Ok(vec![(100000, 65536)]),
            &[],
        );
        // Unparsable lines; N counts skipped lines too.
        check(
            "# c\n\nError fetching ranges\n",
            Err(r#"line 3: unparsable line "Error fetching ranges""#),
            &[],
        );
        check(
            "0: tester 100000\n",
            Err(r#"line 1: unparsable line "0: tester 100000""#),
            &[],
        );
        check("0:\n", Err(r#"line 1: unparsable line "0:""#), &[]);
        check(
            "0: tester x 65536\n",
            Err(
                r#"line 1: unparsable line "0: tester x 65536": failed to Atoi("x"): strconv.Atoi: parsing "x": invalid syntax"#,
            ),
            &[],
        );
        check(
            "0: tester 100000 99999999999\n",
            Err(
                r#"line 1: unparsable line "0: tester 100000 99999999999": failed to Atoi("99999999999"): strconv.Atoi: parsing "99999999999": value out of range"#,
            ),
            &[],
        );
        // Extra fields only warn.
        check(
            "0: tester 100000 65536 extra\n",
            Ok(vec![(100000, 65536)]),
            &[r#"line 1: line "0: tester 100000 65536 extra" contains unknown fields"#],
        );
        check(
            "0: tester 100000 65536: x\n",
            Ok(vec![(100000, 65536)]),
            &[r#"line 1: line "0: tester 100000 65536: x" contains unknown fields"#],
        );
        // An error after a warning keeps the warning.
        check(
            "0: a 1 2 3\n1: b\n",
            Err(r#"line 2: unparsable line "1: b""#),
            &[r#"line 1: line "0: a 1 2 3" contains unknown fields"#],
        );
        // Ours: empty ranges and ranges past the last id.
        check(
            "0: tester 100000 0\n",
            Err(r#"line 1: invalid range "0: tester 100000 0": the count is 0"#),
            &[],
        );
        check(
            "0: tester 4294967295 1\n",
            Err(
                r#"line 1: invalid range "0: tester 4294967295 1": start + count exceeds 4294967295"#,
            ),
            &[],
        );
    }

    #[test]
    fn atoi_like_go() {
        let check = |s: &str, expect: Result<u32, &str>| {
            assert_eq!(atoi(s), expect.map_err(str::to_string), "{s:?}");
        };
        check("0", Ok(0));
        check("-0", Ok(0));
        check("+7", Ok(7));
        check("007", Ok(7));
        check("4294967295", Ok(u32::MAX));
        check(
            "4294967296",
            Err(r#"strconv.Atoi: parsing "4294967296": value out of range"#),
        );
        check(
            "-5",
            Err(r#"strconv.Atoi: parsing "-5": value out of range"#),
        );
        check("", Err(r#"strconv.Atoi: parsing "": invalid syntax"#));
        check("+", Err(r#"strconv.Atoi: parsing "+": invalid syntax"#));
        check(
            "1_000",
            Err(r#"strconv.Atoi: parsing "1_000": invalid syntax"#),
        );
        check("１", Err(r#"strconv.Atoi: parsing "１": invalid syntax"#));
    }

    // --- map arguments ---------------------------------------------------------------------------

    #[test]
    fn args_from_ranges() {
        let check = |id: u32, subids: &[(u32, u32)], expect: Result<&str, &str>| {
            let got = stack(id, subids, "subuid", &tester()).map(|m| map_args(&m).join(" "));
            assert_eq!(
                got,
                expect.map(str::to_string).map_err(str::to_string),
                "{subids:?}"
            );
        };
        // Upstream's unit test (newugidmapArgsFromSubIDRanges).
        check(
            1000,
            &[(100000, 65536), (200000, 65536)],
            Ok("0 1000 1 1 100000 65536 65537 200000 65536"),
        );
        check(1000, &[(100000, 65536)], Ok("0 1000 1 1 100000 65536"));
        check(1000, &[], Ok("0 1000 1"));
        check(0, &[(1, 4294967294)], Ok("0 0 1 1 1 4294967294"));
        check(
            1000,
            &[(1, 4294967294), (100000, 1)],
            Err(r#"the subuid ranges of user 1000 ("tester") add up to more than 4294967294 ids"#),
        );
    }

    #[test]
    fn proc_map_text() {
        let ranges = [
            Range {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            Range {
                inside: 1,
                outside: 100000,
                count: 65536,
            },
        ];
        assert_eq!(map_text(&ranges), "0 1000 1\n1 100000 65536\n");
        assert_eq!(map_text(&ranges[..1]), "0 1000 1\n");
    }

    // --- compute ---------------------------------------------------------------------------------

    /// A made-up machine. Files absent from `files` do not exist; a `getsubids` call not listed in
    /// `getsubids` fails with "Error fetching ranges" like the real tool for unknown users.
    #[derive(Default)]
    struct Fake {
        files: HashMap<&'static str, Result<&'static str, i32>>,
        getsubids_env: Option<&'static str>,
        /// Programs present in `$PATH` (resolved as /usr/bin/<name>).
        programs: Vec<&'static str>,
        /// `(group, who)` → `(stdout, exit code)`.
        getsubids: HashMap<(bool, &'static str), (&'static str, i32)>,
        calls: RefCell<Vec<String>>,
    }

    impl Host for Fake {
        fn read(&self, path: &str) -> io::Result<String> {
            match self.files.get(path) {
                Some(Ok(text)) => Ok(text.to_string()),
                Some(Err(errno)) => Err(io::Error::from_raw_os_error(*errno)),
                None => Err(io::ErrorKind::NotFound.into()),
            }
        }
        fn getsubids_env(&self) -> Option<OsString> {
            self.getsubids_env.map(OsString::from)
        }
        fn look_path(&self, name: &OsStr) -> Result<PathBuf, String> {
            let name = name.to_str().unwrap();
            if name.contains('/') {
                return Ok(PathBuf::from(name));
            }
            if self.programs.contains(&name) {
                Ok(PathBuf::from(format!("/usr/bin/{name}")))
            } else {
                Err(format!(
                    "exec: {}: executable file not found in $PATH",
                    quote(name)
                ))
            }
        }
        fn getsubids(&self, exe: &Path, group: bool, who: &str) -> Result<exec::Captured, String> {
            let flag = if group { " -g" } else { "" };
            self.calls
                .borrow_mut()
                .push(format!("{}{flag} {who}", exe.display()));
            let (stdout, code, stderr) = match self.getsubids.get(&(group, who)) {
                Some(&(stdout, code)) => (stdout, code, ""),
                None => ("", 1, "Error fetching ranges\n"),
            };
            Ok(exec::Captured {
                stdout: stdout.into(),
                stderr: stderr.into(),
                status: ExitStatus::from_raw(code << 8),
            })
        }
        fn egid(&self) -> u32 {
            4242
        }
    }

    const ALL_TOOLS: [&str; 3] = ["newuidmap", "newgidmap", "getsubids"];

    fn files(subuid: &'static str, subgid: &'static str) -> Fake {
        Fake {
            files: HashMap::from([("/etc/subuid", Ok(subuid)), ("/etc/subgid", Ok(subgid))]),
            programs: ALL_TOOLS.to_vec(),
            ..Fake::default()
        }
    }

    /// The outcome of `compute_with` as text: the two argument lists (or `fallback`) and warnings.
    fn run(host: &Fake, user: &User, source: SubidSource) -> (Result<String, String>, Vec<String>) {
        let mut warnings = Vec::new();
        let got = compute_with(host, user, source, &mut |w| warnings.push(w)).map(|m| {
            let kind = if m.fallback { "fallback" } else { "newidmap" };
            format!(
                "{kind} uid[{}] gid[{}]",
                map_args(&m.uid).join(" "),
                map_args(&m.gid).join(" ")
            )
        });
        (got, warnings)
    }

    fn check(
        host: &Fake,
        user: &User,
        source: SubidSource,
        expect: Result<&str, &str>,
        warnings: &[&str],
    ) {
        let (got, warned) = run(host, user, source);
        assert_eq!(
            got,
            expect.map(str::to_string).map_err(str::to_string),
            "{source:?}"
        );
        assert_eq!(warned, warnings, "{source:?}");
    }

    const NOTE: &str =
        "falling back to a single-id map (only uid 0 is mapped; setgroups is denied)";

    #[test]
    fn static_source() {
        let t = tester();
        let host = files(
            "tester:100000:65536\n1000:300000:10\n",
            "tester:200000:65536\n",
        );
        check(
            &host,
            &t,
            SubidSource::Static,
            Ok(
                "newidmap uid[0 1000 1 1 100000 65536 65537 300000 10] gid[0 1001 1 1 200000 65536]",
            ),
            &[],
        );
        assert!(
            host.calls.borrow().is_empty(),
            "static never runs getsubids"
        );

        let host = files("other:100000:65536\n", "tester:200000:65536\n");
        let warning =
            format!(r#"no subordinate ids for user 1000 ("tester") in /etc/subuid: {NOTE}"#);
        check(
            &host,
            &t,
            SubidSource::Static,
            Ok("fallback uid[0 1000 1] gid[0 4242 1]"),
            &[&warning],
        );

        let host = files("tester:100000:65536\n", "# nobody\n");
        let warning =
            format!(r#"no subordinate ids for user 1000 ("tester") in /etc/subgid: {NOTE}"#);
        check(
            &host,
            &t,
            SubidSource::Static,
            Ok("fallback uid[0 1000 1] gid[0 4242 1]"),
            &[&warning],
        );

        let host = Fake {
            programs: ALL_TOOLS.to_vec(),
            ..Fake::default()
        };
        let warning = format!(
            r#"no subordinate ids for user 1000 ("tester") in /etc/subuid (the file does not exist): {NOTE}"#
        );
        check(
            &host,
            &t,
            SubidSource::Static,
            Ok("fallback uid[0 1000 1] gid[0 4242 1]"),
            &[&warning],
        );

        // Malformed or unreadable files stay errors.
        let host = files("tester:100000:65536\n", "tester:200000\n");
        check(
            &host,
            &t,
            SubidSource::Static,
            Err("Cannot parse subuid/gid information: Format not correct for /etc/subgid file"),
            &[],
        );
        let mut host = files("", "");
        host.files.insert("/etc/subuid", Err(13));
        check(
            &host,
            &t,
            SubidSource::Static,
            Err("open /etc/subuid: permission denied"),
            &[],
        );
    }

    #[test]
    fn missing_newidmap_tools() {
        let t = tester();
        let mut host = files("tester:100000:65536\n", "tester:200000:65536\n");
        host.programs = vec!["newgidmap"];
        let warning = format!(
            r#"cannot use newuidmap (exec: "newuidmap": executable file not found in $PATH): {NOTE}"#
        );
        check(
            &host,
            &t,
            SubidSource::Static,
            Ok("fallback uid[0 1000 1] gid[0 4242 1]"),
            &[&warning],
        );
        host.programs = vec!["newuidmap"];
        let warning = format!(
            r#"cannot use newgidmap (exec: "newgidmap": executable file not found in $PATH): {NOTE}"#
        );
        check(
            &host,
            &t,
            SubidSource::Static,
            Ok("fallback uid[0 1000 1] gid[0 4242 1]"),
            &[&warning],
        );
        // A broken file is reported even when the tools are missing.
        host.files.insert("/etc/subuid", Ok("broken\n"));
        check(
            &host,
            &t,
            SubidSource::Static,
            Err("Cannot parse subuid/gid information: Format not correct for /etc/subuid file"),
            &[],
        );
    }

    #[test]
    fn no_passwd_entry() {
        let nameless = User {
            uid: 54321,
            gid: 54321,
            name: None,
        };
        let host = files("54321:100000:65536\n", "54321:100000:65536\n");
        let warning = format!("no passwd entry for uid 54321, which newuidmap requires: {NOTE}");
        for source in [SubidSource::Auto, SubidSource::Static, SubidSource::Dynamic] {
            check(
                &host,
                &nameless,
                source,
                Ok("fallback uid[0 54321 1] gid[0 4242 1]"),
                &[&warning],
            );
        }
        assert!(host.calls.borrow().is_empty());
    }

    /// `((group, who), (stdout, exit code))`: one canned getsubids answer.
    type Canned = ((bool, &'static str), (&'static str, i32));

    fn getsubids_host(pairs: &[Canned]) -> Fake {
        Fake {
            programs: ALL_TOOLS.to_vec(),
            getsubids: pairs.iter().copied().collect(),
            ..Fake::default()
        }
    }

    #[test]
    fn dynamic_source() {
        let t = tester();
        // The usual case: by name works, by uid fails with "Error fetching ranges".
        let host = getsubids_host(&[
            ((false, "tester"), ("0: tester 100000 65536\n", 0)),
            ((true, "tester"), ("0: tester 200000 65536\n", 0)),
        ]);
        check(
            &host,
            &t,
            SubidSource::Dynamic,
            Ok("newidmap uid[0 1000 1 1 100000 65536] gid[0 1001 1 1 200000 65536]"),
            &[],
        );
        assert_eq!(
            *host.calls.borrow(),
            [
                "/usr/bin/getsubids tester",
                "/usr/bin/getsubids 1000",
                "/usr/bin/getsubids -g tester",
                "/usr/bin/getsubids -g 1000"
            ]
        );

        // Name first, then uid, duplicates dropped.
        let host = getsubids_host(&[
            (
                (false, "tester"),
                ("0: tester 100000 65536\n1: tester 300000 5\n", 0),
            ),
            ((false, "1000"), ("0: 1000 300000 5\n0: 1000 400000 7\n", 0)),
            ((true, "1000"), ("0: 1000 200000 65536\n", 0)),
        ]);
        check(
            &host,
            &t,
            SubidSource::Dynamic,
            Ok(
                "newidmap uid[0 1000 1 1 100000 65536 65537 300000 5 65542 400000 7] gid[0 1001 1 1 200000 65536]",
            ),
            &[],
        );

        // $GETSUBIDS names the program.
        let mut host = getsubids_host(&[
            ((false, "tester"), ("0: tester 100000 65536\n", 0)),
            ((true, "tester"), ("0: tester 200000 65536\n", 0)),
        ]);
        host.getsubids_env = Some("/opt/shadow/getsubids");
        check(
            &host,
            &t,
            SubidSource::Dynamic,
            Ok("newidmap uid[0 1000 1 1 100000 65536] gid[0 1001 1 1 200000 65536]"),
            &[],
        );
        assert_eq!(host.calls.borrow()[0], "/opt/shadow/getsubids tester");

        // Parse warnings carry the command and both streams.
        let host = getsubids_host(&[
            ((false, "tester"), ("0: tester 100000 65536 x\n", 0)),
            ((true, "tester"), ("0: tester 200000 65536\n", 0)),
        ]);
        check(
            &host,
            &t,
            SubidSource::Dynamic,
            Ok("newidmap uid[0 1000 1 1 100000 65536] gid[0 1001 1 1 200000 65536]"),
            &[
                r#"Error while parsing the result of [/usr/bin/getsubids tester]: line 1: line "0: tester 100000 65536 x" contains unknown fields (stdout="0: tester 100000 65536 x\n", stderr="")"#,
            ],
        );

        // Empty lists fall back instead of failing later in newuidmap.
        let host = getsubids_host(&[
            ((false, "tester"), ("0: tester 100000 65536\n", 0)),
            ((true, "tester"), ("", 0)),
        ]);
        let warning = format!(
            r#"no subordinate ids for user 1000 ("tester") from "/usr/bin/getsubids -g tester": {NOTE}"#
        );
        check(
            &host,
            &t,
            SubidSource::Dynamic,
            Ok("fallback uid[0 1000 1] gid[0 4242 1]"),
            &[&warning],
        );
    }

    #[test]
    fn dynamic_source_errors() {
        let t = tester();
        let mut host = getsubids_host(&[]);
        host.programs = vec!["newuidmap", "newgidmap"];
        check(
            &host,
            &t,
            SubidSource::Dynamic,
            Err(r#"subid-source:dynamic: exec: "getsubids": executable file not found in $PATH"#),
            &[],
        );

        let fetch = |who: &str, g: &str| {
            format!(
                r#"failed to exec [/usr/bin/getsubids{g} {who}]: exit status 1 (stdout="", stderr="Error fetching ranges\n")"#
            )
        };
        let host = getsubids_host(&[]);
        let expect = format!(
            r#"subid-source:dynamic: failed to get subuids by the username "tester": {}; also failed to get subuids by the UID 1000: {}"#,
            fetch("tester", ""),
            fetch("1000", "")
        );
        check(&host, &t, SubidSource::Dynamic, Err(&expect), &[]);

        // The gid message keeps upstream's "subuids" in its second half.
        let host = getsubids_host(&[((false, "tester"), ("0: tester 100000 65536\n", 0))]);
        let expect = format!(
            r#"subid-source:dynamic: failed to get subgids by the username "tester": {}; also failed to get subuids by the UID 1000: {}"#,
            fetch("tester", " -g"),
            fetch("1000", " -g")
        );
        check(&host, &t, SubidSource::Dynamic, Err(&expect), &[]);

        // A parse error counts as a failed run; the other run can still succeed.
        let host = getsubids_host(&[
            ((false, "tester"), ("garbage\n", 0)),
            ((false, "1000"), ("0: 1000 100000 65536\n", 0)),
            ((true, "tester"), ("0: tester 200000 65536\n", 0)),
        ]);
        check(
            &host,
            &t,
            SubidSource::Dynamic,
            Ok("newidmap uid[0 1000 1 1 100000 65536] gid[0 1001 1 1 200000 65536]"),
            &[],
        );
        let host = getsubids_host(&[((false, "tester"), ("garbage\n", 0))]);
        let expect = format!(
            r#"subid-source:dynamic: failed to get subuids by the username "tester": line 1: unparsable line "garbage"; also failed to get subuids by the UID 1000: {}"#,
            fetch("1000", "")
        );
        check(&host, &t, SubidSource::Dynamic, Err(&expect), &[]);
    }

    #[test]
    fn auto_source() {
        let t = tester();
        let dynamic_ok = [
            ((false, "tester"), ("0: tester 100000 65536\n", 0)),
            ((true, "tester"), ("0: tester 200000 65536\n", 0)),
        ];
        // getsubids wins when it lists both.
        let mut host = getsubids_host(&dynamic_ok);
        host.files.insert("/etc/subuid", Ok("tester:500000:10\n"));
        host.files.insert("/etc/subgid", Ok("tester:600000:10\n"));
        check(
            &host,
            &t,
            SubidSource::Auto,
            Ok("newidmap uid[0 1000 1 1 100000 65536] gid[0 1001 1 1 200000 65536]"),
            &[],
        );

        // getsubids missing, failing or listing only uids: the files decide.
        let files_ok = "newidmap uid[0 1000 1 1 500000 10] gid[0 1001 1 1 600000 10]";
        let mut host = files("tester:500000:10\n", "tester:600000:10\n");
        host.programs = vec!["newuidmap", "newgidmap"];
        check(&host, &t, SubidSource::Auto, Ok(files_ok), &[]);
        let host = files("tester:500000:10\n", "tester:600000:10\n");
        check(&host, &t, SubidSource::Auto, Ok(files_ok), &[]);
        let mut host = files("tester:500000:10\n", "tester:600000:10\n");
        host.getsubids
            .insert((false, "tester"), ("0: tester 100000 65536\n", 0));
        check(&host, &t, SubidSource::Auto, Ok(files_ok), &[]);

        // Neither source has ranges: one warning, about the files.
        let host = files("", "");
        let warning =
            format!(r#"no subordinate ids for user 1000 ("tester") in /etc/subuid: {NOTE}"#);
        check(
            &host,
            &t,
            SubidSource::Auto,
            Ok("fallback uid[0 1000 1] gid[0 4242 1]"),
            &[&warning],
        );

        // A broken file after a failed getsubids is still an error.
        let host = files("tester:1:2:3\n", "");
        check(
            &host,
            &t,
            SubidSource::Auto,
            Err("Cannot parse subuid/gid information: Format not correct for /etc/subuid file"),
            &[],
        );
    }

    #[test]
    fn too_many_subids() {
        let host = files("tester:1:4294967290\ntester:100:10\n", "tester:1:1\n");
        check(
            &host,
            &tester(),
            SubidSource::Static,
            Err(r#"the subuid ranges of user 1000 ("tester") add up to more than 4294967294 ids"#),
            &[],
        );
    }

    // --- apply -----------------------------------------------------------------------------------

    #[test]
    fn apply_fallback_reports_the_file() {
        // No such process: setgroups is skipped like on old kernels, then uid_map fails.
        let maps = IdMaps {
            uid: vec![Range {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            gid: vec![Range {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            fallback: true,
        };
        let pid = i32::MAX;
        assert_eq!(
            apply(pid, &maps),
            Err(format!(
                "failed to setup UID/GID map: writing /proc/{pid}/uid_map: no such file or directory"
            ))
        );
    }

    #[test]
    fn nsswitch_subid_database() {
        for (text, files) in [
            ("passwd: files\ngroup: files\n", true),
            ("subid: files\n", true),
            ("# subid: sss\nsubid:   files  # local\n", true),
            ("subid: sss\n", false),
            ("subid: files sss\n", false),
            ("subid: files [NOTFOUND=return]\n", true),
        ] {
            assert_eq!(super::subid_service_is_files(text), files, "{text:?}");
        }
    }
}
