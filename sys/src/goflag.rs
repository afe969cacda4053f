//! Go's command-line conventions, which every binary follows because scripts written for upstream
//! call them: the `flag` package's syntax (as urfave/cli drives it too), its value spellings
//! (`strconv.ParseBool`, `ParseInt` base 0), its error wording, Go's `%q`, and the version we print.
//!
//! The syntax, one argument at a time, as `FlagSet.Parse` reads it:
//! `-name` and `--name` are the same flag; a value goes in `-name=value` or the next argument
//! (`-name value`), whatever that argument looks like; a bool flag is `-name` (true) or
//! `-name=<bool>` and never takes the next argument; `--` ends the flags and is dropped; the first
//! argument that is not a flag (`-` included) ends them and is kept; `-h`/`-help`, when the table
//! does not define them, ask for help. There are no short-option clusters: `-net` is one flag.
//!
//! [`Parser::next`] yields one flag per call, so each binary keeps its own table and its own
//! `while let` loop over it, and decides itself what a flag does (even to stop at once).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// The upstream release whose behaviour we match, which every binary's `--version` prints and the
/// API reports as its implementation version.
pub const VERSION: &str = "2.3.4";

/// Walks a command line (without argv\[0\]) the way Go's `FlagSet.Parse` does.
#[derive(Debug)]
pub struct Parser<'a> {
    args: &'a [OsString],
    pos: usize,
}

/// One flag as given: its name without dashes, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag<'a> {
    pub name: String,
    pub value: Value<'a>,
}

/// A flag's value: bool flags are parsed here (Go's `ParseBool`), other values are left as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Bool(bool),
    Text(&'a OsStr),
}

/// A command line Go's `flag` refuses: its message, in Go's wording, and what kind of refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

/// What an [`Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `-h` or `-help`, which the table does not define: Go's `ErrHelp`, upon which the program
    /// prints its usage and exits 0.
    Help,
    /// `flag provided but not defined: -NAME`.
    Undefined,
    /// Any other syntax or value error.
    Usage,
}

impl Error {
    fn usage(message: String) -> Error {
        Error {
            kind: ErrorKind::Usage,
            message,
        }
    }

    /// For [`ErrorKind::Undefined`], the flag's name as typed (lossily UTF-8), without dashes.
    pub fn undefined_name(&self) -> Option<&str> {
        match self.kind {
            ErrorKind::Undefined => self.message.strip_prefix(UNDEFINED),
            _ => None,
        }
    }
}

const UNDEFINED: &str = "flag provided but not defined: -";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl<'a> Parser<'a> {
    /// A parser at the start of `args`.
    pub fn new(args: &'a [OsString]) -> Parser<'a> {
        Parser { args, pos: 0 }
    }

    /// The next flag, or `None` where the flags end (at the end, at the first argument that is
    /// not a flag, or just after `--`).
    ///
    /// `takes_value(name)` is the flag table: `Some(true)` for a flag that takes a value,
    /// `Some(false)` for a bool flag, `None` for a name it does not define.
    ///
    /// # Errors
    /// Go's messages: `bad flag syntax: ---x`, `flag provided but not defined: -x`,
    /// `flag needs an argument: -x`, `invalid boolean value "maybe" for -x: parse error`, and
    /// [`ErrorKind::Help`] for an undefined `-h`/`-help`.
    pub fn next(
        &mut self,
        takes_value: &dyn Fn(&str) -> Option<bool>,
    ) -> Result<Option<Flag<'a>>, Error> {
        let Some(arg) = self.args.get(self.pos) else {
            return Ok(None);
        };
        let raw = arg.as_bytes();
        if raw.len() < 2 || raw[0] != b'-' {
            return Ok(None);
        }
        if raw == b"--" {
            self.pos += 1;
            return Ok(None);
        }
        let body = &raw[if raw[1] == b'-' { 2 } else { 1 }..];
        if body.is_empty() || body[0] == b'-' || body[0] == b'=' {
            return Err(Error::usage(format!(
                "bad flag syntax: {}",
                arg.to_string_lossy()
            )));
        }
        self.pos += 1;
        let (name, inline) = match body.iter().position(|&c| c == b'=') {
            Some(eq) => (&body[..eq], Some(OsStr::from_bytes(&body[eq + 1..]))),
            None => (body, None),
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let value = match (takes_value(&name), inline) {
            (None, _) => {
                let help = name == "h" || name == "help";
                return Err(Error {
                    kind: if help {
                        ErrorKind::Help
                    } else {
                        ErrorKind::Undefined
                    },
                    message: if help {
                        "flag: help requested".to_owned()
                    } else {
                        format!("{UNDEFINED}{name}")
                    },
                });
            }
            (Some(false), None) => Value::Bool(true),
            (Some(false), Some(v)) => match parse_bool(v.as_bytes()) {
                Some(b) => Value::Bool(b),
                None => {
                    return Err(Error::usage(format!(
                        "invalid boolean value {} for -{name}: parse error",
                        quote(v.as_bytes())
                    )));
                }
            },
            (Some(true), Some(v)) => Value::Text(v),
            (Some(true), None) => match self.args.get(self.pos) {
                Some(v) => {
                    self.pos += 1;
                    Value::Text(v)
                }
                None => return Err(Error::usage(format!("flag needs an argument: -{name}"))),
            },
        };
        Ok(Some(Flag { name, value }))
    }

    /// The arguments not read yet: after the flags, the command and its arguments.
    pub fn rest(&self) -> &'a [OsString] {
        &self.args[self.pos..]
    }
}

impl Value<'_> {
    /// A bool flag's value; `false` for a text value (which a bool flag never has).
    pub fn is_on(self) -> bool {
        matches!(self, Value::Bool(true))
    }
}

/// Go's error for a value its flag's type refuses: `invalid value "x" for flag -name: why`.
pub fn invalid_value(name: &str, value: &OsStr, why: &str) -> Error {
    Error::usage(format!(
        "invalid value {} for flag -{name}: {why}",
        quote(value.as_bytes())
    ))
}

/// Go's `strconv.ParseBool`: `1 t T TRUE true True`, `0 f F FALSE false False`, nothing else.
pub fn parse_bool(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, as the `flag` package's int flags read their value: sign,
/// `0x`/`0o`/`0b` prefixes, a bare leading `0` for octal, and `_` between digits.
///
/// # Errors
/// The reason part of Go's flag message: `parse error` or `value out of range`.
pub fn parse_int(s: &[u8]) -> Result<i64, &'static str> {
    const SYNTAX: &str = "parse error";
    const RANGE: &str = "value out of range";
    let (neg, unsigned) = match s.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if unsigned.is_empty() {
        return Err(SYNTAX);
    }
    let lower = |c: u8| c | (b'x' - b'X');
    let (base, digits): (u64, &[u8]) = if unsigned[0] == b'0' {
        match unsigned.get(1).map(|&c| lower(c)) {
            Some(b'b') if unsigned.len() >= 3 => (2, &unsigned[2..]),
            Some(b'o') if unsigned.len() >= 3 => (8, &unsigned[2..]),
            Some(b'x') if unsigned.len() >= 3 => (16, &unsigned[2..]),
            _ => (8, &unsigned[1..]),
        }
    } else {
        (10, unsigned)
    };
    let cutoff = u64::MAX / base + 1;
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            _ if lower(c).is_ascii_lowercase() => lower(c) - b'a' + 10,
            _ => return Err(SYNTAX),
        };
        if u64::from(d) >= base {
            return Err(SYNTAX);
        }
        if n >= cutoff {
            return Err(RANGE);
        }
        n = n
            .checked_mul(base)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(RANGE)?;
    }
    if underscores && !underscore_ok(unsigned) {
        return Err(SYNTAX);
    }
    let limit = 1u64 << 63;
    match (neg, n) {
        (false, n) if n >= limit => Err(RANGE),
        (true, n) if n > limit => Err(RANGE),
        (true, n) => Ok(0i64.wrapping_sub_unsigned(n)),
        (false, n) => i64::try_from(n).map_err(|_| RANGE),
    }
}

/// Go's `underscoreOK`: an underscore must sit between digits, or between a base prefix and a digit.
fn underscore_ok(s: &[u8]) -> bool {
    let lower = |c: u8| c | (b'x' - b'X');
    // '^' start, '0' digit or prefix, '_' underscore, '!' anything else.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(lower(s[1]), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = lower(s[1]) == b'x';
    }
    for &c in &s[i..] {
        if c.is_ascii_digit() || hex && (b'a'..=b'f').contains(&lower(c)) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// Go's `%q`: double quotes, backslash escapes, `\xNN` for bytes that are not UTF-8. The flag
/// package quotes refused values with it, and so do many of our messages that read like upstream's.
pub fn quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                    if (c as u32) < 0x10000 {
                        out.push_str(&format!("\\u{:04x}", c as u32));
                    } else {
                        out.push_str(&format!("\\U{:08x}", c as u32));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the tests: `str` and `p` take a value, `b` and `help` are bools.
    fn table(name: &str) -> Option<bool> {
        match name {
            "str" | "p" => Some(true),
            "b" | "help" => Some(false),
            _ => None,
        }
    }

    /// Every flag as `name=value` (`name` alone for a true bool, `name=false` for a false one),
    /// then `|` and the rest; or the error's text.
    fn parse(args: &[&str]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let mut p = Parser::new(&args);
        let mut out = Vec::new();
        loop {
            match p.next(&table) {
                Ok(Some(Flag { name, value })) => out.push(match value {
                    Value::Bool(true) => name,
                    Value::Bool(false) => format!("{name}=false"),
                    Value::Text(v) => format!("{name}={}", v.to_string_lossy()),
                }),
                Ok(None) => break,
                Err(e) => return e.to_string(),
            }
        }
        let rest: Vec<_> = p.rest().iter().map(|a| a.to_string_lossy()).collect();
        format!("{} | {}", out.join(" "), rest.join(" "))
    }

    #[test]
    fn go_flag_syntax() {
        for (args, want) in [
            (&[][..], " | "),
            (
                &["-str", "a", "--str=b", "-str=", "--str", "c"],
                "str=a str=b str= str=c | ",
            ),
            // A value is the next argument whatever it looks like, "--" and "-x" included.
            (&["-str", "--", "x"], "str=-- | x"),
            (&["-p", "-b", "x"], "p=-b | x"),
            (&["--str=a=b"], "str=a=b | "),
            // Bools never take the next argument.
            (&["-b", "false", "x"], "b | false x"),
            (&["-b=false", "--b=0", "-b=T"], "b=false b=false b | "),
            // Where the flags end: "--" is dropped, the rest is kept as it is.
            (&["-b", "--", "-b", "x"], "b | -b x"),
            (&["-b", "cmd", "-b"], "b | cmd -b"),
            (&["-", "-b"], " | - -b"),
            (&["", "-b"], " |  -b"),
            // No short-option clusters and no attached values.
            (&["-bb"], "flag provided but not defined: -bb"),
            (&["-p8080"], "flag provided but not defined: -p8080"),
            (
                &["-b", "--nope=1", "-b"],
                "flag provided but not defined: -nope",
            ),
            (&["-h"], "flag: help requested"),
            (&["--help=false"], "help=false | "),
            (&["---b"], "bad flag syntax: ---b"),
            (&["-=b"], "bad flag syntax: -=b"),
            (&["--=b"], "bad flag syntax: --=b"),
            (&["-str"], "flag needs an argument: -str"),
            (&["--p"], "flag needs an argument: -p"),
            (
                &["-b=yes"],
                "invalid boolean value \"yes\" for -b: parse error",
            ),
            (&["-b="], "invalid boolean value \"\" for -b: parse error"),
            // An earlier error wins over a later one.
            (
                &["-b=x", "---b"],
                "invalid boolean value \"x\" for -b: parse error",
            ),
        ] {
            assert_eq!(parse(args), want, "{args:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from_vec(b"--str=\xff".to_vec()),
            OsString::from_vec(b"-\xfe".to_vec()),
        ];
        let mut p = Parser::new(&args);
        let first = p.next(&table).unwrap().unwrap();
        assert_eq!(first.value, Value::Text(OsStr::from_bytes(b"\xff")));
        assert_eq!(
            p.next(&table).unwrap_err().to_string(),
            "flag provided but not defined: -\u{fffd}"
        );
    }

    #[test]
    fn parse_bool_spellings() {
        for s in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(s.as_bytes()), Some(true), "{s}");
        }
        for s in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(s.as_bytes()), Some(false), "{s}");
        }
        for s in ["", "yes", "no", "tRUE", "fAlse", "2", " true", "on"] {
            assert_eq!(parse_bool(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn parse_int_as_go() {
        for (s, want) in [
            ("0", Ok(0)),
            ("+7", Ok(7)),
            ("-7", Ok(-7)),
            ("010", Ok(8)),
            ("0x1F", Ok(31)),
            ("0X1f", Ok(31)),
            ("0o17", Ok(15)),
            ("0b101", Ok(5)),
            ("1_000", Ok(1000)),
            ("0x_1", Ok(1)),
            ("9223372036854775807", Ok(i64::MAX)),
            ("-9223372036854775808", Ok(i64::MIN)),
            ("9223372036854775808", Err("value out of range")),
            ("99999999999999999999", Err("value out of range")),
            ("", Err("parse error")),
            ("-", Err("parse error")),
            ("08", Err("parse error")),
            ("0x", Err("parse error")),
            ("1__0", Err("parse error")),
            ("_1", Err("parse error")),
            ("1_", Err("parse error")),
            ("80x", Err("parse error")),
            (" 1", Err("parse error")),
        ] {
            assert_eq!(parse_int(s.as_bytes()), want, "{s:?}");
        }
    }

    #[test]
    fn messages_quote_values_as_go() {
        assert_eq!(
            invalid_value("mtu", OsStr::new("a\"b\n"), "parse error").to_string(),
            "invalid value \"a\\\"b\\n\" for flag -mtu: parse error"
        );
        assert_eq!(
            quote(b"\xff\x01\t\xc2\x85 \xe2\x80\xa8x"),
            "\"\\xff\\x01\\t\\u0085 \\u2028x\""
        );
    }
}
