//! `rootlesskit`'s main sequence: signals, command line, validation, run, exit code.

use std::io::Write;

use crate::{UPSTREAM_VERSION, cli, error, run, warn};

/// `rootlesskit`'s whole life; returns the exit code.
pub fn main() -> i32 {
    // Block the signals we handle before anything else, so none is lost or acts by default
    // while we set up; they are read through the signalfd.
    let sigfd = match sys::signal::block_signals(sys::signal::handled())
        .and_then(|()| sys::signal::signalfd(sys::signal::handled()))
    {
        Ok(fd) => fd,
        Err(e) => {
            error("parent", &format!("failed to set up signal handling: {e}"));
            return 1;
        }
    };
    // As upstream (Go's runtime does it there): the soft descriptor limit up to the hard one, so
    // that forwarded connections are not capped at 1024 descriptors; programs started from
    // here get the original back (see `raise_nofile_limit`).
    sys::spawn::raise_nofile_limit();
    let action = match cli::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if let Some(usage) = e.usage_text(&cli::help_text(&cli::lxc_user_nic_default())) {
                let _ = write!(std::io::stdout(), "{usage}");
            }
            error("parent", &e.to_string());
            return 1;
        }
    };
    let cfg = match action {
        cli::Action::Help => {
            let _ = write!(
                std::io::stdout(),
                "{}",
                cli::help_text(&cli::lxc_user_nic_default())
            );
            return 0;
        }
        cli::Action::Version => {
            let _ = writeln!(std::io::stdout(), "rootlesskit version {UPSTREAM_VERSION}");
            return 0;
        }
        cli::Action::PrintSemver(n) => {
            let _ = writeln!(std::io::stdout(), "{n}");
            return 0;
        }
        cli::Action::Check { cfg, json } => return crate::check::main(&cfg, json),
        cli::Action::Run(cfg) => cfg,
    };
    // Warnings are printed even when a later check fails, as upstream logs them as it goes.
    let (warnings, verdict) = cli::check(&cfg);
    warnings.iter().for_each(|w| warn(w));
    let settings = match verdict {
        Ok(s) => s,
        Err(e) => {
            error("parent", &e);
            return 1;
        }
    };
    let outcome = run::run(&cfg, &settings, &sigfd);
    if let Some((who, text)) = &outcome.error {
        error(who, text);
    }
    if let Some(sig) = outcome.raise {
        // Die by the signal that interrupted setup, now that the state dir is gone.
        let _ = std::io::stdout().flush();
        let _ = sys::signal::unblock_signals(sys::signal::SigSet(1 << (sig - 1)));
        let _ = sys::signal::kill(std::process::id() as i32, sig);
    }
    outcome.code
}
