//! Mounts made by the child inside its own mount namespace: propagation, procfs, copy-up, sysfs and cgroup.
//!
//! Every function here runs as uid 0 with full capabilities inside the user namespace that rootlesskit created,
//! and only ever changes the child's private mount namespace.
//!
//! Unlike upstream, nothing here creates a scratch directory in the host's root tmp dir.
//! Where upstream rbinds a directory to a `rootlesskit-b*` or `rksys*` dir under ‹TMP› and moves it back later,
//! we hold the copy as a detached mount tree (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`) and attach it with
//! `move_mount`, so no directory is created outside our own tmpfs and nothing can leak when the child is killed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags};
use sys::mount::Error;

/// The root-level temporary directory, which upstream refuses to copy up.
const ROOT_TMP: &str = "/tmp";

/// Where cgroup file systems live under `/sys`.
const CGROUP_DIR: &str = "/sys/fs/cgroup";

/// A `--propagation` value for the root mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// `private`: `MS_PRIVATE` on `/` only.
    Private,
    /// `rprivate`: `MS_REC | MS_PRIVATE`.
    RPrivate,
    /// `shared`: `MS_SHARED` on `/` only.
    Shared,
    /// `rshared`: `MS_REC | MS_SHARED`.
    RShared,
    /// `slave`: `MS_SLAVE` on `/` only.
    Slave,
    /// `rslave`: `MS_REC | MS_SLAVE`.
    RSlave,
}

impl Propagation {
    /// Parses exactly upstream's six names; anything else is `None`, which upstream (and so the caller)
    /// silently ignores.
    // Not `FromStr`: there is no error to report, an unknown value is simply not applied.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(s: &str) -> Option<Propagation> {
        Some(match s {
            "private" => Propagation::Private,
            "rprivate" => Propagation::RPrivate,
            "shared" => Propagation::Shared,
            "rshared" => Propagation::RShared,
            "slave" => Propagation::Slave,
            "rslave" => Propagation::RSlave,
            _ => return None,
        })
    }

    fn flags(self) -> MountPropagationFlags {
        use MountPropagationFlags as F;
        match self {
            Propagation::Private => F::PRIVATE,
            Propagation::RPrivate => F::REC | F::PRIVATE,
            Propagation::Shared => F::SHARED,
            Propagation::RShared => F::REC | F::SHARED,
            Propagation::Slave => F::DOWNSTREAM,
            Propagation::RSlave => F::REC | F::DOWNSTREAM,
        }
    }
}

/// `mount(NULL, "/", NULL, flags, NULL)`—sets the propagation type of the root mount (and, for the
/// `r*` variants, of every mount below it).
///
/// # Errors
///
/// `failed to share mount point: /: <errno>`, upstream's wording.
///
/// # References
///  - [mount_namespaces(7)](https://man7.org/linux/man-pages/man7/mount_namespaces.7.html)
pub fn set_propagation(p: Propagation) -> Result<(), Error> {
    rustix::mount::mount_change("/", p.flags()).map_err(Error::sys("share mount point:", "/"))
}

/// `mount("none", "/proc", "proc", 0, NULL)`—a fresh procfs for the new PID namespace (`--pidns`).
///
/// Upstream only warns when this fails and then tries a read-only mount.
/// We return the error and leave that policy to the caller, which is expected to print
/// `failed to mount procfs, falling back to read-only mount: <errno_text>` and call
/// [`mount_proc_read_only`], printing `failed to mount procfs: <errno_text>` if that fails too.
///
/// # Errors
///
/// `failed to mount procfs on /proc: <errno>`.
pub fn mount_proc() -> Result<(), Error> {
    mount_fs("proc", "/proc", MountFlags::empty()).map_err(Error::sys("mount procfs on", "/proc"))
}

/// `mount("none", "/proc", "proc", MS_RDONLY, NULL)`—the fallback for [`mount_proc`].
///
/// # Errors
///
/// `failed to mount procfs on /proc: <errno>`.
pub fn mount_proc_read_only() -> Result<(), Error> {
    mount_fs("proc", "/proc", MountFlags::RDONLY).map_err(Error::sys("mount procfs on", "/proc"))
}

/// How `--copy-up` makes a directory writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyUpMode {
    /// Upstream's mode: a tmpfs with a symlink per entry of the original (the default).
    TmpfsSymlink,
    /// Ours: an unprivileged overlayfs whose lower layer is the original and whose upper layer is a
    /// tmpfs that no path reaches.
    Overlay,
}

/// Copies up each directory in `dirs`, in upstream's `tmpfs+symlink` mode or with an overlayfs
/// (see [`copy_up_overlay`]).
///
/// For each directory `d` (lexically cleaned), in order:
/// 1. the root tmp dir is refused (`/tmp cannot be copied up`);
/// 2. the whole mount tree at `d` is cloned into a detached mount (`open_tree`, recursive);
/// 3. a fresh tmpfs (no options, so its root is mode 1777 as upstream) is mounted on `d`;
/// 4. an empty `d/.roNNNNNNNNN` (9 random digits, mode 0700) is created and the clone is attached there;
/// 5. each entry of the original directory gets a symlink `d/<name>`: a symlink is recreated with its own
///    target, anything else points to the relative `.roNNNNNNNNN/<name>`.
///
/// The top level of `d` is thus writable (entries can be removed or replaced) while deeper paths are the
/// original files.
///
/// # Errors
///
/// The first failure stops the whole copy-up (the child fails fast, directories already copied stay so).
/// A missing directory gives `failed to create bind mount on <d>: no such file or directory`.
pub fn copy_up(dirs: &[PathBuf], mode: CopyUpMode) -> Result<(), Error> {
    let mut names = NameSource::new();
    for d in dirs {
        let d = clean_path(d);
        if d == Path::new(ROOT_TMP) {
            // Upstream needs the root tmp dir for its scratch mount. We do not, but a config that is
            // refused by upstream should not silently behave differently here.
            return Err(Error::NotCopyable {
                path: ROOT_TMP.to_owned(),
            });
        }
        match mode {
            CopyUpMode::TmpfsSymlink => copy_up_one(&d, &mut names)?,
            CopyUpMode::Overlay => copy_up_overlay(&d)?,
        }
    }
    Ok(())
}

/// `--copy-up-mode=overlay`: mounts an overlayfs on `d` whose lower layer is the original `d` and whose
/// upper and work directories are on a fresh tmpfs, so that `d` shows the original's own files (not
/// symlinks) and every write lands in the tmpfs, which dies with the namespace.
///
/// 1. `d` is opened `O_PATH`: this descriptor keeps reaching the original once `d` is covered.
/// 2. A scaffold tmpfs is mounted on `d` itself (a directory that surely exists, and which we cover
///    anyway), with `upper` (the original's mode, owned by root in the namespace) and `work` in it.
/// 3. The overlay is made with the new mount API (`fsopen("overlay")`, one `fsconfig` per option,
///    `fsmount`) as a detached mount. The layers are named `/proc/self/fd/N[/upper|/work]`, never by the
///    user's path, so no `,` `:` `\` or `=` in a path can change the options. `userxattr` keeps
///    overlay's metadata in `user.*` xattrs (what a user namespace may write); `index` and `metacopy`
///    are off whatever the kernel's defaults say. `redirect_dir` is left alone: with `userxattr` the
///    kernel picks `nofollow` itself and refuses `off`, which means `follow` on most kernels.
///    The source is named `overlay`, so mountinfo reads like a mount made by `mount -t overlay`.
/// 4. The scaffold is detached (`umount2(MNT_DETACH)`); the overlay keeps its own private clones of the
///    layers, so the tmpfs lives on but no path in any namespace reaches it.
/// 5. The overlay is attached on `d` (`move_mount`).
///
/// The scaffold is mounted on `d` rather than beside it because the kernel clones only layers that are
/// attached in our namespace (a detached tmpfs is refused before Linux 6.15).
/// Nothing is made outside the child's mount namespace, and on any failure the scaffold is detached
/// again, so `d` is left as it was.
///
/// # Errors
///
/// `failed to copy-up <d> with overlayfs: <errno>`, with the kernel's reason in parentheses when its
/// file system context logged one (for example `overlayfs: failed to clone lowerpath` when another mount
/// lies below `d`, which overlayfs cannot show).
///
/// # References
///  - [overlayfs](https://docs.kernel.org/filesystems/overlayfs.html)
///  - [fsopen(2)](https://man7.org/linux/man-pages/man2/fsopen.2.html)
pub fn copy_up_overlay(d: &Path) -> Result<(), Error> {
    let fail = |errno, detail| Error::Overlay {
        path: d.display().to_string(),
        errno,
        detail,
    };
    let lower = rustix::fs::open(
        d,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(e, None))?;
    let mode = rustix::fs::fstat(&lower)
        .map_err(|e| fail(e, None))?
        .st_mode
        & 0o7777;
    // Every step below names the directory by the path the kernel resolved it to: `move_mount`
    // would not follow a symlink such as `/var/run` where `mount` and `umount2` do.
    let real = rustix::fs::readlink(
        format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(&lower)),
        Vec::new(),
    )
    .map_err(|e| fail(e, None))?;
    let d = Path::new(OsStr::from_bytes(real.as_bytes()));
    mount_fs("tmpfs", d, MountFlags::empty()).map_err(|e| fail(e, None))?;
    let made = rustix::fs::open(
        d,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| (e, None))
    .and_then(|scaffold| make_overlay(&lower, &scaffold, mode));
    // Whatever happened, the scaffold leaves the tree: the overlay holds what it needs of it.
    let detached = rustix::mount::unmount(d, rustix::mount::UnmountFlags::DETACH);
    let overlay = made.map_err(|(e, detail)| fail(e, detail))?;
    detached.map_err(|e| fail(e, None))?;
    rustix::mount::move_mount(
        &overlay,
        "",
        CWD,
        d,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail(e, None))
}

/// Steps 2 and 3 of [`copy_up_overlay`]: the layer directories in the scaffold, then the detached
/// overlay. A failure carries the kernel's logged reason when there is one.
fn make_overlay(
    lower: &OwnedFd,
    scaffold: &OwnedFd,
    mode: u32,
) -> Result<OwnedFd, (Errno, Option<String>)> {
    use rustix::fd::AsRawFd;
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
    let bare = |e| (e, None);
    rustix::fs::mkdirat(scaffold, "upper", Mode::from_raw_mode(0o700)).map_err(bare)?;
    // Set after the fact: mkdir's mode is cut by the umask.
    rustix::fs::chmodat(
        scaffold,
        "upper",
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )
    .map_err(bare)?;
    rustix::fs::mkdirat(scaffold, "work", Mode::from_raw_mode(0o700)).map_err(bare)?;
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(bare)?;
    let logged = |e| (e, kernel_reason(&fs));
    rustix::mount::fsconfig_set_string(&fs, "source", "overlay").map_err(logged)?;
    let at = |fd: &OwnedFd, sub: &str| format!("/proc/self/fd/{}{sub}", fd.as_raw_fd());
    rustix::mount::fsconfig_set_string(&fs, "lowerdir", at(lower, "")).map_err(logged)?;
    rustix::mount::fsconfig_set_string(&fs, "upperdir", at(scaffold, "/upper")).map_err(logged)?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", at(scaffold, "/work")).map_err(logged)?;
    rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(logged)?;
    for (key, value) in [("index", "off"), ("metacopy", "off")] {
        rustix::mount::fsconfig_set_string(&fs, key, value).map_err(logged)?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(logged)?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(logged)
}

/// What the kernel logged on a file system context (`read(2)` on the `fsopen` descriptor gives one
/// message per read, `e <text>` for an error): the first error, else the last message, without its
/// level prefix; `None` if it logged nothing.
fn kernel_reason(fs: &OwnedFd) -> Option<String> {
    let mut buf = [0u8; 256];
    let mut last = None;
    // The log holds a handful of messages at most.
    for _ in 0..8 {
        let n = match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let text = text.trim_end();
        if let Some(e) = text.strip_prefix("e ") {
            return Some(e.to_owned());
        }
        last = Some(text.get(2..).unwrap_or(text).to_owned());
    }
    last
}

fn copy_up_one(d: &Path, names: &mut NameSource) -> Result<(), Error> {
    // The detached clone keeps the original content reachable after the tmpfs hides it.
    // Dropping the fd before it is attached unmounts the clone, so an error path leaves nothing behind.
    let tree = clone_tree(d).map_err(Error::sys("create bind mount on", d))?;
    mount_fs("tmpfs", d, MountFlags::empty()).map_err(Error::sys("mount tmpfs on", d))?;
    // This resolves to the root of the tmpfs we just mounted; everything below is relative to it.
    let top = rustix::fs::open(
        d,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Error::sys("open", d))?;

    let ro_name =
        make_ro_dir(&top, &tree, names).map_err(Error::sys("create a directory under", d))?;
    let ro_path = d.join(OsStr::from_bytes(ro_name.as_bytes()));
    rustix::mount::move_mount(
        &tree,
        "",
        &top,
        ro_name.as_str(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(Error::sys("move mount point to", &ro_path))?;

    let listing = rustix::fs::openat(
        &tree,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Error::sys("read dir", &ro_path))?;
    let mut dir = Dir::new(listing).map_err(Error::sys("read dir", &ro_path))?;
    let mut target = Vec::with_capacity(256);
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(Error::sys("read dir", &ro_path))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name_path = Path::new(OsStr::from_bytes(name));
        let is_symlink = match entry.file_type() {
            FileType::Symlink => true,
            FileType::Unknown => rustix::fs::statat(&tree, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
                .map_err(|e| Error::sys("stat", ro_path.join(name_path))(e))?,
            _ => false,
        };
        target.clear();
        if is_symlink {
            let link = rustix::fs::readlinkat(&tree, name, std::mem::take(&mut target))
                .map_err(|e| Error::sys("read link", ro_path.join(name_path))(e))?;
            target = link.into_bytes();
        } else {
            target.extend_from_slice(ro_name.as_bytes());
            target.push(b'/');
            target.extend_from_slice(name);
        }
        // The tmpfs is ours and fresh, so only our `.ro` dir is in it (upstream's `mount(8)` could add
        // `mtab`, issue #45); a name that is taken anyway is cleared and tried again, as upstream
        // clears it, without an unlink per entry in the common case.
        match rustix::fs::symlinkat(&target[..], &top, name) {
            Err(Errno::EXIST) => {
                remove_entry(&top, name).map_err(|e| Error::sys("remove", d.join(name_path))(e))?;
                rustix::fs::symlinkat(&target[..], &top, name)
            }
            r => r,
        }
        .map_err(|e| Error::sys("create symlink", d.join(name_path))(e))?;
    }
    Ok(())
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | AT_RECURSIVE)`—a detached copy of the mount tree at `path`,
/// the fd form of `mount --rbind`.
fn clone_tree(path: impl AsRef<Path>) -> rustix::io::Result<OwnedFd> {
    rustix::mount::open_tree(
        CWD,
        path.as_ref(),
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
}

/// `mount("none", target, fs_type, flags, NULL)`, the form upstream uses for every fresh file system.
fn mount_fs(fs_type: &str, target: impl AsRef<Path>, flags: MountFlags) -> rustix::io::Result<()> {
    rustix::mount::mount("none", target.as_ref(), fs_type, flags, None)
}

/// Creates `.roNNNNNNNNN` in `top`, mode 0700 like Go's `os.MkdirTemp`, picking a name that is free both in
/// `top` and in the original tree (so no symlink we create later can collide with the mount point).
fn make_ro_dir(
    top: impl AsFd,
    tree: impl AsFd,
    names: &mut NameSource,
) -> rustix::io::Result<String> {
    let mut last = Errno::EXIST;
    for _ in 0..100 {
        let name = ro_name(names.next());
        if rustix::fs::statat(&tree, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            continue;
        }
        match rustix::fs::mkdirat(&top, name.as_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => return Ok(name),
            Err(e) if e == Errno::EXIST => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// `.ro` followed by the low 9 decimal digits of `n`, zero padded.
fn ro_name(n: u64) -> String {
    format!(".ro{:09}", n % 1_000_000_000)
}

/// Removes a non-directory, or an empty directory, named `name` in `dir`; a missing entry is fine.
fn remove_entry(dir: impl AsFd, name: &[u8]) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::NOENT => Ok(()),
        Err(e) if e == Errno::ISDIR => rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR),
        Err(e) => Err(e),
    }
}

/// Random numbers for `.ro` names: seeded once from `/dev/urandom`, then splitmix64.
///
/// The names need only be unlikely to clash (they are made in our own fresh tmpfs), not unpredictable;
/// if `/dev/urandom` cannot be read the seed falls back to the clock and our pid.
struct NameSource(u64);

impl NameSource {
    fn new() -> NameSource {
        let mut seed = [0u8; 8];
        let from_urandom = rustix::fs::open(
            "/dev/urandom",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| rustix::io::read(&fd, &mut seed))
        .is_ok_and(|n| n == seed.len());
        if from_urandom {
            NameSource(u64::from_ne_bytes(seed))
        } else {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            NameSource(nanos ^ ((rustix::process::getpid().as_raw_nonzero().get() as u64) << 32))
        }
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Lexically cleans a path like Go's `filepath.Clean`: repeated and trailing slashes, `.` and `..` are
/// resolved without touching the file system (`..` at the root stays at the root).
/// The caller can compare the result with `/etc` to learn whether `/etc` was copied up.
pub fn clean_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    let mut depth = 0usize; // normal components that a `..` may remove
    for c in p.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth > 0 {
                    out.pop();
                    depth -= 1;
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            Component::Normal(n) => {
                out.push(n);
                depth += 1;
            }
            Component::Prefix(_) => {}
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Replaces `/sys` with a sysfs for the child's own network namespace (so `/sys/class/net` shows its
/// devices), keeping the cgroup file systems visible at `/sys/fs/cgroup`.
///
/// Without evacuation the whole mount tree at `/sys/fs/cgroup` (on a hybrid host: the tmpfs, every v1
/// controller and the `unified` cgroup2) is cloned into a detached mount first and attached again on the
/// new sysfs. With `evacuating_cgroup2` a fresh cgroup2 is mounted there instead.
///
/// A failing sysfs mount is not fatal, as upstream: it is retried read-only (a read-only sysfs in the parent
/// namespace forbids a writable one here), and if that fails too the old `/sys` stays. Each fallback adds a
/// warning string for the caller to print:
/// `failed to mount sysfs, falling back to read-only mount: <errno>` and `failed to mount sysfs: <errno>`.
///
/// # Errors
///
/// `failed to create bind mount on /sys/fs/cgroup: ...`, `failed to move mount point to /sys/fs/cgroup: ...`
/// or `failed to mount cgroup2 on /sys/fs/cgroup: ...`.
pub fn remount_sysfs(evacuating_cgroup2: bool) -> Result<Vec<String>, Error> {
    let mut warnings = Vec::new();
    let cgroups = if evacuating_cgroup2 {
        None
    } else {
        Some(clone_tree(CGROUP_DIR).map_err(Error::sys("create bind mount on", CGROUP_DIR))?)
    };
    if let Err(e) = mount_fs("sysfs", "/sys", MountFlags::empty()) {
        warnings.push(format!(
            "failed to mount sysfs, falling back to read-only mount: {}",
            sys::errno::text(e)
        ));
        if let Err(e) = mount_fs("sysfs", "/sys", MountFlags::RDONLY) {
            // When /sys/firmware is masked even a read-only sysfs is refused.
            warnings.push(format!("failed to mount sysfs: {}", sys::errno::text(e)));
        }
    }
    match cgroups {
        Some(tree) => rustix::mount::move_mount(
            &tree,
            "",
            CWD,
            CGROUP_DIR,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(Error::sys("move mount point to", CGROUP_DIR))?,
        None => mount_fs("cgroup2", CGROUP_DIR, MountFlags::empty())
            .map_err(Error::sys("mount cgroup2 on", CGROUP_DIR))?,
    }
    Ok(warnings)
}

/// For host-like networks (`--net=host`, `--net=none`) with `--evacuate-cgroup2`: a tmpfs on `/sys/fs/cgroup`,
/// then cgroup2 on it (mounting cgroup2 straight over the host's cgroup mount gives `EBUSY`).
///
/// # Errors
///
/// `failed to mount tmpfs on /sys/fs/cgroup: ...` or `failed to mount cgroup2 on /sys/fs/cgroup: ...`.
pub fn mount_cgroup2_for_evacuation() -> Result<(), Error> {
    mount_fs("tmpfs", CGROUP_DIR, MountFlags::empty())
        .map_err(Error::sys("mount tmpfs on", CGROUP_DIR))?;
    mount_fs("cgroup2", CGROUP_DIR, MountFlags::empty())
        .map_err(Error::sys("mount cgroup2 on", CGROUP_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_names() {
        use MountPropagationFlags as F;
        #[track_caller]
        fn check(input: &str, expect: Option<MountPropagationFlags>) {
            assert_eq!(
                Propagation::from_str(input).map(Propagation::flags),
                expect,
                "{input:?}"
            );
        }
        check("private", Some(F::PRIVATE));
        check("rprivate", Some(F::REC | F::PRIVATE));
        check("shared", Some(F::SHARED));
        check("rshared", Some(F::REC | F::SHARED));
        check("slave", Some(F::DOWNSTREAM));
        check("rslave", Some(F::REC | F::DOWNSTREAM));
        check("", None);
        check("Private", None);
        check("unbindable", None);
        check("rprivate ", None);
    }

    #[test]
    fn cleaning_paths() {
        #[track_caller]
        fn check(input: &str, expect: &str) {
            assert_eq!(clean_path(Path::new(input)), Path::new(expect), "{input:?}");
        }
        check("/etc", "/etc");
        check("/etc/", "/etc");
        check("//etc//", "/etc");
        check("/./etc/.", "/etc");
        check("/tmp/../tmp", "/tmp");
        check("/var/lib/../run", "/var/run");
        check("/..", "/");
        check("/../etc", "/etc");
        check("/", "/");
        check("etc/../..", "..");
        check("", ".");
    }

    #[test]
    fn root_tmp_is_refused_in_any_spelling() {
        #[track_caller]
        fn check(input: &str) {
            for mode in [CopyUpMode::TmpfsSymlink, CopyUpMode::Overlay] {
                let err = copy_up(&[PathBuf::from(input)], mode).unwrap_err();
                assert_eq!(err.to_string(), "/tmp cannot be copied up", "{input:?}");
            }
        }
        check("/tmp");
        check("/tmp/");
        check("/var/../tmp");
    }

    #[test]
    fn ro_names_have_nine_digits() {
        #[track_caller]
        fn check(n: u64, expect: &str) {
            assert_eq!(ro_name(n), expect);
        }
        check(0, ".ro000000000");
        check(42, ".ro000000042");
        check(123_456_789, ".ro123456789");
        check(9_876_543_210, ".ro876543210");
        check(u64::MAX, ".ro709551615");
        let mut names = NameSource::new();
        let a = ro_name(names.next());
        let b = ro_name(names.next());
        assert_ne!(a, b);
        assert!(
            a.len() == 12 && a[3..].bytes().all(|c| c.is_ascii_digit()),
            "{a}"
        );
    }
}
