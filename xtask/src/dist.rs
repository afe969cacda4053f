//! `cargo xtask dist`: release build of the shipped binaries, statically linked, copied to `<target>/dist/`, then proof that each is static, runs in an empty environment and fits its size budget.
//!
//! musl is used when a Rust std for `<arch>-unknown-linux-musl` is installed; otherwise glibc
//! with `+crt-static` (static-pie). The flag goes into `CARGO_TARGET_<TRIPLE>_RUSTFLAGS` and the
//! target is always explicit, so build scripts and proc-macros stay dynamic and still build.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{Result, elf};

/// `(package, binary)` for everything we ship.
pub(crate) const BINARIES: &[(&str, &str)] = &[
    ("parent", "rootlesskit"),
    ("parent", "rootlessctl"),
    ("parent", "rootlesskit-docker-proxy"),
    ("child", "rootlesskit-child"),
    ("unshare-helper", "rootlesskit-unshare"),
];

/// Per-binary size budgets in bytes. Static glibc alone costs about 830 KB, musl far less.
pub(crate) const GNU_BUDGET: u64 = 1_200_000;
/// The budget of `rootlesskit` on glibc: see [`Libc::budget_for`].
pub(crate) const GNU_PARENT_BUDGET: u64 = 1_750_000;
pub(crate) const MUSL_BUDGET: u64 = 600_000;

/// How long a binary may take to answer `--version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// glibc's NSS loader builds `libnss_<service>.so` names to `dlopen`; a static binary that
/// carries that code (any name or user lookup through glibc) would load host shared objects at
/// run time. (The bare word `nsswitch.conf` is no proof: we read that file ourselves, to learn
/// whether getsubids would consult anything but /etc/subuid.)
const NSS_MARKER: &[u8] = b"libnss_";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Libc {
    Gnu,
    Musl,
}

impl Libc {
    pub(crate) fn parse(s: &str) -> Result<Libc> {
        match s {
            "gnu" => Ok(Libc::Gnu),
            "musl" => Ok(Libc::Musl),
            _ => Err(format!(
                "invalid value \"{s}\" for --libc: expected gnu or musl"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Libc::Gnu => "gnu",
            Libc::Musl => "musl",
        }
    }

    pub(crate) fn budget(self) -> u64 {
        match self {
            Libc::Gnu => GNU_BUDGET,
            Libc::Musl => MUSL_BUDGET,
        }
    }

    /// The budget of one binary. `rootlesskit` and `rootlesskit-child` are the exceptions on
    /// glibc: a static glibc "hello" is already 1,121,024 bytes here (std's panic and backtrace
    /// machinery plus glibc), which leaves 79 KB of the common budget. The child holds the
    /// mounts, rtnetlink and the target's supervision and gets a quarter more. The parent holds
    /// the flag table, help, id maps, state dir, the API server, the port drivers and their
    /// splice pumps, the network drivers and their restarts, `--check`, and the in-process
    /// network of `--net=gvisor-tap-vsock` (1,514,880 bytes already before that network, which
    /// measured 34,976 bytes on its own); it gets 1.75 MB. musl builds keep the common budget.
    pub(crate) fn budget_for(self, binary: &str) -> u64 {
        match (self, binary) {
            (Libc::Gnu, "rootlesskit") => GNU_PARENT_BUDGET,
            (Libc::Gnu, "rootlesskit-child") => GNU_BUDGET + GNU_BUDGET / 4,
            _ => self.budget(),
        }
    }

    fn triple(self, arch: &str) -> String {
        format!("{arch}-unknown-linux-{}", self.name())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Force a libc instead of detecting musl.
    pub libc: Option<Libc>,
    /// Passed to cargo as `--target-dir`.
    pub target_dir: Option<PathBuf>,
}

/// Builds, copies and checks the binaries; returns the absolute dist directory.
pub(crate) fn run(root: &Path, opts: &Options) -> Result<PathBuf> {
    let host = host_triple()?;
    let arch = arch_of(&host).ok_or_else(|| {
        format!("unsupported host {host}: expected <arch>-unknown-linux-gnu or -musl")
    })?;
    let musl = Libc::Musl.triple(arch);
    let musl_std = has_std(&musl);
    let libc = match opts.libc {
        Some(Libc::Musl) if !musl_std => {
            return Err(format!(
                "no Rust std installed for {musl} (rustup target add {musl})"
            ));
        }
        Some(l) => l,
        None if musl_std => Libc::Musl,
        None => Libc::Gnu,
    };
    let triple = libc.triple(arch);
    println!("dist: building for {triple}");

    let mut cmd = crate::cargo();
    cmd.current_dir(root).args([
        "build",
        "--release",
        "--bins",
        "--message-format=json-render-diagnostics",
        "--target",
        &triple,
    ]);
    for pkg in packages() {
        cmd.args(["-p", pkg]);
    }
    if let Some(dir) = &opts.target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    // RUSTFLAGS would silently replace the per-target flags below, dropping +crt-static.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        if std::env::var_os(var).is_some() {
            eprintln!("dist: note: ignoring {var} (dist sets its own per-target flags)");
            cmd.env_remove(var);
        }
    }
    if libc == Libc::Gnu {
        let var = rustflags_var(&triple);
        // Appended last, so it wins over any -crt-static the caller's flags may carry.
        let flags = std::env::var(&var).unwrap_or_default();
        let flags = format!("{flags} -C target-feature=+crt-static");
        println!("dist: {var}=\"{}\"", flags.trim());
        cmd.env(&var, flags.trim());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let shown = crate::display(&cmd);
    println!("dist: {shown}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{shown}` failed ({})", out.status));
    }
    let built = executables(&String::from_utf8_lossy(&out.stdout));

    let mut sources = Vec::new();
    for (_, name) in BINARIES {
        let path = built
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == *name))
            .ok_or_else(|| format!("cargo build did not produce {name}"))?;
        sources.push((*name, path.clone()));
    }
    let dist_dir = dist_dir_for(&sources[0].1, &triple)?;
    fs::create_dir_all(&dist_dir)
        .map_err(|e| format!("cannot create {}: {e}", dist_dir.display()))?;
    for (name, src) in &sources {
        install(src, &dist_dir.join(name))?;
    }

    let budget = libc.budget();
    println!(
        "\n{:<24} {:>10}  {:<10}  version, or problems (budget {budget} bytes, rootlesskit {}, rootlesskit-child {}, {triple})",
        "binary",
        "bytes",
        "linking",
        libc.budget_for("rootlesskit"),
        libc.budget_for("rootlesskit-child")
    );
    let mut failures = Vec::new();
    for (name, _) in &sources {
        let r = check_binary(&dist_dir.join(name), libc.budget_for(name));
        let linking = if r.linkage.is_ok() {
            "static ok"
        } else {
            "NOT STATIC"
        };
        let problems = r.problems();
        if problems.is_empty() {
            println!("{name:<24} {:>10}  {linking:<10}  {}", r.size, r.version);
        } else {
            println!(
                "{name:<24} {:>10}  {linking:<10}  FAILED: {}",
                r.size,
                problems.join(", ")
            );
            failures.push(format!("{name}: {}", problems.join(", ")));
        }
    }
    println!("\ndist: binaries in {}", dist_dir.display());
    if !failures.is_empty() {
        return Err(format!("dist check failed: {}", failures.join("; ")));
    }
    let bundle = crate::package::write(root, &dist_dir, arch)?;
    println!("dist: packager bundle {}", bundle.display());
    Ok(dist_dir)
}

/// The packages named in [`BINARIES`], each once.
fn packages() -> Vec<&'static str> {
    let mut out: Vec<&str> = BINARIES.iter().map(|(p, _)| *p).collect();
    out.dedup();
    out
}

/// What the checks found for one installed binary.
#[derive(Debug)]
struct Report {
    size: u64,
    /// The ELF verdict: no `PT_INTERP` and no `DT_NEEDED`.
    linkage: Result<()>,
    /// Everything else that is wrong: nsswitch.conf, size, `--version`.
    other: Vec<String>,
    /// The first line `--version` printed.
    version: String,
}

impl Report {
    fn problems(&self) -> Vec<String> {
        self.linkage
            .clone()
            .err()
            .into_iter()
            .chain(self.other.iter().cloned())
            .collect()
    }
}

/// Runs every check on one installed binary.
fn check_binary(path: &Path, budget: u64) -> Report {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            let linkage = Err(format!("cannot read {}: {e}", path.display()));
            return Report {
                size: 0,
                linkage,
                other: Vec::new(),
                version: String::new(),
            };
        }
    };
    let size = data.len() as u64;
    let linkage = elf::check_static(&data);
    let mut other = Vec::new();
    if contains(&data, NSS_MARKER) {
        other.push("contains glibc's NSS loader (\"libnss_\"), so it would dlopen host libraries (a name or user lookup goes through glibc)".to_string());
    }
    if size > budget {
        other.push(format!("{size} bytes is over the budget of {budget}"));
    }
    // A dynamic binary may not even start here, so only static ones are run.
    let mut version = String::new();
    if linkage.is_ok() {
        match run_version(path) {
            Ok(v) => version = v,
            Err(e) => other.push(e),
        }
    }
    Report {
        size,
        linkage,
        other,
        version,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs `path --version` with an empty environment; returns the first output line.
fn run_version(path: &Path) -> Result<String> {
    let mut child = crate::command(path)
        .arg("--version")
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run --version: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > VERSION_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "--version did not exit within {}s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for --version: {e}")),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    let first = |s: &str| {
        s.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string()
    };
    if status.success() {
        Ok(first(&stdout))
    } else {
        let said = first(&stderr);
        let said = if said.is_empty() {
            first(&stdout)
        } else {
            said
        };
        let said = if said.is_empty() {
            "no output".to_string()
        } else {
            format!("said \"{said}\"")
        };
        Err(format!(
            "`--version` in an empty environment failed ({status}, {said})"
        ))
    }
}

/// Copies through a temporary name and renames, so a binary that is running (a test using
/// the previous dist) is replaced instead of failing with ETXTBSY.
fn install(src: &Path, dst: &Path) -> Result<()> {
    let tmp = dst.with_file_name(format!(
        ".{}.tmp",
        dst.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::copy(src, &tmp)
        .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {}: {e}", tmp.display()))?;
    fs::rename(&tmp, dst)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dst.display()))
}

/// `<target-dir>/dist` for a binary built at `<target-dir>/<triple>/release/<name>`.
fn dist_dir_for(exe: &Path, triple: &str) -> Result<PathBuf> {
    let release = exe.parent().filter(|p| p.ends_with("release"));
    let triple_dir = release
        .and_then(Path::parent)
        .filter(|p| p.ends_with(triple));
    match triple_dir.and_then(Path::parent) {
        Some(target_dir) => Ok(target_dir.join("dist")),
        None => Err(format!(
            "unexpected output path {}: expected <target-dir>/{triple}/release/",
            exe.display()
        )),
    }
}

/// The host triple from `rustc -vV`.
fn host_triple() -> Result<String> {
    let mut cmd = crate::command(rustc());
    cmd.arg("-vV");
    let shown = crate::display(&cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| format!("`{shown}` printed no host line"))
}

fn rustc() -> std::ffi::OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

/// `x86_64` from `x86_64-unknown-linux-gnu`; `None` for hosts we cannot build static binaries on.
fn arch_of(host: &str) -> Option<&str> {
    host.strip_suffix("-unknown-linux-gnu")
        .or_else(|| host.strip_suffix("-unknown-linux-musl"))
        .filter(|a| !a.is_empty())
}

/// `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS` for `x86_64-unknown-linux-gnu`.
fn rustflags_var(triple: &str) -> String {
    let upper: String = triple
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CARGO_TARGET_{upper}_RUSTFLAGS")
}

/// Whether a Rust std is installed for `triple`: `rustc --print target-libdir` prints a path even
/// for targets that are not installed, so look for `libstd-*.rlib` in it.
fn has_std(triple: &str) -> bool {
    let out = crate::command(rustc())
        .args(["--print", "target-libdir", "--target", triple])
        .output();
    let Ok(out) = out else { return false };
    if !out.status.success() {
        return false;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir_has_std(&dir)
}

fn dir_has_std(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("libstd-") && n.ends_with(".rlib")
            })
        })
        .unwrap_or(false)
}

/// The `"executable"` paths of cargo's `compiler-artifact` JSON messages.
fn executables(json_lines: &str) -> Vec<PathBuf> {
    json_lines
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|l| json_string_field(l, "executable"))
        .map(PathBuf::from)
        .collect()
}

/// The string value of `"key":"..."` in one line of JSON (`None` for null or absent).
fn json_string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(
                        char::from_u32(u32::from_str_radix(&hex, 16).ok()?).unwrap_or('\u{fffd}'),
                    );
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_from_host_triple() {
        let cases = [
            ("x86_64-unknown-linux-gnu", Some("x86_64")),
            ("aarch64-unknown-linux-musl", Some("aarch64")),
            ("riscv64gc-unknown-linux-gnu", Some("riscv64gc")),
            ("armv7-unknown-linux-gnueabihf", None),
            ("x86_64-apple-darwin", None),
            ("-unknown-linux-gnu", None),
        ];
        for (host, expect) in cases {
            assert_eq!(arch_of(host), expect, "{host}");
        }
    }

    #[test]
    fn rustflags_variable_names() {
        assert_eq!(
            rustflags_var("x86_64-unknown-linux-gnu"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS"
        );
        assert_eq!(
            rustflags_var("riscv64gc-unknown-linux-gnu"),
            "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_RUSTFLAGS"
        );
    }

    #[test]
    fn libc_names_and_budgets() {
        assert_eq!(Libc::parse("gnu"), Ok(Libc::Gnu));
        assert_eq!(Libc::parse("musl"), Ok(Libc::Musl));
        assert_eq!(
            Libc::parse("glibc"),
            Err("invalid value \"glibc\" for --libc: expected gnu or musl".into())
        );
        assert_eq!(Libc::Gnu.triple("aarch64"), "aarch64-unknown-linux-gnu");
        assert_eq!(Libc::Gnu.budget(), 1_200_000);
        assert_eq!(Libc::Musl.budget(), 600_000);
    }

    #[test]
    fn executables_from_cargo_json() {
        let out = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/proto#0.1.0","executable":null,"fresh":true}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"rootlesskit"},"executable":"/w/target/x86_64-unknown-linux-gnu/release/rootlesskit","fresh":false}"#,
            "\n",
            r#"{"reason":"compiler-artifact","executable":"/w/we\"ird\\dir\u0041/rootlessctl"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        assert_eq!(
            executables(out),
            [
                PathBuf::from("/w/target/x86_64-unknown-linux-gnu/release/rootlesskit"),
                PathBuf::from("/w/we\"ird\\dirA/rootlessctl"),
            ]
        );
        assert_eq!(
            json_string_field(r#"{"executable":"/unterminated"#, "executable"),
            None
        );
    }

    #[test]
    fn dist_dir_location() {
        let t = "x86_64-unknown-linux-gnu";
        assert_eq!(
            dist_dir_for(
                Path::new("/w/target/x86_64-unknown-linux-gnu/release/rootlesskit"),
                t
            ),
            Ok(PathBuf::from("/w/target/dist"))
        );
        assert_eq!(
            dist_dir_for(Path::new("/w/target/release/rootlesskit"), t),
            Err("unexpected output path /w/target/release/rootlesskit: expected <target-dir>/x86_64-unknown-linux-gnu/release/".into())
        );
    }

    #[test]
    fn std_detection_looks_for_libstd_rlib() {
        let base = std::env::temp_dir().join(format!("xtask-std-{}", std::process::id()));
        let (with, without) = (base.join("with"), base.join("without"));
        fs::create_dir_all(&with).unwrap();
        fs::create_dir_all(&without).unwrap();
        fs::write(with.join("libstd-0123abcd.rlib"), b"").unwrap();
        fs::write(without.join("libstd-0123abcd.so"), b"").unwrap();
        let got = (
            dir_has_std(&with),
            dir_has_std(&without),
            dir_has_std(&base.join("missing")),
        );
        let _ = fs::remove_dir_all(&base);
        assert_eq!(got, (true, false, false));
        // The host always has its own std.
        assert!(has_std(&host_triple().unwrap()));
    }

    #[test]
    fn nsswitch_marker_search() {
        assert!(contains(b"xxlibnss_%s.so.%d\0", NSS_MARKER));
        assert!(!contains(b"/etc/nsswitch.conf", NSS_MARKER));
        assert!(!contains(b"", NSS_MARKER));
    }

    /// A real static binary is run and measured; a dynamic one is reported and not run.
    #[test]
    fn check_binary_on_real_files() {
        if let Ok(data) = fs::read("/sbin/ldconfig")
            && elf::check_static(&data).is_ok()
        {
            // Debian's ldconfig is static-pie and carries glibc's NSS loader; budget 1 must trip.
            let r = check_binary(Path::new("/sbin/ldconfig"), 1);
            assert_eq!((r.size, &r.linkage), (data.len() as u64, &Ok(())));
            assert!(
                r.other
                    .contains(&format!("{} bytes is over the budget of 1", r.size)),
                "{r:?}"
            );
            let nss = r
                .other
                .iter()
                .any(|p| p.starts_with("contains glibc's NSS loader"));
            assert_eq!(nss, contains(&data, NSS_MARKER), "{r:?}");
            assert!(r.version.starts_with("ldconfig"), "{r:?}");
        }
        let r = check_binary(Path::new("/proc/self/exe"), u64::MAX);
        if !cfg!(target_feature = "crt-static") {
            let err = r.linkage.clone().unwrap_err();
            assert!(
                err.starts_with("dynamically linked: has PT_INTERP"),
                "{r:?}"
            );
            assert_eq!(r.version, "", "a dynamic binary must not be run");
            assert_eq!(r.problems().first(), Some(&err));
        }
        let missing = check_binary(Path::new("/nonexistent/rootlesskit"), 1);
        assert!(missing.problems()[0].starts_with("cannot read /nonexistent/rootlesskit: "));
    }
}
