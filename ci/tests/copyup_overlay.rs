//! `--copy-up-mode=overlay` as a user sees it, run as the unprivileged test user: the copied-up
//! directory is an overlayfs showing the host's own files (not symlinks), writes stay in the
//! namespace, rootlesskit's `resolv.conf` and `hosts` are bound over the overlay's, a kernel
//! refusal is one line, and the default mode is still upstream's tmpfs of symlinks.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ci::{Scratch, assert_rejected, have, ok, rootlesskit, skip, test_user, tun_usable};

/// The parts of a script's output, split at lines that say `--`.
fn parts(stdout: &str) -> Vec<&str> {
    stdout.split("--\n").collect()
}

/// Whether a mountinfo text has a mount of type `fstype` at `point` or below it.
fn mounted_at_or_below(mountinfo: &str, point: &str, fstype: &str) -> bool {
    mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(dash) = f.iter().position(|&x| x == "-") else {
            return false;
        };
        let at = f.get(4).copied().unwrap_or("");
        let below = at == point || at.starts_with(&format!("{point}/"));
        below && f.get(dash + 1) == Some(&fstype)
    })
}

#[test]
fn overlay_etc_shows_the_hosts_files_and_keeps_writes_inside() {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let o = rootlesskit([
        "--copy-up-mode=overlay",
        "--copy-up=/etc",
        "sh",
        "-c",
        "stat -f -c %T /etc; stat -c %F /etc/passwd; [ -L /etc/ssl ] && echo ssl-link || echo ssl-dir; \
         echo --; cat /etc/passwd; echo --; \
         echo made > /etc/rkrs-overlay-new && cat /etc/rkrs-overlay-new; \
         sed -i 's/^root:/rkrs-edited:/' /etc/passwd && head -n 1 /etc/passwd | cut -d: -f1; \
         echo --; cat /proc/self/mountinfo",
    ])
    .output();
    ok(&o);
    let p = parts(&o.stdout);
    let l: Vec<&str> = p[0].lines().collect();
    assert_eq!(l[0], "overlayfs", "{}", o.stdout);
    assert_eq!(l[1], "regular file", "/etc/passwd must not be a symlink");
    assert_eq!(l[2], "ssl-dir");
    assert_eq!(
        p[1], passwd,
        "the host's /etc/passwd, read through the overlay"
    );
    let l: Vec<&str> = p[2].lines().collect();
    assert_eq!(l, ["made", "rkrs-edited"], "{}", o.stderr);
    // The upper layer's tmpfs is reachable by no path in the namespace: nothing but the overlay is
    // mounted at or below /etc.
    assert!(!mounted_at_or_below(p[3], "/etc", "tmpfs"), "{}", p[3]);
    assert!(mounted_at_or_below(p[3], "/etc", "overlay"), "{}", p[3]);
    // The host's /etc is untouched.
    assert!(!Path::new("/etc/rkrs-overlay-new").exists());
    assert_eq!(fs::read_to_string("/etc/passwd").unwrap(), passwd);
}

#[test]
fn overlay_etc_gets_rootlesskits_resolv_conf_and_hosts() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    let host_resolv = fs::read("/etc/resolv.conf").ok();
    let host_hosts = fs::read("/etc/hosts").ok();
    let o = rootlesskit([
        "--net=slirp4netns",
        "--disable-host-loopback",
        "--copy-up-mode=overlay",
        "--copy-up=/etc",
        "sh",
        "-c",
        "stat -f -c %T /etc; echo --; cat /etc/resolv.conf; echo --; tail -n 2 /etc/hosts",
    ])
    .timeout(Duration::from_secs(30))
    .output();
    ok(&o);
    let p = parts(&o.stdout);
    assert_eq!(p[0], "overlayfs\n");
    assert_eq!(p[1], "nameserver 10.0.2.3\n");
    let l: Vec<&str> = p[2].lines().collect();
    assert!(
        l.len() == 2 && l[0].starts_with("127.0.0.1 ") && l[1].starts_with("::1 "),
        "{l:?}"
    );
    assert_eq!(fs::read("/etc/resolv.conf").ok(), host_resolv);
    assert_eq!(fs::read("/etc/hosts").ok(), host_hosts);
}

#[test]
fn overlay_second_directory_copies_up_on_write() {
    let d = Scratch::new("copyup-overlay");
    let f = d.join("file");
    fs::write(&f, "orig\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    if let Some(u) = test_user()
        && u.switch
    {
        std::os::unix::fs::chown(&f, Some(u.uid), Some(u.gid)).unwrap();
    }
    let dir = d.path.to_str().unwrap();
    let script = format!(
        "cd {dir} && stat -f -c %T . && echo more >> file && cat file && echo new > other && \
         rm file && ls"
    );
    let copy_up = format!("--copy-up={dir}");
    let o = rootlesskit([
        "--copy-up-mode=overlay",
        "--copy-up=/etc",
        copy_up.as_str(),
        "sh",
        "-c",
        script.as_str(),
    ])
    .output();
    ok(&o);
    assert_eq!(o.stdout, "overlayfs\norig\nmore\nother\n");
    // On the host: the file as it was, and nothing new.
    assert_eq!(fs::read_to_string(&f).unwrap(), "orig\n");
    let names: Vec<_> = fs::read_dir(&d.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["file"]);
}

#[test]
fn overlay_refused_by_the_kernel_is_one_line_and_leaves_nothing() {
    let tmp = Scratch::new("copyup-overlay-refused");
    // procfs cannot be a lower layer of an overlay made in a user namespace.
    let o = rootlesskit(["--copy-up-mode=overlay", "--copy-up=/proc/sys", "true"])
        .env("TMPDIR", tmp.path.to_str().unwrap())
        .timeout(Duration::from_secs(30))
        .output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    let errors: Vec<&str> = o.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{}", o.stderr);
    assert!(
        errors[0].contains("failed to copy-up /proc/sys with overlayfs: "),
        "{}",
        o.stderr
    );
    assert_eq!(
        fs::read_dir(&tmp.path).unwrap().count(),
        0,
        "a state dir was left"
    );
}

#[test]
fn modes_are_checked_and_the_default_stays_tmpfs_with_symlinks() {
    let script = "stat -f -c %T /etc; [ -L /etc/ssl ] && echo ssl-link || echo ssl-dir";
    let o = rootlesskit([
        "--copy-up-mode=overlay",
        "--copy-up=/etc",
        "sh",
        "-c",
        script,
    ])
    .output();
    ok(&o);
    assert_eq!(o.stdout, "overlayfs\nssl-dir\n");
    // What the launch scripts test for, without the flag and with upstream's name for it.
    for mode in [None, Some("--copy-up-mode=tmpfs+symlink")] {
        let mut args = vec!["--copy-up=/etc", "sh", "-c", script];
        if let Some(m) = mode {
            args.insert(0, m);
        }
        let o = rootlesskit(args).output();
        ok(&o);
        assert_eq!(o.stdout, "tmpfs\nssl-link\n", "{mode:?}");
    }
    let tmp = Scratch::new("copyup-overlay-bad-mode");
    assert_rejected(
        &["--copy-up-mode=overlayfs", "--copy-up=/etc", "true"],
        "unknown copy-up mode: overlayfs",
        &tmp.path,
    );
}

/// The line of `rootlesskit --check` for `name`.
fn check_line(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|r| r.starts_with(&format!("{name} ")))
        })
        .unwrap_or_else(|| panic!("no {name} line:\n{stdout}"))
        .to_owned()
}

#[test]
fn check_says_whether_overlay_copy_up_works() {
    let s = Scratch::new("copyup-overlay-check");
    let o = rootlesskit(["--check"])
        .env("TMPDIR", s.path.to_str().unwrap())
        .output();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        check_line(&o.stdout, "overlayfs"),
        "ok    overlayfs      unprivileged overlayfs: --copy-up-mode=overlay --copy-up=/etc works"
    );
    assert_eq!(fs::read_dir(&s.path).unwrap().count(), 0);
}

/// A mount below /etc (as a container runtime makes for /etc/hosts), in a mount namespace of this
/// test only: overlayfs refuses such a lower directory, and the check warns without failing.
#[test]
fn check_warns_when_a_mount_below_etc_stops_overlay() {
    if !ci::am_root() || !have("unshare") {
        skip!("needs root and unshare(1) for a private mount namespace");
    }
    let hostname = Path::new("/etc/hostname");
    let out = ci::rootlesskit_over_bind(hostname, hostname, &["--check"])
        .expect("root and unshare, checked above")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let l = check_line(&stdout, "overlayfs");
    assert!(
        l.starts_with(
            "warn  overlayfs      unprivileged overlayfs: failed to copy-up /etc with overlayfs: "
        ) && l.contains("; hint: --copy-up-mode=overlay needs"),
        "{l}"
    );
}

/// A directory named through a symlink (`/var/run` → `/run` on most hosts) is copied up where the
/// symlink points, as `tmpfs+symlink` does, and the symlink stays.
#[test]
fn overlay_follows_a_symlinked_directory() {
    if !fs::symlink_metadata("/var/run").is_ok_and(|m| m.file_type().is_symlink())
        || !fs::metadata("/var/run").is_ok_and(|m| m.is_dir())
    {
        skip!("/var/run is not a symlink to a directory here");
    }
    let o = rootlesskit([
        "--copy-up-mode=overlay",
        "--copy-up=/var/run",
        "sh",
        "-c",
        "stat -f -c %T /var/run/; [ -L /var/run ] && echo link; touch /var/run/rkrs-overlay && echo made",
    ])
    .output();
    ok(&o);
    assert_eq!(o.stdout, "overlayfs\nlink\nmade\n");
    assert!(!Path::new("/var/run/rkrs-overlay").exists());
}

/// A path with characters overlayfs's option string gives meaning to (`:` `\` `=`) is copied up like
/// any other: the layers are never named by the user's path. (A `,` cannot reach the child: the
/// `--copy-up` list is split at commas, as upstream's.)
#[test]
fn overlay_takes_paths_with_option_characters() {
    let d = Scratch::new("copyup:over\\lay=x");
    let dir = d.path.to_str().unwrap();
    let copy_up = format!("--copy-up={dir}");
    let script = format!("cd '{dir}' && stat -f -c %T . && echo in > new && cat new");
    let o = rootlesskit([
        "--copy-up-mode=overlay",
        copy_up.as_str(),
        "sh",
        "-c",
        script.as_str(),
    ])
    .output();
    ok(&o);
    assert_eq!(o.stdout, "overlayfs\nin\n");
    assert_eq!(fs::read_dir(&d.path).unwrap().count(), 0);
}
