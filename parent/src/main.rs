//! `rootlesskit`: entry point of the parent process.

fn main() {
    std::process::exit(parent::entry::main());
}
