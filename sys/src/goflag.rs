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

/// The newest upstream release whose user-visible behaviour we match in full, which every
/// binary's `--version` prints and the API reports as its implementation version: v3.0.1, whose
/// changes since v2.3.4 are checked one by one in docs/upstream-v3.md (README, the rule behind
/// `--version`).
pub const VERSION: &str = "3.0.1";

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
    /// `flag needs an argument: -NAME`: a flag that takes a value came last.
    MissingValue,
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
        takes_value: impl Fn(&str) -> Option<bool>,
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
            Some(eq) => match body.split_at_checked(eq) {
                Some((name, [_, value @ ..])) => (name, Some(OsStr::from_bytes(value))),
                _ => (body, None),
            },
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
                None => {
                    return Err(Error {
                        kind: ErrorKind::MissingValue,
                        message: format!("flag needs an argument: -{name}"),
                    });
                }
            },
        };
        Ok(Some(Flag { name, value }))
    }

    /// The arguments not read yet: after the flags, the command and its arguments.
    pub fn rest(&self) -> &'a [OsString] {
        self.args.get(self.pos..).unwrap_or_default()
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

/// Why a number was refused: Go's `strconv.ErrSyntax` or `strconv.ErrRange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntError {
    Syntax,
    Range,
}

impl IntError {
    /// The reason as the `flag` package words it.
    pub fn flag_reason(self) -> &'static str {
        match self {
            IntError::Syntax => "parse error",
            IntError::Range => "value out of range",
        }
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, as the `flag` package's int flags read their value: sign,
/// `0x`/`0o`/`0b` prefixes, a bare leading `0` for octal, and `_` between digits.
///
/// # Errors
/// The reason part of Go's flag message: `parse error` or `value out of range`.
pub fn parse_int(s: &[u8]) -> Result<i64, &'static str> {
    parse_integer(s, true).map_err(IntError::flag_reason)
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits, nothing else.
///
/// # Errors
/// [`IntError::Range`] as soon as the value overflows (before any later bad character, as in
/// Go), else [`IntError::Syntax`] for anything that is not a number.
pub fn atoi(s: &[u8]) -> Result<i64, IntError> {
    parse_integer(s, false)
}

/// `ParseInt(s, base0 ? 0 : 10, 64)`, the one integer parser of both.
fn parse_integer(s: &[u8], base0: bool) -> Result<i64, IntError> {
    const SYNTAX: IntError = IntError::Syntax;
    const RANGE: IntError = IntError::Range;
    let (neg, unsigned) = match s {
        [b'+', rest @ ..] => (false, rest),
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if unsigned.is_empty() {
        return Err(SYNTAX);
    }
    let lower = |c: u8| c | (b'x' - b'X');
    let (base, digits): (u64, &[u8]) = if base0 && unsigned[0] == b'0' {
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
    // Go's `underscoreOK`, folded in: an underscore must follow a digit or the base prefix (which
    // counts as one) and be followed by a digit. Like Go, a bad digit or an overflow is reported
    // before a misplaced underscore.
    let mut after_digit = base != 10;
    let mut misplaced = false;
    for &c in digits {
        let d = match c {
            b'_' if base0 => {
                misplaced |= !after_digit;
                after_digit = false;
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
        after_digit = true;
    }
    if misplaced || !after_digit {
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

/// Go's `%q`: double quotes, backslash escapes, `\xNN` for bytes that are not UTF-8. The flag
/// package quotes refused values with it, and so do many of our messages that read like upstream's.
pub fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            let short = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\x07' => "\\a",
                '\x08' => "\\b",
                '\x0c' => "\\f",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\x0b' => "\\v",
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    hex(&mut out, 'x', c as u32, 2);
                    continue;
                }
                c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                    let (letter, digits) = if (c as u32) < 0x10000 {
                        ('u', 4)
                    } else {
                        ('U', 8)
                    };
                    hex(&mut out, letter, c as u32, digits);
                    continue;
                }
                c => {
                    out.push(c);
                    continue;
                }
            };
            out.push_str(short);
        }
        for &b in chunk.invalid() {
            hex(&mut out, 'x', u32::from(b), 2);
        }
    }
    out.push('"');
    out
}

/// `\` `letter` and the low `digits` hex digits of `n`, in lower case (without `fmt`, which
/// would cost every binary its formatting machinery here).
fn hex(out: &mut String, letter: char, n: u32, digits: u32) {
    out.push('\\');
    out.push(letter);
    for i in (0..digits).rev() {
        out.push(char::from(
            b"0123456789abcdef"[(n >> (4 * i)) as usize & 15],
        ));
    }
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
            match p.next(table) {
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
        let first = p.next(table).unwrap().unwrap();
        assert_eq!(first.value, Value::Text(OsStr::from_bytes(b"\xff")));
        assert_eq!(
            p.next(table).unwrap_err().to_string(),
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
            ("0x_", Err("parse error")),
            ("0_7", Ok(7)),
            ("0b_1_0", Ok(2)),
            ("1__99999999999999999999", Err("value out of range")),
            ("1__9x", Err("parse error")),
            ("80x", Err("parse error")),
            (" 1", Err("parse error")),
        ] {
            assert_eq!(parse_int(s.as_bytes()), want, "{s:?}");
        }
    }

    #[test]
    fn atoi_as_go() {
        use IntError::{Range, Syntax};
        for (s, want) in [
            ("0", Ok(0)),
            ("+7", Ok(7)),
            ("-007", Ok(-7)),
            ("010", Ok(10)),
            ("9223372036854775807", Ok(i64::MAX)),
            ("-9223372036854775808", Ok(i64::MIN)),
            ("9223372036854775808", Err(Range)),
            ("99999999999999999999x", Err(Range)),
            ("", Err(Syntax)),
            ("+", Err(Syntax)),
            ("0x10", Err(Syntax)),
            ("1_000", Err(Syntax)),
            ("1a", Err(Syntax)),
            (" 1", Err(Syntax)),
        ] {
            assert_eq!(atoi(s.as_bytes()), want, "{s:?}");
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
