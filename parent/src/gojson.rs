//! Go's `encoding/json` string form, the one piece of JSON writing shared by the API
//! (`api::json`) and the slirp4netns port driver's requests (`port::slirp4netns`), so that
//! neither depends on the other.

/// Appends `s` as a JSON string the way Go's encoder writes it: `<`, `>`, `&`, U+2028 and
/// U+2029 escaped as `\u003c`…, control characters as `\n` or `\u0001`.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            c if c < ' ' || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                out.push_str("\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(char::from(b"0123456789abcdef"[(c as usize >> shift) & 15]));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
