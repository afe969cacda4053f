//! The packager bundle `rootlesskit-VERSION-ARCH.tar.gz` that `cargo xtask dist` writes: the binaries laid out for `/usr`, man pages and shell completions generated from the built binaries' own `--help`, an AppArmor profile, and `SHA256SUMS`, as a reproducible tar+gzip.
//!
//! The man pages and completions are made from the `--help` output of the binaries being
//! packaged, so they list exactly the flags those binaries accept: nothing is kept twice.
//! The archive is byte-for-byte reproducible: entries sorted, owner 0/0, every mtime
//! `SOURCE_DATE_EPOCH` (default: the last commit's time), and our own deflate, so no
//! compressor version can change the bytes.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::Result;

/// Where each shipped binary goes, relative to the prefix (`/usr`).
pub(crate) const LAYOUT: &[(&str, &str)] = &[
    ("rootlesskit", "bin"),
    ("rootlessctl", "bin"),
    ("rootlesskit-docker-proxy", "bin"),
    ("rootlesskit-child", "libexec/rootlesskit"),
    ("rootlesskit-unshare", "libexec/rootlesskit"),
];

/// The AppArmor profile's file name under `etc/apparmor.d/`.
const APPARMOR_NAME: &str = "usr.bin.rootlesskit";

// ---------------------------------------------------------------------------------------------
// What `--help` says.

/// One option as a help text lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Opt {
    /// `net` for `--net`.
    pub long: String,
    /// `p` for `-p`.
    pub short: Option<char>,
    /// Whether it takes a value (`--net value`).
    pub value: bool,
    /// Whether it may be repeated (`[ --copy-up value ]`).
    pub repeat: bool,
    /// The help sentence, defaults included.
    pub help: String,
    /// The values listed in brackets, e.g. `[host, none]`, without annotations.
    pub choices: Vec<String>,
}

/// A titled list of options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Group {
    pub name: String,
    pub opts: Vec<Opt>,
}

/// `rootlesskit --help`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KitHelp {
    /// The line after `NAME:`.
    pub name_line: String,
    pub version: String,
    /// The `DESCRIPTION:` section, its lines unindented by three.
    pub description: Vec<String>,
    pub groups: Vec<Group>,
}

/// The value list at the end of a usage text: `[host, none, pasta(experimental)]` gives
/// `host none pasta`; `[auto,true,false]` gives `auto true false`.
fn choices_of(usage: &str) -> Vec<String> {
    let Some(open) = usage.rfind('[') else {
        return Vec::new();
    };
    let Some(len) = usage[open..].find(']') else {
        return Vec::new();
    };
    usage[open + 1..open + len]
        .split(',')
        .filter_map(|item| {
            let word = item.trim().split([' ', '(']).next().unwrap_or("");
            let ok = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c));
            ok.then(|| word.to_string())
        })
        .collect()
}

/// The names column of one urfave/cli flag line: `--copy-up value [ --copy-up value ]` or
/// `--publish value, -p value [ ... ]` or `--debug`.
fn opt_of_names(names: &str, help: &str) -> Option<Opt> {
    let (first, repeat) = match names.split_once(" [ ") {
        Some((f, _)) => (f, true),
        None => (names, false),
    };
    let mut opt = Opt {
        repeat,
        help: help.to_string(),
        choices: choices_of(help),
        ..Opt::default()
    };
    for name in first.split(", ") {
        let (flag, value) = match name.split_once(' ') {
            Some((f, _)) => (f, true),
            None => (name, false),
        };
        opt.value |= value;
        if let Some(long) = flag.strip_prefix("--") {
            opt.long = long.to_string();
        } else if let Some(short) = flag.strip_prefix('-') {
            opt.short = short.chars().next().filter(|_| short.len() == 1);
        }
    }
    (!opt.long.is_empty()).then_some(opt)
}

/// Splits `left   right` at the first run of two or more spaces.
fn two_columns(line: &str) -> (&str, &str) {
    let line = line.trim_start();
    match line.find("  ") {
        Some(i) => (line[..i].trim(), line[i..].trim()),
        None => (line.trim(), ""),
    }
}

/// Parses `rootlesskit --help` (urfave/cli's layout with categories).
pub(crate) fn parse_kit_help(text: &str) -> Result<KitHelp> {
    let mut help = KitHelp::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        match section {
            "NAME:" if !line.trim().is_empty() => help.name_line = line.trim().to_string(),
            "VERSION:" if !line.trim().is_empty() => help.version = line.trim().to_string(),
            "DESCRIPTION:" => help
                .description
                .push(line.strip_prefix("   ").unwrap_or(line).to_string()),
            "OPTIONS:" => {
                if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
                    help.groups.push(Group {
                        name: name.trim_end_matches(':').to_string(),
                        opts: Vec::new(),
                    });
                } else if let Some(flag) = line.strip_prefix("    ") {
                    let (names, usage) = two_columns(flag);
                    let opt = opt_of_names(names, usage)
                        .ok_or_else(|| format!("cannot read the --help line {line:?}"))?;
                    help.groups
                        .last_mut()
                        .ok_or_else(|| format!("--help line {line:?} outside a category"))?
                        .opts
                        .push(opt);
                }
            }
            _ => {}
        }
    }
    while help.description.last().is_some_and(|l| l.trim().is_empty()) {
        help.description.pop();
    }
    if help.version.is_empty() || help.groups.is_empty() {
        return Err("rootlesskit --help has no VERSION or no OPTIONS".into());
    }
    Ok(help)
}

/// One `rootlessctl` command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Command {
    pub name: String,
    pub alias: Option<String>,
    pub about: String,
    /// The usage line after `Usage: rootlessctl `; empty for `help`.
    pub usage: String,
    /// The longer text of `rootlessctl help NAME`.
    pub text: Vec<String>,
    pub opts: Vec<Opt>,
}

/// `rootlessctl --help` plus each command's help.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CtlHelp {
    pub about: String,
    pub commands: Vec<Command>,
    pub global: Vec<Opt>,
}

/// `--name value, -n value   text` as `rootlessctl`'s help lists options.
fn ctl_opt(line: &str) -> Option<Opt> {
    let (names, usage) = two_columns(line);
    let mut opt = opt_of_names(names, usage)?;
    opt.choices.clear();
    Some(opt)
}

/// Parses `rootlessctl --help`; the commands' own texts are added by [`parse_ctl_command`].
pub(crate) fn parse_ctl_help(text: &str) -> Result<CtlHelp> {
    let mut help = CtlHelp::default();
    let mut section = "";
    for line in text.lines() {
        if let Some(about) = line.strip_prefix("rootlessctl: ") {
            help.about = about.to_string();
        } else if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
        } else if line.trim().is_empty() {
            continue;
        } else if section == "Commands:" {
            let (names, about) = two_columns(line);
            let (name, alias) = match names.split_once(", ") {
                Some((n, a)) => (n, Some(a.to_string())),
                None => (names, None),
            };
            help.commands.push(Command {
                name: name.to_string(),
                alias,
                about: about.to_string(),
                ..Command::default()
            });
        } else if section == "Global options:" {
            help.global
                .push(ctl_opt(line).ok_or_else(|| format!("cannot read {line:?}"))?);
        }
    }
    if help.commands.is_empty() || help.global.is_empty() {
        return Err("rootlessctl --help lists no commands or no global options".into());
    }
    Ok(help)
}

/// Reads `rootlessctl help NAME` into `cmd`.
pub(crate) fn parse_ctl_command(cmd: &mut Command, text: &str) -> Result<()> {
    let mut in_options = false;
    for line in text.lines() {
        if let Some(usage) = line.strip_prefix("Usage: rootlessctl ") {
            cmd.usage = usage.to_string();
        } else if line == "Options:" {
            in_options = true;
        } else if in_options && !line.trim().is_empty() {
            cmd.opts
                .push(ctl_opt(line).ok_or_else(|| format!("cannot read {line:?}"))?);
        } else if !in_options && !line.trim().is_empty() {
            cmd.text.push(line.trim().to_string());
        }
    }
    if cmd.usage.is_empty() {
        return Err(format!("`rootlessctl help {}` has no usage line", cmd.name));
    }
    Ok(())
}

/// Go `flag` package usage (`rootlesskit-docker-proxy --help`): `  -name type` followed by a
/// tab-indented text line.
pub(crate) fn parse_go_flags(text: &str) -> Vec<Opt> {
    let mut out: Vec<Opt> = Vec::new();
    for line in text.lines() {
        if let Some(text) = line.strip_prefix("    \t") {
            if let Some(last) = out.last_mut() {
                last.help = text.trim().to_string();
            }
        } else if let Some(flag) = line.strip_prefix("  -") {
            let (name, ty) = match flag.split_once(' ') {
                Some((n, t)) => (n, !t.is_empty()),
                None => (flag, false),
            };
            out.push(Opt {
                long: name.to_string(),
                value: ty,
                ..Opt::default()
            });
        }
    }
    out
}

/// Everything read from the binaries in one dist directory.
#[derive(Debug, Clone)]
pub(crate) struct Helps {
    pub kit: KitHelp,
    pub ctl: CtlHelp,
    pub proxy: Vec<Opt>,
}

/// Runs `bin args...` with an empty environment; returns stdout, or stderr when stdout is empty.
fn help_output(bin: &Path, args: &[&str]) -> Result<String> {
    let out = crate::command(bin)
        .args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8(text).map_err(|_| format!("{} printed invalid UTF-8", bin.display()))
}

/// Reads the help of `rootlesskit`, `rootlessctl` (and each of its commands) and
/// `rootlesskit-docker-proxy` in `bin_dir`.
pub(crate) fn read_helps(bin_dir: &Path) -> Result<Helps> {
    let kit = parse_kit_help(&help_output(&bin_dir.join("rootlesskit"), &["--help"])?)?;
    let ctl_bin = bin_dir.join("rootlessctl");
    let mut ctl = parse_ctl_help(&help_output(&ctl_bin, &["--help"])?)?;
    for cmd in &mut ctl.commands {
        if cmd.name != "help" {
            let text = help_output(&ctl_bin, &["help", &cmd.name])?;
            parse_ctl_command(cmd, &text)?;
        }
    }
    let proxy = parse_go_flags(&help_output(
        &bin_dir.join("rootlesskit-docker-proxy"),
        &["--help"],
    )?);
    if proxy.is_empty() {
        return Err("rootlesskit-docker-proxy --help lists no flags".into());
    }
    Ok(Helps { kit, ctl, proxy })
}

// ---------------------------------------------------------------------------------------------
// Man pages.

/// Text for a roff line: backslashes and minus signs escaped, a leading dot or quote guarded.
fn roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    guard(&out)
}

/// A roff text line that starts with a dot or a quote would be a request: `\&` keeps it text.
fn guard(line: &str) -> String {
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line.to_string()
    }
}

/// Prose as roff input: one sentence per line (mandoc's style rule), never a blank line.
fn roff_prose(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        // A sentence ends at ". " before an upper-case letter.
        let cut = rest.match_indices(". ").find(|(i, _)| {
            rest[i + 2..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
        });
        let (sentence, next) = match cut {
            Some((i, _)) => (&rest[..=i], rest[i + 2..].trim_start()),
            None => (rest, ""),
        };
        // mandoc's style rule: input lines of at most 80 bytes, broken between words.
        let mut line = String::new();
        for word in roff(sentence).split(' ') {
            if !line.is_empty() && line.len() + 1 + word.len() > 80 {
                out.push_str(&guard(&line));
                out.push('\n');
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&guard(&line));
        out.push('\n');
        rest = next;
    }
    out
}

/// `YYYY-MM-DD` of a Unix time (UTC), for `.TH`.
pub(crate) fn civil_date(epoch: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (epoch / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn man_head(out: &mut String, name: &str, date: &str, version: &str, about: &str) {
    let _ = writeln!(
        out,
        ".TH {} 1 {date} \"rootlesskit {version}\" \"User Commands\"",
        name.to_ascii_uppercase().replace('-', "\\-")
    );
    let _ = writeln!(out, ".SH NAME\n{} \\- {}", roff(name), roff(about));
}

/// `\fB\-\-net\fR=\fIvalue\fR, \fB\-p\fR \fIvalue\fR` for a `.TP` tag.
fn man_opt_tag(opt: &Opt, dashes: &str) -> String {
    let value = if opt.value { "=\\fIvalue\\fR" } else { "" };
    let mut tag = format!("\\fB{}{}\\fR{value}", dashes, roff(&opt.long));
    if let Some(s) = opt.short {
        let value = if opt.value { " \\fIvalue\\fR" } else { "" };
        let _ = write!(tag, ", \\fB\\-{s}\\fR{value}");
    }
    tag
}

fn man_opts(out: &mut String, opts: &[Opt], dashes: &str) {
    for opt in opts {
        let _ = writeln!(
            out,
            ".TP\n{}",
            man_opt_tag(opt, &dashes.replace('-', "\\-"))
        );
        out.push_str(&roff_prose(&opt.help));
        if opt.repeat {
            out.push_str("May be given more than once.\n");
        }
    }
}

/// `rootlesskit.1`.
pub(crate) fn man_rootlesskit(h: &KitHelp, date: &str) -> String {
    let about = h
        .name_line
        .split_once(" - ")
        .map_or(h.name_line.as_str(), |(_, a)| a);
    let mut out = String::new();
    man_head(&mut out, "rootlesskit", date, &h.version, about);
    out.push_str(
        ".SH SYNOPSIS\n.B rootlesskit\n[\\fIoptions\\fR] \\fIcommand\\fR [\\fIargument\\fR ...]\n",
    );
    out.push_str(".SH DESCRIPTION\n");
    // Paragraphs are separated by blank lines; indented blocks (examples) are kept verbatim.
    let mut verbatim = false;
    let mut paragraph = false;
    for line in &h.description {
        if line.trim().is_empty() {
            if verbatim {
                out.push_str(".fi\n.RE\n");
                verbatim = false;
            }
            paragraph = true;
            continue;
        }
        if line.starts_with("  ") {
            if !verbatim {
                out.push_str(".PP\n.RS\n.nf\n");
                verbatim = true;
            }
            let _ = writeln!(out, "{}", roff(line.trim_start()));
        } else {
            if verbatim {
                out.push_str(".fi\n.RE\n");
                verbatim = false;
            }
            if paragraph {
                out.push_str(".PP\n");
            }
            out.push_str(&roff_prose(line));
        }
        paragraph = false;
    }
    if verbatim {
        out.push_str(".fi\n.RE\n");
    }
    out.push_str(".SH OPTIONS\n");
    for g in &h.groups {
        let _ = writeln!(out, ".SS {}", roff(&g.name));
        man_opts(&mut out, &g.opts, "--");
    }
    out.push_str(".SH ENVIRONMENT\n.TP\n.B ROOTLESSKIT_STATE_DIR\nSet for the command: the state directory.\n");
    out.push_str(
        ".TP\n.B ROOTLESSKIT_PARENT_EUID\nSet for the command: the effective user id outside.\n",
    );
    out.push_str(
        ".TP\n.B ROOTLESSKIT_PARENT_EGID\nSet for the command: the effective group id outside.\n",
    );
    out.push_str(".SH SEE ALSO\n.BR rootlessctl (1),\n.BR rootlesskit\\-docker\\-proxy (1),\n.BR user_namespaces (7)\n");
    out
}

/// `rootlessctl.1`.
pub(crate) fn man_rootlessctl(h: &CtlHelp, date: &str, version: &str) -> String {
    let mut out = String::new();
    man_head(&mut out, "rootlessctl", date, version, &h.about);
    out.push_str(".SH SYNOPSIS\n.B rootlessctl\n[\\fIglobal options\\fR] \\fIcommand\\fR\n[\\fIcommand options\\fR] [\\fIargument\\fR ...]\n");
    out.push_str(".SH DESCRIPTION\n.B rootlessctl\ntalks to the API socket of a running\n.BR rootlesskit (1).\n");
    out.push_str(".SH GLOBAL OPTIONS\n");
    man_opts(&mut out, &h.global, "--");
    out.push_str(".SH COMMANDS\n");
    for c in &h.commands {
        let _ = writeln!(out, ".SS {}", roff(&c.name));
        if let Some(a) = &c.alias {
            let _ = writeln!(out, "Also\n.BR {} .", roff(a));
        }
        if !c.usage.is_empty() {
            let _ = writeln!(out, ".B rootlessctl {}\n.PP", roff(&c.usage));
        }
        if c.text.is_empty() {
            out.push_str(&roff_prose(&c.about));
        } else {
            out.push_str(&roff_prose(&c.text.join(" ")));
        }
        man_opts(&mut out, &c.opts, "--");
    }
    out.push_str(".SH SEE ALSO\n.BR rootlesskit (1)\n");
    out
}

/// `rootlesskit-docker-proxy.1`.
pub(crate) fn man_docker_proxy(opts: &[Opt], date: &str, version: &str) -> String {
    let mut out = String::new();
    man_head(
        &mut out,
        "rootlesskit-docker-proxy",
        date,
        version,
        "docker-proxy for rootless Docker",
    );
    out.push_str(".SH SYNOPSIS\n.B rootlesskit\\-docker\\-proxy\n[\\fIoptions\\fR]\n");
    out.push_str(".SH DESCRIPTION\nDocker inside\n.BR rootlesskit (1)\nruns it in place of\n.BR docker\\-proxy .\n");
    out.push_str(&roff_prose(
        "It publishes the host port through the API of rootlesskit and runs the real docker-proxy for the namespace side.",
    ));
    out.push_str(".SH OPTIONS\n");
    man_opts(&mut out, opts, "-");
    out.push_str(".SH SEE ALSO\n.BR rootlesskit (1),\n.BR rootlessctl (1)\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Shell completions.

/// A word list for a single-quoted shell string (no quote can occur in flag names or values).
fn words(list: impl IntoIterator<Item = String>) -> String {
    list.into_iter().collect::<Vec<_>>().join(" ")
}

fn kit_opts(h: &KitHelp) -> impl Iterator<Item = &Opt> {
    h.groups.iter().flat_map(|g| g.opts.iter())
}

/// `--net=` for value flags, `--debug` for switches.
fn bash_word(o: &Opt) -> String {
    if o.value {
        format!("--{}=", o.long)
    } else {
        format!("--{}", o.long)
    }
}

/// `share/bash-completion/completions/rootlesskit`.
pub(crate) fn bash_rootlesskit(h: &KitHelp) -> String {
    let all = words(kit_opts(h).map(bash_word));
    let valued = words(kit_opts(h).filter(|o| o.value).flat_map(|o| {
        let mut v = vec![format!("--{}", o.long), format!("-{}", o.long)];
        v.extend(o.short.map(|s| format!("-{s}")));
        v
    }));
    let mut cases = String::new();
    for o in kit_opts(h).filter(|o| o.value && !o.choices.is_empty()) {
        let _ = writeln!(
            cases,
            "        --{0} | -{0}) COMPREPLY=($(compgen -W '{1}' -- \"$cur\")) ;;",
            o.long,
            words(o.choices.iter().cloned())
        );
    }
    format!(
        r#"# bash completion for rootlesskit, generated from `rootlesskit --help` by `cargo xtask dist`.

_rootlesskit() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev= flag= i w
    ((COMP_CWORD > 0)) && prev=${{COMP_WORDS[COMP_CWORD - 1]}}
    # Options end at the first word that is not one: the command, completed as a command line.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        case $w in
        --)
            ((i++))
            break
            ;;
        =) ;;
        -*=*) ;;
        -*)
            case " {valued} " in
            *" $w "*) [[ ${{COMP_WORDS[i + 1]}} == = ]] && ((i++)); ((i++)) ;;
            esac
            ;;
        *) break ;;
        esac
    done
    if ((i < COMP_CWORD)); then
        if declare -F _command_offset >/dev/null; then
            _command_offset "$i"
        else
            COMPREPLY=($(compgen -c -- "$cur"))
        fi
        return
    fi
    # The value of a flag: `--net=x` (split at "=" by COMP_WORDBREAKS, or not), or `--net x`.
    if [[ $cur == -*=* ]]; then
        flag=${{cur%%=*}}
        cur=${{cur#*=}}
    elif [[ $cur == = ]]; then
        flag=$prev
        cur=
    elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then
        flag=${{COMP_WORDS[COMP_CWORD - 2]}}
    elif [[ " {valued} " == *" $prev "* ]]; then
        flag=$prev
    fi
    if [[ -n $flag ]]; then
        case ${{flag#-}} in
{cases}        *) COMPREPLY=($(compgen -f -- "$cur")) ;;
        esac
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W '{all}' -- "$cur"))
        [[ ${{#COMPREPLY[@]}} == 1 && ${{COMPREPLY[0]}} == *= ]] && compopt -o nospace 2>/dev/null
        return
    fi
    COMPREPLY=($(compgen -c -- "$cur"))
}}
complete -F _rootlesskit rootlesskit
"#
    )
}

/// `share/bash-completion/completions/rootlessctl`.
pub(crate) fn bash_rootlessctl(h: &CtlHelp) -> String {
    let commands = words(h.commands.iter().map(|c| c.name.clone()));
    let global = words(h.global.iter().map(bash_word));
    let mut cases = String::new();
    for c in &h.commands {
        let opts = if c.name == "help" {
            commands.clone()
        } else {
            words(c.opts.iter().map(bash_word))
        };
        let names = std::iter::once(&c.name)
            .chain(&c.alias)
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ");
        let _ = writeln!(
            cases,
            "    {names}) COMPREPLY=($(compgen -W '{opts}' -- \"$cur\")) ;;"
        );
    }
    format!(
        r#"# bash completion for rootlessctl, generated from `rootlessctl --help` by `cargo xtask dist`.

_rootlessctl() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd= i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        case $w in
        --socket) ((i++)) ;;
        -*) ;;
        *)
            cmd=$w
            break
            ;;
        esac
    done
    if [[ -z $cmd ]]; then
        if [[ ${{COMP_WORDS[COMP_CWORD - 1]}} == --socket ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        elif [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W '{global}' -- "$cur"))
        else
            COMPREPLY=($(compgen -W '{commands}' -- "$cur"))
        fi
        return
    fi
    case $cmd in
{cases}    esac
}}
complete -F _rootlessctl rootlessctl
"#
    )
}

/// Text for a zsh `_arguments` explanation (in brackets) or a `_describe` item (after the
/// first colon): brackets and backslashes escaped, single quotes closed and reopened.
fn zsh_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\'' => out.push_str("'\\''"),
            c => out.push(c),
        }
    }
    out
}

/// One `_arguments` spec for an option.
fn zsh_spec(o: &Opt, dashes: &str) -> String {
    let desc = zsh_text(&o.help);
    let action = if !o.value {
        String::new()
    } else if o.choices.is_empty() {
        ":value:_files".to_string()
    } else {
        format!(":value:({})", o.choices.join(" "))
    };
    let star = if o.repeat { "*" } else { "" };
    let eq = if o.value && dashes == "--" { "=" } else { "" };
    match o.short {
        Some(s) => {
            let plus = if o.value { "+" } else { "" };
            let excl = if o.repeat {
                String::new()
            } else {
                format!("(-{s} {dashes}{})", o.long)
            };
            format!(
                "'{excl}{star}'{{-{s}{plus},{dashes}{}{eq}}}'[{desc}]{action}'",
                o.long
            )
        }
        None => format!("'{star}{dashes}{}{eq}[{desc}]{action}'", o.long),
    }
}

/// `share/zsh/site-functions/_rootlesskit`.
pub(crate) fn zsh_rootlesskit(h: &KitHelp) -> String {
    let mut out = String::from(
        "#compdef rootlesskit\n# zsh completion for rootlesskit, generated from `rootlesskit --help` by `cargo xtask dist`.\n\n_arguments -S \\\n",
    );
    for o in kit_opts(h) {
        let _ = writeln!(out, "  {} \\", zsh_spec(o, "--"));
    }
    out.push_str("  '1:command:_command_names -e' \\\n  '*::arguments:_normal'\n");
    out
}

/// `share/zsh/site-functions/_rootlessctl`.
pub(crate) fn zsh_rootlessctl(h: &CtlHelp) -> String {
    let mut out = String::from(
        "#compdef rootlessctl\n# zsh completion for rootlessctl, generated from `rootlessctl --help` by `cargo xtask dist`.\n\n_rootlessctl() {\n  local -a commands\n  commands=(\n",
    );
    for c in &h.commands {
        let _ = writeln!(out, "    '{}:{}'", c.name, zsh_text(&c.about));
    }
    out.push_str("  )\n  _arguments -C \\\n");
    for o in &h.global {
        let _ = writeln!(out, "    {} \\", zsh_spec(o, "--"));
    }
    out.push_str("    '1:command:->command' \\\n    '*::argument:->argument'\n  case $state in\n  command) _describe command commands ;;\n  argument)\n    case $words[1] in\n");
    for c in &h.commands {
        let _ = write!(out, "    {})\n      _arguments", c.name);
        for o in &c.opts {
            let _ = write!(out, " {}", zsh_spec(o, "--"));
        }
        if c.name == "help" {
            out.push_str(" '1:command:(");
            out.push_str(&words(h.commands.iter().map(|c| c.name.clone())));
            out.push_str(")'");
        } else {
            out.push_str(" '*:argument:'");
        }
        out.push_str("\n      ;;\n");
    }
    out.push_str("    esac\n    ;;\n  esac\n}\n\n_rootlessctl \"$@\"\n");
    out
}

/// Text in a fish single-quoted string.
fn fish_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn fish_line(cmd: &str, cond: &str, o: &Opt) -> String {
    let mut line = format!("complete -c {cmd}");
    if !cond.is_empty() {
        let _ = write!(line, " -n '{cond}'");
    }
    if let Some(s) = o.short {
        let _ = write!(line, " -s {s}");
    }
    let _ = write!(line, " -l {}", o.long);
    if o.value {
        line.push_str(" -r");
        if !o.choices.is_empty() {
            let _ = write!(line, " -f -a '{}'", o.choices.join(" "));
        }
    }
    let _ = write!(line, " -d '{}'", fish_text(&o.help));
    line
}

/// `share/fish/vendor_completions.d/rootlesskit.fish`.
pub(crate) fn fish_rootlesskit(h: &KitHelp) -> String {
    let mut out = String::from(
        "# fish completion for rootlesskit, generated from `rootlesskit --help` by `cargo xtask dist`.\n\n",
    );
    for o in kit_opts(h) {
        out.push_str(&fish_line("rootlesskit", "", o));
        out.push('\n');
    }
    out.push_str("complete -c rootlesskit -x -a '(__fish_complete_subcommand)'\n");
    out
}

/// `share/fish/vendor_completions.d/rootlessctl.fish`.
pub(crate) fn fish_rootlessctl(h: &CtlHelp) -> String {
    let names = words(h.commands.iter().map(|c| c.name.clone()));
    let mut out = String::from(
        "# fish completion for rootlessctl, generated from `rootlessctl --help` by `cargo xtask dist`.\n\ncomplete -c rootlessctl -f\n",
    );
    let none = format!("not __fish_seen_subcommand_from {names}");
    for o in &h.global {
        out.push_str(&fish_line("rootlessctl", &none, o));
        out.push('\n');
    }
    for c in &h.commands {
        let _ = writeln!(
            out,
            "complete -c rootlessctl -n '{none}' -a {} -d '{}'",
            c.name,
            fish_text(&c.about)
        );
        let seen = format!("__fish_seen_subcommand_from {}", c.name);
        for o in &c.opts {
            out.push_str(&fish_line("rootlessctl", &seen, o));
            out.push('\n');
        }
    }
    out
}

/// `etc/apparmor.d/usr.bin.rootlesskit`: Ubuntu 23.10+ restricts unprivileged user namespaces
/// to programs whose profile allows them; this one allows them to `/usr/bin/rootlesskit`, which
/// is the process that creates the namespace, and confines it no further.
pub(crate) fn apparmor_profile() -> String {
    "# AppArmor profile for rootlesskit (installed by the rootlesskit-rs packager bundle).\n\
     # Ubuntu 23.10 and later let a program create user namespaces only when a profile allows\n\
     # it (kernel.apparmor_restrict_unprivileged_userns=1).\n\
     # /usr/bin/rootlesskit creates the namespace itself, so this profile lets it do that and\n\
     # confines it no further.\n\
     # Site-specific additions go in /etc/apparmor.d/local/rootlesskit.\n\
     \n\
     abi <abi/4.0>,\n\
     include <tunables/global>\n\
     \n\
     profile rootlesskit /usr/bin/rootlesskit flags=(unconfined) {\n\
     \x20 userns,\n\
     \n\
     \x20 include if exists <local/rootlesskit>\n\
     }\n"
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// The bundle.

/// One file of the bundle, relative to the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Every file of the bundle, sorted by path, `SHA256SUMS` included.
pub(crate) fn files(bin_dir: &Path, helps: &Helps, epoch: u64) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (name, dir) in LAYOUT {
        let src = bin_dir.join(name);
        let data = fs::read(&src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        out.push(Entry {
            path: format!("{dir}/{name}"),
            mode: 0o755,
            data,
        });
    }
    let date = civil_date(epoch);
    let version = &helps.kit.version;
    let text = |path: &str, s: String| Entry {
        path: path.to_string(),
        mode: 0o644,
        data: s.into_bytes(),
    };
    out.push(text(
        "share/man/man1/rootlesskit.1",
        man_rootlesskit(&helps.kit, &date),
    ));
    out.push(text(
        "share/man/man1/rootlessctl.1",
        man_rootlessctl(&helps.ctl, &date, version),
    ));
    out.push(text(
        "share/man/man1/rootlesskit-docker-proxy.1",
        man_docker_proxy(&helps.proxy, &date, version),
    ));
    let bash = "share/bash-completion/completions";
    out.push(text(
        &format!("{bash}/rootlesskit"),
        bash_rootlesskit(&helps.kit),
    ));
    out.push(text(
        &format!("{bash}/rootlessctl"),
        bash_rootlessctl(&helps.ctl),
    ));
    let zsh = "share/zsh/site-functions";
    out.push(text(
        &format!("{zsh}/_rootlesskit"),
        zsh_rootlesskit(&helps.kit),
    ));
    out.push(text(
        &format!("{zsh}/_rootlessctl"),
        zsh_rootlessctl(&helps.ctl),
    ));
    let fish = "share/fish/vendor_completions.d";
    out.push(text(
        &format!("{fish}/rootlesskit.fish"),
        fish_rootlesskit(&helps.kit),
    ));
    out.push(text(
        &format!("{fish}/rootlessctl.fish"),
        fish_rootlessctl(&helps.ctl),
    ));
    out.push(text(
        &format!("share/rootlesskit/apparmor.d/{APPARMOR_NAME}"),
        apparmor_profile(),
    ));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let mut sums = String::new();
    for e in &out {
        let _ = writeln!(sums, "{}  {}", hex(&sha256(&e.data)), e.path);
    }
    out.push(text("share/doc/rootlesskit/SHA256SUMS", sums));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `rootlesskit-VERSION-ARCH.tar.gz` and its bytes.
pub(crate) fn tarball(bin_dir: &Path, arch: &str, epoch: u64) -> Result<(String, Vec<u8>)> {
    let helps = read_helps(bin_dir)?;
    let entries = files(bin_dir, &helps, epoch)?;
    let name = format!("rootlesskit-{}-{arch}.tar.gz", helps.kit.version);
    Ok((name, gzip(&tar(&entries, epoch), epoch)))
}

/// `SOURCE_DATE_EPOCH`, else the last commit's time, else 0.
pub(crate) fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Some(v) = std::env::var_os("SOURCE_DATE_EPOCH") {
        let v = v.to_string_lossy();
        return v
            .trim()
            .parse()
            .map_err(|_| format!("invalid SOURCE_DATE_EPOCH \"{v}\": expected seconds"));
    }
    let out = crate::command("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .stderr(Stdio::null())
        .output();
    Ok(out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0))
}

/// Writes the tarball and `SHA256SUMS` (covering it) into `dist_dir`; returns the tarball path.
pub(crate) fn write(root: &Path, dist_dir: &Path, arch: &str) -> Result<PathBuf> {
    let epoch = source_date_epoch(root)?;
    let (name, bytes) = tarball(dist_dir, arch, epoch)?;
    // A bundle of an earlier version would sit beside this one and be taken for it.
    for e in fs::read_dir(dist_dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("rootlesskit-") && n.ends_with(".tar.gz") && n != name {
            let _ = fs::remove_file(e.path());
        }
    }
    let path = dist_dir.join(&name);
    fs::write(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let sums = format!("{}  {name}\n", hex(&sha256(&bytes)));
    let sums_path = dist_dir.join("SHA256SUMS");
    fs::write(&sums_path, sums)
        .map_err(|e| format!("cannot write {}: {e}", sums_path.display()))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// ustar, gzip, sha256.

/// A POSIX ustar archive of `entries` (files) plus the directories above them, all owned by
/// 0/0 with mtime `epoch`, padded to whole 10240-byte records like tar(1) does.
pub(crate) fn tar(entries: &[Entry], epoch: u64) -> Vec<u8> {
    let mut dirs: Vec<String> = Vec::new();
    for e in entries {
        let mut at = 0;
        while let Some(i) = e.path[at..].find('/') {
            dirs.push(format!("{}/", &e.path[..at + i]));
            at += i + 1;
        }
    }
    let mut all: Vec<(String, u32, &[u8], bool)> = dirs
        .into_iter()
        .map(|d| (d, 0o755, &[][..], true))
        .chain(
            entries
                .iter()
                .map(|e| (e.path.clone(), e.mode, &e.data[..], false)),
        )
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::new();
    for (path, mode, data, dir) in all {
        out.extend_from_slice(&ustar_header(&path, mode, data.len() as u64, epoch, dir));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out.resize(out.len().div_ceil(10_240) * 10_240, 0);
    out
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{value:0width$o}", width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

fn ustar_header(path: &str, mode: u32, size: u64, mtime: u64, dir: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    // Paths here are short; the prefix field takes the head of a longer one.
    let (prefix, name) = if path.len() > 100 {
        let cut = path[..path.len().min(155)].rfind('/').unwrap_or(0);
        (&path[..cut], &path[cut + 1..])
    } else {
        ("", path)
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[148..156].fill(b' ');
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// A gzip member (RFC 1952) of `data` with `mtime` in its header, compressed by [`deflate`].
pub(crate) fn gzip(data: &[u8], mtime: u64) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0];
    out.extend_from_slice(&(mtime.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    out.extend_from_slice(&[0, 3]);
    out.extend_from_slice(&deflate(data));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Bits written least significant first, as deflate packs them.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, which deflate stores most significant bit first.
    fn code(&mut self, code: u32, bits: u32) {
        self.put(code.reverse_bits() >> (32 - bits), bits);
    }

    /// A literal/length symbol of the fixed code (RFC 1951 3.2.6).
    fn symbol(&mut self, sym: u32) {
        match sym {
            0..=143 => self.code(0x30 + sym, 8),
            144..=255 => self.code(0x190 + sym - 144, 9),
            256..=279 => self.code(sym - 256, 7),
            _ => self.code(0xc0 + sym - 280, 8),
        }
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// A raw deflate stream (RFC 1951): one block with the fixed Huffman code, greedy LZ77 over a
/// 32 KiB window with hash chains. Plain and deterministic, so the bytes depend on nothing but
/// the input; binaries shrink to about half.
pub(crate) fn deflate(data: &[u8]) -> Vec<u8> {
    const WINDOW: usize = 32_768;
    const MAX_CHAIN: usize = 32;
    const HASH_BITS: u32 = 15;
    let mut bits = Bits {
        out: Vec::with_capacity(data.len() / 2 + 16),
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // the last block
    bits.put(1, 2); // the fixed code
    let hash = |i: usize| {
        let v = u32::from(data[i]) | u32::from(data[i + 1]) << 8 | u32::from(data[i + 2]) << 16;
        (v.wrapping_mul(0x9e37_79b1) >> (32 - HASH_BITS)) as usize
    };
    let mut head = vec![usize::MAX; 1 << HASH_BITS];
    let mut prev = vec![usize::MAX; WINDOW];
    let insert = |head: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        if i + 3 <= data.len() {
            let h = hash(i);
            prev[i % WINDOW] = head[h];
            head[h] = i;
        }
    };
    let mut i = 0;
    while i < data.len() {
        let (mut best_len, mut best_dist) = (0, 0);
        if i + 3 <= data.len() {
            let max = (data.len() - i).min(258);
            let mut cand = head[hash(i)];
            let mut chain = 0;
            while cand != usize::MAX && i - cand <= WINDOW && chain < MAX_CHAIN {
                let len = data[cand..cand + max]
                    .iter()
                    .zip(&data[i..i + max])
                    .take_while(|(a, b)| a == b)
                    .count();
                if len > best_len {
                    (best_len, best_dist) = (len, i - cand);
                    if len == max {
                        break;
                    }
                }
                let next = prev[cand % WINDOW];
                if next == usize::MAX || next >= cand {
                    break;
                }
                cand = next;
                chain += 1;
            }
        }
        if best_len >= 3 {
            let l = LENGTH_BASE
                .iter()
                .rposition(|&b| usize::from(b) <= best_len)
                .unwrap_or(0);
            bits.symbol(257 + l as u32);
            bits.put(
                (best_len - usize::from(LENGTH_BASE[l])) as u32,
                u32::from(LENGTH_EXTRA[l]),
            );
            let d = DIST_BASE
                .iter()
                .rposition(|&b| usize::from(b) <= best_dist)
                .unwrap_or(0);
            bits.code(d as u32, 5);
            bits.put(
                (best_dist - usize::from(DIST_BASE[d])) as u32,
                u32::from(DIST_EXTRA[d]),
            );
            for k in i..i + best_len {
                insert(&mut head, &mut prev, k);
            }
            i += best_len;
        } else {
            bits.symbol(u32::from(data[i]));
            insert(&mut head, &mut prev, i);
            i += 1;
        }
    }
    bits.symbol(256);
    if bits.n > 0 {
        bits.out.push(bits.acc as u8);
    }
    bits.out
}

/// CRC-32 (IEEE, reflected), as gzip uses it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// SHA-256 (FIPS 180-4).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dist directory the integration tests use, if there is one with our binaries.
    fn bin_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("RKRS_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join("target/dist"));
        dir.join("rootlesskit").is_file().then_some(dir)
    }

    fn no_bin_dir(test: &str) {
        let must = std::env::var("RKRS_MUST_WORK").is_ok_and(|v| v == "1");
        assert!(!must, "{test}: no dist binaries, but RKRS_MUST_WORK=1");
        eprintln!("SKIP: {test}: no dist binaries (run cargo xtask dist)");
    }

    #[test]
    fn sha256_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks of padding (56 bytes of message).
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_796_601_600), "2026-12-07");
    }

    #[test]
    fn choices_from_usage() {
        let c = |s: &str| choices_of(s).join(" ");
        assert_eq!(
            c(
                "how [host, none, pasta(experimental), lxc-user-nic(experimental)] (default: \"host\")"
            ),
            "host none pasta lxc-user-nic"
        );
        assert_eq!(
            c("x [none, implicit (for pasta), builtin]"),
            "none implicit builtin"
        );
        assert_eq!(
            c("y [auto,true,false] (default: \"auto\")"),
            "auto true false"
        );
        assert_eq!(c("no list here"), "");
    }

    #[test]
    fn kit_help_lines() {
        let help = "NAME:\n   rootlesskit - fake root\n\nVERSION:\n   9.8.7\n\nDESCRIPTION:\n   One.\n\n     # ex\n     rootlesskit bash\n\nOPTIONS:\n  Misc:\n    --debug            log (default: false)\n    --help, -h         show\n\n  Port:\n    --publish value, -p value [ --publish value, -p value ]  forward, e.g. \"a:1:2/tcp\"\n    --port-driver value  how [none, builtin] (default: \"none\")\n\n";
        let h = parse_kit_help(help).unwrap();
        assert_eq!(
            (h.version.as_str(), h.name_line.as_str()),
            ("9.8.7", "rootlesskit - fake root")
        );
        assert_eq!(h.description, ["One.", "", "  # ex", "  rootlesskit bash"]);
        let names: Vec<_> = h.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["Misc", "Port"]);
        let p = &h.groups[1].opts[0];
        assert_eq!(
            (p.long.as_str(), p.short, p.value, p.repeat),
            ("publish", Some('p'), true, true)
        );
        let d = &h.groups[0].opts[0];
        assert_eq!(
            (d.long.as_str(), d.value, d.help.as_str()),
            ("debug", false, "log (default: false)")
        );
        assert_eq!(h.groups[1].opts[1].choices, ["none", "builtin"]);
        assert!(parse_kit_help("OPTIONS:\n  Misc:\n    bogus line\n").is_err());
        assert!(parse_kit_help("nothing").is_err());
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff("a-b \\x"), "a\\-b \\ex");
        assert_eq!(roff(".x"), "\\&.x");
        assert_eq!(
            roff_prose("One. Two e.g. three. x. Four"),
            "One.\nTwo e.g. three. x.\nFour\n"
        );
    }

    /// The archive reads back with tar(1) and gzip(1): names, modes, owners, mtimes, contents.
    #[test]
    fn tar_gzip_read_back_by_tar() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let entries = vec![
            Entry {
                path: "bin/a".into(),
                mode: 0o755,
                data: b"#!x\n".to_vec(),
            },
            Entry {
                path: "share/x/y/big".into(),
                mode: 0o644,
                data: big.clone(),
            },
            Entry {
                path: "share/x/empty".into(),
                mode: 0o644,
                data: Vec::new(),
            },
        ];
        let gz = gzip(&tar(&entries, 1_700_000_000), 1_700_000_000);
        let dir = std::env::temp_dir().join(format!("xtask-tar-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.tar.gz");
        fs::write(&file, &gz).unwrap();
        let gz_ok = crate::command("gzip")
            .arg("-t")
            .arg(&file)
            .status()
            .unwrap()
            .success();
        let list = crate::command("tar")
            .args(["--numeric-owner", "--utc", "-tvzf"])
            .arg(&file)
            .output()
            .unwrap();
        let x = crate::command("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap();
        let back = fs::read(dir.join("share/x/y/big")).unwrap_or_default();
        let _ = fs::remove_dir_all(&dir);
        assert!(gz_ok);
        assert!(x.success());
        assert!(back == big, "contents differ");
        let list = String::from_utf8_lossy(&list.stdout);
        let rows: Vec<String> = list
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {} {} {}", f[0], f[1], f[2], f[3], f[5])
            })
            .collect();
        assert_eq!(
            rows,
            [
                "drwxr-xr-x 0/0 0 2023-11-14 bin/",
                "-rwxr-xr-x 0/0 4 2023-11-14 bin/a",
                "drwxr-xr-x 0/0 0 2023-11-14 share/",
                "drwxr-xr-x 0/0 0 2023-11-14 share/x/",
                "-rw-r--r-- 0/0 0 2023-11-14 share/x/empty",
                "drwxr-xr-x 0/0 0 2023-11-14 share/x/y/",
                "-rw-r--r-- 0/0 200000 2023-11-14 share/x/y/big",
            ]
        );
    }

    /// Our deflate, read back by gzip(1): empty, incompressible, repetitive and long-run inputs.
    #[test]
    fn gzip_reads_back() {
        let mut seed = 1u32;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        let mut mixed = b"abcabcabcabd".repeat(3000);
        mixed.extend_from_slice(&[7u8; 70_000]);
        mixed.extend_from_slice(&noise[..40_000]);
        mixed.extend_from_slice(&noise[..40_000]);
        let dir = std::env::temp_dir().join(format!("xtask-gz-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for (i, data) in [Vec::new(), vec![1u8], noise.clone(), mixed]
            .iter()
            .enumerate()
        {
            let gz = gzip(data, 0);
            let file = dir.join(format!("{i}.gz"));
            fs::write(&file, &gz).unwrap();
            let out = crate::command("gzip")
                .arg("-dc")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.stdout == *data, "{i}: round trip differs");
            if i == 3 {
                assert!(gz.len() < data.len() / 2, "{} of {}", gz.len(), data.len());
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// Two bundles of the same binaries are the same bytes, whatever the files' own mtimes.
    #[test]
    fn bundle_is_reproducible() {
        let Some(dir) = bin_dir() else {
            return no_bin_dir("bundle_is_reproducible");
        };
        let (name, a) = tarball(&dir, "x86_64", 1_700_000_000).unwrap();
        let (_, b) = tarball(&dir, "x86_64", 1_700_000_000).unwrap();
        assert!(
            name.starts_with("rootlesskit-") && name.ends_with("-x86_64.tar.gz"),
            "{name}"
        );
        assert!(a == b, "two bundles differ");
        let (_, c) = tarball(&dir, "x86_64", 1_700_000_001).unwrap();
        assert!(a != c, "SOURCE_DATE_EPOCH is not used");
    }
}
