//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` (nightly with AddressSanitizer when available, else stable without a sanitizer) and replays their corpus in `fuzz/corpus/<target>/`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Result;

/// Seconds of fuzzing per target when `--seconds` is not given.
pub(crate) const DEFAULT_SECONDS: u64 = 60;

const INSTALL_HINT: &str =
    "cargo-fuzz is not installed; install it with `cargo install cargo-fuzz --locked`";

#[derive(Debug, Default)]
pub(crate) struct Options {
    pub seconds: u64,
    /// Run each corpus input once instead of fuzzing.
    pub replay: bool,
    /// Targets to run; empty means all of them.
    pub targets: Vec<String>,
}

pub(crate) fn run(root: &Path, opts: &Options) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let manifest_path = fuzz_dir.join("Cargo.toml");
    let manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    let chosen = select(&targets(&manifest), &opts.targets)?;

    // `cargo +nightly` needs the rustup proxy, so these run `cargo` from PATH, not `$CARGO`.
    if !succeeds(&["fuzz", "--version"]) {
        return Err(INSTALL_HINT.into());
    }
    let nightly = succeeds(&["+nightly", "--version"]);
    if nightly {
        println!("fuzz: nightly toolchain found, fuzzing with AddressSanitizer");
    } else {
        println!(
            "fuzz: no nightly toolchain, fuzzing on this toolchain without a sanitizer (-s none)"
        );
    }

    for target in &chosen {
        let mut cmd = crate::command("cargo");
        cmd.current_dir(root);
        if nightly {
            cmd.arg("+nightly");
        }
        cmd.args(["fuzz", "run"]);
        if !nightly {
            cmd.args(["-s", "none"]);
        }
        cmd.arg("--fuzz-dir").arg(&fuzz_dir).arg(target);
        if opts.replay {
            let files = corpus_files(&fuzz_dir, target)?;
            if files.is_empty() {
                println!("fuzz: {target}: no inputs in fuzz/corpus/{target}/, skipped");
                continue;
            }
            println!("fuzz: {target}: replaying {} corpus input(s)", files.len());
            // libFuzzer runs every input of the corpus directory once and stops with -runs=0.
            cmd.arg(corpus_dir(&fuzz_dir, target))
                .args(["--", "-runs=0"]);
        } else {
            cmd.arg("--")
                .arg(format!("-max_total_time={}", opts.seconds));
        }
        println!("==> {}", crate::display(&cmd));
        crate::run_status(&mut cmd)
            .map_err(|e| format!("fuzz target {target} failed: {e}; crashing inputs are kept in fuzz/artifacts/{target}/"))?;
    }
    Ok(())
}

/// Whether `cargo ARGS` runs and exits 0 (output discarded).
fn succeeds(args: &[&str]) -> bool {
    crate::command("cargo")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The requested targets in the given order, or all of them; unknown names are an error.
fn select(known: &[String], wanted: &[String]) -> Result<Vec<String>> {
    if known.is_empty() {
        return Err("fuzz/Cargo.toml lists no [[bin]] targets".into());
    }
    if wanted.is_empty() {
        return Ok(known.to_vec());
    }
    for w in wanted {
        if !known.contains(w) {
            return Err(format!(
                "unknown fuzz target '{w}' (targets: {})",
                known.join(", ")
            ));
        }
    }
    Ok(wanted.to_vec())
}

/// The `name`s of the `[[bin]]` tables in the fuzz crate's Cargo.toml.
pub(crate) fn targets(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line.replace(' ', "") == "[[bin]]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_bin && key.trim() == "name" {
            let value = value
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if !value.is_empty() {
                out.push(value.to_string());
            }
        }
    }
    out
}

/// `fuzz/corpus/<target>/`, where cargo-fuzz keeps the inputs it found interesting.
pub(crate) fn corpus_dir(fuzz_dir: &Path, target: &str) -> PathBuf {
    fuzz_dir.join("corpus").join(target)
}

/// The corpus inputs of `target`, sorted: regular, non-hidden files of `fuzz/corpus/<target>/`.
/// A missing directory is an empty corpus.
pub(crate) fn corpus_files(fuzz_dir: &Path, target: &str) -> Result<Vec<PathBuf>> {
    let dir = corpus_dir(fuzz_dir, target);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_manifest() {
        let manifest = concat!(
            "[package]\nname = \"rootlesskit-fuzz\"\n\n[dependencies]\nname = \"not-a-bin\"\n\n",
            "[[bin]]\nname = \"proto_frame\"\npath = \"fuzz_targets/proto_frame.rs\"\ntest = false\n\n",
            "[[ bin ]]\nname = \"cli\" # the CLI parser\n\n[[bin]]\npath = \"x.rs\"\nname=\"subid\"\n",
        );
        assert_eq!(targets(manifest), ["proto_frame", "cli", "subid"]);
        assert_eq!(targets("[package]\nname = \"x\"\n"), Vec::<String>::new());
    }

    /// The real fuzz crate lists the three targets the project fuzzes.
    #[test]
    fn targets_of_the_fuzz_crate() {
        let manifest = fs::read_to_string(crate::workspace_root().join("fuzz/Cargo.toml")).unwrap();
        let t = targets(&manifest);
        for name in ["proto_frame", "cli", "subid"] {
            assert!(t.iter().any(|x| x == name), "{name} missing from {t:?}");
        }
    }

    #[test]
    fn target_selection() {
        let known: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(select(&known, &[]), Ok(s(&["a", "b"])));
        assert_eq!(select(&known, &s(&["b"])), Ok(s(&["b"])));
        assert_eq!(
            select(&known, &s(&["c"])),
            Err("unknown fuzz target 'c' (targets: a, b)".into())
        );
        assert_eq!(
            select(&[], &[]),
            Err("fuzz/Cargo.toml lists no [[bin]] targets".into())
        );
    }

    #[test]
    fn corpus_listing() {
        let fuzz = std::env::temp_dir().join(format!("xtask-corpus-{}", std::process::id()));
        let dir = corpus_dir(&fuzz, "proto_frame");
        fs::create_dir_all(dir.join("subdir")).unwrap();
        for name in ["b2", "a1", ".lock"] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        let got = corpus_files(&fuzz, "proto_frame");
        let missing = corpus_files(&fuzz, "cli");
        let _ = fs::remove_dir_all(&fuzz);
        assert_eq!(got, Ok(vec![dir.join("a1"), dir.join("b2")]));
        assert_eq!(missing, Ok(vec![]));
    }
}
