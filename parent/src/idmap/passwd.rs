//! The user: the real uid with its name and primary gid, read from /etc/passwd (never through NSS).

use std::io;

use crate::exec;

use super::subid::atoi;
use super::{PASSWD_PATH, User};

/// The real uid with its name and primary gid from /etc/passwd (parsed here, never via NSS).
///
/// A uid without a passwd entry (for example one set with `setpriv --reuid`) is not an error,
/// unlike upstream: `name` is `None` and `gid` is the real gid.
///
/// # Errors
/// Only when /etc/passwd exists but cannot be read: `open /etc/passwd: permission denied`.
pub(crate) fn current_user() -> Result<User, String> {
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
pub(crate) fn parse_passwd(text: &str, uid: u32) -> Option<(String, u32)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
