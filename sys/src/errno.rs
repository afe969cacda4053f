//! errno values rendered as Go renders them (lowercase, no "(os error N)"), since our messages
//! must read like upstream's: one function, [`text`], for a bare code, a rustix `Errno` or an
//! `io::Error`.

use std::io;

/// What [`text`] renders: an errno however it arrived.
pub enum Source<'a> {
    /// A bare errno number.
    Code(i32),
    /// An `io::Error`, which may carry no errno at all.
    Io(&'a io::Error),
}

impl From<i32> for Source<'_> {
    fn from(code: i32) -> Self {
        Source::Code(code)
    }
}

impl From<rustix::io::Errno> for Source<'_> {
    fn from(e: rustix::io::Errno) -> Self {
        Source::Code(e.raw_os_error())
    }
}

impl<'a> From<&'a io::Error> for Source<'a> {
    fn from(e: &'a io::Error) -> Self {
        Source::Io(e)
    }
}

/// The text Go's `syscall.Errno.Error()` gives on Linux (`errno N` for a code it does not
/// name); for an `io::Error` without an errno, its own text.
pub fn text<'a>(e: impl Into<Source<'a>>) -> String {
    render(e.into())
}

fn render(e: Source<'_>) -> String {
    let code = match e {
        Source::Code(code) => code,
        Source::Io(e) => match e.raw_os_error() {
            Some(code) => code,
            None => return e.to_string(),
        },
    };
    match go_text(code) {
        Some(t) => t.to_string(),
        None => format!("errno {code}"),
    }
}

fn go_text(code: i32) -> Option<&'static str> {
    Some(match code {
        1 => "operation not permitted",
        2 => "no such file or directory",
        3 => "no such process",
        4 => "interrupted system call",
        5 => "input/output error",
        6 => "no such device or address",
        7 => "argument list too long",
        8 => "exec format error",
        9 => "bad file descriptor",
        10 => "no child processes",
        11 => "resource temporarily unavailable",
        12 => "cannot allocate memory",
        13 => "permission denied",
        14 => "bad address",
        16 => "device or resource busy",
        17 => "file exists",
        18 => "invalid cross-device link",
        19 => "no such device",
        20 => "not a directory",
        21 => "is a directory",
        22 => "invalid argument",
        23 => "too many open files in system",
        24 => "too many open files",
        26 => "text file busy",
        27 => "file too large",
        28 => "no space left on device",
        29 => "illegal seek",
        30 => "read-only file system",
        31 => "too many links",
        32 => "broken pipe",
        34 => "numerical result out of range",
        36 => "file name too long",
        38 => "function not implemented",
        39 => "directory not empty",
        40 => "too many levels of symbolic links",
        88 => "socket operation on non-socket",
        93 => "protocol not supported",
        95 => "operation not supported",
        97 => "address family not supported by protocol",
        98 => "address already in use",
        99 => "cannot assign requested address",
        101 => "network is unreachable",
        104 => "connection reset by peer",
        110 => "connection timed out",
        111 => "connection refused",
        113 => "no route to host",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_go_wording() {
        assert_eq!(super::text(2), "no such file or directory");
        assert_eq!(super::text(13), "permission denied");
        assert_eq!(
            super::text(&std::io::Error::from_raw_os_error(4095)),
            "errno 4095"
        );
    }
}
