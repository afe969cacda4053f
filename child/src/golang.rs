//! What our messages borrow from Go, the language upstream is written in: `%q` quoting and
//! `exec.LookPath`, shared by the parent (helpers) and the child (the target).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::errno::io_text;

/// Go's `%q`: double quotes, backslash escapes, `\xNN` for bytes that are not UTF-8.
pub use sys::goflag::quote;

/// `exec.LookPath(name)` with an explicit `$PATH` value (`None` = unset).
///
/// # Errors
/// Go's texts: `exec: "newuidmap": executable file not found in $PATH`,
/// `exec: "/x/getsubids": stat /x/getsubids: no such file or directory`.
///
/// A name containing `/` is checked as it is; otherwise each `$PATH` entry is tried in order,
/// an empty entry meaning the current directory. Like Go ≥ 1.19, a hit in a relative directory
/// is refused rather than silently run.
pub fn look_path(name: &OsStr, path_env: Option<&OsStr>) -> Result<PathBuf, String> {
    let shown = quote(name.as_bytes());
    if name.as_bytes().contains(&b'/') {
        let file = Path::new(name);
        return match find_executable(file) {
            Ok(()) => Ok(file.to_path_buf()),
            Err(e) => Err(format!("exec: {shown}: {e}")),
        };
    }
    let path_env = path_env.unwrap_or_default();
    if !path_env.is_empty() {
        for dir in path_env.as_bytes().split(|&b| b == b':') {
            let dir = if dir.is_empty() {
                OsStr::new(".")
            } else {
                OsStr::from_bytes(dir)
            };
            let candidate = Path::new(dir).join(name);
            if find_executable(&candidate).is_ok() {
                if !candidate.is_absolute() {
                    return Err(format!(
                        "exec: {shown}: cannot run executable found relative to current directory"
                    ));
                }
                return Ok(candidate);
            }
        }
    }
    Err(format!("exec: {shown}: executable file not found in $PATH"))
}

/// Go's `findExecutable`: a non-directory that the effective ids may execute.
fn find_executable(file: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(file).map_err(|e| format!("stat {}: {}", file.display(), io_text(&e)))?;
    if meta.is_dir() {
        return Err(io_text(&io::Error::from_raw_os_error(
            rustix::io::Errno::ISDIR.raw_os_error(),
        )));
    }
    match rustix::fs::accessat(
        rustix::fs::CWD,
        file,
        rustix::fs::Access::EXEC_OK,
        rustix::fs::AtFlags::EACCESS,
    ) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {
            if meta.permissions().mode() & 0o111 != 0 {
                Ok(())
            } else {
                Err("permission denied".to_string())
            }
        }
        Err(e) => Err(io_text(&io::Error::from(e))),
    }
}
