//! cgroup2 evacuation (`--evacuate-cgroup2`), run by the parent outside the namespaces, plus the
//! `/proc/<pid>/mountinfo` and `/proc/<pid>/cgroup` parsers it needs.
//!
//! Moving every process of our cgroup into a sub-group lets the payload (for example dockerd with
//! `--cgroupns`) enable controllers on our group, which cgroup2's "no internal processes" rule otherwise forbids.

use std::fs;
use std::os::unix::fs::DirBuilderExt;

/// One line of `/proc/<pid>/mountinfo`, with the escaped paths decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo<'a> {
    /// Field 4: the path inside the file system that is mounted.
    pub root: String,
    /// Field 5: where it is mounted.
    pub mount_point: String,
    /// The optional fields (`shared:N`, `master:N`, ...), space separated, possibly empty.
    pub optional: &'a str,
    /// The file system type after the ` - ` separator, for example `cgroup2`.
    pub fs_type: &'a str,
    /// The mount source, for example `/dev/vda` or `none`.
    pub source: String,
}

/// Parses one mountinfo line; `None` if it does not have the documented shape.
///
/// Shape: `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub(crate) fn parse_mountinfo_line(line: &str) -> Option<MountInfo<'_>> {
    let (head, tail) = line.split_once(" - ")?;
    let mut fields = head.splitn(7, ' ');
    let _id = fields
        .next()
        .filter(|f| f.bytes().all(|b| b.is_ascii_digit()) && !f.is_empty())?;
    let _parent = fields.next()?;
    let _dev = fields.next().filter(|f| f.contains(':'))?;
    let root = unescape(fields.next()?);
    let mount_point = unescape(fields.next()?);
    let _options = fields.next()?;
    let optional = fields.next().unwrap_or("");
    let mut tail = tail.split(' ');
    let fs_type = tail.next().filter(|t| !t.is_empty())?;
    let source = unescape(tail.next()?);
    Some(MountInfo {
        root,
        mount_point,
        optional,
        fs_type,
        source,
    })
}

/// Decodes the kernel's `\ooo` octal escapes (space, tab, newline, backslash) in a mountinfo path.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct.and_then(|d| {
            u8::try_from(
                (d[0] - b'0') as u32 * 64 + (d[1] - b'0') as u32 * 8 + (d[2] - b'0') as u32,
            )
            .ok()
        }) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of every `cgroup2` file system in a mountinfo text, in file order.
pub(crate) fn cgroup2_mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect()
}

/// The cgroup2 path from a `/proc/<pid>/cgroup` text: the rest of the line starting with `0::`.
pub(crate) fn cgroup2_group(proc_pid_cgroup: &str) -> Option<&str> {
    proc_pid_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Joins and cleans like Go's `filepath.Join` for the absolute paths used here: `join("/sys/fs/cgroup", "/a/")`
/// is `/sys/fs/cgroup/a`, and an empty or `/` part adds nothing.
pub(crate) fn join(base: &str, rel: &str) -> String {
    let mut out = String::with_capacity(base.len() + rel.len() + 1);
    for part in base.split('/').chain(rel.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Checks an `--evacuate-cgroup2` group name with upstream's messages.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("got empty evacuation group name".to_owned());
    }
    if name.contains('/') {
        return Err(format!(
            "unexpected evacuation group name \"{name}\": must not contain \"/\""
        ));
    }
    Ok(())
}

/// Moves every process of `pid`'s cgroup2 group `G` into `G/<name>` and enables all of `G`'s controllers for
/// its children. Run in the parent, with `pid` normally its own pid (upstream uses `os.Getpid()`).
///
/// Soft failures come back as warning strings for the caller to print, as upstream logs them:
/// `cgroup2 is not mounted. cgroup2 evacuation is discarded.`,
/// `process is not running with cgroup2. cgroup2 evacuation is discarded.`,
/// `failed to move process <pid> to cgroup "<group>": <errno>`, `failed to enable controller "<c>": <errno>`.
/// Unlike upstream, a process without a cgroup2 group stops here instead of evacuating the root group.
///
/// # Errors
///
/// A bad name, or in Go's wording `mkdir <path>: <errno>` / `open <path>: <errno>` when the new group cannot be
/// created or the old group's files cannot be read.
pub(crate) fn evacuate(pid: i32, name: &str) -> Result<Vec<String>, String> {
    check_name(name)?;
    let mut warnings = Vec::new();
    let mountinfo = match fs::read("/proc/self/mountinfo") {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            warnings.push(format!(
                "failed to find mountpoint for cgroup2: {}",
                sys::errno::text(&e)
            ));
            String::new()
        }
    };
    let proc_cgroup = format!("/proc/{pid}/cgroup");
    let cgroup = match fs::read(&proc_cgroup) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            warnings.push(format!(
                "failed to read \"{proc_cgroup}\": {}",
                sys::errno::text(&e)
            ));
            String::new()
        }
    };
    evacuate_with(&mountinfo, &cgroup, name, &mut warnings)?;
    Ok(warnings)
}

/// [`evacuate`] given the texts of `/proc/self/mountinfo` and `/proc/<pid>/cgroup`.
fn evacuate_with(
    mountinfo: &str,
    proc_cgroup: &str,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mounts = cgroup2_mount_points(mountinfo);
    let Some(mount_point) = mounts.first() else {
        warnings.push("cgroup2 is not mounted. cgroup2 evacuation is discarded.".to_owned());
        return Ok(());
    };
    if mounts.len() != 1 {
        warnings.push(format!(
            "expected single mountpoint for cgroup2, got {}",
            mounts.len()
        ));
    }
    let Some(old_group) = cgroup2_group(proc_cgroup) else {
        warnings.push(
            "process is not running with cgroup2. cgroup2 evacuation is discarded.".to_owned(),
        );
        return Ok(());
    };
    let new_group = join(old_group, name);
    let old_path = join(mount_point, old_group);
    let new_path = join(mount_point, &new_group);

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&new_path)
        .map_err(|e| format!("mkdir {new_path}: {}", sys::errno::text(&e)))?;

    // Moving the processes out first lets us enable every controller, threaded ones included.
    let procs_path = join(&old_path, "cgroup.procs");
    let procs = fs::read_to_string(&procs_path)
        .map_err(|e| format!("open {procs_path}: {}", sys::errno::text(&e)))?;
    let new_procs = join(&new_path, "cgroup.procs");
    for pid in procs.split('\n').filter(|p| !p.is_empty() && *p != "0") {
        if let Err(e) = fs::write(&new_procs, pid) {
            warnings.push(format!(
                "failed to move process {pid} to cgroup \"{new_group}\": {}",
                sys::errno::text(&e)
            ));
        }
    }

    let controllers_path = join(&old_path, "cgroup.controllers");
    let controllers = fs::read_to_string(&controllers_path)
        .map_err(|e| format!("open {controllers_path}: {}", sys::errno::text(&e)))?;
    let subtree_control = join(&old_path, "cgroup.subtree_control");
    for controller in controllers.split_whitespace() {
        if let Err(e) = fs::write(&subtree_control, format!("+{controller}")) {
            warnings.push(format!(
                "failed to enable controller \"{controller}\": {}",
                sys::errno::text(&e)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        #[track_caller]
        fn check(line: &str, expect: Option<(&str, &str, &str, &str, &str)>) {
            let got = parse_mountinfo_line(line);
            let got = got.as_ref().map(|m| {
                (
                    &m.root[..],
                    &m.mount_point[..],
                    m.optional,
                    m.fs_type,
                    &m.source[..],
                )
            });
            assert_eq!(got, expect, "{line:?}");
        }
        check(
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
            Some(("/", "/sys/fs/cgroup/unified", "", "cgroup2", "cgroup2")),
        );
        check(
            "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard",
            Some(("/", "/", "shared:1", "ext4", "/dev/vda")),
        );
        check(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue",
            Some(("/mnt1", "/mnt2", "master:1 shared:7", "ext3", "/dev/root")),
        );
        check(
            r"50 27 0:40 /a\040b /mnt/with\040space\011tab\134 rw - tmpfs none rw",
            Some(("/a b", "/mnt/with space\ttab\\", "", "tmpfs", "none")),
        );
        // A file system type with a space-free but unusual source, and an empty source.
        check(
            "60 27 0:41 / /x rw - fuse.sshfs  rw",
            Some(("/", "/x", "", "fuse.sshfs", "")),
        );
        // Escapes that are not three octal digits stay as they are.
        check(
            r"61 27 0:42 / /y\08 rw - tmpfs t\x rw",
            Some(("/", r"/y\08", "", "tmpfs", r"t\x")),
        );
        check("", None);
        check("garbage", None);
        check("41 31 0:38 / /sys/fs/cgroup rw,relatime", None);
        check("x 31 0:38 / /a rw - cgroup2 cgroup2 rw", None);
        check("41 31 0:38 / - cgroup2 cgroup2 rw", None);
    }

    #[test]
    fn cgroup2_mounts() {
        #[track_caller]
        fn check(mountinfo: &str, expect: &[&str]) {
            assert_eq!(cgroup2_mount_points(mountinfo), expect);
        }
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        check(hybrid, &["/sys/fs/cgroup/unified"]);
        check(
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
            &["/sys/fs/cgroup"],
        );
        check(
            "1 0 0:1 / /a rw - cgroup2 none rw\n2 0 0:2 / /b rw - cgroup2 none rw\n",
            &["/a", "/b"],
        );
        check(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
            &[],
        );
        check("", &[]);
    }

    #[test]
    fn proc_pid_cgroup() {
        #[track_caller]
        fn check(text: &str, expect: Option<&str>) {
            assert_eq!(cgroup2_group(text), expect, "{text:?}");
        }
        check(
            "0::/user.slice/user-1000.slice/session-1.scope\n",
            Some("/user.slice/user-1000.slice/session-1.scope"),
        );
        check("12:pids:/x\n1:name=systemd:/y\n0::/z\n", Some("/z"));
        check("0::/\n", Some("/"));
        check("12:pids:/x\n1:name=systemd:/y\n", None);
        check("10::/not-v2\n", None);
        check("", None);
    }

    #[test]
    fn joining() {
        #[track_caller]
        fn check(base: &str, rel: &str, expect: &str) {
            assert_eq!(join(base, rel), expect, "{base:?} + {rel:?}");
        }
        check("/sys/fs/cgroup", "/", "/sys/fs/cgroup");
        check(
            "/sys/fs/cgroup",
            "/user.slice/a.scope",
            "/sys/fs/cgroup/user.slice/a.scope",
        );
        check(
            "/sys/fs/cgroup/",
            "user.slice/",
            "/sys/fs/cgroup/user.slice",
        );
        check("/", "evac", "/evac");
        check("/a", "/..", "/");
        check("/a/b", "../c", "/a/c");
        check("/", "", "/");
    }

    #[test]
    fn names() {
        #[track_caller]
        fn check(name: &str, expect: Result<(), &str>) {
            assert_eq!(check_name(name), expect.map_err(str::to_owned), "{name:?}");
        }
        check("evac", Ok(()));
        check("init", Ok(()));
        check("", Err("got empty evacuation group name"));
        check(
            "a/b",
            Err("unexpected evacuation group name \"a/b\": must not contain \"/\""),
        );
        assert_eq!(
            evacuate(1, "x/").unwrap_err(),
            "unexpected evacuation group name \"x/\": must not contain \"/\""
        );
    }

    /// A scratch directory standing in for a cgroup2 mount, removed on drop.
    struct FakeCgroup(std::path::PathBuf);

    impl FakeCgroup {
        fn new(tag: &str) -> FakeCgroup {
            let dir =
                std::env::temp_dir().join(format!("rkrs-cgroup-test-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("user.slice/me")).unwrap();
            FakeCgroup(dir)
        }
        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.0.join(rel)
        }
        fn mountinfo(&self) -> String {
            format!(
                "41 31 0:38 / {} rw,relatime - cgroup2 cgroup2 rw\n",
                self.0.display()
            )
        }
    }

    impl Drop for FakeCgroup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn evacuation_moves_procs_and_enables_controllers() {
        let cg = FakeCgroup::new("ok");
        fs::write(cg.path("user.slice/me/cgroup.procs"), "100\n0\n\n200\n").unwrap();
        fs::write(
            cg.path("user.slice/me/cgroup.controllers"),
            "cpu memory pids\n",
        )
        .unwrap();
        let mut warnings = Vec::new();
        evacuate_with(
            &cg.mountinfo(),
            "0::/user.slice/me\n",
            "evac",
            &mut warnings,
        )
        .unwrap();
        assert_eq!(warnings, Vec::<String>::new());
        // A regular file keeps only the last write, as a cgroup file would keep the last pid moved.
        assert_eq!(
            fs::read_to_string(cg.path("user.slice/me/evac/cgroup.procs")).unwrap(),
            "200"
        );
        assert_eq!(
            fs::read_to_string(cg.path("user.slice/me/cgroup.subtree_control")).unwrap(),
            "+pids"
        );
    }

    #[test]
    fn evacuation_failures_are_warnings_or_errors() {
        let cg = FakeCgroup::new("fail");
        fs::write(cg.path("user.slice/me/cgroup.procs"), "100\n").unwrap();
        fs::write(cg.path("user.slice/me/cgroup.controllers"), "cpu\n").unwrap();
        // Writes into a directory fail: both per-item steps turn into warnings.
        fs::create_dir_all(cg.path("user.slice/me/evac/cgroup.procs")).unwrap();
        fs::create_dir_all(cg.path("user.slice/me/cgroup.subtree_control")).unwrap();
        let mut warnings = Vec::new();
        evacuate_with(
            &cg.mountinfo(),
            "0::/user.slice/me\n",
            "evac",
            &mut warnings,
        )
        .unwrap();
        assert_eq!(
            warnings,
            [
                "failed to move process 100 to cgroup \"/user.slice/me/evac\": is a directory",
                "failed to enable controller \"cpu\": is a directory",
            ]
        );

        // No cgroup.procs in the old group: a hard error in Go's wording.
        let mut warnings = Vec::new();
        let err =
            evacuate_with(&cg.mountinfo(), "0::/user.slice\n", "evac", &mut warnings).unwrap_err();
        assert_eq!(
            err,
            format!(
                "open {}: no such file or directory",
                cg.path("user.slice/cgroup.procs").display()
            )
        );

        // Nothing to evacuate: warnings only, nothing created.
        let mut warnings = Vec::new();
        evacuate_with("", "0::/user.slice/me\n", "other", &mut warnings).unwrap();
        evacuate_with(
            &cg.mountinfo(),
            "1:name=systemd:/x\n",
            "other",
            &mut warnings,
        )
        .unwrap();
        assert_eq!(
            warnings,
            [
                "cgroup2 is not mounted. cgroup2 evacuation is discarded.",
                "process is not running with cgroup2. cgroup2 evacuation is discarded.",
            ]
        );
        assert!(!cg.path("user.slice/me/other").exists());
    }
}
