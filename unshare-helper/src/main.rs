//! `rootlesskit-unshare`: creates a detached network namespace (not implemented yet).

fn main() {
    std::process::exit(1);
}
