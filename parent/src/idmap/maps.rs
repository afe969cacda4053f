//! Computing the maps: the `Host` trait (faked in tests), `--subid-source` auto/static/dynamic,
//! stacking ranges from 1, the single-id fallback, and the newuidmap arguments.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use crate::cli::SubidSource;
use crate::exec::{self, quote};

use super::sources::{dynamic_subids, static_subids};
use super::{FALLBACK_NOTE, IdMaps, Range, User};

/// The arguments for newuidmap/newgidmap after the pid: `inside outside count` per range.
pub(super) fn map_args(ranges: &[Range]) -> Vec<String> {
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
pub(super) fn who(user: &User) -> String {
    format!(
        "{} ({})",
        user.uid,
        quote(user.name.as_deref().unwrap_or(""))
    )
}

/// What `compute` needs from the machine; faked in tests.
pub(super) trait Host {
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
pub(super) enum Subids {
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
pub(crate) fn compute(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::tests::tester;

    use std::cell::RefCell;

    use std::collections::HashMap;

    use std::os::unix::process::ExitStatusExt;

    use std::process::ExitStatus;

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
