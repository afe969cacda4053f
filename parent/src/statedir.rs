//! The state directory: creation or crash-recovery reuse, the `lock` file, `child_pid`, and
//! removal of everything on exit.
//!
//! An explicit directory must belong to us and be writable by nobody else (or be sticky), and a
//! symlink to it is resolved once: every file is made in the real directory, with
//! `O_NOFOLLOW`, so no one else can plant a link in it that we would write through.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags, flock};

/// A locked state directory. Dropping it removes the directory with everything in it.
#[derive(Debug)]
pub(crate) struct StateDir {
    /// The real directory, symlinks resolved.
    path: PathBuf,
    /// The absolute path as given, which the target sees in `$ROOTLESSKIT_STATE_DIR`.
    given: PathBuf,
    // Held for the life of the run: the shared lock on the directory keeps systemd-tmpfiles
    // away (upstream issue #185), the exclusive one on `lock` keeps a second instance away.
    _dir: Option<OwnedFd>,
    _lock: Option<OwnedFd>,
    removed: bool,
}

impl StateDir {
    /// Creates a fresh `rootlesskit<digits>` directory (mode 0700) under `$TMPDIR` or `/tmp`
    /// when `explicit` is `None`; otherwise takes over `explicit`, creating it if needed and
    /// wiping whatever a crashed run left in it.
    ///
    /// An existing `explicit` directory must be owned by the effective user and not be group-
    /// or world-writable unless it is sticky, and a symlink to it must be the user's (or
    /// root's); otherwise it is refused before anything is made or removed in it.
    ///
    /// # Errors
    /// One line naming the path, with upstream's wording where it has one.
    pub(crate) fn create(explicit: Option<&Path>) -> Result<StateDir, String> {
        let (path, given) = match explicit {
            None => {
                let p = make_temp_dir()?;
                (p.clone(), p)
            }
            Some(p) => {
                let given = absolute(p)?;
                match fs::symlink_metadata(&given) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(&given)
                            .map_err(|e| {
                                format!(
                                    "failed to create {}: {}",
                                    given.display(),
                                    sys::errno::text(&e)
                                )
                            })?;
                    }
                    // A link someone else put there could point at any directory of ours,
                    // which would be wiped.
                    Ok(m) if m.file_type().is_symlink() => {
                        use std::os::unix::fs::MetadataExt;
                        let euid = rustix::process::geteuid().as_raw();
                        if m.uid() != euid && m.uid() != 0 {
                            return Err(format!(
                                "refusing the state dir {}: it is a symlink owned by uid {}, not by uid {euid}",
                                given.display(),
                                m.uid()
                            ));
                        }
                    }
                    _ => {}
                }
                let real = fs::canonicalize(&given).map_err(|e| {
                    format!(
                        "state dir is inaccessible: {}: {}",
                        given.display(),
                        sys::errno::text(&e)
                    )
                })?;
                check_private(&given, &real)?;
                (real, given)
            }
        };
        // Not armed until we hold the lock: a refused second instance must not remove the
        // directory of the running one.
        let mut dir = StateDir {
            path,
            given,
            _dir: None,
            _lock: None,
            removed: true,
        };
        if explicit.is_none() {
            // Our own fresh directory: ours to remove from now on.
            dir.removed = false;
        } else {
            let lock = dir.take_lock()?;
            dir.removed = false;
            dir.wipe_except_lock()?;
            drop(lock);
        }
        match rustix::fs::open(
            &dir.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                if flock(&fd, FlockOperation::NonBlockingLockShared).is_err() {
                    crate::warn(&format!(
                        "Failed to lock the state dir {}",
                        dir.path.display()
                    ));
                }
                dir._dir = Some(fd);
            }
            Err(e) => {
                return Err(format!(
                    "state dir is inaccessible: {}: {}",
                    dir.path.display(),
                    sys::errno::text(e)
                ));
            }
        }
        dir._lock = Some(dir.take_lock()?);
        Ok(dir)
    }

    /// The real absolute path (symlinks resolved), where every file is made.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The absolute path as given (the real one for a directory we made up), which upstream
    /// passes on in `$ROOTLESSKIT_STATE_DIR` and shows in `GET /v1/info`.
    pub(crate) fn given_path(&self) -> &Path {
        &self.given
    }

    fn take_lock(&self) -> Result<OwnedFd, String> {
        let lock_path = self.path.join("lock");
        let fd = rustix::fs::open(
            &lock_path,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| {
            format!(
                "failed to open {}: {}",
                lock_path.display(),
                sys::errno::text(e)
            )
        })?;
        flock(&fd, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            format!(
                "failed to lock {}, another RootlessKit is running with the same state directory?",
                lock_path.display()
            )
        })?;
        Ok(fd)
    }

    fn wipe_except_lock(&self) -> Result<(), String> {
        let entries = fs::read_dir(&self.path).map_err(|e| {
            format!(
                "failed to read {}: {}",
                self.path.display(),
                sys::errno::text(&e)
            )
        })?;
        for entry in entries.flatten() {
            if entry.file_name() == "lock" {
                continue;
            }
            let p = entry.path();
            let r = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
            r.map_err(|e| format!("failed to remove {}: {}", p.display(), sys::errno::text(&e)))?;
        }
        Ok(())
    }

    /// Writes `child_pid` (mode 0444, decimal, no newline), the readiness marker clients poll.
    pub(crate) fn write_child_pid(&self, pid: i32) -> Result<(), String> {
        let p = self.path.join("child_pid");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .mode(0o444)
            .open(&p)
            .map_err(|e| format!("failed to write {}: {}", p.display(), sys::errno::text(&e)))?;
        f.write_all(pid.to_string().as_bytes())
            .map_err(|e| format!("failed to write {}: {}", p.display(), sys::errno::text(&e)))
    }

    /// Removes the directory and everything in it, then releases the locks.
    pub(crate) fn remove(&mut self) -> Result<(), String> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let r = fs::remove_dir_all(&self.path);
        // Upstream removes the path it was given: a symlink to the directory goes too.
        if self.given != self.path
            && fs::symlink_metadata(&self.given).is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = fs::remove_file(&self.given);
        }
        self._lock = None;
        self._dir = None;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!(
                "failed to remove {}: {}",
                self.path.display(),
                sys::errno::text(&e)
            )),
        }
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            crate::warn(&e);
        }
    }
}

/// Refuses a directory that someone else could plant files in: one not owned by the effective
/// user, or group- or world-writable without the sticky bit (a sticky one, like `/tmp`, only
/// lets others add names, which `O_NOFOLLOW` and `O_EXCL` make harmless).
fn check_private(given: &Path, real: &Path) -> Result<(), String> {
    let st = rustix::fs::stat(real).map_err(|e| {
        format!(
            "state dir is inaccessible: {}: {}",
            given.display(),
            sys::errno::text(e)
        )
    })?;
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid {
        return Err(format!(
            "refusing the state dir {}: it is owned by uid {}, not by uid {euid}",
            given.display(),
            st.st_uid
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(format!(
            "refusing the state dir {}: it is writable by others (mode {mode:04o}) and not sticky",
            given.display()
        ));
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Ok(clean(p));
    }
    let cwd = std::env::current_dir().map_err(|e| {
        format!(
            "failed to get the current directory: {}",
            sys::errno::text(&e)
        )
    })?;
    Ok(clean(&cwd.join(p)))
}

/// Lexical clean-up like Go's `filepath.Clean`: drops `.`, resolves `..`, no trailing slash.
fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn make_temp_dir() -> Result<PathBuf, String> {
    let base = std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let mut seed = random_seed();
    for _ in 0..100 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = base.join(format!("rootlesskit{}", (seed >> 33) % 10_000_000_000));
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return absolute(&p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "creating a state directory: mkdir {}: {}",
                    p.display(),
                    sys::errno::text(&e)
                ));
            }
        }
    }
    Err(format!(
        "creating a state directory: no free name under {}",
        base.display()
    ))
}

fn random_seed() -> u64 {
    let mut buf = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            return u64::from_ne_bytes(buf);
        }
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (i, want) in [
            ("/a/b/../c/./d/", "/a/c/d"),
            ("/", "/"),
            ("/..", "/"),
            ("/tmp//x", "/tmp/x"),
        ] {
            assert_eq!(clean(Path::new(i)), PathBuf::from(want), "{i}");
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("rkrs-statedir-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn explicit_dir_is_wiped_locked_and_removed() {
        let p = scratch("explicit");
        fs::create_dir_all(p.join("stale/sub")).unwrap();
        fs::write(p.join("child_pid"), "123").unwrap();
        fs::write(p.join("lock"), "").unwrap();
        let mut d = StateDir::create(Some(&p)).unwrap();
        let mut names: Vec<_> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["lock"]);
        // A second instance on the same directory is refused with upstream's message.
        let err = StateDir::create(Some(&p)).unwrap_err();
        assert!(err.contains("another RootlessKit is running"), "{err}");
        d.write_child_pid(4242).unwrap();
        assert_eq!(fs::read_to_string(p.join("child_pid")).unwrap(), "4242");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(p.join("child_pid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        d.remove().unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn symlinked_dir_is_resolved_and_cleaned() {
        let base = scratch("link");
        let real = base.join("real");
        fs::create_dir_all(&real).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut d = StateDir::create(Some(&link)).unwrap();
        assert_eq!(d.path(), real);
        assert_eq!(d.given_path(), link);
        assert!(real.join("lock").exists());
        d.write_child_pid(1).unwrap();
        d.remove().unwrap();
        assert!(!real.exists());
        assert!(fs::symlink_metadata(&link).is_err());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn dirs_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = scratch("shared");
        for (mode, ok) in [
            (0o777, false),
            (0o770, false),
            (0o1777, true),
            (0o700, true),
        ] {
            fs::create_dir_all(&base).unwrap();
            fs::set_permissions(&base, fs::Permissions::from_mode(mode)).unwrap();
            match StateDir::create(Some(&base)) {
                Ok(mut d) => {
                    assert!(ok, "{mode:o} accepted");
                    d.remove().unwrap();
                }
                Err(e) => {
                    assert!(!ok, "{mode:o}: {e}");
                    assert!(e.contains("is writable by others"), "{e}");
                    assert_eq!(fs::read_dir(&base).unwrap().count(), 0);
                    fs::remove_dir(&base).unwrap();
                }
            }
        }
    }

    #[test]
    fn temp_dir_is_private_and_dropped() {
        let d = StateDir::create(None).unwrap();
        let p = d.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("rootlesskit")
        );
        drop(d);
        assert!(!p.exists());
    }
}
