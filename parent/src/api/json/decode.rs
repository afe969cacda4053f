//! Decoding, in two passes as Go's: a port of Go's syntax scanner (`encoding/json/scanner.go`) finds
//! the end of the first value and reports syntax errors in Go's words at Go's byte; then a cursor
//! walks the checked value, fills the API structs, records the first type mismatch in Go's words
//! and skips unknown keys.

use crate::api::{Info, NetworkDriverInfo};
use crate::port::{PortDriverInfo, PortSpec, PortStatus};

// ---------------------------------------------------------------------------------------------
// The syntax scanner (a port of Go's `encoding/json/scanner.go` state machine)

/// Go's nesting limit.
const MAX_DEPTH: usize = 10000;

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Go's `quoteChar`: the byte as a one-rune quoted literal (`'b'`, `'\x01'`, `'ÿ'`).
fn quote_char(c: u8) -> String {
    let inner = match c {
        b'\'' => "\\'".to_string(),
        b'"' => "\"".to_string(),
        // Soft hyphen: unprintable for Go, but not a control character.
        0xad => "\\u00ad".to_string(),
        // A byte becomes the rune U+0000..U+00FF, quoted as Go's strconv.Quote does.
        _ => {
            let q = sys::golang::quote((c as char).encode_utf8(&mut [0; 4]).as_bytes());
            q[1..q.len() - 1].to_string()
        }
    };
    format!("'{inner}'")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ps {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

#[derive(Clone, Copy)]
enum St {
    BeginValueOrEmpty,
    BeginValue,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    EndTop,
    InString,
    InStringEsc,
    InStringEscU(u8),
    Neg,
    Digits,
    Zero,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    Lit(&'static str, u8),
    Error,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Continue,
    Skip,
    EndObject,
    EndArray,
    End,
    Error,
}

struct Scanner {
    st: St,
    pub(super) stack: Vec<Ps>,
    pub(super) err: Option<String>,
}

impl Scanner {
    pub(super) fn new() -> Scanner {
        Scanner {
            st: St::BeginValue,
            stack: Vec::new(),
            err: None,
        }
    }

    pub(super) fn error(&mut self, c: u8, context: &str) -> Op {
        self.st = St::Error;
        self.err = Some(format!("invalid character {} {context}", quote_char(c)));
        Op::Error
    }

    fn go(&mut self, st: St) -> Op {
        self.st = st;
        Op::Continue
    }

    pub(super) fn push(&mut self, c: u8, ps: Ps, next: St) -> Op {
        self.stack.push(ps);
        self.st = next;
        if self.stack.len() <= MAX_DEPTH {
            Op::Continue
        } else {
            self.error(c, "exceeded max depth")
        }
    }

    fn pop(&mut self) {
        self.stack.pop();
        self.st = if self.stack.is_empty() {
            St::EndTop
        } else {
            St::EndValue
        };
    }

    fn step(&mut self, c: u8) -> Op {
        match self.st {
            St::BeginValueOrEmpty if is_space(c) => Op::Skip,
            St::BeginValueOrEmpty if c == b']' => self.end_value(c),
            St::BeginValueOrEmpty | St::BeginValue => self.begin_value(c),
            St::BeginStringOrEmpty if is_space(c) => Op::Skip,
            St::BeginStringOrEmpty if c == b'}' => {
                if let Some(top) = self.stack.last_mut() {
                    *top = Ps::ObjectValue;
                }
                self.end_value(c)
            }
            St::BeginStringOrEmpty | St::BeginString => self.begin_string(c),
            St::EndValue => self.end_value(c),
            St::EndTop => self.end_top(c),
            St::InString => match c {
                b'"' => self.go(St::EndValue),
                b'\\' => self.go(St::InStringEsc),
                0..0x20 => self.error(c, "in string literal"),
                _ => Op::Continue,
            },
            St::InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => self.go(St::InString),
                b'u' => self.go(St::InStringEscU(0)),
                _ => self.error(c, "in string escape code"),
            },
            St::InStringEscU(n) if c.is_ascii_hexdigit() => self.go(if n == 3 {
                St::InString
            } else {
                St::InStringEscU(n + 1)
            }),
            St::InStringEscU(_) => self.error(c, "in \\u hexadecimal character escape"),
            St::Neg => match c {
                b'0' => self.go(St::Zero),
                b'1'..=b'9' => self.go(St::Digits),
                _ => self.error(c, "in numeric literal"),
            },
            St::Digits if c.is_ascii_digit() => Op::Continue,
            St::Digits | St::Zero => self.zero(c),
            St::Dot if c.is_ascii_digit() => self.go(St::Dot0),
            St::Dot => self.error(c, "after decimal point in numeric literal"),
            St::Dot0 if c.is_ascii_digit() => Op::Continue,
            St::Dot0 if c == b'e' || c == b'E' => self.go(St::E),
            St::Dot0 => self.end_value(c),
            St::E if c == b'+' || c == b'-' => self.go(St::ESign),
            St::E | St::ESign if c.is_ascii_digit() => self.go(St::E0),
            St::E | St::ESign => self.error(c, "in exponent of numeric literal"),
            St::E0 if c.is_ascii_digit() => Op::Continue,
            St::E0 => self.end_value(c),
            St::Lit(word, at) => {
                let want = word.as_bytes()[usize::from(at)];
                if c != want {
                    let context = format!("in literal {word} (expecting {})", quote_char(want));
                    return self.error(c, &context);
                }
                if usize::from(at) + 1 == word.len() {
                    self.go(St::EndValue)
                } else {
                    self.go(St::Lit(word, at + 1))
                }
            }
            St::Error => Op::Error,
        }
    }

    fn zero(&mut self, c: u8) -> Op {
        match c {
            b'.' => self.go(St::Dot),
            b'e' | b'E' => self.go(St::E),
            _ => self.end_value(c),
        }
    }

    fn begin_value(&mut self, c: u8) -> Op {
        match c {
            c if is_space(c) => Op::Skip,
            b'{' => self.push(c, Ps::ObjectKey, St::BeginStringOrEmpty),
            b'[' => self.push(c, Ps::ArrayValue, St::BeginValueOrEmpty),
            b'"' => self.go(St::InString),
            b'-' => self.go(St::Neg),
            b'0' => self.go(St::Zero),
            b'1'..=b'9' => self.go(St::Digits),
            b't' => self.go(St::Lit("true", 1)),
            b'f' => self.go(St::Lit("false", 1)),
            b'n' => self.go(St::Lit("null", 1)),
            _ => self.error(c, "looking for beginning of value"),
        }
    }

    fn begin_string(&mut self, c: u8) -> Op {
        match c {
            c if is_space(c) => Op::Skip,
            b'"' => self.go(St::InString),
            _ => self.error(c, "looking for beginning of object key string"),
        }
    }

    fn end_value(&mut self, c: u8) -> Op {
        let Some(&top) = self.stack.last() else {
            self.st = St::EndTop;
            return self.end_top(c);
        };
        if is_space(c) {
            self.st = St::EndValue;
            return Op::Skip;
        }
        let n = self.stack.len() - 1;
        match (top, c) {
            (Ps::ObjectKey, b':') => {
                self.stack[n] = Ps::ObjectValue;
                self.go(St::BeginValue)
            }
            (Ps::ObjectKey, _) => self.error(c, "after object key"),
            (Ps::ObjectValue, b',') => {
                self.stack[n] = Ps::ObjectKey;
                self.go(St::BeginString)
            }
            (Ps::ObjectValue, b'}') => {
                self.pop();
                Op::EndObject
            }
            (Ps::ObjectValue, _) => self.error(c, "after object key:value pair"),
            (Ps::ArrayValue, b',') => self.go(St::BeginValue),
            (Ps::ArrayValue, b']') => {
                self.pop();
                Op::EndArray
            }
            (Ps::ArrayValue, _) => self.error(c, "after array element"),
        }
    }

    fn end_top(&mut self, c: u8) -> Op {
        if !is_space(c) {
            // Go complains about it on the next step, which a decoder never takes.
            self.error(c, "after top-level value");
        }
        Op::End
    }
}

/// Go's `json.Decoder` reading its first value: the offset where that value ends.
/// Whatever follows the value is never looked at.
///
/// # Errors
/// A syntax error in Go's words, `EOF` for empty (or all-space) input, `unexpected EOF` for a
/// value cut short.
pub(crate) fn read_value(input: &[u8]) -> Result<usize, String> {
    let mut s = Scanner::new();
    for (i, &c) in input.iter().enumerate() {
        match s.step(c) {
            Op::End => return Ok(i),
            // A closing bracket may end the value; Go checks with an invented space.
            Op::EndObject | Op::EndArray if s.end_value(b' ') == Op::End => return Ok(i + 1),
            Op::Error => return Err(s.err.take().unwrap_or_default()),
            _ => {}
        }
    }
    if s.step(b' ') == Op::End {
        return Ok(input.len());
    }
    if input.iter().any(|&c| !is_space(c)) {
        Err("unexpected EOF".to_string())
    } else {
        Err("EOF".to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Typed decoding over a checked value

/// Where a value lands, for Go's type-mismatch message.
#[derive(Clone, Copy)]
struct At<'a> {
    /// The innermost Go struct (`Spec`), empty at the top level.
    strct: &'a str,
    /// The JSON field names above this one, each followed by a dot (`spec.`).
    prefix: &'a str,
    /// The JSON field name (`parentPort`).
    path: &'a str,
    /// The Go type (`int`, `port.Spec`).
    typ: &'a str,
}

impl At<'_> {
    pub(super) fn top(typ: &str) -> At<'_> {
        At {
            strct: "",
            prefix: "",
            path: "",
            typ,
        }
    }
}

/// A cursor over input that [`read_value`] accepted; it never indexes out of bounds even
/// if that promise were broken, it would just produce garbage.
struct Cur<'a> {
    pub(super) s: &'a [u8],
    pub(super) i: usize,
    /// The first type mismatch; decoding goes on after it, as Go's does.
    pub(super) err: Option<String>,
}

impl<'a> Cur<'a> {
    pub(super) fn new(s: &'a [u8]) -> Cur<'a> {
        Cur { s, i: 0, err: None }
    }

    fn peek(&mut self) -> u8 {
        while self.s.get(self.i).is_some_and(|&c| is_space(c)) {
            self.i += 1;
        }
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn kind(&mut self) -> &'static str {
        match self.peek() {
            b'{' => "object",
            b'[' => "array",
            b'"' => "string",
            b't' | b'f' => "bool",
            b'n' => "null",
            _ => "number",
        }
    }

    pub(super) fn mismatch(&mut self, value: &str, at: At<'_>) {
        if self.err.is_some() {
            return;
        }
        self.err = Some(if at.strct.is_empty() && at.path.is_empty() {
            format!(
                "json: cannot unmarshal {value} into Go value of type {}",
                at.typ
            )
        } else {
            format!(
                "json: cannot unmarshal {value} into Go struct field {}.{}{} of type {}",
                at.strct, at.prefix, at.path, at.typ
            )
        });
    }

    /// A value of the wrong kind for `at`: recorded and skipped.
    fn wrong(&mut self, at: At<'_>) {
        let kind = self.kind();
        self.mismatch(kind, at);
        self.skip();
    }

    fn skip_string(&mut self) {
        self.i += 1;
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => self.i += 1,
                b'"' => return,
                _ => {}
            }
        }
    }

    /// Skips one whole value, however deeply nested, without recursion.
    fn skip(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                0 => return,
                b'"' => self.skip_string(),
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    self.i += 1;
                }
                b',' | b':' => self.i += 1,
                _ => {
                    while self
                        .s
                        .get(self.i)
                        .is_some_and(|&c| !is_space(c) && !matches!(c, b',' | b'}' | b']'))
                    {
                        self.i += 1;
                    }
                }
            }
            if depth == 0 {
                return;
            }
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let mut n = 0;
        for &c in self.s.get(at..at + 4)? {
            n = n << 4 | char::from(c).to_digit(16)?;
        }
        Some(n)
    }

    /// The string at the cursor, unquoted as Go does: bad surrogates and bytes that are not
    /// UTF-8 become U+FFFD, one per byte.
    pub(super) fn string(&mut self) -> String {
        self.peek();
        self.i += 1;
        let mut raw: Vec<u8> = Vec::new();
        let push = |raw: &mut Vec<u8>, c: char| {
            let mut b = [0; 4];
            raw.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        };
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.s.get(self.i).copied().unwrap_or(b'\\');
                    self.i += 1;
                    match e {
                        b'b' => raw.push(8),
                        b'f' => raw.push(12),
                        b'n' => raw.push(b'\n'),
                        b'r' => raw.push(b'\r'),
                        b't' => raw.push(b'\t'),
                        b'u' => {
                            let r = self.hex4(self.i).unwrap_or(0xfffd);
                            self.i += 4;
                            let c = if (0xd800..0xe000).contains(&r) {
                                let low = (self.s.get(self.i..self.i + 2) == Some(b"\\u"))
                                    .then(|| self.hex4(self.i + 2))
                                    .flatten();
                                match low {
                                    Some(lo) if r < 0xdc00 && (0xdc00..0xe000).contains(&lo) => {
                                        self.i += 6;
                                        char::from_u32(
                                            0x10000 + ((r - 0xd800) << 10) + (lo - 0xdc00),
                                        )
                                    }
                                    _ => None,
                                }
                            } else {
                                char::from_u32(r)
                            };
                            push(&mut raw, c.unwrap_or('\u{fffd}'));
                        }
                        e => raw.push(e),
                    }
                }
                c => raw.push(c),
            }
        }
        let mut out = String::with_capacity(raw.len());
        for chunk in raw.utf8_chunks() {
            out.push_str(chunk.valid());
            for _ in chunk.invalid() {
                out.push('\u{fffd}');
            }
        }
        out
    }

    pub(super) fn number(&mut self) -> &'a str {
        self.peek();
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|&c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }

    /// Calls `f` with each key of the object at the cursor; `f` must consume the value.
    fn members(&mut self, f: &mut dyn FnMut(&mut Self, String)) {
        self.peek();
        self.i += 1;
        if self.peek() == b'}' {
            self.i += 1;
            return;
        }
        loop {
            let key = self.string();
            self.peek(); // the ':'
            self.i += 1;
            f(self, key);
            let c = self.peek();
            self.i += 1;
            if c != b',' {
                return;
            }
        }
    }

    /// Calls `f` for each element of the array at the cursor; `f` must consume it.
    fn elements(&mut self, f: &mut dyn FnMut(&mut Self)) {
        self.peek();
        self.i += 1;
        if self.peek() == b']' {
            self.i += 1;
            return;
        }
        loop {
            f(self);
            let c = self.peek();
            self.i += 1;
            if c != b',' {
                return;
            }
        }
    }

    /// An object for a Go struct (or pointer to one): `f` per member; `null` leaves it alone.
    /// Returns whether an object was there.
    pub(super) fn object(&mut self, at: At<'_>, f: &mut dyn FnMut(&mut Self, String)) -> bool {
        match self.peek() {
            b'{' => {
                self.members(f);
                true
            }
            b'n' => {
                self.skip();
                false
            }
            _ => {
                self.wrong(at);
                false
            }
        }
    }

    fn get_string(&mut self, out: &mut String, at: At<'_>) {
        match self.peek() {
            b'"' => *out = self.string(),
            b'n' => self.skip(),
            _ => self.wrong(at),
        }
    }

    /// A Go `int` (64 bits): only an integer literal fits; `1.0` and `1e3` do not.
    fn get_int(&mut self, at: At<'_>) -> Option<i64> {
        match self.peek() {
            b'-' | b'0'..=b'9' => {
                let lit = self.number();
                let n = parse_int(lit);
                if n.is_none() {
                    self.mismatch(&format!("number {lit}"), at);
                }
                n
            }
            b'n' => {
                self.skip();
                None
            }
            _ => {
                self.wrong(at);
                None
            }
        }
    }

    fn get_bool(&mut self, out: &mut bool, at: At<'_>) {
        match self.peek() {
            b't' | b'f' => {
                *out = self.peek() == b't';
                self.skip();
            }
            b'n' => self.skip(),
            _ => self.wrong(at),
        }
    }

    fn get_string_list(&mut self, out: &mut Vec<String>, at: At<'_>, elem: At<'_>) {
        match self.peek() {
            b'[' => {
                out.clear();
                self.elements(&mut |c| {
                    let mut s = String::new();
                    c.get_string(&mut s, elem);
                    out.push(s);
                });
            }
            b'n' => {
                out.clear();
                self.skip();
            }
            _ => self.wrong(at),
        }
    }

    fn finish<T>(self, value: T) -> Result<T, String> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}

/// Go's `strconv.ParseInt(lit, 10, 64)` on a JSON number literal.
fn parse_int(lit: &str) -> Option<i64> {
    let (neg, digits) = match lit.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, lit),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut n: i64 = 0;
    for c in digits.bytes() {
        let d = i64::from(c - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

fn spec_members(c: &mut Cur<'_>, spec: &mut PortSpec, prefix: &str) {
    c.members(&mut |c, key| {
        let at = |path: &'static str, typ: &'static str| At {
            strct: "Spec",
            prefix,
            path,
            typ,
        };
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        if is("proto") {
            c.get_string(&mut spec.proto, at("proto", "string"));
        } else if is("parentIP") {
            c.get_string(&mut spec.parent_ip, at("parentIP", "string"));
        } else if is("parentPort") {
            if let Some(n) = c.get_int(at("parentPort", "int")) {
                spec.parent_port = n;
            }
        } else if is("childPort") {
            if let Some(n) = c.get_int(at("childPort", "int")) {
                spec.child_port = n;
            }
        } else if is("childIP") {
            c.get_string(&mut spec.child_ip, at("childIP", "string"));
        } else {
            c.skip();
        }
    });
}

/// The body of `POST /v1/ports`, read as Go's `json.NewDecoder(body).Decode(&spec)` reads it:
/// the first value only, field names matched case-insensitively, unknown fields and `null`s
/// ignored.
///
/// # Errors
/// Go's texts: `EOF`, `unexpected EOF`, `invalid character 'b' looking for beginning of object
/// key string`, `json: cannot unmarshal array into Go value of type port.Spec`,
/// `json: cannot unmarshal number 1.5 into Go struct field Spec.parentPort of type int`.
pub(crate) fn decode_spec(body: &[u8]) -> Result<PortSpec, String> {
    let end = read_value(body)?;
    let mut c = Cur::new(&body[..end]);
    let mut spec = PortSpec::default();
    if c.peek() == b'{' {
        spec_members(&mut c, &mut spec, "");
    } else {
        c.object(At::top("port.Spec"), &mut |c, _| c.skip());
    }
    c.finish(spec)
}

fn status_value(c: &mut Cur<'_>, status: &mut PortStatus) {
    c.object(At::top("port.Status"), &mut |c, key| {
        if key.eq_ignore_ascii_case("id") {
            let at = At {
                strct: "Status",
                prefix: "",
                path: "id",
                typ: "int",
            };
            if let Some(n) = c.get_int(at) {
                match u32::try_from(n) {
                    Ok(id) => status.id = id,
                    Err(_) => c.mismatch(&format!("number {n}"), at),
                }
            }
        } else if key.eq_ignore_ascii_case("spec") {
            let at = At {
                strct: "Status",
                prefix: "",
                path: "spec",
                typ: "port.Spec",
            };
            if c.peek() == b'{' {
                spec_members(c, &mut status.spec, "spec.");
            } else {
                c.object(at, &mut |c, _| c.skip());
            }
        } else {
            c.skip();
        }
    });
}

/// The body of a `201` answer to `POST /v1/ports`. Our ids are `u32`; a larger one is
/// reported as a mismatch.
///
/// # Errors
/// As [`decode_spec`].
pub(crate) fn decode_status(body: &[u8]) -> Result<PortStatus, String> {
    let end = read_value(body)?;
    let mut c = Cur::new(&body[..end]);
    let mut status = PortStatus::default();
    status_value(&mut c, &mut status);
    c.finish(status)
}

/// The body of `GET /v1/ports`: an array of statuses, or `null`.
///
/// # Errors
/// As [`decode_spec`].
pub(crate) fn decode_status_list(body: &[u8]) -> Result<Vec<PortStatus>, String> {
    let end = read_value(body)?;
    let mut c = Cur::new(&body[..end]);
    let mut list = Vec::new();
    match c.peek() {
        b'[' => c.elements(&mut |c| {
            let mut status = PortStatus::default();
            status_value(c, &mut status);
            list.push(status);
        }),
        b'n' => c.skip(),
        _ => c.wrong(At::top("[]port.Status")),
    }
    c.finish(list)
}

/// The body of `GET /v1/info`. Addresses are kept as the text the server sent.
///
/// # Errors
/// As [`decode_spec`].
pub(crate) fn decode_info(body: &[u8]) -> Result<Info, String> {
    let end = read_value(body)?;
    let mut c = Cur::new(&body[..end]);
    let mut info = Info::default();
    c.object(At::top("api.Info"), &mut |c, key| {
        let at = |path, typ| At {
            strct: "Info",
            prefix: "",
            path,
            typ,
        };
        if key.eq_ignore_ascii_case("apiVersion") {
            c.get_string(&mut info.api_version, at("apiVersion", "string"));
        } else if key.eq_ignore_ascii_case("version") {
            c.get_string(&mut info.version, at("version", "string"));
        } else if key.eq_ignore_ascii_case("stateDir") {
            c.get_string(&mut info.state_dir, at("stateDir", "string"));
        } else if key.eq_ignore_ascii_case("childPID") {
            let at = at("childPID", "int");
            if let Some(n) = c.get_int(at) {
                match i32::try_from(n) {
                    Ok(pid) => info.child_pid = pid,
                    Err(_) => c.mismatch(&format!("number {n}"), at),
                }
            }
        } else if key.eq_ignore_ascii_case("networkDriver") {
            network_value(c, &mut info.network_driver);
        } else if key.eq_ignore_ascii_case("portDriver") {
            port_driver_value(c, &mut info.port_driver);
        } else {
            c.skip();
        }
    });
    c.finish(info)
}

fn network_value(c: &mut Cur<'_>, slot: &mut Option<NetworkDriverInfo>) {
    let at = |path, typ| At {
        strct: "NetworkDriverInfo",
        prefix: "",
        path,
        typ,
    };
    let outer = At {
        strct: "Info",
        prefix: "",
        path: "networkDriver",
        typ: "api.NetworkDriverInfo",
    };
    nullable_object(c, slot, outer, &mut |c, key, n| {
        if key.eq_ignore_ascii_case("driver") {
            c.get_string(&mut n.driver, at("networkDriver.driver", "string"));
        } else if key.eq_ignore_ascii_case("dns") {
            c.get_string_list(
                &mut n.dns,
                at("networkDriver.dns", "[]net.IP"),
                at("networkDriver.dns", "net.IP"),
            );
        } else if key.eq_ignore_ascii_case("childIP") {
            c.get_string(&mut n.child_ip, at("networkDriver.childIP", "net.IP"));
        } else if key.eq_ignore_ascii_case("dynamicChildIP") {
            c.get_bool(
                &mut n.dynamic_child_ip,
                at("networkDriver.dynamicChildIP", "bool"),
            );
        } else {
            c.skip();
        }
    });
}

fn port_driver_value(c: &mut Cur<'_>, slot: &mut Option<PortDriverInfo>) {
    let at = |path, typ| At {
        strct: "PortDriverInfo",
        prefix: "",
        path,
        typ,
    };
    let outer = At {
        strct: "Info",
        prefix: "",
        path: "portDriver",
        typ: "api.PortDriverInfo",
    };
    nullable_object(c, slot, outer, &mut |c, key, p| {
        if key.eq_ignore_ascii_case("driver") {
            c.get_string(&mut p.driver, at("portDriver.driver", "string"));
        } else if key.eq_ignore_ascii_case("protos") {
            c.get_string_list(
                &mut p.protos,
                at("portDriver.protos", "[]string"),
                at("portDriver.protos", "string"),
            );
        } else if key.eq_ignore_ascii_case("disallowLoopbackChildIP") {
            c.get_bool(
                &mut p.disallow_loopback_child_ip,
                at("portDriver.disallowLoopbackChildIP", "bool"),
            );
        } else {
            c.skip();
        }
    });
}

/// A pointer-to-struct field: `null` clears `slot`; an object decodes key by key with `field`
/// into the struct already there (Go reuses it for a repeated key), or a new one.
fn nullable_object<T: Default>(
    c: &mut Cur<'_>,
    slot: &mut Option<T>,
    outer: At<'_>,
    field: &mut dyn FnMut(&mut Cur<'_>, String, &mut T),
) {
    if c.peek() == b'n' {
        c.skip();
        *slot = None;
        return;
    }
    let mut value = slot.take().unwrap_or_default();
    let found = c.object(outer, &mut |c, key| field(c, key, &mut value));
    if found {
        *slot = Some(value);
    }
}

/// The `message` of an error body, read as Go's `json.Unmarshal` into `{Message string}`:
/// the whole body must be one value (trailing space allowed). `None` when it is not such an
/// object, in which case a client shows the status and the raw body instead.
pub(crate) fn decode_error_message(body: &[u8]) -> Option<String> {
    let end = read_value(body).ok()?;
    if body[end..].iter().any(|&c| !is_space(c)) {
        return None;
    }
    let mut c = Cur::new(&body[..end]);
    let mut message = String::new();
    let at = At {
        strct: "ErrorJSON",
        prefix: "",
        path: "message",
        typ: "string",
    };
    c.object(At::top("httputil.ErrorJSON"), &mut |c, key| {
        if key.eq_ignore_ascii_case("message") {
            c.get_string(&mut message, at);
        } else {
            c.skip();
        }
    });
    c.finish(message).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::tests::spec;

    /// Each expected text was observed from upstream's server (Go `encoding/json`).
    #[test]
    fn spec_errors_match_go() {
        let check = |body: &[u8], expect: &str| {
            assert_eq!(
                decode_spec(body),
                Err(expect.to_string()),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        };
        check(b"", "EOF");
        check(b" \n", "EOF");
        check(b"{", "unexpected EOF");
        check(
            b"{b",
            "invalid character 'b' looking for beginning of object key string",
        );
        check(
            b"[]",
            "json: cannot unmarshal array into Go value of type port.Spec",
        );
        check(
            b"\"x\"",
            "json: cannot unmarshal string into Go value of type port.Spec",
        );
        check(
            b"12",
            "json: cannot unmarshal number into Go value of type port.Spec",
        );
        check(
            b"12x",
            "json: cannot unmarshal number into Go value of type port.Spec",
        );
        check(
            b"true x",
            "json: cannot unmarshal bool into Go value of type port.Spec",
        );
        check(
            br#"{"proto":1}"#,
            "json: cannot unmarshal number into Go struct field Spec.proto of type string",
        );
        check(
            br#"{"parentPort":"80"}"#,
            "json: cannot unmarshal string into Go struct field Spec.parentPort of type int",
        );
        for n in ["1e3", "1.0", "99999999999999999999", "-9223372036854775809"] {
            check(
                format!(r#"{{"parentPort":{n}}}"#).as_bytes(),
                &format!(
                    "json: cannot unmarshal number {n} into Go struct field Spec.parentPort of type int"
                ),
            );
        }
        check(
            br#"{"proto":"tcp","parentPort":[1],"childPort":{}}"#,
            "json: cannot unmarshal array into Go struct field Spec.parentPort of type int",
        );
        check(
            br#"{"proto":"tcp","parentPort":1,"childPort":1,"parentPort":"x","childPort":true}"#,
            "json: cannot unmarshal string into Go struct field Spec.parentPort of type int",
        );
        check(
            br#"{"proto":"tcp","parentPort":true}"#,
            "json: cannot unmarshal bool into Go struct field Spec.parentPort of type int",
        );
        check(
            br#"{"proto":{"a":1}}"#,
            "json: cannot unmarshal object into Go struct field Spec.proto of type string",
        );
        check(
            b"{\"proto\":\"\x01\"}",
            r"invalid character '\x01' in string literal",
        );
        check(
            br#"{"a":tru}"#,
            "invalid character '}' in literal true (expecting 'e')",
        );
        check(
            br#"{"a":nul}"#,
            "invalid character '}' in literal null (expecting 'l')",
        );
        check(
            br#"{"a":fals}"#,
            "invalid character '}' in literal false (expecting 'e')",
        );
        check(
            br#"{"a":txue}"#,
            "invalid character 'x' in literal true (expecting 'r')",
        );
        check(
            br#"{"a":1.}"#,
            "invalid character '}' after decimal point in numeric literal",
        );
        check(
            br#"{"a":1e}"#,
            "invalid character '}' in exponent of numeric literal",
        );
        check(br#"{"a":-}"#, "invalid character '}' in numeric literal");
        check(
            br#"{"a":"\q"}"#,
            "invalid character 'q' in string escape code",
        );
        check(
            br#"{"a":"\u12x"}"#,
            r"invalid character 'x' in \u hexadecimal character escape",
        );
        check(br#"{"a" 1}"#, "invalid character '1' after object key");
        check(
            br#"{"a":1 "b"}"#,
            r#"invalid character '"' after object key:value pair"#,
        );
        check(
            br#"{"a":01}"#,
            "invalid character '1' after object key:value pair",
        );
        check(
            br#"{"a":[1 2]}"#,
            "invalid character '2' after array element",
        );
        check(
            b"\xff",
            "invalid character '\u{ff}' looking for beginning of value",
        );
        check(
            b"\x80",
            r"invalid character '\u0080' looking for beginning of value",
        );
        check(
            b"'",
            r"invalid character '\'' looking for beginning of value",
        );
        check(
            b"\\",
            r"invalid character '\\' looking for beginning of value",
        );
        check(
            br#"{"proto":"tcp","parentPort":1,}"#,
            "invalid character '}' looking for beginning of object key string",
        );
        check(
            b"{,}",
            "invalid character ',' looking for beginning of object key string",
        );
        for cut in [
            &b"{\"a\":\"x"[..],
            b"{\"a\":\"\xc3",
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\":[",
            b"{\"a\":1",
            b"[1,",
        ] {
            check(cut, "unexpected EOF");
        }
        // A syntax error anywhere wins over a type mismatch earlier on.
        check(
            br#"{"proto":1,"x":[}"#,
            "invalid character '}' looking for beginning of value",
        );
        // Go's nesting limit.
        check(&[b'['; 10001], "invalid character '[' exceeded max depth");
        check(&[b'['; 10000], "unexpected EOF");
    }

    #[test]
    fn spec_decodes_like_go() {
        let check = |body: &[u8], expect: PortSpec| {
            assert_eq!(
                decode_spec(body),
                Ok(expect),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        };
        check(
            br#"{"proto":"tcp","parentIP":"127.0.0.1","parentPort":8080,"childIP":"10.0.2.100","childPort":80}"#,
            spec("tcp", "127.0.0.1", 8080, "10.0.2.100", 80),
        );
        // Case-insensitive names, unknown fields skipped however nested, last key wins,
        // null leaves a field alone, anything after the first value is ignored.
        check(
            br#"{"proto":"tcp","PARENTPORT":8080,"childport":80,"ParentIP":"127.0.0.1"}"#,
            spec("tcp", "127.0.0.1", 8080, "", 80),
        );
        check(
            br#"{"proto":"tcp","parentPort":18207,"childPort":80,"proto":"udp","x":[{"y":[1,{}]},"]}"]}"#,
            spec("udp", "", 18207, "", 80),
        );
        check(
            br#"{"proto":"tcp","parentPort":18206,"parentPort":null}"#,
            spec("tcp", "", 18206, "", 0),
        );
        check(br#"{"proto":"tcp"} garbage"#, spec("tcp", "", 0, "", 0));
        check(
            b" \t\r\n{\"parentPort\":-0,\"childPort\":-200}x",
            spec("", "", 0, "", -200),
        );
        check(b"null", PortSpec::default());
        check(b"{}", PortSpec::default());
        // Escapes, surrogate pairs, lone surrogates and bytes that are not UTF-8.
        check(
            b"{\"\\u0070roto\":\"a\\u00e9\\ud83d\\ude00\\ud800x\\\"\\/\\n\",\"parentIP\":\"x\xe9\xe2\x82\"}",
            spec("a\u{e9}\u{1f600}\u{fffd}x\"/\n", "x\u{fffd}\u{fffd}\u{fffd}", 0, "", 0),
        );
        check(b"{\"\xff\":1}", PortSpec::default());
    }

    #[test]
    fn info_decoding_tolerates_and_reports() {
        // Unknown fields (a newer server) are skipped; null pointers stay absent.
        let info = decode_info(
            br#"{"childPID":7,"future":{"a":[1,2]},"networkDriver":null,"portDriver":null}"#,
        )
        .unwrap();
        assert_eq!(info.child_pid, 7);
        assert_eq!(info.network_driver, None);
        assert_eq!(
            decode_info(br#"{"childPID":"7"}"#),
            Err(
                "json: cannot unmarshal string into Go struct field Info.childPID of type int"
                    .into()
            )
        );
        assert_eq!(
            decode_info(br#"{"networkDriver":{"dns":[1]}}"#),
            Err("json: cannot unmarshal number into Go struct field NetworkDriverInfo.networkDriver.dns of type net.IP".into())
        );
        assert_eq!(
            decode_info(br#"{"portDriver":[]}"#),
            Err("json: cannot unmarshal array into Go struct field Info.portDriver of type api.PortDriverInfo".into())
        );
        assert_eq!(
            decode_info(b"[]"),
            Err("json: cannot unmarshal array into Go value of type api.Info".into())
        );
    }

    #[test]
    fn read_value_finds_the_end_like_go() {
        let check = |input: &[u8], end: usize| {
            assert_eq!(
                read_value(input),
                Ok(end),
                "{:?}",
                String::from_utf8_lossy(input)
            )
        };
        check(b"{}", 2);
        check(b"  {} {", 4);
        check(b"[1,[2]]x", 7);
        check(b"12", 2);
        check(b"12 ", 2);
        check(b"-0.5e+3}", 7);
        check(b"\"a\\\"b\"\"", 6);
        check(b"true", 4);
        check(b"null,", 4);
    }
}
