//! Running programs inside the Debian sid root filesystem that `.ci/sid-rootfs` builds, for
//! the tests of today's clients (Docker 28, containerd 2, passt 2026).
//!
//! sid's programs need sid's glibc, so they run only inside that tree. A plain `chroot` would
//! not do: the kernel refuses a new user namespace to a process whose root is not the root of
//! its mount namespace. So [`Run::inside`](crate::Run::inside) starts each program through
//! `unshare --mount --propagation private` and a small shell script that, as root and still
//! with the host's tools, binds the tree onto itself, mounts a fresh `/proc`, binds the host's
//! `/sys`, `/dev` and `/tmp` (so the tests' scratch dirs and the staged binaries have the same
//! paths on both sides), puts a tmpfs on `/run`, makes the tree itself read-only (it is a cache
//! shared by every run), and `pivot_root`s into it; then sid's `setpriv` drops to the test user
//! and runs the program. Only the mount namespace is new: the network namespace is the host's,
//! so a published port is reached from the test process directly.
//! Our static binaries run there unchanged (from the staged dir in `/tmp`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `.ci/sid-rootfs` leaves the current tree (a symlink to the one of this package list).
const DEFAULT_ROOT: &str = "/var/cache/rkrs/sid";

/// The entering script: `sh -c ENTER sid-enter ROOT PROGRAM ARGS...`. Absolute paths to the
/// host's tools, since `$PATH` is the program's.
pub(crate) const ENTER: &str = r#"set -e
root=$1; shift
/bin/mount --rbind "$root" "$root"
/bin/mount -o remount,bind,ro "$root"
/bin/mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
/bin/mount --rbind /sys "$root/sys"
/bin/mount --rbind /dev "$root/dev"
/bin/mount --rbind /tmp "$root/tmp"
/bin/mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
cd "$root"
/sbin/pivot_root . .oldroot
cd /
/bin/umount -l /.oldroot
exec "$@"
"#;

/// `unshare --mount --propagation private -- sh -c ENTER sid-enter ROOT setpriv ... PROGRAM`:
/// PROGRAM (a path inside `root`) as uid/gid inside `root`; the caller adds its arguments.
pub(crate) fn command(root: &Path, uid: u32, gid: u32, program: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(ENTER)
        .arg("sid-enter")
        .arg(root)
        .arg("/usr/bin/setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    c
}

/// The sid tree, when it is built and these tests can enter it (as root); otherwise why not.
pub fn root() -> Result<PathBuf, String> {
    let root = std::env::var_os("RKRS_SID_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    if !root.join(".complete").exists() {
        return Err(format!(
            "no Debian sid rootfs at {} (as root, `.ci/sid-rootfs rkrs-test` builds it)",
            root.display()
        ));
    }
    if !crate::am_root() {
        return Err("entering the sid rootfs needs root (a private mount namespace)".into());
    }
    if !root.join(".oldroot").is_dir() {
        return Err(format!(
            "{} has no .oldroot (rerun .ci/sid-rootfs)",
            root.display()
        ));
    }
    if !std::env::temp_dir().starts_with("/tmp") {
        return Err("the sid rootfs sees the host's /tmp only: unset TMPDIR".into());
    }
    let user = crate::test_user().ok_or("no test user: create one or set RKRS_TEST_USER")?;
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let line = format!("{}:x:{}:{}:", user.name, user.uid, user.gid);
    if !passwd.lines().any(|l| l.starts_with(&line)) {
        return Err(format!(
            "the sid rootfs has no user {} with uid {} (`.ci/sid-rootfs {}` adds it)",
            user.name, user.uid, user.name
        ));
    }
    let subuid = std::fs::read_to_string(root.join("etc/subuid")).unwrap_or_default();
    if !subuid
        .lines()
        .any(|l| l.starts_with(&format!("{}:", user.name)))
    {
        return Err(format!(
            "user {} has no subordinate ids in the sid rootfs's /etc/subuid",
            user.name
        ));
    }
    Ok(root)
}

/// The sid tree, failing the test if one of `programs` is not in it; or why a test that needs
/// it and a usable `/dev/net/tun` cannot run.
pub fn root_with(programs: &[&str]) -> Result<PathBuf, String> {
    let root = root()?;
    for program in programs {
        assert!(has(&root, program), "{program} is not in the sid rootfs");
    }
    if !crate::tun_usable() {
        return Err("/dev/net/tun is not usable by the test user".into());
    }
    Ok(root)
}

/// Whether `path` (absolute, as seen inside) exists in the tree.
pub fn has(root: &Path, path: &str) -> bool {
    root.join(path.trim_start_matches('/')).exists()
}

/// The version field of an installed package in the tree's dpkg database.
pub fn package_version(root: &Path, package: &str) -> Option<String> {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).ok()?;
    status.split("\n\n").find_map(|stanza| {
        let want = format!("Package: {package}");
        if !stanza.lines().any(|l| l == want) {
            return None;
        }
        stanza
            .lines()
            .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
    })
}

/// What `/www/index.html` in the test image says.
pub const PAGE: &str = "hello from a rootless container\n";

/// A tar for `docker import` / `ctr images import`-style use: sid's static busybox with `sh`,
/// `httpd`, `wget`, `cat` links, `/www/index.html`, and sid's `socat` with the libraries
/// `ldd` names (busybox has no UDP server). Made under `dir`; gives the tar's path.
pub fn image_tar(root: &Path, dir: &Path) -> PathBuf {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    let img = dir.join("image");
    let _ = fs::remove_dir_all(&img);
    for sub in ["bin", "www", "tmp"] {
        fs::create_dir_all(img.join(sub)).unwrap();
    }
    fs::copy(root.join("usr/bin/busybox"), img.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "wget", "cat", "echo", "sleep"] {
        symlink("busybox", img.join("bin").join(applet)).unwrap();
    }
    fs::write(img.join("www/index.html"), PAGE).unwrap();
    let mut files = vec!["/usr/bin/socat".to_string()];
    let ldd = crate::Run::program("/usr/bin/ldd")
        .args(["/usr/bin/socat"])
        .inside(root)
        .output();
    crate::ok(&ldd);
    // "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" or "/lib64/ld-linux... (0x...)"
    for line in ldd.stdout.lines() {
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(p.to_string());
        }
    }
    for f in &files {
        let to = img.join(f.trim_start_matches('/'));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(root.join(f.trim_start_matches('/')), &to)
            .unwrap_or_else(|e| panic!("copy {f} from the sid rootfs: {e}"));
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let tar = dir.join("image.tar");
    tar_dir(&img, &tar);
    tar
}

/// The command line of a UDP echo server on `port` in the image.
pub fn udp_echo_cmd(port: u16) -> Vec<String> {
    vec![
        "/usr/bin/socat".into(),
        format!("UDP-RECVFROM:{port},fork"),
        "EXEC:/bin/cat".into(),
    ]
}

/// Sends a datagram to `addr` until the same bytes come back (15 s at most).
pub fn udp_echo(addr: std::net::SocketAddr) -> Result<(), String> {
    use std::net::UdpSocket;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        let _ = s.send(b"rkrs-udp-ping");
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"rkrs-udp-ping" => return Ok(()),
            Ok(n) => last = format!("unexpected reply {:?}", &buf[..n]),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("no UDP echo from {addr}: {last}"))
}

/// One HTTP/1.0 GET of `/`: the body when the status is 200.
pub fn http_get(addr: std::net::SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: rkrs\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {reply:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {head:?}"));
    }
    Ok(body.to_string())
}

/// GETs `/` from `addr`, retrying for 15 s, and gives the body.
pub fn fetch(addr: std::net::SocketAddr) -> String {
    let mut last = String::new();
    let got = crate::wait_for(std::time::Duration::from_secs(15), || {
        http_get(addr).map_err(|e| last = e).ok()
    });
    got.unwrap_or_else(|| panic!("GET http://{addr}/: {last}"))
}

/// Whether nothing accepts TCP connections on `addr` any more (waiting up to 10 s).
pub fn refused(addr: std::net::SocketAddr) -> bool {
    crate::wait_until(std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err()
    })
}

/// Ports free for TCP and UDP on every address, all different, and below the ephemeral range:
/// pasta (since 2026) forwards automatically only ports it may scan, 1–32767.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::net::{TcpListener, UdpSocket};
    let mut held = Vec::new();
    let mut out = [0u16; N];
    let mut i = 0;
    // Start somewhere that depends on the process, so that parallel runs rarely collide.
    let start = 20000 + (std::process::id() % 10000) as u16;
    for port in (start..32768).chain(20000..start) {
        if i == N {
            break;
        }
        let Ok(t) =
            TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        else {
            continue;
        };
        let Ok(u) = UdpSocket::bind(("::", port)).or_else(|_| UdpSocket::bind(("0.0.0.0", port)))
        else {
            continue;
        };
        held.push((t, u));
        out[i] = port;
        i += 1;
    }
    assert_eq!(i, N, "no {N} free ports in 20000-32767");
    out
}

/// Live (not zombie) processes whose real uid is the test user's: (pid, name).
pub fn user_processes() -> Vec<(u32, String)> {
    let uid = crate::test_user().expect("no test user").uid.to_string();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
        };
        if field("Uid:").as_deref() == Some(uid.as_str())
            && !matches!(field("State:").as_deref(), Some("Z") | Some("X"))
        {
            out.push((pid, field("Name:").unwrap_or_default()));
        }
    }
    out
}

/// The host's address on its default route, if it has one.
pub fn host_ipv4() -> Option<std::net::Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// An OCI image layout tar (for `ctr images import`) of [`image_tar`]'s tree as one layer,
/// named `docker.io/library/<name>:latest`.
pub fn oci_tar(root: &Path, dir: &Path, name: &str) -> PathBuf {
    use std::fs;
    let layer = image_tar(root, dir);
    let oci = dir.join("oci");
    let _ = fs::remove_dir_all(&oci);
    let blobs = oci.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    // Writes a blob and gives its descriptor's digest and size.
    let blob = |bytes: &[u8]| -> (String, usize) {
        let tmp = blobs.join("tmp");
        fs::write(&tmp, bytes).unwrap();
        let digest = sha256(&tmp);
        fs::rename(&tmp, blobs.join(&digest)).unwrap();
        (digest, bytes.len())
    };
    let (layer_digest, layer_size) = blob(&fs::read(&layer).unwrap());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_digest}"]}}}}"#
    );
    let (config_digest, config_size) = blob(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_digest}","size":{layer_size}}}]}}"#
    );
    let (manifest_digest, manifest_size) = blob(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{manifest_size},"annotations":{{"io.containerd.image.name":"docker.io/library/{name}:latest","org.opencontainers.image.ref.name":"latest"}},"platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#
    );
    fs::write(oci.join("index.json"), index).unwrap();
    fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tar = dir.join("oci.tar");
    tar_dir(&oci, &tar);
    tar
}

/// The hex SHA-256 of a file (`sha256sum`).
fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A rootlesskit started inside the sid tree, with a scratch dir holding its `--state-dir`
/// (`state`), its log (`log`) and a web root (`www`, with [`PAGE`] as `index.html`).
pub struct Rootlesskit {
    child: Option<std::process::Child>,
    dir: crate::Scratch,
}

impl Rootlesskit {
    /// `rootlesskit --state-dir=… ARGS… /bin/sh -c TARGET` inside `root`, with `WWW` in
    /// `target` replaced by the web root; waits (30 s at most) until the child is up.
    pub fn start(root: &Path, name: &str, args: &[&str], target: &str) -> Rootlesskit {
        let dir = crate::Scratch::new(name);
        let www = dir.join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("index.html"), PAGE).unwrap();
        let mut all: Vec<String> = vec![format!("--state-dir={}", dir.join("state").display())];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend([
            "/bin/sh".into(),
            "-c".into(),
            target.replace("WWW", &www.display().to_string()),
        ]);
        let child = crate::Run::bin("rootlesskit")
            .args(all)
            .inside(root)
            .spawn_logged(&dir.join("log"));
        let r = Rootlesskit {
            child: Some(child),
            dir,
        };
        let up = crate::wait_until(std::time::Duration::from_secs(30), || {
            r.dir.join("state/child_pid").exists()
        });
        assert!(up, "rootlesskit did not come up: {}", r.log());
        r
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What rootlesskit wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `rootlessctl --socket=STATE/api.sock ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> crate::Output {
        let sock = format!("--socket={}", self.dir.join("state/api.sock").display());
        crate::Run::bin("rootlessctl")
            .args([sock.as_str()].into_iter().chain(args.iter().copied()))
            .output()
    }

    /// [`Rootlesskit::ctl`], failing (with the log) on a non-zero exit; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert_eq!(o.code, 0, "rootlessctl {args:?}: {o:?}\n{}", self.log());
        o.stdout
    }
}

impl Drop for Rootlesskit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::send_signal(child.id(), "TERM");
            let gone = crate::wait_until(std::time::Duration::from_secs(15), || {
                child.try_wait().ok().flatten().is_some()
            });
            if !gone {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Packs the tree `src` into `tar`, every file owned by 0:0 (as an image wants it), the tar
/// readable by all (the test user's daemon reads it).
pub fn tar_dir(src: &Path, tar: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let st = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(src)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed");
    std::fs::set_permissions(tar, std::fs::Permissions::from_mode(0o644)).unwrap();
}
