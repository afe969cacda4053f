//! Where the subordinate ids come from: `--subid-source=static` reads /etc/subuid and /etc/subgid,
//! `--subid-source=dynamic` runs shadow's `getsubids`, with upstream's error and warning texts.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use crate::exec::{self, quote};

use super::maps::{Host, Subids};
use super::subid::{parse_getsubids_warn, parse_subid_file};
use super::{SUBGID_PATH, SUBUID_PATH, User};

/// `--subid-source=static`: /etc/subuid and /etc/subgid; a missing file holds no ranges.
pub(super) fn static_subids(host: &dyn Host, user: &User) -> Result<Subids, String> {
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
pub(super) fn dynamic_subids(
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
pub(super) fn run_getsubids(
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
