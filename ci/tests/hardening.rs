//! Hostile input and leftovers, run as the unprivileged test user: a slow-loris flood on the API
//! socket, state dirs other users can write in (planted symlinks, foreign owners, no sticky
//! bit), a symlinked state dir, and zombies of the network driver under a subreaper.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ci::{Scratch, have, ok, rootlesskit, skip, test_user, tun_usable, wait_until};

/// Whether the test user (as which rootlesskit runs) is another user than us, so the test can
/// play the other local user.
fn can_play_another_user() -> bool {
    test_user().is_some_and(|u| u.switch)
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory `name` in `d`, owned by the test user, with `mode`.
fn user_dir(d: &Scratch, name: &str, mode: u32) -> PathBuf {
    let u = test_user().unwrap();
    let p = d.join(name);
    fs::create_dir_all(&p).unwrap();
    chown(&p, u.uid, u.gid);
    chmod(&p, mode);
    p
}

fn entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// One `GET /v1/info` on a new connection: how long until the whole answer was in, or `None`
/// when none came within `limit`.
fn timed_info(sock: &Path, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out);
    (text.starts_with("HTTP/1.1 200 OK") && text.contains("\"apiVersion\"") && took < limit)
        .then_some(took)
}

#[test]
fn a_slowloris_flood_does_not_keep_a_good_api_client_waiting() {
    let d = Scratch::new("hard-loris");
    let sd = d.join("sd");
    let mut child = rootlesskit([
        format!("--state-dir={}", sd.display()).as_str(),
        "sleep",
        "60",
    ])
    .spawn();
    let sock = sd.join("api.sock");
    assert!(
        wait_until(Duration::from_secs(20), || sd.join("child_pid").exists()),
        "rootlesskit did not come up"
    );
    // 100 connections, each with half a request head, held open: more than there are slots.
    let held: Vec<UnixStream> = (0..100)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(b"GET /v1/info HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A good client is answered in milliseconds. The median of five tries keeps a loaded
    // machine's hiccup from failing the test; before, every try waited for a slot to time out
    // (10 s), so the 2 s read limit fails it either way.
    let mut took: Vec<Duration> = (0..5)
        .map(|_| timed_info(&sock, Duration::from_secs(2)).unwrap_or(Duration::MAX))
        .collect();
    took.sort();
    let _ = child.kill();
    let _ = child.wait();
    drop(held);
    eprintln!("GET /v1/info during the flood: {took:?}");
    assert!(
        took[2] < Duration::from_millis(100),
        "GET /v1/info during a slow-loris flood took {took:?}"
    );
}

/// Runs `rootlesskit --state-dir=<dir> --net=slirp4netns true` while another user keeps
/// planting `resolv.conf` and `hosts` symlinks to the victims in `dir`.
fn run_with_planter(dir: &Path, victims: &[PathBuf; 2]) -> ci::Output {
    let stop = Arc::new(AtomicBool::new(false));
    let planter = {
        let (stop, dir, victims) = (stop.clone(), dir.to_path_buf(), victims.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::os::unix::fs::symlink(&victims[0], dir.join("resolv.conf"));
                let _ = std::os::unix::fs::symlink(&victims[1], dir.join("hosts"));
                std::thread::yield_now();
            }
        })
    };
    let o = rootlesskit([
        format!("--state-dir={}", dir.display()).as_str(),
        "--net=slirp4netns",
        "true",
    ])
    .timeout(Duration::from_secs(30))
    .output();
    stop.store(true, Ordering::Relaxed);
    planter.join().unwrap();
    o
}

#[test]
fn planted_symlinks_in_a_shared_state_dir_are_never_followed() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    if !can_play_another_user() {
        skip!("needs root to play the other local user");
    }
    let u = test_user().unwrap();
    let d = Scratch::new("hard-plant");
    let victims = [d.join("victim-resolv"), d.join("victim-hosts")];
    for v in &victims {
        fs::write(v, "precious\n").unwrap();
        chown(v, u.uid, u.gid);
        chmod(v, 0o644);
    }
    // World-writable without the sticky bit: refused before anything is written. Sticky (like
    // /tmp, and the user's own): the symlinks may be planted after the start's wipe, and are
    // not followed then.
    for mode in [0o777, 0o1777] {
        let shared = user_dir(&d, &format!("shared-{mode:o}"), mode);
        let o = run_with_planter(&shared, &victims);
        for v in &victims {
            assert_eq!(
                fs::read_to_string(v).unwrap(),
                "precious\n",
                "mode {mode:o}: {} was written through a planted symlink; exit {}: {}",
                v.display(),
                o.code,
                o.stderr
            );
        }
        if mode == 0o777 {
            assert_eq!(o.code, 1, "{}", o.stderr);
            assert!(o.stderr.contains("refusing the state dir"), "{}", o.stderr);
        } else {
            // The planter won the race (it nearly always does) or lost it.
            assert!(
                o.code == 0 || o.stderr.contains(": file exists\n"),
                "exit {}: {}",
                o.code,
                o.stderr
            );
        }
    }
}

#[test]
fn state_dirs_others_could_write_in_are_refused() {
    if !can_play_another_user() {
        skip!("needs root to make directories of other owners");
    }
    let u = test_user().unwrap();
    let d = Scratch::new("hard-foreign");
    // (owner uid, gid, mode, what the one-line error says)
    let cases = [
        (
            0,
            0,
            0o1777,
            format!("owned by uid 0, not by uid {}", u.uid),
        ),
        (
            54321,
            54321,
            0o777,
            format!("owned by uid 54321, not by uid {}", u.uid),
        ),
        (
            u.uid,
            u.gid,
            0o777,
            "writable by others (mode 0777) and not sticky".to_string(),
        ),
        (
            u.uid,
            u.gid,
            0o770,
            "writable by others (mode 0770) and not sticky".to_string(),
        ),
    ];
    for (i, (uid, gid, mode, why)) in cases.iter().enumerate() {
        let dir = d.join(&format!("sd{i}"));
        fs::create_dir(&dir).unwrap();
        chown(&dir, *uid, *gid);
        chmod(&dir, *mode);
        let o = rootlesskit([format!("--state-dir={}", dir.display()).as_str(), "true"]).output();
        assert_eq!(o.code, 1, "uid {uid} mode {mode:o}: {}", o.stderr);
        assert_eq!(
            o.stderr,
            format!(
                "[rootlesskit:parent] error: refusing the state dir {}: it is {why}\n",
                dir.display()
            )
        );
        assert_eq!(entries(&dir), Vec::<String>::new(), "something was created");
    }
    // Another user's symlink to a directory of ours: following it would wipe that directory.
    let mine = user_dir(&d, "precious-dir", 0o700);
    fs::write(mine.join("data"), "precious\n").unwrap();
    let link = d.join("planted-link");
    std::os::unix::fs::symlink(&mine, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(54321), Some(54321)).unwrap();
    let o = rootlesskit([format!("--state-dir={}", link.display()).as_str(), "true"]).output();
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        o.stderr,
        format!(
            "[rootlesskit:parent] error: refusing the state dir {}: it is a symlink owned by uid 54321, not by uid {}\n",
            link.display(),
            u.uid
        )
    );
    assert_eq!(entries(&mine), ["data"]);
    // Still fine: a fresh directory (made by us), and one of ours inside sticky /tmp-like dir.
    let sticky = d.join("sticky");
    fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    for dir in [d.join("fresh/sd"), sticky.join("mine")] {
        let o = rootlesskit([format!("--state-dir={}", dir.display()).as_str(), "true"]).output();
        ok(&o);
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

#[test]
fn a_symlinked_state_dir_is_used_through_its_real_path_and_cleaned() {
    let d = Scratch::new("hard-link");
    let real = user_dir(&d, "real", 0o700);
    let link = d.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = rootlesskit([
        format!("--state-dir={}", link.display()).as_str(),
        "sh",
        "-c",
        "echo $ROOTLESSKIT_STATE_DIR; ls $ROOTLESSKIT_STATE_DIR",
    ])
    .output();
    ok(&o);
    // The target sees the path as given (upstream's `filepath.Abs`, no symlink resolved), and
    // its files are there.
    let mut lines = o.stdout.lines();
    assert_eq!(lines.next(), Some(link.display().to_string().as_str()));
    let listed: Vec<&str> = lines.collect();
    assert!(
        listed.contains(&"api.sock") && listed.contains(&"lock"),
        "{listed:?}"
    );
    // Nothing stays behind in the link's target; the link goes as upstream removes it.
    assert!(
        !real.exists() || entries(&real).is_empty(),
        "left in the link's target: {:?}",
        entries(&real)
    );
    assert!(
        fs::symlink_metadata(&link).is_err(),
        "the link is still there"
    );
}

/// Zombie children of this process named `comm`.
fn zombie_children(comm: &str) -> Vec<u32> {
    let me = std::process::id();
    ci::children_of(me)
        .into_iter()
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let name = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map(|(n, _)| n)
                .unwrap_or("");
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            name == comm && state == Some("Z")
        })
        .collect()
}

#[test]
fn slirp4netns_leaves_no_zombie_under_a_subreaper() {
    if !have("slirp4netns") || !tun_usable() {
        skip!("slirp4netns or /dev/net/tun is not available");
    }
    // Orphans of our runs (rootlesskit's children, once it exits) come to us, and we do not
    // reap them: whatever rootlesskit left unreaped stays visible as our zombie child.
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    for _ in 0..20 {
        let o = rootlesskit(["--net=slirp4netns", "true"])
            .timeout(Duration::from_secs(30))
            .output();
        ok(&o);
    }
    // A killed slirp4netns takes a few ms to end; give a left-behind one time to turn zombie.
    std::thread::sleep(Duration::from_millis(1500));
    let zombies = zombie_children("slirp4netns");
    for pid in &zombies {
        let _ = rustix::process::waitpid(
            rustix::process::Pid::from_raw(*pid as i32),
            rustix::process::WaitOptions::NOHANG,
        );
    }
    assert_eq!(
        zombies,
        Vec::<u32>::new(),
        "zombie slirp4netns left after 20 runs"
    );
}
