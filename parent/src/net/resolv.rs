//! The `resolv.conf` and `hosts` files a non-host network gets in the state dir, which the child
//! bind-mounts over `/etc/resolv.conf` and `/etc/hosts`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `resolv.conf` for `dns`: one `nameserver <ip>` line per server, in order.
pub(crate) fn resolv_conf(dns: &[String]) -> String {
    dns.iter().map(|ip| format!("nameserver {ip}\n")).collect()
}

#[cfg(test)]
/// `hosts`: the host's `/etc/hosts` followed by `127.0.0.1` and `::1` lines for `hostname`.
///
/// Like upstream, the lines are appended even when the host file already names the host, after
/// an extra newline.
pub(crate) fn hosts(host_etc_hosts: &str, hostname: &str) -> String {
    String::from_utf8_lossy(&hosts_bytes(host_etc_hosts.as_bytes(), hostname)).into_owned()
}

fn hosts_bytes(host_etc_hosts: &[u8], hostname: &str) -> Vec<u8> {
    let mut out = host_etc_hosts.to_vec();
    out.extend_from_slice(format!("\n127.0.0.1 {hostname}\n::1 {hostname}\n").as_bytes());
    out
}

/// Writes `<state_dir>/resolv.conf` for `dns` and `<state_dir>/hosts` from this host's
/// `/etc/hosts` and host name, both mode 0644 (less the umask). Both are new files: a name
/// already there (a symlink someone planted) is an error, never followed.
///
/// # Errors
/// `open /etc/hosts: <errno>` or `writing <path>: <errno>`.
pub(crate) fn write_files(state_dir: &Path, dns: &[String]) -> Result<(), String> {
    let etc_hosts = std::fs::read("/etc/hosts")
        .map_err(|e| format!("open /etc/hosts: {}", sys::errno::text(&e)))?;
    let uname = rustix::system::uname();
    let hostname = uname.nodename().to_string_lossy();
    write_0644(
        &state_dir.join("resolv.conf"),
        resolv_conf(dns).as_bytes(),
        true,
    )?;
    write_0644(
        &state_dir.join("hosts"),
        &hosts_bytes(&etc_hosts, &hostname),
        true,
    )
}

/// Rewrites `<state_dir>/resolv.conf` for `dns` in place (a bind mount of it shows the new
/// text), for the DNS server a DHCP lease names once the child has it. A symlink there is not
/// followed.
///
/// # Errors
/// `writing <path>: <errno>`.
pub(crate) fn write_resolv_conf(state_dir: &Path, dns: &[String]) -> Result<(), String> {
    write_0644(
        &state_dir.join("resolv.conf"),
        resolv_conf(dns).as_bytes(),
        false,
    )
}

/// Writes `data` to a file `path` made now (`new`) or already there, never through a symlink.
fn write_0644(path: &Path, data: &[u8], new: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("writing {}: {}", path.display(), sys::errno::text(&e));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(new)
        .truncate(!new)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(0o644)
        .open(path)
        .map_err(fail)?;
    file.write_all(data).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_every_server() {
        let check = |dns: &[&str], expect: &str| {
            let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
            assert_eq!(resolv_conf(&dns), expect, "{dns:?}");
        };
        check(&[], "");
        check(&["10.0.2.3"], "nameserver 10.0.2.3\n");
        check(
            &["10.0.2.3", "fd00::3"],
            "nameserver 10.0.2.3\nnameserver fd00::3\n",
        );
    }

    #[test]
    fn hosts_appends_the_host_name() {
        let check = |etc: &str, name: &str, expect: &str| {
            assert_eq!(hosts(etc, name), expect, "{etc:?} {name:?}");
        };
        check(
            "127.0.0.1\tlocalhost\n",
            "box",
            "127.0.0.1\tlocalhost\n\n127.0.0.1 box\n::1 box\n",
        );
        // Appended even when already present, and without a final newline in the host file.
        check(
            "127.0.0.1 localhost\n127.0.1.1 box",
            "box",
            "127.0.0.1 localhost\n127.0.1.1 box\n127.0.0.1 box\n::1 box\n",
        );
        check("", "h", "\n127.0.0.1 h\n::1 h\n");
    }

    #[test]
    fn writes_both_files() {
        let dir = std::env::temp_dir().join(format!("rkrs-net-resolv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_files(&dir, &["10.0.2.3".to_string()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        let hosts = std::fs::read(dir.join("hosts")).unwrap();
        let etc = std::fs::read("/etc/hosts").unwrap();
        let uname = rustix::system::uname();
        let name = uname.nodename().to_string_lossy();
        assert_eq!(hosts, hosts_bytes(&etc, &name));
        assert!(hosts.starts_with(&etc));
        let missing = dir.join("no/such/dir");
        assert_eq!(
            write_files(&missing, &[]),
            Err(format!(
                "writing {}: no such file or directory",
                missing.join("resolv.conf").display()
            ))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn planted_symlinks_are_not_followed() {
        let dir = std::env::temp_dir().join(format!("rkrs-net-resolv-ln-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("resolv.conf")).unwrap();
        let err = write_files(&dir, &["10.0.2.3".to_string()]).unwrap_err();
        assert!(err.ends_with("resolv.conf: file exists"), "{err}");
        let err = write_resolv_conf(&dir, &["10.0.2.3".to_string()]).unwrap_err();
        assert!(
            err.ends_with("resolv.conf: too many levels of symbolic links"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
