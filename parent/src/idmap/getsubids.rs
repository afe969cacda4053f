//! shadow's `getsubids`: parsing its output with upstream's texts, and `--subid-source=dynamic`, which runs it.

use std::ffi::OsStr;
use std::path::Path;

use crate::exec::{self, quote};

use super::maps::{Host, Subids};
use super::subid::{atoi, check_range};

/// The ranges printed by `getsubids [-g] <user>`: `(start, count)` pairs.
///
/// Lines look like `0: tester 100000 65536`. Warnings (extra fields) are dropped here; see
/// `parse_getsubids_warn`.
///
/// # Errors
/// `line 2: unparsable line "..."` (upstream's text, lines counted from 1 including skipped ones),
/// `line 2: unparsable line "...": failed to Atoi("x"): strconv.Atoi: parsing "x": invalid syntax`,
/// and ours for a count of 0 or a range past the last id: `line 2: invalid range "...": ...`.
pub(crate) fn parse_getsubids(text: &str) -> Result<Vec<(u32, u32)>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
