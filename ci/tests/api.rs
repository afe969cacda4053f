//! The REST API on `$ROOTLESSKIT_STATE_DIR/api.sock` as clients see it, run as the unprivileged
//! test user: our `rootlessctl` and, when installed, upstream's Go `rootlessctl` (Debian's
//! `rootlesskit` package) talking to our server from inside the target.

use std::path::Path;
use std::time::Duration;

use ci::{Run, ok, rootlesskit, skip};

fn ctl() -> String {
    ci::bin_dir().join("rootlessctl").display().to_string()
}

#[test]
fn info_over_the_socket_for_each_network() {
    for (flags, want_net) in [
        (&["--net=host"][..], None),
        (&["--net=none"][..], Some("- Network Driver: none\n")),
    ] {
        let script = format!(
            "{c} info; stat -c %a $ROOTLESSKIT_STATE_DIR/api.sock; {c} list-ports",
            c = ctl()
        );
        let o = rootlesskit(flags.iter().copied().chain(["sh", "-c", script.as_str()])).output();
        // list-ports fails without a port driver, and the shell passes that on.
        assert_eq!(o.code, 1, "{flags:?}: {}", o.stderr);
        assert!(
            o.stdout.starts_with(
                "- REST API version: 1.1.1\n- Implementation version: 3.0.1\n- State Directory: /"
            ),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains("- Child PID: "), "{}", o.stdout);
        match want_net {
            Some(line) => assert!(o.stdout.contains(line), "{}", o.stdout),
            None => assert!(!o.stdout.contains("Network Driver"), "{}", o.stdout),
        }
        assert!(o.stdout.contains("\n600\n"), "socket mode: {}", o.stdout);
        assert!(
            o.stderr.contains("error: no PortDriver is available"),
            "{}",
            o.stderr
        );
    }
}

#[test]
fn info_json_with_slirp4netns_and_the_go_client() {
    if !Path::new("/usr/bin/slirp4netns").exists() {
        skip!("slirp4netns is not installed");
    }
    let go = Path::new("/usr/bin/rootlessctl").exists();
    let script = format!(
        "{c} info --json; echo ---; {g}",
        c = ctl(),
        g = if go {
            "/usr/bin/rootlessctl info"
        } else {
            "true"
        }
    );
    let o = rootlesskit([
        "--net=slirp4netns",
        "--disable-host-loopback",
        "sh",
        "-c",
        script.as_str(),
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let (json, go_out) = o.stdout.split_once("---\n").unwrap();
    for want in [
        "\"apiVersion\": \"1.1.1\"",
        "\"version\": \"3.0.1\"",
        "\"driver\": \"slirp4netns\"",
        "\"childIP\": \"10.0.2.100\"",
        "\"10.0.2.3\"",
    ] {
        assert!(json.contains(want), "{want} missing in {json}");
    }
    assert!(!json.contains("portDriver"), "{json}");
    if go {
        assert!(
            go_out
                .contains("- Network Driver: slirp4netns\n  - DNS: [10.0.2.3]\n  - IP: 10.0.2.100"),
            "{go_out}"
        );
    } else {
        skip!("upstream's Go rootlessctl is not installed");
    }
}

#[test]
fn rootlessctl_needs_a_socket() {
    let o = Run::bin("rootlessctl")
        .args(["info"])
        .env_remove("ROOTLESSKIT_STATE_DIR")
        .output();
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr.trim(),
        "error: please specify --socket or set $ROOTLESSKIT_STATE_DIR"
    );
    let o = Run::bin("rootlessctl")
        .args(["--socket=/nonexistent/api.sock", "info"])
        .output();
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("/nonexistent/api.sock"), "{}", o.stderr);
}
