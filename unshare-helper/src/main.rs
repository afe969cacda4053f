//! `rootlesskit-unshare`: will create a detached network namespace pinned on a file for
//! `--detach-netns`. Until then it only answers `--version`.

use std::io::Write;

fn main() {
    match std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()) {
        Some("--version") => {
            let _ = writeln!(
                std::io::stdout(),
                "rootlesskit-unshare version {}",
                env!("CARGO_PKG_VERSION")
            );
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "[rootlesskit:unshare] error: not supported yet"
            );
            std::process::exit(1);
        }
    }
}
