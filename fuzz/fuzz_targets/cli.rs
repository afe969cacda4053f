//! Fuzz target for the `rootlesskit` command line: the input, split on NUL bytes, is the argv.
//! Parsing and validation must end in a value or an error for any argv, never in a panic.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use parent::cli::{Action, check, parse_with_lxc_default};

fuzz_target!(|data: &[u8]| {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()))
        .collect();
    match parse_with_lxc_default(args, "/usr/lib/lxc/lxc-user-nic") {
        Ok(Action::Run(cfg)) => {
            assert!(!cfg.command.is_empty(), "a run always has a command");
            let (_warnings, result) = check(&cfg);
            if let Err(msg) = result {
                assert!(!msg.is_empty());
            }
        }
        Ok(Action::Help | Action::Version | Action::PrintSemver(_)) => {}
        Err(e) => {
            assert!(!e.message().is_empty());
            assert_eq!(e.usage_text("").is_some(), e.shows_usage());
        }
    }
});
