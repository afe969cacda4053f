//! HTTP/1.1 by hand for the API: a request parser with fixed limits that works on whatever
//! bytes have arrived (pipelined requests, partial reads), the response writer, and the
//! request writer and response parser of the client.
//!
//! The parser takes the buffered bytes of a connection and either asks for more, returns one
//! request and how many bytes it used, or rejects the connection with a status (400, 411, 413,
//! 417, 431, 501, 505) after which the server answers and closes. Bodies come with
//! `Content-Length` (what Go's client sends) or chunked.

use std::fmt::Write as _;

/// Largest request head (request line and headers) we read; beyond it we answer 431.
pub(crate) const MAX_HEADER: usize = 8 * 1024;
/// Largest request body; beyond it we answer 413.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// Size limits of the request parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_header: usize,
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header: MAX_HEADER,
            max_body: MAX_BODY,
        }
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    /// The request path with `%XX` escapes decoded (what the router matches), without query.
    pub path: String,
    /// The raw query after `?`, empty if none.
    pub query: String,
    /// `http://host` when the target was in absolute form, else empty.
    pub origin: String,
    pub body: Vec<u8>,
    /// The request said HTTP/1.0 (the answer says so too).
    pub http10: bool,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
}

/// What [`parse_request`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed; parsing again before the buffer holds `need` bytes is useless.
    /// `wants_continue`: the head is complete and asked for `100 Continue`.
    Partial { need: usize, wants_continue: bool },
    /// A whole request, and how many bytes of the buffer it took.
    Done(Request, usize),
}

/// A request we refuse; the server answers `status` and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reject {
    pub status: u16,
    pub detail: &'static str,
}

fn reject(status: u16, detail: &'static str) -> Reject {
    Reject { status, detail }
}

/// Go's `http.StatusText`, for the codes this API and its clients meet.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Request Entity Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_tchar(c))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The end of the head (just past its empty line) in `buf`, which starts at a non-empty line.
fn head_end(buf: &[u8]) -> Option<usize> {
    let a = find(buf, b"\n\r\n").map(|p| p + 3);
    let b = find(buf, b"\n\n").map(|p| p + 2);
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The lines of a head, without their line ends.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &c| n * 10 + u64::from(c - b'0')))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `%XX` decoding of a path; `None` on a bad escape (Go answers 400 then).
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex_val(*s.get(i + 1)?)?;
            let lo = hex_val(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// `HTTP/1.1` → `Ok(minor)`; another major version → 505; anything else → 400.
fn parse_version(v: &[u8]) -> Result<u32, Reject> {
    let bad = reject(400, "malformed HTTP version");
    let rest = v.strip_prefix(b"HTTP/").ok_or(bad)?;
    let dot = rest.iter().position(|&c| c == b'.').ok_or(bad)?;
    let (major, minor) = (&rest[..dot], &rest[dot + 1..]);
    let num = |s: &[u8]| {
        (s.len() <= 6)
            .then(|| parse_decimal(s))
            .flatten()
            .ok_or(bad)
    };
    let (major, minor) = (num(major)?, num(minor)?);
    if major != 1 {
        return Err(reject(505, "unsupported protocol version"));
    }
    Ok(minor as u32)
}

/// Splits a request target into origin, decoded path and raw query.
fn parse_target(t: &[u8]) -> Result<(String, String, String), Reject> {
    let bad = reject(400, "invalid request target");
    if t.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return Err(bad);
    }
    let (origin, rest) = if t.first() == Some(&b'/') || t == b"*" {
        (&t[..0], t)
    } else {
        let scheme_len = if t.len() >= 7 && t[..7].eq_ignore_ascii_case(b"http://") {
            7
        } else if t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"https://") {
            8
        } else {
            return Err(bad);
        };
        let slash = t[scheme_len..]
            .iter()
            .position(|&c| c == b'/' || c == b'?')
            .map_or(t.len(), |p| p + scheme_len);
        (&t[..slash], &t[slash..])
    };
    let (raw_path, query) = match rest.iter().position(|&c| c == b'?') {
        Some(q) => (&rest[..q], &rest[q + 1..]),
        None => (rest, &rest[..0]),
    };
    let path = percent_decode(raw_path).ok_or(bad)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((text(origin), text(&path), text(query)))
}

enum ChunkError {
    Bad(&'static str),
    TooLarge,
}

/// Decodes a chunked body at the start of `buf`: the body and the bytes used, or `None`
/// while incomplete.
fn decode_chunked(
    buf: &[u8],
    max_body: usize,
    max_trailer: usize,
) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let window = &buf[pos..buf.len().min(pos + MAX_CHUNK_LINE)];
        let Some(nl) = window.iter().position(|&c| c == b'\n') else {
            if window.len() == MAX_CHUNK_LINE {
                return Err(ChunkError::Bad("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = &window[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size_text = trim(line.split(|&c| c == b';').next().unwrap_or(line));
        if size_text.is_empty() || size_text.len() > 16 {
            return Err(ChunkError::Bad("invalid chunk size"));
        }
        let mut size: u64 = 0;
        for &c in size_text {
            let d = hex_val(c).ok_or(ChunkError::Bad("invalid chunk size"))?;
            size = size << 4 | u64::from(d);
        }
        pos += nl + 1;
        if size == 0 {
            // Trailers, ignored, up to an empty line.
            let start = pos;
            loop {
                let rest = &buf[pos..];
                let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
                    if rest.len() > max_trailer {
                        return Err(ChunkError::Bad("trailer too long"));
                    }
                    return Ok(None);
                };
                let line = &rest[..nl];
                pos += nl + 1;
                if pos - start > max_trailer {
                    return Err(ChunkError::Bad("trailer too long"));
                }
                if line.is_empty() || line == b"\r" {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len() as u64 + size > max_body as u64 {
            return Err(ChunkError::TooLarge);
        }
        let size = size as usize;
        let Some(data) = buf.get(pos..pos + size) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        pos += size;
        match (buf.get(pos), buf.get(pos + 1)) {
            (Some(b'\n'), _) => pos += 1,
            (Some(b'\r'), Some(b'\n')) => pos += 2,
            (None, _) | (Some(b'\r'), None) => return Ok(None),
            _ => return Err(ChunkError::Bad("malformed chunked encoding")),
        }
    }
}

/// Whether `buf` holds the whole head of its first request (empty lines before it skipped, as
/// [`parse_request`] skips them), so that only a body may still be on its way.
pub(crate) fn head_received(buf: &[u8], limits: Limits) -> bool {
    let mut start = 0;
    loop {
        match &buf[start..] {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            _ => break,
        }
    }
    let rest = &buf[start..];
    head_end(&rest[..rest.len().min(limits.max_header)]).is_some()
}

/// Parses the first request in `buf`.
///
/// # Errors
/// A [`Reject`] for a request that must not be answered normally: 400 (malformed line,
/// header, target, `Content-Length`, chunk; missing or repeated `Host` in HTTP/1.1), 413 (body
/// over `max_body`), 417 (an `Expect` other than `100-continue`), 431 (head over
/// `max_header`), 501 (a transfer coding other than chunked), 505 (HTTP/2 and up).
pub(crate) fn parse_request(buf: &[u8], limits: Limits) -> Result<Parsed, Reject> {
    // Empty lines before a request are ignored (RFC 9112 §2.2).
    let mut start = 0;
    loop {
        match &buf[start..] {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            [] | [b'\r'] => {
                return Ok(Parsed::Partial {
                    need: buf.len() + 1,
                    wants_continue: false,
                });
            }
            _ => break,
        }
        if start > limits.max_header {
            return Err(reject(431, "request header too large"));
        }
    }
    let rest = &buf[start..];
    let window = &rest[..rest.len().min(limits.max_header)];
    let Some(head_len) = head_end(window) else {
        if rest.len() >= limits.max_header {
            return Err(reject(431, "request header too large"));
        }
        return Ok(Parsed::Partial {
            need: buf.len() + 1,
            wants_continue: false,
        });
    };
    let head = &rest[..head_len];
    if lines_have_stray_cr(head) {
        return Err(reject(400, "stray carriage return"));
    }
    let mut lines = lines(head);
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, |&c| c == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(400, "malformed request line"));
    };
    if target.is_empty() || version.contains(&b' ') {
        return Err(reject(400, "malformed request line"));
    }
    if !is_token(method) {
        return Err(reject(400, "invalid method"));
    }
    let minor = parse_version(version)?;
    let (origin, path, query) = parse_target(target)?;

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    for line in lines {
        if matches!(line[0], b' ' | b'\t') {
            return Err(reject(400, "obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .ok_or(reject(400, "malformed header line"))?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if !is_token(name) {
            return Err(reject(400, "invalid header name"));
        }
        if value.iter().any(|&c| (c < b' ' && c != b'\t') || c == 0x7f) {
            return Err(reject(400, "invalid header value"));
        }
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("host") {
            hosts += 1;
        } else if is("content-length") {
            let n = parse_decimal(value).ok_or(reject(400, "bad Content-Length"))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(reject(400, "conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if is("transfer-encoding") {
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(reject(501, "unsupported transfer encoding"));
            }
            chunked = true;
        } else if is("connection") {
            for token in value.split(|&c| c == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is("expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(reject(417, "unsupported expectation"));
            }
            expect_continue = true;
        }
    }
    let http10 = minor == 0;
    if !http10 && hosts == 0 {
        return Err(reject(400, "missing required Host header"));
    }
    if hosts > 1 {
        return Err(reject(400, "too many Host headers"));
    }
    if chunked && content_length.is_some() {
        return Err(reject(400, "both Transfer-Encoding and Content-Length"));
    }
    let body_start = start + head_len;
    let (body, end) = if chunked {
        let max_trailer = limits.max_header.saturating_sub(head_len);
        match decode_chunked(&buf[body_start..], limits.max_body, max_trailer) {
            Ok(Some((body, used))) => (body, body_start + used),
            Ok(None) => {
                return Ok(Parsed::Partial {
                    need: buf.len() + 1,
                    wants_continue: expect_continue,
                });
            }
            Err(ChunkError::TooLarge) => return Err(reject(413, "request body too large")),
            Err(ChunkError::Bad(why)) => return Err(reject(400, why)),
        }
    } else {
        let n = content_length.unwrap_or(0);
        if n > limits.max_body as u64 {
            return Err(reject(413, "request body too large"));
        }
        let end = body_start + n as usize;
        let Some(body) = buf.get(body_start..end) else {
            return Ok(Parsed::Partial {
                need: end,
                wants_continue: expect_continue,
            });
        };
        (body.to_vec(), end)
    };
    let request = Request {
        method: String::from_utf8_lossy(method).into_owned(),
        path,
        query,
        origin,
        body,
        http10,
        keep_alive: if http10 { keep_alive && !close } else { !close },
    };
    Ok(Parsed::Done(request, end))
}

/// True when a `\r` appears anywhere but just before a `\n`.
fn lines_have_stray_cr(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\r' && head.get(i + 1) != Some(&b'\n'))
}

// ---------------------------------------------------------------------------------------------
// Responses

/// An answer, before the connection decides on its framing headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// `X-Content-Type-Options: nosniff`, which Go's 404 carries.
    pub nosniff: bool,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// What errors are labelled with: Go sets the JSON type after writing the status, so its
/// sniffer's guess is what goes out.
pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

impl Response {
    /// A JSON success body (`application/json`, no trailing newline).
    pub(crate) fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: Some("application/json"),
            nosniff: false,
            location: None,
            body: body.into_bytes(),
        }
    }

    /// `{"message":"…"}` and a newline, labelled `text/plain; charset=utf-8` as upstream's are.
    pub(crate) fn error(status: u16, message: &str) -> Response {
        Response {
            status,
            content_type: Some(TEXT_PLAIN),
            nosniff: false,
            location: None,
            body: crate::api::json::encode_error(message).into_bytes(),
        }
    }

    /// No body, no type (405, a successful DELETE).
    pub(crate) fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: None,
            nosniff: false,
            location: None,
            body: Vec::new(),
        }
    }

    /// Go's `http.NotFound`.
    pub(crate) fn not_found() -> Response {
        Response {
            status: 404,
            content_type: Some(TEXT_PLAIN),
            nosniff: true,
            location: None,
            body: b"404 page not found\n".to_vec(),
        }
    }

    /// The answer to a [`Reject`]: `400 Bad Request: <detail>` as plain text.
    pub(crate) fn rejected(r: Reject) -> Response {
        Response {
            status: r.status,
            content_type: Some(TEXT_PLAIN),
            nosniff: false,
            location: None,
            body: format!("{} {}: {}", r.status, reason(r.status), r.detail).into_bytes(),
        }
    }

    /// Appends the whole answer to `out`. `http10` answers in kind; `keep_alive` false adds
    /// `Connection: close` (HTTP/1.1), true adds `Connection: keep-alive` (HTTP/1.0); `head`
    /// leaves out the body but not its length. `now` is seconds since the epoch, for `Date`.
    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        http10: bool,
        keep_alive: bool,
        head: bool,
        now: u64,
    ) {
        let mut h = String::with_capacity(160);
        let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let _ = write!(h, "{version} {} {}\r\n", self.status, reason(self.status));
        if let Some(loc) = &self.location {
            let _ = write!(h, "Location: {loc}\r\n");
        }
        if let Some(ct) = self.content_type {
            let _ = write!(h, "Content-Type: {ct}\r\n");
        }
        if self.nosniff {
            h.push_str("X-Content-Type-Options: nosniff\r\n");
        }
        let _ = write!(h, "Date: {}\r\n", http_date(now));
        let _ = write!(h, "Content-Length: {}\r\n", self.body.len());
        match (http10, keep_alive) {
            (false, false) => h.push_str("Connection: close\r\n"),
            (true, true) => h.push_str("Connection: keep-alive\r\n"),
            _ => {}
        }
        h.push_str("\r\n");
        out.extend_from_slice(h.as_bytes());
        if !head {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for `secs` since the epoch.
pub(crate) fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// gorilla/mux's `cleanPath`: `path.Clean` that keeps a trailing slash. A request whose path
/// is not clean gets a 301 to the clean one.
pub(crate) fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(p.len() + 1);
    for s in &parts {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || p.ends_with('/') {
        out.push('/');
    }
    out
}

/// Go's escaping of a URL path for `Location`: unreserved characters and `$&+,/:;=@` stay,
/// every other byte becomes `%XX`.
pub(crate) fn escape_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for &c in p.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&c) {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The client side

/// A request as our client sends it: `Host: rootlesskit` like upstream's client, and
/// `Connection: close`, since every call uses its own connection.
pub(crate) fn encode_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut h = format!(
        "{method} {path} HTTP/1.1\r\nHost: rootlesskit\r\nUser-Agent: rootlessctl/{}\r\n",
        crate::UPSTREAM_VERSION
    );
    if let Some(body) = body {
        let _ = write!(
            h,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    h.push_str("Connection: close\r\n\r\n");
    let mut out = h.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    out
}

/// A response as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Largest response head the client accepts.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Parses the response in `buf` (interim `1xx` answers are skipped); `eof` says the server
/// closed, which ends a body without length. `None` while more bytes are needed.
///
/// # Errors
/// `malformed HTTP response`, `response too large`, `unexpected EOF`.
pub(crate) fn parse_response(
    buf: &[u8],
    eof: bool,
    max_body: usize,
) -> Result<Option<ClientResponse>, String> {
    let malformed = || "malformed HTTP response".to_string();
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let window = &rest[..rest.len().min(MAX_RESPONSE_HEAD)];
        let Some(head_len) = head_end(window) else {
            if rest.len() >= MAX_RESPONSE_HEAD {
                return Err("response header too large".to_string());
            }
            return if eof {
                Err("unexpected EOF".to_string())
            } else {
                Ok(None)
            };
        };
        let mut lines = lines(&rest[..head_len]);
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, |&c| c == b' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        if !version.starts_with(b"HTTP/1.") || code.len() != 3 {
            return Err(malformed());
        }
        let status = parse_decimal(code).ok_or_else(malformed)? as u16;
        let body_start = start + head_len;
        if (100..200).contains(&status) && status != 101 {
            start = body_start;
            continue;
        }
        let mut length: Option<u64> = None;
        let mut chunked = false;
        for line in lines {
            let Some(colon) = line.iter().position(|&c| c == b':') else {
                return Err(malformed());
            };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(parse_decimal(value).ok_or_else(malformed)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case(b"chunked");
            }
        }
        let rest = &buf[body_start..];
        let too_large = || "response too large".to_string();
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            match decode_chunked(rest, max_body, MAX_RESPONSE_HEAD) {
                Ok(Some((body, _))) => body,
                Ok(None) if eof => return Err("unexpected EOF".to_string()),
                Ok(None) => return Ok(None),
                Err(ChunkError::TooLarge) => return Err(too_large()),
                Err(ChunkError::Bad(_)) => return Err(malformed()),
            }
        } else if let Some(n) = length {
            if n > max_body as u64 {
                return Err(too_large());
            }
            match rest.get(..n as usize) {
                Some(body) => body.to_vec(),
                None if eof => return Err("unexpected EOF".to_string()),
                None => return Ok(None),
            }
        } else if rest.len() > max_body {
            return Err(too_large());
        } else if eof {
            rest.to_vec()
        } else {
            return Ok(None);
        };
        return Ok(Some(ClientResponse { status, body }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn done(input: &[u8]) -> (Request, usize) {
        match parse_request(input, limits()) {
            Ok(Parsed::Done(r, n)) => (r, n),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn req(method: &str, path: &str, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            origin: String::new(),
            body: body.to_vec(),
            http10: false,
            keep_alive: true,
        }
    }

    #[test]
    fn parses_what_go_clients_send() {
        let post = b"POST /v1/ports HTTP/1.1\r\nHost: rootlesskit\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 65\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n{\"proto\":\"tcp\",\"parentIP\":\"::1\",\"parentPort\":8080,\"childPort\":80}";
        let (r, n) = done(post);
        assert_eq!(n, post.len());
        assert_eq!(r, req("POST", "/v1/ports", &post[post.len() - 65..]));
        let del = b"DELETE /v1/ports/5 HTTP/1.1\r\nHost: rootlesskit\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n";
        assert_eq!(done(del), (req("DELETE", "/v1/ports/5", b""), del.len()));
    }

    #[test]
    fn request_forms() {
        let check = |input: &[u8], expect: Request| {
            assert_eq!(
                done(input).0,
                expect,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        };
        // Bare LF line ends, leading empty lines, a query, escapes.
        check(
            b"\r\n\nGET /v1/%69nfo?a=b HTTP/1.1\nHost: x\n\n",
            Request {
                query: "a=b".into(),
                ..req("GET", "/v1/info", b"")
            },
        );
        check(
            b"GET http://rootlesskit/v1/info HTTP/1.1\r\nHost: x\r\n\r\n",
            Request {
                origin: "http://rootlesskit".into(),
                ..req("GET", "/v1/info", b"")
            },
        );
        check(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", req("GET", "*", b""));
        // Connection semantics.
        check(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, close\r\n\r\n",
            Request {
                keep_alive: false,
                ..req("GET", "/", b"")
            },
        );
        check(
            b"GET / HTTP/1.0\r\n\r\n",
            Request {
                http10: true,
                keep_alive: false,
                ..req("GET", "/", b"")
            },
        );
        check(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            Request {
                http10: true,
                ..req("GET", "/", b"")
            },
        );
        // Go takes any HTTP/1.x as 1.1.
        check(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", req("GET", "/", b""));
        // Unknown methods are parsed; the router answers them.
        check(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", req("FOO", "/", b""));
        // A chunked body with an extension and a trailer.
        check(
            b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nnull\r\n2\r\n{}\r\n0\r\nT: v\r\n\r\n",
            req("POST", "/v1/ports", b"null{}"),
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            req("POST", "/", b"ab"),
        );
    }

    #[test]
    fn rejects_bad_requests() {
        let check = |input: &[u8], status: u16, detail: &str| {
            let got = parse_request(input, limits());
            assert_eq!(
                got,
                Err(Reject {
                    status,
                    detail: leak(detail)
                }),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        };
        fn leak(s: &str) -> &'static str {
            Box::leak(s.to_string().into_boxed_str())
        }
        check(
            b"GET /v1/info HTTP/1.1\r\n\r\n",
            400,
            "missing required Host header",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "too many Host headers",
        );
        check(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid method");
        check(
            b"GET  /v1/info HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "malformed request line",
        );
        check(
            b"GET /v1/info\r\nHost: x\r\n\r\n",
            400,
            "malformed request line",
        );
        check(
            b"GET /v1/info HTTP/1.1 x\r\nHost: x\r\n\r\n",
            400,
            "malformed request line",
        );
        check(
            b"GET /v1/info HTTP/1.x\r\nHost: x\r\n\r\n",
            400,
            "malformed HTTP version",
        );
        check(
            b"GET /v1/info HTTX/1.1\r\nHost: x\r\n\r\n",
            400,
            "malformed HTTP version",
        );
        check(
            b"GET /v1/info HTTP/2.0\r\nHost: x\r\n\r\n",
            505,
            "unsupported protocol version",
        );
        check(
            b"GET /v1/%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "invalid request target",
        );
        check(
            b"GET /v1/%4 HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "invalid request target",
        );
        check(
            b"GET v1/info HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "invalid request target",
        );
        check(
            b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "invalid request target",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
            400,
            "invalid header name",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
            400,
            "malformed header line",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            400,
            "obsolete line folding",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
            400,
            "invalid header value",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
            400,
            "stray carriage return",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            400,
            "bad Content-Length",
        );
        check(
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
            "conflicting Content-Length headers",
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n",
            413,
            "request body too large",
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            400,
            "bad Content-Length",
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "unsupported transfer encoding",
        );
        check(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 400, "both Transfer-Encoding and Content-Length");
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "invalid chunk size",
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            400,
            "malformed chunked encoding",
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n",
            413,
            "request body too large",
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n",
            417,
            "unsupported expectation",
        );
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        big.resize(MAX_HEADER, b'a');
        check(&big, 431, "request header too large");
        big.extend_from_slice(b"\r\n\r\n");
        check(&big, 431, "request header too large");
        let mut lines = vec![b'\n'; MAX_HEADER + 1];
        lines.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        check(&lines, 431, "request header too large");
    }

    #[test]
    fn limits_are_exact() {
        // A head of exactly max_header bytes and a body of exactly max_body bytes pass.
        let mut head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\nX: ".to_vec();
        head.resize(MAX_HEADER - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), MAX_HEADER);
        let mut input = head.clone();
        input.resize(MAX_HEADER + MAX_BODY, b'b');
        let (r, n) = done(&input);
        assert_eq!((r.body.len(), n), (MAX_BODY, input.len()));
    }

    #[test]
    fn partial_reads_and_pipelining() {
        let two = b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nnullGET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n";
        let first_len = two.len() - 34;
        // Every prefix shorter than the first request asks for more; `need` never overshoots.
        for cut in 0..first_len {
            match parse_request(&two[..cut], limits()) {
                Ok(Parsed::Partial {
                    need,
                    wants_continue: false,
                }) => {
                    assert!(need > cut && need <= first_len, "cut {cut}: need {need}")
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        let (r, n) = done(two);
        assert_eq!((r.body.as_slice(), n), (&b"null"[..], first_len));
        let (r, n) = done(&two[n..]);
        assert_eq!((r.path.as_str(), n), ("/v1/info", 34));
        // Chunked bodies, byte by byte.
        let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for cut in 0..chunked.len() {
            assert!(
                matches!(
                    parse_request(&chunked[..cut], limits()),
                    Ok(Parsed::Partial { .. })
                ),
                "cut {cut}"
            );
        }
        assert_eq!(done(chunked).0.body, b"abc");
    }

    #[test]
    fn expect_continue() {
        let head = b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(
            parse_request(head, limits()),
            Ok(Parsed::Partial {
                need: head.len() + 4,
                wants_continue: true
            })
        );
        assert_eq!(
            parse_request(&head[..head.len() - 1], limits()),
            Ok(Parsed::Partial {
                need: head.len(),
                wants_continue: false
            })
        );
    }

    #[test]
    fn writes_exact_bytes() {
        let now = 1_795_915_483; // Sun, 29 Nov 2026 01:24:43 GMT
        let check = |r: Response, http10: bool, keep: bool, head: bool, expect: &str| {
            let mut out = Vec::new();
            r.write(&mut out, http10, keep, head, now);
            assert_eq!(String::from_utf8(out).unwrap(), expect);
        };
        check(
            Response::json(200, "null".into()),
            false,
            true,
            false,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Sun, 29 Nov 2026 01:24:43 GMT\r\nContent-Length: 4\r\n\r\nnull",
        );
        check(
            Response::error(400, "unknown id: 99"),
            false,
            false,
            false,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 29 Nov 2026 01:24:43 GMT\r\nContent-Length: 29\r\nConnection: close\r\n\r\n{\"message\":\"unknown id: 99\"}\n",
        );
        check(
            Response::not_found(),
            true,
            true,
            true,
            "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: Sun, 29 Nov 2026 01:24:43 GMT\r\nContent-Length: 19\r\nConnection: keep-alive\r\n\r\n",
        );
        check(
            Response::empty(405),
            true,
            false,
            false,
            "HTTP/1.0 405 Method Not Allowed\r\nDate: Sun, 29 Nov 2026 01:24:43 GMT\r\nContent-Length: 0\r\n\r\n",
        );
        check(
            Response::rejected(Reject {
                status: 431,
                detail: "request header too large",
            }),
            false,
            false,
            false,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 29 Nov 2026 01:24:43 GMT\r\nContent-Length: 61\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large: request header too large",
        );
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(http_date(4_133_980_799), "Fri, 31 Dec 2100 23:59:59 GMT");
    }

    #[test]
    fn paths() {
        for (p, clean) in [
            ("/v1/info", "/v1/info"),
            ("/v1/info/", "/v1/info/"),
            ("/v1//info", "/v1/info"),
            ("/v1/./info", "/v1/info"),
            ("/v1/ports/../info", "/v1/info"),
            ("/../..", "/"),
            ("*", "/*"),
            ("", "/"),
            ("//", "/"),
        ] {
            assert_eq!(clean_path(p), clean, "{p:?}");
        }
        assert_eq!(escape_path("/*"), "/%2A");
        assert_eq!(escape_path("/a b/é:@"), "/a%20b/%C3%A9:@");
    }

    #[test]
    fn client_requests_and_responses() {
        assert_eq!(
            encode_request("POST", "/v1/ports", Some(b"{}")),
            b"POST /v1/ports HTTP/1.1\r\nHost: rootlesskit\r\nUser-Agent: rootlessctl/3.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        assert_eq!(
            encode_request("GET", "/v1/info", None),
            b"GET /v1/info HTTP/1.1\r\nHost: rootlesskit\r\nUser-Agent: rootlessctl/3.0.1\r\nConnection: close\r\n\r\n"
        );
        let ok = |status: u16, body: &[u8]| {
            Ok(Some(ClientResponse {
                status,
                body: body.to_vec(),
            }))
        };
        let go = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: x\r\nContent-Length: 4\r\n\r\nnull";
        assert_eq!(parse_response(go, false, 1 << 20), ok(200, b"null"));
        assert_eq!(
            parse_response(&go[..go.len() - 1], false, 1 << 20),
            Ok(None)
        );
        assert_eq!(
            parse_response(&go[..go.len() - 1], true, 1 << 20),
            Err("unexpected EOF".into())
        );
        assert_eq!(
            parse_response(go, false, 3),
            Err("response too large".into())
        );
        let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false, 1 << 20), ok(201, b"[]"));
        let close_delimited = b"HTTP/1.0 400 Bad Request\r\n\r\n400 Bad Request";
        assert_eq!(parse_response(close_delimited, false, 1 << 20), Ok(None));
        assert_eq!(
            parse_response(close_delimited, true, 1 << 20),
            ok(400, b"400 Bad Request")
        );
        assert_eq!(
            parse_response(b"SSH-2.0\r\n\r\n", true, 1 << 20),
            Err("malformed HTTP response".into())
        );
        assert_eq!(
            parse_response(b"", true, 1 << 20),
            Err("unexpected EOF".into())
        );
    }
}
