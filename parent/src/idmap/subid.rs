//! The parsers of subordinate ids, with upstream's error texts: Go's `Atoi`, the lines of
//! /etc/subuid and /etc/subgid, and what `getsubids` prints.

use crate::exec::quote;

use super::User;

/// Go's `strconv.Atoi` narrowed to `u32`: optional sign, then ASCII digits only.
///
/// # Errors
/// Go's text: `strconv.Atoi: parsing "x": invalid syntax`, or `value out of range` for numbers
/// that are not valid ids (negative or above 4294967295).
pub(super) fn atoi(s: &str) -> Result<u32, String> {
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
pub(super) fn check_range(start: u32, count: u32) -> Result<(), String> {
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
pub(crate) fn parse_subid_file(
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
#[cfg(any(test, fuzzing))]
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
pub(super) fn parse_getsubids_warn(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::tests::tester;

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
