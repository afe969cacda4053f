//! Signal policy shared by the parent and the child: which signals are forwarded, Go's names
//! for them, and how a wait status becomes an exit code and a message.

use crate::sys::SigSet;

/// Signals that are never forwarded to the next process down: SIGCHLD is ours to reap with,
/// SIGPIPE and SIGURG are side effects of our own I/O (as upstream's sigproxy decides).
pub const fn is_forwarded(sig: u32) -> bool {
    !matches!(sig, 13 | 17 | 23)
}

/// The mask both binaries block at startup and read through a signalfd.
pub const fn handled() -> SigSet {
    SigSet::forwardable()
}

/// Go's lowercase name of a signal, as in `signal: user defined signal 1`.
pub fn go_name(sig: u32) -> std::borrow::Cow<'static, str> {
    let name = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        n => return format!("signal {n}").into(),
    };
    name.into()
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// The signal.
        sig: u32,
        /// Whether it dumped core.
        core: bool,
    },
}

impl Ended {
    /// From a rustix wait status; `None` for stop/continue reports.
    pub fn from_wait(st: rustix::process::WaitStatus) -> Option<Ended> {
        if let Some(code) = st.exit_status() {
            return Some(Ended::Exited(code));
        }
        st.terminating_signal().map(|sig| Ended::Signaled {
            sig: sig as u32,
            core: st.as_raw() & 0x80 != 0,
        })
    }

    /// The exit code rootlesskit passes on: the code itself, or 255 for a signal (upstream's
    /// Go quirk that `hack/integration-exit-code.sh` asserts).
    pub fn exit_code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled { .. } => 255,
        }
    }

    /// Go's `ExitError` text: `exit status N` or `signal: <name>[ (core dumped)]`.
    pub fn describe(self) -> String {
        match self {
            Ended::Exited(c) => format!("exit status {c}"),
            Ended::Signaled { sig, core } => format!(
                "signal: {}{}",
                go_name(sig),
                if core { " (core dumped)" } else { "" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_table() {
        for (ended, code, text) in [
            (Ended::Exited(0), 0, "exit status 0"),
            (Ended::Exited(42), 42, "exit status 42"),
            (
                Ended::Signaled {
                    sig: 10,
                    core: false,
                },
                255,
                "signal: user defined signal 1",
            ),
            (
                Ended::Signaled {
                    sig: 11,
                    core: true,
                },
                255,
                "signal: segmentation fault (core dumped)",
            ),
            (
                Ended::Signaled {
                    sig: 40,
                    core: false,
                },
                255,
                "signal: signal 40",
            ),
        ] {
            assert_eq!(ended.exit_code(), code);
            assert_eq!(ended.describe(), text);
        }
    }

    #[test]
    fn forwarding_policy() {
        assert!(!is_forwarded(17) && !is_forwarded(13) && !is_forwarded(23));
        assert!(is_forwarded(1) && is_forwarded(15) && is_forwarded(10) && is_forwarded(28));
    }
}
