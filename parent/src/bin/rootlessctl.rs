//! `rootlessctl`: client of the rootlesskit REST API (not implemented yet).

fn main() {
    eprintln!("error: rootlessctl is not supported yet");
    std::process::exit(1);
}
