//! Source rules, checked by the `tidy` test under `cargo test` and by `cargo xtask tidy`: module docs, where `unsafe` and process spawning may appear, which crates the runtime crates may depend on, and that every declared dependency is used.
//!
//! The checks read the source text, not the compiler's view, so they are deliberately simple.
//! Comments, strings and char literals are blanked out first (see [`mask`]), so a rule only
//! fires on real code. That every `unsafe` block argues itself in a `// SAFETY:` comment is
//! clippy's `undocumented_unsafe_blocks`, which tidy only checks is switched on.

use std::fmt;
use std::fs;
use std::path::Path;

/// Crates that end up in the shipped binaries.
pub(crate) const RUNTIME_CRATES: &[&str] = &["parent", "child", "proto", "sys", "unshare-helper"];
/// Crate directories whose `.rs` files must follow the rules.
const CHECKED_DIRS: &[&str] = &[
    "parent",
    "child",
    "proto",
    "sys",
    "unshare-helper",
    "xtask",
    "ci",
];
/// What a runtime crate's manifest may name under `[dependencies]`.
/// (`child` is a binary only: no other crate may import it.)
const ALLOWED_DEPS: &[&str] = &["rustix", "linux-raw-sys", "proto", "sys"];
/// What may appear in `cargo tree -e normal` of a runtime crate (bitflags comes with rustix).
const ALLOWED_TREE: &[&str] = &[
    "rustix",
    "linux-raw-sys",
    "bitflags",
    "proto",
    "sys",
    "child",
    "parent",
    "unshare-helper",
];
/// The one file that may run programs, and may hold one `unsafe { cmd.pre_exec(..) }`.
const EXEC_RS: &str = "parent/src/exec.rs";
/// Workspace lints that must stay `"deny"`: `unsafe` only where allowed, and every `unsafe`
/// block with its `// SAFETY:` comment.
const WORKSPACE_LINTS: &[&str] = &["unsafe_code", "undocumented_unsafe_blocks"];
/// The one `unsafe` call allowed outside the sys crate: a binary adopting a descriptor it
/// inherited, which only its `main` can argue for.
const ADOPT_CALL: &str = "sys::fd::adopt_inherited_fd(";

/// One broken rule, printed as `file:line: message`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub file: String,
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.msg)
    }
}

/// `cargo xtask tidy`: the source rules plus a `cargo tree` check of every runtime crate.
pub(crate) fn run(root: &Path) -> crate::Result<()> {
    let (files, violations) = check_workspace(root)?;
    let mut problems: Vec<String> = violations.iter().map(ToString::to_string).collect();
    for krate in RUNTIME_CRATES {
        let mut cmd = crate::cargo();
        cmd.current_dir(root).args([
            "tree",
            "-e",
            "normal",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--prefix",
            "none",
            "-p",
            krate,
        ]);
        let shown = crate::display(&cmd);
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!("`{shown}` failed ({}): {first}", out.status));
        }
        problems.extend(dep_tree_problems(
            krate,
            &String::from_utf8_lossy(&out.stdout),
        ));
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.is_empty() {
        println!(
            "tidy: ok ({files} files; dependency trees of {})",
            RUNTIME_CRATES.join(", ")
        );
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s), listed above",
            problems.len()
        ))
    }
}

/// Checks every `.rs` file under the crate directories and each runtime crate's `Cargo.toml`.
/// Returns the number of files read and the rules they break.
pub(crate) fn check_workspace(root: &Path) -> crate::Result<(usize, Vec<Violation>)> {
    let mut files = Vec::new();
    for dir in CHECKED_DIRS {
        collect_rs(root, &root.join(dir), &mut files)?;
    }
    files.sort();
    let mut out = Vec::new();
    let mut texts = Vec::new();
    for rel in &files {
        match fs::read(root.join(rel)) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    out.extend(check_rust(rel, &text));
                    texts.push((rel.as_str(), text));
                }
                Err(_) => out.push(Violation {
                    file: rel.clone(),
                    line: 1,
                    msg: "not valid UTF-8".into(),
                }),
            },
            Err(e) => return Err(format!("cannot read {rel}: {e}")),
        }
    }
    for krate in CHECKED_DIRS {
        let rel = format!("{krate}/Cargo.toml");
        let text = match fs::read_to_string(root.join(&rel)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {rel}: {e}")),
        };
        let src = format!("{krate}/src/");
        let sources: Vec<&str> = texts
            .iter()
            .filter(|(r, _)| r.starts_with(&src))
            .map(|(_, t)| t.as_str())
            .collect();
        out.extend(unused_dependencies(&rel, &text, &sources));
    }
    let mut count = files.len();
    for krate in RUNTIME_CRATES {
        let rel = format!("{krate}/Cargo.toml");
        match fs::read_to_string(root.join(&rel)) {
            Ok(text) => {
                count += 1;
                out.extend(check_manifest(&rel, &text));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {rel}: {e}")),
        }
    }
    match fs::read_to_string(root.join("Cargo.toml")) {
        Ok(text) => out.extend(check_workspace_lints(&text)),
        Err(e) => return Err(format!("cannot read Cargo.toml: {e}")),
    }
    Ok((count, out))
}

/// The workspace lints tidy leaves to the compiler must stay switched on.
fn check_workspace_lints(toml: &str) -> Vec<Violation> {
    let on = |name: &str| {
        toml.lines()
            .any(|l| l.split_whitespace().collect::<String>() == format!("{name}=\"deny\""))
    };
    WORKSPACE_LINTS
        .iter()
        .filter(|name| !on(name))
        .map(|name| Violation {
            file: "Cargo.toml".into(),
            line: 1,
            msg: format!("workspace lint `{name}` must be \"deny\""),
        })
        .collect()
}

/// Collects `.rs` files as `/`-separated paths relative to `root`, skipping `target` and hidden dirs.
fn collect_rs(root: &Path, dir: &Path, out: &mut Vec<String>) -> crate::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            if name != "target" && !name.starts_with('.') {
                collect_rs(root, &path, out)?;
            }
        } else if name.ends_with(".rs") {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(rel.join("/"));
        }
    }
    Ok(())
}

/// The rules for one Rust source file; `rel` is its `/`-separated path from the workspace root.
pub(crate) fn check_rust(rel: &str, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut report = |line: usize, msg: String| {
        out.push(Violation {
            file: rel.to_string(),
            line,
            msg,
        })
    };

    if !text.starts_with("//!") {
        report(
            1,
            "file does not start with a `//!` line saying what it owns".into(),
        );
    }

    let krate = rel.split('/').next().unwrap_or("");
    let runtime = RUNTIME_CRATES.contains(&krate);
    let in_sys = rel.starts_with("sys/src/");
    let code = mask(text);

    let mut pre_exec_seen = false;
    for pos in keyword_positions(&code, "unsafe") {
        let line = line_of(&code, pos);
        let after = code[pos + "unsafe".len()..].trim_start();
        let block = after.starts_with('{');
        let pre_exec = rel == EXEC_RS && block && is_pre_exec_call(after[1..].trim_start());
        let adopt = runtime && block && after[1..].trim_start().starts_with(ADOPT_CALL);
        if adopt {
            // A binary taking a descriptor it inherited: its caller's argument, not sys's.
        } else if pre_exec && !pre_exec_seen {
            pre_exec_seen = true;
        } else if pre_exec {
            report(
                line,
                format!("only one `unsafe {{ cmd.pre_exec(..) }}` is allowed in {EXEC_RS}"),
            );
        } else if !in_sys {
            report(
                line,
                "`unsafe` outside the sys crate (move it into a sys module)".into(),
            );
        }
    }

    if runtime && rel != EXEC_RS {
        let mut lines: Vec<usize> = command_positions(&code)
            .into_iter()
            .map(|p| line_of(&code, p))
            .collect();
        lines.dedup();
        for line in lines {
            report(
                line,
                format!("`std::process::Command` outside {EXEC_RS} (only exec.rs runs programs)"),
            );
        }
    }
    out
}

/// `cmd.pre_exec(` (any receiver name) at the start of `s`.
fn is_pre_exec_call(s: &str) -> bool {
    let ident_len = s.bytes().take_while(|&b| is_ident_byte(b)).count();
    ident_len > 0 && s[ident_len..].starts_with(".pre_exec(")
}

/// Byte offsets in `code` that use `std::process::Command`: the path `process::Command`, a
/// `process::{..}` import naming `Command`, a `process::*` glob, and, in a file with such an
/// import, `Command::new`. A bare `Command::new` alone is not flagged, because a crate may
/// have its own `Command` type (the child's spawn code does).
fn command_positions(code: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (pos, _) in code.match_indices("process::Command") {
        if !code
            .as_bytes()
            .get(pos + "process::Command".len())
            .copied()
            .is_some_and(is_ident_byte)
        {
            out.push(pos);
        }
    }
    out.extend(code.match_indices("process::*").map(|(p, _)| p));
    for (pos, _) in code.match_indices("process::{") {
        let body_start = pos + "process::{".len();
        let mut depth = 1;
        let mut end = code.len();
        for (i, b) in code[body_start..].bytes().enumerate() {
            match b {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = body_start + i;
                break;
            }
        }
        let body = &code[body_start..end];
        if !keyword_positions(body, "Command").is_empty() || body.contains('*') {
            out.push(pos);
        }
    }
    if !out.is_empty() {
        for (pos, _) in code.match_indices("Command::new") {
            let before = pos.checked_sub(1).map(|p| code.as_bytes()[p]);
            if !before.is_some_and(is_ident_byte) {
                out.push(pos);
            }
        }
    }
    out.sort_unstable();
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Offsets of `word` where it stands alone (not part of a longer identifier).
fn keyword_positions(code: &str, word: &str) -> Vec<usize> {
    let bytes = code.as_bytes();
    code.match_indices(word)
        .map(|(p, _)| p)
        .filter(|&p| {
            let before = p.checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(p + word.len()).copied();
            !before.is_some_and(is_ident_byte) && !after.is_some_and(is_ident_byte)
        })
        .collect()
}

/// 1-based line number of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Replaces the contents of comments, string literals (plain, byte, C and raw) and char
/// literals with spaces, keeping every newline, so the result has the same lines as `src`
/// and only code is left to search.
pub(crate) fn mask(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if ch == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() {
                let cur = c[i];
                blank(&mut out, cur);
                i += 1;
                if cur == '\\' {
                    if let Some(&esc) = c.get(i) {
                        blank(&mut out, esc);
                        i += 1;
                    }
                } else if cur == '"' {
                    break;
                }
            }
        } else if let Some(hashes) = raw_string_hashes(&c, i, is_ident) {
            // `r`, the hashes and the opening quote.
            for _ in 0..hashes + 2 {
                out.push(' ');
            }
            i += hashes + 2;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    for _ in 0..hashes + 1 {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if ch == '\'' && next == Some('\\') {
            // An escaped char literal such as '\n', '\'' or '\u{1F600}'.
            let start = i;
            i += 3;
            while i < c.len() && c[i] != '\'' && c[i] != '\n' {
                i += 1;
            }
            i = (i + 1).min(c.len());
            for _ in start..i {
                out.push(' ');
            }
        } else if ch == '\'' && c.get(i + 2) == Some(&'\'') && next != Some('\n') {
            out.push_str("   ");
            i += 3;
        } else {
            // Code, including lifetimes and labels ('a, 'outer).
            out.push(ch);
            i += 1;
        }
    }
    out
}

/// If a raw string (`r"`, `r#"`, `br"`, `cr#"`, ...) starts with the `r` at `i`, its number of `#`.
fn raw_string_hashes(c: &[char], i: usize, is_ident: impl Fn(char) -> bool) -> Option<usize> {
    if c[i] != 'r' {
        return None;
    }
    let starts_token = match i.checked_sub(1).map(|p| c[p]) {
        None => true,
        Some('b' | 'c') => !i.checked_sub(2).map(|p| c[p]).is_some_and(&is_ident),
        Some(prev) => !is_ident(prev),
    };
    if !starts_token {
        return None;
    }
    let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
    (c.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// The dependency rule for a runtime crate's `Cargo.toml`: `[dependencies]`,
/// `[build-dependencies]`, their `[target.*]` forms and `[dependencies.NAME]` tables.
pub(crate) fn check_manifest(rel: &str, text: &str) -> Vec<Violation> {
    enum Section {
        Other,
        Table,
        Single,
    }
    let mut out = Vec::new();
    let mut check = |line: usize, name: &str| {
        if !ALLOWED_DEPS.contains(&name) {
            out.push(Violation {
                file: rel.to_string(),
                line,
                msg: format!(
                    "runtime crate depends on `{name}` (allowed: {})",
                    ALLOWED_DEPS.join(", ")
                ),
            });
        }
    };
    let mut section = Section::Other;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let t = raw.split(" #").next().unwrap_or("").trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with("[[") {
            section = Section::Other;
            continue;
        }
        if let Some(header) = t.strip_prefix('[') {
            let header = header.rsplit_once(']').map_or(header, |(h, _)| h).trim();
            section = match dependency_header(header) {
                None => Section::Other,
                Some(None) => Section::Table,
                Some(Some(name)) => {
                    check(line, name);
                    Section::Single
                }
            };
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            continue;
        };
        let key = key.trim();
        match section {
            Section::Table => {
                let name = key
                    .split('.')
                    .next()
                    .unwrap_or(key)
                    .trim()
                    .trim_matches('"');
                check(line, string_value_of(value, "package").unwrap_or(name));
            }
            Section::Single if key == "package" => check(line, value.trim().trim_matches('"')),
            _ => {}
        }
    }
    out
}

/// The unused-dependency rule: every crate named under `[dependencies]` (its `[target.*]` form
/// and `[dependencies.NAME]` tables too) of the manifest `rel` must be used in `sources`, the
/// crate's `src/` files: a path `name::` or a `use name` / `extern crate name`, with `-` as
/// `_`. A crate used only by tests belongs in `[dev-dependencies]`, which is not checked.
pub(crate) fn unused_dependencies(rel: &str, manifest: &str, sources: &[&str]) -> Vec<Violation> {
    let mut declared: Vec<(usize, &str)> = Vec::new();
    let mut table = false;
    for (idx, raw) in manifest.lines().enumerate() {
        let t = raw.split(" #").next().unwrap_or("").trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(header) = t.strip_prefix('[') {
            let header = header.rsplit_once(']').map_or(header, |(h, _)| h).trim();
            table = false;
            if header.starts_with('[') || header.contains("build-dependencies") {
                continue;
            }
            match dependency_header(header) {
                Some(None) => table = true,
                Some(Some(name)) => declared.push((idx + 1, name)),
                None => {}
            }
            continue;
        }
        if table && let Some((key, _)) = t.split_once('=') {
            let key = key.trim();
            let name = key
                .split('.')
                .next()
                .unwrap_or(key)
                .trim()
                .trim_matches('"');
            declared.push((idx + 1, name));
        }
    }
    let code: Vec<String> = sources.iter().map(|s| mask(s)).collect();
    declared
        .into_iter()
        .filter(|(_, name)| {
            let ident = name.replace('-', "_");
            !code.iter().any(|c| uses_crate(c, &ident))
        })
        .map(|(line, name)| Violation {
            file: rel.to_string(),
            line,
            msg: format!("dependency {name} is not used"),
        })
        .collect()
}

/// Whether masked `code` names the crate `ident`: `ident::` (also `::ident::`) that is not a
/// later segment of another path (`crate::ident::`, `self.ident`), or `use ident` /
/// `extern crate ident` on its own.
fn uses_crate(code: &str, ident: &str) -> bool {
    keyword_positions(code, ident).into_iter().any(|pos| {
        let before = code[..pos].trim_end();
        let after = code[pos + ident.len()..].trim_start();
        let path = after.starts_with("::");
        if let Some(prefix) = before.strip_suffix("::") {
            // `::ident` is the crate; `x::ident` a path inside something else.
            let prev = prefix.trim_end().bytes().last();
            return path && !prev.is_some_and(|b| is_ident_byte(b) || b == b'>' || b == b')');
        }
        if before.ends_with('.') {
            return false;
        }
        let word_before = |w: &str| {
            before.ends_with(w)
                && !before[..before.len() - w.len()]
                    .bytes()
                    .last()
                    .is_some_and(is_ident_byte)
        };
        path || ((word_before("use") || word_before("crate"))
            && (after.starts_with(';') || after.starts_with("as ")))
    })
}

/// For a table header (without brackets): `None` if it is not a dependency table,
/// `Some(None)` for `dependencies`-style tables, `Some(Some(name))` for `dependencies.NAME`.
/// `target.<spec>.` prefixes are skipped; the spec may be a quoted `cfg(...)` with dots in it.
fn dependency_header(header: &str) -> Option<Option<&str>> {
    let tail = if header.starts_with("target.") {
        let at = [".dependencies", ".build-dependencies"]
            .iter()
            .filter_map(|k| header.rfind(k))
            .max()?;
        &header[at + 1..]
    } else {
        header
    };
    let (kind, name) = match tail.split_once('.') {
        Some((kind, name)) => (kind, Some(name.trim().trim_matches('"'))),
        None => (tail, None),
    };
    matches!(kind.trim(), "dependencies" | "build-dependencies").then_some(name)
}

/// The string value of `key = "..."` inside an inline table such as `{ version = "1", package = "x" }`.
fn string_value_of<'a>(inline: &'a str, key: &str) -> Option<&'a str> {
    let body = inline.trim().strip_prefix('{')?;
    body.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_end_matches('}').trim().trim_matches('"'))
    })
}

/// Packages in `cargo tree -e normal --prefix none -p KRATE` output that are not allowed.
pub(crate) fn dep_tree_problems(krate: &str, output: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = line.split_whitespace().next().unwrap_or(line);
        if !ALLOWED_TREE.contains(&name)
            && !seen
                .iter()
                .any(|s: &String| s.split_whitespace().next() == Some(name))
        {
            seen.push(line.trim_end_matches(" (*)").to_string());
        }
    }
    seen.into_iter()
        .map(|pkg| {
            format!(
                "cargo tree -p {krate}: `{pkg}` is not allowed in a runtime binary (allowed: {})",
                ALLOWED_TREE.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real tree: `cargo test` fails when any source file breaks a rule.
    #[test]
    fn tidy() {
        let (files, problems) =
            check_workspace(&crate::workspace_root()).expect("read the workspace");
        assert!(files > 0, "no files found");
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            list.is_empty(),
            "tidy found {} problem(s):\n{}",
            list.len(),
            list.join("\n")
        );
    }

    fn check(rel: &str, src: &str, expect: &[(usize, &str)]) {
        let got: Vec<(usize, String)> = check_rust(rel, src)
            .into_iter()
            .map(|v| (v.line, v.msg))
            .collect();
        let expect: Vec<(usize, String)> =
            expect.iter().map(|(l, m)| (*l, m.to_string())).collect();
        assert_eq!(got, expect, "{rel}:\n{src}");
    }

    const NO_DOC: &str = "file does not start with a `//!` line saying what it owns";
    const OUTSIDE: &str = "`unsafe` outside the sys crate (move it into a sys module)";
    const COMMAND: &str =
        "`std::process::Command` outside parent/src/exec.rs (only exec.rs runs programs)";
    const TWO_PRE_EXEC: &str =
        "only one `unsafe { cmd.pre_exec(..) }` is allowed in parent/src/exec.rs";

    #[test]
    fn module_doc() {
        check("proto/src/lib.rs", "//! Frames.\n", &[]);
        check("ci/tests/a.rs", "// Frames.\n", &[(1, NO_DOC)]);
        check("xtask/src/x.rs", "\n//! late\n", &[(1, NO_DOC)]);
        check("child/src/a.rs", "#![allow(x)]\n//! late\n", &[(1, NO_DOC)]);
    }

    #[test]
    fn unsafe_placement_and_safety_comments() {
        let ok = "//! Sys.\nfn f() {\n    // SAFETY: fd is open.\n    unsafe { g() }\n}\n";
        check("sys/src/fd.rs", ok, &[]);
        check("sys/src/nested/fd.rs", ok, &[]);
        check("child/src/sys/fd.rs", ok, &[(4, OUTSIDE)]);
        check("child/src/fd.rs", ok, &[(4, OUTSIDE)]);
        let adopt = "//! Main.\n// SAFETY: inherited, taken once.\nlet s = unsafe { sys::fd::adopt_inherited_fd(3) };\n";
        check("child/src/main.rs", adopt, &[]);
        check("xtask/src/main.rs", adopt, &[(3, OUTSIDE)]);
        check("xtask/src/sys/fd.rs", ok, &[(4, OUTSIDE)]);
        check("ci/src/lib.rs", ok, &[(4, OUTSIDE)]);
        // Whether a block has its `// SAFETY:` comment is clippy's `undocumented_unsafe_blocks`.
        let none = "//! Sys.\nfn f() { unsafe { g() } }\n";
        check("sys/src/a.rs", none, &[]);
        check("proto/src/a.rs", none, &[(2, OUTSIDE)]);
        // Functions, impls, externs and attributes stay in the sys crate too.
        let decls = "//! Sys.\npub unsafe fn f() {}\nunsafe impl Send for X {}\n#[unsafe(no_mangle)]\nfn g() {}\n";
        check("sys/src/a.rs", decls, &[]);
        check(
            "unshare-helper/src/a.rs",
            decls,
            &[(2, OUTSIDE), (3, OUTSIDE), (4, OUTSIDE)],
        );
    }

    #[test]
    fn unsafe_in_comments_strings_and_names_is_ignored() {
        let src = concat!(
            "//! Nothing unsafe { here }.\n",
            "#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]\n",
            "// unsafe { x }\n",
            "/* unsafe fn\n /* nested */ unsafe impl */\n",
            "const A: &str = \"unsafe { \\\" unsafe fn\";\n",
            "const B: &str = r#\"unsafe { \" unsafe\"#;\n",
            "const C: &[u8] = br\"unsafe\";\n",
            "const D: char = '\"'; const E: char = '\\'';\n",
            "fn f<'a>(x: &'a str) -> &'a str { x } // unsafe\n",
            "let not_unsafe = my_unsafe_fn();\n",
        );
        check("parent/src/a.rs", src, &[]);
        // After a string ends, code is checked again.
        check(
            "parent/src/a.rs",
            "//! X.\nlet s = \"a\\\\\"; unsafe fn f() {}\n",
            &[(2, OUTSIDE)],
        );
        check(
            "parent/src/a.rs",
            "//! X.\nlet c = '\\u{1F600}'; unsafe fn f() {}\n",
            &[(2, OUTSIDE)],
        );
    }

    #[test]
    fn workspace_lints_stay_on() {
        let ok = "[workspace.lints.rust]\nunsafe_code = \"deny\"\n\n[workspace.lints.clippy]\nundocumented_unsafe_blocks = \"deny\"\n";
        assert_eq!(check_workspace_lints(ok), []);
        let off = "[workspace.lints.rust]\nunsafe_code = \"deny\"\n[workspace.lints.clippy]\nundocumented_unsafe_blocks = \"warn\"\n";
        let got: Vec<String> = check_workspace_lints(off)
            .into_iter()
            .map(|v| v.msg)
            .collect();
        assert_eq!(
            got,
            ["workspace lint `undocumented_unsafe_blocks` must be \"deny\""]
        );
    }

    #[test]
    fn the_one_pre_exec_in_exec_rs() {
        let one = "//! Exec.\n// SAFETY: only async-signal-safe calls.\nunsafe { cmd.pre_exec(reset_mask) };\n";
        check("parent/src/exec.rs", one, &[]);
        let formatted = "//! Exec.\n    // SAFETY: ok.\n    unsafe {\n        command.pre_exec(move || f());\n    }\n";
        check("parent/src/exec.rs", formatted, &[]);
        check("parent/src/idmap.rs", one, &[(3, OUTSIDE)]);
        let two = format!("{one}// SAFETY: again.\nunsafe {{ cmd.pre_exec(g) }};\n");
        check("parent/src/exec.rs", &two, &[(5, TWO_PRE_EXEC)]);
        let other = "//! Exec.\n// SAFETY: no.\nunsafe { libc_call() };\n";
        check("parent/src/exec.rs", other, &[(3, OUTSIDE)]);
    }

    #[test]
    fn command_only_in_exec_rs() {
        let src = "//! Run.\nuse std::process::Command;\nfn f() { Command::new(\"ip\"); }\n";
        check("parent/src/exec.rs", src, &[]);
        check("parent/src/net.rs", src, &[(2, COMMAND), (3, COMMAND)]);
        check("child/src/main.rs", src, &[(2, COMMAND), (3, COMMAND)]);
        check("ci/tests/run.rs", src, &[]);
        check("xtask/src/ci.rs", src, &[]);
        check(
            "child/src/a.rs",
            "//! X.\nuse std::process::{self, Command, Stdio};\n",
            &[(2, COMMAND)],
        );
        check(
            "child/src/a.rs",
            "//! X.\nuse std::process::{\n    exit,\n    Command,\n};\n",
            &[(2, COMMAND)],
        );
        check(
            "child/src/a.rs",
            "//! X.\nlet c = std::process::Command::new(\"x\");\n",
            &[(2, COMMAND)],
        );
        check(
            "child/src/a.rs",
            "//! X.\nuse std::process::*;\nfn f() { Command::new(\"x\"); }\n",
            &[(2, COMMAND), (3, COMMAND)],
        );
        check(
            "child/src/a.rs",
            "//! X.\nuse std::process::{exit, *};\n",
            &[(2, COMMAND)],
        );
        // Our own types may be called Command; CommandExt and exit are fine.
        let fine = concat!(
            "//! X.\nenum Command { Up }\nuse std::os::unix::process::CommandExt;\n",
            "use std::process::{exit, ExitCode};\nlet c = Command::Up; let d = MyCommand::new();\n",
            "let e = Command::new(path, argv, env)?; // the child's own raw spawn type\n",
            "// std::process::Command::new(\"no\")\n",
        );
        check("parent/src/bin/rootlessctl.rs", fine, &[]);
    }

    fn check_toml(src: &str, expect: &[(usize, &str)]) {
        let got: Vec<(usize, String)> = check_manifest("parent/Cargo.toml", src)
            .into_iter()
            .map(|v| (v.line, v.msg))
            .collect();
        let expect: Vec<(usize, String)> = expect
            .iter()
            .map(|(l, n)| (*l, format!("runtime crate depends on `{n}` (allowed: rustix, linux-raw-sys, proto, sys)")))
            .collect();
        assert_eq!(got, expect, "\n{src}");
    }

    #[test]
    fn runtime_dependencies() {
        let ok = "[package]\nname = \"parent\"\n\n[dependencies]\nrustix.workspace = true\nlinux-raw-sys = { workspace = true }\nsys.workspace = true\nproto = { path = \"../proto\" }\n\n[lints]\nworkspace = true\n";
        check_toml(ok, &[]);
        // The flags are parsed by sys::goflag; lexopt is no longer one of ours.
        check_toml("[dependencies]\nlexopt = \"0.3\"\n", &[(2, "lexopt")]);
        check_toml(
            "[dependencies]\nrustix = \"1\"\nserde = \"1\" # no\n",
            &[(3, "serde")],
        );
        check_toml(
            "[dependencies]\nlibc = { version = \"0.2\" }\n[dev-dependencies]\ntempfile = \"3\"\n",
            &[(2, "libc")],
        );
        check_toml("[build-dependencies]\ncc = \"1\"\n", &[(2, "cc")]);
        // The child is a binary: no crate imports it.
        check_toml("[dependencies]\nchild.workspace = true\n", &[(2, "child")]);
        check_toml(
            "[target.'cfg(target_os = \"linux\")'.dependencies]\nnix = \"0.32\"\n",
            &[(2, "nix")],
        );
        check_toml(
            "[target.x86_64-unknown-linux-gnu.dependencies]\nnix = \"0.32\"\n",
            &[(2, "nix")],
        );
        check_toml("[dependencies.nix]\nversion = \"0.32\"\n", &[(1, "nix")]);
        check_toml("[dependencies.rustix]\nversion = \"1\"\n", &[]);
        check_toml(
            "[dependencies]\nrustix = { package = \"evil\", version = \"1\" }\n",
            &[(2, "evil")],
        );
        check_toml(
            "[dependencies.rustix]\npackage = \"evil\"\n",
            &[(2, "evil")],
        );
        check_toml(
            "[[bin]]\nname = \"rootlesskit\"\n[features]\nlibc = []\n",
            &[],
        );
    }

    fn unused(manifest: &str, sources: &[&str]) -> Vec<(usize, String)> {
        unused_dependencies("unshare-helper/Cargo.toml", manifest, sources)
            .into_iter()
            .map(|v| (v.line, v.msg))
            .collect()
    }

    #[test]
    fn unused_dependencies_are_reported() {
        let manifest = "[package]\nname = \"x\"\n\n[dependencies]\nrustix.workspace = true\n\
                        linux-raw-sys = { workspace = true }\nlexopt = \"0.3\" # flags\n\
                        proto.workspace = true\n\n[dev-dependencies]\nserde = \"1\"\n\
                        [build-dependencies]\ncc = \"1\"\n";
        let all = [
            (5, "dependency rustix is not used".to_string()),
            (6, "dependency linux-raw-sys is not used".to_string()),
            (7, "dependency lexopt is not used".to_string()),
            (8, "dependency proto is not used".to_string()),
        ];
        assert_eq!(unused(manifest, &[]), all);
        // A path, `-` as `_`, a `use` of the crate itself, `::name`, `extern crate`.
        let used = [
            "//! A.\nfn f() { rustix::io::read(fd, b); }\n",
            "//! B.\nuse linux_raw_sys::general::{self, O_RDONLY};\n",
            "//! C.\npub use lexopt as flags;\n",
            "//! D.\nlet x = ::proto::Msg::Go;\n",
        ];
        assert_eq!(unused(manifest, &used), []);
        assert_eq!(
            unused(manifest, &["//! E.\nextern crate proto;\nuse lexopt;\n"]),
            all[..2]
        );
        // Not uses: comments, strings, another path's segment, a field, a longer name.
        let not = concat!(
            "//! rustix::io and lexopt::Parser, in the docs.\n",
            "// use proto;\n",
            "let s = \"rustix::io\"; let t = r#\"use lexopt;\"#;\n",
            "let a = crate::rustix::f(); let b = super::proto::Msg; let c = x.lexopt;\n",
            "let d = <T as Tr>::proto::X; let e = my_rustix::f(); let f = linux_raw_sys_x::g;\n",
            "use crate::proto;\n",
        );
        assert_eq!(unused(manifest, &[not]), all);
        // Target tables and `[dependencies.NAME]`; a renamed crate goes by its key.
        let more = "[target.'cfg(target_os = \"linux\")'.dependencies]\nnix = \"0.32\"\n\
                    [dependencies.rustix]\nversion = \"1\"\n\
                    [dependencies]\nflags = { package = \"lexopt\", version = \"0.3\" }\n";
        assert_eq!(
            unused(more, &["//! X.\nuse flags::Parser;\n"]),
            [
                (2, "dependency nix is not used".to_string()),
                (3, "dependency rustix is not used".to_string()),
            ]
        );
        assert_eq!(
            unshare_helper_violation(),
            "unshare-helper/Cargo.toml:16: dependency lexopt is not used"
        );
    }

    /// As `cargo xtask tidy` prints it.
    fn unshare_helper_violation() -> String {
        let manifest = "[package]\nname = \"unshare-helper\"\n\n\n\n\n\n\n\n\n\n\n\n\
                        [dependencies]\nchild.workspace = true\nlexopt.workspace = true\n";
        let v = unused_dependencies(
            "unshare-helper/Cargo.toml",
            manifest,
            &["//! Main.\nuse child::spawn;\n"],
        );
        assert_eq!(v.len(), 1);
        v[0].to_string()
    }

    #[test]
    fn dependency_tree() {
        let ok = "parent v0.1.0 (/w/parent)\nchild v0.1.0 (/w/child)\nsys v0.1.0 (/w/sys)\nproto v0.1.0 (/w/proto)\nrustix v1.1.6\nbitflags v2.13.2\nlinux-raw-sys v0.12.1\nrustix v1.1.6 (*)\n";
        assert_eq!(dep_tree_problems("parent", ok), Vec::<String>::new());
        let bad = "child v0.1.0 (/w/child)\nlibc v0.2.180\nerrno v0.3.1\nlibc v0.2.180 (*)\n";
        assert_eq!(
            dep_tree_problems("child", bad),
            [
                "cargo tree -p child: `libc v0.2.180` is not allowed in a runtime binary (allowed: rustix, linux-raw-sys, bitflags, proto, sys, child, parent, unshare-helper)",
                "cargo tree -p child: `errno v0.3.1` is not allowed in a runtime binary (allowed: rustix, linux-raw-sys, bitflags, proto, sys, child, parent, unshare-helper)",
            ]
        );
    }

    #[test]
    fn mask_keeps_lines_and_code() {
        let src = "a /* x\ny */ b \"s\nt\" c // d\n'e' 'f r#\"g\"# h";
        let masked = mask(src);
        assert_eq!(masked.lines().count(), src.lines().count());
        let words: Vec<&str> = masked.split_whitespace().collect();
        assert_eq!(words, ["a", "b", "c", "'f", "h"]);
    }
}
