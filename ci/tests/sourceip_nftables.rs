//! `--source-ip-transparent` with the builtin port driver leaves one nf_tables table in the
//! namespace where the ports' sockets are made, `inet rootlesskit`, which the child adds over
//! netlink (no `nft` or `iptables` program runs; `ci/tests/sourceip_sid.rs` shows what it is
//! for). Seen from inside with `nft list ruleset` (nftables on the host, as root of the user
//! namespace): in the child's namespace, in the detached one with `--detach-netns`, and not at
//! all with `--source-ip-transparent=false`.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use ci::{Scratch, rootlesskit, skip};

/// The ruleset `nft list ruleset` prints inside, with `--net=slirp4netns --port-driver=builtin`
/// and `extra` flags; `list` is the shell command that runs it there.
fn ruleset(name: &str, extra: &[&str], list: &str) -> Option<String> {
    if !ci::have("slirp4netns") || !ci::have("nft") {
        return None;
    }
    let dir = Scratch::new(name);
    let state = dir.join("state");
    let mut args = vec![
        "--net=slirp4netns".to_string(),
        "--port-driver=builtin".to_string(),
        format!("--state-dir={}", state.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["sh".into(), "-c".into(), list.into()]);
    let o = rootlesskit(args).output();
    ci::ok(&o);
    assert!(
        !o.stderr.contains("nf_tables"),
        "a warning about nf_tables: {}",
        o.stderr
    );
    Some(o.stdout)
}

/// What `nft list ruleset` (nftables 1.0.6) shows of our table.
const TABLE: &str = "table inet rootlesskit {
\tchain output {
\t\ttype route hook output priority mangle; policy accept;
\t\tmeta mark 0x00000064 ct direction original ct mark set 0x00000064 meta mark set 0x00000000
\t}

\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tct mark 0x00000064 meta mark set 0x00000064
\t}
}
";

#[test]
fn the_table_is_in_the_childs_namespace() {
    let Some(got) = ruleset("nft-child", &[], "nft list ruleset") else {
        skip!("slirp4netns or nft is not installed");
    };
    assert_eq!(got, TABLE);
}

#[test]
fn the_table_is_in_the_detached_namespace() {
    // The target runs in the host's network namespace; the ports' sockets are made in the file's.
    let list = r#"nsenter --net="$ROOTLESSKIT_STATE_DIR/netns" nft list ruleset"#;
    let Some(got) = ruleset("nft-detached", &["--detach-netns"], list) else {
        skip!("slirp4netns or nft is not installed");
    };
    assert_eq!(got, TABLE);
}

#[test]
fn no_table_without_transparency() {
    let Some(got) = ruleset(
        "nft-off",
        &["--source-ip-transparent=false"],
        "nft list ruleset",
    ) else {
        skip!("slirp4netns or nft is not installed");
    };
    assert_eq!(got, "");
}
