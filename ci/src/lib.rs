//! Helpers for the integration tests: run the built binaries as an unprivileged user.
