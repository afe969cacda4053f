//! The packager bundle `rootlesskit-VERSION-ARCH.tar.gz` that `cargo xtask dist` writes next to
//! the binaries: its listing and checksums, man pages that lint clean and name every flag the
//! binaries' `--help` names, and shell completions that parse and complete.
// Tests run programs: that is their job.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ci::{Scratch, skip};

/// The dist directory and the one bundle in it.
fn bundle() -> Option<(PathBuf, PathBuf)> {
    let dir = PathBuf::from(std::env::var_os("RKRS_BIN_DIR")?);
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("rootlesskit-") && n.ends_with(".tar.gz")
        })
        .collect();
    found.sort();
    assert!(
        found.len() <= 1,
        "more than one bundle in {}: {found:?}",
        dir.display()
    );
    Some((dir, found.pop()?))
}

/// The bundle extracted into a scratch directory.
fn extracted(name: &str) -> Option<(Scratch, PathBuf, PathBuf)> {
    let (dir, tarball) = bundle()?;
    let s = Scratch::new(name);
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&s.path)
        .status()
        .unwrap();
    assert!(st.success(), "tar -x {}", tarball.display());
    Some((s, dir, tarball))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn have(program: &str) -> bool {
    ci::have(program)
}

#[test]
fn listing_owners_and_checksums() {
    let Some((s, dir, tarball)) = extracted("pkg-list") else {
        skip!("RKRS_BIN_DIR has no rootlesskit-*.tar.gz (run cargo xtask dist)");
    };
    let name = tarball.file_name().unwrap().to_string_lossy().into_owned();
    let arch = std::env::consts::ARCH;
    assert!(
        name.starts_with("rootlesskit-3.") && name.ends_with(&format!("-{arch}.tar.gz")),
        "{name}"
    );
    let (ok, list, err) = run(Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(&tarball));
    assert!(ok, "{err}");
    let mut names = Vec::new();
    for line in list.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1], "0/0", "owner of {line}");
        let mode =
            if f[0].starts_with('d') || f[5].starts_with("bin/") || f[5].starts_with("libexec/") {
                "rwxr-xr-x"
            } else {
                "rw-r--r--"
            };
        assert_eq!(&f[0][1..], mode, "{line}");
        names.push(f[5].to_string());
    }
    let want = [
        "bin/",
        "bin/rootlessctl",
        "bin/rootlesskit",
        "bin/rootlesskit-docker-proxy",
        "libexec/",
        "libexec/rootlesskit/",
        "libexec/rootlesskit/rootlesskit-child",
        "libexec/rootlesskit/rootlesskit-unshare",
        "share/",
        "share/bash-completion/",
        "share/bash-completion/completions/",
        "share/bash-completion/completions/rootlessctl",
        "share/bash-completion/completions/rootlesskit",
        "share/doc/",
        "share/doc/rootlesskit/",
        "share/doc/rootlesskit/SHA256SUMS",
        "share/fish/",
        "share/fish/vendor_completions.d/",
        "share/fish/vendor_completions.d/rootlessctl.fish",
        "share/fish/vendor_completions.d/rootlesskit.fish",
        "share/man/",
        "share/man/man1/",
        "share/man/man1/rootlessctl.1",
        "share/man/man1/rootlesskit-docker-proxy.1",
        "share/man/man1/rootlesskit.1",
        "share/rootlesskit/",
        "share/rootlesskit/apparmor.d/",
        "share/rootlesskit/apparmor.d/usr.bin.rootlesskit",
        "share/zsh/",
        "share/zsh/site-functions/",
        "share/zsh/site-functions/_rootlessctl",
        "share/zsh/site-functions/_rootlesskit",
    ];
    assert_eq!(names, want);
    // The binaries are the dist binaries.
    for (name, sub) in [
        ("rootlesskit", "bin"),
        ("rootlesskit-child", "libexec/rootlesskit"),
    ] {
        assert!(
            fs::read(dir.join(name)).unwrap() == fs::read(s.path.join(sub).join(name)).unwrap(),
            "{sub}/{name} is not the dist binary"
        );
    }
    // Every file but the list itself is in the list, and each sum is right.
    let (ok, out, err) = run(Command::new("sha256sum")
        .args(["-c", "--strict", "share/doc/rootlesskit/SHA256SUMS"])
        .current_dir(&s.path));
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.lines().count(),
        want.iter().filter(|n| !n.ends_with('/')).count() - 1
    );
    // And the dist directory's SHA256SUMS covers the tarball.
    let (ok, out, err) = run(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&dir));
    assert!(ok && out.contains(&format!("{name}: OK")), "{out}{err}");
}

/// `--name` words of a help text's option lines (lines that start with blanks and a dash).
fn help_flags(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !(t.starts_with('-') && line.starts_with(' ')) {
            continue;
        }
        let names = t.split("  ").next().unwrap_or("");
        for w in names.split([' ', ',', '[', ']']) {
            if w.starts_with('-') && w.len() > 1 {
                out.insert(w.trim_start_matches('-').to_string());
            }
        }
    }
    out
}

/// Flag names in the `.TP` tags of a man page.
fn man_flags(man: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut tag = false;
    for line in man.lines() {
        if tag {
            for part in line.split("\\fB").skip(1) {
                let name = part.split("\\fR").next().unwrap_or("").replace("\\-", "-");
                out.insert(name.trim_start_matches('-').to_string());
            }
        }
        tag = line == ".TP";
    }
    out
}

fn help_of(bin: &Path, args: &[&str]) -> String {
    let o = Command::new(bin).args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    text
}

#[test]
fn man_pages_name_every_flag_of_the_help() {
    let Some((s, _, _)) = extracted("pkg-man") else {
        skip!("RKRS_BIN_DIR has no rootlesskit-*.tar.gz (run cargo xtask dist)");
    };
    let bin = s.path.join("bin");
    let man = |n: &str| fs::read_to_string(s.path.join("share/man/man1").join(n)).unwrap();

    let kit = help_flags(&help_of(&bin.join("rootlesskit"), &["--help"]));
    assert!(
        kit.contains("net") && kit.contains("p") && kit.len() > 30,
        "{kit:?}"
    );
    assert_eq!(man_flags(&man("rootlesskit.1")), kit);

    let ctl_bin = bin.join("rootlessctl");
    let top = help_of(&ctl_bin, &["--help"]);
    let mut ctl = help_flags(&top);
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.trim_end_matches(',').to_string())
        .collect();
    assert!(commands.contains(&"add-ports".to_string()), "{commands:?}");
    let ctl_man = man("rootlessctl.1");
    for c in &commands {
        assert!(
            ctl_man.contains(&format!(".SS {}\n", c.replace('-', "\\-"))),
            "no section for {c}"
        );
        if c != "help" {
            ctl.extend(help_flags(&help_of(&ctl_bin, &["help", c])));
        }
    }
    assert_eq!(man_flags(&ctl_man), ctl);

    let proxy = help_flags(&help_of(&bin.join("rootlesskit-docker-proxy"), &["--help"]));
    assert!(proxy.contains("host-port"), "{proxy:?}");
    assert_eq!(man_flags(&man("rootlesskit-docker-proxy.1")), proxy);
}

#[test]
fn man_pages_lint_clean() {
    let Some((s, _, _)) = extracted("pkg-lint") else {
        skip!("RKRS_BIN_DIR has no rootlesskit-*.tar.gz (run cargo xtask dist)");
    };
    let dir = s.path.join("share/man/man1");
    for page in [
        "rootlesskit.1",
        "rootlessctl.1",
        "rootlesskit-docker-proxy.1",
    ] {
        let path = dir.join(page);
        if have("mandoc") {
            let (ok, out, err) = run(Command::new("mandoc").arg("-Tlint").arg(&path));
            assert!(
                ok && out.is_empty() && err.is_empty(),
                "{page}:\n{out}{err}"
            );
        } else if have("groff") {
            let (ok, out, err) = run(Command::new("groff").args(["-man", "-ww", "-z"]).arg(&path));
            assert!(
                ok && out.is_empty() && err.is_empty(),
                "{page}:\n{out}{err}"
            );
        } else {
            skip!("neither mandoc nor groff is installed");
        }
    }
}

/// Sources a bash completion file and completes `words` (the last one being completed).
fn bash_complete(file: &Path, func: &str, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; {func}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let (ok, out, err) = run(Command::new("bash").args(["--norc", "-c", &script]));
    assert!(ok && err.is_empty(), "{words:?}: {err}");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn completions_parse_and_complete() {
    let Some((s, _, _)) = extracted("pkg-comp") else {
        skip!("RKRS_BIN_DIR has no rootlesskit-*.tar.gz (run cargo xtask dist)");
    };
    let bash = s.path.join("share/bash-completion/completions");
    for f in ["rootlesskit", "rootlessctl"] {
        let (ok, out, err) = run(Command::new("bash").arg("-n").arg(bash.join(f)));
        assert!(ok, "bash -n {f}: {out}{err}");
    }
    let kit = bash.join("rootlesskit");
    let c = |w: &[&str]| bash_complete(&kit, "_rootlesskit", w);
    assert_eq!(c(&["rootlesskit", "--ne"]), ["--net="]);
    assert_eq!(c(&["rootlesskit", "--pid"]), ["--pidns"]);
    // The value, split at "=" the way bash's COMP_WORDBREAKS does, or not.
    assert_eq!(c(&["rootlesskit", "--net", "=", "sl"]), ["slirp4netns"]);
    assert_eq!(c(&["rootlesskit", "--net=sl"]), ["slirp4netns"]);
    assert_eq!(c(&["rootlesskit", "--port-driver", "b"]), ["builtin"]);
    // After the command, flags are the command's, not ours.
    assert!(c(&["rootlesskit", "--net=host", "sh", "--ne"]).is_empty());
    assert!(c(&["rootlesskit", "--state-dir", "/x", "sh", "--ne"]).is_empty());

    let ctl = bash.join("rootlessctl");
    let c = |w: &[&str]| bash_complete(&ctl, "_rootlessctl", w);
    assert_eq!(c(&["rootlessctl", "li"]), ["list-ports"]);
    assert_eq!(c(&["rootlessctl", "--so"]), ["--socket="]);
    assert_eq!(c(&["rootlessctl", "add-ports", "--j"]), ["--json"]);
    assert_eq!(c(&["rootlessctl", "help", "rem"]), ["remove-ports"]);

    if have("zsh") {
        let zsh = s.path.join("share/zsh/site-functions");
        for f in ["_rootlesskit", "_rootlessctl"] {
            let (ok, out, err) = run(Command::new("zsh").arg("-n").arg(zsh.join(f)));
            assert!(ok, "zsh -n {f}: {out}{err}");
        }
    }
    if have("fish") {
        let fish = s.path.join("share/fish/vendor_completions.d");
        for f in ["rootlesskit.fish", "rootlessctl.fish"] {
            let (ok, out, err) = run(Command::new("fish").arg("--no-execute").arg(fish.join(f)));
            assert!(ok, "fish --no-execute {f}: {out}{err}");
        }
    }
}

#[test]
fn apparmor_profile_allows_userns_for_the_installed_path() {
    let Some((s, _, _)) = extracted("pkg-aa") else {
        skip!("RKRS_BIN_DIR has no rootlesskit-*.tar.gz (run cargo xtask dist)");
    };
    let path = s
        .path
        .join("share/rootlesskit/apparmor.d/usr.bin.rootlesskit");
    let text = fs::read_to_string(&path).unwrap();
    let code: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        code,
        [
            "abi <abi/4.0>,",
            "include <tunables/global>",
            "profile rootlesskit /usr/bin/rootlesskit flags=(unconfined) {",
            "userns,",
            "include if exists <local/rootlesskit>",
            "}",
        ]
    );
    if have("apparmor_parser") {
        let (ok, out, err) = run(Command::new("apparmor_parser")
            .args(["--skip-kernel-load", "--skip-cache", "-Q"])
            .arg(&path));
        assert!(ok, "{out}{err}");
    }
}
