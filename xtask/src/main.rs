//! `cargo xtask`: the one build and automation entry point; parses the command line and dispatches to `dist`, `tidy`, `fuzz`, `ci` and `test`.

#![forbid(unsafe_code)]

mod bench;
mod ci;
mod dist;
mod elf;
mod fuzz;
mod package;
mod tidy;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Every xtask error is one human-readable line.
pub type Result<T> = std::result::Result<T, String>;

const HELP: &str = "\
cargo xtask: build and automation tasks for rootlesskit-rs

Usage: cargo xtask <command> [options]

Commands:
  dist [--libc gnu|musl] [--target-dir DIR]
        Build rootlesskit, rootlessctl, rootlesskit-docker-proxy, rootlesskit-child and rootlesskit-unshare in release,
        statically linked (musl when its Rust std is installed, else glibc with +crt-static),
        copy them to <target>/dist/ and check each: no ELF interpreter, no DT_NEEDED, no
        nsswitch.conf, `--version` works in an empty environment, size within budget.
        Then writes the packager bundle <target>/dist/rootlesskit-VERSION-ARCH.tar.gz (laid
        out for /usr: binaries, man pages and completions made from their --help, AppArmor
        profile, SHA256SUMS; reproducible, mtimes from SOURCE_DATE_EPOCH or the last commit)
        and <target>/dist/SHA256SUMS for it.
  tidy  Source rules (module docs, unsafe only in src/sys/ with SAFETY comments, no
        process spawning outside parent/src/exec.rs, runtime dependencies) plus a
        `cargo tree` check of the runtime crates' dependency graphs.
  fuzz [--seconds N] [--replay] [TARGET...]
        Run the cargo-fuzz targets of fuzz/ for N seconds each (default 60), or with --replay
        run every input of fuzz/corpus/<target>/ once. Without TARGET, all targets.
  ci [--libc gnu|musl] [--target-dir DIR]
        What .ci/run calls: fmt --check, clippy -D warnings, tidy, dist, then cargo test with
        RKRS_BIN_DIR pointing at the dist binaries (and RKRS_MUST_WORK=1 when CI is set).
  test [--libc gnu|musl] [--target-dir DIR]
        Like ci without fmt and clippy: dist, then cargo test with RKRS_BIN_DIR.
  bench [--runs N] [--reference PATH] [--bin-dir DIR] [--output FILE] [--no-trace]
        [--only PART,...]
        Our dist binaries (default <target>/dist) against the reference rootlesskit (default
        /usr/bin/rootlesskit), interleaved in one run as the unprivileged test user: startup
        wall and CPU (N runs each, default 30), idle RSS, binary sizes and the machine's
        ceilings, port forwarding, and the network drivers (slirp4netns, pasta and our
        gvisor-tap-vsock: namespace to host and back, connections/s, CPU per GB); prints the
        tables and writes BENCHMARKS.md. Run `dist` first. --only runs some of the parts
        startup, idle, forwarding, network, sizes (e.g. `--only network`) and then writes
        only to --output FILE, never to BENCHMARKS.md.
  echo-server PORT
        The echo server bench runs inside the namespace for the connection test: dual-stack
        on [::]:PORT, one connection at a time.
  echo-client ADDRESS PORT N
        The client bench runs inside the namespace for the outbound connection test: N
        sequential connections (connect, one byte echoed, close) after 50 untimed ones;
        prints the seconds they took and each one's ms.
  help  Print this text (also -h, --help).
";

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(a) => args.push(a),
            Err(bad) => {
                eprintln!("xtask: error: argument is not valid UTF-8: {bad:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{HELP}");
        return Err("no command given".into());
    };
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return Ok(());
    }
    let root = workspace_root();
    match cmd.as_str() {
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        "dist" => {
            let opts = dist_options(cmd, rest)?;
            dist::run(&root, &opts).map(|_| ())
        }
        "tidy" => {
            parse(cmd, rest, &[])?.no_positionals(cmd)?;
            tidy::run(&root)
        }
        "fuzz" => {
            let p = parse(cmd, rest, &[("seconds", true), ("replay", false)])?;
            let seconds = match p.value("seconds") {
                None => fuzz::DEFAULT_SECONDS,
                Some(s) => s.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("invalid value \"{s}\" for --seconds: expected a positive whole number")
                })?,
            };
            let opts = fuzz::Options {
                seconds,
                replay: p.has("replay"),
                targets: p.positionals,
            };
            fuzz::run(&root, &opts)
        }
        "ci" => ci::ci(&root, &dist_options(cmd, rest)?),
        "test" => ci::test(&root, &dist_options(cmd, rest)?),
        "bench" => bench::run(&root, &bench::options(cmd, rest)?),
        "echo-server" => {
            let p = parse(cmd, rest, &[])?;
            let port = match p.positionals.as_slice() {
                [port] => port
                    .parse::<u16>()
                    .map_err(|_| format!("invalid port \"{port}\""))?,
                _ => return Err("echo-server takes one argument: the port".into()),
            };
            bench::echo_server(port)
        }
        "echo-client" => {
            let p = parse(cmd, rest, &[])?;
            match p.positionals.as_slice() {
                [addr, port, n] => {
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| format!("invalid port \"{port}\""))?;
                    let n = n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("invalid count \"{n}\": expected a positive whole number")
                    })?;
                    bench::echo_client(addr, port, n)
                }
                _ => Err(
                    "echo-client takes three arguments: the address, the port and the count".into(),
                ),
            }
        }
        other => Err(format!(
            "unknown command '{other}' (try `cargo xtask --help`)"
        )),
    }
}

fn dist_options(cmd: &str, rest: &[String]) -> Result<dist::Options> {
    let p = parse(cmd, rest, &[("libc", true), ("target-dir", true)])?;
    let libc = p.value("libc").map(dist::Libc::parse).transpose()?;
    // Nested cargo runs in the workspace root, so a relative DIR is made absolute here.
    let target_dir = match p.value("target-dir") {
        None => None,
        Some(d) => Some(
            std::env::current_dir()
                .map_err(|e| format!("cannot resolve --target-dir {d}: {e}"))?
                .join(d),
        ),
    };
    p.no_positionals(cmd)?;
    Ok(dist::Options { libc, target_dir })
}

/// Flags and positionals of one subcommand.
#[derive(Debug, PartialEq)]
struct Parsed {
    flags: Vec<(&'static str, Option<String>)>,
    positionals: Vec<String>,
}

impl Parsed {
    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| *n == name)
    }
    fn no_positionals(&self, cmd: &str) -> Result<()> {
        match self.positionals.first() {
            Some(p) => Err(format!("unexpected argument '{p}' for {cmd}")),
            None => Ok(()),
        }
    }
}

/// Parses `--name=value`, `--name value` and `--switch`; `spec` lists `(name, takes_value)`.
/// Everything after `--` is positional.
fn parse(cmd: &str, args: &[String], spec: &[(&'static str, bool)]) -> Result<Parsed> {
    let mut out = Parsed {
        flags: Vec::new(),
        positionals: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            out.positionals.extend(it.by_ref().cloned());
            break;
        }
        let Some(body) = arg.strip_prefix("--") else {
            if arg.starts_with('-') && arg.len() > 1 {
                return Err(format!("unknown option '{arg}' for {cmd}"));
            }
            out.positionals.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(&(name, takes_value)) = spec.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown option '--{name}' for {cmd}"));
        };
        let value = match (takes_value, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => Some(
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("missing value for option '--{name}'"))?,
            ),
            (false, None) => None,
            (false, Some(_)) => return Err(format!("option '--{name}' takes no value")),
        };
        out.flags.push((name, value));
    }
    Ok(out)
}

/// The workspace root: the parent of xtask's own manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The single place where xtask creates a process: it drives cargo, rustc and the built binaries.
#[allow(clippy::disallowed_methods)]
pub fn command(program: impl AsRef<OsStr>) -> Command {
    Command::new(program)
}

/// The cargo that runs us (so `cargo +toolchain xtask` stays on that toolchain), else `cargo`.
pub fn cargo() -> Command {
    command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `program arg arg` for log lines.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    // `$CARGO` is a long toolchain path; the log only needs to say "cargo".
    let mut s = match program.file_name() {
        Some(name) if name == "cargo" || name == "rustc" => name.to_string_lossy().into_owned(),
        _ => program.to_string_lossy().into_owned(),
    };
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; a spawn failure or a non-zero exit becomes an error naming it.
pub fn run_status(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    const SPEC: &[(&str, bool)] = &[("libc", true), ("replay", false)];

    /// Expected flags and positionals, or the error message.
    type Expect<'a> =
        std::result::Result<(&'a [(&'a str, Option<&'a str>)], &'a [&'a str]), &'a str>;

    fn check(input: &str, expect: Expect) {
        let got = parse("x", &argv(input), SPEC);
        match expect {
            Ok((flags, pos)) => {
                let got = got.unwrap_or_else(|e| panic!("{input:?}: unexpected error {e}"));
                let flags: Vec<(&str, Option<String>)> = flags
                    .iter()
                    .map(|(n, v)| (*n, v.map(String::from)))
                    .collect();
                assert_eq!(got.flags, flags, "{input:?}");
                assert_eq!(got.positionals, pos, "{input:?}");
            }
            Err(msg) => assert_eq!(got.unwrap_err(), msg, "{input:?}"),
        }
    }

    #[test]
    fn parses_flags() {
        check("--libc musl", Ok((&[("libc", Some("musl"))], &[])));
        check(
            "--libc=gnu a b",
            Ok((&[("libc", Some("gnu"))], &["a", "b"])),
        );
        check("--replay t1", Ok((&[("replay", None)], &["t1"])));
        check("-- --libc", Ok((&[], &["--libc"])));
        check("--libc", Err("missing value for option '--libc'"));
        check("--replay=yes", Err("option '--replay' takes no value"));
        check("--bogus", Err("unknown option '--bogus' for x"));
        check("-v", Err("unknown option '-v' for x"));
    }

    #[test]
    fn dispatch_rejects_bad_input() {
        assert_eq!(
            dispatch(&argv("frobnicate")).unwrap_err(),
            "unknown command 'frobnicate' (try `cargo xtask --help`)"
        );
        assert_eq!(
            dispatch(&argv("dist --libc uclibc")).unwrap_err(),
            "invalid value \"uclibc\" for --libc: expected gnu or musl"
        );
        assert_eq!(
            dispatch(&argv("tidy extra")).unwrap_err(),
            "unexpected argument 'extra' for tidy"
        );
        assert_eq!(
            dispatch(&argv("fuzz --seconds 0")).unwrap_err(),
            "invalid value \"0\" for --seconds: expected a positive whole number"
        );
        assert!(dispatch(&argv("dist --help")).is_ok());
    }

    #[test]
    fn help_lists_every_command() {
        for cmd in [
            "dist",
            "tidy",
            "fuzz",
            "ci",
            "test",
            "bench",
            "echo-server",
            "echo-client",
            "help",
        ] {
            assert!(
                HELP.lines().any(|l| l.trim_start().starts_with(cmd)),
                "help does not list {cmd}"
            );
        }
    }
}
