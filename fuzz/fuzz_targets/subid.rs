//! Fuzz target for the id-map parsers: /etc/subuid and /etc/subgid, getsubids output, /etc/passwd.
//! None of them may panic on any input; each result is also checked against the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parent::idmap::{User, parse_getsubids, parse_passwd, parse_subid_file};

fuzz_target!(|data: &[u8]| {
    // The first four bytes pick the uid, so uid matches happen as often as name matches.
    let (uid, text) = match data {
        [a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) % 2048, rest),
        _ => (1000, data),
    };
    let text = String::from_utf8_lossy(text);

    let users = [
        User {
            uid,
            gid: uid,
            name: Some("tester".to_string()),
        },
        User {
            uid,
            gid: uid,
            name: None,
        },
        User {
            uid,
            gid: uid,
            name: Some(String::new()),
        },
    ];
    for user in &users {
        if let Ok(ranges) = parse_subid_file(&text, "/etc/subuid", user) {
            for (start, count) in ranges {
                assert!(count > 0 && start.checked_add(count).is_some());
            }
        }
    }

    if let Ok(ranges) = parse_getsubids(&text) {
        for (start, count) in ranges {
            assert!(count > 0 && start.checked_add(count).is_some());
        }
    }

    if let Some((name, _gid)) = parse_passwd(&text, uid) {
        assert!(!name.is_empty() && !name.contains(':'));
    }
});
