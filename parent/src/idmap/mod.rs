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

const PASSWD_PATH: &str = "/etc/passwd";
const SUBUID_PATH: &str = "/etc/subuid";
const SUBGID_PATH: &str = "/etc/subgid";
const FALLBACK_NOTE: &str =
    "falling back to a single-id map (only uid 0 is mapped; setgroups is denied)";

/// The user whose ids are mapped to root in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// Real uid of the parent.
    pub uid: u32,
    /// Primary gid from /etc/passwd, or the real gid when the uid has no passwd entry.
    pub gid: u32,
    /// Login name; `None` when the uid has no passwd entry.
    pub name: Option<String>,
}

/// One line of a uid_map/gid_map: `count` ids from `inside` in the child are `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// Both maps for the child, and whether they are the single-id fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdMaps {
    pub uid: Vec<Range>,
    pub gid: Vec<Range>,
    /// Written directly to /proc (with setgroups denied) instead of through newuidmap/newgidmap.
    pub fallback: bool,
}

mod apply;
mod maps;
mod passwd;
mod sources;
mod subid;

pub(crate) use apply::apply;
pub(crate) use maps::compute;
pub(crate) use passwd::current_user;
#[cfg(any(test, fuzzing))]
pub(crate) use passwd::parse_passwd;
#[cfg(any(test, fuzzing))]
pub(crate) use subid::{parse_getsubids, parse_subid_file};

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn tester() -> User {
        User {
            uid: 1000,
            gid: 1001,
            name: Some("tester".into()),
        }
    }
}
