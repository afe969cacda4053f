//! The syntax scanner, a port of Go's `encoding/json/scanner.go` state machine: finds the end of the first value and reports syntax errors in Go's words at Go's byte.

/// Go's nesting limit.
const MAX_DEPTH: usize = 10000;

pub(super) fn is_space(c: u8) -> bool {
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
            let q = child::golang::quote((c as char).encode_utf8(&mut [0; 4]).as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

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
