//! Applying the maps: newuidmap/newgidmap, or for the fallback `deny` to setgroups and the maps
//! written to /proc.

use std::io;

use crate::exec;

use super::maps::map_args;
use super::{IdMaps, Range};

/// Installs `maps` on process `pid`: through newuidmap and newgidmap, or for the fallback by
/// writing `deny` to `/proc/<pid>/setgroups` and the maps to `/proc/<pid>/{uid_map,gid_map}`.
///
/// # Errors
/// `failed to setup UID/GID map: newuidmap 1234 [0 1000 1 1 100000 65536] failed: <output>: exit status 1`,
/// `failed to setup UID/GID map: writing /proc/1234/uid_map: operation not permitted`.
pub(crate) fn apply(pid: i32, maps: &IdMaps) -> Result<(), String> {
    let fail = |e: String| format!("failed to setup UID/GID map: {e}");
    if !maps.fallback {
        return exec::run_newidmaps(pid, &map_args(&maps.uid), &map_args(&maps.gid)).map_err(fail);
    }
    let proc_dir = format!("/proc/{pid}");
    // Kernels before 3.19 have no setgroups file and need no "deny" to write gid_map.
    match write_proc(&proc_dir, "setgroups", "deny") {
        Err((e, _)) if e.kind() == io::ErrorKind::NotFound => {}
        other => other.map_err(|(_, msg)| fail(msg))?,
    }
    write_proc(&proc_dir, "uid_map", &map_text(&maps.uid)).map_err(|(_, msg)| fail(msg))?;
    write_proc(&proc_dir, "gid_map", &map_text(&maps.gid)).map_err(|(_, msg)| fail(msg))?;
    Ok(())
}

/// The text of a uid_map/gid_map file: one `inside outside count` line per range.
fn map_text(ranges: &[Range]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// Writes `text` to `<proc_dir>/<file>` in one write(2), as the map files require.
fn write_proc(proc_dir: &str, file: &str, text: &str) -> Result<(), (io::Error, String)> {
    use std::io::Write;
    let path = format!("{proc_dir}/{file}");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| {
            let written = f.write(text.as_bytes())?;
            if written == text.len() {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::INVAL.raw_os_error(),
                ))
            }
        });
    result.map_err(|e| {
        let msg = format!("writing {path}: {}", exec::errno_text(&e));
        (e, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_map_text() {
        let ranges = [
            Range {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            Range {
                inside: 1,
                outside: 100000,
                count: 65536,
            },
        ];
        assert_eq!(map_text(&ranges), "0 1000 1\n1 100000 65536\n");
        assert_eq!(map_text(&ranges[..1]), "0 1000 1\n");
    }

    // --- apply -----------------------------------------------------------------------------------

    #[test]
    fn apply_fallback_reports_the_file() {
        // No such process: setgroups is skipped like on old kernels, then uid_map fails.
        let maps = IdMaps {
            uid: vec![Range {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            gid: vec![Range {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            fallback: true,
        };
        let pid = i32::MAX;
        assert_eq!(
            apply(pid, &maps),
            Err(format!(
                "failed to setup UID/GID map: writing /proc/{pid}/uid_map: no such file or directory"
            ))
        );
    }
}
