//! `rootlessctl`: client of the rootlesskit REST API. Only `--version` exists so far; every
//! command says it is not supported yet (the API lands with the port-driver work).

use std::io::Write;

fn main() {
    let first = std::env::args_os().nth(1);
    match first.as_ref().and_then(|a| a.to_str()) {
        Some("--version" | "-v" | "-version") => {
            let _ = writeln!(
                std::io::stdout(),
                "rootlessctl version {}",
                parent::UPSTREAM_VERSION
            );
        }
        _ => {
            let _ = writeln!(std::io::stderr(), "error: rootlessctl is not supported yet");
            std::process::exit(1);
        }
    }
}
