//! `rootlessctl`: the command-line client of the rootlesskit API, with upstream's commands
//! (`list-ports`, `add-ports`, `remove-ports`, `info`), flags, output formats and exit codes.
//!
//! Flags follow Go's `flag` package as upstream's urfave/cli uses it: `-name` or `--name`,
//! `--name=value` or `--name value`, booleans only as `--name` or `--name=false`, parsing stops at
//! the first argument that is not a flag. Global flags go before the command, command flags
//! right after it. A usage error prints `error: <msg>` and exits 1 (upstream also prints the
//! help); an unknown command exits 3 as upstream does.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use parent::api::client::Client;
use parent::api::{Info, json};
use parent::port::{PortSpec, PortStatus, go_atoi, parse_port_spec};
use sys::goflag::{self, Flag, Value};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let state_dir = std::env::var_os("ROOTLESSKIT_STATE_DIR");
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let code = run(&args, state_dir.as_deref(), &mut out, &mut err);
    let _ = out.flush();
    std::process::exit(code);
}

const APP_HELP: &str = "\
rootlessctl: client of the RootlessKit REST API

Usage: rootlessctl [global options] command [command options] [arguments...]

Commands:
   list-ports    list the forwarded ports
   add-ports     forward ports from the host into the namespace
   remove-ports  stop forwarding ports
   info          show the API version, state dir, child pid and drivers
   exec          run a command inside the namespaces of the running instance
   help, h       show this help, or the help of a command

Global options:
   --debug         say which socket is used
   --socket value  the API socket (default: $ROOTLESSKIT_STATE_DIR/api.sock)
   --help, -h      show help
   --version, -v   print the version
";

/// The commands, their command-line synopsis and what they do.
const COMMANDS: [(&str, &str, &str); 5] = [
    (
        "list-ports",
        "[--json]",
        "List the forwarded ports as a table, or as one JSON object per line with --json.",
    ),
    (
        "add-ports",
        "[--json] PARENTIP:PARENTPORT[:CHILDIP]:CHILDPORT/PROTO...",
        "Forward ports, like docker run -p: e.g. 127.0.0.1:8080:80/tcp or [::1]:8080:[::2]:80/udp6.\n\
         \x20  An empty PARENTIP (:8080:80/tcp) means every address. Prints each new ID, or its JSON.",
    ),
    (
        "remove-ports",
        "ID...",
        "Stop forwarding the ports with these IDs, printing each ID once done.",
    ),
    (
        "info",
        "[--json]",
        "Show the API version, the state dir, the child's pid and the drivers in use.",
    ),
    (
        "exec",
        "[--state-dir DIR] [--] COMMAND [ARG...]",
        "Run COMMAND in the namespaces of the running instance (state dir: --state-dir, else\n\
         \x20  the directory of --socket, else $ROOTLESSKIT_STATE_DIR).",
    ),
];

fn command_help(name: &str) -> Option<String> {
    let (name, usage, about) = COMMANDS.iter().find(|c| c.0 == name)?;
    let json = if usage.starts_with("[--json]") {
        "   --json      print JSON\n"
    } else if *name == "exec" {
        "   --state-dir DIR  the state dir of the instance\n"
    } else {
        ""
    };
    Some(format!(
        "Usage: rootlessctl {name} {usage}\n\n   {about}\n\nOptions:\n{json}   --help, -h  show help\n"
    ))
}

/// What one command line asks for, before anything is contacted.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Print this text to stdout and exit 0.
    Print(String),
    /// A command: name, `--json`, positional arguments.
    Run {
        name: &'static str,
        json: bool,
        args: Vec<String>,
    },
    /// `exec`: `--state-dir`, then the command line, bytes kept.
    Exec {
        state_dir: Option<OsString>,
        argv: Vec<OsString>,
    },
}

/// Global settings.
#[derive(Debug, Default, PartialEq, Eq)]
struct Globals {
    socket: Option<OsString>,
    debug: bool,
}

/// A parse failure: the message and the exit code.
#[derive(Debug, PartialEq, Eq)]
struct Usage(String, i32);

/// A flag table of `(name, takes a value)`, as [`goflag::Parser::next`] reads it.
fn table<'t>(defs: &'t [(&str, bool)]) -> impl Fn(&str) -> Option<bool> + 't {
    move |name| defs.iter().find(|d| d.0 == name).map(|d| d.1)
}

/// Parses the whole command line.
fn parse(args: &[OsString]) -> Result<(Globals, Action), Usage> {
    let usage = |e: goflag::Error| Usage(e.message, 1);
    let mut g = Globals::default();
    let (mut help, mut version) = (false, false);
    let globals = table(&[
        ("socket", true),
        ("debug", false),
        ("help", false),
        ("h", false),
        ("version", false),
        ("v", false),
    ]);
    let mut p = goflag::Parser::new(args);
    while let Some(Flag { name, value }) = p.next(&globals).map_err(usage)? {
        match (name.as_str(), value) {
            ("socket", Value::Text(v)) => g.socket = Some(v.to_os_string()),
            ("debug", v) => g.debug = v.is_on(),
            ("help" | "h", v) => help = v.is_on(),
            (_, v) => version = v.is_on(),
        }
    }
    if help {
        return Ok((g, Action::Print(APP_HELP.to_string())));
    }
    if version {
        return Ok((
            g,
            Action::Print(format!("rootlessctl version {}\n", goflag::VERSION)),
        ));
    }
    let Some((command, rest)) = p.rest().split_first() else {
        return Ok((g, Action::Print(APP_HELP.to_string())));
    };
    let command = command.to_string_lossy();
    let name = match command.as_ref() {
        "help" | "h" => {
            let topic = rest.first().map(|a| a.to_string_lossy());
            return match topic.as_deref() {
                None => Ok((g, Action::Print(APP_HELP.to_string()))),
                Some("help" | "h") => Ok((
                    g,
                    Action::Print("Usage: rootlessctl help [COMMAND]\n".to_string()),
                )),
                Some(t) => match command_help(t) {
                    Some(h) => Ok((g, Action::Print(h))),
                    None => Err(Usage(format!("No help topic for '{t}'"), 3)),
                },
            };
        }
        c => match COMMANDS.iter().find(|x| x.0 == c) {
            Some(x) => x.0,
            None => return Err(Usage(format!("No help topic for '{c}'"), 3)),
        },
    };
    let mut p = goflag::Parser::new(rest);
    if name == "exec" {
        let mut state_dir = None;
        let flags = table(&[("state-dir", true), ("help", false), ("h", false)]);
        while let Some(Flag { value, .. }) = p.next(&flags).map_err(usage)? {
            match value {
                Value::Text(v) => state_dir = Some(v.to_os_string()),
                v if v.is_on() => {
                    return Ok((g, Action::Print(command_help(name).unwrap_or_default())));
                }
                _ => {}
            }
        }
        let argv = p.rest().to_vec();
        return Ok((g, Action::Exec { state_dir, argv }));
    }
    let mut json = false;
    let flags = table(if name != "remove-ports" {
        &[("json", false), ("help", false), ("h", false)]
    } else {
        &[("help", false), ("h", false)]
    });
    while let Some(Flag { name: flag, value }) = p.next(&flags).map_err(usage)? {
        if flag == "json" {
            json = value.is_on();
        } else if value.is_on() {
            return Ok((g, Action::Print(command_help(name).unwrap_or_default())));
        }
    }
    let args = p
        .rest()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Ok((g, Action::Run { name, json, args }))
}

/// Runs a command line; returns the exit code. Output goes to `out`, errors to `err`.
fn run(
    args: &[OsString],
    state_dir: Option<&OsStr>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let (globals, action) = match parse(args) {
        Ok(x) => x,
        Err(Usage(msg, 3)) => {
            let _ = writeln!(err, "{msg}");
            return 3;
        }
        Err(Usage(msg, code)) => {
            let _ = writeln!(err, "error: {msg}");
            return code;
        }
    };
    let (name, json, args) = match action {
        Action::Print(text) => {
            let _ = out.write_all(text.as_bytes());
            return 0;
        }
        Action::Run { name, json, args } => (name, json, args),
        Action::Exec {
            state_dir: dir,
            argv,
        } => {
            let dir = match (dir, &globals.socket, state_dir) {
                (Some(d), _, _) if !d.is_empty() => PathBuf::from(d),
                (_, Some(s), _) if !s.is_empty() => {
                    let s = PathBuf::from(s);
                    s.parent().unwrap_or(Path::new(".")).to_path_buf()
                }
                (_, _, Some(d)) if !d.is_empty() => PathBuf::from(d),
                _ => {
                    let _ = writeln!(err, "error: please specify --state-dir");
                    return 1;
                }
            };
            let _ = writeln!(err, "error: {}", exec_helper(&dir, argv));
            return 1;
        }
    };
    match command(&globals, state_dir, name, json, &args, out, err) {
        Ok(()) => 0,
        Err(msg) => {
            let _ = out.flush();
            let _ = writeln!(err, "error: {msg}");
            1
        }
    }
}

/// `exec`: the namespace work is done by `rootlesskit-unshare --exec` (found next to us or in
/// `../libexec/rootlesskit/`), which replaces us, so the command's exit code and signals are
/// ours; it has the room in its size budget that we lack. Returns only on failure.
fn exec_helper(dir: &Path, argv: Vec<OsString>) -> String {
    use sys::process::{CStrVec, execve};
    const HELPER: &str = parent::libexec::UNSHARE_BIN;
    let mut args: Vec<OsString> = vec![HELPER.into(), "--exec".into(), dir.into(), "--".into()];
    args.extend(argv);
    let env = std::env::vars_os().map(|(k, v)| {
        let mut e = k;
        e.push("=");
        e.push(v);
        e
    });
    let (Ok(args), Ok(env)) = (CStrVec::new(args), CStrVec::new(env)) else {
        return "argument contains a NUL byte".to_string();
    };
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(HELPER),
        dir.join("../libexec/rootlesskit").join(HELPER),
    ];
    for c in &candidates {
        let Ok(path) = std::ffi::CString::new(c.as_os_str().as_bytes()) else {
            continue;
        };
        let e = execve(&path, &args, &env);
        if e.kind() != std::io::ErrorKind::NotFound {
            return format!("exec {}: {}", c.display(), sys::errno::text(&e));
        }
    }
    format!(
        "cannot find {HELPER}: looked for {} and {}",
        candidates[0].display(),
        candidates[1].display()
    )
}

/// The client for the socket the flags or `$ROOTLESSKIT_STATE_DIR` name.
fn client(g: &Globals, state_dir: Option<&OsStr>, err: &mut dyn Write) -> Result<Client, String> {
    let socket = match (&g.socket, state_dir) {
        (Some(s), _) if !s.is_empty() => PathBuf::from(s),
        (_, Some(dir)) if !dir.is_empty() => PathBuf::from(dir).join("api.sock"),
        _ => return Err("please specify --socket or set $ROOTLESSKIT_STATE_DIR".to_string()),
    };
    if g.debug {
        let _ = writeln!(err, "debug: using socket {}", socket.display());
    }
    Client::new(&socket)
}

fn command(
    g: &Globals,
    state_dir: Option<&OsStr>,
    name: &str,
    json: bool,
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    match name {
        "list-ports" => {
            let ports = client(g, state_dir, err)?.list_ports()?;
            let text = if json {
                ports.iter().map(status_line).collect()
            } else {
                port_table(&ports)
            };
            let _ = out.write_all(text.as_bytes());
        }
        "add-ports" => {
            if args.is_empty() {
                return Err("no port specified".to_string());
            }
            let specs = args
                .iter()
                .map(|s| parse_port_spec(s))
                .collect::<Result<Vec<PortSpec>, String>>()?;
            let c = client(g, state_dir, err)?;
            for spec in &specs {
                let status = c.add_port(spec)?;
                let line = if json {
                    status_line(&status)
                } else {
                    format!("{}\n", status.id)
                };
                let _ = out.write_all(line.as_bytes());
            }
        }
        "remove-ports" => {
            if args.is_empty() {
                return Err("no ID specified".to_string());
            }
            let ids = args
                .iter()
                .map(|s| go_atoi(s))
                .collect::<Result<Vec<i64>, String>>()?;
            let c = client(g, state_dir, err)?;
            for id in ids {
                c.remove_port(id)?;
                let _ = writeln!(out, "{id}");
            }
        }
        _ => {
            let info = client(g, state_dir, err)?.info()?;
            let text = if json {
                json::indent(&json::encode_info(&info)) + "\n"
            } else {
                info_text(&info)
            };
            let _ = out.write_all(text.as_bytes());
        }
    }
    Ok(())
}

fn status_line(status: &PortStatus) -> String {
    let mut line = String::new();
    json::write_status(&mut line, status);
    line.push('\n');
    line
}

/// `list-ports`: upstream's table as Go's `text/tabwriter` (minimum width 4, padding 4, pad
/// with spaces) lays it out. Every row ends with a tab, so each column, the last included, is
/// as wide as its widest cell plus 4; all rows have the same cells, so the columns span the
/// whole table.
fn port_table(ports: &[PortStatus]) -> String {
    let mut rows = vec![
        [
            "ID",
            "PROTO",
            "PARENTIP",
            "PARENTPORT",
            "CHILDIP",
            "CHILDPORT",
        ]
        .map(String::from),
    ];
    for p in ports {
        let s = &p.spec;
        rows.push([
            p.id.to_string(),
            s.proto.clone(),
            s.parent_ip.clone(),
            s.parent_port.to_string(),
            s.child_ip.clone(),
            s.child_port.to_string(),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count() + 4);
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (w, cell) in widths.iter().zip(row) {
            let _ = write!(out, "{cell:w$}");
        }
        out.push('\n');
    }
    out
}

/// `info` without `--json`: upstream's indented list (Go's `%v` of a list is `[a b]`).
fn info_text(info: &Info) -> String {
    let mut t = format!(
        "- REST API version: {}\n- Implementation version: {}\n- State Directory: {}\n- Child PID: {}\n",
        info.api_version, info.version, info.state_dir, info.child_pid
    );
    if let Some(n) = &info.network_driver {
        let _ = writeln!(
            t,
            "- Network Driver: {}\n  - DNS: [{}]",
            n.driver,
            n.dns.join(" ")
        );
        if !n.child_ip.is_empty() {
            let _ = writeln!(t, "  - IP: {}", n.child_ip);
        }
    }
    if let Some(p) = &info.port_driver {
        let _ = writeln!(
            t,
            "- Port Driver: {}\n  - Supported protocols: [{}]",
            p.driver,
            p.protos.join(" ")
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use parent::api::server::{self, Server};
    use parent::api::{Backend, NetworkDriverInfo};
    use parent::port::PortDriver;
    use parent::port::fake::FakePorts;
    use std::path::Path;
    use std::rc::Rc;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Runs our rootlessctl in-process: exit code, stdout, stderr.
    fn ctl(args: &[&str], state_dir: Option<&str>) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&argv(args), state_dir.map(OsStr::new), &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn table_matches_go_tabwriter() {
        let status = |id, proto: &str, parent_ip: &str, pp, cp| PortStatus {
            id,
            spec: PortSpec {
                proto: proto.into(),
                parent_ip: parent_ip.into(),
                parent_port: pp,
                child_ip: String::new(),
                child_port: cp,
            },
        };
        // Upstream's documented example, byte for byte.
        assert_eq!(
            port_table(&[status(1, "tcp", "127.0.0.1", 18090, 80)]),
            "ID    PROTO    PARENTIP     PARENTPORT    CHILDIP    CHILDPORT    \n\
             1     tcp      127.0.0.1    18090                    80           \n"
        );
        // Widths count characters, as Go counts runes; zero ports print as 0.
        assert_eq!(
            port_table(&[status(2, "tcpéé6", "", 0, -1)]),
            "ID    PROTO     PARENTIP    PARENTPORT    CHILDIP    CHILDPORT    \n\
             2     tcpéé6                0                        -1           \n"
        );
    }

    #[test]
    fn tables_and_info() {
        let spec = |proto: &str, pip: &str, pp, cip: &str, cp| PortSpec {
            proto: proto.into(),
            parent_ip: pip.into(),
            parent_port: pp,
            child_ip: cip.into(),
            child_port: cp,
        };
        assert_eq!(
            port_table(&[]),
            "ID    PROTO    PARENTIP    PARENTPORT    CHILDIP    CHILDPORT    \n"
        );
        let ports = [
            PortStatus {
                id: 1,
                spec: spec("tcp", "127.0.0.1", 18090, "", 80),
            },
            PortStatus {
                id: 12345,
                spec: spec("udp6", "fe80::1234:5678:9abc", 1, "::2", 65535),
            },
        ];
        assert_eq!(
            port_table(&ports),
            "ID       PROTO    PARENTIP                PARENTPORT    CHILDIP    CHILDPORT    \n\
             1        tcp      127.0.0.1               18090                    80           \n\
             12345    udp6     fe80::1234:5678:9abc    1             ::2        65535        \n"
        );
        let host = Info {
            api_version: "1.1.1".into(),
            version: "2.3.4".into(),
            state_dir: "/tmp/rk".into(),
            child_pid: 7,
            network_driver: Some(NetworkDriverInfo {
                driver: "none".into(),
                ..Default::default()
            }),
            port_driver: None,
        };
        assert_eq!(
            info_text(&host),
            "- REST API version: 1.1.1\n- Implementation version: 2.3.4\n- State Directory: /tmp/rk\n- Child PID: 7\n- Network Driver: none\n  - DNS: []\n"
        );
    }

    #[test]
    fn command_line_errors() {
        let none = None;
        let check = |args: &[&str], expect: (i32, &str, &str)| {
            let (code, out, err) = ctl(args, none);
            assert_eq!((code, out.as_str(), err.as_str()), expect, "{args:?}");
        };
        let e = |msg: &str| format!("error: {msg}\n");
        check(
            &["list-ports"],
            (
                1,
                "",
                &e("please specify --socket or set $ROOTLESSKIT_STATE_DIR"),
            ),
        );
        check(
            &["--socket=", "info"],
            (
                1,
                "",
                &e("please specify --socket or set $ROOTLESSKIT_STATE_DIR"),
            ),
        );
        check(
            &["--socket", "/nonexist", "info"],
            (1, "", &e("stat /nonexist: no such file or directory")),
        );
        check(
            &["-socket", "/nonexist", "list-ports", "--json"],
            (1, "", &e("stat /nonexist: no such file or directory")),
        );
        check(
            &["--socket", "/a", "--socket", "/b", "info"],
            (1, "", &e("stat /b: no such file or directory")),
        );
        check(
            &["--bogus"],
            (1, "", &e("flag provided but not defined: -bogus")),
        );
        check(&["---x"], (1, "", &e("bad flag syntax: ---x")));
        check(
            &["--socket"],
            (1, "", &e("flag needs an argument: -socket")),
        );
        check(
            &["--debug=maybe", "info"],
            (
                1,
                "",
                &e("invalid boolean value \"maybe\" for -debug: parse error"),
            ),
        );
        check(
            &["list-ports", "--json=maybe"],
            (
                1,
                "",
                &e("invalid boolean value \"maybe\" for -json: parse error"),
            ),
        );
        check(
            &["list-ports", "--bogus"],
            (1, "", &e("flag provided but not defined: -bogus")),
        );
        check(
            &["info", "--socket", "/x"],
            (1, "", &e("flag provided but not defined: -socket")),
        );
        check(
            &["remove-ports", "--json", "1"],
            (1, "", &e("flag provided but not defined: -json")),
        );
        check(&["foo"], (3, "", "No help topic for 'foo'\n"));
        check(&["help", "foo"], (3, "", "No help topic for 'foo'\n"));
        // Arguments are checked before any socket is looked for.
        check(&["add-ports"], (1, "", &e("no port specified")));
        check(&["add-ports", "--json"], (1, "", &e("no port specified")));
        check(
            &["add-ports", "bad"],
            (1, "", &e("missing proto in PortSpec string: \"bad\"")),
        );
        check(
            &[
                "add-ports",
                "127.0.0.1:8080:80/tcp",
                "1.2.3.4:1:1.2.3.5:2:80/tcp",
            ],
            (
                1,
                "",
                &e("unexpected PortSpec string: \"1.2.3.4:1:1.2.3.5:2:80/tcp\""),
            ),
        );
        check(
            &["add-ports", "1:1:1/tcp", "--json"],
            (
                1,
                "",
                &e("unexpected ParentIP in PortSpec string: \"1:1:1/tcp\""),
            ),
        );
        check(&["remove-ports"], (1, "", &e("no ID specified")));
        check(
            &["remove-ports", "x"],
            (1, "", &e("strconv.Atoi: parsing \"x\": invalid syntax")),
        );
        check(
            &["remove-ports", "1", "-x"],
            (1, "", &e("strconv.Atoi: parsing \"-x\": invalid syntax")),
        );
        check(
            &["remove-ports", "99999999999999999999x"],
            (
                1,
                "",
                &e("strconv.Atoi: parsing \"99999999999999999999x\": value out of range"),
            ),
        );
        check(
            &["remove-ports", "--", "-1"],
            (
                1,
                "",
                &e("please specify --socket or set $ROOTLESSKIT_STATE_DIR"),
            ),
        );
        // $ROOTLESSKIT_STATE_DIR names the socket when --socket does not.
        let (code, _, err) = ctl(&["info"], Some("/nonexist-dir"));
        assert_eq!(
            (code, err.as_str()),
            (
                1,
                "error: stat /nonexist-dir/api.sock: no such file or directory\n"
            )
        );
        let (code, _, err) = ctl(&["--debug", "info"], Some("/d"));
        assert_eq!(
            (code, err.as_str()),
            (
                1,
                "debug: using socket /d/api.sock\nerror: stat /d/api.sock: no such file or directory\n"
            )
        );
    }

    #[test]
    fn help_and_version() {
        let version = (0, "rootlessctl version 3.0.1\n".to_string(), String::new());
        assert_eq!(ctl(&["--version"], None), version);
        assert_eq!(ctl(&["-v", "list-ports"], None), version);
        assert_eq!(ctl(&["-version"], None), version);
        let help = (0, APP_HELP.to_string(), String::new());
        assert_eq!(ctl(&[], None), help);
        assert_eq!(ctl(&["-h"], None), help);
        assert_eq!(ctl(&["--help", "--version"], None), help);
        assert_eq!(ctl(&["help"], None), help);
        assert_eq!(ctl(&["h"], None), help);
        for c in ["list-ports", "add-ports", "remove-ports", "info"] {
            let expect = (0, command_help(c).unwrap(), String::new());
            assert_eq!(ctl(&["help", c], None), expect);
            assert_eq!(ctl(&[c, "--help"], None), expect);
            assert_eq!(ctl(&[c, "-h", "x"], None), expect);
            assert!(expect.1.contains(c), "{c}");
        }
        assert!(command_help("exec").unwrap().contains("--state-dir DIR"));
        assert!(APP_HELP.contains("   exec "));
        assert!(command_help("add-ports").unwrap().contains("--json"));
        assert!(!command_help("remove-ports").unwrap().contains("--json"));
        // Every flag and command upstream has is named in the help.
        for word in [
            "--debug",
            "--socket",
            "--help, -h",
            "--version, -v",
            "list-ports",
            "add-ports",
            "remove-ports",
            "info",
            "help, h",
        ] {
            assert!(APP_HELP.contains(word), "{word}");
        }
    }

    #[test]
    fn exec_command_lines() {
        let exec = |dir: Option<&str>, argv: &[&str]| Action::Exec {
            state_dir: dir.map(OsString::from),
            argv: argv.iter().map(OsString::from).collect(),
        };
        #[track_caller]
        fn check(args: &[&str], want: Action) {
            assert_eq!(parse(&argv(args)).unwrap().1, want, "{args:?}");
        }
        check(&["exec", "--", "id", "-u"], exec(None, &["id", "-u"]));
        // Flags stop at the command: its own flags are its own.
        check(
            &["exec", "--state-dir=/s", "sh", "-c", "--state-dir"],
            exec(Some("/s"), &["sh", "-c", "--state-dir"]),
        );
        check(
            &["exec", "-state-dir", "/s", "--", "--weird"],
            exec(Some("/s"), &["--weird"]),
        );
        assert!(
            matches!(parse(&argv(&["exec", "-h"])).unwrap().1, Action::Print(h) if h.contains("exec"))
        );
        assert_eq!(
            ctl(&["exec", "--bogus"], None),
            (
                1,
                String::new(),
                "error: flag provided but not defined: -bogus\n".into()
            )
        );
        assert_eq!(
            ctl(&["exec", "true"], None),
            (
                1,
                String::new(),
                "error: please specify --state-dir\n".into()
            )
        );
    }

    /// A server on `api.sock` in a scratch directory; a test serves it on its own thread
    /// ([`Server::serve_while`]) while the client runs on another.
    struct Env {
        dir: PathBuf,
        server: Option<Server>,
    }

    impl Drop for Env {
        fn drop(&mut self) {
            drop(self.server.take());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Env {
        fn serve_while<T: Send>(&mut self, client: impl FnOnce() -> T + Send) -> T {
            let server = self.server.as_mut().unwrap();
            server.serve_while(client).unwrap()
        }
    }

    fn serve(tag: &str, driver: Option<Rc<dyn PortDriver>>) -> Env {
        let dir = std::env::temp_dir().join(format!("rkctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let backend = Backend {
            state_dir: dir.display().to_string(),
            child_pid: 31337,
            network_driver: Some(NetworkDriverInfo {
                driver: "slirp4netns".into(),
                dns: vec!["10.0.2.3".into(), "fd00::3".into()],
                child_ip: "10.0.2.100".into(),
                dynamic_child_ip: false,
            }),
            port_driver: driver,
        };
        let server =
            Server::bind(&dir.join("api.sock"), backend, server::Config::default()).unwrap();
        Env {
            dir,
            server: Some(server),
        }
    }

    /// The session upstream's integration-port.sh and Docker go through, by our client over a
    /// real socket; each step's output is also compared with upstream's Go client, byte for
    /// byte, when Debian's rootlessctl is installed.
    #[test]
    fn end_to_end_against_our_server() {
        let mut env = serve("e2e", Some(Rc::new(FakePorts::default())));
        let state = env.dir.to_str().unwrap().to_string();
        let go = Path::new("/usr/bin/rootlessctl");
        if !go.exists() {
            println!(
                "note: {} is missing; not comparing with upstream's client",
                go.display()
            );
        }
        // Each step: arguments, and exit code, stdout, stderr of both clients. Go's client
        // differs only in the version number it reports.
        let steps: Vec<(Vec<&str>, i32, String, String)> = vec![
            (vec!["list-ports"], 0, "ID    PROTO    PARENTIP    PARENTPORT    CHILDIP    CHILDPORT    \n".into(), String::new()),
            (vec!["list-ports", "--json"], 0, String::new(), String::new()),
            (vec!["add-ports", "127.0.0.1:18090:80/tcp", "[::1]:18091:[::2]:81/udp6"], 0, "1\n2\n".into(), String::new()),
            (vec!["add-ports", "--json", ":18092:82/tcp"], 0,
                "{\"id\":3,\"spec\":{\"proto\":\"tcp\",\"parentPort\":18092,\"childPort\":82}}\n".into(), String::new()),
            // Stops at the first failure; earlier adds stay.
            (vec!["add-ports", "0.0.0.0:18093:83/udp", "127.0.0.1:18090:80/tcp", "0.0.0.0:18094:84/udp"], 1,
                "4\n".into(), "error: conflict with ID 1\n".into()),
            (vec!["add-ports", "127.0.0.1:0:80/tcp"], 1, String::new(), "error: invalid ParentPort: 0\n".into()),
            (vec!["list-ports"], 0, concat!(
                "ID    PROTO    PARENTIP     PARENTPORT    CHILDIP    CHILDPORT    \n",
                "1     tcp      127.0.0.1    18090                    80           \n",
                "2     udp6     ::1          18091         ::2        81           \n",
                "3     tcp                   18092                    82           \n",
                "4     udp      0.0.0.0      18093                    83           \n",
            ).into(), String::new()),
            (vec!["list-ports", "--json"], 0, concat!(
                "{\"id\":1,\"spec\":{\"proto\":\"tcp\",\"parentIP\":\"127.0.0.1\",\"parentPort\":18090,\"childPort\":80}}\n",
                "{\"id\":2,\"spec\":{\"proto\":\"udp6\",\"parentIP\":\"::1\",\"parentPort\":18091,\"childPort\":81,\"childIP\":\"::2\"}}\n",
                "{\"id\":3,\"spec\":{\"proto\":\"tcp\",\"parentPort\":18092,\"childPort\":82}}\n",
                "{\"id\":4,\"spec\":{\"proto\":\"udp\",\"parentIP\":\"0.0.0.0\",\"parentPort\":18093,\"childPort\":83}}\n",
            ).into(), String::new()),
            (vec!["remove-ports", "2", "+03"], 0, "2\n3\n".into(), String::new()),
            (vec!["remove-ports", "4", "2", "1"], 1, "4\n".into(), "error: unknown id: 2\n".into()),
            (vec!["remove-ports", "-7"], 1, String::new(), "error: flag provided but not defined: -7\n".into()),
            (vec!["remove-ports", "--", "-7"], 1, String::new(), "error: unknown id: -7\n".into()),
            (vec!["info"], 0, format!(concat!(
                "- REST API version: 1.1.1\n",
                "- Implementation version: 3.0.1\n",
                "- State Directory: {}\n",
                "- Child PID: 31337\n",
                "- Network Driver: slirp4netns\n",
                "  - DNS: [10.0.2.3 fd00::3]\n",
                "  - IP: 10.0.2.100\n",
                "- Port Driver: builtin\n",
                "  - Supported protocols: [tcp tcp4 tcp6 udp udp4 udp6]\n",
            ), state), String::new()),
            (vec!["info", "--json"], 0, format!(concat!(
                "{{\n",
                "    \"apiVersion\": \"1.1.1\",\n",
                "    \"version\": \"3.0.1\",\n",
                "    \"stateDir\": \"{}\",\n",
                "    \"childPID\": 31337,\n",
                "    \"networkDriver\": {{\n",
                "        \"driver\": \"slirp4netns\",\n",
                "        \"dns\": [\n",
                "            \"10.0.2.3\",\n",
                "            \"fd00::3\"\n",
                "        ],\n",
                "        \"childIP\": \"10.0.2.100\"\n",
                "    }},\n",
                "    \"portDriver\": {{\n",
                "        \"driver\": \"builtin\",\n",
                "        \"protos\": [\n",
                "            \"tcp\",\n",
                "            \"tcp4\",\n",
                "            \"tcp6\",\n",
                "            \"udp\",\n",
                "            \"udp4\",\n",
                "            \"udp6\"\n",
                "        ]\n",
                "    }}\n",
                "}}\n",
            ), state), String::new()),
        ];
        env.serve_while(|| {
            for (args, code, out, err) in &steps {
                // Through $ROOTLESSKIT_STATE_DIR, as a target inside rootlesskit would.
                assert_eq!(
                    ctl(args, Some(&state)),
                    (*code, out.clone(), err.clone()),
                    "{args:?}"
                );
            }
        });
        // Upstream's client, replaying the same session against a fresh server.
        if go.exists() {
            let mut env2 = serve("e2e-go", Some(Rc::new(FakePorts::default())));
            let sock = env2.dir.join("api.sock");
            let state2 = env2.dir.to_str().unwrap().to_string();
            env2.serve_while(|| {
                for (args, code, out, err) in &steps {
                    let mut argv: Vec<OsString> = vec!["--socket".into(), sock.clone().into()];
                    argv.extend(args.iter().map(OsString::from));
                    let (status, combined) = parent::exec::run_with_output(go, &argv).unwrap();
                    let mut combined = String::from_utf8_lossy(&combined).into_owned();
                    // On a usage error upstream also prints the command's help; we do not.
                    if combined.starts_with("Incorrect Usage") {
                        combined = combined[combined.rfind("error: ").unwrap()..].to_string();
                    }
                    assert_eq!(
                        (status.code(), combined),
                        (Some(*code), format!("{out}{err}").replace(&state, &state2)),
                        "go {args:?}"
                    );
                }
            });
        }
    }

    #[test]
    fn without_a_port_driver() {
        let mut env = serve("nodriver", None);
        let state = env.dir.to_str().unwrap().to_string();
        let e = |msg: &str| format!("error: {msg}\n");
        env.serve_while(|| {
            for args in [
                &["list-ports"][..],
                &["add-ports", "127.0.0.1:8080:80/tcp"],
                &["remove-ports", "1"],
            ] {
                assert_eq!(
                    ctl(args, Some(&state)),
                    (1, String::new(), e("no PortDriver is available")),
                    "{args:?}"
                );
            }
            let (code, out, _) = ctl(&["info"], Some(&state));
            assert_eq!(code, 0);
            assert!(out.ends_with("  - IP: 10.0.2.100\n"), "{out}");
        });
    }
}
